#!/usr/bin/env bash
# Installs what the prodhcp system tests and the demo need on Debian 12 (bookworm).
#
#   sudo scripts/install-deps.sh
#
# Idempotent: when every package is already installed, apt is not run at all (set
# PRODHCP_FORCE_APT=1 to run `apt-get update` and the install anyway). Daemons shipped by
# these packages (kea-dhcp4, dhcrelay, rsyslogd) are NOT started: a policy-rc.d that exits
# 101 is in place while apt runs, and any such process that appears during the install is
# stopped afterwards (systemctl when systemd runs, otherwise only the PID in its pidfile).
# Processes that were running before are left alone.
#
# Also makes sure the Rust tools the tests use are there: cargo, rustfmt, clippy and
# cargo-nextest (installed with `cargo install cargo-nextest --locked` if missing).
set -euo pipefail

# Debian package -> what it provides for the tests/demo.
PACKAGES=(
    kea-admin         # perfdhcp (load generator)
    kea-dhcp4-server  # reference server for comparison runs
    isc-dhcp-client   # dhclient
    isc-dhcp-relay    # dhcrelay
    udhcpc            # udhcpc (busybox)
    busybox
    dhcpcd-base       # dhcpcd (/usr/sbin/dhcpcd)
    rsyslog           # syslog audit tests (planned)
    iproute2          # ip netns / link / addr
    nftables          # nft: the HA partition test drops traffic between two appliances
    procps            # pgrep, ps, sysctl
    jq
    python3
    # packaging (packaging/build.sh, tests/tests/package_deb.rs, issue 11)
    binutils          # strip, objdump
    lintian           # checks the .deb
    rpmlint           # checks the .rpm
    rpm               # rpm -qlp (the package test compares the .rpm's files with the .deb's)
    systemd           # systemd-sysusers (the prodhcp package's postinst), systemd-analyze
    strace            # packaging/syscall-check.sh
)
# Daemons these packages may start, and where each records its PID.
DAEMON_UNITS=(kea-dhcp4-server kea-dhcp6-server kea-ctrl-agent kea-dhcp-ddns-server
    isc-dhcp-server isc-dhcp-relay rsyslog)
DAEMON_NAMES=(kea-dhcp4 kea-dhcp6 kea-ctrl-agent kea-dhcp-ddns dhcpd dhcrelay rsyslogd)
PIDFILES=(/run/kea/*.pid /run/dhcpd.pid /run/dhcrelay.pid /run/rsyslogd.pid)

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0)"
[[ -r /etc/debian_version ]] || die "this script supports Debian (12/bookworm) only"

# --- Debian packages ------------------------------------------------------------------------

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done

# PIDs of the daemons above, one per line ("name pid").
daemon_pids() {
    local d pid comm
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        comm=$(cat "$d/comm" 2>/dev/null) || continue
        for n in "${DAEMON_NAMES[@]}"; do
            # comm is truncated to 15 bytes (kea-dhcp-ddns fits; kea-ctrl-agent fits).
            if [[ $comm == "$n" ]]; then printf '%s %s\n' "$n" "$pid"; fi
        done
    done
    return 0
}

# Stops daemons that were not running before apt ran (argument: the "before" list).
stop_new_daemons() {
    local before=$1 after name pid pf u
    after=$(daemon_pids)
    [[ -n $after ]] || return 0
    while read -r name pid; do
        [[ -n $name ]] || continue
        if grep -qx "$name $pid" <<<"$before"; then continue; fi
        log "apt started $name (pid $pid): stopping it"
        if [[ -d /run/systemd/system ]]; then
            for u in "${DAEMON_UNITS[@]}"; do
                if systemctl is-active --quiet "$u" 2>/dev/null; then
                    # Only units whose main PID is the new process.
                    if [[ $(systemctl show -p MainPID --value "$u") == "$pid" ]]; then
                        systemctl stop "$u"
                    fi
                fi
            done
        fi
        # Without systemd (or if the unit did not own it): the PID from its pidfile only.
        for pf in "${PIDFILES[@]}"; do
            [[ -f $pf && $(tr -dc 0-9 <"$pf") == "$pid" ]] || continue
            kill -TERM "$pid" 2>/dev/null || true
        done
    done <<<"$after"
    sleep 1
    after=$(daemon_pids)
    while read -r name pid; do
        [[ -n $name ]] || continue
        if grep -qx "$name $pid" <<<"$before"; then continue; fi
        log "warning: $name (pid $pid) is still running; it was started by the package install"
    done <<<"$after"
}

if [[ ${#missing[@]} -eq 0 && ${PRODHCP_FORCE_APT:-0} != 1 ]]; then
    log "all ${#PACKAGES[@]} Debian packages already installed"
else
    export DEBIAN_FRONTEND=noninteractive
    before=$(daemon_pids)
    # Keep package scripts from starting services while we install. Restore whatever
    # policy-rc.d was there before (a container image often has its own).
    policy=/usr/sbin/policy-rc.d
    backup=""
    if [[ -e $policy ]]; then
        backup=$(mktemp /tmp/policy-rc.d.XXXXXX)
        cp -a "$policy" "$backup"
    fi
    restore_policy() {
        if [[ -n $backup ]]; then
            mv -f "$backup" "$policy"
        else
            rm -f "$policy"
        fi
    }
    trap restore_policy EXIT
    printf '#!/bin/sh\n# prodhcp install-deps: no service starts during package installation\nexit 101\n' >"$policy"
    chmod 755 "$policy"

    log "installing: ${missing[*]:-(forced) ${PACKAGES[*]}}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"

    restore_policy
    trap - EXIT
    stop_new_daemons "$before"
fi

# Every program the tests call must now be on PATH.
for prog in perfdhcp kea-dhcp4 dhclient dhcrelay udhcpc busybox dhcpcd rsyslogd ip pgrep jq python3 \
    strip lintian rpmlint rpm strace systemd-sysusers systemd-analyze; do
    command -v "$prog" >/dev/null || [[ -x /usr/sbin/$prog || -x /sbin/$prog ]] ||
        die "$prog is still missing after the install"
done

# --- Rust tools -----------------------------------------------------------------------------

# Under sudo, PATH is reset and the invoking user's ~/.cargo/bin is not on it: use theirs.
if ! command -v cargo >/dev/null; then
    user_home=$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)
    for home in "$user_home" "$HOME"; do
        if [[ -x $home/.cargo/bin/cargo ]]; then
            export PATH="$home/.cargo/bin:$PATH" CARGO_HOME="$home/.cargo" RUSTUP_HOME="$home/.rustup"
            break
        fi
    done
fi
command -v cargo >/dev/null ||
    die "cargo not found: install Rust with rustup (https://rustup.rs), then run this again"

# As the invoking user when run through sudo, so ~/.cargo stays theirs.
as_user() {
    if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
        sudo -u "$SUDO_USER" env PATH="$PATH" ${CARGO_HOME:+CARGO_HOME="$CARGO_HOME"} \
            ${RUSTUP_HOME:+RUSTUP_HOME="$RUSTUP_HOME"} "$@"
    else
        "$@"
    fi
}

for comp in rustfmt clippy; do
    if ! as_user cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null || die "cargo $comp is missing and rustup is not available"
        log "adding rustup component $comp"
        as_user rustup component add "$comp"
    fi
done
if as_user cargo nextest --version >/dev/null 2>&1; then
    log "cargo-nextest present: $(as_user cargo nextest --version 2>/dev/null | head -1)"
else
    log "installing cargo-nextest (cargo install cargo-nextest --locked)"
    as_user cargo install cargo-nextest --locked
fi
log "done"
