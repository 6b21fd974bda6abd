# cython: language_level=3
"""The TUN reader thread (see _reader.pxd)."""
from libc.errno cimport errno, EAGAIN, EINTR
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from posix.unistd cimport read, write, close

from wgc._pthread cimport (pthread_create, pthread_join, pthread_mutex_init, pthread_mutex_destroy,
                           pthread_mutex_lock, pthread_mutex_unlock, pthread_cond_init, pthread_cond_destroy,
                           pthread_cond_wait, pthread_cond_signal, pthread_self, pthread_setname_np,
                           thread_may_preempt)

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_NONBLOCK
    int EFD_CLOEXEC

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    short POLLIN


cdef void signal_fd(int fd) noexcept nogil:
    cdef uint64_t one = 1
    write(fd, &one, 8)


cdef uint32_t fill(TunReader *r, uint8_t *slots, uint32_t *lengths, size_t *size) noexcept nogil:
    """Reads what the TUN has, up to one batch, adding the bytes to size;
    sets r.gone when it fails."""
    cdef uint32_t n = 0
    cdef ssize_t got
    while n < r.batch:
        got = read(r.tun_fd, slots + <size_t>n * r.slot_size, r.slot_size)
        if got < 0:
            if errno == EINTR:
                continue
            if errno != EAGAIN:
                r.gone = True       # EBADFD once the interface is deleted
            break
        lengths[n] = <uint32_t>got
        size[0] += <size_t>got
        n += 1
    return n


cdef void *reader_main(void *arg) noexcept nogil:
    cdef TunReader *r = <TunReader *>arg
    cdef pollfd fds[2]
    cdef uint32_t w, n
    cdef size_t size
    cdef bint may_preempt = True, small
    pthread_setname_np(pthread_self(), b"wgc-tun-reader")
    fds[0].fd = r.tun_fd
    fds[0].events = POLLIN
    fds[1].fd = r.stop_fd
    fds[1].events = POLLIN
    while True:
        pthread_mutex_lock(&r.mutex)
        while r.filled == READER_BUFFERS and not r.stopping:
            pthread_cond_wait(&r.space, &r.mutex)
        w = r.write_index
        pthread_mutex_unlock(&r.mutex)
        n = 0
        size = 0
        while n == 0 and not r.gone:
            if poll(fds, 2, -1) < 0 and errno != EINTR:
                r.gone = True
                break
            if fds[1].revents:
                return NULL
            n = fill(r, r.slots + <size_t>w * r.batch * r.slot_size, r.lengths + w * r.batch, &size)
        small = size < <size_t>n * READER_BULK_READ
        if n and small != may_preempt:
            may_preempt = small
            thread_may_preempt(may_preempt)
        pthread_mutex_lock(&r.mutex)
        if r.stopping:
            pthread_mutex_unlock(&r.mutex)
            return NULL
        r.counts[w] = n
        r.filled += 1
        r.write_index = (w + 1) % READER_BUFFERS
        pthread_mutex_unlock(&r.mutex)
        signal_fd(r.ready_fd)
        if r.gone:
            return NULL


cdef int reader_start(TunReader *r, int tun_fd, uint32_t batch, size_t slot_size) noexcept nogil:
    memset(r, 0, sizeof(TunReader))
    r.tun_fd = tun_fd
    r.batch = batch
    r.slot_size = slot_size
    r.ready_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
    r.stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
    # Only the pages packets touch become resident.
    r.slots = <uint8_t *>malloc(<size_t>READER_BUFFERS * batch * slot_size)
    r.lengths = <uint32_t *>malloc(READER_BUFFERS * batch * sizeof(uint32_t))
    pthread_mutex_init(&r.mutex, NULL)
    pthread_cond_init(&r.space, NULL)
    r.initialized = True
    if r.ready_fd < 0 or r.stop_fd < 0 or r.slots == NULL or r.lengths == NULL \
            or pthread_create(&r.thread, NULL, reader_main, r) != 0:
        reader_stop(r)
        return -1
    r.started = True
    return 0


cdef int reader_take(TunReader *r, uint8_t **slots, uint32_t **lengths) noexcept nogil:
    cdef int count = -1
    pthread_mutex_lock(&r.mutex)
    if r.filled:
        count = r.counts[r.read_index]
        slots[0] = r.slots + <size_t>r.read_index * r.batch * r.slot_size
        lengths[0] = r.lengths + r.read_index * r.batch
    pthread_mutex_unlock(&r.mutex)
    return count


cdef void reader_release(TunReader *r) noexcept nogil:
    pthread_mutex_lock(&r.mutex)
    r.filled -= 1
    r.read_index = (r.read_index + 1) % READER_BUFFERS
    pthread_cond_signal(&r.space)
    pthread_mutex_unlock(&r.mutex)


cdef bint reader_gone(TunReader *r) noexcept nogil:
    cdef bint gone
    pthread_mutex_lock(&r.mutex)
    gone = r.gone and r.filled == 0
    pthread_mutex_unlock(&r.mutex)
    return gone


cdef void reader_stop(TunReader *r) noexcept nogil:
    if not r.initialized:
        return
    if r.started:
        pthread_mutex_lock(&r.mutex)
        r.stopping = True
        pthread_cond_signal(&r.space)
        pthread_mutex_unlock(&r.mutex)
        signal_fd(r.stop_fd)
        pthread_join(r.thread, NULL)
        r.started = False
    if r.ready_fd >= 0:
        close(r.ready_fd)
    if r.stop_fd >= 0:
        close(r.stop_fd)
    r.ready_fd = r.stop_fd = -1
    free(r.slots)
    free(r.lengths)
    r.slots = NULL
    r.lengths = NULL
    pthread_mutex_destroy(&r.mutex)
    pthread_cond_destroy(&r.space)
    r.initialized = False
