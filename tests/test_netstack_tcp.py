"""TCP of the network stack, sans-I/O: two stacks on a simulated link with a fake clock."""
import errno
import hashlib
import itertools
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netstack_link import MS, SECOND, Impairment, Link
from test_offload import reference_sum
from wgc.netstack._stack import Stack

A4, B4 = "10.0.0.1", "10.0.0.2"
A6, B6 = "fd00::1", "fd00::2"
EV_READ, EV_WRITE, EV_CONNECTED, EV_CLOSED, EV_ACCEPT = 1, 2, 4, 8, 16


def pair(buffer=0, **impairment):
    a = Stack([A4, A6], buffer=buffer)
    b = Stack([B4, B6], buffer=buffer)
    return a, b, Link(a, b, Impairment(**impairment) if impairment else None)


def acceptor(stack, listener, accepted):
    """An application step that takes one waiting connection into `accepted`."""
    def accept():
        handle = stack.accept(listener)
        if handle is not None:
            accepted.append(handle)
        return handle is not None
    return accept


def connected(link, v6=False, port=80, backlog=128):
    """A connection from a to b: (client handle, server handle)."""
    a, b = link.stacks
    listener = b.listen("::" if v6 else "0.0.0.0", port, backlog)
    client = a.connect(A6 if v6 else A4, B6 if v6 else B4, port, link.now)
    accepted = []
    assert link.run(lambda: bool(accepted) and a.state(client) == "ESTABLISHED", 300 * SECOND,
                    acceptor(b, listener, accepted))
    return client, accepted[0], listener


class Stream:
    """One direction of a transfer: writes data as the send ring allows, reads
    in chunks of `chunk` (0: the receiver does not read)."""

    def __init__(self, link, src, src_handle, dst, dst_handle, data, chunk=65536, close=True):
        self.link, self.src, self.sh, self.dst, self.dh = link, src, src_handle, dst, dst_handle
        self.data, self.chunk, self.close = data, chunk, close
        self.sent = 0
        self.received = bytearray()
        self.shut = False

    def act(self):
        """Writes and reads what it can now; True if anything moved."""
        now = self.link.now
        moved = 0
        if self.sent < len(self.data):
            n = self.src.send(self.sh, self.data[self.sent:self.sent + 262144], now)
            self.sent += n
            moved += n
        elif self.close and not self.shut:
            self.src.shutdown(self.sh, now)
            self.shut = True
            moved = 1
        if self.chunk:
            got = self.dst.recv(self.dh, self.chunk, now)
            self.received += got
            moved += len(got)
        return moved > 0

    def done(self):
        return len(self.received) == len(self.data) and (not self.close or self.dst.eof(self.dh))


def transfer(link, streams, limit=600 * SECOND):
    def act():
        moved = [s.act() for s in streams]   # every stream acts, whatever the first did
        return any(moved)

    return link.run(lambda: all(s.done() for s in streams), limit, act)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_transfer_and_close(v6):
    a, b, link = pair()
    c, s, _ = connected(link, v6)
    data = hashlib.shake_256(b"x").digest(3_000_000)
    up = Stream(link, a, c, b, s, data)
    assert transfer(link, [up])
    assert bytes(up.received) == data
    b.close(s, link.now)
    assert link.run(lambda: a.state(c) == "TIME_WAIT" and b.state(s) == "CLOSED", 10 * SECOND)
    info = a.info(c)
    assert info["ts"] and info["sack"] and info["snd_wscale"] == info["rcv_wscale"] > 0
    assert info["mss"] == 1420 - (60 if v6 else 40)


def test_time_wait_ends_after_two_msl_and_memory_is_returned():
    a, b, link = pair()
    c, s, _ = connected(link)
    up = Stream(link, a, c, b, s, b"hello" * 1000)
    assert transfer(link, [up])
    b.close(s, link.now)
    assert link.run(lambda: a.state(c) == "TIME_WAIT", 10 * SECOND)
    entered = link.now
    a.release(c)
    b.release(s)
    assert link.run(lambda: a.connections == 0, 120 * SECOND)
    assert 60 * SECOND <= link.now - entered <= 61 * SECOND
    assert a.memory == 0 and b.memory == 0


@given(size_ab=st.integers(0, 200_000), size_ba=st.integers(0, 200_000),
       loss=st.floats(0, 0.25), duplicate=st.floats(0, 0.1), corrupt=st.floats(0, 0.05),
       jitter=st.integers(0, 20), chunk=st.integers(1, 100_000), seed=st.integers(0, 2**32),
       buffer=st.sampled_from([0, 4096, 65536]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_bytes_delivered_equal_bytes_sent(size_ab, size_ba, loss, duplicate, corrupt, jitter, chunk, seed, buffer):
    a = Stack([A4], buffer=buffer)
    b = Stack([B4], buffer=buffer)
    link = Link(a, b, Impairment(loss=loss, duplicate=duplicate, corrupt=corrupt, delay=5 * MS,
                                 jitter=jitter * MS), seed=seed)
    c, s, _ = connected(link)
    ab = hashlib.shake_256(b"ab%d" % seed).digest(size_ab)
    ba = hashlib.shake_256(b"ba%d" % seed).digest(size_ba)
    up = Stream(link, a, c, b, s, ab, chunk)
    down = Stream(link, b, s, a, c, ba, chunk)
    assert transfer(link, [up, down], 3600 * SECOND)
    assert bytes(up.received) == ab and bytes(down.received) == ba


def test_connection_refused():
    a, _, link = pair()
    c = a.connect(A4, B4, 81, link.now)
    assert link.run(lambda: a.state(c) == "CLOSED", SECOND)
    assert a.error(c) == errno.ECONNREFUSED
    assert a.events() == [(c, EV_READ | EV_WRITE | EV_CLOSED)]


def test_syn_retries_back_off_then_time_out():
    a, _, link = pair()
    link.taps.append(lambda side, packet: None)     # a black hole
    link.capture = True
    c = a.connect(A4, B4, 80, link.now)
    start = link.now
    assert link.run(lambda: a.state(c) == "CLOSED", 300 * SECOND)
    assert a.error(c) == errno.ETIMEDOUT
    times = [(t - start) / SECOND for side, t, p in link.captured]
    assert times == [0, 1, 3, 7, 15, 31, 63]        # 1 s doubling, six retries (Linux's tcp_syn_retries)
    assert link.now - start == 127 * SECOND


def test_data_retransmissions_back_off_then_time_out():
    a, _, link = pair()
    c, _, _ = connected(link)
    link.taps.append(lambda side, packet: None)
    link.capture = True
    assert a.send(c, b"x" * 100, link.now) == 100
    start = link.now
    assert link.run(lambda: a.state(c) == "CLOSED", 3600 * SECOND)
    assert a.error(c) == errno.ETIMEDOUT
    # The segment and 15 retransmissions (a lone segment waits for the RTO:
    # a tail loss probe would come only after the worst delayed ACK, 200 ms).
    assert len(link.captured) == 16
    gaps = [t2 - t1 for (_, t1, _), (_, t2, _) in itertools.pairwise(link.captured)]
    assert all(later >= 2 * earlier or later == 120 * SECOND for earlier, later in itertools.pairwise(gaps))
    assert max(gaps) == 120 * SECOND                 # capped at RTO_MAX
    assert link.now - start < 1000 * SECOND


def test_half_close_lets_the_other_side_go_on():
    a, b, link = pair()
    c, s, _ = connected(link)
    a.shutdown(c, link.now)
    assert link.run(lambda: b.eof(s) and a.state(c) == "FIN_WAIT_2", SECOND)
    assert b.state(s) == "CLOSE_WAIT"
    data = b"after the FIN" * 10000
    down = Stream(link, b, s, a, c, data)
    assert transfer(link, [down])
    assert bytes(down.received) == data
    assert link.run(lambda: a.state(c) == "TIME_WAIT" and b.state(s) == "CLOSED", 10 * SECOND)


def test_simultaneous_open():
    a, b, link = pair()
    ca = a.connect(A4, B4, 5000, link.now, lport=6000)
    cb = b.connect(B4, A4, 6000, link.now, lport=5000)
    assert link.run(lambda: a.state(ca) == b.state(cb) == "ESTABLISHED", 10 * SECOND)
    up = Stream(link, a, ca, b, cb, b"simultaneous" * 100)
    assert transfer(link, [up])


def test_simultaneous_close():
    a, b, link = pair()
    c, s, _ = connected(link)
    a.shutdown(c, link.now)
    b.shutdown(s, link.now)
    assert link.run(lambda: a.state(c) == b.state(s) == "TIME_WAIT", 10 * SECOND)


def test_close_with_unread_data_resets():
    a, b, link = pair()
    c, s, _ = connected(link)
    a.send(c, b"unread", link.now)
    assert link.run(lambda: b.info(s)["readable"] == 6, SECOND)
    b.close(s, link.now)
    assert link.run(lambda: a.state(c) == "CLOSED", SECOND)
    assert a.error(c) == errno.ECONNRESET
    assert b.error(s) == errno.ECONNABORTED


def test_abort_resets_the_peer():
    a, b, link = pair()
    c, s, _ = connected(link)
    a.abort(c, link.now)
    assert link.run(lambda: b.state(s) == "CLOSED", SECOND)
    assert b.error(s) == errno.ECONNRESET


def test_zero_window_probes_keep_a_connection_to_a_reader_that_waits():
    a, b, link = pair(buffer=4096)
    c, s, _ = connected(link)
    link.capture = True
    data = bytes(range(256)) * 64                    # 16 KiB: four rings' worth
    up = Stream(link, a, c, b, s, data, chunk=0, close=False)
    link.run(lambda: False, 600 * SECOND, up.act)    # ten minutes of a peer that never reads
    assert a.state(c) == b.state(s) == "ESTABLISHED"
    assert b.info(s)["readable"] == 4096 and a.info(c)["snd_wnd"] == 0
    probes = [t for side, t, p in link.captured if side == 0 and len(p) == 52]   # no payload
    assert len(probes) > 5
    assert b.memory <= 2 * 4096 and a.memory <= 2 * 4096
    up.chunk = 1000
    assert transfer(link, [up], 60 * SECOND)
    assert bytes(up.received) == data


def test_idle_rings_are_freed():
    a, b, link = pair()
    c, s, _ = connected(link)
    up = Stream(link, a, c, b, s, b"y" * 100_000, close=False)
    assert transfer(link, [up])
    assert a.memory > 0 and b.memory > 0
    link.run(lambda: False, 2 * SECOND)
    assert a.memory == 0 and b.memory == 0
    assert a.state(c) == "ESTABLISHED"


@pytest.mark.parametrize(("nodelay", "at_once", "in_all"), [(False, 1, 2), (True, 5, 5)])
def test_nagle_holds_small_writes_until_the_ack_and_nodelay_does_not(nodelay, at_once, in_all):
    a, b, link = pair(delay=50 * MS)
    c, s, _ = connected(link)
    a.set_nodelay(c, nodelay)
    link.capture = True
    for _ in range(5):
        a.send(c, b"k", link.now)
    link.collect()
    assert len([p for side, t, p in link.captured if side == 0]) == at_once
    assert link.run(lambda: b.info(s)["readable"] == 5, SECOND)
    assert len([p for side, t, p in link.captured if side == 0 and len(p) > 52]) == in_all


def test_delayed_ack_timing():
    a, _, link = pair(delay=1 * MS)
    c, _, _ = connected(link)
    link.capture = True
    a.send(c, b"one small segment", link.now)
    sent_at = link.now
    assert link.run(lambda: any(side == 1 for side, t, p in link.captured), SECOND)
    ack_time = next(t for side, t, p in link.captured if side == 1)
    assert ack_time - sent_at == 1 * MS + 40 * MS    # the delayed-ACK timer
    link.captured.clear()
    a.set_nodelay(c, True)
    a.send(c, b"z" * 2 * 1368, link.now)             # two full segments: ACKed at once
    start = link.now
    assert link.run(lambda: any(side == 1 for side, t, p in link.captured), SECOND)
    assert next(t for side, t, p in link.captured if side == 1) - start == 1 * MS


@pytest.mark.parametrize("after", ["idle", "duplicate"])
def test_after_an_idle_spell_or_a_duplicate_each_segment_is_acked_at_once(after):
    """Quick-ACK mode, as Linux's receiver: past an RTO of silence, or after
    a segment it had already, the receiver ACKs the next in-order segments
    one by one (16 at most), not every second one, so that a sender with a
    window of a segment or two does not wait for the 40 ms timer each round."""
    a, b, link = pair(delay=1 * MS)
    c, s, _ = connected(link)
    a.set_nodelay(c, True)
    link.capture = True
    warm = Stream(link, a, c, b, s, bytes(40 * 1368), close=False)
    assert transfer(link, [warm])
    link.run(lambda: False, (2 * SECOND if after == "idle" else 0) + 100 * MS)
    if after == "duplicate":
        last = [p for side, _, p in link.captured if side == 0 and tcp_fields(p)[3]][-1]
        b.receive(last, link.now)
        assert len(b.take_output(link.now)) == 1    # the duplicate's own ACK
    counts = []                                     # ACKs for each data segment delivered
    while len(counts) < 24:
        a.send(c, bytes(1368), link.now)
        for segment in a.take_output(link.now):
            b.receive(segment, link.now)
            acks = b.take_output(link.now)
            counts.append(len(acks))
            for ack in acks:
                a.receive(ack, link.now)
        a.take_output(link.now)
    assert counts[:16] == [1] * 16
    assert 0 in counts[16:]                         # then back to every second full segment


def test_keepalive_ends_a_connection_whose_peer_vanished():
    a, b, link = pair()
    c, s, _ = connected(link)
    a.set_keepalive(c, True, link.now, idle=10, interval=2, count=3)
    up = Stream(link, a, c, b, s, b"k", close=False)
    assert transfer(link, [up])
    link.run(lambda: False, 30 * SECOND)             # the peer answers: it stays
    assert a.state(c) == "ESTABLISHED"
    link.taps.append(lambda side, packet: None)
    start = link.now
    assert link.run(lambda: a.state(c) == "CLOSED", 60 * SECOND)
    assert a.error(c) == errno.ETIMEDOUT
    assert link.now - start <= 10 * SECOND + 4 * 2 * SECOND


def rewrite_tcp(packet: bytes, *, seq=None, ack=None, flags=None, payload=None) -> bytes:
    """An IPv4 TCP packet with fields replaced and checksums redone (for crafted segments)."""
    ihl = (packet[0] & 15) * 4
    tcp = bytearray(packet[ihl:])
    offset = (tcp[12] >> 4) * 4
    if seq is not None:
        struct.pack_into("!I", tcp, 4, seq & 0xFFFFFFFF)
    if ack is not None:
        struct.pack_into("!I", tcp, 8, ack & 0xFFFFFFFF)
    if flags is not None:
        tcp[13] = flags
    if payload is not None:
        tcp = tcp[:offset] + payload
    ip = bytearray(packet[:ihl])
    struct.pack_into("!H", ip, 2, ihl + len(tcp))
    ip[10:12] = b"\0\0"
    struct.pack_into("!H", ip, 10, ~reference_sum(ip) & 0xFFFF)
    tcp[16:18] = b"\0\0"
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
    struct.pack_into("!H", tcp, 16, ~reference_sum(pseudo + tcp) & 0xFFFF)
    return bytes(ip + tcp)


def tcp_fields(packet: bytes):
    ihl = (packet[0] & 15) * 4
    seq, ack = struct.unpack_from("!II", packet, ihl + 4)
    return seq, ack, packet[ihl + 13], len(packet) - ihl - (packet[ihl + 12] >> 4) * 4


def last_from(link, side):
    return [p for s, t, p in link.captured if s == side][-1]


def with_a_template():
    """A connection that carried b"hi" from a to b, and that segment (a
    template for crafted ones); the capture is emptied."""
    a, b, link = pair()
    c, s, _ = connected(link)
    link.capture = True
    a.send(c, b"hi", link.now)
    link.run(lambda: b.info(s)["readable"] == 2, SECOND)
    template = last_from(link, 0)
    link.captured.clear()
    return a, b, link, c, s, template


def test_rst_in_window_but_not_exact_gets_a_challenge_ack():
    _, b, link, _, s, template = with_a_template()
    seq, _, _, _ = tcp_fields(template)
    rcv_nxt = seq + 2
    link.inject(1, rewrite_tcp(template, seq=rcv_nxt + 1000, flags=0x04, payload=b""))   # blind RST
    assert b.state(s) == "ESTABLISHED"
    challenge = [p for side, t, p in link.captured if side == 1]
    assert len(challenge) == 1 and tcp_fields(challenge[0])[1] == rcv_nxt
    link.inject(1, rewrite_tcp(template, seq=rcv_nxt + 10_000_000, flags=0x04, payload=b""))  # out of window
    assert b.state(s) == "ESTABLISHED"
    link.inject(1, rewrite_tcp(template, seq=rcv_nxt, flags=0x04, payload=b""))           # exact
    assert b.state(s) == "CLOSED" and b.error(s) == errno.ECONNRESET


def test_syn_on_an_established_connection_gets_a_challenge_ack():
    _, b, link, _, s, template = with_a_template()
    link.inject(1, rewrite_tcp(template, seq=12345, flags=0x02, payload=b""))
    assert b.state(s) == "ESTABLISHED"
    replies = [p for side, t, p in link.captured if side == 1]
    assert len(replies) == 1 and tcp_fields(replies[0])[2] == 0x10


def test_out_of_window_data_is_not_taken():
    _, b, link, _, s, template = with_a_template()
    seq, _, _, _ = tcp_fields(template)
    for offset in (-100_000, 5_000_000, 2**31):
        link.inject(1, rewrite_tcp(template, seq=seq + offset, payload=b"evil" * 10))
    assert b.recv(s, 100, link.now) == b"hi"
    assert b.state(s) == "ESTABLISHED" and b.info(s)["ooo"] == 0


def test_challenge_acks_are_rate_limited():
    _, b, link, _, _, template = with_a_template()
    syn = rewrite_tcp(template, seq=1, flags=0x02, payload=b"")
    for _ in range(1500):
        b.receive(syn, link.now)
        link.collect()
    assert len([p for side, t, p in link.captured if side == 1]) == 1000


def test_syn_flood_on_a_listener_is_capped_and_spares_established_connections():
    a, b, link = pair()
    c, s, listener = connected(link, backlog=16)
    link.capture = True
    a.send(c, b"hi", link.now)
    link.run(lambda: b.info(s)["readable"] == 2, SECOND)
    template = [p for side, t, p in link.captured if side == 0][-1]
    link.captured.clear()
    for port in range(1, 3001):      # 3,000 SYNs from distinct ports, never completed
        syn = bytearray(rewrite_tcp(template, seq=port * 7, flags=0x02, payload=b""))
        struct.pack_into("!H", syn, 20, port)
        b.receive(rewrite_tcp(bytes(syn)), link.now)
        b.take_output(link.now)
    assert b.info(listener)["half_open"] == 1024
    assert b.connections == 1024 + 1
    assert b.recv(s, 10, link.now) == b"hi"
    up = Stream(link, a, c, b, s, b"still here" * 1000, close=False)
    assert transfer(link, [up])
    link.run(lambda: b.connections == 1, 200 * SECOND)   # the half-open ones give up
    assert b.connections == 1 and b.info(listener)["half_open"] == 0


def test_backlog_bounds_the_accept_queue():
    a, b, link = pair()
    listener = b.listen("0.0.0.0", 80, 2)
    clients = [a.connect(A4, B4, 80, link.now) for _ in range(4)]
    link.run(lambda: False, 500 * MS)
    assert b.info(listener)["accept_queue"] == 2
    assert sum(a.state(c) == "ESTABLISHED" for c in clients) >= 2
    accepted = []
    assert link.run(lambda: len(accepted) == 4, 30 * SECOND, acceptor(b, listener, accepted))
    assert all(a.state(c) == "ESTABLISHED" for c in clients)


def test_ephemeral_ports_are_distinct_in_range_and_keyed_per_stack():
    a, b, link = pair()
    b.listen("0.0.0.0", 80)
    ports = [a.info(a.connect(A4, B4, 80, link.now))["lport"] for _ in range(200)]
    assert len(set(ports)) == 200
    assert all(32768 <= p < 61000 for p in ports)
    others = []
    for _ in range(5):             # another stack (another secret) starts elsewhere
        fresh = Stack([A4])
        others.append(fresh.info(fresh.connect(A4, B4, 80, link.now))["lport"])
    assert len(set(others + ports[:1])) > 1


def test_isns_differ_per_connection_and_advance_with_time():
    a = Stack([A4])
    x = a.info(a.connect(A4, B4, 80, SECOND, lport=1000))["iss"]
    y = a.info(a.connect(A4, B4, 80, SECOND, lport=1001))["iss"]
    assert x != y
    b = Stack([A4])
    assert b.info(b.connect(A4, B4, 80, SECOND, lport=1000))["iss"] != x   # a secret per stack


def test_senders_that_meet_the_memory_cap_go_on_when_memory_frees():
    """Eight connections each wanting a 64 KiB send ring, a cap of two rings'
    worth in all.  A sender refused for memory writes again only when told
    (TCP_EV_WRITE), as the engine's bridges do: each gets its turn."""
    a = Stack([A4], buffer=65536, memory_max=2 * 65536)
    b = Stack([B4])
    link = Link(a, b)
    listener = b.listen("0.0.0.0", 80)
    clients = [a.connect(A4, B4, 80, link.now) for _ in range(8)]
    accepted = []
    assert link.run(lambda: len(accepted) == 8, 10 * SECOND, acceptor(b, listener, accepted))
    data = bytes(range(256)) * 1024
    sent = dict.fromkeys(clients, 0)
    received = {s: bytearray() for s in accepted}
    waiting = set()

    def act():
        moved = False
        told = {handle for handle, events in a.events() if events & EV_WRITE}
        waiting.difference_update(told)
        for c in clients:
            if c in waiting or sent[c] == len(data):
                continue
            n = a.send(c, data[sent[c]:], link.now)
            sent[c] += n
            moved |= n > 0
            if sent[c] < len(data) and n == 0:
                waiting.add(c)
        for s in accepted:
            got = b.recv(s, 1 << 20, link.now)
            received[s] += got
            moved |= bool(got)
        return moved

    assert link.run(lambda: all(len(r) == len(data) for r in received.values()), 600 * SECOND, act)
    # Handshakes complete in order: client i's bytes arrive on accepted[i].
    assert all(bytes(r) == data for r in received.values())
    assert a.memory <= 2 * 65536


@pytest.mark.parametrize("ranges", [64, 65])
def test_sixty_four_out_of_order_ranges_are_kept_and_a_sixty_fifth_forgets_the_oldest(ranges):
    """At heavy loss a wide window leaves many holes.  Up to 64 out-of-order
    ranges are kept, so nothing the receiver SACKed is forgotten (reneging
    would leave the sender to find it by a timeout): the holes filled, the
    stream runs on to the end of the last range.  A 65th range makes the
    least recently touched one go, and the stream stops at its start."""
    a, b, link = pair()
    c, s, _ = connected(link)
    warm = Stream(link, a, c, b, s, bytes(300 * 1368), close=False)
    assert transfer(link, [warm])                   # a window of hundreds of segments
    assert link.run(lambda: a.info(c)["send_queued"] == 0, SECOND)
    a.set_nodelay(c, True)
    a.send(c, bytes(140 * 1368), link.now)
    segments = []
    while batch := a.take_output(link.now):
        segments += batch
    assert len(segments) > 2 * ranges
    for segment in segments[1:2 * ranges:2]:        # a hole before each
        b.receive(segment, link.now)
    assert b.info(s)["ooo"] == 64
    for segment in segments[0:2 * ranges:2]:        # the holes filled
        b.receive(segment, link.now)
    if ranges == 64:
        assert b.info(s)["ooo"] == 0
        assert b.info(s)["rcv_nxt"] == tcp_fields(segments[2 * ranges])[0]
    else:
        assert b.info(s)["rcv_nxt"] == tcp_fields(segments[1])[0]


def test_rings_grow_as_data_needs_them_and_an_idle_connection_holds_none():
    a, b, link = pair()
    c, s, _ = connected(link)
    assert a.memory == b.memory == 0          # nothing allocated before data
    a.send(c, b"x" * 100, link.now)
    assert a.memory == 16384                  # the first allocation, not the 1 MiB capacity
    assert link.run(lambda: b.recv(s, 100, link.now) == b"x" * 100, SECOND)
    up = Stream(link, a, c, b, s, b"y" * 500_000, close=False)
    assert transfer(link, [up])
    assert 16384 < a.memory <= 2 * (1 << 20)
    link.run(lambda: False, 2 * SECOND)
    assert a.memory == b.memory == 0


def test_a_batch_of_in_order_segments_gets_one_ack_and_a_gap_an_immediate_one():
    a, b, link = pair()
    c, _, _ = connected(link)
    a.set_nodelay(c, True)
    a.send(c, bytes(20 * 1368), link.now)
    segments = a.take_output(link.now)
    assert len(segments) == 10                      # the initial window: ten full segments
    b.receive_batch(segments, link.now)
    acks = b.take_output(link.now)
    assert len(acks) == 1 and tcp_fields(acks[0])[1] == tcp_fields(segments[-1])[0] + 1368
    # Another ten, with a hole: the segments past it are answered at once
    # inside the batch (duplicate ACKs for fast retransmit are never held).
    a.receive(acks[0], link.now)
    more = a.take_output(link.now)
    assert len(more) == 10
    b.receive_batch([more[0], *more[2:5]], link.now)
    dupacks = b.take_output(link.now)
    assert [tcp_fields(p)[1] for p in dupacks] == [tcp_fields(more[1])[0]] * 3
    b.receive_batch([more[1]], link.now)            # the hole filled: at once
    assert [tcp_fields(p)[1] for p in b.take_output(link.now)] == [tcp_fields(more[4])[0] + 1368]


def test_a_long_batch_still_acks_every_32_segments():
    a, b, link = pair(buffer=1 << 20)
    c, s, _ = connected(link)
    data = bytes(200 * 1368)
    up = Stream(link, a, c, b, s, data, close=False)
    assert transfer(link, [up])     # opens the window wide
    assert link.run(lambda: a.info(c)["send_queued"] == 0, SECOND)
    a.set_nodelay(c, True)
    a.send(c, bytes(96 * 1368), link.now)
    segments = a.take_output(link.now)
    assert len(segments) >= 64
    b.receive_batch(segments, link.now)
    assert len(b.take_output(link.now)) == len(segments) // 32 + (1 if len(segments) % 32 else 0)


def test_a_sack_past_a_lost_first_segment_sends_it_again_after_a_reordering_window():
    """At heavy loss most duplicate ACKs are lost too: one that SACKs data
    sent after the first segment shows that segment lost once a reordering
    window (RACK, RFC 8985 6.2: a quarter of the round trip) has passed, with
    no wait for two more, for a tail loss probe or for the timeout."""
    a, b, link = pair(delay=10 * MS)
    c, _, _ = connected(link)
    a.set_nodelay(c, True)
    a.send(c, bytes(20 * 1368), link.now)           # ten go, ten wait (no Early Retransmit)
    segments = a.take_output(link.now)
    assert len(segments) == 10
    first = tcp_fields(segments[0])[0]
    b.receive(segments[1], link.now)                # the first was lost, the second arrives
    (dupack,) = b.take_output(link.now)
    assert tcp_fields(dupack)[1] == first
    a.receive(dupack, link.now)
    limited = a.take_output(link.now)               # Limited Transmit: new data, not the first again
    assert [tcp_fields(p)[0] for p in limited] == [first + 10 * 1368]
    srtt = a.info(c)["srtt_ns"]
    due = a.next_deadline
    assert link.now < due <= link.now + srtt // 4 + 1
    a.advance(due)
    again = a.take_output(due)
    assert [tcp_fields(p)[0] for p in again] == [first] and a.info(c)["backoff"] == 0




def test_a_retransmission_lost_in_recovery_goes_again_by_the_timer_when_the_acks_stop():
    """In a recovery the first segment went again and was lost again, and of
    the ACKs that would show it (SACKing data sent after it) none comes
    back: the duplicate ACKs that arrived in the retransmission's own round
    trip arm a timer, and a round trip and a reordering window after the
    retransmission the hole goes once more (RACK, RFC 8985 6.2), not after
    the timeout of at least 200 ms."""
    a, b, link = pair(delay=10 * MS)
    c, _, _ = connected(link)
    a.set_nodelay(c, True)
    a.send(c, bytes(20 * 1368), link.now)
    segments = a.take_output(link.now)
    first = tcp_fields(segments[0])[0]
    for segment in segments[1:]:                    # the first is lost
        b.receive(segment, link.now)
    dupacks = b.take_output(link.now)
    assert len(dupacks) >= 4
    for dupack in dupacks:                          # the recovery starts and goes on at once
        a.receive(dupack, link.now)
    sent = a.take_output(link.now)                  # all of it lost
    assert first in [tcp_fields(p)[0] for p in sent]
    srtt = a.info(c)["srtt_ns"]
    retransmitted = link.now
    due = a.next_deadline
    assert due == retransmitted + srtt + srtt // 4 + 1
    a.advance(due)
    assert [tcp_fields(p)[0] for p in a.take_output(due)] == [first]
    assert a.info(c)["backoff"] == 0


def test_once_the_path_reorders_only_a_round_trip_without_the_segment_makes_it_lost():
    """A hole below SACKed data filled by its first transmission was
    reordering, not loss: from then on neither duplicate ACKs (four, SACKing
    four segments) nor a quarter of the round trip make the first segment
    lost, only a whole round trip (RACK's window, RFC 8985 6.2: on such a
    path counts mean little)."""
    a, b, link = pair(delay=10 * MS)
    c, _, _ = connected(link)
    a.set_nodelay(c, True)
    a.send(c, bytes(60 * 1368), link.now)
    for overtaking in (1, 4):
        segments = a.take_output(link.now)
        first = tcp_fields(segments[0])[0]
        limited = []
        for segment in segments[1:1 + overtaking]:
            b.receive(segment, link.now)
            for dupack in b.take_output(link.now):
                a.receive(dupack, link.now)
                limited += a.take_output(link.now)
        assert first not in [tcp_fields(p)[0] for p in limited]
        srtt = a.info(c)["srtt_ns"]
        assert a.next_deadline == link.now + (srtt // 4 if overtaking == 1 else srtt) + 1
        for segment in [segments[0], *segments[1 + overtaking:], *limited]:   # the first, late, then the rest
            b.receive(segment, link.now)
        for ack in b.take_output(link.now):
            a.receive(ack, link.now)


def test_a_retransmission_lost_after_a_timeout_is_found_without_another():
    """The first flight and its tail loss probe are lost: a timeout.  Slow
    start sends the rest again, and the second segment is lost once more;
    the third's SACK shows it (RACK finds lost retransmissions, RFC 8985
    2.2), so it goes again a reordering window later, not after a second
    timeout."""
    a, b, link = pair(delay=10 * MS)
    c, s, _ = connected(link)
    a.set_nodelay(c, True)
    second = a.info(c)["snd_nxt"] + 1368
    seen = {"timeout": False, "second lost again": False}
    timeouts = []

    def tap(side, packet):
        if side == 0 and tcp_fields(packet)[3]:
            seen["timeout"] = seen["timeout"] or a.info(c)["backoff"] > 0
            if not seen["timeout"]:
                return None                         # the first flight and the probe
            if tcp_fields(packet)[0] == second and not seen["second lost again"]:
                seen["second lost again"] = True
                return None
        return packet

    link.taps.append(tap)
    up = Stream(link, a, c, b, s, bytes(4 * 1368), close=False)

    def act():
        backoff = a.info(c)["backoff"]
        if backoff and (not timeouts or backoff > timeouts[-1]):
            timeouts.append(backoff)
        elif not backoff and timeouts and timeouts[-1]:
            timeouts.append(0)
        return up.act()

    assert link.run(up.done, 60 * SECOND, act)
    assert seen["second lost again"] and bytes(up.received) == up.data
    assert timeouts.count(1) == 1, timeouts
