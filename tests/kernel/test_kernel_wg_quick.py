"""The built-in wg-quick on the kernel's WireGuard, against Debian's wg-quick.

In the guest (Debian's kernel under QEMU, see guest.py) the wireguard module
is loaded, so both make links of kind wireguard: Debian's script (run by the
host's bash, carried in) with Debian's wg and ip, and this tree frozen into a
one-file wgc run as `wg-quick`, which makes the link, addresses, MTU, routes
and rules over rtnetlink and configures the device over generic netlink.
After each `up` the links, addresses, routes, rules, `wg showconf` and what
the hooks wrote must be the same; after each `down`, what was there before.

No default-route case here: the guest has neither nft nor iptables, which the
script needs for it (tests/test_wg_quick.py covers it with wgc devices).
"""
import os
import re
import shutil

import pytest
from frozen import guest_with_wgc
from guest import unavailable
from test_kernel_wg_tool import put_file

pytestmark = [pytest.mark.kernel, pytest.mark.netns, pytest.mark.timeout(900)]

PRIVATE = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
K1 = "ERERERERERERERERERERERERERERERERERERERERERE="
K2 = "IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI="
K3 = "MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM="
DEBIAN = "bash /usr/bin/wg-quick"
OURS = "/tmp/wg-quick"


@pytest.fixture(scope="module")
def vm():
    bash = shutil.which("bash")
    if not os.path.exists("/usr/bin/wg-quick") or bash is None:
        unavailable("Debian's wg-quick and bash are needed on the host")
    with guest_with_wgc("wgkwq", programs={"bash": bash}) as vm:
        with open("/usr/bin/wg-quick") as script:
            put_file(vm, "/usr/bin/wg-quick", script.read())
        vm.run(f"chmod 755 /usr/bin/wg-quick && ln -s /usr/bin/wgc {OURS} && mkdir -p /etc/wireguard"
               " && ln -sf /proc/self/fd /dev/fd"  # bash's <(...) and our setconf use /dev/fd/N
               " && ip link set eth0 up && ip addr add 10.200.0.2/24 dev eth0")
        # eth0's link-local address settles first, so the records before and after compare.
        vm.run("for i in $(seq 100); do ip -6 addr show dev eth0 | grep fe80 | grep -qv tentative && break;"
               " sleep 0.1; done; ip -6 addr show dev eth0 | grep fe80 | grep -qv tentative")
        yield vm


def snapshot(vm, iface) -> dict:
    state = {name: vm.run(command, check=False).stdout for name, command in (
        ("links", "ip -o link"), ("addresses", "ip -o addr"), ("routes", "ip route show table all"),
        ("rules", "ip rule"), ("rules6", "ip -6 rule"), ("showconf", f"wg showconf {iface}"),
        ("interfaces", "wg show interfaces"), ("hooks", "cat /tmp/hooks"))}
    return {name: re.sub(r"(?m)^\d+: ", "N: ", text) for name, text in state.items()}


def cycle(vm, program, iface, text, between=None) -> dict:
    path = f"/etc/wireguard/{iface}.conf"
    put_file(vm, path, text)
    vm.run(f"chmod 600 {path} && : > /tmp/hooks")
    before = snapshot(vm, iface)
    up = vm.run(f"{program} up {iface}", check=False, timeout=60)
    assert up.returncode == 0, f"{program} up: {up.stderr}"
    result = {"up": snapshot(vm, iface)}
    assert result["up"]["links"].count(f"{iface}:") == 1
    assert "wireguard" in vm.run(f"ip -d link show {iface}").stdout  # the kernel's, not a daemon
    if between is not None:
        between()
    down = vm.run(f"{program} down {iface}", check=False, timeout=60)
    assert down.returncode == 0, f"{program} down: {down.stderr}"
    after = snapshot(vm, iface)
    after.pop("hooks"), before.pop("hooks")
    assert after == before, f"{program} down left something behind"
    result["saved"] = vm.run(f"cat {path}").stdout
    return result


def both(vm, iface, text, between=None):
    return cycle(vm, DEBIAN, iface, text, between), cycle(vm, OURS, iface, text, between)


def assert_same(debian, ours):
    """Record by record, so a failure names what differs."""
    assert ours["saved"] == debian["saved"]
    for name, text in debian["up"].items():
        assert ours["up"][name] == text, name


def test_addresses_mtu_routes_hooks(vm):
    text = f"""[Interface]
PrivateKey = {PRIVATE}
ListenPort = 51820
Address = 10.55.0.1/24, fd55::1/64
MTU = 1380
PreUp = echo pre-up %i >> /tmp/hooks
PostUp = echo post-up %i >> /tmp/hooks
PostDown = echo post-down %i >> /tmp/hooks

[Peer]
PublicKey = {K1}
AllowedIPs = 10.55.0.2/32, 10.56.0.0/16, fd56::/48
Endpoint = 10.200.0.1:51820
"""
    debian, ours = both(vm, "wgq0", text)
    assert "mtu 1380" in debian["up"]["links"] and "10.56.0.0/16 dev wgq0" in debian["up"]["routes"]
    assert debian["up"]["hooks"] == "pre-up wgq0\npost-up wgq0\n"
    assert_same(debian, ours)


def test_automatic_mtu_table_and_fwmark(vm):
    text = f"""[Interface]
PrivateKey = {PRIVATE}
ListenPort = 51822
FwMark = 0x4d2
Table = 1234
Address = 10.55.0.1/24

[Peer]
PublicKey = {K1}
AllowedIPs = 10.56.0.0/16
Endpoint = 10.200.0.1:51820

[Peer]
PublicKey = {K2}
AllowedIPs = 10.57.0.0/16, fd57::/64
"""
    debian, ours = both(vm, "wgq1", text)
    assert "mtu 1420" in debian["up"]["links"] and "table 1234" in debian["up"]["routes"]
    assert "FwMark = 0x4d2" in debian["up"]["showconf"]
    assert_same(debian, ours)


def test_save_config(vm):
    text = f"""[Interface]
PrivateKey = {PRIVATE}
ListenPort = 51821
Address = 10.55.0.1/24
SaveConfig = true
PostUp = echo up >> /tmp/hooks

[Peer]
PublicKey = {K1}
AllowedIPs = 10.56.0.0/16
"""

    def change():
        vm.run(f"wg set wgq2 peer {K3} allowed-ips 10.70.0.0/24 && ip addr add 10.55.1.1/24 dev wgq2")

    debian, ours = both(vm, "wgq2", text, change)
    assert K3 in debian["saved"] and "Address = 10.55.1.1/24" in debian["saved"]
    assert_same(debian, ours)
