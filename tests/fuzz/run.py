"""Runs every fuzz target for a while and prints executions per target.

    python tests/fuzz/run.py SECONDS [--native] [--asan] [TARGET ...]

Each target starts from its committed seeds (tests/fuzz/corpus/<target>/,
only read) and keeps what it finds in build/fuzz/corpus/<target>/, so that a
later run goes on from there; a crash is written to build/fuzz/artifacts/.
--native first compiles the Cython modules with clang and
-fsanitize=fuzzer-no-link into build/fuzz/native (--asan: with
AddressSanitizer too) and loads them instead of wgc/*.so, so that libFuzzer
also sees the compiled data plane's edges (common.py).
"""
import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(ROOT, "build", "fuzz")
TARGETS = ("udp", "tun", "cookie", "uapi", "config", "netlink", "offload", "dns", "frag", "netstack", "socks5", "http",
           "proxyconfig")
_STAT = re.compile(rb"stat::(number_of_executed_units|average_exec_per_sec|new_units_added):\s*(\d+)")
_COVERAGE = re.compile(rb"#\d+\s+(?:DONE|INITED)\s+cov: (\d+) ft: (\d+)")


def _clang_file(name: str) -> str:
    return subprocess.run(["clang", f"-print-file-name={name}"], capture_output=True, text=True,
                          check=True).stdout.strip()


def build_native(asan: bool) -> str:
    """The Cython modules compiled for fuzzing, and libFuzzer as a shared library
    to preload (atheris then takes the preloaded one, whose coverage hooks the
    modules call); returns the directory to load the modules from."""
    out = os.path.join(BUILD, "native-asan" if asan else "native")
    sanitizers = "address,fuzzer-no-link" if asan else "fuzzer-no-link"
    env = dict(os.environ, CC="clang", LDSHARED="clang -shared",
               CFLAGS=f"-fsanitize={sanitizers} -fno-omit-frame-pointer -g")
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "-j", "2", "--build-lib", out,
                    "--build-temp", os.path.join(out, "tmp")], cwd=ROOT, env=env, check=True)
    subprocess.run(["clang++", "-shared", "-o", os.path.join(BUILD, "libfuzzer.so"), "-Wl,--whole-archive",
                    _clang_file("libclang_rt.fuzzer_no_main-x86_64.a"), "-Wl,--no-whole-archive", "-lpthread"],
                   check=True)
    return out


def target_env(native: str | None, asan: bool) -> dict:
    env = dict(os.environ)
    env.pop("WGC_FUZZ_NATIVE", None)
    if native:
        env["WGC_FUZZ_NATIVE"] = native
        preload = [os.path.join(BUILD, "libfuzzer.so")]
        if asan:
            # After libFuzzer, so that the modules' coverage hooks bind to it and
            # not to the ASan runtime's empty defaults (hence the link-order check off).
            preload.append(_clang_file("libclang_rt.asan-x86_64.so"))
            env["ASAN_OPTIONS"] = "detect_leaks=0:allocator_may_return_null=1:verify_asan_link_order=0"
        env["LD_PRELOAD"] = " ".join(preload)
    return env


def run_target(name: str, flags: list[str], env: dict | None = None, keep: bool = True) -> dict:
    """One libFuzzer run of target name; returns its figures and output.

    keep: new finds go to build/fuzz/corpus/<name>; otherwise to a directory
    of this run only (CI's smoke leaves nothing behind)."""
    import tempfile

    artifacts = os.path.join(BUILD, "artifacts") + os.sep
    os.makedirs(artifacts, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        work = os.path.join(BUILD, "corpus", name) if keep else scratch
        os.makedirs(work, exist_ok=True)
        command = [sys.executable, os.path.join(HERE, f"fuzz_{name}.py"), "-print_final_stats=1",
                   f"-artifact_prefix={artifacts}{name}-", *flags, work, os.path.join(HERE, "corpus", name)]
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, env=env, cwd=ROOT)
        elapsed = time.monotonic() - started
    stats = {key.decode(): int(value) for key, value in _STAT.findall(done.stderr)}
    coverage = _COVERAGE.findall(done.stderr)
    return {
        "target": name, "returncode": done.returncode, "seconds": elapsed,
        "executions": stats.get("number_of_executed_units", 0),
        "per_second": stats.get("average_exec_per_sec", 0),
        "coverage": int(coverage[-1][0]) if coverage else 0,
        "features": int(coverage[-1][1]) if coverage else 0,
        "output": done.stderr.decode("utf-8", "replace"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seconds", type=int)
    parser.add_argument("--native", action="store_true", help="instrument the compiled modules too (clang)")
    parser.add_argument("--asan", action="store_true", help="with --native: AddressSanitizer as well")
    parser.add_argument("targets", nargs="*", default=list(TARGETS))
    args = parser.parse_intermixed_args()
    native = build_native(args.asan) if args.native or args.asan else None
    env = target_env(native, args.asan)
    print(f"{'target':<10}{'executions':>12}{'exec/s':>9}{'cov':>7}{'ft':>7}  result")
    failed = False
    for name in args.targets:
        result = run_target(name, [f"-max_total_time={args.seconds}", "-timeout=10", "-rss_limit_mb=4096"], env)
        ok = result["returncode"] == 0
        failed |= not ok
        print(f"{name:<10}{result['executions']:>12}{result['per_second']:>9}{result['coverage']:>7}"
              f"{result['features']:>7}  {'ok' if ok else 'FAILED'}", flush=True)
        if not ok:
            print(result["output"][-4000:], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
