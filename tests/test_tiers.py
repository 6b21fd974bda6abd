"""The tier gate of conftest.py: a run in which a namespace, kernel or binary test skipped is red,
unless WGC_SKIP_TIERS names the tier.

Each case runs pytest, with this suite's own conftest.py, on a small file of synthetic tests.
"""
import pathlib

import pytest

CONFTEST = pathlib.Path(__file__).with_name("conftest.py")

SYNTHETIC = """
import pytest

def test_unit():
    pass

@pytest.mark.netns
def test_namespace():
    pass

@pytest.mark.kernel
@pytest.mark.netns
def test_kernel():
    pytest.skip("no kernel WireGuard guest: the guest did not boot")

@pytest.mark.binary
def test_binary():
    pass
"""


@pytest.fixture
def synthetic(pytester, monkeypatch):
    monkeypatch.delenv("WGC_SKIP_TIERS", raising=False)
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    netns: n\n    kernel: k\n    binary: b\n")

    def run(source: str = SYNTHETIC, skip_tiers: str | None = None):
        if skip_tiers is not None:
            monkeypatch.setenv("WGC_SKIP_TIERS", skip_tiers)
        pytester.makepyfile(test_synthetic=source)
        return pytester.runpytest("-p", "no:cacheprovider")
    return run


def tier_lines(result) -> dict[str, str]:
    """The lines of the "tiers" section, by tier."""
    return {line.split()[0]: line for line in result.outlines
            if line.split()[:1] in (["unit"], ["kernel"], ["binary"], ["netns"])}


def test_a_skipped_kernel_test_turns_the_run_red(synthetic):
    result = synthetic()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines(["*1 test(s) of a guarded tier skipped*",
                                 "*test_kernel: no kernel WireGuard guest: the guest did not boot"])
    assert tier_lines(result)["kernel"].split()[1:7] == ["0", "passed", "0", "failed", "1", "skipped"]


def test_a_skipped_namespace_test_turns_the_run_red(synthetic):
    result = synthetic(SYNTHETIC.replace("def test_namespace():\n    pass",
                                         "def test_namespace():\n    pytest.skip('wireguard-go is not installed')"),
                       skip_tiers="kernel")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*test_namespace: wireguard-go is not installed"])


def test_naming_the_tier_turns_it_green(synthetic):
    result = synthetic(skip_tiers="kernel")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=3, skipped=1)
    assert "switched off by WGC_SKIP_TIERS" in tier_lines(result)["kernel"]
    assert tier_lines(result)["unit"].split()[1] == "1"


def test_a_switched_off_tier_does_not_run(synthetic):
    result = synthetic(SYNTHETIC.replace("def test_binary():\n    pass",
                                         "def test_binary():\n    raise AssertionError('ran')"),
                       skip_tiers="kernel, binary")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=2, skipped=2)


def test_an_expected_failure_in_a_guarded_tier_is_not_a_skip(synthetic):
    result = synthetic(SYNTHETIC.replace("def test_namespace():\n    pass",
                                         "@pytest.mark.xfail(strict=True, reason='not yet')\n"
                                         "def test_namespace():\n    assert False"),
                       skip_tiers="kernel")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=2, skipped=1, xfailed=1)
    assert tier_lines(result)["netns"].split()[1:9] == ["0", "passed", "0", "failed", "0", "skipped", "1", "xfailed"]


def test_a_skip_in_the_unit_tier_is_allowed(synthetic):
    result = synthetic("import pytest\n\ndef test_unit():\n    pytest.skip('not here')\n")
    assert result.ret == pytest.ExitCode.OK


def test_an_unknown_tier_name_is_a_usage_error(synthetic):
    result = synthetic(skip_tiers="kernal")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*WGC_SKIP_TIERS: unknown tier kernal*"])
