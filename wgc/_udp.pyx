# cython: language_level=3
"""UDP I/O for the data plane (see _udp.pxd for who calls what, and when).

plan() is the Python face of the GSO grouping, for table tests.
"""
from libc.errno cimport errno, EINTR, EIO, EINVAL, EMSGSIZE, EADDRNOTAVAIL, ENODEV, ENETUNREACH
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memset, memcmp

from wgc._offload cimport UDP_MAX_SEGMENTS

import socket

cdef extern from *:
    """
    #include <string.h>
    #include <sys/socket.h>
    #include <sys/uio.h>
    #include <netinet/in.h>
    #include <netinet/udp.h>
    #ifndef UDP_SEGMENT
    #define UDP_SEGMENT 103
    #endif
    #ifndef UDP_GRO
    #define UDP_GRO 104
    #endif
    union wgc_sockaddr {
        struct sockaddr sa;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    };

    /* The UDP_SEGMENT size a message to send carries, 0 = none. */
    static inline uint16_t wgc_segment_size(const struct msghdr *m) {
        struct cmsghdr *c;
        uint16_t size;
        for (c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR((struct msghdr *)m, c)) {
            if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_SEGMENT) {
                memcpy(&size, CMSG_DATA(c), sizeof(size));
                return size;
            }
        }
        return 0;
    }

    /* The control messages of a datagram to send: its UDP_SEGMENT size (0 =
       none) and its source address (family 0 = none; IPv4 with the interface
       it is bound to, as the kernel's WireGuard does).  `buffer` holds
       WGC_CONTROL_WORDS 64-bit words. */
    #define WGC_CONTROL_WORDS 8
    static inline void wgc_set_control(struct msghdr *m, uint64_t *buffer, uint16_t size,
                                       int src_family, const uint8_t *src, uint32_t ifindex) {
        struct cmsghdr *c;
        size_t used = 0;
        memset(buffer, 0, WGC_CONTROL_WORDS * sizeof(uint64_t));
        m->msg_control = buffer;
        m->msg_controllen = WGC_CONTROL_WORDS * sizeof(uint64_t);
        c = CMSG_FIRSTHDR(m);
        if (size) {
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            memcpy(CMSG_DATA(c), &size, sizeof(size));
            used += CMSG_SPACE(sizeof(uint16_t));
            c = CMSG_NXTHDR(m, c);
        }
        if (src_family == AF_INET) {
            struct in_pktinfo info;
            memset(&info, 0, sizeof(info));
            info.ipi_ifindex = ifindex;
            memcpy(&info.ipi_spec_dst, src, 4);
            c->cmsg_level = IPPROTO_IP;
            c->cmsg_type = IP_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof(info));
            memcpy(CMSG_DATA(c), &info, sizeof(info));
            used += CMSG_SPACE(sizeof(info));
        } else if (src_family == AF_INET6) {
            struct in6_pktinfo info;
            memset(&info, 0, sizeof(info));
            memcpy(&info.ipi6_addr, src, 16);
            c->cmsg_level = IPPROTO_IPV6;
            c->cmsg_type = IPV6_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof(info));
            memcpy(CMSG_DATA(c), &info, sizeof(info));
            used += CMSG_SPACE(sizeof(info));
        }
        m->msg_controllen = used;
        if (!used)
            m->msg_control = NULL;
    }

    /* The local address a received datagram was sent to, from IP_PKTINFO or
       IPV6_PKTINFO: its family (0 = not given), the address and interface. */
    static inline int wgc_local_address(const struct msghdr *m, uint8_t *addr, uint32_t *ifindex) {
        struct cmsghdr *c;
        for (c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR((struct msghdr *)m, c)) {
            if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
                struct in_pktinfo info;
                memcpy(&info, CMSG_DATA(c), sizeof(info));
                memcpy(addr, &info.ipi_addr, 4);
                *ifindex = info.ipi_ifindex;
                return AF_INET;
            }
            if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
                struct in6_pktinfo info;
                memcpy(&info, CMSG_DATA(c), sizeof(info));
                memcpy(addr, &info.ipi6_addr, 16);
                *ifindex = info.ipi6_ifindex;
                return AF_INET6;
            }
        }
        return 0;
    }

    /* UDP GRO: the size of the datagrams a received message joins, 0 = one datagram. */
    static inline int wgc_gro_segment_size(const struct msghdr *m) {
        struct cmsghdr *c;
        int size;
        for (c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR((struct msghdr *)m, c)) {
            if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
                memcpy(&size, CMSG_DATA(c), sizeof(size));
                return size;
            }
        }
        return 0;
    }
    """
    ctypedef unsigned int socklen_t
    struct in_addr:
        uint32_t s_addr
    struct in6_addr:
        uint8_t s6_addr[16]
    struct sockaddr:
        uint16_t sa_family
    struct sockaddr_in:
        uint16_t sin_family
        uint16_t sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        uint16_t sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    union wgc_sockaddr:
        sockaddr sa
        sockaddr_in v4
        sockaddr_in6 v6
    struct iovec:
        void *iov_base
        size_t iov_len
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int recvmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags, void *timeout) nogil
    int sendmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags) nogil
    uint16_t htons(uint16_t) nogil
    uint16_t ntohs(uint16_t) nogil
    int AF_INET
    int AF_INET6
    int MSG_DONTWAIT
    int SOL_UDP
    int UDP_GRO
    enum: WGC_CONTROL_WORDS
    void wgc_set_control(msghdr *m, uint64_t *buffer, uint16_t size, int src_family, const uint8_t *src,
                         uint32_t ifindex) nogil
    int wgc_local_address(const msghdr *m, uint8_t *addr, uint32_t *ifindex) nogil
    ssize_t sendmsg(int fd, const msghdr *m, int flags) nogil
    int IPPROTO_IP
    int IPPROTO_IPV6
    int IP_PKTINFO
    int IPV6_RECVPKTINFO
    int wgc_gro_segment_size(const msghdr *m) nogil
    uint16_t wgc_segment_size(const msghdr *m) nogil
    int setsockopt(int fd, int level, int name, const void *value, socklen_t length) nogil


# ---- endpoints ------------------------------------------------------------

cdef inline uint32_t address_size(uint16_t family) noexcept nogil:
    return 4 if family == AF_INET else 16

cdef bint endpoint_equal(const Endpoint *a, const Endpoint *b) noexcept nogil:
    """Same peer address and port, reached from the same local address."""
    if a.family != b.family or a.port != b.port or a.src_family != b.src_family:
        return False
    if a.src_family != 0 and (a.src_ifindex != b.src_ifindex
                              or memcmp(a.src, b.src, address_size(a.src_family)) != 0):
        return False
    if a.family == AF_INET:
        return memcmp(a.addr, b.addr, 4) == 0
    return a.scope_id == b.scope_id and memcmp(a.addr, b.addr, 16) == 0

cdef socklen_t endpoint_to_sockaddr(const Endpoint *e, wgc_sockaddr *sa) noexcept nogil:
    memset(sa, 0, sizeof(wgc_sockaddr))
    if e.family == AF_INET:
        sa.v4.sin_family = AF_INET
        sa.v4.sin_port = htons(e.port)
        memcpy(&sa.v4.sin_addr, e.addr, 4)
        return sizeof(sockaddr_in)
    sa.v6.sin6_family = AF_INET6
    sa.v6.sin6_port = htons(e.port)
    memcpy(sa.v6.sin6_addr.s6_addr, e.addr, 16)
    sa.v6.sin6_scope_id = e.scope_id
    return sizeof(sockaddr_in6)

cdef void endpoint_from_sockaddr(Endpoint *e, const wgc_sockaddr *sa) noexcept nogil:
    memset(e, 0, sizeof(Endpoint))
    if sa.sa.sa_family == AF_INET:
        e.family = AF_INET
        e.port = ntohs(sa.v4.sin_port)
        memcpy(e.addr, &sa.v4.sin_addr, 4)
    elif sa.sa.sa_family == AF_INET6:
        e.family = AF_INET6
        e.port = ntohs(sa.v6.sin6_port)
        memcpy(e.addr, sa.v6.sin6_addr.s6_addr, 16)
        e.scope_id = sa.v6.sin6_scope_id

class Address(tuple):
    """An endpoint as Python sees it, (host, port) or (host, port, flowinfo,
    scope_id), that remembers in `local` the (address, interface) it reached
    us at, so that a handshake answered through Python leaves from there."""
    local = None


cdef int endpoint_from_python(Endpoint *e, object address) except -1:
    """(host, port[, flowinfo, scope_id]) with a numeric host -> Endpoint,
    with the source address an Address carries."""
    memset(e, 0, sizeof(Endpoint))
    local = getattr(address, "local", None)
    if local is not None:
        source, e.src_ifindex = local
        packed = socket.inet_pton(socket.AF_INET6 if ":" in source else socket.AF_INET, source)
        e.src_family = AF_INET6 if len(packed) == 16 else AF_INET
        memcpy(e.src, <const char *>packed, len(packed))
    host, port = address[0], address[1]
    if not 0 <= port <= 65535:
        raise ValueError("port out of range")
    try:
        packed = socket.inet_pton(socket.AF_INET, host)
        e.family = AF_INET
    except OSError:
        packed = socket.inet_pton(socket.AF_INET6, host)  # raises for non-numeric hosts
        e.family = AF_INET6
        if len(address) > 3:
            e.scope_id = address[3]
    memcpy(e.addr, <const char *>packed, len(packed))
    e.port = port
    return 0

cdef object endpoint_to_python(const Endpoint *e):
    if e.family == AF_INET:
        address = Address((socket.inet_ntop(socket.AF_INET, e.addr[:4]), e.port))
    elif e.family == AF_INET6:
        address = Address((socket.inet_ntop(socket.AF_INET6, e.addr[:16]), e.port, 0, e.scope_id))
    else:
        return None
    if e.src_family == AF_INET:
        address.local = (socket.inet_ntop(socket.AF_INET, e.src[:4]), e.src_ifindex)
    elif e.src_family == AF_INET6:
        address.local = (socket.inet_ntop(socket.AF_INET6, e.src[:16]), e.src_ifindex)
    return address


# ---- sockets ----------------------------------------------------------------

cdef void udp_set_sockets(UdpSockets *u, int fd4, int fd6) noexcept nogil:
    cdef int one = 1, i
    u.fd[0] = fd4
    u.fd[1] = fd6
    for i in range(2):
        u.gso[i] = u.offload
        if u.fd[i] >= 0 and u.offload:
            # Ask for coalesced datagrams (kernels before 5.0 say no: fine).
            setsockopt(u.fd[i], SOL_UDP, UDP_GRO, &one, sizeof(one))
    # The local address of every datagram, to answer from it.
    if fd4 >= 0:
        setsockopt(fd4, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one))
    if fd6 >= 0:
        setsockopt(fd6, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one))

cdef inline int family_index(uint16_t family) noexcept nogil:
    return 1 if family == AF_INET6 else 0


# ---- sending ----------------------------------------------------------------

cdef void udp_plan(SendPlan *plan, const Datagram *d, uint32_t count, uint16_t family,
                   bint gso) noexcept nogil:
    cdef uint32_t i, n = 0, m = 0
    cdef const Datagram *lead
    for i in range(count):
        if d[i].destination.family != family:
            continue
        plan.order[n] = i
        if m > 0 and gso:
            lead = &d[plan.order[plan.first[m - 1]]]
            if (n - plan.first[m - 1] < UDP_MAX_SEGMENTS and d[i].length <= lead.length
                    and d[plan.order[n - 1]].length == lead.length
                    and plan.bytes[m - 1] + d[i].length <= UDP_GSO_MAX_BYTES
                    and endpoint_equal(&d[i].destination, &lead.destination)):
                plan.bytes[m - 1] += d[i].length
                n += 1
                continue
        plan.first[m] = n
        plan.bytes[m] = d[i].length
        m += 1
        n += 1
    plan.first[m] = n
    plan.messages = m

cdef inline bint source_gone(const Endpoint *e, int error) noexcept nogil:
    """Whether a send failed because its sticky source is no longer ours."""
    return e.src_family != 0 and (error == EINVAL or error == EADDRNOTAVAIL
                                  or error == ENODEV or error == ENETUNREACH)

cdef void udp_send_batch(UdpSockets *u, const Datagram *d, uint32_t count,
                         int *sent) noexcept nogil:
    cdef SendPlan plan
    cdef mmsghdr msgs[BATCH]
    cdef iovec iovs[BATCH]
    cdef wgc_sockaddr addrs[BATCH]
    cdef uint64_t controls[BATCH][WGC_CONTROL_WORDS]
    cdef uint32_t i, j, start
    cdef int fd, done, f
    cdef uint16_t families[2]
    cdef const Datagram *o
    families[0] = AF_INET
    families[1] = AF_INET6
    memset(sent, 0, count * sizeof(int))
    for f in range(2):
        fd = u.fd[f]
        udp_plan(&plan, d, count, families[f], u.gso[f])
        if plan.messages == 0 or (fd < 0 and u.memory == NULL):
            continue
        for i in range(plan.first[plan.messages]):
            iovs[i].iov_base = d[plan.order[i]].data
            iovs[i].iov_len = d[plan.order[i]].length
        for j in range(plan.messages):
            o = &d[plan.order[plan.first[j]]]
            memset(&msgs[j], 0, sizeof(mmsghdr))
            msgs[j].msg_hdr.msg_name = &addrs[j]
            msgs[j].msg_hdr.msg_namelen = endpoint_to_sockaddr(&o.destination, &addrs[j])
            msgs[j].msg_hdr.msg_iov = &iovs[plan.first[j]]
            msgs[j].msg_hdr.msg_iovlen = plan.first[j + 1] - plan.first[j]
            wgc_set_control(&msgs[j].msg_hdr, controls[j],
                            <uint16_t>o.length if msgs[j].msg_hdr.msg_iovlen > 1 else 0,
                            o.destination.src_family, o.destination.src, o.destination.src_ifindex)
        start = 0
        while start < plan.messages:
            if u.memory != NULL:
                done = memory_sendmmsg(u.memory, &msgs[start], plan.messages - start)
            else:
                done = sendmmsg(fd, &msgs[start], plan.messages - start, MSG_DONTWAIT)
            if done < 0 and errno == EINTR:
                continue
            if done <= 0:
                # A message whose source address is gone, and a GSO run the
                # kernel will not cut, go again one datagram at a time (the
                # first without its source); where GSO never could (EIO: no
                # checksum offload on older kernels; EMSGSIZE: segments wider
                # than the path, which single datagrams get past by
                # fragmenting) it stays off.
                o = &d[plan.order[plan.first[start]]]
                if source_gone(&o.destination, errno) or (msgs[start].msg_hdr.msg_iovlen > 1 and (
                        errno == EIO or errno == EMSGSIZE or errno == EINVAL)):
                    if msgs[start].msg_hdr.msg_iovlen > 1 and (errno == EIO or errno == EMSGSIZE):
                        u.gso[f] = False
                    for i in range(plan.first[start], plan.first[start + 1]):
                        o = &d[plan.order[i]]
                        sent[plan.order[i]] = udp_send_one(u, o.data, o.length, &o.destination)
                start += 1
            else:
                start += done
        # What the kernel took: sendmmsg sets msg_len per message sent.
        for j in range(plan.messages):
            if msgs[j].msg_len == plan.bytes[j]:
                for i in range(plan.first[j], plan.first[j + 1]):
                    sent[plan.order[i]] = SENT

cdef int udp_send_one(const UdpSockets *u, const uint8_t *data, uint32_t length,
                      const Endpoint *dst) noexcept nogil:
    cdef wgc_sockaddr sa
    cdef iovec iov
    cdef mmsghdr msg
    cdef uint64_t control[WGC_CONTROL_WORDS]
    cdef int fd
    if dst.family == 0:
        return NOT_SENT
    iov.iov_base = <void *>data
    iov.iov_len = length
    memset(&msg, 0, sizeof(msg))
    msg.msg_hdr.msg_name = &sa
    msg.msg_hdr.msg_namelen = endpoint_to_sockaddr(dst, &sa)
    msg.msg_hdr.msg_iov = &iov
    msg.msg_hdr.msg_iovlen = 1
    if u.memory != NULL:
        return SENT if memory_sendmmsg(u.memory, &msg, 1) == 1 else NOT_SENT
    fd = u.fd[family_index(dst.family)]
    if fd < 0:
        return NOT_SENT
    wgc_set_control(&msg.msg_hdr, control, 0, dst.src_family, dst.src, dst.src_ifindex)
    if sendmsg(fd, &msg.msg_hdr, MSG_DONTWAIT) == <ssize_t>length:
        return SENT
    if not source_gone(dst, errno):
        return NOT_SENT
    # Sticky, but not too sticky: the address it came to is gone.
    wgc_set_control(&msg.msg_hdr, control, 0, 0, NULL, 0)
    if sendmsg(fd, &msg.msg_hdr, MSG_DONTWAIT) == <ssize_t>length:
        return SENT_FROM_ANOTHER_SOURCE
    return NOT_SENT


# ---- sans-I/O: the kernel's side of sendmmsg, in memory ---------------------

cdef int udp_memory_init(UdpSockets *u) noexcept nogil:
    u.memory = <UdpMemory *>calloc(1, sizeof(UdpMemory))
    if u.memory == NULL:
        return -1
    u.memory.datagrams = <Recorded *>calloc(UDP_MEMORY_MAX, sizeof(Recorded))
    if u.memory.datagrams == NULL:
        free(u.memory)
        u.memory = NULL
        return -1
    return 0

cdef void memory_forget(UdpMemory *m) noexcept nogil:
    cdef uint32_t i
    for i in range(m.count):
        free(m.datagrams[i].data)
    m.count = 0

cdef void udp_memory_free(UdpSockets *u) noexcept nogil:
    if u.memory != NULL:
        memory_forget(u.memory)
        free(u.memory.datagrams)
        free(u.memory)
        u.memory = NULL

cdef int memory_sendmmsg(UdpMemory *m, mmsghdr *msgs, uint32_t count) noexcept nogil:
    """Takes every message as the kernel would: its bytes gathered, then cut
    into datagrams of its UDP_SEGMENT size (the last may be shorter)."""
    cdef uint32_t j, k, total, size, offset, piece
    cdef uint8_t *message
    cdef Endpoint destination
    cdef Recorded *r
    for j in range(count):
        total = 0
        for k in range(msgs[j].msg_hdr.msg_iovlen):
            total += msgs[j].msg_hdr.msg_iov[k].iov_len
        message = <uint8_t *>malloc(total + 1)
        if message == NULL:
            return j
        offset = 0
        for k in range(msgs[j].msg_hdr.msg_iovlen):
            memcpy(message + offset, msgs[j].msg_hdr.msg_iov[k].iov_base, msgs[j].msg_hdr.msg_iov[k].iov_len)
            offset += msgs[j].msg_hdr.msg_iov[k].iov_len
        endpoint_from_sockaddr(&destination, <const wgc_sockaddr *>msgs[j].msg_hdr.msg_name)
        size = wgc_segment_size(&msgs[j].msg_hdr)
        if size == 0:
            size = total
        offset = 0
        while offset < total and m.count < UDP_MEMORY_MAX:
            piece = min(size, total - offset)
            r = &m.datagrams[m.count]
            r.data = <uint8_t *>malloc(piece + 1)
            if r.data == NULL:
                break
            memcpy(r.data, message + offset, piece)
            r.length = piece
            r.destination = destination
            r.message = m.messages
            m.count += 1
            offset += piece
        free(message)
        m.messages += 1
        msgs[j].msg_len = total
    return count

cdef list udp_memory_take(UdpSockets *u):
    cdef uint32_t i
    cdef Recorded *r
    result = []
    if u.memory == NULL:
        return result
    for i in range(u.memory.count):
        r = &u.memory.datagrams[i]
        result.append((r.data[:r.length], endpoint_to_python(&r.destination), r.message))
    memory_forget(u.memory)
    return result


# ---- receiving --------------------------------------------------------------

cdef int udp_recv_batch(int fd, uint8_t *slots, size_t slot_size, uint32_t count,
                        Endpoint *sources, uint32_t *lengths,
                        uint32_t *segment_sizes) noexcept nogil:
    cdef mmsghdr msgs[BATCH]
    cdef iovec iovs[BATCH]
    cdef wgc_sockaddr addrs[BATCH]
    cdef uint64_t controls[BATCH][WGC_CONTROL_WORDS]
    cdef uint32_t i
    cdef int n, size
    if count > BATCH:
        count = BATCH
    for i in range(count):
        iovs[i].iov_base = slots + <size_t>i * slot_size
        iovs[i].iov_len = slot_size
        memset(&msgs[i], 0, sizeof(mmsghdr))
        msgs[i].msg_hdr.msg_name = &addrs[i]
        msgs[i].msg_hdr.msg_namelen = sizeof(wgc_sockaddr)
        msgs[i].msg_hdr.msg_iov = &iovs[i]
        msgs[i].msg_hdr.msg_iovlen = 1
        msgs[i].msg_hdr.msg_control = &controls[i][0]
        msgs[i].msg_hdr.msg_controllen = sizeof(controls[i])
    n = recvmmsg(fd, msgs, count, MSG_DONTWAIT, NULL)
    for i in range(n if n > 0 else 0):
        endpoint_from_sockaddr(&sources[i], &addrs[i])
        sources[i].src_family = <uint16_t>wgc_local_address(&msgs[i].msg_hdr, sources[i].src,
                                                             &sources[i].src_ifindex)
        lengths[i] = msgs[i].msg_len
        size = wgc_gro_segment_size(&msgs[i].msg_hdr)
        segment_sizes[i] = <uint32_t>size if size > 0 else 0
    return n


# ---- Python face, for tests -------------------------------------------------------

def plan(datagrams, int family, bint gso=True):
    """The messages a batch becomes: datagrams is [(length, address)] with
    addresses as endpoint() gives them; returns, for the datagrams of family
    (socket.AF_INET or AF_INET6), a list of messages, each the list of the
    datagram indices it carries."""
    cdef Datagram d[BATCH]
    cdef SendPlan p
    cdef uint32_t i, k, count = len(datagrams)
    if count > BATCH:
        raise ValueError(f"at most {BATCH} datagrams in a batch")
    for i in range(count):
        length, address = datagrams[i]
        d[i].data = NULL
        d[i].length = length
        endpoint_from_python(&d[i].destination, address)
    udp_plan(&p, d, count, family, gso)
    return [[p.order[k] for k in range(p.first[i], p.first[i + 1])] for i in range(p.messages)]
