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

    python scripts/bench_config.py [--rounds 3] [--shapes 10000x100,1000x1000]
"""
import argparse
import hashlib
import os
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's wgc, and the tests' namespace helpers

from netns import Netns, socket_path, unique_name  # noqa: E402
from wgnet import IMPLEMENTATIONS, rss_kib, start_daemon  # noqa: E402

NEWEST_GO = ROOT.parent / "shared" / "anchors" / "wireguard-go-0.0.20250522"
PRIVATE_KEY = hashlib.sha256(b"bench-config device").hexdigest()


def set_request(peers: int, per_peer: int) -> bytes:
    """`set=1` with a private key and peers x per_peer distinct IPv4 /32s."""
    parts = [f"set=1\nprivate_key={PRIVATE_KEY}\n"]
    address = 0
    for peer in range(peers):
        key = hashlib.sha256(peer.to_bytes(4, "big")).hexdigest()
        lines = [f"public_key={key}\n"]
        for _ in range(per_peer):
            lines.append(f"allowed_ip=10.{address >> 16 & 255}.{address >> 8 & 255}.{address & 255}/32\n")
            address += 1
        parts.append("".join(lines))
    parts.append("\n")
    return "".join(parts).encode("ascii")


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


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shapes", default="10000x100,1000x1000")
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
    if summary:
        print("\nconfig: wgc's ratio to wireguard-go 0.0.20250522 (below 1 is wgc ahead): " + "; ".join(summary))


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench_config.py needs root (namespaces and TUN devices)")
    main()
