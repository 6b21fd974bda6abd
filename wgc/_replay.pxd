# The receive-side replay window (RFC 6479): a ring of 128 64-bit words, of
# which one word is always being recycled, so 8128 counters below the
# greatest one seen are remembered.  Checked only after a packet authenticates.
from libc.stdint cimport uint64_t

cdef enum:
    REPLAY_WORDS = 128
    REPLAY_WINDOW = (REPLAY_WORDS - 1) * 64

cdef struct ReplayWindow:
    uint64_t next                    # greatest counter accepted + 1 (0: none yet)
    uint64_t words[REPLAY_WORDS]

cdef void replay_reset(ReplayWindow *w) noexcept nogil
# 1 if counter is fresh (and is now remembered); 0 if seen, too old, or past
# Reject-After-Messages.
cdef bint replay_accept(ReplayWindow *w, uint64_t counter) noexcept nogil
