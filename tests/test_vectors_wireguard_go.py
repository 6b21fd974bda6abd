"""wgc against whole messages wireguard-go made: initiations (one with mac2 from a cookie),
the cookie reply, the response and the first transport messages both ways, all from fixed
inputs recorded beside them (tests/vectors/wireguard-go-messages.json, made by
scripts/wggo-vectors).  wgc's own code, wgc.noise, wgc.cookie and the data plane's seal
and open, is given the same inputs and must make the same bytes, and must take
wireguard-go's messages: every key of both handshakes and sessions is then the same."""
import json
from pathlib import Path

import pytest

from wgc import noise
from wgc._dataplane import DataPlane
from wgc.constants import SECOND
from wgc.cookie import CookieChecker, CookieGenerator
from wgc.tai64n import timestamp

V = json.loads((Path(__file__).parent / "vectors" / "wireguard-go-messages.json").read_text())
INITIATION_1, INITIATION_2 = V["initiation_without_cookie"], V["initiation_with_cookie"]
COOKIE_REPLY, RESPONSE, TRANSPORT = V["cookie_reply"], V["response"], V["transport"]
ADDRESS_A, ADDRESS_B = ("127.0.0.1", 51001), ("127.0.0.2", 51002)   # the generator's layout
NOW = 1_000 * SECOND        # monotonic: no timer or cookie age comes into play
WALL = INITIATION_2["wall_ns"]


def b(field: dict, name: str) -> bytes:
    return bytes.fromhex(field[name])


INITIATOR_PUBLIC, RESPONDER_PUBLIC = b(V, "initiator_public_key"), b(V, "responder_public_key")
PSK = b(V, "preshared_key")


def draws(*values: bytes):
    """random(n) for a CookieChecker: values in order, each to a draw of its exact length."""
    queue = list(values)

    def random(n: int) -> bytes:
        assert queue and len(queue[0]) == n, f"a draw of {n} bytes wireguard-go did not make"
        return queue.pop(0)
    return random


class Initiator:
    """Device A's side in wgc: the handshake with B and the macs of A's messages to B."""

    def __init__(self):
        self.identity = noise.StaticIdentity(b(V, "initiator_private_key"))
        self.handshake = noise.Handshake(self.identity, RESPONDER_PUBLIC, PSK)
        self.macs = CookieGenerator(RESPONDER_PUBLIC)

    def initiate(self, vector: dict) -> bytes:
        message = noise.create_initiation(self.handshake, vector["sender_index"], vector["wall_ns"],
                                          ephemeral=b(vector, "ephemeral_random"))
        self.macs.add_macs(message, NOW)
        return bytes(message)

    def through_the_cookie(self) -> None:
        """The first initiation, answered by B's cookie reply; the second one then has mac2."""
        self.initiate(INITIATION_1)
        assert self.macs.consume_reply(b(COOKIE_REPLY, "message"), NOW)
        self.initiate(INITIATION_2)

    def session(self) -> noise.SessionKeys:
        self.through_the_cookie()
        find = {INITIATION_2["sender_index"]: self.handshake}.get
        assert noise.consume_response(self.identity, b(RESPONSE, "message"), find) is self.handshake
        return noise.begin_session(self.handshake)


class Responder:
    """Device B's side in wgc: the initiation with mac2 taken, the response made."""

    def __init__(self):
        self.identity = noise.StaticIdentity(b(V, "responder_private_key"))
        self.handshake = noise.Handshake(self.identity, INITIATOR_PUBLIC, PSK)

    def respond(self) -> bytes:
        find = {INITIATOR_PUBLIC: self.handshake}.get
        found = noise.consume_initiation(self.identity, b(INITIATION_2, "message"), find, NOW)
        assert found is self.handshake
        response = noise.create_response(self.handshake, RESPONSE["sender_index"],
                                         ephemeral=b(RESPONSE, "ephemeral_random"))
        CookieGenerator(INITIATOR_PUBLIC).add_macs(response, NOW)
        return bytes(response)

    def session(self) -> noise.SessionKeys:
        self.respond()
        return noise.begin_session(self.handshake)


# ---- handshake and cookie messages ------------------------------------------------------

@pytest.mark.parametrize("vector", [INITIATION_1, INITIATION_2], ids=["first", "second"])
def test_the_recorded_timestamp_is_wgcs_for_the_recorded_wall_clock(vector):
    assert timestamp(vector["wall_ns"]) == b(vector, "timestamp")


def test_an_initiation_is_byte_identical():
    assert Initiator().initiate(INITIATION_1) == b(INITIATION_1, "message")


def test_the_cookie_reply_is_byte_identical_and_its_cookie_checks_mac2():
    checker = CookieChecker(RESPONDER_PUBLIC, random=draws(b(COOKIE_REPLY, "secret_random"),
                                                           b(COOKIE_REPLY, "nonce_random")))
    source = b(COOKIE_REPLY, "source")
    first, second = b(INITIATION_1, "message"), b(INITIATION_2, "message")
    assert checker.check_mac1(first)
    assert not checker.check_mac2(first, source, NOW)
    assert checker.create_reply(first, source, NOW) == b(COOKIE_REPLY, "message")
    assert checker.check_mac1(second)
    assert checker.check_mac2(second, source, NOW)


def test_wireguard_gos_cookie_reply_is_decrypted_and_gives_the_same_mac2():
    initiator = Initiator()
    initiator.initiate(INITIATION_1)
    assert initiator.macs.consume_reply(b(COOKIE_REPLY, "message"), NOW)
    assert initiator.initiate(INITIATION_2) == b(INITIATION_2, "message")


def test_the_responder_takes_the_initiation_and_its_response_is_byte_identical():
    assert Responder().respond() == b(RESPONSE, "message")


def test_the_initiator_takes_the_response():
    assert CookieChecker(INITIATOR_PUBLIC).check_mac1(b(RESPONSE, "message"))
    keys = Initiator().session()
    assert (keys.is_initiator, keys.local_index, keys.remote_index) == (
        True, INITIATION_2["sender_index"], RESPONSE["sender_index"])


# ---- transport messages: the sessions' keys, through the data plane -----------------------

def data_plane(keys: noise.SessionKeys, peer_address, peer_packet: bytes) -> tuple[DataPlane, int]:
    """A sans-I/O data plane holding keys for its one peer, at peer_address and owning the
    source of peer_packet."""
    core = DataPlane(capture=True)
    core.set_mtu(TRANSPORT["mtu"])
    slot = core.add_peer()
    core.set_endpoint(slot, peer_address)
    core.allowed_ip_insert(peer_packet[12:16], 32, slot)
    core.install_keypair(slot, keys.send_key, keys.recv_key, keys.local_index, keys.remote_index,
                         keys.is_initiator, NOW, WALL)
    return core, slot


def taken(core: DataPlane) -> tuple[list[bytes], list[bytes]]:
    """(datagrams sent, packets written to the TUN) since the last call."""
    captured = core.take_captured()
    return ([data for kind, data, _ in captured if kind == "udp"],
            [data for kind, data, _ in captured if kind == "tun"])


def test_the_initiators_session_seals_and_opens_as_wireguard_gos():
    core, slot = data_plane(Initiator().session(), ADDRESS_B, b(TRANSPORT, "responder_packet"))
    core.send_keepalive(slot, NOW)
    assert taken(core) == ([b(TRANSPORT, "initiator_keepalive")], [])
    core.inject_tun(b(TRANSPORT, "initiator_packet"), NOW)
    assert taken(core) == ([b(TRANSPORT, "initiator_data")], [])
    core.inject_udp(b(TRANSPORT, "responder_data"), ADDRESS_B, NOW, WALL)
    assert taken(core) == ([], [b(TRANSPORT, "responder_packet")])


def test_the_responders_session_seals_and_opens_as_wireguard_gos():
    core, _ = data_plane(Responder().session(), ADDRESS_A, b(TRANSPORT, "initiator_packet"))
    core.inject_udp(b(TRANSPORT, "initiator_keepalive"), ADDRESS_A, NOW, WALL)
    core.inject_udp(b(TRANSPORT, "initiator_data"), ADDRESS_A, NOW, WALL)
    assert taken(core) == ([], [b(TRANSPORT, "initiator_packet")])
    core.inject_tun(b(TRANSPORT, "responder_packet"), NOW)
    assert taken(core) == ([b(TRANSPORT, "responder_data")], [])
