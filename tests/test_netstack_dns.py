"""wgc/netstack/dns.py: the tunnel's resolver, over the kernel's sockets inside a namespace.

The resolver takes socket factories; here they make real sockets inside a namespace
(Netns.inside), where Debian's dnsmasq serves a small zone, and where the test itself
plays the servers dnsmasq cannot be: one that never answers, and one that forges.
glibc's own getaddrinfo, pointed at the same dnsmasq, is the reference for the shape
of the answers and the error codes.
"""
import ast
import os
import shutil
import socket
import sys
import threading
import time

import dns.flags
import dns.message
import dns.rrset
import pytest

from netns import resolv_conf, start_dnsmasq, wait_for
from wgc.netstack.dns import DNS_PORT, Resolver

DNSMASQ = "127.0.0.1"
DNSMASQ6 = "fd00::53"
SILENT = "127.0.0.2"        # a bound UDP socket that never answers
FORGER = "127.0.0.3"        # the test's own server: a forged answer first, then the true one
REFUSER = "127.0.0.4"       # a dnsmasq with no zone and no upstream: REFUSED to everything
MANY = [f"10.2.0.{i}" for i in range(1, 41)]     # 40 A records: 30 fit in 512 bytes
HOSTS = "\n".join(["10.1.0.1 web.test", "fd00::1:1 web.test", "10.1.0.2 only4.test", "10.1.0.3 www.lan.test",
                   *(f"{address} many.test" for address in MANY)]) + "\n"


class Zone:
    """A namespace with dnsmasq on 127.0.0.1 and fd00::53 (the zone), another on 127.0.0.4
    refusing everything, and a silent UDP socket bound on 127.0.0.2:53."""

    def __init__(self, ns, directory):
        self.ns = ns
        ns.run("ip", "addr", "add", f"{DNSMASQ6}/128", "dev", "lo", "nodad")
        hosts = os.path.join(directory, "hosts")
        with open(hosts, "w") as f:
            f.write(HOSTS)
        start_dnsmasq(ns, f"{DNSMASQ},{DNSMASQ6}", f"--addn-hosts={hosts}", "--local=/test/",
                      "--cname=alias.test,web.test", "--cname=alias2.test,alias.test")
        start_dnsmasq(ns, REFUSER)
        self.silent = self.bound(SILENT)
        for server in (DNSMASQ, DNSMASQ6, REFUSER):
            wait_for(lambda server=server: self.answers(server), what=f"dnsmasq on {server}")

    def udp_socket(self, family):
        return self.ns.inside(socket.socket, family, socket.SOCK_DGRAM)

    def create_connection(self, address, timeout):
        return self.ns.inside(socket.create_connection, address, timeout)

    def resolver(self, servers, **options):
        options.setdefault("timeout", 0.5)
        return Resolver(servers, udp_socket=self.udp_socket, create_connection=self.create_connection, **options)

    def bound(self, address):
        sock = self.udp_socket(socket.AF_INET)
        sock.bind((address, DNS_PORT))
        return sock

    def answers(self, server):
        query = dns.message.make_query("web.test", "A")
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        with self.udp_socket(family) as sock:
            sock.settimeout(0.2)
            sock.sendto(query.to_wire(), (server, DNS_PORT))
            try:
                return sock.recv(512)
            except TimeoutError:
                return None

    def close(self):
        self.silent.close()


@pytest.fixture
def zone(netns, tmp_path):
    if shutil.which("dnsmasq") is None:
        pytest.fail("dnsmasq is not installed (apt-get install dnsmasq; see the README's test set-up)")
    made = Zone(netns("dns"), str(tmp_path))
    yield made
    made.close()


def queries(sock) -> list[dns.message.Message]:
    """The queries that reached a server socket so far."""
    received = []
    sock.setblocking(False)
    try:
        while True:
            received.append(dns.message.from_wire(sock.recv(512)))
    except BlockingIOError:
        return received
    finally:
        sock.setblocking(True)


@pytest.mark.netns
def test_addresses_of_both_families_in_order(zone):
    resolver = zone.resolver([DNSMASQ])
    assert resolver.resolve("web.test") == ["10.1.0.1", "fd00::1:1"]
    assert resolver.resolve("web.test", socket.AF_INET) == ["10.1.0.1"]
    assert resolver.resolve("web.test", socket.AF_INET6) == ["fd00::1:1"]
    ipv6_first = zone.resolver([DNSMASQ], ipv6_first=True)
    assert ipv6_first.resolve("web.test") == ["fd00::1:1", "10.1.0.1"]
    # AI_V4MAPPED is for AF_INET6 alone: with AF_UNSPEC each address keeps its family.
    infos = ipv6_first.getaddrinfo("web.test", 80, 0, socket.SOCK_STREAM, 0, socket.AI_V4MAPPED)
    assert [info[4][0] for info in infos] == ["fd00::1:1", "10.1.0.1"]


@pytest.mark.netns
def test_server_with_an_ipv6_address(zone):
    assert zone.resolver([DNSMASQ6]).resolve("web.test") == ["10.1.0.1", "fd00::1:1"]


@pytest.mark.netns
def test_cname_chain_is_followed_and_named(zone):
    infos = zone.resolver([DNSMASQ]).getaddrinfo("alias2.test", 443, socket.AF_INET, socket.SOCK_STREAM,
                                                 0, socket.AI_CANONNAME)
    assert infos == [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "web.test", ("10.1.0.1", 443))]


@pytest.mark.netns
def test_truncated_answer_is_fetched_over_tcp(zone):
    # Without EDNS dnsmasq fits 30 of the 40 records in 512 bytes and sets TC:
    with zone.udp_socket(socket.AF_INET) as sock:
        sock.settimeout(2)
        sock.sendto(dns.message.make_query("many.test", "A").to_wire(), (DNSMASQ, DNS_PORT))
        over_udp = dns.message.from_wire(sock.recv(512))
    assert over_udp.flags & dns.flags.TC and len(over_udp.answer[0]) < len(MANY)
    assert sorted(zone.resolver([DNSMASQ]).resolve("many.test", socket.AF_INET)) == sorted(MANY)


@pytest.mark.netns
def test_unanswering_server_is_passed_over(zone):
    assert zone.resolver([SILENT, DNSMASQ]).resolve("web.test", socket.AF_INET) == ["10.1.0.1"]
    asked = queries(zone.silent)
    assert [str(query.question[0].name) for query in asked] == ["web.test."]


@pytest.mark.netns
def test_refusing_server_is_passed_over(zone):
    assert zone.resolver([REFUSER, DNSMASQ]).resolve("web.test", socket.AF_INET) == ["10.1.0.1"]


@pytest.mark.netns
def test_nxdomain_is_final(zone):
    """NXDOMAIN answers the name for every type and every server: neither the AAAA
    question nor the next server is asked."""
    with pytest.raises(socket.gaierror) as raised:
        zone.resolver([DNSMASQ, SILENT]).getaddrinfo("nowhere.test", 80)
    assert raised.value.errno == socket.EAI_NONAME
    assert queries(zone.silent) == []


@pytest.mark.netns
def test_no_answer_from_any_server(zone):
    """Every round asks again, with a new ID from a new port; then EAI_AGAIN."""
    resolver = zone.resolver([SILENT], timeout=0.2, attempts=3)
    with pytest.raises(socket.gaierror) as raised:
        resolver.resolve("web.test", socket.AF_INET)
    assert raised.value.errno == socket.EAI_AGAIN
    sources = []
    zone.silent.setblocking(False)
    while True:
        try:
            data, source = zone.silent.recvfrom(512)
        except BlockingIOError:
            break
        sources.append((dns.message.from_wire(data).id, source[1]))
    assert len(sources) == 3
    # Random 16-bit IDs and random ephemeral ports: the same thrice is one chance in billions.
    assert len({port for _, port in sources}) > 1
    assert len({query_id for query_id, _ in sources}) > 1


@pytest.mark.netns
def test_lifetime_bounds_the_whole_lookup(zone):
    """0.2 s per exchange, five rounds, but 0.3 s in all: the second exchange gets what is
    left of the lifetime, and no third one starts."""
    resolver = zone.resolver([SILENT], timeout=0.2, attempts=5, lifetime=0.3)
    with pytest.raises(socket.gaierror) as raised:
        resolver.resolve("web.test")
    assert raised.value.errno == socket.EAI_AGAIN
    assert len(queries(zone.silent)) == 2


@pytest.mark.netns
def test_search_domains(zone):
    """dnsmasq answers NXDOMAIN inside .test and REFUSED outside: the search goes on after both."""
    resolver = zone.resolver([DNSMASQ], search=["nowhere.test", "test"])
    assert resolver.resolve("web", socket.AF_INET) == ["10.1.0.1"]              # web.nowhere.test, web.test
    infos = resolver.getaddrinfo("web", 80, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_CANONNAME)
    assert infos[0][3] == "web.test"
    assert resolver.resolve("www.lan", socket.AF_INET) == ["10.1.0.3"]         # www.lan, ..., www.lan.test
    with pytest.raises(socket.gaierror) as raised:      # a trailing dot: "web." alone, refused
        resolver.resolve("web.", socket.AF_INET)
    assert raised.value.errno == socket.EAI_AGAIN


class Forger:
    """A server on 127.0.0.3:53 that sends, for each query, first an answer with another
    ID (and another address), then the true answer."""

    FORGED, TRUE = "10.66.6.6", "10.1.0.1"

    def __init__(self, zone):
        self.sock = zone.bound(FORGER)
        self.thread = threading.Thread(target=self.serve)
        self.thread.start()

    def answer(self, query, query_id, address):
        response = dns.message.make_response(query)
        response.id = query_id
        response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", address))
        return response.to_wire()

    def serve(self):
        self.sock.settimeout(5)
        try:
            data, source = self.sock.recvfrom(512)
        except (TimeoutError, OSError):
            return
        query = dns.message.from_wire(data)
        self.sock.sendto(self.answer(query, query.id ^ 0x5A5A, self.FORGED), source)
        self.sock.sendto(self.answer(query, query.id, self.TRUE), source)

    def close(self):
        self.sock.close()
        self.thread.join()


@pytest.mark.netns
@pytest.mark.netns
def test_answer_with_another_id_is_ignored(zone):
    forger = Forger(zone)
    try:
        assert zone.resolver([FORGER]).resolve("web.test", socket.AF_INET) == [Forger.TRUE]
    finally:
        forger.close()


class Flooder(Forger):
    """A server that answers each query with answers of another ID, without end: until
    closed, or after FLOOD datagrams (seconds here), or after SECONDS."""

    FLOOD, SECONDS = 200_000, 20

    def serve(self):
        self.sock.settimeout(5)
        try:
            data, source = self.sock.recvfrom(512)
            query = dns.message.from_wire(data)
            forged = self.answer(query, query.id ^ 0x5A5A, self.FORGED)
            end = time.monotonic() + self.SECONDS
            for _ in range(self.FLOOD):
                self.sock.sendto(forged, source)
                if time.monotonic() > end:
                    break
        except OSError:     # closed under it: the test is over
            return


@pytest.mark.netns
def test_forged_answers_do_not_stretch_the_wait(zone):
    """Every dropped datagram shortens the wait that is left instead of starting it anew:
    the resolver gives up while the flood still runs."""
    flooder = Flooder(zone)
    try:
        with pytest.raises(socket.gaierror) as raised:
            zone.resolver([FORGER], timeout=0.3, attempts=1).resolve("web.test", socket.AF_INET)
        assert raised.value.errno == socket.EAI_AGAIN
        assert flooder.thread.is_alive(), "the flood ended before the resolver gave up"
    finally:
        flooder.close()


@pytest.mark.netns
def test_ip_literals_and_localhost_ask_nobody(zone):
    resolver = zone.resolver([SILENT])
    for args in [("10.0.0.1", 80), ("127.1", "http"), ("::1", "53", socket.AF_INET6, socket.SOCK_DGRAM),
                 ("fe80::1%lo", 22, 0, socket.SOCK_STREAM),
                 ("10.0.0.1", 80, socket.AF_INET6, 0, 0, socket.AI_V4MAPPED),
                 (None, 443, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE),
                 ("10.0.0.1", None, 0, 0, 0, socket.AI_CANONNAME)]:
        assert resolver.getaddrinfo(*args) == socket.getaddrinfo(*args), args
    for args in [("10.0.0.1", "no-such-service"), ("web.test", 80, 0, 0, 0, socket.AI_NUMERICHOST),
                 ("web.test", 80, socket.AF_UNIX), (None, None)]:
        with pytest.raises(socket.gaierror) as ours:
            resolver.getaddrinfo(*args)
        with pytest.raises(socket.gaierror) as system:
            socket.getaddrinfo(*args)
        assert ours.value.args == system.value.args, args
    assert resolver.resolve("localhost") == ["127.0.0.1", "::1"]
    assert resolver.getaddrinfo("LocalHost.", 80, socket.AF_INET6, socket.SOCK_STREAM, 0, socket.AI_CANONNAME) == [
        (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "LocalHost", ("::1", 80, 0, 0))]
    assert queries(zone.silent) == []


# glibc's answers, asked inside the namespace with /etc/netns/NAME/resolv.conf naming the zone's
# dnsmasq (ip netns exec mounts it over /etc/resolv.conf).
GLIBC = """
import socket, sys
for args in eval(sys.argv[1]):
    try:
        print(repr([(int(f), int(t), p, c, a) for f, t, p, c, a in socket.getaddrinfo(*args)]))
    except socket.gaierror as error:
        print(repr(error.args))
"""
DIFFERENTIAL = [
    ("web.test", 80, socket.AF_INET),
    ("web.test", "http", socket.AF_INET6, socket.SOCK_STREAM),
    ("alias2.test", 443, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_CANONNAME),
    ("alias.test", "domain", socket.AF_INET6, 0, 0, socket.AI_CANONNAME),
    ("only4.test", 80, socket.AF_INET6),
    ("only4.test", 80, socket.AF_INET6, socket.SOCK_STREAM, 0, socket.AI_V4MAPPED),
    ("web.test", 80, socket.AF_INET6, socket.SOCK_STREAM, 0, socket.AI_V4MAPPED),
    ("nowhere.test", 80),
    ("nowhere.test", 80, socket.AF_INET6),
]


@pytest.fixture
def glibc_resolv_conf(zone):
    with resolv_conf(zone.ns, DNSMASQ):
        yield


@pytest.mark.netns
def test_same_answers_and_errors_as_glibc(zone, glibc_resolv_conf):
    plain = [tuple(int(a) if isinstance(a, int) else a for a in args) for args in DIFFERENTIAL]   # no enum reprs
    lines = zone.ns.run(sys.executable, "-c", GLIBC, repr(plain)).stdout.splitlines()
    resolver = zone.resolver([DNSMASQ])
    for args, line in zip(DIFFERENTIAL, lines, strict=True):
        try:
            ours = [(int(f), int(t), p, c, a) for f, t, p, c, a in resolver.getaddrinfo(*args)]
        except socket.gaierror as error:
            ours = error.args
        assert ours == ast.literal_eval(line), args


class FakeDatagram:
    """A UDP socket that hands out the datagrams it is given, with their source addresses."""

    def __init__(self, arrivals):
        self.arrivals = list(arrivals)
        self.sent = []

    def settimeout(self, value):
        pass

    def connect(self, address):
        self.peer = address

    def send(self, data):
        self.sent.append(data)
        return len(data)

    def recvfrom(self, bufsize):
        if not self.arrivals:
            raise TimeoutError
        make, source = self.arrivals.pop(0)
        return make(dns.message.from_wire(self.sent[-1])), source

    def close(self):
        pass


def test_answer_from_another_source_is_ignored():
    """In memory, because the kernel's connected UDP socket drops datagrams from any other
    address or port before recvfrom sees them: no real server can show the resolver's own
    check, which the netstack's sockets may need."""

    def answer(address):
        def make(query):
            response = dns.message.make_response(query)
            response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", address))
            return response.to_wire()
        return make

    transport = FakeDatagram([(answer("10.66.6.6"), ("10.9.9.9", DNS_PORT)),
                              (answer("10.66.6.7"), ("10.0.0.53", 5353)),
                              (answer("10.1.0.1"), ("10.0.0.53", DNS_PORT))])
    resolver = Resolver(["10.0.0.53"], udp_socket=lambda family: transport,
                        create_connection=lambda address, timeout: pytest.fail("no TCP expected"))
    assert resolver.resolve("web.test", socket.AF_INET) == ["10.1.0.1"]
    assert transport.peer == ("10.0.0.53", DNS_PORT)
