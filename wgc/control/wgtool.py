"""A built-in wg(8): show, showconf, set, setconf, addconf, syncconf, genkey, genpsk, pubkey.

Output, messages and exit codes are those of wireguard-tools 1.0.20210914 for
the same device state, userspace or kernel, so scripts written for wg(8)
work unchanged.  `prog` is the name the messages give the program (wg(8)'s
argv[0]).  One addition, which wg(8) refuses as an invalid parameter: the
`drops` field of `show`, a wgc daemon's counters.
"""
from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # (no stub) signal.py, like socket.py, makes enums at import
import _socket  # socket.py's own import makes enums and selectors: most of what `wg show` cost
import errno
import os
import stat
import sys
import time

from wgc import control
from wgc.control.config import (
    ConfigFile,
    Draft,
    Parser,
    PeerDraft,
    c_string,
    read_config_lines,
)
from wgc.control.model import (
    KEY_LEN,
    Device,
    format_allowed_ips,
    gc_paused,
    key_from_base64,
)
from wgc.control.model import base64_text as b64
from wgc.errors import WireGuardError
from wgc.paths import IFNAMSIZ

VERSION = "1.0.20210914"

RESET = "\x1b[0m"
BOLD = "\x1b[1m"
RED = "\x1b[31m"
GREEN = "\x1b[32m"
YELLOW = "\x1b[33m"
CYAN = "\x1b[36m"

SHOW_PARAMETERS = ("public-key | private-key | listen-port | fwmark | peers | preshared-keys | endpoints | "
                   "allowed-ips | latest-handshakes | transfer | persistent-keepalive | dump")
# wgc's own field of `show`, which wg(8) does not have.
DROPS = "drops"
SHOW_DROPS_HELP = (
    "wgc extension: `drops' shows a wgc daemon's event and drop counters, one figure a line:\n"
    "  <figure><TAB><value> for the device's, then <peer public key><TAB><figure><TAB><value> for each\n"
    "  peer's;"
    " with `all', each line starts with the interface name and a tab, and devices that\n"
    "  are not wgc daemons are named on stderr and skipped.\n")
SET_USAGE = ("<interface> [listen-port <port>] [fwmark <mark>] [private-key <file path>] "
             "[peer <base64 public key> [remove] [preshared-key <file path>] [endpoint <ip>:<port>] "
             "[persistent-keepalive <interval seconds>] [allowed-ips <ip1>/<cidr1>[,<ip2>/<cidr2>]...] ]...")

SUBCOMMANDS = (
    ("show", "Shows the current configuration and device information"),
    ("showconf", "Shows the current configuration of a given WireGuard interface, for use with `setconf'"),
    ("set", "Change the current configuration, add peers, remove peers, or change peers"),
    ("setconf", "Applies a configuration file to a WireGuard interface"),
    ("addconf", "Appends a configuration file to a WireGuard interface"),
    ("syncconf", "Synchronizes a configuration file to a WireGuard interface"),
    ("genkey", "Generates a new private key and writes it to stdout"),
    ("genpsk", "Generates a new preshared key and writes it to stdout"),
    ("pubkey", "Reads a private key from stdin and writes a public key to stdout"),
)


class Tool:
    def __init__(self, prog: str, stdout=None, stderr=None, stdin=None, extended: bool = False):
        """extended: run as `wgc --wg`, not as wg, so the usage of `show`
        may also tell of wgc's extension (as wg, it is wg(8)'s, byte for byte)."""
        self.prog = prog
        self.extended = extended
        self._stdout = stdout if stdout is not None else sys.stdout.buffer
        self._stderr = stderr if stderr is not None else sys.stderr.buffer
        self._stdin = stdin if stdin is not None else sys.stdin.buffer
        self._color: bool | None = None

    # -- output -------------------------------------------------------------------

    def out(self, text: str) -> None:
        self._stdout.write(text.encode("utf-8", "surrogateescape"))

    def err(self, text: str) -> None:
        self._stderr.write(text.encode("utf-8", "surrogateescape"))
        self._stderr.flush()

    def perror(self, what: str, error: OSError) -> None:
        self.err(f"{what}: {os.strerror(error.errno or errno.EIO)}\n")

    def color(self) -> bool:
        if self._color is None:
            mode = os.environ.get("WG_COLOR_MODE")
            if mode == "always":
                self._color = True
            elif mode == "never":
                self._color = False
            else:
                try:
                    self._color = os.isatty(self._stdout.fileno())
                except (AttributeError, OSError, ValueError):
                    self._color = False
        return self._color

    def term(self, text: str) -> None:
        """terminal_printf: colours only on a terminal (or WG_COLOR_MODE=always)."""
        self.out(text if self.color() else strip_ansi(text))

    # -- the command line ---------------------------------------------------------

    def run(self, args: list[str]) -> int:
        try:
            return self._run(args)
        finally:
            try:
                self._stdout.flush()
            except BrokenPipeError:
                pass

    def _run(self, args: list[str]) -> int:
        if len(args) == 1 and args[0] in ("-v", "--version", "version"):
            self.out(f"wireguard-tools v{VERSION} - https://git.zx2c4.com/wireguard-tools/\n")
            return 0
        if len(args) == 1 and args[0] in ("-h", "--help", "help"):
            self.out(self.usage())
            return 0
        if not args:
            return self.show(["show"])
        handlers = {
            "show": self.show, "showconf": self.showconf, "set": self.set,
            "setconf": self.setconf, "addconf": self.setconf, "syncconf": self.setconf,
            "genkey": self.genkey, "genpsk": self.genkey, "pubkey": self.pubkey,
        }
        handler = handlers.get(args[0])
        if handler is None:
            self.err(f"Invalid subcommand: `{c_string(args[0])}'\n")
            self.err(self.usage())
            return 1
        return handler(args)

    def usage(self) -> str:
        lines = [f"Usage: {self.prog} <cmd> [<args>]\n\nAvailable subcommands:\n"]
        lines += [f"  {name}: {description}\n" for name, description in SUBCOMMANDS]
        lines.append("You may pass `--help' to any of these subcommands to view usage.\n")
        return "".join(lines)

    # -- show ---------------------------------------------------------------------

    def show_usage(self, command: str) -> None:
        self.err(f"Usage: {self.prog} {command} {{ <interface> | all | interfaces }} [{SHOW_PARAMETERS}]\n")
        if self.extended:
            self.err(SHOW_DROPS_HELP)

    def show(self, args: list[str]) -> int:
        command = args[0]
        if len(args) > 3:
            self.show_usage(command)
            return 1
        if len(args) == 1 or args[1] == "all":
            try:
                names = control.device_names()
            except WireGuardError as error:
                self.perror("Unable to list interfaces", error)
                return 1
            if len(args) == 3 and args[2] == DROPS:
                return self.show_all_drops(names)
            status = 1 if names else 0
            for index, name in enumerate(names):
                try:
                    device = control.device(name)
                except WireGuardError as error:
                    self.err(f"Unable to access interface {name}: {os.strerror(error.errno or errno.EIO)}\n")
                    continue
                if len(args) == 3:
                    if not self.show_field(device, args[2], True, command):
                        status = 1
                        break
                else:
                    self.pretty(device)
                    if index + 1 < len(names):
                        self.out("\n")
                status = 0
            return status
        if args[1] == "interfaces":
            if len(args) > 2:
                self.show_usage(command)
                return 1
            try:
                names = control.device_names()
            except WireGuardError as error:
                self.perror("Unable to list interfaces", error)
                return 1
            if names:
                self.out(" ".join(names) + "\n")
            return 0
        if len(args) == 2 and args[1] in ("-h", "--help", "help"):
            self.show_usage(command)
            return 0
        if len(args) == 3 and args[2] == DROPS:
            return 0 if self.show_drops(args[1], False) else 1
        try:
            device = control.device(args[1])
        except WireGuardError as error:
            self.perror("Unable to access interface", error)
            return 1
        if len(args) == 3:
            return 0 if self.show_field(device, args[2], False, command) else 1
        self.pretty(device)
        return 0

    def show_all_drops(self, names: list[str]) -> int:
        """`show all drops`: each wgc device's counters; the others are
        named on stderr and skipped, as `show all` skips a device it cannot read."""
        status = 1 if names else 0
        for name in names:
            if self.show_drops(name, True):
                status = 0
        return status

    def show_drops(self, name: str, with_interface: bool) -> bool:
        """wgc's `drops` field: a line per figure, in the style of wg's other
        fields (see SHOW_DROPS_HELP); False, with a message, for a device
        that does not report counters or cannot be read."""
        try:
            counters = control.counters(name)
        except WireGuardError as error:
            if error.errno == errno.EOPNOTSUPP:
                self.err(f"{error.strerror}\n")
            elif with_interface:
                self.err(f"Unable to access interface {name}: {os.strerror(error.errno or errno.EIO)}\n")
            else:
                self.perror("Unable to access interface", error)
            return False
        from wgc.counters import format_value  # only `drops` prints counters

        prefix = f"{name}\t" if with_interface else ""
        lines = [f"{prefix}{figure}\t{format_value(value)}\n" for figure, value in counters.values.items()]
        for key, values in counters.peers.items():
            lines += [f"{prefix}{b64(key)}\t{figure}\t{format_value(value)}\n" for figure, value in values.items()]
        self.out("".join(lines))
        return True

    def pretty(self, device: Device) -> None:
        term = self.term
        term(RESET)
        term(f"{GREEN}{BOLD}interface{RESET}: {GREEN}{device.name}{RESET}\n")
        if device.public_key is not None:
            term(f"  {BOLD}public key{RESET}: {b64(device.public_key)}\n")
        if device.private_key is not None:
            term(f"  {BOLD}private key{RESET}: {masked(device.private_key)}\n")
        if device.listen_port:
            term(f"  {BOLD}listening port{RESET}: {device.listen_port}\n")
        if device.fwmark:
            term(f"  {BOLD}fwmark{RESET}: 0x{device.fwmark:x}\n")
        peers = sort_by_handshake(device.peers)
        if peers:
            term("\n")
        for index, peer in enumerate(peers):
            term(f"{YELLOW}{BOLD}peer{RESET}: {YELLOW}{b64(peer.public_key)}{RESET}\n")
            if peer.preshared_key is not None:
                term(f"  {BOLD}preshared key{RESET}: {masked(peer.preshared_key)}\n")
            if peer.endpoint is not None:
                term(f"  {BOLD}endpoint{RESET}: {endpoint_text(peer.endpoint)}\n")
            term(f"  {BOLD}allowed ips{RESET}: ")
            if peer.allowed_ips:
                term(format_allowed_ips(peer.allowed_ips, ", ").replace("/", f"{CYAN}/{RESET}") + "\n")
            else:
                term("(none)\n")
            if peer.last_handshake_time_sec:
                term(f"  {BOLD}latest handshake{RESET}: {ago(peer.last_handshake_time_sec)}\n")
            if peer.rx_bytes or peer.tx_bytes:
                term(f"  {BOLD}transfer{RESET}: ")
                term(f"{size(peer.rx_bytes)} received, ")
                term(f"{size(peer.tx_bytes)} sent\n")
            if peer.persistent_keepalive_interval:
                term(f"  {BOLD}persistent keepalive{RESET}: every {pretty_time(peer.persistent_keepalive_interval)}\n")
            if index + 1 < len(peers):
                term("\n")

    def show_field(self, device: Device, param: str, with_interface: bool, command: str) -> bool:
        prefix = f"{device.name}\t" if with_interface else ""
        out = self.out
        if param == "public-key":
            out(f"{prefix}{maybe_key(device.public_key)}\n")
        elif param == "private-key":
            out(f"{prefix}{maybe_key(device.private_key)}\n")
        elif param == "listen-port":
            out(f"{prefix}{device.listen_port}\n")
        elif param == "fwmark":
            out(f"{prefix}{fwmark_text(device.fwmark)}\n")
        elif param == "endpoints":
            # wg 1.0.20210914 names the interface once, before the first peer
            # only (and alone, without a line end, when there is no peer).
            out(prefix)
            for peer in device.peers:
                where = endpoint_text(peer.endpoint) if peer.endpoint is not None else "(none)"
                out(f"{b64(peer.public_key)}\t{where}\n")
        elif param == "allowed-ips":
            for peer in device.peers:
                ips = format_allowed_ips(peer.allowed_ips, " ") or "(none)"
                out(f"{prefix}{b64(peer.public_key)}\t{ips}\n")
        elif param == "latest-handshakes":
            for peer in device.peers:
                out(f"{prefix}{b64(peer.public_key)}\t{peer.last_handshake_time_sec}\n")
        elif param == "transfer":
            for peer in device.peers:
                out(f"{prefix}{b64(peer.public_key)}\t{peer.rx_bytes}\t{peer.tx_bytes}\n")
        elif param == "persistent-keepalive":
            for peer in device.peers:
                out(f"{prefix}{b64(peer.public_key)}\t{peer.persistent_keepalive_interval or 'off'}\n")
        elif param == "preshared-keys":
            for peer in device.peers:
                out(f"{prefix}{b64(peer.public_key)}\t{maybe_key(peer.preshared_key)}\n")
        elif param == "peers":
            for peer in device.peers:
                out(f"{prefix}{b64(peer.public_key)}\n")
        elif param == "dump":
            out(f"{prefix}{maybe_key(device.private_key)}\t{maybe_key(device.public_key)}\t"
                f"{device.listen_port}\t{fwmark_text(device.fwmark)}\n")
            for peer in device.peers:
                where = endpoint_text(peer.endpoint) if peer.endpoint is not None else "(none)"
                ips = format_allowed_ips(peer.allowed_ips, ",") or "(none)"
                out(f"{prefix}{b64(peer.public_key)}\t{maybe_key(peer.preshared_key)}\t{where}\t{ips}\t"
                    f"{peer.last_handshake_time_sec}\t{peer.rx_bytes}\t{peer.tx_bytes}\t"
                    f"{peer.persistent_keepalive_interval or 'off'}\n")
        else:
            self.err(f"Invalid parameter: `{c_string(param)}'\n")
            self.show_usage(command)
            return False
        return True

    # -- showconf -----------------------------------------------------------------

    def showconf(self, args: list[str]) -> int:
        if len(args) != 2:
            self.err(f"Usage: {self.prog} {args[0]} <interface>\n")
            return 1
        try:
            device = control.device(args[1])
        except WireGuardError as error:
            self.perror("Unable to access interface", error)
            return 1
        lines = ["[Interface]\n"]
        if device.listen_port:
            lines.append(f"ListenPort = {device.listen_port}\n")
        if device.fwmark:
            lines.append(f"FwMark = 0x{device.fwmark:x}\n")
        if device.private_key is not None:
            lines.append(f"PrivateKey = {b64(device.private_key)}\n")
        lines.append("\n")
        for index, peer in enumerate(device.peers):
            lines.append(f"[Peer]\nPublicKey = {b64(peer.public_key)}\n")
            if peer.preshared_key is not None:
                lines.append(f"PresharedKey = {b64(peer.preshared_key)}\n")
            if peer.allowed_ips:
                lines.append(f"AllowedIPs = {format_allowed_ips(peer.allowed_ips, ', ')}\n")
            if peer.endpoint is not None:
                try:
                    lines.append(f"Endpoint = {peer.endpoint}\n")
                except OSError:
                    pass  # wg(8) leaves out an endpoint getnameinfo cannot print
            if peer.persistent_keepalive_interval:
                lines.append(f"PersistentKeepalive = {peer.persistent_keepalive_interval}\n")
            if index + 1 < len(device.peers):
                lines.append("\n")
        self.out("".join(lines))
        return 0

    # -- set, setconf, addconf, syncconf --------------------------------------------

    def set(self, args: list[str]) -> int:
        if len(args) < 3:
            self.err(f"Usage: {self.prog} {args[0]} {SET_USAGE}\n")
            return 1
        draft = Parser(self.err).command_line(args[2:])
        if draft is None:
            return 1
        return self._apply(interface_name(args[1]), draft)

    def setconf(self, args: list[str]) -> int:
        command = args[0]
        if len(args) != 3:
            self.err(f"Usage: {self.prog} {command} <interface> <configuration filename>\n")
            return 1
        try:
            fd = os.open(c_string(args[2]), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            self.perror("fopen", error)
            return 1
        try:
            data = read_until_error(fd)
        finally:
            os.close(fd)
        config = ConfigFile(Parser(self.err), append=command == "addconf")
        with gc_paused():
            for line in read_config_lines(data):
                if not config.read_line(line):
                    self.err("Configuration parsing error\n")
                    return 1
        draft = config.finish()
        if draft is None:
            self.err("Invalid configuration\n")
            return 1
        name = interface_name(args[1])
        if command == "syncconf" and draft.peers:
            try:
                current = control.device(name)
            except WireGuardError as error:
                self.perror("Unable to retrieve current interface configuration", error)
                return 1
            if current.peers:
                draft.replace_peers = False
                removals = stale_peers(draft, current)
                draft.peers[:0] = removals
        return self._apply(name, draft)

    def _apply(self, name: str, draft) -> int:
        try:
            control.configure(name, draft.to_config(), replace_peers=draft.replace_peers)
        except WireGuardError as error:
            self.perror("Unable to modify interface", error)
            return 1
        return 0

    # -- keys ---------------------------------------------------------------------

    def genkey(self, args: list[str]) -> int:
        if len(args) != 1:
            self.err(f"Usage: {self.prog} {args[0]}\n")
            return 1
        try:
            mode = os.fstat(self._stdout.fileno()).st_mode
            if stat.S_ISREG(mode) and mode & stat.S_IRWXO:
                self.err(
                    "Warning: writing to world accessible file.\nConsider setting the umask to 077 and trying again.\n"
                )
        except (AttributeError, OSError, ValueError):
            pass
        key = os.urandom(KEY_LEN)
        if args[0] == "genkey":
            from wgc import _crypto  # libsodium: loaded only by the commands that need it

            key = _crypto.clamp(key)
        self.out(b64(key) + "\n")
        return 0

    def pubkey(self, args: list[str]) -> int:
        if len(args) != 1:
            self.err(f"Usage: {self.prog} {args[0]}\n")
            return 1
        text = read_exactly(self._stdin, 44)
        if len(text) != 44:
            self.err(f"{self.prog}: Key is not the correct length or format\n")
            return 1
        while True:
            byte = self._stdin.read(1)
            if not byte:
                break
            if byte == b"\0" or byte.decode("latin-1") in " \t\n\v\f\r":
                continue
            self.err(f"{self.prog}: Trailing characters found after key\n")
            return 1
        try:
            private = key_from_base64(text.split(b"\0", 1)[0].decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            self.err(f"{self.prog}: Key is not the correct length or format\n")
            return 1
        from wgc import _crypto

        self.out(b64(_crypto.public_key(_crypto.clamp(private))) + "\n")
        return 0


# -- formatting -------------------------------------------------------------------


def maybe_key(key: bytes | None) -> str:
    return "(none)" if key is None else b64(key)


def masked(key: bytes) -> str:
    return b64(key) if os.environ.get("WG_HIDE_KEYS") == "never" else "(hidden)"


def fwmark_text(mark: int) -> str:
    return f"0x{mark:x}" if mark else "off"


def ip_text(ip) -> str:
    """The address part of an allowed IP, as inet_ntop prints it."""
    return str(ip).rpartition("/")[0]


def endpoint_text(endpoint) -> str:
    try:
        return str(endpoint)
    except _socket.gaierror as error:
        return str(error.strerror)
    except OSError as error:
        return os.strerror(error.errno or errno.EIO)


def strip_ansi(text: str) -> str:
    """What wg(8) prints without colours: each ESC [ and what follows up to and
    including the first ASCII letter is dropped (not when ESC [ ends the text)."""
    chars = list(text)
    length = len(chars)
    i = 0
    while i + 2 < length:
        if chars[i] == "\x1b" and chars[i + 1] == "[":
            chars[i] = chars[i + 1] = ""
            j = i + 2
            while j < length and not (chars[j].isascii() and chars[j].isalpha()):
                chars[j] = ""
                j += 1
            if j < length:
                chars[j] = ""
            i = j
        i += 1
    return "".join(chars)


def pretty_time(left: int) -> str:
    years, left = divmod(left, 365 * 24 * 60 * 60)
    days, left = divmod(left, 24 * 60 * 60)
    hours, left = divmod(left, 60 * 60)
    minutes, seconds = divmod(left, 60)
    parts = []
    for amount, unit in ((years, "year"), (days, "day"), (hours, "hour"), (minutes, "minute"), (seconds, "second")):
        if amount:
            parts.append(f"{amount} {CYAN}{unit}{'' if amount == 1 else 's'}{RESET}")
    return ", ".join(parts)


def ago(seconds: int) -> str:
    now = int(time.time())
    if now == seconds:
        return "Now"
    if now < seconds:
        return f"({RED}System clock wound backward; connection problems may ensue.{RESET})"
    return pretty_time(now - seconds) + " ago"


def size(count: int) -> str:
    if count < 1024:
        return f"{count & 0xFFFFFFFF} {CYAN}B{RESET}"
    if count < 1024 ** 2:
        return f"{count / 1024:.2f} {CYAN}KiB{RESET}"
    if count < 1024 ** 3:
        return f"{count / (1024 * 1024):.2f} {CYAN}MiB{RESET}"
    if count < 1024 ** 4:
        return f"{count / (1024 * 1024 * 1024):.2f} {CYAN}GiB{RESET}"
    return f"{count / (1024 * 1024 * 1024) / 1024:.2f} {CYAN}TiB{RESET}"


def sort_by_handshake(peers):
    """Most recent handshake first, peers that never had one last (stable)."""
    def key(peer):
        never = not peer.last_handshake_time_sec and not peer.last_handshake_time_nsec
        return (never, -peer.last_handshake_time_sec, -peer.last_handshake_time_nsec)
    return sorted(peers, key=key)


# -- helpers ------------------------------------------------------------------------


def interface_name(name: str) -> str:
    """wg(8) copies the name into IFNAMSIZ bytes: at most 15 are kept."""
    raw = os.fsencode(c_string(name))[: IFNAMSIZ - 1]
    return os.fsdecode(raw)


def read_exactly(stream, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = stream.read(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def read_until_error(fd: int) -> bytes:
    """The file's bytes up to its end or the first read error, as getline stops."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def stale_peers(draft: Draft, current: Device) -> list[PeerDraft]:
    """syncconf: removals for the device's peers that the file does not name,
    in the order wg(8) puts them first (reverse order of their keys)."""
    wanted = {peer.public_key for peer in draft.peers}
    removals: list[PeerDraft] = []
    for key in sorted({peer.public_key for peer in current.peers} - wanted):
        peer = PeerDraft()
        peer.public_key = key
        peer.remove = True
        removals.insert(0, peer)
    return removals


def main(argv: list[str], prog: str = "wg", extended: bool = False) -> int:
    # As a C program: a closed pipe on stdout or Ctrl-C ends it by the signal
    # (so `wg show all dump | head -1` is quiet), not with a Python traceback.
    _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
    return Tool(prog, extended=extended).run(argv)
