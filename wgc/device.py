"""The device: configuration, handshakes and timers around the data plane.

The compiled data plane (wgc._core.Core) moves transport packets on its own
thread.  Everything else happens here, on the control thread, with `now`
(CLOCK_MONOTONIC ns) and `wall` (unix ns) taken from one clock function, so
that tests can run two devices against each other on a fake clock with the
core in sans-I/O (capture) mode.
"""
import base64
import errno
import socket
import struct
import threading
import time
from collections.abc import Callable

from wgc import constants as C
from wgc import counters, noise
from wgc._crypto import clamp
from wgc._dataplane import (
    HANDSHAKE_GIVEN_UP,
    HANDSHAKE_MESSAGE,
    HANDSHAKE_RETRY,
    KEYS_ZEROED,
    PEER_SILENT,
    PORT_GONE,
    WANT_HANDSHAKE,
    DataPlane,
)
from wgc.cookie import CookieChecker, CookieGenerator
from wgc.ratelimiter import RateLimiter
from wgc.reresolve import Reresolver

ZERO_KEY = bytes(32)
SOCKET_BUFFER = 7 << 20
SO_MARK = getattr(socket, "SO_MARK", 36)


class PeerLimitError(Exception):
    """The device already has MAX_PEERS peers."""


def system_clock() -> tuple[int, int]:
    return time.monotonic_ns(), time.time_ns()


def short_key(public_key: bytes) -> str:
    """A peer's name in log lines, as wireguard-go prints it."""
    b64 = base64.b64encode(public_key).decode()
    return f"peer({b64[:4]}…{b64[39:43]})"


def _packed_source(address) -> tuple[bytes, bytes]:
    """(packed IP, packed IP + big-endian port) of a socket address."""
    host, port = address[0], address[1]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ip = socket.inet_pton(family, host)
    return ip, ip + port.to_bytes(2, "big")


class Peer:
    """One configured peer: its keys and handshake; packets live in the core."""

    def __init__(self, device: "Device", public_key: bytes, slot: int):
        self._device = device
        self.public_key = public_key
        self.slot = slot
        self.preshared_key = ZERO_KEY
        self.persistent_keepalive = 0
        self.handshake = noise.Handshake(device._identity, public_key, ZERO_KEY)
        self.handshake.owner = self
        self.cookies = CookieGenerator(public_key)
        self.last_sent_handshake = -(1 << 62)
        self.last_sent_initiation = 0     # when the initiation a response would answer left
        self.name = short_key(public_key)
        # (host, port) to look up again when the peer goes quiet (wgc.reresolve), or None.
        self.endpoint_name: tuple[str, int] | None = None
        # The control plane's figures for this peer (wgc/counters.py's PEER names).
        self.counts: dict[str, float] = {
            "handshake_initiations_sent_total": 0,
            "handshake_responses_sent_total": 0,
            "handshakes_completed_total": 0,
            "handshake_rtt_seconds": 0.0,
        }

    # configuration -----------------------------------------------------------

    def set_preshared_key(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("preshared key must be 32 bytes")
        self.preshared_key = bytes(key)
        self.handshake.set_preshared_key(self.preshared_key)

    @property
    def endpoint(self):
        address = self._device.core.endpoint(self.slot)
        return None if address is None else (address[0], address[1])

    def set_endpoint(self, host: str, port: int) -> None:
        scope = 0
        if "%" in host:
            host, zone = host.split("%", 1)
            scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
        try:
            self._device.core.set_endpoint(self.slot, (host, port, 0, scope))
        except OSError:
            raise ValueError(f"not a numeric address: {host!r}") from None

    def set_endpoint_name(self, name: tuple[str, int] | None) -> None:
        """The host name and port the endpoint was given by, which the device
        looks up again when the peer is quiet; None: an address only."""
        self.endpoint_name = name
        if name is not None:
            now, _ = self._device.clock()
            self._device.reresolver.named(now)

    def set_persistent_keepalive(self, seconds: int) -> None:
        if not 0 <= seconds <= 65535:
            raise ValueError("persistent keepalive interval out of range")
        was_off = self.persistent_keepalive == 0
        self.persistent_keepalive = seconds
        self._device.core.set_persistent_keepalive(self.slot, seconds)
        if was_off and seconds and self._device.is_up:
            now, _ = self._device.clock()
            self._device.core.send_keepalive(self.slot, now)

    def add_allowed_ip(self, addr: bytes, cidr: int) -> None:
        self._device.core.allowed_ip_insert(bytes(addr), cidr, self.slot)

    def add_allowed_ips(self, records: bytes) -> None:
        """Prefixes as wgc._uapi_set parses them, in order."""
        self._device.core.allowed_ips_insert_records(records, self.slot)

    def remove_allowed_ip(self, addr: bytes, cidr: int) -> bool:
        return self._device.core.allowed_ip_remove(bytes(addr), cidr, self.slot)

    def clear_allowed_ips(self) -> None:
        self._device.core.allowed_ips_clear(self.slot)

    def allowed_ips(self) -> list[tuple[bytes, int]]:
        return self._device.core.allowed_ips_of(self.slot)

    def format_allowed_ips(self, out: bytearray) -> None:
        """Appends this peer's `allowed_ip=` lines of a UAPI `get` to out."""
        self._device.core.format_allowed_ips(self.slot, out)

    # statistics --------------------------------------------------------------

    @property
    def last_handshake(self) -> tuple[int, int]:
        _, _, sec, nsec = self._device.core.stats(self.slot)
        return sec, nsec

    @property
    def tx_bytes(self) -> int:
        return self._device.core.stats(self.slot)[0]

    @property
    def rx_bytes(self) -> int:
        return self._device.core.stats(self.slot)[1]

    def snapshot(self) -> counters.PeerSnapshot:
        """A copy of the peer's figures; call with the device's lock held."""
        core = self._device.core
        tx_bytes, rx_bytes, seconds, _ = core.stats(self.slot)
        lines = bytearray()
        core.format_allowed_ips(self.slot, lines)
        allowed_ips = [line.partition("=")[2] for line in lines.decode("ascii").splitlines()]
        values: dict[str, float] = {**core.counters(self.slot), **self.counts}
        return counters.PeerSnapshot(self.public_key, self.endpoint, allowed_ips, rx_bytes, tx_bytes,
                                     seconds, values)


class Device:
    """A WireGuard interface: give it a TUN (or None for sans-I/O use)."""

    def __init__(self, name: str, tun, log, clock=system_clock, udp_offload: bool = True,
                 port=None, mtu: int = C.DEFAULT_MTU, workers: int = 1):
        """The inner side is a TUN, or another packet port (an in-process
        network stack) with its MTU; with neither, the device is sans-I/O.
        workers: the threads that seal and open each batch (wgc._workers)."""
        self.name = name
        self.tun = tun
        self._live = tun is not None or port is not None
        self.log = log
        self.clock = clock
        self.lock = threading.RLock()
        self.core = DataPlane(capture=not self._live)
        self.core.set_udp_offload(udp_offload)
        self.core.set_workers(workers)
        self.on_fatal: Callable[[str], None] | None = None
        self.is_up = False
        self._identity: noise.StaticIdentity | None = None
        self._checker = CookieChecker(ZERO_KEY)
        self._ratelimiter = RateLimiter()
        self._peers: dict[bytes, Peer] = {}
        self._by_slot: dict[int, Peer] = {}
        self._port = 0
        self._fwmark = 0
        self._sockets: list[socket.socket] = []
        self._under_load_until = 0
        self._thread = None
        self.reresolver = Reresolver(self)
        # The control plane's figures for the device (wgc/counters.py's DEVICE names).
        self.counts = {
            "invalid_mac1_total": 0,
            "cookie_replies_sent_total": 0,
            "handshakes_rate_limited_total": 0,
        }
        if tun is not None:
            self.core.set_tun(tun.fd, tun.vnet_hdr)
            self.core.set_mtu(tun.mtu)
        elif port is not None:
            self.core.set_port(port)
            self.core.set_mtu(mtu)
        if self._live:
            self._thread = threading.Thread(target=self.core.run, name=f"wgc-{name}", daemon=True)
            self._thread.start()

    # the control loop's view ---------------------------------------------------

    @property
    def wakeup_fd(self) -> int:
        return self.core.notify_fd

    def process_events(self, budget: int = 256) -> None:
        """Handles what the data plane has for us (DataPlane.poll): peers wanting
        a handshake, timers due, and at most `budget` handshake messages, so
        that a flood cannot starve timers; the rest wait for the next round."""
        with self.lock:
            now, wall = self.clock()
            self._handle(self.core.poll(now, budget), now, wall)

    def next_deadline(self) -> int | None:
        with self.lock:
            deadlines = [d for d in (self.core.next_deadline() or None, self.reresolver.deadline()) if d is not None]
            return min(deadlines) if deadlines else None

    def run_timers(self, now: int) -> None:
        with self.lock:
            _, wall = self.clock()
            self._handle(self.core.poll(now, 0), now, wall)
            self.reresolver.poll(now, wall)

    def _handle(self, events, now: int, wall: int) -> None:
        for event in events:
            if event.what & PORT_GONE:
                if self.on_fatal is not None:
                    self.on_fatal("the TUN device is gone")
                return
            if event.what & HANDSHAKE_MESSAGE:
                self._receive_handshake(event.message, event.source, now, wall, event.backlog)
                continue
            peer = self._by_slot.get(event.slot)
            if peer is not None:
                self._peer_event(peer, event, now, wall)

    # link state ------------------------------------------------------------------

    def up(self) -> None:
        with self.lock:
            if self.is_up:
                return
            if self._live:
                try:
                    self._bind(self._port)
                except OSError as e:
                    self.log.error("Unable to update bind: %s", e.strerror or e)
                    return
            self.is_up = True
            self.log.debug("Interface state was Down, requested Up, now Up")
            now, _ = self.clock()
            for peer in self._peers.values():
                if peer.persistent_keepalive:
                    self.core.send_keepalive(peer.slot, now)

    def down(self) -> None:
        with self.lock:
            if not self.is_up:
                return
            self.is_up = False
            self._unbind()
            for peer in self._peers.values():
                self._reset_sessions(peer)
            self.log.debug("Interface state was Up, requested Down, now Down")

    def close(self) -> None:
        with self.lock:
            if self._thread is not None:
                self.core.stop()
                self._thread.join()
                self._thread = None
            self._unbind()

    def set_mtu(self, mtu: int) -> None:
        """The interface MTU changed: padding is computed against it."""
        self.core.set_mtu(mtu)

    # configuration ------------------------------------------------------------------

    @property
    def private_key(self) -> bytes | None:
        return None if self._identity is None else self._identity.private_key

    @property
    def public_key(self) -> bytes | None:
        return None if self._identity is None else self._identity.public_key

    def set_private_key(self, key: bytes | None) -> None:
        if key is not None and len(key) != 32:
            raise ValueError("private key must be 32 bytes")
        if key == ZERO_KEY:
            key = None
        elif key is not None:
            key = clamp(key)  # as the kernel and wireguard-go store it
        if key == self.private_key:
            return
        identity = None if key is None else noise.StaticIdentity(key)
        if identity is not None:
            # A peer with our own public key cannot exist.
            own = self._peers.get(identity.public_key)
            if own is not None:
                self.remove_peer(own.public_key)
        self._identity = identity
        self._checker = CookieChecker(identity.public_key if identity else ZERO_KEY)
        for peer in self._peers.values():
            peer.handshake.refresh_identity(identity)
            self._expire_sessions(peer)

    @property
    def listen_port(self) -> int:
        return self._port

    def set_listen_port(self, port: int) -> None:
        if not 0 <= port <= 65535:
            raise ValueError("port out of range")
        if self.is_up and self._live:
            if port != 0 and port == self._port and self._sockets:
                return
            self._bind(port)
        else:
            self._port = port

    @property
    def fwmark(self) -> int:
        return self._fwmark

    def set_fwmark(self, mark: int) -> None:
        if not 0 <= mark <= 0xFFFFFFFF:
            raise ValueError("fwmark out of range")
        for sock in self._sockets:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, struct.pack("I", mark))
        self._fwmark = mark

    def peers(self) -> list[Peer]:
        return list(self._peers.values())

    def peer(self, public_key: bytes) -> Peer | None:
        return self._peers.get(public_key)

    def add_peer(self, public_key: bytes) -> Peer:
        if len(public_key) != 32:
            raise ValueError("public key must be 32 bytes")
        peer = self._peers.get(public_key)
        if peer is not None:
            return peer
        if len(self._peers) >= C.MAX_PEERS:
            raise PeerLimitError("too many peers")
        peer = Peer(self, bytes(public_key), self.core.add_peer())
        self._peers[peer.public_key] = peer
        self._by_slot[peer.slot] = peer
        self.log.debug("%s - Created", peer.name)
        return peer

    def remove_peer(self, public_key: bytes) -> None:
        peer = self._peers.pop(public_key, None)
        if peer is None:
            return
        del self._by_slot[peer.slot]
        self.core.remove_peer(peer.slot)
        self.log.debug("%s - Stopping", peer.name)

    def remove_all_peers(self) -> None:
        for key in list(self._peers):
            self.remove_peer(key)

    # sockets --------------------------------------------------------------------------

    def snapshot(self) -> counters.DeviceSnapshot:
        """A copy of every figure wgc/counters.py names, the device's and its
        peers' (in the order `get` lists them), taken under the device's lock."""
        with self.lock:
            values = self.core.counters()
            values.update(self.counts)
            peers = [peer.snapshot() for peer in self.peers()]
        return counters.DeviceSnapshot(self.name, values, peers)

    def _bind(self, port: int) -> None:
        """Opens IPv4 and IPv6 sockets on one port (random when 0), then swaps
        them in; on failure the old sockets stay."""
        for _ in range(100 if port == 0 else 1):
            v4 = self._socket(socket.AF_INET, port)
            bound = v4.getsockname()[1]
            try:
                v6 = self._socket(socket.AF_INET6, bound)
            except OSError as e:
                if e.errno == errno.EADDRINUSE and port == 0:
                    v4.close()
                    continue
                if e.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                    v6 = None  # a host without IPv6
                else:
                    v4.close()
                    raise
            break
        else:
            raise OSError(errno.EADDRINUSE, "no port free for both IPv4 and IPv6")
        old = self._sockets
        self._sockets = [s for s in (v4, v6) if s is not None]
        self.core.set_sockets(v4.fileno(), v6.fileno() if v6 is not None else -1)
        for sock in old:
            sock.close()
        self._port = bound

    def _socket(self, family: int, port: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            for option, fallback in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):
                # SO_RCVBUFFORCE / SO_SNDBUFFORCE need CAP_NET_ADMIN, which we have.
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, fallback, SOCKET_BUFFER)
            if self._fwmark:
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK, struct.pack("I", self._fwmark))
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        except OSError:
            sock.close()
            raise
        return sock

    def _unbind(self) -> None:
        if self._sockets:
            self.core.set_sockets(-1, -1)
            for sock in self._sockets:
                sock.close()
            self._sockets = []

    # handshakes -------------------------------------------------------------------------

    def _send_initiation(self, peer: Peer, now: int, wall: int) -> None:
        if now - peer.last_sent_handshake < C.REKEY_TIMEOUT:
            return
        if not self.is_up or self._identity is None or not peer.handshake.can_handshake():
            return
        peer.last_sent_handshake = peer.last_sent_initiation = now
        index = self.core.new_handshake_index(peer.slot)
        message = noise.create_initiation(peer.handshake, index, wall)
        peer.cookies.add_macs(message, now)
        self.log.debug("%s - Sending handshake initiation", peer.name)
        if self.core.send_handshake(peer.slot, message, now, initiation=True):
            peer.counts["handshake_initiations_sent_total"] += 1

    def _send_response(self, peer: Peer, now: int, wall: int) -> None:
        peer.last_sent_handshake = now
        index = self.core.new_handshake_index(peer.slot)
        message = noise.create_response(peer.handshake, index)
        peer.cookies.add_macs(message, now)
        self._begin_session(peer, now, wall)
        self.log.debug("%s - Sending handshake response", peer.name)
        if self.core.send_handshake(peer.slot, message, now):
            peer.counts["handshake_responses_sent_total"] += 1

    def _begin_session(self, peer: Peer, now: int, wall: int) -> None:
        keys = noise.begin_session(peer.handshake)
        self.core.install_keypair(
            peer.slot, keys.send_key, keys.recv_key, keys.local_index, keys.remote_index,
            keys.is_initiator, now, wall,
        )
        peer.counts["handshakes_completed_total"] += 1

    def _under_load(self, backlog: int, now: int) -> bool:
        if backlog >= C.UNDER_LOAD_THRESHOLD:
            self._under_load_until = now + C.UNDER_LOAD_AFTER_TIME
            return True
        return now < self._under_load_until

    def _receive_handshake(self, message: bytes, source, now: int, wall: int, backlog: int) -> None:
        """One queued handshake message; anything unauthenticated is dropped silently."""
        kind = message[0]
        if kind == C.MESSAGE_COOKIE_REPLY:
            peer = self._by_slot.get(self.core.index_peer(noise.receiver_index(message)))
            if peer is not None and peer.cookies.consume_reply(message, now):
                self.log.debug("%s - Received cookie reply", peer.name)
            return
        if self._identity is None:
            return
        if not self._checker.check_mac1(message):
            self.counts["invalid_mac1_total"] += 1
            return
        if self._under_load(backlog, now):
            ip, src = _packed_source(source)
            if not self._checker.check_mac2(message, src, now):
                if self.core.send_to(source, self._checker.create_reply(message, src, now)):
                    self.counts["cookie_replies_sent_total"] += 1
                return
            if not self._ratelimiter.allow(ip, now):
                self.counts["handshakes_rate_limited_total"] += 1
                return
        if kind == C.MESSAGE_INITIATION:
            handshake = noise.consume_initiation(self._identity, message, self._find_handshake, now)
            if handshake is None:
                return
            peer = handshake.owner
            self.log.debug("%s - Received handshake initiation", peer.name)
            self._authenticated_handshake(peer, message, source, now)
            if self.is_up:
                self._send_response(peer, now, wall)
        else:
            handshake = noise.consume_response(self._identity, message, self._find_by_index)
            if handshake is None:
                return
            peer = handshake.owner
            self.log.debug("%s - Received handshake response", peer.name)
            peer.counts["handshake_rtt_seconds"] = (now - peer.last_sent_initiation) / C.SECOND
            self._authenticated_handshake(peer, message, source, now)
            self._begin_session(peer, now, wall)
            self.core.send_keepalive(peer.slot, now)

    def _authenticated_handshake(self, peer: Peer, message: bytes, source, now: int) -> None:
        self.core.set_endpoint(peer.slot, source)
        self.core.handshake_received(peer.slot, len(message), now)

    def _find_handshake(self, public_key: bytes):
        peer = self._peers.get(public_key)
        return None if peer is None else peer.handshake

    def _find_by_index(self, index: int):
        peer = self._by_slot.get(self.core.handshake_peer(index))
        return None if peer is None else peer.handshake

    # timers ---------------------------------------------------------------------------

    def _peer_event(self, peer: Peer, event, now: int, wall: int) -> None:
        """The control plane's part of what happened to peer (the data plane
        did its own already: see Core._timers_fired)."""
        what = event.what
        if what & HANDSHAKE_GIVEN_UP:
            self.log.debug(
                "%s - Handshake did not complete after %d attempts, giving up",
                peer.name, C.MAX_TIMER_HANDSHAKES + 2,
            )
        if what & HANDSHAKE_RETRY:
            self.log.debug(
                "%s - Handshake did not complete after %d seconds, retrying (try %d)",
                peer.name, C.REKEY_TIMEOUT // C.SECOND, event.attempts + 1,
            )
            self._send_initiation(peer, now, wall)
        if what & PEER_SILENT:
            self.log.debug(
                "%s - Retrying handshake because we stopped hearing back after %d seconds",
                peer.name, (C.KEEPALIVE_TIMEOUT + C.REKEY_TIMEOUT) // C.SECOND,
            )
            self._send_initiation(peer, now, wall)
        if what & KEYS_ZEROED:
            self.log.debug(
                "%s - Removing all keys, since we haven't received a new one in %d seconds",
                peer.name, 3 * C.REJECT_AFTER_TIME // C.SECOND,
            )
            peer.handshake.clear()
        if what & WANT_HANDSHAKE:
            self._send_initiation(peer, now, wall)

    def _reset_sessions(self, peer: Peer) -> None:
        """The link went down: forget sessions, queued packets and timers."""
        self.core.reset_peer(peer.slot)
        peer.handshake.clear()
        peer.last_sent_handshake = -(1 << 62)

    def _expire_sessions(self, peer: Peer) -> None:
        """After a key change: stop sending on old sessions, allow a handshake now."""
        peer.handshake.clear()
        peer.last_sent_handshake = -(1 << 62)
        self.core.expire_sending(peer.slot)
