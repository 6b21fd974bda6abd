"""Two protocol cores talking in memory under a fake clock.

Each test drives the same Device and data-plane code the daemon runs, with
the data plane in sans-I/O mode, and checks one behaviour of the WireGuard
timers and handshake on its exact boundary.
"""
import pytest

from protocol_net import SECOND, Pair, ipv4_packet, ipv6_packet, message_types
from wgc import constants as C
from wgc._crypto import random
from wgc._dataplane import HANDSHAKE_RETRY, DataPlane

INITIATION, RESPONSE, COOKIE, TRANSPORT = 1, 2, 3, 4
KEEPALIVE_SIZE = 32


def handshake(pair: Pair) -> bytes:
    """a sends one packet to b, which starts and completes a handshake."""
    packet = pair.send(pair.a)
    pair.pump()
    return packet


@pytest.mark.parametrize("psk", [None, random(32)], ids=["no-psk", "psk"])
def test_handshake_delivers_the_staged_packet(psk):
    pair = Pair(psk)
    packet = handshake(pair)
    assert message_types(pair.a.sent) == [INITIATION, TRANSPORT]
    assert message_types(pair.b.sent) == [RESPONSE]
    assert pair.b.tun_received == [packet]
    assert pair.peer_of_b.last_handshake[0] == pair.clock.wall // SECOND
    # b's side completes with the confirming data packet.
    assert pair.peer_of_a.last_handshake[0] == pair.clock.wall // SECOND
    reply = pair.send(pair.b)
    pair.pump()
    assert pair.a.tun_received == [reply]


def test_mismatched_psk_never_completes():
    pair = Pair()
    pair.peer_of_a.set_preshared_key(random(32))
    pair.send(pair.a)
    pair.pump()
    # b accepts the initiation (the PSK enters only later) but a cannot open
    # the response, so no session forms on either side.
    assert message_types(pair.b.sent) == [RESPONSE]
    assert message_types(pair.a.sent) == [INITIATION]
    assert pair.b.tun_received == []
    assert pair.peer_of_b.last_handshake == (0, 0)


def test_transfer_counts_match_the_kernel_selftest():
    """10 pings of 84 bytes: the initiator sends 148 + 10 * 128 and receives 92 + 10 * 128."""
    pair = Pair()
    for _ in range(10):
        request = ipv4_packet(pair.a.inner, pair.b.inner, 64)
        pair.a.device.core.inject_tun(request, pair.clock.mono)
        pair.pump()
        reply = ipv4_packet(pair.b.inner, pair.a.inner, 64)
        pair.b.device.core.inject_tun(reply, pair.clock.mono)
        pair.pump()
        pair.advance(SECOND // 100)
    assert len(pair.a.tun_received) == 10 and len(pair.b.tun_received) == 10
    assert (pair.peer_of_b.tx_bytes, pair.peer_of_b.rx_bytes) == (1428, 1372)
    assert (pair.peer_of_a.tx_bytes, pair.peer_of_a.rx_bytes) == (1372, 1428)


def test_packets_sent_before_the_handshake_are_queued_in_order():
    pair = Pair()
    pair.drop_to.add(pair.b)
    packets = [pair.send(pair.a, payload_len=n) for n in (10, 20, 30)]
    pair.pump()
    assert message_types(pair.a.sent) == [INITIATION]
    pair.drop_to.clear()
    pair.advance(C.REKEY_TIMEOUT + C.REKEY_TIMEOUT_JITTER_MAX)
    pair.pump()
    assert pair.b.tun_received == packets



def test_a_full_staging_queue_drops_its_oldest_packets():
    """As the kernel: 128 packets wait per peer; the newest ones are kept."""
    pair = Pair()
    pair.drop_to.add(pair.b)
    packets = [pair.send(pair.a, payload_len=n) for n in range(1, C.MAX_STAGED_PACKETS + 3)]
    pair.pump()
    pair.drop_to.clear()
    pair.advance(C.REKEY_TIMEOUT + C.REKEY_TIMEOUT_JITTER_MAX)
    pair.pump()
    assert pair.b.tun_received == packets[2:]

def test_initiator_rekeys_after_120_seconds_of_sending():
    pair = Pair()
    handshake(pair)
    start = pair.clock.mono
    # Keep both sides talking so no other timer interferes.
    while pair.clock.mono - start < C.REKEY_AFTER_TIME:
        pair.advance(min(5 * SECOND, C.REKEY_AFTER_TIME - (pair.clock.mono - start)))
        pair.send(pair.a)
        pair.send(pair.b)
        pair.pump()
    assert pair.clock.mono - start == C.REKEY_AFTER_TIME
    assert INITIATION not in message_types(pair.a.sent[1:])
    pair.advance(1)
    pair.send(pair.a)
    pair.pump()
    assert message_types(pair.a.sent).count(INITIATION) == 2
    assert pair.peer_of_b.last_handshake[0] == pair.clock.wall // SECOND


def test_retransmits_every_rekey_timeout_then_gives_up():
    pair = Pair()
    pair.drop_to.add(pair.b)
    pair.send(pair.a)
    pair.pump()
    slot = pair.peer_of_b.slot
    core = pair.a.device.core
    sent_at = [pair.clock.mono]
    while True:
        deadline = core.timer_deadlines(slot)["retransmit_handshake"]
        if not deadline:
            break
        delay = deadline - pair.clock.mono
        assert C.REKEY_TIMEOUT <= delay <= C.REKEY_TIMEOUT + C.REKEY_TIMEOUT_JITTER_MAX
        pair.advance(delay - 1)
        pair.pump()
        assert len(pair.a.sent) == len(sent_at)
        pair.advance(1)
        pair.pump()
        if len(pair.a.sent) > len(sent_at):
            sent_at.append(pair.clock.mono)
    # The first initiation and 19 retries (while attempts <= MAX_TIMER_HANDSHAKES).
    assert message_types(pair.a.sent) == [INITIATION] * (C.MAX_TIMER_HANDSHAKES + 2)
    assert sent_at[-1] - sent_at[0] >= C.REKEY_ATTEMPT_TIME
    # Gave up: the staged packet is gone, so a late handshake delivers nothing.
    pair.drop_to.clear()
    pair.advance(60 * SECOND)
    pair.pump()
    assert pair.b.tun_received == []


def test_passive_keepalive_ten_seconds_after_receiving_data():
    pair = Pair()
    handshake(pair)
    pair.advance(C.KEEPALIVE_TIMEOUT - 1)
    pair.pump()
    assert message_types(pair.b.sent) == [RESPONSE]
    pair.advance(1)
    pair.pump()
    assert [len(d) for d in pair.b.sent[1:]] == [KEEPALIVE_SIZE]
    assert message_types(pair.b.sent) == [RESPONSE, TRANSPORT]


def test_new_handshake_fifteen_seconds_after_unanswered_data():
    pair = Pair()
    handshake(pair)
    pair.send(pair.b)  # answers, so b owes no keepalive
    pair.pump()
    pair.drop_to.add(pair.a)  # from now on a hears nothing
    pair.send(pair.a)
    pair.pump()
    deadline = pair.a.device.core.timer_deadlines(pair.peer_of_b.slot)["new_handshake"]
    delay = deadline - pair.clock.mono
    assert delay >= C.KEEPALIVE_TIMEOUT + C.REKEY_TIMEOUT
    assert delay <= C.KEEPALIVE_TIMEOUT + C.REKEY_TIMEOUT + C.REKEY_TIMEOUT_JITTER_MAX
    pair.advance(delay - 1)
    pair.pump()
    assert message_types(pair.a.sent).count(INITIATION) == 1
    pair.advance(1)
    pair.pump()
    assert message_types(pair.a.sent).count(INITIATION) == 2


def test_persistent_keepalive_interval():
    pair = Pair()
    handshake(pair)
    pair.send(pair.b)
    pair.pump()
    pair.peer_of_b.set_persistent_keepalive(25)
    pair.pump()
    sent = len(pair.a.sent)
    assert len(pair.a.sent[-1]) == KEEPALIVE_SIZE  # turning it on sends one at once
    pair.advance(25 * SECOND - 1)
    pair.pump()
    assert len(pair.a.sent) == sent
    pair.advance(1)
    pair.pump()
    assert len(pair.a.sent) == sent + 1 and len(pair.a.sent[-1]) == KEEPALIVE_SIZE


def test_keys_are_zeroed_after_540_seconds_without_a_handshake():
    pair = Pair()
    handshake(pair)
    derived = pair.clock.mono
    pair.drop_to.update({pair.a, pair.b})  # nothing gets through any more
    core = pair.a.device.core
    slot = pair.peer_of_b.slot
    assert core.timer_deadlines(slot)["zero_key_material"] == derived + 3 * C.REJECT_AFTER_TIME
    pair.advance(3 * C.REJECT_AFTER_TIME - 1)
    pair.pump()
    # Still there, though long unusable for sending (reject after 180 s).
    assert core.index_peer(core_local_index(pair)) == slot
    pair.advance(1)
    pair.pump()
    assert core.index_peer(core_local_index(pair)) == -1


def core_local_index(pair: Pair) -> int:
    """a's receiver index of the session: the receiver field of b's response."""
    response = next(d for d in pair.b.sent if d[0] == RESPONSE)
    return int.from_bytes(response[8:12], "little")


def test_cookie_exchange_under_load():
    pair = Pair()
    pair.drop_to.add(pair.b)
    pair.send(pair.a)
    pair.pump()
    initiation = pair.a.sent[0]
    # Queue enough copies of the initiation at b that b is under load.
    mono, wall = pair.clock()
    for _ in range(C.UNDER_LOAD_THRESHOLD):
        pair.b.device.core.inject_udp(initiation, pair.a.address, mono, wall)
    pair.drop_to.clear()
    pair.pump()
    # b answered with cookie replies only (mac2 was empty), and a took the cookie.
    assert set(message_types(pair.b.sent)) == {COOKIE}
    assert pair.b.tun_received == []
    # a's retransmission carries mac2; b, still under load, accepts it.
    pair.b.sent.clear()
    deadline = pair.a.device.core.timer_deadlines(pair.peer_of_b.slot)["retransmit_handshake"]
    for _ in range(C.UNDER_LOAD_THRESHOLD):
        pair.b.device.core.inject_udp(initiation, pair.a.address, pair.clock.mono, pair.clock.wall)
    pair.advance(deadline - pair.clock.mono)
    pair.pump()
    assert RESPONSE in message_types(pair.b.sent)
    assert len(pair.b.tun_received) == 1


def test_roaming_follows_authenticated_packets_only():
    pair = Pair()
    handshake(pair)
    new_address = ("127.0.0.3", 52000)
    data = [d for d in pair.a.sent if d[0] == TRANSPORT][-1]
    core = pair.b.device.core
    mono, wall = pair.clock()
    # A replayed packet authenticates nothing: no roaming.
    core.inject_udp(data, new_address, mono, wall)
    assert pair.peer_of_a.endpoint == pair.a.address
    # A fresh packet from the new address moves the endpoint.
    pair.a.address = new_address
    pair.send(pair.a)
    pair.pump()
    assert pair.peer_of_a.endpoint == new_address
    # Garbage from elsewhere does not.
    core.inject_udp(bytes([4, 0, 0, 0]) + data[4:-1] + b"\x00", ("127.0.0.4", 1), mono, wall)
    assert pair.peer_of_a.endpoint == new_address


def test_inner_source_must_belong_to_the_sending_peer():
    pair = Pair()
    handshake(pair)
    spoofed = ipv4_packet(bytes([10, 9, 9, 9]), pair.b.inner)
    pair.a.device.core.inject_tun(spoofed, pair.clock.mono)
    pair.pump()
    assert spoofed not in pair.b.tun_received


def test_ipv6_packets_go_by_destination_and_come_in_by_source():
    pair = Pair()
    inner6_a, inner6_b, nobody = (bytes.fromhex("fd" + "00" * 14) + bytes([n]) for n in (0xA, 0xB, 0xC))
    pair.peer_of_b.add_allowed_ip(inner6_b, 128)
    pair.peer_of_a.add_allowed_ip(inner6_a, 128)
    handshake(pair)
    before = len(pair.a.sent)
    packet = ipv6_packet(inner6_a, inner6_b)
    pair.a.device.core.inject_tun(packet, pair.clock.mono)
    pair.a.device.core.inject_tun(ipv6_packet(inner6_a, nobody), pair.clock.mono)  # no peer: dropped
    pair.pump()
    assert len(pair.a.sent) == before + 1 and pair.b.tun_received[-1] == packet


def test_private_key_change_rehandshakes_on_next_packet():
    pair = Pair()
    handshake(pair)
    pair.a.device.set_private_key(random(32))
    # b must learn a's new public key, as an operator would configure it.
    pair.b.device.remove_peer(pair.peer_of_a.public_key)
    pair.peer_of_a = pair._connect(pair.b, pair.a, None)
    before = message_types(pair.a.sent).count(INITIATION)
    packet = pair.send(pair.a)
    pair.pump()
    assert message_types(pair.a.sent).count(INITIATION) == before + 1
    assert pair.b.tun_received[-1] == packet


def test_core_owns_handshake_and_session_indices():
    """One table for every receiver index: a handshake's index names its peer
    until the keypair takes it over, a new handshake or the link going down
    frees it."""
    pair = Pair()
    core, slot = pair.a.device.core, pair.peer_of_b.slot
    pair.send(pair.a)
    pair.a.device.process_events()  # a initiates; b has not answered yet
    initiation = core.take_captured()[-1][1]
    index = int.from_bytes(initiation[4:8], "little")
    assert core.handshake_peer(index) == slot and core.index_peer(index) == slot
    again = core.new_handshake_index(slot)
    assert again != index and core.index_peer(index) == -1 and core.handshake_peer(again) == slot
    pair.a.device.down()
    assert core.index_peer(again) == -1
    # A completed handshake: the keypair holds the index, no handshake does.
    pair = Pair()
    handshake(pair)
    core, index = pair.a.device.core, core_local_index(pair)
    assert core.handshake_peer(index) == -1 and core.index_peer(index) == pair.peer_of_b.slot


def colliding_indices(count: int, home: int) -> list[int]:
    """count receiver indices that share one home slot (home, at the table's size of 256
    and, as their low bits agree, at every smaller size) under _session's multiplicative
    hash: the table must probe, grow and shift entries back on removal."""
    low = next(b for b in range(256) if (b * 2654435761) & 255 == home)
    return [k << 8 | low for k in range(1, count + 1)]


def test_colliding_receiver_indices_are_all_found_through_growth_and_removal():
    core = DataPlane(capture=True)
    # Two chains, one wrapping round the end of the table into the other.
    indices = [i for pair in zip(colliding_indices(50, 250), colliding_indices(50, 0), strict=True) for i in pair]
    slots = {}
    for index in indices:
        slots[index] = core.add_peer()
        core.install_keypair(slots[index], random(32), random(32), index, 1, True, SECOND, SECOND)
    assert all(core.index_peer(index) == slot for index, slot in slots.items())
    removed = indices[::3]
    for index in removed:
        core.reset_peer(slots[index])
    assert [core.index_peer(index) for index in removed] == [-1] * len(removed)
    assert all(core.index_peer(index) == slots[index] for index in indices if index not in removed)
    for index in removed:  # the freed indices can be taken again
        core.install_keypair(slots[index], random(32), random(32), index, 1, True, SECOND, SECOND)
    assert all(core.index_peer(index) == slot for index, slot in slots.items())
    for index in indices:
        core.reset_peer(slots[index])
    assert all(core.index_peer(index) == -1 for index in indices)


def test_poll_reports_retries_with_their_count():
    """The retransmit timer's reaction is one event with the retry count."""
    pair = Pair()
    pair.drop_to.add(pair.b)
    pair.send(pair.a)
    pair.pump()
    core = pair.a.device.core
    assert core.poll(pair.clock.mono) == []
    pair.advance(C.REKEY_TIMEOUT + C.REKEY_TIMEOUT_JITTER_MAX)  # the device retries once
    pair.pump()
    assert message_types(pair.a.sent) == [INITIATION] * 2
    pair.clock.advance(C.REKEY_TIMEOUT + C.REKEY_TIMEOUT_JITTER_MAX)
    (event,) = core.poll(pair.clock.mono)
    assert (event.what, event.slot, event.attempts) == (HANDSHAKE_RETRY, pair.peer_of_b.slot, 2)
