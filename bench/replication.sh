#!/usr/bin/env bash
# replication.sh — issue 8: the cost of replication, and failover, prodhcp beside Kea HA.
# One server A serves relayed dhcpperf load on a /8; in the cluster modes a second server B
# receives every lease change. Modes, alternating inside every round, each on fresh tables:
#
#   off     prodhcp A alone (no `cluster` section); load sent to A's address
#   async   prodhcp A and B, `replication: "async"` (A answers first, ships after)
#   sync    prodhcp A and B, `replication: "sync"`  (A holds each ACK until B applied it)
#           (async/sync: the load goes to the cluster's service address, held by A, the
#           elected active; the bench waits for A active with B in sync)
#   kea     Kea 2.2 alone in A: the anchors' best single-server configuration (`kea-mt2`:
#           multi-threading, 2 threads, queue 64; memfile with persist, on the same disk)
#   kea-ha  Kea 2.2 HA hot-standby: the anchors' `kea-ha-mt` configuration (core MT 2 threads,
#           HA MT with the dedicated HTTP listener, lease updates before the ACK), primary in
#           A, standby in B; load sent to the primary. The configs come from
#           ../shared/anchors/lib.sh (kea_dhcp4_config); the bench only adds the probe's relay
#           address to the relay mapping and points the peer URLs at the replication link.
#
# Per mode and round: (1) `dhcpperf sweep` from SWEEP_START (KEA_HA_SWEEP_START for kea-ha)
# × SWEEP_FACTOR^k, STEP_DURATION s a step, until a step misses more than LOSS_PCT % (a
# request unanswered within 1 s is missed): the highest rate with no request missed, and the
# highest with at most LOSS_PCT % missed (the anchors' criterion: on a busy machine Kea rarely
# has a 3 s step with none missed); (2) on fresh tables,
# `dhcpperf dora` at FIXED_RATE/s for DURATION s with every ACK recorded: p50/p99
# DISCOVER→OFFER and REQUEST→ACK, A's and B's server CPU per lease, and (clustered modes)
# `dhcpperf verify` of the ACK record against B's lease table after B caught up (missing =
# acknowledged leases B does not hold; for kea-ha B's memfile CSV is converted to the export
# format). Prints a Markdown table; asserts nothing.
#
# Then (FAILOVER=1) a failover per FAILOVER_MODES entry, in the same lab: dhcpperf dora at
# FAILOVER_RATE/s, a probe (bench/failover_probe.py, relay address PROBE_IP) sending a
# DISCOVER every 5 ms to the address relays use for the survivor, SIGKILL of the serving side
# after KILL_AFTER s, and the time from the kill to the first OFFER answering a DISCOVER sent
# after it. prodhcp (`sync`): A's whole process tree (supervisor, the worker pids of
# `prodhcpctl status`, the syncd pid of `ha status`, and anything else in A's namespace);
# the load and the probe go to the service address. Kea (`kea-ha`): the primary's kea-dhcp4
# (kea-ha-mt has no ctrl-agent); the load goes to the primary and the probe to the standby's
# address (the anchors' lab addresses the standby at 198.18.0.3, as a relay with both servers
# as helper addresses does), once per KEA_TIMERS entry (heartbeat-delay/max-response-delay ms;
# Kea's defaults first). After each kill: B's role / HA state and `dhcpperf verify` of every
# ACK against B's table. Each wait is bounded (FAILOVER_TIMEOUT, 120 s). Every case runs
# FAILOVER_REPEATS times on fresh servers, the kill KILL_AFTER s plus a random part of the
# heartbeat interval into the load: Kea's detection waits for its next heartbeat, so one kill
# samples one phase of the heartbeat cycle (without the jitter every repeat hit the same one).
#
#   sudo bench/replication.sh                      # RUNS=3, ~40 min
#   sudo RUNS=1 MODES="off sync kea kea-ha" FAILOVER=0 bench/replication.sh
#
# Knobs: RUNS or ROUNDS (3), MODES ("off async sync kea kea-ha"), SWEEP_START (2000),
# KEA_HA_SWEEP_START (200), SWEEP_FACTOR (1.25), STEP_DURATION (3), LOSS_PCT (2.5),
# FIXED_RATE (5000), DURATION (10), WORKERS (2), DURABILITY ("process"), FAILOVER (1),
# FAILOVER_MODES ("sync kea-ha"), FAILOVER_RATE (200), KILL_AFTER (3), FAILOVER_TIMEOUT (120),
# FAILOVER_REPEATS (3),
# KEA_TIMERS ("10000/60000 1000/1000 100/100"), OUT (/var/tmp/prodhcp-replication),
# NO_BUILD=1, BIN (target/release).
#
# Network safety: namespaces prepNNNN-{a,b,cli,lan} (NNNN = this script's PID): bridge br0 in
# lan joins a:lan0 (198.18.0.1), b:lan0 (198.18.0.3), cli:lan0 (198.18.0.2 = dhcpperf's
# relay, 198.18.0.5 = the probe's relay); the prodhcp service address 198.18.0.30 moves between
# a:lan0 and b:lan0; veth a:sync0 ↔ b:sync0 (198.18.2.1 / 198.18.2.2) carries prodhcp's
# replication and Kea's HA traffic. No host interface is touched; every load is bounded; on
# exit every process started here is killed by PID and the namespaces are deleted.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ANCHORS="${ANCHORS:-$ROOT/../shared/anchors}"
RUNS=${RUNS:-${ROUNDS:-3}}
MODES=${MODES-"off async sync kea kea-ha"}
SWEEP_START=${SWEEP_START:-2000}
KEA_HA_SWEEP_START=${KEA_HA_SWEEP_START:-200}
SWEEP_FACTOR=${SWEEP_FACTOR:-1.25}
STEP_DURATION=${STEP_DURATION:-3}
LOSS_PCT=${LOSS_PCT:-2.5}
FIXED_RATE=${FIXED_RATE:-5000}
DURATION=${DURATION:-10}
WORKERS=${WORKERS:-2}
FAILOVER=${FAILOVER:-1}
FAILOVER_MODES=${FAILOVER_MODES:-"sync kea-ha"}
FAILOVER_RATE=${FAILOVER_RATE:-200}
KILL_AFTER=${KILL_AFTER:-3}
FAILOVER_TIMEOUT=${FAILOVER_TIMEOUT:-120}
FAILOVER_REPEATS=${FAILOVER_REPEATS:-3}
KEA_TIMERS=${KEA_TIMERS:-"10000/60000 1000/1000 100/100"}
OUT=${OUT:-/var/tmp/prodhcp-replication}
BIN="${BIN:-$ROOT/target/release}"
TAG="prep$$"
NS_A="$TAG-a" NS_B="$TAG-b" NS_CLI="$TAG-cli" NS_LAN="$TAG-lan"
A_IP=198.18.0.1 B_IP=198.18.0.3 CLI_IP=198.18.0.2 PROBE_IP=198.18.0.5 SERVICE_IP=198.18.0.30
A_SYNC=198.18.2.1 B_SYNC=198.18.2.2
CLOCK_HZ=$(getconf CLK_TCK)

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (network namespaces, port 67)"
for f in lib.sh dhcp_probe.py; do [ -r "$ANCHORS/$f" ] || die "$ANCHORS/$f missing (set ANCHORS)"; done

STARTED=()
cleanup() {
    local p ns
    for p in "${STARTED[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for ns in "$NS_A" "$NS_B" "$NS_CLI" "$NS_LAN"; do
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
case " $MODES $FAILOVER_MODES " in *" kea"*)
    command -v kea-dhcp4 >/dev/null || die "kea-dhcp4 missing (scripts/install-deps.sh)"
    command -v jq >/dev/null || die "jq missing" ;;
esac

# ------------------------------------------------------------------ lab --------
for ns in "$NS_A" "$NS_B" "$NS_CLI" "$NS_LAN"; do
    ip netns add "$ns"
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
done
ip -n "$NS_LAN" link add br0 type bridge
ip -n "$NS_LAN" link set br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
ip -n "$NS_LAN" link set br0 up
for l in "$NS_A pa $A_IP" "$NS_B pb $B_IP" "$NS_CLI pc $CLI_IP"; do
    set -- $l
    ip -n "$NS_LAN" link add "$2" type veth peer name lan0 netns "$1"
    ip -n "$NS_LAN" link set "$2" master br0 up
    ip -n "$1" addr add "$3/24" dev lan0
    ip -n "$1" link set lan0 up
done
ip -n "$NS_CLI" addr add "$PROBE_IP/24" dev lan0
ip -n "$NS_A" link add sync0 type veth peer name sync0 netns "$NS_B"
ip -n "$NS_A" addr add "$A_SYNC/24" dev sync0
ip -n "$NS_B" addr add "$B_SYNC/24" dev sync0
ip -n "$NS_A" link set sync0 up
ip -n "$NS_B" link set sync0 up

mkdir -p "$OUT"
WORK="$OUT/work"
rm -rf "$WORK"
mkdir -p "$WORK"
KEY="$WORK/cluster.key"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$KEY"
echo >>"$KEY"
chmod 600 "$KEY"

is_kea() { case "$1" in kea*) return 0 ;; esac; return 1; }
clustered() { [ "$1" != off ] && [ "$1" != kea ]; }

# ---------------------------------------------------------------- prodhcp ------
config() { # config DIR NODE MODE -> DIR/prodhcp.ron
    local dir="$1" node="$2" mode="$3" listen cluster=""
    mkdir -p "$dir/state"
    if [ "$mode" != off ]; then
        [ "$node" = a ] && listen="$A_SYNC:647" || listen="$B_SYNC:647"
        cluster="cluster: (name: \"bench\", node: \"$node\", listen: \"$listen\",
        peers: [(node: \"a\", address: \"$A_SYNC:647\"), (node: \"b\", address: \"$B_SYNC:647\")],
        key_file: \"$KEY\", replication: \"$mode\",
        service_address: Some((address: \"$SERVICE_IP/24\", interface: \"lan0\"))),"
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
            relays: ["$CLI_IP", "$PROBE_IP"],
            options: { "routers": "10.0.0.1" },
        ),
    ],
)
EOF
}

A_PID="" B_PID="" CUR_DIR="" TARGET="" MODE_PIDS=()
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
ha_json() { # ha_json DIR PYEXPR: PYEXPR evaluated on `ha status --json` (d), "?" on failure
    ctl "$1" --json ha status 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin); d = d.get("data", d)
    peer = lambda n: next((p for p in d.get("peers", []) if p.get("node") == n), {})
    print(eval(sys.argv[1]))
except Exception:
    print("?")' "$2"
}
peer_state() { ha_json "$1" 'peer("b").get("replication", {}).get("state", "?")'; }
role_of() { ha_json "$1" 'd.get("role", "?")'; }
lag_records() { ha_json "$1" 'peer("b").get("replication", {}).get("lag_records", -1)'; }
syncd_pid() { ha_json "$1" '(d.get("syncd") or {}).get("pid", "")'; }
worker_pids() { # the worker PIDs of `prodhcpctl status`
    ctl "$1" --json status 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin); d = d.get("data", d)
print(" ".join(str(w["pid"]) for w in d.get("workers", []) if w.get("pid")))' || true
}
has_addr() { ip -n "$1" -4 addr show dev lan0 | grep -q "inet $2/"; }
start_prodhcp_mode() { # MODE DIR: fresh A (and B), ready (and B in sync, A active)
    local mode="$1" dir="$2" i
    config "$dir/a" a "$mode"
    A_PID=$(start_node "$NS_A" "$dir/a")
    MODE_PIDS+=("$A_PID")
    wait_ctl "$dir/a" || die "A did not start: $(tail -5 "$dir/a/server.log")"
    TARGET=$A_IP
    if [ "$mode" != off ]; then
        config "$dir/b" b "$mode"
        B_PID=$(start_node "$NS_B" "$dir/b")
        MODE_PIDS+=("$B_PID")
        wait_ctl "$dir/b" || die "B did not start: $(tail -5 "$dir/b/server.log")"
        for i in $(seq 1 400); do [ "$(peer_state "$dir/a")" = in-sync ] && break; sleep 0.05; done
        [ "$(peer_state "$dir/a")" = in-sync ] || die "B not in sync with A: $(peer_state "$dir/a")"
        # Roles: A (the lower name) is elected active, B standby; only then does A serve,
        # and A holds the service address the load is sent to.
        for i in $(seq 1 400); do
            [ "$(role_of "$dir/a")" = active ] && has_addr "$NS_A" "$SERVICE_IP" && break
            sleep 0.05
        done
        [ "$(role_of "$dir/a")" = active ] || die "A not active: $(role_of "$dir/a")"
        has_addr "$NS_A" "$SERVICE_IP" || die "A active without $SERVICE_IP on lan0"
        TARGET=$SERVICE_IP
    fi
}

# -------------------------------------------------------------------- Kea ------
# kea_config DIR THREADS [ROLE HB_MS MAXRESP_MS]: the anchors' generator (lib.sh, sourced in a
# subshell so none of its names leak here) with the HA peers on the replication link; then
# the probe's relay address is added to the subnet's relay mapping.
kea_config() {
    local dir="$1" threads="$2" role="${3:-}" hb="${4:-10000}" mr="${5:-60000}"
    mkdir -p "$dir"
    (
        WORK="$dir"
        # shellcheck source=/dev/null
        . "$ANCHORS/lib.sh"
        SRV_IP=$A_SYNC SRV2_IP=$B_SYNC
        export KEA_HA_HEARTBEAT=$hb KEA_HA_MAX_RESPONSE=$mr
        if [ -n "$role" ]; then
            kea_dhcp4_config "$dir" 8 "$threads" "$role" 1
        else
            kea_dhcp4_config "$dir" 8 "$threads"
        fi
    )
    jq --arg p "$PROBE_IP" '.Dhcp4.subnet4[0].relay["ip-addresses"] += [$p]' \
        "$dir/kea-dhcp4.json" >"$dir/kea-dhcp4.json.new"
    mv "$dir/kea-dhcp4.json.new" "$dir/kea-dhcp4.json"
}
start_kea() { # start_kea NS DIR -> pid
    ip netns exec "$1" env KEA_PIDFILE_DIR="$2" KEA_LOCKFILE_DIR="$2" \
        kea-dhcp4 -c "$2/kea-dhcp4.json" >"$2/kea-dhcp4.out" 2>&1 &
    local p=$!
    STARTED+=("$p")
    echo "$p"
}
kea_cmd() { # kea_cmd SOCKET JSON (as the anchors' lib.sh, bounded)
    timeout 30 python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode())
buf = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    buf += d
print(buf.decode())
PY
}
kea_ha_state() { # kea_ha_state DIR: the server's HA state (`hot-standby`, `partner-down`, ...)
    local st
    st=$(kea_cmd "$1/kea4.sock" '{"command": "ha-heartbeat"}' 2>/dev/null |
        jq -r '.arguments.state // "?"' 2>/dev/null) || true
    echo "${st:-?}"
}
first_offer() { # first_offer SERVER TIMEOUT: a relayed DISCOVER is answered (anchors' probe)
    ip netns exec "$NS_CLI" timeout $(($2 + 5)) python3 "$ANCHORS/dhcp_probe.py" \
        --server "$1" --giaddr "$PROBE_IP" --timeout "$2" >/dev/null 2>&1
}
start_kea_mode() { # MODE DIR [HB MAXRESP]
    local mode="$1" dir="$2" i st=""
    TARGET=$A_IP
    if [ "$mode" = kea ]; then
        kea_config "$dir/a" 2
        A_PID=$(start_kea "$NS_A" "$dir/a")
        MODE_PIDS+=("$A_PID")
        first_offer "$A_IP" 60 || die "Kea did not answer: $(tail -5 "$dir/a/kea-dhcp4.out")"
        return 0
    fi
    kea_config "$dir/a" 2 primary "${3:-10000}" "${4:-60000}"
    kea_config "$dir/b" 2 standby "${3:-10000}" "${4:-60000}"
    B_PID=$(start_kea "$NS_B" "$dir/b")   # the anchors start the standby first
    A_PID=$(start_kea "$NS_A" "$dir/a")
    MODE_PIDS+=("$A_PID" "$B_PID")
    first_offer "$A_IP" 120 || die "Kea primary did not answer: $(tail -5 "$dir/a/kea-dhcp4.out")"
    for i in $(seq 1 240); do
        st=$(kea_ha_state "$dir/a")
        [ "$st" = hot-standby ] && break
        sleep 0.5
    done
    [ "$st" = hot-standby ] || die "Kea primary in HA state '$st', not hot-standby"
}
# kea_export CSV -> JSON array in `prodhcpctl leases export` form, for `dhcpperf verify`
# (the memfile is an append log: the last row of an address wins).
kea_export() {
    python3 - "$1" <<'PY'
import csv, json, sys
leases = {}
with open(sys.argv[1]) as f:
    for row in csv.DictReader(f):
        state = {"0": "leased", "1": "declined", "2": "expired-reclaimed"}.get(row.get("state", ""), "other")
        if row.get("valid_lifetime") == "0":
            state = "released"
        leases[row["address"]] = {"address": row["address"], "state": state,
            "hwaddr": (row.get("hwaddr") or "").lower() or None,
            "client_id": (row.get("client_id") or "").replace(":", "").lower() or None,
            "expires": int(row["expire"])}
print(json.dumps(list(leases.values())))
PY
}

# ------------------------------------------------------------------ common -----
start_mode() { # start_mode MODE RUNDIR [HB MAXRESP]
    local mode="$1" dir="$2"
    CUR_DIR="$dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    MODE_PIDS=()
    if is_kea "$mode"; then start_kea_mode "$@"; else start_prodhcp_mode "$mode" "$dir"; fi
    settle
}
settle() { # wait (≤ 60 s) until A's namespace is idle: the start-up scrub pass has finished
    local a b i
    for i in $(seq 1 120); do
        a=$(ns_ticks "$NS_A"); sleep 0.5; b=$(ns_ticks "$NS_A")
        [ $((b - a)) -le $((CLOCK_HZ / 50)) ] && break
    done
    [ "$i" -gt 1 ] && log "  A settled after ~$((i / 2)) s"
    return 0
}
stop_mode() {
    local p
    for p in "${MODE_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${MODE_PIDS[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    MODE_PIDS=() A_PID="" B_PID=""
    # A /8 table is ~1.5 GB on disk (preallocated): drop each run's tables, keep its logs.
    rm -rf "$CUR_DIR/a/state" "$CUR_DIR/b/state"
}
ns_ticks() { # utime+stime of every process in a namespace, clock ticks
    local t=0 p
    for p in $(ip netns pids "$1" 2>/dev/null); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
perf() { # perf OUTFILE ARGS...: dhcpperf from cli (relay CLI_IP) to $TARGET
    local out="$1" p
    shift
    ip netns exec "$NS_CLI" timeout 600 "$BIN/dhcpperf" "$@" --server "$TARGET" --relay-ip "$CLI_IP" \
        --max-clients 16000000 --hard-deadline 300s --json >"$out" 2>"$out.err" &
    p=$!
    STARTED+=("$p")
    wait "$p" || true
}
b_export() { # b_export MODE DIR -> DIR/b-export.json: B's lease table
    if is_kea "$1"; then
        kea_export "$2/b/kea-leases4.csv" >"$2/b-export.json" 2>"$2/b-export.err" || true
    else
        ctl "$2/b" --json leases export --format json >"$2/b-export.json" 2>"$2/b-export.err" || true
    fi
}
verify_line() { # verify_line RECORD EXPORT -> one line
    "$BIN/dhcpperf" verify --record "$1" --export "$2" --json 2>/dev/null | python3 -c '
import json, sys
try:
    v = json.load(sys.stdin)
    print("acks={} checked={} missing_on_b={} wrong_client={} duplicates={}".format(v.get("acks", "?"), v.get("checked", "?"), v.get("missing", "?"), v.get("wrong_client", "?"), v.get("duplicate_address", "?")))
except Exception:
    print("NA")' || echo NA
}

# ------------------------------------------------------------- throughput ------
printf 'round\tmode\tzero_loss_rate\tzero_loss_leases_per_s\tisc_rate\tisc_leases_per_s\tfixed_rate\tleases_per_s\tmissed_pct\tp50_do\tp99_do\tp50_ra\tp99_ra\tcpu_a_us_per_lease\tcpu_b_us_per_lease\tverify\n' >"$OUT/summary.tsv"
for round in $(seq 1 "$RUNS"); do
    for mode in $MODES; do
        dir="$WORK/r$round-$mode"
        start_rate=$SWEEP_START
        [ "$mode" = kea-ha ] && start_rate=$KEA_HA_SWEEP_START
        log "round $round, $mode: sweep from $start_rate/s"
        start_mode "$mode" "$dir"
        perf "$dir/sweep.json" sweep --start-rate "$start_rate" --step-factor "$SWEEP_FACTOR" \
            --max-rate 200000 --step-duration "${STEP_DURATION}s" --loss-threshold "$LOSS_PCT" --max-steps 40
        stop_mode
        read -r zr zl ir il <<<"$(python3 - "$dir/sweep.json" <<'PY'
import json, sys
try:
    s = json.load(open(sys.argv[1])).get("sweep") or {}
except Exception:
    s = {}
g = lambda k: "NA" if s.get(k) is None else "{:.0f}".format(s[k])
print(g("max_zero_loss_rate"), g("max_zero_loss_leases_per_s"), g("isc_rate"), g("isc_leases_per_s"))
PY
)"
        log "round $round, $mode: $FIXED_RATE/s for $DURATION s"
        start_mode "$mode" "$dir-fixed"
        ca0=$(ns_ticks "$NS_A") cb0=$(ns_ticks "$NS_B")
        perf "$dir-fixed/dora.json" dora --seed 7 --rate "$FIXED_RATE" --duration "${DURATION}s" \
            --record "$dir-fixed/acks.jsonl"
        ca1=$(ns_ticks "$NS_A") cb1=$(ns_ticks "$NS_B")
        verify=NA
        if clustered "$mode"; then
            if ! is_kea "$mode"; then
                for _ in $(seq 1 100); do [ "$(lag_records "$dir-fixed/a")" = 0 ] && break; sleep 0.05; done
            fi
            b_export "$mode" "$dir-fixed"
            verify=$(verify_line "$dir-fixed/acks.jsonl" "$dir-fixed/b-export.json")
        fi
        stop_mode
        python3 - "$dir-fixed/dora.json" "$round" "$mode" "$zr" "$zl" "$ir" "$il" "$FIXED_RATE" "$((ca1 - ca0))" "$((cb1 - cb0))" "$CLOCK_HZ" "$verify" >>"$OUT/summary.tsv" <<'PY'
import json, sys
f, rnd, mode, zr, zl, ir, il, rate, ticks_a, ticks_b, hz, verify = sys.argv[1:]
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
cpu = lambda t: "NA" if not acks else "{:.1f}".format(int(t) / int(hz) * 1e6 / acks)
cpu_b = cpu(ticks_b) if mode not in ("off", "kea") else "–"
g = lambda k, fmt: "NA" if p.get(k) is None else fmt.format(p[k])
print("\t".join([rnd, mode, zr, zl, ir, il, rate, g("leases_per_s", "{:.0f}"), g("missed_pct", "{:.2f}"),
    l(["discover_offer", "discover", "offer"], "p50_ms"), l(["discover_offer", "discover", "offer"], "p99_ms"),
    l(["request_ack", "request", "ack"], "p50_ms"), l(["request_ack", "request", "ack"], "p99_ms"),
    cpu(ticks_a), cpu_b, verify]))
PY
        tail -1 "$OUT/summary.tsv" >&2
    done
done

# --------------------------------------------------------------- failover ------
printf 'case\tkilled\tfirst_answer_s\tprobe\tsurvivor_after\tverify\n' >"$OUT/failover.tsv"
failover_case() { # failover_case MODE LABEL [HB MAXRESP]
    local mode="$1" label="$2" dir="$WORK/failover-$2" pids extra p probe_to probe_pid \
        load_pid t0 t1 res after ver bound
    # The kill comes KILL_AFTER s + a random part of the heartbeat interval (Kea: the case's
    # heartbeat-delay; prodhcp: 1 s) into the load, so repeats sample different phases of the
    # survivor's heartbeat cycle.
    local jitter_ms=$((RANDOM * ${3:-1000} / 32768)) kill_at
    kill_at=$(awk -v a="$KILL_AFTER" -v j="$jitter_ms" 'BEGIN{printf "%.3f", a + j / 1000}')
    log "failover $label: $FAILOVER_RATE/s, SIGKILL after $kill_at s"
    start_mode "$mode" "$dir" "${@:3}"
    if is_kea "$mode"; then probe_to=$B_IP; else probe_to=$SERVICE_IP; fi
    bound=$((FAILOVER_TIMEOUT + KILL_AFTER + jitter_ms / 1000 + 60))
    rm -f "$dir/trigger"
    ip netns exec "$NS_CLI" timeout "$bound" python3 "$ROOT/bench/failover_probe.py" \
        --server "$probe_to" --giaddr "$PROBE_IP" --trigger "$dir/trigger" \
        --timeout "$FAILOVER_TIMEOUT" --max-wait $((KILL_AFTER + jitter_ms / 1000 + 60)) >"$dir/probe.json" 2>"$dir/probe.err" &
    probe_pid=$!
    STARTED+=("$probe_pid")
    ip netns exec "$NS_CLI" timeout "$bound" "$BIN/dhcpperf" dora --seed 9 \
        --server "$TARGET" --relay-ip "$CLI_IP" --rate "$FAILOVER_RATE" \
        --duration "$((KILL_AFTER + jitter_ms / 1000 + 8))s" --record "$dir/acks.jsonl" --max-clients 16000000 \
        --hard-deadline "$((bound - 10))s" --json >"$dir/dora.json" 2>"$dir/dora.err" &
    load_pid=$!
    STARTED+=("$load_pid")
    sleep "$kill_at"
    if is_kea "$mode"; then
        pids="$A_PID"   # the primary's kea-dhcp4 (kea-ha-mt has no ctrl-agent)
    else
        # A's whole process tree: supervisor, workers (`status`), syncd (`ha status`).
        pids="$A_PID $(worker_pids "$dir/a") $(syncd_pid "$dir/a")"
    fi
    pids=$(echo "$pids" | tr ' ' '\n' | grep -E '^[0-9]+$' | tr '\n' ' ' || true)
    extra=""
    for p in $(ip netns pids "$NS_A"); do
        case " $pids " in *" $p "*) ;; *) extra="$extra $p" ;; esac
    done
    if [ -n "$extra" ]; then
        log "  also in A's namespace, killed too:$extra ($(ps -o comm= -p "${extra# }" | tr '\n' ' '))"
    fi
    pids="$pids$extra"
    log "  SIGKILL $pids($(ps -o comm= -p "$(echo $pids | tr ' ' ',')" | tr '\n' ' '))"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    kill -9 $pids || true
    t1=$(date +%s.%N)
    echo "$t0 $t1" >"$dir/trigger"
    wait "$probe_pid" || true
    res=$(python3 -c '
import json, sys
try:
    r = json.load(open(sys.argv[1]))
    print("{:.3f}".format(r["first_answer_s"]) if r.get("answered") else "none in {} s".format(r.get("timeout_s", "?")))
except Exception:
    print("NA")' "$dir/probe.json")
    wait "$load_pid" || true
    if is_kea "$mode"; then after="HA state $(kea_ha_state "$dir/b")"; else after="role $(role_of "$dir/b")"; fi
    # Every ACK the generator received is in the survivor's table (A is gone: no lag to wait).
    b_export "$mode" "$dir"
    ver=$(verify_line "$dir/acks.jsonl" "$dir/b-export.json")
    stop_mode
    for p in $pids; do kill -0 "$p" 2>/dev/null && log "  pid $p still alive after SIGKILL"; done
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$(echo "$pids" | wc -w) processes" "$res" \
        "$(tr -d '\n' <"$dir/probe.json")" "$after" "$ver" >>"$OUT/failover.tsv"
    tail -1 "$OUT/failover.tsv" >&2
}
if [ "$FAILOVER" = 1 ]; then
    for mode in $FAILOVER_MODES; do
        for k in $(seq 1 "$FAILOVER_REPEATS"); do
            if [ "$mode" = kea-ha ]; then
                for t in $KEA_TIMERS; do
                    failover_case kea-ha "kea-ha-hb${t%/*}-mr${t#*/}-$k" "${t%/*}" "${t#*/}"
                done
            else
                failover_case "$mode" "prodhcp-$mode-$k"
            fi
        done
    done
fi

# ----------------------------------------------------------------- report ------
{
    echo "### Replication cost (relayed DORA on a /8, A serving, B replicating; $(git -C "$ROOT" describe --always --dirty))"
    echo
    echo "| round | mode | zero-loss leases/s (offered/s) | ≤ $LOSS_PCT % missed leases/s (offered/s) | at $FIXED_RATE/s: leases/s, missed % | p50 / p99 DISCOVER→OFFER ms | p50 / p99 REQUEST→ACK ms | A's CPU µs/lease | B's CPU µs/lease | ACKs vs B's table |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    tail -n +2 "$OUT/summary.tsv" | while IFS=$'\t' read -r r m zr zl ir il fr lps miss p50do p99do p50ra p99ra cpu cpub ver; do
        echo "| $r | $m | $zl ($zr) | $il ($ir) | $lps, $miss | $p50do / $p99do | $p50ra / $p99ra | $cpu | $cpub | $ver |"
    done
    if [ "$FAILOVER" = 1 ]; then
        echo
        echo "### Failover: SIGKILL of the serving side under $FAILOVER_RATE/s relayed load"
        echo
        echo "| case | killed | kill → first OFFER from the survivor, s | survivor after | ACKs vs survivor's table |"
        echo "|---|---|---|---|---|"
        tail -n +2 "$OUT/failover.tsv" | while IFS=$'\t' read -r c k res _probe after ver; do
            echo "| $c | $k | $res | $after | $ver |"
        done
    fi
} | tee "$OUT/table.md"
