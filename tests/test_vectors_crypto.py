"""Known-answer tests of the primitives: BLAKE2s (hashlib), ChaCha20-Poly1305,
XChaCha20-Poly1305 and X25519 (libsodium through wgc._crypto)."""
import hashlib
import json
from pathlib import Path

import pytest

from wgc import _crypto

VECTORS = Path(__file__).parent / "vectors"
BLAKE2S = json.loads((VECTORS / "zinc-blake2s.json").read_text())
AEAD = json.loads((VECTORS / "zinc-chacha20poly1305.json").read_text())
X25519 = json.loads((VECTORS / "zinc-curve25519.json").read_text())


@pytest.mark.parametrize("i", range(len(BLAKE2S["unkeyed"])))
def test_blake2s(i):
    message = bytes(range(i))
    assert hashlib.blake2s(message).hexdigest() == BLAKE2S["unkeyed"][i]
    assert hashlib.blake2s(message, key=bytes(range(32))).hexdigest() == BLAKE2S["keyed"][i]


def wireguard_counter(nonce_hex: str):
    """The 64-bit counter a vector's nonce stands for, or None if WireGuard's
    nonce form (4 zero bytes, then the little-endian counter) cannot express it."""
    nonce = bytes.fromhex(nonce_hex)
    if len(nonce) == 8:
        return int.from_bytes(nonce, "little")
    if len(nonce) == 12 and nonce[:4] == bytes(4):
        return int.from_bytes(nonce[4:], "little")
    return None


def expressible(vectors):
    return [v for v in vectors if wireguard_counter(v["nonce"]) is not None]


ENC = expressible(AEAD["chacha20poly1305_enc"])
DEC = expressible(AEAD["chacha20poly1305_dec"])


def test_most_vectors_are_expressible():
    # The 8-byte-nonce vectors and the wycheproof ones with a zero prefix.
    assert len(ENC) >= 69 and len(DEC) == len(AEAD["chacha20poly1305_dec"])


@pytest.mark.parametrize("v", ENC, ids=range(len(ENC)))
def test_chacha20poly1305_seal(v):
    key, counter = bytes.fromhex(v["key"]), wireguard_counter(v["nonce"])
    plaintext, ad = bytes.fromhex(v["input"]), bytes.fromhex(v["assoc"])
    sealed = _crypto.seal(key, counter, plaintext, ad)
    if v["failure"]:
        assert sealed.hex() != v["output"]
    else:
        assert sealed.hex() == v["output"]
        assert _crypto.open(key, counter, sealed, ad) == plaintext


@pytest.mark.parametrize("v", DEC, ids=range(len(DEC)))
def test_chacha20poly1305_open(v):
    key, counter = bytes.fromhex(v["key"]), wireguard_counter(v["nonce"])
    ciphertext, ad = bytes.fromhex(v["input"]), bytes.fromhex(v["assoc"])
    if v["failure"]:
        with pytest.raises(ValueError):
            _crypto.open(key, counter, ciphertext, ad)
    else:
        assert _crypto.open(key, counter, ciphertext, ad).hex() == v["output"]


@pytest.mark.parametrize("v", AEAD["xchacha20poly1305_enc"] + AEAD["xchacha20poly1305_dec"])
def test_xchacha20poly1305(v):
    key, nonce, ad = (bytes.fromhex(v[k]) for k in ("key", "nonce", "assoc"))
    data, expected = bytes.fromhex(v["input"]), bytes.fromhex(v["output"])
    if len(expected) > len(data):  # an enc vector
        assert _crypto.xseal(key, nonce, data, ad) == expected
    else:
        assert _crypto.xopen(key, nonce, data, ad) == expected
        with pytest.raises(ValueError):
            _crypto.xopen(key, nonce, data[:-1] + bytes([data[-1] ^ 1]), ad)


@pytest.mark.parametrize("v", X25519["vectors"], ids=range(len(X25519["vectors"])))
def test_x25519(v):
    private, public = bytes.fromhex(v["private"]), bytes.fromhex(v["public"])
    if v["valid"]:
        assert _crypto.dh(private, public).hex() == v["result"]
    else:
        assert v["result"] == "00" * 32
        with pytest.raises(ValueError):
            _crypto.dh(private, public)


def test_public_key_is_the_base_point_multiple():
    private = _crypto.clamp(bytes(range(32)))
    nine = bytes([9]) + bytes(31)
    assert _crypto.public_key(private) == _crypto.dh(private, nine)


def test_clamp():
    k = _crypto.clamp(b"\xff" * 32)
    assert k[0] == 0xF8 and k[31] == 0x7F and k[1:31] == b"\xff" * 30


def test_tampered_tag_is_rejected():
    key = bytes(range(32))
    sealed = bytearray(_crypto.seal(key, 7, b"payload", b"ad"))
    for i in range(len(sealed)):
        sealed[i] ^= 0x80
        with pytest.raises(ValueError):
            _crypto.open(key, 7, bytes(sealed), b"ad")
        sealed[i] ^= 0x80
    with pytest.raises(ValueError):
        _crypto.open(key, 8, bytes(sealed), b"ad")


@pytest.mark.parametrize(("length", "expected"), [(0, 0x726FDB47DD0E0E31), (15, 0xA129CA6149BE45E5)])
def test_siphash24(length, expected):
    # The SipHash paper (Aumasson, Bernstein 2012), appendix A and its vectors.h:
    # key 00..0f, message 00 01 .. length-1.
    assert _crypto.siphash24(bytes(range(16)), bytes(range(length))) == expected
