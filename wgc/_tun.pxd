# The TUN device: creating or adopting it, and its MTU and index.  The data
# plane reads and writes Tun.fd directly.
cdef class Tun:
    cdef readonly int fd
    cdef readonly str name
    cdef readonly int ifindex
