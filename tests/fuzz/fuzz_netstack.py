"""The network stack's input (wgc/netstack/_stack.pyx and below): any
packets from the tunnel, one after another, at a stack with listeners (IPv4 and IPv6) and an
established connection.

Input: records of (2-byte length, packet), each delivered a millisecond
after the last.  Afterwards the stack must hold no more memory than its
cap, every packet it sent must be a well-formed IP packet with correct
checksums, and the established connection must still carry data both ways
(a blind packet cannot guess its sequence numbers, so nothing it does may
end or corrupt the connection).
"""
import struct

import common

with common.instrumented():
    from netstack_link import MS, Link
    from test_netstack_tcp import A4, A6, B4, B6, Stream, connected, transfer
    from test_offload import reference_sum
    from wgc.netstack._stack import Stack

MEMORY_MAX = 1 << 20
BUFFER = 16384


def checksums_valid(packet: bytes) -> bool:
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 15) * 4
        if reference_sum(packet[:ihl]) != 0xFFFF:
            return False
        proto, body, pseudo = packet[9], packet[ihl:], packet[12:20]
        if proto == 1:
            return reference_sum(body) == 0xFFFF
    else:
        proto, body, pseudo = packet[6], packet[40:], packet[8:40]
    return reference_sum(pseudo + struct.pack("!HH", proto, len(body)) + body) == 0xFFFF


def one_input(data: bytes) -> None:
    a = Stack([A4, A6], buffer=BUFFER, memory_max=MEMORY_MAX)
    b = Stack([B4, B6], buffer=BUFFER)
    link = Link(a, b)
    client, server, _ = connected(link)
    a.listen(A6, 8080)
    at = 0
    while at + 2 <= len(data):
        (length,) = struct.unpack_from("!H", data, at)
        packet = data[at + 2:at + 2 + length]
        at += 2 + length
        link.now += MS
        a.receive(packet, link.now)
        a.advance(link.now)
        for out in a.take_output(link.now):
            assert checksums_valid(out), out.hex()
        assert a.memory <= MEMORY_MAX
    up = Stream(link, a, client, b, server, b"after the storm" * 100, close=False)
    down = Stream(link, b, server, a, client, b"still standing" * 100, close=False)
    assert transfer(link, [up, down], 120_000 * MS)
    assert bytes(up.received) == up.data and bytes(down.received) == down.data


def seeds() -> list[bytes]:
    """Real packets of a connection's life, IPv4 and IPv6: SYNs, data, ACKs, FINs, RSTs."""
    found = []
    for v6 in (False, True):
        a, b = Stack([A4, A6]), Stack([B4, B6])
        link = Link(a, b)
        link.capture = True
        b.listen("::" if v6 else "0.0.0.0", 80)
        c = a.connect(A6 if v6 else A4, B6 if v6 else B4, 80, link.now)
        link.run(lambda a=a, c=c: a.state(c) == "ESTABLISHED", 1000 * MS)
        a.send(c, b"hello" * 300, link.now)
        link.run(lambda: False, 100 * MS)
        a.abort(c, link.now)
        link.run(lambda: False, 100 * MS)
        packets = [p for _, _, p in link.captured]
        found.append(b"".join(struct.pack("!H", len(p)) + p for p in packets))
        found += [struct.pack("!H", len(p)) + p for p in packets[:4]]
    return found


if __name__ == "__main__":
    common.main(one_input)
