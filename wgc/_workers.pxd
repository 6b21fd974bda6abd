# The crypto workers: the ChaCha20-Poly1305 work of one batch shared between
# the data-plane thread and a pool of helper threads.
#
# Everything else about a packet stays on the data-plane thread, in order:
# routing, nonces, the replay window, timers and I/O.  Only the sealing and
# opening, which touch nothing but the job's own bytes and its key copy, run
# in parallel.  So the order of packets (per peer and overall) is the order
# the data-plane thread put the jobs in, whatever thread ran each.
#
# Who calls whom:
#   - wgc._core fills an array of AeadJobs (through wgc._session's
#     transport_seal_job and transport_open_job) and calls pool_run, on
#     whichever thread holds Core.mutex: the data-plane thread for its
#     batches, the control plane's when a command of its sends (staged
#     packets, keepalives); pool_run returns when every job has run;
#   - pool_start and pool_stop are called under Core.mutex too (the control
#     plane's DataPlane.set_workers, and Core's own set-up and tear-down);
#   - the pool's threads take chunks of the running batch and nothing else:
#     they hold no Core lock and never touch Core.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from wgc._constants cimport KEY_SIZE
from wgc._pthread cimport pthread_t, pthread_mutex_t, pthread_cond_t

cdef enum:
    AEAD_SEAL = 0
    AEAD_OPEN = 1
    # Jobs a thread claims at a time: about 6 µs of work for full-size
    # packets, little against the cost of a claim, short enough that a
    # helper that wakes late leaves the batch to the others.
    POOL_CHUNK = 4
    # Threads in a pool at most, the data-plane thread included.
    POOL_MAX_THREADS = 64
    # A batch with fewer bytes to seal or open than this (16 full packets, about
    # 25 µs of work) runs on the caller alone: waking a helper costs a few
    # µs on each side, more than it saves on a batch of ACKs.
    POOL_MIN_BYTES = 16 * 1420

# One sealing or opening, in place.  The key is a copy, wiped once the job
# has run, so that a keypair the data-plane thread frees later in the same
# batch (a confirmation drops the previous one) cannot pull it away.
cdef struct AeadJob:
    uint8_t key[KEY_SIZE]
    uint64_t counter
    uint8_t *data          # seal: length bytes of plaintext, sealed to length + TAG_SIZE;
                           # open: length bytes of ciphertext (tag included), opened to length - TAG_SIZE
    uint32_t length
    uint8_t op             # AEAD_SEAL or AEAD_OPEN
    int result             # after running: 0, or -1 when an opening failed authentication

cdef struct WorkerPool:
    uint32_t helpers               # threads started beside the caller
    pthread_t threads[POOL_MAX_THREADS - 1]
    pthread_mutex_t mutex
    pthread_cond_t work            # a batch is posted, or stopping
    pthread_cond_t idle            # the last busy helper left the batch
    uint64_t generation            # batches posted so far
    AeadJob *jobs                  # the running batch (under mutex)
    uint32_t count
    uint32_t next                  # the next unclaimed job (atomic)
    uint32_t busy                  # helpers inside the batch (under mutex)
    bint stopping
    bint initialized

# Starts threads - 1 helpers (threads = 1: the caller alone); 0, or -1 with
# errno set when a thread could not be started (the pool is then stopped).
cdef int pool_start(WorkerPool *p, uint32_t threads) noexcept nogil
# Runs jobs[0 .. count-1] on the caller and the helpers; returns when all have run.
cdef void pool_run(WorkerPool *p, AeadJob *jobs, uint32_t count) noexcept nogil
# Stops and joins the helpers (idempotent; a pool never started is fine).
cdef void pool_stop(WorkerPool *p) noexcept nogil
# Runs one job on the calling thread.
cdef void aead_job_run(AeadJob *job) noexcept nogil
