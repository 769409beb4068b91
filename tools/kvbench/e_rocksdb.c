/* tools/kvbench/e_rocksdb.c -- kvbench adapter for RocksDB (librocksdb-dev), C API. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rocksdb/c.h>
#include "engine.h"

struct rk_db {
    rocksdb_t *db;
    rocksdb_options_t *opt;
    rocksdb_block_based_table_options_t *bbt;
    rocksdb_cache_t *cache;
    rocksdb_filterpolicy_t *filter;
    int sync;
};

struct rk_ctx {
    struct rk_db *d;
    rocksdb_writeoptions_t *wo;
    rocksdb_readoptions_t *ro;
    rocksdb_writebatch_t *wb;
    const rocksdb_snapshot_t *snap;
    rocksdb_pinnableslice_t *pin;
    rocksdb_iterator_t *it;
};

static int rk_fail(const char *what, char *err)
{
    kvb_err("rocksdb", what, err ? err : "error");
    rocksdb_free(err);
    return -1;
}

static void *rk_open(const struct kvb_conf *conf)
{
    struct rk_db *d = calloc(1, sizeof *d);
    char path[4096], *err = NULL;
    if (!d)
        return NULL;
    kvb_path(path, sizeof path, conf->dir, "rocksdb");
    d->sync = conf->sync;
    d->opt = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(d->opt, 1);
    rocksdb_options_increase_parallelism(d->opt, 2);
    rocksdb_options_set_max_background_jobs(d->opt, 2);
    rocksdb_options_set_write_buffer_size(d->opt, (size_t)64 << 20);
    rocksdb_options_set_compression(d->opt, rocksdb_no_compression);
    d->bbt = rocksdb_block_based_options_create();
    d->cache = rocksdb_cache_create_lru((size_t)256 << 20);
    rocksdb_block_based_options_set_block_cache(d->bbt, d->cache);
    d->filter = rocksdb_filterpolicy_create_bloom_full(10);
    rocksdb_block_based_options_set_filter_policy(d->bbt, d->filter);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(d->bbt, 0);
    rocksdb_options_set_block_based_table_factory(d->opt, d->bbt);
    d->db = rocksdb_open(d->opt, path, &err);
    if (err) {
        rk_fail("rocksdb_open", err);
        rocksdb_block_based_options_destroy(d->bbt);
        rocksdb_cache_destroy(d->cache);
        rocksdb_options_destroy(d->opt);
        free(d);
        return NULL;
    }
    return d;
}

static int rk_close(void *db)
{
    struct rk_db *d = db;
    rocksdb_close(d->db);
    rocksdb_block_based_options_destroy(d->bbt);  /* also drops the filter policy */
    rocksdb_cache_destroy(d->cache);
    rocksdb_options_destroy(d->opt);
    free(d);
    return 0;
}

static void *rk_ctx_new(void *db)
{
    struct rk_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->d = db;
    c->wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(c->wo, (unsigned char)c->d->sync);
    c->ro = rocksdb_readoptions_create();
    c->wb = rocksdb_writebatch_create();
    return c;
}

static void rk_ctx_free(void *cv)
{
    struct rk_ctx *c = cv;
    if (c->pin)
        rocksdb_pinnableslice_destroy(c->pin);
    if (c->snap)
        rocksdb_release_snapshot(c->d->db, c->snap);
    rocksdb_writebatch_destroy(c->wb);
    rocksdb_readoptions_destroy(c->ro);
    rocksdb_writeoptions_destroy(c->wo);
    free(c);
}

static int rk_wbegin(void *cv)
{
    rocksdb_writebatch_clear(((struct rk_ctx *)cv)->wb);
    return 0;
}

static int rk_put(void *cv, const void *k, size_t kl, const void *v, size_t vl)
{
    rocksdb_writebatch_put(((struct rk_ctx *)cv)->wb, k, kl, v, vl);
    return 0;
}

static int rk_del(void *cv, const void *k, size_t kl)
{
    rocksdb_writebatch_delete(((struct rk_ctx *)cv)->wb, k, kl);
    return 2;
}

static int rk_wcommit(void *cv)
{
    struct rk_ctx *c = cv;
    char *err = NULL;
    rocksdb_write(c->d->db, c->wo, c->wb, &err);
    return err ? rk_fail("rocksdb_write", err) : 0;
}

static int rk_rbegin(void *cv)
{
    struct rk_ctx *c = cv;
    c->snap = rocksdb_create_snapshot(c->d->db);
    rocksdb_readoptions_set_snapshot(c->ro, c->snap);
    return 0;
}

static int rk_get(void *cv, const void *k, size_t kl, const void **v, size_t *vl)
{
    struct rk_ctx *c = cv;
    char *err = NULL;
    if (c->pin) {
        rocksdb_pinnableslice_destroy(c->pin);
        c->pin = NULL;
    }
    c->pin = rocksdb_get_pinned(c->d->db, c->ro, k, kl, &err);
    if (err)
        return rk_fail("rocksdb_get_pinned", err);
    if (!c->pin)
        return 1;
    *v = rocksdb_pinnableslice_value(c->pin, vl);
    return 0;
}

static int rk_rend(void *cv)
{
    struct rk_ctx *c = cv;
    if (c->pin) {
        rocksdb_pinnableslice_destroy(c->pin);
        c->pin = NULL;
    }
    rocksdb_readoptions_set_snapshot(c->ro, NULL);
    rocksdb_release_snapshot(c->d->db, c->snap);
    c->snap = NULL;
    return 0;
}

static int rk_scan(void *cv, const void *start, size_t sl, uint64_t max, kvb_scan_cb cb, void *arg)
{
    struct rk_ctx *c = cv;
    rocksdb_iterator_t *it = rocksdb_create_iterator(c->d->db, c->ro);
    char *err = NULL;
    uint64_t i;
    if (start)
        rocksdb_iter_seek(it, start, sl);
    else
        rocksdb_iter_seek_to_first(it);
    for (i = 0; i < max && rocksdb_iter_valid(it); i++) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl), *v = rocksdb_iter_value(it, &vl);
        if (cb(arg, k, kl, v, vl))
            break;
        rocksdb_iter_next(it);
    }
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    return err ? rk_fail("rocksdb iterator", err) : 0;
}

static int rk_compact(void *db)
{
    rocksdb_compact_range(((struct rk_db *)db)->db, NULL, 0, NULL, 0);
    return 0;
}

const struct kvb_engine kvb_rocksdb = {
    "rocksdb",
#ifdef RK_VERSION
    "RocksDB " RK_VERSION ": LSM tree (C API)",
#else
    "RocksDB: LSM tree (C API)",
#endif
    "no-sync mode: WAL on, WriteOptions.sync = false (WAL written, not fsynced, per commit)\n"
    "synced mode: WriteOptions.sync = true (WAL fsync per commit; concurrent writers are grouped)\n"
    "IncreaseParallelism(2), max_background_jobs 2, write_buffer_size 64 MiB, compression off\n"
    "  (values are incompressible), block cache 256 MiB LRU, full bloom filter 10 bits/key;\n"
    "batches: one WriteBatch per 1000 puts; reads: a snapshot per 1000 gets, rocksdb_get_pinned\n"
    "  (no copy); deletes are blind; scans: iterator Seek + Next\n"
    "compaction (readseqc, seekscanc): rocksdb_compact_range over all keys",
    KVB_READS | KVB_SNAPSHOT | KVB_THREADS | KVB_DURABLE | KVB_PERSIST | KVB_SAMECTX,
    NULL,
    NULL,
    rk_open, rk_close, rk_ctx_new, rk_ctx_free,
    rk_wbegin, rk_put, rk_del, rk_wcommit,
    rk_rbegin, rk_get, rk_rend,
    rk_scan,
    NULL,
    rk_compact
};
