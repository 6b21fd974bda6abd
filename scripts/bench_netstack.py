"""wgc's in-process stack (wgc.netstack) against the TUN path and gVisor's netstack, in one run.

One far side serves every client: namespace `far` has a wgc daemon with a TUN
(10.9.0.1) and, behind it, kernel TCP servers (this script with --serve): a
sink on port 5001 that counts what it receives, a source on 5002 that writes
until the client closes, and on 5003 a listener that just holds connections.
Its daemon has three peers, each with its own inner address, all clients
running in namespace `near`:

  netstack   scripts/netstack_client.py, a Net in the client process (10.9.0.2)
  gvnet      ../shared/anchors/gvnet-netstack-latest, wireguard-go on gVisor (10.9.0.3),
             single connections only; left out when the file is missing
  tun        a wgc daemon with a TUN in `near` (10.9.0.4) and netstack_client.py -kernel,
             the same loops on the kernel's sockets

Cases: one connection each way (send: near to far; recv: far to near) and
--streams connections at once, --seconds each, --runs times, the order of the
cases rotated every run.  Send throughput is the far sink's count over its
first accept to its last EOF (so what is still buffered near does not
count); recv throughput is the client's.  CPU seconds per GB are the client
side's: the client process's CPU during the transfer (gvnet's whole process,
its start is milliseconds of Go), plus, for the TUN path, the near daemon's
CPU over the client's run.  RSS is the client's peak (for the TUN path, plus
the near daemon's).  Each run's line also has the far kernel's TCP
retransmissions and the segments it received per MB moved.  Then the netstack client opens --idle idle connections
to the far listener: RSS per connection and in all.  The last line is the
ratio of the netstack's single-connection throughput (send and recv
averaged) to the TUN path's and to gvnet's.

    python scripts/bench_netstack.py [--runs 3] [--seconds 5] [--streams 8] [--idle 1000]
"""
import argparse
import os
import queue
import re
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

from netns import Namespaces, unique_name, veth  # noqa: E402
from wgnet import new_key, start_daemon  # noqa: E402

CLIENT = ROOT / "scripts" / "netstack_client.py"
GVNET = ROOT.parent / "shared" / "anchors" / "gvnet-netstack-latest"
NEAR_OUTER, FAR_OUTER = "192.168.209.2", "192.168.209.1"
FAR, NETSTACK, GVNET_ADDR, TUN = "10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4"
WG_PORT = 51820
SINK, SOURCE, HOLD = 5001, 5002, 5003
SERVER_BUFFER = 1 << 20
ROLES = {SINK: ("sink", selectors.EVENT_READ), SOURCE: ("source", selectors.EVENT_WRITE),
         HOLD: ("hold", selectors.EVENT_READ)}
MTU = 1420
SLACK = 40                 # seconds a client may take beyond its transfer (start, handshake, flush)

RATE = re.compile(r"^(sent|received) (\d+) bytes in ([\d.]+) s = ([\d.]+) Mbit/s", re.M)
RUSAGE = re.compile(r"maxrss (\d+) KiB, cpu ([\d.]+) s")
TRANSFER_CPU = re.compile(r"transfer cpu ([\d.]+) s")
HELD = re.compile(r"held (\d+) connections: rss (\d+) KiB before, (\d+) KiB after")


# ---- the far side's servers (run with --serve in namespace far) ------------------

def serve(address: str) -> None:
    """Sink, source and holder on one epoll loop; a line on stdout per finished sink
    connection: `sink BYTES START END` (CLOCK_MONOTONIC, the same in every namespace)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    selector = selectors.DefaultSelector()
    for port in (SINK, SOURCE, HOLD):
        server = socket.create_server((address, port), backlog=4096)
        server.setblocking(False)
        selector.register(server, selectors.EVENT_READ, ("listen", server, port))
    buffer = bytearray(SERVER_BUFFER)
    data = memoryview(bytes(SERVER_BUFFER))
    counts: dict[socket.socket, list] = {}
    print("listening", flush=True)
    while True:
        for key, _ in selector.select():
            role, sock, port = key.data
            if role == "listen":
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                name, events = ROLES[port]
                counts[conn] = [0, time.monotonic()]
                selector.register(conn, events, (name, conn, port))
                continue
            try:
                n = sock.recv_into(buffer) if role in ("sink", "hold") else sock.send(data)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if n:
                counts[sock][0] += n
                continue
            total, start = counts.pop(sock)
            selector.unregister(sock)
            sock.close()
            if role == "sink":
                print(f"sink {total} {start:.6f} {time.monotonic():.6f}", flush=True)


# ---- the setup ---------------------------------------------------------------

def cpu_of(pid: int) -> float:
    """A process's CPU seconds (all its threads) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


def only_pid(ns) -> int:
    pids = ns.pids()
    if len(pids) != 1:
        raise RuntimeError(f"expected one process (the daemon) in {ns.name}, found {pids}")
    return pids[0]


@dataclass
class Client:
    name: str
    command: list[str]          # everything before the mode
    address: str = FAR          # where it connects: the far servers' ports, plus port_offset
    port_offset: int = 0
    companion: int = 0          # a process whose CPU and RSS count as the client's (a daemon, a proxy)


class Bench:
    def __init__(self, factory, with_gvnet: bool):
        self.near, self.far = factory("bnear"), factory("bfar")
        cable_near, cable_far = veth(self.near, self.far)
        self.near.run("ip", "addr", "add", f"{NEAR_OUTER}/24", "dev", cable_near)
        self.far.run("ip", "addr", "add", f"{FAR_OUTER}/24", "dev", cable_far)
        far_key, far_public = new_key()
        keys = {name: new_key() for name in ("netstack", "gvnet", "tun")}
        self.keys, self.far_public = keys, far_public
        self.far_iface = unique_name("wbf")
        start_daemon(self.far, "wgc", self.far_iface)
        self.far_daemon = only_pid(self.far)
        peers = []
        for name, inner in (("netstack", NETSTACK), ("gvnet", GVNET_ADDR), ("tun", TUN)):
            peers += ["peer", keys[name][1], "allowed-ips", f"{inner}/32"]
        self.far.run("wg", "set", self.far_iface, "private-key", "/dev/stdin", "listen-port", str(WG_PORT),
                     *peers, input=far_key + "\n")
        self._up(self.far, self.far_iface, FAR)
        self.near_iface = unique_name("wbn")
        start_daemon(self.near, "wgc", self.near_iface)
        self.near_daemon = only_pid(self.near)
        self.near.run("wg", "set", self.near_iface, "private-key", "/dev/stdin",
                      "peer", far_public, "endpoint", f"{FAR_OUTER}:{WG_PORT}", "allowed-ips", f"{FAR}/32",
                      input=keys["tun"][0] + "\n")
        self._up(self.near, self.near_iface, TUN)
        self.server = self.far.popen(sys.executable, __file__, "--serve", FAR,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if self.server.stdout.readline().strip() != "listening":
            raise RuntimeError(f"the far servers did not start: {self.server.stderr.read()}")
        self.records: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read_records, daemon=True).start()

        def tunnel_client(program: list[str], name: str, inner: str) -> Client:
            return Client(name, [*program, "-key", keys[name][0], "-addr", inner, "-peer", far_public,
                                 "-endpoint", f"{FAR_OUTER}:{WG_PORT}", "-mtu", str(MTU), "-timeout", "10s"])

        python = [sys.executable, str(CLIENT)]
        self.clients = {"netstack": tunnel_client(python, "netstack", NETSTACK),
                        "tun": Client("tun", [*python, "-kernel", "-timeout", "10s"], companion=self.near_daemon)}
        if with_gvnet:
            self.clients["gvnet"] = tunnel_client([str(GVNET)], "gvnet", GVNET_ADDR)
        # The TUN path answers before any case is timed (its handshake done).
        self.near.run("ping", "-c", "1", "-W", "5", FAR)

    @staticmethod
    def _up(ns, iface: str, address: str) -> None:
        ns.run("ip", "link", "set", iface, "mtu", str(MTU))
        ns.run("ip", "addr", "add", f"{address}/24", "dev", iface)
        ns.run("ip", "link", "set", iface, "up")

    def _read_records(self) -> None:
        for line in self.server.stdout:
            self.records.put(line)

    def _sink_records(self, count: int, since: float, timeout: float) -> list[tuple[int, float, float]]:
        found: list[tuple[int, float, float]] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            try:
                line = self.records.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"the sink reported {len(found)} of {count} connections") from None
            _, total, start, end = line.split()
            if float(start) >= since:
                found.append((int(total), float(start), float(end)))
        return found

    def transfer(self, client: str, mode: str, streams: int, seconds: float) -> dict:
        """One client run; raises RuntimeError with the client's words when it fails."""
        port = SINK if mode == "send" else SOURCE
        who = self.clients[client]
        command = list(who.command)
        if streams > 1:
            command += ["-streams", str(streams)]
        command += [mode, f"{who.address}:{port + who.port_offset}", str(seconds)]
        companion_before = cpu_of(who.companion) if who.companion else 0.0
        far_before, far_tcp = cpu_of(self.far_daemon), self._far_tcp()
        started = time.monotonic()
        proc = self.near.popen(*command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=seconds + SLACK)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise RuntimeError(f"{client} {mode} did not finish in {seconds + SLACK} s: {err.strip()}") from None
        rate, usage = RATE.search(out), RUSAGE.search(err)
        if proc.returncode != 0 or rate is None or usage is None:
            raise RuntimeError(f"{client} {mode} exited {proc.returncode}: {out.strip()} {err.strip()}")
        window = TRANSFER_CPU.search(err)
        cpu = float(window.group(1)) if window else float(usage.group(2))
        rss = int(usage.group(1))
        if who.companion:
            cpu += cpu_of(who.companion) - companion_before
            rss += rss_of(who.companion)
        if mode == "send":
            records = self._sink_records(streams, started, timeout=15)
            moved = sum(r[0] for r in records)
            mbit = moved * 8 / (max(r[2] for r in records) - min(r[1] for r in records)) / 1e6
        else:
            moved, mbit = int(rate.group(2)), float(rate.group(4))
        far_tcp_after = self._far_tcp()
        return {"mbit": mbit, "client_mbit": float(rate.group(4)), "cpu_per_gb": cpu / (moved / 1e9),
                "far_cpu_per_gb": (cpu_of(self.far_daemon) - far_before) / (moved / 1e9), "rss_mib": rss / 1024,
                "far_retrans": far_tcp_after["RetransSegs"] - far_tcp["RetransSegs"],
                "far_segs_in_per_mb": (far_tcp_after["InSegs"] - far_tcp["InSegs"]) / (moved / 1e6)}

    def _far_tcp(self) -> dict[str, int]:
        """The far namespace's TCP counters (/proc/net/snmp): its retransmissions, and the
        segments it receives (for recv cases, the client's ACKs)."""
        names, values = [line.split()[1:] for line in self.far.run("cat", "/proc/net/snmp").stdout.splitlines()
                         if line.startswith("Tcp:")]
        return dict(zip(names, map(int, values), strict=True))

    def idle(self, count: int) -> tuple[float, int]:
        """(KiB per idle connection, RSS in KiB with `count` open) of the netstack client."""
        proc = self.near.run(*self.clients["netstack"].command, "hold", f"{FAR}:{HOLD}", str(count),
                             timeout=count * 0.1 + 60, check=False)
        held = HELD.search(proc.stdout)
        if proc.returncode != 0 or held is None:
            raise RuntimeError(f"hold exited {proc.returncode}: {proc.stdout.strip()} {proc.stderr.strip()}")
        before, after = int(held.group(2)), int(held.group(3))
        return (after - before) / count, after


# ---- runs and figures ----------------------------------------------------------

def spread(values: list[float]) -> str:
    if not values:
        return "failed"
    return f"{statistics.median(values):8.1f} ({min(values):.1f}-{max(values):.1f})"


Case = tuple[str, str, int]     # (client, "send" or "recv", connections)


def run_cases(bench: Bench, cases: list[Case], runs: int, seconds: float) -> tuple[dict, dict]:
    """Every case `runs` times, the order rotated each run: (figures, failures) per case."""
    results: dict[Case, list[dict]] = {case: [] for case in cases}
    failures: dict[Case, list[str]] = {case: [] for case in cases}
    for run in range(runs):
        shift = run * 3 % len(cases)
        for case in cases[shift:] + cases[:shift]:
            label = f"run {run + 1} {case[0]} {case[1]} x{case[2]}"
            try:
                figures = bench.transfer(*case, seconds)
            except RuntimeError as e:
                failures[case].append(str(e))
                print(f"{label}: FAILED {e}", flush=True)
                continue
            results[case].append(figures)
            print(f"{label}: " + ", ".join(f"{k}={v:.1f}" for k, v in figures.items()), flush=True)
    return results, failures


def print_table(results: dict, failures: dict, runs: int) -> None:
    print(f"\n{'case':22} {'Mbit/s median (min-max)':>28} {'CPU s/GB':>20} {'far CPU s/GB':>20} {'RSS MiB':>20}")
    for case, figures in results.items():
        name = f"{case[0]} {case[1]} x{case[2]}"
        cells = [spread([r[k] for r in figures]) for k in ("mbit", "cpu_per_gb", "far_cpu_per_gb", "rss_mib")]
        note = f"  ({len(failures[case])} of {runs} failed)" if failures[case] else ""
        print(f"{name:22} {cells[0]:>28} {cells[1]:>20} {cells[2]:>20} {cells[3]:>20}{note}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--serve", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    with_gvnet = GVNET.exists()
    print(f"reference: {GVNET if with_gvnet else f'{GVNET} is missing: gvnet left out'}", flush=True)
    cases = [(client, mode, streams) for client in ("netstack", "tun") for streams in (1, args.streams)
             for mode in ("send", "recv")]
    if with_gvnet:
        cases += [("gvnet", mode, 1) for mode in ("send", "recv")]
    with Namespaces() as factory:
        bench = Bench(factory, with_gvnet)
        results, failures = run_cases(bench, cases, args.runs, args.seconds)
        try:
            per_connection, total = bench.idle(args.idle)
            idle_line = (f"idle connections: {per_connection:.1f} KiB each, "
                         f"netstack client RSS {total / 1024:.1f} MiB with {args.idle} open")
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            idle_line = f"idle connections: FAILED {e}"

    print_table(results, failures, args.runs)
    print("(tun: CPU is the client's and the near daemon's, RSS the client's peak plus the daemon's)")
    print(idle_line)
    print(ratio_line(results, with_gvnet))


def ratio(results: dict, ours: str, other: str) -> float:
    """ours' single-connection throughput over other's, send and recv averaged (each printed)."""
    def median(client, mode):
        runs = results[(client, mode, 1)]
        return statistics.median(r["mbit"] for r in runs) if runs else float("nan")

    parts = [median(ours, mode) / median(other, mode) for mode in ("send", "recv")]
    print(f"{ours} / {other}, one connection: send {parts[0]:.2f}, recv {parts[1]:.2f}")
    return sum(parts) / 2


def ratio_line(results: dict, with_gvnet: bool) -> str:
    line = f"netstack: ratio to the TUN path {ratio(results, 'netstack', 'tun'):.2f}"
    return line + (f", to the gVisor netstack {ratio(results, 'netstack', 'gvnet'):.2f}" if with_gvnet else "")


if __name__ == "__main__":
    main()
