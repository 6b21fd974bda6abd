# cython: language_level=3
"""Linux calls the daemon needs that Python's standard library lacks."""
from libc.errno cimport errno

import os

cdef extern from "<sys/inotify.h>" nogil:
    int inotify_init1(int flags)
    int inotify_add_watch(int fd, const char *path, unsigned int mask)
    int IN_NONBLOCK
    int IN_CLOEXEC
    unsigned int IN_ATTRIB
    unsigned int IN_DELETE_SELF
    unsigned int IN_MOVE_SELF


def watch_file(str path):
    """A non-blocking descriptor that becomes readable when path's links,
    attributes or name change (removal included); the caller re-checks path."""
    cdef int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        raise OSError(errno, os.strerror(errno))
    if inotify_add_watch(fd, path.encode(), IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF) < 0:
        e = errno
        os.close(fd)
        raise OSError(e, os.strerror(e), path)
    return fd
