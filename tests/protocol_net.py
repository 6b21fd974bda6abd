"""Two wgc devices wired together in memory, on a fake clock.

The devices run in sans-I/O mode: their data planes capture what they would
send instead of touching sockets or a TUN, and this module carries datagrams
from one to the other. Addresses are only labels here; nothing is sent.
"""
import logging
import struct

from wgc import constants as C
from wgc._crypto import clamp, random
from wgc.device import Device

SECOND = C.SECOND
ADDRESS_A = ("127.0.0.1", 51001)
ADDRESS_B = ("127.0.0.2", 51002)
INNER_A = bytes([10, 0, 0, 1])
INNER_B = bytes([10, 0, 0, 2])


class FakeClock:
    def __init__(self):
        self.mono = 1_000 * SECOND
        self.wall = 1_700_000_000 * SECOND

    def __call__(self):
        return self.mono, self.wall

    def advance(self, ns: int):
        self.mono += ns
        self.wall += ns


def ipv4_packet(src: bytes, dst: bytes, payload_len: int = 64, proto: int = 1) -> bytes:
    """An IPv4 packet of 20 + payload_len bytes (ping: payload 64 -> 84 bytes)."""
    total = 20 + payload_len
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, proto, 0, src, dst)
    return header + (bytes(range(256)) * (payload_len // 256 + 1))[:payload_len]


def ipv6_packet(src: bytes, dst: bytes, payload_len: int = 24) -> bytes:
    """An IPv6 packet of 40 + payload_len bytes (next header: no next header)."""
    return struct.pack("!IHBB16s16s", 6 << 28, payload_len, 59, 64, src, dst) + bytes(payload_len)


class Side:
    def __init__(self, name, clock, address, inner):
        self.name = name
        self.device = Device(name, None, logging.getLogger(f"wgc.test.{name}"), clock)
        self.device.set_private_key(clamp(random(32)))
        self.address = address
        self.inner = inner
        self.tun_received: list[bytes] = []
        self.sent: list[bytes] = []  # every datagram this side sent, in order

    @property
    def public_key(self):
        return self.device.public_key


class Pair:
    """Device a and device b, each a peer of the other."""

    def __init__(self, psk: bytes | None = None):
        self.clock = FakeClock()
        self.a = Side("a", self.clock, ADDRESS_A, INNER_A)
        self.b = Side("b", self.clock, ADDRESS_B, INNER_B)
        self.peer_of_b = self._connect(self.a, self.b, psk)  # a's peer entry for b
        self.peer_of_a = self._connect(self.b, self.a, psk)
        self.a.device.up()
        self.b.device.up()
        self.drop_to = set()  # sides whose incoming datagrams are lost

    @staticmethod
    def _connect(local: Side, remote: Side, psk):
        peer = local.device.add_peer(remote.public_key)
        peer.set_endpoint(*remote.address)
        peer.add_allowed_ip(remote.inner, 32)
        if psk is not None:
            peer.set_preshared_key(psk)
        return peer

    def other(self, side: Side) -> Side:
        return self.b if side is self.a else self.a

    def pump(self, rounds: int = 50) -> int:
        """Carries datagrams both ways until nothing moves; returns how many moved."""
        moved = 0
        for _ in range(rounds):
            progress = False
            for side in (self.a, self.b):
                side.device.process_events()
                for kind, data, _dst in side.device.core.take_captured():
                    progress = True
                    if kind == "tun":
                        side.tun_received.append(data)
                        continue
                    side.sent.append(data)
                    moved += 1
                    target = self.other(side)
                    if target not in self.drop_to:
                        mono, wall = self.clock()
                        target.device.core.inject_udp(data, side.address, mono, wall)
            if not progress:
                return moved
        raise AssertionError("datagrams kept flowing: a loop between the devices?")

    def send(self, side: Side, payload_len: int = 64) -> bytes:
        """side's TUN emits an IPv4 packet for the other side; returns it."""
        packet = ipv4_packet(side.inner, self.other(side).inner, payload_len)
        side.device.core.inject_tun(packet, self.clock.mono)
        return packet

    def advance(self, ns: int):
        """Moves the clock and runs every timer that came due."""
        self.clock.advance(ns)
        for side in (self.a, self.b):
            side.device.run_timers(self.clock.mono)


def message_types(datagrams: list[bytes]) -> list[int]:
    return [d[0] for d in datagrams]
