"""The newcomer's demo (`just demo`) really pings through a wgc tunnel and cleans up."""
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).parent.parent / "scripts" / "demo.sh"


@pytest.mark.netns
def test_demo_pings_and_cleans_up():
    out = subprocess.run(["bash", str(DEMO)], capture_output=True, text=True, timeout=60,
                         env={"PYTHON": sys.executable, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "3 packets transmitted, 3 received" in out.stdout
    assert "latest handshake" in out.stdout
    # Its own namespaces (wgcdemo-*) are gone; others' (tests running beside it) are not its business.
    after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "wgcdemo-" not in after
