"""Netlink answers the control tools read: the WireGuard generic-netlink dump
(wgc/control/kernel.py) and the rtnetlink dumps and acknowledgements wg-quick
reads (wgc/control/rtnetlink.py).  The daemon's own link-event parser
(wgc/netlink.py) is not fuzzed here.

Input: one control byte choosing the reader, then datagrams separated by
SEPARATOR; the sequence number looked for is the first message's, so that
mutations of real answers are read rather than skipped.  Invariants: the
only error is WireGuardError; what a reader returns is well-formed: a device
whose configuration the model accepts, links with names, addresses and
routes whose bytes fit their family, errors as (errno, message).
"""
import socket
import struct

import common

with common.instrumented():
    from wgc.control import kernel, rtnetlink
    from wgc.errors import WireGuardError

SEPARATOR = b"\xffNL\xff"
ADDRESS_SIZE = {socket.AF_INET: 4, socket.AF_INET6: 16}
READERS = ("wireguard", "links", "link", "address", "route", "rule", "ack", "error")
DUMPS = {"link": rtnetlink.RTM_NEWLINK, "address": rtnetlink.RTM_NEWADDR,
         "route": rtnetlink.RTM_NEWROUTE, "rule": rtnetlink.RTM_NEWRULE}


def check(reader: str, datagrams: list[bytes], seq: int) -> None:
    if reader == "wireguard":
        device = kernel.parse_get_answer("wg0", datagrams, seq)
        device.config()
        assert all(len(peer.public_key) == 32 for peer in device.peers)
    elif reader == "links":
        for name, kind in kernel.parse_links(datagrams, seq):
            assert isinstance(name, str) and (kind is None or isinstance(kind, str))
    elif reader in DUMPS:
        for item in rtnetlink.parse_dump(datagrams, seq, DUMPS[reader]):
            if reader == "address":
                assert len(item.address) == ADDRESS_SIZE[item.family], item
                str(item)
            elif reader == "route":
                assert item.mtu is None or 0 <= item.mtu < 1 << 32
    elif reader == "ack":
        flags = struct.unpack_from("=H", datagrams[0], 6)[0] if len(datagrams[0]) >= 8 else 0
        code, text = rtnetlink.parse_ack(flags, datagrams[0][16:])
        assert isinstance(code, int) and isinstance(text, str)
    else:
        assert isinstance(rtnetlink.error_code(datagrams, seq), int)


def one_input(data: bytes) -> None:
    if not data:
        return
    reader = READERS[data[0] % len(READERS)]
    datagrams = data[1:].split(SEPARATOR)
    seq = struct.unpack_from("=I", datagrams[0], 8)[0] if len(datagrams[0]) >= 12 else 0
    try:
        check(reader, datagrams, seq)
    except WireGuardError:
        pass


def seeds() -> list[bytes]:
    """Real rtnetlink dumps of a namespace made for the purpose (when run as
    root) and WireGuard dumps from the simulated kernel of
    tests/test_control_fake_kernel.py (this machine has no WireGuard module)."""
    found = _wireguard_seeds()
    try:
        found += _rtnetlink_seeds()
    except OSError as error:
        print(f"no rtnetlink seeds: {error}")
    return found


def _wireguard_seeds() -> list[bytes]:
    import ipaddress

    from test_control_fake_kernel import FakeKernel, Model
    from wgc import control, netlink
    from wgc._crypto import clamp
    from wgc.control.model import AllowedIP, DeviceConfig, Endpoint, PeerConfig

    fake = FakeKernel(per_message=2)
    fake.devices["wg0"] = Model(5)
    opener, netlink.open_socket = netlink.open_socket, fake.socket
    try:
        peers = [PeerConfig(public_key=bytes([n]) * 32, preshared_key=bytes([n + 1]) * 32 if n % 2 else None,
                            endpoint=Endpoint(ipaddress.ip_address(["192.0.2.1", "2001:db8::1"][n % 2]), 51820 + n),
                            persistent_keepalive_interval=25 * n,
                            allowed_ips=[AllowedIP(ipaddress.ip_address(f"10.{n}.0.{i * 4}"), 30) for i in range(3)]
                            + [AllowedIP(ipaddress.ip_address("fd00::"), 64)])
                 for n in (1, 2)]
        control.configure("wg0", DeviceConfig(private_key=clamp(bytes(range(32))), listen_port=51820, fwmark=7,
                                              peers=peers), replace_peers=True)
        dump = fake.get_dump("wg0", fake.devices["wg0"], 1234)
        links = fake.link_dump(77)
    finally:
        netlink.open_socket = opener
    refused = struct.pack("=IHHII", 36, kernel.NLMSG_ERROR, 0, 9, 0) + struct.pack("=i", -19) + bytes(16)
    return [bytes([READERS.index("wireguard")]) + SEPARATOR.join(dump),
            bytes([READERS.index("wireguard")]) + refused,
            bytes([READERS.index("links")]) + links]


def _rtnetlink_seeds() -> list[bytes]:
    """Dumps and an extended-ack refusal from this machine's kernel, in a
    throwaway namespace holding a veth pair, addresses, a route and a rule."""
    import subprocess

    from netns import unique_name

    ns = unique_name("fz")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        script = ("link add d0 type veth peer name d1; link set d0 up mtu 1420; addr add 10.9.0.1/24 dev d0; "
                  "addr add fd00::1/64 dev d0 nodad; route add 10.8.0.0/16 dev d0 mtu lock 1300 table 51820; "
                  "rule add not fwmark 51820 table 51820; -6 rule add table main suppress_prefixlength 0")
        for command in script.split("; "):
            subprocess.run(["ip", "-n", ns, *command.split()], check=True)
        return subprocess.run(
            ["ip", "netns", "exec", ns, _python(), __file__, "--dump-rtnetlink"],
            check=True, capture_output=True).stdout.split(b"\n--seed--\n")[:-1]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


def _python() -> str:
    import sys

    return sys.executable


def _dump_rtnetlink() -> None:
    """Inside the namespace: each dump answer and a refused request, raw, to stdout."""
    import sys

    out = sys.stdout.buffer
    with kernel.NetlinkSocket(kernel.NETLINK_ROUTE) as nl:
        for reader, family in (("link", socket.AF_UNSPEC), ("address", socket.AF_UNSPEC),
                               ("route", socket.AF_INET), ("route", socket.AF_INET6),
                               ("rule", socket.AF_INET), ("rule", socket.AF_INET6)):
            msg_type = DUMPS[reader] + 2  # the RTM_GET* of each RTM_NEW*
            seq = nl.next_seq()
            nl.send(rtnetlink.dump_request(seq, msg_type, family))
            out.write(bytes([READERS.index(reader)]) + SEPARATOR.join(nl.dump(seq)) + b"\n--seed--\n")
        nl.sock.setsockopt(rtnetlink.SOL_NETLINK, rtnetlink.NETLINK_EXT_ACK, 1)
        seq = nl.next_seq()
        nl.send(rtnetlink.new_link(seq, "wg0"))  # no WireGuard module here: refused, with the kernel's text
        out.write(bytes([READERS.index("ack")]) + nl.recv() + b"\n--seed--\n")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--dump-rtnetlink"]:
        _dump_rtnetlink()
    else:
        common.main(one_input)
