/*
 * tools/kvbench.c -- kvdb side by side with the engines users would pick
 * instead (`make kvbench`, `make bench`; not a test).
 *
 *   kvbench [-n N] [--engines LIST] [--workloads LIST] [-d DIR] [--ref ENGINE]
 *           [--key-size K] [--value-size V] [--reads R] [--sync-n S]
 *           [--csv FILE] [--chart FILE] [--timeout SEC] [--list] [--help]
 *
 * Every engine runs in a child process of its own (fork), one workload after
 * the other on a database in DIR/kvbench-PID/ENGINE (deleted afterwards); the
 * child sends each result to the parent through a pipe, and its own peak RSS
 * (getrusage) at the end.  Every read checks the value byte for byte (and
 * scans check key order and count), so a fast wrong engine cannot win: any
 * mismatch fails that engine's row.
 *
 * Keys are the index i written in decimal, zero-padded to the key size (so key
 * order = index order, as in db_bench); values are --value-size bytes derived
 * from (i, generation), so an overwritten value differs from the old one.
 * The adapters live in tools/kvbench/e_*.c; each is compiled only when its
 * library's header exists (HAVE_LMDB, HAVE_ROCKSDB, ...).
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE 1 /* sync(2) */

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include "kvbench/engine.h"

/* ------------------------------------------------------------ engines */

static const struct kvb_engine *const g_all[] = {
    &kvb_memhash,
    &kvb_append,
    &kvb_kvdb,
#ifdef HAVE_LMDB
    &kvb_lmdb,
#endif
#ifdef HAVE_LEVELDB
    &kvb_leveldb,
#endif
#ifdef HAVE_ROCKSDB
    &kvb_rocksdb,
#endif
#ifdef HAVE_SQLITE
    &kvb_sqlite,
#endif
#ifdef HAVE_TKRZW
    &kvb_tkrzw_hash,
    &kvb_tkrzw_tree,
#endif
#ifdef HAVE_KYOTO
    &kvb_kc_hash,
    &kvb_kc_tree,
#endif
#ifdef HAVE_GDBM
    &kvb_gdbm,
#endif
};
#define NALL ((int)(sizeof g_all / sizeof g_all[0]))

/* Names of the peers that may be missing, and the package that brings them. */
static const char *const g_peers[][2] = {
    {"lmdb", "liblmdb-dev"},         {"leveldb", "libleveldb-dev"},
    {"rocksdb", "librocksdb-dev"},   {"sqlite", "libsqlite3-dev"},
    {"tkrzw-hash", "libtkrzw-dev"},  {"tkrzw-tree", "libtkrzw-dev"},
    {"kc-hash", "libkyotocabinet-dev"}, {"kc-tree", "libkyotocabinet-dev"},
    {"gdbm", "libgdbm-dev"},
};

/* ---------------------------------------------------------- workloads */

enum {
    W_FILLSEQ, W_FILLRANDOM, W_OVERWRITE, W_READRANDOM, W_READMISSING, W_READSEQ,
    W_SEEKSCAN, W_SNAPPUT, W_READWRITE, W_REOPEN, W_DELETERANDOM, W_FILLSYNC,
    W_FILLSYNC4, W_READSEQC, W_SEEKSCANC, W_COUNT
};

static const char *const g_wname[W_COUNT] = {
    "fillseq", "fillrandom", "overwrite", "readrandom", "readmissing", "readseq",
    "seekscan", "snapput", "readwhilewriting", "reopen", "deleterandom", "fillsync",
    "fillsync4", "readseqc", "seekscanc"
};

/* What each workload does, for the table headers and --help. */
static const char *const g_wdesc[W_COUNT] = {
    "fillseq: N puts in ascending key order into an empty database, 1000 per transaction",
    "fillrandom: N puts in random order (a permutation: each key once) into an empty database,\n"
    "  1000 per transaction; then close, on-disk size, reopen (untimed)",
    "overwrite: N puts of existing keys in random order (each key once, new values), 1000 per\n"
    "  transaction -- the same batching as fillrandom",
    "readrandom: R gets of random existing keys (with repeats), one read transaction per 1000\n"
    "  where the engine has them; every value compared byte for byte",
    "readmissing: R gets of absent keys (an existing key with its last byte changed)",
    "readseq: one full scan in key order; ops = records; order, count and values checked",
    "seekscan: R/100 scans of 100 records from a random existing key; ops = scans",
    "snapput: overwrite (N puts, 1000 per transaction) while a read snapshot taken before\n"
    "  stays open; the snapshot must still see the old values afterwards",
    "readwhilewriting: 2 threads do R/2 random gets each while a third thread overwrites in\n"
    "  transactions of 1000; ops = gets of the 2 readers; values may be old or new",
    "reopen: close and reopen a database of N keys; the time of the open (close time in CSV)",
    "deleterandom: delete every key, in random order, 1000 per transaction",
    "fillsync: S single puts into an empty database, each its own transaction, durable\n"
    "  (fsync'd) before it returns",
    "fillsync4: the same from 4 threads at once (S/4 each): group commit shows here",
    "readseqc: readseq after the engine's own compaction of the loaded database (untimed; as\n"
    "  loaded if it has none, see --list)",
    "seekscanc: seekscan after the engine's own compaction, likewise",
};

/* ------------------------------------------------------------ options */

static uint64_t g_n = 1000000, g_reads, g_sync_n = 2000;
static size_t g_ks = 16, g_vs = 100;
static const char *g_dir = ".";
static const char *g_csv = "kvbench.csv";
static const char *g_chart = "kvbench.png";
static const char *g_ref;
static unsigned g_timeout;
static int g_quiet;
static char g_root[4096];      /* DIR/kvbench-PID */

#define BATCH 1000u
#define SCAN_LEN 100u
#define VERIFY_N 1000u
#define RTHREADS 2
#define STHREADS 4
#define MAXE 32

/* ------------------------------------------------------------ helpers */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

static uint64_t rnd(uint64_t seed, uint64_t j)
{
    return mix64(seed ^ mix64(j));
}

void kvb_path(char *buf, size_t cap, const char *dir, const char *file)
{
    if ((size_t)snprintf(buf, cap, "%s/%s", dir, file) >= cap) {
        fprintf(stderr, "kvbench: path too long: %s/%s\n", dir, file);
        exit(2);
    }
}

static char g_lasterr[100];   /* the last adapter error, for the row's note */

void kvb_err(const char *engine, const char *what, const char *msg)
{
    fprintf(stderr, "kvbench: %s: %s: %s\n", engine, what, msg ? msg : "error");
    snprintf(g_lasterr, sizeof g_lasterr, "%s: %s", what, msg ? msg : "error");
}

/* Key i: decimal, zero-padded to g_ks bytes (key order = index order). */
static const char g_digits[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static void make_key(uint64_t i, unsigned char *k)
{
    size_t p = g_ks;
    while (p >= 2) {
        unsigned d = (unsigned)(i % 100);
        i /= 100;
        k[--p] = (unsigned char)g_digits[2 * d + 1];
        k[--p] = (unsigned char)g_digits[2 * d];
    }
    if (p)
        k[0] = (unsigned char)('0' + i % 10);
}

/* An absent key: key i with its last byte made a non-digit. */
static void make_missing(uint64_t i, unsigned char *k)
{
    make_key(i, k);
    k[g_ks - 1] = '.';
}

/* Parse a key back to its index; UINT64_MAX if it is not one of ours. */
static uint64_t key_index(const unsigned char *k, size_t kl)
{
    uint64_t i = 0;
    size_t p;
    if (kl != g_ks)
        return UINT64_MAX;
    for (p = 0; p < kl; p++) {
        if (k[p] < '0' || k[p] > '9')
            return UINT64_MAX;
        i = i * 10 + (uint64_t)(k[p] - '0');
    }
    return i;
}

static void make_val(uint64_t i, uint64_t gen, unsigned char *v)
{
    uint64_t s = mix64(i * 0x9e3779b97f4a7c15u ^ (gen << 48) ^ 0x5851f42d4c957f2du), x;
    size_t p;
    for (p = 0; p < g_vs; p += 8) {
        x = mix64(s + p);
        memcpy(v + p, &x, g_vs - p < 8 ? g_vs - p : 8);
    }
}

static int val_ok(uint64_t i, uint64_t gen, const void *v, size_t vl, unsigned char *scratch)
{
    if (vl != g_vs)
        return 0;
    make_val(i, gen, scratch);
    return memcmp(v, scratch, g_vs) == 0;
}

/* A pseudo-random permutation of [0, N): a 4-round Feistel network on the
 * smallest even number of bits that covers N, with cycle walking. */
static unsigned g_pbits;
static uint64_t perm(uint64_t seed, uint64_t i)
{
    unsigned half = g_pbits / 2, r;
    uint64_t mask = ((uint64_t)1 << half) - 1;
    do {
        uint64_t l = i >> half, rr = i & mask, t;
        for (r = 0; r < 4; r++) {
            t = l ^ (mix64(rr ^ seed ^ ((uint64_t)r << 60)) & mask);
            l = rr;
            rr = t;
        }
        i = (l << half) | rr;
    } while (i >= g_n);
    return i;
}

/* ---------------------------------------------------- latency histogram
 * Exact below 128 ns, then 64 buckets per power of two (~1.6% wide). */
#define HB (128 + 57 * 64)
struct hist {
    uint64_t n, sum, max;
    uint64_t b[HB];
};

static int hbucket(uint64_t v)
{
    int msb = 0;
    uint64_t t = v;
    if (v < 128)
        return (int)v;
    while (t >>= 1)
        msb++;
    return 128 + (msb - 7) * 64 + (int)((v >> (msb - 6)) - 64);
}

static uint64_t hvalue(int b)
{
    int oct, sub;
    uint64_t lo, w;
    if (b < 128)
        return (uint64_t)b;
    oct = (b - 128) / 64 + 7;
    sub = (b - 128) % 64;
    w = (uint64_t)1 << (oct - 6);
    lo = (uint64_t)(64 + sub) * w;
    return lo + w / 2;
}

static void hadd(struct hist *h, uint64_t v)
{
    h->n++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
    h->b[hbucket(v)]++;
}

static void hmerge(struct hist *a, const struct hist *b)
{
    int i;
    a->n += b->n;
    a->sum += b->sum;
    if (b->max > a->max)
        a->max = b->max;
    for (i = 0; i < HB; i++)
        a->b[i] += b->b[i];
}

static double hpct(const struct hist *h, double q)
{
    uint64_t want = (uint64_t)(q * (double)h->n + 0.999999), seen = 0;
    int b;
    if (want == 0)
        want = 1;
    for (b = 0; b < HB; b++) {
        seen += h->b[b];
        if (seen >= want)
            return (double)(hvalue(b) > h->max ? h->max : hvalue(b));
    }
    return (double)h->max;
}

static struct hist *hnew(void)
{
    struct hist *h = calloc(1, sizeof *h);
    if (!h) {
        fprintf(stderr, "kvbench: out of memory\n");
        exit(1);
    }
    return h;
}

/* ------------------------------------------------------------ results */

enum { ST_NONE = 0, ST_OK, ST_NA, ST_FAIL };

struct wres {
    int eng, w, status, has_lat;
    uint64_t ops, mism;
    double secs;
    double p50, p99, p999, max;  /* ns */
    double extra;                /* see g_extra_name */
    uint64_t disk;               /* fillrandom: bytes on disk after it */
    char note[160];
};

static const char *const g_extra_name[W_COUNT] = {
    NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    "snapshot put cost / overwrite put cost", "writer puts/s meanwhile",
    "close ms", NULL, NULL, NULL, "compaction ms", "compaction ms"
};

/* The end-of-run message of a child. */
struct child_end {
    int eng, w;                  /* w = -1 marks it */
    double rss_mib, base_rss_mib;
};

/* ------------------------------------------------- the child: one engine */

struct run {
    const struct kvb_engine *e;
    int eng;
    char dir[4200];
    struct kvb_conf conf;
    void *db, *c;
    int loaded;          /* the database holds keys 0..N-1, all of generation gen */
    uint64_t gen;
    double overwrite_ns; /* per put, for snapput's ratio */
    int out;             /* pipe to the parent */
};

static double peak_rss_mib(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_maxrss / 1024.0;
}

static int rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *de;
        char sub[4600];
        if (!d)
            return -1;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
            rm_rf(sub);
        }
        closedir(d);
        return rmdir(path);
    }
    return unlink(path);
}

/* Bytes allocated on disk under path (st_blocks). */
static uint64_t du(const char *path)
{
    struct stat st;
    uint64_t sum;
    if (lstat(path, &st) != 0)
        return 0;
    sum = (uint64_t)st.st_blocks * 512u;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *de;
        char sub[4600];
        sum = 0;
        if (!d)
            return 0;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
            sum += du(sub);
        }
        closedir(d);
    }
    return sum;
}

static void send_res(struct run *r, struct wres *w)
{
    w->eng = r->eng;
    if (write(r->out, w, sizeof *w) != (ssize_t)sizeof *w) {
        perror("kvbench: pipe");
        _exit(3);
    }
}

static void *ctx_new(struct run *r)
{
    void *c = r->e->ctx_new ? r->e->ctx_new(r->db) : r->db;
    if (!c) {
        fprintf(stderr, "kvbench: %s: cannot make a context\n", r->e->name);
        _exit(3);
    }
    return c;
}

static void ctx_free(struct run *r, void *c)
{
    if (r->e->ctx_free)
        r->e->ctx_free(c);
}

static int db_close(struct run *r)
{
    int rc = 0;
    if (r->db) {
        ctx_free(r, r->c);
        rc = r->e->close(r->db);
        r->db = r->c = NULL;
    }
    return rc;
}

static int db_open(struct run *r)
{
    r->db = r->e->open(&r->conf);
    if (!r->db)
        return -1;
    r->c = ctx_new(r);
    return 0;
}

static int db_fresh(struct run *r, int sync)
{
    db_close(r);
    r->loaded = 0;
    if (rm_rf(r->dir) != 0 || mkdir(r->dir, 0755) != 0) {
        fprintf(stderr, "kvbench: cannot make %s: %s\n", r->dir, strerror(errno));
        return -1;
    }
    r->conf.sync = sync;
    return db_open(r);
}

#define FAILW(wr, msg) do { snprintf((wr)->note, sizeof (wr)->note, "%s%s%.70s", msg, g_lasterr[0] ? ": " : "", \
                                      g_lasterr); (wr)->status = ST_FAIL; return -1; } while (0)

/* Write `count` keys: index = order_seed ? perm(order_seed, j) : j, in
 * transactions of BATCH; del: delete instead (a delete of an absent key is a
 * mismatch).  Each op timed: one clock read per op, a batch's begin charged
 * to its first op and its commit to its last. */
static int do_writes(struct run *r, void *c, uint64_t order_seed, uint64_t count, uint64_t gen,
                     int del, struct hist *h, uint64_t *mism, volatile int *stop, uint64_t *done)
{
    const struct kvb_engine *e = r->e;
    unsigned char k[256], *v = malloc(g_vs + 1);
    uint64_t j, prev = now_ns(), t;
    int rc = 0;
    if (!v)
        return -1;
    for (j = 0; j < count; j++) {
        uint64_t i = order_seed ? perm(order_seed, j) : j;
        if (j % BATCH == 0) {
            if (stop && *stop)
                break;
            if (e->wbegin(c) < 0) {
                rc = -1;
                break;
            }
        }
        make_key(i, k);
        if (del) {
            int d = e->del(c, k, g_ks);
            if (d < 0) {
                rc = -1;
                break;
            }
            if (d == 1)
                (*mism)++;
        } else {
            make_val(i, gen, v);
            if (e->put(c, k, g_ks, v, g_vs) < 0) {
                rc = -1;
                break;
            }
        }
        if ((j % BATCH == BATCH - 1 || j == count - 1) && e->wcommit(c) < 0) {
            rc = -1;
            break;
        }
        if (h) {
            t = now_ns();
            hadd(h, t - prev);
            prev = t;
        }
    }
    if (done)
        *done = j;
    free(v);
    return rc;
}

/* Check VERIFY_N random keys: present with generation gen, or absent. */
static int verify_sample(struct run *r, void *c, uint64_t gen, int absent, uint64_t salt, uint64_t *mism)
{
    const struct kvb_engine *e = r->e;
    unsigned char k[256], *scratch;
    uint64_t j, m = g_n < VERIFY_N ? g_n : VERIFY_N;
    if (!(e->caps & KVB_READS))
        return 0;
    scratch = malloc(g_vs + 1);
    if (!scratch || e->rbegin(c) < 0) {
        free(scratch);
        return -1;
    }
    for (j = 0; j < m; j++) {
        uint64_t i = rnd(salt, j) % g_n;
        const void *v;
        size_t vl;
        int rc;
        make_key(i, k);
        rc = e->get(c, k, g_ks, &v, &vl);
        if (rc < 0) {
            e->rend(c);
            free(scratch);
            return -1;
        }
        if (absent ? rc != 1 : (rc != 0 || !val_ok(i, gen, v, vl, scratch)))
            (*mism)++;
    }
    free(scratch);
    return e->rend(c);
}

static void fill_lat(struct wres *w, const struct hist *h)
{
    w->has_lat = 1;
    w->p50 = hpct(h, 0.50);
    w->p99 = hpct(h, 0.99);
    w->p999 = hpct(h, 0.999);
    w->max = (double)h->max;
}

/* The database with keys 0..N-1 (untimed) unless it is already there. */
static int ensure_loaded(struct run *r)
{
    uint64_t mism = 0;
    if (r->loaded && r->db && r->conf.sync == 0)
        return 0;
    if (!g_quiet)
        fprintf(stderr, "kvbench: %s: loading %llu keys (untimed)\n", r->e->name, (unsigned long long)g_n);
    if (db_fresh(r, 0) < 0 || do_writes(r, r->c, 0x1111, g_n, 0, 0, NULL, &mism, NULL, NULL) < 0)
        return -1;
    r->loaded = 1;
    r->gen = 0;
    return 0;
}

/* ---- the workloads; each fills *w and returns -1 on an engine error */

static int w_fill(struct run *r, struct wres *w, int random)
{
    struct hist *h = hnew();
    uint64_t t0, mism = 0;
    if (db_fresh(r, 0) < 0) {
        free(h);
        FAILW(w, "open failed");
    }
    t0 = now_ns();
    if (do_writes(r, r->c, random ? 0x2222 : 0, g_n, 0, 0, h, &mism, NULL, NULL) < 0) {
        free(h);
        FAILW(w, "engine error");
    }
    w->secs = (double)(now_ns() - t0) / 1e9;
    w->ops = g_n;
    fill_lat(w, h);
    free(h);
    r->loaded = 1;
    r->gen = 0;
    if (random) {
        if (r->e->caps & KVB_PERSIST) {   /* close so that everything is in the files */
            if (db_close(r) < 0)
                FAILW(w, "close failed");
            w->disk = du(r->dir);
            if (db_open(r) < 0)
                FAILW(w, "reopen failed");
        } else {
            w->disk = du(r->dir);
        }
    }
    if (verify_sample(r, r->c, 0, 0, 0x3333, &mism) < 0)
        FAILW(w, "engine error in verification");
    w->mism = mism;
    return 0;
}

static int w_overwrite(struct run *r, struct wres *w, int snap)
{
    struct hist *h;
    uint64_t t0, mism = 0;
    void *sc = NULL;
    unsigned char k[256], *scratch;
    if (ensure_loaded(r) < 0)
        FAILW(w, "load failed");
    scratch = malloc(g_vs + 1);
    h = hnew();
    if (snap) {   /* a snapshot, pinned by one read */
        const void *v;
        size_t vl;
        sc = ctx_new(r);
        make_key(0, k);
        if (r->e->rbegin(sc) < 0 || r->e->get(sc, k, g_ks, &v, &vl) != 0) {
            free(h);
            free(scratch);
            FAILW(w, "snapshot failed");
        }
        if (!val_ok(0, r->gen, v, vl, scratch))
            mism++;
    }
    t0 = now_ns();
    if (do_writes(r, r->c, snap ? 0x4444 : 0x5555, g_n, r->gen + 1, 0, h, &mism, NULL, NULL) < 0) {
        free(h);
        free(scratch);
        if (sc) {
            r->e->rend(sc);
            ctx_free(r, sc);
        }
        FAILW(w, "engine error");
    }
    w->secs = (double)(now_ns() - t0) / 1e9;
    w->ops = g_n;
    fill_lat(w, h);
    free(h);
    if (snap) {   /* the snapshot still sees the old generation */
        uint64_t j, m = g_n < VERIFY_N ? g_n : VERIFY_N;
        for (j = 0; j < m; j++) {
            uint64_t i = rnd(0x6666, j) % g_n;
            const void *v;
            size_t vl;
            int rc;
            make_key(i, k);
            rc = r->e->get(sc, k, g_ks, &v, &vl);
            if (rc < 0) {
                free(scratch);
                FAILW(w, "engine error (snapshot read)");
            }
            if (rc != 0 || !val_ok(i, r->gen, v, vl, scratch))
                mism++;
        }
        r->e->rend(sc);
        ctx_free(r, sc);
        if (r->overwrite_ns > 0)
            w->extra = (w->secs / (double)w->ops) / r->overwrite_ns;
    } else {
        r->overwrite_ns = w->secs / (double)w->ops;
    }
    free(scratch);
    r->gen++;
    if (verify_sample(r, r->c, r->gen, 0, 0x7777, &mism) < 0)
        FAILW(w, "engine error in verification");
    w->mism = mism;
    return 0;
}

/* Random gets on context c; gens a..b accepted (b = a but in readwhilewriting). */
struct reader {
    struct run *r;
    void *c;
    uint64_t count, seed, gen_a, gen_b, mism;
    int missing, err;
    struct hist *h;
};

static void *reader_main(void *arg)
{
    struct reader *rd = arg;
    const struct kvb_engine *e = rd->r->e;
    unsigned char k[256], *scratch = malloc(g_vs + 1);
    uint64_t j, prev = now_ns(), t;
    if (!scratch) {
        rd->err = 1;
        return NULL;
    }
    for (j = 0; j < rd->count; j++) {
        uint64_t i = rnd(rd->seed, j) % g_n;
        const void *v;
        size_t vl;
        int rc;
        if (j % BATCH == 0 && e->rbegin(rd->c) < 0) {
            rd->err = 1;
            break;
        }
        if (rd->missing)
            make_missing(i, k);
        else
            make_key(i, k);
        rc = e->get(rd->c, k, g_ks, &v, &vl);
        if (rc < 0) {
            rd->err = 1;
            e->rend(rd->c);
            break;
        }
        if (rd->missing) {
            if (rc != 1)
                rd->mism++;
        } else if (rc != 0 || (!val_ok(i, rd->gen_a, v, vl, scratch)
                               && (rd->gen_b == rd->gen_a || !val_ok(i, rd->gen_b, v, vl, scratch)))) {
            rd->mism++;
        }
        if ((j % BATCH == BATCH - 1 || j == rd->count - 1) && e->rend(rd->c) < 0) {
            rd->err = 1;
            break;
        }
        t = now_ns();
        hadd(rd->h, t - prev);
        prev = t;
    }
    free(scratch);
    return NULL;
}

static int w_read(struct run *r, struct wres *w, int missing)
{
    struct reader rd;
    uint64_t t0;
    if (ensure_loaded(r) < 0)
        FAILW(w, "load failed");
    memset(&rd, 0, sizeof rd);
    rd.r = r;
    rd.c = r->c;
    rd.count = g_reads;
    rd.seed = missing ? 0x8888 : 0x9999;
    rd.gen_a = rd.gen_b = r->gen;
    rd.missing = missing;
    rd.h = hnew();
    t0 = now_ns();
    reader_main(&rd);
    w->secs = (double)(now_ns() - t0) / 1e9;
    w->ops = g_reads;
    fill_lat(w, rd.h);
    free(rd.h);
    w->mism = rd.mism;
    if (rd.err)
        FAILW(w, "engine error");
    return 0;
}

struct scanck {
    uint64_t next, seen, mism, gen;
    unsigned char *scratch;
};

static int scan_cb(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct scanck *s = arg;
    uint64_t i = key_index(k, kl);
    if (i != s->next || !val_ok(i, s->gen, v, vl, s->scratch))
        s->mism++;
    s->next = i + 1;   /* resynchronize after a mismatch */
    s->seen++;
    return 0;
}

static int w_readseq(struct run *r, struct wres *w)
{
    struct scanck s;
    uint64_t t0;
    if (ensure_loaded(r) < 0)
        FAILW(w, "load failed");
    memset(&s, 0, sizeof s);
    s.gen = r->gen;
    s.scratch = malloc(g_vs + 1);
    t0 = now_ns();
    if (r->e->rbegin(r->c) < 0 || r->e->scan(r->c, NULL, 0, UINT64_MAX, scan_cb, &s) < 0
        || r->e->rend(r->c) < 0) {
        free(s.scratch);
        FAILW(w, "engine error");
    }
    w->secs = (double)(now_ns() - t0) / 1e9;
    w->ops = s.seen;
    w->mism = s.mism + (s.seen > g_n ? s.seen - g_n : g_n - s.seen);
    free(s.scratch);
    return 0;
}

static int w_seekscan(struct run *r, struct wres *w)
{
    struct scanck s;
    struct hist *h;
    uint64_t t0, j, scans = g_reads / SCAN_LEN, prev, t;
    unsigned char k[256];
    if (scans < 100)
        scans = 100;
    if (ensure_loaded(r) < 0)
        FAILW(w, "load failed");
    memset(&s, 0, sizeof s);
    s.gen = r->gen;
    s.scratch = malloc(g_vs + 1);
    h = hnew();
    t0 = prev = now_ns();
    for (j = 0; j < scans; j++) {
        uint64_t i = rnd(0xaaaa, j) % g_n, want = g_n - i < SCAN_LEN ? g_n - i : SCAN_LEN;
        make_key(i, k);
        s.next = i;
        s.seen = 0;
        if ((j % 10 == 0 && r->e->rbegin(r->c) < 0) || r->e->scan(r->c, k, g_ks, SCAN_LEN, scan_cb, &s) < 0
            || ((j % 10 == 9 || j == scans - 1) && r->e->rend(r->c) < 0)) {
            free(s.scratch);
            free(h);
            FAILW(w, "engine error");
        }
        if (s.seen != want)
            s.mism++;
        t = now_ns();
        hadd(h, t - prev);
        prev = t;
    }
    w->secs = (double)(now_ns() - t0) / 1e9;
    w->ops = scans;
    fill_lat(w, h);
    w->mism = s.mism;
    free(h);
    free(s.scratch);
    return 0;
}

/* readseqc / seekscanc: the loaded database compacted by the engine's own
 * means (untimed; its time goes in extra), then scanned. */
static int w_compacted(struct run *r, struct wres *w, int seek)
{
    if (ensure_loaded(r) < 0)
        FAILW(w, "load failed");
    if (r->e->compact) {
        uint64_t t0 = now_ns();
        if (r->e->compact(r->db) < 0)
            FAILW(w, "compaction failed");
        w->extra = (double)(now_ns() - t0) / 1e6;
    } else {
        snprintf(w->note, sizeof w->note, "no compaction: as loaded");
    }
    return seek ? w_seekscan(r, w) : w_readseq(r, w);
}

struct writer {
    struct run *r;
    void *c;
    uint64_t gen, done, mism;
    volatile int stop;
    int err;
    double secs;
};

static void *writer_main(void *arg)
{
    struct writer *wr = arg;
    uint64_t t0 = now_ns();
    wr->err = do_writes(wr->r, wr->c, 0xbbbb, g_n, wr->gen, 0, NULL, &wr->mism, &wr->stop, &wr->done) < 0;
    wr->secs = (double)(now_ns() - t0) / 1e9;
    return NULL;
}

static int w_readwrite(struct run *r, struct wres *w)
{
    struct reader rd[RTHREADS];
    struct writer wr;
    pthread_t rt[RTHREADS], wt;
    struct hist *h;
    uint64_t t0, rest, mism = 0, j;
    int i, err = 0;
    if (ensure_loaded(r) < 0)
        FAILW(w, "load failed");
    memset(&wr, 0, sizeof wr);
    wr.r = r;
    wr.c = ctx_new(r);
    wr.gen = r->gen + 1;
    h = hnew();
    for (i = 0; i < RTHREADS; i++) {
        memset(&rd[i], 0, sizeof rd[i]);
        rd[i].r = r;
        rd[i].c = ctx_new(r);
        rd[i].count = g_reads / RTHREADS;
        rd[i].seed = 0xcccc + (uint64_t)i;
        rd[i].gen_a = r->gen;
        rd[i].gen_b = r->gen + 1;
        rd[i].h = hnew();
    }
    if (pthread_create(&wt, NULL, writer_main, &wr) != 0)
        FAILW(w, "pthread_create");
    t0 = now_ns();
    for (i = 0; i < RTHREADS; i++)
        if (pthread_create(&rt[i], NULL, reader_main, &rd[i]) != 0)
            FAILW(w, "pthread_create");
    for (i = 0; i < RTHREADS; i++)
        pthread_join(rt[i], NULL);
    w->secs = (double)(now_ns() - t0) / 1e9;
    wr.stop = 1;
    pthread_join(wt, NULL);
    for (i = 0; i < RTHREADS; i++) {
        hmerge(h, rd[i].h);
        free(rd[i].h);
        mism += rd[i].mism;
        err |= rd[i].err;
        w->ops += rd[i].count;
        ctx_free(r, rd[i].c);
    }
    ctx_free(r, wr.c);
    fill_lat(w, h);
    free(h);
    w->extra = wr.secs > 0 ? (double)wr.done / wr.secs : 0;
    if (err || wr.err)
        FAILW(w, "engine error");
    /* finish the writer's pass (untimed): every key at generation gen + 1 */
    rest = g_n - wr.done;
    for (j = wr.done; j < g_n; j += BATCH) {
        uint64_t end = j + BATCH < g_n ? j + BATCH : g_n, x;
        unsigned char k[256], *v = malloc(g_vs + 1);
        if (!v || r->e->wbegin(r->c) < 0) {
            free(v);
            FAILW(w, "engine error");
        }
        for (x = j; x < end; x++) {
            uint64_t idx = perm(0xbbbb, x);
            make_key(idx, k);
            make_val(idx, wr.gen, v);
            if (r->e->put(r->c, k, g_ks, v, g_vs) < 0) {
                free(v);
                FAILW(w, "engine error");
            }
        }
        free(v);
        if (r->e->wcommit(r->c) < 0)
            FAILW(w, "engine error");
    }
    r->gen++;
    if (verify_sample(r, r->c, r->gen, 0, 0xdddd, &mism) < 0)
        FAILW(w, "engine error in verification");
    w->mism = mism;
    if (rest)
        snprintf(w->note, sizeof w->note, "writer did %llu of %llu puts while the readers ran",
                 (unsigned long long)wr.done, (unsigned long long)g_n);
    return 0;
}

static int w_reopen(struct run *r, struct wres *w)
{
    uint64_t t0, mism = 0;
    if (ensure_loaded(r) < 0)
        FAILW(w, "load failed");
    t0 = now_ns();
    if (db_close(r) < 0)
        FAILW(w, "close failed");
    w->extra = (double)(now_ns() - t0) / 1e6;
    t0 = now_ns();
    if (db_open(r) < 0)
        FAILW(w, "open failed");
    w->secs = (double)(now_ns() - t0) / 1e9;
    w->ops = 1;
    if (r->e->open_info)
        r->e->open_info(r->db, w->note, sizeof w->note);
    if (verify_sample(r, r->c, r->gen, 0, 0xeeee, &mism) < 0)
        FAILW(w, "engine error in verification");
    w->mism = mism;
    return 0;
}

static int w_delete(struct run *r, struct wres *w)
{
    struct hist *h = hnew();
    uint64_t t0, mism = 0;
    if (ensure_loaded(r) < 0) {
        free(h);
        FAILW(w, "load failed");
    }
    t0 = now_ns();
    if (do_writes(r, r->c, 0xffff, g_n, 0, 1, h, &mism, NULL, NULL) < 0) {
        free(h);
        FAILW(w, "engine error");
    }
    w->secs = (double)(now_ns() - t0) / 1e9;
    w->ops = g_n;
    fill_lat(w, h);
    free(h);
    r->loaded = 0;
    if (verify_sample(r, r->c, 0, 1, 0x1212, &mism) < 0)
        FAILW(w, "engine error in verification");
    w->mism = mism;
    return 0;
}

struct syncer {
    struct run *r;
    void *c;
    uint64_t first, count;
    struct hist *h;
    int err;
};

static void *syncer_main(void *arg)
{
    struct syncer *s = arg;
    const struct kvb_engine *e = s->r->e;
    unsigned char k[256], *v = malloc(g_vs + 1);
    uint64_t j, prev = now_ns(), t;
    if (!v) {
        s->err = 1;
        return NULL;
    }
    for (j = s->first; j < s->first + s->count; j++) {
        uint64_t i = perm(0x1313, j);
        make_key(i, k);
        make_val(i, 0, v);
        if (e->wbegin(s->c) < 0 || e->put(s->c, k, g_ks, v, g_vs) < 0 || e->wcommit(s->c) < 0) {
            s->err = 1;
            break;
        }
        t = now_ns();
        hadd(s->h, t - prev);
        prev = t;
    }
    free(v);
    return NULL;
}

static int w_fillsync(struct run *r, struct wres *w, int threads)
{
    struct syncer s[STHREADS];
    pthread_t th[STHREADS];
    struct hist *h = hnew();
    uint64_t t0, total = g_sync_n < g_n ? g_sync_n : g_n, j, mism = 0;
    unsigned char k[256], *scratch = malloc(g_vs + 1);
    int i, err = 0;
    if (db_fresh(r, 1) < 0) {
        free(h);
        free(scratch);
        FAILW(w, "open failed");
    }
    for (i = 0; i < threads; i++) {
        s[i].r = r;
        s[i].c = threads == 1 ? r->c : ctx_new(r);
        s[i].first = total * (uint64_t)i / (uint64_t)threads;
        s[i].count = total * (uint64_t)(i + 1) / (uint64_t)threads - s[i].first;
        s[i].h = hnew();
        s[i].err = 0;
    }
    t0 = now_ns();
    if (threads == 1) {
        syncer_main(&s[0]);
    } else {
        for (i = 0; i < threads; i++)
            if (pthread_create(&th[i], NULL, syncer_main, &s[i]) != 0)
                FAILW(w, "pthread_create");
        for (i = 0; i < threads; i++)
            pthread_join(th[i], NULL);
    }
    w->secs = (double)(now_ns() - t0) / 1e9;
    w->ops = total;
    for (i = 0; i < threads; i++) {
        hmerge(h, s[i].h);
        free(s[i].h);
        err |= s[i].err;
        if (threads > 1)
            ctx_free(r, s[i].c);
    }
    fill_lat(w, h);
    free(h);
    if (err) {
        free(scratch);
        FAILW(w, "engine error");
    }
    /* every key put is there */
    if (r->e->caps & KVB_READS) {
        if (r->e->rbegin(r->c) < 0) {
            free(scratch);
            FAILW(w, "engine error in verification");
        }
        for (j = 0; j < total; j++) {
            uint64_t idx = perm(0x1313, j);
            const void *v;
            size_t vl;
            int rc;
            make_key(idx, k);
            rc = r->e->get(r->c, k, g_ks, &v, &vl);
            if (rc < 0) {
                free(scratch);
                FAILW(w, "engine error in verification");
            }
            if (rc != 0 || !val_ok(idx, 0, v, vl, scratch))
                mism++;
        }
        r->e->rend(r->c);
    }
    free(scratch);
    w->mism = mism;
    db_close(r);
    r->loaded = 0;
    return 0;
}

/* Why workload wl cannot run on engine e, or NULL. */
static const char *not_applicable(const struct kvb_engine *e, int wl)
{
    unsigned c = e->caps;
    int reads = (c & KVB_READS) != 0;
    switch (wl) {
    case W_READRANDOM:
    case W_READMISSING:
        return reads ? NULL : e->noscan;
    case W_READSEQ:
    case W_SEEKSCAN:
    case W_READSEQC:
    case W_SEEKSCANC:
        return e->scan ? NULL : e->noscan;
    case W_SNAPPUT:
        return c & KVB_SNAPSHOT ? NULL : reads ? "no snapshots" : "no reads";
    case W_READWRITE:
        if (!reads)
            return "no reads";
        return c & KVB_THREADS ? NULL : e->nothreads ? e->nothreads : "not thread-safe";
    case W_REOPEN:
        return c & KVB_PERSIST ? NULL : reads ? "in memory only" : "no index to load";
    case W_FILLSYNC:
        return c & KVB_DURABLE ? NULL : "no file";
    case W_FILLSYNC4:
        if (!(c & KVB_DURABLE))
            return "no file";
        return c & KVB_THREADS ? NULL : e->nothreads ? e->nothreads : "not thread-safe";
    default:
        return NULL;
    }
}

static void child_run(int eng, const int *wl, int nw, int out)
{
    struct run r;
    struct child_end end;
    int i;
    memset(&r, 0, sizeof r);
    r.e = g_all[eng];
    r.eng = eng;
    r.out = out;
    snprintf(r.dir, sizeof r.dir, "%s/%s", g_root, r.e->name);
    r.conf.dir = r.dir;
    r.conf.n = g_n;
    r.conf.ksize = g_ks;
    r.conf.vsize = g_vs;
    memset(&end, 0, sizeof end);
    end.base_rss_mib = peak_rss_mib();
    if (g_timeout)
        alarm(g_timeout);
    for (i = 0; i < nw; i++) {
        struct wres w;
        const char *na = not_applicable(r.e, wl[i]);
        int rc = 0;
        memset(&w, 0, sizeof w);
        w.w = wl[i];
        if (na) {
            w.status = ST_NA;
            snprintf(w.note, sizeof w.note, "n/a (%s)", na);
            send_res(&r, &w);
            continue;
        }
        if (!g_quiet)
            fprintf(stderr, "kvbench: %s: %s ...\n", r.e->name, g_wname[wl[i]]);
        g_lasterr[0] = 0;
        switch (wl[i]) {
        case W_FILLSEQ: rc = w_fill(&r, &w, 0); break;
        case W_FILLRANDOM: rc = w_fill(&r, &w, 1); break;
        case W_OVERWRITE: rc = w_overwrite(&r, &w, 0); break;
        case W_READRANDOM: rc = w_read(&r, &w, 0); break;
        case W_READMISSING: rc = w_read(&r, &w, 1); break;
        case W_READSEQ: rc = w_readseq(&r, &w); break;
        case W_SEEKSCAN: rc = w_seekscan(&r, &w); break;
        case W_SNAPPUT: rc = w_overwrite(&r, &w, 1); break;
        case W_READWRITE: rc = w_readwrite(&r, &w); break;
        case W_REOPEN: rc = w_reopen(&r, &w); break;
        case W_DELETERANDOM: rc = w_delete(&r, &w); break;
        case W_FILLSYNC: rc = w_fillsync(&r, &w, 1); break;
        case W_FILLSYNC4: rc = w_fillsync(&r, &w, STHREADS); break;
        case W_READSEQC: rc = w_compacted(&r, &w, 0); break;
        case W_SEEKSCANC: rc = w_compacted(&r, &w, 1); break;
        default: break;
        }
        if (rc == 0) {
            w.status = w.mism ? ST_FAIL : ST_OK;
            if (w.mism && !w.note[0])
                snprintf(w.note, sizeof w.note, "%llu wrong values/presence", (unsigned long long)w.mism);
        }
        send_res(&r, &w);
        if (rc < 0) {   /* the engine's state is unknown: the next workload starts afresh */
            db_close(&r);
            r.loaded = 0;
        }
    }
    db_close(&r);
    rm_rf(r.dir);
    end.eng = eng;
    end.w = -1;
    end.rss_mib = peak_rss_mib();
    if (write(out, &end, sizeof end) != (ssize_t)sizeof end)
        _exit(3);
    _exit(0);
}

/* --------------------------------------------------- the parent: results */

static struct wres g_res[MAXE][W_COUNT];
static double g_rss[MAXE], g_base_rss[MAXE];
static int g_eng[MAXE], g_ne;     /* engines chosen, in g_all order */
static int g_wl[W_COUNT], g_nw;   /* workloads chosen */
static double g_load0[3], g_load1[3];

static void loadavg(double *l)
{
    FILE *f = fopen("/proc/loadavg", "r");
    l[0] = l[1] = l[2] = -1;
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &l[0], &l[1], &l[2]) != 3)
            l[0] = l[1] = l[2] = -1;
        fclose(f);
    }
}

static const char *fmt_ops(double v, char *b, size_t cap)
{
    if (v >= 9.995e6)
        snprintf(b, cap, "%.1fM", v / 1e6);
    else if (v >= 1e6)
        snprintf(b, cap, "%.2fM", v / 1e6);
    else if (v >= 9.995e3)
        snprintf(b, cap, "%.0fK", v / 1e3);
    else if (v >= 1e3)
        snprintf(b, cap, "%.1fK", v / 1e3);
    else
        snprintf(b, cap, "%.0f", v);
    return b;
}

static const char *fmt_us(double ns, char *b, size_t cap)
{
    double us = ns / 1e3;
    if (us < 10)
        snprintf(b, cap, "%.2f", us);
    else if (us < 1000)
        snprintf(b, cap, "%.1f", us);
    else
        snprintf(b, cap, "%.0f", us);
    return b;
}

static const char *fmt_n(uint64_t n, char *b, size_t cap)
{
    if (n >= 1000000 && n % 1000000 == 0)
        snprintf(b, cap, "%lluM", (unsigned long long)(n / 1000000));
    else if (n >= 1000 && n % 1000 == 0)
        snprintf(b, cap, "%lluK", (unsigned long long)(n / 1000));
    else
        snprintf(b, cap, "%llu", (unsigned long long)n);
    return b;
}

static double ops_s(const struct wres *w)
{
    return w->status == ST_OK && w->secs > 0 ? (double)w->ops / w->secs : 0;
}

/* The figure of a cell in the summary: ops/s, or for reopen the time. */
static const char *cell(const struct wres *w, char *b, size_t cap)
{
    char t[32];
    switch (w->status) {
    case ST_NONE: return "-";
    case ST_NA: return w->note[0] && strstr(w->note, "iterator") ? "n/a(iter)" : "n/a";
    case ST_FAIL: return "FAIL";
    default: break;
    }
    if (w->w == W_REOPEN) {
        if (w->secs >= 1)
            snprintf(b, cap, "%.2f s", w->secs);
        else
            snprintf(b, cap, "%.1f ms", w->secs * 1e3);
        return b;
    }
    snprintf(b, cap, "%s", fmt_ops(ops_s(w), t, sizeof t));
    return b;
}

static int eng_index(const char *name)
{
    int i;
    for (i = 0; i < NALL; i++)
        if (strcmp(g_all[i]->name, name) == 0)
            return i;
    return -1;
}

static void print_header(FILE *f)
{
    char b1[32], b2[32], cpu[256] = "?";
    struct utsname u;
    FILE *ci = fopen("/proc/cpuinfo", "r");
    if (ci) {
        char line[512];
        while (fgets(line, sizeof line, ci)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *p = strchr(line, ':');
                if (p) {
                    snprintf(cpu, sizeof cpu, "%s", p + 2);
                    cpu[strcspn(cpu, "\n")] = 0;
                }
                break;
            }
        }
        fclose(ci);
    }
    if (uname(&u) != 0)
        strcpy(u.release, "?");
    fprintf(f, "kvbench -- N = %s keys of %zu bytes, values of %zu bytes, R = %s reads, S = %llu synced puts\n",
            fmt_n(g_n, b1, sizeof b1), g_ks, g_vs, fmt_n(g_reads, b2, sizeof b2), (unsigned long long)g_sync_n);
    fprintf(f, "machine: %ld CPUs (%s), Linux %s; databases in %s\n", sysconf(_SC_NPROCESSORS_ONLN), cpu,
            u.release, g_dir);
    fprintf(f, "load average (1/5/15 min): %.2f %.2f %.2f at the start, %.2f %.2f %.2f at the end\n",
            g_load0[0], g_load0[1], g_load0[2], g_load1[0], g_load1[1], g_load1[2]);
}

static int any_noiter(void)
{
    int ei;
    for (ei = 0; ei < g_ne; ei++)
        if (!g_all[g_eng[ei]]->scan && strstr(g_all[g_eng[ei]]->noscan, "iterator"))
            return 1;
    return 0;
}

static void print_tables(void)
{
    int wi, ei, ref = -1;
    char b[64], c1[32], c2[32], c3[32], c4[32], c5[32], c6[32];

    print_header(stdout);
    printf("Latency: every op is timed with one clock read per op (so the harness -- key making\n"
           "and value checking -- is included); in batched workloads a transaction's begin is\n"
           "charged to its first op and its commit to its last.  Percentiles in microseconds.\n"
           "Each engine runs in a child process of its own; `kvbench --list` gives the settings.\n");

    for (wi = 0; wi < g_nw; wi++) {
        int w = g_wl[wi];
        printf("\n== %s\n", g_wdesc[w]);
        if (w == W_REOPEN)
            printf("%-12s %12s %12s  %s\n", "engine", "open", "close", "note");
        else if (w == W_READSEQ || w == W_READSEQC)
            printf("%-12s %10s %9s  %s\n", "engine", "records/s", "us/record", "note");
        else
            printf("%-12s %10s %9s %8s %8s %8s %9s  %s\n", "engine", "ops/s", "us/op", "p50", "p99", "p99.9",
                   "max", "note");
        for (ei = 0; ei < g_ne; ei++) {
            const struct wres *r = &g_res[g_eng[ei]][w];
            const char *name = g_all[g_eng[ei]]->name;
            char note[200];
            snprintf(note, sizeof note, "%s", r->note);
            if (r->status == ST_NONE) {
                printf("%-12s %10s  %s\n", name, "-", "not run (engine stopped earlier: error, crash or timeout)");
                continue;
            }
            if (r->status == ST_NA) {
                printf("%-12s %10s  %s\n", name, "", r->note);
                continue;
            }
            if (r->status == ST_FAIL) {
                printf("%-12s %10s  %s%s%s\n", name, "FAIL", r->mism ? "" : "", r->note,
                       r->mism && !strstr(r->note, "wrong") ? " (wrong values)" : "");
                continue;
            }
            if (w == W_SNAPPUT && r->extra > 0)
                snprintf(note, sizeof note, "%.2fx the overwrite put cost", r->extra);
            if (w == W_READWRITE)
                snprintf(note + strlen(note), sizeof note - strlen(note), "%swriter %s puts/s",
                         note[0] ? "; " : "", fmt_ops(r->extra, c1, sizeof c1));
            if ((w == W_READSEQC || w == W_SEEKSCANC) && r->extra > 0)
                snprintf(note + strlen(note), sizeof note - strlen(note), "%scompaction %.0f ms (untimed)",
                         note[0] ? "; " : "", r->extra);
            if (w == W_REOPEN) {
                snprintf(c1, sizeof c1, "%.1f ms", r->secs * 1e3);
                snprintf(c2, sizeof c2, "%.1f ms", r->extra);
                printf("%-12s %12s %12s  %s\n", name, c1, c2, note);
            } else if (!r->has_lat) {
                printf("%-12s %10s %9s  %s\n", name, fmt_ops(ops_s(r), c1, sizeof c1),
                       fmt_us(r->secs * 1e9 / (double)r->ops, c2, sizeof c2), note);
            } else {
                printf("%-12s %10s %9s %8s %8s %8s %9s  %s\n", name, fmt_ops(ops_s(r), c1, sizeof c1),
                       fmt_us(r->secs * 1e9 / (double)r->ops, c2, sizeof c2), fmt_us(r->p50, c3, sizeof c3),
                       fmt_us(r->p99, c4, sizeof c4), fmt_us(r->p999, c5, sizeof c5),
                       fmt_us(r->max, c6, sizeof c6), note);
            }
        }
    }

    /* the summary: workloads down, engines across */
    printf("\n== summary: ops/s (reopen: time; readseq(c): records/s; seekscan(c): scans/s)\n%-18s", "workload");
    for (ei = 0; ei < g_ne; ei++)
        printf("%11s", g_all[g_eng[ei]]->name);
    printf("\n");
    for (wi = 0; wi < g_nw; wi++) {
        printf("%-18s", g_wname[g_wl[wi]]);
        for (ei = 0; ei < g_ne; ei++)
            printf("%11s", cell(&g_res[g_eng[ei]][g_wl[wi]], b, sizeof b));
        printf("\n");
    }
    printf("%-18s", "disk (fillrandom)");
    for (ei = 0; ei < g_ne; ei++) {
        const struct wres *r = &g_res[g_eng[ei]][W_FILLRANDOM];
        if (r->status == ST_OK && r->disk)
            snprintf(b, sizeof b, "%.0fM", (double)r->disk / 1048576.0);
        else
            snprintf(b, sizeof b, "-");
        printf("%11s", b);
    }
    printf("\n%-18s", "peak RSS");
    for (ei = 0; ei < g_ne; ei++) {
        if (g_rss[g_eng[ei]] > 0)
            snprintf(b, sizeof b, "%.0fM", g_rss[g_eng[ei]]);
        else
            snprintf(b, sizeof b, "-");
        printf("%11s", b);
    }
    printf("\n(disk: bytes allocated after fillrandom and a close, in MiB; raw key+value bytes: %.1f MiB.\n"
           " peak RSS: getrusage of the engine's process, in MiB, harness included (about %.0f MiB\n"
           " before the engine starts).%s)\n",
           (double)g_n * (double)(g_ks + g_vs) / 1048576.0, g_ne ? g_base_rss[g_eng[0]] : 0.0,
           any_noiter() ? "  n/a(iter): no ordered iteration yet." : "");

    /* the ratio table */
    if (g_ref)
        ref = eng_index(g_ref);
    if (ref >= 0) {
        int in = 0;
        for (ei = 0; ei < g_ne; ei++)
            in |= g_eng[ei] == ref;
        if (!in)
            ref = -1;
    }
    if (ref < 0)
        return;
    printf("\n== ratio to %s (higher is better everywhere: ops/s over %s's ops/s; reopen: %s's time over\n"
           "   the engine's time)\n%-18s", g_all[ref]->name, g_all[ref]->name, g_all[ref]->name, "workload");
    for (ei = 0; ei < g_ne; ei++)
        printf("%11s", g_all[g_eng[ei]]->name);
    printf("\n");
    for (wi = 0; wi < g_nw; wi++) {
        int w = g_wl[wi];
        const struct wres *rr = &g_res[ref][w];
        printf("%-18s", g_wname[w]);
        for (ei = 0; ei < g_ne; ei++) {
            const struct wres *r = &g_res[g_eng[ei]][w];
            double x = 0;
            if (r->status == ST_OK && rr->status == ST_OK) {
                if (w == W_REOPEN)
                    x = r->secs > 0 ? rr->secs / r->secs : 0;
                else
                    x = ops_s(rr) > 0 ? ops_s(r) / ops_s(rr) : 0;
            }
            if (x > 0)
                snprintf(b, sizeof b, x >= 100 ? "%.0fx" : x >= 10 ? "%.1fx" : "%.2fx", x);
            else
                snprintf(b, sizeof b, "%s", r->status == ST_FAIL ? "FAIL" : "-");
            printf("%11s", b);
        }
        printf("\n");
    }
}

static void csv_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static int write_csv(const char *path)
{
    static const char *const st[] = {"not run", "ok", "n/a", "FAIL"};
    FILE *f = fopen(path, "w");
    int ei, wi;
    if (!f) {
        fprintf(stderr, "kvbench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "engine,workload,status,n,key_size,value_size,ops,seconds,ops_per_s,us_per_op,"
               "p50_us,p99_us,p999_us,max_us,mismatches,extra,extra_meaning,disk_bytes,peak_rss_mib,"
               "loadavg_1m_start,loadavg_1m_end,note\n");
    for (ei = 0; ei < g_ne; ei++) {
        for (wi = 0; wi < g_nw; wi++) {
            const struct wres *r = &g_res[g_eng[ei]][g_wl[wi]];
            fprintf(f, "%s,%s,%s,%llu,%zu,%zu,", g_all[g_eng[ei]]->name, g_wname[g_wl[wi]], st[r->status],
                    (unsigned long long)g_n, g_ks, g_vs);
            if (r->status == ST_OK || (r->status == ST_FAIL && r->ops)) {
                fprintf(f, "%llu,%.6f,%.1f,%.4f,", (unsigned long long)r->ops, r->secs,
                        r->secs > 0 ? (double)r->ops / r->secs : 0.0, r->ops ? r->secs * 1e6 / (double)r->ops : 0.0);
                if (r->has_lat)
                    fprintf(f, "%.3f,%.3f,%.3f,%.3f,", r->p50 / 1e3, r->p99 / 1e3, r->p999 / 1e3, r->max / 1e3);
                else
                    fprintf(f, ",,,,");
            } else {
                fprintf(f, ",,,,,,,,");
            }
            fprintf(f, "%llu,", (unsigned long long)r->mism);
            if (g_extra_name[g_wl[wi]] && r->status == ST_OK)
                fprintf(f, "%.4f,%s,", r->extra, g_extra_name[g_wl[wi]]);
            else
                fprintf(f, ",,");
            if (g_wl[wi] == W_FILLRANDOM && r->status == ST_OK)
                fprintf(f, "%llu,", (unsigned long long)r->disk);
            else
                fprintf(f, ",");
            fprintf(f, "%.1f,%.2f,%.2f,", g_rss[g_eng[ei]], g_load0[0], g_load1[0]);
            csv_str(f, r->note);
            fputc('\n', f);
        }
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------- charts */

/* The workloads that go in the chart (ops/s ones). */
static int chart_w(int w)
{
    return w != W_REOPEN;
}

static const char *const g_colors[] = {
    "#9e9e9e", "#cfcfcf", "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#637939", "#000000",
};
#define NCOLORS ((int)(sizeof g_colors / sizeof g_colors[0]))

static int chart_gnuplot(const char *png, const char *title)
{
    char dat[4300], cmd[4600];
    FILE *f, *g;
    int ei, wi, first = 1, rc;
    if (system("command -v gnuplot >/dev/null 2>&1") != 0)
        return -1;
    snprintf(dat, sizeof dat, "%s/chart.dat", g_root);
    f = fopen(dat, "w");
    if (!f)
        return -1;
    for (wi = 0; wi < g_nw; wi++) {
        if (!chart_w(g_wl[wi]))
            continue;
        fprintf(f, "%s", g_wname[g_wl[wi]]);
        for (ei = 0; ei < g_ne; ei++) {
            double v = ops_s(&g_res[g_eng[ei]][g_wl[wi]]);
            if (v > 0)
                fprintf(f, " %.1f", v);
            else
                fprintf(f, " ?");
        }
        fprintf(f, "\n");
    }
    fclose(f);
    snprintf(cmd, sizeof cmd, "gnuplot");
    g = popen(cmd, "w");
    if (!g)
        return -1;
    fprintf(g, "set terminal pngcairo size 1600,820 font 'sans,11' noenhanced\n"
               "set output '%s'\n"
               "set title \"%s\"\n"
               "set datafile missing '?'\n"
               "set style data histograms\n"
               "set style histogram clustered gap 1\n"
               "set style fill solid 0.95 border rgb '#404040'\n"
               "set boxwidth 0.95\n"
               "set logscale y\n"
               "set format y '10^{%%L}'\n"
               "set format y '%%.0s%%c'\n"
               "set ylabel 'ops/s (log scale; higher is better)'\n"
               "set grid ytics mytics\n"
               "set xtics rotate by -25 nomirror\n"
               "set key outside right top vertical\n"
               "set yrange [100:*]\n"
               "plot ", png, title);
    for (ei = 0; ei < g_ne; ei++) {
        fprintf(g, "%s'%s' using %d%s title '%s' lc rgb '%s'", first ? "" : ", ", dat, ei + 2,
                first ? ":xtic(1)" : "", g_all[g_eng[ei]]->name, g_colors[g_eng[ei] % NCOLORS]);
        first = 0;
    }
    fprintf(g, "\n");
    rc = pclose(g);
    unlink(dat);
    return rc == 0 ? 0 : -1;
}

static int chart_svg(const char *svg, const char *title)
{
    FILE *f = fopen(svg, "w");
    int W = 1600, H = 820, left = 80, right = 170, top = 50, bottom = 130;
    int ei, wi, nwc = 0, k;
    double lo = 1e300, hi = 0, l0, l1, gw, bw;
    if (!f)
        return -1;
    for (wi = 0; wi < g_nw; wi++) {
        if (!chart_w(g_wl[wi]))
            continue;
        nwc++;
        for (ei = 0; ei < g_ne; ei++) {
            double v = ops_s(&g_res[g_eng[ei]][g_wl[wi]]);
            if (v > 0) {
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
        }
    }
    if (hi <= 0 || !nwc) {
        fclose(f);
        return -1;
    }
    l0 = floor(log10(lo));
    l1 = ceil(log10(hi));
    if (l1 <= l0)
        l1 = l0 + 1;
    gw = (double)(W - left - right) / nwc;
    bw = gw * 0.85 / g_ne;
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' font-family='sans-serif' "
               "font-size='12'>\n<rect width='100%%' height='100%%' fill='white'/>\n"
               "<text x='%d' y='28' font-size='16' text-anchor='middle'>%s</text>\n", W, H, W / 2, title);
    for (k = (int)l0; k <= (int)l1; k++) {
        double y = top + (H - top - bottom) * (1 - (k - l0) / (l1 - l0));
        char b[32];
        fprintf(f, "<line x1='%d' x2='%d' y1='%.1f' y2='%.1f' stroke='#ddd'/>\n"
                   "<text x='%d' y='%.1f' text-anchor='end'>%s</text>\n",
                left, W - right, y, y, left - 6, y + 4, fmt_ops(pow(10, k), b, sizeof b));
    }
    fprintf(f, "<text x='20' y='%d' transform='rotate(-90 20 %d)' text-anchor='middle'>ops/s (log scale; "
               "higher is better)</text>\n", (top + H - bottom) / 2, (top + H - bottom) / 2);
    k = 0;
    for (wi = 0; wi < g_nw; wi++) {
        double x0;
        if (!chart_w(g_wl[wi]))
            continue;
        x0 = left + gw * k + gw * 0.075;
        for (ei = 0; ei < g_ne; ei++) {
            double v = ops_s(&g_res[g_eng[ei]][g_wl[wi]]), y;
            if (v <= 0)
                continue;
            y = top + (H - top - bottom) * (1 - (log10(v) - l0) / (l1 - l0));
            fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='%s' stroke='#404040' "
                       "stroke-width='0.5'><title>%s %s: %.0f ops/s</title></rect>\n",
                    x0 + bw * ei, y, bw, (double)(H - bottom) - y, g_colors[g_eng[ei] % NCOLORS],
                    g_all[g_eng[ei]]->name, g_wname[g_wl[wi]], v);
        }
        fprintf(f, "<text x='%.1f' y='%d' text-anchor='middle'>%s</text>\n", left + gw * k + gw / 2,
                H - bottom + 18 + 16 * (k % 2), g_wname[g_wl[wi]]);
        k++;
    }
    for (ei = 0; ei < g_ne; ei++)
        fprintf(f, "<rect x='%d' y='%d' width='14' height='14' fill='%s' stroke='#404040'/>"
                   "<text x='%d' y='%d'>%s</text>\n",
                W - right + 20, top + 22 * ei, g_colors[g_eng[ei] % NCOLORS], W - right + 40, top + 22 * ei + 12,
                g_all[g_eng[ei]]->name);
    fprintf(f, "</svg>\n");
    return fclose(f) == 0 ? 0 : -1;
}

static void write_chart(void)
{
    char title[256], b[32], svg[4200];
    size_t l = strlen(g_chart);
    snprintf(title, sizeof title,
             "kvbench: ops/s per workload, N=%s, %zu-byte keys, %zu-byte values (load avg %.2f)",
             fmt_n(g_n, b, sizeof b), g_ks, g_vs, g_load1[0]);
    if (l > 4 && strcmp(g_chart + l - 4, ".svg") == 0) {
        if (chart_svg(g_chart, title) == 0)
            fprintf(stderr, "kvbench: chart: %s\n", g_chart);
        return;
    }
    if (chart_gnuplot(g_chart, title) == 0) {
        fprintf(stderr, "kvbench: chart: %s\n", g_chart);
        return;
    }
    snprintf(svg, sizeof svg, "%.*s.svg", (int)(l > 4 && g_chart[l - 4] == '.' ? l - 4 : l), g_chart);
    if (chart_svg(svg, title) == 0)
        fprintf(stderr, "kvbench: no gnuplot (or it failed): chart written as SVG: %s\n", svg);
}

/* ------------------------------------------------------------- main */

static void list_engines(void)
{
    int i, j;
    printf("engines built into this kvbench (each runs in a child process of its own):\n");
    for (i = 0; i < NALL; i++) {
        printf("\n%s -- %s\n  %s\n", g_all[i]->name, g_all[i]->title, g_all[i]->settings);
        printf("  ordered scans: %s; snapshots: %s; threads: %s\n",
               g_all[i]->scan ? "yes" : g_all[i]->noscan, g_all[i]->caps & KVB_SNAPSHOT ? "yes" : "no",
               g_all[i]->caps & KVB_THREADS ? "yes" : "no");
    }
    for (j = 0; j < (int)(sizeof g_peers / sizeof g_peers[0]); j++)
        if (eng_index(g_peers[j][0]) < 0)
            printf("\n%s -- not built: its header was missing at build time (apt-get install %s;\n"
                   "  `make bench-deps` installs them all, then `make kvbench` again)\n",
                   g_peers[j][0], g_peers[j][1]);
    printf("\nsync modes: every workload but fillsync/fillsync4 runs each engine in its mode with no\n"
           "fsync per commit (writes reach the OS, not the disk); fillsync/fillsync4 use each engine's\n"
           "durable mode (the commit returns after the data is on stable storage).\n");
}

static void usage(FILE *f)
{
    int w;
    fprintf(f,
            "usage: kvbench [options]\n"
            "  -n N              keys (default 1M; k/M suffixes)\n"
            "  --reads R         gets in readrandom/readmissing/readwhilewriting, R/100 scans in\n"
            "                    seekscan (default min(N, 1M))\n"
            "  --sync-n S        puts in fillsync and fillsync4 (default 2000)\n"
            "  --key-size K      key bytes (default 16; at least the digits of N-1)\n"
            "  --value-size V    value bytes (default 100)\n"
            "  --engines LIST    comma-separated (default: all built; see --list)\n"
            "  --workloads LIST  comma-separated (default: all, in the order below)\n"
            "  -d DIR            where the databases go (default .); DIR/kvbench-PID is removed after\n"
            "  --ref ENGINE      the reference of the ratio table (default lmdb if built)\n"
            "  --csv FILE        CSV output (default kvbench.csv; '-' for none)\n"
            "  --chart FILE      chart: .png through gnuplot (SVG next to it if gnuplot is missing),\n"
            "                    .svg written directly (default kvbench.png; '-' for none)\n"
            "  --timeout SEC     stop an engine's process after SEC seconds (default: no limit)\n"
            "  -q                no progress on stderr\n"
            "  --list            the engines and their settings\n"
            "workloads:\n");
    for (w = 0; w < W_COUNT; w++)
        fprintf(f, "  %s\n", g_wdesc[w]);
    fprintf(f, "Exit status: 0, or 1 if an engine returned a wrong value, failed or crashed; 2 on bad usage.\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    if (*end == 'k' || *end == 'K')
        v *= 1000, end++;
    else if (*end == 'm' || *end == 'M')
        v *= 1000000, end++;
    if (*end)
        return -1;
    *out = v;
    return 0;
}

static int parse_list(const char *s, int engines)
{
    char buf[1024], *tok, *save = NULL;
    snprintf(buf, sizeof buf, "%s", s);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int i, found = -1;
        if (engines) {
            found = eng_index(tok);
            if (found < 0) {
                fprintf(stderr, "kvbench: engine '%s' is not built in (see --list)\n", tok);
                return -1;
            }
            for (i = 0; i < g_ne; i++)
                if (g_eng[i] == found)
                    break;
            if (i == g_ne && g_ne < MAXE)
                g_eng[g_ne++] = found;
        } else {
            for (i = 0; i < W_COUNT; i++)
                if (strcmp(g_wname[i], tok) == 0)
                    found = i;
            if (found < 0) {
                fprintf(stderr, "kvbench: unknown workload '%s' (see --help)\n", tok);
                return -1;
            }
            for (i = 0; i < g_nw; i++)
                if (g_wl[i] == found)
                    break;
            if (i == g_nw)
                g_wl[g_nw++] = found;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    int i, ei, bad = 0;
    uint64_t v, digits;
    int reads_set = 0;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--list") == 0) {
            list_engines();
            return 0;
        } else if (strcmp(a, "-q") == 0) {
            g_quiet = 1;
            takes = 0;
        } else if (!val) {
            fprintf(stderr, "kvbench: unknown argument or missing value: %s\n", a);
            usage(stderr);
            return 2;
        } else if (strcmp(a, "-n") == 0) {
            if (parse_u64(val, &g_n) != 0 || g_n < 1) {
                fprintf(stderr, "kvbench: bad -n '%s'\n", val);
                return 2;
            }
        } else if (strcmp(a, "--reads") == 0) {
            if (parse_u64(val, &g_reads) != 0 || g_reads < 1) {
                fprintf(stderr, "kvbench: bad --reads '%s'\n", val);
                return 2;
            }
            reads_set = 1;
        } else if (strcmp(a, "--sync-n") == 0) {
            if (parse_u64(val, &g_sync_n) != 0 || g_sync_n < STHREADS) {
                fprintf(stderr, "kvbench: bad --sync-n '%s'\n", val);
                return 2;
            }
        } else if (strcmp(a, "--key-size") == 0 || strcmp(a, "--value-size") == 0) {
            if (parse_u64(val, &v) != 0 || v > 200 || (a[2] == 'k' && v < 4)) {
                fprintf(stderr, "kvbench: bad %s '%s' (keys 4..200, values 0..200 bytes)\n", a, val);
                return 2;
            }
            if (a[2] == 'k')
                g_ks = (size_t)v;
            else
                g_vs = (size_t)v;
        } else if (strcmp(a, "--engines") == 0) {
            if (parse_list(val, 1) != 0)
                return 2;
        } else if (strcmp(a, "--workloads") == 0) {
            if (parse_list(val, 0) != 0)
                return 2;
        } else if (strcmp(a, "-d") == 0) {
            g_dir = val;
        } else if (strcmp(a, "--ref") == 0) {
            g_ref = val;
        } else if (strcmp(a, "--csv") == 0) {
            g_csv = val;
        } else if (strcmp(a, "--chart") == 0) {
            g_chart = val;
        } else if (strcmp(a, "--timeout") == 0) {
            if (parse_u64(val, &v) != 0) {
                fprintf(stderr, "kvbench: bad --timeout '%s'\n", val);
                return 2;
            }
            g_timeout = (unsigned)v;
        } else {
            fprintf(stderr, "kvbench: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
        i += takes;
    }
    if (!reads_set)
        g_reads = g_n < 1000000 ? g_n : 1000000;
    for (digits = 1, v = g_n - 1; v >= 10; v /= 10)
        digits++;
    if (digits > g_ks || g_ks > 20 + 180) {
        fprintf(stderr, "kvbench: --key-size %zu is too small for %llu keys\n", g_ks, (unsigned long long)g_n);
        return 2;
    }
    for (g_pbits = 2; ((uint64_t)1 << g_pbits) < g_n; g_pbits += 2)
        ;
    if (!g_ne)
        for (i = 0; i < NALL; i++)
            g_eng[g_ne++] = i;
    if (!g_nw)
        for (i = 0; i < W_COUNT; i++)
            g_wl[g_nw++] = i;
    if (!g_ref && eng_index("lmdb") >= 0)
        g_ref = "lmdb";
    if (!g_ref)
        g_ref = "kvdb";
    if (eng_index(g_ref) < 0) {
        fprintf(stderr, "kvbench: --ref %s is not built in\n", g_ref);
        return 2;
    }

    snprintf(g_root, sizeof g_root, "%s/kvbench-%ld", g_dir, (long)getpid());
    if (mkdir(g_root, 0755) != 0) {
        fprintf(stderr, "kvbench: cannot make %s: %s\n", g_root, strerror(errno));
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    loadavg(g_load0);

    for (ei = 0; ei < g_ne; ei++) {
        int p[2], e = g_eng[ei], status;
        pid_t pid;
        FILE *in;
        char buf[sizeof(struct wres) > sizeof(struct child_end) ? sizeof(struct wres) : sizeof(struct child_end)];
        if (pipe(p) != 0) {
            perror("kvbench: pipe");
            return 1;
        }
        fflush(NULL);
        sync(); /* no dirty pages of the engine before: their writeback would take CPU from this one */
        pid = fork();
        if (pid < 0) {
            perror("kvbench: fork");
            return 1;
        }
        if (pid == 0) {
            close(p[0]);
            child_run(e, g_wl, g_nw, p[1]);
        }
        close(p[1]);
        in = fdopen(p[0], "r");
        for (;;) {
            struct wres w;
            struct child_end ce;
            size_t got = fread(buf, 1, sizeof(struct child_end), in);
            if (got != sizeof(struct child_end))
                break;
            memcpy(&ce, buf, sizeof ce);
            if (ce.w == -1) {
                g_rss[e] = ce.rss_mib;
                g_base_rss[e] = ce.base_rss_mib;
                continue;
            }
            if (fread(buf + sizeof(struct child_end), 1, sizeof(struct wres) - sizeof(struct child_end), in)
                != sizeof(struct wres) - sizeof(struct child_end))
                break;
            memcpy(&w, buf, sizeof w);
            if (w.w >= 0 && w.w < W_COUNT) {
                char b1[32];
                g_res[e][w.w] = w;
                if (!g_quiet) {
                    if (w.status == ST_OK && w.w == W_REOPEN)
                        fprintf(stderr, "kvbench: %s: %s: %.1f ms\n", g_all[e]->name, g_wname[w.w], w.secs * 1e3);
                    else if (w.status == ST_OK)
                        fprintf(stderr, "kvbench: %s: %s: %s ops/s\n", g_all[e]->name, g_wname[w.w],
                                fmt_ops(ops_s(&w), b1, sizeof b1));
                    else if (w.status == ST_FAIL)
                        fprintf(stderr, "kvbench: %s: %s: FAIL: %s\n", g_all[e]->name, g_wname[w.w], w.note);
                }
                if (w.status == ST_FAIL)
                    bad = 1;
            }
        }
        fclose(in);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            int wi;
            const char *why = WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM ? "timed out" : "crashed";
            fprintf(stderr, "kvbench: %s: the engine's process %s (status 0x%x)\n", g_all[e]->name, why, status);
            int first = 1;
            for (wi = 0; wi < g_nw; wi++) {
                struct wres *r = &g_res[e][g_wl[wi]];
                if (r->status == ST_NONE) {
                    r->status = ST_FAIL;
                    r->w = g_wl[wi];
                    snprintf(r->note, sizeof r->note, first ? "the engine's process %s here" : "not run (%s earlier)",
                             why);
                    first = 0;
                }
            }
            bad = 1;
        }
        {   /* anything this child left behind */
            char sub[4400];
            snprintf(sub, sizeof sub, "%s/%s", g_root, g_all[e]->name);
            rm_rf(sub);
        }
    }
    loadavg(g_load1);
    print_tables();
    fflush(stdout);
    if (strcmp(g_csv, "-") != 0 && write_csv(g_csv) == 0 && !g_quiet)
        fprintf(stderr, "kvbench: CSV: %s\n", g_csv);
    if (strcmp(g_chart, "-") != 0)
        write_chart();
    rm_rf(g_root);
    return bad;
}
