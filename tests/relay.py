"""A userspace UDP relay that makes a path bad: delay, jitter, reordering, duplication, loss.

The tests run WireGuard across it where `tc netem` is not available.  It sits
in a namespace between the two ends and owns two sockets:

- the listen socket, where one end (the client) points its endpoint;
- the via socket, from which the relay forwards to --to, and where the far
  end's endpoint points (the far end also roams to it, since that is the
  authenticated source its datagrams come from).

A datagram arriving at the listen socket goes to --to from the via socket; one
arriving at the via socket from --to goes back from the listen socket to the
latest client (before any client has spoken it is dropped and counted), so
both directions work and each end sees the relay as its one peer address.

Each datagram leaves after a delay drawn uniformly from delay ± jitter, so
datagrams overtake each other as on a path with several routes; a duplicate
gets its own delay.  The queue has a cap (what does not fit is dropped and
counted) and the relay ends by itself after --seconds.  It prints one JSON
line when its sockets are bound and one with its counters when it ends
(SIGTERM, SIGINT or the end of its lifetime).

    python tests/relay.py --listen 192.168.1.254:40000 --to 192.168.2.1:51822 \\
        --via 192.168.2.254:40001 --delay-ms 50 --jitter-ms 20 --duplicate 0.01
"""
import argparse
import heapq
import json
import random
import selectors
import signal
import socket
import time

BURST = 256              # datagrams read from one socket before looking at the clock again
SOCKET_BUFFER = 8 << 20  # room for bursts while the relay is busy sending


def address(text: str) -> tuple[str, int]:
    """HOST:PORT or [IPV6]:PORT."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or [IPV6]:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a probability is between 0 and 1, got {text}")
    return value


def bound_socket(where: tuple[str, int]) -> socket.socket:
    family = socket.AF_INET6 if ":" in where[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    sock.bind(where)
    sock.setblocking(False)
    return sock


class Stopped(Exception):
    """Raised by the signal handler: select() would otherwise resume its wait."""


def stop(*_) -> None:
    raise Stopped


class Relay:
    def __init__(self, args: argparse.Namespace):
        self.listen = bound_socket(args.listen)
        self.via = bound_socket(args.via)
        self.to = args.to
        self.delay = args.delay_ms / 1000
        self.jitter = args.jitter_ms / 1000
        self.duplicate = args.duplicate
        self.loss = args.loss
        self.queue_limit = args.queue
        self.client = None
        # (due, order, socket, datagram, destination, direction, arrival number)
        self.queue: list = []
        self.order = 0
        self.arrivals = {"forth": 0, "back": 0}
        self.latest_sent = {"forth": -1, "back": -1}
        self.counters = dict.fromkeys(
            ("received", "sent", "lost", "duplicated", "reordered", "queue_full", "no_client", "send_errors"), 0)

    def ready_line(self) -> str:
        return json.dumps({"listen": self.listen.getsockname()[:2], "via": self.via.getsockname()[:2]})

    def receive(self, sock: socket.socket, now: float) -> None:
        for _ in range(BURST):
            try:
                datagram, source = sock.recvfrom(65535)
            except BlockingIOError:
                return
            self.counters["received"] += 1
            if sock is self.listen:
                self.client = source
                self.schedule(self.via, datagram, self.to, "forth", now)
            elif source[:2] != self.to:
                continue  # not from the far end: a relay is no open proxy
            elif self.client is None:
                self.counters["no_client"] += 1
            else:
                self.schedule(self.listen, datagram, self.client, "back", now)

    def schedule(self, sock, datagram: bytes, destination, direction: str, now: float) -> None:
        number = self.arrivals[direction]
        self.arrivals[direction] += 1
        if random.random() < self.loss:
            self.counters["lost"] += 1
            return
        copies = 2 if random.random() < self.duplicate else 1
        self.counters["duplicated"] += copies - 1
        for _ in range(copies):
            if len(self.queue) >= self.queue_limit:
                self.counters["queue_full"] += 1
                continue
            due = now + max(0.0, random.uniform(self.delay - self.jitter, self.delay + self.jitter))
            self.order += 1
            heapq.heappush(self.queue, (due, self.order, sock, datagram, destination, direction, number))

    def send_due(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            _, _, sock, datagram, destination, direction, number = heapq.heappop(self.queue)
            if number < self.latest_sent[direction]:
                self.counters["reordered"] += 1
            self.latest_sent[direction] = max(self.latest_sent[direction], number)
            try:
                sock.sendto(datagram, destination)
                self.counters["sent"] += 1
            except OSError:  # a full buffer, or a firewall dropped it (EPERM)
                self.counters["send_errors"] += 1

    def run(self, seconds: float) -> None:
        selector = selectors.DefaultSelector()
        for sock in (self.listen, self.via):
            selector.register(sock, selectors.EVENT_READ)
        end = time.monotonic() + seconds
        try:
            while (now := time.monotonic()) < end:
                timeout = end - now
                if self.queue:
                    timeout = min(timeout, max(0.0, self.queue[0][0] - now))
                for key, _ in selector.select(timeout):
                    self.receive(key.fileobj, time.monotonic())
                self.send_due(time.monotonic())
        except Stopped:
            pass
        selector.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Relay UDP between two ends over a bad path.")
    parser.add_argument("--listen", type=address, required=True, help="where the client sends (HOST:PORT)")
    parser.add_argument("--to", type=address, required=True, help="the far end (HOST:PORT)")
    parser.add_argument("--via", type=address, required=True,
                        help="where the relay forwards from: the far end's endpoint (HOST:PORT)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="mean one-way delay")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="the delay is uniform in mean ± this")
    parser.add_argument("--duplicate", type=probability, default=0.0, help="chance a datagram is sent twice")
    parser.add_argument("--loss", type=probability, default=0.0, help="chance a datagram is dropped")
    parser.add_argument("--queue", type=int, default=20000, help="most datagrams held at once")
    parser.add_argument("--seconds", type=float, default=600.0, help="the relay ends after this long")
    args = parser.parse_args(argv)
    if args.jitter_ms < 0 or args.delay_ms < 0 or args.queue < 1 or args.seconds <= 0:
        parser.error("delay, jitter, queue and seconds must be positive")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    relay = Relay(args)
    print(relay.ready_line(), flush=True)
    relay.run(args.seconds)
    print(json.dumps(relay.counters), flush=True)


if __name__ == "__main__":
    main()
