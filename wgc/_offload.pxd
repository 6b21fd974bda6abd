# Segmentation and coalescing for a TUN opened with IFF_VNET_HDR.
#
# With offloads on, the kernel hands the TUN reader TCP "super-packets" of up
# to 64 KiB (one virtio_net_hdr in front says how to cut them) and packets
# whose transport checksum is only partly computed.  On the way back, many
# in-order TCP segments of one flow can be written as one super-packet.  This
# module does the byte work for both directions, without I/O: the data plane
# calls it on its batch buffers, the tests call it on tables of packets.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t

cdef enum:
    VNET_HDR_LEN = 10              # struct virtio_net_hdr, legacy (no num_buffers)
    VNET_F_NEEDS_CSUM = 1
    VNET_F_DATA_VALID = 2
    VNET_GSO_NONE = 0
    VNET_GSO_TCPV4 = 1
    VNET_GSO_TCPV6 = 4
    VNET_GSO_UDP_L4 = 5
    VNET_GSO_ECN = 0x80
    GRO_MAX_LENGTH = 65535         # an IPv4 total length (and our IPv6 cap)
    UDP_MAX_SEGMENTS = 64          # datagrams per UDP GSO message every kernel accepts

# virtio_net_hdr fields, host order (legacy TUN uses the host's byte order).
cdef struct VnetHdr:
    uint8_t flags
    uint8_t gso_type
    uint16_t hdr_len
    uint16_t gso_size
    uint16_t csum_start
    uint16_t csum_offset

cdef void vnet_hdr_load(VnetHdr *h, const uint8_t *p) noexcept nogil
cdef void vnet_hdr_store(const VnetHdr *h, uint8_t *p) noexcept nogil

# Transport kinds a super-packet may carry.
cdef enum:
    KIND_OTHER = 0                 # passed through one by one
    KIND_TCP = 1
    KIND_UDP = 2

# A packet read with a virtio_net_hdr: how many IP packets it stands for.
cdef struct Segmenter:
    const uint8_t *packet
    uint32_t length
    uint32_t ip_len                # IP header length (IPv6: the fixed 40)
    uint32_t l4_len                # TCP header with options, or the 8-byte UDP header
    uint32_t mss                   # payload bytes per segment; 0 = pass whole
    uint32_t count
    int kind
    bint ipv6

# Returns the count (0 = drop it: malformed, or an offload we did not ask
# for).  A packet that needs no cutting has its partial checksum completed
# in place here.
cdef uint32_t segmenter_init(Segmenter *s, const VnetHdr *h, uint8_t *packet,
                             uint32_t length) noexcept nogil
# Writes segment i (0 <= i < count) as a complete IP packet with correct
# checksums into out; returns its length.
cdef uint32_t segmenter_write(const Segmenter *s, uint32_t i, uint8_t *out) noexcept nogil

# Coalescing of decrypted packets on their way to the TUN.  Each accepted
# packet either joins an earlier super-packet of the same TCP or UDP flow (when it
# continues it exactly) or starts a new item; items keep arrival order.
cdef struct GroPacket:
    uint8_t *data
    uint32_t length
    int32_t next                   # the next member of its item, -1 = last

cdef struct GroItem:
    int32_t first, last            # member packets
    uint32_t members
    uint32_t length                # of the super-packet
    uint32_t mss                   # payload of the first member
    uint32_t next_seq              # TCP: the sequence number that continues it
    bint open                      # may take more members
    int kind
    bint ipv6
    uint32_t ip_len, l4_len

cdef struct Gro:
    GroPacket *packets
    GroItem *items
    uint32_t capacity              # of both arrays
    uint32_t packet_count, item_count

cdef int gro_init(Gro *g, uint32_t capacity) noexcept nogil
cdef void gro_free(Gro *g) noexcept nogil
cdef bint gro_full(const Gro *g) noexcept nogil
cdef void gro_add(Gro *g, uint8_t *data, uint32_t length) noexcept nogil
# For item i: patches its first packet's headers for the whole super-packet
# and fills h.  The super-packet is the first member whole, then the payload
# (past ip_len + l4_len) of each later member, in member order.
cdef void gro_finish(Gro *g, uint32_t i, VnetHdr *h) noexcept nogil
cdef void gro_reset(Gro *g) noexcept nogil
