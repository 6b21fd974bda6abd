# cython: language_level=3
"""The data plane's engine (see _core.pxd for the locking rule).

Packets read from the port (the TUN) are routed by allowed IPs to a peer,
sealed with its current keypair (wgc._session) and sent (wgc._udp); packets
from UDP are opened, checked against the allowed IPs of their peer, and
written to the port.  Handshake messages are only queued here: the control
plane (wgc.device) handles them in Python and installs the resulting keypairs.

Core has no Python face of its own: wgc._dataplane.DataPlane, its subclass,
is what the control plane and the tests call, and wgc._loop runs the epoll
loop that hands Core its batches.  The same batch functions serve that loop
and the sans-I/O entry points (inject_tun, inject_udp), which the protocol
tests drive with a fake clock; in sans-I/O mode the port is a MemoryPort and
UDP sends go to memory, cut as the kernel cuts GSO messages, so those tests
run the batching, GSO grouping and GRO code the daemon runs.
"""
from libc.errno cimport errno
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy
from posix.unistd cimport write, close

from wgc._bytes cimport load_le32
from wgc._constants cimport (MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_COOKIE_REPLY, INITIATION_SIZE,
                             RESPONSE_SIZE, COOKIE_REPLY_SIZE, TRANSPORT_HEADER_SIZE, TRANSPORT_MIN_SIZE,
                             SECOND, KEEPALIVE_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX, HANDSHAKE_QUEUE_SIZE,
                             DEFAULT_MTU, MAX_TIMER_HANDSHAKES)
from wgc._crypto cimport random_u64
from wgc._offload cimport VnetHdr, Segmenter, VNET_HDR_LEN, vnet_hdr_load, segmenter_init, segmenter_write
from wgc._port cimport PacketPort, MemoryPort
from wgc._pthread cimport pthread_mutex_init, pthread_mutex_lock, pthread_mutex_unlock, pthread_mutex_destroy
from wgc._session cimport (index_init, index_free, index_remove, keypairs_confirm, keypairs_clear,
                           transport_seal_job, transport_open_job, transport_open_done, index_find,
                           transport_inner_source, transport_destination,
                           keypair_sendable, rekey_after_send, rekey_after_receive, OPEN_OK, OPEN_MALFORMED,
                           OPEN_UNKNOWN_INDEX, OPEN_EXPIRED, OPEN_AUTHENTICATION_FAILED, OPEN_REPLAYED)
from wgc._staged cimport Staged, staged_push, staged_pop, staged_clear
from wgc._timers cimport *
from wgc._trie cimport AllowedIPs
from wgc._workers cimport pool_start, pool_run, pool_stop
from wgc._udp cimport (endpoint_equal, udp_set_sockets, udp_send_batch, udp_send_one,
                       udp_memory_init, udp_memory_free, NOT_SENT, SENT_FROM_ANOTHER_SOURCE)


cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_NONBLOCK
    int EFD_CLOEXEC

cdef enum:
    MIN_PEERS_CAPACITY = 16


cdef inline int64_t jitter(uint64_t *state) noexcept nogil:
    """A delay below REKEY_TIMEOUT_JITTER_MAX from xorshift64*: timers need spread, not
    secrecy, and a getrandom call per data packet would cost a system call."""
    cdef uint64_t x = state[0]
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    state[0] = x
    return <int64_t>((x * <uint64_t>0x2545F4914F6CDD1D) % <uint64_t>REKEY_TIMEOUT_JITTER_MAX)


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
        self.rx_jobs = <AeadJob *>malloc(RX_JOBS * sizeof(AeadJob))
        self.rx_openings = <RxOpening *>malloc(RX_JOBS * sizeof(RxOpening))
        self.mtu = DEFAULT_MTU
        self.jitter_state = random_u64() | 1
        self.udp.offload = True
        udp_set_sockets(&self.udp, -1, -1)
        # Until set_port: a port that reads nothing and drops what is written.
        self.port = MemoryPort() if capture else PacketPort()
        self.notify_fd = -1
        self.capture = capture
        if (self.peers == NULL or self.event_slots == NULL or index_init(&self.index) != 0
                or self.handshakes == NULL or self.rx_slots == NULL
                or self.out_slots == NULL or self.rx_jobs == NULL or self.rx_openings == NULL
                or pool_start(&self.pool, 1) != 0 or (capture and udp_memory_init(&self.udp) != 0)):
            raise MemoryError()
        if not capture:
            self.notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
            if self.notify_fd < 0:
                raise OSError(errno, "cannot create the data plane's notify descriptor")

    def __dealloc__(self):
        cdef uint32_t i
        for i in range(self.peers_capacity):
            if self.peers != NULL and self.peers[i] != NULL:
                staged_clear(&self.peers[i].staged, &self.staged_total)
                keypairs_clear(&self.index, &self.peers[i].keypairs)
                free(self.peers[i])
        if self.notify_fd >= 0:
            close(self.notify_fd)
        free(self.peers)
        free(self.event_slots)
        index_free(&self.index)
        free(self.handshakes)
        free(self.rx_slots)
        free(self.out_slots)
        free(self.rx_jobs)
        free(self.rx_openings)
        pool_stop(&self.pool)
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
                staged_clear(&p.staged, &self.staged_total)
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

    # -- per-peer steps the control plane's commands share -----------------------

    cdef void _release_handshake_index(self, Peer *p) noexcept nogil:
        if p.has_handshake_index:
            index_remove(&self.index, p.handshake_index)
            p.has_handshake_index = False

    cdef void _send_keepalive(self, Peer *p, int64_t now) noexcept nogil:
        """As the kernel does: an empty packet is staged unless packets are
        already waiting (they confirm the session as well), so that without a
        session it waits for the handshake this asks for."""
        if p.staged.count == 0:
            self._stage(p, NULL, 0)
        self._send_staged(p, now)
        self._flush()

    cdef void _stage(self, Peer *p, const uint8_t *packet, uint32_t length) noexcept nogil:
        """Queues the packet until p has a session, counting what that drops."""
        if staged_push(&p.staged, &self.staged_total, packet, length):
            p.counts[PEER_COUNT_STAGED_OVERFLOW] += 1

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
        cdef int sent[BATCH]
        cdef uint32_t i
        pool_run(&self.pool, self.out_jobs, self.out_count)
        udp_send_batch(&self.udp, self.out, self.out_count, sent)
        for i in range(self.out_count):
            if sent[i] != NOT_SENT and self.out_peer[i] != NULL:
                self.out_peer[i].tx_bytes += self.out[i].length
                if sent[i] == SENT_FROM_ANOTHER_SOURCE:
                    self.out_peer[i].endpoint.src_family = 0
        self.out_count = 0

    cdef int _send_one(self, const uint8_t *data, uint32_t length, const Endpoint *dst) noexcept nogil:
        """Sends one datagram now (handshakes, cookie replies): NOT_SENT, SENT
        or SENT_FROM_ANOTHER_SOURCE (dst's source is no longer ours)."""
        return udp_send_one(&self.udp, data, length, dst)

    cdef bint _seal(self, Peer *p, Keypair *kp, uint8_t *out, uint32_t length,
                    int64_t now) noexcept nogil:
        """Commits the packet (length 0 = keepalive) already placed at
        out + TRANSPORT_HEADER_SIZE in the next out slot for p, to be sealed
        at _flush; False (nothing sent) if kp cannot send now."""
        cdef uint32_t sealed = transport_seal_job(kp, out, length, self.mtu, now, &self.out_jobs[self.out_count])
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
        if p.staged.count == 0:
            return
        if not keypair_sendable(kp, now) or p.endpoint.family == 0:
            self._want_handshake(p)
            return
        while True:
            s = staged_pop(&p.staged, &self.staged_total)
            if s == NULL:
                break
            out = self._out_buffer()
            memcpy(out + TRANSPORT_HEADER_SIZE, s + 1, s.length)
            self._seal(p, kp, out, s.length, now)
            free(s)
        self._keep_key_fresh_on_send(p, kp, now)
        self._timers_changed(p)

    cdef Peer *_route(self, const uint8_t *packet, uint32_t length) noexcept nogil:
        """The peer whose allowed IPs hold the packet's destination, if it has
        an endpoint; the callers count the packets dropped for want of one."""
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
        if p.staged.count == 0 and self._seal(p, kp, out, length, now):
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
            self.counts[COUNT_NO_ROUTE] += 1
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
            self.counts[COUNT_NO_ROUTE] += count     # every segment of the read
            return
        for i in range(count):
            out = self._out_buffer()
            self._tx_routed(p, out, segmenter_write(&seg, i, out + TRANSPORT_HEADER_SIZE), now)

    # -- batches: what the loop and the sans-I/O entry points hand over ------

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
        self._rx_open_pending(now, wall)
        self.counts[COUNT_TUN_WRITE_FAILURES] += self.port.flush()
        self._flush()

    # -- receiving ----------------------------------------------------------

    cdef void _queue_handshake(self, const uint8_t *data, uint32_t length,
                               const Endpoint *source) noexcept nogil:
        cdef HandshakeMsg *m
        if self.handshakes_count == HANDSHAKE_QUEUE_SIZE:
            self.counts[COUNT_HANDSHAKE_QUEUE_OVERFLOW] += 1
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
        """One UDP datagram: queue handshakes; check transport data and queue
        its opening (a full queue is opened and delivered at once)."""
        cdef uint32_t kind
        cdef int checked
        cdef Keypair *kp
        cdef RxOpening *o
        if length < 4:
            self.counts[COUNT_MALFORMED] += 1
            return
        kind = load_le32(data)
        if ((kind == MESSAGE_INITIATION and length == INITIATION_SIZE)
                or (kind == MESSAGE_RESPONSE and length == RESPONSE_SIZE)
                or (kind == MESSAGE_COOKIE_REPLY and length == COOKIE_REPLY_SIZE)):
            self._queue_handshake(data, length, source)
            return
        checked = transport_open_job(&self.index, data, length, now, &kp, &self.rx_jobs[self.rx_count])
        if checked != OPEN_OK:
            self._count_unopened(checked, kp)
            return
        o = &self.rx_openings[self.rx_count]
        o.data, o.length, o.source = data, length, source
        self.rx_count += 1
        if self.rx_count == RX_JOBS:
            self._rx_open_pending(now, wall)

    cdef void _rx_open_pending(self, int64_t now, int64_t wall) noexcept nogil:
        """Opens the queued transport messages (on the workers too), then
        delivers them in the order they came."""
        cdef uint32_t i
        pool_run(&self.pool, self.rx_jobs, self.rx_count)
        for i in range(self.rx_count):
            self._rx_opened(&self.rx_openings[i], &self.rx_jobs[i], now, wall)
        self.rx_count = 0

    cdef void _rx_opened(self, const RxOpening *o, const AeadJob *job, int64_t now, int64_t wall) noexcept nogil:
        """One opened transport message: the replay window, roaming, a
        responder's confirmation, timers, then the packet to the port if its
        source is one its peer may use."""
        cdef uint32_t inner, inner_len
        cdef int opened
        cdef uint8_t *plain = o.data + TRANSPORT_HEADER_SIZE
        # Found again, not carried over from transport_open_job: the keypairs
        # may rotate between the two steps (a confirmation earlier in the
        # batch), and the table is what says which ones are alive.
        cdef Keypair *kp = index_find(&self.index, load_le32(o.data + 4))
        cdef Peer *p
        if kp == NULL:
            self.counts[COUNT_UNKNOWN_RECEIVER_INDEX] += 1
            return
        opened = transport_open_done(kp, job)
        if opened != OPEN_OK:
            self._count_unopened(opened, kp)
            return
        p = self.peers[kp.slot]
        # Authenticated: roam to wherever it came from.
        if not endpoint_equal(&p.endpoint, o.source):
            p.endpoint = o.source[0]
        if kp == p.keypairs.next:
            self._confirm(p, kp, now, wall)
        inner = o.length - TRANSPORT_MIN_SIZE
        self._on_transport_received(p, inner != 0, now)
        if inner == 0:
            p.rx_bytes += o.length
            return
        # The source address must be one this peer may use.
        if transport_inner_source(self.allowed_ips, plain, inner, &inner_len) != <int>p.slot:
            p.counts[PEER_COUNT_SOURCE_NOT_ALLOWED] += 1
            return
        self.counts[COUNT_TUN_WRITE_FAILURES] += self.port.write(plain, inner_len)
        p.rx_bytes += o.length

    cdef void _count_unopened(self, int reason, const Keypair *kp) noexcept nogil:
        """Counts a transport message transport_open_job or transport_open_done
        dropped (an OPEN_* reason), against kp's peer once its receiver index
        found one."""
        if reason == OPEN_MALFORMED:
            self.counts[COUNT_MALFORMED] += 1
        elif reason == OPEN_UNKNOWN_INDEX:
            self.counts[COUNT_UNKNOWN_RECEIVER_INDEX] += 1
        elif reason == OPEN_EXPIRED:
            self.peers[kp.slot].counts[PEER_COUNT_EXPIRED_SESSION] += 1
        elif reason == OPEN_AUTHENTICATION_FAILED:
            self.peers[kp.slot].counts[PEER_COUNT_AUTHENTICATION_FAILURES] += 1
        elif reason == OPEN_REPLAYED:
            self.peers[kp.slot].counts[PEER_COUNT_REPLAYED] += 1
