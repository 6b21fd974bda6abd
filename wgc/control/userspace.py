"""Userspace devices: the UAPI text protocol on /var/run/wireguard/NAME.sock.

`get=1` answers key=value lines ending with `errno=N` and a blank line;
`set=1` takes key=value lines ending with a blank line and answers `errno=N`.
A wgc daemon also answers `wgc_get_counters=1` (see wgc/uapi.py) like `get`.
Reading follows wg(8): unknown keys are skipped, a malformed line makes the
whole answer a protocol error (EPROTO).
"""
from __future__ import annotations

import _socket  # socket.py's own import makes enums and selectors: most of what `wg show` cost
import errno
import os
import stat

from wgc import paths
from wgc.control.model import (
    CANONICAL_PREFIXES,
    AllowedIP,
    Device,
    DeviceConfig,
    DeviceCounters,
    Endpoint,
    Peer,
    allowed_ip_of_text,
    format_allowed_ips,
    gc_paused,
    key_from_hex,
    key_to_hex,
    split_endpoint,
    take_ipv4_allowed_ip_lines,
)
from wgc.errors import WireGuardError


def _live_socket(name: str) -> str | None:
    """NAME's socket that someone listens on, in the first directory that has
    one.  A socket nobody listens on any more (ECONNREFUSED) is removed, as
    wg(8) does."""
    for path in paths.socket_paths(name):
        try:
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                continue
        except (OSError, ValueError):
            continue
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            conn.connect(path)
        except ConnectionRefusedError:
            try:
                os.unlink(path)
            except OSError:
                pass
            continue
        except OSError:
            pass
        finally:
            conn.close()
        return path
    return None


def has_device(name: str) -> bool:
    """Whether NAME has a live UAPI socket."""
    return _live_socket(name) is not None


def device_names() -> list[str]:
    """Names with a live socket in the socket directories, in directory order
    (a name in both counts once: the shared directory's socket is the one used)."""
    names: list[str] = []
    for directory in paths.socket_directories():
        try:
            entries = os.listdir(directory)
        except FileNotFoundError:
            continue
        except OSError as error:
            if directory != paths.SOCKET_DIRECTORY:
                continue           # the user's directory is a convenience: never an error
            raise WireGuardError(error.errno, f"cannot list {directory}") from None
        for entry in entries:
            if len(entry) <= len(paths.SOCKET_SUFFIX) or not entry.endswith(paths.SOCKET_SUFFIX):
                continue
            name = entry[: -len(paths.SOCKET_SUFFIX)]
            if name not in names and has_device(name):
                names.append(name)
    return names


def _request(name: str, request: bytes) -> bytes:
    """Sends one request and returns the whole answer, ending in a blank line."""
    path = _live_socket(name) or paths.socket_path(name)
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            conn.connect(path)
            conn.sendall(request)
            chunks = []
            tail = b""
            while True:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                tail = (tail + chunk)[-2:]
                if tail == b"\n\n":
                    break
        except OSError as error:
            raise WireGuardError(error.errno or errno.EIO, f"{name}: UAPI request on {path} failed") from None
    finally:
        conn.close()
    return b"".join(chunks)


def _number(value: str, limit: int) -> int:
    # wg(8) reads numbers with strtoull and refuses trailing characters or values beyond the limit.
    if not value.isdigit() or not value.isascii():
        raise ValueError(value)
    number = int(value)
    if number > limit:
        raise ValueError(value)
    return number


def _endpoint(value: str) -> Endpoint:
    host, port = split_endpoint(value)
    try:
        family, _, _, _, sockaddr = _socket.getaddrinfo(host.encode(), port.encode(), _socket.AF_UNSPEC,
                                                        _socket.SOCK_DGRAM, _socket.IPPROTO_UDP)[0]
    except (_socket.gaierror, UnicodeError):
        raise WireGuardError(errno.ENETUNREACH, f"cannot resolve endpoint {value!r}") from None
    return Endpoint.from_sockaddr(family, sockaddr)


def _allowed_ip(value: str) -> AllowedIP:
    """An `allowed_ip` value: address (through inet_pton, as wg(8) reads it), "/", prefix length."""
    address, slash, mask = value.partition("/")
    if not slash:
        raise ValueError(value)
    family = _socket.AF_INET6 if ":" in address else _socket.AF_INET
    packed = _socket.inet_pton(family, address)
    bits = 32 if family == _socket.AF_INET else 128
    cidr = CANONICAL_PREFIXES.get(mask)
    if cidr is None:
        if not mask[:1].isdigit():
            raise ValueError(value)
        cidr = _number(mask, bits)  # another spelling strtoull takes, such as 032
    elif cidr > bits:
        raise ValueError(value)
    if family == _socket.AF_INET and mask in CANONICAL_PREFIXES:
        return allowed_ip_of_text(value)  # inet_pton took it: inet_ntop prints it the same
    return allowed_ip_of_text(f"{_socket.inet_ntop(family, packed)}/{cidr}")


def parse_get(name: str, answer: bytes) -> Device:
    """The Device a `get=1` answer describes; raises WireGuardError with the
    daemon's errno, or EPROTO for an answer wg(8) could not read either.

    A big answer is almost all allowed_ip lines: whenever a peer's may come,
    the run of those in wg(8)'s IPv4 spelling is read in C, each value
    decoded once; every other line is decoded and read here, one by one."""
    device = Device(name=name, kind="userspace")
    peer = None
    status = None
    start = 0
    try:
        with gc_paused():
            while start <= len(answer):
                if peer is not None:
                    start = take_ipv4_allowed_ip_lines(answer, start, peer.allowed_ips)
                end = answer.find(b"\n", start)
                end = len(answer) if end < 0 else end
                line = answer[start:end].decode("utf-8", "surrogateescape")
                start = end + 1
                if line == "":
                    break
                key, equals, value = line.partition("=")
                if not equals:
                    raise ValueError(line)
                if peer is None and key == "private_key":
                    from wgc import _crypto

                    device.private_key = key_from_hex(value)
                    device.public_key = _crypto.public_key(device.private_key)
                elif peer is None and key == "listen_port":
                    device.listen_port = _number(value, 0xFFFF)
                elif peer is None and key == "fwmark":
                    device.fwmark = _number(value, 0xFFFFFFFF)
                elif key == "public_key":
                    peer = Peer(public_key=key_from_hex(value))
                    device.peers.append(peer)
                elif peer is not None and key == "preshared_key":
                    psk = key_from_hex(value)
                    peer.preshared_key = psk if any(psk) else None
                elif peer is not None and key == "endpoint":
                    peer.endpoint = _endpoint(value)
                elif peer is not None and key == "persistent_keepalive_interval":
                    peer.persistent_keepalive_interval = _number(value, 0xFFFF)
                elif peer is not None and key == "allowed_ip":
                    peer.allowed_ips.append(_allowed_ip(value))
                elif peer is not None and key == "last_handshake_time_sec":
                    peer.last_handshake_time_sec = _number(value, (1 << 63) - 1)
                elif peer is not None and key == "last_handshake_time_nsec":
                    peer.last_handshake_time_nsec = _number(value, (1 << 63) - 1)
                elif peer is not None and key == "rx_bytes":
                    peer.rx_bytes = _number(value, (1 << 64) - 1)
                elif peer is not None and key == "tx_bytes":
                    peer.tx_bytes = _number(value, (1 << 64) - 1)
                elif peer is not None and key == "protocol_version":
                    peer.protocol_version = _number(value, 0xFFFFFFFF)
                elif key == "errno":
                    # As wg(8) reads it: digits only, so a daemon's "errno=-5"
                    # answering get is a protocol error.
                    status = _number(value, 0x7FFFFFFF)
    except (ValueError, OSError) as error:
        if isinstance(error, WireGuardError):
            raise
        raise WireGuardError(errno.EPROTO, f"{name}: malformed UAPI answer line {line!r}") from None
    if status is None:
        raise WireGuardError(errno.EPROTO, f"{name}: UAPI answer without errno")
    if status:
        raise WireGuardError(status, f"{name}: the daemon refused get")
    return device


def get_device(name: str) -> Device:
    return parse_get(name, _request(name, b"get=1\n\n"))


def parse_counters(name: str, answer: bytes) -> DeviceCounters:
    """The DeviceCounters a `wgc_get_counters=1` answer lists.  Figures are
    kept whatever their names (a newer daemon may count more); a value is an
    int when it is all digits, else a float.  EPROTO for a line that is not
    name=number, the daemon's errno when it refused."""
    counters = DeviceCounters(name=name)
    values = counters.values
    status = None
    for line in answer.decode("ascii", "replace").split("\n"):
        if line == "":
            break
        key, _, value = line.partition("=")
        try:
            if key == "public_key":
                values = counters.peers.setdefault(key_from_hex(value), {})
            elif key == "errno":
                status = int(value)
            else:
                values[key] = int(value) if value.isdigit() else float(value)
        except ValueError:
            raise WireGuardError(errno.EPROTO, f"{name}: malformed counters answer line {line!r}") from None
    if status is None:
        raise WireGuardError(errno.EPROTO, f"{name}: counters answer without errno")
    if status:
        raise WireGuardError(abs(status), f"{name}: the daemon refused wgc_get_counters")
    return counters


def get_counters(name: str) -> DeviceCounters:
    """A wgc daemon's counters; EOPNOTSUPP from any other daemon, which
    closes the connection on an operation it does not know."""
    answer = _request(name, b"wgc_get_counters=1\n\n")
    if not answer:
        raise WireGuardError(errno.EOPNOTSUPP, f"{name} does not report counters: not a wgc daemon")
    return parse_counters(name, answer)


def build_set(config: DeviceConfig, replace_peers: bool) -> bytes:
    """The `set=1` request for a configuration, in the order wg(8) writes it."""
    lines = ["set=1"]
    if config.private_key is not None:
        lines.append(f"private_key={key_to_hex(config.private_key)}")
    if config.listen_port is not None:
        lines.append(f"listen_port={config.listen_port}")
    if config.fwmark is not None:
        lines.append(f"fwmark={config.fwmark}")
    if replace_peers:
        lines.append("replace_peers=true")
    for peer in config.peers:
        lines.append(f"public_key={key_to_hex(peer.public_key)}")
        if peer.remove:
            lines.append("remove=true")
            continue
        if peer.update_only:
            lines.append("update_only=true")
        if peer.preshared_key is not None:
            lines.append(f"preshared_key={key_to_hex(peer.preshared_key)}")
        if peer.endpoint is not None:
            lines.append(f"endpoint={peer.endpoint}")
        if peer.persistent_keepalive_interval is not None:
            lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive_interval}")
        if peer.replace_allowed_ips:
            lines.append("replace_allowed_ips=true")
        if peer.allowed_ips:
            lines.append("allowed_ip=" + format_allowed_ips(peer.allowed_ips, "\nallowed_ip="))
    lines.append("\n")
    return "\n".join(lines).encode("utf-8", "surrogateescape")


def build_names(config: DeviceConfig) -> bytes | None:
    """The `set=1` request that tells a wgc device the host names the
    endpoints were resolved from (wgc.uapi's `endpoint_name`), for peers
    that exist (update_only); None when no endpoint was given by name."""
    lines = ["set=1"]
    for peer in config.peers:
        if peer.endpoint_name is not None and not peer.remove:
            lines += [f"public_key={key_to_hex(peer.public_key)}", "update_only=true",
                      f"endpoint_name={peer.endpoint_name}"]
    if len(lines) == 1:
        return None
    lines.append("\n")
    return "\n".join(lines).encode("ascii")


def set_device(name: str, config: DeviceConfig, replace_peers: bool) -> None:
    """Applies config as wg(8) would; then, when endpoints were given by name,
    tells the device the names in a second request, which a device other
    than wgc refuses (EINVAL, one error line in its log) with no harm done:
    the configuration was applied, only re-resolution is missing.  This
    costs nothing extra when no name is given, unlike probing every device."""
    _check_answer(name, _request(name, build_set(config, replace_peers)))
    names = build_names(config)
    if names is not None:
        try:
            _check_answer(name, _request(name, names))
        except WireGuardError as error:
            if error.errno != errno.EINVAL:
                raise


def _check_answer(name: str, answer: bytes) -> None:
    status = None
    for line in answer.decode("ascii", "replace").split("\n"):
        if not line:
            break
        if line.startswith("errno="):
            # A signed decimal, the negative errno; read as wg(8) does, so a
            # positive one becomes a negative errno ("Unknown error -5").
            value = line[6:]
            digits = value.removeprefix("-")
            if digits.isdigit() and digits.isascii() and -(1 << 31) <= int(value) < (1 << 31):
                status = int(value)
            break
    if status is None:
        raise WireGuardError(errno.EPROTO, f"{name}: UAPI set answered without errno: {answer[:200]!r}")
    if status:
        raise WireGuardError(-status, f"{name}: the daemon refused the configuration")
