#!/usr/bin/env bash
# Every check MCP has: formatting, lints, unit tests and the end-to-end suite
# against a real podman. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

export CONTAINERS_CONF="$PWD/scripts/containers.conf"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== deployment files (systemd-analyze verify, nix-instantiate --parse)"
scripts/check-deploy-files.sh
echo "== cargo test"
cargo test --all-targets 2>&1
