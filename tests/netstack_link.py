"""A simulated link between two network stacks, on a fake clock.

Each direction can lose, duplicate, corrupt and delay packets (jitter
reorders them), from a seeded random source so that a failing case can be
replayed.  Link.run() moves packets and time until a condition holds or a
time limit passes; nothing sleeps.
"""
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass

from wgc.netstack._stack import Stack

MS = 1_000_000
SECOND = 1_000_000_000


@dataclass
class Impairment:
    loss: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    delay: int = 1 * MS            # one way, ns
    jitter: int = 0                # up to this much more, ns (reorders)


class Link:
    def __init__(self, a: Stack, b: Stack, impairment: Impairment | None = None,
                 back: Impairment | None = None, seed: int = 0, start: int = SECOND):
        self.stacks = (a, b)
        self.impair = (impairment or Impairment(), back or impairment or Impairment())
        self.random = random.Random(seed)
        self.now = start
        self.queue: list[tuple[int, int, int, bytes]] = []   # (due, order, to, packet)
        self.order = 0
        self.sent = [0, 0]         # packets put on the wire each way
        self.taps: list[Callable[[int, bytes], bytes | None]] = []   # may rewrite or drop (None)
        self.captured: list[tuple[int, int, bytes]] = []             # (from, time, packet) if capturing
        self.capture = False

    def collect(self) -> None:
        """Puts what the stacks sent on the wire."""
        for side, stack in enumerate(self.stacks):
            for packet in stack.take_output(self.now):
                self.sent[side] += 1
                if self.capture:
                    self.captured.append((side, self.now, packet))
                for tap in self.taps:
                    packet = tap(side, packet)
                    if packet is None:
                        break
                if packet is not None:
                    self.transmit(side, packet)

    def transmit(self, side: int, packet: bytes) -> None:
        imp = self.impair[side]
        r = self.random
        if r.random() < imp.loss:
            return
        copies = 2 if r.random() < imp.duplicate else 1
        for _ in range(copies):
            data = packet
            if r.random() < imp.corrupt:
                i = r.randrange(len(data))
                data = data[:i] + bytes([data[i] ^ (1 + r.randrange(255))]) + data[i + 1:]
            due = self.now + imp.delay + (r.randrange(imp.jitter) if imp.jitter else 0)
            self.order += 1
            heapq.heappush(self.queue, (due, self.order, 1 - side, data))

    def inject(self, to: int, packet: bytes) -> None:
        """A packet from outside (an attacker, a crafted segment), delivered now."""
        self.stacks[to].receive(packet, self.now)
        self.collect()

    def deliver(self) -> None:
        """Delivers what is due now and runs the timers due now."""
        while self.queue and self.queue[0][0] <= self.now:
            _, _, to, packet = heapq.heappop(self.queue)
            self.stacks[to].receive(packet, self.now)
            self.collect()
        for stack in self.stacks:
            deadline = stack.next_deadline
            if deadline and deadline <= self.now:
                stack.advance(self.now)
        self.collect()

    def next_event(self) -> int:
        """When something happens next (0: nothing will)."""
        candidates = [stack.next_deadline for stack in self.stacks if stack.next_deadline]
        if self.queue:
            candidates.append(self.queue[0][0])
        return min(candidates) if candidates else 0

    def run(self, until: Callable[[], bool], limit: int, act: Callable[[], bool] | None = None) -> bool:
        """Moves packets and time until `until()` holds (True) or `limit` ns
        of simulated time pass (False).  `act` (the applications) runs at
        every instant something happens, again at the same instant for as
        long as it returns True (it did something)."""
        end = self.now + limit
        self.collect()
        while True:
            self.deliver()
            while act is not None and act():
                self.collect()
                self.deliver()
            if until():
                return True
            following = self.next_event()
            if following == 0 or following > end:
                return False
            self.now = max(self.now, following)
