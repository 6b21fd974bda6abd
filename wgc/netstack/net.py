"""Net: one in-process WireGuard interface with its own TCP/IP stack.

The device (keys, handshakes, timers, cookies, roaming, allowed IPs) is the
daemon's own (wgc.device.Device); its inner side is the stack's engine
(wgc.netstack._engine) instead of a TUN, so nothing here needs privileges:
the process only sends and receives encrypted UDP.

Connections are real socket objects.  Each TCP connection is one end of a
Unix socketpair whose other end the engine moves bytes through, so the
objects work wherever Python programs use sockets (ssl.wrap_socket,
http.client, makefile, selectors, asyncio's sock= arguments, timeouts,
shutdown) at the cost of one copy through the kernel per direction.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import selectors
import socket
import threading
import time

from wgc import constants as C
from wgc.control.config import ConfigFile, Parser
from wgc.control.model import DeviceConfig
from wgc.control.userspace import build_set
from wgc.control.wgquick import Config, Failure, parse_text
from wgc.device import Device
from wgc.errors import WireGuardError
from wgc.netstack._engine import Engine
from wgc.uapi import Session

_STATUS_SIZE = 1


class ConfigError(WireGuardError):
    """A configuration file or value Net cannot use."""


def _interface_addresses(texts: list[str]) -> list[str]:
    addresses = []
    for text in texts:
        try:
            addresses.append(ipaddress.ip_interface(text).ip.compressed)
        except ValueError:
            raise ConfigError(f"not an interface address: {text!r}") from None
    if not addresses:
        raise ConfigError("the interface needs an Address")
    return addresses


def _device_config(wg_text: str) -> DeviceConfig:
    errors: list[str] = []
    reader = ConfigFile(Parser(errors.append), append=False)
    for number, line in enumerate(wg_text.split("\n"), 1):
        if not reader.read_line(line + "\n"):
            raise ConfigError(f"line {number}: " + "".join(errors).strip())
    draft = reader.finish()
    if draft is None:
        raise ConfigError("".join(errors).strip())
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

    def accept(self) -> tuple[socket.socket, tuple[str, int]]:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._announcements.settimeout(remaining)
            try:
                if not self._announcements.recv(1):
                    raise OSError("the listener is closed")
            except TimeoutError:
                raise TimeoutError("timed out") from None
            app, stack = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            peer = self._net._engine.accept(self._handle, stack.detach())
            if peer is not None:
                return app, peer
            app.close()            # it went away before we took it: wait for the next

    def close(self) -> None:
        if self._handle:
            self._net._engine.close_listener(self._handle)
            self._handle = 0
            self._announcements.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Net:
    """A WireGuard interface inside this process.

        with Net.from_config("wg0.conf") as net:
            sock = net.create_connection(("10.0.0.1", 80), timeout=5)
    """

    def __init__(self, config: DeviceConfig, addresses: list[str], *, mtu: int = C.DEFAULT_MTU,
                 dns: list[str] | None = None, name: str = "netstack"):
        self.addresses = addresses
        self.dns = list(dns or [])
        self.mtu = mtu
        self._log = logging.getLogger(f"wgc.netstack.{name}")
        self._engine = Engine(addresses, mtu)
        self.device = Device(name, None, self._log, port=self._engine.port, mtu=mtu)
        self._stopping = False
        self._stop_read, self._stop_write = socket.socketpair()
        self._threads: list[threading.Thread] = []
        try:
            self.set(build_set(config, replace_peers=True))
            self.device.up()
        except BaseException:
            self.device.close()
            raise
        for target, role in ((self._engine.run, "stack"), (self._control, "control")):
            thread = threading.Thread(target=target, name=f"wgc-{name}-{role}", daemon=True)
            thread.start()
            self._threads.append(thread)

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
        return cls(_device_config(parsed.wg_config), _interface_addresses(parsed.addresses), mtu=mtu,
                   dns=parsed.dns, name=name or "netstack")

    # -- configuration, as wg(8) speaks it -------------------------------------------

    def set(self, request: bytes) -> None:
        """Applies a UAPI `set=1` request (wgc.control.userspace.build_set)."""
        reply = self.uapi(request)
        if not reply.endswith(b"errno=0\n\n"):
            raise ConfigError(reply.decode(errors="replace").strip())

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

    def create_connection(self, address: tuple[str, int], timeout: float | None = None) -> socket.socket:
        """A connected TCP socket through the tunnel (socket.create_connection's
        contract; the host an IP address)."""
        host, port = address[0], int(address[1])
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise OSError(22, f"not an IP address: {host!r}") from None
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        app, stack = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._engine.connect(stack.detach(), self._source(family), ip.compressed, port)
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

    # -- the end --------------------------------------------------------------------

    def close(self) -> None:
        if self._stopping:
            return
        self._stopping = True
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
