"""Following the daemon's interface wherever it lives: up, down, MTU, deleted.

The daemon hears its interface's changes on an rtnetlink socket (RTMGRP_LINK).
An interface can also be moved to another network namespace (`ip link set wg0
netns B`, the container recipe): that is not a deletion.  The namespace it
leaves sends RTM_DELLINK for both, so a RTM_DELLINK is not trusted; the TUN
descriptor is asked instead.  The kernel detaches it from a deleted interface
before announcing the deletion, after which TUNGETIFF fails with EBADFD; a
moved interface stays attached.

After a move the watch finds the new namespace (TUNGETDEVNETNS), makes sure it
has a namespace id here (the kernel gives one when the move starts here; a
second move onwards may need one assigned), and looks the link up there by
name with IFLA_TARGET_NETNSID.  From then on the socket, which listens to all
namespaces with an id here (NETLINK_LISTEN_ALL_NSID, each message tagged with
its namespace id), hears the link's events in its new home.  Without
CAP_NET_BROADCAST the socket may not listen there, and the watch asks for the
link's state once a second instead while the link is away.  No descriptor of
the other namespace is kept open, so deleting that namespace deletes the
interface, as it would a kernel WireGuard interface, and the daemon then ends.

All of it runs on the daemon's control thread, whose network namespace never
changes: the UDP sockets it opens stay in the namespace the daemon started in.
"""
import errno
import os
import socket
import struct
import time

from wgc.errors import WireGuardError
from wgc.netlink import (
    IFF_RUNNING,
    IFINFOMSG,
    IFLA_IFNAME,
    IFLA_MTU,
    NETLINK_ROUTE,
    NLM_F_ACK,
    NLM_F_REQUEST,
    RTM_DELLINK,
    RTM_GETLINK,
    RTM_NEWLINK,
    RTMGRP_LINK,
    SOL_NETLINK,
    Message,
    NetlinkSocket,
    attributes,
    messages,
)

# linux/netlink.h, linux/rtnetlink.h, linux/net_namespace.h, linux/if_link.h
NETLINK_LISTEN_ALL_NSID = 8
RTM_NEWNSID, RTM_GETNSID = 88, 90
NETNSA_NSID, NETNSA_FD = 1, 3
NETNSA_NSID_NOT_ASSIGNED = -1
IFLA_TARGET_NETNSID = 46

HOME = None             # the location tag of the namespace the daemon runs in
LOST = object()         # the link left and could not be found: no message matches
POLL_NS = 1_000_000_000
LOCATE_ATTEMPTS = 3     # a link moved or renamed again while we look it up
_MAX_DATAGRAM = 1 << 16
_NSID = struct.Struct("=i")


class LinkEvent:
    __slots__ = ("deleted", "mtu", "running")

    def __init__(self, deleted: bool, running: bool = False, mtu: int | None = None):
        self.deleted, self.running, self.mtu = deleted, running, mtu

    def __eq__(self, other):
        return isinstance(other, LinkEvent) and (self.deleted, self.running, self.mtu) == (
            other.deleted, other.running, other.mtu)

    def __repr__(self):
        return f"LinkEvent(deleted={self.deleted}, running={self.running}, mtu={self.mtu})"


DELETED = LinkEvent(True)


def link_messages(data: bytes):
    """(type, ifindex, running, mtu) of each RTM_NEWLINK and RTM_DELLINK in one
    datagram; a malformed message ends the datagram, never the daemon."""
    try:
        for kind, _flags, _seq, body in messages(data):
            if kind not in (RTM_NEWLINK, RTM_DELLINK) or len(body) < IFINFOMSG.size:
                continue
            _, _, index, flags, _ = IFINFOMSG.unpack_from(body)
            yield kind, index, bool(flags & IFF_RUNNING), _mtu(body)
    except WireGuardError:
        return


def _mtu(body: bytes) -> int | None:
    try:
        for kind, payload in attributes(body, IFINFOMSG.size):
            if kind == IFLA_MTU and len(payload) >= 4:
                return struct.unpack_from("=I", payload)[0]
    except WireGuardError:
        pass
    return None


def _tag(ancdata) -> int | None:
    """The namespace id a NETLINK_LISTEN_ALL_NSID socket puts on a message from
    another namespace; HOME for our own (untagged even when it has an id for
    itself)."""
    for level, kind, data in ancdata:
        if level == SOL_NETLINK and kind == NETLINK_LISTEN_ALL_NSID and len(data) >= _NSID.size:
            return _NSID.unpack_from(data)[0]
    return HOME


class LinkWatch:
    """The link events of one TUN interface, wherever it is moved.

    The daemon selects on fileno(), calls read() when it is readable, and
    calls poll(now) by deadline() (None unless the link is away and the socket
    cannot hear it there)."""

    def __init__(self, tun):
        self.tun = tun
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
                                  NETLINK_ROUTE)
        try:
            self.queries = NetlinkSocket(NETLINK_ROUTE)
        except BaseException:
            self.sock.close()
            raise
        try:
            self.sock.bind((0, RTMGRP_LINK))
            try:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_LISTEN_ALL_NSID, 1)
                self.hears_everywhere = True
            except PermissionError:  # no CAP_NET_BROADCAST: poll while away
                self.hears_everywhere = False
            home = os.stat("/proc/self/ns/net")
            self.home = (home.st_dev, home.st_ino)
        except BaseException:
            self.close()
            raise
        self.nsid, self.ifindex = HOME, tun.ifindex
        self.state = None
        self.next_poll = None

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()
        self.queries.close()

    def deadline(self) -> int | None:
        return self.next_poll

    def read(self) -> list[LinkEvent]:
        """The events waiting on the socket; after a deletion, nothing more."""
        events: list[LinkEvent] = []
        while True:
            try:
                data, ancdata, _, _ = self.sock.recvmsg(_MAX_DATAGRAM, socket.CMSG_SPACE(_NSID.size))
            except (BlockingIOError, InterruptedError):
                return events
            except OSError:  # ENOBUFS: events were lost, a move or deletion among them maybe
                event = self._locate()
                if event is not None:
                    events.append(event)
                    if event.deleted:
                        return events
                continue
            tag = _tag(ancdata)
            for kind, index, running, mtu in link_messages(data):
                if tag != self.nsid or index != self.ifindex:
                    continue  # another link, or ours where it no longer is
                event = self._locate() if kind == RTM_DELLINK else self._state(LinkEvent(False, running, mtu))
                if event is not None:
                    events.append(event)
                    if event.deleted:
                        return events

    def poll(self, now: int) -> list[LinkEvent]:
        """While away and deaf there, the link's state once a second."""
        if self.next_poll is None or now < self.next_poll:
            return []
        self.next_poll = now + POLL_NS
        try:
            link = None if self.nsid is LOST else self._query(self.nsid, index=self.ifindex)
        except OSError:
            return []
        event = self._locate() if link is None else self._state(LinkEvent(False, *link[1:]))
        return [] if event is None else [event]

    # -- where the link is --------------------------------------------------------------

    def _state(self, event: LinkEvent) -> LinkEvent | None:
        """event, unless it only repeats the last state reported."""
        if event.mtu is None and self.state is not None:
            event.mtu = self.state.mtu
        if event == self.state:
            return None
        self.state = event
        return event

    def _locate(self) -> LinkEvent | None:
        """Finds the link after a RTM_DELLINK or lost events: DELETED when the
        TUN is detached, else its state where it is now (None when it cannot be
        found there; then the watch asks again by poll())."""
        for _ in range(LOCATE_ATTEMPTS):
            try:
                name = self.tun.current_name()
                nsfd = self.tun.netns()
            except OSError as error:
                if error.errno == errno.EBADFD:
                    return DELETED
                # A kernel before 5.2 cannot say where the link went: serve it
                # unfollowed (no polling); the TUN reader still sees a deletion.
                self.nsid, self.next_poll = LOST, None
                return None
            try:
                nsid = HOME if self._is_home(nsfd) else self._assigned_nsid(nsfd)
                link = self._query(nsid, name=name)
            except OSError:
                break  # refused (not allowed there?): ask again by poll()
            finally:
                os.close(nsfd)
            if link is not None:
                self.nsid, self.ifindex = nsid, link[0]
                self.next_poll = None if nsid is HOME or self.hears_everywhere else time.monotonic_ns() + POLL_NS
                return self._state(LinkEvent(False, *link[1:]))
        self.nsid, self.next_poll = LOST, time.monotonic_ns() + POLL_NS
        return None

    def _is_home(self, nsfd: int) -> bool:
        st = os.fstat(nsfd)
        return (st.st_dev, st.st_ino) == self.home

    def _nsid(self, nsfd: int) -> int:
        """The id this namespace gives the namespace nsfd (-1: none yet)."""
        seq = self.queries.next_seq()
        msg = Message(RTM_GETNSID, NLM_F_REQUEST | NLM_F_ACK, seq, _MAX_DATAGRAM, bytes(1))
        msg.put(NETNSA_FD, struct.pack("=I", nsfd))
        for kind, body in self.queries.request(msg.finish(), seq):
            if kind == RTM_NEWNSID:
                for attr, payload in attributes(body, 4):
                    if attr == NETNSA_NSID and len(payload) >= _NSID.size:
                        return _NSID.unpack_from(payload)[0]
        return NETNSA_NSID_NOT_ASSIGNED

    def _assigned_nsid(self, nsfd: int) -> int:
        """nsfd's namespace id here, assigning the next free one if it has none
        (as `ip netns set NAME auto` does), so that its events reach us."""
        nsid = self._nsid(nsfd)
        if nsid != NETNSA_NSID_NOT_ASSIGNED:
            return nsid
        seq = self.queries.next_seq()
        msg = Message(RTM_NEWNSID, NLM_F_REQUEST | NLM_F_ACK, seq, _MAX_DATAGRAM, bytes(1))
        msg.put(NETNSA_FD, struct.pack("=I", nsfd))
        msg.put(NETNSA_NSID, _NSID.pack(NETNSA_NSID_NOT_ASSIGNED))
        try:
            self.queries.request(msg.finish(), seq)
        except WireGuardError as error:
            if error.errno != errno.EEXIST:  # assigned by someone else meanwhile
                raise
        nsid = self._nsid(nsfd)
        if nsid == NETNSA_NSID_NOT_ASSIGNED:
            raise WireGuardError(errno.ENOENT, "no namespace id")
        return nsid

    def _query(self, nsid: int | None, name: str | None = None, index: int = 0):
        """(ifindex, running, mtu) of the link named `name` (or numbered index)
        in namespace nsid, None when there is no such link there."""
        seq = self.queries.next_seq()
        msg = Message(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, seq, _MAX_DATAGRAM,
                      IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0))
        if name is not None:
            msg.put(IFLA_IFNAME, os.fsencode(name) + b"\0")
        if nsid is not HOME:
            msg.put(IFLA_TARGET_NETNSID, _NSID.pack(nsid))
        try:
            answer = self.queries.request(msg.finish(), seq)
        except WireGuardError as error:
            if error.errno in (errno.ENODEV, errno.EINVAL, errno.ENOENT):
                return None
            raise
        for kind, body in answer:
            if kind == RTM_NEWLINK and len(body) >= IFINFOMSG.size:
                _, _, found, flags, _ = IFINFOMSG.unpack_from(body)
                return found, bool(flags & IFF_RUNNING), _mtu(body)
        return None
