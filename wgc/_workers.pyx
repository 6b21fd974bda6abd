# cython: language_level=3
"""The crypto workers (see _workers.pxd).

A batch is posted under the pool's mutex: the jobs, their count, the claim
counter back to zero and a new generation; the helpers wake on `work`.
Every thread, the caller first, then claims POOL_CHUNK jobs at a time with
an atomic add until none are left.  A helper counts itself `busy` (under the
mutex) before it claims anything, and the caller waits for `busy` to drop
to zero before it returns, and before it posts the next batch: so no helper
ever claims from a batch other than the one it read, and a helper that
wakes after the batch is done finds nothing left to claim.
"""
from libc.errno cimport errno
from libc.stdint cimport uint8_t, uint32_t
from libc.string cimport memset

from wgc._crypto cimport aead_seal, aead_open, wipe
from wgc._pthread cimport (pthread_create, pthread_join, pthread_self, pthread_setname_np, thread_may_preempt,
                           pthread_mutex_init, pthread_mutex_destroy, pthread_mutex_lock, pthread_mutex_unlock,
                           pthread_cond_init, pthread_cond_destroy, pthread_cond_wait, pthread_cond_signal,
                           pthread_cond_broadcast)

cdef extern from *:
    """
    static inline uint32_t wgc_claim(uint32_t *next, uint32_t n) {
        return __atomic_fetch_add(next, n, __ATOMIC_RELAXED);
    }
    """
    uint32_t wgc_claim(uint32_t *next, uint32_t n) noexcept nogil


cdef void aead_job_run(AeadJob *job) noexcept nogil:
    if job.op == AEAD_SEAL:
        job.result = aead_seal(job.data, job.data, job.length, NULL, 0, job.counter, job.key)
    else:
        job.result = aead_open(job.data, job.data, job.length, NULL, 0, job.counter, job.key)
    wipe(job.key, sizeof(job.key))


cdef void run_claimed(WorkerPool *p, AeadJob *jobs, uint32_t count) noexcept nogil:
    """Claims and runs chunks of jobs until none are left."""
    cdef uint32_t first, i, end
    while True:
        first = wgc_claim(&p.next, POOL_CHUNK)
        if first >= count:
            return
        end = min(first + POOL_CHUNK, count)
        for i in range(first, end):
            aead_job_run(&jobs[i])


cdef void *helper_main(void *arg) noexcept nogil:
    cdef WorkerPool *p = <WorkerPool *>arg
    cdef uint64_t seen = 0
    cdef AeadJob *jobs
    cdef uint32_t count
    pthread_setname_np(pthread_self(), b"wgc-crypto")      # as top -H and perf show it
    # A helper that preempts the data-plane thread on its CPU takes jobs the
    # caller would have run itself.  wgc<->wgc TCP at 2 workers, helpers
    # set SCHED_BATCH with chrt against helpers that may preempt (4
    # alternating rounds): +12 % throughput, -5 % CPU per GB.
    thread_may_preempt(False)
    pthread_mutex_lock(&p.mutex)
    while True:
        while p.generation == seen and not p.stopping:
            pthread_cond_wait(&p.work, &p.mutex)
        if p.stopping:
            pthread_mutex_unlock(&p.mutex)
            return NULL
        seen = p.generation
        jobs, count = p.jobs, p.count
        p.busy += 1
        pthread_mutex_unlock(&p.mutex)
        run_claimed(p, jobs, count)
        pthread_mutex_lock(&p.mutex)
        p.busy -= 1
        if p.busy == 0:
            pthread_cond_signal(&p.idle)


cdef int pool_start(WorkerPool *p, uint32_t threads) noexcept nogil:
    cdef int err
    memset(p, 0, sizeof(WorkerPool))
    pthread_mutex_init(&p.mutex, NULL)
    pthread_cond_init(&p.work, NULL)
    pthread_cond_init(&p.idle, NULL)
    p.initialized = True
    threads = max(1, min(threads, <uint32_t>POOL_MAX_THREADS))
    while p.helpers < threads - 1:
        err = pthread_create(&p.threads[p.helpers], NULL, helper_main, p)
        if err != 0:
            pool_stop(p)
            errno = err
            return -1
        p.helpers += 1
    return 0


cdef void pool_run(WorkerPool *p, AeadJob *jobs, uint32_t count) noexcept nogil:
    cdef uint32_t i
    cdef size_t total = 0
    if p.helpers:
        for i in range(count):
            total += jobs[i].length
    if total < POOL_MIN_BYTES:
        for i in range(count):
            aead_job_run(&jobs[i])
        return
    pthread_mutex_lock(&p.mutex)
    while p.busy:                  # a late helper still in the last batch
        pthread_cond_wait(&p.idle, &p.mutex)
    p.jobs, p.count, p.next = jobs, count, 0
    p.generation += 1
    pthread_cond_broadcast(&p.work)
    pthread_mutex_unlock(&p.mutex)
    run_claimed(p, jobs, count)
    pthread_mutex_lock(&p.mutex)
    while p.busy:
        pthread_cond_wait(&p.idle, &p.mutex)
    pthread_mutex_unlock(&p.mutex)


cdef void pool_stop(WorkerPool *p) noexcept nogil:
    cdef uint32_t i
    if not p.initialized:
        return
    pthread_mutex_lock(&p.mutex)
    p.stopping = True
    pthread_cond_broadcast(&p.work)
    pthread_mutex_unlock(&p.mutex)
    for i in range(p.helpers):
        pthread_join(p.threads[i], NULL)
    p.helpers = 0
    pthread_cond_destroy(&p.work)
    pthread_cond_destroy(&p.idle)
    pthread_mutex_destroy(&p.mutex)
    p.initialized = False
