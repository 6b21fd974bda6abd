"""Microbenchmarks of the per-packet pieces of the data plane (issue 4).

Each benchmark makes one Python call per round into micro_helper.pyx, which
releases the GIL and loops in C over a whole batch calling wgc's compiled
code through its .pxd files, so what is timed is the nogil code:

  seal     64 packets of 1420 bytes: copy into the out slot, header, counter,
           padding, ChaCha20-Poly1305 in place (_tx_packet + _seal)
  open     64 datagrams: header checks, open, replay window, padding trimmed
           by the inner length, allowed-IPs check of the source (_rx_packet)
  tso      one 64 KiB TSO read (47 segments of 1368 payload bytes): parse the
           virtio_net_hdr, route, cut each segment into its out slot, seal it
           (_tx_vnet)
  split    the cutting alone: 47 segments with their headers and checksums
  gro      45 such segments coalesced into one super-packet (gro_add, gro_finish);
           no payload byte is touched (the TUN write gathers them), so no Gbit/s
  trie     4096 longest-prefix lookups (64 addresses x 64) in a 512-peer table
  replay   4096 in-order counters through the replay window

seal, open and tso run with wgc's crypto workers (wgc._workers) at one
thread (the caller alone, [wgc]) and at two ([wgc, 2 threads]); the
summary gives the second's packets per second over the first's, the scaling
of the real seal and open path on this machine's cores.

seal, open and tso also run as [libsodium]: a C loop that only calls
libsodium's crypto_aead_chacha20poly1305_ietf_{en,de}crypt_detached (looked
up with dlsym in PyNaCl's copy, the one wgc uses) over the same packets, with
the nonce built from the counter and nothing else: the upper bound.

How to read it: within a group, pytest-benchmark's table puts the fastest
first and shows each row's time relative to it in parentheses, so the
[wgc] row of seal, open and tso reads directly as "times the cost of the
crypto alone".  After the tables, a summary gives, from the fastest call of
each, packets/s, Gbit/s (of the IP packets) and, per pair, wgc's time over
libsodium's, the share of the bound wgc reaches and the nanoseconds per
packet above it.  A ratio near 1.0 means the per-packet work around the
crypto costs little; what a real tunnel loses beyond that lies outside
these loops (system calls, timers, locking, the index table).  The same
figures are in each benchmark's extra_info (see --benchmark-json).

Run with timing: `just bench-micro` (pytest tests/bench --benchmark-only).
A plain `pytest` runs each benchmarked call once and checks its output.
"""
from __future__ import annotations

import array
import ipaddress
import os
import random
import struct

import pytest
from nacl.bindings import crypto_aead_chacha20poly1305_ietf_decrypt as ietf_decrypt
from nacl.bindings import crypto_aead_chacha20poly1305_ietf_encrypt as ietf_encrypt

from wgc._trie import AllowedIPs

BATCH = 64                        # the data plane's packets per batch
PACKET = 1420                     # a full packet at wgc's default MTU
MTU = 1420
MSS = 1368                        # 1420 - 20 (IPv4) - 32 (TCP with timestamps)
TSO_SEGMENTS = 47                 # the whole MSS multiples a 64 KiB IPv4 packet holds
GRO_SEGMENTS = 45
REPEAT = 64                       # batches per call where one batch is too quick to time
REMOTE_INDEX, LOCAL_INDEX = 0x1234ABCD, 0x0BADF00D
PEERS = 512
OUR_PEER = 137                    # owns 10.77.0.0/16 and fd77::/48: the batch's flow
SRC, DST = bytes([10, 77, 1, 2]), bytes([10, 77, 1, 1])
TCP, UDP, ACK = 6, 17, 0x10
GSO_TCPV4, NEEDS_CSUM = 1, 1
TIMESTAMPS = bytes([1, 1, 8, 10]) + struct.pack("!II", 123456, 654321)


def timed(group: str):
    """A benchmark in group, with enough rounds that a slow calibration on a
    busy machine cannot leave it a handful (its minimum is what we report)."""
    return pytest.mark.benchmark(group=group, min_rounds=200)


# ---- packets, built from their RFC layouts ------------------------------------------

def inet_sum(data: bytes) -> int:
    """RFC 1071 ones'-complement sum of 16-bit big-endian words, folded."""
    if len(data) & 1:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total >> 16) + (total & 0xFFFF)
    return total


def ipv4(proto: int, body: bytes, ident: int = 1) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), ident & 0xFFFF, 0x4000, 64, proto, 0,
                         SRC, DST)
    check = ~inet_sum(header) & 0xFFFF
    return header[:10] + check.to_bytes(2, "big") + header[12:] + body


def l4_checksum(proto: int, segment: bytes) -> int:
    pseudo = SRC + DST + struct.pack("!BBH", 0, proto, len(segment))
    return ~inet_sum(pseudo + segment) & 0xFFFF


def udp_packet(payload: bytes, ident: int) -> bytes:
    body = struct.pack("!HHHH", 40000, 51820, 8 + len(payload), 0) + payload
    check = l4_checksum(UDP, body) or 0xFFFF
    return ipv4(UDP, body[:6] + check.to_bytes(2, "big") + body[8:], ident)


def tcp_packet(seq: int, payload: bytes, ident: int, checksum: bool = True) -> bytes:
    """TCP/IPv4 with timestamps, ACK only; checksum=False leaves the field 0."""
    body = struct.pack("!HHIIBBHHH", 40000, 5201, seq & 0xFFFFFFFF, 777, 8 << 4, ACK, 1024, 0, 0)
    body += TIMESTAMPS + payload
    if checksum:
        body = body[:16] + l4_checksum(TCP, body).to_bytes(2, "big") + body[18:]
    return ipv4(TCP, body, ident)


def nonce(counter: int) -> bytes:
    return b"\0" * 4 + struct.pack("<Q", counter)


def datagram(key: bytes, counter: int, packet: bytes) -> bytes:
    """A transport message as the peer would send it, sealed by PyNaCl."""
    padded = packet + b"\0" * (min(-len(packet) % 16, max(MTU - len(packet), 0)))
    return struct.pack("<IIQ", 4, LOCAL_INDEX, counter) + ietf_encrypt(padded, None, nonce(counter), key)


def vnet_tso(packet: bytes) -> bytes:
    """The virtio_net_hdr the kernel puts before a TCPv4 TSO read."""
    return struct.pack("=BBHHHH", NEEDS_CSUM, GSO_TCPV4, 52, MSS, 20, 16) + packet


# ---- fixtures --------------------------------------------------------------------

@pytest.fixture(scope="module")
def key():
    return os.urandom(32)


@pytest.fixture(scope="module")
def packets():
    return [udp_packet(os.urandom(PACKET - 28), ident=i) for i in range(BATCH)]


@pytest.fixture(scope="module")
def table():
    """A 512-peer table: a /32 and an IPv6 /128 per peer, a /24 for every
    fourth, a default route, and our peer's /16 and /48.  Returns the trie
    and the prefixes as (network, peer) for a reference lookup."""
    prefixes = [(ipaddress.ip_network("0.0.0.0/0"), 0), (ipaddress.ip_network("::/0"), 0),
                (ipaddress.ip_network("10.77.0.0/16"), OUR_PEER), (ipaddress.ip_network("fd77::/48"), OUR_PEER)]
    for peer in range(1, PEERS):
        prefixes.append((ipaddress.ip_network(f"10.{peer >> 8}.{peer & 0xFF}.1/32"), peer))
        prefixes.append((ipaddress.ip_network(f"fd00:{peer:x}::1/128"), peer))
        if peer % 4 == 0:
            prefixes.append((ipaddress.ip_network(f"10.{100 + (peer >> 8)}.{peer & 0xFF}.0/24"), peer))
    trie = AllowedIPs()
    for network, peer in prefixes:
        trie.insert(network.network_address.packed, network.prefixlen, peer)
    return trie, prefixes


def reference_lookup(prefixes, address) -> int:
    best, owner = -1, -1
    for network, peer in prefixes:
        if network.version == address.version and address in network and network.prefixlen > best:
            best, owner = network.prefixlen, peer
    return owner


def slots(micro, contents):
    s = micro.Slots(len(contents))
    for i, data in enumerate(contents):
        s.put(i, data)
    return s


# ---- seal and open ----------------------------------------------------------------

# (side, crypto threads): the bound, then wgc at one and two threads.
SIDES = pytest.mark.parametrize("side, threads", [("libsodium", 1), ("wgc", 1), ("wgc", 2)],
                                ids=["libsodium", "wgc", "wgc-2-threads"])


def label(side: str, threads: int) -> str:
    return f"[{side}]" if threads == 1 else f"[{side}, {threads} threads]"


def run_side(micro, benchmark, side: str, threads: int, name: str, *args):
    """Benchmarks micro.wgc_NAME(*args, Workers(threads)) or the bound, micro.sodium_NAME(*args)."""
    if side == "wgc":
        return benchmark(getattr(micro, f"wgc_{name}"), *args, micro.Workers(threads, BATCH))
    return benchmark(getattr(micro, f"sodium_{name}"), *args)


@timed("seal")
@SIDES
def test_seal(micro, benchmark, rate, key, packets, side, threads):
    tun = slots(micro, packets)
    out = micro.Slots(BATCH)
    sender = micro.Sender(key, REMOTE_INDEX, MTU)
    result = run_side(micro, benchmark, side, threads, "seal", sender, tun, out)
    rate(f"seal {BATCH} x {PACKET} B {label(side, threads)}", "seal 64 x 1420 B", side, BATCH, BATCH * PACKET,
         threads=threads)

    assert result == (BATCH * (16 + PACKET + 16) if side == "wgc" else BATCH)
    first = sender.counter - BATCH          # the counter of the last call's first packet
    for i, packet in enumerate(packets):
        sealed = out.get(i)
        assert len(sealed) == 16 + PACKET + 16
        if side == "wgc":
            assert sealed[:16] == struct.pack("<IIQ", 4, REMOTE_INDEX, first + i)
        assert ietf_decrypt(sealed[16:], None, nonce(first + i), key) == packet


@timed("open")
@SIDES
def test_open(micro, benchmark, rate, key, packets, table, side, threads):
    udp = slots(micro, [datagram(key, 1000 + i, p) for i, p in enumerate(packets)])
    plain = micro.Slots(BATCH)
    receiver = micro.Receiver(key, LOCAL_INDEX, OUR_PEER, table[0])
    result = run_side(micro, benchmark, side, threads, "open", receiver, udp, plain)
    rate(f"open {BATCH} x {PACKET} B {label(side, threads)}", "open 64 x 1420 B", side, BATCH, BATCH * PACKET,
         threads=threads)

    assert result == BATCH
    offset = 16 if side == "wgc" else 0       # wgc opens in place, behind the header
    assert [plain.get(i, offset) for i in range(BATCH)] == packets


def test_aead_floor(aead_floor):
    """What scripts/bench.py sets beside the tunnels: libsodium's CPU per GB
    sealing and opening (it raises unless every datagram opened)."""
    seal, open_ = aead_floor(seconds=0.02)
    # libsodium moves 1420-byte packets at some hundreds of MB/s to a few GB/s
    # per core: between 0.05 and 20 s/GB whatever the machine.
    assert 0.05 < seal < 20 and 0.05 < open_ < 20


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_open_rejects_what_the_data_plane_rejects(micro, key, packets, table, threads):
    """Forged, misaddressed, replayed and misrouted datagrams are not delivered,
    whichever thread opened them."""
    good = datagram(key, 5, packets[0])
    forged = good[:-1] + bytes([good[-1] ^ 1])
    misaddressed = struct.pack("<I", 4) + struct.pack("<I", LOCAL_INDEX + 1) + good[8:]
    stranger = datagram(key, 6, udp_packet(b"x" * 100, 0).replace(SRC, bytes([10, 0, 0, 9]), 1))
    batch = [good, forged, misaddressed, good, stranger, datagram(key, 7, packets[1])] * 4   # chunks for each thread
    receiver = micro.Receiver(key, LOCAL_INDEX, OUR_PEER, table[0])
    plain = micro.Slots(len(batch))
    assert micro.wgc_open(receiver, slots(micro, batch), plain, micro.Workers(threads, len(batch))) == 2
    assert [plain.length(i) for i in range(len(batch))] == [PACKET, 0, 0, 0, 0, PACKET] + [0] * 18


def test_seal_pads_as_the_data_plane_does(micro, key):
    """Short packets are padded to 16 bytes, full ones not past the MTU."""
    sizes = [1, 20, 100, 1410, 1419, 1420]
    out = micro.Slots(len(sizes))
    micro.wgc_seal(micro.Sender(key, REMOTE_INDEX, MTU), slots(micro, [b"\x45" * n for n in sizes]), out,
                   micro.Workers(1, len(sizes)))
    assert [out.length(i) - 32 for i in range(len(sizes))] == [16, 32, 112, 1420, 1420, 1420]
    assert ietf_decrypt(out.get(2)[16:], None, nonce(2), key) == b"\x45" * 100 + b"\0" * 12


# ---- TSO: split and seal ------------------------------------------------------------

@pytest.fixture(scope="module")
def tso_read():
    payload = os.urandom(TSO_SEGMENTS * MSS)
    return vnet_tso(tcp_packet(1_000_000, payload, ident=500, checksum=False)), payload


def check_segments(segments, payload, first_seq, first_ident):
    """Each segment: a full IPv4/TCP packet with valid checksums, in sequence."""
    assert all(len(s) == PACKET for s in segments)
    for i, s in enumerate(segments):
        assert inet_sum(s[:20]) == 0xFFFF
        assert struct.unpack("!H", s[2:4])[0] == PACKET
        assert struct.unpack("!H", s[4:6])[0] == first_ident + i
        assert struct.unpack("!I", s[24:28])[0] == first_seq + i * MSS
        pseudo = SRC + DST + struct.pack("!BBH", 0, TCP, len(s) - 20)
        assert inet_sum(pseudo + s[20:]) == 0xFFFF
    assert b"".join(s[52:] for s in segments) == payload


@timed("split")
def test_split(micro, benchmark, rate, tso_read):
    read, payload = tso_read
    out = micro.Slots(BATCH)
    count = benchmark(micro.split, slots(micro, [read]), out)
    rate(f"split tso read into {TSO_SEGMENTS}", "split", "wgc", TSO_SEGMENTS, TSO_SEGMENTS * PACKET)

    assert count == TSO_SEGMENTS
    check_segments([out.get(i)[16:] for i in range(count)], payload, 1_000_000, 500)


@timed("tso")
@SIDES
def test_tso_seal(micro, benchmark, rate, key, table, tso_read, side, threads):
    read, payload = tso_read
    segments = [tcp_packet(1_000_000 + i * MSS, payload[i * MSS:(i + 1) * MSS], ident=500 + i)
                for i in range(TSO_SEGMENTS)]
    out = micro.Slots(BATCH)
    sender = micro.Sender(key, REMOTE_INDEX, MTU)
    if side == "wgc":
        result = benchmark(micro.wgc_tx_vnet, sender, table[0], slots(micro, [read]), out,
                           micro.Workers(threads, BATCH))
        assert result == TSO_SEGMENTS * (16 + PACKET + 16)
    else:
        tun = slots(micro, segments)     # the bound seals segments already cut
        result = benchmark(micro.sodium_seal, sender, tun, out)
        assert result == TSO_SEGMENTS
    rate(f"tso read: cut, route, seal 47 {label(side, threads)}", "tso read: 47 segments of 1420 B", side,
         TSO_SEGMENTS, TSO_SEGMENTS * PACKET, threads=threads)

    first = sender.counter - TSO_SEGMENTS
    opened = [ietf_decrypt(out.get(i)[16:16 + PACKET + 16], None, nonce(first + i), key)
              for i in range(TSO_SEGMENTS)]
    assert opened == segments
    check_segments(opened, payload, 1_000_000, 500)


# ---- GRO --------------------------------------------------------------------------

@timed("gro")
def test_coalesce(micro, benchmark, rate):
    payload = os.urandom(GRO_SEGMENTS * MSS)
    segments = [tcp_packet(5_000 + i * MSS, payload[i * MSS:(i + 1) * MSS], ident=40 + i)
                for i in range(GRO_SEGMENTS)]
    batch = slots(micro, segments)
    coalescer = micro.Coalescer(BATCH)
    items = benchmark(coalescer.run, batch)
    rate(f"coalesce {GRO_SEGMENTS} segments into one", "coalesce", "wgc", GRO_SEGMENTS)

    assert items == 1
    [(header, packet)] = coalescer.items()
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = struct.unpack("=BBHHHH", header)
    assert (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) == (NEEDS_CSUM, GSO_TCPV4, 52, MSS, 20, 16)
    assert len(packet) == 52 + GRO_SEGMENTS * MSS
    assert struct.unpack("!H", packet[2:4])[0] == len(packet)
    assert inet_sum(packet[:20]) == 0xFFFF
    assert packet[52:] == payload
    # Cut again as the kernel would, it gives back exactly the segments.
    out = micro.Slots(BATCH)
    assert micro.split(slots(micro, [header + packet]), out) == GRO_SEGMENTS
    assert [out.get(i)[16:] for i in range(GRO_SEGMENTS)] == segments


# ---- allowed IPs and the replay window ------------------------------------------------

@timed("trie")
@pytest.mark.parametrize("family", [4, 6])
def test_trie_lookup(micro, benchmark, rate, table, family):
    trie, prefixes = table
    rng = random.Random(family)
    addresses = []
    for i in range(BATCH):
        peer = rng.randrange(1, PEERS)
        if family == 4:
            choices = [f"10.{peer >> 8}.{peer & 0xFF}.1", f"10.77.{i}.{peer & 0xFF}",
                       f"10.{100 + (peer >> 8)}.{peer & 0xFF}.{i + 2}", f"192.0.2.{i}"]
        else:
            choices = [f"fd00:{peer:x}::1", f"fd77:0:{i:x}::{peer:x}", f"fd00:{peer:x}::2", f"2001:db8::{i:x}"]
        addresses.append(ipaddress.ip_address(choices[i % 4]))
    found = array.array("i", [0] * BATCH)
    total = benchmark(micro.trie_lookup, trie, b"".join(a.packed for a in addresses), family, REPEAT,
                      memoryview(found))
    rate(f"trie lookup{family}, {PEERS} peers", "trie", "wgc", BATCH * REPEAT, unit="lookups")

    expected = [reference_lookup(prefixes, a) for a in addresses]
    assert list(found) == expected
    assert total == sum(expected) * REPEAT
    assert len(set(expected)) >= 16             # the batch spreads over the table


@timed("replay")
def test_replay_window(micro, benchmark, rate):
    window = micro.Replay()
    accepted = benchmark(window.run, REPEAT, BATCH)
    rate("replay check, in order", "replay", "wgc", BATCH * REPEAT, unit="checks")

    assert accepted == BATCH * REPEAT
    window.rewind(BATCH)                        # the last batch again: all replays
    assert window.run(1, BATCH) == 0
    assert window.run(1, BATCH) == BATCH        # then fresh counters again
    late = micro.Replay()
    assert late.run(1, 10_000) == 10_000
    late.rewind(10_000)                         # 0..63: more than 8128 behind, and seen
    assert late.run(1, BATCH) == 0
