"""Fragments the Linux kernel makes, caught on a TUN: known answers for reassembly.

In a namespace of its own, a TUN device with a small MTU carries a route to
a peer that does not exist; a UDP datagram larger than the MTU sent there
leaves the kernel in fragments, which this module reads from the TUN's file
descriptor.  The cases cover IPv4 with and without options (Record Route,
which is not copied: Linux fills its place with NOPs in later fragments)
and IPv6 with and without a Hop-by-Hop header before the Fragment header.

    python tests/kernel_fragments.py tests/vectors/linux-fragments.json

(as root) writes the vector file tests/test_netstack_frag.py reads;
test_live_kernel_fragments there catches a fresh set from the running kernel.
"""
import fcntl
import json
import os
import platform
import select
import socket
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
IP_MTU_DISCOVER, IP_PMTUDISC_DONT = 10, 0             # <linux/in.h>; not in Python 3.11's socket
ADDRESS4, PEER4 = "192.0.2.1", "192.0.2.2"            # RFC 5737 documentation addresses
ADDRESS6, PEER6 = "2001:db8::1", "2001:db8::2"        # RFC 3849
PORT = 9
IPPROTO_FRAGMENT = 44
IPPROTO_HOPOPTS = 0
# Record Route with room for one address, then a NOP to fill the header to a 4-byte multiple.
RECORD_ROUTE = bytes([7, 7, 4, 0, 0, 0, 0, 1])
# A Hop-by-Hop header holding only padding (PadN, four zero bytes); Next Header is the kernel's.
HOP_BY_HOP_PAD = bytes([0, 0, 1, 4, 0, 0, 0, 0])

# (name, family, MTU, payload length, socket options)
CASES = (
    ("ipv4", 4, 576, 1200, ()),
    ("ipv4-options", 4, 576, 1000, ((socket.IPPROTO_IP, socket.IP_OPTIONS, RECORD_ROUTE),)),
    ("ipv6", 6, 1280, 2600, ()),
    ("ipv6-hop-by-hop", 6, 1280, 1500, ((socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, HOP_BY_HOP_PAD),)),
)


def payload(length: int, seed: int) -> bytes:
    """Bytes that differ at every position of a fragment, so that a piece out of place shows."""
    return bytes((i * 7 + seed + (i >> 8)) & 0xFF for i in range(length))


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def is_fragment(packet: bytes) -> bool:
    if packet[0] >> 4 == 4:
        return struct.unpack_from("!H", packet, 6)[0] & 0x3FFF != 0
    return packet[0] >> 4 == 6 and fragment_header_at(packet) is not None


def fragment_header_at(packet: bytes) -> tuple[int, int] | None:
    """(next_header_at, frag_at) of an IPv6 packet's Fragment header, past any Hop-by-Hop header."""
    next_header_at, at = 6, 40
    if packet[6] == IPPROTO_HOPOPTS:
        next_header_at, at = 40, 40 + (packet[41] + 1) * 8
    return (next_header_at, at) if packet[next_header_at] == IPPROTO_FRAGMENT else None


def read_fragments(fd: int, deadline: float) -> list[bytes]:
    """The fragments of one datagram, in the order the kernel wrote them (other
    packets, such as IPv6 router solicitations, are passed over)."""
    fragments: list[bytes] = []
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 0.1)[0]:
            if fragments:
                return fragments
            continue
        packet = os.read(fd, 65536)
        if is_fragment(packet):
            fragments.append(packet)
    raise TimeoutError("no fragments on the TUN")


def capture_inside() -> list[dict]:
    """Runs inside a fresh namespace: each case's datagram, sent and caught."""
    results = []
    for index, (case, family, mtu, length, options) in enumerate(CASES):
        tun = f"frag{index}"        # the namespace is the caller's own: no other test sees the name
        fd = open_tun(tun)
        try:
            subprocess.run(["ip", "link", "set", tun, "mtu", str(mtu), "up"], check=True)
            if family == 4:
                subprocess.run(["ip", "addr", "add", f"{ADDRESS4}/24", "dev", tun], check=True)
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
                peer = PEER4
            else:
                subprocess.run(["ip", "addr", "add", f"{ADDRESS6}/64", "dev", tun, "nodad"], check=True)
                sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                peer = PEER6
            with sock:
                for level, option, value in options:
                    sock.setsockopt(level, option, value)
                data = payload(length, index)
                sock.sendto(data, (peer, PORT))
                fragments = read_fragments(fd, time.monotonic() + 5)
        finally:
            os.close(fd)
            subprocess.run(["ip", "link", "del", tun], check=False)
        results.append({"name": case, "family": family, "mtu": mtu, "payload": data.hex(),
                        "fragments": [f.hex() for f in fragments]})
    return results


def capture(ns) -> list[dict]:
    """Each case's fragments from the running kernel, caught inside namespace ns (tests/netns.Netns)."""
    proc = ns.run(sys.executable, os.path.abspath(__file__), "--inside")
    return json.loads(proc.stdout)


def main() -> None:
    if sys.argv[1:2] == ["--inside"]:
        json.dump(capture_inside(), sys.stdout)
        return
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [here, os.path.dirname(here)]
    from netns import Netns

    with Netns("frag") as ns:
        cases = capture(ns)
    vectors = {
        "source": f"Linux {platform.release()} ({platform.machine()}), fragmenting locally sent UDP "
                  "datagrams to a TUN with a small MTU; caught on the TUN's file descriptor by "
                  "tests/kernel_fragments.py",
        "generated": time.strftime("%Y-%m-%d", time.gmtime()),
        "cases": cases,
    }
    with open(sys.argv[1], "w") as f:
        json.dump(vectors, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
