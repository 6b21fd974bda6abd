"""wgc.control.model's records and key readers, written by hand so that `wg
show` need not import dataclasses or re, behave as the @dataclass classes
and regular expressions they replace.

The references here are those classes as they were declared (field names,
order, defaults, frozen or not) and the patterns wg(8)'s keys were matched
with: each record is held against its reference for any field values, each
key reader against its pattern for any text.
"""
import base64
import copy
import dataclasses
import functools
import ipaddress
import pickle
import re
import socket
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgc.control import model
from wgc.control.model import AllowedIP, Device, DeviceConfig, DeviceCounters, Endpoint, Peer, PeerConfig


def fresh(factory):
    """A default made by factory, as the field declared it (a Field belongs to one field: make_dataclass names it)."""
    return dataclasses.field(default_factory=factory)


# name: (fields as @dataclass declared them, frozen)
REFERENCES = {
    "Endpoint": ([("address", object), ("port", int), ("flowinfo", int, 0), ("scope_id", int, 0)], True),
    "Peer": ([("public_key", bytes), ("preshared_key", object, None), ("endpoint", object, None),
              ("persistent_keepalive_interval", int, 0), ("last_handshake_time_sec", int, 0),
              ("last_handshake_time_nsec", int, 0), ("rx_bytes", int, 0), ("tx_bytes", int, 0),
              ("allowed_ips", list, fresh(list)), ("protocol_version", int, 0)], False),
    "Device": ([("name", str), ("kind", str), ("private_key", object, None), ("public_key", object, None),
                ("listen_port", int, 0), ("fwmark", int, 0), ("peers", list, fresh(list)), ("ifindex", int, 0)], False),
    "DeviceCounters": ([("name", str), ("values", dict, fresh(dict)), ("peers", dict, fresh(dict))], False),
    "PeerConfig": ([("public_key", bytes), ("remove", bool, False), ("update_only", bool, False),
                    ("preshared_key", object, None), ("endpoint", object, None), ("endpoint_name", object, None),
                    ("persistent_keepalive_interval", object, None), ("replace_allowed_ips", bool, False),
                    ("allowed_ips", list, fresh(list))], False),
    "DeviceConfig": ([("private_key", object, None), ("listen_port", object, None), ("fwmark", object, None),
                      ("peers", list, fresh(list))], False),
}
RECORDS = {cls.__name__: cls for cls in (Endpoint, Peer, Device, DeviceCounters, PeerConfig, DeviceConfig)}


@functools.cache
def reference(name: str) -> type:
    fields, frozen = REFERENCES[name]
    return dataclasses.make_dataclass(name, fields, frozen=frozen)


keys = st.binary(min_size=32, max_size=32)
small = st.integers(0, 0xFFFF)
addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))
endpoints = st.builds(Endpoint, addresses, small, st.integers(0, 0xFFFFF), st.integers(0, 0xFFFFFFFF))
allowed = st.lists(st.builds(lambda ip: AllowedIP(ip, ip.max_prefixlen), addresses), max_size=3)
VALUES = {
    "address": addresses, "port": small, "flowinfo": st.integers(0, 0xFFFFF), "scope_id": st.integers(0, 99),
    "public_key": keys, "preshared_key": st.none() | keys, "private_key": st.none() | keys,
    "endpoint": st.none() | endpoints, "persistent_keepalive_interval": small,
    "last_handshake_time_sec": st.integers(0, 2**63 - 1), "last_handshake_time_nsec": st.integers(0, 10**9),
    "rx_bytes": st.integers(0, 2**64), "tx_bytes": st.integers(0, 2**64), "allowed_ips": allowed,
    "protocol_version": st.integers(0, 1), "name": st.text(max_size=15),
    "kind": st.sampled_from(["userspace", "kernel"]),
    "listen_port": small, "fwmark": st.integers(0, 0xFFFFFFFF), "ifindex": st.integers(0, 99),
    "values": st.dictionaries(st.text(max_size=5), st.integers() | st.floats(allow_nan=False), max_size=3),
    "remove": st.booleans(), "update_only": st.booleans(), "replace_allowed_ips": st.booleans(),
    "endpoint_name": st.none() | st.text(max_size=10),
}
NESTED = {  # fields holding records, by class
    ("Device", "peers"): st.lists(st.builds(Peer, keys, allowed_ips=allowed), max_size=2),
    ("DeviceConfig", "peers"): st.lists(st.builds(PeerConfig, keys, allowed_ips=allowed), max_size=2),
    ("DeviceCounters", "peers"): st.dictionaries(keys, VALUES["values"], max_size=2),
    ("PeerConfig", "persistent_keepalive_interval"): st.none() | small,
    ("DeviceConfig", "listen_port"): st.none() | small,
    ("DeviceConfig", "fwmark"): st.none() | st.integers(0, 0xFFFFFFFF),
}


def values_of(name: str, field: str):
    return NESTED[name, field] if (name, field) in NESTED else VALUES[field]


@st.composite
def arguments(draw, name: str) -> dict:
    """Keyword arguments for the record: every field without a default, any of the others."""
    chosen = {}
    for field in REFERENCES[name][0]:
        if len(field) == 2 or draw(st.booleans()):
            chosen[field[0]] = draw(values_of(name, field[0]))
    return chosen


@pytest.mark.parametrize("name", RECORDS)
@settings(deadline=None)  # what is held here is behaviour, never time (a loaded machine made one draw slow)
@given(data=st.data())
def test_a_record_is_the_dataclass_it_was(name, data):
    record, made_as = RECORDS[name], reference(name)
    given_ = data.draw(arguments(name))
    ours, theirs = record(**given_), made_as(**given_)
    assert repr(ours) == repr(theirs)
    assert dataclasses.is_dataclass(ours) and record.__match_args__ == made_as.__match_args__
    assert [(f.name, f.default, f.default_factory) for f in dataclasses.fields(record)] == [
        (f.name, f.default, f.default_factory) for f in dataclasses.fields(made_as)]
    assert dataclasses.asdict(ours) == dataclasses.asdict(theirs)
    assert dataclasses.astuple(ours) == dataclasses.astuple(theirs)

    # Equal exactly when the references are: against the same fields, and one field changed (or not).
    other = dict(given_)
    changed = data.draw(st.sampled_from([field[0] for field in REFERENCES[name][0]]))
    other[changed] = data.draw(values_of(name, changed))
    assert (ours == record(**other)) == (theirs == made_as(**other))
    assert ours == record(**given_) and ours != theirs and ours != given_
    assert dataclasses.replace(ours, **{changed: other[changed]}) == record(**{**given_, **other})

    if REFERENCES[name][1]:
        assert hash(ours) == hash(theirs)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(ours, changed, other[changed])
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(ours, changed)
    else:
        with pytest.raises(TypeError):
            hash(ours)
        setattr(ours, changed, other[changed])
        assert getattr(ours, changed) is other[changed]
    assert pickle.loads(pickle.dumps(ours)) == ours
    assert copy.deepcopy(ours) == ours and copy.copy(ours) == ours


@pytest.mark.parametrize("name", RECORDS)
def test_defaults_are_fresh_for_each_record(name):
    fields, _ = REFERENCES[name]
    some = {"address": ipaddress.IPv4Address("10.0.0.1"), "port": 1, "public_key": bytes(32), "name": "wg0",
            "kind": "kernel"}
    required = {field[0]: some[field[0]] for field in fields if len(field) == 2}
    first, second = RECORDS[name](**required), RECORDS[name](**required)
    for field in fields:
        if len(field) == 3 and isinstance(field[2], dataclasses.Field):
            assert getattr(first, field[0]) == field[2].default_factory()
            assert getattr(first, field[0]) is not getattr(second, field[0])


def test_an_endpoint_takes_a_string_and_checks_its_port():
    assert Endpoint("fd00::1", 1).address == ipaddress.IPv6Address("fd00::1")
    with pytest.raises(ValueError):
        Endpoint("1.2.3.4", 0x10000)


BASE64_KEY = re.compile(r"[A-Za-z0-9+/]{43}=\Z")
HEX_KEY = re.compile(r"[0-9a-fA-F]{64}\Z")
# Near misses: one character of a real key's text changed, often at either end, often to a
# character close to the alphabet.
near = st.sampled_from("gGzZ=+/-_. \n\0\u00e9") | st.characters()


def changed(text: str, at: int, char: str) -> str:
    return text[:at] + char + text[at + 1:]


key_texts = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "+/=", min_size=42, max_size=46),
    st.builds(model.key_to_base64, keys),
    st.builds(changed, st.builds(model.key_to_base64, keys), st.sampled_from([0, 42, 43]) | st.integers(0, 44), near),
    st.builds(str.__add__, st.builds(model.key_to_base64, keys), near),  # one character too many
    st.text(max_size=50),
)
hex_texts = st.one_of(
    st.text(alphabet="0123456789abcdefABCDEFgG", min_size=63, max_size=65),
    st.builds(changed, st.builds(bytes.hex, keys), st.sampled_from([0, 63]) | st.integers(0, 64), near),
    st.builds(str.__add__, st.builds(bytes.hex, keys), near | st.sampled_from("0aF")),
    st.text(max_size=70),
)


@given(key_texts)
def test_a_base64_key_is_read_as_its_pattern_says(text):
    if not BASE64_KEY.match(text):
        with pytest.raises(ValueError, match=r"^not a base64 WireGuard key"):
            model.key_from_base64(text)
    elif model.base64_text(base64.b64decode(text)) != text:
        with pytest.raises(ValueError, match=r"^not a canonical base64 WireGuard key"):
            model.key_from_base64(text)
    else:
        assert model.key_to_base64(model.key_from_base64(text)) == text


@given(hex_texts)
def test_a_hex_key_is_read_as_its_pattern_says(text):
    if HEX_KEY.match(text):
        assert model.key_from_hex(text) == bytes.fromhex(text)
    else:
        with pytest.raises(ValueError, match=r"^not a hex WireGuard key"):
            model.key_from_hex(text)


# What getaddrinfo and the kernel give: a device's or a resolver's endpoint, held as text
# until its address is asked for, is the endpoint made from that address.
scopes = st.integers(0, 0xFFFFFFFF)


@given(addresses, small, st.integers(0, 0xFFFFF), scopes)
def test_an_endpoint_read_as_text_is_the_one_made_from_its_address(ip, port, flowinfo, scope_id):
    if ip.version == 4:
        flowinfo = scope_id = 0
    made = Endpoint(ip, port, flowinfo, scope_id)
    family = made.family
    sockaddr = (model.format_ip(ip), port, flowinfo, scope_id) if ip.version == 6 else (model.format_ip(ip), port)
    for read in (Endpoint.from_sockaddr(family, sockaddr), Endpoint.from_bytes(made.to_bytes())):
        assert read.family == made.family and str(read) == str(made) and read.sockaddr()[1:] == made.sockaddr()[1:]
        assert read.to_bytes() == made.to_bytes()
        assert read == made and hash(read) == hash(made) and repr(read) == repr(made)
        assert read.address == ip and type(read.address) is type(ip)
        assert pickle.loads(pickle.dumps(read)) == made and dataclasses.asdict(read) == dataclasses.asdict(made)
        with pytest.raises(dataclasses.FrozenInstanceError):
            read.port = 1


@pytest.mark.parametrize("host", ["1.2.3", "01.2.3.4", "fd00::1::2", "", "example.com"])
def test_an_endpoint_refuses_text_that_is_no_address(host):
    with pytest.raises(ValueError):
        Endpoint.from_sockaddr(socket.AF_INET, (host, 1))
