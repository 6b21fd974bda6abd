"""Packets from the TUN into the device, and out of the peer's TUN.

What local programs write to the interface is outside input too: it is
routed by its destination, sealed, sent, and opened by the peer, which hands
it to its TUN only when its source is one the sender may use.  On two
sans-I/O devices with a session (tests/protocol_net.py), each input is one
packet that a writes to its TUN.  Invariants: a sends a transport message
(type 4, a's index at b, padded to 16 bytes) exactly when the destination is
b's allowed IP; b, given that message, emits on its TUN exactly the packet
(with its zero padding) trimmed to its IP length when it is IPv4 or IPv6 from
a's allowed IP with a length that fits, and nothing otherwise; nothing else goes out, and the
session survives.
"""
import ipaddress
import struct

import common

with common.instrumented():
    from protocol_net import Pair

A_V6 = ipaddress.ip_address("fd00::1").packed
B_V6 = ipaddress.ip_address("fd00::2").packed


def _setup() -> Pair:
    pair = Pair()
    pair.peer_of_b.add_allowed_ip(B_V6, 128)  # a routes fd00::2 to b
    pair.peer_of_a.add_allowed_ip(A_V6, 128)  # b takes fd00::1 from a
    pair.send(pair.a)
    pair.pump()
    return pair


PAIR = _setup()


def routed_to_b(packet: bytes) -> bool:
    if packet[0] >> 4 == 4 and len(packet) >= 20:
        return packet[16:20] == PAIR.b.inner
    if packet[0] >> 4 == 6 and len(packet) >= 40:
        return packet[24:40] == B_V6
    return False


def delivered(packet: bytes) -> bytes | None:
    """What b's TUN should get: the packet trimmed to its IP length, if a may send it."""
    if packet[0] >> 4 == 4 and len(packet) >= 20 and packet[12:16] == PAIR.a.inner:
        length = struct.unpack_from("!H", packet, 2)[0]
        return packet[:length] if 20 <= length <= len(packet) else None
    if packet[0] >> 4 == 6 and len(packet) >= 40 and packet[8:24] == A_V6:
        length = 40 + struct.unpack_from("!H", packet, 4)[0]
        return packet[:length] if length <= len(packet) else None
    return None


def one_input(data: bytes) -> None:
    if not data or len(data) > 65535:  # no IP packet is longer
        return
    a, b = PAIR.a.device, PAIR.b.device
    a.core.inject_tun(data, PAIR.clock.mono)
    a.process_events()
    sent = a.core.take_captured()
    if not routed_to_b(data):
        assert sent == [], sent
        return
    assert len(sent) == 1, sent
    kind, message, destination = sent[0]
    assert kind == "udp" and destination[:2] == PAIR.b.address
    assert message[:4] == struct.pack("<I", 4) and (len(message) - 32) % 16 in (0, len(data) % 16)
    assert 0 <= len(message) - 32 - len(data) < 16
    mono, wall = PAIR.clock()
    b.core.inject_udp(message, PAIR.a.address, mono, wall)
    b.process_events()
    received = b.core.take_captured()
    # The padding is zeros (the paper, 5.4.6); b cannot tell it from the packet.
    expected = delivered(data.ljust(len(message) - 32, b"\0"))
    assert received == ([] if expected is None else [("tun", expected, None)]), (received, expected)


def seeds() -> list[bytes]:
    """Pings both ways of addressing, a TCP segment, and packets b must refuse."""
    from protocol_net import ipv4_packet

    v6 = struct.pack("!IHBB", 6 << 28, 8, 58, 64) + A_V6 + B_V6 + bytes([128, 0, 0, 0, 0, 1, 0, 1])
    return [ipv4_packet(PAIR.a.inner, PAIR.b.inner), ipv4_packet(PAIR.a.inner, PAIR.b.inner, 1400, proto=6), v6,
            ipv4_packet(bytes([10, 0, 0, 9]), PAIR.b.inner), ipv4_packet(PAIR.a.inner, bytes([10, 0, 0, 9]))]


if __name__ == "__main__":
    common.main(one_input)
