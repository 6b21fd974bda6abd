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

# The frozen executables: dist/wgc (one file) and dist/wgc-dir/ (one directory).
# First, once per environment, PyInstaller's bootloader is rebuilt with wgc's
# temporary-directory check (packaging/bootloader.py).
binary:
    {{python}} packaging/bootloader.py
    WGC_BUNDLE=onefile {{python}} -m PyInstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller-onefile packaging/wgc.spec
    WGC_BUNDLE=onedir {{python}} -m PyInstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller-onedir packaging/wgc.spec

# What CI runs: every test against the package, then the daemon tests against both frozen
# executables (and the built-in wg and wg-quick against the one-file one).
# -rs prints why anything was skipped (the QEMU kernel tier says why it could not boot).
ci:
    {{python}} -m pytest -q -rs
    {{just_executable()}} python={{python}} binary
    WGC_COMMAND=dist/wgc {{python}} -m pytest -q tests/test_lifecycle.py tests/test_interop.py tests/test_appliance.py tests/test_wg_tool.py tests/test_wg_quick.py
    WGC_COMMAND=dist/wgc-dir/wgc {{python}} -m pytest -q tests/test_lifecycle.py tests/test_interop.py tests/test_appliance.py

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

# wgc against the Linux kernel's WireGuard: Debian's kernel under QEMU (fetched into ~/.cache/wgc-kernel on first use).
kernel-test *ARGS:
    WGC_KERNEL_REQUIRED=1 {{python}} -m pytest -q -m kernel tests/kernel {{ARGS}}

# Every atheris fuzz target (tests/fuzz/) for SECONDS each, then executions per target.
# NATIVE=1: the compiled modules too, built with clang -fsanitize=fuzzer-no-link; NATIVE=asan: with ASan.
fuzz SECONDS="60" NATIVE="": build
    {{python}} tests/fuzz/run.py {{SECONDS}} {{ if NATIVE == "asan" { "--asan" } else if NATIVE != "" { "--native" } else { "" } }}

# Microbenchmarks of the per-packet C code (seal/open, TSO cut, coalescing, allowed IPs, replay) beside a libsodium-only loop.
bench-micro *ARGS:
    {{python}} -m pytest -q tests/bench --benchmark-only --benchmark-max-time=0.5 --benchmark-group-by=group --benchmark-columns=min,median,iqr,rounds {{ARGS}}
