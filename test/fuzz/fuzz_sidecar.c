/*
 * fuzz_sidecar.c -- libFuzzer target: the input as the sidecar
 * ("<db>.idx") of a fixed, intact database (fuzz_sidecar.h).
 *
 * The first input byte picks how the sidecar is made:
 *   bits 0..2  mode: 0 the rest of the input, raw (no bytes: no sidecar);
 *              1 a valid sidecar patched by the rest; 2 the same, then
 *              both checksums recomputed ("resealed"); 3 resized (next two
 *              bytes), then patched; 4 resized, patched, resealed; 5..7 as 2
 *   bits 3..4  which valid sidecar: 0 and 3 the newest (S2, covers the
 *              whole log), 1 an older one (S1, the log goes on after it),
 *              2 that of another database with the same contents
 * A patch is (op, u16 offset, args): xor a byte, set a byte, set a u32, set
 * a u64, copy up to 64 bytes from elsewhere in the file, or set a u64 to
 * the offset of a PUT record of the log (with the bits of a sorted entry's
 * length code and tombstone flag).  Resealing lets the loader's checks past
 * the checksums be reached.
 *
 * Each sidecar is opened writable with mmap and read-only through pread.
 * The open must succeed (the log is intact) -- but a resealed sidecar that
 * passes the loader's checks and is wrong may make the replay after it
 * fail, KVDB_ECORRUPT with the files unchanged.  Unless the sidecar was
 * resealed and differs from S1 and S2, or it was not loaded at all, the
 * handle must show exactly the log's contents: every key by kvdb_get and
 * in a read transaction, full forward and reverse scans, prefix scans and
 * a seek.  A valid S1 or S2 must be loaded (kvdb_stat's sidecar string is
 * "loaded" exactly when sidecar_loaded is 1); an unresealed sidecar that
 * differs from them must not be.  A resealed, self-consistent but wrong
 * sidecar is trusted by design; then only: no crash, no undefined
 * behaviour, no leak, and nothing read is ever anything but a value its
 * key once had.  The writable pass then writes (a put, an overwrite, a
 * delete), checks them, closes, and -- when the contents were exact --
 * reopens read-only with the sidecar that close wrote: loaded, nothing
 * replayed, exact.  Every pass ends with no file handle, mapping or
 * allocation (the allocator hook counts them) left.
 */
#include "../../kvdb.c"
#include "fuzzvfs.h"
#include "fuzz_sidecar.h"

#define FS_XCAP 16384      /* largest sidecar made */
#define FS_MAXREC 1024

static fs_db fs_d, fs_f;   /* the database; another one (its S2 is foreign) */
static int fs_order[FS_NK];/* ids in key order */
static uint64_t fs_recs[FS_MAXREC];
static int fs_nrecs;
static uint64_t fs_p1;     /* log bytes S1 covers */
static int fs_del_id;      /* the writable pass deletes this key */

typedef struct {
    int ver[FS_NK];
    unsigned hist[FS_NK];
} fs_model;

/* ---- the allocator hook: counts live blocks ---- */
static long fs_live;
static void *fs_malloc(void *ctx, size_t n)
{
    void *p = malloc(n);
    (void)ctx;
    if (p) __atomic_add_fetch(&fs_live, 1, __ATOMIC_RELAXED);
    return p;
}
static void *fs_realloc(void *ctx, void *p, size_t n) { (void)ctx; return realloc(p, n); }
static void fs_free(void *ctx, void *p)
{
    (void)ctx;
    free(p);
    __atomic_sub_fetch(&fs_live, 1, __ATOMIC_RELAXED);
}
static const kvdb_allocator fs_alloc = { NULL, fs_malloc, fs_realloc, fs_free };

static char fs_k[FS_NK][32];     /* keys and values, made once */
static size_t fs_kl[FS_NK];
static unsigned char fs_v[FS_NK][6][FS_MAXV];
static size_t fs_vl[FS_NK][6];

static int fs_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : an < bn ? -1 : an > bn;
}

static int fs_idcmp(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return fs_cmp(fs_k[x], fs_kl[x], fs_k[y], fs_kl[y]);
}

static void fs_setup(void)
{
    static int done;
    uint64_t off;
    int i, v;
    if (done) return;
    done = 1;
    fs_build(&fs_d, 1);
    fs_build_foreign(&fs_f, &fs_d);
    FZ_ASSERT(fs_d.s2len == fs_f.s2len && fs_d.seed != fs_f.seed);
    FZ_ASSERT(fs_d.s1len >= SC_HDR && fs_d.s2len + 100 < FS_XCAP);
    fs_p1 = kv_ld64(fs_d.s1 + 48);
    FZ_ASSERT(fs_p1 > LG_HDR && fs_p1 < fs_d.loglen && kv_ld64(fs_d.s2 + 48) == fs_d.loglen);
    for (i = 0; i < FS_NK; i++) {
        fs_order[i] = i;
        fs_kl[i] = fs_key(i, fs_k[i]);
        for (v = 1; v < 6; v++) fs_vl[i][v] = fs_val(i, v, fs_v[i][v]);
    }
    qsort(fs_order, FS_NK, sizeof fs_order[0], fs_idcmp);
    for (off = LG_HDR; off + LG_REC <= fs_d.loglen;) { /* the PUT records */
        const unsigned char *p = fs_d.log + off;
        if (p[8] == LG_PUT && fs_nrecs < FS_MAXREC) fs_recs[fs_nrecs++] = off;
        off += LG_REC + kv_ld16(p + 10) + kv_ld32(p + 12);
    }
    FZ_ASSERT(off == fs_d.loglen && fs_nrecs > 100);
    for (fs_del_id = 10; !fs_d.ver[fs_del_id]; fs_del_id++) {}
}

/* ---- the sidecar from the input ---- */
static void fs_reseal(unsigned char *x, size_t n)
{
    if (n < SC_HDR) return;
    kv_st64(x + 112, XXH3_64bits_withSeed(x + SC_HDR, n - SC_HDR, fs_d.seed));
    kv_st64(x + 120, XXH3_64bits(x, 120));
}

/* store n bytes of v at off, clipped to the file */
static void fs_poke(unsigned char *x, size_t xl, size_t off, const unsigned char *v, size_t n)
{
    if (off < xl) memcpy(x + off, v, n < xl - off ? n : xl - off);
}

static void fs_patch(unsigned char *x, size_t xl, const uint8_t *in, size_t n)
{
    size_t p = 0;
    static const size_t args[6] = { 1, 1, 4, 8, 3, 2 };
    while (xl && p + 3 <= n) {
        unsigned op = in[p] % 6u;
        size_t off = (size_t)(in[p + 1] | in[p + 2] << 8) % xl;
        const uint8_t *a = in + p + 3;
        unsigned char b[8];
        p += 3;
        if (n - p < args[op]) break;
        p += args[op];
        switch (op) {
        case 0: x[off] ^= a[0]; break;
        case 1: x[off] = a[0]; break;
        case 2: case 3: fs_poke(x, xl, off, a, op == 2 ? 4 : 8); break;
        case 4: {
            size_t len = (size_t)a[0] % 64 + 1, src = (size_t)(a[1] | a[2] << 8) % xl;
            if (len > xl - src) len = xl - src;
            if (len > xl - off) len = xl - off;
            memmove(x + off, x + src, len);
            break;
        }
        default:
            kv_st64(b, fs_recs[a[0] % fs_nrecs] | (uint64_t)(a[1] & 0x8f) << 56);
            fs_poke(x, xl, off, b, 8);
            break;
        }
    }
}

/* *has = 0: no sidecar file */
static void fs_make(const uint8_t *data, size_t size, unsigned char *x, size_t *xl, int *has, int *resealed)
{
    unsigned mode = data[0] & 7u, base = (data[0] >> 3) & 3u;
    const unsigned char *b = base == 1 ? fs_d.s1 : base == 2 ? fs_f.s2 : fs_d.s2;
    size_t bl = base == 1 ? fs_d.s1len : base == 2 ? fs_f.s2len : fs_d.s2len, p = 1;
    *has = 1;
    *resealed = mode == 2 || mode >= 4;
    if (mode == 0) {
        *has = size > 1;
        *xl = size - 1 < FS_XCAP ? size - 1 : FS_XCAP;
        memcpy(x, data + 1, *xl);
        return;
    }
    memcpy(x, b, bl);
    *xl = bl;
    if (mode == 3 || mode == 4) {
        size_t nl = size >= 3 ? (size_t)(data[1] | data[2] << 8) % (bl + 65) : bl;
        if (nl > bl) memset(x + bl, 0, nl - bl);
        *xl = nl;
        p = size >= 3 ? 3 : size;
    }
    fs_patch(x, *xl, data + p, size - p);
    if (*resealed) fs_reseal(x, *xl);
}

static int fs_is(const unsigned char *x, size_t xl, const unsigned char *s, size_t sl)
{
    return xl == sl && memcmp(x, s, sl) == 0;
}

/* the disk: the log, and the sidecar x unless !has */
static void fs_disk(fz_disk *d, int map, const unsigned char *x, size_t xl, int has)
{
    fz_init(d, map, "fuzz.db", fs_d.log, fs_d.loglen);
    if (!has) return;
    d->f[1].used = 1;
    d->f[1].links = 1;
    if (xl) memcpy(d->f[1].p, x, xl);
    d->f[1].size = xl;
    strcpy(d->name[1], "fuzz.db.idx");
    d->ino[1] = 1;
}

/* ---- the oracle ---- */
/* is v (vl bytes) a value id holds (exact) or once held? */
static int fs_val_ok(const fs_model *m, int id, const void *v, size_t vl, int exact)
{
    int ver;
    for (ver = 1; ver < 6; ver++) {
        if (exact ? ver != m->ver[id] : !(m->hist[id] & 1u << ver)) continue;
        if (fs_vl[id][ver] == vl && memcmp(fs_v[id][ver], v, vl) == 0) return 1;
    }
    return 0;
}

/* the id of key k, or -1 */
static int fs_id_of(const void *k, size_t kl)
{
    int lo = 0, hi = FS_NK;
    while (lo < hi) {
        int mid = (lo + hi) / 2, id = fs_order[mid], c = fs_cmp(fs_k[id], fs_kl[id], (const char *)k, kl);
        if (c == 0) return id;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

static void fs_check_get(kvdb *db, kvdb_txn *t, const fs_model *m, int id, int exact)
{
    size_t vl = 0;
    static unsigned char buf[1024];
    const void *v;
    int rc = t ? kvdb_txn_get(t, fs_k[id], fs_kl[id], &v, &vl) : kvdb_get(db, fs_k[id], fs_kl[id], buf, sizeof buf, &vl);
    if (!t) v = buf;
    if (exact) {
        FZ_ASSERT(rc == (m->ver[id] ? KVDB_OK : KVDB_NOTFOUND));
    } else {
        FZ_ASSERT(rc == KVDB_OK || rc == KVDB_NOTFOUND || rc == KVDB_ECORRUPT);
    }
    if (rc == KVDB_OK) FZ_ASSERT(fs_val_ok(m, id, v, vl, exact));
}

/* keys with prefix pfx (forward or reverse): exact, the model's in order;
 * else every pair is one its key once held */
static void fs_scan(kvdb_txn *t, const fs_model *m, const char *pfx, int rev, int exact)
{
    kvdb_iter *it;
    const void *k, *v;
    size_t kl, vl, pl = strlen(pfx);
    int i, rc, steps = 0;
    rc = kvdb_iter_prefix(t, pfx, pl, rev ? KVDB_ITER_REVERSE : 0, &it);
    if (!exact && rc == KVDB_ECORRUPT) return;
    FZ_ASSERT(rc == KVDB_OK);
    for (i = 0; i < FS_NK; i++) {
        int id = fs_order[rev ? FS_NK - 1 - i : i];
        if (!exact) break;
        if (!m->ver[id] || fs_kl[id] < pl || memcmp(fs_k[id], pfx, pl) != 0) continue;
        FZ_ASSERT(kvdb_iter_next(it, &k, &kl, &v, &vl) == KVDB_OK);
        FZ_ASSERT(kl == fs_kl[id] && memcmp(k, fs_k[id], kl) == 0);
        FZ_ASSERT(fs_val_ok(m, id, v, vl, 1));
    }
    while ((rc = kvdb_iter_next(it, &k, &kl, &v, &vl)) == KVDB_OK) {
        int id = fs_id_of(k, kl);
        FZ_ASSERT(!exact);
        FZ_ASSERT(id >= 0 && fs_val_ok(m, id, v, vl, 0));
        FZ_ASSERT(++steps <= 4 * FS_MAXREC);
    }
    FZ_ASSERT(rc == KVDB_DONE || (!exact && rc == KVDB_ECORRUPT));
    kvdb_iter_close(it);
}

/* forward from the middle key: exactly the model's keys from there */
static void fs_seek(kvdb_txn *t, const fs_model *m)
{
    kvdb_iter *it;
    const void *k, *v;
    size_t kl, vl;
    int i;
    FZ_ASSERT(kvdb_iter_prefix(t, NULL, 0, 0, &it) == KVDB_OK);
    FZ_ASSERT(kvdb_iter_seek(it, fs_k[fs_order[FS_NK / 2]], fs_kl[fs_order[FS_NK / 2]]) == KVDB_OK);
    for (i = FS_NK / 2; i < FS_NK; i++) {
        int id = fs_order[i];
        if (!m->ver[id]) continue;
        FZ_ASSERT(kvdb_iter_next(it, &k, &kl, &v, &vl) == KVDB_OK);
        FZ_ASSERT(kl == fs_kl[id] && memcmp(k, fs_k[id], kl) == 0 && fs_val_ok(m, id, v, vl, 1));
    }
    FZ_ASSERT(kvdb_iter_next(it, &k, &kl, &v, &vl) == KVDB_DONE);
    kvdb_iter_close(it);
}

/* full: also the reverse and prefix scans, reads in a transaction, a seek */
static void fs_check(kvdb *db, const fs_model *m, int exact, int full)
{
    struct kvdb_stat st;
    kvdb_txn *t;
    uint64_t live = 0;
    int id;
    FZ_ASSERT(kvdb_stat(db, &st) == KVDB_OK);
    FZ_ASSERT(st.sidecar && (strcmp(st.sidecar, "loaded") == 0) == (st.sidecar_loaded == 1));
    for (id = 0; id < FS_NK; id++) {
        live += m->ver[id] != 0;
        fs_check_get(db, NULL, m, id, exact);
    }
    if (exact) FZ_ASSERT(st.keys == live);
    FZ_ASSERT(kvdb_begin(db, KVDB_TXN_RDONLY, &t) == KVDB_OK);
    fs_scan(t, m, "", 0, exact);
    if (full) {
        for (id = 0; id < FS_NK; id += 7) fs_check_get(db, t, m, id, exact);
        fs_scan(t, m, "", 1, exact);
        fs_scan(t, m, "user:1", 0, exact);
        fs_scan(t, m, "usr/", 1, exact);
        if (exact) fs_seek(t, m);
    }
    kvdb_abort(t);
}

/* the writable pass's writes: a new key, an overwrite, a delete */
static void fs_write(kvdb *db, fs_model *m, int exact)
{
    static const int id[3] = { FS_NK - 4, 2, -1 }, ver[3] = { 4, 5, 0 };
    int i;
    for (i = 0; i < 3; i++) {
        int j = id[i] < 0 ? fs_del_id : id[i], rc;
        const char *k = fs_k[j];
        const unsigned char *v = fs_v[j][ver[i]];
        unsigned char buf[FS_MAXV];
        size_t kl = fs_kl[j], vl = fs_vl[j][ver[i]], gl = 0;
        rc = ver[i] ? kvdb_put(db, k, kl, v, vl) : kvdb_del(db, k, kl);
        /* a wrong sidecar may lose the key, or point at damage */
        if (!exact && (rc == KVDB_ECORRUPT || (!ver[i] && rc == KVDB_NOTFOUND))) continue;
        FZ_ASSERT(rc == KVDB_OK);
        m->ver[j] = ver[i];
        if (ver[i]) m->hist[j] |= 1u << ver[i];
        if (!ver[i] && !exact) continue; /* or hold it twice */
        rc = kvdb_get(db, k, kl, buf, sizeof buf, &gl);
        FZ_ASSERT(rc == (ver[i] ? KVDB_OK : KVDB_NOTFOUND));
        if (ver[i]) FZ_ASSERT(gl == vl && memcmp(buf, v, vl) == 0);
    }
}

static void fs_done(fz_disk *d)
{
    FZ_ASSERT(d->handles == 0 && d->maps == 0);
    FZ_ASSERT(__atomic_load_n(&fs_live, __ATOMIC_RELAXED) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char x[FS_XCAP];
    size_t xl = 0;
    int has, resealed, valid, pass, rc;
    fz_disk d;
    fs_setup();
    if (size == 0) return 0;
    fs_make(data, size, x, &xl, &has, &resealed);
    valid = has && (fs_is(x, xl, fs_d.s1, fs_d.s1len) || fs_is(x, xl, fs_d.s2, fs_d.s2len));
    for (pass = 0; pass < 2; pass++) {
        fs_model m;
        struct kvdb_stat st;
        kvdb *db;
        int exact;
        memcpy(m.ver, fs_d.ver, sizeof m.ver);
        memcpy(m.hist, fs_d.hist, sizeof m.hist);
        fs_disk(&d, pass == 0, x, xl, has);
        rc = fz_open_db(&d, pass == 0 ? 0 : KVDB_RDONLY, &fs_alloc, &db);
        if (rc != KVDB_OK) {
            /* only a wrong sidecar that passed the checks: the replay after
             * it met an index entry that points at no record */
            FZ_ASSERT(resealed && !valid && rc == KVDB_ECORRUPT && db == NULL && *kvdb_errmsg());
            FZ_ASSERT(d.f[0].size == fs_d.loglen && memcmp(d.f[0].p, fs_d.log, fs_d.loglen) == 0);
            fs_done(&d);
            continue;
        }
        FZ_ASSERT(kvdb_stat(db, &st) == KVDB_OK);
        if (valid) {
            FZ_ASSERT(st.sidecar_loaded == 1);
            FZ_ASSERT(st.replayed_bytes == fs_d.loglen - kv_ld64(x + 48));
        }
        if (!resealed && st.sidecar_loaded) FZ_ASSERT(valid);  /* no forged checksum */
        exact = valid || !st.sidecar_loaded;
        fs_check(db, &m, exact, 1);
        if (pass == 1) {
            FZ_ASSERT(kvdb_put(db, "k", 1, "v", 1) == KVDB_EREADONLY);
            FZ_ASSERT(kvdb_close(db) == KVDB_OK);
            fs_done(&d);
            continue;
        }
        fs_write(db, &m, exact);
        fs_check(db, &m, exact, 0);
        FZ_ASSERT(kvdb_close(db) == KVDB_OK);
        fs_done(&d);
        if (!exact) continue;
        /* the sidecar close wrote covers the whole log */
        FZ_ASSERT(fz_open_db(&d, KVDB_RDONLY, &fs_alloc, &db) == KVDB_OK);
        FZ_ASSERT(kvdb_stat(db, &st) == KVDB_OK);
        FZ_ASSERT(st.sidecar_loaded == 1 && st.replayed_bytes == 0);
        fs_check(db, &m, 1, 0);
        FZ_ASSERT(kvdb_close(db) == KVDB_OK);
        fs_done(&d);
    }
    return 0;
}
