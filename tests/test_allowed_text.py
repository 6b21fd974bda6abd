"""wgc/_allowed_text.pyx: AllowedIPs made in C from the common IPv4 spelling.

The C path must take exactly the texts the Python path it replaced took (an
IPv4 address as inet_pton reads it, one "/", the prefix length in printf's
spelling from the shortest asked for to 32), and make objects nobody can tell
from the ones the Python path makes; everything else is left to the Python
readers, with their errors.  `takes` below is that Python path's rule.
"""
import dataclasses
import errno
import gc
import pickle
import socket
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgc._allowed_text import AllowedIPMaker
from wgc.control.model import AllowedIP, format_allowed_ips, ipv4_allowed_ips_of_texts, take_ipv4_allowed_ip_lines
from wgc.control.userspace import _allowed_ip, parse_get
from wgc.errors import WireGuardError

PEER_HEX = "22" * 32


def takes(text: str, shortest: int) -> bool:
    """Whether the Python fast path took text: no ":", exactly one "/", the
    length one of str(shortest..32), the address one inet_pton reads."""
    address, slash, length = text.partition("/")
    if ":" in text or not slash or "/" in length or length not in {str(n) for n in range(shortest, 33)}:
        return False
    try:
        socket.inet_pton(socket.AF_INET, address)
    except (OSError, ValueError):
        return False
    return True


odd_octets = st.sampled_from(["", "00", "01", "007", "256", "999", "1000", " 1", "1 ", "+1", "-1", "0x1",
                              "\u0661", "1\0", "\udcff"])
octet = st.one_of(st.integers(0, 255).map(str), st.integers(0, 255).map(str), odd_octets)
odd_lengths = st.sampled_from(["", "00", "032", "08", " 32", "32 ", "3 2", "+32", "32\r", "-1", "33", "99", "100",
                               "\u0663"])
length = st.one_of(st.integers(0, 32).map(str), st.integers(0, 32).map(str), odd_lengths)
ipv4ish = st.builds(lambda octets, dot, slash, bits: dot.join(octets) + slash + bits,
                    st.lists(octet, min_size=3, max_size=5), st.sampled_from([".", ".", ".", ",", ".."]),
                    st.sampled_from(["/", "/", "/", "//", "", " /", "/1/"]), length)
# A good address with an odd prefix length, or one odd octet with a good length: odd by one thing only.
near_miss = st.one_of(
    st.builds(lambda address, bits: f"{address}/{bits}", st.ip_addresses(v=4), length),
    st.builds(lambda octets, at, odd, bits: ".".join(octets[:at] + [odd] + octets[at + 1:]) + f"/{bits}",
              st.lists(st.integers(0, 255).map(str), min_size=4, max_size=4), st.integers(0, 3), odd_octets,
              st.integers(0, 32)))
ipv6 = st.builds(lambda address, bits: f"{address}/{bits}", st.ip_addresses(v=6).map(str), st.integers(0, 128))
texts = st.one_of(ipv4ish, near_miss, near_miss, ipv6, st.ip_addresses(v=4).map(lambda a: f"{a}/32"),
                  st.text(max_size=24))
shortest = st.sampled_from([0, 0, 32, 31, 8, 24])


def check_same(made: AllowedIP, text: str) -> None:
    """made is the AllowedIP the Python readers make of text, in every way users see."""
    python = _allowed_ip(text)
    assert type(made) is AllowedIP
    assert made == python and hash(made) == hash(python) and repr(made) == repr(python)
    assert str(made) == text and made.address == python.address and made.cidr == python.cidr
    assert dataclasses.asdict(made) == dataclasses.asdict(python)
    assert pickle.loads(pickle.dumps(made)) == made
    assert not gc.is_tracked(made)  # it holds only atoms: the collector never walks it


@settings(max_examples=1000)
@given(texts, shortest)
def test_one_text_taken_exactly_as_the_python_path_took_it(text, shortest):
    made = ipv4_allowed_ips_of_texts([text], shortest)
    assert (made is not None) == takes(text, shortest)
    if made is not None:
        check_same(made[0], text)


# Wider characters whose UCS-2 bytes spell "1.2.3.4/32": only the characters count.
WIDE = "\u2e31\u2e32\u2e33\u2f34\u3233" + "\u0101" * 5


@pytest.mark.parametrize("text", ["1.2.3.4/08", "1.2.3.4/00", "1.2.3.4/032", "01.2.3.4/32", "1.2.3.256/32",
                                  "1.2.3.4 /32", "1.2.3.4/32 ", "1.2.3/32", "1.2.3.4.5/32", "1.2.3.4/33",
                                  "1.2.3.4//32", "1.2.3.4", "::ffff:1.2.3.4/32", WIDE])
def test_odd_spellings_refused(text):
    assert not takes(text, 0)
    assert ipv4_allowed_ips_of_texts([text], 0) is None
    assert ipv4_allowed_ips_of_texts(["1.2.3.4/32", text], 0) is None


@given(st.lists(texts, min_size=1, max_size=20), shortest)
def test_a_list_is_taken_whole_or_not_at_all(batch, shortest):
    made = ipv4_allowed_ips_of_texts(batch, shortest)
    assert (made is not None) == all(takes(text, shortest) for text in batch)
    if made is not None:
        assert [str(allowed) for allowed in made] == batch
        for allowed, text in zip(made, batch, strict=True):
            check_same(allowed, text)


@given(st.lists(texts, max_size=12), st.sampled_from(["", "\n", "errno=0\n", "allowed_ip=", "allowed_ip=1.2.3.4/32"]))
def test_lines_are_taken_up_to_the_first_other_one(values, tail):
    head = b"public_key=" + PEER_HEX.encode() + b"\n"
    lines = "".join(f"allowed_ip={value}\n" for value in values)
    answer = head + lines.encode("utf-8", "surrogateescape") + tail.encode()
    into = [AllowedIP.parse("1.1.1.1/32")]  # appended to, not replaced
    stop = take_ipv4_allowed_ip_lines(answer, len(head), into)
    taken = 0
    while taken < len(values) and takes(values[taken], 0) and "\n" not in values[taken]:
        taken += 1
    assert [str(allowed) for allowed in into[1:]] == values[:taken]
    assert stop == len(head) + sum(len(f"allowed_ip={value}\n".encode("utf-8", "surrogateescape"))
                                   for value in values[:taken])
    for allowed, text in zip(into[1:], values[:taken], strict=True):
        check_same(allowed, text)


@given(st.lists(texts, max_size=12))
def test_parse_get_reads_what_the_python_reader_reads(values):
    """parse_get's C runs and its Python lines together give what reading
    every value through the Python reader gives, or its error for the first
    value it refuses."""
    lines = "".join(f"allowed_ip={value}\n" for value in values if "\n" not in value)
    answer = f"public_key={PEER_HEX}\n{lines}protocol_version=1\nerrno=0\n\n".encode("utf-8", "surrogateescape")
    expected = []
    for value in (value for value in values if "\n" not in value):
        try:
            expected.append(_allowed_ip(value))
        except (ValueError, OSError):
            with pytest.raises(WireGuardError) as refused:
                parse_get("x", answer)
            assert refused.value.errno == errno.EPROTO
            assert repr(f"allowed_ip={value}") in str(refused.value)
            return
    (peer,) = parse_get("x", answer).peers
    assert peer.allowed_ips == expected and peer.protocol_version == 1


def test_runs_between_other_lines_and_peers():
    answer = (f"public_key={PEER_HEX}\nallowed_ip=10.0.0.1/32\nallowed_ip=10.0.0.2/31\nallowed_ip=fd00::1/128\n"
              f"allowed_ip=10.0.0.3/32\nrx_bytes=5\nallowed_ip=10.0.0.4/0\npublic_key={'33' * 32}\n"
              "allowed_ip=10.0.0.5/32\nerrno=0\n\nallowed_ip=10.0.0.6/32\n").encode()
    first, second = parse_get("x", answer).peers
    assert [str(a) for a in first.allowed_ips] == ["10.0.0.1/32", "10.0.0.2/31", "fd00::1/128", "10.0.0.3/32",
                                                   "10.0.0.4/0"]
    assert first.rx_bytes == 5
    assert [str(a) for a in second.allowed_ips] == ["10.0.0.5/32"]


def test_an_answer_ending_without_a_newline():
    answer = f"public_key={PEER_HEX}\nallowed_ip=10.0.0.1/32\nallowed_ip=10.0.0.2/32".encode()
    with pytest.raises(WireGuardError, match="without errno"):
        parse_get("x", answer)
    into: list[AllowedIP] = []
    assert take_ipv4_allowed_ip_lines(answer, 76, into) == 99 and [str(a) for a in into] == ["10.0.0.1/32"]


def test_start_outside_the_answer():
    with pytest.raises(IndexError):
        take_ipv4_allowed_ip_lines(b"allowed_ip=1.2.3.4/32\n", 23, [])
    with pytest.raises(IndexError):
        take_ipv4_allowed_ip_lines(b"allowed_ip=1.2.3.4/32\n", -1, [])
    assert take_ipv4_allowed_ip_lines(b"allowed_ip=1.2.3.4/32\n", 22, []) == 22


def test_the_maker_takes_only_an_object_slot():
    with pytest.raises(TypeError):
        AllowedIPMaker(vars(AllowedIP)["address"])  # a property
    with pytest.raises(TypeError):
        AllowedIPMaker(vars(type)["__basicsize__"])  # a member, not an object slot
    with pytest.raises(TypeError):
        AllowedIPMaker("_text")


def test_objects_are_freed_with_their_texts():
    """Reference counts: the list and each AllowedIP own one reference to what they hold."""
    text = "".join(["10.9.8.7", "/32"])  # a string of its own
    before = sys.getrefcount(text)
    made = ipv4_allowed_ips_of_texts([text] * 3, 0)
    assert made is not None and sys.getrefcount(text) == before + 3
    made_here = [AllowedIP.parse(text)]
    owners, owners_here = sys.getrefcount(made[0]), sys.getrefcount(made_here[0])
    assert owners == owners_here  # the list alone (and getrefcount's argument)
    del made
    assert sys.getrefcount(text) == before


class Spelled(AllowedIP):
    """A subclass: its texts are joined by the Python path."""

    __slots__ = ()


@given(st.lists(st.one_of(st.ip_addresses(v=4).map(lambda a: f"{a}/32"), st.ip_addresses(v=6).map(lambda a: f"{a}/64")),
                max_size=8),
       st.sampled_from(["", ", ", "\nallowed_ip=", "\u00e9"]), st.integers(0, 8))
def test_texts_joined_as_str_joins_them(texts_, separator, subclass_at):
    ips = [AllowedIP.parse(text) for text in texts_]
    ips += ipv4_allowed_ips_of_texts([text for text in texts_ if takes(text, 0)], 0) or []
    if subclass_at < len(ips):
        ips[subclass_at] = Spelled(ips[subclass_at].address, ips[subclass_at].cidr)
    joined = format_allowed_ips(ips, separator)
    assert type(joined) is str and joined == separator.join(str(allowed) for allowed in ips)


@pytest.mark.parametrize("stranger", [object.__new__(AllowedIP), "1.2.3.4/32", 7, ("1.2.3.4/32", "x")])
def test_joining_what_has_no_text(stranger):
    """An AllowedIP without its text, or something else: the Python path's AttributeError."""
    with pytest.raises(AttributeError):
        format_allowed_ips([AllowedIP.parse("1.2.3.4/32"), stranger], ",")
