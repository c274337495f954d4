#!/usr/bin/env bash
# The issue-8 demo on an idle machine: two appliances in a namespace lab, relayed dhcpperf
# load against the service address, `prodhcpctl switchover` every 10 s for 2 minutes (12
# switchovers), then `dhcpperf verify` of every ACK against the final active's export; and
# SIGKILL of the active's whole process tree under load (ROUNDS times). The outage bound is the
# issue's 200 ms. It runs the system tests of tests/tests/ha_failover.rs with those settings
# and prints their figures.
#
#   sudo bench/switchover_demo.sh                 # 12 switchovers 10 s apart, 5 kill rounds
#   HA_SWITCHOVERS=4 HA_SWITCHOVER_EVERY_S=5 ROUNDS=1 sudo bench/switchover_demo.sh
#
# Network safety: every packet stays in the namespaces the tests create and remove.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
# shellcheck source=scripts/cargo-env.sh
source scripts/cargo-env.sh
[[ $(id -u) -eq 0 ]] || { echo "run as root (network namespaces)" >&2; exit 1; }
export HA_SWITCHOVERS=${HA_SWITCHOVERS:-12}
export HA_SWITCHOVER_EVERY_S=${HA_SWITCHOVER_EVERY_S:-10}
export HA_SWITCHOVER_RATE=${HA_SWITCHOVER_RATE:-400}
export HA_OUTAGE_BOUND_MS=${HA_OUTAGE_BOUND_MS:-200}
ROUNDS=${ROUNDS:-5}
as_user cargo build --workspace --bins
echo "commit $(git rev-parse --short HEAD); $(nproc) cores; $HA_SWITCHOVERS switchovers every" \
    "${HA_SWITCHOVER_EVERY_S} s at $HA_SWITCHOVER_RATE leases/s; bound $HA_OUTAGE_BOUND_MS ms"
cargo nextest run -p prodhcp-systests --test ha_failover --no-capture \
    -E 'test(switchover_moves)' 2>&1 |
    grep -E 'roles at start|switchover done|longest gap|switchovers at|verify against|PASS|FAIL|panicked|left a gap'
for r in $(seq 1 "$ROUNDS"); do
    echo "--- SIGKILL round $r"
    cargo nextest run -p prodhcp-systests --test ha_failover --no-capture \
        -E 'test(sigkill)' 2>&1 |
        grep -E 'roles at start|SIGKILL of|longest gap|verify against|PASS|FAIL|panicked|bound'
done
