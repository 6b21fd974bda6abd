#!/usr/bin/env bash
# A wgc tunnel between two network namespaces: ping across it, show it, tear it down.
set -euo pipefail
PYTHON=${PYTHON:-python3}
left=wgcdemo-l$$ right=wgcdemo-r$$
wl=wgdl$$ wr=wgdr$$

cleanup() {
    ip netns del "$left" 2>/dev/null || true
    ip netns del "$right" 2>/dev/null || true
    rm -f "/var/run/wireguard/$wl.sock" "/var/run/wireguard/$wr.sock"
}
trap cleanup EXIT

ip netns add "$left"
ip netns add "$right"
ip link add vdl$$ netns "$left" type veth peer name vdr$$ netns "$right"
ip -n "$left" addr add 192.168.241.1/24 dev vdl$$
ip -n "$right" addr add 192.168.241.2/24 dev vdr$$
for ns in "$left" "$right"; do ip -n "$ns" link set lo up; done
ip -n "$left" link set vdl$$ up
ip -n "$right" link set vdr$$ up

key_l=$(wg genkey) key_r=$(wg genkey)
ip netns exec "$left" "$PYTHON" -m wgc "$wl"
ip netns exec "$right" "$PYTHON" -m wgc "$wr"
ip netns exec "$left" wg set "$wl" private-key <(echo "$key_l") listen-port 51820 \
    peer "$(echo "$key_r" | wg pubkey)" endpoint 192.168.241.2:51820 allowed-ips 10.66.0.2/32
ip netns exec "$right" wg set "$wr" private-key <(echo "$key_r") listen-port 51820 \
    peer "$(echo "$key_l" | wg pubkey)" endpoint 192.168.241.1:51820 allowed-ips 10.66.0.1/32
ip -n "$left" addr add 10.66.0.1/24 dev "$wl"
ip -n "$right" addr add 10.66.0.2/24 dev "$wr"
ip -n "$left" link set "$wl" up
ip -n "$right" link set "$wr" up

ip netns exec "$left" ping -c 3 -i 0.2 -W 2 10.66.0.2
echo
ip netns exec "$left" wg show "$wl"
