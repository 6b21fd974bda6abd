"""wgc --proxy's configuration: wireproxy's file format, read into frozen dataclasses.

    [Interface]                     as in wg-quick: PrivateKey, Address, DNS, MTU, ListenPort, FwMark
    [Peer]                          as in wg-quick (any number)
    [Socks5]     BindAddress = 127.0.0.1:1080, and optionally Username, Password
    [http]       BindAddress = 127.0.0.1:3128, and optionally Username, Password
    [TCPClientTunnel]  BindAddress = 127.0.0.1:2222   Target = host.in.tunnel:22
    [TCPServerTunnel]  ListenPort = 8080              Target = localhost:80
    [STDIOTunnel]      Target = host.in.tunnel:22     (at most one)
    [UDPClientTunnel]  BindAddress = 127.0.0.1:5353   Target = 10.0.0.1:53
    [UDPServerTunnel]  ListenPort = 5353              Target = localhost:53

Instead of [Interface] and [Peer], a line `WGConfig = PATH` before the
first section names a wg-quick file holding them (a relative PATH is taken
from the configuration file's directory).  Section and key names are read
without regard to case, as wireproxy reads them; every section but
[Interface] may come several times.  `#` starts a comment anywhere, as in
wg-quick (so a password cannot hold one), and a line starting with `;` is a
comment too.

The UDP sections are wgc's own, the UDP forms of the two TCP ones: a
client tunnel's datagrams arriving at BindAddress go to Target through the
tunnel, and the answers come back to their sender; a server tunnel listens
on the tunnel's addresses at ListenPort and relays to Target on this side.

[Interface] and [Peer] are read line by line by the same readers as
Net.from_config's (wg-quick's, then wg setconf's); the wg-quick keys that
act on the host (Table, PreUp, PostUp, PreDown, PostDown, SaveConfig) and
DNS search domains are left unused, as Net.from_config leaves them.

A file the proxy cannot use raises ConfigError naming the file, the line
and the field (`proxy.conf:12: [Socks5] BindAddress: not HOST:PORT: "x"`);
unknown sections and keys are errors, and so is a missing private key.  No
message holds a key or a password.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import TypeVar

from wgc import constants as C
from wgc.control.model import ZERO_KEY, DeviceConfig, split_endpoint
from wgc.control.wgquick import Config, Failure, parse_text
from wgc.netstack.net import ConfigError, device_config, interface_addresses

MAX_CREDENTIAL = 255  # bytes of a SOCKS5 username or password (RFC 1929)
MAX_FILE = 1 << 20    # bytes of a configuration file: more is not one (WGConfig = /dev/zero)
_NAME = re.compile(r"[A-Za-z0-9._-]+")          # a host name (IDNs in their ASCII form)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class HostPort:
    """A host (an IP address, a name, or "" for every local address) and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Socks5:
    bind: HostPort
    credentials: tuple[str, str] | None = field(default=None, repr=False)  # (username, password)


@dataclass(frozen=True)
class HttpProxy:
    bind: HostPort
    credentials: tuple[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TcpClientTunnel:
    """Connections to bind (here) go to target (through the tunnel)."""

    bind: HostPort
    target: HostPort


@dataclass(frozen=True)
class TcpServerTunnel:
    """Connections to listen_port on the tunnel's addresses go to target (here)."""

    listen_port: int
    target: HostPort


@dataclass(frozen=True)
class UdpClientTunnel:
    """Datagrams to bind (here) go to target (through the tunnel), answers back."""

    bind: HostPort
    target: HostPort


@dataclass(frozen=True)
class UdpServerTunnel:
    """Datagrams to listen_port on the tunnel's addresses go to target (here), answers back."""

    listen_port: int
    target: HostPort


@dataclass(frozen=True)
class StdioTunnel:
    """Standard input and output joined to one connection to target (through the tunnel)."""

    target: HostPort


@dataclass(frozen=True)
class NetConfig:
    """What wgc.netstack.Net is made of: Net(device, list(addresses), mtu=mtu, dns=list(dns))."""

    device: DeviceConfig = field(repr=False)  # holds the private key
    addresses: tuple[str, ...]
    mtu: int = C.DEFAULT_MTU
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProxyConfig:
    net: NetConfig
    socks5: tuple[Socks5, ...] = ()
    http: tuple[HttpProxy, ...] = ()
    tcp_client_tunnels: tuple[TcpClientTunnel, ...] = ()
    tcp_server_tunnels: tuple[TcpServerTunnel, ...] = ()
    udp_client_tunnels: tuple[UdpClientTunnel, ...] = ()
    udp_server_tunnels: tuple[UdpServerTunnel, ...] = ()
    stdio: StdioTunnel | None = None


Service = Socks5 | HttpProxy | TcpClientTunnel | TcpServerTunnel | UdpClientTunnel | UdpServerTunnel | StdioTunnel
_S = TypeVar("_S", bound=Service)

# Each section's name as written in the documentation, and its keys: name -> required.
_WG_SECTIONS = ("Interface", "Peer")
_SERVICE_KEYS: dict[str, dict[str, bool]] = {
    "Socks5": {"BindAddress": True, "Username": False, "Password": False},
    "http": {"BindAddress": True, "Username": False, "Password": False},
    "TCPClientTunnel": {"BindAddress": True, "Target": True},
    "TCPServerTunnel": {"ListenPort": True, "Target": True},
    "UDPClientTunnel": {"BindAddress": True, "Target": True},
    "UDPServerTunnel": {"ListenPort": True, "Target": True},
    "STDIOTunnel": {"Target": True},
}
_SECTION_NAMES = {name.lower(): name for name in (*_WG_SECTIONS, *_SERVICE_KEYS)}
_ROOT_KEY = "WGConfig"


@dataclass
class _Section:
    name: str
    number: int  # of its header line
    lines: list[tuple[int, str]] = field(default_factory=list)  # (number, line) as written


@dataclass(frozen=True)
class _Value:
    number: int
    text: str


def load(path: str) -> ProxyConfig:
    """The configuration in the file at path."""
    return parse(_read(path), path)


def parse(text: str, path: str) -> ProxyConfig:
    """The configuration in text; path names the file in errors, and a
    relative WGConfig is taken from its directory."""
    root, sections = _split(text, path)
    wg_sections = [section for section in sections if section.name in _WG_SECTIONS]
    if _ROOT_KEY.lower() in root:
        wg_path = os.path.join(os.path.dirname(path), root[_ROOT_KEY.lower()].text)
        if wg_sections:
            raise ConfigError(f"{path}:{wg_sections[0].number}: [{wg_sections[0].name}] and WGConfig both given")
        _, wg_sections = _split(_read(wg_path), wg_path, wg_only=True)
        net = _net(wg_sections, wg_path)
    else:
        net = _net(wg_sections, path)
    services = [_service(section, path) for section in sections if section.name not in _WG_SECTIONS]
    _check_unique([section for section in sections if section.name not in _WG_SECTIONS], services, path)
    if not services:
        raise ConfigError(f"{path}: no service: add a [Socks5], [http] or tunnel section")
    stdio = _of(services, StdioTunnel)
    if len(stdio) > 1:
        second = [section for section in sections if section.name == "STDIOTunnel"][1]
        raise ConfigError(f"{path}:{second.number}: [STDIOTunnel]: only one: there is one standard input")
    return ProxyConfig(
        net=net, socks5=_of(services, Socks5), http=_of(services, HttpProxy),
        tcp_client_tunnels=_of(services, TcpClientTunnel), tcp_server_tunnels=_of(services, TcpServerTunnel),
        udp_client_tunnels=_of(services, UdpClientTunnel), udp_server_tunnels=_of(services, UdpServerTunnel),
        stdio=stdio[0] if stdio else None)


def _check_unique(sections: list[_Section], services: list[Service], path: str) -> None:
    """No two services listen on the same protocol, address and port (here,
    or on the tunnel's addresses)."""
    taken: dict[tuple[str, object], str] = {}
    for section, service in zip(sections, services, strict=True):
        if isinstance(service, Socks5 | HttpProxy | TcpClientTunnel):
            where: tuple[str, object] = ("tcp", service.bind)
        elif isinstance(service, UdpClientTunnel):
            where = ("udp", service.bind)
        elif isinstance(service, TcpServerTunnel):
            where = ("tcp on the tunnel", service.listen_port)
        elif isinstance(service, UdpServerTunnel):
            where = ("udp on the tunnel", service.listen_port)
        else:
            continue
        if where in taken:
            raise ConfigError(f"{path}:{section.number}: [{section.name}]: listens where {taken[where]} does")
        taken[where] = f"[{section.name}] of line {section.number}"


def _of(services: list[Service], kind: type[_S]) -> tuple[_S, ...]:
    return tuple(service for service in services if isinstance(service, kind))


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    except ValueError:  # a NUL in the name
        raise ConfigError(f"{path}: not a file name (it holds a NUL)") from None
    if len(data) > MAX_FILE:
        raise ConfigError(f"{path}: larger than {MAX_FILE} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8") from None


def _split(text: str, path: str, wg_only: bool = False) -> tuple[dict[str, _Value], list[_Section]]:
    """The keys before the first section, and the sections with their lines."""
    root: dict[str, _Value] = {}
    sections: list[_Section] = []
    for number, line in enumerate(text.split("\n"), 1):
        content = line.split("#", 1)[0].strip()
        if not content or content.startswith(";"):
            continue
        if content.startswith("["):
            name = _SECTION_NAMES.get(content[1:-1].strip().lower()) if content.endswith("]") else None
            if name is None or (wg_only and name not in _WG_SECTIONS):
                known = ", ".join(f"[{known}]" for known in _SECTION_NAMES.values()
                                  if not wg_only or known in _WG_SECTIONS)
                # (The line is not quoted: it may hold a key pasted in the wrong place.)
                raise ConfigError(f"{path}:{number}: unknown section; known: {known}")
            if name == "Interface" and any(section.name == name for section in sections):
                raise ConfigError(f"{path}:{number}: a second [Interface]")
            sections.append(_Section(name, number))
        elif sections:
            sections[-1].lines.append((number, line))
        else:
            key, equals, value = content.partition("=")
            if key.strip().lower() != _ROOT_KEY.lower() or not equals or wg_only:
                raise ConfigError(f"{path}:{number}: before any section, only {_ROOT_KEY} = PATH")
            if _ROOT_KEY.lower() in root:
                raise ConfigError(f"{path}:{number}: {_ROOT_KEY}: given twice")
            root[_ROOT_KEY.lower()] = _Value(number, value.strip())
            if not value.strip():
                raise ConfigError(f"{path}:{number}: {_ROOT_KEY}: empty")
    return root, sections


def _shown(text: str) -> str:
    """text for a message: quoted, and cut short."""
    return '"' + (text if len(text) <= 60 else text[:57] + "...") + '"'


def _net(sections: list[_Section], path: str) -> NetConfig:
    """[Interface] and [Peer], line by line: wg-quick's own keys (Address, DNS,
    MTU) read by wg-quick's reader, the rest by wg setconf's."""
    if not any(section.name == "Interface" for section in sections):
        raise ConfigError(f"{path}: no [Interface] (or WGConfig = PATH to a wg-quick file)")
    addresses: list[str] = []
    dns: list[str] = []
    mtu = C.DEFAULT_MTU
    wg_lines: list[tuple[str, str]] = []
    for section in sections:
        wg_lines.append((f"{path}:{section.number}", f"[{section.name}]"))
        for number, line in section.lines:
            place = f"{path}:{number}"
            if section.name != "Interface":
                wg_lines.append((place, line))
                continue
            one = Config()
            try:
                parse_text(one, f"[Interface]\n{line}\n")
            except Failure as failure:
                raise ConfigError(f"{place}: [Interface] {_key(line)}: {failure}") from None
            if one.wg_config != "[Interface]\n":
                wg_lines.append((place, line))
            if one.addresses or _key(line).lower() == "address":
                try:
                    addresses += interface_addresses(one.addresses)
                except ConfigError as error:
                    raise ConfigError(f"{place}: [Interface] Address: {error}") from None
            for server in one.dns:
                try:
                    dns.append(ipaddress.ip_address(server).compressed)
                except ValueError:
                    raise ConfigError(f"{place}: [Interface] DNS: not an IP address: {_shown(server)}") from None
            if one.mtu:
                if not one.mtu.isdigit() or not one.mtu.isascii():
                    raise ConfigError(f"{place}: [Interface] MTU: not a number: {_shown(one.mtu)}")
                mtu = int(one.mtu)
    device = device_config(wg_lines, path)
    if device.private_key in (None, ZERO_KEY):
        raise ConfigError(f"{path}: [Interface] PrivateKey: missing")
    if not addresses:
        raise ConfigError(f"{path}: [Interface] Address: missing")
    return NetConfig(device, tuple(addresses), mtu, tuple(dns))


def _key(line: str) -> str:
    """The key of a line of [Interface] that wg-quick reads (Address, DNS, MTU...)."""
    return line.split("#", 1)[0].partition("=")[0].strip()


def _service(section: _Section, path: str) -> Service:
    keys = _SERVICE_KEYS[section.name]
    by_lower = {key.lower(): key for key in keys}
    values: dict[str, _Value] = {}
    for number, line in section.lines:
        content = line.split("#", 1)[0].strip()
        key, equals, value = content.partition("=")
        name = by_lower.get(key.strip().lower())
        where = f"{path}:{number}: [{section.name}]"
        # (An unknown line is not quoted: it may be a password in the wrong place.)
        if not equals:
            raise ConfigError(f"{where}: not KEY = VALUE")
        if name is None:
            raise ConfigError(f"{where}: unknown key; known: {', '.join(keys)}")
        if name in values:
            raise ConfigError(f"{where} {name}: given twice")
        value = value.strip()
        if _CONTROL.search(value):
            raise ConfigError(f"{where} {name}: holds a control character")
        values[name] = _Value(number, value)
    for key, required in keys.items():
        if required and not values.get(key, _Value(0, "")).text:
            raise ConfigError(f"{path}:{section.number}: [{section.name}] {key}: missing")

    def place(key: str) -> str:
        return f"{path}:{values[key].number}: [{section.name}] {key}"

    def host_port(key: str, *, any_host: bool) -> HostPort:
        return _host_port(values[key].text, any_host, place(key))

    def listen_port() -> int:
        return _port(values["ListenPort"].text, place("ListenPort"))

    if section.name == "Socks5":
        return Socks5(host_port("BindAddress", any_host=True), _credentials(section.name, values, place))
    if section.name == "http":
        return HttpProxy(host_port("BindAddress", any_host=True), _credentials(section.name, values, place))
    if section.name == "TCPClientTunnel":
        return TcpClientTunnel(host_port("BindAddress", any_host=True), host_port("Target", any_host=False))
    if section.name == "UDPClientTunnel":
        return UdpClientTunnel(host_port("BindAddress", any_host=True), host_port("Target", any_host=False))
    if section.name == "TCPServerTunnel":
        return TcpServerTunnel(listen_port(), host_port("Target", any_host=False))
    if section.name == "UDPServerTunnel":
        return UdpServerTunnel(listen_port(), host_port("Target", any_host=False))
    return StdioTunnel(host_port("Target", any_host=False))


def _credentials(section: str, values: dict[str, _Value], place) -> tuple[str, str] | None:
    """Username and Password, both or neither, each of 1 to 255 bytes; never quoted."""
    username = values.get("Username", _Value(0, "")).text
    password = values.get("Password", _Value(0, "")).text
    if not username and not password:
        return None
    for key, value in (("Username", username), ("Password", password)):
        if not value:
            given = "Password" if key == "Username" else "Username"
            raise ConfigError(f"{place(given)}: needs {key} as well")
        if len(value.encode()) > MAX_CREDENTIAL:
            raise ConfigError(f"{place(key)}: longer than {MAX_CREDENTIAL} bytes")
    if section == "http" and ":" in username:
        raise ConfigError(f"{place('Username')}: holds a colon, which Basic authentication cannot carry")
    return username, password


def _port(text: str, place: str) -> int:
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 65536):
        raise ConfigError(f"{place}: not a port (1-65535): {_shown(text)}")
    return int(text)


def _host_port(text: str, any_host: bool, place: str) -> HostPort:
    """HOST:PORT or [IPv6]:PORT; HOST empty (every local address) where any_host."""
    try:
        host, port = split_endpoint(text)
    except ValueError:
        raise ConfigError(f"{place}: not HOST:PORT: {_shown(text)}") from None
    if text.startswith("["):
        try:
            host = ipaddress.IPv6Address(host).compressed
        except ValueError:
            raise ConfigError(f"{place}: not an IPv6 address: {_shown(host)}") from None
    elif not (_NAME.fullmatch(host) or (any_host and not host)):
        raise ConfigError(f"{place}: not HOST:PORT: {_shown(text)}")
    return HostPort(host, _port(port, place))
