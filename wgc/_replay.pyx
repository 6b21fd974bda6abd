# cython: language_level=3
"""RFC 6479 replay window, in the form the kernel and wireguard-go use."""
from libc.stdint cimport uint64_t
from libc.string cimport memset

from wgc._constants cimport REJECT_AFTER_MESSAGES


cdef void replay_reset(ReplayWindow *w) noexcept nogil:
    memset(w, 0, sizeof(ReplayWindow))


cdef bint replay_accept(ReplayWindow *w, uint64_t counter) noexcept nogil:
    cdef uint64_t position, word, current_word, clear, i, bit
    if counter >= REJECT_AFTER_MESSAGES:
        return False
    # Work with counter + 1 so that "nothing seen yet" is next == 0.
    position = counter + 1
    if position + REPLAY_WINDOW < w.next:
        return False                              # older than the window
    word = position >> 6
    if position > w.next:
        # Moving ahead: zero the words between the old front and the new one
        # (all of them after a jump larger than the ring).
        current_word = w.next >> 6
        clear = word - current_word
        if clear > REPLAY_WORDS:
            clear = REPLAY_WORDS
        for i in range(1, clear + 1):
            w.words[(current_word + i) & (REPLAY_WORDS - 1)] = 0
        w.next = position
    bit = (<uint64_t>1) << (position & 63)
    word &= REPLAY_WORDS - 1
    if w.words[word] & bit:
        return False
    w.words[word] |= bit
    return True


cdef class ReplayFilter:
    """Python face of one window, for tests."""
    cdef ReplayWindow window

    def __cinit__(self):
        replay_reset(&self.window)

    def reset(self):
        replay_reset(&self.window)

    def accept(self, uint64_t counter):
        return replay_accept(&self.window, counter)


WINDOW = REPLAY_WINDOW
REJECT_AFTER = REJECT_AFTER_MESSAGES
