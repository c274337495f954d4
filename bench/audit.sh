#!/usr/bin/env bash
# audit.sh — issue 9: the DHCP rate with the lease audit trail on (TCP to a real rsyslog) vs
# off, in the same run. One prodhcpd serves relayed dhcpperf load on a /10 (POOL_PREFIX);
# a private rsyslogd (Debian's, configured as tests/src/rsyslog.rs does: imtcp only, every
# message written raw to a file, work directory in the run's directory) listens in a third
# namespace. Modes, alternating inside every round (the order rotates by one each round, so
# no mode always runs first), each run on fresh tables, a fresh spool and a fresh rsyslog:
#
#   off    no `audit` section
#   file   `audit: (targets: [], file: Some(<run>/audit.jsonl), spool_dir: <run>/audit-spool)`
#   tcp    `audit: (targets: ["tcp://198.18.0.53:1514"], file: Some(...), spool_dir: ...)`
#          (the issue's configuration: syslog over TCP and the JSON-lines application log)
#
# Per mode and round: (1) `dhcpperf sweep` from SWEEP_START × SWEEP_FACTOR^k, STEP_DURATION s
# a step, until a step misses more than LOSS_PCT % (unanswered within 1 s): the highest rate
# with no request missed and the highest with ≤ LOSS_PCT % missed; (2) on fresh tables,
# `dhcpperf dora` at FIXED_RATE/s for DURATION s with every ACK recorded: p50/p99
# REQUEST→ACK, the server's CPU per lease (every process of the server namespace except the
# audit process, over the load), and with an audit section: the catch-up time (from the end of
# the load to the first `prodhcpctl audit status` report with no ring lag and, for tcp, the
# target connected with lag 0; reports come every 500 ms, so this is ±0.5 s), the audit
# process's CPU per lease (utime+stime of the `audit status` pid, from before the load to the
# catch-up), and the records written (tcp: `lease@32473` lines with event commit or renew in
# rsyslog's file after rsyslog stopped and flushed; file: commit/renew lines of the JSON-lines
# file) against the ACK lines dhcpperf recorded. Exact matching by ip/mac/seq is the system
# test's job (tests/tests/audit_trail.rs); this counts. Prints a Markdown table, then the
# tcp/off (and file/off) ratio of the rates by medians and best against best; asserts nothing.
#
#   sudo bench/audit.sh                                   # RUNS=3, ~25 min on 2 cores
#   sudo RUNS=1 STEP_DURATION=1 DURATION=5 bench/audit.sh # a quick check, ~5 min
#
# Knobs (each checked against a range): RUNS or ROUNDS (3, 1–20), MODES ("off tcp file"),
# SWEEP_START (2000, 100–200000), SWEEP_FACTOR (1.25, 1.05–4), STEP_DURATION (3, 1–60 s),
# LOSS_PCT (2.5, 0–50), FIXED_RATE (5000, 100–200000), DURATION (10, 1–300 s), WORKERS (2,
# 1–64), POOL_PREFIX (10, 8–14), CATCH_UP_TIMEOUT (120, 5–600 s), OUT
# (/var/tmp/prodhcp-audit-bench), NO_BUILD=1, BIN (target/release).
# The sweep's top rate is capped so that no sweep can exhaust the pool.
#
# Network safety: namespaces pdb-audit-NNNN-{srv,cli,log,lan} (NNNN = this script's PID):
# bridge br0 in lan joins srv:lan0 (198.18.0.1, prodhcpd), cli:lan0 (198.18.0.2, dhcpperf's
# relay address) and log:lan0 (198.18.0.53, rsyslogd's imtcp on port 1514). No host interface
# is touched; rsyslogd has no imuxsock/imklog/imjournal input, so it never reads the host's
# logs; every load is bounded; on exit every process started here is killed by PID and the
# namespaces are deleted. Each run's tables, spool, JSON-lines file, rsyslog file and ACK record are
# removed once counted (only logs and JSON reports stay under OUT).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS=${RUNS:-${ROUNDS:-3}}
MODES=${MODES-"off tcp file"}
SWEEP_START=${SWEEP_START:-2000}
SWEEP_FACTOR=${SWEEP_FACTOR:-1.25}
STEP_DURATION=${STEP_DURATION:-3}
LOSS_PCT=${LOSS_PCT:-2.5}
FIXED_RATE=${FIXED_RATE:-5000}
DURATION=${DURATION:-10}
WORKERS=${WORKERS:-2}
POOL_PREFIX=${POOL_PREFIX:-10}
CATCH_UP_TIMEOUT=${CATCH_UP_TIMEOUT:-120}
OUT=${OUT:-/var/tmp/prodhcp-audit-bench}
BIN="${BIN:-$ROOT/target/release}"
TAG="pdb-audit-$$"
NS_SRV="$TAG-srv" NS_CLI="$TAG-cli" NS_LOG="$TAG-log" NS_LAN="$TAG-lan"
SRV_IP=198.18.0.1 CLI_IP=198.18.0.2 LOG_IP=198.18.0.53 LOG_PORT=1514
CLOCK_HZ=$(getconf CLK_TCK)

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (network namespaces, port 67)"

in_range() { # in_range NAME VALUE MIN MAX [int]: a number within [MIN, MAX]
    python3 - "$@" <<'PY' || die "$1=$2: want a number from $3 to $4${5:+ (whole)}"
import sys
name, v, lo, hi = sys.argv[1:5]
whole = len(sys.argv) > 5
try:
    x = int(v) if whole else float(v)
except ValueError:
    sys.exit(1)
sys.exit(0 if float(lo) <= x <= float(hi) else 1)
PY
}
in_range RUNS "$RUNS" 1 20 int
in_range SWEEP_START "$SWEEP_START" 100 200000 int
in_range SWEEP_FACTOR "$SWEEP_FACTOR" 1.05 4
in_range STEP_DURATION "$STEP_DURATION" 1 60 int
in_range LOSS_PCT "$LOSS_PCT" 0 50
in_range FIXED_RATE "$FIXED_RATE" 100 200000 int
in_range DURATION "$DURATION" 1 300 int
in_range WORKERS "$WORKERS" 1 64 int
in_range POOL_PREFIX "$POOL_PREFIX" 8 14 int
in_range CATCH_UP_TIMEOUT "$CATCH_UP_TIMEOUT" 5 600 int
for m in $MODES; do
    case "$m" in off | tcp | file) ;; *) die "MODES: unknown mode '$m' (off, tcp, file)" ;; esac
done
[ -n "$MODES" ] || die "MODES is empty"

# The pool: 10.0.0.0/POOL_PREFIX. A sweep offers about top × STEP × f/(f−1) clients in all;
# the top rate is capped so that this stays within the pool (and at 200 000/s).
POOL_SIZE=$(((1 << (32 - POOL_PREFIX)) - 2))
POOL_LAST=$(python3 -c 'import ipaddress,sys; n=ipaddress.ip_network(f"10.0.0.0/{sys.argv[1]}"); print(n.broadcast_address-1)' "$POOL_PREFIX")
MAX_RATE=$(python3 -c 'import sys; p,s,f=int(sys.argv[1]),int(sys.argv[2]),float(sys.argv[3]); print(min(200000, int(p*0.9/(s*f/(f-1)))))' "$POOL_SIZE" "$STEP_DURATION" "$SWEEP_FACTOR")
[ "$MAX_RATE" -gt "$SWEEP_START" ] || die "POOL_PREFIX=$POOL_PREFIX too small for STEP_DURATION=$STEP_DURATION (top rate $MAX_RATE/s)"
[ $((FIXED_RATE * DURATION)) -lt "$POOL_SIZE" ] || die "FIXED_RATE × DURATION exceeds the pool (/$POOL_PREFIX)"

STARTED=()
cleanup() {
    local p ns
    for p in "${STARTED[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for ns in "$NS_SRV" "$NS_CLI" "$NS_LOG" "$NS_LAN"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    # The big files of an interrupted run (tables, spool, collected records).
    if [ -n "${WORK:-}" ] && [ -d "$WORK" ]; then
        find "$WORK" -maxdepth 2 \( -name state -o -name audit-spool -o -name audit.jsonl \
            -o -name rsyslog.log -o -name rsyslog.work \) -exec rm -rf {} + 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${NO_BUILD:-}" ]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -q -p prodhcp-supervisor -p prodhcp-ctl -p dhcpperf)
fi
for b in prodhcpd prodhcpctl dhcpperf; do [ -x "$BIN/$b" ] || die "$BIN/$b missing"; done
case " $MODES " in *" tcp "*) command -v rsyslogd >/dev/null || die "rsyslogd missing (apt-get install rsyslog)" ;; esac
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no | grep -q . && echo " (dirty)" || true)

# ------------------------------------------------------------------ lab --------
for ns in "$NS_SRV" "$NS_CLI" "$NS_LOG" "$NS_LAN"; do
    ip netns add "$ns"
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
done
ip -n "$NS_LAN" link add br0 type bridge
ip -n "$NS_LAN" link set br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
ip -n "$NS_LAN" link set br0 up
for l in "$NS_SRV ps $SRV_IP" "$NS_CLI pc $CLI_IP" "$NS_LOG pl $LOG_IP"; do
    set -- $l
    ip -n "$NS_LAN" link add "$2" type veth peer name lan0 netns "$1"
    ip -n "$NS_LAN" link set "$2" master br0 up
    ip -n "$1" addr add "$3/24" dev lan0
    ip -n "$1" link set lan0 up
done

mkdir -p "$OUT"
WORK="$OUT/work"
rm -rf "$WORK"
mkdir -p "$WORK"

# ---------------------------------------------------------------- prodhcp ------
config() { # config DIR MODE -> DIR/prodhcp.ron
    local dir="$1" mode="$2" audit=""
    mkdir -p "$dir/state"
    case "$mode" in
    tcp) audit="audit: (targets: [\"tcp://$LOG_IP:$LOG_PORT\"], file: Some(\"$dir/audit.jsonl\"), spool_dir: \"$dir/audit-spool\")," ;;
    file) audit="audit: (targets: [], file: Some(\"$dir/audit.jsonl\"), spool_dir: \"$dir/audit-spool\")," ;;
    esac
    cat >"$dir/prodhcp.ron" <<EOF
(
    state_dir: "$dir/state",
    control_socket: "$dir/state/ctl.sock",
    interfaces: [],
    workers: $WORKERS,
    log_level: "warn",
    durability: "${DURABILITY:-process}",
    $audit
    subnets: [
        (
            network: "10.0.0.0/$POOL_PREFIX",
            pools: ["10.0.0.1-$POOL_LAST"],
            lease_time: 86400,
            relays: ["$CLI_IP"],
            options: { "routers": "10.0.0.1" },
        ),
    ],
)
EOF
}

SRV_PID="" RSYSLOG_PID="" CUR_DIR=""
ctl() { "$BIN/prodhcpctl" --socket "$1/state/ctl.sock" "${@:2}"; }
wait_ctl() { # wait_ctl DIR: the control socket answers (≤ 10 s)
    local i
    for i in $(seq 1 200); do ctl "$1" status >/dev/null 2>&1 && return 0; sleep 0.05; done
    return 1
}
# audit_json DIR PYEXPR: PYEXPR on `audit status --json` (d: its data, r: the report,
# t: the targets), "?" on failure.
audit_json() {
    ctl "$1" --json audit status 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin); d = d.get("data", d)
    r = d.get("report") or {}
    t = r.get("targets") or []
    print(eval(sys.argv[1]))
except Exception:
    print("?")' "$2"
}
audit_pid() { audit_json "$1" 'd.get("pid") or ""'; }
# The first report at or after MS (unix ms) with no ring lag and every target connected with
# no lag: prints its reported_unix_ms, or "" if this one is not it.
caught_up_at() {
    audit_json "$1" '(d.get("reported_unix_ms") or "") if d.get("running") and (d.get("reported_unix_ms") or 0) >= '"$2"' and r and r.get("ring_lag_records") == 0 and all(x.get("connected") and x.get("lag_records") == 0 for x in t) else ""'
}
ticks_of() { # utime+stime of one process, clock ticks (0 if gone)
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return 0; }
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    echo $((${12} + ${13}))
}
ns_ticks() { # ns_ticks NS [EXCLUDED_PID]: utime+stime of every process in NS but one
    local t=0 p
    for p in $(ip netns pids "$1" 2>/dev/null); do
        [ "$p" = "${2:-}" ] && continue
        t=$((t + $(ticks_of "$p")))
    done
    echo "$t"
}
now_ms() { date +%s%3N; }

# rsyslog as tests/src/rsyslog.rs renders it: network input only, raw messages to a file.
start_rsyslog() { # start_rsyslog DIR
    local dir="$1" i
    mkdir -p "$dir/rsyslog.work"
    cat >"$dir/rsyslog.conf" <<EOF
# Bench collector written by bench/audit.sh: network input only (as tests/src/rsyslog.rs).
global(workDirectory="$dir/rsyslog.work" net.enableDNS="off" maxMessageSize="64k")
main_queue(queue.timeoutShutdown="10000")
module(load="imtcp")
input(type="imtcp" address="$LOG_IP" port="$LOG_PORT")
template(name="rawline" type="string" string="%rawmsg%\\n")
if \$inputname == "rsyslogd" then {
    action(type="omfile" file="$dir/rsyslog.internal.log")
    stop
}
action(type="omfile" file="$dir/rsyslog.log" template="rawline")
EOF
    ip netns exec "$NS_LOG" rsyslogd -n -f "$dir/rsyslog.conf" -i "$dir/rsyslog.pid" \
        >"$dir/rsyslog.out" 2>&1 &
    RSYSLOG_PID=$!
    STARTED+=("$RSYSLOG_PID")
    for i in $(seq 1 200); do
        kill -0 "$RSYSLOG_PID" 2>/dev/null || die "rsyslogd exited: $(tail -5 "$dir/rsyslog.out")"
        # A connect from the load namespace (an empty connection: nothing is logged).
        ip netns exec "$NS_CLI" timeout 2 bash -c "exec 3<>/dev/tcp/$LOG_IP/$LOG_PORT" 2>/dev/null && return 0
        sleep 0.05
    done
    die "rsyslogd does not listen on $LOG_IP:$LOG_PORT: $(tail -5 "$dir/rsyslog.out")"
}
stop_rsyslog() { # SIGTERM, ≤ 20 s to drain its queue and exit, then SIGKILL (said)
    [ -n "$RSYSLOG_PID" ] || return 0
    kill -TERM "$RSYSLOG_PID" 2>/dev/null || true
    for _ in $(seq 1 400); do kill -0 "$RSYSLOG_PID" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$RSYSLOG_PID" 2>/dev/null; then
        log "  rsyslogd did not exit within 20 s of SIGTERM: killed (its count may be short)"
        kill -9 "$RSYSLOG_PID" 2>/dev/null || true
    fi
    wait "$RSYSLOG_PID" 2>/dev/null || true
    RSYSLOG_PID=""
}
start_mode() { # start_mode MODE DIR: fresh tables, spool (and rsyslog), ready and idle
    local mode="$1" dir="$2" i
    CUR_DIR="$dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$mode" = tcp ] && start_rsyslog "$dir"
    config "$dir" "$mode"
    ip netns exec "$NS_SRV" "$BIN/prodhcpd" --config "$dir/prodhcp.ron" >"$dir/server.log" 2>&1 &
    SRV_PID=$!
    STARTED+=("$SRV_PID")
    wait_ctl "$dir" || die "prodhcpd did not start: $(tail -5 "$dir/server.log")"
    if [ "$mode" = tcp ]; then
        for i in $(seq 1 300); do
            [ "$(audit_json "$dir" 'bool(d.get("running") and t and t[0].get("connected"))')" = True ] && break
            sleep 0.1
        done
        [ "$(audit_json "$dir" 'bool(t and t[0].get("connected"))')" = True ] ||
            die "the audit process did not connect to rsyslog: $(audit_json "$dir" 'd')"
    elif [ "$mode" = file ]; then
        for i in $(seq 1 300); do [ "$(audit_json "$dir" 'bool(d.get("running") and r)')" = True ] && break; sleep 0.1; done
        [ "$(audit_json "$dir" 'bool(d.get("running") and r)')" = True ] ||
            die "the audit process did not report: $(audit_json "$dir" 'd')"
    fi
    settle
}
settle() { # wait (≤ 60 s) until the server namespace is idle: the start-up scrub has finished
    local a b i
    for i in $(seq 1 120); do
        a=$(ns_ticks "$NS_SRV"); sleep 0.5; b=$(ns_ticks "$NS_SRV")
        [ $((b - a)) -le $((CLOCK_HZ / 50)) ] && break
    done
    [ "$i" -gt 1 ] && log "  server settled after ~$((i / 2)) s"
    return 0
}
stop_mode() { # stop the server (and rsyslog); drop the tables, the spool and the records
    if [ -n "$SRV_PID" ]; then
        kill -TERM "$SRV_PID" 2>/dev/null || true
        for _ in $(seq 1 200); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$SRV_PID" 2>/dev/null || true
        wait "$SRV_PID" 2>/dev/null || true
    fi
    # Anything the server left in its namespace (a worker or the audit process).
    for p in $(ip netns pids "$NS_SRV" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    stop_rsyslog
    SRV_PID=""
    rm -rf "$CUR_DIR/state" "$CUR_DIR/audit-spool" "$CUR_DIR/audit.jsonl" "$CUR_DIR/rsyslog.log" \
        "$CUR_DIR/rsyslog.work" "$CUR_DIR/acks.jsonl"
}
perf() { # perf OUTFILE ARGS...: dhcpperf from cli (relay CLI_IP) to the server
    local out="$1" p
    shift
    ip netns exec "$NS_CLI" timeout 900 "$BIN/dhcpperf" "$@" --server "$SRV_IP" --relay-ip "$CLI_IP" \
        --max-clients 16000000 --hard-deadline 800s --json >"$out" 2>"$out.err" &
    p=$!
    STARTED+=("$p")
    wait "$p" || true
}
# Audit records of leases granted (event commit or renew): rsyslog's raw RFC 5424 lines with
# the lease@32473 element, or the JSON-lines file.
count_lines() { # count_lines REGEX FILE: matching lines (0 when the file is missing)
    [ -f "$2" ] || { echo 0; return 0; }
    grep -cE "$1" "$2" || true
}
count_syslog() { count_lines '\[lease@32473 [^]]*event="(commit|renew)"' "$1"; }
count_jsonl() { count_lines '"event":"(commit|renew)"' "$1"; }

# ------------------------------------------------------------- the runs --------
printf 'round\tmode\tzero_loss_rate\tzero_loss_leases_per_s\tloss_rate\tloss_leases_per_s\tleases_per_s\tmissed_pct\tp50_ra\tp99_ra\tsrv_us_per_lease\taudit_us_per_lease\tcatch_up_ms\trecords\tacks\twhere\n' >"$OUT/summary.tsv"
T_START=$(date +%s)
log "commit $COMMIT$DIRTY; pool 10.0.0.0/$POOL_PREFIX; sweep $SWEEP_START/s ×$SWEEP_FACTOR to ≤ $MAX_RATE/s, ${STEP_DURATION}s steps; fixed $FIXED_RATE/s × ${DURATION}s"
read -r -a MODE_LIST <<<"$MODES"
for round in $(seq 1 "$RUNS"); do
    n=${#MODE_LIST[@]}
    for k in $(seq 0 $((n - 1))); do
        mode=${MODE_LIST[$(((round - 1 + k) % n))]}
        dir="$WORK/r$round-$mode"
        log "round $round, $mode: sweep from $SWEEP_START/s"
        start_mode "$mode" "$dir"
        perf "$dir/sweep.json" sweep --start-rate "$SWEEP_START" --step-factor "$SWEEP_FACTOR" \
            --max-rate "$MAX_RATE" --step-duration "${STEP_DURATION}s" --loss-threshold "$LOSS_PCT" --max-steps 40
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
        log "round $round, $mode: zero-loss $zl leases/s, ≤$LOSS_PCT % $il; now $FIXED_RATE/s for $DURATION s"
        fdir="$dir-fixed"
        start_mode "$mode" "$fdir"
        apid=""
        [ "$mode" != off ] && apid=$(audit_pid "$fdir")
        a0=0
        [ -n "$apid" ] && a0=$(ticks_of "$apid")
        s0=$(ns_ticks "$NS_SRV" "$apid")
        perf "$fdir/dora.json" dora --seed 7 --rate "$FIXED_RATE" --duration "${DURATION}s" \
            --record "$fdir/acks.jsonl"
        t_end=$(now_ms)
        s1=$(ns_ticks "$NS_SRV" "$apid")
        acks=$(count_lines '"event":"ack"' "$fdir/acks.jsonl")
        catch="–" aus="–" records="–" where="–"
        if [ "$mode" != off ]; then
            at=""
            for _ in $(seq 1 $((CATCH_UP_TIMEOUT * 10))); do
                at=$(caught_up_at "$fdir" "$t_end")
                [ -n "$at" ] && [ "$at" != "?" ] && break
                at=""
                sleep 0.1
            done
            if [ -n "$at" ]; then
                catch=$((at > t_end ? at - t_end : 0))
            else
                catch="> ${CATCH_UP_TIMEOUT}000"
                log "  no catch-up within $CATCH_UP_TIMEOUT s: $(audit_json "$fdir" 'd')"
            fi
            a1=$(ticks_of "$apid")
            [ "$(audit_pid "$fdir")" = "$apid" ] || log "  the audit process changed pid (restarted?): its CPU is partial"
            aus=$(python3 -c 'import sys; t,hz,n=map(int,sys.argv[1:]); print("NA" if not n else "{:.1f}".format(t/hz*1e6/n))' "$((a1 - a0))" "$CLOCK_HZ" "${acks:-0}")
            audit_json "$fdir" 'json.dumps(d)' >"$fdir/audit-status.json"
            if [ "$mode" = tcp ]; then
                # rsyslog writes what it received asynchronously: wait (≤ 30 s) until it holds a
                # record per ACK or its count stops growing for 2 s, then stop it (it drains).
                last=-1 same=0
                for _ in $(seq 1 300); do
                    c=$(count_syslog "$fdir/rsyslog.log")
                    [ "${c:-0}" -ge "${acks:-0}" ] && break
                    if [ "$c" = "$last" ]; then same=$((same + 1)); else same=0; fi
                    [ "$same" -ge 20 ] && break
                    last=$c
                    sleep 0.1
                done
                stop_rsyslog
                records=$(count_syslog "$fdir/rsyslog.log") where=rsyslog
            else
                records=$(count_jsonl "$fdir/audit.jsonl") where=file
            fi
        fi
        stop_mode
        python3 - "$fdir/dora.json" "$round" "$mode" "$zr" "$zl" "$ir" "$il" "$((s1 - s0))" "$CLOCK_HZ" \
            "$aus" "$catch" "$records" "${acks:-0}" "$where" >>"$OUT/summary.tsv" <<'PY'
import json, sys
f, rnd, mode, zr, zl, ir, il, ticks, hz, aus, catch, records, acks, where = sys.argv[1:]
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
n = (p.get("counts") or {}).get("acks", 0)
cpu = "NA" if not n else "{:.1f}".format(int(ticks) / int(hz) * 1e6 / n)
g = lambda k, fmt: "NA" if p.get(k) is None else fmt.format(p[k])
print("\t".join([rnd, mode, zr, zl, ir, il, g("leases_per_s", "{:.0f}"), g("missed_pct", "{:.2f}"),
    l(["request_ack", "request", "ack"], "p50_ms"), l(["request_ack", "request", "ack"], "p99_ms"),
    cpu, aus, str(catch), records, acks, where]))
PY
        tail -1 "$OUT/summary.tsv" >&2
    done
done
ELAPSED=$(($(date +%s) - T_START))

# ----------------------------------------------------------------- report ------
python3 - "$OUT/summary.tsv" "$COMMIT$DIRTY" "$LOSS_PCT" "$FIXED_RATE" "$DURATION" "$POOL_PREFIX" \
    "$SWEEP_START" "$SWEEP_FACTOR" "$STEP_DURATION" "$ELAPSED" <<'PY' | tee "$OUT/table.md"
import csv, statistics, sys
tsv, commit, loss, rate, dur, prefix, start, factor, step, elapsed = sys.argv[1:]
rows = list(csv.DictReader(open(tsv), delimiter="\t"))
print(f"### Audit trail cost: relayed DORA on a /{prefix}, audit off vs file vs TCP to rsyslog (commit {commit})")
print()
print(f"Sweep from {start}/s ×{factor}, {step} s steps; fixed run {rate}/s for {dur} s; "
      f"{len(set(r['round'] for r in rows))} round(s) in {int(elapsed) // 60} min {int(elapsed) % 60} s.")
print()
print(f"| mode | round | zero-loss leases/s (offered/s) | ≤ {loss} % missed leases/s (offered/s) "
      f"| at {rate}/s: leases/s, missed % | p50 / p99 REQUEST→ACK ms | server CPU µs/lease "
      f"| audit CPU µs/lease | catch-up ms | records / ACKs |")
print("|---|---|---|---|---|---|---|---|---|---|")
order = {"off": 0, "file": 1, "tcp": 2}
for r in sorted(rows, key=lambda r: (order.get(r["mode"], 9), int(r["round"]))):
    rec = "–" if r["where"] == "–" else f"{r['records']} / {r['acks']} ({r['where']})"
    print(f"| {r['mode']} | {r['round']} | {r['zero_loss_leases_per_s']} ({r['zero_loss_rate']}) "
          f"| {r['loss_leases_per_s']} ({r['loss_rate']}) | {r['leases_per_s']}, {r['missed_pct']} "
          f"| {r['p50_ra']} / {r['p99_ra']} | {r['srv_us_per_lease']} | {r['audit_us_per_lease']} "
          f"| {r['catch_up_ms']} | {rec} |")
print()
def vals(mode, key):
    out = []
    for r in rows:
        if r["mode"] == mode:
            try:
                out.append(float(r[key]))
            except ValueError:
                pass
    return out
def ratio(a, b):
    return "NA" if not a or not b else "{:.1f} %".format(100 * a / b)
modes = [m for m in ("tcp", "file") if vals(m, "zero_loss_leases_per_s") or vals(m, "loss_leases_per_s")]
if vals("off", "zero_loss_leases_per_s") or vals("off", "loss_leases_per_s"):
    print(f"| ratio | zero-loss, medians | zero-loss, best vs best | ≤ {loss} % missed, medians | ≤ {loss} % missed, best vs best |")
    print("|---|---|---|---|---|")
    for m in modes:
        cells = []
        for key in ("zero_loss_leases_per_s", "loss_leases_per_s"):
            a, b = vals(m, key), vals("off", key)
            cells.append(ratio(a and statistics.median(a), b and statistics.median(b)))
            cells.append(ratio(a and max(a), b and max(b)))
        print(f"| {m} / off | " + " | ".join(cells) + " |")
PY
