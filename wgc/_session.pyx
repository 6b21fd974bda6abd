# cython: language_level=3
"""Keypairs, the receiver-index table, rotation and transport seal/open
(see _session.pxd for who calls what, and under which lock)."""
from libc.errno cimport EEXIST, ENOMEM
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from wgc._bytes cimport load_le32, store_le32, load_le64, store_le64, load_be16
from wgc._crypto cimport wipe
from wgc._replay cimport replay_reset, replay_accept
from wgc._workers cimport AEAD_SEAL, AEAD_OPEN
from wgc._constants cimport (MESSAGE_TRANSPORT, TRANSPORT_HEADER_SIZE, TRANSPORT_MIN_SIZE, TAG_SIZE, KEY_SIZE,
                             REKEY_AFTER_MESSAGES, REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME,
                             REKEY_AFTER_TIME, KEEPALIVE_TIMEOUT, REKEY_TIMEOUT)

cdef enum:
    INDEX_INITIAL_SIZE = 64


# ---- the receiver-index table -------------------------------------------------

cdef inline uint32_t index_hash(uint32_t index) noexcept nogil:
    return index * 2654435761u

cdef int index_init(IndexTable *t) noexcept nogil:
    t.slots = <IndexEntry *>calloc(INDEX_INITIAL_SIZE, sizeof(IndexEntry))
    t.mask = INDEX_INITIAL_SIZE - 1
    t.count = 0
    return 0 if t.slots != NULL else -1

cdef void index_free(IndexTable *t) noexcept nogil:
    free(t.slots)
    t.slots = NULL

cdef const IndexEntry *index_entry(const IndexTable *t, uint32_t index) noexcept nogil:
    cdef uint32_t i = index_hash(index) & t.mask
    while t.slots[i].used:
        if t.slots[i].index == index:
            return &t.slots[i]
        i = (i + 1) & t.mask
    return NULL

cdef Keypair *index_find(const IndexTable *t, uint32_t index) noexcept nogil:
    cdef const IndexEntry *e = index_entry(t, index)
    return NULL if e == NULL else e.keypair

cdef int index_grow(IndexTable *t) noexcept nogil:
    cdef IndexEntry *old = t.slots
    cdef uint32_t old_size = t.mask + 1, i, j
    cdef uint32_t size = old_size * 2
    cdef IndexEntry *slots = <IndexEntry *>calloc(size, sizeof(IndexEntry))
    if slots == NULL:
        return -1
    t.slots = slots
    t.mask = size - 1
    for i in range(old_size):
        if old[i].used:
            j = index_hash(old[i].index) & t.mask
            while slots[j].used:
                j = (j + 1) & t.mask
            slots[j] = old[i]
    free(old)
    return 0

cdef int index_insert(IndexTable *t, uint32_t index, uint32_t slot, Keypair *keypair) noexcept nogil:
    if (t.count + 1) * 2 > t.mask + 1 and index_grow(t) != 0:
        return -1
    cdef uint32_t i = index_hash(index) & t.mask
    while t.slots[i].used:
        i = (i + 1) & t.mask
    t.slots[i].index = index
    t.slots[i].slot = slot
    t.slots[i].keypair = keypair
    t.slots[i].used = True
    t.count += 1
    return 0

cdef int index_claim(IndexTable *t, uint32_t index, uint32_t slot) noexcept nogil:
    if index_entry(t, index) != NULL:
        return -EEXIST
    return -ENOMEM if index_insert(t, index, slot, NULL) != 0 else 0

cdef void index_remove(IndexTable *t, uint32_t index) noexcept nogil:
    """Removes by backward shifting, so lookups never need tombstones."""
    cdef uint32_t i = index_hash(index) & t.mask, j, home
    while t.slots[i].used and t.slots[i].index != index:
        i = (i + 1) & t.mask
    if not t.slots[i].used:
        return
    t.count -= 1
    j = i
    while True:
        j = (j + 1) & t.mask
        if not t.slots[j].used:
            break
        home = index_hash(t.slots[j].index) & t.mask
        # The entry at j may move into the hole at i only if its home slot is
        # not cyclically within (i, j].
        if (i <= j and i < home <= j) or (i > j and (home > i or home <= j)):
            continue
        t.slots[i] = t.slots[j]
        i = j
    t.slots[i].used = False
    t.slots[i].keypair = NULL


# ---- rotation ------------------------------------------------------------------

cdef void keypair_free(IndexTable *t, Keypair *kp) noexcept nogil:
    if kp == NULL:
        return
    index_remove(t, kp.local_index)
    wipe(kp, sizeof(Keypair))
    free(kp)

cdef int keypairs_install(IndexTable *t, Keypairs *k, uint32_t slot,
                          const uint8_t *send_key, const uint8_t *recv_key,
                          uint32_t local_index, uint32_t remote_index,
                          bint is_initiator, int64_t now) noexcept nogil:
    cdef Keypair *kp
    if index_entry(t, local_index) != NULL:
        return -EEXIST
    kp = <Keypair *>calloc(1, sizeof(Keypair))
    if kp == NULL:
        return -ENOMEM
    memcpy(kp.send_key, send_key, KEY_SIZE)
    memcpy(kp.recv_key, recv_key, KEY_SIZE)
    kp.created = now
    kp.local_index = local_index
    kp.remote_index = remote_index
    kp.slot = slot
    kp.is_initiator = is_initiator
    kp.can_send = is_initiator
    replay_reset(&kp.replay)
    if index_insert(t, local_index, slot, kp) != 0:
        wipe(kp, sizeof(Keypair))
        free(kp)
        return -ENOMEM
    if is_initiator:
        if k.next != NULL:
            # A pending next keypair is demoted to previous.
            keypair_free(t, k.previous)
            k.previous = k.next
            k.next = NULL
            keypair_free(t, k.current)
        else:
            keypair_free(t, k.previous)
            k.previous = k.current
        k.current = kp
    else:
        keypair_free(t, k.next)
        k.next = kp
        keypair_free(t, k.previous)
        k.previous = NULL
    return 0

cdef void keypairs_confirm(IndexTable *t, Keypairs *k) noexcept nogil:
    keypair_free(t, k.previous)
    k.previous = k.current
    k.current = k.next
    k.next = NULL
    k.current.can_send = True

cdef void keypairs_clear(IndexTable *t, Keypairs *k) noexcept nogil:
    keypair_free(t, k.previous)
    keypair_free(t, k.current)
    keypair_free(t, k.next)
    k.previous = k.current = k.next = NULL

cdef void keypairs_expire_sending(Keypairs *k) noexcept nogil:
    if k.current != NULL:
        k.current.send_counter = REJECT_AFTER_MESSAGES
    if k.next != NULL:
        k.next.send_counter = REJECT_AFTER_MESSAGES


# ---- transport messages ----------------------------------------------------------

cdef inline uint32_t padded_length(uint32_t length, uint32_t mtu) noexcept nogil:
    cdef uint32_t padded = (length + 15) & ~(<uint32_t>15)
    if padded > mtu:
        padded = mtu if mtu > length else length
    return padded

cdef uint32_t transport_seal_job(Keypair *kp, uint8_t *out, uint32_t length,
                                 uint32_t mtu, int64_t now, AeadJob *job) noexcept nogil:
    cdef uint32_t padded
    if not keypair_sendable(kp, now):
        return 0
    padded = padded_length(length, mtu)
    job.counter = kp.send_counter
    kp.send_counter += 1
    store_le32(out, MESSAGE_TRANSPORT)
    store_le32(out + 4, kp.remote_index)
    store_le64(out + 8, job.counter)
    memset(out + TRANSPORT_HEADER_SIZE + length, 0, padded - length)
    memcpy(job.key, kp.send_key, KEY_SIZE)
    job.data = out + TRANSPORT_HEADER_SIZE
    job.length = padded
    job.op = AEAD_SEAL
    return TRANSPORT_HEADER_SIZE + padded + TAG_SIZE

cdef int transport_open_job(const IndexTable *t, uint8_t *data, uint32_t length, int64_t now,
                            Keypair **kp, AeadJob *job) noexcept nogil:
    kp[0] = NULL
    if length < TRANSPORT_MIN_SIZE or load_le32(data) != MESSAGE_TRANSPORT:
        return OPEN_MALFORMED
    kp[0] = index_find(t, load_le32(data + 4))
    if kp[0] == NULL:
        return OPEN_UNKNOWN_INDEX
    job.counter = load_le64(data + 8)
    if now - kp[0].created >= REJECT_AFTER_TIME or job.counter >= REJECT_AFTER_MESSAGES:
        return OPEN_EXPIRED
    memcpy(job.key, kp[0].recv_key, KEY_SIZE)
    job.data = data + TRANSPORT_HEADER_SIZE
    job.length = length - TRANSPORT_HEADER_SIZE
    job.op = AEAD_OPEN
    return OPEN_OK

cdef int transport_open_done(Keypair *kp, const AeadJob *job) noexcept nogil:
    if job.result != 0:
        return OPEN_AUTHENTICATION_FAILED
    if not replay_accept(&kp.replay, job.counter):
        return OPEN_REPLAYED
    return OPEN_OK

cdef int transport_inner_source(AllowedIPs allowed_ips, const uint8_t *plain, uint32_t inner,
                                uint32_t *inner_len) noexcept nogil:
    # The padding is trimmed by the inner header's own length.
    if plain[0] >> 4 == 4 and inner >= 20:
        inner_len[0] = load_be16(plain + 2)
        if inner_len[0] < 20 or inner_len[0] > inner:
            return -1
        return allowed_ips.lookup4(plain + 12)
    if plain[0] >> 4 == 6 and inner >= 40:
        inner_len[0] = 40 + load_be16(plain + 4)
        if inner_len[0] > inner:
            return -1
        return allowed_ips.lookup6(plain + 8)
    return -1

cdef int transport_destination(AllowedIPs allowed_ips, const uint8_t *packet,
                               uint32_t length) noexcept nogil:
    if length >= 20 and packet[0] >> 4 == 4:
        return allowed_ips.lookup4(packet + 16)
    if length >= 40 and packet[0] >> 4 == 6:
        return allowed_ips.lookup6(packet + 24)
    return -1


# ---- rekey decisions -----------------------------------------------------------

cdef bint keypair_sendable(const Keypair *kp, int64_t now) noexcept nogil:
    return (kp != NULL and kp.can_send and now - kp.created < REJECT_AFTER_TIME
            and kp.send_counter < REJECT_AFTER_MESSAGES)

cdef bint rekey_after_send(const Keypair *kp, int64_t now) noexcept nogil:
    return kp.send_counter > REKEY_AFTER_MESSAGES or (
        kp.is_initiator and now - kp.created > REKEY_AFTER_TIME)

cdef bint rekey_after_receive(const Keypairs *k, int64_t now) noexcept nogil:
    cdef const Keypair *cur = k.current
    return (cur != NULL and cur.can_send and cur.is_initiator
            and now - cur.created > REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT)
