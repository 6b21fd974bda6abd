"""A short run of every atheris fuzz target (tests/fuzz/), as CI's share of fuzzing.

Each target starts from its committed seeds and runs a bounded number of
inputs; a finding fails the test with libFuzzer's report.  `just fuzz
SECONDS` is the long run.  The targets need atheris (in the test extras):
without it they fail, and so does this test.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fuzz"))

import run

RUNS = 3000


@pytest.mark.parametrize("target", run.TARGETS)
def test_fuzz_target_smoke(target):
    result = run.run_target(target, [f"-runs={RUNS}", "-max_total_time=20", "-timeout=10"], keep=False)
    assert result["returncode"] == 0, result["output"][-4000:]
    assert result["executions"] > 0, result["output"][-4000:]


def test_every_target_has_seeds():
    for target in run.TARGETS:
        assert os.listdir(os.path.join(os.path.dirname(__file__), "fuzz", "corpus", target)), target
