/*
 * test/model.c -- randomized model test.
 *
 * A reference model (an array indexed by key id: present?, value length,
 * value seed -- the value bytes are regenerated from the seed) and the
 * engine are driven by the same random stream of operations: put, get, del,
 * multi-op write transactions (commit or abort, reading their own writes),
 * read snapshots held across later commits, and close+reopen with full
 * verification, under changing sync modes.  Uses only the public API.
 *
 * Ordered iterators are checked against the model's keys sorted once per
 * seed (MG.sorted): random ranges (bounds that are keys or not, NULL,
 * empty and inverted ranges) and prefixes (empty, runs of 0xFF, longer than
 * any key), forward and reverse, walked partly or fully with random seeks;
 * in read snapshots where they stay open across later commits (some opened
 * late, when the snapshot's end lies inside a newer shared run), in fresh
 * read transactions, in write transactions (seeing the writes made before
 * they were opened, not later ones; left open at commit/abort), and whole
 * walks after reopens.  Iterators are used in half of the stretches between
 * reopens (the first iterator after an open sorts the log since the
 * sidecar: the main cost) and draw from their own random stream, so the
 * other operations of a seed are the same as without them.
 *
 * Compactions (a stream of their own, MG.crs, so the other ops of a seed
 * are the same as without them): full ones (kvdb_compact), stepwise ones
 * (kvdb_compact_step with budgets from 1 byte to 1 MiB, a step now and then
 * between the other ops, so that one spans many commits, snapshots and
 * reopens -- a close abandons it and must remove "<path>.compact"), one
 * finished by kvdb_compact, and compaction calls inside a write transaction
 * (KVDB_EBUSY).  When one completes: every key, kvdb_stat (compactions,
 * compacting, reclaimed bytes, live bytes exactly the model's, and after a
 * full one with nothing committed meanwhile no dead bytes but COMMIT
 * marks), the snapshots open across it key by key with their pinned value
 * pointers and iterators, and a fresh iterator over the new state.
 *
 * Every seed is deterministic.  On a mismatch the seed, the op number and
 * the key (hex) are printed.  To rerun one seed:
 *     KVDB_MODEL_SEED=N [KVDB_MODEL_OPS=n] [KVDB_MODEL_INMEM=1] build/plain/model
 * Env KVDB_TEST_SCALE=N (make soak): N times the seeds, on disk and in memory.
 */
#include "../kvdb.c"
#include "testutil.h"

typedef struct {
    uint8_t present;
    uint32_t vlen;
    uint64_t vseed;
} m_val;

#define M_MAX_VLEN   (110u * 1024)
#define M_MAX_SNAPS  3
#define M_MAX_TXN_OPS 20
#define M_MAX_ITS    2     /* iterators kept open per snapshot / write txn */
#ifndef M_ITER_PERMILLE
#define M_ITER_PERMILLE 8     /* share of iterator ops in read txns */
#endif
#ifndef M_ITER_STRETCH_PCT   /* share of open..close stretches with iterators */
#ifdef KVDB_NO_MMAP
#define M_ITER_STRETCH_PCT 15 /* sorting reads every compared key with pread */
#else
#define M_ITER_STRETCH_PCT 50
#endif
#endif
#ifndef M_TXN_ITER_PERMILLE
#define M_TXN_ITER_PERMILLE 30 /* share of iterator uses among write txn ops */
#endif
#define M_MAX_BOUND  4200  /* longest generated bound (keys are <= 4000) */

/* An engine iterator and its expectation: the ids of the key space in key
 * order (MG.sorted) restricted to positions [plo, phi), of which the ones
 * present in view are expected; cur is the position of the next candidate
 * (forward) or one past it (reverse). */
struct m_it {
    kvdb_iter *it;
    const m_val *view;     /* the model as the iterator must see it */
    m_val *own;            /* view owned by this iterator (write txns), or NULL */
    int rev;
    size_t plo, phi, cur;
    uint64_t steps;
    char desc[160];
};

struct m_snap {
    kvdb_txn *t;
    m_val *m;              /* copy of the model when the snapshot began */
    uint64_t begin_op, end_op;
    /* one value pointer taken when the snapshot began: must stay valid
     * and unchanged until the snapshot ends, whatever is committed */
    const void *pin;
    size_t pin_id;
    m_val pin_val;
    /* iterators over the snapshot, kept open across later commits, and one
     * key/value pointer pair returned by one of them (valid until the end) */
    struct m_it its[M_MAX_ITS];
    int nits;
    int late_opens;        /* iterators opened after later commits */
    const void *ipin_k, *ipin_v;
    size_t ipin_id;
    m_val ipin_val;
};

static struct {
    uint64_t seed;
    int inmem;
    uint64_t op;          /* operation counter */
    int bad;              /* a mismatch was reported: stop this seed */
    uint64_t rs;          /* the op stream's random state */
    uint64_t irs;         /* the iterator stream's */
    size_t nkeys;
    unsigned char **key;
    size_t *klen;
    m_val *m;
    size_t *sorted;       /* all key ids in key order */
    uint64_t count;       /* present keys in the model */
    kvdb *db;
    char path[600];
    int sync;
    uint64_t reopen_at;
    /* iterators are used between some reopens only: the first iterator
     * after an open sorts the log written since the sidecar, which costs
     * more than the rest of such a stretch (keeps the runtime in budget) */
    int iters_on;
    struct m_snap snaps[M_MAX_SNAPS];
    int nsnap;
    unsigned char *vbuf;  /* values to write / expected values */
    unsigned char *gbuf;  /* values read back */
    uint64_t reopens, txns, commits, aborts, snaps_taken;
    uint64_t iters, iter_steps, seeks, sidecar_loads;
    /* compaction: its own random stream (so the other ops of a seed are
     * the same as without it); a stepwise compaction in progress spans
     * the ops between its steps */
    uint64_t crs;
    int cp_active;        /* a kvdb_compact_step compaction is in progress */
    size_t cp_budget;     /* its max_bytes per step */
    unsigned cp_rate;     /* % of loop turns that take a step */
    uint64_t cp_steps;    /* steps it has taken */
    uint64_t cp_begin_op; /* op count when it began */
    uint64_t cp_handle;   /* compactions completed by this handle */
    uint64_t cp_full, cp_stepwise, cp_by_full, cp_abandoned, cp_step_calls, cp_snaps_across,
             cp_its_across, cp_ebusy, cp_longest;
} MG;

static uint64_t m_rnd(void) { return tu_rand(&MG.rs); }
static uint64_t m_below(uint64_t n) { return n ? m_rnd() % n : 0; }
/* iterator decisions draw from their own stream, so that the other ops
 * (and so the files, sync modes and reopens) are the same with or without
 * iterators */
static uint64_t m_irnd(void) { return tu_rand(&MG.irs); }
static uint64_t m_ibelow(uint64_t n) { return n ? m_irnd() % n : 0; }
static uint64_t m_cbelow(uint64_t n) { return n ? tu_rand(&MG.crs) % n : 0; }

/* ------------------------------------------------------------------ */
/* keys and values                                                    */

/* Key classes (unique by construction):
 *   - ids < 256 with id % 4 == 1: the single byte (id)            length 1
 *   - id % 53 == 7: 0xFF, id (4 bytes LE), filler                 100..4000
 *   - id % 17 == 4: "p" then j = id / 17 in bijective base 3 over the
 *     digits 0x00, 'a', 0xFF ("p", "p\0", "pa", "p\xff", "p\0\0", ...):
 *     chains of keys that are prefixes of each other                1..6
 *   - id % 11 == 5: "tenant/0000000000000042/", id in 6 decimal
 *     digits, then 0..9 bytes of 0x00 or 0xFF: a long shared prefix, and
 *     NULs / 0xFF where the 8 bytes after a run's prefix end   30..39
 *   - id % 3 == 0: 0x00, id (4 bytes LE), binary bytes (many NULs) 5..44
 *   - otherwise:   "k<decimal id>/" and letters                   3..30   */
static void m_make_key(size_t id, unsigned char **out, size_t *outlen)
{
    uint64_t s = (MG.seed * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)id * 0xD1B54A32D192ED03ULL) ^ 0x5555;
    unsigned char tmp[64];
    unsigned char *k;
    size_t len, i;
    if (s == 0) s = 1;
    tu_rand(&s);
    if (id < 256 && id % 4 == 1) {
        tmp[0] = (unsigned char)id;
        len = 1;
        k = malloc(len);
        memcpy(k, tmp, len);
    } else if (id % 53 == 7) {
        len = 100 + (size_t)(tu_rand(&s) % 3901);
        k = malloc(len);
        k[0] = 0xFF;
        for (i = 0; i < 4; i++) k[1 + i] = (unsigned char)(id >> (8 * i));
        for (i = 5; i < len; i++) k[i] = (unsigned char)tu_rand(&s);
    } else if (id % 17 == 4) {
        static const unsigned char dig[3] = { 0x00, 'a', 0xFF };
        size_t j = id / 17;
        len = 0;
        tmp[len++] = 'p';
        while (j > 0) { /* bijective base 3, most significant digit last: fine, still unique */
            j--;
            tmp[len++] = dig[j % 3];
            j /= 3;
        }
        k = malloc(len);
        if (k) memcpy(k, tmp, len);
    } else if (id % 11 == 5) {
        size_t extra = (size_t)(tu_rand(&s) % 10);
        unsigned char fill = (tu_rand(&s) & 1) ? 0xFF : 0x00;
        int n = snprintf((char *)tmp, sizeof tmp, "tenant/0000000000000042/%06zu", id % 1000000);
        len = (size_t)n + extra;
        k = malloc(len);
        if (k) {
            memcpy(k, tmp, (size_t)n);
            memset(k + n, fill, extra);
        }
    } else if (id % 3 == 0) {
        len = 5 + (size_t)(tu_rand(&s) % 40);
        k = malloc(len);
        k[0] = 0;
        for (i = 0; i < 4; i++) k[1 + i] = (unsigned char)(id >> (8 * i));
        for (i = 5; i < len; i++) {
            uint64_t x = tu_rand(&s);
            k[i] = (x & 3) == 0 ? 0 : (unsigned char)(x >> 8);
        }
    } else {
        int n = snprintf((char *)tmp, sizeof tmp, "k%zu/", id);
        size_t extra = (size_t)(tu_rand(&s) % 16);
        len = (size_t)n + extra;
        k = malloc(len);
        memcpy(k, tmp, (size_t)n);
        for (i = (size_t)n; i < len; i++) k[i] = (unsigned char)('a' + tu_rand(&s) % 26);
    }
    if (!k) { perror("malloc"); exit(2); }
    *out = k;
    *outlen = len;
}

static void m_gen_value(uint64_t vseed, size_t vlen, unsigned char *out)
{
    uint64_t s = vseed | 1;
    size_t i = 0;
    while (i + 8 <= vlen) {
        uint64_t x = tu_rand(&s);
        memcpy(out + i, &x, 8);
        i += 8;
    }
    if (i < vlen) {
        uint64_t x = tu_rand(&s);
        memcpy(out + i, &x, vlen - i);
    }
}

static size_t m_pick_id(void)
{
    if (m_below(100) < 25) return (size_t)m_below(MG.nkeys < 16 ? MG.nkeys : 16);
    return (size_t)m_below(MG.nkeys);
}

static size_t m_ipick_id(void)
{
    if (m_ibelow(100) < 25) return (size_t)m_ibelow(MG.nkeys < 16 ? MG.nkeys : 16);
    return (size_t)m_ibelow(MG.nkeys);
}

static uint32_t m_pick_vlen(void)
{
    uint64_t r;
    if (m_below(2000) == 0) return 100000 + (uint32_t)m_below(5000);
    r = m_below(100);
    if (r < 8) return 0;
    if (r < 40) return 1 + (uint32_t)m_below(16);
    if (r < 85) return 17 + (uint32_t)m_below(284);
    if (r < 98) return 301 + (uint32_t)m_below(3796);
    return 4097 + (uint32_t)m_below(12000);
}

static void m_set(m_val *m, size_t id, const m_val *v)
{
    if (m == MG.m) {
        if (m[id].present && !v->present) MG.count--;
        if (!m[id].present && v->present) MG.count++;
    }
    m[id] = *v;
}

/* ------------------------------------------------------------------ */
/* failure reporting                                                  */

static void m_fail(int line, const char *what, long long id, int rc, const char *fmt, ...)
{
    char detail[256];
    va_list ap;
    if (MG.bad) return;
    MG.bad = 1;
    detail[0] = 0;
    if (fmt) {
        va_start(ap, fmt);
        vsnprintf(detail, sizeof detail, fmt, ap);
        va_end(ap);
    }
    printf("# model mismatch: seed %llu%s op %llu: %s: rc %d (%s) %s [%s]\n",
           (unsigned long long)MG.seed, MG.inmem ? " (inmemory)" : "", (unsigned long long)MG.op,
           what, rc, kvdb_strerror(rc), detail, kvdb_errmsg());
    if (id >= 0) {
        size_t i, kl = MG.klen[id];
        printf("#   key id %lld, %zu bytes: ", id, kl);
        for (i = 0; i < kl && i < 64; i++) printf("%02x", MG.key[id][i]);
        printf("%s\n", kl > 64 ? "..." : "");
        printf("#   model: present %d vlen %u\n", MG.m[id].present, (unsigned)MG.m[id].vlen);
    }
    printf("#   reproduce: KVDB_MODEL_SEED=%llu%s <this program>\n", (unsigned long long)MG.seed,
           MG.inmem ? " KVDB_MODEL_INMEM=1" : "");
    fflush(stdout);
    tu_fail(__FILE__, line, "seed %llu op %llu: %s (key id %lld): rc %d %s", (unsigned long long)MG.seed,
            (unsigned long long)MG.op, what, id, rc, detail);
}
#define MFAIL(what, id, rc, ...) m_fail(__LINE__, (what), (long long)(id), (rc), __VA_ARGS__)

/* ------------------------------------------------------------------ */
/* checks                                                             */

/* compare kvdb_get(id) with the expected m_val; variant picks the call shape */
static void m_check_get(size_t id, const m_val *want, int variant, const char *what)
{
    size_t n = (size_t)-1, cap;
    int rc;
    const unsigned char *k = MG.key[id];
    size_t kl = MG.klen[id];
    if (variant == 1) { /* length query */
        rc = kvdb_get(MG.db, k, kl, NULL, 0, &n);
        if (!want->present) {
            if (rc != KVDB_NOTFOUND) MFAIL(what, id, rc, "length query: want NOTFOUND");
        } else if (rc != KVDB_OK || n != want->vlen) {
            MFAIL(what, id, rc, "length query: len %zu want %u", n, (unsigned)want->vlen);
        }
        return;
    }
    cap = M_MAX_VLEN;
    if (variant == 2 && want->present) cap = (size_t)m_below((uint64_t)want->vlen + 1);
    MG.gbuf[cap < M_MAX_VLEN ? cap : M_MAX_VLEN - 1] = 0xA5;
    rc = kvdb_get(MG.db, k, kl, MG.gbuf, cap, &n);
    if (!want->present) {
        if (rc != KVDB_NOTFOUND) MFAIL(what, id, rc, "want NOTFOUND (got len %zu)", n);
        return;
    }
    if (rc != KVDB_OK) { MFAIL(what, id, rc, "want OK, len %u", (unsigned)want->vlen); return; }
    if (n != want->vlen) { MFAIL(what, id, rc, "len %zu want %u", n, (unsigned)want->vlen); return; }
    m_gen_value(want->vseed, want->vlen, MG.vbuf);
    if (cap > n) cap = n;
    if (cap && memcmp(MG.gbuf, MG.vbuf, cap) != 0) { MFAIL(what, id, rc, "value differs (cap %zu)", cap); return; }
    if (cap < n && MG.gbuf[cap] != 0xA5) MFAIL(what, id, rc, "wrote past cap %zu", cap);
}

/* compare kvdb_txn_get(t, id) with want */
static void m_check_tget(kvdb_txn *t, size_t id, const m_val *want, const char *what)
{
    const void *p = NULL;
    size_t n = (size_t)-1;
    int rc = kvdb_txn_get(t, MG.key[id], MG.klen[id], &p, &n);
    if (!want->present) {
        if (rc != KVDB_NOTFOUND) MFAIL(what, id, rc, "want NOTFOUND (got len %zu)", n);
        return;
    }
    if (rc != KVDB_OK) { MFAIL(what, id, rc, "want OK, len %u", (unsigned)want->vlen); return; }
    if (n != want->vlen) { MFAIL(what, id, rc, "len %zu want %u", n, (unsigned)want->vlen); return; }
    if (n == 0) return;
    if (!p) { MFAIL(what, id, rc, "NULL value pointer"); return; }
    m_gen_value(want->vseed, want->vlen, MG.vbuf);
    if (memcmp(p, MG.vbuf, n) != 0) MFAIL(what, id, rc, "value differs");
}

/* the bytes of the live records the model says there are */
static uint64_t m_live_bytes(void)
{
    uint64_t n = 0;
    size_t id;
    for (id = 0; id < MG.nkeys; id++)
        if (MG.m[id].present) n += (uint64_t)LG_REC + MG.klen[id] + MG.m[id].vlen;
    return n;
}

static void m_check_stat(const char *what)
{
    struct kvdb_stat st;
    int rc;
    memset(&st, 0, sizeof st);
    rc = kvdb_stat(MG.db, &st);
    if (rc != KVDB_OK) { MFAIL(what, -1, rc, "kvdb_stat"); return; }
    if (st.keys != MG.count)
        MFAIL(what, -1, rc, "stat.keys %llu, model %llu", (unsigned long long)st.keys,
              (unsigned long long)MG.count);
    if (st.live_bytes != m_live_bytes())
        MFAIL(what, -1, rc, "stat.live_bytes %llu, model %llu", (unsigned long long)st.live_bytes,
              (unsigned long long)m_live_bytes());
    if (st.dead_bytes + st.live_bytes + LG_HDR != st.file_bytes)
        MFAIL(what, -1, rc, "stat: dead %llu + live %llu + header != file %llu", (unsigned long long)st.dead_bytes,
              (unsigned long long)st.live_bytes, (unsigned long long)st.file_bytes);
    if (st.compacting != (unsigned)MG.cp_active || st.compactions != MG.cp_handle)
        MFAIL(what, -1, rc, "stat.compacting %u (want %d), stat.compactions %llu (want %llu)", st.compacting,
              MG.cp_active, (unsigned long long)st.compactions, (unsigned long long)MG.cp_handle);
    if (!MG.inmem) {
        const char *why = tu_reserved_ok(MG.path, (unsigned long long)st.file_bytes);
        if (why) MFAIL(what, -1, rc, "%s", why);
    }
}

static void m_verify_all(const char *what)
{
    size_t id;
    for (id = 0; id < MG.nkeys && !MG.bad; id++) m_check_get(id, &MG.m[id], 0, what);
    /* keys outside the key space are absent */
    for (id = 0; id < 20 && !MG.bad; id++) {
        char k[32];
        int n = snprintf(k, sizeof k, "k%zu/", MG.nkeys + id);
        int rc = kvdb_get(MG.db, k, (size_t)n, NULL, 0, NULL);
        if (rc != KVDB_NOTFOUND) MFAIL(what, -1, rc, "key outside the key space: want NOTFOUND");
    }
    if (!MG.bad) m_check_stat(what);
}

/* ------------------------------------------------------------------ */
/* iterators                                                          */

/* key order: memcmp, a shorter key first when one is a prefix of the other */
static int m_kcmp(const unsigned char *a, size_t an, const unsigned char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c) return c;
    return an < bn ? -1 : an > bn;
}

static int m_sort_cmp(const void *pa, const void *pb)
{
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    return m_kcmp(MG.key[a], MG.klen[a], MG.key[b], MG.klen[b]);
}

static void m_build_sorted(void)
{
    size_t i;
    MG.sorted = malloc(MG.nkeys * sizeof *MG.sorted);
    if (!MG.sorted) { perror("malloc"); exit(2); }
    for (i = 0; i < MG.nkeys; i++) MG.sorted[i] = i;
    qsort(MG.sorted, MG.nkeys, sizeof *MG.sorted, m_sort_cmp);
}

/* first position in MG.sorted whose key is >= t (> t when strict) */
static size_t m_lower(const unsigned char *t, size_t tn, int strict)
{
    size_t lo = 0, hi = MG.nkeys;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2, id = MG.sorted[mid];
        int d = m_kcmp(MG.key[id], MG.klen[id], t, tn);
        if (d < 0 || (strict && d == 0)) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static void m_hex(char *out, size_t cap, const unsigned char *b, size_t n)
{
    size_t i, o = 0;
    if (!b) { snprintf(out, cap, "NULL"); return; }
    for (i = 0; i < n && i < 12 && o + 3 < cap; i++) o += (size_t)snprintf(out + o, cap - o, "%02x", b[i]);
    if (i < n) snprintf(out + o, cap - o, "..(%zu)", n);
    else if (n == 0) snprintf(out, cap, "\"\"");
}

/* Random bytes for a bound, prefix or seek target: keys of the key space,
 * truncated, extended, nudged, runs of 0xFF, the empty string, short
 * binary strings. */
static size_t m_gen_bytes(unsigned char *b)
{
    static const unsigned char alpha[8] = { 0x00, 0x01, 'k', 'p', 'a', 0xfe, 0xff, '/' };
    size_t id = m_ipick_id(), n = 0, i, kl = MG.klen[id];
    uint64_t r = m_ibelow(100);
    if (r < 30) {
        memcpy(b, MG.key[id], kl);
        n = kl;
    } else if (r < 45) {
        n = (size_t)m_ibelow(kl + 1);
        memcpy(b, MG.key[id], n);
    } else if (r < 55) {
        size_t extra = 1 + (size_t)m_ibelow(3);
        memcpy(b, MG.key[id], kl);
        n = kl;
        for (i = 0; i < extra; i++) {
            uint64_t x = m_ibelow(3);
            b[n++] = x == 0 ? 0x00 : x == 1 ? 0xff : (unsigned char)m_irnd();
        }
    } else if (r < 65) {
        size_t at = (size_t)m_ibelow(kl);
        memcpy(b, MG.key[id], kl);
        n = m_ibelow(2) ? kl : at + 1;
        if (m_ibelow(2)) { if (b[at] != 0xff) b[at]++; else b[at] = 0; }
        else { if (b[at] != 0x00) b[at]--; else b[at] = 0xff; }
    } else if (r < 75) {
        n = 1 + (size_t)m_ibelow(4);
        memset(b, 0xff, n);
    } else if (r < 80) {
        n = 0;
    } else if (r < 92) {
        n = 1 + (size_t)m_ibelow(3);
        for (i = 0; i < n; i++) b[i] = m_ibelow(4) ? alpha[m_ibelow(8)] : (unsigned char)m_irnd();
    } else {
        n = (size_t)snprintf((char *)b, 24, "k%llu", (unsigned long long)m_ibelow(MG.nkeys + 10));
    }
    return n;
}

static void m_it_free(struct m_it *mi, int close_it)
{
    if (close_it && mi->it) kvdb_iter_close(mi->it);
    mi->it = NULL;
    free(mi->own);
    mi->own = NULL;
}

/* Open a random range or prefix iterator on t that must see view.
 * own: view belongs to the iterator (freed by m_it_free).  0 or -1. */
static int m_it_open(struct m_it *mi, kvdb_txn *t, const m_val *view, m_val *own)
{
    static unsigned char lo[M_MAX_BOUND], hi[M_MAX_BOUND];
    size_t lon = 0, hin = 0;
    int haslo, hashi, rc;
    char hl[48], hh[48];
    memset(mi, 0, sizeof *mi);
    mi->view = view;
    mi->own = own;
    mi->rev = m_ibelow(3) == 0;
    MG.iters++;
    if (m_ibelow(100) < 35) { /* prefix */
        size_t end;
        lon = m_gen_bytes(lo);
        mi->plo = m_lower(lo, lon, 0);
        for (end = mi->plo; end < MG.nkeys; end++) {
            size_t id = MG.sorted[end];
            if (MG.klen[id] < lon || memcmp(MG.key[id], lo, lon) != 0) break;
        }
        mi->phi = end;
        m_hex(hl, sizeof hl, lo, lon);
        snprintf(mi->desc, sizeof mi->desc, "prefix %s%s", hl, mi->rev ? " reverse" : "");
        rc = kvdb_iter_prefix(t, lo, lon, mi->rev ? KVDB_ITER_REVERSE : 0, &mi->it);
    } else {
        uint64_t shape = m_ibelow(100);
        haslo = m_ibelow(100) >= 15;
        hashi = m_ibelow(100) >= 15;
        if (haslo) lon = m_gen_bytes(lo);
        if (hashi) {
            if (haslo && shape < 10) { memcpy(hi, lo, lon); hin = lon; } /* empty: lo == hi */
            else hin = m_gen_bytes(hi);
        }
        if (haslo && hashi && shape >= 10 && shape < 80 && m_kcmp(lo, lon, hi, hin) > 0) {
            /* mostly lo < hi; the rest stay inverted (empty) */
            static unsigned char tb[M_MAX_BOUND];
            size_t tn = lon;
            memcpy(tb, lo, lon); memcpy(lo, hi, hin); memcpy(hi, tb, tn);
            lon = hin; hin = tn;
        }
        mi->plo = haslo ? m_lower(lo, lon, 0) : 0;
        mi->phi = hashi ? m_lower(hi, hin, 0) : MG.nkeys;
        if (mi->phi < mi->plo) mi->phi = mi->plo;
        m_hex(hl, sizeof hl, haslo ? lo : NULL, lon);
        m_hex(hh, sizeof hh, hashi ? hi : NULL, hin);
        snprintf(mi->desc, sizeof mi->desc, "range [%s, %s)%s", hl, hh, mi->rev ? " reverse" : "");
        rc = kvdb_iter_range(t, haslo ? lo : NULL, lon, hashi ? hi : NULL, hin,
                             mi->rev ? KVDB_ITER_REVERSE : 0, &mi->it);
    }
    mi->cur = mi->rev ? mi->phi : mi->plo;
    if (rc != KVDB_OK || !mi->it) {
        MFAIL("iterator open", -1, rc, "%s", mi->desc);
        mi->it = NULL;
        m_it_free(mi, 0);
        return -1;
    }
    return 0;
}

/* One kvdb_iter_next compared with the model: 1 (a pair; *idp, *kp, *vp
 * set), 0 (done), -1 (mismatch). */
static int m_it_next(struct m_it *mi, const char *what, size_t *idp, const void **kp, const void **vp)
{
    const void *k = NULL, *v = NULL;
    size_t kl = 0, vl = 0, id = 0;
    int want_done, rc;
    char hk[48];
    if (!mi->rev) {
        while (mi->cur < mi->phi && !mi->view[MG.sorted[mi->cur]].present) mi->cur++;
        want_done = mi->cur >= mi->phi;
        if (!want_done) id = MG.sorted[mi->cur++];
    } else {
        while (mi->cur > mi->plo && !mi->view[MG.sorted[mi->cur - 1]].present) mi->cur--;
        want_done = mi->cur <= mi->plo;
        if (!want_done) id = MG.sorted[--mi->cur];
    }
    rc = kvdb_iter_next(mi->it, &k, &kl, &v, &vl);
    MG.iter_steps++;
    mi->steps++;
    if (want_done) {
        if (rc == KVDB_DONE) return 0;
        m_hex(hk, sizeof hk, rc == KVDB_OK ? (const unsigned char *)k : NULL, kl);
        MFAIL(what, -1, rc, "%s step %llu: want DONE, got key %s", mi->desc, (unsigned long long)mi->steps, hk);
        return -1;
    }
    if (rc != KVDB_OK) {
        MFAIL(what, id, rc, "%s step %llu: want this key", mi->desc, (unsigned long long)mi->steps);
        return -1;
    }
    if (kl != MG.klen[id] || memcmp(k, MG.key[id], kl) != 0) {
        m_hex(hk, sizeof hk, (const unsigned char *)k, kl);
        MFAIL(what, id, rc, "%s step %llu: got key %s instead", mi->desc, (unsigned long long)mi->steps, hk);
        return -1;
    }
    if (vl != mi->view[id].vlen) {
        MFAIL(what, id, rc, "%s step %llu: vlen %zu want %u", mi->desc, (unsigned long long)mi->steps, vl,
              (unsigned)mi->view[id].vlen);
        return -1;
    }
    if (vl) { /* the first bytes tell versions apart; all of them now and then */
        size_t cl = vl <= 64 || (mi->steps & 15) == 0 ? vl : 64;
        m_gen_value(mi->view[id].vseed, cl, MG.vbuf);
        if (!v || memcmp(v, MG.vbuf, cl) != 0) {
            MFAIL(what, id, rc, "%s step %llu: value differs", mi->desc, (unsigned long long)mi->steps);
            return -1;
        }
    }
    if (idp) *idp = id;
    if (kp) *kp = k;
    if (vp) *vp = v;
    return 1;
}

/* up to n steps (n == 0: to the end) */
static void m_it_walk(struct m_it *mi, size_t n, const char *what, struct m_snap *pin)
{
    size_t i;
    for (i = 0; (n == 0 || i < n) && !MG.bad; i++) {
        size_t id;
        const void *k, *v;
        int rc = m_it_next(mi, what, &id, &k, &v);
        if (rc <= 0) break;
        if (pin && !pin->ipin_k && mi->view[id].vlen) {
            pin->ipin_k = k;
            pin->ipin_v = v;
            pin->ipin_id = id;
            pin->ipin_val = mi->view[id];
        }
    }
}

static void m_it_seek(struct m_it *mi, const char *what)
{
    static unsigned char tb[M_MAX_BOUND];
    size_t tn = m_gen_bytes(tb);
    int rc = kvdb_iter_seek(mi->it, tb, tn);
    char ht[48];
    MG.seeks++;
    if (rc != KVDB_OK) {
        m_hex(ht, sizeof ht, tb, tn);
        MFAIL(what, -1, rc, "%s: seek to %s", mi->desc, ht);
        return;
    }
    if (!mi->rev) {
        size_t p = m_lower(tb, tn, 0);
        mi->cur = p < mi->plo ? mi->plo : p > mi->phi ? mi->phi : p;
    } else {
        size_t p = m_lower(tb, tn, 1);
        mi->cur = p > mi->phi ? mi->phi : p < mi->plo ? mi->plo : p;
    }
    m_hex(ht, sizeof ht, tb, tn);
    {   /* remember the seek in the description for failure messages */
        size_t dl = strlen(mi->desc);
        if (dl + 20 < sizeof mi->desc)
            snprintf(mi->desc + dl, sizeof mi->desc - dl, " seek %s@%llu", ht, (unsigned long long)mi->steps);
    }
}

/* a random use of an open iterator: steps, a seek then steps, or to the end */
static void m_it_exercise(struct m_it *mi, const char *what, struct m_snap *pin)
{
    uint64_t r = m_ibelow(100);
    if (r < 55) {
        m_it_walk(mi, 1 + (size_t)m_ibelow(24), what, pin);
    } else if (r < 85) {
        m_it_seek(mi, what);
        m_it_walk(mi, 1 + (size_t)m_ibelow(12), what, pin);
    } else {
        m_it_walk(mi, mi->phi - mi->plo < 200 || m_ibelow(8) == 0 ? 0 : 200, what, pin);
    }
}

/* a whole walk of a fresh iterator over everything, forward or reverse */
static void m_it_full(kvdb_txn *t, const m_val *view, int rev, const char *what)
{
    struct m_it mi;
    int rc;
    memset(&mi, 0, sizeof mi);
    mi.view = view;
    mi.rev = rev;
    mi.phi = MG.nkeys;
    mi.cur = rev ? mi.phi : 0;
    snprintf(mi.desc, sizeof mi.desc, "full%s", rev ? " reverse" : "");
    rc = m_ibelow(2) ? kvdb_iter_prefix(t, "", 0, rev ? KVDB_ITER_REVERSE : 0, &mi.it)
                    : kvdb_iter_range(t, NULL, 0, NULL, 0, rev ? KVDB_ITER_REVERSE : 0, &mi.it);
    if (rc != KVDB_OK) { MFAIL(what, -1, rc, "open full iterator"); return; }
    m_it_walk(&mi, 0, what, NULL);
    m_it_free(&mi, 1);
}

/* ------------------------------------------------------------------ */
/* snapshots                                                          */

static void m_check_pin(struct m_snap *s, const char *what)
{
    if (s->ipin_k) {
        m_gen_value(s->ipin_val.vseed, s->ipin_val.vlen, MG.vbuf);
        if (memcmp(s->ipin_k, MG.key[s->ipin_id], MG.klen[s->ipin_id]) != 0 ||
            memcmp(s->ipin_v, MG.vbuf, s->ipin_val.vlen) != 0)
            MFAIL(what, s->ipin_id, 0, "key/value pointers from kvdb_iter_next (snapshot begun at op %llu) "
                  "no longer hold the pair", (unsigned long long)s->begin_op);
    }
    if (!s->pin || s->pin_val.vlen == 0) return;
    m_gen_value(s->pin_val.vseed, s->pin_val.vlen, MG.vbuf);
    if (memcmp(s->pin, MG.vbuf, s->pin_val.vlen) != 0)
        MFAIL(what, s->pin_id, 0, "value pointer from kvdb_txn_get (snapshot begun at op %llu) "
              "no longer holds the value", (unsigned long long)s->begin_op);
}

static void m_snap_verify(struct m_snap *s, int nprobe, const char *what)
{
    int i;
    m_check_pin(s, what);
    for (i = 0; i < nprobe && !MG.bad; i++) {
        size_t id = (size_t)m_below(MG.nkeys);
        m_check_tget(s->t, id, &s->m[id], what);
        MG.op++;
    }
}

static void m_snap_end(int i, int full)
{
    struct m_snap *s = &MG.snaps[i];
    int j;
    m_check_pin(s, "snapshot end");
    for (j = 0; j < s->nits && !MG.bad; j++) /* one last use of the iterators held across commits */
        m_it_exercise(&s->its[j], "snapshot iterator at end", s);
    if (full && !MG.bad) {
        size_t id;
        for (id = 0; id < MG.nkeys && !MG.bad; id++) m_check_tget(s->t, id, &s->m[id], "snapshot final");
        /* (an old snapshot's iterator sorts the log since the last
         * checkpoint into a private run: costly, so not every time) */
        if (!MG.bad && MG.iters_on && m_ibelow(48) == 0) m_it_full(s->t, s->m, (int)m_ibelow(2), "snapshot final iteration");
    }
    /* iterators: closed here, or left open for the end of the txn to close */
    for (j = 0; j < s->nits; j++) m_it_free(&s->its[j], (int)m_ibelow(2));
    s->nits = 0;
    if (m_below(2)) {
        int rc = kvdb_commit(s->t);
        if (rc != KVDB_OK) MFAIL("commit of read txn", -1, rc, NULL);
    } else {
        kvdb_abort(s->t);
    }
    free(s->m);
    MG.snaps[i] = MG.snaps[--MG.nsnap];
}

static void m_op_snapshot(void)
{
    int i;
    uint64_t r = m_below(10);
    if (r < 3 && MG.nsnap < M_MAX_SNAPS) {
        struct m_snap *s = &MG.snaps[MG.nsnap];
        int rc = kvdb_begin(MG.db, KVDB_TXN_RDONLY, &s->t);
        if (rc != KVDB_OK) { MFAIL("begin snapshot", -1, rc, NULL); return; }
        s->m = malloc(MG.nkeys * sizeof *s->m);
        if (!s->m) { perror("malloc"); exit(2); }
        memcpy(s->m, MG.m, MG.nkeys * sizeof *s->m);
        s->begin_op = MG.op;
        s->pin = NULL;
        s->nits = 0;
        s->late_opens = 0;
        s->ipin_k = s->ipin_v = NULL;
        for (i = 0; i < 8; i++) { /* pin some present key's value */
            size_t id = (size_t)m_below(MG.nkeys);
            size_t n = 0;
            if (!MG.m[id].present || MG.m[id].vlen == 0) continue;
            rc = kvdb_txn_get(s->t, MG.key[id], MG.klen[id], &s->pin, &n);
            if (rc != KVDB_OK || n != MG.m[id].vlen) {
                MFAIL("snapshot pin get", id, rc, "len %zu want %u", n, (unsigned)MG.m[id].vlen);
                s->pin = NULL;
            }
            s->pin_id = id;
            s->pin_val = MG.m[id];
            break;
        }
        s->end_op = MG.op + 200 + m_below(8000);
        MG.nsnap++;
        MG.snaps_taken++;
        m_snap_verify(s, 4, "snapshot begin");
        /* an iterator opened now, kept open across the commits to come */
        if (!MG.bad && MG.iters_on && m_ibelow(2) && m_it_open(&s->its[0], s->t, s->m, NULL) == 0) {
            s->nits = 1;
            m_it_exercise(&s->its[0], "snapshot iterator", s);
        }
    } else if (MG.nsnap) {
        m_snap_verify(&MG.snaps[m_below((uint64_t)MG.nsnap)], 16, "snapshot get");
    }
    for (i = 0; i < MG.nsnap && !MG.bad; i++) {
        if (MG.op >= MG.snaps[i].end_op) {
            m_snap_end(i, m_below(4) == 0);
            i--;
        }
    }
}

/* Iterators in read transactions: over a snapshot held open across later
 * commits (kept open themselves and resumed by later calls), or in a fresh
 * read transaction over the current state. */
static void m_op_iter(void)
{
    uint64_t r = m_ibelow(100);
    struct m_snap *s = MG.nsnap ? &MG.snaps[m_ibelow((uint64_t)MG.nsnap)] : NULL;
    /* a new iterator in an old snapshot (it sorts the log since the last
     * checkpoint into a private run: costly) now and then, once at most */
    int late = s && s->nits < M_MAX_ITS && s->late_opens == 0 && m_ibelow(40) == 0;
    if (r < 55 && s && (s->nits || late)) {
        if (!late) {
            int j = (int)m_ibelow((uint64_t)s->nits);
            if (m_ibelow(8) == 0) { /* done with it */
                m_it_free(&s->its[j], 1);
                s->its[j] = s->its[--s->nits];
            } else {
                m_it_exercise(&s->its[j], "snapshot iterator", s);
            }
        } else if (m_it_open(&s->its[s->nits], s->t, s->m, NULL) == 0) {
            s->nits++;
            s->late_opens++;
            m_it_exercise(&s->its[s->nits - 1], "snapshot iterator", s);
        }
    } else {
        struct m_it its[M_MAX_ITS];
        struct m_snap pin;
        kvdb_txn *t = NULL;
        int n = 1 + (int)m_ibelow(M_MAX_ITS), j, k, rc;
        rc = kvdb_begin(MG.db, KVDB_TXN_RDONLY, &t);
        if (rc != KVDB_OK) { MFAIL("begin read txn for iterators", -1, rc, NULL); return; }
        memset(&pin, 0, sizeof pin);
        for (j = 0; j < n; j++)
            if (m_it_open(&its[j], t, MG.m, NULL) != 0) break;
        n = j;
        for (k = 0; k < 3 && !MG.bad; k++)
            for (j = 0; j < n && !MG.bad; j++) m_it_exercise(&its[j], "iterator", &pin);
        if (!MG.bad) m_check_pin(&pin, "iterator pointers at txn end");
        for (j = 0; j < n; j++) m_it_free(&its[j], (int)m_ibelow(2));
        if (m_ibelow(2)) {
            rc = kvdb_commit(t);
            if (rc != KVDB_OK) MFAIL("commit of read txn with iterators", -1, rc, NULL);
        } else {
            kvdb_abort(t);
        }
    }
}

/* ------------------------------------------------------------------ */
/* operations                                                         */

static void m_op_put(void)
{
    size_t id = m_pick_id();
    m_val v;
    int rc;
    v.present = 1;
    v.vlen = m_pick_vlen();
    v.vseed = m_rnd();
    m_gen_value(v.vseed, v.vlen, MG.vbuf);
    rc = kvdb_put(MG.db, MG.key[id], MG.klen[id], MG.vbuf, v.vlen);
    MG.op++;
    if (rc != KVDB_OK) { MFAIL("put", id, rc, "vlen %u", (unsigned)v.vlen); return; }
    m_set(MG.m, id, &v);
}

static void m_op_get(void)
{
    size_t id = m_pick_id();
    uint64_t r = m_below(10);
    m_check_get(id, &MG.m[id], r < 8 ? 0 : r == 8 ? 1 : 2, "get");
    MG.op++;
}

static void m_op_del(void)
{
    size_t id = m_pick_id();
    int rc = kvdb_del(MG.db, MG.key[id], MG.klen[id]);
    m_val v;
    MG.op++;
    if (rc != (MG.m[id].present ? KVDB_OK : KVDB_NOTFOUND)) {
        MFAIL("del", id, rc, "want %s", MG.m[id].present ? "OK" : "NOTFOUND");
        return;
    }
    memset(&v, 0, sizeof v);
    m_set(MG.m, id, &v);
}

static void m_op_get_absent(void)
{
    char k[40];
    int n = snprintf(k, sizeof k, "k%llu/", (unsigned long long)(MG.nkeys + m_below(1000000)));
    int rc = kvdb_get(MG.db, k, (size_t)n, MG.gbuf, 16, NULL);
    MG.op++;
    if (rc != KVDB_NOTFOUND) MFAIL("get of a key outside the key space", -1, rc, "key %s", k);
}

struct m_ov { size_t id; m_val v; };

static const m_val *m_txn_view(const struct m_ov *ovs, int nov, size_t id)
{
    int i;
    for (i = nov - 1; i >= 0; i--)
        if (ovs[i].id == id) return &ovs[i].v;
    return &MG.m[id];
}

/* The write transaction's view: the model with its writes so far applied. */
static m_val *m_txn_copy(const struct m_ov *ovs, int nov)
{
    m_val *v = malloc(MG.nkeys * sizeof *v);
    int i;
    if (!v) { perror("malloc"); exit(2); }
    memcpy(v, MG.m, MG.nkeys * sizeof *v);
    for (i = 0; i < nov; i++) v[ovs[i].id] = ovs[i].v;
    return v;
}

/* An iterator in the write transaction: open one (it sees the writes made
 * so far, not later ones) or use one opened earlier. */
static void m_txn_iter(kvdb_txn *t, struct m_it *its, int *nits, const struct m_ov *ovs, int nov)
{
    if (*nits < M_MAX_ITS && (*nits == 0 || m_ibelow(2))) {
        m_val *v = m_txn_copy(ovs, nov);
        if (m_it_open(&its[*nits], t, v, v) != 0) return;
        (*nits)++;
        m_it_exercise(&its[*nits - 1], "write txn iterator", NULL);
    } else {
        int j = (int)m_ibelow((uint64_t)*nits);
        m_it_exercise(&its[j], "write txn iterator (after later writes)", NULL);
    }
}

static void m_op_txn(void)
{
    struct m_ov ovs[M_MAX_TXN_OPS];
    struct m_it its[M_MAX_ITS];
    int nov = 0, n, i, rc, nits = 0;
    kvdb_txn *t = NULL;
    rc = kvdb_begin(MG.db, 0, &t);
    if (rc != KVDB_OK) { MFAIL("begin", -1, rc, NULL); return; }
    MG.txns++;
    n = 2 + (int)m_below(M_MAX_TXN_OPS - 1);
    for (i = 0; i < n && !MG.bad; i++) {
        size_t id = nov && m_below(100) < 40 ? ovs[m_below((uint64_t)nov)].id : m_pick_id();
        const m_val *cur = m_txn_view(ovs, nov, id);
        uint64_t r = m_below(100);
        MG.op++;
        if (MG.iters_on && m_ibelow(1000) + 1 <= M_TXN_ITER_PERMILLE) m_txn_iter(t, its, &nits, ovs, nov);
        if (r < 45) {
            m_val v;
            v.present = 1;
            v.vlen = m_pick_vlen();
            v.vseed = m_rnd();
            m_gen_value(v.vseed, v.vlen, MG.vbuf);
            rc = kvdb_txn_put(t, MG.key[id], MG.klen[id], MG.vbuf, v.vlen);
            if (rc != KVDB_OK) { MFAIL("txn_put", id, rc, "vlen %u", (unsigned)v.vlen); break; }
            ovs[nov].id = id;
            ovs[nov].v = v;
            nov++;
        } else if (r < 65) {
            int want = cur->present ? KVDB_OK : KVDB_NOTFOUND;
            rc = kvdb_txn_del(t, MG.key[id], MG.klen[id]);
            if (rc != want) { MFAIL("txn_del", id, rc, "want %s", want ? "NOTFOUND" : "OK"); break; }
            if (want == KVDB_OK) {
                ovs[nov].id = id;
                memset(&ovs[nov].v, 0, sizeof ovs[nov].v);
                nov++;
            }
        } else if (r < 93) {
            m_check_tget(t, id, cur, "txn_get (own writes)");
        } else if (r < 98) {
            /* the auto-commit read sees the committed state */
            m_check_get(id, &MG.m[id], 0, "get during write txn");
            if (m_cbelow(40) == 0) { /* compaction needs the writer role this thread holds */
                int crc = m_cbelow(2) ? kvdb_compact_step(MG.db, MG.cp_budget) : kvdb_compact(MG.db);
                MG.cp_ebusy++;
                if (crc != KVDB_EBUSY) MFAIL("compaction inside the write transaction", -1, crc, "want EBUSY");
            }
        } else if (MG.nsnap) {
            m_snap_verify(&MG.snaps[m_below((uint64_t)MG.nsnap)], 4, "snapshot get during write txn");
        }
    }
    /* iterators: closed here, or left open for commit / abort to close */
    for (i = 0; i < nits; i++) m_it_free(&its[i], !MG.bad && m_ibelow(2));
    if (MG.bad) { kvdb_abort(t); return; }
    if (m_below(4) == 0) {
        kvdb_abort(t);
        MG.aborts++;
    } else {
        rc = kvdb_commit(t);
        if (rc != KVDB_OK) { MFAIL("commit", -1, rc, "%d ops", n); return; }
        MG.commits++;
        for (i = 0; i < nov; i++) m_set(MG.m, ovs[i].id, &ovs[i].v);
    }
    if (m_below(10) == 0)
        for (i = 0; i < nov && !MG.bad; i++) m_check_get(ovs[i].id, &MG.m[ovs[i].id], 0, "get after txn");
}

static void m_op_misc(void)
{
    uint64_t r = m_below(10);
    if (r < 7) {
        m_check_stat("stat");
    } else if (r < 8) {
        int rc = kvdb_sync(MG.db);
        if (rc != KVDB_OK) MFAIL("sync", -1, rc, NULL);
    } else {
        m_op_get_absent();
    }
}

/* ------------------------------------------------------------------ */
/* compaction                                                         */

/* Compactions, full (kvdb_compact) and stepwise (kvdb_compact_step with a
 * small budget, one step now and then between the other ops, so that one
 * compaction spans many commits, snapshots and iterators), drawn from
 * their own stream (MG.crs).  Snapshots and their iterators opened before a
 * compaction stay open across it (their view must stay exactly theirs:
 * checked key by key when it completes, with the value pointers pinned
 * before it); fresh reads and iterators see the current state.  A reopen
 * in the middle abandons a stepwise compaction (close must remove the
 * new file).  kvdb_stat must follow: compacting while one is in progress,
 * compactions completed by this handle, live bytes exactly the model's. */
#ifndef M_CP_PERIOD
#define M_CP_PERIOD 2500   /* a compaction begins about once per this many loop turns */
#endif
#define M_CP_MAX_STEPS 2500 /* then kvdb_compact finishes the stepwise one */

static int m_cp_tmp_exists(void)
{
    char tmp[640];
    struct stat fs;
    snprintf(tmp, sizeof tmp, "%s.compact", MG.path);
    return stat(tmp, &fs) == 0;
}

/* a compaction has completed: check everything against the model */
static void m_cp_done(const struct kvdb_stat *before, int exact, const char *what)
{
    struct kvdb_stat st;
    int i, j, rc;
    MG.cp_handle++;
    memset(&st, 0, sizeof st);
    rc = kvdb_stat(MG.db, &st);
    if (rc != KVDB_OK) { MFAIL(what, -1, rc, "kvdb_stat"); return; }
    if (st.compactions != before->compactions + 1 || st.compacting)
        MFAIL(what, -1, rc, "stat.compactions %llu (before %llu), compacting %u", (unsigned long long)st.compactions,
              (unsigned long long)before->compactions, st.compacting);
    if (st.compact_reclaimed != (before->file_bytes > st.file_bytes ? before->file_bytes - st.file_bytes : 0) && exact)
        MFAIL(what, -1, rc, "stat.compact_reclaimed %llu, file %llu -> %llu bytes",
              (unsigned long long)st.compact_reclaimed, (unsigned long long)before->file_bytes,
              (unsigned long long)st.file_bytes);
    /* nothing committed meanwhile: the new file holds the live records and
     * a COMMIT per batch of them, and one to seal the copy */
    if (exact && st.dead_bytes > (st.keys / CP_BATCH + 2) * (uint64_t)(LG_REC + LG_COMMIT_LEN))
        MFAIL(what, -1, rc, "%llu dead bytes right after compacting %llu keys (%llu live bytes)",
              (unsigned long long)st.dead_bytes, (unsigned long long)st.keys, (unsigned long long)st.live_bytes);
    if (!MG.inmem && m_cp_tmp_exists()) MFAIL(what, -1, rc, "%s.compact is left after the compaction", MG.path);
    m_verify_all(what); /* every key, stat, and the file size */
    /* snapshots from before it: exactly their view, pinned pointers intact */
    for (i = 0; i < MG.nsnap && !MG.bad; i++) {
        struct m_snap *s = &MG.snaps[i];
        size_t id;
        MG.cp_snaps_across++;
        m_check_pin(s, "snapshot across a compaction");
        for (id = 0; id < MG.nkeys && !MG.bad; id++) m_check_tget(s->t, id, &s->m[id], "snapshot across a compaction");
        for (j = 0; j < s->nits && !MG.bad; j++) {
            MG.cp_its_across++;
            m_it_exercise(&s->its[j], "snapshot iterator across a compaction", s);
        }
    }
    /* a fresh read transaction sees the new state, in key order */
    if (!MG.bad && (MG.iters_on || m_cbelow(4) == 0)) {
        kvdb_txn *t = NULL;
        rc = kvdb_begin(MG.db, KVDB_TXN_RDONLY, &t);
        if (rc != KVDB_OK) { MFAIL("begin read txn after a compaction", -1, rc, NULL); return; }
        m_it_full(t, MG.m, (int)m_cbelow(2), "iteration after a compaction");
        kvdb_abort(t);
    }
}

/* an iterator opened on an open snapshot now, to be held across */
static void m_cp_hold_iter(void)
{
    struct m_snap *s;
    if (!MG.iters_on || !MG.nsnap) return;
    s = &MG.snaps[m_cbelow((uint64_t)MG.nsnap)];
    if (s->nits < M_MAX_ITS && m_it_open(&s->its[s->nits], s->t, s->m, NULL) == 0) {
        s->nits++;
        m_it_exercise(&s->its[s->nits - 1], "snapshot iterator before a compaction", s);
    }
}

static void m_cp_full(void)
{
    struct kvdb_stat before;
    int was = MG.cp_active, rc;
    memset(&before, 0, sizeof before);
    if (kvdb_stat(MG.db, &before) != KVDB_OK) { MFAIL("stat before compacting", -1, -1, NULL); return; }
    rc = kvdb_compact(MG.db);
    if (rc != KVDB_OK) {
        MFAIL(was ? "kvdb_compact (finishing a stepwise one)" : "kvdb_compact", -1, rc, "%llu keys", (unsigned long long)MG.count);
        return;
    }
    if (was) MG.cp_by_full++;
    else MG.cp_full++;
    MG.cp_active = 0;
    /* finishing a stepwise one copies what was committed meanwhile too */
    m_cp_done(&before, !was, was ? "after kvdb_compact finished a stepwise compaction" : "after kvdb_compact");
}

static void m_cp_step(void)
{
    struct kvdb_stat before;
    int rc;
    memset(&before, 0, sizeof before);
    if (kvdb_stat(MG.db, &before) != KVDB_OK) { MFAIL("stat before a compaction step", -1, -1, NULL); return; }
    rc = kvdb_compact_step(MG.db, MG.cp_budget);
    MG.cp_steps++;
    MG.cp_step_calls++;
    if (rc == KVDB_OK) {
        if (!MG.cp_active) {
            MG.cp_active = 1;
            MG.cp_begin_op = MG.op;
        }
        if (m_cbelow(16) == 0) {
            m_check_stat("stat during a stepwise compaction");
            if (!MG.inmem && !m_cp_tmp_exists())
                MFAIL("stepwise compaction", -1, rc, "in progress without %s.compact", MG.path);
        }
        if (MG.cp_steps >= M_CP_MAX_STEPS) m_cp_full(); /* budget too small to catch up: finish it */
        else if (m_cbelow(300) == 0) MG.reopen_at = MG.op; /* close in the middle of it */
        return;
    }
    if (rc != KVDB_DONE) {
        MFAIL("kvdb_compact_step", -1, rc, "step %llu, budget %zu", (unsigned long long)MG.cp_steps, MG.cp_budget);
        return;
    }
    MG.cp_active = 0;
    MG.cp_stepwise++;
    if (MG.op - MG.cp_begin_op > MG.cp_longest) MG.cp_longest = MG.op - MG.cp_begin_op;
    m_cp_done(&before, 0, "after kvdb_compact_step returned DONE");
}

/* after every loop turn: maybe a compaction, or a step of one */
static void m_cp_tick(void)
{
    static const size_t budgets[6] = { 1, 200, 3000, 20000, 150000, 1u << 20 };
    if (MG.bad) return;
    if (MG.cp_active) {
        if (m_cbelow(400) == 0) m_cp_full(); /* kvdb_compact finishes the one in progress */
        else if (m_cbelow(100) < MG.cp_rate) m_cp_step();
        return;
    }
    if (m_cbelow(M_CP_PERIOD) != 0) return;
    if (m_cbelow(3) == 0) m_cp_hold_iter();
    if (m_cbelow(100) < 35) {
        m_cp_full();
        return;
    }
    MG.cp_budget = budgets[m_cbelow(6)];
    if (m_cbelow(4) == 0) MG.cp_budget += (size_t)m_cbelow(5000);
    MG.cp_rate = m_cbelow(3) == 0 ? 100 : 5 + (unsigned)m_cbelow(40);
    MG.cp_steps = 0;
    m_cp_step(); /* the first: starts it (or does it whole, when it is small) */
}

/* ------------------------------------------------------------------ */
/* open / reopen                                                      */

static int m_open(int create)
{
    kvdb_options o;
    uint64_t r;
    int rc;
    kvdb_options_init(&o);
    if (MG.inmem) {
        o.flags = KVDB_INMEMORY | KVDB_CREATE;
        MG.sync = KVDB_SYNC_OFF;
        o.sync = MG.sync;
        rc = kvdb_open(NULL, &o, &MG.db);
        MG.reopen_at = MG.op + 5000 + m_below(20000);
    } else {
        o.flags = create ? KVDB_CREATE : 0;
        r = m_below(100);
        if (r < 6) {
            MG.sync = KVDB_SYNC_FULL;
            MG.reopen_at = MG.op + 30 + m_below(100);
        } else if (r < 22) {
            static const uint64_t sb[3] = { 0, 65536, 1u << 20 };
            MG.sync = KVDB_SYNC_NORMAL;
            o.sync_bytes = sb[m_below(3)];
            MG.reopen_at = MG.op + 2000 + m_below(8000);
        } else {
            MG.sync = KVDB_SYNC_OFF;
            MG.reopen_at = MG.op + 3000 + m_below(20000);
        }
        o.sync = MG.sync;
        rc = kvdb_open(MG.path, &o, &MG.db);
    }
    if (rc != KVDB_OK) { MG.db = NULL; MFAIL("open", -1, rc, "sync mode %d", MG.sync); return -1; }
    /* always in the first stretch (the log is short: cheap), then by chance */
    MG.iters_on = create || m_ibelow(100) < M_ITER_STRETCH_PCT;
    return 0;
}

static void m_reopen(void)
{
    int rc;
    while (MG.nsnap && !MG.bad) m_snap_end(0, 1);
    if (MG.bad) return;
    MG.reopens++;
    if (!MG.inmem) {
        struct kvdb_stat st;
        rc = kvdb_close(MG.db);
        MG.db = NULL;
        if (rc != KVDB_OK) { MFAIL("close", -1, rc, NULL); return; }
        if (MG.cp_active) { /* close abandons the compaction: the database is as it was */
            MG.cp_abandoned++;
            if (m_cp_tmp_exists())
                MFAIL("close during a stepwise compaction", -1, rc, "%s.compact is left behind", MG.path);
        }
        MG.cp_active = 0;
        MG.cp_handle = 0;
        if (m_open(0) != 0) return;
        memset(&st, 0, sizeof st);
        rc = kvdb_stat(MG.db, &st);
        if (rc != KVDB_OK || st.torn_bytes != 0)
            MFAIL("reopen after clean close", -1, rc, "torn_bytes %llu", (unsigned long long)st.torn_bytes);
        MG.sidecar_loads += st.sidecar_loaded;
    } else {
        MG.reopen_at = MG.op + 5000 + m_below(20000);
        MG.iters_on = m_ibelow(100) < M_ITER_STRETCH_PCT;
    }
    m_verify_all("verify after reopen");
    if (!MG.bad && MG.iters_on && m_ibelow(2)) { /* key order after reopen: a whole walk, one way or the other
                                  * (the first iterator sorts the log since the sidecar) */
        kvdb_txn *t = NULL;
        rc = kvdb_begin(MG.db, KVDB_TXN_RDONLY, &t);
        if (rc != KVDB_OK) { MFAIL("begin read txn after reopen", -1, rc, NULL); return; }
        m_it_full(t, MG.m, (int)m_ibelow(2), "iteration after reopen");
        kvdb_abort(t);
    }
}

/* ------------------------------------------------------------------ */

static uint64_t m_tot_cp[6]; /* over all seeds: full, stepwise, finished by full, abandoned, snapshots, iterators across */

static void m_run_seed(uint64_t seed, uint64_t nops, int inmem)
{
    static const size_t nkeys_choice[4] = { 40, 400, 2500, 6000 };
    /* by seed, so consecutive seeds cover every key-space size */
    size_t id;
    memset(&MG, 0, sizeof MG);
    MG.seed = seed;
    MG.inmem = inmem;
    MG.rs = seed * 0x9E3779B97F4A7C15ULL + 0x1234567ULL;
    if (MG.rs == 0) MG.rs = 1;
    MG.irs = seed * 0xD1B54A32D192ED03ULL + 0x7654321ULL;
    if (MG.irs == 0) MG.irs = 1;
    MG.crs = seed * 0xA24BAED4963EE407ULL + 0xC0FFEEULL;
    if (MG.crs == 0) MG.crs = 1;
    MG.nkeys = nkeys_choice[seed % 4];
    MG.key = calloc(MG.nkeys, sizeof *MG.key);
    MG.klen = calloc(MG.nkeys, sizeof *MG.klen);
    MG.m = calloc(MG.nkeys, sizeof *MG.m);
    MG.vbuf = malloc(M_MAX_VLEN);
    MG.gbuf = malloc(M_MAX_VLEN);
    if (!MG.key || !MG.klen || !MG.m || !MG.vbuf || !MG.gbuf) { perror("malloc"); exit(2); }
    for (id = 0; id < MG.nkeys; id++) m_make_key(id, &MG.key[id], &MG.klen[id]);
    m_build_sorted();
    snprintf(MG.path, sizeof MG.path, "%s/model-%llu.db", tu_dir, (unsigned long long)seed);
    unlink(MG.path);

    if (m_open(1) == 0) {
        while (MG.op < nops && !MG.bad) {
            uint64_t r = m_below(1000);
            if (r < 340) m_op_put();
            else if (r < 640) m_op_get();
            else if (r < 750) m_op_del();
            else if (r < 850) m_op_txn();
            else if (r < 880) m_op_snapshot();
            else if (r < 890) m_op_misc();
            else {
                if (r < 890 + M_ITER_PERMILLE && MG.iters_on) m_op_iter(); /* besides: the same ops as without */
                m_op_get();
            }
            m_cp_tick();
            if (MG.op >= MG.reopen_at && !MG.bad) m_reopen();
        }
        if (!MG.bad) m_reopen(); /* final full verification (after a reopen) */
        while (MG.nsnap) {
            kvdb_abort(MG.snaps[MG.nsnap - 1].t);
            free(MG.snaps[MG.nsnap - 1].m);
            MG.nsnap--;
        }
        if (MG.db) {
            int rc = kvdb_close(MG.db);
            if (rc != KVDB_OK) MFAIL("final close", -1, rc, NULL);
        }
    }
    if (getenv("KVDB_MODEL_VERBOSE"))
        printf("# seed %llu: %llu ops, %zu keys, %llu live, %llu reopens, %llu txns (%llu commits, "
               "%llu aborts), %llu snapshots, %llu iterators (%llu steps, %llu seeks), %llu sidecar loads\n",
               (unsigned long long)seed, (unsigned long long)MG.op, MG.nkeys, (unsigned long long)MG.count,
               (unsigned long long)MG.reopens, (unsigned long long)MG.txns, (unsigned long long)MG.commits,
               (unsigned long long)MG.aborts, (unsigned long long)MG.snaps_taken, (unsigned long long)MG.iters,
               (unsigned long long)MG.iter_steps, (unsigned long long)MG.seeks,
               (unsigned long long)MG.sidecar_loads);
    if (getenv("KVDB_MODEL_VERBOSE"))
        printf("# seed %llu: compactions: %llu full, %llu stepwise (%llu steps, longest over %llu ops), %llu stepwise "
               "finished by kvdb_compact, %llu abandoned by close; %llu snapshots and %llu iterators held across; "
               "%llu EBUSY checks\n", (unsigned long long)seed, (unsigned long long)MG.cp_full,
               (unsigned long long)MG.cp_stepwise, (unsigned long long)MG.cp_step_calls,
               (unsigned long long)MG.cp_longest, (unsigned long long)MG.cp_by_full,
               (unsigned long long)MG.cp_abandoned, (unsigned long long)MG.cp_snaps_across,
               (unsigned long long)MG.cp_its_across, (unsigned long long)MG.cp_ebusy);
    m_tot_cp[0] += MG.cp_full;
    m_tot_cp[1] += MG.cp_stepwise;
    m_tot_cp[2] += MG.cp_by_full;
    m_tot_cp[3] += MG.cp_abandoned;
    m_tot_cp[4] += MG.cp_snaps_across;
    m_tot_cp[5] += MG.cp_its_across;
    unlink(MG.path);
    for (id = 0; id < MG.nkeys; id++) free(MG.key[id]);
    free(MG.key);
    free(MG.sorted);
    free(MG.klen);
    free(MG.m);
    free(MG.vbuf);
    free(MG.gbuf);
}

static void m_run_one(uint64_t seed, uint64_t nops, int inmem)
{
    tu_cur_failed = 0;
    tu_cur_msg[0] = 0;
    m_run_seed(seed, nops, inmem);
    if (tu_cur_failed) {
        tu_failed_total++;
        printf("FAIL model_seed_%llu%s: %s\n", (unsigned long long)seed, inmem ? "_inmemory" : "", tu_cur_msg);
    } else {
        tu_passed_total++;
        printf("ok model_seed_%llu%s\n", (unsigned long long)seed, inmem ? "_inmemory" : "");
    }
    fflush(stdout);
}

/* the seeds together must have done every kind of compaction */
static void test_model_compaction_mix(void)
{
    printf("# compactions: %llu full, %llu stepwise, %llu stepwise finished by kvdb_compact, %llu abandoned by a "
           "close; %llu snapshots and %llu of their iterators held across one\n", (unsigned long long)m_tot_cp[0],
           (unsigned long long)m_tot_cp[1], (unsigned long long)m_tot_cp[2], (unsigned long long)m_tot_cp[3],
           (unsigned long long)m_tot_cp[4], (unsigned long long)m_tot_cp[5]);
    CHECK(m_tot_cp[0] > 0);
    CHECK(m_tot_cp[1] > 0);
    CHECK(m_tot_cp[2] > 0);
    CHECK(m_tot_cp[3] > 0);
    CHECK(m_tot_cp[4] > 0);
    CHECK(m_tot_cp[5] > 0);
}

int main(void)
{
    const char *fl = getenv("KVDB_TEST_FLAVOUR");
    const char *es = getenv("KVDB_MODEL_SEED");
    const char *eo = getenv("KVDB_MODEL_OPS");
    const char *ei = getenv("KVDB_MODEL_INMEM");
    int small = 0;
    uint64_t nseeds = 6, ops = 200000, inmem_ops = 100000, s;
#ifdef KVDB_TEST_HASH_BITS
    small = 1;
#endif
#if defined(__SANITIZE_ADDRESS__)
    small = 1;
#endif
    if (fl && (strcmp(fl, "asan") == 0 || strcmp(fl, "hash4") == 0)) small = 1;
    if (small) { /* asan: about 3x slower per op; hash4: about 6x */
        nseeds = 4;
        ops = 80000;
        inmem_ops = 30000;
    }
#ifdef KVDB_TEST_HASH_BITS
    ops = 50000;
    inmem_ops = 20000;
#endif
    tu_tmpdir("model");
    if (es && *es) {
        uint64_t n = eo && *eo ? strtoull(eo, NULL, 10) : ops;
        m_run_one(strtoull(es, NULL, 10), n, ei && *ei == '1');
    } else {
        uint64_t scale = (uint64_t)tu_scale();
        if (eo && *eo) ops = inmem_ops = strtoull(eo, NULL, 10);
        for (s = 1; s <= nseeds * scale; s++) m_run_one(s, ops, 0);
        for (s = 1; s <= scale; s++) m_run_one(nseeds * scale + s, inmem_ops, 1);
        RUN(test_model_compaction_mix);
    }
    tu_rmrf();
    TEST_MAIN_END();
}
