/* ======================================================================
 * SECTION: sidecar
 *
 * "<database>.idx" persists the indexes so that reopening reads them
 * instead of the whole log.  It is derived data: the log alone always
 * rebuilds it, and any doubt about it means it is ignored.
 *
 *   Header (128 bytes, little-endian)
 *     [0,8)     magic "\x89KVX\r\n\x1a\n"
 *     [8,12)    u32 sidecar version (2; 1 had no run prefix: ignored)
 *     [12,16)   u32 layout: 1 for a little-endian host with 8-byte
 *               pointers -- the leaf images are the in-memory layout, so a
 *               host with another layout rebuilds from the log instead
 *     [16,32)   database id            [32,40)  hash seed
 *     [40,48)   u64 checksum of the log's header
 *     [48,56)   u64 P: log bytes covered; the log must hold an intact
 *               COMMIT record ending exactly at P with sequence [56,64)
 *     [56,64)   u64 that sequence number
 *     [64,72)   u64 sorted entries      [72,80)  u64 their offset E
 *     [80,88)   u64 leaves              [88,96)  u64 their offset
 *     [96,104)  u64 live keys           [104,112) u64 live bytes
 *     [112,120) u64 XXH3 of bytes [128, end), seeded with the hash seed
 *     [120,128) u64 XXH3 of bytes [0,120)
 *   Run prefix, at 128: u64 cpl, the cpl prefix bytes, zeros up to E =
 *   128 + (8 + cpl) rounded up to a multiple of 16.
 *   Sorted entries, at E: the merged runs, tombstones dropped, 16 bytes
 *   each in the in-memory layout (srt_ent: u64 k, the 8 key bytes after
 *   the prefix; u64 offset | lc << 56), encoded at the run prefix.
 *   Leaves: per leaf a 16-byte descriptor (u8 parent level, u8 local
 *   depth, u16 0, u32 path = the child indices from the root, 6 bits per
 *   level; u32 cap; u32 count) followed by the leaf's image (its 32-byte
 *   header with gen 0 and adj 0xFF, then its slots).
 *
 * Loading maps the file; the leaves are used in place (never written or
 * freed: hix_drop and hix_free_tree skip nodes with adj 0xFF, and a write
 * copies them like any shared node) and the sorted entries become the
 * oldest run, so memory is touched only as keys are used.  The mapping
 * lives until close.  Writing happens at close and in kvdb_checkpoint():
 * temporary file, sync, rename, directory sync.
 * ====================================================================== */
#define SC_MAGIC "\x89KVX\r\n\x1a\n"
#define SC_VERSION 2
#define SC_HDR 128
#define SC_EOFF(cpl) (SC_HDR + (((uint64_t)(cpl) + 8 + 15) & ~(uint64_t)15)) /* entries' offset */
#define SC_MAPPED 0xFF     /* hix_node.adj of a node inside the sidecar */

static uint32_t sc_layout(void)
{
    const uint16_t one = 1;
    return (*(const uint8_t *)&one == 1 && sizeof(void *) == 8 && sizeof(hix_node) == 32) ? 1u : 0u;
}

/* path + suffix ("<db>.idx", "<db>.compact", ...), allocated; NULL if out
 * of memory. */
static char *sc_path(const kvdb_allocator *al, const char *path, const char *suffix)
{
    size_t a = strlen(path), b = strlen(suffix);
    char *p = (char *)kv_malloc(al, a + b + 1);
    if (!p) return NULL;
    memcpy(p, path, a);
    memcpy(p + a, suffix, b + 1);
    return p;
}

static char *sc_name(kvdb *db, const char *suffix) { return sc_path(&db->al, db->path, suffix); }

/* Buffered writer with a running checksum. */
typedef struct sc_out {
    kvdb *db;
    kvdb_file *f;
    uint64_t off;          /* file offset of buf[0] */
    kv_buf buf;
    XXH3_state_t st;
    int rc;
} sc_out;

static void sc_flush(sc_out *o)
{
    if (!o->rc && o->buf.len) o->rc = o->db->vfs->write(o->db->vfs->ctx, o->f, o->off, o->buf.p, o->buf.len);
    o->off += o->buf.len;
    o->buf.len = 0;
}

static void sc_put(sc_out *o, const void *p, size_t n)
{
    if (o->rc) return;
    XXH3_64bits_update(&o->st, p, n);
    if (o->buf.len + n > ((size_t)1 << 20)) sc_flush(o);
    if (n > ((size_t)1 << 20)) {
        if (!o->rc) o->rc = o->db->vfs->write(o->db->vfs->ctx, o->f, o->off, p, n);
        o->off += n;
        return;
    }
    if (!o->rc) o->rc = kv_buf_reserve(&o->db->al, &o->buf, n);
    if (o->rc) return;
    memcpy(o->buf.p + o->buf.len, p, n);
    o->buf.len += n;
}

/* Write every leaf below inner node in, whose path so far is path. */
static void sc_put_leaves(sc_out *o, const hix_inner *in, uint32_t path, uint64_t *nleaves)
{
    unsigned i = 0;
    while (i < HIX_FAN && !o->rc) {
        hix_ref c = in->child[i];
        if (!HIX_CODE(c)) {
            sc_put_leaves(o, (const hix_inner *)HIX_NODE(c), (path << 6) | i, nleaves);
            i++;
        } else {
            const hix_node *l = HIX_NODE(c);
            uint8_t d[16];
            hix_node h;
            d[0] = in->h.level;
            d[1] = l->ldepth;
            d[2] = d[3] = 0;
            kv_st32(d + 4, (path << 6) | i);
            kv_st32(d + 8, l->cap);
            kv_st32(d + 12, l->count);
            sc_put(o, d, sizeof d);
            memset(&h, 0, sizeof h);
            h.count = l->count;
            h.cap = l->cap;
            h.ldepth = l->ldepth;
            h.code = l->code;
            h.adj = SC_MAPPED;
            sc_put(o, &h, sizeof h);
            sc_put(o, hix_slots(l), (size_t)l->cap * HIX_SLOT);
            (*nleaves)++;
            i += 1u << (6 - l->ldepth);
        }
    }
}

/* Write the sidecar for version v (pinned by the caller).  A sidecar must
 * never cover log bytes that are not durable: after a power loss the log
 * could hold garbage below its position while still being long enough to
 * pass the checks.  So the log is synced up to v first, or, when may_sync
 * is 0 (SYNC_OFF), nothing is written unless it already is. */
static int sc_write(kvdb *db, kv_ver *v, int may_sync)
{
    sc_out o;
    kv_rd r;
    srt_run **runs = NULL;
    size_t nruns = 0, i, cpl = 0;
    const uint8_t *pfx = NULL;
    srt_kway kw;
    srt_prj *prj = NULL;
    srt_cx cx;
    uint8_t h[SC_HDR], lh[LG_HDR];
    uint64_t nent = 0, nleaves = 0, leaves_off, eoff, epoch;
    char *name = NULL, *tmp = NULL;
    int rc;

    if (!sc_layout() || db->inmem || db->rdonly) return KVDB_OK;
    {
        uint64_t synced;
        int gone;
        kv_lock(&db->mu_sync); /* a swap changes db->file under it */
        gone = v->log->f != db->file; /* compacted away meanwhile */
        synced = db->synced;
        epoch = db->epoch;
        kv_unlock(&db->mu_sync);
        if (gone) return KVDB_OK;
        if (v->end > synced) {
            if (!may_sync) return KVDB_OK;
            rc = kv_sync_to(db, v->end, epoch);
            if (rc) return rc;
        }
    }
    memset(&o, 0, sizeof o);
    memset(&cx, 0, sizeof cx);
    memset(&kw, 0, sizeof kw);
    rd_init(&r, db, v);
    cx.r = &r;
    rc = db->vfs->read(db->vfs->ctx, v->log->f, 0, lh, LG_HDR);
    if (rc) return rc;
    name = sc_name(db, ".idx");
    tmp = sc_name(db, ".idx.tmp");
    if (!name || !tmp) { rc = kv_err(KVDB_ENOMEM, "out of memory"); goto out; }
    rc = srt_acquire(db, &r, v->end, NULL, &runs, &nruns);
    if (rc) goto out;
    kw.src = (it_src *)kv_malloc(&db->al, (nruns ? nruns : 1) * sizeof *kw.src);
    prj = (srt_prj *)kv_malloc(&db->al, (nruns ? nruns : 1) * sizeof *prj);
    if (!kw.src || !prj) { rc = kv_err(KVDB_ENOMEM, "out of memory"); goto out; }
    kw.nsrc = nruns;
    for (i = 0; i < nruns; i++) {
        src_set(&kw.src[i], runs[i]->e, runs[i]->n, runs[i]->pfx, runs[i]->cpl);
        if (!runs[i]->n) continue;
        /* the written run's prefix: common to every run prefix */
        if (!pfx) {
            pfx = kw.src[i].pfx;
            cpl = runs[i]->cpl;
        } else {
            cpl = srt_lcp(pfx, kw.src[i].pfx, cpl < runs[i]->cpl ? cpl : runs[i]->cpl);
        }
    }
    if (!pfx) pfx = srt_nopfx;
    for (i = 0; i < nruns; i++)
        if (runs[i]->n) srt_prj_init(&prj[i], kw.src[i].pfx, kw.src[i].cpl, cpl);
    rc = srt_kway_init(db, &kw);
    if (rc) goto out;
    db->vfs->remove(db->vfs->ctx, tmp);
    rc = db->vfs->open(db->vfs->ctx, tmp, KVDB_VFS_CREATE | KVDB_VFS_EXCL, &o.f);
    if (rc) goto out;
    o.db = db;
    o.off = SC_HDR;
    XXH3_INITSTATE(&o.st);
    XXH3_64bits_reset_withSeed(&o.st, db->seed);
    eoff = SC_EOFF(cpl);
    {   /* the run prefix */
        uint8_t c8[8], zero[16];
        kv_st64(c8, cpl);
        memset(zero, 0, sizeof zero);
        sc_put(&o, c8, 8);
        if (cpl) sc_put(&o, pfx, cpl);
        sc_put(&o, zero, (size_t)(eoff - SC_HDR - 8 - cpl));
    }
    for (;;) { /* the merged sorted entries, encoded at the written prefix */
        srt_ent e;
        size_t from = 0;
        int k = nruns ? srt_kway_next(&cx, &kw, 0, &e, &from) : 0;
        if (k < 0) { rc = k; goto out; }
        if (k == 0) break;
        if (e.off & SRT_DEL) continue;
        e = srt_proj(&prj[from], &e);
        sc_put(&o, &e, sizeof e);
        nent++;
    }
    leaves_off = eoff + nent * sizeof(srt_ent);
    sc_put_leaves(&o, (const hix_inner *)HIX_NODE(v->root), 0, &nleaves);
    sc_flush(&o);
    if (o.rc) { rc = o.rc; goto out; }
    memset(h, 0, sizeof h);
    memcpy(h, SC_MAGIC, 8);
    kv_st32(h + 8, SC_VERSION);
    kv_st32(h + 12, sc_layout());
    memcpy(h + 16, db->id, 16);
    kv_st64(h + 32, db->seed);
    kv_st64(h + 40, XXH3_64bits(lh, LG_HDR));
    kv_st64(h + 48, v->end);
    kv_st64(h + 56, v->seq);
    kv_st64(h + 64, nent);
    kv_st64(h + 72, eoff);
    kv_st64(h + 80, nleaves);
    kv_st64(h + 88, leaves_off);
    kv_st64(h + 96, v->keys);
    kv_st64(h + 104, v->live);
    kv_st64(h + 112, XXH3_64bits_digest(&o.st));
    kv_st64(h + 120, XXH3_64bits(h, 120));
    rc = db->vfs->write(db->vfs->ctx, o.f, 0, h, SC_HDR);
    if (!rc) rc = db->vfs->sync(db->vfs->ctx, o.f);
    if (!rc) {
        rc = db->vfs->close(db->vfs->ctx, o.f);
        o.f = NULL;
    }
    if (!rc) rc = db->vfs->rename(db->vfs->ctx, tmp, name);
    if (!rc) rc = db->vfs->sync_dir(db->vfs->ctx, name);
    if (!rc) { /* unless a swap came meanwhile: then it covers the old file */
        kv_lock(&db->mu_ck); /* (the swap bumps the epoch, then clears sc_end under mu_ck) */
        kv_lock(&db->mu_sync);
        if (db->epoch == epoch) db->sc_end = v->end;
        kv_unlock(&db->mu_sync);
        kv_unlock(&db->mu_ck);
    }
out:
    if (o.f) db->vfs->close(db->vfs->ctx, o.f);
    if (rc && tmp) db->vfs->remove(db->vfs->ctx, tmp);
    kv_free(&db->al, o.buf.p);
    kv_free(&db->al, cx.ka.p);
    kv_free(&db->al, cx.kb.p);
    kv_free(&db->al, kw.src);
    kv_free(&db->al, kw.rel);
    kv_free(&db->al, prj);
    if (runs) srt_release_all(db, runs, nruns);
    kv_free(&db->al, name);
    kv_free(&db->al, tmp);
    return rc;
}

/* Place one mapped leaf into the tree at root (inner nodes made as needed).
 * 0 on success, -1 if the sidecar contradicts itself. */
static int sc_place(hix_w *w, hix_inner *root, unsigned level, unsigned ldepth, uint32_t path, const hix_node *l)
{
    hix_inner *in = root;
    unsigned lv, idx, span, base, i;
    for (lv = 0; lv < level; lv++) {
        hix_ref *slot = &in->child[(path >> (6 * (level - lv))) & 63u];
        if (!*slot) {
            hix_inner *ni = (hix_inner *)hix_alloc(w, 0);
            if (!ni) return -2;
            memset(ni->child, 0, sizeof ni->child);
            ni->h.level = (uint8_t)(lv + 1);
            *slot = (hix_ref)ni;
        } else if (HIX_CODE(*slot)) {
            return -1;
        }
        in = (hix_inner *)HIX_NODE(*slot);
    }
    idx = path & 63u;
    span = 1u << (6 - ldepth);
    base = idx & ~(span - 1);
    if (idx != base) return -1;
    for (i = 0; i < span; i++)
        if (in->child[base + i]) return -1;
    for (i = 0; i < span; i++) in->child[base + i] = hix_mkref(l);
    return 0;
}

static int sc_complete(const hix_inner *in)
{
    unsigned i;
    for (i = 0; i < HIX_FAN; i++) {
        if (!in->child[i]) return 0;
        if (!HIX_CODE(in->child[i]) && !sc_complete((const hix_inner *)HIX_NODE(in->child[i]))) return 0;
    }
    return 1;
}

/* Does the sidecar entry e agree with the log below P: a PUT record whose
 * key starts with the run prefix and encodes to e?  (Checked for the first
 * and last entries: a prefix that does not belong to the entries would
 * misplace every key without failing any other check.)  1 yes, 0 no, < 0
 * the error that kept it from reading the log. */
static int sc_ent_ok(kvdb *db, uint64_t P, const uint8_t *pfx, size_t cpl, const srt_ent *e)
{
    uint8_t hdr[LG_REC], *key;
    uint64_t off = SRT_AT(e);
    size_t kn, rest;
    int ok;
    if ((e->off & SRT_DEL) || off < LG_HDR || off > P || P - off < LG_REC) return 0;
    ok = db->vfs->read(db->vfs->ctx, db->file, off, hdr, LG_REC);
    if (ok) return ok;
    kn = kv_ld16(hdr + 10);
    if (hdr[8] != LG_PUT || kn < cpl || P - off - LG_REC < kn) return 0;
    key = (uint8_t *)kv_malloc(&db->al, kn + 1);
    if (!key) return KVDB_ENOMEM;
    ok = db->vfs->read(db->vfs->ctx, db->file, off + LG_REC, key, kn);
    if (!ok) {
        rest = kn - cpl;
        ok = memcmp(key, pfx, cpl) == 0 && e->k == srt_pack(key + cpl, rest < 8 ? rest : 8) &&
             SRT_LC(e) == (rest < SRT_LONG ? rest : SRT_LONG);
    }
    kv_free(&db->al, key);
    return ok;
}

/* Does sidecar header b (SC_HDR bytes) verify, and belong to the log whose
 * 64-byte header is lh (the same id, seed and header, so a sidecar of an
 * earlier generation never does)?  NULL if so, else why not.  A sidecar
 * covers only synced log (sc_write), so the P of one that does is durable
 * evidence: the log held P bytes on stable storage once. */
static const char *sc_hdr_check(const uint8_t *b, const uint8_t *lh)
{
    if (memcmp(b, SC_MAGIC, 8) || kv_ld32(b + 12) != sc_layout()) return "foreign or damaged";
    if (kv_ld32(b + 8) != SC_VERSION) return "of another version";
    if (kv_ld64(b + 120) != XXH3_64bits(b, 120) || memcmp(b + 16, lh + 24, 16) || kv_ld64(b + 32) != kv_ld64(lh + 16) ||
        kv_ld64(b + 40) != XXH3_64bits(lh, LG_HDR))
        return "foreign or damaged";
    return NULL;
}

/* Try to load the sidecar into v (whose tree is empty).  1: loaded, replay
 * the log from *start; 0: not usable (why in db->sc_why), full replay;
 * < 0: an error that fails the open (out of memory).  Sets db->hz_sc when
 * the header verifies, and db->hz_log from the COMMIT that ends at P. */
static int sc_load(kvdb *db, kv_ver *v, uint64_t logsize, uint64_t *start)
{
    kvdb_file *f = NULL;
    const uint8_t *m = NULL;
    uint8_t *heap = NULL;
    uint64_t size = 0, P, nent, eoff, nleaves, loff, pos, i, cpl = 0;
    uint8_t lh[LG_HDR];
    hix_w w;
    hix_inner *root = NULL;
    srt_run *run = NULL, **runs = NULL;
    char *name;
    int rc, ok = 0;
    const char *why = "no sidecar";

    *start = LG_HDR;
    if (!sc_layout() || db->inmem) return 0;
    name = sc_name(db, ".idx");
    if (!name) return kv_err(KVDB_ENOMEM, "out of memory");
    rc = db->vfs->open(db->vfs->ctx, name, KVDB_VFS_RDONLY, &f);
    kv_free(&db->al, name);
    if (rc) {
        if (rc != KVDB_NOTFOUND) {
            db->sc_rc = rc;
            why = "unreadable";
        }
        kv_clearerr();
        goto out;
    }
    why = "unreadable";
    if ((db->sc_rc = db->vfs->size(db->vfs->ctx, f, &size)) != 0 || size < SC_HDR || size > ((uint64_t)1 << 46)) goto out;
    if (db->use_map && db->vfs->map(db->vfs->ctx, f, size, (const void **)&m) == KVDB_OK) {
        /* mapped */
    } else {
        m = NULL;
        heap = (uint8_t *)kv_malloc(&db->al, (size_t)size);
        if (!heap) { rc = kv_err(KVDB_ENOMEM, "out of memory reading the sidecar"); ok = rc; goto out; }
        if ((db->sc_rc = db->vfs->read(db->vfs->ctx, f, 0, heap, (size_t)size)) != 0) goto out;
    }
    {
        const uint8_t *b = m ? m : heap;
        if ((db->sc_rc = db->vfs->read(db->vfs->ctx, db->file, 0, lh, LG_HDR)) != 0) { why = "unreadable"; goto out; }
        if ((why = sc_hdr_check(b, lh)) != NULL) goto out;
        P = kv_ld64(b + 48);
        db->hz_sc = P; /* evidence even if the rest fails (kvdb_open, rcv_scan) */
        nent = kv_ld64(b + 64);
        eoff = kv_ld64(b + 72);
        nleaves = kv_ld64(b + 80);
        loff = kv_ld64(b + 88);
        why = "covers more log than there is";
        if (P < LG_HDR || P > logsize) goto out;
        why = "damaged";
        if (size < SC_HDR + 8) goto out;
        cpl = kv_ld64(b + SC_HDR);
        if (cpl > KVDB_MAX_KEY || eoff != SC_EOFF(cpl) || eoff > size) goto out;
        for (pos = SC_HDR + 8 + cpl; pos < eoff; pos++)
            if (b[pos]) goto out;
        if (nent > (size - eoff) / sizeof(srt_ent) || loff != eoff + nent * sizeof(srt_ent) || loff > size) goto out;
        if (kv_ld64(b + 112) != XXH3_64bits_withSeed(b + SC_HDR, (size_t)(size - SC_HDR), db->seed)) goto out;
        why = "does not match the log";
        if (P > LG_HDR) { /* an intact COMMIT must end at P, with the recorded sequence */
            uint8_t c[LG_REC + LG_COMMIT_LEN];
            lg_rec rec;
            if (P < LG_HDR + sizeof c) goto out;
            if ((db->sc_rc = db->vfs->read(db->vfs->ctx, db->file, P - sizeof c, c, sizeof c)) != 0) {
                why = "unreadable";
                goto out;
            }
            if (lg_parse(c, P - sizeof c, sizeof c, &rec) || rec.type != LG_COMMIT ||
                kv_ld64(c) != lg_checksum(db->seed, P - sizeof c, c, sizeof c) || kv_ld64(c + LG_REC) != kv_ld64(b + 56))
                goto out;
            db->hz_log = kv_ld64(c + LG_REC + 8); /* the horizon of the log it covers */
            db->hz_seal = kv_ld32(c + LG_REC + 16) == 0 && db->hz_log == P - sizeof c;
        } else if (nent || kv_ld64(b + 56)) {
            goto out;
        }
        if (nent) {
            int e = sc_ent_ok(db, P, b + SC_HDR + 8, (size_t)cpl, (const srt_ent *)(const void *)(b + eoff));
            if (e > 0) e = sc_ent_ok(db, P, b + SC_HDR + 8, (size_t)cpl, (const srt_ent *)(const void *)(b + loff) - 1);
            if (e < 0) {
                db->sc_rc = e;
                why = "unreadable";
            }
            if (e <= 0) goto out;
        }
        /* the hash index: inner nodes here, leaves in place */
        w.db = db;
        w.pool = &db->pool;
        w.gen = db->gen;
        w.retired = NULL;
        w.nretired = 0;
        w.rd = NULL;
        root = (hix_inner *)hix_alloc(&w, 0);
        if (!root) { ok = KVDB_ENOMEM; goto out; }
        memset(root->child, 0, sizeof root->child);
        why = "damaged index";
        for (pos = loff, i = 0; i < nleaves; i++) {
            const uint8_t *d = b + pos;
            const hix_node *l;
            uint32_t cap, cnt, k, seen = 0;
            const uint8_t *sl;
            int pr;
            if (size - pos < 16 + sizeof(hix_node)) goto out;
            cap = kv_ld32(d + 8);
            cnt = kv_ld32(d + 12);
            if (d[0] >= HIX_LEVELS || d[1] > 6 || cap < HIX_LEAF_MIN || cap > (1u << 24) || cap % 8 ||
                (uint64_t)cap * HIX_SLOT > size - pos - 16 - sizeof(hix_node))
                goto out;
            l = (const hix_node *)(const void *)(d + 16);
            if (((uintptr_t)l & 15) || l->gen || l->adj != SC_MAPPED || l->cap != cap || l->count != cnt ||
                l->ldepth != d[1] || l->code != hix_code_of(cap) || cnt >= cap)
                goto out;
            for (k = 0, sl = hix_slots(l); k < cap; k++, sl += HIX_SLOT)
                if (hix_stag(sl)) seen++;
            if (seen != cnt) goto out;
            pr = sc_place(&w, root, d[0], d[1], kv_ld32(d + 4), l);
            if (pr == -2) { ok = KVDB_ENOMEM; goto out; }
            if (pr) goto out;
            pos += 16 + sizeof(hix_node) + (uint64_t)cap * HIX_SLOT;
        }
        if (pos != size || !sc_complete(root)) goto out;
        /* the sorted entries: the oldest run (allocate all before installing
         * anything: after the switch below nothing may fail) */
        run = (srt_run *)kv_malloc(&db->al, sizeof *run);
        runs = (srt_run **)kv_malloc(&db->al, 8 * sizeof *runs);
        if (!run || !runs) {
            kv_free(&db->al, run);
            kv_free(&db->al, runs);
            ok = kv_err(KVDB_ENOMEM, "out of memory");
            goto out;
        }
        run->lo = LG_HDR;
        run->hi = P;
        run->n = (size_t)nent;
        run->cap = 0;
        run->refs = 1;
        run->e = (const srt_ent *)(const void *)(b + eoff);
        run->cpl = (size_t)cpl;
        run->pfx = b + SC_HDR + 8;
        run->bytes = sizeof *run;
        db->srt_bytes += sizeof *run;
        /* install */
        hix_free_tree(db, &db->pool, v->root, 0);
        v->root = (hix_ref)root;
        root = NULL;
        v->keys = kv_ld64(b + 96);
        v->live = kv_ld64(b + 104);
        v->seq = kv_ld64(b + 56);
        db->seq = v->seq;
        db->runs = runs;
        db->runs_cap = 8;
        db->runs[0] = run;
        db->nruns = 1;
        db->sc_base = m ? m : heap;
        db->sc_len = size;
        db->sc_heap = heap != NULL;
        db->sc_file = f;
        db->sc_end = P;
        heap = NULL;
        m = NULL;
        f = NULL;
        *start = P;
        ok = 1;
        why = "loaded";
    }
out:
    if (root) hix_free_tree(db, &db->pool, (hix_ref)root, 0);
    if (m) db->vfs->unmap(db->vfs->ctx, f, m, size);
    kv_free(&db->al, heap);
    if (f) db->vfs->close(db->vfs->ctx, f);
    db->sc_why = why;
    return ok;
}

/* Automatic checkpoints.  After a commit, once the log has grown by half
 * of what the sidecar covers (at least 64 MiB) since the last checkpoint, a
 * helper thread writes a new one from the published snapshot -- readers and
 * writers go on meanwhile.  Built without threads, checkpoints happen only
 * at close and in kvdb_checkpoint(). */

static int cp_step(kvdb *db, uint64_t budget);
#ifndef KVDB_NO_THREADS
static int ck_stopping(kvdb *db);
#endif
static void cp_failed(kvdb *db);
static void cp_maybe(kvdb *db, uint64_t end);

#ifndef KVDB_NO_THREADS
static void *ck_main(void *arg)
{
    kvdb *db = (kvdb *)arg;
    kv_lock(&db->mu_ck);
    for (;;) {
        kv_ver *v;
        int cp;
        while (!db->ck_want && !db->cp_want && !db->srt_want && !db->jobs && !db->ck_stop)
            kv_wait(&db->cv_ck, &db->mu_ck);
        if (db->jobs) { /* slow system calls the writer left */
            kv_job *j = db->jobs;
            db->jobs = j->next;
            if (!db->jobs) db->jobs_tail = &db->jobs;
            kv_unlock(&db->mu_ck);
            kv_job_run(db, j);
            kv_free(&db->al, j);
            kv_lock(&db->mu_ck);
            continue;
        }
        if (db->ck_stop) break;
        if (db->srt_want && !db->cp_want && !db->ck_want) { /* sort what was committed */
            kv_rd r;
            srt_run **runs;
            size_t n;
            db->srt_want = 0;
            kv_unlock(&db->mu_ck);
            v = ver_acquire(db);
            rd_init(&r, db, v);
            if (srt_acquire(db, &r, v->end, NULL, &runs, &n) == KVDB_OK) srt_release_all(db, runs, n);
            ver_release(db, v);
            kv_lock(&db->mu_ck);
            continue;
        }
        cp = db->cp_want;
        db->cp_want = 0;
        if (!cp) db->ck_want = 0;
        kv_unlock(&db->mu_ck);
        if (cp) { /* an automatic compaction, in slices so that close can stop it */
            int rc;
            kv_lock(&db->mu_ck);
            db->cp_running = 1;
            kv_unlock(&db->mu_ck);
            kv_lock(&db->mu_cp);
            do rc = cp_step(db, (uint64_t)4 << 20);
            while (rc == KVDB_OK && !ck_stopping(db));
            if (rc < 0 && rc != KVDB_EBUSY) cp_failed(db);
            kv_unlock(&db->mu_cp);
            kv_lock(&db->mu_ck);
            db->cp_running = 0;
            if (rc == KVDB_DONE && !db->inmem) db->ck_want = 1; /* a sidecar for the new file */
            kv_unlock(&db->mu_ck);
        } else if (!kv_sticky(db)) {
            v = ver_acquire(db);
            kv_lock(&db->mu_ckpt);
            (void)sc_write(db, v, db->sync_mode != KVDB_SYNC_OFF); /* a failure leaves the old sidecar */
            kv_unlock(&db->mu_ckpt);
            ver_release(db, v);
        }
        kv_lock(&db->mu_ck);
    }
    kv_unlock(&db->mu_ck);
    return NULL;
}
#endif

#ifndef KVDB_NO_THREADS
static int ck_stopping(kvdb *db)
{
    int stop;
    kv_lock(&db->mu_ck);
    stop = db->ck_stop;
    kv_unlock(&db->mu_ck);
    return stop;
}
#endif

/* A failed automatic compaction is not retried until the file has grown
 * by the minimum size again (disk full would fail it at every commit). */
static void cp_failed(kvdb *db)
{
    uint64_t end;
    kv_lock(&db->mu_ver);
    end = db->cur->end;
    kv_unlock(&db->mu_ver);
    db->cp_retry_at = end + db->cp_min;
}

/* Log written since the shared sorted runs end that the checkpointer
 * thread sorts in the background, once key order is in use (the runs
 * exist: built by an iterator or loaded from the sidecar): at least this
 * much, and at least 1/8 of what the runs cover, so that the merges stay
 * geometric.  Iterators then find the runs ready instead of sorting. */
#define SRT_BG_MIN ((uint64_t)(KVDB_CK_MIN_BYTES) / 16)

static void ck_maybe(kvdb *db, uint64_t end)
{
#ifndef KVDB_NO_THREADS
    uint64_t since, covered = 0;
    int sort = 0;
    if (db->rdonly) return;
    /* Only if mu_srt is free: a sort holds it for as long as it takes
     * (seconds for a whole log), and a commit must not wait for that --
     * the check is a hint, the next commit makes it again. */
    if (kv_trylock(&db->mu_srt)) {
        if (db->nruns) { /* (after a compaction swap end may count in the old file: a hint only) */
            covered = db->runs[db->nruns - 1]->hi;
            sort = end > covered && end - covered >= SRT_BG_MIN && end - covered >= covered / 8;
        }
        kv_unlock(&db->mu_srt);
    }
    kv_lock(&db->mu_ck);
    since = end - db->sc_end;
    if (!db->inmem && !db->ck_stop && !db->ck_want && end > db->sc_end && since >= (uint64_t)(KVDB_CK_MIN_BYTES) && since >= db->sc_end / 2) {
        if (!db->ck_started && pthread_create(&db->ck_thread, NULL, ck_main, db) == 0) db->ck_started = 1;
        if (db->ck_started) {
            db->ck_want = 1;
            kv_broadcast(&db->cv_ck);
        }
    }
    if (sort && !db->ck_stop && !db->srt_want) {
        if (!db->ck_started && pthread_create(&db->ck_thread, NULL, ck_main, db) == 0) db->ck_started = 1;
        if (db->ck_started) {
            db->srt_want = 1;
            kv_broadcast(&db->cv_ck);
        }
    }
    kv_unlock(&db->mu_ck);
    cp_maybe(db, end);
#else
    cp_maybe(db, end);
#endif
}

/* Unmap, close or free on the thread when there is one (see kv_job) and
 * the file or block is big (files: KVDB_CK_MIN_BYTES, as for checkpoints),
 * else now.  After ck_stop, and in builds without threads, always now. */
static void ck_job(kvdb *db, int big, int kind, kvdb_file *f, const void *base, uint64_t len)
{
    kv_job j0;
    (void)big;
    j0.kind = kind;
    j0.seq = 0;
    j0.f = f;
    j0.base = base;
    j0.len = len;
    j0.next = NULL;
#ifndef KVDB_NO_THREADS
    if (big && (!db->inmem || kind == KV_JOB_FREE) && ck_enqueue(db, &j0)) return;
#endif
    kv_job_run(db, &j0);
}

static void ck_stop(kvdb *db)
{
#ifndef KVDB_NO_THREADS
    int started;
    kv_lock(&db->mu_ck);
    db->ck_stop = 1;
    started = db->ck_started;
    kv_broadcast(&db->cv_ck);
    kv_unlock(&db->mu_ck);
    if (started) pthread_join(db->ck_thread, NULL); /* it runs the jobs left first */
    db->ck_started = 0;
    if (db->rsv_log) kv_rsv_collect(db); /* so close cuts what it reserved */
#else
    (void)db;
#endif
}

