#!/usr/bin/env bash
# many_subnets_config.sh — issue 10 item 3: what a carrier-size configuration costs prodhcp
# (prints numbers, asserts nothing).
#
#   sudo bench/many_subnets_config.sh [SUBNETS] [ADDRESSES_PER_SUBNET] [RUNS]
#        (defaults 100000 subnets, 52 addresses each = 5.2M addresses, 3 runs)
#
# The configuration is bench/gen_many_subnets.py's carrier.ron: SUBNETS /26 subnets from
# 10.0.0.0, each one pool of ADDRESSES_PER_SUBNET addresses, routers, DNS servers and a domain
# name (seven lines a subnet: ~28 MB, 600k lines at 100,000), the probe's relay mapped to the last
# subnet (the worst case for a linear relay scan). It measures:
#   1. `prodhcpd --check-config`: wall time and peak RSS (/usr/bin/time), RUNS times;
#   2. start with no lease table (the table is created), then RUNS restarts of an existing
#      table: exec → first OFFER to a relayed DISCOVER (bench/probe.py, retrying every 2 ms);
#   3. memory: VmRSS / VmHWM (peak) / RssAnon / RssFile+RssShmem of the supervisor and each
#      worker (the shared lease table's pages count in every process that touched them);
#   4. SIGHUP reload, RUNS times (a subnet's lease time changes, so each is a real change):
#      SIGHUP → `prodhcpctl status` shows the new generation applied (polled every 10 ms), and
#      the daemon's own figure (`last_reload.applied_in_ms`: from reading the file to the last
#      worker's `applied`); memory after the reloads.
# Timings on a shared machine are upper bounds: another process using the CPUs only adds.
#
# Environment: WORK (/var/tmp/prodhcp-many-config), WORKERS (0 = one per CPU), NO_BUILD=1 (use
# target/release as it is), BIN (target/release).
#
# Network safety: namespaces pmscNNNN-srv (198.18.0.1) and pmscNNNN-cli (198.18.0.2), NNNN =
# this script's PID, joined by one veth pair created inside them; no host interface is touched.
# On exit every process this script started is killed by PID, then any process left in the two
# namespaces (by PID), and the namespaces are deleted.
set -euo pipefail
SUBNETS="${1:-100000}"
PER_SUBNET="${2:-52}"
RUNS="${3:-3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${WORK:-/var/tmp/prodhcp-many-config}"
BIN="${BIN:-$ROOT/target/release}"
TAG="pmsc$$"
SRV="$TAG-srv"
CLI="$TAG-cli"
PIDS=()
DAEMON_PID=""

cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.3
    for ns in "$SRV" "$CLI"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
}
trap cleanup EXIT INT TERM
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

if [ "${NO_BUILD:-}" != 1 ]; then
    cargo build --release -p prodhcp-supervisor -p prodhcp-ctl --bins \
        --manifest-path "$ROOT/Cargo.toml" >&2
fi
mkdir -p "$WORK"
ip netns add "$SRV"
ip netns add "$CLI"
ip -n "$SRV" link add lan0 type veth peer name "${TAG}b"
ip -n "$SRV" link set "${TAG}b" netns "$CLI"
ip -n "$CLI" link set "${TAG}b" name lan0
ip -n "$SRV" addr add 198.18.0.1/24 dev lan0
ip -n "$CLI" addr add 198.18.0.2/24 dev lan0
for ns in "$SRV" "$CLI"; do ip -n "$ns" link set lo up; ip -n "$ns" link set lan0 up; done

CFG_DIR="$WORK/cfg"
rm -rf "$CFG_DIR"
log "generating $SUBNETS subnets x $PER_SUBNET addresses"
python3 "$ROOT/bench/gen_many_subnets.py" "$CFG_DIR" --subnets "$SUBNETS" \
    --addresses-per-subnet "$PER_SUBNET" --workers "${WORKERS:-0}" --no-kea >/dev/null
CONF="$CFG_DIR/carrier.ron"
STATE="$CFG_DIR/state-carrier"
SOCK="$STATE/ctl.sock"
LOG="$WORK/prodhcpd.log"
: >"$LOG"
ctl() { "$BIN/prodhcpctl" --socket "$SOCK" "$@"; }
status_field() { # status_field PY-EXPR  (d = the status object)
    ctl --json status 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"
}

echo "== prodhcp with a carrier-size configuration ($(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- . 2>/dev/null || echo '+changes'))"
echo "config: $SUBNETS subnets, $((SUBNETS * PER_SUBNET)) pool addresses, $(stat -c %s "$CONF") bytes, $(wc -l <"$CONF") lines"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) (timings are upper bounds when others use the CPUs)"

for i in $(seq 1 "$RUNS"); do
    out=$( { /usr/bin/time -f '%e %M' "$BIN/prodhcpd" --config "$CONF" --check-config >/dev/null; } 2>&1 | tail -1)
    read -r wall rss <<<"$out"
    echo "check-config $i: ${wall} s wall, peak RSS $((rss / 1024)) MiB"
done

# exec → first OFFER: the probe starts first and repeats its DISCOVER every 2 ms.
START_S=""
time_start() {
    ip netns exec "$CLI" python3 "$ROOT/bench/probe.py" 198.18.0.1 198.18.0.2 300 >"$WORK/probe.out" &
    local probe=$!
    PIDS+=("$probe")
    sleep 0.3
    local t0
    t0=$(date +%s.%N)
    ip netns exec "$SRV" "$BIN/prodhcpd" --config "$CONF" >>"$LOG" 2>&1 &
    DAEMON_PID=$!
    PIDS+=("$DAEMON_PID")
    wait "$probe"
    START_S=$(python3 -c "print(f'{float(open(\"$WORK/probe.out\").read()) - $t0:.2f}')")
}
wait_ready() {
    for _ in $(seq 1 1200); do
        ctl --json status >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "daemon did not come up" >&2
    return 1
}
stop_daemon() {
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
}
memory() { # memory LABEL
    local p role
    for p in $DAEMON_PID $(pgrep -P "$DAEMON_PID" || true); do
        role=worker
        [ "$p" = "$DAEMON_PID" ] && role=supervisor
        awk -v role="$role" -v pid="$p" -v label="$1" '
            /^VmRSS/ {rss=$2} /^VmHWM/ {hwm=$2} /^RssAnon/ {anon=$2} /^RssFile/ {file=$2} /^RssShmem/ {shm=$2}
            END {printf "memory %s: %-10s pid %-7s RSS %5d MiB (peak %5d MiB): anonymous %5d MiB, table/files %5d MiB\n",
                 label, role, pid, rss/1024, hwm/1024, anon/1024, (file+shm)/1024}' "/proc/$p/status"
    done
}

rm -rf "$STATE"
mkdir -p "$STATE"
time_start
echo "first start (lease table created, $((SUBNETS * PER_SUBNET)) slots): exec -> first OFFER ${START_S} s"
wait_ready
echo "table file: $(stat -c %s "$STATE/leases.table") bytes"
for i in $(seq 1 "$RUNS"); do
    stop_daemon
    time_start
    echo "restart $i (table exists): exec -> first OFFER ${START_S} s"
    wait_ready
done
sleep 1
memory "after start"

for i in $(seq 1 "$RUNS"); do
    gen0=$(status_field 'd["config_generation"]')
    # A real change each time: the first subnet's lease time.
    sed -i "0,/lease_time: [0-9]*,/s//lease_time: $((3600 + i)),/" "$CONF"
    t0=$(date +%s.%N)
    kill -HUP "$DAEMON_PID"
    g="$gen0"
    for _ in $(seq 1 6000); do
        g=$(status_field 'd["config_generation"]' || echo "$gen0")
        [ "$g" != "$gen0" ] && break
        sleep 0.01
    done
    t1=$(date +%s.%N)
    msg=$(status_field 'd["last_reload"]["message"]')
    ms=$(status_field 'd["last_reload"].get("applied_in_ms")')
    echo "SIGHUP reload $i: $(python3 -c "print(f'{$t1 - $t0:.3f}')") s until status showed generation $g; daemon: ${ms} ms (\"$msg\")"
done
memory "after $RUNS reloads"
if ! ip netns exec "$CLI" python3 "$ROOT/bench/probe.py" 198.18.0.1 198.18.0.2 10 >/dev/null; then
    echo "no OFFER after the reloads"
fi
stop_daemon
