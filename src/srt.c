/* ======================================================================
 * SECTION: sorted index
 *
 * Key order is kept apart from the hash index and built lazily, so that a
 * put pays nothing for it.  A *run* is an immutable array of entries for
 * one range [lo, hi) of the log: for every key written in the range, the
 * offset of its newest record there (a PUT, or a DEL marked as tombstone).
 * Entries are sorted by key (memcmp order, a shorter key first when one is
 * a prefix of the other).
 *
 * Entry format (16 bytes).  A run stores once the common prefix of all its
 * keys, cpl bytes long ("the run prefix").  Each entry holds the 8 key
 * bytes that follow it, [cpl, cpl+8), packed big-endian and zero-padded
 * ("k"), and beside the offset lc = min(klen - cpl, 9).  Within a run,
 * (k, lc) orders two keys exactly unless both have lc = 9 and equal k:
 * equal k with different lc means the shorter key is a prefix of the longer
 * one (its padding matched real 0x00 bytes), equal k and lc < 9 means the
 * same key.  Only in the remaining case is the log read.  Keys such as
 * "0000000000123456" (a long shared prefix) thus compare without the log.
 *
 * Across runs: entries of a run with prefix P and cpl c can be seen from
 * any shallower level m <= c of the same key space -- the "projection":
 * key bytes [m, m+8) are P[m..c) followed by k, and the length beyond m is
 * (c - m) + lc -- with no log read.  Two runs compare at m = the common
 * prefix of their two run prefixes (capped by both cpls); when the run
 * prefixes differ below both cpls, the first projected byte decides.  A
 * merge of two runs encodes the new run at the common level this way, and
 * an iterator keeps one such relation per pair of its sources.  A seek
 * compares the sought key with the run prefix first (before, after, or
 * inside), then (k, lc) in a binary search.
 *
 * Invariants:
 *   1. The shared runs (db->runs) cover [LG_HDR, end of the newest run)
 *      contiguously, oldest first; every range ends at a commit boundary.
 *   2. An iterator over a snapshot ending at E uses the shared runs with
 *      hi <= E and, for the rest, one run built for [covered, E): appended
 *      to the shared list if nothing newer is there, private otherwise (an
 *      older snapshot).  Runs are refcounted under mu_srt and never change.
 *   3. A key's entry in a newer run supersedes its entries in older runs;
 *      a tombstone hides the key.  Tombstones are dropped only when merged
 *      into the run that starts at LG_HDR (nothing older to hide).
 *   4. The shared list is merged like a binary counter: a run absorbs its
 *      successor while that one is at least half its size, so there are
 *      O(log n) runs and each entry is copied O(log n) times.  The run
 *      loaded from the sidecar (mapped, covering the log up to the
 *      checkpoint) is never merged into the heap; the next checkpoint
 *      replaces it.
 *   5. Every key of a run starts with the run prefix (cpl may be shorter
 *      than the keys' true common prefix, never longer).
 * Cost: the first iterator after n new records reads them once in log
 * order (computing the common prefix and the entries as it goes), then
 * radix-sorts on k (O(n)) and orders only groups of equal k by comparison.
 * Memory: 16 bytes per entry plus the prefix once per run.
 *
 * A log range already in key order (one record per key, as a compaction
 * writes it) is recognised after the pass and not sorted: srt_build() over
 * such a range is the way to make its run.
 * ====================================================================== */
#define SRT_DEL ((uint64_t)1 << 63)
#define SRT_LSH 56                              /* lc is bits 56..59 of off */
#define SRT_OFF (((uint64_t)1 << SRT_LSH) - 1)  /* the record offset */
#define SRT_LONG 9u                             /* lc: 9 or more bytes after the prefix */
#define SRT_AT(e) ((e)->off & SRT_OFF)
#define SRT_LC(e) ((unsigned)((e)->off >> SRT_LSH) & 15u)

typedef struct srt_ent {
    uint64_t k;            /* key bytes [cpl, cpl+8), big-endian, zero-padded */
    uint64_t off;          /* offset | min(klen - cpl, 9) << 56 | SRT_DEL */
} srt_ent;

struct srt_run {
    uint64_t lo, hi;       /* log range covered */
    size_t n, cap;         /* entries used, allocated here (0: mapped) */
    size_t cpl;            /* bytes of the run prefix */
    size_t bytes;          /* heap counted in db->srt_bytes */
    unsigned refs;
    const srt_ent *e;      /* n entries, sorted by key, one per key: own[]
                              or, for the run loaded from the sidecar, the
                              mapping (which lives until close) */
    const uint8_t *pfx;    /* the run prefix: after own[cap], or mapped */
    srt_ent own[];
};

/* Up to 8 bytes packed big-endian, zero-padded. */
static uint64_t srt_pack(const uint8_t *k, size_t n)
{
    uint64_t p = 0;
    size_t i;
    if (n >= 8) { /* compilers make this one big-endian load */
        for (i = 0; i < 8; i++) p = (p << 8) | k[i];
        return p;
    }
    for (i = 0; i < n; i++) p = (p << 8) | k[i];
    return n ? p << (8 * (8 - n)) : 0;
}

static size_t srt_lcp(const uint8_t *a, const uint8_t *b, size_t n)
{
    size_t i = 0;
    while (i + 8 <= n) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y) break;
        i += 8;
    }
    while (i < n && a[i] == b[i]) i++;
    return i;
}

static int kv_keycmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c) return c;
    return an < bn ? -1 : an > bn;
}

/* The key of the record at off: a pointer into the mapping or the pending
 * buffer, or read into kb (pread mode).  Bounds are checked. */
static int srt_key(const kv_rd *r, uint64_t off, kv_buf *kb, const uint8_t **key, size_t *klen)
{
    const uint8_t *p;
    uint8_t hdr[LG_REC];
    size_t n;
    int rc;
    if (r->wb && off >= r->wb_off) {
        if (off - r->wb_off + LG_REC > r->wb_len ||
            off - r->wb_off + LG_REC + kv_ld16(r->wb + (off - r->wb_off) + 10) > r->wb_len)
            return kv_err(KVDB_ECORRUPT, "sorted index points past the pending transaction");
        p = r->wb + (off - r->wb_off);
        *klen = kv_ld16(p + 10);
        *key = p + LG_REC;
        return KVDB_OK;
    }
    if (off < LG_HDR || off + LG_REC > r->end)
        return kv_err(KVDB_ECORRUPT, "%s: sorted index points outside the log (offset %llu)", r->db->path,
                      (unsigned long long)off);
    if (r->base) {
        p = r->base + off;
        n = kv_ld16(p + 10);
        if (off + LG_REC + n > r->end) return kv_err(KVDB_ECORRUPT, "%s: record at %llu runs past the log", r->db->path, (unsigned long long)off);
        *klen = n;
        *key = p + LG_REC;
        return KVDB_OK;
    }
    rc = r->db->vfs->read(r->db->vfs->ctx, r->file, off, hdr, LG_REC);
    if (rc) return rc;
    n = kv_ld16(hdr + 10);
    if (off + LG_REC + n > r->end) return kv_err(KVDB_ECORRUPT, "%s: record at %llu runs past the log", r->db->path, (unsigned long long)off);
    kb->len = 0;
    rc = kv_buf_reserve(&r->db->al, kb, n ? n : 1);
    if (rc) return rc;
    rc = r->db->vfs->read(r->db->vfs->ctx, r->file, off + LG_REC, kb->p, n);
    if (rc) return rc;
    *klen = n;
    *key = kb->p;
    return KVDB_OK;
}

/* Comparison context: a reader, two key buffers, the first error. */
typedef struct srt_cx {
    const kv_rd *r;
    kv_buf ka, kb;
    int rc;
} srt_cx;

/* The last resort: the two records' keys from the log. */
static int srt_cmp_log(srt_cx *c, uint64_t a, uint64_t b)
{
    const uint8_t *x = NULL, *y = NULL;
    size_t xn = 0, yn = 0;
    int rc;
    if (a == b) return 0;
    rc = srt_key(c->r, a, &c->ka, &x, &xn);
    if (!rc) rc = srt_key(c->r, b, &c->kb, &y, &yn);
    if (rc) {
        if (!c->rc) c->rc = rc;
        return 0;
    }
    return kv_keycmp(x, xn, y, yn);
}

/* Two entries of one run (or of runs with the same prefix). */
static int srt_cmp(srt_cx *c, const srt_ent *a, const srt_ent *b)
{
    unsigned la, lb;
    if (a->k != b->k) return a->k < b->k ? -1 : 1;
    la = SRT_LC(a);
    lb = SRT_LC(b);
    if (la != lb) return la < lb ? -1 : 1;
    if (la < SRT_LONG) return 0;
    return srt_cmp_log(c, SRT_AT(a), SRT_AT(b));
}

/* A projection: the entries of a run with cpl c seen from level m <= c.
 * d = c - m (capped at 9: beyond that the view no longer changes), h = the
 * run prefix bytes [m, m + min(d, 8)) packed at the top. */
typedef struct srt_prj {
    unsigned d;
    uint64_t h;
} srt_prj;

static void srt_prj_init(srt_prj *p, const uint8_t *pfx, size_t cpl, size_t m)
{
    size_t d = cpl - m;
    p->d = d > SRT_LONG ? SRT_LONG : (unsigned)d;
    p->h = d ? srt_pack(pfx + m, d < 8 ? d : 8) : 0;
}

static uint64_t srt_pk(const srt_prj *p, uint64_t k)
{
    return p->d >= 8 ? p->h : p->d ? p->h | (k >> (8 * p->d)) : k;
}

static unsigned srt_plc(const srt_prj *p, unsigned lc)
{
    unsigned x = p->d + (lc > SRT_LONG ? SRT_LONG : lc);
    return x > SRT_LONG ? SRT_LONG : x;
}

/* An entry re-encoded at the shallower level. */
static srt_ent srt_proj(const srt_prj *p, const srt_ent *e)
{
    srt_ent o;
    o.k = srt_pk(p, e->k);
    o.off = (e->off & ~((uint64_t)15 << SRT_LSH)) | (uint64_t)srt_plc(p, SRT_LC(e)) << SRT_LSH;
    return o;
}

/* How the entries of run x compare with those of run y: both seen from the
 * common prefix of their run prefixes. */
typedef struct srt_rel {
    srt_prj x, y;
} srt_rel;

static void srt_rel_init(srt_rel *r, const uint8_t *px, size_t cx, const uint8_t *py, size_t cy)
{
    size_t m = srt_lcp(px, py, cx < cy ? cx : cy);
    srt_prj_init(&r->x, px, cx, m);
    srt_prj_init(&r->y, py, cy, m);
}

static int srt_cmp_rel(srt_cx *c, const srt_rel *rl, const srt_ent *a, const srt_ent *b)
{
    uint64_t x = srt_pk(&rl->x, a->k), y = srt_pk(&rl->y, b->k);
    unsigned la, lb;
    if (x != y) return x < y ? -1 : 1;
    la = srt_plc(&rl->x, SRT_LC(a));
    lb = srt_plc(&rl->y, SRT_LC(b));
    if (la != lb) return la < lb ? -1 : 1;
    if (la < SRT_LONG) return 0;
    return srt_cmp_log(c, SRT_AT(a), SRT_AT(b));
}

/* Order for building a run: by key, and the newest record first. */
static int srt_cmp_build(srt_cx *c, const srt_ent *a, const srt_ent *b)
{
    int d = srt_cmp(c, a, b);
    if (d) return d;
    return SRT_AT(a) > SRT_AT(b) ? -1 : SRT_AT(a) < SRT_AT(b);
}

/* Bottom-up merge sort of n entries by srt_cmp_build (tmp has room for n). */
static void srt_msort(srt_cx *c, srt_ent *e, srt_ent *tmp, size_t n)
{
    size_t w, i;
    srt_ent *src = e, *dst = tmp;
    for (i = 0; i + 1 < n; i += 2) /* pairs first */
        if (srt_cmp_build(c, &e[i], &e[i + 1]) > 0) {
            srt_ent t = e[i];
            e[i] = e[i + 1];
            e[i + 1] = t;
        }
    for (w = 2; w < n; w *= 2) {
        for (i = 0; i < n; i += 2 * w) {
            size_t a = i, am = i + w < n ? i + w : n, b = am, bm = i + 2 * w < n ? i + 2 * w : n, o = i;
            while (a < am && b < bm) dst[o++] = srt_cmp_build(c, &src[a], &src[b]) <= 0 ? src[a++] : src[b++];
            while (a < am) dst[o++] = src[a++];
            while (b < bm) dst[o++] = src[b++];
        }
        { srt_ent *t = src; src = dst; dst = t; }
    }
    if (src != e) memcpy(e, src, n * sizeof *e);
}

#define SRT_RADIX_MIN 48

/* The most significant byte at or below b where the entries differ, with
 * its histogram in cnt; -1 if their k are all equal. */
static int srt_rbyte(const srt_ent *e, size_t n, int b, size_t cnt[256])
{
    size_t i;
    for (; b >= 0; b--) {
        unsigned sh = 8u * (unsigned)b;
        memset(cnt, 0, 256 * sizeof *cnt);
        for (i = 0; i < n; i++) cnt[(e[i].k >> sh) & 255]++;
        if (cnt[(e[0].k >> sh) & 255] != n) break;
    }
    return b;
}

/* Small or all-equal-k: by comparison, in place. */
static void srt_csort(srt_cx *c, srt_ent *e, srt_ent *tmp, size_t n)
{
    size_t i, j;
    if (n >= SRT_RADIX_MIN) {
        srt_msort(c, e, tmp, n);
        return;
    }
    for (i = 1; i < n; i++) {
        srt_ent x = e[i];
        for (j = i; j > 0 && (e[j - 1].k > x.k || (e[j - 1].k == x.k && srt_cmp_build(c, &e[j - 1], &x) > 0)); j--)
            e[j] = e[j - 1];
        e[j] = x;
    }
}

/* Sort the n entries of src into dst (to_dst) or in place in src (src
 * then ends sorted, dst is scratch), by bytes b and below of k. */
static void srt_rsort(srt_cx *c, srt_ent *src, srt_ent *dst, size_t n, int b, int to_dst)
{
    size_t cnt[256], i, start;
    if (n < SRT_RADIX_MIN || (b = srt_rbyte(src, n, b, cnt)) < 0) {
        if (to_dst) memcpy(dst, src, n * sizeof *src);
        srt_csort(c, to_dst ? dst : src, to_dst ? src : dst, n);
        return;
    }
    {
        unsigned sh = 8u * (unsigned)b;
        size_t sum = 0;
        for (i = 0; i < 256; i++) {
            size_t t = cnt[i];
            cnt[i] = sum;
            sum += t;
        }
        for (i = 0; i < n; i++) dst[cnt[(src[i].k >> sh) & 255]++] = src[i];
    }
    /* the buckets are in dst; cnt[v] is now the end of bucket v.  Each is
     * sorted from dst into src when the result belongs in src, or in place */
    for (i = 0, start = 0; i < 256; start = cnt[i++]) {
        size_t m = cnt[i] - start;
        if (!m) continue;
        if (m == 1) {
            if (!to_dst) src[start] = dst[start];
        } else {
            srt_rsort(c, dst + start, src + start, m, b - 1, !to_dst);
        }
    }
}

/* Sort n entries by srt_cmp_build (tmp has room for n): an MSD radix sort
 * on k from its most significant byte down, skipping bytes that are the
 * same throughout a bucket, buckets moving between e and tmp (they shrink
 * into the cache after a level or two); small buckets and groups of equal
 * k are finished by comparison -- the only place the log may be read. */
static void srt_sort(srt_cx *c, srt_ent *e, srt_ent *tmp, size_t n)
{
    srt_rsort(c, e, tmp, n, 7, 0);
}

/* Entries made from keys in turn: keeps the common prefix of the keys so
 * far, and encodes each entry at the prefix length of its time; finish()
 * projects the earlier ones to the final length (nothing is read again). */
typedef struct srt_acc {
    kv_buf first;          /* the first key */
    size_t cpl;
    kv_buf segs;           /* size_t pairs: first entry encoded at a cpl, that cpl */
} srt_acc;

static int srt_acc_add(kvdb *db, srt_acc *a, srt_ent *e, size_t i, const uint8_t *key, size_t kn)
{
    size_t s[2], l;
    int rc;
    if (i == 0) {
        a->first.len = a->segs.len = 0;
        rc = kv_buf_reserve(&db->al, &a->first, kn ? kn : 1);
        if (rc) return rc;
        if (kn) memcpy(a->first.p, key, kn);
        a->first.len = kn;
        a->cpl = kn;
        l = kn;
    } else {
        l = srt_lcp(key, a->first.p, kn < a->cpl ? kn : a->cpl);
    }
    if (i == 0 || l < a->cpl) {
        a->cpl = l;
        s[0] = i;
        s[1] = l;
        rc = kv_buf_reserve(&db->al, &a->segs, sizeof s);
        if (rc) return rc;
        memcpy(a->segs.p + a->segs.len, s, sizeof s);
        a->segs.len += sizeof s;
    }
    kn -= a->cpl;
    e->k = srt_pack(key + a->cpl, kn < 8 ? kn : 8);
    e->off = (e->off & ~((uint64_t)15 << SRT_LSH)) | (uint64_t)(kn < SRT_LONG ? kn : SRT_LONG) << SRT_LSH;
    return KVDB_OK;
}

static void srt_acc_finish(srt_acc *a, srt_ent *e, size_t n)
{
    size_t ns = a->segs.len / (2 * sizeof(size_t)), s, i;
    for (s = 0; s + 1 < ns; s++) { /* the last segment is at the final cpl */
        size_t g[4];
        srt_prj p;
        memcpy(g, a->segs.p + s * 2 * sizeof(size_t), sizeof g);
        srt_prj_init(&p, a->first.p, g[1], a->cpl);
        for (i = g[0]; i < g[2] && i < n; i++) e[i] = srt_proj(&p, &e[i]);
    }
}

static void srt_acc_free(kvdb *db, srt_acc *a)
{
    kv_free(&db->al, a->first.p);
    kv_free(&db->al, a->segs.p);
}

static srt_run *srt_alloc(kvdb *db, size_t n, size_t cpl)
{
    srt_run *run;
    size_t sz = sizeof *run + n * sizeof(srt_ent) + cpl;
    if (n > ((size_t)-1 - sizeof *run - cpl) / sizeof(srt_ent) || !(run = (srt_run *)kv_malloc(&db->al, sz))) {
        kv_err(KVDB_ENOMEM, "out of memory for a sorted run of %zu entries", n);
        return NULL;
    }
    run->n = run->cap = n;
    run->refs = 1;
    run->e = run->own;
    run->cpl = cpl;
    run->pfx = (const uint8_t *)(run->own + n);
    run->bytes = sz;
    db->srt_bytes += sz;
    return run;
}

/* A run this big is freed on the thread (kv_job): giving megabytes back to
 * the system takes milliseconds, and a compaction swap releases all runs
 * while writers wait. */
#define SRT_FREE_BG ((uint64_t)(KVDB_CK_MIN_BYTES) / 64) /* 1 MiB (TSan tests: 1 KiB) */

static void srt_release(kvdb *db, srt_run *run)
{
    if (run && --run->refs == 0) {
        db->srt_bytes -= run->bytes;
        ck_job(db, run->bytes >= SRT_FREE_BG, KV_JOB_FREE, NULL, run, 0);
    }
}

/* The run made from buf, which holds a run header's room (SRT_HEAD) and
 * then n sorted entries of key space prefix pfx[0, cpl): one entry per key
 * (the first of each group, i.e. the newest), tombstones dropped if drop.
 * The buffer becomes the run (shrunk to fit): buf->p is taken. */
#define SRT_HEAD offsetof(srt_run, own)
static int srt_make_run(kvdb *db, srt_cx *c, kv_buf *buf, size_t n, const uint8_t *pfx, size_t cpl, int drop,
                        uint64_t lo, uint64_t hi, srt_run **out)
{
    srt_run *run;
    srt_ent *e = (srt_ent *)(void *)(buf->p + SRT_HEAD);
    size_t i, k, sz;
    for (i = 0, k = 0; i < n; i++)
        if (k == 0 || srt_cmp(c, &e[k - 1], &e[i]) != 0) e[k++] = e[i];
    if (c->rc) return c->rc;
    if (drop) {
        size_t j = 0;
        for (i = 0; i < k; i++)
            if (!(e[i].off & SRT_DEL)) e[j++] = e[i];
        k = j;
    }
    sz = SRT_HEAD + k * sizeof *e + cpl;
    if (sz > buf->cap) { /* only if the buffer holds fewer entries than the prefix is long */
        int rc = kv_buf_reserve(&db->al, buf, sz - buf->len);
        if (rc) return rc;
    } else if (sz < buf->cap) {
        uint8_t *np = (uint8_t *)kv_realloc(&db->al, buf->p, sz);
        if (np) {
            buf->p = np;
            buf->cap = sz;
        }
    }
    run = (srt_run *)(void *)buf->p;
    buf->p = NULL;
    buf->len = buf->cap = 0;
    run->lo = lo;
    run->hi = hi;
    run->n = run->cap = k;
    run->cpl = cpl;
    run->refs = 1;
    run->e = run->own;
    run->pfx = (const uint8_t *)(run->own + k);
    if (cpl) memcpy(run->own + k, pfx, cpl);
    run->bytes = sz;
    db->srt_bytes += sz;
    *out = run;
    return KVDB_OK;
}

/* Build the run for [lo, hi) of the log as seen by r (mu_srt held): one
 * pass over the records in log order, then srt_sort. */
static int srt_build(kvdb *db, const kv_rd *r, uint64_t lo, uint64_t hi, srt_run **out)
{
    kv_buf ents = { NULL, 0, 0 }, tmp = { NULL, 0, 0 }, kb = { NULL, 0, 0 };
    srt_cx c;
    srt_acc acc;
    uint64_t off = lo;
    size_t n = 0;
    int rc = KVDB_OK;
    memset(&c, 0, sizeof c);
    memset(&acc, 0, sizeof acc);
    c.r = r;
    *out = NULL;
    db->srt_builds++;
    if (hi > SRT_OFF) return kv_err(KVDB_ECORRUPT, "%s: log too large for the sorted index", db->path);
    /* the entries go after room for the run header: the buffer becomes the run */
    rc = kv_buf_reserve(&db->al, &ents, SRT_HEAD + (hi - lo) / 256 * sizeof(srt_ent));
    if (rc) return rc;
    ents.len = SRT_HEAD;
    while (off < hi) {
        uint8_t hdr[LG_REC + 64];
        const uint8_t *p, *key;
        lg_rec rec;
        srt_ent *e;
        if (r->base) {
            p = r->base + off;
        } else {
            rc = db->vfs->read(db->vfs->ctx, r->file, off, hdr, hi - off < sizeof hdr ? (size_t)(hi - off) : sizeof hdr);
            if (rc) goto out;
            p = hdr;
        }
        if (lg_parse(p, off, hi - off, &rec) != KVDB_OK) {
            rc = kv_err(KVDB_ECORRUPT, "%s: bad record at offset %llu while sorting", db->path, (unsigned long long)off);
            goto out;
        }
        if (rec.type != LG_COMMIT) {
            if (r->base || rec.klen <= sizeof hdr - LG_REC) {
                key = p + LG_REC;
            } else { /* pread mode, a long key */
                kb.len = 0;
                rc = kv_buf_reserve(&db->al, &kb, rec.klen);
                if (!rc) rc = db->vfs->read(db->vfs->ctx, r->file, off + LG_REC, kb.p, rec.klen);
                if (rc) goto out;
                key = kb.p;
            }
            if (ents.len + sizeof *e > ents.cap) {
                rc = kv_buf_reserve(&db->al, &ents, sizeof *e);
                if (rc) goto out;
            }
            e = (srt_ent *)(void *)(ents.p + SRT_HEAD) + n;
            e->off = off | (rec.type == LG_DEL ? SRT_DEL : 0);
            rc = srt_acc_add(db, &acc, e, n, key, rec.klen);
            if (rc) goto out;
            ents.len += sizeof *e;
            n++;
        }
        off += rec.size;
    }
    srt_acc_finish(&acc, (srt_ent *)(void *)(ents.p + SRT_HEAD), n);
    {   /* already in strictly increasing key order (a compacted log)? */
        const srt_ent *e = (const srt_ent *)(const void *)(ents.p + SRT_HEAD);
        size_t i = 1;
        while (i < n && srt_cmp(&c, &e[i - 1], &e[i]) < 0) i++;
        if (c.rc) { rc = c.rc; goto out; }
        if (i < n) {
            rc = kv_buf_reserve(&db->al, &tmp, n * sizeof(srt_ent) + 1);
            if (rc) goto out;
            srt_sort(&c, (srt_ent *)(void *)(ents.p + SRT_HEAD), (srt_ent *)(void *)tmp.p, n);
            if (c.rc) { rc = c.rc; goto out; }
        }
        kv_free(&db->al, tmp.p);
        tmp.p = NULL;
    }
    /* the first run has nothing older to hide: drop its tombstones */
    rc = srt_make_run(db, &c, &ents, n, n ? acc.first.p : NULL, n ? acc.cpl : 0, lo == LG_HDR, lo, hi, out);
out:
    kv_free(&db->al, ents.p);
    kv_free(&db->al, tmp.p);
    kv_free(&db->al, kb.p);
    kv_free(&db->al, c.ka.p);
    kv_free(&db->al, c.kb.p);
    srt_acc_free(db, &acc);
    return rc;
}

/* Merge two adjacent runs, a older than b, into one (mu_srt held).  The new
 * run's prefix is the common prefix of both run prefixes; each side's
 * entries are projected to it, so the log is read only on ties of long
 * keys. */
static int srt_merge(kvdb *db, const kv_rd *r, const srt_run *a, const srt_run *b, srt_run **out)
{
    srt_cx c;
    srt_run *m;
    srt_prj pa, pb;
    const uint8_t *pfx = a->n ? a->pfx : b->pfx;
    size_t i = 0, j = 0, k = 0, cpl;
    int drop = a->lo == LG_HDR;
    memset(&c, 0, sizeof c);
    memset(&pa, 0, sizeof pa);
    memset(&pb, 0, sizeof pb);
    c.r = r;
    *out = NULL;
    if (!a->n) cpl = b->cpl;
    else if (!b->n) cpl = a->cpl;
    else cpl = srt_lcp(a->pfx, b->pfx, a->cpl < b->cpl ? a->cpl : b->cpl);
    m = srt_alloc(db, a->n + b->n, cpl);
    if (!m) return KVDB_ENOMEM;
    m->lo = a->lo;
    m->hi = b->hi;
    if (cpl) memcpy(m->own + a->n + b->n, pfx, cpl); /* = m->pfx */
    if (a->n) srt_prj_init(&pa, a->pfx, a->cpl, cpl);
    if (b->n) srt_prj_init(&pb, b->pfx, b->cpl, cpl);
    {
        srt_ent x = { 0, 0 }, y = { 0, 0 };
        if (i < a->n) x = srt_proj(&pa, &a->e[i]);
        if (j < b->n) y = srt_proj(&pb, &b->e[j]);
        while (i < a->n || j < b->n) {
            srt_ent e;
            int d = i == a->n ? 1 : j == b->n ? -1 : srt_cmp(&c, &x, &y);
            if (d <= 0) e = x;
            else e = y;
            if (d >= 0) { /* the newer entry wins a tie */
                e = y;
                if (++j < b->n) y = srt_proj(&pb, &b->e[j]);
            }
            if (d <= 0 && ++i < a->n) x = srt_proj(&pa, &a->e[i]);
            if (drop && (e.off & SRT_DEL)) continue;
            m->own[k++] = e;
        }
    }
    m->n = k;
    kv_free(&db->al, c.ka.p);
    kv_free(&db->al, c.kb.p);
    if (c.rc) {
        srt_release(db, m);
        return c.rc;
    }
    *out = m;
    return KVDB_OK;
}

/* Runs covering [LG_HDR, end) for a reader (r must see [LG_HDR, end)):
 * *out gets an allocated array of referenced runs, oldest first.  A
 * private run (invariant 2) is kept in *priv, if given, for the reader's
 * next iterators. */
static int srt_acquire(kvdb *db, const kv_rd *r, uint64_t end, srt_run **priv, srt_run ***out, size_t *nout)
{
    srt_run **v = NULL, *fresh = NULL;
    size_t k = 0, i;
    uint64_t covered;
    int rc = KVDB_OK, shared = 0, same;
    *out = NULL;
    *nout = 0;
    kv_lock(&db->mu_srt);
    same = r->file == db->srt_file; /* else a snapshot from before a compaction */
    while (same && k < db->nruns && db->runs[k]->hi <= end) k++;
    covered = k ? db->runs[k - 1]->hi : LG_HDR;
    if (covered < end && priv && *priv && (*priv)->lo == covered && (*priv)->hi == end) {
        fresh = *priv; /* built by an earlier iterator of this snapshot */
        fresh->refs++;
    } else if (covered < end) {
        rc = srt_build(db, r, covered, end, &fresh);
        if (rc) goto out;
        if ((!same || k < db->nruns) && priv) { /* private: keep it for the next iterator */
            if (*priv) srt_release(db, *priv);
            *priv = fresh;
            fresh->refs++;
        }
        if (same && k == db->nruns) { /* extends the shared list */
            if (db->nruns == db->runs_cap) {
                size_t ncap = db->runs_cap ? db->runs_cap * 2 : 8;
                srt_run **nr = (srt_run **)kv_realloc(&db->al, db->runs, ncap * sizeof *nr);
                if (!nr) {
                    srt_release(db, fresh);
                    rc = kv_err(KVDB_ENOMEM, "out of memory");
                    goto out;
                }
                db->runs = nr;
                db->runs_cap = ncap;
            }
            db->runs[db->nruns++] = fresh;
            shared = 1;
            /* binary-counter merging of the tail (invariant 4) */
            while (db->nruns >= 2 && db->runs[db->nruns - 2]->cap != 0 &&
                   (db->runs[db->nruns - 2]->n <= 2 * db->runs[db->nruns - 1]->n || db->nruns > 24)) {
                srt_run *m;
                if (srt_merge(db, r, db->runs[db->nruns - 2], db->runs[db->nruns - 1], &m) != KVDB_OK) break;
                srt_release(db, db->runs[db->nruns - 2]);
                srt_release(db, db->runs[db->nruns - 1]);
                db->nruns--;
                db->runs[db->nruns - 1] = m;
            }
            k = db->nruns;
        }
    }
    v = (srt_run **)kv_malloc(&db->al, (k + 1) * sizeof *v);
    if (!v) {
        if (fresh && !shared) srt_release(db, fresh);
        rc = kv_err(KVDB_ENOMEM, "out of memory");
        goto out;
    }
    for (i = 0; i < k; i++) {
        v[i] = db->runs[i];
        v[i]->refs++;
    }
    if (fresh && !shared) v[k++] = fresh; /* private: our reference */
    *out = v;
    *nout = k;
out:
    kv_unlock(&db->mu_srt);
    return rc;
}

static void srt_release_all(kvdb *db, srt_run **v, size_t n)
{
    size_t i;
    kv_lock(&db->mu_srt);
    for (i = 0; i < n; i++) srt_release(db, v[i]);
    kv_unlock(&db->mu_srt);
    kv_free(&db->al, v);
}

