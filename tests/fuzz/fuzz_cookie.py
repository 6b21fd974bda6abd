"""The cookie layer (wgc/cookie.py): MACs, cookie replies and their consumption.

The input is a handshake message body (initiation or response sized), a
source address, and an XOR mask applied to the cookie reply in flight.
Invariants: a message MACed by the sender's generator passes the
receiver's mac1 check and fails it with any byte changed; a cookie reply is
well-formed and answers the message's sender index; a reply that arrives
unchanged gives the sender a cookie whose mac2 the receiver accepts from that
source only; a reply changed in flight (or of any other size) is refused
without touching the sender's state.
"""
import struct

import atheris

import common

with common.instrumented():
    from wgc import _crypto
    from wgc import constants as C
    from wgc.cookie import CookieChecker, CookieGenerator

RECEIVER_KEY = _crypto.public_key(_crypto.clamp(bytes(range(32))))
NOW = 1_000 * C.SECOND


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    size = C.INITIATION_SIZE if fdp.ConsumeBool() else C.RESPONSE_SIZE
    message = bytearray(fdp.ConsumeBytes(size).ljust(size, b"\0"))
    src_size = 18 if fdp.ConsumeBool() else 6  # packed IPv6 or IPv4 address and port
    src = fdp.ConsumeBytes(src_size).ljust(src_size, b"\0")
    flip = fdp.ConsumeIntInRange(0, size - 17)  # a byte mac1 covers, or mac1 itself
    mask = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 80))

    checker = CookieChecker(RECEIVER_KEY)
    sender = CookieGenerator(RECEIVER_KEY)
    sender.add_macs(message, NOW)
    assert message[-16:] == bytes(16), "no mac2 without a cookie"
    assert checker.check_mac1(bytes(message))
    changed = bytearray(message)
    changed[flip] ^= 0x01
    assert not checker.check_mac1(bytes(changed))
    assert not checker.check_mac2(bytes(message), src, NOW), "no cookie secret yet"

    reply = checker.create_reply(bytes(message), src, NOW)
    assert len(reply) == C.COOKIE_REPLY_SIZE and reply[:8] == struct.pack("<I", 3) + bytes(message[4:8])
    # The mask falls on the nonce and the sealed cookie: the type and receiver
    # fields are the device's to check (it finds the peer by the receiver).
    sealed = reply[8:]
    width = max(len(sealed), len(mask))
    tampered = reply[:8] + bytes(a ^ b for a, b in zip(sealed.ljust(width, b"\0"), mask.ljust(width, b"\0"),
                                                       strict=True))
    if tampered != reply:
        state = (sender._cookie, sender._last_mac1)
        assert not sender.consume_reply(tampered, NOW)
        assert (sender._cookie, sender._last_mac1) == state
    assert sender.consume_reply(reply, NOW)
    assert not sender.consume_reply(reply, NOW), "one reply per message"

    sender.add_macs(message, NOW + C.SECOND)
    assert checker.check_mac1(bytes(message))
    assert checker.check_mac2(bytes(message), src, NOW + C.SECOND)
    other = bytes([src[0] ^ 1]) + src[1:]
    assert not checker.check_mac2(bytes(message), other, NOW + C.SECOND)
    assert not checker.check_mac2(bytes(message), src, NOW + C.COOKIE_SECRET_MAX_AGE), "the secret expired"


def seeds() -> list[bytes]:
    """Two real handshake messages as wgc's noise layer writes them."""
    from wgc import noise

    initiator = noise.StaticIdentity(_crypto.clamp(bytes(32)))
    responder = noise.StaticIdentity(_crypto.clamp(bytes(range(32))))
    hs = noise.Handshake(initiator, responder.public_key)
    initiation = bytes(noise.create_initiation(hs, 7, 1_700_000_000 * C.SECOND))
    found = noise.consume_initiation(responder, initiation, lambda key: noise.Handshake(responder, key), 0)
    response = bytes(noise.create_response(found, 9))
    return [b"\1" + initiation + b"\0" + bytes(6) + b"\0",
            b"\0" + response + b"\1" + bytes([0xfe, 0x80] + [0] * 14 + [0xca, 0x6c]) + b"\x20" + bytes(32)]


if __name__ == "__main__":
    common.main(one_input)
