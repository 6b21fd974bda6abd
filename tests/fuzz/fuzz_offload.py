"""The vnet-header TUN's packets (wgc/_offload.pyx): cutting TSO/USO
super-packets read from the TUN, and coalescing decrypted packets for it.

Control byte even: the next 10 bytes are a virtio_net_hdr and the rest the
packet read with it (split).  Every segment is then a whole IP packet with
correct checksums and lengths, no more than the header's gso_size of
payload, and the segments' payloads put together are the super-packet's; a
packet without GSO comes back unchanged but for the checksum it was asked to
complete.  Control byte odd: the rest is decrypted packets separated by
SEPARATOR, trimmed by their IP length as the data plane trims them (coalesce).
Cutting what coalescing wrote gives back every packet, in each flow's order,
up to the fields a super-packet cannot keep per segment (checksums, the TCP
window, which takes the newest, the IPv4 ID when DF is set, and the urgent
pointer of a segment without URG).

The compiled module is invisible to atheris unless built with
tests/fuzz/run.py --native; its out-of-bounds accesses show only with --asan.
"""
import struct

import common

with common.instrumented():
    from test_offload import checksums_valid, reference_sum
    from wgc._offload import coalesce, split

SEPARATOR = b"\xffPK\xff"
NEEDS_CSUM = 1
GSO_ECN = 0x80
GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4 = 1, 4, 5
TCP, UDP = 6, 17
URG = 0x20


def check_split(header: bytes, packet: bytes) -> None:
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = struct.unpack("=BBHHHH", header)
    segments = split(header, packet)
    if not segments:
        return
    if gso_type & ~GSO_ECN == 0:
        assert len(segments) == 1 and len(segments[0]) == len(packet)
        out = segments[0]
        if flags & NEEDS_CSUM:
            field = csum_start + csum_offset
            assert out[:field] == packet[:field] and out[field + 2:] == packet[field + 2:]
            # The stack left the pseudo-header sum in the field: the sum from csum_start on, completed.
            expected = ~reference_sum(packet[csum_start:]) & 0xFFFF
            if expected == 0 and csum_offset == 6:
                expected = 0xFFFF  # UDP sends a zero sum as all ones
            assert struct.unpack_from("!H", out, field)[0] == expected
        else:
            assert out == packet
        return
    ipv6 = packet[0] >> 4 == 6
    ip_len = 40 if ipv6 else 20
    proto = packet[6] if ipv6 else packet[9]
    assert proto == (UDP if gso_type & ~GSO_ECN == GSO_UDP_L4 else TCP)
    l4_len = 8 if proto == UDP else (packet[ip_len + 12] >> 4) * 4
    headers = ip_len + l4_len
    body = packet[headers:]
    assert len(segments) == max(1, -(-len(body) // gso_size))
    pieces = []
    for segment in segments:
        assert checksums_valid(segment), segment.hex()
        assert len(segment) - headers <= gso_size
        length = struct.unpack_from("!H", segment, 4 if ipv6 else 2)[0]
        assert length == len(segment) - (40 if ipv6 else 0)
        if proto == UDP:
            assert struct.unpack_from("!H", segment, ip_len + 4)[0] == len(segment) - ip_len
        pieces.append(segment[headers:])
    assert b"".join(pieces) == body


def trimmed(packet: bytes) -> bytes | None:
    """What the data plane hands on after decryption: trimmed to the IP length, or dropped."""
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        length = struct.unpack_from("!H", packet, 2)[0]
        return packet[:length] if 20 <= length <= len(packet) else None
    if len(packet) >= 40 and packet[0] >> 4 == 6:
        length = 40 + struct.unpack_from("!H", packet, 4)[0]
        return packet[:length] if length <= len(packet) else None
    return None


def comparable(packet: bytes) -> bytes:
    """packet without the fields a super-packet does not keep per segment."""
    out = bytearray(packet)
    if len(out) >= 20 and out[0] == 0x45 and not struct.unpack_from("!H", out, 6)[0] & 0x3FFF:
        out[10:12] = b"\0\0"
        if out[6] & 0x40:
            out[4:6] = b"\0\0"
        ip_len, proto = 20, out[9]
    elif len(out) >= 40 and out[0] >> 4 == 6:
        ip_len, proto = 40, out[6]
    else:
        return bytes(out)
    if proto == TCP and len(out) >= ip_len + 20:
        out[ip_len + 14:ip_len + 18] = bytes(4)
        if not out[ip_len + 13] & URG:
            out[ip_len + 18:ip_len + 20] = bytes(2)  # meaningless without URG (RFC 9293 3.1)
    elif proto == UDP and len(out) >= ip_len + 8:
        out[ip_len + 6:ip_len + 8] = bytes(2)
    return bytes(out)


def check_coalesce(packets: list[bytes]) -> None:
    written = coalesce(packets)
    back = []
    for header, packet in written:
        assert len(packet) <= 65535 + (40 if packet[0] >> 4 == 6 else 0)
        segments = split(header, packet)
        assert segments, (header.hex(), packet.hex())
        back += segments
    assert sorted(map(comparable, back)) == sorted(map(comparable, packets))


def one_input(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1 == 0:
        if len(data) > 11:
            check_split(data[1:11], data[11:])
        return
    packets = [p for p in map(trimmed, data[1:].split(SEPARATOR)) if p]
    check_coalesce(packets)


def seeds() -> list[bytes]:
    """Super-packets and runs of segments built from the RFC layouts by tests/test_offload.py."""
    from test_offload import ACK, GSO_NONE, PSH, payload, tcp_packet, udp_packet, vnet

    found = []
    for ipv6 in (False, True):
        ip_len = 40 if ipv6 else 20
        tso = tcp_packet(ipv6, 1, payload(3000), partial=True)
        found.append(b"\0" + vnet(NEEDS_CSUM, GSO_TCPV6 if ipv6 else GSO_TCPV4, ip_len + 20, 1200, ip_len, 16) + tso)
        uso = udp_packet(ipv6, payload(2000), partial=True)
        found.append(b"\0" + vnet(NEEDS_CSUM, GSO_UDP_L4, ip_len + 8, 700, ip_len, 6) + uso)
        found.append(b"\0" + vnet(NEEDS_CSUM, GSO_NONE, 0, 0, ip_len, 16)
                     + tcp_packet(ipv6, 1, payload(100), partial=True))
        run = [tcp_packet(ipv6, 1 + 1000 * i, payload(1000, 1000 * i), ident=i, flags=ACK | (PSH if i == 3 else 0))
               for i in range(4)]
        found.append(b"\1" + SEPARATOR.join(run))
        found.append(b"\1" + SEPARATOR.join([udp_packet(ipv6, payload(500), ident=i) for i in range(3)]))
    return found


if __name__ == "__main__":
    common.main(one_input)
