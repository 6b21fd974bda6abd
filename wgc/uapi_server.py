"""The control socket's server: any number of clients, none able to hold up the others.

One thread owns the listening socket and every connection, all non-blocking.
The protocol (uapi.Session) applies nothing before a request is whole, so a
client that connects and never speaks, or trickles its request a byte at a
time, holds a descriptor and its own bytes: no thread, no lock.  The socket
is for root only (mode 0700, as wireguard-go makes it), so the limits below
are against buggy clients more than hostile ones:

- time: a request must arrive whole, and its reply be taken, within
  REQUEST_TIMEOUT of its first byte, or the connection is closed.  Between
  requests a connection may idle for ever, as wireguard-go lets it;
- count: at most MAX_CLIENTS connections; the next one closes the one that
  has waited longest (idle the longest, or stuck in a request the longest),
  so a flood of connections never locks out a new client;
- memory: past BUFFER_LIMIT bytes of requests and replies held for all
  clients together, only the client holding most is read from or gets a
  `get` reply built, until the total is below again.  That client's request
  ends (or is refused) at uapi.MAX_REQUEST, so all held stays below
  BUFFER_LIMIT + uapi.MAX_REQUEST plus one `get` reply.
"""
import errno
import os
import selectors
import signal
import socket
import threading
import time

from wgc import uapi
from wgc.log import log_failure

MAX_CLIENTS = 256
# wg(8) sends a request and reads its reply in milliseconds; a configuration
# of uapi.MAX_REQUEST bytes takes it a few seconds.
REQUEST_TIMEOUT = 30.0
BUFFER_LIMIT = uapi.MAX_REQUEST
_RECV_SIZE = 65536
_SEND_SIZE = 1 << 20  # at most this much of a reply is copied for one send()
_ACCEPTS_PER_WAKEUP = 64  # then the connections already in get their turn
_ACCEPT_PAUSE = 0.1  # s without accepting when out of descriptors with no client to close
# accept() failures that say the process or the system is short of something for now
_SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _Client:
    def __init__(self, sock: socket.socket, device, now: float):
        self.sock = sock
        self.fd = sock.fileno()
        self.session = uapi.Session(device)
        self.since = now  # accepted, or last became idle: the longest waiting goes first
        self.busy_since: float | None = None  # when the request being served began to arrive
        self.waiting: str | None = uapi.INPUT  # what session.step() last asked for; None when done
        self.events = 0  # what the selector watches for
        self.sent = 0  # bytes of session.output already sent

    def held(self) -> int:
        return self.session.held() + len(self.session.output) - self.sent


class UAPIServer:
    def __init__(self, device, listener: socket.socket, log):
        self.device = device
        self.listener = listener
        self.log = log
        self._clients: dict[int, _Client] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._stopping = False
        self._accepting = False
        self._accept_again: float | None = 0.0  # monotonic time when accepting resumes; None: never
        self._thread = threading.Thread(target=self._run, name="wgc-uapi", daemon=True)

    def start(self) -> None:
        self.listener.setblocking(False)
        self._wake_read.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._thread.start()

    def close(self) -> None:
        """Stops serving (after a request being applied) and closes every connection."""
        self._stopping = True
        if self._thread.ident is not None:
            self._wake_write.send(b"\0")
            self._thread.join()
        for client in list(self._clients.values()):
            self._drop(client)
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()

    # the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as error:  # a bug: say so in the log, and stop as on a failed socket
            log_failure(self.log, "UAPI server", error)
            os.kill(os.getpid(), signal.SIGTERM)

    def _loop(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            self._expire(now)
            self._arrange(now)
            for key, events in self._selector.select(self._timeout(now)):
                if self._stopping:
                    break  # type: ignore[unreachable]  # stop() sets it from another thread
                if key.fileobj is self.listener:
                    self._accept()
                elif key.fileobj is self._wake_read:
                    self._wake_read.recv(64)
                elif (client := self._clients.get(key.data.fd)) is not None and client is key.data:
                    # (not closed by an earlier event)
                    try:
                        self._serve(client, events)
                    except Exception as error:  # a bug must not end the serving of the others
                        log_failure(self.log, "UAPI connection", error)
                        self._drop(client)

    def _timeout(self, now: float) -> float | None:
        deadlines = [c.busy_since + REQUEST_TIMEOUT for c in self._clients.values() if c.busy_since is not None]
        if not self._accepting and self._accept_again is not None:
            deadlines.append(self._accept_again)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _expire(self, now: float) -> None:
        for client in list(self._clients.values()):
            if client.busy_since is not None and now - client.busy_since > REQUEST_TIMEOUT:
                self.log.debug("UAPI client closed: a request not done in %d s", REQUEST_TIMEOUT)
                self._drop(client)

    def _held(self) -> int:
        return sum(client.held() for client in self._clients.values())

    def _arrange(self, now: float) -> None:
        """What to watch for each client: its reply going out, its next bytes
        while there is room for them, nothing while there is none."""
        if not self._accepting and self._accept_again is not None and now >= self._accept_again:
            self._selector.register(self.listener, selectors.EVENT_READ)
            self._accepting = True
        total = self._held()
        # Past the limit one client goes on: the one holding most, so that
        # the request furthest along ends (or is refused at uapi.MAX_REQUEST).
        favoured = max(self._clients.values(), key=_Client.held) if total >= BUFFER_LIMIT else None
        for client in list(self._clients.values()):
            room = total < BUFFER_LIMIT or client is favoured
            # A `get` reply is built only once the one before has gone out.
            while client.waiting is uapi.ROOM and room and not client.session.output:
                before = client.held()
                self._step(client)
                total += client.held() - before
                room = total < BUFFER_LIMIT or client is favoured
            if client.waiting is None and not client.session.output:
                self._drop(client)
            elif client.session.output:
                self._watch(client, selectors.EVENT_WRITE)
            elif client.waiting is uapi.INPUT and room:
                self._watch(client, selectors.EVENT_READ)
            else:
                self._watch(client, 0)

    def _watch(self, client: _Client, events: int) -> None:
        if events == client.events:
            return
        if not client.events:
            self._selector.register(client.sock, events, client)
        elif not events:
            self._selector.unregister(client.sock)
        else:
            self._selector.modify(client.sock, events, client)
        client.events = events

    # clients ---------------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as error:
                if error.errno in _SHORTAGES:
                    self._shed()
                    return
                self.log.error("UAPI accept error: %s", error.strerror or error)
                self._fail()
                return
            if len(self._clients) >= MAX_CLIENTS:
                self.log.debug("UAPI client closed: %d others connected since", MAX_CLIENTS)
                self._drop(min(self._clients.values(), key=lambda c: c.since))
            sock.setblocking(False)
            client = _Client(sock, self.device, time.monotonic())
            self._clients[client.fd] = client
            self._watch(client, selectors.EVENT_READ)

    def _shed(self) -> None:
        """Out of descriptors: close the client waiting longest, or if there is
        none (something else holds them), stop accepting for a moment."""
        if self._clients:
            self._drop(min(self._clients.values(), key=lambda c: c.since))
            return
        self._selector.unregister(self.listener)
        self._accepting = False
        self._accept_again = time.monotonic() + _ACCEPT_PAUSE

    def _fail(self) -> None:
        """A listening socket that fails for good ends the daemon, in order, as
        a stop signal does (wireguard-go also stops on an accept error)."""
        self._selector.unregister(self.listener)
        self._accepting = False
        self._accept_again = None
        os.kill(os.getpid(), signal.SIGTERM)

    def _serve(self, client: _Client, events: int) -> None:
        now = time.monotonic()
        try:
            if events & selectors.EVENT_WRITE:
                self._send(client)
            if events & selectors.EVENT_READ and client.waiting is uapi.INPUT:
                data = client.sock.recv(_RECV_SIZE)
                client.session.feed(data)
                self._step(client)
        except OSError as error:
            self.log.debug("UAPI connection ended: %s", error.strerror or error)
            self._drop(client)
            return
        if client.session.idle():
            if client.busy_since is not None:
                client.busy_since, client.since = None, now
        elif client.busy_since is None:
            client.busy_since = now

    def _step(self, client: _Client) -> None:
        """Runs the protocol until it waits, then sends what it replied."""
        client.waiting = client.session.step()
        self._send(client)

    def _send(self, client: _Client) -> None:
        output = client.session.output
        if not output:
            return
        try:
            client.sent += client.sock.send(output[client.sent : client.sent + _SEND_SIZE])
        except BlockingIOError:
            return
        except OSError as error:  # the client is gone: so is the rest of its requests
            self.log.debug("UAPI connection ended: %s", error.strerror or error)
            client.sent = len(output)
            client.waiting = None
        if client.sent == len(output):
            output.clear()
            client.sent = 0

    def _drop(self, client: _Client) -> None:
        if self._clients.get(client.fd) is not client:
            return  # dropped already
        self._watch(client, 0)
        client.sock.close()
        del self._clients[client.fd]


def listen_control(path: str) -> socket.socket:
    """A control socket at path, mode 0700; a stale one is replaced, a live one refused."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o077)
    try:
        try:
            listener.bind(path)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                probe.connect(path)
                raise OSError(errno.EADDRINUSE, "unix socket in use") from None
            except (ConnectionRefusedError, FileNotFoundError):
                pass  # nobody listens: a leftover of a daemon that died
            finally:
                probe.close()
            os.unlink(path)
            listener.bind(path)
        # As deep a queue as the system allows (as Go's listen asks), so that a
        # burst of clients waits there rather than failing to connect.
        listener.listen(socket.SOMAXCONN)
    except BaseException:
        listener.close()
        raise
    finally:
        os.umask(old_umask)
    return listener
