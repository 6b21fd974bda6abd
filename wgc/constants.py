"""Protocol constants, named as in the WireGuard paper (section 6) and the kernel.

The numbers are written once, in wgc/_constants.pxd, which the compiled data
plane cimports; this module gives Python the same values, and holds the
Noise identity strings, which only Python uses.  Times are in nanoseconds
because every clock in wgc is CLOCK_MONOTONIC in ns.
"""
from wgc._constants import (  # noqa: F401  (the module's face)
    COOKIE_NONCE_SIZE,
    COOKIE_REPLY_SIZE,
    COOKIE_SECRET_LATENCY,
    COOKIE_SECRET_MAX_AGE,
    COOKIE_SIZE,
    DEFAULT_MTU,
    HANDSHAKE_INITIATION_RATE,
    HANDSHAKE_QUEUE_SIZE,
    INITIATION_SIZE,
    KEEPALIVE_TIMEOUT,
    MAX_PEERS,
    MAX_STAGED_PACKETS,
    MAX_TIMER_HANDSHAKES,
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    RATELIMIT_BURST,
    RATELIMIT_PACKETS_PER_SECOND,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_ATTEMPT_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    RESPONSE_SIZE,
    SECOND,
    TAG_SIZE,
    TRANSPORT_HEADER_SIZE,
    TRANSPORT_MIN_SIZE,
    UNDER_LOAD_AFTER_TIME,
    UNDER_LOAD_THRESHOLD,
)

# Noise_IKpsk2 identity strings (paper section 5.4).
CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"
