# The network stack's side of the data plane: a PacketPort (wgc/_port.pxd)
# whose packets come from the stack instead of a TUN.
#
# Outbound (stack -> tunnel): two batch buffers.  The stack's thread fills
# one through a Sink and publishes it (link_publish), which makes ready_fd
# readable; the data plane takes it (take/release) and seals its packets.
# With both buffers published the stack has no sink and waits: release
# wakes it through wake_fd.
# Inbound (tunnel -> stack): the data plane's emit appends each decrypted
# packet to an inbox under the link's mutex and wakes the stack when the
# inbox was empty; the stack swaps inboxes (link_inbox) and reads its
# packets without the lock.  A full inbox drops, as a NIC's ring would.
#
# Who calls whom: take, release, gone, emit: the data-plane thread, holding
# Core.mutex (never the stack's lock).  link_*: the stack's thread, holding
# the stack's lock.  The link's own mutex is held only inside these calls,
# so neither side ever waits for the other's work.
from libc.stdint cimport uint8_t, uint32_t
from wgc._port cimport PacketPort
from wgc._pthread cimport pthread_mutex_t
from wgc.netstack._netif cimport Sink

cdef enum:
    LINK_INBOX_BYTES = 4 << 20     # per inbox: 2,900 full-sized packets
    LINK_OUTBOXES = 2

cdef struct Inbox:
    uint8_t *data                  # records: a 4-byte length (host order), then the packet
    uint32_t used

cdef class StackPort(PacketPort):
    cdef pthread_mutex_t mutex
    cdef readonly int wake_fd      # readable when the stack has work: packets in, a batch released
    cdef Sink out[LINK_OUTBOXES]
    cdef uint32_t out_published    # buffers the data plane may take (0..2)
    cdef uint32_t out_fill         # the buffer the stack fills
    cdef uint32_t out_take         # the buffer the data plane takes next
    cdef Inbox inbox[2]
    cdef uint32_t inbox_fill       # the inbox emit appends to
    cdef readonly unsigned long long inbox_dropped
    cdef bint closed

# The sink the stack should write into now; NULL when both buffers wait for
# the data plane.
cdef Sink *link_sink(StackPort link) noexcept nogil
# Hands the filled buffer (if it holds packets) to the data plane.
cdef void link_publish(StackPort link) noexcept nogil
# The inbox filled since the last call (records as in Inbox), now the
# stack's until the next call.
cdef Inbox *link_inbox(StackPort link) noexcept nogil
