"""rtnetlink for wg-quick: links, addresses, MTU, routes and policy-routing rules.

The messages are the ones iproute2's `ip` sends for the same commands (the
builders below name the command each one stands for), framed with the helpers
in kernel.py.  Builders return bytes and parsers take datagrams, so both are
tested without a kernel; Rtnl sends them and turns a refusal into a
WireGuardError carrying the errno (str() of it reads like ip's
"RTNETLINK answers: ..." line).
"""
from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass, field

from wgc.errors import WireGuardError
from wgc.netlink import (
    IFF_UP,
    IFINFOMSG,
    IFLA_IFNAME,
    IFLA_INFO_KIND,
    IFLA_LINKINFO,
    IFLA_MTU,
    NETLINK_ROUTE,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    NLMSGHDR,
    RTM_DELLINK,
    RTM_GETLINK,
    RTM_NEWLINK,
    SOL_NETLINK,
    Message,
    NetlinkSocket,
    attributes,
    messages,
    nlmsg_errno,
)

NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100  # in an NLMSG_ERROR: the request is not quoted whole
NLM_F_ACK_TLVS = 0x200  # in an NLMSG_ERROR: extended-ack attributes follow
NETLINK_EXT_ACK = 11
NLMSGERR_ATTR_MSG = 1

RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34

IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_FLAGS = 8

RTA_DST = 1
RTA_OIF = 4
RTA_METRICS = 8
RTA_TABLE = 15
RTAX_LOCK = 1
RTAX_MTU = 2
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1
RT_TABLE_UNSPEC = 0
RT_TABLE_MAIN = 254

FRA_PRIORITY = 6
FRA_FWMARK = 10
FRA_SUPPRESS_PREFIXLEN = 14
FRA_TABLE = 15
FRA_FWMASK = 16
FR_ACT_UNSPEC = 0
FR_ACT_TO_TBL = 1
FIB_RULE_INVERT = 0x2

IFADDRMSG = struct.Struct("=BBBBi")
RTMSG = struct.Struct("=BBBBBBBBI")
FIB_RULE_HDR = struct.Struct("=BBBBBBBBI")  # same layout as rtmsg
_BIG = 1 << 16


def _u32(value: int) -> bytes:
    return struct.pack("=I", value)


def _family(address: bytes) -> int:
    return socket.AF_INET if len(address) == 4 else socket.AF_INET6


# -- building (each as `ip` builds it) ------------------------------------------------

def new_link(seq: int, name: str, kind: str = "wireguard") -> bytes:
    """ip link add NAME type KIND"""
    msg = Message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, _BIG,
                  IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
    msg.put(IFLA_IFNAME, os.fsencode(name) + b"\0")
    info = msg.nest_start(IFLA_LINKINFO)
    msg.put(IFLA_INFO_KIND, kind.encode())
    msg.nest_end(info)
    return msg.finish()


def del_link(seq: int, ifindex: int) -> bytes:
    """ip link delete dev NAME"""
    msg = Message(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq, _BIG,
                  IFINFOMSG.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0))
    return msg.finish()


def set_link(seq: int, ifindex: int, mtu: int | None = None, up: bool | None = None) -> bytes:
    """ip link set [mtu MTU] [up|down] dev NAME"""
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    msg = Message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, _BIG,
                  IFINFOMSG.pack(socket.AF_UNSPEC, 0, ifindex, flags, change))
    if mtu is not None:
        msg.put(IFLA_MTU, _u32(mtu))
    return msg.finish()


def new_address(seq: int, ifindex: int, address: bytes, prefixlen: int) -> bytes:
    """ip address add ADDRESS/PREFIXLEN dev NAME (local and address the same)"""
    msg = Message(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, _BIG,
                  IFADDRMSG.pack(_family(address), prefixlen, 0, RT_SCOPE_UNIVERSE, ifindex))
    msg.put(IFA_LOCAL, address)
    msg.put(IFA_ADDRESS, address)
    return msg.finish()


def _table_fields(table: int) -> tuple[int, bytes | None]:
    """(the header's one-byte table, an RTA_TABLE/FRA_TABLE value or None), as ip splits them."""
    if table < 256:
        return table, None
    return RT_TABLE_UNSPEC, _u32(table)


def new_route(seq: int, ifindex: int, destination: bytes, prefixlen: int, table: int = RT_TABLE_MAIN) -> bytes:
    """ip route add DESTINATION/PREFIXLEN dev NAME [table TABLE]"""
    header_table, table_attr = _table_fields(table)
    msg = Message(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, _BIG,
                  RTMSG.pack(_family(destination), prefixlen, 0, 0, header_table, RTPROT_BOOT,
                             RT_SCOPE_LINK if len(destination) == 4 else RT_SCOPE_UNIVERSE, RTN_UNICAST, 0))
    if table_attr is not None:
        msg.put(RTA_TABLE, table_attr)
    msg.put(RTA_DST, destination)
    msg.put(RTA_OIF, _u32(ifindex))
    return msg.finish()


def get_route(seq: int, destination: bytes) -> bytes:
    """ip route get DESTINATION"""
    msg = Message(RTM_GETROUTE, NLM_F_REQUEST, seq, _BIG,
                  RTMSG.pack(_family(destination), len(destination) * 8, 0, 0, 0, 0, 0, 0, 0))
    msg.put(RTA_DST, destination)
    return msg.finish()


def rule(seq: int, command: int, family: int, table: int, fwmark: int | None = None, invert: bool = False,
         suppress_prefixlength: int | None = None) -> bytes:
    """ip rule add|delete [not] [fwmark MARK] table TABLE [suppress_prefixlength N]
    (command RTM_NEWRULE or RTM_DELRULE)"""
    header_table, table_attr = _table_fields(table)
    flags = NLM_F_REQUEST | NLM_F_ACK
    action = FR_ACT_UNSPEC
    if command == RTM_NEWRULE:
        flags |= NLM_F_CREATE | NLM_F_EXCL
        action = FR_ACT_TO_TBL
    msg = Message(command, flags, seq, _BIG,
                  FIB_RULE_HDR.pack(family, 0, 0, 0, header_table, 0, 0, action, FIB_RULE_INVERT if invert else 0))
    if fwmark is not None:
        msg.put(FRA_FWMARK, _u32(fwmark))
    if table_attr is not None:
        msg.put(FRA_TABLE, table_attr)
    if suppress_prefixlength is not None:
        msg.put(FRA_SUPPRESS_PREFIXLEN, _u32(suppress_prefixlength))
    return msg.finish()


def dump_request(seq: int, msg_type: int, family: int = socket.AF_UNSPEC) -> bytes:
    """A dump of links (RTM_GETLINK), addresses, routes or rules of one family."""
    if msg_type == RTM_GETLINK:
        header = IFINFOMSG.pack(family, 0, 0, 0, 0)
    elif msg_type == RTM_GETADDR:
        header = IFADDRMSG.pack(family, 0, 0, 0, 0)
    else:
        header = RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    return Message(msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, _BIG, header).finish()


# -- parsing ----------------------------------------------------------------------------

@dataclass
class Link:
    index: int
    name: str
    mtu: int = 0
    kind: str | None = None
    flags: int = 0


@dataclass
class Address:
    family: int
    prefixlen: int
    index: int
    address: bytes  # IFA_LOCAL when there is one (what ip shows), else IFA_ADDRESS

    def __str__(self) -> str:
        return f"{socket.inet_ntop(self.family, self.address)}/{self.prefixlen}"


@dataclass
class Route:
    family: int
    dst_len: int
    table: int
    type: int
    destination: bytes = b""
    oif: int | None = None
    mtu: int | None = None
    mtu_locked: bool = False  # `mtu lock N`


@dataclass
class Rule:
    family: int
    table: int
    action: int
    flags: int
    priority: int | None = None
    fwmark: int | None = None
    suppress_prefixlength: int | None = None
    attrs: dict = field(default_factory=dict)


def _cstr(payload: bytes) -> str:
    return os.fsdecode(payload.split(b"\0", 1)[0])


def _u32_of(payload: bytes) -> int | None:
    return struct.unpack_from("=I", payload)[0] if len(payload) >= 4 else None


def parse_link(body: bytes) -> Link | None:
    if len(body) < IFINFOMSG.size:
        return None
    _, _type, index, flags, _change = IFINFOMSG.unpack_from(body)
    link = Link(index, "", flags=flags)
    for attr_type, payload in attributes(body, IFINFOMSG.size):
        if attr_type == IFLA_IFNAME:
            link.name = _cstr(payload)
        elif attr_type == IFLA_MTU:
            link.mtu = _u32_of(payload) or 0
        elif attr_type == IFLA_LINKINFO:
            for info_type, info in attributes(payload):
                if info_type == IFLA_INFO_KIND:
                    link.kind = _cstr(info)
    return link


def parse_address(body: bytes) -> Address | None:
    if len(body) < IFADDRMSG.size:
        return None
    family, prefixlen, _flags, _scope, index = IFADDRMSG.unpack_from(body)
    local = address = None
    for attr_type, payload in attributes(body, IFADDRMSG.size):
        if attr_type == IFA_LOCAL:
            local = payload
        elif attr_type == IFA_ADDRESS:
            address = payload
    chosen = local if local is not None else address
    if chosen is None or len(chosen) != {socket.AF_INET: 4, socket.AF_INET6: 16}.get(family):
        return None  # not an IP address, or bytes that do not fit its family
    return Address(family, prefixlen, index, chosen)


def parse_route(body: bytes) -> Route | None:
    if len(body) < RTMSG.size:
        return None
    family, dst_len, _src_len, _tos, table, _proto, _scope, rtype, _flags = RTMSG.unpack_from(body)
    route = Route(family, dst_len, table, rtype)
    for attr_type, payload in attributes(body, RTMSG.size):
        if attr_type == RTA_DST:
            route.destination = payload
        elif attr_type == RTA_OIF:
            route.oif = _u32_of(payload)
        elif attr_type == RTA_TABLE:
            route.table = _u32_of(payload) or route.table
        elif attr_type == RTA_METRICS:
            for metric, value in attributes(payload):
                if metric == RTAX_MTU:
                    route.mtu = _u32_of(value)
                elif metric == RTAX_LOCK:
                    route.mtu_locked = bool((_u32_of(value) or 0) & (1 << RTAX_MTU))
    return route


def parse_rule(body: bytes) -> Rule | None:
    if len(body) < FIB_RULE_HDR.size:
        return None
    family, _dst, _src, _tos, table, _r1, _r2, action, flags = FIB_RULE_HDR.unpack_from(body)
    found = Rule(family, table, action, flags)
    for attr_type, payload in attributes(body, FIB_RULE_HDR.size):
        found.attrs[attr_type] = payload
        if attr_type == FRA_TABLE:
            found.table = _u32_of(payload) or found.table
        elif attr_type == FRA_PRIORITY:
            found.priority = _u32_of(payload)
        elif attr_type == FRA_FWMARK:
            found.fwmark = _u32_of(payload)
        elif attr_type == FRA_SUPPRESS_PREFIXLEN:
            value = _u32_of(payload)
            # -1 (all ones) is the kernel's "not set"
            found.suppress_prefixlength = None if value in (None, 0xFFFFFFFF) else value
    return found


_PARSERS = {RTM_NEWLINK: parse_link, RTM_NEWADDR: parse_address, RTM_NEWROUTE: parse_route,
            RTM_NEWRULE: parse_rule}


def parse_dump(datagrams: list[bytes], seq: int, msg_type: int) -> list:
    """The objects of msg_type (RTM_NEWLINK, _NEWADDR, _NEWROUTE, _NEWRULE) answering dump seq."""
    parser = _PARSERS[msg_type]
    found = []
    for data in datagrams:
        for kind, _flags, msg_seq, body in messages(data):
            if msg_seq == seq and kind == msg_type:
                item = parser(body)
                if item is not None:
                    found.append(item)
    return found


def parse_ack(flags: int, body: bytes) -> tuple[int, str]:
    """(errno, ip's message) of an NLMSG_ERROR: "Error: <the kernel's extended
    ack text>." when there is one, else "RTNETLINK answers: <strerror>"."""
    if len(body) < 4:
        return errno.EPROTO, "RTNETLINK answers: " + os.strerror(errno.EPROTO)
    code = nlmsg_errno(body)
    if not code:
        return 0, ""
    text = None
    if flags & NLM_F_ACK_TLVS and len(body) >= 4 + NLMSGHDR.size:
        request_length = NLMSGHDR.unpack_from(body, 4)[0]
        start = 4 + (NLMSGHDR.size if flags & NLM_F_CAPPED else (request_length + 3) & ~3)
        try:
            for attr_type, payload in attributes(body, start):
                if attr_type == NLMSGERR_ATTR_MSG:
                    text = _cstr(payload)
        except WireGuardError:
            text = None
    if text:
        return code, f"Error: {text}" + ("" if text.endswith(".") else ".")
    return code, f"RTNETLINK answers: {os.strerror(code)}"


def error_code(datagrams: list[bytes], seq: int) -> int:
    for data in datagrams:
        for kind, _flags, msg_seq, body in messages(data):
            if msg_seq == seq and kind == NLMSG_ERROR and len(body) >= 4:
                return nlmsg_errno(body)
    return 0


# -- talking to the kernel -------------------------------------------------------------

class Rtnl:
    """One rtnetlink socket.  Every request waits for its answer."""

    def __init__(self):
        self.nl = NetlinkSocket(NETLINK_ROUTE)
        try:  # the kernel's own words on a refusal, as ip(8) asks for them
            self.nl.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except OSError:
            pass

    def close(self):
        self.nl.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, build, *args, **kw) -> None:
        """Sends build(seq, *args) and raises WireGuardError unless the kernel
        acknowledges it; its strerror is what ip(8) would print."""
        seq = self.nl.next_seq()
        self.nl.send(build(seq, *args, **kw))
        while True:
            for kind, flags, msg_seq, body in messages(self.nl.recv()):
                if msg_seq == seq and kind == NLMSG_ERROR:
                    code, text = parse_ack(flags, body)
                    if code:
                        raise WireGuardError(code, text)
                    return

    def dump(self, msg_type: int, family: int = socket.AF_UNSPEC) -> list:
        seq = self.nl.next_seq()
        self.nl.send(dump_request(seq, msg_type, family))
        datagrams = self.nl.dump(seq)
        code = error_code(datagrams, seq)
        if code and code != errno.EINTR:
            raise WireGuardError(code, f"RTNETLINK answers: {os.strerror(code)}")
        return parse_dump(datagrams, seq, msg_type - 2)  # each GET answers with its NEW

    def links(self) -> list[Link]:
        return self.dump(RTM_GETLINK)

    def link(self, name: str) -> Link | None:
        return next((link for link in self.links() if link.name == name), None)

    def addresses(self, family: int = socket.AF_UNSPEC, index: int | None = None) -> list[Address]:
        return [a for a in self.dump(RTM_GETADDR, family) if index is None or a.index == index]

    def routes(self, family: int) -> list[Route]:
        return self.dump(RTM_GETROUTE, family)

    def rules(self, family: int) -> list[Rule]:
        return self.dump(RTM_GETRULE, family)

    def route_get(self, destination: bytes) -> Route | None:
        """The route the kernel picks for destination (ip route get), None if unreachable."""
        seq = self.nl.next_seq()
        self.nl.send(get_route(seq, destination))
        while True:
            for kind, _flags, msg_seq, body in messages(self.nl.recv()):
                if msg_seq != seq:
                    continue
                if kind == NLMSG_ERROR:
                    return None
                if kind == RTM_NEWROUTE:
                    return parse_route(body)
