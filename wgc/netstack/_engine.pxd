# The network stack's thread: it runs the sans-I/O stack (wgc/netstack/_stack)
# against the data plane (through a StackPort, wgc/netstack/_link) and the
# application (through bridges: each TCP connection is bridged to a stream
# socket: one end of a Unix socketpair whose other end is the application's
# socket object, or a caller's own socket, say a local TCP client of a proxy,
# spliced to the tunnel connection).
#
# Who calls whom, on which thread, under which lock:
#   - the engine's thread (Engine.run, GIL released) waits in epoll for the
#     link's wake_fd, the bridges' sockets and the stack's next timer, then
#     does one round holding Engine.lock: packets in, bytes between sockets
#     and rings, timers, events, packets out (link_publish);
#   - Python threads (wgc.netstack.net) call Engine's methods, which take the
#     same lock (waiting without the GIL), change the stack, and wake the
#     engine's thread to finish the round;
#   - the data-plane thread only ever touches the StackPort, under its own
#     mutex (wgc/netstack/_link.pxd).
#
# Bridges are the engine's: it frees them (and may free their Tcb) whenever
# a connection ends, so Python holds no pointer to one.  A held bridge (a
# splice whose caller still writes its own reply first) is named by its id,
# which resume() and cancel() look up under the lock: a bridge that is gone
# is simply not found.  A splice's fd is the engine's own dup of the caller's
# socket, so the caller keeps its socket when the splice fails.  The engine's
# I/O on bridge sockets always passes MSG_DONTWAIT: it does not depend on
# O_NONBLOCK, a flag of the open file that the caller's descriptor shares.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from wgc.netstack._link cimport StackPort
from wgc.netstack._stack cimport StackCore
from wgc.netstack._dgram cimport Binding
from wgc.netstack._tcp cimport Tcb

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass

cdef enum:
    BRIDGE_CONNECTING = 1          # the status byte is not written yet
    BRIDGE_READ_PAUSED = 2         # the send ring is full: not reading the socket
    BRIDGE_WRITE_WAIT = 4          # the socket is full: waiting for EPOLLOUT
    BRIDGE_APP_EOF = 8             # the application shut its sending side
    BRIDGE_EOF_SENT = 16           # the application was told the peer's end
    BRIDGE_LISTENER = 32
    BRIDGE_DATAGRAM = 64           # a datagram endpoint (SOCK_DGRAM socketpair): records both ways
    BRIDGE_HELD = 128              # a splice not started: fd is not watched, read or written
    BRIDGE_SPLICED = 256           # fd is a caller's own socket (a proxy's client), not a socketpair end

cdef struct Bridge:
    int fd                         # the stack's end of the socketpair, or a splice's socket
    Tcb *tcb                       # a TCP connection or listener, or
    Binding *binding               # a datagram endpoint
    uint32_t flags
    uint32_t interest              # the epoll events asked for now
    uint32_t announced             # listeners: connections announced by a byte
    uint64_t id                    # how Python names it (resume, cancel)
    int status_fd                  # a held connection's status byte goes here (-1: to fd, or sent)
    int peer_fd                    # the application's end of the socketpair (-1: unknown)
    uint64_t peer_dev, peer_ino    # and its identity, checked before a reset reaches it (_reset)
    Bridge *next                   # all bridges of the engine
    Bridge *prev

cdef class Engine:
    cdef StackCore core
    cdef pthread_mutex_t lock
    cdef readonly StackPort port
    cdef int epoll_fd
    cdef int pidfd                 # this process, to reach an application's socket (-1: refused)
    cdef uint64_t last_id
    cdef readonly uint32_t spliced # bridges of BRIDGE_SPLICED now (what a proxy counts against its limit)
    cdef Bridge *bridges
    cdef bint stopping
    cdef bint datagrams_paused     # a datagram bridge waits for room in the sink

    cdef void _watch_wake(self) except *
    cdef void _wake(self) noexcept nogil
    cdef void _run(self) noexcept nogil
    cdef void _begin(self) noexcept nogil
    cdef void _inbox(self, int64_t now) noexcept nogil
    cdef void _refill(self, int64_t now) noexcept nogil
    cdef void _finish(self, int64_t now) noexcept nogil
    cdef void _interest(self, Bridge *b) noexcept nogil
    cdef Bridge *_bridge(self, int fd, Tcb *c, uint32_t flags) noexcept nogil
    cdef Bridge *_find(self, uint64_t id) noexcept nogil
    cdef bint _queue(self, Bridge *b, const uint8_t *data, uint32_t count) noexcept nogil
    cdef void _add_datagram_bridge(self, Bridge *b, int fd, Binding *d) noexcept nogil
    cdef void _drop(self, Bridge *b) noexcept nogil
    cdef void _reset(self, Bridge *b) noexcept nogil
    cdef void _socket_event(self, Bridge *b, uint32_t events, int64_t now) noexcept nogil
    cdef int _take(self, Bridge *b, int64_t now) noexcept nogil
    cdef int _deliver(self, Bridge *b, int64_t now) noexcept nogil
    cdef void _service(self, Bridge *b, Tcb *c, int64_t now) noexcept nogil
    cdef void _datagrams_out(self, Bridge *b) noexcept nogil
    cdef void _datagrams_in(self) noexcept nogil
    cdef void _unpause_datagrams(self) noexcept nogil
