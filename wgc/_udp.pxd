# UDP I/O for the data plane: endpoints and their sockaddr forms, batch
# receive (recvmmsg, with UDP GRO) and batch send (sendmmsg, with UDP GSO),
# and the cmsg helpers both need.
#
# Who calls whom: only wgc._core, on the data-plane thread (its epoll loop)
# or on a Python thread that holds Core.mutex (set_sockets, the sans-I/O
# entry points, sending a handshake); the UdpSockets struct lives in Core and
# Core.mutex guards it.  Nothing here locks or keeps state beyond
# UdpSockets; the sockets are non-blocking, so no call waits.  udp_plan is
# pure (no socket): tests/test_udp_plan.py drives it through plan().
#
# In sans-I/O mode (Core(capture=True)) UdpSockets.memory stands in for the
# kernel: sendmmsg's messages, built by the same code, are cut into datagrams
# at their UDP_SEGMENT size as the kernel would cut them, and kept for
# udp_memory_take; so the fake-clock tests run the real GSO grouping.
from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef enum:
    BATCH = 64                     # datagrams per sendmmsg, and per recvmmsg without GRO
    # Messages per recvmmsg with UDP GRO, each a train of up to 64 KiB: the
    # receive slots' resident part is the largest message each slot ever
    # held, so the slots a call may fill bound what traffic adds to RSS.
    GRO_RECV_BATCH = 16
    UDP_GSO_MAX_BYTES = 65507      # the largest UDP payload over IPv4

# A UDP endpoint in a form independent of sockaddr layouts; family 0 = none.
# The source is the local address the peer last wrote to (sticky, as the
# kernel keeps it): datagrams to the peer leave from it while it stays ours;
# src_family 0 = let the kernel choose.
cdef struct Endpoint:
    uint16_t family
    uint16_t port                  # host order
    uint32_t scope_id
    uint8_t addr[16]               # 4 bytes used for AF_INET
    uint16_t src_family
    uint32_t src_ifindex           # IPv4: the interface it arrived on
    uint8_t src[16]

cdef struct Datagram:              # one datagram waiting to be sent
    uint8_t *data
    uint32_t length
    Endpoint destination

# How one address family's datagrams of a batch go out: message k carries the
# datagrams order[first[k]] .. order[first[k + 1] - 1] (several: one GSO
# message the kernel cuts into datagrams of the first one's size).
cdef struct SendPlan:
    uint32_t messages
    uint32_t order[BATCH]
    uint32_t first[BATCH + 1]
    uint32_t bytes[BATCH]

cdef enum:
    UDP_MEMORY_MAX = 4096          # datagrams kept in memory until taken

cdef struct Recorded:              # a datagram "sent" in sans-I/O mode
    Endpoint destination
    uint32_t length
    uint32_t message               # the sendmmsg message it was cut from
    uint8_t *data

cdef struct UdpMemory:
    Recorded *datagrams            # oldest first, at most UDP_MEMORY_MAX
    uint32_t count
    uint32_t messages              # messages sent so far

cdef struct UdpSockets:
    int fd[2]                      # IPv4, IPv6; -1 = none
    bint gso[2]                    # per socket: GSO still works
    bint offload                   # sockets set from now on use GSO and GRO
    UdpMemory *memory              # sans-I/O: no sockets, datagrams kept here

cdef bint endpoint_equal(const Endpoint *a, const Endpoint *b) noexcept nogil
cdef int endpoint_from_python(Endpoint *e, object address) except -1
cdef object endpoint_to_python(const Endpoint *e)

# Closes nothing; sets the sockets (-1 = none) and asks them for GRO and for
# the local address of each datagram (IP_PKTINFO, IPV6_RECVPKTINFO).
cdef void udp_set_sockets(UdpSockets *u, int fd4, int fd6) noexcept nogil
# Groups the datagrams of `family` among d[0 .. count-1] into messages: with
# gso, a run to one destination whose sizes are equal (a shorter last one
# allowed), at most UDP_MAX_SEGMENTS and UDP_GSO_MAX_BYTES, is one message.
cdef void udp_plan(SendPlan *plan, const Datagram *d, uint32_t count, uint16_t family,
                   bint gso) noexcept nogil
# What became of a datagram sent.
cdef enum:
    NOT_SENT = 0
    SENT = 1
    SENT_FROM_ANOTHER_SOURCE = 2   # its source was no longer ours: sent without
                                   # it; the caller forgets the peer's source

# Sends d[0 .. count-1] (count <= BATCH); sent[i] tells what became of d[i].
# A message the kernel refuses is dropped like a lost packet; a GSO message
# it cannot cut goes again one datagram at a time, and so does one whose
# source address is gone, without it (sticky, but not too sticky).
cdef void udp_send_batch(UdpSockets *u, const Datagram *d, uint32_t count,
                         int *sent) noexcept nogil
# Sans-I/O: sends go to memory from now on (-1 without memory); free with
# udp_memory_free.  udp_memory_take gives [(bytes, address, message)] and
# forgets them.
cdef int udp_memory_init(UdpSockets *u) noexcept nogil
cdef void udp_memory_free(UdpSockets *u) noexcept nogil
cdef list udp_memory_take(UdpSockets *u)
# One datagram now (handshakes, cookie replies): NOT_SENT, SENT or
# SENT_FROM_ANOTHER_SOURCE.
cdef int udp_send_one(const UdpSockets *u, const uint8_t *data, uint32_t length,
                      const Endpoint *dst) noexcept nogil
# Up to count messages into slots of slot_size bytes; per message its
# source (with the local address it came to), length and GRO segment size
# (0: one datagram).  Returns how many
# arrived (<= 0: none).
cdef int udp_recv_batch(int fd, uint8_t *slots, size_t slot_size, uint32_t count,
                        Endpoint *sources, uint32_t *lengths,
                        uint32_t *segment_sizes) noexcept nogil
