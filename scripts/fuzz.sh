#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through cargo-fuzz) of everything that parses untrusted
# bytes, on the stable toolchain: `--sanitizer none` needs no nightly, and Rust's own bounds
# and overflow checks plus the targets' assertions (fuzz/src/targets.rs) stand in for ASan.
#
#   scripts/fuzz.sh [TARGET...]    default: every target, FUZZ_SECONDS (60) each, one at a time
#   FUZZ_SECONDS=600 scripts/fuzz.sh preprocess
#   FUZZ_MINIMIZE=1 scripts/fuzz.sh   then merge what was found into a minimal fuzz/corpus/
#
# The committed corpus (fuzz/corpus/<target>/) seeds each run and is only read; new inputs go
# to target/fuzz/corpus/<target>/, crashes to target/fuzz/artifacts/<target>/, libFuzzer's
# output to target/fuzz/logs/<target>.log. `make test` replays fuzz/corpus (tests/fuzz_corpus.rs).
# cargo-fuzz is installed (pinned) when missing; it needs a C++ compiler for libFuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
ALL_TARGETS=(preprocess multipart token users weights)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi
OUT=$PWD/target/fuzz
fail() {
    echo "fuzz: FAIL: $*" >&2
    exit 1
}

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "== cargo install cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet ||
        fail "could not install cargo-fuzz"
fi

# fuzz/ is its own workspace with its own target directory: instrumented code never mixes with
# the normal build's.
FUZZ=(cargo fuzz run --fuzz-dir fuzz --sanitizer none --release)
echo "== cargo fuzz build (instrumented, release)"
cargo fuzz build --fuzz-dir fuzz --sanitizer none --release || fail "the fuzz targets do not build"

for t in "${TARGETS[@]}"; do
    mkdir -p "$OUT/corpus/$t" "$OUT/artifacts/$t" "$OUT/logs"
    log="$OUT/logs/$t.log"
    echo "== $t: ${SECONDS_PER_TARGET}s (log: $log)"
    # -timeout: one input taking 10 s is a hang worth reporting; -rss_limit_mb: a memory bomb is
    # a finding too, and far above what the targets' limits allow.
    if ! "${FUZZ[@]}" "$t" "$OUT/corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$OUT/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^(==|SUMMARY|thread|  *[0-9]+:)|panicked|Test unit written' "$log" | head -n 40 >&2
        fail "$t crashed; the input is in $OUT/artifacts/$t/, the whole output in $log"
    fi
    grep -E '^#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb' "$log" || true
    if [ -n "${FUZZ_MINIMIZE:-}" ]; then
        # -merge=1 into an empty directory keeps a small set with the same coverage; without
        # hit counters (-use_counters=0) it keeps edges only, a tenth of the files.
        fresh=$(mktemp -d)
        "${FUZZ[@]}" "$t" "$fresh" "fuzz/corpus/$t" "$OUT/corpus/$t" -- -merge=1 -use_counters=0 \
            >"$OUT/logs/$t.merge.log" 2>&1 || fail "merging the $t corpus failed, see $OUT/logs/$t.merge.log"
        rm -rf "fuzz/corpus/$t"
        mv "$fresh" "fuzz/corpus/$t"
        chmod 755 "fuzz/corpus/$t"
        echo "   corpus: $(find "fuzz/corpus/$t" -type f | wc -l) files, $(du -sh "fuzz/corpus/$t" | cut -f1)"
    fi
done
echo "fuzz: PASS (${TARGETS[*]}, ${SECONDS_PER_TARGET}s each)"
