/* ======================================================================
 * SECTION: transactions and commit
 *
 * The write transaction is the one embedded in the handle (db->wtxn): there
 * is one writer at a time, so it needs no allocation.  Its records are
 * encoded into wbuf as they are written, with the key hash parked in the
 * checksum field until commit.
 *
 * Commit, in an order that keeps every failure clean:
 *   1. append the COMMIT record, allocate the version, extend the mapping;
 *   2. apply the records to a copy-on-write root and fill in checksums;
 *   3. write the buffer with one call;
 *   4. link the version, then publish it: at once in SYNC_OFF and in
 *      SYNC_NORMAL below sync_bytes, else only after a sync covering it
 *      (group commit: whoever finds no sync running syncs everything
 *      written so far, the others wait for it).
 * A failure in 1-3 frees the nodes of step 2 and truncates anything partly
 * written (if that fails too, the handle goes sticky); the transaction is
 * aborted and the file holds only whole transactions.
 * ====================================================================== */
static int kv_sticky(kvdb *db)
{
    int rc;
    kv_lock(&db->mu_sync);
    rc = db->sticky;
    kv_unlock(&db->mu_sync);
    return rc;
}

/* The error for a write refused because the handle went sticky. */
static int kv_sticky_err(const kvdb *db, int rc)
{
    return kv_err(rc, "%s: an earlier write or sync failed; the handle refuses writes until reopened", db->path);
}

static void kv_set_sticky(kvdb *db, int rc)
{
    kv_lock(&db->mu_sync);
    if (!db->sticky) db->sticky = rc;
    kv_unlock(&db->mu_sync);
}

/* The log bytes written so far, and the epoch they count in. */
static uint64_t kv_written(kvdb *db, uint64_t *epoch)
{
    uint64_t w;
    kv_lock(&db->mu_sync);
    w = db->written;
    *epoch = db->epoch;
    kv_unlock(&db->mu_sync);
    return w;
}

/* Wait until target bytes of the log of epoch are durable, syncing if
 * nobody is.  A compaction syncs the old file completely before it swaps
 * in the new one (and bumps the epoch), so a target of an older epoch has
 * been reached once the epoch has moved. */
static int kv_sync_to(kvdb *db, uint64_t target, uint64_t epoch)
{
    int rc = KVDB_OK;
    kv_lock(&db->mu_sync);
    for (;;) {
        if (db->sticky) {
            rc = kv_sticky_err(db, db->sticky);
            break;
        }
        if (db->synced >= target || db->epoch != epoch) break;
        if (!db->syncing) {
            uint64_t upto = db->written;
            kvdb_file *f = db->file; /* a swap waits for syncing == 0 */
            db->syncing = 1;
            kv_unlock(&db->mu_sync);
            rc = db->vfs->sync(db->vfs->ctx, f);
            kv_lock(&db->mu_sync);
            db->syncing = 0;
            db->nsyncs++;
            if (rc) {
                db->sticky = rc == KVDB_EFULL ? KVDB_EFULL : KVDB_EIO;
                kv_broadcast(&db->cv_sync);
                rc = db->sticky;
                break;
            }
            if (upto > db->synced) db->synced = upto;
            ver_publish_upto(db, db->synced);
            kv_broadcast(&db->cv_sync);
            continue;
        }
        kv_wait(&db->cv_sync, &db->mu_sync);
    }
    kv_unlock(&db->mu_sync);
    return rc;
}

/* Take the writer role: wait for the current writer (or KVDB_EBUSY with
 * nowait, or if this thread is the writer).  Write transactions (txn 1)
 * and a compaction's start and swap (txn 0) take it. */
static int kv_writer_take(kvdb *db, int nowait, int txn)
{
    kv_lock(&db->mu_write);
    if (db->writer_active && kv_same_thread(db->writer_thread, kv_self())) {
        kv_unlock(&db->mu_write);
        return kv_err(KVDB_EBUSY, "this thread already holds the write transaction");
    }
    while (db->writer_active) {
        if (nowait) {
            kv_unlock(&db->mu_write);
            return kv_err(KVDB_EBUSY, "another write transaction is active");
        }
        kv_wait(&db->cv_write, &db->mu_write);
    }
    db->writer_active = 1;
    db->writer_txn = txn;
    db->writer_thread = kv_self();
    kv_unlock(&db->mu_write);
    return KVDB_OK;
}

static void kv_writer_drop(kvdb *db)
{
    kv_lock(&db->mu_write);
    db->writer_active = 0;
    kv_broadcast(&db->cv_write);
    kv_unlock(&db->mu_write);
}

static void txn_release_writer(kvdb *db)
{
    kvdb_txn *t = &db->wtxn;
    t->seal = 0;
    t->wbuf.len = 0;
    if (t->wbuf.cap > ((size_t)16 << 20)) { /* don't hold on to a huge buffer */
        kv_free(&db->al, t->wbuf.p);
        t->wbuf.p = NULL;
        t->wbuf.cap = 0;
    }
    t->nrec = 0;
    ws_reset(db, &t->ws);
    kv_writer_drop(db);
}

static int txn_begin_write(kvdb *db, unsigned flags, kvdb_txn **out)
{
    kvdb_txn *t = &db->wtxn;
    int rc;
    if (db->rdonly) return kv_err(KVDB_EREADONLY, "%s: opened read-only", db->path);
    rc = kv_writer_take(db, (flags & KVDB_TXN_NOWAIT) != 0, 1);
    if (rc) return rc;
    rc = kv_sticky(db);
    if (rc) {
        txn_release_writer(db);
        return kv_sticky_err(db, rc);
    }
    t->db = db;
    t->write = 1;
    t->ver = db->cur;
    t->gen = ++db->gen;
    t->wbuf.len = 0;
    t->nrec = 0;
    t->iters = NULL;
    t->priv = NULL;
    *out = t;
    return KVDB_OK;
}

/* A group of records whose index paths are prefetched together. */
typedef struct tx_pf {
    uint64_t h[HIX_PF_MAX];
    hix_ref leaf[HIX_PF_MAX];
    unsigned n;
    uint64_t end;          /* buffer position after its last record */
} tx_pf;

static void tx_pf_fill(const kvdb_txn *t, uint64_t from, hix_ref root, tx_pf *g)
{
    g->n = 0;
    g->end = from;
    while (g->n < HIX_PF_MAX && g->end < t->wbuf.len) {
        const uint8_t *e = t->wbuf.p + g->end;
        g->h[g->n++] = kv_ld64(e); /* the hash, parked in the checksum slot */
        g->end += (uint64_t)LG_REC + kv_ld16(e + 10) + kv_ld32(e + 12);
    }
    hix_pf_path(root, g->h, g->n, g->leaf);
}

/* Commit step 2: apply t's records, in order, to the copy-on-write root
 * of nv (which starts as base, the root t began on) and fill in their
 * checksums.  Records go in groups of HIX_PF_MAX: while one group is
 * applied, the index paths of the next are already being fetched (from
 * base, which does not change), so a batch of random keys does not wait
 * for each cache miss in turn. */
static int txn_apply(kvdb_txn *t, hix_ref base, kv_ver *nv, hix_w *w)
{
    kvdb *db = t->db;
    const kv_rd *r = w->rd;
    uint64_t start = db->end, pos = 0;
    tx_pf pf[2];
    unsigned g = 0;
    int rc = KVDB_OK;
    tx_pf_fill(t, 0, base, &pf[0]);
    while (pos < t->wbuf.len) {
        hix_pf_recs(r, pf[g].h, pf[g].n, pf[g].leaf);
        if (pf[g].end < t->wbuf.len) tx_pf_fill(t, pf[g].end, base, &pf[g ^ 1]);
        for (; pos < pf[g].end; ) {
            uint8_t *q = t->wbuf.p + pos;
            uint32_t klen = kv_ld16(q + 10), vlen = kv_ld32(q + 12);
            uint64_t size = (uint64_t)LG_REC + klen + vlen, h = kv_ld64(q), old = 0, osize;
            if (q[8] == LG_PUT) {
                rc = hix_put(w, &nv->root, h, q + LG_REC, klen, start + pos, &old);
                if (rc) return rc;
                nv->live += size;
                if (!old) nv->keys++;
            } else {
                rc = hix_del(w, &nv->root, h, q + LG_REC, klen, &old);
                if (rc) return rc == KVDB_NOTFOUND ? kv_err(KVDB_ECORRUPT, "delete of a key the index does not have") : rc;
                nv->keys--;
            }
            if (old) {
                rc = rd_size(r, old, &osize);
                if (rc) return rc;
                nv->live -= osize;
            }
            kv_st64(q, lg_checksum(db->seed, start + pos, q, size));
            pos += size;
        }
        g ^= 1;
    }
    return KVDB_OK;
}

/* Log space reserved past end (see kvdb_vfs.reserve), so that a
 * fillsync-style run of small commits changes the file's size once per
 * reservation instead of once per commit.  A reservation is 1/8 of the
 * log, 64 KiB to 8 MiB.  A file layer's reserve may take long for the
 * commit that crosses the reserved end (an allocation, or a size change
 * that waits for the file system's journal): once the log is
 * KV_RSV_BG_MIN long, the thread extends the reservation by half a chunk
 * whenever the writer is less than half a chunk from its end (one request
 * in flight, rsv_log; the surplus stays under a chunk + 64 KiB, as kvdb.h
 * promises), and the writer reserves itself only if it overtakes the
 * thread.  Failure is
 * not an error: the appends grow the file as without it, and the handle
 * stops reserving.
 *
 * The thread's reserve runs at the same time as the writer's appends
 * below it.  A failed write cuts the file back to the commit's start; a
 * reserve in flight may finish before or after that cut, so its size is
 * taken either way: log_cap may then exceed the file's size (appends grow
 * the file; close cuts to end when log_cap > end), but it never falls
 * short of it once the reserve is collected, and close collects it -- so
 * close leaves no reserved zeros behind.  A compaction swap changes the
 * file: a reserve of the old one (rsv_log != db->log) is not taken. */
#define KV_RSV_BG_MIN ((uint64_t)(KVDB_CK_MIN_BYTES) / 8) /* 8 MiB (TSan tests: 8 KiB) */

static uint64_t kv_rsv_chunk(uint64_t end)
{
    uint64_t chunk = end / 8;
    if (chunk < ((uint64_t)1 << 16)) chunk = (uint64_t)1 << 16;
    if (chunk > ((uint64_t)1 << 23)) chunk = (uint64_t)1 << 23;
    return chunk;
}

/* The log's file is cap bytes: reserve again once end passes rsv_mark. */
static void kv_log_cap_set(kvdb *db, uint64_t cap)
{
    db->log_cap = cap;
    if (!db->vfs->reserve || db->no_reserve || db->inmem) db->rsv_mark = UINT64_MAX;
#ifndef KVDB_NO_THREADS
    else if (cap >= KV_RSV_BG_MIN) db->rsv_mark = cap - kv_rsv_chunk(cap) / 2;
#endif
    else db->rsv_mark = cap;
}

/* Take the thread's finished reserve, if it has finished (writer). */
static void kv_rsv_collect(kvdb *db)
{
#ifndef KVDB_NO_THREADS
    int done, rc;
    uint64_t cap;
    kv_lock(&db->mu_ck);
    done = db->rsv_done == db->rsv_seq;
    rc = db->rsv_done_rc;
    cap = db->rsv_done_cap;
    kv_unlock(&db->mu_ck);
    if (!done) return;
    if (db->rsv_log == db->log) {
        if (rc) {
            db->no_reserve = 1;
            kv_log_cap_set(db, db->log_cap); /* no rsv_mark: stop */
        } else if (cap > db->log_cap) {
            kv_log_cap_set(db, cap);
        }
    }
    kv_log_release(db, db->rsv_log);
    db->rsv_log = NULL;
#else
    (void)db;
#endif
}

/* Hand the reserve of cap bytes to the thread; 0 if there is none. */
static int kv_rsv_post(kvdb *db, uint64_t cap)
{
#ifndef KVDB_NO_THREADS
    kv_job j;
    j.kind = KV_JOB_RESERVE;
    j.f = db->log->f;
    j.base = NULL;
    j.len = cap;
    j.seq = db->rsv_seq + 1;
    if (!ck_enqueue(db, &j)) return 0;
    db->rsv_seq = j.seq;
    db->rsv_log = db->log; /* its file stays open until the reserve is done */
    db->log->refs++;
    return 1;
#else
    (void)db;
    (void)cap;
    return 0;
#endif
}

/* Writer, before appending up to end, once end > rsv_mark. */
static void kv_log_reserve(kvdb *db, uint64_t end)
{
    uint64_t cap;
    kv_errkeep msg;
    if (db->rsv_log) kv_rsv_collect(db);
    if (db->no_reserve || db->rsv_mark == UINT64_MAX) return;
    if (end <= db->log_cap) { /* half a chunk left: the thread reserves on */
        if (db->rsv_log) return;
        cap = (db->log_cap + kv_rsv_chunk(db->log_cap) / 2 + 0xFFFF) & ~(uint64_t)0xFFFF;
        if (!kv_rsv_post(db, cap)) db->rsv_mark = db->log_cap; /* no thread: at the end */
        return;
    }
    cap = (end + kv_rsv_chunk(end) + 0xFFFF) & ~(uint64_t)0xFFFF;
    kv_err_keep(&msg);
    if (db->vfs->reserve(db->vfs->ctx, db->file, cap) == KVDB_OK) {
        kv_log_cap_set(db, cap);
    } else {
        db->no_reserve = 1;
        kv_log_cap_set(db, db->log_cap);
    }
    kv_err_put(&msg);
}

static int txn_commit_write(kvdb_txn *t)
{
    kvdb *db = t->db;
    kv_ver *base = db->cur, *nv;
    uint64_t start = db->end, durable, end;
    int publish;
    uint64_t nretired = 0, epoch;
    hix_w w;
    kv_rd r;
    uint8_t *p;
    int rc;

    if (t->nrec == 0 && !t->seal) {
        txn_release_writer(db);
        return KVDB_OK;
    }
    rc = kv_sticky(db); /* a sync or write failed since kvdb_begin */
    if (rc) {
        rc = kv_sticky_err(db, rc);
        goto fail;
    }
    /* 1. the COMMIT record, the version, the mapping */
    rc = kv_buf_reserve(&db->al, &t->wbuf, LG_REC + LG_COMMIT_LEN);
    if (rc) goto fail;
    kv_lock(&db->mu_sync);
    durable = db->synced;
    kv_unlock(&db->mu_sync);
    p = t->wbuf.p + t->wbuf.len;
    lg_put_header(p, LG_COMMIT, 0, LG_COMMIT_LEN);
    kv_st64(p + LG_REC, db->seq + 1);
    kv_st64(p + LG_REC + 8, durable);
    kv_st32(p + LG_REC + 16, t->nrec);
    kv_st32(p + LG_REC + 20, 0);
    kv_st64(p, lg_checksum(db->seed, start + t->wbuf.len, p, LG_REC + LG_COMMIT_LEN));
    end = start + t->wbuf.len + LG_REC + LG_COMMIT_LEN;
    nv = ver_alloc(db);
    if (!nv) { rc = KVDB_ENOMEM; goto fail; }
    rc = kv_map_ensure(db, end);
    if (rc) { ver_free(db, nv); goto fail; }

    /* 2. index and checksums */
    nv->root = base->root;
    nv->keys = base->keys;
    nv->live = base->live;
    r.db = db;
    r.file = db->file;
    r.base = db->map ? db->map->base : NULL;
    r.end = start;
    r.wb = t->wbuf.p;
    r.wb_off = start;
    r.wb_len = t->wbuf.len;
    w.db = db;
    w.pool = &db->pool;
    w.gen = t->gen;
    w.retired = NULL;
    w.nretired = 0;
    w.rd = &r;
    rc = txn_apply(t, base->root, nv, &w);
    t->wbuf.len += LG_REC + LG_COMMIT_LEN;

    /* 3. write */
    if (!rc) {
        if (end > db->rsv_mark) kv_log_reserve(db, end);
        rc = db->vfs->write(db->vfs->ctx, db->file, start, t->wbuf.p, t->wbuf.len);
        if (rc) {
            int trc = db->vfs->truncate(db->vfs->ctx, db->file, start);
            if (trc) kv_set_sticky(db, KVDB_EIO);
            else if (rc != KVDB_EFULL) kv_set_sticky(db, rc);
            kv_log_cap_set(db, start);
        } else if (end > db->log_cap) {
            kv_log_cap_set(db, end);
        }
    }
    if (rc) {
        hix_free_tree(db, &db->pool, nv->root, t->gen);
        ver_free(db, nv);
        goto fail;
    }

    /* 4. link, publish */
    db->end = end;
    db->seq++;
    nv->seq = db->seq;
    nv->end = end;
    nv->map = db->map;
    if (nv->map) nv->map->refs++;
    nv->log = db->log;
    db->log->refs++;
    db->log->bytes = end;
    nv->gen = t->gen;
    if (w.retired) { /* base is the newest version that can see them */
        nretired = w.nretired;
        if (!base->retired) base->retired_tail = w.retired_tail;
        if (!base->nretired || w.retired_min < base->retired_min) base->retired_min = w.retired_min;
        base->nretired += nretired;
        w.retired_tail->link = base->retired;
        base->retired = w.retired;
    }
    /* Publish now, or only after a sync covering it: under SYNC_FULL, and
     * under SYNC_NORMAL when this commit crosses sync_bytes -- so that a
     * commit that returns an error is never visible in this process. */
    kv_lock(&db->mu_sync);
    db->written = end;
    epoch = db->epoch;
    if (db->sync_mode == KVDB_SYNC_OFF || t->seal) publish = 1; /* a seal has no data to wait for */
    else if (db->sync_mode == KVDB_SYNC_NORMAL) publish = end - db->synced < db->sync_bytes;
    else publish = 0;
    kv_unlock(&db->mu_sync);
    kv_lock(&db->mu_ver);
    db->cur->next = nv;
    db->cur = nv;
    if (publish) db->pub = nv;
    if (!t->seal) db->commits++;
    if (durable > db->hz_log) {
        db->hz_log = durable;
        db->hz_seal = t->seal;
    }
    kv_unlock(&db->mu_ver);
    ver_reclaim(db);
    ver_drain(db, 256 + 2 * nretired);
    ver_free_zombies(db, 1024 + 2 * nretired);
    kv_lock(&db->mu_ver);
    nv->index_bytes = db->pool.bytes; /* after reclamation: what is held now */
    kv_unlock(&db->mu_ver);
    txn_release_writer(db);

    if (!publish) rc = kv_sync_to(db, end, epoch);
    if (!rc) ck_maybe(db, end);
    return rc;
fail:
    txn_release_writer(db);
    return rc;
}

/* Seal the log (SEALS at the top): sync it, then append a seal, unless
 * the log's horizon already covers all but a trailing seal.  The seal is
 * handed to the file layer, not synced: lost to a power cut it takes only
 * its evidence with it (kvdb_close syncs it).  nowait: if a write
 * transaction is open, just sync (its COMMIT will record the synced
 * length).  Cost: one sync, and a 40-byte write when anything was committed
 * since the last seal. */
static int txn_seal(kvdb *db, int nowait)
{
    kvdb_txn *t;
    uint64_t w, ep;
    int rc;
    if (db->rdonly || db->inmem) return KVDB_OK;
    rc = txn_begin_write(db, nowait ? KVDB_TXN_NOWAIT : 0, &t);
    if (rc == KVDB_EBUSY && nowait) { /* its COMMIT will cover what is synced now */
        kv_clearerr();
        w = kv_written(db, &ep);
        return kv_sync_to(db, w, ep);
    }
    if (rc) return rc;
    w = kv_written(db, &ep);
    rc = kv_sync_to(db, w, ep);
    if (rc || db->end - db->hz_log <= LG_SEAL) {
        txn_release_writer(db);
        return rc;
    }
    t->seal = 1;
    return txn_commit_write(t);
}

static void *txn_arena_alloc(kvdb_txn *t, size_t n)
{
    kv_arena_blk *b = t->arena;
    kvdb *db = t->db;
    size_t need = (n + 15) & ~(size_t)15;
    if (!b || b->cap - b->used < need) {
        size_t cap = need > 65536 ? need : 65536;
        b = (kv_arena_blk *)kv_malloc(&db->al, sizeof *b + cap);
        if (!b) return NULL;
        b->cap = cap;
        b->used = 0;
        b->next = t->arena;
        t->arena = b;
    }
    b->used += need;
    return (uint8_t *)(b + 1) + b->used - need;
}

static void txn_arena_free(kvdb_txn *t)
{
    while (t->arena) {
        kv_arena_blk *b = t->arena;
        t->arena = b->next;
        kv_free(&t->db->al, b);
    }
}

