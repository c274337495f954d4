# cargo-env.sh — sourced by scripts/test.sh and scripts/demo.sh (not run on its own).
#
# sudo resets PATH; find the invoking user's toolchain, and run cargo as that user (`as_user`)
# so the target directory stays theirs. Only what needs root (namespaces, port 67) runs as root.
if ! command -v cargo >/dev/null; then
    user_home=$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)
    for home in "$user_home" "$HOME"; do
        if [[ -x $home/.cargo/bin/cargo ]]; then
            export PATH="$home/.cargo/bin:$PATH" CARGO_HOME="$home/.cargo" RUSTUP_HOME="$home/.rustup"
            break
        fi
    done
fi
as_user() {
    if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
        sudo -u "$SUDO_USER" env PATH="$PATH" ${CARGO_HOME:+CARGO_HOME="$CARGO_HOME"} \
            ${RUSTUP_HOME:+RUSTUP_HOME="$RUSTUP_HOME"} "$@"
    else
        "$@"
    fi
}
