# The data plane's engine: peers, routing, staging, the timer reactions and
# the batch paths between the port and UDP.  Keypairs and transport seal/open
# are in wgc/_session.pxd, the epoll loop in wgc/_loop.pxd, the Python face
# in wgc/_dataplane.pyx (DataPlane, a subclass of Core).
#
# Concurrency: one data-plane thread runs Loop.run(core) with the GIL
# released.  Everything it touches is guarded by Core.mutex, which it holds
# for one batch at a time (never while waiting in epoll).  The control plane
# (Python, through DataPlane) takes the same mutex for every change and
# every question, so it never sees a half-processed batch.  Within a batch
# the sealing and opening alone are shared with Core.pool's threads
# (wgc/_workers.pxd), on key copies, and done before the batch goes on.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from wgc._constants cimport INITIATION_SIZE
from wgc._session cimport Keypair, Keypairs, IndexTable
from wgc._staged cimport StagedQueue
from wgc._timers cimport Timers
from wgc._trie cimport AllowedIPs
from wgc._port cimport PacketPort
from wgc._udp cimport BATCH, Endpoint, Datagram, UdpSockets
from wgc._pthread cimport pthread_mutex_t
from wgc._workers cimport AeadJob, WorkerPool

cdef enum:
    SLOT_SIZE = 65536 + 64     # one packet buffer: any IP packet plus the 32-byte header and tag
    # Transport messages of a receive batch opened together (a GRO batch holds
    # up to GRO_RECV_BATCH * 64 KiB of datagrams: more go in further rounds).
    RX_JOBS = 256

# What DataPlane.poll tells the control plane: the bits of an Event's `what`.
cdef enum:
    EVENT_WANT_HANDSHAKE = 1       # packets wait for a session, or it is due for renewal: initiate
    EVENT_HANDSHAKE_RETRY = 2      # no response within Rekey-Timeout: initiate again
    EVENT_HANDSHAKE_GIVEN_UP = 4   # no response after MAX_TIMER_HANDSHAKES retries (staged packets dropped)
    EVENT_PEER_SILENT = 8          # data sent and nothing heard for 15 s: initiate
    EVENT_KEYS_ZEROED = 16         # no new session for 540 s: keypairs wiped, forget the handshake
    EVENT_HANDSHAKE_MESSAGE = 32   # a handshake message arrived (no peer yet)
    EVENT_PORT_GONE = 64           # the TUN is gone: the device cannot go on

# What the data plane counts, by Core.counts and Peer.counts index (their
# wgc/counters.py names: DEVICE_COUNTER_NAMES and PEER_COUNTER_NAMES in
# wgc/_dataplane.pyx).  Plain increments under Core.mutex.
cdef enum:
    COUNT_HANDSHAKE_QUEUE_OVERFLOW  # handshake messages dropped: the queue to the control plane was full
    COUNT_UNKNOWN_RECEIVER_INDEX    # transport messages for no session's index
    COUNT_MALFORMED                 # datagrams of no message type and size
    COUNT_NO_ROUTE                  # packets from the port for no peer, or one without an endpoint
    COUNT_TUN_WRITE_FAILURES        # decrypted packets the port refused
    DEVICE_COUNTS

cdef enum:
    PEER_COUNT_AUTHENTICATION_FAILURES
    PEER_COUNT_REPLAYED
    PEER_COUNT_EXPIRED_SESSION      # Reject-After-Time or Reject-After-Messages
    PEER_COUNT_SOURCE_NOT_ALLOWED
    PEER_COUNT_STAGED_OVERFLOW
    PEER_COUNTS

cdef struct Peer:
    uint32_t slot
    Keypairs keypairs
    Endpoint endpoint
    uint64_t tx_bytes
    uint64_t rx_bytes
    int64_t last_handshake_sec     # wall clock
    int64_t last_handshake_nsec
    Timers timers
    uint32_t events                # EVENT_* bits not yet seen by the control plane
    uint32_t handshake_index       # the index our handshake in progress announced (in Core.index)
    bint has_handshake_index
    StagedQueue staged             # packets waiting for a session
    uint64_t counts[PEER_COUNTS]   # PEER_COUNT_*

# A received transport message whose opening (Core.rx_jobs, same index) waits.
cdef struct RxOpening:
    uint8_t *data
    uint32_t length
    const Endpoint *source

cdef struct HandshakeMsg:
    uint32_t length
    Endpoint source
    uint8_t data[INITIATION_SIZE]     # the largest handshake message


cdef class Core:
    cdef pthread_mutex_t mutex
    cdef AllowedIPs allowed_ips
    cdef Peer **peers
    cdef uint32_t peers_capacity
    cdef uint32_t peer_count
    cdef IndexTable index
    cdef uint32_t mtu
    cdef uint32_t staged_total     # in all peers' queues
    cdef uint64_t jitter_state     # xorshift64* state for timer jitter

    # control-plane queues: handshake messages and peers with events
    cdef HandshakeMsg *handshakes
    cdef uint32_t handshakes_head, handshakes_count
    cdef uint32_t *event_slots
    cdef uint32_t events_head, events_count
    cdef int64_t control_wake      # when the control loop will next look at timers
    cdef bint tun_gone
    cdef uint64_t counts[DEVICE_COUNTS]    # COUNT_*

    cdef int notify_fd             # eventfd the control plane polls on (-1 in sans-I/O mode)
    cdef PacketPort port           # the inner side: the TUN, or a MemoryPort in sans-I/O mode
    cdef UdpSockets udp
    cdef bint capture              # sans-I/O: a MemoryPort, and UDP sends kept in memory

    # batch buffers
    cdef uint8_t *rx_slots         # recvmmsg, decrypted in place
    cdef uint8_t *out_slots
    cdef Datagram out[BATCH]       # encrypted packets waiting for sendmmsg
    cdef Peer *out_peer[BATCH]     # whose tx_bytes each counts toward
    cdef uint32_t out_count
    cdef AeadJob out_jobs[BATCH]   # the sealing of out[i], run at _flush
    cdef AeadJob *rx_jobs          # RX_JOBS openings of the receive batch
    cdef RxOpening *rx_openings
    cdef uint32_t rx_count
    cdef WorkerPool pool           # the threads that run the jobs beside this one

    # internal steps (Cython wants every C method declared here)
    cdef void _lock(self) noexcept
    cdef void _unlock(self) noexcept
    cdef Peer *_peer(self, uint32_t slot) except NULL
    cdef void _notify(self) noexcept nogil
    cdef void _peer_event(self, Peer *p, uint32_t bits) noexcept nogil
    cdef void _drop_event_slot(self, uint32_t slot) noexcept
    cdef void _timers_changed(self, Peer *p) noexcept nogil
    cdef void _want_handshake(self, Peer *p) noexcept nogil
    cdef uint32_t _take_events(self, Peer *p) noexcept nogil
    cdef void _on_transport_sent(self, Peer *p, bint data, int64_t now) noexcept nogil
    cdef void _on_transport_received(self, Peer *p, bint data, int64_t now) noexcept nogil
    cdef void _on_handshake_sent(self, Peer *p, bint initiation, int64_t now) noexcept nogil
    cdef void _on_handshake_received(self, Peer *p, int64_t now) noexcept nogil
    cdef void _on_handshake_complete(self, Peer *p, int64_t wall) noexcept nogil
    cdef void _on_keypair_installed(self, Peer *p, bint is_initiator, int64_t now, int64_t wall) noexcept nogil
    cdef uint32_t _timers_fired(self, Peer *p, int fired, int64_t now, uint32_t *attempts) noexcept nogil
    cdef void _release_handshake_index(self, Peer *p) noexcept nogil
    cdef void _send_keepalive(self, Peer *p, int64_t now) noexcept nogil
    cdef void _stage(self, Peer *p, const uint8_t *packet, uint32_t length) noexcept nogil
    cdef uint8_t *_out_buffer(self) noexcept nogil
    cdef void _out_commit(self, uint32_t length, Peer *p, const Endpoint *dst) noexcept nogil
    cdef void _flush(self) noexcept nogil
    cdef int _send_one(self, const uint8_t *data, uint32_t length, const Endpoint *dst) noexcept nogil
    cdef bint _seal(self, Peer *p, Keypair *kp, uint8_t *out, uint32_t length, int64_t now) noexcept nogil
    cdef void _keep_key_fresh_on_send(self, Peer *p, Keypair *kp, int64_t now) noexcept nogil
    cdef void _send_staged(self, Peer *p, int64_t now) noexcept nogil
    cdef Peer *_route(self, const uint8_t *packet, uint32_t length) noexcept nogil
    cdef void _tx_routed(self, Peer *p, uint8_t *out, uint32_t length, int64_t now) noexcept nogil
    cdef void _tx_packet(self, uint8_t *packet, uint32_t length, int64_t now) noexcept nogil
    cdef void _tx_vnet(self, uint8_t *buffer, uint32_t length, int64_t now) noexcept nogil
    cdef void _queue_handshake(self, const uint8_t *data, uint32_t length, const Endpoint *source) noexcept nogil
    cdef void _confirm(self, Peer *p, Keypair *kp, int64_t now, int64_t wall) noexcept nogil
    cdef void _count_unopened(self, int reason, const Keypair *kp) noexcept nogil
    cdef void _rx_packet(self, uint8_t *data, uint32_t length, const Endpoint *source, int64_t now, int64_t wall) noexcept nogil
    cdef void _rx_open_pending(self, int64_t now, int64_t wall) noexcept nogil
    cdef void _rx_opened(self, const RxOpening *o, const AeadJob *job, int64_t now, int64_t wall) noexcept nogil
    cdef void _tx_batch(self, uint8_t *slots, const uint32_t *lengths, uint32_t count, int64_t now) noexcept nogil
    cdef void _rx_batch(self, uint32_t count, const Endpoint *sources, const uint32_t *lengths,
                        const uint32_t *sizes, int64_t now, int64_t wall) noexcept nogil
