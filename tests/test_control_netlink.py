"""wgc.control's netlink messages, byte for byte, with no kernel module.

The expected bytes are packed here by hand from include/uapi/linux/wireguard.h
and the netlink framing rules (4-byte alignment, NLA_F_NESTED on nests), not
with the code under test.  Splitting is checked against sizes worked out by
hand for wg(8)'s rule (a message never exceeds one socket buffer; an item that
does not fit starts the next message), and by replaying every message the way
the kernel applies them.
"""
import errno
import ipaddress
import socket
import struct
import sys

import pytest

from wgc import netlink
from wgc.control import kernel, userspace
from wgc.control.model import (
    AllowedIP,
    DeviceConfig,
    Endpoint,
    PeerConfig,
    key_from_base64,
    key_to_base64,
)
from wgc.errors import WireGuardError

FAMILY = 0x1C  # any generic netlink family id
NESTED = 0x8000


def attr(kind: int, payload: bytes) -> bytes:
    padding = (-len(payload)) % 4
    return struct.pack("=HH", 4 + len(payload), kind) + payload + bytes(padding)


def nest(kind: int, *children: bytes) -> bytes:
    body = b"".join(children)
    return struct.pack("=HH", 4 + len(body), kind | NESTED) + body


def genl(msg_type: int, flags: int, seq: int, cmd: int, *attrs: bytes) -> bytes:
    body = struct.pack("=BBH", cmd, 1, 0) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), msg_type, flags, seq, 0) + body


def done(seq: int) -> bytes:
    return struct.pack("=IHHII", 20, netlink.NLMSG_DONE, netlink.NLM_F_MULTI, seq, 0) + struct.pack("=i", 0)


def error(seq: int, code: int) -> bytes:
    return struct.pack("=IHHII", 36, netlink.NLMSG_ERROR, 0, seq, 0) + struct.pack("=i", -code) + bytes(16)


def key(n: int) -> bytes:
    return bytes([n]) * 32


def allowed_v4(address: str, cidr: int) -> bytes:
    return nest(0, attr(1, struct.pack("=H", socket.AF_INET)), attr(2, socket.inet_aton(address)),
                attr(3, bytes([cidr])))


def allowed_v6(address: str, cidr: int) -> bytes:
    return nest(0, attr(1, struct.pack("=H", socket.AF_INET6)), attr(2, socket.inet_pton(socket.AF_INET6, address)),
                attr(3, bytes([cidr])))


REQUEST_ACK = netlink.NLM_F_REQUEST | netlink.NLM_F_ACK


# -- WG_CMD_SET_DEVICE ---------------------------------------------------------------


def test_set_device_only():
    config = DeviceConfig(private_key=key(7), listen_port=51820, fwmark=0x1234)
    [message] = kernel.build_set_messages(FAMILY, "wg0", config, replace_peers=True, seq=9)
    assert message == genl(FAMILY, REQUEST_ACK, 9, 1,
                           attr(2, b"wg0\0"),
                           attr(3, key(7)),
                           attr(6, struct.pack("=H", 51820)),
                           attr(7, struct.pack("=I", 0x1234)),
                           attr(5, struct.pack("=I", 1)))


def test_set_name_only_when_nothing_changes():
    [message] = kernel.build_set_messages(FAMILY, "wg0", DeviceConfig(), replace_peers=False, seq=1)
    assert message == genl(FAMILY, REQUEST_ACK, 1, 1, attr(2, b"wg0\0"))


def test_set_one_peer_with_everything():
    endpoint = Endpoint(ipaddress.ip_address("192.0.2.1"), 51820)
    endpoint6 = Endpoint(ipaddress.ip_address("fe80::1"), 443, flowinfo=5, scope_id=3)
    peers = [
        PeerConfig(public_key=key(1), preshared_key=key(2), endpoint=endpoint, persistent_keepalive_interval=25,
                   replace_allowed_ips=True,
                   allowed_ips=[AllowedIP.parse("10.1.2.3/8"), AllowedIP.parse("fd00::1/64")]),
        PeerConfig(public_key=key(3), remove=True),
        PeerConfig(public_key=key(4), update_only=True, endpoint=endpoint6),
    ]
    [message] = kernel.build_set_messages(FAMILY, "wg0", DeviceConfig(peers=peers), replace_peers=False, seq=2)
    sockaddr_in = (
        struct.pack("=H", socket.AF_INET) + struct.pack("!H", 51820) + socket.inet_aton("192.0.2.1") + bytes(8)
    )
    sockaddr_in6 = (struct.pack("=H", socket.AF_INET6) + struct.pack("!H", 443) + struct.pack("!I", 5)
                    + socket.inet_pton(socket.AF_INET6, "fe80::1") + struct.pack("=I", 3))
    assert len(sockaddr_in) == 16 and len(sockaddr_in6) == 28
    assert message == genl(
        FAMILY, REQUEST_ACK, 2, 1,
        attr(2, b"wg0\0"),
        nest(8,
             nest(0, attr(1, key(1)), attr(2, key(2)), attr(4, sockaddr_in), attr(5, struct.pack("=H", 25)),
                  attr(3, struct.pack("=I", 2)),
                  nest(9, allowed_v4("10.1.2.3", 8), allowed_v6("fd00::1", 64))),
             nest(0, attr(1, key(3)), attr(3, struct.pack("=I", 1))),
             nest(0, attr(1, key(4)), attr(4, sockaddr_in6), attr(3, struct.pack("=I", 4)))))


def test_allowed_ips_split_at_the_page_size():
    """One peer with 300 IPv4 allowed IPs in 4096-byte messages.

    By hand: header 16 + genl 4 + IFNAME "wg0\\0" 8 + peers nest 4 + peer nest 4
    + public key 36 + flags 8 + allowed IPs nest 4 = 84 bytes, then 28 per IPv4
    allowed IP (nest 4 + family 8 + address 8 + mask 8): 143 fit (4088 bytes).
    The second message has no flags (76 bytes before the first IP): 143 again,
    4080 bytes.  The third carries the last 14: 76 + 14 * 28 = 468 bytes."""
    ips = [AllowedIP(ipaddress.IPv4Address(0x0A000000 + i), 32) for i in range(300)]
    config = DeviceConfig(peers=[PeerConfig(public_key=key(1), replace_allowed_ips=True, allowed_ips=ips)])
    messages = kernel.build_set_messages(FAMILY, "wg0", config, replace_peers=False, seq=100, limit=4096)
    assert [len(m) for m in messages] == [4088, 4080, 468]
    assert [struct.unpack_from("=I", m)[0] for m in messages] == [4088, 4080, 468]  # nlmsg_len
    assert [struct.unpack_from("=I", m, 8)[0] for m in messages] == [100, 101, 102]  # seq
    first = genl(FAMILY, REQUEST_ACK, 100, 1, attr(2, b"wg0\0"),
                 nest(8, nest(0, attr(1, key(1)), attr(3, struct.pack("=I", 2)),
                              nest(9, *(allowed_v4(str(ip.address), 32) for ip in ips[:143])))))
    assert messages[0] == first
    third = genl(FAMILY, REQUEST_ACK, 102, 1, attr(2, b"wg0\0"),
                 nest(8, nest(0, attr(1, key(1)),
                              nest(9, *(allowed_v4(str(ip.address), 32) for ip in ips[286:])))))
    assert messages[2] == third


def test_split_counts_attribute_padding():
    """A limit 27 bytes past 10 allowed IPs (84 + 10 * 28 + 27 = 391): the
    eleventh needs 28 bytes once its u16 and u8 attributes are padded to 4,
    so it starts the next message."""
    ips = [AllowedIP(ipaddress.IPv4Address(i), 32) for i in range(30)]
    config = DeviceConfig(peers=[PeerConfig(public_key=key(1), replace_allowed_ips=True, allowed_ips=ips)])
    messages = kernel.build_set_messages(FAMILY, "wg0", config, replace_peers=False, limit=391)
    assert len(messages[0]) == 84 + 10 * 28
    assert all(len(m) <= 391 for m in messages)


def apply_like_the_kernel(messages):
    """Replays WG_CMD_SET_DEVICE messages on a model of the kernel's state:
    {public key: [allowed IPs]} plus the device attributes and flags seen."""
    device, peers, flags_seen = {}, {}, []
    for message in messages:
        length, _, _, _, _ = netlink.NLMSGHDR.unpack_from(message)
        assert length == len(message)
        for kind, payload in netlink.attributes(message[16:length], 4):
            if kind == kernel.WGDEVICE_A_PEERS:
                for _, peer_data in netlink.attributes(payload):
                    public = None
                    for peer_kind, value in netlink.attributes(peer_data):
                        if peer_kind == kernel.WGPEER_A_PUBLIC_KEY:
                            public = value
                            peers.setdefault(public, [])
                        elif peer_kind == kernel.WGPEER_A_FLAGS:
                            flags = struct.unpack("=I", value)[0]
                            flags_seen.append((public, flags))
                            if flags & kernel.WGPEER_F_REPLACE_ALLOWEDIPS:
                                peers[public] = []
                        elif peer_kind == kernel.WGPEER_A_ALLOWEDIPS:
                            for _, ip_data in netlink.attributes(value):
                                fields = dict(netlink.attributes(ip_data))
                                peers[public].append((fields[2], fields[3][0]))
                        else:
                            device.setdefault((public, peer_kind), []).append(value)
            else:
                device.setdefault(kind, []).append(payload)
    return device, peers, flags_seen


@pytest.mark.parametrize("limit", [4096, 8192, 600])
def test_many_peers_split(limit):
    """2,000 peers with 1 to 40 allowed IPs each, both families, some with an
    endpoint and keepalive: every message fits, every allowed IP arrives
    once and in order, device attributes and each peer's flags and settings
    come exactly once."""
    peers = []
    for n in range(2000):
        ips = [AllowedIP(ipaddress.IPv4Address((10 << 24) + n * 64 + i), 32) for i in range(n % 40 + 1)]
        ips += [AllowedIP(ipaddress.IPv6Address((0xFD << 120) + (n << 16) + i), 128) for i in range(n % 3)]
        peers.append(PeerConfig(public_key=n.to_bytes(32, "big"), replace_allowed_ips=True, allowed_ips=ips,
                                endpoint=Endpoint(ipaddress.IPv4Address("192.0.2.7"), n) if n % 2 else None,
                                persistent_keepalive_interval=n % 100 if n % 5 == 0 else None))
    config = DeviceConfig(private_key=key(9), listen_port=1, fwmark=2, peers=peers)
    messages = kernel.build_set_messages(FAMILY, "wgsplit", config, replace_peers=True, seq=1, limit=limit)
    assert len(messages) > 1
    assert all(len(m) <= limit for m in messages)
    device, applied, flags_seen = apply_like_the_kernel(messages)
    assert device[kernel.WGDEVICE_A_IFNAME] == [b"wgsplit\0"] * len(messages)
    for kind in (kernel.WGDEVICE_A_PRIVATE_KEY, kernel.WGDEVICE_A_LISTEN_PORT, kernel.WGDEVICE_A_FWMARK,
                 kernel.WGDEVICE_A_FLAGS):
        assert len(device[kind]) == 1, kind
    assert list(applied) == [p.public_key for p in peers]
    for peer in peers:
        expected = [(ip.address.packed, ip.cidr) for ip in peer.allowed_ips]
        assert applied[peer.public_key] == expected
        assert flags_seen.count((peer.public_key, kernel.WGPEER_F_REPLACE_ALLOWEDIPS)) == 1
        assert len(device.get((peer.public_key, kernel.WGPEER_A_ENDPOINT), [])) == (peer.endpoint is not None)
        keepalives = device.get((peer.public_key, kernel.WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL), [])
        assert len(keepalives) == (peer.persistent_keepalive_interval is not None)


def test_remove_flag_repeats_in_every_fragment():
    """A peer removed with allowed IPs in the same request (as wg(8) can send
    it): REMOVE_ME goes in every message naming the peer, replace only once."""
    ips = [AllowedIP(ipaddress.IPv4Address(i), 32) for i in range(400)]
    config = DeviceConfig(peers=[PeerConfig(public_key=key(1), remove=True, replace_allowed_ips=True, allowed_ips=ips)])
    messages = kernel.build_set_messages(FAMILY, "wg0", config, replace_peers=False, limit=4096)
    _, _, flags_seen = apply_like_the_kernel(messages)
    assert [flags for _, flags in flags_seen] == [3] + [1] * (len(messages) - 1)


def test_update_only_repeats_in_every_fragment():
    ips = [AllowedIP(ipaddress.IPv4Address(i), 32) for i in range(400)]
    config = DeviceConfig(peers=[PeerConfig(public_key=key(1), update_only=True, replace_allowed_ips=True,
                                            allowed_ips=ips)])
    messages = kernel.build_set_messages(FAMILY, "wg0", config, replace_peers=False, limit=4096)
    _, _, flags_seen = apply_like_the_kernel(messages)
    assert len(messages) == 3
    assert [flags for _, flags in flags_seen] == [6, 4, 4]


def test_a_peer_that_fits_nowhere_is_an_error():
    config = DeviceConfig(peers=[PeerConfig(public_key=key(1))])
    with pytest.raises(WireGuardError) as raised:
        kernel.build_set_messages(FAMILY, "wg0", config, replace_peers=False, limit=40)
    assert raised.value.errno == errno.EMSGSIZE


# -- WG_CMD_GET_DEVICE dumps ------------------------------------------------------------


def device_attrs(private: bytes | None = None):
    attrs = [attr(1, struct.pack("=I", 7)), attr(2, b"wg9\0")]
    if private:
        attrs += [attr(3, private), attr(4, key(0x55))]
    return attrs + [attr(6, struct.pack("=H", 51820)), attr(7, struct.pack("=I", 0xBEEF))]


def peer_attrs(public: bytes, *ips: bytes, first: bool = True) -> bytes:
    if not first:
        return nest(0, attr(1, public), nest(9, *ips))
    sockaddr = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 9) + socket.inet_aton("198.51.100.4") + bytes(8)
    return nest(0, attr(1, public), attr(2, bytes(32)), attr(4, sockaddr), attr(5, struct.pack("=H", 0)),
                attr(6, struct.pack("=qq", 1700000000, 123)), attr(7, struct.pack("=Q", 1000)),
                attr(8, struct.pack("=Q", 2000)), attr(10, struct.pack("=I", 1)), nest(9, *ips))


def test_dump_joins_a_peer_spread_over_messages():
    a, b = key(0xA1), key(0xB2)
    seq = 77
    datagrams = [
        genl(FAMILY, netlink.NLM_F_MULTI, seq, 0, *device_attrs(key(0x11)),
             nest(8, peer_attrs(a, allowed_v4("10.0.0.0", 8), allowed_v4("10.1.0.0", 16)))),
        genl(FAMILY, netlink.NLM_F_MULTI, seq + 1, 0, attr(2, b"other\0")),  # another request's answer: ignored
        genl(FAMILY, netlink.NLM_F_MULTI, seq, 0, *device_attrs(),
             nest(8, peer_attrs(a, allowed_v6("fd00::", 64), first=False))),
        genl(FAMILY, netlink.NLM_F_MULTI, seq, 0, *device_attrs(),
             nest(8, peer_attrs(a, allowed_v4("10.2.0.0", 16), first=False), peer_attrs(b))),
        done(seq),
    ]
    # Two messages in one datagram, as the kernel packs them.
    device = kernel.parse_get_answer("wg9", [datagrams[0] + datagrams[1], *datagrams[2:]], seq)
    assert (device.name, device.kind, device.ifindex) == ("wg9", "kernel", 7)
    assert device.private_key == key(0x11) and device.public_key == key(0x55)
    assert (device.listen_port, device.fwmark) == (51820, 0xBEEF)
    assert [p.public_key for p in device.peers] == [a, b]
    first = device.peers[0]
    assert [str(ip) for ip in first.allowed_ips] == ["10.0.0.0/8", "10.1.0.0/16", "fd00::/64", "10.2.0.0/16"]
    assert first.preshared_key is None  # all zeros: none
    assert str(first.endpoint) == "198.51.100.4:9"
    assert (first.last_handshake_time_sec, first.last_handshake_time_nsec) == (1700000000, 123)
    assert (first.rx_bytes, first.tx_bytes, first.protocol_version) == (1000, 2000, 1)
    assert device.peers[1].allowed_ips == []


def test_dump_error_and_truncation():
    with pytest.raises(WireGuardError) as raised:
        kernel.parse_get_answer("nope", [error(5, errno.ENODEV)], 5)
    assert raised.value.errno == errno.ENODEV
    with pytest.raises(WireGuardError) as raised:
        kernel.parse_get_answer("wg9", [genl(FAMILY, netlink.NLM_F_MULTI, 5, 0, *device_attrs())], 5)
    assert raised.value.errno == errno.EPROTO
    bad_ip = nest(0, attr(1, struct.pack("=H", socket.AF_INET)), attr(2, bytes(4)), attr(3, bytes([33])))
    with pytest.raises(WireGuardError):
        kernel.parse_get_answer("wg9", [genl(FAMILY, 0, 5, 0, nest(8, peer_attrs(key(1), bad_ip))), done(5)], 5)


def test_endpoint_sockaddr_round_trip():
    for endpoint in (Endpoint(ipaddress.ip_address("203.0.113.9"), 65535),
                     Endpoint(ipaddress.ip_address("2001:db8::7"), 1, flowinfo=0x12345, scope_id=0)):
        assert Endpoint.from_bytes(endpoint.to_bytes()) == endpoint
    assert Endpoint.from_bytes(b"\x02\x00" + bytes(10)) is None  # a short sockaddr_in is ignored


# -- rtnetlink link listing ----------------------------------------------------------


def newlink(seq: int, index: int, name: bytes, kind: bytes | None) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, index, 0, 0) + attr(3, name + b"\0")
    if kind is not None:
        body += nest(18, attr(1, kind + b"\0"))
    return struct.pack("=IHHII", 16 + len(body), 16, netlink.NLM_F_MULTI, seq, 0) + body


def test_link_dump_keeps_wireguard_kinds():
    seq = 3
    datagrams = [newlink(seq, 1, b"lo", None) + newlink(seq, 2, b"wg0", b"wireguard"),
                 newlink(seq, 3, b"veth0", b"veth") + newlink(seq, 4, b"wg1", b"wireguard") + done(seq)]
    assert kernel.parse_links(datagrams, seq) == [("lo", None), ("wg0", "wireguard"), ("veth0", "veth"),
                                                  ("wg1", "wireguard")]


@pytest.mark.netns
def test_live_link_dump(netns):
    """The RTM_GETLINK dump against the kernel, in a namespace with a veth pair."""
    from netns import veth

    left, right = netns("wgl"), netns("wgr")
    cable, _ = veth(left, right)
    script = "from wgc.control import kernel; print(kernel.links()); print(kernel.device_names())"
    links, names = left.run(sys.executable, "-c", script).stdout.splitlines()
    assert links == str([("lo", None), (cable, "veth")])
    assert names == "[]"


# -- UAPI answers ---------------------------------------------------------------------


def test_uapi_get_parse():
    answer = (
        "private_key=" + "0" * 63 + "8\n"
        "listen_port=51820\nfwmark=7\n"
        "public_key=" + "11" * 32 + "\n"
        "preshared_key=" + "00" * 32 + "\n"
        "protocol_version=1\nendpoint=[2001:db8::1]:5\n"
        "last_handshake_time_sec=12\nlast_handshake_time_nsec=34\ntx_bytes=5\nrx_bytes=6\n"
        "persistent_keepalive_interval=25\nallowed_ip=10.0.0.0/8\nallowed_ip=::ffff:1.2.3.4/128\n"
        "public_key=" + "22" * 32 + "\npreshared_key=" + "33" * 32 + "\nendpoint=1.2.3.4:9\n"
        "some_future_key=1\n"
        "errno=0\n\n"
    ).encode()
    device = userspace.parse_get("wg5", answer)
    assert device.kind == "userspace" and device.listen_port == 51820 and device.fwmark == 7
    assert device.public_key is not None and len(device.public_key) == 32
    first, second = device.peers
    assert first.public_key == key(0x11) and first.preshared_key is None
    assert str(first.endpoint) == "[2001:db8::1]:5"
    assert [str(ip) for ip in first.allowed_ips] == ["10.0.0.0/8", "::ffff:1.2.3.4/128"]
    assert (first.last_handshake_time_sec, first.last_handshake_time_nsec) == (12, 34)
    assert (first.tx_bytes, first.rx_bytes) == (5, 6)
    assert second.preshared_key == key(0x33) and str(second.endpoint) == "1.2.3.4:9"


@pytest.mark.parametrize("answer, code", [
    (b"errno=22\n\n", errno.EINVAL),
    (b"errno=-22\n\n", errno.EPROTO),  # wg(8) reads digits only here
    (b"listen_port=65536\nerrno=0\n\n", errno.EPROTO),
    (b"public_key=zz\nerrno=0\n\n", errno.EPROTO),
    (b"allowed_ip=1.2.3.4/8\nerrno=0\n\n", 0),  # before any peer: ignored, as wg(8)
    (b"listen_port=1\n", errno.EPROTO),  # no errno line
])
def test_uapi_get_errors(answer, code):
    if code == 0:
        assert userspace.parse_get("x", answer).peers == []
        return
    with pytest.raises(WireGuardError) as raised:
        userspace.parse_get("x", answer)
    assert raised.value.errno == code


def test_uapi_set_request():
    config = DeviceConfig(private_key=key(1), listen_port=0, fwmark=0, peers=[
        PeerConfig(public_key=key(2), remove=True, allowed_ips=[AllowedIP.parse("1.1.1.1/32")]),
        PeerConfig(public_key=key(3), preshared_key=bytes(32), persistent_keepalive_interval=0,
                   endpoint=Endpoint(ipaddress.ip_address("::1"), 7), replace_allowed_ips=True,
                   allowed_ips=[AllowedIP.parse("10.9.8.7/8"), AllowedIP.parse("::ffff:1.2.3.4/96")]),
    ])
    assert userspace.build_set(config, replace_peers=True).decode() == (
        "set=1\nprivate_key=" + "01" * 32 + "\nlisten_port=0\nfwmark=0\nreplace_peers=true\n"
        "public_key=" + "02" * 32 + "\nremove=true\n"
        "public_key=" + "03" * 32 + "\npreshared_key=" + "00" * 32 + "\nendpoint=[::1]:7\n"
        "persistent_keepalive_interval=0\nreplace_allowed_ips=true\n"
        "allowed_ip=10.9.8.7/8\nallowed_ip=::ffff:1.2.3.4/96\n\n"
    )


def test_base64_keys():
    assert key_to_base64(bytes(32)) == "A" * 43 + "="
    assert key_from_base64("A" * 43 + "=") == bytes(32)
    for bad in ("A" * 42 + "B=", "A" * 44, "A" * 42 + "=", "A" * 43 + "=\n", "*" * 43 + "="):
        with pytest.raises(ValueError):
            key_from_base64(bad)
