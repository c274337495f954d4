#!/usr/bin/env bash
# avalanche.sh — issue 10's "everyone reboots at once" benchmark: COUNT relayed clients send
# their first DISCOVER at the same moment (`dhcpperf avalanche --rate 0`), each then retries like
# an RFC 2131 client until bound, against prodhcpd and Kea 2.2 on the same machine, same pool,
# same relay mapping. Prints numbers, asserts nothing.
#
#   sudo bench/avalanche.sh                        # 10,000 clients (quick), then 100,000, each server
#   sudo COUNT=10000 bench/avalanche.sh            # only the quick size
#   sudo COUNT=200000 RUNS=3 SERVERS=prodhcp NO_BUILD=1 bench/avalanche.sh
#
# Load (in namespace cli, relay 198.18.0.2 → server 198.18.0.1:67):
#   dhcpperf avalanche --count N --rate 0 --backoff-initial 4s --jitter 1s --backoff-max 64s
#                      --deadline DEADLINE --give-up 30s
#   i.e. RFC 2131 4.1's retransmission: first retry after 4 s ± 1 s, doubling (8, 16, 32, 64 s),
#   each delay randomised uniformly within ±1 s (reproducible from --seed). dhcpperf's own
#   default --backoff-initial is 1 s; this script passes 4 s explicitly (BACKOFF_INITIAL, JITTER,
#   BACKOFF_MAX to change). A client's retransmission repeats the step it is in (DISCOVER or
#   REQUEST); a client not bound by DEADLINE (default 120 s) counts as not bound.
#   The N first DISCOVERs leave as fast as dhcpperf can send them (2 cores: ~10,000 in 0.07–0.2 s,
#   100,000 in ~1.1 s, ~90,000/s); what the server's socket buffer (or Kea's packet queue)
#   cannot take is dropped, as in a real avalanche, and the clients' retries do the rest.
#
# Sizes: QUICK (default 10000) first, then COUNT (default 100000); QUICK is skipped when it is
# not smaller than COUNT (or empty). RUNS (default 1) rounds; a round runs every size × server,
# every measurement on a freshly started server with an empty lease store, started and waited
# for (it answers a relayed DISCOVER, bench/probe.py, then its CPU use settles) as in
# bench/compare.sh.
#
# Servers (SERVERS, default "prodhcp kea"):
#   prodhcp  prodhcpd, workers: 0 (one per core), durability "process" (DURABILITY to change)
#   kea      kea-dhcp4 2.2 (package kea-dhcp4-server), memfile persist=true, lfc-interval 0,
#            multi-threading on: thread-pool-size 2, packet-queue-size 64; socket type udp
#   Both: subnet 10.0.0.0/POOL (POOL default 14: 10.0.0.1–10.3.255.254, 262,142 addresses; 8
#   also works), pool = every host address, lease 86400 s (T1 43200, T2 75600), relay
#   198.18.0.2 mapped to that subnet, option routers, log level WARN.
#
# Per server and run, the script prints dhcpperf's report verbatim (sent, retransmissions,
# answered, missed, "bound B of N clients at the end", latency p50/p99/max of DISCOVER→OFFER,
# REQUEST→ACK and "DORA (to bound)" = first DISCOVER → ACK of each bound client) and the
# server's CPU: utime+stime from /proc/PID/stat of every process in the server namespace, before
# and after the load. At the end a summary table: bound/N, "all bound after" (when every client
# bound: dhcpperf's "last ACK at", seconds from the start of the avalanche to the last client's
# ACK), DORA p50/p99, retransmissions, server CPU.
# The header names the commit measured (git rev-parse --short HEAD, "-dirty" if the tree has
# changes), nproc and the load average at the start (the machine may be shared).
#
# Other knobs: OUT (default /var/tmp/prodhcp-avalanche: summary.tsv, machine.txt, logs/ with each
# run's config, server log and dhcpperf output), NO_BUILD=1 (use target/release as it is).
#
# Network safety: namespaces pavNNNN-srv (198.18.0.1) and pavNNNN-cli (198.18.0.2), NNNN = this
# script's PID, joined by one veth pair created inside them; no host interface is touched; pool
# addresses are handed out, never sent to. Every load is bounded (--deadline, --hard-deadline and
# timeout). On exit every process this script started is killed by PID, then any process left in
# its two namespaces (by PID), and the namespaces are deleted.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release"
COUNT="${COUNT:-100000}"
QUICK="${QUICK-10000}"
RUNS="${RUNS:-1}"
SERVERS="${SERVERS:-prodhcp kea}"
POOL="${POOL:-14}"
BACKOFF_INITIAL="${BACKOFF_INITIAL:-4s}"
JITTER="${JITTER:-1s}"
BACKOFF_MAX="${BACKOFF_MAX:-64s}"
DEADLINE="${DEADLINE:-120}"
DURABILITY="${DURABILITY:-process}"
OUT="${OUT:-/var/tmp/prodhcp-avalanche}"
CLOCK_HZ=$(getconf CLK_TCK)
NCPU=$(nproc)

TAG="pav$$"
SRV="$TAG-srv"
CLI="$TAG-cli"
SRV_IP=198.18.0.1
CLI_IP=198.18.0.2
WORK="$OUT/work"
LOGS="$OUT/logs"

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, port 67)"
for s in $SERVERS; do case "$s" in prodhcp | kea) ;; *) die "unknown server '$s' (prodhcp, kea)" ;; esac; done
case "$POOL" in 8 | 9 | 1[0-9] | 2[0-2]) ;; *) die "POOL must be a prefix length 8..22" ;; esac
[[ "$COUNT" =~ ^[0-9]+$ ]] && [ "$COUNT" -gt 0 ] || die "COUNT must be a positive number"
[[ "$DEADLINE" =~ ^[0-9]+$ ]] || die "DEADLINE is in whole seconds"
need() { command -v "$1" >/dev/null || die "$1 not found (package $2)"; }
need python3 python3
case " $SERVERS " in *" kea "*) need kea-dhcp4 kea-dhcp4-server ;; esac

SIZES="$COUNT"
if [ -n "$QUICK" ] && [ "$QUICK" -lt "$COUNT" ]; then SIZES="$QUICK $COUNT"; fi

# ------------------------------------------------------------------ cleanup ----
STARTED=()  # every process started here (servers, probes, dhcpperf), killed on exit
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

# ------------------------------------------------------------------ build ------
if [ "${NO_BUILD:-0}" != 1 ]; then
    log "building prodhcpd, dhcpperf (release)"
    cargo build --release -p prodhcp-supervisor -p dhcpperf --manifest-path "$ROOT/Cargo.toml" >&2
fi
for b in prodhcpd dhcpperf; do [ -x "$BIN/$b" ] || die "$BIN/$b missing"; done

mkdir -p "$OUT"
rm -rf "$WORK" "$LOGS"
mkdir -p "$WORK" "$LOGS"
SUMMARY="$OUT/summary.tsv"
[ -f "$SUMMARY" ] && mv "$SUMMARY" "$OUT/summary-$(date +%Y%m%d-%H%M%S).tsv"
printf 'time\tround\tclients\tserver\tbound\tall_bound_after_s\tdora_p50_ms\tdora_p99_ms\tdora_max_ms\tretransmits\tsent_discover\tsent_request\tphase_s\tsrv_cpu_s\texit\n' >"$SUMMARY"

COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] && COMMIT="$COMMIT-dirty"
{
    echo "# avalanche.sh — $(date -u +%FT%TZ)"
    echo "commit: $COMMIT   nproc: $NCPU   kernel: $(uname -r)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    case " $SERVERS " in *" kea "*) echo "kea-dhcp4: $(kea-dhcp4 -V 2>/dev/null | head -1)" ;; esac
    echo "sizes: $SIZES   runs: $RUNS   servers: $SERVERS   pool: 10.0.0.0/$POOL   lease: 86400 s"
    echo "load: dhcpperf avalanche --count N --rate 0 --backoff-initial $BACKOFF_INITIAL --jitter $JITTER --backoff-max $BACKOFF_MAX --deadline ${DEADLINE}s --give-up 30s (relayed via $CLI_IP)"
} | tee "$OUT/machine.txt"

# ------------------------------------------------------------------ lab --------
log "lab: namespaces $SRV ($SRV_IP) and $CLI ($CLI_IP)"
ip netns add "$SRV"
ip netns add "$CLI"
ip -n "$SRV" link add lan0 type veth peer name lan0 netns "$CLI"
for ns in "$SRV" "$CLI"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
    ip -n "$ns" link set lan0 up
done
ip -n "$SRV" addr add "$SRV_IP/24" dev lan0
ip -n "$CLI" addr add "$CLI_IP/24" dev lan0

# 10.0.0.0/POOL: network, first and last host address.
NET="10.0.0.0/$POOL"
FIRST=10.0.0.1
LAST=$(python3 -c "import ipaddress; print(ipaddress.ip_network('$NET').broadcast_address - 1)")

# ------------------------------------------------------------------ servers ----
prodhcp_config() { # prodhcp_config DIR
    mkdir -p "$1/state"
    cat >"$1/prodhcp.ron" <<EOF
(
    state_dir: "$1/state",
    control_socket: "$1/state/ctl.sock",
    interfaces: [],
    workers: 0,
    log_level: "warn",
    durability: "$DURABILITY",
    subnets: [
        (
            network: "$NET",
            pools: ["$FIRST-$LAST"],
            lease_time: 86400,
            renew_time: 43200,
            rebind_time: 75600,
            relays: ["$CLI_IP"],
            options: { "routers": "$FIRST" },
        ),
    ],
)
EOF
}

kea_config() { # kea_config DIR
    cat >"$1/kea-dhcp4.json" <<EOF
{"Dhcp4": {
  "interfaces-config": {"interfaces": ["lan0"], "dhcp-socket-type": "udp"},
  "control-socket": {"socket-type": "unix", "socket-name": "$1/kea4.sock"},
  "lease-database": {"type": "memfile", "persist": true, "name": "$1/kea-leases4.csv", "lfc-interval": 0},
  "valid-lifetime": 86400,
  "renew-timer": 43200,
  "rebind-timer": 75600,
  "multi-threading": {"enable-multi-threading": true, "thread-pool-size": 2, "packet-queue-size": 64},
  "subnet4": [
    {"id": 1, "subnet": "$NET",
     "pools": [{"pool": "$FIRST - $LAST"}],
     "relay": {"ip-addresses": ["$CLI_IP"]},
     "option-data": [{"name": "routers", "data": "$FIRST"}]}
  ],
  "loggers": [{"name": "kea-dhcp4",
               "output_options": [{"output": "$1/kea-dhcp4.log"}],
               "severity": "WARN"}]
}}
EOF
}

SPID=""  # PID of the running server
SDIR=""  # its directory
start_server() { # start_server NAME
    SDIR="$WORK/$1"
    rm -rf "$SDIR"
    mkdir -p "$SDIR"
    if [ "$1" = prodhcp ]; then
        prodhcp_config "$SDIR"
        ip netns exec "$SRV" "$BIN/prodhcpd" --config "$SDIR/prodhcp.ron" >"$SDIR/server.log" 2>&1 &
    else
        kea_config "$SDIR"
        ip netns exec "$SRV" env KEA_PIDFILE_DIR="$SDIR" KEA_LOCKFILE_DIR="$SDIR" \
            kea-dhcp4 -c "$SDIR/kea-dhcp4.json" >"$SDIR/server.log" 2>&1 &
    fi
    SPID=$!
    STARTED+=("$SPID")
}

alive() { [ -e "/proc/$1" ] && ! awk '{exit ($3 == "Z") ? 0 : 1}' "/proc/$1/stat" 2>/dev/null; }

srv_ticks() { # utime+stime of every process in the server namespace, clock ticks
    local t=0 p
    for p in $(ip netns pids "$SRV" 2>/dev/null); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}

# wait_ready NAME: the server answers a relayed DISCOVER (up to 120 s), then its namespace's CPU
# use drops below ~2 % of a core over 0.5 s (up to 60 s), then dirty pages are written out.
wait_ready() {
    local p rc=0 a b i
    ip netns exec "$CLI" timeout 125 python3 "$ROOT/bench/probe.py" "$SRV_IP" "$CLI_IP" 120 \
        >"$SDIR/probe.out" 2>&1 &
    p=$!
    STARTED+=("$p")
    wait "$p" || rc=$?
    if [ "$rc" != 0 ] || ! alive "$SPID"; then
        log "$1 did not answer; see $SDIR/server.log"
        return 1
    fi
    for i in $(seq 1 120); do
        a=$(srv_ticks); sleep 0.5; b=$(srv_ticks)
        [ $((b - a)) -le $((CLOCK_HZ / 50)) ] && break
    done
    timeout 300 sync -f "$SDIR" || true
    return 0
}

stop_server() {
    local p
    [ -n "$SPID" ] || return 0
    kill -TERM "$SPID" 2>/dev/null || true
    for _ in $(seq 1 100); do alive "$SPID" || break; sleep 0.1; done
    kill -KILL "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
    for p in $(ip netns pids "$SRV" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    for _ in $(seq 1 50); do [ -z "$(ip netns pids "$SRV" 2>/dev/null)" ] && break; sleep 0.1; done
    SPID=""
}

# ------------------------------------------------------------------ runs -------
run_one() { # run_one ROUND N NAME
    local round="$1" n="$2" name="$3" out c0 c1 cpu p rc=0
    echo
    echo "## $name, $n clients, round $round/$RUNS"
    start_server "$name"
    if ! wait_ready "$name"; then
        stop_server
        printf '%s\t%s\t%s\t%s\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tno-start\n' \
            "$(date -u +%FT%TZ)" "$round" "$n" "$name" >>"$SUMMARY"
        echo "server did not start (see $LOGS)"
        return 0
    fi
    out="$SDIR/dhcpperf.out"
    c0=$(srv_ticks)
    ip netns exec "$CLI" timeout $((DEADLINE + 120)) "$BIN/dhcpperf" avalanche --count "$n" --rate 0 \
        --backoff-initial "$BACKOFF_INITIAL" --jitter "$JITTER" --backoff-max "$BACKOFF_MAX" \
        --deadline "${DEADLINE}s" --give-up 30s --hard-deadline "$((DEADLINE + 60))s" \
        --max-clients "$((n + 1))" --server "$SRV_IP" --relay-ip "$CLI_IP" >"$out" 2>"$out.err" &
    p=$!
    STARTED+=("$p")
    wait "$p" || rc=$?
    c1=$(srv_ticks)
    cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$CLOCK_HZ" 'BEGIN{printf "%.2f", (b - a) / hz}')
    sed 's/^/    /' "$out"
    [ -s "$out.err" ] && sed 's/^/    stderr: /' "$out.err"
    echo "    server CPU (utime+stime of its processes, before → after the load): $cpu s (dhcpperf exit $rc)"
    stop_server
    awk -v t="$(date -u +%FT%TZ)" -v round="$round" -v n="$n" -v srv="$name" -v cpu="$cpu" -v rc="$rc" '
        /^phase / { for (i = 1; i <= NF; i++) if ($i == "after") ph = $(i + 1) }
        /^  sent / { for (i = 1; i <= NF; i++) { if ($i == "discover") sd = $(i + 1); if ($i == "request") sr = $(i + 1); if ($i == "retransmit") re = $(i + 1) } }
        /^  bound / { b = $2; for (i = 1; i <= NF; i++) if ($i == "at" && $(i + 1) ~ /^[0-9.]+$/) last = $(i + 1) }
        /DORA \(to bound\)/ { p50 = $5; p99 = $6; mx = $7 }
        END {
            if (b == "") b = "NA"
            if (p50 == "") { p50 = "NA"; p99 = "NA"; mx = "NA" }
            all = (b != "NA" && b + 0 == n + 0 && last != "") ? sprintf("%.2f", last) : "NA"
            printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t, round, n, srv, b, all,
                p50, p99, mx, (re == "" ? "NA" : re), (sd == "" ? "NA" : sd), (sr == "" ? "NA" : sr),
                (ph == "" ? "NA" : ph), cpu, rc
        }' "$out" >>"$SUMMARY"
    rm -rf "$LOGS/$name-$n-r$round"
    cp -r "$SDIR" "$LOGS/$name-$n-r$round"
    rm -rf "$LOGS/$name-$n-r$round/state"
}

for round in $(seq 1 "$RUNS"); do
    for n in $SIZES; do
        for name in $SERVERS; do
            log "round $round/$RUNS: $name, $n clients"
            run_one "$round" "$n" "$name"
        done
    done
done
rm -rf "$WORK"

# ------------------------------------------------------------------ summary ----
echo
echo "## Summary (commit $COMMIT, nproc $NCPU; DORA = first DISCOVER → ACK of each bound client)"
echo
echo "| clients | server | round | bound | all bound after s | DORA p50 ms | DORA p99 ms | retransmissions | server CPU s |"
echo "|---|---|---|---|---|---|---|---|---|"
awk -F'\t' 'NR > 1 {
    printf "| %s | %s | %s | %s of %s | %s | %s | %s | %s | %s |\n", $3, $4, $2, $5, $3,
        ($6 == "NA" ? "– (not all)" : $6), $7, $8, $10, $14 }' "$SUMMARY"
echo
log "rows: $SUMMARY; configs, server logs and dhcpperf output: $LOGS"
