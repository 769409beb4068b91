/*
 * bigfile.c -- file offsets past 4 GiB through the POSIX file layer and
 * the engine.  make test builds it for the host and, in the m32 flavour,
 * as a 32-bit program: with a 32-bit off_t a write at 4 GiB once landed on
 * the file header, a truncate to 4 GiB + 16 left 16 bytes, and a file over
 * 2 GiB did not open.  The files are sparse: a few blocks on disk however
 * large they are.
 */
#include "../kvdb.c"
#include "testutil.h"

#define BF_4G ((uint64_t)1 << 32)

static const char bf_hdr[16] = "header-16-bytes";
static const char bf_far[16] = "past-4-GiB-data";

static int bf_size(const kvdb_vfs *v, kvdb_file *f, uint64_t want)
{
    uint64_t sz = 0;
    int rc = v->size(v->ctx, f, &sz);
    if (rc != KVDB_OK || sz != want) {
        tu_fail(__FILE__, __LINE__, "size = %llu (rc %d), want %llu", (unsigned long long)sz, rc, (unsigned long long)want);
        return -1;
    }
    return 0;
}

/* the file layer itself: write, read, size, truncate and reserve past 4 GiB */
static void test_vfs_past_4g(void)
{
    const kvdb_vfs *v = kvdb_vfs_posix();
    const char *p = tu_path("vfs.bin");
    kvdb_file *f = NULL;
    char buf[16];
    unlink(p);
    REQUIRE_OK(v->open(v->ctx, p, KVDB_VFS_CREATE | KVDB_VFS_EXCL, &f));
    CHECK_OK(v->write(v->ctx, f, 0, bf_hdr, 16));
    CHECK_OK(v->write(v->ctx, f, BF_4G + 16, bf_far, 16));
    bf_size(v, f, BF_4G + 32);
    CHECK_OK(v->read(v->ctx, f, 0, buf, 16));
    CHECK(memcmp(buf, bf_hdr, 16) == 0); /* not overwritten by the far write */
    CHECK_OK(v->read(v->ctx, f, BF_4G + 16, buf, 16));
    CHECK(memcmp(buf, bf_far, 16) == 0);
    CHECK_OK(v->truncate(v->ctx, f, BF_4G + 16));
    bf_size(v, f, BF_4G + 16);
    CHECK_OK(v->read(v->ctx, f, BF_4G, buf, 16));
    CHECK(memcmp(buf, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16) == 0);
    CHECK_OK(v->truncate(v->ctx, f, 3 * (BF_4G / 4)));
    bf_size(v, f, 3 * (BF_4G / 4));
    if (v->reserve) {
        CHECK_OK(v->reserve(v->ctx, f, BF_4G + BF_4G / 4));
        bf_size(v, f, BF_4G + BF_4G / 4);
    }
    CHECK_OK(v->close(v->ctx, f));
    f = NULL;
    REQUIRE_OK(v->open(v->ctx, p, KVDB_VFS_RDONLY, &f)); /* a file over 4 GiB opens */
    bf_size(v, f, v->reserve ? BF_4G + BF_4G / 4 : 3 * (BF_4G / 4));
    CHECK_OK(v->read(v->ctx, f, 0, buf, 16));
    CHECK(memcmp(buf, bf_hdr, 16) == 0);
    CHECK_OK(v->close(v->ctx, f));
    unlink(p);
}

/* a database followed by zeros up to 4 GiB + 1000 (what a crash could leave
 * of space reserved ahead, writ large): a read-only open reports the tail
 * and changes nothing, a writable one cuts it, and every key is there */
static void test_db_large_tail(void)
{
    const char *p = tu_path("big.db");
    kvdb *db = NULL;
    kvdb_options o;
    struct kvdb_stat st;
    char k[16], val[64];
    size_t vl;
    long long sz0;
    int i, pass;
    struct stat fs;
    unlink(p);
    kvdb_options_init(&o);
    o.flags = KVDB_CREATE;
    REQUIRE_OK(kvdb_open(p, &o, &db));
    for (i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "key%03d", i);
        CHECK_OK(kvdb_put(db, k, strlen(k), k, strlen(k)));
    }
    REQUIRE_OK(kvdb_close(db));
    REQUIRE(stat(p, &fs) == 0);
    sz0 = (long long)fs.st_size;
    REQUIRE(truncate(p, (off_t)(BF_4G + 1000)) == 0);
    unlink(tu_path("big.db.idx")); /* the whole log is read */
    for (pass = 0; pass < 2; pass++) {
        o.flags = pass ? 0 : KVDB_RDONLY;
        db = NULL;
        REQUIRE_OK(kvdb_open(p, &o, &db));
        CHECK_OK(kvdb_stat(db, &st));
        CHECK(st.keys == 100 && st.torn_bytes == BF_4G + 1000 - (uint64_t)sz0);
        for (i = 0; i < 100; i += 7) {
            snprintf(k, sizeof k, "key%03d", i);
            CHECK_OK(kvdb_get(db, k, strlen(k), val, sizeof val, &vl));
            CHECK(vl == strlen(k) && memcmp(val, k, vl) == 0);
        }
        CHECK_OK(kvdb_close(db));
        REQUIRE(stat(p, &fs) == 0);
        CHECK((long long)fs.st_size == (pass ? sz0 : (long long)(BF_4G + 1000)));
    }
    unlink(p);
    unlink(tu_path("big.db.idx"));
}

int main(void)
{
    tu_tmpdir("bigfile");
    printf("# off_t is %u bytes, pointers %u\n", (unsigned)sizeof(off_t), (unsigned)sizeof(void *));
    RUN(test_vfs_past_4g);
    RUN(test_db_large_tail);
    tu_rmrf();
    TEST_MAIN_END();
}
