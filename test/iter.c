/*
 * test/iter.c -- ordered iterators, case by case: kvdb_iter_range,
 * kvdb_iter_prefix, kvdb_iter_next, kvdb_iter_seek, kvdb_iter_close.
 *
 * Most tests compare a walk with an expected string "key=value key=value"
 * (bytes outside printable ASCII as \xHH).  A layout (L_ONE_COMMIT,
 * L_COMMIT_EACH, L_WRITE_TXN) loads the same keys as one commit (one
 * sorted run), as one commit per key with an iterator after each (many
 * runs: ties across runs), or as uncommitted writes of the iterating write
 * transaction (the transaction's own source).  Some tests also run on a
 * file layer without map (records read with pread).  The randomized cover
 * is in model.c; this file pins down the corners.
 */
#include "../kvdb.c"
#include "testutil.h"

#define K(s) (s), (sizeof(s) - 1)

/* ------------------------------------------------------------------ */
/* helpers                                                            */

static int t_seq;

/* a fresh database: a file in the scratch directory (mode 0), in memory
 * (1), or a file through a file layer without map (2: records are read
 * with pread and copied into the transaction) */
static kvdb_vfs t_nomap;
static kvdb *t_open(int inmem)
{
    kvdb_options o;
    kvdb *db = NULL;
    char name[64];
    int rc;
    kvdb_options_init(&o);
    o.sync = KVDB_SYNC_OFF;
    if (inmem == 2) {
        t_nomap = *kvdb_vfs_posix();
        t_nomap.map = NULL;
        t_nomap.unmap = NULL;
        o.vfs = &t_nomap;
        inmem = 0;
    }
    if (inmem) {
        o.flags = KVDB_INMEMORY;
        rc = kvdb_open(NULL, &o, &db);
    } else {
        o.flags = KVDB_CREATE;
        snprintf(name, sizeof name, "iter-%d.db", ++t_seq);
        rc = kvdb_open(tu_path(name), &o, &db);
    }
    if (rc != KVDB_OK) {
        tu_fail(__FILE__, __LINE__, "kvdb_open: %s [%s]", kvdb_strerror(rc), kvdb_errmsg());
        return NULL;
    }
    return db;
}

/* append bytes to a string, escaped */
static void t_esc(char *out, size_t cap, const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    size_t o = strlen(out), i;
    for (i = 0; i < n && o + 8 < cap; i++) {
        if (b[i] >= 0x21 && b[i] < 0x7f && b[i] != '\\' && b[i] != '=')
            out[o++] = (char)b[i];
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", b[i]);
    }
    if (i < n && o + 4 < cap) { memcpy(out + o, "...", 3); o += 3; }
    out[o] = 0;
}

static void t_cat(char *out, size_t cap, const char *s)
{
    size_t o = strlen(out), n = strlen(s);
    if (o + n + 1 > cap) n = cap - o - 1;
    memcpy(out + o, s, n);
    out[o + n] = 0;
}

/* up to max pairs (0: to the end) appended to out as "k=v k=v"; returns
 * the last code of kvdb_iter_next (KVDB_DONE at the end) */
static int t_walk(kvdb_iter *it, char *out, size_t cap, int max)
{
    int n = 0, rc = KVDB_DONE;
    while (max == 0 || n < max) {
        const void *k = NULL, *v = NULL;
        size_t kl = 0, vl = 0;
        rc = kvdb_iter_next(it, &k, &kl, &v, &vl);
        if (rc != KVDB_OK) break;
        if (out[0]) t_cat(out, cap, " ");
        t_esc(out, cap, k, kl);
        t_cat(out, cap, "=");
        t_esc(out, cap, v, vl);
        n++;
    }
    return rc;
}

static char t_got[1 << 16];

/* open a range iterator, walk it to the end, compare */
static void t_expect_range(int line, kvdb_txn *t, const void *lo, size_t lolen, const void *hi, size_t hilen,
                           unsigned flags, const char *want)
{
    kvdb_iter *it = NULL;
    int rc = kvdb_iter_range(t, lo, lolen, hi, hilen, flags, &it);
    if (rc != KVDB_OK) {
        tu_fail(__FILE__, line, "kvdb_iter_range: %s [%s]", kvdb_strerror(rc), kvdb_errmsg());
        return;
    }
    t_got[0] = 0;
    rc = t_walk(it, t_got, sizeof t_got, 0);
    if (rc != KVDB_DONE) tu_fail(__FILE__, line, "walk ended with %s [%s]", kvdb_strerror(rc), kvdb_errmsg());
    else if (strcmp(t_got, want) != 0) tu_fail(__FILE__, line, "range%s: got \"%s\", want \"%s\"",
                                                flags & KVDB_ITER_REVERSE ? " reverse" : "", t_got, want);
    /* and DONE again after the end */
    rc = kvdb_iter_next(it, NULL, NULL, NULL, NULL);
    if (rc != KVDB_DONE) tu_fail(__FILE__, line, "next after the end = %s", kvdb_strerror(rc));
    kvdb_iter_close(it);
}

static void t_expect_prefix(int line, kvdb_txn *t, const void *p, size_t plen, unsigned flags, const char *want)
{
    kvdb_iter *it = NULL;
    int rc = kvdb_iter_prefix(t, p, plen, flags, &it);
    if (rc != KVDB_OK) {
        tu_fail(__FILE__, line, "kvdb_iter_prefix: %s [%s]", kvdb_strerror(rc), kvdb_errmsg());
        return;
    }
    t_got[0] = 0;
    rc = t_walk(it, t_got, sizeof t_got, 0);
    if (rc != KVDB_DONE) tu_fail(__FILE__, line, "walk ended with %s [%s]", kvdb_strerror(rc), kvdb_errmsg());
    else if (strcmp(t_got, want) != 0) tu_fail(__FILE__, line, "prefix%s: got \"%s\", want \"%s\"",
                                                flags & KVDB_ITER_REVERSE ? " reverse" : "", t_got, want);
    kvdb_iter_close(it);
}

/* seek, then walk up to max pairs (0: to the end) and compare */
static void t_expect_seek(int line, kvdb_iter *it, const void *key, size_t klen, int max, const char *want)
{
    int rc = kvdb_iter_seek(it, key, klen);
    if (rc != KVDB_OK) {
        tu_fail(__FILE__, line, "kvdb_iter_seek: %s [%s]", kvdb_strerror(rc), kvdb_errmsg());
        return;
    }
    t_got[0] = 0;
    rc = t_walk(it, t_got, sizeof t_got, max);
    if (rc != KVDB_OK && rc != KVDB_DONE) tu_fail(__FILE__, line, "walk: %s [%s]", kvdb_strerror(rc), kvdb_errmsg());
    else if (strcmp(t_got, want) != 0) tu_fail(__FILE__, line, "after seek: got \"%s\", want \"%s\"", t_got, want);
}

/* walk up to max pairs of an open iterator and compare */
static void t_expect_walk(int line, kvdb_iter *it, int max, const char *want)
{
    int rc;
    t_got[0] = 0;
    rc = t_walk(it, t_got, sizeof t_got, max);
    if (rc != KVDB_OK && rc != KVDB_DONE) tu_fail(__FILE__, line, "walk: %s [%s]", kvdb_strerror(rc), kvdb_errmsg());
    else if (strcmp(t_got, want) != 0) tu_fail(__FILE__, line, "walk: got \"%s\", want \"%s\"", t_got, want);
}

/* variadic so that K("...") can stand for (pointer, length) */
#define EXPECT_RANGE(t, ...) t_expect_range(__LINE__, t, __VA_ARGS__)  /* lo, lolen, hi, hilen, flags, want */
#define EXPECT_ALL(t, fl, want) t_expect_range(__LINE__, t, NULL, 0, NULL, 0, fl, want)
#define EXPECT_PREFIX(t, ...) t_expect_prefix(__LINE__, t, __VA_ARGS__) /* p, plen, flags, want */
#define EXPECT_SEEK(it, ...) t_expect_seek(__LINE__, it, __VA_ARGS__)  /* key, klen, max, want */
#define EXPECT_WALK(it, max, want) t_expect_walk(__LINE__, it, max, want)
#define REV KVDB_ITER_REVERSE

/* one step of a throw-away iterator: makes the engine sort what is new */
static void t_touch(kvdb *db)
{
    kvdb_txn *t = NULL;
    kvdb_iter *it = NULL;
    if (kvdb_begin(db, KVDB_TXN_RDONLY, &t) != KVDB_OK) { tu_fail(__FILE__, __LINE__, "begin"); return; }
    if (kvdb_iter_range(t, NULL, 0, NULL, 0, 0, &it) == KVDB_OK)
        (void)kvdb_iter_next(it, NULL, NULL, NULL, NULL);
    else
        tu_fail(__FILE__, __LINE__, "kvdb_iter_range [%s]", kvdb_errmsg());
    kvdb_abort(t);
}

/* key/value pairs to load */
typedef struct { const char *k; size_t kl; const char *v; size_t vl; } t_kv;
#define KV(k, v) { (k), sizeof(k) - 1, (v), sizeof(v) - 1 }

enum { L_ONE_COMMIT, L_COMMIT_EACH, L_WRITE_TXN, L_N };
static const char *const t_layout_name[L_N] = { "one commit", "a commit per key", "write txn" };

/* Load pairs in layout lay; returns the transaction to iterate in (a read
 * txn, or the write txn holding the pairs).  End it with kvdb_abort. */
static kvdb_txn *t_load(kvdb *db, const t_kv *kv, size_t n, int lay)
{
    kvdb_txn *t = NULL;
    size_t i;
    int rc;
    if (lay == L_ONE_COMMIT) {
        if (kvdb_begin(db, 0, &t) != KVDB_OK) return NULL;
        for (i = 0; i < n; i++) CHECK_OK(kvdb_txn_put(t, kv[i].k, kv[i].kl, kv[i].v, kv[i].vl));
        CHECK_OK(kvdb_commit(t));
    } else if (lay == L_COMMIT_EACH) {
        for (i = 0; i < n; i++) {
            CHECK_OK(kvdb_put(db, kv[i].k, kv[i].kl, kv[i].v, kv[i].vl));
            t_touch(db);
        }
    } else {
        if (kvdb_begin(db, 0, &t) != KVDB_OK) return NULL;
        for (i = 0; i < n; i++) CHECK_OK(kvdb_txn_put(t, kv[i].k, kv[i].kl, kv[i].v, kv[i].vl));
        return t;
    }
    rc = kvdb_begin(db, KVDB_TXN_RDONLY, &t);
    if (rc != KVDB_OK) return NULL;
    return t;
}

/* ------------------------------------------------------------------ */
/* tests                                                              */

static void iter_empty_db(void)
{
    int inmem;
    for (inmem = 0; inmem < 3; inmem++) {
        kvdb *db = t_open(inmem);
        kvdb_txn *t = NULL;
        kvdb_iter *it = NULL;
        int w;
        REQUIRE(db);
        for (w = 0; w < 2; w++) { /* a read txn, then a write txn */
            REQUIRE_OK(kvdb_begin(db, w ? 0 : KVDB_TXN_RDONLY, &t));
            EXPECT_ALL(t, 0, "");
            EXPECT_ALL(t, REV, "");
            EXPECT_RANGE(t, K("a"), K("z"), 0, "");
            EXPECT_RANGE(t, K("a"), K("z"), REV, "");
            EXPECT_PREFIX(t, "", 0, 0, "");
            EXPECT_PREFIX(t, NULL, 0, REV, "");
            EXPECT_PREFIX(t, K("\xff"), 0, "");
            REQUIRE_OK(kvdb_iter_prefix(t, K("a"), REV, &it));
            EXPECT_SEEK(it, K("a"), 0, "");
            EXPECT_SEEK(it, K("zzz"), 0, "");
            CHECK_RC(kvdb_iter_next(it, NULL, NULL, NULL, NULL), KVDB_DONE);
            kvdb_iter_close(it);
            if (w) { /* own writes that cancel out: a put then its delete */
                CHECK_OK(kvdb_txn_put(t, K("a"), K("1")));
                CHECK_OK(kvdb_txn_del(t, K("a")));
                EXPECT_ALL(t, 0, "");
                EXPECT_ALL(t, REV, "");
                EXPECT_PREFIX(t, K("a"), 0, "");
            }
            kvdb_abort(t);
        }
        CHECK_OK(kvdb_close(db));
    }
}

static void iter_single_key(void)
{
    int lay;
    for (lay = 0; lay < L_N; lay++) {
        static const t_kv kv[] = { KV("m", "1") };
        kvdb *db = t_open(lay == 1);
        kvdb_txn *t;
        kvdb_iter *it = NULL;
        REQUIRE(db);
        t = t_load(db, kv, 1, lay);
        REQUIRE(t);
        EXPECT_ALL(t, 0, "m=1");
        EXPECT_ALL(t, REV, "m=1");
        EXPECT_RANGE(t, K("m"), K("m"), 0, "");
        EXPECT_RANGE(t, K("m"), K("m"), REV, "");
        EXPECT_RANGE(t, K("m"), K("m\0"), 0, "m=1");
        EXPECT_RANGE(t, K("m"), K("m\0"), REV, "m=1");
        EXPECT_RANGE(t, K("a"), K("m"), 0, "");
        EXPECT_RANGE(t, K("a"), K("m"), REV, "");
        EXPECT_RANGE(t, NULL, 0, K("m"), REV, "");
        EXPECT_RANGE(t, K("m"), NULL, 0, REV, "m=1");
        EXPECT_RANGE(t, K("l\xff\xff"), NULL, 0, 0, "m=1");
        EXPECT_RANGE(t, K(""), NULL, 0, 0, "m=1");     /* empty lo: everything */
        EXPECT_RANGE(t, NULL, 0, K(""), 0, "");        /* empty hi: nothing */
        EXPECT_PREFIX(t, K("m"), 0, "m=1");
        EXPECT_PREFIX(t, K("m"), REV, "m=1");
        EXPECT_PREFIX(t, K("mm"), 0, "");
        EXPECT_PREFIX(t, K("m\0"), REV, "");
        EXPECT_PREFIX(t, K("l"), 0, "");
        EXPECT_PREFIX(t, "", 0, REV, "m=1");
        REQUIRE_OK(kvdb_iter_range(t, NULL, 0, NULL, 0, 0, &it));
        EXPECT_SEEK(it, K("a"), 0, "m=1");
        EXPECT_SEEK(it, K("m"), 0, "m=1");
        EXPECT_SEEK(it, K("m\0"), 0, "");
        EXPECT_SEEK(it, NULL, 0, 0, "m=1");
        kvdb_iter_close(it);
        REQUIRE_OK(kvdb_iter_range(t, NULL, 0, NULL, 0, REV, &it));
        EXPECT_SEEK(it, K("z"), 0, "m=1");
        EXPECT_SEEK(it, K("m"), 0, "m=1");
        EXPECT_SEEK(it, K("m\0"), 0, "m=1");
        EXPECT_SEEK(it, K("l\xff"), 0, "");
        EXPECT_SEEK(it, NULL, 0, 0, "");               /* nothing is <= the empty key */
        kvdb_iter_close(it);
        if (tu_cur_failed) printf("# layout: %s\n", t_layout_name[lay]);
        kvdb_abort(t);
        CHECK_OK(kvdb_close(db));
        if (tu_cur_failed) return;
    }
}

/* keys that are prefixes of each other: equal 8-byte prefixes in the index */
static void iter_prefix_chain(void)
{
    static const t_kv kv[] = { KV("ab", "5"), KV("a\0\0", "3"), KV("b", "7"), KV("a", "1"),
                               KV("\0", "0"), KV("a\x01", "4"), KV("a\0", "2"),
                               KV("a\0\0\0\0\0\0\0\0", "9"), KV("a\0\0\0\0\0\0\0", "8") };
    int lay;
    for (lay = 0; lay < L_N; lay++) {
        kvdb *db = t_open(lay == 0);
        kvdb_txn *t;
        kvdb_iter *it = NULL;
        REQUIRE(db);
        t = t_load(db, kv, sizeof kv / sizeof kv[0], lay);
        REQUIRE(t);
        EXPECT_ALL(t, 0, "\\x00=0 a=1 a\\x00=2 a\\x00\\x00=3 a\\x00\\x00\\x00\\x00\\x00\\x00\\x00=8 "
                         "a\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00=9 a\\x01=4 ab=5 b=7");
        EXPECT_ALL(t, REV, "b=7 ab=5 a\\x01=4 a\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00=9 "
                           "a\\x00\\x00\\x00\\x00\\x00\\x00\\x00=8 a\\x00\\x00=3 a\\x00=2 a=1 \\x00=0");
        EXPECT_PREFIX(t, K("a"), 0, "a=1 a\\x00=2 a\\x00\\x00=3 a\\x00\\x00\\x00\\x00\\x00\\x00\\x00=8 "
                                    "a\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00=9 a\\x01=4 ab=5");
        EXPECT_PREFIX(t, K("a\0"), 0, "a\\x00=2 a\\x00\\x00=3 a\\x00\\x00\\x00\\x00\\x00\\x00\\x00=8 "
                                      "a\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00=9");
        EXPECT_PREFIX(t, K("a\0\0\0"), REV, "a\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00=9 "
                                            "a\\x00\\x00\\x00\\x00\\x00\\x00\\x00=8");
        EXPECT_PREFIX(t, K("a\0\0\0\0\0\0\0\0"), 0, "a\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00=9");
        EXPECT_PREFIX(t, K("a\0\0\0\0\0\0\0\0\0"), 0, "");
        EXPECT_PREFIX(t, K("\0"), 0, "\\x00=0");
        EXPECT_PREFIX(t, K("\0\0"), 0, "");
        EXPECT_RANGE(t, K("a\0"), K("ab"), 0, "a\\x00=2 a\\x00\\x00=3 a\\x00\\x00\\x00\\x00\\x00\\x00\\x00=8 "
                                             "a\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00=9 a\\x01=4");
        EXPECT_RANGE(t, K("a\0\0\0"), K("a\0\0\0\0\0\0\0\0"), REV, "a\\x00\\x00\\x00\\x00\\x00\\x00\\x00=8");
        EXPECT_RANGE(t, K("a"), K("a\0"), 0, "a=1");
        EXPECT_RANGE(t, K("a"), K("a\0"), REV, "a=1");
        /* seeks inside prefix "a" */
        REQUIRE_OK(kvdb_iter_prefix(t, K("a"), 0, &it));
        EXPECT_SEEK(it, K("a\0"), 2, "a\\x00=2 a\\x00\\x00=3");
        EXPECT_SEEK(it, K("a\0\0\0"), 2, "a\\x00\\x00\\x00\\x00\\x00\\x00\\x00=8 a\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00=9");
        EXPECT_SEEK(it, K("a\0\0\0\0\0\0\0\0\0"), 1, "a\\x01=4");
        EXPECT_SEEK(it, "", 0, 1, "a=1");               /* clamped to the prefix */
        EXPECT_SEEK(it, K("a\xff"), 0, "");
        kvdb_iter_close(it);
        REQUIRE_OK(kvdb_iter_prefix(t, K("a"), REV, &it));
        EXPECT_SEEK(it, K("a\0\0\0"), 0, "a\\x00\\x00=3 a\\x00=2 a=1");
        EXPECT_SEEK(it, K("a"), 0, "a=1");
        EXPECT_SEEK(it, K("\0\0"), 0, "");
        EXPECT_SEEK(it, K("zz"), 1, "ab=5");             /* clamped to the prefix */
        kvdb_iter_close(it);
        if (tu_cur_failed) printf("# layout: %s\n", t_layout_name[lay]);
        kvdb_abort(t);
        CHECK_OK(kvdb_close(db));
        if (tu_cur_failed) return;
    }
}

/* prefixes of 0xff (no upper bound) and ending in 0xff ("a\xff" -> "b") */
static void iter_prefix_ff(void)
{
    static char ff300[301];
    t_kv kv[] = { KV("\xff", "1"), KV("\xff\xff", "3"), KV("\xff\xff\x00", "4"), KV("\xff\xfe", "2"),
                  KV("\xfe\xff", "0"), KV("a\xfe", "b"), KV("a\xff", "c"), KV("a\xff\xff", "e"),
                  KV("a\xff\x00", "d"), KV("b", "f"), KV("b\x00", "g"), KV("a", "a"), { NULL, 300, "5", 1 } };
    int lay;
    memset(ff300, 0xff, 300);
    kv[12].k = ff300;
    for (lay = 0; lay < L_N; lay++) {
        kvdb *db = t_open(lay == 2);
        kvdb_txn *t;
        kvdb_iter *it = NULL;
        char want[1 << 12];
        REQUIRE(db);
        t = t_load(db, kv, sizeof kv / sizeof kv[0], lay);
        REQUIRE(t);
        want[0] = 0;
        t_cat(want, sizeof want, "\\xff=1 \\xff\\xfe=2 \\xff\\xff=3 \\xff\\xff\\x00=4 ");
        t_esc(want, sizeof want, ff300, 300);
        t_cat(want, sizeof want, "=5");
        EXPECT_PREFIX(t, K("\xff"), 0, want);
        EXPECT_PREFIX(t, ff300, 1, 0, want);
        want[0] = 0;
        t_esc(want, sizeof want, ff300, 300);
        t_cat(want, sizeof want, "=5 \\xff\\xff\\x00=4 \\xff\\xff=3");
        EXPECT_PREFIX(t, K("\xff\xff"), REV, want);
        want[0] = 0;
        t_esc(want, sizeof want, ff300, 300);
        t_cat(want, sizeof want, "=5");
        EXPECT_PREFIX(t, K("\xff\xff\xff"), 0, want);
        EXPECT_PREFIX(t, ff300, 100, REV, want);
        EXPECT_PREFIX(t, ff300, 300, 0, want);
        EXPECT_PREFIX(t, ff300, 301, 0, "");              /* longer than the key */
        EXPECT_PREFIX(t, K("\xfe"), 0, "\\xfe\\xff=0");
        EXPECT_PREFIX(t, K("a\xff"), 0, "a\\xff=c a\\xff\\x00=d a\\xff\\xff=e");
        EXPECT_PREFIX(t, K("a\xff"), REV, "a\\xff\\xff=e a\\xff\\x00=d a\\xff=c");
        EXPECT_PREFIX(t, K("a\xff\xff"), 0, "a\\xff\\xff=e");
        EXPECT_PREFIX(t, K("a\xff\xff\xff"), REV, "");
        EXPECT_PREFIX(t, K("a\xfe"), 0, "a\\xfe=b");
        EXPECT_PREFIX(t, K("b"), REV, "b\\x00=g b=f");
        EXPECT_RANGE(t, K("a\xff"), K("b"), 0, "a\\xff=c a\\xff\\x00=d a\\xff\\xff=e");
        {
            char w2[1 << 13];
            snprintf(w2, sizeof w2, "%s \\xff\\xff\\x00=4 \\xff\\xff=3", want);
            EXPECT_RANGE(t, K("\xff\xff"), NULL, 0, REV, w2);  /* no upper bound */
        }
        /* seeks in prefix "\xff" */
        REQUIRE_OK(kvdb_iter_prefix(t, K("\xff"), REV, &it));
        EXPECT_SEEK(it, K("\xff\xff\xff\xff"), 2, "\\xff\\xff\\x00=4 \\xff\\xff=3");
        EXPECT_SEEK(it, K("\xff\xfe\x00"), 0, "\\xff\\xfe=2 \\xff=1");
        EXPECT_SEEK(it, K("\xfe\xff\xff"), 0, "");
        kvdb_iter_close(it);
        REQUIRE_OK(kvdb_iter_prefix(t, K("\xff"), 0, &it));
        EXPECT_SEEK(it, K("\xff\xff\x00\x00"), 1, want);  /* the 300-byte key */
        EXPECT_SEEK(it, ff300, 300, 0, want);
        EXPECT_SEEK(it, ff300, 301, 0, "");
        EXPECT_SEEK(it, K("\x01"), 1, "\\xff=1");
        kvdb_iter_close(it);
        if (tu_cur_failed) printf("# layout: %s\n", t_layout_name[lay]);
        kvdb_abort(t);
        CHECK_OK(kvdb_close(db));
        if (tu_cur_failed) return;
    }
}

/* k00 .. k99 = v00 .. v99 */
static void t_load100(kvdb *db)
{
    kvdb_txn *t = NULL;
    int i;
    if (kvdb_begin(db, 0, &t) != KVDB_OK) { tu_fail(__FILE__, __LINE__, "begin"); return; }
    for (i = 0; i < 100; i++) {
        char k[16], v[16];
        snprintf(k, sizeof k, "k%02d", i);
        snprintf(v, sizeof v, "v%02d", i);
        CHECK_OK(kvdb_txn_put(t, k, 3, v, 3));
    }
    CHECK_OK(kvdb_commit(t));
}

/* "kA=vA ... kB=vB" stepping by +1 or -1 */
static const char *t_seq_str(int a, int b)
{
    static char s[1200];
    int i, step = a <= b ? 1 : -1;
    s[0] = 0;
    for (i = a;; i += step) {
        char p[16];
        snprintf(p, sizeof p, "%sk%02d=v%02d", s[0] ? " " : "", i, i);
        t_cat(s, sizeof s, p);
        if (i == b) break;
    }
    return s;
}

static void iter_reverse_bounds(void)
{
    kvdb *db = t_open(0);
    kvdb_txn *t = NULL;
    REQUIRE(db);
    t_load100(db);
    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
    EXPECT_RANGE(t, K("k10"), K("k20"), REV, t_seq_str(19, 10));
    EXPECT_RANGE(t, K("k10"), K("k20"), 0, t_seq_str(10, 19));
    EXPECT_RANGE(t, K("k105"), K("k13"), 0, "k11=v11 k12=v12");        /* bounds that are not keys */
    EXPECT_RANGE(t, K("k105"), K("k13"), REV, "k12=v12 k11=v11");
    EXPECT_RANGE(t, K("k10"), NULL, 0, REV, t_seq_str(99, 10));
    EXPECT_RANGE(t, NULL, 0, K("k05"), REV, t_seq_str(4, 0));
    EXPECT_RANGE(t, NULL, 0, K("k050"), REV, t_seq_str(5, 0));
    EXPECT_RANGE(t, K("k20"), K("k10"), 0, "");                        /* inverted */
    EXPECT_RANGE(t, K("k20"), K("k10"), REV, "");
    EXPECT_RANGE(t, K("k10"), K("k10"), REV, "");
    EXPECT_RANGE(t, K("k"), K("k00"), REV, "");
    EXPECT_RANGE(t, K("k99"), K("l"), REV, "k99=v99");
    EXPECT_ALL(t, REV, t_seq_str(99, 0));
    EXPECT_PREFIX(t, K("k5"), REV, t_seq_str(59, 50));
    kvdb_abort(t);
    CHECK_OK(kvdb_close(db));
}

static void iter_seek(void)
{
    kvdb *db = t_open(1);
    kvdb_txn *t = NULL;
    kvdb_iter *it = NULL;
    static char big[KVDB_MAX_KEY + 2];
    REQUIRE(db);
    t_load100(db);
    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
    /* forward in [k20, k40) */
    REQUIRE_OK(kvdb_iter_range(t, K("k20"), K("k40"), 0, &it));
    EXPECT_WALK(it, 1, "k20=v20");
    EXPECT_SEEK(it, K("k30"), 2, "k30=v30 k31=v31");
    EXPECT_SEEK(it, K("k305"), 1, "k31=v31");
    EXPECT_SEEK(it, K("a"), 1, "k20=v20");       /* before the start: clamped */
    EXPECT_SEEK(it, K("z"), 0, "");               /* beyond the end */
    EXPECT_SEEK(it, K("k40"), 0, "");
    EXPECT_SEEK(it, K("k39"), 0, "k39=v39");
    EXPECT_SEEK(it, NULL, 0, 1, "k20=v20");       /* the empty key: the start */
    EXPECT_SEEK(it, K("k25"), 0, t_seq_str(25, 39)); /* after DONE, seek restarts */
    kvdb_iter_close(it);
    /* reverse in [k20, k40) */
    REQUIRE_OK(kvdb_iter_range(t, K("k20"), K("k40"), REV, &it));
    EXPECT_SEEK(it, K("k30"), 2, "k30=v30 k29=v29");
    EXPECT_SEEK(it, K("k305"), 1, "k30=v30");
    EXPECT_SEEK(it, K("z"), 1, "k39=v39");        /* beyond the end: clamped */
    EXPECT_SEEK(it, K("k40"), 1, "k39=v39");
    EXPECT_SEEK(it, K("a"), 0, "");               /* before the start */
    EXPECT_SEEK(it, K("k20"), 0, "k20=v20");
    EXPECT_SEEK(it, K("k19"), 0, "");
    EXPECT_SEEK(it, "", 0, 0, "");
    EXPECT_SEEK(it, K("k22"), 0, "k22=v22 k21=v21 k20=v20");
    kvdb_iter_close(it);
    /* unbounded */
    REQUIRE_OK(kvdb_iter_range(t, NULL, 0, NULL, 0, 0, &it));
    EXPECT_SEEK(it, K("k99\0"), 0, "");
    EXPECT_SEEK(it, K("k99"), 0, "k99=v99");
    EXPECT_SEEK(it, K("\0"), 1, "k00=v00");
    memset(big, 'k', sizeof big);                 /* "kkkk..." > every key */
    EXPECT_SEEK(it, big, KVDB_MAX_KEY + 1, 0, "");  /* one past the longest key is allowed */
    CHECK_RC(kvdb_iter_seek(it, big, KVDB_MAX_KEY + 2), KVDB_ETOOBIG);
    CHECK_RC(kvdb_iter_seek(it, NULL, 1), KVDB_EINVAL);
    kvdb_iter_close(it);
    REQUIRE_OK(kvdb_iter_range(t, NULL, 0, NULL, 0, REV, &it));
    EXPECT_SEEK(it, K("k00"), 0, "k00=v00");
    EXPECT_SEEK(it, K("k0"), 0, "");
    EXPECT_SEEK(it, big, KVDB_MAX_KEY + 1, 1, "k99=v99");
    EXPECT_SEEK(it, K("k50\xff"), 2, "k50=v50 k49=v49");
    kvdb_iter_close(it);
    /* a prefix iterator: seeks stay inside the prefix */
    REQUIRE_OK(kvdb_iter_prefix(t, K("k4"), 0, &it));
    EXPECT_SEEK(it, K("k3"), 1, "k40=v40");
    EXPECT_SEEK(it, K("k5"), 0, "");
    EXPECT_SEEK(it, K("k49"), 0, "k49=v49");
    kvdb_iter_close(it);
    REQUIRE_OK(kvdb_iter_prefix(t, K("k4"), REV, &it));
    EXPECT_SEEK(it, K("k5"), 1, "k49=v49");
    EXPECT_SEEK(it, K("k3"), 0, "");
    EXPECT_SEEK(it, K("k40"), 0, "k40=v40");
    kvdb_iter_close(it);
    kvdb_abort(t);
    CHECK_OK(kvdb_close(db));
}

/* an iterator does not see commits made after its transaction began */
static void iter_isolation(void)
{
    int rev;
    for (rev = 0; rev < 2; rev++) {
        kvdb *db = t_open(rev);
        kvdb_txn *t = NULL, *w = NULL;
        kvdb_iter *it = NULL, *it2 = NULL;
        REQUIRE(db);
        CHECK_OK(kvdb_put(db, K("a"), K("1")));
        CHECK_OK(kvdb_put(db, K("b"), K("2")));
        CHECK_OK(kvdb_put(db, K("c"), K("3")));
        CHECK_OK(kvdb_put(db, K("d"), K("4")));
        CHECK_OK(kvdb_put(db, K("e"), K("5")));
        REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
        REQUIRE_OK(kvdb_iter_range(t, NULL, 0, NULL, 0, rev ? REV : 0, &it));
        EXPECT_WALK(it, 2, rev ? "e=5 d=4" : "a=1 b=2");
        /* commits: new keys on both sides, a delete, an overwrite */
        REQUIRE_OK(kvdb_begin(db, 0, &w));
        CHECK_OK(kvdb_txn_put(w, K("bb"), K("new")));
        CHECK_OK(kvdb_txn_put(w, K("cc"), K("new")));
        CHECK_OK(kvdb_txn_put(w, K("0"), K("new")));
        CHECK_OK(kvdb_txn_put(w, K("z"), K("new")));
        CHECK_OK(kvdb_txn_del(w, K("c")));
        CHECK_OK(kvdb_txn_put(w, K("b"), K("22")));
        CHECK_OK(kvdb_txn_put(w, K("d"), K("44")));
        CHECK_OK(kvdb_commit(w));
        t_touch(db);                                   /* the new state sorted and shared */
        CHECK_OK(kvdb_del(db, K("a")));
        CHECK_OK(kvdb_del(db, K("e")));
        t_touch(db);
        EXPECT_WALK(it, 0, rev ? "c=3 b=2 a=1" : "c=3 d=4 e=5");
        /* a new iterator in the old transaction (its end is inside a newer shared run) */
        EXPECT_ALL(t, 0, "a=1 b=2 c=3 d=4 e=5");
        EXPECT_ALL(t, REV, "e=5 d=4 c=3 b=2 a=1");
        REQUIRE_OK(kvdb_iter_prefix(t, K("c"), 0, &it2));
        EXPECT_WALK(it2, 0, "c=3");
        EXPECT_SEEK(it, K("b"), 0, rev ? "b=2 a=1" : "b=2 c=3 d=4 e=5");
        kvdb_abort(t);
        REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
        EXPECT_ALL(t, 0, "0=new b=22 bb=new cc=new d=44 z=new");
        kvdb_abort(t);
        CHECK_OK(kvdb_close(db));
    }
}

/* Many snapshots of different ages, each with iterators; after every round
 * an iterator on the newest state extends (and merges) the shared runs, so
 * older snapshots' ends fall inside shared runs: their iterators need
 * private runs.  Each must see exactly its own snapshot. */
#define MS_KEYS 64
#define MS_ROUNDS 14
static void t_ms_key(char *k, int i) { snprintf(k, 16, "key%03d", i); }

static void t_ms_want(char *out, size_t cap, const int *vals, int lo, int hi, int rev)
{
    int i;
    out[0] = 0;
    for (i = rev ? hi - 1 : lo; rev ? i >= lo : i < hi; i += rev ? -1 : 1) {
        char p[32];
        if (vals[i] < 0) continue;
        snprintf(p, sizeof p, "%skey%03d=r%d", out[0] ? " " : "", i, vals[i]);
        t_cat(out, cap, p);
    }
}

static void iter_many_snapshots(void)
{
    int pass;
    for (pass = 0; pass < 2; pass++) {
        kvdb *db = t_open(pass);
        kvdb_txn *snap[MS_ROUNDS];
        kvdb_iter *it[MS_ROUNDS], *it_late[MS_ROUNDS];
        int vals[MS_ROUNDS][MS_KEYS], cur[MS_KEYS], walked[MS_ROUNDS];
        static char want[1 << 12], got[1 << 12];
        uint64_t rs = 12345 + (uint64_t)pass;
        int r, i;
        struct kvdb_stat st;
        REQUIRE(db);
        for (i = 0; i < MS_KEYS; i++) cur[i] = -1;
        for (r = 0; r < MS_ROUNDS; r++) {
            kvdb_txn *w = NULL;
            int n = 1 + (int)(tu_rand(&rs) % (r < 3 ? 40 : 8)); /* big rounds first, then small */
            REQUIRE_OK(kvdb_begin(db, 0, &w));
            for (i = 0; i < n; i++) {
                int k = (int)(tu_rand(&rs) % MS_KEYS);
                char key[16], v[16];
                t_ms_key(key, k);
                if (cur[k] >= 0 && tu_rand(&rs) % 4 == 0) {
                    CHECK_OK(kvdb_txn_del(w, key, 6));
                    cur[k] = -1;
                } else {
                    snprintf(v, sizeof v, "r%d", r * 100 + i);
                    CHECK_OK(kvdb_txn_put(w, key, 6, v, strlen(v)));
                    cur[k] = r * 100 + i;
                }
            }
            CHECK_OK(kvdb_commit(w));
            memcpy(vals[r], cur, sizeof cur);
            REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &snap[r]));
            /* an iterator opened now (the newest state: extends the shared runs)
             * and walked one step, kept open */
            REQUIRE_OK(kvdb_iter_range(snap[r], NULL, 0, NULL, 0, r % 2 ? REV : 0, &it[r]));
            got[0] = 0;
            walked[r] = t_walk(it[r], got, sizeof got, 1) == KVDB_OK;
            it_late[r] = NULL;
            if (r >= 2) { /* and an older snapshot gets a new iterator now */
                int o = (int)(tu_rand(&rs) % (uint64_t)r);
                if (!it_late[o]) REQUIRE_OK(kvdb_iter_range(snap[o], K("key010"), K("key050"), 0, &it_late[o]));
            }
        }
        CHECK_OK(kvdb_stat(db, &st));
        for (r = 0; r < MS_ROUNDS && !tu_cur_failed; r++) {
            int rev = r % 2;
            /* the iterator opened with the snapshot, continued */
            t_ms_want(want, sizeof want, vals[r], 0, MS_KEYS, rev);
            got[0] = 0;
            {   /* re-walk from the start: seek to the first (last) key */
                int rc = kvdb_iter_seek(it[r], rev ? "\xff" : "", rev ? 1 : 0);
                CHECK_OK(rc);
                rc = t_walk(it[r], got, sizeof got, 0);
                CHECK_RC(rc, KVDB_DONE);
            }
            if (strcmp(got, want) != 0)
                tu_fail(__FILE__, __LINE__, "snapshot %d (walked %d): got \"%s\", want \"%s\"", r, walked[r], got, want);
            if (it_late[r]) {
                t_ms_want(want, sizeof want, vals[r], 10, 50, 0);
                got[0] = 0;
                CHECK_RC(t_walk(it_late[r], got, sizeof got, 0), KVDB_DONE);
                if (strcmp(got, want) != 0)
                    tu_fail(__FILE__, __LINE__, "snapshot %d, late iterator: got \"%s\", want \"%s\"", r, got, want);
            }
            /* new iterators now, after all the merging */
            t_ms_want(want, sizeof want, vals[r], 0, MS_KEYS, 1);
            EXPECT_ALL(snap[r], REV, want);
            t_ms_want(want, sizeof want, vals[r], 20, 30, 0);
            EXPECT_PREFIX(snap[r], K("key02"), 0, want);
        }
        for (r = 0; r < MS_ROUNDS; r++) {
            if (r % 3 == 0) kvdb_iter_close(it[r]); /* the rest: closed by the txn */
            if (r % 2) kvdb_abort(snap[r]);
            else CHECK_OK(kvdb_commit(snap[r]));
        }
        CHECK_OK(kvdb_close(db));
        if (tu_cur_failed) return;
    }
}

/* a write transaction's iterators see its writes made before they were opened */
static void iter_write_txn(void)
{
    int inmem;
    for (inmem = 0; inmem < 3; inmem++) {
        kvdb *db = t_open(inmem);
        kvdb_txn *t = NULL;
        kvdb_iter *it0 = NULL, *it1 = NULL, *it2 = NULL, *it3 = NULL, *r1 = NULL;
        const void *v = NULL;
        size_t vl = 0;
        int i;
        REQUIRE(db);
        CHECK_OK(kvdb_put(db, K("a"), K("1")));
        CHECK_OK(kvdb_put(db, K("c"), K("3")));
        CHECK_OK(kvdb_put(db, K("e"), K("5")));
        REQUIRE_OK(kvdb_begin(db, 0, &t));
        REQUIRE_OK(kvdb_iter_range(t, NULL, 0, NULL, 0, 0, &it0)); /* before any write */
        CHECK_OK(kvdb_txn_put(t, K("b"), K("2")));
        REQUIRE_OK(kvdb_iter_range(t, NULL, 0, NULL, 0, 0, &it1));
        REQUIRE_OK(kvdb_iter_range(t, NULL, 0, NULL, 0, REV, &r1));
        EXPECT_WALK(it1, 1, "a=1");
        EXPECT_WALK(r1, 1, "e=5");
        CHECK_OK(kvdb_txn_put(t, K("d"), K("4")));
        CHECK_OK(kvdb_txn_del(t, K("c")));
        REQUIRE_OK(kvdb_iter_range(t, NULL, 0, NULL, 0, 0, &it2));
        EXPECT_WALK(it1, 1, "b=2");
        CHECK_OK(kvdb_txn_put(t, K("b"), K("22")));             /* overwrite its own write */
        CHECK_OK(kvdb_txn_del(t, K("a")));
        REQUIRE_OK(kvdb_iter_range(t, NULL, 0, NULL, 0, 0, &it3));
        EXPECT_WALK(it1, 0, "c=3 e=5");
        EXPECT_WALK(r1, 0, "c=3 b=2 a=1");
        EXPECT_WALK(it0, 0, "a=1 c=3 e=5");
        EXPECT_WALK(it2, 0, "a=1 b=2 d=4 e=5");
        EXPECT_WALK(it3, 0, "b=22 d=4 e=5");
        EXPECT_SEEK(it2, K("b"), 0, "b=2 d=4 e=5");
        EXPECT_SEEK(it3, K("a"), 0, "b=22 d=4 e=5");
        EXPECT_ALL(t, REV, "e=5 d=4 b=22");
        EXPECT_PREFIX(t, K("c"), 0, "");
        EXPECT_PREFIX(t, K("b"), REV, "b=22");
        EXPECT_RANGE(t, K("a"), K("d"), 0, "b=22");
        {   /* the outputs are optional: a count, then a value alone */
            kvdb_iter *ic = NULL;
            const void *vv = NULL;
            size_t n = 0, vn = 0;
            REQUIRE_OK(kvdb_iter_range(t, NULL, 0, NULL, 0, 0, &ic));
            while (kvdb_iter_next(ic, NULL, NULL, NULL, NULL) == KVDB_OK) n++;
            CHECK(n == 3);
            CHECK_OK(kvdb_iter_seek(ic, K("d")));
            CHECK_OK(kvdb_iter_next(ic, NULL, NULL, &vv, &vn));
            CHECK(vn == 1 && memcmp(vv, "4", 1) == 0);
            kvdb_iter_close(ic);
        }
        /* many own writes (the write set outgrows its inline array), deletes
         * of committed keys among them, and a few thousand bytes of values */
        for (i = 0; i < 300; i++) {
            char k[16], val[64];
            snprintf(k, sizeof k, "m%03d", i);
            memset(val, 'x', sizeof val);
            CHECK_OK(kvdb_txn_put(t, k, 4, val, (size_t)(i % 64)));
        }
        for (i = 0; i < 300; i += 3) {
            char k[16];
            snprintf(k, sizeof k, "m%03d", i);
            CHECK_OK(kvdb_txn_del(t, k, 4));
        }
        {
            kvdb_iter *it = NULL;
            const void *k;
            size_t kl, n = 0, last = 0;
            int rc;
            REQUIRE_OK(kvdb_iter_prefix(t, K("m"), 0, &it));
            while ((rc = kvdb_iter_next(it, &k, &kl, &v, &vl)) == KVDB_OK) {
                const char *ks = (const char *)k;
                size_t id = (size_t)((ks[1] - '0') * 100 + (ks[2] - '0') * 10 + (ks[3] - '0'));
                CHECK(kl == 4 && id % 3 != 0 && vl == id % 64 && (n == 0 || id > last));
                last = id;
                n++;
            }
            CHECK_RC(rc, KVDB_DONE);
            CHECK(n == 200);
            kvdb_iter_close(it);
        }
        CHECK_OK(kvdb_txn_get(t, K("b"), &v, &vl));
        CHECK(vl == 2 && memcmp(v, "22", 2) == 0);
        if (inmem) kvdb_abort(t);
        else CHECK_OK(kvdb_commit(t));                 /* its iterators are closed with it */
        REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
        EXPECT_RANGE(t, NULL, 0, K("m"), 0, inmem ? "a=1 c=3 e=5" : "b=22 d=4 e=5");
        kvdb_abort(t);
        CHECK_OK(kvdb_close(db));
    }
}

/* iterators still open when their transaction ends are closed with it */
static void iter_left_open(void)
{
    kvdb *db = t_open(0);
    kvdb_txn *t = NULL;
    kvdb_iter *it = NULL;
    int i;
    REQUIRE(db);
    t_load100(db);
    for (i = 0; i < 4; i++) {
        int w = i >= 2;
        REQUIRE_OK(kvdb_begin(db, w ? 0 : KVDB_TXN_RDONLY, &t));
        if (w) CHECK_OK(kvdb_txn_put(t, K("k50x"), K("y")));
        REQUIRE_OK(kvdb_iter_range(t, NULL, 0, NULL, 0, 0, &it));
        EXPECT_WALK(it, 3, "k00=v00 k01=v01 k02=v02");
        REQUIRE_OK(kvdb_iter_prefix(t, K("k9"), REV, &it));
        EXPECT_WALK(it, 0, t_seq_str(99, 90));        /* at the end */
        REQUIRE_OK(kvdb_iter_range(t, K("k3"), K("k4"), 0, &it)); /* never used */
        if (w) CHECK_OK(kvdb_txn_put(t, K("k50y"), K("z"))); /* a write after opening */
        if (i % 2) kvdb_abort(t);
        else CHECK_OK(kvdb_commit(t));
    }
    CHECK_OK(kvdb_close(db));                        /* not EBUSY; ASan: nothing leaked */
}

/* sorted runs stay O(log n) over many small commits with an iterator after each */
static void iter_runs_bounded(void)
{
    int inmem;
    for (inmem = 0; inmem < 2; inmem++) {
        kvdb *db = t_open(inmem);
        struct kvdb_stat st;
        uint64_t rs = 777, records = 0, max_runs = 0, bound;
        int c;
        REQUIRE(db);
        for (c = 1; c <= 3000 && !tu_cur_failed; c++) {
            int n = 1 + (int)(tu_rand(&rs) % 3), i;
            kvdb_txn *w = NULL;
            REQUIRE_OK(kvdb_begin(db, 0, &w));
            for (i = 0; i < n; i++) {
                char k[16];
                int kn = snprintf(k, sizeof k, "r%05d", (int)(tu_rand(&rs) % 4000));
                CHECK_OK(kvdb_txn_put(w, k, (size_t)kn, "v", 1));
            }
            CHECK_OK(kvdb_commit(w));
            records += (uint64_t)n;
            t_touch(db);
            CHECK_OK(kvdb_stat(db, &st));
            bound = 4;
            while (((uint64_t)1 << bound) < records) bound++; /* 2 + log2(records) */
            bound += 2;
            if (st.sorted_runs > max_runs) max_runs = st.sorted_runs;
            if (st.sorted_runs > bound)
                tu_fail(__FILE__, __LINE__, "after %d commits (%llu records): %llu sorted runs (bound %llu)", c,
                        (unsigned long long)records, (unsigned long long)st.sorted_runs, (unsigned long long)bound);
            /* entries: at most one per record, twice over during merges */
            if (st.sorted_bytes > 2 * 16 * records + 128 * st.sorted_runs + 4096)
                tu_fail(__FILE__, __LINE__, "after %d commits: sorted_bytes %llu for %llu records", c,
                        (unsigned long long)st.sorted_bytes, (unsigned long long)records);
        }
        CHECK(max_runs >= 2); /* the test did exercise several runs */
        CHECK_OK(kvdb_stat(db, &st));
        /* one entry per live key and run, not per record: well under 16 per record */
        CHECK(st.sorted_bytes <= 16 * st.keys * (st.sorted_runs + 1) + 4096);
        CHECK_OK(kvdb_close(db));
    }
}

/* a tombstone in a newer run hides the key's entry in an older run */
static void iter_tombstone_hides(void)
{
    int inmem;
    for (inmem = 0; inmem < 3; inmem++) {
        kvdb *db = t_open(inmem);
        kvdb_txn *t = NULL;
        kvdb_iter *it = NULL;
        struct kvdb_stat st;
        REQUIRE(db);
        CHECK_OK(kvdb_put(db, K("a"), K("1")));
        CHECK_OK(kvdb_put(db, K("b"), K("2")));
        CHECK_OK(kvdb_put(db, K("c"), K("3")));
        CHECK_OK(kvdb_put(db, K("d"), K("4")));
        CHECK_OK(kvdb_put(db, K("e"), K("5")));
        t_touch(db);                                   /* run 1: a..e */
        CHECK_OK(kvdb_del(db, K("b")));
        REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t)); /* run 2: the tombstone of b */
        EXPECT_ALL(t, 0, "a=1 c=3 d=4 e=5");
        CHECK_OK(kvdb_stat(db, &st));
        CHECK(st.sorted_runs >= 2);                    /* the case is the one meant */
        EXPECT_ALL(t, REV, "e=5 d=4 c=3 a=1");
        EXPECT_PREFIX(t, K("b"), 0, "");
        EXPECT_PREFIX(t, K("b"), REV, "");
        EXPECT_RANGE(t, K("b"), K("c"), 0, "");
        EXPECT_RANGE(t, K("a"), K("c\0"), REV, "c=3 a=1");
        REQUIRE_OK(kvdb_iter_range(t, NULL, 0, NULL, 0, 0, &it));
        EXPECT_SEEK(it, K("b"), 1, "c=3");
        kvdb_iter_close(it);
        REQUIRE_OK(kvdb_iter_range(t, NULL, 0, NULL, 0, REV, &it));
        EXPECT_SEEK(it, K("b"), 1, "a=1");
        EXPECT_SEEK(it, K("b\xff"), 1, "a=1");
        kvdb_iter_close(it);
        kvdb_abort(t);
        /* put again in a third run, then delete again in a fourth, a near key beside it */
        CHECK_OK(kvdb_put(db, K("b"), K("22")));
        REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
        EXPECT_ALL(t, 0, "a=1 b=22 c=3 d=4 e=5");
        kvdb_abort(t);
        CHECK_OK(kvdb_del(db, K("b")));
        CHECK_OK(kvdb_put(db, K("b\0"), K("x")));
        CHECK_OK(kvdb_del(db, K("e")));
        REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
        EXPECT_ALL(t, 0, "a=1 b\\x00=x c=3 d=4");
        EXPECT_ALL(t, REV, "d=4 c=3 b\\x00=x a=1");
        kvdb_abort(t);
        /* delete everything: each in its own run */
        CHECK_OK(kvdb_del(db, K("a")));
        t_touch(db);
        CHECK_OK(kvdb_del(db, K("b\0")));
        t_touch(db);
        CHECK_OK(kvdb_del(db, K("c")));
        CHECK_OK(kvdb_del(db, K("d")));
        REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
        EXPECT_ALL(t, 0, "");
        EXPECT_ALL(t, REV, "");
        kvdb_abort(t);
        CHECK_OK(kvdb_close(db));
    }
}

/* only the newest value of an overwritten key, once */
static void iter_overwrite(void)
{
    kvdb *db = t_open(0);
    kvdb_txn *t = NULL, *old = NULL;
    REQUIRE(db);
    CHECK_OK(kvdb_put(db, K("a"), K("1")));
    CHECK_OK(kvdb_put(db, K("c"), K("1")));
    t_touch(db);
    CHECK_OK(kvdb_put(db, K("a"), K("2")));
    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &old));
    EXPECT_ALL(old, 0, "a=2 c=1");
    CHECK_OK(kvdb_put(db, K("a"), K("3")));
    CHECK_OK(kvdb_put(db, K("b"), K("1")));
    CHECK_OK(kvdb_put(db, K("a"), K("4")));          /* twice in one run */
    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
    EXPECT_ALL(t, 0, "a=4 b=1 c=1");
    EXPECT_ALL(t, REV, "c=1 b=1 a=4");
    EXPECT_PREFIX(t, K("a"), 0, "a=4");
    kvdb_abort(t);
    EXPECT_ALL(old, REV, "c=1 a=2");
    kvdb_abort(old);
    CHECK_OK(kvdb_close(db));
}

/* key and value pointers from kvdb_iter_next stay valid until the txn ends */
static void iter_pointer_lifetime(void)
{
    enum { N = 60, VL = 1000 };
    kvdb *db = t_open(0);
    kvdb_txn *t = NULL;
    kvdb_iter *it = NULL;
    const void *kp[N], *vp[N];
    size_t kl[N], vl[N];
    static unsigned char big[1 << 20];
    int i, n = 0, rc;
    REQUIRE(db);
    for (i = 0; i < N; i++) {
        char k[16];
        unsigned char v[VL];
        memset(v, 'a' + i % 26, VL);
        snprintf(k, sizeof k, "p%02d", i);
        CHECK_OK(kvdb_put(db, k, 3, v, VL));
    }
    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
    REQUIRE_OK(kvdb_iter_prefix(t, K("p"), 0, &it));
    while (n < N && (rc = kvdb_iter_next(it, &kp[n], &kl[n], &vp[n], &vl[n])) == KVDB_OK) n++;
    CHECK(n == N);
    kvdb_iter_close(it);                              /* closing the iterator keeps them too */
    /* overwrite and delete everything, and grow the file well past its mapping */
    memset(big, 'Z', sizeof big);
    for (i = 0; i < N; i++) {
        char k[16];
        snprintf(k, sizeof k, "p%02d", i);
        if (i % 2) CHECK_OK(kvdb_del(db, k, 3));
        else CHECK_OK(kvdb_put(db, k, 3, big, 1000));
    }
    for (i = 0; i < 40; i++) {
        char k[16];
        snprintf(k, sizeof k, "q%02d", i);
        CHECK_OK(kvdb_put(db, k, 3, big, sizeof big));
    }
    t_touch(db);
    for (i = 0; i < n; i++) {
        char k[16];
        unsigned char v[VL];
        snprintf(k, sizeof k, "p%02d", i);
        memset(v, 'a' + i % 26, VL);
        CHECK(kl[i] == 3 && memcmp(kp[i], k, 3) == 0);
        CHECK(vl[i] == VL && memcmp(vp[i], v, VL) == 0);
    }
    kvdb_abort(t);
    /* in a write txn: pointers to committed records survive its own writes */
    REQUIRE_OK(kvdb_begin(db, 0, &t));
    REQUIRE_OK(kvdb_iter_prefix(t, K("p"), 0, &it));
    n = 0;
    while (n < N && kvdb_iter_next(it, &kp[n], &kl[n], &vp[n], &vl[n]) == KVDB_OK) n++;
    CHECK(n == N / 2);
    for (i = 0; i < 200; i++) {
        char k[16];
        snprintf(k, sizeof k, "w%03d", i);
        CHECK_OK(kvdb_txn_put(t, k, 4, big, 20000)); /* 4 MB of buffer: it moves */
    }
    for (i = 0; i < n; i++) {
        char k[16];
        snprintf(k, sizeof k, "p%02d", 2 * i);
        CHECK(kl[i] == 3 && memcmp(kp[i], k, 3) == 0);
        CHECK(vl[i] == 1000 && memcmp(vp[i], big, 1000) == 0);
    }
    kvdb_abort(t);
    CHECK_OK(kvdb_close(db));
}

static void iter_bad_args(void)
{
    kvdb *db = t_open(1);
    kvdb_txn *t = NULL;
    kvdb_iter *it = (kvdb_iter *)&t_seq, *it2 = NULL;  /* poisoned: must become NULL */
    static char big[KVDB_MAX_KEY + 3];
    REQUIRE(db);
    memset(big, 'b', sizeof big);
    CHECK_OK(kvdb_put(db, K("a"), K("1")));
    CHECK_RC(kvdb_iter_range(NULL, NULL, 0, NULL, 0, 0, &it), KVDB_EINVAL);
    CHECK(it == NULL);
    it = (kvdb_iter *)&t_seq;
    CHECK_RC(kvdb_iter_prefix(NULL, K("a"), 0, &it), KVDB_EINVAL);
    CHECK(it == NULL);
    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
    CHECK_RC(kvdb_iter_range(t, NULL, 0, NULL, 0, 0, NULL), KVDB_EINVAL);
    CHECK_RC(kvdb_iter_prefix(t, K("a"), 0, NULL), KVDB_EINVAL);
    it = (kvdb_iter *)&t_seq;
    CHECK_RC(kvdb_iter_range(t, NULL, 0, NULL, 0, 0x2, &it), KVDB_EINVAL);
    CHECK(it == NULL);
    CHECK_RC(kvdb_iter_range(t, NULL, 0, NULL, 0, 0x80000000u | KVDB_ITER_REVERSE, &it), KVDB_EINVAL);
    CHECK_RC(kvdb_iter_prefix(t, K("a"), 0x4, &it), KVDB_EINVAL);
    /* bounds: a key is at most 65535 bytes, so longer bounds are refused */
    it = (kvdb_iter *)&t_seq;
    CHECK_RC(kvdb_iter_range(t, big, KVDB_MAX_KEY + 2, NULL, 0, 0, &it), KVDB_ETOOBIG);
    CHECK(it == NULL);
    CHECK_RC(kvdb_iter_range(t, NULL, 0, big, KVDB_MAX_KEY + 2, 0, &it), KVDB_ETOOBIG);
    CHECK_RC(kvdb_iter_range(t, big, KVDB_MAX_KEY + 2, big, KVDB_MAX_KEY + 2, REV, &it), KVDB_ETOOBIG);
    CHECK_RC(kvdb_iter_prefix(t, big, KVDB_MAX_KEY + 2, 0, &it), KVDB_ETOOBIG);
    /* ... while bounds up to the longest key work */
    REQUIRE_OK(kvdb_iter_range(t, big, KVDB_MAX_KEY, NULL, 0, 0, &it2));
    EXPECT_WALK(it2, 0, "");
    kvdb_iter_close(it2);
    REQUIRE_OK(kvdb_iter_range(t, NULL, 0, big, KVDB_MAX_KEY, REV, &it2));
    EXPECT_WALK(it2, 0, "a=1");
    kvdb_iter_close(it2);
    REQUIRE_OK(kvdb_iter_prefix(t, big, KVDB_MAX_KEY, 0, &it2));
    EXPECT_WALK(it2, 0, "");
    kvdb_iter_close(it2);
    /* NULL prefix with a length */
    CHECK_RC(kvdb_iter_prefix(t, NULL, 1, 0, &it2), KVDB_EINVAL);
    CHECK_RC(kvdb_iter_prefix(t, NULL, 0, 0, &it2), KVDB_OK); /* NULL, 0: everything */
    EXPECT_WALK(it2, 0, "a=1");
    /* NULL iterator */
    CHECK_RC(kvdb_iter_next(NULL, NULL, NULL, NULL, NULL), KVDB_EINVAL);
    CHECK_RC(kvdb_iter_seek(NULL, K("a")), KVDB_EINVAL);
    kvdb_iter_close(NULL);
    /* NULL outputs of next are allowed */
    CHECK_OK(kvdb_iter_seek(it2, NULL, 0));
    CHECK_OK(kvdb_iter_next(it2, NULL, NULL, NULL, NULL));
    CHECK_RC(kvdb_iter_next(it2, NULL, NULL, NULL, NULL), KVDB_DONE);
    kvdb_iter_close(it2);
    kvdb_abort(t);
    CHECK_OK(kvdb_close(db));
}

/* keys sharing their first 8 bytes and more (full-key comparisons), and
 * keys of the longest length */
static void iter_long_keys(void)
{
    kvdb *db = t_open(0);
    kvdb_txn *t = NULL;
    kvdb_iter *it = NULL;
    static char lk[KVDB_MAX_KEY + 1];
    const void *k;
    size_t kl;
    int lay;
    REQUIRE(db);
    memset(lk, 'L', sizeof lk);
    for (lay = 0; lay < 2; lay++) {
        static const t_kv kv[] = { KV("prefix__0002", "2"), KV("prefix__", "0"), KV("prefix__0001", "1"),
                                   KV("prefix__00010", "10"), KV("prefix_", "-"), KV("prefix__\xff", "f") };
        size_t i;
        for (i = 0; i < sizeof kv / sizeof kv[0]; i++) {
            CHECK_OK(kvdb_put(db, kv[i].k, kv[i].kl, kv[i].v, kv[i].vl));
            if (lay) t_touch(db);
        }
        lk[KVDB_MAX_KEY - 1] = lay ? 'M' : 'L';
        CHECK_OK(kvdb_put(db, lk, KVDB_MAX_KEY, K("long")));
        REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
        EXPECT_PREFIX(t, K("prefix__"), 0, "prefix__=0 prefix__0001=1 prefix__00010=10 prefix__0002=2 prefix__\\xff=f");
        EXPECT_PREFIX(t, K("prefix__0001"), REV, "prefix__00010=10 prefix__0001=1");
        EXPECT_RANGE(t, K("prefix__0001"), K("prefix__0002"), 0, "prefix__0001=1 prefix__00010=10");
        EXPECT_RANGE(t, K("prefix__00010\0"), K("prefix__1"), 0, "prefix__0002=2");
        REQUIRE_OK(kvdb_iter_prefix(t, lk, 100, 0, &it));
        CHECK_OK(kvdb_iter_next(it, &k, &kl, NULL, NULL));
        CHECK(kl == KVDB_MAX_KEY && memcmp(k, lk, kl) == 0);
        CHECK_RC(kvdb_iter_next(it, NULL, NULL, NULL, NULL), KVDB_DONE);
        {   /* seeks that differ from the key in its last byte only */
            char last = lk[KVDB_MAX_KEY - 1];
            lk[KVDB_MAX_KEY - 1] = (char)(last + 1);
            CHECK_OK(kvdb_iter_seek(it, lk, KVDB_MAX_KEY));
            CHECK_RC(kvdb_iter_next(it, NULL, NULL, NULL, NULL), KVDB_DONE);
            lk[KVDB_MAX_KEY - 1] = (char)(last - 1);
            CHECK_OK(kvdb_iter_seek(it, lk, KVDB_MAX_KEY));
            lk[KVDB_MAX_KEY - 1] = last;
            CHECK_OK(kvdb_iter_next(it, &k, &kl, NULL, NULL));
            CHECK(kl == KVDB_MAX_KEY && memcmp(k, lk, kl) == 0);
        }
        kvdb_iter_close(it);
        REQUIRE_OK(kvdb_iter_range(t, lk, KVDB_MAX_KEY - 1, lk, KVDB_MAX_KEY, 0, &it));
        CHECK_RC(kvdb_iter_next(it, &k, &kl, NULL, NULL), KVDB_DONE);
        kvdb_iter_close(it);
        kvdb_abort(t);
        CHECK_OK(kvdb_del(db, lk, KVDB_MAX_KEY));
    }
    CHECK_OK(kvdb_close(db));
}

/* the reverse of "t1 t2 t3": "t3 t2 t1" */
static void t_reverse_words(char *out, size_t cap, const char *in)
{
    char tmp[1 << 11], *w[64];
    int n = 0, i;
    snprintf(tmp, sizeof tmp, "%s", in);
    for (w[n] = strtok(tmp, " "); w[n] && n < 63; w[n] = strtok(NULL, " ")) n++;
    out[0] = 0;
    for (i = n - 1; i >= 0; i--) {
        if (out[0]) t_cat(out, cap, " ");
        t_cat(out, cap, w[i]);
    }
}

/* after reopen: with the sidecar, without it, and with a log tail after it
 * that deletes and overwrites keys the sidecar holds */
static void iter_after_reopen(void)
{
    kvdb_options o;
    kvdb *db = NULL;
    kvdb_txn *t = NULL;
    const char *path = tu_path("reopen.db");
    char idx[700];
    int round;
    static const char *want[4] = {
        "\\x00=z a=1 a\\x00=2 b=3 \\xff=4 \\xff\\xff=5",
        "\\x00=z a=1 a\\x00=2 b=3 \\xff=4 \\xff\\xff=5",
        "a=1 a\\x00=22 aa=new b=3 \\xff\\xff=5",
        "a=1 a\\x00=22 aa=new b=3 \\xff\\xff=5",
    };
    static const unsigned want_sidecar[4] = { 1, 0, 1, 0 };
    TU_SKIP_WITHOUT_SIDECAR();
    snprintf(idx, sizeof idx, "%s.idx", path);
    kvdb_options_init(&o);
    o.flags = KVDB_CREATE;
    o.sync = KVDB_SYNC_OFF;
    REQUIRE_OK(kvdb_open(path, &o, &db));
    CHECK_OK(kvdb_put(db, K("a"), K("1")));
    CHECK_OK(kvdb_put(db, K("a\0"), K("2")));
    CHECK_OK(kvdb_put(db, K("b"), K("3")));
    CHECK_OK(kvdb_put(db, K("\xff"), K("4")));
    CHECK_OK(kvdb_put(db, K("\xff\xff"), K("5")));
    CHECK_OK(kvdb_put(db, K("\0"), K("z")));
    for (round = 0; round < 4 && !tu_cur_failed; round++) {
        char rev[1 << 11];
        struct kvdb_stat st;
        /* 0: the sidecar; 1: none; 2: the sidecar, then a tail; 3: none */
        if (round == 0) CHECK_OK(kvdb_checkpoint(db));
        if (round == 2) { /* the sidecar of this checkpoint, then a tail */
            CHECK_OK(kvdb_checkpoint(db));
            REQUIRE(tu_copy_file(idx, tu_path("reopen.idx.saved"), -1) == 0);
            CHECK_OK(kvdb_del(db, K("\xff")));
            CHECK_OK(kvdb_del(db, K("\0")));
            CHECK_OK(kvdb_put(db, K("a\0"), K("22")));
            CHECK_OK(kvdb_put(db, K("aa"), K("new")));
        }
        CHECK_OK(kvdb_close(db));
        db = NULL;
        if (round == 1 || round == 3) (void)unlink(idx);
        /* close wrote a sidecar covering everything: put the older one back */
        if (round == 2) REQUIRE(tu_copy_file(tu_path("reopen.idx.saved"), idx, -1) == 0);
        o.flags = 0;
        REQUIRE_OK(kvdb_open(path, &o, &db));
        CHECK_OK(kvdb_stat(db, &st));
        if (st.sidecar_loaded != want_sidecar[round])
            tu_fail(__FILE__, __LINE__, "round %d: sidecar_loaded %u, want %u (the case is not the one meant)",
                    round, st.sidecar_loaded, want_sidecar[round]);
        if (round == 2 && st.replayed_bytes == 0) tu_fail(__FILE__, __LINE__, "round 2: no log tail replayed");
        REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
        EXPECT_ALL(t, 0, want[round]);
        t_reverse_words(rev, sizeof rev, want[round]);
        EXPECT_ALL(t, REV, rev);
        EXPECT_PREFIX(t, K("a"), 0, round < 2 ? "a=1 a\\x00=2" : "a=1 a\\x00=22 aa=new");
        EXPECT_PREFIX(t, K("\xff"), REV, round < 2 ? "\\xff\\xff=5 \\xff=4" : "\\xff\\xff=5");
        EXPECT_RANGE(t, K("\0"), K("b"), REV, round < 2 ? "a\\x00=2 a=1 \\x00=z" : "aa=new a\\x00=22 a=1");
        kvdb_abort(t);
        if (tu_cur_failed) printf("# round %d\n", round);
    }
    CHECK_OK(kvdb_close(db));
}

/* An old snapshot whose end falls inside a newer shared run builds its
 * private run once, not at every iterator (regression: it re-sorted the
 * log at each kvdb_iter_range, holding the sorted-index lock). */
static void iter_private_run_reused(void)
{
    kvdb *db = t_open(0);
    kvdb_txn *t, *snap;
    kvdb_iter *it;
    uint64_t before;
    char k[32];
    int i, j, n;
    REQUIRE(db);
    for (i = 0; i < 20; i++) {
        REQUIRE_OK(kvdb_begin(db, 0, &t));
        for (j = 0; j < 50; j++) {
            snprintf(k, sizeof k, "k%02d-%02d", i, j);
            REQUIRE_OK(kvdb_txn_put(t, k, strlen(k), "v", 1));
        }
        REQUIRE_OK(kvdb_commit(t));
    }
    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &snap)); /* old snapshot */
    REQUIRE_OK(kvdb_put(db, "zz", 2, "v", 1));
    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t)); /* newest: a shared run past snap's end */
    REQUIRE_OK(kvdb_iter_range(t, NULL, 0, NULL, 0, 0, &it));
    kvdb_abort(t);
    before = db->srt_builds;
    for (i = 0; i < 5; i++) {
        const void *kp, *vp;
        size_t kn, vn;
        REQUIRE_OK(kvdb_iter_range(snap, NULL, 0, NULL, 0, 0, &it));
        for (n = 0; kvdb_iter_next(it, &kp, &kn, &vp, &vn) == KVDB_OK; n++)
            ;
        CHECK(n == 1000); /* "zz" is not in the snapshot */
        kvdb_iter_close(it);
    }
    CHECK(db->srt_builds - before == 1);
    kvdb_abort(snap);
    CHECK_OK(kvdb_close(db));
}

/* ------------------------------------------------------------------ */
/* long common prefixes: the run prefix (cpl) and the 8 key bytes after
 * it in each entry.  A small model (keys, values, present) is checked
 * against full walks both ways, seeks both ways and bounded ranges; the
 * expected order comes from sorting the model with memcmp. */

#define LP_MAX 64
typedef struct { unsigned char k[LP_MAX]; size_t kl; char v[16]; int present; } t_lpk;

static int t_lp_cmp(const unsigned char *a, size_t an, const unsigned char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an < bn ? -1 : an > bn);
}

static int t_lp_qcmp(const void *x, const void *y)
{
    const t_lpk *a = *(const t_lpk *const *)x, *b = *(const t_lpk *const *)y;
    return t_lp_cmp(a->k, a->kl, b->k, b->kl);
}

/* "k=v ..." of the present keys of the sorted list s[from, to) (to < from: backwards) */
static void t_lp_want(char *out, size_t cap, t_lpk **s, long from, long to, int max)
{
    long i;
    int n = 0;
    out[0] = 0;
    for (i = from; from <= to ? i < to : i > to; i += from <= to ? 1 : -1) {
        if (max && n == max) break;
        if (out[0]) t_cat(out, cap, " ");
        t_esc(out, cap, s[i]->k, s[i]->kl);
        t_cat(out, cap, "=");
        t_cat(out, cap, s[i]->v);
        n++;
    }
}

/* the model's present keys, sorted; returns how many */
static long t_lp_sorted(t_lpk *m, size_t nm, t_lpk **s)
{
    size_t i;
    long n = 0;
    for (i = 0; i < nm; i++)
        if (m[i].present) s[n++] = &m[i];
    qsort(s, (size_t)n, sizeof *s, t_lp_qcmp);
    return n;
}

/* first index of s[0, n) with key >= p (> p if strict) */
static long t_lp_lower(t_lpk **s, long n, const unsigned char *p, size_t pl, int strict)
{
    long i;
    for (i = 0; i < n; i++) {
        int c = t_lp_cmp(s[i]->k, s[i]->kl, p, pl);
        if (c > 0 || (c == 0 && !strict)) break;
    }
    return i;
}

static char t_lp_buf[1 << 14];

/* Everything about the model m as seen by transaction t. */
static void t_lp_verify(int line, kvdb_txn *t, t_lpk *m, size_t nm, const t_lpk *probes, size_t np)
{
    t_lpk *s[256];
    long n = t_lp_sorted(m, nm, s), a, b;
    size_t i, j;
    kvdb_iter *fw = NULL, *rv = NULL;
    t_lp_want(t_lp_buf, sizeof t_lp_buf, s, 0, n, 0);
    t_expect_range(line, t, NULL, 0, NULL, 0, 0, t_lp_buf);
    t_lp_want(t_lp_buf, sizeof t_lp_buf, s, n - 1, -1, 0);
    t_expect_range(line, t, NULL, 0, NULL, 0, REV, t_lp_buf);
    if (kvdb_iter_range(t, NULL, 0, NULL, 0, 0, &fw) != KVDB_OK || kvdb_iter_range(t, NULL, 0, NULL, 0, REV, &rv) != KVDB_OK) {
        tu_fail(__FILE__, line, "kvdb_iter_range [%s]", kvdb_errmsg());
        return;
    }
    for (i = 0; i < np && !tu_cur_failed; i++) {
        const t_lpk *p = &probes[i];
        a = t_lp_lower(s, n, p->k, p->kl, 0);   /* forward: first >= p */
        t_lp_want(t_lp_buf, sizeof t_lp_buf, s, a, n, 3);
        t_expect_seek(line, fw, p->k, p->kl, 3, t_lp_buf);
        b = t_lp_lower(s, n, p->k, p->kl, 1);   /* reverse: last <= p */
        t_lp_want(t_lp_buf, sizeof t_lp_buf, s, b - 1, -1, 3);
        t_expect_seek(line, rv, p->k, p->kl, 3, t_lp_buf);
        if (tu_cur_failed) {
            t_lp_buf[0] = 0;
            t_esc(t_lp_buf, sizeof t_lp_buf, p->k, p->kl);
            printf("# probe %s\n", t_lp_buf);
        }
    }
    kvdb_iter_close(fw);
    kvdb_iter_close(rv);
    /* bounded ranges [p_i, p_j), both ways, over a sample of pairs */
    for (i = 0; i < np && !tu_cur_failed; i += 3)
        for (j = i % 5; j < np && !tu_cur_failed; j += 7) {
            const t_lpk *lo = &probes[i], *hi = &probes[j];
            a = t_lp_lower(s, n, lo->k, lo->kl, 0);
            b = t_lp_lower(s, n, hi->k, hi->kl, 0);
            if (b < a) b = a;
            t_lp_want(t_lp_buf, sizeof t_lp_buf, s, a, b, 0);
            t_expect_range(line, t, lo->k, lo->kl, hi->k, hi->kl, 0, t_lp_buf);
            t_lp_want(t_lp_buf, sizeof t_lp_buf, s, b - 1, a - 1, 0);
            t_expect_range(line, t, lo->k, lo->kl, hi->k, hi->kl, REV, t_lp_buf);
        }
}

static size_t t_lp_key(t_lpk *k, const char *pfx, const void *rest, size_t rl)
{
    size_t pl = strlen(pfx);
    memcpy(k->k, pfx, pl);
    if (rl) memcpy(k->k + pl, rest, rl);
    k->kl = pl + rl;
    return k->kl;
}

#define LPK(pfx, rest) t_lp_key(&m[nm++], pfx, rest, sizeof(rest) - 1)

/* keys around a 24-byte common prefix P: P itself, P + NULs (padding vs
 * real 0x00 at 7, 8 and 9 bytes after P), 0xff runs, keys sharing the 8
 * bytes after P and differing later, prefixes of each other */
#define LP_P "tenant/0000000000000042/"
static size_t t_lp_setA(t_lpk *m, size_t nm)
{
    LPK(LP_P, "");
    LPK(LP_P, "\0");
    LPK(LP_P, "\0\0\0\0\0\0\0");
    LPK(LP_P, "\0\0\0\0\0\0\0\0");
    LPK(LP_P, "\0\0\0\0\0\0\0\0\0");
    LPK(LP_P, "\0\0\0\0\0\0\0\0\1");
    LPK(LP_P, "\1");
    LPK(LP_P, "0000000001");
    LPK(LP_P, "0000000001\0");
    LPK(LP_P, "0000000002");
    LPK(LP_P, "000000000");
    LPK(LP_P, "00000000");
    LPK(LP_P, "ABCDEFGH");
    LPK(LP_P, "ABCDEFGH\0");
    LPK(LP_P, "ABCDEFGH1");
    LPK(LP_P, "ABCDEFGH2");
    LPK(LP_P, "ABCDEFGH2\xff");
    LPK(LP_P, "\x7f\xff\xff\xff\xff\xff\xff\xff\xff");
    LPK(LP_P, "\xff");
    LPK(LP_P, "\xff\xff\xff\xff\xff\xff\xff\xff");
    LPK(LP_P, "\xff\xff\xff\xff\xff\xff\xff\xff\0");
    LPK(LP_P, "\xff\xff\xff\xff\xff\xff\xff\xff\xff");
    return nm;
}

/* probes: every key, the key + NUL, the key with its last byte +-1, and
 * keys before, inside and after the common prefixes */
static size_t t_lp_probes(const t_lpk *m, size_t nm, t_lpk *p, size_t cap)
{
    static const char *const extra[] = { "", "t", "tenant", "tenant/", "tenant/0000000000000042",
                                         "tenant/0000000000000041\xff", "tenant/00000000000000420",
                                         "tenant/0000000000000042/\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
                                         "tenant/0000000000000043", "tenant/000000000000004",
                                         "tenant/1", "tenant/1/00000000000000", "tenant/2", "zz", "zzz", "zzz1\xff",
                                         "\xff\xff\xff" };
    size_t n = 0, i;
    for (i = 0; i < nm && n + 4 <= cap; i++) {
        const t_lpk *k = &m[i];
        p[n] = *k;
        n++;
        p[n] = *k;
        if (p[n].kl < LP_MAX) p[n].k[p[n].kl++] = 0;
        n++;
        if (k->kl) {
            p[n] = *k;
            p[n].k[p[n].kl - 1]++;
            n++;
            p[n] = *k;
            p[n].k[p[n].kl - 1]--;
            n++;
        }
    }
    for (i = 0; i < sizeof extra / sizeof extra[0] && n < cap; i++) {
        t_lp_key(&p[n], extra[i], NULL, 0);
        n++;
    }
    return n;
}

/* every key in each layout: one run with the long prefix, a run per key
 * (merged at shrinking prefixes), the write transaction's own writes */
static void iter_long_common_prefix(void)
{
    static t_lpk m[64], probes[320];
    size_t nm = t_lp_setA(m, 0), np, i;
    int lay;
    for (i = 0; i < nm; i++) {
        snprintf(m[i].v, sizeof m[i].v, "%u", (unsigned)i);
        m[i].present = 1;
    }
    np = t_lp_probes(m, nm, probes, sizeof probes / sizeof probes[0]);
    for (lay = 0; lay < L_N && !tu_cur_failed; lay++) {
        t_kv kv[64];
        kvdb *db = t_open(lay == 1);
        kvdb_txn *t;
        REQUIRE(db);
        for (i = 0; i < nm; i++) {
            kv[i].k = (const char *)m[(i * 7) % nm].k; /* not in key order */
            kv[i].kl = m[(i * 7) % nm].kl;
            kv[i].v = m[(i * 7) % nm].v;
            kv[i].vl = strlen(m[(i * 7) % nm].v);
        }
        t = t_load(db, kv, nm, lay);
        REQUIRE(t);
        if (lay == L_ONE_COMMIT) { /* the case meant: one run, prefix P */
            kvdb_iter *it = NULL;
            REQUIRE_OK(kvdb_iter_range(t, NULL, 0, NULL, 0, 0, &it));
            CHECK(it->nruns == 1 && it->runs[0]->cpl == strlen(LP_P) && it->runs[0]->n == nm);
            kvdb_iter_close(it);
        }
        t_lp_verify(__LINE__, t, m, nm, probes, np);
        if (tu_cur_failed) printf("# layout: %s\n", t_layout_name[lay]);
        kvdb_abort(t);
        CHECK_OK(kvdb_close(db));
    }
}

/* Runs with different prefixes: P-keys (cpl 24), then keys of a sibling
 * tenant (merged: cpl 22), then another prefix "tenant/1" (merged: cpl 7),
 * then a small run with nothing in common ("zzz"), then overwrites and
 * deletes in small runs of their own (cpl = the whole key) -- iterators
 * across runs of different prefixes, and a write transaction on top. */
static void iter_prefix_merges(void)
{
    static t_lpk m[128], probes[600];
    size_t nm = 0, np, i, nA, nB, nC;
    int inmem;
    nm = t_lp_setA(m, 0);
    nA = nm;
    for (i = 0; i < nA; i++) { /* the same suffixes under a sibling prefix */
        m[nm] = m[i];
        m[nm].k[22] = '4';
        m[nm].k[23] = '3';
        nm++;
    }
    nB = nm;
    for (i = 0; i < 2 * nA; i++) {
        char b[40];
        snprintf(b, sizeof b, "tenant/1/%014zu", i * 37 % 1000);
        t_lp_key(&m[nm++], b, i % 3 ? "" : "\0\xff", i % 3 ? 0 : 2);
    }
    nC = nm;
    t_lp_key(&m[nm++], "zzz1", NULL, 0);
    t_lp_key(&m[nm++], "zzz2", NULL, 0);
    for (i = 0; i < nm; i++) snprintf(m[i].v, sizeof m[i].v, "%u", (unsigned)i);
    np = t_lp_probes(m, nm, probes, sizeof probes / sizeof probes[0]);
    for (inmem = 0; inmem < 2 && !tu_cur_failed; inmem++) {
        kvdb *db = t_open(inmem);
        kvdb_txn *t = NULL, *old = NULL;
        size_t from = 0, to, step;
        REQUIRE(db);
        for (step = 0; step < 4; step++) { /* A, B, C, "zzz" */
            to = step == 0 ? nA : step == 1 ? nB : step == 2 ? nC : nm;
            REQUIRE_OK(kvdb_begin(db, 0, &t));
            for (i = from; i < to; i++) {
                CHECK_OK(kvdb_txn_put(t, m[i].k, m[i].kl, m[i].v, strlen(m[i].v)));
                m[i].present = 1;
            }
            REQUIRE_OK(kvdb_commit(t));
            from = to;
            REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
            t_lp_verify(__LINE__, t, m, nm, probes, np);
            kvdb_abort(t);
            /* the case meant: the shared runs and their prefixes */
            if (step == 0) CHECK(db->nruns == 1 && db->runs[0]->cpl == 24);
            if (step == 1) CHECK(db->nruns == 1 && db->runs[0]->cpl == 22);
            if (step == 2) CHECK(db->nruns == 1 && db->runs[0]->cpl == 7);
            if (step == 3) CHECK(db->nruns == 2 && db->runs[0]->cpl == 7 && db->runs[1]->cpl == 3);
            if (tu_cur_failed) {
                printf("# step %zu, %s\n", step, inmem ? "in memory" : "file");
                break;
            }
        }
        REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &old)); /* a snapshot of all that */
        /* overwrites and deletes, a run each: tiny runs with whole-key prefixes */
        for (i = 0; i < nm && !tu_cur_failed; i += 5) {
            if (i % 2) {
                CHECK_OK(kvdb_del(db, m[i].k, m[i].kl));
                m[i].present = 0;
            } else {
                snprintf(m[i].v, sizeof m[i].v, "n%u", (unsigned)i);
                CHECK_OK(kvdb_put(db, m[i].k, m[i].kl, m[i].v, strlen(m[i].v)));
            }
            if (i % 15 == 0) {
                REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
                t_lp_verify(__LINE__, t, m, nm, probes, np);
                kvdb_abort(t);
            }
        }
        CHECK(db->nruns >= 3);
        /* a write transaction's own writes: another prefix again */
        REQUIRE_OK(kvdb_begin(db, 0, &t));
        for (i = 1; i < nA; i += 4) {
            snprintf(m[i].v, sizeof m[i].v, "w%u", (unsigned)i);
            CHECK_OK(kvdb_txn_put(t, m[i].k, m[i].kl, m[i].v, strlen(m[i].v)));
            m[i].present = 1;
        }
        CHECK_OK(kvdb_txn_del(t, m[nB].k, m[nB].kl));
        m[nB].present = 0;
        t_lp_verify(__LINE__, t, m, nm, probes, np);
        CHECK_OK(kvdb_commit(t));
        REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
        t_lp_verify(__LINE__, t, m, nm, probes, np);
        kvdb_abort(t);
        /* the old snapshot: everything present with the first values */
        for (i = 0; i < nm; i++) {
            m[i].present = 1;
            snprintf(m[i].v, sizeof m[i].v, "%u", (unsigned)i);
        }
        t_lp_verify(__LINE__, old, m, nm, probes, np);
        kvdb_abort(old);
        CHECK_OK(kvdb_close(db));
        for (i = 0; i < nm; i++) m[i].present = 0;
    }
}

int main(void)
{
    tu_tmpdir("iter");
    RUN(iter_empty_db);
    RUN(iter_single_key);
    RUN(iter_prefix_chain);
    RUN(iter_prefix_ff);
    RUN(iter_reverse_bounds);
    RUN(iter_seek);
    RUN(iter_isolation);
    RUN(iter_many_snapshots);
    RUN(iter_write_txn);
    RUN(iter_left_open);
    RUN(iter_runs_bounded);
    RUN(iter_tombstone_hides);
    RUN(iter_overwrite);
    RUN(iter_pointer_lifetime);
    RUN(iter_bad_args);
    RUN(iter_long_keys);
    RUN(iter_after_reopen);
    RUN(iter_private_run_reused);
    RUN(iter_long_common_prefix);
    RUN(iter_prefix_merges);
    tu_rmrf();
    TEST_MAIN_END();
}
