"""[Socks5]: a SOCKS5 server (RFC 1928, RFC 1929) whose connections and UDP
associations go through the tunnel.

CONNECT splices the client to the tunnel connection (wgc.proxy.tcp); domain
names are resolved by the tunnel's DNS servers.  UDP ASSOCIATE opens a local
UDP socket for the client, beside the address it reached us on, and one
socket of the stack for its datagrams through the tunnel; the association
lasts as long as the client's TCP connection, and takes datagrams only from
the client's address (and port, once known).
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import cast

from wgc.netstack import DatagramSocket, Net
from wgc.proxy import socks5
from wgc.proxy.config import HostPort, Socks5
from wgc.proxy.tcp import Clients, Handler, hand_over, splice
from wgc.proxy.udp import DATAGRAM_MAX

READ_SIZE = 4096
RESOLVING = 16            # names a UDP association resolves at once


async def _request(sock: socket.socket, server: socks5.Server, deadline: float) -> tuple[socks5.Request, bytes]:
    """Runs the handshake to its request; (request, bytes the client sent past it)."""
    loop = asyncio.get_running_loop()
    while True:
        data = await asyncio.wait_for(loop.sock_recv(sock, READ_SIZE), max(0.0, deadline - loop.time()))
        if not data:
            raise ConnectionAbortedError("the client left during its handshake")
        try:
            events, used = server.receive(data)
        except socks5.SocksError as error:
            if error.reply:
                await loop.sock_sendall(sock, error.reply)
            raise ConnectionAbortedError(str(error)) from None
        for event in events:
            if event.reply:
                await loop.sock_sendall(sock, event.reply)
            if isinstance(event, socks5.Request):
                return event, data[used:]


def handler(section: Socks5, clients: Clients) -> Handler:
    async def handle(sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        request, rest = await _request(sock, socks5.Server(section.credentials),
                                       loop.time() + clients.limits.handshake)
        if request.command == socks5.Command.UDP_ASSOCIATE:
            await _associate(sock, request, clients.net)
            return
        try:
            spliced = await splice(clients, sock, HostPort(request.host, request.port))
        except (OSError, TimeoutError) as error:
            await loop.sock_sendall(sock, socks5.failure(socks5.reply_for_error(error)))
            raise
        try:
            await loop.sock_sendall(sock, socks5.reply(socks5.Reply.SUCCEEDED, *spliced.local))
        except OSError:
            spliced.abort()
            raise
        hand_over(spliced, sock, rest)
    return handle


class _Association(asyncio.DatagramProtocol):
    """One client's UDP ASSOCIATE: datagrams from the client (with RFC 1928's
    header) go through the tunnel to their destination, and what comes back
    goes to the client with the header naming its source.  Names are
    resolved once each, at most RESOLVING at a time (datagrams for others
    meanwhile are dropped, as UDP may)."""

    def __init__(self, net: Net, client_host: str, client_port: int):
        self._net = net
        self._client_host = client_host
        self._client_port = client_port            # 0 until the first datagram says it
        self._loop = asyncio.get_running_loop()
        self._local: asyncio.DatagramTransport | None = None
        self._tunnel: dict[int, DatagramSocket] = {}
        self._names: dict[str, str] = {}
        self._resolving: set[str] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._local = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if addr[0] != self._client_host or (self._client_port and addr[1] != self._client_port):
            return                 # not our client: dropped (RFC 1928 section 7)
        self._client_port = addr[1]
        try:
            datagram = socks5.parse_udp(data)
        except socks5.SocksError:
            return
        if datagram is None:
            return                 # a fragment
        if datagram.address_type != socks5.AddressType.DOMAIN:
            self._send(datagram.host, datagram)
        elif datagram.host in self._names:
            self._send(self._names[datagram.host], datagram)
        elif len(self._resolving) < RESOLVING and datagram.host not in self._resolving:
            self._resolving.add(datagram.host)
            self._loop.create_task(self._resolve_and_send(datagram))

    async def _resolve_and_send(self, datagram: socks5.Datagram) -> None:
        try:
            infos = await self._loop.run_in_executor(None, self._net.getaddrinfo, datagram.host, 0, 0,
                                                     socket.SOCK_DGRAM)
        except OSError:
            return
        finally:
            self._resolving.discard(datagram.host)
        self._names[datagram.host] = infos[0][4][0]
        self._send(self._names[datagram.host], datagram)

    def _send(self, host: str, datagram: socks5.Datagram) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            endpoint = self._tunnel.get(family) or self._open(family)
            endpoint.sendto(datagram.data, (host, datagram.port))
        except OSError:
            pass                   # too long for the MTU, no address of that family: dropped as UDP may

    def _open(self, family: int) -> DatagramSocket:
        endpoint = self._net.udp_socket(family)
        try:
            endpoint.setblocking(False)
            endpoint.bind(("", 0))
        except BaseException:
            endpoint.close()
            raise
        self._tunnel[family] = endpoint
        self._loop.add_reader(endpoint.fileno(), self._answers, endpoint)
        return endpoint

    def _answers(self, endpoint: DatagramSocket) -> None:
        while self._local is not None and not self._local.is_closing():
            try:
                data, (host, port) = endpoint.recvfrom(DATAGRAM_MAX)
            except BlockingIOError:
                return
            except OSError:
                continue           # an ICMP error about an earlier datagram
            self._local.sendto(socks5.build_udp(host, port, data), (self._client_host, self._client_port))

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
        for endpoint in self._tunnel.values():
            self._loop.remove_reader(endpoint.fileno())
            endpoint.close()
        self._tunnel.clear()


async def _associate(sock: socket.socket, request: socks5.Request, net: Net) -> None:
    loop = asyncio.get_running_loop()
    local = sock.getsockname()
    client = sock.getpeername()
    port = request.port if _is_client(request.host, client[0]) else 0
    transport, association = await loop.create_datagram_endpoint(
        lambda: _Association(net, client[0], port), local_addr=(local[0], 0))
    try:
        bound = transport.get_extra_info("sockname")
        await loop.sock_sendall(sock, socks5.reply(socks5.Reply.SUCCEEDED, bound[0], bound[1]))
        while await loop.sock_recv(sock, READ_SIZE):
            pass                   # the association lasts until the client closes this connection
    finally:
        association.close()


def _is_client(host: str, client: str) -> bool:
    """Whether the request's address names the client (not 0.0.0.0 or ::, which say "not known yet")."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_unspecified and address == ipaddress.ip_address(client)
