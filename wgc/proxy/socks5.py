"""The server side of SOCKS5 (RFC 1928) with username/password (RFC 1929), sans I/O.

    server = Server(credentials=("user", "secret"))   # or Server() for no authentication
    events, used = server.receive(data)                # as often as bytes arrive
    # send each event's .reply; once a Request came, data[used:] is tunnel data

The client's messages may arrive split anywhere or several in one read
(clients that send the greeting, the authentication and the request at once
are served too).  Every message has a bounded length (at most 513 bytes), so
the handshake keeps at most one incomplete message buffered.

Input the protocol refuses raises SocksError, whose .reply is what to send
before closing (b"" where the protocol has no answer, as for a client that
is not SOCKS5 at all), preceded by the answers to the messages the same
call completed (a greeting and a refused request in one read get both).
The reserved byte of a request is not checked, as RFC 1928 gives it no
meaning.  BIND is answered "command not supported".

UDP ASSOCIATE's datagrams carry the header of RFC 1928 section 7
(parse_udp, build_udp).  Fragments (FRAG != 0) are dropped, as most servers
do: the RFC makes reassembly optional, and clients do not fragment.
"""
from __future__ import annotations

import enum
import errno
import hmac
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

VERSION = 5
AUTH_VERSION = 1  # RFC 1929's subnegotiation
_AUTH_OK = bytes([AUTH_VERSION, 0])
_AUTH_FAILED = bytes([AUTH_VERSION, 1])
_PORT = struct.Struct("!H")


class Method(enum.IntEnum):
    NO_AUTHENTICATION = 0x00
    GSSAPI = 0x01
    USERNAME_PASSWORD = 0x02
    NO_ACCEPTABLE = 0xFF


class Command(enum.IntEnum):
    CONNECT = 0x01
    BIND = 0x02
    UDP_ASSOCIATE = 0x03


class AddressType(enum.IntEnum):
    IPV4 = 0x01
    DOMAIN = 0x03
    IPV6 = 0x04


class Reply(enum.IntEnum):
    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class SocksError(Exception):
    """Input SOCKS5 refuses; .reply is the message to send before closing
    (b"" when the protocol has none for this case)."""

    def __init__(self, message: str, reply: bytes = b""):
        super().__init__(message)
        self.reply = reply


@dataclass(frozen=True)
class Greeting:
    """The client's greeting was read; reply is the chosen method, to send."""

    method: Method
    reply: bytes


@dataclass(frozen=True)
class Authenticated:
    """The username and password matched; reply (success) is to send."""

    username: str
    reply: bytes = _AUTH_OK


@dataclass(frozen=True)
class Request:
    """The request: host is an IP address in text form (address_type IPV4 or
    IPV6) or a domain name to resolve (DOMAIN).  The caller answers with
    reply(...); nothing is to send yet."""

    command: Command
    host: str
    port: int
    address_type: AddressType
    reply: bytes = b""


Event = Greeting | Authenticated | Request


@dataclass(frozen=True)
class Datagram:
    """A UDP ASSOCIATE datagram without its header: to or from host:port."""

    host: str
    port: int
    data: bytes
    address_type: AddressType


class _Incomplete(Exception):
    """The buffer ends inside a message: wait for more bytes."""


class _Cursor:
    """Reads fields off the front of a buffer; running off its end is _Incomplete."""

    def __init__(self, data: bytes | bytearray):
        self.data = data
        self.at = 0

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise _Incomplete()
        piece = bytes(self.data[self.at:self.at + count])
        self.at += count
        return piece

    def byte(self) -> int:
        return self.take(1)[0]


def reply(code: Reply, host: str = "0.0.0.0", port: int = 0) -> bytes:
    """A reply to a request: code, and the bound address (BND.ADDR, BND.PORT):
    for CONNECT the proxy's end of the connection, for UDP ASSOCIATE where the
    client is to send its datagrams."""
    return bytes([VERSION, code, 0]) + _address(host, port)


def failure(code: Reply) -> bytes:
    """A failure reply, whose bound address is all zeros (IPv4)."""
    return reply(code)


def _address(host: str, port: int) -> bytes:
    """ATYP, the address and the port, as requests, replies and UDP headers carry them."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("utf-8", "surrogateescape")
        if not 0 < len(name) <= 255:
            raise ValueError(f"a domain name of {len(name)} bytes") from None
        packed = bytes([AddressType.DOMAIN, len(name)]) + name
    else:
        packed = bytes([AddressType.IPV4 if ip.version == 4 else AddressType.IPV6]) + ip.packed
    return packed + _PORT.pack(port)


def _read_address(cursor: _Cursor, refuse) -> tuple[AddressType, str, int]:
    """ATYP, the address and the port; refuse(message, code) raises what the caller answers."""
    kind = cursor.byte()
    if kind == AddressType.IPV4:
        host = str(ipaddress.IPv4Address(cursor.take(4)))
    elif kind == AddressType.IPV6:
        host = ipaddress.IPv6Address(cursor.take(16)).compressed
    elif kind == AddressType.DOMAIN:
        host = _domain(cursor.take(cursor.byte()), refuse)
    else:
        raise refuse(f"address type {kind} is not supported", Reply.ADDRESS_TYPE_NOT_SUPPORTED)
    (port,) = _PORT.unpack(cursor.take(2))
    return AddressType(kind), host, port


def _domain(raw: bytes, refuse) -> str:
    """A domain name as sent: printable ASCII or UTF-8 (some clients send IDNs
    undecoded), neither empty nor holding spaces or control characters."""
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise refuse("the domain name is not UTF-8", Reply.GENERAL_FAILURE) from None
    if not name or any(char.isspace() or not char.isprintable() for char in name):
        raise refuse(f"not a domain name: {name!r}", Reply.GENERAL_FAILURE)
    return name


def _request_error(message: str, code: Reply) -> SocksError:
    return SocksError(message, failure(code))


def _datagram_error(message: str, code: Reply) -> SocksError:
    return SocksError(message)


class Server:
    """One client's handshake, from its greeting to its request.

    credentials: (username, password) to require (RFC 1929), or None to
    offer no authentication.  The comparison takes the same time whatever
    the client sent; the password is never put in a message.
    """

    def __init__(self, credentials: tuple[str, str] | None = None):
        self._credentials = None if credentials is None else (credentials[0].encode(), credentials[1].encode())
        self._buffer = bytearray()
        self._step: Callable[[_Cursor], Event] = self._greeting
        self.request: Request | None = None

    @property
    def done(self) -> bool:
        """The request was read: every later byte is tunnel data."""
        return self.request is not None

    def receive(self, data: bytes) -> tuple[list[Event], int]:
        """Reads data; returns the messages it completed and how many of its
        bytes the handshake took.  Once the Request came, data[used:] is the
        first tunnel data; before, used == len(data) (an incomplete message
        is kept).  Raises SocksError for what SOCKS5 refuses."""
        if self.request is not None:
            return [], 0
        start = len(self._buffer)
        self._buffer += data
        events: list[Event] = []
        cursor = _Cursor(self._buffer)
        while True:
            mark = cursor.at
            try:
                event = self._step(cursor)
            except _Incomplete:
                del self._buffer[:mark]  # keeping the incomplete message only
                return events, len(data)
            except SocksError as error:
                # What this call completed is answered too, in order, before the refusal.
                error.reply = b"".join(event.reply for event in events) + error.reply
                raise
            events.append(event)
            if isinstance(event, Request):
                self.request = event
                self._buffer.clear()
                return events, cursor.at - start

    def _greeting(self, cursor: _Cursor) -> Greeting:
        version = cursor.byte()
        if version != VERSION:
            raise SocksError(f"not SOCKS5: version {version}")
        methods = cursor.take(cursor.byte())
        wanted = Method.NO_AUTHENTICATION if self._credentials is None else Method.USERNAME_PASSWORD
        if wanted not in methods:
            raise SocksError(f"no acceptable method among {list(methods)}", bytes([VERSION, Method.NO_ACCEPTABLE]))
        self._step = self._request if wanted == Method.NO_AUTHENTICATION else self._authentication
        return Greeting(wanted, bytes([VERSION, wanted]))

    def _authentication(self, cursor: _Cursor) -> Authenticated:
        version = cursor.byte()
        if version != AUTH_VERSION:
            raise SocksError(f"username/password version {version}", _AUTH_FAILED)
        username = cursor.take(cursor.byte())
        password = cursor.take(cursor.byte())
        assert self._credentials is not None
        expected_username, expected_password = self._credentials
        # Both compared, so that the time taken says nothing of which one differs.
        matches = hmac.compare_digest(username, expected_username) & hmac.compare_digest(password, expected_password)
        if not matches:
            raise SocksError("wrong username or password", _AUTH_FAILED)
        self._step = self._request
        return Authenticated(username.decode("utf-8", "replace"))

    def _request(self, cursor: _Cursor) -> Request:
        version, command, _reserved = cursor.take(3)
        if version != VERSION:
            raise SocksError(f"request of version {version}", failure(Reply.GENERAL_FAILURE))
        if command not in (Command.CONNECT, Command.UDP_ASSOCIATE):
            raise SocksError(f"command {command} is not supported", failure(Reply.COMMAND_NOT_SUPPORTED))
        kind, host, port = _read_address(cursor, _request_error)
        return Request(Command(command), host, port, kind)


def parse_udp(datagram: bytes) -> Datagram | None:
    """A UDP ASSOCIATE datagram from the client: its destination and data.
    None for a fragment (FRAG != 0), which is dropped; SocksError for a
    malformed header (drop it too: UDP has no reply)."""
    cursor = _Cursor(datagram)
    try:
        reserved, fragment = struct.unpack("!HB", cursor.take(3))
        if fragment:
            return None
        kind, host, port = _read_address(cursor, _datagram_error)
    except _Incomplete:
        raise SocksError("a UDP header cut short") from None
    if reserved:
        raise SocksError(f"UDP header with reserved field {reserved}")
    return Datagram(host, port, datagram[cursor.at:], kind)


def build_udp(host: str, port: int, data: bytes) -> bytes:
    """A datagram for the client, from host:port (an IP address in text form,
    or a domain name)."""
    return b"\0\0\0" + _address(host, port) + data


_ERRNO_REPLIES = {
    errno.ECONNREFUSED: Reply.CONNECTION_REFUSED,
    errno.ECONNRESET: Reply.CONNECTION_REFUSED,
    errno.EHOSTUNREACH: Reply.HOST_UNREACHABLE,
    errno.EHOSTDOWN: Reply.HOST_UNREACHABLE,
    errno.ENETUNREACH: Reply.NETWORK_UNREACHABLE,
    errno.ENETDOWN: Reply.NETWORK_UNREACHABLE,
    errno.ETIMEDOUT: Reply.TTL_EXPIRED,
    errno.EACCES: Reply.NOT_ALLOWED,
    errno.EPERM: Reply.NOT_ALLOWED,
    errno.EAFNOSUPPORT: Reply.ADDRESS_TYPE_NOT_SUPPORTED,
}


def reply_for_errno(number: int | None) -> Reply:
    """The reply code for a failed connect's errno (general failure for the rest)."""
    return _ERRNO_REPLIES.get(number or 0, Reply.GENERAL_FAILURE)


def reply_for_error(error: BaseException) -> Reply:
    """The reply code for what connecting raised: a name that does not resolve
    is an unreachable host, a timeout without errno an expired TTL (as curl
    and others word code 6), an OSError by its errno."""
    if isinstance(error, socket.gaierror):
        return Reply.HOST_UNREACHABLE
    if isinstance(error, TimeoutError) and not error.errno:
        return Reply.TTL_EXPIRED
    if isinstance(error, OSError):
        return reply_for_errno(error.errno)
    return Reply.GENERAL_FAILURE
