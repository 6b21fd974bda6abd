# cython: language_level=3
"""IPv4 and IPv6 headers for the network stack (see _ip.pxd)."""
import ipaddress

from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset

from wgc._bytes cimport load_be16, store_be16
from wgc._checksum cimport (PROTO_ICMP, PROTO_UDP, checksum_add, checksum_fold, pseudo_header_sum,
                            ipv4_header_checksum)


cdef int parse_ip(const uint8_t *packet, uint32_t length, Parsed *p) noexcept nogil:
    cdef uint32_t ihl, total, at, walked = 0
    cdef uint8_t next_header
    memset(p, 0, sizeof(Parsed))
    if length < 1:
        return -1
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 0x0f) * 4
        if length < IPV4_HEADER or ihl < IPV4_HEADER or ihl > length:
            return -1
        total = load_be16(packet + 2)
        if total < ihl or total > length:
            return -1
        if checksum_fold(checksum_add(0, packet, ihl)) != 0xffff:
            return -1
        p.proto = packet[9]
        p.ttl = packet[8]
        memcpy(p.src.b, packet + 12, 4)
        memcpy(p.dst.b, packet + 16, 4)
        p.length = total
        p.l4_at = ihl
        p.fragment = (load_be16(packet + 6) & 0x3fff) != 0      # MF or an offset
        return 0
    if packet[0] >> 4 != 6 or length < IPV6_HEADER:
        return -1
    total = IPV6_HEADER + load_be16(packet + 4)
    if total == IPV6_HEADER and packet[6] == NEXT_HOP_BY_HOP:
        return -1                  # possibly a jumbogram (RFC 2675): not on a tunnel
    if total > length:
        return -1
    p.v6 = True
    p.ttl = packet[7]
    memcpy(p.src.b, packet + 8, 16)
    memcpy(p.dst.b, packet + 24, 16)
    p.length = total
    next_header = packet[6]
    p.next_header_at = 6
    at = IPV6_HEADER
    while True:
        if next_header == NEXT_FRAGMENT:
            if at + 8 > total or p.fragment:
                return -1
            p.fragment = True
            p.frag_at = at
            # The rest is only readable after reassembly.
            p.proto = packet[at]
            p.l4_at = at + 8
            return 0
        if next_header == NEXT_NONE:
            return -1
        if (next_header != NEXT_HOP_BY_HOP and next_header != NEXT_ROUTING
                and next_header != NEXT_DESTINATION):
            p.proto = next_header
            p.l4_at = at
            return 0
        if next_header == NEXT_HOP_BY_HOP and at != IPV6_HEADER:
            return -1              # only right after the fixed header (RFC 8200 4.3)
        walked += 1
        if walked > IPV6_EXTENSIONS_MAX or at + 8 > total:
            return -1
        if next_header == NEXT_ROUTING and packet[at + 3] != 0:
            return -1              # segments left: we are not the final destination
        p.next_header_at = at
        next_header = packet[at]
        at += (<uint32_t>packet[at + 1] + 1) * 8
        if at > total:
            return -1


cdef uint32_t write_ip_header(uint8_t *out, bint v6, const Addr *src, const Addr *dst, uint8_t proto,
                              uint32_t l4_length, uint8_t ttl, uint16_t ident) noexcept nogil:
    if v6:
        out[0] = 0x60
        out[1] = 0
        out[2] = 0
        out[3] = 0
        store_be16(out + 4, l4_length)
        out[6] = proto
        out[7] = ttl
        memcpy(out + 8, src.b, 16)
        memcpy(out + 24, dst.b, 16)
        return IPV6_HEADER
    out[0] = 0x45
    out[1] = 0
    store_be16(out + 2, IPV4_HEADER + l4_length)
    store_be16(out + 4, ident)
    out[6] = 0x40                  # DF: the stack sizes its segments to the MTU
    out[7] = 0
    out[8] = ttl
    out[9] = proto
    memcpy(out + 12, src.b, 4)
    memcpy(out + 16, dst.b, 4)
    ipv4_header_checksum(out, IPV4_HEADER)
    return IPV4_HEADER


cdef inline uint32_t start_sum(const uint8_t *ip, bint v6, uint8_t proto, uint32_t l4_length) noexcept nogil:
    """ICMP for IPv4 is the one transport whose checksum has no pseudo-header."""
    if proto == PROTO_ICMP and not v6:
        return 0
    return pseudo_header_sum(ip, v6, proto, l4_length)


cdef void finish_l4_checksum(uint8_t *ip, bint v6, uint8_t proto, uint8_t *l4, uint32_t l4_length,
                             uint32_t csum_at) noexcept nogil:
    cdef uint16_t sum
    l4[csum_at] = 0
    l4[csum_at + 1] = 0
    sum = ~checksum_fold(checksum_add(start_sum(ip, v6, proto, l4_length), l4, l4_length)) & 0xffff
    if sum == 0 and proto == PROTO_UDP:
        sum = 0xffff               # 0 would mean "no checksum" (RFC 768)
    store_be16(l4 + csum_at, sum)


cdef bint l4_checksum_ok(const uint8_t *packet, const Parsed *p) noexcept nogil:
    cdef uint32_t l4_length = p.length - p.l4_at
    if p.proto == PROTO_UDP and not p.v6 and l4_length >= 8 and load_be16(packet + p.l4_at + 6) == 0:
        return True
    return checksum_fold(checksum_add(start_sum(packet, p.v6, p.proto, l4_length),
                                      packet + p.l4_at, l4_length)) == 0xffff


cdef int addr_from_python(object ip, Addr *a, bint *v6) except -1:
    packed = ipaddress.ip_address(ip).packed
    memset(a, 0, sizeof(Addr))
    memcpy(a.b, <const uint8_t *>packed, len(packed))
    v6[0] = len(packed) == 16
    return 0

cdef str addr_to_python(const Addr *a, bint v6):
    return ipaddress.ip_address(bytes(a.b[:addr_size(v6)])).compressed
