"""asyncio on a Net: streams, servers and datagram endpoints through the tunnel.

Connections are the Net's real sockets (socketpair ends), so asyncio's own
streams, transports and TLS (ssl=) run on them unchanged; what blocks (the
TCP handshake, a DNS lookup) runs in the loop's default executor.
splice_connection is the proxy's: a local client's socket spliced to a
tunnel connection by the engine.
"""
from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wgc.netstack.net import DatagramSocket, Listener, Net, Splice

ClientCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]


async def open_connection(net: Net, host: str, port: int, *, timeout: float | None = None,
                          **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio.open_connection through the tunnel; kwargs as asyncio's (ssl=, server_hostname=, limit=)."""
    loop = asyncio.get_running_loop()
    sock = await loop.run_in_executor(None, lambda: net.create_connection((host, port), timeout=timeout))
    sock.setblocking(False)
    if kwargs.get("ssl") and "server_hostname" not in kwargs:
        kwargs["server_hostname"] = host
    return await asyncio.open_connection(sock=sock, **kwargs)


async def splice_connection(net: Net, sock: socket.socket, host: str, port: int, *,
                            timeout: float | None = None) -> Splice:
    """Net.splice_connection for a proxy on asyncio: the connection through
    the tunnel opened for sock (a connected stream socket of the caller's,
    not registered with the loop), returned held; call start() after writing
    any reply to sock (loop.sock_sendall).  On failure (the last address's
    OSError, TimeoutError, or a cancellation) sock is still the caller's."""
    loop = asyncio.get_running_loop()
    infos = await loop.run_in_executor(None, lambda: net.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
    error: OSError | None = None
    for family, _, _, _, sockaddr in infos:
        try:
            splice = net._splice(sock, family, sockaddr[0], int(sockaddr[1]))
        except OSError as e:           # this address cannot be tried (no source address, ...)
            error = e
            continue
        try:
            splice.status.setblocking(False)
            status = await asyncio.wait_for(loop.sock_recv(splice.status, 1), timeout)
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


class Server:
    """What start_server returns: accepts until closed, a task per connection."""

    def __init__(self, listener: Listener, callback: ClientCallback, kwargs: dict[str, Any]):
        self.listener = listener
        self._callback = callback
        self._kwargs = kwargs
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task] = set()
        self._closed = asyncio.Event()
        listener.settimeout(0.0)
        self._loop.add_reader(listener.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, TimeoutError):
            return
        sock.setblocking(False)
        task = self._loop.create_task(self._serve(sock))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, sock: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=sock, **self._kwargs)
        result = self._callback(reader, writer)
        if asyncio.iscoroutine(result):
            await result

    def sockname(self) -> tuple[str, int]:
        return self.listener.getsockname()

    def close(self) -> None:
        if not self._closed.is_set():
            self._loop.remove_reader(self.listener.fileno())
            self.listener.close()
            self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def serve_forever(self) -> None:
        try:
            await self._closed.wait()
        finally:
            self.close()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


async def start_server(net: Net, callback: ClientCallback, host: str, port: int, *,
                       family: int = socket.AF_INET, backlog: int = 128, **kwargs: Any) -> Server:
    """asyncio.start_server on the interface; kwargs go to each connection's streams (ssl=, limit=)."""
    return Server(net.create_server((host, port), family=family, backlog=backlog), callback, kwargs)


class DatagramTransport(asyncio.DatagramTransport):
    """A transport over a DatagramSocket of the stack."""

    def __init__(self, sock: DatagramSocket, protocol: asyncio.DatagramProtocol):
        super().__init__()
        self._sock = sock
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._closing = False
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._readable)
        self._loop.call_soon(protocol.connection_made, self)

    def _readable(self) -> None:
        while True:
            try:
                data, address = self._sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError as error:
                self._protocol.error_received(error)
                return
            self._protocol.datagram_received(data, address)

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        try:
            if addr is None:
                self._sock.send(bytes(data))
            else:
                self._sock.sendto(bytes(data), addr)
        except BlockingIOError:
            pass                   # a full queue drops, as UDP may
        except OSError as error:
            self._protocol.error_received(error)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._sock.getsockname()
        if name == "peername":
            try:
                return self._sock.getpeername()
            except OSError:
                return default
        if name == "socket":
            return self._sock
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()


async def create_datagram_endpoint(net: Net, protocol_factory: Callable[[], asyncio.DatagramProtocol], *,
                                   local_addr: tuple[str, int] | None = None,
                                   remote_addr: tuple[str, int] | None = None,
                                   family: int = 0) -> tuple[DatagramTransport, asyncio.DatagramProtocol]:
    """loop.create_datagram_endpoint on the interface (IP addresses, not names)."""
    address = remote_addr or local_addr
    if not family:
        family = socket.AF_INET6 if address is not None and ":" in address[0] else socket.AF_INET
    sock = net.udp_socket(family)
    try:
        if local_addr is not None:
            sock.bind(local_addr)
        if remote_addr is not None:
            sock.connect(remote_addr)
    except BaseException:
        sock.close()
        raise
    protocol = protocol_factory()
    return DatagramTransport(sock, protocol), protocol
