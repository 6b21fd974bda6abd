# cython: language_level=3
"""TCP for the network stack (see _tcp.pxd for what is implemented and who calls)."""
from libc.errno cimport ECONNREFUSED, ECONNRESET, ETIMEDOUT, EADDRINUSE, EADDRNOTAVAIL, ENOMEM, ECONNABORTED
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcpy, memset, memcmp

from wgc._bytes cimport load_be16, store_be16, load_be32, store_be32
from wgc._checksum cimport PROTO_TCP
from wgc._crypto cimport siphash
from wgc.netstack._ip cimport Addr, Parsed, l4_checksum_ok
from wgc.netstack._netif cimport Netif, netif_begin, netif_finish

cdef extern from * nogil:
    """
    #define WGC_MIN(a, b) ((a) < (b) ? (a) : (b))
    #define WGC_MAX(a, b) ((a) > (b) ? (a) : (b))
    """
    int64_t MIN64 "WGC_MIN"(int64_t a, int64_t b)
    uint32_t MINU "WGC_MIN"(uint32_t a, uint32_t b)
    uint32_t MAXU "WGC_MAX"(uint32_t a, uint32_t b)

cdef enum:
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    HEADER = 20
    OPT_END = 0
    OPT_NOP = 1
    OPT_MSS = 2
    OPT_WSCALE = 3
    OPT_SACK_OK = 4
    OPT_SACK = 5
    OPT_TIMESTAMP = 8
    WSCALE_MAX = 14                # RFC 7323 2.3
    MSS_DEFAULT = 536              # without an MSS option (RFC 9293 3.7.1)
    MSS_MIN = 88                   # what we accept from a peer (Linux's floor)
    SYN_RETRIES = 6                # Linux's tcp_syn_retries
    SYNACK_RETRIES = 5             # tcp_synack_retries
    DATA_RETRIES = 15              # tcp_retries2
    CHALLENGE_PER_SECOND = 1000    # Linux's former tcp_challenge_ack_limit
    EPHEMERAL_FIRST = 32768        # Linux's ip_local_port_range
    EPHEMERAL_COUNT = 61000 - 32768
    INITIAL_BUCKETS = 256
    DUPACK_THRESHOLD = 3
    INITIAL_WINDOW = 10            # segments (RFC 6928)

cdef int64_t MS = 1000000
cdef int64_t SECOND = 1000000000
cdef int64_t RTO_INITIAL = SECOND             # RFC 6298 2.1
cdef int64_t RTO_MIN = 200 * MS               # Linux's floor (RFC 6298 asks 1 s; see the README)
cdef int64_t RTO_MAX = 120 * SECOND           # Linux's TCP_RTO_MAX
cdef int64_t DELAYED_ACK = 40 * MS            # Linux's minimum delayed-ACK time
cdef int64_t PROBE_MIN = 10 * MS              # the tail loss probe waits at least this (Linux's TLP floor)
cdef int64_t WORST_DELAYED_ACK = 200 * MS     # RFC 8985's WCDelAckT
cdef int64_t REORDER_MAX = 100 * MS           # the most RACK's reordering window waits
cdef int64_t TIME_WAIT_TIME = 60 * SECOND     # 2 MSL, as Linux
cdef int64_t TRIM_IDLE = SECOND               # empty rings are freed after this
cdef int64_t FIN_WAIT_2_TIME = 60 * SECOND    # an orphaned FIN_WAIT_2 ends (Linux's tcp_fin_timeout)


# ---- sequence numbers -------------------------------------------------------

cdef inline bint lt(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) < 0

cdef inline bint le(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) <= 0

cdef inline bint gt(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) > 0

cdef inline bint ge(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) >= 0


# ---- rings ----------------------------------------------------------------

cdef bint ring_reserve(TcpTable *t, Ring *r, uint32_t needed) noexcept nogil:
    """Makes the ring's memory hold at least `needed` bytes from its head,
    growing by doubling within its capacity and the table's cap."""
    cdef uint32_t size, first
    cdef uint8_t *data
    if needed <= r.size:
        return True
    if needed > r.capacity:
        return False
    size = r.size if r.size else MINU(TCP_RING_FIRST, r.capacity)
    while size < needed:
        size = MINU(size * 2, r.capacity)
    if t.memory + size - r.size > t.memory_max:
        t.memory_short = True
        return False
    data = <uint8_t *>malloc(size)
    if data == NULL:
        return False
    if r.data != NULL:
        # Unwrapped, so that the byte at offset k from the head is at k.
        first = r.size - r.head
        memcpy(data, r.data + r.head, first)
        memcpy(data + first, r.data, r.head)
        free(r.data)
    t.memory += size - r.size
    r.data = data
    r.size = size
    r.head = 0
    return True

cdef void ring_release(TcpTable *t, Ring *r) noexcept nogil:
    if r.data != NULL:
        free(r.data)
        r.data = NULL
        t.memory -= r.size
        if t.memory_short:
            memory_freed(t)
    r.size = 0
    r.head = 0
    r.length = 0

cdef void ring_read(const Ring *r, uint32_t offset, uint8_t *out, uint32_t n) noexcept nogil:
    cdef uint32_t at = (r.head + offset) % r.size
    cdef uint32_t first = MINU(n, r.size - at)
    memcpy(out, r.data + at, first)
    if n > first:
        memcpy(out + first, r.data, n - first)

cdef void ring_write(Ring *r, uint32_t offset, const uint8_t *data, uint32_t n) noexcept nogil:
    cdef uint32_t at = (r.head + offset) % r.size
    cdef uint32_t first = MINU(n, r.size - at)
    memcpy(r.data + at, data, first)
    if n > first:
        memcpy(r.data, data + first, n - first)

cdef void ring_drop(Ring *r, uint32_t n) noexcept nogil:
    if n:
        r.head = (r.head + n) % r.size
        r.length -= n


# ---- keyed hashes (RFC 6528, RFC 6056) ----------------------------------------

cdef uint64_t flow_hash(const Netif *n, uint8_t domain, bint v6, const Addr *local, uint16_t lport,
                        const Addr *remote, uint16_t rport) noexcept nogil:
    cdef uint8_t buf[38]
    buf[0] = domain
    buf[1] = v6
    memcpy(buf + 2, local.b, 16)
    memcpy(buf + 18, remote.b, 16)
    store_be16(buf + 34, lport)
    store_be16(buf + 36, rport)
    return siphash(n.secret, buf, 38)

cdef enum:
    HASH_BUCKET = 1
    HASH_ISN = 2
    HASH_TS = 3
    HASH_PORT = 4


# ---- the connection table ----------------------------------------------------

cdef int tcp_init(TcpTable *t, Netif *netif) noexcept nogil:
    memset(t, 0, sizeof(TcpTable))
    t.netif = netif
    t.buckets = <Tcb **>calloc(INITIAL_BUCKETS, sizeof(Tcb *))
    t.heap_capacity = 64
    t.heap = <Tcb **>malloc(t.heap_capacity * sizeof(Tcb *))
    if t.buckets == NULL or t.heap == NULL:
        free(t.buckets)
        free(t.heap)
        return -1
    t.bucket_mask = INITIAL_BUCKETS - 1
    t.memory_max = TCP_MEMORY_DEFAULT
    t.buffer = TCP_BUFFER_DEFAULT
    return 0

cdef void tcb_free(TcpTable *t, Tcb *c) noexcept nogil:
    ring_release(t, &c.snd)
    ring_release(t, &c.rcv)
    free(c)

cdef void tcp_free(TcpTable *t) noexcept nogil:
    cdef uint32_t i
    cdef Tcb *c
    cdef Tcb *next
    reap(t)
    if t.buckets != NULL:
        for i in range(t.bucket_mask + 1):
            c = t.buckets[i]
            while c != NULL:
                next = c.hash_next
                tcb_free(t, c)
                c = next
    c = t.listeners
    while c != NULL:
        next = c.hash_next
        tcb_free(t, c)
        c = next
    free(t.buckets)
    free(t.heap)
    t.buckets = NULL
    t.heap = NULL

cdef inline uint32_t bucket_of(const TcpTable *t, bint v6, const Addr *local, uint16_t lport,
                               const Addr *remote, uint16_t rport) noexcept nogil:
    return <uint32_t>flow_hash(t.netif, HASH_BUCKET, v6, local, lport, remote, rport) & t.bucket_mask

cdef Tcb *lookup(TcpTable *t, bint v6, const Addr *local, uint16_t lport, const Addr *remote,
                 uint16_t rport) noexcept nogil:
    cdef Tcb *c = t.buckets[bucket_of(t, v6, local, lport, remote, rport)]
    while c != NULL:
        if (c.lport == lport and c.rport == rport and c.v6 == v6
                and memcmp(c.remote.b, remote.b, 16) == 0 and memcmp(c.local.b, local.b, 16) == 0):
            return c
        c = c.hash_next
    return NULL

cdef Tcb *lookup_listener(TcpTable *t, bint v6, const Addr *local, uint16_t lport) noexcept nogil:
    """The listener for a local address and port: one bound to the address
    wins over a wildcard one."""
    cdef Tcb *c = t.listeners
    cdef Tcb *wildcard = NULL
    cdef Addr any
    memset(&any, 0, sizeof(Addr))
    while c != NULL:
        if c.lport == lport and c.v6 == v6:
            if memcmp(c.local.b, local.b, 16) == 0:
                return c
            if memcmp(c.local.b, any.b, 16) == 0:
                wildcard = c
        c = c.hash_next
    return wildcard

cdef void grow(TcpTable *t) noexcept nogil:
    cdef uint32_t size = (t.bucket_mask + 1) * 2, i, b
    cdef Tcb **old = t.buckets
    cdef uint32_t old_size = t.bucket_mask + 1
    cdef Tcb *c
    cdef Tcb *next
    cdef Tcb **buckets = <Tcb **>calloc(size, sizeof(Tcb *))
    if buckets == NULL:
        return                     # longer chains, still correct
    t.buckets = buckets
    t.bucket_mask = size - 1
    for i in range(old_size):
        c = old[i]
        while c != NULL:
            next = c.hash_next
            b = bucket_of(t, c.v6, &c.local, c.lport, &c.remote, c.rport)
            c.hash_next = buckets[b]
            buckets[b] = c
            c = next
    free(old)

cdef void table_insert(TcpTable *t, Tcb *c) noexcept nogil:
    cdef uint32_t b
    if t.count > t.bucket_mask:
        grow(t)
    b = bucket_of(t, c.v6, &c.local, c.lport, &c.remote, c.rport)
    c.hash_next = t.buckets[b]
    t.buckets[b] = c
    c.in_table = True
    t.count += 1

cdef void table_remove(TcpTable *t, Tcb *c) noexcept nogil:
    cdef Tcb **link
    if not c.in_table:
        return
    if c.state == TCP_LISTEN:
        link = &t.listeners
    else:
        link = &t.buckets[bucket_of(t, c.v6, &c.local, c.lport, &c.remote, c.rport)]
        t.count -= 1
    while link[0] != NULL:
        if link[0] == c:
            link[0] = c.hash_next
            break
        link = &link[0].hash_next
    c.in_table = False


# ---- the timer heap ------------------------------------------------------

cdef inline void heap_set(TcpTable *t, uint32_t i, Tcb *c) noexcept nogil:
    t.heap[i] = c
    c.heap_at = i

cdef void heap_sift_up(TcpTable *t, uint32_t i) noexcept nogil:
    cdef Tcb *c = t.heap[i]
    cdef uint32_t parent
    while i > 0:
        parent = (i - 1) // 2
        if t.heap[parent].deadline <= c.deadline:
            break
        heap_set(t, i, t.heap[parent])
        i = parent
    heap_set(t, i, c)

cdef void heap_sift_down(TcpTable *t, uint32_t i) noexcept nogil:
    cdef Tcb *c = t.heap[i]
    cdef uint32_t child
    while True:
        child = 2 * i + 1
        if child >= t.heap_count:
            break
        if child + 1 < t.heap_count and t.heap[child + 1].deadline < t.heap[child].deadline:
            child += 1
        if c.deadline <= t.heap[child].deadline:
            break
        heap_set(t, i, t.heap[child])
        i = child
    heap_set(t, i, c)

cdef void heap_remove(TcpTable *t, Tcb *c) noexcept nogil:
    cdef uint32_t i = c.heap_at
    cdef Tcb *last
    if c.heap_at < 0:
        return
    c.heap_at = -1
    t.heap_count -= 1
    if i == t.heap_count:
        return
    last = t.heap[t.heap_count]
    heap_set(t, i, last)
    heap_sift_up(t, i)
    heap_sift_down(t, last.heap_at)

cdef void timer_update(TcpTable *t, Tcb *c) noexcept nogil:
    """Files the connection under its earliest armed timer."""
    cdef int64_t d = 0
    cdef int64_t candidates[8]
    cdef int i
    cdef Tcb **heap
    candidates[0] = c.rto_at
    candidates[1] = c.delack_at
    candidates[2] = c.persist_at
    candidates[3] = c.keepalive_at
    candidates[4] = c.close_at
    candidates[5] = c.trim_at
    candidates[6] = c.probe_at
    candidates[7] = c.reorder_at
    for i in range(8):
        if candidates[i] and (d == 0 or candidates[i] < d):
            d = candidates[i]
    if d == 0:
        heap_remove(t, c)
        c.deadline = 0
        return
    if c.heap_at < 0:
        if t.heap_count == t.heap_capacity:
            heap = <Tcb **>realloc(t.heap, 2 * t.heap_capacity * sizeof(Tcb *))
            if heap == NULL:
                return             # its timers wait for the next update
            t.heap = heap
            t.heap_capacity *= 2
        c.deadline = d
        heap_set(t, t.heap_count, c)
        t.heap_count += 1
        heap_sift_up(t, c.heap_at)
        return
    c.deadline = d
    heap_sift_up(t, c.heap_at)
    heap_sift_down(t, c.heap_at)

cdef int64_t tcp_next_deadline(const TcpTable *t) noexcept nogil:
    return t.heap[0].deadline if t.heap_count else 0


# ---- events for the I/O edge --------------------------------------------

cdef void notify(TcpTable *t, Tcb *c, uint32_t events) noexcept nogil:
    c.events |= events
    if c.user_holds and not c.on_ready:
        c.on_ready = True
        c.ready_next = NULL
        if t.ready_tail != NULL:
            t.ready_tail.ready_next = c
        else:
            t.ready_head = c
        t.ready_tail = c

cdef void memory_freed(TcpTable *t) noexcept nogil:
    """Ring memory came back under the cap: senders that met it may try again."""
    cdef uint32_t i
    cdef Tcb *c
    t.memory_short = False
    for i in range(t.bucket_mask + 1):
        c = t.buckets[i]
        while c != NULL:
            if c.wants_memory:
                c.wants_memory = False
                notify(t, c, TCP_EV_WRITE)
            c = c.hash_next

cdef Tcb *tcp_ready(TcpTable *t) noexcept nogil:
    cdef Tcb *c = t.ready_head
    if c != NULL:
        t.ready_head = c.ready_next
        if t.ready_head == NULL:
            t.ready_tail = NULL
        c.on_ready = False
        c.ready_next = NULL
    return c

cdef void ready_unlink(TcpTable *t, Tcb *c) noexcept nogil:
    cdef Tcb *prev = NULL
    cdef Tcb *x = t.ready_head
    while x != NULL and x != c:
        prev = x
        x = x.ready_next
    if x == NULL:
        return
    if prev == NULL:
        t.ready_head = c.ready_next
    else:
        prev.ready_next = c.ready_next
    if t.ready_tail == c:
        t.ready_tail = prev
    c.on_ready = False


# ---- a connection's life -------------------------------------------------

cdef Tcb *tcb_new(TcpTable *t, bint v6, const Addr *local, uint16_t lport, const Addr *remote,
                  uint16_t rport, int64_t now) noexcept nogil:
    cdef Tcb *c = <Tcb *>calloc(1, sizeof(Tcb))
    cdef uint32_t ip_header = 40 if v6 else 20
    if c == NULL:
        return NULL
    c.v6 = v6
    c.local = local[0]
    c.remote = remote[0]
    c.lport = lport
    c.rport = rport
    c.heap_at = -1
    c.snd.capacity = t.buffer
    c.rcv.capacity = t.buffer
    c.rcv_wscale = 0
    while c.rcv_wscale < WSCALE_MAX and (<uint64_t>65535 << c.rcv_wscale) < c.rcv.capacity:
        c.rcv_wscale += 1
    c.mss = t.netif.mtu - ip_header - HEADER
    c.rto = RTO_INITIAL
    c.ssthresh = 0xffffffff
    c.keep_idle = 7200
    c.keep_interval = 75
    c.keep_count = 9
    c.last_heard = now
    c.iss = <uint32_t>(now // 4000) + <uint32_t>flow_hash(t.netif, HASH_ISN, v6, local, lport, remote, rport)
    c.recover = c.high_rxt = c.iss
    c.ts_offset = <uint32_t>flow_hash(t.netif, HASH_TS, v6, local, lport, remote, rport)
    return c

cdef void finish(TcpTable *t, Tcb *c, int error) noexcept nogil:
    """The connection is over: out of the table, timers off, the user told;
    freed now unless the user still holds it."""
    cdef Tcb *parent = c.parent
    cdef Tcb **link
    if c.state == TCP_TIME_WAIT and t.time_wait_count:
        t.time_wait_count -= 1
    if parent != NULL:
        if c.state == TCP_SYN_RECEIVED:
            parent.half_open -= 1
        else:
            link = &parent.accept_head
            while link[0] != NULL and link[0] != c:
                link = &link[0].queue_next
            if link[0] == c:
                link[0] = c.queue_next
                parent.accept_count -= 1
                if parent.accept_tail == c:
                    parent.accept_tail = parent.accept_head
                    while parent.accept_tail != NULL and parent.accept_tail.queue_next != NULL:
                        parent.accept_tail = parent.accept_tail.queue_next
        c.parent = NULL
    table_remove(t, c)
    c.rto_at = c.delack_at = c.persist_at = c.keepalive_at = c.close_at = c.trim_at = 0
    c.probe_at = c.reorder_at = 0
    heap_remove(t, c)
    c.state = TCP_CLOSED
    if error and not c.error:
        c.error = error
    ring_release(t, &c.snd)
    if c.ack_queued:
        unqueue_ack(t, c)
    if not c.user_holds:
        # Callers up the stack may still look at c: it is freed on the way out (reap).
        c.hash_next = t.graveyard
        t.graveyard = c
        return
    notify(t, c, TCP_EV_CLOSED | TCP_EV_READ | TCP_EV_WRITE)

cdef void unqueue_ack(TcpTable *t, Tcb *c) noexcept nogil:
    cdef Tcb **link = &t.acks
    while link[0] != NULL:
        if link[0] == c:
            link[0] = c.ack_next
            break
        link = &link[0].ack_next
    c.ack_queued = False

cdef void tcp_flush_acks(TcpTable *t, int64_t now) noexcept nogil:
    cdef Tcb *c
    while t.acks != NULL:
        c = t.acks
        t.acks = c.ack_next
        c.ack_queued = False
        if c.segments_unacked and (c.state == TCP_ESTABLISHED or c.state == TCP_FIN_WAIT_1
                                   or c.state == TCP_FIN_WAIT_2):
            send_ack(t, c, now)
            timer_update(t, c)

cdef void reap(TcpTable *t) noexcept nogil:
    """Frees the connections that ended unheld during this entry point: each
    public entry point that can end a connection (tcp_input, tcp_timers,
    tcp_close, ...) calls its internal twin, then this."""
    cdef Tcb *c
    while t.graveyard != NULL:
        c = t.graveyard
        t.graveyard = c.hash_next
        tcb_free(t, c)

cdef void enter_time_wait(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    c.rto_at = c.persist_at = c.keepalive_at = c.delack_at = 0
    if t.time_wait_count >= TCP_TIME_WAIT_MAX:
        finish(t, c, 0)
        return
    c.state = TCP_TIME_WAIT
    t.time_wait_count += 1
    c.close_at = now + TIME_WAIT_TIME
    ring_release(t, &c.snd)
    notify(t, c, TCP_EV_CLOSED | TCP_EV_READ | TCP_EV_WRITE)


# ---- segments ----------------------------------------------------------

cdef struct Segment:
    uint32_t seq, ack, wnd
    uint8_t flags
    const uint8_t *data
    uint32_t length                # payload bytes
    uint32_t mss                   # 0: no option
    int wscale                     # -1: no option
    bint sack_ok
    bint has_ts
    uint32_t tsval, tsecr
    SeqRange sacks[4]              # SACK blocks (RFC 2018: at most four fit)
    uint32_t nsacks

cdef int parse_segment(const uint8_t *packet, const Parsed *p, Segment *s) noexcept nogil:
    cdef const uint8_t *h = packet + p.l4_at
    cdef uint32_t l4 = p.length - p.l4_at, offset, i, kind, size
    if l4 < HEADER:
        return -1
    offset = (h[12] >> 4) * 4
    if offset < HEADER or offset > l4:
        return -1
    s.seq = load_be32(h + 4)
    s.ack = load_be32(h + 8)
    s.flags = h[13]
    s.wnd = load_be16(h + 14)
    s.data = h + offset
    s.length = l4 - offset
    s.mss = 0
    s.wscale = -1
    s.sack_ok = False
    s.has_ts = False
    s.nsacks = 0
    i = HEADER
    while i < offset:
        kind = h[i]
        if kind == OPT_END:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= offset:
            break
        size = h[i + 1]
        if size < 2 or i + size > offset:
            break                  # a malformed list: keep what came before
        if kind == OPT_MSS and size == 4:
            s.mss = load_be16(h + i + 2)
        elif kind == OPT_WSCALE and size == 3:
            s.wscale = h[i + 2] if h[i + 2] <= WSCALE_MAX else WSCALE_MAX
        elif kind == OPT_SACK_OK and size == 2:
            s.sack_ok = True
        elif kind == OPT_TIMESTAMP and size == 10:
            s.has_ts = True
            s.tsval = load_be32(h + i + 2)
            s.tsecr = load_be32(h + i + 6)
        elif kind == OPT_SACK and size >= 10 and (size - 2) % 8 == 0:
            while s.nsacks < (size - 2) // 8 and s.nsacks < 4:
                s.sacks[s.nsacks].start = load_be32(h + i + 2 + 8 * s.nsacks)
                s.sacks[s.nsacks].end = load_be32(h + i + 6 + 8 * s.nsacks)
                s.nsacks += 1
        i += size
    return 0

cdef inline uint32_t ts_now(const Tcb *c, int64_t now) noexcept nogil:
    return <uint32_t>(now // MS) + c.ts_offset

cdef uint32_t receive_window(const Tcb *c) noexcept nogil:
    """Free bytes in the receive ring, never less than what we advertised
    (a window does not shrink, RFC 9293 3.8.6)."""
    cdef uint32_t space = c.rcv.capacity - c.rcv.length
    if c.state >= TCP_ESTABLISHED and lt(c.rcv_nxt + space, c.rcv_adv):
        space = c.rcv_adv - c.rcv_nxt
    return space

cdef uint32_t options_size(const Tcb *c, uint8_t flags) noexcept nogil:
    cdef uint32_t size = 0
    if flags & SYN:
        return 20                  # MSS 4, SACK-permitted 2 + TS 10, NOP + WS 3, padding 1
    if c.ts_ok:
        size = 12
    if c.sack_ok and c.ooo_count and flags & ACK:
        size += 4 + 8 * MINU(c.ooo_count, 3 if c.ts_ok else 4)
    return size

cdef int send_segment(TcpTable *t, Tcb *c, uint32_t seq, uint32_t length, uint8_t flags,
                      int64_t now) noexcept nogil:
    """One segment of the connection: length payload bytes from the send ring
    at seq.  -1 when the sink is full."""
    cdef uint32_t opts = options_size(c, flags), window, i, blocks, at
    cdef uint8_t *l4
    cdef uint8_t *slot
    cdef uint8_t *o
    slot = netif_begin(t.netif, c.v6, &c.local, &c.remote, PROTO_TCP, HEADER + opts + length, &l4)
    if slot == NULL:
        t.blocked = True
        return -1
    store_be16(l4, c.lport)
    store_be16(l4 + 2, c.rport)
    store_be32(l4 + 4, seq)
    store_be32(l4 + 8, c.rcv_nxt if flags & ACK else 0)
    l4[12] = ((HEADER + opts) // 4) << 4
    l4[13] = flags
    window = receive_window(c)
    if flags & SYN:
        window = MINU(window, 65535)
    else:
        window = MINU((window + (1u << c.rcv_wscale) - 1) >> c.rcv_wscale, 65535)
    store_be16(l4 + 14, window)
    store_be16(l4 + 18, 0)
    o = l4 + HEADER
    if flags & SYN:
        o[0] = OPT_MSS
        o[1] = 4
        store_be16(o + 2, t.netif.mtu - (40 if c.v6 else 20) - HEADER)
        o[4] = OPT_SACK_OK
        o[5] = 2
        o[6] = OPT_TIMESTAMP
        o[7] = 10
        store_be32(o + 8, ts_now(c, now))
        store_be32(o + 12, c.ts_recent if flags & ACK else 0)
        o[16] = OPT_NOP
        o[17] = OPT_WSCALE
        o[18] = 3
        o[19] = c.rcv_wscale
        if flags & ACK:
            # A SYN-ACK echoes only what the SYN offered (RFC 7323 2.2, 1.3; RFC 2018).
            if not c.sack_ok:
                o[4] = OPT_NOP
                o[5] = OPT_NOP
            if not c.ts_ok:
                memset(o + 6, OPT_NOP, 10)
            if c.snd_wscale == 0 and c.rcv_wscale == 0:
                memset(o + 16, OPT_NOP, 4)
    else:
        if c.ts_ok:
            o[0] = OPT_NOP
            o[1] = OPT_NOP
            o[2] = OPT_TIMESTAMP
            o[3] = 10
            store_be32(o + 4, ts_now(c, now))
            store_be32(o + 8, c.ts_recent)
            o += 12
        if c.sack_ok and c.ooo_count and flags & ACK:
            blocks = MINU(c.ooo_count, 3 if c.ts_ok else 4)
            o[0] = OPT_NOP
            o[1] = OPT_NOP
            o[2] = OPT_SACK
            o[3] = 2 + 8 * blocks
            for i in range(blocks):
                store_be32(o + 4 + 8 * i, c.ooo[i].start)
                store_be32(o + 8 + 8 * i, c.ooo[i].end)
    if length:
        ring_read(&c.snd, seq - c.snd_una, l4 + HEADER + opts, length)
    netif_finish(t.netif, slot, c.v6, PROTO_TCP, l4, HEADER + opts + length, 16)
    if flags & ACK:
        c.last_ack_sent = c.rcv_nxt
        c.rcv_adv = c.rcv_nxt + (window << (0 if flags & SYN else c.rcv_wscale))
        c.segments_unacked = 0
        c.ack_now = False
        c.delack_at = 0
    return 0

cdef void send_reset_for(TcpTable *t, const uint8_t *packet, const Parsed *p, const Segment *s) noexcept nogil:
    """The RST that answers a segment no connection takes (RFC 9293 3.10.7.1)."""
    cdef uint8_t *l4
    cdef uint8_t *slot
    cdef const uint8_t *h = packet + p.l4_at
    if s.flags & RST:
        return
    slot = netif_begin(t.netif, p.v6, &p.dst, &p.src, PROTO_TCP, HEADER, &l4)
    if slot == NULL:
        return
    memset(l4, 0, HEADER)
    memcpy(l4, h + 2, 2)
    memcpy(l4 + 2, h, 2)
    if s.flags & ACK:
        store_be32(l4 + 4, s.ack)
        l4[13] = RST
    else:
        store_be32(l4 + 8, s.seq + s.length + (1 if s.flags & SYN else 0) + (1 if s.flags & FIN else 0))
        l4[13] = RST | ACK
    l4[12] = (HEADER // 4) << 4
    netif_finish(t.netif, slot, p.v6, PROTO_TCP, l4, HEADER, 16)

cdef void send_ack(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    """A pure ACK carries the highest sequence number sent, not snd_nxt:
    after a timeout snd_nxt goes back, and an ACK numbered below what the
    peer has received would be refused as out of window (BSD does the same)."""
    send_segment(t, c, c.snd_max, 0, ACK, now)

cdef void send_probe(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    """A segment the peer must answer with an ACK (one it has seen before):
    keepalives and zero-window probes, as Linux sends them."""
    send_segment(t, c, c.snd_una - 1, 0, ACK, now)

cdef void challenge_ack(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    """RFC 5961's answer to a suspicious segment, within a budget per second."""
    cdef int64_t second = now // SECOND
    if second != t.challenge_second:
        t.challenge_second = second
        t.challenge_count = 0
    if t.challenge_count < CHALLENGE_PER_SECOND:
        t.challenge_count += 1
        send_ack(t, c, now)


# ---- sending ------------------------------------------------------------

cdef inline uint32_t flight(const Tcb *c) noexcept nogil:
    return c.snd_nxt - c.snd_una

cdef inline bint fin_sent(const Tcb *c) noexcept nogil:
    return c.fin_wanted and c.snd_max == c.snd_una + c.snd.length + 1

cdef void arm_rto(Tcb *c, int64_t now) noexcept nogil:
    c.rto_at = now + MIN64(c.rto << c.backoff, RTO_MAX)

cdef void arm_probe(Tcb *c, int64_t now) noexcept nogil:
    """A tail loss probe two round trips out (RACK-TLP, RFC 8985 7.2), if
    that comes before the RTO: a lost last segment then costs a probe and a
    fast recovery instead of a timeout."""
    cdef int64_t wait = 2 * c.srtt if 2 * c.srtt > PROBE_MIN else PROBE_MIN
    if flight(c) <= c.mss:
        wait += WORST_DELAYED_ACK  # one segment out: its ACK may be a delayed one (RFC 8985 7.2)
    c.probe_at = 0
    if c.srtt and not c.probed and not c.in_recovery and c.snd_una != c.snd_max and now + wait < c.rto_at:
        c.probe_at = now + wait

cdef void on_probe(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    """RFC 8985 7.3: new data if the windows allow, else the last segment again."""
    cdef uint32_t size, unsent, offset = c.snd_nxt - c.snd_una
    c.probe_at = 0
    if c.probed or c.in_recovery or c.snd_una == c.snd_max:
        return
    c.probed = True
    unsent = c.snd.length - offset if offset < c.snd.length else 0
    size = MINU(unsent, c.mss - options_size(c, ACK))
    if size and c.snd_wnd > flight(c):
        send_segment(t, c, c.snd_nxt, size, ACK | PSH, now)
        c.snd_nxt += size
        if gt(c.snd_nxt, c.snd_max):
            c.snd_max = c.snd_nxt
        return
    size = MINU(c.snd_max - c.snd_una - (1 if fin_sent(c) else 0), c.mss - options_size(c, ACK))
    if size:
        send_segment(t, c, c.snd_max - (1 if fin_sent(c) else 0) - size, size, ACK, now)
    c.rtt_time = 0

cdef void output(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    """Sends what the windows allow: data, then a FIN, else a due ACK."""
    cdef uint32_t window, unsent, size, payload_max, offset
    cdef uint8_t flags
    cdef bint sent = False
    if c.state < TCP_ESTABLISHED and c.state != TCP_SYN_RECEIVED:
        return
    if c.state == TCP_SYN_RECEIVED or c.state == TCP_TIME_WAIT:
        if c.ack_now:
            send_ack(t, c, now)
        return
    while True:
        offset = c.snd_nxt - c.snd_una
        unsent = c.snd.length - offset if offset < c.snd.length else 0
        # Limited Transmit (RFC 3042): a new segment for each of the first
        # two duplicate ACKs keeps the ACK clock of a small window going.
        window = MINU(c.snd_wnd, c.cwnd + (c.dupacks * c.mss if not c.in_recovery and c.dupacks < DUPACK_THRESHOLD
                                            else 0))
        window = window - flight(c) if window > flight(c) else 0
        payload_max = c.mss - options_size(c, ACK)
        size = MINU(MINU(unsent, window), payload_max)
        flags = ACK
        if size == 0:
            # The FIN goes (again, after a timeout) once every byte is out.
            if c.fin_wanted and not c.fin_acked and unsent == 0 and c.snd_nxt == c.snd_una + c.snd.length:
                if send_segment(t, c, c.snd_nxt, 0, FIN | ACK, now) < 0:
                    return
                c.snd_nxt += 1
                if gt(c.snd_nxt, c.snd_max):
                    c.snd_max = c.snd_nxt
                sent = True
            break
        # Small new segments wait while others are in flight (their ACK
        # comes): cut short by the window (sender SWS avoidance), or by
        # Nagle.  Bytes sent before (after a timeout) always go.
        if size < payload_max and flight(c) and ge(c.snd_nxt, c.snd_max):
            if size < unsent:
                break
            if not c.nodelay and not c.fin_wanted:
                break
        if size == unsent:
            flags |= PSH
            if c.fin_wanted:
                flags |= FIN
        if send_segment(t, c, c.snd_nxt, size, flags, now) < 0:
            return
        if c.rtt_time == 0 and not c.ts_ok and c.snd_nxt == c.snd_max:
            c.rtt_seq = c.snd_nxt
            c.rtt_time = now
        c.snd_nxt += size + (1 if flags & FIN else 0)
        if gt(c.snd_nxt, c.snd_max):
            c.snd_max = c.snd_nxt
        sent = True
        if flags & FIN:
            break
    if sent:
        if c.rto_at == 0:
            arm_rto(c, now)
        arm_probe(c, now)
        c.persist_at = 0
    elif c.ack_now:
        send_ack(t, c, now)
    if (c.snd_wnd == 0 and flight(c) == 0 and c.snd.length > c.snd_nxt - c.snd_una
            and c.rto_at == 0 and c.persist_at == 0):
        c.persist_at = now + MIN64(c.rto << c.backoff, RTO_MAX)

cdef void scoreboard_update(Tcb *c, const Segment *s) noexcept nogil:
    """Forgets what snd_una passed, then merges the segment's SACK blocks that
    lie within (snd_una, snd_max] (others are stale or forged: ignored)."""
    cdef uint32_t i, j, k
    cdef SeqRange r
    i = 0
    while i < c.sacked_count:
        if le(c.sacked[i].end, c.snd_una):
            for j in range(i, c.sacked_count - 1):
                c.sacked[j] = c.sacked[j + 1]
            c.sacked_count -= 1
        else:
            if lt(c.sacked[i].start, c.snd_una):
                c.sacked[i].start = c.snd_una
            i += 1
    if not c.sack_ok:
        return
    for k in range(s.nsacks):
        r = s.sacks[k]
        if not (lt(r.start, r.end) and gt(r.start, c.snd_una) and le(r.end, c.snd_max)):
            continue
        # Insert in order, then merge neighbours that touch.
        i = 0
        while i < c.sacked_count and lt(c.sacked[i].start, r.start):
            i += 1
        if c.sacked_count == TCP_SACKED_MAX:
            if i == TCP_SACKED_MAX:
                continue           # the highest ranges matter least for the holes below
            c.sacked_count -= 1
        for j in range(c.sacked_count, i, -1):
            c.sacked[j] = c.sacked[j - 1]
        c.sacked[i] = r
        c.sacked_count += 1
        i = 0
        while i + 1 < c.sacked_count:
            if ge(c.sacked[i].end, c.sacked[i + 1].start):
                if gt(c.sacked[i + 1].end, c.sacked[i].end):
                    c.sacked[i].end = c.sacked[i + 1].end
                for j in range(i + 1, c.sacked_count - 1):
                    c.sacked[j] = c.sacked[j + 1]
                c.sacked_count -= 1
            else:
                i += 1

cdef uint32_t dupack_threshold(const Tcb *c) noexcept nogil:
    """Three, or fewer when fewer segments are out and none waits to go
    (Early Retransmit, RFC 5827): a small window cannot bring three."""
    cdef uint32_t segments = (flight(c) + c.mss - 1) // c.mss
    cdef uint32_t offset = c.snd_nxt - c.snd_una
    if segments < DUPACK_THRESHOLD + 1 and c.snd.length <= offset and segments > 1:
        return segments - 1
    return DUPACK_THRESHOLD

cdef uint32_t sacked_bytes(const Tcb *c) noexcept nogil:
    cdef uint32_t i, total = 0
    for i in range(c.sacked_count):
        total += c.sacked[i].end - c.sacked[i].start
    return total

cdef bint retransmit_hole(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    """Sends again the next hole below the highest SACKed byte that was not
    sent again yet in this recovery (one segment); False when none is left."""
    cdef uint32_t at = c.high_rxt, i, end, size
    if lt(at, c.snd_una):
        at = c.snd_una
    for i in range(c.sacked_count):
        if lt(at, c.sacked[i].start):
            end = c.sacked[i].start
            size = MINU(end - at, c.mss - options_size(c, ACK))
            if send_segment(t, c, at, size, ACK, now) < 0:
                return False
            c.high_rxt = at + size
            c.rtt_time = 0
            return True
        if lt(at, c.sacked[i].end):
            at = c.sacked[i].end
    return False

cdef void retransmit_first(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    """Sends again the first unacknowledged segment (fast retransmit, partial ACKs)."""
    cdef uint32_t size = MINU(c.snd.length, c.mss - options_size(c, ACK))
    cdef uint8_t flags = ACK
    if size == c.snd.length and fin_sent(c):
        flags |= FIN
    if size == 0 and not flags & FIN:
        return
    send_segment(t, c, c.snd_una, size, flags, now)
    if lt(c.high_rxt, c.snd_una + size):
        c.high_rxt = c.snd_una + size
    c.rtt_time = 0                 # Karn: no sample from a retransmission


# ---- receiving -----------------------------------------------------------

cdef void rtt_sample(Tcb *c, int64_t sample) noexcept nogil:
    """RFC 6298 section 2."""
    cdef int64_t delta
    if sample <= 0:
        sample = 1
    if c.srtt == 0:
        c.srtt = sample
        c.rttvar = sample // 2
    else:
        delta = c.srtt - sample
        if delta < 0:
            delta = -delta
        c.rttvar = (3 * c.rttvar + delta) // 4
        c.srtt = (7 * c.srtt + sample) // 8
    c.rto = c.srtt + (4 * c.rttvar if 4 * c.rttvar > MS else MS)
    if c.rto < RTO_MIN:
        c.rto = RTO_MIN
    if c.rto > RTO_MAX:
        c.rto = RTO_MAX

cdef bint segment_acceptable(const Tcb *c, const Segment *s) noexcept nogil:
    """RFC 9293 3.10.7.4, first check, with the receive window we have."""
    cdef uint32_t window = c.rcv.capacity - c.rcv.length
    cdef uint32_t length = s.length + (1 if s.flags & SYN else 0) + (1 if s.flags & FIN else 0)
    if lt(c.rcv_nxt + window, c.rcv_adv):
        window = c.rcv_adv - c.rcv_nxt
    if length == 0:
        if window == 0:
            return s.seq == c.rcv_nxt
        return ge(s.seq, c.rcv_nxt) and lt(s.seq, c.rcv_nxt + window)
    if window == 0:
        return False
    return ((ge(s.seq, c.rcv_nxt) and lt(s.seq, c.rcv_nxt + window))
            or (ge(s.seq + length - 1, c.rcv_nxt) and lt(s.seq + length - 1, c.rcv_nxt + window)))

cdef void ooo_add(Tcb *c, uint32_t start, uint32_t end) noexcept nogil:
    """Records an out-of-order range, merged with those it touches, first in
    the list (RFC 2018 4: the most recent block first)."""
    cdef uint32_t i = 0, j
    cdef SeqRange merged
    merged.start = start
    merged.end = end
    while i < c.ooo_count:
        if le(c.ooo[i].start, merged.end) and ge(c.ooo[i].end, merged.start):
            if lt(c.ooo[i].start, merged.start):
                merged.start = c.ooo[i].start
            if gt(c.ooo[i].end, merged.end):
                merged.end = c.ooo[i].end
            for j in range(i, c.ooo_count - 1):
                c.ooo[j] = c.ooo[j + 1]
            c.ooo_count -= 1
        else:
            i += 1
    if c.ooo_count == TCP_OOO_MAX:
        c.ooo_count -= 1           # the oldest goes; its bytes come again
    for j in range(c.ooo_count, 0, -1):
        c.ooo[j] = c.ooo[j - 1]
    c.ooo[0] = merged
    c.ooo_count += 1

cdef void quick_ack_mode(Tcb *c) noexcept nogil:
    """For the next in-order segments, an ACK for each at once, as Linux's
    receiver does after an idle spell and after an old segment: a
    sender that lost segments or timed out has a window of a segment or two,
    and a delayed ACK would stretch each of its round trips by the 40 ms of
    the timer (and its RTO with them).  At most half the receive window's
    segments, and TCP_QUICK_ACKS."""
    c.quick_acks = MINU(TCP_QUICK_ACKS, MAXU(c.rcv.capacity // (2 * c.mss), 2))

cdef void take_data(TcpTable *t, Tcb *c, const Segment *s, int64_t now) noexcept nogil:
    """Stores the payload (in order or not) and schedules the ACK."""
    cdef uint32_t seq = s.seq, length = s.length, skip, space, i
    cdef const uint8_t *data = s.data
    cdef bint advanced
    if c.last_data and now - c.last_data > c.rto:
        quick_ack_mode(c)
    c.last_data = now
    if s.flags & SYN:
        seq += 1
    if lt(seq, c.rcv_nxt):         # the front was seen already
        skip = c.rcv_nxt - seq
        if skip >= length:
            c.ack_now = True       # a duplicate: tell the peer where we are
            return
        seq += skip
        data += skip
        length -= skip
    space = c.rcv.capacity - c.rcv.length
    if seq - c.rcv_nxt >= space:
        c.ack_now = True
        return
    if length > space - (seq - c.rcv_nxt):
        length = space - (seq - c.rcv_nxt)   # the tail is past the window
    if not ring_reserve(t, &c.rcv, c.rcv.length + (seq - c.rcv_nxt) + length):
        return                     # no memory now: the peer sends it again
    ring_write(&c.rcv, c.rcv.length + (seq - c.rcv_nxt), data, length)
    if seq != c.rcv_nxt:
        ooo_add(c, seq, seq + length)
        c.ack_now = True           # out of order: a duplicate ACK at once (RFC 5681 4.2)
        return
    c.rcv_nxt += length
    c.rcv.length += length
    advanced = c.ooo_count > 0
    i = 0
    while i < c.ooo_count:         # ranges that now continue the stream
        if le(c.ooo[i].start, c.rcv_nxt):
            if gt(c.ooo[i].end, c.rcv_nxt):
                c.rcv.length += c.ooo[i].end - c.rcv_nxt
                c.rcv_nxt = c.ooo[i].end
            c.ooo[i] = c.ooo[c.ooo_count - 1]
            c.ooo_count -= 1
            i = 0
        else:
            i += 1
    if advanced:
        c.ack_now = True           # a hole filled: ACK at once (RFC 5681 4.2)
    elif c.quick_acks:
        c.quick_acks -= 1
        c.ack_now = True
    elif length >= c.mss - options_size(c, ACK) or c.segments_unacked:
        c.segments_unacked += 1
        if c.segments_unacked >= (TCP_BATCH_ACK_SEGMENTS if t.batching else 2):
            c.ack_now = True       # every second full segment (RFC 9293 3.8.6.3)
        elif c.segments_unacked >= 2 and not c.ack_queued:
            c.ack_queued = True    # within a batch: at its end (tcp_flush_acks)
            c.ack_next = t.acks
            t.acks = c
    if not c.ack_now and c.delack_at == 0:
        c.delack_at = now + DELAYED_ACK
    notify(t, c, TCP_EV_READ)

cdef void newly_acked(TcpTable *t, Tcb *c, uint32_t acked, int64_t now) noexcept nogil:
    """Congestion window growth for acked bytes (RFC 5681 3.1, with RFC 3465's byte counting)."""
    if c.cwnd < c.ssthresh:
        c.cwnd += MINU(acked, c.mss)
    else:
        c.cwnd += MAXU(1, <uint32_t>(<uint64_t>c.mss * c.mss // c.cwnd))

cdef int process_ack(TcpTable *t, Tcb *c, const Segment *s, int64_t now) noexcept nogil:
    """RFC 9293 3.10.7.4 fifth check, with RFC 5961 5 and RFC 6582.
    Returns -1 when the segment is dropped or the connection ended."""
    cdef uint32_t acked, data_acked, window
    cdef bint fin_acked, duplicate, sample_ok
    if gt(s.ack, c.snd_max):
        send_ack(t, c, now)        # acknowledges what we never sent
        return -1
    if lt(s.ack, c.snd_una - c.max_snd_wnd):
        challenge_ack(t, c, now)   # too old to be from this connection (RFC 5961 5.2)
        return -1
    window = s.wnd << c.snd_wscale
    duplicate = (s.ack == c.snd_una and s.length == 0 and not s.flags & (SYN | FIN)
                 and window == c.snd_wnd and flight(c) > 0)
    if c.sack_ok and s.nsacks and le(s.ack, c.snd_max):
        duplicate = duplicate or (s.ack == c.snd_una and s.length == 0 and flight(c) > 0)
    if lt(c.snd_wl1, s.seq) or (c.snd_wl1 == s.seq and le(c.snd_wl2, s.ack)):
        c.snd_wnd = window
        c.snd_wl1 = s.seq
        c.snd_wl2 = s.ack
        if window > c.max_snd_wnd:
            c.max_snd_wnd = window
        if window:
            c.persist_at = 0
    if gt(s.ack, c.snd_una):
        acked = s.ack - c.snd_una
        fin_acked = fin_sent(c) and s.ack == c.snd_max
        data_acked = acked - (1 if fin_acked else 0)
        if data_acked > c.snd.length:
            data_acked = c.snd.length
        ring_drop(&c.snd, data_acked)
        sample_ok = ge(c.snd_una, c.recover)   # nothing acked was sent before a retransmission
        if sample_ok and c.sacked_count and ge(c.snd_una, c.high_rxt):
            c.reordering_seen = True           # a hole below SACKed data filled by its first copy
        c.snd_una = s.ack
        # Marks left behind stay within reach of sequence comparisons (2^31 apart).
        if lt(c.recover, c.snd_una):
            c.recover = c.snd_una
        if lt(c.high_rxt, c.snd_una):
            c.high_rxt = c.snd_una
        scoreboard_update(c, s)
        if lt(c.snd_nxt, c.snd_una):
            c.snd_nxt = c.snd_una
        c.backoff = 0
        c.probes = 0
        # A timestamp echo can be older than the segment it acknowledges
        # (delayed ACKs, holes: RFC 7323 4.3), so like Linux we do not time
        # ACKs that cover retransmitted data.
        if not sample_ok:
            c.rtt_time = 0
        elif c.ts_ok and s.has_ts and s.tsecr:
            rtt_sample(c, <int64_t>(<uint32_t>(ts_now(c, now) - s.tsecr)) * MS)
        elif c.rtt_time and gt(s.ack, c.rtt_seq):
            rtt_sample(c, now - c.rtt_time)
            c.rtt_time = 0
        if c.in_recovery:
            if ge(s.ack, c.recover):
                c.in_recovery = False                  # full ACK (RFC 6582 3.2 step 3)
                c.cwnd = MINU(c.ssthresh, MAXU(flight(c), c.mss) + c.mss)
            else:
                retransmit_first(t, c, now)            # partial ACK (step 4)
                c.cwnd = c.cwnd - acked + c.mss if c.cwnd > acked else c.mss
        else:
            newly_acked(t, c, acked, now)
        c.dupacks = 0
        c.probed = False
        c.rto_at = 0
        c.reorder_at = 0
        arm_reorder(c, now)                            # SACKed data past the new snd_una
        if c.snd_una != c.snd_max:
            arm_rto(c, now)
            arm_probe(c, now)
        else:
            c.probe_at = 0
        if c.snd.length == 0 and c.snd.data != NULL and c.trim_at == 0:
            c.trim_at = now + TRIM_IDLE
        notify(t, c, TCP_EV_WRITE)
        if fin_acked:
            c.fin_acked = True
            if c.state == TCP_FIN_WAIT_1:
                c.state = TCP_FIN_WAIT_2
                if not c.user_holds:
                    c.close_at = now + FIN_WAIT_2_TIME
            elif c.state == TCP_CLOSING:
                enter_time_wait(t, c, now)
            elif c.state == TCP_LAST_ACK:
                finish(t, c, 0)
                return -1
    elif duplicate:
        scoreboard_update(c, s)
        c.dupacks += 1
        if c.in_recovery:
            # Each duplicate ACK means a segment left the network: the next
            # hole goes in its place (RFC 6675's pipe, counted by ACKs), or,
            # with no hole left, new data through the inflated window.
            if not retransmit_hole(t, c, now):
                if c.sacked_count and now >= c.rxt_round + rack_wait(c):
                    rewalk_holes(t, c, now)
                else:
                    c.cwnd += c.mss                    # RFC 6582 3.2 step 3 (inflation)
                    if c.sacked_count and c.reorder_at == 0:
                        # Too soon to tell: this ACK came within the round
                        # trip of the retransmissions.  If none comes after
                        # it (at heavy loss the last ones are lost too), the
                        # timer decides instead of the RTO.
                        c.reorder_at = c.rxt_round + rack_wait(c)
        elif (not c.reordering_seen and gt(c.snd_una, c.recover - 1)
              and (c.dupacks >= dupack_threshold(c) or sacked_bytes(c) >= DUPACK_THRESHOLD * c.mss
                   or (c.probed and c.sacked_count))):
            # (After a tail loss probe, a SACK of anything past snd_una shows
            # the first segment lost: RFC 8985 7.4's detection, simplified.)
            # On a path that reorders, counts mean little: RACK's window decides.
            enter_recovery(t, c, now)
        else:
            arm_reorder(c, now)
    return 0

cdef void enter_recovery(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    """The first unacknowledged segment is lost: fast retransmit and recovery
    (RFC 5681 3.2, RFC 6582 3.2)."""
    c.ssthresh = MAXU(flight(c) // 2, 2 * c.mss)  # step 2
    c.recover = c.snd_max
    c.in_recovery = True
    c.reorder_at = 0
    c.high_rxt = c.snd_una
    c.rxt_round = now
    retransmit_first(t, c, now)
    c.cwnd = c.ssthresh + DUPACK_THRESHOLD * c.mss

cdef void arm_reorder(Tcb *c, int64_t now) noexcept nogil:
    """RACK's time-based detection (RFC 8985 6.2), for the first segment: the
    peer SACKed data sent after it, so a round trip has passed since it went;
    if it is still not acknowledged a reordering window later, it is lost,
    however few duplicate ACKs came back (at heavy loss, most do not).  The
    window is a quarter of the smoothed round trip, or all of it once the
    path was seen to reorder (RFC 8985 widens it on DSACKs; we see reordering
    when a hole below SACKed data is filled without a retransmission).
    After a timeout too: the segments slow start sends again can be lost
    again, and RACK finds lost retransmissions (RFC 8985 2.2) where RFC 6675
    5.1 would wait for another, longer timeout."""
    cdef int64_t window = c.srtt if c.reordering_seen else c.srtt // 4
    if c.reorder_at == 0 and c.srtt and c.sacked_count and not c.in_recovery:
        c.reorder_at = now + MIN64(window, REORDER_MAX) + 1

cdef inline int64_t rack_wait(const Tcb *c) noexcept nogil:
    """A round trip and RACK's reordering window (RFC 8985 6.2): how long
    after the holes went again their retransmissions count as lost while the
    peer still reports them."""
    return c.srtt + c.srtt // 4 + 1

cdef void rewalk_holes(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    """Every hole went again more than rack_wait ago, and the peer, which has
    heard from us since, still reports them: those retransmissions were lost
    too.  The holes go again from snd_una (RFC 8985's detection of a lost
    retransmission, by round rather than per segment)."""
    c.high_rxt = c.snd_una
    c.rxt_round = now
    retransmit_hole(t, c, now)

cdef void on_reorder(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    c.reorder_at = 0
    if not c.sacked_count or c.snd_una == c.snd_max:
        return
    if c.in_recovery:
        rewalk_holes(t, c, now)
    else:
        enter_recovery(t, c, now)

cdef void take_fin(TcpTable *t, Tcb *c, const Segment *s, int64_t now) noexcept nogil:
    """A FIN counts once every byte before it arrived."""
    cdef uint32_t fin_seq = s.seq + s.length + (1 if s.flags & SYN else 0)
    if fin_seq != c.rcv_nxt or c.fin_received:
        if c.fin_received and fin_seq + 1 == c.rcv_nxt:
            c.ack_now = True       # our ACK of it was lost
        return
    c.fin_received = True
    c.rcv_nxt += 1
    c.ack_now = True
    if c.state == TCP_ESTABLISHED or c.state == TCP_SYN_RECEIVED:
        c.state = TCP_CLOSE_WAIT
    elif c.state == TCP_FIN_WAIT_1:
        c.state = TCP_CLOSING      # our FIN is not acked yet (else we are in FIN_WAIT_2)
    elif c.state == TCP_FIN_WAIT_2:
        enter_time_wait(t, c, now)
    notify(t, c, TCP_EV_READ)


# ---- input by state ------------------------------------------------------

cdef void agree_options(TcpTable *t, Tcb *c, const Segment *s, bint active) noexcept nogil:
    """What a SYN (active: the SYN-ACK to ours) settles: MSS, scaling, SACK, timestamps."""
    cdef uint32_t mss = s.mss if s.mss else MSS_DEFAULT
    if mss < MSS_MIN:
        mss = MSS_MIN
    if mss < c.mss:
        c.mss = mss
    if s.wscale >= 0:
        c.snd_wscale = s.wscale
    else:
        c.snd_wscale = 0
        c.rcv_wscale = 0           # scaling needs both sides (RFC 7323 2.2)
    c.sack_ok = s.sack_ok
    c.ts_ok = s.has_ts
    if s.has_ts:
        c.ts_recent = s.tsval
    c.irs = s.seq
    c.rcv_nxt = s.seq + 1
    c.cwnd = INITIAL_WINDOW * c.mss

cdef void established(TcpTable *t, Tcb *c, const Segment *s, int64_t now) noexcept nogil:
    c.state = TCP_ESTABLISHED
    c.snd_wnd = s.wnd << c.snd_wscale
    c.max_snd_wnd = c.snd_wnd
    c.snd_wl1 = s.seq
    c.snd_wl2 = s.ack
    c.backoff = 0
    c.rto_at = 0
    if c.keepalive:
        c.keepalive_at = now + <int64_t>c.keep_idle * SECOND

cdef void input_listen(TcpTable *t, Tcb *listener, const uint8_t *packet, const Parsed *p,
                       const Segment *s, int64_t now) noexcept nogil:
    cdef Tcb *c
    if s.flags & RST:
        return
    if s.flags & ACK:
        send_reset_for(t, packet, p, s)
        return
    if not s.flags & SYN:
        return
    if listener.half_open >= TCP_HALF_OPEN_MAX or listener.accept_count >= listener.backlog:
        return                     # full: the peer's SYN retransmission tries again
    c = tcb_new(t, p.v6, &p.dst, listener.lport, &p.src, load_be16(packet + p.l4_at), now)
    if c == NULL:
        return
    agree_options(t, c, s, False)
    c.state = TCP_SYN_RECEIVED
    c.snd_una = c.iss
    c.snd_nxt = c.iss + 1
    c.snd_max = c.snd_nxt
    c.parent = listener
    c.nodelay = listener.nodelay
    c.keepalive = listener.keepalive
    listener.half_open += 1
    table_insert(t, c)
    send_segment(t, c, c.iss, 0, SYN | ACK, now)
    arm_rto(c, now)
    timer_update(t, c)

cdef void input_syn_sent(TcpTable *t, Tcb *c, const uint8_t *packet, const Parsed *p,
                         const Segment *s, int64_t now) noexcept nogil:
    """RFC 9293 3.10.7.3."""
    if s.flags & ACK and (le(s.ack, c.iss) or gt(s.ack, c.snd_max)):
        send_reset_for(t, packet, p, s)
        return
    if s.flags & RST:
        if s.flags & ACK:
            finish(t, c, ECONNREFUSED)
        return
    if not s.flags & SYN:
        return
    agree_options(t, c, s, True)
    if s.flags & ACK:
        c.snd_una = s.ack
        if c.backoff == 0:         # Karn: a retransmitted SYN gives no sample
            if s.has_ts and s.tsecr:
                rtt_sample(c, <int64_t>(<uint32_t>(ts_now(c, now) - s.tsecr)) * MS)
            elif c.rtt_time:
                rtt_sample(c, now - c.rtt_time)
        established(t, c, s, now)
        c.rtt_time = 0
        c.ack_now = True
        notify(t, c, TCP_EV_CONNECTED | TCP_EV_WRITE)
        if s.length or s.flags & FIN:
            take_data(t, c, s, now)
            if s.flags & FIN:
                take_fin(t, c, s, now)
        output(t, c, now)
        return
    # Simultaneous open (RFC 9293 3.5, figure 8).
    c.state = TCP_SYN_RECEIVED
    send_segment(t, c, c.iss, 0, SYN | ACK, now)

cdef void accepted(TcpTable *t, Tcb *c) noexcept nogil:
    """A child of a listener completed its handshake: into the accept queue."""
    cdef Tcb *listener = c.parent
    if listener == NULL:
        return
    listener.half_open -= 1
    listener.accept_count += 1
    c.queue_next = NULL
    if listener.accept_tail != NULL:
        listener.accept_tail.queue_next = c
    else:
        listener.accept_head = c
    listener.accept_tail = c
    notify(t, listener, TCP_EV_ACCEPT)

cdef void input_synchronized(TcpTable *t, Tcb *c, const uint8_t *packet, const Parsed *p,
                             const Segment *s, int64_t now) noexcept nogil:
    """RFC 9293 3.10.7.4, for SYN_RECEIVED and every later state."""
    if s.length and le(s.seq + s.length, c.rcv_nxt):
        quick_ack_mode(c)          # data we had: our ACK was lost, or the sender timed out
    # PAWS (RFC 7323 5.3): an old timestamp marks an old duplicate.
    if c.ts_ok and s.has_ts and not s.flags & RST and lt(s.tsval, c.ts_recent):
        challenge_ack(t, c, now)
        return
    if not segment_acceptable(c, s):
        if not s.flags & RST:
            challenge_ack(t, c, now)   # an ACK, within the same budget (as Linux limits them)
        return
    if s.flags & RST:
        if s.seq != c.rcv_nxt:
            challenge_ack(t, c, now)           # RFC 5961 3.2
            return
        if c.state == TCP_SYN_RECEIVED and c.parent != NULL:
            finish(t, c, 0)                    # back to the listener, which stays
        elif c.state == TCP_CLOSING or c.state == TCP_LAST_ACK or c.state == TCP_TIME_WAIT:
            finish(t, c, 0)
        elif c.state == TCP_SYN_RECEIVED:
            finish(t, c, ECONNREFUSED)         # our simultaneous open was refused
        else:
            finish(t, c, ECONNRESET)
        return
    if s.flags & SYN:
        if c.state == TCP_SYN_RECEIVED and s.seq == c.irs and not s.flags & ACK:
            send_segment(t, c, c.iss, 0, SYN | ACK, now)   # our SYN-ACK was lost
            return
        challenge_ack(t, c, now)               # RFC 5961 4.2
        return
    if not s.flags & ACK:
        return
    if c.ts_ok and s.has_ts and le(s.seq, c.last_ack_sent):
        c.ts_recent = s.tsval                  # RFC 7323 4.3
    c.last_heard = now
    c.probes = 0
    if c.state == TCP_SYN_RECEIVED:
        if not (lt(c.snd_una, s.ack) and le(s.ack, c.snd_max)):
            send_reset_for(t, packet, p, s)
            return
        if c.parent != NULL and c.parent.accept_count >= c.parent.backlog:
            return                             # no room to accept it yet: it comes again
        c.snd_una = s.ack
        if c.ts_ok and s.has_ts and s.tsecr and c.backoff == 0:
            rtt_sample(c, <int64_t>(<uint32_t>(ts_now(c, now) - s.tsecr)) * MS)
        established(t, c, s, now)
        if c.parent != NULL:
            accepted(t, c)
        else:
            notify(t, c, TCP_EV_CONNECTED | TCP_EV_WRITE)
    elif process_ack(t, c, s, now) < 0:
        return
    if c.state == TCP_TIME_WAIT:
        if s.flags & FIN:
            c.ack_now = True                   # the peer lost our ACK: again, and wait anew
            c.close_at = now + TIME_WAIT_TIME
    else:
        if s.length and (c.state == TCP_ESTABLISHED or c.state == TCP_FIN_WAIT_1
                         or c.state == TCP_FIN_WAIT_2):
            take_data(t, c, s, now)
        if s.flags & FIN and c.state != TCP_CLOSE_WAIT and c.state != TCP_CLOSING and c.state != TCP_LAST_ACK:
            take_fin(t, c, s, now)
    if c.state != TCP_CLOSED:
        output(t, c, now)

cdef void tcp_input(TcpTable *t, const uint8_t *packet, const Parsed *p, int64_t now) noexcept nogil:
    input_segment(t, packet, p, now)
    reap(t)

cdef void input_segment(TcpTable *t, const uint8_t *packet, const Parsed *p, int64_t now) noexcept nogil:
    cdef Segment s
    cdef Tcb *c
    cdef uint16_t sport, dport
    if parse_segment(packet, p, &s) < 0 or not l4_checksum_ok(packet, p):
        return
    sport = load_be16(packet + p.l4_at)
    dport = load_be16(packet + p.l4_at + 2)
    c = lookup(t, p.v6, &p.dst, dport, &p.src, sport)
    if c != NULL and c.state == TCP_TIME_WAIT and s.flags & SYN and not s.flags & ACK and gt(s.seq, c.rcv_nxt):
        finish(t, c, 0)            # a new incarnation may take over (RFC 9293 3.6.1, as Linux)
        c = NULL
    if c == NULL:
        c = lookup_listener(t, p.v6, &p.dst, dport)
        if c == NULL:
            send_reset_for(t, packet, p, &s)
            return
        input_listen(t, c, packet, p, &s, now)
        return
    if c.state == TCP_SYN_SENT:
        input_syn_sent(t, c, packet, p, &s, now)
    else:
        input_synchronized(t, c, packet, p, &s, now)
    if c.in_table or c.user_holds:
        timer_update(t, c)


# ---- timers -------------------------------------------------------------

cdef void on_rto(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    """RFC 6298 5.4-5.7, RFC 5681 (4) for the window."""
    cdef uint32_t limit
    c.rto_at = 0
    if c.state == TCP_SYN_SENT:
        limit = SYN_RETRIES
    elif c.state == TCP_SYN_RECEIVED:
        limit = SYNACK_RETRIES
    else:
        limit = DATA_RETRIES
    if c.backoff >= limit:
        finish(t, c, ETIMEDOUT)
        return
    c.backoff += 1
    c.rtt_time = 0
    if c.state == TCP_SYN_SENT:
        send_segment(t, c, c.iss, 0, SYN, now)
        arm_rto(c, now)
        return
    if c.state == TCP_SYN_RECEIVED:
        send_segment(t, c, c.iss, 0, SYN | ACK, now)
        arm_rto(c, now)
        return
    c.ssthresh = MAXU(flight(c) // 2, 2 * c.mss)
    c.cwnd = c.mss
    c.in_recovery = False
    c.sacked_count = 0             # the receiver may have dropped what it SACKed (RFC 2018 8)
    c.probe_at = c.reorder_at = 0
    c.probed = True                # no probe while the timeout's retransmissions go (RFC 8985 7.2)
    c.recover = c.snd_max
    c.dupacks = 0
    c.snd_nxt = c.snd_una          # go back: resend from the first unacknowledged byte
    output(t, c, now)
    if c.rto_at == 0 and c.snd_una != c.snd_max:
        arm_rto(c, now)

cdef void on_persist(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    c.persist_at = 0
    if c.snd_wnd != 0 or c.snd.length <= flight(c):
        return
    if c.probes >= DATA_RETRIES:
        finish(t, c, ETIMEDOUT)    # the peer stopped answering (not merely reading)
        return
    c.probes += 1
    send_probe(t, c, now)
    if c.backoff < DATA_RETRIES:
        c.backoff += 1
    c.persist_at = now + MIN64(c.rto << c.backoff, RTO_MAX)

cdef void on_keepalive(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    c.keepalive_at = 0
    if not c.keepalive or c.state != TCP_ESTABLISHED and c.state != TCP_CLOSE_WAIT:
        return
    if now - c.last_heard < <int64_t>c.keep_idle * SECOND and c.probes == 0:
        c.keepalive_at = c.last_heard + <int64_t>c.keep_idle * SECOND
        return
    if c.probes >= c.keep_count:
        finish(t, c, ETIMEDOUT)
        return
    c.probes += 1
    send_probe(t, c, now)
    c.keepalive_at = now + <int64_t>c.keep_interval * SECOND

cdef void on_trim(TcpTable *t, Tcb *c) noexcept nogil:
    c.trim_at = 0
    if c.snd.length == 0:
        ring_release(t, &c.snd)
    if c.rcv.length == 0 and c.ooo_count == 0:
        ring_release(t, &c.rcv)

cdef int64_t tcp_timers(TcpTable *t, int64_t now) noexcept nogil:
    cdef Tcb *c
    while t.heap_count and t.heap[0].deadline <= now:
        c = t.heap[0]
        heap_remove(t, c)
        if c.close_at and c.close_at <= now:
            c.close_at = 0
            finish(t, c, 0)
            continue
        if c.rto_at and c.rto_at <= now:
            on_rto(t, c, now)
            if c.state == TCP_CLOSED:
                continue
        if c.probe_at and c.probe_at <= now:
            on_probe(t, c, now)
        if c.reorder_at and c.reorder_at <= now:
            on_reorder(t, c, now)
        if c.persist_at and c.persist_at <= now:
            on_persist(t, c, now)
            if c.state == TCP_CLOSED:
                continue
        if c.keepalive_at and c.keepalive_at <= now:
            on_keepalive(t, c, now)
            if c.state == TCP_CLOSED:
                continue
        if c.delack_at and c.delack_at <= now:
            c.delack_at = 0
            send_ack(t, c, now)
        if c.trim_at and c.trim_at <= now:
            on_trim(t, c)
        timer_update(t, c)
    reap(t)
    return tcp_next_deadline(t)

cdef void tcp_resume(TcpTable *t, int64_t now) noexcept nogil:
    """Every connection with something to send tries again (after a full sink)."""
    cdef uint32_t i
    cdef Tcb *c
    t.blocked = False
    reap(t)
    for i in range(t.bucket_mask + 1):
        c = t.buckets[i]
        while c != NULL and not t.blocked:
            if c.state >= TCP_ESTABLISHED and (c.ack_now or c.snd.length > c.snd_nxt - c.snd_una
                                               or (c.fin_wanted and not fin_sent(c))):
                output(t, c, now)
                timer_update(t, c)
            c = c.hash_next


# ---- the user side -------------------------------------------------------

cdef uint16_t pick_port(TcpTable *t, bint v6, const Addr *local, const Addr *remote,
                        uint16_t rport) noexcept nogil:
    """RFC 6056 algorithm 3: a keyed offset per destination, then the next free port."""
    cdef uint32_t offset = <uint32_t>flow_hash(t.netif, HASH_PORT, v6, local, 0, remote, rport)
    cdef uint32_t i
    cdef uint16_t port
    for i in range(EPHEMERAL_COUNT):
        port = EPHEMERAL_FIRST + (offset + t.ephemeral_next + i) % EPHEMERAL_COUNT
        if lookup(t, v6, local, port, remote, rport) == NULL:
            t.ephemeral_next += i + 1
            return port
    return 0

cdef Tcb *tcp_connect(TcpTable *t, bint v6, const Addr *local, const Addr *remote, uint16_t rport,
                      uint16_t lport, int64_t now, int *error) noexcept nogil:
    cdef Tcb *c
    if lport == 0:
        lport = pick_port(t, v6, local, remote, rport)
        if lport == 0:
            error[0] = EADDRNOTAVAIL
            return NULL
    elif lookup(t, v6, local, lport, remote, rport) != NULL:
        error[0] = EADDRINUSE
        return NULL
    c = tcb_new(t, v6, local, lport, remote, rport, now)
    if c == NULL:
        error[0] = ENOMEM
        return NULL
    c.state = TCP_SYN_SENT
    c.snd_una = c.iss
    c.snd_nxt = c.iss + 1
    c.snd_max = c.snd_nxt
    c.user_holds = True
    c.rtt_time = now
    c.rtt_seq = c.iss
    table_insert(t, c)
    send_segment(t, c, c.iss, 0, SYN, now)
    arm_rto(c, now)
    timer_update(t, c)
    return c

cdef Tcb *tcp_listen(TcpTable *t, bint v6, const Addr *local, uint16_t port, uint32_t backlog,
                     int *error) noexcept nogil:
    cdef Tcb *c = t.listeners
    while c != NULL:
        if c.lport == port and c.v6 == v6 and memcmp(c.local.b, local.b, 16) == 0:
            error[0] = EADDRINUSE
            return NULL
        c = c.hash_next
    c = <Tcb *>calloc(1, sizeof(Tcb))
    if c == NULL:
        error[0] = ENOMEM
        return NULL
    c.v6 = v6
    c.local = local[0]
    c.lport = port
    c.state = TCP_LISTEN
    c.heap_at = -1
    c.backlog = MINU(MAXU(backlog, 1), TCP_BACKLOG_MAX)
    c.user_holds = True
    c.in_table = True
    c.hash_next = t.listeners
    t.listeners = c
    return c

cdef Tcb *tcp_accept(TcpTable *t, Tcb *listener) noexcept nogil:
    cdef Tcb *c = listener.accept_head
    if c == NULL:
        return NULL
    listener.accept_head = c.queue_next
    if listener.accept_head == NULL:
        listener.accept_tail = NULL
    listener.accept_count -= 1
    c.queue_next = NULL
    c.parent = NULL
    c.user_holds = True
    if c.rcv.length or c.fin_received or c.state == TCP_CLOSED:
        notify(t, c, TCP_EV_READ)
    return c

cdef uint32_t tcp_send_space(Tcb *c) noexcept nogil:
    if c.fin_wanted or c.state not in (TCP_ESTABLISHED, TCP_CLOSE_WAIT, TCP_SYN_SENT, TCP_SYN_RECEIVED):
        return 0
    return c.snd.capacity - c.snd.length

cdef uint32_t tcp_send_span(TcpTable *t, Tcb *c, uint8_t **span) noexcept nogil:
    """The contiguous free space after the queued bytes (the rest of the free
    space, if it wraps, comes after tcp_sent)."""
    cdef uint32_t space = tcp_send_space(c), at
    if space == 0:
        return 0
    if not ring_reserve(t, &c.snd, c.snd.length + 1):
        c.wants_memory = True
        return 0
    at = (c.snd.head + c.snd.length) % c.snd.size
    span[0] = c.snd.data + at
    return MINU(c.snd.size - c.snd.length, c.snd.size - at)

cdef void tcp_sent(TcpTable *t, Tcb *c, uint32_t count, int64_t now) noexcept nogil:
    c.snd.length += count
    c.trim_at = 0
    output(t, c, now)
    timer_update(t, c)

cdef uint32_t tcp_recv_span(Tcb *c, uint8_t **span) noexcept nogil:
    if c.rcv.length == 0:
        return 0
    span[0] = c.rcv.data + c.rcv.head
    return MINU(c.rcv.length, c.rcv.size - c.rcv.head)

cdef void tcp_consumed(TcpTable *t, Tcb *c, uint32_t count, int64_t now) noexcept nogil:
    """The user took count bytes: the window opens; the peer hears of it when
    it grew by at least half the ring or one MSS (RFC 9293 3.8.6.2.2)."""
    cdef uint32_t before = c.rcv_adv - c.rcv_nxt
    ring_drop(&c.rcv, count)
    if c.rcv.length == 0 and c.ooo_count == 0 and c.trim_at == 0:
        c.trim_at = now + TRIM_IDLE
    if c.state == TCP_ESTABLISHED or c.state == TCP_FIN_WAIT_1 or c.state == TCP_FIN_WAIT_2:
        if receive_window(c) - before >= MINU(c.rcv.capacity // 2, c.mss):
            c.ack_now = True
            output(t, c, now)
    timer_update(t, c)

cdef bint tcp_eof(const Tcb *c) noexcept nogil:
    """Nothing more will arrive: the peer's FIN (or the end) and the ring is read."""
    return c.rcv.length == 0 and (c.fin_received or c.state == TCP_CLOSED)

cdef void tcp_set_keepalive(TcpTable *t, Tcb *c, bint on, uint32_t idle, uint32_t interval, uint32_t count,
                           int64_t now) noexcept nogil:
    c.keepalive = on
    c.keep_idle = idle if idle else 1
    c.keep_interval = interval if interval else 1
    c.keep_count = count if count else 1
    c.keepalive_at = c.last_heard + <int64_t>c.keep_idle * SECOND if on and c.state == TCP_ESTABLISHED else 0
    timer_update(t, c)

cdef void tcp_shutdown(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    shutdown_sending(t, c, now)
    reap(t)

cdef void shutdown_sending(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    """The user's side is done sending: a FIN after the queued bytes."""
    if c.fin_wanted:
        return
    if c.state == TCP_SYN_SENT or (c.state == TCP_SYN_RECEIVED and c.parent == NULL):
        finish(t, c, 0)
        return
    if c.state == TCP_ESTABLISHED or c.state == TCP_SYN_RECEIVED:
        c.state = TCP_FIN_WAIT_1
    elif c.state == TCP_CLOSE_WAIT:
        c.state = TCP_LAST_ACK
    else:
        return
    c.fin_wanted = True
    output(t, c, now)
    timer_update(t, c)

cdef void close_listener(TcpTable *t, Tcb *listener, int64_t now) noexcept nogil:
    """Children not accepted are reset, those half open forgotten."""
    cdef uint32_t i
    cdef Tcb *c
    cdef Tcb *next
    while listener.accept_head != NULL:
        c = listener.accept_head
        abort_connection(t, c, now)
    for i in range(t.bucket_mask + 1):
        c = t.buckets[i]
        while c != NULL:
            next = c.hash_next
            if c.parent == listener:
                finish(t, c, 0)
            c = next
    table_remove(t, listener)
    listener.state = TCP_CLOSED

cdef void tcp_close(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    close_connection(t, c, now)
    reap(t)

cdef void close_connection(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    """close(2): unread received bytes make it an abort (RFC 9293 3.10.4,
    RFC 2525 2.17); otherwise a FIN goes after what is queued."""
    if c.state == TCP_LISTEN:
        close_listener(t, c, now)
        return
    if c.rcv.length or c.ooo_count:
        abort_connection(t, c, now)
        return
    shutdown_sending(t, c, now)
    if c.state == TCP_FIN_WAIT_2 and c.close_at == 0:
        c.close_at = now + FIN_WAIT_2_TIME
        timer_update(t, c)

cdef void tcp_abort(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    abort_connection(t, c, now)
    reap(t)

cdef void abort_connection(TcpTable *t, Tcb *c, int64_t now) noexcept nogil:
    """A RST to the peer, and the connection is over (ECONNABORTED for the user)."""
    if c.state == TCP_LISTEN:
        close_listener(t, c, now)
        return
    if c.state >= TCP_SYN_RECEIVED and c.state != TCP_TIME_WAIT:
        send_segment(t, c, c.snd_nxt, 0, RST | ACK, now)
    if c.state != TCP_CLOSED:
        finish(t, c, ECONNABORTED)

cdef void tcp_release(TcpTable *t, Tcb *c) noexcept nogil:
    """The user forgets the connection: freed now if over, else when it ends."""
    c.user_holds = False
    if c.on_ready:
        ready_unlink(t, c)
    if c.state == TCP_CLOSED or (c.state == TCP_LISTEN and not c.in_table):
        tcb_free(t, c)
    elif c.state == TCP_FIN_WAIT_2 and c.close_at == 0:
        c.close_at = c.last_heard + FIN_WAIT_2_TIME
        timer_update(t, c)


cdef void tcp_count_states(const TcpTable *t, uint32_t *counts) noexcept nogil:
    cdef uint32_t i
    cdef Tcb *c
    for i in range(t.bucket_mask + 1):
        c = t.buckets[i]
        while c != NULL:
            counts[<int>c.state] += 1
            c = c.hash_next
    c = t.listeners
    while c != NULL:
        counts[<int>TCP_LISTEN] += 1
        c = c.hash_next


cdef void tcp_icmp_error(TcpTable *t, bint v6, const Addr *local, uint16_t lport, const Addr *remote,
                         uint16_t rport, uint32_t seq, int error) noexcept nogil:
    cdef Tcb *c = lookup(t, v6, local, lport, remote, rport)
    if c != NULL and c.state == TCP_SYN_SENT and seq == c.iss:
        finish(t, c, error)
        reap(t)
