"""Every protocol limit driven across its boundary: one step before it, at it, one after.

Two devices in memory on the fake clock (protocol_net.Pair), or one data plane with a
keypair whose keys the test knows, so that it can seal transport messages with any
counter.  The limits are wgc's own constants (wgc/constants.py), never restated here.
"""
import struct

import pytest

from protocol_net import SECOND, Pair, ipv4_packet, ipv6_packet, message_types
from wgc import constants as C
from wgc._crypto import random, seal
from wgc._dataplane import DataPlane
from wgc.noise import hash, mac

TRANSPORT_OVERHEAD = C.TRANSPORT_MIN_SIZE     # header and tag around the padded packet
UDP_MAX_PAYLOAD = 65535 - 8                   # an IPv6 payload of 65535, less the UDP header


def handshake(pair: Pair):
    """a sends one packet to b: a handshake, then the packet confirms b's keypair."""
    pair.send(pair.a)
    pair.pump()
    assert len(pair.b.tun_received) == 1


def transports(datagrams: list[bytes]) -> list[bytes]:
    return [d for d in datagrams if d[0] == C.MESSAGE_TRANSPORT]


def peer_at(pair: Pair, side):
    """The peer entry side holds for the other side."""
    return pair.peer_of_b if side is pair.a else pair.peer_of_a


def sealed_while_unheard(pair: Pair, side, count: int) -> list[bytes]:
    """count transport messages side seals now, which the other side has not yet received."""
    pair.drop_to.add(pair.other(side))
    before = len(side.sent)
    for _ in range(count):
        pair.send(side)
    pair.pump()
    pair.drop_to.clear()
    sent = transports(side.sent[before:])
    assert len(sent) == count
    return sent


def deliver(pair: Pair, side, datagram: bytes) -> bool:
    """Hands datagram to side alone (nothing it answers goes anywhere); True if it reached
    side's TUN."""
    received = len(side.tun_received)
    mono, wall = pair.clock()
    side.device.core.inject_udp(datagram, pair.other(side).address, mono, wall)
    pair.drop_to.update({pair.a, pair.b})
    pair.pump()
    pair.drop_to.clear()
    return len(side.tun_received) > received


# ---- Reject-After-Time ---------------------------------------------------------------

@pytest.mark.parametrize("receiver", ["a", "b"], ids=["initiator-receives", "responder-receives"])
def test_a_receiving_keypair_is_refused_after_reject_after_time(receiver):
    pair = Pair()
    handshake(pair)
    derived = pair.clock.mono          # both keypairs were made at this instant
    side = getattr(pair, receiver)
    early, late = sealed_while_unheard(pair, pair.other(side), 2)
    pair.clock.advance(derived + C.REJECT_AFTER_TIME - 1 - pair.clock.mono)
    assert deliver(pair, side, early)
    pair.clock.advance(1)
    rx = peer_at(pair, side).rx_bytes
    assert not deliver(pair, side, late)
    assert peer_at(pair, side).rx_bytes == rx


@pytest.mark.parametrize("sender", ["a", "b"], ids=["initiator-sends", "responder-sends"])
def test_a_sending_keypair_is_refused_after_reject_after_time(sender):
    pair = Pair()
    handshake(pair)
    derived = pair.clock.mono
    side = getattr(pair, sender)
    pair.drop_to.update({pair.a, pair.b})    # no new session may form meanwhile
    pair.clock.advance(derived + C.REJECT_AFTER_TIME - 1 - pair.clock.mono)
    before = len(side.sent)
    pair.send(side)
    pair.pump()
    assert len(transports(side.sent[before:])) == 1
    pair.clock.advance(1)
    later = len(side.sent)
    packet = pair.send(side)
    pair.pump()
    assert transports(side.sent[later:]) == []
    # The packet waits for the new session it asked for (the initiator asked a moment
    # before, for the keypair's age), and goes out in it.
    initiation = [d for d in side.sent[before:] if d[0] == C.MESSAGE_INITIATION][-1]
    pair.drop_to.clear()
    pair.other(side).device.core.inject_udp(initiation, side.address, *pair.clock())
    pair.pump()
    assert pair.other(side).tun_received[-1] == packet


# ---- Reject-After-Messages (receiving: counters sealed by the test) ------------------------

class KnownKeys:
    """One data plane with one peer whose keypair the test made, so any counter can be sealed."""

    LOCAL_INDEX = 0x01020304
    SOURCE = bytes([10, 0, 0, 2])

    def __init__(self):
        self.core = DataPlane(capture=True)
        self.slot = self.core.add_peer()
        self.core.allowed_ip_insert(self.SOURCE, 32, self.slot)
        self.core.set_endpoint(self.slot, ("127.0.0.2", 51002))
        self.recv_key = random(32)
        self.now = 1_000 * SECOND
        self.core.install_keypair(self.slot, random(32), self.recv_key, self.LOCAL_INDEX, 7, True,
                                  self.now, self.now)

    def transport(self, counter: int, packet: bytes) -> bytes:
        header = struct.pack("<IIQ", C.MESSAGE_TRANSPORT, self.LOCAL_INDEX, counter)
        return header + seal(self.recv_key, counter, packet)

    def receive(self, datagram: bytes) -> list[bytes]:
        """What reached the TUN."""
        self.core.inject_udp(datagram, ("127.0.0.2", 51002), self.now, self.now)
        return [data for kind, data, _ in self.core.take_captured() if kind == "tun"]

    def rx_bytes(self) -> int:
        return self.core.stats(self.slot)[1]


@pytest.mark.parametrize("counter,accepted", [
    (C.REJECT_AFTER_MESSAGES - 2, True),
    (C.REJECT_AFTER_MESSAGES - 1, True),
    (C.REJECT_AFTER_MESSAGES, False),
    (C.REJECT_AFTER_MESSAGES + 1, False),
    (2**64 - 1, False),
])
def test_receiving_refuses_counters_from_reject_after_messages_on(counter, accepted):
    keys = KnownKeys()
    packet = ipv4_packet(KnownKeys.SOURCE, bytes([10, 0, 0, 1]), 44)
    assert keys.receive(keys.transport(counter, packet)) == ([packet] if accepted else [])
    assert keys.rx_bytes() == (len(packet) + TRANSPORT_OVERHEAD if accepted else 0)


# ---- Rekey-After-Messages and Reject-After-Messages (sending: the counter set by the test) ----

def counter(transport: bytes) -> int:
    return struct.unpack_from("<Q", transport, 8)[0]


def sending_from(pair: Pair, sender: str, next_counter: int):
    """After a handshake and REKEY_TIMEOUT (so that a new initiation may go at once), the side
    named sender, whose current keypair seals its next message with next_counter."""
    handshake(pair)
    pair.advance(C.REKEY_TIMEOUT)
    pair.pump()
    side = getattr(pair, sender)
    side.device.core.set_send_counter(peer_at(pair, side).slot, next_counter)
    return side


def sent_by(pair: Pair, side) -> list[bytes]:
    """What side sends for one packet from its TUN, the other side hearing none of it."""
    before = len(side.sent)
    pair.drop_to.add(pair.other(side))
    pair.send(side)
    pair.pump()
    pair.drop_to.clear()
    return side.sent[before:]


@pytest.mark.parametrize("sender", ["a", "b"], ids=["initiator-sends", "responder-sends"])
def test_the_message_with_counter_rekey_after_messages_is_the_first_to_start_a_handshake(sender):
    pair = Pair()
    side = sending_from(pair, sender, C.REKEY_AFTER_MESSAGES - 1)
    below = sent_by(pair, side)
    assert [counter(t) for t in transports(below)] == [C.REKEY_AFTER_MESSAGES - 1]
    assert message_types(below) == [C.MESSAGE_TRANSPORT]
    at = sent_by(pair, side)
    assert [counter(t) for t in transports(at)] == [C.REKEY_AFTER_MESSAGES]
    assert message_types(at) == [C.MESSAGE_TRANSPORT, C.MESSAGE_INITIATION]
    # Both were sealed by a working session: the other side takes them.
    assert deliver(pair, pair.other(side), below[0]) and deliver(pair, pair.other(side), at[0])


@pytest.mark.parametrize("sender", ["a", "b"], ids=["initiator-sends", "responder-sends"])
def test_the_last_counter_below_reject_after_messages_is_sent_and_the_next_message_waits(sender):
    pair = Pair()
    side = sending_from(pair, sender, C.REJECT_AFTER_MESSAGES - 1)
    core, slot = side.device.core, peer_at(pair, side).slot
    last = sent_by(pair, side)
    # Past Rekey-After-Messages too, so the last message also starts a handshake.
    assert message_types(last) == [C.MESSAGE_TRANSPORT, C.MESSAGE_INITIATION]
    assert counter(last[0]) == C.REJECT_AFTER_MESSAGES - 1
    assert deliver(pair, pair.other(side), last[0])
    assert not core.has_current_keypair(slot, pair.clock.mono)
    before = len(side.sent)
    waiting = pair.send(side)
    pair.pump()
    assert side.sent[before:] == []     # nothing sealed, and the handshake already asked for
    # It waits for the handshake, whose retransmission now gets through, and goes out in
    # the new session.
    pair.advance(C.REKEY_TIMEOUT + C.REKEY_TIMEOUT_JITTER_MAX)
    pair.pump()
    assert pair.other(side).tun_received[-1] == waiting
    assert core.has_current_keypair(slot, pair.clock.mono)


# ---- Rekey-After-Time ------------------------------------------------------------------

def test_the_responder_never_rekeys_for_age_when_sending():
    """Only the initiator rekeys after REKEY_AFTER_TIME, so both ends do not start at once."""
    pair = Pair()
    handshake(pair)
    derived = pair.clock.mono
    # b's passive keepalive answers a's packet, as it would on a real link, so
    # that no timer of a's starts a handshake of its own meanwhile.
    pair.advance(C.KEEPALIVE_TIMEOUT + 1)
    pair.pump()
    pair.clock.advance(derived + C.REKEY_AFTER_TIME + 1 - pair.clock.mono)
    pair.send(pair.b)
    pair.pump()
    assert message_types(pair.b.sent) == [C.MESSAGE_RESPONSE, C.MESSAGE_TRANSPORT, C.MESSAGE_TRANSPORT]
    assert message_types(pair.a.sent).count(C.MESSAGE_INITIATION) == 1


def test_the_initiator_rekeys_once_on_receiving_near_reject_after_time():
    """Data received on a keypair older than REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
    makes its initiator start the handshake the rekey timer may not come in time for."""
    pair = Pair()
    handshake(pair)
    derived = pair.clock.mono
    last_minute = C.REJECT_AFTER_TIME - C.KEEPALIVE_TIMEOUT - C.REKEY_TIMEOUT
    on_time, late, later = sealed_while_unheard(pair, pair.b, 3)
    pair.clock.advance(derived + last_minute - pair.clock.mono)
    before = len(pair.a.sent)
    assert deliver(pair, pair.a, on_time)
    assert message_types(pair.a.sent[before:]) == []
    pair.clock.advance(1)
    assert deliver(pair, pair.a, late)
    assert message_types(pair.a.sent[before:]) == [C.MESSAGE_INITIATION]
    pair.clock.advance(C.REKEY_TIMEOUT)      # past the pause between initiations
    assert deliver(pair, pair.a, later)
    assert message_types(pair.a.sent[before:]) == [C.MESSAGE_INITIATION]


# ---- MTU and padding ---------------------------------------------------------------------

def padded(length: int, mtu: int) -> int:
    """The rule of the paper (section 5.4.6): up to a multiple of 16, but not past the MTU,
    and never shorter than the packet."""
    return max(length, min(-(-length // 16) * 16, mtu))


@pytest.mark.parametrize("mtu", [C.DEFAULT_MTU, 1279, 1280, 1281])
def test_padding_is_a_multiple_of_16_up_to_the_mtu(mtu):
    pair = Pair()
    for side in (pair.a, pair.b):
        side.device.set_mtu(mtu)
    handshake(pair)
    lengths = [*range(20, 70), *range(mtu - 33, mtu + 2)]
    before = len(pair.a.sent)
    for length in lengths:
        packet = pair.send(pair.a, payload_len=length - 20)
        pair.pump()
        assert pair.b.tun_received[-1] == packet        # the padding is trimmed again
    sizes = [len(d) - TRANSPORT_OVERHEAD for d in transports(pair.a.sent[before:])]
    assert sizes == [padded(length, mtu) for length in lengths]


# ---- The smallest and largest message of each type ------------------------------------------

def test_the_smallest_transport_message_is_received_and_one_byte_less_is_not():
    keys = KnownKeys()
    keepalive = keys.transport(0, b"")
    assert len(keepalive) == C.TRANSPORT_MIN_SIZE
    assert keys.receive(keepalive[:-1]) == [] and keys.rx_bytes() == 0
    assert keys.receive(keepalive) == [] and keys.rx_bytes() == C.TRANSPORT_MIN_SIZE


def test_the_largest_transport_message_udp_carries():
    pair = Pair()
    handshake(pair)
    packet = pair.send(pair.a, payload_len=UDP_MAX_PAYLOAD - TRANSPORT_OVERHEAD - 20)
    pair.pump()
    assert len(pair.a.sent[-1]) == UDP_MAX_PAYLOAD
    assert pair.b.tun_received[-1] == packet


SOURCE6 = bytes.fromhex("fd" + "00" * 14 + "02")


@pytest.mark.parametrize("family", [4, 6])
def test_an_inner_packet_longer_than_its_ip_header_says_is_trimmed_and_shorter_dropped(family):
    keys = KnownKeys()
    if family == 4:
        packet = ipv4_packet(KnownKeys.SOURCE, bytes([10, 0, 0, 1]), 44)
    else:
        keys.core.allowed_ip_insert(SOURCE6, 128, keys.slot)
        packet = ipv6_packet(SOURCE6, bytes(15) + b"\1", 8)
    assert len(packet) % 16 == 0                    # sent as it is, without padding
    assert keys.receive(keys.transport(0, packet)) == [packet]
    assert keys.receive(keys.transport(1, packet + bytes(16))) == [packet]
    assert keys.receive(keys.transport(2, packet[:-1])) == []


def test_an_inner_packet_that_is_not_ip_is_dropped():
    """Neither version 4 with a whole header nor version 6 with one: no source to check."""
    keys = KnownKeys()
    packet = ipv4_packet(KnownKeys.SOURCE, bytes([10, 0, 0, 1]), 28)
    assert keys.receive(keys.transport(0, packet)) == [packet]
    assert keys.receive(keys.transport(1, bytes([0x55]) + packet[1:])) == []
    assert keys.receive(keys.transport(2, packet[:16])) == []


SIZE_CHANGES = pytest.mark.parametrize("delta", [0, 1, -1], ids=["exact", "one-more", "one-less"])


def resized(message: bytes, delta: int, receiver: bytes | None = None) -> bytes:
    """message made delta bytes longer or shorter; given the receiver's public key, a
    handshake message with a mac1 valid for its new length, as an attacker could make it."""
    if receiver is None:
        return message + bytes(delta) if delta >= 0 else message[:delta]
    body = resized(message[:-2 * C.COOKIE_SIZE], delta)
    return body + mac(hash(C.LABEL_MAC1, receiver), body) + bytes(C.COOKIE_SIZE)


def first_initiation(pair: Pair) -> bytes:
    """a's initiation, which b did not receive."""
    pair.drop_to.add(pair.b)
    pair.send(pair.a)
    pair.pump()
    pair.drop_to.clear()
    assert len(pair.a.sent[0]) == C.INITIATION_SIZE
    return pair.a.sent[0]


def answers(pair: Pair, side, message: bytes, count: int = C.UNDER_LOAD_THRESHOLD) -> list[int]:
    """What side answers when count copies of message arrive at once (by default enough to
    put it under load); the answers go nowhere."""
    before = len(side.sent)
    for _ in range(count):
        side.device.core.inject_udp(message, pair.other(side).address, *pair.clock())
    pair.drop_to.update({pair.a, pair.b})
    pair.pump()
    pair.drop_to.clear()
    return message_types(side.sent[before:])


@SIZE_CHANGES
def test_an_initiation_is_taken_at_its_exact_size_only(delta):
    pair = Pair()
    initiation = resized(first_initiation(pair), delta, pair.b.public_key)
    pair.b.device.core.inject_udp(initiation, pair.a.address, *pair.clock())
    pair.drop_to.add(pair.a)
    pair.pump()
    assert message_types(pair.b.sent) == ([C.MESSAGE_RESPONSE] if delta == 0 else [])
    # Under load, only a message of the right size earns a cookie reply.
    assert set(answers(pair, pair.b, initiation)) == ({C.MESSAGE_COOKIE_REPLY} if delta == 0 else set())


@SIZE_CHANGES
def test_a_response_is_taken_at_its_exact_size_only(delta):
    pair = Pair()
    pair.drop_to.add(pair.a)
    pair.send(pair.a)
    pair.pump()
    assert len(pair.b.sent[0]) == C.RESPONSE_SIZE
    response = resized(pair.b.sent[0], delta, pair.a.public_key)
    pair.a.device.core.inject_udp(response, pair.b.address, *pair.clock())
    pair.drop_to.add(pair.b)
    pair.pump()
    assert pair.a.device.core.has_current_keypair(pair.peer_of_b.slot, pair.clock.mono) == (delta == 0)
    assert set(answers(pair, pair.a, response)) == ({C.MESSAGE_COOKIE_REPLY} if delta == 0 else set())


@SIZE_CHANGES
def test_a_cookie_reply_is_taken_at_its_exact_size_only(delta):
    pair = Pair()
    initiation = first_initiation(pair)
    assert set(answers(pair, pair.b, initiation)) == {C.MESSAGE_COOKIE_REPLY}
    cookie_reply = pair.b.sent[0]
    assert len(cookie_reply) == C.COOKIE_REPLY_SIZE
    pair.a.device.core.inject_udp(resized(cookie_reply, delta), pair.b.address, *pair.clock())
    pair.pump()
    # With a cookie, a's next message carries a mac2.
    message = bytearray(initiation)
    pair.peer_of_b.cookies.add_macs(message, pair.clock.mono)
    assert any(message[-C.COOKIE_SIZE:]) == (delta == 0)


# ---- The handshake queue and being under load ------------------------------------------------

@pytest.mark.parametrize("count,answered", [
    (C.UNDER_LOAD_THRESHOLD - 1, [C.MESSAGE_RESPONSE]),      # the copies after the first are replays
    (C.UNDER_LOAD_THRESHOLD, [C.MESSAGE_COOKIE_REPLY] * C.UNDER_LOAD_THRESHOLD),
])
def test_under_load_from_the_threshold_on(count, answered):
    pair = Pair()
    assert answers(pair, pair.b, first_initiation(pair), count) == answered


def test_under_load_lasts_under_load_after_time():
    pair = Pair()
    initiation = first_initiation(pair)
    answers(pair, pair.b, initiation)
    pair.clock.advance(C.UNDER_LOAD_AFTER_TIME - 1)
    assert answers(pair, pair.b, initiation, 1) == [C.MESSAGE_COOKIE_REPLY]
    pair.clock.advance(1)
    assert answers(pair, pair.b, initiation, 1) == [C.MESSAGE_RESPONSE]


@pytest.mark.parametrize("count", [C.HANDSHAKE_QUEUE_SIZE, C.HANDSHAKE_QUEUE_SIZE + 1, 2 * C.HANDSHAKE_QUEUE_SIZE])
def test_the_handshake_queue_holds_handshake_queue_size_messages(count):
    """What arrives while the queue is full is dropped: at most one answer per queued message."""
    pair = Pair()
    answered = answers(pair, pair.b, first_initiation(pair), count)
    assert answered == [C.MESSAGE_COOKIE_REPLY] * C.HANDSHAKE_QUEUE_SIZE
