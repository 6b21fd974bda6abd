"""Netlink framing: the message and attribute layouts, building, parsing, a socket.

One home for what the daemon's link watch (wgc.linkwatch), the generic-netlink
client (wgc.control.kernel) and rtnetlink (wgc.control.rtnetlink) share.  Only
framing is ours; each message's meaning lives with its user.  Parsing is
defensive: a length that runs past its container is an error, never trusted.
"""
import _socket  # socket.py's own import makes enums and selectors: most of what `wg show all` cost
import errno
import os
import struct
import time

from wgc.errors import WireGuardError

# linux/netlink.h
NETLINK_ROUTE = 0
NETLINK_GENERIC = 16
NLMSGHDR = struct.Struct("=IHHII")
NLATTR = struct.Struct("=HH")          # struct nlattr and struct rtattr alike
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
SOL_NETLINK = 270

# linux/rtnetlink.h, linux/if_link.h
IFINFOMSG = struct.Struct("=BxHiII")
RTMGRP_LINK = 1
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1


def align(length: int) -> int:
    return (length + 3) & ~3


class Message:
    """One netlink message being built, never longer than `limit` bytes when
    the *_check methods are used (the others do not check, as in libmnl)."""

    def __init__(self, msg_type: int, flags: int, seq: int, limit: int, extra: bytes = b""):
        self.limit = limit
        self.buf = bytearray(NLMSGHDR.pack(0, msg_type, flags, seq, 0))
        self.buf += extra
        self.buf += bytes(align(len(extra)) - len(extra))

    def __len__(self) -> int:
        return len(self.buf)

    def put(self, attr_type: int, payload: bytes) -> None:
        self.buf += NLATTR.pack(NLATTR.size + len(payload), attr_type)
        self.buf += payload
        self.buf += bytes(align(len(payload)) - len(payload))

    def put_check(self, attr_type: int, payload: bytes) -> bool:
        if len(self.buf) + NLATTR.size + align(len(payload)) > self.limit:
            return False
        self.put(attr_type, payload)
        return True

    def nest_start(self, attr_type: int) -> int:
        offset = len(self.buf)
        self.buf += NLATTR.pack(0, attr_type | NLA_F_NESTED)
        return offset

    def nest_start_check(self, attr_type: int) -> int | None:
        if len(self.buf) + NLATTR.size > self.limit:
            return None
        return self.nest_start(attr_type)

    def nest_end(self, offset: int) -> None:
        struct.pack_into("=H", self.buf, offset, len(self.buf) - offset)

    def nest_cancel(self, offset: int) -> None:
        del self.buf[offset:]

    def finish(self) -> bytes:
        struct.pack_into("=I", self.buf, 0, len(self.buf))
        return bytes(self.buf)


def attributes(data: bytes, start: int = 0, end: int | None = None):
    """(type without flags, payload) for each attribute in data[start:end]."""
    end = len(data) if end is None else end
    offset = start
    while offset + NLATTR.size <= end:
        length, attr_type = NLATTR.unpack_from(data, offset)
        if length < NLATTR.size or offset + length > end:
            raise WireGuardError(errno.EPROTO, "malformed netlink attribute")
        yield attr_type & NLA_TYPE_MASK, data[offset + NLATTR.size: offset + length]
        offset += align(length)


def messages(data: bytes):
    """(type, flags, seq, body) for each netlink message in one datagram."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, msg_type, flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            raise WireGuardError(errno.EPROTO, "malformed netlink message")
        yield msg_type, flags, seq, data[offset + NLMSGHDR.size: offset + length]
        offset += align(length)


def nlmsg_errno(body: bytes) -> int:
    """The errno an NLMSG_ERROR body carries (0: an acknowledgement)."""
    if len(body) < 4:
        raise WireGuardError(errno.EPROTO, "a truncated netlink error message")
    value: int = struct.unpack_from("=i", body)[0]
    return errno.EPROTO if value == -(1 << 31) else -value  # INT_MIN has no errno (nor a C int) opposite


def open_socket(protocol: int) -> _socket.socket:
    """A bound, blocking netlink socket (the seam the control tests replace)."""
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, protocol)
    sock.bind((0, 0))
    return sock


class NetlinkSocket:
    """A blocking netlink socket for requests and their answers."""

    # Larger than any datagram the kernel sends: dump skbs stay under 32 KiB.
    RECV_SIZE = 1 << 16

    def __init__(self, protocol: int):
        try:
            self.sock = open_socket(protocol)
        except OSError as error:
            raise WireGuardError(error.errno, "cannot open a netlink socket") from None
        self.seq = int(time.time()) & 0x7FFFFFFF
        self.size = self.RECV_SIZE

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return self.seq

    def send(self, message: bytes) -> None:
        try:
            self.sock.send(message)
        except OSError as error:
            raise WireGuardError(error.errno, "netlink send failed") from None

    def recv(self) -> bytes:
        try:
            return self.sock.recv(self.size)
        except OSError as error:
            raise WireGuardError(error.errno, "netlink receive failed") from None

    def dump(self, seq: int) -> list[bytes]:
        """Datagrams up to the one with NLMSG_DONE or an error for seq."""
        datagrams = []
        while True:
            data = self.recv()
            datagrams.append(data)
            for msg_type, _flags, msg_seq, body in messages(data):
                if msg_seq == seq and msg_type == NLMSG_DONE:
                    return datagrams
                if msg_seq == seq and msg_type == NLMSG_ERROR and nlmsg_errno(body):
                    return datagrams

    def ack(self, seq: int) -> int:
        """The errno in the kernel's acknowledgement of seq (0 for success)."""
        while True:
            for msg_type, _flags, msg_seq, body in messages(self.recv()):
                if msg_seq == seq and msg_type == NLMSG_ERROR:
                    return nlmsg_errno(body)

    def request(self, message: bytes, seq: int) -> list[tuple[int, bytes]]:
        """Sends one request and returns the messages answering it, up to and
        including its acknowledgement; a refusal raises WireGuardError."""
        self.send(message)
        answer: list[tuple[int, bytes]] = []
        while True:
            for msg_type, _flags, msg_seq, body in messages(self.recv()):
                if msg_seq != seq:
                    continue
                if msg_type == NLMSG_ERROR:
                    code = nlmsg_errno(body)
                    if code:
                        raise WireGuardError(code, os.strerror(code))
                    return answer
                answer.append((msg_type, body))
