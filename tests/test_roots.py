"""The executables built in Debian root file systems (`just binary-bullseye`, `just binary-arm64`),
each run inside the root it was built in, against wgc or wireguard-go on the host side.

The bullseye one shows that the x86_64 build runs on glibc 2.31; the arm64 one runs
under qemu-user through binfmt_misc.  Each test copies the built executables from
dist/ into its root and chroots there (with /proc, /sys, /dev and the host's
/run/wireguard mounted in, so the host's wg(8) finds the daemon's control socket).
Behind the roots marker: `just test-roots`.
"""
import base64
import subprocess
import sys
from pathlib import Path

import pytest

import wgc
import wgnet
from wgc._crypto import public_key
from wgnet import have, tunnel

sys.path.insert(0, str(Path(__file__).parent.parent / "packaging"))
from debian_root import BUILDS, FORMS, output, running
from glibc_floor import glibc_floor

pytestmark = [pytest.mark.roots, pytest.mark.netns, pytest.mark.timeout(300)]

ROOTED = ["bullseye-amd64", "bookworm-arm64"]


@pytest.fixture(params=ROOTED)
def rooted(request):
    """{"one-file": command, "one-dir": command}: the executables of a root build, run inside their root."""
    try:
        with running(BUILDS[request.param]) as commands:
            yield commands
    except FileNotFoundError as missing:
        pytest.skip(str(missing))


def run(command: list[str], *args: str, **kw) -> str:
    """The output of command (run outside any namespace); its stderr in the error when it fails."""
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, **kw)
    assert done.returncode == 0, f"{' '.join(command + list(args))} exited {done.returncode}: {done.stderr}"
    return done.stdout


@pytest.mark.parametrize("form", FORMS)
def test_version(rooted, form):
    """Both forms start in the root and name the root's architecture."""
    machine = run([*rooted[form][:2], "uname", "-m"]).strip()
    out = run(rooted[form], "--version")
    assert out.startswith(f"wgc v{wgc.__version__}\n") and f"linux-{machine}" in out, out


def test_genkey_pubkey(rooted):
    """The built-in wg's keys inside the root agree with the host's X25519."""
    private = run(rooted["one-file"], "--wg", "genkey").strip()
    public = run(rooted["one-file"], "--wg", "pubkey", input=private + "\n").strip()
    assert public == base64.b64encode(public_key(base64.b64decode(private))).decode()


@pytest.mark.parametrize("other", ["wgc", "wireguard-go"])
def test_daemon_interop(rooted, netns, monkeypatch, other):
    """The root's wgc daemon in one namespace, the host's wgc or Debian's wireguard-go in
    another: handshake, pings both ways, and the root's own `wgc --wg show` reading its daemon."""
    if not have(other):
        pytest.skip(f"{other} is not installed")
    monkeypatch.setitem(wgnet.IMPLEMENTATIONS, "rooted", rooted["one-file"])
    a, b = tunnel(netns, "rooted", other)
    a.ping(b.inner4)
    b.ping(a.inner4)
    a.ping(b.inner6)
    handshake = a.show("latest-handshakes").split()
    assert handshake[0] == b.public_key and int(handshake[1]) > 0
    shown = a.ns.run(*rooted["one-file"], "--wg", "show", a.iface).stdout
    assert f"peer: {b.public_key}" in shown and "latest handshake:" in shown, shown
    _, rx, tx = a.ns.run(*rooted["one-file"], "--wg", "show", a.iface, "transfer").stdout.split()
    assert int(rx) > 0 and int(tx) > 0


def test_bullseye_glibc_floor():
    """The bullseye build needs nothing newer than bullseye's glibc 2.31."""
    built = output(BUILDS["bullseye-amd64"])
    if not (built / "wgc").exists():
        pytest.skip("bullseye-amd64 is not built (just binary-bullseye)")
    floor = glibc_floor(built / "wgc", built / "wgc-dir")
    major, minor = map(int, floor.removeprefix("glibc ").split("."))
    assert (major, minor) <= (2, 31), floor

