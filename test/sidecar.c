/*
 * sidecar.c -- the sidecar ("<db>.idx") is derived data: whatever happens
 * to it, the database opens with exactly its committed contents, and a good
 * sidecar is actually used.  Env KVDB_TEST_SCALE=N (make soak): N times as
 * many of its bytes flipped.
 */
#include "../kvdb.c"
#include "testutil.h"

#include <sys/wait.h>

#define NKEYS 3000

/* The model: value version per key id, 0 = absent. */
static uint32_t model[NKEYS];

static size_t mkkey(uint32_t id, uint8_t *k)
{
    /* binary keys of varying length; ids keep them distinct */
    size_t n = 2 + id % 7, i;
    for (i = 0; i < n - 2; i++) k[i] = (uint8_t)((id * 131 + i * 7) & 0xff);
    k[n - 2] = (uint8_t)(id >> 8);
    k[n - 1] = (uint8_t)id;
    return n;
}

static size_t mkval(uint32_t id, uint32_t ver, uint8_t *v)
{
    size_t n = (id * 7 + ver) % 200, i;
    for (i = 0; i < n; i++) v[i] = (uint8_t)(id + ver + i);
    return n;
}

static kvdb *open_at(const char *path, unsigned flags)
{
    kvdb_options o;
    kvdb *db = NULL;
    kvdb_options_init(&o);
    o.flags = flags;
    o.sync = KVDB_SYNC_NORMAL;
    if (kvdb_open(path, &o, &db) != KVDB_OK) return NULL;
    return db;
}

/* Random committed work on the model. */
static int work(kvdb *db, uint64_t *seed, int txns)
{
    uint8_t k[16], v[256];
    int t;
    for (t = 0; t < txns; t++) {
        kvdb_txn *tx;
        uint32_t staged[NKEYS / 10][2];
        int n = 1 + (int)(tu_rand(seed) % 20), i, ns = 0;
        if (kvdb_begin(db, 0, &tx) != KVDB_OK) return -1;
        for (i = 0; i < n; i++) {
            uint32_t id = (uint32_t)(tu_rand(seed) % NKEYS);
            size_t kn = mkkey(id, k);
            if (tu_rand(seed) % 4 == 0) {
                int rc = kvdb_txn_del(tx, k, kn);
                if (rc != KVDB_OK && rc != KVDB_NOTFOUND) return -1;
                staged[ns][0] = id;
                staged[ns++][1] = 0;
            } else {
                uint32_t ver = (uint32_t)(tu_rand(seed) % 1000000) + 1;
                if (kvdb_txn_put(tx, k, kn, v, mkval(id, ver, v)) != KVDB_OK) return -1;
                staged[ns][0] = id;
                staged[ns++][1] = ver;
            }
        }
        if (kvdb_commit(tx) != KVDB_OK) return -1;
        for (i = 0; i < ns; i++) model[staged[i][0]] = staged[i][1];
    }
    return 0;
}

/* Everything in db equals the model: every key by get, and the whole
 * ordered iteration (count and order). */
static int same_as_model(kvdb *db)
{
    uint8_t k[16], v[256], buf[256];
    uint32_t id, live = 0, seen = 0;
    kvdb_txn *t;
    kvdb_iter *it;
    const void *kp, *vp, *prev = NULL;
    size_t kn, vn, pn = 0, got;
    int rc;
    for (id = 0; id < NKEYS; id++) {
        size_t n = mkkey(id, k);
        rc = kvdb_get(db, k, n, buf, sizeof buf, &got);
        if (model[id]) {
            size_t want = mkval(id, model[id], v);
            live++;
            if (rc != KVDB_OK || got != want || memcmp(buf, v, want) != 0) return 1;
        } else if (rc != KVDB_NOTFOUND) {
            return 2;
        }
    }
    if (kvdb_begin(db, KVDB_TXN_RDONLY, &t) != KVDB_OK) return 3;
    if (kvdb_iter_range(t, NULL, 0, NULL, 0, 0, &it) != KVDB_OK) { kvdb_abort(t); return 4; }
    while ((rc = kvdb_iter_next(it, &kp, &kn, &vp, &vn)) == KVDB_OK) {
        if (prev && kv_keycmp((const uint8_t *)prev, pn, (const uint8_t *)kp, kn) >= 0) { kvdb_abort(t); return 5; }
        prev = kp;
        pn = kn;
        seen++;
    }
    kvdb_abort(t);
    if (rc != KVDB_DONE || seen != live) return 6;
    return 0;
}

static long file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static const char *idx_of(const char *db)
{
    static char b[4][700];
    static int i;
    i = (i + 1) & 3;
    snprintf(b[i], sizeof b[i], "%s.idx", db);
    return b[i];
}

/* A database with history (txns transactions), closed cleanly (so it has
 * a sidecar). */
static int build_n(const char *path, uint64_t seed, int txns)
{
    kvdb *db;
    memset(model, 0, sizeof model);
    unlink(path);
    unlink(idx_of(path));
    db = open_at(path, KVDB_CREATE);
    if (!db || work(db, &seed, txns)) return -1;
    return kvdb_close(db);
}
static int build(const char *path, uint64_t seed) { return build_n(path, seed, 400); }

static void test_sidecar_used(void)
{
    const char *p = tu_path("used.db");
    struct kvdb_stat st;
    kvdb *db;
    REQUIRE(build(p, 1) == 0);
    REQUIRE(file_size(idx_of(p)) > 0);
    db = open_at(p, 0);
    REQUIRE(db);
    CHECK_OK(kvdb_stat(db, &st));
    CHECK(st.sidecar_loaded == 1);
    CHECK(st.replayed_bytes == 0);
    CHECK(same_as_model(db) == 0);
    kvdb_close(db);
}

/* Damage of every kind: always the committed contents, never the sidecar. */
static void check_ignored(const char *p, const char *what)
{
    struct kvdb_stat st;
    kvdb *db = open_at(p, 0);
    int r;
    if (!db) { tu_fail(__FILE__, __LINE__, "%s: open failed: %s", what, kvdb_errmsg()); return; }
    kvdb_stat(db, &st);
    if (st.sidecar_loaded) tu_fail(__FILE__, __LINE__, "%s: the sidecar was trusted", what);
    if ((r = same_as_model(db)) != 0) tu_fail(__FILE__, __LINE__, "%s: contents differ (%d)", what, r);
    kvdb_close(db); /* writes a good sidecar again */
}

static void test_sidecar_deleted(void)
{
    const char *p = tu_path("del.db");
    REQUIRE(build(p, 2) == 0);
    unlink(idx_of(p));
    check_ignored(p, "deleted");
    CHECK(file_size(idx_of(p)) > 0); /* rebuilt at close */
}

static void test_sidecar_truncated(void)
{
    const char *p = tu_path("trunc.db"), *save = tu_path("trunc.idx.save");
    long n, cut;
    REQUIRE(build(p, 3) == 0);
    tu_copy_file(idx_of(p), save, -1);
    n = file_size(save);
    REQUIRE(n > 200);
    for (cut = 0; cut < n; cut += n / 13 + 1) {
        char what[64];
        tu_copy_file(save, idx_of(p), cut);
        snprintf(what, sizeof what, "truncated to %ld", cut);
        check_ignored(p, what);
    }
    tu_copy_file(save, idx_of(p), n - 1);
    check_ignored(p, "one byte short");
}

static void test_sidecar_flipped(void)
{
    const char *p = tu_path("flip.db"), *save = tu_path("flip.idx.save");
    long n, at;
    int stride;
    REQUIRE(build(p, 4) == 0);
    tu_copy_file(idx_of(p), save, -1);
    n = file_size(save);
    REQUIRE(n > 200);
    stride = getenv("KVDB_TEST_FLAVOUR") && strcmp(getenv("KVDB_TEST_FLAVOUR"), "plain") ? 301 : 61;
    stride = stride / (int)tu_scale() > 1 ? stride / (int)tu_scale() : 1; /* soak: denser */
    for (at = 0; at < n; at += at < 128 ? 1 : stride) {
        char what[64];
        FILE *f;
        int c;
        tu_copy_file(save, idx_of(p), -1);
        f = fopen(idx_of(p), "r+b");
        REQUIRE(f);
        fseek(f, at, SEEK_SET);
        c = fgetc(f);
        fseek(f, at, SEEK_SET);
        fputc(c ^ 0x10, f);
        fclose(f);
        snprintf(what, sizeof what, "byte %ld flipped", at);
        check_ignored(p, what);
        if (tu_cur_failed) return;
    }
}

static void test_sidecar_foreign(void)
{
    const char *a = tu_path("fa.db"), *b = tu_path("fb.db");
    uint32_t saved[NKEYS];
    REQUIRE(build(b, 50) == 0);
    REQUIRE(build(a, 5) == 0); /* the model now holds a's contents */
    memcpy(saved, model, sizeof saved);
    tu_copy_file(idx_of(b), idx_of(a), -1);
    check_ignored(a, "another database's sidecar");
    memcpy(model, saved, sizeof saved);
}

/* The log cut shorter than the sidecar claims (a lost tail). */
/* A log shorter than its sidecar's position was cut after it had been
 * synced (the sidecar covers only synced log): KVDB_ECORRUPT from every
 * open, at a commit boundary as inside a record, and the file is left as
 * it is.  Without the sidecar the evidence is gone, and the log opens as
 * the older database it then looks like (kvdb.h promise 7, its limit). */
static void test_log_shorter_than_sidecar(void)
{
    const char *p = tu_path("short.db");
    uint32_t before[NKEYS];
    uint64_t seed = 6;
    long cut, full;
    kvdb *db;
    kvdb_options o;
    int k;
    memset(model, 0, sizeof model);
    unlink(p);
    unlink(idx_of(p));
    db = open_at(p, KVDB_CREATE);
    REQUIRE(db);
    REQUIRE(work(db, &seed, 100) == 0);
    {
        struct kvdb_stat st;
        REQUIRE_OK(kvdb_stat(db, &st));
        cut = (long)st.file_bytes; /* a commit boundary (the file may run on: reserved zeros) */
    }
    memcpy(before, model, sizeof before);
    REQUIRE(work(db, &seed, 100) == 0);
    REQUIRE_OK(kvdb_close(db)); /* its sidecar covers all 200 transactions */
    full = file_size(p);
    for (k = 0; k < 3; k++) {
        long L = k == 0 ? full - 7 : k == 1 ? full - 40 : cut; /* inside the seal, before it, a commit end */
        REQUIRE(truncate(p, L) == 0);
        kvdb_options_init(&o);
        o.flags = k == 1 ? KVDB_RDONLY : 0;
        db = NULL;
        CHECK_RC(kvdb_open(p, &o, &db), KVDB_ECORRUPT);
        if (db) kvdb_close(db);
        CHECK(strstr(kvdb_errmsg(), "sidecar") != NULL);
        CHECK(file_size(p) == L);
        CHECK_RC(kvdb_check(p, NULL, NULL), KVDB_ECORRUPT);
    }
    /* no sidecar: the committed prefix at the first cut */
    REQUIRE(truncate(p, cut) == 0);
    unlink(idx_of(p));
    memcpy(model, before, sizeof model);
    check_ignored(p, "log cut at a commit, its sidecar removed");
}

/* A checkpoint cut short by a crash leaves a temporary file: ignored and
 * removed at the next writable open; the old sidecar still works. */
static void test_crashed_checkpoint(void)
{
    const char *p = tu_path("tmp.db");
    char tmp[700];
    FILE *f;
    kvdb *db;
    struct kvdb_stat st;
    REQUIRE(build(p, 8) == 0);
    snprintf(tmp, sizeof tmp, "%s.idx.tmp", p);
    f = fopen(tmp, "wb");
    REQUIRE(f);
    fputs("half a sidecar", f);
    fclose(f);
    db = open_at(p, 0);
    REQUIRE(db);
    kvdb_stat(db, &st);
    CHECK(st.sidecar_loaded == 1);
    CHECK(same_as_model(db) == 0);
    CHECK(access(tmp, F_OK) != 0);
    kvdb_close(db);
}

/* A stale sidecar (commits after the checkpoint, then a crash without
 * close): loaded, and only the tail is replayed. */
static void test_stale_sidecar_replays_tail(void)
{
    const char *p = tu_path("stale.db"), *cp = tu_path("stale-copy.db");
    uint64_t seed = 9;
    struct kvdb_stat st;
    kvdb *db;
    REQUIRE(build(p, 9) == 0);
    db = open_at(p, 0);
    REQUIRE(db);
    REQUIRE(work(db, &seed, 100) == 0);
    REQUIRE_OK(kvdb_checkpoint(db));
    REQUIRE(work(db, &seed, 100) == 0);
    REQUIRE_OK(kvdb_sync(db));
    /* the state a crash would leave: copy both files while open */
    tu_copy_file(p, cp, -1);
    tu_copy_file(idx_of(p), idx_of(cp), -1);
    kvdb_close(db);
    db = open_at(cp, 0);
    REQUIRE(db);
    kvdb_stat(db, &st);
    CHECK(st.sidecar_loaded == 1);
    CHECK(st.replayed_bytes > 0);
    CHECK(same_as_model(db) == 0);
    kvdb_close(db);
}

/* After a load: writes copy mapped leaves, deletes, iterators, snapshots,
 * and the next reopen, all agree with the model. */
static void test_work_after_load(void)
{
    const char *p = tu_path("after.db");
    uint64_t seed = 10;
    int round;
    REQUIRE(build(p, 10) == 0);
    for (round = 0; round < 4; round++) {
        kvdb *db = open_at(p, 0);
        kvdb_txn *snap;
        uint32_t at_snap[NKEYS];
        struct kvdb_stat st;
        REQUIRE(db);
        kvdb_stat(db, &st);
        CHECK(st.sidecar_loaded == 1);
        REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &snap));
        memcpy(at_snap, model, sizeof at_snap);
        REQUIRE(work(db, &seed, 150) == 0);
        CHECK(same_as_model(db) == 0);
        {   /* the snapshot still sees the loaded state */
            uint8_t k[16], v[256];
            uint32_t id;
            for (id = 0; id < NKEYS; id += 7) {
                const void *val;
                size_t vl, kn = mkkey(id, k);
                int rc = kvdb_txn_get(snap, k, kn, &val, &vl);
                if (at_snap[id]) {
                    size_t want = mkval(id, at_snap[id], v);
                    CHECK(rc == KVDB_OK && vl == want && memcmp(val, v, want) == 0);
                } else {
                    CHECK(rc == KVDB_NOTFOUND);
                }
            }
        }
        kvdb_abort(snap);
        REQUIRE_OK(kvdb_close(db));
    }
}

/* A large database reopens through the sidecar (the fast path). */
static void test_reopen_large(void)
{
    const char *p = tu_path("large.db");
    const char *fl = getenv("KVDB_TEST_FLAVOUR");
    uint64_t n = fl && strcmp(fl, "plain") ? 100000 : 1000000, i;
    struct kvdb_stat st;
    uint8_t k[16], v[32], buf[32];
    size_t got;
    kvdb *db;
    kvdb_options o;
    kvdb_options_init(&o);
    o.flags = KVDB_CREATE;
    o.sync = KVDB_SYNC_OFF;
    unlink(p);
    unlink(idx_of(p));
    REQUIRE_OK(kvdb_open(p, &o, &db));
    for (i = 0; i < n; i += 1000) {
        kvdb_txn *t;
        uint64_t j;
        REQUIRE_OK(kvdb_begin(db, 0, &t));
        for (j = i; j < i + 1000 && j < n; j++) {
            kv_st64(k, j * 0x9E3779B97F4A7C15ull);
            kv_st64(k + 8, j);
            kv_st64(v, j);
            REQUIRE_OK(kvdb_txn_put(t, k, 16, v, 8));
        }
        REQUIRE_OK(kvdb_commit(t));
    }
    REQUIRE_OK(kvdb_close(db)); /* SYNC_OFF too: close syncs, the sidecar covers all */
    o.flags = 0;
    REQUIRE_OK(kvdb_open(p, &o, &db));
    kvdb_stat(db, &st);
    CHECK(st.sidecar_loaded == 1);
    CHECK(st.replayed_bytes == 0);
    CHECK(st.keys == n);
    for (i = 0; i < n; i += 997) {
        kv_st64(k, i * 0x9E3779B97F4A7C15ull);
        kv_st64(k + 8, i);
        CHECK(kvdb_get(db, k, 16, buf, sizeof buf, &got) == KVDB_OK && got == 8 && kv_ld64(buf) == i);
    }
    kvdb_close(db);
    unlink(p);
    unlink(idx_of(p));
}

/* A read-only open uses the sidecar and writes nothing. */
static void test_rdonly_uses_sidecar(void)
{
    const char *p = tu_path("ro.db");
    struct kvdb_stat st;
    long before;
    kvdb *db;
    REQUIRE(build(p, 11) == 0);
    before = file_size(idx_of(p));
    db = open_at(p, KVDB_RDONLY);
    REQUIRE(db);
    kvdb_stat(db, &st);
    CHECK(st.sidecar_loaded == 1);
    CHECK(same_as_model(db) == 0);
    CHECK_RC(kvdb_checkpoint(db), KVDB_EREADONLY);
    kvdb_close(db);
    CHECK(file_size(idx_of(p)) == before);
}

/* Rewrite the sidecar's checksums after an edit, so that only the edited
 * field can make it unusable. */
static void sc_reseal(const char *idx)
{
    FILE *f = fopen(idx, "r+b");
    long n;
    uint8_t *b;
    if (!f) return;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    b = (uint8_t *)malloc((size_t)n);
    fseek(f, 0, SEEK_SET);
    if (b && fread(b, 1, (size_t)n, f) == (size_t)n) {
        kv_st64(b + 112, XXH3_64bits_withSeed(b + SC_HDR, (size_t)(n - SC_HDR), kv_ld64(b + 32)));
        kv_st64(b + 120, XXH3_64bits(b, 120));
        fseek(f, 0, SEEK_SET);
        fwrite(b, 1, (size_t)n, f);
    }
    free(b);
    fclose(f);
}

static void sc_poke(const char *idx, long at, const void *p, size_t n)
{
    FILE *f = fopen(idx, "r+b");
    if (!f) return;
    fseek(f, at, SEEK_SET);
    fwrite(p, 1, n, f);
    fclose(f);
}

/* A sidecar of the previous version (1: sorted entries without a run
 * prefix) is ignored, whatever else it holds, and the log replayed. */
static void test_sidecar_old_version(void)
{
    const char *p = tu_path("oldver.db");
    struct kvdb_stat st;
    uint8_t v[4];
    kvdb *db;
    REQUIRE(build(p, 12) == 0);
    kv_st32(v, 1);
    sc_poke(idx_of(p), 8, v, 4);
    sc_reseal(idx_of(p));
    db = open_at(p, 0);
    REQUIRE(db);
    CHECK_OK(kvdb_stat(db, &st));
    CHECK(st.sidecar_loaded == 0 && st.replayed_bytes > 0);
    CHECK(st.sidecar && strcmp(st.sidecar, "of another version") == 0);
    CHECK(same_as_model(db) == 0);
    CHECK_OK(kvdb_close(db)); /* writes the current version */
    db = open_at(p, 0);
    REQUIRE(db);
    CHECK_OK(kvdb_stat(db, &st));
    CHECK(st.sidecar_loaded == 1);
    CHECK(same_as_model(db) == 0);
    kvdb_close(db);
}

/* The run prefix of the base run: stored, loaded, checked.  Keys share a
 * 26-byte prefix, so the base run has cpl 26; keys written after the load
 * have another prefix (iterators merge runs of different prefixes), and
 * the next sidecar stores the common part (cpl 7).  Then a damaged prefix
 * header, resealed so that only it is wrong, is refused. */
#define SCP "tenant/0000000000000042/"
static void sc_lp_key(char *k, size_t cap, int tenant, unsigned i)
{
    if (tenant) snprintf(k, cap, "tenant/1/%06u", i);
    else snprintf(k, cap, SCP "%06u%s", i, i % 3 ? "" : "\xff\xff\xff");
}

static int sc_lp_check(kvdb *db, unsigned n0, unsigned n1)
{
    kvdb_txn *t;
    kvdb_iter *it;
    const void *kp, *vp;
    size_t kn, vn;
    char want[64];
    unsigned i;
    int rc, bad = 0;
    if (kvdb_begin(db, KVDB_TXN_RDONLY, &t) != KVDB_OK) return 1;
    if (kvdb_iter_range(t, NULL, 0, NULL, 0, 0, &it) != KVDB_OK) { kvdb_abort(t); return 2; }
    for (i = 0; i < n0 + n1; i++) { /* SCP... sorts before tenant/1/... */
        sc_lp_key(want, sizeof want, i >= n0, i >= n0 ? i - n0 : i);
        rc = kvdb_iter_next(it, &kp, &kn, &vp, &vn);
        if (rc != KVDB_OK || kn != strlen(want) || memcmp(kp, want, kn) || vn != kn || memcmp(vp, want, vn)) bad = 3;
    }
    if (kvdb_iter_next(it, &kp, &kn, &vp, &vn) != KVDB_DONE) bad = 4;
    for (i = 0; i < n0 + n1 && !bad; i += 7) { /* seeks: to a key, just after it */
        char k[64];
        size_t kl;
        sc_lp_key(k, sizeof k, i >= n0, i >= n0 ? i - n0 : i);
        kl = strlen(k);
        if (kvdb_iter_seek(it, k, kl) != KVDB_OK || kvdb_iter_next(it, &kp, &kn, NULL, NULL) != KVDB_OK) bad = 5;
        if (!bad && (kn != kl || memcmp(kp, k, kl))) bad = 6;
        k[kl] = 0;
        if (!bad && kvdb_iter_seek(it, k, kl + 1) != KVDB_OK) bad = 7;
        rc = kvdb_iter_next(it, &kp, &kn, NULL, NULL);
        if (!bad && (i + 1 < n0 + n1 ? rc != KVDB_OK || (kn == kl && !memcmp(kp, k, kl)) : rc != KVDB_DONE)) bad = 8;
    }
    kvdb_iter_close(it);
    kvdb_abort(t);
    return bad;
}

static void test_sidecar_run_prefix(void)
{
    const char *p = tu_path("prefix.db"), *save = tu_path("prefix.idx.save");
    enum { N0 = 3000, N1 = 1000 };
    struct kvdb_stat st;
    kvdb *db;
    kvdb_txn *t;
    char k[64];
    unsigned i;
    uint8_t b8[8];
    unlink(p);
    unlink(idx_of(p));
    db = open_at(p, KVDB_CREATE);
    REQUIRE(db);
    REQUIRE_OK(kvdb_begin(db, 0, &t));
    for (i = 0; i < N0; i++) {
        sc_lp_key(k, sizeof k, 0, (i * 7919u) % N0);
        REQUIRE_OK(kvdb_txn_put(t, k, strlen(k), k, strlen(k)));
    }
    REQUIRE_OK(kvdb_commit(t));
    REQUIRE_OK(kvdb_close(db));
    db = open_at(p, 0);
    REQUIRE(db);
    CHECK_OK(kvdb_stat(db, &st));
    CHECK(st.sidecar_loaded == 1);
    REQUIRE(db->nruns == 1);
    CHECK(db->runs[0]->cap == 0 && db->runs[0]->cpl == strlen(SCP "00") && db->runs[0]->n == N0);
    CHECK(memcmp(db->runs[0]->pfx, SCP, strlen(SCP)) == 0);
    CHECK(sc_lp_check(db, N0, 0) == 0);
    REQUIRE_OK(kvdb_begin(db, 0, &t)); /* another prefix, in the heap beside the mapped run */
    for (i = 0; i < N1; i++) {
        sc_lp_key(k, sizeof k, 1, (i * 7919u) % N1);
        REQUIRE_OK(kvdb_txn_put(t, k, strlen(k), k, strlen(k)));
    }
    REQUIRE_OK(kvdb_commit(t));
    CHECK(sc_lp_check(db, N0, N1) == 0);
    CHECK(db->nruns == 2 && db->runs[1]->cpl == strlen("tenant/1/000"));
    REQUIRE_OK(kvdb_close(db));
    db = open_at(p, 0);
    REQUIRE(db);
    CHECK_OK(kvdb_stat(db, &st));
    CHECK(st.sidecar_loaded == 1 && st.replayed_bytes == 0);
    REQUIRE(db->nruns == 1);
    CHECK(db->runs[0]->cpl == strlen("tenant/") && db->runs[0]->n == N0 + N1);
    CHECK(sc_lp_check(db, N0, N1) == 0);
    REQUIRE_OK(kvdb_close(db));
    /* a damaged run prefix header, every other byte intact */
    tu_copy_file(idx_of(p), save, -1);
    {
        static const uint64_t bad[] = { 8, 16, 65536, (uint64_t)1 << 40, 0xffffffffffffffffull };
        size_t j;
        for (j = 0; j < sizeof bad / sizeof bad[0] && !tu_cur_failed; j++) {
            tu_copy_file(save, idx_of(p), -1);
            kv_st64(b8, bad[j]);
            sc_poke(idx_of(p), SC_HDR, b8, 8);
            sc_reseal(idx_of(p));
            db = open_at(p, 0);
            REQUIRE(db);
            CHECK_OK(kvdb_stat(db, &st));
            if (st.sidecar_loaded) tu_fail(__FILE__, __LINE__, "cpl %llu: the sidecar was trusted", (unsigned long long)bad[j]);
            CHECK(sc_lp_check(db, N0, N1) == 0);
            REQUIRE_OK(kvdb_close(db));
        }
        tu_copy_file(save, idx_of(p), -1); /* a padding byte after the prefix set */
        sc_poke(idx_of(p), SC_HDR + 8 + (long)strlen("tenant/"), "x", 1);
        sc_reseal(idx_of(p));
        db = open_at(p, KVDB_RDONLY);
        REQUIRE(db);
        CHECK_OK(kvdb_stat(db, &st));
        CHECK(st.sidecar_loaded == 0);
        CHECK(sc_lp_check(db, N0, N1) == 0);
        REQUIRE_OK(kvdb_close(db));
        tu_copy_file(save, idx_of(p), -1); /* and the copy itself is good */
        db = open_at(p, KVDB_RDONLY);
        REQUIRE(db);
        CHECK_OK(kvdb_stat(db, &st));
        CHECK(st.sidecar_loaded == 1);
        REQUIRE_OK(kvdb_close(db));
    }
    unlink(p);
    unlink(idx_of(p));
    unlink(save);
}

/* Every field open checks, changed alone and resealed (so that only it is
 * wrong): the sidecar is ignored for the reason kvdb_stat names, and the
 * database opens with its committed contents. */
static uint8_t *sc_slurp(const char *path, long *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *b = NULL;
    *n = file_size(path);
    if (f && *n > 0 && (b = (uint8_t *)malloc((size_t)*n + 64)) != NULL && fread(b, 1, (size_t)*n, f) != (size_t)*n) {
        free(b);
        b = NULL;
    }
    if (f) fclose(f);
    return b;
}

static void test_sidecar_hostile_fields(void)
{
    const char *p = tu_path("hostile.db"), *save = tu_path("hostile.idx.save");
    static const char *const why[] = {
        "foreign or damaged", "foreign or damaged", "foreign or damaged", "covers more log than there is",
        "damaged", "damaged", "damaged", "does not match the log", "does not match the log",
        "does not match the log", "does not match the log", "does not match the log", "does not match the log",
        "does not match the log", "damaged index", "damaged index", "damaged index", "damaged index",
        "damaged index", "damaged index", "damaged index", "damaged index", "damaged index", "damaged index",
        "damaged index", "damaged index", "damaged index", "damaged index", "damaged index", "damaged index",
        "damaged index", "does not match the log", "does not match the log", "does not match the log",
        "does not match the log", "damaged index"
    };
    const int ncase = (int)(sizeof why / sizeof why[0]);
    uint8_t *orig, *b;
    long n;
    int c;
    REQUIRE(build_n(p, 13, 40) == 0);
    tu_copy_file(idx_of(p), save, -1);
    orig = sc_slurp(save, &n);
    REQUIRE(orig && n > SC_HDR);
    b = (uint8_t *)malloc((size_t)n + 64);
    REQUIRE(b);
    for (c = 0; c < ncase && !tu_cur_failed; c++) {
        uint64_t P = kv_ld64(orig + 48), nent = kv_ld64(orig + 64), eoff = kv_ld64(orig + 72);
        uint64_t loff = kv_ld64(orig + 88), last = loff - sizeof(srt_ent);
        uint8_t *d = b + loff, *l = b + loff + 16; /* the first leaf: descriptor, image */
        long len = n;
        struct kvdb_stat st;
        kvdb *db;
        FILE *f;
        int r;
        memcpy(b, orig, (size_t)n);
        REQUIRE(nent > 1 && kv_ld32(d + 12) + 1 < kv_ld32(d + 8));
        switch (c) {
        case 0: b[16] ^= 1; break;                               /* database id */
        case 1: b[32] ^= 1; break;                               /* hash seed */
        case 2: b[40] ^= 1; break;                               /* log header checksum */
        case 3: kv_st64(b + 48, 10); break;                      /* P inside the log header */
        case 4: kv_st64(b + 72, eoff + 16); break;               /* entries' offset */
        case 5: kv_st64(b + 64, (uint64_t)1 << 40); break;       /* entry count */
        case 6: kv_st64(b + 88, loff + 16); break;               /* leaves' offset */
        case 7: kv_st64(b + 48, P - 1); break;                   /* P not at the end of a COMMIT */
        case 8: kv_st64(b + 56, kv_ld64(b + 56) + 1); break;     /* its sequence number */
        case 9: kv_st64(b + 48, LG_HDR); break;                  /* an empty log, yet entries */
        case 10: kv_st64(b + eoff + 8, kv_ld64(b + eoff + 8) | SRT_DEL); break; /* first entry: a tombstone */
        case 11: kv_st64(b + eoff + 8, (kv_ld64(b + eoff + 8) & ~SRT_OFF) | (P - 8)); break; /* past P */
        case 12: b[eoff] ^= 1; break;                            /* first entry's key bytes */
        case 13: b[last] ^= 1; break;                            /* last entry's key bytes */
        case 14: d[0] = HIX_LEVELS; break;                       /* parent level */
        case 15: d[1] = 7; break;                                /* local depth */
        case 16: kv_st32(d + 8, 4); break;                       /* capacity below the minimum */
        case 17: kv_st32(d + 8, kv_ld32(d + 8) + 4); break;      /* ...not a multiple of 8 */
        case 18: kv_st32(d + 8, 1u << 25); break;                /* ...too big */
        case 19: kv_st32(d + 8, 1u << 24); break;                /* ...beyond the file */
        case 20: l[0] = 1; break;                                /* image: gen */
        case 21: l[27] = 0; break;                               /* image: adj */
        case 22: kv_st32(l + 16, kv_ld32(l + 16) + 1); break;    /* image: count differs */
        case 23: l[25] ^= 1; break;                              /* image: local depth differs */
        case 24: l[26] ^= 1; break;                              /* image: pointer code */
        case 25: /* both counts say the leaf is full */
            kv_st32(d + 12, kv_ld32(d + 8));
            kv_st32(l + 16, kv_ld32(d + 8));
            break;
        case 26: /* both counts one more than the slots hold */
            kv_st32(d + 12, kv_ld32(d + 12) + 1);
            kv_st32(l + 16, kv_ld32(l + 16) + 1);
            break;
        case 27: d[4] ^= 1; break;                               /* path: a slot taken twice */
        case 28: memset(b + n, 0, 16); len = n + 16; break;      /* bytes after the last leaf */
        case 29: { /* the last leaf left out: the index has a hole */
            uint64_t pos = loff, i, nl = kv_ld64(b + 80);
            for (i = 0; i + 1 < nl; i++) pos += 16 + sizeof(hix_node) + (uint64_t)kv_ld32(b + pos + 8) * HIX_SLOT;
            len = (long)pos;
            kv_st64(b + 80, nl - 1);
            break;
        }
        case 30: kv_st64(b + 80, kv_ld64(b + 80) + 1); break;    /* one leaf too many */
        case 31: kv_st64(b + eoff + 8, kv_ld64(b + eoff + 8) & ~SRT_OFF); break; /* first entry at offset 0 */
        case 32: kv_st64(b + eoff + 8, (kv_ld64(b + eoff + 8) & ~SRT_OFF) | (P + 100)); break; /* beyond P */
        case 33: /* at the COMMIT that ends at P */
            kv_st64(b + eoff + 8, (kv_ld64(b + eoff + 8) & ~SRT_OFF) | (P - LG_REC - LG_COMMIT_LEN));
            break;
        case 34: kv_st64(b + eoff + 8, kv_ld64(b + eoff + 8) ^ ((uint64_t)1 << SRT_LSH)); break; /* key length class */
        case 35: kv_st32(l + 20, kv_ld32(l + 20) + 8); break;    /* image: capacity differs */
        }
        kv_st64(b + 112, XXH3_64bits_withSeed(b + SC_HDR, (size_t)(len - SC_HDR), kv_ld64(b + 32)));
        kv_st64(b + 120, XXH3_64bits(b, 120));
        f = fopen(idx_of(p), "wb");
        REQUIRE(f);
        CHECK(fwrite(b, 1, (size_t)len, f) == (size_t)len);
        fclose(f);
        db = open_at(p, KVDB_RDONLY);
        if (!db) { tu_fail(__FILE__, __LINE__, "case %d: open failed: %s", c, kvdb_errmsg()); break; }
        CHECK_OK(kvdb_stat(db, &st));
        if (st.sidecar_loaded || !st.sidecar || strcmp(st.sidecar, why[c]) != 0)
            tu_fail(__FILE__, __LINE__, "case %d: sidecar %s (loaded %u), want ignored as %s", c,
                    st.sidecar ? st.sidecar : "(null)", st.sidecar_loaded, why[c]);
        if ((r = same_as_model(db)) != 0) tu_fail(__FILE__, __LINE__, "case %d: contents differ (%d)", c, r);
        kvdb_close(db);
    }
    tu_copy_file(save, idx_of(p), -1); /* the unchanged copy loads */
    {
        kvdb *db = open_at(p, KVDB_RDONLY);
        struct kvdb_stat st;
        REQUIRE(db);
        CHECK_OK(kvdb_stat(db, &st));
        CHECK(st.sidecar_loaded == 1);
        kvdb_close(db);
    }
    free(b);
    free(orig);
}

/* A file layer without map (map and unmap NULL): the sidecar is read into
 * the heap and used, records are read through the layer, and check
 * compares the indexes with values it reads itself. */
static void test_sidecar_without_map(void)
{
    const char *p = tu_path("nomap.db");
    kvdb_vfs vfs = *kvdb_vfs_posix();
    kvdb_options o;
    kvdb_check_opts co;
    kvdb_check_stat cs;
    struct kvdb_stat st;
    uint64_t seed = 14;
    kvdb *db;
    int round;
    vfs.map = NULL;
    vfs.unmap = NULL;
    REQUIRE(build_n(p, 14, 100) == 0);
    kvdb_options_init(&o);
    o.sync = KVDB_SYNC_NORMAL;
    o.vfs = &vfs;
    for (round = 0; round < 2; round++) {
        REQUIRE_OK(kvdb_open(p, &o, &db));
        CHECK_OK(kvdb_stat(db, &st));
        CHECK(st.sidecar_loaded == 1 && db->sc_heap == 1);
        CHECK(same_as_model(db) == 0);
        CHECK(work(db, &seed, 50) == 0);   /* writes copy leaves out of the heap image */
        CHECK(same_as_model(db) == 0);
        CHECK_OK(kvdb_close(db));
    }
    memset(&co, 0, sizeof co);
    co.vfs = &vfs;
    CHECK_OK(kvdb_check(p, &co, &cs));
    CHECK(cs.problems == 0 && cs.index_checked == 1);
}

int main(void)
{
    tu_tmpdir("sidecar");
    RUN(test_sidecar_used);
    RUN(test_sidecar_deleted);
    RUN(test_sidecar_truncated);
    RUN(test_sidecar_flipped);
    RUN(test_sidecar_foreign);
    RUN(test_log_shorter_than_sidecar);
    RUN(test_crashed_checkpoint);
    RUN(test_stale_sidecar_replays_tail);
    RUN(test_work_after_load);
    RUN(test_reopen_large);
    RUN(test_rdonly_uses_sidecar);
    RUN(test_sidecar_old_version);
    RUN(test_sidecar_run_prefix);
    RUN(test_sidecar_hostile_fields);
    RUN(test_sidecar_without_map);
    tu_rmrf();
    TEST_MAIN_END();
}
