"""UDP forwards of the proxy, both ways, one relay for both.

A UDP forward has a listening side (a local kernel socket for a forward into
the tunnel, a socket of the stack for a service exposed on it) and a target.
Each peer that sends to the listening side gets its own flow: a socket
connected to the target, whose answers go back to that peer (onetun's model,
and what NAT does), so the target sees one source port per client.

Flows are bounded: at most FLOW_LIMIT per forward (the least recently used
closes to make room), and a flow idle for FLOW_IDLE seconds closes.  A
datagram that meets a full socket is dropped, as UDP may.  Each datagram
passes through Python here: these forwards are for DNS, games and VPN-like
control traffic, not bulk transfers (TCP forwards are spliced in the engine).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

FLOW_LIMIT = 1024      # flows of one forward
FLOW_IDLE = 60.0       # seconds without a datagram either way before a flow closes
DATAGRAM_MAX = 65535


class FlowSocket(Protocol):
    """A datagram socket connected to the target: a kernel socket.socket, or
    a wgc.netstack.DatagramSocket."""

    def fileno(self) -> int: ...
    def setblocking(self, flag: bool, /) -> None: ...
    def send(self, data: bytes, /) -> int: ...
    def recv(self, bufsize: int, /) -> bytes: ...
    def close(self) -> None: ...


class _Flow:
    __slots__ = ("last", "sock")

    def __init__(self, sock: FlowSocket, now: float):
        self.sock = sock
        self.last = now


class UdpRelay(asyncio.DatagramProtocol):
    """The listening side's protocol: datagrams from each peer go out through
    that peer's flow, and the flow's answers come back to the peer."""

    def __init__(self, open_flow: Callable[[], FlowSocket], log: logging.Logger, *,
                 limit: int = FLOW_LIMIT, idle: float = FLOW_IDLE):
        self._open_flow = open_flow
        self._log = log
        self._limit = limit
        self._idle = idle
        self._flows: collections.OrderedDict[Any, _Flow] = collections.OrderedDict()
        self._transport: asyncio.DatagramTransport | None = None
        self._reaper: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    @property
    def flows(self) -> int:
        return len(self._flows)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)   # asyncio's own is no subclass
        self._reaper = self._loop.call_later(self._idle / 2, self._reap)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        while self._flows:
            self._close(next(iter(self._flows)))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        flow = self._flows.get(addr)
        now = time.monotonic()
        if flow is None:
            if len(self._flows) >= self._limit:
                self._close(next(iter(self._flows)))     # the least recently used
            try:
                sock = self._open_flow()
            except OSError as error:
                self._log.info("UDP forward: no flow for %s: %s", addr[0], error.strerror or error)
                return
            sock.setblocking(False)
            flow = self._flows[addr] = _Flow(sock, now)
            self._loop.add_reader(sock.fileno(), self._answers, addr, flow)
        else:
            self._flows.move_to_end(addr)
            flow.last = now
        try:
            flow.sock.send(data)
        except OSError:
            pass                   # a full socket, or an ICMP error of an earlier datagram: dropped

    def error_received(self, exc: Exception) -> None:
        pass                       # an ICMP error about a datagram sent back to a peer: nothing to do

    def _answers(self, addr: Any, flow: _Flow) -> None:
        while self._transport is not None and not self._transport.is_closing():
            try:
                data = flow.sock.recv(DATAGRAM_MAX)
            except BlockingIOError:
                return
            except OSError:
                continue           # the target's port is unreachable: the datagram is lost, the flow stays
            flow.last = time.monotonic()
            self._transport.sendto(data, addr)

    def _close(self, addr: Any) -> None:
        flow = self._flows.pop(addr)
        self._loop.remove_reader(flow.sock.fileno())
        flow.sock.close()

    def _reap(self) -> None:
        cutoff = time.monotonic() - self._idle
        for addr in [a for a, flow in self._flows.items() if flow.last < cutoff]:
            self._close(addr)
        self._reaper = self._loop.call_later(self._idle / 2, self._reap)
