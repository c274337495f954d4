#!/usr/bin/env bash
# startup_reload.sh — issue 2's scale benchmark for prodhcp (prints numbers, asserts nothing).
#
#   sudo bench/startup_reload.sh [LEASES] [RUNS]      (defaults: 10000000 leases, 3 runs)
#
# In its own network namespaces (pbs-srv 198.18.0.1, pbs-cli 198.18.0.2; nothing touches a
# host interface) it:
#   1. builds the release binaries, writes a config with one /8 pool (16,777,214 addresses)
#      reached through relay 198.18.0.2;
#   2. preloads LEASES active leases with `prodhcpctl leases import --format kea-csv`;
#   3. measures exec of prodhcpd → first OFFER on the first start (the table file created);
#      then RUNS times: exec of prodhcpd → first OFFER to a relayed DISCOVER (clean
#      restart after SIGTERM), and once after `kill -9` of the whole daemon (unclean restart);
#   4. measures SIGHUP reload (daemon's own figure and until `status` shows the new generation);
#   5. prints table bytes per pool address and the daemon's memory;
#   6. runs perfdhcp DORA at a fixed rate against a /24 pool and the /8 pool (new clients).
# Everything it starts is killed by PID and its namespaces are removed on exit.
set -euo pipefail
LEASES="${1:-10000000}"
RUNS="${2:-3}"
RATE="${RATE:-3000}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${WORK:-/var/tmp/prodhcp-bench}"
SRV=pbs-srv
CLI=pbs-cli
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

cargo build --release -p prodhcp-supervisor -p prodhcp-ctl --bins --manifest-path "$ROOT/Cargo.toml" >&2
mkdir -p "$WORK"
cleanup
ip netns add $SRV; ip netns add $CLI
ip link add pbs-a type veth peer name pbs-b
ip link set pbs-a netns $SRV; ip link set pbs-b netns $CLI
ip -n $SRV link set pbs-a name lan0; ip -n $CLI link set pbs-b name lan0
ip -n $SRV addr add 198.18.0.1/24 dev lan0; ip -n $CLI addr add 198.18.0.2/24 dev lan0
for ns in $SRV $CLI; do ip -n $ns link set lo up; ip -n $ns link set lan0 up; done

config() { # config FILE POOL-NETWORK POOL-RANGE STATE-DIR
    cat >"$1" <<CFG
(
    state_dir: "$4",
    control_socket: "$4/ctl.sock",
    interfaces: [],
    workers: 0,
    subnets: [
        (
            network: "$2",
            pools: ["$3"],
            lease_time: 86400,
            relays: ["198.18.0.2"],
            options: { "routers": "10.0.0.1", "domain-name-servers": "192.0.2.53" },
        ),
    ],
)
CFG
}

DAEMON_PID=""
start_daemon() { # start_daemon CONFIG LOG
    ip netns exec $SRV "$BIN/prodhcpd" --config "$1" >>"$2" 2>&1 &
    DAEMON_PID=$!
    PIDS+=("$DAEMON_PID")
}
stop_daemon() {
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
}
ctl() { "$BIN/prodhcpctl" --socket "$STATE/ctl.sock" "$@"; }
wait_ready() {
    for _ in $(seq 1 600); do
        ctl --json status >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "daemon did not come up" >&2; return 1
}
# time from exec to first OFFER: the probe starts first and hammers the port every 2 ms
START_S=""
time_start() { # time_start CONFIG LOG  (sets START_S, DAEMON_PID)
    ip netns exec $CLI python3 "$ROOT/bench/probe.py" 198.18.0.1 198.18.0.2 120 >"$WORK/probe.out" &
    local probe=$!
    PIDS+=("$probe")
    sleep 0.3
    local t0; t0=$(date +%s.%N)
    start_daemon "$1" "$2"
    wait "$probe"
    START_S=$(python3 -c "print(f'{float(open(\"$WORK/probe.out\").read()) - $t0:.3f}')")
}

STATE="$WORK/state8"
rm -rf "$STATE"; mkdir -p "$STATE"
config "$WORK/p8.ron" "10.0.0.0/8" "10.0.0.1-10.255.255.254" "$STATE"
CSV="$WORK/leases-$LEASES.csv"
if [ ! -s "$CSV" ]; then
    log "generating $LEASES leases"
    python3 "$ROOT/bench/gen_kea_csv.py" "$LEASES" "$CSV"
fi
# First start: the table file is created (its zeros written and synced to disk).
time_start "$WORK/p8.ron" "$WORK/p8.log"
FIRST_S="$START_S"
wait_ready
log "importing $LEASES leases"
t=$(date +%s.%N)
ctl leases import --format kea-csv "$CSV" >&2
IMPORT_S=$(python3 -c "print(f'{$(date +%s.%N) - $t:.1f}')")
stop_daemon

echo "== prodhcp start-up and reload, /8 pool (16,777,214 addresses), $LEASES leases"
echo "first start (table file created): exec -> first OFFER ${FIRST_S} s"
echo "import: ${IMPORT_S} s ($(python3 -c "print(int($LEASES / $IMPORT_S))") leases/s)"
for i in $(seq 1 "$RUNS"); do
    time_start "$WORK/p8.ron" "$WORK/p8.log"
    echo "clean start $i: exec -> first OFFER ${START_S} s"
    wait_ready
    if [ "$i" -lt "$RUNS" ]; then stop_daemon; fi
done
leased=$(ctl --json stats | python3 -c "import json,sys; print(sum(p['leased'] for p in json.load(sys.stdin)['pools']))")
echo "leases in the table after restarts: $leased"
rss_kb=0
for p in $DAEMON_PID $(pgrep -P "$DAEMON_PID" || true); do
    r=$(awk '/VmRSS/{print $2}' /proc/$p/status 2>/dev/null || echo 0); rss_kb=$((rss_kb + r))
done
echo "resident memory, supervisor + workers: $((rss_kb / 1024)) MiB (pages of the shared table counted once per process that touched them)"

# Reload: the daemon logs its own duration; also time until status reports the new generation.
gen0=$(ctl --json status | python3 -c "import json,sys; print(json.load(sys.stdin)['config_generation'])")
sed -i 's/192.0.2.53/192.0.2.54/' "$WORK/p8.ron"
t=$(date +%s.%N)
kill -HUP "$DAEMON_PID"
while :; do
    g=$(ctl --json status | tr -d ' \n' | grep -o '"config_generation":[0-9]*' | cut -d: -f2)
    [ "$g" != "$gen0" ] && break
done
RELOAD_E2E=$(python3 -c "print(f'{($(date +%s.%N) - $t) * 1000:.1f}')")
RELOAD_US=$(grep -o 'configuration reloaded.*us[^0-9]*[0-9]*' "$WORK/p8.log" | tail -1 | grep -o '[0-9]*$')
echo "SIGHUP reload: ${RELOAD_US} µs inside the daemon; ${RELOAD_E2E} ms until prodhcpctl status showed generation $g (includes prodhcpctl polling)"

# Unclean restart: kill -9 the supervisor (workers follow it through PDEATHSIG).
kill -KILL "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true
sleep 0.5
time_start "$WORK/p8.ron" "$WORK/p8.log"
echo "start after kill -9 of the daemon: exec -> first OFFER ${START_S} s"
wait_ready

size=$(stat -c %s "$STATE/leases.table")
echo "table file: $size bytes = $(python3 -c "print(f'{$size / 16777214:.1f}')") bytes per pool address (/8); rings: $(du -cb "$STATE"/ring-*.dat | tail -1 | cut -f1) bytes"

# Throughput: /8 with the preloaded leases (new clients), then a fresh /24.
daemon_ticks() { # utime+stime of the supervisor and its workers, in clock ticks
    local t=0 p
    for p in $DAEMON_PID $(pgrep -P "$DAEMON_PID" || true); do
        t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0)))
    done
    echo $t
}
perf() { # perf CLIENTS -> "rate drops server-µs-per-lease"
    local t0 t1 out
    t0=$(daemon_ticks)
    out=$(ip netns exec $CLI timeout 60 perfdhcp -4 -l 198.18.0.2 -R "$1" -r "$RATE" -p 10 -d 2 198.18.0.1 2>&1 |
        awk '/^Rate:/{r=$2} /^drops:/{d+=$2} END{print r, d+0}')
    t1=$(daemon_ticks)
    read -r r d <<<"$out"
    echo "$r $d $(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v r="${r:-0}" 'BEGIN { if (r <= 0) r = 1; printf "%.1f", t / hz * 1e6 / (r * 10) }')"
}
read -r r8 d8 c8 <<<"$(perf 16000000)"
echo "perfdhcp DORA at $RATE/s, /8 pool holding $LEASES leases, new clients: ${r8} leases/s, drops ${d8}, server CPU ${c8} µs/lease"
stop_daemon
STATE="$WORK/state24"; rm -rf "$STATE"; mkdir -p "$STATE"
config "$WORK/p24.ron" "10.0.0.0/24" "10.0.0.1-10.0.0.254" "$STATE"
start_daemon "$WORK/p24.ron" "$WORK/p24.log"; wait_ready
read -r r24 d24 c24 <<<"$(perf 250)"
echo "perfdhcp DORA at $RATE/s, /24 pool (250 clients cycling): ${r24} leases/s, drops ${d24}, server CPU ${c24} µs/lease"
stop_daemon
STATE="$WORK/state8b"; rm -rf "$STATE"; mkdir -p "$STATE"
config "$WORK/p8b.ron" "10.0.0.0/8" "10.0.0.1-10.255.255.254" "$STATE"
start_daemon "$WORK/p8b.ron" "$WORK/p8b.log"; wait_ready
read -r r8b d8b c8b <<<"$(perf 16000000)"
echo "perfdhcp DORA at $RATE/s, empty /8 pool, new clients: ${r8b} leases/s, drops ${d8b}, server CPU ${c8b} µs/lease"
stop_daemon
python3 - "$r24" "$r8" "$r8b" "$c24" "$c8" "$c8b" <<'PY'
import sys
r24, r8, r8b, c24, c8, c8b = map(float, sys.argv[1:])
print(f"leases/s  /8 ({'preloaded'}) vs /24: {100 * (r8 - r24) / r24:+.1f} %; empty /8 vs /24: {100 * (r8b - r24) / r24:+.1f} %")
print(f"CPU/lease /8 (preloaded) vs /24: {100 * (c8 - c24) / c24:+.1f} %; empty /8 vs /24: {100 * (c8b - c24) / c24:+.1f} %")
PY
