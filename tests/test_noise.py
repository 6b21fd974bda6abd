"""The WireGuard handshake messages between two identities, in memory."""
import hashlib
import hmac

import pytest

from wgc import _crypto, noise
from wgc import constants as C

SECOND = C.SECOND
WALL = 1_700_000_000 * SECOND


def identity():
    return noise.StaticIdentity(_crypto.clamp(_crypto.random(32)))


class Sides:
    def __init__(self, psk_i=bytes(32), psk_r=bytes(32)):
        self.i, self.r = identity(), identity()
        self.hs_i = noise.Handshake(self.i, self.r.public_key, psk_i)   # initiator's view of r
        self.hs_r = noise.Handshake(self.r, self.i.public_key, psk_r)   # responder's view of i
        self.now = 100 * SECOND

    def find_peer(self, key):
        return self.hs_r if key == self.i.public_key else None

    def by_index(self, index):
        return self.hs_i if index == self.hs_i.local_index else None

    def initiation(self, wall=WALL):
        return noise.create_initiation(self.hs_i, 1111, wall)

    def consume_initiation(self, message):
        return noise.consume_initiation(self.r, bytes(message), self.find_peer, self.now)


@pytest.mark.parametrize("psk", [bytes(32), bytes(range(32))], ids=["no-psk", "psk"])
def test_full_handshake_and_a_transport_packet(psk):
    s = Sides(psk, psk)
    message = s.initiation()
    assert len(message) == C.INITIATION_SIZE and message[0] == 1
    assert s.consume_initiation(message) is s.hs_r
    response = noise.create_response(s.hs_r, 2222)
    assert len(response) == C.RESPONSE_SIZE and noise.sender_index(response) == 2222
    assert noise.consume_response(s.i, bytes(response), s.by_index) is s.hs_i
    keys_i, keys_r = noise.begin_session(s.hs_i), noise.begin_session(s.hs_r)
    assert keys_i.is_initiator and not keys_r.is_initiator
    assert keys_i.send_key == keys_r.recv_key and keys_i.recv_key == keys_r.send_key
    assert (keys_i.local_index, keys_i.remote_index) == (1111, 2222)
    assert (keys_r.local_index, keys_r.remote_index) == (2222, 1111)
    sealed = _crypto.seal(keys_i.send_key, 0, b"hello")
    assert _crypto.open(keys_r.recv_key, 0, sealed) == b"hello"
    with pytest.raises(ValueError):
        noise.begin_session(s.hs_i)


def test_psk_mismatch_fails_at_the_response():
    s = Sides(bytes(32), bytes(range(32)))
    assert s.consume_initiation(s.initiation()) is s.hs_r
    response = noise.create_response(s.hs_r, 2)
    assert noise.consume_response(s.i, bytes(response), s.by_index) is None


def test_replayed_or_older_timestamps_are_rejected():
    s = Sides()
    first = s.initiation(WALL)
    assert s.consume_initiation(first)
    s.now += SECOND
    assert s.consume_initiation(first) is None                # same timestamp
    assert s.consume_initiation(s.initiation(WALL - SECOND)) is None
    assert s.consume_initiation(s.initiation(WALL + SECOND))


def test_initiations_closer_than_20_ms_are_a_flood():
    s = Sides()
    assert s.consume_initiation(s.initiation(WALL))
    s.now += C.HANDSHAKE_INITIATION_RATE - 1
    assert s.consume_initiation(s.initiation(WALL + SECOND)) is None
    s.now += 1
    assert s.consume_initiation(s.initiation(WALL + 2 * SECOND))


def test_unknown_peer_is_rejected():
    s = Sides()
    stranger = noise.Handshake(identity(), s.r.public_key)
    assert noise.consume_initiation(s.r, bytes(noise.create_initiation(stranger, 1, WALL)),
                                    s.find_peer, s.now) is None


def test_any_flipped_bit_is_rejected():
    s = Sides()
    message = s.initiation()
    # The ephemeral key, the encrypted static key and the encrypted timestamp
    # (the sender index is covered only by mac1, which the cookie layer checks).
    for i in range(8, 116):
        tampered = bytearray(message)
        tampered[i] ^= 1
        assert s.consume_initiation(tampered) is None, i
    assert s.consume_initiation(message)
    response = noise.create_response(s.hs_r, 2)
    for i in range(12, 60):
        tampered = bytearray(response)
        tampered[i] ^= 1
        assert noise.consume_response(s.i, bytes(tampered), s.by_index) is None, i


def test_low_order_ephemeral_is_rejected():
    s = Sides()
    message = s.initiation()
    message[8:40] = bytes(32)  # the all-zero point: every DH with it is zero
    assert s.consume_initiation(message) is None


def test_wrong_sizes_and_types():
    s = Sides()
    message = s.initiation()
    assert s.consume_initiation(message[:-1]) is None
    assert s.consume_initiation(bytes([2]) + message[1:]) is None


def test_response_only_for_an_initiation_in_flight():
    s = Sides()
    s.consume_initiation(s.initiation())
    response = noise.create_response(s.hs_r, 2)
    s.hs_i.clear()
    assert noise.consume_response(s.i, bytes(response), s.by_index) is None
    with pytest.raises(ValueError, match=r"^no initiation to respond to$"):
        noise.create_response(noise.Handshake(s.r, s.i.public_key), 3)


def test_identity_refresh_and_low_order_peer_keys():
    s = Sides()
    assert s.hs_i.can_handshake()
    s.hs_i.refresh_identity(None)
    assert not s.hs_i.can_handshake()
    with pytest.raises(ValueError, match=r"^no handshake can be made with this peer \(see can_handshake\)$"):
        s.initiation()
    assert not noise.Handshake(s.i, bytes(32)).can_handshake()  # DH with it is all zeros
    s.hs_i.refresh_identity(s.i)
    assert s.consume_initiation(s.initiation())


@pytest.mark.parametrize("key_length", [0, 32, 64, 65, 200])
def test_hmac_is_rfc_2104_over_blake2s(key_length):
    """The standard library's HMAC as the reference, keys longer than the block included."""
    key, data = _crypto.random(key_length), _crypto.random(100)
    assert noise.hmac(key, data) == hmac.new(key, data, hashlib.blake2s).digest()


def test_indices_are_unsigned():
    message = bytes(4) + (0xFFFFFFFF).to_bytes(4, "little") + bytes(C.INITIATION_SIZE - 8)
    assert noise.sender_index(message) == noise.receiver_index(message) == 0xFFFFFFFF
