"""The replay window: wireguard-go's (kernel-derived) sequence and a set model."""
import json
from pathlib import Path

from hypothesis import given, settings
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
