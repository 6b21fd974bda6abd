"""The data plane's inner side through an in-memory port (wgc._port.MemoryPort).

With vnet_hdr the port speaks as a TUN with offloads does: reads may be TSO
super-packets behind a virtio_net_hdr, and decrypted packets of one receive
batch are coalesced (GRO) before they are written.  These tests run that
production code (Core._tx_vnet, PacketPort.write and flush) on the fake clock
of protocol_net, with no TUN and no socket.
"""
import logging
import os
import types

from protocol_net import INNER_A, INNER_B, Pair, ipv4_packet
from test_offload import V4_DST, V4_SRC, coalesce, flow, roundtrip, unpack_vnet
from wgc._port import MemoryPort
from wgc.device import Device

VNET_HDR_LEN = 10


def connected() -> Pair:
    """A pair with a confirmed session both ways and vnet ports on both sides."""
    assert (V4_SRC, V4_DST) == (INNER_A, INNER_B)      # the segments travel from a to b
    pair = Pair()
    pair.send(pair.a)
    pair.pump()
    pair.send(pair.b)
    pair.pump()
    for side in (pair.a, pair.b):
        side.device.core.set_port(MemoryPort(vnet_hdr=True))
    return pair


def sent_datagrams(side) -> list[bytes]:
    captured = side.device.core.take_captured()
    assert all(kind == "udp" for kind, _, _ in captured)
    return [data for _, data, _ in captured]


def written(side) -> list[tuple[bytes, bytes]]:
    """What side's port was given: (virtio_net_hdr, packet) per write."""
    captured = side.device.core.take_captured()
    assert all(kind == "tun" for kind, _, _ in captured)
    return [(data[:VNET_HDR_LEN], data[VNET_HDR_LEN:]) for _, data, _ in captured]


def test_one_receive_batch_is_written_as_one_super_packet():
    pair = connected()
    segments = flow(False, 6)
    for segment in segments:
        pair.a.device.core.inject_tun(bytes(VNET_HDR_LEN) + segment, pair.clock.mono)
    datagrams = sent_datagrams(pair.a)
    assert len(datagrams) == len(segments)
    pair.b.device.core.inject_udp_batch(datagrams, pair.a.address, pair.clock.mono, pair.clock.wall)
    out = written(pair.b)
    assert len(out) == 1
    assert unpack_vnet(out[0][0])[1:4] == (1, 40, 1000)    # GSO_TCPV4, headers, segment size
    assert roundtrip(out) == segments


def test_a_tso_read_is_cut_sealed_and_joined_again():
    pair = connected()
    segments = flow(False, 5, last=300)
    [(header, packet)] = coalesce(segments)                # the read a TUN with TSO gives
    before = pair.a.device.core.udp_messages
    pair.a.device.core.inject_tun(header + packet, pair.clock.mono)
    datagrams = sent_datagrams(pair.a)
    assert len(datagrams) == len(segments)
    assert pair.a.device.core.udp_messages - before == 1    # one UDP GSO message
    pair.b.device.core.inject_udp_batch(datagrams, pair.a.address, pair.clock.mono, pair.clock.wall)
    assert roundtrip(written(pair.b)) == segments


def test_datagrams_of_separate_batches_are_not_joined():
    pair = connected()
    segments = flow(False, 3)
    for segment in segments:
        pair.a.device.core.inject_tun(bytes(VNET_HDR_LEN) + segment, pair.clock.mono)
    for datagram in sent_datagrams(pair.a):
        pair.b.device.core.inject_udp(datagram, pair.a.address, pair.clock.mono, pair.clock.wall)
    out = written(pair.b)
    assert len(out) == 3
    assert roundtrip(out) == segments


def test_without_vnet_hdr_each_packet_is_written_alone():
    pair = connected()
    pair.b.device.core.set_port(MemoryPort())
    packets = [ipv4_packet(INNER_A, INNER_B, 100 + i) for i in range(3)]
    for packet in packets:
        pair.a.device.core.inject_tun(bytes(VNET_HDR_LEN) + packet, pair.clock.mono)
    pair.b.device.core.inject_udp_batch(sent_datagrams(pair.a), pair.a.address, pair.clock.mono,
                                        pair.clock.wall)
    assert [data for _, data, _ in pair.b.device.core.take_captured()] == packets


def test_a_port_that_fails_stops_the_loop_and_the_device_hears_of_it():
    """A TUN whose reads fail (EBADFD once the interface is deleted; here a
    directory: EISDIR) ends the data-plane thread, and the control plane's
    next poll reports it, once, through on_fatal."""
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK)
    tun = types.SimpleNamespace(fd=fd, vnet_hdr=False, mtu=1420)
    device = Device("gone", tun, logging.getLogger("wgc.test.gone"))
    fatal = []
    device.on_fatal = fatal.append
    try:
        device._thread.join(timeout=10)
        assert not device._thread.is_alive()
        device.process_events()
        assert fatal == ["the TUN device is gone"]
    finally:
        device.close()
        os.close(fd)
