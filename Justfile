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
# Rekey-Attempt-Time.  Prints the figures.
loss *ARGS: build
    {{python}} -m pytest -q -s -m long tests/test_loss.py {{ARGS}}

# The frozen executables: dist/wgc (one file) and dist/wgc-dir/ (one directory).
# First, once per environment, PyInstaller's bootloader is rebuilt with wgc's
# temporary-directory check (packaging/bootloader.py).
binary:
    {{python}} packaging/bootloader.py
    WGC_BUNDLE=onefile {{python}} -m PyInstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller-onefile packaging/wgc.spec
    WGC_BUNDLE=onedir {{python}} -m PyInstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller-onedir packaging/wgc.spec

# What CI runs: the frozen executables, every test against the package, then the daemon tests
# against both executables (and the built-in wg and wg-quick against the one-file one).
# Any skip in the netns, kernel or binary tier fails the run (tests/conftest.py) unless
# WGC_SKIP_TIERS names the tier (such as WGC_SKIP_TIERS=kernel,binary); binary also leaves out
# the build and the runs against the executables.  -rs prints why anything was skipped (the
# QEMU kernel tier says why it could not boot); each run ends with its counts per tier.
ci:
    #!/usr/bin/env bash
    set -euo pipefail
    skip=",${WGC_SKIP_TIERS:-},"; skip=${skip// /}
    binary=$([[ $skip == *,binary,* ]] && echo off || echo on)
    if [ "$binary" = on ]; then {{just_executable()}} python={{python}} binary; fi
    {{python}} -m pytest -q -rs
    if [ "$binary" = on ]; then
        WGC_COMMAND=dist/wgc {{python}} -m pytest -q -rs tests/test_lifecycle.py tests/test_interop.py tests/test_appliance.py tests/test_namespaces.py tests/test_wg_tool.py tests/test_wg_quick.py
        WGC_COMMAND=dist/wgc-dir/wgc {{python}} -m pytest -q -rs tests/test_lifecycle.py tests/test_interop.py tests/test_appliance.py
    fi

# Size and start-to-ready time of the frozen executables (build them first).
bench-binary:
    {{python}} scripts/bench_appliance.py

# Two namespaces, a wgc tunnel between them, a ping across, `wg show`, then clean up.
demo: build
    PYTHON={{python}} bash scripts/demo.sh

# wgc against wireguard-go side by side: TCP, UDP, ping, memory; medians and ratios.
bench ROUNDS="3":
    {{python}} scripts/bench.py --rounds {{ROUNDS}}

# Memory of wgc and wireguard-go under SECONDS of TCP load both ways, sampled every 10 s.
bench-soak SECONDS="300":
    {{python}} scripts/bench.py --soak {{SECONDS}}

# Valid initiations from PEERS distinct peers at a wgc and a wireguard-go responder, alternating for ROUNDS:
# handshakes per second, cookie replies, memory, beside this machine's X25519 limit.
bench-handshakes PEERS="1000" ROUNDS="3": build
    {{python}} scripts/handshake_load.py --peers {{PEERS}} --rounds {{ROUNDS}}

# wgc against the Linux kernel's WireGuard: Debian's kernel under QEMU (fetched into ~/.cache/wgc-kernel on first use).
kernel-test *ARGS:
    WGC_KERNEL_REQUIRED=1 {{python}} -m pytest -q -m kernel tests/kernel {{ARGS}}

# Microbenchmarks of the per-packet C code (seal/open, TSO cut, coalescing, allowed IPs, replay) beside a libsodium-only loop.
bench-micro *ARGS:
    {{python}} -m pytest -q tests/bench --benchmark-only --benchmark-max-time=0.5 --benchmark-group-by=group --benchmark-columns=min,median,iqr,rounds {{ARGS}}
