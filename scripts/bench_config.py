"""Configuration at scale: one big `set=1`, then one `get=1`, over the control socket.

For each shape (peers x allowed IPs per peer: 10,000 x 100 and 1,000 x
1,000 by default) a fresh daemon in a namespace of its own gets one `set=1`
request holding a private key and every peer with its IPv4 /32s (all
distinct, 10.0.0.0/8 counted up), sent as one write as wg(8) does; then one
`get=1`.  Printed per run: the set's time (first byte sent to the reply's
errno), the get's time (request sent to the last byte of the reply, the
reply checked to hold every allowed IP), and the daemon's RSS after both.
Rounds alternate wgc and the newest wireguard-go (../shared/anchors,
left out with a line saying so when missing); medians, their spread, and
wgc's ratios to it come last.

Before that last line, unless --no-clients: what the clients cost against a
fresh wgc daemon for the largest shape (most allowed IPs; of equal ones, the
fewest peers), the same configuration as a wg(8) file: Debian's `wg setconf`
and `wg showconf`, and the built-in `wgc --wg setconf`, `syncconf` (the file
unchanged) and `showconf`, each one run, its wall time and the CPU seconds of
the client process (getrusage of children), beside the daemon's own time for
a raw `set=1` of the same configuration and a raw `get=1`.

    python scripts/bench_config.py [--rounds 3] [--shapes 10000x100,1000x1000] [--no-clients]
"""
import argparse
import base64
import hashlib
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's wgc, and the tests' namespace helpers

from netns import Netns, socket_path, unique_name  # noqa: E402
from wgnet import IMPLEMENTATIONS, rss_kib, start_daemon  # noqa: E402

NEWEST_GO = ROOT.parent / "shared" / "anchors" / "wireguard-go-0.0.20250522"
PRIVATE_KEY = hashlib.sha256(b"bench-config device").hexdigest()


def shape_peers(peers: int, per_peer: int):
    """(public key, its allowed IPs as text) for each peer of a shape."""
    for peer in range(peers):
        first = peer * per_peer
        yield (hashlib.sha256(peer.to_bytes(4, "big")).digest(),
               [f"10.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}/32" for a in range(first, first + per_peer)])


def set_request(peers: int, per_peer: int) -> bytes:
    """`set=1` with a private key and peers x per_peer distinct IPv4 /32s."""
    parts = [f"set=1\nprivate_key={PRIVATE_KEY}\n"]
    for key, ips in shape_peers(peers, per_peer):
        parts.append(f"public_key={key.hex()}\n" + "".join(f"allowed_ip={ip}\n" for ip in ips))
    parts.append("\n")
    return "".join(parts).encode("ascii")


def config_file(peers: int, per_peer: int) -> str:
    """The same configuration as set_request, as a wg(8) configuration file."""
    parts = [f"[Interface]\nPrivateKey = {base64.b64encode(bytes.fromhex(PRIVATE_KEY)).decode()}\n"]
    for key, ips in shape_peers(peers, per_peer):
        parts.append(f"[Peer]\nPublicKey = {base64.b64encode(key).decode()}\nAllowedIPs = {', '.join(ips)}\n")
    return "".join(parts)


def converse(path: str, request: bytes) -> tuple[float, bytes]:
    """Sends request, reads the reply to its blank line; (seconds, reply)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        started = time.perf_counter()
        sock.sendall(request)
        chunks, tail = [], b""
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("the daemon closed the connection before replying")
            chunks.append(chunk)
            tail = (tail + chunk)[-2:]
            if tail == b"\n\n" and b"errno=" in b"".join(chunks[-2:])[-24:]:
                return time.perf_counter() - started, b"".join(chunks)


def one_run(implementation: str, command: list[str], peers: int, per_peer: int, request: bytes) -> dict:
    iface = unique_name("cfg")
    with Netns("cfg") as ns:
        IMPLEMENTATIONS[implementation] = command
        start_daemon(ns, implementation, iface)
        path = socket_path(iface)
        set_seconds, reply = converse(path, request)
        if reply != b"errno=0\n\n":
            raise RuntimeError(f"{implementation}: set answered {reply[:200]!r}")
        get_seconds, reply = converse(path, b"get=1\n\n")
        allowed = reply.count(b"\nallowed_ip=")
        if allowed != peers * per_peer or not reply.endswith(b"errno=0\n\n"):
            raise RuntimeError(f"{implementation}: get showed {allowed} allowed IPs of {peers * per_peer}")
        rss = rss_kib(ns.pids()) / 1024
    return {"set": set_seconds, "get": get_seconds, "rss": rss}


def run_client(command: list[str]) -> tuple[float, float]:
    """Runs a client to its end (output discarded); (wall seconds, its CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, timeout=600)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}: {proc.stderr[-400:]!r}")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def client_costs(peers: int, per_peer: int) -> None:
    """The clients' section: each client once against one fresh wgc daemon,
    which first gets the configuration raw (its own time) and is read raw."""
    iface = unique_name("cfc")
    wgc_wg = [*IMPLEMENTATIONS["wgc"], "--wg"]
    with tempfile.TemporaryDirectory() as tmp, Netns("cfc") as ns:
        conf = os.path.join(tmp, "big.conf")
        with open(conf, "w") as out:
            out.write(config_file(peers, per_peer))
        start_daemon(ns, "wgc", iface)
        path = socket_path(iface)
        daemon_set, reply = converse(path, set_request(peers, per_peer))
        if reply != b"errno=0\n\n":
            raise RuntimeError(f"wgc: set answered {reply[:200]!r}")
        daemon_get = converse(path, b"get=1\n\n")[0]
        print(f"\nclients, {peers:,} peers x {per_peer:,} allowed IPs on a wgc device (one run each; "
              f"the daemon alone: set {daemon_set:.2f} s, get {daemon_get:.2f} s)")
        clients = [("wgc --wg setconf", [*wgc_wg, "setconf", iface, conf], daemon_set),
                   ("wgc --wg syncconf (unchanged)", [*wgc_wg, "syncconf", iface, conf], daemon_set + daemon_get),
                   ("wgc --wg showconf", [*wgc_wg, "showconf", iface], daemon_get)]
        debian = shutil.which("wg")
        if debian:
            clients[:0] = [("Debian wg setconf", [debian, "setconf", iface, conf], daemon_set),
                           ("Debian wg showconf", [debian, "showconf", iface], daemon_get)]
        else:
            print("  no Debian wg(8) on PATH: the built-in one alone")
        for label, command, daemon in clients:
            wall, cpu = run_client(command)
            print(f"  client {label:<30} {wall:6.2f} s   client CPU {cpu:6.2f} s   (daemon alone {daemon:5.2f} s)",
                  flush=True)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shapes", default="10000x100,1000x1000")
    parser.add_argument("--clients", action=argparse.BooleanOptionalAction, default=True,
                        help="the clients' costs for the largest shape (on unless --no-clients)")
    args = parser.parse_args()
    contenders = {"wgc": IMPLEMENTATIONS["wgc"]}
    if NEWEST_GO.exists():
        contenders["wireguard-go 0.0.20250522"] = [str(NEWEST_GO)]
    else:
        print(f"no {NEWEST_GO}: wgc alone, no ratios")
    summary = []
    for shape in args.shapes.split(","):
        peers, per_peer = (int(n) for n in shape.split("x"))
        request = set_request(peers, per_peer)
        print(f"\n{peers:,} peers x {per_peer:,} allowed IPs: a set request of {len(request) / 1e6:.1f} MB")
        results: dict[str, list[dict]] = {name: [] for name in contenders}
        for round_ in range(args.rounds):
            for name, command in contenders.items():
                result = one_run(name, command, peers, per_peer, request)
                results[name].append(result)
                print(f"  round {round_ + 1} {name:<26} set {result['set']:6.2f} s   get {result['get']:6.2f} s"
                      f"   RSS after {result['rss']:6.1f} MiB", flush=True)
        for name, runs in results.items():
            print(f"  median {name:<25} set {spread([r['set'] for r in runs])} s   "
                  f"get {spread([r['get'] for r in runs])} s   RSS {spread([r['rss'] for r in runs])} MiB")
        if len(contenders) == 2:
            medians = {name: {key: statistics.median(r[key] for r in runs) for key in ("set", "get", "rss")}
                       for name, runs in results.items()}
            ours, theirs = medians.values()
            summary.append(f"{peers}x{per_peer}: set {ours['set'] / theirs['set']:.2f}, "
                           f"get {ours['get'] / theirs['get']:.2f}, RSS {ours['rss'] / theirs['rss']:.2f}")
    if args.clients:
        shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
        peers, per_peer = max(shapes, key=lambda shape: (shape[0] * shape[1], -shape[0]))
        client_costs(peers, per_peer)
    if summary:
        print("\nconfig: wgc's ratio to wireguard-go 0.0.20250522 (below 1 is wgc ahead): " + "; ".join(summary))


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench_config.py needs root (namespaces and TUN devices)")
    main()
