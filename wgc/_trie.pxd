# Allowed IPs: which peer owns an address, by longest-prefix match.
#
# A path-compressed binary trie per address family, as in the kernel and
# wireguard-go.  Lookups (lookup4/lookup6) touch only C memory and run
# without the GIL; changes come under the device's lock.
#
# Memory: a million prefixes must stay cheap, so nodes are not malloc'd one by
# one.  They live in six dense arrays ("pools"), one per family and kind, and
# refer to each other by 32-bit refs: kind in bits 31-30, family in bit 29
# (0 IPv4, 1 IPv6), index in the pool below; 0 is no node.  The kinds:
#   branch  Fork, key                  an inner node that only branches
#   prefix  Fork, key, Links           a prefix shorter than the address, which
#                                      can have children (peer -1 once removed
#                                      while it still has two)
#   host    Links, key                 a full-length prefix: never has children
# Fork and Links are the same size, so the key (4 or 16 bytes, host bits zero)
# is at the same place in every kind, and a node is 16 to 40 bytes.  There is
# no parent link: removals walk down from the root (at most 129 steps).  A
# freed node's place is filled by its pool's last node, so a pool stays dense,
# and it shrinks when it is a quarter full.
from libc.stdint cimport int32_t, uint8_t, uint32_t


cdef struct Fork:
    uint32_t child[2]
    uint8_t cidr


cdef struct Links:
    int32_t peer                 # its owner; -1 for a prefix node kept only to branch
    uint32_t prev                # the owner's prefixes, in insertion order
    uint32_t next


cdef struct Pool:
    uint8_t *base                # mmap'd (huge pages advised): grows with mremap, without copying
    size_t size                  # bytes mapped
    uint32_t used                # nodes
    uint32_t stride              # bytes per node


cdef struct Table:
    Pool pools[8]                # by ref >> 29: kind * 2 + family (0 and 1 unused)
    uint32_t roots[2]            # by family
    uint32_t *heads              # per peer id: first and last of its prefixes
    uint32_t *tails
    size_t peers_capacity
    Py_ssize_t count


# A prefix as insert_records takes a batch of them (wgc/_uapi_set.pyx makes
# them from `allowed_ip=` lines): address length (4 or 16), prefix length
# (at most 8 times that), then 16 address bytes, an IPv4 address in the first four.
cdef enum:
    RECORD_SIZE = 18


cdef class AllowedIPs:
    cdef Table t

    cdef int lookup4(self, const uint8_t *addr) noexcept nogil
    cdef int lookup6(self, const uint8_t *addr) noexcept nogil
    cdef int insert_raw(self, const uint8_t *key, int bits, int cidr, int peer) noexcept nogil
    cdef int insert_records(self, const uint8_t *records, Py_ssize_t count, int peer) noexcept nogil
