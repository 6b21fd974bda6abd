"""packaging/Containerfile and Containerfile.proxy built and run by a real engine
(Debian's podman, tests/podman.py), as the README tells users to.

The daemon's image runs with only `--cap-add NET_ADMIN --device /dev/net/tun` and
is configured from outside: with the built-in wg through `podman exec`, and with
the host's Debian wg through the container's /var/run/wireguard bind-mounted.  Its
peer is a wgc daemon on the host side, in a namespace the test makes and cables
to the container's: the container joins a namespace the test made
(`--network ns:`), so all traffic stays inside test namespaces.  `podman stop`
(SIGTERM to wgc as PID 1) must end it with status 0, its interface and socket gone.
The proxy's image runs as its user with every capability dropped, no device and
a read-only root, and serves SOCKS5 through a tunnel to a wgc daemon with a TUN.

Behind the `container` marker (`just container-test`), which builds the one-file
executable and the base root file system the images need.
"""
import os
import subprocess
import textwrap

import pytest

import podman as engine_module
import webserver
from netns import unique_name, veth, wait_for
from proxy_site import FAR4, Site
from wgnet import new_key, start_daemon

pytestmark = [pytest.mark.container, pytest.mark.netns]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAEMON_IMAGE, PROXY_IMAGE = "localhost/wgc-test:daemon", "localhost/wgc-test:proxy"
ONLY_TUN = ("--cap-add", "NET_ADMIN", "--device", "/dev/net/tun")
PROXY_USER = 65534          # Containerfile.proxy's USER
HTTP_PORT = 8080
BODY = "through the container\n"


@pytest.fixture(scope="module")
def podman():
    why = engine_module.missing()
    if why:
        pytest.fail(why)
    if not os.path.exists(os.path.join(ROOT, "dist", "wgc")):
        pytest.fail("no dist/wgc to put in the image (just binary)")
    engine = engine_module.Podman()
    try:
        engine.import_base()
        engine.build("packaging/Containerfile", DAEMON_IMAGE, ROOT)
        engine.build("packaging/Containerfile.proxy", PROXY_IMAGE, ROOT)
        yield engine
    finally:
        engine.close()


@pytest.fixture
def containers(podman, netns):
    """Names for this test's containers; each is removed when the test ends, before
    the namespaces it joined (this fixture is set up after netns, so torn down first)."""
    names: list[str] = []

    def name() -> str:
        names.append(unique_name("wgcc"))
        return names[-1]

    yield name
    for made in names:
        podman("rm", "--force", "--time", "0", made, check=False)


def run_detached(podman, name: str, ns, *options: str) -> None:
    podman("run", "--detach", "--name", name, "--network", f"ns:/run/netns/{ns.name}", *options)


def in_network_of(podman, name: str, *command: str) -> None:
    """Runs a host command in a container's network namespace (nsenter by the container's PID)."""
    pid = podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
    subprocess.run(["nsenter", "--target", pid, "--net", *command], check=True, timeout=30)


def host_wg(sockets: str, *args: str) -> subprocess.CompletedProcess:
    """Debian's wg on the host, its /var/run/wireguard being the container's (a
    private mount namespace binds the container's directory over it)."""
    os.makedirs("/var/run/wireguard", exist_ok=True)
    script = 'mount --bind "$0" /var/run/wireguard && exec wg "$@"'
    command = ["unshare", "--mount", "sh", "-c", script, sockets, *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_daemon_image_serves_a_tunnel_configured_from_outside_and_stops_cleanly(podman, netns, containers, tmp_path):
    host, inside = netns("wgch"), netns("wgcn")
    cable_host, cable_inside = veth(host, inside)
    subnet = 1 + os.getpid() % 250
    host.run("ip", "addr", "add", f"192.168.{subnet}.1/24", "dev", cable_host)
    inside.run("ip", "addr", "add", f"192.168.{subnet}.2/24", "dev", cable_inside)
    host_iface, iface = unique_name("wgh"), unique_name("wgk")
    host_key, host_public = new_key()
    key, public = new_key()
    start_daemon(host, "wgc", host_iface)
    sockets = str(tmp_path)
    name = containers()
    run_detached(podman, name, inside, *ONLY_TUN, "--volume", f"{sockets}:/var/run/wireguard",
                 DAEMON_IMAGE, iface)
    socket = os.path.join(sockets, f"{iface}.sock")
    wait_for(lambda: os.path.exists(socket) or podman.state(name)[0] != "running", timeout=20,
             what="the container's control socket")
    assert os.path.exists(socket), podman("logs", name).stderr

    # The container's end, from outside, as the Containerfile's comment says: a wg(8) configuration
    # through podman exec to the image's wg (the built-in), the addresses with the host's ip in the
    # container's network namespace, entered by its PID (the image has no ip).
    podman("exec", "--interactive", name, "wg", "setconf", iface, "/dev/stdin", input=textwrap.dedent(f"""\
        [Interface]
        PrivateKey = {key}
        ListenPort = 51822

        [Peer]
        PublicKey = {host_public}
        Endpoint = 192.168.{subnet}.1:51821
        AllowedIPs = 10.77.0.1/32
        """))
    in_network_of(podman, name, "ip", "addr", "add", "10.77.0.2/24", "dev", iface)
    in_network_of(podman, name, "ip", "link", "set", iface, "up")
    host.run("wg", "set", host_iface, "private-key", "/dev/stdin", "listen-port", "51821",
             "peer", public, "endpoint", f"192.168.{subnet}.2:51822", "allowed-ips", "10.77.0.2/32",
             input=host_key + "\n")
    host.run("ip", "addr", "add", "10.77.0.1/24", "dev", host_iface)
    host.run("ip", "link", "set", host_iface, "up")

    host.run("ping", "-c", "3", "-i", "0.2", "-W", "2", "10.77.0.2")
    inside.run("ping", "-c", "3", "-i", "0.2", "-W", "2", "10.77.0.1")
    handshake = podman("exec", name, "wg", "show", iface, "latest-handshakes").stdout.split()
    assert handshake[0] == host_public and int(handshake[1]) > 0
    # Debian's wg uses the same socket from the host: the peer's traffic both ways, and a change
    # that the image's wg then shows.
    _, received, sent = host_wg(sockets, "show", iface, "transfer").stdout.split()
    assert int(received) > 0 and int(sent) > 0
    assert host_wg(sockets, "show", iface, "public-key").stdout.strip() == public
    host_wg(sockets, "set", iface, "peer", host_public, "persistent-keepalive", "25")
    assert podman("exec", name, "wg", "show", iface, "persistent-keepalive").stdout.split() == [host_public, "25"]

    podman("stop", name, timeout=30)          # SIGTERM, then SIGKILL after 10 s (exit 137)
    assert podman.state(name) == ("exited", 0), podman("logs", name).stderr
    assert not os.path.exists(socket)
    assert inside.run("ip", "link", "show", iface, check=False).returncode != 0
    assert "Traceback" not in podman("logs", name).stderr


@pytest.mark.parametrize(("options", "named"), [
    (("--cap-add", "NET_ADMIN"), "/dev/net/tun"),
    (("--device", "/dev/net/tun"), "CAP_NET_ADMIN"),
])
def test_daemon_image_without_tun_or_net_admin_says_which(podman, netns, containers, options, named):
    name = containers()
    proc = podman("run", "--name", name, "--network", f"ns:/run/netns/{netns('wgcn').name}", *options,
                  DAEMON_IMAGE, unique_name("wgk"), check=False)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], proc.stderr




def test_proxy_image_unprivileged_serves_socks5_through_a_tunnel(podman, netns, containers, tmp_path):
    site = Site(netns, "wgc")
    name = containers()
    try:
        far = site.far_python(webserver.SCRIPT, FAR4, str(HTTP_PORT), BODY)
        assert far.stdout.readline().strip() == "listening", far.stderr.read()
        config = str(tmp_path / "proxy.conf")
        with open(config, "w") as f:
            f.write(site.interface_section() + "\n[Socks5]\nBindAddress = 127.0.0.1:1080\n")
        os.chmod(config, 0o600)
        os.chown(config, PROXY_USER, PROXY_USER)
        run_detached(podman, name, site.near, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "all",
                     "--security-opt", "no-new-privileges", "--volume", f"{config}:/etc/wgc/proxy.conf:ro",
                     PROXY_IMAGE)

        def fetch() -> subprocess.CompletedProcess:
            return site.near.run("curl", "--silent", "--show-error", "--max-time", "5", "--socks5",
                                 "127.0.0.1:1080", f"http://{FAR4}:{HTTP_PORT}/", check=False, timeout=15)

        wait_for(lambda: fetch().returncode == 0 or podman.state(name)[0] != "running", timeout=30,
                 interval=0.2, what="SOCKS5 through the proxy's container")
        assert fetch().stdout == BODY, podman("logs", name).stderr

        status = podman("exec", name, "cat", "/proc/1/status").stdout
        fields = dict(line.split(":", 1) for line in status.splitlines())
        assert fields["Uid"].split()[:2] == [str(PROXY_USER)] * 2
        for capabilities in ("CapEff", "CapPrm", "CapBnd"):
            assert int(fields[capabilities], 16) == 0, (capabilities, fields[capabilities])
        assert podman("exec", name, "test", "-e", "/dev/net/tun", check=False).returncode == 1
        shown = podman("exec", name, "wgc", "--wg", "show", "proxy", "latest-handshakes").stdout.split()
        assert shown[0] == site.far_public and int(shown[1]) > 0

        podman("stop", name, timeout=30)
        assert podman.state(name) == ("exited", 0), podman("logs", name).stderr
        assert "Traceback" not in podman("logs", name).stderr
    finally:
        site.close()


def test_daemon_image_wg_and_wg_quick_are_wgc(podman):
    """The image has no wireguard-tools: its wg and wg-quick are wgc itself, run under those names."""
    found = podman("run", "--rm", "--network", "none", "--entrypoint", "sh", DAEMON_IMAGE, "-c",
                   'readlink -f "$(command -v wg)" "$(command -v wg-quick)"').stdout.split()
    assert found == ["/usr/local/bin/wgc"] * 2
