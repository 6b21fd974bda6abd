# Fragment reassembly on the way in (RFC 791 for IPv4, RFC 8200 section 4.5
# for IPv6), sans-I/O: fragments go in with the time, whole datagrams come
# out.  Memory is capped over all datagrams being reassembled, and each one
# expires after a time limit, so a flood of fragments that never complete
# costs at most the cap.  Overlapping fragments drop their whole datagram
# (RFC 5722; Linux does the same for IPv4); an exact duplicate (same offset,
# length, More Fragments flag and bytes) is ignored (RFC 8200 section 4.5).
#
# When a fragment would pass the cap (or every slot is taken), the expired
# datagrams go first, then the oldest others, whole; a fragment that does not
# fit even then is dropped with its datagram.  The cap counts the bytes asked
# of malloc for fragments; reasm_init allocates besides only the slots (about
# 28 KiB) and one output buffer of 40 + 65,535 bytes.
#
# Who calls: the network stack's thread alone (wgc/netstack/_stack), with its
# lock held; nothing here blocks or allocates beyond the cap.
from libc.stdint cimport uint8_t, uint32_t, int64_t

cdef enum:
    FRAG_TIMEOUT4_S = 30           # Linux's ipfrag_time
    FRAG_TIMEOUT6_S = 60           # RFC 8200
    FRAG_MEMORY_MAX = 4 << 20      # Linux's ipfrag_high_thresh
    FRAG_DATAGRAMS_MAX = 256       # datagrams being reassembled at once

cdef struct FragDatagram              # one datagram being reassembled (defined in _frag.pyx)

cdef struct Reassembler:
    FragDatagram *datagrams        # FRAG_DATAGRAMS_MAX slots
    uint32_t count                 # slots in use
    size_t memory                  # bytes held for fragments now
    size_t memory_max
    uint8_t *out                   # the last reassembled datagram (owned here)
    uint32_t out_capacity

# 0, or -1 when out of memory; reasm_free is safe after either.
cdef int reasm_init(Reassembler *r, size_t memory_max) noexcept nogil
cdef void reasm_free(Reassembler *r) noexcept nogil
# An IPv4 packet that is a fragment (MF set or offset != 0); its header is
# checked here again (version, IHL, total length within length), so any bytes
# are safe.  Returns 1 with *out, *out_len the whole datagram (an IPv4 packet
# with MF and offset 0, total length and header checksum rewritten; valid
# until the next call on r), 0 while it waits for more fragments (or the
# fragment was an exact duplicate), -1 when the fragment or its datagram was
# dropped (malformed, overlap, over 65,535 bytes, the memory cap).  A packet
# with offset 0 and MF clear comes out at once, whatever is being reassembled.
cdef int reasm_input4(Reassembler *r, const uint8_t *packet, uint32_t length, int64_t now,
                      uint8_t **out, uint32_t *out_len) noexcept nogil
# An IPv6 packet with a Fragment header at frag_at, whose preceding header's
# Next Header byte is at next_header_at.  The whole datagram comes out without
# the Fragment header, that byte set to the first fragment's Next Header and
# the payload length rewritten; returns as reasm_input4.  An atomic fragment
# (offset 0, M clear) comes out at once (RFC 6946).
cdef int reasm_input6(Reassembler *r, const uint8_t *packet, uint32_t length, uint32_t next_header_at,
                      uint32_t frag_at, int64_t now, uint8_t **out, uint32_t *out_len) noexcept nogil
# Forgets datagrams past their time limit; returns the earliest deadline of
# those left (ns, the clock of `now`), or -1 when none is left.
cdef int64_t reasm_expire(Reassembler *r, int64_t now) noexcept nogil
