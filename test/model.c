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
 * Every seed is deterministic.  On a mismatch the seed, the op number and
 * the key (hex) are printed.  To rerun one seed:
 *     KVDB_MODEL_SEED=N [KVDB_MODEL_OPS=n] [KVDB_MODEL_INMEM=1] build/plain/model
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

struct m_snap {
    kvdb_txn *t;
    m_val *m;              /* copy of the model when the snapshot began */
    uint64_t begin_op, end_op;
    /* one value pointer taken when the snapshot began: must stay valid
     * and unchanged until the snapshot ends, whatever is committed */
    const void *pin;
    size_t pin_id;
    m_val pin_val;
};

static struct {
    uint64_t seed;
    int inmem;
    uint64_t op;          /* operation counter */
    int bad;              /* a mismatch was reported: stop this seed */
    uint64_t rs;          /* the op stream's random state */
    size_t nkeys;
    unsigned char **key;
    size_t *klen;
    m_val *m;
    uint64_t count;       /* present keys in the model */
    kvdb *db;
    char path[600];
    int sync;
    uint64_t reopen_at;
    struct m_snap snaps[M_MAX_SNAPS];
    int nsnap;
    unsigned char *vbuf;  /* values to write / expected values */
    unsigned char *gbuf;  /* values read back */
    uint64_t reopens, txns, commits, aborts, snaps_taken;
} MG;

static uint64_t m_rnd(void) { return tu_rand(&MG.rs); }
static uint64_t m_below(uint64_t n) { return n ? m_rnd() % n : 0; }

/* ------------------------------------------------------------------ */
/* keys and values                                                    */

/* Key classes (unique by construction):
 *   - ids < 256 with id % 4 == 1: the single byte (id)            length 1
 *   - id % 53 == 7: 0xFF, id (4 bytes LE), filler                 100..4000
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
    if (!MG.inmem) {
        struct stat fs;
        if (stat(MG.path, &fs) != 0) { MFAIL(what, -1, rc, "stat(2) failed"); return; }
        if ((uint64_t)fs.st_size != st.file_bytes)
            MFAIL(what, -1, rc, "stat.file_bytes %llu, file size %lld",
                  (unsigned long long)st.file_bytes, (long long)fs.st_size);
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
/* snapshots                                                          */

static void m_check_pin(struct m_snap *s, const char *what)
{
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
    m_check_pin(s, "snapshot end");
    if (full && !MG.bad) {
        size_t id;
        for (id = 0; id < MG.nkeys && !MG.bad; id++) m_check_tget(s->t, id, &s->m[id], "snapshot final");
    }
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

static void m_op_txn(void)
{
    struct m_ov ovs[M_MAX_TXN_OPS];
    int nov = 0, n, i, rc;
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
        } else if (MG.nsnap) {
            m_snap_verify(&MG.snaps[m_below((uint64_t)MG.nsnap)], 4, "snapshot get during write txn");
        }
    }
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
        if (m_open(0) != 0) return;
        memset(&st, 0, sizeof st);
        rc = kvdb_stat(MG.db, &st);
        if (rc != KVDB_OK || st.torn_bytes != 0)
            MFAIL("reopen after clean close", -1, rc, "torn_bytes %llu", (unsigned long long)st.torn_bytes);
    } else {
        MG.reopen_at = MG.op + 5000 + m_below(20000);
    }
    m_verify_all("verify after reopen");
}

/* ------------------------------------------------------------------ */

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
    MG.nkeys = nkeys_choice[seed % 4];
    MG.key = calloc(MG.nkeys, sizeof *MG.key);
    MG.klen = calloc(MG.nkeys, sizeof *MG.klen);
    MG.m = calloc(MG.nkeys, sizeof *MG.m);
    MG.vbuf = malloc(M_MAX_VLEN);
    MG.gbuf = malloc(M_MAX_VLEN);
    if (!MG.key || !MG.klen || !MG.m || !MG.vbuf || !MG.gbuf) { perror("malloc"); exit(2); }
    for (id = 0; id < MG.nkeys; id++) m_make_key(id, &MG.key[id], &MG.klen[id]);
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
            else m_op_get();
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
               "%llu aborts), %llu snapshots\n",
               (unsigned long long)seed, (unsigned long long)MG.op, MG.nkeys, (unsigned long long)MG.count,
               (unsigned long long)MG.reopens, (unsigned long long)MG.txns, (unsigned long long)MG.commits,
               (unsigned long long)MG.aborts, (unsigned long long)MG.snaps_taken);
    unlink(MG.path);
    for (id = 0; id < MG.nkeys; id++) free(MG.key[id]);
    free(MG.key);
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
        if (eo && *eo) ops = inmem_ops = strtoull(eo, NULL, 10);
        for (s = 1; s <= nseeds; s++) m_run_one(s, ops, 0);
        m_run_one(nseeds + 1, inmem_ops, 1);
    }
    tu_rmrf();
    TEST_MAIN_END();
}
