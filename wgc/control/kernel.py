"""Kernel devices: the generic netlink family "wireguard", and rtnetlink to list links.

Framing is wgc.netlink's (struct) rather than pyroute2's: importing
pyroute2.netlink alone takes 120-450 ms on this machine (it pulls in asyncio
and the NDB), against about 90 ms for the whole `wgc wg show`, and every
`wg show` must list kernel links.  The message layout follows the kernel's
include/uapi/linux/wireguard.h.

WG_CMD_SET_DEVICE messages are built as wg(8) builds them: each fits one
socket buffer (the page size, at most 8192 bytes); when the next attribute
does not fit, the message is closed and sent, and the next one repeats the
interface name and the current peer's public key and goes on where the last
one stopped.  Device attributes and a peer's flags and other attributes go
only in the first message that carries them, so REPLACE_PEERS and
REPLACE_ALLOWEDIPS are applied once.

WG_CMD_GET_DEVICE is a dump: a peer with many allowed IPs comes back in
several messages, each starting with the peer's public key again; peers with
the same key that follow each other are joined.
"""
from __future__ import annotations

import _socket  # socket.py's own import makes enums and selectors: most of what `wg show all` cost
import errno
import os
import struct

from wgc.control.model import (
    AllowedIP,
    Device,
    DeviceConfig,
    Endpoint,
    Peer,
    allowed_ip_of_text,
)
from wgc.errors import WireGuardError
from wgc.netlink import (
    IFINFOMSG,
    IFLA_IFNAME,
    IFLA_INFO_KIND,
    IFLA_LINKINFO,
    NETLINK_GENERIC,
    NETLINK_ROUTE,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR,
    RTM_GETLINK,
    RTM_NEWLINK,
    Message,
    NetlinkSocket,
    attributes,
    messages,
    nlmsg_errno,
)
from wgc.paths import IFNAMSIZ

GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2


# include/uapi/linux/wireguard.h
WG_GENL_NAME = "wireguard"
WG_GENL_VERSION = 1
WG_CMD_GET_DEVICE = 0
WG_CMD_SET_DEVICE = 1
WGDEVICE_F_REPLACE_PEERS = 1
WGDEVICE_A_IFINDEX = 1
WGDEVICE_A_IFNAME = 2
WGDEVICE_A_PRIVATE_KEY = 3
WGDEVICE_A_PUBLIC_KEY = 4
WGDEVICE_A_FLAGS = 5
WGDEVICE_A_LISTEN_PORT = 6
WGDEVICE_A_FWMARK = 7
WGDEVICE_A_PEERS = 8
WGPEER_F_REMOVE_ME = 1
WGPEER_F_REPLACE_ALLOWEDIPS = 2
WGPEER_F_UPDATE_ONLY = 4
WGPEER_A_PUBLIC_KEY = 1
WGPEER_A_PRESHARED_KEY = 2
WGPEER_A_FLAGS = 3
WGPEER_A_ENDPOINT = 4
WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL = 5
WGPEER_A_LAST_HANDSHAKE_TIME = 6
WGPEER_A_RX_BYTES = 7
WGPEER_A_TX_BYTES = 8
WGPEER_A_ALLOWEDIPS = 9
WGPEER_A_PROTOCOL_VERSION = 10
WGALLOWEDIP_A_FAMILY = 1
WGALLOWEDIP_A_IPADDR = 2
WGALLOWEDIP_A_CIDR_MASK = 3

GENLMSGHDR = struct.Struct("=BBH")


def buffer_size() -> int:
    """libmnl's ideal socket buffer: the page size, at most 8192 bytes."""
    return min(os.sysconf("SC_PAGESIZE"), 8192)


def _genl_header(cmd: int, version: int = WG_GENL_VERSION) -> bytes:
    return GENLMSGHDR.pack(cmd, version, 0)


def _strz(text: str) -> bytes:
    return os.fsencode(text) + b"\0"


# -- building WG_CMD_SET_DEVICE ---------------------------------------------------


def build_set_messages(family_id: int, name: str, config: DeviceConfig, replace_peers: bool,
                       seq: int = 0, limit: int | None = None) -> list[bytes]:
    """The WG_CMD_SET_DEVICE messages that apply `config`, each at most `limit` bytes."""
    limit = buffer_size() if limit is None else limit
    messages: list[bytes] = []
    peer_index = None  # the peer the next message starts with; None before the first message
    ip_index = None  # within that peer, the allowed IP to start with; None: its attributes first
    peers = config.peers
    while True:
        msg = Message(family_id, NLM_F_REQUEST | NLM_F_ACK, seq + len(messages), limit,
                      _genl_header(WG_CMD_SET_DEVICE))
        msg.put(WGDEVICE_A_IFNAME, _strz(name))
        if peer_index is None:
            if config.private_key is not None:
                msg.put(WGDEVICE_A_PRIVATE_KEY, config.private_key)
            if config.listen_port is not None:
                msg.put(WGDEVICE_A_LISTEN_PORT, struct.pack("=H", config.listen_port))
            if config.fwmark is not None:
                msg.put(WGDEVICE_A_FWMARK, struct.pack("=I", config.fwmark))
            if replace_peers:
                msg.put(WGDEVICE_A_FLAGS, struct.pack("=I", WGDEVICE_F_REPLACE_PEERS))
            peer_index = 0
        if not peers:
            messages.append(msg.finish())
            return messages
        started_at = (peer_index, ip_index)
        peers_nest = msg.nest_start(WGDEVICE_A_PEERS)
        while peer_index < len(peers):
            done, ip_index = _put_peer(msg, peers[peer_index], ip_index)
            if not done:
                break
            peer_index += 1
        msg.nest_end(peers_nest)
        messages.append(msg.finish())
        if peer_index == len(peers):
            return messages
        if (peer_index, ip_index) == started_at and len(messages) > 1:
            raise WireGuardError(errno.EMSGSIZE, f"{name}: a peer does not fit in a {limit}-byte message")


def _put_peer(msg: Message, peer, ip_index: int | None) -> tuple[bool, int | None]:
    """Adds what fits of one peer.  Returns (whole peer added, allowed IP to
    resume from in the next message, or None to resend the peer whole)."""
    peer_nest = msg.nest_start_check(0)
    if peer_nest is None:
        return False, ip_index
    if not msg.put_check(WGPEER_A_PUBLIC_KEY, peer.public_key):
        msg.nest_cancel(peer_nest)
        return False, ip_index
    # REMOVE_ME and UPDATE_ONLY go in every message naming the peer (a later
    # message without UPDATE_ONLY would create the peer the first one did not);
    # REPLACE_ALLOWEDIPS only in the first, or it would drop what came before.
    flags = (WGPEER_F_REMOVE_ME if peer.remove else 0) | (WGPEER_F_UPDATE_ONLY if peer.update_only else 0)
    if ip_index is None:
        if peer.replace_allowed_ips:
            flags |= WGPEER_F_REPLACE_ALLOWEDIPS
        fitted = ((peer.preshared_key is None or msg.put_check(WGPEER_A_PRESHARED_KEY, peer.preshared_key))
                  and (peer.endpoint is None or msg.put_check(WGPEER_A_ENDPOINT, peer.endpoint.to_bytes()))
                  and (peer.persistent_keepalive_interval is None
                       or msg.put_check(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL,
                                        struct.pack("=H", peer.persistent_keepalive_interval))))
        if not fitted:
            msg.nest_cancel(peer_nest)
            return False, ip_index
    if flags and not msg.put_check(WGPEER_A_FLAGS, struct.pack("=I", flags)):
        msg.nest_cancel(peer_nest)
        return False, ip_index
    if peer.allowed_ips:
        if ip_index is None:
            ip_index = 0
        ips_nest = msg.nest_start_check(WGPEER_A_ALLOWEDIPS)
        if ips_nest is None:
            msg.nest_end(peer_nest)
            return False, ip_index
        while ip_index < len(peer.allowed_ips):
            ip = peer.allowed_ips[ip_index]
            ip_nest = msg.nest_start_check(0)
            if ip_nest is None:
                break
            if not (msg.put_check(WGALLOWEDIP_A_FAMILY, struct.pack("=H", ip.family))
                    and msg.put_check(WGALLOWEDIP_A_IPADDR, ip.address.packed)
                    and msg.put_check(WGALLOWEDIP_A_CIDR_MASK, struct.pack("=B", ip.cidr))):
                msg.nest_cancel(ip_nest)
                break
            msg.nest_end(ip_nest)
            ip_index += 1
        msg.nest_end(ips_nest)
        if ip_index < len(peer.allowed_ips):
            msg.nest_end(peer_nest)
            return False, ip_index
    msg.nest_end(peer_nest)
    return True, None


# -- parsing ------------------------------------------------------------------------


def _u(payload: bytes, fmt: str) -> int:
    """The unsigned number at the start of payload (which the caller checked is long enough)."""
    value: int = struct.unpack_from(fmt, payload)[0]
    return value


def parse_device_message(device: Device, body: bytes) -> None:
    """Adds one WG_CMD_GET_DEVICE dump message (after its netlink header) to device."""
    for attr_type, payload in attributes(body, GENLMSGHDR.size):
        if attr_type == WGDEVICE_A_IFINDEX and len(payload) >= 4:
            device.ifindex = _u(payload, "=I")
        elif attr_type == WGDEVICE_A_IFNAME:
            device.name = os.fsdecode(payload.split(b"\0", 1)[0])
        elif attr_type == WGDEVICE_A_PRIVATE_KEY and len(payload) == 32:
            device.private_key = payload
        elif attr_type == WGDEVICE_A_PUBLIC_KEY and len(payload) == 32:
            device.public_key = payload
        elif attr_type == WGDEVICE_A_LISTEN_PORT and len(payload) >= 2:
            device.listen_port = _u(payload, "=H")
        elif attr_type == WGDEVICE_A_FWMARK and len(payload) >= 4:
            device.fwmark = _u(payload, "=I")
        elif attr_type == WGDEVICE_A_PEERS:
            for _, peer_payload in attributes(payload):
                peer = _parse_peer(peer_payload)
                last = device.peers[-1] if device.peers else None
                if last is not None and last.public_key == peer.public_key:
                    last.allowed_ips.extend(peer.allowed_ips)  # the same peer, continued
                else:
                    device.peers.append(peer)


def _parse_peer(data: bytes) -> Peer:
    peer = Peer(public_key=b"")
    for attr_type, payload in attributes(data):
        if attr_type == WGPEER_A_PUBLIC_KEY and len(payload) == 32:
            peer.public_key = payload
        elif attr_type == WGPEER_A_PRESHARED_KEY and len(payload) == 32:
            peer.preshared_key = payload if any(payload) else None
        elif attr_type == WGPEER_A_ENDPOINT:
            peer.endpoint = Endpoint.from_bytes(payload)
        elif attr_type == WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL and len(payload) >= 2:
            peer.persistent_keepalive_interval = _u(payload, "=H")
        elif attr_type == WGPEER_A_LAST_HANDSHAKE_TIME and len(payload) == 16:
            peer.last_handshake_time_sec, peer.last_handshake_time_nsec = struct.unpack("=qq", payload)
        elif attr_type == WGPEER_A_RX_BYTES and len(payload) >= 8:
            peer.rx_bytes = _u(payload, "=Q")
        elif attr_type == WGPEER_A_TX_BYTES and len(payload) >= 8:
            peer.tx_bytes = _u(payload, "=Q")
        elif attr_type == WGPEER_A_PROTOCOL_VERSION and len(payload) >= 4:
            peer.protocol_version = _u(payload, "=I")
        elif attr_type == WGPEER_A_ALLOWEDIPS:
            for _, ip_payload in attributes(payload):
                peer.allowed_ips.append(_parse_allowed_ip(ip_payload))
    if len(peer.public_key) != 32:
        raise WireGuardError(errno.EPROTO, "a peer without a public key in the kernel's answer")
    return peer


_ADDRESS_SIZES: dict[int, int] = {_socket.AF_INET: 4, _socket.AF_INET6: 16}


def _parse_allowed_ip(data: bytes) -> AllowedIP:
    family: int = _socket.AF_UNSPEC
    address = cidr = None
    for attr_type, payload in attributes(data):
        if attr_type == WGALLOWEDIP_A_FAMILY and len(payload) >= 2:
            family = _u(payload, "=H")
        elif attr_type == WGALLOWEDIP_A_IPADDR and len(payload) in (4, 16):
            address = payload
        elif attr_type == WGALLOWEDIP_A_CIDR_MASK and len(payload) >= 1:
            cidr = payload[0]
    expected = _ADDRESS_SIZES.get(family)
    if expected is None or address is None or len(address) != expected or cidr is None or cidr > expected * 8:
        raise WireGuardError(errno.EPROTO, "a malformed allowed IP in the kernel's answer")
    return allowed_ip_of_text(f"{_socket.inet_ntop(family, address)}/{cidr}")


def parse_get_answer(name: str, datagrams: list[bytes], seq: int) -> Device:
    """The device in the datagrams answering a WG_CMD_GET_DEVICE dump."""
    device = Device(name=name, kind="kernel")
    for data in datagrams:
        for msg_type, _flags, msg_seq, body in messages(data):
            if msg_seq != seq:
                continue
            if msg_type == NLMSG_DONE:
                return device
            if msg_type == NLMSG_ERROR:
                code = nlmsg_errno(body)
                if code == errno.ENODEV:
                    raise WireGuardError(code, f"{name}: no such WireGuard interface")
                if code:
                    raise WireGuardError(code, f"{name}: the kernel refused to show the device")
                continue
            parse_device_message(device, body)
    raise WireGuardError(errno.EPROTO, f"{name}: the kernel's answer ended early")


# -- sockets ------------------------------------------------------------------------


def _family_id(nl: NetlinkSocket) -> int:
    seq = nl.next_seq()
    msg = Message(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, seq, 1 << 16, _genl_header(CTRL_CMD_GETFAMILY, 1))
    msg.put(CTRL_ATTR_FAMILY_NAME, _strz(WG_GENL_NAME))
    nl.send(msg.finish())
    family = None
    while True:
        for msg_type, _flags, msg_seq, body in messages(nl.recv()):
            if msg_seq != seq:
                continue
            if msg_type == NLMSG_ERROR:
                code = nlmsg_errno(body)
                if code == errno.ENOENT:
                    # No WireGuard module: wg(8) says "Protocol not supported".
                    raise WireGuardError(
                        errno.EPROTONOSUPPORT, "the kernel has no WireGuard (no genl family 'wireguard')"
                    )
                if code:
                    raise WireGuardError(code, "generic netlink family lookup failed")
                if family is None:
                    raise WireGuardError(errno.EPROTONOSUPPORT, "no genl family 'wireguard'")
                return family
            if msg_type == GENL_ID_CTRL:
                for attr_type, payload in attributes(body, GENLMSGHDR.size):
                    if attr_type == CTRL_ATTR_FAMILY_ID and len(payload) >= 2:
                        family = _u(payload, "=H")


def get_device(name: str) -> Device:
    with NetlinkSocket(NETLINK_GENERIC) as nl:
        family = _family_id(nl)  # first, as wg(8): without the module that is the error shown
        if len(os.fsencode(name)) >= IFNAMSIZ:
            raise WireGuardError(errno.ENAMETOOLONG, f"{name}: interface name too long")
        seq = nl.next_seq()
        msg = Message(family, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP, seq, 1 << 16, _genl_header(WG_CMD_GET_DEVICE))
        msg.put(WGDEVICE_A_IFNAME, _strz(name))
        nl.send(msg.finish())
        return parse_get_answer(name, nl.dump(seq), seq)


def set_device(name: str, config: DeviceConfig, replace_peers: bool) -> None:
    with NetlinkSocket(NETLINK_GENERIC) as nl:
        family = _family_id(nl)
        for message in build_set_messages(family, name, config, replace_peers, seq=nl.next_seq()):
            seq = NLMSGHDR.unpack_from(message)[3]
            nl.seq = seq
            nl.send(message)
            code = nl.ack(seq)
            if code == errno.ENODEV:
                raise WireGuardError(code, f"{name}: no such WireGuard interface")
            if code:
                raise WireGuardError(code, f"{name}: the kernel refused the configuration")


def parse_links(datagrams: list[bytes], seq: int) -> list[tuple[str, str | None]]:
    """(name, kind or None) of each link in an RTM_GETLINK dump answer."""
    links = []
    for data in datagrams:
        for msg_type, _flags, msg_seq, body in messages(data):
            if msg_seq != seq or msg_type != RTM_NEWLINK:
                continue
            name, kind = None, None
            for attr_type, payload in attributes(body, IFINFOMSG.size):
                if attr_type == IFLA_IFNAME:
                    name = os.fsdecode(payload.split(b"\0", 1)[0])
                elif attr_type == IFLA_LINKINFO:
                    for info_type, info in attributes(payload):
                        if info_type == IFLA_INFO_KIND:
                            kind = os.fsdecode(info.split(b"\0", 1)[0])
            if name is not None:
                links.append((name, kind))
    return links


def links() -> list[tuple[str, str | None]]:
    """(name, kind) of every link in this network namespace, in the kernel's order."""
    with NetlinkSocket(NETLINK_ROUTE) as nl:
        seq = nl.next_seq()
        msg = Message(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP, seq, 1 << 16,
                      IFINFOMSG.pack(_socket.AF_UNSPEC, 0, 0, 0, 0))
        nl.send(msg.finish())
        datagrams = nl.dump(seq)
    for data in datagrams:
        for msg_type, _flags, msg_seq, body in messages(data):
            if msg_seq == seq and msg_type == NLMSG_ERROR and nlmsg_errno(body):
                code = nlmsg_errno(body)
                if code != errno.EINTR:  # a dump interrupted by a change: keep what came, as wg(8)
                    raise WireGuardError(code, "cannot list network interfaces")
    return parse_links(datagrams, seq)


def device_names() -> list[str]:
    """Kernel links of kind wireguard, in the order the kernel lists them."""
    return [name for name, kind in links() if kind == WG_GENL_NAME]
