"""Prints the size of the frozen executables, how long each takes from start
to a listening control socket (median of several starts, in a throwaway
network namespace), the newest glibc symbol version they need, and the CPU
time of one `wg show IFACE` through each (against a daemon in that namespace,
configured as a router's is: a private key, peers with endpoints and allowed
IPs), side by side with Debian's wg(8) and a bare Python that does nothing;
and, through the one-directory build, the other commands scripts run often.

    python scripts/bench_appliance.py [SUITE-ARCH...]

Each SUITE-ARCH (such as bookworm-arm64, see packaging/debian_root.py) adds the
size, start to ready and glibc floor of the executables built in that Debian
root, run inside it (the arm64 ones under qemu-user)."""
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "packaging"))
from debian_root import BUILDS, FORMS, output, running  # noqa: E402
from glibc_floor import glibc_floor  # noqa: E402

CANDIDATES = {"one-file dist/wgc": ROOT / "dist/wgc", "one-dir dist/wgc-dir/wgc": ROOT / "dist/wgc-dir/wgc",
              "python -m wgc": None}
ROUNDS = 5
SHOW_RUNS = 20
START_PATIENCE = 60  # seconds; a start under qemu-user takes seconds


def start_to_ready(ns: str, command: list[str]) -> float:
    iface = f"wgbench{os.getpid() % 10000}"
    path = f"/var/run/wireguard/{iface}.sock"
    started = time.monotonic()
    proc = subprocess.Popen(["ip", "netns", "exec", ns, *command, "-f", iface])
    try:
        while not os.path.exists(path):
            if time.monotonic() - started > START_PATIENCE:
                raise RuntimeError(f"{command} did not start")
            time.sleep(0.002)
        return time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait()
        gone = time.monotonic() + 5
        while os.path.exists(path) and time.monotonic() < gone:  # a one-file child may outlive its launcher
            time.sleep(0.01)


def cpu_per_run(command: list[str]) -> float:
    """Median user+system CPU seconds of one run of command, over SHOW_RUNS runs
    (the rusage of waited-for children, read before and after each)."""
    spent = []
    for _ in range(SHOW_RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(spent)


def configure(iface: str) -> None:
    """Gives the daemon what a router's device has, through wgc's own wg: a
    private key (so `show` derives the public key) and two peers with
    endpoints and allowed IPs, IPv4 and IPv6 (no keepalive: nothing is sent)."""
    keys = [subprocess.run([sys.executable, "-m", "wgc", "--wg", "genkey"], check=True, capture_output=True,
                           text=True).stdout.strip() for _ in range(3)]
    with tempfile.NamedTemporaryFile("w") as private:  # mode 0600
        private.write(keys[0] + "\n")
        private.flush()
        subprocess.run([sys.executable, "-m", "wgc", "--wg", "set", iface, "private-key", private.name,
                        "peer", keys[1], "endpoint", "192.0.2.1:51820", "allowed-ips", "10.0.0.2/32,fd00::2/128",
                        "peer", keys[2], "endpoint", "[2001:db8::1]:51820", "allowed-ips", "10.0.0.3/32"],
                       check=True)


def show_cpu(ns: str, rooted: dict[str, list[str]]) -> None:
    """CPU per `wg show IFACE` of each wg against one wgc daemon, with the
    ratios to Debian's wg and to `python3 -I -S -c pass` (the least any
    Python program can cost); then `showconf` and `set` through the
    one-directory build (not `show all`: it would read every device on the
    machine, whatever else runs).  The daemon's socket is in
    /var/run/wireguard, outside the namespace, so every command runs directly;
    rooted adds labelled commands that run a wgc inside a Debian root (with
    qemu-user's CPU for a foreign architecture)."""
    iface = f"wgshow{os.getpid() % 10000}"
    path = f"/var/run/wireguard/{iface}.sock"
    daemon = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "wgc", "-f", iface])
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise RuntimeError("the wgc daemon did not start")
            time.sleep(0.01)
        configure(iface)
        commands = {"python3 -I -S -c pass": [sys.executable, "-I", "-S", "-c", "pass"]}
        if shutil.which("wg"):
            commands["Debian wg show"] = ["wg", "show", iface]
        commands["python -m wgc --wg show"] = [sys.executable, "-m", "wgc", "--wg", "show", iface]
        for label, path_ in (("one-dir --wg show", CANDIDATES["one-dir dist/wgc-dir/wgc"]),
                             ("one-file --wg show", CANDIDATES["one-file dist/wgc"])):
            if path_ is not None and path_.exists():
                commands[label] = [str(path_), "--wg", "show", iface]
        one_dir = CANDIDATES["one-dir dist/wgc-dir/wgc"]
        if one_dir is not None and one_dir.exists():
            commands["one-dir --wg showconf"] = [str(one_dir), "--wg", "showconf", iface]
            commands["one-dir --wg set"] = [str(one_dir), "--wg", "set", iface, "listen-port", "51820"]
        commands.update({f"{label} --wg show": [*command, "--wg", "show", iface] for label, command in rooted.items()})
        spent = {label: cpu_per_run(command) for label, command in commands.items()}
        bare, debian = spent["python3 -I -S -c pass"], spent.get("Debian wg show")
        print(f"CPU (user+sys) per run, median of {SHOW_RUNS}:")
        for label, seconds in spent.items():
            ratios = f"  {seconds / bare:5.1f}x bare Python"
            if debian:
                ratios += f"  {seconds / debian:6.1f}x Debian wg"
            print(f"  {label:36} {seconds * 1000:6.1f} ms{ratios}")
    finally:
        daemon.terminate()
        daemon.wait()


def size_mb(path: Path) -> float:
    """The size of a one-file executable, or of the whole directory of a one-dir one."""
    files = [path] if path.parent.name != "wgc-dir" else [p for p in path.parent.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def print_start(ns: str, label: str, command: list[str], path: Path | None) -> None:
    times = [start_to_ready(ns, command) for _ in range(ROUNDS)]
    size = f", size {size_mb(path):.1f} MB" if path is not None else ""
    print(f"{label}: start to ready {statistics.median(times) * 1000:.0f} ms (median of {ROUNDS}){size}")


def main():
    ns = f"wgbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        with contextlib.ExitStack() as mounts:
            rooted: dict[str, list[str]] = {}
            for name in sys.argv[1:]:  # Debian root builds, each run inside its root
                commands = mounts.enter_context(running(BUILDS[name]))
                rooted.update({f"{name} {form}": command for form, command in commands.items()})
            for label, path in CANDIDATES.items():
                if path is not None and not path.exists():
                    print(f"{label}: not built (just binary)")
                    continue
                print_start(ns, label, [str(path)] if path else [sys.executable, "-m", "wgc"], path)
            for label, command in rooted.items():
                name, form = label.split()
                print_start(ns, f"{label} (in its root)", command, output(BUILDS[name]) / FORMS[form])
            show_cpu(ns, rooted)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    for name in sys.argv[1:]:
        rooted_dist = output(BUILDS[name])
        print(f"{name}: needs at least {glibc_floor(rooted_dist / 'wgc', rooted_dist / 'wgc-dir')}")
    built = [path for path in (ROOT / "dist/wgc", ROOT / "dist/wgc-dir") if path.exists()]
    if built:
        print(f"needs at least {glibc_floor(*built)} (the build machine's symbols)")

if __name__ == "__main__":
    main()
