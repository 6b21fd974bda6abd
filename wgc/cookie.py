"""MAC1, MAC2 and cookie replies: the handshake's DoS defence (paper 5.4.4, 5.4.7).

Every handshake message carries mac1, keyed by the receiver's public key, so
a responder can drop junk without any DH.  Under load a responder also wants
mac2, keyed by a cookie that only a sender able to receive at its source
address can hold; it hands such a sender the cookie in an encrypted reply.
"""
import struct
from collections.abc import Callable

from wgc import _crypto
from wgc import constants as C
from wgc.noise import hash, mac

_REPLY = struct.Struct("<I I 24s 32s")  # type, receiver, nonce, encrypted cookie


def _mac_offsets(message) -> tuple[int, int]:
    """Where mac1 and mac2 start: the last two COOKIE_SIZE fields of a handshake message."""
    return len(message) - 2 * C.COOKIE_SIZE, len(message) - C.COOKIE_SIZE


class CookieChecker:
    """The receiving side: checks the MACs of messages sent to us and makes cookies."""

    def __init__(self, public_key: bytes, random: Callable[[int], bytes] = _crypto.random):
        """random(n): n random bytes, for the cookie secret and each reply's nonce; known-answer
        tests give the bytes another implementation drew."""
        self._mac1_key = hash(C.LABEL_MAC1, public_key)
        self._cookie_key = hash(C.LABEL_COOKIE, public_key)
        self._random = random
        self._secret = b""  # none yet, so never fresh
        self._secret_born = 0

    def check_mac1(self, message: bytes) -> bool:
        m1, m2 = _mac_offsets(message)
        return _crypto.constant_time_equal(mac(self._mac1_key, message[:m1]), message[m1:m2])

    def _cookie(self, src: bytes) -> bytes:
        return mac(self._secret, src)

    def _secret_fresh(self, now: int) -> bool:
        return bool(self._secret) and now - self._secret_born < C.COOKIE_SECRET_MAX_AGE

    def check_mac2(self, message: bytes, src: bytes, now: int) -> bool:
        """src: the packed source IP followed by the big-endian port."""
        if not self._secret_fresh(now):
            return False
        _, m2 = _mac_offsets(message)
        return _crypto.constant_time_equal(mac(self._cookie(src), message[:m2]), message[m2:])

    def create_reply(self, message: bytes, src: bytes, now: int) -> bytes:
        """The cookie reply (type 3) answering message from src."""
        if not self._secret_fresh(now):
            self._secret = self._random(32)
            self._secret_born = now
        m1, m2 = _mac_offsets(message)
        nonce = self._random(C.COOKIE_NONCE_SIZE)
        sealed = _crypto.xseal(self._cookie_key, nonce, self._cookie(src), message[m1:m2])
        sender = struct.unpack_from("<I", message, 4)[0]
        return _REPLY.pack(C.MESSAGE_COOKIE_REPLY, sender, nonce, sealed)


class CookieGenerator:
    """The sending side, one per peer: MACs our messages, keeps the peer's cookie."""

    def __init__(self, peer_public_key: bytes):
        self._mac1_key = hash(C.LABEL_MAC1, peer_public_key)
        self._cookie_key = hash(C.LABEL_COOKIE, peer_public_key)
        self._cookie: bytes | None = None
        self._cookie_born = 0
        self._last_mac1: bytes | None = None

    def add_macs(self, message: bytearray, now: int) -> None:
        m1, m2 = _mac_offsets(message)
        message[m1:m2] = mac(self._mac1_key, bytes(message[:m1]))
        self._last_mac1 = bytes(message[m1:m2])
        if self._cookie is not None and now - self._cookie_born < C.COOKIE_SECRET_MAX_AGE - C.COOKIE_SECRET_LATENCY:
            message[m2:] = mac(self._cookie, bytes(message[:m2]))
        else:
            message[m2:] = bytes(C.COOKIE_SIZE)

    def consume_reply(self, message: bytes, now: int) -> bool:
        """Takes the cookie from a reply to the last message we MACed."""
        if len(message) != C.COOKIE_REPLY_SIZE or self._last_mac1 is None:
            return False
        _, _, nonce, sealed = _REPLY.unpack(message)
        try:
            cookie = _crypto.xopen(self._cookie_key, nonce, sealed, self._last_mac1)
        except ValueError:
            return False
        self._cookie, self._cookie_born = cookie, now
        self._last_mac1 = None  # one reply per message sent
        return True
