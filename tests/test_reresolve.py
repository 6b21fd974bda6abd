"""Endpoints given by name (wgc.reresolve): when a device looks a name up
again and what it does with the answer, on a fake clock with a fake resolver;
the clients that tell a device the names.  test_reresolve_live.py runs it
against a real DNS server in namespaces."""
import logging
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol_net import ADDRESS_B, SECOND, Pair
from wgc import reresolve
from wgc.control.config import Parser, endpoint_name
from wgc.control.model import DeviceConfig, Endpoint, PeerConfig
from wgc.control.userspace import build_names, build_set

NAME = ("b.test", ADDRESS_B[1])


class FakeResolver:
    """Answers each lookup with `answer` (or raises it), counting the calls."""

    def __init__(self, pair, answer):
        self.pair = pair
        self.answer = answer
        self.calls: list[tuple[str, int]] = []
        self.takes = 0  # ns the lookup lasts on the fake clock

    def __call__(self, host, port):
        self.calls.append((host, port))
        self.pair.clock.advance(self.takes)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


@pytest.fixture
def pair():
    pair = Pair()
    yield pair
    for side in (pair.a, pair.b):
        side.device.close()


def watch(pair, answer, start=lambda work: work()):
    """a's device with a fake resolver whose lookups run at once; the name on its peer b."""
    resolver = FakeResolver(pair, answer)
    pair.a.device.reresolver = reresolve.Reresolver(pair.a.device, resolve=resolver, start=start)
    pair.peer_of_b.set_endpoint_name(NAME)
    return resolver


def handshake(pair):
    pair.send(pair.a)
    pair.pump()
    assert pair.peer_of_b.last_handshake != (0, 0)


def test_a_recent_handshake_needs_no_lookup(pair):
    handshake(pair)
    resolver = watch(pair, [("192.0.2.9", NAME[1])])
    for _ in range(4):
        pair.advance(reresolve.INTERVAL)
    assert resolver.calls == []
    assert pair.peer_of_b.endpoint == ADDRESS_B


def test_a_quiet_peer_is_looked_up_and_follows_a_new_address(pair, caplog):
    caplog.set_level(logging.DEBUG)
    handshake(pair)
    resolver = watch(pair, [ADDRESS_B])
    elapsed = 0
    while elapsed <= reresolve.QUIET_AFTER:
        pair.advance(reresolve.INTERVAL)
        elapsed += reresolve.INTERVAL
    assert resolver.calls == [NAME]
    assert pair.peer_of_b.endpoint == ADDRESS_B  # the same address: nothing changes
    assert "resolves to" not in caplog.text
    resolver.answer = [("2001:db8::7", 4242), ("192.0.2.9", 4242)]
    pair.advance(reresolve.INTERVAL)
    assert resolver.calls == [NAME, NAME]
    assert pair.peer_of_b.endpoint == ("2001:db8::7", 4242)
    assert "Endpoint name b.test now resolves to [2001:db8::7]:4242" in caplog.text
    # An answer that still holds the endpoint keeps it, wherever it stands in the answer.
    resolver.answer = [("192.0.2.9", 4242), ("2001:db8::7", 4242)]
    pair.advance(reresolve.INTERVAL)
    assert pair.peer_of_b.endpoint == ("2001:db8::7", 4242)


def test_a_peer_without_a_handshake_is_looked_up_at_the_first_interval(pair):
    resolver = watch(pair, [("192.0.2.9", NAME[1])])
    pair.advance(reresolve.INTERVAL - 1)
    assert resolver.calls == []
    pair.advance(1)
    assert resolver.calls == [NAME]
    assert pair.peer_of_b.endpoint == ("192.0.2.9", NAME[1])


def test_no_name_no_lookup_and_no_deadline(pair):
    resolver = watch(pair, [("192.0.2.9", NAME[1])])
    pair.peer_of_b.set_endpoint("192.0.2.1", 1)
    pair.peer_of_b.set_endpoint_name(None)
    pair.advance(reresolve.INTERVAL)
    pair.advance(reresolve.INTERVAL)
    assert resolver.calls == []
    assert pair.a.device.reresolver.deadline() is None


def test_a_failed_lookup_is_logged_and_tried_again(pair, caplog):
    caplog.set_level(logging.DEBUG)
    resolver = watch(pair, socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"))
    pair.advance(reresolve.INTERVAL)
    assert "Endpoint name b.test: lookup failed (Temporary failure in name resolution)" in caplog.text
    assert pair.peer_of_b.endpoint == ADDRESS_B
    resolver.answer = [("192.0.2.9", NAME[1])]
    pair.advance(reresolve.INTERVAL)
    assert resolver.calls == [NAME, NAME]
    assert pair.peer_of_b.endpoint == ("192.0.2.9", NAME[1])


def test_a_resolver_that_breaks_does_not_stop_the_loop(pair, caplog):
    resolver = watch(pair, ZeroDivisionError())
    pair.advance(reresolve.INTERVAL)
    pair.advance(reresolve.INTERVAL)
    assert len(resolver.calls) == 2
    assert "unexpected ZeroDivisionError" in caplog.text


def test_a_late_answer_is_ignored(pair, caplog):
    caplog.set_level(logging.DEBUG)
    resolver = watch(pair, [("192.0.2.9", NAME[1])])
    resolver.takes = reresolve.LOOKUP_TIMEOUT + 1
    pair.advance(reresolve.INTERVAL)
    assert resolver.calls == [NAME]
    assert pair.peer_of_b.endpoint == ADDRESS_B
    assert "answer came too late" in caplog.text


def test_one_lookup_per_peer_and_a_few_per_device_at_once(pair):
    started = []
    resolver = watch(pair, [("192.0.2.9", NAME[1])], start=started.append)
    for index in range(reresolve.MAX_LOOKUPS + 2):
        peer = pair.a.device.add_peer(bytes([index + 1]) * 32)
        peer.set_endpoint_name((f"p{index}.test", 1))
    pair.advance(reresolve.INTERVAL)
    pair.advance(reresolve.INTERVAL)  # none has ended: nothing is queued twice
    assert len(started) == reresolve.MAX_LOOKUPS
    started[0]()  # one thread drains the queue: each peer once
    assert len(resolver.calls) == reresolve.MAX_LOOKUPS + 3
    assert len(set(resolver.calls)) == len(resolver.calls)
    pair.advance(reresolve.INTERVAL)
    # The three threads that have not ended yet still count: one more may start.
    assert len(started) == reresolve.MAX_LOOKUPS + 1


def test_the_test_knob(monkeypatch):
    monkeypatch.setenv(reresolve.ENV_TEST_TIMES, "1.5,3")
    assert reresolve.test_times() == (int(1.5 * SECOND), 3 * SECOND)
    for text in ("", "1", "a,b", "1,2,3"):
        monkeypatch.setenv(reresolve.ENV_TEST_TIMES, text)
        assert reresolve.test_times() == (reresolve.INTERVAL, reresolve.QUIET_AFTER)


def test_quiet_after_is_reresolve_dns_shs_threshold():
    assert reresolve.QUIET_AFTER == 135 * SECOND


# -- the clients ------------------------------------------------------------------------


@pytest.mark.parametrize("value, name", [
    ("localhost:51820", "localhost:51820"),
    ("[localhost]:51820", "localhost:51820"),
    ("127.0.0.1:51820", None),
    ("127.1:51820", None),
    ("[::1]:51820", None),
])
def test_the_parser_keeps_the_name_an_endpoint_was_resolved_from(value, name):
    errors = []
    endpoint = Parser(errors.append).endpoint(value)
    assert endpoint is not None and not errors
    assert endpoint_name(value, endpoint) == name


# Texts near the line between names and addresses: labels of letters, digits and
# hyphens, numeric labels, colons, trailing dots, and anything at all.
host_texts = st.one_of(
    st.lists(st.sampled_from(["a", "b7", "x-y", "1", "09", "0x7f", "-a", "", "\u00e9", "A1"]), min_size=1, max_size=4)
    .map(".".join).flatmap(lambda host: st.sampled_from([host, host + ".", host + "..", "::" + host, host + ":1"])),
    st.text(max_size=12),
).filter(lambda host: not set(host) & set("[]\0"))  # what stays inside [...] as C reads it


@given(host_texts)
def test_a_host_is_a_name_exactly_when_reresolves_pattern_says(host):
    """endpoint_name looks at reresolve's pattern only for what may be a name (to spare
    `wg set` its imports): it keeps the same names."""
    endpoint = Endpoint("127.0.0.1", 5)
    expected = f"{host}:5" if reresolve.is_host_name(host) else None
    assert endpoint_name(f"[{host}]:5", endpoint) == expected


def test_the_name_goes_in_a_second_request_for_existing_peers_only():
    keys = [bytes([n]) * 32 for n in (1, 2, 3)]
    config = DeviceConfig(peers=[
        PeerConfig(public_key=keys[0], endpoint=Endpoint("127.0.0.1", 5), endpoint_name="localhost:5"),
        PeerConfig(public_key=keys[1], endpoint=Endpoint("127.0.0.1", 6)),
        PeerConfig(public_key=keys[2], remove=True, endpoint_name="localhost:7"),
    ])
    assert b"endpoint_name" not in build_set(config, replace_peers=True)  # what wg(8) sends, unchanged
    assert build_names(config) == (f"set=1\npublic_key={keys[0].hex()}\nupdate_only=true\n"
                                   "endpoint_name=localhost:5\n\n").encode()
    assert build_names(DeviceConfig(peers=config.peers[1:])) is None


def test_no_thread_to_be_had_is_tried_again_next_interval(pair):
    refusals = [RuntimeError("can't start new thread")] * reresolve.MAX_LOOKUPS

    def start(work):
        if refusals:
            raise refusals.pop()
        work()

    resolver = watch(pair, [("192.0.2.9", NAME[1])], start=start)
    for _ in range(reresolve.MAX_LOOKUPS):  # as many refusals as threads may run: none leaks
        pair.advance(reresolve.INTERVAL)
    assert resolver.calls == []
    pair.advance(reresolve.INTERVAL)
    assert resolver.calls == [NAME]
    assert pair.peer_of_b.endpoint == ("192.0.2.9", NAME[1])
