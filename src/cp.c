/* ======================================================================
 * SECTION: compaction
 *
 * The log only grows; compaction gives back the space of overwritten and
 * deleted records by writing the live records of a snapshot, in key order,
 * into a new file ("<path>.compact") and renaming it over the database.
 *
 *   start     (writer role, briefly) pin the published version S, reserve
 *             a write generation for the new index, create and lock the
 *             new file and write its header: same seed and id, generation
 *             one higher.
 *   copy      (no lock) walk S in key order through the sorted runs and
 *             append each live record to the new file, verified on the way,
 *             in batches closed by COMMIT records, collecting the new
 *             file's sorted base run (already in order) and its keys'
 *             hashes.  Under kvdb_compact a thread of its own writes one
 *             buffer while the copy fills the next (the copy's writer).
 *   index     (no lock) build the new hash index from the compactor's own
 *             node pool in one top-down pass over the copied keys ordered
 *             by hash, each leaf made once at its final size (cp_index).
 *   catch up  (no lock) replay what was committed to the old file since
 *             S, transaction by transaction, into the new file and index;
 *             then sync the new file.
 *   swap      (writer role) replay the last commits, append a COMMIT that
 *             seals the copy (its durable field covers it), sync, rename
 *             over the database, sync the directory, and install the new
 *             file, index, base run and version.  Commits that were
 *             waiting for a sync of the old file are released: their data
 *             is in the new one, which is durable.
 * Every phase is done in bounded slices (kvdb_compact_step), so an
 * application, or the commit path when automatic compaction runs without a
 * thread, can spread it out.
 *
 * Invariants:
 *   1. Until the rename the database is the old file, untouched by the
 *      compaction; after it, the new file, complete and synced, holding
 *      every commit acknowledged before the swap.  A crash in between
 *      leaves a stray "<path>.compact", removed by the next writable open.
 *   2. Nothing is acknowledged between the rename and the directory sync
 *      (the writer role is held); if that sync fails the handle goes
 *      sticky, as after any failed sync.
 *   3. A snapshot taken before the swap keeps its file, mapping, index and
 *      sorted runs (all referenced); the old index is freed once no version
 *      of the old file is left, in paced slices like other garbage.
 *   4. Offsets are only compared within one file: versions, readers and
 *      sorted runs carry their file, and sync targets their epoch.
 *   5. A failure before the rename (disk full included) abandons the
 *      compaction: the new file is removed and the database is unchanged
 *      and writable.
 * Cost: one sequential write of the live data, a read of it in key order,
 * and, while it runs, a second hash index (about 16-20 bytes per key), a
 * base run (16 bytes per key) and until the index is built the hashes (16
 * bytes per key; twice that while they are put in order).
 * ====================================================================== */
#define CP_FLUSH  ((size_t)1 << 20) /* buffered bytes written at once */
#define CP_BATCH  4096              /* copied records per COMMIT */
#define CP_NEAR   ((uint64_t)64 << 10) /* left for the swap to copy */
#define CP_ROUNDS 256               /* catch-up slices before the swap copies the rest */
#define CP_UNSYNCED ((uint64_t)1 << 20) /* synced before the swap if more is not */
#ifndef KVDB_CP_AUTO_STEP
#define KVDB_CP_AUTO_STEP ((size_t)256 << 10) /* work per automatic step */
#endif

enum { CP_COPY = 1, CP_INDEX = 2, CP_CATCHUP = 3 };

/* A copied key for the new index, which is built after the copy from all
 * of them put in hash order (cp_index). */
typedef struct cp_hent {
    uint64_t h, off;
} cp_hent;

struct kv_cp {
    int phase;
    uint64_t t0;           /* start, for kvdb_stat */
    uint64_t sync_ns;      /* the swap's time in syncs of the file and directory */
    kv_ver *snap;          /* S: pinned, not counted as a reader */
    kv_rd srd;             /* reads S */
    srt_run **runs;        /* S in key order: its runs merged... */
    size_t nruns;
    srt_kway kw;
    srt_prj *prj;          /* ...with entries re-encoded at the prefix */
    const uint8_t *pfx;    /* common to all of them (the base run's) */
    size_t cpl;
    srt_cx cx;
    kv_buf rbuf;           /* a record read without a mapping */

    char *tmp;             /* "<path>.compact" */
    kv_log *log;           /* the new file */
    kv_map *map;
    int use_map;
    kv_buf buf;            /* encoded records not yet written... */
    uint64_t buf_off;      /* ...which start at this offset */
    uint64_t synced;       /* bytes of the new file known durable */
    uint32_t nrec;         /* records since the last COMMIT */
    uint64_t seq;          /* the new file's last commit sequence */
    uint64_t fgen;         /* its header's generation */

    hix_pool pool;         /* the new index and its nodes */
    hix_w w;
    kv_rd nrd;
    hix_ref root;
    uint64_t keys, live;
    srt_run *base;         /* key order of the copied records */
    uint64_t base_hi;      /* where the copy ended in the new file */
    cp_hent *hs;           /* copied keys, for the new index */
    size_t nhs, hs_cap;
    struct cp_bulk *bulk;  /* the index being built from hs */
    uint64_t from;         /* old log copied up to here */
    unsigned rounds;       /* catch-up slices so far */
    kv_deadtree *dt;       /* allocated ahead for the swap */
    int async;             /* kvdb_compact: the copy may write on a thread */
    struct cp_wr *wr;      /* that thread, while the copy runs */
    kv_buf spare;          /* the buffer it is writing (or has written) */
};

static uint64_t kv_now_ns(void)
{
#if defined(CLOCK_MONOTONIC) && !defined(_WIN32)
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#endif
    return (uint64_t)time(NULL) * 1000000000u;
}

/* The new file's reader, current with the buffer. */
static const kv_rd *cp_rd(kv_cp *cp)
{
    assert(!cp->wr); /* invariant 2 of the copy's writer */
    cp->nrd.base = cp->map ? cp->map->base : NULL;
    cp->nrd.end = cp->buf_off;
    cp->nrd.wb = cp->buf.p;
    cp->nrd.wb_off = cp->buf_off;
    cp->nrd.wb_len = cp->buf.len;
    return &cp->nrd;
}

/* The copy's writer.  Appending a new file costs CPU in the kernel
 * (pwrite copies into fresh page cache, a large share of kvdb_compact's
 * time), so kvdb_compact hands each full buffer to a thread of its own and
 * fills the other meanwhile.  Only the copy phase does this, and only for a
 * snapshot of KVDB_CP_ASYNC_MIN live bytes or more in a file (a thread
 * does not pay for less; an in-memory write is a memcpy); automatic
 * compaction and kvdb_compact_step write in their own thread, which
 * leaves the application's other CPU alone.
 *   1. At most one write is in flight; the next flush waits for it, so the
 *      file layer sees the writes in order, one at a time, and the mapping
 *      is never extended beside a write.
 *   2. The offsets below cp->buf_off are handed over but maybe not
 *      written: nothing reads the new file while the thread exists
 *      (cp_rd asserts it); the copy's end stops it, and so does cp_abort
 *      before it closes and removes the file.
 *   3. A failed write is reported, with the file layer's message, by the
 *      next flush or the stop, and abandons the compaction like any other.
 *   4. The thread calls nothing but the file layer's write: not the
 *      allocator, not the engine's locks. */
#ifndef KVDB_CP_ASYNC_MIN
#define KVDB_CP_ASYNC_MIN ((uint64_t)16 << 20)
#endif

#ifndef KVDB_NO_THREADS
typedef struct cp_wr {
    kv_mutex mu;
    kv_cond cv;
    kv_thread th;
    const kvdb_vfs *vfs;
    kvdb_file *f;
    int busy, stop;        /* a write handed over; the thread is to end */
    const uint8_t *p;      /* the write */
    size_t n;
    uint64_t off;
    int rc;                /* how the last write ended... */
    char msg[sizeof kv_errbuf]; /* ...and what the file layer said */
} cp_wr;

static void *cp_wr_main(void *arg)
{
    cp_wr *w = (cp_wr *)arg;
    kv_lock(&w->mu);
    for (;;) {
        int rc;
        while (!w->busy && !w->stop) kv_wait(&w->cv, &w->mu);
        if (!w->busy) break;
        kv_unlock(&w->mu);
        kv_clearerr();
        rc = w->vfs->write(w->vfs->ctx, w->f, w->off, w->p, w->n);
        kv_lock(&w->mu);
        if (rc) {
            w->rc = rc;
            memcpy(w->msg, kv_errbuf, sizeof w->msg);
        }
        w->busy = 0;
        kv_broadcast(&w->cv);
    }
    kv_unlock(&w->mu);
    return NULL;
}

/* Wait for the write in flight; its result. */
static int cp_wr_wait(kvdb *db, kv_cp *cp)
{
    cp_wr *w = cp->wr;
    int rc;
    if (!w) return KVDB_OK;
    kv_lock(&w->mu);
    while (w->busy) kv_wait(&w->cv, &w->mu);
    rc = w->rc;
    kv_unlock(&w->mu);
    if (!rc) return KVDB_OK;
    return w->msg[0] ? kv_err(rc, "%s", w->msg) : kv_err(rc, "%s: compaction: writing the new file failed", db->path);
}

/* The thread, if the copy should have one and can.  Caller: the copy. */
static void cp_wr_start(kvdb *db, kv_cp *cp)
{
    cp_wr *w;
    if (!cp->async || cp->wr || cp->phase != CP_COPY || db->inmem || cp->snap->live < KVDB_CP_ASYNC_MIN) return;
    cp->async = 0; /* one try */
    w = (cp_wr *)kv_malloc(&db->al, sizeof *w);
    if (!w) return; /* then the copy writes itself */
    memset(w, 0, sizeof *w);
    w->vfs = db->vfs;
    w->f = cp->log->f;
    kv_mutex_init(&w->mu);
    kv_cond_init(&w->cv);
    if (pthread_create(&w->th, NULL, cp_wr_main, w) != 0) {
        kv_cond_free(&w->cv);
        kv_mutex_free(&w->mu);
        kv_free(&db->al, w);
        return;
    }
    cp->wr = w;
}

/* Wait for the last write and end the thread; that write's result. */
static int cp_wr_stop(kvdb *db, kv_cp *cp)
{
    cp_wr *w = cp->wr;
    int rc;
    if (!w) return KVDB_OK;
    rc = cp_wr_wait(db, cp);
    kv_lock(&w->mu);
    w->stop = 1;
    kv_broadcast(&w->cv);
    kv_unlock(&w->mu);
    pthread_join(w->th, NULL);
    kv_cond_free(&w->cv);
    kv_mutex_free(&w->mu);
    kv_free(&db->al, w);
    cp->wr = NULL;
    return rc;
}
#else
#define cp_wr_wait(db, cp) ((void)(db), (void)(cp), KVDB_OK)
#define cp_wr_start(db, cp) ((void)(db), (void)(cp))
#define cp_wr_stop(db, cp) ((void)(db), (void)(cp), KVDB_OK)
#endif

/* Write the buffer: by the copy's thread if there is one (then swap in the
 * other buffer), else here. */
static int cp_flush(kvdb *db, kv_cp *cp)
{
    int rc;
    if (!cp->buf.len) return KVDB_OK;
    rc = cp_wr_wait(db, cp); /* invariant 1 */
    if (!rc) rc = kv_map_cover(db, cp->log, &cp->map, &cp->use_map, cp->buf_off + cp->buf.len);
    if (rc) return rc;
#ifndef KVDB_NO_THREADS
    if (cp->wr) {
        cp_wr *w = cp->wr;
        kv_buf t = cp->spare;
        cp->spare = cp->buf;
        cp->buf = t;
        cp->buf.len = 0;
        kv_lock(&w->mu);
        w->p = cp->spare.p;
        w->n = cp->spare.len;
        w->off = cp->buf_off;
        w->busy = 1;
        kv_broadcast(&w->cv);
        kv_unlock(&w->mu);
        cp->buf_off += cp->spare.len;
        cp->log->bytes = cp->buf_off;
        return KVDB_OK;
    }
#endif
    rc = db->vfs->write(db->vfs->ctx, cp->log->f, cp->buf_off, cp->buf.p, cp->buf.len);
    if (rc) return rc;
    cp->buf_off += cp->buf.len;
    cp->buf.len = 0;
    cp->log->bytes = cp->buf_off;
    return KVDB_OK;
}

/* Append a record to the new file; *off gets its offset. */
static int cp_emit(kvdb *db, kv_cp *cp, uint8_t type, const uint8_t *key, uint32_t klen, const uint8_t *val,
                   uint32_t vlen, uint64_t *off)
{
    size_t size = (size_t)LG_REC + klen + vlen;
    uint64_t at;
    uint8_t *q;
    int rc;
    if (cp->buf.len >= CP_FLUSH) {
        cp_wr_start(db, cp);
        rc = cp_flush(db, cp);
        if (rc) return rc;
    }
    rc = kv_buf_reserve(&db->al, &cp->buf, size);
    if (rc) return rc;
    at = cp->buf_off + cp->buf.len;
    q = cp->buf.p + cp->buf.len;
    lg_put_header(q, type, klen, vlen);
    if (type == LG_COMMIT) {
        kv_st64(q + LG_REC, ++cp->seq);
        kv_st64(q + LG_REC + 8, cp->synced);
        kv_st32(q + LG_REC + 16, cp->nrec);
        kv_st32(q + LG_REC + 20, 0);
        cp->nrec = 0;
    } else {
        memcpy(q + LG_REC, key, klen);
        if (vlen) memcpy(q + LG_REC + klen, val, vlen);
        cp->nrec++;
    }
    kv_st64(q, lg_checksum(db->seed, at, q, size));
    cp->buf.len += size;
    if (off) *off = at;
    return KVDB_OK;
}

static int cp_commit(kvdb *db, kv_cp *cp)
{
    return cp->nrec ? cp_emit(db, cp, LG_COMMIT, NULL, 0, NULL, LG_COMMIT_LEN, NULL) : KVDB_OK;
}

/* Apply one PUT or DEL to the new file and index. */
static int cp_apply(kvdb *db, kv_cp *cp, uint8_t type, const uint8_t *key, uint32_t klen, const uint8_t *val,
                    uint32_t vlen)
{
    uint64_t h = kv_hash(db->seed, key, klen), off, old = 0, osize;
    int rc = cp_emit(db, cp, type, key, klen, val, vlen, &off);
    if (rc) return rc;
    cp->w.rd = cp_rd(cp);
    if (type == LG_PUT) {
        rc = hix_put(&cp->w, &cp->root, h, key, klen, off, &old);
        if (rc) return rc;
        cp->live += (uint64_t)LG_REC + klen + vlen;
        if (!old) cp->keys++;
    } else {
        rc = hix_del(&cp->w, &cp->root, h, key, klen, &old);
        if (rc == KVDB_NOTFOUND)
            return kv_err(KVDB_ECORRUPT, "%s: compaction: a delete of a key the copy does not have", db->path);
        if (rc) return rc;
        cp->keys--;
    }
    if (old) {
        rc = rd_size(cp_rd(cp), old, &osize);
        if (rc) return rc;
        cp->live -= osize;
    }
    return KVDB_OK;
}

/* An empty index: one inner node whose children all point at one leaf. */
static int cp_empty_root(hix_w *w, hix_ref *out)
{
    hix_node *leaf = hix_alloc(w, HIX_LEAF_MIN);
    hix_inner *root = leaf ? (hix_inner *)hix_alloc(w, 0) : NULL;
    unsigned i;
    if (!root) {
        if (leaf) hix_free_node(w->db, w->pool, leaf);
        return KVDB_ENOMEM;
    }
    for (i = 0; i < HIX_FAN; i++) root->child[i] = hix_mkref(leaf);
    *out = (hix_ref)root;
    return KVDB_OK;
}

static void cp_pool_free(kvdb *db, hix_pool *pl)
{
    unsigned i;
    for (i = 0; i < KV_NFREE; i++)
        while (pl->free_nodes[i]) {
            hix_node *n = pl->free_nodes[i];
            pl->free_nodes[i] = n->link;
            pl->n_free[i]--;
            pl->free_bytes -= hix_size(n->cap) + n->adj;
            pl->bytes -= hix_size(n->cap) + n->adj;
            kv_free(&db->al, (uint8_t *)n - n->adj);
        }
}

/* Abandon the compaction in progress (invariant 5).  Caller holds mu_cp. */
static void cp_abort(kvdb *db)
{
    kv_cp *cp = db->cp;
    if (!cp) return;
    db->cp = NULL;
    if (cp->wr) { /* before the file goes (invariant 2 of the writer); the first error is the one to tell */
        kv_errkeep msg;
        kv_err_keep(&msg);
        (void)cp_wr_stop(db, cp);
        kv_err_put(&msg);
    }
    kv_lock(&db->mu_ver);
    db->cp_active = 0;
    kv_unlock(&db->mu_ver);
    if (cp->root) hix_free_tree(db, &cp->pool, cp->root, 0);
    cp_pool_free(db, &cp->pool);
    if (cp->base) {
        kv_lock(&db->mu_srt);
        srt_release(db, cp->base);
        kv_unlock(&db->mu_srt);
    }
    if (cp->runs) srt_release_all(db, cp->runs, cp->nruns);
    kv_free(&db->al, cp->kw.src);
    kv_free(&db->al, cp->kw.rel);
    kv_free(&db->al, cp->prj);
    kv_free(&db->al, cp->cx.ka.p);
    kv_free(&db->al, cp->cx.kb.p);
    kv_free(&db->al, cp->rbuf.p);
    kv_free(&db->al, cp->buf.p);
    kv_free(&db->al, cp->spare.p);
    kv_free(&db->al, cp->hs);
    kv_free(&db->al, cp->bulk);
    if (cp->snap) ver_release(db, cp->snap);
    kv_map_release(db, cp->map);
    kv_log_release(db, cp->log); /* closes the new file */
    if (cp->tmp) {
        db->vfs->remove(db->vfs->ctx, cp->tmp);
        kv_free(&db->al, cp->tmp);
    }
    kv_free(&db->al, cp->dt);
    kv_free(&db->al, cp);
}

/* Begin: pin S, make the new file.  Caller holds mu_cp. */
static int cp_start(kvdb *db)
{
    kv_cp *cp;
    uint8_t h[LG_HDR], oh[LG_HDR];
    kvdb_file *f = NULL;
    size_t i;
    int rc;

    cp = (kv_cp *)kv_malloc(&db->al, sizeof *cp);
    if (!cp) return kv_err(KVDB_ENOMEM, "out of memory");
    memset(cp, 0, sizeof *cp);
    db->cp = cp;
    kv_lock(&db->mu_ver);
    db->cp_active = 1;
    kv_unlock(&db->mu_ver);
    cp->t0 = kv_now_ns();
    cp->dt = (kv_deadtree *)kv_malloc(&db->al, sizeof *cp->dt);
    cp->tmp = sc_name(db, ".compact");
    if (!cp->dt || !cp->tmp) { rc = kv_err(KVDB_ENOMEM, "out of memory"); goto fail; }

    /* a generation of its own for the new index, and the snapshot */
    rc = kv_writer_take(db, 0, 0);
    if (rc) goto fail;
    cp->w.gen = ++db->gen;
    cp->snap = ver_acquire(db);
    cp->use_map = db->use_map;
    kv_writer_drop(db);
    cp->w.db = db;
    cp->w.pool = &cp->pool;
    rd_init(&cp->srd, db, cp->snap);
    cp->from = cp->snap->end;

    /* the new file: header first; locked before it can carry the name */
    rc = db->vfs->read(db->vfs->ctx, cp->snap->log->f, 0, oh, LG_HDR);
    if (rc) goto fail;
    db->vfs->remove(db->vfs->ctx, cp->tmp); /* a stray one: the open lock says no one else uses it */
    rc = db->vfs->open(db->vfs->ctx, cp->tmp, KVDB_VFS_CREATE | KVDB_VFS_EXCL, &f);
    if (rc) goto fail;
    cp->log = kv_log_new(db, f);
    if (!cp->log) {
        db->vfs->close(db->vfs->ctx, f);
        rc = KVDB_ENOMEM;
        goto fail;
    }
    rc = db->vfs->lock(db->vfs->ctx, f, 1);
    if (rc) goto fail;
    memcpy(h, oh, LG_HDR);
    kv_st64(h + 40, (uint64_t)time(NULL));
    cp->fgen = kv_ld64(oh + 48) + 1;
    kv_st64(h + 48, cp->fgen);
    kv_st64(h + 56, XXH3_64bits(h, 56));
    rc = kv_buf_reserve(&db->al, &cp->buf, LG_HDR);
    if (rc) goto fail;
    memcpy(cp->buf.p, h, LG_HDR);
    cp->buf.len = LG_HDR;
    cp->buf_off = 0;
    rc = cp_flush(db, cp);
    if (rc) goto fail;
    cp->synced = LG_HDR;
    cp->nrd.db = db;
    cp->nrd.file = f;

    /* the new index, and S in key order */
    rc = cp_empty_root(&cp->w, &cp->root);
    if (rc) goto fail;
    rc = srt_acquire(db, &cp->srd, cp->snap->end, NULL, &cp->runs, &cp->nruns);
    if (rc) goto fail;
    cp->kw.src = (it_src *)kv_malloc(&db->al, (cp->nruns ? cp->nruns : 1) * sizeof *cp->kw.src);
    cp->prj = (srt_prj *)kv_malloc(&db->al, (cp->nruns ? cp->nruns : 1) * sizeof *cp->prj);
    if (!cp->kw.src || !cp->prj) { rc = kv_err(KVDB_ENOMEM, "out of memory"); goto fail; }
    cp->kw.nsrc = cp->nruns;
    for (i = 0; i < cp->nruns; i++) { /* as sc_write: the prefix common to all runs */
        src_set(&cp->kw.src[i], cp->runs[i]->e, cp->runs[i]->n, cp->runs[i]->pfx, cp->runs[i]->cpl);
        if (!cp->runs[i]->n) continue;
        if (!cp->pfx) {
            cp->pfx = cp->kw.src[i].pfx;
            cp->cpl = cp->runs[i]->cpl;
        } else {
            cp->cpl = srt_lcp(cp->pfx, cp->kw.src[i].pfx, cp->cpl < cp->runs[i]->cpl ? cp->cpl : cp->runs[i]->cpl);
        }
    }
    if (!cp->pfx) cp->pfx = srt_nopfx;
    for (i = 0; i < cp->nruns; i++)
        if (cp->runs[i]->n) srt_prj_init(&cp->prj[i], cp->kw.src[i].pfx, cp->kw.src[i].cpl, cp->cpl);
    rc = srt_kway_init(db, &cp->kw);
    if (rc) goto fail;
    cp->cx.r = &cp->srd;
    kv_lock(&db->mu_srt);
    cp->base = srt_alloc(db, (size_t)cp->snap->keys, cp->cpl);
    if (cp->base && cp->cpl) memcpy((uint8_t *)(uintptr_t)cp->base->pfx, cp->pfx, cp->cpl);
    if (cp->base && !db->runs_cap) { /* room for the base run at the swap */
        db->runs = (srt_run **)kv_malloc(&db->al, 8 * sizeof *db->runs);
        if (db->runs) db->runs_cap = 8;
    }
    kv_unlock(&db->mu_srt);
    if (!cp->base) { rc = KVDB_ENOMEM; goto fail; }
    cp->base->n = 0;
    cp->base->lo = LG_HDR;
    cp->phase = CP_COPY;
    return KVDB_OK;
fail:
    cp_abort(db);
    return rc;
}

/* Read and verify the record at off of S. */
static int cp_read(kvdb *db, kv_cp *cp, uint64_t off, const uint8_t **p, lg_rec *rec)
{
    const kv_rd *r = &cp->srd;
    uint8_t hdr[LG_REC];
    int rc;
    if (off < LG_HDR || off >= r->end) goto bad;
    if (r->base) {
        *p = r->base + off;
        if (lg_parse(*p, off, r->end - off, rec) != KVDB_OK) goto bad;
    } else {
        rc = db->vfs->read(db->vfs->ctx, r->file, off, hdr, r->end - off < LG_REC ? (size_t)(r->end - off) : LG_REC);
        if (rc) return rc;
        if (lg_parse(hdr, off, r->end - off, rec) != KVDB_OK) goto bad;
        cp->rbuf.len = 0;
        rc = kv_buf_reserve(&db->al, &cp->rbuf, (size_t)rec->size);
        if (rc) return rc;
        rc = db->vfs->read(db->vfs->ctx, r->file, off, cp->rbuf.p, (size_t)rec->size);
        if (rc) return rc;
        *p = cp->rbuf.p;
    }
    if (kv_ld64(*p) != lg_checksum(db->seed, off, *p, rec->size)) goto bad;
    return KVDB_OK;
bad:
    return kv_err(KVDB_ECORRUPT, "%s: record at offset %llu is damaged (found while compacting; nothing was changed)",
                  db->path, (unsigned long long)off);
}

/* Order the copied keys by their tag's top 16 bits (one counting pass):
 * enough for consecutive inserts to share leaves. */
static int cp_hash_order(kvdb *db, kv_cp *cp)
{
    size_t *cnt, i, sum = 0;
    cp_hent *out;
    if (cp->nhs < 2) return KVDB_OK;
    cnt = (size_t *)kv_malloc(&db->al, 65536 * sizeof *cnt);
    out = (cp_hent *)kv_malloc(&db->al, cp->nhs * sizeof *out);
    if (!cnt || !out) {
        kv_free(&db->al, cnt);
        kv_free(&db->al, out);
        return kv_err(KVDB_ENOMEM, "out of memory");
    }
    memset(cnt, 0, 65536 * sizeof *cnt);
    for (i = 0; i < cp->nhs; i++) cnt[cp->hs[i].h >> 48]++;
    for (i = 0; i < 65536; i++) {
        size_t c = cnt[i];
        cnt[i] = sum;
        sum += c;
    }
    for (i = 0; i < cp->nhs; i++) out[cnt[cp->hs[i].h >> 48]++] = cp->hs[i];
    kv_free(&db->al, cnt);
    kv_free(&db->al, cp->hs);
    cp->hs = out;
    cp->hs_cap = cp->nhs;
    return KVDB_OK;
}

/* The index phase builds the new hash index from the copied keys in one
 * pass, top down, instead of inserting them one by one (which grows every
 * leaf through its sizes and splits it, copying each key several times).
 * For a node at some level, its keys -- a contiguous range of hs, sorted
 * by tag down to that level -- are counted per child and the 64 children
 * are cut into aligned blocks, each as large as possible while it holds at
 * most CP_SHARED_LIM keys (3/4 of the split point, so the leaf takes
 * inserts before it splits): such a block becomes one leaf of that local
 * depth, sized for its keys (at most 3/4 full).  A single child becomes one
 * leaf if it holds at most CP_BULK_LIM keys; a single child holding more
 * becomes an inner node one level down, built the same way (at the last
 * level, one large leaf).  An explicit stack of nodes under construction
 * lets the work stop after any block, so kvdb_compact_step's slices stay
 * bounded.  hs is ordered by the top 16 bits of the hash (cp_hash_order),
 * enough for levels 0 and 1; a node deeper down sorts its range first. */
#define CP_BULK_LIM 96
#define CP_SHARED_LIM (HIX_SPLIT_MAX * 3 / 4)

typedef struct cp_bframe {
    hix_inner *in;
    unsigned level, npart, ipart;
    struct { uint8_t c, span; size_t a, b; } part[HIX_FAN];
} cp_bframe;

struct cp_bulk {
    cp_bframe fr[HIX_LEVELS];
    unsigned depth;
};

static int cp_tag_cmp(const void *x, const void *y)
{
    uint32_t a = hix_tag(((const cp_hent *)x)->h), b = hix_tag(((const cp_hent *)y)->h);
    return a < b ? -1 : a > b;
}

/* Push a frame for the inner node in at level, holding hs[a, b): sort the
 * range if the order of hs does not reach this level, cut the children. */
static void cp_bulk_push(kv_cp *cp, hix_inner *in, unsigned level, size_t a, size_t b)
{
    cp_bframe *f = &cp->bulk->fr[cp->bulk->depth++];
    size_t cnt[HIX_FAN], i, pos = a;
    unsigned c;
    if (level >= 2 && b - a > 1) qsort(cp->hs + a, b - a, sizeof *cp->hs, cp_tag_cmp);
    memset(cnt, 0, sizeof cnt);
    for (i = a; i < b; i++) cnt[hix_idx(hix_tag(cp->hs[i].h), level)]++;
    f->in = in;
    f->level = level;
    f->npart = f->ipart = 0;
    for (c = 0; c < HIX_FAN;) {
        unsigned span = c ? c & (0u - c) : HIX_FAN, k; /* the largest aligned block at c */
        size_t sum;
        for (;;) {
            for (sum = 0, k = 0; k < span; k++) sum += cnt[c + k];
            if (span == 1 || sum <= CP_SHARED_LIM) break;
            span /= 2;
        }
        f->part[f->npart].c = (uint8_t)c;
        f->part[f->npart].span = (uint8_t)span;
        f->part[f->npart].a = pos;
        f->part[f->npart].b = pos + sum;
        f->npart++;
        pos += sum;
        c += span;
    }
}

/* Build the next part of the top frame: a leaf, or a node pushed. */
static int cp_bulk_part(kv_cp *cp)
{
    cp_bframe *f = &cp->bulk->fr[cp->bulk->depth - 1];
    unsigned c = f->part[f->ipart].c, span = f->part[f->ipart].span, d = 0;
    size_t a = f->part[f->ipart].a, b = f->part[f->ipart].b, i;
    f->ipart++;
    if (span == 1 && b - a > CP_BULK_LIM && f->level + 1 < HIX_LEVELS) {
        hix_inner *ni = (hix_inner *)hix_alloc(&cp->w, 0);
        if (!ni) return KVDB_ENOMEM;
        memset(ni->child, 0, sizeof ni->child); /* a tree freed half-built has no stray children */
        ni->h.level = (uint8_t)(f->level + 1);
        f->in->child[c] = (hix_ref)ni;
        cp_bulk_push(cp, ni, f->level + 1, a, b);
    } else {
        hix_node *l = hix_alloc(&cp->w, hix_cap_for((uint32_t)(b - a)));
        if (!l) return KVDB_ENOMEM;
        while ((unsigned)(HIX_FAN >> d) > span) d++;
        l->ldepth = (uint8_t)d;
        for (i = a; i < b; i++) hix_leaf_add(l, hix_tag(cp->hs[i].h), cp->hs[i].off);
        hix_set_range(f->in, c, d, hix_mkref(l));
    }
    return KVDB_OK;
}

/* Build the index from hs in slices of about budget/64 keys; 1 when done. */
static int cp_index(kvdb *db, kv_cp *cp, uint64_t budget)
{
    uint64_t n = budget / 64 ? budget / 64 : 1, done = 0;
    if (!cp->bulk) {
        hix_inner *root;
        if (cp->nhs > UINT32_MAX) return kv_err(KVDB_ETOOBIG, "%s: too many keys to compact", db->path);
        cp->bulk = (struct cp_bulk *)kv_malloc(&db->al, sizeof *cp->bulk);
        if (!cp->bulk) return kv_err(KVDB_ENOMEM, "out of memory");
        cp->bulk->depth = 0;
        root = (hix_inner *)hix_alloc(&cp->w, 0);
        if (!root) return KVDB_ENOMEM;
        memset(root->child, 0, sizeof root->child);
        if (cp->root) hix_free_tree(db, &cp->pool, cp->root, 0); /* the empty index of cp_start */
        cp->root = (hix_ref)root;
        cp_bulk_push(cp, root, 0, 0, cp->nhs);
        done += cp->nhs / 64; /* the counting pass */
    }
    while (cp->bulk->depth && done < n) {
        cp_bframe *f = &cp->bulk->fr[cp->bulk->depth - 1];
        int rc;
        if (f->ipart == f->npart) {
            cp->bulk->depth--;
            continue;
        }
        done += f->part[f->ipart].b - f->part[f->ipart].a + 1;
        rc = cp_bulk_part(cp);
        if (rc) return rc;
    }
    if (cp->bulk->depth) return 0;
    kv_free(&db->al, cp->bulk);
    cp->bulk = NULL;
    kv_free(&db->al, cp->hs);
    cp->hs = NULL;
    cp->nhs = cp->hs_cap = 0;
    return 1;
}

/* Copy up to budget bytes of S in key order.  1 when the copy is done. */
static int cp_copy(kvdb *db, kv_cp *cp, uint64_t budget)
{
    uint64_t done = 0;
    for (;;) {
        srt_ent e;
        const uint8_t *p = NULL;
        lg_rec rec;
        size_t from;
        uint64_t off, at;
        int k, rc;
        if (done >= budget) return 0;
        from = 0;
        k = cp->nruns ? srt_kway_next(&cp->cx, &cp->kw, 0, &e, &from) : 0;
        if (k < 0) return k;
        if (k == 0) break;
        if (e.off & SRT_DEL) continue;
        if (cp->srd.base) { /* key order is random in the old log: fetch ahead */
            const it_src *s = &cp->kw.src[from];
            if (s->cur + IT_PREFETCH < s->n) RD_PREFETCH(&cp->srd, SRT_AT(&s->e[s->cur + IT_PREFETCH]));
        }
        off = SRT_AT(&e);
        e = srt_proj(&cp->prj[from], &e); /* at the base run's prefix */
        rc = cp_read(db, cp, off, &p, &rec);
        if (rc) return rc;
        if (rec.type != LG_PUT)
            return kv_err(KVDB_ECORRUPT, "%s: sorted index points at a non-PUT record at %llu", db->path, (unsigned long long)off);
        if (cp->nhs == cp->hs_cap) {
            size_t ncap = cp->hs_cap ? cp->hs_cap * 2 : 4096;
            cp_hent *nh = ncap > ((size_t)-1) / sizeof *nh ? NULL
                        : (cp_hent *)kv_realloc(&db->al, cp->hs, ncap * sizeof *nh);
            if (!nh) return kv_err(KVDB_ENOMEM, "out of memory");
            cp->hs = nh;
            cp->hs_cap = ncap;
        }
        rc = cp_emit(db, cp, LG_PUT, p + LG_REC, rec.klen, p + LG_REC + rec.klen, rec.vlen, &at);
        if (rc) return rc;
        cp->hs[cp->nhs].h = kv_hash(db->seed, p + LG_REC, rec.klen);
        cp->hs[cp->nhs].off = at;
        cp->nhs++;
        cp->keys++;
        cp->live += rec.size;
        if (cp->base->n == cp->base->cap)
            return kv_err(KVDB_ECORRUPT, "%s: the sorted index holds more keys than the hash index", db->path);
        cp->base->own[cp->base->n].k = e.k;
        cp->base->own[cp->base->n].off = (e.off & ~(SRT_OFF | SRT_DEL)) | at;
        cp->base->n++;
        if (cp->nrec >= CP_BATCH) {
            rc = cp_commit(db, cp);
            if (rc) return rc;
        }
        done += rec.size;
    }
    {
        int rc = cp_commit(db, cp);
        if (!rc) rc = cp_wr_stop(db, cp);
        if (rc) return rc;
    }
    if (cp->keys != cp->snap->keys)
        return kv_err(KVDB_ECORRUPT, "%s: compaction copied %llu keys of %llu: the indexes disagree", db->path,
                      (unsigned long long)cp->keys, (unsigned long long)cp->snap->keys);
    cp->base_hi = cp->buf_off + cp->buf.len;
    cp->base->hi = cp->base_hi;
    /* S is no longer needed for key order */
    srt_release_all(db, cp->runs, cp->nruns);
    cp->runs = NULL;
    cp->nruns = 0;
    return 1;
}

/* Replay whole transactions of the old log from cp->from up to end (a
 * commit boundary) as seen by r: about budget bytes, never half a
 * transaction.  1 when at end, 0 if there is more, or an error. */
static int cp_catchup(kvdb *db, kv_cp *cp, const kv_rd *r, uint64_t end, uint64_t budget)
{
    kv_buf tmp = { NULL, 0, 0 };
    uint64_t start = cp->from, off = cp->from;
    int rc = KVDB_OK;
    while (off < end) {
        const uint8_t *p;
        lg_rec rec;
        uint8_t hdr[LG_REC];
        if (r->base) {
            p = r->base + off;
            if (lg_parse(p, off, end - off, &rec) != KVDB_OK) goto bad;
        } else {
            rc = db->vfs->read(db->vfs->ctx, r->file, off, hdr, end - off < LG_REC ? (size_t)(end - off) : LG_REC);
            if (rc) goto out;
            if (lg_parse(hdr, off, end - off, &rec) != KVDB_OK) goto bad;
            tmp.len = 0;
            rc = kv_buf_reserve(&db->al, &tmp, (size_t)rec.size);
            if (!rc) rc = db->vfs->read(db->vfs->ctx, r->file, off, tmp.p, (size_t)rec.size);
            if (rc) goto out;
            p = tmp.p;
        }
        if (kv_ld64(p) != lg_checksum(db->seed, off, p, rec.size)) goto bad;
        if (rec.type == LG_COMMIT) rc = cp_emit(db, cp, LG_COMMIT, NULL, 0, NULL, LG_COMMIT_LEN, NULL);
        else rc = cp_apply(db, cp, rec.type, p + LG_REC, rec.klen, p + LG_REC + rec.klen, rec.vlen);
        if (rc) goto out;
        off += rec.size;
        if (rec.type == LG_COMMIT) {
            cp->from = off;
            if (off - start >= budget) break;
        }
    }
    if (off >= end && cp->from != off) {
        rc = kv_err(KVDB_ECORRUPT, "%s: compaction: the transaction at %llu has no commit", db->path,
                    (unsigned long long)cp->from);
        goto out;
    }
    rc = cp->from >= end;
out:
    kv_free(&db->al, tmp.p);
    return rc;
bad:
    kv_free(&db->al, tmp.p);
    return kv_err(KVDB_ECORRUPT, "%s: record at offset %llu is damaged (found while compacting; nothing was changed)",
                  db->path, (unsigned long long)off);
}

/* Free nodes of whole old indexes once no version of their file is left
 * (invariant 3): move them to the list that ver_free_zombies drains. */
static void cp_reap_trees(kvdb *db)
{
    kv_deadtree **pp = &db->dtrees;
    while (*pp) {
        kv_deadtree *dt = *pp;
        if (db->oldest->gen > dt->gen) {
            hix_node *n = HIX_NODE(dt->root);
            *pp = dt->next;
            if (n->adj != 0xFF) {
                n->link = db->dtree_nodes;
                db->dtree_nodes = n;
            }
            kv_free(&db->al, dt);
        } else {
            pp = &dt->next;
        }
    }
}

/* Automatic compaction (kvdb_options.auto_compact), considered after each
 * commit: once dead bytes reach cp_pct percent of a file of at least cp_min
 * bytes.  With threads the checkpointer thread runs it in slices, and
 * writers wait only for the swap; without, each commit runs one slice of
 * KVDB_CP_AUTO_STEP bytes until it is done. */
static void cp_maybe(kvdb *db, uint64_t end)
{
    uint64_t size, dead;
    int go;
    (void)end;
    if (!db->cp_auto || db->rdonly) return;
    kv_lock(&db->mu_ver);
    size = db->cur->end;
    dead = size - LG_HDR - db->cur->live;
    kv_unlock(&db->mu_ver);
    go = size >= db->cp_min && size >= db->cp_retry_at && dead * 100 >= (uint64_t)db->cp_pct * size;
#ifndef KVDB_NO_THREADS
    if (!go) return;
    kv_lock(&db->mu_ck);
    if (!db->ck_stop && !db->cp_want && !db->cp_running) {
        if (!db->ck_started && pthread_create(&db->ck_thread, NULL, ck_main, db) == 0) db->ck_started = 1;
        if (db->ck_started) {
            db->cp_want = 1;
            kv_broadcast(&db->cv_ck);
        }
    }
    kv_unlock(&db->mu_ck);
#else
    if (go || db->cp) {
        int rc = cp_step(db, KVDB_CP_AUTO_STEP);
        if (rc < 0 && rc != KVDB_EBUSY) cp_failed(db);
    }
#endif
}

/* The swap (writer role held; invariants 1, 2).  rc < 0: abandoned. */
static int cp_swap(kvdb *db, kv_cp *cp)
{
    kv_ver *nv, *last;
    uint64_t old_end, new_end;
    kv_rd r;
    int rc, dirrc;
    unsigned i;

    /* the last commits, then the seal */
    rd_init(&r, db, db->cur);
    rc = cp_catchup(db, cp, &r, db->cur->end, UINT64_MAX);
    if (rc < 0) return rc;
    /* The seal vouches for everything before it: the file becomes the
     * database only by the rename below, after the sync that covers it. */
    cp->synced = cp->buf_off + cp->buf.len;
    rc = cp_emit(db, cp, LG_COMMIT, NULL, 0, NULL, LG_COMMIT_LEN, NULL); /* count 0: the seal */
    if (!rc) rc = cp_flush(db, cp);
    if (!rc) {
        uint64_t t = kv_now_ns();
        rc = db->vfs->sync(db->vfs->ctx, cp->log->f);
        cp->sync_ns += kv_now_ns() - t;
    }
    if (rc) return rc;
    new_end = cp->buf_off;
    cp->synced = new_end;
    nv = ver_alloc(db);
    if (!nv) return KVDB_ENOMEM;
    rc = kv_map_cover(db, cp->log, &cp->map, &cp->use_map, new_end);
    if (!rc) rc = db->vfs->rename(db->vfs->ctx, cp->tmp, db->path);
    if (rc) {
        ver_free(db, nv);
        return rc;
    }
    kv_free(&db->al, cp->tmp); /* the name is the database's now */
    cp->tmp = NULL;
    {
        uint64_t t = kv_now_ns();
        dirrc = db->vfs->sync_dir(db->vfs->ctx, db->path);
        cp->sync_ns += kv_now_ns() - t;
    }

    /* install: nothing below can fail */
    last = db->cur;
    old_end = db->end;
    kv_lock(&db->mu_sync);
    while (db->syncing) kv_wait(&db->cv_sync, &db->mu_sync); /* a sync of the old file in flight */
    db->file = cp->log->f;
    db->epoch++;
    db->written = db->synced = new_end;
    if (dirrc && !db->sticky) db->sticky = KVDB_EIO;
    kv_broadcast(&db->cv_sync); /* old-epoch waiters: their commits are in the new file */
    kv_unlock(&db->mu_sync);
    kv_log_release(db, db->log);
    db->log = cp->log;
    cp->log = NULL;
    kv_map_release(db, db->map);
    db->map = cp->map;
    cp->map = NULL;
    db->use_map = cp->use_map;
    db->end = new_end;
    kv_lock(&db->mu_ver);
    db->hz_log = new_end - LG_SEAL;
    db->hz_seal = 1;
    db->hz_sc = 0;
    kv_unlock(&db->mu_ver);
    kv_log_cap_set(db, new_end);
    db->seq = cp->seq;
    cp_pool_free(db, &cp->pool);
    db->pool.bytes += cp->pool.bytes;
    cp->pool.bytes = 0;

    nv->seq = cp->seq;
    nv->gen = ++db->gen;
    nv->end = new_end;
    nv->keys = cp->keys;
    nv->live = cp->live;
    nv->root = cp->root;
    cp->root = 0;
    nv->log = db->log;
    db->log->refs++;
    nv->map = db->map;
    if (nv->map) nv->map->refs++;
    nv->index_bytes = db->pool.bytes;
    cp->dt->root = last->root;
    cp->dt->gen = last->gen;
    cp->dt->next = db->dtrees;
    db->dtrees = cp->dt;
    cp->dt = NULL;

    kv_lock(&db->mu_srt);
    for (i = 0; i < db->nruns; i++) srt_release(db, db->runs[i]);
    db->nruns = 0;
    db->srt_file = db->file;
    if (cp->base->n && db->runs_cap) { /* else built from the log when needed */
        db->runs[0] = cp->base;
        db->nruns = 1;
        cp->base = NULL;
    }
    kv_unlock(&db->mu_srt);

    kv_lock(&db->mu_ver);
    db->cur->next = nv;
    db->cur = nv;
    db->pub = nv;
    db->cp_count++;
    db->cp_reclaimed = old_end > new_end ? old_end - new_end : 0;
    db->cp_ns = kv_now_ns() - cp->t0;
    kv_unlock(&db->mu_ver);
    kv_lock(&db->mu_ck);
    db->sc_end = 0; /* the sidecar is of the old file */
    kv_unlock(&db->mu_ck);
    ver_reclaim(db);
    ver_drain(db, 256);
    ver_free_zombies(db, 1024);
    return dirrc ? kv_err(KVDB_EIO, "%s: compacted, but syncing its directory failed; the handle refuses writes "
                          "until reopened", db->path) : KVDB_OK;
}

/* One slice of work; KVDB_DONE when a compaction has completed.  Caller
 * holds mu_cp. */
static int cp_step(kvdb *db, uint64_t budget)
{
    kv_cp *cp;
    int rc;
    if (!db->cp) {
        rc = cp_start(db);
        if (rc) return rc;
    }
    cp = db->cp;
    if (cp->phase == CP_COPY) {
        rc = cp_copy(db, cp, budget);
        if (rc == 1) rc = cp_hash_order(db, cp);
        else if (rc == 0) return KVDB_OK;
        if (rc < 0) goto fail;
        cp->phase = CP_INDEX;
        return KVDB_OK;
    }
    if (cp->phase == CP_INDEX) {
        rc = cp_index(db, cp, budget);
        if (rc < 0) goto fail;
        if (rc == 0) return KVDB_OK;
        cp->phase = CP_CATCHUP;
    }
    /* Catch up with the published state until it is less than CP_NEAR
     * ahead, so that the swap, which writers wait for, copies little.
     * Writers may outrun the slices: after CP_ROUNDS of them the swap
     * copies whatever is left, so a compaction always ends. */
    {
        kv_ver *v = ver_acquire(db);
        kv_rd r;
        uint64_t behind = v->end - cp->from, end = v->end;
        int more = behind > CP_NEAR && cp->rounds < CP_ROUNDS;
        rd_init(&r, db, v);
        /* S, pinned for the whole compaction, has the same file and, unless
         * the log was remapped since, the same mapping: read through those
         * and let v go at once.  A version held for the whole slice would
         * keep every index node the writer replaces meanwhile that it can
         * see -- thousands per slice -- for commits to sort out when it
         * goes. */
        if (v->map == cp->snap->map && v->log == cp->snap->log) {
            ver_release(db, v);
            v = NULL;
        }
        rc = more ? cp_catchup(db, cp, &r, end, budget) : 0;
        if (v) ver_release(db, v);
        if (rc < 0) goto fail;
        if (more) {
            cp->rounds++;
            return KVDB_OK;
        }
    }
    /* Close to the end.  Make the bulk durable first, outside the writer
     * role (and catch up again with what came meanwhile), so that the
     * swap syncs little. */
    if (cp->buf_off + cp->buf.len - cp->synced > CP_UNSYNCED) {
        rc = cp_flush(db, cp);
        if (!rc) rc = db->vfs->sync(db->vfs->ctx, cp->log->f);
        if (rc) goto fail;
        cp->synced = cp->buf_off;
        return KVDB_OK;
    }
    rc = kv_writer_take(db, 0, 0);
    if (rc) return rc; /* EBUSY: the caller holds the write transaction; try later */
    {
        uint64_t t = kv_now_ns();
        rc = kv_sticky(db);
        if (rc) rc = kv_sticky_err(db, rc);
        else rc = cp_swap(db, cp);
        t = kv_now_ns() - t;
        kv_writer_drop(db);
        if (rc >= 0) {
            kv_lock(&db->mu_ver);
            db->cp_pause_ns = t;
            db->cp_pause_sync_ns = cp->sync_ns;
            kv_unlock(&db->mu_ver);
        }
    }
    cp_abort(db); /* not swapped: removes the new file; swapped: frees what is left */
    return rc < 0 ? rc : KVDB_DONE;
fail:
    cp_abort(db);
    return rc;
}

