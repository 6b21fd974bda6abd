"""Hostile datagrams at a running wgc: silence, no crash, bounded memory.

The sender runs in the peer's namespace and aims only at wgc's address on
the test cable; every flood is bounded in count and time.
"""
import base64
import json
import sys
import textwrap

import pytest

from wgnet import tunnel

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]

SENDER = textwrap.dedent("""
    import json, os, random, socket, sys, time
    from wgc import noise
    target, kind, public = sys.argv[1], sys.argv[5], sys.argv[6]
    port, count, seconds = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    mac1_key = noise.hash(b"mac1----", bytes.fromhex(public))
    rng = random.Random(7)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    sizes = {1: 148, 2: 92, 3: 64, 4: 32}
    sent = 0
    replies = []  # the first byte (the message type) of everything that came back

    def drain():
        while True:
            try:
                replies.append(s.recv(65536)[0])
            except BlockingIOError:
                return

    deadline = time.monotonic() + seconds
    while sent < count and time.monotonic() < deadline:
        if kind == "junk":
            t = rng.choice([0, 1, 2, 3, 4, 5, 255])
            size = rng.choice([0, 1, 3, 4, 31, 32, 63, 64, 65, 91, 92, 93, 147, 148, 149, 1500, 65000])
            size = rng.choice([size, sizes.get(t, size)])
            body = bytes([t, 0, 0, 0]) + os.urandom(max(0, size - 4)) if size >= 4 else os.urandom(size)
            if t in (1, 2) and len(body) == sizes[t] and rng.random() < 0.5:
                body = body[:-32] + noise.mac(mac1_key, body[:-32]) + bytes(16)  # valid mac1, junk inside
        else:  # initiations with a valid mac1: what a handshake flood looks like
            body = bytes([1, 0, 0, 0]) + os.urandom(112)
            body += noise.mac(mac1_key, body) + bytes(16)
        try:
            s.sendto(body[:65000], (target, port))
            sent += 1
        except (BlockingIOError, OSError):
            time.sleep(0.001)
        if sent % 64 == 0:
            drain()  # before the receive buffer overflows
    # What came back: cookie replies are allowed only for valid-mac1 floods.
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        drain()
        time.sleep(0.01)
    print(json.dumps({"sent": sent, "replies": replies}))
""")


def attack(attacker, victim, kind: str, count: int, seconds: float) -> dict:
    public = base64.b64decode(victim.public_key).hex()
    out = attacker.ns.run(sys.executable, "-c", SENDER, victim.outer, str(victim.port), str(count),
                          str(seconds), kind, public, timeout=seconds + 30)
    return json.loads(out.stdout)


def rss_kib(end) -> int:
    pid = end.ns.pids()[0]
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


def test_junk_gets_no_reply_and_the_tunnel_survives(netns):
    a, b = tunnel(netns, "wgc", "wgc", with_ipv6=False)
    a.ping(b.inner4, count=1)
    before = b.transfer()
    result = attack(a, b, "junk", count=20000, seconds=60)
    assert result["sent"] == 20000
    assert result["replies"] == []
    assert b.ns.pids(), "wgc died"
    assert b.transfer() == before  # nothing unauthenticated was counted
    a.ping(b.inner4, count=3)


# The flood README.md describes, and how much it may add to the daemon's memory (the
# handshake queue and the staged-packet queues have fixed caps).
FLOOD_INITIATIONS = 200_000
FLOOD_RSS_GROWTH_MIB = 2


def test_handshake_flood_keeps_memory_bounded(netns):
    a, b = tunnel(netns, "wgc", "wgc", with_ipv6=False)
    a.ping(b.inner4, count=1)
    idle = rss_kib(b)
    result = attack(a, b, "flood", count=FLOOD_INITIATIONS, seconds=90)
    after = rss_kib(b)
    print(f"\nhandshake flood: {result['sent']} initiations, RSS {idle / 1024:.1f} -> {after / 1024:.1f} MiB, "
          f"{len(result['replies'])} cookie replies")
    assert result["sent"] == FLOOD_INITIATIONS
    # Under load, initiations without a mac2 get cookie replies only, never a response,
    # and at most one reply each.
    assert set(result["replies"]) == {3}
    assert 0 < len(result["replies"]) <= FLOOD_INITIATIONS
    assert after - idle < FLOOD_RSS_GROWTH_MIB * 1024
    a.ping(b.inner4, count=3)
