/*
 * tools/bench.c -- kvdb micro-benchmark (`make bench`; not a test).
 *
 *   kvdb-bench [-n N[,N...]] [-d DIR] [-q] [--help]
 *
 * For every N (default 1M and 10M keys of 16 random-looking bytes, values of
 * 100 bytes derived from the key) it measures, on a fresh database file in
 * DIR that is deleted afterwards:
 *   - load: puts of new keys in write transactions of 1000 puts
 *   - gets of random existing keys: kvdb_txn_get in one read transaction
 *     (zero-copy) and kvdb_get (copying); gets of missing keys (kvdb_get)
 *   - heap bytes of the index per key (kvdb_stat index_bytes / keys)
 *   - close and reopen time
 *   - growth from 0 to N keys with auto-commit kvdb_put, each put timed
 *     (p50/p99/p99.9/max), without and with a read snapshot held open for
 *     the whole growth, and the ratio of the mean put costs.  Each growth
 *     runs R times (-r, default 3) with the same keys, and the engine does
 *     the same work at the same put every time; so the slowest put of the
 *     per-put fastest of the R runs is the engine's own worst case, and a
 *     stall that the machine causes (a virtual CPU the host takes away; a
 *     loop that only reads the clock sees them too, see "machine" below)
 *     lands at a random put of one run and drops out.  (The file layer is
 *     POSIX's with a fixed random source, so every run's database has the
 *     same hash seed and builds the same index.)  Each run's own
 *     longest put is printed too.  (Thread CPU time is no way out here:
 *     with steal-time accounting it is charged in lumps, and a put of 5 us
 *     wall time was seen to take 2 ms of it.)
 *   - machine: a loop that reads the clock and nothing else, for 5 s before
 *     the first growth: how often, and for how long at most, the process
 *     did not run at all
 *   - peak RSS (getrusage ru_maxrss)
 * Everything runs with KVDB_SYNC_OFF: fsync is excluded.  Every value read is
 * checked against the expected bytes; any mismatch makes the exit status 1.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/time.h>

#include "kvdb.h"

#define KLEN 16
#define VLEN 100
#define TXN_PUTS 1000
#define MAX_READS 2000000u   /* random gets per measurement (at most N) */
#define VERIFY_SAMPLE 10000u /* gets after reopen / after growth */
#define MAXN 16

static char g_path[4096];    /* the database file, removed on exit */
static uint64_t g_mismatch;  /* wrong values / wrong presence seen */
static uint64_t g_memcap;    /* growth stops when index or RSS passes this */
static unsigned g_replays = 3; /* runs of each growth (-r) */

/* ------------------------------------------------------------ helpers */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* splitmix64's finalizer: a bijection, so distinct counters give distinct keys */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

static void store64(unsigned char *p, uint64_t v)
{
    int i;
    for (i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Key i: 16 random-looking bytes.  Existing keys use i < N; missing keys use
 * i >= 2^62, which no existing key can equal (mix64 is a bijection). */
#define MISS_BASE ((uint64_t)1 << 62)
static void make_key(uint64_t i, unsigned char *k)
{
    uint64_t a = mix64(i);
    store64(k, a);
    store64(k + 8, mix64(a ^ 0x5851f42d4c957f2du));
}

/* The value of a key: its 16 bytes repeated, each copy scrambled differently
 * (the first copy is the key itself, so a value of another key never matches). */
static void make_val(const unsigned char *k, unsigned char *v)
{
    uint64_t a, b, x;
    unsigned char tmp[KLEN];
    int c;
    memcpy(&a, k, 8);
    memcpy(&b, k + 8, 8);
    for (c = 0; c * KLEN < VLEN; c++) {
        size_t len = VLEN - (size_t)c * KLEN < KLEN ? VLEN - (size_t)c * KLEN : KLEN;
        x = (uint64_t)c * 0x9e3779b97f4a7c15u;
        a ^= x;
        b ^= x >> 7;
        memcpy(tmp, &a, 8);
        memcpy(tmp + 8, &b, 8);
        memcpy(v + (size_t)c * KLEN, tmp, len);
    }
}

/* Remove the database and its sidecar. */
static void unlink_db(void)
{
    char idx[4200];
    snprintf(idx, sizeof idx, "%s.idx", g_path);
    unlink(g_path);
    unlink(idx);
}

static void cleanup(void)
{
    if (g_path[0]) {
        unlink_db();
    }
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "kvdb-bench: %s: %s", what, kvdb_strerror(rc));
    if (*kvdb_errmsg())
        fprintf(stderr, " (%s)", kvdb_errmsg());
    fputc('\n', stderr);
    cleanup();
    exit(1);
}

#define CK(what, expr) do { int rc_ = (expr); if (rc_ != KVDB_OK) die(what, rc_); } while (0)

static int g_progress;
static void progress(const char *fmt, unsigned long long n, const char *stage)
{
    if (g_progress) {
        fprintf(stderr, fmt, n, stage);
        fflush(stderr);
    }
}

/* The POSIX file layer with a fixed random source: every fresh database
 * gets the same hash seed, so repeated runs with the same keys build the
 * same index and split, grow and reserve at the same puts. */
static kvdb_vfs g_vfs;
static uint64_t g_rand_ctr;

static int fixed_random(void *ctx, void *buf, size_t n)
{
    unsigned char *p = (unsigned char *)buf;
    (void)ctx;
    while (n) {
        unsigned char b[8];
        size_t c = n < 8 ? n : 8;
        store64(b, mix64(++g_rand_ctr));
        memcpy(p, b, c);
        p += c;
        n -= c;
    }
    return KVDB_OK;
}

static kvdb *open_db(unsigned flags)
{
    kvdb_options o;
    kvdb *db = NULL;
    if (!g_vfs.open) {
        g_vfs = *kvdb_vfs_posix();
        g_vfs.random = fixed_random;
    }
    if (flags & KVDB_CREATE)
        g_rand_ctr = 0;
    kvdb_options_init(&o);
    o.vfs = &g_vfs;
    o.flags = flags;
    o.sync = KVDB_SYNC_OFF;
    CK("kvdb_open", kvdb_open(g_path, &o, &db));
    return db;
}

static kvdb *fresh_db(void)
{
    {
        char idx[4200];
        snprintf(idx, sizeof idx, "%s.idx", g_path);
        unlink(idx);
    }
    if (unlink(g_path) != 0 && errno != ENOENT) {
        perror(g_path);
        exit(1);
    }
    return open_db(KVDB_CREATE);
}

static void close_db(kvdb *db)
{
    CK("kvdb_close", kvdb_close(db));
}

static double peak_rss_mib(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_maxrss / 1024.0;  /* Linux: KiB */
}

/* Half the physical memory if the system says, else 4 GiB. */
static uint64_t default_memcap(void)
{
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psize > 0)
        return (uint64_t)pages * (uint64_t)psize / 2;
#endif
    return (uint64_t)4 << 30;
}

/* The current RSS in bytes (Linux /proc/self/statm), or 0 if unknown. */
static uint64_t cur_rss(void)
{
    unsigned long long size = 0, res = 0;
    long psize = sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/statm", "r");
    int got;
    if (!f)
        return 0;
    got = fscanf(f, "%llu %llu", &size, &res);
    fclose(f);
    return got == 2 && psize > 0 ? res * (uint64_t)psize : 0;
}

/* Has the index (kvdb_stat) or the RSS passed the memory cap? */
static int over_memcap(kvdb *db)
{
    struct kvdb_stat st;
    CK("kvdb_stat", kvdb_stat(db, &st));
    return st.index_bytes > g_memcap || cur_rss() > g_memcap;
}

/* ---------------------------------------------------- latency histogram
 * Exact below 128 ns, then 64 buckets per power of two (~1.6% wide). */
#define HB (128 + 57 * 64)
struct hist {
    uint64_t n, sum, max, max_at;
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

static uint64_t hvalue(int b)   /* middle of bucket b */
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

static void hadd(struct hist *h, uint64_t v, uint64_t at)
{
    h->n++;
    h->sum += v;
    if (v > h->max) {
        h->max = v;
        h->max_at = at;
    }
    h->b[hbucket(v)]++;
}

static uint64_t hpct(const struct hist *h, double q)
{
    uint64_t want = (uint64_t)(q * (double)h->n + 0.999999), seen = 0;
    int b;
    if (want == 0)
        want = 1;
    for (b = 0; b < HB; b++) {
        seen += h->b[b];
        if (seen >= want)
            return hvalue(b) > h->max ? h->max : hvalue(b);
    }
    return h->max;
}

/* ------------------------------------------------------------ results */

struct result {
    uint64_t n;
    double load_ns, sync_ms;
    double get_txn_ns, get_copy_ns, get_miss_ns, harness_ns;
    double index_bpk, file_bpk;
    double close_ms, reopen_ms;
    double grow_mean[2], grow_wall_s[2], grow_rss_mib[2];
    uint64_t p50[2], p99[2], p999[2], max[2], max_at[2];
    uint64_t run_max_lo[2], run_max_hi[2]; /* the runs' own longest puts: best and worst run */
    uint64_t over_1ms[2];    /* puts over 1 ms, all runs */
    uint64_t fast_max[2], fast_max_at[2]; /* slowest of the per-put fastest of the runs */
    uint64_t fast_p999[2];   /* p99.9 of the per-put fastest */
    uint64_t replays[2];     /* runs of each growth */
    double noise_s;          /* the machine probe: seconds it ran, */
    uint64_t noise_gaps, noise_max; /* ...gaps over 1 ms it saw, the longest */
    double scan_first_ms;    /* first full ordered scan (builds the sorted runs) */
    double scan_kps;         /* full ordered scan, keys/s, sorted index built */
    double seek_sps;         /* 100-key range scans from random keys, scans/s */
    double sorted_bpk;       /* heap of the sorted index per key */
    double reopen_sc_ms;     /* reopen with the sidecar */
    double reopen_nosc_ms;   /* reopen with the sidecar deleted (full replay) */
    int sc_loaded;
    double snap_index_bpk;
    uint64_t stopped_at[2];  /* growth stopped at this many keys (memory cap); 0: no */
    double rss_mib;
    uint64_t mismatches;
};

static uint64_t read_ops(uint64_t n)
{
    return n < MAX_READS ? n : MAX_READS;
}

/* Random existing key index for read j. */
static uint64_t pick(uint64_t j, uint64_t n)
{
    return mix64(j ^ 0x2545f4914f6cdd1du) % n;
}

static void check_value(const void *v, size_t vlen, const unsigned char *want)
{
    if (vlen != VLEN || memcmp(v, want, VLEN) != 0)
        g_mismatch++;
}

static void verify_sample(kvdb *db, uint64_t n, uint64_t salt)
{
    unsigned char k[KLEN], want[VLEN], buf[VLEN + 16];
    uint64_t j, m = n < VERIFY_SAMPLE ? n : VERIFY_SAMPLE;
    size_t vl;
    for (j = 0; j < m; j++) {
        int rc;
        make_key(pick(j + salt, n), k);
        make_val(k, want);
        rc = kvdb_get(db, k, KLEN, buf, sizeof buf, &vl);
        if (rc == KVDB_NOTFOUND)
            g_mismatch++;
        else if (rc != KVDB_OK)
            die("kvdb_get (verify)", rc);
        else
            check_value(buf, vl, want);
    }
}

/* Load N keys in transactions, then reads, stat, close, reopen. */
static void bench_load_read(struct result *r)
{
    uint64_t n = r->n, i, j, t0, ops = read_ops(n);
    unsigned char k[KLEN], v[VLEN], buf[VLEN + 16];
    struct kvdb_stat st;
    kvdb_txn *t;
    kvdb *db = fresh_db();
    volatile unsigned sink = 0;

    memset(buf, 0, sizeof buf);

    progress("kvdb-bench: N=%llu: %s\n", (unsigned long long)n, "load in transactions");
    t0 = now_ns();
    for (i = 0; i < n;) {
        uint64_t end = i + TXN_PUTS < n ? i + TXN_PUTS : n;
        CK("kvdb_begin", kvdb_begin(db, 0, &t));
        for (; i < end; i++) {
            make_key(i, k);
            make_val(k, v);
            CK("kvdb_txn_put", kvdb_txn_put(t, k, KLEN, v, VLEN));
        }
        CK("kvdb_commit", kvdb_commit(t));
    }
    r->load_ns = (double)(now_ns() - t0) / (double)n;
    t0 = now_ns();
    CK("kvdb_sync", kvdb_sync(db));
    r->sync_ms = (double)(now_ns() - t0) / 1e6;

    CK("kvdb_stat", kvdb_stat(db, &st));
    if (st.keys != n) {
        fprintf(stderr, "kvdb-bench: after loading %llu keys kvdb_stat says %llu keys\n",
                (unsigned long long)n, (unsigned long long)st.keys);
        g_mismatch++;
    }
    r->index_bpk = st.keys ? (double)st.index_bytes / (double)st.keys : 0;
    r->file_bpk = (double)st.file_bytes / (double)n;

    progress("kvdb-bench: N=%llu: %s\n", (unsigned long long)n, "reads");
    /* the cost of making keys and checking values, without kvdb */
    t0 = now_ns();
    for (j = 0; j < ops; j++) {
        make_key(pick(j, n), k);
        make_val(k, v);
        sink += memcmp(buf, v, VLEN) != 0;
    }
    r->harness_ns = (double)(now_ns() - t0) / (double)ops;

    /* hits, zero-copy, in one read transaction */
    CK("kvdb_begin(RDONLY)", kvdb_begin(db, KVDB_TXN_RDONLY, &t));
    t0 = now_ns();
    for (j = 0; j < ops; j++) {
        const void *val;
        size_t vl;
        int rc;
        make_key(pick(j, n), k);
        rc = kvdb_txn_get(t, k, KLEN, &val, &vl);
        if (rc == KVDB_NOTFOUND) {
            g_mismatch++;
            continue;
        }
        if (rc != KVDB_OK)
            die("kvdb_txn_get", rc);
        make_val(k, v);
        check_value(val, vl, v);
    }
    r->get_txn_ns = (double)(now_ns() - t0) / (double)ops;
    kvdb_abort(t);

    /* hits, copying */
    t0 = now_ns();
    for (j = 0; j < ops; j++) {
        size_t vl;
        int rc;
        make_key(pick(j + ops, n), k);
        rc = kvdb_get(db, k, KLEN, buf, sizeof buf, &vl);
        if (rc == KVDB_NOTFOUND) {
            g_mismatch++;
            continue;
        }
        if (rc != KVDB_OK)
            die("kvdb_get", rc);
        make_val(k, v);
        check_value(buf, vl, v);
    }
    r->get_copy_ns = (double)(now_ns() - t0) / (double)ops;

    /* misses */
    t0 = now_ns();
    for (j = 0; j < ops; j++) {
        size_t vl;
        int rc;
        make_key(MISS_BASE + j, k);
        rc = kvdb_get(db, k, KLEN, buf, sizeof buf, &vl);
        if (rc == KVDB_OK)
            g_mismatch++;
        else if (rc != KVDB_NOTFOUND)
            die("kvdb_get (miss)", rc);
    }
    r->get_miss_ns = (double)(now_ns() - t0) / (double)ops;
    (void)sink;

    /* ordered scans */
    progress("kvdb-bench: N=%llu: %s\n", (unsigned long long)n, "ordered scans");
    {
        kvdb_iter *it;
        const void *kp, *vp;
        size_t kn, vn;
        uint64_t cnt, pass, scans = n / 100 < 100000 ? n / 100 : 100000;
        unsigned char prev[KLEN];
        CK("kvdb_begin(RDONLY)", kvdb_begin(db, KVDB_TXN_RDONLY, &t));
        for (pass = 0; pass < 2; pass++) { /* the first pass builds the sorted runs */
            int rc;
            cnt = 0;
            t0 = now_ns();
            CK("kvdb_iter_range", kvdb_iter_range(t, NULL, 0, NULL, 0, 0, &it));
            while ((rc = kvdb_iter_next(it, &kp, &kn, &vp, &vn)) == KVDB_OK) {
                if (kn != KLEN || (cnt && memcmp(prev, kp, KLEN) >= 0)) g_mismatch++;
                memcpy(prev, kp, KLEN);
                make_val((const unsigned char *)kp, v);
                check_value(vp, vn, v);
                cnt++;
            }
            if (rc != KVDB_DONE) die("kvdb_iter_next", rc);
            kvdb_iter_close(it);
            if (cnt != n) g_mismatch++;
            if (pass == 0) r->scan_first_ms = (double)(now_ns() - t0) / 1e6;
            else r->scan_kps = (double)n / ((double)(now_ns() - t0) / 1e9) / 1e6;
        }
        t0 = now_ns();
        for (j = 0; j < scans; j++) {
            make_key(MISS_BASE + j, k); /* a random key, usually not in the database */
            CK("kvdb_iter_range", kvdb_iter_range(t, k, KLEN, NULL, 0, 0, &it));
            for (cnt = 0; cnt < 100 && kvdb_iter_next(it, &kp, &kn, &vp, &vn) == KVDB_OK; cnt++) {
                make_val((const unsigned char *)kp, v);
                check_value(vp, vn, v);
            }
            kvdb_iter_close(it);
        }
        r->seek_sps = (double)scans / ((double)(now_ns() - t0) / 1e9);
        kvdb_abort(t);
        CK("kvdb_stat", kvdb_stat(db, &st));
        r->sorted_bpk = (double)st.sorted_bytes / (double)n;
    }

    progress("kvdb-bench: N=%llu: %s\n", (unsigned long long)n, "close and reopen");
    t0 = now_ns();
    close_db(db);
    r->close_ms = (double)(now_ns() - t0) / 1e6;
    t0 = now_ns();
    db = open_db(0);
    r->reopen_ms = (double)(now_ns() - t0) / 1e6;
    CK("kvdb_stat", kvdb_stat(db, &st));
    r->reopen_sc_ms = r->reopen_ms;
    r->sc_loaded = (int)st.sidecar_loaded;
    if (st.keys != n || st.torn_bytes != 0) {
        fprintf(stderr, "kvdb-bench: after reopen: %llu keys (want %llu), %llu torn bytes\n",
                (unsigned long long)st.keys, (unsigned long long)n,
                (unsigned long long)st.torn_bytes);
        g_mismatch++;
    }
    verify_sample(db, n, 7777);
    close_db(db);
    {   /* the same reopen with the sidecar deleted: a full replay */
        char idx[4200];
        snprintf(idx, sizeof idx, "%s.idx", g_path);
        unlink(idx);
        t0 = now_ns();
        db = open_db(0);
        r->reopen_nosc_ms = (double)(now_ns() - t0) / 1e6;
        verify_sample(db, n, 8888);
        close_db(db);
    }
    unlink_db();
}

/* Grow from 0 to N keys with auto-commit puts, timing each one, g_replays
 * times with the same keys; with_snap: a read transaction begun on the
 * empty database stays open throughout each run. */
static void bench_grow(struct result *r, int with_snap)
{
    uint64_t n = r->n, i, t0, t1, w0, wall = 0;
    unsigned char k[KLEN], v[VLEN];
    struct hist *h = calloc(1, sizeof *h);
    uint32_t *fast = (uint32_t *)malloc((size_t)n * sizeof *fast); /* per put: fastest run, ns */
    unsigned run;

    if (!h || !fast) {
        fprintf(stderr, "kvdb-bench: out of memory\n");
        cleanup();
        exit(1);
    }
    r->run_max_lo[with_snap] = UINT64_MAX;
    for (run = 0; run < g_replays; run++) {
        kvdb_txn *snap = NULL;
        uint64_t run_max = 0;
        kvdb *db;
        progress("kvdb-bench: N=%llu: %s\n", (unsigned long long)n,
                 with_snap ? "auto-commit growth, snapshot held" : "auto-commit growth");
        db = fresh_db();
        if (with_snap)
            CK("kvdb_begin(RDONLY)", kvdb_begin(db, KVDB_TXN_RDONLY, &snap));
        w0 = now_ns();
        for (i = 0; i < n; i++) {
            uint64_t d;
            int rc;
            make_key(i, k);
            make_val(k, v);
            t0 = now_ns();
            rc = kvdb_put(db, k, KLEN, v, VLEN);
            t1 = now_ns();
            if (rc != KVDB_OK)
                die("kvdb_put", rc);
            d = t1 - t0;
            hadd(h, d, i);
            if (d > run_max) run_max = d;
            if (d > 1000000u) r->over_1ms[with_snap]++;
            if (d > UINT32_MAX) d = UINT32_MAX;
            if (run == 0 || d < fast[i]) fast[i] = (uint32_t)d;
            if (run == 0 && (i & 16383) == 16383 && over_memcap(db)) {
                i++;
                r->stopped_at[with_snap] = i;
                break;
            }
        }
        wall += now_ns() - w0;
        if (run == 0) n = i; /* the keys actually put: the later runs put as many */
        r->grow_rss_mib[with_snap] = (double)cur_rss() / 1048576.0;
        if (run_max < r->run_max_lo[with_snap]) r->run_max_lo[with_snap] = run_max;
        if (run_max > r->run_max_hi[with_snap]) r->run_max_hi[with_snap] = run_max;
        if (snap) {
            struct kvdb_stat st;
            const void *val;
            size_t vl;
            int rc;
            CK("kvdb_stat", kvdb_stat(db, &st));
            r->snap_index_bpk = (double)st.index_bytes / (double)n;
            /* the snapshot was taken on the empty database: it must see nothing */
            make_key(0, k);
            rc = kvdb_txn_get(snap, k, KLEN, &val, &vl);
            if (rc == KVDB_OK) {
                fprintf(stderr, "kvdb-bench: a snapshot of the empty database sees a later put\n");
                g_mismatch++;
            } else if (rc != KVDB_NOTFOUND) {
                die("kvdb_txn_get (snapshot)", rc);
            }
            make_key(n - 1, k);
            if (kvdb_txn_get(snap, k, KLEN, &val, &vl) != KVDB_NOTFOUND)
                g_mismatch++;
            kvdb_abort(snap);
        }
        verify_sample(db, n, (uint64_t)with_snap * 99991u + run);
        close_db(db);
        unlink_db();
    }
    r->replays[with_snap] = g_replays;
    {
        struct hist *hf = calloc(1, sizeof *hf);
        if (!hf) {
            fprintf(stderr, "kvdb-bench: out of memory\n");
            cleanup();
            exit(1);
        }
        for (i = 0; i < n; i++)
            hadd(hf, fast[i], i);
        r->fast_max[with_snap] = hf->max;
        r->fast_max_at[with_snap] = hf->max_at;
        r->fast_p999[with_snap] = hpct(hf, 0.999);
        free(hf);
    }
    r->grow_wall_s[with_snap] = (double)wall / 1e9 / g_replays;
    r->grow_mean[with_snap] = (double)h->sum / (double)h->n;
    r->p50[with_snap] = hpct(h, 0.50);
    r->p99[with_snap] = hpct(h, 0.99);
    r->p999[with_snap] = hpct(h, 0.999);
    r->max[with_snap] = h->max;
    r->max_at[with_snap] = h->max_at;
    free(fast);
    free(h);
}

/* The machine's own stalls: a loop that reads the clock and nothing else,
 * for secs seconds; every gap over 1 ms between two reads is time the
 * process did not run (a descheduled thread or a virtual CPU the host took). */
static void noise_probe(struct result *r, double secs)
{
    uint64_t start = now_ns(), end = start + (uint64_t)(secs * 1e9), prev = start, t;
    r->noise_gaps = r->noise_max = 0;
    for (;;) {
        t = now_ns();
        if (t - prev > 1000000u) r->noise_gaps++;
        if (t - prev > r->noise_max) r->noise_max = t - prev;
        prev = t;
        if (t >= end) break;
    }
    r->noise_s = (double)(t - start) / 1e9;
}

/* ------------------------------------------------------------ output */

static const char *fmt_n(uint64_t n, char *b, size_t cap)
{
    if (n >= 1000000 && n % 1000000 == 0)
        snprintf(b, cap, "%lluM", (unsigned long long)(n / 1000000));
    else if (n >= 1000 && n % 1000 == 0)
        snprintf(b, cap, "%lluk", (unsigned long long)(n / 1000));
    else
        snprintf(b, cap, "%llu", (unsigned long long)n);
    return b;
}

#define LABEL_W 44
#define COL_W 13

static void row_f(const char *label, const struct result *r, int nr, size_t off, int prec)
{
    int c;
    printf("%-*s", LABEL_W, label);
    for (c = 0; c < nr; c++)
        printf("%*.*f", COL_W, prec, *(const double *)(const void *)((const char *)&r[c] + off));
    printf("\n");
}

static void row_u(const char *label, const struct result *r, int nr, size_t off)
{
    int c;
    printf("%-*s", LABEL_W, label);
    for (c = 0; c < nr; c++)
        printf("%*llu", COL_W,
               (unsigned long long)*(const uint64_t *)(const void *)((const char *)&r[c] + off));
    printf("\n");
}

/* a uint64_t field of nanoseconds, printed in microseconds */
static void row_us(const char *label, const struct result *r, int nr, size_t off)
{
    int c;
    printf("%-*s", LABEL_W, label);
    for (c = 0; c < nr; c++)
        printf("%*.1f", COL_W, (double)*(const uint64_t *)(const void *)((const char *)&r[c] + off) / 1e3);
    printf("\n");
}

static void print_table(const struct result *r, int nr, const char *dir, double clock_ns)
{
    char b[32];
    int c, s, stopped = 0;

    printf("kvdb-bench -- kvdb %s, file format %d\n", KVDB_VERSION_STRING, KVDB_FORMAT_VERSION);
    printf("16-byte random-looking keys, 100-byte values; KVDB_SYNC_OFF everywhere (fsync\n"
           "excluded); fresh database per run in %s, deleted afterwards.\n\n", dir);
    printf("%-*s", LABEL_W, "keys (N)");
    for (c = 0; c < nr; c++)
        printf("%*s", COL_W, fmt_n(r[c].n, b, sizeof b));
    printf("\n");
    for (c = 0; c < LABEL_W + nr * COL_W; c++)
        putchar('-');
    printf("\n");

    row_f("put, txns of 1000 puts           ns/put", r, nr, offsetof(struct result, load_ns), 0);
    row_f("kvdb_sync after that load            ms", r, nr, offsetof(struct result, sync_ms), 1);
    row_f("get hit, kvdb_txn_get (zero-copy) ns/op", r, nr, offsetof(struct result, get_txn_ns), 0);
    row_f("get hit, kvdb_get (copying)       ns/op", r, nr, offsetof(struct result, get_copy_ns), 0);
    row_f("get miss, kvdb_get                ns/op", r, nr, offsetof(struct result, get_miss_ns), 0);
    row_f("  (harness: key making + value check ns/op)", r, nr, offsetof(struct result, harness_ns), 0);
    row_f("index heap bytes per key", r, nr, offsetof(struct result, index_bpk), 1);
    row_f("file bytes per key", r, nr, offsetof(struct result, file_bpk), 1);
    row_f("close                                ms", r, nr, offsetof(struct result, close_ms), 1);
    row_f("reopen with the sidecar              ms", r, nr, offsetof(struct result, reopen_sc_ms), 1);
    row_f("reopen, sidecar deleted (replay)     ms", r, nr, offsetof(struct result, reopen_nosc_ms), 1);
    printf("%-*s", LABEL_W, "  (sidecar used at reopen: 1 = yes)");
    for (c = 0; c < nr; c++)
        printf("%*d", COL_W, r[c].sc_loaded);
    printf("\n");
    row_f("first full ordered scan (sorts)      ms", r, nr, offsetof(struct result, scan_first_ms), 1);
    row_f("full ordered scan, sorted     M keys/s", r, nr, offsetof(struct result, scan_kps), 2);
    row_f("100-key range scans from random keys /s", r, nr, offsetof(struct result, seek_sps), 0);
    row_f("sorted index heap bytes per key", r, nr, offsetof(struct result, sorted_bpk), 1);
/* the offset of field[s] of struct result, a uint64_t[2] per growth */
#define GROW_FIELD(field) (offsetof(struct result, field) + (size_t)s * sizeof(uint64_t))
    for (s = 0; s < 2; s++) {
        printf("%s\n", s ? "auto-commit kvdb_put, 0 -> N keys, read snapshot held open:"
                         : "auto-commit kvdb_put, 0 -> N keys, no snapshot:");
        printf("%-*s", LABEL_W, "  mean                            ns/put");
        for (c = 0; c < nr; c++)
            printf("%*.0f", COL_W, r[c].grow_mean[s]);
        printf("\n");
        row_u("  p50                                 ns", r, nr, GROW_FIELD(p50));
        row_u("  p99                                 ns", r, nr, GROW_FIELD(p99));
        row_u("  p99.9                               ns", r, nr, GROW_FIELD(p999));
        row_u("  p99.9, fastest of the runs          ns", r, nr, GROW_FIELD(fast_p999));
        row_us("  longest put, fastest of the runs   us", r, nr, GROW_FIELD(fast_max));
        row_u("  ... at key number", r, nr, GROW_FIELD(fast_max_at));
        row_u("  runs (same keys, same work)", r, nr, GROW_FIELD(replays));
        row_us("  longest put of a run: best run      us", r, nr, GROW_FIELD(run_max_lo));
        row_us("  longest put of a run: worst run     us", r, nr, GROW_FIELD(run_max_hi));
        row_u("  ... at key number", r, nr, GROW_FIELD(max_at));
        row_u("  puts over 1 ms, all runs", r, nr, GROW_FIELD(over_1ms));
        printf("%-*s", LABEL_W, "  wall time of a growth (mean)          s");
        for (c = 0; c < nr; c++)
            printf("%*.2f", COL_W, r[c].grow_wall_s[s]);
        printf("\n");
        printf("%-*s", LABEL_W, "  RSS at the end of the growth        MiB");
        for (c = 0; c < nr; c++)
            printf("%*.1f", COL_W, r[c].grow_rss_mib[s]);
        printf("\n");
        for (c = 0; c < nr && !r[c].stopped_at[s]; c++)
            ;
        if (c < nr) {
            stopped = 1;
            printf("%-*s", LABEL_W, "  STOPPED at memory cap after N keys");
            for (c = 0; c < nr; c++) {
                if (r[c].stopped_at[s])
                    printf("%*llu", COL_W, (unsigned long long)r[c].stopped_at[s]);
                else
                    printf("%*s", COL_W, "-");
            }
            printf("\n");
        }
    }
    row_f("  index heap bytes per key, snapshot held", r, nr, offsetof(struct result, snap_index_bpk), 1);
    printf("%-*s", LABEL_W, "mean put cost, snapshot / no snapshot");
    for (c = 0; c < nr; c++)
        printf("%*.2f", COL_W, r[c].grow_mean[0] > 0 ? r[c].grow_mean[1] / r[c].grow_mean[0] : 0.0);
    printf("\n");
    row_f("peak RSS so far (ru_maxrss)         MiB", r, nr, offsetof(struct result, rss_mib), 1);
    row_u("machine: clock-only loop, gaps > 1 ms", r, nr, offsetof(struct result, noise_gaps));
    row_us("  ... longest gap                     us", r, nr, offsetof(struct result, noise_max));
    row_f("  ... in a loop of                     s", r, nr, offsetof(struct result, noise_s), 1);
    row_u("value mismatches (must be 0)", r, nr, offsetof(struct result, mismatches));
    printf("\nGets: %llu random keys per column at most, key making and value checking\n"
           "included.  Per-put latencies are clock_gettime around each kvdb_put (about\n"
           "%.0f ns of timer cost included); growth percentiles pool all runs.  The\n"
           "engine's own worst put is \"longest put, fastest of the runs\": the\n"
           "runs put the same keys and the engine splits, grows and reserves at the\n"
           "same puts every time, while the machine's stalls (see the clock-only\n"
           "loop) land at random.\n",
           (unsigned long long)MAX_READS, clock_ns);
    if (stopped)
        printf("STOPPED: the growth was cut short when the index (kvdb_stat) or the\n"
               "RSS passed the memory cap of %llu MiB (-m); the numbers of that\n"
               "growth cover the keys put until then.\n",
               (unsigned long long)(g_memcap >> 20));
}

/* ------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kvdb-bench [-n N[,N...]] [-d DIR] [-m MIB] [-r R] [-q] [--help]\n"
            "  -n LIST   key counts, comma-separated, k/M suffixes allowed\n"
            "            (default 1000000,10000000)\n"
            "  -d DIR    directory for the database file (default .); it is deleted\n"
            "            afterwards.  Needs about 3 x N x 150 bytes of free space at\n"
            "            most at a time (one database at a time).\n"
            "  -m MIB    memory cap: a growth run stops early (and says so) when the\n"
            "            index or the RSS passes MIB (default: half of RAM)\n"
            "  -r R      runs of each growth, same keys (default 3): the engine's own\n"
            "            worst put is the slowest of the per-put fastest runs\n"
            "  -q        quick: N = 100000 only\n"
            "  --help    this text\n"
            "Prints one table: put/get ns per op, index bytes per key, reopen time,\n"
            "per-put latency percentiles with and without a read snapshot held, peak\n"
            "RSS.  Runs with KVDB_SYNC_OFF (fsync excluded).  Exit status 1 if any\n"
            "value read back is wrong or kvdb reports an error, 2 on bad usage.\n");
}

static int parse_list(const char *s, uint64_t *ns, int *nn)
{
    *nn = 0;
    while (*s) {
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
        if (v == 0 || v > 4000000000ull || *nn >= MAXN)
            return -1;
        ns[(*nn)++] = v;
        if (*end == ',')
            end++;
        else if (*end)
            return -1;
        s = end;
    }
    return *nn ? 0 : -1;
}

int main(int argc, char **argv)
{
    uint64_t ns[MAXN];
    int nn = 2, i, c;
    const char *dir = ".";
    struct result res[MAXN];
    double clock_ns;
    uint64_t t0;

    ns[0] = 1000000;
    ns[1] = 10000000;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "-q") == 0) {
            ns[0] = 100000;
            nn = 1;
        } else if (strncmp(a, "-n", 2) == 0 || strncmp(a, "-d", 2) == 0
                   || strncmp(a, "-m", 2) == 0 || strncmp(a, "-r", 2) == 0) {
            const char *v = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v) {
                fprintf(stderr, "kvdb-bench: %s needs an argument\n", a);
                usage(stderr);
                return 2;
            }
            if (a[1] == 'd') {
                dir = v;
            } else if (a[1] == 'r') {
                char *end;
                unsigned long rr = strtoul(v, &end, 10);
                if (*v < '0' || *v > '9' || *end || rr == 0 || rr > 100) {
                    fprintf(stderr, "kvdb-bench: bad run count '%s' (1..100)\n", v);
                    usage(stderr);
                    return 2;
                }
                g_replays = (unsigned)rr;
            } else if (a[1] == 'm') {
                char *end;
                unsigned long long mib = strtoull(v, &end, 10);
                if (*v < '0' || *v > '9' || *end || mib == 0) {
                    fprintf(stderr, "kvdb-bench: bad memory cap '%s' (MiB)\n", v);
                    usage(stderr);
                    return 2;
                }
                g_memcap = (uint64_t)mib << 20;
            } else if (parse_list(v, ns, &nn) != 0) {
                fprintf(stderr, "kvdb-bench: bad key count list '%s'\n", v);
                usage(stderr);
                return 2;
            }
        } else {
            fprintf(stderr, "kvdb-bench: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if ((size_t)snprintf(g_path, sizeof g_path, "%s/kvdb-bench-%ld.db", dir, (long)getpid())
        >= sizeof g_path) {
        fprintf(stderr, "kvdb-bench: directory name too long\n");
        return 2;
    }
    g_progress = isatty(2);
    if (!g_memcap)
        g_memcap = default_memcap();

    /* the cost of one clock_gettime pair */
    t0 = now_ns();
    for (i = 0; i < 100000; i++)
        (void)now_ns();
    clock_ns = (double)(now_ns() - t0) / 100000.0;

    memset(res, 0, sizeof res);
    for (c = 0; c < nn; c++) {
        uint64_t before = g_mismatch;
        res[c].n = ns[c];
        bench_load_read(&res[c]);
        noise_probe(&res[c], 5.0);
        bench_grow(&res[c], 0);
        bench_grow(&res[c], 1);
        res[c].rss_mib = peak_rss_mib();
        res[c].mismatches = g_mismatch - before;
    }
    cleanup();
    print_table(res, nn, dir, clock_ns);
    if (g_mismatch) {
        fprintf(stderr, "kvdb-bench: %llu wrong values or wrong presence -- kvdb is broken\n",
                (unsigned long long)g_mismatch);
        return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
