/*
 * fault.c -- I/O error loops, allocation failure loops, disk full.
 *
 * A fault-injecting kvdb_vfs wraps the POSIX layer: operation N of one kind
 * (open, read, write, sync, size, truncate, lock, map, sync_dir, random,
 * rename, remove)
 * fails, once (transient) or from then on (persistent).  A failing write
 * first writes a random part of its bytes, as a real short write would.
 * For every kind, both modes and N = 1, 2, ... until the workload runs to
 * its end without the fault firing, one scripted workload runs (create,
 * auto-commit puts and deletes, a transaction big enough for the write
 * set's hash table, empty values, reads through kvdb_get and read
 * transactions, kvdb_sync, close, reopen in SYNC_NORMAL with a small
 * sync_bytes, reopen in SYNC_FULL), with mmap and without.  Checked:
 *   - every call returns a kvdb code, errors with a message; no crash, and
 *     no file handle or mapping left open (the layer counts them; ASan/LSan
 *     in the asan flavour count memory);
 *   - reads on a handle always give the handle's committed state (or an
 *     error when a read itself fails), never wrong data;
 *   - after a failed sync, or a failed write that was not KVDB_EFULL, the
 *     handle refuses every further write (sticky) -- it never retries and
 *     pretends; after a transient fault that is not sticky, everything
 *     works again;
 *   - every reopen (in the workload, and a final one with the healthy POSIX
 *     layer) finds exactly the acknowledged commits plus possibly some of
 *     the failed ones that had reached the file -- each whole or not at all.
 * The allocation loop does the same through kvdb_options.alloc: allocation
 * N fails (transient / persistent) for every N; calls return KVDB_ENOMEM
 * or succeed, the hook's count of live blocks is 0 after every run, and a
 * reopen with the normal allocator finds a committed prefix.
 * Disk full: a quota on the file; writes get KVDB_EFULL (not sticky: the
 * engine cuts the partial write), reads keep working, nothing committed is
 * lost, writes resume when space is freed; KVDB_EFULL from a sync is sticky.
 *
 * The workload also writes the sidecar (kvdb_checkpoint, and every close),
 * so faults hit its temporary file, rename and directory sync too.
 * A second workload (fl_workload_cp) compacts: full and stepwise
 * compactions with commits between the steps, a read snapshot and its
 * iterator held across them, whole walks with iterators, a close in the
 * middle of one, a torn tail cut before one.  It goes through every kind of
 * I/O fault (remove too) and through the allocation loop; besides the
 * checks above: a compaction failed before its rename leaves the database
 * as it was and writable, a failed directory sync after the rename is
 * sticky, no "<path>.compact" outlives a compaction that is over (nor a
 * healthy reopen), snapshots keep their view.
 *
 * check_repair: kvdb_check of a clean and a damaged database and
 * kvdb_repair of the damaged one under every kind of I/O fault and every
 * allocation failure: check never reports damage that is not there (the
 * error is returned as what it is), never passes the damaged database;
 * repair's output equals a healthy repair's or is removed; the sources are
 * never changed.
 *
 * Files go to /dev/shm when it exists (fsync is free there) unless TMPDIR
 * is set.  Flavour: env KVDB_TEST_FLAVOUR; env KVDB_TEST_VERBOSE.  Env
 * KVDB_TEST_SCALE=N (make soak): every failing write is run N times, cut at
 * other lengths, and the compaction workload fails every read.
 */
#include "../kvdb.c"
#include "testutil.h"

#include <time.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <dirent.h>

static int fl_verbose;
static long fl_points_io, fl_points_alloc, fl_points_cp, fl_cp_failed;

static int fl_valid_rc(int rc) { return rc >= KVDB_ENOTDB && rc <= KVDB_DONE; }

/* ==================================================================
 * the fault-injecting file layer
 * ================================================================== */
enum { FK_OPEN, FK_READ, FK_WRITE, FK_SYNC, FK_SIZE, FK_TRUNC, FK_LOCK, FK_MAP, FK_SYNCDIR, FK_RANDOM, FK_RENAME,
       FK_REMOVE, FK_RESERVE, FK_N };
static const char *fk_name[FK_N] = { "open", "read", "write", "sync", "size", "truncate", "lock", "map",
                                     "sync_dir", "random", "rename", "remove", "reserve" };

typedef struct {
    const kvdb_vfs *base;
    long count[FK_N];
    int kind;               /* armed kind, or -1 */
    long at;
    int persistent, err;
    long nfired;
    long files, maps;       /* open handles and mappings now */
    uint64_t quota;         /* 0: none; writes past it: KVDB_EFULL */
    uint64_t rng;
    kvdb_vfs vfs;
} fv_ctx;

static int fv_fail(fv_ctx *c, int kind)
{
    long n = ++c->count[kind];
    if (kind != c->kind) return 0;
    if (n == c->at || (c->persistent && n > c->at)) {
        c->nfired++;
        return 1;
    }
    return 0;
}

static int fv_err(fv_ctx *c, int kind, int rc)
{
    return kv_err(rc, "injected %s fault (%s #%ld)", fk_name[kind], c->persistent ? "persistent" : "transient",
                  c->count[kind]);
}

static int fv_open(void *ctx, const char *path, unsigned flags, kvdb_file **out)
{
    fv_ctx *c = (fv_ctx *)ctx;
    int rc;
    *out = NULL;
    if (fv_fail(c, FK_OPEN)) return fv_err(c, FK_OPEN, c->err == KVDB_EFULL ? KVDB_EFULL : KVDB_EIO);
    rc = c->base->open(c->base->ctx, path, flags, out);
    if (rc == KVDB_OK) c->files++;
    return rc;
}
static int fv_close(void *ctx, kvdb_file *f)
{
    fv_ctx *c = (fv_ctx *)ctx;
    c->files--;
    return c->base->close(c->base->ctx, f);
}
static int fv_read(void *ctx, kvdb_file *f, uint64_t off, void *buf, size_t n)
{
    fv_ctx *c = (fv_ctx *)ctx;
    if (fv_fail(c, FK_READ)) return fv_err(c, FK_READ, KVDB_EIO);
    return c->base->read(c->base->ctx, f, off, buf, n);
}
static int fv_write(void *ctx, kvdb_file *f, uint64_t off, const void *buf, size_t n)
{
    fv_ctx *c = (fv_ctx *)ctx;
    if (c->quota && off + n > c->quota) { /* disk full: what fits, then ENOSPC */
        if (off < c->quota) c->base->write(c->base->ctx, f, off, buf, (size_t)(c->quota - off));
        c->nfired++;
        return kv_err(KVDB_EFULL, "injected: no space left on the device");
    }
    if (fv_fail(c, FK_WRITE)) {
        size_t part = n ? (size_t)(tu_rand(&c->rng) % n) : 0;
        if (part) c->base->write(c->base->ctx, f, off, buf, part);
        return fv_err(c, FK_WRITE, c->err);
    }
    return c->base->write(c->base->ctx, f, off, buf, n);
}
static int fv_sync(void *ctx, kvdb_file *f)
{
    fv_ctx *c = (fv_ctx *)ctx;
    if (fv_fail(c, FK_SYNC)) return fv_err(c, FK_SYNC, c->err);
    return c->base->sync(c->base->ctx, f);
}
static int fv_size(void *ctx, kvdb_file *f, uint64_t *out)
{
    fv_ctx *c = (fv_ctx *)ctx;
    if (fv_fail(c, FK_SIZE)) return fv_err(c, FK_SIZE, KVDB_EIO);
    return c->base->size(c->base->ctx, f, out);
}
static int fv_truncate(void *ctx, kvdb_file *f, uint64_t size)
{
    fv_ctx *c = (fv_ctx *)ctx;
    if (fv_fail(c, FK_TRUNC)) return fv_err(c, FK_TRUNC, KVDB_EIO);
    return c->base->truncate(c->base->ctx, f, size);
}
/* reserving log space ahead: its failure must change nothing visible */
static int fv_reserve(void *ctx, kvdb_file *f, uint64_t size)
{
    fv_ctx *c = (fv_ctx *)ctx;
    if (fv_fail(c, FK_RESERVE)) return fv_err(c, FK_RESERVE, c->err);
    return c->base->reserve ? c->base->reserve(c->base->ctx, f, size) : KVDB_OK;
}
static int fv_lock(void *ctx, kvdb_file *f, int ex)
{
    fv_ctx *c = (fv_ctx *)ctx;
    if (fv_fail(c, FK_LOCK)) return fv_err(c, FK_LOCK, KVDB_EIO);
    return c->base->lock(c->base->ctx, f, ex);
}
static int fv_map(void *ctx, kvdb_file *f, uint64_t len, const void **out)
{
    fv_ctx *c = (fv_ctx *)ctx;
    int rc;
    if (fv_fail(c, FK_MAP)) return fv_err(c, FK_MAP, KVDB_ENOMEM);
    rc = c->base->map(c->base->ctx, f, len, out);
    if (rc == KVDB_OK) c->maps++;
    return rc;
}
static int fv_unmap(void *ctx, kvdb_file *f, const void *p, uint64_t len)
{
    fv_ctx *c = (fv_ctx *)ctx;
    c->maps--;
    return c->base->unmap(c->base->ctx, f, p, len);
}
static int fv_remove(void *ctx, const char *path)
{
    fv_ctx *c = (fv_ctx *)ctx;
    if (fv_fail(c, FK_REMOVE)) return fv_err(c, FK_REMOVE, KVDB_EIO);
    return c->base->remove(c->base->ctx, path);
}
static int fv_rename(void *ctx, const char *a, const char *b)
{
    fv_ctx *c = (fv_ctx *)ctx;
    if (fv_fail(c, FK_RENAME)) return fv_err(c, FK_RENAME, KVDB_EIO);
    return c->base->rename(c->base->ctx, a, b);
}
static int fv_sync_dir(void *ctx, const char *path)
{
    fv_ctx *c = (fv_ctx *)ctx;
    if (fv_fail(c, FK_SYNCDIR)) return fv_err(c, FK_SYNCDIR, KVDB_EIO);
    return c->base->sync_dir(c->base->ctx, path);
}
static int fv_random(void *ctx, void *buf, size_t n)
{
    fv_ctx *c = (fv_ctx *)ctx;
    if (fv_fail(c, FK_RANDOM)) return fv_err(c, FK_RANDOM, KVDB_EIO);
    return c->base->random(c->base->ctx, buf, n);
}

static void fv_init(fv_ctx *c, int map)
{
    kvdb_vfs v = { NULL, fv_open, fv_close, fv_read, fv_write, fv_sync, fv_size, fv_truncate, fv_lock,
                   fv_map, fv_unmap, fv_remove, fv_rename, fv_sync_dir, fv_random, fv_reserve };
    memset(c, 0, sizeof *c);
    c->base = kvdb_vfs_posix();
    c->kind = -1;
    c->err = KVDB_EIO;
    c->rng = 0x5eed;
    v.ctx = c;
    if (!map) v.map = NULL, v.unmap = NULL;
    c->vfs = v;
}

/* ==================================================================
 * the counting, failing allocator
 * ================================================================== */
typedef struct {
    long live, count, at, nfired;
    int persistent;
} al_ctx;

/* The engine's background thread may allocate too (kvdb.h): the counts
 * are kept under a lock. */
static pthread_mutex_t al_mu = PTHREAD_MUTEX_INITIALIZER;

static int al_fail(al_ctx *a)
{
    long n = ++a->count;
    if (a->at && (n == a->at || (a->persistent && n > a->at))) {
        a->nfired++;
        return 1;
    }
    return 0;
}
static void *al_malloc(void *ctx, size_t n)
{
    al_ctx *a = (al_ctx *)ctx;
    void *p = NULL;
    pthread_mutex_lock(&al_mu);
    if (!al_fail(a)) {
        p = malloc(n);
        if (p) a->live++;
    }
    pthread_mutex_unlock(&al_mu);
    return p;
}
static void *al_realloc(void *ctx, void *p, size_t n)
{
    al_ctx *a = (al_ctx *)ctx;
    void *q = NULL;
    pthread_mutex_lock(&al_mu);
    if (!al_fail(a)) q = realloc(p, n);
    pthread_mutex_unlock(&al_mu);
    return q;
}
static void al_free(void *ctx, void *p)
{
    al_ctx *a = (al_ctx *)ctx;
    pthread_mutex_lock(&al_mu);
    if (p) a->live--;
    pthread_mutex_unlock(&al_mu);
    free(p);
}

/* ==================================================================
 * the model: NK keys; a value is (vseed, len), its bytes generated
 * ================================================================== */
#define FL_NK 24
#define FL_MAXV 2000
#define FL_MAXC 160

typedef struct { uint8_t present; uint32_t len; uint64_t vseed; } fl_val;
typedef struct { fl_val v[FL_NK]; } fl_state;

static size_t fl_key(int i, unsigned char *k)
{
    size_t n = (size_t)sprintf((char *)k, "fk%02d", i);
    if (i % 5 == 2) { k[n++] = 0; k[n++] = 'x'; }
    return n;
}
static void fl_fill(uint64_t vseed, uint32_t len, unsigned char *v)
{
    uint64_t s = vseed * 0x9E3779B97F4A7C15ULL + 7;
    uint32_t i;
    for (i = 0; i < len; i++) v[i] = (unsigned char)(tu_rand(&s) >> 24);
}

/* a commit: its operations (key, value or delete) and its outcome */
enum { C_OK, C_MAYBE, C_NO };
typedef struct {
    int status;
    int n;
    int key[16];
    fl_val val[16];
} fl_commit;

typedef struct {
    const char *what;       /* run description for messages */
    fv_ctx *fv;
    al_ctx *al;             /* NULL: default allocator */
    int alloc_loop;         /* only KVDB_ENOMEM is a legitimate error */
    const char *path;
    kvdb *db;
    int sticky;             /* the handle must refuse writes */
    int transient_fired;    /* a transient fault has fired: from now on everything works */
    fl_state cur;           /* the handle's committed state */
    fl_state base;          /* the state at the last check against the file */
    fl_commit log[FL_MAXC]; /* commits since base */
    int nlog;
    long fails;
    uint64_t vs;
    int cp_open;            /* a stepwise compaction is in progress */
    long cp_done, cp_failed;/* compactions completed / failed by a fault */
    long cp_sticky_left;    /* steps refused by a sticky handle with a compaction in progress */
} fl_run;

#define FL_FAIL(R, ...) do { if ((R)->fails++ < 1) { char m_[1024]; snprintf(m_, sizeof m_, __VA_ARGS__); \
    if (fl_verbose) printf("#   %s:%d: %s: %s\n", __FILE__, __LINE__, (R)->what, m_); \
    tu_fail(__FILE__, __LINE__, "%s: %s", (R)->what, m_); } } while (0)

static long fl_fired(const fl_run *R) { return R->fv->nfired + (R->al ? R->al->nfired : 0); }

/* check rc of a call made while `before` faults had fired */
static void fl_rc(fl_run *R, int rc, long before, const char *op)
{
    int fired = fl_fired(R) > before;
    if (!fl_valid_rc(rc)) FL_FAIL(R, "%s returned %d, not a kvdb code", op, rc);
    if (rc < 0 && !kvdb_errmsg()[0]) FL_FAIL(R, "%s = %d without a message", op, rc);
    if (rc < 0 && R->alloc_loop && rc != KVDB_ENOMEM) FL_FAIL(R, "%s = %d (%s) [%s], only ENOMEM may fail", op, rc, kvdb_strerror(rc), kvdb_errmsg());
    if (rc < 0 && !fired && !R->sticky && (R->transient_fired || (!R->fv->persistent && R->fv->kind < 0 && !R->al)))
        FL_FAIL(R, "%s = %d (%s) [%s] after the transient fault had passed", op, rc, kvdb_strerror(rc), kvdb_errmsg());
}

static char fl_why[200];

static int fl_obs_match(kvdb *db, const fl_state *s, int via_txn, int *rcout)
{
    unsigned char k[40], buf[FL_MAXV], want[FL_MAXV];
    kvdb_txn *t = NULL;
    int i, ok = 1, rc;
    *rcout = KVDB_OK;
    if (via_txn) {
        rc = kvdb_begin(db, KVDB_TXN_RDONLY, &t);
        if (rc != KVDB_OK) { *rcout = rc; return 1; }
    }
    for (i = 0; i < FL_NK && ok; i++) {
        size_t kl = fl_key(i, k), vl = 0;
        const unsigned char *got = buf;
        if (t) {
            const void *vp = NULL;
            rc = kvdb_txn_get(t, k, kl, &vp, &vl);
            got = (const unsigned char *)vp;
        } else {
            rc = kvdb_get(db, k, kl, buf, sizeof buf, &vl);
        }
        if (rc < 0) { *rcout = rc; break; } /* a read error: no data, no verdict on the rest */
        if (s->v[i].present) {
            fl_fill(s->v[i].vseed, s->v[i].len, want);
            if (rc != KVDB_OK || vl != s->v[i].len || memcmp(got, want, vl) != 0) {
                ok = 0;
                snprintf(fl_why, sizeof fl_why, "fk%02d: rc %d len %zu, want OK len %u", i, rc, vl, s->v[i].len);
            }
        } else if (rc != KVDB_NOTFOUND) {
            ok = 0;
            snprintf(fl_why, sizeof fl_why, "fk%02d: rc %d len %zu, want NOTFOUND", i, rc, vl);
        }
    }
    if (t) kvdb_abort(t);
    if (ok && *rcout == KVDB_OK) {
        struct kvdb_stat st;
        uint64_t n = 0;
        for (i = 0; i < FL_NK; i++) n += s->v[i].present;
        kvdb_stat(db, &st);
        if (st.keys != n) {
            ok = 0;
            snprintf(fl_why, sizeof fl_why, "kvdb_stat keys %llu, want %llu", (unsigned long long)st.keys, (unsigned long long)n);
        }
    }
    return ok;
}

/* reads on the live handle: the committed state, or a read error */
static void fl_check_live(fl_run *R, int via_txn)
{
    long before = fl_fired(R);
    int rc, ok;
    if (!R->db) return;
    ok = fl_obs_match(R->db, &R->cur, via_txn, &rc);
    fl_rc(R, rc, before, via_txn ? "read txn" : "kvdb_get");
    if (!ok) FL_FAIL(R, "reads on the handle disagree with its committed state: %s", fl_why);
}

static void fl_apply(fl_state *s, const fl_commit *c)
{
    int i;
    for (i = 0; i < c->n; i++) s->v[c->key[i]] = c->val[i];
}

/* db (just opened) must hold base + the OK commits + any of the MAYBE ones.
 * On success cur/base become what it holds. */
static void fl_check_reopen(fl_run *R, kvdb *db, const char *when)
{
    int maybe[FL_MAXC], nm = 0, i;
    unsigned long mask, lim;
    for (i = 0; i < R->nlog; i++)
        if (R->log[i].status == C_MAYBE && nm < 12) maybe[nm++] = i;
    lim = 1ul << nm;
    for (mask = 0; mask < lim; mask++) {
        fl_state s = R->base;
        int m = 0, rc;
        for (i = 0; i < R->nlog; i++) {
            if (R->log[i].status == C_OK) fl_apply(&s, &R->log[i]);
            else if (m < nm && maybe[m] == i) {
                if (mask & (1ul << m)) fl_apply(&s, &R->log[i]);
                m++;
            }
        }
        {
            long before = fl_fired(R);
            int ok = fl_obs_match(db, &s, 0, &rc), tries;
            for (tries = 0; rc != KVDB_OK && fl_fired(R) > before && tries < 3; tries++) {
                before = fl_fired(R); /* an injected read fault: read again */
                ok = fl_obs_match(db, &s, 0, &rc);
            }
            if (ok && rc == KVDB_OK) {
                R->base = R->cur = s;
                R->nlog = 0;
                return;
            }
            if (rc != KVDB_OK && fl_fired(R) > before) return; /* unreadable for now: the final check decides */
        }
        if (rc != KVDB_OK) { FL_FAIL(R, "%s: read = %d (%s) [%s]", when, rc, kvdb_strerror(rc), kvdb_errmsg()); return; }
    }
    FL_FAIL(R, "%s: the database holds no committed prefix (%d commits since the last check, %d failed ones that may be there)",
            when, R->nlog, nm);
}

/* For a KVDB_ELOCKED that no fault explains: which of this process's file
 * descriptors and mappings are on the database's files (Linux /proc; read
 * in-process -- our descriptors are close-on-exec, a child shell would not
 * see them).  "" where /proc is missing. */
static const char *fl_holders(const char *path, char *out, size_t cap)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    FILE *m;
    char line[1024];
    size_t len = 0, plen = strlen(path);
    out[0] = 0;
    while (d && (e = readdir(d))) {
        char p[300], t[700];
        ssize_t n;
        snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
        n = readlink(p, t, sizeof t - 1);
        if (n <= 0) continue;
        t[n] = 0;
        if (strncmp(t, path, plen) == 0 && len + n + 16 < cap)
            len += (size_t)snprintf(out + len, cap - len, " fd %s=%s", e->d_name, t);
    }
    if (d) closedir(d);
    m = fopen("/proc/self/maps", "r");
    while (m && fgets(line, sizeof line, m)) {
        char *q = strstr(line, path);
        if (q && len + strlen(q) + 8 < cap) len += (size_t)snprintf(out + len, cap - len, " map %s", q);
    }
    if (m) fclose(m);
    return out;
}

/* An open refused with KVDB_ELOCKED although no descriptor or mapping of
 * this process is on the file (seen about once in 6 million loop runs, on
 * a loaded 2-core VM: the lock of a file closed just before outlives its
 * close for a moment).  Open again for up to a second; the number of such
 * retries is reported, and a lock that stays is a failure. */
static long fl_lock_retries;

static int fl_open_retry(fl_run *R, const kvdb_options *o, kvdb **db, char *held, size_t cap)
{
    int rc = kvdb_open(R->path, o, db), tries;
    for (tries = 0; rc == KVDB_ELOCKED && tries < 200 && !fl_holders(R->path, held, cap)[0]; tries++) {
        struct timespec ts = { 0, 5000000 };
        nanosleep(&ts, NULL);
        fl_lock_retries++;
        rc = kvdb_open(R->path, o, db);
    }
    return rc;
}

static void fl_open(fl_run *R, unsigned flags, int sync, uint64_t sync_bytes)
{
    kvdb_options o;
    int attempt, rc;
    kvdb_options_init(&o);
    o.flags = flags;
    o.sync = sync;
    o.sync_bytes = sync_bytes;
    o.vfs = &R->fv->vfs;
    o.alloc = NULL;
    if (R->al) {
        static kvdb_allocator a;
        a.ctx = R->al;
        a.malloc = al_malloc;
        a.realloc = al_realloc;
        a.free = al_free;
        o.alloc = &a;
    }
    R->sticky = 0;
    for (attempt = 0; attempt < 2 && !R->db; attempt++) { /* a failed open may be retried */
        long before = fl_fired(R);
        char h[2000];
        rc = fl_open_retry(R, &o, &R->db, h, sizeof h);
        if (rc == KVDB_ELOCKED && (R->alloc_loop || fl_fired(R) == before))
            FL_FAIL(R, "kvdb_open = KVDB_ELOCKED [%s], not by a fault; held here:%s", kvdb_errmsg(),
                    fl_holders(R->path, h, sizeof h));
        fl_rc(R, rc, before, "kvdb_open");
        if (rc == KVDB_OK && !R->db) FL_FAIL(R, "open OK without a handle");
        if (rc != KVDB_OK && R->db) FL_FAIL(R, "failed open left a handle");
        if (fl_fired(R) > before && !R->fv->persistent && !(R->al && R->al->persistent)) R->transient_fired = 1;
    }
    if (R->db) fl_check_reopen(R, R->db, "reopen");
}

static void fl_close(fl_run *R)
{
    long before = fl_fired(R);
    int rc;
    if (!R->db) return;
    rc = kvdb_close(R->db);
    R->db = NULL;
    fl_rc(R, rc, before, "kvdb_close");
}

/* one commit: n operations (put when val present, else delete) */
static void fl_commit_ops(fl_run *R, int n, const int *keys, const fl_val *vals, int autocommit)
{
    fl_commit *c;
    unsigned char k[40], v[FL_MAXV];
    long before = fl_fired(R), w0 = R->fv->count[FK_WRITE];
    int rc = KVDB_OK, i;
    fl_state s = R->cur;
    if (!R->db || R->nlog >= FL_MAXC) return;
    c = &R->log[R->nlog];
    c->n = 0;
    if (autocommit) {
        size_t kl = fl_key(keys[0], k);
        if (vals[0].present) {
            fl_fill(vals[0].vseed, vals[0].len, v);
            rc = kvdb_put(R->db, k, kl, v, vals[0].len);
        } else {
            rc = kvdb_del(R->db, k, kl);
            if (!s.v[keys[0]].present) { /* nothing to delete: nothing written */
                if (rc != KVDB_NOTFOUND) fl_rc(R, rc, before, "kvdb_del of an absent key");
                if (rc == KVDB_OK) FL_FAIL(R, "kvdb_del of an absent key = OK");
                return;
            }
        }
        c->key[0] = keys[0];
        c->val[0] = vals[0];
        c->n = 1;
        fl_rc(R, rc, before, vals[0].present ? "kvdb_put" : "kvdb_del");
    } else {
        kvdb_txn *t;
        rc = kvdb_begin(R->db, 0, &t);
        fl_rc(R, rc, before, "kvdb_begin");
        if (rc != KVDB_OK) {
            if (!R->sticky && fl_fired(R) == before) FL_FAIL(R, "begin = %d without cause", rc);
            goto done;
        }
        for (i = 0; i < n; i++) {
            size_t kl = fl_key(keys[i], k);
            if (vals[i].present) {
                fl_fill(vals[i].vseed, vals[i].len, v);
                rc = kvdb_txn_put(t, k, kl, v, vals[i].len);
            } else {
                rc = kvdb_txn_del(t, k, kl);
                if (rc == KVDB_NOTFOUND && !s.v[keys[i]].present) rc = KVDB_OK;
                else if (rc == KVDB_NOTFOUND) FL_FAIL(R, "txn_del of a present key = NOTFOUND");
            }
            fl_rc(R, rc, before, "txn_put/del");
            if (rc != KVDB_OK) break;
            if (vals[i].present || s.v[keys[i]].present) {
                c->key[c->n] = keys[i];
                c->val[c->n] = vals[i];
                c->n++;
            }
            s.v[keys[i]] = vals[i];
        }
        if (rc != KVDB_OK) {
            kvdb_abort(t);
            goto done;
        }
        rc = kvdb_commit(t);
        fl_rc(R, rc, before, "kvdb_commit");
    }
done:
    if (rc == KVDB_OK) {
        if (R->sticky) FL_FAIL(R, "a write succeeded on a handle whose sync or write had failed");
        c->status = C_OK;
        fl_apply(&R->cur, c);
    } else {
        c->status = R->fv->count[FK_WRITE] > w0 ? C_MAYBE : C_NO;
        /* a failed sync, or a failed write other than disk full: sticky */
        if (fl_fired(R) > before && !R->al &&
            (R->fv->kind == FK_SYNC || (R->fv->kind == FK_WRITE && R->fv->err != KVDB_EFULL)) &&
            R->fv->count[R->fv->kind] >= R->fv->at)
            R->sticky = 1;
    }
    if (c->n) R->nlog++;
    if (fl_fired(R) > before && !R->fv->persistent && !(R->al && R->al->persistent)) R->transient_fired = 1;
}

static fl_val fl_v(fl_run *R, uint32_t len)
{
    fl_val x;
    x.present = 1;
    x.len = len;
    x.vseed = ++R->vs;
    return x;
}

static void fl_put(fl_run *R, int key, uint32_t len)
{
    fl_val x = fl_v(R, len);
    fl_commit_ops(R, 1, &key, &x, 1);
}

static void fl_del(fl_run *R, int key)
{
    fl_val x;
    memset(&x, 0, sizeof x);
    fl_commit_ops(R, 1, &key, &x, 1);
}

/* After a kvdb_sync or kvdb_checkpoint that failed under a fault: a failed
 * sync of the log makes the handle sticky, and so does a failed write of
 * its seal other than disk full (undone); a failure in the sidecar does
 * not.  Which file the fault hit is the handle's to say. */
static void fl_sticky_after(fl_run *R, int rc, long before)
{
    if (rc == KVDB_OK || fl_fired(R) <= before || R->al) return;
    if (kv_sticky(R->db)) R->sticky = 1;
}

static void fl_sync(fl_run *R)
{
    long before = fl_fired(R);
    int rc;
    if (!R->db) return;
    rc = kvdb_sync(R->db);
    fl_rc(R, rc, before, "kvdb_sync");
    if (rc == KVDB_OK && R->sticky) FL_FAIL(R, "kvdb_sync = OK after a failed sync");
    fl_sticky_after(R, rc, before);
    if (fl_fired(R) > before && !R->fv->persistent && !(R->al && R->al->persistent)) R->transient_fired = 1;
}

/* a torn tail for the next open to cut (exercises truncate), if the
 * database exists with its header */
static void fl_torn_tail(fl_run *R)
{
    FILE *f = fopen(R->path, "r+b");
    char magic[8];
    if (f) {
        if (fread(magic, 1, 8, f) == 8 && memcmp(magic, "\x89KVDB\r\n\x1a", 8) == 0) {
            fseek(f, 0, SEEK_END);
            fputs("torn tail: no record here", f);
        }
        fclose(f);
    }
}

/* the scripted workload; ends with the file's final check by a healthy open */
static void fl_workload(fl_run *R)
{
    int i, keys[16];
    fl_val vals[16];
    R->vs = 100;
    memset(&R->cur, 0, sizeof R->cur);
    R->base = R->cur;
    R->nlog = 0;
    R->transient_fired = 0;
    unlink(R->path);

    fl_open(R, KVDB_CREATE, KVDB_SYNC_FULL, 0);
    for (i = 0; i < 5; i++) fl_put(R, i, (uint32_t)(i * 37 % 90));
    for (i = 0; i < 14; i++) { keys[i] = 5 + i; vals[i] = fl_v(R, (uint32_t)(i % 4 == 0 ? 0 : 10 + i * 13)); }
    keys[12] = 0; memset(&vals[12], 0, sizeof vals[12]);   /* delete inside */
    keys[13] = 6; vals[13] = fl_v(R, 0);                  /* overwrite inside, empty */
    fl_commit_ops(R, 14, keys, vals, 0);
    fl_check_live(R, 0);
    fl_check_live(R, 1);
    fl_del(R, 2);
    fl_put(R, 3, 1500);
    fl_sync(R);
    fl_close(R);

    fl_open(R, 0, KVDB_SYNC_NORMAL, 300);  /* small sync_bytes: the engine syncs by itself */
    fl_put(R, 1, 40);
    fl_put(R, 20, 700);
    for (i = 0; i < 4; i++) { keys[i] = 7 + 3 * i; vals[i] = fl_v(R, (uint32_t)(i * 100)); }
    keys[3] = 3; memset(&vals[3], 0, sizeof vals[3]);
    fl_commit_ops(R, 4, keys, vals, 0);
    fl_check_live(R, 1);
    fl_sync(R);
    fl_put(R, 21, 5);
    fl_del(R, 5);
    fl_check_live(R, 0);
    fl_close(R);

    fl_torn_tail(R);
    fl_open(R, 0, KVDB_SYNC_FULL, 0);
    fl_put(R, 22, 30);
    if (R->db) { /* a checkpoint: the sidecar (temporary file, rename, directory sync) */
        long before = fl_fired(R);
        int rc = kvdb_checkpoint(R->db);
        fl_rc(R, rc, before, "kvdb_checkpoint");
        fl_sticky_after(R, rc, before);
        if (fl_fired(R) > before && !R->fv->persistent && !(R->al && R->al->persistent)) R->transient_fired = 1;
    }
    fl_put(R, 23, 3);
    fl_check_live(R, 0);
    fl_close(R);
}

/* ==================================================================
 * the compaction workload
 * ================================================================== */
static int fl_transient(const fl_run *R) { return !R->fv->persistent && !(R->al && R->al->persistent); }

static int fl_tmp_exists(const fl_run *R)
{
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s.compact", R->path);
    return access(tmp, F_OK) == 0;
}

/* the result of a compaction call (in_progress: a kvdb_compact_step that
 * returned KVDB_OK).  A failure before the rename leaves the database as
 * it was and writable (the next writes must work after a transient fault,
 * fl_rc checks that); a failed directory sync after the rename is sticky.
 * A compaction that is over (done or failed) leaves no new file behind --
 * unless removing it is what failed. */
static void fl_cp_rc(fl_run *R, int rc, long before, const char *op)
{
    int fired = fl_fired(R) > before;
    fl_rc(R, rc, before, op);
    if (rc < 0 && !fired && !R->sticky) FL_FAIL(R, "%s = %d (%s) [%s] without a fault", op, rc, kvdb_strerror(rc), kvdb_errmsg());
    if (rc >= 0 && R->sticky) FL_FAIL(R, "%s = %d on a handle whose sync or write had failed", op, rc);
    if (rc < 0 && fired && !R->al && R->fv->kind == FK_SYNCDIR) R->sticky = 1;
    if (rc < 0 && !fired && R->sticky) {
        /* refused by a handle already sticky (a commit's write or sync
         * failed): the engine leaves a compaction in progress as it is (new
         * file included) until the close abandons it -- checked there */
        if (R->cp_open) R->cp_sticky_left++;
    } else if (rc != KVDB_OK || strcmp(op, "kvdb_compact") == 0) {
        if (R->fv->kind != FK_REMOVE && fl_tmp_exists(R))
            FL_FAIL(R, "%s = %d (%s): %s.compact is left behind", op, rc, kvdb_strerror(rc), R->path);
        R->cp_open = 0;
    } else {
        R->cp_open = 1;
    }
    if (fired && fl_transient(R)) R->transient_fired = 1;
    if (rc == KVDB_DONE || (rc == KVDB_OK && strcmp(op, "kvdb_compact") == 0)) R->cp_done++;
    if (rc < 0 && fired) R->cp_failed++;
}

static void fl_compact(fl_run *R)
{
    long before = fl_fired(R);
    if (!R->db) return;
    fl_cp_rc(R, kvdb_compact(R->db), before, "kvdb_compact");
}

/* up to max_steps steps of budget bytes, a commit after every put_every-th */
static void fl_compact_steps(fl_run *R, size_t budget, int max_steps, int put_every)
{
    int k;
    for (k = 0; k < max_steps && R->db; k++) {
        long before = fl_fired(R);
        int rc = kvdb_compact_step(R->db, budget);
        fl_cp_rc(R, rc, before, "kvdb_compact_step");
        if (rc != KVDB_OK) return;
        if (put_every && k % put_every == 0) fl_put(R, 10 + k % 12, (uint32_t)(k * 37 % 400));
    }
}

/* A read transaction and an iterator over it, held across compactions:
 * they must keep seeing the state of their beginning. */
typedef struct {
    kvdb_txn *t;
    kvdb_iter *it;
    fl_state s;
    int pos;                /* the next key the iterator must return (key order = index order) */
} fl_snap;

/* up to n steps of the iterator (0: to the end); 0, or -1 after an error */
static int fl_iter_steps(fl_run *R, kvdb_iter *it, const fl_state *s, int *pos, int n, const char *what)
{
    unsigned char k[40], want[FL_MAXV];
    int step;
    for (step = 0; n == 0 || step < n; step++) {
        const void *kp, *vp;
        size_t kl, vl;
        long before = fl_fired(R);
        int rc = kvdb_iter_next(it, &kp, &kl, &vp, &vl);
        while (*pos < FL_NK && !s->v[*pos].present) (*pos)++;
        fl_rc(R, rc, before, what);
        if (rc < 0) return -1; /* a read error: fl_rc judged it */
        if (*pos >= FL_NK) {
            if (rc != KVDB_DONE) FL_FAIL(R, "%s: a key after the last one", what);
            return 0;
        }
        if (rc != KVDB_OK) { FL_FAIL(R, "%s = %d, want fk%02d", what, rc, *pos); return -1; }
        {
            size_t wl = fl_key(*pos, k);
            const fl_val *x = &s->v[*pos];
            fl_fill(x->vseed, x->len, want);
            if (kl != wl || memcmp(kp, k, kl) != 0 || vl != x->len || (vl && memcmp(vp, want, vl) != 0)) {
                FL_FAIL(R, "%s: step %d is not fk%02d with its value (klen %zu, vlen %zu, want %u)", what, step, *pos,
                        kl, vl, x->len);
                return -1;
            }
        }
        (*pos)++;
    }
    return 0;
}

/* a fresh read transaction: a whole walk in key order, the handle's state */
static void fl_iter_check(fl_run *R)
{
    kvdb_txn *t = NULL;
    kvdb_iter *it = NULL;
    long before = fl_fired(R);
    int rc, pos = 0;
    if (!R->db) return;
    rc = kvdb_begin(R->db, KVDB_TXN_RDONLY, &t);
    fl_rc(R, rc, before, "kvdb_begin (read, for an iterator)");
    if (rc != KVDB_OK) return;
    rc = kvdb_iter_prefix(t, "fk", 2, 0, &it);
    fl_rc(R, rc, before, "kvdb_iter_prefix");
    if (rc == KVDB_OK) fl_iter_steps(R, it, &R->cur, &pos, 0, "iterator");
    if (rc == KVDB_OK && pos % 2) kvdb_iter_close(it); /* or closed by the end of the transaction */
    kvdb_abort(t);
}

static void fl_snap_begin(fl_run *R, fl_snap *S)
{
    long before = fl_fired(R);
    int rc;
    memset(S, 0, sizeof *S);
    if (!R->db) return;
    rc = kvdb_begin(R->db, KVDB_TXN_RDONLY, &S->t);
    fl_rc(R, rc, before, "kvdb_begin (snapshot)");
    if (rc != KVDB_OK) { S->t = NULL; return; }
    S->s = R->cur;
    rc = kvdb_iter_range(S->t, NULL, 0, NULL, 0, 0, &S->it);
    fl_rc(R, rc, before, "kvdb_iter_range (snapshot)");
    if (rc != KVDB_OK) { S->it = NULL; return; }
    if (fl_iter_steps(R, S->it, &S->s, &S->pos, 2, "snapshot iterator") < 0) S->it = NULL;
}

/* the snapshot still sees its state: key by key, and its iterator goes on */
static void fl_snap_check(fl_run *R, fl_snap *S, int steps)
{
    unsigned char k[40], want[FL_MAXV];
    int i;
    if (!S->t) return;
    for (i = 0; i < FL_NK; i++) {
        const void *vp = NULL;
        size_t kl = fl_key(i, k), vl = 0;
        long before = fl_fired(R);
        int rc = kvdb_txn_get(S->t, k, kl, &vp, &vl);
        if (rc < 0) { fl_rc(R, rc, before, "kvdb_txn_get (snapshot)"); break; }
        if (S->s.v[i].present) {
            fl_fill(S->s.v[i].vseed, S->s.v[i].len, want);
            if (rc != KVDB_OK || vl != S->s.v[i].len || (vl && memcmp(vp, want, vl) != 0)) {
                FL_FAIL(R, "snapshot across a compaction: fk%02d rc %d len %zu, want OK len %u", i, rc, vl, S->s.v[i].len);
                break;
            }
        } else if (rc != KVDB_NOTFOUND) {
            FL_FAIL(R, "snapshot across a compaction: fk%02d rc %d, want NOTFOUND", i, rc);
            break;
        }
    }
    if (S->it && fl_iter_steps(R, S->it, &S->s, &S->pos, steps, "snapshot iterator across a compaction") < 0)
        S->it = NULL;
}

static void fl_snap_end(fl_run *R, fl_snap *S)
{
    fl_snap_check(R, S, 0);
    if (S->t) kvdb_abort(S->t); /* closes the iterator too */
    S->t = NULL;
    S->it = NULL;
}

/* Compactions: full and stepwise (commits between the steps), a read
 * snapshot and its iterator held across them, iterators after them, a
 * close in the middle of one, in SYNC_FULL and SYNC_NORMAL; the sidecar is
 * written after kvdb_compact and at every close. */
static void fl_workload_cp(fl_run *R)
{
    int i, keys[6];
    fl_val vals[6];
    fl_snap S;
    R->vs = 500;
    memset(&R->cur, 0, sizeof R->cur);
    R->base = R->cur;
    R->nlog = 0;
    R->transient_fired = 0;
    unlink(R->path);

    fl_open(R, KVDB_CREATE, KVDB_SYNC_FULL, 0);
    for (i = 0; i < 8; i++) fl_put(R, i, (uint32_t)(20 + i * 61));
    for (i = 0; i < 8; i += 2) fl_put(R, i, (uint32_t)(i * 9));   /* overwrites: dead records */
    fl_del(R, 3);
    for (i = 0; i < 6; i++) { keys[i] = 4 + 2 * i; vals[i] = fl_v(R, (uint32_t)(i == 2 ? 0 : 50 + i * 30)); }
    keys[5] = 1; memset(&vals[5], 0, sizeof vals[5]);                /* a delete inside */
    fl_commit_ops(R, 6, keys, vals, 0);
    fl_iter_check(R);
    fl_snap_begin(R, &S);
    fl_compact(R);                      /* full, the snapshot held across */
    fl_snap_check(R, &S, 3);
    fl_check_live(R, 0);
    fl_put(R, 9, 120);                  /* the database keeps working */
    fl_iter_check(R);
    fl_compact_steps(R, 150, 60, 2);    /* stepwise, commits between the steps */
    fl_snap_end(R, &S);
    fl_check_live(R, 1);
    fl_iter_check(R);
    fl_close(R);

    fl_open(R, 0, KVDB_SYNC_NORMAL, 300);
    fl_put(R, 2, 900);
    fl_del(R, 0);
    fl_snap_begin(R, &S);
    fl_compact_steps(R, 1, 4, 1);       /* begun ... */
    fl_snap_end(R, &S);
    fl_close(R);                        /* ... and abandoned by the close */
    if (R->fv->kind != FK_REMOVE && fl_tmp_exists(R)) FL_FAIL(R, "close left %s.compact behind", R->path);
    R->cp_open = 0;

    fl_torn_tail(R);                    /* cut by the open: then compacted */
    fl_open(R, 0, KVDB_SYNC_FULL, 0);
    fl_put(R, 5, 33);
    fl_compact_steps(R, (size_t)1 << 20, 10, 0);
    fl_iter_check(R);
    fl_del(R, 5);
    fl_compact(R);
    fl_put(R, 6, 7);
    fl_check_live(R, 0);
    fl_close(R);
}

/* after a run: nothing left open, and a healthy open finds a committed prefix */
static void fl_final(fl_run *R)
{
    kvdb_options o;
    kvdb *db = NULL;
    char h[2000];
    int rc;
    if (R->fv->files != 0 || R->fv->maps != 0)
        FL_FAIL(R, "%ld file handles and %ld mappings left open", R->fv->files, R->fv->maps);
    if (R->al && R->al->live != 0) FL_FAIL(R, "%ld allocations leaked", R->al->live);
    kvdb_options_init(&o);
    o.flags = KVDB_CREATE;
    rc = fl_open_retry(R, &o, &db, h, sizeof h);
    if (rc != KVDB_OK) {
        FL_FAIL(R, "healthy open = %d (%s) [%s]; held here:%s", rc, kvdb_strerror(rc), kvdb_errmsg(),
                fl_holders(R->path, h, sizeof h));
        return;
    }
    fl_check_reopen(R, db, "healthy reopen");
    kvdb_close(db);
    if (fl_tmp_exists(R)) FL_FAIL(R, "%s.compact is left after a healthy open and close", R->path);
}

/* ==================================================================
 * the loops
 * ================================================================== */
static long fl_io_loop_w(int kind, int err, void (*workload)(fl_run *), const char *wname)
{
    int map, pers;
    long runs = 0, points = 0, failed = 0, cp_done = 0, cp_failed = 0;
    char what[200];
    for (map = 1; map >= 0; map--) {
        if (!map && kind == FK_MAP) continue;
        for (pers = 0; pers < 2; pers++) {
            long n, rep, reps = kind == FK_WRITE ? tu_scale() : 1;
            for (n = 1; n < 100000; n++) {
                int fired = 0;
                /* soak: each failing write cut at several lengths */
                for (rep = 0; rep < reps; rep++) {
                    fv_ctx fv;
                    fl_run R;
                    fv_init(&fv, map);
                    fv.kind = kind;
                    fv.err = err;
                    fv.at = n;
                    fv.persistent = pers;
                    fv.rng = (uint64_t)n * 77 + 1 + (uint64_t)rep * 0x9E3779B97F4A7C15ULL;
                    memset(&R, 0, sizeof R);
                    snprintf(what, sizeof what, "%s%s %s fault #%ld (%s, %s)%s", wname, pers ? "persistent" : "transient",
                             fk_name[fv.kind], n, kvdb_strerror(fv.err), map ? "mmap" : "pread", rep ? " again" : "");
                    R.what = what;
                    R.fv = &fv;
                    R.path = tu_path("fault.db");
                    workload(&R);
                    fv.kind = -1; /* healthy from here */
                    fl_final(&R);
                    runs++;
                    cp_done += R.cp_done;
                    cp_failed += R.cp_failed;
                    failed += R.fails != 0;
                    fired = fv.nfired != 0;
                    if (!fired) break;
                }
                if (!fired) break; /* the workload ran to its end */
                points++;
                /* the compaction workload reads thousands of records with
                 * pread (its copies, iterators, snapshots): every third
                 * read past the first 300 (soak: every read) */
                if (workload == fl_workload_cp && kind == FK_READ && n >= 300 && tu_scale() == 1) n += 2;
            }
        }
    }
    fl_points_io += points;
    if (workload == fl_workload_cp) {
        fl_points_cp += points;
        fl_cp_failed += cp_failed;
        printf("# %s%s faults (%s): %ld failure points, %ld runs, %ld failed; %ld compactions completed, %ld failed by "
               "the fault\n", wname, fk_name[kind], kvdb_strerror(err), points, runs, failed, cp_done, cp_failed);
    } else {
        printf("# %s%s faults (%s): %ld failure points, %ld runs, %ld failed\n", wname, fk_name[kind], kvdb_strerror(err),
               points, runs, failed);
    }
    CHECK(points > 0);
    return points;
}

static long fl_io_loop(int kind, int err) { return fl_io_loop_w(kind, err, fl_workload, ""); }

static void test_fault_open(void) { fl_io_loop(FK_OPEN, KVDB_EIO); }
static void test_fault_read(void) { fl_io_loop(FK_READ, KVDB_EIO); }
static void test_fault_write_eio(void) { fl_io_loop(FK_WRITE, KVDB_EIO); }
static void test_fault_write_efull(void) { fl_io_loop(FK_WRITE, KVDB_EFULL); }
static void test_fault_sync_eio(void) { fl_io_loop(FK_SYNC, KVDB_EIO); }
static void test_fault_sync_efull(void) { fl_io_loop(FK_SYNC, KVDB_EFULL); }
static void test_fault_size(void) { fl_io_loop(FK_SIZE, KVDB_EIO); }
static void test_fault_truncate(void) { fl_io_loop(FK_TRUNC, KVDB_EIO); }
static void test_fault_lock(void) { fl_io_loop(FK_LOCK, KVDB_EIO); }
static void test_fault_map(void) { fl_io_loop(FK_MAP, KVDB_ENOMEM); }
static void test_fault_sync_dir(void) { fl_io_loop(FK_SYNCDIR, KVDB_EIO); }
static void test_fault_random(void) { fl_io_loop(FK_RANDOM, KVDB_EIO); }
static void test_fault_rename(void) { fl_io_loop(FK_RENAME, KVDB_EIO); }
static void test_fault_remove(void) { fl_io_loop(FK_REMOVE, KVDB_EIO); }
static void test_fault_reserve(void) { fl_io_loop(FK_RESERVE, KVDB_EFULL); }

/* The compaction workload (fl_workload_cp) through every kind of fault:
 * each operation of the compactions -- the new file's open, lock, writes,
 * map, syncs, its rename over the database, the directory sync, the
 * removal of an abandoned one, the reads of the old file -- failing once
 * and from then on.  Besides the checks of every run: a compaction that
 * failed before the rename leaves the database as it was and writable
 * (after a transient fault every later call must succeed), a failed
 * directory sync after the rename is sticky, no "<path>.compact" stays
 * behind a compaction that is over (nor after a healthy reopen), and
 * snapshots and iterators held across keep their view. */
static void test_fault_compact(void)
{
    static const struct { int kind, err; } k[] = {
        { FK_OPEN, KVDB_EIO }, { FK_READ, KVDB_EIO }, { FK_WRITE, KVDB_EIO }, { FK_WRITE, KVDB_EFULL },
        { FK_SYNC, KVDB_EIO }, { FK_SYNC, KVDB_EFULL }, { FK_SIZE, KVDB_EIO }, { FK_TRUNC, KVDB_EIO },
        { FK_LOCK, KVDB_EIO }, { FK_MAP, KVDB_ENOMEM }, { FK_SYNCDIR, KVDB_EIO }, { FK_RANDOM, KVDB_EIO },
        { FK_RENAME, KVDB_EIO }, { FK_REMOVE, KVDB_EIO }
    };
    size_t i;
    for (i = 0; i < sizeof k / sizeof k[0]; i++) fl_io_loop_w(k[i].kind, k[i].err, fl_workload_cp, "compaction workload: ");
    printf("# compaction workload: %ld I/O failure points, %ld compactions failed by a fault\n", fl_points_cp, fl_cp_failed);
    CHECK(fl_cp_failed > 50);
}

/* the run in progress, in memory shared with the parent: a child that
 * crashes is reported with the failure point it crashed at */
static char *fl_progress;

static void fl_alloc_loops(void (*workload)(fl_run *), const char *wname)
{
    int map, pers;
    long runs = 0, total_allocs = 0, points = 0, cp_failed = 0;
    char what[200];
    for (map = 1; map >= 0; map--) {
        for (pers = 0; pers < 2; pers++) {
            long n;
            for (n = 1; n < 1000000; n++) {
                fv_ctx fv;
                al_ctx al;
                fl_run R;
                fv_init(&fv, map);
                memset(&al, 0, sizeof al);
                al.at = n;
                al.persistent = pers;
                memset(&R, 0, sizeof R);
                snprintf(what, sizeof what, "%s%s allocation failure #%ld (%s)", wname, pers ? "persistent" : "transient", n,
                         map ? "mmap" : "pread");
                R.what = what;
                if (fl_progress) snprintf(fl_progress, 256, "%s", what);
                R.fv = &fv;
                R.al = &al;
                R.alloc_loop = 1;
                R.path = tu_path("alloc.db");
                workload(&R);
                al.at = 0;
                fl_final(&R);
                runs++;
                cp_failed += R.cp_failed;
                if (al.nfired == 0) { total_allocs += al.count; break; }
                points++;
            }
        }
    }
    fl_points_alloc += points;
    if (workload == fl_workload_cp)
        printf("# %sallocation failures: %ld failure points, %ld runs (%ld allocations per clean run), %ld compactions "
               "failed by it\n", wname, points, runs, total_allocs / 4, cp_failed);
    else
        printf("# %sallocation failures: %ld failure points, %ld runs (%ld allocations per clean run)\n", wname, points,
               runs, total_allocs / 4);
    if (fl_lock_retries) /* (this runs in a child: its own count) */
        printf("# %s%ld opens retried for a lock no descriptor of this process held\n", wname, fl_lock_retries);
    CHECK(points > 100);
    if (workload == fl_workload_cp) CHECK(cp_failed > 50);
}

/* The allocation loops run in a child process, so that a crash inside the
 * engine is reported as a failure of this test with its failure point. */
static void fl_alloc_child(void (*workload)(fl_run *), const char *wname)
{
    pid_t pid;
    int st = 0;
    fl_progress = (char *)mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(fl_progress != MAP_FAILED);
    fl_progress[0] = 0;
    fflush(stdout);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        fl_alloc_loops(workload, wname);
        if (tu_cur_failed) snprintf(fl_progress + 256, 3000, "%s", tu_cur_msg);
        fflush(stdout);
        _exit(tu_cur_failed ? 1 : 0);
    }
    while (waitpid(pid, &st, 0) < 0) {}
    if (WIFSIGNALED(st))
        tu_fail(__FILE__, __LINE__, "crashed (signal %d) at %s", WTERMSIG(st), fl_progress);
    else if (WEXITSTATUS(st) != 0)
        tu_fail(__FILE__, __LINE__, "%s", fl_progress[256] ? fl_progress + 256 : "child failed");
    munmap(fl_progress, 4096);
    fl_progress = NULL;
}

static void test_alloc_faults(void) { fl_alloc_child(fl_workload, ""); }
/* allocation N failing across the compaction workload: opens, commits,
 * iterators, and every allocation of the compactions (the new index, its
 * sorted run, buffers, the swap's version) */
static void test_alloc_faults_compact(void) { fl_alloc_child(fl_workload_cp, "compaction workload: "); }

/* ==================================================================
 * disk full
 * ================================================================== */
static void fl_full_mode(int sync)
{
    fv_ctx fv;
    fl_run R;
    char what[80];
    struct kvdb_stat st;
    int i, rc, nfull = 0;
    fv_init(&fv, sync == KVDB_SYNC_FULL);
    memset(&R, 0, sizeof R);
    snprintf(what, sizeof what, "disk full (%s)", sync == KVDB_SYNC_FULL ? "SYNC_FULL, mmap" : "SYNC_NORMAL, pread");
    R.what = what;
    R.fv = &fv;
    R.path = tu_path("full.db");
    unlink(R.path);
    fl_open(&R, KVDB_CREATE, sync, 0);
    REQUIRE(R.db);
    fv.quota = 4000;
    for (i = 0; i < 40 && !R.fails; i++) {
        int key = i % FL_NK;
        fl_val x = fl_v(&R, 300);
        unsigned char k[40], v[FL_MAXV];
        size_t kl = fl_key(key, k);
        fl_fill(x.vseed, x.len, v);
        rc = kvdb_put(R.db, k, kl, v, x.len);
        if (rc == KVDB_OK) {
            R.cur.v[key] = x;
            R.base = R.cur;
        } else {
            CHECK_RC(rc, KVDB_EFULL);
            nfull++;
        }
        fl_check_live(&R, i & 1);  /* reads keep working, the failed put invisible */
    }
    CHECK(nfull > 10);
    CHECK_OK(kvdb_stat(R.db, &st));
    CHECK(st.file_bytes <= 4000);
    /* a multi-key transaction that does not fit: nothing of it */
    {
        int keys[6] = { 0, 1, 2, 3, 4, 5 };
        fl_val vals[6];
        for (i = 0; i < 6; i++) vals[i] = fl_v(&R, 500);
        fl_commit_ops(&R, 6, keys, vals, 0);
        CHECK(R.nlog == 0 || R.log[R.nlog - 1].status != C_OK);
        R.nlog = 0;
        fl_check_live(&R, 0);
    }
    /* space again: the same handle writes (EFULL was not sticky) */
    fv.quota = 0;
    fl_put(&R, 7, 900);
    CHECK(R.nlog == 1 && R.log[0].status == C_OK);
    CHECK_OK(kvdb_sync(R.db));
    fl_close(&R);
    fl_open(&R, 0, sync, 0);
    CHECK(R.db != NULL);
    /* EFULL from the sync itself (delayed allocation): sticky EFULL */
    fv.kind = FK_SYNC;
    fv.err = KVDB_EFULL;
    fv.at = fv.count[FK_SYNC] + 1;
    if (sync == KVDB_SYNC_FULL) {
        fl_put(&R, 8, 10);
        CHECK(R.nlog == 1 && R.log[0].status != C_OK);
    } else {
        fl_put(&R, 8, 10);
        CHECK_RC(kvdb_sync(R.db), KVDB_EFULL);
    }
    fv.kind = -1;
    {
        unsigned char k[40];
        size_t kl = fl_key(9, k);
        CHECK_RC(kvdb_put(R.db, k, kl, "x", 1), KVDB_EFULL);   /* sticky */
        CHECK_RC(kvdb_sync(R.db), KVDB_EFULL);
    }
    fl_check_live(&R, 1);
    kvdb_close(R.db);
    R.db = NULL;
    fl_final(&R);
    if (R.fails) return;
    CHECK(fv.files == 0 && fv.maps == 0);
}

static void test_disk_full(void)
{
    fl_full_mode(KVDB_SYNC_FULL);
    fl_full_mode(KVDB_SYNC_NORMAL);
}

/* ==================================================================
 * check and repair under faults
 * ================================================================== */
/* A database of 30 transactions (SYNC_FULL: every commit says the ones
 * before it were synced), closed with its sidecar; and a copy with a byte
 * of transaction 15 flipped. */
static int fc_build(const char *clean, const char *damaged)
{
    kvdb_options o;
    kvdb *db = NULL;
    unsigned char k[40], v[FL_MAXV];
    uint64_t s = 0xc4ec;
    long at = 0;
    int i, j;
    FILE *f;
    unlink(clean);
    kvdb_options_init(&o);
    o.flags = KVDB_CREATE;
    if (kvdb_open(clean, &o, &db) != KVDB_OK) return -1;
    for (i = 0; i < 30; i++) {
        kvdb_txn *t;
        struct kvdb_stat st;
        if (i == 15 && kvdb_stat(db, &st) == KVDB_OK) at = (long)st.file_bytes + LG_REC + 2;
        if (kvdb_begin(db, 0, &t) != KVDB_OK) return -1;
        for (j = 0; j < 3; j++) {
            int key = (int)(tu_rand(&s) % FL_NK);
            size_t kl = fl_key(key, k);
            uint32_t len = (uint32_t)(tu_rand(&s) % 300);
            fl_fill(tu_rand(&s), len, v);
            if (j == 2 && i % 4 == 3) kvdb_txn_del(t, k, kl);
            else if (kvdb_txn_put(t, k, kl, v, len) != KVDB_OK) return -1;
        }
        if (kvdb_commit(t) != KVDB_OK) return -1;
    }
    if (kvdb_close(db) != KVDB_OK || tu_copy_file(clean, damaged, -1) != 0) return -1;
    f = fopen(damaged, "r+b");
    if (!f || fseek(f, at, SEEK_SET) != 0) { if (f) fclose(f); return -1; }
    i = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(i ^ 0x20, f);
    fclose(f);
    return 0;
}

/* every pair of the database at path, in order, hashed */
static uint64_t fc_digest(const char *path, uint64_t *keys)
{
    kvdb_options o;
    kvdb *db = NULL;
    kvdb_txn *t;
    kvdb_iter *it;
    const void *k, *v;
    size_t kl, vl;
    XXH3_state_t st;
    *keys = 0;
    kvdb_options_init(&o);
    o.flags = KVDB_RDONLY;
    if (kvdb_open(path, &o, &db) != KVDB_OK) return 0;
    XXH3_64bits_reset(&st);
    if (kvdb_begin(db, KVDB_TXN_RDONLY, &t) == KVDB_OK) {
        if (kvdb_iter_prefix(t, NULL, 0, 0, &it) == KVDB_OK) {
            while (kvdb_iter_next(it, &k, &kl, &v, &vl) == KVDB_OK) {
                uint64_t l[2];
                l[0] = kl;
                l[1] = vl;
                XXH3_64bits_update(&st, l, sizeof l);
                XXH3_64bits_update(&st, k, kl);
                XXH3_64bits_update(&st, v, vl);
                (*keys)++;
            }
        }
        kvdb_abort(t);
    }
    kvdb_close(db);
    return XXH3_64bits_digest(&st);
}

/* kvdb_check of the clean and the damaged database, then kvdb_repair of
 * the damaged one, through fv (and al if not NULL).  Checked: every call
 * returns a kvdb code (with al: only KVDB_ENOMEM as an error); check never
 * reports damage the clean database does not have -- a failure is
 * returned as the error it is -- and its KVDB_OK means it checked the
 * indexes too; check never passes the damaged one; repair succeeds with
 * the contents a healthy repair gives, or fails and leaves no file; the
 * sources are not changed; nothing is left open or allocated. */
static void fc_run(fl_run *R, const char *clean, const char *damaged, const char *out, uint64_t want, uint64_t want_keys,
                   const unsigned char *src, size_t srclen)
{
    static kvdb_allocator a;
    kvdb_check_opts co;
    kvdb_check_stat st;
    uint64_t keys;
    int rc;
    memset(&co, 0, sizeof co);
    co.vfs = &R->fv->vfs;
    if (R->al) {
        a.ctx = R->al;
        a.malloc = al_malloc;
        a.realloc = al_realloc;
        a.free = al_free;
        co.alloc = &a;
    }
    rc = kvdb_check(clean, &co, &st);
    if (!fl_valid_rc(rc) || rc == KVDB_ECORRUPT || (R->al && rc && rc != KVDB_ENOMEM))
        FL_FAIL(R, "check of the clean database = %d (%s) [%s], %llu problems", rc, kvdb_strerror(rc), kvdb_errmsg(),
                (unsigned long long)st.problems);
    else if (rc == KVDB_OK && (st.problems || !st.index_checked || st.txns != 30))
        FL_FAIL(R, "check of the clean database: OK, but %llu problems, index checked %d, %llu txns",
                (unsigned long long)st.problems, st.index_checked, (unsigned long long)st.txns);
    rc = kvdb_check(damaged, &co, &st);
    if (!fl_valid_rc(rc) || rc == KVDB_OK || (R->al && rc != KVDB_ECORRUPT && rc != KVDB_ENOMEM))
        FL_FAIL(R, "check of the damaged database = %d (%s) [%s]", rc, kvdb_strerror(rc), kvdb_errmsg());
    {
        char idx[700];
        snprintf(idx, sizeof idx, "%s.idx", out);
        unlink(out);
        unlink(idx);
    }
    rc = kvdb_repair(damaged, out, &co, &st);
    if (R->fv->files != 0 || R->fv->maps != 0)
        FL_FAIL(R, "%ld file handles and %ld mappings left open", R->fv->files, R->fv->maps);
    if (R->al && R->al->live != 0) FL_FAIL(R, "%ld allocations leaked", R->al->live);
    R->fv->kind = -1; /* healthy from here */
    if (R->al) R->al->at = 0;
    if (!fl_valid_rc(rc) || (R->al && rc && rc != KVDB_ENOMEM)) {
        FL_FAIL(R, "repair = %d (%s) [%s]", rc, kvdb_strerror(rc), kvdb_errmsg());
    } else if (rc == KVDB_OK) {
        if (fc_digest(out, &keys) != want || keys != want_keys || st.keys != want_keys)
            FL_FAIL(R, "repair OK, but its database differs from a healthy repair's (%llu keys, want %llu)",
                    (unsigned long long)keys, (unsigned long long)want_keys);
    } else {
        char idx[700];
        snprintf(idx, sizeof idx, "%s.idx", out);
        if (access(out, F_OK) == 0 || access(idx, F_OK) == 0)
            FL_FAIL(R, "repair failed (%s) but left %s", kvdb_strerror(rc), access(out, F_OK) == 0 ? out : idx);
    }
    {
        size_t n;
        unsigned char *b = NULL;
        FILE *f = fopen(damaged, "rb");
        if (f) {
            b = (unsigned char *)malloc(srclen + 1);
            n = b ? fread(b, 1, srclen + 1, f) : 0;
            fclose(f);
            if (!b || n != srclen || memcmp(b, src, srclen) != 0) FL_FAIL(R, "the damaged source was changed");
            free(b);
        }
    }
}

static void test_fault_check_repair(void)
{
    static const struct { int kind, err; } k[] = {
        { FK_OPEN, KVDB_EIO }, { FK_READ, KVDB_EIO }, { FK_WRITE, KVDB_EIO }, { FK_WRITE, KVDB_EFULL },
        { FK_SYNC, KVDB_EIO }, { FK_SIZE, KVDB_EIO }, { FK_LOCK, KVDB_EIO }, { FK_MAP, KVDB_ENOMEM },
        { FK_SYNCDIR, KVDB_EIO }, { FK_RANDOM, KVDB_EIO }, { FK_RENAME, KVDB_EIO }, { FK_REMOVE, KVDB_EIO }
    };
    const char *clean = tu_path("fc-clean.db"), *damaged = tu_path("fc-damaged.db"), *out = tu_path("fc-out.db");
    char c2[600], d2[600], o2[600], what[200];
    uint64_t want, want_keys;
    unsigned char *src;
    size_t srclen, i;
    long points = 0, apoints = 0;
    kvdb_check_stat st;
    int map, pers;
    snprintf(c2, sizeof c2, "%s", clean);
    snprintf(d2, sizeof d2, "%s", damaged);
    snprintf(o2, sizeof o2, "%s", out);
    REQUIRE(fc_build(c2, d2) == 0);
    CHECK_OK(kvdb_check(c2, NULL, &st));
    CHECK_RC(kvdb_check(d2, NULL, &st), KVDB_ECORRUPT);
    unlink(o2);
    REQUIRE_OK(kvdb_repair(d2, o2, NULL, &st));
    CHECK(st.lost_txns == 1 && st.salvaged_txns == 29);
    want = fc_digest(o2, &want_keys);
    REQUIRE(want_keys > 0);
    {
        FILE *f = fopen(d2, "rb");
        REQUIRE(f);
        fseek(f, 0, SEEK_END);
        srclen = (size_t)ftell(f);
        fseek(f, 0, SEEK_SET);
        src = (unsigned char *)malloc(srclen);
        REQUIRE(src && fread(src, 1, srclen, f) == srclen);
        fclose(f);
    }
    for (i = 0; i < sizeof k / sizeof k[0] && !tu_cur_failed; i++) {
        for (map = 1; map >= 0; map--) {
            if (!map && k[i].kind == FK_MAP) continue;
            for (pers = 0; pers < 2; pers++) {
                long n;
                for (n = 1; n < 100000 && !tu_cur_failed; n++) {
                    fv_ctx fv;
                    fl_run R;
                    fv_init(&fv, map);
                    fv.kind = k[i].kind;
                    fv.err = k[i].err;
                    fv.at = n;
                    fv.persistent = pers;
                    memset(&R, 0, sizeof R);
                    snprintf(what, sizeof what, "check/repair: %s %s fault #%ld (%s, %s)", pers ? "persistent" : "transient",
                             fk_name[fv.kind], n, kvdb_strerror(fv.err), map ? "mmap" : "pread");
                    R.what = what;
                    R.fv = &fv;
                    fc_run(&R, c2, d2, o2, want, want_keys, src, srclen);
                    if (fv.nfired == 0) break;
                    points++;
                    if (k[i].kind == FK_READ && n >= 200) n += 4; /* pread reads each record: every fifth past 200 */
                }
            }
        }
    }
    for (map = 1; map >= 0 && !tu_cur_failed; map--) {
        for (pers = 0; pers < 2; pers++) {
            long n;
            for (n = 1; n < 1000000 && !tu_cur_failed; n++) {
                fv_ctx fv;
                al_ctx al;
                fl_run R;
                fv_init(&fv, map);
                memset(&al, 0, sizeof al);
                al.at = n;
                al.persistent = pers;
                memset(&R, 0, sizeof R);
                snprintf(what, sizeof what, "check/repair: %s allocation failure #%ld (%s)", pers ? "persistent" : "transient",
                         n, map ? "mmap" : "pread");
                R.what = what;
                R.fv = &fv;
                R.al = &al;
                fc_run(&R, c2, d2, o2, want, want_keys, src, srclen);
                if (al.nfired == 0) break;
                apoints++;
            }
        }
    }
    printf("# check/repair: %ld I/O failure points, %ld allocation failure points\n", points, apoints);
    CHECK(points > 50 && apoints > 50);
    free(src);
}

int main(void)
{
    struct stat sb;
    clock_t t0 = clock();
    const char *t = getenv("TMPDIR");
    if ((!t || !*t) && stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) && access("/dev/shm", W_OK) == 0)
        setenv("TMPDIR", "/dev/shm", 1);
    fl_verbose = getenv("KVDB_TEST_VERBOSE") != NULL;
    tu_tmpdir("fault");
    RUN(test_fault_open);
    RUN(test_fault_read);
    RUN(test_fault_write_eio);
    RUN(test_fault_write_efull);
    RUN(test_fault_sync_eio);
    RUN(test_fault_sync_efull);
    RUN(test_fault_size);
    RUN(test_fault_truncate);
    RUN(test_fault_lock);
    RUN(test_fault_map);
    RUN(test_fault_sync_dir);
    RUN(test_fault_random);
    RUN(test_fault_rename);
    RUN(test_fault_remove);
    RUN(test_fault_reserve);
    RUN(test_fault_compact);
    RUN(test_disk_full);
    RUN(test_alloc_faults);
    RUN(test_alloc_faults_compact);
    RUN(test_fault_check_repair);
    printf("# fault: %ld I/O failure points (allocation failure points: see above), %.1f s; %ld opens retried "
           "for a lock no descriptor of this process held\n", fl_points_io, (double)(clock() - t0) / CLOCKS_PER_SEC,
           fl_lock_retries);
    tu_rmrf();
    TEST_MAIN_END();
}
