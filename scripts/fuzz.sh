#!/usr/bin/env bash
# Runs each cargo-fuzz target for a set time (default 60 s) from its
# committed corpus in fuzz/corpus/<target>; new inputs that libFuzzer finds
# are added to that corpus (commit them). A crash stops the script with the
# reproducer in fuzz/artifacts/<target>/.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz (installed here if missing) and libFuzzer's nightly
# flags, which the stable toolchain accepts with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(spec_parse name_validate path_resolve)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== fuzz $t for ${seconds}s"
    log=$(mktemp)
    if ! cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -timeout=10 >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz $t: failure; the reproducer is in fuzz/artifacts/$t" >&2
        exit 1
    fi
    grep -E "^(INFO: seed corpus|Done [0-9]+ runs)" "$log" || true
    rm -f "$log"
done
echo "fuzz: no panic, no path outside the service directory"
