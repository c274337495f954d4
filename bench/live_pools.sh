#!/usr/bin/env bash
# live_pools.sh — issue 10's live pool change at carrier scale (prints numbers, asserts nothing).
#
#   sudo bench/live_pools.sh [LEASES] [RATE]     (defaults: 10000000 leases, 2000 new clients/s)
#
# In its own namespaces (plp-srv 198.18.0.1; plp-cli 198.18.0.2 and 198.18.0.3; nothing touches
# a host interface):
#   1. release build; a /8 pool reached through relay 198.18.0.2; LEASES leases imported;
#   2. `dhcpperf dora` at RATE new clients/s through 198.18.0.2 for the whole change;
#   3. SIGHUP adding a subnet 100.64.0.0/16 with its /16 pool, reached through relay 198.18.0.3:
#      a probe relaying DISCOVERs from 198.18.0.3 every 2 ms since before the SIGHUP times
#      SIGHUP → first OFFER from the new pool; the daemon's own log gives the table change
#      (µs) and "applied by every worker" (µs);
#   4. SIGHUP removing it again (same timings from the log);
#   5. dhcpperf's report of the load that ran across both changes (sent, answered, missed).
# Everything it starts is killed by PID and its namespaces are removed on exit.
set -euo pipefail
LEASES="${1:-10000000}"
RATE="${2:-2000}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${WORK:-/var/tmp/prodhcp-live-pools}"
SRV=plp-srv
CLI=plp-cli
BIN="$ROOT/target/release"
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.3
    for ns in $SRV $CLI; do
        for p in $(ip netns pids $ns 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
        ip netns del $ns 2>/dev/null || true
    done
}
trap cleanup EXIT
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -p prodhcp-supervisor -p prodhcp-ctl -p dhcpperf --bins \
        --manifest-path "$ROOT/Cargo.toml" >&2
fi
mkdir -p "$WORK"
cleanup
ip netns add $SRV; ip netns add $CLI
ip link add plp-a type veth peer name plp-b
ip link set plp-a netns $SRV; ip link set plp-b netns $CLI
ip -n $SRV link set plp-a name lan0; ip -n $CLI link set plp-b name lan0
ip -n $SRV addr add 198.18.0.1/24 dev lan0
ip -n $CLI addr add 198.18.0.2/24 dev lan0; ip -n $CLI addr add 198.18.0.3/24 dev lan0
for ns in $SRV $CLI; do ip -n $ns link set lo up; ip -n $ns link set lan0 up; done

STATE="$WORK/state"
config() { # config FILE WITH-NEW-SUBNET(0|1)
    {
        cat <<CFG
(
    state_dir: "$STATE",
    control_socket: "$STATE/ctl.sock",
    interfaces: [],
    workers: 0,
    subnets: [
        (
            network: "10.0.0.0/8",
            pools: ["10.0.0.1-10.255.255.254"],
            lease_time: 86400,
            relays: ["198.18.0.2"],
            options: { "routers": "10.0.0.1" },
        ),
CFG
        if [ "$2" = 1 ]; then
            cat <<CFG
        (
            network: "100.64.0.0/16",
            pools: ["100.64.0.1-100.64.255.254"],
            lease_time: 86400,
            relays: ["198.18.0.3"],
            options: { "routers": "100.64.0.1" },
        ),
CFG
        fi
        echo "    ],"
        echo ")"
    } >"$1"
}
rm -rf "$STATE"; mkdir -p "$STATE"
config "$WORK/base.ron" 0
config "$WORK/added.ron" 1
cp "$WORK/base.ron" "$WORK/live.ron"
ctl() { "$BIN/prodhcpctl" --socket "$STATE/ctl.sock" "$@"; }
wait_ready() {
    for _ in $(seq 1 1200); do
        ctl --json status >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "daemon did not come up" >&2; return 1
}
ip netns exec $SRV "$BIN/prodhcpd" --config "$WORK/live.ron" >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!; PIDS+=("$DAEMON_PID")
wait_ready
CSV="$WORK/leases-$LEASES.csv"
if [ ! -s "$CSV" ]; then
    log "generating $LEASES leases"
    python3 "$ROOT/bench/gen_kea_csv.py" "$LEASES" "$CSV"
fi
log "importing $LEASES leases"
ctl leases import --format kea-csv "$CSV" >&2
leased=$(ctl --json stats | python3 -c "import json,sys; print(sum(p['leased'] for p in json.load(sys.stdin)['pools']))")
echo "== live pool change, commit $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo -dirty), $(nproc) CPUs"
echo "table: $leased leases in the /8; file $(stat -c %s "$STATE/leases.table") bytes"

gen() { ctl --json status | tr -d ' \n' | grep -o '"config_generation":[0-9]*' | cut -d: -f2; }
reload_to() { # reload_to CONFIG -> prints ms until status shows the next generation
    local g0 t
    g0=$(gen)
    cp "$1" "$WORK/live.ron"
    t=$(date +%s.%N)
    kill -HUP "$DAEMON_PID"
    while [ "$(gen)" = "$g0" ]; do sleep 0.005; done
    python3 -c "print(f'{($(date +%s.%N) - $t) * 1000:.1f}')"
}

SECS=14
log "load: dhcpperf dora at $RATE/s for ${SECS} s through 198.18.0.2"
ip netns exec $CLI "$BIN/dhcpperf" dora --server 198.18.0.1 --relay-ip 198.18.0.2 --rate "$RATE" \
    --duration "${SECS}s" --seed 77 --hard-deadline 120s --json >"$WORK/load.json" 2>"$WORK/load.err" &
LOAD=$!; PIDS+=("$LOAD")
sleep 3
ip netns exec $CLI python3 "$ROOT/bench/probe.py" 198.18.0.1 198.18.0.3 30 >"$WORK/probe.out" &
PROBE=$!; PIDS+=("$PROBE")
sleep 0.5
t_hup=$(date +%s.%N)
add_ms=$(reload_to "$WORK/added.ron")
wait "$PROBE" || true
first_offer=$(python3 -c "print(f'{(float(open(\"$WORK/probe.out\").read() or 0) - $t_hup) * 1000:.1f}')")
sleep 4
remove_ms=$(reload_to "$WORK/base.ron")
wait "$LOAD" || true

echo "add a /16 subnet+pool: SIGHUP -> first OFFER from it ${first_offer} ms; -> status shows the generation ${add_ms} ms"
echo "remove it again: SIGHUP -> status shows the generation ${remove_ms} ms"
echo "daemon log (verbatim):"
grep -E 'pool layout changed live|configuration reloaded' "$WORK/daemon.log" | sed 's/^/    /'
echo "load across both changes (dhcpperf --json, phase 0):"
python3 - "$WORK/load.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = r["phases"][0]
keys = ["clients", "missed_pct", "counts", "rate_achieved", "sent_rate"]
print("    " + json.dumps({k: p[k] for k in keys if k in p}))
PY
