#!/usr/bin/env bash
# The one demo command:   sudo scripts/demo.sh
#
# Builds prodhcp (release) and runs it in a private network lab made of network namespaces
# named pdemo-<pid>-<role>; nothing is created or changed on the host's own interfaces.
#
#   pdemo-…-srv   s0 198.18.0.1/24  ─┐
#   pdemo-…-rly   u0 198.18.0.2/24  ─┤ br0: the server's segment (direct clients c1, c2)
#   pdemo-…-load  l0 198.18.0.3/24  ─┘      perfdhcp, acting as relay 198.18.0.3
#   pdemo-…-rly   d1 198.18.1.1/24  ─── br1: a client segment behind ISC dhcrelay (client c3)
#   (both bridges live in pdemo-…-br)
#
# prodhcpd serves 198.18.0.0/24 directly on s0, 198.18.1.0/24 through dhcrelay, and the
# 10.0.0.0/8 access network to relay 198.18.0.3 (mapped with `relays:`). The demo runs real
# dhclient and udhcpc, dhclient behind dhcrelay, a perfdhcp burst, a SIGHUP reload and a
# restart, and says what happened. Everything it started is stopped and its namespaces and
# temp dir deleted on exit, including on failure or Ctrl-C.
#
# Environment: PRODHCP_DEMO_KEEP=1 keeps the temp dir (config, logs, lease table);
# PRODHCP_SKIP_DEPS=1 skips scripts/install-deps.sh; DEMO_EXCHANGES / DEMO_RATE size the
# perfdhcp burst (default 2000 at 1000/s); DEMO_BULK_POOL the 10.0.0.0/8 pool (default: the
# whole /8, 16.7 million addresses: a 1.3 GB lease table file in the temp dir under /var/tmp).
set -Eeuo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."
REPO=$(pwd)
EXCHANGES=${DEMO_EXCHANGES:-2000}
RATE=${DEMO_RATE:-1000}
BULK_POOL=${DEMO_BULK_POOL:-10.0.0.1-10.255.255.254}

if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/demo.sh needs root (network namespaces, UDP port 67). Run: sudo scripts/demo.sh" >&2
    exit 2
fi

say() { printf '%s\n' "$*"; }
head_() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() {
    printf '\ndemo FAILED: %s\n' "$*" >&2
    exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- cargo under sudo ---------------------------------------------------------------------
# shellcheck source=scripts/cargo-env.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/cargo-env.sh"

# --- lab state and cleanup ------------------------------------------------------------------
PREFIX="pdemo-$$"
NS_BR="$PREFIX-br" NS_SRV="$PREFIX-srv" NS_RLY="$PREFIX-rly" NS_LOAD="$PREFIX-load"
NS_C1="$PREFIX-c1" NS_C2="$PREFIX-c2" NS_C3="$PREFIX-c3"
NAMESPACES=()  # created, in order
PIDS=()        # "pid comm" of every background process started
TMP=""
CLEANED=0
OK=0

# Stops every process inside namespace $1 (all ours: the namespace is), then deletes it.
remove_ns() {
    local ns=$1 pids
    [[ -e /run/netns/$ns ]] || return 0
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [[ -n $pids ]]; then
        kill -TERM $pids 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            sleep 0.3
            pids=$(ip netns pids "$ns" 2>/dev/null || true)
            [[ -z $pids ]] && break
        done
        if [[ -n $pids ]]; then kill -KILL $pids 2>/dev/null || true; fi
    fi
    ip netns del "$ns" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    ((CLEANED)) && return
    CLEANED=1
    trap - INT TERM
    set +e
    if ((!OK)) && [[ -n $TMP && -n ${DAEMON_LOG:-} && -f $TMP/$DAEMON_LOG.log ]]; then
        say ""
        say "--- last lines of the prodhcpd log:"
        tail -n 20 "$TMP/$DAEMON_LOG.log"
    fi
    # Our processes, newest first, by PID (only if the PID still runs the same program).
    local i pid comm
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        read -r pid comm <<<"${PIDS[$i]}"
        if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]]; then
            kill -TERM "$pid" 2>/dev/null
        fi
    done
    for ((i = ${#NAMESPACES[@]} - 1; i >= 0; i--)); do
        remove_ns "${NAMESPACES[$i]}"
    done
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ ${PRODHCP_DEMO_KEEP:-0} == 1 ]]; then
            say "kept $TMP (PRODHCP_DEMO_KEEP=1)"
        else
            rm -rf "$TMP"
        fi
    fi
    say "cleaned up: ${#NAMESPACES[@]} namespaces deleted, processes stopped"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'say "error at line $LINENO: $BASH_COMMAND" >&2' ERR

# Namespaces of earlier demos whose shell is gone (killed with SIGKILL, machine crash).
for path in /run/netns/pdemo-*; do
    [[ -e $path ]] || continue
    name=${path##*/}
    [[ $name =~ ^pdemo-([0-9]+)-[a-z0-9]+$ ]] || continue
    [[ -e /proc/${BASH_REMATCH[1]} ]] && continue
    remove_ns "$name"
done

# --- build and dependencies -----------------------------------------------------------------
head_ "Preparing"
if [[ ${PRODHCP_SKIP_DEPS:-0} != 1 ]]; then
    scripts/install-deps.sh
fi
for prog in ip dhclient udhcpc dhcrelay perfdhcp jq; do
    command -v "$prog" >/dev/null || die "$prog is not installed (run scripts/install-deps.sh)"
done
say "building prodhcpd and prodhcpctl (cargo build --release -p prodhcp-supervisor -p prodhcp-ctl --bins) ..."
as_user cargo build --release -p prodhcp-supervisor -p prodhcp-ctl --bins --quiet
PRODHCPD=$REPO/target/release/prodhcpd
PRODHCPCTL=$REPO/target/release/prodhcpctl
[[ -x $PRODHCPD && -x $PRODHCPCTL ]] || die "build produced no prodhcpd/prodhcpctl"

TMP=$(mktemp -d /var/tmp/prodhcp-demo.XXXXXX)
SOCK=$TMP/control.sock
CONF=$TMP/prodhcp.ron
ctl() { "$PRODHCPCTL" --socket "$SOCK" --timeout 10 "$@"; }
ctlj() { "$PRODHCPCTL" --socket "$SOCK" --timeout 10 --json "$@"; }

# --- the lab --------------------------------------------------------------------------------
add_ns() {
    ip netns add "$1"
    NAMESPACES+=("$1")
    ip -n "$1" link set lo up
    ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}
PORT_N=0
# connect NS IFNAME BRIDGE [ADDR [MAC]]: a veth from the bridge namespace into NS.
connect() {
    local ns=$1 ifname=$2 br=$3 addr=${4:-} mac=${5:-}
    local port="p$PORT_N"
    PORT_N=$((PORT_N + 1))
    ip -n "$NS_BR" link add "$port" type veth peer name "$ifname" netns "$ns"
    ip -n "$NS_BR" link set "$port" master "$br" up
    if [[ -n $mac ]]; then ip -n "$ns" link set "$ifname" address "$mac"; fi
    ip -n "$ns" link set "$ifname" up
    if [[ -n $addr ]]; then ip -n "$ns" addr add "$addr" dev "$ifname"; fi
}
# spawn NS LABEL CMD...: runs CMD in NS in the background, output to $TMP/LABEL.log.
spawn() {
    local ns=$1 label=$2
    shift 2
    ip netns exec "$ns" "$@" </dev/null >"$TMP/$label.log" 2>&1 &
    local pid=$!
    # `ip netns exec` execs the command in place: the PID is the command's.
    PIDS+=("$pid $(basename "$1" | cut -c1-15)")
    LAST_PID=$pid
}

head_ "Building the lab (network namespaces $PREFIX-*)"
add_ns "$NS_BR"
for br in br0 br1; do
    ip -n "$NS_BR" link add "$br" type bridge
    ip -n "$NS_BR" link set "$br" type bridge stp_state 0 forward_delay 0 mcast_snooping 0
    ip -n "$NS_BR" link set "$br" up
done
add_ns "$NS_SRV"
connect "$NS_SRV" s0 br0 198.18.0.1/24
ip -n "$NS_SRV" route add 198.18.1.0/24 via 198.18.0.2
add_ns "$NS_RLY"
connect "$NS_RLY" u0 br0 198.18.0.2/24
connect "$NS_RLY" d1 br1 198.18.1.1/24
ip netns exec "$NS_RLY" sysctl -qw net.ipv4.ip_forward=1
add_ns "$NS_LOAD"
connect "$NS_LOAD" l0 br0 198.18.0.3/24
MAC1=02:de:00:00:00:01 MAC2=02:de:00:00:00:02 MAC3=02:de:00:00:00:03
add_ns "$NS_C1"
connect "$NS_C1" eth0 br0 "" "$MAC1"
add_ns "$NS_C2"
connect "$NS_C2" eth0 br0 "" "$MAC2"
add_ns "$NS_C3"
connect "$NS_C3" eth0 br1 "" "$MAC3"
say "server 198.18.0.1 ($NS_SRV), relay 198.18.0.2/198.18.1.1 ($NS_RLY),"
say "load generator 198.18.0.3 ($NS_LOAD), clients c1 c2 on the server's segment, c3 behind the relay"

# --- configuration --------------------------------------------------------------------------
head_ "Configuration ($CONF)"
write_config() {
    local lease1=$1
    cat >"$CONF" <<EOF
// prodhcp demo configuration (see etc/prodhcp.ron for every field)
(
    state_dir: "$TMP/state",
    control_socket: "$SOCK",
    interfaces: ["s0"],          // direct (broadcast) clients on the server's segment
    workers: 2,
    log_level: "info",
    // the lease audit trail: every lease transition as a JSON line (the audit process)
    audit: (file: Some("$TMP/audit.jsonl")),
    subnets: [
        (   // the server's own segment
            network: "198.18.0.0/24",
            pools: ["198.18.0.100-198.18.0.199"],
            lease_time: 600,
            options: { "routers": "198.18.0.1", "domain-name-servers": "198.18.0.1" },
            reservations: [(mac: "$MAC2", address: "198.18.0.50", hostname: "demo-c2")],
        ),
        (   // a segment behind dhcrelay (giaddr 198.18.1.1)
            network: "198.18.1.0/24",
            pools: ["198.18.1.100-198.18.1.199"],
            lease_time: $lease1,
            options: { "routers": "198.18.1.1" },
        ),
        (   // a carrier access network behind relay agent 198.18.0.3 (perfdhcp here)
            network: "10.0.0.0/8",
            pools: ["$BULK_POOL"],
            lease_time: 3600,
            relays: ["198.18.0.3"],
            options: { "routers": "10.0.0.1", "domain-name-servers": "192.0.2.53" },
        ),
    ],
)
EOF
}
mkdir -p "$TMP/state"
write_config 600
say "subnets: 198.18.0.0/24 direct on s0 (pool .100-.199, 198.18.0.50 reserved for $MAC2),"
say "         198.18.1.0/24 via dhcrelay, 10.0.0.0/8 via relay 198.18.0.3 (pool $BULK_POOL)"
say "\$ prodhcpd --config $CONF --check-config"
"$PRODHCPD" --config "$CONF" --check-config

# --- start the server -----------------------------------------------------------------------
# wait_ready TIMEOUT_S: until status answers with every worker running.
wait_ready() {
    local deadline=$((SECONDS + $1)) st
    while ((SECONDS < deadline)); do
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            die "prodhcpd exited during start-up (see its log below)"
        fi
        st=$(ctlj status 2>/dev/null || true)
        if [[ -n $st ]] && jq -e '.workers | length > 0 and all(.state == "running")' <<<"$st" >/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    die "prodhcpd not ready in $1 s"
}
STARTS=0
start_daemon() {
    local t0
    t0=$(now)
    STARTS=$((STARTS + 1))
    DAEMON_LOG=prodhcpd-$STARTS
    spawn "$NS_SRV" "$DAEMON_LOG" "$PRODHCPD" --config "$CONF"
    DAEMON_PID=$LAST_PID
    wait_ready 120
    say "prodhcpd running: pid $DAEMON_PID, ready in $(since "$t0") s"
}
head_ "Starting prodhcpd in $NS_SRV"
start_daemon
say "(the first start created the lease table, $(du -h --apparent-size "$TMP/state/leases.table" | cut -f1) for every"
say " address of every pool; later starts only map it)"

# --- real clients ---------------------------------------------------------------------------
# A hook for dhclient (-sf) and udhcpc (-s) that only logs the event and sets the address.
write_hook() {
    local name=$1
    cat >"$TMP/$name.hook" <<EOF
#!/bin/sh
# Demo hook: log the event and set the address; never touches resolv.conf or routes.
ev="\${reason:-\$1}"
addr="\${new_ip_address:-\$ip}"
echo "event=\$ev ip=\$addr if=\$interface" >> '$TMP/$name.events'
case "\$ev" in
  BOUND|RENEW|REBIND|REBOOT|bound|renew)
    [ -n "\$addr" ] && ip addr replace "\$addr/24" dev "\$interface" ;;
esac
exit 0
EOF
    chmod 755 "$TMP/$name.hook"
    : >"$TMP/$name.events"
}
start_client() {
    local kind=$1 name=$2 ns=$3
    write_hook "$name"
    case $kind in
    dhclient)
        spawn "$ns" "$name" dhclient -4 -d -v -sf "$TMP/$name.hook" -lf "$TMP/$name.leases" \
            -pf "$TMP/$name.pid" eth0
        ;;
    udhcpc)
        spawn "$ns" "$name" udhcpc -f -q -n -t 5 -T 2 -i eth0 -s "$TMP/$name.hook"
        ;;
    esac
    eval "T0_$name=$(now)"
}
# wait_bound NAME: prints the bound address (≤ 30 s) or fails.
wait_bound() {
    local name=$1 deadline=$((SECONDS + 30)) ip
    while ((SECONDS < deadline)); do
        ip=$(awk '{ev=""; a=""; for (i=1;i<=NF;i++) { if ($i ~ /^event=/) ev=substr($i,7); if ($i ~ /^ip=/) a=substr($i,4) }
                   if (ev ~ /^(BOUND|REBOOT|bound)$/ && a != "") { print a; exit } }' "$TMP/$name.events")
        if [[ -n $ip ]]; then
            echo "$ip"
            return 0
        fi
        sleep 0.2
    done
    say "--- $name log:" >&2
    tail -n 15 "$TMP/$name.log" >&2
    die "$name got no lease in 30 s"
}

head_ "ISC dhcrelay in $NS_RLY: clients on d1 (198.18.1.0/24) -> server 198.18.0.1"
spawn "$NS_RLY" dhcrelay dhcrelay -4 -d -id d1 -iu u0 198.18.0.1
for _ in $(seq 50); do
    grep -q '/d1' "$TMP/dhcrelay.log" && grep -q '/u0' "$TMP/dhcrelay.log" && break
    sleep 0.2
done
grep -q '/d1' "$TMP/dhcrelay.log" || die "dhcrelay did not come up: $(tail -n 5 "$TMP/dhcrelay.log")"
say "dhcrelay listening (pid $LAST_PID)"

head_ "Real DHCP clients"
start_client dhclient c1 "$NS_C1"
start_client udhcpc c2 "$NS_C2"
start_client dhclient c3 "$NS_C3"
declare -A GOT
for spec in "c1|dhclient on the server's segment|$MAC1|$NS_C1" \
    "c2|udhcpc on the server's segment|$MAC2|$NS_C2" \
    "c3|dhclient behind dhcrelay|$MAC3|$NS_C3"; do
    IFS='|' read -r name what mac ns <<<"$spec"
    ip=$(wait_bound "$name")
    t0_var="T0_$name"
    GOT[$name]=$ip
    on_if=$(ip -n "$ns" -4 -o addr show dev eth0 | awk '{print $4}')
    say "$(printf '%-34s %s  got %-13s in %4s s  (eth0 now has %s)' "$what" "$mac" "$ip" "$(since "${!t0_var}")" "$on_if")"
done
[[ ${GOT[c2]} == 198.18.0.50 ]] || die "udhcpc ($MAC2) got ${GOT[c2]}, not its reservation 198.18.0.50"
[[ ${GOT[c1]} == 198.18.0.* && ${GOT[c3]} == 198.18.1.* ]] || die "a client got an address from the wrong subnet"
say "(udhcpc got its reserved address; the client behind the relay got one from the relay's subnet)"
for name in c1 c2 c3; do
    say "\$ prodhcpctl lease ${GOT[$name]}"
    ctl lease "${GOT[$name]}"
done

# --- perfdhcp -------------------------------------------------------------------------------
head_ "perfdhcp: $EXCHANGES DORA exchanges at $RATE/s from relay 198.18.0.3 (10.0.0.0/8)"
say "\$ perfdhcp -4 -l 198.18.0.3 -R $EXCHANGES -r $RATE -n $EXCHANGES -p $((EXCHANGES / RATE + 10)) -d 2 -W 200000 198.18.0.1"
perf_out=$(timeout $((EXCHANGES / RATE + 40)) ip netns exec "$NS_LOAD" \
    perfdhcp -4 -l 198.18.0.3 -R "$EXCHANGES" -r "$RATE" -n "$EXCHANGES" -p $((EXCHANGES / RATE + 10)) \
    -d 2 -W 200000 198.18.0.1 2>&1) || true
printf '%s\n' "$perf_out" >"$TMP/perfdhcp.log"
perf_field() { # SECTION FIELD
    awk -v sec="$1" -v f="$2" '
        /Statistics for: / { cur = $0 }
        index(cur, sec) && index($0, f ":") == 1 { split($0, a, ":"); gsub(/ /, "", a[2]); split(a[2], b, /[^0-9.]/); print b[1]; exit }
    ' <<<"$perf_out"
}
disc=$(perf_field DISCOVER-OFFER "sent packets")
offers=$(perf_field DISCOVER-OFFER "received packets")
reqs=$(perf_field REQUEST-ACK "sent packets")
acks=$(perf_field REQUEST-ACK "received packets")
drops_do=$(perf_field DISCOVER-OFFER "drops")
drops_ra=$(perf_field REQUEST-ACK "drops")
rate_line=$(grep -m1 '^Rate:' <<<"$perf_out" || true)
[[ -n $disc && -n $acks ]] || { say "$perf_out"; die "could not read perfdhcp's statistics"; }
say "perfdhcp: ${rate_line:-no rate line}"
say "  DISCOVER sent $disc, OFFER received $offers (dropped ${drops_do:-?})"
say "  REQUEST  sent $reqs, ACK   received $acks (dropped ${drops_ra:-?})"
say "  => $acks of $disc clients completed DORA ($(awk -v a="$acks" -v d="$disc" 'BEGIN{printf "%.1f", d ? 100*a/d : 0}') %)"
((acks > 0)) || die "perfdhcp completed no exchange"

# --- what the server says -------------------------------------------------------------------
head_ "\$ prodhcpctl status"
ctl status
head_ "\$ prodhcpctl stats"
ctl stats
head_ "A few leases of the 10.0.0.0/8 subnet"
export_json=$(ctlj leases export --format json 2>/dev/null)
mapfile -t sample < <(jq -r '[.[] | select(.address | startswith("10."))] | .[0:3][] | .address' <<<"$export_json")
for a in "${sample[@]}"; do
    say "\$ prodhcpctl lease $a"
    ctl lease "$a"
done
say "\$ prodhcpctl leases --mac $MAC3"
ctl leases --mac "$MAC3"

# --- the audit trail ------------------------------------------------------------------------
head_ "The lease audit trail (audit process -> $TMP/audit.jsonl)"
audited=0
for _ in $(seq 1 100); do
    audited=$(grep -cE '"event":"(commit|reservation-used)"' "$TMP/audit.jsonl" 2>/dev/null || true)
    ((audited >= acks)) && break
    sleep 0.1
done
say "\$ prodhcpctl audit status"
ctl audit status
say "new-lease records (commit, reservation-used) in the file: $audited; perfdhcp saw $acks ACKs, the rest are the real clients"
((audited >= acks)) || die "the audit file has $audited commit records for $acks ACKs"
say "\$ head -1 $TMP/audit.jsonl"
head -1 "$TMP/audit.jsonl"
say "\$ prodhcpctl history ${GOT[c1]} --from $TMP/audit.jsonl"
ctl history "${GOT[c1]}" --from "$TMP/audit.jsonl"

# --- reload ---------------------------------------------------------------------------------
head_ "Reload: lease_time of 198.18.1.0/24 600 -> 900, then SIGHUP"
gen_before=$(ctlj status | jq -r .config_generation)
write_config 900
kill -HUP "$DAEMON_PID"
gen_after=$gen_before
for _ in $(seq 50); do
    st=$(ctlj status)
    gen_after=$(jq -r .config_generation <<<"$st")
    ((gen_after > gen_before)) && break
    sleep 0.2
done
pid_after=$(jq -r .pid <<<"$st")
say "config_generation $gen_before -> $gen_after; last_reload: $(jq -c .last_reload <<<"$st")"
say "supervisor pid before $DAEMON_PID, after $pid_after"
((gen_after > gen_before)) || die "SIGHUP did not load the new configuration"
[[ $pid_after == "$DAEMON_PID" ]] || die "the PID changed on reload"

# --- restart --------------------------------------------------------------------------------
head_ "Restart: SIGTERM, start again, the leases are still there"
count_before=$(ctlj leases export --format json 2>/dev/null | jq length)
kill -TERM "$DAEMON_PID"
rc=0
for _ in $(seq 100); do
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$DAEMON_PID" 2>/dev/null && die "prodhcpd still running 10 s after SIGTERM"
wait "$DAEMON_PID" || rc=$?
say "prodhcpd (pid $DAEMON_PID) stopped on SIGTERM with exit code $rc"
((rc == 0)) || die "exit code $rc on SIGTERM (expected 0)"
start_daemon
count_after=$(ctlj leases export --format json 2>/dev/null | jq length)
clean=$(ctlj status | jq -r .table.clean_start)
say "leases in the table: $count_before before the restart, $count_after after (clean_start: $clean)"
[[ $count_before == "$count_after" ]] || die "lease count changed across the restart"
say "\$ prodhcpctl lease ${GOT[c1]}   (after the restart)"
ctl lease "${GOT[c1]}"

head_ "Demo finished: all steps OK"
OK=1
