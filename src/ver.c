/* ======================================================================
 * SECTION: mappings and versions
 *
 * Invariants:
 *   1. db->oldest .. db->cur is the list of versions, oldest first, in
 *      increasing gen; db->pub (what new readers get) is on it, at or before
 *      db->cur.  Versions after pub wait for a sync to be published.
 *   2. A node is visible in the versions whose gen lies between its own gen
 *      (birth) and the gen of the last version before the one that replaced
 *      it.  A replaced ("retired") node hangs on the list of the newest
 *      version that can see it.
 *   3. A version before pub with no readers is dead.  Its retired nodes
 *      move to the nearest older surviving version if that one can see them
 *      (its gen >= the node's gen), and are freed otherwise -- so garbage
 *      made while a snapshot is held is freed soon unless the snapshot
 *      itself can see it, and each node moves at most once per surviving
 *      version.  When all or none of them are seen, the list moves at once;
 *      otherwise the dead version waits on db->draining, off the version
 *      list, and commits sort its nodes a bounded slice at a time (256 plus
 *      twice what they retired themselves), each node against the newest
 *      survivor older than the dead version at that moment -- survivors
 *      only go away, so a late sort frees no node too early.  (Sorting
 *      all at once would land the whole cost, proportional to the nodes,
 *      on the one commit after the snapshot's end.)
 *   4. Only the writer (or open/close, single-threaded) allocates or frees
 *      index nodes, versions and maps, and only it touches retired lists,
 *      so those need no lock; readers only count references under mu_ver.
 *   5. Freeing is paced: nodes that become unreachable wait on a list and
 *      each commit frees a bounded slice of it (1024 plus twice what it
 *      retired itself), so the end of a long snapshot -- whose garbage can
 *      be most of the index -- never lands on a single commit.
 * Locks: see the lock order above struct kvdb.
 * ====================================================================== */
static kv_log *kv_log_new(kvdb *db, kvdb_file *f)
{
    kv_log *lg = (kv_log *)kv_malloc(&db->al, sizeof *lg);
    if (!lg) {
        kv_err(KVDB_ENOMEM, "out of memory");
        return NULL;
    }
    lg->f = f;
    lg->refs = 1;
    lg->bytes = 0; /* set as it is written; decides who closes it (ck_job) */
    return lg;
}

static void kv_job_run(kvdb *db, const kv_job *j)
{
    if (j->kind == KV_JOB_UNMAP) {
        db->vfs->unmap(db->vfs->ctx, j->f, j->base, j->len);
    } else if (j->kind == KV_JOB_CLOSE) {
        db->vfs->close(db->vfs->ctx, j->f);
    } else if (j->kind == KV_JOB_FREE) {
        kv_free(&db->al, (void *)(uintptr_t)j->base);
    } else { /* only ever on the thread (kv_log_reserve) */
        int rc = db->vfs->reserve(db->vfs->ctx, j->f, j->len);
        kv_lock(&db->mu_ck);
        db->rsv_done = j->seq;
        db->rsv_done_cap = j->len;
        db->rsv_done_rc = rc;
        kv_unlock(&db->mu_ck);
    }
}

static void ck_job(kvdb *db, int big, int kind, kvdb_file *f, const void *base, uint64_t len);
#ifndef KVDB_NO_THREADS
static void *ck_main(void *arg);

/* Queue a copy of *j0 for the thread, starting it if need be: 0 if that
 * cannot be (out of memory, no thread, or close has stopped it). */
static int ck_enqueue(kvdb *db, const kv_job *j0)
{
    kv_job *j = (kv_job *)kv_malloc(&db->al, sizeof *j);
    if (!j) return 0;
    kv_lock(&db->mu_ck);
    if (!db->ck_stop && !db->ck_started && pthread_create(&db->ck_thread, NULL, ck_main, db) == 0)
        db->ck_started = 1;
    if (db->ck_stop || !db->ck_started) {
        kv_unlock(&db->mu_ck);
        kv_free(&db->al, j);
        return 0;
    }
    *j = *j0;
    j->next = NULL;
    if (!db->jobs_tail) db->jobs_tail = &db->jobs;
    *db->jobs_tail = j;
    db->jobs_tail = &j->next;
    kv_broadcast(&db->cv_ck);
    kv_unlock(&db->mu_ck);
    return 1;
}
#endif

static void kv_log_release(kvdb *db, kv_log *lg)
{
    if (lg && --lg->refs == 0) {
        ck_job(db, lg->bytes >= KVDB_CK_MIN_BYTES, KV_JOB_CLOSE, lg->f, NULL, 0);
        kv_free(&db->al, lg);
    }
}

static void kv_map_release(kvdb *db, kv_map *m)
{
    if (m && --m->refs == 0) {
        ck_job(db, m->log->bytes >= KVDB_CK_MIN_BYTES, KV_JOB_UNMAP, m->log->f, m->base, m->len);
        kv_log_release(db, m->log);
        kv_free(&db->al, m);
    }
}

/* Mapping size for need bytes: on 64-bit hosts 1 TiB of address space
 * (it costs no memory), so a growing log is never remapped and no commit
 * pays for unmapping; elsewhere doubling from 1 MiB.  Under
 * ThreadSanitizer doubling from 4 GiB: TSan aborts the process when the
 * kernel places a mapping outside the ranges it shadows, and a 512 GiB one
 * (kv_map_cover halving a 1 TiB one that failed) landed there once in the
 * threads test ("mmap at bad address"). */
#if defined(__SANITIZE_THREAD__)
#define KV_MAP_FIRST ((uint64_t)1 << 32)
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KV_MAP_FIRST ((uint64_t)1 << 32)
#endif
#endif
#ifndef KV_MAP_FIRST
#define KV_MAP_FIRST (sizeof(size_t) >= 8 ? ((uint64_t)1 << 40) : ((uint64_t)1 << 20))
#endif

static uint64_t kv_map_cap(const kvdb *db, uint64_t need)
{
    uint64_t cap = db->inmem ? ((uint64_t)1 << 16) : KV_MAP_FIRST;
    while (cap < need) cap *= 2;
    return cap;
}

/* Make *mp, a mapping of lg, cover need bytes (the writer before it
 * writes, or the compactor for its new file).  The mapping is sized ahead
 * (doubling), so remaps are rare; old mappings live on in the versions
 * that use them.  If a file cannot be mapped, *use_map goes to 0 and its
 * readers go through the file layer. */
static int kv_map_cover(kvdb *db, kv_log *lg, kv_map **mp, int *use_map, uint64_t need)
{
    const void *p;
    kv_map *m;
    uint64_t cap;
    int rc;
    if (!*use_map || (*mp && (*mp)->len >= need)) return KVDB_OK;
    cap = kv_map_cap(db, need);
    rc = db->vfs->map(db->vfs->ctx, lg->f, cap, &p);
    while (rc && !db->inmem && cap / 2 >= need && cap / 2 >= ((uint64_t)1 << 20)) {
        cap /= 2; /* address space may be limited (32-bit, ulimit -v, sanitizers) */
        rc = db->vfs->map(db->vfs->ctx, lg->f, cap, &p);
    }
    if (rc) {
        if (db->inmem) return rc;
        *use_map = 0; /* keep going through pread */
        kv_map_release(db, *mp);
        *mp = NULL;
        return KVDB_OK;
    }
    m = (kv_map *)kv_malloc(&db->al, sizeof *m);
    if (!m) {
        db->vfs->unmap(db->vfs->ctx, lg->f, p, cap);
        return kv_err(KVDB_ENOMEM, "out of memory");
    }
    m->base = (const uint8_t *)p;
    m->len = cap;
    m->refs = 1;
    m->log = lg;
    lg->refs++;
    kv_map_release(db, *mp);
    *mp = m;
    return KVDB_OK;
}

static int kv_map_ensure(kvdb *db, uint64_t need)
{
    return kv_map_cover(db, db->log, &db->map, &db->use_map, need);
}

static void cp_reap_trees(kvdb *db);

static kv_ver *ver_alloc(kvdb *db)
{
    kv_ver *v = db->free_ver;
    if (v) db->free_ver = v->next;
    else if (!(v = (kv_ver *)kv_malloc(&db->al, sizeof *v))) {
        kv_err(KVDB_ENOMEM, "out of memory");
        return NULL;
    }
    memset(v, 0, sizeof *v);
    return v;
}

static void ver_free(kvdb *db, kv_ver *v)
{
    v->next = db->free_ver;
    db->free_ver = v;
}

static void ver_free_retired(kvdb *db, hix_node *n)
{
    while (n) {
        hix_node *next = n->link;
        hix_free_node(db, &db->pool, n);
        n = next;
    }
}

/* All of v's retired nodes to the zombies, at once: nobody sees them. */
static void ver_zombify(kvdb *db, kv_ver *v)
{
    v->retired_tail->link = db->zombies;
    db->zombies = v->retired;
    db->nzombies += v->nretired;
    v->retired = NULL;
}

/* Free dead versions (writer only; see invariant 3). */
static void ver_reclaim(kvdb *db)
{
    kv_ver *dead = NULL, *v, *next, *alive = NULL;
    kv_lock(&db->mu_ver);
    for (v = db->oldest; v && v != db->pub; v = next) {
        next = v->next;
        if (v->refs) {
            alive = v;
            continue;
        }
        if (alive) alive->next = next;
        else db->oldest = next;
        v->next = dead;
        v->heir = alive;
        dead = v;
    }
    kv_unlock(&db->mu_ver);
    while (dead) {
        kv_ver *heir = dead->heir;
        v = dead;
        dead = dead->next;
        if (v->retired && (!heir || heir->gen < v->retired_min)) ver_zombify(db, v); /* the heir sees none */
        kv_map_release(db, v->map);
        kv_log_release(db, v->log);
        if (v->retired) { /* the heir may see some: sorted a slice at a time (ver_drain) */
            v->map = NULL;
            v->log = NULL;
            v->next = NULL;
            if (db->draining) db->draining_tail->next = v;
            else db->draining = v;
            db->draining_tail = v;
        } else {
            ver_free(db, v);
        }
    }
    if (db->dtrees) cp_reap_trees(db);
}

/* Sort up to max retired nodes of dead versions waiting on db->draining
 * (invariant 3): each goes to the newest surviving version older than its
 * dead one if that one can see it, else to the zombies. */
static void ver_drain(kvdb *db, uint64_t max)
{
    while (max && db->draining) {
        kv_ver *d = db->draining, *heir = NULL, *v;
        /* (writer only: the list's links and gens are the writer's) */
        for (v = db->oldest; v && v->gen < d->gen; v = v->next) heir = v;
        if (!heir || heir->gen < d->retired_min) ver_zombify(db, d); /* it sees none of them */
        while (max && d->retired) {
            hix_node *n = d->retired;
            d->retired = n->link;
            d->nretired--;
            max--;
            if (heir->gen >= n->gen) {
                if (!heir->retired) heir->retired_tail = n;
                if (!heir->nretired++ || n->gen < heir->retired_min) heir->retired_min = n->gen;
                n->link = heir->retired;
                heir->retired = n;
            } else {
                n->link = db->zombies;
                db->zombies = n;
                db->nzombies++;
            }
        }
        if (d->retired) break;
        db->draining = d->next;
        ver_free(db, d);
    }
}

/* Free up to max waiting nodes (invariant 5): replaced nodes, then the
 * nodes of whole old indexes, whose inner nodes hand on their children. */
static void ver_free_zombies(kvdb *db, uint64_t max)
{
    while (max && db->zombies) {
        hix_node *n = db->zombies;
        db->zombies = n->link;
        db->nzombies--;
        hix_free_node(db, &db->pool, n);
        max--;
    }
    while (max && db->dtree_nodes) {
        hix_node *n = db->dtree_nodes;
        db->dtree_nodes = n->link;
        if (n->cap == 0) {
            hix_inner *in = (hix_inner *)n;
            unsigned i;
            for (i = 0; i < HIX_FAN; i++) {
                hix_node *c = HIX_NODE(in->child[i]);
                if ((i == 0 || in->child[i] != in->child[i - 1]) && c->adj != 0xFF) {
                    c->link = db->dtree_nodes;
                    db->dtree_nodes = c;
                }
            }
        }
        hix_free_node(db, &db->pool, n);
        max--;
    }
}

static kv_ver *ver_acquire(kvdb *db)
{
    kv_ver *v;
    kv_lock(&db->mu_ver);
    v = db->pub;
    v->refs++;
    kv_unlock(&db->mu_ver);
    return v;
}

static void ver_release(kvdb *db, kv_ver *v)
{
    kv_lock(&db->mu_ver);
    v->refs--;
    kv_unlock(&db->mu_ver);
}

/* Publish the newest version covering no more than upto bytes. */
static void ver_publish_upto(kvdb *db, uint64_t upto)
{
    kv_ver *v;
    kv_lock(&db->mu_ver);
    v = db->pub;
    while (v->next && v->next->end <= upto) v = v->next;
    db->pub = v;
    kv_unlock(&db->mu_ver);
}

