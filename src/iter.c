/* ======================================================================
 * SECTION: iterators
 *
 * An iterator merges its sources in key order: the sorted runs of its
 * snapshot (oldest first) and, in a write transaction, the transaction's
 * own writes as of the iterator's creation (newest, encoded like a run
 * with its own prefix).  Where several sources hold the same key the
 * newest wins, and a tombstone hides it.  Each source is a cursor into a
 * sorted array; a step compares the sources' current entries through the
 * relation of each pair of sources (srt_rel: both seen from the common
 * prefix of their run prefixes; the log is read only on a tie of long
 * keys), so a step costs O(sources) comparisons plus the record read,
 * which is checksum-verified like a point read.
 *
 * Bounds are [lo, hi) in key order (NULL: unbounded); a prefix P is the
 * range [P, P+1) where P+1 is P with trailing 0xff bytes dropped and the
 * last byte incremented.  Reverse iteration walks the same set backwards.
 * ====================================================================== */
#define IT_PREFETCH 12   /* records fetched ahead of an iterator */

typedef struct it_src {
    const srt_ent *e;
    size_t n;
    size_t cur;            /* index of the current entry; n = exhausted */
    const uint8_t *pfx;    /* the run prefix of the entries */
    size_t cpl;
} it_src;

/* The sources of a k-way merge and the relation of every pair. */
typedef struct srt_kway {
    it_src *src;
    size_t nsrc;
    srt_rel *rel;          /* nsrc x nsrc: rel[i * nsrc + j] compares i with j */
} srt_kway;

struct kvdb_iter {
    kvdb_txn *t;
    struct kvdb_iter *next, **pprev; /* the transaction's list */
    unsigned flags;
    kv_rd rd;
    srt_run **runs;
    size_t nruns;
    srt_ent *own;          /* the write transaction's writes, sorted */
    size_t nown;
    kv_buf ownpfx;         /* their common prefix */
    srt_kway kw;           /* nruns (+1) sources, oldest first */
    srt_cx cx;             /* key buffers for comparisons */
    kv_buf bnd;            /* lo then hi bytes */
    size_t lolen, hilen;
    int has_lo, has_hi;
};

#define IT_LO(it) ((it)->bnd.p)
#define IT_HI(it) ((it)->bnd.p + (it)->lolen)

static const uint8_t srt_nopfx[1] = { 0 }; /* the prefix of a source without one */

static void src_set(it_src *s, const srt_ent *e, size_t n, const uint8_t *pfx, size_t cpl)
{
    s->e = e;
    s->n = n;
    s->cur = 0;
    s->pfx = cpl ? pfx : srt_nopfx;
    s->cpl = cpl;
}

/* The pair relations of kw's sources (kw->src and nsrc set). */
static int srt_kway_init(kvdb *db, srt_kway *kw)
{
    size_t i, j, n = kw->nsrc;
    kw->rel = NULL;
    if (n < 2) return KVDB_OK;
    kw->rel = (srt_rel *)kv_malloc(&db->al, n * n * sizeof *kw->rel);
    if (!kw->rel) return kv_err(KVDB_ENOMEM, "out of memory");
    for (i = 0; i < n; i++)
        for (j = i; j < n; j++) {
            srt_rel *a = &kw->rel[i * n + j], *b = &kw->rel[j * n + i];
            srt_rel_init(a, kw->src[i].pfx, kw->src[i].cpl, kw->src[j].pfx, kw->src[j].cpl);
            b->x = a->y;
            b->y = a->x;
        }
    return KVDB_OK;
}

/* Refresh the view of the write transaction's buffer (it may have moved). */
static void it_sync(kvdb_iter *it)
{
    if (it->t->write) {
        it->rd.wb = it->t->wbuf.p;
        it->rd.wb_len = it->t->wbuf.len;
    }
}

/* First index of src whose key is >= k (or > k when strict): the key is
 * compared with the run prefix once, then as (k, lc) at the run's level. */
static size_t it_lower(srt_cx *cx, const it_src *s, const uint8_t *k, size_t kn, int strict)
{
    size_t lo = 0, hi = s->n, m = kn < s->cpl ? kn : s->cpl, rest;
    uint64_t kk;
    unsigned kl;
    int d = m ? memcmp(k, s->pfx, m) : 0;
    if (d < 0 || (d == 0 && kn < s->cpl)) return 0; /* before every key of the run */
    if (d > 0) return s->n;                          /* after every key */
    rest = kn - s->cpl;
    kk = srt_pack(k + s->cpl, rest < 8 ? rest : 8);
    kl = rest < SRT_LONG ? (unsigned)rest : SRT_LONG;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const srt_ent *e = &s->e[mid];
        unsigned el = SRT_LC(e);
        int c;
        if (e->k != kk) c = e->k < kk ? -1 : 1;
        else if (el != kl) c = el < kl ? -1 : 1;
        else if (kl < SRT_LONG) c = 0;
        else {
            const uint8_t *x = NULL;
            size_t xn = 0;
            int rc = srt_key(cx->r, SRT_AT(e), &cx->ka, &x, &xn);
            if (rc) {
                if (!cx->rc) cx->rc = rc;
                return lo;
            }
            c = kv_keycmp(x, xn, k, kn);
        }
        if (c < 0 || (strict && c == 0)) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Position every source: forward at the first key >= k (NULL: the start),
 * reverse at the last key <= k (NULL: the end), within the bounds. */
static void it_position(kvdb_iter *it, const uint8_t *k, size_t kn)
{
    size_t i;
    int rev = (it->flags & KVDB_ITER_REVERSE) != 0;
    for (i = 0; i < it->kw.nsrc; i++) {
        it_src *s = &it->kw.src[i];
        if (!rev) {
            size_t a = it->has_lo ? it_lower(&it->cx, s, IT_LO(it), it->lolen, 0) : 0;
            if (k) {
                size_t b = it_lower(&it->cx, s, k, kn, 0);
                if (b > a) a = b;
            }
            s->cur = a;
        } else {
            size_t a = it->has_hi ? it_lower(&it->cx, s, IT_HI(it), it->hilen, 0) : s->n;
            if (k) {
                size_t b = it_lower(&it->cx, s, k, kn, 1);
                if (b < a) a = b;
            }
            s->cur = a ? a - 1 : s->n; /* the entry before, or exhausted */
        }
    }
}

static void src_advance(it_src *s, int rev)
{
    if (s->cur >= s->n) return;
    if (rev) s->cur = s->cur ? s->cur - 1 : s->n;
    else s->cur++;
}

/* One step of the k-way merge: the smallest key (largest in reverse), from
 * the newest source holding it; every source moves past that key.
 * 1 with *out (as stored in source *from), 0 when all sources are
 * exhausted, or an error. */
static int srt_kway_next(srt_cx *cx, srt_kway *kw, int rev, srt_ent *out, size_t *from)
{
    it_src *src = kw->src;
    size_t i, best = kw->nsrc, n = kw->nsrc;
    int d;
    if (n == 1) { /* one source: nothing to compare */
        if (src->cur >= src->n) return 0;
        *out = src->e[src->cur];
        *from = 0;
        src_advance(src, rev);
        return 1;
    }
    for (i = 0; i < n; i++) {
        const it_src *s = &src[i];
        if (s->cur >= s->n) continue;
        if (best == n) { best = i; continue; }
        d = srt_cmp_rel(cx, &kw->rel[i * n + best], &s->e[s->cur], &src[best].e[src[best].cur]);
        if (rev ? d >= 0 : d <= 0) best = i;
    }
    if (cx->rc) return cx->rc;
    if (best == n) return 0;
    *out = src[best].e[src[best].cur];
    *from = best;
    for (i = 0; i < n; i++) {
        it_src *s = &src[i];
        if (i != best && s->cur < s->n && srt_cmp_rel(cx, &kw->rel[i * n + best], &s->e[s->cur], out) == 0)
            src_advance(s, rev);
    }
    src_advance(&src[best], rev);
    return cx->rc ? cx->rc : 1;
}

static void it_free(kvdb_iter *it)
{
    kvdb *db = it->t->db;
    if (it->runs) srt_release_all(db, it->runs, it->nruns);
    kv_free(&db->al, it->own);
    kv_free(&db->al, it->ownpfx.p);
    kv_free(&db->al, it->kw.src);
    kv_free(&db->al, it->kw.rel);
    kv_free(&db->al, it->cx.ka.p);
    kv_free(&db->al, it->cx.kb.p);
    kv_free(&db->al, it->bnd.p);
    kv_free(&db->al, it);
}

/* Close every iterator of a transaction that is ending, and drop its
 * private run. */
static void txn_close_iters(kvdb_txn *t)
{
    while (t->iters) {
        kvdb_iter *it = t->iters;
        t->iters = it->next;
        it_free(it);
    }
    if (t->priv) {
        kv_lock(&t->db->mu_srt);
        srt_release(t->db, t->priv);
        kv_unlock(&t->db->mu_srt);
        t->priv = NULL;
    }
}

/* The write transaction's own writes, sorted, as tombstones or PUTs at
 * their pending offsets, with their common prefix in it->ownpfx. */
static int it_own_writes(kvdb_iter *it)
{
    kvdb_txn *t = it->t;
    kvdb *db = t->db;
    size_t n = t->ws.n, i, k = 0;
    srt_ent *e, *tmp;
    srt_acc acc;
    int rc = KVDB_OK;
    if (!n) return KVDB_OK;
    e = (srt_ent *)kv_malloc(&db->al, n * sizeof *e);
    tmp = (srt_ent *)kv_malloc(&db->al, n * sizeof *e);
    if (!e || !tmp) {
        kv_free(&db->al, e);
        kv_free(&db->al, tmp);
        return kv_err(KVDB_ENOMEM, "out of memory");
    }
    if (!t->ws.promoted) {
        for (i = 0; i < t->ws.n; i++) e[k++].off = t->ws.inl[i].pos - 1;
    } else {
        for (i = 0; i < t->ws.cap; i++)
            if (t->ws.tab[i].pos) e[k++].off = t->ws.tab[i].pos - 1;
    }
    memset(&acc, 0, sizeof acc);
    for (i = 0; i < k && !rc; i++) {
        const uint8_t *p = t->wbuf.p + e[i].off;
        e[i].off = (it->rd.wb_off + e[i].off) | (p[8] == LG_DEL ? SRT_DEL : 0);
        rc = srt_acc_add(db, &acc, &e[i], i, p + LG_REC, kv_ld16(p + 10));
    }
    if (!rc && k) {
        srt_acc_finish(&acc, e, k);
        srt_sort(&it->cx, e, tmp, k); /* keys are distinct: any order of equals is fine */
        rc = kv_buf_reserve(&db->al, &it->ownpfx, acc.cpl + 1);
        if (!rc && acc.cpl) memcpy(it->ownpfx.p, acc.first.p, acc.cpl);
        it->ownpfx.len = acc.cpl;
    }
    srt_acc_free(db, &acc);
    kv_free(&db->al, tmp);
    it->own = e;
    it->nown = k;
    return rc ? rc : it->cx.rc;
}

static int it_open(kvdb_txn *t, const void *lo, size_t lolen, const void *hi, size_t hilen, unsigned flags,
                   kvdb_iter **out)
{
    kvdb *db;
    kvdb_iter *it;
    size_t i;
    int rc;
    if (!out) return kv_err(KVDB_EINVAL, "kvdb_iter: out is NULL");
    *out = NULL;
    if (!t) return kv_err(KVDB_EINVAL, "kvdb_iter: NULL transaction");
    if (flags & ~KVDB_ITER_REVERSE) return kv_err(KVDB_EINVAL, "kvdb_iter: unknown flags");
    if ((lo && lolen > KVDB_MAX_KEY) || (hi && hilen > KVDB_MAX_KEY + 1))
        return kv_err(KVDB_ETOOBIG, "kvdb_iter: bound longer than the longest key");
    db = t->db;
    it = (kvdb_iter *)kv_malloc(&db->al, sizeof *it);
    if (!it) return kv_err(KVDB_ENOMEM, "out of memory");
    memset(it, 0, sizeof *it);
    it->t = t;
    it->flags = flags;
    rd_init(&it->rd, db, t->ver);
    if (t->write) {
        it->rd.wb_off = t->ver->end;
        it_sync(it);
    }
    it->cx.r = &it->rd;
    it->has_lo = lo != NULL;
    it->has_hi = hi != NULL;
    it->lolen = lo ? lolen : 0;
    it->hilen = hi ? hilen : 0;
    rc = kv_buf_reserve(&db->al, &it->bnd, it->lolen + it->hilen + 1);
    if (rc) goto fail;
    if (it->lolen) memcpy(IT_LO(it), lo, it->lolen);
    if (it->hilen) memcpy(IT_HI(it), hi, it->hilen);
    rc = srt_acquire(db, &it->rd, t->ver->end, &t->priv, &it->runs, &it->nruns);
    if (rc) goto fail;
    if (t->write) {
        rc = it_own_writes(it);
        if (rc) goto fail;
    }
    it->kw.nsrc = it->nruns + (it->nown ? 1 : 0);
    it->kw.src = (it_src *)kv_malloc(&db->al, (it->kw.nsrc ? it->kw.nsrc : 1) * sizeof *it->kw.src);
    if (!it->kw.src) { rc = kv_err(KVDB_ENOMEM, "out of memory"); goto fail; }
    for (i = 0; i < it->nruns; i++)
        src_set(&it->kw.src[i], it->runs[i]->e, it->runs[i]->n, it->runs[i]->pfx, it->runs[i]->cpl);
    if (it->nown) src_set(&it->kw.src[it->nruns], it->own, it->nown, it->ownpfx.p, it->ownpfx.len);
    rc = srt_kway_init(db, &it->kw);
    if (rc) goto fail;
    it_position(it, NULL, 0);
    if (it->cx.rc) { rc = it->cx.rc; goto fail; }
    it->next = t->iters;
    if (t->iters) t->iters->pprev = &it->next;
    it->pprev = &t->iters;
    t->iters = it;
    *out = it;
    return KVDB_OK;
fail:
    it_free(it);
    return rc;
}

int kvdb_iter_range(kvdb_txn *t, const void *lo, size_t lolen, const void *hi, size_t hilen, unsigned flags,
                    kvdb_iter **out)
{
    kv_clearerr();
    return it_open(t, lo, lolen, hi, hilen, flags, out);
}

int kvdb_iter_prefix(kvdb_txn *t, const void *prefix, size_t plen, unsigned flags, kvdb_iter **out)
{
    uint8_t *hi;
    size_t hl = plen;
    int rc;
    kv_clearerr();
    if (out) *out = NULL;
    if (!prefix && plen) return kv_err(KVDB_EINVAL, "kvdb_iter_prefix: NULL prefix with nonzero length");
    if (!t) {
        if (out) *out = NULL;
        return kv_err(KVDB_EINVAL, "kvdb_iter_prefix: NULL transaction");
    }
    if (plen > KVDB_MAX_KEY) {
        if (out) *out = NULL;
        return kv_err(KVDB_ETOOBIG, "kvdb_iter_prefix: prefix longer than the longest key");
    }
    /* hi = the prefix with trailing 0xff dropped and the last byte + 1 */
    hi = (uint8_t *)kv_malloc(&t->db->al, plen ? plen : 1);
    if (!hi) return kv_err(KVDB_ENOMEM, "out of memory");
    if (plen) memcpy(hi, prefix, plen);
    while (hl && hi[hl - 1] == 0xff) hl--;
    if (hl) hi[hl - 1]++;
    rc = it_open(t, plen ? prefix : NULL, plen, hl ? hi : NULL, hl, flags, out);
    kv_free(&t->db->al, hi);
    return rc;
}

int kvdb_iter_seek(kvdb_iter *it, const void *key, size_t klen)
{
    kv_clearerr();
    if (!it) return kv_err(KVDB_EINVAL, "kvdb_iter_seek: NULL iterator");
    if (!key && klen) return kv_err(KVDB_EINVAL, "kvdb_iter_seek: NULL key with nonzero length");
    if (klen > KVDB_MAX_KEY + 1) return kv_err(KVDB_ETOOBIG, "kvdb_iter_seek: key too long");
    it_sync(it);
    it->cx.rc = KVDB_OK;
    it_position(it, key ? (const uint8_t *)key : (const uint8_t *)"", klen);
    return it->cx.rc;
}

int kvdb_iter_next(kvdb_iter *it, const void **key, size_t *klen, const void **val, size_t *vlen)
{
    int rev;
    kv_clearerr();
    if (!it) return kv_err(KVDB_EINVAL, "kvdb_iter_next: NULL iterator");
    rev = (it->flags & KVDB_ITER_REVERSE) != 0;
    it_sync(it);
    it->cx.rc = KVDB_OK;
    for (;;) {
        srt_ent e;
        uint64_t off;
        const uint8_t *k;
        size_t kn;
        kv_hit hit;
        size_t from;
        int rc = srt_kway_next(&it->cx, &it->kw, rev, &e, &from);
        if (rc <= 0) return rc ? rc : KVDB_DONE;
        off = SRT_AT(&e) | (e.off & SRT_DEL);
        if (it->rd.base) { /* before compaction, key order is random in the log: fetch ahead */
            const it_src *s = &it->kw.src[from];
            size_t ahead = rev ? (s->cur >= IT_PREFETCH && s->cur < s->n ? s->cur - IT_PREFETCH : s->n)
                               : s->cur + IT_PREFETCH;
            if (ahead < s->n) RD_PREFETCH(&it->rd, SRT_AT(&s->e[ahead]));
        }
        /* bounds */
        rc = srt_key(&it->rd, off & ~SRT_DEL, &it->cx.ka, &k, &kn);
        if (rc) return rc;
        if (!rev && it->has_hi && kv_keycmp(k, kn, IT_HI(it), it->hilen) >= 0) return KVDB_DONE;
        if (rev && it->has_lo && kv_keycmp(k, kn, IT_LO(it), it->lolen) < 0) return KVDB_DONE;
        if (off & SRT_DEL) continue;
        /* the record: verified, pointers valid until the txn ends */
        if (it->rd.base || (it->rd.wb && off >= it->rd.wb_off)) {
            rc = rd_match(&it->rd, off, k, kn, &hit);
            if (rc < 0) return rc;
            if (rc == 0) return kv_err(KVDB_ECORRUPT, "%s: sorted index disagrees with the log at %llu", it->t->db->path, (unsigned long long)off);
            if (key) *key = k;
            if (klen) *klen = kn;
            if (val) *val = hit.val;
            if (vlen) *vlen = hit.vlen;
            return KVDB_OK;
        } else { /* pread: copy key and value into the transaction's arena */
            uint8_t *p;
            size_t kk = kn;
            rc = rd_match(&it->rd, off, k, kn, &hit);
            if (rc < 0) return rc;
            if (rc == 0) return kv_err(KVDB_ECORRUPT, "%s: sorted index disagrees with the log at %llu", it->t->db->path, (unsigned long long)off);
            p = (uint8_t *)txn_arena_alloc(it->t, kk + hit.vlen + 1);
            if (!p) return kv_err(KVDB_ENOMEM, "out of memory");
            memcpy(p, k, kk);
            if (hit.vlen) {
                rc = it->t->db->vfs->read(it->t->db->vfs->ctx, it->rd.file, hit.voff, p + kk, hit.vlen);
                if (rc) return rc;
            }
            if (key) *key = p;
            if (klen) *klen = kk;
            if (val) *val = p + kk;
            if (vlen) *vlen = hit.vlen;
            return KVDB_OK;
        }
    }
}

void kvdb_iter_close(kvdb_iter *it)
{
    if (!it) return;
    *it->pprev = it->next;
    if (it->next) it->next->pprev = it->pprev;
    it_free(it);
}

