/*
 * test/api.c -- the API contract of kvdb.h, one RUN per behaviour.
 *
 * Uses only the public API (plus POSIX for file manipulation and xxhash.h
 * for the header checksum), so it does not depend on engine internals.
 */
#include "../kvdb.c"
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <xxhash.h>

/* a string literal as (pointer, length) */
#define K(s) (s), (sizeof(s) - 1)

/* ------------------------------------------------------------------ */
/* helpers                                                            */

/* like tu_path, but from a ring of 32 buffers so a test can hold several */
static const char *t_path(const char *name)
{
    static char buf[32][640];
    static int i;
    i = (i + 1) & 31;
    snprintf(buf[i], sizeof buf[i], "%s/%s", tu_dir, name);
    return buf[i];
}

static long long t_file_size(const char *p)
{
    struct stat st;
    if (stat(p, &st) != 0) return -1;
    return (long long)st.st_size;
}

static int t_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* whole file into a malloc'ed buffer (NULL on error; *n set) */
static unsigned char *t_slurp(const char *p, size_t *n)
{
    FILE *f = fopen(p, "rb");
    unsigned char *buf;
    long len;
    *n = 0;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return NULL;
    }
    buf = malloc((size_t)len + 1);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) { free(buf); buf = NULL; }
    fclose(f);
    if (buf) *n = (size_t)len;
    return buf;
}

static int t_spit(const char *p, const void *d, size_t n)
{
    FILE *f = fopen(p, "wb");
    int ok;
    if (!f) return -1;
    ok = fwrite(d, 1, n, f) == n;
    if (fclose(f) != 0) ok = 0;
    return ok ? 0 : -1;
}

/* 1 if the file at p holds exactly d[0..n) */
static int t_file_is(const char *p, const unsigned char *d, size_t n)
{
    size_t m;
    unsigned char *b = t_slurp(p, &m);
    int same = b && m == n && (n == 0 || memcmp(b, d, n) == 0);
    free(b);
    return same;
}

static void t_sleep_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static uint16_t t_rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t t_rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t t_rd64(const unsigned char *p) { return (uint64_t)t_rd32(p) | ((uint64_t)t_rd32(p + 4) << 32); }
static void t_wr32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}
static void t_wr64(unsigned char *p, uint64_t v) { t_wr32(p, (uint32_t)v); t_wr32(p + 4, (uint32_t)(v >> 32)); }

static const unsigned char T_MAGIC[8] = { 0x89, 'K', 'V', 'D', 'B', '\r', '\n', 0x1a };

/* open with flags and sync mode; records a failure at the caller's line */
static kvdb *t_open_(const char *path, unsigned flags, int sync, const kvdb_allocator *a,
                      const char *file, int line)
{
    kvdb_options o;
    kvdb *db = NULL;
    int rc;
    kvdb_options_init(&o);
    o.flags = flags;
    o.sync = sync;
    o.alloc = a;
    rc = kvdb_open(path, &o, &db);
    if (rc != KVDB_OK || !db) {
        tu_fail(file, line, "kvdb_open(%s) = %d (%s) [%s]", path ? path : "NULL", rc,
                kvdb_strerror(rc), kvdb_errmsg());
        return NULL;
    }
    return db;
}
#define OPEN(path, flags, sync) t_open_((path), (flags), (sync), NULL, __FILE__, __LINE__)
#define OPEN_A(path, flags, sync, a) t_open_((path), (flags), (sync), (a), __FILE__, __LINE__)

static int t_open_rc(const char *path, unsigned flags, kvdb **out)
{
    kvdb_options o;
    kvdb_options_init(&o);
    o.flags = flags;
    return kvdb_open(path, &o, out);
}

static char t_why[1024];

/* 1 if kvdb_get finds exactly v[0..vl) */
static int t_get_eq(kvdb *db, const void *k, size_t kl, const void *v, size_t vl)
{
    unsigned char small[512];
    unsigned char *buf = vl + 1 <= sizeof small ? small : malloc(vl + 1);
    size_t got = (size_t)-1;
    int rc, ok;
    if (!buf) { snprintf(t_why, sizeof t_why, "test out of memory"); return 0; }
    rc = kvdb_get(db, k, kl, buf, vl + 1, &got);
    ok = rc == KVDB_OK && got == vl && (vl == 0 || memcmp(buf, v, vl) == 0);
    if (!ok)
        snprintf(t_why, sizeof t_why, "rc %d (%s), len %zu want %zu%s [%.300s]", rc, kvdb_strerror(rc),
                 got, vl, rc == KVDB_OK && got == vl ? ", content differs" : "", kvdb_errmsg());
    if (buf != small) free(buf);
    return ok;
}

/* 1 if kvdb_txn_get finds exactly v[0..vl) */
static int t_tget_eq(kvdb_txn *t, const void *k, size_t kl, const void *v, size_t vl)
{
    const void *p = NULL;
    size_t got = (size_t)-1;
    int rc = kvdb_txn_get(t, k, kl, &p, &got);
    int ok = rc == KVDB_OK && got == vl && (vl == 0 || (p && memcmp(p, v, vl) == 0));
    if (!ok)
        snprintf(t_why, sizeof t_why, "rc %d (%s), len %zu want %zu%s [%.300s]", rc, kvdb_strerror(rc),
                 got, vl, rc == KVDB_OK && got == vl ? ", content differs" : "", kvdb_errmsg());
    return ok;
}

#define CHECK_GET(db, ...) do { if (!t_get_eq((db), __VA_ARGS__)) \
    tu_fail(__FILE__, __LINE__, "kvdb_get(%s): %s", #__VA_ARGS__, t_why); } while (0)
#define CHECK_TGET(t, ...) do { if (!t_tget_eq((t), __VA_ARGS__)) \
    tu_fail(__FILE__, __LINE__, "kvdb_txn_get(%s): %s", #__VA_ARGS__, t_why); } while (0)
#define CHECK_ABSENT(db, ...) CHECK_RC(kvdb_get((db), __VA_ARGS__, NULL, 0, NULL), KVDB_NOTFOUND)
#define CHECK_TABSENT(t, ...) do { const void *p_; size_t n_; \
    CHECK_RC(kvdb_txn_get((t), __VA_ARGS__, &p_, &n_), KVDB_NOTFOUND); } while (0)

static int t_stat(kvdb *db, struct kvdb_stat *st)
{
    memset(st, 0, sizeof *st);
    return kvdb_stat(db, st);
}

/* ------------------------------------------------------------------ */
/* options, open, close                                               */

/* The library's version is the header's, and the numbers agree with the string. */
static void test_version(void)
{
    char want[32];
    CHECK(kvdb_version() != NULL && strcmp(kvdb_version(), KVDB_VERSION_STRING) == 0);
    snprintf(want, sizeof want, "%d.%d.%d", KVDB_VERSION_MAJOR, KVDB_VERSION_MINOR, KVDB_VERSION_PATCH);
    CHECK(strcmp(want, KVDB_VERSION_STRING) == 0);
    CHECK(KVDB_VERSION_NUMBER == KVDB_VERSION_MAJOR * 1000000 + KVDB_VERSION_MINOR * 1000 + KVDB_VERSION_PATCH);
}

static void test_options_defaults(void)
{
    kvdb_options o;
    memset(&o, 0x5a, sizeof o);
    kvdb_options_init(&o);
    CHECK(o.flags == 0);
    CHECK(o.sync == KVDB_SYNC_FULL);
    CHECK(o.sync_bytes == 0 || o.sync_bytes == 16u * 1024 * 1024);
    CHECK(o.vfs == NULL || o.vfs == kvdb_vfs_posix());
    CHECK(o.alloc == NULL);
}

static void test_open_null_options_creates(void)
{
    const char *p = t_path("create.db");
    kvdb_options o;
    kvdb *db = (kvdb *)&o; /* non-NULL sentinel */
    CHECK(!t_exists(p));
    REQUIRE_OK(kvdb_open(p, NULL, &db));
    REQUIRE(db != NULL);
    CHECK(t_file_size(p) >= 64);
    CHECK_OK(kvdb_put(db, K("hello"), K("world")));
    CHECK_OK(kvdb_close(db));

    /* reopen without KVDB_CREATE sees the data */
    kvdb_options_init(&o);
    db = NULL;
    REQUIRE_OK(kvdb_open(p, &o, &db));
    CHECK_GET(db, K("hello"), K("world"));
    CHECK_ABSENT(db, K("hell"));
    CHECK_OK(kvdb_close(db));

    /* open with o == NULL on an existing database also works */
    db = NULL;
    REQUIRE_OK(kvdb_open(p, NULL, &db));
    CHECK_GET(db, K("hello"), K("world"));
    CHECK_OK(kvdb_close(db));

    CHECK_OK(kvdb_close(NULL));

    /* a failed open sets *out to NULL */
    db = (kvdb *)&o;
    CHECK(kvdb_open(t_path("no-such-dir/x.db"), NULL, &db) != KVDB_OK);
    CHECK(db == NULL);
}

/* ------------------------------------------------------------------ */
/* put / get / del                                                    */

static void test_put_get_del(void)
{
    const char *p = t_path("basic.db");
    long long sz;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_ABSENT(db, K("a"));
    CHECK_OK(kvdb_put(db, K("a"), K("1")));
    CHECK_OK(kvdb_put(db, K("b"), K("22")));
    CHECK_GET(db, K("a"), K("1"));
    CHECK_GET(db, K("b"), K("22"));
    CHECK_OK(kvdb_put(db, K("a"), K("one-one")));
    CHECK_GET(db, K("a"), K("one-one"));
    CHECK_GET(db, K("b"), K("22"));
    CHECK_OK(kvdb_del(db, K("a")));
    CHECK_ABSENT(db, K("a"));
    CHECK_GET(db, K("b"), K("22"));

    /* deleting a deleted key and a never-seen key: NOTFOUND, nothing written */
    sz = t_file_size(p);
    CHECK_RC(kvdb_del(db, K("a")), KVDB_NOTFOUND);
    CHECK_RC(kvdb_del(db, K("never")), KVDB_NOTFOUND);
    CHECK(t_file_size(p) == sz);

    /* a deleted key can come back */
    CHECK_OK(kvdb_put(db, K("a"), K("3")));
    CHECK_GET(db, K("a"), K("3"));
    CHECK_OK(kvdb_close(db));

    db = OPEN(p, 0, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_GET(db, K("a"), K("3"));
    CHECK_GET(db, K("b"), K("22"));
    CHECK_ABSENT(db, K("never"));
    CHECK_OK(kvdb_close(db));
}

static void test_get_buffer_semantics(void)
{
    const char *p = t_path("getbuf.db");
    unsigned char buf[32];
    size_t n;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_OK(kvdb_put(db, K("k"), K("0123456789")));

    /* cap smaller than the value: copies cap bytes, *vlen is the full length */
    memset(buf, '#', sizeof buf);
    n = 0;
    CHECK_OK(kvdb_get(db, K("k"), buf, 4, &n));
    CHECK(n == 10);
    CHECK(memcmp(buf, "0123", 4) == 0);
    CHECK(buf[4] == '#');

    /* length query */
    n = 0;
    CHECK_OK(kvdb_get(db, K("k"), NULL, 0, &n));
    CHECK(n == 10);

    /* cap 0 with a real buffer: nothing copied */
    memset(buf, '#', sizeof buf);
    n = 0;
    CHECK_OK(kvdb_get(db, K("k"), buf, 0, &n));
    CHECK(n == 10);
    CHECK(buf[0] == '#');

    /* cap larger: exactly the value, nothing beyond it touched */
    memset(buf, '#', sizeof buf);
    n = 0;
    CHECK_OK(kvdb_get(db, K("k"), buf, sizeof buf, &n));
    CHECK(n == 10);
    CHECK(memcmp(buf, "0123456789", 10) == 0);
    CHECK(buf[10] == '#' && buf[31] == '#');

    /* exact cap */
    memset(buf, '#', sizeof buf);
    CHECK_OK(kvdb_get(db, K("k"), buf, 10, &n));
    CHECK(memcmp(buf, "0123456789", 10) == 0 && buf[10] == '#');

    /* vlen may be NULL */
    memset(buf, '#', sizeof buf);
    CHECK_OK(kvdb_get(db, K("k"), buf, sizeof buf, NULL));
    CHECK(memcmp(buf, "0123456789", 10) == 0);

    /* absent: NOTFOUND, buffer untouched */
    memset(buf, '#', sizeof buf);
    CHECK_RC(kvdb_get(db, K("missing"), buf, sizeof buf, &n), KVDB_NOTFOUND);
    CHECK(buf[0] == '#');
    CHECK_OK(kvdb_close(db));
}

static void test_empty_value(void)
{
    const char *p = t_path("empty.db");
    unsigned char buf[8];
    size_t n;
    kvdb_txn *t;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_OK(kvdb_put(db, K("e"), "x", 0));
    CHECK_OK(kvdb_put(db, K("n"), NULL, 0)); /* NULL with length 0 is fine */
    n = 99;
    memset(buf, '#', sizeof buf);
    CHECK_OK(kvdb_get(db, K("e"), buf, sizeof buf, &n));
    CHECK(n == 0);
    CHECK(buf[0] == '#');
    n = 99;
    CHECK_OK(kvdb_get(db, K("n"), NULL, 0, &n));
    CHECK(n == 0);
    CHECK_ABSENT(db, K("x"));

    /* in a transaction */
    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
    CHECK_TGET(t, K("e"), "", 0);
    CHECK_TABSENT(t, K("x"));
    CHECK_OK(kvdb_commit(t));

    /* deletable like any value; a non-empty value can become empty */
    CHECK_OK(kvdb_put(db, K("v"), K("full")));
    CHECK_OK(kvdb_put(db, K("v"), "", 0));
    CHECK_GET(db, K("v"), "", 0);
    CHECK_OK(kvdb_del(db, K("n")));
    CHECK_ABSENT(db, K("n"));
    CHECK_OK(kvdb_close(db));

    db = OPEN(p, 0, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_GET(db, K("e"), "", 0);
    CHECK_GET(db, K("v"), "", 0);
    CHECK_ABSENT(db, K("n"));
    CHECK_OK(kvdb_close(db));
}

static void test_binary_keys(void)
{
    static const struct { const char *k; size_t kl; } keys[] = {
        { "a", 1 }, { "a\0", 2 }, { "a\0b", 3 }, { "a\0c", 3 }, { "\0", 1 },
        { "\0\0", 2 }, { "\0\0\0", 3 }, { "b\0a", 3 }, { "\xff", 1 }, { "\xff\0", 2 },
    };
    const size_t nk = sizeof keys / sizeof keys[0];
    const char *p = t_path("binary.db");
    const char *p2 = t_path("bytes.db");
    unsigned char v[8], kb;
    size_t i;
    int pass, c;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    for (i = 0; i < nk; i++) {
        v[0] = 0; v[1] = (unsigned char)i; v[2] = 0;
        CHECK_OK(kvdb_put(db, keys[i].k, keys[i].kl, v, 3));
    }
    CHECK_OK(kvdb_del(db, K("a\0b")));
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < nk; i++) {
            v[0] = 0; v[1] = (unsigned char)i; v[2] = 0;
            if (i == 2) CHECK_ABSENT(db, keys[i].k, keys[i].kl);
            else CHECK_GET(db, keys[i].k, keys[i].kl, v, 3);
        }
        CHECK_ABSENT(db, K("a\0d"));
        CHECK_ABSENT(db, K("\0\0\0\0"));
        CHECK_OK(kvdb_close(db));
        db = OPEN(p, 0, KVDB_SYNC_OFF);
        REQUIRE(db);
    }
    CHECK_OK(kvdb_close(db));

    /* all 256 one-byte keys, values holding the byte and NULs */
    db = OPEN(p2, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    for (c = 0; c < 256; c++) {
        kb = (unsigned char)c;
        v[0] = kb; v[1] = 0; v[2] = (unsigned char)~kb;
        CHECK_OK(kvdb_put(db, &kb, 1, v, 3));
    }
    for (pass = 0; pass < 2; pass++) {
        for (c = 0; c < 256; c++) {
            kb = (unsigned char)c;
            v[0] = kb; v[1] = 0; v[2] = (unsigned char)~kb;
            CHECK_GET(db, &kb, 1, v, 3);
        }
        if (pass == 0) {
            struct kvdb_stat st;
            CHECK_OK(t_stat(db, &st));
            CHECK(st.keys == 256);
            CHECK_OK(kvdb_close(db));
            db = OPEN(p2, 0, KVDB_SYNC_OFF);
            REQUIRE(db);
        }
    }
    CHECK_OK(kvdb_close(db));
}

static void test_key_limits(void)
{
    const char *p = t_path("keylim.db");
    unsigned char *k = malloc(65537), *k2 = malloc(65536);
    long long sz;
    kvdb_txn *t;
    size_t i;
    kvdb *db;
    REQUIRE(k && k2);
    for (i = 0; i < 65537; i++) k[i] = (unsigned char)(i * 7 + 3);
    memcpy(k2, k, 65535);
    k2[65534] ^= 1; /* differs only in the last byte */
    db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    if (!db) { free(k); free(k2); return; }
    CHECK_OK(kvdb_put(db, k, 65535, K("max")));
    CHECK_OK(kvdb_put(db, k2, 65535, K("max2")));
    CHECK_GET(db, k, 65535, K("max"));
    CHECK_GET(db, k2, 65535, K("max2"));
    CHECK_ABSENT(db, k, 65534);

    sz = t_file_size(p);
    CHECK_RC(kvdb_put(db, k, 65536, K("big")), KVDB_ETOOBIG);
    CHECK_RC(kvdb_put(db, k, 65537, K("big")), KVDB_ETOOBIG);
    CHECK(t_file_size(p) == sz);
    if (kvdb_begin(db, 0, &t) == KVDB_OK) {
        CHECK_RC(kvdb_txn_put(t, k, 65536, K("big")), KVDB_ETOOBIG);
        CHECK_OK(kvdb_txn_put(t, k, 65535, K("in-txn")));
        CHECK_TGET(t, k, 65535, K("in-txn"));
        kvdb_abort(t);
    } else {
        CHECK(0);
    }
    CHECK(t_file_size(p) == sz);
    CHECK_GET(db, k, 65535, K("max"));
    CHECK_OK(kvdb_close(db));

    db = OPEN(p, 0, KVDB_SYNC_OFF);
    if (db) {
        CHECK_GET(db, k, 65535, K("max"));
        CHECK_GET(db, k2, 65535, K("max2"));
        CHECK_OK(kvdb_del(db, k, 65535));
        CHECK_ABSENT(db, k, 65535);
        CHECK_GET(db, k2, 65535, K("max2"));
        CHECK_OK(kvdb_close(db));
    }
    free(k);
    free(k2);
}

static void test_value_limits(void)
{
    const char *p = t_path("vallim.db");
    const size_t n8 = (size_t)8 << 20;
    unsigned char *v = malloc(n8), one = 'x';
    uint64_t s = 8;
    long long sz;
    kvdb_txn *t;
    size_t i;
    kvdb *db;
    REQUIRE(v);
    for (i = 0; i < n8; i++) v[i] = (unsigned char)tu_rand(&s);
    db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    if (!db) { free(v); return; }
    CHECK_OK(kvdb_put(db, K("eight"), v, n8));
    CHECK_GET(db, K("eight"), v, n8);

    /* too long a value: refused before the value is read */
    sz = t_file_size(p);
    if (kvdb_begin(db, 0, &t) == KVDB_OK) {
        CHECK_RC(kvdb_txn_put(t, K("huge"), &one, (size_t)KVDB_MAX_VALUE + 1), KVDB_ETOOBIG);
        CHECK_TABSENT(t, K("huge"));
        kvdb_abort(t);
    } else {
        CHECK(0);
    }
    CHECK(t_file_size(p) == sz);
    CHECK_ABSENT(db, K("huge"));
    CHECK_OK(kvdb_close(db));

    db = OPEN(p, 0, KVDB_SYNC_OFF);
    if (db) {
        CHECK_GET(db, K("eight"), v, n8);
        CHECK_OK(kvdb_close(db));
    }
    free(v);
}

static void test_einval(void)
{
    const char *p = t_path("einval.db");
    long long sz;
    kvdb_txn *t = NULL;
    kvdb *db2 = NULL;
    kvdb_options o;
    struct kvdb_stat st;
    const void *vp;
    size_t n;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_OK(kvdb_put(db, K("k"), K("v")));
    sz = t_file_size(p);

    CHECK_RC(kvdb_put(db, "", 0, "v", 1), KVDB_EINVAL);
    CHECK_RC(kvdb_put(db, NULL, 3, "v", 1), KVDB_EINVAL);
    CHECK_RC(kvdb_put(db, NULL, 0, "v", 1), KVDB_EINVAL);
    CHECK_RC(kvdb_put(db, "k", 1, NULL, 5), KVDB_EINVAL);
    CHECK_RC(kvdb_put(NULL, "k", 1, "v", 1), KVDB_EINVAL);
    CHECK_RC(kvdb_get(NULL, "k", 1, NULL, 0, &n), KVDB_EINVAL);
    CHECK_RC(kvdb_get(db, "", 0, NULL, 0, &n), KVDB_EINVAL);
    CHECK_RC(kvdb_get(db, NULL, 1, NULL, 0, &n), KVDB_EINVAL);
    CHECK_RC(kvdb_get(db, "k", 1, NULL, 5, &n), KVDB_EINVAL); /* NULL buf needs cap 0 */
    CHECK_RC(kvdb_del(NULL, "k", 1), KVDB_EINVAL);
    CHECK_RC(kvdb_del(db, "", 0), KVDB_EINVAL);
    CHECK_RC(kvdb_del(db, NULL, 1), KVDB_EINVAL);
    CHECK_RC(kvdb_begin(NULL, 0, &t), KVDB_EINVAL);
    CHECK_RC(kvdb_begin(db, 0, NULL), KVDB_EINVAL);
    CHECK_RC(kvdb_stat(NULL, &st), KVDB_EINVAL);
    CHECK_RC(kvdb_stat(db, NULL), KVDB_EINVAL);
    CHECK_RC(kvdb_sync(NULL), KVDB_EINVAL);
    CHECK_RC(kvdb_commit(NULL), KVDB_EINVAL);
    kvdb_abort(NULL); /* no-op */
    CHECK_RC(kvdb_txn_get(NULL, "k", 1, &vp, &n), KVDB_EINVAL);
    CHECK_RC(kvdb_txn_put(NULL, "k", 1, "v", 1), KVDB_EINVAL);
    CHECK_RC(kvdb_txn_del(NULL, "k", 1), KVDB_EINVAL);

    t = NULL;
    REQUIRE_OK(kvdb_begin(db, 0, &t));
    CHECK_RC(kvdb_txn_put(t, "", 0, "v", 1), KVDB_EINVAL);
    CHECK_RC(kvdb_txn_put(t, NULL, 1, "v", 1), KVDB_EINVAL);
    CHECK_RC(kvdb_txn_put(t, "k", 1, NULL, 3), KVDB_EINVAL);
    CHECK_RC(kvdb_txn_get(t, "", 0, &vp, &n), KVDB_EINVAL);
    CHECK_RC(kvdb_txn_get(t, NULL, 1, &vp, &n), KVDB_EINVAL);
    CHECK_RC(kvdb_txn_del(t, "", 0), KVDB_EINVAL);
    CHECK_RC(kvdb_txn_del(t, NULL, 1), KVDB_EINVAL);
    CHECK_TGET(t, K("k"), K("v"));
    CHECK_OK(kvdb_txn_put(t, K("k2"), NULL, 0));
    CHECK_OK(kvdb_commit(t));
    CHECK_GET(db, K("k"), K("v"));
    CHECK_GET(db, K("k2"), "", 0);
    sz = t_file_size(p);

    /* bad open arguments */
    CHECK_RC(kvdb_open(NULL, NULL, &db2), KVDB_EINVAL);
    CHECK(db2 == NULL);
    CHECK_RC(kvdb_open(t_path("einval2.db"), NULL, NULL), KVDB_EINVAL);
    CHECK(!t_exists(t_path("einval2.db")));
    kvdb_options_init(&o);
    o.flags = KVDB_CREATE;
    o.sync = 7;
    db2 = NULL;
    CHECK_RC(kvdb_open(t_path("einval3.db"), &o, &db2), KVDB_EINVAL);
    CHECK(db2 == NULL);
    CHECK(!t_exists(t_path("einval3.db")));
    if (db2) kvdb_close(db2);

    CHECK(t_file_size(p) == sz);
    CHECK_OK(kvdb_close(db));
}

static void *t_al_malloc(void *ctx, size_t n) { (void)ctx; return malloc(n); }
static void *t_al_realloc(void *ctx, void *p, size_t n) { (void)ctx; return realloc(p, n); }
static void t_al_free(void *ctx, void *p) { (void)ctx; free(p); }

/* Every option kvdb_open checks, one at a time: KVDB_EINVAL with a message
 * naming the call, no handle, no file; then the other calls' argument
 * checks, each refusing before it writes anything. */
static void test_einval_options(void)
{
    const char *p = t_path("einval-opt.db");
    kvdb_allocator al;
    kvdb_options o;
    kvdb_check_opts co;
    kvdb_check_stat cs;
    kvdb_txn *t;
    kvdb_iter *it;
    const void *vp;
    size_t n;
    long long sz;
    unsigned char one = 1;
    kvdb *db;
    int i;
    kvdb_options_init(NULL); /* a no-op */
    for (i = 0; i < 8; i++) {
        const char *path = p;
        kvdb_options_init(&o);
        o.flags = KVDB_CREATE;
        al.ctx = NULL;
        al.malloc = t_al_malloc;
        al.realloc = t_al_realloc;
        al.free = t_al_free;
        switch (i) {
        case 0: o.flags |= 0x80; break;
        case 1: path = ""; break;
        case 2: o.flags = KVDB_INMEMORY | KVDB_RDONLY; break;
        case 3: o.sync = -1; break;
        case 4: o.compact_dead_pct = 101; break;
        case 5: al.malloc = NULL; o.alloc = &al; break;
        case 6: al.realloc = NULL; o.alloc = &al; break;
        case 7: al.free = NULL; o.alloc = &al; break;
        }
        db = (kvdb *)&one;
        CHECK_RC(kvdb_open(path, &o, &db), KVDB_EINVAL);
        CHECK(db == NULL);
        if (!strstr(kvdb_errmsg(), "kvdb_open")) tu_fail(__FILE__, __LINE__, "case %d: message \"%s\"", i, kvdb_errmsg());
        CHECK(!t_exists(p));
    }
    /* compact_dead_pct 0 means the default */
    kvdb_options_init(&o);
    o.flags = KVDB_CREATE;
    o.sync = KVDB_SYNC_OFF;
    o.compact_dead_pct = 0;
    REQUIRE_OK(kvdb_open(p, &o, &db));
    CHECK_OK(kvdb_put(db, K("k"), K("v")));
    sz = t_file_size(p);
    t = (kvdb_txn *)&one;
    CHECK_RC(kvdb_begin(db, 0x10, &t), KVDB_EINVAL);
    CHECK(t == NULL);
    CHECK_RC(kvdb_put(db, K("huge"), &one, (size_t)KVDB_MAX_VALUE + 1), KVDB_ETOOBIG);
    CHECK_RC(kvdb_checkpoint(NULL), KVDB_EINVAL);
    CHECK_RC(kvdb_compact(NULL), KVDB_EINVAL);
    CHECK_RC(kvdb_compact_step(NULL, 1), KVDB_EINVAL);
    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
    CHECK_RC(kvdb_txn_get(t, K("k"), NULL, &n), KVDB_EINVAL);
    CHECK_RC(kvdb_txn_get(t, K("k"), &vp, NULL), KVDB_EINVAL);
    CHECK_RC(kvdb_iter_prefix(t, K("k"), 0, NULL), KVDB_EINVAL);
    it = (kvdb_iter *)&one;
    CHECK_RC(kvdb_iter_prefix(NULL, K("k"), 0, &it), KVDB_EINVAL);
    CHECK(it == NULL);
    CHECK_RC(kvdb_iter_range(t, NULL, 0, NULL, 0, 0, NULL), KVDB_EINVAL);
    kvdb_abort(t);
    CHECK(t_file_size(p) == sz);
    CHECK_ABSENT(db, K("huge"));
    CHECK_OK(kvdb_close(db));
    /* check and repair */
    CHECK_RC(kvdb_check("", NULL, &cs), KVDB_EINVAL);
    CHECK_RC(kvdb_repair("", t_path("einval.out"), NULL, &cs), KVDB_EINVAL);
    CHECK_RC(kvdb_repair(NULL, t_path("einval.out"), NULL, &cs), KVDB_EINVAL);
    CHECK_RC(kvdb_repair(p, "", NULL, &cs), KVDB_EINVAL);
    CHECK(!t_exists(t_path("einval.out")));
    memset(&co, 0, sizeof co);
    al.ctx = NULL;
    al.malloc = t_al_malloc;
    al.realloc = NULL;
    al.free = t_al_free;
    co.alloc = &al;
    CHECK_RC(kvdb_check(p, &co, &cs), KVDB_EINVAL);
    CHECK_RC(kvdb_repair(p, t_path("einval.out"), &co, &cs), KVDB_EINVAL);
    CHECK(!t_exists(t_path("einval.out")));
    CHECK_OK(kvdb_check(p, NULL, &cs));
}

/* Calls that have nothing to do: kvdb_sync on a read-only handle,
 * kvdb_checkpoint of an in-memory database (no file, no sidecar); and what
 * kvdb_stat says of an in-memory database's sidecar. */
static void test_nothing_to_do(void)
{
    const char *p = t_path("nothing.db");
    struct kvdb_stat st;
    kvdb_options o;
    kvdb *db;
    db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_OK(kvdb_put(db, K("k"), K("v")));
    CHECK_OK(kvdb_close(db));
    db = OPEN(p, KVDB_RDONLY, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_OK(kvdb_sync(db));
    CHECK_OK(t_stat(db, &st));
    CHECK(st.syncs == 0);
    CHECK_OK(kvdb_close(db));
    kvdb_options_init(&o);
    o.flags = KVDB_INMEMORY;
    REQUIRE_OK(kvdb_open(NULL, &o, &db));
    CHECK_OK(kvdb_put(db, K("k"), K("v")));
    CHECK_OK(kvdb_checkpoint(db));
    CHECK_OK(t_stat(db, &st));
    CHECK(st.sidecar && strcmp(st.sidecar, "none (in-memory)") == 0 && st.sidecar_loaded == 0);
    CHECK_GET(db, K("k"), K("v"));
    CHECK_OK(kvdb_close(db));
}

static void test_strerror(void)
{
    static const int codes[] = {
        KVDB_OK, KVDB_NOTFOUND, KVDB_DONE, KVDB_EINVAL, KVDB_ENOMEM, KVDB_EIO,
        KVDB_ECORRUPT, KVDB_ELOCKED, KVDB_EREADONLY, KVDB_ETOOBIG, KVDB_EFULL,
        KVDB_EVERSION, KVDB_EBUSY, KVDB_ENOTDB,
    };
    static const int unknown[] = { 12345, -12345, 3, -12, 1 << 30 };
    const size_t nc = sizeof codes / sizeof codes[0];
    size_t i, j;
    for (i = 0; i < nc; i++) {
        const char *s = kvdb_strerror(codes[i]);
        CHECK(s != NULL && s[0] != 0);
        if (!s) continue;
        for (j = 0; j < i; j++) {
            const char *s2 = kvdb_strerror(codes[j]);
            if (s2 && strcmp(s, s2) == 0)
                tu_fail(__FILE__, __LINE__, "codes %d and %d share the text \"%s\"", codes[i], codes[j], s);
        }
    }
    for (i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *s = kvdb_strerror(unknown[i]);
        CHECK(s != NULL && s[0] != 0);
        if (!s) continue;
        for (j = 0; j < nc; j++) {
            const char *s2 = kvdb_strerror(codes[j]);
            if (s2 && strcmp(s, s2) == 0)
                tu_fail(__FILE__, __LINE__, "unknown code %d has the text of %d: \"%s\"", unknown[i], codes[j], s);
        }
    }
}

static void test_errmsg_after_failed_open(void)
{
    kvdb *db = NULL;
    const char *p = t_path("errmsg-missing.db");
    const char *t = t_path("errmsg-text.db");
    const char *m;
    CHECK(t_open_rc(p, 0, &db) != KVDB_OK);
    CHECK(db == NULL);
    m = kvdb_errmsg();
    CHECK(m != NULL && m[0] != 0);
    REQUIRE(t_spit(t, K("this is plain text and certainly not a kvdb database file\n")) == 0);
    CHECK_RC(t_open_rc(t, KVDB_CREATE, &db), KVDB_ENOTDB);
    m = kvdb_errmsg();
    CHECK(m != NULL && m[0] != 0);
}

/* ------------------------------------------------------------------ */
/* transactions                                                       */

static void test_txn_own_writes(void)
{
    const char *p = t_path("txnown.db");
    kvdb_txn *t;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_OK(kvdb_put(db, K("old"), K("committed")));
    CHECK_OK(kvdb_put(db, K("gone"), K("soon")));
    REQUIRE_OK(kvdb_begin(db, 0, &t));
    CHECK_TGET(t, K("old"), K("committed"));
    CHECK_OK(kvdb_txn_put(t, K("old"), K("mine")));
    CHECK_TGET(t, K("old"), K("mine"));
    CHECK_OK(kvdb_txn_put(t, K("new"), K("fresh")));
    CHECK_TGET(t, K("new"), K("fresh"));
    CHECK_OK(kvdb_txn_put(t, K("new"), K("fresher")));
    CHECK_TGET(t, K("new"), K("fresher"));

    /* deleting a committed key hides it; a second delete is NOTFOUND */
    CHECK_OK(kvdb_txn_del(t, K("gone")));
    CHECK_TABSENT(t, K("gone"));
    CHECK_RC(kvdb_txn_del(t, K("gone")), KVDB_NOTFOUND);
    /* deleting a key written in this txn */
    CHECK_OK(kvdb_txn_put(t, K("tmp"), K("x")));
    CHECK_OK(kvdb_txn_del(t, K("tmp")));
    CHECK_TABSENT(t, K("tmp"));
    CHECK_RC(kvdb_txn_del(t, K("tmp")), KVDB_NOTFOUND);
    CHECK_RC(kvdb_txn_del(t, K("never")), KVDB_NOTFOUND);
    /* put after delete resurrects */
    CHECK_OK(kvdb_txn_del(t, K("old")));
    CHECK_TABSENT(t, K("old"));
    CHECK_OK(kvdb_txn_put(t, K("old"), K("again")));
    CHECK_TGET(t, K("old"), K("again"));

    /* the committed state is untouched until commit */
    CHECK_GET(db, K("old"), K("committed"));
    CHECK_GET(db, K("gone"), K("soon"));
    CHECK_ABSENT(db, K("new"));
    CHECK_OK(kvdb_commit(t));

    CHECK_GET(db, K("old"), K("again"));
    CHECK_GET(db, K("new"), K("fresher"));
    CHECK_ABSENT(db, K("gone"));
    CHECK_ABSENT(db, K("tmp"));
    CHECK_OK(kvdb_close(db));
    db = OPEN(p, 0, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_GET(db, K("old"), K("again"));
    CHECK_GET(db, K("new"), K("fresher"));
    CHECK_ABSENT(db, K("gone"));
    CHECK_ABSENT(db, K("tmp"));
    CHECK_OK(kvdb_close(db));
}

static void test_txn_abort(void)
{
    const char *p = t_path("abort.db");
    long long sz;
    kvdb_txn *t;
    struct kvdb_stat st;
    int pass;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_OK(kvdb_put(db, K("base"), K("b")));
    sz = t_file_size(p);
    REQUIRE_OK(kvdb_begin(db, 0, &t));
    CHECK_OK(kvdb_txn_put(t, K("x"), K("1")));
    CHECK_OK(kvdb_txn_del(t, K("base")));
    CHECK_OK(kvdb_txn_put(t, K("y"), K("2")));
    CHECK_TGET(t, K("x"), K("1"));
    kvdb_abort(t);
    CHECK(t_file_size(p) == sz);
    CHECK_OK(t_stat(db, &st));
    CHECK(st.keys == 1);
    for (pass = 0; pass < 2; pass++) {
        CHECK_GET(db, K("base"), K("b"));
        CHECK_ABSENT(db, K("x"));
        CHECK_ABSENT(db, K("y"));
        CHECK_OK(kvdb_close(db));
        db = OPEN(p, 0, KVDB_SYNC_OFF);
        REQUIRE(db);
    }
    /* the writer is free again after abort */
    CHECK_OK(kvdb_put(db, K("z"), K("3")));
    CHECK_GET(db, K("z"), K("3"));
    CHECK_OK(kvdb_close(db));
}

static void test_txn_read_only(void)
{
    const char *p = t_path("readtxn.db");
    long long sz;
    kvdb_txn *t;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_OK(kvdb_put(db, K("k"), K("v")));
    sz = t_file_size(p);
    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
    CHECK_RC(kvdb_txn_put(t, K("k"), K("w")), KVDB_EREADONLY);
    CHECK_RC(kvdb_txn_put(t, K("n"), K("w")), KVDB_EREADONLY);
    CHECK_RC(kvdb_txn_del(t, K("k")), KVDB_EREADONLY);
    CHECK_TGET(t, K("k"), K("v"));
    CHECK_TABSENT(t, K("n"));
    CHECK_OK(kvdb_commit(t)); /* just ends it */
    CHECK(t_file_size(p) == sz);
    CHECK_GET(db, K("k"), K("v"));
    CHECK_ABSENT(db, K("n"));
    /* the txn really ended: close does not report it as open */
    CHECK_OK(kvdb_close(db));
}

static void t_mkkey(char *k, int i) { sprintf(k, "key%05d", i); }

static void test_txn_many_entries(void)
{
    const char *p = t_path("bigtxn.db");
    const int nkeys = 1500;
    char k[16], v[32];
    int i, j;
    kvdb_txn *t;
    struct kvdb_stat st;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);

    /* around the small-map limit: every earlier write stays visible */
    REQUIRE_OK(kvdb_begin(db, 0, &t));
    for (i = 0; i < 40; i++) {
        t_mkkey(k, i);
        sprintf(v, "s%d", i);
        CHECK_OK(kvdb_txn_put(t, k, 8, v, strlen(v)));
        for (j = 0; j <= i; j++) {
            t_mkkey(k, j);
            sprintf(v, "s%d", j);
            CHECK_TGET(t, k, 8, v, strlen(v));
        }
        t_mkkey(k, i + 1);
        CHECK_TABSENT(t, k, 8);
    }
    kvdb_abort(t);
    CHECK_ABSENT(db, K("key00000"));

    /* 3000 writes over 1500 keys: every key written twice, then deletes */
    REQUIRE_OK(kvdb_begin(db, 0, &t));
    for (i = 0; i < 2 * nkeys; i++) {
        t_mkkey(k, i % nkeys);
        sprintf(v, "v%d-%d", i % nkeys, i / nkeys);
        CHECK_OK(kvdb_txn_put(t, k, 8, v, strlen(v)));
    }
    for (i = 0; i < nkeys; i++) {
        t_mkkey(k, i);
        sprintf(v, "v%d-1", i);
        CHECK_TGET(t, k, 8, v, strlen(v));
    }
    for (i = 0; i < nkeys; i += 3) {
        t_mkkey(k, i);
        CHECK_OK(kvdb_txn_del(t, k, 8));
    }
    for (i = 0; i < nkeys; i++) {
        t_mkkey(k, i);
        if (i % 3 == 0) {
            CHECK_TABSENT(t, k, 8);
            CHECK_RC(kvdb_txn_del(t, k, 8), KVDB_NOTFOUND);
        } else {
            sprintf(v, "v%d-1", i);
            CHECK_TGET(t, k, 8, v, strlen(v));
        }
    }
    CHECK_ABSENT(db, K("key00001"));
    CHECK_OK(kvdb_commit(t));

    for (j = 0; j < 2; j++) {
        for (i = 0; i < nkeys; i++) {
            t_mkkey(k, i);
            if (i % 3 == 0) {
                CHECK_ABSENT(db, k, 8);
            } else {
                sprintf(v, "v%d-1", i);
                CHECK_GET(db, k, 8, v, strlen(v));
            }
        }
        CHECK_OK(t_stat(db, &st));
        CHECK(st.keys == (uint64_t)(nkeys - (nkeys + 2) / 3));
        CHECK_OK(kvdb_close(db));
        db = OPEN(p, 0, KVDB_SYNC_OFF);
        REQUIRE(db);
    }
    CHECK_OK(kvdb_close(db));
}

/* The end of a snapshot held while an older one survives: its replaced
 * index nodes are sorted out a slice per commit (invariant 3 of the
 * versions), not all by the next commit; the older snapshot still reads
 * what it saw, and everything is freed once both are gone. */
static void test_snapshot_end_is_paced(void)
{
    const char *p = t_path("pace.db");
    kvdb_txn *old, *mid, *t;
    char k[32], v[32];
    int i, r, commits = 0;
    size_t base_bytes;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    /* version 0 of 20000 keys; old; version 1 of 200 of them; mid; then
     * versions 2 and 3 of all: mid's list holds nodes old sees (born
     * before it, most of them) and nodes it does not (born between) */
    for (r = 0; r < 4; r++) {
        REQUIRE_OK(kvdb_begin(db, 0, &t));
        for (i = 0; i < (r == 1 ? 200 : 20000); i++) {
            snprintf(k, sizeof k, "key%05d", i);
            snprintf(v, sizeof v, "v%d-%d", r, i);
            REQUIRE_OK(kvdb_txn_put(t, k, strlen(k), v, strlen(v)));
        }
        REQUIRE_OK(kvdb_commit(t));
        if (r == 0) REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &old));
        if (r == 1) REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &mid));
    }
    base_bytes = db->pool.bytes;
    kvdb_abort(mid);
    CHECK_OK(kvdb_put(db, K("x"), K("1")));
#ifndef KVDB_TEST_HASH_BITS /* 4-bit hashes: a few huge leaves, sorted at once */
    CHECK(db->draining != NULL);        /* not sorted by that one commit */
#endif
    while (db->draining && commits < 10000) {
        CHECK_OK(kvdb_put(db, K("x"), K("1")));
        commits++;
    }
    CHECK(db->draining == NULL);
#ifndef KVDB_TEST_HASH_BITS
    CHECK(commits > 1);                 /* it took several */
#endif
    for (i = 0; i < 20000; i += 7) {    /* old still reads what it saw */
        const void *got;
        size_t n;
        snprintf(k, sizeof k, "key%05d", i);
        snprintf(v, sizeof v, "v0-%d", i);
        CHECK_OK(kvdb_txn_get(old, k, strlen(k), &got, &n));
        CHECK(n == strlen(v) && memcmp(got, v, n) == 0);
    }
    kvdb_abort(old);
    for (i = 0; i < 200; i++) CHECK_OK(kvdb_put(db, K("x"), K("1")));
    CHECK(db->draining == NULL && db->zombies == NULL);
    CHECK(db->pool.bytes < base_bytes); /* what the snapshots kept is freed */
    CHECK_OK(kvdb_close(db));
}

static void test_snapshot_isolation(void)
{
    const char *p = t_path("snap.db");
    unsigned char a1[1000], a2[1000], copy[1000];
    unsigned char *big;
    const void *pa = NULL, *pd = NULL;
    size_t na = 0, nd = 0;
    kvdb_txn *r1, *r2;
    int i;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    memset(a1, 'A', sizeof a1); a1[0] = 1; a1[999] = 0;
    memset(a2, 'Z', sizeof a2);
    CHECK_OK(kvdb_put(db, K("a"), a1, sizeof a1));
    CHECK_OK(kvdb_put(db, K("b"), K("B1")));
    CHECK_OK(kvdb_put(db, K("d"), K("D1")));

    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &r1));
    CHECK_OK(kvdb_txn_get(r1, K("a"), &pa, &na));
    CHECK_OK(kvdb_txn_get(r1, K("d"), &pd, &nd));
    REQUIRE(pa != NULL && na == sizeof a1 && pd != NULL && nd == 2);
    memcpy(copy, pa, sizeof copy);

    /* auto-commit writes while this thread holds a read txn */
    CHECK_OK(kvdb_put(db, K("a"), a2, sizeof a2));
    CHECK_OK(kvdb_del(db, K("b")));
    CHECK_OK(kvdb_del(db, K("d")));
    CHECK_OK(kvdb_put(db, K("c"), K("C1")));

    CHECK_TGET(r1, K("a"), a1, sizeof a1);
    CHECK_TGET(r1, K("b"), K("B1"));
    CHECK_TGET(r1, K("d"), K("D1"));
    CHECK_TABSENT(r1, K("c"));
    CHECK_GET(db, K("a"), a2, sizeof a2);
    CHECK_ABSENT(db, K("b"));
    CHECK_ABSENT(db, K("d"));
    CHECK_GET(db, K("c"), K("C1"));

    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &r2));
    CHECK_TGET(r2, K("a"), a2, sizeof a2);
    CHECK_TABSENT(r2, K("b"));

    /* grow the file well past any initial mapping */
    big = malloc(1 << 20);
    if (big) {
        memset(big, 'g', 1 << 20);
        for (i = 0; i < 24; i++) {
            char k[16];
            sprintf(k, "big%d", i);
            big[0] = (unsigned char)i;
            CHECK_OK(kvdb_put(db, k, strlen(k), big, 1 << 20));
        }
        free(big);
    }
    CHECK_OK(kvdb_put(db, K("a"), K("third")));
    CHECK_OK(kvdb_put(db, K("b"), K("B3")));

    /* old pointers still valid and unchanged */
    CHECK(memcmp(pa, copy, sizeof copy) == 0);
    CHECK(memcmp(pa, a1, sizeof a1) == 0);
    CHECK(memcmp(pd, "D1", 2) == 0);
    CHECK_TGET(r1, K("a"), a1, sizeof a1);
    CHECK_TGET(r1, K("b"), K("B1"));
    CHECK_TGET(r1, K("d"), K("D1"));
    CHECK_TABSENT(r1, K("c"));
    CHECK_TABSENT(r1, K("big3"));
    CHECK_TGET(r2, K("a"), a2, sizeof a2);
    CHECK_TABSENT(r2, K("b"));
    CHECK_TABSENT(r2, K("big3"));
    CHECK_GET(db, K("a"), K("third"));
    CHECK_GET(db, K("b"), K("B3"));
    CHECK_OK(kvdb_commit(r1));
    kvdb_abort(r2);
    CHECK_OK(kvdb_close(db));
}

/* ------------------------------------------------------------------ */
/* writer exclusion                                                   */

static void test_writer_same_thread(void)
{
    const char *p = t_path("samethread.db");
    kvdb_txn *w, *t2, *r;
    long long sz;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_OK(kvdb_put(db, K("k"), K("old")));
    REQUIRE_OK(kvdb_begin(db, 0, &w));
    CHECK_OK(kvdb_txn_put(w, K("k"), K("new")));
    CHECK_OK(kvdb_txn_put(w, K("n"), K("1")));
    sz = t_file_size(p);
    t2 = NULL;
    CHECK_RC(kvdb_begin(db, 0, &t2), KVDB_EBUSY);
    CHECK_RC(kvdb_begin(db, KVDB_TXN_NOWAIT, &t2), KVDB_EBUSY);
    CHECK_RC(kvdb_put(db, K("k"), K("auto")), KVDB_EBUSY);
    CHECK_RC(kvdb_put(db, K("other"), K("auto")), KVDB_EBUSY);
    CHECK_RC(kvdb_del(db, K("k")), KVDB_EBUSY);
    CHECK(t_file_size(p) == sz);
    /* reads see the committed state, not the open txn's writes */
    CHECK_GET(db, K("k"), K("old"));
    CHECK_ABSENT(db, K("n"));
    CHECK_ABSENT(db, K("other"));
    if (kvdb_begin(db, KVDB_TXN_RDONLY, &r) == KVDB_OK) {
        CHECK_TGET(r, K("k"), K("old"));
        CHECK_TABSENT(r, K("n"));
        CHECK_OK(kvdb_commit(r));
    } else {
        CHECK(0);
    }
    CHECK_TGET(w, K("k"), K("new"));
    CHECK_OK(kvdb_commit(w));
    CHECK_GET(db, K("k"), K("new"));
    CHECK_GET(db, K("n"), K("1"));
    /* writer free again */
    CHECK_OK(kvdb_put(db, K("k"), K("auto")));
    CHECK_GET(db, K("k"), K("auto"));
    CHECK_OK(kvdb_close(db));
}

struct t_thr {
    kvdb *db;
    unsigned flags;
    int rc_begin;
    int rc_put;
    int rc_commit;
    int got;             /* set once the writer was obtained */
    pthread_mutex_t mu;
};

static int t_thr_got(struct t_thr *a)
{
    int g;
    pthread_mutex_lock(&a->mu);
    g = a->got;
    pthread_mutex_unlock(&a->mu);
    return g;
}

static void *t_writer_thread(void *arg)
{
    struct t_thr *a = arg;
    kvdb_txn *t = NULL;
    int rc = kvdb_begin(a->db, a->flags, &t);
    pthread_mutex_lock(&a->mu);
    a->rc_begin = rc;
    a->got = 1;
    pthread_mutex_unlock(&a->mu);
    if (rc == KVDB_OK) {
        a->rc_put = kvdb_txn_put(t, K("thread"), K("was here"));
        a->rc_commit = kvdb_commit(t);
    }
    return NULL;
}

static void test_writer_nowait_other_thread(void)
{
    const char *p = t_path("nowait.db");
    struct t_thr a;
    pthread_t th;
    kvdb_txn *w;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    memset(&a, 0, sizeof a);
    pthread_mutex_init(&a.mu, NULL);
    a.db = db;
    a.flags = KVDB_TXN_NOWAIT;
    a.rc_begin = 999;
    if (kvdb_begin(db, 0, &w) != KVDB_OK) { CHECK(0); kvdb_close(db); return; }
    CHECK_OK(kvdb_txn_put(w, K("main"), K("1")));
    REQUIRE(pthread_create(&th, NULL, t_writer_thread, &a) == 0);
    pthread_join(th, NULL);
    CHECK_RC(a.rc_begin, KVDB_EBUSY);
    CHECK_OK(kvdb_commit(w));
    CHECK_GET(db, K("main"), K("1"));
    CHECK_ABSENT(db, K("thread"));

    /* with the writer free, NOWAIT succeeds */
    a.rc_begin = 999;
    a.got = 0;
    REQUIRE(pthread_create(&th, NULL, t_writer_thread, &a) == 0);
    pthread_join(th, NULL);
    CHECK_OK(a.rc_begin);
    CHECK_OK(a.rc_commit);
    CHECK_GET(db, K("thread"), K("was here"));
    pthread_mutex_destroy(&a.mu);
    CHECK_OK(kvdb_close(db));
}

static void test_writer_waits_other_thread(void)
{
    const char *p = t_path("wait.db");
    struct t_thr a;
    pthread_t th;
    kvdb_txn *w;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    memset(&a, 0, sizeof a);
    pthread_mutex_init(&a.mu, NULL);
    a.db = db;
    a.flags = 0;
    a.rc_begin = 999;
    if (kvdb_begin(db, 0, &w) != KVDB_OK) { CHECK(0); kvdb_close(db); return; }
    CHECK_OK(kvdb_txn_put(w, K("main"), K("1")));
    REQUIRE(pthread_create(&th, NULL, t_writer_thread, &a) == 0);
    t_sleep_ms(300);
    CHECK(t_thr_got(&a) == 0); /* still waiting for us */
    CHECK_ABSENT(db, K("thread"));
    CHECK_OK(kvdb_commit(w));
    pthread_join(th, NULL);
    CHECK(a.got == 1);
    CHECK_OK(a.rc_begin);
    CHECK_OK(a.rc_put);
    CHECK_OK(a.rc_commit);
    CHECK_GET(db, K("main"), K("1"));
    CHECK_GET(db, K("thread"), K("was here"));
    pthread_mutex_destroy(&a.mu);
    CHECK_OK(kvdb_close(db));
    db = OPEN(p, 0, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_GET(db, K("main"), K("1"));
    CHECK_GET(db, K("thread"), K("was here"));
    CHECK_OK(kvdb_close(db));
}

static void test_close_busy(void)
{
    const char *p = t_path("closebusy.db");
    kvdb_txn *w, *r;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_OK(kvdb_put(db, K("k"), K("v")));
    REQUIRE_OK(kvdb_begin(db, 0, &w));
    CHECK_OK(kvdb_txn_put(w, K("w"), K("1")));
    CHECK_RC(kvdb_close(db), KVDB_EBUSY);
    /* the handle and the txn still work */
    CHECK_GET(db, K("k"), K("v"));
    CHECK_TGET(w, K("w"), K("1"));
    CHECK_OK(kvdb_txn_put(w, K("w2"), K("2")));
    CHECK_OK(kvdb_commit(w));
    CHECK_GET(db, K("w"), K("1"));
    CHECK_GET(db, K("w2"), K("2"));

    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &r));
    CHECK_RC(kvdb_close(db), KVDB_EBUSY);
    CHECK_TGET(r, K("k"), K("v"));
    CHECK_OK(kvdb_put(db, K("after"), K("x")));
    kvdb_abort(r);
    CHECK_OK(kvdb_close(db));

    db = OPEN(p, 0, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_GET(db, K("w2"), K("2"));
    CHECK_GET(db, K("after"), K("x"));
    CHECK_OK(kvdb_close(db));
}

/* ------------------------------------------------------------------ */
/* read-only handles and locking                                      */

static void test_rdonly_handle(void)
{
    const char *p = t_path("ro.db");
    unsigned char *before;
    size_t nbefore;
    kvdb *r1, *r2, *w = NULL;
    kvdb_txn *t = NULL;
    struct kvdb_stat st;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_OK(kvdb_put(db, K("k"), K("v")));
    CHECK_OK(kvdb_put(db, K("k2"), K("v2")));
    CHECK_OK(kvdb_close(db));
    before = t_slurp(p, &nbefore);
    REQUIRE(before);

    r1 = OPEN(p, KVDB_RDONLY, KVDB_SYNC_FULL);
    if (!r1) { free(before); return; }
    r2 = OPEN(p, KVDB_RDONLY, KVDB_SYNC_FULL); /* readers share */
    CHECK_GET(r1, K("k"), K("v"));
    CHECK_ABSENT(r1, K("nope"));
    CHECK_RC(kvdb_put(r1, K("k"), K("w")), KVDB_EREADONLY);
    CHECK_RC(kvdb_put(r1, K("new"), K("w")), KVDB_EREADONLY);
    CHECK_RC(kvdb_del(r1, K("k")), KVDB_EREADONLY);
    CHECK_RC(kvdb_begin(r1, 0, &t), KVDB_EREADONLY);
    if (kvdb_begin(r1, KVDB_TXN_RDONLY, &t) == KVDB_OK) {
        CHECK_TGET(t, K("k2"), K("v2"));
        CHECK_RC(kvdb_txn_put(t, K("k"), K("w")), KVDB_EREADONLY);
        CHECK_OK(kvdb_commit(t));
    } else {
        CHECK(0);
    }
    CHECK_OK(t_stat(r1, &st));
    CHECK(st.keys == 2);
    if (r2) {
        CHECK_GET(r2, K("k2"), K("v2"));
        CHECK_RC(kvdb_put(r2, K("k"), K("w")), KVDB_EREADONLY);
    }
    /* a writer cannot open while readers hold the file */
    CHECK_RC(t_open_rc(p, 0, &w), KVDB_ELOCKED);
    CHECK(w == NULL);
    if (w) kvdb_close(w);
    CHECK_OK(kvdb_close(r1));
    if (r2) CHECK_OK(kvdb_close(r2));
    CHECK(t_file_is(p, before, nbefore));
    free(before);
}

static void test_locking(void)
{
    const char *p = t_path("lock.db");
    kvdb *w2 = NULL, *r = NULL;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_OK(kvdb_put(db, K("k"), K("v")));
    CHECK_RC(t_open_rc(p, 0, &w2), KVDB_ELOCKED);
    CHECK(w2 == NULL);
    if (w2) { kvdb_close(w2); w2 = NULL; }
    CHECK_RC(t_open_rc(p, KVDB_CREATE, &w2), KVDB_ELOCKED);
    if (w2) { kvdb_close(w2); w2 = NULL; }
    CHECK_RC(t_open_rc(p, KVDB_RDONLY, &r), KVDB_ELOCKED);
    CHECK(r == NULL);
    if (r) { kvdb_close(r); r = NULL; }
    /* the first handle is unaffected */
    CHECK_OK(kvdb_put(db, K("k2"), K("v2")));
    CHECK_GET(db, K("k"), K("v"));
    CHECK_OK(kvdb_close(db));
    /* after close the file is free */
    db = OPEN(p, 0, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_GET(db, K("k2"), K("v2"));
    CHECK_OK(kvdb_close(db));
}

/* ------------------------------------------------------------------ */
/* files that are not (valid) databases                               */

static void test_notdb_text(void)
{
    static const char text[] =
        "This is a plain text file. It is long enough to cover a kvdb header\n"
        "and then some more, so that the engine has to look at the magic.\n"
        "Nothing in here should ever be changed by kvdb_open.\n";
    const char *p = t_path("text.txt");
    const char *ps = t_path("short.txt");
    kvdb *db = NULL;
    REQUIRE(t_spit(p, text, sizeof text - 1) == 0);
    REQUIRE(t_spit(ps, K("hello")) == 0);
    CHECK_RC(t_open_rc(p, KVDB_CREATE, &db), KVDB_ENOTDB);
    CHECK(db == NULL);
    CHECK(t_file_is(p, (const unsigned char *)text, sizeof text - 1));
    CHECK_RC(t_open_rc(p, 0, &db), KVDB_ENOTDB);
    CHECK_RC(t_open_rc(p, KVDB_RDONLY, &db), KVDB_ENOTDB);
    CHECK(t_file_is(p, (const unsigned char *)text, sizeof text - 1));
    CHECK_RC(kvdb_open(p, NULL, &db), KVDB_ENOTDB);
    CHECK(db == NULL);
    CHECK(t_file_is(p, (const unsigned char *)text, sizeof text - 1));

    CHECK_RC(t_open_rc(ps, KVDB_CREATE, &db), KVDB_ENOTDB);
    CHECK(db == NULL);
    CHECK(t_file_is(ps, (const unsigned char *)"hello", 5));
    if (db) kvdb_close(db);
}

static void test_zero_length_file(void)
{
    const char *p = t_path("zero.db");
    const char *p2 = t_path("zero2.db");
    kvdb *db = NULL;
    REQUIRE(t_spit(p, "", 0) == 0);
    REQUIRE(t_spit(p2, "", 0) == 0);

    /* without KVDB_CREATE: an error, and the file stays empty */
    CHECK(t_open_rc(p2, 0, &db) != KVDB_OK);
    CHECK(db == NULL);
    if (db) { kvdb_close(db); db = NULL; }
    CHECK(t_file_size(p2) == 0);
    CHECK(t_open_rc(p2, KVDB_RDONLY, &db) != KVDB_OK);
    if (db) { kvdb_close(db); db = NULL; }
    CHECK(t_file_size(p2) == 0);

    /* with KVDB_CREATE it becomes a database */
    db = OPEN(p, KVDB_CREATE, KVDB_SYNC_FULL);
    REQUIRE(db);
    CHECK_OK(kvdb_put(db, K("k"), K("v")));
    CHECK_OK(kvdb_close(db));
    CHECK(t_file_size(p) > 64);
    db = OPEN(p, 0, KVDB_SYNC_FULL);
    REQUIRE(db);
    CHECK_GET(db, K("k"), K("v"));
    CHECK_OK(kvdb_close(db));
}

static void test_missing_file_no_create(void)
{
    const char *p = t_path("missing.db");
    kvdb *db = (kvdb *)&db;
    CHECK(t_open_rc(p, 0, &db) != KVDB_OK);
    CHECK(db == NULL);
    CHECK(!t_exists(p));
    db = (kvdb *)&db;
    CHECK(t_open_rc(p, KVDB_RDONLY, &db) != KVDB_OK);
    CHECK(db == NULL);
    CHECK(!t_exists(p));
}

/* make a small valid database at p and return its bytes */
static unsigned char *t_make_db(const char *p, size_t *n)
{
    kvdb *db = NULL;
    *n = 0;
    if (kvdb_open(p, NULL, &db) != KVDB_OK) return NULL;
    if (kvdb_put(db, K("key"), K("value")) != KVDB_OK) { kvdb_close(db); return NULL; }
    if (kvdb_close(db) != KVDB_OK) return NULL;
    return t_slurp(p, n);
}

static void test_version_patched(void)
{
    const char *p = t_path("v2.db");
    kvdb *db = NULL;
    size_t n;
    unsigned char *b = t_make_db(p, &n);
    REQUIRE(b && n > 64);
    CHECK(t_rd32(b + 8) == 1);
    CHECK(t_rd64(b + 56) == (uint64_t)XXH3_64bits(b, 56));
    t_wr32(b + 8, 2);
    t_wr64(b + 56, (uint64_t)XXH3_64bits(b, 56));
    REQUIRE(t_spit(p, b, n) == 0);
    CHECK_RC(t_open_rc(p, 0, &db), KVDB_EVERSION);
    CHECK(db == NULL);
    if (db) { kvdb_close(db); db = NULL; }
    CHECK_RC(t_open_rc(p, KVDB_CREATE, &db), KVDB_EVERSION);
    if (db) { kvdb_close(db); db = NULL; }
    CHECK_RC(t_open_rc(p, KVDB_RDONLY, &db), KVDB_EVERSION);
    if (db) { kvdb_close(db); db = NULL; }
    CHECK(t_file_is(p, b, n));
    free(b);
}

static void test_header_bad_checksum(void)
{
    const char *p = t_path("badhdr.db");
    kvdb *db = NULL;
    size_t n;
    int rc, i;
    unsigned char *b = t_make_db(p, &n);
    REQUIRE(b && n > 64);
    for (i = 0; i < 2; i++) {
        /* flip a creation-time bit, then (second round) a checksum bit */
        b[i == 0 ? 40 : 60] ^= 0x10;
        REQUIRE(t_spit(p, b, n) == 0);
        db = NULL;
        rc = t_open_rc(p, 0, &db);
        CHECK(rc == KVDB_ECORRUPT || rc == KVDB_ENOTDB);
        CHECK(db == NULL);
        if (db) { kvdb_close(db); db = NULL; }
        rc = t_open_rc(p, KVDB_CREATE, &db);
        CHECK(rc == KVDB_ECORRUPT || rc == KVDB_ENOTDB);
        if (db) { kvdb_close(db); db = NULL; }
        CHECK(t_file_is(p, b, n));
        b[i == 0 ? 40 : 60] ^= 0x10;
    }
    free(b);
}

/* The durable horizon as kvdb_stat reports it: a SYNC_OFF commit records
 * nothing synced; kvdb_sync seals (the horizon is the seal's offset, and a
 * second kvdb_sync with nothing new appends nothing); a commit after it
 * records the synced length; close seals again; the sidecar vouches for
 * all of it at the next open. */
static void test_horizon_stat(void)
{
    const char *p = t_path("horizon.db");
    struct kvdb_stat st;
    long long sz;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_OK(t_stat(db, &st));
    CHECK(strcmp(st.horizon_from, "none") == 0);
    CHECK_OK(kvdb_put(db, K("a"), K("1")));
    CHECK_OK(t_stat(db, &st));
    CHECK(st.horizon == 64 && strcmp(st.horizon_from, "none") == 0);
    CHECK_OK(kvdb_sync(db));
    CHECK_OK(t_stat(db, &st));
    CHECK(st.horizon == st.file_bytes - 40 && strcmp(st.horizon_from, "seal") == 0);
    sz = (long long)st.file_bytes;
    CHECK_OK(kvdb_sync(db));
    CHECK_OK(t_stat(db, &st));
    CHECK((long long)st.file_bytes == sz);
    CHECK_OK(kvdb_put(db, K("b"), K("2")));
    CHECK_OK(t_stat(db, &st));
    CHECK(st.horizon == (uint64_t)sz && strcmp(st.horizon_from, "commit") == 0);
    CHECK_OK(kvdb_close(db));
    if (access(t_path("horizon.db.idx"), F_OK) == 0) { /* (hosts that write sidecars) */
        db = OPEN(p, KVDB_RDONLY, KVDB_SYNC_FULL);
        REQUIRE(db);
        CHECK_OK(t_stat(db, &st));
        CHECK(st.sidecar_loaded && st.horizon == st.file_bytes && strcmp(st.horizon_from, "sidecar") == 0);
        CHECK_OK(kvdb_close(db));
        CHECK(unlink(t_path("horizon.db.idx")) == 0);
    }
    db = OPEN(p, KVDB_RDONLY, KVDB_SYNC_FULL);
    REQUIRE(db);
    CHECK_OK(t_stat(db, &st));
    CHECK(!st.sidecar_loaded && st.horizon == st.file_bytes - 40 && strcmp(st.horizon_from, "seal") == 0);
    CHECK_OK(kvdb_close(db));
}

/* the on-disk layout: header and records as documented */
static void test_file_format(void)
{
    const char *p = t_path("format.db");
    unsigned char *b;
    size_t n, off, i;
    uint64_t seed;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_FULL);
    REQUIRE(db);
    CHECK(t_file_size(p) == 64);
    CHECK_OK(kvdb_put(db, K("k"), K("v")));
    CHECK_OK(kvdb_del(db, K("k")));
    CHECK_OK(kvdb_close(db));
    b = t_slurp(p, &n);
    REQUIRE(b);
    /* header + PUT(16+1+1) + COMMIT(16+24) + DEL(16+1) + COMMIT(16+24) + the seal COMMIT(16+24) */
    CHECK(n == 64 + 18 + 40 + 17 + 40 + 40);
    if (n < 64 + 18 + 40 + 17 + 40 + 40) { free(b); return; }
    CHECK(memcmp(b, T_MAGIC, 8) == 0);
    CHECK(t_rd32(b + 8) == KVDB_FORMAT_VERSION);
    CHECK(t_rd32(b + 12) == 64);
    CHECK(t_rd64(b + 48) == 0);
    CHECK(t_rd64(b + 56) == (uint64_t)XXH3_64bits(b, 56));
    {
        int nz = 0;
        for (i = 24; i < 40; i++) nz |= b[i];
        CHECK(nz != 0); /* a random id */
    }
    seed = t_rd64(b + 16);

    off = 64; /* PUT k=v */
    CHECK(b[off + 8] == 1 && b[off + 9] == 0);
    CHECK(t_rd16(b + off + 10) == 1 && t_rd32(b + off + 12) == 1);
    CHECK(b[off + 16] == 'k' && b[off + 17] == 'v');
    CHECK(t_rd64(b + off) == (uint64_t)XXH3_64bits_withSeed(b + off + 8, 8 + 2, seed ^ off));
    off += 18; /* COMMIT */
    CHECK(b[off + 8] == 3 && b[off + 9] == 0);
    CHECK(t_rd16(b + off + 10) == 0 && t_rd32(b + off + 12) == 24);
    CHECK(t_rd32(b + off + 16 + 16) == 1 && t_rd32(b + off + 16 + 20) == 0);
    CHECK(t_rd64(b + off) == (uint64_t)XXH3_64bits_withSeed(b + off + 8, 8 + 24, seed ^ off));
    {
        uint64_t seq1 = t_rd64(b + off + 16);
        off += 40; /* DEL k */
        CHECK(b[off + 8] == 2 && b[off + 9] == 0);
        CHECK(t_rd16(b + off + 10) == 1 && t_rd32(b + off + 12) == 0);
        CHECK(b[off + 16] == 'k');
        CHECK(t_rd64(b + off) == (uint64_t)XXH3_64bits_withSeed(b + off + 8, 8 + 1, seed ^ off));
        off += 17; /* COMMIT */
        CHECK(b[off + 8] == 3);
        CHECK(t_rd16(b + off + 10) == 0 && t_rd32(b + off + 12) == 24);
        CHECK(t_rd32(b + off + 16 + 16) == 1);
        CHECK(t_rd64(b + off + 16) > seq1);
        CHECK(t_rd64(b + off + 16 + 8) == 64 + 18 + 40); /* SYNC_FULL: the commit before it was synced */
        CHECK(t_rd64(b + off) == (uint64_t)XXH3_64bits_withSeed(b + off + 8, 8 + 24, seed ^ off));
        seq1 = t_rd64(b + off + 16);
        off += 40; /* the seal: no records, and everything before it synced */
        CHECK(b[off + 8] == 3 && t_rd32(b + off + 12) == 24);
        CHECK(t_rd64(b + off + 16) == seq1 + 1 && t_rd64(b + off + 16 + 8) == off);
        CHECK(t_rd32(b + off + 16 + 16) == 0 && t_rd32(b + off + 16 + 20) == 0);
        CHECK(t_rd64(b + off) == (uint64_t)XXH3_64bits_withSeed(b + off + 8, 8 + 24, seed ^ off));
    }
    free(b);
    /* a close with nothing committed since the seal appends nothing */
    db = OPEN(p, 0, KVDB_SYNC_FULL);
    REQUIRE(db);
    CHECK_OK(kvdb_close(db));
    CHECK(t_file_size(p) == (long long)n);
}

/* ------------------------------------------------------------------ */
/* in-memory databases and sync modes                                 */

static void test_inmemory(void)
{
    char cwd[1024], sub[700];
    kvdb *db = NULL, *db2 = NULL;
    kvdb_options o;
    kvdb_txn *t, *r;
    struct kvdb_stat st;
    size_t n;
    FILE *f;
    char cmd[800];
    REQUIRE(getcwd(cwd, sizeof cwd) != NULL);
    snprintf(sub, sizeof sub, "%s", t_path("memdir"));
    REQUIRE(mkdir(sub, 0700) == 0);
    REQUIRE(chdir(sub) == 0);

    kvdb_options_init(&o);
    o.flags = KVDB_INMEMORY; /* no KVDB_CREATE: there is no file to create */
    if (kvdb_open(NULL, &o, &db) != KVDB_OK || !db) {
        tu_fail(__FILE__, __LINE__, "INMEMORY open (flags KVDB_INMEMORY only) failed: %s", kvdb_errmsg());
        /* go on with KVDB_CREATE so the rest is still checked */
        o.flags = KVDB_INMEMORY | KVDB_CREATE;
        db = NULL;
        if (kvdb_open(NULL, &o, &db) != KVDB_OK || !db) {
            if (chdir(cwd) != 0) {}
            return;
        }
    }
    CHECK_OK(kvdb_put(db, K("a"), K("1")));
    CHECK_OK(kvdb_put(db, K("b"), K("2")));
    CHECK_GET(db, K("a"), K("1"));
    CHECK_OK(kvdb_del(db, K("b")));
    CHECK_ABSENT(db, K("b"));
    CHECK_RC(kvdb_del(db, K("b")), KVDB_NOTFOUND);
    if (kvdb_begin(db, KVDB_TXN_RDONLY, &r) == KVDB_OK) {
        if (kvdb_begin(db, 0, &t) == KVDB_OK) {
            CHECK_OK(kvdb_txn_put(t, K("c"), K("3")));
            CHECK_OK(kvdb_txn_del(t, K("a")));
            CHECK_TGET(t, K("c"), K("3"));
            CHECK_OK(kvdb_commit(t));
        } else {
            CHECK(0);
        }
        if (kvdb_begin(db, 0, &t) == KVDB_OK) {
            CHECK_OK(kvdb_txn_put(t, K("d"), K("4")));
            kvdb_abort(t);
        }
        CHECK_TGET(r, K("a"), K("1"));
        CHECK_TABSENT(r, K("c"));
        CHECK_OK(kvdb_commit(r));
    } else {
        CHECK(0);
    }
    CHECK_ABSENT(db, K("a"));
    CHECK_GET(db, K("c"), K("3"));
    CHECK_ABSENT(db, K("d"));
    CHECK_OK(t_stat(db, &st));
    CHECK(st.keys == 1);
    CHECK_OK(kvdb_sync(db));

    /* a second in-memory database is independent (with a path: still no file) */
    o.flags = KVDB_INMEMORY | KVDB_CREATE;
    if (kvdb_open("mem.db", &o, &db2) == KVDB_OK && db2) {
        CHECK_ABSENT(db2, K("c"));
        CHECK_OK(kvdb_put(db2, K("x"), K("y")));
        CHECK_ABSENT(db, K("x"));
        CHECK_OK(kvdb_close(db2));
    } else {
        tu_fail(__FILE__, __LINE__, "INMEMORY open with a path failed: %s", kvdb_errmsg());
    }
    CHECK_OK(kvdb_close(db));

    /* nothing was created anywhere in the working directory */
    snprintf(cmd, sizeof cmd, "ls -A '%s'", sub);
    f = popen(cmd, "r");
    if (f) {
        char buf[256];
        n = fread(buf, 1, sizeof buf, f);
        pclose(f);
        CHECK(n == 0);
    }
    if (chdir(cwd) != 0) CHECK(0);
}

static void test_sync_modes(void)
{
    static const int modes[3] = { KVDB_SYNC_FULL, KVDB_SYNC_NORMAL, KVDB_SYNC_OFF };
    int m, i;
    char path[32], k[16], v[64];
    struct kvdb_stat st;
    kvdb_options o;
    for (m = 0; m < 3; m++) {
        kvdb *db = NULL;
        kvdb_txn *t;
        sprintf(path, "sync%d.db", m);
        kvdb_options_init(&o);
        o.flags = KVDB_CREATE;
        o.sync = modes[m];
        if (modes[m] == KVDB_SYNC_NORMAL) o.sync_bytes = 4096;
        if (kvdb_open(t_path(path), &o, &db) != KVDB_OK) { CHECK(0); continue; }
        for (i = 0; i < 100; i++) {
            sprintf(k, "k%d", i);
            sprintf(v, "value-%d-%d-padding-padding-padding", m, i);
            CHECK_OK(kvdb_put(db, k, strlen(k), v, strlen(v)));
        }
        if (kvdb_begin(db, 0, &t) == KVDB_OK) {
            CHECK_OK(kvdb_txn_put(t, K("txn"), K("yes")));
            CHECK_OK(kvdb_txn_del(t, K("k0")));
            CHECK_OK(kvdb_commit(t));
        }
        CHECK_OK(t_stat(db, &st));
        CHECK(st.sync_mode == modes[m]);
        CHECK(st.commits == 101);
        if (modes[m] == KVDB_SYNC_NORMAL) CHECK(st.syncs >= 1); /* > 4096 bytes of log */
        if (modes[m] == KVDB_SYNC_FULL) CHECK(st.syncs >= 1);
        CHECK_OK(kvdb_close(db));

        /* reopen (default options) sees everything */
        db = OPEN(t_path(path), 0, KVDB_SYNC_FULL);
        if (!db) continue;
        for (i = 1; i < 100; i++) {
            sprintf(k, "k%d", i);
            sprintf(v, "value-%d-%d-padding-padding-padding", m, i);
            CHECK_GET(db, k, strlen(k), v, strlen(v));
        }
        CHECK_ABSENT(db, K("k0"));
        CHECK_GET(db, K("txn"), K("yes"));
        CHECK_OK(kvdb_close(db));
    }

    /* OFF never syncs on its own; kvdb_sync does */
    {
        kvdb *db = OPEN(t_path("sync2.db"), 0, KVDB_SYNC_OFF);
        if (db) {
            for (i = 0; i < 50; i++) {
                sprintf(k, "o%d", i);
                CHECK_OK(kvdb_put(db, k, strlen(k), K("off")));
            }
            CHECK_OK(t_stat(db, &st));
            CHECK(st.syncs == 0);
            CHECK_OK(kvdb_sync(db));
            CHECK_OK(t_stat(db, &st));
            CHECK(st.syncs >= 1);
            CHECK_OK(kvdb_close(db));
        }
    }
}

/* ------------------------------------------------------------------ */
/* stat                                                               */

static void t_check_stat(kvdb *db, const char *p, uint64_t keys, int accounting, int line)
{
    struct kvdb_stat st;
    int rc = t_stat(db, &st);
    if (rc != KVDB_OK) { tu_fail(__FILE__, line, "kvdb_stat = %d", rc); return; }
    if (st.keys != keys)
        tu_fail(__FILE__, line, "stat.keys %llu, want %llu", (unsigned long long)st.keys,
                (unsigned long long)keys);
    {
        const char *why = tu_reserved_ok(p, (unsigned long long)st.file_bytes);
        if (why) tu_fail(__FILE__, line, "%s", why);
    }
    if (accounting && st.live_bytes + st.dead_bytes + 64 != st.file_bytes)
        tu_fail(__FILE__, line, "live %llu + dead %llu + 64 != file_bytes %llu",
                (unsigned long long)st.live_bytes, (unsigned long long)st.dead_bytes,
                (unsigned long long)st.file_bytes);
    if (st.format_version != KVDB_FORMAT_VERSION)
        tu_fail(__FILE__, line, "stat.format_version %u", (unsigned)st.format_version);
}
#define CHECK_STAT(db, p, keys, acc) t_check_stat((db), (p), (keys), (acc), __LINE__)

/* The writer reserves log space ahead of its end (kvdb_vfs.reserve):
 * zeros while the handle is open, cut off at close -- and, after a crash
 * that left them, cut off by the next writable open as a torn tail, with
 * every commit still there. */
static void test_log_reserve(void)
{
    const char *p = t_path("reserve.db"), *c = t_path("reserve-crash.db");
    char cidx[700], k[16], v[64];
    struct kvdb_stat st, st2;
    long long copied;
    size_t vl;
    int i;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_FULL);
    REQUIRE(db);
    for (i = 0; i < 50; i++) {
        sprintf(k, "key%02d", i);
        CHECK_OK(kvdb_put(db, k, strlen(k), K("a value of some length")));
    }
    CHECK_OK(t_stat(db, &st));
    if (kvdb_vfs_posix()->reserve) CHECK(t_file_size(p) > (long long)st.file_bytes);
    CHECK(tu_reserved_ok(p, (unsigned long long)st.file_bytes) == NULL);
    REQUIRE(tu_copy_file(p, c, -1) == 0); /* the disk after a crash now */
    snprintf(cidx, sizeof cidx, "%s.idx", c);
    unlink(cidx);
    copied = t_file_size(c);
    CHECK_OK(kvdb_close(db));
    CHECK(t_file_size(p) == (long long)st.file_bytes + 40); /* the zeros cut, the seal appended */
    db = OPEN(p, 0, KVDB_SYNC_FULL);
    REQUIRE(db);
    CHECK_OK(t_stat(db, &st2));
    CHECK(st2.torn_bytes == 0 && st2.keys == 50);
    CHECK_OK(kvdb_close(db));
    db = OPEN(c, 0, KVDB_SYNC_FULL);
    REQUIRE(db);
    CHECK_OK(t_stat(db, &st2));
    CHECK(st2.torn_bytes == (uint64_t)(copied - (long long)st.file_bytes));
    CHECK(st2.keys == 50 && st2.file_bytes == st.file_bytes);
    CHECK(t_file_size(c) == (long long)st.file_bytes);
    for (i = 0; i < 50; i++) {
        sprintf(k, "key%02d", i);
        CHECK_OK(kvdb_get(db, k, strlen(k), v, sizeof v, &vl));
        CHECK(vl == 22 && memcmp(v, "a value of some length", 22) == 0);
    }
    CHECK_OK(kvdb_put(db, K("after"), K("the crash")));
    CHECK_OK(kvdb_close(db));
}

static void test_stat(void)
{
    const char *p = t_path("stat.db");
    struct kvdb_stat st, st2;
    char k[16];
    int i;
    kvdb_txn *t;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_STAT(db, p, 0, 1);
    for (i = 0; i < 10; i++) {
        sprintf(k, "key%d", i);
        CHECK_OK(kvdb_put(db, k, strlen(k), K("value-value")));
    }
    CHECK_STAT(db, p, 10, 0);
    CHECK_OK(t_stat(db, &st));
    CHECK(st.commits == 10);
    CHECK(st.live_bytes >= 10 * (16 + 4 + 11));
    CHECK(st.index_bytes > 0);
    CHECK(st.db_id[0] != 0 || st.db_id[1] != 0);
    CHECK(st.torn_bytes == 0);
    /* overwrites: same key count, dead bytes grow */
    for (i = 0; i < 3; i++) {
        sprintf(k, "key%d", i);
        CHECK_OK(kvdb_put(db, k, strlen(k), K("another-value")));
    }
    CHECK_STAT(db, p, 10, 0);
    CHECK_OK(t_stat(db, &st2));
    CHECK(st2.dead_bytes > st.dead_bytes);
    CHECK(st2.dead_bytes >= st.dead_bytes + 3 * (16 + 4 + 11));
    CHECK(st2.commits == 13);
    /* deletes */
    CHECK_OK(kvdb_del(db, K("key0")));
    CHECK_OK(kvdb_del(db, K("key9")));
    CHECK_RC(kvdb_del(db, K("key9")), KVDB_NOTFOUND);
    CHECK_STAT(db, p, 8, 0);
    /* a txn: one new key, one deleted key, one overwrite */
    REQUIRE_OK(kvdb_begin(db, 0, &t));
    CHECK_OK(kvdb_txn_put(t, K("key0"), K("back")));
    CHECK_OK(kvdb_txn_del(t, K("key1")));
    CHECK_OK(kvdb_txn_put(t, K("key2"), K("over")));
    CHECK_OK(kvdb_commit(t));
    CHECK_STAT(db, p, 8, 0);
    /* an aborted txn changes nothing */
    REQUIRE_OK(kvdb_begin(db, 0, &t));
    CHECK_OK(kvdb_txn_put(t, K("new"), K("x")));
    kvdb_abort(t);
    CHECK_STAT(db, p, 8, 0);
    CHECK_OK(t_stat(db, &st));
    CHECK(st.commits == 16);
    CHECK_OK(kvdb_close(db));

    db = OPEN(p, 0, KVDB_SYNC_OFF);
    REQUIRE(db);
    CHECK_STAT(db, p, 8, 1);
    CHECK_OK(t_stat(db, &st));
    CHECK(st.torn_bytes == 0);
    CHECK(st.commits == 0);
    CHECK_OK(kvdb_close(db));
}

/* the accounting identity also while open (reported separately) */
static void test_stat_accounting_live(void)
{
    const char *p = t_path("stat2.db");
    char k[16];
    int i;
    kvdb *db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    REQUIRE(db);
    for (i = 0; i < 20; i++) {
        sprintf(k, "key%d", i % 7);
        CHECK_OK(kvdb_put(db, k, strlen(k), K("v")));
    }
    CHECK_OK(kvdb_del(db, K("key3")));
    CHECK_STAT(db, p, 6, 1);
    CHECK_OK(kvdb_close(db));
}

/* ------------------------------------------------------------------ */
/* allocations                                                        */

struct t_counts {
    long mallocs, reallocs, frees, live;
};

static void *t_malloc(void *ctx, size_t n)
{
    struct t_counts *c = ctx;
    void *p = malloc(n);
    if (p) { c->mallocs++; c->live++; }
    return p;
}

static void *t_realloc(void *ctx, void *p, size_t n)
{
    struct t_counts *c = ctx;
    void *q;
    if (!p) return t_malloc(ctx, n);
    q = realloc(p, n);
    if (q) c->reallocs++;
    return q;
}

static void t_free(void *ctx, void *p)
{
    struct t_counts *c = ctx;
    if (p) { c->frees++; c->live--; }
    free(p);
}

static long t_allocs(const struct t_counts *c) { return c->mallocs + c->reallocs; }

static void test_alloc_reads_allocate_nothing(void)
{
    static struct t_counts c;
    static kvdb_allocator a;
    const char *p = t_path("alloc1.db");
    char k[16];
    unsigned char buf[64];
    size_t n;
    long before;
    int i, pass;
    kvdb_txn *t;
    kvdb *db;
    memset(&c, 0, sizeof c);
    a.ctx = &c; a.malloc = t_malloc; a.realloc = t_realloc; a.free = t_free;
    db = OPEN_A(p, KVDB_CREATE, KVDB_SYNC_OFF, &a);
    REQUIRE(db);
    for (i = 0; i < 200; i++) {
        sprintf(k, "key%d", i);
        CHECK_OK(kvdb_put(db, k, strlen(k), K("some value")));
    }
    CHECK(c.mallocs > 0); /* the hooks are in use */
    for (pass = 0; pass < 2; pass++) { /* pass 0 warms up */
        before = t_allocs(&c);
        for (i = 0; i < 400; i++) {
            sprintf(k, "key%d", i);
            CHECK_RC(kvdb_get(db, k, strlen(k), buf, sizeof buf, &n), i < 200 ? KVDB_OK : KVDB_NOTFOUND);
            CHECK_RC(kvdb_get(db, k, strlen(k), NULL, 0, &n), i < 200 ? KVDB_OK : KVDB_NOTFOUND);
        }
        if (pass == 1 && t_allocs(&c) != before)
            tu_fail(__FILE__, __LINE__, "kvdb_get allocated %ld times", t_allocs(&c) - before);
    }
    for (pass = 0; pass < 2; pass++) {
        const void *vp;
        REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &t));
        before = t_allocs(&c);
        for (i = 0; i < 400; i++) {
            sprintf(k, "key%d", i);
            CHECK_RC(kvdb_txn_get(t, k, strlen(k), &vp, &n), i < 200 ? KVDB_OK : KVDB_NOTFOUND);
        }
#ifndef KVDB_NO_MMAP /* without mmap, values are copied into the transaction's buffer (kvdb.h) */
        if (pass == 1 && t_allocs(&c) != before)
            tu_fail(__FILE__, __LINE__, "read kvdb_txn_get allocated %ld times", t_allocs(&c) - before);
#endif
        CHECK_OK(kvdb_commit(t));
    }
    CHECK_OK(kvdb_close(db));
    if (c.live != 0) tu_fail(__FILE__, __LINE__, "%ld blocks not freed by close", c.live);
}

static void test_alloc_small_write_txn(void)
{
    static struct t_counts c;
    static kvdb_allocator a;
    const char *p = t_path("alloc2.db");
    char k[32], v[100];
    long before;
    int round, i;
    kvdb_txn *t;
    kvdb *db;
    memset(&c, 0, sizeof c);
    a.ctx = &c; a.malloc = t_malloc; a.realloc = t_realloc; a.free = t_free;
    db = OPEN_A(p, KVDB_CREATE, KVDB_SYNC_OFF, &a);
    REQUIRE(db);
    for (round = 0; round < 6; round++) {
        long got;
        REQUIRE_OK(kvdb_begin(db, 0, &t));
        before = t_allocs(&c);
        for (i = 0; i < 8; i++) {
            sprintf(k, "w%02d-%03d", round, i); /* always 7 bytes */
            memset(v, 'a' + round, sizeof v);
            v[0] = (char)i;
            CHECK_OK(kvdb_txn_put(t, k, 7, v, sizeof v));
        }
        got = t_allocs(&c) - before;
        if (round >= 3 && got != 0)
            tu_fail(__FILE__, __LINE__, "round %d: 8 kvdb_txn_put allocated %ld times", round, got);
        CHECK_OK(kvdb_commit(t));
    }
    memset(v, 'a' + 5, sizeof v);
    v[0] = 7;
    CHECK_GET(db, K("w05-007"), v, sizeof v);
    CHECK_OK(kvdb_close(db));
    if (c.live != 0) tu_fail(__FILE__, __LINE__, "%ld blocks not freed by close", c.live);
}

static void test_alloc_everything_freed(void)
{
    static struct t_counts c;
    static kvdb_allocator a;
    const char *p = t_path("alloc3.db");
    const char *ptxt = t_path("alloc3.txt");
    char k[16];
    int i;
    kvdb_txn *t, *r;
    kvdb_options o;
    kvdb *db = NULL;
    memset(&c, 0, sizeof c);
    a.ctx = &c; a.malloc = t_malloc; a.realloc = t_realloc; a.free = t_free;

    db = OPEN_A(p, KVDB_CREATE, KVDB_SYNC_OFF, &a);
    REQUIRE(db);
    REQUIRE_OK(kvdb_begin(db, KVDB_TXN_RDONLY, &r));
    REQUIRE_OK(kvdb_begin(db, 0, &t));
    for (i = 0; i < 3000; i++) {
        sprintf(k, "k%d", i);
        CHECK_OK(kvdb_txn_put(t, k, strlen(k), k, strlen(k)));
    }
    CHECK_OK(kvdb_commit(t));
    REQUIRE_OK(kvdb_begin(db, 0, &t));
    CHECK_OK(kvdb_txn_put(t, K("aborted"), K("x")));
    kvdb_abort(t);
    for (i = 0; i < 500; i++) {
        sprintf(k, "k%d", i);
        CHECK_OK(kvdb_del(db, k, strlen(k)));
    }
    kvdb_abort(r);
    CHECK_OK(kvdb_close(db));
    CHECK(c.mallocs > 0);
    if (c.live != 0) tu_fail(__FILE__, __LINE__, "after first close: %ld blocks live", c.live);

    db = OPEN_A(p, 0, KVDB_SYNC_OFF, &a);
    REQUIRE(db);
    CHECK_GET(db, K("k2999"), K("k2999"));
    CHECK_OK(kvdb_close(db));
    if (c.live != 0) tu_fail(__FILE__, __LINE__, "after reopen+close: %ld blocks live", c.live);

    /* failed opens free what they took */
    REQUIRE(t_spit(ptxt, K("definitely not a database, just some text for the test\n")) == 0);
    kvdb_options_init(&o);
    o.alloc = &a;
    o.flags = KVDB_CREATE;
    db = NULL;
    CHECK_RC(kvdb_open(ptxt, &o, &db), KVDB_ENOTDB);
    if (c.live != 0) tu_fail(__FILE__, __LINE__, "after failed open: %ld blocks live", c.live);
    o.flags = 0;
    CHECK(kvdb_open(t_path("alloc3-missing.db"), &o, &db) != KVDB_OK);
    if (c.live != 0) tu_fail(__FILE__, __LINE__, "after failed open 2: %ld blocks live", c.live);

    /* in memory */
    o.flags = KVDB_INMEMORY | KVDB_CREATE;
    db = NULL;
    if (kvdb_open(NULL, &o, &db) == KVDB_OK) {
        for (i = 0; i < 1000; i++) {
            sprintf(k, "m%d", i);
            CHECK_OK(kvdb_put(db, k, strlen(k), k, strlen(k)));
        }
        CHECK_OK(kvdb_close(db));
        if (c.live != 0) tu_fail(__FILE__, __LINE__, "after in-memory close: %ld blocks live", c.live);
    } else {
        CHECK(0);
    }
}

/* ------------------------------------------------------------------ */
/* a big value                                                        */

static void test_huge_value(void)
{
    const char *p = t_path("huge.db");
    const size_t n = (size_t)64 << 20;
    unsigned char *v = malloc(n), *out = malloc(n + 1);
    uint64_t s = 64;
    size_t i, got;
    int pass;
    kvdb *db;
    if (!v || !out) { free(v); free(out); CHECK(0); return; }
    for (i = 0; i + 8 <= n; i += 8) {
        uint64_t x = tu_rand(&s);
        memcpy(v + i, &x, 8);
    }
    db = OPEN(p, KVDB_CREATE, KVDB_SYNC_OFF);
    if (!db) { free(v); free(out); return; }
    CHECK_OK(kvdb_put(db, K("huge"), v, n));
    CHECK_OK(kvdb_put(db, K("small"), K("s")));
    for (pass = 0; pass < 2; pass++) {
        memset(out, 0, n + 1);
        got = 0;
        CHECK_OK(kvdb_get(db, K("huge"), out, n + 1, &got));
        CHECK(got == n);
        CHECK(memcmp(out, v, n) == 0);
        CHECK_GET(db, K("small"), K("s"));
        CHECK_OK(kvdb_close(db));
        db = NULL;
        if (pass == 0) {
            db = OPEN(p, 0, KVDB_SYNC_OFF);
            if (!db) break;
        }
    }
    free(v);
    free(out);
}

int main(void)
{
    tu_tmpdir("api");
    RUN(test_version);
    RUN(test_options_defaults);
    RUN(test_open_null_options_creates);
    RUN(test_put_get_del);
    RUN(test_get_buffer_semantics);
    RUN(test_empty_value);
    RUN(test_binary_keys);
    RUN(test_key_limits);
    RUN(test_value_limits);
    RUN(test_einval);
    RUN(test_einval_options);
    RUN(test_nothing_to_do);
    RUN(test_strerror);
    RUN(test_errmsg_after_failed_open);
    RUN(test_txn_own_writes);
    RUN(test_txn_abort);
    RUN(test_txn_read_only);
    RUN(test_txn_many_entries);
    RUN(test_snapshot_isolation);
    RUN(test_snapshot_end_is_paced);
    RUN(test_writer_same_thread);
#ifndef KVDB_NO_THREADS /* one thread only in that build */
    RUN(test_writer_nowait_other_thread);
    RUN(test_writer_waits_other_thread);
#endif
    RUN(test_close_busy);
    RUN(test_rdonly_handle);
    RUN(test_locking);
    RUN(test_notdb_text);
    RUN(test_zero_length_file);
    RUN(test_missing_file_no_create);
    RUN(test_version_patched);
    RUN(test_header_bad_checksum);
    RUN(test_file_format);
    RUN(test_horizon_stat);
    RUN(test_inmemory);
    RUN(test_sync_modes);
    RUN(test_stat);
    RUN(test_log_reserve);
    RUN(test_stat_accounting_live);
    RUN(test_alloc_reads_allocate_nothing);
    RUN(test_alloc_small_write_txn);
    RUN(test_alloc_everything_freed);
    RUN(test_huge_value);
    tu_rmrf();
    TEST_MAIN_END();
}
