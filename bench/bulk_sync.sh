#!/usr/bin/env bash
# bulk_sync.sh — issue 8: bulk sync of a large table to a new standby while the active serves.
#
# A (a /8, `replication: "sync"`) is started alone and told `prodhcpctl ha partner-down` (a
# first appliance whose peer is not installed yet), LEASES leases are imported into it, and
# `dhcpperf dora` runs against it at RATE/s for DURATION s. LOAD_BEFORE s into the load, B
# starts with an empty table: A walks its whole table to B in chunks while it keeps serving,
# then ships the ring tail. Printed: the import time, the time from B's start to A seeing B
# `in-sync` (and A's own bulk-sync log lines), A's answered rate per second before, during
# and after the bulk sync (dhcpperf's timeline), and `dhcpperf verify` of every ACK against
# B's table once B caught up. Asserts nothing.
#
#   sudo bench/bulk_sync.sh                         # 10,000,000 leases
#   sudo LEASES=1000000 RATE=1000 bench/bulk_sync.sh
#
# Knobs: LEASES (10000000), RATE (2000), DURATION (150), LOAD_BEFORE (5), WORKERS (2),
# OUT (/var/tmp/prodhcp-bulk-sync), NO_BUILD=1.
#
# Network safety: namespaces pbulkNNNN-{a,b,cli} (NNNN = this script's PID): veth a:lan0 ↔
# cli:lan0 (198.18.0.1 / 198.18.0.2, DHCP), veth a:sync0 ↔ b:sync0 (198.18.2.1 / 198.18.2.2,
# replication). No host interface is touched; the load is bounded; on exit every process
# started here is killed by PID, the namespaces deleted and the two /8 tables removed.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LEASES=${LEASES:-10000000}
RATE=${RATE:-2000}
DURATION=${DURATION:-150}
LOAD_BEFORE=${LOAD_BEFORE:-5}
WORKERS=${WORKERS:-2}
OUT=${OUT:-/var/tmp/prodhcp-bulk-sync}
BIN="$ROOT/target/release"
TAG="pbulk$$"
NS_A="$TAG-a" NS_B="$TAG-b" NS_CLI="$TAG-cli"
A_IP=198.18.0.1 CLI_IP=198.18.0.2 A_SYNC=198.18.2.1 B_SYNC=198.18.2.2

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (network namespaces, port 67)"

WORK="$OUT/work"
STARTED=()
cleanup() {
    local p ns
    for p in "${STARTED[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for ns in "$NS_A" "$NS_B" "$NS_CLI"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    # Two /8 tables are ~3 GB on disk: keep the logs only.
    rm -rf "$WORK/a/state" "$WORK/b/state" "$WORK/leases.csv"
}
trap cleanup EXIT

if [ -z "${NO_BUILD:-}" ]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -q -p prodhcp-supervisor -p prodhcp-ctl -p dhcpperf)
fi
for b in prodhcpd prodhcpctl dhcpperf; do [ -x "$BIN/$b" ] || die "$BIN/$b missing"; done

for ns in "$NS_A" "$NS_B" "$NS_CLI"; do
    ip netns add "$ns"
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip -n "$ns" link set lo up
done
ip -n "$NS_A" link add lan0 type veth peer name lan0 netns "$NS_CLI"
ip -n "$NS_A" link add sync0 type veth peer name sync0 netns "$NS_B"
ip -n "$NS_A" addr add "$A_IP/24" dev lan0
ip -n "$NS_CLI" addr add "$CLI_IP/24" dev lan0
ip -n "$NS_A" addr add "$A_SYNC/24" dev sync0
ip -n "$NS_B" addr add "$B_SYNC/24" dev sync0
for l in "$NS_A lan0" "$NS_CLI lan0" "$NS_A sync0" "$NS_B sync0"; do
    set -- $l
    ip -n "$1" link set "$2" up
done

rm -rf "$WORK"
mkdir -p "$WORK"
KEY="$WORK/cluster.key"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$KEY"
echo >>"$KEY"
chmod 600 "$KEY"

config() { # config DIR NODE LISTEN
    mkdir -p "$1/state"
    cat >"$1/prodhcp.ron" <<EOF
(
    state_dir: "$1/state",
    control_socket: "$1/state/ctl.sock",
    interfaces: [],
    workers: $WORKERS,
    log_level: "info",
    durability: "process",
    cluster: (name: "bulk", node: "$2", listen: "$3:647",
        peers: [(node: "a", address: "$A_SYNC:647"), (node: "b", address: "$B_SYNC:647")],
        key_file: "$KEY", replication: "sync"),
    subnets: [
        (
            network: "10.0.0.0/8",
            pools: ["10.0.0.1-10.255.255.254"],
            lease_time: 86400,
            relays: ["$CLI_IP"],
            options: { "routers": "10.0.0.1" },
        ),
    ],
)
EOF
}
ctl() { "$BIN/prodhcpctl" --socket "$1/state/ctl.sock" "${@:2}"; }
start_node() { # start_node NS DIR -> pid
    ip netns exec "$1" "$BIN/prodhcpd" --config "$2/prodhcp.ron" >"$2/server.log" 2>&1 &
    local p=$!
    STARTED+=("$p")
    echo "$p"
}
wait_ctl() {
    local i
    for i in $(seq 1 600); do ctl "$1" status >/dev/null 2>&1 && return 0; sleep 0.05; done
    return 1
}
ha_field() { # ha_field DIR PY-EXPR(d)
    ctl "$1" --json ha status 2>/dev/null | python3 -c "
import json, sys
try:
    d = json.load(sys.stdin); d = d.get('data', d)
    b = next((p for p in d.get('peers', []) if p.get('node') == 'b'), {})
    print($2)
except Exception:
    print('?')"
}

log "commit $(git -C "$ROOT" describe --always --dirty); $(nproc) cores; $LEASES leases; load $RATE/s"
config "$WORK/a" a "$A_SYNC"
config "$WORK/b" b "$B_SYNC"
start_node "$NS_A" "$WORK/a" >/dev/null
wait_ctl "$WORK/a" || die "A did not start: $(tail -5 "$WORK/a/server.log")"
for _ in $(seq 1 100); do [ "$(ha_field "$WORK/a" "d['role']")" = waiting ] && break; sleep 0.05; done
ctl "$WORK/a" ha partner-down >&2

log "generating $LEASES leases"
python3 "$ROOT/bench/gen_kea_csv.py" "$LEASES" "$WORK/leases.csv" --prefix 8
t0=$(date +%s.%N)
ctl "$WORK/a" --timeout 3600 --json leases import --format kea-csv "$WORK/leases.csv" >"$WORK/import.json"
t1=$(date +%s.%N)
rm -f "$WORK/leases.csv"
log "import: $(python3 -c "print('%.1f s' % ($t1 - $t0))") ($(python3 -c "import json; d = json.load(open('$WORK/import.json')); print(d.get('data', d).get('imported', '?'))") leases)"

log "load: dhcpperf dora $RATE/s for $DURATION s; B starts after $LOAD_BEFORE s"
ip netns exec "$NS_CLI" timeout $((DURATION + 120)) "$BIN/dhcpperf" dora --server "$A_IP" \
    --relay-ip "$CLI_IP" --rate "$RATE" --duration "${DURATION}s" --seed 9 \
    --hard-deadline "$((DURATION + 90))s" --record "$WORK/acks.jsonl" --json \
    >"$WORK/dora.json" 2>"$WORK/dora.err" &
LOAD=$!
STARTED+=("$LOAD")
load_t0=$(date +%s.%N)
sleep "$LOAD_BEFORE"
b_t0=$(date +%s.%N)
start_node "$NS_B" "$WORK/b" >/dev/null
wait_ctl "$WORK/b" || die "B did not start: $(tail -5 "$WORK/b/server.log")"
b_ready=$(date +%s.%N)
log "B answers its control socket $(python3 -c "print('%.1f s' % ($b_ready - $b_t0))") after its start (its empty /8 table created)"
last=""
while :; do
    st=$(ha_field "$WORK/a" "b.get('replication', {}).get('state', '?') + ' ' + str(b.get('replication', {}).get('bulk_percent'))")
    [ "$st" != "$last" ] && log "A's view of B: $st" && last="$st"
    case "$st" in in-sync*) break ;; esac
    kill -0 "$LOAD" 2>/dev/null || { log "the load ended before B was in sync"; break; }
    sleep 0.5
done
b_t1=$(date +%s.%N)
log "B start to in-sync: $(python3 -c "print('%.1f s' % ($b_t1 - $b_t0))"); B ready to in-sync: $(python3 -c "print('%.1f s' % ($b_t1 - $b_ready))")"
wait "$LOAD" || true
grep -E 'bulk sync' "$WORK/a/server.log" | sed 's/^/A: /' >&2 || true
for _ in $(seq 1 200); do [ "$(ha_field "$WORK/a" "b.get('replication', {}).get('lag_records')")" = 0 ] && break; sleep 0.1; done
ctl "$WORK/b" --timeout 3600 --json leases export --format json >"$WORK/b-export.json"
"$BIN/dhcpperf" verify --record "$WORK/acks.jsonl" --export "$WORK/b-export.json" --json \
    >"$WORK/verify.json" 2>&1 || true
python3 - "$WORK/dora.json" "$WORK/verify.json" "$load_t0" "$b_t0" "$b_t1" "$RATE" <<'PY'
import json, sys
dora, ver, load_t0, b_t0, b_t1, rate = sys.argv[1:]
load_t0, b_t0, b_t1 = float(load_t0), float(b_t0), float(b_t1)
p = (json.load(open(dora)).get("phases") or [{}])[0]
tl = p.get("timeline") or []
start, end = b_t0 - load_t0, b_t1 - load_t0
def mean(rows):
    return sum(r["answered"] for r in rows) / len(rows) if rows else float("nan")
before = [r for r in tl if r["t_s"] <= start]
during = [r for r in tl if start < r["t_s"] <= end]
after = [r for r in tl if r["t_s"] > end + 1]
print(f"offered {rate} new clients/s; replies (OFFER + ACK) per second: before the bulk sync {mean(before):.0f} "
      f"({len(before)} s), during {mean(during):.0f} ({len(during)} s, min "
      f"{min((r['answered'] for r in during), default=float('nan'))}), after {mean(after):.0f} ({len(after)} s)")
print("dhcpperf:", json.dumps(p.get("counts")), "missed %", p.get("missed_pct"))
lat = p.get("latency") or {}
for k in ("discover_offer", "request_ack"):
    if lat.get(k):
        print(f"  {k}: p50 {lat[k].get('p50_ms')} ms, p99 {lat[k].get('p99_ms')} ms, max {lat[k].get('max_ms')} ms")
try:
    v = json.load(open(ver))
    print("verify against B:", {k: v.get(k) for k in ("acks", "checked", "missing", "wrong_client", "duplicate_address")})
except Exception as e:
    print("verify: unreadable", e)
PY
