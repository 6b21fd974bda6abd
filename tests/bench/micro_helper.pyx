# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""C loops over whole batches for tests/bench/test_micro.py.

Built at test time (tests/bench/conftest.py) against the .pxd files of the
installed wgc package; it is not part of wgc.  Every entry point takes a
batch, releases the GIL and loops in C, so one Python call covers the whole
batch and the timings are those of the compiled per-packet code.

The buffers have the data plane's layout (wgc/_core.pyx): one slot of
SLOT_SIZE bytes per packet, a 16-byte transport header in front of the
packet in an out slot, sealing in place there.  Sealing, opening and routing
are wgc's own functions (wgc/_session.pxd); only the libsodium-only loops,
the bound they are measured against, are written here.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from wgc._core cimport SLOT_SIZE
from wgc._bytes cimport load_le64, store_le64
from wgc._replay cimport ReplayWindow, replay_reset, replay_accept
from wgc._constants cimport TRANSPORT_HEADER_SIZE, TRANSPORT_MIN_SIZE, TAG_SIZE
from wgc._session cimport (Keypair, Keypairs, IndexTable, index_init, index_free,
                           keypairs_install, keypairs_clear, transport_seal_job, transport_open_job,
                           transport_open_done, OPEN_OK, transport_inner_source, transport_destination)
from wgc._workers cimport AeadJob, WorkerPool, pool_start, pool_run, pool_stop
from wgc._trie cimport AllowedIPs
from wgc._offload cimport (
    VNET_HDR_LEN, VnetHdr, Segmenter, Gro, GroItem, vnet_hdr_load, vnet_hdr_store,
    segmenter_init, segmenter_write, gro_init, gro_free, gro_reset, gro_add, gro_finish,
)

import nacl._sodium


cdef extern from "<dlfcn.h>" nogil:
    void *dlopen(const char *filename, int flags)
    void *dlsym(void *handle, const char *symbol)
    int RTLD_NOW
    int RTLD_NOLOAD

ctypedef int (*encrypt_detached_t)(
    uint8_t *c, uint8_t *mac, unsigned long long *maclen, const uint8_t *m,
    unsigned long long mlen, const uint8_t *ad, unsigned long long adlen,
    const uint8_t *nsec, const uint8_t *npub, const uint8_t *k) noexcept nogil
ctypedef int (*decrypt_detached_t)(
    uint8_t *m, uint8_t *nsec, const uint8_t *c, unsigned long long clen,
    const uint8_t *mac, const uint8_t *ad, unsigned long long adlen,
    const uint8_t *npub, const uint8_t *k) noexcept nogil

# The same libsodium wgc._crypto binds: PyNaCl's copy, already in memory.
cdef encrypt_detached_t sodium_encrypt = NULL
cdef decrypt_detached_t sodium_decrypt = NULL


def _bind_libsodium():
    global sodium_encrypt, sodium_decrypt
    cdef bytes path = nacl._sodium.__file__.encode()
    cdef void *handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if handle == NULL:
        raise ImportError("PyNaCl's libsodium is not loaded")
    sodium_encrypt = <encrypt_detached_t>dlsym(handle, b"crypto_aead_chacha20poly1305_ietf_encrypt_detached")
    sodium_decrypt = <decrypt_detached_t>dlsym(handle, b"crypto_aead_chacha20poly1305_ietf_decrypt_detached")
    if sodium_encrypt == NULL or sodium_decrypt == NULL:
        raise ImportError("libsodium lacks the ChaCha20-Poly1305 (IETF) functions")


_bind_libsodium()


cdef inline void counter_nonce(uint8_t *nonce, uint64_t counter) noexcept nogil:
    # WireGuard's nonce: 32 zero bits, then the counter little-endian.
    memset(nonce, 0, 4)
    store_le64(nonce + 4, counter)


cdef class Slots:
    """count packet buffers of SLOT_SIZE bytes, each with a length."""
    cdef uint8_t *base
    cdef uint32_t *lengths
    cdef readonly uint32_t count

    def __cinit__(self, uint32_t count):
        self.base = <uint8_t *>calloc(<size_t>count, SLOT_SIZE)
        self.lengths = <uint32_t *>calloc(count, sizeof(uint32_t))
        self.count = count
        if self.base == NULL or self.lengths == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.base)
        free(self.lengths)

    cdef inline uint8_t *at(self, uint32_t i) noexcept nogil:
        return self.base + <size_t>i * SLOT_SIZE

    def put(self, uint32_t i, const uint8_t[::1] data):
        """Places data at the start of slot i."""
        if i >= self.count or <size_t>data.shape[0] > SLOT_SIZE:
            raise IndexError("no such slot, or data larger than a slot")
        if data.shape[0]:
            memcpy(self.at(i), &data[0], data.shape[0])
        self.lengths[i] = data.shape[0]

    def get(self, uint32_t i, uint32_t offset=0):
        """The bytes of slot i from offset, as long as its recorded length."""
        if i >= self.count or offset + self.lengths[i] > SLOT_SIZE:
            raise IndexError("no such slot")
        return self.at(i)[offset:offset + self.lengths[i]]

    def length(self, uint32_t i):
        if i >= self.count:
            raise IndexError("no such slot")
        return self.lengths[i]


# ---- sealing ----------------------------------------------------------------

cdef class Sender:
    """One keypair's sending half (wgc's Keypair): key, the peer's index, the
    next counter; and the MTU the padding stops at."""
    cdef Keypair keypair
    cdef uint32_t mtu

    def __cinit__(self, const uint8_t[::1] key, uint32_t remote_index, uint32_t mtu=1420,
                  uint64_t counter=0):
        if key.shape[0] != 32:
            raise ValueError("key must be 32 bytes")
        memcpy(self.keypair.send_key, &key[0], 32)
        self.keypair.remote_index = remote_index
        self.keypair.can_send = True
        self.keypair.send_counter = counter
        self.mtu = mtu

    @property
    def counter(self):
        return self.keypair.send_counter

    @counter.setter
    def counter(self, uint64_t value):
        self.keypair.send_counter = value


cdef class Workers:
    """The data plane's crypto pool (wgc._workers) of `threads` threads, the
    caller included, with room for the jobs of `capacity` packets."""
    cdef WorkerPool pool
    cdef AeadJob *jobs
    cdef readonly uint32_t capacity

    def __cinit__(self, uint32_t threads, uint32_t capacity):
        self.jobs = <AeadJob *>calloc(capacity, sizeof(AeadJob))
        self.capacity = capacity
        if self.jobs == NULL:
            raise MemoryError()
        if pool_start(&self.pool, threads) != 0:
            raise OSError("cannot start the crypto workers")

    def __dealloc__(self):
        pool_stop(&self.pool)
        free(self.jobs)

    @property
    def threads(self):
        return self.pool.helpers + 1


def wgc_seal(Sender sender, Slots tun, Slots out, Workers workers):
    """Per packet what the data plane does for a TUN read (_tx_packet, _seal):
    copy it into its out slot behind the header and transport_seal_job
    (header, counter, padding, the key copied into the job); then, as at
    _flush, the batch's jobs on the workers.  Returns the bytes of datagrams
    produced."""
    cdef uint32_t i, n = min(tun.count, out.count, workers.capacity)
    cdef uint64_t total = 0
    with nogil:
        for i in range(n):
            memcpy(out.at(i) + TRANSPORT_HEADER_SIZE, tun.at(i), tun.lengths[i])
            out.lengths[i] = transport_seal_job(&sender.keypair, out.at(i), tun.lengths[i], sender.mtu, 0,
                                                &workers.jobs[i])
            total += out.lengths[i]
        pool_run(&workers.pool, workers.jobs, n)
    return total


def sodium_seal(Sender sender, Slots tun, Slots out):
    """The upper bound: only libsodium's call per packet (plus the nonce it
    needs), from the TUN slot into the out slot, no header, copy or padding.
    Returns how many packets it sealed."""
    cdef uint32_t i, n = min(tun.count, out.count), length
    cdef uint8_t nonce[12]
    cdef uint8_t *dst
    cdef int failed = 0
    with nogil:
        for i in range(n):
            length = tun.lengths[i]
            dst = out.at(i) + TRANSPORT_HEADER_SIZE
            counter_nonce(nonce, sender.keypair.send_counter)
            sender.keypair.send_counter += 1
            failed |= sodium_encrypt(dst, dst + length, NULL, tun.at(i), length, NULL, 0,
                                     NULL, nonce, sender.keypair.send_key)
            out.lengths[i] = TRANSPORT_HEADER_SIZE + length + TAG_SIZE
    return 0 if failed else n


# ---- opening ----------------------------------------------------------------

cdef class Receiver:
    """One peer's receiving side as wgc keeps it: an index table holding one
    keypair (wgc's Keypair, with its replay window), and the allowed IPs."""
    cdef IndexTable table
    cdef Keypairs keypairs
    cdef int peer                  # the keypair's peer id in the allowed IPs
    cdef AllowedIPs allowed_ips

    def __cinit__(self, const uint8_t[::1] key, uint32_t local_index, int peer,
                  AllowedIPs allowed_ips not None):
        if key.shape[0] != 32:
            raise ValueError("key must be 32 bytes")
        if index_init(&self.table) != 0:
            raise MemoryError()
        if keypairs_install(&self.table, &self.keypairs, peer, &key[0], &key[0], local_index, 0, True, 0):
            raise MemoryError()
        self.peer = peer
        self.allowed_ips = allowed_ips

    def __dealloc__(self):
        keypairs_clear(&self.table, &self.keypairs)
        index_free(&self.table)


def wgc_open(Receiver receiver, Slots udp, Slots plain, Workers workers):
    """Per datagram what the data plane does (_rx_packet, _rx_opened) short
    of timers and endpoint: transport_open_job (header checks, index
    lookup, the key copied into the job); the batch's jobs on the workers;
    then in order transport_open_done (the replay check) and
    transport_inner_source (padding trimmed by the inner length, the inner
    source's allowed IPs).  The data plane opens in place in its receive
    slots; here each datagram is first copied into its plain slot and opened
    there, so that the batch can be opened again (the replay window is reset
    first).  Returns the packets delivered; their lengths are recorded in
    plain, the plaintext at TRANSPORT_HEADER_SIZE in each plain slot."""
    cdef uint32_t i, k, m = 0, n = min(udp.count, plain.count, workers.capacity), length, inner_len
    cdef Keypair *kp
    cdef uint32_t delivered = 0
    cdef uint32_t *slot_of = <uint32_t *>calloc(max(n, 1), sizeof(uint32_t))    # job k opens slot slot_of[k]
    if slot_of == NULL:
        raise MemoryError()
    with nogil:
        replay_reset(&receiver.keypairs.current.replay)
        for i in range(n):
            plain.lengths[i] = 0
            length = udp.lengths[i]
            memcpy(plain.at(i), udp.at(i), length)
            if transport_open_job(&receiver.table, plain.at(i), length, 0, &kp, &workers.jobs[m]) == OPEN_OK:
                slot_of[m] = i
                m += 1
        pool_run(&workers.pool, workers.jobs, m)
        for k in range(m):
            i = slot_of[k]
            if transport_open_done(receiver.keypairs.current, &workers.jobs[k]) != OPEN_OK:
                continue
            length = udp.lengths[i]
            if transport_inner_source(receiver.allowed_ips, plain.at(i) + TRANSPORT_HEADER_SIZE,
                                      length - TRANSPORT_MIN_SIZE, &inner_len) != receiver.peer:
                continue
            plain.lengths[i] = inner_len
            delivered += 1
    free(slot_of)
    return delivered


def sodium_open(Receiver receiver, Slots udp, Slots plain):
    """The upper bound: only libsodium's call per datagram (plus the nonce),
    with the counter taken from the header.  Returns how many verified."""
    cdef uint32_t i, n = min(udp.count, plain.count), length
    cdef uint32_t verified = 0
    cdef uint8_t nonce[12]
    cdef const uint8_t *d
    with nogil:
        for i in range(n):
            d = udp.at(i)
            length = udp.lengths[i]
            counter_nonce(nonce, load_le64(d + 8))
            if sodium_decrypt(plain.at(i), NULL, d + TRANSPORT_HEADER_SIZE, length - TRANSPORT_MIN_SIZE,
                              d + length - TAG_SIZE, NULL, 0, nonce, receiver.keypairs.current.recv_key) == 0:
                plain.lengths[i] = length - TRANSPORT_MIN_SIZE
                verified += 1
    return verified


# ---- allowed IPs and replay window -----------------------------------------

def trie_lookup(AllowedIPs allowed_ips, const uint8_t[::1] addresses, int family,
                uint32_t repeat, int32_t[::1] found=None):
    """Looks up every address (4 or 16 bytes each, back to back) repeat times.
    found, if given, receives the peer ids of the last pass.  Returns the
    sum of the peer ids over all passes (-1 for no match)."""
    cdef uint32_t size = 4 if family == 4 else 16
    cdef uint32_t count = addresses.shape[0] // size, i, r
    cdef long long total = 0
    cdef int peer
    cdef const uint8_t *a
    cdef int32_t *out = NULL
    if family not in (4, 6):
        raise ValueError("family is 4 or 6")
    if count == 0:
        return 0
    if found is not None:
        if <uint32_t>found.shape[0] < count:
            raise ValueError("found is shorter than the address list")
        out = &found[0]
    a = &addresses[0]
    with nogil:
        for r in range(repeat):
            for i in range(count):
                if family == 4:
                    peer = allowed_ips.lookup4(a + i * size)
                else:
                    peer = allowed_ips.lookup6(a + i * size)
                total += peer
                if out != NULL and r + 1 == repeat:
                    out[i] = peer
    return total


cdef class Replay:
    """A replay window fed in-order counters, as a steady flow of packets is."""
    cdef ReplayWindow window
    cdef readonly uint64_t next_counter

    def __cinit__(self):
        replay_reset(&self.window)
        self.next_counter = 0

    def rewind(self, uint64_t back):
        """Moves the next counter back, so the next run repeats counters."""
        self.next_counter = self.next_counter - back if back <= self.next_counter else 0

    def run(self, uint32_t batches, uint32_t batch):
        """batches x batch counters in order from next_counter; how many were accepted."""
        cdef uint64_t accepted = 0, c = self.next_counter, end
        end = c + <uint64_t>batches * batch
        with nogil:
            while c < end:
                accepted += replay_accept(&self.window, c)
                c += 1
        self.next_counter = end
        return accepted


# ---- segmentation and coalescing ------------------------------------------------

def split(Slots tun, Slots out):
    """A read from a vnet-header TUN in tun slot 0 (virtio_net_hdr, then the
    packet), cut as _tx_vnet does: each segment written straight into its out
    slot behind the transport header's room (the slot's length counts that
    room).  Returns the segment count."""
    cdef VnetHdr h
    cdef Segmenter seg
    cdef uint32_t i, count = 0
    cdef uint8_t *read = tun.at(0)
    cdef uint32_t length = tun.lengths[0]
    if length <= VNET_HDR_LEN:
        return 0
    with nogil:
        vnet_hdr_load(&h, read)
        count = segmenter_init(&seg, &h, read + VNET_HDR_LEN, length - VNET_HDR_LEN)
        if count <= out.count:
            for i in range(count):
                out.lengths[i] = TRANSPORT_HEADER_SIZE + segmenter_write(&seg, i, out.at(i) + TRANSPORT_HEADER_SIZE)
    if count > out.count:
        raise ValueError(f"{count} segments, {out.count} out slots")
    return count


def wgc_tx_vnet(Sender sender, AllowedIPs allowed_ips, Slots tun, Slots out, Workers workers):
    """The whole send path of a TSO read short of I/O (_tx_vnet): parse the
    virtio_net_hdr, route by destination once, then per segment write it into
    its out slot and seal it there.  Returns the bytes of datagrams produced."""
    cdef VnetHdr h
    cdef Segmenter seg
    cdef uint32_t i, count = 0, length = tun.lengths[0]
    cdef uint64_t total = 0
    cdef uint8_t *packet = tun.at(0) + VNET_HDR_LEN
    cdef int peer = -1
    if length <= VNET_HDR_LEN:
        return 0
    length -= VNET_HDR_LEN
    with nogil:
        vnet_hdr_load(&h, tun.at(0))
        count = segmenter_init(&seg, &h, packet, length)
        if count <= out.count and count <= workers.capacity:
            peer = transport_destination(allowed_ips, packet, length)
            if peer >= 0:
                for i in range(count):
                    out.lengths[i] = transport_seal_job(&sender.keypair, out.at(i),
                                                        segmenter_write(&seg, i, out.at(i) + TRANSPORT_HEADER_SIZE),
                                                        sender.mtu, 0, &workers.jobs[i])
                    total += out.lengths[i]
                pool_run(&workers.pool, workers.jobs, count)
    if count > out.count or count > workers.capacity:
        raise ValueError(f"{count} segments, {out.count} out slots, room for {workers.capacity} jobs")
    return total


cdef class Coalescer:
    """GRO over decrypted packets on their way to the TUN (_to_tun, _tun_flush)."""
    cdef Gro gro
    cdef VnetHdr *headers          # gro_finish's answer per item
    cdef uint8_t first[128]        # the first packet's headers as they came in
    cdef uint32_t first_len

    def __cinit__(self, uint32_t capacity):
        if gro_init(&self.gro, capacity) < 0:
            raise MemoryError()
        self.headers = <VnetHdr *>calloc(capacity, sizeof(VnetHdr))
        if self.headers == NULL:
            raise MemoryError()

    def __dealloc__(self):
        gro_free(&self.gro)
        free(self.headers)

    def run(self, Slots packets):
        """Coalesces every packet of the batch and finishes each item; returns
        the item count.  gro_add and gro_finish rewrite the first packet's
        headers, so they are put back first: each run sees fresh packets."""
        cdef uint32_t i, n = packets.count
        if n > self.gro.capacity:
            raise ValueError("more packets than the coalescer holds")
        if n == 0:
            return 0
        if self.first_len == 0:
            self.first_len = min(packets.lengths[0], <uint32_t>sizeof(self.first))
            memcpy(self.first, packets.at(0), self.first_len)
        with nogil:
            memcpy(packets.at(0), self.first, self.first_len)
            gro_reset(&self.gro)
            for i in range(n):
                gro_add(&self.gro, packets.at(i), packets.lengths[i])
            for i in range(self.gro.item_count):
                gro_finish(&self.gro, i, &self.headers[i])
        return self.gro.item_count

    def items(self):
        """What the last run would write to the TUN: (virtio_net_hdr, packet) per item."""
        cdef uint32_t i
        cdef int32_t m
        cdef GroItem *item
        cdef uint8_t hdr[VNET_HDR_LEN]
        result = []
        for i in range(self.gro.item_count):
            item = &self.gro.items[i]
            vnet_hdr_store(&self.headers[i], hdr)
            m = item.first
            parts = [self.gro.packets[m].data[:self.gro.packets[m].length]]
            m = self.gro.packets[m].next
            while m >= 0:
                parts.append(self.gro.packets[m].data[item.ip_len + item.l4_len:self.gro.packets[m].length])
                m = self.gro.packets[m].next
            result.append((hdr[:VNET_HDR_LEN], b"".join(parts)))
        return result
