# cython: language_level=3
"""Allowed IPs: a path-compressed binary trie per family (see _trie.pxd)."""
from libc.stdint cimport uint8_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcpy, memset


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


cdef Node *new_node(const uint8_t *key, int cidr, int bits, int peer) noexcept:
    cdef Node *n = <Node *>calloc(1, sizeof(Node))
    if n == NULL:
        return NULL
    memcpy(n.key, key, bits // 8)
    mask(n.key, cidr, bits)
    n.cidr = cidr
    n.bits = bits
    n.peer = peer
    return n


cdef void free_tree(Node *n) noexcept:
    if n != NULL:
        free_tree(n.child[0])
        free_tree(n.child[1])
        free(n)


cdef class AllowedIPs:
    """Prefix -> peer id, with a list of each peer's prefixes in insertion order."""

    def __dealloc__(self):
        free_tree(self.root4)
        free_tree(self.root6)
        free(self.heads)
        free(self.tails)

    # -- lookups (the data plane's) -------------------------------------------

    cdef int _lookup(self, Node *node, const uint8_t *addr) noexcept nogil:
        cdef int found = -1
        while node != NULL and common_bits(node.key, addr, node.cidr) == node.cidr:
            if node.peer >= 0:
                found = node.peer
            if node.cidr == node.bits:
                break
            node = node.child[bit_at(addr, node.cidr)]
        return found

    cdef int lookup4(self, const uint8_t *addr) noexcept nogil:
        return self._lookup(self.root4, addr)

    cdef int lookup6(self, const uint8_t *addr) noexcept nogil:
        return self._lookup(self.root6, addr)

    def lookup(self, bytes addr):
        if len(addr) == 4:
            return self.lookup4(addr)
        if len(addr) == 16:
            return self.lookup6(addr)
        raise ValueError("address must be 4 or 16 bytes")

    # -- per-peer lists -----------------------------------------------------------

    cdef void _link(self, Node *node) except *:
        cdef int peer = node.peer, size
        cdef Node **heads
        cdef Node **tails
        if peer >= self.peers_capacity:
            size = max(16, self.peers_capacity * 2, peer + 1)
            heads = <Node **>realloc(self.heads, size * sizeof(Node *))
            if heads == NULL:
                raise MemoryError()
            self.heads = heads
            tails = <Node **>realloc(self.tails, size * sizeof(Node *))
            if tails == NULL:
                raise MemoryError()
            self.tails = tails
            memset(self.heads + self.peers_capacity, 0, (size - self.peers_capacity) * sizeof(Node *))
            memset(self.tails + self.peers_capacity, 0, (size - self.peers_capacity) * sizeof(Node *))
            self.peers_capacity = size
        node.peer_next = NULL
        node.peer_prev = self.tails[peer]
        if self.tails[peer] != NULL:
            self.tails[peer].peer_next = node
        else:
            self.heads[peer] = node
        self.tails[peer] = node

    cdef void _unlink(self, Node *node) noexcept:
        cdef int peer = node.peer
        if node.peer_prev != NULL:
            node.peer_prev.peer_next = node.peer_next
        else:
            self.heads[peer] = node.peer_next
        if node.peer_next != NULL:
            node.peer_next.peer_prev = node.peer_prev
        else:
            self.tails[peer] = node.peer_prev
        node.peer_prev = node.peer_next = NULL

    # -- changes --------------------------------------------------------------------

    cdef Node **_root(self, int bits):
        return &self.root4 if bits == 32 else &self.root6

    cdef int insert_raw(self, const uint8_t *key, int bits, int cidr, int peer) noexcept nogil:
        with gil:
            try:
                self.insert(key[:bits // 8], cidr, peer)
            except MemoryError:
                return -1
        return 0

    def insert(self, bytes addr, int cidr, int peer):
        """Maps addr/cidr (host bits ignored) to peer, taking it from any other peer."""
        cdef int bits = len(addr) * 8, common, b
        cdef const uint8_t *key = addr
        cdef Node **slot
        cdef Node *node
        cdef Node *parent = NULL
        cdef Node *fresh
        cdef Node *branch
        if bits != 32 and bits != 128:
            raise ValueError("address must be 4 or 16 bytes")
        if not 0 <= cidr <= bits:
            raise ValueError(f"prefix length {cidr} out of range")
        if peer < 0:
            raise ValueError("peer id must not be negative")
        slot = self._root(bits)
        node = slot[0]
        while node != NULL:
            common = common_bits(node.key, key, min(node.cidr, cidr))
            if common < node.cidr or node.cidr >= cidr:
                break
            parent = node
            slot = &node.child[bit_at(key, node.cidr)]
            node = slot[0]
        if node != NULL and node.cidr == cidr and common_bits(node.key, key, cidr) == cidr:
            # The prefix exists: it changes hands and moves to the end of the
            # new owner's list, as wireguard-go lists it.
            if node.peer >= 0:
                self._unlink(node)
            else:
                self.count += 1
            node.peer = peer
            self._link(node)
            return
        fresh = new_node(key, cidr, bits, peer)
        if fresh == NULL:
            raise MemoryError()
        if node != NULL:
            common = common_bits(node.key, fresh.key, min(node.cidr, cidr))
            if common == cidr:
                # The new prefix contains the old subtree.
                fresh.child[bit_at(node.key, cidr)] = node
                node.parent = fresh
            else:
                # They part ways at bit `common`: a branching node joins them.
                branch = new_node(key, common, bits, -1)
                if branch == NULL:
                    free(fresh)
                    raise MemoryError()
                b = bit_at(fresh.key, common)
                branch.child[b] = fresh
                branch.child[1 - b] = node
                fresh.parent = branch
                node.parent = branch
                branch.parent = parent
                slot[0] = branch
                self._link(fresh)
                self.count += 1
                return
        fresh.parent = parent
        slot[0] = fresh
        self._link(fresh)
        self.count += 1

    cdef void _remove_node(self, Node *node) noexcept:
        """Drops node's value, then any node that no longer branches."""
        cdef Node *parent
        cdef Node *child
        cdef Node **slot
        self._unlink(node)
        node.peer = -1
        self.count -= 1
        while node != NULL and node.peer < 0 and (node.child[0] == NULL or node.child[1] == NULL):
            child = node.child[0] if node.child[0] != NULL else node.child[1]
            parent = node.parent
            if parent == NULL:
                slot = self._root(node.bits)
            else:
                slot = &parent.child[0] if parent.child[0] == node else &parent.child[1]
            slot[0] = child
            if child != NULL:
                child.parent = parent
            free(node)
            node = parent

    def remove(self, bytes addr, int cidr, int peer):
        """Removes addr/cidr if it belongs to peer; returns whether it did."""
        cdef int bits = len(addr) * 8
        cdef uint8_t key[16]
        cdef Node *node
        if bits != 32 and bits != 128:
            raise ValueError("address must be 4 or 16 bytes")
        if not 0 <= cidr <= bits:
            raise ValueError(f"prefix length {cidr} out of range")
        memcpy(key, <const uint8_t *>addr, bits // 8)
        mask(key, cidr, bits)
        node = self._root(bits)[0]
        while node != NULL and node.cidr < cidr and common_bits(node.key, key, node.cidr) == node.cidr:
            node = node.child[bit_at(key, node.cidr)]
        if (node == NULL or node.cidr != cidr or node.peer != peer or peer < 0
                or common_bits(node.key, key, cidr) != cidr):
            return False
        self._remove_node(node)
        return True

    def remove_peer(self, int peer):
        """Removes every prefix of peer."""
        if 0 <= peer < self.peers_capacity:
            while self.heads[peer] != NULL:
                self._remove_node(self.heads[peer])

    def entries(self, int peer):
        """peer's prefixes as (masked address, cidr), in insertion order."""
        cdef Node *node
        result = []
        if 0 <= peer < self.peers_capacity:
            node = self.heads[peer]
            while node != NULL:
                result.append((node.key[:node.bits // 8], node.cidr))
                node = node.peer_next
        return result

    def format_into(self, int peer, bytearray out):
        from wgc.uapi import format_addr
        for key, cidr in self.entries(peer):
            out += f"allowed_ip={format_addr(key)}/{cidr}\n".encode()

    def __len__(self):
        return self.count
