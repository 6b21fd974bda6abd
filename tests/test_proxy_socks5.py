"""wgc.proxy.socks5: RFC 1928/1929 messages written out byte by byte, curl as
a real client on loopback, and properties over any split and any input."""
import errno
import socket
import subprocess
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgc.proxy import socks5
from wgc.proxy.socks5 import (
    AddressType,
    Authenticated,
    Command,
    Greeting,
    Method,
    Reply,
    Request,
    Server,
    SocksError,
)

NO_AUTH_GREETING = b"\x05\x01\x00"
AUTH_GREETING = b"\x05\x02\x00\x02"                     # offers no-auth and username/password
AUTH = b"\x01\x04user\x06secret"
CONNECT_V4 = b"\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x50"                  # 10.0.0.1:80
CONNECT_V6 = b"\x05\x01\x00\x04" + bytes(15) + b"\x01\x01\xbb"              # [::1]:443
CONNECT_NAME = b"\x05\x01\x00\x03\x0bexample.com\x00\x16"                  # example.com:22
UDP_ASSOCIATE = b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00"                # 0.0.0.0:0
CREDENTIALS = ("user", "secret")


def refused(server: Server, data: bytes) -> SocksError:
    with pytest.raises(SocksError) as caught:
        server.receive(data)
    return caught.value


# -- known answers ------------------------------------------------------------------------


def test_no_authentication_connect_ipv4():
    events, used = Server().receive(NO_AUTH_GREETING + CONNECT_V4)
    assert events == [Greeting(Method.NO_AUTHENTICATION, b"\x05\x00"),
                      Request(Command.CONNECT, "10.0.0.1", 80, AddressType.IPV4)]
    assert used == len(NO_AUTH_GREETING + CONNECT_V4)


def test_connect_ipv6_and_domain_name():
    server = Server()
    server.receive(NO_AUTH_GREETING)
    assert server.receive(CONNECT_V6)[0] == [Request(Command.CONNECT, "::1", 443, AddressType.IPV6)]
    server = Server()
    server.receive(NO_AUTH_GREETING)
    assert server.receive(CONNECT_NAME)[0] == [Request(Command.CONNECT, "example.com", 22, AddressType.DOMAIN)]


def test_udp_associate_is_a_request():
    events, _ = Server().receive(NO_AUTH_GREETING + UDP_ASSOCIATE)
    assert events[-1] == Request(Command.UDP_ASSOCIATE, "0.0.0.0", 0, AddressType.IPV4)


def test_username_password():
    server = Server(CREDENTIALS)
    events, _ = server.receive(AUTH_GREETING)
    assert events == [Greeting(Method.USERNAME_PASSWORD, b"\x05\x02")]
    events, _ = server.receive(AUTH)
    assert events == [Authenticated("user", b"\x01\x00")]
    assert server.receive(CONNECT_NAME)[0][0].host == "example.com"


@pytest.mark.parametrize("auth", [b"\x01\x04user\x06secreT", b"\x01\x04usex\x06secret", b"\x01\x04user\x00",
                                  b"\x01\x03use\x06secret", b"\x01\x05users\x06secret"])
def test_wrong_credentials_get_failure_status(auth):
    server = Server(CREDENTIALS)
    server.receive(AUTH_GREETING)
    error = refused(server, auth)
    assert error.reply == b"\x01\x01"
    assert "secret" not in str(error)


def test_subnegotiation_version_other_than_1():
    server = Server(CREDENTIALS)
    server.receive(AUTH_GREETING)
    assert refused(server, b"\x05\x04user\x06secret").reply == b"\x01\x01"


def test_no_acceptable_method():
    assert refused(Server(CREDENTIALS), NO_AUTH_GREETING).reply == b"\x05\xff"
    assert refused(Server(), b"\x05\x01\x02").reply == b"\x05\xff"
    assert refused(Server(), b"\x05\x00").reply == b"\x05\xff"


def test_not_socks5_gets_no_reply():
    assert refused(Server(), b"\x04\x01\x00\x50\x0a\x00\x00\x01\x00").reply == b""
    assert refused(Server(), b"GET / HTTP/1.1\r\n").reply == b""


FAILURE_TAIL = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # RSV, ATYP IPv4, 0.0.0.0, port 0


@pytest.mark.parametrize(("request_bytes", "code"), [
    (b"\x05\x02\x00\x01\x0a\x00\x00\x01\x00\x50", 0x07),   # BIND
    (b"\x05\x09\x00\x01\x0a\x00\x00\x01\x00\x50", 0x07),   # no such command
    (b"\x05\x01\x00\x02\x0a\x00\x00\x01\x00\x50", 0x08),   # no such address type
    (b"\x05\x01\x00\x03\x00\x00\x50", 0x01),               # empty domain name
    (b"\x05\x01\x00\x03\x03a b\x00\x50", 0x01),            # a space in it
    (b"\x05\x01\x00\x03\x02\xff\xfe\x00\x50", 0x01),       # not UTF-8
    (b"\x04\x01\x00\x01\x0a\x00\x00\x01\x00\x50", 0x01),   # version 4 in the request
])
def test_refused_requests_carry_their_reply(request_bytes, code):
    server = Server()
    server.receive(NO_AUTH_GREETING)
    assert refused(server, request_bytes).reply == bytes([5, code]) + FAILURE_TAIL


def test_refusal_in_the_same_read_as_the_greeting_carries_both_replies():
    error = refused(Server(), NO_AUTH_GREETING + b"\x05\x02\x00\x01\x0a\x00\x00\x01\x00\x50")
    assert error.reply == b"\x05\x00" + b"\x05\x07" + FAILURE_TAIL
    server = Server(CREDENTIALS)
    assert refused(server, AUTH_GREETING + b"\x01\x04user\x05wrong").reply == b"\x05\x02\x01\x01"


def test_utf8_domain_name_is_decoded():
    name = "bücher.example".encode()
    server = Server()
    events, _ = server.receive(NO_AUTH_GREETING + b"\x05\x01\x00\x03" + bytes([len(name)]) + name + b"\x00\x50")
    assert events[-1].host == "bücher.example"


def test_replies():
    assert socks5.reply(Reply.SUCCEEDED, "10.0.0.2", 40000) == b"\x05\x00\x00\x01\x0a\x00\x00\x02\x9c\x40"
    assert socks5.reply(Reply.SUCCEEDED, "fd00::2", 53) == (b"\x05\x00\x00\x04\xfd" + bytes(14) + b"\x02\x00\x35")
    assert socks5.reply(Reply.SUCCEEDED, "proxy.example", 1) == b"\x05\x00\x00\x03\x0dproxy.example\x00\x01"
    assert socks5.failure(Reply.CONNECTION_REFUSED) == b"\x05\x05" + FAILURE_TAIL
    assert [code.value for code in Reply] == list(range(9))


@pytest.mark.parametrize(("number", "code"), [
    (errno.ECONNREFUSED, Reply.CONNECTION_REFUSED), (errno.EHOSTUNREACH, Reply.HOST_UNREACHABLE),
    (errno.ENETUNREACH, Reply.NETWORK_UNREACHABLE), (errno.ETIMEDOUT, Reply.TTL_EXPIRED),
    (errno.EACCES, Reply.NOT_ALLOWED), (errno.EAFNOSUPPORT, Reply.ADDRESS_TYPE_NOT_SUPPORTED),
    (errno.EIO, Reply.GENERAL_FAILURE), (None, Reply.GENERAL_FAILURE),
])
def test_reply_for_errno(number, code):
    assert socks5.reply_for_errno(number) == code


def test_reply_for_error():
    assert socks5.reply_for_error(socket.gaierror(socket.EAI_NONAME, "Name or service not known")) \
        == Reply.HOST_UNREACHABLE
    assert socks5.reply_for_error(TimeoutError("timed out")) == Reply.TTL_EXPIRED
    assert socks5.reply_for_error(ConnectionRefusedError(errno.ECONNREFUSED, "refused")) == Reply.CONNECTION_REFUSED
    assert socks5.reply_for_error(ValueError("x")) == Reply.GENERAL_FAILURE


def test_bytes_after_the_request_stay_with_the_caller():
    server = Server()
    data = NO_AUTH_GREETING + CONNECT_V4 + b"GET / HTTP/1.0\r\n\r\n"
    _, used = server.receive(data)
    assert data[used:] == b"GET / HTTP/1.0\r\n\r\n"
    assert server.done
    assert server.receive(b"more") == ([], 0)


def test_udp_header():
    datagram = b"\x00\x00\x00\x01\x0a\x00\x00\x01\x00\x35" + b"query"
    assert socks5.parse_udp(datagram) == socks5.Datagram("10.0.0.1", 53, b"query", AddressType.IPV4)
    assert socks5.build_udp("10.0.0.1", 53, b"answer") == b"\x00\x00\x00\x01\x0a\x00\x00\x01\x00\x35answer"
    named = b"\x00\x00\x00\x03\x0bexample.com\x00\x35q"
    assert socks5.parse_udp(named) == socks5.Datagram("example.com", 53, b"q", AddressType.DOMAIN)
    assert socks5.parse_udp(b"\x00\x00\x01" + datagram[3:]) is None          # a fragment: dropped
    for bad in (b"", b"\x00\x00\x00\x01\x0a\x00", b"\x00\x01\x00" + datagram[3:], b"\x00\x00\x00\x07" + bytes(8)):
        with pytest.raises(SocksError):
            socks5.parse_udp(bad)


# -- properties ------------------------------------------------------------------------------

EXCHANGES = [
    (None, NO_AUTH_GREETING + CONNECT_V4),
    (None, NO_AUTH_GREETING + CONNECT_V6),
    (None, AUTH_GREETING[:1] + b"\x01\x00" + CONNECT_NAME),
    (CREDENTIALS, AUTH_GREETING + AUTH + CONNECT_NAME),
    (CREDENTIALS, AUTH_GREETING + AUTH + UDP_ASSOCIATE),
]


def feed(credentials, chunks):
    server = Server(credentials)
    events, rest = [], b""
    for chunk in chunks:
        got, used = server.receive(chunk)
        events += got
        if server.done:
            rest += chunk[used:]
        else:
            assert used == len(chunk)
    return events, rest


@given(st.sampled_from(EXCHANGES), st.binary(max_size=20), st.lists(st.integers(0, 400), max_size=8))
def test_any_split_gives_the_same_events(exchange, tail, cuts):
    credentials, data = exchange
    data += tail
    whole = feed(credentials, [data])
    points = sorted({min(cut, len(data)) for cut in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert feed(credentials, chunks) == whole
    assert whole[1] == tail
    assert isinstance(whole[0][-1], Request)


@given(st.sampled_from([None, CREDENTIALS]), st.lists(st.binary(max_size=300), max_size=6))
def test_any_input_raises_only_socks_error(credentials, chunks):
    server = Server(credentials)
    try:
        for chunk in chunks:
            server.receive(chunk)
    except SocksError as error:
        assert isinstance(error.reply, bytes)
    assert len(server._buffer) <= 513  # one message at most


@given(st.binary(max_size=300))
def test_any_datagram_parses_or_raises_socks_error(data):
    try:
        socks5.parse_udp(data)
    except SocksError:
        pass


@given(st.one_of(st.ip_addresses().map(str), st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,3}", fullmatch=True)),
       st.integers(0, 65535), st.binary(max_size=64))
def test_udp_header_round_trip(host, port, data):
    parsed = socks5.parse_udp(socks5.build_udp(host, port, data))
    assert (parsed.host, parsed.port, parsed.data) == (host, port, data)


# -- a real client ---------------------------------------------------------------------------


def serve_once(listener: socket.socket, credentials, seen: list):
    """Accepts one client, runs the handshake, answers success and a short
    HTTP response on the 'tunnel', as the proxy will."""
    conn, _ = listener.accept()
    with conn:
        server = Server(credentials)
        rest = b""
        while not server.done:
            data = conn.recv(4096)
            if not data:
                return
            try:
                events, used = server.receive(data)
            except SocksError as error:
                conn.sendall(error.reply)
                seen.append(error)
                return
            for event in events:
                conn.sendall(event.reply)
            rest = data[used:]
        seen.append(server.request)
        conn.sendall(socks5.reply(Reply.SUCCEEDED, "10.0.0.2", 40000))
        while b"\r\n\r\n" not in rest:
            rest += conn.recv(4096)
        seen.append(rest)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\nthrough")


def curl_through(proxy: str, credentials, url: str):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        seen: list = []
        thread = threading.Thread(target=serve_once, args=(listener, credentials, seen))
        thread.start()
        port = listener.getsockname()[1]
        done = subprocess.run(["curl", "-sS", "--max-time", "10", "-x", proxy.format(port=port), url],
                              capture_output=True, timeout=30)
        thread.join(10)
    return done, seen


@pytest.mark.parametrize(("proxy", "url", "host", "kind"), [
    ("socks5h://127.0.0.1:{port}", "http://www.example.test:8080/x", "www.example.test", AddressType.DOMAIN),
    ("socks5://127.0.0.1:{port}", "http://127.0.0.9:8080/x", "127.0.0.9", AddressType.IPV4),
    ("socks5://127.0.0.1:{port}", "http://[fd00::9]:8080/x", "fd00::9", AddressType.IPV6),
])
def test_curl_connect(proxy, url, host, kind):
    done, seen = curl_through(proxy, None, url)
    assert done.stdout == b"through", done.stderr
    assert seen[0] == Request(Command.CONNECT, host, 8080, kind)
    assert seen[1].startswith(b"GET /x HTTP/1.1\r\n")


def test_curl_username_password():
    done, seen = curl_through("socks5h://user:secret@127.0.0.1:{port}", CREDENTIALS, "http://a.test/")
    assert done.stdout == b"through", done.stderr
    done, seen = curl_through("socks5h://user:wrong@127.0.0.1:{port}", CREDENTIALS, "http://a.test/")
    assert done.returncode != 0 and isinstance(seen[0], SocksError)
