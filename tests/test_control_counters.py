"""A wgc daemon's counters through wgc.control, made to move by real traffic.

Two wgc daemons, each in a namespace of its own and joined by a veth cable
(tests/wgnet.py), and a wireguard-go daemon beside the left one.  Each test
makes an event happen for real (a ping, a handshake, a datagram of garbage
at the daemon's port) and reads the figure with control.counters(), which
asks the daemon with wgc's own UAPI operation; wireguard-go and a name with
no device at all get a clear error.  tests/test_counters.py makes every
figure move on sans-I/O devices; here the path from the daemon to the API is
what is tested, and at the end, how an answer is read.
"""
import base64
import errno
import os
import socket
import struct

import pytest

from netns import Namespaces, unique_name, wait_for
from wgc import control, counters
from wgc.control import WireGuardError
from wgc.control.userspace import parse_counters
from wgnet import have, start_daemon, tunnel

TRANSPORT = 4


@pytest.fixture(scope="module")
def net():
    """(left, right, the name of a wireguard-go device)."""
    with Namespaces() as make:
        left, right = tunnel(make, "wgc", "wgc")
        go = None
        if have("wireguard-go"):
            go = unique_name("wgcgo")
            start_daemon(left.ns, "wireguard-go", go)
        yield left, right, go


def key(end) -> bytes:
    return base64.b64decode(end.public_key)


def send_udp(end, datagram: bytes, to) -> None:
    """datagram from inside end's namespace to (host, port)."""
    def send():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(datagram, to)
    end.ns.inside(send)


@pytest.mark.netns
def test_every_figure_of_the_catalogue_is_read(net):
    left, right, _ = net
    read = control.counters(left.iface)
    assert read.name == left.iface
    assert list(read.values) == [figure.name for figure in counters.DEVICE]
    assert list(read.peers) == [key(right)]
    assert list(read.peers[key(right)]) == [figure.name for figure in counters.PEER]
    for figure in counters.DEVICE:
        assert isinstance(read.values[figure.name], int if figure.kind == "counter" else float)


@pytest.mark.netns
def test_a_handshake(net):
    left, right, _ = net
    left.ping(right.inner4, count=2)
    initiator = control.counters(left.iface).peers[key(right)]
    responder = control.counters(right.iface).peers[key(left)]
    assert initiator["handshake_initiations_sent_total"] >= 1
    assert initiator["handshake_responses_sent_total"] == 0
    assert initiator["handshakes_completed_total"] >= 1
    assert responder["handshake_responses_sent_total"] >= 1
    assert responder["handshake_initiations_sent_total"] == 0
    assert responder["handshakes_completed_total"] >= 1
    # The time from the initiation to its response, on the cable and in two daemons.
    assert isinstance(initiator["handshake_rtt_seconds"], float)
    assert 0 < initiator["handshake_rtt_seconds"] < 5
    assert responder["handshake_rtt_seconds"] == 0


@pytest.mark.netns
def test_no_route(net):
    left, _, _ = net
    before = control.counters(left.iface).values["no_route_total"]
    left.ping("10.77.0.99", count=3, interval=0.1, check=False)  # on the interface's subnet, no peer's
    # At least the pings (the interface may also send IPv6 multicast no peer holds).
    assert control.counters(left.iface).values["no_route_total"] - before >= 3


@pytest.mark.netns
def test_malformed_packets(net):
    left, right, _ = net
    before = control.counters(right.iface).values
    for datagram in (b"garbage", bytes([TRANSPORT]) + bytes(20)):
        send_udp(left, datagram, (right.outer, right.port))
    after = wait_for_change(right.iface, "malformed_packets_total", before)
    assert after["malformed_packets_total"] - before["malformed_packets_total"] == 2
    assert after["unknown_receiver_index_total"] == before["unknown_receiver_index_total"]


@pytest.mark.netns
def test_unknown_receiver_index(net):
    left, right, _ = net
    before = control.counters(right.iface).values
    # A transport message of the right size, to a receiver index no session
    # holds (one in 2^32 that a random one does).
    forged = struct.pack("<I4sQ", TRANSPORT, os.urandom(4), 0) + os.urandom(32)
    send_udp(left, forged, (right.outer, right.port))
    after = wait_for_change(right.iface, "unknown_receiver_index_total", before)
    assert after["unknown_receiver_index_total"] - before["unknown_receiver_index_total"] == 1
    assert after["malformed_packets_total"] == before["malformed_packets_total"]


def wait_for_change(iface: str, name: str, before: dict) -> dict:
    """The device's figures once name moved from before (a datagram takes a moment to be read)."""
    found: list[dict] = []

    def moved():
        found[:] = [control.counters(iface).values]
        return found[0][name] != before[name]

    wait_for(moved, what=f"{name} to move")
    return found[0]


@pytest.mark.netns
def test_wireguard_go_does_not_report_counters(net):
    _, _, go = net
    if go is None:
        pytest.skip("wireguard-go is not installed")
    with pytest.raises(WireGuardError) as raised:
        control.counters(go)
    assert raised.value.errno == errno.EOPNOTSUPP
    assert str(raised.value) == f"{go} does not report counters: not a wgc daemon (Operation not supported)"
    control.device(go)  # the connection closed on the unknown operation; the daemon still answers


@pytest.mark.netns
def test_no_device_is_the_error_device_gives(net):
    """No socket and no kernel link: the kernel's answer (ENODEV, or
    EPROTONOSUPPORT from a kernel without WireGuard), as for control.device()."""
    name = unique_name("wgnone")
    with pytest.raises(WireGuardError) as from_device:
        control.device(name)
    with pytest.raises(WireGuardError) as raised:
        control.counters(name)
    assert raised.value.errno == from_device.value.errno != errno.EOPNOTSUPP


# -- reading an answer ------------------------------------------------------------------

K1 = "11" * 32


def test_an_answer_is_read_whatever_figures_it_holds():
    """Figures in the daemon's order, ones this client does not know (a newer
    daemon) kept: an int when all digits, else a float."""
    answer = f"a_total=1\nnew_total=2\npublic_key={K1}\nrtt_seconds=1e-05\nb_total=0\nerrno=0\n\n".encode()
    read = parse_counters("x", answer)
    assert read.values == {"a_total": 1, "new_total": 2}
    assert read.peers == {bytes.fromhex(K1): {"rtt_seconds": 1e-05, "b_total": 0}}
    assert isinstance(read.values["a_total"], int)


@pytest.mark.parametrize("answer, code", [
    (b"a_total=x\nerrno=0\n\n", errno.EPROTO),
    (b"a_total\nerrno=0\n\n", errno.EPROTO),
    (b"public_key=zz\nerrno=0\n\n", errno.EPROTO),
    (b"a_total=1\n", errno.EPROTO),
    (b"a_total=1\n\nerrno=0\n\n", errno.EPROTO),
    (b"errno=-55\n\n", 55),
])
def test_a_bad_or_refused_answer(answer, code):
    with pytest.raises(WireGuardError) as raised:
        parse_counters("x", answer)
    assert raised.value.errno == code
