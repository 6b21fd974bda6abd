"""Link events for one interface, from rtnetlink (RTMGRP_LINK).

The daemon learns here when its interface goes up or down, changes MTU, or
is deleted.  Messages are parsed defensively: a short or odd message is
skipped, never trusted.

The netlink and rtnetlink link layouts defined here also serve wgc.control
(the generic-netlink and rtnetlink clients).
"""
import socket
import struct

# linux/netlink.h, linux/rtnetlink.h, linux/if_link.h
NLMSGHDR = struct.Struct("=IHHII")
NLATTR = struct.Struct("=HH")          # struct nlattr and struct rtattr alike
IFINFOMSG = struct.Struct("=BxHiII")
RTMGRP_LINK = 1
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1


class LinkEvent:
    __slots__ = ("deleted", "running", "mtu")

    def __init__(self, deleted: bool, running: bool, mtu: int | None):
        self.deleted, self.running, self.mtu = deleted, running, mtu


def parse(data: bytes, ifindex: int) -> list[LinkEvent]:
    """The link events for ifindex in one netlink datagram."""
    events = []
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            break
        body = offset + NLMSGHDR.size
        if kind in (RTM_NEWLINK, RTM_DELLINK) and length >= NLMSGHDR.size + IFINFOMSG.size:
            _, _, index, flags, _ = IFINFOMSG.unpack_from(data, body)
            if index == ifindex:
                events.append(LinkEvent(kind == RTM_DELLINK, bool(flags & IFF_RUNNING),
                                        _mtu(data, body + IFINFOMSG.size, offset + length)))
        offset += (length + 3) & ~3
    return events


def _mtu(data: bytes, start: int, end: int) -> int | None:
    while start + NLATTR.size <= end:
        length, kind = NLATTR.unpack_from(data, start)
        if length < NLATTR.size or start + length > end:
            return None
        if kind == IFLA_MTU and length >= NLATTR.size + 4:
            return struct.unpack_from("=I", data, start + NLATTR.size)[0]
        start += (length + 3) & ~3
    return None


def link_monitor() -> socket.socket:
    """A non-blocking rtnetlink socket subscribed to link changes."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
                         socket.NETLINK_ROUTE)
    sock.bind((0, RTMGRP_LINK))
    return sock
