"""A short soak (scripts/soak.py; `just soak` runs the long one): traffic both ways
with a ping stream, no ping lost for long, memory not growing."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "scripts"))

import soak

# Behind `-m long` for now: under a loaded CI machine one run of four failed, not yet understood.
pytestmark = [pytest.mark.netns, pytest.mark.long, pytest.mark.timeout(180)]


def test_a_short_soak_keeps_the_ping_stream_and_the_memory():
    [result] = soak.soak(50, rate="20M", pairs=[("wgc", "wgc")])
    assert result["pings_sent"] == 250
    assert result["pings_lost"] <= 2          # the last may still be on its way at the end
    assert result["longest_gap_s"] < 1.0
    # Buffers have fixed sizes: past the warm-up, at most a MiB more.
    for first, last in zip(result["rss_mib_after_warmup"], result["rss_mib_last"], strict=True):
        assert last <= first + 1.0
