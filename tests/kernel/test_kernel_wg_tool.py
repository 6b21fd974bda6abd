"""The built-in wg, and so wgc.control's generic netlink backend, on the kernel's WireGuard.

The guest (Debian's kernel under QEMU, see guest.py) has no Python, so this
tree is frozen into a one-file wgc with PyInstaller and carried into the
guest next to Debian's wg.  There, both tools show, set and configure the
same kernel devices and must print the same and leave the same state:
WG_CMD_GET_DEVICE dumps over many messages, WG_CMD_SET_DEVICE split at the
page size, errors (ENODEV), link listing.

Skips, with the reason, when QEMU, the kernel or PyInstaller cannot be had or
the guest does not boot; WGC_KERNEL_REQUIRED=1 turns those skips into failures.
"""
import base64

import pytest
from frozen import guest_with_wgc

pytestmark = [pytest.mark.kernel, pytest.mark.netns, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def vm():
    with guest_with_wgc("wgkwt") as vm:
        vm.run("ln -s /usr/bin/wgc /tmp/wg && ip link add wgk0 type wireguard && ip link add wgk1 type wireguard"
               " && ip link set eth0 up && ip -6 addr add fe80::2/64 dev eth0 nodad")
        yield vm


def both(vm, args: str, stdin: str | None = None, timeout: float = 120):
    """Debian's wg and the frozen wgc (run as `wg`) on the same command line."""
    feed = f"printf %s {quote(stdin)} | " if stdin is not None else ""
    reference = vm.run(f"{feed}wg {args}", check=False, timeout=timeout)
    ours = vm.run(f"{feed}/tmp/wg {args}", check=False, timeout=timeout)
    return ((reference.stdout, unname(reference.stderr), reference.returncode),
            (ours.stdout, unname(ours.stderr), ours.returncode))


def unname(text: str) -> str:
    """Messages name the program by argv[0]: the guest runs /usr/bin/wg and /tmp/wg."""
    return text.replace("/usr/bin/wg", "wg").replace("/tmp/wg", "wg")


def quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def put_file(vm, path: str, text: str):
    """Writes a file in the guest in pieces (each command is one line on a serial port)."""
    data = base64.b64encode(text.encode()).decode()
    vm.run(f": > {path}.b64")
    for start in range(0, len(data), 60000):
        vm.run(f"printf %s {data[start:start + 60000]} >> {path}.b64")
    vm.run(f"base64 -d {path}.b64 > {path} && rm {path}.b64")


K1 = "ERERERERERERERERERERERERERERERERERERERERERE="
K2 = "IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI="
K3 = "MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM="
PRIVATE = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
PSK = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM="

RICH = f"""[Interface]
PrivateKey = {PRIVATE}
ListenPort = 51820
FwMark = 0x1234

[Peer]
PublicKey = {K1}
PresharedKey = {PSK}
Endpoint = 192.0.2.1:51820
AllowedIPs = 10.0.0.0/8, fd00::/64, ::ffff:1.2.3.4/128
PersistentKeepalive = 25

[Peer]
PublicKey = {K2}
Endpoint = [fe80::1%eth0]:1234
AllowedIPs = 192.168.7.0/24

[Peer]
PublicKey = {K3}
Endpoint = [2001:db8::7]:9
"""

FIELDS = ["public-key", "private-key", "listen-port", "fwmark", "peers", "preshared-keys", "endpoints",
          "allowed-ips", "latest-handshakes", "transfer", "persistent-keepalive", "dump"]


def test_show_on_a_kernel_device(vm):
    put_file(vm, "/tmp/rich.conf", RICH)
    vm.run("wg setconf wgk0 /tmp/rich.conf")
    commands = ["show wgk0", "showconf wgk0", "show all", "show interfaces", "show all dump", "",
                "show nosuchwg", "showconf nosuchwg", "set nosuchwg fwmark 1", "show wgk0 bogus"]
    commands += [f"show wgk0 {field}" for field in FIELDS]
    for command in commands:
        reference, ours = both(vm, command)
        assert ours == reference, command
    # The kernel keeps a link-local endpoint's scope: shown as %eth0.
    assert "[fe80::1%eth0]:1234" in both(vm, "show wgk0 endpoints")[1][0]
    assert both(vm, "show nosuchwg")[1][1] == "Unable to access interface: No such device\n"


SET_CASES = [
    "listen-port 4000 fwmark 0x10 private-key /tmp/key",
    f"peer {K1} allowed-ips 10.0.0.0/8,fd00::/64 endpoint 1.2.3.4:5 persistent-keepalive 25 preshared-key /tmp/psk",
    f"peer {K1} remove",
    f"peer {K2} allowed-ips 10.1.2.3/8 endpoint [::1]:7",
    f"peer {K3} allowed-ips '' endpoint [fe80::9%eth0]:9",
    "private-key /dev/null fwmark off",
    f"peer {K1} allowed-ips 1.2.3.4/33",
    "listen-port 70000",
]


@pytest.mark.parametrize("args", SET_CASES)
def test_set_on_a_kernel_device(vm, args):
    put_file(vm, "/tmp/key", PRIVATE + "\n")
    put_file(vm, "/tmp/psk", PSK + "\n")
    put_file(vm, "/tmp/rich1.conf", RICH.replace("ListenPort = 51820", "ListenPort = 51821"))
    results = []
    for program in ("wg", "/tmp/wg"):
        vm.run("wg setconf wgk1 /tmp/rich1.conf")
        run = vm.run(f"{program} set wgk1 {args}", check=False)
        state = vm.run("wg showconf wgk1 && wg show wgk1 dump").stdout
        results.append((run.stdout, unname(run.stderr), run.returncode, state))
    assert results[1] == results[0]


def big_config(peers: int, ips_on_last: int, port: int) -> str:
    lines = ["[Interface]", f"PrivateKey = {PRIVATE}", f"ListenPort = {port}"]
    for n in range(peers):
        public = base64.b64encode(b"\x02" + n.to_bytes(31, "big")).decode()
        lines += ["[Peer]", f"PublicKey = {public}", f"AllowedIPs = 10.{n >> 8}.{n & 255}.0/24, fd00:{n:x}::/48"]
        if n % 2:
            lines.append(f"Endpoint = 192.0.2.{n % 250 + 1}:{1024 + n}")
    many = ", ".join(f"11.{i >> 16}.{(i >> 8) & 255}.{i & 255}/32" for i in range(ips_on_last))
    lines += ["[Peer]", f"PublicKey = {K1}", f"AllowedIPs = {many}"]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("peers,ips", [(10_000, 1), (0, 100_000)], ids=["10000-peers", "100000-allowed-ips"])
def test_round_trip_of_the_largest_configurations(vm, peers, ips):
    """Set by wgc.control in many page-sized messages, read back by both tools
    from a dump the kernel spreads over many: the same state."""
    put_file(vm, "/tmp/huge.conf", big_config(peers, ips, 51997))
    vm.run("ip link add wgk2 type wireguard")
    try:
        vm.run("/tmp/wg setconf wgk2 /tmp/huge.conf", timeout=600)
        reference, ours = both(vm, "show wgk2 dump", timeout=600)
        assert ours == reference
        assert reference[0].count("\n") == 1 + peers + 1 and reference[0].count("/32") == ips
        reference, ours = both(vm, "showconf wgk2", timeout=600)
        assert ours == reference
    finally:
        vm.run("ip link del wgk2 && rm -f /tmp/huge.conf", check=False, timeout=600)


def test_large_configuration_over_many_messages(vm):
    """1,000 peers and one with 10,000 allowed IPs: set by each tool in many
    page-sized messages, dumped back over many; the same state either way."""
    put_file(vm, "/tmp/big.conf", big_config(1000, 10000, 51999))
    dumps = []
    for program in ("wg", "/tmp/wg"):
        vm.run("ip link del wgk1 && ip link add wgk1 type wireguard")
        vm.run(f"{program} setconf wgk1 /tmp/big.conf", timeout=120)
        dumps.append(vm.run("wg show wgk1 dump", timeout=120).stdout)
    assert dumps[0] == dumps[1]
    assert dumps[0].count("\n") == 1 + 1001 and dumps[0].count("11.") >= 10000
    # Reading back: the same dump through wgc.control's joining of the kernel's messages.
    reference, ours = both(vm, "show wgk1 dump")
    assert ours == reference
    reference, ours = both(vm, "showconf wgk1")
    assert ours == reference
    # syncconf down to a few peers: removals for all the others.
    put_file(vm, "/tmp/small.conf", big_config(3, 2, 51999))
    put_file(vm, "/tmp/small2.conf", big_config(3, 2, 51998))
    vm.run("/tmp/wg syncconf wgk1 /tmp/small.conf", timeout=120)
    vm.run("ip link add wgk2 type wireguard && wg setconf wgk2 /tmp/small2.conf")
    mine = vm.run("wg show wgk1 dump").stdout.split("\n", 1)[1]
    expected = vm.run("wg show wgk2 dump").stdout.split("\n", 1)[1]
    vm.run("ip link del wgk2")
    assert mine == expected
