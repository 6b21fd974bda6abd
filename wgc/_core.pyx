# cython: language_level=3
"""The data plane (see _core.pxd for the locking rule).

Packets read from the port (the TUN) are routed by allowed IPs to a peer,
sealed with its current keypair (wgc._session) and sent (wgc._udp); packets
from UDP are opened, checked against the allowed IPs of their peer, and
written to the port.  Handshake messages are only queued here: the control
plane (wgc.device) handles them in Python and installs the resulting keypairs.

The same nogil functions serve the epoll loop and the sans-I/O entry points
(inject_tun, inject_udp), which the protocol tests drive with a fake clock;
in sans-I/O mode the port is a MemoryPort and UDP sends go to memory, cut as
the kernel cuts GSO messages, so those tests run the batching, GSO grouping
and GRO code the daemon runs.
"""
from libc.errno cimport errno, EEXIST, EINTR
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memset
from posix.unistd cimport read, write, close

from wgc._bytes cimport load_le32
from wgc._constants cimport (MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_COOKIE_REPLY, INITIATION_SIZE,
                             RESPONSE_SIZE, COOKIE_REPLY_SIZE, TRANSPORT_HEADER_SIZE, TRANSPORT_MIN_SIZE,
                             SECOND, KEEPALIVE_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX, HANDSHAKE_QUEUE_SIZE,
                             MAX_STAGED_PACKETS, DEFAULT_MTU, MAX_TIMER_HANDSHAKES)
from wgc._crypto cimport random_u64
from wgc._offload cimport VnetHdr, Segmenter, VNET_HDR_LEN, vnet_hdr_load, segmenter_init, segmenter_write
from wgc._port cimport PacketPort, TunPort, MemoryPort
from wgc._session cimport (IndexEntry, index_init, index_free, index_entry, index_claim, index_remove, keypairs_install,
                           keypairs_confirm, keypairs_clear, keypairs_expire_sending, transport_seal,
                           transport_open, transport_inner_source, transport_destination,
                           keypair_sendable, rekey_after_send, rekey_after_receive)
from wgc._timers cimport *
from wgc._trie cimport AllowedIPs
from wgc._udp cimport (endpoint_equal, endpoint_from_python, endpoint_to_python, udp_set_sockets,
                       udp_send_batch, udp_send_one, udp_recv_batch, udp_memory_init, udp_memory_free,
                       udp_memory_take)


cdef extern from "<pthread.h>" nogil:
    int pthread_mutex_init(pthread_mutex_t *m, void *attr)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)
    int pthread_mutex_destroy(pthread_mutex_t *m)

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    int CLOCK_MONOTONIC
    int CLOCK_REALTIME

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_NONBLOCK
    int EFD_CLOEXEC

cdef extern from "<sys/epoll.h>" nogil:
    union epoll_data_t:
        int fd
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    int EPOLL_CTL_ADD
    int EPOLL_CTL_DEL
    int EPOLLIN
    int EPOLL_CLOEXEC

# ---- constants ------------------------------------------------------------

cdef enum:
    MAX_STAGED_TOTAL = 4096          # bounds memory whatever the number of peers
    MIN_PEERS_CAPACITY = 16


cdef inline void clock_now(int64_t *mono, int64_t *wall) noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    mono[0] = <int64_t>ts.tv_sec * SECOND + ts.tv_nsec
    clock_gettime(CLOCK_REALTIME, &ts)
    wall[0] = <int64_t>ts.tv_sec * SECOND + ts.tv_nsec


cdef inline int64_t jitter(uint64_t *state) noexcept nogil:
    """A delay below REKEY_TIMEOUT_JITTER_MAX from xorshift64*: timers need spread, not
    secrecy, and a getrandom call per data packet would cost a system call."""
    cdef uint64_t x = state[0]
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    state[0] = x
    return <int64_t>((x * <uint64_t>0x2545F4914F6CDD1D) % <uint64_t>REKEY_TIMEOUT_JITTER_MAX)

cdef class Event:
    """One thing Core.poll tells the control plane: `what` holds EVENT_* bits
    for the peer in `slot` (-1: none); a handshake message comes with its
    source address and the backlog of queued messages, itself included;
    EVENT_HANDSHAKE_RETRY with the number of retries so far."""
    cdef readonly uint32_t what
    cdef readonly int slot
    cdef readonly uint32_t attempts
    cdef readonly bytes message
    cdef readonly object source
    cdef readonly uint32_t backlog

    def __repr__(self):
        return f"Event(what={self.what:#x}, slot={self.slot})"


cdef Event make_event(uint32_t what, int slot=-1, uint32_t attempts=0, bytes message=None,
                      source=None, uint32_t backlog=0):
    cdef Event e = Event.__new__(Event)
    e.what, e.slot, e.attempts = what, slot, attempts
    e.message, e.source, e.backlog = message, source, backlog
    return e


# The EVENT_* bits (wgc/_core.pxd), for the control plane.
WANT_HANDSHAKE = EVENT_WANT_HANDSHAKE
HANDSHAKE_RETRY = EVENT_HANDSHAKE_RETRY
HANDSHAKE_GIVEN_UP = EVENT_HANDSHAKE_GIVEN_UP
PEER_SILENT = EVENT_PEER_SILENT
KEYS_ZEROED = EVENT_KEYS_ZEROED
HANDSHAKE_MESSAGE = EVENT_HANDSHAKE_MESSAGE
PORT_GONE = EVENT_PORT_GONE


cdef class Core:
    """The data plane of one device.  Create with capture=True for sans-I/O use."""

    def __cinit__(self, bint capture=False):
        pthread_mutex_init(&self.mutex, NULL)
        self.allowed_ips = AllowedIPs()
        self.peers_capacity = MIN_PEERS_CAPACITY
        self.peers = <Peer **>calloc(self.peers_capacity, sizeof(Peer *))
        self.event_slots = <uint32_t *>calloc(self.peers_capacity, sizeof(uint32_t))
        self.handshakes = <HandshakeMsg *>malloc(HANDSHAKE_QUEUE_SIZE * sizeof(HandshakeMsg))
        # Batch buffers: only the pages that packets touch become resident.
        self.rx_slots = <uint8_t *>malloc(<size_t>BATCH * SLOT_SIZE)
        self.out_slots = <uint8_t *>malloc(<size_t>BATCH * SLOT_SIZE)
        self.mtu = DEFAULT_MTU
        self.jitter_state = random_u64() | 1
        self.udp.offload = True
        udp_set_sockets(&self.udp, -1, -1)
        self.epoll_fd = -1
        # Until set_tun: a port that reads nothing and drops what is written.
        self.port = MemoryPort() if capture else PacketPort()
        self.stop_fd = self.notify_fd = -1
        self.capture = capture
        if (self.peers == NULL or self.event_slots == NULL or index_init(&self.index) != 0
                or self.handshakes == NULL or self.rx_slots == NULL
                or self.out_slots == NULL or (capture and udp_memory_init(&self.udp) != 0)):
            raise MemoryError()
        if not capture:
            self.notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
            self.stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
            self.epoll_fd = epoll_create1(EPOLL_CLOEXEC)
            if self.notify_fd < 0 or self.stop_fd < 0 or self.epoll_fd < 0:
                raise OSError(errno, "cannot create the data plane's event descriptors")
            self._watch(self.stop_fd)

    def __dealloc__(self):
        cdef uint32_t i
        for i in range(self.peers_capacity):
            if self.peers != NULL and self.peers[i] != NULL:
                self._clear_staged(self.peers[i])
                keypairs_clear(&self.index, &self.peers[i].keypairs)
                free(self.peers[i])
        for fd in (self.notify_fd, self.stop_fd, self.epoll_fd):
            if fd >= 0:
                close(fd)
        free(self.peers)
        free(self.event_slots)
        index_free(&self.index)
        free(self.handshakes)
        free(self.rx_slots)
        free(self.out_slots)
        udp_memory_free(&self.udp)
        pthread_mutex_destroy(&self.mutex)

    # -- locking from Python: wait without the GIL; the data plane never needs it

    cdef void _lock(self) noexcept:
        with nogil:
            pthread_mutex_lock(&self.mutex)

    cdef void _unlock(self) noexcept:
        pthread_mutex_unlock(&self.mutex)

    cdef Peer *_peer(self, uint32_t slot) except NULL:
        if slot >= self.peers_capacity or self.peers[slot] == NULL:
            raise KeyError(slot)
        return self.peers[slot]

    cdef void _watch(self, int fd) except *:
        cdef epoll_event ev
        ev.events = EPOLLIN
        ev.data.u64 = 0
        ev.data.fd = fd
        if epoll_ctl(self.epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0:
            raise OSError(errno, "epoll_ctl")

    cdef void _unwatch(self, int fd) noexcept:
        cdef epoll_event ev
        if fd >= 0:
            epoll_ctl(self.epoll_fd, EPOLL_CTL_DEL, fd, &ev)

    # -- signalling the control plane ---------------------------------------

    cdef void _notify(self) noexcept nogil:
        cdef uint64_t one = 1
        if self.notify_fd >= 0:
            write(self.notify_fd, &one, 8)

    cdef void _peer_event(self, Peer *p, uint32_t bits) noexcept nogil:
        if p.events == 0:
            self.event_slots[(self.events_head + self.events_count) % self.peers_capacity] = p.slot
            self.events_count += 1
            self._notify()
        p.events |= bits

    cdef void _drop_event_slot(self, uint32_t slot) noexcept:
        """Removes a (departing) peer's entry from the event queue."""
        cdef uint32_t i, kept = 0, s
        for i in range(self.events_count):
            s = self.event_slots[(self.events_head + i) % self.peers_capacity]
            if s != slot:
                self.event_slots[(self.events_head + kept) % self.peers_capacity] = s
                kept += 1
        self.events_count = kept

    cdef void _want_handshake(self, Peer *p) noexcept nogil:
        self._peer_event(p, EVENT_WANT_HANDSHAKE)

    cdef uint32_t _take_events(self, Peer *p) noexcept nogil:
        """p's queued EVENT_* bits, now seen by the control plane."""
        cdef uint32_t bits = p.events
        p.events = 0
        if bits & EVENT_WANT_HANDSHAKE:
            p.timers.handshake_attempts = 0     # a fresh initiation counts its retries anew
        return bits

    # -- timer and rekey reactions: every one of them is in this section ----------

    cdef void _timers_changed(self, Peer *p) noexcept nogil:
        """Wakes the control loop if p now has a deadline before its planned wake-up."""
        cdef int64_t d = timers_next(&p.timers)
        if d != 0 and self.control_wake != 0 and d < self.control_wake:
            self.control_wake = 0
            self._notify()

    cdef void _keep_key_fresh_on_send(self, Peer *p, Keypair *kp, int64_t now) noexcept nogil:
        if rekey_after_send(kp, now):
            self._want_handshake(p)

    cdef void _on_transport_sent(self, Peer *p, bint data, int64_t now) noexcept nogil:
        timers_any_authenticated_packet_traversal(&p.timers, now)
        timers_any_authenticated_packet_sent(&p.timers)
        if data:
            timers_data_sent(&p.timers, now, jitter(&self.jitter_state))

    cdef void _on_transport_received(self, Peer *p, bint data, int64_t now) noexcept nogil:
        if not p.timers.sent_lastminute_handshake and rekey_after_receive(&p.keypairs, now):
            p.timers.sent_lastminute_handshake = True
            self._want_handshake(p)
        timers_any_authenticated_packet_received(&p.timers)
        timers_any_authenticated_packet_traversal(&p.timers, now)
        if data:
            timers_data_received(&p.timers, now)
        self._timers_changed(p)

    cdef void _on_handshake_sent(self, Peer *p, bint initiation, int64_t now) noexcept nogil:
        timers_any_authenticated_packet_traversal(&p.timers, now)
        timers_any_authenticated_packet_sent(&p.timers)
        if initiation:
            timers_handshake_initiated(&p.timers, now, jitter(&self.jitter_state))

    cdef void _on_handshake_received(self, Peer *p, int64_t now) noexcept nogil:
        timers_any_authenticated_packet_received(&p.timers)
        timers_any_authenticated_packet_traversal(&p.timers, now)

    cdef void _on_handshake_complete(self, Peer *p, int64_t wall) noexcept nogil:
        """We can send on the new session: an initiator's at once, a responder's
        once its first packet confirms it."""
        timers_handshake_complete(&p.timers)
        p.last_handshake_sec = wall // SECOND
        p.last_handshake_nsec = wall % SECOND

    cdef void _on_keypair_installed(self, Peer *p, bint is_initiator, int64_t now, int64_t wall) noexcept nogil:
        if is_initiator:
            self._on_handshake_complete(p, wall)
        timers_session_derived(&p.timers, now)

    cdef uint32_t _timers_fired(self, Peer *p, int fired, int64_t now, uint32_t *attempts) noexcept nogil:
        """Does the data plane's part of what p's expired timers (TIMER_* bits)
        call for; returns the EVENT_* bits the control plane does the rest
        for, with the retry count in attempts."""
        cdef uint32_t what = 0
        if fired & TIMER_RETRANSMIT_HANDSHAKE:
            if p.timers.handshake_attempts > MAX_TIMER_HANDSHAKES:
                what |= EVENT_HANDSHAKE_GIVEN_UP
                self._clear_staged(p)
                # Nothing more to answer; forget any half-made session later.
                p.timers.send_keepalive = 0
                if p.timers.zero_key_material == 0:
                    timers_session_derived(&p.timers, now)
            else:
                p.timers.handshake_attempts += 1
                attempts[0] = p.timers.handshake_attempts
                what |= EVENT_HANDSHAKE_RETRY
        if fired & TIMER_SEND_KEEPALIVE:
            self._send_keepalive(p, now)
            if p.timers.need_another_keepalive:
                # More data arrived while the keepalive timer was pending.
                p.timers.need_another_keepalive = False
                p.timers.send_keepalive = now + KEEPALIVE_TIMEOUT
        if fired & TIMER_NEW_HANDSHAKE:
            p.timers.handshake_attempts = 0
            what |= EVENT_PEER_SILENT
        if fired & TIMER_ZERO_KEY_MATERIAL:
            keypairs_clear(&self.index, &p.keypairs)
            self._release_handshake_index(p)
            what |= EVENT_KEYS_ZEROED
        if fired & TIMER_PERSISTENT_KEEPALIVE and p.timers.persistent_keepalive_interval:
            self._send_keepalive(p, now)
        return what

    # -- per-peer state the control plane resets --------------------------------

    cdef void _release_handshake_index(self, Peer *p) noexcept nogil:
        if p.has_handshake_index:
            index_remove(&self.index, p.handshake_index)
            p.has_handshake_index = False

    cdef void _clear_staged(self, Peer *p) noexcept nogil:
        cdef Staged *s = p.staged_head
        cdef Staged *n
        while s != NULL:
            n = s.next
            free(s)
            s = n
        self.staged_total -= p.staged_count
        p.staged_head = p.staged_tail = NULL
        p.staged_count = 0

    cdef void _send_keepalive(self, Peer *p, int64_t now) noexcept nogil:
        """As the kernel does: an empty packet is staged unless packets are
        already waiting (they confirm the session as well), so that without a
        session it waits for the handshake this asks for."""
        if p.staged_count == 0:
            self._stage(p, NULL, 0)
        self._send_staged(p, now)
        self._flush()

    # -- sending ------------------------------------------------------------

    cdef uint8_t *_out_buffer(self) noexcept nogil:
        if self.out_count == BATCH:
            self._flush()
        return self.out_slots + <size_t>self.out_count * SLOT_SIZE

    cdef void _out_commit(self, uint32_t length, Peer *p, const Endpoint *dst) noexcept nogil:
        cdef Datagram *o = &self.out[self.out_count]
        o.data = self.out_slots + <size_t>self.out_count * SLOT_SIZE
        o.length = length
        o.destination = dst[0]
        self.out_peer[self.out_count] = p
        self.out_count += 1

    cdef void _flush(self) noexcept nogil:
        """Sends the pending encrypted packets and counts what left."""
        cdef bint sent[BATCH]
        cdef uint32_t i
        udp_send_batch(&self.udp, self.out, self.out_count, sent)
        for i in range(self.out_count):
            if sent[i] and self.out_peer[i] != NULL:
                self.out_peer[i].tx_bytes += self.out[i].length
        self.out_count = 0

    cdef bint _send_one(self, const uint8_t *data, uint32_t length, const Endpoint *dst) noexcept nogil:
        """Sends one datagram now (handshakes, cookie replies); True if it left."""
        return udp_send_one(&self.udp, data, length, dst)

    cdef bint _seal(self, Peer *p, Keypair *kp, uint8_t *out, uint32_t length,
                    int64_t now) noexcept nogil:
        """Encrypts the packet (length 0 = keepalive) already placed at
        out + TRANSPORT_HEADER_SIZE in the next out slot and commits it for p; False
        (nothing sent) if kp cannot send now."""
        cdef uint32_t sealed = transport_seal(kp, out, length, self.mtu, now)
        if sealed == 0:
            return False
        self._out_commit(sealed, p, &p.endpoint)
        self._on_transport_sent(p, length != 0, now)
        return True

    cdef void _send_staged(self, Peer *p, int64_t now) noexcept nogil:
        """Encrypts every staged packet if p has a usable keypair, else asks for a handshake."""
        cdef Keypair *kp = p.keypairs.current
        cdef Staged *s
        cdef uint8_t *out
        if p.staged_count == 0:
            return
        if not keypair_sendable(kp, now) or p.endpoint.family == 0:
            self._want_handshake(p)
            return
        while p.staged_head != NULL:
            s = p.staged_head
            p.staged_head = s.next
            out = self._out_buffer()
            memcpy(out + TRANSPORT_HEADER_SIZE, s + 1, s.length)
            self._seal(p, kp, out, s.length, now)
            free(s)
        p.staged_tail = NULL
        self.staged_total -= p.staged_count
        p.staged_count = 0
        self._keep_key_fresh_on_send(p, kp, now)
        self._timers_changed(p)

    cdef void _stage(self, Peer *p, const uint8_t *packet, uint32_t length) noexcept nogil:
        cdef Staged *s
        if p.staged_count >= MAX_STAGED_PACKETS:
            # The kernel drops the oldest packet of a full queue.
            s = p.staged_head
            p.staged_head = s.next
            p.staged_count -= 1
            self.staged_total -= 1
            free(s)
            if p.staged_head == NULL:
                p.staged_tail = NULL
        elif self.staged_total >= MAX_STAGED_TOTAL:
            return
        s = <Staged *>malloc(sizeof(Staged) + length)
        if s == NULL:
            return
        s.next = NULL
        s.length = length
        if length:
            memcpy(s + 1, packet, length)
        if p.staged_tail != NULL:
            p.staged_tail.next = s
        else:
            p.staged_head = s
        p.staged_tail = s
        p.staged_count += 1
        self.staged_total += 1

    cdef Peer *_route(self, const uint8_t *packet, uint32_t length) noexcept nogil:
        """The peer whose allowed IPs hold the packet's destination, if it has an endpoint."""
        cdef int slot = transport_destination(self.allowed_ips, packet, length)
        cdef Peer *p
        if slot < 0:
            return NULL
        p = self.peers[slot]
        if p == NULL or p.endpoint.family == 0:
            return NULL
        return p

    cdef void _tx_routed(self, Peer *p, uint8_t *out, uint32_t length, int64_t now) noexcept nogil:
        """Seals the packet at out + TRANSPORT_HEADER_SIZE (the next out slot) for p, or stages it."""
        cdef Keypair *kp = p.keypairs.current
        if p.staged_count == 0 and self._seal(p, kp, out, length, now):
            self._keep_key_fresh_on_send(p, kp, now)
            self._timers_changed(p)
        else:
            self._stage(p, out + TRANSPORT_HEADER_SIZE, length)
            self._send_staged(p, now)

    cdef void _tx_packet(self, uint8_t *packet, uint32_t length, int64_t now) noexcept nogil:
        """One IP packet from the TUN: route by destination, then seal or stage."""
        cdef Peer *p = self._route(packet, length)
        cdef uint8_t *out
        if p == NULL:
            return
        out = self._out_buffer()
        memcpy(out + TRANSPORT_HEADER_SIZE, packet, length)
        self._tx_routed(p, out, length, now)

    cdef void _tx_vnet(self, uint8_t *buffer, uint32_t length, int64_t now) noexcept nogil:
        """One read from a vnet TUN: cut it into packets, each written straight
        into an out slot and sealed there."""
        cdef VnetHdr h
        cdef Segmenter seg
        cdef uint32_t i, count
        cdef uint8_t *out
        cdef Peer *p
        if length <= VNET_HDR_LEN:
            return
        vnet_hdr_load(&h, buffer)
        count = segmenter_init(&seg, &h, buffer + VNET_HDR_LEN, length - VNET_HDR_LEN)
        if count == 0:
            return
        p = self._route(buffer + VNET_HDR_LEN, length - VNET_HDR_LEN)
        if p == NULL:
            return
        for i in range(count):
            out = self._out_buffer()
            self._tx_routed(p, out, segmenter_write(&seg, i, out + TRANSPORT_HEADER_SIZE), now)

    # -- receiving ----------------------------------------------------------

    cdef void _queue_handshake(self, const uint8_t *data, uint32_t length,
                               const Endpoint *source) noexcept nogil:
        cdef HandshakeMsg *m
        if self.handshakes_count == HANDSHAKE_QUEUE_SIZE:
            return
        m = &self.handshakes[(self.handshakes_head + self.handshakes_count) % HANDSHAKE_QUEUE_SIZE]
        m.length = length
        m.source = source[0]
        memcpy(m.data, data, length)
        self.handshakes_count += 1
        if self.handshakes_count == 1:
            self._notify()

    cdef void _confirm(self, Peer *p, Keypair *kp, int64_t now, int64_t wall) noexcept nogil:
        """The first packet on a responder's next keypair: it becomes current."""
        keypairs_confirm(&self.index, &p.keypairs)
        self._on_handshake_complete(p, wall)
        self._send_staged(p, now)

    cdef void _rx_packet(self, uint8_t *data, uint32_t length, const Endpoint *source,
                         int64_t now, int64_t wall) noexcept nogil:
        """One UDP datagram: queue handshakes, open transport data."""
        cdef uint32_t kind, inner, inner_len
        cdef Keypair *kp
        cdef Peer *p
        cdef uint8_t *plain = data + TRANSPORT_HEADER_SIZE
        if length < 4:
            return
        kind = load_le32(data)
        if ((kind == MESSAGE_INITIATION and length == INITIATION_SIZE)
                or (kind == MESSAGE_RESPONSE and length == RESPONSE_SIZE)
                or (kind == MESSAGE_COOKIE_REPLY and length == COOKIE_REPLY_SIZE)):
            self._queue_handshake(data, length, source)
            return
        kp = transport_open(&self.index, plain, data, length, now)
        if kp == NULL:
            return
        p = self.peers[kp.slot]
        # Authenticated: roam to wherever it came from.
        if not endpoint_equal(&p.endpoint, source):
            p.endpoint = source[0]
        if kp == p.keypairs.next:
            self._confirm(p, kp, now, wall)
        inner = length - TRANSPORT_MIN_SIZE
        self._on_transport_received(p, inner != 0, now)
        if inner == 0:
            p.rx_bytes += length
            return
        # The source address must be one this peer may use.
        if transport_inner_source(self.allowed_ips, plain, inner, &inner_len) != <int>p.slot:
            return
        self.port.write(plain, inner_len)
        p.rx_bytes += length

    # -- the epoll loop -------------------------------------------------------

    cdef bint _tun_readable(self) noexcept nogil:
        """Seals and sends what the port read; False once it is gone."""
        cdef uint8_t *slots
        cdef uint32_t *lengths
        cdef uint64_t value
        cdef int count
        cdef int64_t now, wall
        cdef bint gone
        read(self.port.ready_fd, &value, 8)
        while True:
            pthread_mutex_lock(&self.mutex)
            count = self.port.take(&slots, &lengths)
            if count >= 0:
                clock_now(&now, &wall)
                self._tx_batch(slots, lengths, count, now)
                self.port.release()
            pthread_mutex_unlock(&self.mutex)
            if count < 0:
                break
        pthread_mutex_lock(&self.mutex)
        gone = self.port.gone()
        if gone:
            self.tun_gone = True
            self._notify()
        pthread_mutex_unlock(&self.mutex)
        return not gone

    cdef void _tx_batch(self, uint8_t *slots, const uint32_t *lengths, uint32_t count,
                        int64_t now) noexcept nogil:
        """Routes and seals count packets read from the port (slot i at
        slots + i * SLOT_SIZE), then sends them."""
        cdef uint32_t i
        for i in range(count):
            if self.port.vnet_hdr:
                self._tx_vnet(slots + <size_t>i * SLOT_SIZE, lengths[i], now)
            else:
                self._tx_packet(slots + <size_t>i * SLOT_SIZE, lengths[i], now)
        self._flush()

    cdef void _rx_batch(self, uint32_t count, const Endpoint *sources, const uint32_t *lengths,
                        const uint32_t *sizes, int64_t now, int64_t wall) noexcept nogil:
        """Opens the count messages in rx_slots and delivers them, then writes
        and sends what they produced.  With UDP GRO one message may hold
        several datagrams of sizes[i] bytes from the same source (the last
        may be shorter); sizes[i] == 0: one datagram."""
        cdef uint32_t i, offset, chunk
        cdef uint8_t *data
        for i in range(count):
            data = self.rx_slots + <size_t>i * SLOT_SIZE
            chunk = sizes[i] if sizes[i] else lengths[i]
            offset = 0
            while offset < lengths[i]:
                self._rx_packet(data + offset, min(chunk, lengths[i] - offset), &sources[i], now, wall)
                offset += chunk
        self.port.flush()
        self._flush()

    cdef void _udp_readable(self, int fd) noexcept nogil:
        cdef Endpoint sources[BATCH]
        cdef uint32_t lengths[BATCH]
        cdef uint32_t sizes[BATCH]
        cdef int n
        cdef int64_t now, wall
        pthread_mutex_lock(&self.mutex)
        # The control plane may have replaced the sockets since epoll saw fd.
        if fd == self.udp.fd[0] or fd == self.udp.fd[1]:
            n = udp_recv_batch(fd, self.rx_slots, SLOT_SIZE, BATCH, sources, lengths, sizes)
            if n > 0:
                clock_now(&now, &wall)
                self._rx_batch(n, sources, lengths, sizes, now, wall)
        pthread_mutex_unlock(&self.mutex)

    cdef void _loop(self) noexcept nogil:
        cdef epoll_event events[8]
        cdef int n, i, fd
        cdef uint64_t value
        while not self.stopping:
            n = epoll_wait(self.epoll_fd, events, 8, -1)
            if n < 0:
                if errno == EINTR:
                    continue
                break
            for i in range(n):
                fd = events[i].data.fd
                if fd == self.stop_fd:
                    read(self.stop_fd, &value, 8)
                elif fd == self.port.ready_fd:
                    if not self._tun_readable():
                        return
                else:
                    self._udp_readable(fd)

    def run(self):
        """The data-plane loop; returns after stop() or when the TUN is gone."""
        cdef PacketPort port = self.port
        if self.capture:
            raise RuntimeError("a sans-I/O data plane has no loop")
        port.start(BATCH, SLOT_SIZE)
        try:
            if port.ready_fd < 0:
                raise RuntimeError("the data plane runs on a port that reads; set_tun first")
            self._watch(port.ready_fd)
            with nogil:
                self._loop()
        finally:
            self._unwatch(port.ready_fd)
            port.stop()

    def stop(self):
        cdef uint64_t one = 1
        self.stopping = True
        if self.stop_fd >= 0:
            write(self.stop_fd, &one, 8)

    # -- Python face: I/O set-up ------------------------------------------------

    def set_tun(self, int fd, bint vnet_hdr=False):
        """The TUN descriptor (non-blocking) the loop reads and writes; with
        vnet_hdr every packet on it carries a virtio_net_hdr.  Before run()."""
        self.set_port(TunPort(fd, vnet_hdr=vnet_hdr))

    def set_port(self, PacketPort port not None):
        """The inner side the data plane reads and writes (a TunPort, or a
        MemoryPort for tests).  Before run()."""
        self._lock()
        try:
            self.port.flush()
            self.port = port
        finally:
            self._unlock()

    def set_sockets(self, int fd4, int fd6):
        """Replaces the UDP sockets (-1 for none); the caller closes the old ones."""
        self._lock()
        try:
            for fd in self.udp.fd:
                self._unwatch(fd)
            udp_set_sockets(&self.udp, fd4, fd6)
            for fd in self.udp.fd:
                if fd >= 0:
                    self._watch(fd)
        finally:
            self._unlock()

    def set_mtu(self, uint32_t mtu):
        self.mtu = mtu

    def set_udp_offload(self, bint enabled):
        """Whether sockets set from now on use UDP GSO (send) and GRO (receive)."""
        self.udp.offload = enabled

    @property
    def notify_fd(self):
        """Readable when the control plane should poll: handshakes, events, or an earlier timer."""
        return self.notify_fd

    # -- Python face: peers -----------------------------------------------------

    def add_peer(self):
        """A new peer slot (its id in allowed IPs and in events)."""
        cdef uint32_t slot, i, size
        cdef Peer **peers
        cdef uint32_t *events
        self._lock()
        try:
            for slot in range(self.peers_capacity):
                if self.peers[slot] == NULL:
                    break
            else:
                size = self.peers_capacity * 2
                peers = <Peer **>calloc(size, sizeof(Peer *))
                events = <uint32_t *>calloc(size, sizeof(uint32_t))
                if peers == NULL or events == NULL:
                    free(peers)
                    free(events)
                    raise MemoryError()
                memcpy(peers, self.peers, self.peers_capacity * sizeof(Peer *))
                for i in range(self.events_count):
                    events[i] = self.event_slots[(self.events_head + i) % self.peers_capacity]
                free(self.peers)
                free(self.event_slots)
                self.peers, self.event_slots = peers, events
                self.events_head = 0
                slot = self.peers_capacity
                self.peers_capacity = size
            self.peers[slot] = <Peer *>calloc(1, sizeof(Peer))
            if self.peers[slot] == NULL:
                raise MemoryError()
            self.peers[slot].slot = slot
            self.peer_count += 1
            return slot
        finally:
            self._unlock()

    def remove_peer(self, uint32_t slot):
        cdef Peer *p
        self._lock()
        try:
            p = self._peer(slot)
            self.allowed_ips.remove_peer(slot)
            self._clear_staged(p)
            keypairs_clear(&self.index, &p.keypairs)
            self._release_handshake_index(p)
            if p.events:
                self._drop_event_slot(slot)
            self.peers[slot] = NULL
            self.peer_count -= 1
            free(p)
        finally:
            self._unlock()

    def set_endpoint(self, uint32_t slot, address):
        """address: (host, port[, flowinfo, scope_id]) with a numeric host, or None."""
        cdef Endpoint e
        if address is None:
            memset(&e, 0, sizeof(Endpoint))
        else:
            endpoint_from_python(&e, address)
        self._lock()
        try:
            self._peer(slot).endpoint = e
        finally:
            self._unlock()

    def endpoint(self, uint32_t slot):
        self._lock()
        try:
            return endpoint_to_python(&self._peer(slot).endpoint)
        finally:
            self._unlock()

    def set_persistent_keepalive(self, uint32_t slot, uint32_t interval):
        self._lock()
        try:
            self._peer(slot).timers.persistent_keepalive_interval = interval
        finally:
            self._unlock()

    def stats(self, uint32_t slot):
        """(tx_bytes, rx_bytes, last_handshake_sec, last_handshake_nsec)."""
        cdef Peer *p
        self._lock()
        try:
            p = self._peer(slot)
            return (p.tx_bytes, p.rx_bytes, p.last_handshake_sec, p.last_handshake_nsec)
        finally:
            self._unlock()

    # -- Python face: allowed IPs (mutated under the lock the loop reads under) --

    def allowed_ip_insert(self, bytes addr, int cidr, uint32_t slot):
        self._lock()
        try:
            self.allowed_ips.insert(addr, cidr, slot)
        finally:
            self._unlock()

    def allowed_ip_remove(self, bytes addr, int cidr, uint32_t slot):
        self._lock()
        try:
            return self.allowed_ips.remove(addr, cidr, slot)
        finally:
            self._unlock()

    def allowed_ips_clear(self, uint32_t slot):
        self._lock()
        try:
            self.allowed_ips.remove_peer(slot)
        finally:
            self._unlock()

    def allowed_ips_of(self, uint32_t slot):
        self._lock()
        try:
            return self.allowed_ips.entries(slot)
        finally:
            self._unlock()

    def route(self, bytes addr):
        """The peer slot allowed IPs give for addr, or -1."""
        self._lock()
        try:
            return self.allowed_ips.lookup(addr)
        finally:
            self._unlock()

    # -- Python face: sessions and receiver indices -------------------------------

    def new_handshake_index(self, uint32_t slot):
        """A fresh receiver index for the peer's next handshake message, in
        place of the one its last handshake announced; Core owns every index
        (handshakes' and keypairs'), so none is given twice."""
        cdef Peer *p
        cdef uint32_t index
        cdef int err
        self._lock()
        try:
            p = self._peer(slot)
            self._release_handshake_index(p)
            while True:
                index = <uint32_t>random_u64()
                err = index_claim(&self.index, index, slot)
                if err == 0:
                    break
                if err != -EEXIST:
                    raise MemoryError()
            p.handshake_index = index
            p.has_handshake_index = True
            return index
        finally:
            self._unlock()

    def handshake_peer(self, uint32_t index):
        """The peer slot whose handshake in progress announced index, or -1."""
        cdef const IndexEntry *e
        self._lock()
        try:
            e = index_entry(&self.index, index)
            return -1 if e == NULL or e.keypair != NULL else <int>e.slot
        finally:
            self._unlock()

    def index_peer(self, uint32_t index):
        """The peer slot owning receiver index (a keypair's or a handshake's), or -1."""
        cdef const IndexEntry *e
        self._lock()
        try:
            e = index_entry(&self.index, index)
            return -1 if e == NULL else <int>e.slot
        finally:
            self._unlock()

    def install_keypair(self, uint32_t slot, bytes send_key, bytes recv_key,
                        uint32_t local_index, uint32_t remote_index, bint is_initiator,
                        int64_t now, int64_t wall):
        """Adds a keypair from a completed handshake, rotating as the kernel does:
        the initiator's becomes current at once (and the handshake is complete);
        the responder's waits in next until the peer's first packet confirms it.
        The keypair takes over the handshake's receiver index."""
        cdef Peer *p
        cdef int err
        if len(send_key) != 32 or len(recv_key) != 32:
            raise ValueError("keys must be 32 bytes")
        self._lock()
        try:
            p = self._peer(slot)
            self._release_handshake_index(p)
            err = keypairs_install(&self.index, &p.keypairs, slot, <const uint8_t *><const char *>send_key,
                                   <const uint8_t *><const char *>recv_key,
                                   local_index, remote_index, is_initiator, now)
            if err == -EEXIST:
                raise ValueError("receiver index already in use")
            if err != 0:
                raise MemoryError()
            self._on_keypair_installed(p, is_initiator, now, wall)
        finally:
            self._unlock()

    def expire_sending(self, uint32_t slot):
        """Stops sending with the current and next keypairs (receiving goes on)
        and forgets the handshake in progress, so the next packet out asks for
        a new handshake: after a key change."""
        cdef Peer *p
        self._lock()
        try:
            p = self._peer(slot)
            keypairs_expire_sending(&p.keypairs)
            self._release_handshake_index(p)
        finally:
            self._unlock()

    def reset_peer(self, uint32_t slot):
        """The link went down: forgets the peer's keypairs, handshake index,
        staged packets and timers."""
        cdef Peer *p
        self._lock()
        try:
            p = self._peer(slot)
            keypairs_clear(&self.index, &p.keypairs)
            self._release_handshake_index(p)
            self._clear_staged(p)
            timers_stop(&p.timers)
        finally:
            self._unlock()

    def has_current_keypair(self, uint32_t slot, int64_t now):
        self._lock()
        try:
            return keypair_sendable(self._peer(slot).keypairs.current, now)
        finally:
            self._unlock()

    # -- Python face: sending and receiving for the control plane -------------------

    def send_keepalive(self, uint32_t slot, int64_t now):
        """Sends a keepalive (see _send_keepalive)."""
        self._lock()
        try:
            self._send_keepalive(self._peer(slot), now)
        finally:
            self._unlock()

    def send_staged(self, uint32_t slot, int64_t now):
        self._lock()
        try:
            self._send_staged(self._peer(slot), now)
            self._flush()
        finally:
            self._unlock()

    def send_handshake(self, uint32_t slot, const uint8_t[:] message, int64_t now, bint initiation=False):
        """Sends a handshake message (an initiation, or a response) to the
        peer's endpoint, counting it in tx_bytes and arming its timers."""
        cdef Peer *p
        cdef bint sent
        self._lock()
        try:
            p = self._peer(slot)
            sent = self._send_one(&message[0], message.shape[0], &p.endpoint)
            if sent:
                p.tx_bytes += message.shape[0]
            self._on_handshake_sent(p, initiation, now)
            return sent
        finally:
            self._unlock()

    def handshake_received(self, uint32_t slot, uint32_t length, int64_t now):
        """An authenticated handshake message of length bytes came from the peer."""
        cdef Peer *p
        self._lock()
        try:
            p = self._peer(slot)
            p.rx_bytes += length
            self._on_handshake_received(p, now)
        finally:
            self._unlock()

    def send_to(self, address, const uint8_t[:] message):
        """Sends an uncounted datagram (a cookie reply) to address."""
        cdef Endpoint e
        endpoint_from_python(&e, address)
        self._lock()
        try:
            return self._send_one(&message[0], message.shape[0], &e)
        finally:
            self._unlock()

    # -- Python face: what happened, for the control plane ---------------------------

    def poll(self, int64_t now, uint32_t budget=256):
        """What the control plane has to act on, as a list of Events: peers
        whose packets want a handshake; the reactions to every timer due at
        now (the data plane's own part, keepalives, wiping keys, dropping
        staged packets, is done here); then up to budget handshake messages.
        Only [Event(EVENT_PORT_GONE)] once the port is gone.  Clears
        notify_fd, and makes it readable again when messages are left over."""
        cdef uint32_t slot, what, attempts
        cdef int fired
        cdef uint64_t value
        cdef Peer *p
        cdef HandshakeMsg *m
        result = []
        if self.notify_fd >= 0:
            read(self.notify_fd, &value, 8)
        self._lock()
        try:
            if self.tun_gone:
                return [make_event(EVENT_PORT_GONE)]
            while self.events_count:
                slot = self.event_slots[self.events_head]
                self.events_head = (self.events_head + 1) % self.peers_capacity
                self.events_count -= 1
                p = self.peers[slot] if slot < self.peers_capacity else NULL
                if p != NULL and p.events:
                    result.append(make_event(self._take_events(p), slot))
            for slot in range(self.peers_capacity):
                p = self.peers[slot]
                if p != NULL:
                    fired = timers_expired(&p.timers, now)
                    attempts = 0
                    what = self._timers_fired(p, fired, now, &attempts) if fired else 0
                    if what:
                        result.append(make_event(what, slot, attempts))
            while self.handshakes_count and budget:
                m = &self.handshakes[self.handshakes_head]
                result.append(make_event(EVENT_HANDSHAKE_MESSAGE, -1, 0, m.data[:m.length],
                                         endpoint_to_python(&m.source), self.handshakes_count))
                self.handshakes_head = (self.handshakes_head + 1) % HANDSHAKE_QUEUE_SIZE
                self.handshakes_count -= 1
                budget -= 1
            if self.handshakes_count:
                self._notify()
        finally:
            self._unlock()
        return result

    def next_deadline(self):
        """The earliest pending timer (0 = none); the data plane wakes the control
        loop through notify_fd if it arms an earlier one after this call."""
        cdef uint32_t slot
        cdef int64_t d, earliest = 0
        self._lock()
        try:
            for slot in range(self.peers_capacity):
                if self.peers[slot] != NULL:
                    d = timers_next(&self.peers[slot].timers)
                    if d and (earliest == 0 or d < earliest):
                        earliest = d
            self.control_wake = earliest if earliest else (1 << 62)
            return earliest
        finally:
            self._unlock()

    def timer_deadlines(self, uint32_t slot):
        """The peer's pending deadlines by name (for tests and diagnostics)."""
        cdef Peer *p
        self._lock()
        try:
            p = self._peer(slot)
            return {
                "retransmit_handshake": p.timers.retransmit_handshake,
                "send_keepalive": p.timers.send_keepalive,
                "new_handshake": p.timers.new_handshake,
                "zero_key_material": p.timers.zero_key_material,
                "persistent_keepalive": p.timers.persistent_keepalive,
            }
        finally:
            self._unlock()

    # -- Python face: sans-I/O ----------------------------------------------------------

    def inject_tun(self, const uint8_t[:] packet, int64_t now):
        """As if packet had been read from the port at now (behind its
        virtio_net_hdr if the port has vnet_hdr)."""
        cdef uint32_t length = packet.shape[0]
        if length > SLOT_SIZE - 64:
            raise ValueError("packet too large")
        self._lock()
        try:
            # rx_slots are free between batches; a read may be cut in place.
            if length:
                memcpy(self.rx_slots, &packet[0], length)
            self._tx_batch(self.rx_slots, &length, 1, now)
        finally:
            self._unlock()

    def inject_udp(self, const uint8_t[:] datagram, address, int64_t now, int64_t wall):
        """As if datagram had arrived from address at now."""
        self.inject_udp_batch([datagram], address, now, wall)

    def inject_udp_batch(self, datagrams, address, int64_t now, int64_t wall):
        """As if the datagrams (at most BATCH) had arrived together from
        address at now: one receive batch, so decrypted packets are coalesced
        across them as from one recvmmsg."""
        cdef Endpoint sources[BATCH]
        cdef uint32_t lengths[BATCH]
        cdef uint32_t sizes[BATCH]
        cdef const uint8_t[:] datagram
        cdef uint32_t i, count = len(datagrams)
        if count > BATCH:
            raise ValueError(f"at most {BATCH} datagrams in a batch")
        endpoint_from_python(&sources[0], address)
        for i in range(count):
            datagram = datagrams[i]
            if datagram.shape[0] > SLOT_SIZE or datagram.shape[0] == 0:
                raise ValueError("bad datagram size")
            sources[i] = sources[0]
            lengths[i] = datagram.shape[0]
            sizes[i] = 0
        self._lock()
        try:
            for i in range(count):
                datagram = datagrams[i]
                memcpy(self.rx_slots + <size_t>i * SLOT_SIZE, &datagram[0], lengths[i])
            self._rx_batch(count, sources, lengths, sizes, now, wall)
        finally:
            self._unlock()

    def take_captured(self):
        """What left in sans-I/O mode: [("tun", bytes, None)] for what the
        MemoryPort was given, then [("udp", bytes, address)] for each datagram
        sent, as the kernel cut it from its sendmmsg message."""
        result = []
        self._lock()
        try:
            if isinstance(self.port, MemoryPort):
                result = [("tun", packet, None) for packet in (<MemoryPort>self.port).take_written()]
            result += [("udp", data, address) for data, address, _ in udp_memory_take(&self.udp)]
        finally:
            self._unlock()
        return result

    @property
    def udp_messages(self):
        """How many sendmmsg messages left in sans-I/O mode (a GSO message
        carries several datagrams)."""
        return self.udp.memory.messages if self.udp.memory != NULL else 0
