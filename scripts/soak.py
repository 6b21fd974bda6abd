"""A long run: traffic both ways through a wgc<->wgc and a wgc<->wireguard-go tunnel at once.

For SECONDS, each tunnel carries a bidirectional iperf3 TCP stream held to a
modest rate (so that both tunnels and their pings share the two cores) and a
ping every 200 ms from the left end.  Recorded per tunnel: the rekeys (each
new latest-handshake time the left end reports, polled every second), the longest gap between two
ping replies and the pings lost, and every daemon's RSS every 10 s.  Prints
a line per 10-s sample, then a summary per tunnel, the last line JSON.

    python scripts/soak.py SECONDS [--rate 50M]

Everything runs in namespaces it makes and removes; every loop is bounded by
SECONDS (plus a fixed grace for start-up and shutdown).
"""
import argparse
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from netns import Namespaces
from wgnet import End, tunnel

PAIRS = [("wgc", "wgc"), ("wgc", "wireguard-go")]
PING_INTERVAL = 0.2
SAMPLE_EVERY = 10.0
GRACE = 30.0
_REPLY = re.compile(r"^\[(\d+\.\d+)\] .*icmp_seq=(\d+)")


def rss_mib(end: End, load: set[int]) -> float:
    """The RSS of the end's daemon: every process of its namespace but the load's (iperf3, ping)."""
    total = 0
    for pid in set(end.ns.pids()) - load:
        with open(f"/proc/{pid}/status") as f:
            total += int(next(line for line in f if line.startswith("VmRSS:")).split()[1])
    return total / 1024


def handshake_times(end: End) -> int:
    """The peer's latest handshake (unix seconds; 0: none) as `wg show` gives it."""
    return int(end.show("latest-handshakes").split()[1])


class Tunnel:
    """One tunnel under load: its iperf3 pair, its ping stream, what they saw."""

    def __init__(self, factory, left: str, right: str, seconds: float, rate: str):
        self.name = f"{left}<->{right}"
        self.a, self.b = tunnel(factory, left, right, with_ipv6=False)
        self.a.ping(self.b.inner4, count=1)
        self.seconds = seconds
        self.server = self.b.ns.popen("iperf3", "-s", "-1", "-B", self.b.inner4,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        self.client = self.a.ns.popen("iperf3", "-c", self.b.inner4, "--bidir", "-b", rate, "-t", str(int(seconds)),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        count = int(seconds / PING_INTERVAL)
        self.pinger = self.a.ns.popen("ping", "-D", "-i", str(PING_INTERVAL), "-W", "2", "-c", str(count),
                                      self.b.inner4, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.sent = count
        self.replies: list[float] = []
        self.reader = threading.Thread(target=self._read_pings, daemon=True)
        self.reader.start()
        self.load = {self.server.pid, self.client.pid, self.pinger.pid}
        self.handshakes = {handshake_times(self.a)}
        self.rss: list[tuple[float, float, float]] = []

    def _read_pings(self) -> None:
        assert self.pinger.stdout is not None
        for line in self.pinger.stdout:
            match = _REPLY.match(line)
            if match:
                self.replies.append(float(match.group(1)))

    def sample(self, t: float) -> None:
        self.rss.append((t, rss_mib(self.a, self.load), rss_mib(self.b, self.load)))

    def poll_handshakes(self) -> None:
        """One end's view only: both ends' clocks may put one handshake in two seconds."""
        self.handshakes.add(handshake_times(self.a))

    def finish(self) -> dict:
        for proc in (self.pinger, self.client, self.server):
            try:
                proc.wait(timeout=GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.reader.join(timeout=5)
        gaps = [b - a for a, b in zip(self.replies, self.replies[1:], strict=False)]
        first_rss = self.rss[min(3, len(self.rss) - 1)] if self.rss else (0, 0, 0)  # at 40 s, past the warm-up
        return {
            "tunnel": self.name,
            "seconds": self.seconds,
            # Each distinct latest-handshake time is a handshake; the first made the tunnel.
            "rekeys": len(self.handshakes - {0}) - 1,
            "pings_sent": self.sent,
            "pings_lost": self.sent - len(self.replies),
            "longest_gap_s": round(max(gaps, default=0.0), 3),
            "rss_mib_after_warmup": [round(first_rss[1], 1), round(first_rss[2], 1)],
            "rss_mib_highest": [round(max((r[1] for r in self.rss), default=0), 1),
                                round(max((r[2] for r in self.rss), default=0), 1)],
            "rss_mib_last": [round(self.rss[-1][1], 1), round(self.rss[-1][2], 1)] if self.rss else [],
        }


def soak(seconds: float, rate: str = "50M", pairs=PAIRS) -> list[dict]:
    with Namespaces() as factory:
        tunnels = [Tunnel(factory, left, right, seconds, rate) for left, right in pairs]
        start = time.monotonic()
        next_sample = start + SAMPLE_EVERY
        while time.monotonic() - start < seconds:
            time.sleep(1.0)
            for t in tunnels:
                t.poll_handshakes()
            if time.monotonic() >= next_sample:
                next_sample += SAMPLE_EVERY
                elapsed = time.monotonic() - start
                for t in tunnels:
                    t.sample(elapsed)
                    _, a, b = t.rss[-1]
                    print(f"t={elapsed:6.0f}s {t.name}: rss {a:.1f} / {b:.1f} MiB, "
                          f"handshakes {len(t.handshakes - {0})}, replies {len(t.replies)}", flush=True)
        return [t.finish() for t in tunnels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", type=float)
    parser.add_argument("--rate", default="50M", help="iperf3 -b per direction (default 50M)")
    args = parser.parse_args()
    results = soak(args.seconds, args.rate)
    for r in results:
        print(f"{r['tunnel']}: {r['rekeys']} rekeys in {r['seconds']:.0f} s; pings lost {r['pings_lost']} of "
              f"{r['pings_sent']}, longest gap {r['longest_gap_s']} s; RSS after warm-up {r['rss_mib_after_warmup']}, "
              f"highest {r['rss_mib_highest']}, last {r['rss_mib_last']} MiB")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
