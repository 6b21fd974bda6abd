"""wg(8)'s configuration input: `wg set` arguments and configuration files.

Parsing follows wireguard-tools 1.0.20210914 so that the built-in `wg` takes
and refuses the same input with the same messages: keys in base64, key files
of exactly one key, ports through getaddrinfo (service names work), fwmarks
in decimal or 0x-hex, "off", allowed IPs through inet_pton, endpoints through
getaddrinfo with retries on temporary failures.  Messages go to `err`; a
parse failure returns None.
"""
from __future__ import annotations

import _socket  # socket.py's own import makes enums and selectors: most of what `wg show` cost
import errno
import os
import time

from wgc.control.model import (
    CANONICAL_PREFIXES,
    ZERO_KEY,
    AllowedIP,
    DeviceConfig,
    Endpoint,
    PeerConfig,
    allowed_ip_of_text,
    ipv4_allowed_ips_of_texts,
    key_from_base64,
    split_endpoint,
)

_SPACE = " \t\n\v\f\r"
_DROP_SPACE = str.maketrans("", "", _SPACE)
_DIGITS = "0123456789"
_HEX = "0123456789abcdefABCDEF"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
KEY_BASE64_LEN = 44


def ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def c_string(text: str) -> str:
    """What C sees of a string: everything before the first NUL."""
    return text.split("\0", 1)[0]


class Draft:
    """A configuration being read: wg(8)'s struct wgdevice with its flags."""

    def __init__(self):
        self.private_key: bytes | None = None
        self.listen_port: int | None = None
        self.fwmark: int | None = None
        self.replace_peers = False
        self.peers: list[PeerDraft] = []

    def to_config(self) -> DeviceConfig:
        return DeviceConfig(private_key=self.private_key, listen_port=self.listen_port, fwmark=self.fwmark,
                            peers=[peer.to_config() for peer in self.peers])


class PeerDraft:
    def __init__(self):
        self.public_key: bytes | None = None
        self.remove = False
        self.preshared_key: bytes | None = None
        self.endpoint: Endpoint | None = None
        self.endpoint_name: str | None = None
        self.persistent_keepalive_interval: int | None = None
        self.replace_allowed_ips = False
        self.allowed_ips: list[AllowedIP] = []

    def to_config(self) -> PeerConfig:
        return PeerConfig(public_key=self.public_key or ZERO_KEY, remove=self.remove,
                          preshared_key=self.preshared_key, endpoint=self.endpoint,
                          endpoint_name=self.endpoint_name,
                          persistent_keepalive_interval=self.persistent_keepalive_interval,
                          replace_allowed_ips=self.replace_allowed_ips, allowed_ips=list(self.allowed_ips))


def endpoint_name(value: str, endpoint: Endpoint | None) -> str | None:
    """HOST:PORT (the port as resolved) when the endpoint value endpoint was
    resolved from names a host rather than an address, else None."""
    if endpoint is None:
        return None
    host = split_endpoint(c_string(value))[0]
    # A colon, or a last label that does not start with a letter: an address, never a host
    # name.  Only what may be a name is held against reresolve's pattern: importing
    # reresolve brings re, logging and threads, which `wg set` otherwise never needs.
    if ":" in host or not host.rstrip(".").rpartition(".")[2][:1].isalpha():
        return None
    from wgc.reresolve import is_host_name

    return f"{host}:{endpoint.port}" if is_host_name(host) else None


class Parser:
    def __init__(self, err):
        self.err = err  # writes one message (with its "\n")

    # -- values -------------------------------------------------------------------

    def key(self, value: str) -> bytes | None:
        try:
            return key_from_base64(c_string(value))
        except ValueError:
            self.err(f"Key is not the correct length or format: `{c_string(value)}'\n")
            return None

    def keyfile(self, path: str) -> bytes | None:
        """A key file: one base64 key, optionally followed by whitespace.  An
        empty regular file (or /dev/null) is the zero key, which clears."""
        try:
            fd = os.open(c_string(path), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            self.err(f"fopen: {os.strerror(error.errno or errno.EIO)}\n")
            return None
        try:
            data, failed = _read_some(fd, KEY_BASE64_LEN)
            if len(data) < KEY_BASE64_LEN:
                if not data and not failed and _position(fd) == 0:
                    return ZERO_KEY
                self.err("Invalid length key in key file\n")
                return None
            while True:  # only whitespace may follow the key
                rest, failed = _read_some(fd, 4096, stop_at_non_space=True)
                for byte in rest:
                    if chr(byte) not in _SPACE:
                        self.err(f"Found trailing character in key file: `{_raw(byte)}'\n")
                        return None
                if not rest or failed:
                    break
            if failed:
                self.err(f"getc: {os.strerror(failed)}\n")
                return None
            return self.key(data.decode("utf-8", "surrogateescape"))
        finally:
            os.close(fd)

    def port(self, value: str) -> int | None:
        value = c_string(value)
        if not value:
            self.err("Unable to parse empty port\n")
            return None
        try:
            sockaddr = _socket.getaddrinfo(
                None, os.fsencode(value), _socket.AF_UNSPEC, _socket.SOCK_DGRAM, _socket.IPPROTO_UDP, _socket.AI_PASSIVE
            )[0][4]
        except OSError as error:
            self.err(f"{error.strerror}: `{value}'\n")
            return None
        # (glibc's getaddrinfo answers with IPv4 and IPv6 addresses only, so wg's
        # "Neither IPv4 nor IPv6 address found" cannot happen here.)
        return int(sockaddr[1])

    def fwmark(self, value: str) -> int | None:
        value = c_string(value)
        if ascii_lower(value) == "off":
            return 0
        number = _strtoul(value, 16 if len(value) > 2 and value.startswith("0x") else 10)
        if number is None or number > 0xFFFFFFFF:
            self.err(f"Fwmark is neither 0/off nor 0-0xffffffff: `{value}'\n")
            return None
        return number

    def persistent_keepalive(self, value: str) -> int | None:
        value = c_string(value)
        if ascii_lower(value) == "off":
            return 0
        number = _strtoul(value, 10)
        if number is None or number > 65535:
            self.err(f"Persistent keepalive interval is neither 0/off nor 1-65535: `{value}'\n")
            return None
        return number

    def allowed_ips(self, peer: PeerDraft, value: str) -> bool:
        """Adds a comma-separated list to the peer.  A line may hold a million
        entries: IPv4 prefixes as wg(8) prints them, without host bits to warn
        about, are read in bulk; any other list one by one."""
        value = c_string(value)
        peer.replace_allowed_ips = True
        if not value:
            return True
        entries = value.split(",")
        bulk = ipv4_allowed_ips_of_texts(entries, shortest=32)  # (a shorter prefix may have host bits)
        if bulk is not None:
            peer.allowed_ips += bulk
            return True
        append = peer.allowed_ips.append
        for entry in entries:
            ip_text, slash, mask = entry.partition("/")
            family = _socket.AF_INET6 if ":" in ip_text else _socket.AF_INET
            try:
                packed = _socket.inet_pton(family, ip_text)
            except (OSError, ValueError):
                self.err(f"Unable to parse IP address: `{ip_text}'\n")
                return False
            bits = 32 if family == _socket.AF_INET else 128
            cidr = CANONICAL_PREFIXES.get(mask) if slash else bits
            if cidr is None:
                cidr = _strtoul(mask, 10)  # another spelling strtoul takes, such as 032
            if cidr is None or cidr > bits:
                self.err(f"AllowedIP is not in the correct format: `{entry}'\n")
                return False
            if cidr < bits and int.from_bytes(packed, "big") & ((1 << (bits - cidr)) - 1):
                # wg(8) prints "(null)" for a missing mask, which a nonzero host part cannot have.
                self.err(f"Warning: AllowedIP has nonzero host part: {ip_text}/{mask}\n")
            if family == _socket.AF_INET and slash and mask in CANONICAL_PREFIXES:
                append(allowed_ip_of_text(entry))  # inet_pton took it: inet_ntop prints it the same
            else:
                append(allowed_ip_of_text(f"{_socket.inet_ntop(family, packed)}/{cidr}"))
        return True

    def endpoint(self, value: str) -> Endpoint | None:
        value = c_string(value)
        if not value:
            self.err("Unable to parse empty endpoint\n")
            return None
        try:
            host, port = split_endpoint(value)
        except ValueError as missing:
            what = "matching brace" if missing.args == ("brace",) else "port"
            self.err(f"Unable to find {what} of endpoint: `{value}'\n")
            return None
        retries = _dns_retries(self.err)
        timeout = 1000000  # microseconds
        while True:
            try:
                family, _, _, _, sockaddr = _socket.getaddrinfo(os.fsencode(host), os.fsencode(port), _socket.AF_UNSPEC,
                                                                _socket.SOCK_DGRAM, _socket.IPPROTO_UDP)[0]
                break
            except _socket.gaierror as error:
                permanent = error.errno in (_socket.EAI_NONAME, _socket.EAI_FAIL, getattr(_socket, "EAI_NODATA", None))
                message = error.strerror
            except OSError as error:  # EAI_SYSTEM: Python raises the errno itself
                permanent, message = False, os.strerror(error.errno or errno.EIO)
            if permanent or retries == 0:
                self.err(f"{message}: `{value}'\n")
                return None
            if retries > 0:
                retries -= 1
            self.err(f"{message}: `{value}'. Trying again in {timeout / 1e6:.2f} seconds...\n")
            time.sleep(timeout / 1e6)
            timeout = min(20000000, timeout * 6 // 5)
        return Endpoint.from_sockaddr(family, sockaddr)

    # -- `wg set` arguments -------------------------------------------------------

    def command_line(self, args: list[str]) -> Draft | None:
        draft = Draft()
        peer: PeerDraft | None = None
        while args:
            word = args[0]
            has_value = len(args) >= 2
            if word == "listen-port" and has_value and peer is None:
                draft.listen_port = self.port(args[1])
                if draft.listen_port is None:
                    return None
            elif word == "fwmark" and has_value and peer is None:
                draft.fwmark = self.fwmark(args[1])
                if draft.fwmark is None:
                    return None
            elif word == "private-key" and has_value and peer is None:
                draft.private_key = self.keyfile(args[1])
                if draft.private_key is None:
                    return None
            elif word == "peer" and has_value:
                peer = PeerDraft()
                draft.peers.append(peer)
                peer.public_key = self.key(args[1])
                if peer.public_key is None:
                    return None
            elif word == "remove" and peer is not None:
                peer.remove = True
                args = args[1:]
                continue
            elif word == "endpoint" and has_value and peer is not None:
                peer.endpoint = self.endpoint(args[1])
                if peer.endpoint is None:
                    return None
                peer.endpoint_name = endpoint_name(args[1], peer.endpoint)
            elif word == "allowed-ips" and has_value and peer is not None:
                # Spaces anywhere in the list are dropped first ("a/8, b/8" is fine).
                if not self.allowed_ips(peer, c_string(args[1]).translate(_DROP_SPACE)):
                    return None
            elif word == "persistent-keepalive" and has_value and peer is not None:
                peer.persistent_keepalive_interval = self.persistent_keepalive(args[1])
                if peer.persistent_keepalive_interval is None:
                    return None
            elif word == "preshared-key" and has_value and peer is not None:
                peer.preshared_key = self.keyfile(args[1])
                if peer.preshared_key is None:
                    return None
            else:
                self.err(f"Invalid argument: {c_string(word)}\n")
                return None
            args = args[2:]
        return draft


class ConfigFile:
    """A configuration file read line by line, as `wg setconf` reads one."""

    def __init__(self, parser: Parser, append: bool):
        self.parser = parser
        self.draft = Draft()
        if not append:
            # setconf states everything: what the file leaves out is cleared.
            self.draft.replace_peers = True
            self.draft.private_key = ZERO_KEY
            self.draft.listen_port = 0
            self.draft.fwmark = 0
        self.section: str | None = None  # "interface" or "peer"

    def read_line(self, raw: str) -> bool:
        text = c_string(raw).split("#", 1)[0]
        line = text.translate(_DROP_SPACE)
        if not line:
            return True
        return self._process(line)

    def _value(self, line: str, key: str) -> str | None:
        prefix = key + "="
        if len(prefix) >= len(line) or ascii_lower(line[: len(prefix)]) != ascii_lower(prefix):
            return None
        return line[len(prefix):]

    def _process(self, line: str) -> bool:
        parser = self.parser
        lowered = ascii_lower(line) if line.startswith("[") else ""
        if lowered == "[interface]":
            self.section = "interface"
            return True
        if lowered == "[peer]":
            peer = PeerDraft()
            peer.replace_allowed_ips = True
            self.draft.peers.append(peer)
            self.section = "peer"
            return True
        if self.section == "interface":
            if (value := self._value(line, "ListenPort")) is not None:
                port = parser.port(value)
                if port is None:
                    return False
                self.draft.listen_port = port
                return True
            if (value := self._value(line, "FwMark")) is not None:
                mark = parser.fwmark(value)
                if mark is None:
                    return False
                self.draft.fwmark = mark
                return True
            if (value := self._value(line, "PrivateKey")) is not None:
                key = parser.key(value)
                if key is None:
                    return False
                self.draft.private_key = key
                return True
        elif self.section == "peer":
            peer = self.draft.peers[-1]
            if (value := self._value(line, "Endpoint")) is not None:
                peer.endpoint = parser.endpoint(value)
                peer.endpoint_name = endpoint_name(value, peer.endpoint)
                return peer.endpoint is not None
            if (value := self._value(line, "PublicKey")) is not None:
                key = parser.key(value)
                if key is None:
                    return False
                peer.public_key = key
                return True
            if (value := self._value(line, "AllowedIPs")) is not None:
                return parser.allowed_ips(peer, value)
            if (value := self._value(line, "PersistentKeepalive")) is not None:
                peer.persistent_keepalive_interval = parser.persistent_keepalive(value)
                return peer.persistent_keepalive_interval is not None
            if (value := self._value(line, "PresharedKey")) is not None:
                key = parser.key(value)
                if key is None:
                    return False
                peer.preshared_key = key
                return True
        parser.err(f"Line unrecognized: `{line}'\n")
        return False

    def finish(self) -> Draft | None:
        for peer in self.draft.peers:
            if peer.public_key is None:
                self.parser.err("A peer is missing a public key\n")
                return None
        return self.draft


# -- helpers ------------------------------------------------------------------------


def _raw(byte: int) -> str:
    return bytes([byte]).decode("utf-8", "surrogateescape")


def _strtoul(text: str, base: int) -> int | None:
    """strtoul on a value whose first character must be a digit, refusing
    trailing characters; 0x-prefixed hex when base is 16."""
    if not text or text[0] not in _DIGITS:
        return None
    digits = text[2:] if base == 16 else text
    alphabet = _HEX if base == 16 else _DIGITS
    if not digits or any(char not in alphabet for char in digits):
        return None
    return int(digits, base)


def _read_some(fd: int, size: int, stop_at_non_space: bool = False) -> tuple[bytes, int]:
    """Up to size bytes from fd (fewer at the end, or once a non-space byte
    came when stop_at_non_space), and the errno that stopped reading (0 if none)."""
    data = b""
    while len(data) < size:
        try:
            chunk = os.read(fd, size - len(data))
        except OSError as error:
            return data, error.errno or errno.EIO
        if not chunk:
            break
        data += chunk
        if stop_at_non_space and chunk.strip(_SPACE.encode()):
            break
    return data, 0


def _position(fd: int) -> int:
    try:
        return os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        return -1


def _dns_retries(err) -> int:
    value = os.environ.get("WG_ENDPOINT_RESOLUTION_RETRIES")
    if value is None:
        return 15
    if value == "infinity":
        return -1
    if value.isdigit() and value.isascii() and int(value) <= 0x7FFFFFFF:
        return int(value)
    if value == "":
        return 0
    err(f"Unable to parse WG_ENDPOINT_RESOLUTION_RETRIES: `{value}'\n")
    raise SystemExit(1)


def read_config_lines(data: bytes):
    """The lines of a file as getline returns them, each with its "\\n"."""
    text = data.decode("utf-8", "surrogateescape")
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end
