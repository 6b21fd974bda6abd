# cython: language_level=3
"""The TUN device (IFF_TUN | IFF_NO_PI: one IP packet per read or write).

With offloads, it is opened with IFF_VNET_HDR and TUNSETOFFLOAD lets the
kernel pass TCP (and, where it can, UDP) super-packets of up to 64 KiB with
checksums left to us; the data plane cuts and joins them (wgc._offload).
"""
from libc.errno cimport errno, EACCES, ENOENT, EPERM
from libc.string cimport memset, strncpy, strlen
from posix.fcntl cimport open as c_open, O_RDWR, O_CLOEXEC, O_NONBLOCK
from posix.unistd cimport close

import os

cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long request, ...)

cdef extern from "<sys/socket.h>" nogil:
    int socket(int domain, int type, int protocol)
    int AF_INET
    int SOCK_DGRAM
    int SOCK_CLOEXEC

cdef extern from "<net/if.h>" nogil:
    enum: IFNAMSIZ
    struct ifreq:
        char ifr_name[16]
        short ifr_flags
        int ifr_mtu
        int ifr_ifindex

cdef extern from "<linux/if_tun.h>" nogil:
    unsigned long TUNSETIFF
    unsigned long TUNGETIFF
    unsigned long TUNSETOFFLOAD
    unsigned long TUNGETDEVNETNS
    int IFF_TUN
    int IFF_NO_PI
    int IFF_VNET_HDR
    unsigned int TUN_F_CSUM
    unsigned int TUN_F_TSO4
    unsigned int TUN_F_TSO6

cdef extern from *:
    """
    /* UDP segmentation offload on TUN arrived in Linux 6.2; older headers lack it. */
    #include <linux/if_tun.h>
    #ifndef TUN_F_USO4
    #define TUN_F_USO4 0x20
    #define TUN_F_USO6 0x40
    #endif
    """
    unsigned int TUN_F_USO4
    unsigned int TUN_F_USO6

cdef extern from "<linux/sockios.h>" nogil:
    unsigned long SIOCGIFMTU
    unsigned long SIOCSIFMTU
    unsigned long SIOCGIFINDEX


class TunError(OSError):
    """The TUN device could not be made; str() is the one line to show."""


cdef int _ifreq_ioctl(unsigned long request, ifreq *req) except -1:
    """An interface ioctl on a throwaway socket (MTU, index)."""
    cdef int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)
    cdef int r
    if s < 0:
        raise OSError(errno, os.strerror(errno))
    r = ioctl(s, request, req)
    close(s)
    if r < 0:
        raise OSError(errno, os.strerror(errno))
    return 0


cdef int _get_iff(int fd, ifreq *req) except -1:
    """TUNGETIFF: the name and flags of the interface behind a TUN descriptor."""
    memset(req, 0, sizeof(ifreq))
    if ioctl(fd, TUNGETIFF, req) < 0:
        raise OSError(errno, os.strerror(errno))
    return 0


cdef class Tun:
    """An open TUN device.  Closing it removes the interface."""

    def __cinit__(self):
        self.fd = -1

    @staticmethod
    def create(str name, int mtu, bint offload=True):
        """Creates the interface `name` (non-blocking) with the given MTU.

        With offload, packets carry a virtio_net_hdr and the kernel may hand
        over TCP/UDP super-packets with partial checksums.
        """
        cdef ifreq req
        cdef Tun tun = Tun.__new__(Tun)
        encoded = name.encode()
        if len(encoded) >= IFNAMSIZ:
            raise TunError(36, "interface name too long: file name too long")
        if not encoded or b"/" in encoded or encoded in (b".", b".."):
            raise TunError(22, f"invalid interface name {name!r}")
        tun.fd = c_open(b"/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK)
        if tun.fd < 0:
            e = errno
            raise TunError(e, f"open /dev/net/tun: {os.strerror(e).lower()}"
                              + (" (wgc needs the TUN device /dev/net/tun)" if e == ENOENT else "")
                              + (" (wgc needs CAP_NET_ADMIN)" if e in (EPERM, EACCES) else ""))
        memset(&req, 0, sizeof(req))
        strncpy(req.ifr_name, encoded, IFNAMSIZ - 1)
        req.ifr_flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
        if ioctl(tun.fd, TUNSETIFF, &req) < 0:
            e = errno
            tun.close()
            raise TunError(e, os.strerror(e).lower() + (" (wgc needs CAP_NET_ADMIN)" if e == EPERM else ""))
        if offload:
            # Kernels before 6.2 refuse the UDP flags; TCP alone still pays.
            # If even that is refused the header stays, with nothing offloaded.
            if ioctl(tun.fd, TUNSETOFFLOAD, <unsigned long>(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
                                                            | TUN_F_USO4 | TUN_F_USO6)) < 0:
                ioctl(tun.fd, TUNSETOFFLOAD, <unsigned long>(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6))
        tun._identify()
        tun.set_mtu(mtu)
        return tun

    @staticmethod
    def adopt(int fd):
        """Takes over an open TUN descriptor (inherited from a parent process)."""
        cdef Tun tun = Tun.__new__(Tun)
        tun.fd = fd
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)
        tun._identify()
        return tun

    def _identify(self):
        cdef ifreq req
        try:
            _get_iff(self.fd, &req)
        except OSError as e:
            raise TunError(e.errno, f"not a TUN device: {e.strerror.lower()}") from None
        self.name = req.ifr_name[:strlen(req.ifr_name)].decode()
        self.vnet_hdr = (req.ifr_flags & IFF_VNET_HDR) != 0
        _ifreq_ioctl(SIOCGIFINDEX, &req)
        self.ifindex = req.ifr_ifindex

    def current_name(self):
        """The interface's name now, wherever it lives (it may have been
        renamed or moved); OSError EBADFD once the interface is deleted."""
        cdef ifreq req
        _get_iff(self.fd, &req)
        return req.ifr_name[:strlen(req.ifr_name)].decode()

    def netns(self):
        """A new descriptor of the network namespace the interface is in now
        (Linux 5.2+); the caller closes it.  OSError EBADFD once deleted."""
        cdef int fd = ioctl(self.fd, TUNGETDEVNETNS)
        if fd < 0:
            raise OSError(errno, os.strerror(errno))
        return fd

    @property
    def mtu(self):
        """The MTU, looked up by name in the caller's namespace (at start-up)."""
        cdef ifreq req
        memset(&req, 0, sizeof(req))
        strncpy(req.ifr_name, self.name.encode(), IFNAMSIZ - 1)
        _ifreq_ioctl(SIOCGIFMTU, &req)
        return req.ifr_mtu

    def set_mtu(self, int mtu):
        cdef ifreq req
        memset(&req, 0, sizeof(req))
        strncpy(req.ifr_name, self.name.encode(), IFNAMSIZ - 1)
        req.ifr_mtu = mtu
        _ifreq_ioctl(SIOCSIFMTU, &req)

    def close(self):
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1

    def __dealloc__(self):
        if self.fd >= 0:
            close(self.fd)
