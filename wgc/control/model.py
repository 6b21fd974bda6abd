"""The data the control API reads and writes: devices, peers, allowed IPs, keys.

Keys are raw 32-byte `bytes`; `key_to_base64` and `key_from_base64` convert
them to and from the 44-character form wg(8) prints and reads.  A device read
back from a daemon or the kernel is a `Device`; a change to apply is a
`DeviceConfig` with its `PeerConfig`s, where `None` means "leave unchanged".
"""
from __future__ import annotations

import _socket  # socket.py's own import makes enums and selectors: most of what `wg show` cost
import binascii
import gc
import struct

from wgc._allowed_text import AllowedIPMaker

# As type checkers read it; importing typing for it would cost `wg show` ~4 ms.  ipaddress
# is imported where an address object is made: printing what a device reports needs none.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress
    from typing import Any

    IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

KEY_LEN = 32
ZERO_KEY = bytes(KEY_LEN)
_BASE64_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_HEX_DIGITS = "0123456789abcdefABCDEF"


# -- keys ----------------------------------------------------------------------------


def key_to_base64(key: bytes) -> str:
    return base64_text(_check_key(key))


def base64_text(data: bytes) -> str:
    """data in base64, as wg(8) prints keys (binascii's: the base64 module would bring re)."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def key_from_base64(text: str) -> bytes:
    """A key in wg(8)'s base64: exactly 44 characters, the last one '=', and
    canonical (the unused low bits of the last digit are zero).  ValueError otherwise."""
    # str.strip removes the digits from both ends: all 43 are digits when nothing is left.
    if not isinstance(text, str) or len(text) != 44 or text[43] != "=" or text[:43].strip(_BASE64_DIGITS):
        raise ValueError(f"not a base64 WireGuard key: {text!r}")
    key = binascii.a2b_base64(text)
    if base64_text(key) != text:
        raise ValueError(f"not a canonical base64 WireGuard key: {text!r}")
    return key


def key_to_hex(key: bytes) -> str:
    return _check_key(key).hex()


def key_from_hex(text: str) -> bytes:
    if not isinstance(text, str) or len(text) != 2 * KEY_LEN or text.strip(_HEX_DIGITS):
        raise ValueError(f"not a hex WireGuard key: {text!r}")
    return binascii.unhexlify(text)


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LEN:
        raise ValueError(f"a WireGuard key is {KEY_LEN} bytes, not {key!r}")
    return bytes(key)


# -- addresses ----------------------------------------------------------------------


def format_ip(address: IPAddress) -> str:
    """An address as the C library's inet_ntop prints it (and so wg(8)):
    unlike Python's ipaddress, ::ffff:1.2.3.4 and ::1.2.3.4 stay dotted."""
    family = _socket.AF_INET if address.version == 4 else _socket.AF_INET6
    return _socket.inet_ntop(family, address.packed)


# The canonical spellings of prefix lengths, as printf prints them: looking one
# up checks and converts it at once (other spellings, like "032", take the slow path).
CANONICAL_PREFIXES = {str(length): length for length in range(129)}


# -- records: what @dataclass would write, written once by hand -----------------------
#
# Importing dataclasses (which imports inspect) and running the code it generates for
# each class was most of what `wg show` cost beyond starting Python.  These classes
# keep what @dataclass gave them: __init__ with the same parameters and defaults,
# __repr__, __eq__ over the fields in order (and __hash__: None unless frozen),
# __match_args__, FrozenInstanceError from a frozen one, and __dataclass_fields__ made on
# first use, so dataclasses.fields(), asdict(), astuple(), replace() and is_dataclass()
# take them as before.  A record's fields are its __match_args__, in order.


class _Factory:
    """A default that makes a fresh value for each record, as default_factory does."""

    def __init__(self, make):
        self.make = make

    def __repr__(self) -> str:
        return "<factory>"  # as inspect.signature showed a dataclass's default_factory


_NEW_LIST: Any = _Factory(list)
_NEW_DICT: Any = _Factory(dict)


class _DataclassFields:
    """A record class's __dataclass_fields__, made (once) by dataclasses itself from
    __init__'s parameters and defaults and the class's annotations, when dataclasses
    first asks for it: whoever asks has imported dataclasses already."""

    def __get__(self, instance, owner) -> dict:
        import dataclasses
        import inspect

        specs = []
        for name, parameter in list(inspect.signature(owner.__init__).parameters.items())[1:]:
            default = parameter.default
            if default is parameter.empty:
                spec = dataclasses.field()
            elif isinstance(default, _Factory):
                spec = dataclasses.field(default_factory=default.make)
            else:
                spec = dataclasses.field(default=default)
            # The class's annotation of the field, or (a property: AllowedIP's and Endpoint's address) the parameter's.
            specs.append((name, owner.__annotations__.get(name, parameter.annotation), spec))
        fields = vars(dataclasses.make_dataclass(owner.__name__, specs))["__dataclass_fields__"]
        type.__setattr__(owner, "__dataclass_fields__", fields)
        return fields


class _Record:
    __slots__ = ()
    __match_args__: tuple[str, ...] = ()
    __dataclass_fields__ = _DataclassFields()

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__match_args__)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{self.__class__.__qualname__}({fields})"

    def __eq__(self, other):  # with no __hash__ beside it: unhashable, as a mutable dataclass
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()


class _FrozenRecord(_Record):
    """A record that refuses changes after __init__ (which sets its slots with object.__setattr__)."""

    __slots__ = ()

    def __setattr__(self, name: str, value) -> None:
        from dataclasses import FrozenInstanceError

        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        from dataclasses import FrozenInstanceError

        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __hash__(self) -> int:
        return hash(self._values())

    def __reduce__(self):
        """Pickled and copied by its fields (a copy cannot set a frozen record's slots)."""
        return self.__class__, self._values()


class AllowedIP(_FrozenRecord):
    """An address and prefix length.  Host bits are kept as given (the device
    masks them), so what was sent can be compared with what was asked for.

    Held as the text wg(8) prints ("10.0.0.1/32", the address as inet_ntop
    prints it): a device can have a million of these, and reading, writing
    and printing them then never builds an ipaddress object; `address` is
    made on first use, `cidr` read from the text on each use.
    """

    __slots__ = ("_address", "_text")
    __match_args__ = ("address", "cidr")
    if TYPE_CHECKING:  # the slots
        _address: IPAddress
        _text: str

    def __init__(self, address: IPAddress | str, cidr: int):
        import ipaddress

        if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            # A string is taken too (callers without a type checker).
            address = ipaddress.ip_address(address)
        if not 0 <= cidr <= address.max_prefixlen:
            raise ValueError(f"prefix length {cidr} out of range for {address}")
        _set_text(self, f"{format_ip(address)}/{cidr}")
        _set_address(self, address)

    @classmethod
    def parse(cls, text: str) -> AllowedIP:
        """`address/cidr`, or a bare address meaning /32 or /128."""
        import ipaddress

        address, slash, cidr = text.partition("/")
        ip = ipaddress.ip_address(address)
        if not slash:
            return cls(ip, ip.max_prefixlen)
        if not cidr.isdigit() or not cidr.isascii():
            raise ValueError(f"invalid prefix length in {text!r}")
        return cls(ip, int(cidr))

    @property
    def address(self) -> IPAddress:
        """An IPv4Address or IPv6Address."""
        try:
            return self._address
        except AttributeError:
            import ipaddress

            text = self._text.rpartition("/")[0]
            family = _socket.AF_INET6 if ":" in text else _socket.AF_INET
            address = ipaddress.ip_address(_socket.inet_pton(family, text))
            _set_address(self, address)
            return address

    @property
    def cidr(self) -> int:
        """The prefix length."""
        return int(self._text.rpartition("/")[2])

    @property
    def family(self) -> int:
        return _socket.AF_INET6 if ":" in self._text else _socket.AF_INET

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The prefix with host bits cleared."""
        import ipaddress

        return ipaddress.ip_network((self.address, self.cidr), strict=False)

    def __str__(self) -> str:
        return self._text

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._text == other._text

    def __hash__(self) -> int:
        return hash(self._text)


# The slots' own setters: how this module fills an AllowedIP that is frozen to everyone else.
_set_address, _set_text = (vars(AllowedIP)[slot].__set__ for slot in AllowedIP.__slots__)
_new = object.__new__


def allowed_ip_of_text(text: str) -> AllowedIP:
    """An AllowedIP from its text, already checked: the address as inet_ntop
    prints it, "/", and the prefix length, in range, as CANONICAL_PREFIXES spells it."""
    allowed = _new(AllowedIP)
    _set_text(allowed, text)
    return allowed


# Makes AllowedIPs in C (wgc/_allowed_text.pyx) from the texts of the common spelling.
_maker = AllowedIPMaker(vars(AllowedIP)["_text"])


def ipv4_allowed_ips_of_texts(texts: list[str], shortest: int = 0) -> list[AllowedIP] | None:
    """AllowedIPs for texts that are all IPv4 prefixes as wg(8) prints them
    ("10.0.0.1/32": inet_pton takes the address, the prefix length is
    shortest-32 in CANONICAL_PREFIXES' spelling); None when one is not, for
    the caller to read them one by one with its own errors and spellings."""
    return _maker.ipv4_of_texts(texts, shortest)


def take_ipv4_allowed_ip_lines(answer: bytes, start: int, into: list[AllowedIP]) -> int:
    """Appends to into the AllowedIPs of the `allowed_ip=` lines of a UAPI
    answer from start on whose values ipv4_allowed_ips_of_texts takes (each
    line ending in "\n"); returns where the first other line starts, for
    the caller to read it with its own errors."""
    return _maker.take_ipv4_lines(answer, start, into)


class gc_paused:
    """Python's cycle collector held off while many AllowedIPs (which make no
    cycles) are made: its passes would walk every one made so far, a quarter
    of the time it takes to read a million.  (A class, not a
    contextlib.contextmanager: contextlib would cost `wg show` its imports.)"""

    def __enter__(self) -> None:
        self.enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exception) -> None:
        if self.enabled:
            gc.enable()


def format_allowed_ips(ips: list[AllowedIP], separator: str) -> str:
    """The allowed IPs as str() prints each, joined by separator (in one go,
    in C when it can: there may be a million)."""
    joined = _maker.join_texts(ips, separator)
    return separator.join([allowed._text for allowed in ips]) if joined is None else joined


def split_endpoint(text: str) -> tuple[str, str]:
    """(host, port) of an endpoint as wg(8) reads it: `[host]:port`, or
    `host:port` split at the last colon.  ValueError("brace") when a bracket
    is not closed, ValueError("port") when there is no port."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ValueError("brace")
        if not rest.startswith(":") or len(rest) == 1:
            raise ValueError("port")
        return host, rest[1:]
    host, colon, port = text.rpartition(":")
    if not colon or not port:
        raise ValueError("port")
    return host, port


class Endpoint(_FrozenRecord):
    """A peer's UDP address: an IP, a port and, for IPv6, flow label and scope.

    One read from a device or resolved from a name holds its address as the
    text inet_ntop printed (checked) until `address` is first asked for:
    printing it takes no ipaddress object, and `wg show` never imports ipaddress.
    """

    __match_args__ = ("address", "port", "flowinfo", "scope_id")
    __slots__ = ("_address", "_host", "flowinfo", "port", "scope_id")
    port: int
    flowinfo: int
    scope_id: int
    if TYPE_CHECKING:  # the other slots
        _address: IPAddress
        _host: str  # str(address), or the text of the address as inet_ntop prints it

    def __init__(self, address: IPAddress, port: int, flowinfo: int = 0, scope_id: int = 0):
        import ipaddress

        if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            # A string is taken too (callers without a type checker); the field holds an address after.
            address = ipaddress.ip_address(address)  # type: ignore[unreachable]
        self._fill(str(address), port, flowinfo, scope_id)
        object.__setattr__(self, "_address", address)

    def _fill(self, host: str, port: int, flowinfo: int, scope_id: int) -> None:
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port {port} out of range")
        for name, value in (("_host", host), ("port", port), ("flowinfo", flowinfo), ("scope_id", scope_id)):
            object.__setattr__(self, name, value)

    @classmethod
    def _of_host(cls, host: str, port: int, flowinfo: int = 0, scope_id: int = 0) -> Endpoint:
        """An endpoint whose address is the text host (without a %scope); ValueError when inet_pton refuses it."""
        try:
            _socket.inet_pton(_socket.AF_INET6 if ":" in host else _socket.AF_INET, host)
        except OSError:
            raise ValueError(f"not an IP address: {host!r}") from None
        endpoint = _new(cls)
        endpoint._fill(host, port, flowinfo, scope_id)
        return endpoint

    @property
    def address(self) -> IPAddress:
        """An IPv4Address or IPv6Address."""
        try:
            return self._address
        except AttributeError:
            import ipaddress

            address = ipaddress.IPv6Address(self._host) if ":" in self._host else ipaddress.IPv4Address(self._host)
            object.__setattr__(self, "_address", address)
            return address

    @property
    def family(self) -> int:
        return _socket.AF_INET6 if ":" in self._host else _socket.AF_INET

    def sockaddr(self) -> tuple:
        """The address as Python's socket functions take it."""
        if ":" not in self._host:
            return (self._host, self.port)
        return (self._host, self.port, self.flowinfo, self.scope_id)

    @classmethod
    def from_sockaddr(cls, family: int, sockaddr: tuple) -> Endpoint:
        host = sockaddr[0].partition("%")[0]
        if family == _socket.AF_INET6:
            return cls._of_host(host, sockaddr[1], sockaddr[2], sockaddr[3])
        return cls._of_host(host, sockaddr[1])

    def numeric_host_port(self) -> tuple[str, str]:
        """(host, port) as getnameinfo prints them numerically: a link-local
        IPv6 address gets its scope as "%ifname" (or "%number")."""
        return _socket.getnameinfo(self.sockaddr(), _socket.NI_NUMERICHOST | _socket.NI_NUMERICSERV | _socket.NI_DGRAM)

    def __str__(self) -> str:
        host, port = self.numeric_host_port()
        return f"[{host}]:{port}" if ":" in self._host and ":" in host else f"{host}:{port}"

    # struct sockaddr_in / sockaddr_in6, as the kernel's WGPEER_A_ENDPOINT carries them

    _IN = struct.Struct("=H2s4s8x")
    _IN6 = struct.Struct("=H2sI16sI")

    def to_bytes(self) -> bytes:
        port = struct.pack("!H", self.port)
        if self.address.version == 4:
            return self._IN.pack(_socket.AF_INET, port, self.address.packed)
        # sin6_flowinfo is in network byte order, sin6_scope_id in host order.
        return self._IN6.pack(_socket.AF_INET6, port, _socket.htonl(self.flowinfo), self.address.packed, self.scope_id)

    @classmethod
    def from_bytes(cls, data: bytes) -> Endpoint | None:
        """The endpoint in a sockaddr, or None when it is neither a whole
        sockaddr_in nor a whole sockaddr_in6 (as wg(8) ignores those)."""
        if len(data) < 2:
            return None
        (family,) = struct.unpack_from("=H", data)
        if family == _socket.AF_INET and len(data) == cls._IN.size:
            _, port, packed = cls._IN.unpack(data)
            return cls._of_host(_socket.inet_ntop(family, packed), struct.unpack("!H", port)[0])
        if family == _socket.AF_INET6 and len(data) == cls._IN6.size:
            _, port, flowinfo, packed, scope = cls._IN6.unpack(data)
            return cls._of_host(_socket.inet_ntop(family, packed), struct.unpack("!H", port)[0],
                                _socket.ntohl(flowinfo), scope)
        return None


# -- what a device reports ----------------------------------------------------------


class Peer(_Record):
    """One peer as the device reports it."""

    __match_args__ = ("public_key", "preshared_key", "endpoint", "persistent_keepalive_interval",
                 "last_handshake_time_sec", "last_handshake_time_nsec", "rx_bytes", "tx_bytes", "allowed_ips",
                 "protocol_version")
    __slots__ = __match_args__
    public_key: bytes
    preshared_key: bytes | None  # None: no preshared key
    endpoint: Endpoint | None
    persistent_keepalive_interval: int  # seconds, 0: off
    last_handshake_time_sec: int
    last_handshake_time_nsec: int
    rx_bytes: int
    tx_bytes: int
    allowed_ips: list[AllowedIP]
    protocol_version: int

    def __init__(self, public_key: bytes, preshared_key: bytes | None = None, endpoint: Endpoint | None = None,
                 persistent_keepalive_interval: int = 0, last_handshake_time_sec: int = 0,
                 last_handshake_time_nsec: int = 0, rx_bytes: int = 0, tx_bytes: int = 0,
                 allowed_ips: list[AllowedIP] = _NEW_LIST, protocol_version: int = 0):
        self.public_key = public_key
        self.preshared_key = preshared_key
        self.endpoint = endpoint
        self.persistent_keepalive_interval = persistent_keepalive_interval
        self.last_handshake_time_sec = last_handshake_time_sec
        self.last_handshake_time_nsec = last_handshake_time_nsec
        self.rx_bytes = rx_bytes
        self.tx_bytes = tx_bytes
        self.allowed_ips = [] if allowed_ips is _NEW_LIST else allowed_ips
        self.protocol_version = protocol_version

    @property
    def public_key_base64(self) -> str:
        return key_to_base64(self.public_key)

    @property
    def last_handshake_time(self) -> float | None:
        """Seconds since the epoch of the latest handshake, None if never."""
        if not self.last_handshake_time_sec and not self.last_handshake_time_nsec:
            return None
        return self.last_handshake_time_sec + self.last_handshake_time_nsec / 1e9


class Device(_Record):
    """A device's state: its keys, port, fwmark and peers."""

    __match_args__ = ("name", "kind", "private_key", "public_key", "listen_port", "fwmark", "peers", "ifindex")
    __slots__ = __match_args__
    name: str
    kind: str  # "userspace" (a UAPI socket) or "kernel" (generic netlink)
    private_key: bytes | None
    public_key: bytes | None
    listen_port: int
    fwmark: int
    peers: list[Peer]
    ifindex: int

    def __init__(self, name: str, kind: str, private_key: bytes | None = None, public_key: bytes | None = None,
                 listen_port: int = 0, fwmark: int = 0, peers: list[Peer] = _NEW_LIST, ifindex: int = 0):
        self.name = name
        self.kind = kind
        self.private_key = private_key
        self.public_key = public_key
        self.listen_port = listen_port
        self.fwmark = fwmark
        self.peers = [] if peers is _NEW_LIST else peers
        self.ifindex = ifindex

    def peer(self, public_key: bytes) -> Peer | None:
        for peer in self.peers:
            if peer.public_key == public_key:
                return peer
        return None

    def config(self) -> DeviceConfig:
        """Everything settable about this device, as a configuration that
        recreates it: apply with configure(..., replace_peers=True)."""
        return DeviceConfig(
            private_key=self.private_key or ZERO_KEY, listen_port=self.listen_port, fwmark=self.fwmark,
            peers=[PeerConfig(public_key=peer.public_key, preshared_key=peer.preshared_key or ZERO_KEY,
                              endpoint=peer.endpoint, persistent_keepalive_interval=peer.persistent_keepalive_interval,
                              replace_allowed_ips=True, allowed_ips=list(peer.allowed_ips))
                   for peer in self.peers])


class DeviceCounters(_Record):
    """What a wgc daemon counts of a device (wgc/counters.py names and
    explains each figure): the device's figures and, by public key in the
    order the daemon lists its peers, each peer's; counters are ints, gauges
    floats."""

    __match_args__ = ("name", "values", "peers")
    __slots__ = __match_args__
    name: str
    values: dict[str, int | float]
    peers: dict[bytes, dict[str, int | float]]

    def __init__(self, name: str, values: dict[str, int | float] = _NEW_DICT,
                 peers: dict[bytes, dict[str, int | float]] = _NEW_DICT):
        self.name = name
        self.values = {} if values is _NEW_DICT else values
        self.peers = {} if peers is _NEW_DICT else peers


# -- what to change -----------------------------------------------------------------


class PeerConfig(_Record):
    """Changes to one peer, created unless `update_only`.  `None` fields are
    left as they are; a preshared key of 32 zero bytes removes it."""

    __match_args__ = ("public_key", "remove", "update_only", "preshared_key", "endpoint", "endpoint_name",
                 "persistent_keepalive_interval", "replace_allowed_ips", "allowed_ips")
    __slots__ = __match_args__
    public_key: bytes
    remove: bool
    update_only: bool
    preshared_key: bytes | None
    endpoint: Endpoint | None
    # "HOST:PORT" when endpoint was resolved from a host name: a wgc device
    # looks the name up again when the peer goes quiet (wgc.reresolve).
    endpoint_name: str | None
    persistent_keepalive_interval: int | None
    replace_allowed_ips: bool
    allowed_ips: list[AllowedIP]

    def __init__(self, public_key: bytes, remove: bool = False, update_only: bool = False,
                 preshared_key: bytes | None = None, endpoint: Endpoint | None = None, endpoint_name: str | None = None,
                 persistent_keepalive_interval: int | None = None, replace_allowed_ips: bool = False,
                 allowed_ips: list[AllowedIP] = _NEW_LIST):
        self.public_key = public_key
        self.remove = remove
        self.update_only = update_only
        self.preshared_key = preshared_key
        self.endpoint = endpoint
        self.endpoint_name = endpoint_name
        self.persistent_keepalive_interval = persistent_keepalive_interval
        self.replace_allowed_ips = replace_allowed_ips
        self.allowed_ips = [] if allowed_ips is _NEW_LIST else allowed_ips
        _check_key(self.public_key)
        if self.preshared_key is not None:
            _check_key(self.preshared_key)
        if self.persistent_keepalive_interval is not None and not 0 <= self.persistent_keepalive_interval <= 0xFFFF:
            raise ValueError(f"persistent keepalive {self.persistent_keepalive_interval} out of range")


class DeviceConfig(_Record):
    """Changes to a device.  `None` fields are left as they are; a private
    key of 32 zero bytes removes it."""

    __match_args__ = ("private_key", "listen_port", "fwmark", "peers")
    __slots__ = __match_args__
    private_key: bytes | None
    listen_port: int | None
    fwmark: int | None
    peers: list[PeerConfig]

    def __init__(self, private_key: bytes | None = None, listen_port: int | None = None, fwmark: int | None = None,
                 peers: list[PeerConfig] = _NEW_LIST):
        self.private_key = private_key
        self.listen_port = listen_port
        self.fwmark = fwmark
        self.peers = [] if peers is _NEW_LIST else peers
        if self.private_key is not None:
            _check_key(self.private_key)
        if self.listen_port is not None and not 0 <= self.listen_port <= 0xFFFF:
            raise ValueError(f"listen port {self.listen_port} out of range")
        if self.fwmark is not None and not 0 <= self.fwmark <= 0xFFFFFFFF:
            raise ValueError(f"fwmark {self.fwmark} out of range")
