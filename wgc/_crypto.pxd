# The libsodium primitives WireGuard needs, callable without the GIL.
#
# libsodium is the copy inside PyNaCl (nacl/_sodium*.so); its symbols are
# looked up once at import, so wgc ships no second copy of the library.
from libc.stdint cimport uint8_t, uint64_t
from wgc._constants cimport KEY_SIZE, TAG_SIZE, COOKIE_NONCE_SIZE

# ChaCha20-Poly1305 (IETF) with WireGuard's nonce: 4 zero bytes, then the
# 64-bit little-endian counter.  dst may equal src.
# seal writes length + TAG_SIZE bytes; open reads length bytes (tag included),
# writes length - TAG_SIZE bytes and returns 0, or -1 if the tag is wrong.
cdef int aead_seal(uint8_t *dst, const uint8_t *src, size_t length,
                   const uint8_t *ad, size_t ad_len,
                   uint64_t counter, const uint8_t *key) noexcept nogil
cdef int aead_open(uint8_t *dst, const uint8_t *src, size_t length,
                   const uint8_t *ad, size_t ad_len,
                   uint64_t counter, const uint8_t *key) noexcept nogil

# XChaCha20-Poly1305 with a 24-byte nonce (cookie replies); same contract.
cdef int xaead_seal(uint8_t *dst, const uint8_t *src, size_t length,
                    const uint8_t *ad, size_t ad_len,
                    const uint8_t *nonce, const uint8_t *key) noexcept nogil
cdef int xaead_open(uint8_t *dst, const uint8_t *src, size_t length,
                    const uint8_t *ad, size_t ad_len,
                    const uint8_t *nonce, const uint8_t *key) noexcept nogil

# X25519; the scalar is clamped.  Returns -1 when the result is all zeros.
cdef int x25519(uint8_t *out, const uint8_t *scalar, const uint8_t *point) noexcept nogil
cdef int x25519_base(uint8_t *out, const uint8_t *scalar) noexcept nogil

cdef void random_bytes(uint8_t *buf, size_t n) noexcept nogil
cdef uint64_t random_u64() noexcept nogil
# Constant-time comparison: 1 when equal.
cdef bint equal(const uint8_t *a, const uint8_t *b, size_t n) noexcept nogil
cdef void wipe(void *buf, size_t n) noexcept nogil
# SipHash-2-4 of data under a 16-byte key, as a little-endian 64-bit number:
# the keyed hash behind the network stack's ISNs and ephemeral ports (RFC 6528, RFC 6056).
cdef uint64_t siphash(const uint8_t *key, const uint8_t *data, size_t length) noexcept nogil
