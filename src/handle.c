/* ======================================================================
 * SECTION: handle and shared structures
 * ====================================================================== */
typedef struct hix_node hix_node;
typedef uintptr_t hix_ref;  /* a tagged pointer to an index node */
#define KV_NFREE 13        /* free lists: inner nodes and 12 leaf sizes */

/* Index nodes come from a pool: the writer's, or while a compaction builds
 * the index of the new file, the compactor's own -- so the two can work at
 * the same time without sharing free lists. */
typedef struct hix_pool {
    hix_node *free_nodes[KV_NFREE];
    unsigned n_free[KV_NFREE];
    uint64_t bytes;        /* heap of its nodes, free lists included */
    uint64_t free_bytes;   /* of which on the free lists */
} hix_pool;

/* One log file: the database file or, during a compaction, the file
 * that will replace it.  Versions and mappings hold references, taken and
 * dropped by the writer only (so refs needs no lock); the file is closed
 * when the last one goes, so a snapshot taken before a compaction keeps
 * reading the file it was taken on. */
typedef struct kv_log {
    kvdb_file *f;
    unsigned refs;
    uint64_t bytes;        /* its size as the writer last knew it */
} kv_log;

/* A read-only mapping of a log file.  Versions hold references; the writer
 * creates, references and releases maps (so refs needs no lock). */
typedef struct kv_map {
    const uint8_t *base;
    uint64_t len;
    unsigned refs;
    kv_log *log;           /* the file mapped (a reference) */
} kv_map;

/* A version: the state after one commit.  Immutable once linked, except
 * refs (under mu_ver) and retired (emptied by reclamation). */
typedef struct kv_ver {
    uint64_t seq;          /* commit sequence that produced it */
    uint64_t gen;          /* write generation that produced it */
    uint64_t end;          /* log bytes it covers */
    uint64_t keys;         /* live keys */
    uint64_t live;         /* bytes of live records */
    uint64_t index_bytes;  /* heap of the index when it was made */
    hix_ref root;          /* hash index */
    kv_log *log;           /* the file the offsets refer to */
    kv_map *map;           /* mapping covering [0,end), or NULL (pread) */
    unsigned refs;         /* read transactions using it */
    hix_node *retired;     /* replaced nodes this is the newest version to see */
    hix_node *retired_tail;/* ...its last one, */
    uint64_t nretired;     /* ...how many, */
    uint64_t retired_min;  /* ...and the lowest gen among them */
    struct kv_ver *next;   /* the next newer version */
    struct kv_ver *heir;   /* when dead: the surviving version before it */
} kv_ver;

/* The write set: a SmallMap from key to the position of the key's newest
 * record in the transaction's buffer.  Up to WS_INLINE keys live inline and
 * are found by a linear scan; beyond that they move to an open-addressing
 * table (load <= 1/2) that is kept for the next transaction unless large. */
#define WS_INLINE 8
typedef struct ws_ent {
    uint64_t h;
    uint64_t pos;          /* in the txn buffer; table slots store pos + 1 */
} ws_ent;

typedef struct kv_ws {
    uint32_t n;            /* distinct keys */
    int promoted;          /* entries live in tab */
    ws_ent inl[WS_INLINE];
    ws_ent *tab;
    uint32_t cap;          /* slots in tab, a power of two, or 0 */
} kv_ws;

/* Read buffers of a transaction in pread mode: values read stay valid
 * until the transaction ends. */
typedef struct kv_arena_blk {
    struct kv_arena_blk *next;
    size_t used, cap;
    /* data follows */
} kv_arena_blk;

struct kvdb_txn {
    kvdb *db;
    int write;             /* 1 for the write transaction */
    kv_ver *ver;           /* base version */
    uint64_t gen;          /* write generation (write txn) */
    kv_buf wbuf;           /* encoded records (write txn) */
    uint32_t nrec;
    int seal;              /* commit a seal (txn_seal) */
    kv_ws ws;
    kv_arena_blk *arena;   /* pread-mode value copies */
    struct kvdb_iter *iters; /* open iterators, closed when the txn ends */
    struct srt_run *priv;  /* a private sorted run built for this snapshot */
};

typedef struct srt_run srt_run;
typedef struct kv_cp kv_cp;

/* A slow system call left to the checkpointer thread: the munmap of a
 * mapping whose last version is gone (its cost grows with the pages it
 * touched), the close of a replaced file (the file system frees its
 * blocks), the free of a big heap block (the allocator gives it back to
 * the system: milliseconds for the sorted runs of millions of keys), or
 * the reserving of log space ahead of the writer (see kv_log_reserve).
 * Done in order, so an unmap comes before its file's close, and a reserve
 * before the close of its file. */
enum { KV_JOB_CLOSE, KV_JOB_UNMAP, KV_JOB_FREE, KV_JOB_RESERVE };
typedef struct kv_job {
    int kind;
    kvdb_file *f;
    const void *base;      /* UNMAP: [base, base + len); FREE: the block */
    uint64_t len;          /* RESERVE: the size to make f */
    uint64_t seq;          /* RESERVE: the writer's number for it (rsv_seq) */
    struct kv_job *next;
} kv_job;
/* A whole old index waiting for the last version of its file to go. */
typedef struct kv_deadtree {
    hix_ref root;
    uint64_t gen;          /* freed once every version with gen <= this is gone */
    struct kv_deadtree *next;
} kv_deadtree;

/* Locks, outermost first: a thread holding one takes only later ones.
 *   mu_cp     one compaction step at a time; guards cp.  Held across
 *             cp_step, which takes the writer role (start, swap): a holder
 *             of the role never waits for mu_cp (kvdb_compact* and close
 *             refuse the thread with the write transaction).
 *   (writer)  the role, writer_active: not a mutex, but held across a
 *             transaction or a swap; guards the writer state below.
 *   mu_write  writer_active, writer_txn, writer_thread (cv_write); held
 *             only briefly (kv_writer_take/drop, close).
 *   mu_ckpt   one sidecar write (sc_write) at a time.
 *   mu_srt    runs, nruns, srt_file, srt_bytes, run references.
 *   mu_ck     the checkpointer thread: jobs, *_want, rsv_done*, sc_end.
 *   mu_sync   written, synced, epoch, syncing, sticky (cv_sync); db->file
 *             changes under it (and the role) at a swap.
 *   mu_ver    the version list and references, nreaders, hz_*, cp stats.
 * Leaves, held over no other lock: the POSIX file's mu_size, cp_wr's mu.
 * Nested today: mu_cp > role (cp_start, cp_step); role > mu_ckpt
 * (kvdb_checkpoint in a write transaction); mu_write > mu_ver (close);
 * mu_srt > mu_ck (srt_release -> ck_enqueue); mu_ck > mu_sync (sc_write);
 * mu_sync > mu_ver (kv_sync_to -> ver_publish_upto).  mu_ck does not nest
 * in itself: no ck_job, ck_enqueue or *_release runs under it.  Callbacks
 * of the allocator and the file layer may run under any of them. */
struct kvdb {
    kvdb_allocator al;
    const kvdb_vfs *vfs;
    kvdb_vfs memvfs;       /* the in-memory file layer, ctx = &al */
    kvdb_file *file;       /* the current log file (= log->f once open) */
    kv_log *log;           /* its reference; changes only at a compaction swap */
    char *path;
    unsigned flags;
    int sync_mode;
    uint64_t sync_bytes;
    int rdonly, inmem;
    uint64_t seed;
    uint8_t id[16];

    /* writer state: touched only by the thread holding the writer */
    kv_mutex mu_write;
    kv_cond cv_write;
    int writer_active;
    int writer_txn;        /* the writer is a write transaction (else a compaction) */
    kv_thread writer_thread;
    uint64_t end;          /* log bytes written */
    uint64_t log_cap;      /* the log file's size: end, or more if reserved
                              (or more than the size: see kv_log_reserve) */
    uint64_t rsv_mark;     /* past this end, reserve more (kv_log_reserve) */
    int no_reserve;        /* the file layer's reserve failed: stop trying */
    kv_log *rsv_log;       /* a reserve on the thread is in flight: for this
                              log, which it holds a reference on */
    uint64_t rsv_seq;      /* ...and its number */
    uint64_t gen;          /* last write generation */
    uint64_t seq;          /* last commit sequence */
    kv_map *map;           /* newest mapping, or NULL (pread) */
    int use_map;
    hix_pool pool;         /* index nodes */
    hix_node *zombies;     /* unreachable nodes waiting to be freed */
    uint64_t nzombies;
    kv_ver *draining;      /* dead versions whose retired nodes are being */
    kv_ver *draining_tail; /* ...sorted out (invariant 3), oldest first */
    kv_ver *free_ver;
    kvdb_txn wtxn;         /* the one write transaction */

    /* versions: under mu_ver */
    kv_mutex mu_ver;
    kv_ver *oldest, *pub, *cur;
    unsigned nreaders;
    uint64_t commits;
    /* the durable horizon (SEALS at the top): changed under the writer role
     * and mu_ver, read under either */
    uint64_t hz_log;       /* the largest durable field of a COMMIT in the log */
    int hz_seal;           /* ...and that COMMIT is a seal */
    uint64_t hz_sc;        /* the log position a verified sidecar header of the
                              file vouched for at open (0: none) */

    /* durability: under mu_sync */
    kv_mutex mu_sync;
    kv_cond cv_sync;
    uint64_t written;      /* log bytes handed to the file layer */
    uint64_t synced;       /* log bytes known durable */
    uint64_t epoch;        /* compaction swaps so far: offsets of another
                              epoch are in another file */
    int syncing;
    int sticky;            /* error that refuses further writes */
    uint64_t nsyncs;

    /* sorted index: under mu_srt */
    kv_mutex mu_srt;
    srt_run **runs;        /* shared runs, oldest first, contiguous */
    kvdb_file *srt_file;   /* the log file they index */
    size_t nruns, runs_cap;
    uint64_t srt_bytes;    /* heap of all live runs */
    uint64_t srt_builds;   /* runs built from the log (tests count them) */

    kv_mutex mu_ckpt;      /* one checkpoint at a time */
    kv_mutex mu_cp;        /* one compaction step at a time; guards cp */
    kv_cp *cp;             /* the compaction in progress, or NULL */
    int cp_auto, cp_want;  /* automatic compaction; its thread has work */
    unsigned cp_pct;       /* dead share of the file that starts one */
    uint64_t cp_min;       /* ...in files at least this big */
    uint64_t cp_retry_at;  /* after a failed one: not before this size */
    uint64_t cp_count, cp_ns, cp_reclaimed; /* done; the last one's time and gain
                              (with cp_active: under mu_ver, for kvdb_stat) */
    uint64_t cp_pause_ns, cp_pause_sync_ns; /* ...how long its swap held the writer
                              role, and how much of that was file syncs (mu_ver) */
    int cp_active;         /* cp != NULL */
    kv_deadtree *dtrees;   /* old indexes waiting for their versions (writer) */
    hix_node *dtree_nodes; /* nodes of reaped old indexes, freed in slices */
    kv_mutex mu_ck;        /* the checkpointer thread's state: */
    kv_cond cv_ck;
    int ck_started, ck_want, ck_stop;
    int srt_want;          /* the thread has log to sort (key order in use) */
    int cp_running;        /* the thread is compacting */
    kv_job *jobs, **jobs_tail; /* for the thread (mu_ck) */
    uint64_t rsv_done, rsv_done_cap; /* the thread's last reserve: its number, */
    int rsv_done_rc;       /* ...size and result (mu_ck) */
    kv_thread ck_thread;
    /* the sidecar loaded at open (lives until close) */
    const uint8_t *sc_base;
    uint64_t sc_len;
    int sc_heap;           /* read into the heap, not mapped */
    kvdb_file *sc_file;
    uint64_t sc_end;       /* log bytes the newest sidecar covers (mu_ck) */
    const char *sc_why;    /* what became of it at open */
    int sc_rc;             /* the error (I/O, memory) that made open give it up, or 0 */

    /* found at open */
    uint64_t torn_bytes, recovered_txns, replayed_bytes;
    int sc_loaded;
};

