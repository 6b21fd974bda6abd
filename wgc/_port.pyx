# cython: language_level=3
"""Packet ports: the TUN, and an in-memory one for tests (see _port.pxd)."""
from libc.errno cimport errno
from libc.stdint cimport uint8_t, uint32_t, int32_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy
from posix.unistd cimport write as c_write

from wgc._offload cimport (VnetHdr, VNET_HDR_LEN, vnet_hdr_store, gro_init, gro_free, gro_add, gro_full,
                           gro_finish, gro_reset)
from wgc._reader cimport READER_OFFLOAD_BATCH, reader_start, reader_take, reader_release, reader_gone, reader_stop

cdef extern from "<sys/uio.h>" nogil:
    ssize_t writev(int fd, const iovec *iov, int iovcnt)


cdef class PacketPort:
    """The writing side every port shares; subclasses read and emit."""

    def __cinit__(self, *args, bint vnet_hdr=False, **kwargs):
        self.vnet_hdr = vnet_hdr
        self.ready_fd = -1
        # One header iovec, then at most one per coalesced packet.
        self.iov = <iovec *>malloc((PORT_WRITE_BATCH + 1) * sizeof(iovec))
        if self.iov == NULL or gro_init(&self.gro, PORT_WRITE_BATCH) < 0:
            raise MemoryError()

    def __dealloc__(self):
        gro_free(&self.gro)
        free(self.iov)

    cdef int start(self, uint32_t batch, size_t slot_size) except -1:
        return 0

    cdef void stop(self) noexcept:
        pass

    cdef int take(self, uint8_t **slots, uint32_t **lengths) noexcept nogil:
        return -1

    cdef void release(self) noexcept nogil:
        pass

    cdef bint gone(self) noexcept nogil:
        return False

    cdef uint32_t write(self, uint8_t *packet, uint32_t length) noexcept nogil:
        """Without vnet_hdr, the packet goes at once; with it, it waits in the
        coalescer for flush (and so must stay valid until then).  Returns the
        packets refused: this one, or those a flush to make room refused."""
        cdef uint32_t refused = 0
        if not self.vnet_hdr:
            self.iov[0].iov_base = packet
            self.iov[0].iov_len = length
            return not self.emit(self.iov, 1)
        if gro_full(&self.gro):
            refused = self.flush()
        gro_add(&self.gro, packet, length)
        return refused

    cdef uint32_t flush(self) noexcept nogil:
        """Emits the coalesced packets, one per super-packet, behind its
        header; returns how many of the packets written the port refused."""
        cdef uint8_t header[VNET_HDR_LEN]
        cdef VnetHdr h
        cdef uint32_t i, n, skip, refused = 0
        cdef int32_t m
        for i in range(self.gro.item_count):
            gro_finish(&self.gro, i, &h)
            vnet_hdr_store(&h, header)
            self.iov[0].iov_base = header
            self.iov[0].iov_len = VNET_HDR_LEN
            m = self.gro.items[i].first
            self.iov[1].iov_base = self.gro.packets[m].data
            self.iov[1].iov_len = self.gro.packets[m].length
            n = 2
            skip = self.gro.items[i].ip_len + self.gro.items[i].l4_len
            m = self.gro.packets[m].next
            while m >= 0:
                self.iov[n].iov_base = self.gro.packets[m].data + skip
                self.iov[n].iov_len = self.gro.packets[m].length - skip
                n += 1
                m = self.gro.packets[m].next
            if not self.emit(self.iov, n):
                refused += n - 1       # every member of the super-packet
        gro_reset(&self.gro)
        return refused

    cdef bint emit(self, const iovec *iov, uint32_t count) noexcept nogil:
        return False


cdef class TunPort(PacketPort):
    """The TUN descriptor (non-blocking), read ahead by a TunReader thread."""

    def __cinit__(self, int fd, *, bint vnet_hdr=False):
        self.fd = fd

    def __dealloc__(self):
        reader_stop(&self.reader)

    cdef int start(self, uint32_t batch, size_t slot_size) except -1:
        if self.vnet_hdr:
            batch = min(batch, READER_OFFLOAD_BATCH)
        if reader_start(&self.reader, self.fd, batch, slot_size) < 0:
            raise OSError(errno, "cannot start the TUN reader thread")
        self.ready_fd = self.reader.ready_fd
        return 0

    cdef void stop(self) noexcept:
        reader_stop(&self.reader)
        self.ready_fd = -1

    cdef int take(self, uint8_t **slots, uint32_t **lengths) noexcept nogil:
        return reader_take(&self.reader, slots, lengths)

    cdef void release(self) noexcept nogil:
        reader_release(&self.reader)

    cdef bint gone(self) noexcept nogil:
        return reader_gone(&self.reader)

    cdef bint emit(self, const iovec *iov, uint32_t count) noexcept nogil:
        if count == 1:
            return c_write(self.fd, iov[0].iov_base, iov[0].iov_len) >= 0
        return writev(self.fd, iov, count) >= 0


cdef class MemoryPort(PacketPort):
    """Keeps what the data plane writes, for take_written(); reads nothing
    (tests hand packets to DataPlane.inject_tun)."""

    def __cinit__(self, *, bint vnet_hdr=False):
        self.written = <Written *>calloc(MEMORY_PORT_MAX, sizeof(Written))
        if self.written == NULL:
            raise MemoryError()

    def __dealloc__(self):
        cdef uint32_t i
        for i in range(self.written_count):
            free(self.written[i].data)
        free(self.written)

    cdef bint emit(self, const iovec *iov, uint32_t count) noexcept nogil:
        """Refuses the packet once MEMORY_PORT_MAX wait to be taken."""
        cdef uint32_t i, length = 0
        cdef uint8_t *copy
        if self.written_count == MEMORY_PORT_MAX:
            return False
        for i in range(count):
            length += iov[i].iov_len
        copy = <uint8_t *>malloc(length + 1)
        if copy == NULL:
            return False
        self.written[self.written_count].data = copy
        self.written[self.written_count].length = length
        for i in range(count):
            memcpy(copy, iov[i].iov_base, iov[i].iov_len)
            copy += iov[i].iov_len
        self.written_count += 1
        return True

    def take_written(self):
        """The packets written so far (each behind its virtio_net_hdr with
        vnet_hdr), oldest first; they are forgotten here.  Call with the owning
        Core's lock held or its data plane idle (DataPlane.take_captured does)."""
        cdef uint32_t i
        result = [self.written[i].data[:self.written[i].length] for i in range(self.written_count)]
        for i in range(self.written_count):
            free(self.written[i].data)
        self.written_count = 0
        return result
