/*
 * threads.c -- kvdb shared by several threads (also built with TSan).
 *
 *   snapshot_sums_file / _mem   readers hold snapshots while a writer moves
 *                               money between accounts: every snapshot sums
 *                               right and stays the same for its whole life,
 *                               and its zero-copy pointers stay valid.
 *   committers_full / _off      4 threads auto-commit their own keys (group
 *                               commit with SYNC_FULL): every key ends with
 *                               its last value, also after reopening.
 *   counter                     write transactions doing read-modify-write on
 *                               one counter (waiting and NOWAIT begins): no
 *                               increment is lost.
 *   mixed_get_put_del           readers kvdb_get while writers put and delete:
 *                               only values ever written for that key, never
 *                               older than one already seen.
 *   checkpoint_overtaken        a compaction swaps while a checkpoint writes
 *                               its sidecar: that sidecar does not count for
 *                               the new file.
 *   close_during_auto_swap      close while the background thread's
 *                               compaction swaps: close waits, no KVDB_EBUSY.
 *   reserve_on_thread           the background thread reserves log space
 *                               ahead of the writer, also when its reserve
 *                               fails or a write fails under it: no zeros
 *                               left after close, every commit there.
 *   posix_reserve_vs_write      the POSIX layer's reserve and write take the
 *                               file's size lock (reserve must not cut a
 *                               write landing between its look and extend).
 *   stress_all                  committers, long snapshots checking sums by
 *                               gets and scans both ways, compaction and
 *                               checkpoints, all at once; then check and reopen.
 *
 * Failures inside threads go through th_fail (serialized); the main thread
 * only checks after joining.
 */
#include "../kvdb.c"
#include "testutil.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>

#if defined(__SANITIZE_THREAD__)
#define TH_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TH_TSAN 1
#endif
#endif
#ifndef TH_TSAN
#define TH_TSAN 0
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TH_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TH_ASAN 1
#endif
#endif
#ifndef TH_ASAN
#define TH_ASAN 0
#endif

/* work scale: divide iteration counts by this */
#if TH_TSAN || TH_ASAN
#define TH_DIV 2
#else
#define TH_DIV 1
#endif
#define TH_N(n) ((n) / TH_DIV > 0 ? (n) / TH_DIV : 1)
/* time limit of the concurrent phases, seconds */
#define TH_MAXSEC (TH_TSAN ? 12.0 : 4.0)

static double th_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static pthread_mutex_t th_fail_mu = PTHREAD_MUTEX_INITIALIZER;
static int th_nfail;   /* guarded by th_fail_mu */

/* record a failure from any thread; returns 0 so it can end loops */
static void th_fail(const char *file, int line, const char *fmt, ...)
{
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&th_fail_mu);
    th_nfail++;
    tu_fail(file, line, "%s", buf);
    pthread_mutex_unlock(&th_fail_mu);
}
#define TH_FAIL(...) th_fail(__FILE__, __LINE__, __VA_ARGS__)

static int th_failed(void)
{
    int n;
    pthread_mutex_lock(&th_fail_mu);
    n = th_nfail;
    pthread_mutex_unlock(&th_fail_mu);
    return n;
}

static int th_open(const char *path, unsigned flags, int sync, kvdb **db)
{
    kvdb_options o;
    kvdb_options_init(&o);
    o.flags = flags;
    o.sync = sync;
    *db = NULL;
    return kvdb_open(path, &o, db);
}

static void th_sleep_us(long us)
{
    struct timespec ts;
    ts.tv_sec = us / 1000000;
    ts.tv_nsec = (us % 1000000) * 1000;
    nanosleep(&ts, NULL);
}

static void th_le64(unsigned char *p, uint64_t v)
{
    int i;
    for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t th_ld64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ------------------------------------------------------------------ */
/* 1. snapshots while a writer moves money between accounts */

#define TH_NACC 40
#define TH_START 1000

typedef struct {
    kvdb *db;
    int id, writer_txns, done;   /* done: atomic */
    long min_snaps;              /* writer: go on until the readers took this many snapshots */
    long *snaps;                 /* all readers' snapshots so far (atomic) */
    uint64_t seed;
    /* results (read after join) */
    long snapshots, saw_change, commits;
} th_bank;

static void th_acct(int i, char *k) { sprintf(k, "acct%03d", i); }

static int th_read_i64(kvdb_txn *t, const char *k, int64_t *out, const void **ptr)
{
    const void *v = NULL;
    size_t vl = 0;
    int rc = kvdb_txn_get(t, k, strlen(k), &v, &vl);
    if (rc != KVDB_OK) return rc;
    if (vl != 8) return KVDB_ECORRUPT;
    *out = (int64_t)th_ld64(v);
    if (ptr) *ptr = v;
    return KVDB_OK;
}

static void *th_bank_writer(void *arg)
{
    th_bank *b = arg;
    uint64_t rng = b->seed | 1;
    int n;
    unsigned char fill[5000];
    double t0 = th_now();
    memset(fill, 'f', sizeof fill);
    for (n = 0; (n < b->writer_txns || __atomic_load_n(b->snaps, __ATOMIC_ACQUIRE) < b->min_snaps) &&
                n < 30 * b->writer_txns && !th_failed() && th_now() - t0 < TH_MAXSEC; n++) {
        kvdb_txn *t;
        int moves = 1 + (int)(tu_rand(&rng) % 4), m, rc;
        int64_t ver;
        unsigned char enc[8];
        char k[32];
        rc = kvdb_begin(b->db, 0, &t);
        if (rc != KVDB_OK) { TH_FAIL("writer begin = %d [%s]", rc, kvdb_errmsg()); break; }
        if ((rc = th_read_i64(t, "ver", &ver, NULL)) != KVDB_OK) { TH_FAIL("writer get ver = %d", rc); kvdb_abort(t); break; }
        for (m = 0; m < moves; m++) {
            int a = (int)(tu_rand(&rng) % TH_NACC), c = (int)(tu_rand(&rng) % TH_NACC);
            int64_t va, vc, amt = (int64_t)(tu_rand(&rng) % 200) - 50;
            char ka[32], kc[32];
            th_acct(a, ka);
            th_acct(c, kc);
            if (th_read_i64(t, ka, &va, NULL) != KVDB_OK || th_read_i64(t, kc, &vc, NULL) != KVDB_OK) {
                TH_FAIL("writer: account missing in txn");
                kvdb_abort(t);
                return NULL;
            }
            /* a == c is fine: the second read sees the first write */
            th_le64(enc, (uint64_t)(va - amt));
            if ((rc = kvdb_txn_put(t, ka, strlen(ka), enc, 8)) != KVDB_OK) { TH_FAIL("put = %d", rc); kvdb_abort(t); return NULL; }
            if (th_read_i64(t, kc, &vc, NULL) != KVDB_OK) { TH_FAIL("reread"); kvdb_abort(t); return NULL; }
            th_le64(enc, (uint64_t)(vc + amt));
            if ((rc = kvdb_txn_put(t, kc, strlen(kc), enc, 8)) != KVDB_OK) { TH_FAIL("put = %d", rc); kvdb_abort(t); return NULL; }
        }
        if (tu_rand(&rng) % 32 == 0) {   /* grow the file: remaps under the readers */
            sprintf(k, "fill%d", (int)(tu_rand(&rng) % 50));
            rc = kvdb_txn_put(t, k, strlen(k), fill, 500 + (size_t)(tu_rand(&rng) % 4500));
            if (rc != KVDB_OK) { TH_FAIL("put %s = %d", k, rc); kvdb_abort(t); return NULL; }
        }
        if (tu_rand(&rng) % 10 == 0) { kvdb_abort(t); continue; }
        th_le64(enc, (uint64_t)(ver + 1));
        if ((rc = kvdb_txn_put(t, "ver", 3, enc, 8)) != KVDB_OK) { TH_FAIL("put ver = %d", rc); kvdb_abort(t); return NULL; }
        rc = kvdb_commit(t);
        if (rc != KVDB_OK) { TH_FAIL("writer commit = %d [%s]", rc, kvdb_errmsg()); break; }
        b->commits++;
    }
    return NULL;
}

static void *th_bank_reader(void *arg)
{
    th_bank *b = arg;
    uint64_t rng = b->seed | 1;
    int64_t prev_ver = -1;
    while (!__atomic_load_n(&b->done, __ATOMIC_ACQUIRE) && !th_failed()) {
        kvdb_txn *t;
        const void *ptr[TH_NACC];
        int64_t val[TH_NACC], ver, ver2, sum = 0, v;
        int i, rc, hold;
        char k[32];
        rc = kvdb_begin(b->db, KVDB_TXN_RDONLY, &t);
        if (rc != KVDB_OK) { TH_FAIL("reader begin = %d [%s]", rc, kvdb_errmsg()); break; }
        if ((rc = th_read_i64(t, "ver", &ver, NULL)) != KVDB_OK) { TH_FAIL("reader get ver = %d", rc); kvdb_abort(t); break; }
        if (ver < prev_ver) { TH_FAIL("reader %d: snapshot went back in time: ver %lld after %lld", b->id, (long long)ver, (long long)prev_ver); kvdb_abort(t); break; }
        if (prev_ver >= 0 && ver != prev_ver) b->saw_change++;
        prev_ver = ver;
        for (i = 0; i < TH_NACC; i++) {
            th_acct(i, k);
            if ((rc = th_read_i64(t, k, &val[i], &ptr[i])) != KVDB_OK) { TH_FAIL("reader get %s = %d", k, rc); kvdb_abort(t); return NULL; }
            sum += val[i];
        }
        if (sum != (int64_t)TH_NACC * TH_START) {
            TH_FAIL("reader %d: snapshot at ver %lld sums to %lld, want %lld", b->id, (long long)ver, (long long)sum, (long long)TH_NACC * TH_START);
            kvdb_abort(t);
            break;
        }
        /* now and then an auto-commit put while holding the snapshot: no
         * deadlock, and the snapshot does not see it */
        if (b->snapshots % 16 == 3) {
            char rk[32];
            const void *p0 = NULL, *p1 = NULL;
            size_t l0 = 0, l1 = 0, gl = 0;
            int64_t mine = b->snapshots;
            unsigned char enc[8], got[8];
            int rc0, rc1;
            sprintf(rk, "reader%d", b->id);
            rc0 = kvdb_txn_get(t, rk, strlen(rk), &p0, &l0);
            th_le64(enc, (uint64_t)mine);
            rc = kvdb_put(b->db, rk, strlen(rk), enc, 8);
            if (rc != KVDB_OK) { TH_FAIL("reader %d: kvdb_put while holding a read txn = %d", b->id, rc); kvdb_abort(t); break; }
            rc1 = kvdb_txn_get(t, rk, strlen(rk), &p1, &l1);
            if (rc0 != rc1 || l0 != l1 || (rc0 == KVDB_OK && memcmp(p0, p1, l0) != 0)) {
                TH_FAIL("reader %d: a snapshot saw a put made after it began", b->id);
                kvdb_abort(t);
                break;
            }
            rc = kvdb_get(b->db, rk, strlen(rk), got, sizeof got, &gl);
            if (rc != KVDB_OK || gl != 8 || memcmp(got, enc, 8) != 0) {
                TH_FAIL("reader %d: kvdb_get right after kvdb_put: rc %d", b->id, rc);
                kvdb_abort(t);
                break;
            }
        }
        /* hold the snapshot while the writer commits */
        hold = (int)(tu_rand(&rng) % 4);
        if (hold == 0) th_sleep_us(1000 + (long)(tu_rand(&rng) % 3000));
        else for (i = 0; i < 40 * hold; i++) {   /* keep reading meanwhile */
            int a = (int)(tu_rand(&rng) % TH_NACC);
            th_acct(a, k);
            if ((rc = th_read_i64(t, k, &v, NULL)) != KVDB_OK || v != val[a]) {
                TH_FAIL("reader %d: %s changed inside a snapshot: %lld -> %lld (rc %d)", b->id, k, (long long)val[a], (long long)v, rc);
                kvdb_abort(t);
                return NULL;
            }
        }
        /* the same state again, and the old pointers still hold it */
        if ((rc = th_read_i64(t, "ver", &ver2, NULL)) != KVDB_OK || ver2 != ver) {
            TH_FAIL("reader %d: ver changed inside a snapshot: %lld -> %lld (rc %d)", b->id, (long long)ver, (long long)ver2, rc);
            kvdb_abort(t);
            break;
        }
        for (i = 0; i < TH_NACC; i++) {
            th_acct(i, k);
            if ((rc = th_read_i64(t, k, &v, NULL)) != KVDB_OK || v != val[i]) {
                TH_FAIL("reader %d: %s changed inside a snapshot: %lld -> %lld (rc %d)", b->id, k, (long long)val[i], (long long)v, rc);
                kvdb_abort(t);
                return NULL;
            }
            if ((int64_t)th_ld64(ptr[i]) != val[i]) {
                TH_FAIL("reader %d: the pointer kvdb_txn_get returned for %s no longer holds the value", b->id, k);
                kvdb_abort(t);
                return NULL;
            }
        }
        __atomic_add_fetch(b->snaps, 1, __ATOMIC_ACQ_REL);
        if (b->snapshots++ % 2) kvdb_abort(t);
        else if ((rc = kvdb_commit(t)) != KVDB_OK) { TH_FAIL("commit of a read txn = %d", rc); break; }
    }
    return NULL;
}

static void th_bank_check(kvdb *db, long commits)
{
    kvdb_txn *t;
    int64_t sum = 0, v, ver = -1;
    int i;
    char k[32];
    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
    for (i = 0; i < TH_NACC; i++) {
        th_acct(i, k);
        CHECK_OK(th_read_i64(t, k, &v, NULL));
        sum += v;
    }
    CHECK_OK(th_read_i64(t, "ver", &ver, NULL));
    kvdb_abort(t);
    CHECK(sum == (int64_t)TH_NACC * TH_START);
    CHECK(ver == commits);
}

static void th_snapshot_sums(int inmem)
{
    const char *path = inmem ? NULL : tu_path("bank.db");
    kvdb *db;
    kvdb_txn *t;
    th_bank w, r[4];
    pthread_t tw, tr[4];
    int i, nr = 3;
    long snaps = 0, changes = 0;
    unsigned char enc[8];
    char k[32];
    if (path) unlink(path);
    REQUIRE_OK(th_open(path, inmem ? KVDB_INMEMORY : KVDB_CREATE, KVDB_SYNC_OFF, &db));
    REQUIRE_OK(kvdb_begin(db, 0, &t));
    for (i = 0; i < TH_NACC; i++) {
        th_acct(i, k);
        th_le64(enc, TH_START);
        CHECK_OK(kvdb_txn_put(t, k, strlen(k), enc, 8));
    }
    th_le64(enc, 0);
    CHECK_OK(kvdb_txn_put(t, "ver", 3, enc, 8));
    REQUIRE_OK(kvdb_commit(t));

    memset(&w, 0, sizeof w);
    w.db = db;
    w.seed = 0x1111 + (uint64_t)inmem;
    w.writer_txns = TH_N(3000);
    w.min_snaps = TH_N(2000);
    w.snaps = &snaps;
    for (i = 0; i < nr; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].db = db;
        r[i].id = i;
        r[i].seed = 0x2222 + (uint64_t)i;
        r[i].snaps = &snaps;
        REQUIRE(pthread_create(&tr[i], NULL, th_bank_reader, &r[i]) == 0);
    }
    REQUIRE(pthread_create(&tw, NULL, th_bank_writer, &w) == 0);
    pthread_join(tw, NULL);
    for (i = 0; i < nr; i++) __atomic_store_n(&r[i].done, 1, __ATOMIC_RELEASE);
    for (i = 0; i < nr; i++) pthread_join(tr[i], NULL);
    if (th_failed()) { kvdb_close(db); return; }
    for (i = 0; i < nr; i++) { CHECK(r[i].snapshots > 0); changes += r[i].saw_change; }
    CHECK(changes > 0);   /* the readers did run concurrently with the writer */
    if (getenv("KVDB_TEST_VERBOSE")) for (i = 0; i < nr; i++) printf("# reader %d: %ld snapshots, %ld saw a newer version; writer %ld commits\n", i, r[i].snapshots, r[i].saw_change, w.commits);
    th_bank_check(db, w.commits);
    CHECK_OK(kvdb_close(db));
    if (!inmem) {
        REQUIRE_OK(th_open(path, 0, KVDB_SYNC_OFF, &db));
        th_bank_check(db, w.commits);
        CHECK_OK(kvdb_close(db));
    }
}

static void test_snapshot_sums_file(void) { th_snapshot_sums(0); }
static void test_snapshot_sums_mem(void) { th_snapshot_sums(1); }

/* ------------------------------------------------------------------ */
/* 2a. several committers, auto-commit */

typedef struct {
    kvdb *db;
    int id, nkeys, rounds;
} th_comm;

static size_t th_ckey(int id, int k, char *buf) { return (size_t)sprintf(buf, "w%d-%d", id, k); }
static size_t th_cval(int id, int k, int round, char *buf)
{
    size_t n = (size_t)sprintf(buf, "w%d-%d-r%d:", id, k, round), want = n + (size_t)((k * 7 + round * 3) % 90);
    while (n < want) { buf[n] = (char)('a' + (n + (size_t)round) % 26); n++; }
    return n;
}
/* the last round deletes every fifth key */
static int th_cdeleted(int k) { return k % 5 == 0; }

static void *th_committer(void *arg)
{
    th_comm *c = arg;
    int r, k, rc;
    char key[32], val[200];
    for (r = 0; r < c->rounds && !th_failed(); r++) {
        for (k = 0; k < c->nkeys; k++) {
            size_t kl = th_ckey(c->id, k, key);
            if (r == c->rounds - 1 && th_cdeleted(k)) {
                rc = kvdb_del(c->db, key, kl);
            } else {
                size_t vl = th_cval(c->id, k, r, val);
                rc = kvdb_put(c->db, key, kl, val, vl);
            }
            if (rc != KVDB_OK) { TH_FAIL("thread %d round %d key %d: %d (%s) [%s]", c->id, r, k, rc, kvdb_strerror(rc), kvdb_errmsg()); return NULL; }
        }
    }
    return NULL;
}

static int th_committers_check(kvdb *db, int nt, int nkeys, int rounds)
{
    int id, k, bad = 0;
    char key[32], val[200], want[200];
    for (id = 0; id < nt; id++) {
        for (k = 0; k < nkeys; k++) {
            size_t kl = th_ckey(id, k, key), vl = 0, wl = th_cval(id, k, rounds - 1, want);
            int rc = kvdb_get(db, key, kl, val, sizeof val, &vl);
            if (th_cdeleted(k) ? rc != KVDB_NOTFOUND : (rc != KVDB_OK || vl != wl || memcmp(val, want, wl) != 0)) {
                if (!bad++) tu_fail(__FILE__, __LINE__, "%s: rc %d, vlen %zu, want %s", key, rc, vl, th_cdeleted(k) ? "deleted" : want);
            }
        }
    }
    return bad;
}

static void th_committers(int sync, int nkeys, int rounds)
{
    const char *path = tu_path(sync == KVDB_SYNC_FULL ? "comm-full.db" : "comm-off.db");
    kvdb *db;
    th_comm c[4];
    pthread_t tid[4];
    int i;
    struct kvdb_stat st;
    unlink(path);
    REQUIRE_OK(th_open(path, KVDB_CREATE, sync, &db));
    for (i = 0; i < 4; i++) {
        c[i].db = db;
        c[i].id = i;
        c[i].nkeys = nkeys;
        c[i].rounds = rounds;
        REQUIRE(pthread_create(&tid[i], NULL, th_committer, &c[i]) == 0);
    }
    for (i = 0; i < 4; i++) pthread_join(tid[i], NULL);
    if (th_failed()) { kvdb_close(db); return; }
    th_committers_check(db, 4, nkeys, rounds);
    CHECK_OK(kvdb_stat(db, &st));
    CHECK(st.keys == (uint64_t)(4 * (nkeys - (nkeys + 4) / 5)));
    CHECK(st.commits == (uint64_t)(4 * nkeys * rounds));
    if (sync == KVDB_SYNC_FULL) CHECK(st.syncs >= 1 && st.syncs <= st.commits);
    CHECK_OK(kvdb_close(db));
    REQUIRE_OK(th_open(path, 0, sync, &db));
    th_committers_check(db, 4, nkeys, rounds);
    CHECK_OK(kvdb_close(db));
}

static void test_committers_full(void) { th_committers(KVDB_SYNC_FULL, TH_N(60), 3); }
static void test_committers_off(void) { th_committers(KVDB_SYNC_OFF, TH_N(400), 8); }

/* ------------------------------------------------------------------ */
/* 2b. read-modify-write of one counter in write transactions */

typedef struct {
    kvdb *db;
    int id, n;
    long busy, aborted;
} th_ctr;

static void *th_counter(void *arg)
{
    th_ctr *c = arg;
    int i = 0, rc;
    while (i < c->n && !th_failed()) {
        kvdb_txn *t;
        const void *v;
        size_t vl;
        uint64_t cur;
        unsigned char enc[8], got[8];
        unsigned flags = (i % 3 == 0) ? KVDB_TXN_NOWAIT : 0;
        rc = kvdb_begin(c->db, flags, &t);
        if (rc == KVDB_EBUSY && flags) { c->busy++; sched_yield(); continue; }
        if (rc != KVDB_OK) { TH_FAIL("thread %d: begin = %d (%s)", c->id, rc, kvdb_strerror(rc)); return NULL; }
        rc = kvdb_txn_get(t, "counter", 7, &v, &vl);
        if (rc != KVDB_OK || vl != 8) { TH_FAIL("get counter = %d", rc); kvdb_abort(t); return NULL; }
        cur = th_ld64(v);
        th_le64(enc, cur + 1);
        rc = kvdb_txn_put(t, "counter", 7, enc, 8);
        if (rc != KVDB_OK) { TH_FAIL("put counter = %d", rc); kvdb_abort(t); return NULL; }
        if (i % 7 == 0) {
            kvdb_txn *t2 = NULL;
            /* the holder of the write txn: EBUSY for auto-commit writes and a second begin, never a deadlock */
            rc = kvdb_put(c->db, "other", 5, "x", 1);
            if (rc != KVDB_EBUSY) TH_FAIL("kvdb_put while holding the write txn = %d, want EBUSY", rc);
            rc = kvdb_begin(c->db, 0, &t2);
            if (rc != KVDB_EBUSY) { TH_FAIL("second write begin in the same thread = %d, want EBUSY", rc); if (rc == KVDB_OK) kvdb_abort(t2); }
            /* kvdb_get reads the committed state: the value before this txn's put */
            vl = 0;
            rc = kvdb_get(c->db, "counter", 7, got, sizeof got, &vl);
            if (rc != KVDB_OK || vl != 8 || th_ld64(got) != cur)
                TH_FAIL("kvdb_get while holding the write txn: rc %d, %llu, want %llu", rc, (unsigned long long)th_ld64(got), (unsigned long long)cur);
        }
        if (i % 11 == 5 && c->aborted < i / 11 + 1) { c->aborted++; kvdb_abort(t); continue; }
        rc = kvdb_commit(t);
        if (rc != KVDB_OK) { TH_FAIL("commit = %d [%s]", rc, kvdb_errmsg()); return NULL; }
        i++;
    }
    return NULL;
}

static void test_counter(void)
{
    const char *path = tu_path("counter.db");
    kvdb *db;
    th_ctr c[4];
    pthread_t tid[4];
    int i, n = TH_N(1500);
    unsigned char enc[8], got[8];
    size_t vl = 0;
    unlink(path);
    REQUIRE_OK(th_open(path, KVDB_CREATE, KVDB_SYNC_NORMAL, &db));
    th_le64(enc, 0);
    REQUIRE_OK(kvdb_put(db, "counter", 7, enc, 8));
    for (i = 0; i < 4; i++) {
        memset(&c[i], 0, sizeof c[i]);
        c[i].db = db;
        c[i].id = i;
        c[i].n = n;
        REQUIRE(pthread_create(&tid[i], NULL, th_counter, &c[i]) == 0);
    }
    for (i = 0; i < 4; i++) pthread_join(tid[i], NULL);
    if (th_failed()) { kvdb_close(db); return; }
    CHECK_OK(kvdb_get(db, "counter", 7, got, sizeof got, &vl));
    CHECK(vl == 8 && th_ld64(got) == (uint64_t)(4 * n));
    CHECK_OK(kvdb_close(db));
    REQUIRE_OK(th_open(path, 0, KVDB_SYNC_NORMAL, &db));
    CHECK_OK(kvdb_get(db, "counter", 7, got, sizeof got, &vl));
    CHECK(vl == 8 && th_ld64(got) == (uint64_t)(4 * n));
    CHECK_OK(kvdb_close(db));
}

/* ------------------------------------------------------------------ */
/* 3. readers kvdb_get while writers put and delete */

#define TH_MK 64

typedef struct {
    kvdb *db;
    int id, nwriters, ops;
    uint64_t seed;
    uint64_t *pub;      /* pub[k]: highest version ever written for k (atomic) */
    int *done;          /* atomic */
    long min_reads;     /* writers: go on until the readers made this many reads */
    long *nreads;       /* all readers' reads so far (atomic) */
    /* writer results (own keys) */
    uint64_t ver[TH_MK];
    int present[TH_MK];
    long reads, hits;
} th_mix;

static size_t th_mlen(int k, uint64_t ver)
{
    if (ver % 53 == 7) return 3000 + (size_t)(ver % 1000);
    return 12 + (size_t)((ver * 13 + (uint64_t)k) % 200);
}
static unsigned char th_mbyte(int k, uint64_t ver, size_t p)
{
    return (unsigned char)((uint64_t)k * 31 + ver * 7 + p);
}
static size_t th_mval(int k, uint64_t ver, unsigned char *buf)
{
    size_t n = th_mlen(k, ver), p;
    buf[0] = (unsigned char)k; buf[1] = 0x5a; buf[2] = 0xa5; buf[3] = (unsigned char)(k ^ 0xff);
    th_le64(buf + 4, ver);
    for (p = 12; p < n; p++) buf[p] = th_mbyte(k, ver, p);
    return n;
}
static size_t th_mkey(int k, char *buf) { return (size_t)sprintf(buf, "mix:%d", k); }

/* validate a value read for key k (the first min(cap, vl) bytes in buf) */
static int th_mcheck(int k, const unsigned char *buf, size_t got, size_t vl, uint64_t *ver_out)
{
    uint64_t ver;
    size_t p;
    if (got < 12) return got == vl ? -1 : 0;    /* too short to decode; lengths are >= 12 */
    if (buf[0] != (unsigned char)k || buf[1] != 0x5a || buf[2] != 0xa5 || buf[3] != (unsigned char)(k ^ 0xff)) return -1;
    ver = th_ld64(buf + 4);
    if (vl != th_mlen(k, ver)) return -1;
    for (p = 12; p < got; p++)
        if (buf[p] != th_mbyte(k, ver, p)) return -1;
    *ver_out = ver;
    return 1;
}

static void *th_mix_writer(void *arg)
{
    th_mix *w = arg;
    uint64_t rng = w->seed | 1;
    unsigned char val[4100];
    char key[32];
    int n, rc;
    double t0 = th_now();
    for (n = 0; (n < w->ops || __atomic_load_n(w->nreads, __ATOMIC_ACQUIRE) < w->min_reads) &&
                n < 20 * w->ops && !th_failed() && th_now() - t0 < TH_MAXSEC; n++) {
        int k = w->id + w->nwriters * (int)(tu_rand(&rng) % (TH_MK / w->nwriters));
        size_t kl = th_mkey(k, key);
        unsigned r = (unsigned)(tu_rand(&rng) % 8);
        if (r == 0) {
            rc = kvdb_del(w->db, key, kl);
            if (rc != (w->present[k] ? KVDB_OK : KVDB_NOTFOUND)) { TH_FAIL("del %s = %d, present %d", key, rc, w->present[k]); return NULL; }
            w->present[k] = 0;
        } else if (r == 1) {
            /* a write transaction touching two own keys */
            int k2 = w->id + w->nwriters * (int)(tu_rand(&rng) % (TH_MK / w->nwriters));
            kvdb_txn *t;
            size_t vl;
            char key2[32];
            size_t kl2 = th_mkey(k2, key2);
            rc = kvdb_begin(w->db, 0, &t);
            if (rc != KVDB_OK) { TH_FAIL("begin = %d", rc); return NULL; }
            w->ver[k]++;
            __atomic_store_n(&w->pub[k], w->ver[k], __ATOMIC_RELEASE);
            vl = th_mval(k, w->ver[k], val);
            if ((rc = kvdb_txn_put(t, key, kl, val, vl)) != KVDB_OK) { TH_FAIL("txn_put = %d", rc); kvdb_abort(t); return NULL; }
            if (k2 != k) {
                w->ver[k2]++;
                __atomic_store_n(&w->pub[k2], w->ver[k2], __ATOMIC_RELEASE);
                vl = th_mval(k2, w->ver[k2], val);
                if ((rc = kvdb_txn_put(t, key2, kl2, val, vl)) != KVDB_OK) { TH_FAIL("txn_put = %d", rc); kvdb_abort(t); return NULL; }
            }
            rc = kvdb_commit(t);
            if (rc != KVDB_OK) { TH_FAIL("commit = %d", rc); return NULL; }
            w->present[k] = w->present[k2] = 1;
        } else {
            size_t vl;
            w->ver[k]++;
            __atomic_store_n(&w->pub[k], w->ver[k], __ATOMIC_RELEASE);
            vl = th_mval(k, w->ver[k], val);
            rc = kvdb_put(w->db, key, kl, val, vl);
            if (rc != KVDB_OK) { TH_FAIL("put %s = %d", key, rc); return NULL; }
            w->present[k] = 1;
        }
    }
    return NULL;
}

static void *th_mix_reader(void *arg)
{
    th_mix *r = arg;
    uint64_t rng = r->seed | 1, seen[TH_MK];
    unsigned char buf[4200];
    char key[32];
    memset(seen, 0, sizeof seen);
    while (!__atomic_load_n(r->done, __ATOMIC_ACQUIRE) && !th_failed()) {
        int k = (int)(tu_rand(&rng) % TH_MK);
        size_t kl = th_mkey(k, key), vl = 0, cap;
        unsigned c = (unsigned)(tu_rand(&rng) % 8);
        uint64_t ver = 0, pub;
        int rc, ok;
        if (c == 7) {
            /* a snapshot: the same version twice, pointers stable */
            kvdb_txn *t;
            const void *v1 = NULL, *v2 = NULL;
            size_t l1 = 0, l2 = 0;
            int rc2;
            rc = kvdb_begin(r->db, KVDB_TXN_RDONLY, &t);
            if (rc != KVDB_OK) { TH_FAIL("begin rdonly = %d", rc); break; }
            rc = kvdb_txn_get(t, key, kl, &v1, &l1);
            sched_yield();
            rc2 = kvdb_txn_get(t, key, kl, &v2, &l2);
            if (rc != rc2 || (rc == KVDB_OK && (l1 != l2 || memcmp(v1, v2, l1) != 0))) {
                TH_FAIL("%s read twice in one snapshot: rc %d/%d, len %zu/%zu", key, rc, rc2, l1, l2);
                kvdb_abort(t);
                break;
            }
            if (rc == KVDB_OK) {
                ok = th_mcheck(k, v1, l1, l1, &ver);
                if (ok != 1) { TH_FAIL("%s: snapshot read a value never written for it (len %zu)", key, l1); kvdb_abort(t); break; }
            } else if (rc == KVDB_NOTFOUND) {
                kvdb_abort(t);
                continue;
            } else {
                TH_FAIL("txn_get %s = %d", key, rc); kvdb_abort(t); break;
            }
            kvdb_abort(t);
        } else {
            cap = c < 2 ? (size_t)(tu_rand(&rng) % 40) : sizeof buf;
            rc = kvdb_get(r->db, key, kl, cap ? buf : NULL, cap, &vl);
            r->reads++;
            __atomic_add_fetch(r->nreads, 1, __ATOMIC_ACQ_REL);
            if (rc == KVDB_NOTFOUND) continue;
            if (rc != KVDB_OK) { TH_FAIL("get %s = %d (%s)", key, rc, kvdb_strerror(rc)); break; }
            r->hits++;
            ok = th_mcheck(k, buf, cap < vl ? cap : vl, vl, &ver);
            if (ok < 0) { TH_FAIL("%s: read a value never written for it (vlen %zu, cap %zu)", key, vl, cap); break; }
            if (ok == 0) continue;   /* too little copied to decode */
        }
        pub = __atomic_load_n(&r->pub[k], __ATOMIC_ACQUIRE);
        if (ver > pub) { TH_FAIL("%s: read version %llu, but only %llu were ever written", key, (unsigned long long)ver, (unsigned long long)pub); break; }
        if (ver < seen[k]) { TH_FAIL("%s: read version %llu after having seen %llu", key, (unsigned long long)ver, (unsigned long long)seen[k]); break; }
        seen[k] = ver;
    }
    return NULL;
}

static void test_mixed_get_put_del(void)
{
    const char *path = tu_path("mixed.db");
    kvdb *db;
    static th_mix w[2], r[3];
    static uint64_t pub[TH_MK];
    int done = 0, i, k;
    long nreads = 0;
    pthread_t tw[2], tr[3];
    long hits = 0;
    unlink(path);
    memset(pub, 0, sizeof pub);
    REQUIRE_OK(th_open(path, KVDB_CREATE, KVDB_SYNC_OFF, &db));
    for (i = 0; i < 3; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].db = db; r[i].id = i; r[i].seed = 0x7000 + (uint64_t)i; r[i].pub = pub; r[i].done = &done; r[i].nreads = &nreads;
        REQUIRE(pthread_create(&tr[i], NULL, th_mix_reader, &r[i]) == 0);
    }
    for (i = 0; i < 2; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].db = db; w[i].id = i; w[i].nwriters = 2; w[i].ops = TH_N(6000); w[i].seed = 0x8000 + (uint64_t)i; w[i].pub = pub;
        w[i].min_reads = TH_N(60000); w[i].nreads = &nreads;
        REQUIRE(pthread_create(&tw[i], NULL, th_mix_writer, &w[i]) == 0);
    }
    for (i = 0; i < 2; i++) pthread_join(tw[i], NULL);
    __atomic_store_n(&done, 1, __ATOMIC_RELEASE);
    for (i = 0; i < 3; i++) { pthread_join(tr[i], NULL); hits += r[i].hits; }
    if (getenv("KVDB_TEST_VERBOSE"))
        printf("# mixed: %ld reads, %ld found\n", nreads, hits);
    if (th_failed()) { kvdb_close(db); return; }
    CHECK(hits > 0);
    /* the final state: each key's last version, or absent */
    for (k = 0; k < TH_MK; k++) {
        th_mix *o = &w[k % 2];
        unsigned char buf[4200], want[4200];
        char key[32];
        size_t kl = th_mkey(k, key), vl = 0, wl;
        int rc = kvdb_get(db, key, kl, buf, sizeof buf, &vl);
        if (!o->present[k]) { CHECK_RC(rc, KVDB_NOTFOUND); continue; }
        wl = th_mval(k, o->ver[k], want);
        CHECK_OK(rc);
        CHECK(vl == wl && memcmp(buf, want, wl) == 0);
    }
    CHECK_OK(kvdb_close(db));
}

/* ------------------------------------------------------------------ */
/* 4. a checkpoint that a compaction swap overtakes
 *
 * The checkpoint is held in the rename of its sidecar while a compaction
 * swaps the file: its sidecar covers the old file, so it must not count
 * as covering the new one (sc_end stays 0 and close writes a sidecar). */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int armed, entered, released;
} th_gate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0 };

/* A rename of a file named ...suffix, once armed, waits at the gate until
 * released; every other rename passes. */
static int th_gate_rename_of(void *ctx, const char *from, const char *to, const char *suffix)
{
    size_t n = strlen(from), ns = strlen(suffix);
    pthread_mutex_lock(&th_gate.mu);
    if (th_gate.armed && n > ns && strcmp(from + n - ns, suffix) == 0) {
        th_gate.armed = 0;
        th_gate.entered = 1;
        pthread_cond_broadcast(&th_gate.cv);
        while (!th_gate.released) pthread_cond_wait(&th_gate.cv, &th_gate.mu);
    }
    pthread_mutex_unlock(&th_gate.mu);
    return kvdb_vfs_posix()->rename(ctx, from, to);
}

static int th_gate_rename(void *ctx, const char *from, const char *to)
{
    return th_gate_rename_of(ctx, from, to, ".idx.tmp");
}

static void *th_gate_ckpt(void *arg)
{
    kvdb *db = arg;
    int rc = kvdb_checkpoint(db);
    if (rc != KVDB_OK) TH_FAIL("checkpoint = %d [%s]", rc, kvdb_errmsg());
    return NULL;
}

static void test_checkpoint_overtaken(void)
{
    const char *path = tu_path("overtaken.db");
    kvdb_vfs vfs = *kvdb_vfs_posix();
    kvdb_options o;
    kvdb *db;
    pthread_t th;
    struct kvdb_stat st;
    uint64_t sc_end;
    int i, rc;
    char k[32], v[64];
    unlink(path);
    vfs.rename = th_gate_rename;
    kvdb_options_init(&o);
    o.flags = KVDB_CREATE;
    o.sync = KVDB_SYNC_NORMAL;
    o.vfs = &vfs;
    REQUIRE_OK(kvdb_open(path, &o, &db));
    for (i = 0; i < 400; i++) {   /* every key twice: the compacted file is smaller */
        sprintf(k, "k%03d", i % 200);
        sprintf(v, "value %d", i);
        CHECK_OK(kvdb_put(db, k, strlen(k), v, strlen(v)));
    }
    pthread_mutex_lock(&th_gate.mu);
    th_gate.armed = 1;
    th_gate.entered = th_gate.released = 0;
    pthread_mutex_unlock(&th_gate.mu);
    REQUIRE(pthread_create(&th, NULL, th_gate_ckpt, db) == 0);
    pthread_mutex_lock(&th_gate.mu);
    while (!th_gate.entered) pthread_cond_wait(&th_gate.cv, &th_gate.mu);
    pthread_mutex_unlock(&th_gate.mu);
    /* the checkpoint holds mu_ckpt: kvdb_compact would wait for it, the steps do not */
    while ((rc = kvdb_compact_step(db, 1 << 20)) == KVDB_OK) {}
    CHECK_RC(rc, KVDB_DONE);
    pthread_mutex_lock(&th_gate.mu);
    th_gate.released = 1;
    pthread_cond_broadcast(&th_gate.cv);
    pthread_mutex_unlock(&th_gate.mu);
    pthread_join(th, NULL);
    pthread_mutex_lock(&db->mu_ck);
    sc_end = db->sc_end;
    pthread_mutex_unlock(&db->mu_ck);
    CHECK(sc_end == 0);   /* no sidecar of the new file yet */
    CHECK_OK(kvdb_stat(db, &st));
    CHECK(st.compactions == 1 && st.keys == 200);
    CHECK_OK(kvdb_close(db));
    REQUIRE_OK(th_open(path, 0, KVDB_SYNC_NORMAL, &db));
    CHECK_OK(kvdb_stat(db, &st));
    CHECK(st.sidecar_loaded == 1 && st.replayed_bytes == 0 && st.keys == 200);
    CHECK_OK(kvdb_close(db));
}

/* ------------------------------------------------------------------ */
/* 5. close while the background thread's automatic compaction swaps
 *
 * The swap holds the writer role; close has no transaction to wait for,
 * so it waits for the swap instead of refusing with KVDB_EBUSY. */

static int th_gate_rename_compact(void *ctx, const char *from, const char *to)
{
    return th_gate_rename_of(ctx, from, to, ".compact");
}

static void *th_gate_release_later(void *arg)
{
    (void)arg;
    th_sleep_us(100000);   /* close is waiting by now (or returned) */
    pthread_mutex_lock(&th_gate.mu);
    th_gate.released = 1;
    pthread_cond_broadcast(&th_gate.cv);
    pthread_mutex_unlock(&th_gate.mu);
    return NULL;
}

static void test_close_during_auto_swap(void)
{
    const char *path = tu_path("autoswap.db");
    kvdb_vfs vfs = *kvdb_vfs_posix();
    kvdb_options o;
    kvdb *db;
    pthread_t th;
    struct kvdb_stat st;
    uint64_t before;
    int i, rc, entered = 0;
    char k[32], v[600];
    double t0;
    unlink(path);
    vfs.rename = th_gate_rename_compact;
    kvdb_options_init(&o);
    o.flags = KVDB_CREATE;
    o.sync = KVDB_SYNC_OFF;
    o.vfs = &vfs;
    o.auto_compact = 1;
    o.compact_min_bytes = 256 << 10;
    pthread_mutex_lock(&th_gate.mu);
    th_gate.armed = 1;
    th_gate.entered = th_gate.released = 0;
    pthread_mutex_unlock(&th_gate.mu);
    REQUIRE_OK(kvdb_open(path, &o, &db));
    memset(v, 'v', sizeof v);
    /* 50 keys overwritten until the dead bytes start a compaction (NOWAIT:
     * the held swap has the writer role) */
    t0 = th_now();
    for (i = 0; !entered && th_now() - t0 < 20; i++) {
        kvdb_txn *t;
        rc = kvdb_begin(db, KVDB_TXN_NOWAIT, &t);
        if (rc == KVDB_OK) {
            sprintf(k, "k%02d", i % 50);
            CHECK_OK(kvdb_txn_put(t, k, strlen(k), v, sizeof v));
            CHECK_OK(kvdb_commit(t));
        } else {
            CHECK_RC(rc, KVDB_EBUSY);
            th_sleep_us(1000);
        }
        pthread_mutex_lock(&th_gate.mu);
        entered = th_gate.entered;
        pthread_mutex_unlock(&th_gate.mu);
    }
    pthread_mutex_lock(&th_gate.mu);
    th_gate.armed = 0;
    pthread_mutex_unlock(&th_gate.mu);
    REQUIRE(entered);   /* the swap is held in its rename */
    CHECK_OK(kvdb_stat(db, &st));
    before = st.file_bytes;
    REQUIRE(pthread_create(&th, NULL, th_gate_release_later, NULL) == 0);
    rc = kvdb_close(db);
    CHECK_RC(rc, KVDB_OK);
    pthread_join(th, NULL);
    if (rc != KVDB_OK) CHECK_OK(kvdb_close(db));
    REQUIRE_OK(th_open(path, 0, KVDB_SYNC_OFF, &db));
    CHECK_OK(kvdb_stat(db, &st));
    CHECK(st.keys == 50);
    CHECK(st.file_bytes < before);   /* the compaction went through */
    CHECK_OK(kvdb_close(db));
}

/* ------------------------------------------------------------------ */
/* 6. everything at once: committers, long snapshots, compaction, checkpoints
 *
 * SX_NACC accounts hold balances whose sum every transaction keeps; each
 * committer also puts and deletes filler keys of its own (so the log grows
 * and compaction has dead bytes to drop) and mirrors them in a model.
 * Readers hold snapshots for milliseconds and sum the accounts by point
 * reads and by prefix scans both ways, twice, across compactions.  At the
 * end: the sums, every filler key, kvdb_check, and the same after reopening. */

#define SX_NACC 64
#define SX_START 1000
#define SX_NFILL 200   /* filler keys per committer */
#define SX_NW 3
#define SX_NR 2
#ifndef SX_SEC /* -DSX_SEC=60 for a longer run */
#define SX_SEC (TH_TSAN ? 3.0 : 1.5)
#endif

typedef struct {
    kvdb *db;
    int id, *stop;     /* stop: atomic */
    uint64_t seed;
    /* committer: its filler keys as committed (version 0: absent) */
    uint32_t fver[SX_NFILL];
    long commits, busy, snaps, scans, steps, rounds;
} sx_arg;

static size_t sx_akey(int i, char *k) { return (size_t)sprintf(k, "acct:%02d", i); }
static size_t sx_fkey(int id, int n, char *k) { return (size_t)sprintf(k, "fill:%d:%03d", id, n); }
/* filler value of version ver: 16..2063 bytes, every byte derived from (id, n, ver) */
static size_t sx_fval(int id, int n, uint32_t ver, unsigned char *v)
{
    size_t len = 16 + (size_t)((ver * 131u + (unsigned)n * 7u) % 2048), i;
    for (i = 0; i < len; i++) v[i] = (unsigned char)(id * 31 + n * 7 + (int)ver * 13 + (int)i);
    return len;
}

static int sx_stopped(sx_arg *a) { return __atomic_load_n(a->stop, __ATOMIC_ACQUIRE) || th_failed(); }

static void *sx_committer(void *arg)
{
    sx_arg *a = arg;
    uint64_t rng = a->seed | 1;
    uint32_t pend[SX_NFILL];
    unsigned char val[2100];
    while (!sx_stopped(a)) {
        kvdb_txn *t;
        unsigned flags = tu_rand(&rng) % 4 == 0 ? KVDB_TXN_NOWAIT : 0;
        int x = (int)(tu_rand(&rng) % SX_NACC), y = (int)(tu_rand(&rng) % SX_NACC), j, nf, rc;
        int64_t vx, vy, amt = (int64_t)(tu_rand(&rng) % 300) - 100;
        char kx[32], ky[32], fk[32];
        size_t lx = sx_akey(x, kx), ly = sx_akey(y, ky);
        rc = kvdb_begin(a->db, flags, &t);
        if (rc == KVDB_EBUSY && flags) { a->busy++; sched_yield(); continue; }
        if (rc != KVDB_OK) { TH_FAIL("committer %d: begin = %d [%s]", a->id, rc, kvdb_errmsg()); return NULL; }
        memcpy(pend, a->fver, sizeof pend);
        if (th_read_i64(t, kx, &vx, NULL) != KVDB_OK) { TH_FAIL("committer %d: %s missing", a->id, kx); kvdb_abort(t); return NULL; }
        th_le64(val, (uint64_t)(vx - amt));
        if ((rc = kvdb_txn_put(t, kx, lx, val, 8)) != KVDB_OK) { TH_FAIL("put %s = %d", kx, rc); kvdb_abort(t); return NULL; }
        /* x == y: this read sees the put above */
        if (th_read_i64(t, ky, &vy, NULL) != KVDB_OK) { TH_FAIL("committer %d: %s missing", a->id, ky); kvdb_abort(t); return NULL; }
        th_le64(val, (uint64_t)(vy + amt));
        if ((rc = kvdb_txn_put(t, ky, ly, val, 8)) != KVDB_OK) { TH_FAIL("put %s = %d", ky, rc); kvdb_abort(t); return NULL; }
        nf = (int)(tu_rand(&rng) % 4);
        for (j = 0; j < nf; j++) {
            int n = (int)(tu_rand(&rng) % SX_NFILL);
            size_t fl = sx_fkey(a->id, n, fk);
            if (tu_rand(&rng) % 3 == 0) {
                rc = kvdb_txn_del(t, fk, fl);
                if (rc != (pend[n] ? KVDB_OK : KVDB_NOTFOUND)) { TH_FAIL("del %s = %d, version %u", fk, rc, pend[n]); kvdb_abort(t); return NULL; }
                pend[n] = 0;
            } else {
                uint32_t ver = a->fver[n] > pend[n] ? a->fver[n] + 1 : pend[n] + 1;
                size_t vl = sx_fval(a->id, n, ver, val);
                if ((rc = kvdb_txn_put(t, fk, fl, val, vl)) != KVDB_OK) { TH_FAIL("put %s = %d", fk, rc); kvdb_abort(t); return NULL; }
                pend[n] = ver;
            }
        }
        if (tu_rand(&rng) % 16 == 0) { kvdb_abort(t); continue; }
        rc = kvdb_commit(t);
        if (rc != KVDB_OK) { TH_FAIL("committer %d: commit = %d [%s]", a->id, rc, kvdb_errmsg()); return NULL; }
        memcpy(a->fver, pend, sizeof pend);
        a->commits++;
    }
    return NULL;
}

/* Sum the accounts in t by a prefix scan (reverse if rev); the keys must
 * come in strict order and be exactly the SX_NACC accounts. */
static int sx_scan(kvdb_txn *t, int rev, int64_t *vals, int64_t *sum)
{
    kvdb_iter *it;
    const void *k, *v;
    size_t kl, vl;
    int n = 0, rc;
    char want[32];
    *sum = 0;
    rc = kvdb_iter_prefix(t, "acct:", 5, rev ? KVDB_ITER_REVERSE : 0, &it);
    if (rc != KVDB_OK) return TH_FAIL("iter_prefix = %d [%s]", rc, kvdb_errmsg()), -1;
    while ((rc = kvdb_iter_next(it, &k, &kl, &v, &vl)) == KVDB_OK) {
        int i = rev ? SX_NACC - 1 - n : n;
        size_t wl;
        if (n >= SX_NACC) { kvdb_iter_close(it); return TH_FAIL("scan: more than %d accounts", SX_NACC), -1; }
        wl = sx_akey(i, want);
        if (kl != wl || memcmp(k, want, wl) != 0 || vl != 8) {
            kvdb_iter_close(it);
            return TH_FAIL("scan (%s) step %d: key %.*s (vlen %zu), want %s", rev ? "reverse" : "forward", n, (int)kl, (const char *)k, vl, want), -1;
        }
        vals[i] = (int64_t)th_ld64(v);
        *sum += vals[i];
        n++;
    }
    kvdb_iter_close(it);
    if (rc != KVDB_DONE) return TH_FAIL("iter_next = %d [%s]", rc, kvdb_errmsg()), -1;
    if (n != SX_NACC) return TH_FAIL("scan (%s): %d accounts, want %d", rev ? "reverse" : "forward", n, SX_NACC), -1;
    return 0;
}

static void *sx_reader(void *arg)
{
    sx_arg *a = arg;
    uint64_t rng = a->seed | 1;
    const int64_t total = (int64_t)SX_NACC * SX_START;
    while (!sx_stopped(a)) {
        kvdb_txn *t;
        int64_t pv[SX_NACC], fw[SX_NACC], rv[SX_NACC], sum = 0, s;
        int i, pass, rc;
        char k[32];
        rc = kvdb_begin(a->db, KVDB_TXN_RDONLY, &t);
        if (rc != KVDB_OK) { TH_FAIL("reader begin = %d [%s]", rc, kvdb_errmsg()); return NULL; }
        for (i = 0; i < SX_NACC; i++) {
            sx_akey(i, k);
            if ((rc = th_read_i64(t, k, &pv[i], NULL)) != KVDB_OK) { TH_FAIL("reader get %s = %d", k, rc); kvdb_abort(t); return NULL; }
            sum += pv[i];
        }
        if (sum != total) { TH_FAIL("reader %d: point reads sum to %lld, want %lld", a->id, (long long)sum, (long long)total); kvdb_abort(t); return NULL; }
        /* scan both ways; then sleep, holding the snapshot across commits,
         * compactions and checkpoints, and scan again */
        for (pass = 0; pass < 2; pass++) {
            if (pass) th_sleep_us(500 + (long)(tu_rand(&rng) % 3000));
            if (sx_scan(t, 0, fw, &s) || s != total) { if (!th_failed()) TH_FAIL("reader %d pass %d: forward scan sums to %lld", a->id, pass, (long long)s); kvdb_abort(t); return NULL; }
            if (sx_scan(t, 1, rv, &s) || s != total) { if (!th_failed()) TH_FAIL("reader %d pass %d: reverse scan sums to %lld", a->id, pass, (long long)s); kvdb_abort(t); return NULL; }
            for (i = 0; i < SX_NACC; i++) {
                int64_t v;
                sx_akey(i, k);
                if ((rc = th_read_i64(t, k, &v, NULL)) != KVDB_OK || v != pv[i] || fw[i] != pv[i] || rv[i] != pv[i]) {
                    TH_FAIL("reader %d pass %d: %s in one snapshot: get %lld then %lld (rc %d), forward scan %lld, reverse %lld",
                            a->id, pass, k, (long long)pv[i], (long long)v, rc, (long long)fw[i], (long long)rv[i]);
                    kvdb_abort(t);
                    return NULL;
                }
            }
            a->scans += 2;
        }
        a->snaps++;
        if (a->snaps % 2) kvdb_abort(t);
        else if ((rc = kvdb_commit(t)) != KVDB_OK) { TH_FAIL("commit of a read txn = %d", rc); return NULL; }
    }
    return NULL;
}

static void *sx_compactor(void *arg)
{
    sx_arg *a = arg;
    while (!sx_stopped(a)) {
        int rc;
        if (a->rounds % 2) {
            rc = kvdb_compact(a->db);
        } else {
            while ((rc = kvdb_compact_step(a->db, 8192)) == KVDB_OK && !sx_stopped(a)) a->steps++;
            if (rc == KVDB_DONE || rc == KVDB_OK) rc = KVDB_OK;   /* a compaction left unfinished: close abandons it */
        }
        if (rc != KVDB_OK) { TH_FAIL("compaction = %d [%s]", rc, kvdb_errmsg()); return NULL; }
        a->rounds++;
        th_sleep_us(2000);
    }
    return NULL;
}

static void *sx_checkpointer(void *arg)
{
    sx_arg *a = arg;
    while (!sx_stopped(a)) {
        struct kvdb_stat st;
        int rc = kvdb_checkpoint(a->db);
        if (rc != KVDB_OK) { TH_FAIL("checkpoint = %d [%s]", rc, kvdb_errmsg()); return NULL; }
        if (a->rounds++ % 4 == 0 && (rc = kvdb_sync(a->db)) != KVDB_OK) { TH_FAIL("sync = %d [%s]", rc, kvdb_errmsg()); return NULL; }
        if ((rc = kvdb_stat(a->db, &st)) != KVDB_OK) { TH_FAIL("stat = %d", rc); return NULL; }
        if (st.keys < SX_NACC || st.live_bytes > st.file_bytes || st.file_bytes < LG_HDR) {
            TH_FAIL("stat: %llu keys, %llu live bytes of %llu", (unsigned long long)st.keys, (unsigned long long)st.live_bytes,
                    (unsigned long long)st.file_bytes);
            return NULL;
        }
        th_sleep_us(1000);
    }
    return NULL;
}

/* the accounts sum right and every filler key holds what its model says */
static void sx_verify(kvdb *db, sx_arg *w)
{
    kvdb_txn *t;
    int64_t vals[SX_NACC], sum = 0, s = 0, v;
    uint64_t nkeys = SX_NACC;
    struct kvdb_stat st;
    unsigned char want[2100];
    int i, n;
    char k[32];
    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
    for (i = 0; i < SX_NACC; i++) {
        sx_akey(i, k);
        CHECK_OK(th_read_i64(t, k, &v, NULL));
        sum += v;
    }
    CHECK(sum == (int64_t)SX_NACC * SX_START);
    CHECK(sx_scan(t, 0, vals, &s) == 0 && s == sum);
    CHECK(sx_scan(t, 1, vals, &s) == 0 && s == sum);
    for (i = 0; i < SX_NW; i++) {
        for (n = 0; n < SX_NFILL; n++) {
            const void *p = NULL;
            size_t fl = sx_fkey(i, n, k), vl = 0, wl;
            int rc = kvdb_txn_get(t, k, fl, &p, &vl);
            if (!w[i].fver[n]) { CHECK_RC(rc, KVDB_NOTFOUND); continue; }
            nkeys++;
            wl = sx_fval(i, n, w[i].fver[n], want);
            CHECK_OK(rc);
            if (rc == KVDB_OK && (vl != wl || memcmp(p, want, wl) != 0)) tu_fail(__FILE__, __LINE__, "%s: wrong value (%zu bytes, want %zu)", k, vl, wl);
        }
    }
    kvdb_abort(t);
    CHECK_OK(kvdb_stat(db, &st));
    CHECK(st.keys == nkeys);
}

/* ------------------------------------------------------------------ */
/* 7. a commit never waits for a sort
 *
 * A sort (the first iterator, the background sorter, a compaction's start)
 * holds mu_srt for as long as it takes -- seconds for a whole log.  Commits
 * only look at the sorted runs as a hint (ck_maybe): they must not block
 * on it.  Here another thread holds mu_srt for 2 s while puts commit; they
 * must all finish before it lets go (they took 200-400 ms waits during an
 * automatic compaction of 10M keys before). */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int held, done;
    kvdb *db;
} th_srt = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL };

static void *th_srt_holder(void *arg)
{
    (void)arg;
    kv_lock(&th_srt.db->mu_srt);
    pthread_mutex_lock(&th_srt.mu);
    th_srt.held = 1;
    pthread_cond_broadcast(&th_srt.cv);
    pthread_mutex_unlock(&th_srt.mu);
    th_sleep_us(2000000);
    pthread_mutex_lock(&th_srt.mu);
    th_srt.done = 1;
    pthread_mutex_unlock(&th_srt.mu);
    kv_unlock(&th_srt.db->mu_srt);
    return NULL;
}

static void test_commit_not_behind_sort(void)
{
    const char *path = tu_path("srtwait.db");
    kvdb_options o;
    kvdb *db;
    pthread_t th;
    int i, done;
    char k[32];
    unlink(path);
    kvdb_options_init(&o);
    o.flags = KVDB_CREATE;
    o.sync = KVDB_SYNC_OFF;
    REQUIRE_OK(kvdb_open(path, &o, &db));
    th_srt.db = db;
    th_srt.held = th_srt.done = 0;
    REQUIRE(pthread_create(&th, NULL, th_srt_holder, NULL) == 0);
    pthread_mutex_lock(&th_srt.mu);
    while (!th_srt.held) pthread_cond_wait(&th_srt.cv, &th_srt.mu);
    pthread_mutex_unlock(&th_srt.mu);
    for (i = 0; i < 200; i++) {
        snprintf(k, sizeof k, "key%03d", i);
        CHECK_OK(kvdb_put(db, k, strlen(k), "v", 1));
    }
    pthread_mutex_lock(&th_srt.mu);
    done = th_srt.done;
    pthread_mutex_unlock(&th_srt.mu);
    CHECK(!done); /* the puts did not wait for the sort's lock */
    pthread_join(th, NULL);
    CHECK_OK(kvdb_close(db));
}

static void test_stress_all(void)
{
    const char *path = tu_path("stress.db");
    kvdb_options o;
    kvdb *db;
    kvdb_txn *t;
    kvdb_check_stat cs;
    static sx_arg w[SX_NW], r[SX_NR], cp, ck;
    pthread_t tw[SX_NW], tr[SX_NR], tcp, tck;
    int stop = 0, i;
    long commits = 0, snaps = 0;
    unsigned char enc[8];
    char k[32];
    double t0;
    unlink(path);
    kvdb_options_init(&o);
    o.flags = KVDB_CREATE;
    o.sync = KVDB_SYNC_NORMAL;
    o.sync_bytes = 256 << 10;     /* commits sync now and then */
    o.auto_compact = 1;           /* the background thread competes with sx_compactor */
    o.compact_min_bytes = 1 << 20;
    REQUIRE_OK(kvdb_open(path, &o, &db));
    REQUIRE_OK(kvdb_begin(db, 0, &t));
    for (i = 0; i < SX_NACC; i++) {
        size_t kl = sx_akey(i, k);
        th_le64(enc, SX_START);
        CHECK_OK(kvdb_txn_put(t, k, kl, enc, 8));
    }
    REQUIRE_OK(kvdb_commit(t));
    memset(w, 0, sizeof w);
    memset(r, 0, sizeof r);
    memset(&cp, 0, sizeof cp);
    memset(&ck, 0, sizeof ck);
    for (i = 0; i < SX_NW; i++) {
        w[i].db = db; w[i].id = i; w[i].stop = &stop; w[i].seed = 0x5100 + (uint64_t)i;
        REQUIRE(pthread_create(&tw[i], NULL, sx_committer, &w[i]) == 0);
    }
    for (i = 0; i < SX_NR; i++) {
        r[i].db = db; r[i].id = i; r[i].stop = &stop; r[i].seed = 0x5200 + (uint64_t)i;
        REQUIRE(pthread_create(&tr[i], NULL, sx_reader, &r[i]) == 0);
    }
    cp.db = ck.db = db;
    cp.stop = ck.stop = &stop;
    REQUIRE(pthread_create(&tcp, NULL, sx_compactor, &cp) == 0);
    REQUIRE(pthread_create(&tck, NULL, sx_checkpointer, &ck) == 0);
    t0 = th_now();
    while (th_now() - t0 < SX_SEC && !th_failed()) th_sleep_us(20000);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    for (i = 0; i < SX_NW; i++) { pthread_join(tw[i], NULL); commits += w[i].commits; }
    for (i = 0; i < SX_NR; i++) { pthread_join(tr[i], NULL); snaps += r[i].snaps; }
    pthread_join(tcp, NULL);
    pthread_join(tck, NULL);
    if (getenv("KVDB_TEST_VERBOSE"))
        printf("# stress: %ld commits, %ld snapshots, %ld compactions (%ld steps), %ld checkpoints\n",
               commits, snaps, cp.rounds, cp.steps, ck.rounds);
    if (th_failed()) { kvdb_close(db); return; }
    CHECK(commits > 0 && snaps > 0 && cp.rounds > 0 && ck.rounds > 0);
    sx_verify(db, w);
    CHECK_OK(kvdb_close(db));
    memset(&cs, 0, sizeof cs);
    CHECK_OK(kvdb_check(path, NULL, &cs));
    CHECK(cs.problems == 0 && cs.index_checked);
    REQUIRE_OK(th_open(path, 0, KVDB_SYNC_NORMAL, &db));
    sx_verify(db, w);
    {
        struct kvdb_stat st;
        CHECK_OK(kvdb_stat(db, &st));
        CHECK(st.sidecar_loaded == 1 && st.replayed_bytes == 0); /* close wrote the sidecar for all of it */
    }
    CHECK_OK(kvdb_close(db));
}

/* ------------------------------------------------------------------ */
/* 8. log space reserved by the background thread
 *
 * Once the log is KV_RSV_BG_MIN long, the thread reserves ahead of the
 * writer.  th_rsv wraps the POSIX layer: it counts where reserve is called
 * from, and can make the thread's reserve fail, or hold it until a write
 * of the writer has failed (the failed write cuts the file back under the
 * reserve in flight).  Whatever happens, the file is never longer than
 * end + a chunk + 64 KiB of zeros while open, close leaves exactly the
 * committed bytes (no zeros for the next open to cut), and every commit
 * that returned KVDB_OK is there after reopening. */

static pthread_mutex_t th_rsv_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t th_rsv_cv = PTHREAD_COND_INITIALIZER;
static struct {          /* under th_rsv_mu */
    pthread_t writer;
    int bg_calls, fg_calls;
    int fail_bg;           /* the thread's reserves fail */
    int hold_bg, held, let_go; /* hold the thread's next reserve until let_go */
    int fail_write;        /* the next write fails with KVDB_EFULL */
} th_rsv;

static int th_rsv_reserve(void *ctx, kvdb_file *f, uint64_t size)
{
    int bg, fail;
    pthread_mutex_lock(&th_rsv_mu);
    bg = !pthread_equal(pthread_self(), th_rsv.writer);
    if (bg) th_rsv.bg_calls++;
    else th_rsv.fg_calls++;
    fail = bg && th_rsv.fail_bg;
    if (bg && th_rsv.hold_bg) {
        th_rsv.hold_bg = 0;
        th_rsv.held = 1;
        pthread_cond_broadcast(&th_rsv_cv);
        while (!th_rsv.let_go) pthread_cond_wait(&th_rsv_cv, &th_rsv_mu);
    }
    pthread_mutex_unlock(&th_rsv_mu);
    if (fail) return KVDB_EFULL;
    return kvdb_vfs_posix()->reserve(ctx, f, size);
}

static int th_rsv_write(void *ctx, kvdb_file *f, uint64_t off, const void *buf, size_t n)
{
    int fail;
    pthread_mutex_lock(&th_rsv_mu);
    fail = th_rsv.fail_write;
    th_rsv.fail_write = 0;
    pthread_mutex_unlock(&th_rsv_mu);
    if (fail) return KVDB_EFULL;
    return kvdb_vfs_posix()->write(ctx, f, off, buf, n);
}

/* Put keys [from, to) with 4 KiB values; check the file now and then. */
static int th_rsv_fill(kvdb *db, const char *path, int from, int to)
{
    static char v[4096];
    char k[32];
    int i;
    for (i = from; i < to; i++) {
        snprintf(k, sizeof k, "key%06d", i);
        memset(v, 'a' + i % 26, sizeof v);
        if (kvdb_put(db, k, strlen(k), v, sizeof v) != KVDB_OK) {
            TH_FAIL("put %d: %s", i, kvdb_errmsg());
            return 0;
        }
        if (i % 1000 == 999) {
            struct kvdb_stat st;
            const char *why;
            CHECK_OK(kvdb_stat(db, &st));
            why = tu_reserved_ok(path, (unsigned long long)st.file_bytes);
            if (why) {
                TH_FAIL("after put %d: %s", i, why);
                return 0;
            }
        }
    }
    return 1;
}

static void th_rsv_check(const char *path, int n, int skip)
{
    static char v[4096];
    struct kvdb_stat st;
    kvdb *db;
    char k[32];
    int i, bad = 0;
    REQUIRE_OK(th_open(path, 0, KVDB_SYNC_OFF, &db));
    CHECK_OK(kvdb_stat(db, &st));
    CHECK(st.torn_bytes == 0 && st.keys == (uint64_t)(n - (skip >= 0)));
    for (i = 0; i < n && !bad; i++) {
        size_t vl = 0;
        int rc;
        snprintf(k, sizeof k, "key%06d", i);
        rc = kvdb_get(db, k, strlen(k), v, sizeof v, &vl);
        if (i == skip) bad = rc != KVDB_NOTFOUND;
        else bad = rc != KVDB_OK || vl != sizeof v || v[0] != 'a' + i % 26 || v[sizeof v - 1] != v[0];
        if (bad) TH_FAIL("key %d: rc %d, %zu bytes", i, rc, vl);
    }
    CHECK_OK(kvdb_close(db));
}

static void test_reserve_on_thread(void)
{
    const char *path = tu_path("reserve.db");
    int mode;
    if (!kvdb_vfs_posix()->reserve) return; /* (built with KVDB_NO_PREALLOC) */
    /* 0 as is, 1 the thread's reserves fail, 2 a write fails under one and
     * close follows (close must take that reserve's size: log_cap is end),
     * 3 the same and the writer goes on */
    for (mode = 0; mode < 4; mode++) {
        int n = 6000;                       /* 24 MiB of log */
        kvdb_vfs vfs = *kvdb_vfs_posix();
        kvdb_options o;
        kvdb *db;
        int fg, bg, skip = -1;
        unlink(path);
        vfs.reserve = th_rsv_reserve;
        vfs.write = th_rsv_write;
        pthread_mutex_lock(&th_rsv_mu);
        th_rsv.writer = pthread_self();
        th_rsv.bg_calls = th_rsv.fg_calls = 0;
        th_rsv.fail_bg = mode == 1;
        th_rsv.hold_bg = mode >= 2;
        th_rsv.held = th_rsv.let_go = th_rsv.fail_write = 0;
        pthread_mutex_unlock(&th_rsv_mu);
        kvdb_options_init(&o);
        o.flags = KVDB_CREATE;
        o.sync = KVDB_SYNC_OFF;
        o.vfs = &vfs;
        REQUIRE_OK(kvdb_open(path, &o, &db));
        if (mode < 2) {
            th_rsv_fill(db, path, 0, n);
        } else {
            int i = 0, rc;
            char k[32];
            for (; i < n && !db->rsv_log; i++) /* until the writer hands a reserve to the thread */
                if (!th_rsv_fill(db, path, i, i + 1)) break;
            REQUIRE(db->rsv_log);
            pthread_mutex_lock(&th_rsv_mu); /* which is now held inside it */
            while (!th_rsv.held) pthread_cond_wait(&th_rsv_cv, &th_rsv_mu);
            pthread_mutex_unlock(&th_rsv_mu);
            pthread_mutex_lock(&th_rsv_mu);
            th_rsv.fail_write = 1;
            pthread_mutex_unlock(&th_rsv_mu);
            skip = i;
            snprintf(k, sizeof k, "key%06d", i);
            rc = kvdb_put(db, k, strlen(k), "x", 1);
            CHECK_RC(rc, KVDB_EFULL);
            pthread_mutex_lock(&th_rsv_mu);
            th_rsv.let_go = 1;
            pthread_cond_broadcast(&th_rsv_cv);
            pthread_mutex_unlock(&th_rsv_mu);
            if (mode == 3) th_rsv_fill(db, path, i + 1, n);
            else n = i + 1;
        }
        CHECK_OK(kvdb_close(db));
        pthread_mutex_lock(&th_rsv_mu);
        fg = th_rsv.fg_calls;
        bg = th_rsv.bg_calls;
        pthread_mutex_unlock(&th_rsv_mu);
        CHECK(fg >= 1);            /* the writer itself, below KV_RSV_BG_MIN */
        if (mode == 1) CHECK(bg == 1); /* one failure stops the reserving */
        else CHECK(bg >= (mode == 2 ? 1 : 2)); /* the thread reserved (on) */
        th_rsv_check(path, n, skip);
        if (th_failed()) break;
    }
}

/* The POSIX layer's reserve looks at the size and then extends the file:
 * a write past the new size landing in between would be cut off.  Both
 * go under the file's mu_size -- held here, neither gets through. */
static struct {
    const kvdb_vfs *vfs;
    kvdb_file *f;
    int which;              /* 0 reserve, 1 write */
    int rc;
} th_px;

static void *th_px_call(void *arg)
{
    (void)arg;
    if (th_px.which == 0) th_px.rc = th_px.vfs->reserve(th_px.vfs->ctx, th_px.f, 1 << 20);
    else th_px.rc = th_px.vfs->write(th_px.vfs->ctx, th_px.f, 2 << 20, "x", 1); /* past the end */
    return NULL;
}

static void test_posix_reserve_vs_write(void)
{
    const char *path = tu_path("pxsize.bin");
    const kvdb_vfs *vfs = kvdb_vfs_posix();
    struct stat sb;
    pthread_t th;
    kvdb_file *f;
    px_file *pf;
    if (!vfs->reserve) return;
    unlink(path);
    REQUIRE_OK(vfs->open(vfs->ctx, path, KVDB_VFS_CREATE, &f));
    pf = (px_file *)f;
    th_px.vfs = vfs;
    th_px.f = f;
    for (th_px.which = 0; th_px.which < 2; th_px.which++) {
        off_t before;
        REQUIRE(stat(path, &sb) == 0);
        before = sb.st_size;
        th_px.rc = -100;
        kv_lock(&pf->mu_size);
        REQUIRE(pthread_create(&th, NULL, th_px_call, NULL) == 0);
        th_sleep_us(50000);
        REQUIRE(stat(path, &sb) == 0);
        CHECK(sb.st_size == before); /* waiting for the lock */
        kv_unlock(&pf->mu_size);
        pthread_join(th, NULL);
        CHECK_OK(th_px.rc);
        REQUIRE(stat(path, &sb) == 0);
        CHECK(sb.st_size == (th_px.which == 0 ? 1 << 20 : (2 << 20) + 1));
    }
    CHECK_OK(vfs->reserve(vfs->ctx, f, 100)); /* never shortens */
    REQUIRE(stat(path, &sb) == 0);
    CHECK(sb.st_size == (2 << 20) + 1);
    CHECK_OK(vfs->close(vfs->ctx, f));
    unlink(path);
}

static void th_reset(void)
{
    pthread_mutex_lock(&th_fail_mu);
    th_nfail = 0;
    pthread_mutex_unlock(&th_fail_mu);
}
#define TH_RUN(fn) do { th_reset(); RUN(fn); } while (0)

int main(void)
{
    tu_tmpdir("threads");
    TH_RUN(test_snapshot_sums_file);
    TH_RUN(test_snapshot_sums_mem);
    TH_RUN(test_committers_full);
    TH_RUN(test_committers_off);
    TH_RUN(test_counter);
    TH_RUN(test_mixed_get_put_del);
    TH_RUN(test_checkpoint_overtaken);
    TH_RUN(test_close_during_auto_swap);
    TH_RUN(test_commit_not_behind_sort);
    TH_RUN(test_reserve_on_thread);
    TH_RUN(test_posix_reserve_vs_write);
    TH_RUN(test_stress_all);
    tu_rmrf();
    TEST_MAIN_END();
}
