"""The kernel selftest's topologies (the scenarios of wireguard-go's tests/netns.sh),
written for this project: wgc on both ends, and wgc with Debian's wireguard-go.

- The loopback ("phantom") topology: both daemons run in one namespace and talk
  over its loopback, their interfaces moved out into two others.  Counters
  after 10 pings, ping, TCP and UDP over IPv4 and IPv6 inside and outside, at
  the default MTU and a big one, roaming by listen port and by the loopback
  address changing under the sockets, and the cryptokey reverse-path filter
  when a more specific allowed IP moves to another peer.
- NAT: SNAT in a middle namespace with short conntrack timeouts, kept open by
  a persistent keepalive.
- Source addresses that are sticky, but not too sticky: the reply leaves from
  the address the peer wrote to, and a removed address is given up.
"""
import json
import subprocess
import sys
import time

import pytest

from netns import unique_name, veth, wait_for
from wgnet import have, new_key, start_daemon

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

PAIRS = [("wgc", "wgc"), ("wgc", "wireguard-go"), ("wireguard-go", "wgc")]
PAIR_IDS = [f"{a}-and-{b}" for a, b in PAIRS]
PORT1, PORT2 = 10000, 20000
INNER = {1: ("192.168.241.1", "fd00::1"), 2: ("192.168.241.2", "fd00::2")}
BIG_MTU = 34816 - 1500 + 1420   # the selftest's: a 32 KiB jump over the default


@pytest.fixture(autouse=True)
def _need_wireguard_go():
    if not have("wireguard-go"):
        pytest.skip("Debian's wireguard-go is not installed")


class Wg:
    """One WireGuard end: daemon started in `home`, interface living in `ns`."""

    def __init__(self, side: int, implementation: str, home, ns):
        self.side, self.home, self.ns = side, home, ns
        self.iface = unique_name(f"wg{side}")
        self.private, self.public = new_key()
        start_daemon(home, implementation, self.iface)
        if ns is not home:
            home.run("ip", "link", "set", self.iface, "netns", ns.name)
            wait_for(lambda: ns.run("ip", "link", "show", self.iface, check=False).returncode == 0,
                     what=f"{self.iface} to arrive in {ns.name}")
        self.v4, self.v6 = INNER[side]

    def wg(self, *args, **kw):
        return self.ns.run("wg", *args, **kw)

    def endpoints(self) -> str:
        return self.wg("show", self.iface, "endpoints").stdout.strip()

    def ping(self, address: str, count: int = 1, check=True):
        return self.ns.run("ping", "-c", str(count), "-i", "0.05", "-W", "2", address, check=check,
                           timeout=count + 15)


def configure_peers(one: Wg, two: Wg) -> None:
    """The selftest's configure_peers: addresses, keys, a preshared key, up."""
    psk = new_key()[0]
    for this, other, port in ((one, two, PORT1), (two, one, PORT2)):
        this.ns.run("ip", "addr", "add", f"{this.v4}/24", "dev", this.iface)
        this.ns.run("ip", "addr", "add", f"{this.v6}/24", "dev", this.iface, "nodad")
        this.wg("set", this.iface, "private-key", "/dev/stdin", "listen-port", str(port),
                "peer", other.public, "allowed-ips", f"{other.v4}/32,{other.v6}/128", input=this.private + "\n")
        this.wg("set", this.iface, "peer", other.public, "preshared-key", "/dev/stdin", input=psk + "\n")
        this.ns.run("ip", "link", "set", this.iface, "up")


def iperf(client: Wg, server: Wg, address: str, udp: bool = False) -> dict:
    """A bounded iperf3 run (16 MiB) from client to server; its JSON result."""
    srv = server.ns.popen("iperf3", "-s", "-1", "-B", address, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: ":5201" in server.ns.run("ss", "-ltn").stdout, what="iperf3 to listen")
        args = ["-u", "-b", "400M", "-l", "1300"] if udp else []
        out = client.ns.run("iperf3", "-Z", "-n", "16M", "-c", address, "-J", *args, timeout=90).stdout
        return json.loads(out)
    finally:
        srv.kill()
        srv.wait()


@pytest.fixture
def phantom(netns, request):
    """ns0 holds both daemons on its loopback; wg1 lives in ns1, wg2 in ns2."""
    left, right = request.param
    ns0, ns1, ns2 = netns("wgs0"), netns("wgs1"), netns("wgs2")
    one, two = Wg(1, left, ns0, ns1), Wg(2, right, ns0, ns2)
    configure_peers(one, two)
    return ns0, one, two


@pytest.mark.parametrize("phantom", PAIRS, ids=PAIR_IDS, indirect=True)
def test_phantom_loopback_topology(phantom):
    ns0, one, two = phantom
    one.wg("set", one.iface, "peer", two.public, "endpoint", f"127.0.0.1:{PORT2}")
    two.wg("set", two.iface, "peer", one.public, "endpoint", f"127.0.0.1:{PORT1}")

    # Counters after 10 pings of 84 bytes, the pinging side being the initiator.
    two.ping(one.v4, count=10)
    rx, tx = (int(n) for n in two.wg("show", two.iface, "transfer").stdout.split()[1:])
    assert rx == 1372 and tx in (1428, 1460)

    for outer in ("127.0.0.1", "[::1]"):
        one.wg("set", one.iface, "peer", two.public, "endpoint", f"{outer}:{PORT2}")
        two.wg("set", two.iface, "peer", one.public, "endpoint", f"{outer}:{PORT1}")
        for mtu in (1420, BIG_MTU):
            for end in (one, two):
                end.ns.run("ip", "link", "set", end.iface, "mtu", str(mtu))
            for a, b in ((two, one), (one, two)):
                a.ping(b.v4, count=3)
                a.ping(b.v6, count=3)
            for client, server, address in ((one, two, two.v4), (two, one, one.v6)):
                tcp = iperf(client, server, address)["end"]
                # The receiver's summary may close before the last segments land.
                assert tcp["sum_sent"]["bytes"] >= 16 << 20 and tcp["sum_received"]["bytes"] > 8 << 20, (outer, mtu)
            udp = iperf(two, one, one.v4, udp=True)
            assert udp["end"]["sum"]["packets"] > 0 and udp["end"]["sum"]["lost_percent"] < 100, (outer, mtu)
    for end in (one, two):
        end.ns.run("ip", "link", "set", end.iface, "mtu", "1420")

    # Roaming: the loopback address under wg1's socket changes, and so does its port.
    ns0.run("ip", "-4", "addr", "del", "127.0.0.1/8", "dev", "lo")
    ns0.run("ip", "-4", "addr", "add", "127.212.121.99/8", "dev", "lo")
    one.wg("set", one.iface, "listen-port", "9999")
    one.wg("set", one.iface, "peer", two.public, "endpoint", f"127.0.0.1:{PORT2}")
    one.ping(two.v6)
    assert two.endpoints() == f"{one.public}\t127.212.121.99:9999"
    one.wg("set", one.iface, "listen-port", "9998")
    one.wg("set", one.iface, "peer", two.public, "endpoint", f"[::1]:{PORT2}")
    one.ping(two.v4)
    assert two.endpoints() == f"{one.public}\t[::1]:9998"


UDP_SINK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 1111))
print("ready", flush=True)
s.settimeout(float(sys.argv[2]))
try:
    print(s.recv(64).decode(), flush=True)
except socket.timeout:
    print("nothing", flush=True)
"""


def udp_arrives(receiver: Wg, sender: Wg) -> bool:
    """Whether one datagram from sender reaches receiver's 192.168.241.x:1111."""
    sink = receiver.ns.popen(sys.executable, "-c", UDP_SINK, receiver.v4, "2", stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout.readline().strip() == "ready"
        sender.ns.run(sys.executable, "-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                      f".sendto(b'X', ('{receiver.v4}', 1111))")
        return sink.stdout.readline().strip() == "X"
    finally:
        sink.kill()
        sink.wait()


@pytest.mark.parametrize("phantom", PAIRS, ids=PAIR_IDS, indirect=True)
def test_cryptokey_reverse_path_filter(phantom):
    """Once a more specific allowed IP names another peer, packets from wg2
    with that source are dropped by wg1, while its endpoint still roams."""
    _, one, two = phantom
    one.wg("set", one.iface, "peer", two.public, "endpoint", f"[::1]:{PORT2}")
    two.wg("set", two.iface, "peer", one.public, "endpoint", f"[::1]:{PORT1}")
    one.wg("set", one.iface, "peer", two.public, "allowed-ips", "192.168.241.0/24")
    assert udp_arrives(one, two)
    other = new_key()[1]
    one.wg("set", one.iface, "peer", other, "allowed-ips", "192.168.241.2/32")
    two.wg("set", two.iface, "listen-port", "9997")
    assert not udp_arrives(one, two)
    one.wg("set", one.iface, "peer", other, "remove")
    assert one.endpoints() == f"{two.public}\t[::1]:9997"


@pytest.mark.parametrize("left,right", PAIRS, ids=PAIR_IDS)
def test_nat_kept_open_by_persistent_keepalive(netns, left, right):
    """wg1 behind SNAT in ns0 (conntrack forgets UDP after 2 s): wg2 sees the
    NAT's address, and can still reach wg1 after 3 s thanks to the keepalive."""
    ns0, ns1, ns2 = netns("wgn0"), netns("wgn1"), netns("wgn2")
    one, two = Wg(1, left, ns1, ns1), Wg(2, right, ns2, ns2)
    configure_peers(one, two)
    c0, c1 = veth(ns0, ns1)
    s0, s2 = veth(ns0, ns2)
    ns0.run("ip", "addr", "add", "192.168.1.1/24", "dev", c0)
    ns0.run("ip", "addr", "add", "10.0.0.1/24", "dev", s0)
    ns1.run("ip", "addr", "add", "192.168.1.100/24", "dev", c1)
    ns1.run("ip", "route", "add", "default", "via", "192.168.1.1")
    ns2.run("ip", "addr", "add", "10.0.0.100/24", "dev", s2)
    ns0.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    ns0.run("nft", "-f", "-", input="table ip nat {\n chain post {\n type nat hook postrouting priority 100;\n"
                                    " ip saddr 192.168.1.0/24 ip daddr 10.0.0.0/24 snat to 10.0.0.1\n }\n}\n")
    ns0.run("sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=2",
            "net.netfilter.nf_conntrack_udp_timeout_stream=2")
    one.wg("set", one.iface, "peer", two.public, "endpoint", f"10.0.0.100:{PORT2}", "persistent-keepalive", "1")
    one.ping(two.v4)
    two.ping(one.v4)
    assert two.endpoints() == f"{one.public}\t10.0.0.1:{PORT1}"
    time.sleep(3)  # longer than conntrack keeps a silent UDP flow
    two.ping(one.v4)


def addressed_pair(netns, left: str, right: str):
    ns1, ns2 = netns("wgk1"), netns("wgk2")
    one, two = Wg(1, left, ns1, ns1), Wg(2, right, ns2, ns2)
    configure_peers(one, two)
    v1, v2 = veth(ns1, ns2)
    return one, two, v1, v2


# Debian's wireguard-go keeps sending from a source address that is gone, so
# it is only ever the far end (wg2) here.
@pytest.mark.parametrize("left,right", PAIRS[:2], ids=PAIR_IDS[:2])
def test_source_address_not_too_sticky(netns, left, right):
    """A removed source address is given up for the one that is left."""
    one, two, v1, v2 = addressed_pair(netns, left, right)
    ns1, ns2 = one.ns, two.ns
    ns1.run("sysctl", "-qw", f"net.ipv4.conf.{v1}.promote_secondaries=1")
    ns1.run("ip", "addr", "add", "10.0.0.1/24", "dev", v1)
    ns1.run("ip", "addr", "add", "fd00:aa::1/96", "dev", v1, "nodad")
    ns2.run("ip", "addr", "add", "10.0.0.2/24", "dev", v2)
    ns2.run("ip", "addr", "add", "fd00:aa::2/96", "dev", v2, "nodad")
    one.wg("set", one.iface, "peer", two.public, "endpoint", f"10.0.0.2:{PORT2}")
    one.ping(two.v4)
    ns1.run("ip", "addr", "add", "10.0.0.10/24", "dev", v1)
    ns1.run("ip", "addr", "del", "10.0.0.1/24", "dev", v1)
    one.ping(two.v4)
    assert two.endpoints() == f"{one.public}\t10.0.0.10:{PORT1}"
    one.wg("set", one.iface, "peer", two.public, "endpoint", f"[fd00:aa::2]:{PORT2}")
    one.ping(two.v4)
    ns1.run("ip", "addr", "add", "fd00:aa::10/96", "dev", v1, "nodad")
    ns1.run("ip", "addr", "del", "fd00:aa::1/96", "dev", v1)
    one.ping(two.v4)
    assert two.endpoints() == f"{one.public}\t[fd00:aa::10]:{PORT1}"


@pytest.mark.parametrize("left,right", PAIRS, ids=PAIR_IDS)
def test_source_address_sticky(netns, left, right):
    """With two addresses on its cable, wg1 answers from the one wg2 wrote to."""
    one, two, v1, v2 = addressed_pair(netns, left, right)
    for address in ("10.0.0.1/24", "10.0.0.2/24", "fd00:aa::1/96", "fd00:aa::2/96"):
        one.ns.run("ip", "addr", "add", address, "dev", v1, *(("nodad",) if ":" in address else ()))
    two.ns.run("ip", "addr", "add", "10.0.0.3/24", "dev", v2)
    two.ns.run("ip", "addr", "add", "fd00:aa::3/96", "dev", v2, "nodad")
    for endpoint in ("10.0.0.1", "[fd00:aa::1]", "10.0.0.2", "[fd00:aa::2]"):
        two.wg("set", two.iface, "peer", one.public, "endpoint", f"{endpoint}:{PORT1}")
        two.ping(one.v4)
        assert two.endpoints() == f"{one.public}\t{endpoint}:{PORT1}"
