"""wgc's UAPI against wireguard-go's: the same raw bytes to both, the same answers.

Debian's wireguard-go (v0.0.20220316) and wgc each run in a namespace of
their own, so both can use the same fixed listen port.  Every session of the
corpus below sends the same requests to both control sockets, valid and
malformed, several on one connection, and compares everything that comes
back, then the device state a fresh `get` shows.  wg(8) reads both too.

Normalised before comparing, and only these: the order of peers (wireguard-go
prints its map in random order, and wg(8) sorts peers by handshake time) and
listen ports from the ephemeral range (a port bound as 0 is random).

Requests are sent one at a time, each after the reply to the one before:
wireguard-go loses a request that follows a `set` in the same read (its line
scanner reads ahead), which wgc deliberately does not copy, so pipelining is
only exercised after `get`.
"""
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from netns import Netns, socket_path, unique_name, wait_for

pytestmark = pytest.mark.netns

WIREGUARD_GO = ["/usr/bin/wireguard-go"]
FIXED_PORT = 51820
REPLY_WAIT = 1.0  # seconds to wait for a reply that may never come
EOF_WAIT = 10.0

PRIVATE = bytes(range(1, 33))
PRIVATE_HEX = PRIVATE.hex().encode()
K1 = (b"\x11" * 32).hex().encode()
K2 = (b"\x22" * 32).hex().encode()
K3 = (b"\x33" * 32).hex().encode()
PSK = bytes(range(100, 132)).hex().encode()
ZERO_HEX = b"0" * 64


def wgc_command() -> list[str]:
    """The wgc daemon as installed next to this interpreter, or on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "wgc")
    if os.access(beside, os.X_OK):
        return [beside]
    return [shutil.which("wgc") or "wgc"]


def own_public_key_hex() -> bytes:
    from wgc import _crypto

    return _crypto.public_key(_crypto.clamp(PRIVATE)).hex().encode()


class Daemon:
    """One UAPI daemon on its own interface in its own namespace."""

    def __init__(self, label: str, command: list[str], log_dir: str):
        self.label = label
        self.ns = Netns("wgu")
        self.iface = unique_name("wgu")
        self.path = socket_path(self.iface)
        self.log_path = os.path.join(log_dir, f"{label}-{self.iface}.log")
        try:
            with open(self.log_path, "w") as log:
                # Both daemonize; the child keeps the log file as stdout.
                started = self.ns.run(
                    *command,
                    self.iface,
                    check=False,
                    capture_output=False,
                    stdout=log,
                    stderr=log,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "LOG_LEVEL": "verbose"},
                )
            assert started.returncode == 0, (
                f"{' '.join(command)} {self.iface} exited {started.returncode}:\n{self.log()}"
            )
            wait_for(lambda: os.path.exists(self.path), timeout=15, what=f"{label}'s socket {self.path}")
            self.ns.run("ip", "link", "set", self.iface, "up")
            wait_for(lambda: b"listen_port=" in self.get(), timeout=15, what=f"{label} to bind its port")
        except BaseException:
            self.close()
            raise
        low, high = self.ns.run("cat", "/proc/sys/net/ipv4/ip_local_port_range").stdout.split()
        self.ephemeral = range(int(low), int(high) + 1)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as log:
            return log.read()[-4000:]

    def connect(self) -> socket.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.path)
        return conn

    def get(self) -> bytes:
        with self.connect() as conn:
            conn.sendall(b"get=1\n\n")
            return read_until(conn, lambda data: b"\n\n" in data, EOF_WAIT)

    def wg(self, *args: str) -> str:
        return self.ns.run("wg", *args).stdout

    def close(self):
        # Killing everything in the namespace stops the daemon; a killed
        # daemon leaves its socket file behind.
        self.ns.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def read_until(conn: socket.socket, done, timeout: float) -> bytes:
    """Reads until done(data), the end of the stream, or timeout."""
    data = b""
    deadline = time.monotonic() + timeout
    while not done(data):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        conn.settimeout(remaining)
        try:
            chunk = conn.recv(1 << 20)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data + b"<reset>"
        if not chunk:
            return data + b"<closed>"
        data += chunk
    return data


def converse(daemon: Daemon, chunks: list[bytes]) -> bytes:
    """Sends each chunk on one connection, waiting after each for one more
    reply (or the end of the stream, or REPLY_WAIT), then half-closes and
    reads to the end.  Returns everything received, with markers where the
    daemon closed or reset the connection."""
    received = b""
    with daemon.connect() as conn:
        for chunk in chunks:
            try:
                conn.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                return received + b"<send failed>"
            seen = received

            def one_more_reply(data: bytes, seen: bytes = seen) -> bool:
                return (seen + data).count(b"\n\n") > seen.count(b"\n\n")

            received += read_until(conn, one_more_reply, REPLY_WAIT)
            if received.endswith((b"<closed>", b"<reset>")):
                return received
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            return received + b"<shutdown failed>"
        received += read_until(conn, lambda data: False, EOF_WAIT)
    return received


def normalise(stream: bytes, ephemeral: range) -> str:
    """Replies with their peers sorted and ephemeral listen ports masked."""
    text = stream.decode("latin-1")
    replies = text.split("\n\n")
    return "\n\n".join(_normalise_reply(reply, ephemeral) for reply in replies)


def _normalise_reply(reply: str, ephemeral: range) -> str:
    lines = reply.split("\n")
    device, peers = [], []
    for line in lines:
        if line.startswith("public_key="):
            peers.append([])
        if line.startswith("listen_port=") and line[12:].isdigit() and int(line[12:]) in ephemeral:
            line = "listen_port=<ephemeral>"
        if line.startswith("errno="):
            device.append(line)  # the status stays last
        elif peers:
            peers[-1].append(line)
        else:
            device.append(line)
    status = [line for line in device if line.startswith("errno=")]
    device = [line for line in device if not line.startswith("errno=")]
    return "\n".join(device + [line for peer in sorted(peers) for line in peer] + status)


def setreq(*lines: bytes) -> bytes:
    return b"set=1\n" + b"".join(line + b"\n" for line in lines) + b"\n"


GET = b"get=1\n\n"
RESET = setreq(b"replace_peers=true", b"private_key=" + ZERO_HEX, b"fwmark=0", b"listen_port=%d" % FIXED_PORT)


def peer(key: bytes, *lines: bytes) -> list[bytes]:
    return [b"public_key=" + key, *lines]


# Each session: a name and its connections, each a list of chunks to send.
SESSIONS = [
    ("get", [[GET]]),
    ("get twice on one connection", [[GET, GET]]),
    ("two gets in one write", [[GET + GET]]),
    ("get then a set on one connection", [[GET, setreq(b"fwmark=3"), GET]]),
    ("get followed by a character", [[b"get=1\nx"]]),
    ("get followed by another get", [[b"get=1\nget=1\n\n"]]),
    ("get cut short", [[b"get=1\n"], [b"get=1"]]),
    ("unknown operations", [[b"GET=1\n\n"], [b"get=2\n\n"], [b"\n"], [b"get=1\r\n\r\n"], [b"hello"], [b"set=2\n\n"]]),
    ("unknown operation after a request", [[GET, b"bogus\n", GET]]),
    ("huge operation line", [[b"x" * 200000 + b"\n", GET]]),
    ("empty set", [[b"set=1\n\n", GET]]),
    # device keys
    ("private key, upper case, clamped", [[setreq(b"private_key=" + b"F" * 64), GET]]),
    ("private key cleared", [[setreq(b"private_key=" + PRIVATE_HEX), setreq(b"private_key=" + ZERO_HEX), GET]]),
    (
        "malformed private keys",
        [
            [setreq(b"private_key=" + v) for v in (b"a" * 63, b"a" * 66, b" " + b"a" * 63, b"", b"g" * 64, b"a" * 62)]
            + [GET]
        ],
    ),
    (
        "listen ports",
        [
            [
                setreq(b"listen_port=" + v)
                for v in (b"05", b"+5", b" 5", b"0x10", b"65536", b"-0", b"", b"1_0", b"\xd9\xa1")
            ]
            + [GET]
        ],
    ),
    ("listen port 65535", [[setreq(b"listen_port=65535"), GET]]),
    ("listen port 0 binds a random port", [[setreq(b"listen_port=0"), GET]]),
    (
        "fwmarks",
        [[setreq(b"fwmark=" + v) for v in (b"010", b"+5", b"0x10", b"4294967295", b"4294967296", b"-1")] + [GET]],
    ),
    ("fwmark cleared", [[setreq(b"fwmark=7"), setreq(b"fwmark=0"), GET]]),
    (
        "replace_peers values",
        [[setreq(b"replace_peers=TRUE"), setreq(b"replace_peers=1"), setreq(b"replace_peers=true")]],
    ),
    ("line without '='", [[setreq(b"listen_port"), setreq(b"fwmark=1", b"x"), GET]]),
    ("empty key", [[setreq(b"=5")]]),
    ("value with '='", [[setreq(b"listen_port=7=8"), setreq(b"fwmark=1"), GET]]),
    ("keys are case sensitive", [[setreq(b"Listen_port=7"), setreq(b"FWMARK=7")]]),
    (
        "peer keys before a public key",
        [[setreq(b"allowed_ip=1.2.3.4/32"), setreq(b"protocol_version=1"), setreq(b"remove=true")]],
    ),
    ("not transactional", [[setreq(b"fwmark=5", b"fwmark=bogus", b"fwmark=6"), GET]]),
    ("the request after an error is read afresh", [[setreq(b"bogus=1", b"fwmark=9"), setreq(b"fwmark=10"), GET]]),
    # line ends and odd bytes
    ("CRLF lines", [[b"set=1\nlisten_port=1000\r\nfwmark=7\r\n\r\n", GET]]),
    ("CR in the operation line", [[b"set=1\r\nfwmark=7\r\n\r\n"], [GET]]),
    ("two CRs", [[b"set=1\nfwmark=4\r\r\n\n", GET]]),
    ("CR alone ends nothing", [[b"set=1\nfwmark=4\n\rget=1\n\n", GET]]),
    ("NUL bytes", [[b"set=1\n\x00fwmark=4\n\n", b"set=1\nfwmark=4\x00\n\n", GET]]),
    ("set ended by the end of the stream", [[b"set=1\nfwmark=11"]]),
    ("set ended by the end of the stream after CR", [[b"set=1\nfwmark=12\r"]]),
    ("set without its blank line", [[b"set=1\nfwmark=13\n"]]),
    ("set with only its operation line", [[b"set=1\n"]]),
    # Line length: a line and its "\n" must fit in 64 KiB.  After an error in
    # a request this long, what wireguard-go does with the rest of it depends
    # on how its reads fell, so the next request goes on a new connection.
    ("longest line", [[setreq(b"x=" + b"y" * 65533)], [GET]]),
    ("line one byte too long", [[setreq(b"fwmark=14", b"x=" + b"y" * 65534)], [GET]]),
    ("line too long with CR", [[setreq(b"x=" + b"y" * 65533 + b"\r")], [GET]]),
    ("line too long, then more", [[setreq(b"fwmark=15", b"x=" + b"y" * 200000, b"fwmark=16")], [GET]]),
    ("too long at the end of the stream", [[b"set=1\nx=" + b"y" * 65534]]),
    ("longest at the end of the stream", [[b"set=1\nx=" + b"y" * 65533]]),
    ("the rest of a too long line is an operation", [[b"set=1\nx=" + b"y" * 65534 + b"get=1\n\n"]]),
    # peers
    (
        "peers with every key",
        [
            [
                setreq(
                    *peer(K1, b"endpoint=1.2.3.4:5", b"allowed_ip=10.1.2.3/8", b"allowed_ip=::1.2.3.4/128"),
                    *peer(
                        K2,
                        b"preshared_key=" + PSK.upper(),
                        b"persistent_keepalive_interval=25",
                        b"endpoint=[2001:db8::1]:51820",
                        b"allowed_ip=192.168.1.77/24",
                        b"allowed_ip=FE80::1/64",
                        b"protocol_version=1",
                    ),
                ),
                GET,
            ]
        ],
    ),
    (
        "allowed IP order: re-adding moves to the end",
        [
            [
                setreq(*peer(K1, b"allowed_ip=10.0.0.0/8", b"allowed_ip=::1/128", b"allowed_ip=192.168.0.0/16")),
                setreq(*peer(K1, b"allowed_ip=10.0.0.0/8", b"allowed_ip=0.0.0.0/0", b"allowed_ip=::/0")),
                GET,
            ]
        ],
    ),
    (
        "allowed IPs move between peers",
        [
            [
                setreq(
                    *peer(K1, b"allowed_ip=10.0.0.0/8", b"allowed_ip=10.1.0.0/16"), *peer(K2, b"allowed_ip=10.0.0.0/8")
                ),
                GET,
            ]
        ],
    ),
    (
        "allowed IP syntax",
        [
            [setreq(*peer(K1, b"allowed_ip=" + v))]
            for v in (
                b"1.2.3.4/+8",
                b"1.2.3.4/08",
                b"1.2.3.4/-0",
                b"1.2.3.4/0008",
                b"7.7.7.7/+31",
                b"0::0:0/000",
                b"::ffff:1.2.3.4/128",
                b"::ffff:1.2.3.4/96",
                b"1:2:3:4:5:6:1.2.3.4/128",
                b"a:b:c:d:e:f:1.2.3.4/127",
                b"00000000001::/16",
                b"1.2.3.4/" + b"0" * 60 + b"8",
                b"fe80::1%eth0/64",
                b"01.2.3.4/32",
                b"1.2.3.4",
                b"1.2.3.4/33",
                b"::/129",
                b"1.2.3.4/32 ",
                b" 1.2.3.4/32",
                b"1.2.3.4/",
                b"/8",
                b"1.2.3.4/32/",
                b"-10.0.0.0/8",
                b"1.2.3.4/0x8",
                b"1.2.3.4/1_0",
                b"1.2.3.4/-1",
                b"1.2.3.4/+",
                b"::ffff:01.2.3.4/128",
                b"1::2::3/64",
                b":::/64",
                b"1:/64",
                b":1/64",
                b"::%/64",
                b"1.2.3.4%x/32",
                b"1:2:3:4:5:6:7::8/128",
                b"1:2:3:4:5:6:7:8:9/128",
                b"::1.2.3.4.5/128",
                b"1:2:3:4:5:6:7:1.2.3.4/128",
                b"::12345/128",
                b"1.2.3/32",
                b"256.1.1.1/32",
                b"1..2.3/32",
            )
        ]
        + [[GET]],
    ),
    (
        "endpoint syntax",
        [
            [setreq(*peer(K1, b"endpoint=" + v)), GET]
            for v in (
                b"1.2.3.4:0",
                b"1.2.3.4:05",
                b"[::1]:5",
                b"[fe80::1%lo]:6",
                b"[fe80::1%1]:7",
                b"[::ffff:1.2.3.4]:9",
                b"[FE80::ABCD]:10",
                b"[::1.2.3.4]:11",
                b"[0:0:0:0:0:0:0:0]:12",
                b"[1:0:0:1:0:0:0:1]:13",
                b"[1:0:1:0:1:0:1:0]:14",
                b"[0001:0002::]:15",
                b"[2001:db8::1%4294967295]:16",
                b"0.0.0.0:20",
                b"1.2.3.4:65536",
                b"1.2.3.4:+5",
                b"::1:5",
                b"[1.2.3.4]:5",
                b"[fe80::1%nonexistent]:8",
                b"[fe80::1%99999999999]:8",
                b"[fe80::1%]:5",
                b"host:5",
                b"[::1]:",
                b":5",
                b"1.2.3.4",
                b"[::1]5",
                b"1.2.3.4:5 ",
            )
        ],
    ),
    (
        "update_only",
        [
            [
                setreq(*peer(K1, b"update_only=true", b"allowed_ip=1.0.0.0/8")),
                setreq(*peer(K1, b"allowed_ip=1.0.0.0/8", b"update_only=true")),
                setreq(*peer(K2, b"allowed_ip=2.0.0.0/8")),
                setreq(*peer(K2, b"update_only=true", b"allowed_ip=3.0.0.0/8")),
                setreq(*peer(K2, b"update_only=false")),
                setreq(*peer(K2, b"update_only=TRUE")),
                GET,
            ]
        ],
    ),
    (
        "remove",
        [
            [
                setreq(*peer(K1, b"allowed_ip=1.0.0.0/8"), *peer(K2, b"allowed_ip=2.0.0.0/8")),
                setreq(*peer(K1, b"remove=true", b"allowed_ip=3.0.0.0/8", b"remove=true", b"endpoint=bad")),
                setreq(*peer(K3, b"remove=true", b"allowed_ip=3.0.0.0/8", b"endpoint=1.1.1.1:1", b"preshared_key=zz")),
                setreq(*peer(K2, b"remove=yes")),
                GET,
            ]
        ],
    ),
    (
        "replace_allowed_ips",
        [
            [
                setreq(*peer(K1, b"allowed_ip=1.0.0.0/8", b"allowed_ip=4.0.0.0/8")),
                setreq(*peer(K1, b"replace_allowed_ips=true", b"allowed_ip=2.0.0.0/8", b"replace_allowed_ips=1")),
                GET,
            ]
        ],
    ),
    (
        "peer values",
        [
            [
                setreq(*peer(K1, b"preshared_key=" + PSK, b"persistent_keepalive_interval=25")),
                setreq(*peer(K1, b"preshared_key=" + ZERO_HEX, b"persistent_keepalive_interval=65536")),
                setreq(*peer(K1, b"persistent_keepalive_interval=0", b"protocol_version=2")),
                setreq(*peer(K1, b"protocol_version=01")),
                setreq(*peer(K1, b"protocol_version=1", b"listen_port=5")),
                setreq(*peer(K1, b"persistent_keepalive_interval=+1")),
                setreq(*peer(K1, b"bogus=1")),
                GET,
            ]
        ],
    ),
    (
        "malformed public keys",
        [
            [
                setreq(b"public_key=" + v, b"allowed_ip=9.0.0.0/8")
                for v in (b"a" * 63, b"a" * 62, b"g" * 64, b"", b"a" * 65)
            ]
            + [GET]
        ],
    ),
    (
        "a device key after a public key",
        [[setreq(*peer(K1), b"private_key=" + PRIVATE_HEX), setreq(*peer(K1), b"replace_peers=true"), GET]],
    ),
    (
        "our own public key is a dummy peer",
        [
            [
                setreq(b"private_key=" + PRIVATE_HEX, b"public_key=<own>", b"allowed_ip=4.0.0.0/8"),
                setreq(b"public_key=<own>", b"endpoint=bad"),
                GET,
            ]
        ],
    ),
    (
        "a new private key removes the peer with its public key",
        [
            [
                setreq(*peer(b"<own>", b"allowed_ip=5.0.0.0/8"), *peer(K1)),
                GET,
                setreq(b"private_key=" + PRIVATE_HEX),
                GET,
            ]
        ],
    ),
]


def substitute(connections, own: bytes):
    return [[chunk.replace(b"<own>", own) for chunk in chunks] for chunks in connections]


@pytest.fixture(scope="module")
def daemons(tmp_path_factory):
    """wireguard-go and wgc, each in a namespace of its own."""
    log_dir = str(tmp_path_factory.mktemp("uapi-daemons"))
    started = []
    try:
        started.append(Daemon("wireguard-go", WIREGUARD_GO, log_dir))
        started.append(Daemon("wgc", wgc_command(), log_dir))
        yield started
    finally:
        for daemon in started:
            daemon.close()


def run_on_both(daemons, connections) -> list[tuple[str, str]]:
    transcripts = []
    for daemon in daemons:
        reset = converse(daemon, [RESET])
        assert reset == b"errno=0\n\n<closed>", f"{daemon.label} refused the reset: {reset!r}\n{daemon.log()}"
        stream = b"\n--\n".join(converse(daemon, chunks) for chunks in connections)
        state = daemon.get()
        transcripts.append((normalise(stream, daemon.ephemeral), normalise(state, daemon.ephemeral)))
    return transcripts


@pytest.mark.parametrize("connections", [s[1] for s in SESSIONS], ids=[s[0] for s in SESSIONS])
def test_same_replies_and_state(daemons, connections):
    connections = substitute(connections, own_public_key_hex())
    (reference, reference_state), (ours, our_state) = run_on_both(daemons, connections)
    assert ours == reference, f"replies differ\nwgc log:\n{daemons[1].log()}"
    assert our_state == reference_state


def test_fresh_device_treats_the_zero_key_as_its_own(tmp_path):
    """Until a private key is first set, wireguard-go's own public key is all
    zeros, so a peer with the zero key is a silently ignored dummy."""
    started = []
    try:
        started.append(Daemon("wireguard-go", WIREGUARD_GO, str(tmp_path)))
        started.append(Daemon("wgc", wgc_command(), str(tmp_path)))
        request = [setreq(b"public_key=" + ZERO_HEX, b"allowed_ip=6.0.0.0/8"), GET]
        reference, ours = (normalise(converse(d, request), d.ephemeral) for d in started)
        assert "public_key=" not in reference
        assert ours == reference
    finally:
        for daemon in started:
            daemon.close()


def test_port_in_use(daemons):
    """A port taken by another socket: -98 from both.  wireguard-go closes its
    sockets before it tries the new port and is left listening nowhere; wgc
    keeps the sockets it had, as the kernel does.  Apart from that the state
    afterwards is the same."""
    transcripts = []
    for daemon in daemons:
        converse(daemon, [RESET])
        blocker = daemon.ns.popen(
            "python3",
            "-c",
            "import socket, sys, time\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.bind(('0.0.0.0', 5555))\n"
            "print('bound', flush=True)\n"
            "time.sleep(60)\n",
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert blocker.stdout.readline() == "bound\n"
            stream = converse(daemon, [setreq(b"listen_port=5555"), GET, setreq(b"listen_port=6001"), GET])
        finally:
            blocker.kill()
            blocker.wait()
        transcripts.append(normalise(stream, daemon.ephemeral))
    reference, ours = transcripts
    assert "errno=-98" in reference
    kept = "errno=-98\n\nlisten_port=<ephemeral>\n"
    assert kept in ours and kept not in reference
    assert ours.replace(kept, "errno=-98\n\n") == reference


def test_large_allowed_ip_set(daemons):
    """100,000 allowed IPs in one request: the same state, in the same order."""
    lines = [b"allowed_ip=10.%d.%d.0/24" % (i >> 8, i & 0xFF) for i in range(65536)]
    lines += [b"allowed_ip=fd00::%x:0/112" % i for i in range(100000 - 65536)]
    request = setreq(*peer(K1, *lines))
    states = []
    for daemon in daemons:
        converse(daemon, [RESET])
        started = time.monotonic()
        assert converse(daemon, [request]) == b"errno=0\n\n<closed>", daemon.label
        elapsed = time.monotonic() - started
        states.append((normalise(daemon.get(), daemon.ephemeral), elapsed))
    (reference, _), (ours, elapsed) = states
    assert reference.count("allowed_ip=") == 100000
    assert ours == reference
    assert elapsed < 10, f"wgc took {elapsed:.1f} s"


WG_CONFIG = """\
[Interface]
PrivateKey = AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=
ListenPort = 51821
FwMark = 0x1234

[Peer]
PublicKey = ERERERERERERERERERERERERERERERERERERERERERE=
PresharedKey = ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM=
Endpoint = 192.0.2.1:51820
AllowedIPs = 10.0.0.0/8, fd00::/64
PersistentKeepalive = 25

[Peer]
PublicKey = IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=
Endpoint = [2001:db8::7]:1234
AllowedIPs = 192.168.7.0/24
"""


def _sorted_lines(text: str) -> list[str]:
    return sorted(text.splitlines())


def _sorted_sections(text: str) -> list[str]:
    return sorted(section.strip() for section in text.split("\n\n"))


def test_wg_tool_sees_the_same(daemons, tmp_path):
    """wg(8) configures both, then shows and dumps the same."""
    config = tmp_path / "wg.conf"
    config.write_text(WG_CONFIG)
    views = []
    for daemon in daemons:
        converse(daemon, [RESET])
        daemon.wg("setconf", daemon.iface, str(config))
        k3 = "MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM="
        daemon.wg("set", daemon.iface, "peer", k3, "allowed-ips", "10.1.0.0/16", "endpoint", "[::1]:7")
        daemon.wg("set", daemon.iface, "peer", "IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=", "remove")
        showconf = daemon.wg("showconf", daemon.iface)
        dump = daemon.wg("show", daemon.iface, "dump")
        views.append((_sorted_sections(showconf), _sorted_lines(dump)))
    reference, ours = views
    assert "PresharedKey" in "".join(reference[0])
    assert ours == reference
