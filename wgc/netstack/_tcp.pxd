# TCP (RFC 9293) for the network stack, sans-I/O: segments in, segments out
# through the Netif's sink, user calls in between, the time passed in (ns).
#
# Implemented: the whole state machine with simultaneous open and close,
# RFC 5961's challenge ACKs (rate-limited) for RSTs, SYNs and old ACKs,
# ISNs per RFC 6528, randomised ephemeral ports (RFC 6056, algorithm 3),
# MSS (clamped to the MTU), window scaling and timestamps with PAWS
# (RFC 7323), SACK blocks sent for out-of-order data (RFC 2018) and those
# received used in recovery (each duplicate ACK sends the next hole again,
# as RFC 6675 does with its pipe), RACK's time-based detection of a lost
# first segment, also a retransmission lost after a timeout (RFC 8985 6.2),
# RTO per RFC 6298 with backoff, NewReno fast retransmit and recovery (RFC 6582),
# delayed ACKs, Nagle with TCP_NODELAY, zero-window probes, keepalives,
# TIME_WAIT, listeners with a bounded accept queue and a capped half-open
# queue.  Congestion control is NewReno (RFC 5681): see the README.
#
# Memory: each connection's send and receive rings have a fixed capacity;
# their memory is allocated when data first needs it, grows by doubling up to
# the capacity, and is freed when they have been empty for a second; the
# table caps the bytes of all rings (a sender that meets the cap is told when
# memory frees, a receiver drops what it cannot hold and the peer sends it again).
#
# Who calls whom: the stack (wgc/netstack/_stack) calls tcp_input for each
# TCP packet to a local address and tcp_timers when the earliest deadline
# passes; the I/O edge calls the user functions (connect, listen, accept,
# the rings, shutdown, close) and reads the ready list.  All under the
# stack's lock, nogil; nothing here blocks or calls out.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t, int64_t
from wgc.netstack._ip cimport Addr, Parsed
from wgc.netstack._netif cimport Netif

cdef enum TcpState:
    TCP_CLOSED = 0
    TCP_LISTEN
    TCP_SYN_SENT
    TCP_SYN_RECEIVED
    TCP_ESTABLISHED
    TCP_FIN_WAIT_1
    TCP_FIN_WAIT_2
    TCP_CLOSE_WAIT
    TCP_CLOSING
    TCP_LAST_ACK
    TCP_TIME_WAIT

# What the I/O edge is told about a connection (Tcb.events).
cdef enum:
    TCP_EV_READ = 1                # received bytes to read, end of stream, or an error
    TCP_EV_WRITE = 2               # room in the send ring
    TCP_EV_CONNECTED = 4           # the handshake completed
    TCP_EV_CLOSED = 8              # the connection is over (error set, or both sides closed)
    TCP_EV_ACCEPT = 16             # a listener has a connection to accept

cdef enum:
    TCP_OOO_MAX = 64               # out-of-order ranges kept: past this the oldest is forgotten (reneged)
    TCP_SACKED_MAX = 8             # ranges the peer reported received past snd_una (the scoreboard)
    TCP_BUFFER_DEFAULT = 4 << 20   # per ring, each direction (allocated as data needs it)
    TCP_MEMORY_DEFAULT = 256 << 20 # all rings of a stack
    TCP_BACKLOG_MAX = 4096
    TCP_HALF_OPEN_MAX = 1024       # SYN_RECEIVED children per listener
    TCP_TIME_WAIT_MAX = 4096       # past this, a closing connection skips TIME_WAIT
    TCP_RING_FIRST = 16384         # a ring's first allocation
    TCP_BATCH_ACK_SEGMENTS = 32    # in a batch, an ACK at least every so many full segments (as GRO's 64 KiB)
    TCP_QUICK_ACKS = 16            # segments ACKed at once after an idle spell or a duplicate (Linux's TCP_MAX_QUICKACKS)

cdef struct Ring:
    uint8_t *data                  # NULL until needed
    uint32_t capacity              # the most it may hold (what windows are computed from)
    uint32_t size                  # what is allocated now: grows by doubling, up to capacity
    uint32_t head                  # offset of the first byte
    uint32_t length                # bytes held from head

cdef struct SeqRange:
    uint32_t start, end

cdef struct Tcb:
    # identity
    bint v6
    Addr local, remote
    uint16_t lport, rport
    int state
    Tcb *hash_next
    # sending: the ring holds bytes from snd_una on
    uint32_t iss, snd_una, snd_nxt, snd_max
    uint32_t snd_wnd, max_snd_wnd, snd_wl1, snd_wl2
    uint32_t mss                   # largest payload we send, options included
    uint8_t snd_wscale             # the peer's shift for the windows it sends
    Ring snd
    bint fin_wanted                # the user shut the sending side
    bint fin_acked                 # and the peer acknowledged our FIN
    bint wants_memory              # the send ring could not grow: TCP_EV_WRITE when it can
    # receiving: the ring holds unread in-order bytes, out-of-order ones past them
    uint32_t irs, rcv_nxt, rcv_adv # rcv_adv: the right edge we advertised
    uint8_t rcv_wscale
    Ring rcv
    SeqRange ooo[TCP_OOO_MAX]      # out-of-order ranges, most recently touched first
    uint32_t ooo_count
    bint fin_received
    # options both sides agreed on
    bint ts_ok, sack_ok
    uint32_t ts_recent, ts_offset
    uint32_t last_ack_sent
    # acknowledging
    uint32_t segments_unacked      # full-sized segments since our last ACK
    uint32_t quick_acks            # in-order segments still to ACK at once (quick-ACK mode)
    int64_t last_data              # when data last arrived (0: never)
    bint ack_now
    bint ack_queued                # on the table's list of ACKs for the end of the batch
    Tcb *ack_next
    # round trip and retransmission (ns)
    int64_t srtt, rttvar, rto
    uint32_t backoff
    uint32_t rtt_seq               # the segment timed without timestamps (Karn)
    int64_t rtt_time
    # congestion (RFC 5681, RFC 6582)
    uint32_t cwnd, ssthresh, dupacks, recover
    bint in_recovery
    SeqRange sacked[TCP_SACKED_MAX]   # what the peer's SACK blocks say it holds, sorted, merged
    uint32_t sacked_count
    uint32_t high_rxt              # in recovery: holes below this were sent again
    int64_t rxt_round              # when the holes were last walked from snd_una
    # timers: absolute ns, 0 = off
    int64_t rto_at, delack_at, persist_at, keepalive_at, close_at, trim_at
    int64_t probe_at               # the tail loss probe, before the RTO
    int64_t reorder_at             # RACK's reordering window after a SACK past snd_una (RFC 8985 6.2)
    bint reordering_seen           # a hole below SACKed data filled without a retransmission
    bint probed                    # a probe went since the last advance of snd_una
    int64_t deadline
    int32_t heap_at                # index in the timer heap, -1 = not in it
    int64_t last_heard
    uint32_t probes                # keepalive or zero-window probes unanswered
    # user options
    bint nodelay, keepalive
    uint32_t keep_idle, keep_interval, keep_count   # seconds, seconds, probes
    # listeners and their children
    Tcb *parent                    # a child's listener, until accepted
    Tcb *queue_next                # in the listener's accept queue
    Tcb *accept_head
    Tcb *accept_tail
    uint32_t backlog, accept_count, half_open
    # the I/O edge
    int error                      # errno of the failure, 0 = none
    uint32_t events
    Tcb *ready_next
    bint on_ready
    bint user_holds                # the edge has a handle; free only when released
    bint in_table
    void *user

cdef struct TcpTable:
    Netif *netif
    Tcb **buckets
    uint32_t bucket_mask
    uint32_t count                 # connections in the hash (listeners apart)
    Tcb *listeners                 # linked through hash_next
    Tcb **heap
    uint32_t heap_count, heap_capacity
    Tcb *ready_head
    Tcb *ready_tail
    Tcb *graveyard                 # ended, unheld connections: freed when the entry point returns
    bint batching                  # a batch of packets is being taken in: bulk ACKs wait for its end
    Tcb *acks                      # connections whose bulk ACK waits (tcp_flush_acks)
    bint blocked                   # a sender found the sink full: call tcp_resume
    uint32_t time_wait_count
    uint32_t ephemeral_next
    int64_t challenge_second       # challenge ACKs: a budget per second
    uint32_t challenge_count
    size_t memory, memory_max      # bytes of all rings
    bint memory_short              # a sender found the cap reached: tell it when memory frees
    uint32_t buffer                # capacity of a new connection's rings

cdef int tcp_init(TcpTable *t, Netif *netif) noexcept nogil
cdef void tcp_free(TcpTable *t) noexcept nogil

# A TCP packet to a local address (p from parse_ip, not a fragment).
cdef void tcp_input(TcpTable *t, const uint8_t *packet, const Parsed *p, int64_t now) noexcept nogil
# An ICMP destination-unreachable about a segment we sent (seq is its sequence
# number): a connection still opening fails with error (RFC 5927; as Linux,
# later states treat it as soft and go on).
cdef void tcp_icmp_error(TcpTable *t, bint v6, const Addr *local, uint16_t lport, const Addr *remote,
                         uint16_t rport, uint32_t seq, int error) noexcept nogil
# Runs the timers due at now; returns the next deadline (0 = none).
cdef int64_t tcp_timers(TcpTable *t, int64_t now) noexcept nogil
cdef int64_t tcp_next_deadline(const TcpTable *t) noexcept nogil
# The end of a batch of packets (with batching set): the bulk ACKs it
# deferred go out, one per connection, as a kernel's after GRO.
cdef void tcp_flush_acks(TcpTable *t, int64_t now) noexcept nogil
# The sink has room again: connections that stopped for it send on.
cdef void tcp_resume(TcpTable *t, int64_t now) noexcept nogil

# The user side.  Connections come back with user_holds set; tcp_release
# gives them up (after tcp_close or tcp_abort, or when they are over).
cdef Tcb *tcp_connect(TcpTable *t, bint v6, const Addr *local, const Addr *remote, uint16_t rport,
                      uint16_t lport, int64_t now, int *error) noexcept nogil
cdef Tcb *tcp_listen(TcpTable *t, bint v6, const Addr *local, uint16_t port, uint32_t backlog,
                     int *error) noexcept nogil
cdef Tcb *tcp_accept(TcpTable *t, Tcb *listener) noexcept nogil
# Bytes the user may append to the send ring now, and where (up to two spans).
cdef uint32_t tcp_send_space(Tcb *c) noexcept nogil
cdef uint32_t tcp_send_span(TcpTable *t, Tcb *c, uint8_t **span) noexcept nogil
cdef void tcp_sent(TcpTable *t, Tcb *c, uint32_t count, int64_t now) noexcept nogil
# Bytes ready to read (in order) and where; tcp_consumed frees them.
cdef uint32_t tcp_recv_span(Tcb *c, uint8_t **span) noexcept nogil
cdef void tcp_consumed(TcpTable *t, Tcb *c, uint32_t count, int64_t now) noexcept nogil
cdef bint tcp_eof(const Tcb *c) noexcept nogil
# SO_KEEPALIVE with TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT (seconds, seconds, probes).
cdef void tcp_set_keepalive(TcpTable *t, Tcb *c, bint on, uint32_t idle, uint32_t interval, uint32_t count,
                           int64_t now) noexcept nogil
cdef void tcp_shutdown(TcpTable *t, Tcb *c, int64_t now) noexcept nogil
cdef void tcp_close(TcpTable *t, Tcb *c, int64_t now) noexcept nogil
cdef void tcp_abort(TcpTable *t, Tcb *c, int64_t now) noexcept nogil
cdef void tcp_release(TcpTable *t, Tcb *c) noexcept nogil
# How many connections of the table are in each state (counts[TcpState]).
cdef void tcp_count_states(const TcpTable *t, uint32_t *counts) noexcept nogil
# The next connection with events, taken off the ready list (NULL: none).
cdef Tcb *tcp_ready(TcpTable *t) noexcept nogil
