"""DNS answers into the netstack's resolver (wgc/netstack/dns.py getaddrinfo).

dnspython parses the bytes; what is the resolver's own is what it makes of the parsed
message: the ID and question check, TC and the TCP framing, rcodes, CNAME chains, the
search list, and the tuples it builds.  The input is one answer, given (with the query's
ID put in its first two bytes, so that the fuzzer need not guess it) to every UDP
exchange and, length-prefixed, to every TCP one; each exchange's next read times out.
Invariants: getaddrinfo returns getaddrinfo tuples whose every address is in the answer's
bytes, or raises socket.gaierror with EAI_NONAME, EAI_NODATA or EAI_AGAIN; nothing else.
"""
import ipaddress
import socket

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

import common

with common.instrumented():
    from wgc.netstack.dns import DNS_PORT, Resolver

SERVER = "10.0.0.53"
ERRORS = {socket.EAI_NONAME, socket.EAI_NODATA, socket.EAI_AGAIN}


class Transport:
    """One fake UDP socket or TCP stream, answering each query with the fuzzed answer."""

    def __init__(self, answer: bytes, stream: bool):
        self.answer = answer
        self.stream = stream
        self.pending = b""
        self.answered = False

    def settimeout(self, value):
        pass

    def connect(self, address):
        pass

    def send(self, data):
        self.query_id = data[:2]
        return len(data)

    def sendall(self, data):
        self.query_id = data[2:4]
        reply = self.patched()
        self.pending = len(reply).to_bytes(2, "big") + reply

    def patched(self) -> bytes:
        return self.query_id + self.answer[2:] if len(self.answer) >= 2 else self.answer

    def recvfrom(self, bufsize):
        if self.answered:
            raise TimeoutError
        self.answered = True
        return self.patched(), (SERVER, DNS_PORT)

    def recv(self, bufsize):
        chunk, self.pending = self.pending[:bufsize], self.pending[bufsize:]
        return chunk

    def close(self):
        pass


def one_input(data: bytes) -> None:
    resolver = Resolver([SERVER], udp_socket=lambda family: Transport(data, False),
                        create_connection=lambda address, timeout: Transport(data, True),
                        timeout=5.0, attempts=1, search=["test"])
    try:
        infos = resolver.getaddrinfo("web.test", 80, 0, socket.SOCK_STREAM, 0, socket.AI_CANONNAME)
    except socket.gaierror as error:
        assert error.errno in ERRORS, error
        return
    assert infos and isinstance(infos[0][3], str) and infos[0][3]
    for family, kind, proto, _, address in infos:
        assert kind == socket.SOCK_STREAM and proto == socket.IPPROTO_TCP and address[1] == 80
        ip = ipaddress.ip_address(address[0])
        assert family == (socket.AF_INET6 if ip.version == 6 else socket.AF_INET)
        assert ip.packed in data, (ip, data)


def seeds() -> list[bytes]:
    """Answers to the resolver's first question (web.test A), as a server writes them."""
    query = dns.message.make_query("web.test", "A")

    def answer(*records, rcode=dns.rcode.NOERROR, flags=0):
        response = dns.message.make_response(query)
        response.set_rcode(rcode)
        response.flags |= flags
        response.answer += [dns.rrset.from_text(*record) for record in records]
        return response.to_wire()

    return [
        answer(("web.test.", 60, "IN", "A", "10.1.0.1", "10.1.0.2")),
        answer(("web.test.", 60, "IN", "CNAME", "alias.test."), ("alias.test.", 60, "IN", "CNAME", "host.test."),
               ("host.test.", 60, "IN", "A", "10.1.0.3")),
        answer(("web.test.", 60, "IN", "A", "10.1.0.4"), flags=dns.flags.TC),
        answer(rcode=dns.rcode.NXDOMAIN),
        answer(),
        answer(rcode=dns.rcode.SERVFAIL),
        answer(rcode=dns.rcode.REFUSED),
    ]


if __name__ == "__main__":
    common.main(one_input)
