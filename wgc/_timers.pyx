# cython: language_level=3
"""Python face of the timer state machine (wgc/_timers.pxd), for tests and tools."""
from wgc._timers cimport *


cdef class PeerTimers:
    """One peer's timers; every method takes the current time explicitly."""
    cdef Timers t

    def __init__(self, persistent_keepalive_interval=0):
        self.t.persistent_keepalive_interval = persistent_keepalive_interval

    def data_sent(self, int64_t now, int64_t jitter=0):
        timers_data_sent(&self.t, now, jitter)

    def data_received(self, int64_t now):
        timers_data_received(&self.t, now)

    def any_authenticated_packet_sent(self):
        timers_any_authenticated_packet_sent(&self.t)

    def any_authenticated_packet_received(self):
        timers_any_authenticated_packet_received(&self.t)

    def any_authenticated_packet_traversal(self, int64_t now):
        timers_any_authenticated_packet_traversal(&self.t, now)

    def handshake_initiated(self, int64_t now, int64_t jitter=0):
        timers_handshake_initiated(&self.t, now, jitter)

    def handshake_complete(self):
        timers_handshake_complete(&self.t)

    def session_derived(self, int64_t now):
        timers_session_derived(&self.t, now)

    def expired(self, int64_t now):
        return timers_expired(&self.t, now)

    def next_deadline(self):
        return timers_next(&self.t)

    @property
    def need_another_keepalive(self):
        return self.t.need_another_keepalive


RETRANSMIT_HANDSHAKE = TIMER_RETRANSMIT_HANDSHAKE
SEND_KEEPALIVE = TIMER_SEND_KEEPALIVE
NEW_HANDSHAKE = TIMER_NEW_HANDSHAKE
ZERO_KEY_MATERIAL = TIMER_ZERO_KEY_MATERIAL
PERSISTENT_KEEPALIVE = TIMER_PERSISTENT_KEEPALIVE
