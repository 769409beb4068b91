/* tools/kvbench/e_gdbm.c -- kvbench adapter for GNU dbm (libgdbm-dev). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gdbm.h>
#include "engine.h"

struct gd {
    GDBM_FILE f;
    int sync;
    char *val;   /* the last value returned by get (malloc'd by gdbm_fetch) */
};

static int gd_fail(struct gd *g, const char *what)
{
    kvb_err("gdbm", what, gdbm_strerror(g && g->f ? gdbm_last_errno(g->f) : gdbm_errno));
    return -1;
}

static void *gd_open(const struct kvb_conf *conf)
{
    struct gd *g = calloc(1, sizeof *g);
    char path[4096];
    if (!g)
        return NULL;
    kvb_path(path, sizeof path, conf->dir, "gdbm.db");
    g->f = gdbm_open(path, 0, GDBM_WRCREAT | (conf->sync ? GDBM_SYNC : 0), 0644, NULL);
    if (!g->f) {
        gd_fail(NULL, "gdbm_open");
        free(g);
        return NULL;
    }
    g->sync = conf->sync;
    return g;
}

static int gd_close(void *db)
{
    struct gd *g = db;
    int rc = gdbm_close(g->f);
    free(g->val);
    free(g);
    return rc == 0 ? 0 : -1;
}

static int gd_nop(void *c)
{
    (void)c;
    return 0;
}

static datum gd_datum(const void *p, size_t n)
{
    datum d;
    d.dptr = (char *)(uintptr_t)p;
    d.dsize = (int)n;
    return d;
}

static int gd_put(void *c, const void *k, size_t kl, const void *v, size_t vl)
{
    struct gd *g = c;
    return gdbm_store(g->f, gd_datum(k, kl), gd_datum(v, vl), GDBM_REPLACE) == 0 ? 0 : gd_fail(g, "gdbm_store");
}

static int gd_del(void *c, const void *k, size_t kl)
{
    struct gd *g = c;
    if (gdbm_delete(g->f, gd_datum(k, kl)) != 0)
        return gdbm_last_errno(g->f) == GDBM_ITEM_NOT_FOUND ? 1 : gd_fail(g, "gdbm_delete");
    return 0;
}

static int gd_get(void *c, const void *k, size_t kl, const void **v, size_t *vl)
{
    struct gd *g = c;
    datum d;
    free(g->val);
    d = gdbm_fetch(g->f, gd_datum(k, kl));
    g->val = d.dptr;
    if (!d.dptr)
        return gdbm_last_errno(g->f) == GDBM_ITEM_NOT_FOUND ? 1 : gd_fail(g, "gdbm_fetch");
    *v = d.dptr;
    *vl = (size_t)d.dsize;
    return 0;
}

static int gd_commit(void *c)
{
    struct gd *g = c;
    if (g->sync && gdbm_sync(g->f) != 0)
        return gd_fail(g, "gdbm_sync");
    return 0;
}

static int gd_rend(void *c)
{
    struct gd *g = c;
    free(g->val);
    g->val = NULL;
    return 0;
}

const struct kvb_engine kvb_gdbm = {
    "gdbm",
    "GNU dbm: extendible hashing on one file",
    "gdbm_open(GDBM_WRCREAT), default block size, mmap and automatic cache size;\n"
    "no transactions: a batch is 1000 gdbm_store calls (not atomic), nothing synced;\n"
    "synced mode: GDBM_SYNC plus gdbm_sync() after every store (GDBM_SYNC alone did not\n"
    "  fsync every store here); not crash-atomic without\n"
    "  gdbm_failure_atomic, which needs a reflink file system); reads: gdbm_fetch (malloc'd copy)",
    KVB_READS | KVB_DURABLE | KVB_PERSIST,
    "unordered",
    "not thread-safe",
    gd_open, gd_close, NULL, NULL,
    gd_nop, gd_put, gd_del, gd_commit,
    gd_nop, gd_get, gd_rend,
    NULL,
    NULL,
    NULL
};
