"""MAC1, MAC2 and cookie replies on a fake clock."""
from wgc import _crypto
from wgc import constants as C
from wgc.cookie import CookieChecker, CookieGenerator

SECOND = C.SECOND
SRC = bytes([127, 0, 0, 1]) + (51820).to_bytes(2, "big")


def setup():
    public = _crypto.public_key(_crypto.clamp(_crypto.random(32)))
    return CookieChecker(public), CookieGenerator(public)


def message(size=C.INITIATION_SIZE):
    m = bytearray(_crypto.random(size))
    m[0:4] = bytes([1, 0, 0, 0])
    return m


def test_mac1():
    checker, generator = setup()
    m = message()
    generator.add_macs(m, 0)
    assert checker.check_mac1(bytes(m))
    m[20] ^= 1
    assert not checker.check_mac1(bytes(m))
    other = CookieChecker(_crypto.public_key(_crypto.clamp(_crypto.random(32))))
    m[20] ^= 1
    assert not other.check_mac1(bytes(m))


def test_cookie_round_trip_and_mac2():
    checker, generator = setup()
    now = 10 * SECOND
    m = message(C.RESPONSE_SIZE)
    generator.add_macs(m, now)
    assert m[-16:] == bytes(16)
    assert not checker.check_mac2(bytes(m), SRC, now)
    reply = checker.create_reply(bytes(m), SRC, now)
    assert len(reply) == C.COOKIE_REPLY_SIZE and reply[0] == 3
    assert reply[4:8] == m[4:8]  # answers the message's sender index
    assert generator.consume_reply(reply, now)
    assert not generator.consume_reply(reply, now)  # one reply per message
    m2 = message(C.RESPONSE_SIZE)
    generator.add_macs(m2, now)
    assert m2[-16:] != bytes(16)
    assert checker.check_mac2(bytes(m2), SRC, now)
    assert not checker.check_mac2(bytes(m2), SRC[:-1] + b"\x00", now)  # another port


def test_reply_to_another_message_is_rejected():
    checker, generator = setup()
    m = message()
    generator.add_macs(m, 0)
    other = message()
    other[-32:-16] = _crypto.random(16)
    assert not generator.consume_reply(checker.create_reply(bytes(other), SRC, 0), 0)


def setup_with_cookie(born=0):
    """A checker and a generator that took a cookie from it at time born."""
    checker, generator = setup()
    m = message()
    generator.add_macs(m, born)
    assert generator.consume_reply(checker.create_reply(bytes(m), SRC, born), born)
    return checker, generator


# Both ages are counted from the cookie's (the secret's) birth, not from time 0.
BORN = 1000 * SECOND


def test_cookie_is_used_for_115_seconds():
    _, generator = setup_with_cookie(BORN)
    m = message()
    generator.add_macs(m, BORN + 115 * SECOND - 1)
    assert m[-16:] != bytes(16)
    generator.add_macs(m, BORN + 115 * SECOND)
    assert m[-16:] == bytes(16)


def test_secret_rotates_after_120_seconds():
    checker, generator = setup_with_cookie(BORN)
    m = message()
    generator.add_macs(m, BORN + 60 * SECOND)
    assert checker.check_mac2(bytes(m), SRC, BORN + 120 * SECOND - 1)
    assert not checker.check_mac2(bytes(m), SRC, BORN + 120 * SECOND)
    # A new reply makes a new secret; the old cookie no longer fits.
    checker.create_reply(bytes(m), SRC, BORN + 120 * SECOND)
    assert not checker.check_mac2(bytes(m), SRC, BORN + 120 * SECOND)


def test_each_checker_draws_its_own_secret():
    """The cookie secret is random from the first reply on: a cookie from one checker is worth
    nothing at another of the same key, even in the first seconds (no fixed or empty secret)."""
    public = _crypto.public_key(_crypto.clamp(_crypto.random(32)))
    one, other, generator = CookieChecker(public), CookieChecker(public), CookieGenerator(public)
    m = message()
    generator.add_macs(m, SECOND)
    other.create_reply(bytes(m), SRC, SECOND)
    assert generator.consume_reply(one.create_reply(bytes(m), SRC, SECOND), SECOND)
    generator.add_macs(m, SECOND)
    assert one.check_mac2(bytes(m), SRC, SECOND)
    assert not other.check_mac2(bytes(m), SRC, SECOND)


def test_a_reply_of_the_wrong_size_is_refused():
    checker, generator = setup()
    m = message()
    generator.add_macs(m, 0)
    reply = checker.create_reply(bytes(m), SRC, 0)
    assert not generator.consume_reply(reply[:-1], 0)
    assert not generator.consume_reply(reply + b"\0", 0)
    assert generator.consume_reply(reply, 0)
