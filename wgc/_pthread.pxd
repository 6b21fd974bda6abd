# The POSIX threads calls wgc's own threads use, declared once: Core's mutex
# (wgc/_core.pxd), the TUN reader (wgc/_reader.pxd) and the crypto helpers
# (wgc/_workers.pxd).  Every call here is made without the GIL.
cdef extern from "<sched.h>" nogil:
    struct sched_param:
        int sched_priority
    int SCHED_OTHER
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


# Whether the calling thread, woken, may preempt the thread running on its
# CPU: SCHED_OTHER when it may, SCHED_BATCH when not (it then runs at once
# on an idle CPU, on a busy one when that CPU's thread sleeps or its slice
# ends).  For the threads that work beside the data-plane thread (the TUN
# reader, the crypto helpers), whose preempting it on its own CPU only to
# hand it work trades one for the other there and costs two context
# switches.  Priority 0 under either policy needs no privilege, both ways;
# where the change is refused the thread keeps its policy.
cdef inline void thread_may_preempt(bint may) noexcept nogil:
    cdef sched_param param
    param.sched_priority = 0
    pthread_setschedparam(pthread_self(), SCHED_OTHER if may else SCHED_BATCH, &param)
