"""Prints the size of the frozen executables, how long each takes from start
to a listening control socket (median of several starts, in a throwaway
network namespace), and the newest glibc symbol version they need."""
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
CANDIDATES = {"one-file dist/wgc": ROOT / "dist/wgc", "one-dir dist/wgc-dir/wgc": ROOT / "dist/wgc-dir/wgc",
              "python -m wgc": None}
ROUNDS = 5


def start_to_ready(ns: str, command: list[str]) -> float:
    iface = f"wgbench{os.getpid() % 10000}"
    path = f"/var/run/wireguard/{iface}.sock"
    started = time.monotonic()
    proc = subprocess.Popen(["ip", "netns", "exec", ns, *command, "-f", iface])
    try:
        while not os.path.exists(path):
            if time.monotonic() - started > 10:
                raise RuntimeError(f"{command} did not start")
            time.sleep(0.002)
        return time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait()
        gone = time.monotonic() + 5
        while os.path.exists(path) and time.monotonic() < gone:  # a one-file child may outlive its launcher
            time.sleep(0.01)


def newest_glibc(directory: Path) -> str:
    """The highest GLIBC_x.y any binary of the one-dir bundle asks for."""
    versions: set[tuple[int, ...]] = set()
    for path in [directory / "wgc", *directory.rglob("*.so*")]:
        out = subprocess.run(["objdump", "-T", str(path)], capture_output=True, text=True).stdout
        versions.update(tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_(\d+\.\d+)", out))
    return "glibc " + ".".join(map(str, max(versions))) if versions else "unknown"


def main():
    ns = f"wgbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for label, path in CANDIDATES.items():
            if path is not None and not path.exists():
                print(f"{label}: not built (just binary)")
                continue
            command = [str(path)] if path else [sys.executable, "-m", "wgc"]
            times = [start_to_ready(ns, command) for _ in range(ROUNDS)]
            size = ""
            if path is not None:
                files = [path] if path.parent.name != "wgc-dir" else [p for p in path.parent.rglob("*") if p.is_file()]
                size = f", size {sum(p.stat().st_size for p in files) / 1e6:.1f} MB"
            print(f"{label}: start to ready {statistics.median(times) * 1000:.0f} ms (median of {ROUNDS}){size}")
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    bundle = ROOT / "dist/wgc-dir"
    if bundle.exists():
        print(f"needs at least {newest_glibc(bundle)} (the build machine's symbols)")


if __name__ == "__main__":
    main()
