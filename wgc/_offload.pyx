# cython: language_level=3
"""Segmentation (TSO/USO) and coalescing (GRO) for the vnet-header TUN.

The rules follow what the Linux stack itself does with such packets:
segments of one super-packet share its headers, with the IPv4 ID counting
up, the TCP sequence number advancing by the payload before it, FIN and PSH
kept for the last segment and CWR for the first.  Coalescing only joins
packets a GRO engine would: same flow, same IP header fields that matter,
no IP options or fragments, IPv4 IDs counting up unless DF is set, TCP
with identical options and ACK, carrying
only ACK (and PSH, which ends the run), each segment continuing the
previous one exactly; UDP datagrams of equal size (a shorter one ends the
run).  Decrypted packets are authenticated, so like the kernel's WireGuard
we mark the packets we write as already checksummed instead of verifying
their inner checksums.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memcmp, memset

from wgc._bytes cimport load_be16, store_be16, load_be32, store_be32
from wgc._checksum cimport (PROTO_TCP, PROTO_UDP, checksum_add, checksum_fold, pseudo_header_sum,
                            ipv4_header_checksum)

cdef enum:
    TCP_FIN = 0x01
    TCP_PSH = 0x08
    TCP_ACK = 0x10
    TCP_CWR = 0x80
    GRO_SEARCH = 8                 # earlier items a packet may join


cdef void vnet_hdr_load(VnetHdr *h, const uint8_t *p) noexcept nogil:
    memcpy(&h.hdr_len, p + 2, 2)
    memcpy(&h.gso_size, p + 4, 2)
    memcpy(&h.csum_start, p + 6, 2)
    memcpy(&h.csum_offset, p + 8, 2)
    h.flags = p[0]
    h.gso_type = p[1]

cdef void vnet_hdr_store(const VnetHdr *h, uint8_t *p) noexcept nogil:
    p[0] = h.flags
    p[1] = h.gso_type
    memcpy(p + 2, &h.hdr_len, 2)
    memcpy(p + 4, &h.gso_size, 2)
    memcpy(p + 6, &h.csum_start, 2)
    memcpy(p + 8, &h.csum_offset, 2)


cdef inline void set_ip_length(uint8_t *ip, bint ipv6, uint32_t total) noexcept nogil:
    if ipv6:
        store_be16(ip + 4, total - 40)
    else:
        store_be16(ip + 2, total)


cdef inline int parse_ip(const uint8_t *p, uint32_t length, bint *ipv6, uint32_t *ip_len,
                         uint32_t *proto) noexcept nogil:
    """The IP header of a packet we may cut or join: 0, or -1 when it is not one.

    Not one: IPv4 with options or fragmented, IPv6 with extension headers.
    """
    if length >= 20 and p[0] == 0x45:
        if load_be16(p + 6) & 0x3fff:          # MF or a fragment offset
            return -1
        ipv6[0] = False
        ip_len[0] = 20
        proto[0] = p[9]
        return 0
    if length >= 40 and p[0] >> 4 == 6:
        ipv6[0] = True
        ip_len[0] = 40
        proto[0] = p[6]
        return 0
    return -1


cdef uint32_t segmenter_init(Segmenter *s, const VnetHdr *h, uint8_t *packet,
                             uint32_t length) noexcept nogil:
    cdef uint32_t proto = 0, payload, end, field
    cdef uint16_t sum
    cdef int gso = h.gso_type & ~VNET_GSO_ECN
    s.packet = packet
    s.length = length
    s.mss = 0
    s.count = 0
    s.kind = KIND_OTHER
    if gso == VNET_GSO_NONE:
        if h.flags & VNET_F_NEEDS_CSUM:
            # The stack left the checksum to us: the field holds the
            # pseudo-header sum, the rest is summed from csum_start on.
            field = <uint32_t>h.csum_start + h.csum_offset
            if h.csum_start >= length or field + 2 > length:
                return 0
            sum = ~checksum_fold(checksum_add(0, packet + h.csum_start, length - h.csum_start))
            if sum == 0 and h.csum_offset == 6:
                sum = 0xffff                   # UDP sends a zero sum as all ones
            store_be16(packet + field, sum)
        s.count = 1
        return 1
    if parse_ip(packet, length, &s.ipv6, &s.ip_len, &proto) < 0 or h.gso_size == 0:
        return 0
    if (gso == VNET_GSO_TCPV4 and not s.ipv6) or (gso == VNET_GSO_TCPV6 and s.ipv6):
        if proto != PROTO_TCP or s.ip_len + 20 > length:
            return 0
        s.kind = KIND_TCP
        s.l4_len = (packet[s.ip_len + 12] >> 4) * 4
        if s.l4_len < 20:
            return 0
    elif gso == VNET_GSO_UDP_L4:
        if proto != PROTO_UDP:
            return 0
        s.kind = KIND_UDP
        s.l4_len = 8
    else:
        return 0
    end = s.ip_len + s.l4_len
    if end > length:
        return 0
    s.mss = h.gso_size
    payload = length - end
    s.count = (payload + s.mss - 1) // s.mss if payload else 1
    return s.count


cdef uint32_t segmenter_write(const Segmenter *s, uint32_t i, uint8_t *out) noexcept nogil:
    cdef uint32_t headers = s.ip_len + s.l4_len
    cdef uint32_t offset, size, total, l4_length
    cdef uint16_t sum
    cdef uint8_t *l4
    if s.mss == 0:
        memcpy(out, s.packet, s.length)
        return s.length
    offset = i * s.mss
    size = s.length - headers - offset
    if size > s.mss:
        size = s.mss
    total = headers + size
    memcpy(out, s.packet, headers)
    memcpy(out + headers, s.packet + headers + offset, size)
    set_ip_length(out, s.ipv6, total)
    if not s.ipv6:
        store_be16(out + 4, load_be16(s.packet + 4) + i)
        ipv4_header_checksum(out, s.ip_len)
    l4 = out + s.ip_len
    l4_length = total - s.ip_len
    if s.kind == KIND_TCP:
        store_be32(l4 + 4, load_be32(l4 + 4) + offset)
        if i + 1 < s.count:
            l4[13] &= ~(TCP_FIN | TCP_PSH)
        if i > 0:
            l4[13] &= ~TCP_CWR
        l4[16] = 0
        l4[17] = 0
        store_be16(l4 + 16, ~checksum_fold(checksum_add(
            pseudo_header_sum(out, s.ipv6, PROTO_TCP, l4_length), l4, l4_length)) & 0xffff)
    else:
        store_be16(l4 + 4, l4_length)
        l4[6] = 0
        l4[7] = 0
        sum = ~checksum_fold(checksum_add(
            pseudo_header_sum(out, s.ipv6, PROTO_UDP, l4_length), l4, l4_length))
        store_be16(l4 + 6, sum if sum else 0xffff)
    return total


# ---- coalescing -------------------------------------------------------------

cdef int gro_init(Gro *g, uint32_t capacity) noexcept nogil:
    g.packets = <GroPacket *>malloc(capacity * sizeof(GroPacket))
    g.items = <GroItem *>malloc(capacity * sizeof(GroItem))
    g.capacity = capacity
    g.packet_count = g.item_count = 0
    if g.packets == NULL or g.items == NULL:
        gro_free(g)
        return -1
    return 0

cdef void gro_free(Gro *g) noexcept nogil:
    free(g.packets)
    free(g.items)
    g.packets = NULL
    g.items = NULL
    g.capacity = 0

cdef bint gro_full(const Gro *g) noexcept nogil:
    return g.packet_count >= g.capacity

cdef void gro_reset(Gro *g) noexcept nogil:
    g.packet_count = g.item_count = 0


cdef inline bint same_flow(const uint8_t *a, const uint8_t *b, bint ipv6, uint32_t ip_len) noexcept nogil:
    """Same addresses, ports and the IP fields a merged header must keep."""
    if ipv6:
        # version, traffic class, flow label; next header and hop limit; addresses
        if memcmp(a, b, 4) != 0 or memcmp(a + 6, b + 6, 34) != 0:
            return False
    else:
        # TOS; the reserved flag and DF; TTL and protocol; addresses
        if a[1] != b[1] or (a[6] ^ b[6]) & 0xc0 or memcmp(a + 8, b + 8, 2) != 0 \
                or memcmp(a + 12, b + 12, 8) != 0:
            return False
    return memcmp(a + ip_len, b + ip_len, 4) == 0


cdef inline void new_item(Gro *g, int32_t index, int kind, bint ipv6, uint32_t ip_len,
                          uint32_t l4_len, uint32_t payload, uint32_t next_seq, bint open) noexcept nogil:
    cdef GroItem *item = &g.items[g.item_count]
    g.item_count += 1
    item.first = item.last = index
    item.members = 1
    item.length = g.packets[index].length
    item.mss = payload
    item.next_seq = next_seq
    item.open = open
    item.kind = kind
    item.ipv6 = ipv6
    item.ip_len = ip_len
    item.l4_len = l4_len


cdef void gro_add(Gro *g, uint8_t *data, uint32_t length) noexcept nogil:
    cdef int32_t index = g.packet_count
    cdef bint ipv6
    cdef uint32_t ip_len = 0, proto = 0, l4_len, payload, seq = 0, j, searched
    cdef uint8_t flags = 0
    cdef uint8_t *l4
    cdef uint8_t *first
    cdef GroItem *item
    cdef int kind
    g.packets[index].data = data
    g.packets[index].length = length
    g.packets[index].next = -1
    g.packet_count += 1
    if parse_ip(data, length, &ipv6, &ip_len, &proto) < 0:
        new_item(g, index, KIND_OTHER, False, 0, 0, 0, 0, False)
        return
    l4 = data + ip_len
    if proto == PROTO_TCP and ip_len + 20 <= length:
        kind = KIND_TCP
        l4_len = (l4[12] >> 4) * 4
        flags = l4[13]
        seq = load_be32(l4 + 4)
        if l4_len < 20 or (flags & ~(TCP_ACK | TCP_PSH)) or not (flags & TCP_ACK):
            kind = KIND_OTHER
    elif proto == PROTO_UDP and ip_len + 8 <= length and load_be16(l4 + 4) == length - ip_len:
        kind = KIND_UDP
        l4_len = 8
    else:
        kind = KIND_OTHER
    if kind == KIND_OTHER or ip_len + l4_len >= length:
        new_item(g, index, KIND_OTHER, False, 0, 0, 0, 0, False)
        return
    payload = length - ip_len - l4_len
    # Join the newest item of the same flow, if it takes this packet.
    searched = 0
    j = g.item_count
    while j > 0 and searched < GRO_SEARCH:
        j -= 1
        searched += 1
        item = &g.items[j]
        if item.kind != kind or item.ipv6 != ipv6:
            continue
        first = g.packets[item.first].data
        if not same_flow(first, data, ipv6, ip_len):
            continue
        if (not item.open or payload > item.mss or item.length + payload > GRO_MAX_LENGTH
                or item.l4_len != l4_len):
            break
        # Without DF the IPv4 ID matters (fragments): cutting the super-packet
        # again numbers the segments from the first, so only such runs join.
        if not ipv6 and not (data[6] & 0x40) and \
                load_be16(data + 4) != (load_be16(first + 4) + item.members) & 0xffff:
            break
        if kind == KIND_TCP:
            # The same ack, reserved bits (AccECN's AE) and options: cutting
            # the super-packet again repeats the first member's header.
            if (seq != item.next_seq or memcmp(first + ip_len + 8, l4 + 8, 4) != 0
                    or first[ip_len + 12] != l4[12]
                    or memcmp(first + ip_len + 20, l4 + 20, l4_len - 20) != 0):
                break
            memcpy(first + ip_len + 14, l4 + 14, 2)     # the newest window
            first[ip_len + 13] |= flags & TCP_PSH
            item.next_seq += payload
            item.open = not (flags & TCP_PSH)
        elif item.members >= UDP_MAX_SEGMENTS:
            break
        g.packets[item.last].next = index
        item.last = index
        item.members += 1
        item.length += payload
        if payload < item.mss:
            item.open = False
        return
    new_item(g, index, kind, ipv6, ip_len, l4_len, payload,
             seq + payload, kind == KIND_UDP or not (flags & TCP_PSH))


cdef void gro_finish(Gro *g, uint32_t i, VnetHdr *h) noexcept nogil:
    cdef GroItem *item = &g.items[i]
    cdef uint8_t *first = g.packets[item.first].data
    cdef uint32_t proto
    memset(h, 0, sizeof(VnetHdr))
    if item.members == 1:
        h.flags = VNET_F_DATA_VALID
        return
    set_ip_length(first, item.ipv6, item.length)
    if not item.ipv6:
        ipv4_header_checksum(first, item.ip_len)
    proto = PROTO_TCP if item.kind == KIND_TCP else PROTO_UDP
    if item.kind == KIND_UDP:
        store_be16(first + item.ip_len + 4, item.length - item.ip_len)
    # A partial checksum: the pseudo-header sum, which the stack completes.
    h.csum_offset = 16 if item.kind == KIND_TCP else 6
    store_be16(first + item.ip_len + h.csum_offset,
               checksum_fold(pseudo_header_sum(first, item.ipv6, proto, item.length - item.ip_len)))
    h.flags = VNET_F_NEEDS_CSUM
    if item.kind == KIND_UDP:
        h.gso_type = VNET_GSO_UDP_L4
    else:
        h.gso_type = VNET_GSO_TCPV6 if item.ipv6 else VNET_GSO_TCPV4
    h.hdr_len = item.ip_len + item.l4_len
    h.gso_size = item.mss
    h.csum_start = item.ip_len


# ---- Python face, for tests and benchmarks --------------------------------------

def checksum(bytes data):
    """The Internet checksum of data (the value a header field would hold)."""
    return ~checksum_fold(checksum_add(0, data, len(data))) & 0xffff


def split(bytes vnet_hdr, bytes packet):
    """The IP packets a packet read from a vnet-header TUN stands for ([] = dropped)."""
    cdef VnetHdr h
    cdef Segmenter s
    cdef bytearray buffer = bytearray(packet)
    cdef uint8_t[::1] out = bytearray(max(len(packet), 1))
    cdef uint32_t i, n
    if len(vnet_hdr) != VNET_HDR_LEN:
        raise ValueError("a virtio_net_hdr is 10 bytes")
    vnet_hdr_load(&h, vnet_hdr)
    result = []
    for i in range(segmenter_init(&s, &h, buffer, len(buffer))):
        n = segmenter_write(&s, i, &out[0])
        result.append(bytes(out[:n]))
    return result


def coalesce(packets):
    """What would be written to the TUN for these decrypted packets, in order:
    a list of (virtio_net_hdr, packet) pairs."""
    cdef Gro g
    cdef VnetHdr h
    cdef uint8_t[::1] header = bytearray(VNET_HDR_LEN)
    cdef uint32_t i
    cdef int32_t m
    buffers = [bytearray(p) for p in packets]
    if gro_init(&g, max(len(buffers), 1)) < 0:
        raise MemoryError()
    try:
        for b in buffers:
            gro_add(&g, b, len(b))
        result = []
        for i in range(g.item_count):
            gro_finish(&g, i, &h)
            vnet_hdr_store(&h, &header[0])
            item = g.items[i]
            m = item.first
            parts = [g.packets[m].data[:g.packets[m].length]]
            m = g.packets[m].next
            while m >= 0:
                parts.append(g.packets[m].data[item.ip_len + item.l4_len:g.packets[m].length])
                m = g.packets[m].next
            result.append((bytes(header), b"".join(parts)))
        return result
    finally:
        gro_free(&g)
