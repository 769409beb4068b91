#!/bin/sh
# test/fuzz/run.sh BUILD_DIR [SECONDS_PER_TARGET] -- build the libFuzzer
# targets with clang (ASan + UBSan; in parallel; only those older than
# kvdb.c, kvdb.h or a file here) and run each for a bounded time on a
# scratch copy of its seed corpus (the committed corpus is not changed).
# Prints "ok fuzz_X: N execs" or "FAIL fuzz_X: why" lines for test/run.sh.
# Env FUZZ_KEEP=dir: keep (and reuse) the grown corpora there (make fuzz).
B=${1:-build}
T=${2:-25}
CLANG=${CLANG:-clang}
TARGETS="fuzz_open fuzz_ops fuzz_sidecar"
dir=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$dir/../.." && pwd)
out="$B/fuzz"
mkdir -p "$out"
if ! command -v "$CLANG" >/dev/null 2>&1; then
    for t in $TARGETS; do
        echo "FAIL $t: clang not found (Debian: apt-get install clang libclang-rt-14-dev)"
    done
    exit 1
fi
for t in $TARGETS; do
    if [ -x "$out/$t" ] && [ "$(cat "$out/$t.build.rc" 2>/dev/null)" = 0 ] &&
       [ -z "$(find "$root/kvdb.c" "$root/kvdb.h" "$dir" -maxdepth 1 -type f -newer "$out/$t" 2>/dev/null)" ]; then
        continue
    fi
    # fuzz_sidecar: its harness supplies the values (checksums, offsets);
    # the comparison hooks took two thirds of its time for no more coverage
    extra=
    [ "$t" = fuzz_sidecar ] && extra=-fno-sanitize-coverage=trace-cmp
    rm -f "$out/$t.build.rc"
    (
        "$CLANG" -gline-tables-only -O1 -fsanitize=fuzzer,address,undefined $extra -fno-sanitize-recover=all \
            -std=c99 -Wall -Wextra -Wpedantic -Wshadow -Wno-unused-function -Werror \
            -I"$root" "$dir/$t.c" -o "$out/$t" -lpthread >"$out/$t.build.log" 2>&1
        echo $? >"$out/$t.build.rc"
    ) &
done
wait
status=0
for t in $TARGETS; do
    bin="$out/$t"
    if [ "$(cat "$out/$t.build.rc" 2>/dev/null)" != 0 ]; then
        echo "FAIL $t: build failed (libFuzzer missing? Debian: libclang-rt-14-dev):"
        sed 's/^/#   /' "$out/$t.build.log" | head -20
        status=1
        continue
    fi
    case $t in
        fuzz_open) seeds="$dir/corpus_open"; maxlen=8192 ;;
        fuzz_sidecar) seeds="$dir/corpus_sidecar"; maxlen=8192 ;;
        *) seeds="$dir/corpus_ops"; maxlen=2048 ;;
    esac
    if [ -n "$FUZZ_KEEP" ]; then
        work="$FUZZ_KEEP/$t"
        mkdir -p "$work"
    else
        work=$(mktemp -d)
    fi
    log="$out/$t.log"
    ASAN_OPTIONS=detect_leaks=1 "$bin" -max_total_time="$T" -max_len="$maxlen" -timeout=20 -rss_limit_mb=2048 \
        -artifact_prefix="$out/$t-" -print_final_stats=1 "$work" "$seeds" >"$log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    if [ "$rc" -eq 0 ]; then
        echo "ok $t: ${execs:-?} execs in ${T}s"
    else
        echo "FAIL $t: exit $rc after ${execs:-?} execs; reproduce with: $bin $out/$t-crash-* (log: $log)"
        grep -E 'ERROR|assertion failed|SUMMARY' "$log" | head -5 | sed 's/^/#   /'
        status=1
    fi
    [ -z "$FUZZ_KEEP" ] && rm -rf "$work"
done
exit $status
