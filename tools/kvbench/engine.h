/*
 * tools/kvbench/engine.h -- the adapter interface of kvbench.
 *
 * One adapter per engine (tools/kvbench/e_*.c), each a `struct kvb_engine`
 * of function pointers.  The driver (tools/kvbench.c) calls them the same way
 * for every engine:
 *
 *   db  = open(conf)                  one database in conf->dir
 *   c   = ctx_new(db)                 per-thread context (NULL ctx_new: c = db)
 *   wbegin(c); put/del(c, ...) x 1000; wcommit(c)        a write batch
 *   rbegin(c); get(c, ...) x 1000; rend(c)               a read batch
 *   scan(c, start, max, cb, arg)      ordered scan, inside rbegin/rend
 *   ctx_free(c); close(db)
 *
 * Every function returns 0 on success and a negative number on error (after
 * printing the engine's message to stderr); get returns 1 for "not found";
 * del returns 1 for "was not there" and 2 if the engine cannot tell (blind
 * deletes).  Pointers returned by get/scan stay valid until the next call on
 * the same context.
 *
 * In conf->sync == 0 (the "no sync per commit" mode) a commit only has to be
 * visible to later reads; in conf->sync == 1 a commit must be on stable
 * storage before wcommit returns.
 *
 * Ordered iteration is one optional function: an engine with scan == NULL
 * gets "n/a (<noscan>)" in readseq and seekscan (and readseqc, seekscanc:
 * the same after the engine's own compaction, another optional function).
 */
#ifndef KVB_ENGINE_H
#define KVB_ENGINE_H

#include <stddef.h>
#include <stdint.h>

struct kvb_conf {
    const char *dir;     /* an empty directory owned by this engine */
    uint64_t n;          /* keys the run will hold (for sizing: buckets, map size) */
    size_t ksize, vsize;
    int sync;            /* 0: no sync per commit; 1: every commit durable */
};

/* Called for each record of a scan; return nonzero to stop. */
typedef int (*kvb_scan_cb)(void *arg, const void *k, size_t kl, const void *v, size_t vl);

#define KVB_READS    0x01u  /* get works (the append baseline has no index) */
#define KVB_SNAPSHOT 0x02u  /* rbegin on one ctx is a snapshot that holds while another ctx writes */
#define KVB_THREADS  0x04u  /* contexts may be used from different threads at once */
#define KVB_DURABLE  0x08u  /* conf->sync == 1 is supported */
#define KVB_PERSIST  0x10u  /* data survives close + open (reopen workload) */
#define KVB_SAMECTX  0x20u  /* the snapshot ctx and the writer ctx may live in one thread */

struct kvb_engine {
    const char *name;       /* for --engines and the tables */
    const char *title;      /* one line: what it is */
    const char *settings;   /* the settings used, printed by --list (lines joined with \n) */
    unsigned caps;
    const char *noscan;     /* why readseq/seekscan are n/a when scan == NULL */
    const char *nothreads;  /* why threaded workloads are n/a without KVB_THREADS */

    void *(*open)(const struct kvb_conf *conf);
    int (*close)(void *db);
    void *(*ctx_new)(void *db);      /* optional */
    void (*ctx_free)(void *c);       /* optional */

    int (*wbegin)(void *c);
    int (*put)(void *c, const void *k, size_t kl, const void *v, size_t vl);
    int (*del)(void *c, const void *k, size_t kl);
    int (*wcommit)(void *c);

    int (*rbegin)(void *c);
    int (*get)(void *c, const void *k, size_t kl, const void **v, size_t *vl);
    int (*rend)(void *c);

    /* Records with key >= start (start == NULL: from the first) in key order,
     * at most max of them.  Optional (NULL: no ordered iteration). */
    int (*scan)(void *c, const void *start, size_t sl, uint64_t max, kvb_scan_cb cb, void *arg);

    /* Optional: a short remark on what the last open did (shown by reopen). */
    void (*open_info)(void *db, char *buf, size_t cap);

    /* Optional: the engine's own compaction of the whole database, as an
     * application would run it after heavy updates (kvdb_compact, LevelDB
     * and RocksDB CompactRange over all keys, SQLite VACUUM, tkrzw Rebuild).
     * NULL: the engine has none (LMDB and Kyoto Cabinet's trees update in
     * place). readseqc and seekscanc run after it. */
    int (*compact)(void *db);
};

/* The adapters (each is compiled only when its library's header exists). */
extern const struct kvb_engine kvb_kvdb, kvb_memhash, kvb_append;
extern const struct kvb_engine kvb_lmdb, kvb_rocksdb, kvb_leveldb, kvb_sqlite;
extern const struct kvb_engine kvb_tkrzw_hash, kvb_tkrzw_tree, kvb_kc_hash, kvb_kc_tree;
extern const struct kvb_engine kvb_gdbm;

/* Helpers shared by adapters (defined in tools/kvbench.c). */
void kvb_path(char *buf, size_t cap, const char *dir, const char *file);
void kvb_err(const char *engine, const char *what, const char *msg);

#endif
