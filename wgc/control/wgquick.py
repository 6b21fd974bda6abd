"""A built-in wg-quick(8): up, down, save and strip for a configuration file.

The behaviour follows the wg-quick script of wireguard-tools 1.0.20210914
(Debian 12's /usr/bin/wg-quick): the same reading of the file, the same
links, addresses, MTU, routes, fwmark rules, firewall tables, DNS and hooks,
in the same order, and the same `[#] command` lines on stderr naming the
equivalent ip/wg/nft command.  Links, addresses, routes and rules go through
rtnetlink (rtnetlink.py); the device is read through wgc.control, and the wg
commands the script runs (set, setconf, showconf) are the built-in wg's, in
this process, so that their messages are wg's; only the hooks (bash),
resolvconf, nft or iptables-restore and the userspace daemon are other
programs.

Without a WireGuard kernel module the link is made by starting a userspace
implementation: WG_QUICK_USERSPACE_IMPLEMENTATION when set (as the script
does), else this wgc.
"""
from __future__ import annotations

import errno
import io
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

from wgc import control
from wgc.control import rtnetlink
from wgc.control.rtnetlink import RT_TABLE_MAIN, RTM_DELRULE, RTM_NEWRULE, Rtnl
from wgc.control.wgtool import Tool, ip_text
from wgc.errors import WireGuardError

NAME_RE = re.compile(r"[a-zA-Z0-9_=+.-]{1,15}")
FILE_RE = re.compile(r"(?:^|/)([a-zA-Z0-9_=+.-]{1,15})\.conf$")
SPACE = " \t\n\r\v\f"  # [[:space:]]
IFS = " \t\n"
DEFAULT_FWMARK_TABLE = 51820


class Terminated(BaseException):
    """SIGTERM arrived during up."""


def _terminated(_signum, _frame):
    raise Terminated()


class Failure(Exception):
    """Ends the command with exit status 1; the message, if any, was printed or is printed."""


class Config:
    """A configuration file read as the script reads it: wg-quick's own keys
    from [Interface] taken out, every other line kept for wg setconf."""

    def __init__(self):
        self.path = ""
        self.interface = ""
        self.wg_config = ""
        self.addresses: list[str] = []
        self.mtu = ""
        self.dns: list[str] = []
        self.dns_search: list[str] = []
        self.table = ""
        self.pre_up: list[str] = []
        self.post_up: list[str] = []
        self.pre_down: list[str] = []
        self.post_down: list[str] = []
        self.save_config = False


def _bool(value: str) -> bool:
    if value.lower() == "true":
        return True
    if value.lower() == "false":
        return False
    raise Failure(f"`{value}' is neither true nor false")


def parse_text(config: Config, text: str) -> None:
    in_interface = False
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's last line end
    for raw in lines:
        line = raw.strip(IFS)  # bash's `read -r line` trims IFS whitespace
        stripped = line.split("#", 1)[0]
        key = stripped.split("=", 1)[0].strip(SPACE)
        value = stripped.split("=", 1)[1] if "=" in stripped else stripped
        value = value.strip(SPACE)
        if key.startswith("["):
            in_interface = False
        if key.lower() == "[interface]":
            in_interface = True
        if in_interface:
            name = key.lower()
            if name == "address":
                config.addresses += value.replace(",", " ").split()
                continue
            if name == "mtu":
                config.mtu = value
                continue
            if name == "dns":
                for item in value.replace(",", " ").split():
                    if re.fullmatch(r"[0-9.]+", item) or ":" in item:
                        config.dns.append(item)
                    else:
                        config.dns_search.append(item)
                continue
            if name == "table":
                config.table = value
                continue
            if name in ("preup", "predown", "postup", "postdown"):
                {"preup": config.pre_up, "predown": config.pre_down,
                 "postup": config.post_up, "postdown": config.post_down}[name].append(value)
                continue
            if name == "saveconfig":
                config.save_config = _bool(value)
                continue
        config.wg_config += line + "\n"


def parse_options(argument: str, err) -> Config:
    config = Config()
    path = argument
    if NAME_RE.fullmatch(path):
        path = f"/etc/wireguard/{path}.conf"
    if not os.path.exists(path):
        raise Failure(f"`{path}' does not exist")
    found = FILE_RE.search(path)
    if found is None:
        raise Failure("The config file must be a valid interface name, followed by .conf")
    config.interface = found.group(1)
    config.path = os.path.realpath(path)
    try:
        mode = os.stat(config.path).st_mode & os.stat(os.path.dirname(config.path) or "/").st_mode
        if mode & 0o007:
            err(f"Warning: `{config.path}' is world accessible\n")
    except OSError:
        pass
    with open(config.path, "rb") as file:
        text = file.read().replace(b"\0", b"").decode("utf-8", "surrogateescape")
    parse_text(config, text)
    return config


def resolve_table(name: str) -> int:
    """A routing table number as ip(8) reads it: a name from rt_tables or a number."""
    tables = {"main": 254, "default": 253, "local": 255}
    for path in ("/etc/iproute2/rt_tables", "/usr/share/iproute2/rt_tables"):
        try:
            with open(path) as file:
                for row in file:
                    fields = row.split("#", 1)[0].split()
                    if len(fields) >= 2 and fields[0].isdigit():
                        tables.setdefault(fields[1], int(fields[0]))
        except OSError:
            continue
    if name in tables:
        return tables[name]
    try:
        number = int(name, 0)
    except ValueError:
        raise Failure(f'Error: argument "{name}" is wrong: "table" value is invalid') from None
    if not 0 <= number <= 0xFFFFFFFF:
        raise Failure(f'Error: argument "{name}" is wrong: "table" value is invalid')
    return number


def self_command() -> list[str]:
    """How to start this wgc again: the frozen executable, or this Python with -m wgc."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "wgc"]


def sort_routes(prefixes: list[str]) -> list[str]:
    """`sort -nr -k 2 -t /` in the C locale: longest prefix first, ties by the
    whole line, also reversed."""
    def number(text: str) -> int:
        digits = re.match(r"[ \t]*(\d*)", text.split("/", 1)[1] if "/" in text else "")
        return int(digits.group(1)) if digits and digits.group(1) else 0
    ordered = sorted(prefixes, key=lambda p: p.encode(), reverse=True)
    return sorted(ordered, key=number, reverse=True)  # stable: the reversed line order stays for ties


class WgQuick:
    def __init__(self, prog: str, stdout=None, stderr=None):
        self.prog = prog
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self.config = Config()
        self.have_set_dns = False
        self.have_set_firewall = False
        # As the script puts its own directory first in PATH (for the wg next
        # to it), so do we for the directory of the executable run as wg-quick.
        here = os.path.realpath(sys.executable if getattr(sys, "frozen", False) else sys.argv[0] if sys.argv else "")
        self.env = dict(os.environ, LC_ALL="C")
        if here and not here.endswith(".py"):
            self.env["PATH"] = os.path.dirname(here) + os.pathsep + self.env.get("PATH", "")

    # -- output and helpers -----------------------------------------------------------

    def err(self, text: str) -> None:
        self.stderr.write(text)
        self.stderr.flush()

    def echo(self, command: str) -> None:
        self.err(f"[#] {command}\n")

    def run(self, argv: list[str], input_text: str | None = None, capture=False) -> subprocess.CompletedProcess:
        self.stdout.flush()
        return subprocess.run(argv, check=False, input=input_text, text=True, env=self.env,
                              stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.DEVNULL if capture else None)

    def wg(self, *args: str, echo: bool = True) -> str:
        """The built-in wg in this process; its output, or Failure with its messages shown."""
        if echo:
            self.echo("wg " + " ".join(args))
        out, errors = io.BytesIO(), io.BytesIO()
        status = Tool("wg", stdout=out, stderr=errors).run(list(args))
        if errors.getvalue():
            self.err(errors.getvalue().decode("utf-8", "surrogateescape"))
        if status:
            raise Failure()
        return out.getvalue().decode("utf-8", "surrogateescape")

    def rt(self, echo: str, build, *args, **kw) -> None:
        self.echo(echo)
        with Rtnl() as nl:
            try:
                nl.request(build, *args, **kw)
            except WireGuardError as error:
                raise Failure(error.strerror) from None

    def ifindex(self) -> int:
        with Rtnl() as nl:
            link = nl.link(self.config.interface)
        if link is None:
            raise Failure(f'Cannot find device "{self.config.interface}"')
        return link.index

    def hooks(self, hooks: list[str]) -> None:
        for hook in hooks:
            hook = hook.replace("%i", self.config.interface)
            self.echo(hook)
            status = self.run(["bash", "-e", "-o", "pipefail", "-O", "extglob", "-c", hook]).returncode
            if status:
                raise Failure()

    def device(self) -> control.Device:
        """The device as `wg show` would read it; its errors as wg prints them."""
        try:
            return control.device(self.config.interface)
        except WireGuardError as error:
            self.err(f"Unable to access interface: {os.strerror(error.errno or errno.EIO)}\n")
            raise Failure() from None

    def fwmark(self) -> int | None:
        try:
            return control.device(self.config.interface).fwmark or None
        except WireGuardError:
            return None

    def allowed_ips(self) -> list[str]:
        """Every peer's allowed IPs, written as wg(8) prints them."""
        return [f"{ip_text(ip)}/{ip.cidr}" for peer in self.device().peers for ip in peer.allowed_ips]

    def resolvconf_name(self) -> str:
        prefix = ""
        try:
            with open("/etc/resolvconf/interface-order") as file:
                for row in file:
                    match = re.fullmatch(r"([A-Za-z0-9-]+)\*", row.strip(IFS))
                    if match:
                        prefix = match.group(1) + "."
                        break
        except OSError:
            pass
        return prefix + self.config.interface

    # -- link ---------------------------------------------------------------------------

    def add_if(self) -> None:
        name = self.config.interface
        self.echo(f"ip link add {name} type wireguard")
        try:
            with Rtnl() as nl:
                nl.request(rtnetlink.new_link, name)
            return
        except WireGuardError as error:
            failure = error
            self.err(f"{error.strerror}\n")  # as ip prints it, before the script goes on
        implementation = os.environ.get("WG_QUICK_USERSPACE_IMPLEMENTATION")
        command = [implementation] if implementation else self_command()
        if os.path.exists("/sys/module/wireguard") or shutil.which(command[0]) is None \
                or failure.errno not in (errno.EOPNOTSUPP, errno.ENODEV):
            raise Failure()
        self.err("[!] No WireGuard kernel module: starting the userspace implementation instead.\n")
        self.echo(f"{implementation or 'wgc'} {name}")
        if self.run(command + [name]).returncode:
            raise Failure()

    def del_if(self) -> None:
        config = self.config
        if self.have_set_dns:
            self.unset_dns()
        if self.have_set_firewall:
            self.remove_firewall()
        table = self.fwmark() if config.table in ("", "auto") else None
        if table is not None and any(ip.endswith("/0") for ip in self.allowed_ips()):
            with Rtnl() as nl:
                for family, flag in ((socket.AF_INET, "-4"), (socket.AF_INET6, "-6")):
                    while [r for r in nl.rules(family) if r.table == table]:
                        self.rt(f"ip {flag} rule delete table {table}", rtnetlink.rule, RTM_DELRULE, family, table)
                    while [r for r in nl.rules(family)
                           if r.table == RT_TABLE_MAIN and r.suppress_prefixlength == 0 and not r.flags
                           and r.fwmark is None]:
                        self.rt(f"ip {flag} rule delete table main suppress_prefixlength 0", rtnetlink.rule,
                                RTM_DELRULE, family, RT_TABLE_MAIN, suppress_prefixlength=0)
        self.rt(f"ip link delete dev {config.interface}", rtnetlink.del_link, self.ifindex())

    # -- up -----------------------------------------------------------------------------

    def add_addr(self, text: str) -> None:
        flag = "-6" if ":" in text else "-4"
        self.echo(f"ip {flag} address add {text} dev {self.config.interface}")
        try:
            interface = ipaddress.ip_interface(text)
        except ValueError:
            raise Failure(f'Error: any valid prefix is expected rather than "{text}".') from None
        if (flag == "-6") != (interface.version == 6):
            raise Failure(f'Error: any valid prefix is expected rather than "{text}".')
        with Rtnl() as nl:
            try:
                nl.request(rtnetlink.new_address, self.ifindex(), interface.ip.packed,
                           interface.network.prefixlen)
            except WireGuardError as error:
                raise Failure(error.strerror) from None

    def set_mtu_up(self) -> None:
        name = self.config.interface
        if self.config.mtu:
            try:
                mtu = int(self.config.mtu, 0)
            except ValueError:
                raise Failure(f'Error: argument "{self.config.mtu}" is wrong: Invalid "mtu" value') from None
            self.rt(f"ip link set mtu {self.config.mtu} up dev {name}", rtnetlink.set_link, self.ifindex(),
                    mtu=mtu, up=True)
            return
        mtu = 0
        with Rtnl() as nl:
            links = {link.index: link.mtu for link in nl.links()}
            for peer in self.device().peers:
                if peer.endpoint is None:
                    continue
                route = nl.route_get(peer.endpoint.address.packed)
                if route is None:
                    continue
                mtu = max(mtu, self._route_mtu(route, links))
            if mtu == 0:
                defaults = [r for r in nl.routes(socket.AF_INET) if r.table == RT_TABLE_MAIN and r.dst_len == 0]
                if defaults:
                    mtu = max(mtu, self._route_mtu(defaults[0], links))
        if mtu <= 0:
            mtu = 1500
        self.rt(f"ip link set mtu {mtu - 80} up dev {name}", rtnetlink.set_link, self.ifindex(),
                mtu=mtu - 80, up=True)

    @staticmethod
    def _route_mtu(route, links: dict[int, int]) -> int:
        """The script reads `mtu N` in ip's text for the route, else its device's MTU;
        a locked one reads `mtu lock N`, which it does not match."""
        if route.mtu is not None and not route.mtu_locked:
            return route.mtu
        return links.get(route.oif or 0, 0)

    def set_dns(self) -> None:
        config = self.config
        if not config.dns:
            return
        text = "".join(f"nameserver {server}\n" for server in config.dns)
        if config.dns_search:
            text += "search " + " ".join(config.dns_search) + "\n"
        name = self.resolvconf_name()
        self.echo(f"resolvconf -a {name} -m 0 -x")
        if shutil.which("resolvconf", path=self.env["PATH"]) is None:
            # The script fails here too (command not found) and takes the link down again.
            raise Failure("resolvconf is not installed, so DNS = cannot be set "
                          "(install openresolv or resolvconf, or remove DNS from the configuration)")
        if self.run(["resolvconf", "-a", name, "-m", "0", "-x"], input_text=text).returncode:
            raise Failure()
        self.have_set_dns = True

    def unset_dns(self) -> bool:
        if not self.config.dns:
            return True
        name = self.resolvconf_name()
        self.echo(f"resolvconf -d {name} -f")
        if shutil.which("resolvconf", path=self.env["PATH"]) is None:
            return False
        return self.run(["resolvconf", "-d", name, "-f"]).returncode == 0

    def add_route(self, prefix: str) -> None:
        config = self.config
        flag = "-6" if ":" in prefix else "-4"
        if config.table == "off":
            return
        network = ipaddress.ip_network(prefix, strict=False)
        address, length = network.network_address.packed, network.prefixlen
        if config.table and config.table != "auto":
            table = resolve_table(config.table)
            self.rt(f"ip {flag} route add {prefix} dev {config.interface} table {config.table}",
                    rtnetlink.new_route, self.ifindex(), address, length, table)
        elif prefix.endswith("/0"):
            self.add_default(prefix, network)
        else:
            index = self.ifindex()
            with Rtnl() as nl:
                routes = nl.routes(socket.AF_INET6 if flag == "-6" else socket.AF_INET)
            for route in routes:
                if route.table != RT_TABLE_MAIN or route.oif != index or route.dst_len > length:
                    continue
                covering = ipaddress.ip_network((route.destination or bytes(len(address)), route.dst_len),
                                                strict=False)
                # One family: the routes asked for are the network's (typeshed cannot tell).
                if network.subnet_of(covering):  # type: ignore[arg-type]
                    return  # a route through the link already covers it
            self.rt(f"ip {flag} route add {prefix} dev {config.interface}", rtnetlink.new_route, index,
                    address, length)

    def add_default(self, prefix: str, network) -> None:
        name = self.config.interface
        table = self.fwmark()
        if table is None:
            table = DEFAULT_FWMARK_TABLE
            with Rtnl() as nl:
                used = {r.table for family in (socket.AF_INET, socket.AF_INET6) for r in nl.routes(family)}
            while table in used:
                table += 1
            self.wg("set", name, "fwmark", str(table))
        family, flag, pf = ((socket.AF_INET6, "-6", "ip6") if network.version == 6 else
                            (socket.AF_INET, "-4", "ip"))
        index = self.ifindex()
        self.rt(f"ip {flag} route add {prefix} dev {name} table {table}", rtnetlink.new_route, index,
                network.network_address.packed, 0, table)
        self.rt(f"ip {flag} rule add not fwmark {table} table {table}", rtnetlink.rule, RTM_NEWRULE, family,
                table, fwmark=table, invert=True)
        self.rt(f"ip {flag} rule add table main suppress_prefixlength 0", rtnetlink.rule, RTM_NEWRULE, family,
                RT_TABLE_MAIN, suppress_prefixlength=0)

        with Rtnl() as nl:
            addresses = [socket.inet_ntop(a.family, a.address) for a in nl.addresses(family, index)]
        marker = f'-m comment --comment "wg-quick(8) rule for {name}"'
        nft_table = f"wg-quick-{name}"
        nft = [f"add table {pf} {nft_table}",
               f"add chain {pf} {nft_table} preraw {{ type filter hook prerouting priority -300; }}",
               f"add chain {pf} {nft_table} premangle {{ type filter hook prerouting priority -150; }}",
               f"add chain {pf} {nft_table} postmangle {{ type filter hook postrouting priority -150; }}"]
        restore = ["*raw"]
        for address in addresses:
            # Nothing from outside may reach the tunnel's own addresses.
            restore.append(f"-I PREROUTING ! -i {name} -d {address} -m addrtype ! --src-type LOCAL -j DROP {marker}")
            nft.append(f'add rule {pf} {nft_table} preraw iifname != "{name}" {pf} daddr {address} '
                       f"fib saddr type != local drop")
        restore += ["COMMIT", "*mangle",
                    f"-I POSTROUTING -m mark --mark {table} -p udp -j CONNMARK --save-mark {marker}",
                    f"-I PREROUTING -p udp -j CONNMARK --restore-mark {marker}", "COMMIT"]
        nft.append(f"add rule {pf} {nft_table} postmangle meta l4proto udp mark {table} ct mark set mark ")
        nft.append(f"add rule {pf} {nft_table} premangle meta l4proto udp meta mark set ct mark ")
        if family == socket.AF_INET:
            self.echo("sysctl -q net.ipv4.conf.all.src_valid_mark=1")
            try:
                with open("/proc/sys/net/ipv4/conf/all/src_valid_mark", "w") as file:
                    file.write("1\n")
            except OSError as error:
                raise Failure(f"sysctl: setting key \"net.ipv4.conf.all.src_valid_mark\": "
                              f"{os.strerror(error.errno or errno.EIO)}") from None
        if shutil.which("nft", path=self.env["PATH"]):
            self.echo("nft -f /dev/stdin")
            status = self.run(["nft", "-f", "/dev/stdin"], input_text="".join(f"{line}\n" for line in nft))
        else:
            tool = "ip6tables" if network.version == 6 else "iptables"
            self.echo(f"{tool}-restore -n")
            status = self.run([f"{tool}-restore", "-n"], input_text="".join(f"{line}\n" for line in restore))
        if status.returncode:
            raise Failure()
        self.have_set_firewall = True

    def remove_firewall(self) -> bool:
        name = self.config.interface
        ok = True
        if shutil.which("nft", path=self.env["PATH"]):
            listed = self.run(["nft", "list", "tables"], capture=True).stdout or ""
            deletes = "".join(f"delete {row}\n" for row in listed.splitlines() if row.endswith(f" wg-quick-{name}"))
            if deletes:
                self.echo("nft -f /dev/stdin")
                ok = self.run(["nft", "-f", "/dev/stdin"], input_text=deletes).returncode == 0 and ok
        marker = f'-m comment --comment "wg-quick(8) rule for {name}"'
        if shutil.which("iptables", path=self.env["PATH"]):
            for tool in ("iptables", "ip6tables"):
                saved = self.run([f"{tool}-save"], capture=True).stdout or ""
                restore, found = [], False
                for row in saved.splitlines():
                    if row.startswith("*") or row == "COMMIT" or (row.startswith("-A ") and marker in row):
                        if row.startswith("-A"):
                            found = True
                            row = "-D" + row[2:]
                        restore.append(row)
                if found:
                    self.echo(f"{tool}-restore -n")
                    ok = self.run([f"{tool}-restore", "-n"],
                                  input_text="".join(f"{row}\n" for row in restore)).returncode == 0 and ok
        return ok

    def set_config(self) -> None:
        fd = os.memfd_create("wg-quick-strip")
        try:
            os.write(fd, (self.config.wg_config + "\n").encode("utf-8", "surrogateescape"))
            self.wg("setconf", self.config.interface, f"/dev/fd/{fd}")
        finally:
            os.close(fd)

    def save_config(self) -> None:
        config = self.config
        with Rtnl() as nl:
            link = nl.link(config.interface)
            addresses = [] if link is None else [str(a) for a in nl.addresses(socket.AF_UNSPEC, link.index)]
        lines = ["[Interface]"] + [f"Address = {address}" for address in addresses]
        resolv = self.run(["resolvconf", "-l", self.resolvconf_name()], capture=True) \
            if shutil.which("resolvconf", path=self.env["PATH"]) else None
        if resolv is not None and resolv.returncode == 0:
            text = resolv.stdout
        else:
            try:
                with open(f"/etc/resolvconf/run/interface/{self.resolvconf_name()}") as file:
                    text = file.read()
            except OSError:
                text = ""
        for row in text.splitlines():
            match = re.fullmatch(r"nameserver ([a-zA-Z0-9_=+:%.-]+)", row)
            if match:
                lines.append(f"DNS = {match.group(1)}")
        if config.mtu and link is not None:
            lines.append(f"MTU = {link.mtu}")
        if config.table:
            lines.append(f"Table = {config.table}")
        if config.save_config:
            lines.append("SaveConfig = true")
        for key, hooks in (("PreUp", config.pre_up), ("PostUp", config.post_up),
                           ("PreDown", config.pre_down), ("PostDown", config.post_down)):
            lines += [f"{key} = {hook}" for hook in hooks]
        current = self.wg("showconf", config.interface).rstrip("\n")
        saved = current.replace("[Interface]\n", "\n".join(lines) + "\n", 1) + "\n"
        temporary = config.path + ".tmp"
        old_umask = os.umask(0o077)
        try:
            try:
                with open(temporary, "w", encoding="utf-8", errors="surrogateescape") as file:
                    file.write(saved)
                    file.flush()
                    os.fsync(file.fileno())
            except OSError:
                raise Failure("Could not write configuration file") from None
            try:
                os.rename(temporary, config.path)
            except OSError:
                raise Failure("Could not move configuration file") from None
        finally:
            os.umask(old_umask)
            if os.path.exists(temporary):
                os.unlink(temporary)

    # -- commands ------------------------------------------------------------------------

    def is_wireguard(self) -> bool:
        try:
            return self.config.interface in control.device_names()
        except WireGuardError:
            return False

    def up(self) -> None:
        config = self.config
        with Rtnl() as nl:
            if nl.link(config.interface) is not None:
                raise Failure(f"`{config.interface}' already exists")
        # The script's exit trap also runs on SIGINT and SIGTERM: both end up as exceptions here.
        previous = signal.signal(signal.SIGTERM, _terminated)
        try:
            self.hooks(config.pre_up)
            self.add_if()
            self.set_config()
            for address in config.addresses:
                self.add_addr(address)
            self.set_mtu_up()
            self.set_dns()
            for prefix in sort_routes(self.allowed_ips()):
                self.add_route(prefix)
            self.hooks(config.post_up)
        except BaseException as failure:
            # As the script's exit trap: whatever was set up goes again.
            if isinstance(failure, Failure):
                self.report(failure)
            try:
                self.del_if()
            except Failure as cleanup:
                self.report(cleanup)
            if isinstance(failure, Failure):
                raise Failure() from None
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)

    def down(self) -> None:
        config = self.config
        if not self.is_wireguard():
            raise Failure(f"`{config.interface}' is not a WireGuard interface")
        self.hooks(config.pre_down)
        if config.save_config:
            self.save_config()
        self.del_if()
        self.unset_dns()
        self.remove_firewall()
        self.hooks(config.post_down)

    def save(self) -> None:
        if not self.is_wireguard():
            raise Failure(f"`{self.config.interface}' is not a WireGuard interface")
        self.save_config()

    def strip(self) -> None:
        self.stdout.write(self.config.wg_config + "\n")
        self.stdout.flush()

    def usage(self) -> str:
        return f"""Usage: {self.prog} [ up | down | save | strip ] [ CONFIG_FILE | INTERFACE ]

  INTERFACE stands for /etc/wireguard/INTERFACE.conf; a CONFIG_FILE's own name,
  less `.conf', is the interface name.  The file is what wg(8) `setconf' reads,
  plus these [Interface] keys, which {self.prog} handles itself:

  - Address: addresses (with an optional /prefix) for the interface; repeatable,
    comma-separated.
  - DNS: name servers (and search domains) given to resolvconf while it is up.
  - MTU: the interface MTU; without it, 80 below that of the route to the
    endpoints (or the default route).
  - Table: the routing table for the routes to the allowed IPs; `auto' (or
    unset) is the main table with fwmark rules for a default route, `off' adds
    no routes.
  - PreUp, PostUp, PreDown, PostDown: bash(1) commands run at those moments;
    `%i' becomes the interface name.
  - SaveConfig: `true' writes the interface's state back to the file on down.

This is wgc's built-in wg-quick; see wg-quick(8).
"""

    def main(self, args: list[str]) -> int:
        if len(args) == 1 and args[0] in ("--help", "-h", "help"):
            self.err(self.usage())
            return 0
        if len(args) != 2 or args[0] not in ("up", "down", "save", "strip"):
            self.err(self.usage())
            return 1
        if os.geteuid() != 0:
            if shutil.which("sudo") is None:
                self.err(f"{self.prog}: must be run as root\n")
                return 1
            prompt = f"{self.prog} must be run as root. Please enter the password for %u to continue: "
            os.execvp("sudo", ["sudo", "-p", prompt, "--", *self_command(), "--wg-quick", *args])
        try:
            self.config = parse_options(args[1], self.err)
            {"up": self.up, "down": self.down, "save": self.save, "strip": self.strip}[args[0]]()
        except Failure as failure:
            self.report(failure)
            return 1
        return 0

    def report(self, failure: Failure) -> None:
        """Prints a failure's message: ip's own words as ip prints them, others as the script's die."""
        if failure.args:
            text = failure.args[0]
            self.err(f"{text}\n" if text.startswith(("RTNETLINK", "Error", "Cannot")) else f"{self.prog}: {text}\n")


def main(argv: list[str], prog: str = "wg-quick") -> int:
    try:
        return WgQuick(prog).main(argv)
    except KeyboardInterrupt:
        return 130
    except Terminated:
        return 143
