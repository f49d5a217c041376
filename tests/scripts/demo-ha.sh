#!/usr/bin/env bash
# The HA demo: a coordinator fails over in the middle of an evacuation.
#
# Five hosts as network namespaces on one bridge (10.77.251.1-5): hosts a,
# b, c run a drover-agent and an etcd member each (three members, TLS with
# client certificates on the client and peer links), hosts d and e run a
# drover-coordinator each, both on the etcd store (docs/ha.md).  A few tiny
# real guests (QEMU/TCG) start on host-a, `droverctl evacuate host-a` runs
# with its live display, the leader gets kill -9 mid-way, and the standby
# takes over and finishes the job; droverctl, given both coordinators'
# addresses, follows the leader.  Everything is torn down at the end, also
# on Ctrl-C or failure.  Needs root (network namespaces).
#
# Usage: tests/scripts/demo-ha.sh [GUESTS]        (default 6)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
n_guests=${1:-6}

if [ "$(id -u)" -ne 0 ]; then
  echo "drover HA demo: needs root (network namespaces for five hosts)" >&2
  exit 1
fi
bash "$here/tests/scripts/setup.sh" "$here/build" >/dev/null
B=$here/build
GUEST=$B/tests/guest/dirtyguest.elf
AGENT=$B/agent/drover-agent
AGENTCTL=$B/agent/drover-agentctl
COORD=$B/coordinator/drover-coordinator
CTL=$B/coordinator/droverctl
NET=10.77.251

work=$(mktemp -d /tmp/drvha.XXXXXX)      # short: guest socket paths must fit
chmod 0711 "$work"   # QEMU (qemu_user) reads its migration TLS credentials below run_dir
NS=drvha$$
hosts=(a b c d e)
pids=()

. "$here/tests/scripts/demo-lib.sh"

cleanup() {
  set +e
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  for h in "${hosts[@]}"; do   # whatever still runs in a host (QEMUs, etcd)
    for p in $(ip netns pids "$NS-$h" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  done
  sleep 0.2
  for h in "${hosts[@]}" sw; do ip netns del "$NS-$h" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() { local h=$1; shift; ip netns exec "$NS-$h" "$@"; }
ip_of() { echo "$NET.$(( $1 + 1 ))"; }

say "network: five hosts as namespaces on one bridge ($NET.0/24)"
ip netns add "$NS-sw"
in_ns sw ip link add br0 type bridge
in_ns sw ip link set br0 up
for i in 0 1 2 3 4; do
  h=${hosts[$i]}
  ip netns add "$NS-$h"
  ip link add "dh$$$i" type veth peer name eth0 netns "$NS-$h"
  ip link set "dh$$$i" netns "$NS-sw"
  in_ns sw ip link set "dh$$$i" master br0 up
  in_ns "$h" ip addr add "$(ip_of $i)/24" dev eth0
  in_ns "$h" ip link set eth0 up
  in_ns "$h" ip link set lo up
done
echo "  host-a, host-b, host-c: an agent and an etcd member each ($(ip_of 0), $(ip_of 1), $(ip_of 2))"
echo "  host-d, host-e: a coordinator each ($(ip_of 3), $(ip_of 4))"

say "TLS: one CA for Drover (agents, coordinators, droverctl), one for etcd"
cd "$work"
ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$1.key" -out "$1.crt" \
         -days 2 -subj "/CN=$1" 2>/dev/null; }
cert() { # ca name san [role]
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$2.key" -out "$2.csr" \
    -subj "/CN=$2" 2>/dev/null
  printf "subjectAltName=%s%s\nextendedKeyUsage=serverAuth,clientAuth\n" "$3" "${4:+,URI:urn:drover:role:$4}" > "$2.ext"
  openssl x509 -req -in "$2.csr" -CA "$1.crt" -CAkey "$1.key" -CAcreateserial -out "$2.crt" -days 2 \
    -extfile "$2.ext" 2>/dev/null
}
ca ca
ca etcd-ca
for i in 0 1 2; do
  cert ca "host-${hosts[$i]}" "IP:$(ip_of $i),IP:127.0.0.1,DNS:localhost" agent
  cert etcd-ca "etcd-$i" "IP:$(ip_of $i)"
done
cert ca coordinator "IP:$(ip_of 3),IP:$(ip_of 4),IP:127.0.0.1,DNS:localhost" coordinator
cert ca client "DNS:localhost" operator
cert etcd-ca etcd-client "DNS:etcd-client"
cd - >/dev/null
TLSOPT=(--tls-cert "$work/client.crt" --tls-key "$work/client.key" --tls-ca "$work/ca.crt")

say "etcd: three members (m0-m2 on hosts a-c), TLS on client and peer links"
initial=""
for i in 0 1 2; do initial+="${initial:+,}m$i=https://$(ip_of $i):2380"; done
for i in 0 1 2; do
  h=${hosts[$i]}; ip=$(ip_of $i)
  in_ns "$h" etcd --name "m$i" --data-dir "$work/etcd-$i" \
    --listen-client-urls "https://$ip:2379" --advertise-client-urls "https://$ip:2379" \
    --listen-peer-urls "https://$ip:2380" --initial-advertise-peer-urls "https://$ip:2380" \
    --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token "$NS" \
    --cert-file "$work/etcd-$i.crt" --key-file "$work/etcd-$i.key" --trusted-ca-file "$work/etcd-ca.crt" \
    --client-cert-auth --peer-cert-file "$work/etcd-$i.crt" --peer-key-file "$work/etcd-$i.key" \
    --peer-trusted-ca-file "$work/etcd-ca.crt" --peer-client-cert-auth --log-level warn --logger zap \
    > "$work/etcd-$i.log" 2>&1 &
  pids+=($!); disown $!
done
endpoints="$(ip_of 0):2379,$(ip_of 1):2379,$(ip_of 2):2379"
etcdctl_() {
  in_ns a env ETCDCTL_API=3 etcdctl --endpoints "https://${endpoints//,/,https://}" --cacert "$work/etcd-ca.crt" \
    --cert "$work/etcd-client.crt" --key "$work/etcd-client.key" --dial-timeout=2s --command-timeout=3s "$@"
}
for _ in $(seq 100); do etcdctl_ endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
etcdctl_ endpoint status -w table

say "agents: one per host a, b, c"
for i in 0 1 2; do
  h=${hosts[$i]}; d=$work/$h; mkdir -p "$d"
  cat > "$d/agent.json" <<JSON
{ "host": "host-$h", "state_dir": "$d/state", "run_dir": "$d/run",
  "listen": ["unix:$d/agent.sock", "$(ip_of $i):7400"],
  "tls": {"cert": "$work/host-$h.crt", "key": "$work/host-$h.key", "ca": "$work/ca.crt"},
  "qemu_binary": "$(command -v qemu-system-x86_64)", "accel": "tcg", "log_level": "warning",
  "image_roots": ["$(dirname "$GUEST")"] }
JSON
  in_ns "$h" "$AGENT" --config "$d/agent.json" > "$d/agent.log" 2>&1 &
  pids+=($!); disown $!
  demo_agent_ready "$d/agent.log"
done

demo_start_guests "$n_guests" "$work/a/agent.sock"

say "coordinators: host-d and host-e, one store on etcd, one leader"
for k in 3 4; do
  h=${hosts[$k]}; d=$work/$h; mkdir -p "$d"
  cat > "$d/coordinator.json" <<JSON
{ "listen": ["unix:$d/coordinator.sock", "$(ip_of $k):7500"], "advertise": "$(ip_of $k):7500",
  "tls": {"cert": "$work/coordinator.crt", "key": "$work/coordinator.key", "ca": "$work/ca.crt"},
  "store": "etcd:$endpoints",
  "etcd": {"cert": "$work/etcd-client.crt", "key": "$work/etcd-client.key", "ca": "$work/etcd-ca.crt",
           "prefix": "/drover", "lease_ttl_s": 3},
  "heartbeat_ms": 1000, "log_level": "info", "max_outgoing": 2, "max_incoming": 2,
  "hosts": [
    { "name": "host-a", "address": "$(ip_of 0):7400", "memory_mib": 4096, "vcpus": 32, "link_bytes_per_s": 1250000000 },
    { "name": "host-b", "address": "$(ip_of 1):7400", "memory_mib": 1024, "vcpus": 32, "link_bytes_per_s": 1250000000 },
    { "name": "host-c", "address": "$(ip_of 2):7400", "memory_mib": 1024, "vcpus": 32, "link_bytes_per_s": 1250000000 } ] }
JSON
  in_ns "$h" "$COORD" --config "$d/coordinator.json" > "$d/coordinator.log" 2>&1 &
  pids+=($!); disown $!
  for _ in $(seq 200); do grep -q "drover-coordinator: ready" "$d/coordinator.log" && break; sleep 0.05; done
  sleep 1   # d campaigns first: it leads, e waits as the standby
done
# droverctl runs on host-a and knows both coordinators
export DROVER_COORDINATOR="$(ip_of 3):7500,$(ip_of 4):7500"
ctl() { in_ns a "$CTL" "${TLSOPT[@]}" "$@"; }
leader_addr() { etcdctl_ get --prefix /drover/leader/ -w fields 2>/dev/null |
                awk -F'"' '/"CreateRevision"/ {split($0, a, " : "); rev=a[2]} /"Value"/ {print rev, $4}' |
                sort -n | head -1 | cut -d' ' -f2; }
leader=$(leader_addr)
echo "  the leader, as etcd has it: $leader"
grep -hE "election: (leading|standby)" "$work/d/coordinator.log" "$work/e/coordinator.log" | sed 's/^/  /' | head -6
sleep 1
ctl hosts

say "droverctl evacuate host-a, then kill -9 of the leader ($leader) mid-way"
job=$(ctl evacuate host-a --bandwidth 32 --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["job"]["id"])')
echo "  job $job"
( sleep 4
  lh=d; [ "$leader" = "$(ip_of 4):7500" ] && lh=e
  printf '\n\033[1;31m>> kill -9 of the leader on host-%s (%s) at %s\033[0m\n' "$lh" "$leader" "$(date -u +%T.%3N)"
  kill -9 $(ip netns pids "$NS-$lh") ) &   # the coordinator is all that runs there
killer=$!
# the live display; when the leader dies under it, droverctl says "lost the
# coordinator; following the job on ADDR" and follows it on the other one
set +e
ctl watch "$job"
rc=$?
set -e
wait $killer 2>/dev/null || true

say "afterwards"
echo "  the leader now, as etcd has it: $(leader_addr)"
grep -hE "lead|fenced|resum" "$work/d/coordinator.log" "$work/e/coordinator.log" | sed 's/^/  /' | tail -8
ctl hosts
ctl vms
ctl job "$job" | tail -n 16
exit $rc
