"""The appliance: systemd notification, clear errors for a missing capability
or TUN device, wg-quick with wgc as its userspace implementation, and the
frozen executable's temporary directory."""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from netns import socket_path, unique_name, wait_for
from wgnet import WGC, new_key, wgc_executable

pytestmark = pytest.mark.netns
ROOT = Path(__file__).parent.parent
ONEFILE = ROOT / "dist" / "wgc"


def test_notify_protocol(netns, tmp_path):
    ns = netns("wgap")
    iface = unique_name("wga")
    ns.owns_interface(iface)
    path = str(tmp_path / "notify")
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(path)
    manager.settimeout(5)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="200000")
    proc = ns.popen(*WGC, "-f", iface, env=env)
    try:
        first = manager.recv(4096).decode()
        assert first.startswith("READY=1\n")
        assert os.path.exists(socket_path(iface))  # ready means listening
        started = time.monotonic()
        beats = [manager.recv(4096).decode() for _ in range(3)]
        assert beats == ["WATCHDOG=1\n"] * 3
        assert time.monotonic() - started < 1.0  # every 100 ms: half of 200 ms
        proc.send_signal(signal.SIGTERM)
        while (message := manager.recv(4096).decode()) == "WATCHDOG=1\n":
            pass
        assert message == "STOPPING=1\n"
        assert proc.wait(timeout=2) == 0
    finally:
        manager.close()


def test_without_cap_net_admin(netns):
    ns = netns("wgap")
    result = ns.run("setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", *WGC, "-f",
                    unique_name("wga"), check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CAP_NET_ADMIN" in lines[0], result.stderr


def test_without_tun_device(netns):
    ns = netns("wgap")
    script = f"mount -t tmpfs none /dev/net && exec {' '.join(WGC)} -f {unique_name('wga')}"
    result = ns.run("unshare", "--mount", "sh", "-c", script, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "/dev/net/tun" in lines[0], result.stderr


def test_wg_quick_up_and_down(netns, tmp_path):
    ns = netns("wgap")
    iface = unique_name("wgq")
    ns.owns_interface(iface)
    private, _ = new_key()
    _, peer = new_key()
    config = tmp_path / f"{iface}.conf"
    config.write_text(f"""[Interface]
PrivateKey = {private}
ListenPort = 51999
Address = 10.55.0.1/24, fd55::1/64
MTU = 1380

[Peer]
PublicKey = {peer}
AllowedIPs = 10.55.0.2/32, 10.56.0.0/16
Endpoint = 127.0.0.1:51998
""")
    env = dict(os.environ, WG_QUICK_USERSPACE_IMPLEMENTATION=wgc_executable())
    ns.run("wg-quick", "up", str(config), env=env)
    addresses = ns.run("ip", "addr", "show", iface).stdout
    assert "10.55.0.1/24" in addresses and "fd55::1/64" in addresses and "mtu 1380" in addresses
    assert "10.56.0.0/16 dev " + iface in ns.run("ip", "route").stdout
    shown = ns.run("wg", "showconf", iface).stdout
    assert peer in shown and "ListenPort = 51999" in shown
    ns.run("wg-quick", "down", str(config), env=env)
    wait_for(lambda: not ns.pids(), timeout=2, what="wgc to exit after wg-quick down")
    assert ns.run("ip", "link", "show", iface, check=False).returncode != 0
    assert not os.path.exists(socket_path(iface))


@pytest.mark.binary
@pytest.mark.skipif(not ONEFILE.exists(), reason="dist/wgc not built (run `just binary`)")
def test_onefile_temporary_directory_is_removed(netns, tmp_path):
    ns = netns("wgap")
    iface = unique_name("wga")
    ns.owns_interface(iface)
    env = dict(os.environ, TMPDIR=str(tmp_path))
    ns.run(str(ONEFILE), iface, env=env)
    assert len(list(tmp_path.iterdir())) == 1   # the running daemon's own unpacked copy
    ns.run(str(ONEFILE), "--version", env=env)  # works while the other runs
    for pid in ns.pids():
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not ns.pids(), timeout=2, what="the daemon to exit")
    wait_for(lambda: not list(tmp_path.iterdir()), timeout=2, what="the bundle's directory to go")


@pytest.mark.binary
@pytest.mark.skipif(not ONEFILE.exists(), reason="dist/wgc not built (run `just binary`)")
@pytest.mark.parametrize("options,reason", [("noexec,size=64m", "mounted noexec"), ("size=1m", "KiB free")],
                         ids=["noexec", "full"])
def test_onefile_says_in_one_line_when_tmpdir_cannot_be_used(tmp_path, options, reason):
    # A private mount namespace: the small tmpfs vanishes with the command.
    script = 'mount -t tmpfs -o "$1" wgc-test "$2" && TMPDIR="$2" exec "$3" --version'
    result = subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", options, str(tmp_path), str(ONEFILE)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "TMPDIR" in lines[0] and reason in lines[0] and str(tmp_path) in lines[0], lines[0]
    assert not list(tmp_path.iterdir())     # nothing left behind on the real directory
