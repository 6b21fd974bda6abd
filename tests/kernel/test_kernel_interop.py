"""wgc against the Linux kernel's own WireGuard (Debian's kernel under QEMU).

One guest is booted for the whole module; its eth0 is a tap device in a host
namespace where each test starts a fresh wgc daemon, and each test gives the
guest a fresh `wg` interface with new keys.  The side that sends first is
the handshake initiator.  Nothing leaves the namespace and the guest.

Skips, with the reason, when QEMU or the kernel cannot be had or the guest
does not boot; WGC_KERNEL_REQUIRED=1 turns those skips into failures.
"""
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import pytest
from guest import GuestError, Unavailable, booted, unavailable

from netns import Netns, socket_path, unique_name, wait_for
from wgnet import daemon_log, new_key, start_daemon

# The first test also waits for the guest: on a new machine that includes fetching the
# kernel package and installing QEMU.
pytestmark = [pytest.mark.kernel, pytest.mark.netns, pytest.mark.timeout(600)]

WGC_PORT, KERNEL_PORT = 51821, 51822
WGC_ENV = {"LOG_LEVEL": "verbose"}


@dataclass
class Lab:
    ns: Netns
    guest: object
    tap: str
    subnet: int
    keydir: str
    wgc_logs: list = field(default_factory=list)

    def host_outer(self, family: int) -> str:
        return f"192.168.{self.subnet}.1" if family == 4 else f"fd00:{self.subnet:x}::1"

    def guest_outer(self, family: int) -> str:
        return f"192.168.{self.subnet}.2" if family == 4 else f"fd00:{self.subnet:x}::2"


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        unavailable("needs root")
    ns = Netns("wgkns")
    keydir = tempfile.mkdtemp(prefix="wgc-kernel-keys-")
    try:
        try:
            context = booted(ns)
            guest = context.__enter__()
        except (Unavailable, GuestError) as error:
            unavailable(str(error))
        try:
            subnet = 1 + os.getpid() % 250
            item = Lab(ns, guest, guest.tap, subnet, keydir)
            wait_for(lambda: ns.run("ip", "link", "show", guest.tap, check=False).returncode == 0,
                     what="QEMU's tap device")
            ns.run("ip", "link", "set", guest.tap, "up")
            ns.run("ip", "addr", "add", f"{item.host_outer(4)}/24", "dev", guest.tap)
            ns.run("ip", "addr", "add", f"{item.host_outer(6)}/64", "dev", guest.tap, "nodad")
            guest.run(f"ip link set eth0 up && ip addr add {item.guest_outer(4)}/24 dev eth0"
                      f" && ip addr add {item.guest_outer(6)}/64 dev eth0 nodad")
            # The kernel's WireGuard debug messages go to its log (not the slow console):
            # failures quote them.
            guest.run("mount -t debugfs debugfs /sys/kernel/debug"
                      " && echo 'module wireguard +p' > /sys/kernel/debug/dynamic_debug/control")
            ns.run("ping", "-c", "1", "-W", "5", item.guest_outer(4), timeout=15)
            ns.run("ping", "-c", "1", "-W", "5", item.guest_outer(6), timeout=15)
            yield item
        finally:
            context.__exit__(None, None, None)
    finally:
        ns.close()
        for name in os.listdir(keydir):
            os.unlink(os.path.join(keydir, name))
        os.rmdir(keydir)


@dataclass
class End:
    """One WireGuard end; `sh` runs shell code where that end lives."""
    name: str
    iface: str
    port: int
    inner4: str
    inner6: str
    private_key: str = ""
    public_key: str = ""
    lab: Lab = field(default=None, repr=False)

    def sh(self, script: str, check=True, timeout=30) -> str:
        raise NotImplementedError

    def wg(self, *args: str) -> str:
        return self.sh("wg " + " ".join(args))

    def show(self, what: str) -> str:
        return self.wg("show", self.iface, what)

    def transfer(self) -> tuple[int, int]:
        _, rx, tx = self.show("transfer").split()
        return int(rx), int(tx)

    def handshake_time(self) -> int:
        return int(self.show("latest-handshakes").split()[1])

    def endpoint(self) -> str:
        return self.show("endpoints").split()[1]

    def ping(self, address: str, count: int = 3, interval: float = 0.2, check=True, size: int = 56) -> str:
        # -W, not -w: with a deadline iputils keeps sending until `count` replies came.
        out = self.sh(f"ping -c {count} -i {interval} -W 10 -s {size} {address}",
                      check=check, timeout=count * interval + 20)
        if check:
            match = re.search(r"(\d+) packets received", out) or re.search(r"(\d+) received", out)
            assert match and int(match.group(1)) == count, \
                f"{self.name} ping {address}: {out}\n{diagnostics(self.lab)}"
        return out


class WgcEnd(End):
    def sh(self, script, check=True, timeout=30):
        return self.lab.ns.run("sh", "-c", script, check=check, timeout=timeout).stdout

    def key_file(self, key: str, name: str) -> str:
        path = os.path.join(self.lab.keydir, f"{self.iface}.{name}")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(key + "\n")
        return path


class KernelEnd(End):
    def sh(self, script, check=True, timeout=30):
        result = self.lab.guest.run(script, check=check, timeout=timeout)
        return result.stdout

    def key_file(self, key: str, name: str) -> str:
        path = f"/tmp/{self.iface}.{name}"
        self.sh(f"umask 077 && echo {key} > {path}")
        return path


def diagnostics(lab: Lab) -> str:
    """The last lines of every wgc log in the lab and of the guest kernel's log."""
    parts = []
    for path in lab.wgc_logs:
        if not os.path.exists(path):
            continue
        with open(path, errors="replace") as f:
            parts.append(f"--- {path}\n" + "".join(f.readlines()[-40:]))
    try:
        parts.append("--- guest dmesg\n" + lab.guest.run("dmesg | tail -40", check=False).stdout)
    except GuestError as error:
        parts.append(f"--- guest dmesg unavailable: {error}")
    return "\n".join(parts)


def _configure(end: End, other: End, lab: Lab, family: int, psk: str | None):
    endpoint = other_outer = (lab.guest_outer(family) if isinstance(other, KernelEnd)
                              else lab.host_outer(family))
    if family == 6:
        endpoint = f"[{other_outer}]"
    psk_args = f"preshared-key {end.key_file(psk, 'psk')}" if psk else ""
    end.sh(f"wg set {end.iface} private-key {end.key_file(end.private_key, 'key')}"
           f" listen-port {end.port} peer {other.public_key} {psk_args}"
           f" endpoint {endpoint}:{other.port} allowed-ips {other.inner4}/32,{other.inner6}/128"
           f" && ip addr add {end.inner4}/24 dev {end.iface}"
           f" && ip addr add {end.inner6}/64 dev {end.iface} nodad"
           f" && ip link set {end.iface} up")


@pytest.fixture
def connect(lab):
    """connect(outer_family, psk, index) -> (wgc end, kernel end), a fresh tunnel not yet used.

    Tunnels of different index can live side by side: their own ports, their own
    inner subnets 10.77.INDEX.0/24 and fd77:INDEX::/64, their own guest interface.
    """
    made: list[tuple[WgcEnd, KernelEnd]] = []

    def make(family: int = 4, psk: bool = False, index: int = 0) -> tuple[WgcEnd, KernelEnd]:
        ours = WgcEnd("wgc", unique_name("wgk"), WGC_PORT + 10 * index,
                      f"10.77.{index}.1", f"fd77:{index:x}::1", lab=lab)
        theirs = KernelEnd("kernel", f"wgk{index}", KERNEL_PORT + 10 * index,
                           f"10.77.{index}.2", f"fd77:{index:x}::2", lab=lab)
        for end in (ours, theirs):
            end.private_key, end.public_key = new_key()
        start_daemon(lab.ns, "wgc", ours.iface, WGC_ENV)
        made.append((ours, theirs))
        lab.wgc_logs.append(daemon_log(ours.iface))
        lab.guest.run(f"ip link del {theirs.iface} 2>/dev/null; ip link add {theirs.iface} type wireguard")
        shared = new_key()[0] if psk else None
        _configure(ours, theirs, lab, family, shared)
        _configure(theirs, ours, lab, family, shared)
        return ours, theirs

    yield make
    for ours, theirs in made:
        lab.ns.run("ip", "link", "del", ours.iface, check=False)
        control = socket_path(ours.iface)
        try:
            wait_for(lambda path=control: not os.path.exists(path), timeout=5,
                     what=f"wgc on {ours.iface} to exit")
        finally:
            for path in (os.path.join(lab.keydir, f"{ours.iface}.key"),
                         os.path.join(lab.keydir, f"{ours.iface}.psk"), daemon_log(ours.iface)):
                if os.path.exists(path):
                    os.unlink(path)
            if daemon_log(ours.iface) in lab.wgc_logs:
                lab.wgc_logs.remove(daemon_log(ours.iface))
            try:
                lab.guest.run(f"ip link del {theirs.iface} 2>/dev/null; rm -f /tmp/{theirs.iface}.*",
                              check=False)
            except GuestError:
                pass


def _ends(pair, initiator: str):
    ours, theirs = pair
    return (ours, theirs) if initiator == "wgc" else (theirs, ours)


ROLES = ["wgc", "kernel"]
ROLE_IDS = ["wgc-initiates", "kernel-initiates"]


@pytest.mark.parametrize("psk", [False, True], ids=["no-psk", "psk"])
@pytest.mark.parametrize("family", [4, 6], ids=["outer-v4", "outer-v6"])
@pytest.mark.parametrize("initiator", ROLES, ids=ROLE_IDS)
def test_handshake_and_ping(lab, connect, initiator, family, psk):
    a, b = _ends(connect(family, psk), initiator)
    a.ping(b.inner4)
    a.ping(b.inner6)
    b.ping(a.inner4)
    b.ping(a.inner6)
    for end, other in ((a, b), (b, a)):
        assert end.handshake_time() > 0, f"{end.name} saw no handshake"
        outer = lab.guest_outer(family) if other.name == "kernel" else lab.host_outer(family)
        shown = outer if family == 4 else f"[{outer}]"
        assert end.endpoint() == f"{shown}:{other.port}"
    if psk:
        assert b.public_key in a.show("preshared-keys")


@pytest.mark.parametrize("family", [4, 6], ids=["outer-v4", "outer-v6"])
@pytest.mark.parametrize("initiator", ROLES, ids=ROLE_IDS)
def test_transfer_counts_agree_after_ten_pings(connect, initiator, family):
    """The kernel selftest's figures (netns.sh): 10 pings of 84 bytes from a fresh start.

    The pinging side is the initiator there too: it has rx 1372 and tx 1428 or 1460.
    """
    a, b = _ends(connect(family), initiator)
    a.ping(b.inner4, count=10, interval=0.1)
    # The counts settle once the last reply (or a keepalive) has been read on both ends.
    wait_for(lambda: a.transfer() == tuple(reversed(b.transfer())), timeout=5,
             what=f"{a.name} {a.transfer()} and {b.name} {b.transfer()} to mirror each other")
    # (rx, tx): the initiator sent the initiation (148) and received the response (92);
    # 10 pings each way are 10 x 128 bytes on the wire; one keepalive (32) may follow.
    assert a.transfer() in ((1372, 1428), (1372, 1460)), f"initiator {a.name}: {a.transfer()}"
    assert b.transfer() in ((1428, 1372), (1460, 1372)), f"responder {b.name}: {b.transfer()}"


# A TCP end on the host: receives until EOF and prints the length and SHA-256, or sends stdin.
HOST_TCP = r"""
import hashlib, socket, sys
mode, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "receive":
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, port))
    server.listen(1)
    server.settimeout(60)
    print("listening", flush=True)
    conn, _ = server.accept()
    conn.settimeout(60)
    digest, size = hashlib.sha256(), 0
    while chunk := conn.recv(65536):
        digest.update(chunk)
        size += len(chunk)
    conn.close()
    print(size, digest.hexdigest(), flush=True)
else:
    data = sys.stdin.buffer.read()
    conn = socket.create_connection((address, port), timeout=60)
    conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(65536):
        pass
    print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"""

TCP_PORT = 5201


def _sha256_line(out: str) -> tuple[int, str]:
    """(length, digest) from `wc -c` and `sha256sum` lines or the host script's line."""
    numbers = re.findall(r"\b\d+\b", out)
    digest = re.search(r"\b[0-9a-f]{64}\b", out).group(0)
    return int(numbers[0]), digest


def _kernel_to_wgc(ours: "WgcEnd", theirs: "KernelEnd", size: int) -> None:
    receiver = ours.lab.ns.popen(sys.executable, "-c", HOST_TCP, "receive", ours.inner4, str(TCP_PORT),
                                 stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout.readline().strip() == "listening"
        sent = theirs.sh(f"dd if=/dev/urandom of=/tmp/blob bs=1024 count={size // 1024} 2>/dev/null"
                         f" && nc {ours.inner4} {TCP_PORT} < /tmp/blob"
                         f" && wc -c < /tmp/blob && sha256sum /tmp/blob", timeout=120)
        out, _ = receiver.communicate(timeout=60)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    assert _sha256_line(out) == _sha256_line(sent) == (size, _sha256_line(sent)[1])


def _wgc_to_kernel(ours: "WgcEnd", theirs: "KernelEnd", size: int) -> None:
    theirs.sh(f"rm -f /tmp/received; nc -l -p {TCP_PORT} > /tmp/received 2>/dev/null &")
    wait_for(lambda: f":{TCP_PORT}" in theirs.sh("netstat -ltn"), timeout=10, what="nc to listen in the guest")
    sent = ours.lab.ns.run(sys.executable, "-c", HOST_TCP, "send", theirs.inner4, str(TCP_PORT),
                           input=os.urandom(size), text=False, timeout=120).stdout.decode()
    wait_for(lambda: "nc -l" not in theirs.sh("ps"), timeout=10, what="nc in the guest to see the end")
    received = theirs.sh("wc -c < /tmp/received && sha256sum /tmp/received && rm -f /tmp/received")
    assert _sha256_line(received) == _sha256_line(sent) == (size, _sha256_line(sent)[1])


@pytest.mark.parametrize("initiator", ROLES, ids=ROLE_IDS)
def test_tcp_transfer_both_ways(connect, initiator):
    """2 MiB each way over one TCP connection; lengths and SHA-256 must match."""
    ours, theirs = connect(4)
    first, second = (_wgc_to_kernel, _kernel_to_wgc) if initiator == "wgc" else (_kernel_to_wgc, _wgc_to_kernel)
    first(ours, theirs, 2 * 1024 * 1024)
    second(ours, theirs, 2 * 1024 * 1024)


@pytest.mark.parametrize("mover", ROLES)
def test_roaming_to_a_new_listen_port(connect, mover):
    ours, theirs = connect(4)
    ours.ping(theirs.inner4, count=1)
    moving, staying = (ours, theirs) if mover == "wgc" else (theirs, ours)
    moving.wg("set", moving.iface, "listen-port", str(moving.port + 100))
    moving.ping(staying.inner4, count=2)
    assert staying.endpoint().endswith(f":{moving.port + 100}")
    staying.ping(moving.inner4, count=2)


@pytest.mark.parametrize("mover", ROLES)
def test_roaming_to_a_new_address(lab, connect, mover):
    """The mover's outer IPv4 address changes; its next packet moves the other's endpoint."""
    ours, theirs = connect(4)
    moving, staying = (ours, theirs) if mover == "wgc" else (theirs, ours)
    moving.ping(staying.inner4, count=1)
    if moving is ours:
        old, new, device = lab.host_outer(4), f"192.168.{lab.subnet}.7", lab.tap
    else:
        old, new, device = lab.guest_outer(4), f"192.168.{lab.subnet}.9", "eth0"
    # Deleting a primary address takes its secondaries along: delete first.
    moving.sh(f"ip addr del {old}/24 dev {device} && ip addr add {new}/24 dev {device}")
    try:
        moving.ping(staying.inner4, count=2)
        assert staying.endpoint() == f"{new}:{moving.port}"
        staying.ping(moving.inner4, count=2)
    finally:
        moving.sh(f"ip -4 addr flush dev {device}; ip addr add {old}/24 dev {device}", check=False)


@pytest.mark.parametrize("initiator", ROLES, ids=ROLE_IDS)
def test_new_handshake_after_a_private_key_change(connect, initiator):
    a, b = _ends(connect(4), initiator)
    a.ping(b.inner4, count=1)
    old_public = a.public_key
    a.private_key, a.public_key = new_key()
    a.wg("set", a.iface, "private-key", a.key_file(a.private_key, "key"))
    outer, port = b.show("endpoints").split()[1].rsplit(":", 1)
    b.wg("set", b.iface, "peer", old_public, "remove", "peer", a.public_key,
         "endpoint", f"{outer}:{port}", "allowed-ips", f"{a.inner4}/32")
    a.ping(b.inner4, count=2)
    assert a.public_key in b.show("latest-handshakes")
    b.ping(a.inner4, count=2)


def _handshake_after(end: End, before: int) -> bool:
    return end.handshake_time() > before


@pytest.mark.slow
@pytest.mark.parametrize("silent", ROLES, ids=["wgc-replies-lost", "kernel-replies-lost"])
def test_rekey_when_the_peer_goes_quiet(lab, connect, silent):
    """Data one way, none back: after 15 s the sender starts a new handshake and the other answers.

    The host namespace drops only the transport messages (type 4) of the
    quiet end, so handshake messages still pass both ways.
    """
    ours, theirs = connect(4)
    ours.ping(theirs.inner4, count=1)
    first = (ours.handshake_time(), theirs.handshake_time())
    quiet, talker = (ours, theirs) if silent == "wgc" else (theirs, ours)
    table = unique_name("wgkq")
    hook, match = (("output", f"udp sport {ours.port}") if quiet is ours
                   else ("input", f"udp sport {theirs.port}"))
    # Handshake times are whole seconds: make sure the new one can differ.
    time.sleep(1.1)
    lab.ns.run("nft", "-f", "-", input=(
        f"table inet {table} {{\n chain c {{\n  type filter hook {hook} priority 0;\n"
        f"  {match} @th,64,8 4 drop\n }}\n}}\n"))
    pinger = None
    try:
        # The talker keeps sending (no replies come back) until it gives up on the session.
        script = f"ping -c 40 -i 0.5 -w 25 {quiet.inner4} >/dev/null 2>&1"
        if talker is theirs:
            talker.sh(f"{script} &")
        else:
            pinger = lab.ns.popen("sh", "-c", script)
        wait_for(lambda: _handshake_after(talker, first[0 if talker is ours else 1]), timeout=30,
                 interval=0.5, what=f"{talker.name} to start a new handshake")
        wait_for(lambda: _handshake_after(quiet, first[0 if quiet is ours else 1]), timeout=5,
                 interval=0.2, what=f"{quiet.name} to answer the new handshake")
    finally:
        lab.ns.run("nft", "delete", "table", "inet", table, check=False)
        if pinger is not None:
            pinger.kill()
            pinger.wait()
        theirs.sh("kill $(pidof ping) 2>/dev/null; true", check=False)
    ours.ping(theirs.inner4, count=2)
    theirs.ping(ours.inner4, count=2)


@pytest.mark.parametrize("restarted", ROLES)
def test_a_restarted_end_handshakes_again(lab, connect, restarted):
    """One end forgets its sessions (its interface is made anew with the same key) and sends first."""
    ours, theirs = connect(4)
    ours.ping(theirs.inner4, count=1)
    before = (theirs if restarted == "wgc" else ours).handshake_time()
    time.sleep(1.1)
    if restarted == "wgc":
        lab.ns.run("ip", "link", "del", ours.iface)
        wait_for(lambda: not os.path.exists(socket_path(ours.iface)), what="wgc to exit")
        start_daemon(lab.ns, "wgc", ours.iface, WGC_ENV)
        _configure(ours, theirs, lab, 4, None)
        ours.ping(theirs.inner4, count=2)
        assert theirs.handshake_time() > before
    else:
        lab.guest.run(f"ip link del {theirs.iface} && ip link add {theirs.iface} type wireguard")
        _configure(theirs, ours, lab, 4, None)
        theirs.ping(ours.inner4, count=2)
        assert ours.handshake_time() > before


@pytest.mark.slow
def test_rekey_after_time_in_both_roles(lab, connect):
    """Two tunnels at once, one started by each side, pinged every second for 120+ s.

    Each initiator starts a new handshake when it sends 120 s after the first one
    (REKEY_AFTER_TIME; a responder would wait until 165 s), the other end answers,
    and no ping is lost on the way.
    """
    wgc_first = connect(4, index=1)
    kernel_first = _ends(connect(4, index=2), "kernel")
    seconds = 135
    pings = []
    for a, b in (wgc_first, kernel_first):
        a.ping(b.inner4, count=1)
    started = time.monotonic()
    firsts = [(a.handshake_time(), b.handshake_time()) for a, b in (wgc_first, kernel_first)]
    host_ping = lab.ns.popen("ping", "-c", str(seconds), "-i", "1", "-W", "2", wgc_first[1].inner4,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        kernel_first[0].sh(f"ping -c {seconds} -i 1 -W 2 {kernel_first[1].inner4} >/tmp/rekey-ping.log 2>&1"
                           " & echo $! > /tmp/rekey-ping.pid")
        for (a, b), (first_a, first_b) in zip((wgc_first, kernel_first), firsts, strict=True):
            wait_for(lambda a=a, first=first_a: _handshake_after(a, first),
                     timeout=seconds + 10 - (time.monotonic() - started),
                     interval=1, what=f"{a.name}, the initiator, to rekey")
            elapsed = a.handshake_time() - first_a
            assert 118 <= elapsed <= 160, f"{a.name} rekeyed after {elapsed} s"
            wait_for(lambda b=b, first=first_b: _handshake_after(b, first), timeout=10, interval=0.5,
                     what=f"{b.name} to take the new session")
        out, _ = host_ping.communicate(timeout=seconds + 30)
        wait_for(lambda: "packets received" in kernel_first[0].sh("cat /tmp/rekey-ping.log"),
                 timeout=30, interval=1, what="the guest's ping to finish")
        pings = [out, kernel_first[0].sh("cat /tmp/rekey-ping.log")]
    finally:
        if host_ping.poll() is None:
            host_ping.kill()
            host_ping.wait()
        kernel_first[0].sh("kill $(cat /tmp/rekey-ping.pid) 2>/dev/null; rm -f /tmp/rekey-ping.*; true",
                           check=False)
    for out in pings:
        match = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out)
        assert match and int(match.group(2)) >= int(match.group(1)) - 1, out


@pytest.mark.parametrize("initiator", ROLES, ids=ROLE_IDS)
def test_packets_of_the_full_mtu_both_ways(connect, initiator):
    """1420-byte inner packets (the MTU, not a multiple of 16: padding stops at the MTU)."""
    a, b = _ends(connect(4), initiator)
    for end in (a, b):
        assert " mtu 1420 " in end.sh(f"ip link show {end.iface}"), f"{end.name}'s MTU is not 1420"
    for sender, receiver in ((a, b), (b, a)):
        # 1392 + 8 (ICMP) + 20 (IPv4) and 1372 + 8 + 40 (IPv6) are 1420 bytes.
        sender.ping(receiver.inner4, count=2, size=1392)
        sender.ping(receiver.inner6, count=2, size=1372)


@pytest.mark.parametrize("sender", ROLES)
def test_persistent_keepalives_arrive(connect, sender):
    """A persistent keepalive of 1 s on one end: the other counts 32 bytes for each."""
    ours, theirs = connect(4)
    ours.ping(theirs.inner4, count=1)
    keeping, counting = (ours, theirs) if sender == "wgc" else (theirs, ours)
    before_rx = counting.transfer()[0]
    keeping.wg("set", keeping.iface, "peer", counting.public_key, "persistent-keepalive", "1")
    time.sleep(3.5)
    keeping.wg("set", keeping.iface, "peer", counting.public_key, "persistent-keepalive", "0")
    time.sleep(0.5)
    gained = counting.transfer()[0] - before_rx
    assert gained % 32 == 0 and 3 * 32 <= gained <= 6 * 32, f"{counting.name} received {gained} bytes"
    assert keeping.show("persistent-keepalive").split()[1] == "off"
