#!/usr/bin/env bash
# compare.sh — side-by-side benchmark (issues 3 and 10): prodhcp vs Kea 2.2, ISC dhcpd 4.4 and a
# no-logic responder, same load, same machine, same run. Prints Markdown tables computed from the
# generators' own reports (TSVs of the raw rows beside them); asserts nothing.
#
#   sudo bench/compare.sh                         # the full matrix (see "duration" below)
#   sudo SMOKE=1 bench/compare.sh                 # smoke run, ≤ 5 min for 3 servers (see SMOKE)
#   sudo SMOKE=1 SERVERS="prodhcp-n responder kea-mt2" bench/compare.sh
#
# Servers (SERVERS, default all, in this order inside every round):
#   prodhcp-1   prodhcpd, workers: 1                 prodhcp-n  prodhcpd, workers: 0 (one per core)
#   kea-st      kea-dhcp4 2.2, memfile persist=true, lfc-interval 0, multi-threading off
#   kea-mt2     the same with multi-threading on, thread-pool-size 2, packet-queue-size 64
#   dhcpd       ISC dhcpd 4.4 (lease file, fsync per lease); only /24 and /16 (it rejects a /8 range)
#   responder   `dhcpperf responder --threads RESPONDER_THREADS` (default nproc; canned OFFER/ACK,
#               no lease state; all its threads on one socket, so they share the relay's flow
#               as prodhcp's workers do):
#               the ceiling of this harness on this machine
#   prodhcp runs with `durability: "$DURABILITY"` (default "process": replies once the change is
#   in the shared mapping, like Kea's memfile, which writes its lease file without fsync; set
#   DURABILITY=power to msync every batch before its replies, closer to dhcpd's fsync per lease).
#   All use relay mapping (giaddr 198.18.0.2 → the 10.0.0.0/N subnet), lease time 86400 s, log
#   level WARN (Kea logs every lease at INFO), socket type udp for Kea, the same pool.
#
# Pools (POOLS, default "24 16 8"), all 10.0.0.0/N, 10.0.0.1 to the last host:
#   24  254 addresses: dhcpperf `--release-after-ack` (every client new, each RELEASEs right
#       after its ACK, so every DORA allocates a free address by the bitmap scan and the pool
#       never runs dry); perfdhcp -R 250 (returning clients, no release). (CLIENTS_24 is only
#       perfdhcp's -R now.)
#   16  65534 addresses, CLIENTS_16 (60000) cycling clients the same way (perfdhcp -R 60000).
#   8   every exchange a new client (dhcpperf: a new --seed per sweep step; perfdhcp -R 16000000).
#   dhcpperf's /24 and /16 rows need `--clients` (dhcpperf since c1e7791); with an older
#   dhcpperf (DHCPPERF=...) they are skipped with a note.
#
# Generators (GENERATORS, default "perfdhcp dhcpperf"), both in namespace cli, relay mode:
#   dhcpperf  the headline. Capacity: one server per (round, pool, server), then `dhcpperf dora`
#             steps of STEP_DURATION s each on it, 1 s apart. Coarse steps from SWEEP_START ×
#             SWEEP_FACTOR until a step misses > 2.5 % (a request unanswered within 1 s is
#             missed), or dhcpperf could not send 90 % of the offered rate (the harness's limit),
#             or SWEEP_MAX; then bisection (geometric mean) between the last good and the first
#             bad step, separately for both criteria, until first bad / last good ≤ REFINE
#             (1.05), so each figure is known to 5 % and a ratio of two to about ±10 %:
#               clean rate  highest offered rate with ≤ CLEAN_PCT (0.1) % missed at that step
#                           AND at every lower step of the sweep
#               ≤ 2.5 %     the same with ≤ 2.5 % missed (ISC's criterion, also prefix-closed)
#             Each is reported with the leases/s and the send rate dhcpperf measured (its
#             `sent_rate`: DISCOVERs sent / sending time), the offered rate, and the first bad
#             offered rate above it (the bracket the ratios' bounds come from). Server CPU is
#             read per step (each step is its own dhcpperf run).
#             Fixed rates: for every rate in FIXED_RATES ("2000 3000"), a fresh server, `dhcpperf
#             dora --rate R --duration DURATION`, then `sync -f` of the server's directory. Over
#             that window: server CPU (utime+stime from /proc of every process in the server
#             namespace: prodhcpd's supervisor, workers and helpers; Kea; dhcpd), the generator's
#             CPU (its report), the rest of the machine (busy ticks of /proc/stat minus both: the
#             kernel's writeback workers, softirqs not charged to a process, anything else
#             running), the page-cache pages the server's processes dirtied (write_bytes of
#             /proc/PID/io: through the table's mapping or write(); what the kernel writes back for
#             them), and the data written to block devices by anyone (/proc/vmstat pgpgout, KB;
#             nr_written, pages) — the writeback of the lease table's / lease file's dirty pages is
#             inside the window because of the sync. All per completed lease. HALF_RATE=1 adds
#             the same run at half the clean rate of that round's sweep (issue 3's target: p99
#             at half the maximum rate).
#   perfdhcp  fixed-rate sweep over PERF_RATES, each step DURATION s on a fresh server:
#               perfdhcp -4 -l 198.18.0.2 -R CLIENTS -r RATE -p DURATION -d 2 -W 500000 198.18.0.1
#             stops after the first step with more than 2.5 % of requests dropped; clean and
#             ≤ 2.5 % as above (resolution: the rate list; sent/s = DISCOVERs sent / DURATION).
#             perfdhcp burns ~1 core when flooding and is the bottleneck above ~5k/s on 2 cores
#             (the responder row shows where): its numbers are the fair anchor, not a ceiling.
#
# Rounds: RUNS (default 3) rounds; a round runs every pool × generator × server once, servers
# alternating (round 1: all servers, round 2: all servers, ...). Each server starts with an empty
# lease store and is used once it answers a relayed DISCOVER (bench/probe.py), its namespace is
# idle and `sync -f` has written out its fresh files.
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
# Knobs (environment; defaults of the full run, SMOKE=1's in brackets):
#   RUNS 3 [1]   DURATION 10 [3] (fixed-rate runs, perfdhcp steps)   STEP_DURATION 5 [2]
#   SERVERS all [prodhcp-n kea-mt2 responder]   POOLS "24 16 8" ["24 8"]
#   GENERATORS "perfdhcp dhcpperf" [dhcpperf]   STARTUP_LEASES "100000 1000000" [empty]
#   SWEEP_START 1000 [4000]   SWEEP_FACTOR 1.5 [2]   REFINE 1.05 [1.3]   SWEEP_MAX 200000
#   MAX_STEPS 40 [8] (per sweep, coarse + bisection)   CLEAN_PCT 0.1   LOSS_PCT 2.5
#   FIXED_RATES "2000 3000" ["2000"]   HALF_RATE 1 [0]   CLIENTS_24 250   CLIENTS_16 60000
#   RELEASE_AFTER_ACK_POOLS "24" (pools whose dhcpperf clients release after their ACK)
#   RESPONDER_THREADS nproc   PERF_RATES "1000 2000 3000 4000 5000 6000 8000 10000 12000"
#   PERF_THREADS (perfdhcp -g, default: perfdhcp's own)   DURABILITY process
#   OUT /var/tmp/prodhcp-compare (results)   NO_BUILD=1 (use target/release as it is)
#   DHCPPERF (path of the dhcpperf binary; default target/release/dhcpperf; its commit is printed)
#   Any knob set explicitly wins over SMOKE's value.
#
# Output under OUT: steps.tsv (one row per generator run: sweep steps, fixed-rate and half-rate
# runs, with measured send rate, leases/s, missed %, counts, p50/p99, server/generator/rest CPU,
# pgpgout), summary.tsv (one row per round × generator × pool × server: clean and ≤ 2.5 %
# results with their brackets), startup.tsv, machine.txt, table.md (the Markdown printed at the
# end), logs/ (configs, server logs and generator output of the last run of each server; the
# scratch dir work/ is deleted at the end). Earlier TSVs in OUT are moved to OUT/old-<time>/.
# Every printed table starts with the commit measured (`git rev-parse --short HEAD`, "-dirty" if
# tracked files differ from it; NO_BUILD=1 says so) and the machine (nproc, model name).
#
# Duration of the full matrix (defaults, 2 cores), estimated from step times (dhcpperf step ≈
# STEP_DURATION + 1.5 s; fixed run ≈ DURATION + 5–10 s with start and sync; perfdhcp step ≈
# DURATION + 3 s) and step counts (dhcpperf ≈ 10 coarse + ≤ 6 bisection steps for prodhcp and
# the responder, ≈ 6 + 6 for Kea, fewer for dhcpd): per pool and round ≈ 12–15 min dhcpperf,
# ≈ 8 min perfdhcp; ≈ 1 h per round for 3 pools, ≈ 3 h for RUNS=3, plus ≈ 5 min start-up/reload.
# SMOKE=1 with 3 servers: ≈ 4 min (3 min 41 s for dd448bf on a busy machine; "Wall time" at the
# end), plus the build.
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
if [ "${SMOKE:-0}" = 1 ]; then
    : "${RUNS:=1}" "${DURATION:=3}" "${STEP_DURATION:=2}" "${SERVERS:=prodhcp-n kea-mt2 responder}"
    : "${POOLS:=24 8}" "${GENERATORS:=dhcpperf}" "${SWEEP_START:=4000}" "${SWEEP_FACTOR:=2}"
    : "${REFINE:=1.3}" "${MAX_STEPS:=8}" "${FIXED_RATES:=2000}" "${HALF_RATE:=0}"
    STARTUP_LEASES="${STARTUP_LEASES-}"
fi
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
SWEEP_START="${SWEEP_START:-1000}"
SWEEP_FACTOR="${SWEEP_FACTOR:-1.5}"
SWEEP_MAX="${SWEEP_MAX:-200000}"
REFINE="${REFINE:-1.05}"
MAX_STEPS="${MAX_STEPS:-40}"
CLEAN_PCT="${CLEAN_PCT:-0.1}"
LOSS_PCT="${LOSS_PCT:-2.5}"
FIXED_RATES="${FIXED_RATES:-2000 3000}"
HALF_RATE="${HALF_RATE:-1}"
CLIENTS_24="${CLIENTS_24:-250}"
# Pools whose dhcpperf clients RELEASE right after their ACK (every DORA then allocates by the
# bitmap scan and the pool never runs dry); "24 8" makes the /24 vs /8 CPU comparison one of
# the same work (a DORA and a RELEASE per lease on both).
RELEASE_AFTER_ACK_POOLS="${RELEASE_AFTER_ACK_POOLS:-24}"
CLIENTS_16="${CLIENTS_16:-60000}"
STARTUP_LEASES="${STARTUP_LEASES-100000 1000000}"
PERF_THREADS="${PERF_THREADS:-}"
OUT="${OUT:-/var/tmp/prodhcp-compare}"
CLOCK_HZ=$(getconf CLK_TCK)
NCPU=$(nproc)
RESPONDER_THREADS="${RESPONDER_THREADS:-$NCPU}"
DHCPPERF="${DHCPPERF:-$BIN/dhcpperf}"
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
for r in $FIXED_RATES; do case "$r" in '' | *[!0-9]*) die "FIXED_RATES: '$r' is not a rate" ;; esac; done
awk -v r="$REFINE" -v f="$SWEEP_FACTOR" 'BEGIN{exit !(r > 1 && f > 1)}' || die "REFINE and SWEEP_FACTOR must be > 1"
[ "$MAX_STEPS" -ge 1 ] && [ "$MAX_STEPS" -le 250 ] || die "MAX_STEPS must be 1..250 (one dhcpperf seed per /8 step)"
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
for b in "$BIN/prodhcpd" "$BIN/prodhcpctl" "$DHCPPERF"; do [ -x "$b" ] || die "$b missing"; done
# `--clients` (cycling clients that release) is what makes dhcpperf rows on /24 and /16 possible.
HAVE_CLIENTS=0
"$DHCPPERF" dora --help 2>/dev/null | grep -q -- '--clients' && HAVE_CLIENTS=1
[ "$HAVE_CLIENTS" = 1 ] || log "note: $DHCPPERF has no --clients: dhcpperf rows for /24 and /16 are skipped"

# commit_of DIR: short commit of the git tree holding DIR, "-dirty" if tracked files differ.
commit_of() {
    local c
    c=$(git -C "$1" rev-parse --short HEAD 2>/dev/null) || { echo unknown; return; }
    [ -n "$(git -C "$1" status --porcelain --untracked-files=no 2>/dev/null)" ] && c="$c-dirty"
    echo "$c"
}
COMMIT=$(commit_of "$ROOT")
BUILT="built by this run"
[ "${NO_BUILD:-0}" = 1 ] && BUILT="NO_BUILD=1: binaries of $(date -u -r "$BIN/prodhcpd" +%FT%TZ) as found"
DHCPPERF_NOTE=""
[ "$DHCPPERF" != "$BIN/dhcpperf" ] &&
    DHCPPERF_NOTE="; dhcpperf: $DHCPPERF (commit $(commit_of "$(dirname "$DHCPPERF")"))"
MODEL=$(awk -F': *' '/^model name/{print $2; exit}' /proc/cpuinfo)
MACHINE="nproc $NCPU, $MODEL, kernel $(uname -r)"

# ------------------------------------------------------------------ results ----
mkdir -p "$OUT"
if compgen -G "$OUT/*.tsv" >/dev/null; then
    old="$OUT/old-$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$old"
    mv "$OUT"/*.tsv "$old"/
    [ -f "$OUT/table.md" ] && mv "$OUT/table.md" "$old"/
    [ -f "$OUT/machine.txt" ] && mv "$OUT/machine.txt" "$old"/
    log "earlier results moved to $old"
fi
rm -rf "$WORK" "$LOGS"
mkdir -p "$WORK" "$LOGS"
STEPS="$OUT/steps.tsv"
SUMMARY="$OUT/summary.tsv"
STARTUP="$OUT/startup.tsv"
printf 'time\tround\tgenerator\tpool\tserver\tkind\toffered\tsent_per_s\tleases_per_s\tmissed_pct\tsent_do\trecv_do\tdrops_do\tsent_ra\trecv_ra\tdrops_ra\tp50_do_ms\tp99_do_ms\tp50_ra_ms\tp99_ra_ms\tsrv_cpu_s\tgen_cpu_s\trest_cpu_s\tpgpgout_kb\tnr_written\tsrv_write_kb\tsync_s\tstop\n' >"$STEPS"
printf 'time\tround\tgenerator\tpool\tserver\tclean_offered\tclean_sent\tclean_leases_per_s\tclean_missed_pct\tclean_first_bad\tclean_higher_pass\tisc_offered\tisc_sent\tisc_leases_per_s\tisc_missed_pct\tisc_first_bad\tisc_higher_pass\tsteps\tlimit\tnote\n' >"$SUMMARY"
printf 'time\tserver\tleases\trun\tstart_to_first_offer_s\trss_mb\treload_s\tafter_reload_offer_s\tloaded\timport_s\n' >"$STARTUP"

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $COMMIT ($BUILT$DHCPPERF_NOTE)"
    echo "machine: $MACHINE"
    lscpu | head -20
    echo "kea-dhcp4: $(kea-dhcp4 -V 2>/dev/null | head -1)"
    echo "dhcpd: $(dhcpd --version 2>&1 | head -1)"
    echo "perfdhcp: $(perfdhcp -v 2>&1 | head -1)"
    echo "knobs: RUNS=$RUNS DURATION=$DURATION STEP_DURATION=$STEP_DURATION SERVERS='$SERVERS' POOLS='$POOLS' GENERATORS='$GENERATORS' SWEEP_START=$SWEEP_START SWEEP_FACTOR=$SWEEP_FACTOR REFINE=$REFINE SWEEP_MAX=$SWEEP_MAX MAX_STEPS=$MAX_STEPS CLEAN_PCT=$CLEAN_PCT LOSS_PCT=$LOSS_PCT FIXED_RATES='$FIXED_RATES' HALF_RATE=$HALF_RATE CLIENTS_24=$CLIENTS_24 CLIENTS_16=$CLIENTS_16 RESPONDER_THREADS=$RESPONDER_THREADS PERF_RATES='$PERF_RATES' DURABILITY=${DURABILITY:-process} STARTUP_LEASES='$STARTUP_LEASES'"
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
# start_server NAME POOL [SUFFIX] -> 0 started, 2 not applicable (dhcpd /8); its files in
# $WORK/NAME-POOL[-SUFFIX] (SDIR), emptied first
start_server() {
    local name="$1" pool="$2"
    SDIR="$WORK/$name-$pool${3:+-$3}"
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
            ip netns exec "$SRV" "$DHCPPERF" responder --listen "$SRV_IP" --threads "$RESPONDER_THREADS" \
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
    # Warm-up: 3 s of unmeasured load (new clients that release, seed 255, used by no step), so
    # no server's first measured step pays for its first-use costs: without it Kea MT missed
    # 11 % of its first 1,000/s step on a fresh /8 and then nothing at 2,000/s, and the sweep
    # took the first failure as its capacity.
    dhcpperf_run "$SDIR/warmup.json" 10 dora --seed 255 --rate 500 --duration 3s --release-after-ack
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
busy_ticks() { # non-idle ticks of the whole machine (/proc/stat: user nice system irq softirq steal)
    awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat
}
srv_write_kb() { # write_bytes (/proc/PID/io: pages the process dirtied, to be written back) of the server namespace, KB
    local t=0 p
    for p in $(ip netns pids "$SRV" 2>/dev/null); do
        t=$((t + $(awk '$1 == "write_bytes:" {print $2}' "/proc/$p/io" 2>/dev/null || echo 0)))
    done
    echo $((t / 1024))
}
vmstat_of() { awk -v k="$1" '$1 == k {print $2; exit}' /proc/vmstat; } # vmstat_of FIELD
ticks_s() { awk -v a="$1" -v b="$2" -v hz="$CLOCK_HZ" 'BEGIN{printf "%.2f", (b - a) / hz}'; }
now() { date -u +%FT%TZ; }

# ------------------------------------------------------------------ sweeps -----
# sweep_eval MODE FILE: FILE has one line per step already run, "offered sent_per_s leases_per_s
# missed_pct". MODE next: the next offered rate to try (nothing: the sweep is done). MODE result:
# "clean_offered clean_sent clean_leases clean_missed clean_first_bad clean_higher_pass
# isc_offered isc_sent isc_leases isc_missed isc_first_bad isc_higher_pass steps limit" (NA where
# there is none). Both criteria are prefix-closed: the last step of the longest run of steps, from the lowest offered rate up, that
# all stayed within the threshold (preferring, among them, the highest one where dhcpperf sent
# ≥ 90 % of the rate asked); "first bad" is the offered rate of the step right above that run;
# "higher pass" a step above the first bad one that passed anyway (shown, not counted).
sweep_eval() {
    python3 - "$1" "$2" "$SWEEP_START" "$SWEEP_FACTOR" "$REFINE" "$SWEEP_MAX" "$MAX_STEPS" "$CLEAN_PCT" "$LOSS_PCT" <<'PY'
import math, sys
mode, fn = sys.argv[1], sys.argv[2]
start, factor, refine, smax, maxsteps, clean, loss = map(float, sys.argv[3:10])
steps = []
for line in open(fn):
    f = line.split()
    try:
        steps.append(tuple(float(x) for x in f[:4]))
    except ValueError:
        pass
steps.sort()
# A step where dhcpperf could not send 90 % of the rate asked for measured the harness (or, with
# cycling clients, a closed loop waiting for answers), not the server at that rate.
short = lambda s: s[1] < 0.9 * s[0]
limited = any(short(s) for s in steps)
def bracket(thr):
    """(last good, first bad): the steps within thr from the lowest rate up, and the one after.
    The last good is the highest of them that sent what was asked, if any did."""
    good, hi = [], None
    for s in steps:
        if s[3] <= thr:
            good.append(s)
        else:
            hi = s
            break
    full = [s for s in good if not short(s)]
    return (full or good or [None])[-1], hi
over = any(s[3] > loss for s in steps)
if mode == "next":
    if len(steps) >= maxsteps:
        sys.exit(0)
    if not steps:
        print(round(start))
        sys.exit(0)
    top = steps[-1][0]
    if not over and not limited and top * factor <= smax:
        print(round(top * factor))
        sys.exit(0)
    tested = {round(s[0]) for s in steps}
    for thr in (clean, loss):
        lo, hi = bracket(thr)
        if hi is None:
            continue
        r = hi[0] / factor if lo is None else math.sqrt(lo[0] * hi[0])
        if (lo is None and r >= 50) or (lo is not None and hi[0] / lo[0] > refine):
            if round(r) not in tested:
                print(round(r))
                sys.exit(0)
    sys.exit(0)
out = []
for thr in (clean, loss):
    lo, hi = bracket(thr)
    if lo is None:
        out += ["NA"] * 4
    else:
        out += [f"{lo[0]:.0f}", f"{lo[1]:.0f}", f"{lo[2]:.1f}", f"{lo[3]:.3f}"]
    out.append("NA" if hi is None else f"{hi[0]:.0f}")
    # Not monotone: the highest step above the first bad one that passed anyway (noise, or a
    # server that recovers): shown, never counted.
    above = [x for x in steps if hi is not None and x[0] > hi[0] and x[3] <= thr]
    out.append(f"{max(above)[0]:.0f}" if above else "NA")
limit = "loss" if over else "generator" if limited else "steps" if len(steps) >= maxsteps else "max-rate"
print(" ".join(out + [str(len(steps)), limit]))
PY
}

summary_row() { # summary_row ROUND GENERATOR POOL SERVER "RESULT" NOTE
    local r
    read -r -a r <<<"$5"
    printf '%s\t%s\t%s\t%s\t%s' "$(now)" "$1" "$2" "$3" "$4" >>"$SUMMARY"
    printf '\t%s' "${r[@]}" >>"$SUMMARY"
    printf '\t%s\n' "$6" >>"$SUMMARY"
}
summary_skip() { # summary_skip ROUND GENERATOR POOL SERVER NOTE
    summary_row "$1" "$2" "$3" "$4" "NA NA NA NA NA NA NA NA NA NA NA NA 0 NA" "$5"
}

# ------------------------------------------------------------------ perfdhcp ---
perf_clients() { case "$1" in 24) echo "$CLIENTS_24" ;; 16) echo "$CLIENTS_16" ;; 8) echo 16000000 ;; esac; }

# perf_step ROUND POOL SERVER RATE -> appends to steps.tsv, echoes "offered sent_per_s leases_per_s missed_pct"
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
    awk -v t="$(now)" -v round="$round" -v pool="$pool" -v srv="$name" -v rate="$rate" -v cpu="$cpu" -v gen="$gen" -v d="$DURATION" '
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
            printf "%s\t%s\tperfdhcp\t%s\t%s\tsweep\t%s\t%.0f\t%s\t%.3f\t%d\t%d\t%d\t%d\t%d\t%d\tNA\tNA\tNA\tNA\t%s\t%s\tNA\tNA\tNA\tNA\tNA\tcompleted\n",
                t, round, pool, srv, rate, sent["do"] / d, r, miss, sent["do"], recv["do"], drops["do"],
                sent["ra"], recv["ra"], drops["ra"], cpu, gen
        }' "$out" | tee -a "$STEPS" | awk -F'\t' '{print $7, $8, $9, $10}'
}

run_perfdhcp() { # run_perfdhcp ROUND POOL SERVER
    local round="$1" pool="$2" name="$3" rate fields file
    file="$WORK/perfdhcp-$round-$pool-$name.steps"
    : >"$file"
    for rate in $PERF_RATES; do
        start_server "$name" "$pool" || return 0
        if ! wait_ready "$name"; then stop_server; break; fi
        fields=$(perf_step "$round" "$pool" "$name" "$rate")
        stop_server
        echo "$fields" >>"$file"
        local off sent lps miss
        read -r off sent lps miss <<<"$fields"
        log "  perfdhcp /$pool $name rate $rate: sent $sent/s, $lps leases/s, missed $miss %"
        awk -v m="$miss" -v t="$LOSS_PCT" 'BEGIN{exit !(m <= t)}' || break
    done
    summary_row "$round" perfdhcp "$pool" "$name" "$(sweep_eval result "$file")" \
        "clients=$(perf_clients "$pool"); steps: PERF_RATES, a fresh server each"
}

# ------------------------------------------------------------------ dhcpperf ---
# phase_fields JSONFILE: the first phase of a dhcpperf --json report as "offered sent_per_s
# leases_per_s missed_pct sent_do offers failed_do sent_ra acks failed_ra p50_do p99_do p50_ra
# p99_ra gen_cpu_s stop" (NA where absent; stop: completed, no_answers or hard_deadline); nothing
# if the file holds no report.
phase_fields() {
    python3 - "$1" <<'PY'
import json, sys
def f(v, fmt="{:.3f}"):
    return "NA" if v is None else fmt.format(v)
try:
    p = json.load(open(sys.argv[1]))["phases"][0]
except Exception:
    sys.exit(0)
c = p.get("counts", {})
l = p.get("latency") or {}
do, ra = l.get("discover_offer") or {}, l.get("request_ack") or {}
cpu = p.get("cpu") or {}
gen = (cpu.get("user_s") or 0) + (cpu.get("sys_s") or 0) if "user_s" in cpu else None
print(f(p.get("offered_rate"), "{:.0f}"), f(p.get("sent_rate"), "{:.0f}"), f(p.get("leases_per_s"), "{:.1f}"),
      f(p.get("missed_pct")), c.get("sent_discover", 0), c.get("offers", 0), c.get("failed_discover", 0),
      c.get("sent_request", 0), c.get("acks", 0), c.get("failed_request", 0),
      f(do.get("p50_ms")), f(do.get("p99_ms")), f(ra.get("p50_ms")), f(ra.get("p99_ms")), f(gen, "{:.2f}"),
      p.get("stop") or "NA")
PY
}

dhcpperf_run() { # dhcpperf_run OUTFILE DEADLINE_S ARGS... (in the client namespace, bounded)
    local out="$1" deadline="$2" p
    shift 2
    ip netns exec "$CLI" timeout $((deadline + 60)) "$DHCPPERF" "$@" --server "$SRV_IP" --relay-ip "$CLI_IP" \
        --max-clients 16000000 --hard-deadline "${deadline}s" --json >"$out" 2>"$out.err" &
    p=$!
    STARTED+=("$p")
    wait "$p" || true
}

# dhcpperf_measure ROUND POOL SERVER KIND RATE SECONDS SEED SYNC: one `dhcpperf dora` against the
# running server; server CPU over the run (SYNC=1: over the run and a `sync -f` of the server's
# directory after it, with the rest of the machine's CPU, pgpgout and nr_written over the same
# window). A run is cut off at 2 × SECONDS + 5 s (with cycling clients an overloaded server stalls
# the closed loop: the step would otherwise take many times its duration). Appends to steps.tsv;
# echoes "offered sent_per_s leases_per_s missed_pct acks stop" (nothing if dhcpperf gave no report).
dhcpperf_measure() {
    local round="$1" pool="$2" name="$3" kind="$4" rate="$5" secs="$6" seed="$7" sync="$8"
    local out="$SDIR/dhcpperf-$kind-$rate.json" c0 c1 b0 b1 w0 w1 n0 n1 s0 s1 cl=()
    local rest=NA kb=NA nw=NA sync_s=NA io0 io1 iokb=NA
    # /24: new clients that release right after their ACK (`--release-after-ack`), so every
    # DORA allocates a free address by the bitmap scan (returning clients with `--clients` would
    # get their previous address back through the client index and skip the scan).
    case "$pool" in 16) cl=(--clients "$CLIENTS_16") ;; esac
    case " $RELEASE_AFTER_ACK_POOLS " in *" $pool "*) cl=(--release-after-ack) ;; esac
    c0=$(srv_ticks); b0=$(busy_ticks); w0=$(vmstat_of pgpgout); n0=$(vmstat_of nr_written); io0=$(srv_write_kb)
    dhcpperf_run "$out" $((secs * 2 + 5)) dora --seed "$seed" --rate "$rate" --duration "${secs}s" "${cl[@]}"
    if [ "$sync" = 1 ]; then
        s0=$(date +%s.%N)
        timeout 300 sync -f "$SDIR" || true
        s1=$(date +%s.%N)
        sync_s=$(awk -v a="$s0" -v b="$s1" 'BEGIN{printf "%.2f", b - a}')
    fi
    c1=$(srv_ticks); b1=$(busy_ticks); w1=$(vmstat_of pgpgout); n1=$(vmstat_of nr_written); io1=$(srv_write_kb)
    local fields
    fields=$(phase_fields "$out")
    [ -n "$fields" ] || { log "  dhcpperf gave no report: $(tail -2 "$out.err" 2>/dev/null)"; return 0; }
    local off sent lps miss sdo rdo fdo sra acks fra p50do p99do p50ra p99ra gen stop
    read -r off sent lps miss sdo rdo fdo sra acks fra p50do p99do p50ra p99ra gen stop <<<"$fields"
    if [ "$sync" = 1 ]; then
        rest=$(awk -v b=$((b1 - b0)) -v c=$((c1 - c0)) -v g="$gen" -v hz="$CLOCK_HZ" \
            'BEGIN{ if (g == "NA") print "NA"; else printf "%.2f", (b - c) / hz - g }')
        kb=$((w1 - w0)); nw=$((n1 - n0)); iokb=$((io1 - io0))
    fi
    printf '%s\t%s\tdhcpperf\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$(now)" "$round" "$pool" "$name" "$kind" "$off" "$sent" "$lps" "$miss" "$sdo" "$rdo" "$fdo" "$sra" "$acks" "$fra" \
        "$p50do" "$p99do" "$p50ra" "$p99ra" "$(ticks_s "$c0" "$c1")" "$gen" "$rest" "$kb" "$nw" "$iokb" "$sync_s" "$stop" >>"$STEPS"
    echo "$off $sent $lps $miss $acks $stop"
}

# fixed_run ROUND POOL SERVER KIND RATE: a fresh server, DURATION s of DORA at RATE, then sync.
fixed_run() {
    local round="$1" pool="$2" name="$3" kind="$4" rate="$5" r
    start_server "$name" "$pool" "$kind-$rate" || return 0
    if wait_ready "$name"; then
        r=$(dhcpperf_measure "$round" "$pool" "$name" "$kind" "$rate" "$DURATION" 1 1)
        local off sent lps miss acks stop
        read -r off sent lps miss acks stop <<<"$r"
        [ -n "$r" ] && log "  dhcpperf /$pool $name $kind $rate/s ($stop): sent $sent/s, $lps leases/s, missed $miss %, $(tail -1 "$STEPS" | awk -F'\t' -v a="$acks" '{ if (a > 0) printf "server %.1f µs/lease and %.2f KB dirtied/lease, rest of machine %s s, pgpgout %s KB, sync %s s", $21 * 1e6 / a, $26 / a, $23, $24, $27; else print "no leases" }')"
    fi
    stop_server
}

run_dhcpperf() { # run_dhcpperf ROUND POOL SERVER
    local round="$1" pool="$2" name="$3" file rate step=0 seed r note
    if [ "$pool" != 8 ] && [ "$HAVE_CLIENTS" != 1 ]; then
        summary_skip "$round" dhcpperf "$pool" "$name" "skipped: $DHCPPERF has no --clients (cycling-client mode)"
        return 0
    fi
    case "$pool" in
        24) note="clients: new every exchange, each releases after its ACK (--release-after-ack)" ;;
        16) note="clients: $CLIENTS_16 cycling (--clients), release before reuse" ;;
        8) note="clients: new every exchange (a new seed per step)" ;;
    esac
    file="$WORK/dhcpperf-$round-$pool-$name.steps"
    : >"$file"
    start_server "$name" "$pool" || return 0
    if wait_ready "$name"; then
        while rate=$(sweep_eval next "$file") && [ -n "$rate" ]; do
            step=$((step + 1))
            seed=1
            [ "$pool" = 8 ] && seed=$step
            r=$(dhcpperf_measure "$round" "$pool" "$name" sweep "$rate" "$STEP_DURATION" "$seed" 0)
            [ -n "$r" ] || break
            local off sent lps miss acks stop
            read -r off sent lps miss acks stop <<<"$r"
            log "  dhcpperf /$pool $name step $step: offered $off/s, sent $sent/s, $lps leases/s, missed $miss %"
            if [ "$stop" != completed ]; then
                log "  (cut short: $stop; the step counts as failed)"
                miss=100
            fi
            echo "$off $sent $lps $miss" >>"$file"
            alive "$SPID" || { log "  $name died; see $SDIR/server.log"; break; }
            sleep 1
        done
    fi
    stop_server
    r=$(sweep_eval result "$file")
    summary_row "$round" dhcpperf "$pool" "$name" "$r" "$note"
    local co cs cl cm ch io is il im ih
    read -r co cs cl cm ch _ io is il im ih _ <<<"$r"
    log "  dhcpperf /$pool $name: clean $cl leases/s (sent $cs/s, offered $co, next $ch), ≤ $LOSS_PCT % $il leases/s (sent $is/s, offered $io, next $ih)"

    for rate in $FIXED_RATES; do fixed_run "$round" "$pool" "$name" fixed "$rate"; done
    if [ "$HALF_RATE" = 1 ] && [ "$co" != NA ]; then
        fixed_run "$round" "$pool" "$name" half "$(awk -v r="$co" 'BEGIN{printf "%.0f", r / 2}')"
    fi
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
keep_logs() { # keep_logs GENERATOR NAME POOL: copy its run directories (not the lease tables) to logs/
    local d dest
    for d in "$WORK/$2-$3" "$WORK/$2-$3"-*; do
        [ -d "$d" ] || continue
        dest="$LOGS/$1-$(basename "$d")"
        rm -rf "$dest"
        mkdir -p "$dest"
        tar -C "$d" --exclude=./state -cf - . | tar -C "$dest" -xf - || true
        rm -rf "$d"
    done
}

T_START=$(date +%s)
for round in $(seq 1 "$RUNS"); do
    for pool in $POOLS; do
        for gen in $GENERATORS; do
            for name in $SERVERS; do
                if [ "$name" = dhcpd ] && [ "$pool" = 8 ]; then
                    summary_skip "$round" "$gen" 8 dhcpd "skipped: dhcpd rejects a /8 range (overly large address range)"
                    continue
                fi
                log "round $round/$RUNS, /$pool, $gen, $name"
                SDIR=""
                if [ "$gen" = perfdhcp ]; then run_perfdhcp "$round" "$pool" "$name"; else run_dhcpperf "$round" "$pool" "$name"; fi
                keep_logs "$gen" "$name" "$pool"
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
python3 - "$STEPS" "$SUMMARY" "$STARTUP" "$OUT/table.md" "$((T_LOAD - T_START))" "$((T_END - T_LOAD))" \
    "$COMMIT ($BUILT$DHCPPERF_NOTE)" "$MACHINE" "$(date -u +%F)" "$CLEAN_PCT" "$LOSS_PCT" "$DURATION" \
    "$STEP_DURATION" "$REFINE" <<'PY'
import csv, statistics, sys
(steps_f, summ_f, startup_f, out, t_load, t_start, commit, machine, day, clean_pct, loss_pct,
 duration, step_duration, refine) = sys.argv[1:15]
t_load, t_start = int(t_load), int(t_start)
srows = list(csv.DictReader(open(steps_f), delimiter="\t"))
rows = list(csv.DictReader(open(summ_f), delimiter="\t"))
uprows = list(csv.DictReader(open(startup_f), delimiter="\t"))
order = ["prodhcp-1", "prodhcp-n", "kea-st", "kea-mt2", "dhcpd", "responder"]
skey = lambda s: order.index(s) if s in order else 99
pools = ["24", "16", "8"]
lines = []
P = lines.append
STAMP = f"Measured on commit `{commit}`; machine: {machine}; {day}."

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

def nums(rs, k):
    return [x for x in (num(r.get(k)) for r in rs) if x is not None]

def medv(rs, k):
    v = nums(rs, k)
    return statistics.median(v) if v else None

def med(rs, k, fmt="{:.0f}", spread=True):
    v = nums(rs, k)
    if not v:
        return "–"
    m = fmt.format(statistics.median(v))
    if spread and len(v) > 1 and min(v) != max(v):
        m += f" ({fmt.format(min(v))}–{fmt.format(max(v))})"
    return m

def per_lease(rs, k, scale=1e6, fmt="{:.1f}"):
    v = []
    for r in rs:
        a, x = num(r.get("recv_ra")), num(r.get(k))
        if a and x is not None:
            v.append(x * scale / a)
    if not v:
        return "–", None
    m = statistics.median(v)
    s = fmt.format(m)
    if len(v) > 1 and min(v) != max(v):
        s += f" ({fmt.format(min(v))}–{fmt.format(max(v))})"
    return s, m

def above(rs):
    """Steps that passed above a sweep's first failing one (shown, never counted), per round."""
    v = []
    for r in rs:
        c, i = r.get("clean_higher_pass", "NA"), r.get("isc_higher_pass", "NA")
        if c != "NA" or i != "NA":
            v.append(f"round {r['round']}: clean {c}, ≤ {loss_pct} % {i}")
    return "; ".join(v) if v else "none"

groups = {}
for r in rows:
    groups.setdefault((r["generator"], r["pool"]), {}).setdefault(r["server"], []).append(r)

P(f"### Capacity: highest clean rate and highest rate at ≤ {loss_pct} % missed")
P("")
P(STAMP)
P("")
P(f"Relayed DORA. **clean** = the highest offered rate with ≤ {clean_pct} % of requests missed at that step "
  f"and at every lower step; **≤ {loss_pct} %** the same with ≤ {loss_pct} % missed. leases/s and sent/s are the "
  f"generator's measurements at that step; \"next\" is the lowest offered rate above it that failed the criterion "
  f"(the figure lies between the two; dhcpperf bisects until next / offered ≤ {refine}). Median of rounds, "
  "min–max in brackets.")
P("")
P(f"| generator | pool | server | rounds | clean leases/s | sent/s | offered/s (next) | ≤ {loss_pct} % leases/s | sent/s | offered/s (next) | steps | stopped by | passed above the first bad step | note |")
P("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for gen in ["dhcpperf", "perfdhcp"]:
    for pool in pools:
        g = groups.get((gen, pool))
        if not g:
            continue
        for s in sorted(g, key=skey):
            rs = g[s]
            note = rs[0]["note"]
            if not nums(rs, "clean_offered") and not nums(rs, "isc_offered"):
                P(f"| {gen} | /{pool} | {s} | {len(rs)} | – | – | – | – | – | – | {med(rs, 'steps', spread=False)} | "
                  f"{', '.join(sorted({r['limit'] for r in rs}))} | – | {note} |")
                continue
            P(f"| {gen} | /{pool} | {s} | {len(rs)} | **{med(rs, 'clean_leases_per_s')}** | {med(rs, 'clean_sent')} "
              f"| {med(rs, 'clean_offered', spread=False)} ({med(rs, 'clean_first_bad', spread=False)}) "
              f"| **{med(rs, 'isc_leases_per_s')}** | {med(rs, 'isc_sent')} "
              f"| {med(rs, 'isc_offered', spread=False)} ({med(rs, 'isc_first_bad', spread=False)}) "
              f"| {med(rs, 'steps', spread=False)} | {', '.join(sorted({r['limit'] for r in rs}))} | {above(rs)} | {note} |")

P("")
P("### Ratios")
P("")
P(STAMP)
P("")
P("Medians of the leases/s above; in brackets the bounds the step brackets allow (lowest: prodhcp's leases/s "
  "/ the other's leases/s scaled up by its bracket, next failing offered rate / last good one; highest: prodhcp's "
  "scaled up by its bracket / the other's; \"?\" where a sweep never failed, i.e. stopped at the generator's or "
  "the rate limit).")
P("")
P(f"| generator | pool | prodhcp | vs | clean | ≤ {loss_pct} % |")
P("|---|---|---|---|---|---|")
def ratio(ra, rb, pre, pct):
    a, b = medv(ra, pre + "_leases_per_s"), medv(rb, pre + "_leases_per_s")
    if a is None or not b:
        return "–"
    lo_a, hi_a = medv(ra, pre + "_offered"), medv(ra, pre + "_first_bad")
    lo_b, hi_b = medv(rb, pre + "_offered"), medv(rb, pre + "_first_bad")
    f = (lambda x: f"{100 * x:.0f} %") if pct else (lambda x: f"{x:.1f}×")
    # Each server's capacity lies between its leases/s at its last good step and that figure
    # scaled by the step bracket (next failing offered rate / last good offered rate), so the
    # bounds are in the same unit as the median and always contain it.
    lo = f(a / (b * hi_b / lo_b)) if lo_b and hi_b else "?"
    hi = f(a * hi_a / lo_a / b) if lo_a and hi_a else "?"
    return f"**{f(a / b)}** ({lo} – {hi})"
for gen in ["dhcpperf", "perfdhcp"]:
    for pool in pools:
        g = groups.get((gen, pool), {})
        for a in ["prodhcp-1", "prodhcp-n"]:
            if a not in g:
                continue
            for b in ["kea-st", "kea-mt2", "dhcpd", "responder"]:
                if b not in g:
                    continue
                pct = b == "responder"
                P(f"| {gen} | /{pool} | {a} | {b} | {ratio(g[a], g[b], 'clean', pct)} | {ratio(g[a], g[b], 'isc', pct)} |")

fixed = {}
for r in srows:
    if r["kind"] in ("fixed", "half"):
        fixed.setdefault((r["pool"], r["server"], r["kind"]), []).append(r)
cpu_med = {}
if fixed:
    P("")
    P("### Server CPU per lease at the same offered rates")
    P("")
    P(STAMP)
    P("")
    P(f"dhcpperf, a fresh server per run, {duration} s of relayed DORA at the offered rate, then `sync -f` of the "
      "server's directory (so the writeback of the lease table's or lease file's dirty pages falls inside the "
      "window). Per completed lease: **server** = utime+stime of every process in the server namespace "
      "(/proc/PID/stat); generator = dhcpperf's own report; rest of machine = busy ticks of /proc/stat minus "
      "both (kernel writeback workers, softirqs not charged to a process — and anything else running on the "
      "machine); server dirtied = write_bytes of /proc/PID/io of the server's processes (the page-cache pages they "
      "dirtied, through the table's mapping or write(), which the kernel then writes back; attributable); machine "
      "pgpgout = /proc/vmstat pgpgout delta (KB written to block devices by anyone) over the window. \"half\" rows: half "
      "that round's clean rate. Median of rounds, min–max in brackets.")
    P("")
    P("| pool | server | offered/s | rounds | sent/s | leases/s | missed % | **server µs/lease** | generator µs/lease | rest of machine µs/lease | server dirtied KB/lease | machine pgpgout KB/lease | sync s | p50 / p99 DISCOVER→OFFER ms | p50 / p99 REQUEST→ACK ms |")
    P("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for pool in pools:
        for s in sorted({k[1] for k in fixed if k[0] == pool}, key=skey):
            for kind in ["fixed", "half"]:
                rs_all = fixed.get((pool, s, kind), [])
                rates = sorted({r["offered"] for r in rs_all}, key=lambda x: num(x) or 0)
                if kind == "half":
                    rates = [None] if rs_all else []
                for rate in rates:
                    rs = [r for r in rs_all if rate is None or r["offered"] == rate]
                    srv, srv_m = per_lease(rs, "srv_cpu_s")
                    gen_, _ = per_lease(rs, "gen_cpu_s")
                    rest, _ = per_lease(rs, "rest_cpu_s")
                    kb, _ = per_lease(rs, "pgpgout_kb", 1, "{:.2f}")
                    io, _ = per_lease(rs, "srv_write_kb", 1, "{:.2f}")
                    if kind == "fixed":
                        cpu_med[(pool, s, rate)] = srv_m
                    off = rate if rate is not None else f"{med(rs, 'offered')} (half)"
                    P(f"| /{pool} | {s} | {off} | {len(rs)} | {med(rs, 'sent_per_s')} | {med(rs, 'leases_per_s', '{:.0f}')} "
                      f"| {med(rs, 'missed_pct', '{:.2f}')} | **{srv}** | {gen_} | {rest} | {io} | {kb} | {med(rs, 'sync_s', '{:.2f}')} "
                      f"| {med(rs, 'p50_do_ms', '{:.3f}', False)} / {med(rs, 'p99_do_ms', '{:.3f}')} "
                      f"| {med(rs, 'p50_ra_ms', '{:.3f}', False)} / {med(rs, 'p99_ra_ms', '{:.3f}')} |")

    pair = sorted({(s, r) for (p, s, r) in cpu_med if p == "24" and (("8", s, r) in cpu_med or ("16", s, r) in cpu_med)},
                  key=lambda x: (skey(x[0]), num(x[1]) or 0))
    if pair:
        P("")
        P("### Pool size: server CPU per lease, /24 (new clients that release after their ACK, so every DORA allocates) vs /16 and /8")
        P("")
        P(STAMP)
        P("")
        P("From the table above (medians).")
        P("")
        P("| server | offered/s | /24 µs/lease | /16 µs/lease | /8 µs/lease | /16 vs /24 | /8 vs /24 |")
        P("|---|---|---|---|---|---|---|")
        for s, r in pair:
            a = cpu_med.get(("24", s, r))
            b = cpu_med.get(("16", s, r))
            c = cpu_med.get(("8", s, r))
            f = lambda x: "–" if x is None else f"{x:.1f}"
            d = lambda x: "–" if x is None or not a else f"**{100 * (x - a) / a:+.1f} %**"
            P(f"| {s} | {r} | {f(a)} | {f(b)} | {f(c)} | {d(b)} | {d(c)} |")

if uprows:
    P("")
    P("### Start-up and reload with leases on disk (/8 pool; median of runs, min–max)")
    P("")
    P(STAMP)
    P("")
    P("| server | leases | runs | exec → first OFFER s | RSS MB | reload s | OFFER after reload s | leases loaded | import s |")
    P("|---|---|---|---|---|---|---|---|---|")
    sg = {}
    for r in uprows:
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
