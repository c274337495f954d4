#!/usr/bin/env bash
# scrub.sh — issue 7's scrub benchmark: how long a background scrub of the lease table takes,
# and what it does to DISCOVER→OFFER latency while it runs. Prints numbers; asserts nothing
# beyond "the runs happened".
#
#   sudo bench/scrub.sh                           # /8 pool, 10,000,000 leases (the issue's case)
#   sudo PREFIX=16 LEASES=30000 RATE=1000 DURATION=10 bench/scrub.sh    # small-scale check
#
# Steps (namespaces pscrNNNN-srv 198.18.0.1 and pscrNNNN-cli 198.18.0.2, joined by one veth pair
# created inside them; nothing touches a host interface; NNNN = this script's PID):
#   1. builds prodhcpd, prodhcpctl and dhcpperf (release; NO_BUILD=1 uses BIN as it is);
#   2. creates a table for 10.0.0.0/PREFIX and imports LEASES leases (bench/gen_kea_csv.py,
#      `prodhcpctl leases import --format kea-csv`), like bench/startup_reload.sh;
#   3. idle: starts prodhcpd with `scrub_interval: 0`, waits for the pass after start to finish
#      with no load (its duration is the scrub time), then runs `dhcpperf dora` at RATE for
#      DURATION s with no scrub running: p99 DISCOVER→OFFER idle;
#   4. scrub: restarts prodhcpd with `scrub_interval: 1` (a pass right after start, then one every
#      second after the previous one ends), starts `dhcpperf dora` (new clients, another seed)
#      right when the daemon answers, at the same RATE for DURATION s: p99 DISCOVER→OFFER while
#      the scrub runs. `prodhcpctl status` is sampled once a second during both loads (the same
#      sampling in the idle run, so its CPU weighs on both) to report the share of samples in
#      which a pass was running (on a /8 the first pass covers the whole
#      load; on a small table passes repeat every second and the share is small — the
#      p99 comparison is only meaningful when that share is high).
#
# Knobs: PREFIX (8), LEASES (10000000), RATE (2000), DURATION (20), WORKERS (0 = one per core),
# DURABILITY ("power", the server's default; "process" takes the per-batch msync out of the
# latency, so what the scrub adds shows), BIN (target/release), WORK
# (/var/tmp/prodhcp-scrub-bench), NO_BUILD=1.
# Every load is bounded (dhcpperf --duration/--hard-deadline, timeout); on exit every process this
# script started is killed by PID, then any left in its namespaces, and the namespaces are deleted.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/target/release}"
PREFIX="${PREFIX:-8}"
LEASES="${LEASES:-10000000}"
RATE="${RATE:-2000}"
DURATION="${DURATION:-20}"
WORKERS="${WORKERS:-0}"
WORK="${WORK:-/var/tmp/prodhcp-scrub-bench}"
TAG="pscr$$"
SRV="$TAG-srv"
CLI="$TAG-cli"
SRV_IP=198.18.0.1
CLI_IP=198.18.0.2
STARTED=()

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
    local p ns
    set +e
    for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 0.5
    for p in "${STARTED[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for ns in "$SRV" "$CLI"; do
        ip netns list 2>/dev/null | awk '{print $1}' | grep -qx -- "$ns" || continue
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        for _ in $(seq 1 50); do [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break; sleep 0.1; done
        ip netns del "$ns" 2>/dev/null
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, port 67)"
case "$PREFIX" in 8 | 12 | 16 | 20) ;; *) die "PREFIX must be 8, 12, 16 or 20" ;; esac
if [ "${NO_BUILD:-0}" != 1 ]; then
    log "building prodhcpd, prodhcpctl, dhcpperf (release)"
    cargo build --release -p prodhcp-supervisor -p prodhcp-ctl -p dhcpperf --manifest-path "$ROOT/Cargo.toml" >&2
fi
for b in prodhcpd prodhcpctl dhcpperf; do [ -x "$BIN/$b" ] || die "$BIN/$b missing"; done

mkdir -p "$WORK"
STATE="$WORK/state$PREFIX"
rm -rf "$STATE"
mkdir -p "$STATE"
ip netns add "$SRV"
ip netns add "$CLI"
ip link add "$TAG-a" type veth peer name "$TAG-b"
ip link set "$TAG-a" netns "$SRV"
ip link set "$TAG-b" netns "$CLI"
ip -n "$SRV" link set "$TAG-a" name lan0
ip -n "$CLI" link set "$TAG-b" name lan0
ip -n "$SRV" addr add "$SRV_IP/24" dev lan0
ip -n "$CLI" addr add "$CLI_IP/24" dev lan0
for ns in "$SRV" "$CLI"; do ip -n "$ns" link set lo up; ip -n "$ns" link set lan0 up; done

LAST=$(python3 -c "import ipaddress; print(ipaddress.ip_network('10.0.0.0/$PREFIX').broadcast_address - 1)")
config() { # config SCRUB_INTERVAL
    cat >"$WORK/scrub.ron" <<CFG
(
    state_dir: "$STATE",
    control_socket: "$STATE/ctl.sock",
    interfaces: [],
    workers: $WORKERS,
    log_level: "info",
    scrub_interval: $1,
    durability: "${DURABILITY:-power}",
    subnets: [
        (
            network: "10.0.0.0/$PREFIX",
            pools: ["10.0.0.1-$LAST"],
            lease_time: 86400,
            relays: ["$CLI_IP"],
            options: { "routers": "10.0.0.1" },
        ),
    ],
)
CFG
}

DAEMON=""
start_daemon() {
    ip netns exec "$SRV" "$BIN/prodhcpd" --config "$WORK/scrub.ron" >>"$WORK/prodhcpd.log" 2>&1 &
    DAEMON=$!
    STARTED+=("$DAEMON")
    for _ in $(seq 1 600); do
        ctl --json status >/dev/null 2>&1 && return 0
        kill -0 "$DAEMON" 2>/dev/null || die "prodhcpd exited; see $WORK/prodhcpd.log"
        sleep 0.05
    done
    die "prodhcpd did not come up"
}
stop_daemon() {
    kill -TERM "$DAEMON" 2>/dev/null || true
    wait "$DAEMON" 2>/dev/null || true
}
ctl() { "$BIN/prodhcpctl" --socket "$STATE/ctl.sock" "$@"; }
status_field() { # status_field PYTHON-EXPR-ON-s
    ctl --json status | python3 -c "import json,sys; s=json.load(sys.stdin)['scrub']; print($1)"
}
DORA=""
dora() { # dora SEED OUT  (sets DORA to its PID)
    ip netns exec "$CLI" timeout $((DURATION + 60)) "$BIN/dhcpperf" dora --server "$SRV_IP" \
        --relay-ip "$CLI_IP" --rate "$RATE" --duration "${DURATION}s" --seed "$1" \
        --hard-deadline "$((DURATION + 30))s" --json >"$2" 2>"$2.err" &
    DORA=$!
    STARTED+=("$DORA")
}
p99_of() { # p99_of JSON -> "p99_do_ms p50_do_ms offers failed_discover"
    python3 - "$1" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))["phases"][0]
do = (p.get("latency") or {}).get("discover_offer") or {}
c = p.get("counts", {})
print(do.get("p99_ms"), do.get("p50_ms"), c.get("offers", 0), c.get("failed_discover", 0))
PY
}

# load_sampling_status SEED OUT: runs `dora` and, in both runs alike (so the sampling's own CPU
# — a prodhcpctl and a python3 each time — weighs on both), samples the scrub state once a
# second; sets `running` and `samples`.
load_sampling_status() {
    dora "$1" "$2"
    local p=$DORA st
    running=0
    samples=0
    while kill -0 "$p" 2>/dev/null; do
        st=$(status_field "s['state']" 2>/dev/null || echo "?")
        samples=$((samples + 1))
        [ "$st" = running ] && running=$((running + 1))
        sleep 1
    done
    wait "$p" || true
}

# 2. preload
config 0
start_daemon
if [ "$LEASES" -gt 0 ]; then
    CSV="$WORK/leases-$LEASES-$PREFIX.csv"
    [ -s "$CSV" ] || python3 "$ROOT/bench/gen_kea_csv.py" "$LEASES" "$CSV" --prefix "$PREFIX"
    log "importing $LEASES leases into 10.0.0.0/$PREFIX"
    ctl leases import --format kea-csv "$CSV" >&2
fi
stop_daemon

# 3. idle
log "idle run: waiting for the pass after start (no load)"
start_daemon
deadline=$((SECONDS + 3600))
until [ "$(status_field "s['passes']")" -ge 1 ]; do
    [ $SECONDS -lt $deadline ] || die "the scrub pass did not finish within an hour"
    sleep 0.2
done
SCRUB_MS=$(status_field "s['last_pass']['duration_ms']")
SCRUB_SLOTS=$(status_field "s['last_pass']['counts']['slots_checked']")
SCRUB_DAMAGED=$(status_field "s['last_pass']['counts']['damaged']")
log "idle run: dhcpperf dora $RATE/s for $DURATION s"
load_sampling_status 11 "$WORK/idle.json"
IDLE_RUNNING=$running
IDLE_SAMPLES=$samples
read -r IDLE_P99 IDLE_P50 IDLE_OFFERS IDLE_FAILED <<<"$(p99_of "$WORK/idle.json")"
stop_daemon

# 4. during the scrub
config 1
start_daemon
log "scrub run: dhcpperf dora $RATE/s for $DURATION s while the scrub runs"
load_sampling_status 12 "$WORK/scrub.json"
PASSES=$(status_field "s['passes']")
LAST_MS=$(status_field "(s['last_pass'] or {}).get('duration_ms')")
read -r LOAD_P99 LOAD_P50 LOAD_OFFERS LOAD_FAILED <<<"$(p99_of "$WORK/scrub.json")"
stop_daemon

echo "== prodhcp background scrub, 10.0.0.0/$PREFIX, $LEASES leases, workers $WORKERS ($(nproc) cores), durability ${DURABILITY:-power}"
echo "scrub pass with no load: ${SCRUB_MS} ms for ${SCRUB_SLOTS} slots (damaged ${SCRUB_DAMAGED})"
echo "scrub passes under load: ${PASSES} finished during/after the run, last took ${LAST_MS} ms; a pass was running in ${running} of ${samples} status samples taken during the load (idle run: ${IDLE_RUNNING} of ${IDLE_SAMPLES})"
echo "dhcpperf dora ${RATE}/s, ${DURATION} s, idle:        DISCOVER→OFFER p50 ${IDLE_P50} ms, p99 ${IDLE_P99} ms (offers ${IDLE_OFFERS}, failed ${IDLE_FAILED})"
echo "dhcpperf dora ${RATE}/s, ${DURATION} s, during scrub: DISCOVER→OFFER p50 ${LOAD_P50} ms, p99 ${LOAD_P99} ms (offers ${LOAD_OFFERS}, failed ${LOAD_FAILED})"
