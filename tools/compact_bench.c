/*
 * tools/compact_bench.c -- what compaction costs and gives (`make bench-compact`;
 * not a test).
 *
 *   kvdb-compact-bench [-n N[,N...]] [-d DIR] [--help]
 *
 * For every N (default 1M and 10M; 16-byte keys, 100-byte values, KVDB_SYNC_OFF
 * so fsync is excluded) on a fresh database in DIR, removed afterwards:
 *   1. load N keys in random order (transactions of 1000 puts), then overwrite
 *      every key twice more in random order: two thirds of the file is dead;
 *   2. a full ordered scan, twice (the first sorts the log);
 *   3. kvdb_compact: wall time, MB/s of live data (key + value + record
 *      header), file size after it against the raw key + value bytes;
 *   4. the same two scans on the compacted file (now in key order);
 *   5. reopen with automatic compaction on (defaults: 50% dead, 64 MiB) and
 *      overwrite random keys with auto-commit kvdb_put, each put timed, until
 *      an automatic compaction has completed: the longest put and p99.9 while
 *      it ran, the puts over 2 ms, and how long the swap held writers back
 *      (kvdb_stat compact_pause_ns), with and without its file syncs.  A
 *      clock-only loop run just before shows how long the machine itself
 *      stalls the process (a virtual CPU the host takes away), alone and
 *      while another thread writes and syncs 3 GiB (the kernel's writeback
 *      and the disk's interrupts at work, as during a compaction), and the
 *      steal time of the automatic compaction's run (CPU time the
 *      hypervisor took from the virtual CPUs; Linux's /proc/stat).
 * Every value read is checked; a mismatch makes the exit status 1.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <pthread.h>

#include "kvdb.h"

#define KLEN 16
#define VLEN 100
#define TXN_PUTS 1000

static char g_path[4096];
static uint64_t g_bad;

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

static void make_key(uint64_t i, unsigned char *k)
{
    uint64_t a = mix64(i), b = mix64(i ^ 0x5555555555555555u);
    memcpy(k, &a, 8);
    memcpy(k + 8, &b, 8);
}

/* the value depends on the key and on the round that wrote it */
static void make_val(const unsigned char *k, unsigned round, unsigned char *v)
{
    uint64_t s;
    int i;
    memcpy(&s, k, 8);
    s ^= (uint64_t)round * 0x9e3779b97f4a7c15u;
    for (i = 0; i < VLEN; i += 8) {
        uint64_t x = mix64(s + (uint64_t)i);
        memcpy(v + i, &x, VLEN - i < 8 ? (size_t)(VLEN - i) : 8);
    }
    v[0] = (unsigned char)round;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "kvdb-compact-bench: %s: %s (%s)\n", what, kvdb_strerror(rc), kvdb_errmsg());
    exit(2);
}

static void cleanup(void)
{
    char p[4200];
    unlink(g_path);
    snprintf(p, sizeof p, "%s.idx", g_path);
    unlink(p);
    snprintf(p, sizeof p, "%s.compact", g_path);
    unlink(p);
}

static kvdb *open_db(int auto_compact)
{
    kvdb_options o;
    kvdb *db = NULL;
    int rc;
    kvdb_options_init(&o);
    o.flags = KVDB_CREATE;
    o.sync = KVDB_SYNC_OFF;
    o.auto_compact = auto_compact;
    rc = kvdb_open(g_path, &o, &db);
    if (rc) die("open", rc);
    return db;
}

static uint64_t gcd(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* A stride coprime to n: i -> (i * stride + salt) mod n is a permutation. */
static uint64_t stride_for(uint64_t n, uint64_t salt)
{
    uint64_t s = (mix64(salt) % n) | 1;
    while (gcd(s, n) != 1) s += 2;
    return s;
}

static void write_round(kvdb *db, uint64_t n, unsigned round)
{
    unsigned char k[KLEN], v[VLEN];
    kvdb_txn *t = NULL;
    uint64_t i, stride = stride_for(n, round + 1);
    int rc;
    for (i = 0; i < n; i++) {
        if (!t && (rc = kvdb_begin(db, 0, &t))) die("begin", rc);
        make_key((i * stride + round) % n, k);
        make_val(k, round, v);
        if ((rc = kvdb_txn_put(t, k, KLEN, v, VLEN))) die("put", rc);
        if ((i + 1) % TXN_PUTS == 0 || i + 1 == n) {
            if ((rc = kvdb_commit(t))) die("commit", rc);
            t = NULL;
        }
    }
}

/* A full ordered scan; every value checked against its round (values of
 * round 2 after the load and two overwrites).  Records per second. */
static double scan(kvdb *db, uint64_t n)
{
    kvdb_txn *t;
    kvdb_iter *it;
    const void *kp, *vp;
    size_t kn, vn;
    uint64_t t0 = now_ns(), got = 0;
    unsigned char want[VLEN];
    int rc;
    if ((rc = kvdb_begin(db, KVDB_TXN_RDONLY, &t))) die("begin", rc);
    if ((rc = kvdb_iter_prefix(t, NULL, 0, 0, &it))) die("iter", rc);
    while ((rc = kvdb_iter_next(it, &kp, &kn, &vp, &vn)) == KVDB_OK) {
        got++;
        if (kn != KLEN || vn != VLEN) { g_bad++; continue; }
        make_val((const unsigned char *)kp, ((const unsigned char *)vp)[0], want);
        if (((const unsigned char *)vp)[0] != 2 || memcmp(vp, want, VLEN) != 0) g_bad++;
    }
    if (rc != KVDB_DONE) die("iter_next", rc);
    if (got != n) {
        fprintf(stderr, "scan saw %llu keys of %llu\n", (unsigned long long)got, (unsigned long long)n);
        g_bad++;
    }
    kvdb_iter_close(it);
    kvdb_commit(t);
    return (double)n / ((double)(now_ns() - t0) / 1e9);
}

/* The machine's own stalls: a loop that only reads the clock, for secs
 * seconds or, with secs 0, until *stop is set.  Gaps over 1 and 2 ms. */
typedef struct gaps {
    uint64_t over1, over2, max, ns;
} gaps;

static gaps clock_loop(double secs, volatile int *stop)
{
    gaps g = { 0, 0, 0, 0 };
    uint64_t g0 = now_ns(), gp = g0, gt;
    do {
        gt = now_ns();
        if (gt - gp > 1000000u) g.over1++;
        if (gt - gp > 2000000u) g.over2++;
        if (gt - gp > g.max) g.max = gt - gp;
        gp = gt;
    } while (secs ? gt - g0 < (uint64_t)(secs * 1e9) : !*stop);
    g.ns = gt - g0;
    return g;
}

/* Write 3 GiB to a file in the bench's directory and fdatasync it, as a
 * compaction does: the disk and the kernel's writeback busy. */
static volatile int g_wdone;
static void *write_load(void *arg)
{
    char path[4200];
    static char buf[1 << 20];
    int fd, i;
    (void)arg;
    snprintf(path, sizeof path, "%s.load", g_path);
    memset(buf, 'w', sizeof buf);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        for (i = 0; i < 3072; i++)
            if (pwrite(fd, buf, sizeof buf, (off_t)i << 20) != (ssize_t)sizeof buf) break;
        fdatasync(fd);
        close(fd);
        unlink(path);
    }
    g_wdone = 1;
    return NULL;
}

/* CPU time the hypervisor took from this machine's virtual CPUs (steal,
 * /proc/stat, all CPUs), in ms; -1 where there is no such file. */
static double steal_ms(void)
{
    unsigned long long f[8];
    long hz = sysconf(_SC_CLK_TCK);
    FILE *fp = fopen("/proc/stat", "r");
    int n;
    if (!fp) return -1;
    n = fscanf(fp, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7]);
    fclose(fp);
    return n == 8 && hz > 0 ? (double)f[7] * 1000.0 / (double)hz : -1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void run(uint64_t n, const char *dir)
{
    struct kvdb_stat a, b;
    kvdb *db;
    double s1, s2, s3, s4, secs, raw = (double)n * (KLEN + VLEN);
    uint64_t t0;
    int rc;
    snprintf(g_path, sizeof g_path, "%s/kvdb-compact-bench-%ld.db", dir, (long)getpid());
    cleanup();
    db = open_db(0);
    write_round(db, n, 0);
    write_round(db, n, 1);
    write_round(db, n, 2);
    if ((rc = kvdb_sync(db))) die("sync", rc);
    s1 = scan(db, n);
    s2 = scan(db, n);
    kvdb_stat(db, &a);
    t0 = now_ns();
    if ((rc = kvdb_compact(db))) die("compact", rc);
    secs = (double)(now_ns() - t0) / 1e9;
    kvdb_stat(db, &b);
    s3 = scan(db, n);
    s4 = scan(db, n);
    printf("\n%llu keys, %d-byte keys, %d-byte values (raw key+value %.1f MiB)\n", (unsigned long long)n, KLEN, VLEN,
           raw / 1048576.0);
    printf("  before: file %.1f MiB, live %.1f MiB, dead %.1f MiB\n", a.file_bytes / 1048576.0,
           a.live_bytes / 1048576.0, a.dead_bytes / 1048576.0);
    printf("  kvdb_compact: %.2f s (swap at %.2f s, then the sidecar), %.0f MB/s of live data\n", secs,
           b.compact_ns / 1e9, (double)a.live_bytes / 1e6 / ((double)b.compact_ns / 1e9));
    printf("  after:  file %.1f MiB = %.3f x raw key+value bytes; reclaimed %.1f MiB\n", b.file_bytes / 1048576.0,
           (double)b.file_bytes / raw, b.compact_reclaimed / 1048576.0);
    printf("  ordered scan before: first %.2f M/s, again %.2f M/s; after: first %.2f M/s, again %.2f M/s\n",
           s1 / 1e6, s2 / 1e6, s3 / 1e6, s4 / 1e6);
    fflush(stdout);
    if ((rc = kvdb_close(db))) die("close", rc);

    /* automatic compaction under a stream of auto-commit puts */
    {
        uint64_t cap = 4 * n + 1000000, np = 0, i, maxw = 0, over2 = 0, start_c;
        uint64_t *lat = (uint64_t *)malloc(cap * sizeof *lat);
        unsigned char k[KLEN], v[VLEN];
        struct kvdb_stat st;
        uint64_t tstart = 0, tend = 0;
        double st0 = -1, st1 = -1;
        int running = 0;
        gaps idle, busy = { 0, 0, 0, 0 };
        pthread_t wt;
        if (!lat) die("malloc", KVDB_ENOMEM);
        /* the machine's own stalls, for comparison: 3 s of clock reads, and
         * clock reads while another thread writes and syncs 3 GiB */
        idle = clock_loop(3, NULL);
        g_wdone = 0;
        if (pthread_create(&wt, NULL, write_load, NULL) == 0) {
            busy = clock_loop(0, &g_wdone);
            pthread_join(wt, NULL);
        }
        db = open_db(1);
        kvdb_stat(db, &st);
        start_c = st.compactions;
        for (i = 0; i < cap; i++) {
            uint64_t w0, w;
            make_key(mix64(i + 77) % n, k);
            make_val(k, 2, v);
            w0 = now_ns();
            if ((rc = kvdb_put(db, k, KLEN, v, VLEN))) die("put", rc);
            w = now_ns() - w0;
            if (i % 64 == 0 || running) {
                kvdb_stat(db, &st);
                if (st.compacting && !running) { running = 1; tstart = now_ns(); st0 = steal_ms(); }
                if (st.compactions > start_c) { /* this put may have waited for the swap */
                    tend = now_ns();
                    st1 = steal_ms();
                    if (running) {
                        lat[np++] = w;
                        if (w > maxw) maxw = w;
                        if (w > 2000000u) over2++;
                    }
                    break;
                }
            }
            if (running) {
                lat[np++] = w;
                if (w > maxw) maxw = w;
                if (w > 2000000u) over2++;
            }
        }
        if (np) {
            qsort(lat, np, sizeof *lat, cmp_u64);
            printf("  automatic compaction: %.2f s, %llu puts meanwhile; put p50 %.1f us, p99.9 %.1f us, max %.2f ms, "
                   "%llu over 2 ms\n", (tend - tstart) / 1e9, (unsigned long long)np, lat[np / 2] / 1e3,
                   lat[np - 1 - np / 1000] / 1e3, maxw / 1e6, (unsigned long long)over2);
            printf("  its swap held writers for %.3f ms, %.3f ms of it in the syncs of the new file and its directory: "
                   "%.3f ms without them\n", st.compact_pause_ns / 1e6, st.compact_pause_sync_ns / 1e6,
                   (st.compact_pause_ns - st.compact_pause_sync_ns) / 1e6);
            if (st0 >= 0 && st1 >= 0)
                printf("  meanwhile the hypervisor took %.0f ms of CPU time from this machine (steal, /proc/stat)\n",
                       st1 - st0);
            printf("  machine: a clock-only loop of 3 s just before stalled %llu times over 1 ms (%llu over 2 ms), "
                   "%.2f ms at most;\n", (unsigned long long)idle.over1, (unsigned long long)idle.over2, idle.max / 1e6);
            printf("           while another thread wrote and synced 3 GiB (%.1f s: %.0f MB/s), %llu times over 2 ms, "
                   "%.2f ms at most\n", busy.ns / 1e9, busy.ns ? 3221.225472 / (busy.ns / 1e9) : 0.0,
                   (unsigned long long)busy.over2, busy.max / 1e6);
        } else {
            printf("  automatic compaction: did not start within %llu puts\n", (unsigned long long)cap);
        }
        free(lat);
        kvdb_close(db);
    }
    cleanup();
}

int main(int argc, char **argv)
{
    uint64_t ns[8];
    int nn = 0, i;
    const char *dir = ".";
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc) {
            char *s = argv[++i], *e;
            while (*s && nn < 8) {
                double x = strtod(s, &e);
                if (e == s) break;
                if (*e == 'M' || *e == 'm') x *= 1e6, e++;
                else if (*e == 'K' || *e == 'k') x *= 1e3, e++;
                ns[nn++] = (uint64_t)x;
                s = *e == ',' ? e + 1 : e;
            }
        } else if (!strcmp(argv[i], "-d") && i + 1 < argc) {
            dir = argv[++i];
        } else {
            fprintf(stderr, "usage: kvdb-compact-bench [-n N[,N...]] (e.g. 1M,10M) [-d DIR]\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (!nn) {
        ns[nn++] = 1000000;
        ns[nn++] = 10000000;
    }
    for (i = 0; i < nn; i++) run(ns[i], dir);
    if (g_bad) fprintf(stderr, "kvdb-compact-bench: %llu wrong values\n", (unsigned long long)g_bad);
    return g_bad ? 1 : 0;
}
