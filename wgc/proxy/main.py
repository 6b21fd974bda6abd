"""wgc --proxy CONFIG: the proxy's process.

It reads the configuration (wgc.proxy.config), makes the Net, opens every
listener before serving anything (so a port in use or a bad address is a
one-line error and exit code 1, not a half-working proxy), then serves on
one asyncio loop until SIGINT or SIGTERM, or, with an [STDIOTunnel], until
that tunnel ends (its exit code then: 0, or 1 when it failed).

The interface is named after the configuration file (proxy.conf: `proxy`)
and answers wg(8)'s protocol on a control socket: in /var/run/wireguard for
root, else in $XDG_RUNTIME_DIR/wireguard, where `wgc --wg` looks too; so
`wgc --wg show proxy` and `wgc --wg syncconf proxy peers.conf` work on a
running proxy.  Log lines go to standard error only when standard output
carries a tunnel.  As a container's PID 1 it reaps orphaned children.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from wgc import paths
from wgc.log import make_logger
from wgc.netstack import ConfigError, Net
from wgc.proxy import httpproxy, socks, stdio, tcp
from wgc.proxy.config import HostPort, ProxyConfig, load
from wgc.proxy.udp import UdpRelay

USAGE = "Usage: wgc --proxy CONFIG-FILE"
_NAME = re.compile(r"[A-Za-z0-9_=+.-]{1,15}")
DEFAULT_NAME = "proxy"


class StartError(Exception):
    """A service could not start: the message says which and why."""


def interface_name(path: str) -> str:
    """The configuration file's name without its extension, when it is a valid
    interface name (as wg-quick names interfaces), else `proxy`."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem if _NAME.fullmatch(stem) else DEFAULT_NAME


def control_directory() -> str | None:
    if os.geteuid() == 0:
        return paths.SOCKET_DIRECTORY
    return paths.user_socket_directory()


def _tunnel_any(net: Net) -> list[str]:
    """Where services exposed on the tunnel listen: every address of each
    family the interface has."""
    return ["0.0.0.0"] * any(":" not in a for a in net.addresses) + ["::"] * any(":" in a for a in net.addresses)


def _target_socket(target: HostPort):
    def open_flow() -> socket.socket:
        family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.connect((target.host, target.port))
        except BaseException:
            sock.close()
            raise
        return sock
    return open_flow


def _tunnel_flow(net: Net, target: HostPort):
    def open_flow():
        info = net.getaddrinfo(target.host, target.port, 0, socket.SOCK_DGRAM)[0]
        endpoint = net.udp_socket(info[0])
        try:
            endpoint.connect(info[4][:2])
        except BaseException:
            endpoint.close()
            raise
        return endpoint
    return open_flow


class Proxy:
    """The services of one configuration on one Net."""

    def __init__(self, net: Net, config: ProxyConfig, log: logging.Logger, limits: tcp.Limits | None = None):
        self.net = net
        self.config = config
        self.log = log
        self.clients = tcp.Clients(net, limits or tcp.Limits())
        self._stopped: asyncio.Future[int] | None = None

    def _listen(self, bind: HostPort) -> socket.socket:
        try:
            return tcp.listen(bind)
        except OSError as error:
            raise StartError(f"cannot listen on {bind}: {error.strerror or error}") from None

    async def _open(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """Every listener, before any serves: what to run then."""
        loop = asyncio.get_running_loop()
        runs: list[Callable[[], Coroutine[Any, Any, None]]] = []
        for socks_section in self.config.socks5:
            runs.append(partial(tcp.serve_clients, self._listen(socks_section.bind),
                                socks.handler(socks_section, self.clients), self.clients, self.log))
        for http_section in self.config.http:
            runs.append(partial(tcp.serve_clients, self._listen(http_section.bind),
                                httpproxy.handler(http_section, self.clients), self.clients, self.log))
        for forward in self.config.tcp_client_tunnels:
            runs.append(partial(tcp.serve_clients, self._listen(forward.bind),
                                tcp.forward(self.clients, forward.target), self.clients, self.log))
        for exposed in self.config.tcp_server_tunnels:
            for address in _tunnel_any(self.net):
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                try:
                    listener = self.net.create_server((address, exposed.listen_port), family=family,
                                                      backlog=tcp.BACKLOG)
                except OSError as error:
                    raise StartError(f"cannot listen on the tunnel's port {exposed.listen_port}: "
                                     f"{error.strerror or error}") from None
                runs.append(partial(tcp.serve_exposed, self.net, listener, exposed.target, self.clients.limits,
                                    self.log))
        for udp_forward in self.config.udp_client_tunnels:
            try:
                await loop.create_datagram_endpoint(
                    partial(UdpRelay, _tunnel_flow(self.net, udp_forward.target), self.log),
                    local_addr=(udp_forward.bind.host or "0.0.0.0", udp_forward.bind.port))
            except OSError as error:
                raise StartError(f"cannot listen on {udp_forward.bind} (UDP): {error.strerror or error}") from None
        for udp_exposed in self.config.udp_server_tunnels:
            for address in _tunnel_any(self.net):
                try:
                    await self.net.create_datagram_endpoint(
                        partial(UdpRelay, _target_socket(udp_exposed.target), self.log),
                        local_addr=(address, udp_exposed.listen_port))
                except OSError as error:
                    raise StartError(f"cannot listen on the tunnel's port {udp_exposed.listen_port} (UDP): "
                                     f"{error.strerror or error}") from None
        return runs

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        runs = await self._open()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop, 0)
        if os.getpid() == 1:
            loop.add_signal_handler(signal.SIGCHLD, _reap)
        tasks = [loop.create_task(run()) for run in runs]
        if self.config.stdio is not None:
            target = self.config.stdio.target
            threading.Thread(target=self._stdio, args=(loop, target), name="wgc-stdio", daemon=True).start()
        self.log.debug("proxy serving")
        try:
            return await self._stopped
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self, status: int) -> None:
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(status)

    def _stdio(self, loop: asyncio.AbstractEventLoop, target: HostPort) -> None:
        try:
            conn = self.net.create_connection((target.host, target.port), timeout=self.clients.limits.connect)
        except OSError as error:
            self.log.error("STDIOTunnel: cannot reach %s: %s", target, error.strerror or type(error).__name__)
            loop.call_soon_threadsafe(self.stop, 1)
            return
        with conn:
            conn.settimeout(None)
            status = stdio.join(conn)
        loop.call_soon_threadsafe(self.stop, 1 if status else 0)


def _reap() -> None:
    """PID 1's duty: collect the orphans that are handed to it."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def main(args: list[str]) -> int:
    if len(args) != 1 or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 1
    path = args[0]
    try:
        config = load(path)
    except ConfigError as error:
        print(f"wgc: {error}", file=sys.stderr)
        return 1
    name = interface_name(path)
    log = make_logger(name, stdout=config.stdio is None)
    try:
        net = Net(config.net.device, list(config.net.addresses), mtu=config.net.mtu, dns=list(config.net.dns),
                  name=name, control_dir=control_directory())
    except (ConfigError, OSError) as error:
        print(f"wgc: {path}: {error}", file=sys.stderr)
        return 1
    with net:
        try:
            return asyncio.run(Proxy(net, config, log).run())
        except StartError as error:
            print(f"wgc: {error}", file=sys.stderr)
            return 1
