"""The per-source token bucket on a fake clock."""
from wgc import constants as C
from wgc.ratelimiter import PACKET_COST, RateLimiter

V4 = bytes([192, 0, 2, 1])
V6 = bytes.fromhex("20010db8000000010000000000000001")


def test_burst_then_twenty_per_second():
    r = RateLimiter()
    now = 5 * C.SECOND
    assert [r.allow(V4, now) for _ in range(6)] == [True] * 5 + [False]
    assert not r.allow(V4, now + PACKET_COST - 1)
    assert r.allow(V4, now + 2 * PACKET_COST - 1)   # the refill from the two calls since
    assert not r.allow(V4, now + 2 * PACKET_COST - 1)


def test_ipv6_sources_share_their_64():
    r = RateLimiter()
    neighbour = V6[:8] + bytes(8)
    elsewhere = bytes.fromhex("20010db8000000020000000000000001")
    for _ in range(5):
        assert r.allow(V6, 0)
    assert not r.allow(neighbour, 0)
    assert r.allow(elsewhere, 0)


def test_table_is_capped_and_idle_entries_expire():
    r = RateLimiter(max_entries=3)
    for i in range(3):
        assert r.allow(bytes([10, 0, 0, i]), 0)
    assert not r.allow(bytes([10, 0, 0, 9]), 0)      # full: new sources wait
    assert len(r) == 3
    assert r.allow(bytes([10, 0, 0, 9]), C.SECOND)   # a second later the idle ones are gone
    assert len(r) == 1
