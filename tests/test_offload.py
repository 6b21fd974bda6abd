"""Segmentation and coalescing for the vnet-header TUN (wgc._offload).

Packets are built here from their RFC layouts and checked with a checksum
written independently of the module's; the round trip coalesce -> split must
give back exactly the segments that went in.
"""
import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgc._offload import checksum, coalesce, split

V4_SRC, V4_DST = ipaddress.ip_address("10.0.0.1").packed, ipaddress.ip_address("10.0.0.2").packed
V6_SRC, V6_DST = ipaddress.ip_address("fd00::1").packed, ipaddress.ip_address("fd00::2").packed
V4_OTHER, V6_OTHER = ipaddress.ip_address("10.0.0.3").packed, ipaddress.ip_address("fd00::3").packed
TCP, UDP = 6, 17
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
NEEDS_CSUM, DATA_VALID = 1, 2
GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4 = 0, 1, 4, 5
TIMESTAMPS = bytes([1, 1, 8, 10]) + struct.pack("!II", 1000, 2000)


def reference_sum(data: bytes) -> int:
    """RFC 1071, the obvious way: 16-bit big-endian words with end-around carry."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo(ipv6: bool, src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if ipv6:
        return src + dst + struct.pack("!IxxxB", length, proto)
    return src + dst + struct.pack("!xBH", proto, length)


def ip_header(ipv6: bool, proto: int, l4_length: int, ident: int = 7, tos: int = 0, ttl: int = 64,
              options: bytes = b"", df: bool = True, flow: int = 0, src: bytes | None = None,
              dst: bytes | None = None) -> bytes:
    """tos is IPv6's traffic class, ttl its hop limit; flow (the flow label) is IPv6's only."""
    src, dst = src or (V6_SRC if ipv6 else V4_SRC), dst or (V6_DST if ipv6 else V4_DST)
    if ipv6:
        return struct.pack("!IHBB", 6 << 28 | tos << 20 | flow, l4_length, proto, ttl) + src + dst
    ihl = 5 + len(options) // 4
    header = struct.pack("!BBHHHBBH", 0x40 | ihl, tos, ihl * 4 + l4_length, ident, 0x4000 if df else 0, ttl,
                         proto, 0)
    header += src + dst + options
    return header[:10] + struct.pack("!H", ~reference_sum(header) & 0xFFFF) + header[12:]


def addresses(ipv6: bool, ip: dict) -> tuple[bytes, bytes]:
    """The source and destination the packet built with these ip_header arguments carries."""
    return ip.get("src") or (V6_SRC if ipv6 else V4_SRC), ip.get("dst") or (V6_DST if ipv6 else V4_DST)


def tcp_packet(ipv6: bool, seq: int, payload: bytes, flags: int = ACK, options: bytes = b"",
               ident: int = 7, ack: int = 99, window: int = 500, sport: int = 4000, ip_options: bytes = b"",
               partial: bool = False, df: bool = True, dport: int = 5201, **ip) -> bytes:
    """A TCP segment with correct checksums (partial: only the pseudo-header sum, as with NEEDS_CSUM);
    ip: more ip_header arguments."""
    offset = (20 + len(options)) // 4
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, offset << 4, flags, window, 0, 0) + options + payload
    src, dst = addresses(ipv6, ip)
    if partial:
        value = reference_sum(pseudo(ipv6, src, dst, TCP, len(tcp)))
    else:
        value = ~reference_sum(pseudo(ipv6, src, dst, TCP, len(tcp)) + tcp) & 0xFFFF
    tcp = tcp[:16] + struct.pack("!H", value) + tcp[18:]
    return ip_header(ipv6, TCP, len(tcp), ident, options=ip_options, df=df, **ip) + tcp


def udp_packet(ipv6: bool, payload: bytes, ident: int = 7, sport: int = 4000, partial: bool = False,
               dport: int = 5201, **ip) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    src, dst = addresses(ipv6, ip)
    if partial:
        value = reference_sum(pseudo(ipv6, src, dst, UDP, len(udp)))
    else:
        value = ~reference_sum(pseudo(ipv6, src, dst, UDP, len(udp)) + udp) & 0xFFFF or 0xFFFF
    udp = udp[:6] + struct.pack("!H", value) + udp[8:]
    return ip_header(ipv6, UDP, len(udp), ident, **ip) + udp


def more_fragments(packet: bytes) -> bytes:
    """An IPv4 packet with its more-fragments flag set (and its header checksum redone)."""
    frag = bytearray(packet)
    frag[6] |= 0x20
    frag[10:12] = b"\0\0"
    frag[10:12] = struct.pack("!H", ~reference_sum(bytes(frag[:20])) & 0xFFFF)
    return bytes(frag)


def vnet(flags=0, gso_type=GSO_NONE, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0) -> bytes:
    return struct.pack("=BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def unpack_vnet(header: bytes) -> tuple:
    return struct.unpack("=BBHHHH", header)


def checksums_valid(packet: bytes) -> bool:
    ipv6 = packet[0] >> 4 == 6
    ip_len = 40 if ipv6 else (packet[0] & 15) * 4
    if not ipv6 and reference_sum(packet[:ip_len]) != 0xFFFF:
        return False
    proto = packet[6] if ipv6 else packet[9]
    src, dst = (packet[8:24], packet[24:40]) if ipv6 else (packet[12:16], packet[16:20])
    l4 = packet[ip_len:]
    return reference_sum(pseudo(ipv6, src, dst, proto, len(l4)) + l4) == 0xFFFF


def payload(n: int, start: int = 0) -> bytes:
    return bytes((start + i) % 251 for i in range(n))


# ---- the checksum itself --------------------------------------------------------


@given(st.binary(max_size=3000))
def test_checksum_matches_rfc1071(data):
    assert checksum(data) == ~reference_sum(data) & 0xFFFF


# ---- split --------------------------------------------------------------------------


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("options", [b"", TIMESTAMPS], ids=["plain", "timestamps"])
@pytest.mark.parametrize("size,mss", [(4000, 1000), (4001, 1000), (999, 1000), (65000, 1348)])
def test_tcp_super_packet_is_cut_like_the_kernel_cuts_it(ipv6, options, size, mss):
    data = payload(size)
    big = tcp_packet(ipv6, 1_000_000, data, flags=ACK | PSH | FIN | CWR, options=options, partial=True)
    headers = (40 if ipv6 else 20) + 20 + len(options)
    segments = split(
        vnet(NEEDS_CSUM, GSO_TCPV6 if ipv6 else GSO_TCPV4, headers, mss, headers - 20 - len(options), 16), big
    )
    assert len(segments) == -(-size // mss)
    joined = b""
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        body = data[i * mss:(i + 1) * mss]
        expected = tcp_packet(ipv6, 1_000_000 + i * mss, body, options=options, ident=7 + i,
                              flags=ACK | (PSH | FIN if last else 0) | (CWR if i == 0 else 0))
        assert segment == expected, i
        assert checksums_valid(segment)
        joined += segment[headers:]
    assert joined == data


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_udp_super_packet_becomes_datagrams(ipv6):
    data = payload(3000)
    big = udp_packet(ipv6, data, partial=True)
    ip_len = 40 if ipv6 else 20
    segments = split(vnet(NEEDS_CSUM, GSO_UDP_L4, ip_len + 8, 1200, ip_len, 6), big)
    assert [len(s) - ip_len - 8 for s in segments] == [1200, 1200, 600]
    for i, segment in enumerate(segments):
        assert segment == udp_packet(ipv6, data[i * 1200:(i + 1) * 1200], ident=7 + i)
        assert checksums_valid(segment)


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_partial_checksum_is_completed(ipv6, kind):
    ip_len = 40 if ipv6 else 20
    if kind == "tcp":
        partial, whole, offset = (tcp_packet(ipv6, 5, payload(333), partial=True),
                                  tcp_packet(ipv6, 5, payload(333)), 16)
    else:
        partial, whole, offset = udp_packet(ipv6, payload(333), partial=True), udp_packet(ipv6, payload(333)), 6
    assert split(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, ip_len, offset), partial) == [whole]


def test_udp_checksum_that_sums_to_zero_is_sent_as_all_ones():
    # Find a payload whose UDP checksum computes to zero; it must go out as 0xffff.
    for n in range(1, 70000):
        body = struct.pack("!I", n)
        if udp_packet(False, body)[26:28] == b"\xff\xff":
            break
    out = split(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 20, 6), udp_packet(False, body, partial=True))
    assert out[0][26:28] == b"\xff\xff"


def test_packet_without_offload_passes_unchanged():
    packet = tcp_packet(False, 1, payload(100))
    assert split(vnet(), packet) == [packet]


@pytest.mark.parametrize("header,packet", [
    (vnet(NEEDS_CSUM, 3, 40, 1000, 20, 16), tcp_packet(False, 1, payload(3000))),        # legacy UFO
    (vnet(NEEDS_CSUM, GSO_TCPV4, 40, 0, 20, 16), tcp_packet(False, 1, payload(3000))),   # no segment size
    (vnet(NEEDS_CSUM, GSO_TCPV6, 60, 1000, 40, 16), tcp_packet(False, 1, payload(3000))),  # family mismatch
    (vnet(NEEDS_CSUM, GSO_TCPV4, 40, 1000, 20, 16), udp_packet(False, payload(3000))),   # not TCP
    (vnet(NEEDS_CSUM, GSO_TCPV4, 40, 1000, 20, 16), tcp_packet(False, 1, b"")[:30]),     # truncated TCP
    (vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 20, 16), tcp_packet(False, 1, b"")[:30]),          # checksum field outside
    (vnet(NEEDS_CSUM, GSO_TCPV4, 40, 1000, 20, 16), b"\x45" + bytes(10)),                # truncated IP
    (vnet(NEEDS_CSUM, GSO_TCPV4, 64, 1000, 24, 16),
     tcp_packet(False, 1, payload(3000), ip_options=bytes([1, 1, 1, 0]))),               # IP options
    (vnet(NEEDS_CSUM, GSO_TCPV4, 40, 1000, 20, 16), more_fragments(tcp_packet(False, 1, payload(3000)))),  # fragment
])
def test_malformed_or_unexpected_super_packets_are_dropped(header, packet):
    assert split(header, packet) == []


# ---- coalesce ---------------------------------------------------------------------


def flow(ipv6: bool, count: int, mss: int = 1000, last: int | None = None, options: bytes = b"",
         sport: int = 4000, seq: int = 1, start_id: int = 7, flags_last: int = ACK) -> list[bytes]:
    sizes = [mss] * count if last is None else [mss] * (count - 1) + [last]
    packets, offset = [], 0
    for i, size in enumerate(sizes):
        flags = flags_last if i == count - 1 else ACK
        packets.append(tcp_packet(ipv6, seq + offset, payload(size, offset), flags=flags, options=options,
                                  ident=start_id + i, sport=sport))
        offset += size
    return packets


def roundtrip(written: list[tuple[bytes, bytes]]) -> list[bytes]:
    """What the kernel makes of what was written: each super-packet cut again."""
    return [segment for header, packet in written for segment in split(header, packet)]


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("options", [b"", TIMESTAMPS], ids=["plain", "timestamps"])
def test_in_order_segments_become_one_super_packet(ipv6, options):
    packets = flow(ipv6, 5, last=300, options=options, flags_last=ACK | PSH)
    written = coalesce(packets)
    assert len(written) == 1
    header, packet = written[0]
    headers = (40 if ipv6 else 20) + 20 + len(options)
    assert unpack_vnet(header) == (NEEDS_CSUM, GSO_TCPV6 if ipv6 else GSO_TCPV4, headers, 1000,
                                   headers - 20 - len(options), 16)
    assert len(packet) == headers + 4300
    assert packet[headers - 20 - len(options) + 13] == ACK | PSH
    assert roundtrip(written) == packets


def test_single_packets_are_marked_checksummed():
    packets = [tcp_packet(False, 1, payload(10)), udp_packet(True, payload(10)), b"\x60" + bytes(50)]
    written = coalesce(packets)
    assert [p for _, p in written] == packets
    assert all(unpack_vnet(h) == (DATA_VALID, 0, 0, 0, 0, 0) for h, _ in written)


@pytest.mark.parametrize("case,groups", [
    ("gap", [1, 1]),
    ("out_of_order", [1, 1, 1]),
    ("psh_ends", [2, 1]),
    ("short_ends", [2, 1]),
    ("bigger_after", [1, 1]),
    ("syn", [1, 1]),
    ("fin", [1, 1]),
    ("rst", [1, 1]),
    ("other_ack", [1, 1]),
    ("other_options", [1, 1]),
    ("other_reserved_bits", [1, 1]),
    ("other_reserved_ip_flag", [1, 1]),
    ("ip_options", [1, 1]),
    ("fragment", [1, 1]),
    ("fragments", [1, 1]),
    ("pure_acks", [1, 1]),
    ("other_ttl", [1, 1]),
    ("id_jump_without_df", [1, 1]),
])
def test_what_is_not_joined(case, groups):
    a = tcp_packet(False, 1, payload(1000))
    b = tcp_packet(False, 1001, payload(1000, 1000), ident=8)
    if case == "gap":
        b = tcp_packet(False, 1501, payload(1000))
        packets = [a, b]
    elif case == "out_of_order":
        c = tcp_packet(False, 2001, payload(1000))
        packets = [a, c, b]
    elif case == "psh_ends":
        packets = [a, tcp_packet(False, 1001, payload(1000, 1000), flags=ACK | PSH, ident=8),
                   tcp_packet(False, 2001, payload(1000))]
    elif case == "short_ends":
        packets = [a, tcp_packet(False, 1001, payload(500, 1000), ident=8), tcp_packet(False, 1501, payload(500))]
    elif case == "bigger_after":
        packets = [tcp_packet(False, 1, payload(500)), tcp_packet(False, 501, payload(1000))]
    elif case in ("syn", "fin", "rst"):
        flag = {"syn": SYN, "fin": FIN, "rst": RST}[case]
        packets = [a, tcp_packet(False, 1001, payload(1000), flags=ACK | flag)]
    elif case == "other_ack":
        packets = [a, tcp_packet(False, 1001, payload(1000), ack=100)]
    elif case == "other_options":
        packets = [tcp_packet(False, 1, payload(1000), options=TIMESTAMPS),
                   tcp_packet(False, 1001, payload(1000), options=TIMESTAMPS[:-1] + b"\1")]
    elif case == "other_reserved_bits":  # Accurate ECN's AE flag (seen with tests/fuzz/fuzz_offload.py)
        b = bytearray(b)
        b[20 + 12] |= 1
        packets = [a, bytes(b)]
    elif case == "other_reserved_ip_flag":  # IPv4's reserved flag (found by tests/fuzz/fuzz_offload.py)
        b = bytearray(b)
        b[6] |= 0x80
        b[10:12] = b"\0\0"
        b[10:12] = struct.pack("!H", ~reference_sum(bytes(b[:20])) & 0xFFFF)
        packets = [a, bytes(b)]
    elif case == "ip_options":
        packets = [a, tcp_packet(False, 1001, payload(1000), ip_options=bytes([1, 1, 1, 0]))]
    elif case == "fragment":
        packets = [a, more_fragments(b)]
    elif case == "fragments":  # alike in every field, but fragments are never joined
        packets = [more_fragments(a), more_fragments(b)]
    elif case == "pure_acks":  # headers only: nothing to join
        packets = [tcp_packet(False, 1, b""), tcp_packet(False, 1, b"", ident=8)]
    elif case == "id_jump_without_df":
        packets = [tcp_packet(False, 1, payload(1000), df=False),
                   tcp_packet(False, 1001, payload(1000, 1000), ident=9, df=False)]
    elif case == "other_ttl":
        b = bytearray(b)
        b[8] = 3
        packets = [a, bytes(b)]
    written = coalesce(packets)
    sizes = [len(roundtrip([w])) if w[0][1] else 1 for w in written]
    assert sizes == groups
    assert [s for w in written for s in roundtrip([w])] == packets


def test_a_segment_joins_its_flow_across_seven_other_flows():
    """The newest item of the flow is searched for among the last eight (_offload's GRO_SEARCH)."""
    first, second = flow(False, 2)
    others = [tcp_packet(False, 1, payload(1000), sport=5000 + i) for i in range(7)]
    written = coalesce([first, *others, second])
    assert len(written) == 8 and roundtrip(written[:1]) == [first, second]


def joinable(proto: int, ipv6: bool, size: int = 1000, **second) -> list[bytes]:
    """Two packets one super-packet would take, the second built with these arguments changed."""
    if proto == TCP:
        return [tcp_packet(ipv6, 1, payload(size)), tcp_packet(ipv6, 1 + size, payload(size, size), ident=8, **second)]
    return [udp_packet(ipv6, payload(size)), udp_packet(ipv6, payload(size, size), ident=8, **second)]


def field_changes():
    """(proto, ipv6, what differs, arguments of the second packet): everything a merged
    header could not keep for both packets."""
    for proto in (TCP, UDP):
        for ipv6 in (False, True):
            other = V6_OTHER if ipv6 else V4_OTHER
            yield proto, ipv6, "source address", {"src": other}
            yield proto, ipv6, "destination address", {"dst": other}
            yield proto, ipv6, "source port", {"sport": 4001}
            yield proto, ipv6, "destination port", {"dport": 5202}
            yield proto, ipv6, "traffic class" if ipv6 else "tos", {"tos": 0x10}
            yield proto, ipv6, "ecn bits", {"tos": 0x01}
            yield proto, ipv6, "hop limit" if ipv6 else "ttl", {"ttl": 63}
            if ipv6:
                yield proto, ipv6, "flow label low bit", {"flow": 0x00001}
                yield proto, ipv6, "flow label high bit", {"flow": 0x80000}
            else:
                yield proto, ipv6, "df", {"df": False}
            if proto == TCP:
                yield proto, ipv6, "ack number", {"ack": 100}
                yield proto, ipv6, "option length", {"options": TIMESTAMPS}
                for name, flag in (("urg", URG), ("ece", ECE), ("cwr", CWR), ("syn", SYN), ("fin", FIN),
                                   ("rst", RST)):
                    yield proto, ipv6, f"{name} flag", {"flags": ACK | flag}
                yield proto, ipv6, "no ack flag", {"flags": PSH}


@pytest.mark.parametrize("proto", [TCP, UDP], ids=["tcp", "udp"])
@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_two_packets_of_one_flow_join(proto, ipv6):
    """The control for the next test: unchanged, the pair is one super-packet."""
    packets = joinable(proto, ipv6)
    written = coalesce(packets)
    assert len(written) == 1 and unpack_vnet(written[0][0])[0] == NEEDS_CSUM
    assert roundtrip(written) == packets


@pytest.mark.parametrize("proto,ipv6,field,second", [
    pytest.param(*case, id=f"{'tcp' if case[0] == TCP else 'udp'}-{'ipv6' if case[1] else 'ipv4'}-{case[2]}")
    for case in field_changes()])
def test_a_packet_differing_in_one_field_is_not_joined(proto, ipv6, field, second):
    packets = joinable(proto, ipv6, **second)
    written = coalesce(packets)
    assert [p for _, p in written] == packets
    assert all(unpack_vnet(h) == (DATA_VALID, 0, 0, 0, 0, 0) for h, _ in written)


def test_options_after_a_segment_without_are_not_joined_even_when_the_bytes_agree():
    """The header lengths differ, though the second's options repeat the first's payload."""
    first = tcp_packet(False, 1, TIMESTAMPS + payload(1000 - len(TIMESTAMPS)))
    second = tcp_packet(False, 1001, payload(1000), options=TIMESTAMPS, ident=8)
    assert [p for _, p in coalesce([first, second])] == [first, second]


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("sizes,groups", [
    ([500, 1000], [1, 1]),                       # larger after smaller: a new item
    ([1000, 1000, 500, 1000], [3, 1]),           # the smaller one ends the run
    ([1000, 1000, 1001], [2, 1]),
    ([1000, 999, 1000], [2, 1]),
])
def test_a_udp_datagram_larger_than_the_first_starts_a_new_item(ipv6, sizes, groups):
    datagrams = [udp_packet(ipv6, payload(size, i), ident=7 + i) for i, size in enumerate(sizes)]
    written = coalesce(datagrams)
    assert [len(roundtrip([w])) for w in written] == groups
    assert roundtrip(written) == datagrams


def test_a_udp_datagram_whose_length_field_disagrees_is_not_joined():
    first, second = joinable(UDP, False)
    lying = bytearray(second)
    lying[24:26] = struct.pack("!H", len(second) - 20 - 1)
    assert [p for _, p in coalesce([first, bytes(lying)])] == [first, bytes(lying)]


def test_udp_datagrams_without_df_join_only_with_counting_ids():
    """As for TCP (test_ids_must_count_up_unless_df_is_set): cut again, the IDs count up from the first."""
    counting = [udp_packet(False, payload(1000, i), ident=7 + i, df=False) for i in range(3)]
    written = coalesce(counting)
    assert len(written) == 1 and roundtrip(written) == counting
    jumping = [udp_packet(False, payload(1000, i), ident=7 + 2 * i, df=False) for i in range(2)]
    assert [p for _, p in coalesce(jumping)] == jumping


def test_ids_must_count_up_unless_df_is_set():
    fixed = [tcp_packet(False, 1 + 1000 * i, payload(1000, 1000 * i), ident=0) for i in range(3)]
    assert len(coalesce(fixed)) == 1          # DF: the ID carries nothing (RFC 6864)
    counting = [tcp_packet(False, 1 + 1000 * i, payload(1000, 1000 * i), ident=7 + i, df=False) for i in range(3)]
    written = coalesce(counting)
    assert len(written) == 1
    assert roundtrip(written) == counting


def test_interleaved_flows_each_coalesce_in_order():
    one = flow(False, 4, sport=1111)
    two = flow(True, 4, sport=2222)
    mixed = [p for pair in zip(one, two, strict=True) for p in pair]
    written = coalesce(mixed)
    assert len(written) == 2
    assert roundtrip(written[:1]) == one
    assert roundtrip(written[1:]) == two


def test_super_packet_stays_under_64k():
    packets = flow(False, 70, mss=1400)
    written = coalesce(packets)
    assert all(len(p) <= 65535 for _, p in written)
    assert len(written) == 2
    assert roundtrip(written) == packets


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_udp_datagrams_of_one_size_join(ipv6):
    datagrams = [udp_packet(ipv6, payload(1300, i), ident=7 + i) for i in range(5)]
    datagrams.append(udp_packet(ipv6, payload(200), ident=12))
    written = coalesce(datagrams)
    assert len(written) == 1
    ip_len = 40 if ipv6 else 20
    assert unpack_vnet(written[0][0]) == (NEEDS_CSUM, GSO_UDP_L4, ip_len + 8, 1300, ip_len, 6)
    assert roundtrip(written) == datagrams


def test_udp_runs_are_capped_at_64_datagrams():
    datagrams = [udp_packet(False, payload(100, i), ident=7 + i) for i in range(100)]
    written = coalesce(datagrams)
    assert [len(roundtrip([w])) for w in written] == [64, 36]
    assert roundtrip(written) == datagrams


# (ipv6, source port, protocol, DF): flows of both families and both protocols, and IPv4
# ones without DF, where the IDs must count up.
FLOWS = [(False, 1111, TCP, True), (False, 2222, TCP, False), (True, 3333, TCP, True),
         (False, 4444, UDP, True), (False, 5555, UDP, False), (True, 6666, UDP, True)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(FLOWS), st.integers(1, 1400), st.booleans()), max_size=60))
def test_coalesce_then_split_gives_back_every_packet(steps):
    """Random interleavings of TCP and UDP flows with random sizes (UDP datagrams larger
    and smaller than the ones before) and PSH flags."""
    sent = {}
    packets = []
    for (ipv6, sport, proto, df), size, push in steps:
        offset, ident = sent.get(sport, (0, 0))
        if proto == TCP:
            packets.append(tcp_packet(ipv6, 1 + offset, payload(size, offset), flags=ACK | (PSH if push else 0),
                                      ident=ident, sport=sport, df=df))
        else:
            packets.append(udp_packet(ipv6, payload(size, offset), ident=ident, sport=sport, df=df))
        sent[sport] = (offset + size, ident + 1)
    written = coalesce(packets)
    # Per flow, the order is kept; across flows, items keep arrival order of their first packet.
    back = roundtrip(written)
    assert sorted(back) == sorted(packets)
    for ipv6, sport, _, _ in FLOWS:
        port = struct.pack("!H", sport)
        ip_len = 40 if ipv6 else 20
        mine = [p for p in packets if p[ip_len:ip_len + 2] == port and (p[0] >> 4 == 6) == ipv6]
        assert [p for p in back if p[ip_len:ip_len + 2] == port and (p[0] >> 4 == 6) == ipv6] == mine
