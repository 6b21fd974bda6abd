"""The UAPI protocol against a real sans-I/O Device.

The expected values in these tables were taken from Debian's wireguard-go
v0.0.20220316 (the binary, not its documentation); test_uapi_differential.py
compares the two directly.
"""
import base64
import errno
import ipaddress
import logging
import threading
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from netns import unique_name
from wgc import _crypto, _uapi_set, uapi
from wgc.device import Device

K1, K2, K3 = ("11" * 32, "22" * 32, "33" * 32)
PSK = bytes(range(100, 132)).hex()
ZERO = "0" * 64
ARABIC_ONE = "\u0661"  # ARABIC-INDIC DIGIT ONE: a digit to str.isdigit() and int(), not to the UAPI
PRIVATE = bytes(range(1, 33))
OWN_PUBLIC = _crypto.public_key(_crypto.clamp(PRIVATE)).hex()

EINVAL, EPROTO, EIO = -errno.EINVAL, -errno.EPROTO, -errno.EIO


def apply(device, lines) -> int:
    """uapi.handle_set on a request given as its lines (str or bytes, without line ends)."""
    return uapi.handle_set(device, b"".join((line.encode() if isinstance(line, str) else line) + b"\n"
                                            for line in lines))


def shown(device) -> str:
    """The body of a `get` reply, as text."""
    return uapi.handle_get(device).decode("ascii")


@pytest.fixture
def device():
    dev = Device(unique_name("uapi"), None, logging.getLogger("test_uapi"))
    yield dev
    dev.close()


def peer_block(key, psk=ZERO, endpoint=None, keepalive=0, allowed=()):
    """The lines `get` prints for a peer without traffic."""
    lines = [f"public_key={key}", f"preshared_key={psk}", "protocol_version=1"]
    if endpoint is not None:
        lines.append(f"endpoint={endpoint}")
    lines += [
        "last_handshake_time_sec=0",
        "last_handshake_time_nsec=0",
        "tx_bytes=0",
        "rx_bytes=0",
        f"persistent_keepalive_interval={keepalive}",
    ]
    lines += [f"allowed_ip={prefix}" for prefix in allowed]
    return "".join(line + "\n" for line in lines)


# -- parsers ------------------------------------------------------------------------

PREFIXES = [
    ("10.1.2.3/8", "10.1.2.3", 8),  # host bits are the device's to mask
    ("1.2.3.4/+8", "1.2.3.4", 8),
    ("1.2.3.4/08", "1.2.3.4", 8),
    ("1.2.3.4/-0", "1.2.3.4", 0),
    ("1.2.3.4/" + "0" * 60 + "8", "1.2.3.4", 8),
    ("0::0:0/000", "::", 0),
    ("::1.2.3.4/128", "::102:304", 128),
    ("::ffff:1.2.3.4/96", "::ffff:1.2.3.4", 96),
    ("FE80::1/64", "fe80::1", 64),
    ("1:2:3:4:5:6:1.2.3.4/128", "1:2:3:4:5:6:102:304", 128),
    ("00000000001::/16", "1::", 16),
    ("::/0", "::", 0),
]


@pytest.mark.parametrize("text,address,bits", PREFIXES)
def test_parse_prefix(text, address, bits):
    packed, cidr = uapi.parse_prefix(text)
    assert (uapi.format_addr(packed), cidr) == (address, bits)


@pytest.mark.parametrize(
    "text,reason",
    [
        ("fe80::1%eth0/64", "IPv6 zone in a prefix"),
        ("01.2.3.4/32", "malformed IPv4 address"),
        ("1.2.3.4", "no '/' in a prefix"),
        ("1.2.3.4/33", "prefix length out of range"),
        ("::/129", "prefix length out of range"),
        ("1.2.3.4/32 ", "not a decimal number"),
        (" 1.2.3.4/32", "malformed IPv4 address"),
        ("1.2.3.4/", "not a decimal number"),
        ("/8", "not an IP address"),
        ("1.2.3.4/32/", "malformed IPv4 address"),
        ("-10.0.0.0/8", "malformed IPv4 address"),  # wireguard-go v0.0.20220316 has no "-" removal
        ("1.2.3.4/0x8", "not a decimal number"),
        ("1.2.3.4/1_0", "not a decimal number"),
        ("1.2.3.4/-1", "prefix length out of range"),
        ("1.2.3.4/+", "not a decimal number"),
        ("1.2.3.4/" + "9" * 5000, "prefix length out of range"),
        ("1.2.3.4/٨", "not a decimal number"),
        ("::ffff:01.2.3.4/128", "malformed IPv4 address"),
        ("1::2::3/64", "two '::' in an IPv6 address"),
        (":::/64", "empty IPv6 group"),
        ("1:/64", "malformed IPv6 address"),
        (":1/64", "empty IPv6 group"),
        ("::%/64", "empty IPv6 zone"),
        ("1.2.3.4%x/32", "malformed IPv4 address"),
        ("1:2:3:4:5:6:7::8/128", "'::' stands for no group"),
        ("1:2:3:4:5:6:7:8:9/128", "trailing characters after an IPv6 address"),
        ("::1.2.3.4.5/128", "malformed IPv4 address"),
        ("1:2:3:4:5:6:7:1.2.3.4/128", "misplaced IPv4 part in an IPv6 address"),
        ("::12345/128", "IPv6 group above 0xffff"),
        ("::fffff/128", "IPv6 group above 0xffff"),
        ("1.2.3/32", "malformed IPv4 address"),
        ("1.2.3.4.5/32", "malformed IPv4 address"),
        ("256.1.1.1/32", "malformed IPv4 address"),
        ("1..2.3/32", "malformed IPv4 address"),
        ("::ffff:1.2.3/128", "malformed IPv4 address"),
        ("::ffff:1.2.3.4%lo/128", "IPv6 zone in a prefix"),
        ("::10000/128", "IPv6 group above 0xffff"),
        ("1::2:3:4:5:6:7:1.2.3.4/128", "misplaced IPv4 part in an IPv6 address"),
        ("%lo/8", "not an IP address"),
        ("1:2:3/64", "IPv6 address too short"),
    ],
)
def test_parse_prefix_refuses(text, reason):
    """Refused with EINVAL and the reason, which the device logs."""
    with pytest.raises(uapi.UAPIError) as refused:
        uapi.parse_prefix(text)
    assert refused.value.errno == EINVAL
    assert str(refused.value) == reason  # the log says why


ENDPOINTS = [
    ("1.2.3.4:5", "1.2.3.4", 5, "1.2.3.4:5"),
    ("1.2.3.4:0", "1.2.3.4", 0, "1.2.3.4:0"),
    ("1.2.3.4:05", "1.2.3.4", 5, "1.2.3.4:5"),
    ("0.0.0.0:20", "0.0.0.0", 20, "0.0.0.0:20"),
    ("[::1]:5", "::1", 5, "[::1]:5"),
    ("[fe80::1%lo]:6", "fe80::1%1", 6, "[fe80::1]:6"),
    ("[fe80::1%7]:7", "fe80::1%7", 7, "[fe80::1]:7"),
    ("[fe80::1%0]:7", "fe80::1", 7, "[fe80::1]:7"),
    ("[2001:db8::1%4294967295]:16", "2001:db8::1%4294967295", 16, "[2001:db8::1]:16"),
    ("[::ffff:1.2.3.4]:9", "::ffff:1.2.3.4", 9, "[::ffff:1.2.3.4]:9"),
    ("[FE80::ABCD]:10", "fe80::abcd", 10, "[fe80::abcd]:10"),
    ("[::1.2.3.4]:11", "::102:304", 11, "[::102:304]:11"),
    ("[0:0:0:0:0:0:0:0]:12", "::", 12, "[::]:12"),
    ("[1:0:0:1:0:0:0:1]:13", "1:0:0:1::1", 13, "[1:0:0:1::1]:13"),
    ("[1:0:1:0:1:0:1:0]:14", "1:0:1:0:1:0:1:0", 14, "[1:0:1:0:1:0:1:0]:14"),
    ("[0001:0002::]:15", "1:2::", 15, "[1:2::]:15"),
]


@pytest.mark.parametrize("text,host,port,shown", ENDPOINTS)
def test_parse_endpoint(text, host, port, shown):
    assert uapi.parse_endpoint(text) == (host, port)
    assert uapi.format_endpoint(host, port) == shown


@pytest.mark.parametrize(
    "text,reason",
    [
        ("1.2.3.4:65536", "number out of range for 16 bits"),
        ("1.2.3.4:+5", "not a decimal number"),
        ("1.2.3.4:5 ", "not a decimal number"),
        ("::1:5", "brackets go around IPv6 addresses only"),
        ("[1.2.3.4]:5", "brackets go around IPv6 addresses only"),
        ("[fe80::1%no-such-interface]:8", "not a decimal number"),
        ("[fe80::1%99999999999]:8", "number out of range for 32 bits"),
        ("[2001:db8::1%4294967296]:17", "number out of range for 32 bits"),
        ("[fe80::1%]:5", "empty IPv6 zone"),
        ("host:5", "not an IP address"),
        ("[::1]:", "not an ip:port"),
        (":5", "not an ip:port"),
        ("1.2.3.4", "not an ip:port"),
        ("[::1]5", "missing ']' after an IPv6 address"),
        ("[:5", "missing ']' after an IPv6 address"),
        ("1.2.3.4%lo:5", "malformed IPv4 address"),
        ("1.2.3.4:", "not an ip:port"),
        ("[1::2:5", "missing ']' after an IPv6 address"),
        ("[]:1", "not an IP address"),
    ],
)
def test_parse_endpoint_refuses(text, reason):
    """Refused with EINVAL and the reason, which the device logs."""
    with pytest.raises(uapi.UAPIError) as refused:
        uapi.parse_endpoint(text)
    assert refused.value.errno == EINVAL
    assert str(refused.value) == reason  # the log says why


@given(st.binary(min_size=16, max_size=16))
@example(bytes.fromhex("0001" + "0000" * 2 + "0002" * 5))  # the shortest run "::" stands for
@example(bytes.fromhex("0001" + "0000" + "0002" * 6))      # one zero group stays
def test_ipv6_text_round_trips_like_rfc5952(packed):
    text = uapi.format_addr(packed)
    assert uapi.parse_addr(text) == (packed, "")
    if packed[:12] != bytes(10) + b"\xff\xff":  # Go prints these dotted, Python 3.11 does not
        assert text == ipaddress.IPv6Address(packed).compressed


@given(st.binary(min_size=4, max_size=4))
def test_ipv4_text_round_trips(packed):
    text = uapi.format_addr(packed)
    assert text == str(ipaddress.IPv4Address(packed))
    assert uapi.parse_addr(text) == (packed, "")


@pytest.mark.parametrize(
    "text,bits,value",
    [("0", 16, 0), ("05", 16, 5), ("65535", 16, 65535), ("4294967295", 32, 4294967295), ("0" * 100 + "1", 16, 1)],
)
def test_parse_uint(text, bits, value):
    assert uapi.parse_uint(text, bits) == value


@pytest.mark.parametrize(
    "text,bits",
    [("65536", 16), ("+5", 16), ("-0", 16), (" 5", 16), ("0x10", 16), ("", 16), ("1_0", 16), (ARABIC_ONE, 16),
     ("4294967296", 32)],
)
def test_parse_uint_refuses(text, bits):
    with pytest.raises(uapi.UAPIError):
        uapi.parse_uint(text, bits)


def test_parse_key_takes_either_case():
    assert uapi.parse_key("Ab" * 32) == b"\xab" * 32
    for bad in ("a" * 63, "a" * 65, "g" * 64, " " + "a" * 63, "a" * 62 + " a", ""):
        with pytest.raises(uapi.UAPIError):
            uapi.parse_key(bad)


# -- set and get on a device ----------------------------------------------------------


def test_fresh_device_gets_nothing(device):
    assert shown(device) == ""


# (name, request lines, errno, the `get` that follows)
SET_CASES = [
    ("private key clamped, upper case", [f"private_key={'F' * 64}"], 0, f"private_key=f8{'f' * 60}7f\n"),
    ("private key cleared", [f"private_key={PRIVATE.hex()}", f"private_key={ZERO}"], 0, ""),
    ("listen port with leading zero", ["listen_port=05"], 0, "listen_port=5\n"),
    ("listen port 65535", ["listen_port=65535"], 0, "listen_port=65535\n"),
    ("listen port 0 is omitted", ["listen_port=9", "listen_port=0"], 0, ""),
    ("fwmark is decimal", ["fwmark=010"], 0, "fwmark=10\n"),
    ("fwmark is a u32", ["fwmark=4294967295"], 0, "fwmark=4294967295\n"),
    ("fwmark 0 clears", ["fwmark=7", "fwmark=0"], 0, ""),
    (
        "device keys in order",
        ["fwmark=3", "listen_port=4", f"private_key={'F' * 64}"],
        0,
        f"private_key=f8{'f' * 60}7f\nlisten_port=4\nfwmark=3\n",
    ),
    ("stops at the blank line", ["fwmark=1", "", "fwmark=2"], 0, "fwmark=1\n"),
    # One CR before the line end goes (as Go's bufio.ScanLines drops it); a second one stays.
    ("CR is part of the value", ["fwmark=4\r\r"], EINVAL, ""),
    # malformed device lines: every one refused, the ones before it applied
    ("listen port with sign", ["listen_port=+5"], EINVAL, ""),
    ("listen port in hex", ["listen_port=0x10"], EINVAL, ""),
    ("listen port too big", ["listen_port=65536"], EINVAL, ""),
    ("listen port empty", ["listen_port="], EINVAL, ""),
    ("listen port with space", ["listen_port= 5"], EINVAL, ""),
    ("listen port Arabic digit", [f"listen_port={ARABIC_ONE}"], EINVAL, ""),
    ("fwmark too big", ["fwmark=4294967296"], EINVAL, ""),
    ("fwmark negative", ["fwmark=-1"], EINVAL, ""),
    ("private key short", [f"private_key={'a' * 63}"], EINVAL, ""),
    ("private key long", [f"private_key={'a' * 66}"], EINVAL, ""),
    ("private key not hex", [f"private_key={'g' * 64}"], EINVAL, ""),
    ("replace_peers needs true", ["replace_peers=TRUE"], EINVAL, ""),
    ("line without =", ["listen_port"], EPROTO, ""),
    ("empty key", ["=5"], EINVAL, ""),
    ("value with =", ["listen_port=7=8"], EINVAL, ""),
    ("keys are case sensitive", ["Listen_port=7"], EINVAL, ""),
    ("peer key before a public key", ["allowed_ip=1.2.3.4/32"], EINVAL, ""),
    ("protocol_version before a public key", ["protocol_version=1"], EINVAL, ""),
    ("not transactional", ["fwmark=5", "fwmark=bogus", "fwmark=6"], EINVAL, "fwmark=5\n"),
    ("nothing after an error", ["fwmark=5", "bogus", "fwmark=6"], EPROTO, "fwmark=5\n"),
    # peers
    (
        "peer with every key",
        [
            f"public_key={K1.upper()}",
            f"preshared_key={PSK.upper()}",
            "endpoint=[2001:db8::1]:51820",
            "persistent_keepalive_interval=25",
            "allowed_ip=10.1.2.3/8",
            "allowed_ip=::1.2.3.4/128",
            "allowed_ip=192.168.1.77/24",
            "allowed_ip=FE80::1/64",
            "allowed_ip=::ffff:1.2.3.4/96",
            "protocol_version=1",
        ],
        0,
        peer_block(
            K1,
            psk=PSK,
            endpoint="[2001:db8::1]:51820",
            keepalive=25,
            allowed=["10.0.0.0/8", "::102:304/128", "192.168.1.0/24", "fe80::/64", "::ffff:0.0.0.0/96"],
        ),
    ),
    ("IPv4 endpoint", [f"public_key={K1}", "endpoint=1.2.3.4:05"], 0, peer_block(K1, endpoint="1.2.3.4:5")),
    ("scoped endpoint", [f"public_key={K1}", "endpoint=[fe80::1%lo]:6"], 0, peer_block(K1, endpoint="[fe80::1]:6")),
    ("peers in creation order", [f"public_key={K2}", f"public_key={K1}"], 0, peer_block(K2) + peer_block(K1)),
    ("device key in a peer section", [f"public_key={K1}", "listen_port=5"], EINVAL, peer_block(K1)),
    ("unknown peer key", [f"public_key={K1}", "bogus=1"], EINVAL, peer_block(K1)),
    ("public key short", [f"public_key={'a' * 63}", "allowed_ip=9.0.0.0/8"], EINVAL, ""),
    ("public key odd", [f"public_key={'a' * 62}"], EINVAL, ""),
    ("public key empty", ["public_key="], EINVAL, ""),
    ("protocol version 2", [f"public_key={K1}", "protocol_version=2"], EINVAL, peer_block(K1)),
    ("protocol version 01", [f"public_key={K1}", "protocol_version=01"], EINVAL, peer_block(K1)),
    ("keepalive too big", [f"public_key={K1}", "persistent_keepalive_interval=65536"], EINVAL, peer_block(K1)),
    ("keepalive with sign", [f"public_key={K1}", "persistent_keepalive_interval=+1"], EINVAL, peer_block(K1)),
    (
        "preshared key zero clears",
        [f"public_key={K1}", f"preshared_key={PSK}", f"preshared_key={ZERO}"],
        0,
        peer_block(K1),
    ),
    ("preshared key not hex", [f"public_key={K1}", "preshared_key=zz"], EINVAL, peer_block(K1)),
    ("endpoint without port", [f"public_key={K1}", "endpoint=1.2.3.4"], EINVAL, peer_block(K1)),
    ("endpoint host name", [f"public_key={K1}", "endpoint=host:5"], EINVAL, peer_block(K1)),
    ("allowed ip with - is malformed", [f"public_key={K1}", "allowed_ip=-10.0.0.0/8"], EINVAL, peer_block(K1)),
    ("allowed ip with zone", [f"public_key={K1}", "allowed_ip=fe80::1%lo/64"], EINVAL, peer_block(K1)),
    (
        "re-adding an allowed ip moves it last",
        [f"public_key={K1}", "allowed_ip=10.0.0.0/8", "allowed_ip=::1/128", "allowed_ip=10.0.0.0/8"],
        0,
        peer_block(K1, allowed=["::1/128", "10.0.0.0/8"]),
    ),
    (
        "allowed ips move between peers",
        [
            f"public_key={K1}",
            "allowed_ip=10.0.0.0/8",
            "allowed_ip=10.1.0.0/16",
            f"public_key={K2}",
            "allowed_ip=10.0.0.0/8",
        ],
        0,
        peer_block(K1, allowed=["10.1.0.0/16"]) + peer_block(K2, allowed=["10.0.0.0/8"]),
    ),
    (
        "replace_allowed_ips",
        [f"public_key={K1}", "allowed_ip=1.0.0.0/8", "replace_allowed_ips=true", "allowed_ip=2.0.0.0/8"],
        0,
        peer_block(K1, allowed=["2.0.0.0/8"]),
    ),
    (
        "replace_allowed_ips needs true",
        [f"public_key={K1}", "allowed_ip=1.0.0.0/8", "replace_allowed_ips=1"],
        EINVAL,
        peer_block(K1, allowed=["1.0.0.0/8"]),
    ),
    ("update_only keeps a new peer out", [f"public_key={K1}", "update_only=true", "allowed_ip=1.0.0.0/8"], 0, ""),
    ("update_only later removes the new peer", [f"public_key={K1}", "allowed_ip=1.0.0.0/8", "update_only=true"], 0, ""),
    ("update_only needs true", [f"public_key={K1}", "update_only=false"], EINVAL, peer_block(K1)),
    (
        "remove",
        [f"public_key={K1}", f"public_key={K2}", f"public_key={K1}", "remove=true", "allowed_ip=3.0.0.0/8"],
        0,
        peer_block(K2),
    ),
    ("a removed peer's lines are still checked", [f"public_key={K1}", "remove=true", "endpoint=bad"], EINVAL, ""),
    ("remove needs true", [f"public_key={K1}", "remove=yes"], EINVAL, peer_block(K1)),
    (
        "our own public key is a dummy",
        [
            f"private_key={PRIVATE.hex()}",
            f"public_key={OWN_PUBLIC}",
            "allowed_ip=4.0.0.0/8",
            "persistent_keepalive_interval=5",
        ],
        0,
        f"private_key={_crypto.clamp(PRIVATE).hex()}\n",
    ),
    (
        "the dummy's lines are still checked",
        [f"private_key={PRIVATE.hex()}", f"public_key={OWN_PUBLIC}", "endpoint=bad"],
        EINVAL,
        f"private_key={_crypto.clamp(PRIVATE).hex()}\n",
    ),
    ("with no private key, the zero key is our own", [f"public_key={ZERO}", "allowed_ip=6.0.0.0/8"], 0, ""),
]


@pytest.mark.parametrize("lines,status,state", [c[1:] for c in SET_CASES], ids=[c[0] for c in SET_CASES])
def test_set(device, lines, status, state):
    assert apply(device, lines) == status
    assert shown(device) == state


def test_set_takes_bytes(device):
    assert apply(device, [b"fwmark=7", b"listen_port=\xd9\xa1"]) == EINVAL
    assert shown(device) == "fwmark=7\n"


def test_a_new_private_key_removes_the_peer_with_its_public_key(device):
    assert apply(device, [f"public_key={OWN_PUBLIC}", f"public_key={K1}"]) == 0
    assert apply(device, [f"private_key={PRIVATE.hex()}"]) == 0
    assert shown(device) == f"private_key={_crypto.clamp(PRIVATE).hex()}\n" + peer_block(K1)


def test_replace_peers(device):
    assert apply(device, [f"public_key={K1}", f"public_key={K2}"]) == 0
    assert apply(device, ["replace_peers=true", "fwmark=1"]) == 0
    assert shown(device) == "fwmark=1\n"


def test_update_only_changes_an_existing_peer(device):
    assert apply(device, [f"public_key={K1}"]) == 0
    assert apply(device, [f"public_key={K1}", "update_only=true", "allowed_ip=3.0.0.0/8"]) == 0
    assert shown(device) == peer_block(K1, allowed=["3.0.0.0/8"])


def test_peer_limit(device, caplog):
    """wireguard-go refuses the 65537th peer with EINVAL."""
    keys = [i.to_bytes(32, "big").hex() for i in range(1, 65538)]
    assert apply(device, [f"public_key={key}" for key in keys[:65536]]) == 0
    assert apply(device, [f"public_key={keys[65536]}"]) == EINVAL
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"IPC error {EINVAL}: public_key: failed to create new peer: too many peers"]
    assert len(device.peers()) == 65536
    # An existing peer can still be changed.
    assert apply(device, [f"public_key={keys[0]}", "allowed_ip=1.0.0.0/8"]) == 0


# -- the connection -----------------------------------------------------------------


def exchange(device, data: bytes, chunk: int | None = None) -> bytes:
    """Feeds data to a fresh Session (in pieces of `chunk` bytes, or all at
    once), then the end of the stream; returns all it replied before it was done."""
    session = uapi.Session(device)
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    pieces = [p for p in pieces if p] + [b""]
    while (waiting := session.step()) is not None:
        if waiting is uapi.INPUT:
            session.feed(pieces.pop(0))
    return bytes(session.output)


GET = b"get=1\n\n"

CONNECTION_CASES = [
    ("get", GET, b"errno=0\n\n"),
    ("several requests", b"set=1\nfwmark=1\n\n" + GET + GET, b"errno=0\n\n" + b"fwmark=1\nerrno=0\n\n" * 2),
    ("get then a character", b"get=1\nx" + GET, b"errno=-22\n\nerrno=0\n\n"),
    ("get then another get", b"get=1\nget=1\n\n", b"errno=-22\n\n"),  # "et=1" is no operation
    ("get cut short", b"get=1\n", b""),
    ("get without its line end", b"get=1", b""),
    ("set without its line end", b"set=1", b""),
    ("unknown operation", b"GET=1\n\n", b""),
    ("unknown operation after a request", GET + b"set=2\n\n" + GET, b"errno=0\n\n"),
    ("operation with CR", b"get=1\r\n\r\n", b""),
    ("huge operation line", b"x" * 200000 + b"\n" + GET, b""),
    ("set lines with CRLF", b"set=1\nfwmark=7\r\n\r\n" + GET, b"errno=0\n\nfwmark=7\nerrno=0\n\n"),
    ("set operation with CRLF", b"set=1\r\nfwmark=7\r\n\r\n", b""),
    ("set ended by the stream", b"set=1\nfwmark=11", b"errno=0\n\n"),
    ("set ended by the stream after CR", b"set=1\nfwmark=12\r", b"errno=0\n\n"),
    ("set of nothing", b"set=1\n", b"errno=0\n\n"),
    ("error, then the next request", b"set=1\nbogus=1\nfwmark=9\n\n" + GET, b"errno=-22\n\nerrno=0\n\n"),
    ("missing =", b"set=1\nfwmark\n\n", b"errno=-71\n\n"),
    ("longest line", b"set=1\nx=" + b"y" * 65533 + b"\n\n" + GET, b"errno=-22\n\nerrno=0\n\n"),
    # Past 64 KiB wireguard-go's scanner fails (EIO) and the rest of the line
    # is read as an operation line: here the blank one, which closes.
    ("line too long", b"set=1\nfwmark=14\nx=" + b"y" * 65534 + b"\n\n" + GET, b"errno=-5\n\n"),
    ("line too long with CR", b"set=1\nx=" + b"y" * 65533 + b"\r\n\n", b"errno=-5\n\n"),
    ("too long at the end", b"set=1\nx=" + b"y" * 65534, b"errno=-5\n\n"),
    ("longest at the end", b"set=1\nx=" + b"y" * 65533, b"errno=-22\n\n"),
    (
        "the rest of a too long line is an operation",
        b"set=1\nx=" + b"y" * 65534 + b"get=1\n\n",
        b"errno=-5\n\nerrno=0\n\n",
    ),
]


@pytest.mark.parametrize("data,reply", [c[1:] for c in CONNECTION_CASES], ids=[c[0] for c in CONNECTION_CASES])
def test_connection(device, data, reply):
    assert exchange(device, data) == reply


def test_connection_applies_lines_before_a_too_long_one(device):
    assert exchange(device, b"set=1\nfwmark=14\nx=" + b"y" * 70000 + b"\n\n") == b"errno=-5\n\n"
    assert shown(device) == "fwmark=14\n"


def run(session) -> object:
    """Steps a Session until it waits for input (INPUT) or is done (None)."""
    while (waiting := session.step()) is uapi.ROOM:
        pass
    return waiting


def test_a_too_long_operation_closes_once_its_newline_is_in(device):
    session = uapi.Session(device)
    session.feed(GET + b"x" * (uapi.MAX_LINE + 5))
    assert run(session) is uapi.INPUT and session.output == b"errno=0\n\n"
    session.feed(b"x" * 10)
    assert run(session) is uapi.INPUT
    session.feed(b"\n" + GET)
    assert run(session) is None and session.output == b"errno=0\n\n"  # the get after it is not read


def test_what_a_session_holds_and_when_it_is_idle(device):
    """What the server counts against its memory cap, and when it may close a connection."""
    session = uapi.Session(device)
    assert (session.held(), session.idle()) == (0, True)
    session.feed(b"se")
    assert run(session) is uapi.INPUT and (session.held(), session.idle()) == (2, False)
    session.feed(b"t=1\nfwmark=1\n")
    assert run(session) is uapi.INPUT and (session.held(), session.idle()) == (len(b"fwmark=1\n"), False)
    session.feed(b"\n")
    assert run(session) is uapi.INPUT and session.output == b"errno=0\n\n"
    assert (session.held(), session.idle()) == (0, False)  # the reply is not sent yet
    session.output.clear()
    assert session.idle()


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(1, 4096), min_size=1, max_size=4))
def test_replies_do_not_depend_on_how_the_bytes_arrive(cuts):
    """A Session fed in pieces of any size answers as when fed at once."""
    data = (b"set=1\nfwmark=7\r\n\r\n" + GET + b"get=1\nx" + b"set=1\nbogus=1\nfwmark=9\n\n"
            + b"set=1\nx=" + b"y" * 65534 + b"get=1\n\n" + b"set=1\nfwmark\n\n" + GET + b"GET=1\n\n" + GET)
    replies = []
    for chunk in [None] + cuts:
        dev = Device(unique_name("uapi"), None, logging.getLogger("test_uapi"))
        try:
            replies.append(exchange(dev, data, chunk))
        finally:
            dev.close()
    assert replies[0] == (b"errno=0\n\nfwmark=7\nerrno=0\n\n" + b"errno=-22\n\n" * 2
                          + b"errno=-5\n\nfwmark=7\nerrno=0\n\n" + b"errno=-71\n\nfwmark=7\nerrno=0\n\n")
    assert replies.count(replies[0]) == len(replies)


class WatchedLock:
    """A lock that says when a thread has come to take it."""

    def __init__(self, lock):
        self._lock = lock
        self.wanted = threading.Event()

    def __enter__(self):
        self.wanted.set()
        return self._lock.__enter__()

    def __exit__(self, *exc):
        return self._lock.__exit__(*exc)


def test_set_holds_the_device_lock(device):
    """A set waits for the device lock, so it never runs beside the control loop."""
    session = uapi.Session(device)
    session.feed(b"set=1\nfwmark=3\n\n")
    worker = threading.Thread(target=session.step)
    lock = device.lock
    device.lock = WatchedLock(lock)
    with lock:
        worker.start()
        assert device.lock.wanted.wait(10), "the set never asked for the device lock"
        # It has come to the lock, which this thread holds: nothing may be applied yet.
        assert device.fwmark == 0
    worker.join(10)
    assert session.output == b"errno=0\n\n"
    assert device.fwmark == 3


# -- the compiled set path (wgc._uapi_set) ------------------------------------------------

_PREFIX_ALPHABET = "0123456789abcdefABCDEF:./%+- x"


def _prefix_texts():
    """Prefixes as wg(8) writes them, the same bent (leading zeros, long
    groups, zones, signs, dotted tails), and noise of their characters."""
    v4 = st.builds(lambda a, n: f"{ipaddress.IPv4Address(a)}/{n}", st.integers(0, 2**32 - 1), st.integers(0, 40))
    v6 = st.builds(lambda a, n: f"{ipaddress.IPv6Address(a)}/{n}", st.integers(0, 2**128 - 1), st.integers(0, 140))
    zeros = st.builds(lambda g, n: ":".join(f"{x:x}" for x in g) + f"/{n}",
                      st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF]), min_size=1, max_size=9), st.integers(0, 128))
    bent = st.builds(lambda text, i, extra: text[:i] + extra + text[i:], st.one_of(v4, v6), st.integers(0, 40),
                     st.sampled_from(["0", "00", ":", "::", ".", "%1", "+", "f"]))
    return st.one_of(v4, v6, zeros, bent, st.text(_PREFIX_ALPHABET, max_size=45))


@settings(max_examples=3000, deadline=None)
@given(text=_prefix_texts())
@example(text="::/0")
@example(text="1::/128")
@example(text="::ffff:1.2.3.4/128")
@example(text="01.2.3.4/32")
@example(text="1:2:3:4:5:6:7::8/128")
def test_the_compiled_prefix_parser_reads_as_the_python_one(text):
    """_uapi_set parses a prefix only when uapi.parse_prefix (Go's netip rules)
    reads it the same way; everything else it hands over."""
    record = _uapi_set.parse_prefix_record(text.encode())
    try:
        expected = uapi.parse_prefix(text)
    except uapi.UAPIError:
        expected = None
    if record is not None:
        size = record[0]
        assert expected == (record[2 : 2 + size], record[1]) and not any(record[2 + size :])


@pytest.mark.parametrize("text", ["10.20.30.40/32", "0.0.0.0/0", "fd00::1/128", "2001:db8:0:1::/64", "::/0",
                                  "FD00:AB::/32", "255.255.255.255/8"])
def test_the_compiled_parser_takes_what_wg_writes(text):
    assert _uapi_set.parse_prefix_record(text.encode()) is not None


def test_allowed_ips_keep_their_order_across_batches_and_handed_over_lines(device):
    """Prefixes parsed in C and the ones handed to Python (a sign, a zone-free
    dotted IPv6 tail) reach the peer in the request's order, past a batch's end."""
    prefixes = [f"10.{i >> 8}.{i & 255}.0/24" for i in range(2500)]
    prefixes[700] = "::ffff:1.2.3.4/128"
    prefixes[1024] = "1.2.3.4/+32"
    prefixes[1025] = "fd00::7/128"
    assert apply(device, [f"public_key={K1}", *(f"allowed_ip={p}" for p in prefixes)]) == 0
    shown_prefixes = [line.removeprefix("allowed_ip=") for line in shown(device).splitlines()
                      if line.startswith("allowed_ip=")]
    expected = [str(ipaddress.ip_network(p.replace("+", ""), strict=False)) for p in prefixes]
    expected[700] = "::ffff:1.2.3.4/128"  # Go prints a mapped address dotted
    assert shown_prefixes == expected


def test_a_refused_prefix_keeps_the_ones_before_it(device):
    """Not transactional, as wireguard-go: the prefixes before a refused line
    are in (a batch parsed in C is added before the refusal), none after."""
    good = [f"10.0.{i >> 8}.{i & 255}/32" for i in range(1500)]
    lines = [f"public_key={K1}", *(f"allowed_ip={p}" for p in good),
             "allowed_ip=10.0.0.300/32", "allowed_ip=9.9.9.9/32"]
    assert apply(device, lines) == EINVAL
    assert shown(device) == peer_block(K1, allowed=good)


def test_allowed_ips_of_a_peer_that_is_not_kept_are_checked_and_dropped(device):
    """update_only for an unknown peer: its prefixes are parsed (and refused
    when malformed), then go nowhere."""
    assert apply(device, [f"public_key={K1}", "update_only=true",
                          *(f"allowed_ip=10.{i >> 8}.{i & 255}.0/24" for i in range(2000))]) == 0
    assert shown(device) == ""
    assert apply(device, [f"public_key={K1}", "update_only=true", "allowed_ip=10.0.0.0/24", "allowed_ip=x"]) == EINVAL


def test_hundred_thousand_allowed_ips(device):
    """wg(8) sends a whole configuration in one request; 100,000 allowed IPs apply
    within the exchange's timeout, reading and parsing included.  The time is
    printed, not asserted: a loaded machine is no failure."""
    prefixes = [f"10.{i >> 8 & 0xFF}.{i & 0xFF}.0/24" for i in range(65536)]
    prefixes += [f"fd00::{i:x}:0/112" for i in range(1, 100001 - 65536)]
    request = f"set=1\npublic_key={K1}\n" + "".join(f"allowed_ip={p}\n" for p in prefixes) + "\n"
    started = time.monotonic()
    assert exchange(device, request.encode()) == b"errno=0\n\n"
    elapsed = time.monotonic() - started
    print(f"100,000 allowed IPs applied in {elapsed:.2f} s")
    assert shown(device) == peer_block(K1, allowed=prefixes)


# -- size cap and logs --------------------------------------------------------------


def test_a_request_past_the_cap_holds_nothing_while_the_rest_is_dropped(device, monkeypatch):
    monkeypatch.setattr(uapi, "MAX_REQUEST", 100)
    session = uapi.Session(device)
    session.feed(b"set=1\n" + b"replace_peers=true\n" * 6)
    assert run(session) is uapi.INPUT and session.held() == 0
    session.feed(b"\n")
    assert run(session) is uapi.INPUT and session.output == f"errno={uapi.ERRNO_TOO_BIG}\n\n".encode()


def test_a_set_bigger_than_the_cap_is_refused_whole(device, monkeypatch):
    monkeypatch.setattr(uapi, "MAX_REQUEST", 100)
    at_cap = b"set=1\nfwmark=5\n" + b"replace_peers=true\n" * 4 + b"x" * 14 + b"\n\n"  # 100 bytes of lines
    over = b"set=1\nfwmark=6\n" + b"replace_peers=true\n" * 5 + b"\n"
    assert exchange(device, over + GET + at_cap + GET) == (
        f"errno={uapi.ERRNO_TOO_BIG}\n\n".encode() + b"errno=0\n\n" + b"errno=-71\n\n" + b"fwmark=5\nerrno=0\n\n")


@pytest.mark.parametrize(
    "lines,reason",
    [
        (["replace_peers=false"], "replace_peers: takes only 'true'"),
        ([f"public_key={K1}", "replace_allowed_ips=1"], "replace_allowed_ips: takes only 'true'"),
        ([f"public_key={K1}", "protocol_version=2"], "protocol_version: protocol version other than 1"),
        (["endpoint=1.2.3.4:5"], "invalid UAPI device key 'endpoint'"),
    ],
)
def test_a_refused_set_logs_why(device, caplog, lines, reason):
    assert apply(device, lines) == EINVAL
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [f"IPC error {EINVAL}: {reason}"]


def test_a_port_in_use_is_refused_with_its_own_errno(device, caplog, monkeypatch):
    def in_use(port):
        raise OSError(errno.EADDRINUSE, "Address already in use")

    monkeypatch.setattr(device, "set_listen_port", in_use)
    assert apply(device, ["listen_port=51820"]) == -errno.EADDRINUSE
    reason = f"failed to set listen_port: [Errno {errno.EADDRINUSE}] Address already in use"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"IPC error {-errno.EADDRINUSE}: listen_port: {reason}"]


KEY = bytes(range(200, 232))
# Lines that hold a key, or what may be one, in each place a client may put it.
KEY_LINES = [
    f"private_key={KEY.hex()[:-1]}",
    f"private_key={base64.b64encode(KEY).decode()}",
    f"{KEY.hex()}",
    f"{base64.b64encode(KEY).decode()[:-1]}=",
    f"fwmark={KEY.hex()}",
    f"public_key={KEY.hex()}x",
    f"public_key={K1}\npreshared_key={KEY.hex()[2:]}",
    f"public_key={K1}\nendpoint={KEY.hex()}",
    f"public_key={K1}\nallowed_ip={KEY.hex()}/32",
    f"public_key={K1}\nprotocol_version={KEY.hex()}",
    f"public_key={K1}\nremove={KEY.hex()}",
    f"public_key={K1}\n{KEY.hex()}=true",
]


@pytest.mark.parametrize("lines", KEY_LINES)
def test_an_error_never_quotes_the_request(device, caplog, lines):
    caplog.set_level(logging.DEBUG)
    assert apply(device, lines.split("\n")) in (EINVAL, EPROTO)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all(r.name == device.log.name for r in errors)  # the device's logger: its level applies
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in (KEY.hex(), base64.b64encode(KEY).decode()):
        assert not any(text[i : i + 12] in logged for i in range(len(text) - 11)), logged


def test_a_get_that_fails_is_answered_and_logged(device, caplog, monkeypatch):
    def fail(device):
        raise ValueError(f"cannot show {KEY.hex()}")

    monkeypatch.setattr(uapi, "handle_get", fail)
    assert exchange(device, GET) == f"errno={uapi.ERRNO_UNKNOWN}\n\n".encode()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"IPC error {uapi.ERRNO_UNKNOWN} in get: unexpected ValueError"]


def test_an_unexpected_failure_is_logged_without_its_message(device, caplog, monkeypatch):
    def fail(self, value):
        raise ValueError(f"cannot use {value}")

    monkeypatch.setitem(uapi._SetRequest._DEVICE_KEYS, "fwmark", fail)
    assert apply(device, [f"fwmark={KEY.hex()}"]) == -errno.ENOANO
    assert "ValueError" in caplog.text and KEY.hex() not in caplog.text


# -- wgc_get_counters: wgc's own operation -------------------------------------------

COUNTERS = b"wgc_get_counters=1\n\n"


def test_counters_reply_lists_the_catalogue_in_order(device):
    """The device's figures, then each peer's after its public_key line, as
    `get` lists the peers; each value one that float() reads back."""
    from wgc import counters

    apply(device, [f"public_key={K1}", f"public_key={K2}"])
    device.counts["invalid_mac1_total"] = 3
    device.peer(bytes.fromhex(K2)).counts["handshake_rtt_seconds"] = 1e-05
    reply = exchange(device, COUNTERS + GET).decode("ascii")
    body, get_reply = reply.split("errno=0\n\n")[:2]
    lines = [line.partition("=") for line in body.splitlines()]
    device_part = [(name, value) for name, _, value in lines[: len(counters.DEVICE)]]
    assert [name for name, _ in device_part] == [figure.name for figure in counters.DEVICE]
    assert dict(device_part)["invalid_mac1_total"] == "3"
    peer_part = lines[len(counters.DEVICE):]
    size = 1 + len(counters.PEER)
    assert len(peer_part) == 2 * size
    for key, block in zip((K1, K2), (peer_part[:size], peer_part[size:]), strict=True):
        assert block[0] == ("public_key", "=", key)
        assert [name for name, _, _ in block[1:]] == [figure.name for figure in counters.PEER]
        assert all(float(value) >= 0 for _, _, value in block[1:])
    assert {name: value for name, _, value in peer_part[size:]}["handshake_rtt_seconds"] == "1e-05"
    assert get_reply == shown(device)  # the connection goes on after it


@pytest.mark.parametrize("data,reply", [
    (b"wgc_get_counters=1\nx" + GET, b"errno=-22\n\nerrno=0\n\n"),
    (b"wgc_get_counters=1\n", b""),
    (b"wgc_get_counters=2\n\n", b""),
], ids=["then a character", "cut short", "another version"])
def test_counters_request_is_read_as_get_is(device, data, reply):
    assert exchange(device, data) == reply


def test_counters_that_fail_are_answered_and_logged(device, caplog, monkeypatch):
    def fail():
        raise ValueError(f"cannot count {KEY.hex()}")

    monkeypatch.setattr(device, "snapshot", fail)
    assert exchange(device, COUNTERS) == f"errno={uapi.ERRNO_UNKNOWN}\n\n".encode()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"IPC error {uapi.ERRNO_UNKNOWN} in wgc_get_counters: unexpected ValueError"]


# -- endpoint_name, wgc's own peer key ------------------------------------------------


def test_endpoint_name_is_kept_on_the_peer_and_never_shown(device):
    assert apply(device, [f"public_key={K1}", "endpoint=192.0.2.1:51820"]) == 0
    before = shown(device)
    assert apply(device, [f"public_key={K1}", "endpoint_name=peer.example.test:51820"]) == 0
    assert device.peer(bytes.fromhex(K1)).endpoint_name == ("peer.example.test", 51820)
    # It sets no endpoint, and `get` stays what wg(8) reads from wireguard-go.
    assert shown(device) == before
    assert "example" not in shown(device)


def test_an_endpoint_without_a_name_forgets_the_name(device):
    assert apply(device, [f"public_key={K1}", "endpoint=192.0.2.1:51820", "endpoint_name=peer.test:51820"]) == 0
    assert apply(device, [f"public_key={K1}", "endpoint=192.0.2.2:51820"]) == 0
    assert device.peer(bytes.fromhex(K1)).endpoint_name is None


@pytest.mark.parametrize("value", [
    "192.0.2.1:51820",          # an address is no name
    "[2001:db8::1]:51820",
    "10.1:51820",               # getaddrinfo reads it as 10.0.0.1
    "1.0x7f:51820",
    "peer.test",                # no port
    "peer.test:",
    "peer.test:http",           # the port is numeric
    "peer.test:65536",
    "peer.test:-1",
    ":51820",
    "-peer.test:51820",         # labels neither start nor end with a hyphen
    "peer-.test:51820",
    "pe_er.test:51820",
    "peer..test:51820",
    "p\u00e9er.test:51820",
    "a" * 64 + ".test:51820",   # a label of 64 characters
    ("a" * 62 + ".") * 4 + "test:1",  # 257 characters
])
def test_endpoint_name_refuses(device, value):
    assert apply(device, [f"public_key={K1}", f"endpoint_name={value}"]) == EINVAL
    assert device.peer(bytes.fromhex(K1)).endpoint_name is None


def test_endpoint_name_takes_names_at_their_limits(device):
    longest = ("a" * 63 + ".") * 3 + "b" * 61  # 253 characters
    for value, name in [("localhost:1", ("localhost", 1)), (f"{longest}:65535", (longest, 65535)),
                        ("Peer-1.Example.test.:0", ("Peer-1.Example.test.", 0))]:
        assert apply(device, [f"public_key={K1}", f"endpoint_name={value}"]) == 0
        assert device.peer(bytes.fromhex(K1)).endpoint_name == name


def test_endpoint_name_is_checked_in_a_dummy_section_too(device):
    assert apply(device, [f"public_key={K1}", "update_only=true", "endpoint_name=peer.test:1"]) == 0
    assert device.peer(bytes.fromhex(K1)) is None
    assert apply(device, [f"public_key={K1}", "update_only=true", "endpoint_name=192.0.2.1:1"]) == EINVAL


def test_a_refused_endpoint_name_is_not_logged(device, caplog):
    caplog.set_level(logging.DEBUG)
    apply(device, [f"public_key={K1}", f"endpoint_name={PSK}:1"])
    assert PSK not in caplog.text and "endpoint_name" in caplog.text
