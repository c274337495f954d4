#!/usr/bin/env bash
# replication.sh — issue 8: the cost of replication. One appliance A serves relayed dhcpperf
# load on a /8; with a cluster, a second appliance B (its syncd only: no DHCP reaches it)
# receives every lease change. Modes, alternating inside every round, each on fresh tables:
#
#   off    A alone (no `cluster` section)
#   async  A and B, `replication: "async"` (A answers first, ships after)
#   sync   A and B, `replication: "sync"`  (A holds each ACK until B applied the change)
#
# Per mode and round: (1) `dhcpperf sweep` from SWEEP_START × SWEEP_FACTOR^k, STEP_DURATION s a
# step, until a step misses more than LOSS_PCT % (a request unanswered within 1 s is missed):
# the highest zero-loss rate; (2) on fresh tables, `dhcpperf dora` at FIXED_RATE/s for DURATION
# s with every ACK recorded: p50/p99 DISCOVER→OFFER and REQUEST→ACK, A's server CPU per lease,
# and (clustered modes) `dhcpperf verify` of the ACK record against B's lease export after
# B caught up (missing = acknowledged leases B does not hold). Prints a Markdown table; asserts
# nothing.
#
#   sudo bench/replication.sh                      # RUNS=3, ~10 min
#   sudo RUNS=1 MODES="off sync" bench/replication.sh
#
# Knobs: RUNS (3), MODES ("off async sync"), SWEEP_START (2000), SWEEP_FACTOR (1.25),
# STEP_DURATION (3), LOSS_PCT (2.5), FIXED_RATE (5000), DURATION (10), WORKERS (2),
# DURABILITY ("process"), OUT (/var/tmp/prodhcp-replication), NO_BUILD=1.
#
# Network safety: namespaces prepNNNN-{a,b,cli} (NNNN = this script's PID): veth a:lan0 ↔
# cli:lan0 (198.18.0.1 / 198.18.0.2, DHCP), veth a:sync0 ↔ b:sync0 (198.18.2.1 / 198.18.2.2,
# replication). No host interface is touched; every load is bounded; on exit every process
# started here is killed by PID and the namespaces are deleted.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS=${RUNS:-3}
MODES=${MODES:-"off async sync"}
SWEEP_START=${SWEEP_START:-2000}
SWEEP_FACTOR=${SWEEP_FACTOR:-1.25}
STEP_DURATION=${STEP_DURATION:-3}
LOSS_PCT=${LOSS_PCT:-2.5}
FIXED_RATE=${FIXED_RATE:-5000}
DURATION=${DURATION:-10}
WORKERS=${WORKERS:-2}
OUT=${OUT:-/var/tmp/prodhcp-replication}
BIN="$ROOT/target/release"
TAG="prep$$"
NS_A="$TAG-a" NS_B="$TAG-b" NS_CLI="$TAG-cli"
A_IP=198.18.0.1 CLI_IP=198.18.0.2 A_SYNC=198.18.2.1 B_SYNC=198.18.2.2
CLOCK_HZ=$(getconf CLK_TCK)

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (network namespaces, port 67)"

STARTED=()
cleanup() {
    local p ns
    for p in "${STARTED[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for ns in "$NS_A" "$NS_B" "$NS_CLI"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
}
trap cleanup EXIT

if [ -z "${NO_BUILD:-}" ]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -q -p prodhcp-supervisor -p prodhcp-ctl -p dhcpperf)
fi
for b in prodhcpd prodhcpctl dhcpperf; do [ -x "$BIN/$b" ] || die "$BIN/$b missing"; done

# ------------------------------------------------------------------ lab --------
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

mkdir -p "$OUT"
WORK="$OUT/work"
rm -rf "$WORK"
mkdir -p "$WORK"
KEY="$WORK/cluster.key"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$KEY"
echo >>"$KEY"
chmod 600 "$KEY"

config() { # config DIR NODE MODE -> DIR/prodhcp.ron
    local dir="$1" node="$2" mode="$3" listen cluster=""
    mkdir -p "$dir/state"
    if [ "$mode" != off ]; then
        [ "$node" = a ] && listen="$A_SYNC:647" || listen="$B_SYNC:647"
        cluster="cluster: (name: \"bench\", node: \"$node\", listen: \"$listen\",
        peers: [(node: \"a\", address: \"$A_SYNC:647\"), (node: \"b\", address: \"$B_SYNC:647\")],
        key_file: \"$KEY\", replication: \"$mode\"),"
    fi
    cat >"$dir/prodhcp.ron" <<EOF
(
    state_dir: "$dir/state",
    control_socket: "$dir/state/ctl.sock",
    interfaces: [],
    workers: $WORKERS,
    log_level: "warn",
    durability: "${DURABILITY:-process}",
    $cluster
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

A_PID="" B_PID="" CUR_DIR=""
ctl() { "$BIN/prodhcpctl" --socket "$1/state/ctl.sock" "${@:2}"; }
start_node() { # start_node NS DIR -> pid
    ip netns exec "$1" "$BIN/prodhcpd" --config "$2/prodhcp.ron" >"$2/server.log" 2>&1 &
    local p=$!
    STARTED+=("$p")
    echo "$p"
}
wait_ctl() { # wait_ctl DIR: the control socket answers
    local i
    for i in $(seq 1 200); do ctl "$1" status >/dev/null 2>&1 && return 0; sleep 0.05; done
    return 1
}
peer_state() { # peer_state DIR: A's view of B's replication state
    ctl "$1" --json ha status 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
    d = d.get("data", d)
    print(next((p.get("replication", {}).get("state", "?") for p in d.get("peers", []) if p.get("node") == "b"), "?"))
except Exception:
    print("?")'
}
role_of() { # role_of DIR: the node's role (`active`, `standby`, ...)
    ctl "$1" --json ha status 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin); d = d.get("data", d)
    print(d.get("role", "?"))
except Exception:
    print("?")'
}
lag_records() {
    ctl "$1" --json ha status 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin); d = d.get("data", d)
    print(next((p.get("replication", {}).get("lag_records", -1) for p in d.get("peers", []) if p.get("node") == "b"), -1))
except Exception:
    print(-1)'
}
start_mode() { # start_mode MODE RUNDIR: fresh A (and B), ready (and B in sync)
    local mode="$1" dir="$2" i
    CUR_DIR="$dir"
    rm -rf "$dir"
    config "$dir/a" a "$mode"
    A_PID=$(start_node "$NS_A" "$dir/a")
    wait_ctl "$dir/a" || die "A did not start: $(tail -5 "$dir/a/server.log")"
    if [ "$mode" != off ]; then
        config "$dir/b" b "$mode"
        B_PID=$(start_node "$NS_B" "$dir/b")
        wait_ctl "$dir/b" || die "B did not start: $(tail -5 "$dir/b/server.log")"
        for i in $(seq 1 200); do [ "$(peer_state "$dir/a")" = in-sync ] && break; sleep 0.05; done
        [ "$(peer_state "$dir/a")" = in-sync ] || die "B not in sync with A: $(peer_state "$dir/a")"
        # Roles: A (the lower name) is elected active, B standby; only then does A serve.
        for i in $(seq 1 200); do [ "$(role_of "$dir/a")" = active ] && break; sleep 0.05; done
        [ "$(role_of "$dir/a")" = active ] || die "A not active: $(role_of "$dir/a")"
    fi
    settle
}
settle() { # wait (≤ 60 s) until A's namespace is idle: the start-up scrub pass has finished
    local a b i
    for i in $(seq 1 120); do
        a=$(a_ticks); sleep 0.5; b=$(a_ticks)
        [ $((b - a)) -le $((CLOCK_HZ / 50)) ] && break
    done
    [ "$i" -gt 1 ] && log "  A settled after ~$((i / 2)) s"
    return 0
}
stop_mode() {
    local p
    for p in $A_PID $B_PID; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $A_PID $B_PID; do
        for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$p" 2>/dev/null || true
    done
    A_PID="" B_PID=""
    # A /8 table is ~1.5 GB on disk (preallocated): drop each run's tables, keep its logs.
    rm -rf "$CUR_DIR/a/state" "$CUR_DIR/b/state"
}
a_ticks() { # utime+stime of every process in A's namespace, clock ticks
    local t=0 p
    for p in $(ip netns pids "$NS_A" 2>/dev/null); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
perf() { # perf OUTFILE ARGS...
    local out="$1" p
    shift
    ip netns exec "$NS_CLI" timeout 600 "$BIN/dhcpperf" "$@" --server "$A_IP" --relay-ip "$CLI_IP" \
        --max-clients 16000000 --hard-deadline 300s --json >"$out" 2>"$out.err" &
    p=$!
    STARTED+=("$p")
    wait "$p" || true
}

printf 'round\tmode\tzero_loss_rate\tzero_loss_leases_per_s\tfixed_rate\tleases_per_s\tmissed_pct\tp50_do\tp99_do\tp50_ra\tp99_ra\tcpu_us_per_lease\tverify\n' >"$OUT/summary.tsv"
for round in $(seq 1 "$RUNS"); do
    for mode in $MODES; do
        dir="$WORK/r$round-$mode"
        log "round $round, $mode: sweep"
        start_mode "$mode" "$dir"
        perf "$dir/sweep.json" sweep --start-rate "$SWEEP_START" --step-factor "$SWEEP_FACTOR" \
            --max-rate 200000 --step-duration "${STEP_DURATION}s" --loss-threshold "$LOSS_PCT" --max-steps 40
        stop_mode
        read -r zr zl <<<"$(python3 - "$dir/sweep.json" <<'PY'
import json, sys
try:
    s = json.load(open(sys.argv[1])).get("sweep") or {}
except Exception:
    s = {}
g = lambda k: "NA" if s.get(k) is None else "{:.0f}".format(s[k])
print(g("max_zero_loss_rate"), g("max_zero_loss_leases_per_s"))
PY
)"
        log "round $round, $mode: $FIXED_RATE/s for $DURATION s"
        start_mode "$mode" "$dir-fixed"
        c0=$(a_ticks)
        perf "$dir-fixed/dora.json" dora --seed 7 --rate "$FIXED_RATE" --duration "${DURATION}s" \
            --record "$dir-fixed/acks.jsonl"
        c1=$(a_ticks)
        verify=NA
        if [ "$mode" != off ]; then
            for _ in $(seq 1 100); do [ "$(lag_records "$dir-fixed/a")" = 0 ] && break; sleep 0.05; done
            ctl "$dir-fixed/b" --json leases export --format json >"$dir-fixed/b-export.json" 2>/dev/null || true
            verify=$("$BIN/dhcpperf" verify --record "$dir-fixed/acks.jsonl" --export "$dir-fixed/b-export.json" \
                --json 2>/dev/null | python3 -c '
import json, sys
try:
    v = json.load(sys.stdin)
    print("acks={} checked={} missing_on_b={} wrong_client={} duplicates={}".format(v.get("acks", "?"), v.get("checked", "?"), v.get("missing", "?"), v.get("wrong_client", "?"), v.get("duplicate_address", "?")))
except Exception:
    print("NA")' || echo NA)
        fi
        stop_mode
        python3 - "$dir-fixed/dora.json" "$round" "$mode" "$zr" "$zl" "$FIXED_RATE" "$(( c1 - c0 ))" "$CLOCK_HZ" "$verify" >>"$OUT/summary.tsv" <<'PY'
import json, sys
f, rnd, mode, zr, zl, rate, ticks, hz, verify = sys.argv[1:]
try:
    p = (json.load(open(f)).get("phases") or [{}])[0]
except Exception:
    p = {}
lat = p.get("latency") or {}
def l(names, k):
    for n in names:
        if lat.get(n):
            v = lat[n].get(k)
            return "NA" if v is None else "{:.3f}".format(v)
    return "NA"
acks = (p.get("counts") or {}).get("acks", 0)
cpu = "NA" if not acks else "{:.1f}".format(int(ticks) / int(hz) * 1e6 / acks)
g = lambda k, fmt: "NA" if p.get(k) is None else fmt.format(p[k])
print("\t".join([rnd, mode, zr, zl, rate, g("leases_per_s", "{:.0f}"), g("missed_pct", "{:.2f}"),
    l(["discover_offer", "discover", "offer"], "p50_ms"), l(["discover_offer", "discover", "offer"], "p99_ms"),
    l(["request_ack", "request", "ack"], "p50_ms"), l(["request_ack", "request", "ack"], "p99_ms"), cpu, verify]))
PY
        tail -1 "$OUT/summary.tsv" >&2
    done
done

{
    echo "### Replication cost (relayed DORA on a /8, A serving, B replicating; $(git -C "$ROOT" describe --always --dirty))"
    echo
    echo "| round | mode | zero-loss leases/s (offered/s) | at $FIXED_RATE/s: leases/s, missed % | p50 / p99 DISCOVER→OFFER ms | p50 / p99 REQUEST→ACK ms | A's CPU µs/lease | ACKs vs B's table |"
    echo "|---|---|---|---|---|---|---|---|"
    tail -n +2 "$OUT/summary.tsv" | while IFS=$'\t' read -r r m zr zl fr lps miss p50do p99do p50ra p99ra cpu ver; do
        echo "| $r | $m | $zl ($zr) | $lps, $miss | $p50do / $p99do | $p50ra / $p99ra | $cpu | $ver |"
    done
} | tee "$OUT/table.md"
