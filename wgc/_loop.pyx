# cython: language_level=3
"""The data-plane thread's epoll loop (see _loop.pxd)."""
from libc.errno cimport errno, EINTR
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from posix.unistd cimport read, write, close

from wgc._constants cimport SECOND
from wgc._epoll cimport (epoll_event, epoll_create1, epoll_ctl, epoll_wait, EPOLL_CLOEXEC, EPOLL_CTL_ADD,
                        EPOLL_CTL_DEL, EPOLLIN)
from wgc._core cimport SLOT_SIZE
from wgc._pthread cimport pthread_mutex_lock, pthread_mutex_unlock
from wgc._port cimport PacketPort
from wgc._udp cimport BATCH, GRO_RECV_BATCH, Endpoint, udp_recv_batch


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


cdef inline void clock_now(int64_t *mono, int64_t *wall) noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    mono[0] = <int64_t>ts.tv_sec * SECOND + ts.tv_nsec
    clock_gettime(CLOCK_REALTIME, &ts)
    wall[0] = <int64_t>ts.tv_sec * SECOND + ts.tv_nsec


cdef class Loop:
    """The epoll loop of one data plane: run(core) on its own thread, stop() from any."""

    def __cinit__(self):
        self.stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        self.epoll_fd = epoll_create1(EPOLL_CLOEXEC)
        if self.stop_fd < 0 or self.epoll_fd < 0:
            raise OSError(errno, "cannot create the data plane's event descriptors")
        self.watch(self.stop_fd)

    def __dealloc__(self):
        for fd in (self.stop_fd, self.epoll_fd):
            if fd >= 0:
                close(fd)

    cdef void watch(self, int fd) except *:
        cdef epoll_event ev
        ev.events = EPOLLIN
        ev.data.u64 = 0
        ev.data.fd = fd
        if epoll_ctl(self.epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0:
            raise OSError(errno, "epoll_ctl")

    cdef void unwatch(self, int fd) noexcept:
        cdef epoll_event ev
        if fd >= 0:
            epoll_ctl(self.epoll_fd, EPOLL_CTL_DEL, fd, &ev)

    cdef bint _port_readable(self, Core core) noexcept nogil:
        """Seals and sends what the port read; False once it is gone."""
        cdef uint8_t *slots
        cdef uint32_t *lengths
        cdef uint64_t value
        cdef int count
        cdef int64_t now, wall
        cdef bint gone
        read(core.port.ready_fd, &value, 8)
        while True:
            pthread_mutex_lock(&core.mutex)
            count = core.port.take(&slots, &lengths)
            if count >= 0:
                clock_now(&now, &wall)
                core._tx_batch(slots, lengths, count, now)
                core.port.release()
            pthread_mutex_unlock(&core.mutex)
            if count < 0:
                break
        pthread_mutex_lock(&core.mutex)
        gone = core.port.gone()
        if gone:
            core.tun_gone = True
            core._notify()
        pthread_mutex_unlock(&core.mutex)
        return not gone

    cdef void _udp_readable(self, Core core, int fd) noexcept nogil:
        cdef Endpoint sources[BATCH]
        cdef uint32_t lengths[BATCH]
        cdef uint32_t sizes[BATCH]
        cdef int n
        cdef int64_t now, wall
        pthread_mutex_lock(&core.mutex)
        # The control plane may have replaced the sockets since epoll saw fd.
        if fd == core.udp.fd[0] or fd == core.udp.fd[1]:
            n = udp_recv_batch(fd, core.rx_slots, SLOT_SIZE, GRO_RECV_BATCH if core.udp.offload else BATCH,
                               sources, lengths, sizes)
            if n > 0:
                clock_now(&now, &wall)
                core._rx_batch(n, sources, lengths, sizes, now, wall)
        pthread_mutex_unlock(&core.mutex)

    cdef void _run(self, Core core) noexcept nogil:
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
                elif fd == core.port.ready_fd:
                    if not self._port_readable(core):
                        return
                else:
                    self._udp_readable(core, fd)

    def run(self, Core core not None):
        """Runs core's data plane until stop() or until its port is gone."""
        cdef PacketPort port = core.port
        port.start(BATCH, SLOT_SIZE)
        try:
            if port.ready_fd < 0:
                raise RuntimeError("the data plane runs on a port that reads; set_tun first")
            self.watch(port.ready_fd)
            with nogil:
                self._run(core)
        finally:
            self.unwatch(port.ready_fd)
            port.stop()

    def stop(self):
        cdef uint64_t one = 1
        self.stopping = True
        write(self.stop_fd, &one, 8)
