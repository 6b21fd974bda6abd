"""The daemon's life: start-up, daemonizing, the shutdown triggers, misuse."""
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from netns import socket_path, unique_name, wait_for
from wgnet import WGC, read_uapi_reply, rss_kib, wgc_executable


def uapi_get(iface: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(socket_path(iface))
        s.sendall(b"get=1\n\n")
        return read_uapi_reply(s)


def answers(iface: str) -> bool:
    """The control socket takes a get (its file exists a moment before it listens)."""
    try:
        return uapi_get(iface).endswith(b"errno=0\n\n")
    except OSError:
        return False


def link_exists(ns, iface: str) -> bool:
    return ns.run("ip", "link", "show", iface, check=False).returncode == 0


def daemon_pid(ns) -> int:
    """The daemon's top process (a frozen one-file wgc is a launcher and its child)."""
    pids = ns.pids()
    parents = {pid: int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) for pid in pids}
    tops = [pid for pid, parent in parents.items() if parent not in parents]
    assert len(tops) == 1, pids
    return tops[0]


def assert_gone(ns, iface: str, within: float = 2.0):
    wait_for(lambda: not ns.pids(), timeout=within, what="the daemon to exit")
    assert not os.path.exists(socket_path(iface))
    assert not link_exists(ns, iface)


@pytest.fixture
def started(netns):
    """A namespace with a backgrounded wgc on a fresh interface."""
    ns = netns("wglc")
    iface = unique_name("wgl")
    ns.owns_interface(iface)
    result = ns.run(*WGC, iface)
    assert result.returncode == 0
    return ns, iface


def test_version_and_usage():
    out = subprocess.run([*WGC, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("wgc v")
    for args in ([], ["-f"], ["a", "b"], ["-x", "wg0"], ["-f", "a", "b"]):
        out = subprocess.run([*WGC, *args], capture_output=True, text=True)
        assert out.returncode == 1, args
        assert out.stdout.strip() == "Usage: wgc [-f/--foreground] INTERFACE-NAME"


@pytest.mark.netns
def test_background_start_returns_once_the_socket_answers(started):
    ns, iface = started
    # No waiting: the parent returned only after the child took over.
    assert uapi_get(iface).endswith(b"errno=0\n\n")
    assert link_exists(ns, iface)
    mode = os.stat(socket_path(iface)).st_mode & 0o777
    assert mode == 0o700
    assert ns.run("ip", "link", "show", iface).stdout.count("mtu 1420") == 1


@pytest.mark.netns
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_daemon(started, sig):
    ns, iface = started
    os.kill(daemon_pid(ns), sig)
    assert_gone(ns, iface)


@pytest.mark.netns
def test_removing_the_socket_stops_the_daemon(started):
    ns, iface = started
    os.unlink(socket_path(iface))
    assert_gone(ns, iface)


@pytest.mark.netns
def test_deleting_the_interface_stops_the_daemon(started):
    ns, iface = started
    ns.run("ip", "link", "del", iface)
    assert_gone(ns, iface)


@pytest.mark.netns
def test_foreground_stays_and_exits_zero(netns):
    ns = netns("wglc")
    iface = unique_name("wgl")
    ns.owns_interface(iface)
    proc = ns.popen(*WGC, "-f", iface, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: answers(iface), what="the socket to answer")
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=2) == 0
    # The socket went with the process signalled: it was that process, not a daemonized
    # child, that served it (a parent that went away instead would leave it behind).
    assert not os.path.exists(socket_path(iface))
    assert not ns.pids()


@pytest.mark.netns
def test_second_instance_fails_and_leaves_the_first(started):
    ns, iface = started
    second = ns.run(*WGC, iface, check=False)
    assert second.returncode == 1
    assert "Failed to create TUN device" in second.stderr
    assert uapi_get(iface).endswith(b"errno=0\n\n")


def socket_file_for(netns) -> tuple:
    """A namespace, a fresh interface name, and a unix socket bound at its path."""
    ns = netns("wglc")
    iface = unique_name("wgl")
    ns.owns_interface(iface)
    os.makedirs("/var/run/wireguard", exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(socket_path(iface))
    return ns, iface, sock


@pytest.mark.netns
def test_a_live_socket_is_refused(netns):
    """The interface is free but the socket answers: "socket in use"."""
    ns, iface, holder = socket_file_for(netns)
    holder.listen(1)
    try:
        result = ns.run(*WGC, iface, check=False)
        assert result.returncode == 1
        assert "UAPI listen error: unix socket in use" in result.stderr
        assert not link_exists(ns, iface)
    finally:
        holder.close()
        os.unlink(socket_path(iface))


@pytest.mark.netns
def test_a_stale_socket_is_replaced(netns):
    ns, iface, stale = socket_file_for(netns)
    stale.close()  # the file stays, nobody listens
    assert ns.run(*WGC, iface).returncode == 0
    assert uapi_get(iface).endswith(b"errno=0\n\n")
    os.kill(daemon_pid(ns), signal.SIGTERM)
    assert_gone(ns, iface)


@pytest.mark.netns
def test_bad_interface_name(netns):
    ns = netns("wglc")
    result = ns.run(*WGC, "x" * 16, check=False)
    assert result.returncode == 1
    assert "Failed to create TUN device: interface name too long" in result.stderr


@pytest.mark.netns
def test_verbose_log_lines_look_like_wireguard_go(netns):
    ns = netns("wglc")
    iface = unique_name("wgl")
    ns.owns_interface(iface)
    proc = ns.popen(*WGC, "-f", iface, env=dict(os.environ, LOG_LEVEL="verbose"),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: os.path.exists(socket_path(iface)), what="the socket")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=5)
    lines = out.splitlines()
    shape = re.compile(rf"^DEBUG: \({iface}\) \d{{4}}/\d\d/\d\d \d\d:\d\d:\d\d \S")
    assert lines and all(shape.match(line) for line in lines), lines
    assert any("UAPI listener started" in line for line in lines)
    assert lines[-1].endswith("Shutting down")


# README.md's figure: the daemon measured 17.4 MiB run from the package (the one-file
# executable's launcher, a second process, is not counted); the budget is 20 MB.
IDLE_RSS_MIB = 19


@pytest.mark.netns
def test_idle_memory(started):
    ns, _ = started
    daemon, *launcher = sorted(ns.pids(), key=lambda pid: rss_kib([pid]), reverse=True)
    rss = rss_kib([daemon])
    print(f"\nidle wgc RSS: {rss / 1024:.1f} MiB, launcher {rss_kib(launcher) / 1024:.1f} MiB")
    assert rss < IDLE_RSS_MIB * 1024


@pytest.mark.netns
def test_daemonizing_ignores_a_wgc_directory_in_the_working_directory(netns, tmp_path):
    """The re-executed child imports the same wgc as its parent, not ./wgc."""
    decoy = tmp_path / "wgc"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise SystemExit('imported the decoy')\n")
    (decoy / "__main__.py").write_text("raise SystemExit('imported the decoy')\n")
    ns = netns("wglc")
    iface = unique_name("wgl")
    ns.owns_interface(iface)
    # Started as users start it: the installed command (or the frozen one).
    result = ns.run(wgc_executable(), iface, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    assert uapi_get(iface).endswith(b"errno=0\n\n")
