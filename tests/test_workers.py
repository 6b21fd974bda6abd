"""The crypto workers (wgc._workers): a batch sealed and opened on several
threads comes out exactly as on one, checked against PyNaCl's ChaCha20-Poly1305.

A sans-I/O data plane with a keypair the test made, so every datagram can be
sealed and opened here by another implementation: the datagrams of a TSO read
must carry counters 0, 1, 2... in order and open to the segments; a receive
batch must reach the port in the order it came, with a replayed and a forged
datagram among the rest dropped and counted, across the boundary of the jobs
one round holds (RX_JOBS), and across a responder's confirmation in its middle.
The default number of workers comes from the CPUs available, the affinity
mask bounded by the cgroup quota, read here from fake /proc and /sys trees.
"""
import os
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from nacl.bindings import crypto_aead_chacha20poly1305_ietf_decrypt as ietf_decrypt
from nacl.bindings import crypto_aead_chacha20poly1305_ietf_encrypt as ietf_encrypt

from netns import unique_name, wait_for
from test_offload import V4_DST, V4_SRC, coalesce, flow
from wgc import constants as C
from wgc._dataplane import MAX_WORKERS, DataPlane
from wgc._port import MemoryPort
from wgc.cpus import available_cpus, cgroup_quota
from wgc.daemon import ENV_WORKERS, crypto_workers
from wgnet import WGC, iperf3, start_daemon, tunnel

NOW = 1_000 * C.SECOND
PEER_ADDRESS = ("127.0.0.2", 51002)
LOCAL, REMOTE, NEXT_LOCAL = 0x01020304, 0x0A0B0C0D, 0x05060708
RX_JOBS = 256                      # wgc/_core.pxd: openings in one round
THREADS = [1, 2, 3]


def nonce(counter: int) -> bytes:
    return b"\0" * 4 + struct.pack("<Q", counter)


class Keyed:
    """A data plane with one peer (allowed 10.0.0.1/32, the flows' source)
    whose current keypair the test made (an initiator's: it sends at once)."""

    def __init__(self, threads: int, vnet_hdr: bool = False):
        self.core = DataPlane(capture=True)
        self.core.set_workers(threads)
        self.core.set_port(MemoryPort(vnet_hdr=vnet_hdr))
        self.slot = self.core.add_peer()
        self.core.allowed_ip_insert(V4_SRC, 32, self.slot)
        self.core.allowed_ip_insert(V4_DST, 32, self.slot)
        self.core.set_endpoint(self.slot, PEER_ADDRESS)
        self.send_key, self.recv_key = os.urandom(32), os.urandom(32)
        self.core.install_keypair(self.slot, self.send_key, self.recv_key, LOCAL, REMOTE, True, NOW, NOW)

    def transport(self, counter: int, packet: bytes, key: bytes | None = None, index: int = LOCAL) -> bytes:
        """A transport message to us, as the peer would seal it (padding as the paper's)."""
        padded = packet + bytes(-len(packet) % 16)
        return struct.pack("<IIQ", 4, index, counter) + ietf_encrypt(padded, None, nonce(counter),
                                                                    key or self.recv_key)

    def captured(self, kind: str) -> list[bytes]:
        return [data for k, data, _ in self.core.take_captured() if k == kind]

    def counters(self) -> dict[str, int]:
        return self.core.counters(self.slot)


def packet(number: int, size: int = 1000) -> bytes:
    """An IPv4 packet from the peer's allowed source, numbered in its ID field."""
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, number, 0, 64, 17, 0, V4_SRC, V4_DST)
    return header + bytes([number & 0xFF]) * (size - 20)


def trains(datagrams: list[bytes], per_message: int) -> list[bytes]:
    """The datagrams (all of one size) as UDP GRO messages of per_message each."""
    return [b"".join(datagrams[i:i + per_message]) for i in range(0, len(datagrams), per_message)]


@pytest.mark.parametrize("threads", THREADS)
def test_a_tso_read_is_sealed_in_counter_order_whatever_thread_sealed_each(threads):
    k = Keyed(threads, vnet_hdr=True)
    segments = flow(False, 40, last=300)
    [(header, read)] = coalesce(segments)
    k.core.inject_tun(header + read, NOW)
    datagrams = k.captured("udp")
    assert len(datagrams) == len(segments)
    for counter, (datagram, segment) in enumerate(zip(datagrams, segments, strict=True)):
        assert datagram[:16] == struct.pack("<IIQ", 4, REMOTE, counter)
        opened = ietf_decrypt(datagram[16:], None, nonce(counter), k.send_key)
        assert opened[:len(segment)] == segment and not any(opened[len(segment):])


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("count", [RX_JOBS - 1, RX_JOBS, RX_JOBS + 1, 2 * RX_JOBS + 5])
def test_a_receive_batch_reaches_the_port_in_order_across_rounds(threads, count):
    """GRO messages of 16 datagrams, so one batch holds more openings than a round."""
    k = Keyed(threads)
    packets = [packet(i) for i in range(count)]
    k.core.inject_udp_batch(trains([k.transport(i, p) for i, p in enumerate(packets)], 16), PEER_ADDRESS,
                            NOW, NOW, segment_size=len(k.transport(0, packets[0])))
    assert k.captured("tun") == packets


@pytest.mark.parametrize("threads", [2, 3])
def test_batch_after_batch_every_job_has_run_before_the_batch_goes_on(threads):
    """300 batches both ways: a helper still sealing or opening when the
    data-plane thread sends or delivers would show as a datagram that does
    not open here, or a packet that is not the one sent."""
    k = Keyed(threads, vnet_hdr=True)
    segments = flow(False, 24)
    [(header, read)] = coalesce(segments)
    sent = 0
    for _ in range(300):
        k.core.inject_tun(header + read, NOW)
        for datagram in k.captured("udp"):
            assert ietf_decrypt(datagram[16:], None, nonce(sent), k.send_key)[:len(segments[0])] in segments
            sent += 1
    k = Keyed(threads)
    packets = [packet(i) for i in range(64)]      # enough bytes for the helpers (POOL_MIN_BYTES)
    for round_ in range(300):
        first = round_ * 64
        k.core.inject_udp_batch([k.transport(first + i, p) for i, p in enumerate(packets)], PEER_ADDRESS, NOW, NOW)
        assert k.captured("tun") == packets


@pytest.mark.parametrize("threads", THREADS)
def test_replayed_and_forged_datagrams_in_a_batch_are_dropped_and_counted(threads):
    k = Keyed(threads)
    sealed = [k.transport(i, packet(i)) for i in range(40)]
    forged = bytearray(sealed[30])
    forged[-1] ^= 1
    batch = sealed[:30] + [sealed[3], bytes(forged)] + sealed[31:] + [sealed[39]]
    before = k.counters()
    k.core.inject_udp_batch(batch, PEER_ADDRESS, NOW, NOW)
    assert k.captured("tun") == [packet(i) for i in range(40) if i != 30]
    after = k.counters()
    assert after["replayed_packets_total"] - before["replayed_packets_total"] == 2
    assert after["authentication_failures_total"] - before["authentication_failures_total"] == 1


@pytest.mark.parametrize("threads", THREADS)
def test_a_responders_keypair_confirmed_mid_batch_sends_from_then_on(threads):
    """The batch's first datagram on the next keypair confirms it; the old
    keypair's datagrams after it are still taken (it became the previous one)."""
    k = Keyed(threads)
    next_send, next_recv = os.urandom(32), os.urandom(32)
    k.core.install_keypair(k.slot, next_send, next_recv, NEXT_LOCAL, REMOTE + 1, False, NOW, NOW)
    old = [k.transport(i, packet(i)) for i in range(20)]
    new = [k.transport(i, packet(100 + i), next_recv, NEXT_LOCAL) for i in range(20)]
    batch = old[:10] + new[:10] + old[10:] + new[10:]
    k.core.inject_udp_batch(batch, PEER_ADDRESS, NOW, NOW)
    expected = [packet(i) for i in range(10)] + [packet(100 + i) for i in range(10)]
    expected += [packet(i) for i in range(10, 20)] + [packet(100 + i) for i in range(10, 20)]
    assert k.captured("tun") == expected
    k.core.inject_tun(packet(7), NOW)
    [sent] = k.captured("udp")
    assert sent[:16] == struct.pack("<IIQ", 4, REMOTE + 1, 0)
    assert ietf_decrypt(sent[16:], None, nonce(0), next_send)[:1000] == packet(7)


def test_the_number_of_workers_is_checked_and_kept():
    core = DataPlane(capture=True)
    assert core.workers == 1
    core.set_workers(MAX_WORKERS)
    assert core.workers == MAX_WORKERS
    core.set_workers(2)
    assert core.workers == 2
    for wrong in (-1, 0, MAX_WORKERS + 1):
        with pytest.raises(ValueError):
            core.set_workers(wrong)
    assert core.workers == 2


# ---- how many by default -----------------------------------------------------------

def fake_tree(tmp_path, cgroup: str, files: dict[str, str]):
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    for name, text in files.items():
        path = tmp_path / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize("cgroup, files, quota", [
    # cgroup v2: the process's own limit, and an ancestor's smaller one.
    ("0::/box/app\n", {"box/app/cpu.max": "150000 100000\n"}, 1.5),
    ("0::/box/app\n", {"box/app/cpu.max": "max 100000\n", "box/cpu.max": "50000 100000\n"}, 0.5),
    ("0::/box/app\n", {"box/app/cpu.max": "max 100000\n"}, None),
    # cgroup v1, under either mount name; -1 is no limit.
    ("4:cpu,cpuacct:/docker/x\n", {"cpu,cpuacct/docker/x/cpu.cfs_quota_us": "250000\n",
                                   "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000\n"}, 2.5),
    ("4:cpu:/x\n", {"cpu/x/cpu.cfs_quota_us": "-1\n", "cpu/x/cpu.cfs_period_us": "100000\n"}, None),
    # A hybrid layout: the smaller of the two.
    ("1:cpu:/a\n0::/b\n", {"cpu/a/cpu.cfs_quota_us": "300000", "cpu/a/cpu.cfs_period_us": "100000",
                           "b/cpu.max": "200000 100000"}, 2.0),
    # Unreadable or malformed: no limit.
    ("0::/c\n", {"c/cpu.max": "lots\n"}, None),
    ("", {}, None),
])
def test_the_cgroup_quota_is_read_in_both_layouts(tmp_path, cgroup, files, quota):
    assert cgroup_quota(fake_tree(tmp_path, cgroup, files)) == quota


def test_the_default_is_the_affinity_mask_bounded_by_the_quota_rounded_up(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert available_cpus(fake_tree(tmp_path / "a", "0::/x\n", {"x/cpu.max": "150000 100000"})) == 2
    assert available_cpus(fake_tree(tmp_path / "b", "0::/x\n", {"x/cpu.max": "10000 100000"})) == 1
    assert available_cpus(fake_tree(tmp_path / "c", "0::/x\n", {"x/cpu.max": "max 100000"})) == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert available_cpus(fake_tree(tmp_path / "d", "0::/x\n", {"x/cpu.max": "800000 100000"})) == 1


@pytest.mark.parametrize("text, workers", [("", None), ("1", 1), ("2", 2), (str(MAX_WORKERS), MAX_WORKERS),
                                           ("0", ValueError), (str(MAX_WORKERS + 1), ValueError),
                                           ("-1", ValueError), ("two", ValueError), ("٣", ValueError)])
def test_wgc_workers_is_a_number_of_threads(monkeypatch, text, workers):
    monkeypatch.setenv(ENV_WORKERS, text)
    if workers is ValueError:
        with pytest.raises(ValueError, match="is not a number of threads"):
            crypto_workers()
    else:
        assert crypto_workers() == (workers or max(1, available_cpus() // 2))


# ---- the daemon ------------------------------------------------------------------------

def threads_named(pid: int) -> dict[str, list[int]]:
    """name -> the thread ids of pid's threads with that name."""
    named: dict[str, list[int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                named.setdefault(f.read().strip(), []).append(int(tid))
        except FileNotFoundError:
            pass
    return named


def crypto_threads(pid: int) -> int:
    return len(threads_named(pid).get("wgc-crypto", []))


@pytest.mark.netns
@pytest.mark.parametrize("text", ["3", ""], ids=["three", "default"])
def test_the_daemon_starts_the_helpers_wgc_workers_asks_for(netns, text):
    ns = netns("wgwk")
    iface = unique_name("wgw")
    start_daemon(ns, "wgc", iface, env={ENV_WORKERS: text})
    [pid] = ns.pids()
    expected = (int(text) if text else max(1, available_cpus() // 2)) - 1
    wait_for(lambda: crypto_threads(pid) == expected, what=f"{expected} wgc-crypto threads")


def policies(tids: list[int]) -> list[int]:
    return [os.sched_getscheduler(tid) for tid in tids]


@pytest.mark.netns
def test_the_threads_beside_the_data_plane_preempt_it_only_where_that_pays(netns):
    """wgc/_pthread.pxd's thread_may_preempt: the crypto helpers never preempt
    (SCHED_BATCH); the TUN reader not while it reads super-packets (a bulk TCP
    transfer), but again once its reads are small (pings); the data-plane and
    control threads keep the default policy."""
    a, b = tunnel(netns, "wgc", "wgc", with_ipv6=False, env={ENV_WORKERS: "3"})
    [pid] = a.ns.pids()
    wait_for(lambda: crypto_threads(pid) == 2 and "wgc-tun-reader" in threads_named(pid), what="the threads")
    named = threads_named(pid)
    helpers, [reader] = named.pop("wgc-crypto"), named.pop("wgc-tun-reader")
    others = [tid for tids in named.values() for tid in tids]
    assert pid in others and len(others) >= 2             # the control thread and the data plane's, at least
    assert policies(helpers) == [os.SCHED_BATCH] * 2
    a.ping(b.inner4, count=3, interval=0.05)
    assert policies([reader]) == [os.SCHED_OTHER]

    seen = set()
    with ThreadPoolExecutor(1) as pool:
        transfer = pool.submit(iperf3, a, b, 3)
        while not transfer.done():
            seen.update(policies([reader]))
            time.sleep(0.01)
        transfer.result()
    assert os.SCHED_BATCH in seen, seen
    a.ping(b.inner4, count=3, interval=0.05)
    assert policies([reader]) == [os.SCHED_OTHER]
    assert set(policies(helpers)) == {os.SCHED_BATCH} and set(policies(others)) == {os.SCHED_OTHER}


@pytest.mark.netns
def test_a_wrong_wgc_workers_is_one_error_line_and_exit_1(netns):
    ns = netns("wgwk")
    iface = unique_name("wgw")
    ns.owns_interface(iface)
    result = ns.run(*WGC, "-f", iface, env=dict(os.environ, WGC_WORKERS="0"), check=False)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ERROR: ({iface}) ") and "WGC_WORKERS" in lines[0], lines
    assert ns.run("ip", "link", "show", iface, check=False).returncode != 0  # nothing was created
