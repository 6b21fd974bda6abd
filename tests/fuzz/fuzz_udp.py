"""UDP datagrams into the device: the four message types and the transport path.

Two sans-I/O devices (tests/protocol_net.py) complete a handshake and
exchange data; a has also sent an initiation to a third peer that never
answers, so a response or cookie reply to that pending index reaches the
decryption steps.  Every real message of that exchange has already been
consumed, so every input (a replay, a mutation of one, or any bytes) is
something the receiver must drop in silence: nothing of either device may
change and nothing may go out, except a cookie reply from a device under
load, which must be well-formed and answer the message's sender.

Input: one control byte, then either the datagram itself or an XOR mask over
the chosen real message (so that the seeds keep their meaning across runs,
whose keys and indices are random).  Control bits: 0-2 which message, 3 which
device receives it, 4 recompute mac1 (anyone who knows the receiver's public
key can), 5 the receiver is under load.
"""
import struct

import common

with common.instrumented():
    from protocol_net import INNER_A, Pair, ipv4_packet
    from wgc import _crypto
    from wgc import constants as C
    from wgc.noise import hash, mac

RAW, INITIATION, RESPONSE, RESPONSE_PENDING, COOKIE, COOKIE_PENDING, TRANSPORT, KEEPALIVE = range(8)
INNER_C = bytes([10, 0, 0, 3])


def _capture(side):
    return [data for kind, data, _ in side.device.core.take_captured() if kind == "udp"]


def _setup():
    pair = Pair()
    pair.send(pair.a)
    pair.pump()
    initiation, transport = pair.a.sent[0], pair.a.sent[1]
    response = pair.b.sent[0]
    pair.advance(C.KEEPALIVE_TIMEOUT)  # b has had nothing to say since a's packet
    pair.pump()
    keepalive = next(d for d in pair.b.sent if len(d) == C.TRANSPORT_MIN_SIZE)
    # b under load answers a's initiation with a cookie reply; a takes it once.
    b = pair.b.device
    b._under_load_until = pair.clock.mono + 3600 * C.SECOND
    mono, wall = pair.clock()
    b.core.inject_udp(bytes(initiation), pair.a.address, mono, wall)
    b.process_events()
    cookie = _capture(pair.b)[0]
    b._under_load_until = 0
    pair.a.device.core.inject_udp(cookie, pair.b.address, mono, wall)
    pair.a.device.process_events()
    # a's pending initiation to c, a peer that never answers.
    c_key = _crypto.public_key(_crypto.clamp(_crypto.random(32)))
    peer_c = pair.a.device.add_peer(c_key)
    peer_c.set_endpoint("127.0.0.3", 51003)
    peer_c.add_allowed_ip(INNER_C, 32)
    pair.a.device.core.inject_tun(ipv4_packet(INNER_A, INNER_C), pair.clock.mono)
    pair.a.device.process_events()
    [initiation_to_c] = _capture(pair.a)
    assert initiation_to_c[0] == 1
    pending = struct.unpack_from("<I", initiation_to_c, 4)[0]  # the sender index it announced
    bases = {
        INITIATION: (pair.b, bytes(initiation)),
        RESPONSE: (pair.a, bytes(response)),
        RESPONSE_PENDING: (pair.a, bytes(response[:8]) + struct.pack("<I", pending) + bytes(response[12:])),
        COOKIE: (pair.a, cookie),
        COOKIE_PENDING: (pair.a, cookie[:4] + struct.pack("<I", pending) + cookie[8:]),
        TRANSPORT: (pair.b, bytes(transport)),
        KEEPALIVE: (pair.a, bytes(keepalive)),
    }
    return pair, bases


PAIR, BASES = _setup()
SIDES = (PAIR.a, PAIR.b)


def snapshot(side):
    """Everything a dropped datagram must leave as it was."""
    device = side.device
    peers = []
    for peer in device.peers():
        hs = peer.handshake
        peers.append((
            peer.public_key, device.core.stats(peer.slot), peer.endpoint,
            hs.state, hs.hash, hs.chaining_key, hs.remote_ephemeral, hs.local_index, hs.remote_index,
            hs.latest_timestamp, hs.last_initiation_consumed,
            peer.cookies._cookie, peer.cookies._last_mac1,
            None if hs.local_index is None else device.core.handshake_peer(hs.local_index),  # Core owns the index table
        ))
    return peers


BEFORE = [snapshot(side) for side in SIDES]


def datagram_of(control: int, rest: bytes) -> tuple[bytes, object]:
    choice = control & 7
    side = SIDES[(control >> 3) & 1]
    if choice == RAW:
        message = bytearray(rest)
    else:
        side, base = BASES[choice]
        message = bytearray(base) + bytearray(max(0, len(rest) - len(base)))
        for i, byte in enumerate(rest):
            message[i] ^= byte
    if control & 16 and len(message) in (C.INITIATION_SIZE, C.RESPONSE_SIZE):
        key = hash(C.LABEL_MAC1, side.public_key)
        message[-32:-16] = mac(key, bytes(message[:-32]))
    return bytes(message), side


def check_cookie_reply(reply: bytes, message: bytes, receiver) -> None:
    assert len(reply) == C.COOKIE_REPLY_SIZE and reply[:4] == struct.pack("<I", C.MESSAGE_COOKIE_REPLY), reply
    assert reply[4:8] == message[4:8], "a cookie reply goes to the message's sender index"
    cookie = _crypto.xopen(hash(C.LABEL_COOKIE, receiver.public_key), reply[8:32], reply[32:],
                           message[-32:-16])
    assert len(cookie) == C.COOKIE_SIZE


def one_input(data: bytes) -> None:
    if not data:
        return
    message, side = datagram_of(data[0], data[1:])
    if not message or len(message) > 65535:  # no UDP payload is longer
        return
    under_load = bool(data[0] & 32)
    device = side.device
    mono, wall = PAIR.clock()
    device._under_load_until = mono + C.SECOND if under_load else 0
    try:
        device.core.inject_udp(message, ("127.0.0.9", 9), mono, wall)
        device.process_events()
    finally:
        device._under_load_until = 0
    for other in SIDES:
        sent = _capture(other)
        if other is side and under_load and sent:
            assert len(sent) == 1 and len(message) in (C.INITIATION_SIZE, C.RESPONSE_SIZE)
            check_cookie_reply(sent[0], message, other)
        else:
            assert not sent, (other.name, sent)
        assert not other.device.core.poll(mono, 0)  # nothing left for the control plane
    assert [snapshot(s) for s in SIDES] == BEFORE


def seeds() -> list[bytes]:
    """Each real message as it is (control: mac1 kept, fixed, and under load) and raw."""
    found = []
    for choice, (side, base) in BASES.items():
        found += [bytes([choice | flags]) for flags in (0, 16, 16 | 32)]
        found.append(bytes([RAW | (SIDES.index(side) << 3)]) + base)
    return found


if __name__ == "__main__":
    common.main(one_input)
