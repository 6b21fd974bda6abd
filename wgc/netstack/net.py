"""Net: one in-process WireGuard interface with its own TCP/IP stack.

The device (keys, handshakes, timers, cookies, roaming, allowed IPs) is the
daemon's own (wgc.device.Device); its inner side is the stack's engine
(wgc.netstack._engine) instead of a TUN, so nothing here needs privileges:
the process only sends and receives encrypted UDP.

Connections are real socket objects.  Each TCP connection is one end of a
Unix socketpair whose other end the engine moves bytes through, so the
objects work wherever Python programs use sockets (ssl.wrap_socket,
http.client, makefile, selectors, asyncio's sock= arguments, timeouts,
shutdown) at the cost of one copy through the kernel per direction.  A
connection the peer resets reads as a kernel socket's does: the bytes that
came first, then ConnectionResetError (see _engine's _reset for the one case
where it is an end of stream instead).

A proxy can also hand the engine a socket of its own, say a local TCP client,
to splice to a tunnel connection (Net.splice_connection, Listener.accept_into):
the engine then moves the bytes between them with no Python per byte, and
passes on half-closes and resets both ways.
"""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import resource
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterable

from wgc import constants as C
from wgc.control.config import ConfigFile, Parser
from wgc.control.model import DeviceConfig
from wgc.control.userspace import build_names, build_set
from wgc.control.wgquick import Config, Failure, parse_text
from wgc.device import Device
from wgc.netstack import aio
from wgc.netstack._engine import Engine
from wgc.netstack.dns import Resolver
from wgc.paths import SOCKET_SUFFIX
from wgc.uapi import Session
from wgc.uapi_server import UAPIServer, listen_control

_STATUS_SIZE = 1
_RECORD = struct.Struct("!BBH16s")   # a datagram's head between the engine and DatagramSocket
_DATAGRAM_BUFFER = 1 << 20            # each way, for the datagram socketpair


class ConfigError(ValueError):
    """A configuration file or value Net cannot use."""


def interface_addresses(texts: list[str]) -> list[str]:
    """The interface's addresses from wg-quick's Address values (with or without a prefix length)."""
    addresses = []
    for text in texts:
        try:
            addresses.append(ipaddress.ip_interface(text).ip.compressed)
        except ValueError:
            raise ConfigError(f"not an interface address: {text!r}") from None
    if not addresses:
        raise ConfigError("the interface needs an Address")
    return addresses


# wg(8)'s fields, and whether its messages may quote their values: never a
# private or preshared key's, even a mistyped one.
_FIELDS = {"privatekey": ("PrivateKey", False), "listenport": ("ListenPort", True), "fwmark": ("FwMark", True),
           "publickey": ("PublicKey", True), "presharedkey": ("PresharedKey", False),
           "endpoint": ("Endpoint", True), "allowedips": ("AllowedIPs", True),
           "persistentkeepalive": ("PersistentKeepalive", True)}


def _line_error(place: str, section: str | None, line: str, message: str) -> ConfigError:
    """An error on line, naming its place, section and field.  wg(8)'s
    messages quote what they refuse (`like this'); only a known field's value
    is quoted, as any other line may be a key pasted on its own."""
    key, equals, _ = line.split("#", 1)[0].partition("=")
    name, quotable = _FIELDS.get("".join(key.split()).lower(), ("", False)) if equals else ("", False)
    where = " ".join(filter(None, (f"[{section.capitalize()}]" if section else "", name)))
    if not quotable:
        message = message.split("`", 1)[0].rstrip(": ")
    return ConfigError(f"{place}: {where}: {message}" if where else f"{place}: {message}")


def device_config(lines: Iterable[tuple[str, str]], source: str) -> DeviceConfig:
    """wg setconf's reading of the lines wg-quick leaves for wg, given as
    (place, line) pairs: an error names its line's place ("wg0.conf:3"), or
    source for what is missing at the end, and never quotes a key."""
    errors: list[str] = []
    reader = ConfigFile(Parser(errors.append), append=False)
    for place, line in lines:
        if not reader.read_line(line + "\n"):
            raise _line_error(place, reader.section, line, "".join(errors).strip())
    draft = reader.finish()
    if draft is None:
        raise ConfigError(f"{source}: " + "".join(errors).strip())
    return draft.to_config()


class Listener:
    """A listening TCP socket of the stack: accept() gives (socket, address)."""

    def __init__(self, net: Net, handle: int, announcements: socket.socket, address: tuple[str, int]):
        self._net = net
        self._handle = handle
        self._announcements = announcements   # a byte per connection waiting
        self._address = address
        self._timeout: float | None = None

    def fileno(self) -> int:
        """Readable when a connection waits to be accepted (for select and asyncio)."""
        return self._announcements.fileno()

    def getsockname(self) -> tuple[str, int]:
        return self._address

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def _announced(self, deadline: float | None) -> None:
        """Takes the byte of a connection waiting to be accepted."""
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        self._announcements.settimeout(remaining)
        try:
            if not self._announcements.recv(1):
                raise OSError("the listener is closed")
        except TimeoutError:
            raise TimeoutError("timed out") from None

    def accept(self) -> tuple[socket.socket, tuple[str, int]]:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            self._announced(deadline)
            app, stack = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            peer = self._net._engine.accept(self._handle, stack.detach(), app.fileno())
            if peer is not None:
                return app, peer
            app.close()            # it went away before we took it: wait for the next

    def accept_into(self, sock: socket.socket) -> tuple[str, int]:
        """Accepts the next connection into sock, a connected stream socket of
        the caller's (a TCP connection to a local service, say), and returns
        the peer's (address, port).  On return the engine owns the connection
        and sock's descriptor (sock is detached, its number closed; the engine
        holds its own) and moves the bytes both ways, half-closes and resets
        included.  sock must not be registered with a selector or event loop.
        The listener's timeout applies as for accept() (0.0: BlockingIOError
        when none waits); on any error sock is still the caller's."""
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            fd = os.dup(sock.fileno())      # first: a bad sock must not cost an announcement
            try:
                self._announced(deadline)
            except BaseException:
                os.close(fd)
                raise
            peer = self._net._engine.accept(self._handle, fd)
            if peer is not None:
                os.close(sock.detach())
                return peer

    def close(self) -> None:
        if self._handle:
            self._net._engine.close_listener(self._handle)
            self._handle = 0
            self._announcements.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Splice:
    """A tunnel connection spliced to a caller's stream socket: what
    Net.splice_connection and aio.splice_connection return once the
    connection is open.

    It is held: the engine leaves the socket alone (the peer's bytes wait in
    the stack's receive window, the client's in its socket) so that the
    caller may first write a reply of its own to the socket (a SOCKS or HTTP
    CONNECT answer), but not read from it.  Then exactly one of start() (the
    engine takes the socket and moves the bytes) or abort() (the connection
    is reset and the socket stays the caller's).  local is the connection's
    (address, port) on the tunnel, peer the address it reached."""

    def __init__(self, net: Net, sock: socket.socket, family: int, host: str, port: int):
        """Starts connecting; the status byte then comes on .status (see _opened)."""
        self._held = False
        self._engine = net._engine
        self._sock = sock
        self.peer = (host, port)
        source = net._source(family)
        self.status, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._handle, lport = self._engine.connect(os.dup(sock.fileno()), source, host, port, -1,
                                                       theirs.detach())
        except BaseException:
            self.status.close()
            theirs.close()         # unless the engine took it
            raise
        self.local = (source, lport)

    def _opened(self, status: bytes) -> None:
        """The engine's status byte (b"" when it dropped the connection):
        raises the connection's failure, after which the engine has let go
        of sock (it dropped the bridge before the byte could be read)."""
        self.status.close()
        if status == b"\0":
            self._held = True
            return
        if not status:
            raise ConnectionAbortedError("the stack closed the connection")
        raise OSError(status[0], os.strerror(status[0]))

    def _give_up(self) -> None:
        """Waiting for the status failed (a timeout, a cancellation): the
        connection is reset and sock stays the caller's."""
        self.status.close()
        self._engine.cancel(self._handle)

    def start(self, first: bytes = b"") -> None:
        """The engine takes the socket (detached, its number closed: the
        engine holds its own descriptor) and moves bytes both ways until both
        sides are done; a reset on either side reaches the other as a reset.
        `first` goes through the tunnel before anything read from the socket
        (bytes the caller read past a request, or a request it rewrote).
        Should the engine fail to watch the socket (epoll refuses) or find no
        room for `first`, the connection is reset and ConnectionAbortedError
        raised."""
        if not self._held:
            raise RuntimeError("the splice is not held (started, aborted or not open)")
        self._held = False
        os.close(self._sock.detach())
        if not self._engine.resume(self._handle, bytes(first)):
            raise ConnectionAbortedError("the stack dropped the connection")

    def abort(self) -> None:
        """Resets the tunnel connection instead of starting; the socket stays the caller's."""
        if self._held:
            self._held = False
            self._engine.cancel(self._handle)

    def __del__(self) -> None:
        self.abort()               # one forgotten, neither started nor aborted, must not hold on


def _raise_file_limit() -> None:
    """Each connection holds two descriptors (its socketpair), so the soft
    limit goes up to the hard one, as Go's runtime does at start since 1.19."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _packed(host: str, v6: bool) -> bytes:
    ip = ipaddress.ip_address(host)
    if (ip.version == 6) != v6:
        raise OSError(97, "address family not supported by this socket")   # EAFNOSUPPORT
    return ip.packed.ljust(16, b"\0")


class DatagramSocket:
    """A UDP socket of the stack, with the socket module's datagram methods.

    Not a socket.socket (each datagram carries its peer's address to and from
    the engine), but fileno() is a real descriptor that turns readable when a
    datagram waits, for select, selectors and asyncio's add_reader."""

    def __init__(self, net: Net, family: int, *, echo: bool = False):
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise OSError(97, "address family not supported")
        self.family = family
        self.type = socket.SOCK_DGRAM
        self._net = net
        self._v6 = family == socket.AF_INET6
        self._echo = echo
        self._app, self._stack = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (self._app, self._stack):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _DATAGRAM_BUFFER)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _DATAGRAM_BUFFER)
        self._handle = 0
        self._local: tuple[str, int] | None = None
        self._peer: tuple[str, int] | None = None

    def fileno(self) -> int:
        return self._app.fileno()

    def settimeout(self, timeout: float | None) -> None:
        self._app.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self._app.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self._app.setblocking(flag)

    def bind(self, address: tuple[str, int]) -> None:
        if self._app.fileno() < 0:
            raise OSError(9, "bad file descriptor")   # EBADF: closed
        if self._handle:
            raise OSError(22, "already bound")
        host = address[0] or ("::" if self._v6 else "0.0.0.0")
        _packed(host, self._v6)
        self._handle, port = self._net._engine.bind_datagram(self._stack.detach(), self._echo, host,
                                                             int(address[1]))
        self._local = (host, port)

    def _ensure_bound(self) -> None:
        if not self._handle:
            self.bind(("", 0))

    def getsockname(self) -> tuple[str, int]:
        self._ensure_bound()
        assert self._local is not None
        return self._local

    def getpeername(self) -> tuple[str, int]:
        if self._peer is None:
            raise OSError(107, "not connected")     # ENOTCONN
        return self._peer

    def connect(self, address: tuple[str, int]) -> None:
        host, port = ipaddress.ip_address(address[0]).compressed, int(address[1])
        _packed(host, self._v6)
        self._ensure_bound()
        self._net._engine.connect_datagram(self._handle, host, port)
        self._peer = (host, port)

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        host, port = address[0], int(address[1])
        head = _RECORD.pack(self._v6, 0, port, _packed(host, self._v6))
        limit = self._net.mtu - (40 if self._v6 else 20) - 8
        if len(data) > limit:
            raise OSError(90, f"message too long: {len(data)} bytes, {limit} fit the MTU")   # EMSGSIZE
        self._ensure_bound()
        self._app.send(head + bytes(data))
        return len(data)

    def send(self, data: bytes) -> int:
        if self._peer is None:
            raise OSError(89, "destination address required")   # EDESTADDRREQ
        return self.sendto(data, self._peer)

    def recvfrom(self, bufsize: int) -> tuple[bytes, tuple[str, int]]:
        self._ensure_bound()
        while True:
            record = self._app.recv(_RECORD.size + 65535)
            if len(record) < _RECORD.size:
                continue
            v6, error, port, address = _RECORD.unpack_from(record)
            if error:
                raise OSError(error, os.strerror(error))
            host = ipaddress.ip_address(address if v6 else address[:4]).compressed
            return record[_RECORD.size:_RECORD.size + bufsize], (host, port)

    def recv(self, bufsize: int) -> bytes:
        return self.recvfrom(bufsize)[0]

    def close(self) -> None:
        if self._app.fileno() < 0:
            return
        self._app.close()          # the engine sees it and closes the endpoint
        if not self._handle:
            self._stack.close()
        self._handle = 0           # the engine frees the endpoint: no call may reach it now

    def __enter__(self) -> DatagramSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Net:
    """A WireGuard interface inside this process.

        with Net.from_config("wg0.conf") as net:
            sock = net.create_connection(("10.0.0.1", 80), timeout=5)
    """

    def __init__(self, config: DeviceConfig, addresses: list[str], *, mtu: int = C.DEFAULT_MTU,
                 dns: list[str] | None = None, name: str = "netstack", control_dir: str | None = None):
        """control_dir: where to open NAME.sock, a control socket speaking wg(8)'s
        protocol (mode 0700 in a directory made 0700), as a daemon's in
        /var/run/wireguard; none by default."""
        self.addresses = addresses
        self.dns = list(dns or [])
        self.mtu = mtu
        self._log = logging.getLogger(f"wgc.netstack.{name}")
        self.resolver = Resolver(self.dns, udp_socket=self.udp_socket, create_connection=self.create_connection,
                                 ipv6_first=any(":" in a for a in addresses)) if self.dns else None
        _raise_file_limit()
        self._engine = Engine(addresses, mtu)
        self.device = Device(name, None, self._log, port=self._engine.port, mtu=mtu)
        self._stopping = False
        self._stop_read, self._stop_write = socket.socketpair()
        self._threads: list[threading.Thread] = []
        try:
            self.set(build_set(config, replace_peers=True))
            names = build_names(config)
            if names is not None:
                self.set(names)  # endpoints given by name follow DNS (wgc.reresolve)
            self.device.up()
        except BaseException:
            self.device.close()
            raise
        for target, role in ((self._engine.run, "stack"), (self._control, "control")):
            thread = threading.Thread(target=target, name=f"wgc-{name}-{role}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.control_path: str | None = None
        self._uapi: UAPIServer | None = None
        if control_dir is not None:
            try:
                self._serve_control(control_dir, name)
            except BaseException:
                self.close()
                raise

    @classmethod
    def from_config(cls, path: str, *, name: str | None = None) -> Net:
        """From a wg-quick configuration file: [Interface] PrivateKey, Address
        (IPv4 and IPv6), DNS, MTU, ListenPort; [Peer] sections."""
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
        parsed = Config()
        try:
            parse_text(parsed, text)
        except Failure as e:
            raise ConfigError(str(e)) from None
        try:
            mtu = int(parsed.mtu) if parsed.mtu else C.DEFAULT_MTU
        except ValueError:
            raise ConfigError(f"MTU is not a number: {parsed.mtu!r}") from None
        lines = ((f"line {number}", line) for number, line in enumerate(parsed.wg_config.split("\n"), 1))
        return cls(device_config(lines, path), interface_addresses(parsed.addresses), mtu=mtu,
                   dns=parsed.dns, name=name or "netstack")

    # -- configuration, as wg(8) speaks it -------------------------------------------

    def set(self, request: bytes) -> None:
        """Applies a UAPI `set=1` request (wgc.control.userspace.build_set)."""
        reply = self.uapi(request)
        if not reply.endswith(b"errno=0\n\n"):
            raise ConfigError(reply.decode(errors="replace").strip())

    def _serve_control(self, directory: str, name: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, name + SOCKET_SUFFIX)
        listener = listen_control(path)
        self._uapi = UAPIServer(self.device, listener, self._log)
        self._uapi.start()
        self.control_path = path

    def uapi(self, request: bytes) -> bytes:
        """One UAPI exchange (get=1 or set=1) with the interface, as through its socket."""
        session = Session(self.device)
        session.feed(request)
        session.feed(b"")
        while session.step() is not None:
            pass
        return bytes(session.output)

    # -- the control plane's thread ----------------------------------------------------

    def _control(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.device.wakeup_fd, selectors.EVENT_READ)
        selector.register(self._stop_read, selectors.EVENT_READ)
        try:
            while not self._stopping:
                deadline = self.device.next_deadline()
                now = time.monotonic_ns()
                timeout = None if deadline is None else max(0.0, (deadline - now) / 1e9)
                for key, _ in selector.select(timeout):
                    if key.fileobj == self.device.wakeup_fd:
                        self.device.process_events()
                if not self._stopping:
                    self.device.run_timers(time.monotonic_ns())
        finally:
            selector.close()

    # -- sockets ------------------------------------------------------------------

    def _source(self, family: int) -> str:
        source = self._engine.local_address(family == socket.AF_INET6)
        if source is None:
            raise OSError(101, f"the interface has no {'IPv6' if family == socket.AF_INET6 else 'IPv4'} address")
        return source

    def getaddrinfo(self, host, port, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0):
        """socket.getaddrinfo, names asked of the configuration's DNS servers through the tunnel."""
        if self.resolver is None:
            return socket.getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        return self.resolver.getaddrinfo(host, port, family, type, proto, flags)

    def create_connection(self, address: tuple[str, int], timeout: float | None = None) -> socket.socket:
        """A connected TCP socket through the tunnel (socket.create_connection's
        contract: each address of the host in turn, the last error raised)."""
        host, port = address[0], address[1]
        error: OSError | None = None
        for family, _, _, _, sockaddr in self.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            try:
                return self._connect(family, sockaddr[0], int(sockaddr[1]), timeout)
            except OSError as e:
                error = e
        raise error if error is not None else OSError(f"getaddrinfo returns nothing for {host!r}")

    def _connect(self, family: int, host: str, port: int, timeout: float | None) -> socket.socket:
        app, stack = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._engine.connect(stack.detach(), self._source(family), host, port, app.fileno())
            app.settimeout(timeout)
            try:
                status = app.recv(_STATUS_SIZE)
            except TimeoutError:
                raise TimeoutError("timed out") from None
            if not status:
                raise ConnectionAbortedError("the stack closed the connection")
            if status[0]:
                error = status[0]
                raise OSError(error, os.strerror(error))
            return app
        except BaseException:
            app.close()            # the engine sees the close and ends the connection
            raise

    @property
    def spliced(self) -> int:
        """Connections the engine moves for callers' own sockets now
        (splice_connection, Listener.accept_into), held ones included."""
        return self._engine.spliced

    def splice_connection(self, sock: socket.socket, address: tuple[str, int],
                          timeout: float | None = None) -> Splice:
        """Opens a TCP connection through the tunnel for sock, a connected
        stream socket of the caller's (a proxy's local client), and returns
        it held (see Splice): call start() after writing any reply to sock.

        Each address of the host in turn, as create_connection; timeout for
        each.  On failure the last OSError (ConnectionRefusedError,
        TimeoutError, ...) is raised and sock is untouched, still the caller's."""
        host, port = address[0], address[1]
        error: OSError | None = None
        for family, _, _, _, sockaddr in self.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            try:
                splice = self._splice(sock, family, sockaddr[0], int(sockaddr[1]))
            except OSError as e:           # this address cannot be tried (no source address, ...)
                error = e
                continue
            try:
                splice.status.settimeout(timeout)
                status = splice.status.recv(_STATUS_SIZE)
            except BaseException as e:
                splice._give_up()
                if not isinstance(e, TimeoutError):
                    raise
                error = TimeoutError("timed out")
                continue
            try:
                splice._opened(status)
                return splice
            except OSError as e:
                error = e
        raise error if error is not None else OSError(f"getaddrinfo returns nothing for {host!r}")

    def _splice(self, sock: socket.socket, family: int, host: str, port: int) -> Splice:
        return Splice(self, sock, family, host, port)

    def udp_socket(self, family: int = socket.AF_INET) -> DatagramSocket:
        """An unbound UDP socket of the interface (bound on first use, like the kernel's)."""
        return DatagramSocket(self, family)

    def ping(self, host: str, *, count: int = 1, timeout: float = 2.0, size: int = 56) -> list[float | None]:
        """ICMP echo requests, one at a time: each round trip in seconds, None when lost."""
        address = self.getaddrinfo(host, None, 0, socket.SOCK_RAW)[0][4][0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        results: list[float | None] = []
        with DatagramSocket(self, family, echo=True) as endpoint:
            endpoint.settimeout(timeout)
            payload = os.urandom(size)
            for sequence in range(count):
                started = time.monotonic()
                endpoint.sendto(sequence.to_bytes(2, "big") + payload, (address, 0))
                results.append(None)
                deadline = started + timeout
                while time.monotonic() < deadline:
                    endpoint.settimeout(max(0.0, deadline - time.monotonic()))
                    try:
                        reply, source = endpoint.recvfrom(65535)
                    except TimeoutError:
                        break
                    if source[0] == address and reply == sequence.to_bytes(2, "big") + payload:
                        results[-1] = time.monotonic() - started
                        break
        return results

    def create_server(self, address: tuple[str, int], *, family: int = socket.AF_INET,
                      backlog: int = 128) -> Listener:
        """A listening TCP socket on the interface (address "" or "0.0.0.0"/"::" for any)."""
        host, port = address[0] or ("::" if family == socket.AF_INET6 else "0.0.0.0"), int(address[1])
        if not 0 < port < 65536:
            raise OSError(22, "a listener needs a port")
        announcements, stack = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            handle = self._engine.listen(stack.detach(), host, port, backlog)
        except BaseException:
            announcements.close()
            raise
        return Listener(self, handle, announcements, (host, port))

    # -- asyncio (wgc.netstack.aio) -------------------------------------------------

    async def open_connection(self, host: str, port: int, **kwargs):
        """(StreamReader, StreamWriter) through the tunnel; ssl= and the rest as asyncio's."""
        return await aio.open_connection(self, host, port, **kwargs)

    async def start_server(self, callback, host: str, port: int, **kwargs):
        return await aio.start_server(self, callback, host, port, **kwargs)

    async def create_datagram_endpoint(self, protocol_factory, **kwargs):
        return await aio.create_datagram_endpoint(self, protocol_factory, **kwargs)

    # -- the end --------------------------------------------------------------------

    def close(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._uapi is not None:
            self._uapi.close()
            self._uapi.listener.close()
            if self.control_path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.control_path)
        self._stop_write.send(b"\0")
        self._engine.stop()
        self._engine.port.close()
        for thread in self._threads:
            thread.join()
        self.device.close()
        self._stop_read.close()
        self._stop_write.close()

    def __enter__(self) -> Net:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
