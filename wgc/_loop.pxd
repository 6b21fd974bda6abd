# The data-plane thread: an epoll loop over one Core's port (its ready_fd)
# and UDP sockets.  For each readable descriptor it takes Core.mutex, hands
# one batch to Core (_tx_batch, _rx_batch) and lets the mutex go, so the
# control plane never waits longer than one batch (see _core.pxd).
from wgc._core cimport Core

cdef class Loop:
    cdef int epoll_fd
    cdef int stop_fd               # written by stop() to wake epoll_wait
    cdef bint stopping

    cdef void watch(self, int fd) except *
    cdef void unwatch(self, int fd) noexcept
    cdef bint _port_readable(self, Core core) noexcept nogil
    cdef void _udp_readable(self, Core core, int fd) noexcept nogil
    cdef void _run(self, Core core) noexcept nogil
