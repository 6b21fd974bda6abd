"""An interface moved to another network namespace: WireGuard's container recipe.

The daemon starts in the namespace that has the network (`outer`), the
interface is moved into another one (`inner`, the container) with `ip link
set IFACE netns`, and from there it is configured and used.  Its UDP sockets
stay outside, its control socket stays at /var/run/wireguard/IFACE.sock.  It
must keep serving, follow the link's up, down and MTU where it now lives, and
end when the link is really deleted there (by `ip link del` or with its
namespace).

Each wgc case runs twice: with every capability (the daemon hears the other
namespace's link events) and without CAP_NET_BROADCAST, as a unit with only
CAP_NET_ADMIN runs it (the daemon asks for the link's state once a second).
Debian's wireguard-go is the reference for what must survive a move.
"""
import json
import os
from pathlib import Path

import pytest

from netns import socket_path, unique_name, veth, wait_for
from wgnet import daemon_log, new_key, start_daemon

pytestmark = pytest.mark.netns

# Without CAP_NET_BROADCAST the daemon may not listen to other namespaces.
DEAF = ("setpriv", "--bounding-set=-net_broadcast")
PORT = 51820
MODES = [("wgc", "events"), ("wgc", "polling")]


class Site:
    """wgc (or wireguard-go) started in `outer`, its peer in `far`, joined by a veth."""

    def __init__(self, netns, implementation: str, mode: str = "events"):
        self.outer, self.far = netns("wgmo"), netns("wgmf")
        cable_outer, cable_far = veth(self.outer, self.far)
        self.far_cable = cable_far
        subnet = 1 + os.getpid() % 250
        self.outer.run("ip", "addr", "add", f"192.168.{subnet}.1/24", "dev", cable_outer)
        self.far.run("ip", "addr", "add", f"192.168.{subnet}.2/24", "dev", cable_far)
        self.iface, self.far_iface = unique_name("wgm"), unique_name("wgp")
        self.key, public = new_key()
        far_key, far_public = new_key()
        env = {"LOG_LEVEL": "debug"}
        start_daemon(self.outer, implementation, self.iface, env, wrapper=DEAF if mode == "polling" else ())
        start_daemon(self.far, "wgc", self.far_iface)
        self.far.run("wg", "set", self.far_iface, "private-key", "/dev/stdin", "listen-port", str(PORT + 1),
                     "peer", public, "endpoint", f"192.168.{subnet}.1:{PORT}", "allowed-ips", "10.77.0.1/32",
                     input=far_key + "\n")
        self.far.run("ip", "addr", "add", "10.77.0.2/24", "dev", self.far_iface)
        self.far.run("ip", "link", "set", self.far_iface, "up")
        self.far_public = far_public
        self.endpoint = f"192.168.{subnet}.2:{PORT + 1}"
        self.where = self.outer

    def move(self, ns) -> None:
        self.where.run("ip", "link", "set", self.iface, "netns", ns.name)
        self.where = ns

    def configure(self) -> None:
        """Keys and the peer through wg(8) from where the link is, address, up."""
        self.where.run("wg", "set", self.iface, "private-key", "/dev/stdin", "listen-port", str(PORT),
                       "peer", self.far_public, "endpoint", self.endpoint, "allowed-ips", "10.77.0.2/32",
                       input=self.key + "\n")
        self.where.run("ip", "addr", "add", "10.77.0.1/24", "dev", self.iface)
        self.where.run("ip", "link", "set", self.iface, "up")

    def ping(self, size: int = 56, check=True):
        return self.where.run("ping", "-c", "1", "-W", "2", "-s", str(size), "10.77.0.2", check=check, timeout=10)

    def pings(self) -> bool:
        """A reply within the next few seconds (the daemon may still be catching up)."""
        return bool(wait_for(lambda: self.ping(check=False).returncode == 0, timeout=8, interval=0.1,
                             what="a ping through the moved interface"))

    def listening(self) -> bool:
        return f":{PORT} " in self.outer.run("ss", "-lun").stdout

    def far_rx_bytes(self) -> int:
        [link] = json.loads(self.far.run("ip", "-j", "-s", "link", "show", self.far_cable).stdout)
        return link["stats64"]["rx"]["bytes"]

    def daemon_gone(self) -> bool:
        return not self.outer.pids() and not os.path.exists(socket_path(self.iface))


def outer_frame(inner: int, mtu: int) -> int:
    """Ethernet frame of a transport message carrying `inner` bytes: padding to
    16 bytes, at most to the MTU (the whitepaper, 5.4.6); then the 16-byte
    header and tag, UDP, IPv4 and Ethernet."""
    padded = min(-(-inner // 16) * 16, max(mtu, inner))
    return 14 + 20 + 8 + 16 + padded + 16


@pytest.mark.parametrize("implementation,mode", MODES, ids=["events", "polling"])
def test_moved_interface_keeps_serving_and_follows_the_link(netns, implementation, mode):
    site = Site(netns, implementation, mode)
    inner = netns("wgmi")
    site.move(inner)
    site.configure()
    assert site.pings()
    log = Path(daemon_log(site.iface)).read_text()
    assert "Interface deleted" not in log
    assert ("polling" if mode == "polling" else "events") in log.split("Following")[1].splitlines()[0]
    assert site.listening()  # the UDP socket stayed in the outer namespace

    # MTU: a 1300-byte packet on a 1300-byte link is padded to 1300, not 1312.
    inner.run("ip", "link", "set", site.iface, "mtu", "1300")

    def frame_size() -> int:
        before = site.far_rx_bytes()
        site.ping(size=1300 - 28)
        return site.far_rx_bytes() - before

    assert outer_frame(1300, 1420) != outer_frame(1300, 1300)
    wait_for(lambda: frame_size() == outer_frame(1300, 1300), timeout=5, interval=0.2,
             what="padding to the MTU set in the new namespace")

    # Down in the new namespace closes the UDP sockets outside; up opens them.
    inner.run("ip", "link", "set", site.iface, "down")
    wait_for(lambda: not site.listening(), what="the sockets to close on link down")
    inner.run("ip", "link", "set", site.iface, "up")
    wait_for(site.listening, what="the sockets to open on link up")
    assert site.pings()

    inner.run("ip", "link", "del", site.iface)
    wait_for(site.daemon_gone, what="the daemon to end with its deleted interface")


@pytest.mark.parametrize("implementation,mode", MODES, ids=["events", "polling"])
def test_moved_onward_and_home_again(netns, implementation, mode):
    site = Site(netns, implementation, mode)
    for ns in (netns("wgmb"), netns("wgmc"), site.outer):
        site.move(ns)
        site.configure()
        assert site.pings(), ns.name
    site.outer.run("ip", "link", "del", site.iface)
    wait_for(site.daemon_gone, what="the daemon to end with its deleted interface")


@pytest.mark.parametrize("implementation,mode", MODES + [("wireguard-go", "events")],
                         ids=["events", "polling", "wireguard-go"])
def test_deleting_the_namespace_deletes_the_moved_interface(netns, implementation, mode):
    site = Site(netns, implementation, mode)
    inner = netns("wgmi")
    site.move(inner)
    site.configure()
    assert site.pings()
    inner.close()  # ip netns del: nothing else holds the namespace, the link goes with it
    wait_for(site.daemon_gone, what="the daemon to end with its namespace's interface")


@pytest.mark.parametrize("implementation", ["wgc", "wireguard-go"])
def test_a_moved_interface_survives_where_a_deleted_one_does_not(netns, implementation):
    """The reference behaviour: wireguard-go serves a moved interface too."""
    site = Site(netns, implementation)
    inner = netns("wgmi")
    site.move(inner)
    site.configure()
    assert site.pings()
    assert not site.daemon_gone()
