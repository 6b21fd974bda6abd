# UAPI text read in C on both sides: by the daemon's `set` (wgc/_uapi_set.pyx)
# and by the client's AllowedIPs (wgc/_allowed_text.pyx).
from libc.stdint cimport uint8_t

# The key of an allowed-IP line, "=" included.
cdef extern from *:
    """
    #define WGC_UAPI_ALLOWED_IP "allowed_ip="
    """
    const char *ALLOWED_IP "WGC_UAPI_ALLOWED_IP"
cdef enum:
    ALLOWED_IP_LEN = 11


cdef inline int parse_ipv4(const uint8_t *s, Py_ssize_t n, uint8_t *out) noexcept nogil:
    """Four decimal octets, each at most 255 and without a leading zero (the
    rule of Go's netip and of glibc's inet_pton alike): 0, or -1 for anything else."""
    cdef Py_ssize_t i = 0, start
    cdef int octet, value
    for octet in range(4):
        if octet:
            if i >= n or s[i] != c'.':
                return -1
            i += 1
        start, value = i, 0
        while i < n and s[i] >= c'0' and s[i] <= c'9' and i - start < 3:
            value = value * 10 + (s[i] - c'0')
            i += 1
        if i == start or value > 255 or (i - start > 1 and s[start] == c'0'):
            return -1
        out[octet] = <uint8_t>value
    return 0 if i == n else -1
