# Datagram endpoints of the network stack: UDP sockets, and ICMP echo
# endpoints for ping (whose "port" is the echo identifier).  Sans-I/O like
# the rest: datagrams that arrive wait in their endpoint's queue (bounded;
# a full queue drops, as a socket's receive buffer does) until the I/O edge
# takes them; sends build a packet into the Netif's sink.
#
# Who calls: the stack (input) and the I/O edge (bind, send, take, close),
# under the stack's lock, nogil.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from wgc.netstack._ip cimport Addr, Parsed
from wgc.netstack._netif cimport Netif

cdef enum:
    DGRAM_UDP = 0
    DGRAM_ECHO = 1
    DGRAM_QUEUE_BYTES = 256 << 10  # a receive queue (Linux's default rmem is about as much)
    DGRAM_RECORD = 20              # a record's head: v6 (1), 0 (1), port (2, big-endian), address (16)

cdef struct Binding:
    int kind
    bint v6
    Addr local                     # all zero: any of the interface's addresses
    uint16_t port
    bint connected                 # only datagrams from remote:rport are taken
    Addr remote
    uint16_t rport
    uint8_t *queue                 # oldest first: a record's length (4 bytes, host order), the record
                                   # (its head, then the payload)
    uint32_t queue_used
    int error                      # an ICMP error for a connected endpoint, told once
    bint on_ready
    Binding *ready_next
    Binding *next
    void *user

cdef struct DgramTable:
    Netif *netif
    Binding *bindings
    Binding *ready_head
    Binding *ready_tail
    uint32_t ephemeral_next
    uint64_t dropped               # datagrams a full queue refused

cdef void dgram_init(DgramTable *t, Netif *netif) noexcept nogil
cdef void dgram_free(DgramTable *t) noexcept nogil
# A new endpoint on port (0: an ephemeral one); NULL with *error (EADDRINUSE, ENOMEM).
cdef Binding *dgram_bind(DgramTable *t, int kind, bint v6, const Addr *local, uint16_t port,
                         int *error) noexcept nogil
cdef void dgram_close(DgramTable *t, Binding *b) noexcept nogil
# One datagram out; 0, or an errno (EMSGSIZE past the MTU, ENOBUFS with the sink full,
# EADDRNOTAVAIL without a source address of the family).
cdef int dgram_send(DgramTable *t, Binding *b, const Addr *dst, uint16_t dport, const uint8_t *data,
                    uint32_t length) noexcept nogil
# A UDP packet to a local address: 1 when an endpoint took it (or dropped it
# for a full queue), 0 when no endpoint has its port (the stack answers with
# ICMP port unreachable).
cdef int dgram_input_udp(DgramTable *t, const uint8_t *packet, const Parsed *p) noexcept nogil
cdef void dgram_input_echo_reply(DgramTable *t, const uint8_t *packet, const Parsed *p) noexcept nogil
# An ICMP error about a datagram we sent from port to dst:dport: a connected
# endpoint learns error (ECONNREFUSED, EHOSTUNREACH...).
cdef void dgram_icmp_error(DgramTable *t, bint v6, const Addr *dst, uint16_t sport, uint16_t dport,
                           int error) noexcept nogil
# The next endpoint with datagrams or an error (NULL: none).
cdef Binding *dgram_ready(DgramTable *t) noexcept nogil
