"""Fragment reassembly (wgc.netstack._frag): the Linux kernel's fragments, and properties.

The known answers are fragments the kernel made of UDP datagrams whose
payload we chose (tests/vectors/linux-fragments.json, and a fresh set in a
namespace): reassembled, the UDP checksum the kernel computed over the whole
datagram must hold and the payload must come back.  The properties use
fragments cut here from datagrams built by tests/test_offload.py's RFC
layouts; a whole datagram must come back byte for byte.
"""
import itertools
import json
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_fragments import capture, fragment_header_at
from test_offload import pseudo, reference_sum, udp_packet
from wgc.netstack._frag import DATAGRAMS_MAX, MEMORY_MAX, TIMEOUT4_S, TIMEOUT6_S, Reassembly

VECTORS = json.loads((Path(__file__).parent / "vectors" / "linux-fragments.json").read_text())
NS = 10**9
UDP, FRAGMENT, HOP_BY_HOP = 17, 44, 0
IPV4_MF, IPV6_M = 0x2000, 1
LIMIT = 65535                  # an IPv4 total length, an IPv6 payload length
HOP_BY_HOP_PAD = bytes([UDP, 0, 1, 4, 0, 0, 0, 0])


# ---- building fragments -------------------------------------------------------------


def fragment4(datagram: bytes, start: int, end: int, more: bool, data: bytes | None = None,
              header: bytes | None = None) -> bytes:
    """The fragment of an IPv4 datagram carrying its payload from start to end
    (or data in its place), behind header (by default the datagram's own)."""
    ihl = (datagram[0] & 15) * 4
    h = bytearray(header or datagram[:ihl])
    data = datagram[ihl + start:ihl + end] if data is None else data
    struct.pack_into("!H", h, 2, len(h) + len(data))
    flags = struct.unpack_from("!H", datagram, 6)[0] & 0xC000
    struct.pack_into("!H", h, 6, flags | (IPV4_MF if more else 0) | start // 8)
    h[10:12] = b"\0\0"
    struct.pack_into("!H", h, 10, ~reference_sum(bytes(h)) & 0xFFFF)
    return bytes(h) + data


def unfragmentable(datagram: bytes) -> tuple[int, int]:
    """(next_header_at, length of the unfragmentable part) of an IPv6 datagram built here."""
    return (40, 48) if datagram[6] == HOP_BY_HOP else (6, 40)


def fragment6(datagram: bytes, start: int, end: int, more: bool, ident: int, data: bytes | None = None,
              next_header: int | None = None) -> bytes:
    """The fragment of an IPv6 datagram carrying its fragmentable part from start to end (or data)."""
    at, length = unfragmentable(datagram)
    h = bytearray(datagram[:length])
    data = datagram[length + start:length + end] if data is None else data
    struct.pack_into("!H", h, 4, length - 40 + 8 + len(data))
    h[at] = FRAGMENT
    next_header = datagram[at] if next_header is None else next_header
    return bytes(h) + struct.pack("!BxHI", next_header, start | (IPV6_M if more else 0), ident) + data


def datagram6(payload: bytes, hop_by_hop: bool = False) -> bytes:
    """An IPv6 UDP datagram, with a Hop-by-Hop header of padding if asked."""
    packet = udp_packet(True, payload)
    if not hop_by_hop:
        return packet
    header = bytearray(packet[:40])
    header[6] = HOP_BY_HOP
    struct.pack_into("!H", header, 4, len(packet) - 40 + 8)
    return bytes(header) + HOP_BY_HOP_PAD + packet[40:]


def body_length(datagram: bytes) -> int:
    """The length of the part that is cut into fragments."""
    if datagram[0] >> 4 == 4:
        return len(datagram) - (datagram[0] & 15) * 4
    return len(datagram) - unfragmentable(datagram)[1]


def cut(datagram: bytes, bounds: list[int], ident: int = 0x1234) -> list[bytes]:
    """datagram in fragments between the given offsets (0 and the end included)."""
    last = bounds[-1]
    if datagram[0] >> 4 == 4:
        return [fragment4(datagram, a, b, b < last) for a, b in itertools.pairwise(bounds)]
    return [fragment6(datagram, a, b, b < last, ident) for a, b in itertools.pairwise(bounds)]


def feed(r: Reassembly, packet: bytes, now: int = 0):
    if packet[0] >> 4 == 4:
        return r.input4(packet, now)
    at = fragment_header_at(packet)
    assert at is not None
    return r.input6(packet, *at, now)


def datagram4(payload: bytes, df: bool = False, ident: int = 0x1234) -> bytes:
    return udp_packet(False, payload, ident=ident, df=df)


def data(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


# ---- the kernel's fragments ----------------------------------------------------------


def check_kernel_datagram(case: dict, out: bytes) -> None:
    """out is the datagram the kernel cut into case's fragments: the UDP checksum
    it computed holds, the payload is ours, the IP header is the first fragment's
    but for the fields reassembly rewrites."""
    first = bytes.fromhex(case["fragments"][0])
    payload = bytes.fromhex(case["payload"])
    if case["family"] == 4:
        ihl = (out[0] & 15) * 4
        assert struct.unpack_from("!H", out, 2)[0] == len(out)
        assert struct.unpack_from("!H", out, 6)[0] & 0x3FFF == 0
        assert reference_sum(out[:ihl]) == 0xFFFF
        assert out[:2] + out[4:6] + out[8:10] + out[12:ihl] == first[:2] + first[4:6] + first[8:10] + first[12:ihl]
        src, dst, udp = out[12:16], out[16:20], out[ihl:]
    else:
        at, frag_at = fragment_header_at(first)
        assert struct.unpack_from("!H", out, 4)[0] == len(out) - 40
        assert out[at] == first[frag_at] == UDP
        assert out[:4] + out[6:at] + out[at + 1:frag_at] == first[:4] + first[6:at] + first[at + 1:frag_at]
        src, dst, udp = out[8:24], out[24:40], out[frag_at:]
    assert struct.unpack_from("!H", udp, 4)[0] == len(udp) == 8 + len(payload)
    assert reference_sum(pseudo(case["family"] == 6, src, dst, UDP, len(udp)) + udp) == 0xFFFF
    assert udp[8:] == payload


def orders(fragments: list[bytes]):
    """The kernel's order, reversed, shuffled, and with every fragment twice."""
    yield "sent", fragments
    yield "reversed", fragments[::-1]
    shuffled = fragments[:]
    random.Random(5).shuffle(shuffled)
    yield "shuffled", shuffled
    twice = [f for f in shuffled for _ in range(2)]
    yield "duplicated", twice[:-1]      # the last copy would start the datagram over


def check_kernel_case(case: dict) -> None:
    fragments = [bytes.fromhex(f) for f in case["fragments"]]
    assert len(fragments) > 1
    for name, order in orders(fragments):
        r = Reassembly()
        outs = [feed(r, f) for f in order]
        assert all(out is None for out in outs[:-1]) and outs[-1] is not None, (case["name"], name)
        check_kernel_datagram(case, outs[-1])
        assert r.pending == 0 and r.memory == 0 and r.dropped == 0


def test_vectors_cover_both_families_and_headers_before_the_fragment():
    names = {case["name"] for case in VECTORS["cases"]}
    assert names == {"ipv4", "ipv4-options", "ipv6", "ipv6-hop-by-hop"}


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda case: case["name"])
def test_kernel_fragments_from_the_vector_file(case):
    check_kernel_case(case)


@pytest.mark.netns
def test_live_kernel_fragments(netns):
    for case in capture(netns("frag")):
        check_kernel_case(case)


# ---- any order, duplicates ---------------------------------------------------------


@st.composite
def fragmented(draw):
    """(datagram, fragments, the order they come in with duplicates)."""
    ipv6 = draw(st.booleans())
    payload = draw(st.binary(min_size=1, max_size=3000))
    if ipv6:
        datagram = datagram6(payload, hop_by_hop=draw(st.booleans()))
    else:
        datagram = datagram4(payload, df=draw(st.booleans()))
    length = body_length(datagram)
    cuts = draw(st.lists(st.integers(1, (length - 1) // 8), unique=True, max_size=40)) if length > 8 else []
    fragments = cut(datagram, [0, *sorted(8 * c for c in cuts), length])
    order = draw(st.permutations(range(len(fragments))))
    duplicates = draw(st.lists(st.sampled_from(range(len(fragments))), max_size=10))
    arrivals = draw(st.permutations([*order, *duplicates]))
    return datagram, fragments, arrivals


@settings(max_examples=300, deadline=None)
@given(fragmented())
def test_any_order_with_duplicates_gives_the_datagram(case):
    datagram, fragments, arrivals = case
    if len(fragments) == 1:
        return      # offset 0 and no more: not a fragment
    r = Reassembly()
    seen = set()
    for index in arrivals:
        complete_now = index not in seen and len(seen) == len(fragments) - 1
        seen.add(index)
        out = feed(r, fragments[index])
        if complete_now:
            assert out == datagram
            break
        assert out is None
        assert r.pending == 1 and r.dropped == 0
    assert r.pending == 0 and r.memory == 0


def test_first_fragments_header_is_kept_when_later_ones_differ():
    # Options not copied into later fragments (RFC 791): their headers are shorter.
    payload = data(1000)
    options = bytes([7, 7, 4, 0, 0, 0, 0, 1])
    datagram = udp_packet(False, payload, options=options, df=False)
    plain = udp_packet(False, payload, df=False)[:20]
    r = Reassembly()
    assert r.input4(fragment4(datagram, 512, 1008, False, header=plain), 0) is None
    assert r.input4(fragment4(datagram, 0, 512, True), 0) == datagram


def test_ipv6_next_header_comes_from_the_first_fragment():
    datagram = datagram6(data(100))
    r = Reassembly()
    assert feed(r, fragment6(datagram, 56, 108, False, 9, next_header=6)) is None
    assert feed(r, fragment6(datagram, 0, 56, True, 9)) == datagram


def test_atomic_fragment_comes_out_alone():
    # RFC 6946: offset 0 and M clear is a whole datagram, whatever waits with the same ID.
    datagram = datagram6(data(300))
    r = Reassembly()
    assert feed(r, fragment6(datagram, 0, 64, True, 7)) is None
    assert feed(r, fragment6(datagram, 0, 308, False, 7)) == datagram
    assert r.pending == 1
    assert feed(r, fragment6(datagram, 64, 308, False, 7)) == datagram


def test_keys_keep_datagrams_apart():
    a, b = datagram4(data(100, 1), ident=1), datagram4(data(100, 2), ident=2)
    c = udp_packet(False, data(100, 1), ident=1, df=False, dst=bytes([10, 0, 0, 9]))
    r = Reassembly()
    firsts = [r.input4(fragment4(d, 0, 64, True), 0) for d in (a, b, c)]
    assert firsts == [None] * 3 and r.pending == 3
    assert r.input4(fragment4(b, 64, 108, False), 0) == b
    assert r.input4(fragment4(c, 64, 108, False), 0) == c
    assert r.input4(fragment4(a, 64, 108, False), 0) == a


# ---- overlaps, duplicates, malformed fragments -----------------------------------


def test_exact_duplicate_is_harmless():
    datagram = datagram4(data(200))
    first, second, third = cut(datagram, [0, 64, 128, 208])
    r = Reassembly()
    assert r.input4(second, 0) is None
    memory = r.memory
    assert r.input4(second, 0) is None
    assert r.memory == memory and r.pending == 1 and r.dropped == 0
    assert r.input4(first, 0) is None
    assert r.input4(third, 0) == datagram


@pytest.mark.parametrize("start, end, more, flip", [
    (64, 128, True, True),      # the same place, other bytes
    (56, 128, True, False),     # starts inside the one before, same bytes
    (64, 136, True, False),     # ends past the one it starts with
    (0, 136, True, False),      # covers both and more
    (72, 120, True, False),     # inside one
])
def test_overlap_that_is_not_an_exact_duplicate_drops_the_datagram(start, end, more, flip):
    datagram = datagram4(data(200))
    first, second, third = cut(datagram, [0, 64, 128, 208])
    r = Reassembly()
    assert r.input4(first, 0) is None and r.input4(second, 0) is None
    bytes_there = datagram[20 + start:20 + end]
    other = bytes(b ^ 0xFF for b in bytes_there) if flip else bytes_there
    assert r.input4(fragment4(datagram, start, end, more, data=other), 0) is None
    assert r.pending == 0 and r.memory == 0 and r.dropped == 1
    assert r.input4(third, 0) is None and r.pending == 1      # starts over, and waits


@pytest.mark.parametrize("order", ["short first", "long first"])
def test_last_fragments_agreeing_on_the_total_but_overlapping_drop_the_datagram(order):
    # One byte in common, at the very end: the only overlap offsets in units of 8 leave to a last fragment.
    datagram = datagram4(data(193))          # 201 bytes after the header
    short, long = fragment4(datagram, 200, 201, False), fragment4(datagram, 192, 201, False)
    r = Reassembly()
    for fragment in (short, long) if order == "short first" else (long, short):
        assert r.input4(fragment, 0) is None
    assert r.pending == 0 and r.memory == 0 and r.dropped == 1
    assert r.input4(fragment4(datagram, 0, 192, True), 0) is None


def test_last_fragments_disagreeing_on_the_total_drop_the_datagram():
    datagram = datagram4(data(200))
    r = Reassembly()
    assert r.input4(fragment4(datagram, 128, 208, False), 0) is None
    assert r.input4(fragment4(datagram, 208, 216, False, data=bytes(8)), 0) is None
    assert r.pending == 0 and r.dropped == 1


def test_fragment_past_the_total_drops_the_datagram():
    datagram = datagram4(data(200))
    r = Reassembly()
    assert r.input4(fragment4(datagram, 128, 208, False), 0) is None
    assert r.input4(fragment4(datagram, 208, 216, True, data=bytes(8)), 0) is None
    assert r.pending == 0 and r.dropped == 1
    # and the other way round: the last fragment ends before what came
    assert r.input4(fragment4(datagram, 208, 216, True, data=bytes(8)), 0) is None
    assert r.input4(fragment4(datagram, 128, 208, False), 0) is None
    assert r.pending == 0 and r.dropped == 2


def test_malformed_fragments_are_dropped_alone():
    datagram = datagram4(data(200))
    first, second = cut(datagram, [0, 64, 208])
    r = Reassembly()
    assert r.input4(first, 0) is None
    bad = [
        fragment4(datagram, 64, 64, True, data=b""),         # empty, MF set
        fragment4(datagram, 64, 64, False, data=b""),        # empty, the last
        fragment4(datagram, 64, 76, True),                   # not a multiple of 8 and not the last
        second[:19],                                         # shorter than a header
        second[:2] + struct.pack("!H", len(second) + 1) + second[4:],   # total length past the packet
        second[:2] + struct.pack("!H", 19) + second[4:],     # total length inside the header
        bytes([0x44]) + second[1:],                          # IHL 4
        bytes([0x4F]) + second[1:2] + struct.pack("!H", 40) + second[4:],   # IHL 15, past the total length
        bytes([0x65]) + second[1:],                          # not version 4
    ]
    for packet in bad:
        assert r.input4(packet, 0) is None
    assert r.dropped == len(bad) and r.pending == 1
    assert r.input4(second, 0) == datagram


def test_malformed_ipv6_fragments_are_dropped_alone():
    datagram = datagram6(data(200))
    first, second = cut(datagram, [0, 64, 208], ident=3)
    r = Reassembly()
    assert r.input6(first, 6, 40, 0) is None
    bad = [
        (second, 7, 40),                  # next_header_at not a Fragment Next Header
        (second, 40, 40),                 # next_header_at not before the Fragment header
        (second, 6, 39),                  # inside the fixed header
        (second, 6, len(second) - 7),     # a Fragment header past the end
        (second, 6, 2**32 - 1),
        (second[:39], 6, 40),             # shorter than the fixed header
        (second[:-1], 6, 40),             # payload length past the packet
        (bytes([0x40]) + second[1:], 6, 40),
        (fragment6(datagram, 64, 76, True, 3), 6, 40),      # not a multiple of 8 and not the last
        (fragment6(datagram, 64, 64, False, 3), 6, 40),     # empty
    ]
    for packet, at, frag_at in bad:
        assert r.input6(packet, at, frag_at, 0) is None
    assert r.dropped == len(bad) and r.pending == 1
    assert r.input6(second, 6, 40, 0) == datagram


# ---- the 65,535-byte limit ------------------------------------------------------------


def test_ipv4_datagram_of_65535_bytes_is_the_largest():
    payload = data(LIMIT - 28)
    datagram = datagram4(payload)
    r = Reassembly()
    bounds = [*range(0, LIMIT - 20, 1480), LIMIT - 20]
    outs = [r.input4(f, 0) for f in cut(datagram, bounds)]
    assert outs[-1] == datagram and len(datagram) == LIMIT
    # One byte more: the last fragment ends past 65,535 - 20 and drops what came.
    too_long = fragment4(datagram, LIMIT - 20 - 3, LIMIT - 20 + 1, False, data=bytes(4))
    assert (LIMIT - 20 - 3) % 8 == 0
    for fragment in cut(datagram, bounds)[:-1]:
        assert r.input4(fragment, 0) is None
    assert r.pending == 1
    assert r.input4(too_long, 0) is None and r.pending == 0 and r.dropped == 1


def test_ipv4_limit_counts_the_first_fragments_header():
    # The last fragment's 20-byte header allows 65,515 bytes after it; the
    # first fragment's options make the datagram 4 bytes too long.
    with_options = udp_packet(False, b"", options=bytes([1, 1, 1, 0]), df=False)
    plain = udp_packet(False, b"", df=False)[:20]
    body = LIMIT - 20
    tail = (LIMIT - 24) // 8 * 8         # the most the first fragment can carry
    r = Reassembly()
    assert r.input4(fragment4(with_options, tail, body, False, data=bytes(body - tail), header=plain), 0) is None
    assert r.input4(fragment4(with_options, 0, tail, True, data=bytes(tail)), 0) is None
    assert r.pending == 0 and r.dropped == 1


def test_ipv6_payload_of_65535_bytes_is_the_largest():
    datagram = datagram6(data(LIMIT - 8 - 8), hop_by_hop=True)
    assert struct.unpack_from("!H", datagram, 4)[0] == LIMIT
    bounds = [*range(0, LIMIT - 8, 1232), LIMIT - 8]
    r = Reassembly()
    outs = [feed(r, f) for f in cut(datagram, bounds)]
    assert outs[-1] == datagram
    for fragment in cut(datagram, bounds)[:-1]:
        assert feed(r, fragment) is None
    # 8 bytes of Hop-by-Hop header: the fragmentable part may reach 65,527.
    assert feed(r, fragment6(datagram, LIMIT - 15, LIMIT - 7, False, 0x1234, data=bytes(8))) is None
    assert r.pending == 0 and r.dropped == 1


# ---- memory, slots, time ------------------------------------------------------------------


def test_memory_stays_under_the_cap_and_the_oldest_go_first():
    cap = 64 * 1024
    r = Reassembly(cap)
    rng = random.Random(1)
    for ident in range(3000):
        datagram = datagram4(data(rng.randrange(16, 1500), ident), ident=ident)
        length = body_length(datagram)
        start = rng.randrange(1, (length + 7) // 8) * 8 if length > 8 else 0
        fragment = fragment4(datagram, start, min(length, start + 8 * rng.randrange(1, 100)), True)
        if len(fragment) - 20 & 7:
            continue
        r.input4(fragment, ident)
        assert r.memory <= cap and r.pending <= DATAGRAMS_MAX
    assert r.memory > cap // 2
    # What came last is still there; the oldest were pushed out.
    newest = datagram4(data(1000), ident=5000)
    first, second = cut(newest, [0, 504, 1008])
    assert r.input4(first, 3000) is None and r.input4(second, 3000) == newest


def test_memory_cap_of_the_default_size_holds_under_large_fragments():
    r = Reassembly()
    assert r.memory_max == MEMORY_MAX
    chunk = data(1480)
    for ident in range(4000):
        datagram = datagram4(chunk, ident=ident)
        r.input4(fragment4(datagram, 0, 1480, True), ident)
        assert r.memory <= MEMORY_MAX
    assert r.pending == DATAGRAMS_MAX


def test_a_fragment_larger_than_the_cap_is_refused():
    r = Reassembly(1000)
    datagram = datagram4(data(2000))
    assert r.input4(fragment4(datagram, 0, 1480, True), 0) is None
    assert r.pending == 0 and r.memory == 0 and r.dropped == 1


def test_slots_are_capped_and_the_oldest_is_pushed_out():
    r = Reassembly()
    datagrams = [datagram4(data(100, i), ident=i) for i in range(DATAGRAMS_MAX + 1)]
    for i, datagram in enumerate(datagrams):
        assert r.input4(fragment4(datagram, 0, 64, True), i) is None
    assert r.pending == DATAGRAMS_MAX
    assert r.input4(fragment4(datagrams[0], 64, 108, False), 1000) is None     # its start is gone
    assert r.input4(fragment4(datagrams[-1], 64, 108, False), 1000) == datagrams[-1]


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_expiry_is_exact(ipv6):
    timeout = (TIMEOUT6_S if ipv6 else TIMEOUT4_S) * NS
    datagram = datagram6(data(200)) if ipv6 else datagram4(data(200))
    first, second, third = cut(datagram, [0, 64, 128, 208])
    start = 123_456_789
    deadline = start + timeout
    # A fragment 1 ns before the deadline still joins; the deadline is not moved by it.
    r = Reassembly()
    assert feed(r, first, start) is None
    assert feed(r, second, deadline - 1) is None
    assert r.expire(deadline - 1) == deadline and r.pending == 1
    assert feed(r, third, deadline - 1) == datagram
    # At the deadline the datagram is gone, whether found by the next fragment ...
    r = Reassembly()
    assert feed(r, first, start) is None and feed(r, second, deadline - 1) is None
    assert feed(r, third, deadline) is None
    assert r.pending == 1                   # the late fragment starts over
    # ... or by expire().
    r = Reassembly()
    assert feed(r, first, start) is None
    assert r.expire(deadline) == -1 and r.pending == 0 and r.memory == 0


def test_a_clock_near_its_end_does_not_overflow_the_deadline():
    # Under the sanitizer build a signed overflow here stops the run.
    end = 2**63 - 1
    r = Reassembly()
    assert r.input4(fragment4(datagram4(data(100)), 0, 64, True), end - 5) is None
    assert r.expire(end - 1) == end and r.pending == 1


def test_expire_returns_the_earliest_deadline_left():
    r = Reassembly()
    assert r.expire(0) == -1
    r.input4(fragment4(datagram4(data(100)), 0, 64, True), 10)
    feed(r, fragment6(datagram6(data(100)), 0, 64, True, 1), 5)
    assert r.expire(0) == 10 + TIMEOUT4_S * NS
    assert r.expire(10 + TIMEOUT4_S * NS) == 5 + TIMEOUT6_S * NS
    assert r.pending == 1


# ---- whatever comes in --------------------------------------------------------------


class Model:
    """Reassembly of one datagram as RFC 791, RFC 8200 section 4.5 and RFC 5722
    put it, for fragments that all share one key and one moment: what the
    whole datagram must be, if anything comes out."""

    def __init__(self):
        self.pieces: dict[int, tuple[bytes, bool, bytes]] = {}     # offset -> (data, more, packet)

    def input(self, packet: bytes) -> bytes | None:
        head, offset, body, more = parse(packet)
        end = offset + len(body)
        if not body or (more and len(body) % 8):
            return None
        if offset == 0 and not more:
            return whole(head, body)
        for start, (data, flag, _) in self.pieces.items():
            if start < end and offset < start + len(data):
                if (start, data, flag) != (offset, body, more):
                    self.pieces = {}
                return None
        ends = [start + len(data) for start, (data, _, _) in self.pieces.items()]
        totals = {start + len(data) for start, (data, flag, _) in self.pieces.items() if not flag}
        if not more:
            totals.add(end)
        if len(totals) > 1 or (totals and max([*ends, end]) > min(totals)):
            self.pieces = {}
            return None
        self.pieces[offset] = (body, more, packet)
        if totals and sum(len(data) for data, _, _ in self.pieces.values()) == min(totals):
            first = parse(self.pieces[0][2])[0]
            out = whole(first, b"".join(self.pieces[start][0] for start in sorted(self.pieces)))
            self.pieces = {}
            return out
        return None


def parse(packet: bytes) -> tuple[tuple[bytes, int, int], int, bytes, bool]:
    """((unfragmentable part, next_header_at, Next Header), offset, data, more) of a fragment built here."""
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 15) * 4
        field = struct.unpack_from("!H", packet, 6)[0]
        return (packet[:ihl], 0, 0), (field & 0x1FFF) * 8, packet[ihl:], bool(field & IPV4_MF)
    at, frag_at = fragment_header_at(packet)
    field = struct.unpack_from("!H", packet, frag_at + 2)[0]
    return (packet[:frag_at], at, packet[frag_at]), field & 0xFFF8, packet[frag_at + 8:], bool(field & IPV6_M)


def whole(head: tuple[bytes, int, int], body: bytes) -> bytes:
    """The datagram of the first fragment's head and body, its header rewritten as RFC 791 and RFC 8200 say."""
    header, at, next_header = bytearray(head[0]), head[1], head[2]
    if header[0] >> 4 == 4:
        struct.pack_into("!H", header, 2, len(header) + len(body))
        header[6] &= 0xC0
        header[7] = 0
        header[10:12] = b"\0\0"
        struct.pack_into("!H", header, 10, ~reference_sum(bytes(header)) & 0xFFFF)
    else:
        struct.pack_into("!H", header, 4, len(header) - 40 + len(body))
        header[at] = next_header
    return bytes(header) + body


@st.composite
def with_strays(draw):
    """A valid fragmentation and up to three more fragments anywhere, with the datagram's bytes or others."""
    datagram, fragments, arrivals = draw(fragmented())
    packets = [fragments[i] for i in arrivals]
    length = body_length(datagram)
    # Where fragments begin and end, and a byte either side: where an off-by-one would show.
    edges = sorted({e + d for f in fragments for e in (parse(f)[1], parse(f)[1] + len(parse(f)[2]))
                    for d in (-1, 0, 1)} - {-1})
    for _ in range(draw(st.integers(0, 3))):
        start = draw(st.integers(0, (length + 16) // 8) | st.sampled_from([e // 8 for e in edges])) * 8
        ends = [e for e in edges if e > start] or [start + 1]
        end = draw(st.integers(start + 1, length + 24) | st.sampled_from(ends))
        more = draw(st.booleans())
        same = datagram[len(datagram) - length + start:len(datagram) - length + end]
        data = same + bytes(end - start - len(same)) if draw(st.booleans()) else draw(
            st.binary(min_size=end - start, max_size=end - start))
        if datagram[0] >> 4 == 6:
            stray = fragment6(datagram, start, end, more, 0x1234, data=data)
        else:
            stray = fragment4(datagram, start, end, more, data=data)
        packets.insert(draw(st.integers(0, len(packets))), stray)
    return packets


@settings(max_examples=300, deadline=None)
@given(with_strays())
def test_overlapping_and_stray_fragments_give_only_the_datagram_the_rfcs_do(packets):
    r, model = Reassembly(), Model()
    for packet in packets:
        assert feed(r, packet) == model.input(packet)
    assert r.pending == (1 if model.pieces else 0)
    r.expire(2**62)
    assert r.pending == 0 and r.memory == 0


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 300), st.integers(0, 300), st.booleans())
def test_any_bytes_are_safe(packet, next_header_at, frag_at, ipv6):
    r = Reassembly()
    for now in (0, 1):
        out = r.input6(packet, next_header_at, frag_at, now) if ipv6 else r.input4(packet, now)
        assert out is None or len(out) <= len(packet)
