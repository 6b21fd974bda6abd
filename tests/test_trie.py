"""Allowed IPs: table cases, a brute-force longest-prefix model, memory, and the UAPI text."""
import ipaddress
import os
import random
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wgc._trie
from wgc._trie import AllowedIPs
from wgc.uapi import format_addr


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


def prefixes():
    """Either family, so that one peer's list interleaves them."""
    return st.one_of(*(st.tuples(addresses(size), st.integers(0, size * 8)) for size in (4, 16)))


def operations():
    peer = st.integers(0, 3)
    return st.lists(st.one_of(
        st.tuples(st.just("insert"), prefixes(), peer),
        st.tuples(st.just("insert"), prefixes(), peer),
        st.tuples(st.just("remove"), prefixes(), peer),
        st.tuples(st.just("remove_peer"), prefixes(), peer),
    ), max_size=80)


def uapi_lines(entries):
    return "".join(f"allowed_ip={format_addr(addr)}/{cidr}\n" for addr, cidr in entries).encode()


@settings(max_examples=300, deadline=None)
@given(operations(), st.lists(st.one_of(addresses(4), addresses(16)), max_size=20))
def test_matches_brute_force_model(ops, probes):
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
        out = bytearray()
        t.format_into(peer, out)
        assert out == uapi_lines(m.entries(peer))


def test_families_interleave_in_one_list():
    """One peer's list keeps insertion order across families, through moves and removals."""
    t = AllowedIPs()
    order = ["10.0.0.0/8", "fd00::/8", "10.1.0.1/32", "::/0", "192.168.0.0/16", "fd00::1/128", "0.0.0.0/0"]
    for text in order:
        t.insert(*net(text), 3)
    t.insert(*net("fd00::/8"), 3)          # again: to the end
    t.insert(*net("10.1.0.1/32"), 4)       # to another peer
    t.insert(*net("10.1.0.1/32"), 3)       # and back, to the end
    assert t.remove(*net("::/0"), 3)
    expected = [net(text) for text in ["10.0.0.0/8", "192.168.0.0/16", "fd00::1/128", "0.0.0.0/0",
                                       "fd00::/8", "10.1.0.1/32"]]
    assert t.entries(3) == expected and t.entries(4) == []
    out = bytearray()
    t.format_into(3, out)
    assert out == (b"allowed_ip=10.0.0.0/8\nallowed_ip=192.168.0.0/16\nallowed_ip=fd00::1/128\n"
                   b"allowed_ip=0.0.0.0/0\nallowed_ip=fd00::/8\nallowed_ip=10.1.0.1/32\n")
    assert t.lookup(v6("fd00::2")) == 3 and t.lookup(v6("fe00::")) == -1 and t.lookup(v4("11.0.0.0")) == 3


def test_insert_ignores_host_bits_and_reuses_a_branching_node():
    """insert (over insert_raw) masks the key; a prefix put where a node only
    branched takes that node's place; removing it again leaves a lookup-equal trie."""
    t = AllowedIPs()
    t.insert(v4("10.0.0.1"), 32, 1)
    t.insert(v4("10.0.0.3"), 32, 2)          # a branching node at 10.0.0.0/30 joins them
    t.insert(v4("10.0.0.3"), 30, 3)           # host bits set; lands on that node
    assert t.entries(3) == [(v4("10.0.0.0"), 30)]
    assert [t.lookup(v4(f"10.0.0.{i}")) for i in range(5)] == [3, 1, 3, 2, -1]
    assert t.remove(v4("10.0.0.2"), 30, 3)
    assert [t.lookup(v4(f"10.0.0.{i}")) for i in range(4)] == [-1, 1, -1, 2]
    t.insert(v6("fd00::1:ff"), 120, 4)
    assert t.entries(4) == [(v6("fd00::1:0"), 120)] and len(t) == 3


def dense_ipv4(t, count, peer):
    for i in range(count):
        t.insert(bytes((10, i >> 16 & 255, i >> 8 & 255, i & 255)), 32, peer)


def test_memory_is_given_back_and_reused():
    """Removing a peer's prefixes returns the nodes' memory; inserting them again
    takes no more than the first time; the table stays small per prefix."""
    t = AllowedIPs()
    assert t.node_memory() == 0
    dense_ipv4(t, 100_000, 1)
    for i in range(2_000):
        t.insert(b"\xfd" + bytes(11) + i.to_bytes(4, "big"), 128, 2)
    full = t.node_memory()
    assert full <= 64 * 102_000
    t.remove_peer(1)
    assert t.node_memory() <= 64 * 2_000 + 6 * 4096
    assert [t.lookup(b"\xfd" + bytes(11) + i.to_bytes(4, "big")) for i in range(0, 2_000, 97)] == [2] * 21
    t.remove_peer(2)
    assert t.node_memory() == 0 and len(t) == 0
    for _ in range(2):
        dense_ipv4(t, 100_000, 1)
        for i in range(2_000):
            t.insert(b"\xfd" + bytes(11) + i.to_bytes(4, "big"), 128, 2)
        assert t.node_memory() == full
        t.remove_peer(1)
        t.remove_peer(2)


def test_removals_at_scale_keep_lookups_right():
    """Thousands of removals move nodes within their pools and shrink them;
    every lookup still agrees with the model after each peer goes."""
    t, m = AllowedIPs(), Model()
    rng = random.Random(7)
    for _ in range(6_000):
        size = rng.choice((4, 16))
        addr, cidr, peer = rng.getrandbits(size * 8).to_bytes(size, "big"), rng.randint(0, size * 8), rng.randrange(6)
        if size == 16:
            addr = bytes([0xfd, rng.randrange(4)]) + addr[2:]   # overlapping IPv6 prefixes as well
        if cidr < 4:
            continue
        t.insert(addr, cidr, peer)
        m.insert(addr, cidr, peer)
    probes = [value.to_bytes(bits // 8, "big") for bits, value, _ in m.order[::50]]
    probes += [rng.getrandbits(32).to_bytes(4, "big") for _ in range(100)]
    for peer in range(6):
        t.remove_peer(peer)
        m.remove_peer(peer)
        assert len(t) == len(m.table)
        assert [t.lookup(a) for a in probes] == [m.lookup(a) for a in probes]
        assert t.entries((peer + 1) % 6) == m.entries((peer + 1) % 6)
    assert t.node_memory() == 0


OUT_OF_MEMORY = textwrap.dedent("""
    import resource
    from wgc._trie import AllowedIPs
    keys = [bytes((10, i >> 16 & 255, i >> 8 & 255, i & 255)) for i in range(400_000)]
    t = AllowedIPs()
    for key in keys[:1000]:
        t.insert(key, 32, 1)
    size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (size + (4 << 20), hard))
    done = 1000
    try:
        while done < len(keys):
            t.insert(keys[done], 32, 1)
            done += 1
    except MemoryError:
        pass
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert 1000 < done < len(keys), done
    assert len(t) == done
    assert t.lookup(keys[done]) == -1 and t.lookup(keys[done - 1]) == 1
    assert t.entries(1) == [(key, 32) for key in keys[:done]]
    for key in keys[done:]:
        t.insert(key, 32, 2)
    assert len(t) == len(keys) and all(t.lookup(key) == (1 if i < done else 2) for i, key in enumerate(keys))
    print("ok", done)
""")


def test_out_of_memory_raises_and_leaves_the_table_whole():
    """Under an address-space limit the pools cannot grow: insert raises
    MemoryError with nothing changed, and goes on once memory is back."""
    where = os.path.dirname(os.path.dirname(wgc._trie.__file__))    # this run's build (just test-asan's too)
    result = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": where})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")


# -- the UAPI text ----------------------------------------------------------------------

def zero_heavy_ipv6():
    """Groups drawn mostly from 0 so that runs and ties of zero groups are common."""
    group = st.one_of(st.just(0), st.just(0), st.just(1), st.integers(0, 0xFFFF))
    return st.lists(group, min_size=8, max_size=8).map(lambda groups: b"".join(g.to_bytes(2, "big") for g in groups))


def ipv6_addresses():
    special = [v6(text) for text in ["::", "::1", "1::", "::ffff:1.2.3.4", "::ffff:0.0.0.0", "::ffff:0:1.2.3.4",
                                     "64:ff9b::1.2.3.4", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                                     "1:2:3:4:5:6:7:8", "fe80::1"]]
    mapped = st.binary(min_size=4, max_size=4).map(lambda a: bytes(10) + b"\xff\xff" + a)
    return st.one_of(st.sampled_from(special), mapped, zero_heavy_ipv6(), st.binary(min_size=16, max_size=16))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.binary(min_size=4, max_size=4), st.integers(0, 32)),
                          st.tuples(ipv6_addresses(), st.sampled_from([128, 128, 127, 96, 64, 48, 0]))),
                min_size=1, max_size=30),
       st.binary(max_size=8))
def test_format_into_writes_what_format_addr_does(prefixes, already):
    t = AllowedIPs()
    for addr, cidr in prefixes:
        t.insert(addr, cidr, 9)
    out = bytearray(already)
    t.format_into(9, out)
    assert out == already + uapi_lines(t.entries(9))
    t.format_into(8, out)
    assert out == already + uapi_lines(t.entries(9))


@pytest.mark.parametrize("text,expected", [
    ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),        # a tie: the first run
    ("0:0:1:0:0:1:0:0", "::1:0:0:1:0:0"),
    ("1:0:0:2:3:0:0:0", "1:0:0:2:3::"),         # the longer run wins, even later
    ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),     # one zero group stays
    ("0:0:0:0:0:0:0:0", "::"),
    ("0:0:0:0:0:ffff:102:304", "::ffff:1.2.3.4"),
    ("0:0:0:0:ffff:0:102:304", "::ffff:0:102:304"),
    ("abcd:ef01:0:0:0:0:0:0", "abcd:ef01::"),
])
def test_ipv6_text_follows_rfc_5952(text, expected):
    t = AllowedIPs()
    t.insert(v6(text), 128, 0)
    out = bytearray()
    t.format_into(0, out)
    assert out == f"allowed_ip={expected}/128\n".encode()
    assert format_addr(v6(text)) == expected


def test_format_into_a_long_list():
    """Many lines: out grows in steps and ends exactly at the text's end."""
    t = AllowedIPs()
    dense_ipv4(t, 50_000, 1)
    out = bytearray(b"public_key=00\n")
    t.format_into(1, out)
    lines = out.split(b"\n")
    assert lines[0] == b"public_key=00" and lines[-1] == b"" and len(lines) == 50_002
    assert lines[1] == b"allowed_ip=10.0.0.0/32" and lines[-2] == b"allowed_ip=10.0.195.79/32"
