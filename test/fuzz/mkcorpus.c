/*
 * mkcorpus.c -- writes the seed corpora: small databases made by the engine
 * (test/fuzz/corpus_open/) and operation sequences (test/fuzz/corpus_ops/).
 *   cc -I. test/fuzz/mkcorpus.c -o mkcorpus -lpthread && ./mkcorpus test/fuzz
 * (make fuzz-corpus does this).  The output is deterministic.
 */
#include "../../kvdb.c"
#include "fuzzvfs.h"

static void put_file(const char *dir, const char *name, const void *p, size_t n)
{
    char path[600];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) { perror(path); exit(1); }
}

/* a database of ntx transactions; tail: extra bytes of a torn transaction */
static void mkdb(const char *dir, const char *name, int ntx, int sync, int tail, int big)
{
    fz_disk d;
    kvdb *db;
    kvdb_options o;
    int t, i;
    char k[32], v[2048];
    fz_init(&d, 1, "c.db", NULL, 0);
    kvdb_options_init(&o);
    o.flags = KVDB_CREATE;
    o.sync = sync;
    o.vfs = &d.vfs;
    if (kvdb_open("c.db", &o, &db) != KVDB_OK) exit(1);
    for (t = 0; t < ntx; t++) {
        kvdb_txn *x;
        kvdb_begin(db, 0, &x);
        for (i = 0; i <= t % 3; i++) {
            int n = snprintf(k, sizeof k, "key%d", (t * 3 + i) % 7);
            size_t vl = big && t == 1 ? 1500 : (size_t)((t + i) % 5) * 3;
            memset(v, 'a' + t % 26, vl);
            if (t % 4 == 3 && i == 0) kvdb_txn_del(x, k, (size_t)n);
            else kvdb_txn_put(x, k, (size_t)n, v, vl);
        }
        kvdb_commit(x);
        if (sync == KVDB_SYNC_NORMAL && t == ntx / 2) kvdb_sync(db);
    }
    {
        uint64_t end = d.f[0].size;
        if (tail) {
            kvdb_put(db, "torn", 4, "tail value", 10);
            put_file(dir, name, d.f[0].p, (size_t)(end + (uint64_t)tail));
        } else {
            put_file(dir, name, d.f[0].p, (size_t)end);
        }
    }
    kvdb_close(db);
}

int main(int argc, char **argv)
{
    char od[600], xd[600];
    const char *base = argc > 1 ? argv[1] : "test/fuzz";
    snprintf(od, sizeof od, "%s/corpus_open", base);
    snprintf(xd, sizeof xd, "%s/corpus_ops", base);
    mkdb(od, "empty.db", 0, KVDB_SYNC_FULL, 0, 0);
    mkdb(od, "one.db", 1, KVDB_SYNC_FULL, 0, 0);
    mkdb(od, "full6.db", 6, KVDB_SYNC_FULL, 0, 0);
    mkdb(od, "normal8.db", 8, KVDB_SYNC_NORMAL, 0, 0);
    mkdb(od, "torn.db", 4, KVDB_SYNC_FULL, 20, 0);
    mkdb(od, "big.db", 3, KVDB_SYNC_FULL, 0, 1);
    put_file(od, "short-header", "\x89KVDB\r\n", 7);
    put_file(od, "text", "hello, world\n", 13);
    {   /* operation sequences: (op, key[, value length byte, value...]) */
        static const unsigned char s1[] = { 0, 1, 40, 'a', 'b', 3, 1, 2, 1, 3, 1, 15, 0 };
        static const unsigned char s2[] = { 4, 0, 5, 2, 60, 'x', 7, 3, 8, 2, 8, 3, 9, 0, 15, 0 };
        static const unsigned char s3[] = { 0, 5, 210, 11, 0, 0, 5, 50, 11, 5, 12, 0, 14, 4, 15, 0 };
        static const unsigned char s4[] = { 4, 1, 0, 1, 40, 2, 1, 14, 0, 10, 0, 13, 0, 14, 7, 3, 1 };
        static const unsigned char s5[] = { 0, 15, 250, 0, 14, 100, 1, 9, 33, 4, 2, 6, 15, 80, 9, 0, 14, 2, 15, 0 };
        put_file(xd, "put-get-del", s1, sizeof s1);
        put_file(xd, "txn", s2, sizeof s2);
        put_file(xd, "snapshot-reopen", s3, sizeof s3);
        put_file(xd, "busy", s4, sizeof s4);
        put_file(xd, "long-key-modes", s5, sizeof s5);
    }
    return 0;
}
