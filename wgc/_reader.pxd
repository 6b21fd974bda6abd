# A thread that reads the TUN ahead of the data plane.
#
# Reading a TUN is one system call per packet (or per super-packet); done on
# the data-plane thread, it stands in line with the encryption.  The reader
# fills one batch buffer while the data plane seals the other, and wakes it
# through an eventfd.  Batches are handed over in the order they were read,
# so packet order is kept; when both buffers are full the reader waits, and
# the kernel's TUN queue absorbs (or drops) what comes meanwhile.
from libc.stdint cimport uint8_t, uint32_t
from wgc._pthread cimport pthread_t, pthread_mutex_t, pthread_cond_t

cdef enum:
    READER_BUFFERS = 2
    # Super-packets per batch with offloads.  Only the pages packets touch
    # become resident, and a slot keeps the largest packet it ever held: with
    # 64 KiB super-packets, each slot a batch may use can add 64 KiB to the
    # daemon's RSS for good, however rarely batches fill that far.
    READER_OFFLOAD_BATCH = 8
    # The reader's scheduling (wgc/_pthread.pxd, thread_may_preempt): after
    # a batch of reads this long on average, super-packets of TSO or USO, it
    # may not preempt the thread running on its CPU; after one of shorter
    # reads it may.  Each super-packet gives the data-plane thread tens of
    # µs of sealing; preempting it on its CPU only to read the next one
    # ahead costs two context switches and gains nothing.  Small packets
    # keep the prompt wake-ups: a flood of them (one read each) overflows
    # the kernel's TUN queue in well under a millisecond when the reader
    # waits, and a lone interactive packet should not wait for a slice to
    # end.  `just bench-against 434ea59 8` (the reader always may there, and
    # the helpers too): TCP 1.06x, CPU per GB 0.94x, UDP -b 0 -l 1300
    # received 0.99x.  A reader that never may (set with chrt on that build,
    # 5 alternating rounds) lost 22 % of the UDP received.
    READER_BULK_READ = 16384

cdef struct TunReader:
    int tun_fd
    int ready_fd                   # readable when a batch waits (eventfd)
    int stop_fd                    # written to stop the thread (eventfd)
    uint32_t batch                 # packets per batch
    size_t slot_size
    uint8_t *slots                 # READER_BUFFERS * batch slots
    uint32_t *lengths              # READER_BUFFERS * batch
    uint32_t counts[READER_BUFFERS]
    uint32_t filled, write_index, read_index
    bint stopping
    bint gone                      # the TUN failed (deleted): no more batches
    bint initialized               # mutex, descriptors and buffers exist
    bint started                   # the thread runs
    pthread_mutex_t mutex
    pthread_cond_t space
    pthread_t thread

# Starts the thread on tun_fd (non-blocking); -1 with errno set on failure.
cdef int reader_start(TunReader *r, int tun_fd, uint32_t batch, size_t slot_size) noexcept nogil
# The oldest full batch: its packet count, with slots[i * slot_size] holding
# packet i of lengths[i]; -1 when none waits.  Give it back with reader_release.
cdef int reader_take(TunReader *r, uint8_t **slots, uint32_t **lengths) noexcept nogil
cdef void reader_release(TunReader *r) noexcept nogil
cdef bint reader_gone(TunReader *r) noexcept nogil
# Stops and joins the thread and frees what reader_start made (idempotent).
cdef void reader_stop(TunReader *r) noexcept nogil
