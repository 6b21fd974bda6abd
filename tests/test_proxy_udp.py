"""The proxy's UDP relay (wgc.proxy.udp) on loopback kernel sockets: flows per
peer, answers to the right peer, the flow limit and the idle timeout.
(Through the tunnel: tests/test_proxy_interop.py.)"""
import asyncio
import logging
import socket

import pytest

from wgc.proxy.udp import UdpRelay


class Echo(asyncio.DatagramProtocol):
    """The target: answers each datagram with its sender's port and the datagram."""

    def connection_made(self, transport):
        self.transport = transport
        self.sources = []

    def datagram_received(self, data, addr):
        self.sources.append(addr)
        self.transport.sendto(addr[1].to_bytes(2, "big") + data, addr)


def _flow_to(target):
    def open_flow():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(target)
        return sock
    return open_flow


async def _setup(limit=8, idle=60.0):
    loop = asyncio.get_running_loop()
    echo_transport, echo = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    target = echo_transport.get_extra_info("sockname")
    relay_transport, relay = await loop.create_datagram_endpoint(
        lambda: UdpRelay(_flow_to(target), logging.getLogger("test"), limit=limit, idle=idle),
        local_addr=("127.0.0.1", 0))
    return echo_transport, echo, relay_transport, relay


def _client():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


async def _ask(sock, address, payload, timeout=2.0):
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, payload, address)
    return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)


def test_each_peer_has_its_own_flow_and_hears_only_its_answers():
    async def main():
        echo_t, _, relay_t, relay = await _setup()
        address = relay_t.get_extra_info("sockname")
        clients = [_client() for _ in range(3)]
        try:
            answers = [await _ask(c, address, b"hello %d" % i) for i, c in enumerate(clients)]
            again = await _ask(clients[0], address, b"again")
        finally:
            for c in clients:
                c.close()
            relay_t.close()
            echo_t.close()
            await asyncio.sleep(0.01)                    # connection_lost runs from the loop
        ports = [int.from_bytes(a[:2], "big") for a in answers]
        assert [a[2:] for a in answers] == [b"hello 0", b"hello 1", b"hello 2"]
        assert len(set(ports)) == 3                      # one source port at the target per peer
        assert int.from_bytes(again[:2], "big") == ports[0] and again[2:] == b"again"
        assert relay.flows == 0                          # closing the relay closed its flows
    asyncio.run(main())


def test_past_the_limit_the_least_recently_used_flow_closes():
    async def main():
        echo_t, echo, relay_t, relay = await _setup(limit=2)
        address = relay_t.get_extra_info("sockname")
        a, b, c = _client(), _client(), _client()
        try:
            first = await _ask(a, address, b"a")
            await _ask(b, address, b"b")
            await _ask(a, address, b"a2")                # a is now the most recent
            await _ask(c, address, b"c")                 # b's flow goes
            assert relay.flows == 2
            a_again = await _ask(a, address, b"a3")
            await _ask(b, address, b"b2")                # a new flow for b, evicting c's
        finally:
            for s in (a, b, c):
                s.close()
            relay_t.close()
            echo_t.close()
            await asyncio.sleep(0.01)
        assert a_again[:2] == first[:2]                  # a kept its flow
        ports = [src[1] for src in echo.sources]
        assert ports[1] != ports[5]                      # b came back through a new flow
        assert relay.flows == 0
    asyncio.run(main())


def test_an_idle_flow_closes():
    async def main():
        echo_t, echo, relay_t, relay = await _setup(idle=0.4)
        address = relay_t.get_extra_info("sockname")
        client = _client()
        try:
            first = await _ask(client, address, b"x")
            assert relay.flows == 1
            await asyncio.sleep(0.3)
            await _ask(client, address, b"y")            # within the idle time: the same flow
            assert relay.flows == 1
            await asyncio.sleep(1.0)                     # past it, with the reaper's half-period
            assert relay.flows == 0
            second = await _ask(client, address, b"z")
        finally:
            client.close()
            relay_t.close()
            echo_t.close()
        assert echo.sources[0] == echo.sources[1] != echo.sources[2]
        assert first[2:] == b"x" and second[2:] == b"z"
    asyncio.run(main())


def test_an_unreachable_target_drops_datagrams_and_keeps_serving():
    async def main():
        loop = asyncio.get_running_loop()
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed.bind(("127.0.0.1", 0))
        target = closed.getsockname()
        closed.close()                                   # nothing listens there now
        relay_t, relay = await loop.create_datagram_endpoint(
            lambda: UdpRelay(_flow_to(target), logging.getLogger("test")), local_addr=("127.0.0.1", 0))
        address = relay_t.get_extra_info("sockname")
        client = _client()
        try:
            for _ in range(3):
                with pytest.raises(TimeoutError):
                    await _ask(client, address, b"anyone?", timeout=0.2)
            assert relay.flows == 1
        finally:
            client.close()
            relay_t.close()
    asyncio.run(main())
