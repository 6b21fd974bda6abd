"""Protocol constants, named as in the WireGuard paper (section 6) and the kernel.

Times are in nanoseconds because every clock in wgc is CLOCK_MONOTONIC in ns.
"""

SECOND = 1_000_000_000
MILLISECOND = 1_000_000

# Noise_IKpsk2 identity strings (paper section 5.4).
CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"

# Message types and their exact sizes on the wire.
MESSAGE_INITIATION = 1
MESSAGE_RESPONSE = 2
MESSAGE_COOKIE_REPLY = 3
MESSAGE_TRANSPORT = 4
INITIATION_SIZE = 148
RESPONSE_SIZE = 92
COOKIE_REPLY_SIZE = 64
TRANSPORT_HEADER_SIZE = 16
TRANSPORT_MIN_SIZE = 32  # header + Poly1305 tag: a keepalive

KEY_SIZE = 32
TAG_SIZE = 16
COOKIE_SIZE = 16
COOKIE_NONCE_SIZE = 24
TIMESTAMP_SIZE = 12

# Timers (paper section 6.1, table 1).
REKEY_AFTER_MESSAGES = 1 << 60
REJECT_AFTER_MESSAGES = (1 << 64) - (1 << 13) - 1
REKEY_AFTER_TIME = 120 * SECOND
REJECT_AFTER_TIME = 180 * SECOND
REKEY_ATTEMPT_TIME = 90 * SECOND
REKEY_TIMEOUT = 5 * SECOND
REKEY_TIMEOUT_JITTER_MAX = SECOND // 3
KEEPALIVE_TIMEOUT = 10 * SECOND
MAX_TIMER_HANDSHAKES = REKEY_ATTEMPT_TIME // REKEY_TIMEOUT  # 18 retries
COOKIE_SECRET_MAX_AGE = 120 * SECOND
COOKIE_SECRET_LATENCY = 5 * SECOND
HANDSHAKE_INITIATION_RATE = SECOND // 50  # initiations closer than 20 ms are floods

# Handshake queue and the under-load threshold (wireguard-go's sizes).
HANDSHAKE_QUEUE_SIZE = 1024
UNDER_LOAD_THRESHOLD = HANDSHAKE_QUEUE_SIZE // 8
UNDER_LOAD_AFTER_TIME = SECOND

# Per-source rate limit for initiations while under load.
RATELIMIT_PACKETS_PER_SECOND = 20
RATELIMIT_BURST = 5

# Limits of a device.
MAX_PEERS = 1 << 16
MAX_STAGED_PACKETS = 128
DEFAULT_MTU = 1420
