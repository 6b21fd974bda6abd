# cython: language_level=3
"""AllowedIPs (wgc.control.model) made from their text in C, for the clients.

A device can have a million allowed IPs, and the built-in wg and wgc.control
read each of them back (a `get` answer, a configuration file's AllowedIPs):
making a million Python objects through Python calls took longer than the
daemon takes to apply them.  Here the common spelling, an IPv4 prefix as
wg(8) prints it ("10.0.0.1/32": the address as inet_pton takes it, the
prefix length in printf's spelling), is checked in C and each AllowedIP is
made as object.__new__ makes it (the type's tp_alloc), its text stored in
the `_text` slot at the offset the slot's own descriptor names.  Anything
else is left to model.py's Python path, which owns the other spellings and
the errors.  Writing them out again (a `set` request, a configuration file)
joins the texts read from the slots the same way.

The objects are untracked by the cycle collector, as CPython untracks a
tuple of atoms: an AllowedIP holds its text and, once asked, an address, so
it can be part of no cycle, and a collection need not walk a million of them.
"""
from cpython.list cimport PyList_Append, PyList_New, PyList_SET_ITEM
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF
from libc.stdint cimport uint8_t
from libc.string cimport memchr, memcmp, memcpy

from wgc._uapi_text cimport ALLOWED_IP, ALLOWED_IP_LEN, parse_ipv4


cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset
    ctypedef struct PyDescrObject:
        PyTypeObject *d_type
    ctypedef struct PyMemberDescrObject:
        PyDescrObject d_common
        PyMemberDef *d_member
    PyTypeObject PyMemberDescr_Type
    bint PyUnicode_CheckExact(object text)
    PyTypeObject *Py_TYPE(object o)
    bint PyUnicode_IS_COMPACT_ASCII(object text)
    void *PyUnicode_DATA(object text)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    bint PyType_IS_GC(PyTypeObject *kind)
    void PyObject_GC_UnTrack(void *op)
    ctypedef object (*allocfunc)(PyTypeObject *kind, Py_ssize_t items)
    ctypedef struct AllocatingType "PyTypeObject":
        allocfunc tp_alloc

cdef extern from "structmember.h":
    enum: T_OBJECT_EX



cdef class AllowedIPMaker:
    """Makes AllowedIPs of one class, given the member descriptor of its
    `_text` slot (vars(AllowedIP)["_text"]), which names both."""

    cdef PyTypeObject *kind
    cdef Py_ssize_t offset
    cdef object slot    # keeps kind alive

    def __cinit__(self, slot):
        cdef PyMemberDescrObject *member
        if type(slot) is not <object>&PyMemberDescr_Type:
            raise TypeError(f"a slot's member descriptor is needed, not {slot!r}")
        member = <PyMemberDescrObject *>slot
        if member.d_member.type != T_OBJECT_EX or member.d_member.offset < <Py_ssize_t>sizeof(PyObject):
            raise TypeError(f"{slot!r} is not an object slot")
        if not PyType_IS_GC(member.d_common.d_type):
            raise TypeError(f"{slot!r} belongs to a class the cycle collector does not know")
        self.kind = member.d_common.d_type
        self.offset = member.d_member.offset
        self.slot = slot

    cdef object make(self, object text):
        """A new AllowedIP holding text (a str)."""
        cdef object made = (<AllocatingType *>self.kind).tp_alloc(self.kind, 0)
        PyObject_GC_UnTrack(<PyObject *>made)
        Py_INCREF(text)
        (<PyObject **>(<char *><PyObject *>made + self.offset))[0] = <PyObject *>text
        return made

    def ipv4_of_texts(self, list texts not None, int shortest):
        """AllowedIPs for texts that are all IPv4 prefixes as wg(8) prints
        them, the prefix length from shortest to 32; None when one is not."""
        cdef Py_ssize_t count = len(texts), i
        cdef list made = PyList_New(count)
        cdef object text, allowed
        for i in range(count):
            text = texts[i]
            if type(text) is not str or not PyUnicode_IS_COMPACT_ASCII(text) or \
                    ipv4_prefix(<const uint8_t *>PyUnicode_DATA(text), len(text), shortest) < 0:
                return None    # (the list's empty places are NULL, which freeing it skips)
            allowed = self.make(text)
            Py_INCREF(allowed)
            PyList_SET_ITEM(made, i, allowed)
        return made

    def take_ipv4_lines(self, bytes answer not None, Py_ssize_t start, list into not None):
        """Appends to into an AllowedIP for each `allowed_ip=` line of answer
        from start on (each ending in "\\n") whose value is an IPv4 prefix as
        wg(8) prints it; returns where the first other line starts."""
        cdef Py_ssize_t n = len(answer), pos = start, length
        cdef const uint8_t *base = <const uint8_t *><const char *>answer
        cdef const uint8_t *value
        cdef const uint8_t *newline
        cdef object text
        if not 0 <= start <= n:
            raise IndexError(f"start {start} outside an answer of {n} bytes")
        while n - pos > ALLOWED_IP_LEN and memcmp(base + pos, ALLOWED_IP, ALLOWED_IP_LEN) == 0:
            value = base + pos + ALLOWED_IP_LEN
            newline = <const uint8_t *>memchr(value, c'\n', n - pos - ALLOWED_IP_LEN)
            if newline == NULL:
                break
            length = newline - value
            if ipv4_prefix(value, length, 0) < 0:
                break
            text = PyUnicode_New(length, 127)
            memcpy(PyUnicode_DATA(text), value, length)
            PyList_Append(into, self.make(text))
            pos = newline + 1 - base
        return pos

    def join_texts(self, list ips not None, str separator not None):
        """The texts of ips joined by separator when each is of this class
        and every text is ASCII; None otherwise, for the caller to join."""
        cdef Py_ssize_t count = len(ips), i, total = 0, written = 0, gap = len(separator)
        cdef PyObject *text
        cdef object joined
        cdef char *out
        if not PyUnicode_IS_COMPACT_ASCII(separator):
            return None
        for i in range(count):
            text = self.text_of(ips[i])
            if text == NULL:
                return None
            total += len(<object>text) + (gap if i else 0)
        joined = PyUnicode_New(total, 127)
        out = <char *>PyUnicode_DATA(joined)
        for i in range(count):    # (no Python code ran since: the list is as it was)
            text = self.text_of(ips[i])
            if i:
                memcpy(out + written, PyUnicode_DATA(separator), gap)
                written += gap
            memcpy(out + written, PyUnicode_DATA(<object>text), len(<object>text))
            written += len(<object>text)
        return joined

    cdef PyObject *text_of(self, object allowed):
        """The ASCII text in allowed's slot (borrowed), or NULL when allowed
        is not of this class or its text is not an ASCII str."""
        cdef PyObject *text
        if Py_TYPE(allowed) is not self.kind:
            return NULL
        text = (<PyObject **>(<char *><PyObject *>allowed + self.offset))[0]
        if text == NULL or not PyUnicode_CheckExact(<object>text) or not PyUnicode_IS_COMPACT_ASCII(<object>text):
            return NULL
        return text


cdef int ipv4_prefix(const uint8_t *s, Py_ssize_t n, int shortest) noexcept nogil:
    """0 when s is ADDRESS/LENGTH, the address as inet_pton takes it and the
    length from shortest to 32 as printf prints it (no leading zero); else -1."""
    cdef uint8_t address[4]
    cdef Py_ssize_t slash = n - 1
    cdef int length
    while slash >= 0 and s[slash] != c'/':
        slash -= 1
    if slash < 0 or n - slash - 1 < 1 or n - slash - 1 > 2:
        return -1
    if s[slash + 1] < c'0' or s[slash + 1] > c'9':
        return -1
    length = s[slash + 1] - c'0'
    if n - slash - 1 == 2:
        if length == 0 or s[slash + 2] < c'0' or s[slash + 2] > c'9':
            return -1
        length = length * 10 + (s[slash + 2] - c'0')
    if length < shortest or length > 32:
        return -1
    return parse_ipv4(s, slash, address)
