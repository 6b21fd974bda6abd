# What the stack's protocols share: its addresses, MTU, the output sink and
# the secret its keyed hashes use.  Inline helpers only; wgc/netstack/_stack
# owns the Netif, and the protocol modules (_tcp) write packets through it.
#
# The sink is a batch of packet slots owned by the I/O edge (the port's batch
# buffers, or a test's); a protocol that finds it full stops sending and is
# asked again when the edge has emptied it.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp
from wgc.netstack._ip cimport Addr, write_ip_header, finish_l4_checksum, DEFAULT_TTL

cdef enum:
    NETIF_ADDRS_MAX = 8            # addresses per family
    MTU_MIN = 1280                 # IPv6's minimum (RFC 8200): the floor for any MTU we use

cdef struct Sink:
    uint8_t *slots                 # capacity slots of slot_size bytes
    uint32_t *lengths
    uint32_t count, capacity
    uint32_t slot_size

cdef struct Netif:
    uint32_t mtu
    Sink *sink
    uint16_t ident                 # the next IPv4 ID
    uint8_t secret[16]             # keys the ISN, port and hash functions
    Addr addr4[NETIF_ADDRS_MAX]
    Addr addr6[NETIF_ADDRS_MAX]
    uint32_t count4, count6
    uint64_t dropped               # packets the sink had no room for

cdef inline bint netif_is_local(const Netif *n, bint v6, const Addr *a) noexcept nogil:
    cdef uint32_t i
    if v6:
        for i in range(n.count6):
            if memcmp(n.addr6[i].b, a.b, 16) == 0:
                return True
        return False
    for i in range(n.count4):
        if memcmp(n.addr4[i].b, a.b, 4) == 0:
            return True
    return False

# The source address for a destination: the first of the family (None: NULL).
cdef inline Addr *netif_source(Netif *n, bint v6) noexcept nogil:
    if v6:
        return &n.addr6[0] if n.count6 else NULL
    return &n.addr4[0] if n.count4 else NULL

# Starts a packet of l4_length transport bytes: writes its IP header into the
# next free slot and returns the slot, with *l4 where the transport goes;
# NULL when the sink is full or the packet would not fit the MTU.
cdef inline uint8_t *netif_begin(Netif *n, bint v6, const Addr *src, const Addr *dst, uint8_t proto,
                                 uint32_t l4_length, uint8_t **l4) noexcept nogil:
    cdef Sink *s = n.sink
    cdef uint8_t *slot
    cdef uint32_t header = 40 if v6 else 20
    if s == NULL or s.count == s.capacity or header + l4_length > n.mtu or header + l4_length > s.slot_size:
        n.dropped += 1
        return NULL
    slot = s.slots + <size_t>s.count * s.slot_size
    n.ident += 1
    l4[0] = slot + write_ip_header(slot, v6, src, dst, proto, l4_length, DEFAULT_TTL, n.ident)
    return slot

# Completes the packet netif_begin started (transport checksum at csum_at of
# the transport header) and hands it to the sink.
cdef inline void netif_finish(Netif *n, uint8_t *slot, bint v6, uint8_t proto, uint8_t *l4,
                              uint32_t l4_length, uint32_t csum_at) noexcept nogil:
    finish_l4_checksum(slot, v6, proto, l4, l4_length, csum_at)
    n.sink.lengths[n.sink.count] = <uint32_t>(l4 - slot) + l4_length
    n.sink.count += 1

