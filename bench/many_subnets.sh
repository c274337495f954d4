#!/usr/bin/env bash
# many_subnets.sh — issue 10 item 1's benchmark: relayed DORA against 100,000 subnets, beside
# the 2-subnet configuration, same rates, same run (prints numbers, asserts nothing).
#
#   sudo bench/many_subnets.sh [SUBNETS]        (default 100000)
#
# Configurations (bench/gen_many_subnets.py):
#   few   10.128.0.0/9 mapped to the relay 198.18.0.2, and the lab /24: every client by giaddr
#   many  SUBNETS /26 subnets from 10.0.0.0 (52 pool addresses each), then the same /9 and /24
#         (listed last). dhcpperf spreads its clients over all SUBNETS /26s with RFC 3527 link
#         selection (option 82.5 = 10.0.0.1 + (client % SUBNETS) × 64; giaddr stays the relay),
#         so every request needs a subnet lookup among SUBNETS + 2 networks.
# For each round (RUNS, default 1) and configuration: a fresh lease table, prodhcpd (workers:
# WORKERS, default 0 = one per CPU) started and waited for (bench/probe.py), then for each rate
# in RATES (default "2000 5000 10000 15000 20000": the fixed rates and a sweep) one
# `dhcpperf dora` of DURATION s (default 10) with a seed of its own (new clients every step).
# Reported per step: offered rate (as dhcpperf measured its sending), leases/s answered, missed
# % (no ACK within dhcpperf's timeout), p99 of DISCOVER→ACK, and server CPU per lease: utime +
# stime of the supervisor and every child (/proc/PID/stat) after minus before, over the ACKs.
# At the end: many vs few at each rate. On 2 shared cores the generator competes with the
# server, and other load on the machine only adds: the CPU figures are upper bounds.
#
# Both configurations run with durability "$DURABILITY" (default "process", as bench/compare.sh:
# "power" adds an msync per batch, about a third of a core at 2,000/s here, the same for both).
# Environment: WORK (/var/tmp/prodhcp-many-subnets), RATES, DURATION, RUNS, WORKERS, DURABILITY,
# NO_BUILD=1 (use target/release as it is), BIN (target/release).
#
# Network safety: namespaces pmsbNNNN-srv (198.18.0.1) and pmsbNNNN-cli (198.18.0.2), NNNN =
# this script's PID, joined by one veth pair created inside them; no host interface is touched;
# pool and link-selection addresses are only written into packets, never sent to. On exit every
# process this script started is killed by PID, then any process left in the two namespaces (by
# PID), and the namespaces are deleted.
set -euo pipefail
SUBNETS="${1:-100000}"
RATES="${RATES:-2000 5000 10000 15000 20000}"
DURATION="${DURATION:-10}"
RUNS="${RUNS:-1}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${WORK:-/var/tmp/prodhcp-many-subnets}"
BIN="${BIN:-$ROOT/target/release}"
TAG="pmsb$$"
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
    cargo build --release -p prodhcp-supervisor -p prodhcp-ctl -p dhcpperf --bins \
        --manifest-path "$ROOT/Cargo.toml" >&2
fi
if ! "$BIN/dhcpperf" dora --help | grep -q -- --link-selection-base; then
    echo "$BIN/dhcpperf has no --link-selection-base (issue 10's dhcpperf is needed)" >&2
    exit 2
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

CFG="$WORK/cfg"
rm -rf "$CFG"
log "generating the configurations ($SUBNETS subnets)"
python3 "$ROOT/bench/gen_many_subnets.py" "$CFG" --subnets "$SUBNETS" --workers "${WORKERS:-0}" \
    --durability "${DURABILITY:-process}" \
    --no-kea >/dev/null

server_ticks() { # utime+stime of the supervisor and its children, in clock ticks
    local t=0 p
    for p in $DAEMON_PID $(pgrep -P "$DAEMON_PID" || true); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}

RESULTS="$WORK/results.tsv"
printf 'round\tconfig\trate\toffered\tleases_per_s\tmissed_pct\tp99_ms\tcpu_us_per_lease\n' >"$RESULTS"
echo "== relayed DORA, $SUBNETS /26 subnets + /9 (many) vs the /9 alone (few); commit $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- . 2>/dev/null || echo '+changes')"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); $DURATION s per step"
seed=1
for round in $(seq 1 "$RUNS"); do
    for name in few many; do
        conf="$CFG/$name.ron"
        state="$CFG/state-$name"
        rm -rf "$state"
        mkdir -p "$state"
        t0=$(date +%s.%N)
        ip netns exec "$CLI" python3 "$ROOT/bench/probe.py" 198.18.0.1 198.18.0.2 300 >"$WORK/probe.out" &
        probe=$!
        PIDS+=("$probe")
        ip netns exec "$SRV" "$BIN/prodhcpd" --config "$conf" >"$WORK/$name.log" 2>&1 &
        DAEMON_PID=$!
        PIDS+=("$DAEMON_PID")
        if ! wait "$probe"; then
            echo "$name: no OFFER"
            tail -5 "$WORK/$name.log"
            exit 1
        fi
        echo "$name: first OFFER $(python3 -c "print(f'{float(open(\"$WORK/probe.out\").read()) - $t0:.2f}')") s after exec"
        # A new table's pages are touched by a background child after start, and the
        # supervisor scrubs the whole table: their CPU would land in the first steps' figures.
        # Wait (bounded) until the server's processes use < 4 % of a core over 0.5 s, and the
        # first scrub pass is done.
        for _ in $(seq 1 240); do
            a=$(server_ticks); sleep 0.5; b=$(server_ticks)
            [ $((b - a)) -le $(( $(getconf CLK_TCK) / 50 )) ] && break
        done
        for _ in $(seq 1 600); do
            passes=$("$BIN/prodhcpctl" --socket "$state/ctl.sock" --json status 2>/dev/null |
                python3 -c "import json,sys; s=json.load(sys.stdin)['scrub']; print(s['passes'] if s['state']=='idle' else 0)" 2>/dev/null || echo 0)
            [ "${passes:-0}" -ge 1 ] && break
            sleep 0.2
        done
        sleep 1
        link=()
        if [ "$name" = many ]; then
            link=(--link-selection-base 10.0.0.1 --link-selection-step 64 --link-selection-count "$SUBNETS")
        fi
        for rate in $RATES; do
            seed=$((seed + 1))
            c0=$(server_ticks)
            ip netns exec "$CLI" timeout $((DURATION + 60)) "$BIN/dhcpperf" dora --server 198.18.0.1 \
                --relay-ip 198.18.0.2 --rate "$rate" --duration "${DURATION}s" --seed "$seed" \
                "${link[@]}" --json >"$WORK/$name-$rate.json" 2>"$WORK/$name-$rate.err" || true
            c1=$(server_ticks)
            python3 - "$WORK/$name-$rate.json" "$round" "$name" "$rate" "$c0" "$c1" "$(getconf CLK_TCK)" >>"$RESULTS" <<'PY'
import json, sys
f, rnd, name, rate, c0, c1, hz = sys.argv[1:]
try:
    p = json.load(open(f))["phases"][0]
except Exception as e:
    print(f"{rnd}\t{name}\t{rate}\t-\t-\t-\t-\t-")
    sys.exit()
acks = p["counts"]["acks"]
cpu = (int(c1) - int(c0)) / int(hz)
print(f"{rnd}\t{name}\t{rate}\t{p['offered_rate']:.0f}\t{p['leases_per_s']:.0f}\t{p['missed_pct']:.2f}\t"
      f"{p['latency']['dora']['p99_ms']}\t{cpu / acks * 1e6 if acks else 0:.1f}")
PY
            tail -1 "$RESULTS" | awk -F'\t' '{printf "%s: rate %s/s: offered %s/s, %s leases/s, missed %s %%, p99 %s ms, server CPU %s us/lease\n", $2, $3, $4, $5, $6, $7, $8}'
        done
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    done
done

echo
python3 - "$RESULTS" <<'PY'
import csv, sys, statistics
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def med(name, rate, key):
    v = [float(r[key]) for r in rows if r["config"] == name and r["rate"] == rate and r[key] not in ("-", "")]
    return statistics.median(v) if v else None
print("| offered/s | few: leases/s | many: leases/s | many/few | few: CPU µs/lease | many: CPU µs/lease | many/few |")
print("|---|---|---|---|---|---|---|")
for rate in dict.fromkeys(r["rate"] for r in rows):
    fl, ml = med("few", rate, "leases_per_s"), med("many", rate, "leases_per_s")
    fc, mc = med("few", rate, "cpu_us_per_lease"), med("many", rate, "cpu_us_per_lease")
    ratio = lambda a, b: f"{100 * (b - a) / a:+.1f} %" if a and b is not None else "-"
    fmt = lambda v: "-" if v is None else f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    print(f"| {rate} | {fmt(fl)} | {fmt(ml)} | {ratio(fl, ml)} | {fmt(fc)} | {fmt(mc)} | {ratio(fc, mc)} |")
PY
echo "(medians over $RUNS round(s); raw rows in $RESULTS)"
