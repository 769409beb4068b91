#!/bin/sh
# test/run.sh BUILD_DIR -- run every test program of every flavour, then the
# command-line tool's tests, and end with "N passed, N failed".
# Each program prints "ok NAME" / "FAIL NAME: ..." lines; a program that
# crashes or exits non-zero without printing a FAIL line counts as one failure.
B=${1:-build}
pass=0
fail=0
log=$(mktemp)
run() {
    label=$1; shift
    printf '== %s\n' "$label"
    "$@" >"$log" 2>&1
    status=$?
    cat "$log"
    p=$(grep -c '^ok ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $label: exited with status $status"
        f=1
    fi
    pass=$((pass + p))
    fail=$((fail + f))
}
for flavour in plain asan hash4; do
    for t in unit api model iter crash sidecar crashsim fault check; do
        [ -x "$B/$flavour/$t" ] && run "$flavour/$t" env KVDB_TEST_FLAVOUR=$flavour "$B/$flavour/$t"
    done
done
for t in unit api model iter crash sidecar check; do
    [ -x "$B/nommap/$t" ] && run "nommap/$t" env KVDB_TEST_FLAVOUR=asan "$B/nommap/$t"
done
for t in api model; do
    [ -x "$B/nothreads/$t" ] && run "nothreads/$t" env KVDB_TEST_FLAVOUR=asan "$B/nothreads/$t"
done
run "tsan/threads" env TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" "$B/tsan/threads"
for flavour in plain asan hash4; do
    run "$flavour/threads" "$B/$flavour/threads"
done
[ -f test/cli.sh ] && run "cli" sh test/cli.sh
# libFuzzer targets under ASan/UBSan for a bounded time (clang; FAIL if missing)
run "fuzz" sh test/fuzz/run.sh "$B" "${FUZZ_TEST_SECONDS:-25}"
rm -f "$log"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
