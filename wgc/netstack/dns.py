"""Name resolution through the tunnel: the configuration's DNS servers (wg-quick's `DNS =`),
asked over whatever sockets the caller hands in.

The resolver owns no transport.  It is given two factories shaped like the socket module's:
`udp_socket(family)` for a datagram socket and `create_connection((host, port), timeout)` for
a stream, so that the same code runs over the in-process stack (wgc.netstack.Net) and, in the
tests, over the kernel's sockets inside a namespace.  dnspython builds and parses the messages;
what is ours is which answer is believed and when to give up:

- UDP first, a fresh random message ID per exchange and a fresh socket (so a fresh ephemeral
  source port); a datagram is believed only if it comes from the server asked, from port 53,
  and carries that ID and that question.  Anything else is dropped and the wait goes on, but
  never past the attempt's deadline, however many forged datagrams arrive.
- TC=1: the same question again to the same server over TCP (two-byte length prefix, RFC 7766).
- SERVFAIL, REFUSED or any other error code, an unparsable answer, a timeout or a socket error:
  the next server; `attempts` rounds over all of them.  NXDOMAIN ends the question at once, as
  it holds for every type of record (RFC 8020), so the AAAA question is not asked after it.
- CNAME chains are followed within the answer (dnspython's resolve_chaining), never re-asked.
- One lookup (all its questions: both families, every search domain) ends within `lifetime`,
  by default the time one unanswered question takes: timeout x attempts x servers.

No EDNS is sent: like glibc's resolver by default, answers over 512 bytes come back truncated
and are fetched over TCP.  Nothing is cached: every lookup asks the servers again.

getaddrinfo has socket.getaddrinfo's shape and errors because it hands every address it found
to socket.getaddrinfo as a numeric host (AI_NUMERICHOST, so the C library never asks anyone):
the C library makes the tuples, reads ports and service names (/etc/services), and raises its
own errors for bad arguments.  IP literals (IPv4, IPv6, IPv6 with %scope) and host None go the
same way without any question.  AI_ADDRCONFIG is dropped: it would look at the system's
addresses, not the tunnel's.  'localhost' and names under it are answered 127.0.0.1 and ::1
without asking (RFC 6761 6.3), as /etc/hosts answers them on a Debian system; asking the
tunnel's servers would send them a name that is never theirs.

Search domains follow resolv.conf(5) with ndots:1: a name with a dot is tried as it is first,
then with each search domain appended; a single label the other way round; a trailing dot
means no search.  The next name is tried after NXDOMAIN, no data, or servers that answered
only SERVFAIL or REFUSED (a server that refuses names outside its own zones); a question no
server answered at all ends the lookup (EAI_AGAIN), as in glibc's res_search.

Errors are glibc's: EAI_NONAME after NXDOMAIN, EAI_NODATA for a name with no address of the
family asked, EAI_AGAIN when no server gave a usable answer in time.

Order for AF_UNSPEC is wireguard-go's netstack LookupContextHost's, not RFC 6724's as glibc's:
IPv6 addresses first if the stack has an IPv6 address (ipv6_first=True), IPv4 first otherwise.
Unlike LookupContextHost, both questions are asked whatever the stack's addresses (as
socket.getaddrinfo does without AI_ADDRCONFIG), one after the other.
"""
import ipaddress
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

DNS_PORT = 53
# Datagrams are read whole whatever their size; without EDNS a server sends at most 512 bytes.
_DATAGRAM_MAX = 65535
_MAPPED_PREFIX = "::ffff:"
_LOOPBACK = {dns.rdatatype.A: "127.0.0.1", dns.rdatatype.AAAA: "::1"}
_LOCALHOST = b"localhost"
# glibc's gai_strerror texts, so that the errors read as socket.getaddrinfo's.
_MESSAGES = {
    socket.EAI_NONAME: "Name or service not known",
    socket.EAI_NODATA: "No address associated with hostname",
    socket.EAI_AGAIN: "Temporary failure in name resolution",
}


class Datagram(Protocol):
    """What the resolver uses of a UDP socket (socket.socket is one)."""

    def settimeout(self, value: float | None, /) -> None: ...
    def connect(self, address: tuple[str, int], /) -> None: ...
    def send(self, data: bytes, /) -> int: ...
    def recvfrom(self, bufsize: int, /) -> tuple[bytes, Any]: ...
    def close(self) -> None: ...


class Stream(Protocol):
    """What the resolver uses of a connected TCP socket (socket.socket is one)."""

    def settimeout(self, value: float | None, /) -> None: ...
    def sendall(self, data: bytes, /) -> None: ...
    def recv(self, bufsize: int, /) -> bytes: ...
    def close(self) -> None: ...


class _Unusable(Exception):
    """This server's answer cannot be used; the next server is asked."""


class _NoAnswer(Exception):
    """No server gave a usable answer in time (EAI_AGAIN).  replied: one at least answered,
    with SERVFAIL, REFUSED or such, so it is reachable and the search goes on."""

    def __init__(self, replied: bool):
        super().__init__(replied)
        self.replied = replied


class _NoSuchName(Exception):
    """NXDOMAIN: the name does not exist, for any type."""


class _NoData(Exception):
    """The name exists but has no address of the types asked."""


def _gaierror(code: int) -> socket.gaierror:
    return socket.gaierror(code, _MESSAGES[code])


def _host_bytes(host: str | bytes) -> bytes:
    """The name as the socket module passes it to the C library: ASCII as it is, other text
    through the idna codec (IDNA 2003), bytes untouched."""
    if isinstance(host, str):
        return host.encode("ascii") if host.isascii() else host.encode("idna")
    return bytes(host)


class _Server:
    """One DNS server of the configuration, asked on port 53."""

    def __init__(self, text: str):
        address = ipaddress.ip_address(text)        # ValueError for anything but an IP literal
        self.text = text
        self.family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        self.address = ipaddress.ip_address(text.partition("%")[0])

    def sent(self, source: Any) -> bool:
        """Whether a datagram's source address is this server's port 53.  The scope of a
        link-local address is left out: the stack may name it by index or by interface."""
        try:
            host, port = source[0], source[1]
            return port == DNS_PORT and ipaddress.ip_address(str(host).partition("%")[0]) == self.address
        except (TypeError, IndexError, ValueError):
            return False


class Resolver:
    """Asks `servers` (IP literals) for A and AAAA records through the given sockets.

    timeout bounds one exchange with one server (UDP and, after TC=1, TCP); attempts is the
    number of rounds over all servers; search holds the search domains of the DNS= line;
    lifetime bounds one lookup as a whole.  The resolver keeps no state between lookups, so
    threads may share one.
    """

    def __init__(self, servers: Sequence[str], *, udp_socket: Callable[[int], Datagram],
                 create_connection: Callable[[tuple[str, int], float], Stream], timeout: float = 2.0,
                 attempts: int = 2, search: Iterable[str] = (), ipv6_first: bool = False,
                 lifetime: float | None = None):
        if not servers:
            raise ValueError("no DNS server")
        if timeout <= 0 or attempts < 1:
            raise ValueError("timeout must be positive and attempts at least 1")
        self.servers = [_Server(server) for server in servers]
        self.udp_socket = udp_socket
        self.create_connection = create_connection
        self.timeout = timeout
        self.attempts = attempts
        self.search = [dns.name.from_text(domain) for domain in search]
        self.ipv6_first = ipv6_first
        self.lifetime = timeout * attempts * len(self.servers) if lifetime is None else lifetime

    # -- the socket module's face ------------------------------------------------------------

    def resolve(self, host: str | bytes, family: int = socket.AF_UNSPEC) -> list[str]:
        """The addresses of host, in getaddrinfo's order (an IP literal: itself)."""
        return [info[4][0] for info in self.getaddrinfo(host, None, family, socket.SOCK_STREAM)]

    def getaddrinfo(self, host: str | bytes | None, port: str | bytes | int | None, family: int = 0,
                    type: int = 0, proto: int = 0, flags: int = 0) -> list[tuple[Any, ...]]:
        """socket.getaddrinfo, with names resolved by the tunnel's servers."""
        numeric = (flags | socket.AI_NUMERICHOST) & ~socket.AI_ADDRCONFIG
        try:
            return socket.getaddrinfo(host, port, family, type, proto, numeric)
        except socket.gaierror as error:
            if error.errno != socket.EAI_NONAME or flags & socket.AI_NUMERICHOST or host is None:
                raise
        addresses, canonical = self._lookup(_host_bytes(host), family, flags)
        infos: list[tuple[Any, ...]] = []
        for address in addresses:
            address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
            infos += socket.getaddrinfo(address, port, address_family, type, proto, numeric & ~socket.AI_CANONNAME)
        if flags & socket.AI_CANONNAME and infos:
            infos[0] = (*infos[0][:3], canonical, *infos[0][4:])
        return infos

    # -- names -------------------------------------------------------------------------------

    def _lookup(self, host: bytes, family: int, flags: int) -> tuple[list[str], str]:
        """The addresses of a host name and its canonical name, or socket.gaierror."""
        absolute = host.endswith(b".")
        labels = (host[:-1] if absolute else host).split(b".")
        if not all(labels):
            raise _gaierror(socket.EAI_NONAME)
        try:
            relative = dns.name.Name(labels)
        except dns.exception.DNSException:      # a label over 63 bytes, a name over 255
            raise _gaierror(socket.EAI_NONAME) from None
        if labels[-1].lower() == _LOCALHOST:
            # ::1 always answers AF_INET6, so AI_V4MAPPED never comes into it.
            return [_LOOPBACK[rdtype] for rdtype in self._rdtypes(family, 0)], relative.to_text()
        deadline = time.monotonic() + self.lifetime
        nodata = failed = False
        for name in self._candidates(relative, absolute):
            try:
                addresses, canonical = self._addresses(name, family, flags, deadline)
                return addresses, canonical.to_text(omit_final_dot=True)
            except _NoSuchName:
                pass
            except _NoData:
                nodata = True
            except _NoAnswer as unanswered:
                if not unanswered.replied:
                    raise _gaierror(socket.EAI_AGAIN) from None
                failed = True
        if failed:
            raise _gaierror(socket.EAI_AGAIN)
        raise _gaierror(socket.EAI_NODATA if nodata else socket.EAI_NONAME)

    def _rdtypes(self, family: int, flags: int) -> list[dns.rdatatype.RdataType]:
        if family == socket.AF_INET:
            return [dns.rdatatype.A]
        if family == socket.AF_INET6:
            # AI_V4MAPPED: A records too, as ::ffff:a.b.c.d, if there is no AAAA (or AI_ALL).
            return [dns.rdatatype.AAAA, dns.rdatatype.A] if flags & socket.AI_V4MAPPED else [dns.rdatatype.AAAA]
        both = [dns.rdatatype.A, dns.rdatatype.AAAA]
        return both[::-1] if self.ipv6_first else both

    def _candidates(self, relative: dns.name.Name, absolute: bool) -> list[dns.name.Name]:
        """The names to ask for, in order (resolv.conf's search with ndots:1)."""
        as_is = relative.derelativize(dns.name.root)
        if absolute:
            return [as_is]
        searched = []
        for domain in self.search:
            try:
                searched.append(relative.concatenate(domain))
            except dns.name.NameTooLong:
                pass
        return [as_is, *searched] if len(relative) > 1 else [*searched, as_is]

    def _addresses(self, name: dns.name.Name, family: int, flags: int,
                   deadline: float) -> tuple[list[str], dns.name.Name]:
        """The addresses of one name for each type asked, the first type's first."""
        mapped = family == socket.AF_INET6 and bool(flags & socket.AI_V4MAPPED)
        found: list[str] = []
        canonical = name
        unanswered: _NoAnswer | None = None
        for rdtype in self._rdtypes(family, flags):
            if mapped and rdtype == dns.rdatatype.A and found and not flags & socket.AI_ALL:
                break
            try:
                rcode, chain = self._ask(name, rdtype, deadline)
            except _NoAnswer as error:
                unanswered = error
                continue
            if rcode == dns.rcode.NXDOMAIN:
                if found:
                    break
                raise _NoSuchName
            if chain.answer is None:
                continue
            if not found:
                canonical = chain.canonical_name
            prefix = _MAPPED_PREFIX if mapped and rdtype == dns.rdatatype.A else ""
            found += [prefix + rdata.address for rdata in chain.answer]
        if found:
            return found, canonical
        if unanswered:
            raise unanswered
        raise _NoData

    # -- one question ------------------------------------------------------------------------

    def _ask(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType,
             deadline: float) -> tuple[dns.rcode.Rcode, dns.message.ChainingResult]:
        """Asks the servers in turn until one answers NOERROR or NXDOMAIN."""
        query = dns.message.make_query(name, rdtype)
        replied = False
        for _ in range(self.attempts):
            for server in self.servers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _NoAnswer(replied)
                try:
                    response = self._exchange(server, query, time.monotonic() + min(self.timeout, remaining))
                    replied = True
                    rcode = response.rcode()
                    if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                        return rcode, response.resolve_chaining()
                except (OSError, _Unusable, dns.exception.DNSException):
                    pass
        raise _NoAnswer(replied)

    def _exchange(self, server: _Server, query: dns.message.Message, deadline: float) -> dns.message.QueryMessage:
        """One exchange with one server: UDP, then TCP if the answer was truncated."""
        query.id = secrets.randbits(16)
        wire = query.to_wire()
        sock = self.udp_socket(server.family)
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.connect((server.text, DNS_PORT))
            sock.send(wire)
            response = self._receive_datagram(sock, server, query, deadline)
        finally:
            sock.close()
        if response is None:
            response = self._exchange_stream(server, query, wire, deadline)
        return response

    def _receive_datagram(self, sock: Datagram, server: _Server, query: dns.message.Message,
                          deadline: float) -> dns.message.QueryMessage | None:
        """The answer to query, or None if it came truncated; drops every other datagram."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            data, source = sock.recvfrom(_DATAGRAM_MAX)
            if not server.sent(source):
                continue
            try:
                response = dns.message.from_wire(data, raise_on_truncation=True)
            except dns.message.Truncated as truncated:
                # Only the header and question need be whole: the rest comes over TCP.
                if query.is_response(truncated.message()):
                    return None
                continue
            except dns.exception.DNSException:
                continue
            if query.is_response(response) and isinstance(response, dns.message.QueryMessage):
                return response

    def _exchange_stream(self, server: _Server, query: dns.message.Message, wire: bytes,
                         deadline: float) -> dns.message.QueryMessage:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        stream = self.create_connection((server.text, DNS_PORT), remaining)
        try:
            stream.sendall(len(wire).to_bytes(2, "big") + wire)
            size = int.from_bytes(_read_exactly(stream, 2, deadline), "big")
            data = _read_exactly(stream, size, deadline)
        finally:
            stream.close()
        response = dns.message.from_wire(data)
        if not (query.is_response(response) and isinstance(response, dns.message.QueryMessage)) \
                or response.flags & dns.flags.TC:
            raise _Unusable("not the answer, or truncated over TCP")
        return response


def _read_exactly(stream: Stream, size: int, deadline: float) -> bytes:
    data = b""
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        stream.settimeout(remaining)
        chunk = stream.recv(size - len(data))
        if not chunk:
            raise _Unusable("the server closed the connection mid-answer")
        data += chunk
    return data
