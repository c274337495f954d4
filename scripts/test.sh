#!/usr/bin/env bash
# The one test command:   sudo scripts/test.sh
#
# 1. installs what the tests need (scripts/install-deps.sh; fast when already installed);
# 2. cargo fmt --check, clippy -D warnings, cargo doc (broken doc links are errors), `cargo check`
#    of the fuzz targets (fuzz/), cargo-deny's licence/bans/sources check (deny.toml; skipped,
#    and said so, when cargo-deny is not installed), the .deb and .rpm packages
#    (packaging/build.sh, a release build) checked with lintian and rpmlint, build of every
#    binary;
# 3. every test of the workspace with cargo-nextest, including the system tests, which build
#    network-namespace labs (namespaces `pdt<tag>-<pid>-<n><role>`) and run the real daemon,
#    dhclient, udhcpc, dhcpcd, dhcrelay and perfdhcp inside them. They need root.
#
# Exits non-zero if any step fails, after running the others and printing a summary.
# Before and after the tests it deletes `pdt*` lab namespaces left by crashed runs, but only
# those whose creator PID (encoded in the name) is no longer alive.
#
# Environment: PRODHCP_SKIP_DEPS=1 skips step 1; extra arguments are passed to nextest
# (e.g. `sudo scripts/test.sh -E 'test(relay)'`).
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."
REPO=$(pwd)

log() { printf '\n=== %s\n' "$*"; }

if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/test.sh: the system tests need root (network namespaces, UDP port 67)." >&2
    echo "Run: sudo scripts/test.sh" >&2
    exit 2
fi

# --- cargo under sudo ---------------------------------------------------------------------
# shellcheck source=scripts/cargo-env.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/cargo-env.sh"

# --- stale lab namespaces -------------------------------------------------------------------
# Same rule as tests/src/lab.rs (cleanup_stale_namespaces / stale_owner_pid): a name
# `pdt<tag>-<pid>-<digit>…` with no '-' in <tag> or after the counter; removed only when
# /proc/<pid> does not exist. Processes still inside are stopped first (they are the lab's).
cleanup_stale_namespaces() {
    local dir=/run/netns name pid pids n=0
    [[ -d $dir ]] || return 0
    for path in "$dir"/pdt*; do
        [[ -e $path ]] || continue
        name=${path##*/}
        [[ $name =~ ^pdt[^-]*-([0-9]+)-[0-9][^-]*$ ]] || continue
        pid=${BASH_REMATCH[1]}
        [[ -e /proc/$pid ]] && continue
        pids=$(ip netns pids "$name" 2>/dev/null || true)
        if [[ -n $pids ]]; then
            kill -TERM $pids 2>/dev/null || true
            for _ in 1 2 3 4 5 6; do
                sleep 0.5
                pids=$(ip netns pids "$name" 2>/dev/null || true)
                [[ -z $pids ]] && break
            done
            if [[ -n $pids ]]; then kill -KILL $pids 2>/dev/null || true; fi
        fi
        ip netns del "$name" 2>/dev/null || true
        n=$((n + 1))
    done
    if ((n > 0)); then echo "removed $n stale lab namespace(s) of dead test runs"; fi
    return 0
}

# --- steps ----------------------------------------------------------------------------------
declare -a NAMES=() RESULTS=() TIMES=()
FAILED=0

# step NAME CMD...: runs CMD, records pass/fail and duration, never aborts the script.
step() {
    local name=$1 t0 rc
    shift
    log "$name: $*"
    t0=$(date +%s)
    CURRENT=$name
    set +e
    "$@"
    rc=$?
    set -e
    CURRENT=""
    NAMES+=("$name")
    TIMES+=("$(($(date +%s) - t0))s")
    if ((rc == 0)); then
        RESULTS+=("ok")
    else
        RESULTS+=("FAILED (exit $rc)")
        FAILED=1
    fi
    return "$rc"
}
skip() {
    NAMES+=("$1")
    RESULTS+=("skipped ($2)")
    TIMES+=("-")
    FAILED=1
}

summary() {
    local i total=$(($(date +%s) - START))
    printf '\n=== summary (%s, %ds)\n' "$REPO" "$total"
    for i in "${!NAMES[@]}"; do
        printf '  %-14s %-22s %s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${TIMES[$i]}"
    done
    if ((FAILED)); then echo "RESULT: FAILED"; else echo "RESULT: all passed"; fi
}
START=$(date +%s)
trap 'cleanup_stale_namespaces >/dev/null 2>&1 || true' EXIT
# Interrupted: the step that was running is named, and the result is never "all passed".
CURRENT=""
interrupted() {
    echo
    echo "interrupted"
    NAMES+=("${CURRENT:-between steps}")
    RESULTS+=("INTERRUPTED")
    TIMES+=("-")
    FAILED=1
    summary
    exit 130
}
trap interrupted INT TERM

if [[ ${PRODHCP_SKIP_DEPS:-0} == 1 ]]; then
    echo "PRODHCP_SKIP_DEPS=1: not checking dependencies"
elif ! step deps scripts/install-deps.sh; then
    summary
    exit 1
fi
command -v cargo >/dev/null || { echo "cargo not found (install Rust with rustup)" >&2; exit 1; }

step fmt as_user cargo fmt --all -- --check || true
step clippy as_user cargo clippy --workspace --all-targets -- -D warnings || true
# Doc links: `rustdoc::broken_intra_doc_links` is denied in the workspace lints (Cargo.toml).
step doc as_user cargo doc --workspace --no-deps --quiet || true
# The fuzz crate (fuzz/, its own workspace and lock file) must keep compiling against the
# crates it fuzzes: checked on stable, no sanitizer, no cargo-fuzz needed (fuzz/README.md).
step fuzz-check as_user cargo check --manifest-path fuzz/Cargo.toml --bins --locked || true
# Dependency policy (deny.toml): licences, duplicate versions (warnings only), sources. Runs
# without the advisories check, which needs the RustSec database from GitHub (not reachable here);
# cargo metadata may download crates of other targets from crates.io.
if command -v cargo-deny >/dev/null; then
    step deny as_user cargo deny check licenses bans sources || true
else
    echo "cargo-deny is not installed: the deny step (licences, bans, sources) is skipped." \
        "Install it with: cargo install --locked cargo-deny (.ci/run does)"
    NAMES+=("deny")
    RESULTS+=("skipped (no cargo-deny)")
    TIMES+=("-")
fi
# Packages (issue 11): packaging/build.sh makes the .deb and .rpm into target/packages/ (a
# release build of the three binaries), which tests/tests/package_deb.rs installs with dpkg;
# lintian and rpmlint check them (errors fail the step; warnings kept are listed, with the
# reason, in packaging/README.md).
if as_user cargo deb --version >/dev/null 2>&1 && as_user cargo generate-rpm --version >/dev/null 2>&1; then
    if step package as_user packaging/build.sh; then
        step lintian lintian --fail-on error target/packages/prodhcp_*.deb \
            target/packages/prodhcp-tools_*.deb || true
        step rpmlint rpmlint -c packaging/rpmlint.toml target/packages/prodhcp-*.rpm || true
    fi
else
    echo "cargo-deb or cargo-generate-rpm is not installed: the package step is skipped" \
        "(.ci/run installs them); tests/tests/package_deb.rs skips too."
    NAMES+=("package")
    RESULTS+=("skipped (no cargo-deb)")
    TIMES+=("-")
fi
if step build as_user cargo build --workspace --bins &&
    step build-tests as_user cargo nextest run --workspace --no-run; then
    cleanup_stale_namespaces
    # Root from here: the system tests create network namespaces and bind port 67.
    step tests cargo nextest run --workspace --no-fail-fast "$@" || true
    cleanup_stale_namespaces
else
    skip tests "build failed"
fi

summary
exit "$FAILED"
