# Fixed-width integers in packets: WireGuard's own fields are little-endian,
# IP, TCP and UDP headers big-endian.  Byte by byte, so alignment never matters.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef inline uint32_t load_le32(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)

cdef inline void store_le32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v & 0xff
    p[1] = (v >> 8) & 0xff
    p[2] = (v >> 16) & 0xff
    p[3] = (v >> 24) & 0xff

cdef inline uint64_t load_le64(const uint8_t *p) noexcept nogil:
    return load_le32(p) | (<uint64_t>load_le32(p + 4) << 32)

cdef inline void store_le64(uint8_t *p, uint64_t v) noexcept nogil:
    store_le32(p, <uint32_t>v)
    store_le32(p + 4, <uint32_t>(v >> 32))

cdef inline uint16_t load_be16(const uint8_t *p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]

cdef inline void store_be16(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = (v >> 8) & 0xff
    p[1] = v & 0xff

cdef inline uint32_t load_be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline void store_be32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xff
    p[2] = (v >> 8) & 0xff
    p[3] = v & 0xff
