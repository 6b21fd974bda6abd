"""The request side of an HTTP proxy, sans I/O: CONNECT and plain forwarding.

    reader = RequestReader(credentials=("user", "secret"))   # or RequestReader()
    request, used = reader.receive(data)                     # as often as bytes arrive
    # Connect: send CONNECTION_ESTABLISHED, then data[used:] is tunnel data
    # Forward: send request.head to the origin, then data[used:] (the body) as it is

The head is parsed by h11 (RFC 9112's grammar, and a bound on its size);
what h11 refuses, or the proxy does, raises HttpError, whose .response is
the answer to send before closing.

A forwarded request goes out with an origin-form target, the Host of its
absolute URI, no hop-by-hop or Proxy-* fields, and `Connection: close`, so
that each client connection carries one request (as the origin closes after
its response, the proxy needs to understand no response framing).  Its body
is passed on untouched, so its framing (Content-Length or chunked) is kept;
a request with both is refused, as the two could be read differently on
either side (RFC 9112 section 6.3).  Only http:// targets are forwarded:
https:// goes through CONNECT.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import re
from dataclasses import dataclass
from http import HTTPStatus

import h11

MAX_HEAD = 16 * 1024  # bytes of request line and header fields; more is answered 431
REALM = "wgc"

# Hop-by-hop fields (RFC 9110 section 7.6.1) and the proxy's own, never passed on;
# Transfer-Encoding is kept, as the body is passed on with its framing.
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
                         b"host", b"proxy-authorization", b"proxy-authenticate"})
# A host name (RFC 3986's reg-name less its percent-encodings and sub-delims) or an IPv4 address.
_NAME = re.compile(r"[A-Za-z0-9._~-]+")
_PORT = re.compile(r"[0-9]{1,5}")


class HttpError(Exception):
    """A request the proxy does not serve; .response is the answer to send."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.response = response(status, headers)


@dataclass(frozen=True)
class Connect:
    """CONNECT host:port: answer CONNECTION_ESTABLISHED once connected."""

    host: str
    port: int


@dataclass(frozen=True)
class Forward:
    """A request to forward to host:port: head is what to send first."""

    host: str
    port: int
    head: bytes


def response(status: int, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """The proxy's own response: a status with its standard reason, and for an
    error a short text body; the connection closes after it."""
    phrase = HTTPStatus(status).phrase
    if status < 300:
        return f"HTTP/1.1 {status} {phrase}\r\n\r\n".encode()
    body = f"{status} {phrase}\n".encode()
    fields = [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), ("Connection", "close"), *headers]
    return (f"HTTP/1.1 {status} {phrase}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n").encode() + body


# The answer to a CONNECT that reached its target: the tunnel starts after it.
CONNECTION_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


def _bad(message: str) -> HttpError:
    return HttpError(400, message)


def split_authority(text: str, default_port: int | None) -> tuple[str, int]:
    """host and port of "host[:port]" or "[v6]:port" (a port is needed when
    default_port is None); HttpError 400 when it is neither."""
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        try:
            host = ipaddress.IPv6Address(inside).compressed
        except ValueError:
            raise _bad(f"not an IPv6 address: {inside!r}") from None
        if not bracket or (rest and not rest.startswith(":")):
            raise _bad(f"not host:port: {text!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_or_empty = text.partition(":")
        port_text = port_text_or_empty if colon else None
        if not _NAME.fullmatch(host):
            raise _bad(f"not a host name: {host!r}")
    if port_text is None:
        if default_port is None:
            raise _bad(f"no port in {text!r}")
        return host, default_port
    if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise _bad(f"not a port: {port_text!r}")
    return host, int(port_text)


def _absolute(target: str) -> tuple[str, int, str]:
    """host, port and origin-form target of an http:// absolute-form target."""
    scheme, separator, rest = target.partition("://")
    if not separator or scheme.lower() != "http":
        raise _bad(f"not an http:// target: {target[:100]!r}")
    end = len(rest)
    for stop in "/?#":
        if stop in rest:
            end = min(end, rest.index(stop))
    authority, path = rest[:end], rest[end:].partition("#")[0]
    if "@" in authority:
        raise _bad("user information in the target")
    host, port = split_authority(authority, 80)
    if not path.startswith("/"):
        path = "/" + path
    return host, port, path


def _authorized(value: bytes | None, credentials: tuple[bytes, bytes]) -> bool:
    """Proxy-Authorization: Basic with the user and password (RFC 7617),
    compared in constant time."""
    scheme, _, token = (value or b"").strip().partition(b" ")
    if scheme.lower() != b"basic":
        return False
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except binascii.Error:
        return False
    user, colon, password = decoded.partition(b":")
    return bool(colon) & hmac.compare_digest(user, credentials[0]) & hmac.compare_digest(password, credentials[1])


class RequestReader:
    """One client connection's request head.

    credentials: (username, password) that Proxy-Authorization must carry
    (Basic), or None for none.  max_head bounds the head (431 beyond)."""

    def __init__(self, credentials: tuple[str, str] | None = None, max_head: int = MAX_HEAD):
        self._credentials = None if credentials is None else (credentials[0].encode(), credentials[1].encode())
        self._connection = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self.request: Connect | Forward | None = None

    def receive(self, data: bytes) -> tuple[Connect | Forward | None, int]:
        """Reads data; returns the request once its head is complete (else
        None), and how many of data's bytes the head took: data[used:] is the
        start of the tunnel (Connect) or of the body (Forward).  Raises
        HttpError for a request the proxy does not serve."""
        if self.request is not None or not data:  # (b"" is no news: h11 would take it for the end)
            return None, 0
        try:
            self._connection.receive_data(data)
            event = self._connection.next_event()
        except h11.RemoteProtocolError as error:
            # h11's words without the bytes it quotes, which may be a Proxy-Authorization line.
            raise HttpError(error.error_status_hint, f"bad request: {str(error).split(':', 1)[0]}") from None
        if event is h11.NEED_DATA:
            return None, len(data)
        assert isinstance(event, h11.Request), event  # what else a server's first event can be needs an end of input
        trailing, _ = self._connection.trailing_data
        self.request = self._serve(event)
        return self.request, len(data) - len(trailing)

    def _serve(self, event: h11.Request) -> Connect | Forward:
        headers = event.headers
        if self._credentials is not None and not _authorized(_field(headers, b"proxy-authorization"),
                                                              self._credentials):
            raise HttpError(407, "proxy authentication required",
                            (("Proxy-Authenticate", f'Basic realm="{REALM}"'),))
        target = event.target.decode("latin-1")  # h11 let through visible ASCII only
        if event.method == b"CONNECT":
            return Connect(*split_authority(target, None))
        names = {name for name, _ in headers}
        if b"content-length" in names and b"transfer-encoding" in names:
            raise _bad("both Content-Length and Transfer-Encoding")
        host, port, path = _absolute(target)
        return Forward(host, port, _origin_head(event, host, port, path))


def _field(headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _origin_head(event: h11.Request, host: str, port: int, path: str) -> bytes:
    """The head to send the origin: origin-form target, Host of the target
    URI, the client's end-to-end fields in their order and case, and
    Connection: close."""
    connection_options: set[bytes] = set()
    for name, value in event.headers:
        if name == b"connection":
            connection_options.update(option.strip().lower() for option in value.split(b","))
    authority = (f"[{host}]" if ":" in host else host) + ("" if port == 80 else f":{port}")
    lines = [event.method + b" " + path.encode("latin-1") + b" HTTP/1.1", b"Host: " + authority.encode("ascii")]
    for (name, _), (raw_name, value) in zip(event.headers, event.headers.raw_items(), strict=True):
        if name not in _HOP_BY_HOP and name not in connection_options:
            lines.append(raw_name + b": " + value)
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"
