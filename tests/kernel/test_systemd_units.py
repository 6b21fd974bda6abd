"""The units in packaging/ under a real systemd (PID 1 of a Debian guest, see systemd_guest.py).

One guest for the module, booted from a Debian bookworm root that carries this
tree frozen into a one-file wgc at /usr/local/bin/wgc, packaging/wgc@.service
and packaging/wgc-quick@.service as shipped, and /etc/wireguard/wgq0.conf with
wgc-quick@wgq0 enabled.  The only change to a unit is a drop-in that makes
wgc@wg0's watchdog short, so that a hung daemon is seen in seconds.

The host side of the guest's tap runs one wgc daemon with a peer for each
guest interface; pings from there prove the tunnels carry traffic.  The tests
run in order: wgc-quick@wgq0 up at boot, wgc@wg0 started, its watchdog, its
stop, wgc-quick@wgq0 stopped.
"""
import os
import re
import tempfile
import time
from dataclasses import dataclass

import pytest
from frozen import frozen_wgc
from guest import GuestError, Unavailable, unavailable
from systemd_guest import booted_systemd

from netns import Netns, unique_name
from wgnet import new_key, start_daemon

pytestmark = [pytest.mark.systemd, pytest.mark.netns, pytest.mark.timeout(1800)]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNITS = ("wgc@.service", "wgc-quick@.service")
WATCHDOG_SEC = 5
HOST_PORT, QUICK_PORT, NOTIFY_PORT = 51820, 51821, 51822
QUICK, NOTIFY = "wgq0", "wg0"
# Inner addresses: the guest's wg-quick interface, an extra routed network only its
# AllowedIPs bring, and the guest's wgc@ interface; the host is .1 in each.
QUICK_NET, QUICK_ROUTED, NOTIFY_NET = "10.91.0", "10.93.0.0/24", "10.92.0"


def unit_file(name: str) -> tuple[bytes, int]:
    with open(os.path.join(REPO, "packaging", name), "rb") as f:
        return f.read(), 0o644


@dataclass
class Lab:
    ns: Netns           # where the guest's tap and the host's wgc daemon are
    vm: object          # the guest (guest.Guest)
    subnet: int         # outer addresses 192.168.subnet.1 (host) and .2 (guest)
    host_public: str    # the host daemon's public key

    def outer(self, side: int) -> str:
        return f"192.168.{self.subnet}.{side}"

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.vm.run(f"systemctl show {unit} -p {','.join(properties)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def tunnel_works(self, iface: str, net: str):
        """The guest sends first (bash's /dev/udp: the root has no ping), so that a daemon
        new since the host's last handshake makes one; then the host pings the guest."""
        poke = f"bash -c 'echo > /dev/udp/{net}.1/9'"
        self.vm.run(f"{poke}; for i in $(seq 100); do wgc --wg show {iface} latest-handshakes"
                    f" | grep -qv '\\s0$' && break; sleep 0.2; done; {poke}", timeout=120)
        proc = self.ns.run("ping", "-c", "3", "-i", "0.2", "-W", "10", f"{net}.2", check=False, timeout=60)
        assert proc.returncode == 0, f"ping {net}.2 from the host side: {proc.stdout}{proc.stderr}\n" \
            f"{self.journal()}"

    def journal(self) -> str:
        return self.vm.run("journalctl -b --no-pager -n 60 -u 'wgc*'", check=False).stdout

    def configure_notify_iface(self):
        """wgc@wg0's daemon configured as an administrator would, after the unit started."""
        self.vm.run(f"wgc --wg set {NOTIFY} listen-port {NOTIFY_PORT} private-key /etc/wireguard/{NOTIFY}.key"
                    f" peer {self.host_public} allowed-ips {NOTIFY_NET}.1/32 endpoint {self.outer(1)}:{HOST_PORT}"
                    f" && ip addr add {NOTIFY_NET}.2/24 dev {NOTIFY} && ip link set {NOTIFY} up")


def quick_conf(lab_subnet: int, private: str, host_public: str) -> str:
    return (f"[Interface]\nPrivateKey = {private}\nAddress = {QUICK_NET}.2/24\nListenPort = {QUICK_PORT}\n\n"
            f"[Peer]\nPublicKey = {host_public}\nAllowedIPs = {QUICK_NET}.1/32, {QUICK_ROUTED}\n"
            f"Endpoint = 192.168.{lab_subnet}.1:{HOST_PORT}\n")


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        unavailable("needs root")
    subnet = 1 + os.getpid() % 250
    host_private, host_public = new_key()
    quick_key, notify_key = new_key(), new_key()
    files = {f"/etc/systemd/system/{name}": unit_file(name) for name in UNITS}
    with open(frozen_wgc(), "rb") as f:
        files["/usr/local/bin/wgc"] = (f.read(), 0o755)
    files[f"/etc/wireguard/{QUICK}.conf"] = (quick_conf(subnet, quick_key[0], host_public).encode(), 0o600)
    files[f"/etc/wireguard/{NOTIFY}.key"] = (notify_key[0].encode() + b"\n", 0o600)
    files[f"/etc/systemd/system/wgc@{NOTIFY}.service.d/test.conf"] = (
        f"[Service]\nWatchdogSec={WATCHDOG_SEC}\nRestartSec=1\nTimeoutStartSec=60\n".encode(), 0o644)
    ns = Netns("wgsd")
    try:
        try:
            context = booted_systemd(ns, files, enable=[f"wgc-quick@{QUICK}.service"])
            vm = context.__enter__()
        except (Unavailable, GuestError) as error:
            unavailable(str(error))
        try:
            ns.run("ip", "link", "set", vm.tap, "up")
            ns.run("ip", "addr", "add", f"192.168.{subnet}.1/24", "dev", vm.tap)
            vm.run(f"ip link set eth0 up && ip addr add 192.168.{subnet}.2/24 dev eth0")
            ns.run("ping", "-c", "1", "-W", "10", f"192.168.{subnet}.2", timeout=30)
            host_iface = unique_name("wgsd")
            start_daemon(ns, "wgc", host_iface)
            fd, key_path = tempfile.mkstemp(prefix="wgc-systemd-key-")
            with open(fd, "w") as f:
                f.write(host_private + "\n")
            try:
                ns.run("wg", "set", host_iface, "listen-port", str(HOST_PORT), "private-key", key_path,
                       "peer", quick_key[1], "allowed-ips", f"{QUICK_NET}.2/32",
                       "endpoint", f"192.168.{subnet}.2:{QUICK_PORT}",
                       "peer", notify_key[1], "allowed-ips", f"{NOTIFY_NET}.2/32",
                       "endpoint", f"192.168.{subnet}.2:{NOTIFY_PORT}")
            finally:
                os.unlink(key_path)
            for net in (QUICK_NET, NOTIFY_NET):
                ns.run("ip", "addr", "add", f"{net}.1/24", "dev", host_iface)
            ns.run("ip", "link", "set", host_iface, "up")
            yield Lab(ns, vm, subnet, host_public)
        finally:
            context.__exit__(None, None, None)
    finally:
        ns.close()


def test_quick_unit_up_at_boot(lab):
    """wgc-quick@wgq0, enabled in the image, brought the configuration up during boot."""
    vm = lab.vm
    assert vm.run(f"systemctl is-enabled wgc-quick@{QUICK}").stdout.strip() == "enabled"
    state = lab.show(f"wgc-quick@{QUICK}", "ActiveState", "Result")
    assert state == {"ActiveState": "active", "Result": "success"}, lab.journal()
    assert f"inet {QUICK_NET}.2/24" in vm.run(f"ip -o addr show dev {QUICK}").stdout
    assert QUICK_ROUTED in vm.run(f"ip route show dev {QUICK}").stdout
    assert vm.run(f"wgc --wg show {QUICK} peers").stdout.split() == [lab.host_public]
    assert commands(vm, f"wgc {QUICK}"), "no daemon for the interface"
    lab.tunnel_works(QUICK, QUICK_NET)


def test_quick_unit_reload_applies_the_file(lab):
    """`systemctl reload` gives the interface the peers the file names now, keeping it up."""
    vm, unit = lab.vm, f"wgc-quick@{QUICK}"
    index = vm.run(f"cat /sys/class/net/{QUICK}/ifindex").stdout
    _, new_peer = new_key()
    vm.run(f"printf '\\n[Peer]\\nPublicKey = {new_peer}\\nAllowedIPs = 10.94.0.0/24\\n'"
           f" >> /etc/wireguard/{QUICK}.conf")
    vm.run(f"systemctl reload {unit}", timeout=60)
    assert sorted(vm.run(f"wgc --wg show {QUICK} peers").stdout.split()) == sorted([lab.host_public, new_peer])
    assert vm.run(f"cat /sys/class/net/{QUICK}/ifindex").stdout == index
    assert lab.show(unit, "ActiveState")["ActiveState"] == "active"
    lab.tunnel_works(QUICK, QUICK_NET)


def test_notify_unit_reaches_active(lab):
    """`systemctl start wgc@wg0` returns once the daemon said READY=1, with its status text."""
    vm = lab.vm
    started = vm.run(f"systemctl start wgc@{NOTIFY}", check=False, timeout=120)
    assert started.returncode == 0, f"{started.stderr}\n{lab.journal()}"
    state = lab.show(f"wgc@{NOTIFY}", "Type", "ActiveState", "SubState", "StatusText")
    assert state["Type"] == "notify"
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), lab.journal()
    # Only the daemon's READY=1 datagram carries this text to systemd.
    assert state["StatusText"] == f"listening on /var/run/wireguard/{NOTIFY}.sock"
    vm.run(f"test -S /var/run/wireguard/{NOTIFY}.sock")
    lab.configure_notify_iface()
    lab.tunnel_works(NOTIFY, NOTIFY_NET)


def socket_inode(vm) -> str:
    return vm.run(f"stat -c %i /var/run/wireguard/{NOTIFY}.sock").stdout.strip()


def test_watchdog_keeps_daemon_and_restarts_hung_one(lab):
    """Pings keep wgc@wg0 alive past its short WatchdogSec; a stopped daemon is killed and restarted."""
    vm, unit = lab.vm, f"wgc@{NOTIFY}"
    before = lab.show(unit, "MainPID", "NRestarts", "WatchdogUSec", "ActiveState")
    assert before["WatchdogUSec"] == f"{WATCHDOG_SEC}s"
    old_inode = socket_inode(vm)
    time.sleep(3 * WATCHDOG_SEC)
    assert lab.show(unit, "MainPID", "NRestarts", "WatchdogUSec", "ActiveState") == before, lab.journal()
    # Hung: every process of the unit stopped, so nothing answers or pings any more.
    vm.run(f"systemctl kill -s SIGSTOP {unit}")
    deadline = time.monotonic() + 6 * WATCHDOG_SEC + 60
    while True:
        after = lab.show(unit, "MainPID", "NRestarts", "ActiveState", "SubState")
        if after["NRestarts"] != before["NRestarts"] and after["SubState"] == "running":
            break
        assert time.monotonic() < deadline, f"no restart: {after}\n{lab.journal()}"
        time.sleep(1)
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert after["MainPID"] != before["MainPID"]
    log = vm.run(f"journalctl -b --no-pager -u {unit}").stdout
    assert re.search(r"[Ww]atchdog timeout", log), log[-3000:]
    # A new daemon with a new socket; it knows nothing of the old configuration.
    assert socket_inode(vm) != old_inode
    assert vm.run(f"wgc --wg show {NOTIFY} peers").stdout.strip() == ""
    lab.configure_notify_iface()
    lab.tunnel_works(NOTIFY, NOTIFY_NET)


def test_notify_unit_stop_removes_interface_and_socket(lab):
    vm, unit = lab.vm, f"wgc@{NOTIFY}"
    vm.run(f"systemctl stop {unit}", timeout=60)
    assert lab.show(unit, "ActiveState")["ActiveState"] == "inactive"
    assert vm.run(f"ip link show {NOTIFY}", check=False).returncode != 0
    assert vm.run(f"test -e /var/run/wireguard/{NOTIFY}.sock", check=False).returncode != 0
    # RuntimeDirectoryPreserve=yes: other interfaces' sockets live there too.
    vm.run("test -d /var/run/wireguard")


def test_quick_unit_stop_takes_interface_down(lab):
    vm, unit = lab.vm, f"wgc-quick@{QUICK}"
    vm.run(f"systemctl stop {unit}", timeout=60)
    assert lab.show(unit, "ActiveState", "Result") == {"ActiveState": "inactive", "Result": "success"}
    assert vm.run(f"ip link show {QUICK}", check=False).returncode != 0
    routes = vm.run("ip route show table all").stdout
    assert QUICK_ROUTED not in routes and f"{QUICK_NET}." not in routes, routes
    assert vm.run(f"test -e /var/run/wireguard/{QUICK}.sock", check=False).returncode != 0
    # The daemon wg-quick started for the interface ended with it.
    assert commands(vm, f"wgc {QUICK}") == []


def commands(vm, text: str) -> list[str]:
    """The command lines of the guest's processes that contain text (the root has no ps)."""
    out = vm.run("for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done").stdout
    return [line for line in out.splitlines() if text in line]
