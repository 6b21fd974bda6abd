"""wgc against wireguard-go, side by side on this machine, in one run.

The baselines: Debian's wireguard-go (0.0.20220316, without TUN or UDP
offloads) and the newest wireguard-go (../shared/anchors/wireguard-go-0.0.20250522,
with them), the latter left out with a line saying so when the file is missing.
Cases: each implementation with itself, wgc also with 2 crypto workers
(WGC_WORKERS; the default is half the CPUs), then wgc with each wireguard-go.  For N
rounds (the order of the cases reversed every other round) each case gets a
fresh tunnel between two namespaces and is measured for:

- ping RTT through the idle tunnel (median of 20), and the daemons' RSS idle;
- one iperf3 TCP stream (Mbit/s received) while a ping every 20 ms crosses the
  tunnel (median and 99th percentile RTT under load), and the CPU seconds both
  tunnel daemons used (utime + stime of every daemon process, all threads, from
  /proc/PID/stat; not iperf3's) per GB received;
- iperf3 UDP at full speed (-b 0 -l 1300): Mbit/s received and loss;
- the daemons' RSS under load: the most of samples every 0.5 s during both
  iperf3 runs, each sample the larger end's (all processes of its daemon).

Each round also times libsodium's ChaCha20-Poly1305 alone in this process
(tests/bench's C loops over PyNaCl's copy, one thread, 1420-byte packets):
the CPU seconds per GB of sealing at one end and opening at the other, the
floor under the CPU per GB of any tunnel built on it.

Prints every figure per round, per case the median with its spread (min-max),
then wgc's ratios to each baseline, each line naming it with its version, and
beside each baseline what the AEAD alone costs: as a share of its CPU per GB,
and of the machine's CPUs at twice its TCP rate.
Everything runs in namespaces it creates and removes.

With --soak S, it instead keeps one tunnel of each kind (wgc at its default
and with 2 crypto workers, Debian's wireguard-go) under TCP load in
both directions for S seconds and samples the daemons' memory every 10 s:
after the warm-up (the first 30 s) it must not grow.

With --against REF, it instead measures wgc<->wgc of this checkout beside
wgc<->wgc of git REF (a worktree under build/bench-against/, built there),
alternating, the same figures each round; the medians and their ratios: the
A/B test of a change, which needs enough rounds to see a few per cent.

With --scrape, it instead measures what being watched costs: the wgc<->wgc
TCP stream, both daemons with the metrics endpoint on, alternately without
and with a scraper fetching each daemon's /metrics every 100 ms (from inside
its namespace) for the whole iperf3 run; the medians and their ratio.

    python scripts/bench.py [--rounds 5] [--seconds 5]
    python scripts/bench.py --soak 300
    python scripts/bench.py --scrape [--rounds N] [--seconds S]
    python scripts/bench.py --against REF [--rounds N] [--seconds S]
"""
import argparse
import contextlib
import importlib.util
import json
import math
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's wgc, and the tests' namespace helpers

from bench_netstack import cpu_of  # noqa: E402

from netns import Namespaces, wait_for  # noqa: E402
from wgc.cpus import available_cpus  # noqa: E402
from wgc.daemon import ENV_METRICS, ENV_WORKERS, crypto_workers  # noqa: E402
from wgnet import IMPLEMENTATIONS, End, iperf3, rss_kib, tunnel  # noqa: E402

DEBIAN_GO = "wireguard-go"  # Debian's package, on PATH (wgnet.IMPLEMENTATIONS)
NEWEST_GO = "wireguard-go-newest"
NEWEST_GO_PATH = ROOT.parent / "shared" / "anchors" / "wireguard-go-0.0.20250522"
OFFLOADS = {DEBIAN_GO: "Debian's wireguard-go {version} (no offloads)",
            NEWEST_GO: "wireguard-go {version} (offloads)"}
UDP_ARGS = ("-u", "-b", "0", "-l", "1300")
IDLE_PINGS, IDLE_PING_EVERY = 20, 0.05  # s
LOAD_PING_EVERY = 0.02  # s
RSS_EVERY = 0.5  # s

# key: (what, unit, format); the order they are printed in.
FIGURES = {
    "tcp_mbit": ("TCP one stream, received", "Mbit/s", ".0f"),
    "udp_mbit": ("UDP -b 0 -l 1300, received", "Mbit/s", ".0f"),
    "udp_loss_pct": ("UDP loss", "%", ".1f"),
    "rtt_idle_ms": ("ping RTT idle", "ms", ".3f"),
    "rtt_load_p50_ms": ("ping RTT under TCP load, median", "ms", ".3f"),
    "rtt_load_p99_ms": ("ping RTT under TCP load, 99th percentile", "ms", ".3f"),
    "load_pings_lost": ("pings lost under load", "", ".0f"),
    "cpu_s_per_gb": ("CPU of both daemons per GB received (TCP)", "s/GB", ".2f"),
    "rss_idle_mib": ("RSS idle, larger end", "MiB", ".1f"),
    "rss_load_mib": ("RSS under load, larger end", "MiB", ".1f"),
}
# The ratios printed against each baseline (wgc<->wgc over baseline<->baseline).
RATIOS = {"tcp_mbit": "TCP", "udp_mbit": "UDP received", "cpu_s_per_gb": "CPU s/GB",
          "rtt_load_p50_ms": "RTT under load p50", "rtt_load_p99_ms": "p99"}


def version(implementation: str) -> str:
    """What `IMPLEMENTATION --version` says its version is (wireguard-go prints "wireguard-go vX ...")."""
    out = subprocess.run([*IMPLEMENTATIONS[implementation], "--version"], capture_output=True, text=True,
                         timeout=10).stdout
    return out.split()[1].removeprefix("v")


def rtts_ms(ping_output: str) -> list[float]:
    """Each reply's RTT from ping's output, in the order they came."""
    return [float(t) for t in re.findall(r" time=([\d.]+) ms", ping_output)]


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile: the smallest value at least share of the values do not exceed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_of(pid) for pid in pids)


def larger_end_mib(daemons: list[list[int]]) -> float:
    """The RSS of the larger of the two daemons, each counted over all its processes."""
    return max(rss_kib(pids) for pids in daemons) / 1024


class Beside:
    """A thread that runs beside a load while the `with` block lasts: run()
    is its work, with self.stopped set at the block's end; a failure in it is
    raised there (unless the block failed first)."""

    def __init__(self):
        self.stopped = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._guarded)

    def run(self) -> None:
        raise NotImplementedError

    def _guarded(self) -> None:
        try:
            self.run()
        except BaseException as failure:  # handed to the caller on close
            self._failure = failure

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self._thread.join()
        if self._failure and not exc[0]:
            raise self._failure


class RssSampler(Beside):
    """While open, the larger end's RSS (all its daemon's processes) every RSS_EVERY s; `most` in MiB."""

    def __init__(self, daemons: list[list[int]]):
        super().__init__()
        self.daemons = daemons
        self.most = 0.0

    def run(self) -> None:
        while not self.stopped.wait(RSS_EVERY):
            self.most = max(self.most, larger_end_mib(self.daemons))


class LoadPing(Beside):
    """A ping every LOAD_PING_EVERY s from `source` to `target` through the tunnel, started
    once the iperf3 client has appeared in source's namespace and lasting for the
    rest of its run (seconds less half a second, so it ends before the load does)."""

    def __init__(self, source: End, target: str, daemons: list[int], seconds: float):
        super().__init__()
        self.source, self.target, self.daemons, self.seconds = source, target, set(daemons), seconds
        self.output = ""
        self.sent = 0

    def run(self) -> None:
        wait_for(lambda: set(self.source.ns.pids()) - self.daemons, timeout=30, interval=0.05,
                 what="the iperf3 client")
        self.sent = max(1, int((self.seconds - 0.5) / LOAD_PING_EVERY))
        self.output = self.source.ping(self.target, count=self.sent, interval=LOAD_PING_EVERY,
                                       check=False).stdout


def aead_timer():
    """() -> (seal, open) CPU s/GB of libsodium alone: tests/bench/conftest.py's
    aead_seconds_per_gb on its compiled helper (loaded by path: this script is
    the module named bench)."""
    path = ROOT / "tests" / "bench" / "conftest.py"
    spec = importlib.util.spec_from_file_location("wgc_bench_micro", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)   # its dataclasses look it up
    spec.loader.exec_module(module)
    micro = module.build_helper()
    return lambda: module.aead_seconds_per_gb(micro)


def workers_env(workers: int | None) -> dict | None:
    """The daemons' environment for WGC_WORKERS=workers (None: wgc's default)."""
    return {ENV_WORKERS: str(workers)} if workers else None


def measure(left: str, right: str, seconds: float, workers: int | None = None) -> dict:
    """One case; workers: WGC_WORKERS for the wgc daemons (None: their default)."""
    with Namespaces() as factory:
        a, b = tunnel(factory, left, right, with_ipv6=False,
                      env=workers_env(workers))
        a.ping(b.inner4, count=3, interval=0.1)
        # Taken now, while each namespace holds its daemon alone.
        daemons = [a.ns.pids(), b.ns.pids()]
        idle_rss = larger_end_mib(daemons)
        idle = rtts_ms(a.ping(b.inner4, count=IDLE_PINGS, interval=IDLE_PING_EVERY).stdout)
        with RssSampler(daemons) as rss:
            cpu_before = cpu_seconds(daemons[0] + daemons[1])
            with LoadPing(a, b.inner4, daemons[0], seconds) as load_ping:
                tcp = json.loads(iperf3(a, b, seconds).stdout)["end"]["sum_received"]
            cpu = cpu_seconds(daemons[0] + daemons[1]) - cpu_before
            udp = json.loads(iperf3(a, b, seconds, extra=UDP_ARGS).stdout)["end"]["sum"]
        loaded = rtts_ms(load_ping.output)
        if not idle or not loaded:
            raise RuntimeError(f"{left}<->{right}: no ping answered ({len(idle)} idle, {len(loaded)} under load)")
        return {
            "tcp_mbit": tcp["bits_per_second"] / 1e6,
            "udp_mbit": udp["bits_per_second"] / 1e6 * (1 - udp["lost_percent"] / 100),
            "udp_loss_pct": udp["lost_percent"],
            "rtt_idle_ms": statistics.median(idle),
            "rtt_load_p50_ms": statistics.median(loaded),
            "rtt_load_p99_ms": percentile(loaded, 0.99),
            "load_pings_lost": load_ping.sent - len(loaded),
            "cpu_s_per_gb": cpu / (tcp["bytes"] / 1e9),
            "rss_idle_mib": idle_rss,
            "rss_load_mib": rss.most,
        }


def soak(implementation: str, seconds: float, warmup: float = 30, every: float = 10,
         workers: int | None = None) -> list[float]:
    """The larger end's RSS every `every` seconds under bidirectional TCP load;
    workers: WGC_WORKERS for wgc (None: its default)."""
    name = implementation + (f" ({workers} workers)" if workers else "")
    with Namespaces() as factory:
        a, b = tunnel(factory, implementation, implementation, with_ipv6=False,
                      env=workers_env(workers))
        a.ping(b.inner4, count=1)
        daemons = [a.ns.pids(), b.ns.pids()]  # before iperf3 joins them in the namespaces
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
                samples.append(larger_end_mib(daemons))
                print(f"  {name} t={time.monotonic() - start:5.0f}s rss={samples[-1]:.1f} MiB", flush=True)
        finally:
            for p in (client, server):
                p.kill()
                p.wait()
        settled = samples[int(warmup // every) - 1:] or samples
        print(f"{name}: after warm-up {settled[0]:.1f} MiB, highest {max(settled):.1f} MiB, "
              f"growth {max(settled) - settled[0]:+.1f} MiB", flush=True)
        return samples


METRICS_PORT = 9586
SCRAPE_EVERY = 0.1  # s


class Scraper(Beside):
    """GET /metrics every SCRAPE_EVERY s from inside a namespace, until stopped."""

    def __init__(self, ns):
        super().__init__()
        self.ns = ns
        self.answers: dict[int, int] = {}  # HTTP status -> how many
        self.failures = 0  # no answer at all

    def run(self) -> None:
        self.ns.inside(self._loop)

    def _loop(self) -> None:
        while not self.stopped.wait(SCRAPE_EVERY):
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


# The extra case: wgc<->wgc with this many crypto threads (WGC_WORKERS) instead of the default.
MORE_WORKERS = 2


Case = tuple[str, str, int | None]      # (left, right, WGC_WORKERS or None)


def cases(baselines: list[str]) -> list[Case]:
    """(left, right, WGC_WORKERS or None): each implementation with itself, wgc
    with MORE_WORKERS crypto threads too, then wgc with each baseline."""
    return [("wgc", "wgc", None), ("wgc", "wgc", MORE_WORKERS), *((go, go, None) for go in baselines),
            *(("wgc", go, None) for go in baselines)]


def case_name(case: Case) -> str:
    left, right, workers = case
    return f"{left}<->{right}" + (f" ({workers} workers)" if workers else "")


def spread(values: list[float], form: str) -> str:
    return f"{statistics.median(values):{form}} ({min(values):{form}}-{max(values):{form}})"


def figures_line(figures: dict) -> str:
    return ", ".join(f"{key}={value:{FIGURES[key][2]}}" for key, value in figures.items())


def run_rounds(order: list[Case], rounds: int, seconds: float, after_round=None) -> dict[Case, list[dict]]:
    """Every case of order once a round, reversed every other round; each
    round's figures printed as they come.  after_round(i), if given, runs
    after round i."""
    results: dict[Case, list[dict]] = {case: [] for case in order}
    for round_ in range(rounds):
        for case in order if round_ % 2 == 0 else list(reversed(order)):
            figures = measure(*case[:2], seconds, case[2])
            results[case].append(figures)
            print(f"round {round_ + 1} {case_name(case)}: {figures_line(figures)}", flush=True)
        if after_round:
            after_round(round_)
    return results


def print_medians(results: dict[Case, list[dict]]) -> dict[Case, dict]:
    """Prints each case's medians with their spread; returns the medians."""
    print("\nmedians (min-max):")
    for case, runs in results.items():
        print(f"  {case_name(case)}:")
        for key, (what, unit, form) in FIGURES.items():
            print(f"    {what}: {spread([r[key] for r in runs], form)} {unit}".rstrip())
    return {case: {key: statistics.median(r[key] for r in runs) for key in FIGURES}
            for case, runs in results.items()}


def against(ref: str, rounds: int, seconds: float) -> None:
    """wgc<->wgc of this checkout against wgc<->wgc of git ref's build,
    alternating: the A/B test of a change (wgc at its default workers)."""
    found = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                           stdout=subprocess.PIPE, text=True)
    if found.returncode != 0:
        sys.exit(f"bench: {ref!r} names no commit of {ROOT}")
    commit = found.stdout.strip()
    tree = build_of(commit)
    theirs = f"wgc@{commit[:10]}"
    IMPLEMENTATIONS[theirs] = ["env", f"PYTHONPATH={tree}", sys.executable, "-P", "-m", "wgc"]
    print(f"wgc (this checkout) against {theirs} ({ref}, built in {tree}): {rounds} rounds, iperf3 runs of "
          f"{seconds:g} s\n", flush=True)
    ours_case, theirs_case = ("wgc", "wgc", None), (theirs, theirs, None)
    medians = print_medians(run_rounds([ours_case, theirs_case], rounds, seconds))
    ours, base = medians[ours_case], medians[theirs_case]
    print(f"\nthis checkout / {theirs}: "
          + ", ".join(f"{label} {ours[key] / base[key]:.2f}x" for key, label in RATIOS.items()))


def build_of(commit: str) -> Path:
    """A worktree of commit with its modules built in place, under build/
    and kept for the next run."""
    tree = ROOT / "build" / "bench-against" / commit
    if not (tree / "setup.py").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--quiet", "--detach", str(tree), commit],
                       check=True)
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-j", "2", "-q"], cwd=tree,
                   check=True, stdout=subprocess.DEVNULL)
    return tree


def compare(rounds: int, seconds: float) -> None:
    """The default mode: every case for `rounds` rounds, then medians, spreads and ratios."""
    baselines = [DEBIAN_GO]
    if NEWEST_GO_PATH.exists():
        IMPLEMENTATIONS[NEWEST_GO] = [str(NEWEST_GO_PATH)]
        baselines.insert(0, NEWEST_GO)
    else:
        print(f"no {NEWEST_GO_PATH}: Debian's wireguard-go is the only baseline")
    names = {go: OFFLOADS[go].format(version=version(go)) for go in baselines}
    for go in baselines:
        print(f"{go}: {names[go]}")
    print(f"{rounds} rounds; per case a fresh tunnel, iperf3 runs of {seconds:g} s (TCP one stream with a ping "
          f"every {LOAD_PING_EVERY * 1000:.0f} ms beside it, then UDP {' '.join(UDP_ARGS[1:])}), "
          f"RSS under load sampled every {RSS_EVERY} s\n", flush=True)
    print(f"wgc: {crypto_workers()} crypto workers by default ({available_cpus()} CPUs available), "
          f"and {MORE_WORKERS} in the case so named\n", flush=True)
    time_aead = aead_timer()
    aead: list[float] = []          # seal + open, s/GB, per round

    def after_round(round_: int) -> None:
        seal, open_ = time_aead()
        aead.append(seal + open_)
        print(f"round {round_ + 1} libsodium's AEAD alone: seal {seal:.2f} + open {open_:.2f} = "
              f"{seal + open_:.2f} s/GB", flush=True)

    medians = print_medians(run_rounds(cases(baselines), rounds, seconds, after_round))
    ours = medians[("wgc", "wgc", None)]
    more = medians[("wgc", "wgc", MORE_WORKERS)]
    print(f"\nwgc<->wgc with {MORE_WORKERS} crypto workers / with the default ({crypto_workers()}): "
          + ", ".join(f"{label} {more[key] / ours[key]:.2f}x" for key, label in RATIOS.items()))
    print("\nratios of the medians, wgc<->wgc / baseline<->baseline (above 1 is better for TCP and UDP, "
          "below 1 for CPU and RTT):")
    for go in baselines:
        theirs = medians[(go, go, None)]
        print(f"  against {names[go]}: "
              + ", ".join(f"{label} {ours[key] / theirs[key]:.2f}x" for key, label in RATIOS.items()))
    floor = statistics.median(aead)
    cpus = available_cpus()
    print(f"\nlibsodium's ChaCha20-Poly1305 alone, sealing at one end and opening at the other: "
          f"{spread(aead, '.2f')} s/GB, {floor / ours['cpu_s_per_gb']:.2f} of wgc<->wgc's CPU per GB")
    for go in baselines:
        theirs = medians[(go, go, None)]
        twice_gb_per_s = 2 * theirs["tcp_mbit"] / 8 / 1000
        print(f"  beside {names[go]}: {floor / theirs['cpu_s_per_gb']:.2f}x its CPU per GB; at twice its TCP "
              f"({2 * theirs['tcp_mbit']:.0f} Mbit/s) the AEAD alone would keep {twice_gb_per_s * floor:.2f} "
              f"of the {cpus} CPUs busy")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5, help="each iperf3 run's duration")
    parser.add_argument("--soak", type=float, metavar="S", help="memory under S seconds of load instead")
    parser.add_argument("--scrape", action="store_true",
                        help="wgc<->wgc TCP without and with a /metrics scraper every 100 ms instead")
    parser.add_argument("--against", metavar="REF", help="wgc<->wgc of this checkout against REF's instead")
    args = parser.parse_args()
    if args.against:
        against(args.against, args.rounds, args.seconds)
    elif args.scrape:
        scrape_bench(args.rounds, args.seconds)
    elif args.soak:
        for implementation, workers in (("wgc", None), ("wgc", MORE_WORKERS), (DEBIAN_GO, None)):
            soak(implementation, args.soak, workers=workers)
    else:
        compare(args.rounds, args.seconds)


if __name__ == "__main__":
    main()
