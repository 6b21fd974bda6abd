import collections
import os

import pytest

from netns import Namespaces, have_root

pytest_plugins = ["pytester"]

# The tiers that need something of the machine (a QEMU guest running systemd, root and
# namespaces, the frozen executables, a container engine).  A skip in one of them means the
# tier did not run at all, so it turns the run red, unless the tier was switched off by name
# in SKIP_TIERS_VARIABLE.  A test belongs to the first tier whose marker it carries; the rest
# are "unit".
GUARDED_TIERS = ("systemd", "kernel", "binary", "container", "netns")
SKIP_TIERS_VARIABLE = "WGC_SKIP_TIERS"


@pytest.fixture
def netns():
    """Factory for namespaces that are all removed when the test ends."""
    with Namespaces() as make:
        yield make


def tier_of(item) -> str:
    return next((tier for tier in GUARDED_TIERS if item.get_closest_marker(tier)), "unit")


def switched_off() -> set[str]:
    """The tiers named in WGC_SKIP_TIERS (comma-separated); any other name is a usage error."""
    named = {name.strip() for name in os.environ.get(SKIP_TIERS_VARIABLE, "").split(",") if name.strip()}
    unknown = named - set(GUARDED_TIERS)
    if unknown:
        raise pytest.UsageError(f"{SKIP_TIERS_VARIABLE}: unknown tier {', '.join(sorted(unknown))}; "
                                f"the tiers are {', '.join(GUARDED_TIERS)}")
    return named


class TierGate:
    """Counts outcomes per tier, and fails a run in which a guarded tier skipped unasked."""

    def __init__(self, off: set[str]):
        self.off = off
        self.tier: dict[str, str] = {}        # nodeid -> tier
        self.outcome: dict[str, str] = {}     # nodeid -> passed, failed, skipped or xfailed
        self.reason: dict[str, str] = {}      # nodeid -> why it skipped

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        no_root = not have_root()
        for item in items:
            tier = self.tier[item.nodeid] = tier_of(item)
            if tier in self.off:
                item.add_marker(pytest.mark.skip(reason=f"tier {tier} switched off by {SKIP_TIERS_VARIABLE}"))
            elif no_root and item.get_closest_marker("netns"):
                item.add_marker(pytest.mark.skip(reason="needs root, /dev/net/tun and iproute2 for network namespaces"))

    def pytest_runtest_logreport(self, report):
        # One outcome per test: a failure in any phase wins, then a skip, then the call's pass.
        # An expected failure (xfail) ran, and failed as it was marked to: not a skip.
        if report.failed:
            self.outcome[report.nodeid] = "failed"
        elif hasattr(report, "wasxfail") and report.when == "call":
            self.outcome[report.nodeid] = "xfailed"
        elif report.skipped and self.outcome.get(report.nodeid) != "failed":
            self.outcome[report.nodeid] = "skipped"
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            self.reason[report.nodeid] = reason.removeprefix("Skipped: ")
        elif report.when == "call" and report.nodeid not in self.outcome:
            self.outcome[report.nodeid] = "passed"

    def unasked_skips(self) -> list[str]:
        return [nodeid for nodeid, outcome in self.outcome.items()
                if outcome == "skipped" and self.tier.get(nodeid, "unit") in GUARDED_TIERS
                and self.tier[nodeid] not in self.off]

    def pytest_sessionfinish(self, session, exitstatus):
        if exitstatus == pytest.ExitCode.OK and self.unasked_skips():
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if not self.outcome:
            return      # nothing ran (--collect-only, everything deselected)
        counts = collections.defaultdict(collections.Counter)
        for nodeid, outcome in self.outcome.items():
            counts[self.tier.get(nodeid, "unit")][outcome] += 1
        terminalreporter.section("tiers")
        for tier in ("unit", *GUARDED_TIERS):
            count = counts[tier]
            note = f" (switched off by {SKIP_TIERS_VARIABLE})" if tier in self.off else ""
            terminalreporter.write_line(f"{tier:7} {count['passed']:5} passed {count['failed']:5} failed "
                                        f"{count['skipped']:5} skipped {count['xfailed']:5} xfailed{note}")
        unasked = self.unasked_skips()
        if unasked:
            terminalreporter.write_line(f"{len(unasked)} test(s) of a guarded tier skipped without "
                                        f"{SKIP_TIERS_VARIABLE} naming the tier; the run fails:", red=True)
            for nodeid in unasked:
                terminalreporter.write_line(f"  {nodeid}: {self.reason.get(nodeid, '')}", red=True)


def pytest_configure(config):
    config.pluginmanager.register(TierGate(switched_off()), "wgc-tier-gate")
