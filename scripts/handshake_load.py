"""Handshake load: valid initiations from many distinct peers at one responder.

A responder (wgc, or Debian's wireguard-go) in one namespace is configured
with wg(8) for N peers; from a second namespace a generator built on wgc's
own sans-I/O handshake code (wgc.noise, wgc.cookie) sends one valid
initiation per peer, each from its own source (its own IPv4 address or IPv6
/64, its own port of one shared address, or its own address in one shared
/64), at a controlled rate.  It reads what comes
back as a real initiator does: a cookie reply is decrypted (wgc.cookie) and
the initiation resent with a valid mac2, at once rather than at the next
retransmission, so that the figures are the responder's and not the
initiators' timers; silence is answered by a fresh initiation after 5 s.  Responses are validated only after the
load (two X25519 each), so the generator spends its CPU time on sending.

For each round it prints handshakes completed per second, the cookie replies
and when the first came (under-load mode had begun), the responder's RSS
before, at its highest during, and after the load (all its processes, from
/proc/PID/status) and its CPU time; beside them the X25519 limit of this
machine (scalar multiplications per second on one core through wgc._crypto,
that is libsodium) measured in the same run.  Rounds alternate wgc and
wireguard-go; the medians and spreads come last.

    python scripts/handshake_load.py [--peers 1000] [--rounds 3] [--rate 20000] [--layouts distinct,own-64]

The generator itself runs as `handshake_load.py --drive JSON` inside its
namespace; tests import the same pieces (Responder, drive_from).
"""
import argparse
import base64
import copy
import json
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's wgc, and the tests' namespace helpers

from netns import Namespaces, unique_name, veth  # noqa: E402
from wgc import _crypto, noise  # noqa: E402
from wgc import constants as C  # noqa: E402
from wgc.cookie import CookieGenerator  # noqa: E402
from wgnet import have, rss_kib, start_daemon  # noqa: E402

RESPONDER_ADDRESS, GENERATOR_ADDRESS = "192.168.77.1", "192.168.77.2"
RESPONDER_ADDRESS6, GENERATOR_ADDRESS6 = "fd77:77::1", "fd77:77::2"
RESPONDER_PORT = 51820
# The generator's sources: the whole blocks are local in its namespace (an
# "AnyIP" local route), so every peer can bind an address of its own.
SOURCE_BLOCK, SOURCE_BLOCK6 = "10.200.0.0/15", "fd77:200::/47"
# Where the peers send from: their own IPv4 address; their own port of one IPv4
# address; their own IPv6 /64; their own IPv6 address, all in one /64.  A
# responder's rate limiter sees one source in SHARED, and, if it groups IPv6
# by /64 as the kernel does, one in ONE_64 too.
DISTINCT, SHARED, OWN_64, ONE_64 = "distinct", "shared", "own-64", "one-64"
IPV6_LAYOUTS = (OWN_64, ONE_64)
SOURCE_PORT = 40000
ADDRESSES_PER_OCTET = 250
RETRY_AFTER = C.REKEY_TIMEOUT / C.SECOND  # as a real initiator: a new initiation after 5 s of silence


def peer_private_key(seed: bytes, i: int) -> bytes:
    """Peer i's key, derived from a seed so the two namespaces need pass only the seed."""
    return _crypto.clamp(noise.hash(seed, i.to_bytes(4, "little")))


def source_of(i: int, layout: str) -> tuple[str, int]:
    """Where peer i sends from: its own address (DISTINCT), its own port of
    10.201.0.1 (SHARED), its own fd77:200:0:i::/64 (OWN_64) or its own address
    in fd77:200:1::/64 (ONE_64)."""
    if layout == DISTINCT:
        return f"10.200.{i // ADDRESSES_PER_OCTET}.{1 + i % ADDRESSES_PER_OCTET}", SOURCE_PORT
    if layout == OWN_64:
        return f"fd77:200:0:{i:x}::1", SOURCE_PORT
    if layout == ONE_64:
        return f"fd77:200:1::{i + 1:x}", SOURCE_PORT
    return "10.201.0.1", SOURCE_PORT + i


# -- the generator (runs in its own namespace) -------------------------------------------

class Initiator:
    """One generated peer: its handshake with the responder, its cookie, its socket."""

    def __init__(self, number: int, private_key: bytes, responder_public: bytes, source, target,
                 selector, moves: int = 0):
        self.number = number
        self.target = target
        self.selector = selector
        self.moves = moves  # how many cookies are answered from a new port of the same address
        self.identity = noise.StaticIdentity(private_key)
        self.handshake = noise.Handshake(self.identity, responder_public)
        self.cookies = CookieGenerator(responder_public)
        self.attempts: dict[int, noise.Handshake] = {}   # sender index -> the state to validate a response with
        self.responses: list[tuple[int, bytes]] = []
        self.cookie_times: list[int] = []
        self.strays = 0   # replies that are neither a response nor a cookie reply we can open
        self.sends = 0
        self.last_sent = 0
        self.message = bytearray()
        self.sock = self._connect(source)

    def _connect(self, source) -> socket.socket:
        family = socket.AF_INET6 if ":" in source[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        sock.bind(source)
        sock.connect(self.target)
        self.selector.register(sock, selectors.EVENT_READ, self)
        return sock

    def reopen(self, source) -> None:
        """A new socket, from source, in place of the current one."""
        self.selector.unregister(self.sock)
        self.sock.close()
        self.sock = self._connect(source)

    def new_initiation(self) -> None:
        index = int.from_bytes(_crypto.random(4), "little")
        self.message = noise.create_initiation(self.handshake, index, time.time_ns())
        self.attempts[index] = copy.copy(self.handshake)

    def send(self, now: int) -> None:
        """Sends the current initiation with fresh MACs (mac2 once a cookie is held)."""
        self.cookies.add_macs(self.message, now)
        try:
            self.sock.send(self.message)
        except BlockingIOError:
            pass  # counted as sent: to the initiator a full buffer is a lost packet
        self.sends += 1
        self.last_sent = now

    def receive(self, now: int) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return
            if len(data) == C.RESPONSE_SIZE and data[0] == C.MESSAGE_RESPONSE:
                self.responses.append((now, data))
            elif self.cookies.consume_reply(data, now):
                self.cookie_times.append(now)
                if self.moves:
                    self.moves -= 1
                    self.reopen((self.sock.getsockname()[0], 0))  # resend from a port the cookie is not for
                if not self.responses:
                    self.send(now)  # as an initiator holding a cookie: again, with mac2
            else:
                self.strays += 1

    def completed_at(self) -> int | None:
        """When the first response that authenticates arrived (two X25519 per response)."""
        for when, data in self.responses:
            if noise.consume_response(self.identity, data, self.attempts.get) is not None:
                return when
        return None


def drive(target, responder_public: bytes, seed: bytes, count: int, layout: str, rate: float,
          seconds: float, retry_after: float, moves: int = 0, freeze: tuple[int, ...] = ()) -> dict:
    """Sends count peers' initiations at rate per second; bounded by seconds.

    A peer without any answer for retry_after seconds starts a new initiation.
    The first `moves` cookies a peer gets it answers from a new port.  The
    processes in freeze (the responder's, for tests) are stopped until every
    first initiation is sent, so that it finds them all waiting at once
    whatever the scheduler does.  Times in the result are seconds since the
    first initiation was sent.
    """
    selector = selectors.DefaultSelector()
    peers = [Initiator(i, peer_private_key(seed, i), responder_public, source_of(i, layout), target,
                       selector, moves)
             for i in range(count)]
    for peer in peers:
        peer.new_initiation()  # before the clock starts: the load is the responder's work
    for pid in freeze:
        os.kill(pid, signal.SIGSTOP)
    try:
        return _load(peers, selector, rate, seconds, retry_after, freeze)
    finally:
        thaw(freeze)
        selector.close()
        for peer in peers:
            peer.sock.close()


def thaw(pids) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


def _load(peers: list[Initiator], selector, rate: float, seconds: float, retry_after: float, frozen) -> dict:
    count = len(peers)
    waiting = deque(peers)
    retry_ns = int(retry_after * C.SECOND)
    start = time.monotonic_ns()
    deadline = start + int(seconds * C.SECOND)
    next_retry_scan = start
    now = start
    while now < deadline:
        due = count if rate <= 0 else min(count, int(rate * (now - start) / C.SECOND) + 1)
        while waiting and count - len(waiting) < due:
            waiting.popleft().send(now)
        if frozen and not waiting:
            thaw(frozen)
            frozen = ()
        for key, _ in selector.select(timeout=0.002):
            key.data.receive(time.monotonic_ns())
        now = time.monotonic_ns()
        if now >= next_retry_scan:
            next_retry_scan = now + C.SECOND // 20
            unanswered = [p for p in peers if p.sends and not p.responses]
            if not unanswered and not waiting:
                break
            for peer in unanswered:
                if now - peer.last_sent >= retry_ns:
                    peer.new_initiation()
                    peer.send(now)
    return summarize(peers, start)


def summarize(peers: list[Initiator], start: int) -> dict:
    def since(t):
        return None if t is None else (t - start) / C.SECOND

    result = []
    for peer in peers:
        result.append({
            "peer": peer.number,
            "sends": peer.sends,
            "completed": since(peer.completed_at()),
            "responses": len(peer.responses),
            "strays": peer.strays,
            "cookies": [since(t) for t in peer.cookie_times],
        })
    return {"peers": result}


# -- the responder and the two namespaces -----------------------------------------------

class Responder:
    """A responder with count peers in one namespace, a generator namespace beside it.

    factory makes a Netns; closing them (the factory's owner does) removes everything.
    """

    def __init__(self, factory, implementation: str, count: int, seed: bytes | None = None):
        self.seed = seed or _crypto.random(16)
        self.count = count
        self.ns, self.generator = factory("hsr"), factory("hsg")
        cable, other = veth(self.ns, self.generator)
        for ns, dev, address, prefix in ((self.ns, cable, RESPONDER_ADDRESS, 24),
                                         (self.generator, other, GENERATOR_ADDRESS, 24),
                                         (self.ns, cable, RESPONDER_ADDRESS6, 64),
                                         (self.generator, other, GENERATOR_ADDRESS6, 64)):
            ns.run("ip", "addr", "add", f"{address}/{prefix}", "dev", dev, "nodad")
        for block, via in ((SOURCE_BLOCK, GENERATOR_ADDRESS), (SOURCE_BLOCK6, GENERATOR_ADDRESS6)):
            self.generator.run("ip", "route", "add", "local", block, "dev", "lo")
            self.ns.run("ip", "route", "add", block, "via", via)
        # A local route delivers to every address of a block, but IPv6 (unlike
        # IPv4) binds only to assigned addresses unless told otherwise.
        self.generator.run("sysctl", "-qw", "net.ipv6.ip_nonlocal_bind=1")
        private = _crypto.clamp(_crypto.random(32))
        self.public_key = _crypto.public_key(private)
        self.iface = unique_name("wgh")
        start_daemon(self.ns, implementation, self.iface)
        self.ns.run("wg", "setconf", self.iface, "/dev/stdin", input=self._config(private), timeout=60)
        self.ns.run("ip", "link", "set", self.iface, "up")
        self.pids = self.ns.pids()  # the daemon's processes, read once: sampling must not fork

    def _config(self, private: bytes) -> str:
        lines = ["[Interface]", f"PrivateKey = {b64(private)}", f"ListenPort = {RESPONDER_PORT}"]
        for i in range(self.count):
            lines += ["[Peer]", f"PublicKey = {b64(_crypto.public_key(peer_private_key(self.seed, i)))}"]
        return "\n".join(lines) + "\n"

    def rss_kib(self) -> int:
        """Resident memory of all the responder's processes."""
        return rss_kib(self.pids)

    def socket_drops(self) -> int:
        """UDP datagrams (over IPv4 and IPv6) the kernel dropped in the responder's
        namespace for a full socket buffer."""
        lines = [line.split() for line in self.ns.run("cat", "/proc/net/snmp").stdout.splitlines()
                 if line.startswith("Udp:")]
        ipv6 = dict(line.split() for line in self.ns.run("cat", "/proc/net/snmp6").stdout.splitlines())
        return int(lines[1][lines[0].index("RcvbufErrors")]) + int(ipv6["Udp6RcvbufErrors"])

    def cpu_seconds(self) -> float:
        """CPU time of all the responder's threads, in ns from the scheduler
        (/proc/PID/stat counts in 10-ms ticks, too coarse for a load of a
        fraction of a second); the daemons keep their threads for their life."""
        total = 0
        for pid in self.pids:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
        return total / C.SECOND

    def drive(self, layout: str = DISTINCT, rate: float = 0, seconds: float = 10,
              retry_after: float = RETRY_AFTER, moves: int = 0, freeze: bool = False) -> dict:
        """Runs the generator in its namespace, all count peers, as drive() describes
        (freeze: stop the responder until the first initiations are all sent)."""
        request = {
            "target": [RESPONDER_ADDRESS6 if layout in IPV6_LAYOUTS else RESPONDER_ADDRESS, RESPONDER_PORT],
            "public": self.public_key.hex(),
            "seed": self.seed.hex(), "count": self.count, "layout": layout,
            "rate": rate, "seconds": seconds, "retry_after": retry_after, "moves": moves,
            "freeze": self.pids if freeze else [],
        }
        out = self.generator.run(sys.executable, __file__, "--drive", json.dumps(request), timeout=seconds + 60)
        return json.loads(out.stdout)


def drive_from(request: dict) -> dict:
    return drive(tuple(request["target"]), bytes.fromhex(request["public"]), bytes.fromhex(request["seed"]),
                 request["count"], request["layout"], request["rate"], request["seconds"], request["retry_after"],
                 request["moves"], request["freeze"])


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


class MemoryWatch:
    """Samples the responder's RSS every interval seconds while the load runs."""

    def __init__(self, responder: Responder, interval: float = 0.05):
        self.responder, self.interval = responder, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(self.responder.rss_kib())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# -- figures ----------------------------------------------------------------------------

def handshake_figures(result: dict, retry_after: float) -> dict:
    """Rates, cookies and the start of under-load mode, from a drive() result.

    The first pass is what completed before any peer could have retried:
    its rate is the responder's throughput without the initiators' 5-s wait
    for what it dropped.
    """
    peers = result["peers"]
    done = sorted(p["completed"] for p in peers if p["completed"] is not None)
    first_pass = [t for t in done if t < retry_after]
    cookies = sorted(t for p in peers for t in p["cookies"])
    return {
        "completed": len(done),
        "rate": len(done) / done[-1] if done else 0.0,
        "first_pass": len(first_pass),
        "first_pass_rate": len(first_pass) / first_pass[-1] if first_pass else 0.0,
        "cookie_replies": len(cookies),
        "first_cookie_s": cookies[0] if cookies else None,
        "initiations_sent": sum(p["sends"] for p in peers),
        "last_completion_s": done[-1] if done else None,
    }


def x25519_per_cpu_second(seconds: float = 0.4) -> tuple[float, float]:
    """(variable-base, base-point) scalar multiplications per CPU-second of one core.

    Counted against this thread's CPU time, not the wall clock, so that other
    work on the shared machine does not lower the limit.
    """
    scalar = _crypto.clamp(_crypto.random(32))
    point = _crypto.public_key(_crypto.clamp(_crypto.random(32)))
    rates = []
    for operation in (lambda s, p: _crypto.dh(s, p), lambda s, p: _crypto.public_key(s)):
        n, start = 0, time.thread_time()
        while time.thread_time() - start < seconds:
            for _ in range(200):
                point = operation(scalar, point)
            n += 200
        rates.append(n / (time.thread_time() - start))
    return rates[0], rates[1]


def handshake_ceiling(variable: float, base: float) -> float:
    """Responses per CPU-second that X25519 alone allows: a responder does one
    DH with its static key, two with its ephemeral key, and makes the ephemeral
    public key (the DH of the two static keys is computed once per peer)."""
    return 1 / (3 / variable + 1 / base)


def measure(implementation: str, peers: int, rate: float, seconds: float, layout: str) -> dict:
    with Namespaces() as factory:
        responder = Responder(factory, implementation, peers)
        time.sleep(0.5)
        before, cpu, drops = responder.rss_kib(), responder.cpu_seconds(), responder.socket_drops()
        with MemoryWatch(responder) as watch:
            figures = handshake_figures(responder.drive(layout, rate=rate, seconds=seconds), RETRY_AFTER)
        cpu = responder.cpu_seconds() - cpu
        time.sleep(1)
        figures.update(rss_before_mib=before / 1024, rss_peak_mib=max(watch.samples, default=before) / 1024,
                       rss_after_mib=responder.rss_kib() / 1024, cpu_s=cpu,
                       socket_drops=responder.socket_drops() - drops,
                       per_cpu_second=figures["completed"] / cpu if cpu else 0.0)
        return figures


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} (range {min(values):.0f}-{max(values):.0f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20000, help="initiations per second offered (0: at once)")
    parser.add_argument("--seconds", type=float, default=15, help="bound on each load")
    parser.add_argument("--layouts", default=f"{DISTINCT},{OWN_64}",
                        help=f"where the peers send from, comma-separated: {DISTINCT} (each its own IPv4 address), "
                             f"{OWN_64} (each its own IPv6 /64), {SHARED} or {ONE_64} (default: %(default)s)")
    parser.add_argument("--drive", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        print(json.dumps(drive_from(json.loads(args.drive))))
        return
    implementations = [name for name in ("wgc", "wireguard-go") if have(name)]
    layouts = args.layouts.split(",")
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "wireguard-go"], capture_output=True, text=True)
    print(f"{args.peers} peers, sources {', '.join(layouts)}, offered at {args.rate:.0f}/s; "
          f"wireguard-go {version.stdout or 'unknown version'}; {os.cpu_count()} CPUs", flush=True)
    results: dict[str, list[dict]] = {f"{name} {layout}": [] for name in implementations for layout in layouts}
    x25519 = []
    for round_ in range(args.rounds):
        x25519.append(x25519_per_cpu_second())
        order = implementations if round_ % 2 == 0 else implementations[::-1]
        for implementation, layout in ((name, layout) for name in order for layout in layouts):
            name = f"{implementation} {layout}"
            figures = measure(implementation, args.peers, args.rate, args.seconds, layout)
            results[name].append(figures)
            print(f"round {round_ + 1} {name}: {figures['completed']}/{args.peers} handshakes in "
                  f"{fmt(figures['last_completion_s'])} s ({figures['rate']:.0f}/s); first pass (before any "
                  f"retry) {figures['first_pass']} at {figures['first_pass_rate']:.0f}/s; "
                  f"{figures['per_cpu_second']:.0f} per responder CPU-second; "
                  f"{figures['cookie_replies']} cookie replies, the first at {fmt(figures['first_cookie_s'])} s; "
                  f"{figures['socket_drops']} datagrams dropped at the responder's socket; "
                  f"RSS {figures['rss_before_mib']:.1f} / {figures['rss_peak_mib']:.1f} / "
                  f"{figures['rss_after_mib']:.1f} MiB (before/peak/after); "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
    variable, base = [v for v, _ in x25519], [b for _, b in x25519]
    ceilings = [handshake_ceiling(v, b) for v, b in x25519]
    print(f"\nX25519 per CPU-second of one core: {spread(variable)} (variable base), {spread(base)} (base point); "
          f"X25519 alone allows {spread(ceilings)} responses per CPU-second")
    for name, runs in results.items():
        print(f"{name}: first pass {spread([r['first_pass_rate'] for r in runs])} handshakes/s, "
              f"all {args.peers} {spread([r['rate'] for r in runs])}/s, "
              f"{spread([r['per_cpu_second'] for r in runs])} per responder CPU-second, "
              f"cookie replies {spread([r['cookie_replies'] for r in runs])}, "
              f"socket drops {spread([r['socket_drops'] for r in runs])}, "
              f"peak RSS {max(r['rss_peak_mib'] for r in runs):.1f} MiB")
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
