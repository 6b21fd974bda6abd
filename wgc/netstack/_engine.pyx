# cython: language_level=3
"""The network stack's thread and its bridges to application sockets (see _engine.pxd)."""
from libc.errno cimport errno, EAGAIN, EINTR, ECONNRESET, ENOMEM
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t, uintptr_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from posix.unistd cimport read, write, close
from posix.stat cimport struct_stat, fstat

from wgc._epoll cimport (epoll_event, epoll_create1, epoll_ctl, epoll_wait, EPOLL_CLOEXEC, EPOLL_CTL_ADD,
                        EPOLL_CTL_MOD, EPOLL_CTL_DEL, EPOLLIN, EPOLLOUT, EPOLLHUP, EPOLLERR, EPOLLRDHUP)
from wgc._pthread cimport pthread_mutex_t, pthread_mutex_init, pthread_mutex_destroy, pthread_mutex_lock, pthread_mutex_unlock
from wgc.netstack._ip cimport Addr, addr_from_python, addr_to_python
from wgc.netstack._dgram cimport (Binding, DGRAM_RECORD, DGRAM_UDP, DGRAM_ECHO, dgram_bind, dgram_close,
                                  dgram_send, dgram_ready)
from wgc.netstack._link cimport StackPort, Inbox, link_sink, link_publish, link_inbox
from wgc.netstack._stack cimport StackCore, stack_setup, stack_free, stack_input, stack_timers, stack_next_deadline
from wgc.netstack._stack import STATES
from wgc.netstack._tcp cimport (Tcb, tcp_resume, tcp_flush_acks, tcp_connect, tcp_listen,
                                tcp_accept, tcp_send_span, tcp_sent, tcp_recv_span, tcp_consumed, tcp_eof,
                                tcp_shutdown, tcp_close, tcp_abort, tcp_release, tcp_ready, tcp_set_keepalive, tcp_count_states,
                                TCP_EV_READ, TCP_EV_WRITE, TCP_EV_CONNECTED, TCP_EV_CLOSED, TCP_EV_ACCEPT,
                                TCP_CLOSED, TCP_TIME_WAIT, TCP_LISTEN)

import os

cdef extern from "<sys/socket.h>" nogil:
    struct linger:
        int l_onoff
        int l_linger
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    int shutdown(int fd, int how)
    int setsockopt(int fd, int level, int name, const void *value, unsigned int length)
    int MSG_DONTWAIT, MSG_NOSIGNAL, SHUT_WR, SOL_SOCKET, SO_LINGER

cdef extern from *:
    """
    #include <sys/syscall.h>
    #ifndef SYS_pidfd_getfd
    #define SYS_pidfd_getfd 438     /* the same number on every architecture */
    #endif
    /* A descriptor of ours for another process's fd (Linux >= 5.6): glibc's
       wrapper is newer than the call. */
    static int wgc_pidfd_getfd(int pidfd, int fd) { return (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0); }
    """
    int wgc_pidfd_getfd(int pidfd, int fd) nogil

cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    int CLOCK_MONOTONIC

cdef enum:
    EVENTS_MAX = 64
    DATAGRAM_MAX = 65535 + DGRAM_RECORD
    ROUNDS_PER_WAKE = 8            # sink refills per round before waiting for the data plane


cdef inline int64_t monotonic_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


def _identity(int fd):
    """(device, inode) of a descriptor, (0, 0) for none (-1)."""
    if fd < 0:
        return 0, 0
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _close(int fd, int status_fd):
    os.close(fd)
    if status_fd >= 0:
        os.close(status_fd)


cdef class Engine:
    """One in-process interface: the stack, its link to the data plane and
    its thread's loop.  wgc.netstack.net.Net is the user's face of it."""

    def __cinit__(self, addresses, uint32_t mtu):
        self.pidfd = self.epoll_fd = -1
        stack_setup(&self.core, addresses, mtu)
        pthread_mutex_init(&self.lock, NULL)
        try:
            self.pidfd = os.pidfd_open(os.getpid())
        except OSError:
            pass                   # no pidfds: a reset reaches applications as an end of stream (_reset)
        self.epoll_fd = epoll_create1(EPOLL_CLOEXEC)
        if self.epoll_fd < 0:
            raise OSError(errno, "epoll_create1")
        self.port = StackPort()
        self._watch_wake()

    def __dealloc__(self):
        cdef Bridge *b = self.bridges
        cdef Bridge *next
        while b != NULL:
            next = b.next
            if b.fd >= 0:
                close(b.fd)
            if b.status_fd >= 0:
                close(b.status_fd)
            free(b)
            b = next
        stack_free(&self.core)
        if self.epoll_fd >= 0:
            close(self.epoll_fd)
        if self.pidfd >= 0:
            close(self.pidfd)
        pthread_mutex_destroy(&self.lock)

    cdef void _watch_wake(self) except *:
        cdef epoll_event ev
        ev.events = EPOLLIN
        ev.data.ptr = NULL
        if epoll_ctl(self.epoll_fd, EPOLL_CTL_ADD, self.port.wake_fd, &ev) < 0:
            raise OSError(errno, "epoll_ctl")

    # -- the loop ------------------------------------------------------------

    def run(self):
        """The engine's thread: returns after stop()."""
        with nogil:
            self._run()

    def stop(self):
        self.stopping = True
        self._wake()

    cdef void _wake(self) noexcept nogil:
        cdef uint64_t one = 1
        write(self.port.wake_fd, &one, 8)

    cdef void _run(self) noexcept nogil:
        cdef epoll_event events[EVENTS_MAX]
        cdef int n, i, timeout
        cdef int64_t now, deadline
        cdef uint64_t value
        while not self.stopping:
            pthread_mutex_lock(&self.lock)
            deadline = stack_next_deadline(&self.core)
            pthread_mutex_unlock(&self.lock)
            timeout = -1
            if deadline:
                now = monotonic_ns()
                timeout = 0 if deadline <= now else <int>((deadline - now + 999999) // 1000000)
            n = epoll_wait(self.epoll_fd, events, EVENTS_MAX, timeout)
            if n < 0 and errno != EINTR:
                break
            pthread_mutex_lock(&self.lock)
            now = monotonic_ns()
            self._begin()
            for i in range(n if n > 0 else 0):
                if events[i].data.ptr == NULL:
                    read(self.port.wake_fd, &value, 8)
                else:
                    self._socket_event(<Bridge *>events[i].data.ptr, events[i].events, now)
            self._inbox(now)
            stack_timers(&self.core, now)
            self._datagrams_in()
            self._finish(now)
            pthread_mutex_unlock(&self.lock)

    cdef void _begin(self) noexcept nogil:
        if self.core.netif.sink == NULL or self.core.netif.sink.count == self.core.netif.sink.capacity:
            self.core.netif.sink = link_sink(self.port)
        if self.datagrams_paused and self.core.netif.sink != NULL:
            self._unpause_datagrams()

    cdef void _inbox(self, int64_t now) noexcept nogil:
        cdef Inbox *box = link_inbox(self.port)
        cdef uint32_t at = 0, length
        self.core.tcp.batching = True
        while at + 4 <= box.used:
            memcpy(&length, box.data + at, 4)
            at += 4
            stack_input(&self.core, box.data + at, length, now)
            at += length
            if self.core.tcp.blocked:
                self._refill(now)
        self.core.tcp.batching = False
        tcp_flush_acks(&self.core.tcp, now)

    cdef void _refill(self, int64_t now) noexcept nogil:
        """The sink filled: hand it over and let the stopped senders go on."""
        cdef int rounds = 0
        while self.core.tcp.blocked and rounds < ROUNDS_PER_WAKE:
            link_publish(self.port)
            self.core.netif.sink = link_sink(self.port)
            if self.core.netif.sink == NULL:
                return             # both buffers with the data plane: its release wakes us
            tcp_resume(&self.core.tcp, now)
            rounds += 1

    cdef void _finish(self, int64_t now) noexcept nogil:
        """Events to the bridges, then the packets to the data plane."""
        cdef Tcb *c
        while True:
            c = tcp_ready(&self.core.tcp)
            if c == NULL:
                break
            self._service(<Bridge *>c.user, c, now)
            if self.core.tcp.blocked:
                self._refill(now)
        if self.core.tcp.blocked:
            self._refill(now)
        link_publish(self.port)
        self.core.netif.sink = link_sink(self.port)
        if self.core.tcp.blocked and self.core.netif.sink != NULL:
            self._refill(now)
            link_publish(self.port)

    # -- bridges ---------------------------------------------------------------

    cdef void _interest(self, Bridge *b) noexcept nogil:
        cdef epoll_event ev
        cdef uint32_t want = 0 if b.flags & BRIDGE_DATAGRAM else EPOLLRDHUP
        if b.flags & BRIDGE_HELD:
            return                 # not in the epoll set until resume()
        if not b.flags & (BRIDGE_READ_PAUSED | BRIDGE_APP_EOF | BRIDGE_LISTENER):
            want |= EPOLLIN
        if b.flags & BRIDGE_WRITE_WAIT:
            want |= EPOLLOUT
        if want == b.interest:
            return
        ev.events = want
        ev.data.ptr = b
        epoll_ctl(self.epoll_fd, EPOLL_CTL_MOD, b.fd, &ev)
        b.interest = want

    cdef void _add_datagram_bridge(self, Bridge *b, int fd, Binding *d) noexcept nogil:
        cdef epoll_event ev
        b.fd = fd
        b.status_fd = b.peer_fd = -1
        b.binding = d
        b.flags = BRIDGE_DATAGRAM
        b.interest = EPOLLIN
        ev.events = EPOLLIN
        ev.data.ptr = b
        epoll_ctl(self.epoll_fd, EPOLL_CTL_ADD, fd, &ev)
        b.next = self.bridges
        if self.bridges != NULL:
            self.bridges.prev = b
        self.bridges = b
        d.user = b

    cdef Bridge *_bridge(self, int fd, Tcb *c, uint32_t flags) noexcept nogil:
        cdef Bridge *b = <Bridge *>calloc(1, sizeof(Bridge))
        cdef epoll_event ev
        if b == NULL:
            return NULL
        b.fd = fd
        b.tcb = c
        b.flags = flags
        b.status_fd = b.peer_fd = -1
        self.last_id += 1
        b.id = self.last_id
        if not flags & BRIDGE_HELD:
            b.interest = EPOLLRDHUP | (0 if flags & BRIDGE_LISTENER else EPOLLIN)
            ev.events = b.interest
            ev.data.ptr = b
            if epoll_ctl(self.epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0:
                free(b)
                return NULL
        b.next = self.bridges
        if self.bridges != NULL:
            self.bridges.prev = b
        self.bridges = b
        c.user = b
        if flags & BRIDGE_SPLICED:
            self.spliced += 1
        return b

    cdef Bridge *_find(self, uint64_t id) noexcept nogil:
        cdef Bridge *b = self.bridges
        while b != NULL and b.id != id:
            b = b.next
        return b

    cdef void _drop(self, Bridge *b) noexcept nogil:
        """The bridge ends: its socket closes and the connection is the stack's alone."""
        cdef epoll_event ev
        if not b.flags & BRIDGE_HELD:
            epoll_ctl(self.epoll_fd, EPOLL_CTL_DEL, b.fd, &ev)
        close(b.fd)
        if b.status_fd >= 0:
            close(b.status_fd)     # its reader hears of the end: no status will come
        if b.binding != NULL:
            dgram_close(&self.core.dgram, b.binding)
        if b.tcb != NULL:
            b.tcb.user = NULL
            tcp_release(&self.core.tcp, b.tcb)
        if b.prev != NULL:
            b.prev.next = b.next
        else:
            self.bridges = b.next
        if b.next != NULL:
            b.next.prev = b.prev
        if b.flags & BRIDGE_SPLICED:
            self.spliced -= 1
        free(b)

    cdef void _reset(self, Bridge *b) noexcept nogil:
        """The connection failed (a RST, a timeout) and every byte that came
        before is in the bridge's socket: the bridge ends so that the other
        side's next read, once those bytes are read, fails as after a reset.

        A TCP socket (a splice) closes with SO_LINGER {1, 0}: its kernel sends
        a RST.  A Unix socketpair has no such thing, but Linux gives a stream
        socket's peer ECONNRESET when the socket closes with unread bytes in
        its own receive queue (unix_release_sock), reported once the peer's
        queue is empty, before its end of stream.  Our end has nothing unread,
        so a byte goes into it from the application's end, which this process
        holds: pidfd_getfd gives us a descriptor for it, checked to be the
        same socket (device and inode) as when the bridge was made, since the
        application may have closed it and the number been reused.  Where
        pidfd_getfd is refused (Linux < 5.6, seccomp), the application's end
        is unknown or gone, or it shut its sending side (so nothing can go in
        through it), the reset reaches it as an end of stream."""
        cdef linger lg
        cdef struct_stat st
        cdef int theirs
        cdef uint8_t byte = 0
        if b.peer_fd >= 0:
            theirs = wgc_pidfd_getfd(self.pidfd, b.peer_fd) if self.pidfd >= 0 else -1
            if theirs >= 0:
                if (fstat(theirs, &st) == 0 and <uint64_t>st.st_dev == b.peer_dev
                        and <uint64_t>st.st_ino == b.peer_ino):
                    send(theirs, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL)
                close(theirs)
        else:
            lg.l_onoff = 1
            lg.l_linger = 0
            setsockopt(b.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg))
        self._drop(b)

    cdef void _socket_event(self, Bridge *b, uint32_t events, int64_t now) noexcept nogil:
        if b.flags & BRIDGE_DATAGRAM:
            if events & (EPOLLHUP | EPOLLERR):
                self._drop(b)
            elif events & EPOLLIN:
                self._datagrams_out(b)
            return
        if b.flags & BRIDGE_LISTENER:
            if events & (EPOLLHUP | EPOLLERR):
                tcp_close(&self.core.tcp, b.tcb, now)
                self._drop(b)
            return
        if events & EPOLLOUT:
            b.flags &= ~BRIDGE_WRITE_WAIT
            if self._deliver(b, now) < 0:
                return
        if events & (EPOLLIN | EPOLLRDHUP):
            if self._take(b, now) < 0:
                return
        if events & (EPOLLHUP | EPOLLERR):
            # The other side closed: close(2) on the connection, or an abort
            # when it went with an error (a TCP client's RST, or the
            # application closed its socketpair end with bytes unread).
            if events & EPOLLERR:
                tcp_abort(&self.core.tcp, b.tcb, now)
            else:
                tcp_close(&self.core.tcp, b.tcb, now)
            self._drop(b)
            return
        self._interest(b)

    cdef int _take(self, Bridge *b, int64_t now) noexcept nogil:
        """Moves what the application wrote into the send ring."""
        cdef uint8_t *span
        cdef uint32_t room
        cdef ssize_t got
        while not b.flags & BRIDGE_APP_EOF:
            room = tcp_send_span(&self.core.tcp, b.tcb, &span)
            if room == 0:
                b.flags |= BRIDGE_READ_PAUSED
                break
            got = recv(b.fd, span, room, MSG_DONTWAIT)
            if got > 0:
                tcp_sent(&self.core.tcp, b.tcb, <uint32_t>got, now)
                continue
            if got == 0:
                b.flags |= BRIDGE_APP_EOF
                tcp_shutdown(&self.core.tcp, b.tcb, now)
                break
            if errno == EINTR:
                continue
            if errno != EAGAIN:
                tcp_abort(&self.core.tcp, b.tcb, now)
                self._drop(b)
                return -1
            break
        return 0

    cdef int _deliver(self, Bridge *b, int64_t now) noexcept nogil:
        """Moves received bytes to the application's socket, and the peer's
        end after them."""
        cdef uint8_t *span
        cdef uint32_t n
        cdef ssize_t sent
        while True:
            n = tcp_recv_span(b.tcb, &span)
            if n == 0:
                break
            sent = send(b.fd, span, n, MSG_DONTWAIT | MSG_NOSIGNAL)
            if sent > 0:
                tcp_consumed(&self.core.tcp, b.tcb, <uint32_t>sent, now)
                continue
            if sent < 0 and errno == EINTR:
                continue
            if sent < 0 and errno == EAGAIN:
                b.flags |= BRIDGE_WRITE_WAIT
                return 0
            tcp_close(&self.core.tcp, b.tcb, now)   # the application is gone: unread bytes make it a reset
            self._drop(b)
            return -1
        if tcp_eof(b.tcb) and not b.flags & BRIDGE_EOF_SENT:
            if b.tcb.error:
                self._reset(b)
                return -1
            b.flags |= BRIDGE_EOF_SENT
            shutdown(b.fd, SHUT_WR)
        return 0

    cdef void _service(self, Bridge *b, Tcb *c, int64_t now) noexcept nogil:
        """What the stack has for a bridge's connection."""
        cdef uint32_t events = c.events
        cdef uint8_t status
        cdef uint32_t i, count
        cdef int report
        c.events = 0
        if b == NULL:
            return
        if b.flags & BRIDGE_LISTENER:
            if events & TCP_EV_ACCEPT and c.accept_count > b.announced:
                count = c.accept_count - b.announced
                status = 0
                for i in range(count):
                    if send(b.fd, &status, 1, MSG_DONTWAIT | MSG_NOSIGNAL) != 1:
                        break
                    b.announced += 1
            return
        if b.flags & BRIDGE_CONNECTING:
            if events & TCP_EV_CONNECTED:
                status = 0
            elif events & TCP_EV_CLOSED:
                status = <uint8_t>(c.error if c.error else ECONNRESET)
            else:
                return
            b.flags &= ~BRIDGE_CONNECTING
            report = b.status_fd
            b.status_fd = -1
            if report < 0:
                send(b.fd, &status, 1, MSG_DONTWAIT | MSG_NOSIGNAL)
            if status:
                self._drop(b)      # first: a splice's caller reading the failure has its socket alone
            if report >= 0:
                send(report, &status, 1, MSG_DONTWAIT | MSG_NOSIGNAL)
                close(report)
            if status:
                return
        if b.flags & BRIDGE_HELD:
            return                 # resume() looks at everything that happened meanwhile
        if events & (TCP_EV_READ | TCP_EV_CLOSED) and not b.flags & BRIDGE_WRITE_WAIT:
            if self._deliver(b, now) < 0:
                return
        if events & TCP_EV_WRITE and b.flags & BRIDGE_READ_PAUSED:
            b.flags &= ~BRIDGE_READ_PAUSED
            if self._take(b, now) < 0:
                return
        if (c.state == TCP_CLOSED or c.state == TCP_TIME_WAIT) and b.flags & BRIDGE_EOF_SENT:
            if c.error:
                self._reset(b)     # a failure after the peer's end: the next read reports it
                return
            if b.flags & BRIDGE_APP_EOF:
                self._drop(b)      # nothing more can pass either way
                return
        self._interest(b)

    # -- datagram bridges ----------------------------------------------------------

    cdef void _datagrams_out(self, Bridge *b) noexcept nogil:
        """Sends the records the application wrote: each a head (v6, 0, port,
        address) and the payload.  With the sink full the bridge waits."""
        cdef uint8_t record[DATAGRAM_MAX]
        cdef ssize_t got
        cdef Addr dst
        while True:
            if self.core.netif.sink == NULL or self.core.netif.sink.count == self.core.netif.sink.capacity:
                b.flags |= BRIDGE_READ_PAUSED
                self.datagrams_paused = True
                self._interest(b)
                return
            got = recv(b.fd, record, DATAGRAM_MAX, MSG_DONTWAIT)
            if got < 0:
                if errno == EINTR:
                    continue
                return
            if got < DGRAM_RECORD or (<bint>record[0]) != b.binding.v6:
                continue           # not a record of ours: dropped
            memset(&dst, 0, sizeof(Addr))
            memcpy(dst.b, record + 4, 16)
            dgram_send(&self.core.dgram, b.binding, &dst, (record[2] << 8) | record[3], record + DGRAM_RECORD,
                       <uint32_t>got - DGRAM_RECORD)

    cdef void _unpause_datagrams(self) noexcept nogil:
        cdef Bridge *b = self.bridges
        self.datagrams_paused = False
        while b != NULL:
            if b.flags & BRIDGE_READ_PAUSED and b.flags & BRIDGE_DATAGRAM:
                b.flags &= ~BRIDGE_READ_PAUSED
                self._interest(b)
            b = b.next

    cdef void _datagrams_in(self) noexcept nogil:
        """Hands what arrived to the applications: a record per datagram, or
        a head whose second byte is an errno.  A full socket drops (UDP)."""
        cdef Binding *d
        cdef Bridge *b
        cdef uint8_t head[DGRAM_RECORD]
        cdef uint32_t at, length
        while True:
            d = dgram_ready(&self.core.dgram)
            if d == NULL:
                return
            b = <Bridge *>d.user
            if d.error:
                memset(head, 0, DGRAM_RECORD)
                head[0] = d.v6
                head[1] = <uint8_t>d.error
                d.error = 0
                if b != NULL:
                    send(b.fd, head, DGRAM_RECORD, MSG_DONTWAIT | MSG_NOSIGNAL)
            at = 0
            while b != NULL and at + 4 <= d.queue_used:
                memcpy(&length, d.queue + at, 4)
                send(b.fd, d.queue + at + 4, length, MSG_DONTWAIT | MSG_NOSIGNAL)
                at += 4 + length
            d.queue_used = 0

    # -- the application's calls (Python threads) ---------------------------

    def connect(self, int fd, local, remote, uint16_t port, int peer_fd=-1, int status_fd=-1):
        """Opens a connection bridged to fd, a stream socket that is the
        engine's from now on (it closes fd, and status_fd, when the bridge
        ends or this call fails).

        The status byte (0, or the errno of the failure) goes through fd to
        its other end, or with status_fd (a stream socket) to status_fd; the
        bridge is then held: the engine neither reads nor writes fd until
        resume(handle), and the bytes from the peer wait in the connection's
        receive ring.  peer_fd: the application's end when fd is one end of a
        socketpair (see _reset), -1 when fd is a caller's own socket (a
        splice).  Returns (handle, the local port)."""
        cdef Addr l, r
        cdef bint v6, v6r
        cdef int error = 0
        cdef Tcb *c
        cdef Bridge *b
        cdef uint64_t handle = 0, peer_dev, peer_ino
        cdef uint16_t lport = 0
        cdef uint32_t flags = (BRIDGE_CONNECTING | (BRIDGE_HELD if status_fd >= 0 else 0)
                               | (BRIDGE_SPLICED if peer_fd < 0 else 0))
        try:
            addr_from_python(local, &l, &v6)
            addr_from_python(remote, &r, &v6r)
            peer_dev, peer_ino = _identity(peer_fd)
        except BaseException:
            _close(fd, status_fd)
            raise
        with nogil:
            pthread_mutex_lock(&self.lock)
            self._begin()
            c = tcp_connect(&self.core.tcp, v6, &l, &r, port, 0, monotonic_ns(), &error)
            if c != NULL:
                b = self._bridge(fd, c, flags)
                if b == NULL:
                    tcp_abort(&self.core.tcp, c, monotonic_ns())
                    tcp_release(&self.core.tcp, c)
                    error = ENOMEM
                else:
                    b.status_fd = status_fd
                    b.peer_fd, b.peer_dev, b.peer_ino = peer_fd, peer_dev, peer_ino
                    handle, lport = b.id, c.lport
            pthread_mutex_unlock(&self.lock)
            self._wake()
        if error:
            _close(fd, status_fd)
            raise OSError(error, os.strerror(error))
        return handle, lport

    def resume(self, uint64_t handle, bytes first=b""):
        """A held bridge starts moving bytes (from what waits on either side),
        `first` sent before any byte read from its socket (a request the
        caller read and rewrote, say); False when there is no such held
        bridge (cancelled, already resumed), or no room in the send ring for
        `first` (the connection is then aborted)."""
        cdef Bridge *b
        cdef epoll_event ev
        cdef bint ok = False
        cdef const uint8_t *data = first
        cdef uint32_t left = <uint32_t>len(first)
        with nogil:
            pthread_mutex_lock(&self.lock)
            b = self._find(handle)
            if b != NULL and b.flags & BRIDGE_HELD and left and not self._queue(b, data, left):
                self._begin()
                tcp_abort(&self.core.tcp, b.tcb, monotonic_ns())
                self._drop(b)
                b = NULL
            if b != NULL and b.flags & BRIDGE_HELD:
                # EPOLLOUT at once: what arrived meanwhile is delivered (and
                # an end or a failure passed on) as the socket takes it.
                b.flags = (b.flags & ~BRIDGE_HELD) | BRIDGE_WRITE_WAIT
                b.interest = ev.events = EPOLLRDHUP | EPOLLIN | EPOLLOUT
                ev.data.ptr = b
                ok = epoll_ctl(self.epoll_fd, EPOLL_CTL_ADD, b.fd, &ev) == 0
                if not ok:
                    self._begin()
                    tcp_abort(&self.core.tcp, b.tcb, monotonic_ns())
                    self._drop(b)
            pthread_mutex_unlock(&self.lock)
            self._wake()
        return ok

    cdef bint _queue(self, Bridge *b, const uint8_t *data, uint32_t count) noexcept nogil:
        """Appends count bytes to the bridge's send ring; False when they do not fit."""
        cdef uint8_t *span
        cdef uint32_t room
        cdef int64_t now = monotonic_ns()
        self._begin()
        while count:
            room = tcp_send_span(&self.core.tcp, b.tcb, &span)
            if room == 0:
                return False
            room = room if room < count else count
            memcpy(span, data, room)
            tcp_sent(&self.core.tcp, b.tcb, room, now)
            data += room
            count -= room
        return True

    def cancel(self, uint64_t handle):
        """A held bridge's connection is aborted (a RST once it is open) and
        the bridge dropped; False when there is no such held bridge."""
        cdef Bridge *b
        cdef bint ok = False
        with nogil:
            pthread_mutex_lock(&self.lock)
            b = self._find(handle)
            if b != NULL and b.flags & BRIDGE_HELD:
                self._begin()
                tcp_abort(&self.core.tcp, b.tcb, monotonic_ns())
                self._drop(b)
                ok = True
            pthread_mutex_unlock(&self.lock)
            self._wake()
        return ok

    def listen(self, int fd, local, uint16_t port, uint32_t backlog):
        """A listener announcing each connection to accept by a byte on fd."""
        cdef Addr l
        cdef bint v6
        cdef int error = 0
        cdef Tcb *c
        addr_from_python(local, &l, &v6)
        os.set_blocking(fd, False)
        with nogil:
            pthread_mutex_lock(&self.lock)
            c = tcp_listen(&self.core.tcp, v6, &l, port, backlog, &error)
            if c != NULL and self._bridge(fd, c, BRIDGE_LISTENER) == NULL:
                tcp_close(&self.core.tcp, c, monotonic_ns())
                tcp_release(&self.core.tcp, c)
                error = ENOMEM
            pthread_mutex_unlock(&self.lock)
        if error:
            os.close(fd)
            raise OSError(error, os.strerror(error))
        return <uintptr_t>c

    def accept(self, uintptr_t listener, int fd, int peer_fd=-1):
        """The next connection of a listener bridged to fd (a stream socket,
        the engine's from now on; peer_fd as for connect), with its peer's
        (address, port); None when none waits (fd is then closed)."""
        cdef Tcb *l = <Tcb *>listener
        cdef Tcb *c
        cdef Bridge *b = NULL
        cdef Addr remote
        cdef bint v6 = False
        cdef uint16_t rport = 0
        cdef uint64_t peer_dev, peer_ino
        try:
            peer_dev, peer_ino = _identity(peer_fd)
        except BaseException:
            _close(fd, -1)
            raise
        with nogil:
            pthread_mutex_lock(&self.lock)
            # The caller took one announcement byte: whether or not its
            # connection is still there (a reset may have ended it in the
            # queue), one fewer is outstanding.
            if (<Bridge *>l.user).announced:
                (<Bridge *>l.user).announced -= 1
            c = tcp_accept(&self.core.tcp, l)
            if c != NULL:
                # Copied under the lock: once it is released, the engine may
                # end the connection (a reset) and free it.
                remote, v6, rport = c.remote, c.v6, c.rport
                b = self._bridge(fd, c, BRIDGE_SPLICED if peer_fd < 0 else 0)
                if b == NULL:
                    tcp_abort(&self.core.tcp, c, monotonic_ns())
                    tcp_release(&self.core.tcp, c)
                else:
                    b.peer_fd, b.peer_dev, b.peer_ino = peer_fd, peer_dev, peer_ino
            pthread_mutex_unlock(&self.lock)
            self._wake()
        if b == NULL:
            os.close(fd)
            return None
        return addr_to_python(&remote, v6), rport

    def bind_datagram(self, int fd, bint echo, local, uint16_t port):
        """A UDP endpoint (echo: an ICMP echo endpoint, port its identifier)
        bridged to fd, the stack's end of a SOCK_DGRAM socketpair; returns
        (handle, port)."""
        cdef Addr l
        cdef bint v6
        cdef int error = 0
        cdef Binding *d
        cdef Bridge *b
        addr_from_python(local, &l, &v6)
        os.set_blocking(fd, False)
        with nogil:
            pthread_mutex_lock(&self.lock)
            d = dgram_bind(&self.core.dgram, DGRAM_ECHO if echo else DGRAM_UDP, v6, &l, port, &error)
            if d != NULL:
                b = <Bridge *>calloc(1, sizeof(Bridge))
                if b == NULL:
                    dgram_close(&self.core.dgram, d)
                    error = ENOMEM
                else:
                    self._add_datagram_bridge(b, fd, d)
            pthread_mutex_unlock(&self.lock)
        if error:
            os.close(fd)
            raise OSError(error, os.strerror(error))
        return <uintptr_t>d, d.port

    def connect_datagram(self, uintptr_t handle, remote, uint16_t port):
        """Only datagrams from remote:port are taken now, and ICMP errors reach the endpoint."""
        cdef Binding *d = <Binding *>handle
        cdef Addr r
        cdef bint v6
        addr_from_python(remote, &r, &v6)
        with nogil:
            pthread_mutex_lock(&self.lock)
            d.connected = True
            d.remote = r
            d.rport = port
            pthread_mutex_unlock(&self.lock)

    def close_listener(self, uintptr_t listener):
        cdef Tcb *l = <Tcb *>listener
        with nogil:
            pthread_mutex_lock(&self.lock)
            if l.user != NULL:
                tcp_close(&self.core.tcp, l, monotonic_ns())
                self._drop(<Bridge *>l.user)
            pthread_mutex_unlock(&self.lock)
            self._wake()

    def local_address(self, bint v6):
        """The interface's first address of a family (None: it has none)."""
        if (self.core.netif.count6 if v6 else self.core.netif.count4) == 0:
            return None
        return addr_to_python(&self.core.netif.addr6[0] if v6 else &self.core.netif.addr4[0], v6)

    def states(self):
        """{state name: connections} over the stack's table (listeners included)."""
        cdef uint32_t counts[11]
        memset(counts, 0, sizeof(counts))
        with nogil:
            pthread_mutex_lock(&self.lock)
            tcp_count_states(&self.core.tcp, counts)
            pthread_mutex_unlock(&self.lock)
        return {name: counts[i] for i, name in enumerate(STATES) if counts[i]}

    @property
    def memory(self):
        return self.core.tcp.memory

    @property
    def connections(self):
        return self.core.tcp.count
