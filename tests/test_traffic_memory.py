"""Memory under sustained traffic: the daemon's RSS reaches a plateau.

The data plane's packet buffers are allocated once, with room for 64 KiB
packets, and only the pages packets touch become resident; which pages a
stream touches depends on how its batches happen to fill.  Several rounds of
the same bulk transfer through a real tunnel must leave RSS where the first
round left it: a buffer whose resident part keeps growing with the rounds is
one whose cap is larger than the traffic so far has reached.
"""
import json

import pytest

from test_lifecycle import daemon_pid, rss_kib
from wgnet import iperf3, tunnel

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

ROUNDS = 10
ROUND_BYTES = "48M"          # each way (iperf3 --bidir), per round
ROUND_SECONDS = 20           # the bound on a round should the tunnel be slow
PLATEAU_MARGIN_MIB = 0.5


def test_rss_under_repeated_bulk_traffic_stays_at_the_first_rounds_level(netns):
    a, b = tunnel(netns, "wgc", "wgc", with_ipv6=False)
    a.ping(b.inner4, count=1)
    pids = {end.iface: daemon_pid(end.ns) for end in (a, b)}
    rounds = []
    for _ in range(ROUNDS):
        result = json.loads(iperf3(a, b, seconds=ROUND_SECONDS, extra=("--bidir",), amount=ROUND_BYTES).stdout)
        assert result["end"]["sum_received"]["bytes"] > 0
        rounds.append({iface: rss_kib([pid]) / 1024 for iface, pid in pids.items()})
    print("\nRSS (MiB) after each round: " + "; ".join(
        ", ".join(f"{rss:.1f}" for rss in after.values()) for after in rounds))
    for iface in pids:
        first = rounds[0][iface]
        assert max(after[iface] for after in rounds) <= first + PLATEAU_MARGIN_MIB, (iface, rounds)
