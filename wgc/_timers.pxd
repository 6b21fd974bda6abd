# The per-peer timer state machine of the WireGuard paper (section 6) and the
# kernel's timers.c, as deadlines in a plain struct: no clock is read here and
# nothing is sent.  The data plane calls the event hooks as packets pass, and
# its timer reactions (wgc/_core.pyx) ask timers_expired(now) what fired.
#
# Every deadline is CLOCK_MONOTONIC ns; 0 means "not pending".
from libc.stdint cimport int64_t, uint32_t
from wgc._constants cimport SECOND, REKEY_TIMEOUT, KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME

cdef enum:
    TIMER_RETRANSMIT_HANDSHAKE = 1
    TIMER_SEND_KEEPALIVE = 2
    TIMER_NEW_HANDSHAKE = 4
    TIMER_ZERO_KEY_MATERIAL = 8
    TIMER_PERSISTENT_KEEPALIVE = 16

cdef struct Timers:
    int64_t retransmit_handshake
    int64_t send_keepalive
    int64_t new_handshake
    int64_t zero_key_material
    int64_t persistent_keepalive
    uint32_t persistent_keepalive_interval   # seconds, 0 = off
    uint32_t handshake_attempts
    bint need_another_keepalive
    bint sent_lastminute_handshake


cdef inline void timers_data_sent(Timers *t, int64_t now, int64_t jitter) noexcept nogil:
    # No reply to data we sent within 15 s: the session may be dead.
    if t.new_handshake == 0:
        t.new_handshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter

cdef inline void timers_data_received(Timers *t, int64_t now) noexcept nogil:
    # Answer received data within 10 s, with a keepalive if nothing else goes.
    if t.send_keepalive == 0:
        t.send_keepalive = now + KEEPALIVE_TIMEOUT
    else:
        t.need_another_keepalive = True

cdef inline void timers_any_authenticated_packet_sent(Timers *t) noexcept nogil:
    t.send_keepalive = 0

cdef inline void timers_any_authenticated_packet_received(Timers *t) noexcept nogil:
    t.new_handshake = 0

cdef inline void timers_any_authenticated_packet_traversal(Timers *t, int64_t now) noexcept nogil:
    if t.persistent_keepalive_interval:
        t.persistent_keepalive = now + <int64_t>t.persistent_keepalive_interval * SECOND

cdef inline void timers_handshake_initiated(Timers *t, int64_t now, int64_t jitter) noexcept nogil:
    t.retransmit_handshake = now + REKEY_TIMEOUT + jitter

cdef inline void timers_handshake_complete(Timers *t) noexcept nogil:
    t.retransmit_handshake = 0
    t.handshake_attempts = 0
    t.sent_lastminute_handshake = False

cdef inline void timers_session_derived(Timers *t, int64_t now) noexcept nogil:
    t.zero_key_material = now + 3 * REJECT_AFTER_TIME

cdef inline void timers_stop(Timers *t) noexcept nogil:
    t.retransmit_handshake = 0
    t.send_keepalive = 0
    t.new_handshake = 0
    t.zero_key_material = 0
    t.persistent_keepalive = 0
    t.need_another_keepalive = False

cdef inline int64_t _earliest(int64_t a, int64_t b) noexcept nogil:
    if a == 0:
        return b
    if b == 0 or a < b:
        return a
    return b

cdef inline int64_t timers_next(const Timers *t) noexcept nogil:
    """The earliest pending deadline, or 0 when none is pending."""
    cdef int64_t d = _earliest(t.retransmit_handshake, t.send_keepalive)
    d = _earliest(d, t.new_handshake)
    d = _earliest(d, t.zero_key_material)
    return _earliest(d, t.persistent_keepalive)

cdef inline int timers_expired(Timers *t, int64_t now) noexcept nogil:
    """Bits of the timers due at `now`; they stop being pending."""
    cdef int fired = 0
    if t.retransmit_handshake and t.retransmit_handshake <= now:
        t.retransmit_handshake = 0
        fired |= TIMER_RETRANSMIT_HANDSHAKE
    if t.send_keepalive and t.send_keepalive <= now:
        t.send_keepalive = 0
        fired |= TIMER_SEND_KEEPALIVE
    if t.new_handshake and t.new_handshake <= now:
        t.new_handshake = 0
        fired |= TIMER_NEW_HANDSHAKE
    if t.zero_key_material and t.zero_key_material <= now:
        t.zero_key_material = 0
        fired |= TIMER_ZERO_KEY_MATERIAL
    if t.persistent_keepalive and t.persistent_keepalive <= now:
        t.persistent_keepalive = 0
        fired |= TIMER_PERSISTENT_KEEPALIVE
    return fired
