/*
 * crash.c -- crash safety and recovery of kvdb.
 *
 *   kill9            a child commits in a loop (SYNC_FULL and SYNC_NORMAL
 *                    rounds) and is killed with SIGKILL at a random moment;
 *                    every acknowledged transaction must survive, every
 *                    surviving one must be whole.  Same file across rounds.
 *   cut_every_byte   the file cut to every length: exactly a committed
 *                    prefix (read-only and writable opens), the torn tail
 *                    reported in torn_bytes and cut off.
 *   cut_large        cuts in records of several pages and a 65535-byte key.
 *   garbage_tail     garbage appended (random, zeros, copied records, crafted
 *                    intact records without a commit, huge lengths) is cut.
 *   handcrafted_txn  a transaction written by hand from the documented format
 *                    is recovered (checks the format, and this file's parser).
 *   bit_flips_full   every byte of a SYNC_FULL file flipped (two bits each):
 *                    KVDB_ECORRUPT with the file unchanged when a later commit
 *                    proves the damaged record synced, else exactly the
 *                    committed prefix.  Also checks the durable fields.
 *   bit_flips_normal_sync  the same for SYNC_NORMAL with one kvdb_sync().
 *   flips_live       record bytes flipped under an open handle: reads give
 *                    KVDB_ECORRUPT or the right value, never wrong bytes.
 *   cut_then_write   after a torn tail is cut the database keeps working.
 *
 * The file format is parsed here independently of the engine (cr_parse).
 * Env KVDB_TEST_VERBOSE prints progress lines starting with '#'.
 * Seed: env KVDB_TEST_SEED (default fixed).  Flavour: env KVDB_TEST_FLAVOUR
 * (plain / asan / hash4) or the compiler's sanitizer macros; asan and hash4
 * do less work.  Env KVDB_TEST_SCALE=N (make soak): N times the kill9
 * rounds, and every bit of every byte flipped.
 */
#include "../kvdb.c"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#if defined(__SANITIZE_ADDRESS__)
#define CR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CR_ASAN 1
#endif
#endif
#ifndef CR_ASAN
#define CR_ASAN 0
#endif

static uint64_t cr_seed = 0x6b76646263726173ULL;
static int cr_slow;   /* 1: asan or hash4 -- do less */
static int cr_verbose; /* env KVDB_TEST_VERBOSE: progress lines starting with '#' */

/* ------------------------------------------------------------------ */
/* files */

static unsigned char *cr_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *b;
    long n;
    *len = 0;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return NULL; }
    n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return NULL; }
    b = malloc((size_t)n + 1);
    if (!b) { fclose(f); return NULL; }
    if (n > 0 && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); fclose(f); return NULL; }
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* write a + b (either may be empty) as the whole file, and remove its
 * sidecar (a stale one from an earlier case would vouch for more log than
 * there is).  A fresh file each time: rewriting one through O_TRUNC makes
 * ext4 flush it on close. */
static int cr_spit2(const char *path, const void *a, size_t alen, const void *b, size_t blen)
{
    FILE *f;
    char idx[700];
    int ok;
    snprintf(idx, sizeof idx, "%s.idx", path);
    unlink(idx);
    unlink(path);
    f = fopen(path, "wb");
    if (!f) return -1;
    ok = (alen == 0 || fwrite(a, 1, alen, f) == alen) && (blen == 0 || fwrite(b, 1, blen, f) == blen);
    if (fclose(f) != 0) ok = 0;
    return ok ? 0 : -1;
}

static int cr_spit(const char *path, const void *a, size_t alen)
{
    return cr_spit2(path, a, alen, NULL, 0);
}

static long long cr_fsize(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    return (long long)st.st_size;
}

/* 1 if the file at path holds exactly buf[0..len) */
static int cr_same(const char *path, const unsigned char *buf, size_t len)
{
    size_t n;
    unsigned char *b = cr_slurp(path, &n);
    int same = b && n == len && (len == 0 || memcmp(b, buf, len) == 0);
    free(b);
    return same;
}

static int cr_open(const char *path, unsigned flags, int sync, kvdb **db)
{
    kvdb_options o;
    kvdb_options_init(&o);
    o.flags = flags;
    o.sync = sync;
    *db = NULL;
    return kvdb_open(path, &o, db);
}

/* ------------------------------------------------------------------ */
/* the documented file format, parsed independently of the engine */

static uint64_t cr_le64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint32_t cr_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void cr_put64(unsigned char *p, uint64_t v)
{
    int i;
    for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void cr_put32(unsigned char *p, uint32_t v)
{
    int i;
    for (i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

#define CR_HDR 64
enum { CR_PUT = 1, CR_DEL = 2, CR_COMMIT = 3 };

typedef struct {
    uint64_t off, end;
    int type;
    uint32_t klen, vlen;
    /* COMMIT only */
    uint64_t seq, durable;
    uint32_t count;
} cr_rec;

typedef struct {
    int hdr_ok;          /* header checksum right */
    uint64_t seed;       /* hash seed */
    cr_rec *r;
    size_t n, cap;
    uint64_t stop;       /* offset of the first record that is not intact */
    uint64_t last_commit_end;
} cr_log;

static uint64_t cr_rec_sum(const unsigned char *rec, uint64_t off, uint64_t seed, size_t body)
{
    return XXH3_64bits_withSeed(rec + 8, body - 8, seed ^ off);
}

/* walk the records of buf[0..len) while they are intact */
static void cr_parse(const unsigned char *buf, size_t len, cr_log *lg)
{
    uint64_t off = CR_HDR;
    memset(lg, 0, sizeof *lg);
    if (len < CR_HDR) return;
    lg->hdr_ok = memcmp(buf, "\x89KVDB\r\n\x1a", 8) == 0 && cr_le32(buf + 8) == 1 &&
                 cr_le32(buf + 12) == CR_HDR && XXH3_64bits(buf, 56) == cr_le64(buf + 56);
    lg->seed = cr_le64(buf + 16);
    lg->last_commit_end = CR_HDR;
    for (;;) {
        const unsigned char *p = buf + off;
        cr_rec rc;
        uint64_t body;
        lg->stop = off;
        if (off + 16 > len) break;
        memset(&rc, 0, sizeof rc);
        rc.off = off;
        rc.type = p[8];
        rc.klen = (uint32_t)p[10] | (uint32_t)p[11] << 8;
        rc.vlen = cr_le32(p + 12);
        body = 16 + (uint64_t)rc.klen + rc.vlen;
        if (off + body > len) break;
        if (cr_rec_sum(p, off, lg->seed, (size_t)body) != cr_le64(p)) break;
        rc.end = off + body;
        if (rc.type == CR_COMMIT && rc.vlen >= 24) {
            rc.seq = cr_le64(p + 16);
            rc.durable = cr_le64(p + 24);
            rc.count = cr_le32(p + 32);
            lg->last_commit_end = rc.end;
        }
        if (lg->n == lg->cap) {
            lg->cap = lg->cap ? 2 * lg->cap : 64;
            lg->r = realloc(lg->r, lg->cap * sizeof *lg->r);
            if (!lg->r) { perror("realloc"); exit(2); }
        }
        lg->r[lg->n++] = rc;
        off = rc.end;
    }
}

static void cr_log_free(cr_log *lg)
{
    free(lg->r);
    lg->r = NULL;
}

/* build a record at buf (which must have room); returns its length */
static size_t cr_mkrec(unsigned char *buf, uint64_t off, uint64_t seed, int type,
                       const void *k, uint16_t klen, const void *v, uint32_t vlen)
{
    size_t body = 16 + (size_t)klen + vlen;
    buf[8] = (unsigned char)type;
    buf[9] = 0;
    buf[10] = (unsigned char)klen;
    buf[11] = (unsigned char)(klen >> 8);
    cr_put32(buf + 12, vlen);
    if (klen) memcpy(buf + 16, k, klen);
    if (vlen) memcpy(buf + 16 + klen, v, vlen);
    cr_put64(buf, cr_rec_sum(buf, off, seed, body));
    return body;
}

/* ------------------------------------------------------------------ */
/* a model of the database: CR_NK keys, values up to CR_MAXV bytes */

#define CR_NK 24
#define CR_MAXV 160

typedef struct {
    unsigned char present[CR_NK];
    uint16_t vlen[CR_NK];
    unsigned char val[CR_NK][CR_MAXV];
} cr_model;

/* key i: varied lengths, some with NUL and high bytes */
static size_t cr_key(int i, unsigned char *k)
{
    size_t n = (size_t)sprintf((char *)k, "k%02d", i);
    if (i % 5 == 0) { k[n++] = 0; k[n++] = 'z'; }
    if (i % 7 == 3) { k[n++] = 0xff; k[n++] = 0x80; k[n++] = 'q'; }
    if (i % 4 == 1) { memset(k + n, 'L', 40); n += 40; }
    return n;
}

/* compare the database against m; returns the number of differences and
 * reports the first one through tu_fail with ctx */
static int cr_check_model(kvdb *db, const cr_model *m, const char *ctx, long ctxn)
{
    unsigned char k[80], buf[CR_MAXV + 8];
    int i, bad = 0;
    uint64_t want = 0;
    struct kvdb_stat st;
    for (i = 0; i < CR_NK; i++) {
        size_t kl = cr_key(i, k), vl = 12345;
        int rc = kvdb_get(db, k, kl, buf, sizeof buf, &vl);
        if (m->present[i]) {
            want++;
            if (rc != KVDB_OK || vl != m->vlen[i] || memcmp(buf, m->val[i], vl) != 0) {
                if (!bad++) tu_fail(__FILE__, __LINE__, "%s %ld: key k%02d: rc %d (%s) vlen %zu, want OK vlen %u%s",
                                    ctx, ctxn, i, rc, kvdb_strerror(rc), vl, m->vlen[i],
                                    rc == KVDB_OK && vl == m->vlen[i] ? " (wrong bytes)" : "");
            }
        } else if (rc != KVDB_NOTFOUND) {
            if (!bad++) tu_fail(__FILE__, __LINE__, "%s %ld: key k%02d: rc %d (%s) vlen %zu, want NOTFOUND",
                                ctx, ctxn, i, rc, kvdb_strerror(rc), vl);
        }
    }
    if (kvdb_stat(db, &st) != KVDB_OK || st.keys != want) {
        if (!bad++) tu_fail(__FILE__, __LINE__, "%s %ld: stat keys %llu, want %llu", ctx, ctxn,
                            (unsigned long long)st.keys, (unsigned long long)want);
    }
    return bad;
}

/* One random write transaction applied to db and to m (m is updated only if
 * the commit succeeds).  Puts, deletes (also of absent keys), overwrites, empty
 * values, put-then-delete.  Sometimes a transaction is aborted first.
 * Returns 0 on success. */
static int cr_random_txn(kvdb *db, cr_model *m, uint64_t *rng, size_t maxv)
{
    cr_model w = *m;
    kvdb_txn *t;
    unsigned char k[80], v[CR_MAXV];
    int nops, oi, rc;
    if (tu_rand(rng) % 8 == 0) {   /* an aborted transaction writes nothing visible */
        if (kvdb_begin(db, 0, &t) != KVDB_OK) { tu_fail(__FILE__, __LINE__, "begin: %s", kvdb_errmsg()); return -1; }
        kvdb_txn_put(t, "k00\0z", 5, "aborted", 7);
        kvdb_txn_put(t, "zz-aborted", 10, "x", 1);
        kvdb_abort(t);
    }
    rc = kvdb_begin(db, 0, &t);
    if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "begin = %d [%s]", rc, kvdb_errmsg()); return -1; }
    nops = 1 + (int)(tu_rand(rng) % 4);
    for (oi = 0; oi < nops; oi++) {
        int i = (int)(tu_rand(rng) % CR_NK), r = (int)(tu_rand(rng) % 10);
        size_t kl = cr_key(i, k);
        if (r < 6 || r == 9) {
            size_t vl = tu_rand(rng) % 4 == 0 ? 0 : (size_t)(tu_rand(rng) % (maxv + 1));
            size_t j;
            for (j = 0; j < vl; j++) v[j] = (unsigned char)tu_rand(rng);
            rc = kvdb_txn_put(t, k, kl, v, vl);
            if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "txn_put = %d", rc); kvdb_abort(t); return -1; }
            w.present[i] = 1;
            w.vlen[i] = (uint16_t)vl;
            memcpy(w.val[i], v, vl);
        }
        if (r >= 6) {
            rc = kvdb_txn_del(t, k, kl);
            if (rc != (w.present[i] ? KVDB_OK : KVDB_NOTFOUND)) {
                tu_fail(__FILE__, __LINE__, "txn_del = %d, want %d", rc, w.present[i] ? KVDB_OK : KVDB_NOTFOUND);
                kvdb_abort(t);
                return -1;
            }
            w.present[i] = 0;
        }
    }
    rc = kvdb_commit(t);
    if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "commit = %d [%s]", rc, kvdb_errmsg()); return -1; }
    *m = w;
    return 0;
}

static int cr_build_sync_at;   /* cr_build: kvdb_sync() after this commit (0: never) */

/* A database at path made of ntx random transactions.  reopen: closed and
 * reopened after each commit; otherwise one session.  models[j] / ends[j] =
 * the state and log size after commit j (j = 0: freshly created, empty),
 * from kvdb_stat file_bytes: the end of commit j, before the seal that a
 * close (or kvdb_sync) may append after it.  Returns 0 on success. */
static int cr_build(const char *path, uint64_t seed, int ntx, int sync, size_t maxv, int reopen,
                    cr_model *models, uint64_t *ends)
{
    kvdb *db = NULL;
    uint64_t rng = seed | 1;
    int j, rc;
    struct kvdb_stat st;
    unlink(path);
    rc = cr_open(path, KVDB_CREATE, sync, &db);
    if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "create %s = %d [%s]", path, rc, kvdb_errmsg()); return -1; }
    rc = kvdb_close(db);
    if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "close = %d", rc); return -1; }
    db = NULL;
    memset(&models[0], 0, sizeof models[0]);
    ends[0] = (uint64_t)cr_fsize(path);
    for (j = 1; j <= ntx; j++) {
        if (!db) {
            rc = cr_open(path, 0, sync, &db);
            if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "reopen = %d [%s]", rc, kvdb_errmsg()); return -1; }
        }
        models[j] = models[j - 1];
        if (cr_random_txn(db, &models[j], &rng, maxv) != 0) { kvdb_close(db); return -1; }
        rc = kvdb_stat(db, &st);
        if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "stat = %d", rc); kvdb_close(db); return -1; }
        ends[j] = st.file_bytes;
        if (j == cr_build_sync_at && (rc = kvdb_sync(db)) != KVDB_OK) {
            tu_fail(__FILE__, __LINE__, "kvdb_sync = %d", rc);
            kvdb_close(db);
            return -1;
        }
        if (reopen) {
            rc = kvdb_close(db);
            db = NULL;
            if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "close = %d", rc); return -1; }
        }
        if (ends[j] < ends[j - 1]) { tu_fail(__FILE__, __LINE__, "log shrank: %llu -> %llu", (unsigned long long)ends[j - 1], (unsigned long long)ends[j]); if (db) kvdb_close(db); return -1; }
    }
    if (db) {
        rc = kvdb_close(db);
        if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "close = %d", rc); return -1; }
        if (cr_fsize(path) != (long long)ends[ntx] + 40) { /* and its seal */
            tu_fail(__FILE__, __LINE__, "file is %lld bytes after close, stat file_bytes said %llu (+ a seal of 40)", cr_fsize(path), (unsigned long long)ends[ntx]);
            return -1;
        }
    }
    return 0;
}

/* Is the file at path buf[0, good) followed by nothing, or by one seal
 * (a COMMIT of no records whose durable field is its own offset)? */
static int cr_kept(const char *path, const unsigned char *buf, uint64_t good)
{
    size_t n;
    unsigned char *b = cr_slurp(path, &n);
    int ok = b && (n == good || n == good + 40) && memcmp(b, buf, (size_t)good) == 0;
    if (ok && n == good + 40) {
        cr_log lg;
        cr_parse(b, n, &lg);
        ok = lg.stop == n && lg.n && lg.r[lg.n - 1].off == good && lg.r[lg.n - 1].type == CR_COMMIT &&
             lg.r[lg.n - 1].count == 0 && lg.r[lg.n - 1].durable == good;
        cr_log_free(&lg);
    }
    free(b);
    return ok;
}

/* the last commit j with ends[j] <= L */
static int cr_prefix(const uint64_t *ends, int ntx, uint64_t L)
{
    int j = -1, i;
    for (i = 0; i <= ntx; i++)
        if (ends[i] <= L) j = i;
    return j;
}

/* ------------------------------------------------------------------ */
/* 1. kill -9 */

#define CR_KEEP 10    /* txn seq deletes the keys of txn seq - CR_KEEP */

static int cr_nk(uint64_t seq) { return 1 + (int)(seq % 5); }

static size_t cr_kname(uint64_t seq, int i, char *k)
{
    return (size_t)sprintf(k, "t%llu-%d", (unsigned long long)seq, i);
}

/* the value of key i of txn seq: mostly short, sometimes a few KB, and now
 * and then up to 256 KB (a long write(2) that SIGKILL can cut short) */
#define CR_KVMAX (256 * 1024)
static size_t cr_kval(uint64_t seq, int i, unsigned char *v)
{
    size_t n = (seq % 61 == 30 && i == 0) ? 32768 + (size_t)(seq * 7919 % (CR_KVMAX - 32768))
             : (seq % 31 == 7 && i == 0) ? 2000 + (size_t)(seq * 37 % 3000) : (size_t)((seq * 7 + (uint64_t)i) % 50);
    size_t p;
    for (p = 0; p < n; p++) v[p] = (unsigned char)(seq * 131 + (uint64_t)i * 17 + p * 7 + (p >> 8));
    return n;
}

static void cr_child(const char *path, int wfd, int sync, int max_txns)
{
    kvdb *db;
    kvdb_txn *t;
    char k[64], lastbuf[32];
    unsigned char *v = malloc(CR_KVMAX);
    size_t vl;
    uint64_t seq0 = 0;
    int n, i, rc;
    if (!v || cr_open(path, 0, sync, &db) != KVDB_OK) _exit(3);
    rc = kvdb_get(db, "last", 4, lastbuf, sizeof lastbuf - 1, &vl);
    if (rc == KVDB_OK) { lastbuf[vl < sizeof lastbuf ? vl : sizeof lastbuf - 1] = 0; seq0 = strtoull(lastbuf, NULL, 10); }
    else if (rc != KVDB_NOTFOUND) _exit(4);
    for (n = 0; n < max_txns; n++) {
        uint64_t seq = seq0 + 1 + (uint64_t)n;
        if (kvdb_begin(db, 0, &t) != KVDB_OK) _exit(5);
        for (i = 0; i < cr_nk(seq); i++) {
            size_t kl = cr_kname(seq, i, k);
            vl = cr_kval(seq, i, v);
            if (kvdb_txn_put(t, k, kl, v, vl) != KVDB_OK) _exit(6);
        }
        if (seq > CR_KEEP) {
            uint64_t old = seq - CR_KEEP;
            for (i = 0; i < cr_nk(old); i++) {
                size_t kl = cr_kname(old, i, k);
                if (kvdb_txn_del(t, k, kl) != KVDB_OK) _exit(7);
            }
        }
        vl = (size_t)sprintf(lastbuf, "%llu", (unsigned long long)seq);
        if (kvdb_txn_put(t, "last", 4, lastbuf, vl) != KVDB_OK) _exit(8);
        if (kvdb_commit(t) != KVDB_OK) _exit(9);
        if (write(wfd, &seq, sizeof seq) != (ssize_t)sizeof seq) _exit(10);
    }
    for (;;) pause();
}

/* read acks until n of them arrived (n < 0: until EOF); returns -1 on timeout */
static int cr_read_acks(int fd, uint64_t *maxack, long *nacks, long n, int timeout_ms)
{
    static unsigned char part[8];
    static size_t partn;
    unsigned char buf[4096];
    while (n < 0 || *nacks < n) {
        struct pollfd pf;
        ssize_t got, i;
        pf.fd = fd; pf.events = POLLIN; pf.revents = 0;
        if (poll(&pf, 1, timeout_ms) == 0) return -1;
        got = read(fd, buf, sizeof buf);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) { partn = 0; return 0; }
        for (i = 0; i < got; i++) {
            part[partn++] = buf[i];
            if (partn == 8) {
                uint64_t s;
                memcpy(&s, part, 8);
                if (s > *maxack) *maxack = s;
                ++*nacks;
                partn = 0;
            }
        }
    }
    return 0;
}

static void test_kill9(void)
{
    const char *path = tu_path("kill9.db");
    uint64_t rng = cr_seed ^ 0x9999;
    uint64_t maxack = 0, total_acks = 0, prev_last = 0;
    int rounds = (cr_slow ? 12 : 30) * (int)tu_scale(), r;
    unsigned char *v = malloc(CR_KVMAX), *got = malloc(CR_KVMAX);
    kvdb *cdb;
    unlink(path);
    if (!v || !got) { tu_fail(__FILE__, __LINE__, "oom"); goto out; }
    if (cr_open(path, KVDB_CREATE, KVDB_SYNC_FULL, &cdb) != KVDB_OK || kvdb_close(cdb) != KVDB_OK) {
        tu_fail(__FILE__, __LINE__, "create: %s", kvdb_errmsg());
        goto out;
    }
    for (r = 0; r < rounds; r++) {
        int pfd[2], status = 0, sync = (r % 2) ? KVDB_SYNC_NORMAL : KVDB_SYNC_FULL;
        pid_t pid;
        long nacks = 0;
        uint64_t last = 0, s, lo, hi, want_keys = 0;
        kvdb *db;
        char lastbuf[32];
        size_t vl;
        int rc, bad = 0;
        struct kvdb_stat st;

        if (pipe(pfd) != 0) { tu_fail(__FILE__, __LINE__, "pipe"); goto out; }
        fflush(NULL);
        pid = fork();
        if (pid < 0) { tu_fail(__FILE__, __LINE__, "fork"); goto out; }
        if (pid == 0) {
            close(pfd[0]);
            cr_child(path, pfd[1], sync, sync == KVDB_SYNC_FULL ? 2000 : 600);
            _exit(0);
        }
        close(pfd[1]);
        if (r % 3 == 0) {
            long want = 1 + (long)(tu_rand(&rng) % 150);
            if (cr_read_acks(pfd[0], &maxack, &nacks, want, 20000) != 0)
                tu_fail(__FILE__, __LINE__, "round %d: child made no progress for 20 s", r);
        } else {
            usleep((useconds_t)(1000 + tu_rand(&rng) % 49000));
        }
        kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        cr_read_acks(pfd[0], &maxack, &nacks, -1, 20000);
        close(pfd[0]);
        total_acks += (uint64_t)nacks;
        if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
            tu_fail(__FILE__, __LINE__, "round %d: child did not die by SIGKILL: status 0x%x (exit code %d)",
                    r, status, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
            goto out;
        }

        rc = cr_open(path, 0, KVDB_SYNC_FULL, &db);
        if (rc != KVDB_OK) {
            tu_fail(__FILE__, __LINE__, "round %d: reopen after kill = %d (%s) [%s]", r, rc, kvdb_strerror(rc), kvdb_errmsg());
            goto out;
        }
        rc = kvdb_get(db, "last", 4, lastbuf, sizeof lastbuf - 1, &vl);
        if (rc == KVDB_OK) {
            lastbuf[vl < sizeof lastbuf ? vl : sizeof lastbuf - 1] = 0;
            last = strtoull(lastbuf, NULL, 10);
        } else if (rc != KVDB_NOTFOUND) {
            tu_fail(__FILE__, __LINE__, "round %d: get last = %d", r, rc);
        }
        /* every acknowledged txn is there (and all that survived earlier
         * rounds); beyond that at most the one txn in flight at the kill */
        {
            uint64_t base = maxack > prev_last ? maxack : prev_last;
            if (last < base || last > base + 1)
                tu_fail(__FILE__, __LINE__, "round %d (%s): last = %llu, highest acknowledged %llu, previous round ended at %llu",
                        r, sync == KVDB_SYNC_FULL ? "FULL" : "NORMAL", (unsigned long long)last,
                        (unsigned long long)maxack, (unsigned long long)prev_last);
            prev_last = last;
        }
        /* the state is a function of last: keys of txns last-9..last present */
        lo = last > CR_KEEP + 3 ? last - CR_KEEP - 3 : 1;
        hi = last + CR_KEEP + 3;
        for (s = lo; s <= hi && !bad; s++) {
            int i, present = s <= last && s + CR_KEEP > last;
            if (present) want_keys += (uint64_t)cr_nk(s);
            for (i = 0; i < cr_nk(s); i++) {
                char k[64];
                size_t kl = cr_kname(s, i, k), wl = cr_kval(s, i, v);
                vl = 0;
                rc = kvdb_get(db, k, kl, got, CR_KVMAX, &vl);
                if (present ? (rc != KVDB_OK || vl != wl || memcmp(got, v, wl) != 0) : rc != KVDB_NOTFOUND) {
                    tu_fail(__FILE__, __LINE__, "round %d: last=%llu, key %s: rc %d vlen %zu, want %s (half a txn?)",
                            r, (unsigned long long)last, k, rc, vl, present ? "present" : "absent");
                    bad = 1;
                    break;
                }
            }
        }
        if (last > 0) want_keys++;
        CHECK_OK(kvdb_stat(db, &st));
        if (cr_verbose)
            printf("# kill9 round %d (%s): %ld acks, last %llu, torn %llu, file %lld\n", r, sync == KVDB_SYNC_FULL ? "FULL" : "NORMAL",
                   nacks, (unsigned long long)last, (unsigned long long)st.torn_bytes, cr_fsize(path));
        if (st.keys != want_keys)
            tu_fail(__FILE__, __LINE__, "round %d: %llu keys, want %llu", r, (unsigned long long)st.keys, (unsigned long long)want_keys);
        CHECK_OK(kvdb_close(db));
        if (tu_cur_failed) goto out;
    }
    /* the test must have exercised something */
    CHECK(total_acks > 0);
out:
    unlink(path);   /* no need to keep megabytes of dirty pages for the disk */
    free(v);
    free(got);
}

/* ------------------------------------------------------------------ */
/* 2. cut the file at every byte offset */

static void test_cut_every_byte(void)
{
    const char *path = tu_path("cut-src.db"), *cut = tu_path("cut.db");
    int ntx = cr_slow ? 20 : 30;
    cr_model *models = calloc((size_t)ntx + 1, sizeof *models);
    uint64_t *ends = calloc((size_t)ntx + 1, sizeof *ends);
    unsigned char *src = NULL;
    size_t len, L;
    int fails = 0;
    uint64_t good;
    if (!models || !ends) { tu_fail(__FILE__, __LINE__, "oom"); goto out; }
    if (cr_build(path, cr_seed ^ 0x2222, ntx, KVDB_SYNC_NORMAL, 80, 1, models, ends) != 0) goto out;
    src = cr_slurp(path, &len);
    if (!src) { tu_fail(__FILE__, __LINE__, "read"); goto out; }
    CHECK(cr_kept(path, src, ends[ntx])); /* the last commit, and the seal of the last close */
    CHECK(len >= 2000);
    for (L = 0; L <= len && fails < 3; L++) {
        int j = cr_prefix(ends, ntx, L), rc;
        kvdb *db;
        struct kvdb_stat st;
        if (cr_spit(cut, src, L) != 0) { tu_fail(__FILE__, __LINE__, "write"); goto out; }
        if (j < 0) {
            /* a partial header: an error and nothing changed, or an empty db */
            rc = cr_open(cut, 0, KVDB_SYNC_OFF, &db);
            if (rc == KVDB_OK) {
                fails += cr_check_model(db, &models[0], "header cut at", (long)L) != 0;
                CHECK_OK(kvdb_close(db));
            } else if (rc != KVDB_ENOTDB && rc != KVDB_ECORRUPT) {
                tu_fail(__FILE__, __LINE__, "cut at %zu (partial header): open = %d (%s)", L, rc, kvdb_strerror(rc));
                fails++;
            } else if (!cr_same(cut, src, L)) {
                tu_fail(__FILE__, __LINE__, "cut at %zu: open failed with %d but changed the file", L, rc);
                fails++;
            }
            continue;
        }
        /* read-only: the committed prefix, file untouched */
        rc = cr_open(cut, KVDB_RDONLY, KVDB_SYNC_OFF, &db);
        if (rc != KVDB_OK) {
            tu_fail(__FILE__, __LINE__, "cut at %zu: read-only open = %d (%s) [%s]", L, rc, kvdb_strerror(rc), kvdb_errmsg());
            fails++;
        } else {
            fails += cr_check_model(db, &models[j], "rdonly, cut at", (long)L) != 0;
            CHECK_OK(kvdb_close(db));
            if (!cr_same(cut, src, L)) {
                tu_fail(__FILE__, __LINE__, "cut at %zu: a read-only open changed the file", L);
                fails++;
            }
        }
        /* writable: the committed prefix, the tail reported and cut off */
        rc = cr_open(cut, 0, KVDB_SYNC_OFF, &db);
        if (rc != KVDB_OK) {
            tu_fail(__FILE__, __LINE__, "cut at %zu: open = %d (%s) [%s]", L, rc, kvdb_strerror(rc), kvdb_errmsg());
            fails++;
            continue;
        }
        fails += cr_check_model(db, &models[j], "cut at", (long)L) != 0;
        CHECK_OK(kvdb_stat(db, &st));
        {
            cr_log lg;
            cr_parse(src, L, &lg); /* commit j, or the seal after it */
            good = lg.last_commit_end;
            cr_log_free(&lg);
        }
        if (good < ends[j] || good > ends[j] + 40 || st.torn_bytes != L - good) {
            tu_fail(__FILE__, __LINE__, "cut at %zu: torn_bytes %llu, want %llu (last commit ends at %llu)", L,
                    (unsigned long long)st.torn_bytes, (unsigned long long)(L - good), (unsigned long long)good);
            fails++;
        }
        CHECK_OK(kvdb_close(db));
        if (!cr_kept(cut, src, good)) {
            tu_fail(__FILE__, __LINE__, "cut at %zu: after a writable open the file is %lld bytes, want the first %llu bytes of the original (and a seal)",
                    L, cr_fsize(cut), (unsigned long long)good);
            fails++;
        }
    }
out:
    free(src);
    free(models);
    free(ends);
}

/* ------------------------------------------------------------------ */
/* 2b. cuts in a database of big records: values over several pages, a key
 * of the maximum length */

#define CR_BIGK 5
typedef struct { long vlen[CR_BIGK]; } cr_bigstate;   /* -1: absent */

static size_t cr_bigkey(int i, unsigned char *k)
{
    static const char *names[CR_BIGK] = { "big1", NULL, "small", "big2", "empty" };
    if (i == 1) { memset(k, 'K', KVDB_MAX_KEY); k[0] = 0; k[KVDB_MAX_KEY - 1] = 0xff; return KVDB_MAX_KEY; }
    memcpy(k, names[i], strlen(names[i]));
    return strlen(names[i]);
}
static void cr_bigval(int i, long vlen, unsigned char *v)
{
    long p;
    for (p = 0; p < vlen; p++) v[p] = (unsigned char)(i * 59 + vlen * 3 + p + (p >> 9));
}

static int cr_check_big(kvdb *db, const cr_bigstate *st, unsigned char *k, unsigned char *v, unsigned char *got, long L)
{
    int i, bad = 0;
    for (i = 0; i < CR_BIGK && !bad; i++) {
        size_t kl = cr_bigkey(i, k), vl = 0, cap;
        int rc = kvdb_get(db, k, kl, got, 100000, &vl);
        if (st->vlen[i] < 0) {
            if (rc != KVDB_NOTFOUND) { tu_fail(__FILE__, __LINE__, "cut at %ld: big key %d: rc %d, want NOTFOUND", L, i, rc); bad++; }
            continue;
        }
        cr_bigval(i, st->vlen[i], v);
        if (rc != KVDB_OK || vl != (size_t)st->vlen[i] || memcmp(got, v, vl) != 0) {
            tu_fail(__FILE__, __LINE__, "cut at %ld: big key %d: rc %d vlen %zu, want OK vlen %ld", L, i, rc, vl, st->vlen[i]);
            bad++;
            continue;
        }
        /* a short buffer: a prefix, and the full length */
        cap = (size_t)st->vlen[i] / 3;
        memset(got, 0xEE, cap + 16);
        vl = 0;
        rc = kvdb_get(db, k, kl, got, cap, &vl);
        if (rc != KVDB_OK || vl != (size_t)st->vlen[i] || memcmp(got, v, cap) != 0 || got[cap] != 0xEE) {
            tu_fail(__FILE__, __LINE__, "cut at %ld: big key %d with cap %zu: rc %d vlen %zu", L, i, cap, rc, vl);
            bad++;
        }
    }
    return bad;
}

static void test_cut_large(void)
{
    /* txn j sets vlen of key i to plan[j][i]: -1 delete, -2 unchanged */
    static const long plan[][CR_BIGK] = {
        { 10000, -2, -2, -2, -2 },
        { -2, 100, 1, -2, -2 },
        { -2, -2, -1, 70000, -2 },
        { 5000, -2, -2, -2, 0 },
        { -2, -1, 2, -2, -2 },
        { -1, 4096, -2, 8192, -2 },
    };
    const int ntx = (int)(sizeof plan / sizeof plan[0]);
    const char *path = tu_path("large-src.db"), *cut = tu_path("large.db");
    unsigned char *k = malloc(KVDB_MAX_KEY), *v = malloc(100000), *got = malloc(100016), *src = NULL;
    cr_bigstate st[8];
    uint64_t ends[8], rng = cr_seed ^ 0xb16;
    uint64_t cuts[200], good;
    size_t len, ncut = 0, c;
    kvdb *db;
    int i, j, rc, fails = 0;
    if (!k || !v || !got) { tu_fail(__FILE__, __LINE__, "oom"); goto out; }
    unlink(path);
    if ((rc = cr_open(path, KVDB_CREATE, KVDB_SYNC_NORMAL, &db)) != KVDB_OK) { tu_fail(__FILE__, __LINE__, "create = %d", rc); goto out; }
    for (i = 0; i < CR_BIGK; i++) st[0].vlen[i] = -1;
    ends[0] = (uint64_t)cr_fsize(path);
    for (j = 1; j <= ntx; j++) {
        kvdb_txn *t;
        struct kvdb_stat sb;
        st[j] = st[j - 1];
        if ((rc = kvdb_begin(db, 0, &t)) != KVDB_OK) { tu_fail(__FILE__, __LINE__, "begin = %d", rc); kvdb_close(db); goto out; }
        for (i = 0; i < CR_BIGK; i++) {
            size_t kl = cr_bigkey(i, k);
            long want = plan[j - 1][i];
            if (want == -2) continue;
            if (want == -1) rc = kvdb_txn_del(t, k, kl);
            else { cr_bigval(i, want, v); rc = kvdb_txn_put(t, k, kl, v, (size_t)want); }
            if (rc != KVDB_OK) tu_fail(__FILE__, __LINE__, "txn %d key %d: %d", j, i, rc);
            st[j].vlen[i] = want;
        }
        if ((rc = kvdb_commit(t)) != KVDB_OK) { tu_fail(__FILE__, __LINE__, "commit = %d", rc); kvdb_close(db); goto out; }
        CHECK_OK(kvdb_stat(db, &sb));
        ends[j] = sb.file_bytes;
    }
    CHECK_OK(kvdb_close(db));
    src = cr_slurp(path, &len);
    if (!src || len != ends[ntx] + 40) { tu_fail(__FILE__, __LINE__, "file %zu bytes, want %llu and a seal", len, (unsigned long long)ends[ntx]); goto out; }
    /* cut points: around every commit end, inside the long key, at page
     * boundaries, and at random */
    for (j = 0; j <= ntx; j++) {
        static const int d[] = { -17, -16, -15, -1, 0, 1, 15, 16, 17, 40 };
        for (i = 0; i < (int)(sizeof d / sizeof d[0]); i++)
            if ((long long)ends[j] + d[i] >= CR_HDR && ends[j] + (uint64_t)(long long)d[i] <= len) cuts[ncut++] = ends[j] + (uint64_t)(long long)d[i];
    }
    for (c = 4096; c <= len && ncut < 150; c += 4096 * 3) { cuts[ncut++] = c - 1; cuts[ncut++] = c; }
    while (ncut < 200) cuts[ncut++] = CR_HDR + tu_rand(&rng) % (len - CR_HDR + 1);
    for (c = 0; c < ncut && fails < 3; c++) {
        uint64_t L = cuts[c];
        struct kvdb_stat sb;
        j = cr_prefix(ends, ntx, L);
        if (cr_spit(cut, src, (size_t)L) != 0) { tu_fail(__FILE__, __LINE__, "write"); goto out; }
        rc = cr_open(cut, 0, KVDB_SYNC_OFF, &db);
        if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "cut at %llu: open = %d [%s]", (unsigned long long)L, rc, kvdb_errmsg()); fails++; continue; }
        fails += cr_check_big(db, &st[j], k, v, got, (long)L) != 0;
        CHECK_OK(kvdb_stat(db, &sb));
        {
            cr_log lg;
            cr_parse(src, (size_t)L, &lg); /* commit j, or the seal after the last */
            good = lg.last_commit_end;
            cr_log_free(&lg);
        }
        if (good < ends[j] || good > ends[j] + 40 || sb.torn_bytes != L - good) {
            tu_fail(__FILE__, __LINE__, "cut at %llu: torn %llu, want %llu", (unsigned long long)L,
                    (unsigned long long)sb.torn_bytes, (unsigned long long)(L - good));
            fails++;
        }
        /* and it takes the next big transaction right there */
        if (c % 8 == 0) {
            cr_bigstate n2 = st[j];
            size_t kl = cr_bigkey(3, k);
            cr_bigval(3, 30000, v);
            CHECK_OK(kvdb_put(db, k, kl, v, 30000));
            n2.vlen[3] = 30000;
            CHECK_OK(kvdb_close(db));
            if ((rc = cr_open(cut, 0, KVDB_SYNC_OFF, &db)) != KVDB_OK) { tu_fail(__FILE__, __LINE__, "reopen = %d", rc); fails++; continue; }
            fails += cr_check_big(db, &n2, k, v, got, (long)L) != 0;
            CHECK_OK(kvdb_stat(db, &sb));
            CHECK(sb.torn_bytes == 0);
        }
        CHECK_OK(kvdb_close(db));
    }
out:
    free(k);
    free(v);
    free(got);
    free(src);
}

/* ------------------------------------------------------------------ */
/* 3. garbage appended */

static void cr_garbage_case(const char *what, long n, const unsigned char *src, size_t len,
                            const unsigned char *g, size_t glen, const cr_model *m)
{
    const char *p = tu_path("garbage.db");
    kvdb *db;
    struct kvdb_stat st;
    int rc;
    if (cr_spit2(p, src, len, g, glen) != 0) { tu_fail(__FILE__, __LINE__, "write"); return; }
    rc = cr_open(p, KVDB_RDONLY, KVDB_SYNC_OFF, &db);
    if (rc != KVDB_OK) {
        tu_fail(__FILE__, __LINE__, "%s %ld: read-only open = %d (%s) [%s]", what, n, rc, kvdb_strerror(rc), kvdb_errmsg());
        return;
    }
    cr_check_model(db, m, what, n);
    CHECK_OK(kvdb_close(db));
    rc = cr_open(p, 0, KVDB_SYNC_NORMAL, &db);
    if (rc != KVDB_OK) {
        tu_fail(__FILE__, __LINE__, "%s %ld: open = %d (%s) [%s]", what, n, rc, kvdb_strerror(rc), kvdb_errmsg());
        return;
    }
    cr_check_model(db, m, what, n);
    CHECK_OK(kvdb_stat(db, &st));
    if (st.torn_bytes != glen)
        tu_fail(__FILE__, __LINE__, "%s %ld: torn_bytes %llu, want %zu", what, n, (unsigned long long)st.torn_bytes, glen);
    CHECK_OK(kvdb_close(db));
    if (!cr_same(p, src, len))
        tu_fail(__FILE__, __LINE__, "%s %ld: garbage not cut: file is %lld bytes, want %zu", what, n, cr_fsize(p), len);
    /* and a second open finds nothing torn */
    rc = cr_open(p, 0, KVDB_SYNC_NORMAL, &db);
    if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "%s %ld: reopen = %d", what, n, rc); return; }
    cr_check_model(db, m, what, n);
    CHECK_OK(kvdb_stat(db, &st));
    CHECK(st.torn_bytes == 0);
    CHECK_OK(kvdb_close(db));
}

static void test_garbage_tail(void)
{
    static const size_t rlens[] = { 1, 2, 7, 8, 15, 16, 17, 24, 40, 41, 100, 1000, 4095, 4096, 4097, 10000 };
    static const size_t zlens[] = { 1, 8, 16, 17, 40, 41, 100, 4096, 10000 };
    const char *path = tu_path("garbage-src.db");
    int ntx = 20;
    cr_model models[21];
    uint64_t ends[21], rng = cr_seed ^ 0x3333;
    unsigned char *src = NULL, *g = NULL;
    size_t len, i, j;
    cr_log lg;
    if (cr_build(path, cr_seed ^ 0x3334, ntx, KVDB_SYNC_NORMAL, 120, 0, models, ends) != 0) return;
    src = cr_slurp(path, &len);
    g = malloc(len + 20000);
    if (!src || !g) { tu_fail(__FILE__, __LINE__, "read"); goto out; }
    for (i = 0; i < sizeof rlens / sizeof rlens[0]; i++) {
        for (j = 0; j < rlens[i]; j++) g[j] = (unsigned char)tu_rand(&rng);
        cr_garbage_case("random bytes", (long)rlens[i], src, len, g, rlens[i], &models[ntx]);
    }
    memset(g, 0, 10000);
    for (i = 0; i < sizeof zlens / sizeof zlens[0]; i++)
        cr_garbage_case("zero bytes", (long)zlens[i], src, len, g, zlens[i], &models[ntx]);
    /* copies of valid records from elsewhere (checksums are tied to offsets) */
    cr_garbage_case("copy of the whole log", (long)(len - CR_HDR), src, len, src + CR_HDR, len - CR_HDR, &models[ntx]);
    cr_garbage_case("copy of the first commit", (long)(ends[1] - CR_HDR), src, len, src + CR_HDR, (size_t)(ends[1] - CR_HDR), &models[ntx]);
    cr_garbage_case("copy of the last commit", (long)(ends[ntx] - ends[ntx - 1]), src, len, src + ends[ntx - 1],
                    (size_t)(ends[ntx] - ends[ntx - 1]), &models[ntx]);
    cr_garbage_case("copy of the header", CR_HDR, src, len, src, CR_HDR, &models[ntx]);

    cr_parse(src, len, &lg);
    if (!lg.hdr_ok || lg.stop != len) {
        tu_fail(__FILE__, __LINE__, "the engine's file does not follow the documented format: header ok %d, records intact up to %llu of %zu",
                lg.hdr_ok, (unsigned long long)lg.stop, len);
    } else {
        /* intact records at the right offsets, but no commit */
        size_t n = cr_mkrec(g, len, lg.seed, CR_PUT, "k01", 3, "uncommitted", 11);
        unsigned char cv[24];
        cr_garbage_case("intact PUT without commit", (long)n, src, len, g, n, &models[ntx]);
        n += cr_mkrec(g + n, len + n, lg.seed, CR_DEL, "k02", 3, NULL, 0);
        cr_garbage_case("intact PUT+DEL without commit", (long)n, src, len, g, n, &models[ntx]);
        /* ... then a commit record whose checksum is wrong */
        memset(cv, 0, sizeof cv);
        cr_put64(cv, lg.n ? lg.r[lg.n - 1].seq + 1 : 1);
        cr_put64(cv + 8, len);
        cr_put32(cv + 16, 2);
        j = cr_mkrec(g + n, len + n, lg.seed, CR_COMMIT, NULL, 0, cv, 24);
        g[n + 3] ^= 0x40;
        cr_garbage_case("intact PUT+DEL, commit with a bad checksum", (long)(n + j), src, len, g, n + j, &models[ntx]);
        /* ... intact commits that do not close this transaction: a count of
         * 1 or 3, a sequence number not above the last, a nonzero reserved field */
        {
            static const char *const what[] = { "intact commit counting 1 of 2 records", "intact commit counting 3 of 2 records",
                                                "intact commit repeating the last sequence number",
                                                "intact commit with sequence number 0", "intact commit with a nonzero reserved field" };
            uint64_t last = lg.n ? lg.r[lg.n - 1].seq : 0;
            int c;
            for (c = 0; c < 5; c++) {
                memset(cv, 0, sizeof cv);
                cr_put64(cv, c == 2 ? last : c == 3 ? 0 : last + 1);
                cr_put64(cv + 8, len);
                cr_put32(cv + 16, c == 0 ? 1 : c == 1 ? 3 : 2);
                if (c == 4) cv[20] = 1;
                j = cr_mkrec(g + n, len + n, lg.seed, CR_COMMIT, NULL, 0, cv, 24);
                cr_garbage_case(what[c], (long)(n + j), src, len, g, n + j, &models[ntx]);
            }
        }
        /* a record header claiming huge lengths */
        memset(g, 0xA5, 64);
        g[8] = CR_PUT; g[9] = 0; g[10] = 0xff; g[11] = 0xff;
        cr_put32(g + 12, 0xfffffff0u);
        cr_garbage_case("header with huge lengths", 64, src, len, g, 64, &models[ntx]);
        cr_put32(g + 12, 1u << 30);
        g[10] = 5; g[11] = 0;
        cr_garbage_case("header with a 1 GiB value", 16, src, len, g, 16, &models[ntx]);
    }
    cr_log_free(&lg);
out:
    free(src);
    free(g);
}

/* ------------------------------------------------------------------ */
/* 4a. a transaction written by hand from the documented format */

static void test_handcrafted_txn(void)
{
    const char *path = tu_path("hand.db");
    cr_model models[6];
    uint64_t ends[6];
    unsigned char *src = NULL, g[512], cv[24];
    size_t len, n, first_count = 0, i;
    cr_log lg;
    kvdb *db;
    int rc, delta = 0;
    unsigned char buf[64];
    size_t vl = 0;
    if (cr_build(path, cr_seed ^ 0x4444, 5, KVDB_SYNC_FULL, 40, 0, models, ends) != 0) return;
    src = cr_slurp(path, &len);
    REQUIRE(src);
    cr_parse(src, len, &lg);
    CHECK(lg.hdr_ok);
    CHECK(lg.stop == len);
    /* commits: seq increasing, durable never beyond the commit itself, count = the txn's records */
    for (i = 0; i < lg.n; i++) {
        if (lg.r[i].type == CR_COMMIT) {
            size_t cnt = 0, k;
            for (k = i; k > 0 && lg.r[k - 1].type != CR_COMMIT; k--) cnt++;
            if (first_count == 0) { first_count = cnt; delta = (int)lg.r[i].count - (int)cnt; }
            CHECK((int)lg.r[i].count - (int)cnt == delta);
            CHECK(lg.r[i].durable <= lg.r[i].off);
            CHECK(lg.r[i].klen == 0 && lg.r[i].vlen == 24);
        } else {
            CHECK(lg.r[i].type == CR_PUT || lg.r[i].type == CR_DEL);
            CHECK(lg.r[i].klen >= 1);
        }
    }
    CHECK(delta == 0 || delta == 1);
    REQUIRE(lg.n > 0 && lg.r[lg.n - 1].type == CR_COMMIT && lg.stop == len);
    /* append: PUT k03 = "handmade", PUT "brand-new" = "", COMMIT */
    n = cr_mkrec(g, len, lg.seed, CR_PUT, "k03", 3, "handmade", 8);
    n += cr_mkrec(g + n, len + n, lg.seed, CR_PUT, "brand-new", 9, NULL, 0);
    memset(cv, 0, sizeof cv);
    cr_put64(cv, lg.r[lg.n - 1].seq + 1);
    cr_put64(cv + 8, len);
    cr_put32(cv + 16, (uint32_t)(2 + delta));
    n += cr_mkrec(g + n, len + n, lg.seed, CR_COMMIT, NULL, 0, cv, 24);
    REQUIRE(cr_spit2(path, src, len, g, n) == 0);
    rc = cr_open(path, 0, KVDB_SYNC_FULL, &db);
    if (rc != KVDB_OK) {
        tu_fail(__FILE__, __LINE__, "open with a handmade txn = %d (%s) [%s]", rc, kvdb_strerror(rc), kvdb_errmsg());
    } else {
        CHECK_OK(kvdb_get(db, "k03", 3, buf, sizeof buf, &vl));
        CHECK(vl == 8 && memcmp(buf, "handmade", 8) == 0);
        CHECK_OK(kvdb_get(db, "brand-new", 9, buf, sizeof buf, &vl));
        CHECK(vl == 0);
        CHECK_OK(kvdb_close(db));
        CHECK(cr_fsize(path) == (long long)(len + n + 40)); /* and the seal close appends */
    }
    cr_log_free(&lg);
    free(src);
}

/* ------------------------------------------------------------------ */
/* 4b. bit flips in a closed file */

/* sync: how the file is written (one session); sync_at: kvdb_sync() after
 * that commit.  Expectations follow the recovery rule exactly, from the
 * durable fields parsed out of the file. */
static void cr_bit_flips(int sync, int sync_at)
{
    const char *path = tu_path("flip-src.db"), *fp = tu_path("flip.db");
    int ntx = cr_slow ? 8 : 14, fails = 0, first_txn_corrupt = -1, last_txn_cut = -1;
    cr_model models[16];
    uint64_t ends[16], rng = cr_seed ^ 0x5555;
    unsigned char *src = NULL;
    size_t len, p;
    cr_log lg;
    int rc;
    memset(&lg, 0, sizeof lg);
    cr_build_sync_at = sync_at;
    rc = cr_build(path, cr_seed ^ 0x5556 ^ (uint64_t)sync, ntx, sync, 60, 0, models, ends);
    cr_build_sync_at = 0;
    if (rc != 0) return;
    src = cr_slurp(path, &len);
    REQUIRE(src);
    cr_parse(src, len, &lg);
    if (!lg.hdr_ok || lg.stop != len) {
        tu_fail(__FILE__, __LINE__, "file does not follow the documented format (header ok %d, intact to %llu of %zu)",
                lg.hdr_ok, (unsigned long long)lg.stop, len);
        goto out;
    }
    /* the durable fields tell the truth: with SYNC_FULL every earlier commit
     * was synced; with NORMAL only what kvdb_sync() (or open/close) synced */
    for (p = 0; p < lg.n; p++) {
        const cr_rec *c = &lg.r[p];
        int j;
        if (c->type != CR_COMMIT) continue;
        if (c->count == 0 && c->durable == c->off) continue; /* a seal (kvdb_sync, close) */
        for (j = 1; j <= ntx && ends[j] != c->end; j++) {}
        if (j > ntx) { tu_fail(__FILE__, __LINE__, "commit record at %llu ends where no commit ended", (unsigned long long)c->off); continue; }
        if (c->durable > c->off)
            tu_fail(__FILE__, __LINE__, "commit %d at %llu claims %llu bytes durable", j, (unsigned long long)c->off, (unsigned long long)c->durable);
        if (sync == KVDB_SYNC_FULL && c->durable < ends[j - 1])
            tu_fail(__FILE__, __LINE__, "SYNC_FULL commit %d: durable %llu, but the previous commit (ending at %llu) was synced",
                    j, (unsigned long long)c->durable, (unsigned long long)ends[j - 1]);
        if (sync == KVDB_SYNC_NORMAL && j <= sync_at && c->durable > ends[0])
            tu_fail(__FILE__, __LINE__, "SYNC_NORMAL commit %d before any sync: durable %llu > %llu",
                    j, (unsigned long long)c->durable, (unsigned long long)ends[0]);
        if (sync == KVDB_SYNC_NORMAL && j > sync_at && c->durable != ends[sync_at]) /* (the seal after it is not synced) */
            tu_fail(__FILE__, __LINE__, "SYNC_NORMAL commit %d after kvdb_sync at %llu: durable %llu",
                    j, (unsigned long long)ends[sync_at], (unsigned long long)c->durable);
    }
    for (p = 0; p < len && fails < 3; p++) {
        unsigned char masks[8];
        int nm, mi;
        masks[0] = 0x01;
        masks[1] = (unsigned char)(1u << (1 + tu_rand(&rng) % 7));
        nm = cr_slow ? 1 : 2;
        if (tu_scale() > 1) /* soak: every bit */
            for (nm = 0; nm < 8; nm++) masks[nm] = (unsigned char)(1u << nm);
        for (mi = 0; mi < nm; mi++) {
            kvdb *db;
            int want_corrupt = 0, j;
            uint64_t X = 0;
            size_t r;
            src[p] ^= masks[mi];
            if (cr_spit(fp, src, len) != 0) { tu_fail(__FILE__, __LINE__, "write"); src[p] ^= masks[mi]; goto out; }
            rc = cr_open(fp, 0, KVDB_SYNC_OFF, &db);
            if (p < CR_HDR) {
                /* the header: always refused, nothing changed */
                if (rc == KVDB_OK) {
                    kvdb_close(db);
                    tu_fail(__FILE__, __LINE__, "header byte %zu ^ 0x%02x: open succeeded", p, masks[mi]);
                    fails++;
                } else if (rc != KVDB_ENOTDB && rc != KVDB_ECORRUPT && rc != KVDB_EVERSION) {
                    tu_fail(__FILE__, __LINE__, "header byte %zu ^ 0x%02x: open = %d (%s)", p, masks[mi], rc, kvdb_strerror(rc));
                    fails++;
                } else if (!cr_same(fp, src, len)) {
                    tu_fail(__FILE__, __LINE__, "header byte %zu ^ 0x%02x: failed open changed the file", p, masks[mi]);
                    fails++;
                }
                src[p] ^= masks[mi];
                continue;
            }
            /* the damaged record starts at X; later commits proving X synced make it corruption */
            for (r = 0; r < lg.n; r++)
                if (lg.r[r].off <= p && p < lg.r[r].end) X = lg.r[r].off;
            for (r = 0; r < lg.n; r++)
                if (lg.r[r].type == CR_COMMIT && lg.r[r].off > X && lg.r[r].durable > X) want_corrupt = 1;
            if (want_corrupt) {
                if (rc == KVDB_OK) {
                    kvdb_close(db);
                    tu_fail(__FILE__, __LINE__, "byte %zu ^ 0x%02x (record at %llu, synced per later commits): open = OK, want ECORRUPT",
                            p, masks[mi], (unsigned long long)X);
                    fails++;
                } else if (rc != KVDB_ECORRUPT) {
                    tu_fail(__FILE__, __LINE__, "byte %zu ^ 0x%02x: open = %d (%s), want ECORRUPT", p, masks[mi], rc, kvdb_strerror(rc));
                    fails++;
                } else if (!cr_same(fp, src, len)) {
                    tu_fail(__FILE__, __LINE__, "byte %zu ^ 0x%02x: ECORRUPT but the file was changed", p, masks[mi]);
                    fails++;
                }
                if (X < ends[1] && first_txn_corrupt < 0) first_txn_corrupt = 1;
            } else {
                j = cr_prefix(ends, ntx, X);
                if (rc != KVDB_OK) {
                    tu_fail(__FILE__, __LINE__, "byte %zu ^ 0x%02x (record at %llu, never proven synced): open = %d (%s), want OK",
                            p, masks[mi], (unsigned long long)X, rc, kvdb_strerror(rc));
                    fails++;
                } else {
                    struct kvdb_stat st;
                    fails += cr_check_model(db, &models[j], "flipped byte", (long)p) != 0;
                    CHECK_OK(kvdb_stat(db, &st));
                    if (st.torn_bytes != len - ends[j]) {
                        tu_fail(__FILE__, __LINE__, "byte %zu flipped: torn_bytes %llu, want %llu", p,
                                (unsigned long long)st.torn_bytes, (unsigned long long)(len - ends[j]));
                        fails++;
                    }
                    CHECK_OK(kvdb_close(db));
                    if (!cr_kept(fp, src, ends[j])) {
                        tu_fail(__FILE__, __LINE__, "byte %zu flipped: file %lld bytes after open, want %llu (and a seal)", p,
                                cr_fsize(fp), (unsigned long long)ends[j]);
                        fails++;
                    }
                }
                if (X < ends[1] && first_txn_corrupt < 0) first_txn_corrupt = 0;
                if (X >= ends[ntx - 1] && last_txn_cut < 0) last_txn_cut = 1;
            }
            src[p] ^= masks[mi];
        }
    }
    /* a damaged first transaction is proven synced by the commits after the
     * sync (every later commit with SYNC_FULL); damage in the last one,
     * written after the last sync, is a torn tail */
    CHECK(first_txn_corrupt == 1);
    CHECK(last_txn_cut == 1);
out:
    cr_log_free(&lg);
    free(src);
}

static void test_bit_flips_full(void) { cr_bit_flips(KVDB_SYNC_FULL, 0); }
/* SYNC_NORMAL with one kvdb_sync() in the middle: damage before it is
 * corruption, damage after it a torn tail */
static void test_bit_flips_normal_sync(void) { cr_bit_flips(KVDB_SYNC_NORMAL, cr_slow ? 4 : 7); }

/* ------------------------------------------------------------------ */
/* 4c. bytes of records flipped while the database is open */

static void test_flips_live(void)
{
    const char *path = tu_path("live.db");
    kvdb *db;
    kvdb_txn *t;
    unsigned char *src = NULL, k[32], v[300], buf[400];
    size_t len, r;
    cr_log lg;
    int i, fd, where;
    const int nkeys = 12;
    memset(&lg, 0, sizeof lg);
    unlink(path);
    REQUIRE_OK(cr_open(path, KVDB_CREATE, KVDB_SYNC_NORMAL, &db));
    for (i = 0; i < nkeys; i++) {
        size_t kl = (size_t)sprintf((char *)k, "live%02d", i), vl = i == 0 ? 0 : (size_t)(i * 23);
        memset(v, 'a' + i, vl);
        CHECK_OK(kvdb_put(db, k, kl, "old", 3));
        CHECK_OK(kvdb_put(db, k, kl, v, vl));
    }
    CHECK_OK(kvdb_close(db));
    src = cr_slurp(path, &len);
    REQUIRE(src);
    cr_parse(src, len, &lg);
    if (!lg.hdr_ok || lg.stop != len) {
        tu_fail(__FILE__, __LINE__, "file does not follow the documented format");
        goto out;
    }
    REQUIRE_OK(cr_open(path, 0, KVDB_SYNC_NORMAL, &db));
    fd = open(path, O_RDWR);
    if (fd < 0) { tu_fail(__FILE__, __LINE__, "open fd"); kvdb_close(db); goto out; }
    for (i = 0; i < nkeys; i++) {
        size_t kl = (size_t)sprintf((char *)k, "live%02d", i), vl = i == 0 ? 0 : (size_t)(i * 23);
        uint64_t roff = 0;
        memset(v, 'a' + i, vl);
        for (r = 0; r < lg.n; r++)   /* the latest PUT of this key */
            if (lg.r[r].type == CR_PUT && lg.r[r].klen == kl && memcmp(src + lg.r[r].off + 16, k, kl) == 0)
                roff = lg.r[r].off;
        if (!roff) { tu_fail(__FILE__, __LINE__, "no record for %s", k); break; }
        /* checksum, type, klen, vlen, a key byte, value bytes */
        for (where = 0; where < 8; where++) {
            static const int at[8] = { 0, 7, 8, 10, 12, 13, 16, 17 };
            uint64_t off = roff + (uint64_t)at[where];
            unsigned char orig = src[off], bad;
            size_t got = 12345;
            int rc;
            const void *pv;
            if (where == 7) {
                if (vl == 0) continue;
                off = roff + 16 + kl + (uint64_t)(i % vl);   /* a value byte */
                orig = src[off];
            }
            bad = orig ^ (where == 4 ? 0x80 : 0x01);
            if (pwrite(fd, &bad, 1, (off_t)off) != 1) { tu_fail(__FILE__, __LINE__, "pwrite"); break; }
            rc = kvdb_get(db, k, kl, buf, sizeof buf, &got);
            if (rc != KVDB_ECORRUPT && !(rc == KVDB_OK && got == vl && memcmp(buf, v, vl) == 0))
                tu_fail(__FILE__, __LINE__, "%s: byte %d of its record flipped under the handle: kvdb_get = %d (%s), vlen %zu (want %zu)%s",
                        k, (int)(off - roff), rc, kvdb_strerror(rc), got, vl, rc == KVDB_OK && got == vl ? " WRONG BYTES" : "");
            if (kvdb_begin(db, KVDB_TXN_RDONLY, &t) == KVDB_OK) {
                pv = NULL; got = 12345;
                rc = kvdb_txn_get(t, k, kl, &pv, &got);
                if (rc != KVDB_ECORRUPT && !(rc == KVDB_OK && got == vl && (vl == 0 || memcmp(pv, v, vl) == 0)))
                    tu_fail(__FILE__, __LINE__, "%s: byte %d of its record flipped: kvdb_txn_get = %d, vlen %zu (want %zu)",
                            k, (int)(off - roff), rc, got, vl);
                kvdb_abort(t);
            } else {
                tu_fail(__FILE__, __LINE__, "begin");
            }
            if (pwrite(fd, &orig, 1, (off_t)off) != 1) { tu_fail(__FILE__, __LINE__, "pwrite"); break; }
            got = 12345;
            rc = kvdb_get(db, k, kl, buf, sizeof buf, &got);
            if (!(rc == KVDB_OK && got == vl && memcmp(buf, v, vl) == 0))
                tu_fail(__FILE__, __LINE__, "%s: after restoring byte %d: kvdb_get = %d, vlen %zu", k, (int)(off - roff), rc, got);
        }
    }
    close(fd);
    CHECK_OK(kvdb_close(db));
out:
    cr_log_free(&lg);
    free(src);
}

/* A key whose value is damaged reads as KVDB_ECORRUPT, and can still be
 * deleted or overwritten: a write that replaces the record of its own key
 * compares the key but does not hash the value it throws away.  (Before,
 * both failed with KVDB_ECORRUPT, and every delete hashed the whole value
 * twice: 116-158 us for a 1 MiB one.) */
static void test_damaged_value_replaceable(void)
{
    const char *path = tu_path("dvr.db");
    kvdb *db;
    unsigned char *src = NULL, k[32], v[300], buf[400];
    size_t len, r, got;
    cr_log lg;
    int i, fd;
    const int nkeys = 8;
    memset(&lg, 0, sizeof lg);
    unlink(path);
    REQUIRE_OK(cr_open(path, KVDB_CREATE, KVDB_SYNC_NORMAL, &db));
    for (i = 0; i < nkeys; i++) {
        size_t kl = (size_t)sprintf((char *)k, "dvr%02d", i);
        memset(v, 'a' + i, 40 + (size_t)i);
        CHECK_OK(kvdb_put(db, k, kl, v, 40 + (size_t)i));
    }
    CHECK_OK(kvdb_close(db));
    src = cr_slurp(path, &len);
    REQUIRE(src);
    cr_parse(src, len, &lg);
    REQUIRE_OK(cr_open(path, 0, KVDB_SYNC_NORMAL, &db));
    fd = open(path, O_RDWR);
    if (fd < 0) { tu_fail(__FILE__, __LINE__, "open fd"); kvdb_close(db); goto out; }
    for (i = 0; i < nkeys; i++) {
        size_t kl = (size_t)sprintf((char *)k, "dvr%02d", i);
        uint64_t roff = 0, off;
        unsigned char bad;
        int rc;
        for (r = 0; r < lg.n; r++)
            if (lg.r[r].type == CR_PUT && lg.r[r].klen == kl && memcmp(src + lg.r[r].off + 16, k, kl) == 0)
                roff = lg.r[r].off;
        if (!roff) { tu_fail(__FILE__, __LINE__, "no record for %s", k); break; }
        off = roff + 16 + kl + 5; /* a value byte */
        bad = src[off] ^ 0x04;
        if (pwrite(fd, &bad, 1, (off_t)off) != 1) { tu_fail(__FILE__, __LINE__, "pwrite"); break; }
        CHECK_RC(kvdb_get(db, k, kl, buf, sizeof buf, &got), KVDB_ECORRUPT);
        if (i % 2 == 0) {
            rc = kvdb_del(db, k, kl);
            if (rc != KVDB_OK) tu_fail(__FILE__, __LINE__, "%s: delete of a key whose value is damaged = %d (%s)", k, rc, kvdb_errmsg());
            CHECK_RC(kvdb_get(db, k, kl, buf, sizeof buf, &got), KVDB_NOTFOUND);
        } else {
            rc = kvdb_put(db, k, kl, "new", 3);
            if (rc != KVDB_OK) tu_fail(__FILE__, __LINE__, "%s: overwrite of a key whose value is damaged = %d (%s)", k, rc, kvdb_errmsg());
            got = 0;
            CHECK_OK(kvdb_get(db, k, kl, buf, sizeof buf, &got));
            CHECK(got == 3 && memcmp(buf, "new", 3) == 0);
        }
    }
    close(fd);
    CHECK_OK(kvdb_close(db));
out:
    cr_log_free(&lg);
    free(src);
}

/* ------------------------------------------------------------------ */
/* 5. after a torn tail is cut the database keeps working */

static void test_cut_then_write(void)
{
    const char *path = tu_path("ctw-src.db"), *p = tu_path("ctw.db");
    int ntx = 16, c, fails = 0;
    cr_model models[17];
    uint64_t ends[17], rng = cr_seed ^ 0x7777;
    unsigned char *src = NULL, junk[300];
    size_t len;
    if (cr_build(path, cr_seed ^ 0x7778, ntx, KVDB_SYNC_NORMAL, 120, 1, models, ends) != 0) return;
    src = cr_slurp(path, &len);
    REQUIRE(src);
    for (c = 0; c < (int)sizeof junk; c++) junk[c] = (unsigned char)tu_rand(&rng);
    for (c = 0; c < 12 && fails == 0; c++) {
        /* cuts: inside the last txn, inside earlier txns, at a commit end; some with garbage after */
        uint64_t L;
        size_t glen = c % 3 == 2 ? 1 + (size_t)(tu_rand(&rng) % sizeof junk) : 0;
        int j, k, rc;
        kvdb *db;
        struct kvdb_stat st;
        cr_model m;
        cr_log lg;
        size_t n2;
        uint64_t good;
        unsigned char *after;
        if (c == 0) L = ends[ntx] - 1;
        else if (c == 1) L = ends[ntx - 1];
        else if (c == 2) L = ends[ntx];
        else L = ends[0] + tu_rand(&rng) % (ends[ntx] - ends[0]);
        j = cr_prefix(ends, ntx, L);
        cr_parse(src, (size_t)L, &lg); /* the kept prefix ends with commit j or the seal after it */
        good = lg.last_commit_end;
        cr_log_free(&lg);
        REQUIRE(cr_spit2(p, src, (size_t)L, junk, glen) == 0);
        rc = cr_open(p, 0, KVDB_SYNC_FULL, &db);
        if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "cut %llu: open = %d [%s]", (unsigned long long)L, rc, kvdb_errmsg()); return; }
        CHECK_OK(kvdb_stat(db, &st));
        if (good < ends[j] || good > ends[j] + 40 || st.torn_bytes != L + glen - good) {
            tu_fail(__FILE__, __LINE__, "cut %llu + %zu junk: torn %llu, want %llu", (unsigned long long)L, glen,
                    (unsigned long long)st.torn_bytes, (unsigned long long)(L + glen - good));
            fails++;
        }
        m = models[j];
        /* write on the same handle that cut the tail */
        for (k = 0; k < 6; k++)
            if (cr_random_txn(db, &m, &rng, 100) != 0) { fails++; break; }
        fails += cr_check_model(db, &m, "cut then write, before close, cut", (long)L) != 0;
        CHECK_OK(kvdb_close(db));
        rc = cr_open(p, 0, KVDB_SYNC_FULL, &db);
        if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "cut %llu: reopen = %d [%s]", (unsigned long long)L, rc, kvdb_errmsg()); return; }
        fails += cr_check_model(db, &m, "cut then write, reopened, cut", (long)L) != 0;
        CHECK_OK(kvdb_stat(db, &st));
        CHECK(st.torn_bytes == 0);
        /* and once more: a fresh transaction after reopen */
        if (cr_random_txn(db, &m, &rng, 100) != 0) fails++;
        CHECK_OK(kvdb_close(db));
        /* the new data was written right where the tail was cut, all intact */
        after = cr_slurp(p, &n2);
        REQUIRE(after);
        cr_parse(after, n2, &lg);
        if (!lg.hdr_ok || lg.stop != n2 || n2 < ends[j] || memcmp(after, src, (size_t)ends[j]) != 0) {
            tu_fail(__FILE__, __LINE__, "cut %llu: the file after writing is not the kept prefix + intact records (intact to %llu of %zu)",
                    (unsigned long long)L, (unsigned long long)lg.stop, n2);
            fails++;
        }
        cr_log_free(&lg);
        free(after);
        rc = cr_open(p, KVDB_RDONLY, KVDB_SYNC_FULL, &db);
        if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "cut %llu: rdonly reopen = %d", (unsigned long long)L, rc); return; }
        fails += cr_check_model(db, &m, "cut then write, final, cut", (long)L) != 0;
        CHECK_OK(kvdb_close(db));
    }
    free(src);
}

/* ------------------------------------------------------------------ */
/* A file that holds anything is never recreated: every prefix of a real
 * database's header, zeros of every length up to a header and one past it,
 * and a header cut inside a longer file, each opened for writing with
 * KVDB_CREATE, fail with KVDB_ECORRUPT or KVDB_ENOTDB and change nothing. */
static void test_short_file_not_recreated(void)
{
    const char *src_path = tu_path("hdr-src.db"), *p = tu_path("hdr.db");
    unsigned char *src, zeros[LG_HDR + 1], junk[LG_HDR];
    size_t len, L;
    kvdb *db;
    int rc, fails = 0, k;
    REQUIRE_OK(cr_open(src_path, KVDB_CREATE, KVDB_SYNC_OFF, &db));
    REQUIRE_OK(kvdb_put(db, "k", 1, "v", 1));
    REQUIRE_OK(kvdb_close(db));
    src = cr_slurp(src_path, &len);
    REQUIRE(src && len > LG_HDR);
    memset(zeros, 0, sizeof zeros);
    memcpy(junk, src, LG_HDR);
    junk[20] ^= 1; /* a whole header that fails its checksum */
    for (k = 0; k < 4 && fails < 3; k++) {
        size_t maxl = k == 1 ? sizeof zeros : LG_HDR;
        for (L = 1; L <= maxl && fails < 3; L++) {
            const unsigned char *b = k == 0 ? src : k == 1 ? zeros : junk;
            if (k == 0 && L == LG_HDR) continue; /* a whole header: a database */
            if (k >= 2 && L != LG_HDR) continue;
            if (k == 3) { /* the damaged header in front of the real records */
                if (cr_spit2(p, junk, LG_HDR, src + LG_HDR, len - LG_HDR) != 0) { fails++; break; }
            } else if (cr_spit(p, b, L) != 0) {
                fails++;
                break;
            }
            rc = cr_open(p, KVDB_CREATE, KVDB_SYNC_FULL, &db);
            if (rc == KVDB_OK) {
                tu_fail(__FILE__, __LINE__, "case %d, %zu bytes: opened (recreated?)", k, L);
                kvdb_close(db);
                fails++;
            } else if (rc != KVDB_ECORRUPT && rc != KVDB_ENOTDB) {
                tu_fail(__FILE__, __LINE__, "case %d, %zu bytes: open = %d (%s)", k, L, rc, kvdb_errmsg());
                fails++;
            }
            if (k == 3) {
                unsigned char *now = cr_slurp(p, &L);
                if (!now || L != len || memcmp(now, junk, LG_HDR) || memcmp(now + LG_HDR, src + LG_HDR, len - LG_HDR)) {
                    tu_fail(__FILE__, __LINE__, "case 3: the file changed");
                    fails++;
                }
                free(now);
                L = LG_HDR;
            } else if (!cr_same(p, b, L)) {
                tu_fail(__FILE__, __LINE__, "case %d, %zu bytes: the file changed", k, L);
                fails++;
            }
        }
    }
    /* an empty file is the one that may become a database */
    REQUIRE(cr_spit(p, "", 0) == 0);
    CHECK_OK(cr_open(p, KVDB_CREATE, KVDB_SYNC_FULL, &db));
    if (db) CHECK_OK(kvdb_close(db));
    free(src);
}

/* ------------------------------------------------------------------ */
/* Data once synced is never cut (kvdb.h promise 7).  Two databases of
 * SYNC_FULL transactions, the last one putting every key: one closed
 * cleanly (it ends with a seal), one "killed" after its last acknowledged
 * commit (the file copied while the handle is still open: what kill -9
 * leaves), with a checkpoint half-way so that it has a sidecar too.  Each
 * mutation -- one byte flipped in every record of the last transaction, in
 * a sample of the others and in the seal, or the file cut at a sample of
 * offsets -- with and without the sidecar, is opened writable and
 * read-only and checked.  The horizon H is computed here from the format:
 * the largest durable field of an intact COMMIT, or the sidecar's P.
 * Damage below H, or a file shorter than P: KVDB_ECORRUPT from all three
 * and the file unchanged.  Otherwise (the seal; after the kill, the last
 * transaction; a cut past every piece of evidence): the open cuts back to
 * the last complete transaction before the damage and nothing before it. */
typedef struct {
    const char *name;
    unsigned char *log, *idx;
    size_t len, idxlen;
    cr_log lg;
    cr_model models[40];
    uint64_t ends[40];
    int ntx;
} cr_hzdb;

static int cr_hz_build(cr_hzdb *h, const char *path, int killed, uint64_t seed)
{
    kvdb *db;
    struct kvdb_stat st;
    uint64_t rng = seed | 1;
    char idxp[700];
    int j, i;
    kvdb_txn *t;
    unlink(path);
    snprintf(idxp, sizeof idxp, "%s.idx", path);
    unlink(idxp);
    h->ntx = 30;
    memset(&h->models[0], 0, sizeof h->models[0]);
    h->ends[0] = CR_HDR;
    if (cr_open(path, KVDB_CREATE, KVDB_SYNC_FULL, &db) != KVDB_OK) { tu_fail(__FILE__, __LINE__, "create: %s", kvdb_errmsg()); return -1; }
    for (j = 1; j <= h->ntx; j++) {
        h->models[j] = h->models[j - 1];
        if (j < h->ntx) {
            if (cr_random_txn(db, &h->models[j], &rng, 100) != 0) { kvdb_close(db); return -1; }
        } else { /* the last: a put of every key */
            if (kvdb_begin(db, 0, &t) != KVDB_OK) { kvdb_close(db); return -1; }
            for (i = 0; i < CR_NK; i++) {
                unsigned char k[80];
                size_t kl = cr_key(i, k), vl = 20 + (size_t)(tu_rand(&rng) % 120), n;
                for (n = 0; n < vl; n++) h->models[j].val[i][n] = (unsigned char)tu_rand(&rng);
                h->models[j].present[i] = 1;
                h->models[j].vlen[i] = (uint16_t)vl;
                if (kvdb_txn_put(t, k, kl, h->models[j].val[i], vl) != KVDB_OK) { kvdb_abort(t); kvdb_close(db); return -1; }
            }
            if (kvdb_commit(t) != KVDB_OK) { kvdb_close(db); return -1; }
        }
        if (killed && j == h->ntx / 2 && kvdb_checkpoint(db) != KVDB_OK) { tu_fail(__FILE__, __LINE__, "checkpoint: %s", kvdb_errmsg()); kvdb_close(db); return -1; }
        if (kvdb_stat(db, &st) != KVDB_OK) { kvdb_close(db); return -1; }
        h->ends[j] = st.file_bytes;
    }
    if (killed) { /* what kill -9 leaves: the file as it is now */
        h->log = cr_slurp(path, &h->len);
        h->idx = cr_slurp(idxp, &h->idxlen);
        if (kvdb_close(db) != KVDB_OK) return -1;
        if (h->log && h->len > h->ends[h->ntx]) { /* space reserved ahead: zeros, left out here */
            size_t z;
            for (z = (size_t)h->ends[h->ntx]; z < h->len; z++)
                if (h->log[z]) { tu_fail(__FILE__, __LINE__, "killed: byte %zu past the last commit is not zero", z); return -1; }
            h->len = (size_t)h->ends[h->ntx];
        }
    } else {
        if (kvdb_close(db) != KVDB_OK) return -1;
        h->log = cr_slurp(path, &h->len);
        h->idx = cr_slurp(idxp, &h->idxlen);
    }
    if (!h->log || (sc_layout() && (!h->idx || h->idxlen < 128))) { /* (hosts that write sidecars) */
        tu_fail(__FILE__, __LINE__, "%s: no log or sidecar", h->name);
        return -1;
    }
    cr_parse(h->log, h->len, &h->lg);
    if (h->lg.stop != h->len) { tu_fail(__FILE__, __LINE__, "%s: the log does not parse", h->name); return -1; }
    /* the format as documented: a clean close ends with a seal covering
     * all before it; a killed SYNC_FULL log's last commit covers all
     * before the last transaction */
    {
        const cr_rec *last = &h->lg.r[h->lg.n - 1];
        if (last->type != CR_COMMIT) { tu_fail(__FILE__, __LINE__, "%s: the log does not end with a COMMIT", h->name); return -1; }
        if (!killed && (last->count != 0 || last->durable != last->off || last->off != h->ends[h->ntx])) {
            tu_fail(__FILE__, __LINE__, "clean: the log does not end with a seal (count %u, durable %llu at %llu)",
                    last->count, (unsigned long long)last->durable, (unsigned long long)last->off);
            return -1;
        }
        if (killed && (h->len != h->ends[h->ntx] || last->durable != h->ends[h->ntx - 1])) {
            tu_fail(__FILE__, __LINE__, "killed: the last commit's durable field is %llu, not %llu",
                    (unsigned long long)last->durable, (unsigned long long)h->ends[h->ntx - 1]);
            return -1;
        }
    }
    return 0;
}

static int cr_hz_nbad, cr_hz_ngood; /* cases below / past the horizon */

/* One mutation of h: m (ml bytes) as the log, the sidecar beside it or
 * not; flip = the offset of the flipped byte, or -1 for a cut.  Returns
 * the number of failures. */
static int cr_hz_case(const cr_hzdb *h, const char *path, const unsigned char *m, size_t ml, long flip, int with_idx)
{
    char idxp[700];
    uint64_t H = 0, P = with_idx ? cr_le64(h->idx + 48) : 0, r = ml, T = CR_HDR;
    size_t i;
    int corrupt, rc, j, fails = 0;
    kvdb *db;
    kvdb_check_stat cs;
    unsigned char *after;
    size_t al;
    const char *what = flip >= 0 ? "flip" : "cut";
    long where = flip >= 0 ? flip : (long)ml;
    /* the evidence left in m, and the first record that does not verify */
    for (i = 0; i < h->lg.n; i++) {
        const cr_rec *e = &h->lg.r[i];
        int intact = e->end <= ml && !(flip >= 0 && (uint64_t)flip >= e->off && (uint64_t)flip < e->end);
        if (intact && e->type == CR_COMMIT && e->durable > H) H = e->durable;
        if (!intact && e->off < r) r = e->off;
        if (intact && e->off < r && e->type == CR_COMMIT) T = e->end;
    }
    if (P > H) H = P;
    corrupt = (r < ml && r < H) || ml < P;
    if (corrupt) cr_hz_nbad++;
    else cr_hz_ngood++;
    snprintf(idxp, sizeof idxp, "%s.idx", path);
    if (cr_spit(path, m, ml) != 0) return 1; /* (removes the sidecar) */
    if (with_idx && cr_spit(idxp, h->idx, h->idxlen) != 0) return 1;
    /* kvdb_check */
    rc = kvdb_check(path, NULL, &cs);
    if (corrupt ? rc != KVDB_ECORRUPT : rc != KVDB_OK) {
        tu_fail(__FILE__, __LINE__, "%s %s at %ld (%s sidecar, H %llu): check = %d, want %d [%s]", h->name, what, where,
                with_idx ? "with" : "no", (unsigned long long)H, rc, corrupt ? KVDB_ECORRUPT : KVDB_OK, kvdb_errmsg());
        fails++;
    }
    /* read-only, then writable */
    for (j = 0; j < 2; j++) {
        rc = cr_open(path, j ? 0 : KVDB_RDONLY, KVDB_SYNC_FULL, &db);
        if (corrupt && rc == KVDB_OK && with_idx && ml >= P && r < P) {
            /* An open that loads the sidecar reads none of the log it
             * covers: the damage is for the read that reaches it (and for
             * check).  Nothing is cut; a writable close may append a seal. */
            if (kvdb_close(db) != KVDB_OK) fails++;
            after = cr_slurp(path, &al);
            if (!after || al < ml || al > ml + 40 || memcmp(after, m, ml) != 0) {
                tu_fail(__FILE__, __LINE__, "%s %s at %ld: an open that loaded the sidecar changed the file (%zu bytes, was %zu)",
                        h->name, what, where, al, ml);
                fails++;
            }
            free(after);
            if (al != ml && (cr_spit(path, m, ml) != 0 || cr_spit(idxp, h->idx, h->idxlen) != 0)) return fails + 1;
            continue;
        }
        if (corrupt) {
            if (rc != KVDB_ECORRUPT) {
                tu_fail(__FILE__, __LINE__, "%s %s at %ld (%s sidecar, H %llu, damage at %llu): %s open = %d, want KVDB_ECORRUPT",
                        h->name, what, where, with_idx ? "with" : "no", (unsigned long long)H, (unsigned long long)r,
                        j ? "writable" : "read-only", rc);
                fails++;
                if (db) kvdb_close(db);
            }
            if (!cr_same(path, m, ml)) {
                tu_fail(__FILE__, __LINE__, "%s %s at %ld: a refused open changed the file", h->name, what, where);
                fails++;
            }
            continue;
        }
        if (rc != KVDB_OK) {
            tu_fail(__FILE__, __LINE__, "%s %s at %ld (%s sidecar, H %llu, damage at %llu): %s open = %d [%s]", h->name, what,
                    where, with_idx ? "with" : "no", (unsigned long long)H, (unsigned long long)r, j ? "writable" : "read-only",
                    rc, kvdb_errmsg());
            fails++;
            continue;
        }
        fails += cr_check_model(db, &h->models[cr_prefix(h->ends, h->ntx, T)], what, where) != 0;
        if (kvdb_close(db) != KVDB_OK) fails++;
        after = cr_slurp(path, &al);
        if (!after || (j == 0 && (al != ml || memcmp(after, m, ml) != 0)) ||
            (j == 1 && ((al != T && al != T + 40) || memcmp(after, m, (size_t)T) != 0))) {
            tu_fail(__FILE__, __LINE__, "%s %s at %ld: after a %s open the file is %zu bytes, want %s %llu", h->name, what, where,
                    j ? "writable" : "read-only", al, j ? "the kept" : "all", (unsigned long long)(j ? T : ml));
            fails++;
        }
        free(after);
    }
    return fails;
}

static void test_durable_horizon(void)
{
    cr_hzdb dbs[2];
    const char *src = tu_path("hz-src.db"), *p = tu_path("hz.db");
    unsigned char *m = NULL;
    uint64_t rng = cr_seed ^ 0x7a7a;
    int d, fails = 0, ncases = 0;
    memset(dbs, 0, sizeof dbs);
    dbs[0].name = "clean";
    dbs[1].name = "killed";
    for (d = 0; d < 2 && fails < 5; d++) {
        cr_hzdb *h = &dbs[d];
        size_t i, lastrec = 0, k;
        int wi;
        if (cr_hz_build(h, src, d, cr_seed ^ (0x1234 + (uint64_t)d)) != 0) goto out;
        m = malloc(h->len);
        if (!m) goto out;
        for (i = 0; i < h->lg.n; i++) /* the first record of the last transaction */
            if (h->lg.r[i].off == h->ends[h->ntx - 1]) lastrec = i;
        for (wi = 0; wi < (h->idx ? 2 : 1) && fails < 5; wi++) {
            /* a flip in every record of the last transaction (and the seal), and in a sample of the others */
            for (i = 0; i < h->lg.n && fails < 5; i++) {
                const cr_rec *e = &h->lg.r[i];
                long x;
                if (i < lastrec && tu_rand(&rng) % 4) continue;
                x = (long)(e->off + tu_rand(&rng) % (e->end - e->off));
                memcpy(m, h->log, h->len);
                m[x] ^= (unsigned char)(1u << (tu_rand(&rng) % 8));
                fails += cr_hz_case(h, p, m, h->len, x, wi);
                ncases++;
            }
            /* cuts at a sample of offsets, and inside the last records */
            for (k = 0; k < 40 && fails < 5; k++) {
                size_t L = k < 30 ? CR_HDR + (size_t)(tu_rand(&rng) % (h->len - CR_HDR)) : h->len - 1 - (k - 30) * 7;
                fails += cr_hz_case(h, p, h->log, L, -1, wi);
                ncases++;
            }
        }
        free(m);
        m = NULL;
    }
    if (sc_layout()) CHECK(ncases > 200 && cr_hz_nbad > 100 && cr_hz_ngood > 40);
    else CHECK(ncases > 100 && cr_hz_nbad > 50 && cr_hz_ngood > 20); /* no sidecar: half the cases */
    if (cr_verbose) printf("# horizon: %d cases, %d below it, %d past it\n", ncases, cr_hz_nbad, cr_hz_ngood);
out:
    free(m);
    for (d = 0; d < 2; d++) {
        free(dbs[d].log);
        free(dbs[d].idx);
        cr_log_free(&dbs[d].lg);
    }
}

int main(void)
{
    const char *fl = getenv("KVDB_TEST_FLAVOUR"), *sd = getenv("KVDB_TEST_SEED");
#ifdef KVDB_TEST_HASH_BITS
    cr_slow = 1;
#endif
    if (CR_ASAN || (fl && (strcmp(fl, "asan") == 0 || strcmp(fl, "hash4") == 0))) cr_slow = 1;
    if (sd && *sd) cr_seed = strtoull(sd, NULL, 0);
    cr_verbose = getenv("KVDB_TEST_VERBOSE") != NULL;
    signal(SIGPIPE, SIG_IGN);
    tu_tmpdir("crash");
    RUN(test_kill9);
    RUN(test_cut_every_byte);
    RUN(test_cut_large);
    RUN(test_garbage_tail);
    RUN(test_handcrafted_txn);
    RUN(test_bit_flips_full);
    RUN(test_bit_flips_normal_sync);
    RUN(test_flips_live);
    RUN(test_damaged_value_replaceable);
    RUN(test_cut_then_write);
    RUN(test_short_file_not_recreated);
    RUN(test_durable_horizon);
    tu_rmrf();
    TEST_MAIN_END();
}
