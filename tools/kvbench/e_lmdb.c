/* tools/kvbench/e_lmdb.c -- kvbench adapter for LMDB (liblmdb-dev). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>
#include "engine.h"

struct lm_db {
    MDB_env *env;
    MDB_dbi dbi;
};

struct lm_ctx {
    struct lm_db *d;
    MDB_txn *w, *r;   /* r is reset/renewed, not freed, between read batches */
    MDB_cursor *cur;
};

static int lm_fail(const char *what, int rc)
{
    kvb_err("lmdb", what, mdb_strerror(rc));
    return -1;
}

static void *lm_open(const struct kvb_conf *conf)
{
    struct lm_db *d = calloc(1, sizeof *d);
    MDB_txn *t;
    unsigned flags = MDB_NOSUBDIR | MDB_NOTLS;
    size_t rec = conf->ksize + conf->vsize + 16;
    /* Room for snapput: while a reader holds a snapshot LMDB reuses no page
     * freed after it, so every commit grows the file.  The map is sparse. */
    size_t map = (size_t)conf->n * (rec * 4 + 8192) + ((size_t)1 << 30);
    char path[4096];
    int rc;
    if (!d)
        return NULL;
    if (map > ((size_t)16 << 30))
        map = (size_t)16 << 30;
    if (!conf->sync)
        flags |= MDB_WRITEMAP | MDB_NOSYNC | MDB_NOMETASYNC;
    kvb_path(path, sizeof path, conf->dir, "lmdb.mdb");
    if ((rc = mdb_env_create(&d->env)) != 0 || (rc = mdb_env_set_mapsize(d->env, map)) != 0
        || (rc = mdb_env_set_maxreaders(d->env, 64)) != 0
        || (rc = mdb_env_open(d->env, path, flags, 0644)) != 0) {
        lm_fail("mdb_env_open", rc);
        if (d->env)
            mdb_env_close(d->env);
        free(d);
        return NULL;
    }
    if ((rc = mdb_txn_begin(d->env, NULL, 0, &t)) != 0 || (rc = mdb_dbi_open(t, NULL, 0, &d->dbi)) != 0
        || (rc = mdb_txn_commit(t)) != 0) {
        lm_fail("mdb_dbi_open", rc);
        mdb_env_close(d->env);
        free(d);
        return NULL;
    }
    return d;
}

static int lm_close(void *db)
{
    struct lm_db *d = db;
    mdb_env_close(d->env);
    free(d);
    return 0;
}

static void *lm_ctx_new(void *db)
{
    struct lm_ctx *c = calloc(1, sizeof *c);
    if (c)
        c->d = db;
    return c;
}

static void lm_ctx_free(void *cv)
{
    struct lm_ctx *c = cv;
    if (c->r)
        mdb_txn_abort(c->r);
    free(c);
}

static int lm_wbegin(void *cv)
{
    struct lm_ctx *c = cv;
    int rc = mdb_txn_begin(c->d->env, NULL, 0, &c->w);
    return rc ? lm_fail("mdb_txn_begin", rc) : 0;
}

static int lm_put(void *cv, const void *k, size_t kl, const void *v, size_t vl)
{
    struct lm_ctx *c = cv;
    MDB_val key, val;
    int rc;
    key.mv_data = (void *)(uintptr_t)k;
    key.mv_size = kl;
    val.mv_data = (void *)(uintptr_t)v;
    val.mv_size = vl;
    rc = mdb_put(c->w, c->d->dbi, &key, &val, 0);
    if (rc) {   /* the txn is unusable (e.g. MDB_MAP_FULL): end it */
        mdb_txn_abort(c->w);
        c->w = NULL;
        return lm_fail("mdb_put", rc);
    }
    return 0;
}

static int lm_del(void *cv, const void *k, size_t kl)
{
    struct lm_ctx *c = cv;
    MDB_val key;
    int rc;
    key.mv_data = (void *)(uintptr_t)k;
    key.mv_size = kl;
    rc = mdb_del(c->w, c->d->dbi, &key, NULL);
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc) {
        mdb_txn_abort(c->w);
        c->w = NULL;
        return lm_fail("mdb_del", rc);
    }
    return 0;
}

static int lm_wcommit(void *cv)
{
    struct lm_ctx *c = cv;
    int rc = mdb_txn_commit(c->w);
    c->w = NULL;
    return rc ? lm_fail("mdb_txn_commit", rc) : 0;
}

static int lm_rbegin(void *cv)
{
    struct lm_ctx *c = cv;
    int rc = c->r ? mdb_txn_renew(c->r) : mdb_txn_begin(c->d->env, NULL, MDB_RDONLY, &c->r);
    return rc ? lm_fail("mdb_txn_begin(RDONLY)", rc) : 0;
}

static int lm_get(void *cv, const void *k, size_t kl, const void **v, size_t *vl)
{
    struct lm_ctx *c = cv;
    MDB_val key, val;
    int rc;
    key.mv_data = (void *)(uintptr_t)k;
    key.mv_size = kl;
    rc = mdb_get(c->r, c->d->dbi, &key, &val);
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc)
        return lm_fail("mdb_get", rc);
    *v = val.mv_data;
    *vl = val.mv_size;
    return 0;
}

static int lm_rend(void *cv)
{
    struct lm_ctx *c = cv;
    mdb_txn_reset(c->r);
    return 0;
}

static int lm_scan(void *cv, const void *start, size_t sl, uint64_t max, kvb_scan_cb cb, void *arg)
{
    struct lm_ctx *c = cv;
    MDB_cursor *cur;
    MDB_val key, val;
    uint64_t i;
    int rc = mdb_cursor_open(c->r, c->d->dbi, &cur);
    if (rc)
        return lm_fail("mdb_cursor_open", rc);
    key.mv_data = (void *)(uintptr_t)start;
    key.mv_size = sl;
    rc = mdb_cursor_get(cur, &key, &val, start ? MDB_SET_RANGE : MDB_FIRST);
    for (i = 0; rc == 0 && i < max; i++) {
        if (cb(arg, key.mv_data, key.mv_size, val.mv_data, val.mv_size))
            break;
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : lm_fail("mdb_cursor_get", rc);
}

const struct kvb_engine kvb_lmdb = {
    "lmdb",
    MDB_VERSION_STRING ", copy-on-write B+tree in a memory map",
    "no-sync mode: MDB_WRITEMAP | MDB_NOSYNC | MDB_NOMETASYNC (commits do not fsync)\n"
    "synced mode: default flags (fdatasync per commit; one writer at a time, no group commit)\n"
    "MDB_NOTLS, map size N x (4 x record + 8 KiB) + 1 GiB (at most 16 GiB; sparse), batches: one write txn per 1000 puts;\n"
    "reads: one read txn per 1000 gets (mdb_txn_reset/renew), mdb_get zero-copy;\n"
    "scans: mdb_cursor MDB_SET_RANGE + MDB_NEXT; no MDB_APPEND for fillseq\n"
    "compaction: none (the B+tree is updated in place; readseqc, seekscanc run as loaded)",
    KVB_READS | KVB_SNAPSHOT | KVB_THREADS | KVB_DURABLE | KVB_PERSIST | KVB_SAMECTX,
    NULL,
    NULL,
    lm_open, lm_close, lm_ctx_new, lm_ctx_free,
    lm_wbegin, lm_put, lm_del, lm_wcommit,
    lm_rbegin, lm_get, lm_rend,
    lm_scan,
    NULL,
    NULL
};
