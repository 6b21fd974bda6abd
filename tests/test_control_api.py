"""wgc.control against a running wgc daemon: what is configured is what is read back.

The daemon runs in a network namespace of its own; its control socket is in
/var/run/wireguard like any other, so the API is called from this process.
Large cases: 10,000 peers in one configure(), and 100,000 allowed IPs on one
peer, each read back whole and compared.
"""
import errno
import ipaddress
import os
import socket
import subprocess
import sys
import time

import pytest

from netns import Netns, socket_path, unique_name
from wgc import control
from wgc.control import AllowedIP, DeviceConfig, Endpoint, PeerConfig, WireGuardError
from wgnet import start_daemon

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def daemon():
    ns = Netns("wgapi")
    try:
        name = unique_name("wgapi")
        start_daemon(ns, "wgc", name)
        yield ns, name
    finally:
        ns.close()


@pytest.fixture
def name(daemon):
    _, name = daemon
    control.configure(name, DeviceConfig(private_key=control.ZERO_KEY, listen_port=0, fwmark=0), replace_peers=True)
    return name


def peer_key(n: int) -> bytes:
    return b"\x01" + n.to_bytes(31, "big")


def masked(ip: AllowedIP) -> AllowedIP:
    return AllowedIP(ip.network.network_address, ip.cidr)


def test_device_settings_round_trip(name):
    from wgc import _crypto

    private = _crypto.clamp(bytes(range(32)))
    control.configure(name, DeviceConfig(private_key=private, listen_port=0, fwmark=0x77))
    device = control.device(name)
    assert (device.name, device.kind) == (name, "userspace")
    assert device.private_key == private and device.public_key == _crypto.public_key(private)
    assert device.listen_port != 0 and device.fwmark == 0x77 and device.peers == []
    assert name in control.device_names() and control.is_userspace(name)
    assert name in [d.name for d in control.devices()]
    control.configure(name, DeviceConfig(private_key=control.ZERO_KEY, fwmark=0))
    device = control.device(name)
    assert device.private_key is None and device.public_key is None and device.fwmark == 0


def test_peer_fields_round_trip(name):
    psk = bytes(range(100, 132))
    endpoint6 = Endpoint(ipaddress.ip_address("2001:db8::5"), 4242)
    control.configure(name, DeviceConfig(peers=[
        PeerConfig(public_key=peer_key(1), preshared_key=psk, persistent_keepalive_interval=0,
                   endpoint=Endpoint(ipaddress.ip_address("192.0.2.9"), 51820),
                   allowed_ips=[AllowedIP.parse("10.1.2.3/8"), AllowedIP.parse("fd00::1/64")]),
        PeerConfig(public_key=peer_key(2), endpoint=endpoint6, allowed_ips=[AllowedIP.parse("::ffff:1.2.3.4/128")]),
    ]))
    first, second = control.device(name).peers
    assert first.public_key == peer_key(1) and first.preshared_key == psk
    assert str(first.endpoint) == "192.0.2.9:51820"
    assert [str(ip) for ip in first.allowed_ips] == ["10.0.0.0/8", "fd00::/64"]  # the device masks host bits
    assert second.endpoint == endpoint6 and second.preshared_key is None
    assert [str(ip) for ip in second.allowed_ips] == ["::ffff:1.2.3.4/128"]
    assert (first.rx_bytes, first.tx_bytes, first.last_handshake_time) == (0, 0, None)

    # Flags: update_only does not create, remove removes, a zero key clears,
    # replace_allowed_ips replaces, a prefix moves between peers.
    control.configure(name, DeviceConfig(peers=[
        PeerConfig(public_key=peer_key(3), update_only=True, allowed_ips=[AllowedIP.parse("9.9.9.9/32")]),
        PeerConfig(public_key=peer_key(1), preshared_key=control.ZERO_KEY, replace_allowed_ips=True,
                   allowed_ips=[AllowedIP.parse("172.16.0.0/12")]),
        PeerConfig(public_key=peer_key(2), update_only=True, allowed_ips=[AllowedIP.parse("172.16.0.0/12")]),
    ]))
    device = control.device(name)
    assert [p.public_key for p in device.peers] == [peer_key(1), peer_key(2)]
    assert device.peers[0].preshared_key is None and device.peers[0].allowed_ips == []
    assert [str(ip) for ip in device.peers[1].allowed_ips] == ["::ffff:1.2.3.4/128", "172.16.0.0/12"]
    control.configure(name, DeviceConfig(peers=[PeerConfig(public_key=peer_key(2), remove=True)]))
    assert [p.public_key for p in control.device(name).peers] == [peer_key(1)]
    control.configure(name, DeviceConfig(peers=[PeerConfig(public_key=peer_key(4))]), replace_peers=True)
    assert [p.public_key for p in control.device(name).peers] == [peer_key(4)]


def ten_thousand_peers() -> list[PeerConfig]:
    peers = []
    for n in range(10000):
        ips = [AllowedIP(ipaddress.IPv4Address((10 << 24) + n), 32)]
        if n % 5 == 0:
            ips.append(AllowedIP(ipaddress.IPv6Address((0xFD << 120) + n), 128))
        endpoint = None
        if n % 2:
            endpoint = (Endpoint(ipaddress.IPv4Address((192 << 24) + (2 << 8) + n % 250), 1024 + n) if n % 4 == 1
                        else Endpoint(ipaddress.IPv6Address((0x20010DB8 << 96) + n), 1024 + n))
        peers.append(PeerConfig(public_key=peer_key(n), preshared_key=bytes([n % 251 + 1]) * 32 if n % 3 == 0 else None,
                                endpoint=endpoint, allowed_ips=ips))
    return peers


def test_ten_thousand_peers(name):
    peers = ten_thousand_peers()
    started = time.monotonic()
    control.configure(name, DeviceConfig(peers=peers), replace_peers=True)
    configured = time.monotonic() - started
    device = control.device(name)
    elapsed = time.monotonic() - started
    assert len(device.peers) == 10000
    got = {peer.public_key: peer for peer in device.peers}
    for wanted in peers:
        peer = got[wanted.public_key]
        assert peer.preshared_key == wanted.preshared_key
        assert peer.endpoint == wanted.endpoint
        assert peer.allowed_ips == wanted.allowed_ips
    assert elapsed < 30, f"configure {configured:.1f} s, then read back at {elapsed:.1f} s"

    # Half of them removed, the rest kept, in one more request.
    control.configure(name, DeviceConfig(peers=[PeerConfig(public_key=peer_key(n), remove=True)
                                                for n in range(0, 10000, 2)]))
    assert sorted(p.public_key for p in control.device(name).peers) == sorted(peer_key(n) for n in range(1, 10000, 2))


def test_hundred_thousand_allowed_ips(name):
    ips = [AllowedIP(ipaddress.IPv4Address((10 << 24) + (i << 8)), 24) for i in range(65536)]
    ips += [AllowedIP(ipaddress.IPv6Address((0xFD << 120) + (i << 16)), 112) for i in range(100000 - 65536)]
    started = time.monotonic()
    control.configure(name, DeviceConfig(peers=[PeerConfig(public_key=peer_key(7), allowed_ips=ips)]))
    [peer] = control.device(name).peers
    elapsed = time.monotonic() - started
    assert peer.allowed_ips == ips  # all of them, in order
    assert elapsed < 30, f"{elapsed:.1f} s"
    replacement = [AllowedIP.parse("192.168.0.0/16"), AllowedIP.parse("fd77::/64")]
    control.configure(name, DeviceConfig(peers=[PeerConfig(public_key=peer_key(7), replace_allowed_ips=True,
                                                           allowed_ips=replacement)]))
    assert control.device(name).peers[0].allowed_ips == replacement


def test_a_device_recreated_from_its_config(name):
    from wgc import _crypto

    private = _crypto.clamp(bytes(range(1, 33)))
    peers = ten_thousand_peers()[:50]
    control.configure(name, DeviceConfig(private_key=private, listen_port=0, fwmark=3, peers=peers))
    before = control.device(name)
    config = before.config()
    control.configure(name, DeviceConfig(private_key=control.ZERO_KEY, fwmark=0), replace_peers=True)
    assert control.device(name).peers == []
    control.configure(name, config, replace_peers=True)
    after = control.device(name)
    assert after == before  # keys, port, fwmark, every peer field and allowed IP, in order
    assert len(after.peers) == 50 and after.private_key == private


def test_errors_carry_the_errno(daemon, name):
    missing = unique_name("nosuch")
    for call in (lambda: control.device(missing), lambda: control.configure(missing, DeviceConfig(fwmark=1))):
        with pytest.raises(WireGuardError) as raised:
            call()
        # Not a userspace device, so the kernel is asked; without its module
        # there is no generic netlink family (wg(8) says the same).
        assert raised.value.errno in (errno.EPROTONOSUPPORT, errno.ENODEV)
    ns, _ = daemon
    blocker = ns.popen(sys.executable, "-c", "import socket, time\n"
                       "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                       "s.bind(('0.0.0.0', 5555))\nprint('bound', flush=True)\ntime.sleep(60)\n",
                       stdout=subprocess.PIPE, text=True)
    try:
        assert blocker.stdout.readline() == "bound\n"
        with pytest.raises(WireGuardError) as raised:
            control.configure(name, DeviceConfig(listen_port=5555))
    finally:
        blocker.kill()
        blocker.wait()
    assert raised.value.errno == errno.EADDRINUSE
    assert str(raised.value) == f"{name}: the daemon refused the configuration (Address already in use)"
    with pytest.raises(ValueError):
        DeviceConfig(listen_port=70000)


def test_stale_socket_is_removed():
    name = unique_name("wgsta")
    path = socket_path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)  # bound, never listening: connecting is refused
    listener.close()
    try:
        assert os.path.exists(path)
        assert name not in control.device_names()
        assert not os.path.exists(path)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def test_sockets_in_the_users_runtime_directory_are_found(tmp_path, monkeypatch):
    """An interface run by an unprivileged user (wgc --proxy, a Net with a
    control directory) has its socket in $XDG_RUNTIME_DIR/wireguard: wgc.control
    and wgc --wg find it there, after /var/run/wireguard."""
    from wgc._crypto import clamp
    from wgc.netstack import Net
    from wgc.paths import user_socket_directory

    name = unique_name("wgusr")
    private = clamp(os.urandom(32))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    directory = user_socket_directory()
    assert directory == str(tmp_path / "wireguard")
    with Net(DeviceConfig(private_key=private, listen_port=0), ["10.77.0.2"], name=name,
             control_dir=directory):
        assert name in control.device_names()
        assert control.device(name).private_key == private
        shown = subprocess.run([sys.executable, "-m", "wgc", "--wg", "show", name, "listen-port"],
                               capture_output=True, text=True, timeout=30, env=dict(os.environ))
        assert shown.returncode == 0, shown.stderr
        assert int(shown.stdout) > 0
    assert name not in control.device_names()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert user_socket_directory() is None
