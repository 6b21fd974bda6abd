# Allowed IPs: which peer owns an address, by longest-prefix match.
#
# A path-compressed binary trie per address family, as in the kernel and
# wireguard-go.  Lookups (lookup4/lookup6) touch only C memory and run
# without the GIL; changes come from Python under the device's lock.
from libc.stdint cimport uint8_t

cdef struct Node:
    Node *child[2]
    Node *parent
    Node *peer_prev              # this peer's prefixes, in insertion order
    Node *peer_next
    int peer                     # -1 for an interior node that only branches
    uint8_t cidr
    uint8_t bits                 # 32 or 128: the family
    uint8_t key[16]              # the prefix, host bits zero

cdef class AllowedIPs:
    cdef Node *root4
    cdef Node *root6
    cdef Node **heads            # per peer id: first and last of its prefixes
    cdef Node **tails
    cdef int peers_capacity
    cdef Py_ssize_t count

    cdef int insert_raw(self, const uint8_t *key, int bits, int cidr, int peer) noexcept nogil
    cdef int lookup4(self, const uint8_t *addr) noexcept nogil
    cdef int lookup6(self, const uint8_t *addr) noexcept nogil
    cdef int _lookup(self, Node *node, const uint8_t *addr) noexcept nogil
    cdef Node **_root(self, int bits)
    cdef void _link(self, Node *node) except *
    cdef void _unlink(self, Node *node) noexcept
    cdef void _remove_node(self, Node *node) noexcept
