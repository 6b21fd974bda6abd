"""The control socket under abuse, who may use it, what the daemon logs, and a crash.

The first tests run wgc.uapi_server in this process against a sans-I/O
Device, with its limits made small; the namespace tests run the daemon as
users do and reach it with wg(8) and raw connections.
"""
import base64
import logging
import os
import signal
import socket
import subprocess
import time

import pytest

from netns import socket_path, unique_name, wait_for
from test_lifecycle import daemon_pid, link_exists
from wgc import uapi, uapi_server
from wgc.device import Device
from wgnet import WGC, have, new_key, read_uapi_reply, rss_kib, start_daemon, tunnel

GET = b"get=1\n\n"


def connect(path: str, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)  # blocking, as wg(8) connects: it waits while the queue is full
    sock.settimeout(timeout)
    return sock


reply = read_uapi_reply


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# -- the server in this process ---------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    """(socket path, device, server) of a UAPIServer on a Device without a TUN."""
    device = Device(unique_name("uab"), None, logging.getLogger("test_uapi_abuse"))
    path = str(tmp_path / "uapi.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    server = uapi_server.UAPIServer(device, listener, device.log)
    server.start()
    yield path, device, server
    server.close()
    listener.close()
    device.close()


def test_a_request_not_done_in_time_is_closed(served, monkeypatch):
    monkeypatch.setattr(uapi_server, "REQUEST_TIMEOUT", 0.5)
    path, device, _ = served
    idle, slow = connect(path), connect(path)
    slow.sendall(b"set=1\nfwmark=1\nfw")
    started = time.monotonic()
    assert closed_by_server(slow)
    assert time.monotonic() - started < 4
    assert device.fwmark == 0  # nothing of an unfinished request is applied
    time.sleep(0.6)
    idle.sendall(GET)  # idle between requests is no fault
    assert reply(idle) == b"errno=0\n\n"


def test_the_longest_waiting_client_makes_room(served, monkeypatch):
    monkeypatch.setattr(uapi_server, "MAX_CLIENTS", 8)
    path, _, _ = served
    first = connect(path)
    first.sendall(GET)
    assert reply(first) == b"errno=0\n\n"
    others = [connect(path) for _ in range(7)]
    time.sleep(0.1)
    first.sendall(b"get=1\n")  # busy now, but it has waited longest
    newcomer = connect(path)
    newcomer.sendall(GET)
    assert reply(newcomer) == b"errno=0\n\n"
    assert closed_by_server(first)
    for sock in others:
        sock.sendall(GET)
        assert reply(sock) == b"errno=0\n\n"


def test_a_client_that_does_not_read_holds_one_reply(served):
    """Replies to requests sent in a row are built one at a time, as each goes out."""
    path, device, server = served
    prefixes = "".join(f"allowed_ip=10.{i >> 8}.{i & 255}.0/24\n" for i in range(4000))
    assert uapi.handle_set(device, f"public_key={'11' * 32}\n{prefixes}".encode()) == 0
    one_reply = len(uapi.handle_get(device)) + len("errno=0\n\n")
    sock = connect(path)
    sock.sendall(GET * 200)
    time.sleep(0.5)
    held = server._held()
    assert 0 < held < one_reply + len(GET) * 200
    received = b""
    while len(received) < 200 * one_reply and (chunk := sock.recv(1 << 20)):
        received += chunk
    assert received == (bytes(uapi.handle_get(device)) + b"errno=0\n\n") * 200


def test_buffered_requests_stay_within_the_limit(served, monkeypatch):
    """Past BUFFER_LIMIT nothing more is read: a `get` waits until a big request is done."""
    monkeypatch.setattr(uapi_server, "BUFFER_LIMIT", 256 << 10)
    path, _, _ = served
    big, small = connect(path), connect(path)
    # A little past the limit: the rest waits in the socket's buffer.
    big.sendall(b"set=1\nfwmark=2\n" + b"persistent_keepalive_interval=0\n" * 9400)
    time.sleep(0.3)
    small.sendall(GET)
    small.settimeout(0.5)
    with pytest.raises(TimeoutError):
        small.recv(100)
    big.sendall(b"\n")
    assert reply(big) == b"errno=-22\n\n"  # a peer key before any peer, after fwmark
    small.settimeout(5)
    assert reply(small) == b"fwmark=2\nerrno=0\n\n"


# -- the daemon in a namespace ----------------------------------------------------------


@pytest.fixture
def daemon(netns):
    """(namespace, interface) of a backgrounded wgc with a key and a peer."""
    ns = netns("wgab")
    iface = unique_name("wga")
    start_daemon(ns, "wgc", iface)
    private, _ = new_key()
    _, peer = new_key()
    ns.run("wg", "set", iface, "private-key", "/dev/stdin", "listen-port", "40001",
           "peer", peer, "allowed-ips", "10.9.0.0/16", input=private + "\n")
    return ns, iface


def wg(ns, *args, **kw):
    """wg(8) in the namespace, given 10 s: longer would be no prompt answer."""
    return ns.run("wg", *args, timeout=10, **kw)


@pytest.mark.netns
def test_idle_connections_do_not_lock_others_out(daemon):
    ns, iface = daemon
    path = socket_path(iface)
    idle = [connect(path) for _ in range(200)]
    try:
        assert "listening port: 40001" in wg(ns, "show", iface).stdout
        wg(ns, "set", iface, "listen-port", "40002")
        assert wg(ns, "show", iface, "listen-port").stdout == "40002\n"
        for sock in idle[::20]:  # and the idle ones are still served
            sock.sendall(GET)
            assert reply(sock).endswith(b"errno=0\n\n")
        # More idle clients than the daemon keeps: the ones idle longest go.
        idle += [connect(path) for _ in range(uapi_server.MAX_CLIENTS)]
        wg(ns, "set", iface, "listen-port", "40003")
        assert wg(ns, "show", iface, "listen-port").stdout == "40003\n"
        assert closed_by_server(idle[0])
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.netns
def test_a_slowloris_does_not_hold_up_others(daemon):
    """Clients trickling requests a byte at a time hold no thread and no lock:
    wg(8) is answered meanwhile, and the trickled requests apply once whole."""
    ns, iface = daemon
    request = b"set=1\nfwmark=77\n\n"
    slow = [connect(socket_path(iface)) for _ in range(20)]
    try:
        for i, byte in enumerate(request[:-1]):
            for sock in slow:
                sock.sendall(bytes([byte]))
            if i % 4 == 0:
                wg(ns, "set", iface, "listen-port", str(41000 + i))
                assert wg(ns, "show", iface, "listen-port").stdout == f"{41000 + i}\n"
            time.sleep(0.05)
        assert wg(ns, "show", iface, "fwmark").stdout == "off\n"
        for sock in slow:
            sock.sendall(request[-1:])
            assert reply(sock) == b"errno=0\n\n"
        assert wg(ns, "show", iface, "fwmark").stdout == "0x4d\n"
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.netns
def test_an_oversize_request_is_refused_whole(daemon):
    ns, iface = daemon
    before = wg(ns, "showconf", iface).stdout
    line = b"allowed_ip=10.1.2.0/24\n"
    count = uapi.MAX_REQUEST // len(line) + 1
    with connect(socket_path(iface), timeout=60) as sock:
        sock.sendall(b"set=1\nreplace_peers=true\nlisten_port=40009\n" + line * count + b"\n")
        assert reply(sock) == f"errno={uapi.ERRNO_TOO_BIG}\n\n".encode()
        sock.sendall(GET)  # the connection goes on
        assert reply(sock).endswith(b"errno=0\n\n")
    assert wg(ns, "showconf", iface).stdout == before


@pytest.mark.netns
def test_a_connection_flood_leaves_the_daemon_serving_in_bounded_memory(daemon):
    ns, iface = daemon
    path = socket_path(iface)
    pid = daemon_pid(ns)
    rss_before, threads_before = rss_kib([pid]), threads(pid)
    held, peak, deadline = [], 0, time.monotonic() + 30
    # 5,000 connections in at most 30 s: a quarter say nothing, a quarter
    # send half a request, a quarter ask for a reply they never read, a
    # quarter hang up at once; at most 600 are open at a time on our side.
    for i in range(5000):
        if time.monotonic() > deadline:
            break
        try:
            sock = connect(path, timeout=1)
            kind = i % 4
            if kind == 1:
                sock.sendall(b"set=1\nfwmark=")
            elif kind == 2:
                sock.sendall(GET * 8)
            if kind == 3:
                sock.close()
            else:
                held.append(sock)
        except OSError:
            pass  # closed by the daemon while we spoke: that is its right
        if len(held) > 600:
            held.pop(0).close()
        if i % 500 == 0:
            peak = max(peak, rss_kib([pid]))
    try:
        assert "listening port: 40001" in wg(ns, "show", iface).stdout
        wg(ns, "set", iface, "listen-port", "40005")
        assert wg(ns, "show", iface, "listen-port").stdout == "40005\n"
        peak = max(peak, rss_kib([pid]))
        print(f"\nflood: RSS {rss_before / 1024:.1f} MiB before, peak {peak / 1024:.1f} MiB;"
              f" threads {threads_before} before, {threads(pid)} after")
        assert peak < rss_before + 32 * 1024
        assert threads(pid) == threads_before
    finally:
        for sock in held:
            sock.close()


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


# -- logs -------------------------------------------------------------------------------

KEY_HEX = bytes(range(200, 232)).hex()
KEY_B64 = base64.b64encode(bytes(range(200, 232))).decode()
# Lines a clumsy client might send, each holding a key or what may be one.
BAD_KEY_LINES = [
    f"private_key={KEY_HEX[:-1]}",  # a digit short
    f"private_key={KEY_HEX}x",
    f"private_key={KEY_B64}",  # base64 where hex belongs
    f"{KEY_B64}",  # no "=" at all
    f"{KEY_B64[:-1]}=",  # base64 padding read as "key="
    f"listen_port={KEY_HEX}",
    f"public_key={KEY_HEX[:-2]}",
    f"public_key={'11' * 32}\npreshared_key={KEY_HEX[1:]}",
    f"public_key={'11' * 32}\nendpoint={KEY_B64}",
    f"public_key={'11' * 32}\nallowed_ip={KEY_HEX}",
    f"public_key={'11' * 32}\n{KEY_HEX}=1",
]
GOOD_KEY_LINES = [f"private_key={KEY_HEX}", f"public_key={'22' * 32}\npreshared_key={KEY_HEX}"]


def secrets_in(text: str) -> list[str]:
    """The pieces of the test key (16 characters or more, hex or base64) found in text."""
    pieces = {key[i : i + 16] for key in (KEY_HEX, KEY_B64) for i in range(len(key) - 15)}
    return sorted(p for p in pieces if p in text)


def logged_run(netns, level: str, requests: list[bytes]) -> str:
    """wgc -f with LOG_LEVEL=level, sent each request on a connection of its
    own, stopped; returns all it printed."""
    ns = netns("wgab")
    iface = unique_name("wga")
    ns.owns_interface(iface)
    proc = ns.popen(*WGC, "-f", iface, env=dict(os.environ, LOG_LEVEL=level),
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: os.path.exists(socket_path(iface)), what="the socket")
    for request in requests:
        with connect(socket_path(iface)) as sock:
            sock.sendall(request)
            reply(sock)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    return out


def set_request(lines: str) -> bytes:
    return f"set=1\n{lines}\n\n".encode()


ABUSIVE_REQUESTS = [set_request(line) for line in BAD_KEY_LINES] + [
    f"{KEY_HEX}\n\n".encode(),  # an operation line that is a key
    b"get=1\nx",
    b"set=1\n" + b"x" * 70000 + b"\n\n",
]


@pytest.mark.netns
def test_silent_prints_nothing(netns):
    assert logged_run(netns, "silent", ABUSIVE_REQUESTS) == ""


@pytest.mark.netns
@pytest.mark.parametrize("level", ["verbose", "error"])
def test_no_key_material_in_the_log(netns, level):
    requests = [set_request(line) for line in GOOD_KEY_LINES] + ABUSIVE_REQUESTS
    out = logged_run(netns, level, requests)
    assert out.count("IPC error") == len(BAD_KEY_LINES) + 1, out  # each refusal is logged
    assert "invalid UAPI operation" in out
    assert secrets_in(out) == [], out


def test_log_lines_name_known_keys_only():
    """An unknown key name is quoted only when shaped like the protocol's words."""
    assert uapi._shown("privte_key") == "'privte_key'"
    assert uapi._shown("set=2") == "'set=2'"
    for text in (KEY_HEX, KEY_B64, KEY_B64[:20], "Private_Key", "x" * 33):
        assert text not in uapi._shown(text)


# -- who may talk to it -----------------------------------------------------------------

AS_NOBODY = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")


@pytest.mark.netns
def test_modes_and_an_unprivileged_user(netns):
    """On a fresh /run (a tmpfs in a mount namespace of its own) and with a
    umask that would let anyone in, the daemon makes the directory 0755 and
    the socket 0700, as wireguard-go does (ipc/uapi_unix.go): user nobody can
    neither read keys nor set anything, root can."""
    ns = netns("wgab")
    iface = unique_name("wga")
    private, _ = new_key()
    script = f"""
        set -e
        mount -t tmpfs tmpfs /run
        umask 000
        {' '.join(WGC)} {iface}
        umask 022
        stat -c '%a %F' /run/wireguard /run/wireguard/{iface}.sock
        wg set {iface} listen-port 40001 private-key /dev/stdin
        {' '.join(AS_NOBODY)} wg show {iface} private-key || echo "nobody show failed"
        {' '.join(AS_NOBODY)} wg set {iface} listen-port 40002 || echo "nobody set failed"
        wg show {iface} listen-port
        wg show {iface} private-key
    """
    out = ns.run("unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                 input=private + "\n").stdout
    lines = out.splitlines()
    assert lines[:2] == ["755 directory", "700 socket"], out
    assert "nobody show failed" in lines and "nobody set failed" in lines, out
    assert lines[-2:] == ["40001", private], out


# -- crash and restart ------------------------------------------------------------------

# A peer that sends and hears nothing back starts a new handshake after
# KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (10 + 5 s, whitepaper section 6.5); the
# handshake itself may need a retry of REKEY_TIMEOUT.
NEXT_HANDSHAKE = 10 + 5 + 5


@pytest.mark.netns
@pytest.mark.parametrize("first", ["peer", "restarted"], ids=["peer-sends", "restarted-sends"])
@pytest.mark.parametrize("peer", ["wgc", "wireguard-go"])
def test_kill_9_during_traffic_then_restart(netns, peer, first):
    """The peer keeps sending throughout; after the restart, either only the
    peer sends (it starts a handshake when its data gets no answer) or the
    restarted wgc sends too (it starts one at once)."""
    if not have(peer):
        pytest.skip(f"{peer} is not installed")
    left, right = tunnel(netns, "wgc", peer, with_ipv6=False)
    right.ping(left.inner4)
    config = left.wg("showconf", left.iface).stdout
    traffic = right.ns.popen("ping", "-q", "-i", "0.05", "-w", "60", left.inner4,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    pid = daemon_pid(left.ns)
    os.kill(pid, signal.SIGKILL)
    # What it leaves: its socket file (nobody listens on it); the interface
    # goes with the TUN descriptor, as the process ends.
    wait_for(lambda: not left.ns.pids() and not link_exists(left.ns, left.iface),
             what="the killed daemon and its interface to be gone")
    assert os.path.exists(socket_path(left.iface))
    # Restarted at once with the same configuration, as systemd would.
    start_daemon(left.ns, "wgc", left.iface)
    left.wg("setconf", left.iface, "/dev/stdin", input=config)
    left.ns.run("ip", "addr", "add", f"{left.inner4}/24", "dev", left.iface)
    left.ns.run("ip", "link", "set", left.iface, "up")
    restarted = time.monotonic()
    sender, receiver = (right, left) if first == "peer" else (left, right)
    wait_for(lambda: sender.ping(receiver.inner4, count=1, check=False).returncode == 0,
             timeout=NEXT_HANDSHAKE + 5, interval=0.2, what="the tunnel back")
    print(f"\nwgc restarted beside {peer}, {first} sending: tunnel back"
          f" {time.monotonic() - restarted:.1f} s after the restart")
    receiver.ping(sender.inner4)
    assert left.transfer()[0] > 0
    traffic.kill()
    traffic.wait()
