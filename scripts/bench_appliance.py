"""Prints the size of the frozen executables and how long each takes from
start to a listening control socket (median of several starts), in a
throwaway network namespace."""
import os
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


if __name__ == "__main__":
    main()
