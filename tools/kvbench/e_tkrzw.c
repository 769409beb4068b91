/* tools/kvbench/e_tkrzw.c -- kvbench adapters for tkrzw HashDBM and TreeDBM (libtkrzw-dev), C API. */
#define _POSIX_C_SOURCE 200809L
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tkrzw_langc.h>
#include "engine.h"

struct tk_db {
    TkrzwDBM *dbm;
    int sync;
};

struct tk_ctx {
    struct tk_db *d;
    char *val;   /* the last value returned by get (malloc'd by tkrzw) */
    size_t vl;
};

static int tk_fail(const char *what)
{
    kvb_err("tkrzw", what, tkrzw_get_last_status_message());
    return -1;
}

static void *tk_open2(const struct kvb_conf *conf, int tree)
{
    struct tk_db *d = calloc(1, sizeof *d);
    char path[4096], params[256];
    if (!d)
        return NULL;
    if (tree) {
        kvb_path(path, sizeof path, conf->dir, "tkrzw.tkt");
        snprintf(params, sizeof params,
                 "dbm=TreeDBM,num_buckets=%llu,max_page_size=4080,max_branches=256,"
                 "max_cached_pages=100000",
                 (unsigned long long)(conf->n / 8 + 1000));
    } else {
        kvb_path(path, sizeof path, conf->dir, "tkrzw.tkh");
        snprintf(params, sizeof params, "dbm=HashDBM,num_buckets=%llu",
                 (unsigned long long)(conf->n * 2 + 1000));
    }
    d->sync = conf->sync;
    d->dbm = tkrzw_dbm_open(path, true, params);
    if (!d->dbm) {
        tk_fail("tkrzw_dbm_open");
        free(d);
        return NULL;
    }
    return d;
}

static void *tk_open_hash(const struct kvb_conf *conf)
{
    return tk_open2(conf, 0);
}

static void *tk_open_tree(const struct kvb_conf *conf)
{
    return tk_open2(conf, 1);
}

static int tk_close(void *db)
{
    struct tk_db *d = db;
    bool ok = tkrzw_dbm_close(d->dbm);
    free(d);
    return ok ? 0 : tk_fail("tkrzw_dbm_close");
}

static void *tk_ctx_new(void *db)
{
    struct tk_ctx *c = calloc(1, sizeof *c);
    if (c)
        c->d = db;
    return c;
}

static void tk_ctx_free(void *cv)
{
    struct tk_ctx *c = cv;
    free(c->val);
    free(c);
}

static int tk_nop(void *c)
{
    (void)c;
    return 0;
}

static int tk_put(void *cv, const void *k, size_t kl, const void *v, size_t vl)
{
    struct tk_ctx *c = cv;
    if (!tkrzw_dbm_set(c->d->dbm, k, (int32_t)kl, v, (int32_t)vl, true))
        return tk_fail("tkrzw_dbm_set");
    return 0;
}

static int tk_del(void *cv, const void *k, size_t kl)
{
    struct tk_ctx *c = cv;
    if (!tkrzw_dbm_remove(c->d->dbm, k, (int32_t)kl))
        return tkrzw_get_last_status_code() == TKRZW_STATUS_NOT_FOUND_ERROR ? 1 : tk_fail("tkrzw_dbm_remove");
    return 0;
}

static int tk_wcommit(void *cv)
{
    struct tk_ctx *c = cv;
    if (c->d->sync && !tkrzw_dbm_synchronize(c->d->dbm, true, NULL, NULL, ""))
        return tk_fail("tkrzw_dbm_synchronize");
    return 0;
}

static int tk_get(void *cv, const void *k, size_t kl, const void **v, size_t *vl)
{
    struct tk_ctx *c = cv;
    int32_t n = 0;
    free(c->val);
    c->val = tkrzw_dbm_get(c->d->dbm, k, (int32_t)kl, &n);
    if (!c->val)
        return tkrzw_get_last_status_code() == TKRZW_STATUS_NOT_FOUND_ERROR ? 1 : tk_fail("tkrzw_dbm_get");
    *v = c->val;
    *vl = (size_t)n;
    return 0;
}

static int tk_rend(void *cv)
{
    struct tk_ctx *c = cv;
    free(c->val);
    c->val = NULL;
    return 0;
}

static int tk_scan(void *cv, const void *start, size_t sl, uint64_t max, kvb_scan_cb cb, void *arg)
{
    struct tk_ctx *c = cv;
    TkrzwDBMIter *it = tkrzw_dbm_make_iterator(c->d->dbm);
    uint64_t i;
    int rc = 0;
    if (!it)
        return tk_fail("tkrzw_dbm_make_iterator");
    if (!(start ? tkrzw_dbm_iter_jump(it, start, (int32_t)sl) : tkrzw_dbm_iter_first(it))) {
        tkrzw_dbm_iter_free(it);
        return tk_fail("tkrzw_dbm_iter_jump");
    }
    for (i = 0; i < max; i++) {
        char *k, *v;
        int32_t kl, vl, stop;
        if (!tkrzw_dbm_iter_get(it, &k, &kl, &v, &vl)) {
            if (tkrzw_get_last_status_code() != TKRZW_STATUS_NOT_FOUND_ERROR)
                rc = tk_fail("tkrzw_dbm_iter_get");
            break;
        }
        stop = cb(arg, k, (size_t)kl, v, (size_t)vl);
        free(k);
        free(v);
        if (stop)
            break;
        if (!tkrzw_dbm_iter_next(it)) {
            rc = tk_fail("tkrzw_dbm_iter_next");
            break;
        }
    }
    tkrzw_dbm_iter_free(it);
    return rc;
}

static int tk_compact(void *db)
{
    return tkrzw_dbm_rebuild(((struct tk_db *)db)->dbm, "") ? 0 : tk_fail("tkrzw_dbm_rebuild");
}

const struct kvb_engine kvb_tkrzw_hash = {
    "tkrzw-hash",
    "tkrzw HashDBM: on-disk hash table, memory-mapped",
    "dbm=HashDBM, num_buckets = 2 x N (default MemoryMapParallelFile, update in place)\n"
    "no transactions: a batch is 1000 tkrzw_dbm_set calls (not atomic), nothing synced;\n"
    "synced mode: tkrzw_dbm_set + tkrzw_dbm_synchronize(hard) per put\n"
    "reads: tkrzw_dbm_get (returns a malloc'd copy); no snapshots; thread-safe handle",
    KVB_READS | KVB_THREADS | KVB_DURABLE | KVB_PERSIST,
    "unordered",
    NULL,
    tk_open_hash, tk_close, tk_ctx_new, tk_ctx_free,
    tk_nop, tk_put, tk_del, tk_wcommit,
    tk_nop, tk_get, tk_rend,
    NULL,
    NULL,
    NULL
};

const struct kvb_engine kvb_tkrzw_tree = {
    "tkrzw-tree",
    "tkrzw TreeDBM: B+tree on a HashDBM file",
    "dbm=TreeDBM, num_buckets = N / 8, max_page_size 4080, max_branches 256,\n"
    "  max_cached_pages 100000 (about 400 MiB of page cache)\n"
    "no transactions: a batch is 1000 tkrzw_dbm_set calls (not atomic), nothing synced;\n"
    "synced mode: tkrzw_dbm_set + tkrzw_dbm_synchronize(hard) per put\n"
    "reads: tkrzw_dbm_get (malloc'd copy); scans: iterator jump + get + next (copies)\n"
    "compaction (readseqc, seekscanc): tkrzw_dbm_rebuild",
    KVB_READS | KVB_THREADS | KVB_DURABLE | KVB_PERSIST,
    NULL,
    NULL,
    tk_open_tree, tk_close, tk_ctx_new, tk_ctx_free,
    tk_nop, tk_put, tk_del, tk_wcommit,
    tk_nop, tk_get, tk_rend,
    tk_scan,
    NULL,
    tk_compact
};
