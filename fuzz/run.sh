#!/usr/bin/env bash
# Runs the fuzz targets, each for a bounded time, and prints per target the executions and
# seconds libFuzzer reports in its final "Done N runs in S second(s)" line.
#
#   fuzz/run.sh                 every target, FUZZ_SECONDS (default 60) each
#   fuzz/run.sh token jwks      just these
#
# Environment:
#   FUZZ_SECONDS     time per target (default 60)
#   FUZZ_SANITIZER   address (default) or none. AddressSanitizer needs unstable rustc flags;
#                    on a stable toolchain this script sets RUSTC_BOOTSTRAP=1 for the fuzz
#                    build only. `none` needs nothing special.
#   FUZZ_TARGET_DIR  where the fuzz build goes (default: fuzz/target)
#
# Seeds live in fuzz/corpus/<target>/ (committed, read only); what libFuzzer learns goes to
# fuzz/work/<target>/ and crashes to fuzz/artifacts/<target>/ (both ignored by git).
# Needs cargo-fuzz: cargo install cargo-fuzz. Exits 1 if any target found a crash.
set -euo pipefail

cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
target_dir="${FUZZ_TARGET_DIR:-target}"

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=(token jwks revocation config path)
fi

if [ "$sanitizer" != none ] && ! rustc -V | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi
fuzz=(cargo fuzz run --sanitizer "$sanitizer" --target-dir "$target_dir")

echo "building ${targets[*]} (sanitizer: $sanitizer)"
for target in "${targets[@]}"; do
    cargo fuzz build --sanitizer "$sanitizer" --target-dir "$target_dir" "$target"
done

failed=0
summary=()
for target in "${targets[@]}"; do
    mkdir -p "work/$target" "artifacts/$target"
    log="work/$target.log"
    echo "== $target: ${seconds}s"
    status=0
    "${fuzz[@]}" "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)
    runs=$(sed -E 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\1/' <<<"$done_line")
    secs=$(sed -E 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\2/' <<<"$done_line")
    if [ "$status" -ne 0 ] || [ -z "$done_line" ]; then
        failed=1
        crash=$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -n 1 || true)
        summary+=("$(printf '%-11s FAILED (exit %s) %s; see fuzz/%s' "$target" "$status" "$crash" "$log")")
    else
        corpus=$(find "work/$target" -type f | wc -l)
        summary+=("$(printf '%-11s %12s runs in %4s s  (%s/s, corpus %s)' \
            "$target" "$runs" "$secs" "$((runs / (secs > 0 ? secs : 1)))" "$corpus")")
    fi
done

echo
echo "target             executions     time"
printf '%s\n' "${summary[@]}"
exit "$failed"
