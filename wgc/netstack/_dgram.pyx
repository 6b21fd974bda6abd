# cython: language_level=3
"""UDP and ICMP echo endpoints of the network stack (see _dgram.pxd)."""
from libc.errno cimport EADDRINUSE, EADDRNOTAVAIL, EMSGSIZE, ENOBUFS, ENOMEM
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.stdlib cimport calloc, malloc, free
from libc.string cimport memcpy, memset, memcmp

from wgc._bytes cimport load_be16, store_be16
from wgc._checksum cimport PROTO_UDP, PROTO_ICMP, PROTO_ICMPV6
from wgc.netstack._ip cimport Addr, Parsed, l4_checksum_ok
from wgc.netstack._netif cimport Netif, netif_begin, netif_finish, netif_source

cdef enum:
    UDP_HEADER = 8
    ICMP_HEADER = 8
    ICMP4_ECHO_REQUEST = 8
    ICMP6_ECHO_REQUEST = 128
    EPHEMERAL_FIRST = 32768
    EPHEMERAL_COUNT = 61000 - 32768


cdef void dgram_init(DgramTable *t, Netif *netif) noexcept nogil:
    memset(t, 0, sizeof(DgramTable))
    t.netif = netif

cdef void dgram_free(DgramTable *t) noexcept nogil:
    cdef Binding *b = t.bindings
    cdef Binding *next
    while b != NULL:
        next = b.next
        free(b.queue)
        free(b)
        b = next
    t.bindings = NULL

cdef bint is_any(const Addr *a) noexcept nogil:
    cdef int i
    for i in range(16):
        if a.b[i]:
            return False
    return True

cdef Binding *find(DgramTable *t, int kind, bint v6, const Addr *local, uint16_t port) noexcept nogil:
    """The endpoint for a local address and port: a bound address wins over any."""
    cdef Binding *b = t.bindings
    cdef Binding *wildcard = NULL
    while b != NULL:
        if b.kind == kind and b.port == port and b.v6 == v6:
            if memcmp(b.local.b, local.b, 16) == 0:
                return b
            if is_any(&b.local):
                wildcard = b
        b = b.next
    return wildcard

cdef Binding *dgram_bind(DgramTable *t, int kind, bint v6, const Addr *local, uint16_t port,
                         int *error) noexcept nogil:
    cdef Binding *b
    cdef uint32_t i
    if port == 0:
        for i in range(EPHEMERAL_COUNT):
            port = EPHEMERAL_FIRST + (t.ephemeral_next + i) % EPHEMERAL_COUNT
            if find(t, kind, v6, local, port) == NULL:
                t.ephemeral_next += i + 1
                break
        else:
            error[0] = EADDRINUSE
            return NULL
    else:
        b = find(t, kind, v6, local, port)
        if b != NULL and (memcmp(b.local.b, local.b, 16) == 0 or is_any(local)):
            error[0] = EADDRINUSE
            return NULL
    b = <Binding *>calloc(1, sizeof(Binding))
    if b == NULL:
        error[0] = ENOMEM
        return NULL
    b.kind = kind
    b.v6 = v6
    b.local = local[0]
    b.port = port
    b.next = t.bindings
    t.bindings = b
    return b

cdef void dgram_close(DgramTable *t, Binding *b) noexcept nogil:
    cdef Binding **link = &t.bindings
    cdef Binding *prev = NULL
    cdef Binding *x
    while link[0] != NULL and link[0] != b:
        link = &link[0].next
    if link[0] == b:
        link[0] = b.next
    if b.on_ready:
        x = t.ready_head
        while x != NULL and x != b:
            prev = x
            x = x.ready_next
        if x == b:
            if prev == NULL:
                t.ready_head = b.ready_next
            else:
                prev.ready_next = b.ready_next
            if t.ready_tail == b:
                t.ready_tail = prev
    free(b.queue)
    free(b)

cdef void mark_ready(DgramTable *t, Binding *b) noexcept nogil:
    if b.on_ready:
        return
    b.on_ready = True
    b.ready_next = NULL
    if t.ready_tail != NULL:
        t.ready_tail.ready_next = b
    else:
        t.ready_head = b
    t.ready_tail = b

cdef Binding *dgram_ready(DgramTable *t) noexcept nogil:
    cdef Binding *b = t.ready_head
    if b != NULL:
        t.ready_head = b.ready_next
        if t.ready_head == NULL:
            t.ready_tail = NULL
        b.on_ready = False
    return b

cdef void enqueue(DgramTable *t, Binding *b, bint v6, const Addr *source, uint16_t sport,
                  const uint8_t *data, uint32_t length) noexcept nogil:
    cdef uint8_t *at
    cdef uint32_t record = DGRAM_RECORD + length
    if b.queue == NULL:
        b.queue = <uint8_t *>malloc(DGRAM_QUEUE_BYTES)
        if b.queue == NULL:
            t.dropped += 1
            return
    if b.queue_used + 4 + record > DGRAM_QUEUE_BYTES:
        t.dropped += 1
        return
    at = b.queue + b.queue_used
    memcpy(at, &record, 4)
    at += 4
    at[0] = v6
    at[1] = 0
    store_be16(at + 2, sport)
    memcpy(at + 4, source.b, 16)
    memcpy(at + DGRAM_RECORD, data, length)
    b.queue_used += 4 + record
    mark_ready(t, b)


cdef inline bint accepts(const Binding *b, const Parsed *p, uint16_t sport) noexcept nogil:
    return not b.connected or (b.rport == sport and memcmp(b.remote.b, p.src.b, 16) == 0)

cdef int dgram_input_udp(DgramTable *t, const uint8_t *packet, const Parsed *p) noexcept nogil:
    cdef const uint8_t *h = packet + p.l4_at
    cdef uint32_t l4 = p.length - p.l4_at, length
    cdef Binding *b
    cdef uint16_t sport
    if l4 < UDP_HEADER or not l4_checksum_ok(packet, p):
        return 1                   # dropped silently, like a bad packet anywhere
    length = load_be16(h + 4)
    if length < UDP_HEADER or length > l4:
        return 1
    sport = load_be16(h)
    b = find(t, DGRAM_UDP, p.v6, &p.dst, load_be16(h + 2))
    if b == NULL:
        return 0
    if accepts(b, p, sport):
        enqueue(t, b, p.v6, &p.src, sport, h + UDP_HEADER, length - UDP_HEADER)
    return 1

cdef void dgram_input_echo_reply(DgramTable *t, const uint8_t *packet, const Parsed *p) noexcept nogil:
    cdef const uint8_t *h = packet + p.l4_at
    cdef Binding *b = find(t, DGRAM_ECHO, p.v6, &p.dst, load_be16(h + 4))
    if b != NULL:
        # The record carries the sequence number and data (the ICMP header from byte 6 on).
        enqueue(t, b, p.v6, &p.src, 0, h + 6, p.length - p.l4_at - 6)

cdef void dgram_icmp_error(DgramTable *t, bint v6, const Addr *dst, uint16_t sport, uint16_t dport,
                           int error) noexcept nogil:
    cdef Binding *b = t.bindings
    while b != NULL:
        if (b.kind == DGRAM_UDP and b.v6 == v6 and b.port == sport and b.connected and b.rport == dport
                and memcmp(b.remote.b, dst.b, 16) == 0):
            b.error = error
            mark_ready(t, b)
        b = b.next

cdef int dgram_send(DgramTable *t, Binding *b, const Addr *dst, uint16_t dport, const uint8_t *data,
                    uint32_t length) noexcept nogil:
    cdef const Addr *src = &b.local
    cdef uint8_t *l4
    cdef uint8_t *slot
    cdef uint8_t proto
    cdef uint32_t header = 40 if b.v6 else 20
    if is_any(src):
        src = netif_source(t.netif, b.v6)
        if src == NULL:
            return EADDRNOTAVAIL
    if header + UDP_HEADER + length > t.netif.mtu:
        return EMSGSIZE            # DF: the stack does not fragment
    if b.kind == DGRAM_ECHO:
        proto = PROTO_ICMPV6 if b.v6 else PROTO_ICMP
        # data is the sequence number and payload; the identifier is the port.
        slot = netif_begin(t.netif, b.v6, src, dst, proto, 6 + length, &l4)
        if slot == NULL:
            return ENOBUFS
        l4[0] = ICMP6_ECHO_REQUEST if b.v6 else ICMP4_ECHO_REQUEST
        l4[1] = 0
        store_be16(l4 + 4, b.port)
        memcpy(l4 + 6, data, length)
        netif_finish(t.netif, slot, b.v6, proto, l4, 6 + length, 2)
        return 0
    slot = netif_begin(t.netif, b.v6, src, dst, PROTO_UDP, UDP_HEADER + length, &l4)
    if slot == NULL:
        return ENOBUFS
    store_be16(l4, b.port)
    store_be16(l4 + 2, dport)
    store_be16(l4 + 4, UDP_HEADER + length)
    memcpy(l4 + UDP_HEADER, data, length)
    netif_finish(t.netif, slot, b.v6, PROTO_UDP, l4, UDP_HEADER + length, 6)
    return 0
