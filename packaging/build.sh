#!/usr/bin/env bash
# Builds the prodhcp packages, .deb and .rpm, into target/packages/:
#
#   packaging/build.sh [--version V] [--no-build] [--out DIR]
#
#   prodhcp        prodhcpd, prodhcpctl, the systemd unit, /etc/prodhcp/prodhcp.ron (serves
#                  nothing), man pages, completions, logrotate, sysusers.d, examples
#   prodhcp-tools  dhcpperf, its man pages and completions
#
# --version V   package version (default: the workspace version from Cargo.toml); the Debian
#               revision is always -1, the RPM release 1.
# --no-build    package the binaries already in target/release (no compile): e.g. to make a
#               "newer" package of the same build for an upgrade test.
# --out DIR     write the packages to DIR instead of target/packages (the upgrade test does).
#
# Steps: release build of prodhcpd, prodhcpctl, dhcpperf and tools/gen-docs; stripped copies of
# the binaries, gen-docs' man pages (gzipped) and completions, and a Debian changelog under
# target/packaging/; then cargo-deb and cargo-generate-rpm (pinned in .ci/run) with the
# [package.metadata.deb] / [package.metadata.generate-rpm] sections of supervisor/Cargo.toml
# and tools/dhcpperf/Cargo.toml. Needs: cargo-deb, cargo-generate-rpm, binutils (strip,
# objdump), gzip.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
# shellcheck source=scripts/cargo-env.sh
source scripts/cargo-env.sh

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

version=""
build=1
out=target/packages
while [[ $# -gt 0 ]]; do
    case $1 in
        --version) [[ $# -ge 2 ]] || die "--version needs a value"; version=$2; shift 2 ;;
        --version=*) version=${1#--version=}; shift ;;
        --no-build) build=0; shift ;;
        --out) [[ $# -ge 2 ]] || die "--out needs a value"; out=$2; shift 2 ;;
        -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
if [[ -z $version ]]; then
    version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
fi
# Debian and RPM both accept this (upstream version: digits, letters, '.', '+', '~').
[[ $version =~ ^[0-9][0-9A-Za-z.+~]*$ ]] || die "bad version: $version"

for tool in deb generate-rpm; do
    as_user cargo "$tool" --version >/dev/null 2>&1 ||
        die "cargo-$tool is not installed (see .ci/run for the pinned version)"
done
for prog in strip objdump gzip; do
    command -v "$prog" >/dev/null || die "$prog is missing (apt-get install binutils gzip)"
done

start=$(date +%s)
# Reproducible timestamps in both packages: the last commit's time.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
target=${CARGO_TARGET_DIR:-target}
# cargo-deb and cargo-generate-rpm read the staged files from target/packaging/ (paths in the
# Cargo.toml metadata are relative to each crate): a different target dir is not supported.
[[ $target == target || $(readlink -f "$target") == $(readlink -f target) ]] ||
    die "CARGO_TARGET_DIR must be ./target for packaging"
release=target/release
stage=target/packaging

if [[ $build == 1 ]]; then
    log "release build (prodhcpd, prodhcpctl, dhcpperf, gen-docs)"
    as_user cargo build --release --locked -p prodhcp-supervisor -p prodhcp-ctl -p dhcpperf \
        -p gen-docs --bins
fi
for bin in prodhcpd prodhcpctl dhcpperf gen-docs; do
    [[ -x $release/$bin ]] || die "$release/$bin is missing (run without --no-build)"
done

rm -rf "$stage"
mkdir -p "$stage/bin" "$out"
for bin in prodhcpd prodhcpctl dhcpperf; do
    # What dh_strip does: no debug info, no symbols the dynamic linker does not need.
    strip --strip-unneeded --remove-section=.comment --remove-section=.note \
        -o "$stage/bin/$bin" "$release/$bin"
    # The packages declare libc6 (>= 2.34): check no newer glibc symbol crept in.
    need=$(objdump -T "$stage/bin/$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' |
        sort -V | tail -1)
    if [[ -n $need ]] && [[ $(printf '%s\n2.34\n' "$need" | sort -V | tail -1) != 2.34 ]]; then
        die "$bin needs glibc $need: raise libc6 (>= …) in the package metadata"
    fi
done

"$release/gen-docs" "$stage/gen" etc/prodhcp.ron >/dev/null
gzip -9n "$stage"/gen/man/*.[158]

# The Debian changelog (both packages are built from one source, "prodhcp"); dated by the
# last commit so that the same tree gives the same file.
date=$(git log -1 --format=%cD 2>/dev/null || date -R)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
cat >"$stage/changelog" <<EOF
prodhcp ($version-1) unstable; urgency=medium

  * Built by packaging/build.sh from commit $commit.

 -- prodhcp maintainers <prodhcp@example.org>  $date
EOF

log "packages, version $version"
rm -f "$out"/prodhcp_*.deb "$out"/prodhcp-tools_*.deb "$out"/prodhcp-*.rpm
# cargo-deb takes the crate's name, cargo-generate-rpm its directory. -q: cargo-deb warns that
# the staged files are not under target/release (on purpose: they are the stripped copies).
for crate in prodhcp-supervisor:supervisor dhcpperf:tools/dhcpperf; do
    as_user cargo deb --no-build --no-strip -q -p "${crate%%:*}" --deb-version "$version-1" \
        --output "$out/" >/dev/null
    as_user cargo generate-rpm -p "${crate#*:}" \
        --set-metadata "version = \"$version\"" --set-metadata 'release = "1"' \
        --output "$out/" >/dev/null
done

ls -l "$out"
log "done in $(($(date +%s) - start)) s"
