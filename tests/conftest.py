import pytest

from netns import Netns, have_root


@pytest.fixture
def netns():
    """Factory for namespaces that are all removed when the test ends."""
    made: list[Netns] = []

    def make(prefix: str = "wgcns") -> Netns:
        ns = Netns(prefix)
        made.append(ns)
        return ns

    yield make
    for ns in reversed(made):
        ns.close()


def pytest_collection_modifyitems(config, items):
    if have_root():
        return
    skip = pytest.mark.skip(reason="needs root, /dev/net/tun and iproute2 for network namespaces")
    for item in items:
        if "netns" in item.keywords:
            item.add_marker(skip)
