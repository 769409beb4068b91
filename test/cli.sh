#!/bin/sh
# test/cli.sh -- tests of the command-line tool tools/kvdb (make tools/kvdb).
# Prints "ok NAME" / "FAIL NAME: why" per check (test/run.sh counts them) and
# exits non-zero if any check failed.  Scratch files live in a temp dir.
#   KVDB=path/to/kvdb sh test/cli.sh      to test another binary

cd "$(dirname "$0")/.." || exit 1
KVDB=${KVDB:-./tools/kvdb}
case $KVDB in /*) ;; *) KVDB=$(pwd)/$KVDB ;; esac
VERSION=$(sed -n 's/^#define KVDB_VERSION_STRING "\(.*\)"/\1/p' kvdb.h)

failed=0
ok() { echo "ok $1"; }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }

if [ ! -x "$KVDB" ]; then
    fail cli_binary "$KVDB is missing (make tools/kvdb)"
    exit 1
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/kvdb-cli.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM
DB=$T/t.db
OUT=$T/out
ERR=$T/err

# run ARGS...: runs the tool with stdout in $OUT, stderr in $ERR; sets $rc
run() { "$KVDB" "$@" >"$OUT" 2>"$ERR"; rc=$?; }
# expect NAME WANT_RC: checks $rc
want_rc() { [ "$rc" -eq "$2" ] || { fail "$1" "exit status $rc, want $2; stderr: $(head -c 300 "$ERR")"; return 1; }; }

# -- put then get
run "$DB" put hello world
if want_rc put_get 0; then
    run "$DB" get hello
    if want_rc put_get 0; then
        if [ "$(cat "$OUT")" = world ]; then ok put_get; else fail put_get "get printed '$(cat "$OUT")'"; fi
    fi
fi

# -- overwrite
run "$DB" put hello again && run "$DB" get hello
if [ "$rc" -eq 0 ] && [ "$(cat "$OUT")" = again ]; then ok overwrite; else fail overwrite "rc $rc, '$(cat "$OUT")'"; fi

# -- binary key and value with escapes round-trip (escaped and --raw output)
run "$DB" put 'b\x00\xff' 'v\x00\xff\\\n\t'
if want_rc binary_escapes 0; then
    run "$DB" get 'b\x00\xff'
    if [ "$rc" -eq 0 ] && [ "$(cat "$OUT")" = 'v\x00\xff\\\x0a\x09' ]; then
        ok binary_escapes
    else
        fail binary_escapes "rc $rc, get printed '$(cat "$OUT")'"
    fi
    printf 'v\000\377\\\n\t' >"$T/want"
    run "$DB" get --raw 'b\x00\xff'
    if [ "$rc" -eq 0 ] && cmp -s "$OUT" "$T/want"; then ok binary_raw; else fail binary_raw "rc $rc, raw output differs: $(od -c "$OUT" | head -3)"; fi
    # what get prints can be given back to put
    run "$DB" put copy "$("$KVDB" "$DB" get 'b\x00\xff')"
    run "$DB" get -r copy
    if [ "$rc" -eq 0 ] && cmp -s "$OUT" "$T/want"; then ok escape_round_trip; else fail escape_round_trip "rc $rc, $(od -c "$OUT" | head -3)"; fi
fi

# -- the key "b" alone is a different key
run "$DB" get b
want_rc nul_in_key 1 && ok nul_in_key

# -- empty value is a value
run "$DB" put empty ''
run "$DB" get empty
if [ "$rc" -eq 0 ] && [ "$(cat "$OUT")" = "" ] && [ "$(wc -c <"$OUT")" -eq 1 ]; then ok empty_value; else fail empty_value "rc $rc, $(wc -c <"$OUT") bytes"; fi
run "$DB" exists empty
want_rc empty_value_exists 0 && ok empty_value_exists

# -- missing keys
run "$DB" get nosuchkey
want_rc get_missing 1 && ok get_missing
run "$DB" del nosuchkey
want_rc del_missing 1 && ok del_missing

# -- exists / del
run "$DB" exists hello
if want_rc exists 0; then
    run "$DB" exists nosuchkey
    want_rc exists 1 && ok exists
fi
run "$DB" del hello
if want_rc del 0; then
    run "$DB" get hello
    if want_rc del 1; then
        run "$DB" exists hello
        want_rc del 1 && ok del
    fi
fi

# -- usage errors
run "$DB" frobnicate
want_rc unknown_command 2 && ok unknown_command
run
want_rc no_arguments 2 && ok no_arguments
(cd "$T" && "$KVDB" get hello >"$OUT" 2>"$ERR"); rc=$?
if want_rc missing_file_arg 2; then
    if grep -qi 'file' "$ERR"; then ok missing_file_arg; else fail missing_file_arg "message: $(cat "$ERR")"; fi
fi
run "$DB"
want_rc missing_command 2 && ok missing_command
run "$DB" get
want_rc missing_key 2 && ok missing_key
run "$DB" put onlykey
want_rc missing_value 2 && ok missing_value
run "$DB" get a b
want_rc too_many_args 2 && ok too_many_args
run "$DB" put k 'bad\q'
want_rc bad_escape 2 && ok bad_escape
run "$DB" put k 'bad\x4'
want_rc bad_hex_escape 2 && ok bad_hex_escape
run "$DB" put '' v
want_rc empty_key 2 && ok empty_key
run --sync=sometimes "$DB" put k v
want_rc bad_sync 2 && ok bad_sync
run "$DB" --bogus get k
want_rc unknown_option 2 && ok unknown_option

# -- options before FILE and after the command; -- ends options
run --sync=off "$DB" put s1 one
r1=$rc
run "$DB" put s2 two --sync=normal
r2=$rc
run "$DB" put --sync full s3 three
if [ "$r1" -eq 0 ] && [ "$r2" -eq 0 ] && [ "$rc" -eq 0 ]; then ok sync_option; else fail sync_option "rc $r1 $r2 $rc"; fi
run "$DB" put -- -dash -value
run "$DB" get -- -dash
if [ "$rc" -eq 0 ] && [ "$(cat "$OUT")" = -value ]; then ok dashdash; else fail dashdash "rc $rc, '$(cat "$OUT")'"; fi

# -- a file that is not a database: exit 3, file unchanged, message names it
printf 'just some text\nnot a database at all\n' >"$T/text.txt"
cp "$T/text.txt" "$T/text.orig"
run "$T/text.txt" get hello
if want_rc not_a_db 3; then
    if ! cmp -s "$T/text.txt" "$T/text.orig"; then
        fail not_a_db "the file was changed"
    elif ! grep -q "text.txt" "$ERR"; then
        fail not_a_db "message does not name the file: $(cat "$ERR")"
    else
        ok not_a_db
    fi
fi
run "$T/text.txt" put hello world
if want_rc not_a_db_put 3; then
    if cmp -s "$T/text.txt" "$T/text.orig"; then ok not_a_db_put; else fail not_a_db_put "put changed the file"; fi
fi
run "$T/text.txt" stat
want_rc not_a_db_stat 3 && ok not_a_db_stat

# -- a damaged database (a byte flipped in a record followed by committed
#    data).  With its sidecar, open starts from the checkpoint and the damage
#    is found when the damaged record is read; without it, open scans the
#    whole log and refuses.  Exit 3 either way, and the file is unchanged.
C=$T/corrupt.db
run "$C" put first "$(printf '%1000s' '' | tr ' ' A)" && run "$C" put second 2 && run "$C" put third 3
printf 'Z' | dd of="$C" bs=1 seek=300 conv=notrunc 2>/dev/null
cp "$C" "$T/corrupt.orig"
run "$C" get first
if want_rc corrupt_read 3; then
    if cmp -s "$C" "$T/corrupt.orig"; then ok corrupt_read; else fail corrupt_read "the file was changed"; fi
fi
rm -f "$C.idx"
run "$C" get third
if want_rc corrupt 3; then
    run "$C" put fourth 4
    if want_rc corrupt 3; then
        if cmp -s "$C" "$T/corrupt.orig"; then ok corrupt; else fail corrupt "the file was changed"; fi
    fi
fi

# -- a missing file: non-zero, message names the file, nothing created
run "$T/nope.db" get hello
if [ "$rc" -eq 0 ]; then
    fail missing_db "exit status 0"
elif ! grep -q "nope.db" "$ERR"; then
    fail missing_db "message does not name the file: $(cat "$ERR")"
elif [ -e "$T/nope.db" ]; then
    fail missing_db "get created the file"
else
    ok missing_db
fi
run "$T/nope.db" exists hello
if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ] && [ ! -e "$T/nope.db" ]; then ok missing_db_exists; else fail missing_db_exists "rc $rc (want neither 0 nor 1: 1 means key not found)"; fi

# -- value from stdin, binary-safe
printf 'line1\nline2\000\377tail' >"$T/in"
"$KVDB" "$DB" put fromstdin - <"$T/in" >"$OUT" 2>"$ERR"; rc=$?
if want_rc put_stdin 0; then
    run "$DB" get --raw fromstdin
    if [ "$rc" -eq 0 ] && cmp -s "$OUT" "$T/in"; then ok put_stdin; else fail put_stdin "rc $rc, value differs"; fi
fi
head -c 200000 /dev/urandom >"$T/big" 2>/dev/null || dd if=/dev/urandom of="$T/big" bs=1000 count=200 2>/dev/null
"$KVDB" "$DB" put big - <"$T/big" >"$OUT" 2>"$ERR"; rc=$?
run "$DB" get -r big
if [ "$rc" -eq 0 ] && cmp -s "$OUT" "$T/big"; then ok put_stdin_big; else fail put_stdin_big "rc $rc, 200000 random bytes did not round-trip"; fi

# -- stat: keys count
S=$T/stat.db
run "$S" put a 1 && run "$S" put b 2 && run "$S" put c 3 && run "$S" put a 4 && run "$S" del b
run "$S" stat
if want_rc stat 0; then
    if grep -qx 'keys: 2' "$OUT"; then ok stat; else fail stat "$(tr '\n' ' ' <"$OUT")"; fi
    if grep -q '^format_version: ' "$OUT" && grep -q '^file_bytes: ' "$OUT" \
        && grep -q '^torn_bytes: ' "$OUT" && grep -q '^index_bytes: ' "$OUT"; then
        ok stat_fields
    else
        fail stat_fields "$(tr '\n' ' ' <"$OUT")"
    fi
fi
run "$T/nope.db" stat
if [ "$rc" -ne 0 ] && [ ! -e "$T/nope.db" ]; then ok stat_missing_db; else fail stat_missing_db "rc $rc"; fi

# -- help and version
run --help
if want_rc help 0; then
    if grep -qi 'exit status' "$OUT" && grep -q '^ *3 ' "$OUT" && grep -qi 'example' "$OUT"; then
        ok help
    else
        fail help "does not document exit status / examples"
    fi
fi
run help
want_rc help_command 0 && ok help_command
run get --help
if want_rc command_help 0; then
    if grep -q 'get KEY' "$OUT"; then ok command_help; else fail command_help "$(head -2 "$OUT")"; fi
fi
run "$DB" put --help
want_rc command_help_after_file 0 && ok command_help_after_file
run help nosuchcommand
want_rc help_unknown 2 && ok help_unknown
run --version
if want_rc version 0; then
    if grep -q "$VERSION" "$OUT"; then ok version; else fail version "'$(cat "$OUT")' lacks $VERSION"; fi
fi

[ "$failed" -eq 0 ]
