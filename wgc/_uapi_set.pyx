# cython: language_level=3
"""The per-line work of a UAPI `set`, compiled (see wgc/uapi.py for the protocol).

wg(8) sends a whole configuration as one request, and a big one is almost
all `allowed_ip=` lines: a million of them for a full-table feed.  Python
took microseconds per line to split, parse and insert them; here the lines
are walked in C, the common spellings of a prefix (dotted IPv4, hex IPv6
without a zone or a dotted tail, a plain decimal length) are parsed in C,
and the parsed prefixes reach the peer in batches of RECORDS_PER_BATCH, so
the data plane's lock is taken once per batch rather than once per line.

Everything else, and every prefix spelled in a rarer way, goes to the
Python handler (uapi._SetRequest.line), which owns the protocol's rules and
its errors: the fast parser accepts only text that the Python parser
(uapi.parse_prefix, Go's netip rules) reads the same way, and hands
anything else over, so an error is always the Python parser's.  Called by
uapi.handle_set on the control server's thread, under the device's lock.
"""
from libc.stdint cimport uint8_t
from libc.string cimport memchr, memcmp, memmove, memset

from wgc._uapi_text cimport ALLOWED_IP, ALLOWED_IP_LEN, parse_ipv4
from wgc._trie cimport RECORD_SIZE

cdef enum:
    RECORDS_PER_BATCH = 1024    # the data plane's lock is taken once for these
    BATCH_BYTES = RECORD_SIZE * RECORDS_PER_BATCH

# What scan_lines found after the complete lines it passed over.
LINES_BLANK = 0     # a blank line: the request ends
LINES_MORE = 1      # the end of what is buffered: more input is needed
LINES_LONG = 2      # a line of max_line bytes or more without its "\n"


def scan_lines(const uint8_t[::1] buffer, Py_ssize_t start, Py_ssize_t max_line):
    """(stop, resume, what): buffer[start:stop] holds the complete lines of
    a request up to a blank line (empty, or a lone "\r") or to the first
    line not yet complete; reading goes on at resume (after the blank line,
    or at the incomplete one); what is one of LINES_*."""
    cdef Py_ssize_t n = buffer.shape[0], pos = start, limit
    cdef const uint8_t *base
    cdef const uint8_t *newline
    if pos >= n:
        return pos, pos, LINES_MORE
    base = &buffer[0]
    while pos < n:
        limit = n if n - pos < max_line else pos + max_line
        newline = <const uint8_t *>memchr(base + pos, c'\n', limit - pos)
        if newline == NULL:
            return pos, pos, (LINES_LONG if n - pos >= max_line else LINES_MORE)
        if newline - base == pos or (newline - base == pos + 1 and base[pos] == c'\r'):
            return pos, newline - base + 1, LINES_BLANK
        pos = newline - base + 1
    return pos, pos, LINES_MORE


# What _SetRequest.collects() answers about `allowed_ip=` lines.
TO_HANDLER = 0      # not in a peer section: the handler refuses them
VALIDATE = 1        # a peer section that changes nothing: parse, keep nothing
COLLECT = 2         # parse and add to the peer



cdef inline int hex_value(uint8_t c) noexcept nogil:
    if c >= c'0' and c <= c'9':
        return c - c'0'
    if c >= c'a' and c <= c'f':
        return c - c'a' + 10
    if c >= c'A' and c <= c'F':
        return c - c'A' + 10
    return -1


cdef int parse_ipv6(const uint8_t *s, Py_ssize_t n, uint8_t *out) noexcept nogil:
    """Hex groups of one to four digits with at most one "::", as Go reads
    them: 0, or -1 for anything else (a zone, a dotted tail, longer groups
    are all left to the Python parser)."""
    cdef Py_ssize_t i = 0, start
    cdef int filled = 0, ellipsis = -1, group, digit, tail
    if n >= 2 and s[0] == c':' and s[1] == c':':
        ellipsis, i = 0, 2
    while i < n:
        if filled == 16:
            return -1
        start, group = i, 0
        while i < n and i - start < 4:
            digit = hex_value(s[i])
            if digit < 0:
                break
            group = (group << 4) | digit
            i += 1
        if i == start:
            return -1
        out[filled] = <uint8_t>(group >> 8)
        out[filled + 1] = <uint8_t>group
        filled += 2
        if i == n:
            break
        if s[i] != c':' or i + 1 == n:
            return -1
        i += 1
        if s[i] == c':':
            if ellipsis >= 0:
                return -1
            ellipsis = filled
            i += 1
    if filled < 16:
        if ellipsis < 0:
            return -1
        tail = filled - ellipsis
        memmove(out + 16 - tail, out + ellipsis, tail)
        memset(out + ellipsis, 0, 16 - filled)
    elif ellipsis >= 0:
        return -1
    return 0


cdef int parse_prefix(const uint8_t *s, Py_ssize_t n, uint8_t *record) noexcept nogil:
    """ADDRESS/LENGTH into a record: 0, or -1 when the text is not in one of
    the common spellings (the Python parser then decides)."""
    cdef Py_ssize_t slash = n - 1, i
    cdef int length = 0, bits
    while slash >= 0 and s[slash] != c'/':
        slash -= 1
    if slash < 0 or n - slash - 1 < 1 or n - slash - 1 > 3:
        return -1
    for i in range(slash + 1, n):
        if s[i] < c'0' or s[i] > c'9':
            return -1
        length = length * 10 + (s[i] - c'0')
    memset(record, 0, RECORD_SIZE)
    if memchr(s, c'.', slash) != NULL:
        if memchr(s, c':', slash) != NULL or parse_ipv4(s, slash, record + 2) < 0:
            return -1
        bits = 32
    elif parse_ipv6(s, slash, record + 2) == 0:
        bits = 128
    else:
        return -1
    if length > bits:
        return -1
    record[0] = <uint8_t>(bits // 8)
    record[1] = <uint8_t>length
    return 0


def parse_prefix_record(bytes text):
    """The record parse_prefix makes of text, or None; for tests, which hold
    it against uapi.parse_prefix."""
    cdef uint8_t record[RECORD_SIZE]
    if parse_prefix(text, len(text), record) < 0:
        return None
    return record[:RECORD_SIZE]


def apply_lines(const uint8_t[::1] text, request):
    """Applies the lines of text (each ending in "\\n", the last one may
    not; one "\\r" before a "\\n" is dropped) to request, a
    uapi._SetRequest: `allowed_ip=` lines with a prefix parse_prefix reads
    go to request.add_allowed_ips(records) in batches, every other line to
    request.line(line).  Stops at a blank line.  Whatever request raises
    goes up, after the prefixes parsed before the failing line are added."""
    cdef Py_ssize_t n = text.shape[0], start = 0, end, stop
    cdef const uint8_t *base = &text[0] if n else NULL
    cdef const uint8_t *newline
    cdef uint8_t batch[BATCH_BYTES]
    cdef int count = 0, mode = request.collects()
    while start < n:
        newline = <const uint8_t *>memchr(base + start, c'\n', n - start)
        stop = n if newline == NULL else newline - base
        end = stop - 1 if stop > start and base[stop - 1] == c'\r' else stop
        if end == start:
            break
        if (mode != TO_HANDLER and end - start > ALLOWED_IP_LEN
                and memcmp(base + start, ALLOWED_IP, ALLOWED_IP_LEN) == 0
                and parse_prefix(base + start + ALLOWED_IP_LEN, end - start - ALLOWED_IP_LEN,
                                 batch + count * RECORD_SIZE) == 0):
            if mode == COLLECT:
                count += 1
                if count == RECORDS_PER_BATCH:
                    request.add_allowed_ips(batch[:BATCH_BYTES])
                    count = 0
        else:
            if count:
                request.add_allowed_ips(batch[:count * RECORD_SIZE])
                count = 0
            request.line(bytes(text[start:end]))
            mode = request.collects()
        start = stop + 1
    if count:
        request.add_allowed_ips(batch[:count * RECORD_SIZE])
