"""wgc.control's kernel backend and the built-in wg against a simulated kernel.

This machine has no WireGuard module, so the netlink socket is replaced by a
model of the kernel's side, written here from include/uapi/linux/wireguard.h
and the kernel's documented behaviour: family lookup through nlctrl (ENOENT
when the module is absent), WG_CMD_GET_DEVICE dumps that repeat the device
attributes in every message and continue a long peer in the next one,
WG_CMD_SET_DEVICE applied message by message with an acknowledgement each,
ENODEV for an unknown interface, and RTM_GETLINK dumps.  What goes over the
"socket" is real netlink bytes, so the I/O loop, sequence matching, error
mapping and joining are exercised end to end.
"""
import errno
import io
import ipaddress
import socket
import struct

import pytest

from wgc import control, netlink
from wgc.control import (
    AllowedIP,
    DeviceConfig,
    Endpoint,
    PeerConfig,
    WireGuardError,
    kernel,
)
from wgc.control.wgtool import Tool

FAMILY = 0x22
NESTED = 0x8000


def attr(kind: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), kind) + payload + bytes((-len(payload)) % 4)


def nest(kind: int, *children: bytes) -> bytes:
    body = b"".join(children)
    return struct.pack("=HH", 4 + len(body), kind | NESTED) + body


def message(msg_type: int, flags: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), msg_type, flags, seq, 0) + body


def ack(seq: int, code: int = 0) -> bytes:
    return message(netlink.NLMSG_ERROR, 0, seq, struct.pack("=i", -code) + bytes(16))


def parse(data: bytes, start: int = 0) -> list[tuple[int, bytes]]:
    out, offset = [], start
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        out.append((kind & 0x3FFF, data[offset + 4: offset + length]))
        offset += (length + 3) & ~3
    return out


class Model:
    """One kernel WireGuard device."""

    def __init__(self, ifindex: int):
        self.ifindex = ifindex
        self.private = None
        self.port = 0
        self.fwmark = 0
        self.peers = {}  # public key -> dict, in insertion order


class FakeKernel:
    def __init__(self, family_present=True, per_message=40):
        self.family_present = family_present
        self.devices: dict[str, Model] = {}
        self.per_message = per_message  # allowed IPs per dump message
        self.set_messages = []

    def socket(self, protocol):
        return FakeSocket(self, protocol)

    # -- answers --------------------------------------------------------------------

    def answer(self, protocol, data: bytes) -> list[bytes]:
        length, msg_type, flags, seq, _ = struct.unpack_from("=IHHII", data)
        assert length == len(data)
        if protocol == netlink.NETLINK_ROUTE:
            assert msg_type == netlink.RTM_GETLINK and flags & netlink.NLM_F_DUMP
            return [self.link_dump(seq)]
        if msg_type == kernel.GENL_ID_CTRL:
            attrs = dict(parse(data, 20))
            assert attrs[kernel.CTRL_ATTR_FAMILY_NAME] == b"wireguard\0"
            if not self.family_present:
                return [ack(seq, errno.ENOENT)]
            reply = message(kernel.GENL_ID_CTRL, 0, seq, struct.pack("=BBH", 1, 2, 0)
                            + attr(kernel.CTRL_ATTR_FAMILY_ID, struct.pack("=H", FAMILY))
                            + attr(kernel.CTRL_ATTR_FAMILY_NAME, b"wireguard\0"))
            return [reply + ack(seq)]
        assert msg_type == FAMILY
        cmd = data[16]
        attrs = parse(data, 20)
        name = dict(attrs)[kernel.WGDEVICE_A_IFNAME].rstrip(b"\0").decode()
        device = self.devices.get(name)
        if cmd == kernel.WG_CMD_GET_DEVICE:
            assert flags & netlink.NLM_F_DUMP
            if device is None:
                return [ack(seq, errno.ENODEV)]
            return self.get_dump(name, device, seq)
        assert cmd == kernel.WG_CMD_SET_DEVICE and len(data) <= kernel.buffer_size()
        self.set_messages.append(data)
        if device is None:
            return [ack(seq, errno.ENODEV)]
        return [ack(seq, self.apply(device, attrs))]

    def link_dump(self, seq: int) -> bytes:
        out = b""
        links = [("lo", None)] + [(name, "wireguard") for name in self.devices] + [("eth0", "veth")]
        for index, (name, kind) in enumerate(links, start=1):
            body = struct.pack("=BxHiII", 0, 1, index, 0, 0) + attr(netlink.IFLA_IFNAME, name.encode() + b"\0")
            if kind:
                body += nest(netlink.IFLA_LINKINFO, attr(netlink.IFLA_INFO_KIND, kind.encode() + b"\0"))
            out += message(netlink.RTM_NEWLINK, netlink.NLM_F_MULTI, seq, body)
        return out + message(netlink.NLMSG_DONE, netlink.NLM_F_MULTI, seq, struct.pack("=i", 0))

    def device_attrs(self, name, device):
        attrs = [attr(kernel.WGDEVICE_A_IFINDEX, struct.pack("=I", device.ifindex)),
                 attr(kernel.WGDEVICE_A_IFNAME, name.encode() + b"\0")]
        if device.private is not None:
            from wgc import _crypto

            attrs += [attr(kernel.WGDEVICE_A_PRIVATE_KEY, device.private),
                      attr(kernel.WGDEVICE_A_PUBLIC_KEY, _crypto.public_key(device.private))]
        attrs += [attr(kernel.WGDEVICE_A_LISTEN_PORT, struct.pack("=H", device.port)),
                  attr(kernel.WGDEVICE_A_FWMARK, struct.pack("=I", device.fwmark))]
        return b"".join(attrs)

    def get_dump(self, name, device, seq) -> list[bytes]:
        """Messages of at most per_message allowed IPs; a peer that does not
        fit goes on in the next message with its public key only.  Two
        messages per datagram, as the kernel fills its buffers."""
        messages, current, room = [], [], self.per_message

        def flush():
            messages.append(message(FAMILY, netlink.NLM_F_MULTI, seq, struct.pack("=BBH", 0, 1, 0)
                                    + self.device_attrs(name, device) + nest(kernel.WGDEVICE_A_PEERS, *current)))

        for public, peer in device.peers.items():
            ips = list(peer["ips"])
            first = True
            while True:
                taken, ips = ips[:room], ips[room:]
                room -= len(taken)
                fields = [attr(kernel.WGPEER_A_PUBLIC_KEY, public)]
                if first:
                    fields += [
                        attr(kernel.WGPEER_A_PRESHARED_KEY, peer["psk"]),
                        attr(kernel.WGPEER_A_LAST_HANDSHAKE_TIME, struct.pack("=qq", 0, 0)),
                        attr(kernel.WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, struct.pack("=H", peer["keepalive"])),
                        attr(kernel.WGPEER_A_TX_BYTES, struct.pack("=Q", 0)),
                        attr(kernel.WGPEER_A_RX_BYTES, struct.pack("=Q", 0)),
                        attr(kernel.WGPEER_A_PROTOCOL_VERSION, struct.pack("=I", 1)),
                    ]
                    if peer["endpoint"]:
                        fields.append(attr(kernel.WGPEER_A_ENDPOINT, peer["endpoint"]))
                fields.append(nest(kernel.WGPEER_A_ALLOWEDIPS, *(
                    nest(0, attr(1, struct.pack("=H", socket.AF_INET if len(a) == 4 else socket.AF_INET6)),
                         attr(2, a), attr(3, bytes([cidr]))) for a, cidr in taken)))
                current.append(nest(0, *fields))
                first = False
                if not ips:
                    break
                flush()
                current, room = [], self.per_message
            if room == 0:
                flush()
                current, room = [], self.per_message
        if current or not messages:
            flush()
        messages.append(message(netlink.NLMSG_DONE, netlink.NLM_F_MULTI, seq, struct.pack("=i", 0)))
        return [b"".join(messages[i:i + 2]) for i in range(0, len(messages), 2)]

    def apply(self, device: Model, attrs) -> int:
        for kind, payload in attrs:
            if kind == kernel.WGDEVICE_A_FLAGS and struct.unpack("=I", payload)[0] & kernel.WGDEVICE_F_REPLACE_PEERS:
                device.peers.clear()
            elif kind == kernel.WGDEVICE_A_PRIVATE_KEY:
                device.private = payload if any(payload) else None
            elif kind == kernel.WGDEVICE_A_LISTEN_PORT:
                device.port = struct.unpack("=H", payload)[0] or 40000
            elif kind == kernel.WGDEVICE_A_FWMARK:
                device.fwmark = struct.unpack("=I", payload)[0]
        for kind, payload in attrs:
            if kind != kernel.WGDEVICE_A_PEERS:
                continue
            for _, peer_data in parse(payload):
                fields = parse(peer_data)
                values = dict(fields)
                public = values[kernel.WGPEER_A_PUBLIC_KEY]
                flags = struct.unpack("=I", values.get(kernel.WGPEER_A_FLAGS, bytes(4)))[0]
                if flags & kernel.WGPEER_F_REMOVE_ME:
                    device.peers.pop(public, None)
                    continue
                if public not in device.peers:
                    if flags & kernel.WGPEER_F_UPDATE_ONLY:
                        continue
                    device.peers[public] = {"psk": bytes(32), "endpoint": None, "keepalive": 0, "ips": []}
                peer = device.peers[public]
                if flags & kernel.WGPEER_F_REPLACE_ALLOWEDIPS:
                    peer["ips"] = []
                if kernel.WGPEER_A_PRESHARED_KEY in values:
                    peer["psk"] = values[kernel.WGPEER_A_PRESHARED_KEY]
                if kernel.WGPEER_A_ENDPOINT in values:
                    peer["endpoint"] = values[kernel.WGPEER_A_ENDPOINT]
                if kernel.WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL in values:
                    peer["keepalive"] = struct.unpack("=H", values[kernel.WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL])[0]
                for ip_data in (p for k, p in fields if k == kernel.WGPEER_A_ALLOWEDIPS):
                    for _, one in parse(ip_data):
                        ip = dict(parse(one))
                        network = ipaddress.ip_network((ip[2], ip[3][0]), strict=False)
                        entry = (network.network_address.packed, network.prefixlen)
                        for other in device.peers.values():  # a prefix belongs to one peer
                            if entry in other["ips"]:
                                other["ips"].remove(entry)
                        peer["ips"].append(entry)
        return 0


class FakeSocket:
    def __init__(self, fake: FakeKernel, protocol: int):
        self.fake, self.protocol, self.queue = fake, protocol, []

    def send(self, data: bytes) -> int:
        self.queue.extend(self.fake.answer(self.protocol, data))
        return len(data)

    def recv(self, size: int) -> bytes:
        assert self.queue, "recv with nothing to answer: the client would hang"
        data = self.queue.pop(0)
        assert len(data) <= size
        return data

    def close(self):
        pass


@pytest.fixture
def fake(monkeypatch, tmp_path):
    model = FakeKernel()
    monkeypatch.setattr(netlink, "open_socket", model.socket)
    # No userspace devices: an empty socket directory of our own.
    monkeypatch.setattr("wgc.paths.SOCKET_DIRECTORY", str(tmp_path))
    return model


def test_family_missing_is_protocol_not_supported(fake):
    fake.family_present = False
    for call in (lambda: control.device("wg0"), lambda: control.configure("wg0", DeviceConfig(fwmark=1))):
        with pytest.raises(WireGuardError) as raised:
            call()
        assert raised.value.errno == errno.EPROTONOSUPPORT


def test_unknown_device_is_enodev(fake):
    with pytest.raises(WireGuardError) as raised:
        control.device("wg0")
    assert raised.value.errno == errno.ENODEV
    with pytest.raises(WireGuardError) as raised:
        control.configure("wg0", DeviceConfig(listen_port=1))
    assert raised.value.errno == errno.ENODEV


def test_listing(fake):
    fake.devices["wg0"] = Model(5)
    fake.devices["wg1"] = Model(6)
    assert control.device_names() == ["wg0", "wg1"]
    assert [d.name for d in control.devices()] == ["wg0", "wg1"]
    assert all(d.kind == "kernel" for d in control.devices())


def test_round_trip_through_split_messages(fake):
    """3,000 peers and one with 5,000 allowed IPs: the set goes out in many
    page-sized messages, the dump comes back in many, and what is read back
    is what was configured."""
    fake.devices["wg0"] = Model(5)
    from wgc import _crypto

    private = _crypto.clamp(bytes(range(32)))
    peers = [PeerConfig(public_key=n.to_bytes(32, "big"), preshared_key=bytes([n % 200 + 1]) * 32 if n % 2 else None,
                        endpoint=Endpoint(ipaddress.ip_address("2001:db8::1"), n) if n % 3 == 0 else None,
                        persistent_keepalive_interval=n % 60,
                        allowed_ips=[AllowedIP(ipaddress.IPv4Address((10 << 24) + n * 4), 30)])
             for n in range(3000)]
    peers.append(PeerConfig(public_key=b"\xff" * 32, allowed_ips=[
        AllowedIP(ipaddress.IPv6Address((0xFD << 120) + (i << 64)), 64) for i in range(5000)]))
    control.configure("wg0", DeviceConfig(private_key=private, listen_port=51820, fwmark=9, peers=peers),
                      replace_peers=True)
    assert len(fake.set_messages) > 20
    device = control.device("wg0")
    assert (device.kind, device.ifindex, device.listen_port, device.fwmark) == ("kernel", 5, 51820, 9)
    assert device.private_key == private and device.public_key == _crypto.public_key(private)
    assert [p.public_key for p in device.peers] == [p.public_key for p in peers]
    for got, wanted in zip(device.peers, peers, strict=True):
        assert got.preshared_key == wanted.preshared_key
        assert got.endpoint == wanted.endpoint
        assert got.persistent_keepalive_interval == (wanted.persistent_keepalive_interval or 0)
        assert got.allowed_ips == wanted.allowed_ips
        assert got.protocol_version == 1


def run_tool(*args, stdin=b""):
    out, err = io.BytesIO(), io.BytesIO()
    code = Tool("wg", stdout=out, stderr=err, stdin=io.BytesIO(stdin)).run(list(args))
    return out.getvalue().decode(), err.getvalue().decode(), code


def test_wg_tool_on_a_kernel_device(fake, tmp_path):
    fake.devices["wg0"] = Model(5)
    key = tmp_path / "key"
    key.write_text("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\n")
    peer = "ERERERERERERERERERERERERERERERERERERERERERE="
    assert run_tool("set", "wg0", "private-key", str(key), "listen-port", "51820", "peer", peer,
                    "allowed-ips", "10.0.0.0/8,fd00::/64", "endpoint", "192.0.2.1:7") == ("", "", 0)
    out, err, code = run_tool("show", "wg0", "dump")
    assert code == 0 and err == ""
    first, second = out.splitlines()
    assert first.split("\t")[0] == "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
    assert first.split("\t")[2:] == ["51820", "off"]
    assert second == f"{peer}\t(none)\t192.0.2.1:7\t10.0.0.0/8,fd00::/64\t0\t0\t0\toff"
    assert run_tool("show", "interfaces") == ("wg0\n", "", 0)
    assert run_tool("show", "nosuch") == ("", "Unable to access interface: No such device\n", 1)
    assert run_tool("set", "nosuch", "fwmark", "1") == ("", "Unable to modify interface: No such device\n", 1)
    conf = tmp_path / "wg0.conf"
    conf.write_text(run_tool("showconf", "wg0")[0])
    fake.devices["wg1"] = Model(6)
    assert run_tool("setconf", "wg1", str(conf)) == ("", "", 0)
    assert run_tool("show", "wg1", "dump")[0].split("\n", 1)[1] == out.split("\n", 1)[1]


def test_a_kernel_device_does_not_report_counters(fake):
    """Only a wgc daemon counts drops: the API and `show drops` say so for a
    kernel device, and still say "no such device" for none."""
    fake.devices["wg0"] = Model(5)
    with pytest.raises(WireGuardError) as raised:
        control.counters("wg0")
    assert raised.value.errno == errno.EOPNOTSUPP
    assert raised.value.strerror == "wg0 does not report counters: a kernel device, not a wgc daemon"
    assert run_tool("show", "wg0", "drops") == (
        "", "wg0 does not report counters: a kernel device, not a wgc daemon\n", 1)
    assert run_tool("show", "all", "drops") == (
        "", "wg0 does not report counters: a kernel device, not a wgc daemon\n", 1)
    with pytest.raises(WireGuardError) as raised:
        control.counters("nosuch")
    assert raised.value.errno == errno.ENODEV
    assert run_tool("show", "nosuch", "drops") == ("", "Unable to access interface: No such device\n", 1)
