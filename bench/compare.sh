#!/usr/bin/env bash
# compare.sh — issue 3's side-by-side benchmark: prodhcp vs Kea 2.2, ISC dhcpd 4.4 and a no-logic
# responder, same load, same machine, same run. Prints a Markdown table; asserts nothing.
#
#   sudo bench/compare.sh                         # the full matrix (see "duration" below)
#   sudo RUNS=1 DURATION=3 SERVERS="prodhcp-1 kea-mt2 responder" POOLS=16 GENERATORS=dhcpperf \
#        bench/compare.sh                         # a smoke run (~3 min + ~2 min start-up/reload;
#                                                 # STARTUP_LEASES= skips the latter)
#
# Servers (SERVERS, default all, in this order inside every round):
#   prodhcp-1   prodhcpd, workers: 1                 prodhcp-n  prodhcpd, workers: 0 (one per core)
#   kea-st      kea-dhcp4 2.2, memfile persist=true, lfc-interval 0, multi-threading off
#   kea-mt2     the same with multi-threading on, thread-pool-size 2, packet-queue-size 64
#   dhcpd       ISC dhcpd 4.4 (lease file, fsync per lease); only /24 and /16 (it rejects a /8 range)
#   responder   `dhcpperf responder` (canned OFFER/ACK, no lease state, one thread per core):
#               the ceiling of this harness on this machine
#   prodhcp runs with `durability: "$DURABILITY"` (default "process": replies once the change is
#   in the shared mapping, like Kea's memfile, which writes its lease file without fsync; set
#   DURABILITY=power to msync every batch before its replies, closer to dhcpd's fsync per lease).
#   All use relay mapping (giaddr 198.18.0.2 → the 10.0.0.0/N subnet), lease time 86400 s, log
#   level WARN (Kea logs every lease at INFO), socket type udp for Kea, the same pool.
#
# Pools (POOLS, default "24 16 8"), all 10.0.0.0/N, 10.0.0.1 to the last host:
#   24  254 addresses: clients CYCLE over 250 MACs (returning clients after the first 250);
#       perfdhcp only — dhcpperf has no cycling-client mode, every dhcpperf client is new and a
#       /24 runs dry after 254 leases, so dhcpperf rows for /24 are skipped.
#   16  60000 cycling clients (perfdhcp -R 60000; dhcpperf: every step re-uses seed 1, clients
#       0..min(rate × step, 60000), so steps above 60000/STEP_DURATION per second are shorter).
#   8   every exchange a new client (perfdhcp -R 16000000; dhcpperf's own `sweep`).
#
# Generators (GENERATORS, default "perfdhcp dhcpperf"), both in namespace cli, relay mode:
#   perfdhcp  fixed-rate sweep over PERF_RATES, each step DURATION s on a fresh server:
#               perfdhcp -4 -l 198.18.0.2 -R CLIENTS -r RATE -p DURATION -d 2 -W 500000 198.18.0.1
#             stops after the first step with more than 2.5 % of requests dropped. perfdhcp burns
#             ~1 core when flooding and is the bottleneck above ~5k/s on 2 cores (the responder
#             row shows where): its numbers are the fair anchor, not a server's ceiling.
#   dhcpperf  `dhcpperf sweep` (/8) or the same stepping done here with `dhcpperf dora` (/16):
#             rates SWEEP_START × SWEEP_FACTOR^k, STEP_DURATION s each, until a step misses
#             more than 2.5 % (a request unanswered within 1 s is missed); then, on a fresh
#             server, `dhcpperf dora` at half the highest zero-loss rate for DURATION s for p99.
#
# Rounds: RUNS (default 3) rounds; a round runs every pool × generator × server once, servers
# alternating (round 1: all servers, round 2: all servers, ...). Each measurement starts a fresh
# server with an empty lease store and waits until it answers a relayed DISCOVER (bench/probe.py).
#
# Start-up/reload (STARTUP_LEASES, default "100000 1000000"; empty = skip), prodhcp-n vs Kea
# (MT off; the loader is the same): the same Kea memfile CSV (bench/gen_kea_csv.py, addresses
# then spread over the /8 with a stride so Kea's iterative allocator does not walk used ones —
# as the anchors did), imported into prodhcp with `prodhcpctl leases import --format kea-csv`
# and copied as Kea's lease file. RUNS runs each: exec → first OFFER; reload: prodhcp SIGHUP
# until `prodhcpctl status` shows the new generation, Kea `config-reload` round trip (Kea
# re-reads the whole lease file); then time until a new probe gets an OFFER. 10M is skipped for
# Kea (~23 s per 1M, ~4 min + reload at 10M); prodhcp at 10M: bench/startup_reload.sh.
#
# Other knobs: DURATION (10 s), STEP_DURATION (5 s, or DURATION if smaller), PERF_RATES
# ("1000 2000 3000 4000 5000 6000 8000 10000 12000"), SWEEP_START (500), SWEEP_FACTOR (1.25),
# SWEEP_MAX (200000), PERF_THREADS (perfdhcp -g, default: perfdhcp's own), OUT (results dir,
# default /var/tmp/prodhcp-compare), NO_BUILD=1 (use the binaries in target/release as they are).
#
# Output under OUT: steps.tsv (one row per generator step: rate, leases/s, sent/answered/dropped,
# p99s, server CPU s), summary.tsv (one row per round × generator × pool × server), startup.tsv,
# table.md (the Markdown printed at the end), logs/ (configs, server logs and generator output
# of the last run of each server; the scratch dir work/ is deleted at the end). Earlier TSVs in
# OUT are moved to OUT/old-<time>/.
#
# Duration of the full matrix (defaults, 2 cores), estimated from the smoke runs' step times
# (perfdhcp step ≈ DURATION + 3 s with restart and settling; dhcpperf step ≈ STEP_DURATION + 0.7 s)
# and step counts (perfdhcp: ~9 steps for prodhcp ×2 and the responder, ~4 Kea ST, ~6 Kea MT, 1–3
# dhcpd; dhcpperf from 500/s × 1.25: ~21–23 steps for prodhcp ×2 and the responder, ~12–13 Kea,
# ~2 dhcpd): per round ≈ 25 min perfdhcp (3 pools) + ≈ 21 min dhcpperf (2 pools) ≈ 45 min, so
# ≈ 2 h 20 min for RUNS=3, plus ≈ 5 min start-up/reload (Kea at 1M: ~23 s start + ~18 s reload
# per run; 1M lease import into prodhcp ~35 s once). DURATION=5 saves ≈ 35 min.
#
# Network safety: namespaces pcmpNNNN-srv (198.18.0.1) and pcmpNNNN-cli (198.18.0.2) (NNNN =
# this script's PID) joined by one veth pair created inside them; no host interface is touched;
# pool addresses are handed out, never sent to. Kea and dhcpd bind lan0 inside the server
# namespace only. Every load is bounded (-p / --duration / timeout); on exit every process this
# script started is killed by PID, then any process left in the two namespaces (by PID), and the
# namespaces are deleted; the script then checks that none of its server PIDs survived.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-10}"
if [ -z "${STEP_DURATION:-}" ]; then
    STEP_DURATION=5
    [ "$DURATION" -lt 5 ] && STEP_DURATION="$DURATION"
fi
SERVERS="${SERVERS:-prodhcp-1 prodhcp-n kea-st kea-mt2 dhcpd responder}"
POOLS="${POOLS:-24 16 8}"
GENERATORS="${GENERATORS:-perfdhcp dhcpperf}"
PERF_RATES="${PERF_RATES:-1000 2000 3000 4000 5000 6000 8000 10000 12000}"
SWEEP_START="${SWEEP_START:-500}"
SWEEP_FACTOR="${SWEEP_FACTOR:-1.25}"
SWEEP_MAX="${SWEEP_MAX:-200000}"
STARTUP_LEASES="${STARTUP_LEASES-100000 1000000}"
PERF_THREADS="${PERF_THREADS:-}"
OUT="${OUT:-/var/tmp/prodhcp-compare}"
LOSS_PCT=2.5
CLOCK_HZ=$(getconf CLK_TCK)
NCPU=$(nproc)

TAG="pcmp$$"
SRV="$TAG-srv"
CLI="$TAG-cli"
SRV_IP=198.18.0.1
CLI_IP=198.18.0.2
WORK="$OUT/work"
LOGS="$OUT/logs"

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, port 67)"
for s in $SERVERS; do
    case "$s" in prodhcp-1 | prodhcp-n | kea-st | kea-mt2 | dhcpd | responder) ;;
        *) die "unknown server '$s'" ;; esac
done
for p in $POOLS; do case "$p" in 24 | 16 | 8) ;; *) die "unknown pool '/$p' (24, 16, 8)" ;; esac; done
for g in $GENERATORS; do case "$g" in perfdhcp | dhcpperf) ;; *) die "unknown generator '$g'" ;; esac; done
need() { command -v "$1" >/dev/null || die "$1 not found (package $2)"; }
need python3 python3
case " $GENERATORS " in *" perfdhcp "*) need perfdhcp kea-admin; need /usr/bin/time time ;; esac
case " $SERVERS " in *" kea-"*) need kea-dhcp4 kea-dhcp4-server ;; esac
[ -n "$STARTUP_LEASES" ] && need kea-dhcp4 kea-dhcp4-server
case " $SERVERS " in *" dhcpd "*) need dhcpd isc-dhcp-server ;; esac

# ------------------------------------------------------------------ cleanup ----
STARTED=()      # every process started here (servers, generators, probes), killed on exit
SERVER_PIDS=()  # the server processes, checked to be gone at the end
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
    for p in "${SERVER_PIDS[@]}"; do
        if [ -e "/proc/$p" ] && ! awk '{exit ($3 == "Z") ? 0 : 1}' "/proc/$p/stat" 2>/dev/null; then
            log "WARNING: server process $p ($(cat "/proc/$p/comm" 2>/dev/null)) is still alive"
        fi
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ build ------
if [ "${NO_BUILD:-0}" != 1 ]; then
    log "building prodhcpd, prodhcpctl, dhcpperf (release)"
    cargo build --release -p prodhcp-supervisor -p prodhcp-ctl -p dhcpperf --manifest-path "$ROOT/Cargo.toml" >&2
fi
for b in prodhcpd prodhcpctl dhcpperf; do [ -x "$BIN/$b" ] || die "$BIN/$b missing"; done

# ------------------------------------------------------------------ results ----
mkdir -p "$OUT"
if compgen -G "$OUT/*.tsv" >/dev/null; then
    old="$OUT/old-$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$old"
    mv "$OUT"/*.tsv "$old"/
    [ -f "$OUT/table.md" ] && mv "$OUT/table.md" "$old"/
    log "earlier results moved to $old"
fi
rm -rf "$WORK" "$LOGS"
mkdir -p "$WORK" "$LOGS"
STEPS="$OUT/steps.tsv"
SUMMARY="$OUT/summary.tsv"
STARTUP="$OUT/startup.tsv"
printf 'time\tround\tgenerator\tpool\tserver\trate\tleases_per_s\tmissed_pct\tsent_do\trecv_do\tdrops_do\tsent_ra\trecv_ra\tdrops_ra\tp99_do_ms\tp99_ra_ms\tsrv_cpu_s\tgen_cpu_s\n' >"$STEPS"
printf 'time\tround\tgenerator\tpool\tserver\tzero_loss_rate\tzero_loss_leases_per_s\tisc_rate\tisc_leases_per_s\thalf_rate\thalf_leases_per_s\thalf_missed_pct\tp50_do_ms\tp99_do_ms\tp50_ra_ms\tp99_ra_ms\tsrv_cpu_us_per_lease\tnote\n' >"$SUMMARY"
printf 'time\tserver\tleases\trun\tstart_to_first_offer_s\trss_mb\treload_s\tafter_reload_offer_s\tloaded\timport_s\n' >"$STARTUP"

{
    echo "date: $(date -u +%FT%TZ)"
    echo "nproc: $NCPU"
    lscpu | head -20
    echo "kernel: $(uname -r)"
    echo "kea-dhcp4: $(kea-dhcp4 -V 2>/dev/null | head -1)"
    echo "dhcpd: $(dhcpd --version 2>&1 | head -1)"
    echo "perfdhcp: $(perfdhcp -v 2>&1 | head -1)"
    echo "prodhcp: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "knobs: RUNS=$RUNS DURATION=$DURATION STEP_DURATION=$STEP_DURATION SERVERS='$SERVERS' POOLS='$POOLS' GENERATORS='$GENERATORS' PERF_RATES='$PERF_RATES' SWEEP_START=$SWEEP_START SWEEP_FACTOR=$SWEEP_FACTOR STARTUP_LEASES='$STARTUP_LEASES'"
} >"$OUT/machine.txt"

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

# pool_subnet N -> "network|first|last|netmask"
pool_subnet() {
    case "$1" in
        24) echo "10.0.0.0/24|10.0.0.1|10.0.0.254|255.255.255.0" ;;
        16) echo "10.0.0.0/16|10.0.0.1|10.0.255.254|255.255.0.0" ;;
        8) echo "10.0.0.0/8|10.0.0.1|10.255.255.254|255.0.0.0" ;;
    esac
}

# ------------------------------------------------------------------ servers ----
prodhcp_config() { # prodhcp_config DIR POOL WORKERS
    local dir="$1" net first last mask
    IFS='|' read -r net first last mask <<<"$(pool_subnet "$2")"
    mkdir -p "$dir/state"
    cat >"$dir/prodhcp.ron" <<EOF
(
    state_dir: "$dir/state",
    control_socket: "$dir/state/ctl.sock",
    interfaces: [],
    workers: $3,
    log_level: "warn",
    durability: "${DURABILITY:-process}",
    subnets: [
        (
            network: "$net",
            pools: ["$first-$last"],
            lease_time: 86400,
            renew_time: 43200,
            rebind_time: 75600,
            relays: ["$CLI_IP"],
            options: { "routers": "$first" },
        ),
    ],
)
EOF
}

kea_config() { # kea_config DIR POOL THREADS (0 = multi-threading off)
    local dir="$1" threads="$3" net first last mask mt
    IFS='|' read -r net first last mask <<<"$(pool_subnet "$2")"
    if [ "$threads" -gt 0 ]; then
        mt="{\"enable-multi-threading\": true, \"thread-pool-size\": $threads, \"packet-queue-size\": 64}"
    else
        mt='{"enable-multi-threading": false}'
    fi
    cat >"$dir/kea-dhcp4.json" <<EOF
{"Dhcp4": {
  "interfaces-config": {"interfaces": ["lan0"], "dhcp-socket-type": "udp"},
  "control-socket": {"socket-type": "unix", "socket-name": "$dir/kea4.sock"},
  "lease-database": {"type": "memfile", "persist": true, "name": "$dir/kea-leases4.csv", "lfc-interval": 0},
  "valid-lifetime": 86400,
  "renew-timer": 43200,
  "rebind-timer": 75600,
  "multi-threading": $mt,
  "subnet4": [
    {"id": 1, "subnet": "$net",
     "pools": [{"pool": "$first - $last"}],
     "relay": {"ip-addresses": ["$CLI_IP"]},
     "option-data": [{"name": "routers", "data": "$first"}]}
  ],
  "loggers": [{"name": "kea-dhcp4",
               "output_options": [{"output": "$dir/kea-dhcp4.log"}],
               "severity": "WARN"}]
}}
EOF
}

dhcpd_config() { # dhcpd_config DIR POOL
    local dir="$1" net first last mask
    IFS='|' read -r net first last mask <<<"$(pool_subnet "$2")"
    cat >"$dir/dhcpd.conf" <<EOF
authoritative;
ping-check false;
default-lease-time 86400;
max-lease-time 86400;
min-lease-time 86400;
log-facility local7;
shared-network lab {
  subnet 198.18.0.0 netmask 255.255.255.0 { }
  subnet ${net%/*} netmask $mask {
    range $first $last;
    option routers $first;
  }
}
EOF
    touch "$dir/dhcpd.leases"
}

SPID=""  # PID of the running server
SDIR=""  # its directory
# start_server NAME POOL -> 0 started, 2 not applicable (dhcpd /8)
start_server() {
    local name="$1" pool="$2"
    SDIR="$WORK/$name-$pool"
    rm -rf "$SDIR"
    mkdir -p "$SDIR"
    case "$name" in
        prodhcp-1 | prodhcp-n)
            local w=1
            [ "$name" = prodhcp-n ] && w=0
            prodhcp_config "$SDIR" "$pool" "$w"
            ip netns exec "$SRV" "$BIN/prodhcpd" --config "$SDIR/prodhcp.ron" >"$SDIR/server.log" 2>&1 &
            ;;
        kea-st | kea-mt2)
            local t=0
            [ "$name" = kea-mt2 ] && t=2
            kea_config "$SDIR" "$pool" "$t"
            ip netns exec "$SRV" env KEA_PIDFILE_DIR="$SDIR" KEA_LOCKFILE_DIR="$SDIR" \
                kea-dhcp4 -c "$SDIR/kea-dhcp4.json" >"$SDIR/server.log" 2>&1 &
            ;;
        dhcpd)
            [ "$pool" = 8 ] && return 2
            dhcpd_config "$SDIR" "$pool"
            ip netns exec "$SRV" dhcpd -4 -f -q -cf "$SDIR/dhcpd.conf" -lf "$SDIR/dhcpd.leases" \
                -pf "$SDIR/dhcpd.pid" lan0 >"$SDIR/server.log" 2>&1 &
            ;;
        responder)
            ip netns exec "$SRV" "$BIN/dhcpperf" responder --listen "$SRV_IP" --threads "$NCPU" \
                --lease-time 86400 --duration 7200s >"$SDIR/server.log" 2>&1 &
            ;;
    esac
    SPID=$!
    STARTED+=("$SPID")
    SERVER_PIDS+=("$SPID")
    return 0
}

alive() { [ -e "/proc/$1" ] && ! awk '{exit ($3 == "Z") ? 0 : 1}' "/proc/$1/stat" 2>/dev/null; }

# probe_offer T0 TIMEOUT: seconds from T0 until a relayed DISCOVER got an OFFER (stdout); 1 if none.
probe_offer() {
    local t0="$1" timeout="$2" out="$WORK/probe.out" p rc=0
    ip netns exec "$CLI" timeout $((timeout + 5)) python3 "$ROOT/bench/probe.py" "$SRV_IP" "$CLI_IP" "$timeout" \
        >"$out" 2>>"$LOGS/probe.log" &
    p=$!
    STARTED+=("$p")
    wait "$p" || rc=$?
    [ "$rc" = 0 ] && [ -s "$out" ] || return 1
    python3 -c "print(f'{float(open(\"$out\").read()) - $t0:.3f}')"
}

# wait_ready NAME: the server answers a relayed DISCOVER (up to 120 s), then settles: its
# namespace's CPU use drops below ~4 % of a core over 0.5 s (prodhcp touches a fresh table's
# pages in a background child; up to 60 s), and dirty pages of the file system are written out
# (`sync -f`: a fresh /8 table is 1.3 GB of page cache that would otherwise be flushed in the
# middle of a later measurement).
wait_ready() {
    if ! probe_offer "$(date +%s.%N)" 120 >/dev/null || ! alive "$SPID"; then
        log "$1 did not answer; see $SDIR/server.log"
        return 1
    fi
    local a b i
    for i in $(seq 1 120); do
        a=$(srv_ticks); sleep 0.5; b=$(srv_ticks)
        [ $((b - a)) -le $((CLOCK_HZ / 50)) ] && break
    done
    [ "$i" -gt 1 ] && log "  $1 settled after ~$((i / 2)) s"
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
    # Workers / threads left behind in the server namespace (there should be none).
    for p in $(ip netns pids "$SRV" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    for _ in $(seq 1 50); do [ -z "$(ip netns pids "$SRV" 2>/dev/null)" ] && break; sleep 0.1; done
    SPID=""
}

srv_ticks() { # utime+stime of every process in the server namespace, clock ticks
    local t=0 p
    for p in $(ip netns pids "$SRV" 2>/dev/null); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
ticks_s() { awk -v a="$1" -v b="$2" -v hz="$CLOCK_HZ" 'BEGIN{printf "%.2f", (b - a) / hz}'; }
now() { date -u +%FT%TZ; }

# ------------------------------------------------------------------ perfdhcp ---
perf_clients() { case "$1" in 24) echo 250 ;; 16) echo 60000 ;; 8) echo 16000000 ;; esac; }

# perf_step ROUND POOL SERVER RATE -> echo "leases_per_s missed_pct srv_cpu_s"
perf_step() {
    local round="$1" pool="$2" name="$3" rate="$4" out c0 c1 g=()
    out="$SDIR/perfdhcp-$rate.out"
    [ -n "$PERF_THREADS" ] && g=(-g "$PERF_THREADS")
    c0=$(srv_ticks)
    ip netns exec "$CLI" timeout $((DURATION + 30)) /usr/bin/time -f '%U %S' -o "$out.time" \
        perfdhcp -4 "${g[@]}" -l "$CLI_IP" -R "$(perf_clients "$pool")" -r "$rate" -p "$DURATION" -d 2 \
        -W 500000 "$SRV_IP" >"$out" 2>&1 &
    local p=$!
    STARTED+=("$p")
    wait "$p" || true
    c1=$(srv_ticks)
    local cpu gen
    cpu=$(ticks_s "$c0" "$c1")
    gen=$(awk '{printf "%.2f", $1 + $2}' "$out.time" 2>/dev/null || echo NA)
    awk -v t="$(now)" -v round="$round" -v pool="$pool" -v srv="$name" -v rate="$rate" -v cpu="$cpu" -v gen="$gen" '
        /^Rate:/ {r = $2}
        /Statistics for: DISCOVER-OFFER/ {s = "do"}
        /Statistics for: REQUEST-ACK/ {s = "ra"}
        /^sent packets:/ {sent[s] = $3}
        /^received packets:/ {recv[s] = $3}
        /^drops:/ {drops[s] = $2}
        END {
            if (r == "") r = 0
            req = sent["do"] + sent["ra"]
            miss = (req > 0) ? 100 * (drops["do"] + drops["ra"]) / req : 100
            printf "%s\t%s\tperfdhcp\t%s\t%s\t%s\t%s\t%.3f\t%d\t%d\t%d\t%d\t%d\t%d\tNA\tNA\t%s\t%s\n",
                t, round, pool, srv, rate, r, miss, sent["do"], recv["do"], drops["do"],
                sent["ra"], recv["ra"], drops["ra"], cpu, gen
        }' "$out" | tee -a "$STEPS" | awk -F'\t' '{print $7, $8, $17}'
}

run_perfdhcp() { # run_perfdhcp ROUND POOL SERVER
    local round="$1" pool="$2" name="$3" rate lps miss cpu
    local zr=NA zl=NA ir=NA il=NA zcpu=NA
    for rate in $PERF_RATES; do
        start_server "$name" "$pool" || return 0
        if ! wait_ready "$name"; then stop_server; break; fi
        read -r lps miss cpu <<<"$(perf_step "$round" "$pool" "$name" "$rate")"
        stop_server
        log "  perfdhcp /$pool $name rate $rate: $lps leases/s, missed $miss %, server CPU $cpu s"
        if awk -v m="$miss" 'BEGIN{exit !(m == 0)}'; then
            zr=$rate; zl=$lps
            zcpu=$(awk -v c="$cpu" -v l="$lps" -v d="$DURATION" 'BEGIN{ if (l > 0) printf "%.1f", c * 1e6 / (l * d); else print "NA"}')
        fi
        if awk -v m="$miss" -v t="$LOSS_PCT" 'BEGIN{exit !(m <= t)}'; then ir=$rate; il=$lps; else break; fi
    done
    printf '%s\t%s\tperfdhcp\t%s\t%s\t%s\t%s\t%s\t%s\tNA\tNA\tNA\tNA\tNA\tNA\tNA\t%s\t%s\n' "$(now)" "$round" "$pool" \
        "$name" "$zr" "$zl" "$ir" "$il" "$zcpu" "clients=$(perf_clients "$pool"); cpu at zero-loss step" >>"$SUMMARY"
}

# ------------------------------------------------------------------ dhcpperf ---
# Fields of a dhcpperf --json phase report, as "leases_per_s missed_pct sent_do offers failed_do
# sent_ra acks failed_ra p50_do p99_do p50_ra p99_ra gen_cpu_s" (NA where absent).
# One file: one line per phase (a sweep: per step). Several files (the parts of one /16 step):
# their first phases summed into one line (p50/p99: the largest of the parts).
phase_fields() { # phase_fields JSONFILE...
    python3 - "$@" <<'PY'
import json, sys
def f(v, fmt="{:.3f}"):
    return "NA" if v is None else fmt.format(v)
if len(sys.argv) > 2:
    parts = []
    for fn in sys.argv[1:]:
        try:
            parts.append(json.load(open(fn))["phases"][0])
        except Exception:
            pass
    if not parts:
        sys.exit(0)
    c = lambda k: sum(p.get("counts", {}).get(k, 0) for p in parts)
    acks = c("acks")
    t = sum(p["counts"]["acks"] / p["leases_per_s"] for p in parts if p.get("leases_per_s"))
    req = c("sent_discover") + c("sent_request")
    miss = 100.0 * (c("failed_discover") + c("failed_request")) / req if req else 100.0
    def mx(kind, q):
        v = [((p.get("latency") or {}).get(kind) or {}).get(q) for p in parts]
        v = [x for x in v if x is not None]
        return max(v) if v else None
    gen = sum((p.get("cpu") or {}).get("user_s", 0) + (p.get("cpu") or {}).get("sys_s", 0) for p in parts)
    print(f(parts[0].get("offered_rate"), "{:.0f}"), f(acks / t if t else 0.0, "{:.1f}"), f(miss),
          c("sent_discover"), c("offers"), c("failed_discover"), c("sent_request"), acks, c("failed_request"),
          f(mx("discover_offer", "p50_ms")), f(mx("discover_offer", "p99_ms")),
          f(mx("request_ack", "p50_ms")), f(mx("request_ack", "p99_ms")), f(gen, "{:.2f}"))
    sys.exit(0)
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(0)
def lat(p, *names):
    l = p.get("latency") or {}
    for n in names:
        if n in l and l[n]:
            return l[n]
    return {}
for p in r.get("phases", []):
    c = p.get("counts", {})
    do = lat(p, "discover_offer", "discover", "offer")
    ra = lat(p, "request_ack", "request", "ack")
    cpu = p.get("cpu") or {}
    gen = None
    if "user_s" in cpu:
        gen = (cpu.get("user_s") or 0) + (cpu.get("sys_s") or 0)
    print(f(p.get("offered_rate"), "{:.0f}"), f(p.get("leases_per_s"), "{:.1f}"), f(p.get("missed_pct")),
          c.get("sent_discover", 0), c.get("offers", 0), c.get("failed_discover", 0),
          c.get("sent_request", 0), c.get("acks", 0), c.get("failed_request", 0),
          f(do.get("p50_ms")), f(do.get("p99_ms")), f(ra.get("p50_ms")), f(ra.get("p99_ms")), f(gen, "{:.2f}"))
PY
}

perfstep_row() { # perfstep_row ROUND POOL SERVER SRV_CPU_S "FIELDS" -> appends to steps.tsv
    local rate lps miss sdo rdo fdo sra rra fra p50do p99do p50ra p99ra gen
    read -r rate lps miss sdo rdo fdo sra rra fra p50do p99do p50ra p99ra gen <<<"$5"
    printf '%s\t%s\tdhcpperf\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(now)" "$1" "$2" "$3" \
        "$rate" "$lps" "$miss" "$sdo" "$rdo" "$fdo" "$sra" "$rra" "$fra" "$p99do" "$p99ra" "$4" "$gen" >>"$STEPS"
}

dhcpperf_run() { # dhcpperf_run OUTFILE ARGS... (in the client namespace, bounded)
    local out="$1" p
    shift
    ip netns exec "$CLI" timeout 1000 "$BIN/dhcpperf" "$@" --server "$SRV_IP" --relay-ip "$CLI_IP" \
        --max-clients 16000000 --hard-deadline 900s --json >"$out" 2>"$out.err" &
    p=$!
    STARTED+=("$p")
    wait "$p" || true
}

# cycling_dora OUTPREFIX RATE SECONDS: RATE × SECONDS exchanges by clients cycling over the first
# 60000 (seed 1): back-to-back `dhcpperf dora` parts of at most 60000 clients each (a part's
# duration is its share of SECONDS). Prints the part files.
cycling_dora() {
    local prefix="$1" rate="$2" secs="$3" left part=0 c ms
    left=$(awk -v r="$rate" -v d="$secs" 'BEGIN{printf "%d", r * d + 0.5}')
    while [ "$left" -gt 0 ] && [ "$part" -lt 100 ]; do
        part=$((part + 1))
        c=$((left > 60000 ? 60000 : left))
        ms=$(awk -v c="$c" -v r="$rate" 'BEGIN{printf "%d", c * 1000 / r + 0.999}')
        dhcpperf_run "$prefix-part$part.json" dora --seed 1 --rate "$rate" --count "$c" --duration "${ms}ms"
        echo "$prefix-part$part.json"
        left=$((left - c))
    done
}

run_dhcpperf() { # run_dhcpperf ROUND POOL SERVER
    local round="$1" pool="$2" name="$3" zr=NA zl=NA ir=NA il=NA c0 c1 out line
    if [ "$pool" = 24 ]; then
        printf '%s\t%s\tdhcpperf\t24\t%s\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\t%s\n' "$(now)" "$round" "$name" \
            "skipped: dhcpperf has no cycling-client mode (a /24 runs dry after 254 new clients)" >>"$SUMMARY"
        return 0
    fi
    start_server "$name" "$pool" || return 0
    wait_ready "$name" || { stop_server; return 0; }
    c0=$(srv_ticks)
    if [ "$pool" = 8 ]; then
        out="$SDIR/dhcpperf-sweep.json"
        dhcpperf_run "$out" sweep --start-rate "$SWEEP_START" --step-factor "$SWEEP_FACTOR" --max-rate "$SWEEP_MAX" \
            --step-duration "${STEP_DURATION}s" --loss-threshold "$LOSS_PCT" --max-steps 40
        c1=$(srv_ticks)
        # Per-step server CPU is not separable inside one sweep: the whole sweep's goes on the last row.
        local rows n=0 total
        rows=$(phase_fields "$out")
        total=$(echo "$rows" | grep -c . || true)
        while read -r line; do
            [ -n "$line" ] || continue
            n=$((n + 1))
            if [ "$n" = "$total" ]; then perfstep_row "$round" "$pool" "$name" "$(ticks_s "$c0" "$c1")(sweep)" "$line"
            else perfstep_row "$round" "$pool" "$name" NA "$line"; fi
        done <<<"$rows"
        read -r zr zl ir il <<<"$(python3 - "$out" <<'PY'
import json, sys
try:
    s = json.load(open(sys.argv[1])).get("sweep") or {}
except Exception:
    s = {}
g = lambda k, f: "NA" if s.get(k) is None else f.format(s[k])
print(g("max_zero_loss_rate", "{:.0f}"), g("max_zero_loss_leases_per_s", "{:.1f}"),
      g("isc_rate", "{:.0f}"), g("isc_leases_per_s", "{:.1f}"))
PY
)"
    else
        # /16: the same stepping, each step `dora` parts with clients cycling over the first 60000.
        local rate=$SWEEP_START step=0 fields lps miss files
        while [ "$step" -lt 40 ] && awk -v r="$rate" -v m="$SWEEP_MAX" 'BEGIN{exit !(r <= m)}'; do
            step=$((step + 1))
            c0=$(srv_ticks)
            files=$(cycling_dora "$SDIR/dhcpperf-step$step" "$rate" "$STEP_DURATION")
            c1=$(srv_ticks)
            # shellcheck disable=SC2086
            fields=$(phase_fields $files /dev/null | head -1)
            [ -n "$fields" ] || { log "  dhcpperf gave no report; see $SDIR/dhcpperf-step$step-*.err"; break; }
            perfstep_row "$round" "$pool" "$name" "$(ticks_s "$c0" "$c1")" "$fields"
            read -r _ lps miss _ <<<"$fields"
            if awk -v m="$miss" 'BEGIN{exit !(m == 0)}'; then zr=$rate; zl=$lps; fi
            if awk -v m="$miss" -v t="$LOSS_PCT" 'BEGIN{exit !(m <= t)}'; then ir=$rate; il=$lps; else break; fi
            rate=$(awk -v r="$rate" -v f="$SWEEP_FACTOR" 'BEGIN{printf "%.0f", r * f}')
        done
    fi
    stop_server
    log "  dhcpperf /$pool $name sweep: zero-loss $zl leases/s (offered $zr), ≤$LOSS_PCT % miss $il leases/s (offered $ir)"

    # p99 at half the highest zero-loss rate, fresh server.
    local half=NA hl=NA hm=NA p50do=NA p99do=NA p50ra=NA p99ra=NA us=NA
    if [ "$zr" != NA ]; then
        half=$(awk -v r="$zr" 'BEGIN{printf "%.0f", r / 2}')
        start_server "$name" "$pool" || return 0
        if wait_ready "$name"; then
            out="$SDIR/dhcpperf-half.json"
            c0=$(srv_ticks)
            if [ "$pool" = 8 ]; then
                dhcpperf_run "$out" dora --seed 7 --rate "$half" --duration "${DURATION}s"
            else
                out=$(cycling_dora "$SDIR/dhcpperf-half" "$half" "$DURATION")
            fi
            c1=$(srv_ticks)
            # shellcheck disable=SC2086
            fields=$(phase_fields $out /dev/null | head -1)
            if [ -n "$fields" ]; then
                perfstep_row "$round" "$pool" "$name" "$(ticks_s "$c0" "$c1")" "$fields"
                local acks
                read -r _ hl hm _ _ _ _ acks _ p50do p99do p50ra p99ra _ <<<"$fields"
                us=$(awk -v c="$(ticks_s "$c0" "$c1")" -v a="$acks" 'BEGIN{ if (a > 0) printf "%.1f", c * 1e6 / a; else print "NA"}')
            fi
        fi
        stop_server
        log "  dhcpperf /$pool $name at $half/s: p99 DISCOVER→OFFER $p99do ms, REQUEST→ACK $p99ra ms, server $us µs/lease"
    fi
    local note="clients: new every exchange"
    [ "$pool" = 16 ] && note="clients: cycling over 60000 (seed 1, steps in parts of ≤ 60000)"
    printf '%s\t%s\tdhcpperf\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(now)" "$round" "$pool" "$name" \
        "$zr" "$zl" "$ir" "$il" "$half" "$hl" "$hm" "$p50do" "$p99do" "$p50ra" "$p99ra" "$us" "$note; cpu at half rate" >>"$SUMMARY"
}

# ------------------------------------------------------------------ start-up ---
kea_cmd() { # kea_cmd SOCKET JSON
    python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(900)
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

rss_mb() { # rss_mb PID...: summed VmRSS (shared pages counted once per process)
    local kb=0 p
    for p in "$@"; do kb=$((kb + $(awk '/^VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done
    echo $((kb / 1024))
}

# timed_start NAME: start the server (config already in $SDIR) with a probe already hammering;
# sets START_S (exec → first OFFER, or TIMEOUT).
timed_start() {
    local name="$1" out="$WORK/probe-start.out" p t0 rc=0
    ip netns exec "$CLI" timeout 905 python3 "$ROOT/bench/probe.py" "$SRV_IP" "$CLI_IP" 900 >"$out" 2>>"$LOGS/probe.log" &
    p=$!
    STARTED+=("$p")
    sleep 0.3
    t0=$(date +%s.%N)
    if [ "$name" = kea ]; then
        ip netns exec "$SRV" env KEA_PIDFILE_DIR="$SDIR" KEA_LOCKFILE_DIR="$SDIR" \
            kea-dhcp4 -c "$SDIR/kea-dhcp4.json" >>"$SDIR/server.log" 2>&1 &
    else
        ip netns exec "$SRV" "$BIN/prodhcpd" --config "$SDIR/prodhcp.ron" >>"$SDIR/server.log" 2>&1 &
    fi
    SPID=$!
    STARTED+=("$SPID")
    SERVER_PIDS+=("$SPID")
    while alive "$p"; do
        alive "$SPID" || { kill -TERM "$p" 2>/dev/null || true; break; }
        sleep 0.05
    done
    wait "$p" || rc=$?
    START_S=TIMEOUT
    if [ "$rc" = 0 ] && [ -s "$out" ]; then START_S=$(python3 -c "print(f'{float(open(\"$out\").read()) - $t0:.3f}')"); fi
}

pctl() { "$BIN/prodhcpctl" --socket "$SDIR/state/ctl.sock" "$@"; }
prodhcp_wait_ctl() {
    for _ in $(seq 1 600); do pctl --json status >/dev/null 2>&1 && return 0; sleep 0.05; done
    return 1
}
prodhcp_gen() { pctl --json status 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['config_generation'])"; }

run_startup() { # run_startup COUNT
    local n="$1"
    local csv="$WORK/leases-$n.csv" stride run import_s=NA
    if [ ! -s "$csv" ]; then
        log "generating $n leases (Kea CSV, spread over the /8)"
        python3 "$ROOT/bench/gen_kea_csv.py" "$n" "$csv.dense"
        stride=$(( (16777214) / n ))
        awk -F, -v OFS=, -v st="$stride" 'NR == 1 {print; next}
            { v = 167772161 + (NR - 2) * st
              $1 = int(v / 16777216) "." int(v / 65536) % 256 "." int(v / 256) % 256 "." v % 256; print }' \
            "$csv.dense" >"$csv.tmp"
        mv "$csv.tmp" "$csv"
        rm -f "$csv.dense"
    fi
    # prodhcp: import once into its table, then RUNS timed starts from that table.
    local pdir="$WORK/startup-prodhcp-$n"
    rm -rf "$pdir"
    mkdir -p "$pdir"
    SDIR="$pdir"
    prodhcp_config "$pdir" 8 0
    ip netns exec "$SRV" "$BIN/prodhcpd" --config "$pdir/prodhcp.ron" >>"$pdir/server.log" 2>&1 &
    SPID=$!
    STARTED+=("$SPID")
    SERVER_PIDS+=("$SPID")
    prodhcp_wait_ctl || die "prodhcpd did not come up; see $pdir/server.log"
    local t
    t=$(date +%s.%N)
    pctl --timeout 600 leases import --format kea-csv "$csv" >"$pdir/import.out" 2>&1 || die "import failed: $(tail -3 "$pdir/import.out")"
    import_s=$(python3 -c "print(f'{$(date +%s.%N) - $t:.2f}')")
    stop_server
    log "  prodhcp: imported $n leases in $import_s s"

    for run in $(seq 1 "$RUNS"); do
        # --- prodhcp-n ---
        SDIR="$pdir"
        timed_start prodhcp
        local first=$START_S rss reload=NA after=NA loaded=NA kids
        prodhcp_wait_ctl || true
        kids=$(pgrep -P "$SPID" 2>/dev/null | tr '\n' ' ' || true)
        # shellcheck disable=SC2086
        rss=$(rss_mb "$SPID" $kids)
        loaded=$(pctl --json stats 2>/dev/null | python3 -c "import json,sys; print(sum(p['leased'] for p in json.load(sys.stdin)['pools']))" || echo NA)
        if [ "$first" != TIMEOUT ]; then
            local g0 g r0 r1
            g0=$(prodhcp_gen || echo NA)
            sed -i "s/\"routers\": \"[0-9.]*\"/\"routers\": \"10.0.0.$((run + 1))\"/" "$pdir/prodhcp.ron"
            r0=$(date +%s.%N)
            kill -HUP "$SPID"
            for _ in $(seq 1 6000); do g=$(prodhcp_gen || echo "$g0"); [ "$g" != "$g0" ] && break; sleep 0.01; done
            r1=$(date +%s.%N)
            [ "$g" != "$g0" ] && reload=$(awk -v a="$r0" -v b="$r1" 'BEGIN{printf "%.3f", b - a}')
            after=$(probe_offer "$r0" 60 || echo TIMEOUT)
        fi
        stop_server
        printf '%s\tprodhcp-n\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(now)" "$n" "$run" "$first" "$rss" "$reload" "$after" "$loaded" "$import_s" >>"$STARTUP"
        log "  prodhcp-n $n leases run $run: first OFFER ${first} s, RSS $rss MB, reload ${reload} s (OFFER ${after} s after SIGHUP), leases $loaded"

        # --- Kea (MT off) ---
        SDIR="$WORK/startup-kea-$n"
        rm -rf "$SDIR"
        mkdir -p "$SDIR"
        kea_config "$SDIR" 8 0
        cp "$csv" "$SDIR/kea-leases4.csv"
        timed_start kea
        first=$START_S; reload=NA; after=NA; loaded=NA
        rss=$(rss_mb "$SPID")
        if [ "$first" != TIMEOUT ]; then
            loaded=$(kea_cmd "$SDIR/kea4.sock" '{"command": "statistic-get", "arguments": {"name": "subnet[1].assigned-addresses"}}' |
                python3 -c "import json,sys; print(json.load(sys.stdin)['arguments']['subnet[1].assigned-addresses'][0][0])" 2>/dev/null || echo NA)
            local r0 r1 resp
            r0=$(date +%s.%N)
            resp=$(kea_cmd "$SDIR/kea4.sock" '{"command": "config-reload"}' || true)
            r1=$(date +%s.%N)
            echo "$resp" | grep -q '"result": 0' && reload=$(awk -v a="$r0" -v b="$r1" 'BEGIN{printf "%.3f", b - a}') ||
                log "  Kea config-reload said: $resp"
            after=$(probe_offer "$r0" 600 || echo TIMEOUT)
        fi
        stop_server
        printf '%s\tkea-st\t%s\t%s\t%s\t%s\t%s\t%s\t%s\tNA\n' "$(now)" "$n" "$run" "$first" "$rss" "$reload" "$after" "$loaded" >>"$STARTUP"
        log "  kea-st $n leases run $run: first OFFER ${first} s, RSS $rss MB, config-reload ${reload} s (OFFER ${after} s after the command), leases $loaded"
    done
}

# ------------------------------------------------------------------ main -------
T_START=$(date +%s)
for round in $(seq 1 "$RUNS"); do
    for pool in $POOLS; do
        for gen in $GENERATORS; do
            for name in $SERVERS; do
                if [ "$name" = dhcpd ] && [ "$pool" = 8 ]; then
                    printf '%s\t%s\t%s\t8\tdhcpd\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\t%s\n' "$(now)" "$round" "$gen" \
                        "skipped: dhcpd rejects a /8 range (overly large address range)" >>"$SUMMARY"
                    continue
                fi
                log "round $round/$RUNS, /$pool, $gen, $name"
                SDIR=""
                if [ "$gen" = perfdhcp ]; then run_perfdhcp "$round" "$pool" "$name"; else run_dhcpperf "$round" "$pool" "$name"; fi
                # keep the last run's files of each server
                [ -n "$SDIR" ] && [ -d "$SDIR" ] && { rm -rf "$LOGS/$gen-$pool-$(basename "$SDIR")"; cp -r "$SDIR" "$LOGS/$gen-$pool-$(basename "$SDIR")" 2>/dev/null || true; rm -rf "$LOGS/$gen-$pool-$(basename "$SDIR")/state"; }
            done
        done
    done
done
T_LOAD=$(date +%s)
if [ -n "$STARTUP_LEASES" ]; then
    for n in $STARTUP_LEASES; do
        log "start-up / reload with $n leases"
        run_startup "$n"
    done
fi
T_END=$(date +%s)
rm -rf "$WORK"  # lease tables (1.3 GB per /8) and lease files; configs and outputs are in logs/

# ------------------------------------------------------------------ report -----
python3 - "$SUMMARY" "$STARTUP" "$OUT/table.md" "$((T_LOAD - T_START))" "$((T_END - T_LOAD))" <<'PY'
import csv, statistics, sys
summ, startup, out, t_load, t_start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rows = list(csv.DictReader(open(summ), delimiter="\t"))
srows = list(csv.DictReader(open(startup), delimiter="\t"))
order = ["prodhcp-1", "prodhcp-n", "kea-st", "kea-mt2", "dhcpd", "responder"]
lines = []
P = lines.append

def nums(rs, k):
    v = []
    for r in rs:
        try:
            v.append(float(r[k]))
        except (ValueError, KeyError, TypeError):
            pass
    return v

def med(rs, k, fmt="{:.0f}", spread=True):
    v = nums(rs, k)
    if not v:
        return "–"
    m = fmt.format(statistics.median(v))
    if spread and len(v) > 1:
        m += f" ({fmt.format(min(v))}–{fmt.format(max(v))})"
    return m

def medv(rs, k):
    v = nums(rs, k)
    return statistics.median(v) if v else None

groups = {}
for r in rows:
    groups.setdefault((r["generator"], r["pool"]), {}).setdefault(r["server"], []).append(r)

P("### Throughput (relayed DORA, leases/s; median of rounds, min–max in brackets)")
P("")
P("| generator | pool | server | rounds | zero-loss leases/s (offered/s) | ≤ 2.5 % miss leases/s (offered/s) | p50 / p99 DISCOVER→OFFER ms at half rate | p50 / p99 REQUEST→ACK ms | server CPU µs/lease | note |")
P("|---|---|---|---|---|---|---|---|---|---|")
for gen in ["perfdhcp", "dhcpperf"]:
    for pool in ["24", "16", "8"]:
        g = groups.get((gen, pool))
        if not g:
            continue
        for s in sorted(g, key=lambda x: order.index(x) if x in order else 99):
            rs = g[s]
            note = rs[0]["note"].split(";")[0]
            if not nums(rs, "zero_loss_rate") and not nums(rs, "isc_rate"):
                P(f"| {gen} | /{pool} | {s} | {len(rs)} | – | – | – | – | – | {note} |")
                continue
            lat_do = f"{med(rs, 'p50_do_ms', '{:.3f}', False)} / {med(rs, 'p99_do_ms', '{:.3f}')}" if gen == "dhcpperf" else "–"
            lat_ra = f"{med(rs, 'p50_ra_ms', '{:.3f}', False)} / {med(rs, 'p99_ra_ms', '{:.3f}')}" if gen == "dhcpperf" else "–"
            P(f"| {gen} | /{pool} | {s} | {len(rs)} | **{med(rs, 'zero_loss_leases_per_s')}** ({med(rs, 'zero_loss_rate', spread=False)}) "
              f"| {med(rs, 'isc_leases_per_s')} ({med(rs, 'isc_rate', spread=False)}) | {lat_do} | {lat_ra} "
              f"| {med(rs, 'srv_cpu_us_per_lease', '{:.1f}', False)} | {note} |")
P("")
P("### Ratios (medians of the zero-loss leases/s)")
P("")
P("| generator | pool | prodhcp-1 / kea-mt2 | prodhcp-n / kea-mt2 | prodhcp-1 / responder | prodhcp-n / responder |")
P("|---|---|---|---|---|---|")
for gen in ["perfdhcp", "dhcpperf"]:
    for pool in ["24", "16", "8"]:
        g = groups.get((gen, pool))
        if not g:
            continue
        m = {s: medv(rs, "zero_loss_leases_per_s") for s, rs in g.items()}
        def ratio(a, b, pct=False):
            if m.get(a) is None or not m.get(b):
                return "–"
            return f"{100 * m[a] / m[b]:.0f} %" if pct else f"{m[a] / m[b]:.1f}×"
        if all(m.get(s) is None for s in ["prodhcp-1", "prodhcp-n"]):
            continue
        P(f"| {gen} | /{pool} | {ratio('prodhcp-1', 'kea-mt2')} | {ratio('prodhcp-n', 'kea-mt2')} "
          f"| {ratio('prodhcp-1', 'responder', True)} | {ratio('prodhcp-n', 'responder', True)} |")
for gen in ["perfdhcp", "dhcpperf"]:
    for s in ["prodhcp-1", "prodhcp-n"]:
        a = medv(groups.get((gen, "8"), {}).get(s, []), "zero_loss_leases_per_s")
        for base in ["24", "16"]:
            b = medv(groups.get((gen, base), {}).get(s, []), "zero_loss_leases_per_s")
            if a is not None and b:
                P(f"\n{gen}, {s}: /8 vs /{base} zero-loss leases/s: {100 * (a - b) / b:+.1f} %")
                break
if srows:
    P("")
    P("### Start-up and reload with leases on disk (/8 pool; median of runs, min–max)")
    P("")
    P("| server | leases | runs | exec → first OFFER s | RSS MB | reload s | OFFER after reload s | leases loaded | import s |")
    P("|---|---|---|---|---|---|---|---|---|")
    sg = {}
    for r in srows:
        sg.setdefault((r["server"], int(r["leases"])), []).append(r)
    for (s, n), rs in sorted(sg.items(), key=lambda x: (x[0][1], x[0][0])):
        P(f"| {s} | {n:,} | {len(rs)} | **{med(rs, 'start_to_first_offer_s', '{:.2f}')}** | {med(rs, 'rss_mb', spread=False)} "
          f"| {med(rs, 'reload_s', '{:.3f}')} | {med(rs, 'after_reload_offer_s', '{:.2f}')} | {rs[0]['loaded']} "
          f"| {rs[0]['import_s'] if rs[0]['import_s'] != 'NA' else '–'} |")
    P("")
    P("Kea at 10M leases not run (~23 s per 1M leases to start, the same again per reload).")
P("")
P(f"Wall time: load {t_load // 60} min {t_load % 60} s, start-up/reload {t_start // 60} min {t_start % 60} s.")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
PY
log "raw rows: $STEPS, $SUMMARY, $STARTUP; table: $OUT/table.md"
