/*
 * tools/kvbench/e_base.c -- the two baselines of kvbench:
 *   memhash  a bare in-memory hash table (open addressing, one malloc'd block
 *            per record): the ceiling for point operations
 *   append   buffered appends of (klen, vlen, key, value) to one file, no
 *            index: the ceiling for writes (fdatasync per record when synced)
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"

/* ------------------------------------------------------------ memhash */

struct mh_slot {
    uint64_t h;          /* 0: empty */
    unsigned char *kv;   /* [u32 kl][u32 vl][key][value]; TOMB: deleted */
};

struct mh {
    struct mh_slot *s;
    uint64_t cap, used, live;   /* used counts tombstones too */
};

static unsigned char mh_tomb_byte;
#define TOMB (&mh_tomb_byte)

static uint64_t mh_hash(const void *k, size_t kl)
{
    const unsigned char *p = k;
    uint64_t h = 0x9e3779b97f4a7c15u ^ (uint64_t)kl, w;
    size_t i;
    for (i = 0; i + 8 <= kl; i += 8) {
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9u;
        h ^= h >> 29;
    }
    w = 0;
    memcpy(&w, p + i, kl - i);
    h = (h ^ w) * 0x94d049bb133111ebu;
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9u;
    h ^= h >> 32;
    return h ? h : 1;
}

static uint32_t rd32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static int mh_grow(struct mh *m, uint64_t cap)
{
    struct mh_slot *ns = calloc(cap, sizeof *ns);
    uint64_t i;
    if (!ns)
        return -1;
    for (i = 0; i < m->cap; i++) {
        if (m->s[i].h && m->s[i].kv != TOMB) {
            uint64_t j = m->s[i].h & (cap - 1);
            while (ns[j].h)
                j = (j + 1) & (cap - 1);
            ns[j] = m->s[i];
        }
    }
    free(m->s);
    m->s = ns;
    m->cap = cap;
    m->used = m->live;
    return 0;
}

static void *mh_open(const struct kvb_conf *conf)
{
    struct mh *m = calloc(1, sizeof *m);
    uint64_t cap = 1024;
    if (!m)
        return NULL;
    while (cap < conf->n * 2)   /* sized for the run: no resize in the fills */
        cap *= 2;
    if (mh_grow(m, cap) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

static int mh_close(void *db)
{
    struct mh *m = db;
    uint64_t i;
    for (i = 0; i < m->cap; i++)
        if (m->s[i].h && m->s[i].kv != TOMB)
            free(m->s[i].kv);
    free(m->s);
    free(m);
    return 0;
}

/* The slot of key k, or (insert) the first free/tombstone slot on its path. */
static struct mh_slot *mh_find(struct mh *m, const void *k, size_t kl, uint64_t h, int insert)
{
    uint64_t j = h & (m->cap - 1);
    struct mh_slot *tomb = NULL;
    for (;; j = (j + 1) & (m->cap - 1)) {
        struct mh_slot *s = &m->s[j];
        if (!s->h)
            return insert ? (tomb ? tomb : s) : NULL;
        if (s->kv == TOMB) {
            if (!tomb)
                tomb = s;
        } else if (s->h == h && rd32(s->kv) == kl && memcmp(s->kv + 8, k, kl) == 0) {
            return s;
        }
    }
}

static int mh_nop(void *c)
{
    (void)c;
    return 0;
}

static int mh_put(void *c, const void *k, size_t kl, const void *v, size_t vl)
{
    struct mh *m = c;
    uint64_t h = mh_hash(k, kl);
    struct mh_slot *s = mh_find(m, k, kl, h, 0);
    uint32_t l32;
    if (s) {
        if (rd32(s->kv + 4) != vl) {
            unsigned char *n = realloc(s->kv, 8 + kl + vl);
            if (!n)
                return -1;
            s->kv = n;
            l32 = (uint32_t)vl;
            memcpy(n + 4, &l32, 4);
        }
        memcpy(s->kv + 8 + kl, v, vl);
        return 0;
    }
    if ((m->used + 1) * 10 > m->cap * 7 && mh_grow(m, m->live * 3 > m->cap ? m->cap * 2 : m->cap) != 0)
        return -1;
    s = mh_find(m, k, kl, h, 1);
    if (!s->h)
        m->used++;
    s->h = h;
    s->kv = malloc(8 + kl + vl);
    if (!s->kv)
        return -1;
    l32 = (uint32_t)kl;
    memcpy(s->kv, &l32, 4);
    l32 = (uint32_t)vl;
    memcpy(s->kv + 4, &l32, 4);
    memcpy(s->kv + 8, k, kl);
    memcpy(s->kv + 8 + kl, v, vl);
    m->live++;
    return 0;
}

static int mh_del(void *c, const void *k, size_t kl)
{
    struct mh *m = c;
    struct mh_slot *s = mh_find(m, k, kl, mh_hash(k, kl), 0);
    if (!s)
        return 1;
    free(s->kv);
    s->kv = TOMB;
    m->live--;
    return 0;
}

static int mh_get(void *c, const void *k, size_t kl, const void **v, size_t *vl)
{
    struct mh *m = c;
    struct mh_slot *s = mh_find(m, k, kl, mh_hash(k, kl), 0);
    if (!s)
        return 1;
    *v = s->kv + 8 + kl;
    *vl = rd32(s->kv + 4);
    return 0;
}

const struct kvb_engine kvb_memhash = {
    "memhash",
    "baseline: bare in-memory hash table (ceiling for point operations)",
    "open addressing, linear probing, 64-bit hash; one malloc'd block per record;\n"
    "  table presized to 2 x N slots; no file, no locks, no snapshots",
    KVB_READS,
    "unordered",
    "not thread-safe",
    mh_open, mh_close, NULL, NULL,
    mh_nop, mh_put, mh_del, mh_nop,
    mh_nop, mh_get, mh_nop,
    NULL,
    NULL,
    NULL
};

/* ------------------------------------------------------------- append */

struct ap {
    FILE *f;
    int sync;
    pthread_mutex_t mu;   /* one writer at a time (fillsync from 4 threads) */
};

static void *ap_open(const struct kvb_conf *conf)
{
    char path[4096];
    struct ap *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    kvb_path(path, sizeof path, conf->dir, "append.log");
    a->f = fopen(path, "ab");
    if (!a->f) {
        kvb_err("append", path, "fopen failed");
        free(a);
        return NULL;
    }
    setvbuf(a->f, NULL, _IOFBF, 1 << 20);
    a->sync = conf->sync;
    pthread_mutex_init(&a->mu, NULL);
    return a;
}

static int ap_close(void *db)
{
    struct ap *a = db;
    int rc = fclose(a->f);
    pthread_mutex_destroy(&a->mu);
    free(a);
    return rc == 0 ? 0 : -1;
}

static int ap_wbegin(void *c)
{
    struct ap *a = c;
    pthread_mutex_lock(&a->mu);
    return 0;
}

static int ap_rec(struct ap *a, const void *k, size_t kl, const void *v, size_t vl, uint32_t vl32)
{
    uint32_t hdr[2];
    hdr[0] = (uint32_t)kl;
    hdr[1] = vl32;
    if (fwrite(hdr, sizeof hdr, 1, a->f) != 1 || fwrite(k, 1, kl, a->f) != kl
        || (vl && fwrite(v, 1, vl, a->f) != vl)) {
        kvb_err("append", "fwrite", "failed");
        return -1;
    }
    return 0;
}

static int ap_put(void *c, const void *k, size_t kl, const void *v, size_t vl)
{
    return ap_rec(c, k, kl, v, vl, (uint32_t)vl);
}

static int ap_del(void *c, const void *k, size_t kl)
{
    int rc = ap_rec(c, k, kl, NULL, 0, 0xffffffffu);   /* a tombstone */
    return rc ? rc : 2;
}

static int ap_wcommit(void *c)
{
    struct ap *a = c;
    int rc = 0;
    if (a->sync && (fflush(a->f) != 0 || fdatasync(fileno(a->f)) != 0)) {
        kvb_err("append", "fflush/fdatasync", "failed");
        rc = -1;
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

const struct kvb_engine kvb_append = {
    "append",
    "baseline: buffered appends to one file, no index (ceiling for writes)",
    "stdio with a 1 MiB buffer: fwrite(klen, vlen, key, value) per put, a tombstone\n"
    "  record per delete; nothing read back.  Synced: fflush + fdatasync per record\n"
    "  (4 threads: a mutex, one record and one fdatasync at a time)",
    KVB_DURABLE | KVB_THREADS,
    "no index",
    NULL,
    ap_open, ap_close, NULL, NULL,
    ap_wbegin, ap_put, ap_del, ap_wcommit,
    NULL, NULL, NULL,
    NULL,
    NULL,
    NULL
};
