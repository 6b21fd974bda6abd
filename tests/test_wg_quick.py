"""The built-in wg-quick against Debian's wg-quick (wireguard-tools 1.0.20210914).

For each configuration, in a fresh network namespace whose /run/wireguard and
/etc/wireguard are tmpfs of its own (a private mount namespace): Debian's
`wg-quick up` with WG_QUICK_USERSPACE_IMPLEMENTATION set to the wgc under
test, a record of the links, addresses, routes, rules, nftables ruleset,
src_valid_mark, `wg showconf`, what the hooks and resolvconf saw; `down`, and
the same record again; then the same with the built-in wg-quick (a symlink
named wg-quick to wgc).  The records must be equal, and after `down` equal to
the one taken before `up`.  Normalised: interface indexes (the second link
gets a new one) and IPv6 link-local addresses (stable-privacy, random per
link).  resolvconf is a small script that logs its calls and keeps what it
was given.  The `[#] ...` lines on stderr are not compared (see wgquick.py).

The rtnetlink messages are also checked byte by byte, without a kernel.
"""
import os
import re
import socket
import struct
import subprocess
import textwrap

import pytest

from netns import Netns, unique_name, wait_for
from wgc.control import rtnetlink
from wgc.control.wgquick import Config, parse_text, sort_routes
from wgc.netlink import NLMSGHDR
from wgnet import new_key, wgc_executable

DEBIAN = "/usr/bin/wg-quick"  # by path: the test's PATH starts with ours, also called wg-quick
FAKE_RESOLVCONF = """#!/bin/sh
# Logs each call; keeps what -a was given, as resolvconf -l shows it.
log="$RESOLVCONF_DIR/log"; echo "resolvconf $*" >> "$log"
case "$1" in
-a) cat > "$RESOLVCONF_DIR/$2"; cat "$RESOLVCONF_DIR/$2" >> "$log" ;;
-d) rm -f "$RESOLVCONF_DIR/$2" ;;
-l) cat "$RESOLVCONF_DIR/$2" 2>/dev/null ;;
esac
"""


class Box:
    """A network namespace plus a private mount namespace with its own
    /run/wireguard and /etc/wireguard, held by one sleeping process."""

    def __init__(self, tmp_path, resolvconf=True):
        self.tmp = tmp_path
        self.ns = Netns("wgqk")
        try:
            holder = self.ns.popen(
                "unshare", "--mount", "--propagation", "private", "sh", "-c",
                "mount -t tmpfs -o mode=0755 wgq /run/wireguard && mount -t tmpfs -o mode=0700 wgq /etc/wireguard"
                " && echo ready && exec sleep 3600", stdout=subprocess.PIPE, text=True)
            assert holder.stdout.readline() == "ready\n"
            self.pid = holder.pid
            self.bin = tmp_path / "bin"
            self.bin.mkdir()
            self.ours = str(self.bin / "wg-quick")
            os.symlink(wgc_executable(), self.ours)
            self.resolv = tmp_path / "resolvconf"
            self.resolv.mkdir()
            path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            if resolvconf:
                (self.bin / "resolvconf").write_text(FAKE_RESOLVCONF)
                (self.bin / "resolvconf").chmod(0o755)
            self.env = dict(os.environ, PATH=f"{self.bin}:{path}", RESOLVCONF_DIR=str(self.resolv),
                            WG_QUICK_USERSPACE_IMPLEMENTATION=wgc_executable())
            self.baseline = None
        except BaseException:
            self.close()
            raise

    def run(self, *cmd, check=True, input=None, timeout=30) -> subprocess.CompletedProcess:
        proc = subprocess.run(["nsenter", "-t", str(self.pid), "-n", "-m", "--", *cmd], input=input, text=True,
                              capture_output=True, env=self.env, timeout=timeout, check=False)
        if check and proc.returncode:
            raise AssertionError(f"{cmd} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
        return proc

    def snapshot(self, iface) -> dict:
        state = {
            "links": self.run("ip", "-o", "link").stdout,
            "addresses": self.run("ip", "-o", "addr").stdout,
            "routes": self.run("ip", "route", "show", "table", "all").stdout,
            "rules": self.run("ip", "rule").stdout,
            "rules6": self.run("ip", "-6", "rule").stdout,
            "nft": self.run("nft", "list", "ruleset").stdout,
            "src_valid_mark": self.run("cat", "/proc/sys/net/ipv4/conf/all/src_valid_mark").stdout,
            "interfaces": self.run("wg", "show", "interfaces").stdout,
            "showconf": self.run("wg", "showconf", iface, check=False).stdout,
        }
        return {key: normalize(value) for key, value in state.items()}

    def close(self):
        self.ns.close()


def normalize(text: str) -> str:
    text = re.sub(r"(?m)^\d+: ", "N: ", text)
    text = re.sub(r"\bif\d+\b", "ifN", text)
    return re.sub(r"fe80::[0-9a-f:]+", "fe80::LL", text)


@pytest.fixture
def box(tmp_path):
    made = Box(tmp_path)
    yield made
    made.close()


def cycle(box, program, path, iface, between=None, setup_check=True) -> dict:
    """up, record, [between()], down, record, with one wg-quick."""
    hooks = box.tmp / "hooks"
    hooks.write_text("")
    box.run("sh", "-c", "echo 0 > /proc/sys/net/ipv4/conf/all/src_valid_mark")
    before = box.snapshot(iface)
    up = box.run(program, "up", path, check=False)
    result = {"up_status": up.returncode, "up": box.snapshot(iface)}
    if up.returncode == 0:
        if between is not None:
            between()
        down = box.run(program, "down", path, check=False)
        assert down.returncode == 0, down.stderr
    else:
        result["up_stderr"] = up.stderr
    # The daemon goes when its link does.
    wait_for(lambda: not box.run("ls", "/run/wireguard").stdout.strip(), timeout=5, what="the daemon to go")
    after = box.snapshot(iface)
    after.pop("src_valid_mark"), before.pop("src_valid_mark")  # down leaves it, as the script
    assert after == before, f"{program} down left something behind"
    result["hooks"] = hooks.read_text()
    result["resolvconf"] = (box.resolv / "log").read_text() if (box.resolv / "log").exists() else ""
    if (box.resolv / "log").exists():
        (box.resolv / "log").unlink()
    return result


def both(box, text, iface, by_name=False, between=None) -> tuple[dict, dict]:
    """Debian's wg-quick's results, then ours, for the same configuration file."""
    path = f"/etc/wireguard/{iface}.conf" if by_name else str(box.tmp / f"{iface}.conf")
    argument = iface if by_name else path

    def write():
        box.run("sh", "-c", 'umask 077 && cat > "$1"', "sh", path, input=text)
    results = []
    for program in (DEBIAN, box.ours):
        write()
        results.append(cycle(box, program, argument, iface, between))
        results[-1]["saved"] = normalize(box.run("cat", path).stdout)
    return results[0], results[1]


def interface_section(iface, **extra) -> str:
    private, _ = new_key()
    lines = ["[Interface]", f"PrivateKey = {private}", "ListenPort = 51999"]
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def peer_section(allowed, endpoint="127.0.0.1:51998") -> str:
    _, public = new_key()
    text = f"\n[Peer]\nPublicKey = {public}\nAllowedIPs = {allowed}\n"
    return text + (f"Endpoint = {endpoint}\n" if endpoint else "")


def name_for(box) -> str:
    return unique_name("wgq")


@pytest.mark.netns
def test_addresses_mtu_hooks_by_name(box):
    iface = name_for(box)
    hooks = box.tmp / "hooks"
    text = (interface_section(iface) + "Address = 10.55.0.1/24, fd55::1/64\nAddress = 10.57.0.1\nMTU = 1380\n"
            f"PreUp = echo pre-up %i >> {hooks}\nPostUp = echo post-up %i $(ip -o link show %i | wc -l) >> {hooks}\n"
            f"PreDown = echo pre-down %i >> {hooks}\nPostDown = echo post-down %i >> {hooks}\n"
            + peer_section("10.55.0.2/32, 10.56.0.0/16, fd56::/48, 10.55.0.128/25"))
    debian, ours = both(box, text, iface, by_name=True)
    assert debian["up_status"] == 0
    assert "mtu 1380" in debian["up"]["links"] and "fd56::/48 dev" in debian["up"]["routes"]
    assert debian["hooks"] == f"pre-up {iface}\npost-up {iface} 1\npre-down {iface}\npost-down {iface}\n"
    assert ours == debian


@pytest.mark.netns
def test_automatic_mtu_from_the_routes_to_endpoints(box):
    iface = name_for(box)
    # A link of MTU 1400 for one endpoint, a route with MTU 1300 for another: 1400 - 80.
    box.run("ip", "tuntap", "add", "wgqtun", "mode", "tun")
    box.run("ip", "link", "set", "wgqtun", "mtu", "1400", "up")
    box.run("ip", "addr", "add", "192.0.2.1/24", "dev", "wgqtun")
    box.run("ip", "route", "add", "198.51.100.0/24", "dev", "wgqtun", "mtu", "1300")
    # A locked route MTU is not read by the script (`mtu lock 1450` does not match): the device's counts.
    box.run("ip", "route", "add", "198.51.101.0/24", "dev", "wgqtun", "mtu", "lock", "1450")
    text = (interface_section(iface) + "Address = 10.55.0.1/24\n"
            + peer_section("10.60.0.0/16", "198.51.100.7:51820") + peer_section("10.61.0.0/16", "192.0.2.9:51820")
            + peer_section("10.63.0.0/16", "198.51.101.7:51820")
            + peer_section("10.62.0.0/16", "203.0.113.1:51820"))  # unreachable: no route, no MTU
    debian, ours = both(box, text, iface)
    assert "mtu 1320" in debian["up"]["links"]
    assert ours == debian


@pytest.mark.netns
def test_automatic_mtu_from_the_default_route(box):
    iface = name_for(box)
    box.run("ip", "tuntap", "add", "wgqtun", "mode", "tun")
    box.run("ip", "link", "set", "wgqtun", "mtu", "1450", "up")
    box.run("ip", "addr", "add", "192.0.2.1/24", "dev", "wgqtun")
    box.run("ip", "route", "add", "default", "via", "192.0.2.254", "dev", "wgqtun", "onlink")
    text = interface_section(iface) + "Address = 10.55.0.1/24\n" + peer_section("10.60.0.0/16", None)
    debian, ours = both(box, text, iface)
    assert "mtu 1370" in debian["up"]["links"]
    assert ours == debian


@pytest.mark.netns
@pytest.mark.parametrize("table", ["off", "1234", "auto", "main"])
def test_table(box, table):
    iface = name_for(box)
    text = (interface_section(iface, Table=table) + "Address = 10.55.0.1/24, fd55::1/64\n"
            + peer_section("10.55.0.2/32, 10.56.0.0/16, fd57::/64, 0.0.0.0/0"))
    debian, ours = both(box, text, iface)
    assert debian["up_status"] == 0
    if table == "off":
        assert "10.56.0.0/16" not in debian["up"]["routes"]
    if table == "1234":
        assert "10.56.0.0/16 dev" in debian["up"]["routes"] and "table 1234" in debian["up"]["routes"]
        assert "fwmark" not in debian["up"]["rules"]
    assert ours == debian


@pytest.mark.netns
@pytest.mark.parametrize("fwmark", [None, "0x1234"])
def test_default_route_through_the_tunnel(box, fwmark):
    iface = name_for(box)
    extra = {"FwMark": fwmark} if fwmark else {}
    # A route in table 51820 already: the script takes the next free table.
    box.run("ip", "route", "add", "unreachable", "10.99.0.0/16", "table", "51820")
    text = (interface_section(iface, **extra) + "Address = 10.55.0.1/24, fd55::1/64\n"
            + peer_section("10.56.0.0/16, 0.0.0.0/0, ::/0"))
    debian, ours = both(box, text, iface)
    table = "4660" if fwmark else "51821"
    assert f"not from all fwmark {hex(int(table))} lookup {table}" in debian["up"]["rules"]
    assert "suppress_prefixlength 0" in debian["up"]["rules6"]
    assert f"wg-quick-{iface}" in debian["up"]["nft"] and debian["up"]["src_valid_mark"] == "1\n"
    assert ours == debian


@pytest.mark.netns
def test_dns_through_resolvconf(box):
    iface = name_for(box)
    text = (interface_section(iface) + "Address = 10.55.0.1/24\nDNS = 10.55.0.53, fd55::53, example.com, lan\n"
            + peer_section("10.56.0.0/16"))
    debian, ours = both(box, text, iface)
    assert "nameserver 10.55.0.53\nnameserver fd55::53\nsearch example.com lan\n" in debian["resolvconf"]
    assert ours == debian


@pytest.mark.netns
def test_dns_without_resolvconf_fails_and_leaves_nothing(tmp_path):
    box = Box(tmp_path, resolvconf=False)
    try:
        iface = name_for(box)
        text = interface_section(iface) + "Address = 10.55.0.1/24\nDNS = 10.55.0.53\n" + peer_section("10.56.0.0/16")
        debian, ours = both(box, text, iface)
        assert debian["up_status"] != 0 and ours["up_status"] != 0
        assert "resolvconf" in ours.pop("up_stderr") and "resolvconf" in debian.pop("up_stderr")
        debian.pop("up_status"), ours.pop("up_status")
        assert ours == debian
    finally:
        box.close()


@pytest.mark.netns
def test_save_config_round_trip(box):
    iface = name_for(box)
    hooks = box.tmp / "hooks"
    _, extra_peer = new_key()
    text = (interface_section(iface, SaveConfig="true", Table="auto") + "Address = 10.55.0.1/24, fd55::1/64\n"
            "MTU = 1400\nDNS = 10.55.0.53\n"
            f"PostUp = echo up %i >> {hooks}\nPostDown = echo down >> {hooks}; true\n"
            + peer_section("10.56.0.0/16"))

    def change():
        box.run("wg", "set", iface, "peer", extra_peer, "allowed-ips", "10.70.0.0/24", "persistent-keepalive", "25")
        box.run("ip", "addr", "add", "10.55.1.1/24", "dev", iface)
        box.run("ip", "link", "set", iface, "mtu", "1300")

    debian, ours = both(box, text, iface, between=change)
    saved = debian["saved"]
    assert extra_peer in saved and "Address = 10.55.1.1/24" in saved and "MTU = 1300" in saved
    assert "DNS = 10.55.0.53" in saved and "SaveConfig = true" in saved and "Table = auto" in saved
    assert ours == debian
    # Up again from what was saved: the added peer and address are back.
    path = str(box.tmp / f"{iface}.conf")
    box.run(box.ours, "up", path)
    try:
        assert extra_peer in box.run("wg", "showconf", iface).stdout
        assert "10.55.1.1/24" in box.run("ip", "-o", "addr", "show", iface).stdout
        assert "mtu 1300" in box.run("ip", "link", "show", iface).stdout
    finally:
        box.run(box.ours, "down", path)


@pytest.mark.netns
def test_save_without_down(box):
    iface = name_for(box)
    text = interface_section(iface) + "Address = 10.55.0.1/24\n" + peer_section("10.56.0.0/16")
    path = str(box.tmp / f"{iface}.conf")
    saved = []
    for program in (DEBIAN, box.ours):
        with open(path, "w") as file:
            file.write(text)
        box.run(program, "up", path)
        box.run("wg", "set", iface, "listen-port", "52000")
        box.run(program, "save", path)
        saved.append(normalize(box.run("cat", path).stdout))
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        box.run(program, "down", path)
    assert "ListenPort = 52000" in saved[0] and "Address = 10.55.0.1/24" in saved[0]
    assert saved[1] == saved[0]


@pytest.mark.netns
def test_messages_for_refused_commands(box):
    iface = name_for(box)
    shared = box.tmp / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    path = str(shared / f"{iface}.conf")
    with open(path, "w") as file:
        file.write(interface_section(iface) + peer_section("10.56.0.0/16"))
    os.chmod(path, 0o644)
    bad = box.tmp / "not-an-interface-name.conf"
    bad.write_text("[Interface]\n")
    cases = [("up", str(box.tmp / "missing.conf")), ("up", str(bad)), ("down", path), ("up", "nosuch"),
             ("strip", path)]  # the last warns that the file is world readable
    box.run("ip", "tuntap", "add", iface, "mode", "tun")  # exists, and is not WireGuard
    try:
        for command, argument in cases:
            reference = box.run(DEBIAN, command, argument, check=False)
            ours = box.run(box.ours, command, argument, check=False)
            assert (ours.returncode, ours.stdout, ours.stderr) == (
                reference.returncode, reference.stdout, reference.stderr), (command, argument)
        up_reference = box.run(DEBIAN, "up", path, check=False)
        up_ours = box.run(box.ours, "up", path, check=False)
        assert up_reference.returncode == up_ours.returncode == 1
        assert up_ours.stderr == up_reference.stderr
        assert up_ours.stderr.endswith(f"wg-quick: `{iface}' already exists\n")
    finally:
        box.run("ip", "link", "del", iface, check=False)
    usage = box.run(box.ours, "bogus", check=False)
    assert usage.returncode == 1 and usage.stderr.startswith("Usage: wg-quick [ up | down | save | strip ]")


@pytest.mark.netns
def test_explicit_option_form(box):
    iface = name_for(box)
    path = str(box.tmp / f"{iface}.conf")
    with open(path, "w") as file:
        file.write(interface_section(iface) + "Address = 10.55.0.1/24\n" + peer_section("10.56.0.0/16"))
    os.chmod(path, 0o600)
    box.run(wgc_executable(), "--wg-quick", "up", path)
    try:
        assert "10.56.0.0/16 dev " + iface in box.run("ip", "route").stdout
    finally:
        box.run(wgc_executable(), "--wg-quick", "down", path)
    assert box.run("ip", "link", "show", iface, check=False).returncode != 0


# -- strip and the configuration file, against the script ------------------------------------

TRICKY = textwrap.dedent("""\
    # a comment
      [interface]   # lower case, spaces
    privatekey = {key}
    ADDRESS= 10.0.0.1/24 ,fd00::1/64
    Address
    mtu=1400#trailing
    \tDNS = 1.1.1.1,example.com
    Table = 51820
    PreUp = echo "a = b" # not a comment for wg
    SaveConfig = false
    ListenPort = 51820 \r
    [Peer]
    PublicKey = {pub}
    Address = 10.9.9.9/32
    AllowedIPs = 0.0.0.0/0 \\
    [Interface]
    PostDown = echo second interface section
    """)


@pytest.mark.netns  # needs root: wg-quick strip runs as root only
def test_strip_is_the_scripts(tmp_path):
    private, public = new_key()
    path = tmp_path / "wgqs0.conf"
    for text in (TRICKY.format(key=private, pub=public), TRICKY.format(key=private, pub=public).rstrip("\n"),
                 "", "[Interface]\nSaveConfig = TRUE\n"):
        path.write_text(text)
        path.chmod(0o600)
        reference = subprocess.run([DEBIAN, "strip", str(path)], capture_output=True, text=True, check=False)
        ours = subprocess.run([wgc_executable(), "--wg-quick", "strip", str(path)], capture_output=True, text=True,
                              check=False)
        assert reference.returncode == 0
        assert (ours.stdout, ours.stderr, ours.returncode) == (reference.stdout, reference.stderr, 0)
    path.write_text("[Interface]\nSaveConfig = yes\n")
    reference = subprocess.run([DEBIAN, "strip", str(path)], capture_output=True, text=True, check=False)
    ours = subprocess.run([wgc_executable(), "--wg-quick", "strip", str(path)], capture_output=True, text=True,
                          check=False)
    assert reference.returncode == ours.returncode == 1
    assert ours.stderr.replace("wgc --wg-quick", "wg-quick") == reference.stderr


def test_parse_keeps_wg_quick_keys_out():
    config = Config()
    parse_text(config, TRICKY.format(key="k", pub="p"))
    assert config.addresses == ["10.0.0.1/24", "fd00::1/64", "Address"]
    assert config.mtu == "1400" and config.table == "51820"
    assert config.dns == ["1.1.1.1"] and config.dns_search == ["example.com"]
    assert config.pre_up == ['echo "a = b"'] and config.post_down == ["echo second interface section"]
    assert "Address = 10.9.9.9/32" in config.wg_config and "ADDRESS" not in config.wg_config


def test_route_order_is_sorts():
    prefixes = ["10.0.0.0/8", "10.1.0.0/16", "fd00::/64", "0.0.0.0/0", "::/0", "10.2.0.0/16", "10.1.2.3/32",
                "fd00:1::/64", "192.168.0.0/24", "9.9.9.9/32"]
    reference = subprocess.run(["sort", "-nr", "-k", "2", "-t", "/"], input="\n".join(prefixes) + "\n",
                               capture_output=True, text=True, check=True, env=dict(os.environ, LC_ALL="C"))
    assert sort_routes(prefixes) == reference.stdout.split()


# -- rtnetlink messages, byte by byte ---------------------------------------------------------

def header(length, kind, flags, seq):
    return NLMSGHDR.pack(length, kind, flags, seq, 0)


def attr(kind, payload):
    padded = payload + bytes(-len(payload) % 4)
    return struct.pack("=HH", 4 + len(payload), kind) + padded


REQ_ACK, CREATE_EXCL = 0x1 | 0x4, 0x400 | 0x200


def test_new_link_message():
    body = (struct.pack("=BxHiII", 0, 0, 0, 0, 0) + attr(3, b"wg0\0")
            + struct.pack("=HH", 4 + 4 + 12, 18 | 0x8000) + attr(1, b"wireguard"))
    assert rtnetlink.new_link(7, "wg0") == header(16 + len(body), 16, REQ_ACK | CREATE_EXCL, 7) + body


def test_set_and_delete_link_messages():
    body = struct.pack("=BxHiII", 0, 0, 5, 1, 1) + attr(4, struct.pack("=I", 1420))
    assert rtnetlink.set_link(9, 5, mtu=1420, up=True) == header(16 + len(body), 16, REQ_ACK, 9) + body
    body = struct.pack("=BxHiII", 0, 0, 5, 0, 0)
    assert rtnetlink.del_link(3, 5) == header(32, 17, REQ_ACK, 3) + body


def test_new_address_messages():
    v4 = socket.inet_pton(socket.AF_INET, "10.0.0.1")
    body = struct.pack("=BBBBi", socket.AF_INET, 24, 0, 0, 4) + attr(2, v4) + attr(1, v4)
    assert rtnetlink.new_address(1, 4, v4, 24) == header(16 + len(body), 20, REQ_ACK | CREATE_EXCL, 1) + body
    v6 = socket.inet_pton(socket.AF_INET6, "fd00::1")
    body = struct.pack("=BBBBi", socket.AF_INET6, 64, 0, 0, 4) + attr(2, v6) + attr(1, v6)
    assert rtnetlink.new_address(2, 4, v6, 64) == header(16 + len(body), 20, REQ_ACK | CREATE_EXCL, 2) + body


def test_new_route_messages():
    dst = socket.inet_pton(socket.AF_INET, "10.56.0.0")
    # main (254) fits the header; scope link, protocol boot, unicast
    body = struct.pack("=BBBBBBBBI", socket.AF_INET, 16, 0, 0, 254, 3, 253, 1, 0) + attr(1, dst) + attr(
        4, struct.pack("=I", 6))
    assert rtnetlink.new_route(5, 6, dst, 16) == header(16 + len(body), 24, REQ_ACK | CREATE_EXCL, 5) + body
    # table 51820 does not: RTA_TABLE; IPv6 routes are scope universe
    dst6 = bytes(16)
    body = (struct.pack("=BBBBBBBBI", socket.AF_INET6, 0, 0, 0, 0, 3, 0, 1, 0) + attr(15, struct.pack("=I", 51820))
            + attr(1, dst6) + attr(4, struct.pack("=I", 6)))
    assert rtnetlink.new_route(5, 6, dst6, 0, 51820) == header(16 + len(body), 24, REQ_ACK | CREATE_EXCL, 5) + body


def test_rule_messages():
    # ip -4 rule add not fwmark 51820 table 51820
    body = (struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 0, 0, 0, 1, 2) + attr(10, struct.pack("=I", 51820))
            + attr(15, struct.pack("=I", 51820)))
    message = rtnetlink.rule(1, rtnetlink.RTM_NEWRULE, socket.AF_INET, 51820, fwmark=51820, invert=True)
    assert message == header(16 + len(body), 32, REQ_ACK | CREATE_EXCL, 1) + body
    # ip -6 rule add table main suppress_prefixlength 0
    body = struct.pack("=BBBBBBBBI", socket.AF_INET6, 0, 0, 0, 254, 0, 0, 1, 0) + attr(14, struct.pack("=I", 0))
    message = rtnetlink.rule(2, rtnetlink.RTM_NEWRULE, socket.AF_INET6, 254, suppress_prefixlength=0)
    assert message == header(16 + len(body), 32, REQ_ACK | CREATE_EXCL, 2) + body
    # ip -4 rule delete table 51820: no action, no create flags
    body = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0) + attr(15, struct.pack("=I", 51820))
    assert rtnetlink.rule(3, rtnetlink.RTM_DELRULE, socket.AF_INET, 51820) == header(16 + len(body), 33, REQ_ACK,
                                                                                      3) + body


def test_route_get_and_dump_messages():
    dst = socket.inet_pton(socket.AF_INET, "192.0.2.1")
    body = struct.pack("=BBBBBBBBI", socket.AF_INET, 32, 0, 0, 0, 0, 0, 0, 0) + attr(1, dst)
    assert rtnetlink.get_route(4, dst) == header(16 + len(body), 26, 0x1, 4) + body
    assert rtnetlink.dump_request(8, rtnetlink.RTM_GETRULE, socket.AF_INET6) == header(
        28, 34, 0x1 | 0x300, 8) + struct.pack("=BBBBBBBBI", socket.AF_INET6, 0, 0, 0, 0, 0, 0, 0, 0)


def test_parse_dumps():
    link = struct.pack("=BxHiII", 0, 0xFFFE, 7, 0x1, 0) + attr(3, b"wg0\0") + attr(4, struct.pack("=I", 1420)) + \
        attr(18, attr(1, b"wireguard"))
    rule = (struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 0, 0, 0, 1, 2) + attr(15, struct.pack("=I", 51820))
            + attr(6, struct.pack("=I", 32765)) + attr(10, struct.pack("=I", 51820))
            + attr(14, struct.pack("=I", 0xFFFFFFFF)))
    route = (struct.pack("=BBBBBBBBI", socket.AF_INET, 16, 0, 0, 254, 3, 253, 1, 0) + attr(1, bytes([10, 56, 0, 0]))
             + attr(4, struct.pack("=I", 7)) + attr(8, attr(2, struct.pack("=I", 1300))))
    datagram = b"".join(header(16 + len(body), kind, 2, 9) + body
                        for kind, body in ((16, link), (32, rule), (24, route))) + header(20, 3, 2, 9) + bytes(4)
    assert rtnetlink.parse_dump([datagram], 9, 16) == [rtnetlink.Link(7, "wg0", 1420, "wireguard", 1)]
    [parsed] = rtnetlink.parse_dump([datagram], 9, 32)
    assert (parsed.table, parsed.priority, parsed.fwmark, parsed.flags, parsed.suppress_prefixlength) == (
        51820, 32765, 51820, 2, None)
    [parsed] = rtnetlink.parse_dump([datagram], 9, 24)
    assert (parsed.destination, parsed.dst_len, parsed.oif, parsed.mtu, parsed.table) == (
        bytes([10, 56, 0, 0]), 16, 7, 1300, 254)
    assert rtnetlink.parse_dump([datagram], 8, 16) == []  # another request's answer


@pytest.mark.netns
def test_failing_post_up_hook_takes_everything_down(box):
    iface = name_for(box)
    hooks = box.tmp / "hooks"
    text = (interface_section(iface) + f"Address = 10.55.0.1/24, fd55::1/64\nPostUp = echo ran >> {hooks}; false\n"
            "PostUp = echo never >> {hooks}\n" + peer_section("10.56.0.0/16, 0.0.0.0/0, ::/0"))
    debian, ours = both(box, text, iface)
    assert debian["up_status"] != 0 and ours["up_status"] != 0
    assert debian["hooks"] == "ran\n"
    debian.pop("up_stderr"), ours.pop("up_stderr")
    assert ours == debian


@pytest.mark.netns
@pytest.mark.parametrize("interface_lines", ["MTU = 10", "Address = 10.55.0.1/24, 10.55.0.1/24", "Table = 0x100000000"],
                         ids=["mtu-too-small", "address-twice", "bad-table"])
def test_refusals_by_the_kernel_or_ip_are_reported_as_ip_does(box, interface_lines):
    iface = name_for(box)
    text = interface_section(iface) + interface_lines + "\n" + peer_section("10.56.0.0/16")
    debian, ours = both(box, text, iface)
    assert debian["up_status"] != 0 and ours["up_status"] != 0

    def ip_lines(stderr):
        return [line for line in stderr.splitlines() if line.startswith(("Error", "RTNETLINK"))]

    reference = ip_lines(debian.pop("up_stderr"))
    assert reference and ip_lines(ours.pop("up_stderr")) == reference
    debian.pop("up_status"), ours.pop("up_status")
    assert ours == debian


def test_extended_ack_message():
    request = header(32, 16, REQ_ACK, 5) + bytes(16)
    # flags: NLM_F_CAPPED | NLM_F_ACK_TLVS; the request quoted by its header only
    body = struct.pack("=i", -22) + request[:16] + attr(1, b"mtu less than device minimum\0")
    assert rtnetlink.parse_ack(0x300, body) == (22, "Error: mtu less than device minimum.")
    # not capped: the whole request is quoted before the attributes
    body = struct.pack("=i", -22) + request + attr(1, b"Nexthop has invalid gateway.\0")
    assert rtnetlink.parse_ack(0x200, body) == (22, "Error: Nexthop has invalid gateway.")
    assert rtnetlink.parse_ack(0x100, struct.pack("=i", -17) + request[:16]) == (17, "RTNETLINK answers: File exists")
    assert rtnetlink.parse_ack(0, struct.pack("=i", 0) + request) == (0, "")
