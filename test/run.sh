#!/bin/sh
# test/run.sh BUILD_DIR -- run every test program of every flavour, then the
# command-line tool's tests and the fuzz targets, and end with "N passed, N
# failed".  The lists below select the programs (make soak passes shorter
# ones, some empty); CLI_TEST=0 skips the command-line tool's tests.
# Each program prints "ok NAME" / "FAIL NAME: ..." lines; a program that
# crashes or exits non-zero without printing a FAIL line counts as one failure.
B=${1:-build}
# the Makefile passes its lists; these defaults are for running by hand
TESTS=${TESTS-"unit api model iter crash sidecar threads crashsim fault compact check"}
NOMMAP_TESTS=${NOMMAP_TESTS-"unit api model iter crash sidecar compact check"}
NOTHREADS_TESTS=${NOTHREADS_TESTS-"api model compact"}
TSAN_TESTS=${TSAN_TESTS-"threads compact"}
PLAIN_TESTS=${PLAIN_TESTS-"bigfile"}
M32_TESTS=${M32_TESTS-"unit api model iter crash check bigfile"}
M32_OK=${M32_OK-y}
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
# prog FLAVOUR/NAME [VAR=value...]: run one test program; one missing from
# the build counts as a failure, not as nothing
prog() {
    bin="$B/$1"
    label=$1
    shift
    if [ -x "$bin" ]; then run "$label" env "$@" "$bin"; else echo "FAIL $label: not built"; fail=$((fail + 1)); fi
}
# the committed kvdb.c is what the modules in src/ generate
[ -f tools/amalgamate ] && run "amalgamation" sh tools/amalgamate --check
for flavour in plain asan hash4; do
    for t in $TESTS; do
        [ "$t" = threads ] && continue  # below, after the others
        prog "$flavour/$t" KVDB_TEST_FLAVOUR=$flavour
    done
done
for t in $NOMMAP_TESTS; do
    prog "nommap/$t" KVDB_TEST_FLAVOUR=asan
done
for t in $NOTHREADS_TESTS; do
    prog "nothreads/$t" KVDB_TEST_FLAVOUR=asan
done
for t in $TSAN_TESTS; do
    prog "tsan/$t" TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
done
for t in $PLAIN_TESTS; do
    prog "plain/$t" KVDB_TEST_FLAVOUR=plain
done
# a 32-bit host: only if the compiler can build for one; otherwise one FAIL
if [ -n "$M32_TESTS" ] && [ "$M32_OK" != y ]; then
    echo "FAIL m32: the compiler cannot build a -m32 program here (Debian: apt-get install gcc-multilib)"
    fail=$((fail + 1))
elif [ -n "$M32_TESTS" ]; then
    for t in $M32_TESTS; do
        prog "m32/$t" KVDB_TEST_FLAVOUR=plain
    done
fi
case " $TESTS " in *" threads "*)
    for flavour in plain asan hash4; do
        prog "$flavour/threads"
    done ;;
esac
[ -f test/cli.sh ] && [ "${CLI_TEST-1}" != 0 ] && run "cli" sh test/cli.sh
# libFuzzer targets under ASan/UBSan for a bounded time (clang; FAIL if missing)
run "fuzz" sh test/fuzz/run.sh "$B" "${FUZZ_TEST_SECONDS:-25}"
rm -f "$log"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
