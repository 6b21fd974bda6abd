"""The Noise_IKpsk2 handshake of WireGuard (paper section 5.4), sans I/O.

Messages are built and consumed here; no socket or clock is touched: the
caller passes `now` (monotonic ns, for the 20 ms flood check) and `wall`
(unix ns, for the TAI64N timestamp).  MAC fields are left to wgc.cookie.
"""
from __future__ import annotations

import struct

try:
    from _blake2 import blake2s  # hashlib would also load OpenSSL: megabytes we don't use
except ImportError:  # pragma: no cover - an interpreter without the private module
    from hashlib import blake2s

from wgc import _crypto
from wgc import constants as C
from wgc.tai64n import timestamp

# typing costs the daemon about half a MiB of memory for names only the type
# checker reads (it treats this name as true, Python never imports it).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ZERO = bytes(32)


# -- primitives (paper 5.4: HASH, MAC, HMAC, KDF) ----------------------------------

def hash(*parts: bytes) -> bytes:
    h = blake2s()
    for part in parts:
        h.update(part)
    return h.digest()


def mac(key: bytes, data: bytes) -> bytes:
    return blake2s(data, digest_size=C.COOKIE_SIZE, key=key).digest()


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def hmac(key: bytes, data: bytes) -> bytes:
    """HMAC (RFC 2104) over BLAKE2s-256, whose block is 64 bytes."""
    if len(key) > 64:
        key = hash(key)
    key = key.ljust(64, b"\0")
    inner = blake2s(key.translate(_IPAD))
    inner.update(data)
    return blake2s(key.translate(_OPAD) + inner.digest()).digest()


def kdf(key: bytes, data: bytes, n: int) -> tuple[bytes, ...]:
    """KDF_n: n 32-byte outputs chained from HMAC(key, data)."""
    prk = hmac(key, data)
    out, previous = [], b""
    for i in range(1, n + 1):
        previous = hmac(prk, previous + bytes([i]))
        out.append(previous)
    return tuple(out)


INITIAL_CHAINING_KEY = hash(C.CONSTRUCTION)
INITIAL_HASH = hash(INITIAL_CHAINING_KEY, C.IDENTIFIER)


# -- the symmetric state's steps, reused by both messages and the vector tests --------

def mix_hash(h: bytes, data: bytes) -> bytes:
    return hash(h, data)


def mix_key(ck: bytes, data: bytes) -> bytes:
    return kdf(ck, data, 1)[0]


def mix_key_and_key(ck: bytes, data: bytes) -> tuple[bytes, bytes]:
    """(chaining key, encryption key) = KDF2(ck, data): after a DH."""
    ck, key = kdf(ck, data, 2)
    return ck, key


def mix_key_and_hash(ck: bytes, h: bytes, psk: bytes) -> tuple[bytes, bytes, bytes]:
    """The psk step: (chaining key, hash, encryption key)."""
    ck, tau, key = kdf(ck, psk, 3)
    return ck, mix_hash(h, tau), key


def encrypt_and_hash(key: bytes, h: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    ciphertext = _crypto.seal(key, 0, plaintext, h)
    return ciphertext, mix_hash(h, ciphertext)


def decrypt_and_hash(key: bytes, h: bytes, ciphertext: bytes) -> tuple[bytes, bytes]:
    """Raises ValueError if the ciphertext does not authenticate."""
    plaintext = _crypto.open(key, 0, ciphertext, h)
    return plaintext, mix_hash(h, ciphertext)


# -- message layouts ---------------------------------------------------------------

_INITIATION = struct.Struct("<I I 32s 48s 28s 16s 16s")   # type, sender, ephemeral, static, timestamp, macs
_RESPONSE = struct.Struct("<I I I 32s 16s 16s 16s")        # type, sender, receiver, ephemeral, empty, macs


def sender_index(message: bytes) -> int:
    """The sender index of an initiation or response."""
    return struct.unpack_from("<I", message, 4)[0]


def receiver_index(message: bytes) -> int:
    """The receiver index of a cookie reply or transport message."""
    return struct.unpack_from("<I", message, 4)[0]


# -- per-peer state ------------------------------------------------------------------

class StaticIdentity:
    """The device's long-term key pair (the private key already clamped)."""

    def __init__(self, private_key: bytes):
        self.private_key = bytes(private_key)
        self.public_key = _crypto.public_key(self.private_key)


class SessionKeys:
    """The transport keys and indices a completed handshake yields."""

    __slots__ = ("is_initiator", "local_index", "recv_key", "remote_index", "send_key")

    def __init__(self, send_key, recv_key, local_index, remote_index, is_initiator):
        self.send_key, self.recv_key = send_key, recv_key
        self.local_index, self.remote_index = local_index, remote_index
        self.is_initiator = is_initiator


NONE, INITIATION_CREATED, INITIATION_CONSUMED, RESPONSE_CREATED, RESPONSE_CONSUMED = range(5)


class Handshake:
    """One peer's handshake: its static key, our precomputed DH with it, and
    the state of the exchange in progress (if any)."""

    def __init__(self, identity: StaticIdentity | None, remote_static: bytes, preshared_key: bytes = ZERO):
        self.remote_static = bytes(remote_static)
        self.preshared_key = bytes(preshared_key)
        self.latest_timestamp = bytes(12)      # newest initiation accepted from this peer
        self.last_initiation_consumed: int | None = None   # monotonic ns of that initiation
        self.owner: Any = None                 # the device's peer object
        self.refresh_identity(identity)

    def refresh_identity(self, identity: StaticIdentity | None) -> None:
        self.identity = identity
        self.static_static: bytes | None = None
        if identity is not None:
            try:
                self.static_static = _crypto.dh(identity.private_key, self.remote_static)
            except ValueError:
                pass  # a low-order peer key: no handshake can be made with it
        self.clear()

    def set_preshared_key(self, psk: bytes) -> None:
        self.preshared_key = bytes(psk)

    def can_handshake(self) -> bool:
        return self.static_static is not None

    def clear(self) -> None:
        self.state = NONE
        # Set as the exchange goes (None before): which ones, the state says.
        self.hash: bytes | None = None
        self.chaining_key: bytes | None = None
        self.ephemeral_private: bytes | None = None
        self.remote_ephemeral: bytes | None = None
        self.local_index: int | None = None
        self.remote_index: int | None = None


def _ephemeral_key(random_bytes: bytes | None) -> bytes:
    """A new ephemeral private key: 32 random bytes, clamped.  Known-answer tests give
    the bytes another implementation drew; None draws them here."""
    return _crypto.clamp(_crypto.random(32) if random_bytes is None else random_bytes)


def create_initiation(hs: Handshake, local_index: int, wall: int, *, ephemeral: bytes | None = None) -> bytearray:
    """The first message; mac1 and mac2 are left zero for the cookie layer.
    ephemeral: see _ephemeral_key."""
    identity = hs.identity
    if identity is None or hs.static_static is None:
        raise ValueError("no handshake can be made with this peer (see can_handshake)")
    ck = INITIAL_CHAINING_KEY
    h = mix_hash(INITIAL_HASH, hs.remote_static)
    ephemeral = _ephemeral_key(ephemeral)
    ephemeral_public = _crypto.public_key(ephemeral)
    ck = mix_key(ck, ephemeral_public)
    h = mix_hash(h, ephemeral_public)
    ck, key = mix_key_and_key(ck, _crypto.dh(ephemeral, hs.remote_static))
    encrypted_static, h = encrypt_and_hash(key, h, identity.public_key)
    ck, key = mix_key_and_key(ck, hs.static_static)
    encrypted_timestamp, h = encrypt_and_hash(key, h, timestamp(wall))
    hs.state = INITIATION_CREATED
    hs.chaining_key, hs.hash = ck, h
    hs.ephemeral_private = ephemeral
    hs.local_index = local_index
    return bytearray(_INITIATION.pack(C.MESSAGE_INITIATION, local_index, ephemeral_public, encrypted_static,
                                      encrypted_timestamp, bytes(C.COOKIE_SIZE), bytes(C.COOKIE_SIZE)))


def consume_initiation(identity: StaticIdentity, message: bytes, find_peer, now: int) -> Handshake | None:
    """The responder's side of the first message; None unless it is authentic,
    from a known peer, newer than the last one and not part of a flood."""
    if len(message) != C.INITIATION_SIZE:
        return None
    kind, sender, ephemeral, encrypted_static, encrypted_timestamp, _, _ = _INITIATION.unpack(message)
    if kind != C.MESSAGE_INITIATION:
        return None
    ck = INITIAL_CHAINING_KEY
    h = mix_hash(INITIAL_HASH, identity.public_key)
    ck = mix_key(ck, ephemeral)
    h = mix_hash(h, ephemeral)
    try:
        ck, key = mix_key_and_key(ck, _crypto.dh(identity.private_key, ephemeral))
        remote_static, h = decrypt_and_hash(key, h, encrypted_static)
    except ValueError:
        return None
    hs = find_peer(remote_static)
    if hs is None or hs.static_static is None:
        return None
    ck, key = mix_key_and_key(ck, hs.static_static)
    try:
        stamp, h = decrypt_and_hash(key, h, encrypted_timestamp)
    except ValueError:
        return None
    if stamp <= hs.latest_timestamp:
        return None  # a replay, or older than one already accepted
    if hs.last_initiation_consumed is not None and now - hs.last_initiation_consumed < C.HANDSHAKE_INITIATION_RATE:
        return None  # a flood of initiations
    hs.state = INITIATION_CONSUMED
    hs.chaining_key, hs.hash = ck, h
    hs.remote_ephemeral = ephemeral
    hs.remote_index = sender
    hs.latest_timestamp = stamp
    hs.last_initiation_consumed = now
    return hs


def create_response(hs: Handshake, local_index: int, *, ephemeral: bytes | None = None) -> bytearray:
    """The second message, answering a consumed initiation; macs left zero.
    ephemeral: see _ephemeral_key."""
    ck, h, remote_ephemeral = hs.chaining_key, hs.hash, hs.remote_ephemeral
    if hs.state != INITIATION_CONSUMED or ck is None or h is None or remote_ephemeral is None:
        raise ValueError("no initiation to respond to")
    ephemeral = _ephemeral_key(ephemeral)
    ephemeral_public = _crypto.public_key(ephemeral)
    ck = mix_key(ck, ephemeral_public)
    h = mix_hash(h, ephemeral_public)
    ck = mix_key(ck, _crypto.dh(ephemeral, remote_ephemeral))
    ck = mix_key(ck, _crypto.dh(ephemeral, hs.remote_static))
    ck, h, key = mix_key_and_hash(ck, h, hs.preshared_key)
    encrypted_nothing, h = encrypt_and_hash(key, h, b"")
    hs.state = RESPONSE_CREATED
    hs.chaining_key, hs.hash = ck, h
    hs.ephemeral_private = ephemeral
    hs.local_index = local_index
    return bytearray(_RESPONSE.pack(C.MESSAGE_RESPONSE, local_index, hs.remote_index,
                                    ephemeral_public, encrypted_nothing, bytes(C.COOKIE_SIZE), bytes(C.COOKIE_SIZE)))


def consume_response(identity: StaticIdentity, message: bytes, find_by_index) -> Handshake | None:
    """The initiator's side of the second message; None unless authentic."""
    if len(message) != C.RESPONSE_SIZE:
        return None
    kind, sender, receiver, ephemeral, encrypted_nothing, _, _ = _RESPONSE.unpack(message)
    if kind != C.MESSAGE_RESPONSE:
        return None
    hs = find_by_index(receiver)
    if hs is None or hs.state != INITIATION_CREATED:
        return None
    ck, h, ephemeral_private = hs.chaining_key, hs.hash, hs.ephemeral_private
    if ck is None or h is None or ephemeral_private is None:
        return None  # not after INITIATION_CREATED
    ck = mix_key(ck, ephemeral)
    h = mix_hash(h, ephemeral)
    try:
        ck = mix_key(ck, _crypto.dh(ephemeral_private, ephemeral))
        ck = mix_key(ck, _crypto.dh(identity.private_key, ephemeral))
        ck, h, key = mix_key_and_hash(ck, h, hs.preshared_key)
        _, h = decrypt_and_hash(key, h, encrypted_nothing)
    except ValueError:
        return None
    hs.state = RESPONSE_CONSUMED
    hs.chaining_key, hs.hash = ck, h
    hs.remote_ephemeral = ephemeral
    hs.remote_index = sender
    return hs


def begin_session(hs: Handshake) -> SessionKeys:
    """Derives the transport keys and forgets the handshake's secrets."""
    if hs.state not in (RESPONSE_CONSUMED, RESPONSE_CREATED) or hs.chaining_key is None:
        raise ValueError("no completed handshake to begin a session from")
    is_initiator = hs.state == RESPONSE_CONSUMED
    first, second = kdf(hs.chaining_key, b"", 2)
    keys = SessionKeys(
        send_key=first if is_initiator else second,
        recv_key=second if is_initiator else first,
        local_index=hs.local_index,
        remote_index=hs.remote_index,
        is_initiator=is_initiator,
    )
    hs.clear()
    return keys
