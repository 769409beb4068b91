/* SPDX-License-Identifier: MIT
 * Copyright (c) 2026 The kvdb authors; see LICENSE. */
/*
 * kvdb.h -- public interface of kvdb, a single-file embedded key-value store.
 *
 * Drop kvdb.c and kvdb.h into your build.  The only dependency is xxhash.h
 * (header-only; Debian: libxxhash-dev, or copy it from the xxHash project).
 *
 * ------------------------------------------------------------------------
 * PROMISES
 *
 *  1. A commit is atomic: after any crash, all of a transaction's writes are
 *     visible or none are.
 *  2. Durability depends on the sync mode (kvdb_options.sync):
 *       KVDB_SYNC_FULL   (default) kvdb_commit / kvdb_put / kvdb_del return
 *                        KVDB_OK only after the data is on stable storage
 *                        (fdatasync; the directory is fsynced after the file is
 *                        created).  Commits from several threads that wait for
 *                        the disk at the same time share one sync (group
 *                        commit).  Survives power loss.
 *       KVDB_SYNC_NORMAL Each commit is handed to the operating system
 *                        (write(2)) before it returns, so a crash of the
 *                        process (kill -9, abort) loses nothing.  The file is
 *                        synced only by kvdb_sync(), by kvdb_close(), by
 *                        checkpoints, and by the commit that crosses
 *                        kvdb_options.sync_bytes of unsynced log (default
 *                        16 MiB), which returns after that sync like a
 *                        SYNC_FULL commit.  A power loss or kernel crash may
 *                        lose the commits made since the last sync -- always
 *                        whole transactions, the newest ones, never a torn
 *                        one.
 *       KVDB_SYNC_OFF    Like NORMAL, but while the handle is open the
 *                        engine never syncs on its own: only kvdb_sync(),
 *                        kvdb_checkpoint() and kvdb_close() make data
 *                        power-safe.  (Close syncs in every mode, so that
 *                        the sidecar it writes covers the whole log and the
 *                        next open need not replay it.)  For scratch data
 *                        and bulk loads.
 *     What a crash can leave ambiguous in each mode: promise 7.
 *  3. Readers never block writers and writers never block readers.  A read
 *     transaction is a snapshot: O(1) to begin, and it sees one consistent
 *     state for its whole life whatever is committed meanwhile.  While it
 *     lives it keeps the index nodes replaced since that it can still see
 *     (up to a copy of the whole hash index); when it ends, later commits
 *     sort and free them in bounded slices, so no single commit pays for a
 *     long snapshot (at 1M keys, the first put after the end of a snapshot
 *     held across a rewrite of every key while an older one lives on:
 *     0.11 ms, where sorting them at once took 9.8 ms).
 *  4. One write transaction at a time per database.  kvdb_begin() for writing
 *     waits for the current writer, or returns KVDB_EBUSY with
 *     KVDB_TXN_NOWAIT.
 *  5. The file format is little-endian and the same on every platform.
 *  6. Nothing is written by a call that returns an error before writing
 *     (bad arguments, too-big key, read-only handle).  After a failed write or
 *     sync the handle refuses further writes (sticky KVDB_EIO / KVDB_EFULL is
 *     cleared only by reopening; KVDB_EFULL from a write that could be undone
 *     is not sticky); reads keep working.  A commit that returned an error may
 *     or may not be found after reopening, but never half of it.
 *  7. Data once synced is never cut.  Opening a file that is not a kvdb
 *     database changes nothing in it (KVDB_ENOTDB), and a file that holds
 *     anything is never recreated: a short or damaged header is
 *     KVDB_ECORRUPT.  The durable horizon (kvdb_stat.horizon) is how much of
 *     the log the files prove was synced: a seal (an empty commit that
 *     kvdb_close, kvdb_sync and kvdb_checkpoint append after syncing, when
 *     anything was committed since the last one), a later commit's record of
 *     what was synced when it was written, or the sidecar.  Damage below the
 *     horizon, or a file shorter than it, is KVDB_ECORRUPT from every open
 *     and from kvdb_check, and the file is left untouched (kvdb_repair saves
 *     what is intact); an open that loads the sidecar does not re-read the
 *     log it covers, so damage there is found by the read that reaches it.
 *     Only a torn tail -- incomplete or damaged records past the horizon,
 *     after the last complete commit -- is cut off at a writable open
 *     (kvdb_stat.torn_bytes).  What a crash can leave past the horizon:
 *     under SYNC_FULL the last group commit only (it was synced, but only
 *     the next commit or seal records that); under SYNC_NORMAL and SYNC_OFF
 *     the commits since the last sync the log records.  A database closed
 *     by kvdb_close has nothing past it.  Limit: a truncation takes its
 *     evidence with it; without the sidecar (FILE.idx), a file cut short
 *     opens as the older database it then looks like, minus any incomplete
 *     transaction at the cut.
 *  8. Every value a read returns was verified against its record's checksum
 *     on the way (KVDB_ECORRUPT if it is damaged), and so was every record a
 *     lookup passed over.  A put or delete that replaces the record of its
 *     own key compares the key but does not hash the value it throws away:
 *     a key whose value is damaged can still be overwritten or deleted.
 *
 * LIMITS
 *   keys        1 .. 65535 bytes, any bytes (NUL included)
 *   values      0 .. 1 GiB (an empty value is a real value, distinct from
 *               absent); a value is held in memory once more while it is
 *               being committed
 *   file        up to 2^48 bytes of log
 *   Too long: KVDB_ETOOBIG and nothing is written.
 *
 * THREADS
 *   A kvdb handle may be shared by any number of threads.  A kvdb_txn (and
 *   its iterators) belongs to one thread at a time.  kvdb_get() works while the
 *   same thread holds the write transaction (it reads the committed state).
 *   A thread that holds the write transaction and calls kvdb_put, kvdb_del or
 *   kvdb_begin for writing gets KVDB_EBUSY, never a deadlock.  Auto-commit
 *   calls never deadlock against a read transaction held by the same thread.
 *   Built with -DKVDB_NO_THREADS the engine takes no locks: one thread only.
 *
 * LOCKING BETWEEN HANDLES
 *   A writable open takes an exclusive lock on the file: a second writable or
 *   read-only open, from this or any other process (including a second
 *   kvdb_open of the same file in this process), gets KVDB_ELOCKED.
 *   KVDB_RDONLY opens share the file with each other.
 *
 * POINTER LIFETIMES
 *   kvdb_txn_get returns a pointer to the value without copying (into the
 *   mapped file, or into the transaction's own write buffer for values it
 *   wrote itself).  It stays valid until the transaction ends or, in a write
 *   transaction, until its next put or delete.  In builds without mmap
 *   (-DKVDB_NO_MMAP) the value is read into a buffer owned by the
 *   transaction that grows with every read until the transaction ends.
 */
#ifndef KVDB_H
#define KVDB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header.  MAJOR changes only when the API or ABI
 * changes incompatibly; MINOR adds to them; PATCH fixes.  The file format
 * has its own number: a library opens every format up to its own, and a
 * newer one gives KVDB_EVERSION (see README, Compatibility). */
#define KVDB_VERSION_MAJOR 0
#define KVDB_VERSION_MINOR 2
#define KVDB_VERSION_PATCH 0
#define KVDB_VERSION_NUMBER (KVDB_VERSION_MAJOR * 1000000 + KVDB_VERSION_MINOR * 1000 + KVDB_VERSION_PATCH)
#define KVDB_VERSION_STRING "0.2.0"
#define KVDB_FORMAT_VERSION 1

typedef struct kvdb kvdb;
typedef struct kvdb_txn kvdb_txn;
typedef struct kvdb_iter kvdb_iter;

/* Return codes.  Non-negative codes are outcomes, negative ones errors. */
enum {
    KVDB_OK = 0,
    KVDB_NOTFOUND = 1,   /* key absent */
    KVDB_DONE = 2,       /* iteration finished / work finished */
    KVDB_EINVAL = -1,    /* bad argument: NULL handle, empty key, ... */
    KVDB_ENOMEM = -2,    /* allocation failed; nothing changed */
    KVDB_EIO = -3,       /* the file layer failed (read, write, sync, ...) */
    KVDB_ECORRUPT = -4,  /* damaged data: bad checksum, bad length, ... */
    KVDB_ELOCKED = -5,   /* the file is locked by another handle/process */
    KVDB_EREADONLY = -6, /* write on a read-only handle or transaction */
    KVDB_ETOOBIG = -7,   /* key or value exceeds the limits above */
    KVDB_EFULL = -8,     /* no space left on the device */
    KVDB_EVERSION = -9,  /* file written by a newer format version */
    KVDB_EBUSY = -10,    /* writer busy (NOWAIT / same thread) or txns open */
    KVDB_ENOTDB = -11    /* the file is not a kvdb database (nothing changed) */
};

/* A short message for every code, also for unknown ones.  Never NULL. */
const char *kvdb_strerror(int rc);
/* The library's KVDB_VERSION_STRING, as kvdb.c was compiled: compare it with
 * the header's to catch a program built against another kvdb.h. */
const char *kvdb_version(void);

/* The detailed message of the last error reported to the calling thread
 * ("x.db: not a kvdb database (bad magic); nothing was changed"), or "" if
 * none.  Valid until the thread's next kvdb call. */
const char *kvdb_errmsg(void);

#define KVDB_MAX_KEY   65535u
#define KVDB_MAX_VALUE (1u << 30)

/* ---- open flags ---- */
#define KVDB_CREATE   0x1u   /* create the file if missing */
#define KVDB_RDONLY   0x2u   /* no writes; shares the file with other readers */
#define KVDB_INMEMORY 0x4u   /* no file at all (implies KVDB_CREATE); path may be NULL */

enum { KVDB_SYNC_FULL = 0, KVDB_SYNC_NORMAL = 1, KVDB_SYNC_OFF = 2 };

/* ---- the file layer --------------------------------------------------
 * Every access to the operating system goes through one of these.  The
 * default (vfs == NULL in the options) is POSIX.  Every function returns a
 * kvdb code: KVDB_OK, or KVDB_EIO / KVDB_EFULL / KVDB_ELOCKED / KVDB_ENOMEM /
 * KVDB_NOTFOUND (open of a missing file without create).  Implementations
 * may call kvdb_errmsg_set() to explain a failure.  Unless built with
 * KVDB_NO_THREADS, a handle's background thread calls it too (checkpoints,
 * automatic compaction, sorting new records for iterators, the unmap and
 * close of a replaced log once it is 64 MiB or more, and reserve once the
 * log is 8 MiB or more), at the same time as the threads using the handle
 * -- reserve also at the same time as the writer's write to that file --
 * and so does kvdb_compact's writer thread (write, to the new file only,
 * one write at a time, never beside another call on that file). */
typedef struct kvdb_file kvdb_file;     /* opaque to the engine */
#define KVDB_VFS_CREATE 0x1u  /* create if missing */
#define KVDB_VFS_RDONLY 0x2u
#define KVDB_VFS_EXCL   0x4u  /* fail if it exists */
typedef struct kvdb_vfs {
    void *ctx;
    int (*open)(void *ctx, const char *path, unsigned flags, kvdb_file **out);
    int (*close)(void *ctx, kvdb_file *f);
    /* read exactly n bytes at off; reading past the end is KVDB_EIO */
    int (*read)(void *ctx, kvdb_file *f, uint64_t off, void *buf, size_t n);
    /* write exactly n bytes at off (the file grows as needed) */
    int (*write)(void *ctx, kvdb_file *f, uint64_t off, const void *buf, size_t n);
    int (*sync)(void *ctx, kvdb_file *f);       /* data (and size) durable */
    int (*size)(void *ctx, kvdb_file *f, uint64_t *out);
    int (*truncate)(void *ctx, kvdb_file *f, uint64_t size);
    /* lock the whole file without waiting: exclusive != 0 for writers,
     * shared otherwise; KVDB_ELOCKED if another handle holds a conflicting
     * lock (also another handle of this process). */
    int (*lock)(void *ctx, kvdb_file *f, int exclusive);
    /* map at least len bytes read-only (len may exceed the file size; only
     * bytes below the file size are ever read).  NULL map = no mapping. */
    int (*map)(void *ctx, kvdb_file *f, uint64_t len, const void **out);
    int (*unmap)(void *ctx, kvdb_file *f, const void *p, uint64_t len);
    int (*remove)(void *ctx, const char *path);  /* KVDB_NOTFOUND if absent */
    int (*rename)(void *ctx, const char *from, const char *to); /* atomic */
    int (*sync_dir)(void *ctx, const char *path); /* fsync path's directory */
    int (*random)(void *ctx, void *buf, size_t n); /* seeds and ids */
    /* Optional (NULL: never called): make the file at least size bytes
     * long, the new bytes reading as zeros (the POSIX layer extends it
     * sparse; allocating the space is allowed, but slower on ext4).  The
     * writer keeps the log's file this far ahead of its end, so that a
     * commit's append does not change the file's size and its sync has no
     * size to record; close cuts the surplus off, and after
     * a crash the next writable open cuts the zeros off as a torn tail.
     * An error only stops the reserving (the handle goes on without).
     * The background thread calls it while the writer may be writing to
     * the same file, also past size: it must never shorten the file. */
    int (*reserve)(void *ctx, kvdb_file *f, uint64_t size);
} kvdb_vfs;

/* The POSIX file layer (mmap unless built with KVDB_NO_MMAP). */
const kvdb_vfs *kvdb_vfs_posix(void);
/* For file layers: set the calling thread's detailed error message. */
void kvdb_errmsg_set(const char *fmt, ...);

/* ---- the allocator ---------------------------------------------------
 * All heap memory goes through these hooks (default: malloc/realloc/free,
 * or the compile-time macros KVDB_MALLOC/KVDB_REALLOC/KVDB_FREE, all or none).
 * realloc(p, 0) is never called.  Unless built with KVDB_NO_THREADS, the
 * hooks are also called from the handle's background thread (see the file
 * layer above), so they must be thread-safe. */
typedef struct kvdb_allocator {
    void *ctx;
    void *(*malloc)(void *ctx, size_t n);
    void *(*realloc)(void *ctx, void *p, size_t n);
    void (*free)(void *ctx, void *p);
} kvdb_allocator;

typedef struct kvdb_options {
    unsigned flags;              /* KVDB_CREATE | KVDB_RDONLY | KVDB_INMEMORY */
    int sync;                    /* KVDB_SYNC_FULL (default), _NORMAL, _OFF */
    uint64_t sync_bytes;         /* NORMAL: sync after this much log; 0 = 16 MiB */
    const kvdb_vfs *vfs;         /* NULL: POSIX */
    const kvdb_allocator *alloc; /* NULL: default allocator */
    int auto_compact;            /* 1: compact automatically (see kvdb_compact) */
    unsigned compact_dead_pct;   /* ...once dead bytes are this % of the file (50) */
    uint64_t compact_min_bytes;  /* ...and the file is at least this big (64 MiB) */
} kvdb_options;

/* flags 0, KVDB_SYNC_FULL, automatic compaction off (50%, 64 MiB) */
void kvdb_options_init(kvdb_options *o);

/* Open (or with KVDB_CREATE create) the database at path.  o == NULL means
 * the defaults plus KVDB_CREATE.  On error *out is NULL and kvdb_errmsg()
 * says why. */
int kvdb_open(const char *path, const kvdb_options *o, kvdb **out);
/* Sync (in every sync mode), seal the log and sync the seal (promise 7),
 * write the sidecar, and close.  KVDB_EBUSY,
 * and nothing is closed, while transactions are open.  An error from the
 * sync is returned (the handle is closed all the same).  NULL is a no-op
 * returning KVDB_OK. */
int kvdb_close(kvdb *db);

/* ---- auto-commit calls: each is one transaction ---- */
int kvdb_put(kvdb *db, const void *key, size_t klen, const void *val, size_t vlen);
/* Copies min(cap, length) bytes into buf (buf may be NULL when cap is 0) and
 * always sets *vlen (if not NULL) to the full length.  KVDB_NOTFOUND if absent.
 * Allocates nothing. */
int kvdb_get(kvdb *db, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen);
/* KVDB_NOTFOUND if absent, and then nothing is written. */
int kvdb_del(kvdb *db, const void *key, size_t klen);

/* ---- transactions ---- */
#define KVDB_TXN_RDONLY 0x1u
#define KVDB_TXN_NOWAIT 0x2u  /* KVDB_EBUSY instead of waiting for the writer */
int kvdb_begin(kvdb *db, unsigned flags, kvdb_txn **out);
/* zero-copy; valid until the txn ends or its next write */
int kvdb_txn_get(kvdb_txn *t, const void *key, size_t klen, const void **val, size_t *vlen);
int kvdb_txn_put(kvdb_txn *t, const void *key, size_t klen, const void *val, size_t vlen);
/* KVDB_NOTFOUND if absent as seen by t */
int kvdb_txn_del(kvdb_txn *t, const void *key, size_t klen);
/* Both end and free t.  Commit of a read txn just ends it.  If commit fails
 * the transaction is aborted (nothing of it is visible in this process). */
int kvdb_commit(kvdb_txn *t);
void kvdb_abort(kvdb_txn *t);

/* Make everything committed so far durable (in every sync mode), and seal
 * the log (promise 7): when anything was committed since the last seal, a
 * 40-byte write after the sync (the next sync covers it).  While a write
 * transaction is open the seal is left to its commit, which records the
 * synced length itself. */
int kvdb_sync(kvdb *db);

/* Write the sidecar ("<path>.idx"): the indexes as of the last published
 * commit, so that the next open replays only the log written after it.
 * The log is synced up to that commit first (a sidecar never covers log
 * that is not durable) and sealed, as by kvdb_sync.  kvdb_close does this
 * too, and a background thread
 * does it as the log grows (see README).  The sidecar is derived data: if
 * it is missing, stale, damaged or from another database, open ignores it
 * and replays the log.  Runs beside readers and writers; costs a write of
 * about 30 bytes per key.  In-memory databases: nothing to do. */
int kvdb_checkpoint(kvdb *db);

/* ---- compaction ----
 * The log only grows: an overwrite or delete leaves the old record behind
 * (kvdb_stat.dead_bytes).  kvdb_compact writes the live records of the
 * current state, in key order, into "<path>.compact" and renames it over
 * the database, so the space comes back and later scans read the file in
 * order.
 *   Online: readers and writers go on while it copies.  A write waits only
 *   for the final step: the commits made meanwhile are copied, the new file
 *   synced, renamed and its directory synced.  A read transaction begun
 *   before keeps reading its snapshot in the old file, which stays open
 *   (its disk space is given back when the last such transaction ends).
 *   Crash-safe: until the rename the database is the old file, untouched;
 *   after it, the new file, complete and durable, with every commit
 *   acknowledged before.  A leftover "<path>.compact" is removed by the next
 *   writable open.  A failure before the rename (KVDB_EFULL included)
 *   abandons the compaction: the new file is removed, the database is
 *   unchanged and stays writable.  If the directory sync after the rename
 *   fails, the handle refuses writes (sticky KVDB_EIO) like after any
 *   failed sync.
 *   Cost: one read of the live data in key order (sorting it first unless
 *   iterators already did) and one sequential write of it; while it runs,
 *   a second hash index and a sorted run for the new file (about 35 bytes
 *   per key), and between the copy and the building of that index 16
 *   bytes per key more (32 for a moment).  The sidecar is written for the
 *   new file when it is done.  With 16 MiB or more of live data, and
 *   unless built with KVDB_NO_THREADS, a second thread writes the copy
 *   (1 MiB at a time, while the calling thread prepares the next): two
 *   CPUs for the copy; kvdb_compact_step and automatic compaction use one.
 * Returns KVDB_OK, or an error and the database is as it was.  KVDB_EBUSY
 * if the calling thread holds the write transaction.  In-memory databases
 * compact too.  Read-only handles: KVDB_EREADONLY. */
int kvdb_compact(kvdb *db);
/* The same in slices, for applications with a frame budget: each call
 * does about max_bytes of copying (never splitting a transaction written
 * meanwhile) and returns KVDB_OK while there is more to do, KVDB_DONE when
 * a compaction has completed (the next call starts a new one).  The last
 * slice includes the swap (two syncs and a rename); the sidecar for the new
 * file is left to the next checkpoint (or close).  kvdb_close abandons a
 * compaction in progress. */
int kvdb_compact_step(kvdb *db, size_t max_bytes);
/* (The first slice also sorts what the sorted runs do not cover yet --
 * the log written since iterators or the sidecar last covered it -- which
 * max_bytes does not bound.) */
/* Automatic compaction (kvdb_options.auto_compact): after a commit, once
 * dead bytes reach compact_dead_pct of a file of at least
 * compact_min_bytes, a background thread compacts in slices (writers wait
 * only for the final step); built with KVDB_NO_THREADS, each commit does a
 * slice of 256 KiB until it is done.  A failed automatic compaction is
 * retried once the file has grown by compact_min_bytes more. */

/* ---- ordered iteration ----
 * An iterator walks the keys of its transaction's snapshot in key order
 * (bytewise, memcmp; a shorter key first when one is a prefix of the
 * other), or in descending order with KVDB_ITER_REVERSE.  In a write
 * transaction it also sees the transaction's own writes made before the
 * iterator was opened (deletes hide keys).  Key and value pointers stay
 * valid until the transaction ends (in a write transaction, until its next
 * write, for keys and values it wrote itself).  Iterators still open when
 * their transaction ends are closed with it; their handles become invalid.
 *
 * Cost: key order is built lazily from the log, so puts pay nothing for
 * it; the first iterator after n new records reads them once and sorts
 * them (a radix sort on the 8 key bytes after the keys' common prefix:
 * about O(n)) and later iterators reuse that work.  Once key order is in
 * use (an iterator has run, or open loaded it from the sidecar), the
 * handle's background thread sorts new records as commits add them (in
 * batches of at least 4 MiB of log and 1/8 of what is sorted already), so
 * iterators find it ready; built with KVDB_NO_THREADS, iterators sort.  The sorted runs take up
 * to 16 bytes of heap per key plus each run's common key prefix once;
 * after a reopen through the sidecar, only for keys written since its
 * checkpoint.  Comparisons read keys from the log only when two keys agree
 * on the 8 bytes after their common prefix and both go on beyond them.
 * Each step costs a comparison per internal run (O(log n) of them) and one
 * checksum-verified record read. */
#define KVDB_ITER_REVERSE 0x1u
/* keys in [lo, hi); a NULL bound is unbounded */
int kvdb_iter_range(kvdb_txn *t, const void *lo, size_t lolen, const void *hi, size_t hilen,
                    unsigned flags, kvdb_iter **out);
/* keys starting with prefix (plen 0: all keys) */
int kvdb_iter_prefix(kvdb_txn *t, const void *prefix, size_t plen, unsigned flags, kvdb_iter **out);
/* KVDB_OK with the next pair, KVDB_DONE at the end (and after it) */
int kvdb_iter_next(kvdb_iter *it, const void **key, size_t *klen, const void **val, size_t *vlen);
/* Reposition: the next kvdb_iter_next returns the first key >= key (in
 * reverse: the last key <= key), still within the iterator's bounds. */
int kvdb_iter_seek(kvdb_iter *it, const void *key, size_t klen);
void kvdb_iter_close(kvdb_iter *it);

struct kvdb_stat {
    uint64_t keys;          /* live keys */
    uint64_t file_bytes;    /* bytes of log (header included); while open the file
                               may be longer by less than 8 MiB + 64 KiB of reserved zeros, cut at close */
    uint64_t live_bytes;    /* bytes of records that hold live keys */
    uint64_t dead_bytes;    /* overwritten/deleted records, tombstones, commit marks */
    uint64_t index_bytes;   /* heap bytes of the in-memory indexes */
    uint64_t commits;       /* commits written by this handle */
    uint64_t syncs;         /* data syncs issued by this handle */
    uint64_t torn_bytes;    /* bytes cut from a torn tail at open */
    uint64_t recovered_txns;/* transactions replayed at open */
    uint64_t sorted_bytes;  /* heap of the sorted index (its runs) */
    uint64_t sorted_runs;   /* sorted runs shared by iterators */
    uint64_t replayed_bytes;/* log bytes replayed at open (after the sidecar) */
    unsigned sidecar_loaded;/* 1 if open used the sidecar instead of the whole log */
    const char *sidecar;    /* what open found: "loaded", "no sidecar", "foreign or
                               damaged", "does not match the log", ... (static) */
    uint32_t format_version;
    int sync_mode;
    unsigned flags;
    uint64_t db_id[2];      /* the database's random identity */
    uint64_t compactions;   /* completed by this handle */
    uint64_t compact_ns;    /* the last one: wall time from start to swap */
    uint64_t compact_reclaimed; /* the last one: file bytes given back */
    unsigned compacting;    /* 1 while one is in progress */
    uint64_t compact_pause_ns;      /* the last one: how long its swap held the writer
                                       role (commits wait for it), syncs included */
    uint64_t compact_pause_sync_ns; /* ...of which in the syncs of the new file and its
                                       directory that make the swap durable */
    uint64_t horizon;       /* the durable horizon: log bytes the file proves were
                               once on stable storage (promise 7); after a crash
                               only bytes past it may be cut as a torn tail */
    const char *horizon_from; /* the evidence: "seal" (the log ends with one),
                               "commit" (a COMMIT's durable field), "sidecar"
                               (what the sidecar covered at open), "none" (static) */
};
int kvdb_stat(kvdb *db, struct kvdb_stat *out);

/* ---- check and repair ------------------------------------------------
 * Both take a path, not a handle: they work on databases that refuse to
 * open.  They read the file under a shared lock (KVDB_ELOCKED while a
 * writable handle has it open, in this or another process) and never
 * write to it.
 *
 * kvdb_check verifies, without trusting the sidecar:
 *   - every record's checksum in the whole log, before the sidecar's
 *     checkpoint as well as after it (open checks only the latter);
 *   - the log's structure: each COMMIT counts the records before it, its
 *     sequence number is higher than the previous one, and after the last
 *     complete transaction there is nothing but a torn tail;
 *   - if the log is clean: the indexes that a read-only open builds (from
 *     the sidecar, when it matches, plus the log after it) against the log:
 *     every key's newest record is a PUT the hash index maps it to, deleted
 *     keys are absent, the key count and live bytes agree, and the ordered
 *     iterator yields every live key once, in order, at the same record as
 *     the hash index.  A sidecar that exists but does not load is reported.
 * Damage is resynchronised past: after a record that does not verify, the
 * check goes on at the next offset where one does (a record's checksum
 * depends on its offset, so only records written there verify there), so
 * one report covers each damaged range and later damage is found too.
 *
 * Returns KVDB_OK if the database is clean, KVDB_ECORRUPT if problems were
 * found (each went to report; st->problems counts them), or the error that
 * stopped the check: KVDB_NOTFOUND (no file), KVDB_ENOTDB, KVDB_EVERSION,
 * KVDB_ELOCKED, KVDB_EIO, KVDB_ENOMEM.  A torn tail -- the end of a write a
 * crash interrupted, which the next writable open cuts off -- is a note,
 * not a problem (st->torn_bytes); so is the sidecar's state.  Damage below
 * the durable horizon (promise 7; st->horizon), or a file shorter than its
 * sidecar says was synced, is always a problem.
 *
 * kvdb_repair copies every intact committed transaction of path, in log
 * order, into a database it creates at out_path (which must not exist: it
 * is created exclusively, KVDB_EINVAL otherwise).  What cannot be saved is
 * reported: damaged byte ranges (skipped) and incomplete transactions
 * (records or COMMIT damaged or missing: dropped whole, never applied in
 * part).  Transactions after damage are saved, also those in a torn tail.
 * Salvaged transactions are committed in batches (a batch never splits
 * one) with KVDB_SYNC_OFF and one kvdb_sync at the end.  KVDB_OK means the
 * new database is complete and durable -- st says what it lacks (problems,
 * lost_bytes, lost_txns); on an error the new file is removed again.
 * Keys deleted by a salvaged transaction but written by a lost one are
 * simply absent.  Sequence numbers and the database identity are new.
 * With KVDB_REPAIR_PARTIAL in opts->flags, the intact records of each
 * incomplete transaction are copied too (st->partial_records), in log
 * order; st->lost_records counts the intact records such transactions
 * held, saved or not.
 *
 * Cost: one pass over the log (check: three -- the log, the hash index
 * against the log, the ordered iterator), plus a scan of the rest of the
 * file per damaged range.  Memory: the records of one transaction, and
 * (check) 16 bytes per key whose newest record is a PUT not yet matched in
 * the index, normally few.  Without mmap, the log is read in 4 MiB windows
 * and the ordered pass keeps every value it reads until it ends. */
#define KVDB_CHECK_PROBLEM 0          /* damage or disagreement */
#define KVDB_CHECK_NOTE    1          /* torn tail, sidecar state: not a problem */
#define KVDB_CHECK_NOOFF   UINT64_MAX /* the finding has no file offset */

typedef struct kvdb_check_opts {
    const kvdb_vfs *vfs;          /* NULL: POSIX */
    const kvdb_allocator *alloc;  /* NULL: the default allocator */
    /* each finding, in file order within a pass; what is one sentence
     * without the file name; valid during the call only.  May be NULL. */
    void (*report)(void *ctx, int kind, uint64_t off, const char *what);
    /* work done of total (bytes; total may grow between passes), about
     * every MiB and once at the end of each pass.  May be NULL. */
    void (*progress)(void *ctx, uint64_t done, uint64_t total);
    void *ctx;
    unsigned flags;               /* KVDB_REPAIR_* */
} kvdb_check_opts;
/* repair: also copy the intact records of incomplete transactions (whose
 * other records or COMMIT are damaged or missing), each such transaction in
 * log order; a record that fails its checksum is never copied.  What such a
 * transaction wrote is then there in part: for a disaster, not by default. */
#define KVDB_REPAIR_PARTIAL 0x1u

typedef struct kvdb_check_stat {
    uint64_t file_bytes;       /* size of the file */
    uint64_t records;          /* records that verified (PUT, DEL, COMMIT) */
    uint64_t txns;             /* complete transactions (seals, the empty ones, not counted) */
    uint64_t bytes_verified;   /* header and records that verified */
    uint64_t problems;         /* problems found (0: clean) */
    uint64_t torn_bytes;       /* torn tail: bytes from the end of the last complete
                                  transaction before it */
    uint64_t lost_bytes;       /* damaged ranges plus records of incomplete transactions */
    uint64_t lost_txns;        /* incomplete transactions */
    uint64_t lost_records;     /* their intact PUT/DEL records */
    uint64_t partial_records;  /* repair with KVDB_REPAIR_PARTIAL: of those, the ones copied */
    uint64_t keys;             /* check: live keys per the log (if index_checked);
                                  repair: keys in the new database */
    uint64_t salvaged_txns;    /* repair: transactions copied */
    uint64_t salvaged_records; /* repair: PUT and DEL records copied */
    int index_checked;         /* check: the indexes were compared with the log */
    uint64_t horizon;          /* the durable horizon (kvdb_stat.horizon): damage or an end
                                  of file below it is a problem, never a torn tail */
    const char *horizon_from;  /* its evidence, as kvdb_stat.horizon_from (static) */
} kvdb_check_stat;

/* opts and st may be NULL. */
int kvdb_check(const char *path, const kvdb_check_opts *opts, kvdb_check_stat *st);
int kvdb_repair(const char *path, const char *out_path, const kvdb_check_opts *opts, kvdb_check_stat *st);

#ifdef __cplusplus
}
#endif
#endif /* KVDB_H */
