#!/usr/bin/env bash
# The live demo (root): set up, build a network namespace joined to this one by a veth pair
# (10.203.0.1/24 + fd00:203::1/64 here, .2 / ::2 in the namespace), run `flowscope live` on our
# end, drive a short mix of real traffic (TCP with data and a clean close, a refused connection,
# a half-open SYN, UDP request/response, ICMP echo, TCP and UDP over IPv6, VLAN-tagged frames),
# stop the sensor with SIGINT and print its ended flows as flowscope's table. Everything it creates is removed
# on exit. Takes ~10 s after set-up.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
if [[ $EUID -ne 0 ]]; then
    echo "demo: run as root (it creates a network namespace and attaches BPF programs)" >&2
    exit 2
fi
bash scripts/setup.sh

ns="fsdemo$$"
veth="fsdemo$$a"
peer="fsdemo$$b"
work="$(mktemp -d)"
sensor_pid=""
server_pid=""

cleanup() {
    [[ -n "$sensor_pid" ]] && kill -INT "$sensor_pid" 2>/dev/null && wait "$sensor_pid" 2>/dev/null
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null
    ip link del "$veth" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip link add "$veth" type veth peer name "$peer" netns "$ns"
ip addr add 10.203.0.1/24 dev "$veth"
ip addr add fd00:203::1/64 dev "$veth" nodad
ip link set "$veth" up
ip -n "$ns" addr add 10.203.0.2/24 dev "$peer"
ip -n "$ns" addr add fd00:203::2/64 dev "$peer" nodad
ip -n "$ns" link set "$peer" up
ip -n "$ns" link set lo up
# one packet per segment, as the wire would carry them
ethtool -K "$veth" gso off tso off gro off >/dev/null 2>&1 || true
ip netns exec "$ns" ethtool -K "$peer" gso off tso off gro off >/dev/null 2>&1 || true

echo "demo: flowscope live -i $veth" >&2
.venv/bin/flowscope live -i "$veth" --format table -o "$work/flows.txt" \
    2> >(tee "$work/sensor.err" >&2) &
sensor_pid=$!
for _ in $(seq 100); do  # compile + load + attach: a few seconds at most
    grep -q "Tracking flows" "$work/sensor.err" 2>/dev/null && break
    kill -0 "$sensor_pid" 2>/dev/null || { echo "demo: the sensor did not start" >&2; exit 1; }
    sleep 0.2
done

ip netns exec "$ns" timeout 20 .venv/bin/python scripts/live_traffic.py serve \
    10.203.0.2 fd00:203::2 > "$work/server.out" &
server_pid=$!
for _ in $(seq 50); do grep -q ready "$work/server.out" 2>/dev/null && break; sleep 0.1; done
echo "demo: driving traffic (TCP, bulk, reset, refused TCP, half-open SYN, UDP, fragments, ICMP, IPv6, VLAN)" >&2
timeout 20 .venv/bin/python scripts/live_traffic.py drive 10.203.0.2 fd00:203::2 "$veth"
wait "$server_pid" || true
server_pid=""

kill -INT "$sensor_pid"
wait "$sensor_pid" || true
sensor_pid=""
echo >&2
cat "$work/flows.txt"
