"""Why traffic does not flow: each figure of wgc/counters.py made to move.

Every test makes one event happen between two sans-I/O devices on a fake
clock (tests/protocol_net.py) and reads the figure through Device.snapshot()
(the data plane's also through DataPlane.counters), checked to be the same
in a scrape (wgc.metrics' exposition, read by prometheus_client's parser) and
in what wgc.control reads (the wgc_get_counters reply, through its parser).
"""
import base64
import os
import struct
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from protocol_net import SECOND, Pair, ipv4_packet
from test_offload import tcp_packet
from wgc import constants as C
from wgc import counters, metrics, uapi
from wgc._dataplane import DEVICE_COUNTER_NAMES, PEER_COUNTER_NAMES
from wgc._port import MemoryPort, TunPort
from wgc.control import userspace

INITIATION, RESPONSE, COOKIE, TRANSPORT = 1, 2, 3, 4
MAC1_OFFSET = 116          # an initiation's mac1: bytes 116..131 of 148


def scraped(device) -> dict:
    """{(sample name, labels): value} of a scrape of device."""
    text = metrics.render(device.snapshot(), time.time()).decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def through_api(device):
    """What wgc.control's counters() reads of device."""
    answer = bytes(uapi.handle_counters(device)) + b"errno=0\n\n"
    return userspace.parse_counters(device.name, answer)


def device_figure(side, name):
    """The device's figure, the same in a snapshot, a scrape and the API."""
    value = side.device.snapshot().values[name]
    labels = frozenset({"interface": side.device.name}.items())
    assert scraped(side.device)[("wgc_" + name, labels)] == value
    assert through_api(side.device).values[name] == value
    return value


def peer_figure(side, name):
    """The figure of side's one peer, the same in a snapshot, a scrape and the API."""
    (peer,) = side.device.snapshot().peers
    value = peer.values[name]
    key = base64.b64encode(peer.public_key).decode()
    labels = frozenset({"interface": side.device.name, "public_key": key}.items())
    assert scraped(side.device)[("wgc_" + name, labels)] == value
    assert through_api(side.device).peers[peer.public_key][name] == value
    return value


def handshake(pair: Pair) -> None:
    pair.send(pair.a)
    pair.pump()


def last_transport(side) -> bytes:
    return [d for d in side.sent if d[0] == TRANSPORT][-1]


def inject(pair: Pair, side, datagram: bytes) -> None:
    """datagram arrives at side from the other side, now."""
    mono, wall = pair.clock()
    side.device.core.inject_udp(datagram, pair.other(side).address, mono, wall)


def queue_initiations_at_b(pair: Pair, count: int) -> bytes:
    """count copies of a's initiation wait in b's handshake queue; returns it."""
    pair.drop_to.add(pair.b)
    pair.send(pair.a)
    pair.pump()
    pair.drop_to.clear()
    initiation = pair.a.sent[0]
    for _ in range(count):
        inject(pair, pair.b, initiation)
    return initiation


# -- the names ---------------------------------------------------------------------


def test_every_data_plane_name_is_in_the_catalogue():
    assert set(DEVICE_COUNTER_NAMES) <= {f.name for f in counters.DEVICE}
    assert set(PEER_COUNTER_NAMES) <= {f.name for f in counters.PEER}
    assert len(set(DEVICE_COUNTER_NAMES + PEER_COUNTER_NAMES)) == len(DEVICE_COUNTER_NAMES + PEER_COUNTER_NAMES)


def test_a_snapshot_holds_every_figure_and_the_peers_as_get_lists_them():
    pair = Pair()
    third = pair.a.device.add_peer(os.urandom(32))
    third.add_allowed_ip(bytes([10, 7, 0, 0]), 16)
    third.add_allowed_ip(bytes.fromhex("fd000000000000000000000000000001"), 128)
    handshake(pair)
    snapshot = pair.a.device.snapshot()
    assert snapshot.interface == "a"
    assert set(snapshot.values) == {f.name for f in counters.DEVICE}
    assert [p.public_key for p in snapshot.peers] == [p.public_key for p in pair.a.device.peers()]
    of_b, of_third = snapshot.peers
    for peer in snapshot.peers:
        assert set(peer.values) == {f.name for f in counters.PEER}
    tx_bytes, rx_bytes, seconds, _ = pair.a.device.core.stats(pair.peer_of_b.slot)
    assert (of_b.tx_bytes, of_b.rx_bytes, of_b.latest_handshake) == (tx_bytes, rx_bytes, seconds)
    assert of_b.latest_handshake == pair.clock.wall // SECOND
    assert of_b.endpoint == pair.b.address and of_b.allowed_ips == ["10.0.0.2/32"]
    assert of_third.endpoint is None and of_third.latest_handshake == 0
    assert sorted(of_third.allowed_ips) == ["10.7.0.0/16", "fd00::1/128"]


# -- the device's figures --------------------------------------------------------------


def test_invalid_mac1():
    pair = Pair()
    pair.drop_to.add(pair.b)
    pair.send(pair.a)
    pair.pump()
    forged = bytearray(pair.a.sent[0])
    forged[MAC1_OFFSET] ^= 1
    inject(pair, pair.b, bytes(forged))
    pair.pump()
    assert device_figure(pair.b, "invalid_mac1_total") == 1
    assert pair.b.sent == []


def test_cookie_replies_sent():
    pair = Pair()
    queue_initiations_at_b(pair, C.UNDER_LOAD_THRESHOLD)
    pair.drop_to.add(pair.a)
    pair.pump()
    replies = [d for d in pair.b.sent if d[0] == COOKIE]
    assert len(replies) == C.UNDER_LOAD_THRESHOLD
    assert device_figure(pair.b, "cookie_replies_sent_total") == len(replies)


def test_handshakes_rate_limited():
    pair = Pair()
    queue_initiations_at_b(pair, C.UNDER_LOAD_THRESHOLD)
    pair.pump()  # b answers with cookie replies; a takes the cookie
    # a's next initiation carries mac2: under load, b lets a burst of them
    # through its rate limiter and drops the rest.
    pair.drop_to.add(pair.b)
    pair.advance(C.REKEY_TIMEOUT + C.REKEY_TIMEOUT_JITTER_MAX)
    pair.pump()
    pair.drop_to.clear()
    with_mac2 = pair.a.sent[-1]
    assert with_mac2[0] == INITIATION and any(with_mac2[-16:])
    for _ in range(C.UNDER_LOAD_THRESHOLD):
        inject(pair, pair.b, with_mac2)
    pair.b.device.process_events()
    assert device_figure(pair.b, "handshakes_rate_limited_total") == C.UNDER_LOAD_THRESHOLD - C.RATELIMIT_BURST


def test_handshake_queue_overflow():
    pair = Pair()
    queue_initiations_at_b(pair, C.HANDSHAKE_QUEUE_SIZE + 3)
    assert pair.b.device.core.counters()["handshake_queue_overflow_total"] == 3
    assert device_figure(pair.b, "handshake_queue_overflow_total") == 3


def test_unknown_receiver_index():
    pair = Pair()
    handshake(pair)
    data = bytearray(last_transport(pair.a))
    data[4:8] = struct.pack("<I", struct.unpack("<I", data[4:8])[0] ^ 0xFFFFFFFF)
    inject(pair, pair.b, bytes(data))
    assert device_figure(pair.b, "unknown_receiver_index_total") == 1
    assert peer_figure(pair.b, "authentication_failures_total") == 0


def test_malformed_packets():
    pair = Pair()
    handshake(pair)
    for datagram in (b"\x01\x00\x00", bytes([INITIATION]) + bytes(99), bytes([TRANSPORT]) + bytes(30),
                     bytes([9]) + bytes(63)):
        inject(pair, pair.b, datagram)
    assert device_figure(pair.b, "malformed_packets_total") == 4
    assert device_figure(pair.b, "unknown_receiver_index_total") == 0


def test_no_route():
    pair = Pair()
    core = pair.a.device.core
    core.inject_tun(ipv4_packet(pair.a.inner, bytes([10, 9, 9, 9])), pair.clock.mono)  # no peer
    core.set_endpoint(pair.peer_of_b.slot, None)
    pair.send(pair.a)  # a peer without an endpoint
    assert device_figure(pair.a, "no_route_total") == 2
    assert peer_figure(pair.a, "staged_overflow_total") == 0


def test_tun_write_failures_of_a_full_memory_port():
    """b's port keeps what it is given until taken, up to a limit: past it,
    each packet refused is counted, and nothing else is."""
    pair = Pair()
    handshake(pair)
    b_core = pair.b.device.core
    b_core.take_captured()
    delivered = 0
    while b_core.counters()["tun_write_failures_total"] == 0 and delivered < 3 * 4096:
        for _ in range(64):
            pair.send(pair.a)
        mono, wall = pair.clock()
        batch = [d for kind, d, _ in pair.a.device.core.take_captured() if kind == "udp"]
        b_core.inject_udp_batch(batch, pair.a.address, mono, wall)
        delivered += len(batch)
    written = [d for kind, d, _ in b_core.take_captured() if kind == "tun"]
    assert 0 < device_figure(pair.b, "tun_write_failures_total") == delivered - len(written)


@pytest.mark.parametrize("vnet_hdr", [False, True], ids=["plain", "vnet_hdr"])
def test_tun_write_failures_of_a_tun_that_refuses(vnet_hdr):
    """A TUN whose writes fail (here a pipe's read end): every packet counts,
    those of a flow coalesced into one write (vnet_hdr) as well."""
    pair = Pair()
    handshake(pair)
    a_core = pair.a.device.core
    for seq in range(0, 3000, 1000):
        a_core.inject_tun(tcp_packet(False, seq, bytes(1000)), pair.clock.mono)
    segments = [d for kind, d, _ in a_core.take_captured() if kind == "udp"]
    read_end, write_end = os.pipe()
    try:
        pair.b.device.core.set_port(TunPort(read_end, vnet_hdr=vnet_hdr))
        mono, wall = pair.clock()
        pair.b.device.core.inject_udp_batch(segments, pair.a.address, mono, wall)
        assert device_figure(pair.b, "tun_write_failures_total") == 3
        pair.b.device.core.set_port(MemoryPort())
    finally:
        os.close(read_end)
        os.close(write_end)


# -- a peer's figures -------------------------------------------------------------------


def test_authentication_failures():
    pair = Pair()
    handshake(pair)
    data = bytearray(last_transport(pair.a))
    data[-1] ^= 1
    inject(pair, pair.b, bytes(data))
    assert peer_figure(pair.b, "authentication_failures_total") == 1
    assert pair.b.device.core.counters(pair.peer_of_a.slot)["authentication_failures_total"] == 1


def test_replayed_packets():
    pair = Pair()
    handshake(pair)
    inject(pair, pair.b, last_transport(pair.a))
    assert peer_figure(pair.b, "replayed_packets_total") == 1
    assert peer_figure(pair.b, "authentication_failures_total") == 0


def test_expired_session_packets():
    """Past Reject-After-Time, or with a counter at Reject-After-Messages (the
    counter is checked before authentication, so a forged one is enough)."""
    pair = Pair()
    handshake(pair)
    pair.send(pair.a)
    (late,) = [d for kind, d, _ in pair.a.device.core.take_captured() if kind == "udp"]
    data = bytearray(last_transport(pair.a))
    data[8:16] = struct.pack("<Q", C.REJECT_AFTER_MESSAGES)
    inject(pair, pair.b, bytes(data))
    assert peer_figure(pair.b, "expired_session_packets_total") == 1
    pair.clock.advance(C.REJECT_AFTER_TIME)
    inject(pair, pair.b, late)
    assert peer_figure(pair.b, "expired_session_packets_total") == 2
    assert peer_figure(pair.b, "authentication_failures_total") == 0


def test_source_not_allowed():
    pair = Pair()
    handshake(pair)
    pair.a.device.core.inject_tun(ipv4_packet(bytes([10, 9, 9, 9]), pair.b.inner), pair.clock.mono)
    pair.pump()
    assert peer_figure(pair.b, "source_not_allowed_total") == 1


def test_staged_overflow():
    pair = Pair()
    pair.drop_to.add(pair.b)
    for _ in range(C.MAX_STAGED_PACKETS + 2):
        pair.send(pair.a)
    assert peer_figure(pair.a, "staged_overflow_total") == 2


def test_handshake_messages_sent_and_completed():
    pair = Pair()
    handshake(pair)
    pair.advance(C.REKEY_AFTER_TIME)
    pair.send(pair.a)  # the initiator renews its session
    pair.pump()
    assert peer_figure(pair.a, "handshake_initiations_sent_total") == 2
    assert peer_figure(pair.a, "handshake_responses_sent_total") == 0
    assert peer_figure(pair.b, "handshake_responses_sent_total") == 2
    assert peer_figure(pair.b, "handshake_initiations_sent_total") == 0
    assert peer_figure(pair.a, "handshakes_completed_total") == 2
    assert peer_figure(pair.b, "handshakes_completed_total") == 2


def test_a_retransmitted_initiation_counts_once_more():
    pair = Pair()
    pair.drop_to.add(pair.b)
    pair.send(pair.a)
    pair.pump()
    pair.advance(C.REKEY_TIMEOUT + C.REKEY_TIMEOUT_JITTER_MAX)
    pair.pump()
    assert peer_figure(pair.a, "handshake_initiations_sent_total") == 2
    assert peer_figure(pair.a, "handshakes_completed_total") == 0


def test_handshake_rtt():
    pair = Pair()
    assert peer_figure(pair.a, "handshake_rtt_seconds") == 0
    pair.drop_to.add(pair.b)
    pair.send(pair.a)
    pair.pump()
    pair.drop_to.clear()
    pair.clock.advance(SECOND // 4)
    inject(pair, pair.b, pair.a.sent[0])
    pair.pump()
    assert peer_figure(pair.a, "handshake_rtt_seconds") == 0.25
    assert peer_figure(pair.b, "handshake_rtt_seconds") == 0
