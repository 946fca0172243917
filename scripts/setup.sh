#!/usr/bin/env bash
# Installs what MCP's build, demo and tests need on a Debian machine:
# podman with runc (crun fails on these hosts), busybox-static for the test
# image, and a Rust toolchain check. Idempotent; uses sudo when not root.
set -euo pipefail

packages=(podman runc busybox-static uidmap slirp4netns tar curl)

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rootless podman publishes ports through /dev/net/tun (BRIEF section 8).
if [ -e /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != "666" ]; then
    sudo_if_needed chmod 0666 /dev/net/tun || true
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found: install a Rust toolchain (https://rustup.rs) and run again" >&2
    exit 1
fi

echo "setup: podman $(podman --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), $(cargo --version)"
