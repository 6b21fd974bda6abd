"""Per-source limit on handshake initiations while the device is under load.

A token bucket per source: 20 packets per second, bursts of 5, keyed by the
IPv4 address or the IPv6 /64 (as the kernel groups them).  Buckets idle for
a second are forgotten, and the table never holds more than MAX_ENTRIES:
a source that would need a new bucket beyond that is refused until older
ones expire, so a flood from many addresses costs bounded memory.
"""
from wgc import constants as C

PACKET_COST = C.SECOND // C.RATELIMIT_PACKETS_PER_SECOND
TOKEN_MAX = PACKET_COST * C.RATELIMIT_BURST
MAX_ENTRIES = 8192
_IDLE = C.SECOND


class RateLimiter:
    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._buckets: dict[bytes, list[int]] = {}  # key -> [tokens, last time]
        self._collected = 0

    def allow(self, ip: bytes, now: int) -> bool:
        """Whether a packet from ip may be handled at now (monotonic ns)."""
        key = ip if len(ip) == 4 else ip[:8]
        if now - self._collected >= _IDLE:
            self._collect(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_entries:
                return False
            self._buckets[key] = [TOKEN_MAX - PACKET_COST, now]
            return True
        tokens = min(TOKEN_MAX, bucket[0] + now - bucket[1])
        bucket[1] = now
        if tokens < PACKET_COST:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - PACKET_COST
        return True

    def _collect(self, now: int) -> None:
        self._collected = now
        stale = [key for key, (_, last) in self._buckets.items() if now - last >= _IDLE]
        for key in stale:
            del self._buckets[key]

    def __len__(self):
        return len(self._buckets)
