#!/usr/bin/env bash
# Installs what MCP's build, demo and tests need on a Debian machine:
# podman with runc (crun fails on these hosts), busybox-static for the test
# image, and a Rust toolchain check. Idempotent; uses sudo when not root.
# Extra Debian packages may be named as arguments (scripts/bench.sh does).
set -euo pipefail

# docker-registry and apache2-utils (htpasswd): tests/images.rs runs a real
# image registry with password auth on loopback.
# golang-github-containernetworking-plugin-dnsname: podman 4 on Debian uses
# CNI, whose bridge networks resolve container names only with this plugin
# (tests/networks.rs; components reach each other by name on a network).
packages=(podman runc busybox-static uidmap slirp4netns tar curl docker-registry apache2-utils
          golang-github-containernetworking-plugin-dnsname "$@")

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

# tests/rootless.rs runs rootless podman and the agent as this unprivileged
# user (BRIEF section 8). `useradd -m` gives it subordinate uid/gid ranges when
# /etc/subuid and /etc/subgid exist; a range is added if it did not.
e2e_user=mcp-e2e
can_admin=
if [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; then can_admin=1; fi
if ! id "$e2e_user" >/dev/null 2>&1; then
    if [ -n "$can_admin" ]; then
        echo "setup: creating user $e2e_user (rootless end-to-end test)"
        sudo_if_needed useradd -m -s /bin/bash -c "MCP rootless e2e test" "$e2e_user"
    else
        echo "setup: not root and no sudo: cannot create user $e2e_user, so tests/rootless.rs will fail" >&2
    fi
fi
if id "$e2e_user" >/dev/null 2>&1 && [ -n "$can_admin" ]; then
    for f in /etc/subuid /etc/subgid; do
        if ! grep -q "^$e2e_user:" "$f" 2>/dev/null; then
            # First id after every range in the file (at least 100000).
            start=$(awk -F: 'BEGIN { e = 100000 } NF == 3 && $2 + $3 > e { e = $2 + $3 } END { print e }' "$f" 2>/dev/null || echo 100000)
            echo "setup: adding $f range $start-$((start + 65535)) for $e2e_user"
            if [ "$f" = /etc/subuid ]; then
                sudo_if_needed usermod --add-subuids "$start-$((start + 65535))" "$e2e_user"
            else
                sudo_if_needed usermod --add-subgids "$start-$((start + 65535))" "$e2e_user"
            fi
        fi
    done
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found: install a Rust toolchain (https://rustup.rs) and run again" >&2
    exit 1
fi

echo "setup: podman $(podman --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), $(cargo --version)"
