/* tools/kvbench/e_kyoto.c -- kvbench adapters for Kyoto Cabinet HashDB and TreeDB (libkyotocabinet-dev), C API. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kclangc.h>
#include "engine.h"

struct kc_db {
    KCDB *db;
    int sync;
};

struct kc_ctx {
    struct kc_db *d;
    char *val;   /* the last value returned by get (kcdbget, release with kcfree) */
};

static int kc_fail(struct kc_db *d, const char *what)
{
    kvb_err("kyotocabinet", what, kcdbemsg(d->db));
    return -1;
}

static void *kc_open2(const struct kvb_conf *conf, int tree)
{
    struct kc_db *d = calloc(1, sizeof *d);
    char path[4096], name[4200];
    unsigned long long msiz = (unsigned long long)conf->n * (conf->ksize + conf->vsize + 40) * 2 + (64ull << 20);
    if (!d)
        return NULL;
    kvb_path(path, sizeof path, conf->dir, tree ? "kc.kct" : "kc.kch");
    if (tree)
        snprintf(name, sizeof name, "%s#bnum=%llu#pccap=256m#msiz=%llu", path,
                 (unsigned long long)(conf->n / 10 + 1000), msiz);
    else
        snprintf(name, sizeof name, "%s#bnum=%llu#msiz=%llu", path,
                 (unsigned long long)(conf->n * 2 + 1000), msiz);
    d->sync = conf->sync;
    d->db = kcdbnew();
    if (!kcdbopen(d->db, name, KCOWRITER | KCOCREATE)) {
        kc_fail(d, "kcdbopen");
        kcdbdel(d->db);
        free(d);
        return NULL;
    }
    return d;
}

static void *kc_open_hash(const struct kvb_conf *conf)
{
    return kc_open2(conf, 0);
}

static void *kc_open_tree(const struct kvb_conf *conf)
{
    return kc_open2(conf, 1);
}

static int kc_close(void *db)
{
    struct kc_db *d = db;
    int ok = kcdbclose(d->db);
    if (!ok)
        kc_fail(d, "kcdbclose");
    kcdbdel(d->db);
    free(d);
    return ok ? 0 : -1;
}

static void *kc_ctx_new(void *db)
{
    struct kc_ctx *c = calloc(1, sizeof *c);
    if (c)
        c->d = db;
    return c;
}

static void kc_ctx_free(void *cv)
{
    struct kc_ctx *c = cv;
    if (c->val)
        kcfree(c->val);
    free(c);
}

static int kc_nop(void *c)
{
    (void)c;
    return 0;
}

static int kc_wbegin(void *cv)
{
    struct kc_ctx *c = cv;
    if (c->d->sync && !kcdbbegintran(c->d->db, 1))
        return kc_fail(c->d, "kcdbbegintran");
    return 0;
}

static int kc_put(void *cv, const void *k, size_t kl, const void *v, size_t vl)
{
    struct kc_ctx *c = cv;
    return kcdbset(c->d->db, k, kl, v, vl) ? 0 : kc_fail(c->d, "kcdbset");
}

static int kc_del(void *cv, const void *k, size_t kl)
{
    struct kc_ctx *c = cv;
    if (!kcdbremove(c->d->db, k, kl))
        return kcdbecode(c->d->db) == KCENOREC ? 1 : kc_fail(c->d, "kcdbremove");
    return 0;
}

static int kc_wcommit(void *cv)
{
    struct kc_ctx *c = cv;
    if (c->d->sync && !kcdbendtran(c->d->db, 1))
        return kc_fail(c->d, "kcdbendtran");
    return 0;
}

static int kc_get(void *cv, const void *k, size_t kl, const void **v, size_t *vl)
{
    struct kc_ctx *c = cv;
    if (c->val)
        kcfree(c->val);
    c->val = kcdbget(c->d->db, k, kl, vl);
    if (!c->val)
        return kcdbecode(c->d->db) == KCENOREC ? 1 : kc_fail(c->d, "kcdbget");
    *v = c->val;
    return 0;
}

static int kc_rend(void *cv)
{
    struct kc_ctx *c = cv;
    if (c->val)
        kcfree(c->val);
    c->val = NULL;
    return 0;
}

static int kc_scan(void *cv, const void *start, size_t sl, uint64_t max, kvb_scan_cb cb, void *arg)
{
    struct kc_ctx *c = cv;
    KCCUR *cur = kcdbcursor(c->d->db);
    uint64_t i;
    int rc = 0;
    if (!(start ? kccurjumpkey(cur, start, sl) : kccurjump(cur))) {
        kccurdel(cur);
        return kcdbecode(c->d->db) == KCENOREC ? 0 : kc_fail(c->d, "kccurjump");
    }
    for (i = 0; i < max; i++) {
        size_t kl, vl;
        const char *v;
        char *k = kccurget(cur, &kl, &v, &vl, 1);
        int stop;
        if (!k) {
            if (kccurecode(cur) != KCENOREC)
                rc = kc_fail(c->d, "kccurget");
            break;
        }
        stop = cb(arg, k, kl, v, vl);
        kcfree(k);
        if (stop)
            break;
    }
    kccurdel(cur);
    return rc;
}

const struct kvb_engine kvb_kc_hash = {
    "kc-hash",
    "Kyoto Cabinet HashDB (.kch): on-disk hash table",
    "#bnum = 2 x N, #msiz = mapped region for the whole file; opened KCOWRITER | KCOCREATE\n"
    "no-sync mode: plain kcdbset per put, a batch is 1000 of them (not atomic), no sync;\n"
    "synced mode: kcdbbegintran(hard) + kcdbset + kcdbendtran per put (WAL + fsync)\n"
    "reads: kcdbget (malloc'd copy); no snapshots; thread-safe handle",
    KVB_READS | KVB_THREADS | KVB_DURABLE | KVB_PERSIST,
    "unordered",
    NULL,
    kc_open_hash, kc_close, kc_ctx_new, kc_ctx_free,
    kc_wbegin, kc_put, kc_del, kc_wcommit,
    kc_nop, kc_get, kc_rend,
    NULL,
    NULL,
    NULL
};

const struct kvb_engine kvb_kc_tree = {
    "kc-tree",
    "Kyoto Cabinet TreeDB (.kct): B+tree on a hash file",
    "#bnum = N / 10, #pccap = 256 MiB page cache, #msiz = whole file; KCOWRITER | KCOCREATE\n"
    "no-sync mode: plain kcdbset per put, a batch is 1000 of them (not atomic), no sync;\n"
    "synced mode: kcdbbegintran(hard) + kcdbset + kcdbendtran per put (WAL + fsync)\n"
    "reads: kcdbget (malloc'd copy); scans: cursor jumpkey + kccurget(step) (copies)\n"
    "compaction: none in the C API (readseqc, seekscanc run as loaded)",
    KVB_READS | KVB_THREADS | KVB_DURABLE | KVB_PERSIST,
    NULL,
    NULL,
    kc_open_tree, kc_close, kc_ctx_new, kc_ctx_free,
    kc_wbegin, kc_put, kc_del, kc_wcommit,
    kc_nop, kc_get, kc_rend,
    kc_scan,
    NULL,
    NULL
};
