/*
 * tools/kvdb.c -- the kvdb command-line tool.
 *
 *   kvdb FILE COMMAND [ARGS]      (kvdb --help for the whole story)
 *
 * Modeled on sqlite3 / mdb_stat / ldb: one command per invocation, errors on
 * stderr naming the file and the cause, and an exit status a script can test:
 *   0 success, 1 key not found, 2 usage error, 3 corrupt / not a kvdb
 *   database / newer format, 4 I/O, lock or other error.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "kvdb.h"

enum {
    EX_OK = 0,        /* success */
    EX_NOTFOUND = 1,  /* get / del / exists of a missing key */
    EX_USAGE = 2,     /* bad command, option or argument */
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
    "  stat            print statistics, one \"name: value\" per line\n"
    "  help [COMMAND]  print this text or the help of COMMAND\n"
    "\n"
    "options (before FILE or after the command):\n"
    "  -r, --raw       get: print the value's bytes as they are, no newline\n"
    "  --sync=MODE     put/del: full (default; durable when kvdb returns),\n"
    "                  normal (survives a crash of the process, not of the OS),\n"
    "                  off (no sync at all)\n"
    "  -h, --help      print help and exit\n"
    "  -V, --version   print the version and the file format version\n"
    "  --              end of options (for keys or values that start with '-')\n"
    "\n"
    "KEY and VALUE escapes: \\xNN (hex byte), \\\\ (backslash), \\n, \\t, \\r, \\0.\n"
    "Output escapes bytes outside printable ASCII as \\xNN and a backslash as \\\\\n"
    "(so what get prints can be given back to put); --raw turns this off.\n"
    "Keys are 1..65535 bytes, values 0..1 GiB; an empty value is not a missing one.\n"
    "\n"
    "get, exists and stat open FILE read-only (several may run at once, but not\n"
    "while another process has FILE open for writing) and never create it.\n"
    "put and del open it for writing and create it if it is missing.\n"
    "\n"
    "exit status:\n"
    "  0  success\n"
    "  1  not found: get, del or exists of a key that is not there\n"
    "  2  usage error: bad command, option or argument\n"
    "  3  FILE is corrupt, is not a kvdb database, or has a newer format version\n"
    "     (FILE is left unchanged)\n"
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
    "  kvdb --sync=off my.db del hello\n"
    "  kvdb my.db stat\n";

struct cmd {
    const char *name;
    int nargs;          /* exact number of arguments after the command */
    int writes;         /* opens FILE for writing (with KVDB_CREATE) */
    const char *args;
    const char *help;
};

static const struct cmd cmds[] = {
    { "put", 2, 1, "KEY VALUE",
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
    { "get", 1, 0, "KEY",
      "Print the value of KEY followed by a newline, with bytes outside\n"
      "printable ASCII written as \\xNN and a backslash as \\\\.  With --raw (-r)\n"
      "print the bytes exactly, without a newline.  Exit status 1 if KEY is\n"
      "not there.  FILE is opened read-only.\n"
      "\n"
      "examples:\n"
      "  kvdb my.db get hello\n"
      "  kvdb my.db get --raw photo > photo.jpg\n" },
    { "del", 1, 1, "KEY",
      "Delete KEY.  Exit status 1 (and nothing is written) if KEY is not there.\n"
      "\n"
      "examples:\n"
      "  kvdb my.db del hello\n"
      "  kvdb my.db del -- -leading-dash\n" },
    { "exists", 1, 0, "KEY",
      "Exit status 0 if KEY is present, 1 if it is not.  Prints nothing.\n"
      "FILE is opened read-only.\n"
      "\n"
      "example:\n"
      "  if kvdb my.db exists hello; then echo yes; fi\n" },
    { "stat", 0, 0, "",
      "Print statistics of FILE, one \"name: value\" per line:\n"
      "  keys            live keys\n"
      "  file_bytes      bytes of log, header included\n"
      "  live_bytes      bytes of records that hold live keys\n"
      "  dead_bytes      overwritten or deleted records, tombstones, commit marks\n"
      "  index_bytes     heap bytes of the in-memory index\n"
      "  format_version  version of the file format\n"
      "  torn_bytes      bytes of a torn tail found at open (not cut: read-only)\n"
      "  recovered_txns  transactions replayed at open (after the sidecar)\n"
      "  sidecar         what open found in FILE.idx: loaded, no sidecar, ...\n"
      "  sorted_bytes    heap bytes of the sorted index (0 until a scan)\n"
      "  commits         commits written by this handle (0: read-only)\n"
      "  db_id           the database's random identity\n"
      "FILE is opened read-only.\n"
      "\n"
      "example:\n"
      "  kvdb my.db stat | grep '^keys:'\n" },
    { "help", -1, 0, "[COMMAND]",
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
    return exit_code(rc);
}

static int report_key(const char *file, const char *msg, const unsigned char *k, size_t kl)
{
    fprintf(stderr, "kvdb: %s: %s: ", file, msg);
    put_escaped(stderr, k, kl);
    fputc('\n', stderr);
    return EX_NOTFOUND;
}

/* --------------------------------------------------------------- stdin */

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

/* ---------------------------------------------------------------- main */

struct opts {
    int sync;       /* -1: not given */
    int raw;
    int help;
    int version;
};

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int run(const char *file, const struct cmd *c, char **args, const struct opts *op)
{
    unsigned char *key = NULL, *val = NULL;
    size_t klen = 0, vlen = 0;
    kvdb_options o;
    kvdb *db = NULL;
    int rc, ex = EX_OK;

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

    kvdb_options_init(&o);
    if (c->writes) {
        o.flags = KVDB_CREATE;
        o.sync = op->sync >= 0 ? op->sync : KVDB_SYNC_FULL;
    } else {
        o.flags = KVDB_RDONLY;
    }
    rc = kvdb_open(file, &o, &db);
    if (rc != KVDB_OK) {
        int missing = rc == KVDB_NOTFOUND || (!c->writes && !file_exists(file) && errno == ENOENT);
        if (c->writes && rc == KVDB_NOTFOUND) {
            fprintf(stderr, "kvdb: %s: cannot create the database (does its directory exist?)\n", file);
            ex = EX_IO;
        } else if (missing) {
            fprintf(stderr, "kvdb: %s: no such database (put creates one)\n", file);
            ex = EX_IO;
        } else {
            ex = report(file, rc, NULL);
        }
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
    } else if (strcmp(c->name, "stat") == 0) {
        struct kvdb_stat s;
        memset(&s, 0, sizeof s);
        rc = kvdb_stat(db, &s);
        if (rc != KVDB_OK) {
            ex = report(file, rc, "stat");
        } else {
            printf("keys: %llu\n", (unsigned long long)s.keys);
            printf("file_bytes: %llu\n", (unsigned long long)s.file_bytes);
            printf("live_bytes: %llu\n", (unsigned long long)s.live_bytes);
            printf("dead_bytes: %llu\n", (unsigned long long)s.dead_bytes);
            printf("index_bytes: %llu\n", (unsigned long long)s.index_bytes);
            printf("format_version: %lu\n", (unsigned long)s.format_version);
            printf("torn_bytes: %llu\n", (unsigned long long)s.torn_bytes);
            printf("recovered_txns: %llu\n", (unsigned long long)s.recovered_txns);
            printf("sidecar: %s\n", s.sidecar);
            printf("sorted_bytes: %llu\n", (unsigned long long)s.sorted_bytes);
            printf("commits: %llu\n", (unsigned long long)s.commits);
            printf("db_id: %016llx%016llx\n", (unsigned long long)s.db_id[0],
                   (unsigned long long)s.db_id[1]);
        }
    }

    rc = kvdb_close(db);
    if (rc != KVDB_OK && ex == EX_OK)
        ex = report(file, rc, "close");
    free(key);
    free(val);
    return ex;
}

int main(int argc, char **argv)
{
    struct opts op = { -1, 0, 0, 0 };
    char **pos;
    int npos = 0, i, dashdash = 0, ex;
    const struct cmd *c;
    const char *file;

    pos = malloc(sizeof *pos * (size_t)(argc + 1));
    if (!pos) {
        fprintf(stderr, "kvdb: out of memory\n");
        return EX_IO;
    }
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *mode = NULL;
        if (dashdash || a[0] != '-' || a[1] == 0) {
            pos[npos++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            dashdash = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            op.help = 1;
        } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            op.version = 1;
        } else if (strcmp(a, "-r") == 0 || strcmp(a, "--raw") == 0) {
            op.raw = 1;
        } else if (strncmp(a, "--sync=", 7) == 0) {
            mode = a + 7;
        } else if (strcmp(a, "--sync") == 0) {
            if (i + 1 >= argc) {
                free(pos);
                return usage_error("%s needs a mode: full, normal or off", a);
            }
            mode = argv[++i];
        } else {
            ex = usage_error("unknown option '%s' (put -- before a key or value that starts with '-')", a);
            free(pos);
            return ex;
        }
        if (mode) {
            if (strcmp(mode, "full") == 0) {
                op.sync = KVDB_SYNC_FULL;
            } else if (strcmp(mode, "normal") == 0) {
                op.sync = KVDB_SYNC_NORMAL;
            } else if (strcmp(mode, "off") == 0) {
                op.sync = KVDB_SYNC_OFF;
            } else {
                ex = usage_error("bad --sync mode '%s' (full, normal or off)", mode);
                free(pos);
                return ex;
            }
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
            fputs(help_text, stdout);
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
        free(pos);
        return usage_error("%s: missing COMMAND (put, get, del, exists, stat)", file);
    }
    c = find_cmd(pos[1]);
    if (!c) {
        ex = usage_error("unknown command '%s' (put, get, del, exists, stat, help)", pos[1]);
        free(pos);
        return ex;
    }
    if (strcmp(c->name, "help") == 0) {
        const struct cmd *hc = npos >= 3 ? find_cmd(pos[2]) : NULL;
        if (npos >= 3 && !hc) {
            ex = usage_error("no help for unknown command '%s'", pos[2]);
        } else {
            if (hc && hc != c)
                print_cmd_help(hc);
            else
                fputs(help_text, stdout);
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
    if (op.raw && strcmp(c->name, "get") != 0) {
        ex = usage_error("--raw applies to get only, not to '%s'", c->name);
        free(pos);
        return ex;
    }

    ex = run(file, c, pos + 2, &op);
    free(pos);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "kvdb: cannot write to standard output\n");
        if (ex == EX_OK)
            ex = EX_IO;
    }
    return ex;
}
