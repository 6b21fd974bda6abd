"""Fragment reassembly for the network stack (wgc/netstack/_frag.pyx).

Control byte even: the rest is a run of records, each a control byte, a
16-bit length and that many bytes; control bit 0 says IPv6 (then the first
two bytes are next_header_at and frag_at, the rest the packet), bits 1-3 how
far the clock moves first (up to past the IPv4 time limit).  The byte after
the first picks the memory cap, small enough for eviction to happen.  Any
bytes may come in: the bytes held stay under the cap and the datagrams under
FRAG_DATAGRAMS_MAX, and whatever comes out is a well-formed IP packet of at
most 65,535 bytes of IPv4 total or IPv6 payload length.

Control byte odd: fragments of one UDP datagram (bit 1: IPv6, bit 2: with a
Hop-by-Hop header) whose payload length is the next two bytes, then 5-byte
records: start (in units of 8), end, and flags (bit 0: More Fragments; bit 1:
other bytes than the datagram's), all at one moment.  What comes out must be
what the RFCs' reassembly gives (tests/test_netstack_frag.py's Model).

The compiled module is invisible to atheris unless built with
tests/fuzz/run.py --native; its out-of-bounds accesses show only with --asan.
"""
import json
import os
import struct

import common

with common.instrumented():
    from test_netstack_frag import Model, datagram4, datagram6, fragment4, fragment6, reference_sum
    from wgc.netstack._frag import DATAGRAMS_MAX, TIMEOUT4_S, Reassembly

NS = 10**9
STEPS = (0, 1, 1000, NS, TIMEOUT4_S * NS // 4, TIMEOUT4_S * NS - 1, TIMEOUT4_S * NS, 2 * TIMEOUT4_S * NS)
IDENT = 0x1234
VECTORS = os.path.join(common.ROOT, "tests", "vectors", "linux-fragments.json")


def well_formed(out: bytes) -> None:
    if out[0] >> 4 == 4:
        ihl = (out[0] & 15) * 4
        assert 20 <= ihl <= len(out) == struct.unpack_from("!H", out, 2)[0]
        assert struct.unpack_from("!H", out, 6)[0] & 0x3FFF == 0
        assert reference_sum(out[:ihl]) == 0xFFFF
    else:
        assert out[0] >> 4 == 6 and 40 <= len(out) == 40 + struct.unpack_from("!H", out, 4)[0]


def any_bytes(data: bytes) -> None:
    cap = (data[0] + 1) * 512
    r = Reassembly(cap)
    now, at = 0, 1
    while at + 3 <= len(data):
        control, length = data[at], struct.unpack_from("!H", data, at + 1)[0]
        record = data[at + 3:at + 3 + length]
        at += 3 + length
        now += STEPS[(control >> 1) & 7]
        if control & 1:
            if len(record) < 2:
                continue
            out = r.input6(record[2:], record[0], record[1], now)
        else:
            out = r.input4(record, now)
        assert r.memory <= cap and r.pending <= DATAGRAMS_MAX
        if out is not None:
            well_formed(out)
    r.expire(now + 2**40)
    assert r.pending == 0 and r.memory == 0


def one_datagram(data: bytes) -> None:
    control, length = data[0], struct.unpack_from("!H", data, 1)[0] % 3000 + 1
    payload = bytes(i * 13 & 0xFF for i in range(length))
    ipv6, hop_by_hop = bool(control & 2), bool(control & 4)
    datagram = datagram6(payload, hop_by_hop) if ipv6 else datagram4(payload)
    body = 8 + length               # what is cut: the UDP header and payload
    r, model = Reassembly(), Model()
    for at in range(3, len(data) - 4, 5):
        start = struct.unpack_from("!H", data, at)[0] % (body // 8 + 3) * 8
        end = start + 1 + struct.unpack_from("!H", data, at + 2)[0] % (body + 24 - start)
        more, other = bool(data[at + 4] & 1), bool(data[at + 4] & 2)
        piece = datagram[len(datagram) - body + start:len(datagram) - body + end]
        piece += bytes(end - start - len(piece))
        if other:
            piece = bytes(b ^ 0x5A for b in piece)
        if ipv6:
            packet = fragment6(datagram, start, end, more, IDENT, data=piece)
            out = r.input6(packet, 40 if hop_by_hop else 6, 48 if hop_by_hop else 40, 0)
        else:
            packet = fragment4(datagram, start, end, more, data=piece)
            out = r.input4(packet, 0)
        assert out == model.input(packet)


def one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    if data[0] & 1:
        one_datagram(data)
    else:
        any_bytes(data[1:])


def seeds() -> list[bytes]:
    """The Linux kernel's fragments (tests/vectors/linux-fragments.json) in its
    order and reversed; one datagram cut in order, with a duplicate, an overlap."""
    with open(VECTORS) as f:
        cases = json.load(f)["cases"]
    found = []
    for case in cases:
        fragments = [bytes.fromhex(f) for f in case["fragments"]]
        for order in (fragments, fragments[::-1]):
            records = b""
            for fragment in order:
                if case["family"] == 6:
                    hop = fragment[6] == 0
                    fragment = bytes([40, 48] if hop else [6, 40]) + fragment
                records += struct.pack("!BH", case["family"] == 6, len(fragment)) + fragment
            found.append(b"\0\xff" + records)
    # 200 bytes of payload, 208 to cut: [0, 64) [64, 128) [128, 208) as (start / 8, end - start - 1, flags).
    first, second, last = struct.pack("!HHB", 0, 63, 1), struct.pack("!HHB", 8, 63, 1), struct.pack("!HHB", 16, 79, 0)
    overlap = struct.pack("!HHB", 4, 63, 1)
    for control in (1, 3, 7):
        head = struct.pack("!BH", control, 199)
        found += [head + first + second + last, head + last + second + second + first,
                  head + first + overlap + second + last]
    return found


if __name__ == "__main__":
    common.main(one_input)
