"""The built-in wg(8) against Debian's wireguard-tools 1.0.20210914.

Both run, one after the other, on the same devices: a wgc daemon and a
wireguard-go daemon in a network namespace whose /run/wireguard is a tmpfs of
its own (a private mount namespace), so `wg show all` and `wg show interfaces`
see exactly these two devices whatever else runs on the machine.  Compared:
stdout, stderr and exit code, and for commands that change a device, the
state Debian's wg shows afterwards.  The only normalisation is the program
name in messages (ours is started through a symlink called wg, whose path
Python sees as argv[0]).
"""
import base64
import os
import subprocess
import time

import pytest

from netns import Netns, unique_name, wait_for
from wgc import counters
from wgc._crypto import clamp, public_key
from wgnet import IMPLEMENTATIONS, have, new_key, wgc_executable

pytestmark = pytest.mark.netns

WGC_PORT, GO_PORT = 51820, 51830


class Host:
    """A network namespace with a private /run/wireguard."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.ns = Netns("wgw")
        try:
            holder = self.ns.popen(
                "unshare", "--mount", "--propagation", "private", "sh", "-c",
                "mount -t tmpfs -o mode=0755 wgtool /run/wireguard && echo ready && exec sleep 3600",
                stdout=subprocess.PIPE, text=True)
            assert holder.stdout.readline() == "ready\n"
            self.pid = holder.pid  # ip, unshare and sh exec each other: one process
            self.ours = str(tmp_path / "bin" / "wg")
            os.makedirs(os.path.dirname(self.ours))
            os.symlink(wgc_executable(), self.ours)
            self.wgc = unique_name("wgtc")
            self.go = unique_name("wgtg")
            self.start(IMPLEMENTATIONS["wgc"], self.wgc)
            self.start(IMPLEMENTATIONS["wireguard-go"], self.go)
        except BaseException:
            self.close()
            raise

    def run(self, *cmd, input=None, env=None, check=False, timeout=60) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, **(env or {}))
        for name in ("WG_HIDE_KEYS", "WG_COLOR_MODE", "WG_ENDPOINT_RESOLUTION_RETRIES"):
            if env is None or name not in env:
                full_env.pop(name, None)
        proc = subprocess.run(["nsenter", "-t", str(self.pid), "-n", "-m", "--", *cmd], input=input, check=False,
                              capture_output=True, env=full_env, timeout=timeout)
        if check and proc.returncode:
            raise AssertionError(f"{cmd} exited {proc.returncode}: {proc.stdout!r} {proc.stderr!r}")
        return proc

    def start(self, command, iface):
        with open(self.tmp / f"{iface}.log", "wb") as log:
            subprocess.run(["nsenter", "-t", str(self.pid), "-n", "-m", "--", *command, iface],
                           stdout=log, stderr=log, stdin=subprocess.DEVNULL, check=True, timeout=20)
        wait_for(lambda: self.run("wg", "show", iface, "listen-port").returncode == 0, timeout=10,
                 what=f"{command[0]} on {iface}")

    def both(self, *args, input=None, env=None):
        """(Debian's result, ours), each as (stdout, stderr, exit code)."""
        reference = self.run("wg", *args, input=input, env=env)
        ours = self.run(self.ours, *args, input=input, env=env)
        name = self.ours.encode()
        return ((reference.stdout, reference.stderr, reference.returncode),
                (ours.stdout.replace(name, b"wg"), ours.stderr.replace(name, b"wg"), ours.returncode))

    def state(self, iface) -> tuple:
        """What Debian's wg shows of a device, peers in a stable order
        (wireguard-go lists them in random order), a port bound as 0 (random)
        shown as <ephemeral>."""
        showconf = self.run("wg", "showconf", iface, check=True).stdout.decode()
        dump = self.run("wg", "show", iface, "dump", check=True).stdout.decode().splitlines()
        port = self.run("wg", "show", iface, "listen-port", check=True).stdout.decode().strip()
        low, high = self.run("cat", "/proc/sys/net/ipv4/ip_local_port_range", check=True).stdout.split()
        if int(low) <= int(port) <= int(high):
            showconf = showconf.replace(f"ListenPort = {port}\n", "ListenPort = <ephemeral>\n")
            dump[0] = dump[0].replace(f"\t{port}\t", "\t<ephemeral>\t")
        sections = showconf.split("\n\n")
        return sections[0], sorted(section.strip() for section in sections[1:]), dump[0], sorted(dump[1:])

    def reset(self, iface, port):
        conf = self.tmp / "reset.conf"
        conf.write_text(f"[Interface]\nListenPort = {port}\n")
        self.run("wg", "setconf", iface, str(conf), check=True)

    def close(self):
        self.ns.close()


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    if not have("wireguard-go"):
        pytest.skip("wireguard-go is not installed")
    made = Host(tmp_path_factory.mktemp("wgtool"))
    yield made
    made.close()


def assert_same(host, *args, input=None, env=None):
    reference, ours = host.both(*args, input=input, env=env)
    assert ours == reference, f"wg {' '.join(map(str, args))}"
    return reference


# -- keys ----------------------------------------------------------------------------------

def fixed_key(seed: int) -> tuple[str, str]:
    """A (private, public) pair that is the same on every run, so test ids are stable."""
    private = clamp(bytes([seed]) * 32)
    return base64.b64encode(private).decode(), base64.b64encode(public_key(private)).decode()


PRIVATE, PUBLIC = fixed_key(1)
K1, K2, K3 = (fixed_key(seed)[1] for seed in (2, 3, 4))
PSK = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM="


def test_generated_keys(host):
    for command in ("genkey", "genpsk"):
        reference, ours = host.both(command)
        assert (reference[1:], ours[1:]) == ((b"", 0), (b"", 0))
        assert len(ours[0]) == 45 and ours[0].endswith(b"=\n") and ours[0] != reference[0]
    private = host.run(host.ours, "genkey").stdout
    # Clamped: Debian's pubkey takes it, and both derive the same public key.
    assert_same(host, "pubkey", input=private)
    reference = host.run("wg", "pubkey", input=private)
    assert reference.returncode == 0 and len(reference.stdout) == 45


@pytest.mark.parametrize("text", [
    PRIVATE.encode() + b"\n", PRIVATE.encode(), PRIVATE.encode() + b" \n\t\n", PRIVATE.encode() + b"\0\n",
    b"", b"short\n", PRIVATE.encode() + b"x", PRIVATE.encode()[:-1] + b"\n", b"A" * 42 + b"B=\n",
    b"*" * 43 + b"=", PRIVATE.encode()[:20] + b"\0" + PRIVATE.encode()[21:],
])
def test_pubkey(host, text):
    assert_same(host, "pubkey", input=text)


def test_genkey_warns_about_a_world_readable_file(host, tmp_path):
    for program in ("wg", host.ours):
        target = tmp_path / "key"
        with open(target, "wb") as out:
            os.chmod(target, 0o644)
            proc = subprocess.run([program, "genkey"], stdout=out, stderr=subprocess.PIPE, check=False)
        assert proc.returncode == 0
        assert (
            proc.stderr
            == b"Warning: writing to world accessible file.\nConsider setting the umask to 077 and trying again.\n"
        )
        assert len(target.read_bytes()) == 45


# -- show ----------------------------------------------------------------------------------

SHOW_FIELDS = ["public-key", "private-key", "listen-port", "fwmark", "peers", "preshared-keys", "endpoints",
               "allowed-ips", "latest-handshakes", "transfer", "persistent-keepalive", "dump", "bogus"]

RICH_CONFIG = """\
# a comment
[Interface]
PrivateKey = {private}
ListenPort = {port}
FwMark = 0x1234

[Peer]
PublicKey = {k1}
PresharedKey = {psk}
Endpoint = 192.0.2.1:51820
AllowedIPs = 10.0.0.0/8, fd00::/64, ::ffff:1.2.3.4/128, ::1.2.3.0/120
PersistentKeepalive = 25

[Peer]
PublicKey = {k2}
Endpoint = [2001:db8::7]:1234
AllowedIPs = 192.168.7.0/24

[Peer]
PublicKey = {k3}
Endpoint = [fe80::1%lo]:9
"""


@pytest.fixture(scope="module")
def shown(host):
    """Both devices configured, and talking to each other over loopback, so
    that handshake times and transfer counters are not zero."""
    for iface, port in ((host.wgc, WGC_PORT), (host.go, GO_PORT)):
        conf = host.tmp / f"{iface}.conf"
        conf.write_text(RICH_CONFIG.format(private=PRIVATE if iface == host.wgc else new_key()[0], port=port,
                                           k1=K1, k2=K2, k3=K3, psk=PSK))
        host.run("wg", "setconf", iface, str(conf), check=True)
        host.run("ip", "link", "set", iface, "up", check=True)
    keys = {iface: host.run("wg", "show", iface, "public-key", check=True).stdout.decode().strip()
            for iface in (host.wgc, host.go)}
    for iface, other, port in ((host.wgc, host.go, GO_PORT), (host.go, host.wgc, WGC_PORT)):
        host.run("wg", "set", iface, "peer", keys[other], "endpoint", f"127.0.0.1:{port}", "allowed-ips",
                 "10.200.0.0/16", "persistent-keepalive", "25", check=True)
    wait_for(lambda: all(_handshaken(host, iface, keys) for iface in (host.wgc, host.go)),
             timeout=15, what="a handshake between wgc and wireguard-go")
    return host


def _handshaken(host, iface, keys):
    other = keys[host.go if iface == host.wgc else host.wgc]
    for line in host.run("wg", "show", iface, "latest-handshakes").stdout.decode().splitlines():
        key, seconds = line.split("\t")
        if key == other:
            return seconds != "0"
    return False


def by_interface(output: bytes, names) -> list:
    """Output of devices whose peers come in any order, as what is defined of
    it: the interfaces in their order, each with the set of its lines.

    A field of `show all` names the interface before a device's lines: on
    each line, or (endpoints) only on the first one, whichever peer that is
    (and on no line of its own when the device has no peer, so that the next
    name follows on the same line).  A line that names none of names stays
    with the interface before it."""
    groups: list = [(None, [])]
    for line in output.split(b"\n"):
        first, tab, rest = line.partition(b"\t")
        while tab and first.decode() in names:
            if groups[-1][0] != first.decode():
                groups.append((first.decode(), []))
            line = rest
            first, tab, rest = line.partition(b"\t")
        groups[-1][1].append(line)
    return [(name, sorted(lines)) for name, lines in groups]


def assert_same_soon(host, *args, env=None, random_order=False):
    """Like assert_same for output that moves with time (handshake ages,
    counters under keepalives): equal on one of a few back-to-back tries.

    random_order: wireguard-go answers each `get` with its peers in a new
    random order, so only each interface's lines, not their order, can be
    compared (see by_interface)."""
    for _ in range(5):
        reference, ours = host.both(*args, env=env)
        if random_order:
            reference, ours = ((by_interface(out, (host.wgc, host.go)), sorted(err.splitlines()), code)
                               for out, err, code in (reference, ours))
        if ours == reference:
            return
        time.sleep(0.2)
    assert ours == reference, f"wg {' '.join(args)}"


@pytest.mark.parametrize("field", SHOW_FIELDS)
def test_show_field(shown, field):
    assert_same_soon(shown, "show", shown.wgc, field)
    assert_same_soon(shown, "show", shown.go, field, random_order=True)
    assert_same_soon(shown, "show", "all", field, random_order=True)


@pytest.mark.parametrize("env", [None, {"WG_HIDE_KEYS": "never"}, {"WG_COLOR_MODE": "always"},
                                 {"WG_COLOR_MODE": "never", "WG_HIDE_KEYS": "always"}], ids=str)
def test_show_pretty(shown, env):
    assert_same_soon(shown, "show", shown.wgc, env=env)
    for args in ((), ("show",), ("show", "all"), ("show", shown.go)):
        assert_same_soon(shown, *args, env=env, random_order=True)
    output = shown.run(shown.ours, "show", shown.wgc, env={"WG_COLOR_MODE": "never"}).stdout.decode()
    assert "latest handshake" in output and "transfer" in output and "persistent keepalive: every" in output


def test_show_interfaces_and_showconf(shown):
    reference = assert_same(shown, "show", "interfaces")
    assert sorted(reference[0].decode().split()) == sorted([shown.wgc, shown.go])
    assert_same_soon(shown, "showconf", shown.wgc)
    assert_same_soon(shown, "showconf", shown.go, random_order=True)


@pytest.mark.parametrize("args", [
    ["--help"], ["-h"], ["help"], ["--version"], ["-v"], ["version"], ["bogus"], ["--bogus", "x"],
    ["show", "nosuchwg"], ["show", "a", "b", "c"], ["show", "interfaces", "x"], ["show", "--help"], ["show", "help"],
    ["show", "-h"], ["show", "all", "bogus"], ["show", "nosuchwg", "dump"], ["show", "x" * 20],
    ["showconf"], ["showconf", "nosuchwg"], ["showconf", "a", "b"], ["showconf", "--help"],
    ["set"], ["set", "wgx"], ["set", "--help"], ["set", "nosuchwg", "listen-port", "1"],
    ["setconf"], ["setconf", "wgx"], ["setconf", "wgx", "/nonexistent/file"], ["addconf", "a", "b", "c"],
    ["syncconf", "nosuchwg", "/nonexistent/file"], ["genkey", "x"], ["genpsk", "--help"], ["pubkey", "x"],
], ids=lambda args: " ".join(args) or "(none)")
def test_usage_and_errors(host, args):
    assert_same(host, *args)


# -- wgc's extension: show drops ------------------------------------------------------------------


def drops(host, *args) -> tuple[list[list[str]], str, int]:
    """Our `show ... drops`: its lines split at tabs, stderr, exit code."""
    proc = host.run(host.ours, "show", *args, "drops")
    return [line.split("\t") for line in proc.stdout.decode().splitlines()], proc.stderr.decode(), proc.returncode


def test_show_drops(shown):
    """The device's figures as `name<TAB>value`, then each peer's, in the
    order `show IFACE peers` lists them, as `key<TAB>name<TAB>value`; a
    datagram of garbage at the device's port is counted."""
    before, err, code = drops(shown, shown.wgc)
    assert (err, code) == ("", 0)
    device_lines = before[: len(counters.DEVICE)]
    assert [line[0] for line in device_lines] == [figure.name for figure in counters.DEVICE]
    assert all(len(line) == 2 and line[1].isdigit() for line in device_lines)
    peers = shown.run(shown.ours, "show", shown.wgc, "peers", check=True).stdout.decode().split()
    peer_lines = before[len(counters.DEVICE):]
    assert [line[:2] for line in peer_lines] == [[key, figure.name] for key in peers for figure in counters.PEER]
    assert all(len(line) == 3 and float(line[2]) >= 0 for line in peer_lines)
    of_go = {name: float(value) for key, name, value in peer_lines if key == wg_public_key(shown, shown.go)}
    assert of_go["handshakes_completed_total"] >= 1
    shown.run("python3", "-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
              f".sendto(b'garbage', ('127.0.0.1', {WGC_PORT}))", check=True)
    wait_for(lambda: figure_of(drops(shown, shown.wgc)[0], "malformed_packets_total")
             == figure_of(before, "malformed_packets_total") + 1, what="the garbage to be counted")


def figure_of(lines, name) -> int:
    (value,) = [line[1] for line in lines if line[0] == name]
    return int(value)


def wg_public_key(host, iface) -> str:
    return host.run("wg", "show", iface, "public-key", check=True).stdout.decode().strip()


def test_show_all_drops(shown):
    """Each line names the interface first; wireguard-go's device is named on
    stderr and skipped."""
    lines, err, code = drops(shown, "all")
    assert code == 0
    assert err == f"{shown.go} does not report counters: not a wgc daemon\n"
    alone = drops(shown, shown.wgc)[0]
    assert [line[0] for line in lines] == [shown.wgc] * len(alone)
    assert [line[1:-1] for line in lines] == [line[:-1] for line in alone]


def test_show_drops_of_a_device_that_is_not_wgc(shown):
    assert drops(shown, shown.go) == ([], f"{shown.go} does not report counters: not a wgc daemon\n", 1)
    # No device at all: what Debian's wg says of it (the kernel's answer).
    missing = shown.run("wg", "show", "nosuchwg").stderr.decode()
    assert missing.startswith("Unable to access interface: ")
    assert drops(shown, "nosuchwg") == ([], missing, 1)
    # Debian's wg has no such field.
    reference = shown.run("wg", "show", shown.wgc, "drops")
    assert reference.returncode == 1 and reference.stderr.startswith(b"Invalid parameter: `drops'")


def test_the_usage_of_wgc_wg_show_tells_of_drops(host):
    """As `wgc --wg`, not as wg (whose usage test_usage_and_errors compares)."""
    usage = host.run(wgc_executable(), "--wg", "show", "--help")
    assert usage.returncode == 0
    assert usage.stderr.decode().startswith("Usage: wgc --wg show { <interface> | all | interfaces } [")
    assert "wgc extension: `drops'" in usage.stderr.decode()


# -- set, setconf, addconf, syncconf -----------------------------------------------------------


def write(path, data) -> str:
    with open(path, "wb") as out:
        out.write(data if isinstance(data, bytes) else data.encode())
    return str(path)


def compare_change(host, tmp_path, args_for, files=None, env=None, input=None, devices=None):
    """Resets each device, applies the same command with Debian's wg and with
    ours, and compares the outputs and the states they leave."""
    files = {name: write(tmp_path / name, data) for name, data in (files or {}).items()}
    for iface, port in devices or ((host.wgc, WGC_PORT + 5), (host.go, GO_PORT + 5)):
        args = [arg.format(iface=iface, **files) for arg in args_for]
        results, states = [], []
        for program in ("wg", host.ours):
            host.reset(iface, port)
            before = host.state(iface)
            proc = host.run(program, *args, env=env, input=input)
            name = host.ours.encode()
            results.append((proc.stdout.replace(name, b"wg"), proc.stderr.replace(name, b"wg"), proc.returncode))
            states.append(host.state(iface))
        host.reset(iface, port)  # frees the ports it took for the next device
        assert results[1] == results[0], f"{args} on {iface}"
        assert states[1] == states[0], f"{args} on {iface}"
    return results[0], before, states[0]


@pytest.fixture(scope="module")
def quiet(host):
    """Devices that are down: peers given endpoints here never send anything."""
    for iface in (host.wgc, host.go):
        host.run("ip", "link", "set", iface, "down", check=True)
    return host


KEYFILE = PRIVATE + "\n"


@pytest.mark.parametrize("args, files", [
    (["listen-port", "4000", "fwmark", "0x10", "private-key", "{key}"], {"key": KEYFILE}),
    (["listen-port", "domain"], None),
    (["listen-port", "ntp", "fwmark", "off"], None),
    (["listen-port", ""], None),
    (["listen-port", "x"], None),
    (["listen-port", "65536"], None),
    (["listen-port", "-1"], None),
    (["fwmark", "4294967295"], None),
    (["fwmark", "4294967296"], None),
    (["fwmark", "0x"], None),
    (["fwmark", "0xg"], None),
    (["fwmark", "0XFF"], None),
    (["fwmark", "+1"], None),
    (["fwmark", "010"], None),
    (["fwmark", "OFF"], None),
    (["private-key", "{key}"], {"key": PRIVATE + "\n\n \t\n"}),
    (["private-key", "{key}"], {"key": PRIVATE}),
    (["private-key", "{key}"], {"key": PRIVATE + "x"}),
    (["private-key", "{key}"], {"key": PRIVATE[:-2] + "\n"}),
    (["private-key", "{key}"], {"key": ""}),
    (["private-key", "{key}"], {"key": "A" * 42 + "B="}),
    (["private-key", "/dev/null"], None),
    (["private-key", "/nonexistent"], None),
    (["private-key", "/tmp"], None),
    (["peer", K1], None),
    (["peer", K1, "remove"], None),
    (["peer"], None),
    (["peer", "xyz"], None),
    (["remove"], None),
    (["endpoint", "1.2.3.4:5"], None),
    (["peer", K1, "listen-port", "5"], None),
    (["peer", K1, "preshared-key", "{psk}", "persistent-keepalive", "25", "endpoint", "1.2.3.4:5"], {"psk": PSK}),
    (["peer", K1, "preshared-key", "/dev/null"], None),
    (["peer", K1, "allowed-ips", "10.0.0.0/8,fd00::/64,1.2.3.4,::1", "peer", K2, "allowed-ips", ""], None),
    (["peer", K1, "allowed-ips", "10.1.2.3/8"], None),
    (["peer", K1, "allowed-ips", "10.0.0.0/8", "allowed-ips", "11.0.0.0/8"], None),
    (["peer", K1, "allowed-ips", "10.0.0.0/8, 11.0.0.0/8"], None),
    (["peer", K1, "allowed-ips", " 10.0.0.0 / 8 ,\t11.0.0.0/8\n"], None),
    (["peer", K1, "allowed-ips", "10.0.0.0/8 x"], None),
    (["peer", K1, "allowed-ips", "10.0.0.0/33"], None),
    (["peer", K1, "allowed-ips", "::/129"], None),
    (["peer", K1, "allowed-ips", "1.2.3.4/"], None),
    (["peer", K1, "allowed-ips", "1.2.3.4/8/9"], None),
    (["peer", K1, "allowed-ips", "1.2.3.4/+8"], None),
    (["peer", K1, "allowed-ips", "01.2.3.4/32"], None),
    (["peer", K1, "allowed-ips", "1.2.3.4/32,,"], None),
    (["peer", K1, "allowed-ips", "::ffff:1.2.3.4/96,::1.2.3.4/128"], None),
    (["peer", K1, "endpoint", ""], None),
    (["peer", K1, "endpoint", "[::1"], None),
    (["peer", K1, "endpoint", "[::1]"], None),
    (["peer", K1, "endpoint", "[::1]:"], None),
    (["peer", K1, "endpoint", "[::1]x5"], None),
    (["peer", K1, "endpoint", "1.2.3.4"], None),
    (["peer", K1, "endpoint", "1.2.3.4:"], None),
    (["peer", K1, "endpoint", "1.2.3.4:65536"], None),
    (["peer", K1, "endpoint", "[fe80::1%lo]:7"], None),
    (["peer", K1, "endpoint", "[::ffff:1.2.3.4]:7"], None),
    (["peer", K1, "endpoint", "localhost:7"], None),
    (["peer", K1, "endpoint", "1.2.3.4:domain"], None),
    (["peer", K1, "persistent-keepalive", "off"], None),
    (["peer", K1, "persistent-keepalive", "65535"], None),
    (["peer", K1, "persistent-keepalive", "65536"], None),
    (["peer", K1, "persistent-keepalive", "x"], None),
    (["peer", K1, "persistent-keepalive", "-1"], None),
    (["peer", K1, "allowed-ips", "10.0.0.0/8", "peer", K2, "remove", "peer", K3, "allowed-ips", "10.0.0.0/16"], None),
], ids=lambda value: " ".join(value) if isinstance(value, list) else "")
def test_set(quiet, tmp_path, args, files):
    compare_change(quiet, tmp_path, ["set", "{iface}", *args], files)


def test_set_keeps_what_it_does_not_name(quiet, tmp_path):
    """Changes on top of an existing configuration (the reset leaves only a
    port, so give the device peers first with Debian's wg)."""
    setup = tmp_path / "setup.conf"
    setup.write_text(f"[Interface]\nPrivateKey = {PRIVATE}\n[Peer]\nPublicKey = {K1}\nAllowedIPs = 10.0.0.0/8\n"
                     f"[Peer]\nPublicKey = {K2}\nAllowedIPs = 11.0.0.0/8\nEndpoint = 1.1.1.1:1\n")
    for iface in (quiet.wgc, quiet.go):
        states = []
        for program in ("wg", quiet.ours):
            quiet.run("wg", "setconf", iface, str(setup), check=True)
            quiet.run(program, "set", iface, "fwmark", "7", "peer", K1, "remove", "peer", K2, "allowed-ips",
                      "12.0.0.0/8", "peer", K3, "endpoint", "[::1]:4", check=True)
            states.append(quiet.state(iface))
        assert states[0] == states[1]
        assert K3 in "".join(states[0][1]) and K1 not in "".join(states[0][1])


CONFIGS = {
    "full": RICH_CONFIG.format(private=PRIVATE, port=4444, k1=K1, k2=K2, k3=K3, psk=PSK),
    "case and spaces": f"[interface]\n  privatekey=  {PRIVATE}  \nLISTENPORT = 5 # port\n[PEER]\npublickey={K1}\n"
    "allowedips = 10.0.0.0/8 ,\t11.0.0.0/8\nALLOWEDIPS=12.0.0.0/8\n",
    "empty": "",
    "only comments": "# nothing\n   # more\n",
    "no section": "ListenPort = 5\n",
    "unknown key": "[Interface]\nListenPort = 5\nMTU = 1420\n",
    "empty value": "[Interface]\nListenPort =\n",
    "bad key": "[Interface]\nPrivateKey = abc\n",
    "peer without key": "[Peer]\nAllowedIPs = 10.0.0.0/8\n",
    "peer key in interface": f"[Interface]\nPublicKey = {K1}\n",
    "bad allowed ip": f"[Peer]\nPublicKey = {K1}\nAllowedIPs = 10.0.0.0/40\n",
    "host bits": f"[Peer]\nPublicKey = {K1}\nAllowedIPs = 10.1.2.3/8\n",
    "bad endpoint": f"[Peer]\nPublicKey = {K1}\nEndpoint = 1.2.3.4\n",
    "bad keepalive": f"[Peer]\nPublicKey = {K1}\nPersistentKeepalive = 70000\n",
    "keepalive off": f"[Peer]\nPublicKey = {K1}\nPersistentKeepalive = off\n",
    "bad fwmark": "[Interface]\nFwMark = 0xfffffffff\n",
    "fwmark off": "[Interface]\nFwMark = off\n",
    "empty allowed ips": f"[Peer]\nPublicKey = {K1}\nAllowedIPs = 1.0.0.0/8\nAllowedIPs =\n",
    "duplicate peer": f"[Peer]\nPublicKey = {K1}\nAllowedIPs = 1.0.0.0/8\n"
                      f"[Peer]\nPublicKey = {K1}\nAllowedIPs = 2.0.0.0/8\n",
    "no final newline": f"[Peer]\nPublicKey = {K1}",
    "CRLF": f"[Interface]\r\nListenPort = 7\r\n[Peer]\r\nPublicKey = {K1}\r\n",
    "NUL in line": "[Interface]\nListenPort = 7\0junk\n",
    "hash in value": f"[Peer]\nPublicKey = {K1}#comment\nEndpoint = 1.2.3.4:5#x\n",
}


@pytest.mark.parametrize("command", ["setconf", "addconf", "syncconf"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_files(quiet, tmp_path, command, name):
    compare_change(quiet, tmp_path, [command, "{iface}", "{conf}"], {"conf": CONFIGS[name]})


def test_syncconf_removes_only_peers_not_in_the_file(quiet, tmp_path):
    keys = sorted(new_key()[1] for _ in range(6))
    setup = "[Interface]\n" + "".join(f"[Peer]\nPublicKey = {k}\nAllowedIPs = 10.{i}.0.0/16\n"
                                       for i, k in enumerate(keys))
    wanted = f"[Interface]\n[Peer]\nPublicKey = {keys[1]}\n[Peer]\nPublicKey = {keys[4]}\n" \
             f"AllowedIPs = 11.0.0.0/8\n[Peer]\nPublicKey = {K1}\n"
    for iface in (quiet.wgc, quiet.go):
        setup_file = write(tmp_path / "setup.conf", setup)
        wanted_file = write(tmp_path / "wanted.conf", wanted)
        states = []
        for program in ("wg", quiet.ours):
            quiet.run("wg", "setconf", iface, setup_file, check=True)
            assert quiet.run(program, "syncconf", iface, wanted_file).returncode == 0
            states.append(quiet.state(iface))
        assert states[0] == states[1]
        shown = "".join(states[0][1])
        assert all(k in shown for k in (keys[1], keys[4], K1))
        assert not any(k in shown for k in (keys[0], keys[2], keys[3], keys[5]))
        assert "10.1.0.0/16" not in shown  # [Peer] sections replace allowed IPs


def test_the_wgc_wg_option(host):
    """`wgc --wg` is the same tool; messages name it `wgc --wg`."""
    wgc = wgc_executable()
    reference = host.run("wg", "show", host.wgc, "dump")
    ours = host.run(wgc, "--wg", "show", host.wgc, "dump")
    assert (ours.stdout, ours.returncode) == (reference.stdout, 0)
    usage = host.run(wgc, "--wg", "set")
    assert usage.returncode == 1 and usage.stderr.startswith(b"Usage: wgc --wg set <interface>")


def test_large_device(quiet, tmp_path):
    """10,000 peers and one more with 100,000 allowed IPs, through setconf and
    every view of it, on the wgc device: the same state and the same output."""
    lines = ["[Interface]", f"PrivateKey = {PRIVATE}"]
    for n in range(10000):
        public = base64.b64encode(b"\x02" + n.to_bytes(31, "big")).decode()
        lines += ["[Peer]", f"PublicKey = {public}", f"AllowedIPs = 10.{n >> 8}.{n & 255}.0/24"]
        if n % 2:
            lines.append(f"Endpoint = 192.0.2.{n % 250 + 1}:{1024 + n}")
    big = ", ".join([f"11.{i >> 8}.{i & 255}.0/24" for i in range(65536)]
                    + [f"fd00::{i:x}:0/112" for i in range(100000 - 65536)])
    lines += ["[Peer]", f"PublicKey = {K1}", f"AllowedIPs = {big}"]
    started = time.monotonic()
    result, _, state = compare_change(quiet, tmp_path, ["setconf", "{iface}", "{conf}"],
                                      {"conf": "\n".join(lines) + "\n"}, devices=[(quiet.wgc, WGC_PORT + 5)])
    assert result == (b"", b"", 0) and len(state[3]) == 10001
    quiet.run("wg", "setconf", quiet.wgc, str(tmp_path / "conf"), check=True)
    for args in (("show", quiet.wgc, "dump"), ("show", quiet.wgc, "allowed-ips"), ("showconf", quiet.wgc),
                 ("show", quiet.wgc)):
        assert_same(quiet, *args)
    assert time.monotonic() - started < 60
    quiet.reset(quiet.wgc, WGC_PORT + 5)



def test_large_setconf_round_trips(quiet, tmp_path):
    """200 peers x 500 allowed IPs through the built-in setconf: the built-in
    showconf gives the file back byte for byte, and Debian's prints the same
    (every field showconf has, IPv6 in inet_ntop's spelling, some prefixes
    not /32)."""
    sections = [f"[Interface]\nListenPort = {WGC_PORT + 7}\nPrivateKey = {PRIVATE}\n"]
    for n in range(200):
        ips = [f"10.{n}.{i >> 8}.{i & 255}/32" for i in range(440)] + [f"11.{n}.{i}.0/24" for i in range(10)]
        ips += [f"fd00:{n + 1:x}::{i + 1:x}/128" for i in range(40)]
        ips += [f"fd01:0:{n + 1:x}:{i + 1:x}::/64" for i in range(10)]
        lines = [f"[Peer]\nPublicKey = {base64.b64encode(bytes([3, n]) + bytes(30)).decode()}\n"]
        if n % 3 == 0:
            lines.append(f"PresharedKey = {PSK}\n")
        lines.append(f"AllowedIPs = {', '.join(ips)}\n")
        if n % 2:
            lines.append(f"Endpoint = 192.0.2.{n % 250 + 1}:{1024 + n}\n")
        if n % 5 == 0:
            lines.append(f"PersistentKeepalive = {n + 1}\n")
        sections.append("".join(lines))
    text = "\n".join(sections)
    conf = write(tmp_path / "large.conf", text)
    try:
        setconf = quiet.run(quiet.ours, "setconf", quiet.wgc, conf)
        assert (setconf.stdout, setconf.stderr, setconf.returncode) == (b"", b"", 0)
        ours = quiet.run(quiet.ours, "showconf", quiet.wgc, check=True).stdout.decode()
        assert ours == text
        assert quiet.run("wg", "showconf", quiet.wgc, check=True).stdout.decode() == ours
    finally:
        quiet.reset(quiet.wgc, WGC_PORT + 5)

FAKE_DAEMON = """
import os, socket, sys
path, reply = sys.argv[1], sys.argv[2].encode().decode("unicode_escape").encode("latin-1")
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen()
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    data = b""
    try:
        while b"\\n\\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break  # wg(8)'s probe: connect, then close
            data += chunk
        if data:
            conn.sendall(reply)
    except OSError:
        pass
    conn.close()
"""


@pytest.mark.parametrize("reply", ["errno=-5\\n\\n", "errno=5\\n\\n", "errno=x\\n\\n", "private_key=zz\\nerrno=0\\n\\n",
                                   "", "listen_port=1\\n",
                                   "public_key=" + "11" * 32 + "\\nendpoint=[::1\\nerrno=0\\n\\n",
                                   "public_key=" + "11" * 32 + "\\nallowed_ip=1.2.3.4/33\\nerrno=0\\n\\n",
                                   "public_key=" + "11" * 32 + "\\nfuture_key=1\\nerrno=0\\n\\n"])
def test_a_daemon_that_answers_badly(host, reply):
    """A socket that answers get and set with an error or junk: the same
    messages for show, show all, showconf and set."""
    name = unique_name("wgbad")
    path = f"/run/wireguard/{name}.sock"
    server = subprocess.Popen(["nsenter", "-t", str(host.pid), "-n", "-m", "--", "python3", "-c", FAKE_DAEMON,
                               path, reply], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == "ready\n"
        for args in (("show", name), ("show", name, "peers"), ("showconf", name), ("set", name, "fwmark", "1")):
            assert_same(host, *args)
        assert_same_soon(host, "show", "all", "dump", random_order=True)
    finally:
        server.kill()
        server.wait()
        host.run("rm", "-f", path)


def test_a_stale_socket_is_removed_by_both(host):
    name = unique_name("wgsta")
    path = f"/run/wireguard/{name}.sock"
    make = "import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])"
    outputs = []
    for program in ("wg", host.ours):
        host.run("python3", "-c", make, path, check=True)
        proc = host.run(program, "show", "interfaces", check=True)
        assert host.run("test", "-e", path).returncode == 1, f"{program} left the stale socket"
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1] and name.encode() not in outputs[0]
