"""Building micro_helper.pyx, the timing switch, and the summary of rates.

The helper is compiled against the .pxd files of the wgc package that
`import wgc` finds, into build/bench-micro/<digest>/ at the repository root;
the digest covers the helper, those .pxd files, Cython's version and the
interpreter's ABI, so a changed declaration means a fresh build.

Timing is off unless asked for (--benchmark-only, as `just bench-micro`
does, --benchmark-enable, or --benchmark-json/-save/-autosave): a plain
`pytest` runs every benchmarked call once and checks its result, which
keeps CI fast and quiet.

aead_seconds_per_gb times libsodium's AEAD alone for scripts/bench.py, which
sets it beside the tunnels' CPU per GB in the same run.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.machinery
import importlib.util
import os
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
HELPER = HERE / "micro_helper.pyx"
CACHE = HERE.parent.parent / "build" / "bench-micro"


def _wgc_source_dir() -> Path:
    import wgc

    return Path(wgc.__file__).resolve().parent


def _digest(wgc_dir: Path) -> str:
    import Cython

    h = hashlib.sha256()
    h.update(HELPER.read_bytes())
    for pxd in sorted(wgc_dir.glob("*.pxd")):
        h.update(pxd.name.encode() + b"\0" + pxd.read_bytes())
    h.update(Cython.__version__.encode())
    h.update(sysconfig.get_config_var("EXT_SUFFIX").encode())
    return h.hexdigest()[:16]


def _compile(workdir: Path, wgc_dir: Path) -> None:
    """cythonize + setuptools' build_ext, all inside workdir."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    source = workdir / HELPER.name
    source.write_bytes(HELPER.read_bytes())
    extension = Extension(
        "micro_helper",
        [str(source)],
        extra_compile_args=["-O2", "-Wno-unused-function"],
        libraries=["dl"],
    )
    modules = cythonize(
        [extension],
        include_path=[str(wgc_dir.parent)],
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
        quiet=True,
    )
    dist = Distribution({"ext_modules": modules, "script_name": "micro_helper", "script_args": []})
    command = dist.get_command_obj("build_ext")
    command.build_lib = str(workdir)
    command.build_temp = str(workdir / "tmp")
    command.ensure_finalized()
    command.run()


def build_helper():
    """The compiled helper module, built on first use and cached by digest."""
    wgc_dir = _wgc_source_dir()
    if not list(wgc_dir.glob("*.pxd")):
        raise RuntimeError(f"{wgc_dir} has no .pxd files to compile against: install wgc editable (pip install -e .)")
    target = CACHE / _digest(wgc_dir)
    library = target / ("micro_helper" + sysconfig.get_config_var("EXT_SUFFIX"))
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # a concurrent run waits for our build
        if not library.exists():
            _compile(target, wgc_dir)
    loader = importlib.machinery.ExtensionFileLoader("micro_helper", str(library))
    spec = importlib.util.spec_from_file_location("micro_helper", library, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules["micro_helper"] = module
    return module


AEAD_PACKET, AEAD_BATCH = 1420, 64          # full packets at wgc's default MTU, one data-plane batch


def aead_seconds_per_gb(micro, seconds: float = 0.5) -> tuple[float, float]:
    """libsodium's ChaCha20-Poly1305 alone, the floor under any tunnel built on
    it: the CPU seconds of this thread per GB of 1420-byte packets sealed
    (micro.sodium_seal) and opened (micro.sodium_open, datagrams sealed by wgc
    and every one verified), each timed for about `seconds` of thread CPU."""
    from wgc._trie import AllowedIPs

    key = os.urandom(32)
    packets, sealed, scratch = (micro.Slots(AEAD_BATCH) for _ in range(3))
    for i in range(AEAD_BATCH):
        packets.put(i, os.urandom(AEAD_PACKET))
    sender = micro.Sender(key, 1, AEAD_PACKET)
    micro.wgc_seal(sender, packets, sealed, micro.Workers(1, AEAD_BATCH))
    receiver = micro.Receiver(key, 1, 0, AllowedIPs())
    if micro.sodium_open(receiver, sealed, scratch) != AEAD_BATCH:
        raise RuntimeError("libsodium did not open what wgc sealed")

    def per_gb(call) -> float:
        calls, start = 0, time.thread_time()
        while (used := time.thread_time() - start) < seconds or not calls:
            call()
            calls += 1
        return used / (calls * AEAD_BATCH * AEAD_PACKET / 1e9)

    return (per_gb(lambda: micro.sodium_seal(sender, packets, scratch)),
            per_gb(lambda: micro.sodium_open(receiver, sealed, scratch)))


@pytest.fixture(scope="session")
def micro():
    return build_helper()


@pytest.fixture(scope="session")
def aead_floor(micro):
    """aead_seconds_per_gb(micro, seconds)."""
    return functools.partial(aead_seconds_per_gb, micro)


def timing_requested(config) -> bool:
    """--benchmark-only or --benchmark-enable, or asking for results to be saved."""
    wanted = ("benchmark_only", "benchmark_enable", "benchmark_json", "benchmark_save", "benchmark_autosave")
    return any(config.getoption(name, None) for name in wanted)


@pytest.fixture
def benchmark(benchmark, request):
    """pytest-benchmark's fixture, disabled (one call, no stats) unless timing was asked for."""
    if not timing_requested(request.config):
        benchmark.disabled = True
    return benchmark


# ---- rates -------------------------------------------------------------------------
#
# Rates come from the fastest call (pytest-benchmark's min): on a small
# machine shared with other work, the median moves with whatever else runs,
# the minimum much less.

@dataclass
class Rate:
    name: str                  # what was measured, for the summary
    pair: str                  # results with the same pair are compared
    side: str                  # "wgc" or "libsodium" (the upper bound)
    seconds: float             # the fastest call
    items: int                 # packets (or lookups, checks) per call
    nbytes: int                # bytes of IP packets per call (0: no byte stream)
    unit: str = "packets"
    threads: int = 1           # wgc's crypto threads (wgc._workers), the caller included
    median: float = 0.0        # the median call, for the workers' summary

    @property
    def per_item(self) -> float:
        return self.seconds / self.items


@dataclass
class Rates:
    results: list[Rate] = field(default_factory=list)

    def bound_for(self, pair: str) -> Rate | None:
        found = [r for r in self.results if r.pair == pair and r.side == "libsodium"]
        return found[-1] if found else None

    def one_thread(self, pair: str) -> Rate | None:
        found = [r for r in self.results if r.pair == pair and r.side == "wgc" and r.threads == 1]
        return found[-1] if found else None


RATES = pytest.StashKey[Rates]()


def pytest_configure(config):
    config.stash[RATES] = Rates()


@pytest.fixture
def rate(benchmark, request):
    """record(name, pair, side, items, nbytes, unit, threads), called after
    the benchmark has run: puts the rates into benchmark.extra_info (and, for
    a one-thread wgc result whose libsodium bound ran before it, the ratio to
    it) and into the summary printed at the end."""

    def record(name: str, pair: str, side: str, items: int, nbytes: int = 0, unit: str = "packets",
               threads: int = 1):
        if benchmark.stats is None:            # timing off: nothing measured
            return None
        rates = request.config.stash[RATES]
        stats = benchmark.stats.stats
        result = Rate(name, pair, side, stats.min, items, nbytes, unit, threads, stats.median)
        info = benchmark.extra_info
        info[f"{unit}_per_s"] = round(items / result.seconds)
        info[f"ns_per_{unit.rstrip('s')}"] = round(result.per_item * 1e9, 2)
        if nbytes:
            info["bytes_per_s"] = round(nbytes / result.seconds)
            info["gbit_per_s"] = round(nbytes * 8 / result.seconds / 1e9, 3)
        bound = rates.bound_for(pair) if side == "wgc" and threads == 1 else None
        if bound is not None:
            info["time_over_libsodium"] = round(result.per_item / bound.per_item, 3)
        rates.results.append(result)
        return result

    return record


def _line(r: Rate) -> str:
    text = f"{r.name:<42} {r.seconds * 1e6:8.2f} µs/call {r.per_item * 1e9:8.1f} ns/{r.unit.rstrip('s'):<7}"
    text += f" {1 / r.per_item / 1e6:7.2f} M{r.unit}/s"
    if r.nbytes:
        text += f" {r.nbytes * 8 / r.seconds / 1e9:6.2f} Gbit/s"
    return text


def pytest_terminal_summary(terminalreporter, config):
    rates = config.stash[RATES] if RATES in config.stash else Rates()
    if not rates.results:
        return
    write = terminalreporter.write_line
    terminalreporter.section("wgc micro-benchmarks (fastest call of each)")
    for r in rates.results:
        write(_line(r))
    compared = [(r, rates.bound_for(r.pair)) for r in rates.results if r.side == "wgc" and r.threads == 1]
    compared = [(ours, bound) for ours, bound in compared if bound is not None]
    if compared:
        write("")
        write("wgc's time over the libsodium-only loop's for the same packets (1.00 = nothing above the crypto):")
        for ours, bound in compared:
            ratio = ours.per_item / bound.per_item
            write(f"  {ours.pair:<40} {ratio:5.2f}x   wgc reaches {100 / ratio:5.1f}% of the bound,"
                  f" {(ours.per_item - bound.per_item) * 1e9:+7.1f} ns/packet")
    scaled = [(r, rates.one_thread(r.pair)) for r in rates.results if r.side == "wgc" and r.threads > 1]
    scaled = [(more, one) for more, one in scaled if one is not None]
    if scaled:
        write("")
        write("wgc's crypto workers (wgc._workers): packets per second with more threads over one thread,")
        write("from the fastest calls and from the medians (a helper that wakes late leaves the batch to the caller):")
        for more, one in scaled:
            write(f"  {more.pair:<40} {more.threads} threads: fastest {one.seconds / more.seconds:5.2f}x,"
                  f" median {one.median / more.median:5.2f}x")
