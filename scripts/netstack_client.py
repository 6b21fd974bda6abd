"""A WireGuard peer with no TUN, on wgc's in-process stack (wgc.netstack), for benchmarks.

It takes the flags and modes of the gVisor reference client in ../shared/anchors
(gvnet-netstack: wireguard-go on gVisor's netstack), so the two are driven by the
same command lines and print the same result lines on stdout, and the process's
peak RSS and CPU seconds (getrusage) on stderr:

    netstack_client.py -key <b64 private> -addr 10.9.0.2 [-addr6 fd00::2] -peer <b64 public>
                       -endpoint 192.0.2.1:51820 [-allowed 0.0.0.0/0,::/0] [-mtu 1420]
                       [-listen-port N] [-keepalive S] [-dns A,B] [-timeout 10s] MODE ARGS

    send HOST:PORT SECONDS   write for SECONDS, half-close, wait (5 s at most) for the peer's close
    recv HOST:PORT SECONDS   read for SECONDS (the server sends)
    sink PORT                accept one connection on our address, count bytes until EOF
                             (unlike gvnet it does not start the handshake: give -keepalive)
    get URL                  an HTTP or HTTPS GET
    ping HOST [COUNT]        ICMP echo (default COUNT 5)

Beyond gvnet's: -streams N runs send and recv over N connections at once (one
result line, the total); `hold HOST:PORT COUNT` opens COUNT idle connections and
prints the RSS before and after; -kernel uses the kernel's sockets (through
whatever TUN routes there) instead of a Net, so the TUN path is measured by the
same loops, and with -socks HOST:PORT through a SOCKS5 proxy (the bench of
wgc --proxy).  Besides getrusage's totals, stderr has the CPU seconds of the
transfer itself (setup and interpreter start left out).
"""
import argparse
import base64
import ctypes
import http.client
import ipaddress
import resource
import socket
import ssl
import sys
import threading
import time
import urllib.parse

BUFFER = 1 << 20           # per connection, for send and recv_into
FLUSH_WAIT = 5.0           # seconds a sender waits for the peer's close after its half-close
PREFIX = "netstack"


def duration(text: str) -> float:
    """A Go duration as gvnet's -timeout takes it (10s, 500ms, 1m) or plain seconds."""
    for unit, scale in (("ms", 1e-3), ("s", 1.0), ("m", 60.0)):
        if text.endswith(unit):
            return float(text[:-len(unit)]) * scale
    return float(text)


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def key(text: str) -> bytes:
    raw = base64.b64decode(text.strip(), validate=True)
    if len(raw) != 32:
        raise ValueError(f"a key is 32 bytes, not {len(raw)}")
    return raw


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("-key", help="base64 private key of this side")
    p.add_argument("-addr", help="IPv4 address of the interface")
    p.add_argument("-addr6", help="IPv6 address of the interface")
    p.add_argument("-peer", help="base64 public key of the peer")
    p.add_argument("-endpoint", help="the peer's IP:PORT (outer UDP)")
    p.add_argument("-allowed", default="0.0.0.0/0,::/0", help="the peer's allowed IPs, comma separated")
    p.add_argument("-mtu", type=int, default=1420)
    p.add_argument("-listen-port", type=int, default=0, dest="listen_port", help="0: any")
    p.add_argument("-keepalive", type=int, default=0, help="persistent keepalive, seconds (0: off)")
    p.add_argument("-dns", default="", help="DNS servers through the tunnel, comma separated")
    p.add_argument("-timeout", type=duration, default=10.0, help="connect and request timeout")
    p.add_argument("-streams", type=int, default=1, help="connections at once for send and recv")
    p.add_argument("-kernel", action="store_true", help="the kernel's sockets instead of a Net")
    p.add_argument("-socks", type=host_port, help="with -kernel: connect through this SOCKS5 proxy (no auth)")
    p.add_argument("mode", choices=("send", "recv", "sink", "get", "ping", "hold"))
    p.add_argument("args", nargs="*")
    args = p.parse_args(argv)
    if not args.kernel and not (args.key and args.peer and args.endpoint and (args.addr or args.addr6)):
        p.error("-key, -peer, -endpoint and -addr or -addr6 are needed")
    if args.streams < 1:
        p.error("-streams must be at least 1")
    return args


class Kernel:
    """The few Net methods the modes use, on the kernel's sockets (through a
    SOCKS5 proxy when socks is its address)."""

    def __init__(self, socks: tuple[str, int] | None = None):
        self.socks = socks

    def create_connection(self, address, timeout=None):
        if self.socks is None:
            return socket.create_connection(address, timeout)
        conn = socket.create_connection(self.socks, timeout)
        try:
            conn.sendall(b"\5\1\0")                          # version 5, one method: no authentication
            if recv_exactly(conn, 2) != b"\5\0":
                raise OSError("the SOCKS5 proxy wants authentication")
            ip = ipaddress.ip_address(address[0])
            conn.sendall(b"\5\1\0" + (b"\1" if ip.version == 4 else b"\4") + ip.packed
                         + int(address[1]).to_bytes(2, "big"))
            head = recv_exactly(conn, 4)
            if head[1] != 0:
                raise OSError(f"the SOCKS5 proxy answered {head[1]}")
            recv_exactly(conn, (4 if head[3] == 1 else 16) + 2)  # its bound address and port
        except BaseException:
            conn.close()
            raise
        return conn

    def create_server(self, address, family=socket.AF_INET):
        return socket.create_server(address, family=family)

    def close(self):
        pass


def recv_exactly(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise OSError("the SOCKS5 proxy closed the connection")
        data += chunk
    return data


def open_net(args):
    if args.kernel:
        return Kernel(args.socks)
    from wgc.control.model import AllowedIP, DeviceConfig, Endpoint, PeerConfig
    from wgc.netstack.net import Net
    host, port = host_port(args.endpoint)
    config = DeviceConfig(private_key=key(args.key), listen_port=args.listen_port or None, peers=[PeerConfig(
        public_key=key(args.peer), endpoint=Endpoint(ipaddress.ip_address(host), port),
        persistent_keepalive_interval=args.keepalive,
        allowed_ips=[AllowedIP.parse(a.strip()) for a in args.allowed.split(",") if a.strip()])])
    addresses = [a for a in (args.addr, args.addr6) if a]
    dns = [a.strip() for a in args.dns.split(",") if a.strip()]
    return Net(config, addresses, mtu=args.mtu, dns=dns, name="client")


def rate_line(verb: str, total: int, seconds: float, streams: int) -> str:
    mbit = total * 8 / seconds / 1e6 if seconds > 0 else 0.0
    line = f"{verb} {total} bytes in {seconds:.3f} s = {mbit:.1f} Mbit/s"
    return line + (f" ({streams} connections)" if streams > 1 else "")


def send_one(conn: socket.socket, end: float) -> int:
    """Writes until `end`, then half-closes and waits for the peer's close (the flush)."""
    data = memoryview(bytes(BUFFER))
    total = 0
    while (left := end - time.monotonic()) > 0:
        conn.settimeout(left)
        try:
            total += conn.send(data)
        except TimeoutError:
            break
    conn.settimeout(FLUSH_WAIT)
    try:
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(BUFFER):
            pass
    except OSError as e:
        print(f"{PREFIX}: waiting for the peer's close: {e}", file=sys.stderr)
    return total


def recv_one(conn: socket.socket, end: float) -> int:
    buffer = bytearray(BUFFER)
    total = 0
    while (left := end - time.monotonic()) > 0:
        conn.settimeout(left)
        try:
            n = conn.recv_into(buffer)
        except TimeoutError:
            break
        if not n:
            break
        total += n
    return total


def transfer(net, args, verb: str, work) -> None:
    """Runs `work(conn, end)` over -streams connections at once; one line, the total."""
    address, seconds = host_port(args.args[0]), float(args.args[1])
    before = time.monotonic(), cpu_seconds()
    conns = [net.create_connection(address, args.timeout) for _ in range(args.streams)]
    start = time.monotonic()
    end = start + seconds
    totals = [0] * len(conns)

    def run(i):
        with conns[i]:
            totals[i] = work(conns[i], end)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(rate_line(verb, sum(totals), min(time.monotonic(), end) - start, len(conns)), flush=True)
    print(f"{PREFIX}: transfer cpu {cpu_seconds() - before[1]:.3f} s over {time.monotonic() - before[0]:.3f} s",
          file=sys.stderr)


def sink(net, args) -> None:
    with net.create_server(("", int(args.args[0]))) as server:
        print(f"{PREFIX}: listening on port {args.args[0]}", file=sys.stderr, flush=True)
        conn, _ = server.accept()
    start = time.monotonic()
    buffer = bytearray(BUFFER)
    total = 0
    with conn:
        while n := conn.recv_into(buffer):
            total += n
    print(rate_line("received", total, time.monotonic() - start, 1), flush=True)


def get(net, args) -> None:
    url = urllib.parse.urlsplit(args.args[0])
    https = url.scheme == "https"
    port = url.port or (443 if https else 80)
    start = time.monotonic()
    conn = net.create_connection((url.hostname, port), args.timeout)
    if https:
        conn = ssl.create_default_context().wrap_socket(conn, server_hostname=url.hostname)
    client = http.client.HTTPConnection(url.hostname, port, timeout=args.timeout)
    client.sock = conn
    client.request("GET", (url.path or "/") + (f"?{url.query}" if url.query else ""))
    response = client.getresponse()
    body = response.read()
    client.close()
    print(f"status {response.status} {response.reason}, body {len(body)} bytes, "
          f"{(time.monotonic() - start) * 1000:.1f} ms", flush=True)


def ping(net, args) -> None:
    if args.kernel:
        sys.exit(f"{PREFIX}: ping needs a Net (use ping(8) for the kernel's)")
    host = args.args[0]
    count = int(args.args[1]) if len(args.args) > 1 else 5
    rtts = []
    for seq in range(1, count + 1):
        rtt = net.ping(host, count=1, timeout=args.timeout)[0]
        if rtt is None:
            print(f"seq={seq} timeout", flush=True)
        else:
            rtts.append(rtt * 1000)
            print(f"reply from {host}: seq={seq} rtt={rtt * 1000:.3f} ms", flush=True)
        if seq < count:
            time.sleep(0.2)
    if not rtts:
        sys.exit(f"{PREFIX}: no replies")
    # The first echo usually waits for the handshake: the figures leave it out when there are more.
    rest = sorted(rtts[1:] or rtts)
    print(f"rtt min/median/avg/max = {rest[0]:.3f}/{rest[len(rest) // 2]:.3f}/{sum(rest) / len(rest):.3f}/"
          f"{rest[-1]:.3f} ms ({'excluding first (handshake)' if len(rtts) > 1 else 'all'}; first {rtts[0]:.3f} ms), "
          f"{count - len(rtts)} lost", flush=True)


def hold(net, args) -> None:
    """COUNT idle connections: the RSS they cost.  One connection is opened first, so that the
    handshake, imports and first allocations are in the baseline, and the C heap's free pages
    are given back before it is read (else new connections reuse them unseen)."""
    address, count = host_port(args.args[0]), int(args.args[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * count + 1024)), hard))
    first = net.create_connection(address, args.timeout)
    time.sleep(0.2)
    ctypes.CDLL(None).malloc_trim(0)
    before = rss_kib()
    conns = [net.create_connection(address, args.timeout) for _ in range(count)]
    time.sleep(0.2)
    after = rss_kib()
    print(f"held {count} connections: rss {before} KiB before, {after} KiB after, "
          f"{(after - before) / count:.2f} KiB per connection", flush=True)
    if not args.kernel:
        print(f"{PREFIX}: the stack counts {net._engine.memory} bytes of its own for "
              f"{net._engine.connections} connections", file=sys.stderr)
    for conn in [first, *conns]:
        conn.close()


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def report_rusage() -> None:
    u = resource.getrusage(resource.RUSAGE_SELF)
    print(f"{PREFIX}: maxrss {u.ru_maxrss} KiB, cpu {u.ru_utime + u.ru_stime:.2f} s "
          f"(user {u.ru_utime:.2f}, sys {u.ru_stime:.2f})", file=sys.stderr, flush=True)


MODES = {
    "send": lambda net, args: transfer(net, args, "sent", send_one),
    "recv": lambda net, args: transfer(net, args, "received", recv_one),
    "sink": sink,
    "get": get,
    "ping": ping,
    "hold": hold,
}
ARGUMENTS = {"send": 2, "recv": 2, "sink": 1, "get": 1, "ping": 1, "hold": 2}


def main(argv: list[str]) -> int:
    args = parse(argv)
    if len(args.args) < ARGUMENTS[args.mode]:
        sys.exit(f"{PREFIX}: {args.mode} needs {ARGUMENTS[args.mode]} arguments")
    net = open_net(args)
    try:
        MODES[args.mode](net, args)
    except OSError as e:
        print(f"{PREFIX}: {args.mode}: {e}", file=sys.stderr)
        return 1
    finally:
        report_rusage()
        net.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
