"""The UAPI text protocol: how wg(8) configures a userspace WireGuard device.

A connection to /var/run/wireguard/IFACE.sock carries requests one after
another (https://www.wireguard.com/xplatform/#configuration-protocol):

    get=1\\n\\n                     -> key=value lines, then errno=0\\n\\n
    set=1\\nkey=value\\n ... \\n     -> errno=N\\n\\n  (0, or a negative errno)

Any other operation line closes the connection without a reply.

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
"""
import errno
import logging
import re
import socket
import struct

from wgc._crypto import clamp
from wgc.device import PeerLimitError

log = logging.getLogger(__name__)

# The errno values a `set` can answer, as wireguard-go's ipc package names them.
ERRNO_IO = -errno.EIO  # a request line longer than MAX_LINE
ERRNO_PROTOCOL = -errno.EPROTO  # a line without "="
ERRNO_INVALID = -errno.EINVAL  # unknown key, malformed value, too many peers
ERRNO_PORT_IN_USE = -errno.EADDRINUSE  # the UDP sockets could not be rebound or marked
ERRNO_UNKNOWN = -errno.ENOANO  # anything else (wireguard-go's "other UAPI error", -55)

# Go's bufio.Scanner holds at most 64 KiB: a `set` line and its "\n" must fit.
MAX_LINE = 65536
_RECV_SIZE = 65536

_ZERO_KEY = bytes(32)
_V4_IN_V6 = bytes(10) + b"\xff\xff"


class UAPIError(Exception):
    """A request the protocol refuses; `errno` is the negative value to reply."""

    def __init__(self, errno_value: int, message: str):
        super().__init__(message)
        self.errno = errno_value


def _invalid(message: str) -> UAPIError:
    return UAPIError(ERRNO_INVALID, message)


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
        raise _invalid(f"invalid number {text!r}")
    value = _decimal(text)
    if value >> bits:
        raise _invalid(f"number {text!r} out of range")
    return value


def _parse_atoi(text: str) -> int:
    """strconv.Atoi(text): like parse_uint but with an optional sign."""
    if not _SIGNED_DIGITS.match(text):
        raise _invalid(f"invalid number {text!r}")
    value = _decimal(text[1:] if text[0] in "+-" else text)
    return -value if text[0] == "-" else value


def parse_key(text: str) -> bytes:
    """A 32-byte key in hex, either case."""
    if not _HEX_KEY.match(text):
        raise _invalid(f"invalid key {text!r}")
    return bytes.fromhex(text)


# -- addresses, as Go's net/netip parses and prints them ------------------------

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}\Z")
_ADDRESS_KIND = re.compile(r"[.:%]")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _parse_ipv4(text: str) -> bytes:
    # Four decimal octets, none above 255 and none with a leading zero.
    if not _IPV4.match(text):
        raise _invalid(f"invalid IPv4 address {text!r}")
    return socket.inet_pton(socket.AF_INET, text)


def _parse_ipv6(text: str) -> tuple[bytes, str]:
    address, percent, zone = text.partition("%")
    if percent and not zone:
        raise _invalid(f"empty zone in {text!r}")
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
                raise _invalid(f"IPv6 group above 0xffff in {text!r}")
            pos += 1
        if pos == start:
            raise _invalid(f"empty IPv6 group in {text!r}")
        if pos < end and address[pos] == ".":
            # A dotted IPv4 tail takes the place of the last two groups.
            if (ellipsis < 0 and filled != 12) or filled + 4 > 16:
                raise _invalid(f"misplaced IPv4 part in {text!r}")
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
            raise _invalid(f"malformed IPv6 address {text!r}")
        pos += 1
        if address[pos] == ":":
            if ellipsis >= 0:
                raise _invalid(f"two '::' in {text!r}")
            ellipsis = filled
            pos += 1
            if pos == end:
                break
    if pos != end:
        raise _invalid(f"trailing characters in {text!r}")
    if filled < 16:
        if ellipsis < 0:
            raise _invalid(f"IPv6 address too short: {text!r}")
        tail = bytes(ip[ellipsis:filled])
        ip[ellipsis:] = bytes(16 - ellipsis - len(tail)) + tail
    elif ellipsis >= 0:
        raise _invalid(f"'::' stands for no group in {text!r}")
    return bytes(ip), zone


def parse_addr(text: str) -> tuple[bytes, str]:
    """netip.ParseAddr: (4 or 16 packed bytes, IPv6 zone or "").

    IPv4-mapped IPv6 addresses stay IPv6, as in Go."""
    kind = _ADDRESS_KIND.search(text)
    if kind is None or kind.group() == "%":
        raise _invalid(f"not an IP address: {text!r}")
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
        raise _invalid(f"no '/' in prefix {text!r}")
    address, zone = parse_addr(text[:slash])
    if zone:
        raise _invalid(f"zone in prefix {text!r}")
    bits = _parse_atoi(text[slash + 1 :])
    if not 0 <= bits <= 8 * len(address):
        raise _invalid(f"prefix length out of range in {text!r}")
    return address, bits


def _scope_id(zone: str) -> int:
    # wireguard-go resolves a zone as an interface name first, then as a number.
    try:
        return socket.if_nametoindex(zone.encode("latin-1"))
    except (OSError, ValueError):
        return parse_uint(zone, 32)


def parse_endpoint(text: str) -> tuple[str, int]:
    """netip.ParseAddrPort plus the zone lookup: `a.b.c.d:port` or `[v6%zone]:port`.

    Returns the host as Peer.set_endpoint takes it: canonical text, with
    "%<scope id>" when the zone names one, and the port."""
    colon = text.rfind(":")
    if colon < 0:
        raise _invalid(f"not an ip:port: {text!r}")
    host, port_text = text[:colon], text[colon + 1 :]
    if not host or not port_text:
        raise _invalid(f"not an ip:port: {text!r}")
    bracketed = host.startswith("[")
    if bracketed:
        if len(host) < 2 or not host.endswith("]"):
            raise _invalid(f"missing ']' in {text!r}")
        host = host[1:-1]
    port = parse_uint(port_text, 16)
    address, zone = parse_addr(host)
    if bracketed != (len(address) == 16):
        raise _invalid(f"brackets go around IPv6 addresses only: {text!r}")
    scope = _scope_id(zone) if zone else 0
    return format_addr(address) + (f"%{scope}" if scope else ""), port


def format_endpoint(host: str, port: int) -> str:
    """An endpoint as `get` shows it: without the zone, IPv6 in brackets."""
    address, _zone = parse_addr(host)
    if len(address) == 4:
        return f"{format_addr(address)}:{port}"
    return f"[{format_addr(address)}]:{port}"


# -- get ----------------------------------------------------------------------------


def handle_get(device) -> str:
    """The body of a `get` reply: key=value lines, each ending in "\\n".

    Device keys come first, each omitted when unset; then per peer, every key,
    the endpoint only when known."""
    lines = []
    with device.lock:
        if device.private_key is not None:
            lines.append(f"private_key={device.private_key.hex()}")
        if device.listen_port:
            lines.append(f"listen_port={device.listen_port}")
        if device.fwmark:
            lines.append(f"fwmark={device.fwmark}")
        for peer in device.peers():
            lines.append(f"public_key={peer.public_key.hex()}")
            lines.append(f"preshared_key={peer.preshared_key.hex()}")
            lines.append("protocol_version=1")
            endpoint = peer.endpoint
            if endpoint is not None:
                lines.append(f"endpoint={format_endpoint(*endpoint)}")
            seconds, nanoseconds = peer.last_handshake
            lines.append(f"last_handshake_time_sec={seconds}")
            lines.append(f"last_handshake_time_nsec={nanoseconds}")
            lines.append(f"tx_bytes={peer.tx_bytes}")
            lines.append(f"rx_bytes={peer.rx_bytes}")
            lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive}")
            for address, cidr in peer.allowed_ips():
                lines.append(f"allowed_ip={format_addr(address)}/{cidr}")
    return "".join(line + "\n" for line in lines)


# -- set ----------------------------------------------------------------------------


def _require_true(key: str, value: str) -> None:
    if value != "true":
        raise _invalid(f"{key} takes only 'true', not {value!r}")


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

    def apply(self, key: str, value: str) -> None:
        if key == "public_key":
            self._select_peer(value)
            return
        if self.in_peer_section:
            handler = self._PEER_KEYS.get(key)
            if handler is None:
                raise _invalid(f"invalid UAPI peer key: {key!r}")
        else:
            handler = self._DEVICE_KEYS.get(key)
            if handler is None:
                raise _invalid(f"invalid UAPI device key: {key!r}")
        handler(self, value)

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
        _require_true("replace_peers", value)
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
        _require_true("update_only", value)
        if self.created and self.peer is not None:
            self.device.remove_peer(self.peer.public_key)
            self.peer = None

    def _remove(self, value: str) -> None:
        _require_true("remove", value)
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
                raise _invalid(f"failed to set endpoint {value!r}: {error}") from None

    def _persistent_keepalive_interval(self, value: str) -> None:
        seconds = parse_uint(value, 16)
        if self.peer is not None:
            self.peer.set_persistent_keepalive(seconds)

    def _replace_allowed_ips(self, value: str) -> None:
        _require_true("replace_allowed_ips", value)
        if self.peer is not None:
            self.peer.clear_allowed_ips()

    def _allowed_ip(self, value: str) -> None:
        # wireguard-go v0.0.20220316 has no "-prefix" removal: it is a malformed prefix.
        address, cidr = parse_prefix(value)
        if self.peer is not None:
            self.peer.add_allowed_ip(address, cidr)

    def _protocol_version(self, value: str) -> None:
        if value != "1":
            raise _invalid(f"invalid protocol version: {value!r}")

    _DEVICE_KEYS = {
        "private_key": _private_key,
        "listen_port": _listen_port,
        "fwmark": _fwmark,
        "replace_peers": _replace_peers,
    }
    _PEER_KEYS = {
        "update_only": _update_only,
        "remove": _remove,
        "preshared_key": _preshared_key,
        "endpoint": _endpoint,
        "persistent_keepalive_interval": _persistent_keepalive_interval,
        "replace_allowed_ips": _replace_allowed_ips,
        "allowed_ip": _allowed_ip,
        "protocol_version": _protocol_version,
    }


def _text(line) -> str:
    # Go compares bytes; Latin-1 maps each byte to one character and back.
    return line.decode("latin-1") if isinstance(line, (bytes, bytearray)) else line


def handle_set(device, lines) -> int:
    """Applies the lines of a `set` request (without the "set=1" line and
    without line ends) up to the first blank line; returns 0 or the negative
    errno of the first line refused.  Not transactional: the lines before a
    refused one stay applied, the ones after it are ignored."""
    with device.lock:
        request = _SetRequest(device)
        for raw in lines:
            line = _text(raw)
            if not line:
                break
            key, equals, value = line.partition("=")
            try:
                if not equals:
                    raise UAPIError(ERRNO_PROTOCOL, f"failed to parse line {line!r}")
                request.apply(key, value)
            except UAPIError as error:
                log.error("IPC error %d: %s", error.errno, error)
                return error.errno
            except Exception:
                log.exception("IPC error %d: unexpected failure on %r", ERRNO_UNKNOWN, line)
                return ERRNO_UNKNOWN
    return 0


# -- the connection -----------------------------------------------------------------


class _LineTooLong(Exception):
    pass


class _LineReader:
    """Lines from a stream socket, holding at most MAX_LINE bytes of one line."""

    def __init__(self, conn: socket.socket):
        self._conn = conn
        self._buffer = bytearray()
        self._start = 0  # first unread byte of _buffer
        self._at_eof = False

    def _fill(self) -> bool:
        """Reads more from the socket; False once the peer has stopped sending."""
        if self._at_eof:
            return False
        del self._buffer[: self._start]
        self._start = 0
        data = self._conn.recv(_RECV_SIZE)
        if not data:
            self._at_eof = True
            return False
        self._buffer += data
        return True

    def read_line(self) -> tuple[bytes, bool] | None:
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
            if not self._fill():
                if scanned == 0:
                    return None
                line = bytes(self._buffer[self._start :])
                self._start = len(self._buffer)
                return line, False

    def skip_line(self) -> None:
        """Discards input up to and including the next "\n", or to the end."""
        while True:
            newline = self._buffer.find(b"\n", self._start)
            if newline >= 0:
                self._start = newline + 1
                return
            self._start = len(self._buffer)
            if not self._fill():
                return

    def read_byte(self) -> int | None:
        if self._start == len(self._buffer) and not self._fill():
            return None
        byte = self._buffer[self._start]
        self._start += 1
        return byte


def _read_set_request(reader: _LineReader) -> tuple[list[bytes], int]:
    """The lines of a `set` request up to its blank line or the end of the
    stream, and ERRNO_IO when a line too long ended it early instead.

    The whole request is read before any of it is applied, so that a slow
    client never holds the device lock; wg(8) sends a whole configuration
    (100,000 lines and more) in one request."""
    lines = []
    while True:
        try:
            item = reader.read_line()
        except _LineTooLong:
            return lines, ERRNO_IO
        if item is None:
            return lines, 0
        line = item[0]
        if line.endswith(b"\r"):  # bufio.ScanLines drops one "\r" before the "\n"
            line = line[:-1]
        if not line:
            return lines, 0
        lines.append(line)


def _reply(conn: socket.socket, body: str, status: int) -> None:
    conn.sendall(f"{body}errno={status}\n\n".encode("ascii"))


def serve_connection(device, conn: socket.socket) -> None:
    """Answers requests on a connected UAPI stream socket until the client
    closes it or sends an unknown operation; then closes it."""
    reader = _LineReader(conn)
    try:
        while True:
            try:
                item = reader.read_line()
            except _LineTooLong:
                # Not an operation; like wireguard-go, close once its "\n" is in.
                reader.skip_line()
                log.error("invalid UAPI operation: a line of more than %d bytes", MAX_LINE)
                return
            if item is None or not item[1]:
                return
            operation = item[0]
            if operation == b"set=1":
                lines, read_status = _read_set_request(reader)
                status = handle_set(device, lines)
                _reply(conn, "", status or read_status)
            elif operation == b"get=1":
                following = reader.read_byte()
                if following is None:
                    return
                if following != ord("\n"):
                    log.error("IPC error %d: trailing character in UAPI get: %r", ERRNO_INVALID, chr(following))
                    _reply(conn, "", ERRNO_INVALID)
                    continue
                try:
                    body, status = handle_get(device), 0
                except Exception:
                    log.exception("IPC error %d: get failed", ERRNO_UNKNOWN)
                    body, status = "", ERRNO_UNKNOWN
                _reply(conn, body, status)
            else:
                log.error("invalid UAPI operation: %r", operation)
                return
    except OSError as error:
        log.debug("UAPI connection ended: %s", error)
    finally:
        conn.close()
