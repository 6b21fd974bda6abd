# cython: language_level=3
"""libsodium through PyNaCl's own copy, with a small Python face.

PyNaCl links libsodium statically into nacl/_sodium*.so and exports its
symbols.  dlopen with RTLD_NOLOAD returns the handle of that already loaded
object, so the function pointers below point into the one copy in memory.
"""
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memset

from wgc._bytes cimport load_le64

import nacl._sodium  # only to load the library; nacl.bindings costs memory we don't need


cdef extern from "<dlfcn.h>" nogil:
    void *dlopen(const char *filename, int flags)
    void *dlsym(void *handle, const char *symbol)
    const char *dlerror()
    int RTLD_NOW
    int RTLD_NOLOAD

ctypedef int (*aead_encrypt_detached_t)(
    uint8_t *c, uint8_t *mac, unsigned long long *maclen, const uint8_t *m,
    unsigned long long mlen, const uint8_t *ad, unsigned long long adlen,
    const uint8_t *nsec, const uint8_t *npub, const uint8_t *k) noexcept nogil
ctypedef int (*aead_decrypt_detached_t)(
    uint8_t *m, uint8_t *nsec, const uint8_t *c, unsigned long long clen,
    const uint8_t *mac, const uint8_t *ad, unsigned long long adlen,
    const uint8_t *npub, const uint8_t *k) noexcept nogil
ctypedef int (*scalarmult_t)(uint8_t *q, const uint8_t *n, const uint8_t *p) noexcept nogil
ctypedef int (*scalarmult_base_t)(uint8_t *q, const uint8_t *n) noexcept nogil
ctypedef void (*randombytes_buf_t)(void *buf, size_t size) noexcept nogil
ctypedef int (*memcmp_t)(const void *a, const void *b, size_t len) noexcept nogil
ctypedef void (*memzero_t)(void *pnt, size_t len) noexcept nogil
ctypedef int (*sodium_init_t)() noexcept nogil
ctypedef int (*shorthash_t)(uint8_t *out, const uint8_t *data, unsigned long long length,
                            const uint8_t *key) noexcept nogil

cdef aead_encrypt_detached_t _seal
cdef aead_decrypt_detached_t _open
cdef aead_encrypt_detached_t _xseal
cdef aead_decrypt_detached_t _xopen
cdef scalarmult_t _scalarmult
cdef scalarmult_base_t _scalarmult_base
cdef randombytes_buf_t _randombytes
cdef memcmp_t _memcmp
cdef memzero_t _memzero
cdef shorthash_t _shorthash


cdef void *_symbol(void *handle, const char *name) except NULL:
    cdef void *p = dlsym(handle, name)
    if p == NULL:
        raise ImportError(f"libsodium in PyNaCl lacks {name.decode()}")
    return p


def _bind():
    global _seal, _open, _xseal, _xopen, _scalarmult, _scalarmult_base
    global _randombytes, _memcmp, _memzero, _shorthash
    path = nacl._sodium.__file__.encode()
    cdef void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if h == NULL:
        raise ImportError(f"cannot find PyNaCl's libsodium: {dlerror().decode()}")
    _seal = <aead_encrypt_detached_t>_symbol(h, b"crypto_aead_chacha20poly1305_ietf_encrypt_detached")
    _open = <aead_decrypt_detached_t>_symbol(h, b"crypto_aead_chacha20poly1305_ietf_decrypt_detached")
    _xseal = <aead_encrypt_detached_t>_symbol(h, b"crypto_aead_xchacha20poly1305_ietf_encrypt_detached")
    _xopen = <aead_decrypt_detached_t>_symbol(h, b"crypto_aead_xchacha20poly1305_ietf_decrypt_detached")
    _scalarmult = <scalarmult_t>_symbol(h, b"crypto_scalarmult_curve25519")
    _scalarmult_base = <scalarmult_base_t>_symbol(h, b"crypto_scalarmult_curve25519_base")
    _randombytes = <randombytes_buf_t>_symbol(h, b"randombytes_buf")
    _memcmp = <memcmp_t>_symbol(h, b"sodium_memcmp")
    _memzero = <memzero_t>_symbol(h, b"sodium_memzero")
    _shorthash = <shorthash_t>_symbol(h, b"crypto_shorthash_siphash24")
    if (<sodium_init_t>_symbol(h, b"sodium_init"))() < 0:
        raise ImportError("libsodium failed to initialise")


_bind()


cdef inline void _nonce(uint8_t *nonce, uint64_t counter) noexcept nogil:
    cdef int i
    memset(nonce, 0, 4)
    for i in range(8):
        nonce[4 + i] = <uint8_t>(counter >> (8 * i))


cdef int aead_seal(uint8_t *dst, const uint8_t *src, size_t length,
                   const uint8_t *ad, size_t ad_len,
                   uint64_t counter, const uint8_t *key) noexcept nogil:
    cdef uint8_t nonce[12]
    _nonce(nonce, counter)
    return _seal(dst, dst + length, NULL, src, length, ad, ad_len, NULL, nonce, key)


cdef int aead_open(uint8_t *dst, const uint8_t *src, size_t length,
                   const uint8_t *ad, size_t ad_len,
                   uint64_t counter, const uint8_t *key) noexcept nogil:
    cdef uint8_t nonce[12]
    if length < TAG_SIZE:
        return -1
    _nonce(nonce, counter)
    return _open(dst, NULL, src, length - TAG_SIZE, src + length - TAG_SIZE,
                 ad, ad_len, nonce, key)


cdef int xaead_seal(uint8_t *dst, const uint8_t *src, size_t length,
                    const uint8_t *ad, size_t ad_len,
                    const uint8_t *nonce, const uint8_t *key) noexcept nogil:
    return _xseal(dst, dst + length, NULL, src, length, ad, ad_len, NULL, nonce, key)


cdef int xaead_open(uint8_t *dst, const uint8_t *src, size_t length,
                    const uint8_t *ad, size_t ad_len,
                    const uint8_t *nonce, const uint8_t *key) noexcept nogil:
    if length < TAG_SIZE:
        return -1
    return _xopen(dst, NULL, src, length - TAG_SIZE, src + length - TAG_SIZE,
                  ad, ad_len, nonce, key)


cdef int x25519(uint8_t *out, const uint8_t *scalar, const uint8_t *point) noexcept nogil:
    cdef uint8_t zero[32]
    if _scalarmult(out, scalar, point) != 0:
        memset(out, 0, 32)
        return -1
    memset(zero, 0, 32)
    return -1 if equal(out, zero, 32) else 0


cdef int x25519_base(uint8_t *out, const uint8_t *scalar) noexcept nogil:
    return _scalarmult_base(out, scalar)


cdef void random_bytes(uint8_t *buf, size_t n) noexcept nogil:
    _randombytes(buf, n)


cdef uint64_t random_u64() noexcept nogil:
    cdef uint64_t v
    _randombytes(&v, 8)
    return v


cdef bint equal(const uint8_t *a, const uint8_t *b, size_t n) noexcept nogil:
    return _memcmp(a, b, n) == 0


cdef void wipe(void *buf, size_t n) noexcept nogil:
    _memzero(buf, n)


cdef uint64_t siphash(const uint8_t *key, const uint8_t *data, size_t length) noexcept nogil:
    cdef uint8_t out[8]
    _shorthash(out, data, length, key)
    return load_le64(out)


# ---- Python face: used by the handshake code and the tests -------------

def _check_key(const uint8_t[:] key):
    if key.shape[0] != KEY_SIZE:
        raise ValueError("key must be 32 bytes")


def seal(const uint8_t[:] key, uint64_t counter, const uint8_t[:] plaintext,
         const uint8_t[:] ad=b""):
    """ChaCha20-Poly1305 with WireGuard's counter nonce: ciphertext || tag."""
    _check_key(key)
    cdef bytearray out = bytearray(plaintext.shape[0] + TAG_SIZE)
    cdef uint8_t[:] o = out
    # A zero-length memoryview has no element 0: read pointers through a
    # one-byte buffer instead.
    cdef const uint8_t *p = &plaintext[0] if plaintext.shape[0] else <const uint8_t *>b""
    cdef const uint8_t *a = &ad[0] if ad.shape[0] else NULL
    aead_seal(&o[0], p, plaintext.shape[0], a, ad.shape[0], counter, &key[0])
    return bytes(out)


def open(const uint8_t[:] key, uint64_t counter, const uint8_t[:] ciphertext,
         const uint8_t[:] ad=b""):
    """Inverse of seal; raises ValueError if the tag does not verify."""
    _check_key(key)
    if ciphertext.shape[0] < TAG_SIZE:
        raise ValueError("ciphertext shorter than its tag")
    cdef bytearray out = bytearray(ciphertext.shape[0] - TAG_SIZE + 1)
    cdef uint8_t[:] o = out
    cdef const uint8_t *a = &ad[0] if ad.shape[0] else NULL
    if aead_open(&o[0], &ciphertext[0], ciphertext.shape[0], a, ad.shape[0],
                 counter, &key[0]) != 0:
        raise ValueError("authentication failed")
    return bytes(out[:ciphertext.shape[0] - TAG_SIZE])


def xseal(const uint8_t[:] key, const uint8_t[:] nonce, const uint8_t[:] plaintext,
          const uint8_t[:] ad=b""):
    """XChaCha20-Poly1305 with a 24-byte nonce: ciphertext || tag."""
    _check_key(key)
    if nonce.shape[0] != COOKIE_NONCE_SIZE:
        raise ValueError("nonce must be 24 bytes")
    cdef bytearray out = bytearray(plaintext.shape[0] + TAG_SIZE)
    cdef uint8_t[:] o = out
    cdef const uint8_t *p = &plaintext[0] if plaintext.shape[0] else <const uint8_t *>b""
    cdef const uint8_t *a = &ad[0] if ad.shape[0] else NULL
    xaead_seal(&o[0], p, plaintext.shape[0], a, ad.shape[0], &nonce[0], &key[0])
    return bytes(out)


def xopen(const uint8_t[:] key, const uint8_t[:] nonce, const uint8_t[:] ciphertext,
          const uint8_t[:] ad=b""):
    """Inverse of xseal; raises ValueError if the tag does not verify."""
    _check_key(key)
    if nonce.shape[0] != COOKIE_NONCE_SIZE:
        raise ValueError("nonce must be 24 bytes")
    if ciphertext.shape[0] < TAG_SIZE:
        raise ValueError("ciphertext shorter than its tag")
    cdef bytearray out = bytearray(ciphertext.shape[0] - TAG_SIZE + 1)
    cdef uint8_t[:] o = out
    cdef const uint8_t *a = &ad[0] if ad.shape[0] else NULL
    if xaead_open(&o[0], &ciphertext[0], ciphertext.shape[0], a, ad.shape[0],
                  &nonce[0], &key[0]) != 0:
        raise ValueError("authentication failed")
    return bytes(out[:ciphertext.shape[0] - TAG_SIZE])


def dh(const uint8_t[:] scalar, const uint8_t[:] point):
    """X25519(scalar, point); raises ValueError for an all-zero result."""
    if scalar.shape[0] != 32 or point.shape[0] != 32:
        raise ValueError("X25519 takes 32-byte scalars and points")
    cdef uint8_t out[32]
    if x25519(out, &scalar[0], &point[0]) != 0:
        raise ValueError("X25519 result is all zeros")
    return out[:32]


def public_key(const uint8_t[:] private):
    """The X25519 public key of a (clamped) private key."""
    if private.shape[0] != 32:
        raise ValueError("private key must be 32 bytes")
    cdef uint8_t out[32]
    x25519_base(out, &private[0])
    return out[:32]


def clamp(const uint8_t[:] key):
    """A private key as X25519 uses it (and as wg genkey prints it)."""
    if key.shape[0] != 32:
        raise ValueError("private key must be 32 bytes")
    cdef bytearray k = bytearray(key)
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    return bytes(k)


def random(size_t n):
    """n bytes from libsodium's CSPRNG."""
    cdef bytearray out = bytearray(n + 1)
    cdef uint8_t[:] o = out
    random_bytes(&o[0], n)
    return bytes(out[:n])


def constant_time_equal(const uint8_t[:] a, const uint8_t[:] b):
    if a.shape[0] != b.shape[0]:
        return False
    if a.shape[0] == 0:
        return True
    return equal(&a[0], &b[0], a.shape[0])


def siphash24(const uint8_t[:] key, const uint8_t[:] data):
    """SipHash-2-4 of data under a 16-byte key, as an integer (little-endian output)."""
    if key.shape[0] != 16:
        raise ValueError("SipHash takes a 16-byte key")
    cdef const uint8_t *p = &data[0] if data.shape[0] else <const uint8_t *>b""
    return siphash(&key[0], p, data.shape[0])
