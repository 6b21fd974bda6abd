"""TAI64N timestamps, as handshake initiations carry them (paper 5.4.2)."""
import struct

_BASE = (1 << 62) + 10           # TAI64 label of the unix epoch
_WHITENER = (1 << 24) - 1        # low nanosecond bits cleared: ~16.8 ms resolution


def timestamp(wall_ns: int) -> bytes:
    """12 bytes that compare (as bytes) in time order; wall_ns is unix time in ns."""
    seconds, nanoseconds = divmod(wall_ns, 1_000_000_000)
    return struct.pack(">QI", _BASE + seconds, nanoseconds & ~_WHITENER)
