# The Internet checksum (RFC 1071) and the sums IP, TCP, UDP and ICMPv6 build
# on it, inline so that the TUN offloads (wgc/_offload.pyx) and the network
# stack (wgc/netstack) share one implementation without a call per packet.
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from wgc._bytes cimport store_be16

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* RFC 1071 sum of data in network order, added to sum (not folded).
       Native 32-bit words are summed and the result byte-swapped on
       little-endian hosts: the one's-complement sum is byte-order
       independent (RFC 1071, section 2 (B)).  Sixteen bytes a round, as two
       64-bit loads whose 32-bit halves go to four sums, so that the adds do
       not wait on each other: twice the speed of one sum of 32-bit words
       (bench-micro's split).  A sum takes at most 2^28 rounds of 2^32 - 1
       for a 32-bit n: no 64-bit sum can overflow. */
    static inline uint32_t wgc_checksum_add(uint32_t sum, const uint8_t *p, uint32_t n) {
        uint64_t acc = 0, a0 = 0, a1 = 0, a2 = 0, a3 = 0, x, y;
        uint32_t w;
        uint16_t h;
        while (n >= 16) {
            memcpy(&x, p, 8);
            memcpy(&y, p + 8, 8);
            a0 += (uint32_t)x;
            a1 += x >> 32;
            a2 += (uint32_t)y;
            a3 += y >> 32;
            p += 16;
            n -= 16;
        }
        acc = (a0 & 0xffffffffu) + (a0 >> 32) + (a1 & 0xffffffffu) + (a1 >> 32)
            + (a2 & 0xffffffffu) + (a2 >> 32) + (a3 & 0xffffffffu) + (a3 >> 32);
        while (n >= 4) { memcpy(&w, p, 4); acc += w; p += 4; n -= 4; }
        if (n >= 2) { memcpy(&h, p, 2); acc += h; p += 2; n -= 2; }
    #if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (n) acc += p[0];
    #else
        if (n) acc += (uint32_t)p[0] << 8;
    #endif
        acc = (acc & 0xffffffffu) + (acc >> 32);
        acc = (acc & 0xffffffffu) + (acc >> 32);
        acc = (acc & 0xffffu) + (acc >> 16);
        acc = (acc & 0xffffu) + (acc >> 16);
        acc = (acc & 0xffffu) + (acc >> 16);
    #if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        acc = ((acc & 0xffu) << 8) | (acc >> 8);
    #endif
        return sum + (uint32_t)acc;
    }
    """
    uint32_t wgc_checksum_add(uint32_t sum, const uint8_t *p, uint32_t n) nogil

cdef enum:
    PROTO_ICMP = 1
    PROTO_TCP = 6
    PROTO_UDP = 17
    PROTO_ICMPV6 = 58


# data summed onto a running (unfolded) sum.
cdef inline uint32_t checksum_add(uint32_t sum, const uint8_t *data, uint32_t length) noexcept nogil:
    return wgc_checksum_add(sum, data, length)

cdef inline uint16_t checksum_fold(uint32_t sum) noexcept nogil:
    sum = (sum & 0xffff) + (sum >> 16)
    sum = (sum & 0xffff) + (sum >> 16)
    return <uint16_t>sum

# The sum over the pseudo-header a TCP, UDP or ICMPv6 checksum covers (RFC 9293,
# RFC 768, RFC 8200 section 8.1); ip is the packet's IP header.
cdef inline uint32_t pseudo_header_sum(const uint8_t *ip, bint ipv6, uint32_t proto,
                                       uint32_t l4_length) noexcept nogil:
    if ipv6:
        return checksum_add(proto + l4_length, ip + 8, 32)
    return checksum_add(proto + l4_length, ip + 12, 8)

cdef inline void ipv4_header_checksum(uint8_t *ip, uint32_t ip_len) noexcept nogil:
    ip[10] = 0
    ip[11] = 0
    store_be16(ip + 10, ~checksum_fold(checksum_add(0, ip, ip_len)) & 0xffff)
