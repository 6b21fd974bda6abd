"""The UAPI text protocol: how wg(8) configures a userspace WireGuard device.

A connection to /var/run/wireguard/IFACE.sock carries requests one after
another (https://www.wireguard.com/xplatform/#configuration-protocol):

    get=1\\n\\n                     -> key=value lines, then errno=0\\n\\n
    set=1\\nkey=value\\n ... \\n     -> errno=N\\n\\n  (0, or a negative errno)

Any other operation line closes the connection without a reply.

wgc adds one operation of its own, answered like `get`:

    wgc_get_counters=1\\n\\n        -> name=value lines, then errno=0\\n\\n

the device's figures first, then for each peer `public_key=<hex>` and its
figures (wgc/counters.py names them all; values in counters.format_value's
form).  wg(8)'s operations are a verb and the protocol version (`get=1`,
`set=1`): a later protocol changes the number, not the verb, so a name
prefixed with the implementation's cannot collide with one.  wireguard-go
closes the connection on it, as on any operation it does not know: that is
how a client tells that a daemon is not wgc.

The reference is the wireguard-go Debian ships (v0.0.20220316, built with Go
1.19): the same keys, the same order, the same values accepted and refused,
the same errno for each kind of error.  Its parsers are Go's strconv and
net/netip, so the address and number parsers below follow their rules (IPv4
octets without leading zeros, IPv6 groups of any length below 2^16, prefix
lengths with an optional sign, ...) rather than Python's.  Two things differ
on purpose, both only visible to a client that sends the next request before
reading the reply to a `set`: wireguard-go's line scanner reads ahead and
throws away whatever followed the request in the same read, and after an
error it stops reading, so the rest of a long request is then parsed as
operation lines and closes the connection.  wgc reads a `set` request to its
blank line before applying it, so it always answers each request once.

One peer key is wgc's own, which wireguard-go refuses (errno -22, EINVAL),
so a client sends it only to a wgc device: `endpoint_name=HOST:PORT`, a
host name (never an address) and a decimal port, tells the device what name
the peer's endpoint was resolved from, so that it looks the name up again
when the peer goes quiet (wgc.reresolve).  It does not set the endpoint
(the client sends `endpoint=` with the address as wg(8) does); a later
`endpoint=` without it forgets the name; `get` never shows it.

wgc also refuses a `set` request bigger than MAX_REQUEST as a whole (errno
-90, EMSGSIZE), and its error lines never quote a value of the request, which
may be a key (see _shown).  Session speaks the protocol on bytes fed to it;
wgc.uapi_server owns the sockets.
"""
from __future__ import annotations

import errno
import re
import socket
import struct
from collections.abc import Callable

from wgc import _uapi_set, counters
from wgc._crypto import clamp
from wgc.device import PeerLimitError
from wgc.log import log_failure
from wgc.reresolve import parse_endpoint_name

# typing costs the daemon about half a MiB of memory for names only the type
# checker reads (it treats this name as true, Python never imports it).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar

# The errno values a `set` can answer, as wireguard-go's ipc package names them.
ERRNO_IO = -errno.EIO  # a request line longer than MAX_LINE
ERRNO_PROTOCOL = -errno.EPROTO  # a line without "="
ERRNO_INVALID = -errno.EINVAL  # unknown key, malformed value, too many peers
ERRNO_PORT_IN_USE = -errno.EADDRINUSE  # the UDP sockets could not be rebound or marked
ERRNO_UNKNOWN = -errno.ENOANO  # anything else (wireguard-go's "other UAPI error", -55)
ERRNO_TOO_BIG = -errno.EMSGSIZE  # a `set` of more than MAX_REQUEST bytes; wg(8): "Message too long"

# Go's bufio.Scanner holds at most 64 KiB: a `set` line and its "\n" must fit.
MAX_LINE = 65536
# The most a `set` request may hold, its line ends counted (wireguard-go has
# no cap).  wg(8) sends a whole configuration as one request, `wg syncconf`
# of a huge one included, so the cap is generous: the biggest configuration
# a device takes, 65,536 peers each with a preshared key, an endpoint, a
# keepalive and two allowed IPs, is about 21 MiB, and 32 MiB also holds over
# a million allowed IPs.  It still bounds what one client makes the daemon
# hold.
MAX_REQUEST = 32 << 20

_ZERO_KEY = bytes(32)
_V4_IN_V6 = bytes(10) + b"\xff\xff"


class UAPIError(Exception):
    """A request the protocol refuses; `errno` is the negative value to reply."""

    def __init__(self, errno_value: int, message: str):
        super().__init__(message)
        self.errno = errno_value


class _LoggedFailure(UAPIError):
    """A failure of ours while applying a line, logged with its cause already."""


def _invalid(message: str) -> UAPIError:
    return UAPIError(ERRNO_INVALID, message)


# -- what a log line may show of a request ----------------------------------------

# A log must never hold key material, and a client's text may be a key (a
# private key pasted into the wrong line, "<base64 key>=" read as a key name
# with an empty value).  So no value is ever shown, and a key name or an
# operation line only when it is shaped like the protocol's own words:
# lower-case letters and "_", optionally "=" and a short number ("set=2").
_HARMLESS = re.compile(r"[a-z_]{1,32}(=[0-9]{0,3})?\Z")


def _shown(text: str) -> str:
    """text quoted when it is harmless to log, else only its length."""
    return repr(text) if _HARMLESS.match(text) else f"of {len(text)} characters (not shown)"


# -- numbers and keys -------------------------------------------------------------

_DIGITS = re.compile(r"[0-9]+\Z")
_SIGNED_DIGITS = re.compile(r"[+-]?[0-9]+\Z")
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}\Z")


def _decimal(digits: str) -> int:
    """The value of a run of ASCII digits; beyond 2^64 only "too big" matters,
    and Python refuses to convert very long digit strings."""
    significant = digits.lstrip("0") or "0"
    return int(significant) if len(significant) <= 20 else 1 << 64


def parse_uint(text: str, bits: int) -> int:
    """strconv.ParseUint(text, 10, bits): ASCII digits only, no sign, no spaces."""
    if not _DIGITS.match(text):
        raise _invalid("not a decimal number")
    value = _decimal(text)
    if value >> bits:
        raise _invalid(f"number out of range for {bits} bits")
    return value


def _parse_atoi(text: str) -> int:
    """strconv.Atoi(text): like parse_uint but with an optional sign."""
    if not _SIGNED_DIGITS.match(text):
        raise _invalid("not a decimal number")
    value = _decimal(text[1:] if text[0] in "+-" else text)
    return -value if text[0] == "-" else value


def parse_key(text: str) -> bytes:
    """A 32-byte key in hex, either case."""
    if not _HEX_KEY.match(text):
        raise _invalid("not a key of 64 hex digits")
    return bytes.fromhex(text)


# -- addresses, as Go's net/netip parses and prints them ------------------------

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}\Z")
_ADDRESS_KIND = re.compile(r"[.:%]")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _parse_ipv4(text: str) -> bytes:
    # Four decimal octets, none above 255 and none with a leading zero.
    if not _IPV4.match(text):
        raise _invalid("malformed IPv4 address")
    return socket.inet_pton(socket.AF_INET, text)


def _parse_ipv6(text: str) -> tuple[bytes, str]:
    address, percent, zone = text.partition("%")
    if percent and not zone:
        raise _invalid("empty IPv6 zone")
    ip = bytearray(16)
    ellipsis = -1  # byte offset where "::" stands
    pos, end = 0, len(address)
    if address.startswith("::"):
        ellipsis, pos = 0, 2
        if pos == end:
            return bytes(ip), zone
    filled = 0
    while filled < 16:
        start, group = pos, 0
        while pos < end and address[pos] in _HEX_DIGITS:
            # Go allows any number of digits as long as the value fits.
            group = (group << 4) | int(address[pos], 16)
            if group > 0xFFFF:
                raise _invalid("IPv6 group above 0xffff")
            pos += 1
        if pos == start:
            raise _invalid("empty IPv6 group")
        if pos < end and address[pos] == ".":
            # A dotted IPv4 tail takes the place of the last two groups.
            if (ellipsis < 0 and filled != 12) or filled + 4 > 16:
                raise _invalid("misplaced IPv4 part in an IPv6 address")
            ip[filled : filled + 4] = _parse_ipv4(address[start:])
            filled += 4
            pos = end
            break
        ip[filled] = group >> 8
        ip[filled + 1] = group & 0xFF
        filled += 2
        if pos == end:
            break
        if address[pos] != ":" or pos + 1 == end:
            raise _invalid("malformed IPv6 address")
        pos += 1
        if address[pos] == ":":
            if ellipsis >= 0:
                raise _invalid("two '::' in an IPv6 address")
            ellipsis = filled
            pos += 1
            if pos == end:
                break
    if pos != end:
        raise _invalid("trailing characters after an IPv6 address")
    if filled < 16:
        if ellipsis < 0:
            raise _invalid("IPv6 address too short")
        tail = bytes(ip[ellipsis:filled])
        ip[ellipsis:] = bytes(16 - ellipsis - len(tail)) + tail
    elif ellipsis >= 0:
        raise _invalid("'::' stands for no group")
    return bytes(ip), zone


def parse_addr(text: str) -> tuple[bytes, str]:
    """netip.ParseAddr: (4 or 16 packed bytes, IPv6 zone or "").

    IPv4-mapped IPv6 addresses stay IPv6, as in Go."""
    kind = _ADDRESS_KIND.search(text)
    if kind is None or kind.group() == "%":
        raise _invalid("not an IP address")
    if kind.group() == ".":
        return _parse_ipv4(text), ""
    return _parse_ipv6(text)


def format_addr(packed: bytes) -> str:
    """netip.Addr.String: dotted IPv4; RFC 5952 IPv6, IPv4-mapped ones dotted."""
    if len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed)
    if packed[:12] == _V4_IN_V6:
        return "::ffff:" + socket.inet_ntop(socket.AF_INET, packed[12:])
    groups = struct.unpack("!8H", packed)
    # The longest run of two or more zero groups becomes "::", the first on a tie.
    best_start, best_len = -1, 1
    run_start = -1
    for index, group in enumerate(groups + (1,)):
        if group == 0:
            if run_start < 0:
                run_start = index
        elif run_start >= 0:
            if index - run_start > best_len:
                best_start, best_len = run_start, index - run_start
            run_start = -1
    if best_start < 0:
        return ":".join(f"{g:x}" for g in groups)
    head = ":".join(f"{g:x}" for g in groups[:best_start])
    tail = ":".join(f"{g:x}" for g in groups[best_start + best_len :])
    return f"{head}::{tail}"


def parse_prefix(text: str) -> tuple[bytes, int]:
    """netip.ParsePrefix: (packed address, prefix length); host bits are kept."""
    slash = text.rfind("/")
    if slash < 0:
        raise _invalid("no '/' in a prefix")
    address, zone = parse_addr(text[:slash])
    if zone:
        raise _invalid("IPv6 zone in a prefix")
    bits = _parse_atoi(text[slash + 1 :])
    if not 0 <= bits <= 8 * len(address):
        raise _invalid("prefix length out of range")
    return address, bits


def _scope_id(zone: str) -> int:
    # wireguard-go resolves a zone as an interface name first, then as a number.
    try:
        # CPython takes bytes here too (typeshed says str): latin-1 keeps each character one byte.
        return socket.if_nametoindex(zone.encode("latin-1"))  # type: ignore[arg-type]
    except (OSError, ValueError):
        return parse_uint(zone, 32)


def parse_endpoint(text: str) -> tuple[str, int]:
    """netip.ParseAddrPort plus the zone lookup: `a.b.c.d:port` or `[v6%zone]:port`.

    Returns the host as Peer.set_endpoint takes it: canonical text, with
    "%<scope id>" when the zone names one, and the port."""
    colon = text.rfind(":")
    if colon < 0:
        raise _invalid("not an ip:port")
    host, port_text = text[:colon], text[colon + 1 :]
    if not host or not port_text:
        raise _invalid("not an ip:port")
    bracketed = host.startswith("[")
    if bracketed:
        if len(host) < 2 or not host.endswith("]"):
            raise _invalid("missing ']' after an IPv6 address")
        host = host[1:-1]
    port = parse_uint(port_text, 16)
    address, zone = parse_addr(host)
    if bracketed != (len(address) == 16):
        raise _invalid("brackets go around IPv6 addresses only")
    scope = _scope_id(zone) if zone else 0
    return format_addr(address) + (f"%{scope}" if scope else ""), port


def format_endpoint(host: str, port: int) -> str:
    """An endpoint as `get` shows it: without the zone, IPv6 in brackets."""
    address, _zone = parse_addr(host)
    if len(address) == 4:
        return f"{format_addr(address)}:{port}"
    return f"[{format_addr(address)}]:{port}"


# -- get ----------------------------------------------------------------------------


def handle_get(device) -> bytearray:
    """The body of a `get` reply: key=value lines, each ending in "\\n".

    Device keys come first, each omitted when unset; then per peer, every key,
    the endpoint only when known, and its allowed IPs, whose lines the data
    plane writes (a million of them take a fraction of a second)."""
    body = bytearray()
    with device.lock:
        lines = []
        if device.private_key is not None:
            lines.append(f"private_key={device.private_key.hex()}\n")
        if device.listen_port:
            lines.append(f"listen_port={device.listen_port}\n")
        if device.fwmark:
            lines.append(f"fwmark={device.fwmark}\n")
        body += "".join(lines).encode("ascii")
        for peer in device.peers():
            endpoint = peer.endpoint
            seconds, nanoseconds = peer.last_handshake
            body += (
                f"public_key={peer.public_key.hex()}\n"
                f"preshared_key={peer.preshared_key.hex()}\n"
                "protocol_version=1\n"
                + ("" if endpoint is None else f"endpoint={format_endpoint(*endpoint)}\n")
                + f"last_handshake_time_sec={seconds}\n"
                f"last_handshake_time_nsec={nanoseconds}\n"
                f"tx_bytes={peer.tx_bytes}\n"
                f"rx_bytes={peer.rx_bytes}\n"
                f"persistent_keepalive_interval={peer.persistent_keepalive}\n"
            ).encode("ascii")
            peer.format_allowed_ips(body)
    return body


# -- wgc_get_counters ----------------------------------------------------------------

COUNTERS_OPERATION = b"wgc_get_counters=1"


def handle_counters(device) -> bytearray:
    """The body of a `wgc_get_counters` reply: the device's figures, then
    each peer's after its public_key line, each in the catalogue's order.
    The snapshot is taken under the device's lock, formatted outside it."""
    snapshot = device.snapshot()
    lines = [f"{figure.name}={counters.format_value(snapshot.values[figure.name])}\n" for figure in counters.DEVICE]
    for peer in snapshot.peers:
        lines.append(f"public_key={peer.public_key.hex()}\n")
        lines += [f"{figure.name}={counters.format_value(peer.values[figure.name])}\n" for figure in counters.PEER]
    return bytearray("".join(lines).encode("ascii"))


# -- set ----------------------------------------------------------------------------


def _require_true(value: str) -> None:
    if value != "true":
        raise _invalid("takes only 'true'")


class _SetRequest:
    """The state of one `set` request: device keys until the first public_key,
    then keys for the peer that line names.

    A peer section may be a dummy: our own public key, a peer that update_only
    kept from being created, or one just removed.  Its lines are still parsed
    and refused when malformed, but change nothing."""

    def __init__(self, device):
        self.device = device
        self.in_peer_section = False
        self.peer = None  # the Peer being configured; None in a dummy section
        self.created = False  # whether this request created self.peer

    def line(self, raw: bytes) -> None:
        """Applies one line of the request (without its line end); raises
        UAPIError, also for a failure the protocol has no errno for."""
        line = raw.decode("latin-1")  # Go compares bytes; Latin-1 maps each byte to one character and back
        key, equals, value = line.partition("=")
        if not equals:
            raise UAPIError(ERRNO_PROTOCOL, f"failed to parse a line {_shown(line)}: no '='")
        try:
            self.apply(key, value)
        except UAPIError:
            raise
        except Exception as error:
            log_failure(self.device.log, f"IPC error {ERRNO_UNKNOWN} on a line with key {_shown(key)}", error)
            raise _LoggedFailure(ERRNO_UNKNOWN, "") from None

    def collects(self) -> int:
        """What wgc._uapi_set may do with the `allowed_ip=` lines it parses itself now."""
        if not self.in_peer_section:
            return _uapi_set.TO_HANDLER
        return _uapi_set.VALIDATE if self.peer is None else _uapi_set.COLLECT

    def add_allowed_ips(self, records: bytes) -> None:
        """Prefixes wgc._uapi_set parsed from this peer's `allowed_ip=` lines
        (it calls this only while collects() says COLLECT: there is a peer)."""
        assert self.peer is not None
        self.peer.add_allowed_ips(records)

    def apply(self, key: str, value: str) -> None:
        handler: _SetRequest._Handler | None
        if key == "public_key":
            handler = _SetRequest._select_peer
        elif self.in_peer_section:
            handler = self._PEER_KEYS.get(key)
            if handler is None:
                raise _invalid(f"invalid UAPI peer key {_shown(key)}")
        else:
            handler = self._DEVICE_KEYS.get(key)
            if handler is None:
                raise _invalid(f"invalid UAPI device key {_shown(key)}")
        try:
            handler(self, value)
        except UAPIError as error:
            # The key is one of ours here, so naming it shows nothing of the request.
            raise UAPIError(error.errno, f"{key}: {error}") from None

    # device keys

    def _private_key(self, value: str) -> None:
        key = parse_key(value)
        # Stored clamped, as wireguard-go and the kernel do; zeros clear it.
        self.device.set_private_key(None if key == _ZERO_KEY else clamp(key))

    def _listen_port(self, value: str) -> None:
        port = parse_uint(value, 16)
        try:
            self.device.set_listen_port(port)
        except OSError as error:
            raise UAPIError(ERRNO_PORT_IN_USE, f"failed to set listen_port: {error}") from None

    def _fwmark(self, value: str) -> None:
        mark = parse_uint(value, 32)
        try:
            self.device.set_fwmark(mark)
        except OSError as error:
            raise UAPIError(ERRNO_PORT_IN_USE, f"failed to update fwmark: {error}") from None

    def _replace_peers(self, value: str) -> None:
        _require_true(value)
        self.device.remove_all_peers()

    # peer keys

    def _select_peer(self, value: str) -> None:
        self.in_peer_section = True
        public_key = parse_key(value)
        self.peer, self.created = None, False
        # wireguard-go compares with its own public key, all zeros until a
        # private key is first set; a peer with our own key is ignored.
        if public_key == (self.device.public_key or _ZERO_KEY):
            return
        self.peer = self.device.peer(public_key)
        if self.peer is None:
            try:
                self.peer = self.device.add_peer(public_key)
            except PeerLimitError as error:
                raise _invalid(f"failed to create new peer: {error}") from None
            self.created = True

    def _update_only(self, value: str) -> None:
        _require_true(value)
        if self.created and self.peer is not None:
            self.device.remove_peer(self.peer.public_key)
            self.peer = None

    def _remove(self, value: str) -> None:
        _require_true(value)
        if self.peer is not None:
            self.device.remove_peer(self.peer.public_key)
            self.peer = None

    def _preshared_key(self, value: str) -> None:
        key = parse_key(value)
        if self.peer is not None:
            self.peer.set_preshared_key(key)

    def _endpoint(self, value: str) -> None:
        host, port = parse_endpoint(value)
        if self.peer is not None:
            try:
                self.peer.set_endpoint(host, port)
            except ValueError as error:
                raise _invalid(f"failed to set endpoint: {error}") from None
            self.peer.set_endpoint_name(None)

    def _endpoint_name(self, value: str) -> None:
        try:
            name = parse_endpoint_name(value)
        except ValueError as error:
            raise _invalid(str(error)) from None
        if self.peer is not None:
            self.peer.set_endpoint_name(name)

    def _persistent_keepalive_interval(self, value: str) -> None:
        seconds = parse_uint(value, 16)
        if self.peer is not None:
            self.peer.set_persistent_keepalive(seconds)

    def _replace_allowed_ips(self, value: str) -> None:
        _require_true(value)
        if self.peer is not None:
            self.peer.clear_allowed_ips()

    def _allowed_ip(self, value: str) -> None:
        # wireguard-go v0.0.20220316 has no "-prefix" removal: it is a malformed prefix.
        address, cidr = parse_prefix(value)
        if self.peer is not None:
            self.peer.add_allowed_ip(address, cidr)

    def _protocol_version(self, value: str) -> None:
        if value != "1":
            raise _invalid("protocol version other than 1")

    _Handler = Callable[["_SetRequest", str], None]
    _DEVICE_KEYS: ClassVar[dict[str, _Handler]] = {
        "private_key": _private_key,
        "listen_port": _listen_port,
        "fwmark": _fwmark,
        "replace_peers": _replace_peers,
    }
    _PEER_KEYS: ClassVar[dict[str, _Handler]] = {
        "update_only": _update_only,
        "remove": _remove,
        "preshared_key": _preshared_key,
        "endpoint": _endpoint,
        "endpoint_name": _endpoint_name,
        "persistent_keepalive_interval": _persistent_keepalive_interval,
        "replace_allowed_ips": _replace_allowed_ips,
        "allowed_ip": _allowed_ip,
        "protocol_version": _protocol_version,
    }


def handle_set(device, body: bytes) -> int:
    """Applies the lines of a `set` request (without the "set=1" line, each
    ending in "\\n") up to the first blank line; returns 0 or the negative
    errno of the first line refused.  Not transactional: the lines before a
    refused one stay applied, the ones after it are ignored.  Errors go to
    the device's log."""
    with device.lock:
        try:
            _uapi_set.apply_lines(body, _SetRequest(device))
        except UAPIError as error:
            if not isinstance(error, _LoggedFailure):
                device.log.error("IPC error %d: %s", error.errno, error)
            return error.errno
    return 0


# -- the connection -----------------------------------------------------------------

# What Session.step() waits for when it returns.
INPUT = "input"  # more bytes, or the end of the stream
ROOM = "room"  # leave to build a `get` reply, whose size is known only once built


class _LineTooLong(Exception):
    pass


class _LineReader:
    """Lines from bytes fed as they arrive, holding at most MAX_LINE bytes of one line.

    The reading methods are generators: they yield INPUT when they need more
    than has been fed, and go on once more (or the end) has been."""

    def __init__(self):
        self._buffer = bytearray()
        self._start = 0  # first unread byte of _buffer
        self._at_eof = False

    def feed(self, data: bytes) -> None:
        """More of the stream; b"" for its end."""
        if not data:
            self._at_eof = True
            return
        del self._buffer[: self._start]
        self._start = 0
        self._buffer += data

    def buffered(self) -> int:
        return len(self._buffer) - self._start

    def more(self):
        """Waits for the next feed; False once the stream has ended."""
        if self._at_eof:
            return False
        yield INPUT
        return True

    def read_line(self):
        """The next line without its "\\n", and whether a "\\n" ended it (False
        when the stream ended first); None when nothing is left.

        A line of MAX_LINE bytes or more without its "\\n" raises _LineTooLong
        after consuming its first MAX_LINE bytes, as Go's bufio.Scanner does:
        reading then goes on from there."""
        scanned = 0  # bytes after _start already searched for "\n"
        while True:
            limit = self._start + MAX_LINE
            newline = self._buffer.find(b"\n", self._start + scanned, limit)
            if newline >= 0:
                line = bytes(self._buffer[self._start : newline])
                self._start = newline + 1
                return line, True
            if len(self._buffer) >= limit:
                self._start = limit
                raise _LineTooLong
            scanned = len(self._buffer) - self._start
            if not (yield from self.more()):
                if scanned == 0:
                    return None
                line = bytes(self._buffer[self._start :])
                self._start = len(self._buffer)
                return line, False

    def take_lines(self, into: bytearray | None) -> int:
        """Moves the complete lines of a `set` request that are buffered to
        into (None: drops them) and says what stopped it: _uapi_set's
        LINES_BLANK (the blank line ending the request, consumed),
        LINES_MORE (more input is needed) or LINES_LONG (a line too long
        comes next: read_line raises _LineTooLong for it).  Line ends and
        "\\r"s stay in the text, as wgc._uapi_set reads it."""
        stop, resume, what = _uapi_set.scan_lines(self._buffer, self._start, MAX_LINE)
        if into is not None:
            with memoryview(self._buffer) as view:
                into += view[self._start : stop]
        self._start = resume
        return what

    def take_rest(self) -> bytes:
        """Whatever is left unread (at the end of the stream: a last line without its "\\n")."""
        rest = bytes(self._buffer[self._start :])
        self._start = len(self._buffer)
        return rest

    def skip_line(self):
        """Discards input up to and including the next "\\n", or to the end."""
        while True:
            newline = self._buffer.find(b"\n", self._start)
            if newline >= 0:
                self._start = newline + 1
                return
            self._start = len(self._buffer)
            if not (yield from self.more()):
                return

    def read_byte(self):
        while self._start == len(self._buffer):
            if not (yield from self.more()):
                return None
        byte = self._buffer[self._start]
        self._start += 1
        return byte


class Session:
    """One connection's side of the protocol, with no I/O of its own.

    The owner of the socket feeds it the bytes that arrive (b"" for the end
    of the stream) and calls step(), which runs the protocol until it waits
    for INPUT, asks for ROOM before building a `get` reply, or returns None:
    the connection is done and closes once `output` is sent.  Replies are
    appended to `output`, for the owner to send.  Nothing of a request is
    applied before the whole of it is in, so a slow client holds nothing but
    its own bytes: no thread, no lock.
    """

    def __init__(self, device):
        self.device = device
        self.output = bytearray()
        self._reader = _LineReader()
        self._pending = 0  # bytes of the lines of the `set` request being read
        self._between_requests = True
        self._steps = self._converse()

    def feed(self, data: bytes) -> None:
        self._reader.feed(data)

    def step(self):
        return next(self._steps, None)

    def held(self) -> int:
        """Input bytes held: unread ones and the lines of a request being read."""
        return self._reader.buffered() + self._pending

    def idle(self) -> bool:
        """Whether it waits for a new request with nothing of it in hand."""
        return self._between_requests and not self._reader.buffered() and not self.output

    def _reply(self, body: bytes | bytearray, status: int) -> None:
        if not self.output and isinstance(body, bytearray):
            self.output = body  # a reply's own buffer (a get's may be 30 MB): taken, not copied
        else:
            self.output += body
        self.output += f"errno={status}\n\n".encode("ascii")

    def _converse(self):
        log = self.device.log
        reader = self._reader
        while True:
            self._between_requests = True
            try:
                item = yield from reader.read_line()
            except _LineTooLong:
                # Not an operation; like wireguard-go, close once its "\n" is in.
                yield from reader.skip_line()
                log.error("invalid UAPI operation: a line of more than %d bytes", MAX_LINE)
                return
            self._between_requests = False
            if item is None or not item[1]:
                return
            operation = item[0]
            if operation == b"set=1":
                lines, status = yield from self._read_set_request()
                if lines is not None:
                    status = handle_set(self.device, lines) or status
                self._reply(b"", status)
            elif operation in (b"get=1", COUNTERS_OPERATION):
                # Both are answered with lines built from the device's state.
                what = "get" if operation == b"get=1" else "wgc_get_counters"
                following = yield from reader.read_byte()
                if following is None:
                    return
                if following != ord("\n"):
                    log.error("IPC error %d: trailing character in UAPI %s: %r", ERRNO_INVALID, what,
                              chr(following))
                    self._reply(b"", ERRNO_INVALID)
                    continue
                yield ROOM
                try:
                    build = handle_get if what == "get" else handle_counters
                    body, status = build(self.device), 0
                except Exception as error:
                    log_failure(log, f"IPC error {ERRNO_UNKNOWN} in {what}", error)
                    body, status = bytearray(), ERRNO_UNKNOWN
                self._reply(body, status)
            else:
                log.error("invalid UAPI operation %s", _shown(operation.decode("latin-1")))
                return

    def _read_set_request(self):
        """The lines of a `set` request up to its blank line or the end of the
        stream, and ERRNO_IO when a line too long ended it early instead; or
        None and ERRNO_TOO_BIG when its lines hold more than MAX_REQUEST
        bytes (the rest is then read and dropped).

        The whole request is read before any of it is applied, so that a slow
        client never holds the device lock; wg(8) sends a whole configuration
        (a million lines and more) in one request.  It is held as one buffer
        while it arrives, whole lines moved over as they come."""
        reader = self._reader
        text: bytearray | None = bytearray()
        status = 0
        while True:
            what = reader.take_lines(text)
            if text is not None:
                self._pending = len(text)
                if self._pending > MAX_REQUEST:
                    self.device.log.error("IPC error %d: a set request of more than %d bytes, not applied",
                                          ERRNO_TOO_BIG, MAX_REQUEST)
                    text, status = None, ERRNO_TOO_BIG
                    self._pending = 0
            if what == _uapi_set.LINES_BLANK:
                break
            if what == _uapi_set.LINES_LONG:
                try:
                    yield from reader.read_line()
                except _LineTooLong:
                    status = status or ERRNO_IO
                    break
            if not (yield from reader.more()):
                if text is not None:
                    text += reader.take_rest()
                else:
                    reader.take_rest()
                break
        self._pending = 0
        return text, status
