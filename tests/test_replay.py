"""The replay window: wireguard-go's (kernel-derived) sequence and a set model."""
import json
from pathlib import Path

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from wgc._replay import REJECT_AFTER, WINDOW, ReplayFilter

VECTORS = json.loads((Path(__file__).parent / "vectors" / "wireguard-go-replay.json").read_text())


def test_constants_match_the_vectors():
    assert WINDOW == VECTORS["parameters"]["window_size"] == 8128
    assert REJECT_AFTER == VECTORS["parameters"]["reject_after_messages"] == 2**64 - 2**13 - 1


def test_main_sequence():
    f = ReplayFilter()
    for i, op in enumerate(VECTORS["main_sequence"]):
        assert f.accept(op["counter"]) == op["accept"], f"step {i}: counter {op['counter']}"


def expand(op):
    if "counter" in op:
        return [op["counter"]]
    if "range" in op:
        low, high = op["range"]
        return range(low, high + 1)
    high, low = op["range_desc"]
    return range(high, low - 1, -1)


def test_bulk_sequences():
    for test in VECTORS["bulk_tests"]:
        f = ReplayFilter()
        for op in test["ops"]:
            for counter in expand(op):
                assert f.accept(counter) == op["accept"], f"{test['name']}: counter {counter}"


def test_reset_forgets():
    f = ReplayFilter()
    assert f.accept(5) and not f.accept(5)
    f.reset()
    assert f.accept(5)


class Model:
    """What the window promises: each counter once, nothing more than WINDOW
    below the greatest seen, nothing at or past REJECT_AFTER."""

    def __init__(self):
        self.seen = set()
        self.greatest = None

    def accept(self, counter):
        if counter >= REJECT_AFTER or counter in self.seen:
            return False
        if self.greatest is not None and counter + WINDOW < self.greatest:
            return False
        self.seen.add(counter)
        self.greatest = counter if self.greatest is None else max(self.greatest, counter)
        return True


near = st.integers(min_value=0, max_value=3 * WINDOW)
far = st.integers(min_value=0, max_value=2**64 - 1)
edge = st.integers(min_value=REJECT_AFTER - 2 * WINDOW, max_value=2**64 - 1)


@settings(max_examples=300)
@given(st.lists(st.one_of(near, near, far, edge), max_size=200))
def test_matches_the_set_model(counters):
    f, m = ReplayFilter(), Model()
    for c in counters:
        assert f.accept(c) == m.accept(c), c


@settings(max_examples=100)
@given(st.integers(min_value=0, max_value=2**40), st.lists(st.integers(-WINDOW - 70, 200), max_size=300))
def test_matches_the_model_around_a_moving_front(base, offsets):
    f, m = ReplayFilter(), Model()
    for off in offsets:
        c = max(0, base + off)
        assert f.accept(c) == m.accept(c), c
        base += 1


# The ring behind the window: the window plus the one word always being recycled
# (wgc/_replay.pxd), 64 counters to a word.
WORD_BITS = 64
RING = WINDOW + WORD_BITS


def test_in_order_across_many_ring_wraps():
    """Every counter once, in order, through ten turns of the ring: each is fresh, and its
    replay is not (a word left uncleared on a wrap would refuse everything after it)."""
    f = ReplayFilter()
    for c in range(10 * RING):
        assert f.accept(c), c
        assert not f.accept(c), c


@pytest.mark.parametrize("jump", [RING - 1, RING, RING + 1, WINDOW - 1, WINDOW, WINDOW + 1,
                                  2 * RING, RING + WORD_BITS, RING - WORD_BITS])
def test_jumps_near_one_ring(jump):
    """Jumps of about one ring, again and again from the same phase of the ring: the new front
    is fresh, the counters just below it are fresh, and the old ones fall out of the window
    exactly when they are WINDOW below the front."""
    f, m = ReplayFilter(), Model()
    front = 0
    for _ in range(12):
        for c in (front, front - 1, front - 2, front + 1):
            if c >= 0:
                assert f.accept(c) == m.accept(c), (jump, c)
        front += jump
        assert f.accept(front) and m.accept(front)
        for back in (WINDOW + 1, WINDOW, WINDOW - 1, 1, 0, jump - 1, jump, jump + 1):
            c = front - back
            if c >= 0:
                assert f.accept(c) == m.accept(c), (jump, front, back)


def expand_steps(steps, limit):
    """Counters from a list of steps, each relative to the greatest counter so far."""
    front = -1
    for kind, a, b in steps:
        if kind == "run":             # a counters in order after the front, every b-th one
            counters = range(front + 1, front + 1 + a * b, b)
        elif kind == "jump":          # a ring-sized jump ahead, off by b
            counters = [front + a * RING + b]
        else:                         # a counter b below the front (a replay, a late one, a hole)
            counters = [front - b]
        for c in counters:
            if c < 0:
                continue
            yield c
            front = max(front, c)
            limit -= 1
            if limit == 0:
                return


steps = st.one_of(
    st.tuples(st.just("run"), st.integers(1, 2 * RING), st.integers(1, 3)),
    st.tuples(st.just("run"), st.integers(RING, 3 * RING), st.just(1)),
    st.tuples(st.just("jump"), st.integers(0, 3), st.integers(-WORD_BITS - 1, WORD_BITS + 1)),
    st.tuples(st.just("back"), st.just(0), st.integers(0, WINDOW + WORD_BITS + 1)),
)


# Without shrinking: shrinking lists of 10^5 counters takes minutes, and the failing
# counter is in the assertion.
@settings(max_examples=40, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(st.lists(steps, min_size=10, max_size=60))
def test_long_sequences_match_the_model(step_list):
    """Mostly 10^4 to 10^5 counters: runs in order and with holes, jumps of about whole
    rings, replays and late arrivals, against the set model."""
    f, m = ReplayFilter(), Model()
    for c in expand_steps(step_list, 100_000):
        assert f.accept(c) == m.accept(c), c
