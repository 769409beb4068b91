/*
 * fuzz_sidecar.h -- the fixed database of fuzz_sidecar.c, also built by
 * mkcorpus.c for its seeds.  Included after ../../kvdb.c and fuzzvfs.h.
 *
 * fs_build() makes it in the in-memory file layer, deterministically (the
 * creation time in the log header is fixed): phase 1 puts, overwrites and
 * deletes keys "user:NNN" and closes (sidecar S1, covering a prefix of the
 * log); phase 2 reopens, overwrites, deletes, brings deleted keys back and
 * adds "usr/NNN" and long "user:longkey-NNN" keys, and closes (sidecar S2,
 * covering the whole log).  fs_db records the log, both sidecars and what
 * every key holds and has ever held.
 */
#ifndef KVDB_FUZZ_SIDECAR_H
#define KVDB_FUZZ_SIDECAR_H

#define FS_NK 164          /* key ids; FS_NK - 4 .. FS_NK - 1 are never written */
#define FS_NW (FS_NK - 4)
#define FS_MAXV 320
#define FS_TIME 1700000000u /* the log header's creation time */

typedef struct {
    unsigned char *log, *s1, *s2;
    size_t loglen, s1len, s2len;
    uint64_t seed;             /* the log's hash seed */
    int ver[FS_NK];            /* value version held at the end, 0 = absent */
    unsigned hist[FS_NK];      /* bit v: version v was ever put */
} fs_db;

static size_t fs_key(int id, char *k)
{
    if (id >= FS_NK - 4) return (size_t)sprintf(k, "%s", id == FS_NK - 4 ? "user:999" : id == FS_NK - 3 ? "u" :
                                                        id == FS_NK - 2 ? "usr/" : "zz");
    if (id >= 150) return (size_t)sprintf(k, "user:longkey-%03d", id);
    if (id >= 130) return (size_t)sprintf(k, "usr/%03d", id);
    return (size_t)sprintf(k, "user:%03d", id);
}

/* version ver of id's value: 0..49 bytes, a few of 300 */
static size_t fs_val(int id, int ver, unsigned char *v)
{
    size_t n = id % 23 == 0 && ver == 1 ? 300 : (size_t)((id * 7 + ver * 13) % 50), i;
    for (i = 0; i < n; i++) v[i] = (unsigned char)(id * 31 + ver * 7 + (int)i);
    return n;
}

static void fs_die(const char *what)
{
    fprintf(stderr, "fuzz_sidecar.h: %s: %s\n", what, kvdb_errmsg());
    abort();
}

static unsigned char *fs_copy(fz_disk *d, const char *name, size_t *len)
{
    int n = fz_lookup(d, name);
    unsigned char *p;
    if (n < 0) fs_die(name);
    *len = (size_t)d->f[d->ino[n]].size;
    p = (unsigned char *)malloc(*len ? *len : 1);
    if (!p) abort();
    memcpy(p, d->f[d->ino[n]].p, *len);
    return p;
}

/* one transaction: n (id, version) pairs, version 0 = delete */
static void fs_txn(kvdb *db, fs_db *m, int n, const int *ids, const int *vers)
{
    kvdb_txn *t;
    char k[32];
    unsigned char v[FS_MAXV];
    int i;
    if (kvdb_begin(db, 0, &t) != KVDB_OK) fs_die("begin");
    for (i = 0; i < n; i++) {
        size_t kl = fs_key(ids[i], k);
        int rc = vers[i] ? kvdb_txn_put(t, k, kl, v, fs_val(ids[i], vers[i], v)) : kvdb_txn_del(t, k, kl);
        if (rc != KVDB_OK && rc != KVDB_NOTFOUND) fs_die("txn write");
        m->ver[ids[i]] = vers[i];
        if (vers[i]) m->hist[ids[i]] |= 1u << vers[i];
    }
    if (kvdb_commit(t) != KVDB_OK) fs_die("commit");
}

static void fs_one(kvdb *db, fs_db *m, int id, int ver) { fs_txn(db, m, 1, &id, &ver); }

/* rnd seeds the file layer's random bytes: another rnd, another database */
static void fs_build(fs_db *m, uint64_t rnd)
{
    fz_disk d;
    kvdb *db;
    int id, ids[8], vers[8], n = 0, ntx = 0;
    unsigned char *h;
    memset(m, 0, sizeof *m);
    fz_init(&d, 1, "fuzz.db", NULL, 0);
    d.rnd = rnd;
    if (fz_open_db(&d, KVDB_CREATE, NULL, &db) != KVDB_OK || kvdb_close(db) != KVDB_OK) fs_die("create");
    h = d.f[d.ino[fz_lookup(&d, "fuzz.db")]].p;
    kv_st64(h + 40, FS_TIME);
    kv_st64(h + 56, XXH3_64bits(h, 56));
    m->seed = kv_ld64(h + 16);
    fz_remove(&d, "fuzz.db.idx");
    /* phase 1: ids 0..109 in transactions of 1..4, then overwrites, a put
     * and delete of one key in one transaction, deletes */
    if (fz_open_db(&d, 0, NULL, &db) != KVDB_OK) fs_die("open 1");
    for (id = 0; id < 110; id++) {
        ids[n] = id;
        vers[n++] = 1;
        if (n == ntx % 4 + 1 || id == 109) {
            fs_txn(db, m, n, ids, vers);
            n = 0;
            ntx++;
        }
    }
    for (id = 0; id < 110; id += 5) fs_one(db, m, id, 2);
    for (id = 5; id < 110; id += 11) {
        ids[0] = ids[1] = id;
        vers[0] = 3;
        vers[1] = 0;
        fs_txn(db, m, 2, ids, vers);
    }
    for (id = 3; id < 110; id += 7) fs_one(db, m, id, 0);
    if (kvdb_close(db) != KVDB_OK) fs_die("close 1");
    m->s1 = fs_copy(&d, "fuzz.db.idx", &m->s1len);
    /* phase 2: overwrites (deleted keys come back), deletes, new keys */
    if (fz_open_db(&d, 0, NULL, &db) != KVDB_OK) fs_die("open 2");
    for (id = 1; id < 110; id += 6) fs_one(db, m, id, 3);
    for (id = 4; id < 110; id += 9) fs_one(db, m, id, 0);
    for (id = 110; id < FS_NW; id += 2) {
        ids[0] = id;
        ids[1] = id + 1;
        vers[0] = vers[1] = 1;
        fs_txn(db, m, 2, ids, vers);
    }
    for (id = 120; id < FS_NW; id += 8) fs_one(db, m, id, 0);
    if (kvdb_close(db) != KVDB_OK) fs_die("close 2");
    m->s2 = fs_copy(&d, "fuzz.db.idx", &m->s2len);
    m->log = fs_copy(&d, "fuzz.db", &m->loglen);
}

/* Another database with the same contents whose newest sidecar has the
 * same length as d's, so that one can stand in for the other: the index's
 * leaves split by hash, so another seed may give another shape. */
static void fs_build_foreign(fs_db *f, const fs_db *d)
{
    uint64_t rnd;
    for (rnd = 2; rnd < 1000; rnd++) {
        fs_build(f, rnd);
        if (f->s2len == d->s2len && f->seed != d->seed) return;
        free(f->log);
        free(f->s1);
        free(f->s2);
    }
    fs_die("no foreign sidecar of the same length");
}

#endif
