"""wgc against Debian's wireguard-go, side by side on this machine.

For N rounds, alternating which goes first, each pair of implementations
gets a fresh tunnel between two namespaces and is measured for one iperf3
TCP stream, iperf3 UDP at full speed (-b 0 -l 1300, rate received and
loss), ping RTT through the idle tunnel, and the daemons' memory (idle and
at the end of the load).  Prints every figure, the medians, and the ratios
wgc / wireguard-go.  Everything runs in namespaces it creates and removes.

With --soak S, it instead keeps one tunnel of each kind under TCP load in
both directions for S seconds and samples the daemons' memory every 10 s:
after the warm-up (the first 30 s) it must not grow.

With --scrape, it instead measures what being watched costs: the wgc<->wgc
TCP stream, both daemons with the metrics endpoint on, alternately without
and with a scraper fetching each daemon's /metrics every 100 ms (from inside
its namespace) for the whole iperf3 run; the medians and their ratio.

    python scripts/bench.py [--rounds N] [--seconds S]
    python scripts/bench.py --soak 300
    python scripts/bench.py --scrape [--rounds N] [--seconds S]
"""
import argparse
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from netns import Namespaces
from wgc.daemon import ENV_METRICS
from wgnet import iperf3, tunnel

PAIRS = [("wgc", "wgc"), ("wireguard-go", "wireguard-go"), ("wgc", "wireguard-go")]


def rss_mib(end) -> float:
    total = 0
    for pid in end.ns.pids():
        with open(f"/proc/{pid}/status") as f:
            total += int(next(line for line in f if line.startswith("VmRSS:")).split()[1])
    return total / 1024


def measure(left: str, right: str, seconds: float) -> dict:
    with Namespaces() as factory:
        a, b = tunnel(factory, left, right, with_ipv6=False)
        a.ping(b.inner4, count=3, interval=0.1)
        idle = max(rss_mib(a), rss_mib(b))
        out = a.ping(b.inner4, count=20, interval=0.05).stdout
        rtt = float(out.strip().splitlines()[-1].split("=")[1].split("/")[1])
        tcp = json.loads(iperf3(a, b, seconds).stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
        udp_run = json.loads(iperf3(a, b, seconds, extra=("-u", "-b", "0", "-l", "1300")).stdout)["end"]["sum"]
        loaded = max(rss_mib(a), rss_mib(b))
        return {
            "tcp_gbps": tcp,
            "udp_gbps": udp_run["bits_per_second"] / 1e9 * (1 - udp_run["lost_percent"] / 100),
            "udp_loss_pct": udp_run["lost_percent"],
            "rtt_ms": rtt,
            "idle_rss_mib": idle,
            "loaded_rss_mib": loaded,
        }


def soak(implementation: str, seconds: float, warmup: float = 30, every: float = 10) -> list[float]:
    """The larger end's RSS every `every` seconds under bidirectional TCP load."""
    with Namespaces() as factory:
        a, b = tunnel(factory, implementation, implementation, with_ipv6=False)
        a.ping(b.inner4, count=1)
        server = b.ns.popen("iperf3", "-s", "-1", "-B", b.inner4,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        client = a.ns.popen("iperf3", "-c", b.inner4, "--bidir", "-t", str(seconds),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples = []
        try:
            start = time.monotonic()
            while client.poll() is None and time.monotonic() - start < seconds + 30:
                time.sleep(every)
                samples.append(max(rss_mib(a), rss_mib(b)))
                print(f"  {implementation} t={time.monotonic() - start:5.0f}s rss={samples[-1]:.1f} MiB", flush=True)
        finally:
            for p in (client, server):
                p.kill()
                p.wait()
        settled = samples[int(warmup // every) - 1:] or samples
        print(f"{implementation}: after warm-up {settled[0]:.1f} MiB, highest {max(settled):.1f} MiB, "
              f"growth {max(settled) - settled[0]:+.1f} MiB", flush=True)
        return samples


METRICS_PORT = 9586
SCRAPE_EVERY = 0.1  # s


class Scraper:
    """GET /metrics every SCRAPE_EVERY s from inside a namespace, until stopped."""

    def __init__(self, ns):
        self.answers: dict[int, int] = {}  # HTTP status -> how many
        self.failures = 0  # no answer at all
        self._stop = threading.Event()
        self._thread = threading.Thread(target=ns.inside, args=(self._loop,))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(SCRAPE_EVERY):
            try:
                with socket.create_connection(("127.0.0.1", METRICS_PORT), timeout=5) as sock:
                    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    reply = b""
                    while chunk := sock.recv(65536):
                        reply += chunk
                status = int(reply.split(b" ", 2)[1])
                self.answers[status] = self.answers.get(status, 0) + 1
            except (OSError, ValueError, IndexError):
                self.failures += 1


def scraped_tcp(scrape: bool, seconds: float) -> tuple[float, list[Scraper]]:
    """wgc<->wgc TCP Gbit/s with the metrics endpoint on, and the scrapers if scrape."""
    with Namespaces() as factory:
        a, b = tunnel(factory, "wgc", "wgc", with_ipv6=False, env={ENV_METRICS: f"127.0.0.1:{METRICS_PORT}"})
        for end in (a, b):
            end.ns.run("ip", "link", "set", "lo", "up")
        a.ping(b.inner4, count=3, interval=0.1)
        with contextlib.ExitStack() as stack:
            scrapers = [stack.enter_context(Scraper(end.ns)) for end in (a, b)] if scrape else []
            run = json.loads(iperf3(a, b, seconds).stdout)
        return run["end"]["sum_received"]["bits_per_second"] / 1e9, scrapers


def scrape_bench(rounds: int, seconds: float) -> None:
    results: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(rounds):
        for scrape in (False, True) if round_ % 2 == 0 else (True, False):
            gbps, scrapers = scraped_tcp(scrape, seconds)
            results[scrape].append(gbps)
            seen = ""
            if scrapers:
                answers: dict[int, int] = {}
                for scraper in scrapers:
                    for status, count in scraper.answers.items():
                        answers[status] = answers.get(status, 0) + count
                seen = (", scrapes " + ", ".join(f"{n}x{status}" for status, n in sorted(answers.items()))
                        + f", {sum(s.failures for s in scrapers)} unanswered")
            print(f"round {round_ + 1} wgc<->wgc tcp {'with' if scrape else 'without'} a scraper: "
                  f"{gbps:.3f} Gbit/s{seen}", flush=True)
    without, with_ = (statistics.median(results[s]) for s in (False, True))
    print(f"\nmedians: without a scraper {without:.3f} Gbit/s, with one every {SCRAPE_EVERY * 1000:.0f} ms "
          f"{with_:.3f} Gbit/s\nratio (with / without): {with_ / without:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--soak", type=float, metavar="S", help="memory under S seconds of load instead")
    parser.add_argument("--scrape", action="store_true",
                        help="wgc<->wgc TCP without and with a /metrics scraper every 100 ms instead")
    args = parser.parse_args()
    if args.scrape:
        scrape_bench(args.rounds, args.seconds)
        return
    if args.soak:
        for implementation in ("wgc", "wireguard-go"):
            soak(implementation, args.soak)
        return
    results: dict[tuple[str, str], list[dict]] = {pair: [] for pair in PAIRS}
    for round_ in range(args.rounds):
        order = PAIRS if round_ % 2 == 0 else list(reversed(PAIRS))
        for pair in order:
            figures = measure(*pair, args.seconds)
            results[pair].append(figures)
            print(f"round {round_ + 1} {pair[0]}<->{pair[1]}: "
                  + ", ".join(f"{k}={v:.3f}" for k, v in figures.items()), flush=True)
    medians = {pair: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for pair, runs in results.items()}
    print("\nmedians:")
    for pair, m in medians.items():
        print(f"  {pair[0]}<->{pair[1]}: " + ", ".join(f"{k}={v:.3f}" for k, v in m.items()))
    ours, theirs, mixed = (medians[p] for p in PAIRS)
    print("\nratios (wgc / wireguard-go; for RTT and memory lower is better):")
    for key in ours:
        print(f"  {key}: wgc {ours[key] / theirs[key]:.2f}x, mixed {mixed[key] / theirs[key]:.2f}x")


if __name__ == "__main__":
    main()
