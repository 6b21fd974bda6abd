"""A long run: traffic both ways through a wgc<->wgc and a wgc<->wireguard-go tunnel at once.

For SECONDS, each tunnel carries a bidirectional iperf3 TCP stream held to a
modest rate (so that both tunnels and their pings share the two cores) and a
ping every 200 ms from the left end.  Recorded per tunnel: the rekeys (each
new latest-handshake time the left end reports, polled every second), the longest gap between two
ping replies and the pings lost, and both daemons' RSS every 10 s and at the
end.  Prints a line per 10-s sample, then a summary per tunnel, the last line JSON.

    python scripts/soak.py SECONDS [--rate 50M] [--reload-every S]

--reload-every has the left end's configuration loaded again with `wg setconf`
every S seconds, which re-creates the peer without its sessions (as in the
kernel): a handshake under traffic at once, where a rekey of its own comes only
after 120 s.  The short soak in tests/test_soak.py uses it.

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

from netns import Namespaces, wait_for
from wgnet import End, rss_kib, tunnel

PAIRS = [("wgc", "wgc"), ("wgc", "wireguard-go")]
PING_INTERVAL = 0.2
SAMPLE_EVERY = 10.0
WARMUP = 40.0       # seconds of load before the RSS that later samples are held against
GRACE = 30.0
IPERF_PORT = ":5201"
_REPLY = re.compile(r"^\[(\d+\.\d+)\] .*icmp_seq=(\d+)")


def handshake_times(end: End) -> int:
    """The peer's latest handshake (unix seconds; 0: none) as `wg show` gives it."""
    return int(end.show("latest-handshakes").split()[1])


class Tunnel:
    """One tunnel under load: its iperf3 pair, its ping stream, what they saw."""

    def __init__(self, factory, left: str, right: str, seconds: float, rate: str):
        self.name = f"{left}<->{right}"
        self.a, self.b = tunnel(factory, left, right, with_ipv6=False)
        self.a.ping(self.b.inner4, count=1)
        # Only the daemons run in the namespaces yet: their processes are the ones to
        # sample (iperf3 and ping come and go, and end at about the last sample).
        self.daemons = (self.a.ns.pids(), self.b.ns.pids())
        self.seconds = seconds
        self.server = self.b.ns.popen("iperf3", "-s", "-1", "-B", self.b.inner4,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: IPERF_PORT in self.b.ns.run("ss", "-Hltn", check=False).stdout, what="iperf3 server")
        self.client = self.a.ns.popen("iperf3", "-c", self.b.inner4, "--bidir", "-b", rate, "-t", str(int(seconds)),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        count = int(seconds / PING_INTERVAL)
        self.pinger = self.a.ns.popen("ping", "-D", "-i", str(PING_INTERVAL), "-W", "2", "-c", str(count),
                                      self.b.inner4, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.sent = count
        self.replies: list[float] = []
        self.reader = threading.Thread(target=self._read_pings, daemon=True)
        self.reader.start()
        self.handshakes = {handshake_times(self.a)}
        self.rss: list[tuple[float, float, float]] = []
        self.reloads = 0

    def _read_pings(self) -> None:
        assert self.pinger.stdout is not None
        for line in self.pinger.stdout:
            match = _REPLY.match(line)
            if match:
                self.replies.append(float(match.group(1)))

    def sample(self, t: float) -> None:
        left, right = self.daemons
        self.rss.append((t, rss_kib(left) / 1024, rss_kib(right) / 1024))

    def poll_handshakes(self) -> None:
        """One end's view only: both ends' clocks may put one handshake in two seconds."""
        self.handshakes.add(handshake_times(self.a))

    def reload(self) -> None:
        """`wg setconf` of the left end's configuration, unchanged: it replaces the
        peer, so the next packet either way needs a new handshake."""
        a, b = self.a, self.b
        config = (f"[Interface]\nPrivateKey = {a.private_key}\nListenPort = {a.port}\n"
                  f"[Peer]\nPublicKey = {b.public_key}\nEndpoint = {b.outer}:{b.port}\nAllowedIPs = {b.inner4}/32\n")
        a.wg("setconf", a.iface, "/dev/stdin", input=config)
        self.reloads += 1

    def finish(self, warmup: float) -> dict:
        for proc in (self.pinger, self.client, self.server):
            try:
                proc.wait(timeout=GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.reader.join(timeout=5)
        gaps = [b - a for a, b in zip(self.replies, self.replies[1:], strict=False)]
        longest = max(range(len(gaps)), key=gaps.__getitem__, default=None)
        first_rss = next((r for r in self.rss if r[0] >= min(warmup, self.seconds)), (0, 0, 0))
        return {
            "tunnel": self.name,
            "seconds": self.seconds,
            # Each distinct latest-handshake time is a handshake; the first made the
            # tunnel, each reload makes one, the rest are rekeys.
            "handshakes": len(self.handshakes - {0}) - 1,
            "rekeys": len(self.handshakes - {0}) - 1 - self.reloads,
            "reloads": self.reloads,
            "load_exit_codes": [self.client.returncode, self.server.returncode],
            "pings_sent": self.sent,
            "pings_lost": self.sent - len(self.replies),
            "longest_gap_s": round(max(gaps, default=0.0), 3),
            # When it began (s after the first reply), and how many gaps passed 1 s:
            # gaps in both tunnels at once point at the machine, not at a tunnel.
            "longest_gap_at_s": None if longest is None else round(self.replies[longest] - self.replies[0], 1),
            "gaps_over_1s": sum(gap > 1.0 for gap in gaps),
            "rss_mib_after_warmup": [round(first_rss[1], 1), round(first_rss[2], 1)],
            "rss_mib_highest": [round(max((r[1] for r in self.rss), default=0), 1),
                                round(max((r[2] for r in self.rss), default=0), 1)],
            "rss_mib_last": [round(self.rss[-1][1], 1), round(self.rss[-1][2], 1)] if self.rss else [],
        }


def soak(seconds: float, rate: str = "50M", pairs=PAIRS, reload_every: float | None = None,
         warmup: float = WARMUP) -> list[dict]:
    """The run; reload_every: seconds between `wg setconf` reloads of each left end
    (none in the last 5 s, so that every reload's handshake is seen); warmup: from
    which sample on the RSS counts as "after warm-up"."""
    with Namespaces() as factory:
        tunnels = [Tunnel(factory, left, right, seconds, rate) for left, right in pairs]
        start = time.monotonic()
        next_sample = start + SAMPLE_EVERY
        next_reload = start + reload_every if reload_every else None
        reload_every = reload_every or 0.0
        while time.monotonic() - start < seconds:
            time.sleep(1.0)
            for t in tunnels:
                t.poll_handshakes()
            now = time.monotonic()
            if next_reload is not None and now >= next_reload and now - start < seconds - 5:
                next_reload += reload_every
                for t in tunnels:
                    t.reload()
            if now >= next_sample:
                next_sample += SAMPLE_EVERY
                report(tunnels, now - start)
        report(tunnels, time.monotonic() - start)
        return [t.finish(warmup) for t in tunnels]


def report(tunnels: list[Tunnel], elapsed: float) -> None:
    """An RSS sample of every tunnel's daemons, and a line of what it saw so far."""
    for t in tunnels:
        t.sample(elapsed)
        _, a, b = t.rss[-1]
        print(f"t={elapsed:6.0f}s {t.name}: rss {a:.1f} / {b:.1f} MiB, "
              f"handshakes {len(t.handshakes - {0})}, replies {len(t.replies)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", type=float)
    parser.add_argument("--rate", default="50M", help="iperf3 -b per direction (default 50M)")
    parser.add_argument("--reload-every", type=float, metavar="S",
                        help="wg setconf the left ends every S seconds (a handshake under traffic each time)")
    args = parser.parse_args()
    results = soak(args.seconds, args.rate, reload_every=args.reload_every)
    for r in results:
        print(f"{r['tunnel']}: {r['rekeys']} rekeys and {r['reloads']} reloads in {r['seconds']:.0f} s; "
              f"pings lost {r['pings_lost']} of "
              f"{r['pings_sent']}, longest gap {r['longest_gap_s']} s at {r['longest_gap_at_s']} s, "
              f"{r['gaps_over_1s']} gaps over 1 s; RSS after warm-up {r['rss_mib_after_warmup']}, "
              f"highest {r['rss_mib_highest']}, last {r['rss_mib_last']} MiB")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
