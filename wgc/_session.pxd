# Sessions: the keypairs a handshake yields, the receiver-index table that
# finds them, their rotation (install, confirm, clear, expire), the rekey
# decisions, and transport sealing and opening (paper section 5.4.6).
#
# No clock, no I/O and no lock in here: every function takes the time it
# needs as an argument.  Who calls whom:
#   - the data-plane thread (wgc._core, its epoll loop) calls
#     transport_seal_job, transport_open_job, transport_open_done and the
#     rekey checks per packet (the jobs themselves may run on wgc._workers'
#     threads, which touch nothing here), and keypairs_confirm when
#     a responder's keypair sees its first packet, all without the GIL;
#   - the control plane (wgc.device through DataPlane, Core's Python face) calls
#     keypairs_install, keypairs_clear and keypairs_expire_sending, and
#     index_claim and index_remove for its handshakes' receiver indices;
#   - both only ever while holding Core.mutex, which therefore guards every
#     IndexTable and Keypairs; nothing here locks or blocks.
#   - tests/bench/micro_helper.pyx calls the transport functions on
#     its own keypair and table (no lock: one thread).
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from wgc._constants cimport KEY_SIZE
from wgc._replay cimport ReplayWindow
from wgc._trie cimport AllowedIPs
from wgc._workers cimport AeadJob

cdef struct Keypair:
    uint8_t send_key[KEY_SIZE]
    uint8_t recv_key[KEY_SIZE]
    uint64_t send_counter          # next nonce to use
    int64_t created                # monotonic ns
    uint32_t local_index
    uint32_t remote_index
    uint32_t slot                  # the owning peer's slot in Core
    bint is_initiator
    bint can_send                  # a responder's keypair sends only once confirmed
    ReplayWindow replay

# One peer's keypairs, as in the kernel: next waits for confirmation (a
# responder's), current sends, previous still receives late packets.
cdef struct Keypairs:
    Keypair *current
    Keypair *previous
    Keypair *next

# An entry is a keypair's receiver index, or (keypair NULL) the index a
# peer's handshake in progress announced: one table for both, so that no
# index is ever given twice.
cdef struct IndexEntry:
    uint32_t index
    uint32_t slot                  # the owning peer's slot in Core
    Keypair *keypair               # NULL: a handshake's index
    bint used                      # False = empty slot

cdef struct IndexTable:            # open addressing, linear probing
    IndexEntry *slots
    uint32_t mask
    uint32_t count

# ---- the receiver-index table ------------------------------------------------
cdef int index_init(IndexTable *t) noexcept nogil       # 0, or -1 without memory
cdef void index_free(IndexTable *t) noexcept nogil      # the table only, not its keypairs
cdef const IndexEntry *index_entry(const IndexTable *t, uint32_t index) noexcept nogil   # or NULL
cdef Keypair *index_find(const IndexTable *t, uint32_t index) noexcept nogil  # NULL for a handshake's
# A handshake's index for the peer in slot: 0, -EEXIST or -ENOMEM.
cdef int index_claim(IndexTable *t, uint32_t index, uint32_t slot) noexcept nogil
cdef void index_remove(IndexTable *t, uint32_t index) noexcept nogil

# ---- rotation ------------------------------------------------------------------
# Adds the keypair of a completed handshake for the peer in `slot`: an
# initiator's becomes current at once, a responder's waits in next.  Returns
# 0, -ENOMEM, or -EEXIST when local_index is already in the table.
cdef int keypairs_install(IndexTable *t, Keypairs *k, uint32_t slot,
                          const uint8_t *send_key, const uint8_t *recv_key,
                          uint32_t local_index, uint32_t remote_index,
                          bint is_initiator, int64_t now) noexcept nogil
# The first authenticated packet on k.next: it becomes current.
cdef void keypairs_confirm(IndexTable *t, Keypairs *k) noexcept nogil
# Forgets (and wipes) all three keypairs.
cdef void keypairs_clear(IndexTable *t, Keypairs *k) noexcept nogil
# Stops sending with current and next; receiving goes on.
cdef void keypairs_expire_sending(Keypairs *k) noexcept nogil

# ---- transport messages ----------------------------------------------------------
# The packet (length 0 = keepalive) is at out + TRANSPORT_HEADER_SIZE; pads it to 16
# bytes but not past mtu, writes the header and fills job with the sealing in
# place that is left to do (wgc._workers runs it).  Returns the datagram's
# length once sealed, or 0 (nothing written) when kp cannot send at now.
cdef uint32_t transport_seal_job(Keypair *kp, uint8_t *out, uint32_t length,
                                 uint32_t mtu, int64_t now, AeadJob *job) noexcept nogil
# What transport_open_job and transport_open_done decided: OPEN_OK, or why the message is to be dropped.
cdef enum:
    OPEN_OK
    OPEN_MALFORMED                 # not a transport message of at least TRANSPORT_MIN_SIZE bytes
    OPEN_UNKNOWN_INDEX             # no keypair holds its receiver index
    OPEN_EXPIRED                   # its keypair is past Reject-After-Time, or its counter past Reject-After-Messages
    OPEN_AUTHENTICATION_FAILED
    OPEN_REPLAYED                  # authentic, but replayed or too old for the replay window

# A transport message of length bytes received at now is opened in two steps,
# with the opening itself (the job, run by wgc._workers) between them:
#   - transport_open_job finds its keypair and checks the header, expiry and
#     counter limit, and fills job with the opening in place, at data +
#     TRANSPORT_HEADER_SIZE (length - TRANSPORT_MIN_SIZE bytes of plaintext
#     there afterwards).  OPEN_OK, or OPEN_MALFORMED, OPEN_UNKNOWN_INDEX or
#     OPEN_EXPIRED; kp[0] is the keypair its receiver index found (NULL
#     before that), so that a drop is known to be that peer's;
#   - transport_open_done, once the job has run, with the keypair found again
#     (it may have gone meanwhile): OPEN_OK, OPEN_AUTHENTICATION_FAILED or
#     OPEN_REPLAYED.  It updates the replay window, so the messages of a
#     batch go through it in the order they were received.
cdef int transport_open_job(const IndexTable *t, uint8_t *data, uint32_t length, int64_t now,
                            Keypair **kp, AeadJob *job) noexcept nogil
cdef int transport_open_done(Keypair *kp, const AeadJob *job) noexcept nogil
# The peer slot allowed IPs give for the source of the opened packet (inner
# bytes, padding included), and in inner_len its length without the
# padding; -1 when it is not a well-formed IP packet or has no owner.
cdef int transport_inner_source(AllowedIPs allowed_ips, const uint8_t *plain, uint32_t inner,
                                uint32_t *inner_len) noexcept nogil
# The peer slot allowed IPs give for an outgoing packet's destination, or -1.
cdef int transport_destination(AllowedIPs allowed_ips, const uint8_t *packet,
                               uint32_t length) noexcept nogil

# ---- rekey decisions (what the kernel's keep_key_fresh does) -------------------
cdef bint keypair_sendable(const Keypair *kp, int64_t now) noexcept nogil
# After sending on kp: too many messages, or an initiator's keypair too old.
cdef bint rekey_after_send(const Keypair *kp, int64_t now) noexcept nogil
# After receiving: our current session (if we initiated it) is close to
# Reject-After-Time, so a new handshake must start before it is unusable.
cdef bint rekey_after_receive(const Keypairs *k, int64_t now) noexcept nogil
