"""How a batch of encrypted datagrams becomes sendmmsg messages (wgc._udp.plan).

With UDP GSO, one message carries a run of datagrams to one destination that
the kernel cuts at the first one's size: so every datagram but the last must
have that size, the last may be shorter, and the run stays within the
kernel's limits (64 segments, which a batch of 64 cannot pass, and a
65507-byte IPv4 payload).  Without GSO every
datagram is its own message.  Each address family is planned on its own
(each has its own socket); the order within a family is kept.
"""
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgc._udp import Address, plan

A = ("192.0.2.1", 51820)
B = ("192.0.2.2", 51820)
A_OTHER_PORT = ("192.0.2.1", 51821)
V6 = ("2001:db8::1", 51820, 0, 0)
V6_SCOPED = ("fe80::1", 51820, 0, 3)
V6_OTHER_SCOPE = ("fe80::1", 51820, 0, 4)
V4, V6_FAMILY = socket.AF_INET, socket.AF_INET6


def reached_at(address, local):
    """address as a datagram from it arrives: with the local address it came to."""
    reached = Address(address)
    reached.local = local
    return reached


A_AT_1 = reached_at(A, ("192.0.2.100", 2))
A_AT_2 = reached_at(A, ("192.0.2.101", 2))
A_AT_1_OTHER_LINK = reached_at(A, ("192.0.2.100", 3))
V6_AT = reached_at(V6, ("2001:db8::100", 0))


@pytest.mark.parametrize("datagrams,family,messages", [
    pytest.param([], V4, [], id="empty"),
    pytest.param([(100, A)], V4, [[0]], id="one"),
    pytest.param([(1452, A)] * 4, V4, [[0, 1, 2, 3]], id="equal_run"),
    pytest.param([(1452, A)] * 3 + [(200, A)], V4, [[0, 1, 2, 3]], id="shorter_last_joins"),
    pytest.param([(1452, A), (200, A), (1452, A)], V4, [[0, 1], [2]], id="nothing_after_a_shorter"),
    pytest.param([(200, A), (1452, A)], V4, [[0], [1]], id="bigger_starts_anew"),
    pytest.param([(200, A), (200, A), (100, A), (100, A)], V4, [[0, 1, 2], [3]], id="short_run"),
    pytest.param([(1452, A), (1452, B), (1452, A)], V4, [[0], [1], [2]], id="other_destination"),
    pytest.param([(1452, A), (1452, A_OTHER_PORT)], V4, [[0], [1]], id="other_port"),
    pytest.param([(1452, V6_SCOPED), (1452, V6_OTHER_SCOPE)], V6_FAMILY, [[0], [1]], id="other_scope"),
    pytest.param([(1452, A), (1452, V6), (1452, A)], V4, [[0, 2]], id="other_family_skipped"),
    pytest.param([(1452, A_AT_1)] * 2 + [(1452, A_AT_2), (1452, A)], V4, [[0, 1], [2], [3]], id="other_source"),
    pytest.param([(1452, A_AT_1), (1452, A_AT_1_OTHER_LINK)], V4, [[0], [1]], id="other_source_link"),
    pytest.param([(1452, V6_AT), (1452, V6_AT), (1452, V6)], V6_FAMILY, [[0, 1], [2]], id="v6_source"),
    pytest.param([(1452, A), (1452, V6), (1452, A), (1452, V6)], V6_FAMILY, [[1, 3]], id="v6_alone"),
    pytest.param([(1000, A)] * 64, V4, [list(range(64))], id="a_full_batch_is_one_message"),
    pytest.param([(1452, A)] * 46, V4, [list(range(45)), [45]], id="at_most_65507_bytes"),
    pytest.param([(65507, A), (1, A)], V4, [[0], [1]], id="full_message_alone"),
])
def test_grouping(datagrams, family, messages):
    assert plan(datagrams, family) == messages


def test_without_gso_every_datagram_is_a_message():
    datagrams = [(1452, A)] * 3 + [(1452, V6), (100, A)]
    assert plan(datagrams, V4, gso=False) == [[0], [1], [2], [4]]
    assert plan(datagrams, V6_FAMILY, gso=False) == [[3]]


def test_batch_larger_than_a_sendmmsg_is_refused():
    with pytest.raises(ValueError):
        plan([(100, A)] * 65, V4)


sizes = st.sampled_from([1, 100, 1000, 1452, 1500, 30000])
batch = st.lists(st.tuples(sizes, st.sampled_from([A, B, V6])), max_size=64)


@given(batch, st.booleans())
def test_every_datagram_goes_once_in_order_within_the_kernels_rules(datagrams, gso):
    for family in (V4, V6_FAMILY):
        messages = plan(datagrams, family, gso)
        mine = [i for i, (_, address) in enumerate(datagrams) if (":" in address[0]) == (family == V6_FAMILY)]
        assert [i for m in messages for i in m] == mine
        for m in messages:
            lengths = [datagrams[i][0] for i in m]
            assert len({datagrams[i][1] for i in m}) == 1
            assert len(m) <= 64 and sum(lengths) <= 65507
            assert all(n == lengths[0] for n in lengths[:-1]) and lengths[-1] <= lengths[0]
            assert gso or len(m) == 1


# ---- the same grouping inside the data plane, on the fake clock ---------------------
# In sans-I/O mode the data plane's sendmmsg goes to memory, where each
# message is cut at its UDP_SEGMENT size as the kernel cuts it: a message
# grouped against the rules would reach the peer as garbage.

def test_staged_packets_of_mixed_sizes_go_as_gso_messages_and_all_arrive():
    from protocol_net import INNER_A, INNER_B, Pair, ipv4_packet

    pair = Pair()
    packets = [ipv4_packet(INNER_A, INNER_B, n) for n in (240, 240, 100, 240, 240)]
    for packet in packets:                      # no session yet: all are staged
        pair.a.device.core.inject_tun(packet, pair.clock.mono)
    before = pair.a.device.core.udp_messages
    pair.pump()
    transport = [d for d in pair.a.sent if d[0] == 4]
    assert [len(d) for d in transport] == [32 + -(-len(p) // 16) * 16 for p in packets]
    # The initiation went alone; the staged five in two messages.
    assert pair.a.device.core.udp_messages - before == 1 + 2
    assert pair.b.tun_received == packets
