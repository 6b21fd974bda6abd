# The TUN device: creating or adopting it, and its MTU and index.  The data
# plane reads and writes Tun.fd directly; with vnet_hdr, every packet on it
# carries a virtio_net_hdr (see wgc._offload).
cdef class Tun:
    cdef readonly int fd
    cdef readonly str name
    cdef readonly int ifindex
    cdef readonly bint vnet_hdr
