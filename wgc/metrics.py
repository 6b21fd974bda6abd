"""The metrics endpoint: GET /metrics in Prometheus's text format 0.0.4.

Off unless WGC_METRICS=ADDR:PORT names where to listen (wgc.daemon imports
this module only then).  ADDR is an IP literal: "127.0.0.1:9586",
"[::1]:9586"; an empty ADDR (":9586") means every address, IPv6 and IPv4 on
one socket (IPv4 alone where the namespace has no IPv6).  No host names: a
name would be resolved at start, and the daemon must not wait on DNS.  The
socket is opened in the daemon's network namespace, where its UDP sockets
are; 9586 is the port the WireGuard exporters use.

Names follow prometheus_wireguard_exporter 3.6.6 (MindFlavor's, the one
`wg show all dump` feeds), so that its dashboards and alerts carry over:

    wireguard_sent_bytes_total, wireguard_received_bytes_total (counters),
    wireguard_latest_handshake_seconds (gauge: unix seconds, 0 for never)
        labels interface, public_key (base64), allowed_ips ("a/n,b/m" as
        `wg show dump` prints them, "(none)" for none)
    wireguard_latest_handshake_delay_seconds (gauge, its -d option): now
        minus the above, the same labels
    wireguard_peers_total{interface} (gauge, without its -t option)

Its optional labels are left out: friendly_name comes from comments in a
configuration file the daemon never reads, and remote_ip/remote_port (its -r)
would start a new series whenever a peer roams.  Then every figure of
wgc.counters as wgc_<name>: DEVICE's labelled interface, PEER's interface
and public_key.

The server is hand-written, one thread and a selector: the standard
library's http.server would bring 43 modules (email, http.client, ...) and
5.3 MiB of resident memory to a daemon that idles at 17.4 MiB and must stay
under 20.  Measured (`python -m wgc -f` in a namespace): 17.6 MiB idle
without WGC_METRICS, 17.7 MiB with it.  It answers one request per connection and closes it.  A scrape
copies the figures under the device lock (Device.snapshot) and renders them
outside it; the data plane's thread never waits on a scrape.
"""
import base64
import math
import selectors
import socket
import threading
import time

from wgc.counters import DEVICE, PEER
from wgc.log import log_failure

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PATH = "/metrics"
# Prometheus's request head is a few hundred bytes; a scrape takes milliseconds.
MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0  # s from accept() until the reply has gone, or the connection is closed
# The next one closes the connection accepted longest ago.  Each holds its reply
# until taken: at most this many replies (1.6 MB for 1,000 peers) for REQUEST_TIMEOUT.
MAX_CONNECTIONS = 4
_RECV_SIZE = 4096


# the address -----------------------------------------------------------------------

def parse_address(text: str) -> tuple[int, tuple]:
    """WGC_METRICS's ADDR:PORT as (family, socket address); ValueError says what is wrong."""
    host, colon, port_text = text.rpartition(":")
    if not colon:
        raise ValueError(f"{text!r} is not ADDR:PORT")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{port_text!r} is not a port (1-65535)")
    port = int(port_text)
    if not host:
        return _all_addresses(port)
    if host.startswith("[") and host.endswith("]"):
        family, host = socket.AF_INET6, host[1:-1]
    elif ":" in host:
        raise ValueError(f"{host!r}: an IPv6 address goes in brackets, as [{host}]:{port}")
    else:
        family = socket.AF_INET
    try:
        socket.inet_pton(family, host)
    except OSError:
        raise ValueError(f"{host!r} is not an IP{'v6' if family == socket.AF_INET6 else 'v4'} address") from None
    return (family, (host, port, 0, 0) if family == socket.AF_INET6 else (host, port))


def _all_addresses(port: int) -> tuple[int, tuple]:
    if socket.has_ipv6:
        return socket.AF_INET6, ("::", port, 0, 0)
    return socket.AF_INET, ("0.0.0.0", port)


def listen(family: int, address: tuple) -> socket.socket:
    """A listening TCP socket at address; "::" takes IPv4 too, or falls back to
    0.0.0.0 where the namespace has no IPv6."""
    try:
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    except OSError:
        if address[0] != "::":
            raise
        family, address = socket.AF_INET, ("0.0.0.0", address[1])
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and address[0] == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(MAX_CONNECTIONS)
    except BaseException:
        sock.close()
        raise
    return sock


# the exposition --------------------------------------------------------------------

def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _family(name: str, kind: str, help_: str, samples) -> bytes:
    """One family's lines, encoded at once: the many small strings of a large
    device live one family at a time, not all together beside their copy."""
    lines = "".join(f"{name}{{{labels}}} {_number(value)}\n" for labels, value in samples)
    return f"# HELP {name} {_escape_help(help_)}\n# TYPE {name} {kind}\n{lines}".encode()


def render(snapshot, now: float) -> bytes:
    """The exposition of a DeviceSnapshot; now (unix seconds) dates the handshake delays."""
    device = f'interface="{_escape_label(snapshot.interface)}"'
    peers = []  # (exporter's labels, ours, the snapshot)
    for peer in snapshot.peers:
        key = f'{device},public_key="{base64.b64encode(peer.public_key).decode()}"'
        allowed = _escape_label(",".join(peer.allowed_ips) or "(none)")
        peers.append((f'{key},allowed_ips="{allowed}"', key, peer))
    out = [
        _family("wireguard_sent_bytes_total", "counter", "Bytes sent to the peer",
                ((labels, p.tx_bytes) for labels, _, p in peers)),
        _family("wireguard_received_bytes_total", "counter", "Bytes received from the peer",
                ((labels, p.rx_bytes) for labels, _, p in peers)),
        _family("wireguard_latest_handshake_seconds", "gauge",
                "Unix time of the last handshake with the peer (0: never)",
                ((labels, p.latest_handshake) for labels, _, p in peers)),
        _family("wireguard_latest_handshake_delay_seconds", "gauge", "Seconds since the last handshake",
                ((labels, int(now) - p.latest_handshake) for labels, _, p in peers)),
        _family("wireguard_peers_total", "gauge", "Number of peers", [(device, len(peers))]),
    ]
    out.extend(_family(f"wgc_{figure.name}", figure.kind, figure.help, [(device, snapshot.values[figure.name])])
               for figure in DEVICE)
    out.extend(_family(f"wgc_{figure.name}", figure.kind, figure.help,
                       ((key, p.values[figure.name]) for _, key, p in peers))
               for figure in PEER)
    return b"".join(out)


# the requests ----------------------------------------------------------------------

_STATUS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           500: "Internal Server Error"}
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def response(status: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8") -> list[memoryview]:
    """The reply as its head and body (sent together, never copied into one)."""
    head = (f"HTTP/1.1 {status} {_STATUS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n")
    if status == 405:
        head += "Allow: GET\r\n"
    return [memoryview(part) for part in ((head + "\r\n").encode(), body) if part]


def request_status(head: bytes) -> int:
    """What a whole request head (up to its blank line) gets: 200 for GET
    /metrics, 404 for another path, 405 for another method, 400 if it is not
    HTTP/1.x."""
    lines = head.split(b"\n")
    parts = lines[0].rstrip(b"\r").split(b" ")
    if len(parts) != 3 or not parts[0] or not set(parts[0]) <= _TOKEN:
        return 400
    method, target, version = parts
    if version not in (b"HTTP/1.0", b"HTTP/1.1") or not target.startswith(b"/") or not target.isascii():
        return 400
    if any(b":" not in line for line in (line.rstrip(b"\r") for line in lines[1:]) if line):
        return 400
    if method != b"GET":
        return 405
    return 200 if target.split(b"?", 1)[0] == PATH.encode() else 404


def _head_end(data: bytes) -> int:
    """Where the request head ends (after its blank line), or -1 before then."""
    ends = [i + len(mark) for mark in (b"\r\n\r\n", b"\n\n") if (i := data.find(mark)) >= 0]
    return min(ends) if ends else -1


# the server ------------------------------------------------------------------------

class _Connection:
    def __init__(self, now: float):
        self.since = now
        self.received = b""
        self.output: list[memoryview] | None = None  # the reply's parts left, once the request is whole

    def sent(self, count: int) -> None:
        """Drops count bytes from the front of output."""
        assert self.output is not None
        while count:
            first = self.output[0]
            self.output[0] = first[count:]
            count -= min(count, len(first))
            if not self.output[0]:
                del self.output[0]


class MetricsServer:
    """GET /metrics on one thread: device.snapshot() (which takes the device
    lock briefly), render() outside any lock, the reply sent without blocking."""

    def __init__(self, device, address: tuple[int, tuple], log):
        self.device = device
        self.address = address
        self.log = log
        self.listener: socket.socket | None = None
        self._connections: dict[socket.socket, _Connection] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="wgc-metrics", daemon=True)

    def start(self) -> None:
        """Listens (OSError if the address cannot be had) and starts serving."""
        self.listener = listen(*self.address)
        self.listener.setblocking(False)
        self._wake_read.setblocking(False)
        self._selector.register(self.listener, selectors.EVENT_READ)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._thread.start()

    @property
    def port(self) -> int:
        assert self.listener is not None
        return self.listener.getsockname()[1]

    def close(self) -> None:
        self._stopping = True
        if self._thread.ident is not None:
            self._wake_write.send(b"\0")
            self._thread.join()
        for sock in list(self._connections):
            self._drop(sock)
        self._selector.close()
        for end in (self._wake_read, self._wake_write, self.listener):
            if end is not None:
                end.close()

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as error:  # a bug: the scrapes are refused from now on (Prometheus's `up`
            # shows it), the daemon goes on
            log_failure(self.log, "Metrics server", error)
            self._selector.unregister(self.listener)  # type: ignore[arg-type]
            self.listener.close()  # type: ignore[union-attr]

    def _loop(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            for sock, connection in list(self._connections.items()):
                if now - connection.since > REQUEST_TIMEOUT:
                    self._drop(sock)
            deadlines = [c.since + REQUEST_TIMEOUT for c in self._connections.values()]
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            for key, events in self._selector.select(timeout):
                if key.fileobj is self.listener:
                    self._accept()
                elif key.fileobj is self._wake_read:
                    self._wake_read.recv(64)
                elif key.fileobj in self._connections:
                    try:
                        self._serve(key.fileobj, events)
                    except Exception as error:  # a bug: this client goes, the server stays
                        log_failure(self.log, "Metrics connection", error)
                        self._drop(key.fileobj)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as error:  # out of descriptors, say: the client waits in the backlog
            self.log.debug("Metrics accept error: %s", error.strerror or error)
            time.sleep(0.1)
            return
        if len(self._connections) >= MAX_CONNECTIONS:
            self._drop(min(self._connections, key=lambda s: self._connections[s].since))
        sock.setblocking(False)
        self._connections[sock] = _Connection(time.monotonic())
        self._selector.register(sock, selectors.EVENT_READ)

    def _serve(self, sock: socket.socket, events: int) -> None:
        connection = self._connections[sock]
        try:
            if connection.output is None:
                data = sock.recv(_RECV_SIZE)
                if not data:
                    self._drop(sock)
                    return
                connection.received += data
                self._read(connection)
            if connection.output:
                connection.sent(sock.sendmsg(connection.output))
        except BlockingIOError:
            pass
        except OSError as error:
            self.log.debug("Metrics connection ended: %s", error.strerror or error)
            self._drop(sock)
            return
        if connection.output is not None and not connection.output:
            self._drop(sock)
        elif connection.output is not None:
            self._selector.modify(sock, selectors.EVENT_WRITE)

    def _read(self, connection: _Connection) -> None:
        """Once the head is whole (or too long), the reply to send."""
        end = _head_end(connection.received)
        if end < 0 and len(connection.received) <= MAX_REQUEST:
            return
        status = 400 if end < 0 or end > MAX_REQUEST else request_status(connection.received[:end])
        connection.received = b""
        if status == 200:
            try:
                connection.output = response(200, render(self.device.snapshot(), time.time()), CONTENT_TYPE)
                return
            except Exception as error:  # a bug in a snapshot or the rendering: say so, serve on
                log_failure(self.log, "Metrics scrape", error)
                status = 500
        connection.output = response(status)

    def _drop(self, sock: socket.socket) -> None:
        if self._connections.pop(sock, None) is None:
            return
        self._selector.unregister(sock)
        sock.close()
