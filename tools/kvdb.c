/*
 * tools/kvdb.c -- the kvdb command-line tool.
 *
 *   kvdb FILE COMMAND [ARGS] [OPTIONS]     (kvdb --help for the whole story)
 *
 * Modeled on sqlite3 / mdb_stat / mdb_dump / mdb_load / ldb: one command per
 * invocation, errors on stderr naming the file and the cause, and an exit
 * status a script can test:
 *   0 success, 1 key not found, 2 usage error, 3 corrupt / not a kvdb
 *   database / newer format, 4 I/O, lock or other error.
 * dump and load speak the text format of mdb_dump/mdb_load and Berkeley DB's
 * db_dump/db_load, so databases migrate both ways through a pipe.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "kvdb.h"

enum {
    EX_OK = 0,        /* success */
    EX_NOTFOUND = 1,  /* get / del / exists of a missing key */
    EX_USAGE = 2,     /* bad command, option, argument, or load input */
    EX_DATA = 3,      /* corrupt, not a kvdb database, newer format version */
    EX_IO = 4         /* I/O, lock, out of space, out of memory, ... */
};

/* ---------------------------------------------------------------- help */

static const char usage_text[] =
    "usage: kvdb [OPTIONS] FILE COMMAND [ARGS] [OPTIONS]\n";

static const char help_text[] =
    "kvdb -- command-line tool for kvdb key-value database files\n"
    "\n"
    "usage: kvdb [OPTIONS] FILE COMMAND [ARGS] [OPTIONS]\n"
    "       kvdb help [COMMAND]      kvdb COMMAND --help      kvdb --version\n"
    "\n"
    "commands:\n"
    "  put KEY VALUE   store VALUE under KEY (VALUE '-' reads it from stdin);\n"
    "                  creates FILE if it does not exist\n"
    "  get KEY         print the value of KEY, escaped, followed by a newline\n"
    "  del KEY         delete KEY\n"
    "  exists KEY      exit status 0 if KEY is present, 1 if not; prints nothing\n"
    "  scan            list keys and values in key order (--prefix, --from/--to,\n"
    "                  --reverse, --limit, --keys-only, --format text|hex|json)\n"
    "  count           print the number of keys (--prefix, --from/--to)\n"
    "  stat            print statistics, one \"name: value\" per line\n"
    "  check           verify every checksum, the log's structure, the sidecar\n"
    "                  and the indexes; exit status 3 with a report if damaged\n"
    "  repair --out NEW  copy every intact transaction into the new file NEW\n"
    "                  (--partial: and the intact records of incomplete ones)\n"
    "  sync            make everything written to FILE durable\n"
    "  compact         rewrite FILE with only its live records, in key order\n"
    "  dump            write FILE in the mdb_dump / db_dump text format\n"
    "  load            read that format on stdin into FILE (--replace: clear first)\n"
    "  help [COMMAND]  print this text or the help of COMMAND\n";

/* (in two parts: C99 compilers need only take string literals of 4095) */
static const char help_text2[] =
    "\n"
    "options (before FILE or after the command):\n"
    "  -r, --raw       get: print the value's bytes as they are, no newline\n"
    "  --sync=MODE     put/del: full (default; durable when kvdb returns),\n"
    "                  normal (survives a crash of the process, not of the OS),\n"
    "                  off (no sync at all)\n"
    "  --prefix P      scan/count/dump: only keys that start with P\n"
    "  --from A        scan/count: keys >= A      --to B   keys < B\n"
    "  --reverse       scan: descending key order\n"
    "  --limit N       scan: at most N pairs\n"
    "  --keys-only     scan: keys without values\n"
    "  --format F      scan: text (default), hex or json; dump: bytevalue\n"
    "                  (default) or print\n"
    "  -p, --print     dump: the same as --format print\n"
    "  --out NEW       repair: the file to write (must not exist)\n"
    "  --partial       repair: also the intact records of incomplete transactions\n"
    "  --replace       load: delete every key of FILE before loading\n"
    "  -q, --quiet     no progress bar (shown on a terminal for load, dump,\n"
    "                  check, repair and compact)\n"
    "  -h, --help      print help and exit\n"
    "  -V, --version   print the version and the file format version\n"
    "  --              end of options (for keys or values that start with '-')\n"
    "\n"
    "KEY, VALUE and option escapes: \\xNN (hex byte), \\\\ (backslash), \\n, \\t,\n"
    "\\r, \\0.  Output escapes bytes outside printable ASCII as \\xNN and a\n"
    "backslash as \\\\ (so what get prints can be given back to put); --raw and\n"
    "--format hex|json turn this off.  Keys are 1..65535 bytes, values 0..1 GiB;\n"
    "an empty value is not a missing one.\n"
    "\n"
    "get, exists, scan, count, stat, dump and check open FILE read-only (several\n"
    "may run at once, but not while another process has FILE open for writing)\n"
    "and never create it.  put, del and load open it for writing and create it\n"
    "if it is missing; sync opens an existing FILE for writing.  repair reads\n"
    "FILE read-only and never changes it.\n"
    "\n"
    "exit status:\n"
    "  0  success\n"
    "  1  not found: get, del or exists of a key that is not there\n"
    "  2  usage error: bad command, option or argument, or load input that is\n"
    "     not in the dump format\n"
    "  3  FILE is corrupt, is not a kvdb database, or has a newer format version\n"
    "     (FILE is left unchanged); check found problems; repair had to leave\n"
    "     data behind\n"
    "  4  I/O error, FILE locked by another process, disk full, no such\n"
    "     database, or any other error\n"
    "\n"
    "examples:\n"
    "  kvdb my.db put hello world\n"
    "  kvdb my.db get hello                  # world\n"
    "  kvdb my.db put 'bin\\x00key' 'a\\tb\\xff'\n"
    "  kvdb my.db get 'bin\\x00key'           # a\\x09b\\xff\n"
    "  kvdb my.db get --raw 'bin\\x00key' | od -c\n"
    "  gzip -c notes.txt | kvdb my.db put notes.gz -\n"
    "  kvdb my.db exists hello && echo present\n"
    "  kvdb my.db scan --prefix user: --limit 10\n"
    "  kvdb my.db check || kvdb my.db repair --out fixed.db\n"
    "  mdb_dump -n old.mdb | kvdb new.db load\n"
    "  kvdb new.db dump | mdb_load -n -f /dev/stdin back.mdb\n"
    "  kvdb --sync=off my.db del hello\n"
    "  kvdb my.db stat\n";

/* options, as bits: which command takes which */
enum {
    O_SYNC = 1 << 0, O_RAW = 1 << 1, O_PREFIX = 1 << 2, O_RANGE = 1 << 3, O_REVERSE = 1 << 4,
    O_LIMIT = 1 << 5, O_KEYSONLY = 1 << 6, O_FORMAT = 1 << 7, O_OUT = 1 << 8, O_REPLACE = 1 << 9,
    O_PARTIAL = 1 << 10
};

/* how a command opens FILE */
enum { M_READ, M_WRITE, M_WRITE_EXISTING, M_NONE };

struct cmd {
    const char *name;
    int nargs;          /* exact number of arguments after the command, -1 any */
    int mode;
    unsigned opts;      /* O_* it accepts */
    const char *args;
    const char *help;
};

static const struct cmd cmds[] = {
    { "put", 2, M_WRITE, O_SYNC, "KEY VALUE",
      "Store VALUE under KEY, replacing any old value.  VALUE '-' reads the\n"
      "value from standard input (binary-safe, up to 1 GiB).  FILE is created\n"
      "if missing.  With --sync=full (the default) put returns only after the\n"
      "data is on stable storage.\n"
      "\n"
      "examples:\n"
      "  kvdb my.db put hello world\n"
      "  kvdb my.db put 'k\\x00\\x01' ''          # an empty value\n"
      "  kvdb my.db put photo - < photo.jpg\n"
      "  kvdb --sync=normal my.db put counter 42\n" },
    { "get", 1, M_READ, O_RAW, "KEY",
      "Print the value of KEY followed by a newline, with bytes outside\n"
      "printable ASCII written as \\xNN and a backslash as \\\\.  With --raw (-r)\n"
      "print the bytes exactly, without a newline.  Exit status 1 if KEY is\n"
      "not there.  FILE is opened read-only.\n"
      "\n"
      "examples:\n"
      "  kvdb my.db get hello\n"
      "  kvdb my.db get --raw photo > photo.jpg\n" },
    { "del", 1, M_WRITE, O_SYNC, "KEY",
      "Delete KEY.  Exit status 1 (and nothing is written) if KEY is not there.\n"
      "\n"
      "examples:\n"
      "  kvdb my.db del hello\n"
      "  kvdb my.db del -- -leading-dash\n" },
    { "exists", 1, M_READ, 0, "KEY",
      "Exit status 0 if KEY is present, 1 if it is not.  Prints nothing.\n"
      "FILE is opened read-only.\n"
      "\n"
      "example:\n"
      "  if kvdb my.db exists hello; then echo yes; fi\n" },
    { "scan", 0, M_READ, O_PREFIX | O_RANGE | O_REVERSE | O_LIMIT | O_KEYSONLY | O_FORMAT,
      "[--prefix P | --from A --to B] [--reverse] [--limit N] [--keys-only] [--format F]",
      "List the keys (and values) of one consistent snapshot in key order\n"
      "(bytewise; a key sorts before the longer keys it is a prefix of), one\n"
      "pair per line.  --prefix P: keys that start with P.  --from A / --to B:\n"
      "keys in [A, B), either bound may be left out.  --reverse: descending.\n"
      "--limit N: stop after N pairs.  --keys-only: no values.\n"
      "--format:\n"
      "  text  KEY<TAB>VALUE, escaped as get prints them (the default)\n"
      "  hex   KEY<TAB>VALUE as lowercase hex digits\n"
      "  json  one JSON object per line: {\"key\":\"...\",\"value\":\"...\"}; a key\n"
      "        or value that is not valid UTF-8 is given as \"key_hex\" or\n"
      "        \"value_hex\" instead, in lowercase hex\n"
      "FILE is opened read-only.\n"
      "\n"
      "examples:\n"
      "  kvdb my.db scan\n"
      "  kvdb my.db scan --prefix 'user:' --keys-only\n"
      "  kvdb my.db scan --from a --to m --reverse --limit 5\n"
      "  kvdb my.db scan --format json | jq .value\n" },
    { "count", 0, M_READ, O_PREFIX | O_RANGE, "[--prefix P | --from A --to B]",
      "Print the number of keys; with --prefix or --from/--to, of those keys.\n"
      "FILE is opened read-only.\n"
      "\n"
      "examples:\n"
      "  kvdb my.db count\n"
      "  kvdb my.db count --prefix 'user:'\n" },
    { "stat", 0, M_READ, 0, "",
      "Print statistics of FILE, one \"name: value\" per line:\n"
      "  keys            live keys\n"
      "  file_bytes      bytes of log, header included\n"
      "  live_bytes      bytes of records that hold live keys\n"
      "  dead_bytes      bytes of records that hold no live key: overwritten and\n"
      "                  deleted values, tombstones, and the 40-byte COMMIT records\n"
      "                  (one per transaction, and the seals of closes and syncs)\n"
      "  index_bytes     heap bytes of the in-memory hash index\n"
      "  sorted_bytes    heap bytes of the sorted index (0 until a scan)\n"
      "  format_version  version of the file format\n"
      "  sync_mode       the sync mode this handle uses (full for read-only opens)\n"
      "  torn_bytes      bytes of a torn tail found at open (not cut: read-only)\n"
      "  recovered_txns  transactions replayed at open (after the sidecar)\n"
      "  replayed_bytes  bytes of log replayed at open (after the sidecar)\n"
      "  sidecar         what open found in FILE.idx: loaded, no sidecar, ...\n"
      "  sidecar_bytes   size of FILE.idx (0 if there is none)\n"
      "  horizon         the durable horizon: log bytes FILE proves were synced;\n"
      "                  damage below it is an error, never a torn tail to cut\n"
      "  horizon_from    its evidence: seal (FILE ends with a sync mark), commit\n"
      "                  (a commit's record of what was synced), sidecar, none\n"
      "  commits         commits written by this handle: 0 here, where FILE is\n"
      "                  opened read-only for the one command\n"
      "  compactions     compactions completed by this handle (0 here too)\n"
      "  db_id           the database's random identity\n"
      "FILE is opened read-only.\n"
      "\n"
      "example:\n"
      "  kvdb my.db stat | grep '^keys:'\n" },
    { "check", 0, M_NONE, 0, "",
      "Verify FILE without trusting any of it: the checksum of every record in\n"
      "the whole log (also the part the sidecar covers, which open does not\n"
      "re-read), the log's structure (each COMMIT counts the records before\n"
      "it, sequence numbers increase, nothing follows the last transaction but\n"
      "a torn tail), then -- if the log is clean -- the sidecar and the indexes\n"
      "a read-only open builds from it, against the log: every key's newest\n"
      "record is where the hash index says, and the ordered iterator yields\n"
      "every key once, in order, at the same record.\n"
      "\n"
      "Each finding is printed as \"FILE: offset N: what\" (notes say \"note\").\n"
      "After damage the check goes on at the next record that verifies, so\n"
      "every damaged range is listed.  A torn tail -- the end of a write that a\n"
      "crash interrupted, cut off by the next writable open -- is a note.\n"
      "Exit status 0 if FILE is clean, 3 if problems were found, 4 if FILE\n"
      "could not be read or is locked by a writer.  FILE is never changed.\n"
      "\n"
      "examples:\n"
      "  kvdb my.db check\n"
      "  kvdb my.db check -q || kvdb my.db repair --out my-fixed.db\n" },
    { "repair", 0, M_NONE, O_OUT | O_PARTIAL, "--out NEW [--partial]",
      "Copy every intact committed transaction of FILE, in order, into the new\n"
      "database NEW (which must not exist), and report what could not be\n"
      "saved: the damaged byte ranges that were skipped and the incomplete\n"
      "transactions that were dropped (whole: never half of one).  Transactions\n"
      "after damage are found and saved too.  With --partial, the intact\n"
      "records of each incomplete transaction are copied as well (what that\n"
      "transaction wrote is then there in part; a record that fails its\n"
      "checksum is never copied): for a disaster, such as one big load whose\n"
      "data was damaged.  FILE is never changed; check NEW,\n"
      "then replace FILE with it (and delete FILE.idx) when no process uses it.\n"
      "Exit status 0 if nothing was lost (a torn tail is not a loss), 3 if NEW\n"
      "lacks damaged data, 4 if NEW could not be written (it is removed then).\n"
      "\n"
      "examples:\n"
      "  kvdb broken.db repair --out fixed.db && kvdb fixed.db check\n"
      "  kvdb broken.db repair --out most.db --partial\n" },
    { "sync", 0, M_WRITE_EXISTING, 0, "",
      "Make everything written to FILE durable (after writes with --sync=off or\n"
      "normal) and write its sidecar, so the next open is fast.  FILE must exist.\n"
      "\n"
      "example:\n"
      "  kvdb my.db sync\n" },
    { "compact", 0, M_WRITE_EXISTING, 0, "",
      "Rewrite FILE with only the records that hold live keys, in key order,\n"
      "and give back the space of overwritten and deleted ones (shown by stat\n"
      "as dead_bytes).  The new file is written beside FILE as FILE.compact,\n"
      "synced and renamed over FILE: a crash leaves FILE as it was or fully\n"
      "compacted.  Prints the sizes before and after.  FILE must exist.\n"
      "\n"
      "example:\n"
      "  kvdb my.db compact\n" },
    { "dump", 0, M_READ, O_PREFIX | O_FORMAT, "[--prefix P] [--format bytevalue|print]",
      "Write the keys and values of one snapshot of FILE, in key order, in the\n"
      "text format of mdb_dump and Berkeley DB's db_dump: a header (VERSION=3,\n"
      "format=bytevalue or print, type=btree, and mapsize= when the data would\n"
      "not fit in LMDB's default map) up to HEADER=END, then one line per key\n"
      "and one per value, each starting with a space, then DATA=END.\n"
      "bytevalue (the default) writes bytes as hex pairs; print (-p) writes\n"
      "printable ASCII as is, a backslash as \\\\ and other bytes as \\NN (hex).\n"
      "mdb_load and db_load read it back.  FILE is opened read-only.\n"
      "\n"
      "examples:\n"
      "  kvdb my.db dump > my.dump\n"
      "  kvdb my.db dump | mdb_load -n -f /dev/stdin my.mdb\n"
      "  kvdb my.db dump --prefix 'user:' -p\n" },
    { "load", 0, M_WRITE, O_REPLACE, "[--replace]",
      "Read a dump in the mdb_dump / db_dump text format (format=bytevalue or\n"
      "print) from standard input and store its pairs in FILE, creating it if\n"
      "missing.  Like mdb_load (without -N), a key that exists already gets the\n"
      "value from the dump and other keys are kept; --replace deletes every key\n"
      "of FILE first, so that FILE then holds exactly the dump.  Header lines\n"
      "other than VERSION, format, type, duplicates and database (mapsize,\n"
      "db_pagesize, ...) are ignored; recno/queue databases and duplicate keys\n"
      "are refused.\n"
      "\n"
      "Pairs are committed in batches of 50000 (the --replace deletes go with\n"
      "the first batch) without syncing, then FILE is synced once at the end.\n"
      "Input that is not a dump is refused before anything is written when the\n"
      "header is bad; an error later leaves the batches committed before it.\n"
      "\n"
      "examples:\n"
      "  mdb_dump -n old.mdb | kvdb new.db load\n"
      "  db_dump old.bdb | kvdb new.db load\n"
      "  kvdb new.db load --replace < my.dump\n" },
    { "help", -1, M_NONE, 0, "[COMMAND]",
      "Print the help of COMMAND, or the general help.\n" },
};
#define NCMDS (sizeof cmds / sizeof cmds[0])

static const struct cmd *find_cmd(const char *name)
{
    size_t i;
    for (i = 0; i < NCMDS; i++)
        if (strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    return NULL;
}

static void print_cmd_help(const struct cmd *c)
{
    printf("usage: kvdb [OPTIONS] FILE %s%s%s\n\n%s", c->name,
           *c->args ? " " : "", c->args, c->help);
    printf("\nSee 'kvdb --help' for the options, escapes and exit status.\n");
}

static int usage_error(const char *fmt, const char *arg)
{
    fputs("kvdb: ", stderr);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    fputs(usage_text, stderr);
    fputs("Try 'kvdb --help' for more information.\n", stderr);
    return EX_USAGE;
}

/* ------------------------------------------------------------- escapes */

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decode the escapes of a command-line KEY or VALUE into a new buffer
 * (*out, *outlen; *out is never NULL on success).  Returns 0, or -1 after
 * printing what is wrong. */
static int unescape(const char *what, const char *s, unsigned char **out, size_t *outlen)
{
    size_t n = strlen(s), i, o = 0;
    unsigned char *b = malloc(n + 1);
    if (!b) {
        fprintf(stderr, "kvdb: out of memory\n");
        return -1;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c != '\\') {
            b[o++] = c;
            continue;
        }
        if (i + 1 >= n) {
            fprintf(stderr, "kvdb: %s ends with a lone backslash (write \\\\ for a backslash)\n", what);
            free(b);
            return -1;
        }
        c = (unsigned char)s[++i];
        switch (c) {
        case '\\': b[o++] = '\\'; break;
        case 'n': b[o++] = '\n'; break;
        case 't': b[o++] = '\t'; break;
        case 'r': b[o++] = '\r'; break;
        case '0': b[o++] = 0; break;
        case 'x': {
            int hi = i + 1 < n ? hexval((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                fprintf(stderr, "kvdb: %s: \\x must be followed by two hex digits\n", what);
                free(b);
                return -1;
            }
            b[o++] = (unsigned char)(hi * 16 + lo);
            i += 2;
            break;
        }
        default:
            fprintf(stderr, "kvdb: %s: unknown escape \\%c (known: \\xNN \\\\ \\n \\t \\r \\0)\n",
                    what, c);
            free(b);
            return -1;
        }
    }
    *out = b;
    *outlen = o;
    return 0;
}

/* Write p[0..n) escaped: printable ASCII as is, backslash as \\, the rest \xNN. */
static void put_escaped(FILE *f, const unsigned char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c == '\\') {
            putc('\\', f);
            putc('\\', f);
        } else if (c >= 0x20 && c < 0x7f) {
            putc(c, f);
        } else {
            putc('\\', f);
            putc('x', f);
            putc(hex[c >> 4], f);
            putc(hex[c & 15], f);
        }
    }
}

static const char hexd[] = "0123456789abcdef";

static void put_hex(FILE *f, const unsigned char *p, size_t n)
{
    char buf[512];
    size_t i, o = 0;
    for (i = 0; i < n; i++) {
        buf[o++] = hexd[p[i] >> 4];
        buf[o++] = hexd[p[i] & 15];
        if (o == sizeof buf) {
            fwrite(buf, 1, o, f);
            o = 0;
        }
    }
    fwrite(buf, 1, o, f);
}

/* Is p[0..n) valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF)? */
static int valid_utf8(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i], len, k;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; }
        else return 0;
        if (i + len > n) return 0;
        for (k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += len;
    }
    return 1;
}

/* "name":"json string" if UTF-8, else "name_hex":"hex" */
static void put_json_field(FILE *f, const char *name, const unsigned char *p, size_t n)
{
    size_t i;
    if (!valid_utf8(p, n)) {
        fprintf(f, "\"%s_hex\":\"", name);
        put_hex(f, p, n);
        putc('"', f);
        return;
    }
    fprintf(f, "\"%s\":\"", name);
    for (i = 0; i < n; i++) {
        unsigned char c = p[i];
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (c < 0x20 || c == 0x7f) fprintf(f, "\\u%04x", c);
            else putc(c, f);
        }
    }
    putc('"', f);
}

/* ------------------------------------------------------------ progress */

/* A progress bar on stderr, only when it is a terminal and not --quiet. */
struct progress {
    int on;
    const char *label;
    double start, last;
    int drawn;
};

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void progress_init(struct progress *pg, const char *label, int quiet)
{
    pg->on = !quiet && isatty(2);
    pg->label = label;
    pg->start = pg->last = now_sec();
    pg->drawn = 0;
}

static void fmt_bytes(char *b, size_t cap, double v)
{
    const char *u[] = { "B", "KB", "MB", "GB", "TB" };
    int i = 0;
    while (v >= 1000 && i < 4) {
        v /= 1000;
        i++;
    }
    snprintf(b, cap, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

/* done of total bytes (total 0: unknown) */
static void progress_update(struct progress *pg, uint64_t done, uint64_t total)
{
    double t, el, rate;
    char d[32], r[32], eta[32] = "";
    if (!pg->on) return;
    t = now_sec();
    if (t - pg->last < 0.1 && (!total || done < total)) return;
    if (t - pg->start < 0.3 && (!total || done < total)) return; /* quick runs draw nothing */
    pg->last = t;
    el = t - pg->start;
    rate = el > 0 ? done / el : 0;
    fmt_bytes(d, sizeof d, (double)done);
    fmt_bytes(r, sizeof r, rate);
    if (total) {
        char bar[31];
        int w = (int)(30.0 * (done > total ? total : done) / total), i;
        double left = rate > 0 && done < total ? (total - done) / rate : 0;
        for (i = 0; i < 30; i++) bar[i] = i < w ? '#' : '.';
        bar[30] = 0;
        if (done < total)
            snprintf(eta, sizeof eta, " ETA %d:%02d", (int)left / 60, (int)left % 60);
        fprintf(stderr, "\r%s [%s] %3d%% %s %s/s%s   ", pg->label, bar,
                (int)(100.0 * (done > total ? total : done) / total), d, r, eta);
    } else {
        fprintf(stderr, "\r%s %s %s/s   ", pg->label, d, r);
    }
    fflush(stderr);
    pg->drawn = 1;
}

static void progress_end(struct progress *pg)
{
    if (pg->on && pg->drawn) {
        fprintf(stderr, "\r%*s\r", 79, "");
        fflush(stderr);
    }
    pg->drawn = 0;
}

/* ------------------------------------------------------------- errors */

static int exit_code(int rc)
{
    switch (rc) {
    case KVDB_OK:
        return EX_OK;
    case KVDB_NOTFOUND:
        return EX_NOTFOUND;
    case KVDB_ECORRUPT:
    case KVDB_ENOTDB:
    case KVDB_EVERSION:
        return EX_DATA;
    default:
        return EX_IO;
    }
}

/* Report a failed kvdb call on FILE: "kvdb: FILE: [WHAT: ]cause".  The cause
 * is kvdb_errmsg() (which usually starts with the path already: that prefix
 * is not repeated), with kvdb_strerror(rc) in front if it does not say it. */
static int report(const char *file, int rc, const char *what)
{
    const char *m = kvdb_errmsg();
    const char *se = kvdb_strerror(rc);
    size_t fl = strlen(file);

    fprintf(stderr, "kvdb: %s: ", file);
    if (what)
        fprintf(stderr, "%s: ", what);
    if (m && *m) {
        if (strncmp(m, file, fl) == 0 && m[fl] == ':') {
            m += fl + 1;
            while (*m == ' ')
                m++;
        }
        if (strstr(m, se))
            fprintf(stderr, "%s\n", m);
        else if (strstr(se, m))
            fprintf(stderr, "%s\n", se);
        else
            fprintf(stderr, "%s (%s)\n", se, m);
    } else {
        fprintf(stderr, "%s\n", se);
    }
    if (rc == KVDB_ECORRUPT)
        fprintf(stderr, "kvdb: %s: run 'kvdb %s check' for a report, and 'kvdb %s repair --out NEW' to copy "
                "what is intact into a new file\n", file, file, file);
    return exit_code(rc);
}

static int report_key(const char *file, const char *msg, const unsigned char *k, size_t kl)
{
    fprintf(stderr, "kvdb: %s: %s: ", file, msg);
    put_escaped(stderr, k, kl);
    fputc('\n', stderr);
    return EX_NOTFOUND;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* kvdb_open with the tool's messages for the common failures. */
static int open_db(const char *file, int mode, int sync, kvdb **db)
{
    kvdb_options o;
    int rc;
    kvdb_options_init(&o);
    if (mode == M_WRITE) {
        o.flags = KVDB_CREATE;
        o.sync = sync;
    } else if (mode == M_WRITE_EXISTING) {
        o.sync = sync;
    } else {
        o.flags = KVDB_RDONLY;
    }
    rc = kvdb_open(file, &o, db);
    if (rc == KVDB_OK)
        return EX_OK;
    if (mode == M_WRITE && rc == KVDB_NOTFOUND) {
        fprintf(stderr, "kvdb: %s: cannot create the database (does its directory exist?)\n", file);
        return EX_IO;
    }
    if (rc == KVDB_NOTFOUND || (mode != M_WRITE && !file_exists(file) && errno == ENOENT)) {
        fprintf(stderr, "kvdb: %s: no such database%s\n", file, mode == M_WRITE_EXISTING ? "" : " (put creates one)");
        return EX_IO;
    }
    if (rc == KVDB_ELOCKED) {
        fprintf(stderr, "kvdb: %s: locked: another process has it open for writing (%s); "
                "try again once it has closed it\n", file, mode == M_READ ? "read-only commands can run "
                "beside readers, not beside a writer" : "one writer at a time");
        return EX_IO;
    }
    return report(file, rc, NULL);
}

/* ---------------------------------------------------------------- main */

struct opts {
    int sync;       /* -1: not given */
    int raw, help, version, quiet, reverse, keys_only, replace, partial;
    int format;     /* -1: not given; F_* */
    const char *prefix, *from, *to, *out;
    uint64_t limit;
    int has_limit;
    unsigned given; /* O_* seen */
};

enum { F_TEXT, F_HEX, F_JSON, F_BYTEVALUE, F_PRINT };

/* the bounds of scan/count/dump: a prefix or a [from, to) range */
struct bounds {
    unsigned char *prefix, *from, *to;
    size_t plen, flen, tlen;
    int has_prefix, has_from, has_to;
};

static void bounds_free(struct bounds *b)
{
    free(b->prefix);
    free(b->from);
    free(b->to);
}

static int bounds_get(const struct opts *op, struct bounds *b)
{
    memset(b, 0, sizeof *b);
    if (op->prefix) {
        if (unescape("--prefix", op->prefix, &b->prefix, &b->plen) != 0) return EX_USAGE;
        b->has_prefix = 1;
    }
    if (op->from) {
        if (unescape("--from", op->from, &b->from, &b->flen) != 0) return EX_USAGE;
        b->has_from = 1;
    }
    if (op->to) {
        if (unescape("--to", op->to, &b->to, &b->tlen) != 0) return EX_USAGE;
        b->has_to = 1;
    }
    return EX_OK;
}

static int bounds_iter(kvdb_txn *t, const struct bounds *b, unsigned flags, kvdb_iter **it)
{
    if (b->has_prefix)
        return kvdb_iter_prefix(t, b->prefix, b->plen, flags, it);
    return kvdb_iter_range(t, b->has_from ? b->from : NULL, b->flen, b->has_to ? b->to : NULL, b->tlen, flags, it);
}

static int read_stdin(unsigned char **out, size_t *outlen)
{
    size_t cap = 65536, n = 0;
    unsigned char *b = malloc(cap);
    if (!b) {
        fprintf(stderr, "kvdb: out of memory reading the value from standard input\n");
        return EX_IO;
    }
    for (;;) {
        size_t got;
        if (n == cap) {
            unsigned char *nb;
            if (cap > (size_t)KVDB_MAX_VALUE) {
                fprintf(stderr, "kvdb: the value on standard input is longer than the limit of "
                                "%lu bytes; nothing was written\n", (unsigned long)KVDB_MAX_VALUE);
                free(b);
                return EX_USAGE;
            }
            nb = realloc(b, cap * 2);
            if (!nb) {
                fprintf(stderr, "kvdb: out of memory reading the value from standard input\n");
                free(b);
                return EX_IO;
            }
            b = nb;
            cap *= 2;
        }
        got = fread(b + n, 1, cap - n, stdin);
        n += got;
        if (got == 0) {
            if (ferror(stdin)) {
                fprintf(stderr, "kvdb: cannot read the value from standard input; nothing was written\n");
                free(b);
                return EX_IO;
            }
            break;
        }
    }
    if (n > (size_t)KVDB_MAX_VALUE) {
        fprintf(stderr, "kvdb: the value on standard input is longer than the limit of "
                        "%lu bytes; nothing was written\n", (unsigned long)KVDB_MAX_VALUE);
        free(b);
        return EX_USAGE;
    }
    *out = b;
    *outlen = n;
    return EX_OK;
}

/* ---------------------------------------------------------------- scan */

static int cmd_scan(const char *file, kvdb *db, const struct opts *op, int count_only)
{
    struct bounds b;
    kvdb_txn *t = NULL;
    kvdb_iter *it = NULL;
    uint64_t n = 0;
    int rc, ex = bounds_get(op, &b), fmt = op->format < 0 ? F_TEXT : op->format;
    if (ex != EX_OK) {
        bounds_free(&b);
        return ex;
    }
    if (count_only && !b.has_prefix && !b.has_from && !b.has_to) {
        struct kvdb_stat s;
        rc = kvdb_stat(db, &s);
        if (rc != KVDB_OK) {
            bounds_free(&b);
            return report(file, rc, "count");
        }
        printf("%llu\n", (unsigned long long)s.keys);
        bounds_free(&b);
        return EX_OK;
    }
    rc = kvdb_begin(db, KVDB_TXN_RDONLY, &t);
    if (rc == KVDB_OK)
        rc = bounds_iter(t, &b, op->reverse ? KVDB_ITER_REVERSE : 0, &it);
    while (rc == KVDB_OK) {
        const void *k, *v;
        size_t kl, vl;
        if (op->has_limit && n >= op->limit)
            break;
        rc = kvdb_iter_next(it, &k, &kl, &v, &vl);
        if (rc != KVDB_OK)
            break;
        n++;
        if (count_only)
            continue;
        switch (fmt) {
        case F_HEX:
            put_hex(stdout, k, kl);
            if (!op->keys_only) {
                putchar('\t');
                put_hex(stdout, v, vl);
            }
            break;
        case F_JSON:
            putchar('{');
            put_json_field(stdout, "key", k, kl);
            if (!op->keys_only) {
                putchar(',');
                put_json_field(stdout, "value", v, vl);
            }
            putchar('}');
            break;
        default:
            put_escaped(stdout, k, kl);
            if (!op->keys_only) {
                putchar('\t');
                put_escaped(stdout, v, vl);
            }
        }
        putchar('\n');
    }
    if (rc == KVDB_DONE)
        rc = KVDB_OK;
    if (rc != KVDB_OK)
        ex = report(file, rc, count_only ? "count" : "scan");
    else if (count_only)
        printf("%llu\n", (unsigned long long)n);
    if (it)
        kvdb_iter_close(it);
    if (t)
        kvdb_abort(t);
    bounds_free(&b);
    return ex;
}

/* ---------------------------------------------------------------- stat */

static const char *sync_name(int m)
{
    return m == KVDB_SYNC_FULL ? "full" : m == KVDB_SYNC_NORMAL ? "normal" : m == KVDB_SYNC_OFF ? "off" : "?";
}

/* In slices, so that a terminal shows progress (live bytes copied of the
 * live bytes there are), then the sidecar for the new file. */
static int cmd_compact(const char *file, kvdb *db, const struct opts *op)
{
    struct kvdb_stat a, b;
    struct progress pg;
    const size_t slice = (size_t)4 << 20;
    uint64_t done = 0;
    int rc = kvdb_stat(db, &a);
    if (rc != KVDB_OK)
        return report(file, rc, "compact");
    progress_init(&pg, "compact", op->quiet);
    while ((rc = kvdb_compact_step(db, slice)) == KVDB_OK) {
        done += slice;
        progress_update(&pg, done < a.live_bytes ? done : a.live_bytes, a.live_bytes);
    }
    progress_end(&pg);
    if (rc == KVDB_DONE)
        rc = kvdb_checkpoint(db);
    if (rc == KVDB_OK)
        rc = kvdb_stat(db, &b);
    if (rc != KVDB_OK)
        return report(file, rc, "compact");
    {
        char before[32], after[32], gain[32];
        fmt_bytes(before, sizeof before, (double)a.file_bytes);
        fmt_bytes(after, sizeof after, (double)b.file_bytes);
        fmt_bytes(gain, sizeof gain, (double)b.compact_reclaimed);
        printf("%s: %s -> %s (%s reclaimed), %llu keys, %.3f s\n", file, before, after, gain,
               (unsigned long long)b.keys, b.compact_ns / 1e9);
    }
    return EX_OK;
}

static int cmd_stat(const char *file, kvdb *db)
{
    struct kvdb_stat s;
    struct stat fs;
    char *idx;
    uint64_t scb = 0;
    int rc;
    memset(&s, 0, sizeof s);
    rc = kvdb_stat(db, &s);
    if (rc != KVDB_OK)
        return report(file, rc, "stat");
    idx = malloc(strlen(file) + 5);
    if (idx) {
        sprintf(idx, "%s.idx", file);
        if (stat(idx, &fs) == 0)
            scb = (uint64_t)fs.st_size;
        free(idx);
    }
    printf("keys: %llu\n", (unsigned long long)s.keys);
    printf("file_bytes: %llu\n", (unsigned long long)s.file_bytes);
    printf("live_bytes: %llu\n", (unsigned long long)s.live_bytes);
    printf("dead_bytes: %llu\n", (unsigned long long)s.dead_bytes);
    printf("index_bytes: %llu\n", (unsigned long long)s.index_bytes);
    printf("sorted_bytes: %llu\n", (unsigned long long)s.sorted_bytes);
    printf("format_version: %lu\n", (unsigned long)s.format_version);
    printf("sync_mode: %s\n", sync_name(s.sync_mode));
    printf("torn_bytes: %llu\n", (unsigned long long)s.torn_bytes);
    printf("recovered_txns: %llu\n", (unsigned long long)s.recovered_txns);
    printf("replayed_bytes: %llu\n", (unsigned long long)s.replayed_bytes);
    printf("sidecar: %s\n", s.sidecar);
    printf("sidecar_bytes: %llu\n", (unsigned long long)scb);
    printf("horizon: %llu\n", (unsigned long long)s.horizon);
    printf("horizon_from: %s\n", s.horizon_from);
    printf("commits: %llu\n", (unsigned long long)s.commits);
    printf("compactions: %llu\n", (unsigned long long)s.compactions);
    printf("db_id: %016llx%016llx\n", (unsigned long long)s.db_id[0], (unsigned long long)s.db_id[1]);
    return EX_OK;
}

/* ------------------------------------------------------ check, repair */

struct chk_ui {
    const char *file;
    struct progress pg;
    unsigned long notes;
};

static void chk_report(void *ctx, int kind, uint64_t off, const char *what)
{
    struct chk_ui *u = ctx;
    progress_end(&u->pg);
    printf("%s: ", u->file);
    if (kind == KVDB_CHECK_NOTE)
        printf("note: ");
    if (off != KVDB_CHECK_NOOFF)
        printf("offset %llu: ", (unsigned long long)off);
    printf("%s\n", what);
    fflush(stdout);
    if (kind == KVDB_CHECK_NOTE)
        u->notes++;
}

static void chk_progress_cb(void *ctx, uint64_t done, uint64_t total)
{
    struct chk_ui *u = ctx;
    progress_update(&u->pg, done, total);
}

static int cmd_check(const char *file, const struct opts *op)
{
    struct chk_ui u;
    kvdb_check_opts co;
    kvdb_check_stat st;
    int rc;
    memset(&co, 0, sizeof co);
    memset(&u, 0, sizeof u);
    u.file = file;
    progress_init(&u.pg, "check", op->quiet);
    co.report = chk_report;
    co.progress = chk_progress_cb;
    co.ctx = &u;
    rc = kvdb_check(file, &co, &st);
    progress_end(&u.pg);
    if (rc == KVDB_OK || (rc == KVDB_ECORRUPT && st.problems)) {
        printf("%s: %s: %llu records in %llu transactions, %llu bytes verified", file,
               rc == KVDB_OK ? "ok" : "DAMAGED", (unsigned long long)st.records, (unsigned long long)st.txns,
               (unsigned long long)st.bytes_verified);
        if (st.index_checked)
            printf(", %llu keys, indexes agree with the log", (unsigned long long)st.keys);
        if (st.torn_bytes)
            printf(", torn tail of %llu bytes", (unsigned long long)st.torn_bytes);
        if (st.horizon > 64)
            printf(", durable horizon %llu (%s)", (unsigned long long)st.horizon, st.horizon_from);
        if (rc != KVDB_OK)
            printf("; %llu problem(s)%s", (unsigned long long)st.problems,
                   st.index_checked ? "" : " (the indexes are compared only when the log is clean)");
        printf("\n");
        if (rc != KVDB_OK)
            fprintf(stderr, "kvdb: %s: nothing was changed; 'kvdb %s repair --out NEW' copies what is intact "
                    "into a new file\n", file, file);
        return rc == KVDB_OK ? EX_OK : EX_DATA;
    }
    if (rc == KVDB_NOTFOUND) {
        fprintf(stderr, "kvdb: %s: no such database\n", file);
        return EX_IO;
    }
    if (rc == KVDB_ELOCKED) {
        fprintf(stderr, "kvdb: %s: locked: another process has it open for writing; check needs it "
                "closed (or run check in that process with kvdb_check)\n", file);
        return EX_IO;
    }
    return report(file, rc, "check");
}

static int cmd_repair(const char *file, const struct opts *op)
{
    struct chk_ui u;
    kvdb_check_opts co;
    kvdb_check_stat st;
    int rc;
    if (!op->out)
        return usage_error("%s: repair needs --out NEWFILE (the file to write; FILE is never changed)", file);
    if (!*op->out)
        return usage_error("%s--out is an empty string", "");
    if (file_exists(op->out)) {
        fprintf(stderr, "kvdb: %s: already exists; repair writes a new file and never overwrites one\n", op->out);
        return EX_USAGE;
    }
    memset(&co, 0, sizeof co);
    memset(&u, 0, sizeof u);
    u.file = file;
    progress_init(&u.pg, "repair", op->quiet);
    co.report = chk_report;
    co.progress = chk_progress_cb;
    co.ctx = &u;
    co.flags = op->partial ? KVDB_REPAIR_PARTIAL : 0;
    rc = kvdb_repair(file, op->out, &co, &st);
    progress_end(&u.pg);
    if (rc != KVDB_OK) {
        if (rc == KVDB_NOTFOUND) {
            fprintf(stderr, "kvdb: %s: no such database\n", file);
            return EX_IO;
        }
        if (rc == KVDB_ELOCKED) {
            fprintf(stderr, "kvdb: %s: locked: another process has it open for writing; repair needs it "
                    "closed\n", file);
            return EX_IO;
        }
        if (rc == KVDB_EINVAL)
            return report(op->out, rc, "repair");
        return report(file, rc, "repair");
    }
    printf("%s: saved %llu transactions (%llu records, %llu keys) into %s", file,
           (unsigned long long)st.salvaged_txns, (unsigned long long)st.salvaged_records,
           (unsigned long long)st.keys, op->out);
    if (st.partial_records)
        printf(", %llu of them from incomplete transactions", (unsigned long long)st.partial_records);
    if (st.lost_bytes || st.lost_txns)
        printf("; not saved: %llu bytes, %llu incomplete transaction(s)%s", (unsigned long long)st.lost_bytes,
               (unsigned long long)st.lost_txns, st.partial_records ? " in part" : "");
    if (st.torn_bytes)
        printf(" (%llu bytes of it a torn tail)", (unsigned long long)st.torn_bytes);
    printf("\n");
    if (st.lost_records > st.partial_records)
        fprintf(stderr, "kvdb: %s: %llu intact record(s) of incomplete transactions were not saved (a transaction "
                "is saved whole or not at all); --partial saves them too\n", file,
                (unsigned long long)(st.lost_records - st.partial_records));
    return st.problems ? EX_DATA : EX_OK;
}

/* ----------------------------------------------------------- dump, load */

/* One dump line: a space, the bytes encoded, a newline. */
static void dump_line(FILE *f, const unsigned char *p, size_t n, int print)
{
    char buf[65536];
    size_t i, o = 0;
    buf[o++] = ' ';
    for (i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (o > sizeof buf - 4) {
            fwrite(buf, 1, o, f);
            o = 0;
        }
        if (!print) {
            buf[o++] = hexd[c >> 4];
            buf[o++] = hexd[c & 15];
        } else if (c >= 0x20 && c < 0x7f) {
            if (c == '\\')
                buf[o++] = '\\';
            buf[o++] = (char)c;
        } else {
            buf[o++] = '\\';
            buf[o++] = hexd[c >> 4];
            buf[o++] = hexd[c & 15];
        }
    }
    buf[o++] = '\n';
    fwrite(buf, 1, o, f);
}

static int cmd_dump(const char *file, kvdb *db, const struct opts *op)
{
    struct bounds b;
    struct kvdb_stat s;
    struct progress pg;
    kvdb_txn *t = NULL;
    kvdb_iter *it = NULL;
    uint64_t done = 0, need;
    int print = op->format == F_PRINT, rc, ex = bounds_get(op, &b);
    if (ex != EX_OK) {
        bounds_free(&b);
        return ex;
    }
    rc = kvdb_stat(db, &s);
    if (rc == KVDB_OK)
        rc = kvdb_begin(db, KVDB_TXN_RDONLY, &t);
    if (rc == KVDB_OK)
        rc = bounds_iter(t, &b, 0, &it);
    if (rc != KVDB_OK) {
        ex = report(file, rc, "dump");
        goto out;
    }
    printf("VERSION=3\nformat=%s\ntype=btree\n", print ? "print" : "bytevalue");
    /* LMDB's default map (1 MiB) holds small databases; say how much a
     * larger one needs (generously: B-tree pages are 50..100% full and a
     * big value takes whole pages) so that mdb_load can load it */
    need = 3 * s.live_bytes + 64 * s.keys;
    if (need > ((uint64_t)512 << 10))
        printf("mapsize=%llu\n", (unsigned long long)((need + ((uint64_t)2 << 20)) & ~(((uint64_t)1 << 20) - 1)));
    printf("HEADER=END\n");
    progress_init(&pg, "dump", op->quiet);
    for (;;) {
        const void *k, *v;
        size_t kl, vl;
        rc = kvdb_iter_next(it, &k, &kl, &v, &vl);
        if (rc != KVDB_OK)
            break;
        dump_line(stdout, k, kl, print);
        dump_line(stdout, v, vl, print);
        done += 16 + kl + vl;
        progress_update(&pg, done, s.live_bytes > done ? s.live_bytes : done);
    }
    progress_end(&pg);
    if (rc != KVDB_DONE) {
        ex = report(file, rc, "dump");
        goto out;
    }
    printf("DATA=END\n");
out:
    if (it)
        kvdb_iter_close(it);
    if (t)
        kvdb_abort(t);
    bounds_free(&b);
    return ex;
}

struct loader {
    FILE *in;
    char *line;
    size_t cap;
    ssize_t len;
    unsigned long long lineno;
    uint64_t bytes;
    unsigned char *dec;      /* decoded key or value */
    size_t deccap;
};

/* The next line without its newline: 1, 0 at the end, -1 on a read error. */
static int ld_line(struct loader *l)
{
    l->len = getline(&l->line, &l->cap, l->in);
    if (l->len < 0)
        return ferror(l->in) ? -1 : 0;
    l->lineno++;
    l->bytes += (uint64_t)l->len;
    if (l->len && l->line[l->len - 1] == '\n')
        l->line[--l->len] = 0;
    if (l->len && l->line[l->len - 1] == '\r') /* a dump that went through a text-mode system */
        l->line[--l->len] = 0;
    return 1;
}

static int ld_err(const struct loader *l, const char *msg)
{
    fprintf(stderr, "kvdb: load: standard input, line %llu: %s\n", l->lineno, msg);
    return EX_USAGE;
}

/* Decode a data line (" hexhex..." or " print\\5c...") into l->dec. */
static int ld_decode(struct loader *l, int print, size_t *out)
{
    const char *s = l->line + 1;
    size_t n = (size_t)l->len - 1, i, o = 0;
    if (l->len < 1 || l->line[0] != ' ')
        return ld_err(l, "a data line must start with a space (or be DATA=END)");
    if (n > l->deccap || !l->dec) {
        unsigned char *nd = realloc(l->dec, n + 1);
        if (!nd) {
            fprintf(stderr, "kvdb: load: out of memory at line %llu\n", l->lineno);
            return EX_IO;
        }
        l->dec = nd;
        l->deccap = n + 1;
    }
    if (!print) {
        if (n % 2)
            return ld_err(l, "odd number of hex digits");
        for (i = 0; i < n; i += 2) {
            int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
            if (hi < 0 || lo < 0)
                return ld_err(l, "not a hex digit (format=bytevalue)");
            l->dec[o++] = (unsigned char)(hi << 4 | lo);
        }
    } else {
        for (i = 0; i < n; i++) {
            if (s[i] != '\\') {
                l->dec[o++] = (unsigned char)s[i];
            } else if (i + 1 < n && s[i + 1] == '\\') {
                l->dec[o++] = '\\';
                i++;
            } else {
                int hi = i + 1 < n ? hexval((unsigned char)s[i + 1]) : -1;
                int lo = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
                if (hi < 0 || lo < 0)
                    return ld_err(l, "a backslash must be followed by two hex digits or a backslash (format=print)");
                l->dec[o++] = (unsigned char)(hi << 4 | lo);
                i += 2;
            }
        }
    }
    *out = o;
    return EX_OK;
}

/* Delete every key of db inside the write transaction w. */
static int ld_clear(const char *file, kvdb *db, kvdb_txn *w)
{
    kvdb_txn *r = NULL;
    kvdb_iter *it = NULL;
    int rc = kvdb_begin(db, KVDB_TXN_RDONLY, &r);
    if (rc == KVDB_OK)
        rc = kvdb_iter_prefix(r, NULL, 0, 0, &it);
    while (rc == KVDB_OK) {
        const void *k, *v;
        size_t kl, vl;
        rc = kvdb_iter_next(it, &k, &kl, &v, &vl);
        if (rc == KVDB_OK)
            rc = kvdb_txn_del(w, k, kl);
    }
    if (it)
        kvdb_iter_close(it);
    if (r)
        kvdb_abort(r);
    if (rc == KVDB_DONE)
        return EX_OK;
    return report(file, rc, "load --replace");
}

#define LOAD_BATCH 50000

static int cmd_load(const char *file, const struct opts *op)
{
    struct loader l;
    struct progress pg;
    struct stat fs;
    kvdb *db = NULL;
    kvdb_txn *t = NULL;
    uint64_t total = 0, pairs = 0, committed = 0, batch = 0;
    int print = 0, r, ex = EX_OK, rc, have_key = 0, ended = 0, pg_on = 0;
    unsigned char *key = NULL;
    size_t klen = 0, kcap = 0;

    memset(&l, 0, sizeof l);
    l.in = stdin;
    if (fstat(0, &fs) == 0 && S_ISREG(fs.st_mode))
        total = (uint64_t)fs.st_size;
    /* the header, before FILE is opened: input that is not a dump changes nothing */
    r = ld_line(&l);
    if (r <= 0) {
        fprintf(stderr, "kvdb: load: %s\n", r < 0 ? "cannot read standard input" : "standard input is empty "
                "(expected a dump from mdb_dump, db_dump or kvdb dump)");
        ex = r < 0 ? EX_IO : EX_USAGE;
        goto out;
    }
    if (strncmp(l.line, "VERSION=", 8) != 0) {
        ex = ld_err(&l, "not a dump: it must start with VERSION=3 (from mdb_dump, db_dump or kvdb dump)");
        goto out;
    }
    if (strcmp(l.line, "VERSION=3") != 0) {
        ex = ld_err(&l, "unsupported dump version (only VERSION=3)");
        goto out;
    }
    for (;;) {
        char *eq;
        r = ld_line(&l);
        if (r <= 0) {
            ex = r < 0 ? EX_IO : ld_err(&l, "unexpected end of input in the header (no HEADER=END)");
            goto out;
        }
        if (strcmp(l.line, "HEADER=END") == 0)
            break;
        eq = strchr(l.line, '=');
        if (!eq) {
            ex = ld_err(&l, "header lines are NAME=VALUE");
            goto out;
        }
        *eq++ = 0;
        if (strcmp(l.line, "format") == 0) {
            if (strcmp(eq, "print") == 0) {
                print = 1;
            } else if (strcmp(eq, "bytevalue") == 0) {
                print = 0;
            } else {
                ex = ld_err(&l, "unknown format (bytevalue or print)");
                goto out;
            }
        } else if (strcmp(l.line, "type") == 0) {
            if (strcmp(eq, "btree") != 0 && strcmp(eq, "hash") != 0) {
                ex = ld_err(&l, "only btree and hash databases can be loaded (recno and queue keys are record numbers)");
                goto out;
            }
        } else if (strcmp(l.line, "duplicates") == 0 || strcmp(l.line, "dupsort") == 0) {
            if (strcmp(eq, "0") != 0) {
                ex = ld_err(&l, "a database with duplicate keys cannot be loaded: kvdb keeps one value per key");
                goto out;
            }
        }
        /* database=, mapsize=, maxreaders=, db_pagesize=, ...: nothing to do */
    }

    r = open_db(file, M_WRITE, KVDB_SYNC_OFF, &db);
    if (r != EX_OK) {
        ex = r;
        goto out;
    }
    progress_init(&pg, "load", op->quiet);
    pg_on = 1;
    rc = kvdb_begin(db, 0, &t);
    if (rc != KVDB_OK) {
        ex = report(file, rc, "load");
        goto out;
    }
    if (op->replace) {
        ex = ld_clear(file, db, t);
        if (ex != EX_OK)
            goto out;
    }
    while ((r = ld_line(&l)) > 0) {
        size_t n;
        if (strcmp(l.line, "DATA=END") == 0) {
            if (have_key) {
                ex = ld_err(&l, "DATA=END after a key without a value");
                goto out;
            }
            ended = 1;
            break;
        }
        ex = ld_decode(&l, print, &n);
        if (ex != EX_OK)
            goto out;
        if (!have_key) {
            if (n == 0 || n > KVDB_MAX_KEY) {
                ex = ld_err(&l, n ? "key longer than 65535 bytes" : "empty key (kvdb keys are 1..65535 bytes)");
                goto out;
            }
            if (n > kcap) {
                unsigned char *nk = realloc(key, n);
                if (!nk) {
                    fprintf(stderr, "kvdb: load: out of memory\n");
                    ex = EX_IO;
                    goto out;
                }
                key = nk;
                kcap = n;
            }
            memcpy(key, l.dec, n);
            klen = n;
            have_key = 1;
            continue;
        }
        if (n > KVDB_MAX_VALUE) {
            ex = ld_err(&l, "value longer than 1 GiB");
            goto out;
        }
        rc = kvdb_txn_put(t, key, klen, l.dec, n);
        if (rc != KVDB_OK) {
            ex = report(file, rc, "load");
            goto out;
        }
        have_key = 0;
        pairs++;
        if (++batch == LOAD_BATCH) {
            rc = kvdb_commit(t);
            t = NULL;
            if (rc == KVDB_OK)
                rc = kvdb_begin(db, 0, &t);
            if (rc != KVDB_OK) {
                ex = report(file, rc, "load");
                goto out;
            }
            committed = pairs;
            batch = 0;
        }
        progress_update(&pg, l.bytes, total);
    }
    if (r < 0) {
        fprintf(stderr, "kvdb: load: cannot read standard input\n");
        ex = EX_IO;
        goto out;
    }
    if (!ended) {
        ex = ld_err(&l, "unexpected end of input (no DATA=END)");
        goto out;
    }
    while ((r = ld_line(&l)) > 0) {
        if (l.len == 0)
            continue;
        ex = ld_err(&l, strncmp(l.line, "VERSION=", 8) == 0
                        ? "a second database follows; kvdb files hold one (dump one database, e.g. mdb_dump -s NAME)"
                        : "text after DATA=END");
        goto out;
    }
    rc = kvdb_commit(t);
    t = NULL;
    if (rc == KVDB_OK)
        rc = kvdb_sync(db);
    if (rc != KVDB_OK) {
        ex = report(file, rc, "load");
        goto out;
    }
    committed = pairs;
    rc = kvdb_close(db);
    db = NULL;
    if (rc != KVDB_OK)
        ex = report(file, rc, "close");
out:
    if (pg_on)
        progress_end(&pg);
    if (t)
        kvdb_abort(t);
    if (db) {
        if (committed)
            fprintf(stderr, "kvdb: %s: load stopped; the first %llu pairs are committed (in batches of %d)%s\n",
                    file, (unsigned long long)committed, LOAD_BATCH, op->replace ? ", and the old keys are deleted" : "");
        kvdb_sync(db);
        kvdb_close(db);
    }
    free(key);
    free(l.dec);
    free(l.line);
    return ex;
}

/* ----------------------------------------------------------------- run */

static int run(const char *file, const struct cmd *c, char **args, const struct opts *op)
{
    unsigned char *key = NULL, *val = NULL;
    size_t klen = 0, vlen = 0;
    kvdb *db = NULL;
    int rc, ex = EX_OK;

    if (strcmp(c->name, "check") == 0)
        return cmd_check(file, op);
    if (strcmp(c->name, "repair") == 0)
        return cmd_repair(file, op);
    if (strcmp(c->name, "load") == 0)
        return cmd_load(file, op);

    if (c->nargs >= 1) {
        if (unescape("KEY", args[0], &key, &klen) != 0)
            return EX_USAGE;
        if (klen == 0) {
            free(key);
            return usage_error("%s: the key is empty (keys are 1..65535 bytes)", file);
        }
        if (klen > KVDB_MAX_KEY) {
            free(key);
            return usage_error("%s: the key is longer than 65535 bytes", file);
        }
    }
    if (c->nargs >= 2) {
        if (strcmp(args[1], "-") == 0)
            ex = read_stdin(&val, &vlen);
        else if (unescape("VALUE", args[1], &val, &vlen) != 0)
            ex = EX_USAGE;
        if (ex != EX_OK) {
            free(key);
            return ex;
        }
    }

    ex = open_db(file, c->mode, op->sync >= 0 ? op->sync : KVDB_SYNC_FULL, &db);
    if (ex != EX_OK) {
        free(key);
        free(val);
        return ex;
    }

    if (strcmp(c->name, "put") == 0) {
        rc = kvdb_put(db, key, klen, val, vlen);
        if (rc != KVDB_OK)
            ex = report(file, rc, "put");
    } else if (strcmp(c->name, "del") == 0) {
        rc = kvdb_del(db, key, klen);
        if (rc == KVDB_NOTFOUND)
            ex = report_key(file, "no such key", key, klen);
        else if (rc != KVDB_OK)
            ex = report(file, rc, "del");
    } else if (strcmp(c->name, "exists") == 0) {
        size_t vl = 0;
        rc = kvdb_get(db, key, klen, NULL, 0, &vl);
        if (rc == KVDB_NOTFOUND)
            ex = EX_NOTFOUND;
        else if (rc != KVDB_OK)
            ex = report(file, rc, "exists");
    } else if (strcmp(c->name, "get") == 0) {
        kvdb_txn *t = NULL;
        const void *v = NULL;
        size_t vl = 0;
        rc = kvdb_begin(db, KVDB_TXN_RDONLY, &t);
        if (rc != KVDB_OK) {
            ex = report(file, rc, "get");
        } else {
            rc = kvdb_txn_get(t, key, klen, &v, &vl);
            if (rc == KVDB_NOTFOUND) {
                ex = report_key(file, "no such key", key, klen);
            } else if (rc != KVDB_OK) {
                ex = report(file, rc, "get");
            } else if (op->raw) {
                if (vl && fwrite(v, 1, vl, stdout) != vl)
                    ex = EX_IO;
            } else {
                put_escaped(stdout, v, vl);
                putc('\n', stdout);
            }
            kvdb_abort(t);
        }
    } else if (strcmp(c->name, "scan") == 0) {
        ex = cmd_scan(file, db, op, 0);
    } else if (strcmp(c->name, "count") == 0) {
        ex = cmd_scan(file, db, op, 1);
    } else if (strcmp(c->name, "stat") == 0) {
        ex = cmd_stat(file, db);
    } else if (strcmp(c->name, "dump") == 0) {
        ex = cmd_dump(file, db, op);
    } else if (strcmp(c->name, "sync") == 0) {
        rc = kvdb_sync(db);
        if (rc != KVDB_OK)
            ex = report(file, rc, "sync");
    } else if (strcmp(c->name, "compact") == 0) {
        ex = cmd_compact(file, db, op);
    }

    rc = kvdb_close(db);
    if (rc != KVDB_OK && ex == EX_OK)
        ex = report(file, rc, "close");
    free(key);
    free(val);
    return ex;
}

/* option table: name, short name, takes a value, O_* bit (0: global) */
static const struct optdef {
    const char *name;
    const char *shrt;
    int has_val;
    unsigned bit;
} optdefs[] = {
    { "--help", "-h", 0, 0 },        { "--version", "-V", 0, 0 },    { "--quiet", "-q", 0, 0 },
    { "--raw", "-r", 0, O_RAW },      { "--sync", NULL, 1, O_SYNC },  { "--prefix", NULL, 1, O_PREFIX },
    { "--from", NULL, 1, O_RANGE },   { "--to", NULL, 1, O_RANGE },   { "--reverse", NULL, 0, O_REVERSE },
    { "--limit", NULL, 1, O_LIMIT },  { "--keys-only", NULL, 0, O_KEYSONLY },
    { "--format", NULL, 1, O_FORMAT }, { "--print", "-p", 0, O_FORMAT }, { "--out", "-o", 1, O_OUT },
    { "--replace", NULL, 0, O_REPLACE }, { "--partial", NULL, 0, O_PARTIAL },
};
#define NOPTS (sizeof optdefs / sizeof optdefs[0])

static int set_opt(struct opts *op, const struct optdef *d, const char *v)
{
    const char *n = d->name;
    op->given |= d->bit;
    if (!strcmp(n, "--help")) op->help = 1;
    else if (!strcmp(n, "--version")) op->version = 1;
    else if (!strcmp(n, "--quiet")) op->quiet = 1;
    else if (!strcmp(n, "--raw")) op->raw = 1;
    else if (!strcmp(n, "--reverse")) op->reverse = 1;
    else if (!strcmp(n, "--keys-only")) op->keys_only = 1;
    else if (!strcmp(n, "--replace")) op->replace = 1;
    else if (!strcmp(n, "--partial")) op->partial = 1;
    else if (!strcmp(n, "--prefix")) op->prefix = v;
    else if (!strcmp(n, "--from")) op->from = v;
    else if (!strcmp(n, "--to")) op->to = v;
    else if (!strcmp(n, "--out")) op->out = v;
    else if (!strcmp(n, "--print")) op->format = F_PRINT;
    else if (!strcmp(n, "--sync")) {
        if (!strcmp(v, "full")) op->sync = KVDB_SYNC_FULL;
        else if (!strcmp(v, "normal")) op->sync = KVDB_SYNC_NORMAL;
        else if (!strcmp(v, "off")) op->sync = KVDB_SYNC_OFF;
        else return usage_error("bad --sync mode '%s' (full, normal or off)", v);
    } else if (!strcmp(n, "--format")) {
        if (!strcmp(v, "text")) op->format = F_TEXT;
        else if (!strcmp(v, "hex")) op->format = F_HEX;
        else if (!strcmp(v, "json")) op->format = F_JSON;
        else if (!strcmp(v, "bytevalue")) op->format = F_BYTEVALUE;
        else if (!strcmp(v, "print")) op->format = F_PRINT;
        else return usage_error("bad --format '%s' (scan: text, hex, json; dump: bytevalue, print)", v);
    } else if (!strcmp(n, "--limit")) {
        char *end;
        errno = 0;
        op->limit = strtoull(v, &end, 10);
        if (!*v || *end || errno || *v == '-')
            return usage_error("--limit needs a number of pairs, not '%s'", v);
        op->has_limit = 1;
    }
    return EX_OK;
}

/* Which options the command does not take: a usage error. */
static int check_opts(const struct cmd *c, const struct opts *op)
{
    size_t i;
    unsigned bad = op->given & ~c->opts;
    if ((c->opts & O_PREFIX) && op->prefix && (op->from || op->to))
        return usage_error("%s: --prefix and --from/--to cannot be combined", c->name);
    for (i = 0; i < NOPTS; i++) {
        if (optdefs[i].bit & bad) {
            fprintf(stderr, "kvdb: %s does not apply to '%s'\n", optdefs[i].name, c->name);
            fputs(usage_text, stderr);
            fprintf(stderr, "Try 'kvdb %s --help' for more information.\n", c->name);
            return EX_USAGE;
        }
    }
    if (op->format >= 0) {
        int scanf_ = op->format <= F_JSON;
        if (!strcmp(c->name, "scan") && !scanf_)
            return usage_error("scan: --format is text, hex or json, not %s", op->format == F_PRINT ? "print" : "bytevalue");
        if (!strcmp(c->name, "dump") && scanf_)
            return usage_error("dump: --format is bytevalue or print, not %s",
                               op->format == F_TEXT ? "text" : op->format == F_HEX ? "hex" : "json");
    }
    return EX_OK;
}

/* The command names, from cmds[] (so the list cannot leave one out). */
static void put_cmd_list(FILE *f)
{
    size_t i;
    for (i = 0; i < NCMDS; i++) fprintf(f, "%s%s", i ? ", " : "", cmds[i].name);
}

int main(int argc, char **argv)
{
    struct opts op;
    char **pos;
    int npos = 0, i, dashdash = 0, ex;
    const struct cmd *c;
    const char *file;

    memset(&op, 0, sizeof op);
    op.sync = -1;
    op.format = -1;
    pos = malloc(sizeof *pos * (size_t)(argc + 1));
    if (!pos) {
        fprintf(stderr, "kvdb: out of memory\n");
        return EX_IO;
    }
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL, *eq;
        const struct optdef *d = NULL;
        size_t j, nl;
        if (dashdash || a[0] != '-' || a[1] == 0) {
            pos[npos++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            dashdash = 1;
            continue;
        }
        eq = a[1] == '-' ? strchr(a, '=') : NULL;
        nl = eq ? (size_t)(eq - a) : strlen(a);
        for (j = 0; j < NOPTS && !d; j++) {
            if ((strlen(optdefs[j].name) == nl && strncmp(a, optdefs[j].name, nl) == 0) ||
                (!eq && optdefs[j].shrt && strcmp(a, optdefs[j].shrt) == 0))
                d = &optdefs[j];
        }
        if (!d) {
            ex = usage_error("unknown option '%s' (a key or value that starts with '-' goes after --, as in "
                             "kvdb FILE put -- -key value)", a);
            free(pos);
            return ex;
        }
        if (d->has_val) {
            if (eq) {
                val = eq + 1;
            } else if (i + 1 < argc) {
                val = argv[++i];
            } else {
                ex = usage_error("%s needs a value", d->name);
                free(pos);
                return ex;
            }
        } else if (eq) {
            ex = usage_error("%s takes no value", d->name);
            free(pos);
            return ex;
        }
        ex = set_opt(&op, d, val);
        if (ex != EX_OK) {
            free(pos);
            return ex;
        }
    }

    if (op.version) {
        printf("kvdb %s (file format %d)\n", KVDB_VERSION_STRING, KVDB_FORMAT_VERSION);
        free(pos);
        return fflush(stdout) == 0 ? EX_OK : EX_IO;
    }
    /* kvdb help [COMMAND]; kvdb [FILE] COMMAND --help; kvdb --help */
    if (op.help || (npos >= 1 && strcmp(pos[0], "help") == 0)) {
        const char *topic = NULL;
        if (!op.help) {
            topic = npos >= 2 ? pos[1] : NULL;
        } else {
            for (i = 0; i < npos && i < 2 && !topic; i++)
                if (find_cmd(pos[i]))
                    topic = pos[i];
        }
        if (topic && strcmp(topic, "help") == 0)
            topic = NULL;
        ex = EX_OK;
        if (!topic) {
            fputs(help_text, stdout), fputs(help_text2, stdout);
        } else if ((c = find_cmd(topic)) != NULL) {
            print_cmd_help(c);
        } else {
            ex = usage_error("no help for unknown command '%s'", topic);
        }
        free(pos);
        if (ex == EX_OK && fflush(stdout) != 0)
            ex = EX_IO;
        return ex;
    }

    if (npos == 0) {
        free(pos);
        return usage_error("%smissing FILE and COMMAND", "");
    }
    /* "kvdb get KEY": the FILE was forgotten (unless a file of that name exists) */
    if (find_cmd(pos[0]) && !file_exists(pos[0]) && (npos < 2 || !find_cmd(pos[1]))) {
        ex = usage_error("missing FILE before the command '%s'", pos[0]);
        free(pos);
        return ex;
    }
    file = pos[0];
    if (!*file) {
        free(pos);
        return usage_error("%sFILE is an empty string", "");
    }
    if (npos == 1) {
        fprintf(stderr, "kvdb: %s: missing COMMAND (", file);
        put_cmd_list(stderr);
        fputs(")\n", stderr);
        fputs(usage_text, stderr);
        free(pos);
        return EX_USAGE;
    }
    c = find_cmd(pos[1]);
    if (!c) {
        fprintf(stderr, "kvdb: unknown command '%s' (", pos[1]);
        put_cmd_list(stderr);
        fputs(")\n", stderr);
        fputs(usage_text, stderr);
        free(pos);
        return EX_USAGE;
    }
    if (strcmp(c->name, "help") == 0) {
        const struct cmd *hc = npos >= 3 ? find_cmd(pos[2]) : NULL;
        if (npos >= 3 && !hc) {
            ex = usage_error("no help for unknown command '%s'", pos[2]);
        } else {
            if (hc && hc != c)
                print_cmd_help(hc);
            else
                fputs(help_text, stdout), fputs(help_text2, stdout);
            ex = fflush(stdout) == 0 ? EX_OK : EX_IO;
        }
        free(pos);
        return ex;
    }
    if (npos - 2 != c->nargs) {
        if (npos - 2 < c->nargs)
            fprintf(stderr, "kvdb: %s: missing %s\n", c->name, c->args);
        else
            fprintf(stderr, "kvdb: %s: too many arguments (takes %s)\n", c->name,
                    c->nargs ? c->args : "none");
        fprintf(stderr, "usage: kvdb [OPTIONS] FILE %s%s%s\n", c->name, *c->args ? " " : "", c->args);
        fprintf(stderr, "Try 'kvdb %s --help' for more information.\n", c->name);
        free(pos);
        return EX_USAGE;
    }
    ex = check_opts(c, &op);
    if (ex != EX_OK) {
        free(pos);
        return ex;
    }

    setvbuf(stdout, NULL, _IOFBF, 1 << 20);
    ex = run(file, c, pos + 2, &op);
    free(pos);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "kvdb: cannot write to standard output\n");
        if (ex == EX_OK)
            ex = EX_IO;
    }
    return ex;
}
