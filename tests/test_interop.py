"""wgc against Debian's wireguard-go (and itself) between network namespaces.

Configured only through wg(8).  The left end always sends first, so it is
the handshake initiator: the matrix covers wgc in both roles.
"""
import json
import time

import pytest

from netns import wait_for
from wgnet import have, iperf3, new_key, tunnel

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

PAIRS = [("wgc", "wgc"), ("wgc", "wireguard-go"), ("wireguard-go", "wgc")]
PAIR_IDS = [f"{a}-to-{b}" for a, b in PAIRS]
# wgc with its TUN offloads (segmentation, coalescing) and with them forced off.
OFFLOADS = pytest.mark.parametrize("env", [{}, {"WGC_OFFLOAD": "off"}], ids=["offload-on", "offload-off"])
# The same, and for the TCP transfers with three crypto threads sharing each
# batch (wgc._workers), where the default on a 2-CPU machine is one.
OFFLOADS_AND_WORKERS = pytest.mark.parametrize("env", [{}, {"WGC_OFFLOAD": "off"}, {"WGC_WORKERS": "3"}],
                                               ids=["offload-on", "offload-off", "workers-3"])


@pytest.fixture(autouse=True)
def _need_wireguard_go():
    if not have("wireguard-go"):
        pytest.skip("Debian's wireguard-go is not installed")


@OFFLOADS
@pytest.mark.parametrize("outer", [4, 6], ids=["outer-v4", "outer-v6"])
@pytest.mark.parametrize("left,right", PAIRS, ids=PAIR_IDS)
def test_ping_over_ipv4_and_ipv6(netns, left, right, outer, env):
    a, b = tunnel(netns, left, right, outer_family=outer, env=env)
    a.ping(b.inner4)
    a.ping(b.inner6)
    b.ping(a.inner4)
    assert b.public_key in a.show("latest-handshakes")
    assert int(a.show("latest-handshakes").split()[1]) > 0
    endpoint = b.show("endpoints").split()[1]
    assert endpoint.endswith(f":{a.port}") and a.outer in endpoint


@OFFLOADS
@pytest.mark.parametrize("left,right", PAIRS, ids=PAIR_IDS)
def test_transfer_counts_after_ten_pings(netns, left, right, env):
    """The kernel selftest's figures: 10 pings of 84 bytes from a fresh start."""
    a, b = tunnel(netns, left, right, with_ipv6=False, env=env)
    a.ping(b.inner4, count=10, interval=0.1)
    rx, tx = a.transfer()
    assert (rx, tx) in ((1372, 1428), (1372, 1460))
    rx_b, tx_b = b.transfer()
    assert (rx_b, tx_b) in ((1428, 1372), (1460, 1372))
    assert rx_b == tx and tx_b == rx


@OFFLOADS_AND_WORKERS
@pytest.mark.parametrize("left,right", PAIRS, ids=PAIR_IDS)
def test_iperf3_tcp_both_ways(netns, left, right, env):
    a, b = tunnel(netns, left, right, with_ipv6=False, env=env)
    a.ping(b.inner4, count=1)
    for client, server in ((a, b), (b, a)):
        result = json.loads(iperf3(client, server, seconds=2).stdout)
        received = result["end"]["sum_received"]["bytes"]
        assert received > 1_000_000, f"{client.implementation} -> {server.implementation}: {received} bytes"


@OFFLOADS
@pytest.mark.parametrize("left,right", PAIRS, ids=PAIR_IDS)
def test_iperf3_tcp_and_udp_inside_ipv6(netns, left, right, env):
    """IPv6 inside: TCP super-packets of the IPv6 kind, and UDP runs, both ways.

    A segment or a coalesced packet with a wrong checksum or length would be
    dropped by the receiving stack: TCP would stall and UDP datagrams vanish.
    """
    a, b = tunnel(netns, left, right, env=env)
    a.ping(b.inner6, count=1)
    for client, server in ((a, b), (b, a)):
        tcp = json.loads(iperf3(client, server, seconds=1, ipv6=True).stdout)
        assert tcp["end"]["sum_received"]["bytes"] > 1_000_000, (client.implementation, server.implementation)
        udp = json.loads(iperf3(client, server, seconds=1, ipv6=True,
                                extra=("-u", "-b", "50M", "-l", "1300")).stdout)
        summary = udp["end"]["sum"]
        assert summary["packets"] > 1000 and summary["lost_percent"] < 20, summary


@pytest.mark.parametrize("left,right", PAIRS, ids=PAIR_IDS)
def test_roaming_to_a_new_listen_port(netns, left, right):
    a, b = tunnel(netns, left, right, with_ipv6=False)
    a.ping(b.inner4, count=1)
    a.wg("set", a.iface, "listen-port", str(a.port + 100))
    a.ping(b.inner4, count=2)
    assert b.show("endpoints").split()[1] == f"{a.outer}:{a.port + 100}"


# The moving end is wgc: Debian's wireguard-go keeps sending from its remembered
# source address after that address is gone (wireguard-go to wireguard-go fails
# the same way), so it never roams here.  wgc as the end that follows a roaming
# wireguard-go is covered by the listen-port test above.
@pytest.mark.parametrize("left,right", PAIRS[:2], ids=PAIR_IDS[:2])
def test_roaming_to_a_new_address(netns, left, right):
    a, b = tunnel(netns, left, right, with_ipv6=False)
    a.ping(b.inner4, count=1)
    cable = a.ns.run("ip", "-o", "-4", "addr", "show", "to", a.outer).stdout.split()[1]
    moved = a.outer.rsplit(".", 1)[0] + ".9"
    # Deleting a primary address takes its secondaries along: delete first.
    a.ns.run("ip", "addr", "del", f"{a.outer}/24", "dev", cable)
    a.ns.run("ip", "addr", "add", f"{moved}/24", "dev", cable)
    # wireguard-go first tries its remembered (now gone) source address once.
    wait_for(lambda: a.ping(b.inner4, count=1, check=False).returncode == 0, timeout=10,
             what="a reply from the new address")
    assert b.show("endpoints").split()[1] == f"{moved}:{a.port}"


@pytest.mark.parametrize("left,right", PAIRS, ids=PAIR_IDS)
def test_private_key_change_rehandshakes_at_once(netns, left, right):
    a, b = tunnel(netns, left, right, with_ipv6=False)
    a.ping(b.inner4, count=1)
    old_public = a.public_key
    a.private_key, a.public_key = new_key()
    a.set_private_key(a.private_key)
    b.wg("set", b.iface, "peer", old_public, "remove", "peer", a.public_key,
         "endpoint", f"{a.outer}:{a.port}", "allowed-ips", f"{a.inner4}/32")
    a.ping(b.inner4, count=1)
    assert a.public_key in b.show("latest-handshakes")


@pytest.mark.parametrize("implementation", ["wgc"])
def test_showconf_returns_what_was_set(netns, implementation):
    a, b = tunnel(netns, implementation, implementation, with_ipv6=False)
    _, peer2 = new_key()
    psk = new_key()[0]
    config = "\n".join([
        "[Interface]",
        f"ListenPort = {a.port}",
        "FwMark = 0x2a",
        f"PrivateKey = {a.private_key}",
        "",
        "[Peer]",
        f"PublicKey = {b.public_key}",
        f"PresharedKey = {psk}",
        "AllowedIPs = 10.77.0.2/32, 10.99.0.0/16, fd77::2/128",
        f"Endpoint = {b.outer}:{b.port}",
        "PersistentKeepalive = 25",
        "",
        "[Peer]",
        f"PublicKey = {peer2}",
        "AllowedIPs = 10.88.0.0/24",
        "Endpoint = [fd00::42]:51000",
        "",
    ])
    a.ns.run("sh", "-c", f"cat > /tmp/{a.iface}.conf", input=config)
    try:
        a.wg("setconf", a.iface, f"/tmp/{a.iface}.conf")
    finally:
        a.ns.run("rm", "-f", f"/tmp/{a.iface}.conf")
    shown = a.wg("showconf", a.iface).stdout
    assert shown == config


def test_wgc_exits_when_its_namespace_goes(netns):
    a, b = tunnel(netns, "wgc", "wgc", with_ipv6=False)
    a.ping(b.inner4, count=1)
    a.ns.run("ip", "link", "del", a.iface)
    wait_for(lambda: not a.ns.pids(), timeout=2, what="wgc to exit after its interface was deleted")


def test_link_down_closes_sockets_and_up_restores(netns):
    """Down closes the UDP sockets and forgets sessions; up binds again."""
    a, b = tunnel(netns, "wgc", "wgc", with_ipv6=False)
    a.ping(b.inner4, count=1)
    listening = lambda: f":{a.port} " in a.ns.run("ss", "-lun").stdout  # noqa: E731
    assert listening()
    a.ns.run("ip", "link", "set", a.iface, "down")
    wait_for(lambda: not listening(), what="the sockets to close")
    # b drops an initiation whose timestamp is not newer than the last one it
    # took (timestamps step every 16.8 ms) or that follows it within 20 ms.
    time.sleep(0.05)
    a.ns.run("ip", "link", "set", a.iface, "up")
    a.ns.run("ip", "addr", "add", f"{a.inner4}/24", "dev", a.iface, check=False)
    wait_for(listening, what="the sockets to reopen")
    a.ping(b.inner4, count=2)
    # A fresh session: the old one was wiped on the way down.
    assert int(a.show("latest-handshakes").split()[1]) > 0


def test_udp_gso_refused_by_a_narrow_cable_falls_back(netns):
    """A cable narrower than the tunnel's datagrams: the kernel refuses a UDP
    GSO message whose segments would not fit (EINVAL), but fragments single
    datagrams.  wgc then sends that run one datagram at a time."""
    a, b = tunnel(netns, "wgc", "wgc", with_ipv6=False)
    for end in (a, b):
        cable = end.ns.run("ip", "-o", "-4", "addr", "show", "to", end.outer).stdout.split()[1]
        end.ns.run("ip", "link", "set", cable, "mtu", "1300")
    a.ping(b.inner4, count=1)
    result = json.loads(iperf3(a, b, seconds=2).stdout)
    assert result["end"]["sum_received"]["bytes"] > 5_000_000
