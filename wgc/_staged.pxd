# A peer's staged packets: what waits for a session, oldest first, as the
# kernel's per-peer queue.  A full queue drops its oldest packet; `total`,
# shared by all the queues of a device, bounds memory whatever the number of
# peers.  No lock here: Core.mutex guards every queue (see _core.pxd).
from libc.stdint cimport uint8_t, uint32_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from wgc._constants cimport MAX_STAGED_PACKETS

cdef enum:
    MAX_STAGED_TOTAL = 4096        # staged packets of all peers together

cdef struct Staged:
    Staged *next
    uint32_t length
    # the packet follows the struct

cdef struct StagedQueue:
    Staged *head
    Staged *tail
    uint32_t count


cdef inline Staged *staged_pop(StagedQueue *q, uint32_t *total) noexcept nogil:
    """The oldest packet (its bytes at s + 1), or NULL; the caller frees it."""
    cdef Staged *s = q.head
    if s == NULL:
        return NULL
    q.head = s.next
    if q.head == NULL:
        q.tail = NULL
    q.count -= 1
    total[0] -= 1
    return s

cdef inline bint staged_push(StagedQueue *q, uint32_t *total, const uint8_t *packet,
                             uint32_t length) noexcept nogil:
    """Queues a copy of the packet (length 0: a keepalive); dropped without
    memory.  True when a packet was dropped for it: the oldest (the queue
    was full) or this one (all queues together were full, or no memory)."""
    cdef Staged *s
    cdef bint dropped = False
    if q.count >= MAX_STAGED_PACKETS:
        free(staged_pop(q, total))
        dropped = True
    elif total[0] >= MAX_STAGED_TOTAL:
        return True
    s = <Staged *>malloc(sizeof(Staged) + length)
    if s == NULL:
        return True
    s.next = NULL
    s.length = length
    if length:
        memcpy(s + 1, packet, length)
    if q.tail != NULL:
        q.tail.next = s
    else:
        q.head = s
    q.tail = s
    q.count += 1
    total[0] += 1
    return dropped

cdef inline void staged_clear(StagedQueue *q, uint32_t *total) noexcept nogil:
    while q.head != NULL:
        free(staged_pop(q, total))
