# The protocol's numbers, named as in the WireGuard paper (section 6) and the
# kernel: the one place each is written.
#
# Cython modules cimport them from here (they become C constants: no call,
# no lock, usable without the GIL on any thread); Python reads the same
# values through wgc.constants, which takes them from wgc._constants.  Times
# are CLOCK_MONOTONIC nanoseconds, as every clock in wgc.
from libc.stdint cimport int64_t, uint64_t

cdef enum:
    # Message types and their exact sizes on the wire.
    MESSAGE_INITIATION = 1
    MESSAGE_RESPONSE = 2
    MESSAGE_COOKIE_REPLY = 3
    MESSAGE_TRANSPORT = 4
    INITIATION_SIZE = 148
    RESPONSE_SIZE = 92
    COOKIE_REPLY_SIZE = 64
    TRANSPORT_HEADER_SIZE = 16     # type, receiver index, counter
    TAG_SIZE = 16                  # Poly1305
    COOKIE_SIZE = 16               # a cookie, and each of mac1 and mac2
    TRANSPORT_MIN_SIZE = TRANSPORT_HEADER_SIZE + TAG_SIZE   # a keepalive

    KEY_SIZE = 32
    COOKIE_NONCE_SIZE = 24         # XChaCha20-Poly1305's nonce

    # Handshake queue and the under-load threshold (wireguard-go's sizes).
    HANDSHAKE_QUEUE_SIZE = 1024
    UNDER_LOAD_THRESHOLD = HANDSHAKE_QUEUE_SIZE // 8

    # Per-source rate limit for initiations while under load.
    RATELIMIT_PACKETS_PER_SECOND = 20
    RATELIMIT_BURST = 5

    # Limits of a device.
    MAX_PEERS = 1 << 16
    MAX_STAGED_PACKETS = 128       # per peer, waiting for a session
    DEFAULT_MTU = 1420

cdef extern from *:
    """
    #define WGC_SECOND 1000000000LL
    #define WGC_REKEY_AFTER_MESSAGES (1ULL << 60)
    #define WGC_REJECT_AFTER_MESSAGES (UINT64_MAX - (1ULL << 13))
    #define WGC_REKEY_AFTER_TIME (120 * WGC_SECOND)
    #define WGC_REJECT_AFTER_TIME (180 * WGC_SECOND)
    #define WGC_REKEY_ATTEMPT_TIME (90 * WGC_SECOND)
    #define WGC_REKEY_TIMEOUT (5 * WGC_SECOND)
    #define WGC_REKEY_TIMEOUT_JITTER_MAX (WGC_SECOND / 3)
    #define WGC_KEEPALIVE_TIMEOUT (10 * WGC_SECOND)
    #define WGC_MAX_TIMER_HANDSHAKES (WGC_REKEY_ATTEMPT_TIME / WGC_REKEY_TIMEOUT)
    #define WGC_COOKIE_SECRET_MAX_AGE (120 * WGC_SECOND)
    #define WGC_COOKIE_SECRET_LATENCY (5 * WGC_SECOND)
    #define WGC_HANDSHAKE_INITIATION_RATE (WGC_SECOND / 50)
    #define WGC_UNDER_LOAD_AFTER_TIME WGC_SECOND
    """
    const int64_t SECOND "WGC_SECOND"
    const uint64_t REKEY_AFTER_MESSAGES "WGC_REKEY_AFTER_MESSAGES"
    const uint64_t REJECT_AFTER_MESSAGES "WGC_REJECT_AFTER_MESSAGES"
    # Timers (paper section 6.1, table 1).
    const int64_t REKEY_AFTER_TIME "WGC_REKEY_AFTER_TIME"
    const int64_t REJECT_AFTER_TIME "WGC_REJECT_AFTER_TIME"
    const int64_t REKEY_ATTEMPT_TIME "WGC_REKEY_ATTEMPT_TIME"
    const int64_t REKEY_TIMEOUT "WGC_REKEY_TIMEOUT"
    const int64_t REKEY_TIMEOUT_JITTER_MAX "WGC_REKEY_TIMEOUT_JITTER_MAX"
    const int64_t KEEPALIVE_TIMEOUT "WGC_KEEPALIVE_TIMEOUT"
    const int64_t MAX_TIMER_HANDSHAKES "WGC_MAX_TIMER_HANDSHAKES"   # 18 retries
    const int64_t COOKIE_SECRET_MAX_AGE "WGC_COOKIE_SECRET_MAX_AGE"
    const int64_t COOKIE_SECRET_LATENCY "WGC_COOKIE_SECRET_LATENCY"
    # Initiations closer than 20 ms are floods.
    const int64_t HANDSHAKE_INITIATION_RATE "WGC_HANDSHAKE_INITIATION_RATE"
    const int64_t UNDER_LOAD_AFTER_TIME "WGC_UNDER_LOAD_AFTER_TIME"
