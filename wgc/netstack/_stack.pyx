# cython: language_level=3
"""The network stack's dispatch (IP to TCP and ICMP), and Stack, its Python face for tests."""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int64_t, uintptr_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

from libc.errno cimport ENETUNREACH, EHOSTUNREACH, EACCES, ECONNREFUSED, ENOPROTOOPT, EMSGSIZE
from wgc._bytes cimport load_be16, load_be32
from wgc._checksum cimport PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP
from wgc._crypto cimport random_bytes
from wgc.netstack._ip cimport Addr, Parsed, parse_ip, l4_checksum_ok, addr_from_python
from wgc._constants cimport DEFAULT_MTU
from wgc.netstack._netif cimport (Netif, Sink, NETIF_ADDRS_MAX, MTU_MIN, netif_is_local,
                                  netif_source, netif_begin, netif_finish)
from wgc.netstack._tcp cimport (Tcb, TcpTable, tcp_init, tcp_free, tcp_input, tcp_timers, tcp_next_deadline,
                                tcp_resume, tcp_connect, tcp_listen, tcp_accept, tcp_send_span, tcp_sent,
                                tcp_recv_span, tcp_consumed, tcp_eof, tcp_shutdown, tcp_close, tcp_abort,
                                tcp_release, tcp_ready, tcp_set_keepalive, tcp_icmp_error,
                                tcp_flush_acks)
from wgc.netstack._frag cimport (reasm_init, reasm_free, reasm_input4, reasm_input6, reasm_expire,
                                 FRAG_MEMORY_MAX, FRAG_TIMEOUT4_S, FRAG_TIMEOUT6_S)
from wgc.netstack._dgram cimport (dgram_init, dgram_free, dgram_input_udp, dgram_input_echo_reply,
                                  dgram_icmp_error)

cdef enum:
    ICMP4_ECHO_REPLY = 0
    ICMP4_ECHO_REQUEST = 8
    ICMP6_ECHO_REQUEST = 128
    ICMP6_ECHO_REPLY = 129


cdef int stack_init(StackCore *s, uint32_t mtu) noexcept nogil:
    memset(s, 0, sizeof(StackCore))
    s.netif.mtu = mtu
    random_bytes(s.netif.secret, 16)
    dgram_init(&s.dgram, &s.netif)
    if reasm_init(&s.frag, FRAG_MEMORY_MAX) < 0:
        return -1
    return tcp_init(&s.tcp, &s.netif)

cdef int stack_setup(StackCore *s, object addresses, uint32_t mtu) except -1:
    cdef Addr a
    cdef bint v6
    if mtu < MTU_MIN or mtu > 65535:
        raise ValueError(f"MTU out of range: {mtu}")
    if stack_init(s, mtu) < 0:
        raise MemoryError()
    for ip in addresses:
        addr_from_python(ip, &a, &v6)
        if v6 and s.netif.count6 < NETIF_ADDRS_MAX:
            s.netif.addr6[s.netif.count6] = a
            s.netif.count6 += 1
        elif not v6 and s.netif.count4 < NETIF_ADDRS_MAX:
            s.netif.addr4[s.netif.count4] = a
            s.netif.count4 += 1
    return 0

cdef void stack_free(StackCore *s) noexcept nogil:
    tcp_free(&s.tcp)
    dgram_free(&s.dgram)
    reasm_free(&s.frag)


cdef void echo_reply(StackCore *s, const uint8_t *packet, const Parsed *p) noexcept nogil:
    """Answers an echo request to one of our addresses with the same identifier,
    sequence number and data (RFC 792, RFC 4443 4.2)."""
    cdef uint32_t length = p.length - p.l4_at
    cdef uint8_t proto = PROTO_ICMPV6 if p.v6 else PROTO_ICMP
    cdef uint8_t *l4
    cdef uint8_t *slot = netif_begin(&s.netif, p.v6, &p.dst, &p.src, proto, length, &l4)
    if slot == NULL:
        return
    memcpy(l4, packet + p.l4_at, length)
    l4[0] = ICMP6_ECHO_REPLY if p.v6 else ICMP4_ECHO_REPLY
    netif_finish(&s.netif, slot, p.v6, proto, l4, length, 2)

cdef enum:
    ICMP4_UNREACHABLE = 3
    ICMP6_UNREACHABLE = 1
    ICMP_ERRORS_PER_SECOND = 1000  # Linux's icmp_msgs_per_sec
    ICMP4_ERROR_MAX = 576          # the whole error packet (RFC 1812 4.3.2.3)
    ICMP6_ERROR_MAX = 1280         # (RFC 4443 2.4 (c))


cdef int unreachable_errno(bint v6, uint8_t code) noexcept nogil:
    """The errno a socket sees for a destination-unreachable code (as Linux maps them)."""
    if v6:
        if code == 0:
            return ENETUNREACH
        if code == 1:
            return EACCES
        if code == 4:
            return ECONNREFUSED
        return EHOSTUNREACH
    if code == 0:
        return ENETUNREACH
    if code == 2:
        return ENOPROTOOPT
    if code == 3:
        return ECONNREFUSED
    if code == 4:
        return EMSGSIZE
    if code == 9 or code == 10 or code == 13:
        return EACCES
    return EHOSTUNREACH


cdef void icmp_error_input(StackCore *s, const uint8_t *packet, const Parsed *p) noexcept nogil:
    """An unreachable about a packet we sent: to the socket that sent it."""
    cdef Addr src, dst
    cdef const uint8_t *quoted = packet + p.l4_at + 8
    cdef uint32_t length = p.length - p.l4_at - 8, ihl
    cdef uint8_t proto
    cdef int error = unreachable_errno(p.v6, packet[p.l4_at + 1])
    cdef const uint8_t *l4
    # The quote is cut short, so its header is read by hand, not by parse_ip.
    memset(&src, 0, sizeof(Addr))
    memset(&dst, 0, sizeof(Addr))
    if p.v6:
        if length < 40 + 8 or quoted[0] >> 4 != 6:
            return
        ihl = 40
        proto = quoted[6]
        memcpy(src.b, quoted + 8, 16)
        memcpy(dst.b, quoted + 24, 16)
    else:
        if length < 20 or quoted[0] >> 4 != 4:
            return
        ihl = (quoted[0] & 0x0f) * 4
        if ihl < 20 or length < ihl + 8:
            return
        proto = quoted[9]
        memcpy(src.b, quoted + 12, 4)
        memcpy(dst.b, quoted + 16, 4)
    if not netif_is_local(&s.netif, p.v6, &src):
        return
    l4 = quoted + ihl
    if proto == PROTO_TCP:
        tcp_icmp_error(&s.tcp, p.v6, &src, load_be16(l4), &dst, load_be16(l4 + 2), load_be32(l4 + 4), error)
    elif proto == PROTO_UDP:
        dgram_icmp_error(&s.dgram, p.v6, &dst, load_be16(l4), load_be16(l4 + 2), error)


cdef void send_unreachable(StackCore *s, const uint8_t *packet, const Parsed *p, uint8_t code,
                           int64_t now) noexcept nogil:
    """Destination unreachable back to the sender (port unreachable for UDP),
    quoting as much of the packet as fits, within a budget per second."""
    cdef uint32_t quote = p.length, limit = (ICMP6_ERROR_MAX - 40 if p.v6 else ICMP4_ERROR_MAX - 20) - 8
    cdef uint8_t proto = PROTO_ICMPV6 if p.v6 else PROTO_ICMP
    cdef uint8_t *l4
    cdef uint8_t *slot
    cdef int64_t second = now // 1000000000
    if second != s.icmp_second:
        s.icmp_second = second
        s.icmp_count = 0
    if s.icmp_count >= ICMP_ERRORS_PER_SECOND:
        return
    s.icmp_count += 1
    if quote > limit:
        quote = limit
    slot = netif_begin(&s.netif, p.v6, &p.dst, &p.src, proto, 8 + quote, &l4)
    if slot == NULL:
        return
    memset(l4, 0, 8)
    l4[0] = ICMP6_UNREACHABLE if p.v6 else ICMP4_UNREACHABLE
    l4[1] = code
    memcpy(l4 + 8, packet, quote)
    netif_finish(&s.netif, slot, p.v6, proto, l4, 8 + quote, 2)


cdef void icmp_input(StackCore *s, const uint8_t *packet, const Parsed *p) noexcept nogil:
    cdef const uint8_t *h = packet + p.l4_at
    cdef uint8_t echo_request = ICMP6_ECHO_REQUEST if p.v6 else ICMP4_ECHO_REQUEST
    cdef uint8_t echo_reply_type = ICMP6_ECHO_REPLY if p.v6 else ICMP4_ECHO_REPLY
    cdef uint8_t unreachable = ICMP6_UNREACHABLE if p.v6 else ICMP4_UNREACHABLE
    if p.length - p.l4_at < 8 or not l4_checksum_ok(packet, p):
        s.dropped += 1
        return
    if h[0] == echo_request and h[1] == 0:
        echo_reply(s, packet, p)
    elif h[0] == echo_reply_type and h[1] == 0:
        dgram_input_echo_reply(&s.dgram, packet, p)
    elif h[0] == unreachable:
        icmp_error_input(s, packet, p)

cdef void stack_input(StackCore *s, const uint8_t *packet, uint32_t length, int64_t now) noexcept nogil:
    cdef Parsed p
    cdef uint8_t *whole
    cdef uint32_t whole_length
    cdef int done
    if parse_ip(packet, length, &p) < 0 or not netif_is_local(&s.netif, p.v6, &p.dst):
        s.dropped += 1
        return
    if p.fragment:
        if p.v6:
            done = reasm_input6(&s.frag, packet, p.length, p.next_header_at, p.frag_at, now, &whole, &whole_length)
        else:
            done = reasm_input4(&s.frag, packet, p.length, now, &whole, &whole_length)
        if s.frag_deadline == 0 and done == 0:
            s.frag_deadline = now + (FRAG_TIMEOUT6_S if p.v6 else FRAG_TIMEOUT4_S) * <int64_t>1000000000
        if done != 1 or parse_ip(whole, whole_length, &p) < 0 or p.fragment:
            return
        packet = whole
    if p.proto == PROTO_TCP:
        tcp_input(&s.tcp, packet, &p, now)
    elif p.proto == PROTO_UDP:
        if dgram_input_udp(&s.dgram, packet, &p) == 0:
            send_unreachable(s, packet, &p, 4 if p.v6 else 3, now)
    elif p.proto == (PROTO_ICMPV6 if p.v6 else PROTO_ICMP):
        icmp_input(s, packet, &p)
    else:
        s.dropped += 1


cdef int64_t stack_timers(StackCore *s, int64_t now) noexcept nogil:
    if s.frag_deadline and s.frag_deadline <= now:
        s.frag_deadline = reasm_expire(&s.frag, now)
        if s.frag_deadline < 0:
            s.frag_deadline = 0
    tcp_timers(&s.tcp, now)
    return stack_next_deadline(s)

cdef int64_t stack_next_deadline(const StackCore *s) noexcept nogil:
    cdef int64_t tcp = tcp_next_deadline(&s.tcp)
    if s.frag_deadline and (tcp == 0 or s.frag_deadline < tcp):
        return s.frag_deadline
    return tcp


# ---- the Python face, for tests ---------------------------------------------

STATES = ("CLOSED", "LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2",
          "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT")
OUTPUT_SLOTS = 256



cdef class Stack:
    """A whole stack driven by hand: packets in with receive(), out with
    take_output(), time only as passed in.  Connections are integer handles."""
    cdef StackCore core
    cdef Sink sink
    cdef dict handles              # handle -> Tcb address
    cdef int next_handle

    def __cinit__(self, addresses, *, uint32_t mtu=DEFAULT_MTU, uint32_t buffer=0, size_t memory_max=0):
        stack_setup(&self.core, addresses, mtu)
        self.sink.slot_size = mtu
        self.sink.capacity = OUTPUT_SLOTS
        self.sink.slots = <uint8_t *>malloc(<size_t>OUTPUT_SLOTS * mtu)
        self.sink.lengths = <uint32_t *>malloc(OUTPUT_SLOTS * sizeof(uint32_t))
        if self.sink.slots == NULL or self.sink.lengths == NULL:
            raise MemoryError()
        self.core.netif.sink = &self.sink
        if buffer:
            self.core.tcp.buffer = buffer
        if memory_max:
            self.core.tcp.memory_max = memory_max
        self.handles = {}
        self.next_handle = 1

    def __dealloc__(self):
        stack_free(&self.core)
        free(self.sink.slots)
        free(self.sink.lengths)

    # -- packets and time --

    def receive(self, const uint8_t[:] packet, int64_t now):
        if packet.shape[0]:
            stack_input(&self.core, &packet[0], packet.shape[0], now)

    def receive_batch(self, packets, int64_t now):
        """Packets that arrived together, as the engine takes an inbox: bulk
        ACKs go out once, at the end."""
        cdef const uint8_t[:] packet
        self.core.tcp.batching = True
        try:
            for item in packets:
                packet = item
                if packet.shape[0]:
                    stack_input(&self.core, &packet[0], packet.shape[0], now)
        finally:
            self.core.tcp.batching = False
        tcp_flush_acks(&self.core.tcp, now)

    def take_output(self, int64_t now=0):
        """The packets sent since the last call; lets blocked senders go on."""
        out = []
        while True:
            for i in range(self.sink.count):
                out.append(self.sink.slots[<size_t>i * self.sink.slot_size:
                                           <size_t>i * self.sink.slot_size + self.sink.lengths[i]])
            self.sink.count = 0
            if not self.core.tcp.blocked:
                return out
            tcp_resume(&self.core.tcp, now)

    def advance(self, int64_t now):
        """Runs the timers due at now; returns the next deadline (0: none)."""
        return stack_timers(&self.core, now)

    @property
    def next_deadline(self):
        return stack_next_deadline(&self.core)

    @property
    def memory(self):
        """Bytes the connections' rings hold."""
        return self.core.tcp.memory

    @property
    def connections(self):
        return self.core.tcp.count

    @property
    def dropped(self):
        return self.core.dropped

    # -- connections --

    cdef int _handle(self, Tcb *c):
        cdef int h = self.next_handle
        self.next_handle += 1
        self.handles[h] = <uintptr_t>c
        c.user = <void *><uintptr_t>h
        return h

    cdef Tcb *_tcb(self, int handle) except NULL:
        try:
            return <Tcb *><uintptr_t>self.handles[handle]
        except KeyError:
            raise ValueError(f"no connection {handle}") from None

    def connect(self, local, remote, uint16_t port, int64_t now, uint16_t lport=0):
        cdef Addr l, r
        cdef bint v6, v6r
        cdef int error = 0
        addr_from_python(local, &l, &v6)
        addr_from_python(remote, &r, &v6r)
        if v6 != v6r:
            raise ValueError("mixed address families")
        c = tcp_connect(&self.core.tcp, v6, &l, &r, port, lport, now, &error)
        if c == NULL:
            raise OSError(error, "connect failed")
        return self._handle(c)

    def listen(self, local, uint16_t port, uint32_t backlog=128):
        cdef Addr l
        cdef bint v6
        cdef int error = 0
        addr_from_python(local, &l, &v6)
        c = tcp_listen(&self.core.tcp, v6, &l, port, backlog, &error)
        if c == NULL:
            raise OSError(error, "listen failed")
        return self._handle(c)

    def accept(self, int listener):
        c = tcp_accept(&self.core.tcp, self._tcb(listener))
        return None if c == NULL else self._handle(c)

    def send(self, int handle, const uint8_t[:] data, int64_t now):
        """Queues what fits of data; returns the count."""
        cdef Tcb *c = self._tcb(handle)
        cdef uint8_t *span
        cdef uint32_t n, done = 0, total = data.shape[0]
        while done < total:
            n = tcp_send_span(&self.core.tcp, c, &span)
            if n == 0:
                break
            if n > total - done:
                n = total - done
            memcpy(span, &data[done], n)
            tcp_sent(&self.core.tcp, c, n, now)
            done += n
        return done

    def recv(self, int handle, uint32_t maximum, int64_t now):
        cdef Tcb *c = self._tcb(handle)
        cdef uint8_t *span
        cdef uint32_t n
        out = bytearray()
        while len(out) < maximum:
            n = tcp_recv_span(c, &span)
            if n == 0:
                break
            if n > maximum - len(out):
                n = maximum - len(out)
            out += span[:n]
            tcp_consumed(&self.core.tcp, c, n, now)
        return bytes(out)

    def shutdown(self, int handle, int64_t now):
        tcp_shutdown(&self.core.tcp, self._tcb(handle), now)

    def close(self, int handle, int64_t now):
        tcp_close(&self.core.tcp, self._tcb(handle), now)

    def abort(self, int handle, int64_t now):
        tcp_abort(&self.core.tcp, self._tcb(handle), now)

    def release(self, int handle):
        tcp_release(&self.core.tcp, self._tcb(handle))
        del self.handles[handle]

    def set_nodelay(self, int handle, bint on):
        self._tcb(handle).nodelay = on

    def set_keepalive(self, int handle, bint on, int64_t now, uint32_t idle=7200, uint32_t interval=75,
                      uint32_t count=9):
        tcp_set_keepalive(&self.core.tcp, self._tcb(handle), on, idle, interval, count, now)

    def events(self):
        """[(handle, TCP_EV_* bits)] of connections that changed, each once."""
        out = []
        while True:
            c = tcp_ready(&self.core.tcp)
            if c == NULL:
                return out
            out.append((<int><uintptr_t>c.user, c.events))
            c.events = 0

    def state(self, int handle):
        return STATES[self._tcb(handle).state]

    def error(self, int handle):
        return self._tcb(handle).error

    def eof(self, int handle):
        return tcp_eof(self._tcb(handle))

    def info(self, int handle):
        cdef Tcb *c = self._tcb(handle)
        return {"state": STATES[c.state], "mss": c.mss, "cwnd": c.cwnd, "ssthresh": c.ssthresh,
                "snd_wnd": c.snd_wnd, "rto_ns": c.rto, "srtt_ns": c.srtt, "backoff": c.backoff,
                "ts": bool(c.ts_ok), "sack": bool(c.sack_ok), "snd_wscale": c.snd_wscale,
                "rcv_wscale": c.rcv_wscale, "send_queued": c.snd.length, "readable": c.rcv.length,
                "lport": c.lport, "rport": c.rport, "ooo": c.ooo_count, "snd_nxt": c.snd_nxt,
                "snd_una": c.snd_una, "rcv_nxt": c.rcv_nxt, "iss": c.iss, "accept_queue": c.accept_count,
                "half_open": c.half_open, "snd_max": c.snd_max, "in_recovery": bool(c.in_recovery),
                "sacked": c.sacked_count}
