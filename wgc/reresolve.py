"""Endpoints given by name: looked up again when a peer goes quiet.

wg(8) resolves an endpoint's host name once, when it configures the device,
and the device only ever sees the address; wireguard-tools' reresolve-dns.sh,
run from cron, sets it again from the configuration file when the latest
handshake is older than 135 s.  wgc does that itself: its clients (the
built-in wg and wg-quick, the proxy) also tell a wgc device the name, in the
wgc-only UAPI peer key `endpoint_name=HOST:PORT`, and the device's control
loop asks a Reresolver every INTERVAL whether a named peer is quiet; the
lookups run on threads (getaddrinfo blocks), a few at a time, and an answer
that no longer holds the current endpoint replaces it.

For tests only, WGC_TEST_RERESOLVE=INTERVAL,QUIET (seconds, read once when
a device starts) shortens both times, so that a test sees a re-resolution
without waiting minutes.
"""
from __future__ import annotations

import os
import re
import socket
import threading
from collections import deque
from collections.abc import Callable

from wgc import constants as C
from wgc.log import log_failure

# How often named peers are looked at.
INTERVAL = 30 * C.SECOND
# reresolve-dns.sh's threshold: a working session rekeys by REKEY_AFTER_TIME,
# and a few handshake attempts (REKEY_TIMEOUT apart) later it is quiet.
QUIET_AFTER = C.REKEY_AFTER_TIME + 3 * C.REKEY_TIMEOUT
# A lookup answering later than this is ignored (getaddrinfo cannot be
# interrupted: its thread ends when the resolver gives up).
LOOKUP_TIMEOUT = 10 * C.SECOND
# The most lookups in flight at once, per device.
MAX_LOOKUPS = 4
ENV_TEST_TIMES = "WGC_TEST_RERESOLVE"

# A host name as RFC 1123 has it: dot-separated labels of letters, digits and
# inner hyphens, 253 characters at most; the last label starts with a letter,
# so nothing getaddrinfo reads as a numeric address ("10.1", "1.0x7f") passes.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}\Z)(?:{_LABEL}\.)*[A-Za-z](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.?\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")


def is_host_name(text: str) -> bool:
    return _HOST_NAME.match(text) is not None


def parse_endpoint_name(text: str) -> tuple[str, int]:
    """(host, port) of `endpoint_name`'s value HOST:PORT: a host name (never
    an address) and a decimal port; ValueError otherwise."""
    host, colon, port = text.rpartition(":")
    if not colon or not is_host_name(host) or not _PORT.match(port) or int(port) > 0xFFFF:
        raise ValueError("not HOST:PORT with a host name and a numeric port")
    return host, int(port)


def test_times() -> tuple[int, int]:
    """(INTERVAL, QUIET_AFTER), or what WGC_TEST_RERESOLVE says instead."""
    text = os.environ.get(ENV_TEST_TIMES, "")
    try:
        interval, quiet = (float(part) for part in text.split(","))
    except ValueError:
        return INTERVAL, QUIET_AFTER
    return max(1, int(interval * C.SECOND)), max(0, int(quiet * C.SECOND))


def lookup(host: str, port: int) -> list[tuple[str, int]]:
    """The addresses of host, as set_endpoint takes them ("%scope" added to a
    scoped IPv6 one), in getaddrinfo's order."""
    found = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_DGRAM,
                                                         socket.IPPROTO_UDP):
        address = str(sockaddr[0]).partition("%")[0]
        scope = sockaddr[3] if family == socket.AF_INET6 and len(sockaddr) == 4 else 0
        found.append((address + (f"%{scope}" if scope else ""), int(sockaddr[1])))
    return found


def _start_thread(function: Callable[[], None]) -> None:
    threading.Thread(target=function, name="wgc-reresolve", daemon=True).start()


class Reresolver:
    """Decides when to look a device's named peers up and applies the answers.

    The device calls deadline() and poll(now) from its control loop, with its
    lock held; lookups run through `resolve` on threads `start` makes (tests
    give a fake resolver and a start that calls at once)."""

    def __init__(self, device, resolve=lookup, start=_start_thread):
        self._device = device
        self._resolve = resolve
        self._start = start
        self.interval, self.quiet_after = test_times()
        self._next: int | None = None
        self._lock = threading.Lock()
        self._queue: deque[tuple[bytes, str, int]] = deque()  # (public key, host, port) to look up
        self._queued: set[bytes] = set()  # peers queued or being looked up
        self._workers = 0

    def named(self, now: int) -> None:
        """A peer got a name: checks start within an interval."""
        if self._next is None:
            self._next = now + self.interval

    def deadline(self) -> int | None:
        return self._next

    def poll(self, now: int, wall: int) -> None:
        """Queues a lookup for each named peer whose latest handshake is older
        than quiet_after (or that never had one), once an interval."""
        if self._next is None or now < self._next:
            return
        named = [peer for peer in self._device.peers() if peer.endpoint_name is not None]
        self._next = now + self.interval if named else None
        due = []
        for peer in named:
            seconds, nanoseconds = peer.last_handshake
            last = seconds * C.SECOND + nanoseconds
            if last == 0 or wall - last > self.quiet_after:
                due.append((peer.public_key, *peer.endpoint_name))
        with self._lock:
            for item in due:
                if item[0] not in self._queued:
                    self._queued.add(item[0])
                    self._queue.append(item)
            starting = min(MAX_LOOKUPS - self._workers, len(self._queue))
            self._workers += starting
        for _ in range(starting):
            try:
                self._start(self._work)
            except RuntimeError:  # no thread to be had now: the next interval tries again
                with self._lock:
                    self._workers -= 1
                self._device.log.debug("Endpoint names: cannot start a lookup thread now")

    def _work(self) -> None:
        """A lookup thread: takes queued lookups until none is left."""
        while True:
            with self._lock:
                if not self._queue:
                    self._workers -= 1
                    return
                public_key, host, port = self._queue.popleft()
            try:
                self._look_up(public_key, host, port)
            except Exception as error:
                log_failure(self._device.log, f"Endpoint name {host}", error)
            finally:
                with self._lock:
                    self._queued.discard(public_key)

    def _look_up(self, public_key: bytes, host: str, port: int) -> None:
        device = self._device
        started, _ = device.clock()
        try:
            addresses = self._resolve(host, port)
        except (OSError, UnicodeError) as error:
            device.log.debug("Endpoint name %s: lookup failed (%s), trying again later", host,
                             getattr(error, "strerror", None) or type(error).__name__)
            return
        with device.lock:
            now, _ = device.clock()
            if now - started > LOOKUP_TIMEOUT:
                device.log.debug("Endpoint name %s: answer came too late, trying again later", host)
                return
            peer = device.peer(public_key)
            if peer is None or peer.endpoint_name != (host, port) or not addresses:
                return
            current = peer.endpoint
            if current is not None and any(_same(current, address) for address in addresses):
                return
            address, resolved_port = addresses[0]
            try:
                peer.set_endpoint(address, resolved_port)
            except ValueError:
                return
            shown = f"[{address}]" if ":" in address else address
            device.log.debug("%s - Endpoint name %s now resolves to %s:%d", peer.name, host, shown, resolved_port)


def _same(current: tuple[str, int], address: tuple[str, int]) -> bool:
    """Whether the endpoint (host, port) is address (host with an optional "%scope", port)."""
    try:
        return current[1] == address[1] and _packed(current[0]) == _packed(address[0])
    except OSError:
        return False


def _packed(host: str) -> bytes:
    host = host.partition("%")[0]
    return socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
