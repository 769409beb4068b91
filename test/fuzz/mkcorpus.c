/*
 * mkcorpus.c -- writes the seed corpora: small databases made by the engine
 * (test/fuzz/corpus_open/), operation sequences (test/fuzz/corpus_ops/) and
 * sidecars and patches of them (test/fuzz/corpus_sidecar/, in the input
 * format described at the top of fuzz_sidecar.c).
 *   cc -I. test/fuzz/mkcorpus.c -o mkcorpus -lpthread && ./mkcorpus test/fuzz
 * (make fuzz-corpus does this).  The output is deterministic.
 */
#include "../../kvdb.c"
#include "fuzzvfs.h"
#include "fuzz_sidecar.h"

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
        int at = fz_lookup(&d, "c.db"); /* creation renamed a new file over the name */
        fz_file *f = at >= 0 ? &d.f[d.ino[at]] : NULL;
        uint64_t end;
        unsigned char *h;
        if (!f || f->size < LG_HDR) { fprintf(stderr, "mkcorpus: %s: no database made\n", name); exit(1); }
        end = f->size;
        h = f->p;
        kv_st64(h + 40, FS_TIME); /* a fixed creation time, resealed: deterministic seeds */
        kv_st64(h + 56, XXH3_64bits(h, 56));
        if (tail) {
            kvdb_put(db, "torn", 4, "tail value", 10);
            put_file(dir, name, f->p, (size_t)(end + (uint64_t)tail));
        } else {
            put_file(dir, name, f->p, (size_t)end);
        }
    }
    kvdb_close(db);
}

/* ---- corpus_sidecar ---- */
typedef struct {
    unsigned char b[FS_MAXV * 20];
    size_t n;
} mk_in;

static void mk_bytes(mk_in *in, const void *p, size_t n)
{
    if (in->n + n > sizeof in->b) exit(1);
    memcpy(in->b + in->n, p, n);
    in->n += n;
}

/* a patch: op, u16 offset, args */
static void mk_patch(mk_in *in, unsigned op, size_t off, const void *args, size_t n)
{
    unsigned char h[3];
    h[0] = (unsigned char)op;
    h[1] = (unsigned char)off;
    h[2] = (unsigned char)(off >> 8);
    mk_bytes(in, h, 3);
    mk_bytes(in, args, n);
}

static void mk_set64(mk_in *in, size_t off, uint64_t v)
{
    unsigned char b[8];
    kv_st64(b, v);
    mk_patch(in, 3, off, b, 8);
}

static void mk_start(mk_in *in, unsigned mode, unsigned base)
{
    in->n = 0;
    in->b[in->n++] = (unsigned char)(mode | base << 3);
}

static void mk_sidecar(const char *dir)
{
    static fs_db d, f;
    mk_in in;
    uint64_t eoff, loff;
    size_t slot;
    unsigned char b[4];
    fs_build(&d, 1);
    fs_build_foreign(&f, &d);
    eoff = kv_ld64(d.s2 + 72);
    loff = kv_ld64(d.s2 + 88);
    /* raw bytes: the three valid sidecars, none */
    mk_start(&in, 0, 0);
    mk_bytes(&in, d.s2, d.s2len);
    put_file(dir, "raw-newest", in.b, in.n);
    mk_start(&in, 0, 0);
    mk_bytes(&in, d.s1, d.s1len);
    put_file(dir, "raw-older", in.b, in.n);
    mk_start(&in, 0, 0);
    mk_bytes(&in, f.s2, f.s2len);
    put_file(dir, "raw-foreign", in.b, in.n);
    mk_start(&in, 0, 0);
    put_file(dir, "none", in.b, in.n);
    /* the valid ones unchanged, one byte flipped, cut short */
    mk_start(&in, 1, 0);
    put_file(dir, "newest", in.b, in.n);
    mk_start(&in, 1, 1);
    put_file(dir, "older", in.b, in.n);
    mk_start(&in, 1, 0);
    mk_patch(&in, 0, (size_t)eoff + 3, "\x40", 1);
    put_file(dir, "flip-entry", in.b, in.n);
    mk_start(&in, 3, 0);
    b[0] = (unsigned char)(d.s2len - 12);
    b[1] = (unsigned char)((d.s2len - 12) >> 8);
    mk_bytes(&in, b, 2);
    put_file(dir, "truncated", in.b, in.n);
    /* resealed: each check of the loader, and self-consistent lies */
    mk_start(&in, 2, 0);
    put_file(dir, "resealed", in.b, in.n);
    mk_start(&in, 4, 0);
    b[0] = (unsigned char)(d.s2len + 16);
    b[1] = (unsigned char)((d.s2len + 16) >> 8);
    mk_bytes(&in, b, 2);
    put_file(dir, "resealed-longer", in.b, in.n);
    mk_start(&in, 2, 0);
    mk_set64(&in, 48, kv_ld64(d.s1 + 48)); /* claims to cover only what S1 covers */
    mk_set64(&in, 56, kv_ld64(d.s1 + 56));
    put_file(dir, "resealed-covers-less", in.b, in.n);
    mk_start(&in, 4, 0);
    b[0] = SC_HDR + 2;
    b[1] = 0;
    mk_bytes(&in, b, 2);
    put_file(dir, "resealed-header-only", in.b, in.n);
    mk_start(&in, 2, 0);
    mk_set64(&in, 48, LG_HDR); /* covers no log at all */
    put_file(dir, "resealed-covers-none", in.b, in.n);
    mk_start(&in, 2, 0);
    kv_st32(b, kv_ld32(d.s2 + loff + 12) + 1);
    mk_patch(&in, 2, (size_t)loff + 12, b, 4);
    put_file(dir, "resealed-leaf-count", in.b, in.n);
    mk_start(&in, 2, 0);
    mk_patch(&in, 1, (size_t)loff, "\x01", 1);
    put_file(dir, "resealed-leaf-level", in.b, in.n);
    mk_start(&in, 2, 0); /* the first leaf covers half its children's range */
    b[0] = (unsigned char)(d.s2[loff + 1] + 1);
    mk_patch(&in, 1, (size_t)loff + 1, b, 1);
    put_file(dir, "resealed-leaf-depth", in.b, in.n);
    mk_start(&in, 2, 0); /* the second leaf at the first one's place */
    memset(b, 0, 4);
    mk_patch(&in, 2, (size_t)(loff + 48 + (uint64_t)kv_ld32(d.s2 + loff + 8) * HIX_SLOT + 4), b, 4);
    put_file(dir, "resealed-leaf-overlap", in.b, in.n);
    mk_start(&in, 2, 0);
    mk_set64(&in, SC_HDR, 3);
    put_file(dir, "resealed-prefix-len", in.b, in.n);
    mk_start(&in, 2, 1);
    mk_patch(&in, 0, SC_HDR + 8, "\x01", 1);
    put_file(dir, "resealed-older-prefix", in.b, in.n);
    mk_start(&in, 2, 0);
    mk_set64(&in, 64, kv_ld64(d.s2 + 64) - 1);
    put_file(dir, "resealed-entries", in.b, in.n);
    mk_start(&in, 2, 0); /* a sorted entry at another record (same length code) */
    b[0] = 7;
    b[1] = d.s2[eoff + 5 * 16 + 15];
    mk_patch(&in, 5, (size_t)eoff + 5 * 16 + 8, b, 2);
    put_file(dir, "resealed-entry-at", in.b, in.n);
    for (slot = (size_t)loff + 48; kv_ld32(d.s2 + slot) == 0; slot += HIX_SLOT) {}
    mk_start(&in, 2, 0); /* a hash slot at another record */
    b[0] = 9;
    b[1] = 0;
    mk_patch(&in, 5, slot + 4, b, 2);
    put_file(dir, "resealed-slot-at", in.b, in.n);
}

int main(int argc, char **argv)
{
    char od[600], xd[600], sd[600];
    const char *base = argc > 1 ? argv[1] : "test/fuzz";
    snprintf(od, sizeof od, "%s/corpus_open", base);
    snprintf(xd, sizeof xd, "%s/corpus_ops", base);
    snprintf(sd, sizeof sd, "%s/corpus_sidecar", base);
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
    mk_sidecar(sd);
    return 0;
}
