# The inner side of the data plane: where plaintext packets come from and
# where decrypted ones go.  Core holds one PacketPort and sees nothing else of
# the TUN; an implementation supplies the reading side (take, release, gone,
# ready_fd) and emit, and inherits the writing side (write, flush), which
# coalesces (GRO) for a port with vnet_hdr and writes at once otherwise.
#
# Implementations: TunPort (the TUN descriptor, read ahead by a TunReader
# thread), MemoryPort (tests: records what is written; packets come in through
# DataPlane.inject_tun).  A userspace network stack in the same process is a third:
# it hands its outgoing packets over in batches and signals ready_fd (an
# eventfd), and takes decrypted packets in emit.
#
# Who calls whom, on which thread, under which lock:
#   - start and stop: the data-plane thread (Loop.run, wgc/_loop.pxd), around the loop;
#   - take, release, gone, write, flush, emit: the data-plane thread (or a
#     Python thread in Core's sans-I/O entry points), always holding
#     Core.mutex and without the GIL; they must not block.  Packets passed to
#     write stay valid only until flush, which Core calls before reusing them.
#   - an implementation's own thread (the TUN reader, a network stack) never
#     calls into Core: it fills batches and makes ready_fd readable; the
#     data plane then takes them, under Core.mutex.
from libc.stdint cimport uint8_t, uint32_t
from wgc._offload cimport Gro
from wgc._reader cimport TunReader

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef enum:
    PORT_WRITE_BATCH = 512         # decrypted packets coalesced before a flush
    MEMORY_PORT_MAX = 4096         # packets a MemoryPort keeps until taken

cdef class PacketPort:
    cdef readonly bint vnet_hdr    # packets carry a virtio_net_hdr (offloads)
    cdef readonly int ready_fd     # readable when a batch waits; -1: never
    cdef Gro gro                   # packets written since the last flush (vnet_hdr)
    cdef iovec *iov                # one header, then the members of a super-packet

    cdef int start(self, uint32_t batch, size_t slot_size) except -1
    cdef void stop(self) noexcept
    # The oldest batch read: its packet count, packet i at slots + i * slot_size
    # of lengths[i]; -1 when none waits.  Hand it back with release().
    cdef int take(self, uint8_t **slots, uint32_t **lengths) noexcept nogil
    cdef void release(self) noexcept nogil
    cdef bint gone(self) noexcept nogil          # no more packets will come
    # write and flush return how many packets the port refused (emit said no).
    cdef uint32_t write(self, uint8_t *packet, uint32_t length) noexcept nogil
    cdef uint32_t flush(self) noexcept nogil
    # One packet out, gathered from count pieces (with vnet_hdr, the first is
    # its virtio_net_hdr); False if the port could not take it.
    cdef bint emit(self, const iovec *iov, uint32_t count) noexcept nogil

cdef class TunPort(PacketPort):
    cdef int fd
    cdef TunReader reader

cdef struct Written:               # one emitted packet (MemoryPort)
    uint8_t *data
    uint32_t length

cdef class MemoryPort(PacketPort):
    cdef Written *written          # oldest first, at most MEMORY_PORT_MAX
    cdef uint32_t written_count
