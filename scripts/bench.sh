#!/usr/bin/env bash
# The one command behind BENCHMARKS.md (issue 7): MCP against podman-compose,
# sequential `podman run` and the raw API, on this machine, in one run.
#
#   scripts/bench.sh           install what is missing, build, measure, and
#                              put the table into BENCHMARKS.md
#   scripts/bench.sh --quick   a smoke test of the harness (few iterations);
#                              writes target/bench/results.md only
#
# It installs the Debian packages it needs (scripts/setup.sh, plus
# python3-venv), podman-compose from PyPI into target/bench-venv, builds the
# release-optimised binaries and runs `cargo bench --bench mcp`
# (benches/mcp.rs), which starts its own podman API service on a private
# storage root and its own agent. The run takes 4-5 minutes on 2 cores, after the build.
# Knobs for benches/mcp.rs: MCP_BENCH_RUNS, MCP_BENCH_WATCH_SECS, MCP_BENCH_ONLY.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

quick=0
case "${1:-}" in
    --quick) quick=1 ;;
    "") ;;
    *) echo "usage: scripts/bench.sh [--quick]" >&2; exit 2 ;;
esac

scripts/setup.sh python3 python3-venv

# podman-compose, pinned so runs compare; in a venv of Debian's python3.
compose_version=${PODMAN_COMPOSE_VERSION:-1.6.0}
venv="$repo/target/bench-venv"
compose="$venv/bin/podman-compose"
if ! "$compose" version 2>/dev/null | grep -q "podman-compose version $compose_version"; then
    python=/usr/bin/python3
    [ -x "$python" ] || python=python3
    echo "bench: installing podman-compose $compose_version into $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "podman-compose==$compose_version"
fi

export CONTAINERS_CONF="$repo/scripts/containers.conf"
# `cargo bench` builds mcp and mcp-agent itself with the bench profile (the
# release settings, into target/release): building them with --release
# first would only build the binaries twice.
echo "bench: building the release binaries and the harness"
cargo bench --quiet --bench mcp --no-run

out="$repo/target/bench/results.md"
rm -f "$out"
echo "bench: running cargo bench --bench mcp (progress below; 4-5 minutes)"
if [ "$quick" = 1 ]; then
    MCP_BENCH_QUICK=1 MCP_BENCH_OUT="$out" MCP_BENCH_COMPOSE="$compose" \
        cargo bench --quiet --bench mcp >/dev/null
    echo "bench: quick run done; table in $out (BENCHMARKS.md untouched)"
    cat "$out"
    exit 0
fi
MCP_BENCH_OUT="$out" MCP_BENCH_COMPOSE="$compose" cargo bench --quiet --bench mcp >/dev/null
[ -s "$out" ] || { echo "bench: no results in $out" >&2; exit 1; }

# Put the table between the markers of BENCHMARKS.md; the text around them
# (method, analysis) is kept.
doc="$repo/BENCHMARKS.md"
begin='<!-- bench:begin (written by scripts/bench.sh) -->'
end='<!-- bench:end -->'
if [ ! -f "$doc" ] || ! grep -qF "$begin" "$doc" || ! grep -qF "$end" "$doc"; then
    printf '# Benchmarks\n\nReproduce with `scripts/bench.sh`.\n\n%s\n%s\n' "$begin" "$end" >"$doc"
fi
tmp=$(mktemp)
awk -v begin="$begin" -v end="$end" -v table="$out" '
    $0 == begin { print; while ((getline line < table) > 0) print line; skip = 1; next }
    $0 == end   { skip = 0 }
    !skip       { print }
' "$doc" >"$tmp"
cat "$tmp" >"$doc"
rm -f "$tmp"
echo "bench: BENCHMARKS.md updated"
cat "$out"
