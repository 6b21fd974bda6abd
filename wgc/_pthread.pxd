# The POSIX threads calls wgc's own threads use, declared once: Core's mutex
# (wgc/_core.pxd), the TUN reader (wgc/_reader.pxd) and the crypto helpers
# (wgc/_workers.pxd).  Every call here is made without the GIL.
cdef extern from "<sched.h>" nogil:
    struct sched_param:
        int sched_priority
    int SCHED_BATCH

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_t:
        pass
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    int pthread_create(pthread_t *thread, void *attr, void *(*start)(void *) noexcept nogil, void *arg)
    int pthread_join(pthread_t thread, void **result)
    pthread_t pthread_self()
    int pthread_setname_np(pthread_t thread, const char *name)
    int pthread_setschedparam(pthread_t thread, int policy, const sched_param *param)
    int pthread_mutex_init(pthread_mutex_t *m, void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)
    int pthread_cond_init(pthread_cond_t *c, void *attr)
    int pthread_cond_destroy(pthread_cond_t *c)
    int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
    int pthread_cond_signal(pthread_cond_t *c)
    int pthread_cond_broadcast(pthread_cond_t *c)


# Names the calling thread (as top -H, perf and /proc show it; at most 15
# bytes) and makes it SCHED_BATCH, for the threads that work beside the
# data-plane thread: the TUN reader and the crypto helpers.  A SCHED_BATCH
# thread that wakes up does not preempt the thread running on its CPU; it
# runs on an idle CPU at once, on a busy one when that CPU's thread sleeps
# or its slice ends.  Preempting the data-plane thread to read ahead for it,
# or to share its batch, only trades one for the other on that CPU and
# costs two context switches.  wgc<->wgc TCP on 2 cores (iperf3 beside
# both ends), this against the build before it, alternating: +10 %
# throughput and -7 % CPU per GB (medians of 6 rounds), and +8 % and -6 %
# at 2 crypto workers (4 rounds).
# Priority 0 needs no privilege; where the policy is refused the thread
# simply stays SCHED_OTHER.
cdef inline void thread_beside_data_plane(const char *name) noexcept nogil:
    cdef sched_param param
    param.sched_priority = 0
    pthread_setname_np(pthread_self(), name)
    pthread_setschedparam(pthread_self(), SCHED_BATCH, &param)
