# cython: language_level=3
"""Fragment reassembly for the network stack (the interface is _frag.pxd).

Each datagram keeps its fragments in a table sorted by offset, so that a new
fragment is checked against its two neighbours only: an exact duplicate is
ignored, any other overlap drops the datagram (RFC 5722), and as fragments
never overlap the datagram is whole when the bytes held equal the total the
last fragment set.  Fragments are copied as they come (one allocation each,
counted against the cap before it is made) and put together into one output
buffer, allocated once, when the datagram completes.

When a fragment does not fit (the memory cap, or every slot taken), datagrams
past their deadline go first, then the oldest other datagrams, whole, until
it fits: a flood of fragments that never complete pushes out the oldest
datagrams rather than freezing reassembly until they expire.
"""
from libc.stdint cimport INT64_MAX, int64_t, uint8_t, uint32_t
from libc.stdlib cimport free, malloc, realloc, calloc
from libc.string cimport memcmp, memcpy, memmove, memset

from wgc._bytes cimport load_be16, load_be32, store_be16
from wgc._checksum cimport ipv4_header_checksum

cdef enum:
    IPV4_HEADER_MIN = 20
    IPV6_HEADER = 40
    IPV6_FRAGMENT_HEADER = 8
    IPV6_NEXT_FRAGMENT = 44        # the Next Header value of a Fragment header
    IP_LENGTH_MAX = 65535          # an IPv4 total length, an IPv6 payload length
    OUT_MAX = IPV6_HEADER + IP_LENGTH_MAX
    IPV4_MF = 0x2000
    IPV4_OFFSET = 0x1fff
    IPV6_M = 1
    IPV6_OFFSET = 0xfff8
    PIECES_FIRST = 8               # a datagram's first table of fragments

cdef int64_t NS = 1000000000


# One fragment held: its bytes follow the struct in the same allocation, the
# unfragmentable part first (head_length bytes, the offset-0 fragment only),
# then length bytes of the fragmentable part from offset on.
cdef struct FragPiece:
    uint32_t offset
    uint32_t length
    uint32_t head_length

# What identifies a datagram: IPv4 (src, dst, protocol, ID), IPv6 (src, dst,
# identification; protocol 0).  IPv4 addresses fill the first 4 bytes.
cdef struct FragKey:
    uint8_t version
    uint8_t protocol
    uint32_t ident
    uint8_t src[16]
    uint8_t dst[16]

# One datagram being reassembled (a slot of Reassembler.datagrams).
cdef struct FragDatagram:
    bint used
    FragKey key
    int64_t started                # when its first fragment came (eviction takes the oldest)
    int64_t deadline               # gone at this time (ns)
    bint last_seen                 # the fragment without More Fragments came: total is known
    uint32_t total                 # the fragmentable part's length, once last_seen
    uint32_t received              # its bytes held (fragments never overlap)
    uint32_t next_header_at        # IPv6, from the first fragment: where its Next Header goes
    uint8_t next_header            # IPv6: the first fragment's Fragment header's Next Header
    FragPiece **pieces             # by offset
    uint32_t piece_count
    uint32_t piece_capacity
    size_t memory                  # bytes allocated for it (pieces and the table of them)

# What one fragment says, taken from its packet.
cdef struct Fragment:
    FragKey key
    const uint8_t *head            # the packet from its start: the unfragmentable part
    uint32_t head_length
    const uint8_t *data            # the fragmentable part's bytes it carries
    uint32_t offset
    uint32_t length
    bint more
    uint32_t extra                 # bytes the 65,535 limit counts besides the fragmentable part
    uint32_t next_header_at
    uint8_t next_header
    int64_t timeout


cdef inline uint8_t *piece_bytes(FragPiece *p) noexcept nogil:
    return <uint8_t *>(p + 1)


cdef int reasm_init(Reassembler *r, size_t memory_max) noexcept nogil:
    memset(r, 0, sizeof(Reassembler))
    r.datagrams = <FragDatagram *>calloc(FRAG_DATAGRAMS_MAX, sizeof(FragDatagram))
    r.out = <uint8_t *>malloc(OUT_MAX)
    if r.datagrams == NULL or r.out == NULL:
        reasm_free(r)
        return -1
    r.out_capacity = OUT_MAX
    r.memory_max = memory_max
    return 0


cdef void datagram_drop(Reassembler *r, FragDatagram *d) noexcept nogil:
    cdef uint32_t i
    for i in range(d.piece_count):
        free(d.pieces[i])
    free(d.pieces)
    r.memory -= d.memory
    r.count -= 1
    memset(d, 0, sizeof(FragDatagram))


cdef void reasm_free(Reassembler *r) noexcept nogil:
    cdef uint32_t i
    if r.datagrams != NULL:
        for i in range(FRAG_DATAGRAMS_MAX):
            if r.datagrams[i].used:
                datagram_drop(r, &r.datagrams[i])
    free(r.datagrams)
    free(r.out)
    memset(r, 0, sizeof(Reassembler))


cdef int64_t reasm_expire(Reassembler *r, int64_t now) noexcept nogil:
    cdef uint32_t i
    cdef int64_t earliest = -1
    cdef FragDatagram *d
    if r.count == 0:
        return -1
    for i in range(FRAG_DATAGRAMS_MAX):
        d = &r.datagrams[i]
        if not d.used:
            continue
        if d.deadline <= now:
            datagram_drop(r, d)
        elif earliest < 0 or d.deadline < earliest:
            earliest = d.deadline
    return earliest


cdef bint same_key(const FragKey *a, const FragKey *b) noexcept nogil:
    return (a.version == b.version and a.protocol == b.protocol and a.ident == b.ident
            and memcmp(a.src, b.src, 16) == 0 and memcmp(a.dst, b.dst, 16) == 0)


cdef FragDatagram *lookup(Reassembler *r, const FragKey *key, int64_t now) noexcept nogil:
    """The datagram key names, or NULL; one past its deadline is dropped here."""
    cdef uint32_t i
    cdef FragDatagram *d
    if r.count == 0:
        return NULL
    for i in range(FRAG_DATAGRAMS_MAX):
        d = &r.datagrams[i]
        if d.used and same_key(&d.key, key):
            if d.deadline <= now:
                datagram_drop(r, d)
                return NULL
            return d
    return NULL


cdef FragDatagram *oldest(Reassembler *r, const FragDatagram *keep) noexcept nogil:
    cdef uint32_t i
    cdef FragDatagram *d
    cdef FragDatagram *found = NULL
    for i in range(FRAG_DATAGRAMS_MAX):
        d = &r.datagrams[i]
        if d.used and d != keep and (found == NULL or d.started < found.started):
            found = d
    return found


cdef bint make_room(Reassembler *r, const FragDatagram *keep, size_t need, int64_t now) noexcept nogil:
    """True once need more bytes fit under the cap, after dropping the expired
    datagrams and then the oldest ones but keep."""
    cdef FragDatagram *victim
    if r.memory + need <= r.memory_max:
        return True
    reasm_expire(r, now)
    while r.memory + need > r.memory_max:
        victim = oldest(r, keep)
        if victim == NULL:
            return False
        datagram_drop(r, victim)
    return True


cdef FragDatagram *datagram_new(Reassembler *r, const Fragment *f, int64_t now) noexcept nogil:
    cdef uint32_t i
    cdef FragDatagram *d
    if r.count == FRAG_DATAGRAMS_MAX:
        reasm_expire(r, now)
        if r.count == FRAG_DATAGRAMS_MAX:
            datagram_drop(r, oldest(r, NULL))
    for i in range(FRAG_DATAGRAMS_MAX):
        d = &r.datagrams[i]
        if not d.used:
            d.used = True
            d.key = f.key
            d.started = now
            # A clock this close to its end never comes from CLOCK_MONOTONIC, but must not overflow.
            d.deadline = now + f.timeout * NS if now <= INT64_MAX - f.timeout * NS else INT64_MAX
            r.count += 1
            return d
    return NULL


cdef uint32_t position(const FragDatagram *d, uint32_t offset) noexcept nogil:
    """The index of the first piece at or after offset."""
    cdef uint32_t low = 0, high = d.piece_count, middle
    while low < high:
        middle = (low + high) >> 1
        if d.pieces[middle].offset < offset:
            low = middle + 1
        else:
            high = middle
    return low


cdef int datagram_add(Reassembler *r, FragDatagram *d, const Fragment *f, int64_t now) noexcept nogil:
    """Adds f to d: 1 when d is then whole, 0 when it waits (or f was an exact
    duplicate), -1 when d must be dropped."""
    cdef uint32_t i = position(d, f.offset), end = f.offset + f.length, capacity
    cdef uint32_t head_length = f.head_length if f.offset == 0 else 0
    cdef FragPiece *p
    cdef FragPiece **table
    cdef size_t size = sizeof(FragPiece) + head_length + f.length, grow = 0
    if i < d.piece_count:
        p = d.pieces[i]
        if (p.offset == f.offset and p.length == f.length and f.more != (d.last_seen and end == d.total)
                and memcmp(piece_bytes(p) + p.head_length, f.data, f.length) == 0):
            return 0                # an exact duplicate: the same place, flag and bytes
        if p.offset < end:
            return -1
    if i > 0:
        p = d.pieces[i - 1]
        if p.offset + p.length > f.offset:
            return -1
    if not f.more:
        if d.last_seen and end != d.total:
            return -1
        if d.piece_count and d.pieces[d.piece_count - 1].offset + d.pieces[d.piece_count - 1].length > end:
            return -1
    elif d.last_seen and end > d.total:
        return -1
    capacity = d.piece_capacity
    if d.piece_count == capacity:
        capacity = capacity * 2 if capacity else PIECES_FIRST
        grow = (capacity - d.piece_capacity) * sizeof(FragPiece *)
    if not make_room(r, d, size + grow, now):
        return -1
    if grow:
        table = <FragPiece **>realloc(d.pieces, capacity * sizeof(FragPiece *))
        if table == NULL:
            return -1
        d.pieces = table
        d.piece_capacity = capacity
        d.memory += grow
        r.memory += grow
    p = <FragPiece *>malloc(size)
    if p == NULL:
        return -1
    p.offset = f.offset
    p.length = f.length
    p.head_length = head_length
    memcpy(piece_bytes(p), f.head, head_length)
    memcpy(piece_bytes(p) + head_length, f.data, f.length)
    memmove(d.pieces + i + 1, d.pieces + i, (d.piece_count - i) * sizeof(FragPiece *))
    d.pieces[i] = p
    d.piece_count += 1
    d.memory += size
    r.memory += size
    d.received += f.length
    if not f.more:
        d.last_seen = True
        d.total = end
    if f.offset == 0:
        d.next_header_at = f.next_header_at
        d.next_header = f.next_header
    return 1 if d.last_seen and d.received == d.total else 0


cdef void finish(Reassembler *r, uint8_t version, uint32_t head_length, uint32_t length,
                 uint32_t next_header_at, uint8_t next_header) noexcept nogil:
    """Rewrites the headers of the datagram in r.out (length bytes) as whole."""
    if version == 4:
        store_be16(r.out + 2, length)
        r.out[6] &= 0xc0           # MF and the offset cleared; DF and the reserved bit kept
        r.out[7] = 0
        ipv4_header_checksum(r.out, head_length)
    else:
        store_be16(r.out + 4, length - IPV6_HEADER)
        r.out[next_header_at] = next_header


cdef int assemble(Reassembler *r, FragDatagram *d, uint8_t **out, uint32_t *out_len) noexcept nogil:
    """Puts the whole d together in r.out and forgets d; -1 if it is too long."""
    cdef FragPiece *first = d.pieces[0]
    cdef uint32_t i, head_length = first.head_length
    cdef uint32_t length = head_length + d.total
    cdef uint32_t extra = head_length if d.key.version == 4 else head_length - IPV6_HEADER
    if extra + d.total > IP_LENGTH_MAX or length > r.out_capacity:
        datagram_drop(r, d)
        return -1
    memcpy(r.out, piece_bytes(first), head_length)
    for i in range(d.piece_count):
        memcpy(r.out + head_length + d.pieces[i].offset, piece_bytes(d.pieces[i]) + d.pieces[i].head_length,
               d.pieces[i].length)
    finish(r, d.key.version, head_length, length, d.next_header_at, d.next_header)
    datagram_drop(r, d)
    out[0] = r.out
    out_len[0] = length
    return 1


cdef int reassemble(Reassembler *r, const Fragment *f, int64_t now, uint8_t **out,
                    uint32_t *out_len) noexcept nogil:
    cdef FragDatagram *d
    cdef int status
    if f.length == 0 or (f.more and f.length & 7):
        return -1
    if f.offset == 0 and not f.more:
        memcpy(r.out, f.head, f.head_length)
        memcpy(r.out + f.head_length, f.data, f.length)
        finish(r, f.key.version, f.head_length, f.head_length + f.length, f.next_header_at, f.next_header)
        out[0] = r.out
        out_len[0] = f.head_length + f.length
        return 1
    d = lookup(r, &f.key, now)
    if f.extra + f.offset + f.length > IP_LENGTH_MAX:
        if d != NULL:
            datagram_drop(r, d)
        return -1
    if d == NULL:
        d = datagram_new(r, f, now)
        if d == NULL:
            return -1
    status = datagram_add(r, d, f, now)
    if status < 0:
        datagram_drop(r, d)
        return -1
    if status == 0:
        return 0
    return assemble(r, d, out, out_len)


cdef int reasm_input4(Reassembler *r, const uint8_t *packet, uint32_t length, int64_t now,
                      uint8_t **out, uint32_t *out_len) noexcept nogil:
    cdef Fragment f
    cdef uint32_t header, total, field
    if length < IPV4_HEADER_MIN or packet[0] >> 4 != 4:
        return -1
    header = (packet[0] & 15) * 4
    total = load_be16(packet + 2)
    if header < IPV4_HEADER_MIN or total < header or total > length:
        return -1
    memset(&f, 0, sizeof(Fragment))
    f.key.version = 4
    f.key.protocol = packet[9]
    f.key.ident = load_be16(packet + 4)
    memcpy(f.key.src, packet + 12, 4)
    memcpy(f.key.dst, packet + 16, 4)
    field = load_be16(packet + 6)
    f.head = packet
    f.head_length = header
    f.data = packet + header
    f.offset = (field & IPV4_OFFSET) * 8
    f.length = total - header
    f.more = (field & IPV4_MF) != 0
    f.extra = header
    f.timeout = FRAG_TIMEOUT4_S
    return reassemble(r, &f, now, out, out_len)


cdef int reasm_input6(Reassembler *r, const uint8_t *packet, uint32_t length, uint32_t next_header_at,
                      uint32_t frag_at, int64_t now, uint8_t **out, uint32_t *out_len) noexcept nogil:
    cdef Fragment f
    cdef uint32_t end, field
    if length < IPV6_HEADER or packet[0] >> 4 != 6:
        return -1
    end = IPV6_HEADER + load_be16(packet + 4)
    if (end > length or frag_at < IPV6_HEADER or frag_at > end - IPV6_FRAGMENT_HEADER
            or next_header_at >= frag_at or packet[next_header_at] != IPV6_NEXT_FRAGMENT):
        return -1
    memset(&f, 0, sizeof(Fragment))
    f.key.version = 6
    f.key.ident = load_be32(packet + frag_at + 4)
    memcpy(f.key.src, packet + 8, 16)
    memcpy(f.key.dst, packet + 24, 16)
    field = load_be16(packet + frag_at + 2)
    f.head = packet
    f.head_length = frag_at
    f.data = packet + frag_at + IPV6_FRAGMENT_HEADER
    f.offset = field & IPV6_OFFSET
    f.length = end - frag_at - IPV6_FRAGMENT_HEADER
    f.more = (field & IPV6_M) != 0
    f.extra = frag_at - IPV6_HEADER
    f.next_header_at = next_header_at
    f.next_header = packet[frag_at]
    f.timeout = FRAG_TIMEOUT6_S
    return reassemble(r, &f, now, out, out_len)


cdef class Reassembly:
    """Python face of one Reassembler, for tests: the C functions take the
    same arguments, and give back the whole datagram or None (waiting,
    ignored or dropped; `dropped` counts the drops)."""
    cdef Reassembler r
    cdef readonly unsigned long dropped

    def __cinit__(self, size_t memory_max=FRAG_MEMORY_MAX):
        if reasm_init(&self.r, memory_max) < 0:
            raise MemoryError()

    def __dealloc__(self):
        reasm_free(&self.r)

    cdef object result(self, int status, uint8_t *out, uint32_t out_len):
        if status < 0:
            self.dropped += 1
        return out[:out_len] if status == 1 else None

    def input4(self, bytes packet not None, int64_t now):
        cdef uint8_t *out = NULL
        cdef uint32_t out_len = 0
        cdef int status = reasm_input4(&self.r, <const uint8_t *><const char *>packet, len(packet), now, &out, &out_len)
        return self.result(status, out, out_len)

    def input6(self, bytes packet not None, uint32_t next_header_at, uint32_t frag_at, int64_t now):
        cdef uint8_t *out = NULL
        cdef uint32_t out_len = 0
        cdef int status = reasm_input6(&self.r, <const uint8_t *><const char *>packet, len(packet), next_header_at, frag_at, now, &out,
                                       &out_len)
        return self.result(status, out, out_len)

    def expire(self, int64_t now):
        """The earliest deadline left (ns), or -1."""
        return reasm_expire(&self.r, now)

    @property
    def memory(self):
        return self.r.memory

    @property
    def memory_max(self):
        return self.r.memory_max

    @property
    def pending(self):
        """Datagrams being reassembled."""
        return self.r.count


TIMEOUT4_S = FRAG_TIMEOUT4_S
TIMEOUT6_S = FRAG_TIMEOUT6_S
MEMORY_MAX = FRAG_MEMORY_MAX
DATAGRAMS_MAX = FRAG_DATAGRAMS_MAX
