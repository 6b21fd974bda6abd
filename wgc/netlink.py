"""Link events for one interface, from rtnetlink (RTMGRP_LINK).

The daemon learns here when its interface goes up or down, changes MTU, or
is deleted.  Messages are parsed defensively: a short or odd message is
skipped, never trusted.
"""
import socket
import struct

RTMGRP_LINK = 1
RTM_NEWLINK = 16
RTM_DELLINK = 17
IFF_RUNNING = 0x40
IFLA_MTU = 4

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")


class LinkEvent:
    __slots__ = ("deleted", "running", "mtu")

    def __init__(self, deleted: bool, running: bool, mtu: int | None):
        self.deleted, self.running, self.mtu = deleted, running, mtu


def parse(data: bytes, ifindex: int) -> list[LinkEvent]:
    """The link events for ifindex in one netlink datagram."""
    events = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        body = offset + _NLMSGHDR.size
        if kind in (RTM_NEWLINK, RTM_DELLINK) and length >= _NLMSGHDR.size + _IFINFOMSG.size:
            _, _, index, flags, _ = _IFINFOMSG.unpack_from(data, body)
            if index == ifindex:
                events.append(LinkEvent(kind == RTM_DELLINK, bool(flags & IFF_RUNNING),
                                        _mtu(data, body + _IFINFOMSG.size, offset + length)))
        offset += (length + 3) & ~3
    return events


def _mtu(data: bytes, start: int, end: int) -> int | None:
    while start + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, start)
        if length < _RTATTR.size or start + length > end:
            return None
        if kind == IFLA_MTU and length >= _RTATTR.size + 4:
            return struct.unpack_from("=I", data, start + _RTATTR.size)[0]
        start += (length + 3) & ~3
    return None


def link_monitor() -> socket.socket:
    """A non-blocking rtnetlink socket subscribed to link changes."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
                         socket.NETLINK_ROUTE)
    sock.bind((0, RTMGRP_LINK))
    return sock
