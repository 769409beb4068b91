/* tools/kvbench/e_leveldb.c -- kvbench adapter for LevelDB (libleveldb-dev), C API. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <leveldb/c.h>
#include "engine.h"

struct ld_db {
    leveldb_t *db;
    leveldb_options_t *opt;
    leveldb_cache_t *cache;
    leveldb_filterpolicy_t *filter;
    int sync;
};

struct ld_ctx {
    struct ld_db *d;
    leveldb_writeoptions_t *wo;
    leveldb_readoptions_t *ro;
    leveldb_writebatch_t *wb;
    const leveldb_snapshot_t *snap;
    char *val;   /* the last value returned by get (malloc'd by leveldb_get) */
};

static int ld_fail(const char *what, char *err)
{
    kvb_err("leveldb", what, err ? err : "error");
    leveldb_free(err);
    return -1;
}

static void *ld_open(const struct kvb_conf *conf)
{
    struct ld_db *d = calloc(1, sizeof *d);
    char path[4096], *err = NULL;
    if (!d)
        return NULL;
    kvb_path(path, sizeof path, conf->dir, "leveldb");
    d->sync = conf->sync;
    d->opt = leveldb_options_create();
    leveldb_options_set_create_if_missing(d->opt, 1);
    leveldb_options_set_write_buffer_size(d->opt, (size_t)64 << 20);
    leveldb_options_set_max_file_size(d->opt, (size_t)8 << 20);
    leveldb_options_set_max_open_files(d->opt, 10000);
    leveldb_options_set_compression(d->opt, leveldb_no_compression);
    d->cache = leveldb_cache_create_lru((size_t)256 << 20);
    leveldb_options_set_cache(d->opt, d->cache);
    d->filter = leveldb_filterpolicy_create_bloom(10);
    leveldb_options_set_filter_policy(d->opt, d->filter);
    d->db = leveldb_open(d->opt, path, &err);
    if (err) {
        ld_fail("leveldb_open", err);
        leveldb_options_destroy(d->opt);
        leveldb_cache_destroy(d->cache);
        leveldb_filterpolicy_destroy(d->filter);
        free(d);
        return NULL;
    }
    return d;
}

static int ld_close(void *db)
{
    struct ld_db *d = db;
    leveldb_close(d->db);
    leveldb_options_destroy(d->opt);
    leveldb_cache_destroy(d->cache);
    leveldb_filterpolicy_destroy(d->filter);
    free(d);
    return 0;
}

static void *ld_ctx_new(void *db)
{
    struct ld_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->d = db;
    c->wo = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(c->wo, (unsigned char)c->d->sync);
    c->ro = leveldb_readoptions_create();
    c->wb = leveldb_writebatch_create();
    return c;
}

static void ld_ctx_free(void *cv)
{
    struct ld_ctx *c = cv;
    leveldb_free(c->val);
    if (c->snap)
        leveldb_release_snapshot(c->d->db, c->snap);
    leveldb_writebatch_destroy(c->wb);
    leveldb_readoptions_destroy(c->ro);
    leveldb_writeoptions_destroy(c->wo);
    free(c);
}

static int ld_wbegin(void *cv)
{
    leveldb_writebatch_clear(((struct ld_ctx *)cv)->wb);
    return 0;
}

static int ld_put(void *cv, const void *k, size_t kl, const void *v, size_t vl)
{
    leveldb_writebatch_put(((struct ld_ctx *)cv)->wb, k, kl, v, vl);
    return 0;
}

static int ld_del(void *cv, const void *k, size_t kl)
{
    leveldb_writebatch_delete(((struct ld_ctx *)cv)->wb, k, kl);
    return 2;
}

static int ld_wcommit(void *cv)
{
    struct ld_ctx *c = cv;
    char *err = NULL;
    leveldb_write(c->d->db, c->wo, c->wb, &err);
    return err ? ld_fail("leveldb_write", err) : 0;
}

static int ld_rbegin(void *cv)
{
    struct ld_ctx *c = cv;
    c->snap = leveldb_create_snapshot(c->d->db);
    leveldb_readoptions_set_snapshot(c->ro, c->snap);
    return 0;
}

static int ld_get(void *cv, const void *k, size_t kl, const void **v, size_t *vl)
{
    struct ld_ctx *c = cv;
    char *err = NULL;
    leveldb_free(c->val);
    c->val = leveldb_get(c->d->db, c->ro, k, kl, vl, &err);
    if (err)
        return ld_fail("leveldb_get", err);
    if (!c->val)
        return 1;
    *v = c->val;
    return 0;
}

static int ld_rend(void *cv)
{
    struct ld_ctx *c = cv;
    leveldb_free(c->val);
    c->val = NULL;
    leveldb_readoptions_set_snapshot(c->ro, NULL);
    leveldb_release_snapshot(c->d->db, c->snap);
    c->snap = NULL;
    return 0;
}

static int ld_scan(void *cv, const void *start, size_t sl, uint64_t max, kvb_scan_cb cb, void *arg)
{
    struct ld_ctx *c = cv;
    leveldb_iterator_t *it = leveldb_create_iterator(c->d->db, c->ro);
    char *err = NULL;
    uint64_t i;
    if (start)
        leveldb_iter_seek(it, start, sl);
    else
        leveldb_iter_seek_to_first(it);
    for (i = 0; i < max && leveldb_iter_valid(it); i++) {
        size_t kl, vl;
        const char *k = leveldb_iter_key(it, &kl), *v = leveldb_iter_value(it, &vl);
        if (cb(arg, k, kl, v, vl))
            break;
        leveldb_iter_next(it);
    }
    leveldb_iter_get_error(it, &err);
    leveldb_iter_destroy(it);
    return err ? ld_fail("leveldb iterator", err) : 0;
}

static int ld_compact(void *db)
{
    leveldb_compact_range(((struct ld_db *)db)->db, NULL, 0, NULL, 0);
    return 0;
}

const struct kvb_engine kvb_leveldb = {
    "leveldb",
    "LevelDB: LSM tree (C API)",
    "no-sync mode: WriteOptions.sync = false (log written, not fsynced, per commit)\n"
    "synced mode: WriteOptions.sync = true (log fsync per commit; concurrent writers grouped)\n"
    "write_buffer_size 64 MiB, max_file_size 8 MiB, max_open_files 10000, compression off\n"
    "  (values are incompressible), block cache 256 MiB LRU, bloom filter 10 bits/key;\n"
    "batches: one WriteBatch per 1000 puts; reads: a snapshot per 1000 gets, leveldb_get\n"
    "  (returns a malloc'd copy); deletes are blind; scans: iterator Seek + Next\n"
    "compaction (readseqc, seekscanc): leveldb_compact_range over all keys",
    KVB_READS | KVB_SNAPSHOT | KVB_THREADS | KVB_DURABLE | KVB_PERSIST | KVB_SAMECTX,
    NULL,
    NULL,
    ld_open, ld_close, ld_ctx_new, ld_ctx_free,
    ld_wbegin, ld_put, ld_del, ld_wcommit,
    ld_rbegin, ld_get, ld_rend,
    ld_scan,
    NULL,
    ld_compact
};
