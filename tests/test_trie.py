"""Allowed IPs: table cases and a brute-force longest-prefix model."""
import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgc._trie import AllowedIPs


def v4(text):
    return ipaddress.IPv4Address(text).packed


def v6(text):
    return ipaddress.IPv6Address(text).packed


def net(text):
    n = ipaddress.ip_network(text, strict=False)
    return n.network_address.packed, n.prefixlen


def test_longest_prefix_wins():
    t = AllowedIPs()
    t.insert(*net("10.0.0.0/8"), 1)
    t.insert(*net("10.1.0.0/16"), 2)
    t.insert(*net("10.1.2.0/24"), 3)
    t.insert(*net("0.0.0.0/0"), 4)
    assert t.lookup(v4("10.1.2.3")) == 3
    assert t.lookup(v4("10.1.3.3")) == 2
    assert t.lookup(v4("10.2.0.1")) == 1
    assert t.lookup(v4("11.0.0.1")) == 4
    assert t.lookup(v6("::1")) == -1


def test_host_bits_are_masked_and_families_are_separate():
    t = AllowedIPs()
    t.insert(v4("192.168.4.77"), 24, 7)
    t.insert(v6("2001:db8::1"), 32, 8)
    assert t.entries(7) == [(v4("192.168.4.0"), 24)]
    assert t.lookup(v4("192.168.4.1")) == 7
    assert t.lookup(v6("2001:db8:ffff::")) == 8
    assert t.lookup(v6("2001:db9::")) == -1


def test_a_prefix_moves_between_peers_and_to_the_end_of_the_list():
    t = AllowedIPs()
    t.insert(*net("10.0.0.0/24"), 1)
    t.insert(*net("10.0.1.0/24"), 1)
    t.insert(*net("10.0.0.0/24"), 2)
    assert t.entries(1) == [net("10.0.1.0/24")]
    assert t.entries(2) == [net("10.0.0.0/24")]
    t.insert(*net("10.0.1.0/24"), 1)  # again, same peer
    t.insert(*net("10.0.2.0/24"), 1)
    t.insert(*net("10.0.1.0/24"), 1)
    assert t.entries(1) == [net("10.0.2.0/24"), net("10.0.1.0/24")]
    assert len(t) == 3


def test_remove_only_for_the_owner():
    t = AllowedIPs()
    t.insert(*net("fd00::/64"), 1)
    assert not t.remove(*net("fd00::/64"), 2)
    assert not t.remove(*net("fd00::/63"), 1)
    assert t.remove(*net("fd00::1/64"), 1)
    assert t.lookup(v6("fd00::1")) == -1 and len(t) == 0


@pytest.mark.parametrize("addr,cidr,peer", [(b"\x00" * 5, 8, 1), (bytes(4), 33, 1), (bytes(16), 129, 1),
                                            (bytes(4), -1, 1), (bytes(4), 8, -1)])
def test_bad_arguments(addr, cidr, peer):
    with pytest.raises(ValueError):
        AllowedIPs().insert(addr, cidr, peer)


def test_full_length_and_zero_length_prefixes():
    t = AllowedIPs()
    t.insert(v6("::"), 0, 1)
    t.insert(v6("fd00::1"), 128, 2)
    assert t.lookup(v6("fd00::1")) == 2
    assert t.lookup(v6("fd00::2")) == 1
    assert t.remove(v6("::"), 0, 1)
    assert t.lookup(v6("fd00::2")) == -1 and t.lookup(v6("fd00::1")) == 2


def test_hundred_thousand_prefixes_then_remove_peer():
    t = AllowedIPs()
    rng = random.Random(1)
    distinct = set()
    for _ in range(100_000):
        value, cidr = rng.getrandbits(32), rng.randint(8, 32)
        t.insert(value.to_bytes(4, "big"), cidr, 5)
        distinct.add((value >> (32 - cidr), cidr))
    assert len(t) == len(distinct)
    assert len(t.entries(5)) == len(t)
    t.remove_peer(5)
    assert len(t) == 0 and t.entries(5) == []
    assert t.lookup(v4("1.2.3.4")) == -1


def test_a_thousand_peers_each_with_its_own_list():
    """Peer ids grow the per-peer lists many times over; each list keeps only its own peer's."""
    t = AllowedIPs()
    for peer in range(1000):
        t.insert(peer.to_bytes(4, "big"), 32, peer)
        t.insert(bytes(12) + peer.to_bytes(4, "big"), 128, peer)
    assert all(t.entries(peer) == [(peer.to_bytes(4, "big"), 32), (bytes(12) + peer.to_bytes(4, "big"), 128)]
               for peer in range(1000))
    for peer in range(0, 1000, 2):
        t.remove_peer(peer)
    assert len(t) == 1000
    assert [t.lookup(peer.to_bytes(4, "big")) for peer in range(6)] == [-1, 1, -1, 3, -1, 5]
    assert t.entries(998) == [] and t.entries(1000) == []


class Model:
    def __init__(self):
        self.table = {}   # (bits, masked int, cidr) -> peer
        self.order = []   # [(bits, masked int, cidr)] insertion order

    @staticmethod
    def key(addr, cidr):
        bits = len(addr) * 8
        value = int.from_bytes(addr, "big") >> (bits - cidr) << (bits - cidr) if cidr else 0
        return bits, value, cidr

    def insert(self, addr, cidr, peer):
        k = self.key(addr, cidr)
        if k in self.order:
            self.order.remove(k)
        self.order.append(k)
        self.table[k] = peer

    def remove(self, addr, cidr, peer):
        k = self.key(addr, cidr)
        if self.table.get(k) != peer:
            return False
        del self.table[k]
        self.order.remove(k)
        return True

    def remove_peer(self, peer):
        for k in [k for k, p in self.table.items() if p == peer]:
            del self.table[k]
            self.order.remove(k)

    def lookup(self, addr):
        bits = len(addr) * 8
        value = int.from_bytes(addr, "big")
        for cidr in range(bits, -1, -1):
            k = (bits, value >> (bits - cidr) << (bits - cidr) if cidr else 0, cidr)
            if k in self.table:
                return self.table[k]
        return -1

    def entries(self, peer):
        return [((v).to_bytes(b // 8, "big"), c) for (b, v, c) in self.order if self.table[(b, v, c)] == peer]


# Addresses drawn from a small space so that prefixes overlap often.
def addresses(size):
    return st.builds(lambda hi, lo: (bytes([10, hi]) + bytes(size - 3) + bytes([lo])) if size == 16
                     else bytes([10, hi, 0, lo]), st.integers(0, 3), st.integers(0, 255))


def operations(size):
    bits = size * 8
    prefix = st.tuples(addresses(size), st.integers(0, bits))
    peer = st.integers(0, 3)
    return st.lists(st.one_of(
        st.tuples(st.just("insert"), prefix, peer),
        st.tuples(st.just("insert"), prefix, peer),
        st.tuples(st.just("remove"), prefix, peer),
        st.tuples(st.just("remove_peer"), prefix, peer),
    ), max_size=60)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([4, 16]).flatmap(lambda size: st.tuples(st.just(size), operations(size),
                                                                 st.lists(addresses(size), max_size=20))))
def test_matches_brute_force_model(case):
    _, ops, probes = case
    t, m = AllowedIPs(), Model()
    for op, (addr, cidr), peer in ops:
        if op == "insert":
            t.insert(addr, cidr, peer)
            m.insert(addr, cidr, peer)
        elif op == "remove":
            assert t.remove(addr, cidr, peer) == m.remove(addr, cidr, peer)
        else:
            t.remove_peer(peer)
            m.remove_peer(peer)
        assert len(t) == len(m.table)
    for addr in probes + [addr for _, (addr, _), _ in ops]:
        assert t.lookup(addr) == m.lookup(addr)
    for peer in range(4):
        assert t.entries(peer) == m.entries(peer)
