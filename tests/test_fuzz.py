"""Fuzz targets for every parser of outside input, run as hypothesis tests.

Each feeds arbitrary bytes where the world can: UDP datagrams and TUN packets
into the data plane, netlink messages into the link watch, request lines
into the UAPI.  Nothing may raise, crash, or leak into the tunnel.
"""
import errno
import logging
import os
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol_net import Pair
from wgc import netlink, uapi
from wgc.control import kernel, rtnetlink
from wgc.device import Device
from wgc.errors import WireGuardError
from wgc.linkwatch import link_messages

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def established_pair() -> Pair:
    pair = Pair()
    pair.send(pair.a)
    pair.pump()
    return pair


PAIR = established_pair()


def transport_like(receiver: int):
    """Datagrams that reach the decryption step: type 4 and a live receiver index."""
    return st.binary(min_size=16, max_size=200).map(
        lambda tail: struct.pack("<II", 4, receiver) + tail[8:])


@FUZZ
@given(st.one_of(st.binary(max_size=300), transport_like(0)))
def test_udp_datagrams(data):
    b = PAIR.b
    receiver = next(d for d in PAIR.a.sent if d[0] == 4)[4:8]
    if data[:8] == struct.pack("<II", 4, 0):
        data = data[:4] + receiver + data[8:]
    before = (PAIR.peer_of_a.rx_bytes, PAIR.peer_of_a.endpoint)
    mono, wall = PAIR.clock()
    if data:
        b.device.core.inject_udp(data, ("127.0.0.9", 9), mono, wall)
    b.device.process_events()
    captured = b.device.core.take_captured()
    assert all(kind == "udp" and out[0] == 3 for kind, out, _ in captured)  # cookie replies at most
    assert (PAIR.peer_of_a.rx_bytes, PAIR.peer_of_a.endpoint) == before


@FUZZ
@given(st.binary(min_size=1, max_size=1600))
def test_tun_packets(packet):
    a = PAIR.a
    a.device.core.inject_tun(packet, PAIR.clock.mono)
    for kind, out, _ in a.device.core.take_captured():
        assert kind == "udp" and out[0] in (1, 4)


def test_the_pair_still_talks_after_fuzzing():
    packet = PAIR.send(PAIR.a)
    PAIR.pump()
    assert PAIR.b.tun_received[-1] == packet


def link_message(kind: int, index: int, flags: int, mtu: int | None) -> bytes:
    msg = netlink.Message(kind, 0, 0, 1 << 16, netlink.IFINFOMSG.pack(0, 0, index, flags, 0))
    msg.put(netlink.IFLA_IFNAME, b"wg0\0")
    if mtu is not None:
        msg.put(netlink.IFLA_MTU, struct.pack("=I", mtu))
    return msg.finish()


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([netlink.RTM_NEWLINK, netlink.RTM_DELLINK, 20]),
                          st.integers(-2**31, 2**31 - 1), st.integers(0, 2**32 - 1),
                          st.none() | st.integers(0, 2**32 - 1)), max_size=6),
       st.binary(max_size=200))
def test_link_messages(entries, tail):
    """Link messages come out as they went in (others skipped); whatever
    bytes follow, the parser stops or goes on, never raises."""
    data = b"".join(link_message(*entry) for entry in entries) + tail
    parsed = list(link_messages(data))
    expected = [(kind, index, bool(flags & netlink.IFF_RUNNING), mtu)
                for kind, index, flags, mtu in entries if kind != 20]
    assert parsed[:len(expected)] == expected


@FUZZ
@given(st.lists(st.one_of(
    st.text(max_size=80),
    st.sampled_from(["public_key=" + "11" * 32, "allowed_ip=10.0.0.0/8", "endpoint=[::1]:5",
                     "replace_peers=true", "remove=true", "listen_port=0", "private_key=" + "22" * 32]),
), max_size=12))
def test_uapi_set_lines(lines):
    device = Device("fuzz", None, logging.getLogger("fuzz"))
    try:
        result = uapi.handle_set(device, "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape"))
        assert isinstance(result, int) and result <= 0
        assert all("=" in line for line in uapi.handle_get(device).decode("ascii").splitlines())
    finally:
        device.close()


# -- regressions from the atheris targets (tests/fuzz/) ---------------------------------


def test_truncated_netlink_error_is_a_protocol_error():
    """An NLMSG_ERROR without its errno (fuzz_netlink): EPROTO, not struct.error."""
    truncated = struct.pack("=IHHII", 16, kernel.NLMSG_ERROR, 0, 5, 0)
    with pytest.raises(WireGuardError) as raised:
        kernel.parse_get_answer("wg0", [truncated], 5)
    assert raised.value.errno == errno.EPROTO


def test_address_that_does_not_fit_its_family_is_skipped():
    """An RTM_NEWADDR whose address has the wrong length for its family
    (fuzz_netlink) is no address: wg-quick would fail to print it."""
    def newaddr(family, address):
        body = rtnetlink.IFADDRMSG.pack(family, 24, 0, 0, 3) + struct.pack("=HH", 4 + len(address), rtnetlink.IFA_LOCAL)
        body += address + bytes(-len(address) % 4)
        return struct.pack("=IHHII", 16 + len(body), rtnetlink.RTM_NEWADDR, 0, 9, 0) + body

    good = newaddr(socket.AF_INET, bytes([10, 0, 0, 1]))
    wrong = newaddr(socket.AF_INET, bytes(5)) + newaddr(socket.AF_INET6, bytes(4))
    assert [str(a) for a in rtnetlink.parse_dump([good + wrong], 9, rtnetlink.RTM_NEWADDR)] == ["10.0.0.1/24"]


def test_netlink_error_of_int_min_is_a_protocol_error():
    """An NLMSG_ERROR carrying INT_MIN (fuzz_netlink): no errno is its opposite,
    and os.strerror() of 2**31 raised OverflowError."""
    body = struct.pack("=i", -(1 << 31)) + bytes(16)
    assert rtnetlink.parse_ack(0, body) == (errno.EPROTO, "RTNETLINK answers: " + os.strerror(errno.EPROTO))
    answer = struct.pack("=IHHII", 16 + len(body), kernel.NLMSG_ERROR, 0, 5, 0) + body
    with pytest.raises(WireGuardError) as raised:
        kernel.parse_get_answer("wg0", [answer], 5)
    assert raised.value.errno == errno.EPROTO and str(raised.value)
