# Developer recipes.  `just --list` shows them.  Run from a venv with `pip install -e '.[test]'`.
python := env_var_or_default("PYTHON", ".venv/bin/python")

# Compile the Cython modules in place.
build:
    {{python}} setup.py build_ext --inplace -j 2

# The whole test suite (needs root for the namespace tests).
test *ARGS: build
    {{python}} -m pytest -q {{ARGS}}

# Run the daemon in the foreground on IFACE (default wg0) with debug logging.
run IFACE="wg0": build
    LOG_LEVEL=verbose {{python}} -m wgc -f {{IFACE}}

# WireGuard across a bad path, the long runs: 100 MiB over TCP at 5 % loss and through
# 50 ± 20 ms jitter with reordering, ten handshakes at 20 % and 50 % loss, the give-up after
# Rekey-Attempt-Time; the in-process stack's 100 MiB through loss and through the relay's
# delay, reordering and duplicates.  Prints the figures.
loss *ARGS: build
    {{python}} -m pytest -q -s -m long tests/test_loss.py tests/test_netstack_interop.py {{ARGS}}

# The frozen executables: dist/wgc (one file) and dist/wgc-dir/ (one directory).
# First, once per environment, PyInstaller's bootloader is rebuilt with wgc's
# temporary-directory check (packaging/bootloader.py).
binary:
    {{python}} packaging/bootloader.py
    WGC_BUNDLE=onefile {{python}} -m PyInstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller-onefile packaging/wgc.spec
    WGC_BUNDLE=onedir {{python}} -m PyInstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller-onedir packaging/wgc.spec
    {{python}} packaging/glibc_floor.py dist/wgc dist/wgc-dir

# The same two executables built inside Debian root file systems made with debootstrap and
# kept in WGC_ROOTS_CACHE (default ~/.cache/wgc-roots; packaging/debian_root.py): for x86_64
# in Debian 11 "bullseye", so they run on glibc 2.31 and newer (CPython 3.11 built there from
# Debian's python3.11 source the first time), into dist/bullseye-amd64/; for aarch64 in
# bookworm arm64 under qemu-user, into dist/bookworm-arm64/.  Each prints its glibc floor.
# The first run takes long (the root, CPython or emulation); later ones rebuild only wgc.
binary-bullseye:
    {{python}} packaging/debian_root.py bullseye-amd64

binary-arm64:
    {{python}} packaging/debian_root.py bookworm-arm64

# The executables of binary-bullseye and binary-arm64 against wgc and wireguard-go on the host side: the bullseye
# one-file wgc inside its root (chroot), the arm64 ones under qemu-user (tests/test_roots.py).
# A build not made yet fails the run (a skip in the netns tier): `just test-roots -k bullseye` tests one.
test-roots *ARGS:
    {{python}} -m pytest -q -rs -m roots tests/test_roots.py {{ARGS}}

container_base := env_var_or_default("WGC_CONTAINER_BASE", home_directory() / ".cache/wgc-container/bookworm-minbase.tar")

# The base of the container images, made here as no container registry is reachable: a Debian
# bookworm minbase root (debootstrap, from Debian's packages) as a tarball for `podman import`,
# made once into WGC_CONTAINER_BASE (default ~/.cache/wgc-container/bookworm-minbase.tar).
container-base:
    #!/usr/bin/env bash
    set -euo pipefail
    tarball={{quote(container_base)}}
    [ -f "$tarball" ] && exit 0
    command -v debootstrap >/dev/null || apt-get install -y debootstrap
    root=$(mktemp -d)
    trap 'rm -rf "$root" "$tarball.part"' EXIT
    debootstrap --variant=minbase bookworm "$root"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    mkdir -p "$(dirname "$tarball")"
    tar -C "$root" --numeric-owner -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"

# packaging/Containerfile and Containerfile.proxy built and run by Debian's podman (installed if
# missing, with runc: see tests/podman.py) on the one-file executable and the imported base:
# a tunnel to a wgc on the host side, podman stop, the proxy unprivileged (tests/test_container.py).
container-test *ARGS: build binary (container-tier ARGS)

# The same on the executables already in dist/ (`just ci` runs it after the binary tier).
container-tier *ARGS: container-base
    command -v podman >/dev/null && command -v runc >/dev/null || apt-get install -y podman runc
    WGC_CONTAINER_BASE={{quote(container_base)}} {{python}} -m pytest -q -rs -m container tests/test_container.py {{ARGS}}

# Ruff over all Python code (rules in pyproject.toml).
lint:
    {{python}} -m ruff check .

# mypy over wgc/ and scripts/, the compiled modules' Python faces being the wgc/*.pyi stubs;
# then stubtest holds each stub against its built module (names, parameters, defaults).
typecheck: build
    {{python}} -m mypy
    {{python}} -m mypy.stubtest --mypy-config-file pyproject.toml --allowlist stubtest-allowlist.txt $(ls wgc/_*.pyi wgc/netstack/_*.pyi | sed 's|/|.|g; s|\.pyi$||')

# The C safety net: the compiled modules built apart in build/asan (-O0 -g, AddressSanitizer,
# UndefinedBehaviorSanitizer, Cython's bounds/index/initialisation checks; see setup.py), then
# the sans-I/O tests against them, and the crypto and handshake tests for _crypto's pointers.
# libasan must be loaded before the interpreter starts; PYTHONMALLOC=malloc gives Python's
# own small objects ASan's red zones too; leak detection is off because CPython keeps memory
# it never frees at exit by design.  -P keeps the current directory (and its in-place build)
# off sys.path; --capture=sys leaves the sanitizers' reports on the real stderr.
asan_lib := "build/asan/lib"
test-asan *ARGS:
    WGC_SANITIZE=1 {{python}} setup.py -q build --build-base build/asan --build-lib {{asan_lib}} -j 2
    PYTHONPATH={{asan_lib}} {{python}} -P -c 'import importlib.util as u, sys; o = u.find_spec("wgc._core").origin; sys.exit(None if "/{{asan_lib}}/" in o else f"wgc._core resolves to {o}")'
    LD_PRELOAD="$(gcc -print-file-name=libasan.so)" PYTHONMALLOC=malloc PYTHONPATH={{asan_lib}} \
    ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        {{python}} -P -m pytest -q -p no:cacheprovider --capture=sys \
        tests/test_protocol.py tests/test_offload.py tests/test_replay.py tests/test_trie.py tests/test_fuzz.py \
        tests/test_port.py tests/test_udp_plan.py tests/test_vectors_crypto.py tests/test_cookie.py tests/test_noise.py \
        tests/test_netstack_frag.py --deselect tests/test_netstack_frag.py::test_live_kernel_fragments \
        tests/test_netstack_tcp.py tests/test_netstack_engine.py tests/test_uapi.py tests/test_allowed_text.py \
        tests/test_workers.py \
        {{ARGS}}

# What CI runs: lint, type check and the sanitizer build first (minutes; they stop a broken
# change early), then the frozen executables, every test against the package, then the daemon tests
# against both executables (and the built-in wg and wg-quick against the one-file one), then the
# container images on the one-file one.
# Any skip in the netns, kernel, systemd, binary or container tier fails the run (tests/conftest.py) unless
# WGC_SKIP_TIERS names the tier (such as WGC_SKIP_TIERS=kernel,binary); binary also leaves out
# the build and the runs against the executables, and with them the container tier.  -rs prints why anything was skipped (the
# QEMU kernel tier says why it could not boot); each run ends with its counts per tier.
ci: lint typecheck test-asan
    #!/usr/bin/env bash
    set -euo pipefail
    skip=",${WGC_SKIP_TIERS:-},"; skip=${skip// /}
    binary=$([[ $skip == *,binary,* ]] && echo off || echo on)
    container=$([[ $binary == on && $skip != *,container,* ]] && echo on || echo off)
    if [ "$binary" = on ]; then {{just_executable()}} python={{python}} binary; fi
    {{python}} -m pytest -q -rs
    if [ "$binary" = on ]; then
        WGC_COMMAND=dist/wgc {{python}} -m pytest -q -rs tests/test_lifecycle.py tests/test_interop.py tests/test_appliance.py tests/test_namespaces.py tests/test_wg_tool.py tests/test_wg_quick.py tests/test_proxy_interop.py
        WGC_COMMAND=dist/wgc-dir/wgc {{python}} -m pytest -q -rs tests/test_lifecycle.py tests/test_interop.py tests/test_appliance.py
    fi
    if [ "$container" = on ]; then {{just_executable()}} python={{python}} container-tier; fi

# Size and start-to-ready time of the frozen executables (build them first), and the CPU of one
# `wg show IFACE` through each beside Debian's wg and a bare `python -I -S`, with the ratios.
# ROOTS (bullseye-amd64, bookworm-arm64): also those builds' size, start to ready and glibc floor,
# each run inside its root (just binary-bullseye, binary-arm64).
bench-binary *ROOTS:
    {{python}} scripts/bench_appliance.py {{ROOTS}}

# Two namespaces, a wgc tunnel between them, a ping across, `wg show`, then clean up.
demo: build
    PYTHON={{python}} bash scripts/demo.sh

# `just bench 3 --scrape`: instead, wgc<->wgc TCP without and with a /metrics scraper every 100 ms.
# Per case, 5-second iperf3 runs (--seconds S): TCP with the RTT of a ping every 20 ms beside it, UDP, idle RTT,
# CPU seconds per GB of both daemons, RSS idle and sampled during the load; every figure, then the medians with
# their spread, then the ratios, each naming its baseline.
# wgc against Debian's wireguard-go 0.0.20220316 (no offloads) and the newest (../shared/anchors), ROUNDS alternating;
# wgc<->wgc also with 2 crypto workers (WGC_WORKERS) beside its default, and the ratio of the two.
# Each round also times libsodium's AEAD alone (seal + open, s/GB): the floor under any tunnel built on it.
bench ROUNDS="5" *ARGS: build
    {{python}} scripts/bench.py --rounds {{ROUNDS}} {{ARGS}}

# A change measured: wgc<->wgc of this checkout beside wgc<->wgc of git REF (a worktree built under
# build/bench-against/, kept), alternating for ROUNDS, the figures of `just bench`; medians with their spread,
# then this checkout's ratios to REF.  Round-to-round spread here is several per cent: 8 rounds or more.
bench-against REF="HEAD" ROUNDS="8" *ARGS: build
    {{python}} scripts/bench.py --against {{REF}} --rounds {{ROUNDS}} {{ARGS}}

# wgc's in-process stack (wgc.netstack) beside the TUN path and gVisor's netstack (../shared/anchors'
# gvnet-netstack-latest, when there), through one far wgc daemon: TCP one and eight connections each way,
# medians of RUNS with their spread, CPU seconds per GB, RSS, memory per idle connection; the ratios last.
bench-netstack RUNS="3": build
    {{python}} scripts/bench_netstack.py --runs {{RUNS}}

# wgc --proxy (SOCKS5 and a TCP forward) beside the TUN path and gVisor's netstack, one run;
# the last line: proxy: ratio to the TUN path R1, to the gVisor netstack R2.
bench-proxy RUNS="3": build
    {{python}} scripts/bench_proxy.py --runs {{RUNS}}

# One big UAPI set (10,000 peers x 100 /32s, 1,000 x 1,000) and a get, wgc beside the newest wireguard-go
# (../shared/anchors), alternating for ROUNDS: times, RSS after, medians with their spread, ratios last.
bench-config ROUNDS="3": build
    {{python}} scripts/bench_config.py --rounds {{ROUNDS}}

# Memory of wgc (at its default and with 2 crypto workers) and wireguard-go under SECONDS of TCP load both ways,
# sampled every 10 s.
bench-soak SECONDS="300":
    {{python}} scripts/bench.py --soak {{SECONDS}}

# Valid initiations from PEERS distinct peers (each from its own IPv4 address, then each from its own IPv6 /64)
# at a wgc and a wireguard-go responder, alternating for ROUNDS:
# handshakes per second, cookie replies, memory, beside this machine's X25519 limit.
bench-handshakes PEERS="1000" ROUNDS="3": build
    {{python}} scripts/handshake_load.py --peers {{PEERS}} --rounds {{ROUNDS}}

# wgc against the Linux kernel's WireGuard: Debian's kernel under QEMU (fetched into ~/.cache/wgc-kernel on first use).
kernel-test *ARGS:
    WGC_KERNEL_REQUIRED=1 {{python}} -m pytest -q -m kernel tests/kernel {{ARGS}}

# A Debian bookworm root made with debootstrap (cached in ~/.cache/wgc-systemd on first use),
# booted on Debian's kernel under QEMU: the units in packaging/ under systemd as PID 1.
systemd-test *ARGS:
    WGC_KERNEL_REQUIRED=1 {{python}} -m pytest -q -m systemd tests/kernel {{ARGS}}

# Every atheris fuzz target (tests/fuzz/) for SECONDS each, then executions per target.
# NATIVE=1: the compiled modules too, built with clang -fsanitize=fuzzer-no-link; NATIVE=asan: with ASan.
fuzz SECONDS="60" NATIVE="": build
    {{python}} tests/fuzz/run.py {{SECONDS}} {{ if NATIVE == "asan" { "--asan" } else if NATIVE != "" { "--native" } else { "" } }}

# Mutation testing of the protocol modules (scripts/mutate.py): noise, cookie and uapi through
# mutmut, the compiled _replay, _trie, _offload and _session through the script's own mutator,
# each mutant against the module's fast tests in a temporary copy.  Prints the survivors as
# file:line and the survival rate per module, the last line JSON.  MAX mutants per module,
# a fixed-seed sample (0: all); at the lowest CPU priority.
mutate MAX="100" *ARGS: build
    nice -n 19 {{python}} scripts/mutate.py --max-mutants {{MAX}} {{ARGS}}

# Microbenchmarks of the per-packet C code (seal/open, TSO cut, coalescing, allowed IPs, replay) beside a libsodium-only loop.
bench-micro *ARGS:
    {{python}} -m pytest -q tests/bench --benchmark-only --benchmark-max-time=0.5 --benchmark-group-by=group --benchmark-columns=min,median,iqr,rounds {{ARGS}}

# A long run: wgc<->wgc and wgc<->wireguard-go under traffic both ways with a ping every
# 200 ms: rekeys, the longest ping gap, pings lost, RSS every 10 s (scripts/soak.py).
soak SECONDS="1800":
    {{python}} scripts/soak.py {{SECONDS}}
