# The IP layer of the network stack: reading the headers of a packet that
# came out of the tunnel, and writing the headers of one going in.  Pure
# byte work, no state: wgc/netstack/_stack keeps the state and decides.
#
# Who calls: the stack's thread, with the stack's lock held, nogil.
from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef enum:
    IPV4_HEADER = 20
    IPV6_HEADER = 40
    IPV6_EXTENSIONS_MAX = 8        # extension headers walked before giving up
    DEFAULT_TTL = 64               # Linux's ip_default_ttl and hop_limit
    NEXT_HOP_BY_HOP = 0
    NEXT_ROUTING = 43
    NEXT_FRAGMENT = 44
    NEXT_DESTINATION = 60
    NEXT_NONE = 59

# An address of either family: IPv4 in the first 4 bytes, the rest zero.
cdef struct Addr:
    uint8_t b[16]

# What parse_ip found.  Offsets count from the start of the packet.
cdef struct Parsed:
    bint v6
    uint8_t proto                  # the transport after any extension headers
    uint8_t ttl                    # TTL or hop limit
    Addr src, dst
    uint32_t length                # the packet per its header (bytes past it are padding)
    uint32_t l4_at                 # where the transport header starts
    bint fragment                  # to be reassembled first (wgc/netstack/_frag)
    uint32_t next_header_at        # IPv6: the byte that named the Fragment header
    uint32_t frag_at               # IPv6: where the Fragment header starts

# 0 and p filled for a packet the stack may take; -1 for one it drops
# silently: too short, a length field past the data, a wrong IPv4 header
# checksum, an IPv6 jumbogram, a routing header with segments left, more
# than IPV6_EXTENSIONS_MAX extension headers, or no next header.
cdef int parse_ip(const uint8_t *packet, uint32_t length, Parsed *p) noexcept nogil

# Writes an IP header for l4_length bytes of transport proto from src to dst
# at out (IPv4: DF set, the given ID, header checksum); returns its length.
cdef uint32_t write_ip_header(uint8_t *out, bint v6, const Addr *src, const Addr *dst, uint8_t proto,
                              uint32_t l4_length, uint8_t ttl, uint16_t ident) noexcept nogil
# Completes the transport checksum at offset csum_at (from the transport
# header at l4) of a packet whose IP header write_ip_header wrote at ip.
cdef void finish_l4_checksum(uint8_t *ip, bint v6, uint8_t proto, uint8_t *l4, uint32_t l4_length,
                             uint32_t csum_at) noexcept nogil
# Whether the transport checksum of a parsed packet verifies (UDP's 0 over
# IPv4 means "none" and counts as good).
cdef bint l4_checksum_ok(const uint8_t *packet, const Parsed *p) noexcept nogil

# Conversions for the Python faces: an IP address's text to an Addr (and its
# family), and back.
cdef int addr_from_python(object ip, Addr *a, bint *v6) except -1
cdef str addr_to_python(const Addr *a, bint v6)

cdef inline uint32_t addr_size(bint v6) noexcept nogil:
    return 16 if v6 else 4
