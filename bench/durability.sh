#!/usr/bin/env bash
# durability.sh — issue 7 (defect 8): what `durability: "power"` costs against "process"
# (prints numbers, asserts nothing).
#
#   sudo bench/durability.sh [POOL_NETWORK] [POOL_RANGE] [COUNT] [ROUNDS]
#        defaults: 10.0.0.0/8  10.0.0.1-10.255.255.254  1000000  2
#   small check:  sudo bench/durability.sh 10.0.0.0/16 10.0.0.1-10.0.255.254 20000 1
#
# In its own network namespaces (pbd<PID>-srv 198.18.0.1, pbd<PID>-cli 198.18.0.2 as the relay; nothing
# touches a host interface) it:
#   1. builds the release binaries and creates one lease table per mode under $WORK (a /8
#      table is about 1.3 GB; it is created once per mode and reused by later rounds);
#   2. for each round, runs the two modes back to back (power, then process), each on a fresh
#      daemon: `dhcpperf dora` of COUNT new clients at RATE (default 0 = as fast as WINDOW
#      outstanding exchanges allow); every round uses new client MACs (seed = round + 10);
#   3. prints per mode and round: leases/s, DISCOVER→OFFER and REQUEST→ACK p50/p99, and the
#      disk the table lives on.
# RATE=0 measures capacity (p99 then includes queueing behind WINDOW outstanding exchanges);
# RATE=N (new clients per second, below both capacities) measures the latency cost at that load.
# Everything it starts is killed by PID and its namespaces are removed on exit.
set -euo pipefail
NET="${1:-10.0.0.0/8}"
RANGE="${2:-10.0.0.1-10.255.255.254}"
COUNT="${3:-1000000}"
ROUNDS="${4:-2}"
RATE="${RATE:-0}"
WINDOW="${WINDOW:-2000}"
WORKERS="${WORKERS:-0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${WORK:-/var/tmp/prodhcp-durability}"
SRV=pbd$$-srv
CLI=pbd$$-cli
BIN="$ROOT/target/release"
DAEMON_PID=""

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

cleanup() {
    if [ -n "$DAEMON_PID" ]; then kill -TERM "$DAEMON_PID" 2>/dev/null || true; fi
    sleep 0.3
    for ns in $SRV $CLI; do
        for p in $(ip netns pids $ns 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
        ip netns del $ns 2>/dev/null || true
    done
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)" >&2; exit 2; }
cargo build --release -p prodhcp-supervisor -p prodhcp-ctl -p dhcpperf --bins --manifest-path "$ROOT/Cargo.toml" >&2
mkdir -p "$WORK"
cleanup
ip netns add $SRV; ip netns add $CLI
ip link add pbd$$a type veth peer name pbd$$b
ip link set pbd$$a netns $SRV; ip link set pbd$$b netns $CLI
ip -n $SRV link set pbd$$a name lan0; ip -n $CLI link set pbd$$b name lan0
ip -n $SRV addr add 198.18.0.1/24 dev lan0; ip -n $CLI addr add 198.18.0.2/24 dev lan0
for ns in $SRV $CLI; do ip -n $ns link set lo up; ip -n $ns link set lan0 up; done

config() { # config FILE STATE-DIR MODE
    cat >"$1" <<CFG
(
    state_dir: "$2",
    control_socket: "$2/ctl.sock",
    interfaces: [],
    workers: $WORKERS,
    durability: "$3",
    subnets: [
        (
            network: "$NET",
            pools: ["$RANGE"],
            lease_time: 86400,
            relays: ["198.18.0.2"],
            options: { "routers": "198.18.0.1" },
        ),
    ],
)
CFG
}

wait_ready() { # wait_ready STATE-DIR
    for _ in $(seq 1 600); do
        if "$BIN/prodhcpctl" --socket "$1/ctl.sock" --json status 2>/dev/null \
            | jq -e '.workers | length > 0 and all(.state == "running")' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "prodhcpd did not become ready (log: $1/prodhcpd.log)" >&2
    exit 1
}

printf '%-8s %-5s %12s %10s %10s %10s %10s %8s\n' mode round leases/s "D→O p50" "D→O p99" "R→A p50" "R→A p99" missed%
for round in $(seq 1 "$ROUNDS"); do
    for mode in power process; do
        state="$WORK/$mode"
        mkdir -p "$state"
        cfg="$WORK/$mode.ron"
        config "$cfg" "$state" "$mode"
        ip netns exec $SRV "$BIN/prodhcpd" --config "$cfg" >>"$state/prodhcpd.log" 2>&1 &
        DAEMON_PID=$!
        wait_ready "$state"
        out="$WORK/$mode-$round.json"
        ip netns exec $CLI "$BIN/dhcpperf" dora --server 198.18.0.1 --relay-ip 198.18.0.2 \
            --rate "$RATE" --window "$WINDOW" --count "$COUNT" --seed "$((round + 10))" \
            --duration 600s --hard-deadline 900s --json >"$out" || true
        kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" || true; DAEMON_PID=""
        jq -r --arg m "$mode" --arg r "$round" '.phases[-1] as $p | [$m, $r,
            ($p.leases_per_s | floor),
            ($p.latency.discover_offer.p50_ms // "-"), ($p.latency.discover_offer.p99_ms // "-"),
            ($p.latency.request_ack.p50_ms // "-"), ($p.latency.request_ack.p99_ms // "-"),
            $p.missed_pct] | @tsv' "$out" \
            | awk -F'\t' '{ printf "%-8s %-5s %12s %10s %10s %10s %10s %8s\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
    done
done
log "table disk: $(df -T "$WORK" | awk 'NR==2 { print $1, $2 }'); raw reports in $WORK/*.json"
