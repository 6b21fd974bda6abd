"""Configuration at scale (issue 17): one `set=1` of 1,000 peers x 1,000 IPv4 /32s.

The request is scripts/bench_config.py's (10.0.0.0 counted up to 10.15.66.63,
none of it in a tunnel's 10.77.0.0/24), without its private key so that it
leaves the device's identity alone.  While the daemon applies it, traffic of a
peer it does not touch keeps flowing, and other control clients are answered
in turn, each seeing all of the request or none of it, as one request is
applied whole in wireguard-go; once the big configuration is replaced by a
small one, the memory it took is given back.

The bounds in time are the issue's demands, not speed: no gap over 100 ms in
the ping stream (24 to 69 ms were seen on a shared 2-core machine while the
set still took 5 to 7 s in Python; 28 to 44 ms with the compiled set path, 0.3
to 0.6 s), and a wait that ends.
"""
import fcntl
import itertools
import re
import selectors
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "scripts"))

import bench_config

from netns import socket_path, unique_name, wait_for
from test_uapi_abuse import connect
from wgnet import rss_kib, start_daemon, tunnel

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

PEERS, PER_PEER = 1000, 1000
# The bound on a gap in the ping stream through an untouched peer.
LONGEST_GAP = 0.1
PING_INTERVAL = 0.01
STREAM_BEFORE = 0.3   # s of ping stream before the set begins
STREAM_AFTER = 0.3    # and after its reply has come
PING_DEADLINE = 60    # s: ping -w, should the test never stop it
# A client asking during the set waits at most for the set itself, and then this.
STARVATION_ALLOWANCE = 10.0
REPLY_DEADLINE = 60.0  # s for every reply of the control clients' test


@pytest.fixture(scope="module")
def big_peers() -> bytes:
    """The peer sections of bench_config's request and its closing blank line."""
    request = bench_config.set_request(PEERS, PER_PEER)
    header = f"set=1\nprivate_key={bench_config.PRIVATE_KEY}\n".encode()
    assert request.startswith(header)
    return request[len(header):]


def peer_keys(text: bytes) -> set[bytes]:
    return set(re.findall(rb"^public_key=([0-9a-f]{64})$", text, re.MULTILINE))


def allowed_ips(text: bytes) -> int:
    return text.count(b"\nallowed_ip=")


def listen_port(text: bytes) -> int | None:
    found = re.search(rb"^listen_port=(\d+)$", text, re.MULTILINE)
    return None if found is None else int(found.group(1))


# ---- traffic through a peer the set does not touch ----------------------------------

class PingStream:
    """`ping -D` every PING_INTERVAL from one end: (arrival unix time, icmp_seq) of each reply."""

    _REPLY = re.compile(r"^\[(\d+\.\d+)\] .*icmp_seq=(\d+)")

    def __init__(self, end, address: str):
        self.proc = end.ns.popen("ping", "-n", "-D", "-i", str(PING_INTERVAL), "-W", "1", "-w", str(PING_DEADLINE),
                                 address, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.replies: list[tuple[float, int]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            match = self._REPLY.match(line)
            if match:
                self.replies.append((float(match.group(1)), int(match.group(2))))

    def last(self) -> float:
        return self.replies[-1][0] if self.replies else 0.0

    def stop(self) -> list[tuple[float, int]]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=5)
        self._reader.join(timeout=5)
        return self.replies


def test_a_ping_stream_through_another_peer_has_no_gap_while_a_million_entry_set_is_applied(netns, big_peers):
    """The set goes to the end that answers the pings: its data plane decrypts each
    request, checks its source against the allowed IPs, and routes and encrypts the
    reply through them, while its control thread inserts a million entries."""
    a, b = tunnel(netns, "wgc", "wgc", with_ipv6=False)
    a.ping(b.inner4, count=1)  # the handshake, before the stream is timed
    stream = PingStream(a, b.inner4)
    try:
        wait_for(lambda: stream.replies and stream.last() - stream.replies[0][0] >= STREAM_BEFORE,
                 what="the ping stream to begin")
        began = time.time()
        _, reply = bench_config.converse(socket_path(b.iface), b"set=1\n" + big_peers)
        answered = time.time()
        wait_for(lambda: stream.last() >= answered + STREAM_AFTER, what="the ping stream after the set")
    finally:
        replies = stream.stop()
    assert reply == b"errno=0\n\n"
    times = [t for t, _ in replies]
    sequence = [seq for _, seq in replies]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    longest = max(gaps)
    print(f"\nset of {PEERS * PER_PEER:,} allowed IPs applied in {answered - began:.2f} s; "
          f"{len(replies)} ping replies, the longest gap {longest * 1000:.1f} ms")
    assert times[0] < began and times[-1] > answered, "the stream did not cover the whole set"
    assert sequence == list(range(sequence[0], sequence[-1] + 1)), "a ping was lost or came out of order"
    assert longest <= LONGEST_GAP, f"a gap of {longest * 1000:.0f} ms in the ping stream during the set"


# ---- other control clients --------------------------------------------------------

def unsent(sock: socket.socket) -> int:
    """Bytes written to sock that its peer has not yet read."""
    return int.from_bytes(fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4), sys.byteorder)


def replies_with_times(socks: list[socket.socket]) -> dict[socket.socket, tuple[float, bytes]]:
    """Each socket's one reply, read side by side (a `get` of a million lines
    goes out only as fast as it is read), with the monotonic time it was whole."""
    pending = {sock: bytearray() for sock in socks}
    done: dict[socket.socket, tuple[float, bytes]] = {}
    deadline = time.monotonic() + REPLY_DEADLINE
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        while pending and time.monotonic() < deadline:
            for key, _ in selector.select(deadline - time.monotonic()):
                sock = key.fileobj
                chunk = sock.recv(1 << 20)
                pending[sock] += chunk
                if not chunk or pending[sock].endswith(b"\n\n"):
                    done[sock] = (time.monotonic(), bytes(pending.pop(sock)))
                    selector.unregister(sock)
    assert not pending, f"{len(pending)} of {len(socks)} control clients had no reply in {REPLY_DEADLINE} s"
    return done


def test_other_control_clients_are_served_in_turn_during_a_million_entry_set(netns, big_peers):
    """Client A's big set begins with a listen port; once the daemon has read all of
    it (so it is applying it), B asks `get=1` and D sets another listen port, while
    C connected before them says nothing and C' left a request half sent.  B sees
    A's set whole or not at all, and within the set's time and a margin; D's set
    comes after A's, so its port is the one that stays.  (B's reply may come after D's set.)

    The set takes a few tenths of a second: should A's reply be there before B
    and D have asked (the test was not scheduled in time), the round goes again
    with a fresh daemon, at most ATTEMPTS times."""
    for _ in range(ATTEMPTS):
        if _clients_during_a_big_set(netns, big_peers):
            return
    pytest.fail(f"A's set was answered before B and D asked, {ATTEMPTS} times: they never asked during it")


ATTEMPTS = 3


def _clients_during_a_big_set(netns, big_peers) -> bool:
    ns = netns("scale")
    iface = unique_name("wgs")
    start_daemon(ns, "wgc", iface)
    path = socket_path(iface)
    first_port, second_port = 40001, 40002
    silent = connect(path)
    half_sent = connect(path)
    half_sent.sendall(b"set=1\nlisten_port=")
    client_a = connect(path, timeout=REPLY_DEADLINE)
    began = time.monotonic()
    client_a.sendall(f"set=1\nlisten_port={first_port}\n".encode() + big_peers)
    wait_for(lambda: unsent(client_a) == 0, timeout=30, interval=0.002, what="the daemon to read all of A's set")
    client_b, client_d = connect(path), connect(path)
    client_b.sendall(b"get=1\n\n")
    asked = time.monotonic()
    client_d.sendall(f"set=1\nlisten_port={second_port}\n\n".encode())
    with selectors.DefaultSelector() as selector:
        selector.register(client_a, selectors.EVENT_READ)
        answered_already = bool(selector.select(0))
    replies = replies_with_times([client_a, client_b, client_d])
    for sock in (silent, half_sent, client_a, client_b, client_d):
        sock.close()
    if answered_already:
        print("\nA's set was answered before B and D asked: once more")
        return False
    (a_done, a_reply), (b_done, b_reply), (_, d_reply) = (replies[s] for s in (client_a, client_b, client_d))
    set_seconds, b_wait = a_done - began, b_done - asked
    seen = peer_keys(b_reply) & peer_keys(big_peers)
    print(f"\nA's set took {set_seconds:.2f} s; B asked during it and waited {b_wait:.2f} s "
          f"for a reply showing {len(seen)} of A's {PEERS} peers")
    assert a_reply == b"errno=0\n\n"
    assert d_reply == b"errno=0\n\n"
    assert b_reply.endswith(b"errno=0\n\n")
    if seen:
        # D's set may come between A's and the building of B's reply.
        assert (len(seen), allowed_ips(b_reply)) == (PEERS, PEERS * PER_PEER)
        assert listen_port(b_reply) in (first_port, second_port)
    else:
        assert (allowed_ips(b_reply), listen_port(b_reply)) == (0, None)
    assert b_wait <= set_seconds + STARVATION_ALLOWANCE
    _, final = bench_config.converse(path, b"get=1\n\n")
    assert listen_port(final) == second_port, "D's set was not applied after A's"
    return True


# ---- memory given back -----------------------------------------------------------

# The daemon idles at about 17 MiB and holds some 60 MiB more with the big
# configuration (the trie alone about 32 MiB).  Once it is replaced by one peer,
# what may stay is what the allocators keep of freed memory for reuse (glibc's
# heap, Python's pools): a MiB or two.  8 MiB is a quarter of the trie, so a
# trie, peer table or request left behind fails.
RSS_MARGIN_MIB = 8.0


def test_the_memory_of_a_million_entry_set_is_given_back_when_it_is_replaced(netns, big_peers):
    """The trie's node pools are mmap'd and unmapped as they empty, and the request
    is one buffer, not an object per line: none of it stays in the heap."""
    ns = netns("scale")
    iface = unique_name("wgs")
    start_daemon(ns, "wgc", iface)
    path = socket_path(iface)
    daemons = ns.pids()  # listed before anything else runs in the namespace
    small = b"set=1\nreplace_peers=true\npublic_key=" + min(peer_keys(big_peers)) + b"\nallowed_ip=10.99.0.1/32\n\n"
    assert bench_config.converse(path, small)[1] == b"errno=0\n\n"
    before = rss_kib(daemons) / 1024
    assert bench_config.converse(path, b"set=1\n" + big_peers)[1] == b"errno=0\n\n"
    peak = rss_kib(daemons) / 1024
    assert bench_config.converse(path, small)[1] == b"errno=0\n\n"
    after = rss_kib(daemons) / 1024
    _, shown = bench_config.converse(path, b"get=1\n\n")
    print(f"\nRSS {before:.1f} MiB with one peer, {peak:.1f} MiB with {PEERS * PER_PEER:,} allowed IPs, "
          f"{after:.1f} MiB once replaced by one peer again")
    assert (len(peer_keys(shown)), allowed_ips(shown)) == (1, 1)
    assert after <= before + RSS_MARGIN_MIB, f"{after - before:.1f} MiB kept of the big configuration"
