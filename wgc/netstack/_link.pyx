# cython: language_level=3
"""The network stack as the data plane's packet port (see _link.pxd)."""
from libc.errno cimport errno
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from posix.unistd cimport read, write, close

from wgc._port cimport iovec
from wgc._pthread cimport pthread_mutex_init, pthread_mutex_destroy, pthread_mutex_lock, pthread_mutex_unlock
from wgc.netstack._netif cimport Sink

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_NONBLOCK
    int EFD_CLOEXEC


cdef inline void signal_fd(int fd) noexcept nogil:
    cdef uint64_t one = 1
    write(fd, &one, 8)


cdef class StackPort(PacketPort):
    """Made by the stack's engine (wgc/netstack/_engine), installed with
    DataPlane.set_port before the data plane runs."""

    def __cinit__(self):
        cdef int i
        self.ready_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        self.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.ready_fd < 0 or self.wake_fd < 0:
            raise OSError(errno, "eventfd")
        pthread_mutex_init(&self.mutex, NULL)
        for i in range(2):
            self.inbox[i].data = <uint8_t *>malloc(LINK_INBOX_BYTES)
            if self.inbox[i].data == NULL:
                raise MemoryError()

    def __dealloc__(self):
        cdef int i
        for i in range(LINK_OUTBOXES):
            free(self.out[i].slots)
            free(self.out[i].lengths)
        for i in range(2):
            free(self.inbox[i].data)
        if self.ready_fd >= 0:
            close(self.ready_fd)
        if self.wake_fd >= 0:
            close(self.wake_fd)
        pthread_mutex_destroy(&self.mutex)

    cdef int start(self, uint32_t batch, size_t slot_size) except -1:
        """The data plane's batch shape: slot i of a batch at slots + i * slot_size."""
        cdef int i
        pthread_mutex_lock(&self.mutex)
        try:
            for i in range(LINK_OUTBOXES):
                if self.out[i].slots == NULL:
                    self.out[i].slots = <uint8_t *>malloc(<size_t>batch * slot_size)
                    self.out[i].lengths = <uint32_t *>malloc(batch * sizeof(uint32_t))
                    if self.out[i].slots == NULL or self.out[i].lengths == NULL:
                        raise MemoryError()
                    self.out[i].capacity = batch
                    self.out[i].slot_size = <uint32_t>slot_size
                    self.out[i].count = 0
        finally:
            pthread_mutex_unlock(&self.mutex)
        signal_fd(self.wake_fd)    # the stack may write now
        return 0

    cdef int take(self, uint8_t **slots, uint32_t **lengths) noexcept nogil:
        cdef int count = -1
        pthread_mutex_lock(&self.mutex)
        if self.out_published:
            slots[0] = self.out[self.out_take].slots
            lengths[0] = self.out[self.out_take].lengths
            count = self.out[self.out_take].count
        pthread_mutex_unlock(&self.mutex)
        return count

    cdef void release(self) noexcept nogil:
        pthread_mutex_lock(&self.mutex)
        self.out[self.out_take].count = 0
        self.out_take = (self.out_take + 1) % LINK_OUTBOXES
        self.out_published -= 1
        pthread_mutex_unlock(&self.mutex)
        signal_fd(self.wake_fd)

    cdef bint gone(self) noexcept nogil:
        return self.closed

    cdef bint emit(self, const iovec *iov, uint32_t count) noexcept nogil:
        cdef uint32_t i, length = 0
        cdef Inbox *box
        cdef uint8_t *at
        cdef bint was_empty
        for i in range(count):
            length += iov[i].iov_len
        pthread_mutex_lock(&self.mutex)
        box = &self.inbox[self.inbox_fill]
        if box.used + 4 + length > LINK_INBOX_BYTES:
            self.inbox_dropped += 1
            pthread_mutex_unlock(&self.mutex)
            return False
        was_empty = box.used == 0
        at = box.data + box.used
        memcpy(at, &length, 4)
        at += 4
        for i in range(count):
            memcpy(at, iov[i].iov_base, iov[i].iov_len)
            at += iov[i].iov_len
        box.used += 4 + length
        pthread_mutex_unlock(&self.mutex)
        if was_empty:
            signal_fd(self.wake_fd)
        return True

    def close(self):
        """No more packets: the data plane's loop ends at its next look."""
        self.closed = True
        signal_fd(self.ready_fd)


cdef Sink *link_sink(StackPort link) noexcept nogil:
    cdef Sink *sink = NULL
    pthread_mutex_lock(&link.mutex)
    if link.out_published < LINK_OUTBOXES and link.out[link.out_fill].slots != NULL:
        sink = &link.out[link.out_fill]
    pthread_mutex_unlock(&link.mutex)
    return sink

cdef void link_publish(StackPort link) noexcept nogil:
    cdef bint published = False
    pthread_mutex_lock(&link.mutex)
    if link.out_published < LINK_OUTBOXES and link.out[link.out_fill].count:
        link.out_published += 1
        link.out_fill = (link.out_fill + 1) % LINK_OUTBOXES
        published = True
    pthread_mutex_unlock(&link.mutex)
    if published:
        signal_fd(link.ready_fd)

cdef Inbox *link_inbox(StackPort link) noexcept nogil:
    cdef Inbox *box
    pthread_mutex_lock(&link.mutex)
    box = &link.inbox[link.inbox_fill]
    link.inbox_fill ^= 1
    link.inbox[link.inbox_fill].used = 0
    pthread_mutex_unlock(&link.mutex)
    return box
