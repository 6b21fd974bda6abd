"""[http]: an HTTP proxy whose requests go through the tunnel.

CONNECT (any port) splices the client to the tunnel connection once the
proxy has answered 200; a plain request (`GET http://host/path`) goes to its
origin with the head rewritten (wgc.proxy.http), the client spliced behind
it, so the origin's response and any further bytes pass untouched.  A
target that cannot be reached is answered 502 (504 for a timeout).
"""
from __future__ import annotations

import asyncio
import socket

from wgc.proxy import http
from wgc.proxy.config import HostPort, HttpProxy
from wgc.proxy.tcp import Clients, Handler, hand_over, splice

READ_SIZE = 4096


async def _request(sock: socket.socket, reader: http.RequestReader,
                   deadline: float) -> tuple[http.Connect | http.Forward, bytes]:
    loop = asyncio.get_running_loop()
    while True:
        data = await asyncio.wait_for(loop.sock_recv(sock, READ_SIZE), max(0.0, deadline - loop.time()))
        if not data:
            raise ConnectionAbortedError("the client left before its request was complete")
        try:
            request, used = reader.receive(data)
        except http.HttpError as error:
            await loop.sock_sendall(sock, error.response)
            raise ConnectionAbortedError(str(error)) from None
        if request is not None:
            return request, data[used:]


def handler(section: HttpProxy, clients: Clients) -> Handler:
    async def handle(sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            request, rest = await _request(sock, http.RequestReader(section.credentials),
                                           loop.time() + clients.limits.handshake)
        except TimeoutError:
            await loop.sock_sendall(sock, http.response(408))
            raise
        try:
            spliced = await splice(clients, sock, HostPort(request.host, request.port))
        except (OSError, TimeoutError) as error:
            timed_out = isinstance(error, TimeoutError) and not getattr(error, "errno", None)
            await loop.sock_sendall(sock, http.response(504 if timed_out else 502))
            raise
        if isinstance(request, http.Connect):
            try:
                await loop.sock_sendall(sock, http.CONNECTION_ESTABLISHED)
            except OSError:
                spliced.abort()
                raise
            hand_over(spliced, sock, rest)
        else:
            hand_over(spliced, sock, request.head + rest)
    return handle
