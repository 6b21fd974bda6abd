"""Handshake load at a wgc responder: valid initiations from many peers.

The generator (scripts/handshake_load.py) is built on wgc.noise and
wgc.cookie and behaves as real initiators: each peer sends from its own
source, opens the cookie replies it gets and resends with mac2.  In the
protocol tests retries after silence are pushed beyond the test's bound, so
that every answer is to a peer's first initiation or to its resend with mac2,
and the responder is stopped (SIGSTOP) until the whole first burst is sent, so
that it finds the burst waiting however the shared CPUs are scheduled.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "scripts"))

from handshake_load import DISTINCT, ONE_64, OWN_64, SHARED, MemoryWatch, Responder

from wgc import constants as C

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

NO_RETRY = 60.0  # seconds: longer than any load below

# What a load may add to the daemon's resident memory, beyond what it holds
# once configured.  Per answered peer the core keeps one keypair with its
# replay window (about 1.1 KiB); the handshake queue (1024 messages of 176
# bytes) is allocated at start and may become resident; the rate limiter's
# buckets are about 200 bytes each.  For 1,000 peers that is under 2 MiB;
# twice that leaves room for the allocators' granularity, and a leak of a few
# KiB per handshake exceeds it.
PEERS_FOR_MEMORY = 1000
MEMORY_CAP_KIB = 4 * 1024


@pytest.mark.parametrize("layout", [DISTINCT, OWN_64])
def test_below_the_under_load_threshold_every_initiation_is_answered(netns, layout):
    # Fewer peers than the threshold, all waiting at once: the responder's
    # backlog stays just below it, so no peer may be sent a cookie.
    count = C.UNDER_LOAD_THRESHOLD - 1
    responder = Responder(netns, "wgc", count)
    peers = responder.drive(layout, rate=0, seconds=10, retry_after=NO_RETRY, freeze=True)["peers"]
    assert [p["peer"] for p in peers if p["completed"] is None] == []
    assert [p["peer"] for p in peers if p["cookies"] or p["sends"] != 1] == []
    assert sum(p["strays"] for p in peers) == 0


@pytest.mark.parametrize("layout", [DISTINCT, OWN_64])
def test_above_the_threshold_cookies_come_and_a_resend_with_mac2_is_answered(netns, layout):
    # Twice the threshold at once from as many sources (IPv4 addresses, or
    # IPv6 /64s, all in one /32): the backlog passes the threshold, later
    # initiations (no mac2 yet) get cookie replies, and each resend with the
    # cookie's mac2 is answered (one packet per source is within the rate
    # limiter's burst).
    count = 2 * C.UNDER_LOAD_THRESHOLD
    responder = Responder(netns, "wgc", count)
    peers = responder.drive(layout, rate=0, seconds=10, retry_after=NO_RETRY, freeze=True)["peers"]
    cookied = [p for p in peers if p["cookies"]]
    assert len(cookied) >= C.UNDER_LOAD_THRESHOLD // 2, "under-load mode did not engage"
    assert sum(p["strays"] for p in peers) == 0  # every cookie reply opened with the mac1 we sent
    assert [p["peer"] for p in peers if p["completed"] is None] == []
    assert [p["peer"] for p in cookied if len(p["cookies"]) != 1 or p["sends"] != 2] == []
    # Answered after its cookie (in the same drain of its socket, when the
    # responder is quick, so at the same instant).
    assert all(p["completed"] >= p["cookies"][0] for p in cookied)


def test_under_load_a_cookie_is_good_only_at_the_port_it_was_given_to(netns):
    # The same load, but each peer resends from a new port of its address:
    # the cookie it holds was made for the old port, so its mac2 is wrong
    # there and it gets a second cookie reply; with that one it is answered.
    count = 2 * C.UNDER_LOAD_THRESHOLD
    responder = Responder(netns, "wgc", count)
    peers = responder.drive(rate=0, seconds=10, retry_after=NO_RETRY, moves=1, freeze=True)["peers"]
    cookied = [p for p in peers if p["cookies"]]
    assert len(cookied) >= C.UNDER_LOAD_THRESHOLD // 2, "under-load mode did not engage"
    assert sum(p["strays"] for p in peers) == 0
    assert [p["peer"] for p in cookied if len(p["cookies"]) != 2 or p["sends"] != 3] == []
    assert [p["peer"] for p in peers if p["completed"] is None] == []


@pytest.mark.parametrize("layout", [SHARED, ONE_64])
def test_under_load_one_source_is_answered_at_the_rate_limit(netns, layout):
    # The same load, every peer from its own port of one IPv4 address, or
    # from its own IPv6 address of one /64 (one source, as the kernel groups
    # them): after the cookies, the resends with a valid mac2 all come from
    # one source, of which the rate limiter lets through a burst and then 20
    # per second.
    count = 2 * C.UNDER_LOAD_THRESHOLD
    responder = Responder(netns, "wgc", count)
    peers = responder.drive(layout, rate=0, seconds=3, retry_after=NO_RETRY, freeze=True)["peers"]
    cookied = [p for p in peers if p["cookies"]]
    assert len(cookied) >= C.UNDER_LOAD_THRESHOLD // 2, "under-load mode did not engage"
    answered = sorted(p["completed"] for p in cookied if p["completed"] is not None)
    assert answered, "no resend with mac2 was answered"
    span = answered[-1] - answered[0]
    # +2: the span is seen from the generator, whose receive times jitter.
    allowed = C.RATELIMIT_BURST + C.RATELIMIT_PACKETS_PER_SECOND * span + 2
    assert len(answered) <= allowed, f"{len(answered)} answered in {span:.3f} s from one source"


def test_memory_stays_under_its_cap(netns):
    responder = Responder(netns, "wgc", PEERS_FOR_MEMORY)
    configured = responder.rss_kib()
    with MemoryWatch(responder) as watch:
        peers = responder.drive(rate=0, seconds=30)["peers"]
    watch.samples.append(responder.rss_kib())
    assert [p["peer"] for p in peers if p["completed"] is None] == []
    grown = max(watch.samples) - configured
    print(f"\nRSS {configured / 1024:.1f} MiB configured, +{grown / 1024:.1f} MiB under {PEERS_FOR_MEMORY} handshakes")
    assert grown < MEMORY_CAP_KIB
