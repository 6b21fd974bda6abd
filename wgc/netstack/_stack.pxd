# The network stack: one Netif and the protocols on it.  stack_input takes
# every packet that comes out of the tunnel; the protocols answer through the
# Netif's sink.
#
# Who calls: the I/O edge (the stack's thread, or the Python face for tests),
# holding the stack's lock; nogil.
from libc.stdint cimport uint8_t, uint32_t, int64_t
from wgc.netstack._netif cimport Netif, Sink
from wgc.netstack._dgram cimport DgramTable
from wgc.netstack._frag cimport Reassembler
from wgc.netstack._tcp cimport TcpTable

cdef struct StackCore:
    Netif netif
    TcpTable tcp
    DgramTable dgram
    Reassembler frag
    int64_t frag_deadline          # the earliest fragment expiry (0: none waits)
    uint32_t dropped               # packets taken in and dropped (malformed, not ours)
    int64_t icmp_second            # ICMP errors we send: a budget per second
    uint32_t icmp_count

cdef int stack_init(StackCore *s, uint32_t mtu) noexcept nogil
# stack_init with the MTU checked and the interface's addresses (IP texts) set:
# what the Python faces (Stack, the engine) start from.
cdef int stack_setup(StackCore *s, object addresses, uint32_t mtu) except -1
cdef void stack_free(StackCore *s) noexcept nogil
cdef void stack_input(StackCore *s, const uint8_t *packet, uint32_t length, int64_t now) noexcept nogil
# Runs what is due at now (TCP timers, fragment expiry); returns the next
# deadline (0: none).
cdef int64_t stack_timers(StackCore *s, int64_t now) noexcept nogil
cdef int64_t stack_next_deadline(const StackCore *s) noexcept nogil
