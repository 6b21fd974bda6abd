"""The proxy's TCP side: local listeners, their clients handed to the engine,
and the services exposed on the tunnel.

A client's bytes never pass through Python once its connection through the
tunnel is open: its very socket is spliced to the tunnel connection by the
stack's engine (wgc.netstack.Net.splice_connection), which passes half-closes
and resets on both ways.  Python only reads the SOCKS or HTTP request first.

Limits, so that no client can exhaust memory or descriptors: a client must
finish its request within HANDSHAKE_TIMEOUT, a connection through the tunnel
must open within CONNECT_TIMEOUT, and at most CLIENT_LIMIT connections (the
Net's spliced ones and those still in their handshake) are open at once;
past it, a new client is closed as soon as it is accepted.  Spliced
connections use TCP keepalives on both sides, so a peer that vanished
without a word is noticed (KEEPALIVE_IDLE seconds of silence, then probes).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from wgc.log import log_failure
from wgc.netstack import Listener, Net
from wgc.netstack.aio import splice_connection
from wgc.netstack.net import Splice
from wgc.proxy.config import HostPort

HANDSHAKE_TIMEOUT = 10.0   # seconds for a client's SOCKS or HTTP request
CONNECT_TIMEOUT = 10.0     # seconds for a connection through the tunnel (or to an exposed service's target)
CLIENT_LIMIT = 4096        # connections open at once, spliced or in their handshake
KEEPALIVE_IDLE = 120       # seconds of silence before keepalive probes, on spliced client sockets
BACKLOG = 512
RESET = struct.pack("ii", 1, 0)   # SO_LINGER on, zero time: close(2) sends an RST


@dataclass(frozen=True)
class Limits:
    handshake: float = HANDSHAKE_TIMEOUT
    connect: float = CONNECT_TIMEOUT
    clients: int = CLIENT_LIMIT


def listen(bind: HostPort) -> socket.socket:
    """A non-blocking listening socket on bind ("" for every address)."""
    family = socket.AF_INET6 if ":" in bind.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind.host, bind.port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def reset(sock: socket.socket) -> None:
    """Closes a client's socket with an RST: it learns the connection failed."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
    sock.close()


def keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)


class Clients:
    """Counts a proxy's connections against its limit: those in Python's
    hands (handshakes) and those the engine moves (spliced)."""

    def __init__(self, net: Net, limits: Limits):
        self.net = net
        self.limits = limits
        self.handshaking = 0

    def full(self) -> bool:
        return self.handshaking + self.net.spliced >= self.limits.clients


Handler = Callable[[socket.socket], Awaitable[None]]


async def serve_clients(listener: socket.socket, handle: Handler, clients: Clients, log: logging.Logger) -> None:
    """Accepts until cancelled; each client runs handle(sock) in its own task,
    under the handshake timeout, and is closed unless handle gave it away
    (sock.fileno() == -1: detached to the engine)."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()

    async def run(sock: socket.socket) -> None:
        try:
            await handle(sock)
        except (OSError, TimeoutError) as error:
            log.debug("client %s: %s", _peer(sock), error.strerror if isinstance(error, OSError) and
                      error.strerror else type(error).__name__)
        except Exception as error:     # a bug of ours: this client ends, the others go on
            log_failure(log, "proxy client", error)
        finally:
            clients.handshaking -= 1
            if sock.fileno() >= 0:
                sock.close()

    try:
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as error:
                # EMFILE and its kind: the descriptors are short for a moment; wait rather than spin.
                log.error("accept on %s: %s", listener.getsockname(), error.strerror or error)
                await asyncio.sleep(0.5)
                continue
            if clients.full():
                reset(sock)
                continue
            sock.setblocking(False)
            clients.handshaking += 1
            task = loop.create_task(run(sock))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        listener.close()


def _peer(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return "(gone)"


async def splice(clients: Clients, sock: socket.socket, target: HostPort) -> Splice:
    """Opens target through the tunnel for sock, held (see Splice); raises
    what connecting raised (OSError, socket.gaierror, TimeoutError)."""
    return await splice_connection(clients.net, sock, target.host, target.port, timeout=clients.limits.connect)


def hand_over(spliced: Splice, sock: socket.socket, first: bytes = b"") -> None:
    """The engine takes the client: `first` (bytes Python read past the
    request, or a request to pass on) goes through the tunnel before the rest."""
    keepalive(sock)
    spliced.start(first)


def forward(clients: Clients, target: HostPort) -> Handler:
    """[TCPClientTunnel]: each client spliced to target at once."""
    async def handle(sock: socket.socket) -> None:
        try:
            spliced = await splice(clients, sock, target)
        except (OSError, TimeoutError):
            reset(sock)
            raise
        hand_over(spliced, sock)
    return handle


async def serve_exposed(net: Net, listener: Listener, target: HostPort, limits: Limits,
                        log: logging.Logger) -> None:
    """[TCPServerTunnel]: each connection to the listener on the tunnel is
    accepted into a new connection to target on this side.  The target is
    connected first, so a connection arriving while it refuses is accepted
    and closed at once."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    listener.settimeout(0.0)
    loop.add_reader(listener.fileno(), ready.set)
    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
    try:
        while True:
            await ready.wait()
            ready.clear()
            while True:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setblocking(False)
                try:
                    await asyncio.wait_for(loop.sock_connect(sock, (target.host, target.port)), limits.connect)
                except (OSError, TimeoutError) as error:
                    sock.close()
                    log.info("exposed port %d: %s unreachable: %s", listener.getsockname()[1], target,
                             getattr(error, "strerror", None) or type(error).__name__)
                    if not _refuse_one(listener):
                        break
                    continue
                keepalive(sock)
                try:
                    listener.accept_into(sock)
                except BlockingIOError:
                    sock.close()   # nobody waits after all
                    break
    finally:
        loop.remove_reader(listener.fileno())
        listener.close()


def _refuse_one(listener: Listener) -> bool:
    """Accepts the next waiting connection and closes it; False when none waits."""
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True
