"""wgc.control's AllowedIP as its users see it, however it was made.

The UAPI and config-file readers make AllowedIPs from text (to read a million
quickly); these must be indistinguishable from ones made from an address:
equal, same hash, same repr and fields, frozen, pickled and copied alike.
"""
import copy
import dataclasses
import errno
import ipaddress
import pickle
import socket

import pytest

from wgc.control.config import Parser, PeerDraft
from wgc.control.model import AllowedIP
from wgc.control.userspace import parse_get

PEER_HEX = "11" * 32

# (as a device or a file spells it, as wg(8) prints it)
SPELLINGS = [
    ("10.1.2.3/32", "10.1.2.3/32"),
    ("10.1.2.3/8", "10.1.2.3/8"),
    ("0.0.0.0/0", "0.0.0.0/0"),
    ("fd00:0::0/128", "fd00::/128"),
    ("FD00::1/64", "fd00::1/64"),
    ("::ffff:1.2.3.4/128", "::ffff:1.2.3.4/128"),
    ("::ffff:102:304/96", "::ffff:1.2.3.4/96"),
    ("::1.2.3.4/128", "::1.2.3.4/128"),
    ("10.0.0.0/08", "10.0.0.0/8"),
]


def from_reply(text: str) -> AllowedIP:
    reply = f"public_key={PEER_HEX}\nallowed_ip={text}\nerrno=0\n\n".encode()
    (allowed,) = parse_get("x", reply).peers[0].allowed_ips
    return allowed


def from_file(text: str) -> AllowedIP:
    peer = PeerDraft()
    errors: list[str] = []
    assert Parser(errors.append).allowed_ips(peer, text)
    (allowed,) = peer.allowed_ips
    return allowed


@pytest.mark.parametrize("made", [from_reply, from_file])
@pytest.mark.parametrize("spelled, printed", SPELLINGS)
def test_an_allowed_ip_read_from_text_is_one_made_from_its_address(made, spelled, printed):
    address_text, _, cidr = printed.partition("/")
    reference = AllowedIP(ipaddress.ip_address(address_text), int(cidr))
    read = made(spelled)
    assert str(read) == str(reference) == printed
    assert read == reference and hash(read) == hash(reference)
    family = socket.AF_INET6 if ":" in address_text else socket.AF_INET
    assert (read.cidr, read.family) == (reference.cidr, reference.family) == (int(cidr), family)
    assert read.address == reference.address and type(read.address) is type(reference.address)
    assert read.network == reference.network
    assert repr(read) == repr(reference)
    assert dataclasses.asdict(read) == {"address": reference.address, "cidr": reference.cidr}
    assert dataclasses.replace(read, cidr=0) == AllowedIP(reference.address, 0)
    assert pickle.loads(pickle.dumps(read)) == reference
    assert copy.deepcopy(read) == reference
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.cidr = 1


def test_equality_is_address_and_prefix():
    four = AllowedIP.parse("1.2.3.4/32")
    assert four != AllowedIP.parse("1.2.3.4/31")
    assert four != AllowedIP.parse("1.2.3.5/32")
    assert four != AllowedIP.parse("::ffff:1.2.3.4/32")
    assert four != "1.2.3.4/32"
    assert len({four, from_reply("1.2.3.4/32"), from_file("1.2.3.4/32")}) == 1
    assert [field.name for field in dataclasses.fields(AllowedIP)] == ["address", "cidr"]
    assert AllowedIP("fd00::1", 64).family == socket.AF_INET6


@pytest.mark.parametrize("spelled", ["1.2.3.4/33", "fd00::/129", "1.2.3.4/-1", "1.2.3.4/", "1.2.3.4",
                                     "01.2.3.4/32", "1.2.3/24", "1.2.3.4/3x"])
def test_a_bad_allowed_ip_in_a_reply_is_a_protocol_error(spelled):
    with pytest.raises(OSError) as raised:
        from_reply(spelled)
    assert raised.value.errno == errno.EPROTO


K2_HEX = "22" * 32


@pytest.mark.parametrize("nul", ["", "future_key=a\0b\n"])  # a NUL anywhere: read line by line
def test_runs_of_allowed_ips_in_a_reply(nul):
    """Runs of allowed_ip lines between other lines, in two peers, one of them
    IPv6 (read one by one); lines before the first peer and after the blank
    line count for nothing."""
    reply = (f"allowed_ip=9.9.9.9/32\nlisten_port=7\n{nul}public_key={PEER_HEX}\nallowed_ip=10.0.0.1/32\n"
             f"allowed_ip=10.0.0.2/31\nrx_bytes=5\nallowed_ip=10.0.0.3/32\npublic_key={K2_HEX}\n"
             f"allowed_ip=fd00::1/128\nallowed_ip=10.0.0.4/32\nerrno=0\n\nallowed_ip=10.0.0.5/32\n")
    device = parse_get("x", reply.encode())
    assert device.listen_port == 7 and device.peers[0].rx_bytes == 5
    assert [[str(ip) for ip in peer.allowed_ips] for peer in device.peers] == [
        ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.3/32"], ["fd00::1/128", "10.0.0.4/32"]]


@pytest.mark.parametrize("lines", [
    ["allowed_ip=10.0.0.1/32", "allowed_ip="],
    ["allowed_ip=", "allowed_ip=10.0.0.1/32"],
    ["allowed_ip=10.0.0.1/32", "allowed_ip=10.0.0.1", "allowed_ip=10.0.0.2/32"],
    ["rx_bytes=1", "allowed_ip=10.0.0.1/32\0"],
    ["rx_bytes=1", "allowed_ip="],
])
def test_a_bad_value_in_a_run_is_a_protocol_error(lines):
    reply = "\n".join([f"public_key={PEER_HEX}", *lines, "errno=0", "", ""])
    with pytest.raises(OSError) as raised:
        parse_get("x", reply.encode())
    assert raised.value.errno == errno.EPROTO
