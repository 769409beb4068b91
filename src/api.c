/* ======================================================================
 * SECTION: public API
 * ====================================================================== */
static int kv_check_key(const void *key, size_t klen)
{
    if (!key || klen == 0) return kv_err(KVDB_EINVAL, "empty or NULL key");
    if (klen > KVDB_MAX_KEY) return kv_err(KVDB_ETOOBIG, "key of %zu bytes exceeds the limit of %u", klen, KVDB_MAX_KEY);
    return KVDB_OK;
}

void kvdb_options_init(kvdb_options *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->flags = 0;
    o->sync = KVDB_SYNC_FULL;
    o->auto_compact = 0;
    o->compact_dead_pct = 50;
    o->compact_min_bytes = (uint64_t)64 << 20;
}

/* Give a new database its header.  In memory: written in place.  On disk
 * the file at db->path exists (we created it empty, or found it empty) and
 * we hold its lock; the header is written to "<path>.new", synced, and
 * renamed over it, then the directory is synced and the new file opened and
 * locked in place of the old one.  A crash at any point leaves either the
 * empty file, which the next KVDB_CREATE open takes again, or a complete
 * header: never a part of one, so an open never recreates a file that holds
 * anything (a short or damaged header is KVDB_ECORRUPT or KVDB_ENOTDB). */
static int kv_write_header(kvdb *db)
{
    uint8_t h[LG_HDR];
    uint8_t rnd[24];
    kvdb_file *nf = NULL;
    char *tmp;
    uint64_t size;
    int rc;
    memset(h, 0, sizeof h);
    rc = db->vfs->random(db->vfs->ctx, rnd, sizeof rnd);
    if (rc) return rc;
    memcpy(h, LG_MAGIC, 8);
    kv_st32(h + 8, KVDB_FORMAT_VERSION);
    kv_st32(h + 12, LG_HDR);
    memcpy(h + 16, rnd, 24);
    kv_st64(h + 40, (uint64_t)time(NULL));
    kv_st64(h + 56, XXH3_64bits(h, 56));
    db->seed = kv_ld64(h + 16);
    memcpy(db->id, h + 24, 16);
    if (db->inmem) return db->vfs->write(db->vfs->ctx, db->file, 0, h, LG_HDR);
    tmp = sc_name(db, ".new");
    if (!tmp) return kv_err(KVDB_ENOMEM, "out of memory");
    db->vfs->remove(db->vfs->ctx, tmp); /* a crashed creation's */
    rc = db->vfs->open(db->vfs->ctx, tmp, KVDB_VFS_CREATE | KVDB_VFS_EXCL, &nf);
    if (!rc) {
        rc = db->vfs->write(db->vfs->ctx, nf, 0, h, LG_HDR);
        if (!rc) rc = db->vfs->sync(db->vfs->ctx, nf);
        db->vfs->close(db->vfs->ctx, nf);
        nf = NULL;
    }
    if (!rc) rc = db->vfs->rename(db->vfs->ctx, tmp, db->path);
    if (rc) db->vfs->remove(db->vfs->ctx, tmp);
    kv_free(&db->al, tmp);
    if (!rc) rc = db->vfs->sync_dir(db->vfs->ctx, db->path);
    if (rc) return rc;
    /* Our handle and lock are on the replaced file: take the new one. */
    rc = db->vfs->open(db->vfs->ctx, db->path, 0, &nf);
    if (!rc) rc = db->vfs->lock(db->vfs->ctx, nf, 1);
    if (!rc) rc = db->vfs->size(db->vfs->ctx, nf, &size);
    if (!rc && size != LG_HDR) rc = kv_err(KVDB_ELOCKED, "%s: changed by another process while being created", db->path);
    if (rc) {
        if (nf) db->vfs->close(db->vfs->ctx, nf);
        return rc;
    }
    db->vfs->close(db->vfs->ctx, db->file);
    db->file = nf;
    return KVDB_OK;
}

static int kv_read_header(kvdb *db, uint64_t size)
{
    uint8_t h[LG_HDR];
    int rc = db->vfs->read(db->vfs->ctx, db->file, 0, h, size < LG_HDR ? (size_t)size : LG_HDR);
    if (rc) return rc;
    if (memcmp(h, LG_MAGIC, size < 8 ? (size_t)size : 8) != 0)
        return kv_err(KVDB_ENOTDB, "%s: not a kvdb database (bad magic); nothing was changed", db->path);
    if (size < LG_HDR)
        return kv_err(KVDB_ECORRUPT, "%s: truncated header (%llu bytes); nothing was changed", db->path,
                      (unsigned long long)size);
    if (kv_ld64(h + 56) != XXH3_64bits(h, 56))
        return kv_err(KVDB_ECORRUPT, "%s: header checksum mismatch; nothing was changed", db->path);
    if (kv_ld32(h + 8) > KVDB_FORMAT_VERSION)
        return kv_err(KVDB_EVERSION, "%s: format version %u is newer than this library's %u; nothing was changed",
                      db->path, kv_ld32(h + 8), KVDB_FORMAT_VERSION);
    if (kv_ld32(h + 8) != KVDB_FORMAT_VERSION || kv_ld32(h + 12) != LG_HDR)
        return kv_err(KVDB_ECORRUPT, "%s: bad header fields; nothing was changed", db->path);
    db->seed = kv_ld64(h + 16);
    memcpy(db->id, h + 24, 16);
    return KVDB_OK;
}

static void kv_teardown(kvdb *db)
{
    kv_ver *v, *next;
    ck_stop(db); /* (again, after close: a no-op) releases below happen at once */
    ver_free_zombies(db, UINT64_MAX);
    while (db->dtrees) { /* old indexes: disjoint from everything below */
        kv_deadtree *dt = db->dtrees;
        db->dtrees = dt->next;
        hix_free_tree(db, &db->pool, dt->root, 0);
        kv_free(&db->al, dt);
    }
    /* Retired lists, waiting nodes and the newest version's tree are disjoint. */
    while (db->draining) {
        v = db->draining;
        db->draining = v->next;
        ver_free_retired(db, v->retired);
        kv_free(&db->al, v);
    }
    for (v = db->oldest; v; v = next) {
        next = v->next;
        ver_free_retired(db, v->retired);
        if (!next && v->root) hix_free_tree(db, &db->pool, v->root, 0);
        kv_map_release(db, v->map);
        kv_log_release(db, v->log);
        kv_free(&db->al, v);
    }
    db->oldest = db->pub = db->cur = NULL;
    while (db->free_ver) {
        v = db->free_ver;
        db->free_ver = v->next;
        kv_free(&db->al, v);
    }
    {
        unsigned i;
        for (i = 0; i < KV_NFREE; i++) {
            while (db->pool.free_nodes[i]) {
                hix_node *n = db->pool.free_nodes[i];
                db->pool.free_nodes[i] = n->link;
                kv_free(&db->al, (uint8_t *)n - n->adj);
            }
        }
    }
    while (db->nruns) srt_release(db, db->runs[--db->nruns]);
    kv_free(&db->al, db->runs);
    if (db->sc_base) { /* after every tree and run that points into it */
        if (db->sc_heap) kv_free(&db->al, (void *)(uintptr_t)db->sc_base);
        else db->vfs->unmap(db->vfs->ctx, db->sc_file, db->sc_base, db->sc_len);
        db->sc_base = NULL;
    }
    if (db->sc_file) db->vfs->close(db->vfs->ctx, db->sc_file);
    db->sc_file = NULL;
    kv_map_release(db, db->map);
    db->map = NULL;
    kv_free(&db->al, db->wtxn.wbuf.p);
    kv_free(&db->al, db->wtxn.ws.tab);
    if (db->log) kv_log_release(db, db->log); /* closes the file with the last reference */
    else if (db->file) db->vfs->close(db->vfs->ctx, db->file);
    db->log = NULL;
    db->file = NULL;
    kv_mutex_free(&db->mu_write);
    kv_cond_free(&db->cv_write);
    kv_mutex_free(&db->mu_ver);
    kv_mutex_free(&db->mu_sync);
    kv_cond_free(&db->cv_sync);
    kv_mutex_free(&db->mu_srt);
    kv_mutex_free(&db->mu_ckpt);
    kv_mutex_free(&db->mu_cp);
    kv_mutex_free(&db->mu_ck);
    kv_cond_free(&db->cv_ck);
    kv_free(&db->al, db->path);
    {
        kvdb_allocator al = db->al;
        kv_free(&al, db);
    }
}

static int kv_open_file(kvdb *db, int *created)
{
    unsigned vf = db->rdonly ? KVDB_VFS_RDONLY : 0;
    int rc;
    *created = 0;
    if (db->inmem) {
        *created = 1;
        return db->vfs->open(db->vfs->ctx, db->path, KVDB_VFS_CREATE, &db->file);
    }
    rc = db->vfs->open(db->vfs->ctx, db->path, vf, &db->file);
    if (rc == KVDB_NOTFOUND && (db->flags & KVDB_CREATE) && !db->rdonly) {
        rc = db->vfs->open(db->vfs->ctx, db->path, KVDB_VFS_CREATE | KVDB_VFS_EXCL, &db->file);
        if (rc == KVDB_OK) *created = 1;
        else if (rc == KVDB_EBUSY) rc = db->vfs->open(db->vfs->ctx, db->path, vf, &db->file); /* lost a race */
        else if (rc == KVDB_NOTFOUND) /* the directory is missing */
            return kv_err(KVDB_EIO, "%s: cannot create: no such directory", db->path);
    }
    if (rc == KVDB_NOTFOUND)
        return kv_err(KVDB_NOTFOUND, "%s: no such database (open without KVDB_CREATE)", db->path);
    return rc;
}

int kvdb_open(const char *path, const kvdb_options *o, kvdb **out)
{
    kvdb_options def;
    const kvdb_allocator *al;
    kvdb *db;
    kv_ver *v;
    uint64_t size = 0, good;
    int rc, created;
    hix_w w;

    kv_clearerr();
    if (!out) return kv_err(KVDB_EINVAL, "kvdb_open: out is NULL");
    *out = NULL;
    if (!o) {
        kvdb_options_init(&def);
        def.flags = KVDB_CREATE;
        o = &def;
    }
    if (o->flags & ~(KVDB_CREATE | KVDB_RDONLY | KVDB_INMEMORY)) return kv_err(KVDB_EINVAL, "kvdb_open: unknown flags");
    if (!(o->flags & KVDB_INMEMORY) && (!path || !*path)) return kv_err(KVDB_EINVAL, "kvdb_open: no path");
    if ((o->flags & KVDB_INMEMORY) && (o->flags & KVDB_RDONLY))
        return kv_err(KVDB_EINVAL, "kvdb_open: an in-memory database cannot be read-only");
    if (o->sync < KVDB_SYNC_FULL || o->sync > KVDB_SYNC_OFF) return kv_err(KVDB_EINVAL, "kvdb_open: bad sync mode");
    if (o->compact_dead_pct > 100) return kv_err(KVDB_EINVAL, "kvdb_open: compact_dead_pct above 100");
    al = o->alloc ? o->alloc : &kv_default_alloc;
    if (!al->malloc || !al->realloc || !al->free) return kv_err(KVDB_EINVAL, "kvdb_open: incomplete allocator");

    db = (kvdb *)kv_malloc(al, sizeof *db);
    if (!db) return kv_err(KVDB_ENOMEM, "out of memory");
    memset(db, 0, sizeof *db);
    db->al = *al;
    db->flags = o->flags;
    if (db->flags & KVDB_INMEMORY) db->flags |= KVDB_CREATE; /* nothing to open: always new */
    db->rdonly = (o->flags & KVDB_RDONLY) != 0;
    db->inmem = (o->flags & KVDB_INMEMORY) != 0;
    db->sync_mode = db->inmem ? KVDB_SYNC_OFF : o->sync;
    db->sync_bytes = o->sync_bytes ? o->sync_bytes : ((uint64_t)16 << 20);
    db->cp_auto = o->auto_compact != 0;
    db->cp_pct = o->compact_dead_pct ? o->compact_dead_pct : 50;
    db->cp_min = o->compact_min_bytes;
    if (db->inmem) {
        db->memvfs = kv_mem_vfs_proto;
        db->memvfs.ctx = &db->al;
        db->vfs = &db->memvfs;
    } else {
        db->vfs = o->vfs ? o->vfs : &kv_posix_vfs;
    }
    db->use_map = db->vfs->map != NULL && db->vfs->unmap != NULL;
    kv_mutex_init(&db->mu_write);
    kv_cond_init(&db->cv_write);
    kv_mutex_init(&db->mu_ver);
    kv_mutex_init(&db->mu_sync);
    kv_cond_init(&db->cv_sync);
    kv_mutex_init(&db->mu_srt);
    kv_mutex_init(&db->mu_ckpt);
    kv_mutex_init(&db->mu_cp);
    kv_mutex_init(&db->mu_ck);
    kv_cond_init(&db->cv_ck);
    {
        const char *name = db->inmem ? "(in-memory)" : path;
        size_t n = strlen(name);
        db->path = (char *)kv_malloc(&db->al, n + 1);
        if (!db->path) { kv_free(al, db); return kv_err(KVDB_ENOMEM, "out of memory"); }
        memcpy(db->path, name, n + 1);
    }

    rc = kv_open_file(db, &created);
    if (rc) goto fail;
    rc = db->vfs->lock(db->vfs->ctx, db->file, !db->rdonly);
    if (rc) goto fail;
    rc = db->vfs->size(db->vfs->ctx, db->file, &size);
    if (rc) goto fail;
    if (size == 0) {
        /* Empty: a new database if we may create one.  Creation writes the
         * header to "<path>.new" and renames it over (kv_write_header), so
         * a crash while creating leaves this empty file or a whole header,
         * never a part of one: a file holding anything is never recreated. */
        if (db->rdonly || !(db->flags & KVDB_CREATE)) {
            rc = kv_err(KVDB_ENOTDB, "%s: empty file, not a kvdb database (open it for writing with the create "
                        "flag to make it one); nothing was changed", db->path);
            goto fail;
        }
        rc = kv_write_header(db);
        if (rc) goto fail;
        size = LG_HDR;
    } else {
        rc = kv_read_header(db, size);
        if (rc) goto fail;
    }
    /* the file is ours: */
    if (!db->rdonly && !db->inmem) { /* a checkpoint or compaction cut short by a crash */
        static const char *const stray[] = { ".idx.tmp", ".compact" };
        unsigned i;
        for (i = 0; i < 2; i++) {
            char *tmp = sc_name(db, stray[i]);
            if (tmp) {
                db->vfs->remove(db->vfs->ctx, tmp);
                kv_free(&db->al, tmp);
            }
        }
        kv_clearerr();
    }

    db->log = kv_log_new(db, db->file);
    if (!db->log) { rc = KVDB_ENOMEM; goto fail; }
    db->srt_file = db->file;

    /* The first version: empty index, then the log replayed into it. */
    v = ver_alloc(db);
    if (!v) { rc = KVDB_ENOMEM; goto fail; }
    v->log = db->log;
    db->log->refs++;
    db->oldest = db->pub = db->cur = v;
    db->gen = 1;
    v->gen = 1;
    w.db = db;
    w.pool = &db->pool;
    w.gen = db->gen;
    w.retired = NULL;
    w.nretired = 0;
    w.rd = NULL;
    {
        hix_node *leaf = hix_alloc(&w, HIX_LEAF_MIN);
        hix_inner *root = leaf ? (hix_inner *)hix_alloc(&w, 0) : NULL;
        unsigned i;
        if (!root) {
            if (leaf) hix_free_node(db, &db->pool, leaf);
            rc = KVDB_ENOMEM;
            goto fail;
        }
        for (i = 0; i < HIX_FAN; i++) root->child[i] = hix_mkref(leaf);
        v->root = (hix_ref)root;
    }
    rc = kv_map_ensure(db, size);
    if (rc) goto fail;
    v->map = db->map;
    if (v->map) v->map->refs++;
    v->end = size;
    {
        uint64_t start;
        int sl;
        db->hz_log = LG_HDR; /* the header was synced when the file was made */
        sl = sc_load(db, v, size, &start);
        if (sl < 0) { rc = sl; goto fail; }
        db->sc_loaded = sl;
        if (db->hz_sc > size) {
            rc = kv_err(KVDB_ECORRUPT, "%s: the file is %llu bytes long, but its sidecar says %llu bytes of it were "
                        "synced: it was cut short, or is an older copy than its sidecar (a restored backup: "
                        "remove the .idx beside it); nothing was changed", db->path, (unsigned long long)size,
                        (unsigned long long)db->hz_sc);
            goto fail;
        }
        rc = rcv_scan(db, v, start, size, &good);
        if (rc) goto fail;
        db->replayed_bytes = good - start;
    }
    db->torn_bytes = size - good;
    if (db->torn_bytes && !db->rdonly) {
        rc = db->vfs->truncate(db->vfs->ctx, db->file, good);
        if (!rc) rc = db->vfs->sync(db->vfs->ctx, db->file);
        if (rc) goto fail;
    } else if (!db->rdonly && !db->inmem && !created) {
        /* What we read may still be only in the OS cache (a previous
         * SYNC_OFF writer, or a creation cut short before its directory
         * sync): make file and name durable before the durable field of a
         * new commit claims so. */
        rc = db->vfs->sync(db->vfs->ctx, db->file);
        if (!rc) rc = db->vfs->sync_dir(db->vfs->ctx, db->path);
        if (rc) goto fail;
    }
    db->end = good;
    kv_log_cap_set(db, db->torn_bytes && !db->rdonly ? good : size);
    db->written = db->synced = good;
    db->log->bytes = good;
    v->index_bytes = db->pool.bytes;
    *out = db;
    return KVDB_OK;
fail:
    {
        kv_errkeep msg;
        kv_err_keep(&msg);
        kv_teardown(db);
        kv_err_put(&msg);
    }
    if (!kv_errbuf[0]) kv_err(rc, "%s: %s", path ? path : "(in-memory)", kvdb_strerror(rc));
    return rc;
}

int kvdb_close(kvdb *db)
{
    int rc = KVDB_OK;
    kv_clearerr();
    if (!db) return KVDB_OK;
    kv_lock(&db->mu_write);
    while (db->writer_active && !db->writer_txn) /* a compaction (the background thread's): brief */
        kv_wait(&db->cv_write, &db->mu_write);
    if (db->writer_active) {
        kv_unlock(&db->mu_write);
        return kv_err(KVDB_EBUSY, "%s: close with the write transaction open", db->path);
    }
    kv_lock(&db->mu_ver);
    if (db->nreaders) {
        unsigned n = db->nreaders;
        kv_unlock(&db->mu_ver);
        kv_unlock(&db->mu_write);
        return kv_err(KVDB_EBUSY, "%s: close with %u read transaction(s) open", db->path, n);
    }
    kv_unlock(&db->mu_ver);
    kv_unlock(&db->mu_write);
    ck_stop(db);
    kv_lock(&db->mu_cp);
    cp_abort(db); /* a compaction not finished: the database stays as it is */
    kv_unlock(&db->mu_cp);
    /* In every sync mode: what was committed becomes durable and sealed,
     * so that the file at rest has no ambiguous tail (SEALS at the top) and
     * the sidecar may cover all of it (a sidecar never covers unsynced log). */
    if (!db->rdonly && !db->inmem) {
        if (db->log_cap > db->end && !kv_sticky(db)) { /* the reserved zeros (a failure: the next open cuts them) */
            kv_errkeep msg;
            kv_err_keep(&msg);
            if (db->vfs->truncate(db->vfs->ctx, db->file, db->end) == KVDB_OK) db->log_cap = db->end;
            kv_err_put(&msg);
        }
        db->rsv_mark = UINT64_MAX; /* no more reserving: the file ends with the seal */
        rc = txn_seal(db, 0);
        if (!rc) {
            uint64_t ep, w = kv_written(db, &ep);
            rc = kv_sync_to(db, w, ep); /* the seal too: at rest, nothing is ambiguous */
        }
    }
    /* Checkpoint the indexes so the next open need not replay the log.
     * The sidecar is a cache: if this fails, the next open replays more. */
    if (!rc && !db->rdonly && !db->inmem && !kv_sticky(db) && db->cur->end != db->sc_end) {
        kv_errkeep msg;
        kv_err_keep(&msg);
        (void)sc_write(db, db->cur, 1);
        kv_err_put(&msg);
    }
    kv_teardown(db);
    return rc;
}

int kvdb_sync(kvdb *db)
{
    uint64_t w, ep;
    kv_clearerr();
    if (!db) return kv_err(KVDB_EINVAL, "kvdb_sync: NULL handle");
    if (db->rdonly) return KVDB_OK;
    if (db->inmem) {
        w = kv_written(db, &ep);
        return kv_sync_to(db, w, ep);
    }
    return txn_seal(db, 1);
}

int kvdb_checkpoint(kvdb *db)
{
    kv_ver *v;
    int rc;
    kv_clearerr();
    if (!db) return kv_err(KVDB_EINVAL, "kvdb_checkpoint: NULL handle");
    if (db->rdonly) return kv_err(KVDB_EREADONLY, "%s: opened read-only", db->path);
    if (db->inmem) return KVDB_OK;
    rc = txn_seal(db, 1);
    if (rc) return rc;
    v = ver_acquire(db); /* the published state: durable under SYNC_FULL */
    kv_lock(&db->mu_ckpt);
    rc = sc_write(db, v, 1);
    kv_unlock(&db->mu_ckpt);
    ver_release(db, v);
    return rc;
}

/* A thread holding the write transaction would wait for itself. */
static int kv_is_writer(kvdb *db)
{
    int me;
    kv_lock(&db->mu_write);
    me = db->writer_active && kv_same_thread(db->writer_thread, kv_self());
    kv_unlock(&db->mu_write);
    return me;
}

static int cp_check(kvdb *db, const char *fn)
{
    int rc;
    if (!db) return kv_err(KVDB_EINVAL, "%s: NULL handle", fn);
    if (db->rdonly) return kv_err(KVDB_EREADONLY, "%s: opened read-only", db->path);
    if (kv_is_writer(db)) return kv_err(KVDB_EBUSY, "%s: this thread holds the write transaction", fn);
    rc = kv_sticky(db);
    if (rc) { /* the handle takes no more writes: a compaction in progress can never finish */
        kv_lock(&db->mu_cp);
        cp_abort(db);
        kv_unlock(&db->mu_cp);
        return kv_sticky_err(db, rc);
    }
    return KVDB_OK;
}

int kvdb_compact_step(kvdb *db, size_t max_bytes)
{
    int rc;
    kv_clearerr();
    rc = cp_check(db, "kvdb_compact_step");
    if (rc) return rc;
    kv_lock(&db->mu_cp);
    rc = cp_step(db, max_bytes ? (uint64_t)max_bytes : 1);
    kv_unlock(&db->mu_cp);
    return rc;
}

int kvdb_compact(kvdb *db)
{
    kv_ver *v;
    int rc;
    kv_clearerr();
    rc = cp_check(db, "kvdb_compact");
    if (rc) return rc;
    kv_lock(&db->mu_cp);
    rc = db->cp ? KVDB_OK : cp_start(db);
    if (!rc) {
        db->cp->async = 1; /* the copy may write on a thread of its own */
        do rc = cp_step(db, (uint64_t)64 << 20);
        while (rc == KVDB_OK);
    }
    kv_unlock(&db->mu_cp);
    if (rc != KVDB_DONE) return rc;
    if (db->inmem) return KVDB_OK;
    /* the sidecar for the new file, so the next open need not replay it
     * (a cache: if this fails the compaction still stands) */
    v = ver_acquire(db);
    kv_lock(&db->mu_ckpt);
    {
        kv_errkeep msg;
        kv_err_keep(&msg);
        (void)sc_write(db, v, 1);
        kv_err_put(&msg);
    }
    kv_unlock(&db->mu_ckpt);
    ver_release(db, v);
    return KVDB_OK;
}

int kvdb_begin(kvdb *db, unsigned flags, kvdb_txn **out)
{
    kvdb_txn *t;
    kv_clearerr();
    if (!out) return kv_err(KVDB_EINVAL, "kvdb_begin: out is NULL");
    *out = NULL;
    if (!db) return kv_err(KVDB_EINVAL, "kvdb_begin: NULL handle");
    if (flags & ~(KVDB_TXN_RDONLY | KVDB_TXN_NOWAIT)) return kv_err(KVDB_EINVAL, "kvdb_begin: unknown flags");
    if (!(flags & KVDB_TXN_RDONLY)) return txn_begin_write(db, flags, out);
    t = (kvdb_txn *)kv_malloc(&db->al, sizeof *t);
    if (!t) return kv_err(KVDB_ENOMEM, "out of memory");
    memset(t, 0, sizeof *t);
    t->db = db;
    kv_lock(&db->mu_ver);
    t->ver = db->pub;
    t->ver->refs++;
    db->nreaders++;
    kv_unlock(&db->mu_ver);
    *out = t;
    return KVDB_OK;
}

static void txn_end_read(kvdb_txn *t)
{
    kvdb *db = t->db;
    txn_close_iters(t);
    kv_lock(&db->mu_ver);
    t->ver->refs--;
    db->nreaders--;
    kv_unlock(&db->mu_ver);
    txn_arena_free(t);
    kv_free(&db->al, t);
}

void kvdb_abort(kvdb_txn *t)
{
    if (!t) return;
    if (t->write) {
        txn_close_iters(t);
        txn_arena_free(t);
        txn_release_writer(t->db);
    } else {
        txn_end_read(t);
    }
}

int kvdb_commit(kvdb_txn *t)
{
    kv_clearerr();
    if (!t) return kv_err(KVDB_EINVAL, "kvdb_commit: NULL transaction");
    if (!t->write) {
        txn_end_read(t);
        return KVDB_OK;
    }
    txn_close_iters(t);
    txn_arena_free(t);
    return txn_commit_write(t);
}

/* Look key up in t's base version; value into *val (arena in pread mode). */
static int txn_get_base(kvdb_txn *t, uint64_t h, const void *key, size_t klen, const void **val, size_t *vlen)
{
    kv_rd r;
    kv_hit hit;
    int rc;
    rd_init(&r, t->db, t->ver);
    rc = hix_get(&r, t->ver->root, h, key, klen, &hit);
    if (rc <= 0) return rc ? rc : KVDB_NOTFOUND;
    if (!hit.val) {
        uint8_t *p = (uint8_t *)txn_arena_alloc(t, hit.vlen);
        if (!p) return kv_err(KVDB_ENOMEM, "out of memory reading a value");
        if (hit.vlen) {
            rc = t->db->vfs->read(t->db->vfs->ctx, r.file, hit.voff, p, hit.vlen);
            if (rc) return rc;
        }
        hit.val = p;
    }
    *val = hit.val;
    *vlen = hit.vlen;
    return KVDB_OK;
}

int kvdb_txn_get(kvdb_txn *t, const void *key, size_t klen, const void **val, size_t *vlen)
{
    uint64_t h;
    int rc;
    kv_clearerr();
    if (!t || !val || !vlen) return kv_err(KVDB_EINVAL, "kvdb_txn_get: NULL argument");
    rc = kv_check_key(key, klen);
    if (rc) return rc;
    h = kv_hash(t->db->seed, key, klen);
    if (t->write) {
        ws_ent *e = ws_find(&t->ws, t->wbuf.p, h, key, klen);
        if (e) {
            const uint8_t *q = t->wbuf.p + e->pos - 1;
            if (q[8] == LG_DEL) return KVDB_NOTFOUND;
            *val = q + LG_REC + klen;
            *vlen = kv_ld32(q + 12);
            return KVDB_OK;
        }
    }
    return txn_get_base(t, h, key, klen, val, vlen);
}

/* Append one PUT or DEL record to the write transaction. */
static int txn_append(kvdb_txn *t, uint8_t type, uint64_t h, ws_ent *e, const void *key, size_t klen,
                      const void *val, size_t vlen)
{
    size_t size = LG_REC + klen + vlen, pos = t->wbuf.len;
    uint8_t *q;
    int rc = kv_buf_reserve(&t->db->al, &t->wbuf, size);
    if (rc) return rc;
    q = t->wbuf.p + pos;
    kv_st64(q, h); /* the checksum slot holds the hash until commit */
    lg_put_header(q, type, (uint32_t)klen, (uint32_t)vlen);
    memcpy(q + LG_REC, key, klen);
    if (vlen) memcpy(q + LG_REC + klen, val, vlen);
    if (e) {
        e->pos = pos + 1;
    } else {
        rc = ws_add(t->db, &t->ws, h, pos);
        if (rc) return rc;
    }
    t->wbuf.len += size;
    t->nrec++;
    return KVDB_OK;
}

/* (A handle that goes sticky while a write transaction is open refuses
 * its commit; kvdb_begin refuses new ones.  The puts in between are only
 * buffered, so they need not take mu_sync to look.) */
static int txn_write_check(kvdb_txn *t)
{
    if (!t) return kv_err(KVDB_EINVAL, "NULL transaction");
    if (!t->write) return kv_err(KVDB_EREADONLY, "write in a read-only transaction");
    if (t->nrec == UINT32_MAX) return kv_err(KVDB_ETOOBIG, "transaction has too many records");
    return KVDB_OK;
}

int kvdb_txn_put(kvdb_txn *t, const void *key, size_t klen, const void *val, size_t vlen)
{
    uint64_t h;
    int rc;
    kv_clearerr();
    rc = txn_write_check(t);
    if (rc) return rc;
    rc = kv_check_key(key, klen);
    if (rc) return rc;
    if (vlen > KVDB_MAX_VALUE) return kv_err(KVDB_ETOOBIG, "value of %zu bytes exceeds the limit of %u", vlen, KVDB_MAX_VALUE);
    if (!val && vlen) return kv_err(KVDB_EINVAL, "NULL value with nonzero length");
    h = kv_hash(t->db->seed, key, klen);
    return txn_append(t, LG_PUT, h, ws_find(&t->ws, t->wbuf.p, h, key, klen), key, klen, val, vlen);
}

int kvdb_txn_del(kvdb_txn *t, const void *key, size_t klen)
{
    uint64_t h;
    ws_ent *e;
    int rc;
    kv_clearerr();
    rc = txn_write_check(t);
    if (rc) return rc;
    rc = kv_check_key(key, klen);
    if (rc) return rc;
    h = kv_hash(t->db->seed, key, klen);
    e = ws_find(&t->ws, t->wbuf.p, h, key, klen);
    if (e) {
        if (t->wbuf.p[e->pos - 1 + 8] == LG_DEL) return KVDB_NOTFOUND;
    } else {
        kv_rd r;
        rd_init(&r, t->db, t->ver);
        rc = hix_get(&r, t->ver->root, h, key, klen, NULL);
        if (rc <= 0) return rc ? rc : KVDB_NOTFOUND;
    }
    return txn_append(t, LG_DEL, h, e, key, klen, NULL, 0);
}

int kvdb_put(kvdb *db, const void *key, size_t klen, const void *val, size_t vlen)
{
    kvdb_txn *t = NULL;
    int rc;
    kv_clearerr();
    if (!db) return kv_err(KVDB_EINVAL, "kvdb_put: NULL handle");
    rc = kv_check_key(key, klen);
    if (rc) return rc;
    if (vlen > KVDB_MAX_VALUE) return kv_err(KVDB_ETOOBIG, "value of %zu bytes exceeds the limit of %u", vlen, KVDB_MAX_VALUE);
    if (!val && vlen) return kv_err(KVDB_EINVAL, "NULL value with nonzero length");
    rc = txn_begin_write(db, 0, &t);
    if (rc) return rc;
    rc = kvdb_txn_put(t, key, klen, val, vlen);
    if (rc) {
        kvdb_abort(t);
        return rc;
    }
    return kvdb_commit(t);
}

int kvdb_del(kvdb *db, const void *key, size_t klen)
{
    kvdb_txn *t = NULL;
    int rc;
    kv_clearerr();
    if (!db) return kv_err(KVDB_EINVAL, "kvdb_del: NULL handle");
    rc = kv_check_key(key, klen);
    if (rc) return rc;
    rc = txn_begin_write(db, 0, &t);
    if (rc) return rc;
    rc = kvdb_txn_del(t, key, klen);
    if (rc) {
        kvdb_abort(t);
        return rc;
    }
    return kvdb_commit(t);
}

int kvdb_get(kvdb *db, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen)
{
    kv_ver *v;
    kv_rd r;
    kv_hit hit;
    int rc;
    if (!db) return kv_err(KVDB_EINVAL, "kvdb_get: NULL handle");
    rc = kv_check_key(key, klen);
    if (rc) return rc;
    if (!buf && cap) return kv_err(KVDB_EINVAL, "kvdb_get: NULL buffer with nonzero capacity");
    v = ver_acquire(db);
    rd_init(&r, db, v);
    rc = hix_get(&r, v->root, kv_hash(db->seed, key, klen), key, klen, &hit);
    if (rc > 0) {
        size_t n = hit.vlen < cap ? hit.vlen : cap;
        rc = KVDB_OK;
        if (n) {
            if (hit.val) memcpy(buf, hit.val, n);
            else rc = db->vfs->read(db->vfs->ctx, r.file, hit.voff, buf, n);
        }
        if (vlen) *vlen = hit.vlen;
    } else if (rc == 0) {
        rc = KVDB_NOTFOUND;
    }
    ver_release(db, v);
    return rc;
}

int kvdb_stat(kvdb *db, struct kvdb_stat *st)
{
    kv_ver *v;
    kv_clearerr();
    if (!db || !st) return kv_err(KVDB_EINVAL, "kvdb_stat: NULL argument");
    memset(st, 0, sizeof *st);
    kv_lock(&db->mu_ver);
    v = db->pub; /* what readers see: committed and, under SYNC_FULL, durable */
    st->keys = v->keys;
    st->file_bytes = v->end;
    st->live_bytes = v->live;
    st->dead_bytes = v->end - LG_HDR - v->live;
    st->index_bytes = v->index_bytes;
    st->commits = db->commits;
    st->horizon = db->hz_log;
    st->horizon_from = db->hz_log <= LG_HDR ? "none" : db->hz_seal ? "seal" : "commit";
    if (db->hz_sc > st->horizon) {
        st->horizon = db->hz_sc;
        st->horizon_from = "sidecar";
    }
    kv_unlock(&db->mu_ver);
    kv_lock(&db->mu_sync);
    st->syncs = db->nsyncs;
    kv_unlock(&db->mu_sync);
    kv_lock(&db->mu_srt);
    st->sorted_bytes = db->srt_bytes;
    st->sorted_runs = db->nruns;
    kv_unlock(&db->mu_srt);
    st->torn_bytes = db->torn_bytes;
    st->recovered_txns = db->recovered_txns;
    st->sidecar_loaded = (unsigned)db->sc_loaded;
    st->sidecar = db->sc_why ? db->sc_why : db->inmem ? "none (in-memory)" : "not used";
    st->replayed_bytes = db->replayed_bytes;
    st->format_version = KVDB_FORMAT_VERSION;
    st->sync_mode = db->sync_mode;
    st->flags = db->flags;
    kv_lock(&db->mu_ver); /* not mu_cp: a compaction step may hold it for long */
    st->compactions = db->cp_count;
    st->compact_ns = db->cp_ns;
    st->compact_reclaimed = db->cp_reclaimed;
    st->compact_pause_ns = db->cp_pause_ns;
    st->compact_pause_sync_ns = db->cp_pause_sync_ns;
    st->compacting = (unsigned)db->cp_active;
    kv_unlock(&db->mu_ver);
    st->db_id[0] = kv_ld64(db->id);
    st->db_id[1] = kv_ld64(db->id + 8);
    return KVDB_OK;
}
