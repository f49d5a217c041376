# What demo.sh and demo-ha.sh share; sourced by them, not run.  The caller
# sets GUEST (the test guest's ELF), AGENTCTL and TLSOPT (its TLS options,
# an array, empty without TLS).

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# demo_agent_ready LOG: wait up to 5 s for the agent's ready line in LOG
# and print it.
demo_agent_ready() {
  for _ in $(seq 100); do grep -q "drover-agent: ready" "$1" && break; sleep 0.05; done
  grep "drover-agent: ready" "$1" | sed 's/^/  /'
}

# demo_start_guests N SOCK: define and start the tiny test guests vm1..vmN
# (128 or 192 MiB, dirtying 5-15 MiB/s) on the agent at unix socket SOCK.
demo_start_guests() {
  local n=$1 sock=$2 g mem rate
  say "guests: $n tiny real guests on host-a, dirtying memory"
  for g in $(seq 1 "$n"); do
    mem=$(( (g % 2) ? 128 : 192 )); rate=$(( 5 + (g % 3) * 5 ))
    echo "{\"name\": \"vm$g\", \"memory_mib\": $mem, \"vcpus\": 1, \"kernel\": \"$GUEST\", \"append\": \"mib=$((mem - 16)) rate=$rate\"}" |
      "$AGENTCTL" -a "unix:$sock" "${TLSOPT[@]}" define - >/dev/null
    "$AGENTCTL" -a "unix:$sock" "${TLSOPT[@]}" start "vm$g" | sed 's/^/  /'
  done
}
