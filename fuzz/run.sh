#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 5) each, starting from the
# seed corpus in corpus/TARGET, and fails if any target crashes, panics,
# leaks, hangs or runs out of memory.
#
#   fuzz/run.sh [SECONDS]
#
# Needs: a Rust toolchain with cargo (stable is enough), a C compiler (cc)
# for libfuzzer-sys, and network access to crates.io the first time, to
# install cargo-fuzz and fetch the fuzz crate's dependencies.
#
# cargo-fuzz builds with `-Zsanitizer=address`, a nightly-only flag;
# RUSTC_BOOTSTRAP=1 lets stable rustc accept it. Whatever a run finds new
# is kept in a scratch corpus, not in corpus/: add an input there by hand
# when it is worth keeping. A crashing input is written to
# artifacts/TARGET/; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET artifacts/TARGET/crash-...
set -euo pipefail

secs="${1:-5}"
case "$secs" in
'' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
export RUSTC_BOOTSTRAP=1

cargo fuzz build
targets=$(cargo fuzz list)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

failed=()
for t in $targets; do
    mkdir -p "$scratch/$t"
    echo "== fuzz $t for ${secs}s"
    # -timeout: one input taking this long is a hang.
    # -rss_limit_mb: more than this is a memory blow-up.
    if ! cargo fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
        -print_final_stats=1 2>"$scratch/$t.log"; then
        tail -n 60 "$scratch/$t.log" >&2
        failed+=("$t")
    else
        grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$scratch/$t.log" || true
    fi
done

if ((${#failed[@]})); then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: $(wc -w <<<"$targets") targets, ${secs}s each, no crash"
