"""An endpoint given by name follows DNS, live: a wgc daemon configured by the
built-in wg with `Endpoint = peer.test:PORT` finds its peer again after the
peer moved to another address and the name's answer changed.

The left namespace asks a dnsmasq of its own (its /etc/netns resolv.conf) and
runs its daemon with WGC_TEST_RERESOLVE, so that a quiet second is enough;
the right namespace's daemon has no endpoint for left and learns left's
address from its packets, as a server does.  Left moves too, so that right
cannot bring the tunnel back by itself (its handshake after 15 s of silence
would otherwise tell left right's new address).
"""
import os
import signal

import pytest

from netns import Namespaces, resolv_conf, start_dnsmasq, unique_name, veth, wait_for
from wgc import reresolve
from wgnet import WGC, daemon_log, have, new_key, start_daemon

NAME = "peer.test"
DNS = "127.0.0.53"


def wg(ns, *args, **kw):
    """The built-in wg, in ns (the daemon is wgc: it hears endpoint names)."""
    return ns.run(*WGC, "--wg", *args, **kw)


def pings(ns, address: str) -> bool:
    return ns.run("ping", "-c", "1", "-W", "1", address, check=False).returncode == 0


@pytest.mark.netns
def test_the_endpoint_follows_the_name_to_a_new_address(tmp_path):
    subnet = 1 + os.getpid() % 250
    old, new = f"192.168.{subnet}.2", f"192.168.{subnet}.3"
    left_old, left_new = f"192.168.{subnet}.1", f"192.168.{subnet}.4"
    hosts = tmp_path / "hosts"
    hosts.write_text(f"{old} {NAME}\n")
    with Namespaces() as namespaces:
        left, right = namespaces("wgrl"), namespaces("wgrr")
        cable_left, cable_right = veth(left, right)
        left.run("ip", "addr", "add", f"{left_old}/24", "dev", cable_left)
        right.run("ip", "addr", "add", f"{old}/24", "dev", cable_right)
        dnsmasq = start_dnsmasq(left, DNS, f"--addn-hosts={hosts}", "--local=/test/")
        with resolv_conf(left, DNS):
            wait_for(lambda: left.run("getent", "hosts", NAME, check=False).stdout.startswith(old),
                     what="dnsmasq's answer")
            (left_private, left_public), (right_private, right_public) = new_key(), new_key()
            left_iface, right_iface = unique_name("wgn"), unique_name("wgn")
            start_daemon(left, "wgc", left_iface, env={"LOG_LEVEL": "verbose", reresolve.ENV_TEST_TIMES: "0.5,1"})
            start_daemon(right, "wgc", right_iface)
            config = tmp_path / "left.conf"
            config.write_text(f"[Interface]\nPrivateKey = {left_private}\n\n"
                              f"[Peer]\nPublicKey = {right_public}\nEndpoint = {NAME}:51820\n"
                              "AllowedIPs = 10.78.0.2/32\n")
            wg(left, "setconf", left_iface, str(config))
            wg(right, "set", right_iface, "private-key", "/dev/stdin", "listen-port", "51820",
               "peer", left_public, "allowed-ips", "10.78.0.1/32", input=right_private + "\n")
            for ns, iface, inner in ((left, left_iface, "10.78.0.1"), (right, right_iface, "10.78.0.2")):
                ns.run("ip", "addr", "add", f"{inner}/24", "dev", iface)
                ns.run("ip", "link", "set", iface, "up")
            assert pings(left, "10.78.0.2")
            assert wg(left, "show", left_iface, "endpoints").stdout.split()[1] == f"{old}:51820"

            # Both sides move: the old addresses answer no more, the name gives the new one.
            for ns, cable, was, now in ((right, cable_right, old, new), (left, cable_left, left_old, left_new)):
                ns.run("ip", "addr", "del", f"{was}/24", "dev", cable)
                ns.run("ip", "addr", "add", f"{now}/24", "dev", cable)
            hosts.write_text(f"{new} {NAME}\n")
            dnsmasq.send_signal(signal.SIGHUP)
            wait_for(lambda: pings(left, "10.78.0.2"), timeout=15, interval=0.2, what="the tunnel back")
            assert wg(left, "show", left_iface, "endpoints").stdout.split()[1] == f"{new}:51820"
            with open(daemon_log(left_iface)) as log:
                assert f"Endpoint name {NAME} now resolves to {new}:51820" in log.read()


@pytest.mark.netns
@pytest.mark.skipif(not have("wireguard-go"), reason="needs Debian's wireguard-go")
def test_a_name_given_to_wireguard_go_is_resolved_once_without_error():
    """wireguard-go refuses `endpoint_name` (EINVAL): the built-in wg applies
    the configuration all the same, as wg(8) would."""
    with Namespaces() as namespaces:
        ns = namespaces("wgrg")
        iface = unique_name("wgn")
        start_daemon(ns, "wireguard-go", iface)
        _, peer = new_key()
        done = wg(ns, "set", iface, "peer", peer, "endpoint", "localhost:51820", "allowed-ips", "10.0.0.2/32",
                  check=False)
        assert (done.returncode, done.stderr) == (0, "")
        assert wg(ns, "show", iface, "endpoints").stdout.split()[1] in ("127.0.0.1:51820", "[::1]:51820")
