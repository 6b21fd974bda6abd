"""wgc --proxy against the TUN path and gVisor's netstack, in one run.

The setup of scripts/bench_netstack.py (its far side, servers and clients),
with `wgc --proxy` in namespace near in the netstack client's place (its
key and inner address 10.9.0.2), serving a SOCKS5 proxy on 127.0.0.1:1080
and two TCP forwards: 127.0.0.1:6001 to the far sink, 127.0.0.1:6002 to the
far source.  Clients (scripts/netstack_client.py on the kernel's sockets):

  socks     through the SOCKS5 proxy (-socks 127.0.0.1:1080)
  forward   to the forwards' local ports
  tun       a wgc daemon with a TUN in near, the same loops with no proxy
  gvnet     ../shared/anchors/gvnet-netstack-latest (wireguard-go's netstack
            on gVisor), single connections; left out when the file is missing

One connection each way and --streams at once, --seconds each, --runs times.
The proxy's CPU and RSS count as its clients' (as the near daemon's do for
the TUN path).  The last line: the ratio of the proxy's single-connection
throughput (SOCKS5 and forward, send and recv averaged) to the TUN path's
and to gvnet's.

    python scripts/bench_proxy.py [--runs 3] [--seconds 5] [--streams 8]
"""
import argparse
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_netstack import (
    CLIENT,
    FAR,
    FAR_OUTER,
    GVNET,
    MTU,
    NETSTACK,
    WG_PORT,
    Bench,
    Client,
    Namespaces,
    print_table,
    ratio,
    run_cases,
)

SOCKS_PORT = 1080
FORWARD_OFFSET = 1000        # far port 5001 is forwarded from 6001, 5002 from 6002


def start_proxy(bench: Bench, directory: str):
    key = bench.keys["netstack"][0]
    config = Path(directory) / "proxy.conf"
    config.write_text(textwrap.dedent(f"""\
        [Interface]
        PrivateKey = {key}
        Address = {NETSTACK}/32
        MTU = {MTU}

        [Peer]
        PublicKey = {bench.far_public}
        Endpoint = {FAR_OUTER}:{WG_PORT}
        AllowedIPs = {FAR}/32

        [Socks5]
        BindAddress = 127.0.0.1:{SOCKS_PORT}

        [TCPClientTunnel]
        BindAddress = 127.0.0.1:{5001 + FORWARD_OFFSET}
        Target = {FAR}:5001

        [TCPClientTunnel]
        BindAddress = 127.0.0.1:{5002 + FORWARD_OFFSET}
        Target = {FAR}:5002
        """))
    config.chmod(0o600)
    proxy = bench.near.popen(sys.executable, "-m", "wgc", "--proxy", str(config))
    deadline = time.monotonic() + 30
    while bench.near.run(sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', "
                         f"{SOCKS_PORT}), 1).close()", check=False).returncode:
        if proxy.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the proxy did not start (exit {proxy.poll()})")
        time.sleep(0.2)
    return proxy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--streams", type=int, default=8)
    args = parser.parse_args()
    with_gvnet = GVNET.exists()
    print(f"reference: {GVNET if with_gvnet else f'{GVNET} is missing: gvnet left out'}", flush=True)
    cases = [(client, mode, streams) for client in ("socks", "forward", "tun") for streams in (1, args.streams)
             for mode in ("send", "recv")]
    if with_gvnet:
        cases += [("gvnet", mode, 1) for mode in ("send", "recv")]
    with Namespaces() as factory, tempfile.TemporaryDirectory() as directory:
        bench = Bench(factory, with_gvnet)
        proxy = start_proxy(bench, directory)
        python = [sys.executable, str(CLIENT), "-kernel", "-timeout", "10s"]
        bench.clients["socks"] = Client("socks", [*python, "-socks", f"127.0.0.1:{SOCKS_PORT}"],
                                        companion=proxy.pid)
        bench.clients["forward"] = Client("forward", python, address="127.0.0.1", port_offset=FORWARD_OFFSET,
                                          companion=proxy.pid)
        bench.near.run("ping", "-c", "1", "-W", "5", FAR)
        results, failures = run_cases(bench, cases, args.runs, args.seconds)
        proxy.terminate()
        proxy.wait(10)
    print_table(results, failures, args.runs)
    print("(socks, forward: CPU and RSS are the client's and the proxy's; tun: the client's and the near daemon's)")
    to_tun = (ratio(results, "socks", "tun") + ratio(results, "forward", "tun")) / 2
    line = f"proxy: ratio to the TUN path {to_tun:.2f}"
    if with_gvnet:
        to_gvnet = (ratio(results, "socks", "gvnet") + ratio(results, "forward", "gvnet")) / 2
        line += f", to the gVisor netstack {to_gvnet:.2f}"
    print(line)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
