#!/usr/bin/env bash
# The main job: a demo Drover cluster on this machine.
#
# Three hosts as network namespaces (a bridge, veth links, 10.77.250.1-3),
# a drover-agent in each with TLS and client certificates made here with
# openssl, a drover-coordinator, six tiny real guests (QEMU/TCG, a 15 KB
# kernel that dirties memory) on host-a, then `droverctl evacuate host-a
# --wait` with its live display, and the cluster afterwards.  Everything is
# torn down at the end, also on Ctrl-C or failure.  Without root (no network
# namespaces) it says so and runs the hosts on loopback ports instead.
#
# Usage: tests/scripts/demo.sh [GUESTS]        (default 6)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
n_guests=${1:-6}

bash "$here/tests/scripts/setup.sh" "$here/build" >/dev/null
B=$here/build
GUEST=$B/tests/guest/dirtyguest.elf
AGENT=$B/agent/drover-agent
AGENTCTL=$B/agent/drover-agentctl
COORD=$B/coordinator/drover-coordinator
CTL=$B/coordinator/droverctl

work=$(mktemp -d /tmp/drvdemo.XXXXXX)    # short: guest socket paths must fit
chmod 0711 "$work"   # QEMU (qemu_user) reads its migration TLS credentials below run_dir
pids=()
NS=drvdemo$$
hosts=(a b c)
mode=netns

. "$here/tests/scripts/demo-lib.sh"

cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.3
  for f in "$work"/*/run/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  if [ $mode = netns ]; then
    for h in "${hosts[@]}" sw; do ip netns del "$NS-$h" 2>/dev/null; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" -ne 0 ] || ! ip netns add "$NS-sw" 2>/dev/null; then
  mode=loopback
  echo "drover demo: network namespaces cannot be made here (needs root): running the three hosts on loopback ports instead"
fi

addr_of() { # host index -> agent gRPC address
  if [ $mode = netns ]; then echo "10.77.250.$(( $1 + 1 )):7400"; else echo "127.0.0.1:$(( 17500 + $1 ))"; fi
}

if [ $mode = netns ]; then
  say "network: three hosts as namespaces on one bridge (10.77.250.0/24)"
  ip netns exec "$NS-sw" ip link add br0 type bridge
  ip netns exec "$NS-sw" ip link set br0 up
  for i in 0 1 2; do
    h=${hosts[$i]}
    ip netns add "$NS-$h"
    ip link add "dv$$$i" type veth peer name eth0 netns "$NS-$h"
    ip link set "dv$$$i" netns "$NS-sw"
    ip netns exec "$NS-sw" ip link set "dv$$$i" master br0 up
    ip netns exec "$NS-$h" ip addr add "10.77.250.$((i + 1))/24" dev eth0
    ip netns exec "$NS-$h" ip link set eth0 up
    ip netns exec "$NS-$h" ip link set lo up
    echo "  host-$h  10.77.250.$((i + 1))"
  done

  say "TLS: a CA, a certificate per host (role agent), the coordinator's, one for droverctl (role operator)"
  cd "$work"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=drover demo CA" 2>/dev/null
  cert() { # name san role (docs/security.md, "Who can call what")
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
    printf "subjectAltName=%s,URI:urn:drover:role:%s\nextendedKeyUsage=serverAuth,clientAuth\n" "$2" "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 2 -extfile "$1.ext" 2>/dev/null
  }
  for i in 0 1 2; do cert "host-${hosts[$i]}" "IP:10.77.250.$((i + 1)),IP:127.0.0.1,DNS:localhost" agent; done
  cert coordinator "DNS:localhost,IP:127.0.0.1" coordinator
  cert client "DNS:localhost,IP:127.0.0.1" operator
  cd - >/dev/null
  TLSOPT=(--tls-cert "$work/client.crt" --tls-key "$work/client.key" --tls-ca "$work/ca.crt")
else
  TLSOPT=()
fi

say "agents: one per host"
for i in 0 1 2; do
  h=${hosts[$i]}; d=$work/$h; mkdir -p "$d"
  if [ $mode = netns ]; then
    tls="\"tls\": {\"cert\": \"$work/host-$h.crt\", \"key\": \"$work/host-$h.key\", \"ca\": \"$work/ca.crt\"},"
  else
    tls="\"dev_mode\": true,"
  fi
  cat > "$d/agent.json" <<JSON
{ "host": "host-$h", "state_dir": "$d/state", "run_dir": "$d/run",
  "listen": ["unix:$d/agent.sock", "$(addr_of $i)"], $tls
  "qemu_binary": "$(command -v qemu-system-x86_64)", "accel": "tcg", "log_level": "warning",
  "image_roots": ["$(dirname "$GUEST")"] }
JSON
  if [ $mode = netns ]; then
    ip netns exec "$NS-$h" "$AGENT" --config "$d/agent.json" > "$d/agent.log" 2>&1 &
  else
    "$AGENT" --config "$d/agent.json" > "$d/agent.log" 2>&1 &
  fi
  pids+=($!); disown $!
  demo_agent_ready "$d/agent.log"
done

demo_start_guests "$n_guests" "$work/a/agent.sock"

say "coordinator"
if [ $mode = netns ]; then
  ctls="\"tls\": {\"cert\": \"$work/coordinator.crt\", \"key\": \"$work/coordinator.key\", \"ca\": \"$work/ca.crt\"},"
else
  ctls="\"dev_mode\": true,"
fi
cat > "$work/coordinator.json" <<JSON
{ "listen": ["unix:$work/coordinator.sock"], $ctls "store": "sqlite:$work/coordinator.db",
  "heartbeat_ms": 1000, "log_level": "warning", "max_outgoing": 2, "max_incoming": 2,
  "hosts": [
    { "name": "host-a", "address": "$(addr_of 0)", "memory_mib": 4096, "vcpus": 32, "link_bytes_per_s": 1250000000 },
    { "name": "host-b", "address": "$(addr_of 1)", "memory_mib": 1024, "vcpus": 32, "link_bytes_per_s": 1250000000 },
    { "name": "host-c", "address": "$(addr_of 2)", "memory_mib": 1024, "vcpus": 32, "link_bytes_per_s": 1250000000 } ] }
JSON
if [ $mode = netns ]; then   # it runs beside host-a's agent and reaches the others over the bridge
  ip netns exec "$NS-a" "$COORD" --config "$work/coordinator.json" > "$work/coordinator.log" 2>&1 &
else
  "$COORD" --config "$work/coordinator.json" > "$work/coordinator.log" 2>&1 &
fi
pids+=($!); disown $!
for _ in $(seq 100); do grep -q "drover-coordinator: ready" "$work/coordinator.log" && break; sleep 0.05; done
export DROVER_COORDINATOR="unix:$work/coordinator.sock"
ctl() { "$CTL" "${TLSOPT[@]}" "$@"; }
sleep 1.5
ctl hosts
ctl vms

say "droverctl evacuate host-a --dry-run"
ctl evacuate host-a --dry-run || true

say "droverctl evacuate host-a --wait --maintenance"
ctl evacuate host-a --wait --maintenance
rc=$?

say "afterwards"
ctl hosts
ctl vms
job=$(ctl jobs --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
ctl job "$job" | tail -n 12
echo
echo "agent lock hold maxima on host-b (from its own statistics):"
"$AGENTCTL" -a "unix:$work/b/agent.sock" "${TLSOPT[@]}" stats | grep -E "lock (registry|vm) "
exit $rc
