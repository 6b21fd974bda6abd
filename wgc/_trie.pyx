# cython: language_level=3
"""Allowed IPs: a path-compressed binary trie per family in dense node pools (see _trie.pxd)."""
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memset
from posix.mman cimport (MADV_HUGEPAGE, MAP_ANONYMOUS, MAP_FAILED, MAP_PRIVATE, PROT_READ, PROT_WRITE, madvise, mmap,
                         mremap, munmap)


cdef extern from "<sys/mman.h>":
    enum: MREMAP_MAYMOVE

cdef extern from "<endian.h>":
    uint32_t be32toh(uint32_t) noexcept nogil
    uint64_t be64toh(uint64_t) noexcept nogil


cdef enum:
    BRANCH = 1                   # the kinds, ref >> 30
    PREFIX = 2
    HOST = 3
    FAMILY_BIT = 1 << 29
    INDEX_MASK = FAMILY_BIT - 1
    PAGE = 4096                  # a pool's smallest mapping; it doubles from there
    MAX_DEPTH = 128              # inner nodes above a node: their cidrs are 0..127
    LINE_MAX = 64                # "allowed_ip=" + the longest IPv6 text (39) + "/128\n"

cdef const char *DIGITS = b"0123456789abcdef"
cdef const char *LINE_HEAD = b"allowed_ip="


# -- keys: big-endian bytes ---------------------------------------------------------

cdef inline int bit_at(const uint8_t *key, int i) noexcept nogil:
    return (key[i >> 3] >> (7 - (i & 7))) & 1


cdef inline int common_bits(const uint8_t *a, const uint8_t *b, int limit) noexcept nogil:
    """How many leading bits a and b share, at most limit."""
    cdef int i = 0, n = 0
    cdef uint8_t x
    while n < limit:
        x = a[i] ^ b[i]
        if x:
            while not (x & 0x80):
                x <<= 1
                n += 1
            return n if n < limit else limit
        n += 8
        i += 1
    return limit


cdef inline void mask(uint8_t *key, int cidr, int bits) noexcept nogil:
    cdef int i
    for i in range(bits // 8):
        if i * 8 >= cidr:
            key[i] = 0
        elif i * 8 + 8 > cidr:
            key[i] &= <uint8_t>(0xFF << (8 - (cidr - i * 8)))


cdef inline uint32_t load32(const uint8_t *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return be32toh(v)


cdef inline uint64_t load64(const uint8_t *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return be64toh(v)


# -- nodes ------------------------------------------------------------------------------

cdef inline size_t node_size(uint32_t kind, size_t key_size) noexcept nogil:
    """A kind's bytes per node, for a 4- or 16-byte key (see _trie.pxd)."""
    if kind == PREFIX:
        return sizeof(Fork) + key_size + sizeof(Links)
    return (sizeof(Links) if kind == HOST else sizeof(Fork)) + key_size


cdef inline uint8_t *at(Table *t, uint32_t ref) noexcept nogil:
    cdef Pool *pool = &t.pools[ref >> 29]
    return pool.base + <size_t>(ref & INDEX_MASK) * pool.stride


cdef inline int family_of(uint32_t ref) noexcept nogil:
    return (ref >> 29) & 1


cdef inline uint8_t *key_of(Table *t, uint32_t ref) noexcept nogil:
    return at(t, ref) + sizeof(Fork)


cdef inline Fork *fork_of(Table *t, uint32_t ref) noexcept nogil:
    """A branch or prefix node's children and length."""
    return <Fork *>at(t, ref)


cdef inline Links *links_of(Table *t, uint32_t ref) noexcept nogil:
    """A prefix or host node's owner and list links; NULL for a branch node."""
    cdef uint32_t kind = ref >> 30
    if kind == HOST:
        return <Links *>at(t, ref)
    if kind == PREFIX:
        return <Links *>(key_of(t, ref) + (16 if family_of(ref) else 4))
    return NULL


cdef inline int cidr_of(Table *t, uint32_t ref) noexcept nogil:
    if ref >> 30 == HOST:
        return 128 if family_of(ref) else 32
    return fork_of(t, ref).cidr


cdef inline int peer_of(Table *t, uint32_t ref) noexcept nogil:
    cdef Links *links = links_of(t, ref)
    return links.peer if links != NULL else -1


cdef inline void set_child(Table *t, int family, uint32_t parent, int side, uint32_t ref) noexcept nogil:
    """Points parent's child on side (the root when parent is 0) at ref."""
    if parent == 0:
        t.roots[family] = ref
    else:
        fork_of(t, parent).child[side] = ref


# -- pools --------------------------------------------------------------------------------

cdef int reserve(Table *t, int pool_id, uint32_t count) noexcept nogil:
    """Makes room for count more nodes in a pool; -1 when out of memory."""
    cdef Pool *pool = &t.pools[pool_id]
    cdef size_t need = (<size_t>pool.used + count) * pool.stride, size
    cdef void *base
    if <size_t>pool.used + count > <size_t>INDEX_MASK + 1:
        return -1
    if need <= pool.size:
        return 0
    size = pool.size * 2 if pool.size else PAGE
    while size < need:
        size *= 2
    if pool.size == 0:
        base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    else:
        base = mremap(pool.base, pool.size, size, MREMAP_MAYMOVE)
    if base == MAP_FAILED:
        return -1
    pool.base = <uint8_t *>base
    pool.size = size
    # Advice only, where the kernel leaves huge pages to it: a lookup in a big
    # table misses the TLB at nearly every step without them.
    madvise(base, size, MADV_HUGEPAGE)
    return 0


cdef uint32_t alloc(Table *t, uint32_t kind, int family) noexcept nogil:
    """A zeroed node from a pool that reserve made room in."""
    cdef Pool *pool = &t.pools[kind * 2 + family]
    cdef uint32_t ref = kind << 30 | <uint32_t>family << 29 | pool.used
    pool.used += 1
    memset(at(t, ref), 0, pool.stride)
    return ref


cdef int path_to(Table *t, uint32_t target, uint32_t *path, uint8_t *sides) noexcept nogil:
    """Fills path and sides with the inner nodes above target, a node in the
    trie, and the side taken at each (its key spells them out); returns how
    many there are."""
    cdef const uint8_t *key = key_of(t, target)
    cdef uint32_t ref = t.roots[family_of(target)]
    cdef const Fork *fork
    cdef int depth = 0, side
    while ref != target:
        fork = fork_of(t, ref)
        side = bit_at(key, fork.cidr)
        path[depth] = ref
        sides[depth] = side
        ref = fork.child[side]
        depth += 1
    return depth


cdef void moved(Table *t, uint32_t old, uint32_t new) noexcept nogil:
    """Repoints whatever referred to the node copied from old to new."""
    cdef uint32_t path[MAX_DEPTH]
    cdef uint8_t sides[MAX_DEPTH]
    cdef int depth = path_to(t, old, path, sides)
    cdef Links *links = links_of(t, new)
    set_child(t, family_of(new), path[depth - 1] if depth else 0, sides[depth - 1] if depth else 0, new)
    if links != NULL and links.peer >= 0:
        if links.prev:
            links_of(t, links.prev).next = new
        else:
            t.heads[links.peer] = new
        if links.next:
            links_of(t, links.next).prev = new
        else:
            t.tails[links.peer] = new


cdef void free_node(Table *t, uint32_t ref) noexcept nogil:
    """Returns a node, already out of the trie and lists, to its pool: the
    pool's last node moves into its place."""
    cdef Pool *pool = &t.pools[ref >> 29]
    cdef uint32_t last = pool.used - 1, old
    if ref & INDEX_MASK != last:
        old = (ref & ~<uint32_t>INDEX_MASK) | last
        memcpy(at(t, ref), at(t, old), pool.stride)
        moved(t, old, ref)
    pool.used -= 1


cdef void free_two(Table *t, uint32_t a, uint32_t b) noexcept nogil:
    """Frees a and b, the higher index of one pool first so that the other
    does not move."""
    if a >> 29 == b >> 29 and b & INDEX_MASK > a & INDEX_MASK:
        a, b = b, a
    free_node(t, a)
    free_node(t, b)


cdef void trim(Table *t) noexcept nogil:
    """Gives back memory: a pool at most a quarter full is halved as long as
    it stays at most half full; an empty one is unmapped."""
    cdef Pool *pool
    cdef size_t need, size
    cdef void *base
    cdef int i
    for i in range(2, 8):
        pool = &t.pools[i]
        need = <size_t>pool.used * pool.stride
        if pool.size == 0 or need * 4 > pool.size:
            continue
        if need == 0:
            munmap(pool.base, pool.size)
            pool.base = NULL
            pool.size = 0
            continue
        size = pool.size
        while size > PAGE and size // 2 >= need * 2:
            size //= 2
        base = mremap(pool.base, pool.size, size, 0)
        if base != MAP_FAILED:
            pool.size = size


# -- per-peer lists ------------------------------------------------------------------------

cdef int reserve_peer(Table *t, int peer) noexcept nogil:
    """Makes room for peer's list ends; -1 when out of memory."""
    cdef size_t size
    cdef uint32_t *ends
    if <size_t>peer < t.peers_capacity:
        return 0
    size = max(<size_t>16, t.peers_capacity * 2, <size_t>peer + 1)
    ends = <uint32_t *>realloc(t.heads, size * sizeof(uint32_t))
    if ends == NULL:
        return -1
    t.heads = ends
    ends = <uint32_t *>realloc(t.tails, size * sizeof(uint32_t))
    if ends == NULL:
        return -1
    t.tails = ends
    memset(t.heads + t.peers_capacity, 0, (size - t.peers_capacity) * sizeof(uint32_t))
    memset(t.tails + t.peers_capacity, 0, (size - t.peers_capacity) * sizeof(uint32_t))
    t.peers_capacity = size
    return 0


cdef void link(Table *t, uint32_t ref) noexcept nogil:
    """Appends ref to its owner's list."""
    cdef Links *links = links_of(t, ref)
    cdef int peer = links.peer
    links.next = 0
    links.prev = t.tails[peer]
    if t.tails[peer]:
        links_of(t, t.tails[peer]).next = ref
    else:
        t.heads[peer] = ref
    t.tails[peer] = ref


cdef void unlink(Table *t, uint32_t ref) noexcept nogil:
    cdef Links *links = links_of(t, ref)
    cdef int peer = links.peer
    if links.prev:
        links_of(t, links.prev).next = links.next
    else:
        t.heads[peer] = links.next
    if links.next:
        links_of(t, links.next).prev = links.prev
    else:
        t.tails[peer] = links.prev
    links.prev = links.next = 0


# -- changes --------------------------------------------------------------------------------

cdef uint32_t find(Table *t, int family, const uint8_t *key, int cidr, uint32_t *path, uint8_t *sides,
                   int *depth) noexcept nogil:
    """The node for key/cidr (host bits zero), or 0; path and sides receive
    the inner nodes above it and the side taken at each."""
    cdef uint32_t ref = t.roots[family]
    cdef int node_cidr
    depth[0] = 0
    while ref:
        node_cidr = cidr_of(t, ref)
        if common_bits(key_of(t, ref), key, min(node_cidr, cidr)) < min(node_cidr, cidr):
            return 0
        if node_cidr >= cidr:
            return ref if node_cidr == cidr else 0
        path[depth[0]] = ref
        sides[depth[0]] = bit_at(key, node_cidr)
        ref = fork_of(t, ref).child[sides[depth[0]]]
        depth[0] += 1
    return 0


cdef void remove_found(Table *t, uint32_t ref, const uint32_t *path, const uint8_t *sides,
                       int depth) noexcept nogil:
    """Drops the prefix at ref, then any node that no longer branches."""
    cdef int family = family_of(ref)
    cdef Links *links = links_of(t, ref)
    cdef Fork *fork
    cdef uint32_t parent = path[depth - 1] if depth else 0
    cdef int side = sides[depth - 1] if depth else 0
    unlink(t, ref)
    links.peer = -1
    t.count -= 1
    if ref >> 30 == PREFIX:
        fork = fork_of(t, ref)
        if fork.child[0] and fork.child[1]:
            return                        # it stays, only to branch
        if fork.child[0] or fork.child[1]:
            set_child(t, family, parent, side, fork.child[0] | fork.child[1])
            free_node(t, ref)
            return
    set_child(t, family, parent, side, 0)
    if parent and peer_of(t, parent) < 0:
        # The parent only branched, and now has one child: that child takes its place.
        set_child(t, family, path[depth - 2] if depth > 1 else 0, sides[depth - 2] if depth > 1 else 0,
                  fork_of(t, parent).child[1 - side])
        free_two(t, ref, parent)
    else:
        free_node(t, ref)


cdef void remove_last(Table *t, int peer) noexcept nogil:
    """Removes the last of peer's prefixes.  From the end, the nodes freed are
    mostly the last ones of their pools, which then need not move."""
    cdef uint32_t ref = t.tails[peer]
    cdef uint32_t path[MAX_DEPTH]
    cdef uint8_t sides[MAX_DEPTH]
    remove_found(t, ref, path, sides, path_to(t, ref, path, sides))


# -- addresses as text (netip.Addr.String) --------------------------------------------

cdef char *put_decimal(char *p, unsigned value) noexcept nogil:
    if value >= 100:
        p[0] = DIGITS[value // 100]
        p += 1
    if value >= 10:
        p[0] = DIGITS[value // 10 % 10]
        p += 1
    p[0] = DIGITS[value % 10]
    return p + 1


cdef char *put_ipv4(char *p, const uint8_t *a) noexcept nogil:
    cdef int i
    for i in range(4):
        if i:
            p[0] = b'.'
            p += 1
        p = put_decimal(p, a[i])
    return p


cdef char *put_ipv6(char *p, const uint8_t *a) noexcept nogil:
    """RFC 5952: lower-case hex without leading zeros, the longest run of two
    or more zero groups as "::" (the first on a tie); ::ffff:a.b.c.d for an
    IPv4-mapped address."""
    cdef unsigned groups[8]
    cdef int i, shift, best_start = -1, best_len = 1, run_start = -1
    for i in range(8):
        groups[i] = a[2 * i] << 8 | a[2 * i + 1]
    if groups[0] == groups[1] == groups[2] == groups[3] == groups[4] == 0 and groups[5] == 0xFFFF:
        memcpy(p, b"::ffff:", 7)
        return put_ipv4(p + 7, a + 12)
    for i in range(9):
        if i < 8 and groups[i] == 0:
            if run_start < 0:
                run_start = i
        elif run_start >= 0:
            if i - run_start > best_len:
                best_start, best_len = run_start, i - run_start
            run_start = -1
    i = 0
    while i < 8:
        if i == best_start:
            p[0] = p[1] = b':'
            p += 2
            i += best_len
            continue
        if i and i != best_start + best_len:
            p[0] = b':'
            p += 1
        shift = 12
        while shift and not (groups[i] >> shift):
            shift -= 4
        while shift >= 0:
            p[0] = DIGITS[groups[i] >> shift & 0xF]
            p += 1
            shift -= 4
        i += 1
    return p


cdef Py_ssize_t format_line(char *line, Table *t, uint32_t ref) noexcept nogil:
    """allowed_ip=<address>/<cidr> and a newline, into line (LINE_MAX bytes)."""
    cdef char *p = line + 11
    memcpy(line, LINE_HEAD, 11)
    p = put_ipv6(p, key_of(t, ref)) if family_of(ref) else put_ipv4(p, key_of(t, ref))
    p[0] = b'/'
    p = put_decimal(p + 1, cidr_of(t, ref))
    p[0] = b'\n'
    return p + 1 - line


cdef class AllowedIPs:
    """Prefix -> peer id, with a list of each peer's prefixes in insertion order."""

    def __cinit__(self):
        cdef uint32_t kind
        for kind in range(BRANCH, HOST + 1):
            self.t.pools[kind * 2].stride = node_size(kind, 4)
            self.t.pools[kind * 2 + 1].stride = node_size(kind, 16)

    def __dealloc__(self):
        cdef int i
        for i in range(2, 8):
            if self.t.pools[i].size:
                munmap(self.t.pools[i].base, self.t.pools[i].size)
        free(self.t.heads)
        free(self.t.tails)

    # -- lookups (the data plane's) -------------------------------------------

    # Each step costs one dependent load: a child ref becomes a node address
    # by arithmetic on the pool bases, read once per lookup (changes, which
    # may move the pools, hold the same lock as the data plane's lookups).

    cdef int lookup4(self, const uint8_t *addr) noexcept nogil:
        cdef uint32_t a = load32(addr), ref = self.t.roots[0]
        cdef const uint8_t *branches = self.t.pools[BRANCH * 2].base
        cdef const uint8_t *prefixes = self.t.pools[PREFIX * 2].base
        cdef const uint8_t *hosts = self.t.pools[HOST * 2].base
        cdef const uint8_t *node
        cdef const Fork *fork
        cdef size_t index
        cdef int found = -1, peer
        while ref:
            index = ref & INDEX_MASK
            if ref >> 30 == HOST:
                node = hosts + index * node_size(HOST, 4)
                return (<const Links *>node).peer if load32(node + sizeof(Fork)) == a else found
            if ref >> 30 == PREFIX:
                node = prefixes + index * node_size(PREFIX, 4)
            else:
                node = branches + index * node_size(BRANCH, 4)
            fork = <const Fork *>node
            if (load32(node + sizeof(Fork)) ^ a) & ~(<uint32_t>0xFFFFFFFF >> fork.cidr):
                break
            if ref >> 30 == PREFIX:
                peer = (<const Links *>(node + sizeof(Fork) + 4)).peer
                if peer >= 0:
                    found = peer
            ref = fork.child[(a >> (31 - fork.cidr)) & 1]
        return found

    cdef int lookup6(self, const uint8_t *addr) noexcept nogil:
        cdef uint64_t high = load64(addr), low = load64(addr + 8)
        cdef uint32_t ref = self.t.roots[1]
        cdef const uint8_t *branches = self.t.pools[BRANCH * 2 + 1].base
        cdef const uint8_t *prefixes = self.t.pools[PREFIX * 2 + 1].base
        cdef const uint8_t *hosts = self.t.pools[HOST * 2 + 1].base
        cdef const uint8_t *node
        cdef const uint8_t *key
        cdef const Fork *fork
        cdef size_t index
        cdef int found = -1, peer, cidr, side
        while ref:
            index = ref & INDEX_MASK
            if ref >> 30 == HOST:
                node = hosts + index * node_size(HOST, 16)
                key = node + sizeof(Fork)
                return (<const Links *>node).peer if load64(key) == high and load64(key + 8) == low else found
            if ref >> 30 == PREFIX:
                node = prefixes + index * node_size(PREFIX, 16)
            else:
                node = branches + index * node_size(BRANCH, 16)
            key = node + sizeof(Fork)
            fork = <const Fork *>node
            cidr = fork.cidr
            if cidr < 64:
                if (load64(key) ^ high) & ~(~<uint64_t>0 >> cidr):
                    break
                side = (high >> (63 - cidr)) & 1
            else:
                if load64(key) != high or (load64(key + 8) ^ low) & ~(~<uint64_t>0 >> (cidr - 64)):
                    break
                side = (low >> (127 - cidr)) & 1
            if ref >> 30 == PREFIX:
                peer = (<const Links *>(key + 16)).peer
                if peer >= 0:
                    found = peer
            ref = fork.child[side]
        return found

    def lookup(self, bytes addr not None):
        if len(addr) == 4:
            return self.lookup4(addr)
        if len(addr) == 16:
            return self.lookup6(addr)
        raise ValueError("address must be 4 or 16 bytes")

    # -- changes --------------------------------------------------------------------

    cdef int insert_records(self, const uint8_t *records, Py_ssize_t count, int peer) noexcept nogil:
        """insert_raw for each of count RECORD_SIZE-byte records, in order;
        -1 when out of memory (the records before the failing one are in)."""
        cdef Py_ssize_t i
        cdef const uint8_t *r
        for i in range(count):
            r = records + i * RECORD_SIZE
            if self.insert_raw(r + 2, r[0] * 8, r[1], peer) < 0:
                return -1
        return 0

    cdef int insert_raw(self, const uint8_t *key, int bits, int cidr, int peer) noexcept nogil:
        """Maps key/cidr (host bits ignored) to peer, taking it from any other
        peer; the caller checked 0 <= cidr <= bits (32 or 128) and peer >= 0.
        Returns 0, or -1 when out of memory, with nothing changed."""
        cdef Table *t = &self.t
        cdef int family = bits == 128, size = bits // 8
        cdef int node_cidr = 0, common = 0, side = 0, old_side = 0, b
        cdef uint32_t parent = 0, ref = t.roots[family], fresh, branch, kind
        cdef uint8_t k[16]
        cdef Fork *fork
        memcpy(k, key, size)
        mask(k, cidr, bits)
        while ref:
            node_cidr = cidr_of(t, ref)
            common = common_bits(key_of(t, ref), k, min(node_cidr, cidr))
            if common < node_cidr or node_cidr >= cidr:
                break
            parent = ref
            side = bit_at(k, node_cidr)
            ref = fork_of(t, ref).child[side]
        if reserve_peer(t, peer) < 0:
            return -1
        if ref and node_cidr == cidr and common == cidr:
            # The prefix exists: it changes hands and moves to the end of the
            # new owner's list, as wireguard-go lists it.
            if ref >> 30 != BRANCH:
                if peer_of(t, ref) >= 0:
                    unlink(t, ref)
                else:
                    t.count += 1
                links_of(t, ref).peer = peer
                link(t, ref)
                return 0
            # A node that only branched becomes a prefix node.
            if reserve(t, PREFIX * 2 + family, 1) < 0:
                return -1
            fresh = alloc(t, PREFIX, family)
            memcpy(fork_of(t, fresh), fork_of(t, ref), sizeof(Fork))
            memcpy(key_of(t, fresh), k, size)
            links_of(t, fresh).peer = peer
            set_child(t, family, parent, side, fresh)
            link(t, fresh)
            t.count += 1
            free_node(t, ref)
            trim(t)
            return 0
        kind = HOST if cidr == bits else PREFIX
        if ref:
            old_side = bit_at(key_of(t, ref), cidr) if common == cidr else 0
        if reserve(t, kind * 2 + family, 1) < 0 or (ref and common < cidr and reserve(t, BRANCH * 2 + family, 1) < 0):
            return -1
        fresh = alloc(t, kind, family)
        memcpy(key_of(t, fresh), k, size)
        if kind == PREFIX:
            fork_of(t, fresh).cidr = cidr
        links_of(t, fresh).peer = peer
        if ref == 0:
            set_child(t, family, parent, side, fresh)
        elif common == cidr:
            # The new prefix contains the old subtree.
            fork_of(t, fresh).child[old_side] = ref
            set_child(t, family, parent, side, fresh)
        else:
            # They part ways at bit `common`: a branching node joins them.
            branch = alloc(t, BRANCH, family)
            memcpy(key_of(t, branch), k, size)
            mask(key_of(t, branch), common, bits)
            fork = fork_of(t, branch)
            fork.cidr = common
            b = bit_at(k, common)
            fork.child[b] = fresh
            fork.child[1 - b] = ref
            set_child(t, family, parent, side, branch)
        link(t, fresh)
        t.count += 1
        return 0

    def insert(self, bytes addr not None, int cidr, int peer):
        """Maps addr/cidr (host bits ignored) to peer, taking it from any other peer."""
        cdef int bits = len(addr) * 8
        if bits != 32 and bits != 128:
            raise ValueError("address must be 4 or 16 bytes")
        if not 0 <= cidr <= bits:
            raise ValueError(f"prefix length {cidr} out of range")
        if peer < 0:
            raise ValueError("peer id must not be negative")
        if self.insert_raw(addr, bits, cidr, peer) < 0:
            raise MemoryError()

    def remove(self, bytes addr not None, int cidr, int peer):
        """Removes addr/cidr if it belongs to peer; returns whether it did."""
        cdef int bits = len(addr) * 8, depth
        cdef uint8_t key[16]
        cdef uint32_t path[MAX_DEPTH]
        cdef uint8_t sides[MAX_DEPTH]
        cdef uint32_t ref
        if bits != 32 and bits != 128:
            raise ValueError("address must be 4 or 16 bytes")
        if not 0 <= cidr <= bits:
            raise ValueError(f"prefix length {cidr} out of range")
        memcpy(key, <const uint8_t *>addr, bits // 8)
        mask(key, cidr, bits)
        ref = find(&self.t, bits == 128, key, cidr, path, sides, &depth)
        if ref == 0 or peer < 0 or peer_of(&self.t, ref) != peer:
            return False
        remove_found(&self.t, ref, path, sides, depth)
        trim(&self.t)
        return True

    def remove_peer(self, int peer):
        """Removes every prefix of peer."""
        if 0 <= peer < <Py_ssize_t>self.t.peers_capacity:
            while self.t.tails[peer]:
                remove_last(&self.t, peer)
            trim(&self.t)

    # -- reading --------------------------------------------------------------------

    def entries(self, int peer):
        """peer's prefixes as (masked address, cidr), in insertion order."""
        cdef uint32_t ref
        result = []
        if 0 <= peer < <Py_ssize_t>self.t.peers_capacity:
            ref = self.t.heads[peer]
            while ref:
                result.append((key_of(&self.t, ref)[:16 if family_of(ref) else 4], cidr_of(&self.t, ref)))
                ref = links_of(&self.t, ref).next
        return result

    def format_into(self, int peer, bytearray out not None):
        """Appends allowed_ip=<address>/<cidr> lines for peer's prefixes, in
        insertion order, to out (the UAPI get=1 text), built in C."""
        cdef Py_ssize_t start = len(out), length = start
        cdef Py_ssize_t n
        cdef char line[LINE_MAX]
        cdef uint32_t ref
        if not 0 <= peer < <Py_ssize_t>self.t.peers_capacity:
            return
        ref = self.t.heads[peer]
        try:
            while ref:
                n = format_line(line, &self.t, ref)
                if length + n > PyByteArray_GET_SIZE(out):
                    # An eighth more, as bytearray grows itself: a get calls
                    # this once per peer on one growing body, and the shrink
                    # to length at the end then costs nothing.
                    PyByteArray_Resize(out, length + LINE_MAX + (length >> 3))
                memcpy(PyByteArray_AS_STRING(out) + length, line, n)
                length += n
                ref = links_of(&self.t, ref).next
        except MemoryError:
            PyByteArray_Resize(out, start)
            raise
        PyByteArray_Resize(out, length)

    def node_memory(self):
        """Bytes mapped for nodes: tests check with it that removals give
        memory back and that it is reused."""
        return sum(self.t.pools[i].size for i in range(2, 8))

    def __len__(self):
        return self.t.count
