# cython: language_level=3
"""The data plane's Python face: DataPlane is Core (wgc/_core.pxd) with the
calls the control plane (wgc.device) and the tests make.

Each call takes Core.mutex (waiting for it without the GIL), so it never
sees a half-processed batch.  The control plane learns what happened from
poll() alone, a list of Events; everything else is a command (configure a
peer, install a keypair, send a handshake message) or a question for tests
and the UAPI (stats, endpoint, allowed IPs, timer deadlines).
"""
from libc.errno cimport EEXIST, errno
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from posix.unistd cimport read

from wgc._constants cimport HANDSHAKE_QUEUE_SIZE, KEY_SIZE
from wgc._core cimport (Core, Peer, HandshakeMsg, SLOT_SIZE, EVENT_WANT_HANDSHAKE, EVENT_HANDSHAKE_RETRY,
                        EVENT_HANDSHAKE_GIVEN_UP, EVENT_PEER_SILENT, EVENT_KEYS_ZEROED,
                        EVENT_HANDSHAKE_MESSAGE, EVENT_PORT_GONE,
                        COUNT_HANDSHAKE_QUEUE_OVERFLOW, COUNT_UNKNOWN_RECEIVER_INDEX, COUNT_MALFORMED,
                        COUNT_NO_ROUTE, COUNT_TUN_WRITE_FAILURES, DEVICE_COUNTS,
                        PEER_COUNT_AUTHENTICATION_FAILURES, PEER_COUNT_REPLAYED, PEER_COUNT_EXPIRED_SESSION,
                        PEER_COUNT_SOURCE_NOT_ALLOWED, PEER_COUNT_STAGED_OVERFLOW, PEER_COUNTS)
from wgc._crypto cimport random_u64
from wgc._loop cimport Loop
from wgc._port cimport PacketPort, TunPort, MemoryPort
from wgc._session cimport (IndexEntry, index_entry, index_claim, keypairs_install, keypairs_clear,
                           keypairs_expire_sending, keypair_sendable)
from wgc._staged cimport staged_clear
from wgc._trie cimport RECORD_SIZE
from wgc._timers cimport timers_next, timers_expired, timers_stop
from wgc._workers cimport POOL_MAX_THREADS, pool_start, pool_stop
from wgc._udp cimport (BATCH, Endpoint, endpoint_from_python, endpoint_to_python, udp_set_sockets, udp_memory_take,
                       NOT_SENT, SENT_FROM_ANOTHER_SOURCE)

cdef class Event:
    """One thing DataPlane.poll tells the control plane: `what` holds EVENT_* bits
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

# The most threads DataPlane.set_workers takes.
MAX_WORKERS = POOL_MAX_THREADS


def _by_index(names, count):
    """names {index: name} as a tuple in index order; fails at import if an
    index below count has no name."""
    return tuple(names[i] for i in range(count))

# The catalogue's names (wgc/counters.py) of Core's COUNT_* and a Peer's PEER_COUNT_*.
DEVICE_COUNTER_NAMES = _by_index({
    COUNT_HANDSHAKE_QUEUE_OVERFLOW: "handshake_queue_overflow_total",
    COUNT_UNKNOWN_RECEIVER_INDEX: "unknown_receiver_index_total",
    COUNT_MALFORMED: "malformed_packets_total",
    COUNT_NO_ROUTE: "no_route_total",
    COUNT_TUN_WRITE_FAILURES: "tun_write_failures_total",
}, DEVICE_COUNTS)
PEER_COUNTER_NAMES = _by_index({
    PEER_COUNT_AUTHENTICATION_FAILURES: "authentication_failures_total",
    PEER_COUNT_REPLAYED: "replayed_packets_total",
    PEER_COUNT_EXPIRED_SESSION: "expired_session_packets_total",
    PEER_COUNT_SOURCE_NOT_ALLOWED: "source_not_allowed_total",
    PEER_COUNT_STAGED_OVERFLOW: "staged_overflow_total",
}, PEER_COUNTS)


cdef class DataPlane(Core):
    """The data plane of one device.  Create with capture=True for sans-I/O use."""
    cdef Loop loop                 # None in sans-I/O mode

    def __cinit__(self, bint capture=False):
        self.loop = None if capture else Loop()

    # -- I/O set-up and the loop -------------------------------------------------

    def run(self):
        """The data-plane loop (wgc._loop); returns after stop() or when the TUN is gone."""
        if self.loop is None:
            raise RuntimeError("a sans-I/O data plane has no loop")
        self.loop.run(self)

    def stop(self):
        if self.loop is not None:
            self.loop.stop()

    def set_tun(self, int fd, bint vnet_hdr=False):
        """The TUN descriptor (non-blocking) the loop reads and writes; with
        vnet_hdr every packet on it carries a virtio_net_hdr.  Before run()."""
        self.set_port(TunPort(fd, vnet_hdr=vnet_hdr))

    def set_port(self, PacketPort port not None):
        """The inner side the data plane reads and writes (a TunPort, or a
        MemoryPort for tests).  Before run()."""
        self._lock()
        try:
            self.counts[COUNT_TUN_WRITE_FAILURES] += self.port.flush()
            self.port = port
        finally:
            self._unlock()

    def set_sockets(self, int fd4, int fd6):
        """Replaces the UDP sockets (-1 for none); the caller closes the old ones."""
        self._lock()
        try:
            if self.loop is not None:
                for fd in self.udp.fd:
                    self.loop.unwatch(fd)
            udp_set_sockets(&self.udp, fd4, fd6)
            if self.loop is not None:
                for fd in self.udp.fd:
                    if fd >= 0:
                        self.loop.watch(fd)
        finally:
            self._unlock()

    def set_mtu(self, uint32_t mtu):
        self.mtu = mtu

    def set_udp_offload(self, bint enabled):
        """Whether sockets set from now on use UDP GSO (send) and GRO (receive)."""
        self.udp.offload = enabled

    def set_workers(self, int threads):
        """How many threads seal and open each batch: the data-plane thread
        and threads - 1 helpers (wgc._workers)."""
        if not 1 <= threads <= POOL_MAX_THREADS:
            raise ValueError(f"workers must be 1 to {POOL_MAX_THREADS}")
        self._lock()
        try:
            pool_stop(&self.pool)
            if pool_start(&self.pool, threads) != 0:
                err = errno
                pool_start(&self.pool, 1)
                raise OSError(err, "cannot start the crypto workers")
        finally:
            self._unlock()

    @property
    def workers(self):
        """The threads that seal and open each batch, the data-plane thread included."""
        return self.pool.helpers + 1

    @property
    def notify_fd(self):
        """Readable when the control plane should poll: handshakes, events, or an earlier timer."""
        return self.notify_fd

    # -- peers -----------------------------------------------------

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
            staged_clear(&p.staged, &self.staged_total)
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

    def counters(self, int slot=-1):
        """What the data plane counted, by name (DEVICE_COUNTER_NAMES), or
        with a slot that peer's (PEER_COUNTER_NAMES): copied under one
        taking of the lock."""
        cdef uint64_t values[DEVICE_COUNTS + PEER_COUNTS]
        cdef uint32_t i
        names = DEVICE_COUNTER_NAMES if slot < 0 else PEER_COUNTER_NAMES
        self._lock()
        try:
            if slot < 0:
                memcpy(values, self.counts, sizeof(self.counts))
            else:
                memcpy(values, self._peer(slot).counts, PEER_COUNTS * sizeof(uint64_t))
        finally:
            self._unlock()
        return {names[i]: values[i] for i in range(len(names))}

    # -- allowed IPs (mutated under the lock the loop reads under) --

    def allowed_ip_insert(self, bytes addr, int cidr, uint32_t slot):
        self._lock()
        try:
            self.allowed_ips.insert(addr, cidr, slot)
        finally:
            self._unlock()

    def allowed_ips_insert_records(self, const uint8_t[::1] records, uint32_t slot):
        """Inserts a batch of prefixes parsed by wgc._uapi_set (_trie's
        RECORD_SIZE-byte records, checked there), in order, under one taking
        of the lock."""
        cdef Py_ssize_t count = records.shape[0] // RECORD_SIZE
        cdef int failed = 0
        if count == 0:
            return
        self._lock()
        try:
            failed = self.allowed_ips.insert_records(&records[0], count, slot)
        finally:
            self._unlock()
        if failed:
            raise MemoryError()

    def format_allowed_ips(self, uint32_t slot, bytearray out):
        """Appends the peer's `allowed_ip=` lines of a UAPI `get` to out."""
        self._lock()
        try:
            self.allowed_ips.format_into(slot, out)
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

    # -- sessions and receiver indices -------------------------------

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
        if len(send_key) != KEY_SIZE or len(recv_key) != KEY_SIZE:
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

    def set_send_counter(self, uint32_t slot, uint64_t counter):
        """For tests only: the counter the peer's current keypair seals its next
        message with, so that Rekey-After-Messages and Reject-After-Messages can be
        reached without sending 2^60 messages."""
        cdef Peer *p
        self._lock()
        try:
            p = self._peer(slot)
            if p.keypairs.current == NULL:
                raise ValueError("the peer has no current keypair")
            p.keypairs.current.send_counter = counter
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
            staged_clear(&p.staged, &self.staged_total)
            timers_stop(&p.timers)
        finally:
            self._unlock()

    # -- sending and receiving for the control plane -------------------

    def has_current_keypair(self, uint32_t slot, int64_t now):
        """Whether the peer has a session it may send with at now (the tests'
        view of Reject-After-Time and Reject-After-Messages)."""
        self._lock()
        try:
            return keypair_sendable(self._peer(slot).keypairs.current, now)
        finally:
            self._unlock()

    def send_keepalive(self, uint32_t slot, int64_t now):
        """Sends a keepalive (see _send_keepalive)."""
        self._lock()
        try:
            self._send_keepalive(self._peer(slot), now)
        finally:
            self._unlock()

    def send_handshake(self, uint32_t slot, const uint8_t[:] message, int64_t now, bint initiation=False):
        """Sends a handshake message (an initiation, or a response) to the
        peer's endpoint, counting it in tx_bytes and arming its timers."""
        cdef Peer *p
        cdef int sent
        self._lock()
        try:
            p = self._peer(slot)
            sent = self._send_one(&message[0], message.shape[0], &p.endpoint)
            if sent == SENT_FROM_ANOTHER_SOURCE:
                p.endpoint.src_family = 0
            if sent != NOT_SENT:
                p.tx_bytes += message.shape[0]
            self._on_handshake_sent(p, initiation, now)
            return sent != NOT_SENT
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
            return self._send_one(&message[0], message.shape[0], &e) != NOT_SENT
        finally:
            self._unlock()

    # -- what happened, for the control plane ---------------------------

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

    # -- sans-I/O ----------------------------------------------------------

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

    def inject_udp_batch(self, datagrams, address, int64_t now, int64_t wall, uint32_t segment_size=0):
        """As if the datagrams (at most BATCH) had arrived together from
        address at now: one receive batch, so decrypted packets are coalesced
        across them as from one recvmmsg.  With segment_size, each is a UDP
        GRO message instead: datagrams of segment_size bytes one after the
        other (the last may be shorter)."""
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
            sizes[i] = segment_size
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
