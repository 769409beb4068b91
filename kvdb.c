/*
 * kvdb.c -- a single-file embedded key-value store.
 *
 * The whole engine is this file plus kvdb.h; its one dependency is xxhash.h
 * (header-only).  The sections below follow the data: the file layer the
 * bytes go through, the log format they are written in, the mapping they
 * are read back through, the hash index that finds them, the versions that
 * make snapshots, the write set a transaction collects, recovery, commit,
 * and the public API.
 *
 * ==========================================================================
 * THE ON-DISK FORMAT
 *
 * A database is one file: a 64-byte header followed by records, appended and
 * never overwritten.  All integers are little-endian on every platform.
 *
 *   Header (64 bytes)
 *     [0,8)    magic "\x89KVDB\r\n\x1a" (the \x89 and \r\n\x1a catch text-mode
 *              mangling, as in PNG)
 *     [8,12)   u32 format version (1).  A newer version gives KVDB_EVERSION.
 *     [12,16)  u32 header size (64)
 *     [16,24)  u64 hash seed: random per database; seeds the key hash and,
 *              xored with a record's offset, the record checksums
 *     [24,40)  16-byte database id (random)
 *     [40,48)  u64 creation time (seconds since 1970; informational)
 *     [48,56)  u64 generation: 0 when created, +1 by every compaction (a
 *              compacted file keeps the seed and id; its header differs)
 *     [56,64)  u64 XXH3_64 of bytes [0,56), seed 0
 *
 *   Record (16-byte header, then key, then value; no padding)
 *     [0,8)    u64 check: XXH3_64 of bytes [8, 16+klen+vlen) with seed
 *              (hash seed ^ the record's file offset).  Mixing in the offset
 *              means a record copied or shifted elsewhere (an old tail, a
 *              misdirected write) never verifies.
 *     [8]      u8 type: 1 PUT, 2 DEL, 3 COMMIT
 *     [9]      u8 flags, zero
 *     [10,12)  u16 klen (1..65535 for PUT/DEL; 0 for COMMIT)
 *     [12,16)  u32 vlen (PUT: 0..2^30; DEL: 0; COMMIT: 24)
 *     then klen key bytes and vlen value bytes.
 *
 *   A transaction is its PUT and DEL records followed by one COMMIT record
 *   whose 24-byte payload is
 *     [0,8)    u64 sequence number (strictly increasing)
 *     [8,16)   u64 durable: how many bytes of the log were known to be on
 *              stable storage (synced) when this commit was written
 *     [16,20)  u32 number of PUT/DEL records in the transaction
 *     [20,24)  zero
 *   A transaction exists only if every one of its records and its COMMIT
 *   verify; it is then applied in record order (a later record for the same
 *   key wins).
 *
 * SEALS.  A seal is a COMMIT of no records whose durable field is its own
 * offset, written after a sync of everything before it.  kvdb_close,
 * kvdb_sync and kvdb_checkpoint append one when anything was committed
 * since the last (40 bytes; nothing otherwise); close and checkpoint sync it
 * too, and a compacted file ends with one, so a database at rest has no
 * ambiguous tail.  A seal needs no sync of its own to be true: lost, it
 * takes only its evidence with it.  To every reader of the format a seal is
 * an ordinary empty transaction, so files with seals open in versions that
 * predate them.
 *
 * THE DURABLE HORIZON H is how much of the log the files prove was once on
 * stable storage: the largest durable field of an intact COMMIT (a seal's
 * covers all before it), or the P of a sidecar whose header verifies for
 * this very log (a sidecar covers only synced log), whichever is larger.
 *
 * RECOVERY reads forward from the header, verifying every record.  At the
 * first record that is incomplete or fails to verify, at offset X, it asks
 * whether X is below the horizon: below the sidecar's P, or below the
 * durable field of an intact COMMIT further on.  If so, the damage is to
 * data once known durable: KVDB_ECORRUPT, and the file is not touched; so
 * is a file shorter than its sidecar's P (cut short).  If not, everything
 * from the end of the last complete transaction on is a torn tail --
 * writes that never reached the disk as a whole before a crash -- and is
 * cut off (on a writable open; a read-only open just ignores it).  The
 * durable field is what tells a torn group commit, whose pending writes may
 * land in any order, from damage to old data.  What a crash may leave
 * ambiguous is therefore only what nothing later vouches for: under
 * KVDB_SYNC_FULL the last group commit, under SYNC_NORMAL and SYNC_OFF the
 * commits after the last synced length that a COMMIT or seal recorded.
 * While a writer has the file open, the file may run on past the last
 * commit with zeros: space reserved ahead (kvdb_vfs.reserve), cut off at
 * close; after a crash they are part of the torn tail.
 *
 * ==========================================================================
 * THE ENGINE IN MEMORY
 *
 * The hash index maps the 64-bit key hash to the offset of the key's newest
 * record.  It is a copy-on-write radix tree over the top 30 bits of the
 * hash: inner nodes of 64 children, leaves that are small open-addressing
 * tables holding (32-bit tag, 64-bit offset) pairs.  A leaf may cover a
 * power-of-two range of its parent's children ("local depth", as in
 * extendible hashing); a full leaf grows (up to 128 slots) or splits in two,
 * so the index grows and shrinks one leaf at a time and no operation ever
 * rehashes the whole table.  Every node carries the write generation that
 * created it: a write transaction changes nodes of its own generation in
 * place and copies any other node it touches (path copying), so a commit
 * copies only the paths it changed and an open snapshot costs nothing extra.
 *
 * A version is an immutable root plus the log length it covers.  Readers
 * take the published version under a short lock (O(1)); the writer builds
 * the next version; nodes a version replaced are freed once no older version
 * is referenced.  Keys are never stored in memory: every probe whose tag
 * matches compares the full key in the log (and verifies that record), so
 * keys with colliding hashes work and memory per key does not depend on key
 * length.
 *
 * A write transaction collects its records, already encoded, in a buffer;
 * its write set (key -> position in that buffer) is a SmallMap: up to 8
 * entries inline, a hash table beyond.  Commit appends the buffer with one
 * write, updates the index, and publishes the new version -- under
 * KVDB_SYNC_FULL only after a sync that may cover several committers (group
 * commit).
 *
 * Key order is kept by the sorted index (sorted runs built lazily from the
 * log); the sidecar "<path>.idx" saves both indexes so that an open need
 * not replay the whole log.  Compaction writes the live records in key
 * order to "<path>.compact" and renames it over the database; versions,
 * mappings and readers name the file their offsets refer to, so snapshots
 * from before the swap go on reading the old file.  Every OS access goes
 * through the file layer.
 */

/* ======================================================================
 * SECTION: configuration and portability
 *
 * Compile-time switches:
 *   KVDB_NO_MMAP          read through the file layer (pread) only
 *   KVDB_NO_THREADS       no locks; one thread only
 *   KVDB_MALLOC/KVDB_REALLOC/KVDB_FREE   the default allocator (all or none)
 *   KVDB_TEST_HASH_BITS=n keep only the top n bits of every key hash, so
 *                         tests hit hash collisions constantly
 *   KVDB_CK_MIN_BYTES=n   log growth that may trigger an automatic
 *                         checkpoint (default 64 MiB; tests make it small)
 *   KVDB_NO_PREALLOC      the POSIX layer does not reserve log space
 *                         ahead (a sparse extension); see kvdb_vfs.reserve
 * ====================================================================== */
#if !defined(_WIN32)
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE 1
#endif
#endif

#include "kvdb.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <assert.h>

#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/file.h>
#ifndef KVDB_NO_MMAP
#include <sys/mman.h>
#endif

#define XXH_INLINE_ALL
#include <xxhash.h>

#ifndef KVDB_CK_MIN_BYTES /* tests lower it to run checkpoints constantly */
#define KVDB_CK_MIN_BYTES ((uint64_t)64 << 20)
#endif

#if defined(KVDB_MALLOC) || defined(KVDB_REALLOC) || defined(KVDB_FREE)
#if !defined(KVDB_MALLOC) || !defined(KVDB_REALLOC) || !defined(KVDB_FREE)
#error "define all of KVDB_MALLOC, KVDB_REALLOC and KVDB_FREE, or none"
#endif
#else
#define KVDB_MALLOC(n) malloc(n)
#define KVDB_REALLOC(p, n) realloc(p, n)
#define KVDB_FREE(p) free(p)
#endif

#ifndef KVDB_NO_THREADS
#include <pthread.h>
typedef pthread_mutex_t kv_mutex;
typedef pthread_cond_t kv_cond;
typedef pthread_t kv_thread;
#define kv_mutex_init(m) pthread_mutex_init(m, NULL)
#define kv_mutex_free(m) pthread_mutex_destroy(m)
#define kv_lock(m) pthread_mutex_lock(m)
#define kv_trylock(m) (pthread_mutex_trylock(m) == 0) /* 1: taken */
#define kv_unlock(m) pthread_mutex_unlock(m)
#define kv_cond_init(c) pthread_cond_init(c, NULL)
#define kv_cond_free(c) pthread_cond_destroy(c)
#define kv_wait(c, m) pthread_cond_wait(c, m)
#define kv_broadcast(c) pthread_cond_broadcast(c)
#define kv_self() pthread_self()
#define kv_same_thread(a, b) pthread_equal(a, b)
#else
typedef int kv_mutex;
typedef int kv_cond;
typedef int kv_thread;
#define kv_mutex_init(m) (*(m) = 0)
#define kv_mutex_free(m) ((void)(m))
#define kv_lock(m) ((void)(m))
#define kv_trylock(m) ((void)(m), 1)
#define kv_unlock(m) ((void)(m))
#define kv_cond_init(c) (*(c) = 0)
#define kv_cond_free(c) ((void)(c))
#define kv_wait(c, m) ((void)(c), (void)(m))
#define kv_broadcast(c) ((void)(c))
#define kv_self() 0
#define kv_same_thread(a, b) ((a) == (b))
#endif

#if defined(KVDB_NO_THREADS)
#define KV_TLS
#elif defined(__GNUC__) || defined(__clang__)
#define KV_TLS __thread
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define KV_TLS _Thread_local
#else
#define KV_TLS /* messages shared between threads: best effort */
#endif

#if defined(__GNUC__) || defined(__clang__)
#define KV_PREFETCH(p) __builtin_prefetch(p)
#define KV_LIKELY(x) __builtin_expect(!!(x), 1)
#define KV_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define KV_PREFETCH(p) ((void)(p))
#define KV_LIKELY(x) (x)
#define KV_UNLIKELY(x) (x)
#endif

/* Little-endian loads and stores, identical on every host. */
static uint16_t kv_ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t kv_ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t kv_ld64(const uint8_t *p) { return (uint64_t)kv_ld32(p) | ((uint64_t)kv_ld32(p + 4) << 32); }
static void kv_st16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void kv_st32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static void kv_st64(uint8_t *p, uint64_t v) { kv_st32(p, (uint32_t)v); kv_st32(p + 4, (uint32_t)(v >> 32)); }

/* ======================================================================
 * SECTION: errors
 *
 * Every error returned to the user comes with a detailed message in a
 * per-thread buffer (kvdb_errmsg).  Internal code reports with
 *     return kv_err(KVDB_EIO, "%s: write at %llu failed", ...);
 * which records the message and returns the code, so that rc-threaded code
 * stays one line per failure.  The first message set during a call wins
 * over later, vaguer ones only if the caller passes it through unchanged.
 * ====================================================================== */
static KV_TLS char kv_errbuf[320];

const char *kvdb_strerror(int rc)
{
    switch (rc) {
    case KVDB_OK: return "ok";
    case KVDB_NOTFOUND: return "not found";
    case KVDB_DONE: return "done";
    case KVDB_EINVAL: return "invalid argument";
    case KVDB_ENOMEM: return "out of memory";
    case KVDB_EIO: return "I/O error";
    case KVDB_ECORRUPT: return "database file is corrupt";
    case KVDB_ELOCKED: return "database is locked by another handle or process";
    case KVDB_EREADONLY: return "database or transaction is read-only";
    case KVDB_ETOOBIG: return "key or value too large";
    case KVDB_EFULL: return "no space left on device";
    case KVDB_EVERSION: return "database written by a newer format version";
    case KVDB_EBUSY: return "busy";
    case KVDB_ENOTDB: return "not a kvdb database";
    default: return "unknown error code";
    }
}

const char *kvdb_errmsg(void) { return kv_errbuf; }

static void kv_vseterr(const char *fmt, va_list ap)
{
    vsnprintf(kv_errbuf, sizeof kv_errbuf, fmt, ap);
}

void kvdb_errmsg_set(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kv_vseterr(fmt, ap);
    va_end(ap);
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 2, 3)))
#endif
static int kv_err(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kv_vseterr(fmt, ap);
    va_end(ap);
    return rc;
}

/* Clear the message at the start of a public call that may fail. */
#define kv_clearerr() (kv_errbuf[0] = 0)

/* Overflow-checked size arithmetic (stb style). */
static int kv_add_ovf(size_t a, size_t b, size_t *out)
{
    if (a > (size_t)-1 - b) return 1;
    *out = a + b;
    return 0;
}

/* ======================================================================
 * SECTION: allocator
 *
 * All heap memory goes through the handle's kvdb_allocator (default: the
 * KVDB_MALLOC family).  The hooks may be called from any thread that uses
 * the handle, so they must be thread-safe if the handle is shared.
 * ====================================================================== */
static void *kv_def_malloc(void *ctx, size_t n) { (void)ctx; return KVDB_MALLOC(n); }
static void *kv_def_realloc(void *ctx, void *p, size_t n) { (void)ctx; return KVDB_REALLOC(p, n); }
static void kv_def_free(void *ctx, void *p) { (void)ctx; KVDB_FREE(p); }
static const kvdb_allocator kv_default_alloc = { NULL, kv_def_malloc, kv_def_realloc, kv_def_free };

static void *kv_malloc(const kvdb_allocator *a, size_t n) { return a->malloc(a->ctx, n ? n : 1); }
static void *kv_realloc(const kvdb_allocator *a, void *p, size_t n)
{
    return p ? a->realloc(a->ctx, p, n ? n : 1) : a->malloc(a->ctx, n ? n : 1);
}
static void kv_free(const kvdb_allocator *a, void *p)
{
    if (p) a->free(a->ctx, p);
}

/* A growable byte buffer. */
typedef struct kv_buf {
    uint8_t *p;
    size_t len, cap;
} kv_buf;

static int kv_buf_reserve(const kvdb_allocator *a, kv_buf *b, size_t extra)
{
    size_t need, ncap;
    uint8_t *np;
    if (kv_add_ovf(b->len, extra, &need)) return KVDB_ENOMEM;
    if (need <= b->cap) return KVDB_OK;
    ncap = b->cap ? b->cap : 4096;
    while (ncap < need) {
        if (ncap > (size_t)-1 / 2) { ncap = need; break; }
        ncap *= 2;
    }
    np = (uint8_t *)kv_realloc(a, b->p, ncap);
    if (!np) return kv_err(KVDB_ENOMEM, "out of memory growing a buffer to %zu bytes", ncap);
    b->p = np;
    b->cap = ncap;
    return KVDB_OK;
}

/* ======================================================================
 * SECTION: file layer (POSIX)
 *
 * The only place the engine touches the operating system.  Each function
 * maps errno to a kvdb code (ENOSPC/EDQUOT -> KVDB_EFULL, ENOENT ->
 * KVDB_NOTFOUND on open, EWOULDBLOCK on lock -> KVDB_ELOCKED, anything else
 * -> KVDB_EIO) and leaves a message naming the file.
 *
 * Locking uses flock(2): its locks belong to the open file description, so
 * a second open of the same file in the same process conflicts as it would
 * from another process (fcntl locks would not).
 * ====================================================================== */
typedef struct px_file {
    int fd;
    kv_mutex mu_size;  /* write, truncate, reserve: reserve's look at the
                          size and extension to it must not cut a write that
                          lands in between (it runs on the background thread
                          while the writer appends) */
    char path[1];      /* NUL-terminated, allocated to size */
} px_file;

static int px_errno_rc(int e)
{
    if (e == ENOSPC
#ifdef EDQUOT
        || e == EDQUOT
#endif
    )
        return KVDB_EFULL;
    if (e == ENOMEM) return KVDB_ENOMEM;
    return KVDB_EIO;
}

static int px_open(void *ctx, const char *path, unsigned flags, kvdb_file **out)
{
    int oflags = (flags & KVDB_VFS_RDONLY) ? O_RDONLY : O_RDWR;
    int fd;
    size_t n = strlen(path);
    px_file *f;
    (void)ctx;
    *out = NULL;
    if (flags & KVDB_VFS_CREATE) oflags |= O_CREAT;
    if (flags & KVDB_VFS_EXCL) oflags |= O_EXCL;
#ifdef O_CLOEXEC
    oflags |= O_CLOEXEC;
#endif
    do fd = open(path, oflags, 0644);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT) return kv_err(KVDB_NOTFOUND, "%s: no such file", path);
        if (e == EEXIST) return kv_err(KVDB_EBUSY, "%s: file exists", path);
        return kv_err(px_errno_rc(e), "%s: cannot open: %s", path, strerror(e));
    }
    f = (px_file *)malloc(sizeof *f + n);
    if (!f) {
        close(fd);
        return kv_err(KVDB_ENOMEM, "%s: out of memory", path);
    }
    f->fd = fd;
    kv_mutex_init(&f->mu_size);
    memcpy(f->path, path, n + 1);
    *out = (kvdb_file *)f;
    return KVDB_OK;
}

static int px_close(void *ctx, kvdb_file *file)
{
    px_file *f = (px_file *)file;
    int rc = KVDB_OK;
    (void)ctx;
    if (close(f->fd) != 0 && errno != EINTR)
        rc = kv_err(KVDB_EIO, "%s: close: %s", f->path, strerror(errno));
    kv_mutex_free(&f->mu_size);
    free(f);
    return rc;
}

static int px_read(void *ctx, kvdb_file *file, uint64_t off, void *buf, size_t n)
{
    px_file *f = (px_file *)file;
    uint8_t *p = (uint8_t *)buf;
    (void)ctx;
    while (n > 0) {
        ssize_t r = pread(f->fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return kv_err(KVDB_EIO, "%s: read at %llu: %s", f->path, (unsigned long long)off, strerror(errno));
        }
        if (r == 0) return kv_err(KVDB_EIO, "%s: short read at %llu", f->path, (unsigned long long)off);
        p += r;
        off += (uint64_t)r;
        n -= (size_t)r;
    }
    return KVDB_OK;
}

static int px_write(void *ctx, kvdb_file *file, uint64_t off, const void *buf, size_t n)
{
    px_file *f = (px_file *)file;
    const uint8_t *p = (const uint8_t *)buf;
    int rc = KVDB_OK;
    (void)ctx;
    kv_lock(&f->mu_size);
    while (n > 0) {
        ssize_t r = pwrite(f->fd, p, n, (off_t)off);
        if (r < 0) {
            int e = errno;
            if (e == EINTR) continue;
            rc = kv_err(px_errno_rc(e), "%s: write at %llu: %s", f->path, (unsigned long long)off, strerror(e));
            break;
        }
        p += r;
        off += (uint64_t)r;
        n -= (size_t)r;
    }
    kv_unlock(&f->mu_size);
    return rc;
}

static int px_sync(void *ctx, kvdb_file *file)
{
    px_file *f = (px_file *)file;
    int r;
    (void)ctx;
#if defined(__APPLE__) && defined(F_FULLFSYNC)
    r = fcntl(f->fd, F_FULLFSYNC);
    if (r != 0) r = fsync(f->fd);
#elif defined(_POSIX_SYNCHRONIZED_IO) && _POSIX_SYNCHRONIZED_IO > 0
    r = fdatasync(f->fd);
#else
    r = fsync(f->fd);
#endif
    if (r != 0) return kv_err(px_errno_rc(errno), "%s: sync: %s", f->path, strerror(errno));
    return KVDB_OK;
}

static int px_size(void *ctx, kvdb_file *file, uint64_t *out)
{
    px_file *f = (px_file *)file;
    struct stat st;
    (void)ctx;
    if (fstat(f->fd, &st) != 0) return kv_err(KVDB_EIO, "%s: stat: %s", f->path, strerror(errno));
    *out = (uint64_t)st.st_size;
    return KVDB_OK;
}

static int px_truncate(void *ctx, kvdb_file *file, uint64_t size)
{
    px_file *f = (px_file *)file;
    int r;
    (void)ctx;
    kv_lock(&f->mu_size);
    do r = ftruncate(f->fd, (off_t)size);
    while (r != 0 && errno == EINTR);
    kv_unlock(&f->mu_size);
    if (r != 0) return kv_err(px_errno_rc(errno), "%s: truncate to %llu: %s", f->path, (unsigned long long)size, strerror(errno));
    return KVDB_OK;
}

static int px_lock(void *ctx, kvdb_file *file, int exclusive)
{
    px_file *f = (px_file *)file;
    int r;
    (void)ctx;
    do r = flock(f->fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB);
    while (r != 0 && errno == EINTR);
    if (r != 0) {
        if (errno == EWOULDBLOCK)
            return kv_err(KVDB_ELOCKED, "%s: locked by another handle or process", f->path);
        return kv_err(KVDB_EIO, "%s: lock: %s", f->path, strerror(errno));
    }
    return KVDB_OK;
}

#ifndef KVDB_NO_MMAP
static int px_map(void *ctx, kvdb_file *file, uint64_t len, const void **out)
{
    px_file *f = (px_file *)file;
    void *p;
    (void)ctx;
    if (len > (uint64_t)(size_t)-1) return kv_err(KVDB_ENOMEM, "%s: mapping too large", f->path);
    p = mmap(NULL, (size_t)len, PROT_READ, MAP_SHARED, f->fd, 0);
    if (p == MAP_FAILED) return kv_err(KVDB_ENOMEM, "%s: mmap of %llu bytes: %s", f->path, (unsigned long long)len, strerror(errno));
    *out = p;
    return KVDB_OK;
}

static int px_unmap(void *ctx, kvdb_file *file, const void *p, uint64_t len)
{
    (void)ctx;
    (void)file;
    munmap((void *)(uintptr_t)p, (size_t)len);
    return KVDB_OK;
}
#endif

static int px_remove(void *ctx, const char *path)
{
    (void)ctx;
    if (unlink(path) != 0) {
        if (errno == ENOENT) return KVDB_NOTFOUND;
        return kv_err(KVDB_EIO, "%s: remove: %s", path, strerror(errno));
    }
    return KVDB_OK;
}

static int px_rename(void *ctx, const char *from, const char *to)
{
    (void)ctx;
    if (rename(from, to) != 0) return kv_err(px_errno_rc(errno), "rename %s to %s: %s", from, to, strerror(errno));
    return KVDB_OK;
}

static int px_sync_dir(void *ctx, const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    int fd, rc = KVDB_OK;
    (void)ctx;
    if (!slash) strcpy(dir, ".");
    else if (slash == path) strcpy(dir, "/");
    else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) return kv_err(KVDB_EINVAL, "%s: path too long", path);
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    fd = open(dir, O_RDONLY);
    if (fd < 0) return kv_err(KVDB_EIO, "%s: open directory: %s", dir, strerror(errno));
    if (fsync(fd) != 0 && errno != EINVAL) rc = kv_err(KVDB_EIO, "%s: sync directory: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

#ifndef KVDB_NO_PREALLOC
/* Space ahead of the log's end, so a commit's fdatasync has no size
 * change to journal: on ext4 76 us for a 172-byte write + fdatasync
 * instead of 183-205 us for an append.  The file is extended sparse
 * (ftruncate), not allocated (posix_fallocate): the syncs cost the same,
 * and an allocation holds the inode's lock, which the writer's next
 * write(2) waits for, for up to 0.6 ms (measured while appending 2 GiB:
 * the longest write 0.2-0.3 ms with ftruncate, 0.6-2.4 ms with
 * posix_fallocate).  Disk full then shows at the write, as without. */
static int px_reserve(void *ctx, kvdb_file *file, uint64_t size)
{
    px_file *f = (px_file *)file;
    struct stat st;
    int r, e = 0;
    (void)ctx;
    kv_lock(&f->mu_size);
    if (fstat(f->fd, &st) != 0) {
        e = errno;
    } else if ((uint64_t)st.st_size < size) {
        do r = ftruncate(f->fd, (off_t)size);
        while (r != 0 && errno == EINTR);
        if (r != 0) e = errno;
    }
    kv_unlock(&f->mu_size);
    if (e) return kv_err(px_errno_rc(e), "%s: reserve %llu bytes: %s", f->path, (unsigned long long)size, strerror(e));
    return KVDB_OK;
}
#define PX_RESERVE px_reserve
#else
#define PX_RESERVE NULL
#endif

static int px_random(void *ctx, void *buf, size_t n)
{
    int fd = open("/dev/urandom", O_RDONLY);
    uint8_t *p = (uint8_t *)buf;
    (void)ctx;
    if (fd >= 0) {
        while (n > 0) {
            ssize_t r = read(fd, p, n);
            if (r <= 0) {
                if (r < 0 && errno == EINTR) continue;
                break;
            }
            p += r;
            n -= (size_t)r;
        }
        close(fd);
    }
    if (n > 0) { /* no /dev/urandom: mix time, pid and addresses */
        uint64_t s = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)buf;
        while (n > 0) {
            s = XXH3_64bits_withSeed(&s, sizeof s, (uint64_t)clock());
            *p++ = (uint8_t)s;
            n--;
        }
    }
    return KVDB_OK;
}

static const kvdb_vfs kv_posix_vfs = {
    NULL, px_open, px_close, px_read, px_write, px_sync, px_size, px_truncate, px_lock,
#ifndef KVDB_NO_MMAP
    px_map, px_unmap,
#else
    NULL, NULL,
#endif
    px_remove, px_rename, px_sync_dir, px_random, PX_RESERVE
};

const kvdb_vfs *kvdb_vfs_posix(void) { return &kv_posix_vfs; }

/* ======================================================================
 * SECTION: file layer (memory), for KVDB_INMEMORY
 *
 * A "file" that is a heap buffer.  map() hands out the current buffer; when
 * a write or map needs more room a bigger buffer is allocated and the old
 * one lives on, frozen, until the last mapping of it is released -- readers
 * of old snapshots only ever read bytes that were copied.  Where mmap
 * exists the first block is a 64 GiB (64-bit) reservation of address space
 * (MAP_NORESERVE: memory is used only as it is written), so the buffer
 * never moves and no write pauses to copy; otherwise a growth copies the
 * buffer (capacity doubles: amortised O(1) per byte, but one write pays).
 * ====================================================================== */
typedef struct mf_block {
    uint8_t *p;
    size_t cap;
    unsigned maps;          /* live mappings of this block */
    int reserved;           /* p is an address-space reservation (mmap) */
    struct mf_block *next;  /* older blocks still mapped */
} mf_block;

typedef struct mf_file {
    const kvdb_allocator *al;
    mf_block *cur;          /* the block writes go to */
    mf_block *old;          /* retired blocks with live mappings */
    uint64_t size;
} mf_file;

static int mf_open(void *ctx, const char *path, unsigned flags, kvdb_file **out)
{
    const kvdb_allocator *al = (const kvdb_allocator *)ctx;
    mf_file *f = (mf_file *)kv_malloc(al, sizeof *f);
    (void)path;
    (void)flags;
    if (!f) return kv_err(KVDB_ENOMEM, "in-memory database: out of memory");
    memset(f, 0, sizeof *f);
    f->al = al;
    *out = (kvdb_file *)f;
    return KVDB_OK;
}

static void mf_block_free(mf_file *f, mf_block *b)
{
#ifndef KVDB_NO_MMAP
    if (b->reserved) munmap(b->p, b->cap);
    else
#endif
        kv_free(f->al, b->p);
    kv_free(f->al, b);
}

/* Try to reserve a big block of address space for the whole file. */
static int mf_reserve(mf_file *f, uint64_t need)
{
#if !defined(KVDB_NO_MMAP) && defined(MAP_ANONYMOUS) && defined(MAP_NORESERVE)
    size_t cap = sizeof(size_t) >= 8 ? (size_t)1 << 36 : (size_t)1 << 28;
    mf_block *b;
    void *p;
    if (need > cap / 2) return 0;
    p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return 0;
    b = (mf_block *)kv_malloc(f->al, sizeof *b);
    if (!b) {
        munmap(p, cap);
        return 0;
    }
    b->p = (uint8_t *)p;
    b->cap = cap;
    b->maps = 0;
    b->reserved = 1;
    b->next = NULL;
    f->cur = b;
    return 1;
#else
    (void)f;
    (void)need;
    return 0;
#endif
}

static int mf_close(void *ctx, kvdb_file *file)
{
    mf_file *f = (mf_file *)file;
    (void)ctx;
    while (f->old) {
        mf_block *b = f->old;
        f->old = b->next;
        mf_block_free(f, b);
    }
    if (f->cur) mf_block_free(f, f->cur);
    kv_free(f->al, f);
    return KVDB_OK;
}

/* Make the current block hold at least need bytes. */
static int mf_grow(mf_file *f, uint64_t need)
{
    mf_block *b;
    size_t cap;
    if (f->cur && f->cur->cap >= need) return KVDB_OK;
    if (need > (uint64_t)((size_t)-1 / 2)) return kv_err(KVDB_EFULL, "in-memory database: too large");
    if (!f->cur && mf_reserve(f, need)) return KVDB_OK;
    cap = f->cur ? f->cur->cap : 4096;
    while (cap < need) cap *= 2;
    b = (mf_block *)kv_malloc(f->al, sizeof *b);
    if (!b) return kv_err(KVDB_ENOMEM, "in-memory database: out of memory");
    b->p = (uint8_t *)kv_malloc(f->al, cap);
    if (!b->p) {
        kv_free(f->al, b);
        return kv_err(KVDB_ENOMEM, "in-memory database: out of memory for %zu bytes", cap);
    }
    b->cap = cap;
    b->maps = 0;
    b->reserved = 0;
    b->next = NULL;
    if (f->cur) {
        memcpy(b->p, f->cur->p, (size_t)f->size);
        if (f->cur->maps) {
            f->cur->next = f->old;
            f->old = f->cur;
        } else {
            mf_block_free(f, f->cur);
        }
    }
    f->cur = b;
    return KVDB_OK;
}

static int mf_read(void *ctx, kvdb_file *file, uint64_t off, void *buf, size_t n)
{
    mf_file *f = (mf_file *)file;
    (void)ctx;
    if (off > f->size || n > f->size - off) return kv_err(KVDB_EIO, "in-memory database: read past the end");
    if (n) memcpy(buf, f->cur->p + off, n);
    return KVDB_OK;
}

static int mf_write(void *ctx, kvdb_file *file, uint64_t off, const void *buf, size_t n)
{
    mf_file *f = (mf_file *)file;
    int rc;
    (void)ctx;
    if (off > UINT64_MAX - n) return kv_err(KVDB_EFULL, "in-memory database: too large");
    rc = mf_grow(f, off + n);
    if (rc) return rc;
    if (off > f->size) memset(f->cur->p + f->size, 0, (size_t)(off - f->size));
    memcpy(f->cur->p + off, buf, n);
    if (off + n > f->size) f->size = off + n;
    return KVDB_OK;
}

static int mf_sync(void *ctx, kvdb_file *file) { (void)ctx; (void)file; return KVDB_OK; }

static int mf_size(void *ctx, kvdb_file *file, uint64_t *out)
{
    (void)ctx;
    *out = ((mf_file *)file)->size;
    return KVDB_OK;
}

static int mf_truncate(void *ctx, kvdb_file *file, uint64_t size)
{
    mf_file *f = (mf_file *)file;
    int rc;
    (void)ctx;
    if (size > f->size) {
        rc = mf_grow(f, size);
        if (rc) return rc;
        memset(f->cur->p + f->size, 0, (size_t)(size - f->size));
    }
    f->size = size;
    return KVDB_OK;
}

static int mf_lock(void *ctx, kvdb_file *file, int exclusive) { (void)ctx; (void)file; (void)exclusive; return KVDB_OK; }

static int mf_map(void *ctx, kvdb_file *file, uint64_t len, const void **out)
{
    mf_file *f = (mf_file *)file;
    int rc;
    (void)ctx;
    rc = mf_grow(f, len ? len : 1);
    if (rc) return rc;
    f->cur->maps++;
    *out = f->cur->p;
    return KVDB_OK;
}

static int mf_unmap(void *ctx, kvdb_file *file, const void *p, uint64_t len)
{
    mf_file *f = (mf_file *)file;
    mf_block **pp;
    (void)ctx;
    (void)len;
    if (f->cur && f->cur->p == p) {
        f->cur->maps--;
        return KVDB_OK;
    }
    for (pp = &f->old; *pp; pp = &(*pp)->next) {
        if ((*pp)->p == p) {
            mf_block *b = *pp;
            if (--b->maps == 0) {
                *pp = b->next;
                mf_block_free(f, b);
            }
            return KVDB_OK;
        }
    }
    return kv_err(KVDB_EINVAL, "in-memory database: unmap of an unknown block");
}

static int mf_none(void *ctx, const char *path) { (void)ctx; (void)path; return KVDB_OK; }
static int mf_rename(void *ctx, const char *a, const char *b) { (void)ctx; (void)a; (void)b; return KVDB_OK; }

static const kvdb_vfs kv_mem_vfs_proto = {
    NULL, mf_open, mf_close, mf_read, mf_write, mf_sync, mf_size, mf_truncate, mf_lock,
    mf_map, mf_unmap, mf_none, mf_rename, mf_none, px_random, NULL
};

/* ======================================================================
 * SECTION: log format
 *
 * Encoding and verification of the header and records described at the
 * top of this file.  Invariants:
 *   1. No length read from the file is used before it is checked against
 *      the bytes that exist (lg_parse).
 *   2. A record verifies only at the offset it was written at (the checksum
 *      seed includes the offset).
 * ====================================================================== */
#define LG_MAGIC "\x89KVDB\r\n\x1a"
#define LG_HDR 64
#define LG_REC 16          /* record header */
#define LG_COMMIT_LEN 24   /* COMMIT payload */
#define LG_SEAL (LG_REC + LG_COMMIT_LEN) /* a whole COMMIT record, such as a seal */
enum { LG_PUT = 1, LG_DEL = 2, LG_COMMIT = 3 };

typedef struct lg_rec {
    uint64_t off;
    uint8_t type;
    uint32_t klen, vlen;
    uint64_t size;         /* LG_REC + klen + vlen */
} lg_rec;

static uint64_t kv_hash(uint64_t seed, const void *key, size_t klen)
{
    uint64_t h = XXH3_64bits_withSeed(key, klen, seed);
#ifdef KVDB_TEST_HASH_BITS
    h &= ~(uint64_t)0 << (64 - (KVDB_TEST_HASH_BITS));
#endif
    return h;
}

static uint64_t lg_checksum(uint64_t seed, uint64_t off, const uint8_t *rec, uint64_t size)
{
    return XXH3_64bits_withSeed(rec + 8, (size_t)(size - 8), seed ^ off);
}

/* Parse a record header found at off with avail bytes of log from off on.
 * Returns KVDB_OK, or KVDB_ECORRUPT if the header is impossible or the
 * record does not fit. */
static int lg_parse(const uint8_t *p, uint64_t off, uint64_t avail, lg_rec *r)
{
    if (avail < LG_REC) return KVDB_ECORRUPT;
    r->off = off;
    r->type = p[8];
    r->klen = kv_ld16(p + 10);
    r->vlen = kv_ld32(p + 12);
    if (p[9] != 0) return KVDB_ECORRUPT;
    switch (r->type) {
    case LG_PUT:
        if (r->klen == 0 || r->vlen > KVDB_MAX_VALUE) return KVDB_ECORRUPT;
        break;
    case LG_DEL:
        if (r->klen == 0 || r->vlen != 0) return KVDB_ECORRUPT;
        break;
    case LG_COMMIT:
        if (r->klen != 0 || r->vlen != LG_COMMIT_LEN) return KVDB_ECORRUPT;
        break;
    default:
        return KVDB_ECORRUPT;
    }
    r->size = (uint64_t)LG_REC + r->klen + r->vlen;
    if (r->size > avail) return KVDB_ECORRUPT;
    return KVDB_OK;
}

static void lg_put_header(uint8_t *p, uint8_t type, uint32_t klen, uint32_t vlen)
{
    p[8] = type;
    p[9] = 0;
    kv_st16(p + 10, (uint16_t)klen);
    kv_st32(p + 12, vlen);
}

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
 * the system: 7.5 ms for the sorted runs of 10M keys), or the reserving
 * of log space ahead of the writer (see kv_log_reserve).  Done in order,
 * so an unmap comes before its file's close, and a reserve before the
 * close of its file. */
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

/* ======================================================================
 * SECTION: mapping and record access
 *
 * A kv_rd describes what one reader may see: the mapping (or none, then
 * reads go through the file layer), the log length of its version, and
 * for the writer the records of its uncommitted transaction, which lie at
 * file offsets [wb_off, wb_off + wb_len) but are still in its buffer.
 *
 * rd_match() is the one place a record found through the index is checked:
 * bounds, type, full key, and checksum.  Every probe whose tag matches goes
 * through it, so a damaged record is reported as KVDB_ECORRUPT whether or
 * not its key happens to be the one asked for -- except that a write
 * replacing or deleting the record of its own key does not hash the value
 * it discards (deleterandom at 1M keys +17%, deleting a 1 MiB value 116 us
 * -> 1.7 us; a key whose value is damaged can be overwritten or deleted).
 * ====================================================================== */
typedef struct kv_rd {
    kvdb *db;
    kvdb_file *file;       /* the log file its offsets refer to */
    const uint8_t *base;   /* mapping, or NULL */
    uint64_t end;          /* readable log bytes */
    const uint8_t *wb;     /* writer's pending records, or NULL */
    uint64_t wb_off, wb_len;
} kv_rd;

static void rd_init(kv_rd *r, kvdb *db, const kv_ver *v)
{
    r->db = db;
    r->file = v->log->f;
    r->base = v->map ? v->map->base : NULL;
    r->end = v->end;
    r->wb = NULL;
    r->wb_off = r->wb_len = 0;
}

/* A matched record: pointers are into the map or the pending buffer; in
 * pread mode val is NULL and the value is at file offset voff. */
typedef struct kv_hit {
    const uint8_t *val;
    uint64_t voff;
    uint32_t vlen;
    uint64_t size;         /* whole record */
} kv_hit;

static int kv_map_ensure(kvdb *db, uint64_t need);
static void ck_maybe(kvdb *db, uint64_t end);

/* Streaming check of a record through the file layer (pread mode). */
static int rd_verify_pread(const kv_rd *r, const lg_rec *rec, const uint8_t *hdr)
{
    uint8_t buf[1024];
    XXH3_state_t st;
    uint64_t pos = rec->off + LG_REC, end = rec->off + rec->size;
    int rc;
    XXH3_INITSTATE(&st);
    XXH3_64bits_reset_withSeed(&st, r->db->seed ^ rec->off);
    XXH3_64bits_update(&st, hdr + 8, 8);
    while (pos < end) {
        size_t n = (size_t)(end - pos < sizeof buf ? end - pos : sizeof buf);
        rc = r->db->vfs->read(r->db->vfs->ctx, r->file, pos, buf, n);
        if (rc) return rc;
        XXH3_64bits_update(&st, buf, n);
        pos += n;
    }
    if (XXH3_64bits_digest(&st) != kv_ld64(hdr))
        return kv_err(KVDB_ECORRUPT, "%s: record at offset %llu fails its checksum", r->db->path, (unsigned long long)rec->off);
    return KVDB_OK;
}

/* Compare the key of the record at off (pread mode), chunk by chunk. */
static int rd_keycmp_pread(const kv_rd *r, uint64_t off, const uint8_t *key, size_t klen)
{
    uint8_t buf[512];
    size_t done = 0;
    while (done < klen) {
        size_t n = klen - done < sizeof buf ? klen - done : sizeof buf;
        int rc = r->db->vfs->read(r->db->vfs->ctx, r->file, off + LG_REC + done, buf, n);
        if (rc) return rc;
        if (memcmp(buf, key + done, n) != 0) return 0;
        done += n;
    }
    return 1;
}

/* Is the record at off a PUT of key?  1 yes (hit filled), 0 no, or an
 * error.  A record the answer rests on is verified in full: every one
 * whose key is not the one asked for, and, when the caller wants the value
 * (hit), the one whose key is.  A caller without hit -- a write that
 * replaces or deletes the record, or asks only whether it is there -- gets
 * 1 for a record whose header and key are sane and equal to key without
 * its value being hashed (its value is not used, and deleting a 1 GiB
 * value then does not hash 1 GiB twice). */
static int rd_match(const kv_rd *r, uint64_t off, const void *key, size_t klen, kv_hit *hit)
{
    kvdb *db = r->db;
    const uint8_t *p;
    uint8_t hdr[LG_REC];
    lg_rec rec;
    int eq, rc;

    if (r->wb && off >= r->wb_off) { /* the writer's own pending record */
        uint64_t rel = off - r->wb_off;
        if (rel > r->wb_len || lg_parse(r->wb + rel, off, r->wb_len - rel, &rec) != KVDB_OK)
            return kv_err(KVDB_ECORRUPT, "index points into the pending transaction at a bad offset");
        p = r->wb + rel;
        if (rec.type != LG_PUT) return kv_err(KVDB_ECORRUPT, "index points at a non-PUT pending record");
        if (rec.klen != klen || memcmp(p + LG_REC, key, klen) != 0) return 0;
        if (hit) {
            hit->val = p + LG_REC + rec.klen;
            hit->voff = off + LG_REC + rec.klen;
            hit->vlen = rec.vlen;
            hit->size = rec.size;
        }
        return 1;
    }
    if (off < LG_HDR || off >= r->end)
        return kv_err(KVDB_ECORRUPT, "%s: index points outside the log (offset %llu)", db->path, (unsigned long long)off);
    if (r->base) {
        p = r->base + off;
        if (lg_parse(p, off, r->end - off, &rec) != KVDB_OK || rec.type != LG_PUT)
            goto damaged;
        eq = rec.klen == klen && memcmp(p + LG_REC, key, klen) == 0;
        if ((!eq || hit) && kv_ld64(p) != lg_checksum(db->seed, off, p, rec.size))
            goto damaged;
        if (eq && hit) {
            hit->val = p + LG_REC + rec.klen;
            hit->voff = off + LG_REC + rec.klen;
            hit->vlen = rec.vlen;
            hit->size = rec.size;
        }
        return eq;
    }
    rc = db->vfs->read(db->vfs->ctx, r->file, off, hdr, r->end - off < LG_REC ? (size_t)(r->end - off) : LG_REC);
    if (rc) return rc;
    if (lg_parse(hdr, off, r->end - off, &rec) != KVDB_OK || rec.type != LG_PUT)
        goto damaged;
    eq = rec.klen == klen ? rd_keycmp_pread(r, off, (const uint8_t *)key, klen) : 0;
    if (eq < 0) return eq;
    if (!eq || hit) {
        rc = rd_verify_pread(r, &rec, hdr);
        if (rc) return rc;
    }
    if (eq && hit) {
        hit->val = NULL;
        hit->voff = off + LG_REC + rec.klen;
        hit->vlen = rec.vlen;
        hit->size = rec.size;
    }
    return eq;
damaged:
    return kv_err(KVDB_ECORRUPT, "%s: record at offset %llu is damaged", db->path, (unsigned long long)off);
}

/* Prefetch the record at off of a mapped log: its first three cache lines
 * (a 16-byte key and 100-byte value span three lines half the time; the
 * checksum then streams through the rest).  A hint: off may be anything.
 * A macro, not a function: GCC 12 takes a function whose only effect is a
 * prefetch for a const function and drops every call to it, prefetches
 * and all (a 1M-key scan ran at half speed that way). */
#define RD_PREFETCH(r, off) do { \
        const kv_rd *r_ = (r); \
        uint64_t o_ = (off); \
        if (r_->base && o_ < r_->end) { \
            KV_PREFETCH(r_->base + o_); \
            if (r_->end - o_ > 64) KV_PREFETCH(r_->base + o_ + 64); \
            if (r_->end - o_ > 128) KV_PREFETCH(r_->base + o_ + 128); \
        } \
    } while (0)

/* Size of the record at off (the index holds only offsets of records that
 * rd_match has accepted, so this is a plain header read). */
static int rd_size(const kv_rd *r, uint64_t off, uint64_t *size)
{
    uint8_t hdr[LG_REC];
    const uint8_t *p;
    int rc;
    if (r->wb && off >= r->wb_off) p = r->wb + (off - r->wb_off);
    else if (r->base) p = r->base + off;
    else {
        rc = r->db->vfs->read(r->db->vfs->ctx, r->file, off, hdr, LG_REC);
        if (rc) return rc;
        p = hdr;
    }
    *size = (uint64_t)LG_REC + kv_ld16(p + 10) + kv_ld32(p + 12);
    return KVDB_OK;
}

/* ======================================================================
 * SECTION: copy-on-write hash index
 *
 * Maps a key's 64-bit hash to the offset of its newest PUT record.
 *
 * Shape.  A radix tree over the 32-bit tag (the hash's top 32 bits, 0
 * replaced by 1 so that 0 can mean "empty slot").  Inner nodes have 64
 * children and consume 6 tag bits each; there are at most HIX_LEVELS of
 * them (30 bits).  Leaves are open-addressing tables (linear probing,
 * backward-shift deletion, no tombstones) of (tag, offset) pairs, 8 to 128
 * slots, at most 7/8 full.  A leaf whose "local depth" is d covers 2^(6-d)
 * consecutive children of its parent, all pointing at it.
 *
 * Growth, one leaf at a time.  A full leaf moves up to the next size.  A
 * leaf that covers several children (d < 6) splits in two on its next tag
 * bit (d+1) once it holds HIX_SPLIT_MAX (28) entries, so shared leaves stay
 * at 32 slots or fewer; a leaf that covers a single child (d == 6) grows to
 * 128 slots and is then pushed down under a new inner node and split there
 * (its halves, still crowded, split again on their next insert).  Only a
 * leaf at the deepest level grows past 128 slots (more than 112 keys
 * sharing 30 hash bits: only in KVDB_TEST_HASH_BITS builds).  Deleting
 * shrinks a leaf below 1/4 full, merges buddy leaves whose sum is at most
 * HIX_SPLIT_MAX/2, and folds an inner node whose only child is one leaf.
 * Every step touches O(128) entries: no operation rehashes the table.
 * Why small shared leaves: a commit copies every leaf it touches, and a
 * batch of 1000 random puts touches about 1000 leaves; copying 28-entry
 * leaves instead of 112-entry ones made batched puts into 10M keys 1.3x
 * faster (tools/kvdb-bench: 840 -> 650 ns a put) and took 5% less memory.
 *
 * Copy on write.  Every node records the write generation that allocated
 * it.  A writer may change nodes of its own generation in place; any other
 * node is copied first (hix_own_*), its parent made to point at the copy,
 * and the original is "retired": it stays valid for the versions that can
 * still see it and is freed when they are gone.  Readers never lock.
 *
 * Layout for speed.  A child pointer carries the kind and size of the node
 * in its low 4 bits (nodes are 16-byte aligned): 0 for an inner node, else
 * a code for the leaf's capacity.  A lookup therefore never reads a node
 * header: it reads one child slot per level and then the leaf's slots,
 * each a packed 12-byte (tag, offset) pair, so a probe usually touches one
 * cache line.  Leaf capacities are 8, 16, 24, 32, 40, 48, 56, 64, 80, 96,
 * 112, 128 slots (homed by multiply-shift, so no power of two is needed):
 * the halves of a split leaf land in a leaf sized for them, at most 3/4
 * full, not in one twice as large.
 *
 * Memory: 12 bytes a slot, leaves 50%..87% full, plus a 32-byte header per
 * leaf and 544 bytes per inner node, whatever the key length; with up to
 * 1/16 more in freed nodes kept for the next commit to reuse, 17 to 22
 * bytes per key as measured between 20K and 10M keys (16.9 at 10M).
 * ====================================================================== */
#define HIX_LEVELS 5
#define HIX_FAN 64
#define HIX_LEAF_MIN 8
#define HIX_LEAF_SLOTS 128
#define HIX_NCAPS 12
#define HIX_CODE_BIG 15     /* leaf above 128 slots: read its header */
#define HIX_SLOT 12
#define HIX_SPLIT_MAX 28    /* a shared leaf (local depth < 6) splits at this count */

/* Leaf capacity by pointer code (code - 1).  The first eight are the
 * codes of the first sidecar format and keep their numbers; hix_ladder
 * is the same set in ascending order. */
static const uint16_t hix_caps[HIX_NCAPS] = { 8, 16, 32, 64, 80, 96, 112, 128, 24, 40, 48, 56 };
static const uint16_t hix_ladder[HIX_NCAPS] = { 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128 };

#define HIX_NODE(r) ((hix_node *)((r) & ~(uintptr_t)15))
#define HIX_CODE(r) ((unsigned)((r) & 15u))

struct hix_node {
    uint64_t gen;          /* write generation that allocated it */
    hix_node *link;        /* retired or free list */
    uint32_t count;        /* leaf: entries */
    uint32_t cap;          /* leaf: slots; 0: inner node */
    uint8_t level;         /* inner: depth (root 0) */
    uint8_t ldepth;        /* leaf: local depth in its parent, 0..6 */
    uint8_t code;          /* leaf: its pointer code; inner: 0 */
    uint8_t adj;           /* bytes from the allocation to the node */
    uint8_t pad_[4];
};                         /* 32 bytes: keeps the slots 16-byte aligned */

typedef struct hix_inner {
    hix_node h;
    hix_ref child[HIX_FAN];
} hix_inner;

typedef struct hix_w {     /* a writer's context */
    kvdb *db;
    hix_pool *pool;        /* where its nodes come from and go back to */
    uint64_t gen;
    hix_node *retired;     /* nodes replaced, for the base version, */
    hix_node *retired_tail;/* ...the first one retired (the list's tail), */
    uint64_t nretired;     /* ...how many, */
    uint64_t retired_min;  /* ...and the lowest gen among them */
    const kv_rd *rd;       /* to compare keys */
} hix_w;

static uint8_t *hix_slots(const hix_node *l) { return (uint8_t *)(uintptr_t)(l + 1); }
static uint32_t hix_stag(const uint8_t *s)
{
    uint32_t t;
    memcpy(&t, s, 4);
    return t;
}
static uint64_t hix_soff(const uint8_t *s)
{
    uint64_t o;
    memcpy(&o, s + 4, 8);
    return o;
}
static void hix_sset(uint8_t *s, uint32_t tag, uint64_t off)
{
    memcpy(s, &tag, 4);
    memcpy(s + 4, &off, 8);
}
static void hix_ssetoff(uint8_t *s, uint64_t off) { memcpy(s + 4, &off, 8); }

static uint32_t hix_tag(uint64_t h)
{
    uint32_t t = (uint32_t)(h >> 32);
    return t ? t : 1;
}
static unsigned hix_idx(uint32_t tag, unsigned level) { return (tag >> (26 - 6 * level)) & 63u; }
static uint32_t hix_home(uint32_t tag, uint32_t cap)
{
    return (uint32_t)(((uint64_t)(uint32_t)(tag * 0x9E3779B1u) * cap) >> 32);
}
static size_t hix_size(uint32_t cap) { return cap ? sizeof(hix_node) + (size_t)cap * HIX_SLOT : sizeof(hix_inner); }
/* A leaf sharing its parent's child slots with others splits early: a
 * commit copies every leaf it touches, so small shared leaves keep a
 * batch of random puts cheap; a leaf alone in its slot grows to 128 slots
 * before an inner node (544 bytes) is spent on it. */
static int hix_crowded(const hix_node *l) { return l->ldepth < 6 && l->count >= HIX_SPLIT_MAX; }
static int hix_full(const hix_node *l) { return l->count + 1 > l->cap - l->cap / 8 || hix_crowded(l); }
static hix_ref hix_mkref(const hix_node *n) { return (hix_ref)n | n->code; }

static unsigned hix_code_of(uint32_t cap)
{
    unsigned i;
    for (i = 0; i < HIX_NCAPS; i++)
        if (hix_caps[i] == cap) return i + 1;
    return HIX_CODE_BIG;
}

/* The next capacity up the ladder (doubling past 128). */
static uint32_t hix_next_cap(uint32_t cap)
{
    unsigned i;
    for (i = 0; i + 1 < HIX_NCAPS; i++)
        if (hix_ladder[i] == cap) return hix_ladder[i + 1];
    return cap * 2;
}

/* The smallest capacity holding n entries at most 3/4 full. */
static uint32_t hix_cap_for(uint32_t n)
{
    unsigned i;
    uint32_t cap;
    for (i = 0; i < HIX_NCAPS; i++)
        if ((uint64_t)n * 4 <= (uint64_t)hix_ladder[i] * 3) return hix_ladder[i];
    cap = HIX_LEAF_SLOTS;
    while (n + 1 > cap - cap / 8) cap *= 2;
    return cap;
}

/* The free list for nodes of cap slots (0: inner), or NULL. */
static hix_node **hix_free_list(hix_pool *pl, uint32_t cap, unsigned **count)
{
    unsigned c = cap ? hix_code_of(cap) : 0;
    if (c == HIX_CODE_BIG) return NULL;
    *count = &pl->n_free[c];
    return &pl->free_nodes[c];
}

/* A node of cap slots (0: inner) owned by w, or NULL (KVDB_ENOMEM).  A
 * leaf's slots are cleared unless the caller is about to copy over them. */
static hix_node *hix_alloc_x(hix_w *w, uint32_t cap, int clear)
{
    kvdb *db = w->db;
    hix_pool *pl = w->pool;
    unsigned *nfree;
    hix_node **fl = hix_free_list(pl, cap, &nfree), *n = NULL;
    size_t sz = hix_size(cap);
    uint8_t adj = 0;
    if (fl && *fl) {
        n = *fl;
        *fl = n->link;
        (*nfree)--;
        adj = n->adj;
        pl->free_bytes -= sz + adj;
    } else {
        uint8_t *p = (uint8_t *)kv_malloc(&db->al, sz);
        if (p && ((uintptr_t)p & 15)) { /* the allocator gave less than 16-byte alignment */
            kv_free(&db->al, p);
            p = (uint8_t *)kv_malloc(&db->al, sz + 16);
            if (p) adj = (uint8_t)(16 - ((uintptr_t)p & 15));
        }
        if (!p) {
            kv_err(KVDB_ENOMEM, "out of memory for an index node");
            return NULL;
        }
        n = (hix_node *)(void *)(p + adj);
        pl->bytes += sz + adj;
    }
    memset(n, 0, sizeof *n);
    n->gen = w->gen;
    n->cap = cap;
    n->adj = adj;
    if (cap) {
        n->code = (uint8_t)hix_code_of(cap);
        if (clear) memset(hix_slots(n), 0, (size_t)cap * HIX_SLOT);
    }
    return n;
}

static hix_node *hix_alloc(hix_w *w, uint32_t cap) { return hix_alloc_x(w, cap, 1); }

static void hix_free_node(kvdb *db, hix_pool *pl, hix_node *n)
{
    unsigned *nfree;
    hix_node **fl = hix_free_list(pl, n->cap, &nfree);
    size_t sz = hix_size(n->cap);
    /* Keep freed nodes for reuse -- a commit frees about as many as the
     * next one copies (a batch of 1000 random puts copies about 1000
     * leaves) -- up to 1/16 of the index plus 16 KiB in all. */
    if (fl && pl->free_bytes + sz + n->adj <= (pl->bytes >> 4) + 16384) {
        n->link = *fl;
        *fl = n;
        (*nfree)++;
        pl->free_bytes += sz + n->adj;
        return;
    }
    pl->bytes -= hix_size(n->cap) + n->adj;
    kv_free(&db->al, (uint8_t *)n - n->adj);
}

/* A node leaves the writer's tree: free it if only this writer could see
 * it, else retire it for the versions that still can. */
static void hix_drop(hix_w *w, hix_node *n)
{
    if (n->adj == 0xFF) return; /* inside the sidecar mapping: lives until close */
    if (n->gen == w->gen) {
        hix_free_node(w->db, w->pool, n);
    } else {
        if (!w->retired) w->retired_tail = n;
        if (!w->nretired++ || n->gen < w->retired_min) w->retired_min = n->gen;
        n->link = w->retired;
        w->retired = n;
    }
}

/* Free every node of tree r allocated by generation gen (0: all nodes). */
static void hix_free_tree(kvdb *db, hix_pool *pl, hix_ref r, uint64_t gen)
{
    hix_node *n = HIX_NODE(r);
    if (!r || n->adj == 0xFF || (gen && n->gen != gen)) return;
    if (n->cap == 0) {
        hix_inner *in = (hix_inner *)n;
        unsigned i;
        for (i = 0; i < HIX_FAN; i++)
            if (i == 0 || in->child[i] != in->child[i - 1]) hix_free_tree(db, pl, in->child[i], gen);
    }
    hix_free_node(db, pl, n);
}

static void hix_leaf_add(hix_node *l, uint32_t tag, uint64_t off)
{
    uint8_t *s = hix_slots(l);
    uint32_t i = hix_home(tag, l->cap);
    while (hix_stag(s + (size_t)i * HIX_SLOT)) i = i + 1 == l->cap ? 0 : i + 1;
    hix_sset(s + (size_t)i * HIX_SLOT, tag, off);
    l->count++;
}

/* Remove slot i (backward-shift deletion: no tombstones). */
static void hix_leaf_remove(hix_node *l, uint32_t i)
{
    uint8_t *s = hix_slots(l);
    uint32_t cap = l->cap, j = i;
    for (;;) {
        uint32_t t, k, dki, dkj;
        j = j + 1 == cap ? 0 : j + 1;
        t = hix_stag(s + (size_t)j * HIX_SLOT);
        if (!t) break;
        k = hix_home(t, cap);
        dki = i >= k ? i - k : i + cap - k;
        dkj = j >= k ? j - k : j + cap - k;
        if (dki < dkj) { /* slot i lies on j's probe path: move j back */
            memcpy(s + (size_t)i * HIX_SLOT, s + (size_t)j * HIX_SLOT, HIX_SLOT);
            i = j;
        }
    }
    memset(s + (size_t)i * HIX_SLOT, 0, HIX_SLOT);
    l->count--;
}

/* Find key in leaf l of cap slots: 1 and *slot, 0 if absent (and *slot =
 * the empty slot that ended the search, where an insert goes), or an
 * error. */
static int hix_leaf_find(const kv_rd *r, const hix_node *l, uint32_t cap, uint32_t tag, const void *key,
                         size_t klen, uint32_t *slot, kv_hit *hit)
{
    const uint8_t *s = hix_slots(l);
    uint32_t i = hix_home(tag, cap), t;
    while ((t = hix_stag(s + (size_t)i * HIX_SLOT)) != 0) {
        if (t == tag) {
            int rc = rd_match(r, hix_soff(s + (size_t)i * HIX_SLOT), key, klen, hit);
            if (rc) {
                if (rc > 0) *slot = i;
                return rc;
            }
        }
        i = i + 1 == cap ? 0 : i + 1;
    }
    *slot = i;
    return 0;
}

/* Look key up in the tree at root: 1 (hit filled), 0, or an error.  Reads
 * one child slot per level and no node header. */
static int hix_get(const kv_rd *r, hix_ref root, uint64_t h, const void *key, size_t klen, kv_hit *hit)
{
    uint32_t tag = hix_tag(h), slot, cap;
    unsigned level = 0, code;
    hix_ref c = root;
    do c = ((const hix_inner *)HIX_NODE(c))->child[hix_idx(tag, level++)];
    while (!HIX_CODE(c));
    code = HIX_CODE(c);
    cap = code <= HIX_NCAPS ? hix_caps[code - 1] : HIX_NODE(c)->cap;
    return hix_leaf_find(r, HIX_NODE(c), cap, tag, key, klen, &slot, hit);
}

/* Prefetching for a batch of lookups (a commit applies its records in
 * groups of HIX_PF_MAX).  hix_pf_path() walks the n hashes h[] down the
 * tree at root together, one level per pass, prefetching each node's
 * header (copy-on-write reads its gen) and the child slot or leaf home slot
 * the next step reads, so the misses of a pass overlap instead of each
 * level of each key waiting for the one before; it leaves each key's leaf
 * in cur[].  hix_pf_recs(), called a group later when those leaves have
 * arrived, prefetches the records of slots whose tag matches (the keys an
 * overwrite or delete compares) and clears cur[] as it goes (a function
 * that only prefetched would be dropped: see RD_PREFETCH).  The tree must not change meanwhile: the
 * writer passes its base version, whose nodes stay allocated until the
 * commit is over.  Hints only: nothing outside the tree's nodes is read. */
#define HIX_PF_MAX 16
static void hix_pf_path(hix_ref root, const uint64_t *h, unsigned n, hix_ref *cur)
{
    unsigned i, level, inner = n;
    assert(n <= HIX_PF_MAX);
    for (i = 0; i < n; i++) cur[i] = root;
    for (level = 0; inner && level < HIX_LEVELS; level++) {
        inner = 0;
        for (i = 0; i < n; i++) {
            uint32_t tag = hix_tag(h[i]);
            if (HIX_CODE(cur[i])) continue;
            cur[i] = ((const hix_inner *)HIX_NODE(cur[i]))->child[hix_idx(tag, level)];
            KV_PREFETCH(HIX_NODE(cur[i]));
            if (!HIX_CODE(cur[i])) {
                KV_PREFETCH(&((const hix_inner *)HIX_NODE(cur[i]))->child[hix_idx(tag, level + 1)]);
                inner++;
            } else if (HIX_CODE(cur[i]) <= HIX_NCAPS) {
                uint32_t cap = hix_caps[HIX_CODE(cur[i]) - 1];
                KV_PREFETCH(hix_slots(HIX_NODE(cur[i])) + (size_t)hix_home(tag, cap) * HIX_SLOT);
            }
        }
    }
}

static void hix_pf_recs(const kv_rd *r, const uint64_t *h, unsigned n, hix_ref *cur)
{
    unsigned i;
    for (i = 0; i < n; i++) {
        uint32_t tag = hix_tag(h[i]), cap, k, t, probes = 0;
        hix_ref c = cur[i];
        const uint8_t *s;
        cur[i] = 0;
        if (!r->base || HIX_CODE(c) == 0 || HIX_CODE(c) > HIX_NCAPS) continue;
        cap = hix_caps[HIX_CODE(c) - 1];
        s = hix_slots(HIX_NODE(c));
        /* (a key present is nearly always within a few slots of its home;
         * a new key's search may run on far longer: not worth a hint) */
        for (k = hix_home(tag, cap); probes < 8 && (t = hix_stag(s + (size_t)k * HIX_SLOT)) != 0;
             k = k + 1 == cap ? 0 : k + 1, probes++) {
            if (t == tag) RD_PREFETCH(r, hix_soff(s + (size_t)k * HIX_SLOT));
        }
    }
}

static void hix_set_range(hix_inner *in, unsigned idx, unsigned ldepth, hix_ref r)
{
    unsigned span = 1u << (6 - ldepth), base = idx & ~(span - 1), i;
    for (i = 0; i < span; i++) in->child[base + i] = r;
}

/* Make the inner node at *slot writable. */
static hix_inner *hix_own_inner(hix_w *w, hix_ref *slot)
{
    hix_node *n = HIX_NODE(*slot), *c;
    if (n->gen == w->gen) return (hix_inner *)n;
    c = hix_alloc(w, 0);
    if (!c) return NULL;
    c->level = n->level;
    memcpy(((hix_inner *)c)->child, ((hix_inner *)n)->child, sizeof((hix_inner *)c)->child);
    *slot = (hix_ref)c;
    hix_drop(w, n);
    return (hix_inner *)c;
}

/* Make leaf l, child idx of the writable inner node in, writable. */
static hix_node *hix_own_leaf(hix_w *w, hix_inner *in, unsigned idx, hix_node *l)
{
    hix_node *c;
    if (l->gen == w->gen) return l;
    c = hix_alloc_x(w, l->cap, 0);
    if (!c) return NULL;
    c->count = l->count;
    c->ldepth = l->ldepth;
    memcpy(hix_slots(c), hix_slots(l), (size_t)l->cap * HIX_SLOT);
    hix_set_range(in, idx, l->ldepth, hix_mkref(c));
    hix_drop(w, l);
    return c;
}

/* A new leaf of cap slots holding the entries of src (half < 0), or those
 * whose bit bitpos of their child index at level is half. */
static hix_node *hix_leaf_from(hix_w *w, const hix_node *src, uint32_t cap, int half, unsigned level, unsigned bitpos)
{
    hix_node *n = hix_alloc(w, cap);
    const uint8_t *s = hix_slots(src);
    uint32_t i;
    if (!n) return NULL;
    for (i = 0; i < src->cap; i++, s += HIX_SLOT) {
        uint32_t t = hix_stag(s);
        if (!t) continue;
        if (half >= 0 && (int)((hix_idx(t, level) >> bitpos) & 1u) != half) continue;
        hix_leaf_add(n, t, hix_soff(s));
    }
    return n;
}

/* Split leaf l, which covers child idx of in with local depth d, in two
 * on the next tag bit.  l itself is not changed (it may be shared). */
static int hix_split(hix_w *w, hix_inner *in, unsigned idx, hix_node *l, unsigned d)
{
    unsigned level = in->h.level, bitpos = 5 - d;
    unsigned span = 1u << (6 - d), base = idx & ~(span - 1), i;
    const uint8_t *s = hix_slots(l);
    uint32_t hi = 0, t;
    hix_node *a, *b;
    for (i = 0; i < l->cap; i++)
        if ((t = hix_stag(s + (size_t)i * HIX_SLOT)) != 0 && ((hix_idx(t, level) >> bitpos) & 1u)) hi++;
    a = hix_leaf_from(w, l, hix_cap_for(l->count - hi), 0, level, bitpos);
    if (!a) return KVDB_ENOMEM;
    b = hix_leaf_from(w, l, hix_cap_for(hi), 1, level, bitpos);
    if (!b) {
        hix_free_node(w->db, w->pool, a);
        return KVDB_ENOMEM;
    }
    a->ldepth = b->ldepth = (uint8_t)(d + 1);
    for (i = 0; i < span / 2; i++) in->child[base + i] = hix_mkref(a);
    for (; i < span; i++) in->child[base + i] = hix_mkref(b);
    hix_drop(w, l);
    return KVDB_OK;
}

/* Make room in the full leaf l (child idx of the writable node in). */
static int hix_expand(hix_w *w, hix_inner *in, unsigned idx, hix_node *l)
{
    unsigned level = in->h.level;
    hix_inner *ni;
    unsigned i;
    int rc;
    if (!hix_crowded(l) && (l->cap < HIX_LEAF_SLOTS || (l->ldepth == 6 && level == HIX_LEVELS - 1))) {
        hix_node *n = hix_leaf_from(w, l, hix_next_cap(l->cap), -1, 0, 0);
        if (!n) return KVDB_ENOMEM;
        n->ldepth = l->ldepth;
        hix_set_range(in, idx, l->ldepth, hix_mkref(n));
        hix_drop(w, l);
        return KVDB_OK;
    }
    if (l->ldepth < 6) return hix_split(w, in, idx, l, l->ldepth);
    /* Push down: a new inner node takes l's place, and l is split into it
     * as if it covered all 64 children there (local depth 0). */
    ni = (hix_inner *)hix_alloc(w, 0);
    if (!ni) return KVDB_ENOMEM;
    ni->h.level = (uint8_t)(level + 1);
    for (i = 0; i < HIX_FAN; i++) ni->child[i] = hix_mkref(l);
    rc = hix_split(w, ni, 0, l, 0);
    if (rc) {
        hix_free_node(w->db, w->pool, &ni->h);
        return rc;
    }
    in->child[idx] = (hix_ref)ni;
    return KVDB_OK;
}

/* Insert or replace: *old = offset of the record replaced, or 0.  key
 * NULL: the caller knows the key is not in the tree (no log reads). */
static int hix_put(hix_w *w, hix_ref *rootp, uint64_t h, const void *key, size_t klen, uint64_t off, uint64_t *old)
{
    uint32_t tag = hix_tag(h), slot;
    hix_inner *in = hix_own_inner(w, rootp);
    int rc;
    *old = 0;
    if (!in) return KVDB_ENOMEM;
    for (;;) {
        unsigned idx = hix_idx(tag, in->h.level);
        hix_node *c;
        if (!HIX_CODE(in->child[idx])) {
            in = hix_own_inner(w, &in->child[idx]);
            if (!in) return KVDB_ENOMEM;
            continue;
        }
        c = HIX_NODE(in->child[idx]);
        rc = key ? hix_leaf_find(w->rd, c, c->cap, tag, key, klen, &slot, NULL) : 0;
        if (rc < 0) return rc;
        if (rc == 0 && hix_full(c)) {
            rc = hix_expand(w, in, idx, c);
            if (rc) return rc;
            continue;
        }
        c = hix_own_leaf(w, in, idx, c);
        if (!c) return KVDB_ENOMEM;
        if (rc == 1) {
            uint8_t *s = hix_slots(c) + (size_t)slot * HIX_SLOT;
            *old = hix_soff(s);
            hix_ssetoff(s, off);
        } else if (key) { /* the copy has the slot the search ended at */
            hix_sset(hix_slots(c) + (size_t)slot * HIX_SLOT, tag, off);
            c->count++;
        } else {
            hix_leaf_add(c, tag, off);
        }
        return KVDB_OK;
    }
}

/* Delete: *old = offset of the record removed; KVDB_NOTFOUND if absent
 * (the path to its leaf may then have been copied, unchanged).  The key is
 * compared once, in the leaf before it is copied. */
static int hix_del(hix_w *w, hix_ref *rootp, uint64_t h, const void *key, size_t klen, uint64_t *old)
{
    uint32_t tag = hix_tag(h), slot;
    hix_inner *path[HIX_LEVELS];
    unsigned pidx[HIX_LEVELS], depth = 0, idx;
    hix_inner *in;
    hix_node *l;
    int rc;
    in = hix_own_inner(w, rootp);
    if (!in) return KVDB_ENOMEM;
    for (;;) {
        idx = hix_idx(tag, in->h.level);
        if (HIX_CODE(in->child[idx])) break;
        path[depth] = in;
        pidx[depth] = idx;
        depth++;
        in = hix_own_inner(w, &in->child[idx]);
        if (!in) return KVDB_ENOMEM;
    }
    l = HIX_NODE(in->child[idx]);
    rc = hix_leaf_find(w->rd, l, l->cap, tag, key, klen, &slot, NULL);
    if (rc <= 0) return rc < 0 ? rc : KVDB_NOTFOUND;
    l = hix_own_leaf(w, in, idx, l); /* a copy keeps every slot where it was */
    if (!l) return KVDB_ENOMEM;
    *old = hix_soff(hix_slots(l) + (size_t)slot * HIX_SLOT);
    hix_leaf_remove(l, slot);

    /* Shrink a sparse leaf. */
    if (l->cap > HIX_LEAF_MIN && l->count * 4 < l->cap && hix_cap_for(l->count) < l->cap) {
        hix_node *n = hix_leaf_from(w, l, hix_cap_for(l->count), -1, 0, 0);
        if (n) {
            n->ldepth = l->ldepth;
            hix_set_range(in, idx, l->ldepth, hix_mkref(n));
            hix_drop(w, l);
            l = n;
        }
    }
    /* Merge with a small buddy. */
    if (l->ldepth > 0) {
        unsigned d = l->ldepth, span = 1u << (6 - d), base = idx & ~(span - 1);
        hix_ref br = in->child[base ^ span];
        hix_node *b = HIX_NODE(br);
        if (HIX_CODE(br) && b->ldepth == d && l->count + b->count <= HIX_SPLIT_MAX / 2) {
            hix_node *m = hix_alloc(w, hix_cap_for(l->count + b->count));
            if (m) {
                const hix_node *src[2];
                unsigned k;
                uint32_t i;
                src[0] = l;
                src[1] = b;
                for (k = 0; k < 2; k++) {
                    const uint8_t *s = hix_slots(src[k]);
                    for (i = 0; i < src[k]->cap; i++, s += HIX_SLOT)
                        if (hix_stag(s)) hix_leaf_add(m, hix_stag(s), hix_soff(s));
                }
                m->ldepth = (uint8_t)(d - 1);
                hix_set_range(in, idx, d - 1, hix_mkref(m));
                hix_drop(w, l);
                hix_drop(w, b);
                l = m;
            }
        }
    }
    /* Fold an inner node that holds a single leaf into its parent. */
    if (l->ldepth == 0 && depth > 0) {
        hix_inner *p = path[depth - 1];
        l->ldepth = 6;
        p->child[pidx[depth - 1]] = hix_mkref(l);
        hix_drop(w, &in->h);
    }
    return KVDB_OK;
}

/* ======================================================================
 * SECTION: mappings and versions
 *
 * Invariants:
 *   1. db->oldest .. db->cur is the list of versions, oldest first, in
 *      increasing gen; db->pub (what new readers get) is on it, at or before
 *      db->cur.  Versions after pub wait for a sync to be published.
 *   2. A node is visible in the versions whose gen lies between its own gen
 *      (birth) and the gen of the last version before the one that replaced
 *      it.  A replaced ("retired") node hangs on the list of the newest
 *      version that can see it.
 *   3. A version before pub with no readers is dead.  Its retired nodes
 *      move to the nearest older surviving version if that one can see them
 *      (its gen >= the node's gen), and are freed otherwise -- so garbage
 *      made while a snapshot is held is freed soon unless the snapshot
 *      itself can see it, and each node moves at most once per surviving
 *      version.  When all or none of them are seen, the list moves at once;
 *      otherwise the dead version waits on db->draining, off the version
 *      list, and commits sort its nodes a bounded slice at a time (256 plus
 *      twice what they retired themselves), each node against the newest
 *      survivor older than the dead version at that moment -- survivors
 *      only go away, so a late sort frees no node too early.  (Sorting all
 *      at once, the commit after the end of a snapshot held while another
 *      one older survived paid 0.27 us a node: 2-4 ms for 10K nodes.)
 *   4. Only the writer (or open/close, single-threaded) allocates or frees
 *      index nodes, versions and maps, and only it touches retired lists,
 *      so those need no lock; readers only count references under mu_ver.
 *   5. Freeing is paced: nodes that become unreachable wait on a list and
 *      each commit frees a bounded slice of it (1024 plus twice what it
 *      retired itself), so the end of a long snapshot -- whose garbage can
 *      be most of the index -- never lands on a single commit.
 * Lock order: mu_write, then mu_sync, then mu_ver; mu_ck before mu_sync.
 * ====================================================================== */
static kv_log *kv_log_new(kvdb *db, kvdb_file *f)
{
    kv_log *lg = (kv_log *)kv_malloc(&db->al, sizeof *lg);
    if (!lg) {
        kv_err(KVDB_ENOMEM, "out of memory");
        return NULL;
    }
    lg->f = f;
    lg->refs = 1;
    lg->bytes = 0; /* set as it is written; decides who closes it (ck_job) */
    return lg;
}

static void kv_job_run(kvdb *db, const kv_job *j)
{
    if (j->kind == KV_JOB_UNMAP) {
        db->vfs->unmap(db->vfs->ctx, j->f, j->base, j->len);
    } else if (j->kind == KV_JOB_CLOSE) {
        db->vfs->close(db->vfs->ctx, j->f);
    } else if (j->kind == KV_JOB_FREE) {
        kv_free(&db->al, (void *)(uintptr_t)j->base);
    } else { /* only ever on the thread (kv_log_reserve) */
        int rc = db->vfs->reserve(db->vfs->ctx, j->f, j->len);
        kv_lock(&db->mu_ck);
        db->rsv_done = j->seq;
        db->rsv_done_cap = j->len;
        db->rsv_done_rc = rc;
        kv_unlock(&db->mu_ck);
    }
}

static void ck_job(kvdb *db, int big, int kind, kvdb_file *f, const void *base, uint64_t len);
#ifndef KVDB_NO_THREADS
static void *ck_main(void *arg);

/* Queue a copy of *j0 for the thread, starting it if need be: 0 if that
 * cannot be (out of memory, no thread, or close has stopped it). */
static int ck_enqueue(kvdb *db, const kv_job *j0)
{
    kv_job *j = (kv_job *)kv_malloc(&db->al, sizeof *j);
    if (!j) return 0;
    kv_lock(&db->mu_ck);
    if (!db->ck_stop && !db->ck_started && pthread_create(&db->ck_thread, NULL, ck_main, db) == 0)
        db->ck_started = 1;
    if (db->ck_stop || !db->ck_started) {
        kv_unlock(&db->mu_ck);
        kv_free(&db->al, j);
        return 0;
    }
    *j = *j0;
    j->next = NULL;
    if (!db->jobs_tail) db->jobs_tail = &db->jobs;
    *db->jobs_tail = j;
    db->jobs_tail = &j->next;
    kv_broadcast(&db->cv_ck);
    kv_unlock(&db->mu_ck);
    return 1;
}
#endif

static void kv_log_release(kvdb *db, kv_log *lg)
{
    if (lg && --lg->refs == 0) {
        ck_job(db, lg->bytes >= KVDB_CK_MIN_BYTES, KV_JOB_CLOSE, lg->f, NULL, 0);
        kv_free(&db->al, lg);
    }
}

static void kv_map_release(kvdb *db, kv_map *m)
{
    if (m && --m->refs == 0) {
        ck_job(db, m->log->bytes >= KVDB_CK_MIN_BYTES, KV_JOB_UNMAP, m->log->f, m->base, m->len);
        kv_log_release(db, m->log);
        kv_free(&db->al, m);
    }
}

/* Mapping size for need bytes: on 64-bit hosts 1 TiB of address space
 * (it costs no memory), so a growing log is never remapped and no commit
 * pays for unmapping; elsewhere doubling from 1 MiB.  Under
 * ThreadSanitizer doubling from 4 GiB: TSan aborts the process when the
 * kernel places a mapping outside the ranges it shadows, and a 512 GiB one
 * (kv_map_cover halving a 1 TiB one that failed) landed there once in the
 * threads test ("mmap at bad address"). */
#if defined(__SANITIZE_THREAD__)
#define KV_MAP_FIRST ((uint64_t)1 << 32)
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KV_MAP_FIRST ((uint64_t)1 << 32)
#endif
#endif
#ifndef KV_MAP_FIRST
#define KV_MAP_FIRST (sizeof(size_t) >= 8 ? ((uint64_t)1 << 40) : ((uint64_t)1 << 20))
#endif

static uint64_t kv_map_cap(const kvdb *db, uint64_t need)
{
    uint64_t cap = db->inmem ? ((uint64_t)1 << 16) : KV_MAP_FIRST;
    while (cap < need) cap *= 2;
    return cap;
}

/* Make *mp, a mapping of lg, cover need bytes (the writer before it
 * writes, or the compactor for its new file).  The mapping is sized ahead
 * (doubling), so remaps are rare; old mappings live on in the versions
 * that use them.  If a file cannot be mapped, *use_map goes to 0 and its
 * readers go through the file layer. */
static int kv_map_cover(kvdb *db, kv_log *lg, kv_map **mp, int *use_map, uint64_t need)
{
    const void *p;
    kv_map *m;
    uint64_t cap;
    int rc;
    if (!*use_map || (*mp && (*mp)->len >= need)) return KVDB_OK;
    cap = kv_map_cap(db, need);
    rc = db->vfs->map(db->vfs->ctx, lg->f, cap, &p);
    while (rc && !db->inmem && cap / 2 >= need && cap / 2 >= ((uint64_t)1 << 20)) {
        cap /= 2; /* address space may be limited (32-bit, ulimit -v, sanitizers) */
        rc = db->vfs->map(db->vfs->ctx, lg->f, cap, &p);
    }
    if (rc) {
        if (db->inmem) return rc;
        *use_map = 0; /* keep going through pread */
        kv_map_release(db, *mp);
        *mp = NULL;
        return KVDB_OK;
    }
    m = (kv_map *)kv_malloc(&db->al, sizeof *m);
    if (!m) {
        db->vfs->unmap(db->vfs->ctx, lg->f, p, cap);
        return kv_err(KVDB_ENOMEM, "out of memory");
    }
    m->base = (const uint8_t *)p;
    m->len = cap;
    m->refs = 1;
    m->log = lg;
    lg->refs++;
    kv_map_release(db, *mp);
    *mp = m;
    return KVDB_OK;
}

static int kv_map_ensure(kvdb *db, uint64_t need)
{
    return kv_map_cover(db, db->log, &db->map, &db->use_map, need);
}

static void cp_reap_trees(kvdb *db);

static kv_ver *ver_alloc(kvdb *db)
{
    kv_ver *v = db->free_ver;
    if (v) db->free_ver = v->next;
    else if (!(v = (kv_ver *)kv_malloc(&db->al, sizeof *v))) {
        kv_err(KVDB_ENOMEM, "out of memory");
        return NULL;
    }
    memset(v, 0, sizeof *v);
    return v;
}

static void ver_free(kvdb *db, kv_ver *v)
{
    v->next = db->free_ver;
    db->free_ver = v;
}

static void ver_free_retired(kvdb *db, hix_node *n)
{
    while (n) {
        hix_node *next = n->link;
        hix_free_node(db, &db->pool, n);
        n = next;
    }
}

/* All of v's retired nodes to the zombies, at once: nobody sees them. */
static void ver_zombify(kvdb *db, kv_ver *v)
{
    v->retired_tail->link = db->zombies;
    db->zombies = v->retired;
    db->nzombies += v->nretired;
    v->retired = NULL;
}

/* Free dead versions (writer only; see invariant 3). */
static void ver_reclaim(kvdb *db)
{
    kv_ver *dead = NULL, *v, *next, *alive = NULL;
    kv_lock(&db->mu_ver);
    for (v = db->oldest; v && v != db->pub; v = next) {
        next = v->next;
        if (v->refs) {
            alive = v;
            continue;
        }
        if (alive) alive->next = next;
        else db->oldest = next;
        v->next = dead;
        v->heir = alive;
        dead = v;
    }
    kv_unlock(&db->mu_ver);
    while (dead) {
        kv_ver *heir = dead->heir;
        v = dead;
        dead = dead->next;
        if (v->retired && (!heir || heir->gen < v->retired_min)) ver_zombify(db, v); /* the heir sees none */
        kv_map_release(db, v->map);
        kv_log_release(db, v->log);
        if (v->retired) { /* the heir may see some: sorted a slice at a time (ver_drain) */
            v->map = NULL;
            v->log = NULL;
            v->next = NULL;
            if (db->draining) db->draining_tail->next = v;
            else db->draining = v;
            db->draining_tail = v;
        } else {
            ver_free(db, v);
        }
    }
    if (db->dtrees) cp_reap_trees(db);
}

/* Sort up to max retired nodes of dead versions waiting on db->draining
 * (invariant 3): each goes to the newest surviving version older than its
 * dead one if that one can see it, else to the zombies. */
static void ver_drain(kvdb *db, uint64_t max)
{
    while (max && db->draining) {
        kv_ver *d = db->draining, *heir = NULL, *v;
        /* (writer only: the list's links and gens are the writer's) */
        for (v = db->oldest; v && v->gen < d->gen; v = v->next) heir = v;
        if (!heir || heir->gen < d->retired_min) ver_zombify(db, d); /* it sees none of them */
        while (max && d->retired) {
            hix_node *n = d->retired;
            d->retired = n->link;
            d->nretired--;
            max--;
            if (heir->gen >= n->gen) {
                if (!heir->retired) heir->retired_tail = n;
                if (!heir->nretired++ || n->gen < heir->retired_min) heir->retired_min = n->gen;
                n->link = heir->retired;
                heir->retired = n;
            } else {
                n->link = db->zombies;
                db->zombies = n;
                db->nzombies++;
            }
        }
        if (d->retired) break;
        db->draining = d->next;
        ver_free(db, d);
    }
}

/* Free up to max waiting nodes (invariant 5): replaced nodes, then the
 * nodes of whole old indexes, whose inner nodes hand on their children. */
static void ver_free_zombies(kvdb *db, uint64_t max)
{
    while (max && db->zombies) {
        hix_node *n = db->zombies;
        db->zombies = n->link;
        db->nzombies--;
        hix_free_node(db, &db->pool, n);
        max--;
    }
    while (max && db->dtree_nodes) {
        hix_node *n = db->dtree_nodes;
        db->dtree_nodes = n->link;
        if (n->cap == 0) {
            hix_inner *in = (hix_inner *)n;
            unsigned i;
            for (i = 0; i < HIX_FAN; i++) {
                hix_node *c = HIX_NODE(in->child[i]);
                if ((i == 0 || in->child[i] != in->child[i - 1]) && c->adj != 0xFF) {
                    c->link = db->dtree_nodes;
                    db->dtree_nodes = c;
                }
            }
        }
        hix_free_node(db, &db->pool, n);
        max--;
    }
}

static kv_ver *ver_acquire(kvdb *db)
{
    kv_ver *v;
    kv_lock(&db->mu_ver);
    v = db->pub;
    v->refs++;
    kv_unlock(&db->mu_ver);
    return v;
}

static void ver_release(kvdb *db, kv_ver *v)
{
    kv_lock(&db->mu_ver);
    v->refs--;
    kv_unlock(&db->mu_ver);
}

/* Publish the newest version covering no more than upto bytes. */
static void ver_publish_upto(kvdb *db, uint64_t upto)
{
    kv_ver *v;
    kv_lock(&db->mu_ver);
    v = db->pub;
    while (v->next && v->next->end <= upto) v = v->next;
    db->pub = v;
    kv_unlock(&db->mu_ver);
}

/* ======================================================================
 * SECTION: write set (SmallMap)
 *
 * Key -> position of the key's newest record in the transaction buffer.
 * Positions are stored plus one, so 0 marks an empty table slot.  Up to
 * WS_INLINE keys: inline array, linear scan, no allocation.  Beyond: an
 * open-addressing table at most half full, kept between transactions
 * unless it grew past 4096 slots.  Keys are compared in the buffer.
 * ====================================================================== */
static int ws_keyeq(const uint8_t *wb, uint64_t pos, const void *key, size_t klen)
{
    return kv_ld16(wb + pos + 10) == klen && memcmp(wb + pos + LG_REC, key, klen) == 0;
}

static uint32_t ws_home(uint64_t h, uint32_t cap)
{
    return (uint32_t)((h * 0x9E3779B97F4A7C15ull) >> 40) & (cap - 1);
}

static ws_ent *ws_find(kv_ws *ws, const uint8_t *wb, uint64_t h, const void *key, size_t klen)
{
    uint32_t i, mask;
    if (!ws->promoted) {
        for (i = 0; i < ws->n; i++)
            if (ws->inl[i].h == h && ws_keyeq(wb, ws->inl[i].pos - 1, key, klen)) return &ws->inl[i];
        return NULL;
    }
    mask = ws->cap - 1;
    for (i = ws_home(h, ws->cap); ws->tab[i].pos; i = (i + 1) & mask)
        if (ws->tab[i].h == h && ws_keyeq(wb, ws->tab[i].pos - 1, key, klen)) return &ws->tab[i];
    return NULL;
}

static void ws_tab_add(ws_ent *tab, uint32_t cap, uint64_t h, uint64_t pos1)
{
    uint32_t i = ws_home(h, cap);
    while (tab[i].pos) i = (i + 1) & (cap - 1);
    tab[i].h = h;
    tab[i].pos = pos1;
}

static int ws_add(kvdb *db, kv_ws *ws, uint64_t h, uint64_t pos)
{
    uint32_t i;
    if (!ws->promoted && ws->n < WS_INLINE) {
        ws->inl[ws->n].h = h;
        ws->inl[ws->n].pos = pos + 1;
        ws->n++;
        return KVDB_OK;
    }
    if (!ws->promoted || (ws->n + 1) * 2 > ws->cap) {
        uint32_t ncap = ws->promoted ? ws->cap * 2 : (ws->cap ? ws->cap : 32);
        ws_ent *nt;
        if (ws->promoted && ncap < ws->cap) return kv_err(KVDB_ENOMEM, "transaction too large");
        nt = (ws_ent *)kv_malloc(&db->al, (size_t)ncap * sizeof *nt);
        if (!nt) return kv_err(KVDB_ENOMEM, "out of memory for the write set");
        memset(nt, 0, (size_t)ncap * sizeof *nt);
        if (ws->promoted) {
            for (i = 0; i < ws->cap; i++)
                if (ws->tab[i].pos) ws_tab_add(nt, ncap, ws->tab[i].h, ws->tab[i].pos);
        } else {
            for (i = 0; i < ws->n; i++) ws_tab_add(nt, ncap, ws->inl[i].h, ws->inl[i].pos);
        }
        kv_free(&db->al, ws->tab);
        ws->tab = nt;
        ws->cap = ncap;
        ws->promoted = 1;
    }
    ws_tab_add(ws->tab, ws->cap, h, pos + 1);
    ws->n++;
    return KVDB_OK;
}

static void ws_reset(kvdb *db, kv_ws *ws)
{
    if (ws->promoted) {
        if (ws->cap > 4096) {
            kv_free(&db->al, ws->tab);
            ws->tab = NULL;
            ws->cap = 0;
        } else {
            memset(ws->tab, 0, (size_t)ws->cap * sizeof *ws->tab);
        }
    }
    ws->promoted = 0;
    ws->n = 0;
}

/* ======================================================================
 * SECTION: sorted index
 *
 * Key order is kept apart from the hash index and built lazily, so that a
 * put pays nothing for it.  A *run* is an immutable array of entries for
 * one range [lo, hi) of the log: for every key written in the range, the
 * offset of its newest record there (a PUT, or a DEL marked as tombstone).
 * Entries are sorted by key (memcmp order, a shorter key first when one is
 * a prefix of the other).
 *
 * Entry format (16 bytes).  A run stores once the common prefix of all its
 * keys, cpl bytes long ("the run prefix").  Each entry holds the 8 key
 * bytes that follow it, [cpl, cpl+8), packed big-endian and zero-padded
 * ("k"), and beside the offset lc = min(klen - cpl, 9).  Within a run,
 * (k, lc) orders two keys exactly unless both have lc = 9 and equal k:
 * equal k with different lc means the shorter key is a prefix of the longer
 * one (its padding matched real 0x00 bytes), equal k and lc < 9 means the
 * same key.  Only in the remaining case is the log read.  Keys such as
 * "0000000000123456" (a long shared prefix) thus compare without the log.
 *
 * Across runs: entries of a run with prefix P and cpl c can be seen from
 * any shallower level m <= c of the same key space -- the "projection":
 * key bytes [m, m+8) are P[m..c) followed by k, and the length beyond m is
 * (c - m) + lc -- with no log read.  Two runs compare at m = the common
 * prefix of their two run prefixes (capped by both cpls); when the run
 * prefixes differ below both cpls, the first projected byte decides.  A
 * merge of two runs encodes the new run at the common level this way, and
 * an iterator keeps one such relation per pair of its sources.  A seek
 * compares the sought key with the run prefix first (before, after, or
 * inside), then (k, lc) in a binary search.
 *
 * Invariants:
 *   1. The shared runs (db->runs) cover [LG_HDR, end of the newest run)
 *      contiguously, oldest first; every range ends at a commit boundary.
 *   2. An iterator over a snapshot ending at E uses the shared runs with
 *      hi <= E and, for the rest, one run built for [covered, E): appended
 *      to the shared list if nothing newer is there, private otherwise (an
 *      older snapshot).  Runs are refcounted under mu_srt and never change.
 *   3. A key's entry in a newer run supersedes its entries in older runs;
 *      a tombstone hides the key.  Tombstones are dropped only when merged
 *      into the run that starts at LG_HDR (nothing older to hide).
 *   4. The shared list is merged like a binary counter: a run absorbs its
 *      successor while that one is at least half its size, so there are
 *      O(log n) runs and each entry is copied O(log n) times.  The run
 *      loaded from the sidecar (mapped, covering the log up to the
 *      checkpoint) is never merged into the heap; the next checkpoint
 *      replaces it.
 *   5. Every key of a run starts with the run prefix (cpl may be shorter
 *      than the keys' true common prefix, never longer).
 * Cost: the first iterator after n new records reads them once in log
 * order (computing the common prefix and the entries as it goes), then
 * radix-sorts on k (O(n)) and orders only groups of equal k by comparison.
 * Memory: 16 bytes per entry plus the prefix once per run.
 *
 * A log range already in key order (one record per key, as a compaction
 * writes it) is recognised after the pass and not sorted: srt_build() over
 * such a range is the way to make its run.
 * ====================================================================== */
#define SRT_DEL ((uint64_t)1 << 63)
#define SRT_LSH 56                              /* lc is bits 56..59 of off */
#define SRT_OFF (((uint64_t)1 << SRT_LSH) - 1)  /* the record offset */
#define SRT_LONG 9u                             /* lc: 9 or more bytes after the prefix */
#define SRT_AT(e) ((e)->off & SRT_OFF)
#define SRT_LC(e) ((unsigned)((e)->off >> SRT_LSH) & 15u)

typedef struct srt_ent {
    uint64_t k;            /* key bytes [cpl, cpl+8), big-endian, zero-padded */
    uint64_t off;          /* offset | min(klen - cpl, 9) << 56 | SRT_DEL */
} srt_ent;

struct srt_run {
    uint64_t lo, hi;       /* log range covered */
    size_t n, cap;         /* entries used, allocated here (0: mapped) */
    size_t cpl;            /* bytes of the run prefix */
    size_t bytes;          /* heap counted in db->srt_bytes */
    unsigned refs;
    const srt_ent *e;      /* n entries, sorted by key, one per key: own[]
                              or, for the run loaded from the sidecar, the
                              mapping (which lives until close) */
    const uint8_t *pfx;    /* the run prefix: after own[cap], or mapped */
    srt_ent own[];
};

/* Up to 8 bytes packed big-endian, zero-padded. */
static uint64_t srt_pack(const uint8_t *k, size_t n)
{
    uint64_t p = 0;
    size_t i;
    if (n >= 8) { /* compilers make this one big-endian load */
        for (i = 0; i < 8; i++) p = (p << 8) | k[i];
        return p;
    }
    for (i = 0; i < n; i++) p = (p << 8) | k[i];
    return n ? p << (8 * (8 - n)) : 0;
}

static size_t srt_lcp(const uint8_t *a, const uint8_t *b, size_t n)
{
    size_t i = 0;
    while (i + 8 <= n) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y) break;
        i += 8;
    }
    while (i < n && a[i] == b[i]) i++;
    return i;
}

static int kv_keycmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c) return c;
    return an < bn ? -1 : an > bn;
}

/* The key of the record at off: a pointer into the mapping or the pending
 * buffer, or read into kb (pread mode).  Bounds are checked. */
static int srt_key(const kv_rd *r, uint64_t off, kv_buf *kb, const uint8_t **key, size_t *klen)
{
    const uint8_t *p;
    uint8_t hdr[LG_REC];
    size_t n;
    int rc;
    if (r->wb && off >= r->wb_off) {
        if (off - r->wb_off + LG_REC > r->wb_len ||
            off - r->wb_off + LG_REC + kv_ld16(r->wb + (off - r->wb_off) + 10) > r->wb_len)
            return kv_err(KVDB_ECORRUPT, "sorted index points past the pending transaction");
        p = r->wb + (off - r->wb_off);
        *klen = kv_ld16(p + 10);
        *key = p + LG_REC;
        return KVDB_OK;
    }
    if (off < LG_HDR || off + LG_REC > r->end)
        return kv_err(KVDB_ECORRUPT, "%s: sorted index points outside the log (offset %llu)", r->db->path,
                      (unsigned long long)off);
    if (r->base) {
        p = r->base + off;
        n = kv_ld16(p + 10);
        if (off + LG_REC + n > r->end) return kv_err(KVDB_ECORRUPT, "%s: record at %llu runs past the log", r->db->path, (unsigned long long)off);
        *klen = n;
        *key = p + LG_REC;
        return KVDB_OK;
    }
    rc = r->db->vfs->read(r->db->vfs->ctx, r->file, off, hdr, LG_REC);
    if (rc) return rc;
    n = kv_ld16(hdr + 10);
    if (off + LG_REC + n > r->end) return kv_err(KVDB_ECORRUPT, "%s: record at %llu runs past the log", r->db->path, (unsigned long long)off);
    kb->len = 0;
    rc = kv_buf_reserve(&r->db->al, kb, n ? n : 1);
    if (rc) return rc;
    rc = r->db->vfs->read(r->db->vfs->ctx, r->file, off + LG_REC, kb->p, n);
    if (rc) return rc;
    *klen = n;
    *key = kb->p;
    return KVDB_OK;
}

/* Comparison context: a reader, two key buffers, the first error. */
typedef struct srt_cx {
    const kv_rd *r;
    kv_buf ka, kb;
    int rc;
} srt_cx;

/* The last resort: the two records' keys from the log. */
static int srt_cmp_log(srt_cx *c, uint64_t a, uint64_t b)
{
    const uint8_t *x = NULL, *y = NULL;
    size_t xn = 0, yn = 0;
    int rc;
    if (a == b) return 0;
    rc = srt_key(c->r, a, &c->ka, &x, &xn);
    if (!rc) rc = srt_key(c->r, b, &c->kb, &y, &yn);
    if (rc) {
        if (!c->rc) c->rc = rc;
        return 0;
    }
    return kv_keycmp(x, xn, y, yn);
}

/* Two entries of one run (or of runs with the same prefix). */
static int srt_cmp(srt_cx *c, const srt_ent *a, const srt_ent *b)
{
    unsigned la, lb;
    if (a->k != b->k) return a->k < b->k ? -1 : 1;
    la = SRT_LC(a);
    lb = SRT_LC(b);
    if (la != lb) return la < lb ? -1 : 1;
    if (la < SRT_LONG) return 0;
    return srt_cmp_log(c, SRT_AT(a), SRT_AT(b));
}

/* A projection: the entries of a run with cpl c seen from level m <= c.
 * d = c - m (capped at 9: beyond that the view no longer changes), h = the
 * run prefix bytes [m, m + min(d, 8)) packed at the top. */
typedef struct srt_prj {
    unsigned d;
    uint64_t h;
} srt_prj;

static void srt_prj_init(srt_prj *p, const uint8_t *pfx, size_t cpl, size_t m)
{
    size_t d = cpl - m;
    p->d = d > SRT_LONG ? SRT_LONG : (unsigned)d;
    p->h = d ? srt_pack(pfx + m, d < 8 ? d : 8) : 0;
}

static uint64_t srt_pk(const srt_prj *p, uint64_t k)
{
    return p->d >= 8 ? p->h : p->d ? p->h | (k >> (8 * p->d)) : k;
}

static unsigned srt_plc(const srt_prj *p, unsigned lc)
{
    unsigned x = p->d + (lc > SRT_LONG ? SRT_LONG : lc);
    return x > SRT_LONG ? SRT_LONG : x;
}

/* An entry re-encoded at the shallower level. */
static srt_ent srt_proj(const srt_prj *p, const srt_ent *e)
{
    srt_ent o;
    o.k = srt_pk(p, e->k);
    o.off = (e->off & ~((uint64_t)15 << SRT_LSH)) | (uint64_t)srt_plc(p, SRT_LC(e)) << SRT_LSH;
    return o;
}

/* How the entries of run x compare with those of run y: both seen from the
 * common prefix of their run prefixes. */
typedef struct srt_rel {
    srt_prj x, y;
} srt_rel;

static void srt_rel_init(srt_rel *r, const uint8_t *px, size_t cx, const uint8_t *py, size_t cy)
{
    size_t m = srt_lcp(px, py, cx < cy ? cx : cy);
    srt_prj_init(&r->x, px, cx, m);
    srt_prj_init(&r->y, py, cy, m);
}

static int srt_cmp_rel(srt_cx *c, const srt_rel *rl, const srt_ent *a, const srt_ent *b)
{
    uint64_t x = srt_pk(&rl->x, a->k), y = srt_pk(&rl->y, b->k);
    unsigned la, lb;
    if (x != y) return x < y ? -1 : 1;
    la = srt_plc(&rl->x, SRT_LC(a));
    lb = srt_plc(&rl->y, SRT_LC(b));
    if (la != lb) return la < lb ? -1 : 1;
    if (la < SRT_LONG) return 0;
    return srt_cmp_log(c, SRT_AT(a), SRT_AT(b));
}

/* Order for building a run: by key, and the newest record first. */
static int srt_cmp_build(srt_cx *c, const srt_ent *a, const srt_ent *b)
{
    int d = srt_cmp(c, a, b);
    if (d) return d;
    return SRT_AT(a) > SRT_AT(b) ? -1 : SRT_AT(a) < SRT_AT(b);
}

/* Bottom-up merge sort of n entries by srt_cmp_build (tmp has room for n). */
static void srt_msort(srt_cx *c, srt_ent *e, srt_ent *tmp, size_t n)
{
    size_t w, i;
    srt_ent *src = e, *dst = tmp;
    for (i = 0; i + 1 < n; i += 2) /* pairs first */
        if (srt_cmp_build(c, &e[i], &e[i + 1]) > 0) {
            srt_ent t = e[i];
            e[i] = e[i + 1];
            e[i + 1] = t;
        }
    for (w = 2; w < n; w *= 2) {
        for (i = 0; i < n; i += 2 * w) {
            size_t a = i, am = i + w < n ? i + w : n, b = am, bm = i + 2 * w < n ? i + 2 * w : n, o = i;
            while (a < am && b < bm) dst[o++] = srt_cmp_build(c, &src[a], &src[b]) <= 0 ? src[a++] : src[b++];
            while (a < am) dst[o++] = src[a++];
            while (b < bm) dst[o++] = src[b++];
        }
        { srt_ent *t = src; src = dst; dst = t; }
    }
    if (src != e) memcpy(e, src, n * sizeof *e);
}

#define SRT_RADIX_MIN 48

/* The most significant byte at or below b where the entries differ, with
 * its histogram in cnt; -1 if their k are all equal. */
static int srt_rbyte(const srt_ent *e, size_t n, int b, size_t cnt[256])
{
    size_t i;
    for (; b >= 0; b--) {
        unsigned sh = 8u * (unsigned)b;
        memset(cnt, 0, 256 * sizeof *cnt);
        for (i = 0; i < n; i++) cnt[(e[i].k >> sh) & 255]++;
        if (cnt[(e[0].k >> sh) & 255] != n) break;
    }
    return b;
}

/* Small or all-equal-k: by comparison, in place. */
static void srt_csort(srt_cx *c, srt_ent *e, srt_ent *tmp, size_t n)
{
    size_t i, j;
    if (n >= SRT_RADIX_MIN) {
        srt_msort(c, e, tmp, n);
        return;
    }
    for (i = 1; i < n; i++) {
        srt_ent x = e[i];
        for (j = i; j > 0 && (e[j - 1].k > x.k || (e[j - 1].k == x.k && srt_cmp_build(c, &e[j - 1], &x) > 0)); j--)
            e[j] = e[j - 1];
        e[j] = x;
    }
}

/* Sort the n entries of src into dst (to_dst) or in place in src (src
 * then ends sorted, dst is scratch), by bytes b and below of k. */
static void srt_rsort(srt_cx *c, srt_ent *src, srt_ent *dst, size_t n, int b, int to_dst)
{
    size_t cnt[256], i, start;
    if (n < SRT_RADIX_MIN || (b = srt_rbyte(src, n, b, cnt)) < 0) {
        if (to_dst) memcpy(dst, src, n * sizeof *src);
        srt_csort(c, to_dst ? dst : src, to_dst ? src : dst, n);
        return;
    }
    {
        unsigned sh = 8u * (unsigned)b;
        size_t sum = 0;
        for (i = 0; i < 256; i++) {
            size_t t = cnt[i];
            cnt[i] = sum;
            sum += t;
        }
        for (i = 0; i < n; i++) dst[cnt[(src[i].k >> sh) & 255]++] = src[i];
    }
    /* the buckets are in dst; cnt[v] is now the end of bucket v.  Each is
     * sorted from dst into src when the result belongs in src, or in place */
    for (i = 0, start = 0; i < 256; start = cnt[i++]) {
        size_t m = cnt[i] - start;
        if (!m) continue;
        if (m == 1) {
            if (!to_dst) src[start] = dst[start];
        } else {
            srt_rsort(c, dst + start, src + start, m, b - 1, !to_dst);
        }
    }
}

/* Sort n entries by srt_cmp_build (tmp has room for n): an MSD radix sort
 * on k from its most significant byte down, skipping bytes that are the
 * same throughout a bucket, buckets moving between e and tmp (they shrink
 * into the cache after a level or two); small buckets and groups of equal
 * k are finished by comparison -- the only place the log may be read. */
static void srt_sort(srt_cx *c, srt_ent *e, srt_ent *tmp, size_t n)
{
    srt_rsort(c, e, tmp, n, 7, 0);
}

/* Entries made from keys in turn: keeps the common prefix of the keys so
 * far, and encodes each entry at the prefix length of its time; finish()
 * projects the earlier ones to the final length (nothing is read again). */
typedef struct srt_acc {
    kv_buf first;          /* the first key */
    size_t cpl;
    kv_buf segs;           /* size_t pairs: first entry encoded at a cpl, that cpl */
} srt_acc;

static int srt_acc_add(kvdb *db, srt_acc *a, srt_ent *e, size_t i, const uint8_t *key, size_t kn)
{
    size_t s[2], l;
    int rc;
    if (i == 0) {
        a->first.len = a->segs.len = 0;
        rc = kv_buf_reserve(&db->al, &a->first, kn ? kn : 1);
        if (rc) return rc;
        if (kn) memcpy(a->first.p, key, kn);
        a->first.len = kn;
        a->cpl = kn;
        l = kn;
    } else {
        l = srt_lcp(key, a->first.p, kn < a->cpl ? kn : a->cpl);
    }
    if (i == 0 || l < a->cpl) {
        a->cpl = l;
        s[0] = i;
        s[1] = l;
        rc = kv_buf_reserve(&db->al, &a->segs, sizeof s);
        if (rc) return rc;
        memcpy(a->segs.p + a->segs.len, s, sizeof s);
        a->segs.len += sizeof s;
    }
    kn -= a->cpl;
    e->k = srt_pack(key + a->cpl, kn < 8 ? kn : 8);
    e->off = (e->off & ~((uint64_t)15 << SRT_LSH)) | (uint64_t)(kn < SRT_LONG ? kn : SRT_LONG) << SRT_LSH;
    return KVDB_OK;
}

static void srt_acc_finish(srt_acc *a, srt_ent *e, size_t n)
{
    size_t ns = a->segs.len / (2 * sizeof(size_t)), s, i;
    for (s = 0; s + 1 < ns; s++) { /* the last segment is at the final cpl */
        size_t g[4];
        srt_prj p;
        memcpy(g, a->segs.p + s * 2 * sizeof(size_t), sizeof g);
        srt_prj_init(&p, a->first.p, g[1], a->cpl);
        for (i = g[0]; i < g[2] && i < n; i++) e[i] = srt_proj(&p, &e[i]);
    }
}

static void srt_acc_free(kvdb *db, srt_acc *a)
{
    kv_free(&db->al, a->first.p);
    kv_free(&db->al, a->segs.p);
}

static srt_run *srt_alloc(kvdb *db, size_t n, size_t cpl)
{
    srt_run *run;
    size_t sz = sizeof *run + n * sizeof(srt_ent) + cpl;
    if (n > ((size_t)-1 - sizeof *run - cpl) / sizeof(srt_ent) || !(run = (srt_run *)kv_malloc(&db->al, sz))) {
        kv_err(KVDB_ENOMEM, "out of memory for a sorted run of %zu entries", n);
        return NULL;
    }
    run->n = run->cap = n;
    run->refs = 1;
    run->e = run->own;
    run->cpl = cpl;
    run->pfx = (const uint8_t *)(run->own + n);
    run->bytes = sz;
    db->srt_bytes += sz;
    return run;
}

/* A run this big is freed on the thread (kv_job): giving megabytes back to
 * the system takes milliseconds, and a compaction swap releases all runs
 * while writers wait. */
#define SRT_FREE_BG ((uint64_t)(KVDB_CK_MIN_BYTES) / 64) /* 1 MiB (TSan tests: 1 KiB) */

static void srt_release(kvdb *db, srt_run *run)
{
    if (run && --run->refs == 0) {
        db->srt_bytes -= run->bytes;
        ck_job(db, run->bytes >= SRT_FREE_BG, KV_JOB_FREE, NULL, run, 0);
    }
}

/* The run made from buf, which holds a run header's room (SRT_HEAD) and
 * then n sorted entries of key space prefix pfx[0, cpl): one entry per key
 * (the first of each group, i.e. the newest), tombstones dropped if drop.
 * The buffer becomes the run (shrunk to fit): buf->p is taken. */
#define SRT_HEAD offsetof(srt_run, own)
static int srt_make_run(kvdb *db, srt_cx *c, kv_buf *buf, size_t n, const uint8_t *pfx, size_t cpl, int drop,
                        uint64_t lo, uint64_t hi, srt_run **out)
{
    srt_run *run;
    srt_ent *e = (srt_ent *)(void *)(buf->p + SRT_HEAD);
    size_t i, k, sz;
    for (i = 0, k = 0; i < n; i++)
        if (k == 0 || srt_cmp(c, &e[k - 1], &e[i]) != 0) e[k++] = e[i];
    if (c->rc) return c->rc;
    if (drop) {
        size_t j = 0;
        for (i = 0; i < k; i++)
            if (!(e[i].off & SRT_DEL)) e[j++] = e[i];
        k = j;
    }
    sz = SRT_HEAD + k * sizeof *e + cpl;
    if (sz > buf->cap) { /* only if the buffer holds fewer entries than the prefix is long */
        int rc = kv_buf_reserve(&db->al, buf, sz - buf->len);
        if (rc) return rc;
    } else if (sz < buf->cap) {
        uint8_t *np = (uint8_t *)kv_realloc(&db->al, buf->p, sz);
        if (np) {
            buf->p = np;
            buf->cap = sz;
        }
    }
    run = (srt_run *)(void *)buf->p;
    buf->p = NULL;
    buf->len = buf->cap = 0;
    run->lo = lo;
    run->hi = hi;
    run->n = run->cap = k;
    run->cpl = cpl;
    run->refs = 1;
    run->e = run->own;
    run->pfx = (const uint8_t *)(run->own + k);
    if (cpl) memcpy(run->own + k, pfx, cpl);
    run->bytes = sz;
    db->srt_bytes += sz;
    *out = run;
    return KVDB_OK;
}

/* Build the run for [lo, hi) of the log as seen by r (mu_srt held): one
 * pass over the records in log order, then srt_sort. */
static int srt_build(kvdb *db, const kv_rd *r, uint64_t lo, uint64_t hi, srt_run **out)
{
    kv_buf ents = { NULL, 0, 0 }, tmp = { NULL, 0, 0 }, kb = { NULL, 0, 0 };
    srt_cx c;
    srt_acc acc;
    uint64_t off = lo;
    size_t n = 0;
    int rc = KVDB_OK;
    memset(&c, 0, sizeof c);
    memset(&acc, 0, sizeof acc);
    c.r = r;
    *out = NULL;
    db->srt_builds++;
    if (hi > SRT_OFF) return kv_err(KVDB_ECORRUPT, "%s: log too large for the sorted index", db->path);
    /* the entries go after room for the run header: the buffer becomes the run */
    rc = kv_buf_reserve(&db->al, &ents, SRT_HEAD + (hi - lo) / 256 * sizeof(srt_ent));
    if (rc) return rc;
    ents.len = SRT_HEAD;
    while (off < hi) {
        uint8_t hdr[LG_REC + 64];
        const uint8_t *p, *key;
        lg_rec rec;
        srt_ent *e;
        if (r->base) {
            p = r->base + off;
        } else {
            rc = db->vfs->read(db->vfs->ctx, r->file, off, hdr, hi - off < sizeof hdr ? (size_t)(hi - off) : sizeof hdr);
            if (rc) goto out;
            p = hdr;
        }
        if (lg_parse(p, off, hi - off, &rec) != KVDB_OK) {
            rc = kv_err(KVDB_ECORRUPT, "%s: bad record at offset %llu while sorting", db->path, (unsigned long long)off);
            goto out;
        }
        if (rec.type != LG_COMMIT) {
            if (r->base || rec.klen <= sizeof hdr - LG_REC) {
                key = p + LG_REC;
            } else { /* pread mode, a long key */
                kb.len = 0;
                rc = kv_buf_reserve(&db->al, &kb, rec.klen);
                if (!rc) rc = db->vfs->read(db->vfs->ctx, r->file, off + LG_REC, kb.p, rec.klen);
                if (rc) goto out;
                key = kb.p;
            }
            if (ents.len + sizeof *e > ents.cap) {
                rc = kv_buf_reserve(&db->al, &ents, sizeof *e);
                if (rc) goto out;
            }
            e = (srt_ent *)(void *)(ents.p + SRT_HEAD) + n;
            e->off = off | (rec.type == LG_DEL ? SRT_DEL : 0);
            rc = srt_acc_add(db, &acc, e, n, key, rec.klen);
            if (rc) goto out;
            ents.len += sizeof *e;
            n++;
        }
        off += rec.size;
    }
    srt_acc_finish(&acc, (srt_ent *)(void *)(ents.p + SRT_HEAD), n);
    {   /* already in strictly increasing key order (a compacted log)? */
        const srt_ent *e = (const srt_ent *)(const void *)(ents.p + SRT_HEAD);
        size_t i = 1;
        while (i < n && srt_cmp(&c, &e[i - 1], &e[i]) < 0) i++;
        if (c.rc) { rc = c.rc; goto out; }
        if (i < n) {
            rc = kv_buf_reserve(&db->al, &tmp, n * sizeof(srt_ent) + 1);
            if (rc) goto out;
            srt_sort(&c, (srt_ent *)(void *)(ents.p + SRT_HEAD), (srt_ent *)(void *)tmp.p, n);
            if (c.rc) { rc = c.rc; goto out; }
        }
        kv_free(&db->al, tmp.p);
        tmp.p = NULL;
    }
    /* the first run has nothing older to hide: drop its tombstones */
    rc = srt_make_run(db, &c, &ents, n, n ? acc.first.p : NULL, n ? acc.cpl : 0, lo == LG_HDR, lo, hi, out);
out:
    kv_free(&db->al, ents.p);
    kv_free(&db->al, tmp.p);
    kv_free(&db->al, kb.p);
    kv_free(&db->al, c.ka.p);
    kv_free(&db->al, c.kb.p);
    srt_acc_free(db, &acc);
    return rc;
}

/* Merge two adjacent runs, a older than b, into one (mu_srt held).  The new
 * run's prefix is the common prefix of both run prefixes; each side's
 * entries are projected to it, so the log is read only on ties of long
 * keys. */
static int srt_merge(kvdb *db, const kv_rd *r, const srt_run *a, const srt_run *b, srt_run **out)
{
    srt_cx c;
    srt_run *m;
    srt_prj pa, pb;
    const uint8_t *pfx = a->n ? a->pfx : b->pfx;
    size_t i = 0, j = 0, k = 0, cpl;
    int drop = a->lo == LG_HDR;
    memset(&c, 0, sizeof c);
    memset(&pa, 0, sizeof pa);
    memset(&pb, 0, sizeof pb);
    c.r = r;
    *out = NULL;
    if (!a->n) cpl = b->cpl;
    else if (!b->n) cpl = a->cpl;
    else cpl = srt_lcp(a->pfx, b->pfx, a->cpl < b->cpl ? a->cpl : b->cpl);
    m = srt_alloc(db, a->n + b->n, cpl);
    if (!m) return KVDB_ENOMEM;
    m->lo = a->lo;
    m->hi = b->hi;
    if (cpl) memcpy(m->own + a->n + b->n, pfx, cpl); /* = m->pfx */
    if (a->n) srt_prj_init(&pa, a->pfx, a->cpl, cpl);
    if (b->n) srt_prj_init(&pb, b->pfx, b->cpl, cpl);
    {
        srt_ent x = { 0, 0 }, y = { 0, 0 };
        if (i < a->n) x = srt_proj(&pa, &a->e[i]);
        if (j < b->n) y = srt_proj(&pb, &b->e[j]);
        while (i < a->n || j < b->n) {
            srt_ent e;
            int d = i == a->n ? 1 : j == b->n ? -1 : srt_cmp(&c, &x, &y);
            if (d <= 0) e = x;
            else e = y;
            if (d >= 0) { /* the newer entry wins a tie */
                e = y;
                if (++j < b->n) y = srt_proj(&pb, &b->e[j]);
            }
            if (d <= 0 && ++i < a->n) x = srt_proj(&pa, &a->e[i]);
            if (drop && (e.off & SRT_DEL)) continue;
            m->own[k++] = e;
        }
    }
    m->n = k;
    kv_free(&db->al, c.ka.p);
    kv_free(&db->al, c.kb.p);
    if (c.rc) {
        srt_release(db, m);
        return c.rc;
    }
    *out = m;
    return KVDB_OK;
}

/* Runs covering [LG_HDR, end) for a reader (r must see [LG_HDR, end)):
 * *out gets an allocated array of referenced runs, oldest first.  A
 * private run (invariant 2) is kept in *priv, if given, for the reader's
 * next iterators. */
static int srt_acquire(kvdb *db, const kv_rd *r, uint64_t end, srt_run **priv, srt_run ***out, size_t *nout)
{
    srt_run **v = NULL, *fresh = NULL;
    size_t k = 0, i;
    uint64_t covered;
    int rc = KVDB_OK, shared = 0, same;
    *out = NULL;
    *nout = 0;
    kv_lock(&db->mu_srt);
    same = r->file == db->srt_file; /* else a snapshot from before a compaction */
    while (same && k < db->nruns && db->runs[k]->hi <= end) k++;
    covered = k ? db->runs[k - 1]->hi : LG_HDR;
    if (covered < end && priv && *priv && (*priv)->lo == covered && (*priv)->hi == end) {
        fresh = *priv; /* built by an earlier iterator of this snapshot */
        fresh->refs++;
    } else if (covered < end) {
        rc = srt_build(db, r, covered, end, &fresh);
        if (rc) goto out;
        if ((!same || k < db->nruns) && priv) { /* private: keep it for the next iterator */
            if (*priv) srt_release(db, *priv);
            *priv = fresh;
            fresh->refs++;
        }
        if (same && k == db->nruns) { /* extends the shared list */
            if (db->nruns == db->runs_cap) {
                size_t ncap = db->runs_cap ? db->runs_cap * 2 : 8;
                srt_run **nr = (srt_run **)kv_realloc(&db->al, db->runs, ncap * sizeof *nr);
                if (!nr) {
                    srt_release(db, fresh);
                    rc = kv_err(KVDB_ENOMEM, "out of memory");
                    goto out;
                }
                db->runs = nr;
                db->runs_cap = ncap;
            }
            db->runs[db->nruns++] = fresh;
            shared = 1;
            /* binary-counter merging of the tail (invariant 4) */
            while (db->nruns >= 2 && db->runs[db->nruns - 2]->cap != 0 &&
                   (db->runs[db->nruns - 2]->n <= 2 * db->runs[db->nruns - 1]->n || db->nruns > 24)) {
                srt_run *m;
                if (srt_merge(db, r, db->runs[db->nruns - 2], db->runs[db->nruns - 1], &m) != KVDB_OK) break;
                srt_release(db, db->runs[db->nruns - 2]);
                srt_release(db, db->runs[db->nruns - 1]);
                db->nruns--;
                db->runs[db->nruns - 1] = m;
            }
            k = db->nruns;
        }
    }
    v = (srt_run **)kv_malloc(&db->al, (k + 1) * sizeof *v);
    if (!v) {
        if (fresh && !shared) srt_release(db, fresh);
        rc = kv_err(KVDB_ENOMEM, "out of memory");
        goto out;
    }
    for (i = 0; i < k; i++) {
        v[i] = db->runs[i];
        v[i]->refs++;
    }
    if (fresh && !shared) v[k++] = fresh; /* private: our reference */
    *out = v;
    *nout = k;
out:
    kv_unlock(&db->mu_srt);
    return rc;
}

static void srt_release_all(kvdb *db, srt_run **v, size_t n)
{
    size_t i;
    kv_lock(&db->mu_srt);
    for (i = 0; i < n; i++) srt_release(db, v[i]);
    kv_unlock(&db->mu_srt);
    kv_free(&db->al, v);
}

/* ======================================================================
 * SECTION: recovery
 *
 * Rebuild the index from the log (see RECOVERY at the top).  Invariants:
 *   1. Only transactions whose COMMIT verified are applied, in log order.
 *   2. Nothing is written here: cutting a torn tail is left to the caller,
 *      and only on a writable handle.
 * ====================================================================== */
typedef struct rcv_pend {
    uint64_t off, h;
} rcv_pend;

/* Read bytes [off, off+n) of the log through the map or into buf. */
static int rcv_bytes(kvdb *db, const kv_rd *r, uint64_t off, size_t n, kv_buf *buf, const uint8_t **out)
{
    int rc;
    if (r->base) {
        *out = r->base + off;
        return KVDB_OK;
    }
    buf->len = 0;
    rc = kv_buf_reserve(&db->al, buf, n);
    if (rc) return rc;
    rc = db->vfs->read(db->vfs->ctx, r->file, off, buf->p, n);
    *out = buf->p;
    return rc;
}

/* Is there an intact COMMIT after x that says x had been synced? */
static int rcv_evidence(kvdb *db, const kv_rd *r, uint64_t x, uint64_t size, kv_buf *buf)
{
    const uint64_t need = LG_REC + LG_COMMIT_LEN;
    uint64_t p = x + 1;
    while (p + need <= size) {
        uint64_t win = size - p < ((uint64_t)1 << 20) ? size - p : ((uint64_t)1 << 20), i;
        const uint8_t *b;
        int rc = rcv_bytes(db, r, p, (size_t)win, buf, &b);
        if (rc) return rc;
        for (i = 0; i + need <= win; i++) {
            const uint8_t *q = b + i;
            if (q[8] == LG_COMMIT && q[9] == 0 && kv_ld16(q + 10) == 0 && kv_ld32(q + 12) == LG_COMMIT_LEN &&
                kv_ld64(q) == lg_checksum(db->seed, p + i, q, need) && kv_ld64(q + 24) > x)
                return 1;
        }
        if (win < need) break;
        p += win - need + 1;
    }
    return 0;
}

static int rcv_apply(kvdb *db, hix_w *w, kv_ver *v, const kv_rd *r, rcv_pend *pd, size_t n, kv_buf *kbuf)
{
    size_t i;
    for (i = 0; i < n; i++) {
        const uint8_t *p;
        uint64_t old = 0, osize;
        lg_rec rec;
        int rc = rcv_bytes(db, r, pd[i].off, LG_REC, kbuf, &p);
        if (rc) return rc;
        if (lg_parse(p, pd[i].off, r->end - pd[i].off, &rec)) return kv_err(KVDB_ECORRUPT, "record changed during recovery");
        rc = rcv_bytes(db, r, pd[i].off + LG_REC, rec.klen, kbuf, &p);
        if (rc) return rc;
        if (rec.type == LG_PUT) {
            rc = hix_put(w, &v->root, pd[i].h, p, rec.klen, pd[i].off, &old);
            if (rc) return rc;
            v->live += rec.size;
            if (!old) v->keys++;
        } else {
            rc = hix_del(w, &v->root, pd[i].h, p, rec.klen, &old);
            if (rc == KVDB_NOTFOUND) continue;
            if (rc) return rc;
            v->keys--;
        }
        if (old) {
            rc = rd_size(r, old, &osize);
            if (rc) return rc;
            v->live -= osize;
        }
    }
    return KVDB_OK;
}

/* Scan [start, size) into v.  *good = end of the last whole transaction. */
static int rcv_scan(kvdb *db, kv_ver *v, uint64_t start, uint64_t size, uint64_t *good)
{
    kv_rd r;
    hix_w w;
    kv_buf pend = { NULL, 0, 0 }, buf = { NULL, 0, 0 }, kbuf = { NULL, 0, 0 };
    uint64_t off = start, last_seq = db->seq;
    size_t npend = 0;
    int rc = KVDB_OK;

    rd_init(&r, db, v);
    r.end = size;
    w.db = db;
    w.pool = &db->pool;
    w.gen = db->gen;
    w.retired = NULL;
    w.nretired = 0;
    w.rd = &r;
    *good = start;
    while (off < size) {
        const uint8_t *p;
        lg_rec rec;
        uint64_t avail = size - off;
        rc = rcv_bytes(db, &r, off, (size_t)(avail < LG_REC ? avail : LG_REC), &buf, &p);
        if (rc) goto out;
        if (lg_parse(p, off, avail, &rec) != KVDB_OK) break;
        rc = rcv_bytes(db, &r, off, (size_t)rec.size, &buf, &p);
        if (rc) goto out;
        if (kv_ld64(p) != lg_checksum(db->seed, off, p, rec.size)) break;
        if (rec.type != LG_COMMIT) {
            rcv_pend *e;
            rc = kv_buf_reserve(&db->al, &pend, sizeof *e);
            if (rc) goto out;
            e = (rcv_pend *)(void *)pend.p + npend;
            e->off = off;
            e->h = kv_hash(db->seed, p + LG_REC, rec.klen);
            npend++;
            pend.len += sizeof *e;
        } else {
            uint64_t seq = kv_ld64(p + LG_REC), durable = kv_ld64(p + LG_REC + 8);
            if (kv_ld32(p + LG_REC + 16) != npend || seq <= last_seq || kv_ld32(p + LG_REC + 20) != 0) break;
            rc = rcv_apply(db, &w, v, &r, (rcv_pend *)(void *)pend.p, npend, &kbuf);
            if (rc) goto out;
            if (durable >= db->hz_log) {
                db->hz_log = durable;
                db->hz_seal = npend == 0 && durable == off;
            }
            last_seq = seq;
            npend = 0;
            pend.len = 0;
            *good = off + rec.size;
            db->recovered_txns++;
        }
        off += rec.size;
    }
    if (off < size) { /* damage at off: torn tail, or corruption? */
        if (off < db->hz_sc) {
            rc = kv_err(KVDB_ECORRUPT, "%s: damaged record at offset %llu, below the %llu bytes its sidecar says "
                        "were synced; nothing was changed", db->path, (unsigned long long)off,
                        (unsigned long long)db->hz_sc);
            goto out;
        }
        rc = rcv_evidence(db, &r, off, size, &buf);
        if (rc > 0)
            rc = kv_err(KVDB_ECORRUPT, "%s: damaged record at offset %llu is followed by committed data that "
                        "says it was synced; nothing was changed", db->path, (unsigned long long)off);
    }
    db->seq = last_seq;
    v->seq = last_seq;
    v->end = *good;
out:
    kv_free(&db->al, pend.p);
    kv_free(&db->al, buf.p);
    kv_free(&db->al, kbuf.p);
    return rc;
}

/* ======================================================================
 * SECTION: transactions and commit
 *
 * The write transaction is the one embedded in the handle (db->wtxn): there
 * is one writer at a time, so it needs no allocation.  Its records are
 * encoded into wbuf as they are written, with the key hash parked in the
 * checksum field until commit.
 *
 * Commit, in an order that keeps every failure clean:
 *   1. append the COMMIT record, allocate the version, extend the mapping;
 *   2. apply the records to a copy-on-write root and fill in checksums;
 *   3. write the buffer with one call;
 *   4. link the version, then publish it: at once in SYNC_OFF and in
 *      SYNC_NORMAL below sync_bytes, else only after a sync covering it
 *      (group commit: whoever finds no sync running syncs everything
 *      written so far, the others wait for it).
 * A failure in 1-3 frees the nodes of step 2 and truncates anything partly
 * written (if that fails too, the handle goes sticky); the transaction is
 * aborted and the file holds only whole transactions.
 * ====================================================================== */
static int kv_sticky(kvdb *db)
{
    int rc;
    kv_lock(&db->mu_sync);
    rc = db->sticky;
    kv_unlock(&db->mu_sync);
    return rc;
}

/* The error for a write refused because the handle went sticky. */
static int kv_sticky_err(const kvdb *db, int rc)
{
    return kv_err(rc, "%s: an earlier write or sync failed; the handle refuses writes until reopened", db->path);
}

static void kv_set_sticky(kvdb *db, int rc)
{
    kv_lock(&db->mu_sync);
    if (!db->sticky) db->sticky = rc;
    kv_unlock(&db->mu_sync);
}

/* The log bytes written so far, and the epoch they count in. */
static uint64_t kv_written(kvdb *db, uint64_t *epoch)
{
    uint64_t w;
    kv_lock(&db->mu_sync);
    w = db->written;
    *epoch = db->epoch;
    kv_unlock(&db->mu_sync);
    return w;
}

/* Wait until target bytes of the log of epoch are durable, syncing if
 * nobody is.  A compaction syncs the old file completely before it swaps
 * in the new one (and bumps the epoch), so a target of an older epoch has
 * been reached once the epoch has moved. */
static int kv_sync_to(kvdb *db, uint64_t target, uint64_t epoch)
{
    int rc = KVDB_OK;
    kv_lock(&db->mu_sync);
    for (;;) {
        if (db->sticky) {
            rc = kv_sticky_err(db, db->sticky);
            break;
        }
        if (db->synced >= target || db->epoch != epoch) break;
        if (!db->syncing) {
            uint64_t upto = db->written;
            kvdb_file *f = db->file; /* a swap waits for syncing == 0 */
            db->syncing = 1;
            kv_unlock(&db->mu_sync);
            rc = db->vfs->sync(db->vfs->ctx, f);
            kv_lock(&db->mu_sync);
            db->syncing = 0;
            db->nsyncs++;
            if (rc) {
                db->sticky = rc == KVDB_EFULL ? KVDB_EFULL : KVDB_EIO;
                kv_broadcast(&db->cv_sync);
                rc = db->sticky;
                break;
            }
            if (upto > db->synced) db->synced = upto;
            ver_publish_upto(db, db->synced);
            kv_broadcast(&db->cv_sync);
            continue;
        }
        kv_wait(&db->cv_sync, &db->mu_sync);
    }
    kv_unlock(&db->mu_sync);
    return rc;
}

/* Take the writer role: wait for the current writer (or KVDB_EBUSY with
 * nowait, or if this thread is the writer).  Write transactions (txn 1)
 * and a compaction's start and swap (txn 0) take it. */
static int kv_writer_take(kvdb *db, int nowait, int txn)
{
    kv_lock(&db->mu_write);
    if (db->writer_active && kv_same_thread(db->writer_thread, kv_self())) {
        kv_unlock(&db->mu_write);
        return kv_err(KVDB_EBUSY, "this thread already holds the write transaction");
    }
    while (db->writer_active) {
        if (nowait) {
            kv_unlock(&db->mu_write);
            return kv_err(KVDB_EBUSY, "another write transaction is active");
        }
        kv_wait(&db->cv_write, &db->mu_write);
    }
    db->writer_active = 1;
    db->writer_txn = txn;
    db->writer_thread = kv_self();
    kv_unlock(&db->mu_write);
    return KVDB_OK;
}

static void kv_writer_drop(kvdb *db)
{
    kv_lock(&db->mu_write);
    db->writer_active = 0;
    kv_broadcast(&db->cv_write);
    kv_unlock(&db->mu_write);
}

static void txn_release_writer(kvdb *db)
{
    kvdb_txn *t = &db->wtxn;
    t->seal = 0;
    t->wbuf.len = 0;
    if (t->wbuf.cap > ((size_t)16 << 20)) { /* don't hold on to a huge buffer */
        kv_free(&db->al, t->wbuf.p);
        t->wbuf.p = NULL;
        t->wbuf.cap = 0;
    }
    t->nrec = 0;
    ws_reset(db, &t->ws);
    kv_writer_drop(db);
}

static int txn_begin_write(kvdb *db, unsigned flags, kvdb_txn **out)
{
    kvdb_txn *t = &db->wtxn;
    int rc;
    if (db->rdonly) return kv_err(KVDB_EREADONLY, "%s: opened read-only", db->path);
    rc = kv_writer_take(db, (flags & KVDB_TXN_NOWAIT) != 0, 1);
    if (rc) return rc;
    rc = kv_sticky(db);
    if (rc) {
        txn_release_writer(db);
        return kv_sticky_err(db, rc);
    }
    t->db = db;
    t->write = 1;
    t->ver = db->cur;
    t->gen = ++db->gen;
    t->wbuf.len = 0;
    t->nrec = 0;
    t->iters = NULL;
    t->priv = NULL;
    *out = t;
    return KVDB_OK;
}

/* A group of records whose index paths are prefetched together. */
typedef struct tx_pf {
    uint64_t h[HIX_PF_MAX];
    hix_ref leaf[HIX_PF_MAX];
    unsigned n;
    uint64_t end;          /* buffer position after its last record */
} tx_pf;

static void tx_pf_fill(const kvdb_txn *t, uint64_t from, hix_ref root, tx_pf *g)
{
    g->n = 0;
    g->end = from;
    while (g->n < HIX_PF_MAX && g->end < t->wbuf.len) {
        const uint8_t *e = t->wbuf.p + g->end;
        g->h[g->n++] = kv_ld64(e); /* the hash, parked in the checksum slot */
        g->end += (uint64_t)LG_REC + kv_ld16(e + 10) + kv_ld32(e + 12);
    }
    hix_pf_path(root, g->h, g->n, g->leaf);
}

/* Commit step 2: apply t's records, in order, to the copy-on-write root
 * of nv (which starts as base, the root t began on) and fill in their
 * checksums.  Records go in groups of HIX_PF_MAX: while one group is
 * applied, the index paths of the next are already being fetched (from
 * base, which does not change), so a batch of random keys does not wait
 * for each cache miss in turn. */
static int txn_apply(kvdb_txn *t, hix_ref base, kv_ver *nv, hix_w *w)
{
    kvdb *db = t->db;
    const kv_rd *r = w->rd;
    uint64_t start = db->end, pos = 0;
    tx_pf pf[2];
    unsigned g = 0;
    int rc = KVDB_OK;
    tx_pf_fill(t, 0, base, &pf[0]);
    while (pos < t->wbuf.len) {
        hix_pf_recs(r, pf[g].h, pf[g].n, pf[g].leaf);
        if (pf[g].end < t->wbuf.len) tx_pf_fill(t, pf[g].end, base, &pf[g ^ 1]);
        for (; pos < pf[g].end; ) {
            uint8_t *q = t->wbuf.p + pos;
            uint32_t klen = kv_ld16(q + 10), vlen = kv_ld32(q + 12);
            uint64_t size = (uint64_t)LG_REC + klen + vlen, h = kv_ld64(q), old = 0, osize;
            if (q[8] == LG_PUT) {
                rc = hix_put(w, &nv->root, h, q + LG_REC, klen, start + pos, &old);
                if (rc) return rc;
                nv->live += size;
                if (!old) nv->keys++;
            } else {
                rc = hix_del(w, &nv->root, h, q + LG_REC, klen, &old);
                if (rc) return rc == KVDB_NOTFOUND ? kv_err(KVDB_ECORRUPT, "delete of a key the index does not have") : rc;
                nv->keys--;
            }
            if (old) {
                rc = rd_size(r, old, &osize);
                if (rc) return rc;
                nv->live -= osize;
            }
            kv_st64(q, lg_checksum(db->seed, start + pos, q, size));
            pos += size;
        }
        g ^= 1;
    }
    return KVDB_OK;
}

/* Log space reserved past end (see kvdb_vfs.reserve), so that a
 * fillsync-style run of small commits changes the file's size once per
 * reservation instead of once per commit.  A reservation is 1/8 of the
 * log, 64 KiB to 8 MiB.  A file layer's reserve may take long for the
 * commit that crosses the reserved end (posix_fallocate of 8 MiB: 20 us
 * to 0.8 ms; the POSIX layer's sparse extension 10-240 us, as it may wait
 * for the file system's journal): once the log is KV_RSV_BG_MIN long, the
 * thread extends the reservation by half a chunk whenever the writer is
 * less than half a chunk from its end (one request in flight, rsv_log;
 * the surplus stays under a chunk + 64 KiB, as kvdb.h promises), and the
 * writer reserves itself only if it overtakes the thread.  Failure is
 * not an error: the appends grow the file as without it, and the handle
 * stops reserving.
 *
 * The thread's reserve runs at the same time as the writer's appends
 * below it.  A failed write cuts the file back to the commit's start; a
 * reserve in flight may finish before or after that cut, so its size is
 * taken either way: log_cap may then exceed the file's size (appends grow
 * the file; close cuts to end when log_cap > end), but it never falls
 * short of it once the reserve is collected, and close collects it -- so
 * close leaves no reserved zeros behind.  A compaction swap changes the
 * file: a reserve of the old one (rsv_log != db->log) is not taken. */
#define KV_RSV_BG_MIN ((uint64_t)(KVDB_CK_MIN_BYTES) / 8) /* 8 MiB (TSan tests: 8 KiB) */

static uint64_t kv_rsv_chunk(uint64_t end)
{
    uint64_t chunk = end / 8;
    if (chunk < ((uint64_t)1 << 16)) chunk = (uint64_t)1 << 16;
    if (chunk > ((uint64_t)1 << 23)) chunk = (uint64_t)1 << 23;
    return chunk;
}

/* The log's file is cap bytes: reserve again once end passes rsv_mark. */
static void kv_log_cap_set(kvdb *db, uint64_t cap)
{
    db->log_cap = cap;
    if (!db->vfs->reserve || db->no_reserve || db->inmem) db->rsv_mark = UINT64_MAX;
#ifndef KVDB_NO_THREADS
    else if (cap >= KV_RSV_BG_MIN) db->rsv_mark = cap - kv_rsv_chunk(cap) / 2;
#endif
    else db->rsv_mark = cap;
}

/* Take the thread's finished reserve, if it has finished (writer). */
static void kv_rsv_collect(kvdb *db)
{
#ifndef KVDB_NO_THREADS
    int done, rc;
    uint64_t cap;
    kv_lock(&db->mu_ck);
    done = db->rsv_done == db->rsv_seq;
    rc = db->rsv_done_rc;
    cap = db->rsv_done_cap;
    kv_unlock(&db->mu_ck);
    if (!done) return;
    if (db->rsv_log == db->log) {
        if (rc) {
            db->no_reserve = 1;
            kv_log_cap_set(db, db->log_cap); /* no rsv_mark: stop */
        } else if (cap > db->log_cap) {
            kv_log_cap_set(db, cap);
        }
    }
    kv_log_release(db, db->rsv_log);
    db->rsv_log = NULL;
#else
    (void)db;
#endif
}

/* Hand the reserve of cap bytes to the thread; 0 if there is none. */
static int kv_rsv_post(kvdb *db, uint64_t cap)
{
#ifndef KVDB_NO_THREADS
    kv_job j;
    j.kind = KV_JOB_RESERVE;
    j.f = db->log->f;
    j.base = NULL;
    j.len = cap;
    j.seq = db->rsv_seq + 1;
    if (!ck_enqueue(db, &j)) return 0;
    db->rsv_seq = j.seq;
    db->rsv_log = db->log; /* its file stays open until the reserve is done */
    db->log->refs++;
    return 1;
#else
    (void)db;
    (void)cap;
    return 0;
#endif
}

/* Writer, before appending up to end, once end > rsv_mark. */
static void kv_log_reserve(kvdb *db, uint64_t end)
{
    uint64_t cap;
    char msg[sizeof kv_errbuf];
    if (db->rsv_log) kv_rsv_collect(db);
    if (db->no_reserve || db->rsv_mark == UINT64_MAX) return;
    if (end <= db->log_cap) { /* half a chunk left: the thread reserves on */
        if (db->rsv_log) return;
        cap = (db->log_cap + kv_rsv_chunk(db->log_cap) / 2 + 0xFFFF) & ~(uint64_t)0xFFFF;
        if (!kv_rsv_post(db, cap)) db->rsv_mark = db->log_cap; /* no thread: at the end */
        return;
    }
    cap = (end + kv_rsv_chunk(end) + 0xFFFF) & ~(uint64_t)0xFFFF;
    memcpy(msg, kv_errbuf, sizeof msg);
    if (db->vfs->reserve(db->vfs->ctx, db->file, cap) == KVDB_OK) {
        kv_log_cap_set(db, cap);
    } else {
        db->no_reserve = 1;
        kv_log_cap_set(db, db->log_cap);
    }
    memcpy(kv_errbuf, msg, sizeof msg);
}

static int txn_commit_write(kvdb_txn *t)
{
    kvdb *db = t->db;
    kv_ver *base = db->cur, *nv;
    uint64_t start = db->end, durable, end;
    int publish;
    uint64_t nretired = 0, epoch;
    hix_w w;
    kv_rd r;
    uint8_t *p;
    int rc;

    if (t->nrec == 0 && !t->seal) {
        txn_release_writer(db);
        return KVDB_OK;
    }
    rc = kv_sticky(db); /* a sync or write failed since kvdb_begin */
    if (rc) {
        rc = kv_sticky_err(db, rc);
        goto fail;
    }
    /* 1. the COMMIT record, the version, the mapping */
    rc = kv_buf_reserve(&db->al, &t->wbuf, LG_REC + LG_COMMIT_LEN);
    if (rc) goto fail;
    kv_lock(&db->mu_sync);
    durable = db->synced;
    kv_unlock(&db->mu_sync);
    p = t->wbuf.p + t->wbuf.len;
    lg_put_header(p, LG_COMMIT, 0, LG_COMMIT_LEN);
    kv_st64(p + LG_REC, db->seq + 1);
    kv_st64(p + LG_REC + 8, durable);
    kv_st32(p + LG_REC + 16, t->nrec);
    kv_st32(p + LG_REC + 20, 0);
    kv_st64(p, lg_checksum(db->seed, start + t->wbuf.len, p, LG_REC + LG_COMMIT_LEN));
    end = start + t->wbuf.len + LG_REC + LG_COMMIT_LEN;
    nv = ver_alloc(db);
    if (!nv) { rc = KVDB_ENOMEM; goto fail; }
    rc = kv_map_ensure(db, end);
    if (rc) { ver_free(db, nv); goto fail; }

    /* 2. index and checksums */
    nv->root = base->root;
    nv->keys = base->keys;
    nv->live = base->live;
    r.db = db;
    r.file = db->file;
    r.base = db->map ? db->map->base : NULL;
    r.end = start;
    r.wb = t->wbuf.p;
    r.wb_off = start;
    r.wb_len = t->wbuf.len;
    w.db = db;
    w.pool = &db->pool;
    w.gen = t->gen;
    w.retired = NULL;
    w.nretired = 0;
    w.rd = &r;
    rc = txn_apply(t, base->root, nv, &w);
    t->wbuf.len += LG_REC + LG_COMMIT_LEN;

    /* 3. write */
    if (!rc) {
        if (end > db->rsv_mark) kv_log_reserve(db, end);
        rc = db->vfs->write(db->vfs->ctx, db->file, start, t->wbuf.p, t->wbuf.len);
        if (rc) {
            int trc = db->vfs->truncate(db->vfs->ctx, db->file, start);
            if (trc) kv_set_sticky(db, KVDB_EIO);
            else if (rc != KVDB_EFULL) kv_set_sticky(db, rc);
            kv_log_cap_set(db, start);
        } else if (end > db->log_cap) {
            kv_log_cap_set(db, end);
        }
    }
    if (rc) {
        hix_free_tree(db, &db->pool, nv->root, t->gen);
        ver_free(db, nv);
        goto fail;
    }

    /* 4. link, publish */
    db->end = end;
    db->seq++;
    nv->seq = db->seq;
    nv->end = end;
    nv->map = db->map;
    if (nv->map) nv->map->refs++;
    nv->log = db->log;
    db->log->refs++;
    db->log->bytes = end;
    nv->gen = t->gen;
    if (w.retired) { /* base is the newest version that can see them */
        nretired = w.nretired;
        if (!base->retired) base->retired_tail = w.retired_tail;
        if (!base->nretired || w.retired_min < base->retired_min) base->retired_min = w.retired_min;
        base->nretired += nretired;
        w.retired_tail->link = base->retired;
        base->retired = w.retired;
    }
    /* Publish now, or only after a sync covering it: under SYNC_FULL, and
     * under SYNC_NORMAL when this commit crosses sync_bytes -- so that a
     * commit that returns an error is never visible in this process. */
    kv_lock(&db->mu_sync);
    db->written = end;
    epoch = db->epoch;
    if (db->sync_mode == KVDB_SYNC_OFF || t->seal) publish = 1; /* a seal has no data to wait for */
    else if (db->sync_mode == KVDB_SYNC_NORMAL) publish = end - db->synced < db->sync_bytes;
    else publish = 0;
    kv_unlock(&db->mu_sync);
    kv_lock(&db->mu_ver);
    db->cur->next = nv;
    db->cur = nv;
    if (publish) db->pub = nv;
    if (!t->seal) db->commits++;
    if (durable > db->hz_log) {
        db->hz_log = durable;
        db->hz_seal = t->seal;
    }
    kv_unlock(&db->mu_ver);
    ver_reclaim(db);
    ver_drain(db, 256 + 2 * nretired);
    ver_free_zombies(db, 1024 + 2 * nretired);
    kv_lock(&db->mu_ver);
    nv->index_bytes = db->pool.bytes; /* after reclamation: what is held now */
    kv_unlock(&db->mu_ver);
    txn_release_writer(db);

    if (!publish) rc = kv_sync_to(db, end, epoch);
    if (!rc) ck_maybe(db, end);
    return rc;
fail:
    txn_release_writer(db);
    return rc;
}

/* Seal the log (SEALS at the top): sync it, then append a seal, unless
 * the log's horizon already covers all but a trailing seal.  The seal is
 * handed to the file layer, not synced: lost to a power cut it takes only
 * its evidence with it (kvdb_close syncs it).  nowait: if a write
 * transaction is open, just sync (its COMMIT will record the synced
 * length).  Cost: one sync, and a 40-byte write when anything was committed
 * since the last seal. */
static int txn_seal(kvdb *db, int nowait)
{
    kvdb_txn *t;
    uint64_t w, ep;
    int rc;
    if (db->rdonly || db->inmem) return KVDB_OK;
    rc = txn_begin_write(db, nowait ? KVDB_TXN_NOWAIT : 0, &t);
    if (rc == KVDB_EBUSY && nowait) { /* its COMMIT will cover what is synced now */
        kv_clearerr();
        w = kv_written(db, &ep);
        return kv_sync_to(db, w, ep);
    }
    if (rc) return rc;
    w = kv_written(db, &ep);
    rc = kv_sync_to(db, w, ep);
    if (rc || db->end - db->hz_log <= LG_SEAL) {
        txn_release_writer(db);
        return rc;
    }
    t->seal = 1;
    return txn_commit_write(t);
}

static void *txn_arena_alloc(kvdb_txn *t, size_t n)
{
    kv_arena_blk *b = t->arena;
    kvdb *db = t->db;
    size_t need = (n + 15) & ~(size_t)15;
    if (!b || b->cap - b->used < need) {
        size_t cap = need > 65536 ? need : 65536;
        b = (kv_arena_blk *)kv_malloc(&db->al, sizeof *b + cap);
        if (!b) return NULL;
        b->cap = cap;
        b->used = 0;
        b->next = t->arena;
        t->arena = b;
    }
    b->used += need;
    return (uint8_t *)(b + 1) + b->used - need;
}

static void txn_arena_free(kvdb_txn *t)
{
    while (t->arena) {
        kv_arena_blk *b = t->arena;
        t->arena = b->next;
        kv_free(&t->db->al, b);
    }
}

/* ======================================================================
 * SECTION: iterators
 *
 * An iterator merges its sources in key order: the sorted runs of its
 * snapshot (oldest first) and, in a write transaction, the transaction's
 * own writes as of the iterator's creation (newest, encoded like a run
 * with its own prefix).  Where several sources hold the same key the
 * newest wins, and a tombstone hides it.  Each source is a cursor into a
 * sorted array; a step compares the sources' current entries through the
 * relation of each pair of sources (srt_rel: both seen from the common
 * prefix of their run prefixes; the log is read only on a tie of long
 * keys), so a step costs O(sources) comparisons plus the record read,
 * which is checksum-verified like a point read.
 *
 * Bounds are [lo, hi) in key order (NULL: unbounded); a prefix P is the
 * range [P, P+1) where P+1 is P with trailing 0xff bytes dropped and the
 * last byte incremented.  Reverse iteration walks the same set backwards.
 * ====================================================================== */
#define IT_PREFETCH 12   /* records fetched ahead of an iterator */

typedef struct it_src {
    const srt_ent *e;
    size_t n;
    size_t cur;            /* index of the current entry; n = exhausted */
    const uint8_t *pfx;    /* the run prefix of the entries */
    size_t cpl;
} it_src;

/* The sources of a k-way merge and the relation of every pair. */
typedef struct srt_kway {
    it_src *src;
    size_t nsrc;
    srt_rel *rel;          /* nsrc x nsrc: rel[i * nsrc + j] compares i with j */
} srt_kway;

struct kvdb_iter {
    kvdb_txn *t;
    struct kvdb_iter *next, **pprev; /* the transaction's list */
    unsigned flags;
    kv_rd rd;
    srt_run **runs;
    size_t nruns;
    srt_ent *own;          /* the write transaction's writes, sorted */
    size_t nown;
    kv_buf ownpfx;         /* their common prefix */
    srt_kway kw;           /* nruns (+1) sources, oldest first */
    srt_cx cx;             /* key buffers for comparisons */
    kv_buf bnd;            /* lo then hi bytes */
    size_t lolen, hilen;
    int has_lo, has_hi;
};

#define IT_LO(it) ((it)->bnd.p)
#define IT_HI(it) ((it)->bnd.p + (it)->lolen)

static const uint8_t srt_nopfx[1] = { 0 }; /* the prefix of a source without one */

static void src_set(it_src *s, const srt_ent *e, size_t n, const uint8_t *pfx, size_t cpl)
{
    s->e = e;
    s->n = n;
    s->cur = 0;
    s->pfx = cpl ? pfx : srt_nopfx;
    s->cpl = cpl;
}

/* The pair relations of kw's sources (kw->src and nsrc set). */
static int srt_kway_init(kvdb *db, srt_kway *kw)
{
    size_t i, j, n = kw->nsrc;
    kw->rel = NULL;
    if (n < 2) return KVDB_OK;
    kw->rel = (srt_rel *)kv_malloc(&db->al, n * n * sizeof *kw->rel);
    if (!kw->rel) return kv_err(KVDB_ENOMEM, "out of memory");
    for (i = 0; i < n; i++)
        for (j = i; j < n; j++) {
            srt_rel *a = &kw->rel[i * n + j], *b = &kw->rel[j * n + i];
            srt_rel_init(a, kw->src[i].pfx, kw->src[i].cpl, kw->src[j].pfx, kw->src[j].cpl);
            b->x = a->y;
            b->y = a->x;
        }
    return KVDB_OK;
}

/* Refresh the view of the write transaction's buffer (it may have moved). */
static void it_sync(kvdb_iter *it)
{
    if (it->t->write) {
        it->rd.wb = it->t->wbuf.p;
        it->rd.wb_len = it->t->wbuf.len;
    }
}

/* First index of src whose key is >= k (or > k when strict): the key is
 * compared with the run prefix once, then as (k, lc) at the run's level. */
static size_t it_lower(srt_cx *cx, const it_src *s, const uint8_t *k, size_t kn, int strict)
{
    size_t lo = 0, hi = s->n, m = kn < s->cpl ? kn : s->cpl, rest;
    uint64_t kk;
    unsigned kl;
    int d = m ? memcmp(k, s->pfx, m) : 0;
    if (d < 0 || (d == 0 && kn < s->cpl)) return 0; /* before every key of the run */
    if (d > 0) return s->n;                          /* after every key */
    rest = kn - s->cpl;
    kk = srt_pack(k + s->cpl, rest < 8 ? rest : 8);
    kl = rest < SRT_LONG ? (unsigned)rest : SRT_LONG;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const srt_ent *e = &s->e[mid];
        unsigned el = SRT_LC(e);
        int c;
        if (e->k != kk) c = e->k < kk ? -1 : 1;
        else if (el != kl) c = el < kl ? -1 : 1;
        else if (kl < SRT_LONG) c = 0;
        else {
            const uint8_t *x = NULL;
            size_t xn = 0;
            int rc = srt_key(cx->r, SRT_AT(e), &cx->ka, &x, &xn);
            if (rc) {
                if (!cx->rc) cx->rc = rc;
                return lo;
            }
            c = kv_keycmp(x, xn, k, kn);
        }
        if (c < 0 || (strict && c == 0)) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Position every source: forward at the first key >= k (NULL: the start),
 * reverse at the last key <= k (NULL: the end), within the bounds. */
static void it_position(kvdb_iter *it, const uint8_t *k, size_t kn)
{
    size_t i;
    int rev = (it->flags & KVDB_ITER_REVERSE) != 0;
    for (i = 0; i < it->kw.nsrc; i++) {
        it_src *s = &it->kw.src[i];
        if (!rev) {
            size_t a = it->has_lo ? it_lower(&it->cx, s, IT_LO(it), it->lolen, 0) : 0;
            if (k) {
                size_t b = it_lower(&it->cx, s, k, kn, 0);
                if (b > a) a = b;
            }
            s->cur = a;
        } else {
            size_t a = it->has_hi ? it_lower(&it->cx, s, IT_HI(it), it->hilen, 0) : s->n;
            if (k) {
                size_t b = it_lower(&it->cx, s, k, kn, 1);
                if (b < a) a = b;
            }
            s->cur = a ? a - 1 : s->n; /* the entry before, or exhausted */
        }
    }
}

static void src_advance(it_src *s, int rev)
{
    if (s->cur >= s->n) return;
    if (rev) s->cur = s->cur ? s->cur - 1 : s->n;
    else s->cur++;
}

/* One step of the k-way merge: the smallest key (largest in reverse), from
 * the newest source holding it; every source moves past that key.
 * 1 with *out (as stored in source *from), 0 when all sources are
 * exhausted, or an error. */
static int srt_kway_next(srt_cx *cx, srt_kway *kw, int rev, srt_ent *out, size_t *from)
{
    it_src *src = kw->src;
    size_t i, best = kw->nsrc, n = kw->nsrc;
    int d;
    if (n == 1) { /* one source: nothing to compare */
        if (src->cur >= src->n) return 0;
        *out = src->e[src->cur];
        *from = 0;
        src_advance(src, rev);
        return 1;
    }
    for (i = 0; i < n; i++) {
        const it_src *s = &src[i];
        if (s->cur >= s->n) continue;
        if (best == n) { best = i; continue; }
        d = srt_cmp_rel(cx, &kw->rel[i * n + best], &s->e[s->cur], &src[best].e[src[best].cur]);
        if (rev ? d >= 0 : d <= 0) best = i;
    }
    if (cx->rc) return cx->rc;
    if (best == n) return 0;
    *out = src[best].e[src[best].cur];
    *from = best;
    for (i = 0; i < n; i++) {
        it_src *s = &src[i];
        if (i != best && s->cur < s->n && srt_cmp_rel(cx, &kw->rel[i * n + best], &s->e[s->cur], out) == 0)
            src_advance(s, rev);
    }
    src_advance(&src[best], rev);
    return cx->rc ? cx->rc : 1;
}

static void it_free(kvdb_iter *it)
{
    kvdb *db = it->t->db;
    if (it->runs) srt_release_all(db, it->runs, it->nruns);
    kv_free(&db->al, it->own);
    kv_free(&db->al, it->ownpfx.p);
    kv_free(&db->al, it->kw.src);
    kv_free(&db->al, it->kw.rel);
    kv_free(&db->al, it->cx.ka.p);
    kv_free(&db->al, it->cx.kb.p);
    kv_free(&db->al, it->bnd.p);
    kv_free(&db->al, it);
}

/* Close every iterator of a transaction that is ending, and drop its
 * private run. */
static void txn_close_iters(kvdb_txn *t)
{
    while (t->iters) {
        kvdb_iter *it = t->iters;
        t->iters = it->next;
        it_free(it);
    }
    if (t->priv) {
        kv_lock(&t->db->mu_srt);
        srt_release(t->db, t->priv);
        kv_unlock(&t->db->mu_srt);
        t->priv = NULL;
    }
}

/* The write transaction's own writes, sorted, as tombstones or PUTs at
 * their pending offsets, with their common prefix in it->ownpfx. */
static int it_own_writes(kvdb_iter *it)
{
    kvdb_txn *t = it->t;
    kvdb *db = t->db;
    size_t n = t->ws.n, i, k = 0;
    srt_ent *e, *tmp;
    srt_acc acc;
    int rc = KVDB_OK;
    if (!n) return KVDB_OK;
    e = (srt_ent *)kv_malloc(&db->al, n * sizeof *e);
    tmp = (srt_ent *)kv_malloc(&db->al, n * sizeof *e);
    if (!e || !tmp) {
        kv_free(&db->al, e);
        kv_free(&db->al, tmp);
        return kv_err(KVDB_ENOMEM, "out of memory");
    }
    if (!t->ws.promoted) {
        for (i = 0; i < t->ws.n; i++) e[k++].off = t->ws.inl[i].pos - 1;
    } else {
        for (i = 0; i < t->ws.cap; i++)
            if (t->ws.tab[i].pos) e[k++].off = t->ws.tab[i].pos - 1;
    }
    memset(&acc, 0, sizeof acc);
    for (i = 0; i < k && !rc; i++) {
        const uint8_t *p = t->wbuf.p + e[i].off;
        e[i].off = (it->rd.wb_off + e[i].off) | (p[8] == LG_DEL ? SRT_DEL : 0);
        rc = srt_acc_add(db, &acc, &e[i], i, p + LG_REC, kv_ld16(p + 10));
    }
    if (!rc && k) {
        srt_acc_finish(&acc, e, k);
        srt_sort(&it->cx, e, tmp, k); /* keys are distinct: any order of equals is fine */
        rc = kv_buf_reserve(&db->al, &it->ownpfx, acc.cpl + 1);
        if (!rc && acc.cpl) memcpy(it->ownpfx.p, acc.first.p, acc.cpl);
        it->ownpfx.len = acc.cpl;
    }
    srt_acc_free(db, &acc);
    kv_free(&db->al, tmp);
    it->own = e;
    it->nown = k;
    return rc ? rc : it->cx.rc;
}

static int it_open(kvdb_txn *t, const void *lo, size_t lolen, const void *hi, size_t hilen, unsigned flags,
                   kvdb_iter **out)
{
    kvdb *db;
    kvdb_iter *it;
    size_t i;
    int rc;
    if (!out) return kv_err(KVDB_EINVAL, "kvdb_iter: out is NULL");
    *out = NULL;
    if (!t) return kv_err(KVDB_EINVAL, "kvdb_iter: NULL transaction");
    if (flags & ~KVDB_ITER_REVERSE) return kv_err(KVDB_EINVAL, "kvdb_iter: unknown flags");
    if ((lo && lolen > KVDB_MAX_KEY) || (hi && hilen > KVDB_MAX_KEY + 1))
        return kv_err(KVDB_ETOOBIG, "kvdb_iter: bound longer than the longest key");
    db = t->db;
    it = (kvdb_iter *)kv_malloc(&db->al, sizeof *it);
    if (!it) return kv_err(KVDB_ENOMEM, "out of memory");
    memset(it, 0, sizeof *it);
    it->t = t;
    it->flags = flags;
    rd_init(&it->rd, db, t->ver);
    if (t->write) {
        it->rd.wb_off = t->ver->end;
        it_sync(it);
    }
    it->cx.r = &it->rd;
    it->has_lo = lo != NULL;
    it->has_hi = hi != NULL;
    it->lolen = lo ? lolen : 0;
    it->hilen = hi ? hilen : 0;
    rc = kv_buf_reserve(&db->al, &it->bnd, it->lolen + it->hilen + 1);
    if (rc) goto fail;
    if (it->lolen) memcpy(IT_LO(it), lo, it->lolen);
    if (it->hilen) memcpy(IT_HI(it), hi, it->hilen);
    rc = srt_acquire(db, &it->rd, t->ver->end, &t->priv, &it->runs, &it->nruns);
    if (rc) goto fail;
    if (t->write) {
        rc = it_own_writes(it);
        if (rc) goto fail;
    }
    it->kw.nsrc = it->nruns + (it->nown ? 1 : 0);
    it->kw.src = (it_src *)kv_malloc(&db->al, (it->kw.nsrc ? it->kw.nsrc : 1) * sizeof *it->kw.src);
    if (!it->kw.src) { rc = kv_err(KVDB_ENOMEM, "out of memory"); goto fail; }
    for (i = 0; i < it->nruns; i++)
        src_set(&it->kw.src[i], it->runs[i]->e, it->runs[i]->n, it->runs[i]->pfx, it->runs[i]->cpl);
    if (it->nown) src_set(&it->kw.src[it->nruns], it->own, it->nown, it->ownpfx.p, it->ownpfx.len);
    rc = srt_kway_init(db, &it->kw);
    if (rc) goto fail;
    it_position(it, NULL, 0);
    if (it->cx.rc) { rc = it->cx.rc; goto fail; }
    it->next = t->iters;
    if (t->iters) t->iters->pprev = &it->next;
    it->pprev = &t->iters;
    t->iters = it;
    *out = it;
    return KVDB_OK;
fail:
    it_free(it);
    return rc;
}

int kvdb_iter_range(kvdb_txn *t, const void *lo, size_t lolen, const void *hi, size_t hilen, unsigned flags,
                    kvdb_iter **out)
{
    kv_clearerr();
    return it_open(t, lo, lolen, hi, hilen, flags, out);
}

int kvdb_iter_prefix(kvdb_txn *t, const void *prefix, size_t plen, unsigned flags, kvdb_iter **out)
{
    uint8_t *hi;
    size_t hl = plen;
    int rc;
    kv_clearerr();
    if (out) *out = NULL;
    if (!prefix && plen) return kv_err(KVDB_EINVAL, "kvdb_iter_prefix: NULL prefix with nonzero length");
    if (!t) {
        if (out) *out = NULL;
        return kv_err(KVDB_EINVAL, "kvdb_iter_prefix: NULL transaction");
    }
    if (plen > KVDB_MAX_KEY) {
        if (out) *out = NULL;
        return kv_err(KVDB_ETOOBIG, "kvdb_iter_prefix: prefix longer than the longest key");
    }
    /* hi = the prefix with trailing 0xff dropped and the last byte + 1 */
    hi = (uint8_t *)kv_malloc(&t->db->al, plen ? plen : 1);
    if (!hi) return kv_err(KVDB_ENOMEM, "out of memory");
    if (plen) memcpy(hi, prefix, plen);
    while (hl && hi[hl - 1] == 0xff) hl--;
    if (hl) hi[hl - 1]++;
    rc = it_open(t, plen ? prefix : NULL, plen, hl ? hi : NULL, hl, flags, out);
    kv_free(&t->db->al, hi);
    return rc;
}

int kvdb_iter_seek(kvdb_iter *it, const void *key, size_t klen)
{
    kv_clearerr();
    if (!it) return kv_err(KVDB_EINVAL, "kvdb_iter_seek: NULL iterator");
    if (!key && klen) return kv_err(KVDB_EINVAL, "kvdb_iter_seek: NULL key with nonzero length");
    if (klen > KVDB_MAX_KEY + 1) return kv_err(KVDB_ETOOBIG, "kvdb_iter_seek: key too long");
    it_sync(it);
    it->cx.rc = KVDB_OK;
    it_position(it, key ? (const uint8_t *)key : (const uint8_t *)"", klen);
    return it->cx.rc;
}

int kvdb_iter_next(kvdb_iter *it, const void **key, size_t *klen, const void **val, size_t *vlen)
{
    int rev;
    kv_clearerr();
    if (!it) return kv_err(KVDB_EINVAL, "kvdb_iter_next: NULL iterator");
    rev = (it->flags & KVDB_ITER_REVERSE) != 0;
    it_sync(it);
    it->cx.rc = KVDB_OK;
    for (;;) {
        srt_ent e;
        uint64_t off;
        const uint8_t *k;
        size_t kn;
        kv_hit hit;
        size_t from;
        int rc = srt_kway_next(&it->cx, &it->kw, rev, &e, &from);
        if (rc <= 0) return rc ? rc : KVDB_DONE;
        off = SRT_AT(&e) | (e.off & SRT_DEL);
        if (it->rd.base) { /* before compaction, key order is random in the log: fetch ahead */
            const it_src *s = &it->kw.src[from];
            size_t ahead = rev ? (s->cur >= IT_PREFETCH && s->cur < s->n ? s->cur - IT_PREFETCH : s->n)
                               : s->cur + IT_PREFETCH;
            if (ahead < s->n) RD_PREFETCH(&it->rd, SRT_AT(&s->e[ahead]));
        }
        /* bounds */
        rc = srt_key(&it->rd, off & ~SRT_DEL, &it->cx.ka, &k, &kn);
        if (rc) return rc;
        if (!rev && it->has_hi && kv_keycmp(k, kn, IT_HI(it), it->hilen) >= 0) return KVDB_DONE;
        if (rev && it->has_lo && kv_keycmp(k, kn, IT_LO(it), it->lolen) < 0) return KVDB_DONE;
        if (off & SRT_DEL) continue;
        /* the record: verified, pointers valid until the txn ends */
        if (it->rd.base || (it->rd.wb && off >= it->rd.wb_off)) {
            rc = rd_match(&it->rd, off, k, kn, &hit);
            if (rc < 0) return rc;
            if (rc == 0) return kv_err(KVDB_ECORRUPT, "%s: sorted index disagrees with the log at %llu", it->t->db->path, (unsigned long long)off);
            if (key) *key = k;
            if (klen) *klen = kn;
            if (val) *val = hit.val;
            if (vlen) *vlen = hit.vlen;
            return KVDB_OK;
        } else { /* pread: copy key and value into the transaction's arena */
            uint8_t *p;
            size_t kk = kn;
            rc = rd_match(&it->rd, off, k, kn, &hit);
            if (rc < 0) return rc;
            if (rc == 0) return kv_err(KVDB_ECORRUPT, "%s: sorted index disagrees with the log at %llu", it->t->db->path, (unsigned long long)off);
            p = (uint8_t *)txn_arena_alloc(it->t, kk + hit.vlen + 1);
            if (!p) return kv_err(KVDB_ENOMEM, "out of memory");
            memcpy(p, k, kk);
            if (hit.vlen) {
                rc = it->t->db->vfs->read(it->t->db->vfs->ctx, it->rd.file, hit.voff, p + kk, hit.vlen);
                if (rc) return rc;
            }
            if (key) *key = p;
            if (klen) *klen = kk;
            if (val) *val = p + kk;
            if (vlen) *vlen = hit.vlen;
            return KVDB_OK;
        }
    }
}

void kvdb_iter_close(kvdb_iter *it)
{
    if (!it) return;
    *it->pprev = it->next;
    if (it->next) it->next->pprev = it->pprev;
    it_free(it);
}

/* ======================================================================
 * SECTION: sidecar
 *
 * "<database>.idx" persists the indexes so that reopening reads them
 * instead of the whole log.  It is derived data: the log alone always
 * rebuilds it, and any doubt about it means it is ignored.
 *
 *   Header (128 bytes, little-endian)
 *     [0,8)     magic "\x89KVX\r\n\x1a\n"
 *     [8,12)    u32 sidecar version (2; 1 had no run prefix: ignored)
 *     [12,16)   u32 layout: 1 for a little-endian host with 8-byte
 *               pointers -- the leaf images are the in-memory layout, so a
 *               host with another layout rebuilds from the log instead
 *     [16,32)   database id            [32,40)  hash seed
 *     [40,48)   u64 checksum of the log's header
 *     [48,56)   u64 P: log bytes covered; the log must hold an intact
 *               COMMIT record ending exactly at P with sequence [56,64)
 *     [56,64)   u64 that sequence number
 *     [64,72)   u64 sorted entries      [72,80)  u64 their offset E
 *     [80,88)   u64 leaves              [88,96)  u64 their offset
 *     [96,104)  u64 live keys           [104,112) u64 live bytes
 *     [112,120) u64 XXH3 of bytes [128, end), seeded with the hash seed
 *     [120,128) u64 XXH3 of bytes [0,120)
 *   Run prefix, at 128: u64 cpl, the cpl prefix bytes, zeros up to E =
 *   128 + (8 + cpl) rounded up to a multiple of 16.
 *   Sorted entries, at E: the merged runs, tombstones dropped, 16 bytes
 *   each in the in-memory layout (srt_ent: u64 k, the 8 key bytes after
 *   the prefix; u64 offset | lc << 56), encoded at the run prefix.
 *   Leaves: per leaf a 16-byte descriptor (u8 parent level, u8 local
 *   depth, u16 0, u32 path = the child indices from the root, 6 bits per
 *   level; u32 cap; u32 count) followed by the leaf's image (its 32-byte
 *   header with gen 0 and adj 0xFF, then its slots).
 *
 * Loading maps the file; the leaves are used in place (never written or
 * freed: hix_drop and hix_free_tree skip nodes with adj 0xFF, and a write
 * copies them like any shared node) and the sorted entries become the
 * oldest run, so memory is touched only as keys are used.  The mapping
 * lives until close.  Writing happens at close and in kvdb_checkpoint():
 * temporary file, sync, rename, directory sync.
 * ====================================================================== */
#define SC_MAGIC "\x89KVX\r\n\x1a\n"
#define SC_VERSION 2
#define SC_HDR 128
#define SC_EOFF(cpl) (SC_HDR + (((uint64_t)(cpl) + 8 + 15) & ~(uint64_t)15)) /* entries' offset */
#define SC_MAPPED 0xFF     /* hix_node.adj of a node inside the sidecar */

static uint32_t sc_layout(void)
{
    const uint16_t one = 1;
    return (*(const uint8_t *)&one == 1 && sizeof(void *) == 8 && sizeof(hix_node) == 32) ? 1u : 0u;
}

static char *sc_name(kvdb *db, const char *suffix)
{
    size_t a = strlen(db->path), b = strlen(suffix);
    char *p = (char *)kv_malloc(&db->al, a + b + 1);
    if (!p) return NULL;
    memcpy(p, db->path, a);
    memcpy(p + a, suffix, b + 1);
    return p;
}

/* Buffered writer with a running checksum. */
typedef struct sc_out {
    kvdb *db;
    kvdb_file *f;
    uint64_t off;          /* file offset of buf[0] */
    kv_buf buf;
    XXH3_state_t st;
    int rc;
} sc_out;

static void sc_flush(sc_out *o)
{
    if (!o->rc && o->buf.len) o->rc = o->db->vfs->write(o->db->vfs->ctx, o->f, o->off, o->buf.p, o->buf.len);
    o->off += o->buf.len;
    o->buf.len = 0;
}

static void sc_put(sc_out *o, const void *p, size_t n)
{
    if (o->rc) return;
    XXH3_64bits_update(&o->st, p, n);
    if (o->buf.len + n > ((size_t)1 << 20)) sc_flush(o);
    if (n > ((size_t)1 << 20)) {
        if (!o->rc) o->rc = o->db->vfs->write(o->db->vfs->ctx, o->f, o->off, p, n);
        o->off += n;
        return;
    }
    if (!o->rc) o->rc = kv_buf_reserve(&o->db->al, &o->buf, n);
    if (o->rc) return;
    memcpy(o->buf.p + o->buf.len, p, n);
    o->buf.len += n;
}

/* Write every leaf below inner node in, whose path so far is path. */
static void sc_put_leaves(sc_out *o, const hix_inner *in, uint32_t path, uint64_t *nleaves)
{
    unsigned i = 0;
    while (i < HIX_FAN && !o->rc) {
        hix_ref c = in->child[i];
        if (!HIX_CODE(c)) {
            sc_put_leaves(o, (const hix_inner *)HIX_NODE(c), (path << 6) | i, nleaves);
            i++;
        } else {
            const hix_node *l = HIX_NODE(c);
            uint8_t d[16];
            hix_node h;
            d[0] = in->h.level;
            d[1] = l->ldepth;
            d[2] = d[3] = 0;
            kv_st32(d + 4, (path << 6) | i);
            kv_st32(d + 8, l->cap);
            kv_st32(d + 12, l->count);
            sc_put(o, d, sizeof d);
            memset(&h, 0, sizeof h);
            h.count = l->count;
            h.cap = l->cap;
            h.ldepth = l->ldepth;
            h.code = l->code;
            h.adj = SC_MAPPED;
            sc_put(o, &h, sizeof h);
            sc_put(o, hix_slots(l), (size_t)l->cap * HIX_SLOT);
            (*nleaves)++;
            i += 1u << (6 - l->ldepth);
        }
    }
}

/* Write the sidecar for version v (pinned by the caller).  A sidecar must
 * never cover log bytes that are not durable: after a power loss the log
 * could hold garbage below its position while still being long enough to
 * pass the checks.  So the log is synced up to v first, or, when may_sync
 * is 0 (SYNC_OFF), nothing is written unless it already is. */
static int sc_write(kvdb *db, kv_ver *v, int may_sync)
{
    sc_out o;
    kv_rd r;
    srt_run **runs = NULL;
    size_t nruns = 0, i, cpl = 0;
    const uint8_t *pfx = NULL;
    srt_kway kw;
    srt_prj *prj = NULL;
    srt_cx cx;
    uint8_t h[SC_HDR], lh[LG_HDR];
    uint64_t nent = 0, nleaves = 0, leaves_off, eoff, epoch;
    char *name = NULL, *tmp = NULL;
    int rc;

    if (!sc_layout() || db->inmem || db->rdonly) return KVDB_OK;
    {
        uint64_t synced;
        int gone;
        kv_lock(&db->mu_sync); /* a swap changes db->file under it */
        gone = v->log->f != db->file; /* compacted away meanwhile */
        synced = db->synced;
        epoch = db->epoch;
        kv_unlock(&db->mu_sync);
        if (gone) return KVDB_OK;
        if (v->end > synced) {
            if (!may_sync) return KVDB_OK;
            rc = kv_sync_to(db, v->end, epoch);
            if (rc) return rc;
        }
    }
    memset(&o, 0, sizeof o);
    memset(&cx, 0, sizeof cx);
    memset(&kw, 0, sizeof kw);
    rd_init(&r, db, v);
    cx.r = &r;
    rc = db->vfs->read(db->vfs->ctx, v->log->f, 0, lh, LG_HDR);
    if (rc) return rc;
    name = sc_name(db, ".idx");
    tmp = sc_name(db, ".idx.tmp");
    if (!name || !tmp) { rc = kv_err(KVDB_ENOMEM, "out of memory"); goto out; }
    rc = srt_acquire(db, &r, v->end, NULL, &runs, &nruns);
    if (rc) goto out;
    kw.src = (it_src *)kv_malloc(&db->al, (nruns ? nruns : 1) * sizeof *kw.src);
    prj = (srt_prj *)kv_malloc(&db->al, (nruns ? nruns : 1) * sizeof *prj);
    if (!kw.src || !prj) { rc = kv_err(KVDB_ENOMEM, "out of memory"); goto out; }
    kw.nsrc = nruns;
    for (i = 0; i < nruns; i++) {
        src_set(&kw.src[i], runs[i]->e, runs[i]->n, runs[i]->pfx, runs[i]->cpl);
        if (!runs[i]->n) continue;
        /* the written run's prefix: common to every run prefix */
        if (!pfx) {
            pfx = kw.src[i].pfx;
            cpl = runs[i]->cpl;
        } else {
            cpl = srt_lcp(pfx, kw.src[i].pfx, cpl < runs[i]->cpl ? cpl : runs[i]->cpl);
        }
    }
    if (!pfx) pfx = srt_nopfx;
    for (i = 0; i < nruns; i++)
        if (runs[i]->n) srt_prj_init(&prj[i], kw.src[i].pfx, kw.src[i].cpl, cpl);
    rc = srt_kway_init(db, &kw);
    if (rc) goto out;
    db->vfs->remove(db->vfs->ctx, tmp);
    rc = db->vfs->open(db->vfs->ctx, tmp, KVDB_VFS_CREATE | KVDB_VFS_EXCL, &o.f);
    if (rc) goto out;
    o.db = db;
    o.off = SC_HDR;
    XXH3_INITSTATE(&o.st);
    XXH3_64bits_reset_withSeed(&o.st, db->seed);
    eoff = SC_EOFF(cpl);
    {   /* the run prefix */
        uint8_t c8[8], zero[16];
        kv_st64(c8, cpl);
        memset(zero, 0, sizeof zero);
        sc_put(&o, c8, 8);
        if (cpl) sc_put(&o, pfx, cpl);
        sc_put(&o, zero, (size_t)(eoff - SC_HDR - 8 - cpl));
    }
    for (;;) { /* the merged sorted entries, encoded at the written prefix */
        srt_ent e;
        size_t from = 0;
        int k = nruns ? srt_kway_next(&cx, &kw, 0, &e, &from) : 0;
        if (k < 0) { rc = k; goto out; }
        if (k == 0) break;
        if (e.off & SRT_DEL) continue;
        e = srt_proj(&prj[from], &e);
        sc_put(&o, &e, sizeof e);
        nent++;
    }
    leaves_off = eoff + nent * sizeof(srt_ent);
    sc_put_leaves(&o, (const hix_inner *)HIX_NODE(v->root), 0, &nleaves);
    sc_flush(&o);
    if (o.rc) { rc = o.rc; goto out; }
    memset(h, 0, sizeof h);
    memcpy(h, SC_MAGIC, 8);
    kv_st32(h + 8, SC_VERSION);
    kv_st32(h + 12, sc_layout());
    memcpy(h + 16, db->id, 16);
    kv_st64(h + 32, db->seed);
    kv_st64(h + 40, XXH3_64bits(lh, LG_HDR));
    kv_st64(h + 48, v->end);
    kv_st64(h + 56, v->seq);
    kv_st64(h + 64, nent);
    kv_st64(h + 72, eoff);
    kv_st64(h + 80, nleaves);
    kv_st64(h + 88, leaves_off);
    kv_st64(h + 96, v->keys);
    kv_st64(h + 104, v->live);
    kv_st64(h + 112, XXH3_64bits_digest(&o.st));
    kv_st64(h + 120, XXH3_64bits(h, 120));
    rc = db->vfs->write(db->vfs->ctx, o.f, 0, h, SC_HDR);
    if (!rc) rc = db->vfs->sync(db->vfs->ctx, o.f);
    if (!rc) {
        rc = db->vfs->close(db->vfs->ctx, o.f);
        o.f = NULL;
    }
    if (!rc) rc = db->vfs->rename(db->vfs->ctx, tmp, name);
    if (!rc) rc = db->vfs->sync_dir(db->vfs->ctx, name);
    if (!rc) { /* unless a swap came meanwhile: then it covers the old file */
        kv_lock(&db->mu_ck); /* (the swap bumps the epoch, then clears sc_end under mu_ck) */
        kv_lock(&db->mu_sync);
        if (db->epoch == epoch) db->sc_end = v->end;
        kv_unlock(&db->mu_sync);
        kv_unlock(&db->mu_ck);
    }
out:
    if (o.f) db->vfs->close(db->vfs->ctx, o.f);
    if (rc && tmp) db->vfs->remove(db->vfs->ctx, tmp);
    kv_free(&db->al, o.buf.p);
    kv_free(&db->al, cx.ka.p);
    kv_free(&db->al, cx.kb.p);
    kv_free(&db->al, kw.src);
    kv_free(&db->al, kw.rel);
    kv_free(&db->al, prj);
    if (runs) srt_release_all(db, runs, nruns);
    kv_free(&db->al, name);
    kv_free(&db->al, tmp);
    return rc;
}

/* Place one mapped leaf into the tree at root (inner nodes made as needed).
 * 0 on success, -1 if the sidecar contradicts itself. */
static int sc_place(hix_w *w, hix_inner *root, unsigned level, unsigned ldepth, uint32_t path, const hix_node *l)
{
    hix_inner *in = root;
    unsigned lv, idx, span, base, i;
    for (lv = 0; lv < level; lv++) {
        hix_ref *slot = &in->child[(path >> (6 * (level - lv))) & 63u];
        if (!*slot) {
            hix_inner *ni = (hix_inner *)hix_alloc(w, 0);
            if (!ni) return -2;
            memset(ni->child, 0, sizeof ni->child);
            ni->h.level = (uint8_t)(lv + 1);
            *slot = (hix_ref)ni;
        } else if (HIX_CODE(*slot)) {
            return -1;
        }
        in = (hix_inner *)HIX_NODE(*slot);
    }
    idx = path & 63u;
    span = 1u << (6 - ldepth);
    base = idx & ~(span - 1);
    if (idx != base) return -1;
    for (i = 0; i < span; i++)
        if (in->child[base + i]) return -1;
    for (i = 0; i < span; i++) in->child[base + i] = hix_mkref(l);
    return 0;
}

static int sc_complete(const hix_inner *in)
{
    unsigned i;
    for (i = 0; i < HIX_FAN; i++) {
        if (!in->child[i]) return 0;
        if (!HIX_CODE(in->child[i]) && !sc_complete((const hix_inner *)HIX_NODE(in->child[i]))) return 0;
    }
    return 1;
}

/* Does the sidecar entry e agree with the log below P: a PUT record whose
 * key starts with the run prefix and encodes to e?  (Checked for the first
 * and last entries: a prefix that does not belong to the entries would
 * misplace every key without failing any other check.)  1 yes, 0 no, < 0
 * the error that kept it from reading the log. */
static int sc_ent_ok(kvdb *db, uint64_t P, const uint8_t *pfx, size_t cpl, const srt_ent *e)
{
    uint8_t hdr[LG_REC], *key;
    uint64_t off = SRT_AT(e);
    size_t kn, rest;
    int ok;
    if ((e->off & SRT_DEL) || off < LG_HDR || off > P || P - off < LG_REC) return 0;
    ok = db->vfs->read(db->vfs->ctx, db->file, off, hdr, LG_REC);
    if (ok) return ok;
    kn = kv_ld16(hdr + 10);
    if (hdr[8] != LG_PUT || kn < cpl || P - off - LG_REC < kn) return 0;
    key = (uint8_t *)kv_malloc(&db->al, kn + 1);
    if (!key) return KVDB_ENOMEM;
    ok = db->vfs->read(db->vfs->ctx, db->file, off + LG_REC, key, kn);
    if (!ok) {
        rest = kn - cpl;
        ok = memcmp(key, pfx, cpl) == 0 && e->k == srt_pack(key + cpl, rest < 8 ? rest : 8) &&
             SRT_LC(e) == (rest < SRT_LONG ? rest : SRT_LONG);
    }
    kv_free(&db->al, key);
    return ok;
}

/* Does sidecar header b (SC_HDR bytes) verify, and belong to the log whose
 * 64-byte header is lh (the same id, seed and header, so a sidecar of an
 * earlier generation never does)?  NULL if so, else why not.  A sidecar
 * covers only synced log (sc_write), so the P of one that does is durable
 * evidence: the log held P bytes on stable storage once. */
static const char *sc_hdr_check(const uint8_t *b, const uint8_t *lh)
{
    if (memcmp(b, SC_MAGIC, 8) || kv_ld32(b + 12) != sc_layout()) return "foreign or damaged";
    if (kv_ld32(b + 8) != SC_VERSION) return "of another version";
    if (kv_ld64(b + 120) != XXH3_64bits(b, 120) || memcmp(b + 16, lh + 24, 16) || kv_ld64(b + 32) != kv_ld64(lh + 16) ||
        kv_ld64(b + 40) != XXH3_64bits(lh, LG_HDR))
        return "foreign or damaged";
    return NULL;
}

/* Try to load the sidecar into v (whose tree is empty).  1: loaded, replay
 * the log from *start; 0: not usable (why in db->sc_why), full replay;
 * < 0: an error that fails the open (out of memory).  Sets db->hz_sc when
 * the header verifies, and db->hz_log from the COMMIT that ends at P. */
static int sc_load(kvdb *db, kv_ver *v, uint64_t logsize, uint64_t *start)
{
    kvdb_file *f = NULL;
    const uint8_t *m = NULL;
    uint8_t *heap = NULL;
    uint64_t size = 0, P, nent, eoff, nleaves, loff, pos, i, cpl = 0;
    uint8_t lh[LG_HDR];
    hix_w w;
    hix_inner *root = NULL;
    srt_run *run = NULL, **runs = NULL;
    char *name;
    int rc, ok = 0;
    const char *why = "no sidecar";

    *start = LG_HDR;
    if (!sc_layout() || db->inmem) return 0;
    name = sc_name(db, ".idx");
    if (!name) return kv_err(KVDB_ENOMEM, "out of memory");
    rc = db->vfs->open(db->vfs->ctx, name, KVDB_VFS_RDONLY, &f);
    kv_free(&db->al, name);
    if (rc) {
        if (rc != KVDB_NOTFOUND) {
            db->sc_rc = rc;
            why = "unreadable";
        }
        kv_clearerr();
        goto out;
    }
    why = "unreadable";
    if ((db->sc_rc = db->vfs->size(db->vfs->ctx, f, &size)) != 0 || size < SC_HDR || size > ((uint64_t)1 << 46)) goto out;
    if (db->use_map && db->vfs->map(db->vfs->ctx, f, size, (const void **)&m) == KVDB_OK) {
        /* mapped */
    } else {
        m = NULL;
        heap = (uint8_t *)kv_malloc(&db->al, (size_t)size);
        if (!heap) { rc = kv_err(KVDB_ENOMEM, "out of memory reading the sidecar"); ok = rc; goto out; }
        if ((db->sc_rc = db->vfs->read(db->vfs->ctx, f, 0, heap, (size_t)size)) != 0) goto out;
    }
    {
        const uint8_t *b = m ? m : heap;
        if ((db->sc_rc = db->vfs->read(db->vfs->ctx, db->file, 0, lh, LG_HDR)) != 0) { why = "unreadable"; goto out; }
        if ((why = sc_hdr_check(b, lh)) != NULL) goto out;
        P = kv_ld64(b + 48);
        db->hz_sc = P; /* evidence even if the rest fails (kvdb_open, rcv_scan) */
        nent = kv_ld64(b + 64);
        eoff = kv_ld64(b + 72);
        nleaves = kv_ld64(b + 80);
        loff = kv_ld64(b + 88);
        why = "covers more log than there is";
        if (P < LG_HDR || P > logsize) goto out;
        why = "damaged";
        if (size < SC_HDR + 8) goto out;
        cpl = kv_ld64(b + SC_HDR);
        if (cpl > KVDB_MAX_KEY || eoff != SC_EOFF(cpl) || eoff > size) goto out;
        for (pos = SC_HDR + 8 + cpl; pos < eoff; pos++)
            if (b[pos]) goto out;
        if (nent > (size - eoff) / sizeof(srt_ent) || loff != eoff + nent * sizeof(srt_ent) || loff > size) goto out;
        if (kv_ld64(b + 112) != XXH3_64bits_withSeed(b + SC_HDR, (size_t)(size - SC_HDR), db->seed)) goto out;
        why = "does not match the log";
        if (P > LG_HDR) { /* an intact COMMIT must end at P, with the recorded sequence */
            uint8_t c[LG_REC + LG_COMMIT_LEN];
            lg_rec rec;
            if (P < LG_HDR + sizeof c) goto out;
            if ((db->sc_rc = db->vfs->read(db->vfs->ctx, db->file, P - sizeof c, c, sizeof c)) != 0) {
                why = "unreadable";
                goto out;
            }
            if (lg_parse(c, P - sizeof c, sizeof c, &rec) || rec.type != LG_COMMIT ||
                kv_ld64(c) != lg_checksum(db->seed, P - sizeof c, c, sizeof c) || kv_ld64(c + LG_REC) != kv_ld64(b + 56))
                goto out;
            db->hz_log = kv_ld64(c + LG_REC + 8); /* the horizon of the log it covers */
            db->hz_seal = kv_ld32(c + LG_REC + 16) == 0 && db->hz_log == P - sizeof c;
        } else if (nent || kv_ld64(b + 56)) {
            goto out;
        }
        if (nent) {
            int e = sc_ent_ok(db, P, b + SC_HDR + 8, (size_t)cpl, (const srt_ent *)(const void *)(b + eoff));
            if (e > 0) e = sc_ent_ok(db, P, b + SC_HDR + 8, (size_t)cpl, (const srt_ent *)(const void *)(b + loff) - 1);
            if (e < 0) {
                db->sc_rc = e;
                why = "unreadable";
            }
            if (e <= 0) goto out;
        }
        /* the hash index: inner nodes here, leaves in place */
        w.db = db;
        w.pool = &db->pool;
        w.gen = db->gen;
        w.retired = NULL;
        w.nretired = 0;
        w.rd = NULL;
        root = (hix_inner *)hix_alloc(&w, 0);
        if (!root) { ok = KVDB_ENOMEM; goto out; }
        memset(root->child, 0, sizeof root->child);
        why = "damaged index";
        for (pos = loff, i = 0; i < nleaves; i++) {
            const uint8_t *d = b + pos;
            const hix_node *l;
            uint32_t cap, cnt, k, seen = 0;
            const uint8_t *sl;
            int pr;
            if (size - pos < 16 + sizeof(hix_node)) goto out;
            cap = kv_ld32(d + 8);
            cnt = kv_ld32(d + 12);
            if (d[0] >= HIX_LEVELS || d[1] > 6 || cap < HIX_LEAF_MIN || cap > (1u << 24) || cap % 8 ||
                (uint64_t)cap * HIX_SLOT > size - pos - 16 - sizeof(hix_node))
                goto out;
            l = (const hix_node *)(const void *)(d + 16);
            if (((uintptr_t)l & 15) || l->gen || l->adj != SC_MAPPED || l->cap != cap || l->count != cnt ||
                l->ldepth != d[1] || l->code != hix_code_of(cap) || cnt >= cap)
                goto out;
            for (k = 0, sl = hix_slots(l); k < cap; k++, sl += HIX_SLOT)
                if (hix_stag(sl)) seen++;
            if (seen != cnt) goto out;
            pr = sc_place(&w, root, d[0], d[1], kv_ld32(d + 4), l);
            if (pr == -2) { ok = KVDB_ENOMEM; goto out; }
            if (pr) goto out;
            pos += 16 + sizeof(hix_node) + (uint64_t)cap * HIX_SLOT;
        }
        if (pos != size || !sc_complete(root)) goto out;
        /* the sorted entries: the oldest run (allocate all before installing
         * anything: after the switch below nothing may fail) */
        run = (srt_run *)kv_malloc(&db->al, sizeof *run);
        runs = (srt_run **)kv_malloc(&db->al, 8 * sizeof *runs);
        if (!run || !runs) {
            kv_free(&db->al, run);
            kv_free(&db->al, runs);
            ok = kv_err(KVDB_ENOMEM, "out of memory");
            goto out;
        }
        run->lo = LG_HDR;
        run->hi = P;
        run->n = (size_t)nent;
        run->cap = 0;
        run->refs = 1;
        run->e = (const srt_ent *)(const void *)(b + eoff);
        run->cpl = (size_t)cpl;
        run->pfx = b + SC_HDR + 8;
        run->bytes = sizeof *run;
        db->srt_bytes += sizeof *run;
        /* install */
        hix_free_tree(db, &db->pool, v->root, 0);
        v->root = (hix_ref)root;
        root = NULL;
        v->keys = kv_ld64(b + 96);
        v->live = kv_ld64(b + 104);
        v->seq = kv_ld64(b + 56);
        db->seq = v->seq;
        db->runs = runs;
        db->runs_cap = 8;
        db->runs[0] = run;
        db->nruns = 1;
        db->sc_base = m ? m : heap;
        db->sc_len = size;
        db->sc_heap = heap != NULL;
        db->sc_file = f;
        db->sc_end = P;
        heap = NULL;
        m = NULL;
        f = NULL;
        *start = P;
        ok = 1;
        why = "loaded";
    }
out:
    if (root) hix_free_tree(db, &db->pool, (hix_ref)root, 0);
    if (m) db->vfs->unmap(db->vfs->ctx, f, m, size);
    kv_free(&db->al, heap);
    if (f) db->vfs->close(db->vfs->ctx, f);
    db->sc_why = why;
    return ok;
}

/* Automatic checkpoints.  After a commit, once the log has grown by half
 * of what the sidecar covers (at least 64 MiB) since the last checkpoint, a
 * helper thread writes a new one from the published snapshot -- readers and
 * writers go on meanwhile.  Built without threads, checkpoints happen only
 * at close and in kvdb_checkpoint(). */

static int cp_step(kvdb *db, uint64_t budget);
#ifndef KVDB_NO_THREADS
static int ck_stopping(kvdb *db);
#endif
static void cp_failed(kvdb *db);
static void cp_maybe(kvdb *db, uint64_t end);

#ifndef KVDB_NO_THREADS
static void *ck_main(void *arg)
{
    kvdb *db = (kvdb *)arg;
    kv_lock(&db->mu_ck);
    for (;;) {
        kv_ver *v;
        int cp;
        while (!db->ck_want && !db->cp_want && !db->srt_want && !db->jobs && !db->ck_stop)
            kv_wait(&db->cv_ck, &db->mu_ck);
        if (db->jobs) { /* slow system calls the writer left */
            kv_job *j = db->jobs;
            db->jobs = j->next;
            if (!db->jobs) db->jobs_tail = &db->jobs;
            kv_unlock(&db->mu_ck);
            kv_job_run(db, j);
            kv_free(&db->al, j);
            kv_lock(&db->mu_ck);
            continue;
        }
        if (db->ck_stop) break;
        if (db->srt_want && !db->cp_want && !db->ck_want) { /* sort what was committed */
            kv_rd r;
            srt_run **runs;
            size_t n;
            db->srt_want = 0;
            kv_unlock(&db->mu_ck);
            v = ver_acquire(db);
            rd_init(&r, db, v);
            if (srt_acquire(db, &r, v->end, NULL, &runs, &n) == KVDB_OK) srt_release_all(db, runs, n);
            ver_release(db, v);
            kv_lock(&db->mu_ck);
            continue;
        }
        cp = db->cp_want;
        db->cp_want = 0;
        if (!cp) db->ck_want = 0;
        kv_unlock(&db->mu_ck);
        if (cp) { /* an automatic compaction, in slices so that close can stop it */
            int rc;
            kv_lock(&db->mu_ck);
            db->cp_running = 1;
            kv_unlock(&db->mu_ck);
            kv_lock(&db->mu_cp);
            do rc = cp_step(db, (uint64_t)4 << 20);
            while (rc == KVDB_OK && !ck_stopping(db));
            if (rc < 0 && rc != KVDB_EBUSY) cp_failed(db);
            kv_unlock(&db->mu_cp);
            kv_lock(&db->mu_ck);
            db->cp_running = 0;
            if (rc == KVDB_DONE && !db->inmem) db->ck_want = 1; /* a sidecar for the new file */
            kv_unlock(&db->mu_ck);
        } else if (!kv_sticky(db)) {
            v = ver_acquire(db);
            kv_lock(&db->mu_ckpt);
            (void)sc_write(db, v, db->sync_mode != KVDB_SYNC_OFF); /* a failure leaves the old sidecar */
            kv_unlock(&db->mu_ckpt);
            ver_release(db, v);
        }
        kv_lock(&db->mu_ck);
    }
    kv_unlock(&db->mu_ck);
    return NULL;
}
#endif

#ifndef KVDB_NO_THREADS
static int ck_stopping(kvdb *db)
{
    int stop;
    kv_lock(&db->mu_ck);
    stop = db->ck_stop;
    kv_unlock(&db->mu_ck);
    return stop;
}
#endif

/* A failed automatic compaction is not retried until the file has grown
 * by the minimum size again (disk full would fail it at every commit). */
static void cp_failed(kvdb *db)
{
    uint64_t end;
    kv_lock(&db->mu_ver);
    end = db->cur->end;
    kv_unlock(&db->mu_ver);
    db->cp_retry_at = end + db->cp_min;
}

/* Log written since the shared sorted runs end that the checkpointer
 * thread sorts in the background, once key order is in use (the runs
 * exist: built by an iterator or loaded from the sidecar): at least this
 * much, and at least 1/8 of what the runs cover, so that the merges stay
 * geometric.  Iterators then find the runs ready instead of sorting. */
#define SRT_BG_MIN ((uint64_t)(KVDB_CK_MIN_BYTES) / 16)

static void ck_maybe(kvdb *db, uint64_t end)
{
#ifndef KVDB_NO_THREADS
    uint64_t since, covered = 0;
    int sort = 0;
    if (db->rdonly) return;
    /* Only if mu_srt is free: a sort holds it for as long as it takes
     * (seconds for a whole log), and a commit must not wait for that --
     * the check is a hint, the next commit makes it again. */
    if (kv_trylock(&db->mu_srt)) {
        if (db->nruns) { /* (after a compaction swap end may count in the old file: a hint only) */
            covered = db->runs[db->nruns - 1]->hi;
            sort = end > covered && end - covered >= SRT_BG_MIN && end - covered >= covered / 8;
        }
        kv_unlock(&db->mu_srt);
    }
    kv_lock(&db->mu_ck);
    since = end - db->sc_end;
    if (!db->inmem && !db->ck_stop && !db->ck_want && end > db->sc_end && since >= (uint64_t)(KVDB_CK_MIN_BYTES) && since >= db->sc_end / 2) {
        if (!db->ck_started && pthread_create(&db->ck_thread, NULL, ck_main, db) == 0) db->ck_started = 1;
        if (db->ck_started) {
            db->ck_want = 1;
            kv_broadcast(&db->cv_ck);
        }
    }
    if (sort && !db->ck_stop && !db->srt_want) {
        if (!db->ck_started && pthread_create(&db->ck_thread, NULL, ck_main, db) == 0) db->ck_started = 1;
        if (db->ck_started) {
            db->srt_want = 1;
            kv_broadcast(&db->cv_ck);
        }
    }
    kv_unlock(&db->mu_ck);
    cp_maybe(db, end);
#else
    cp_maybe(db, end);
#endif
}

/* Unmap, close or free on the thread when there is one (see kv_job) and
 * the file or block is big (files: KVDB_CK_MIN_BYTES, as for checkpoints),
 * else now.  After ck_stop, and in builds without threads, always now. */
static void ck_job(kvdb *db, int big, int kind, kvdb_file *f, const void *base, uint64_t len)
{
    kv_job j0;
    (void)big;
    j0.kind = kind;
    j0.seq = 0;
    j0.f = f;
    j0.base = base;
    j0.len = len;
    j0.next = NULL;
#ifndef KVDB_NO_THREADS
    if (big && (!db->inmem || kind == KV_JOB_FREE) && ck_enqueue(db, &j0)) return;
#endif
    kv_job_run(db, &j0);
}

static void ck_stop(kvdb *db)
{
#ifndef KVDB_NO_THREADS
    int started;
    kv_lock(&db->mu_ck);
    db->ck_stop = 1;
    started = db->ck_started;
    kv_broadcast(&db->cv_ck);
    kv_unlock(&db->mu_ck);
    if (started) pthread_join(db->ck_thread, NULL); /* it runs the jobs left first */
    db->ck_started = 0;
    if (db->rsv_log) kv_rsv_collect(db); /* so close cuts what it reserved */
#else
    (void)db;
#endif
}

/* ======================================================================
 * SECTION: compaction
 *
 * The log only grows; compaction gives back the space of overwritten and
 * deleted records by writing the live records of a snapshot, in key order,
 * into a new file ("<path>.compact") and renaming it over the database.
 *
 *   start     (writer role, briefly) pin the published version S, reserve
 *             a write generation for the new index, create and lock the
 *             new file and write its header: same seed and id, generation
 *             one higher.
 *   copy      (no lock) walk S in key order through the sorted runs and
 *             append each live record to the new file, verified on the way,
 *             in batches closed by COMMIT records, collecting the new
 *             file's sorted base run (already in order) and its keys'
 *             hashes.  Under kvdb_compact a thread of its own writes one
 *             buffer while the copy fills the next (the copy's writer).
 *   index     (no lock) build the new hash index from the compactor's own
 *             node pool, inserting in hash order (consecutive inserts share
 *             a leaf; in key order each would miss the cache).
 *   catch up  (no lock) replay what was committed to the old file since
 *             S, transaction by transaction, into the new file and index;
 *             then sync the new file.
 *   swap      (writer role) replay the last commits, append a COMMIT that
 *             seals the copy (its durable field covers it), sync, rename
 *             over the database, sync the directory, and install the new
 *             file, index, base run and version.  Commits that were
 *             waiting for a sync of the old file are released: their data
 *             is in the new one, which is durable.
 * Every phase is done in bounded slices (kvdb_compact_step), so an
 * application, or the commit path when automatic compaction runs without a
 * thread, can spread it out.
 *
 * Invariants:
 *   1. Until the rename the database is the old file, untouched by the
 *      compaction; after it, the new file, complete and synced, holding
 *      every commit acknowledged before the swap.  A crash in between
 *      leaves a stray "<path>.compact", removed by the next writable open.
 *   2. Nothing is acknowledged between the rename and the directory sync
 *      (the writer role is held); if that sync fails the handle goes
 *      sticky, as after any failed sync.
 *   3. A snapshot taken before the swap keeps its file, mapping, index and
 *      sorted runs (all referenced); the old index is freed once no version
 *      of the old file is left, in paced slices like other garbage.
 *   4. Offsets are only compared within one file: versions, readers and
 *      sorted runs carry their file, and sync targets their epoch.
 *   5. A failure before the rename (disk full included) abandons the
 *      compaction: the new file is removed and the database is unchanged
 *      and writable.
 * Cost: one sequential write of the live data, a read of it in key order,
 * and, while it runs, a second hash index (about 16-20 bytes per key), a
 * base run (16 bytes per key) and until the index is built the hashes (16
 * bytes per key; twice that while they are put in order).
 * ====================================================================== */
#define CP_FLUSH  ((size_t)1 << 20) /* buffered bytes written at once */
#define CP_BATCH  4096              /* copied records per COMMIT */
#define CP_NEAR   ((uint64_t)64 << 10) /* left for the swap to copy */
#define CP_ROUNDS 256               /* catch-up slices before the swap copies the rest */
#define CP_UNSYNCED ((uint64_t)1 << 20) /* synced before the swap if more is not */
#ifndef KVDB_CP_AUTO_STEP
#define KVDB_CP_AUTO_STEP ((size_t)256 << 10) /* work per automatic step */
#endif

enum { CP_COPY = 1, CP_INDEX = 2, CP_CATCHUP = 3 };

/* A copied key for the new index: built after the copy, in hash order, so
 * that consecutive inserts land in the same leaf (in key order they would
 * each miss the cache). */
typedef struct cp_hent {
    uint64_t h, off;
} cp_hent;

struct kv_cp {
    int phase;
    uint64_t t0;           /* start, for kvdb_stat */
    uint64_t sync_ns;      /* the swap's time in syncs of the file and directory */
    kv_ver *snap;          /* S: pinned, not counted as a reader */
    kv_rd srd;             /* reads S */
    srt_run **runs;        /* S in key order: its runs merged... */
    size_t nruns;
    srt_kway kw;
    srt_prj *prj;          /* ...with entries re-encoded at the prefix */
    const uint8_t *pfx;    /* common to all of them (the base run's) */
    size_t cpl;
    srt_cx cx;
    kv_buf rbuf;           /* a record read without a mapping */

    char *tmp;             /* "<path>.compact" */
    kv_log *log;           /* the new file */
    kv_map *map;
    int use_map;
    kv_buf buf;            /* encoded records not yet written... */
    uint64_t buf_off;      /* ...which start at this offset */
    uint64_t synced;       /* bytes of the new file known durable */
    uint32_t nrec;         /* records since the last COMMIT */
    uint64_t seq;          /* the new file's last commit sequence */
    uint64_t fgen;         /* its header's generation */

    hix_pool pool;         /* the new index and its nodes */
    hix_w w;
    kv_rd nrd;
    hix_ref root;
    uint64_t keys, live;
    srt_run *base;         /* key order of the copied records */
    uint64_t base_hi;      /* where the copy ended in the new file */
    cp_hent *hs;           /* copied keys, for the new index */
    size_t nhs, hs_cap;
    struct cp_bulk *bulk;  /* the index being built from hs */
    uint64_t from;         /* old log copied up to here */
    unsigned rounds;       /* catch-up slices so far */
    kv_deadtree *dt;       /* allocated ahead for the swap */
    int async;             /* kvdb_compact: the copy may write on a thread */
    struct cp_wr *wr;      /* that thread, while the copy runs */
    kv_buf spare;          /* the buffer it is writing (or has written) */
};

static uint64_t kv_now_ns(void)
{
#if defined(CLOCK_MONOTONIC) && !defined(_WIN32)
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#endif
    return (uint64_t)time(NULL) * 1000000000u;
}

/* The new file's reader, current with the buffer. */
static const kv_rd *cp_rd(kv_cp *cp)
{
    assert(!cp->wr); /* invariant 2 of the copy's writer */
    cp->nrd.base = cp->map ? cp->map->base : NULL;
    cp->nrd.end = cp->buf_off;
    cp->nrd.wb = cp->buf.p;
    cp->nrd.wb_off = cp->buf_off;
    cp->nrd.wb_len = cp->buf.len;
    return &cp->nrd;
}

/* The copy's writer.  Appending a new file costs CPU in the kernel
 * (pwrite copying into fresh page cache: 20-40% of kvdb_compact at 10M
 * keys on the 2-CPU test VM), so kvdb_compact hands each full buffer to a
 * thread of its own and fills the other meanwhile: the copy of 10M keys
 * 3.7-4.1 s -> 3.2-3.3 s.  Only the copy phase does this, and only for a
 * snapshot of KVDB_CP_ASYNC_MIN live bytes or more in a file (a thread
 * does not pay for less; an in-memory write is a memcpy); automatic
 * compaction and kvdb_compact_step write in their own thread, which
 * leaves the application's other CPU alone.
 *   1. At most one write is in flight; the next flush waits for it, so the
 *      file layer sees the writes in order, one at a time, and the mapping
 *      is never extended beside a write.
 *   2. The offsets below cp->buf_off are handed over but maybe not
 *      written: nothing reads the new file while the thread exists
 *      (cp_rd asserts it); the copy's end stops it, and so does cp_abort
 *      before it closes and removes the file.
 *   3. A failed write is reported, with the file layer's message, by the
 *      next flush or the stop, and abandons the compaction like any other.
 *   4. The thread calls nothing but the file layer's write: not the
 *      allocator, not the engine's locks. */
#ifndef KVDB_CP_ASYNC_MIN
#define KVDB_CP_ASYNC_MIN ((uint64_t)16 << 20)
#endif

#ifndef KVDB_NO_THREADS
typedef struct cp_wr {
    kv_mutex mu;
    kv_cond cv;
    kv_thread th;
    const kvdb_vfs *vfs;
    kvdb_file *f;
    int busy, stop;        /* a write handed over; the thread is to end */
    const uint8_t *p;      /* the write */
    size_t n;
    uint64_t off;
    int rc;                /* how the last write ended... */
    char msg[sizeof kv_errbuf]; /* ...and what the file layer said */
} cp_wr;

static void *cp_wr_main(void *arg)
{
    cp_wr *w = (cp_wr *)arg;
    kv_lock(&w->mu);
    for (;;) {
        int rc;
        while (!w->busy && !w->stop) kv_wait(&w->cv, &w->mu);
        if (!w->busy) break;
        kv_unlock(&w->mu);
        kv_clearerr();
        rc = w->vfs->write(w->vfs->ctx, w->f, w->off, w->p, w->n);
        kv_lock(&w->mu);
        if (rc) {
            w->rc = rc;
            memcpy(w->msg, kv_errbuf, sizeof w->msg);
        }
        w->busy = 0;
        kv_broadcast(&w->cv);
    }
    kv_unlock(&w->mu);
    return NULL;
}

/* Wait for the write in flight; its result. */
static int cp_wr_wait(kvdb *db, kv_cp *cp)
{
    cp_wr *w = cp->wr;
    int rc;
    if (!w) return KVDB_OK;
    kv_lock(&w->mu);
    while (w->busy) kv_wait(&w->cv, &w->mu);
    rc = w->rc;
    kv_unlock(&w->mu);
    if (!rc) return KVDB_OK;
    return w->msg[0] ? kv_err(rc, "%s", w->msg) : kv_err(rc, "%s: compaction: writing the new file failed", db->path);
}

/* The thread, if the copy should have one and can.  Caller: the copy. */
static void cp_wr_start(kvdb *db, kv_cp *cp)
{
    cp_wr *w;
    if (!cp->async || cp->wr || cp->phase != CP_COPY || db->inmem || cp->snap->live < KVDB_CP_ASYNC_MIN) return;
    cp->async = 0; /* one try */
    w = (cp_wr *)kv_malloc(&db->al, sizeof *w);
    if (!w) return; /* then the copy writes itself */
    memset(w, 0, sizeof *w);
    w->vfs = db->vfs;
    w->f = cp->log->f;
    kv_mutex_init(&w->mu);
    kv_cond_init(&w->cv);
    if (pthread_create(&w->th, NULL, cp_wr_main, w) != 0) {
        kv_cond_free(&w->cv);
        kv_mutex_free(&w->mu);
        kv_free(&db->al, w);
        return;
    }
    cp->wr = w;
}

/* Wait for the last write and end the thread; that write's result. */
static int cp_wr_stop(kvdb *db, kv_cp *cp)
{
    cp_wr *w = cp->wr;
    int rc;
    if (!w) return KVDB_OK;
    rc = cp_wr_wait(db, cp);
    kv_lock(&w->mu);
    w->stop = 1;
    kv_broadcast(&w->cv);
    kv_unlock(&w->mu);
    pthread_join(w->th, NULL);
    kv_cond_free(&w->cv);
    kv_mutex_free(&w->mu);
    kv_free(&db->al, w);
    cp->wr = NULL;
    return rc;
}
#else
#define cp_wr_wait(db, cp) ((void)(db), (void)(cp), KVDB_OK)
#define cp_wr_start(db, cp) ((void)(db), (void)(cp))
#define cp_wr_stop(db, cp) ((void)(db), (void)(cp), KVDB_OK)
#endif

/* Write the buffer: by the copy's thread if there is one (then swap in the
 * other buffer), else here. */
static int cp_flush(kvdb *db, kv_cp *cp)
{
    int rc;
    if (!cp->buf.len) return KVDB_OK;
    rc = cp_wr_wait(db, cp); /* invariant 1 */
    if (!rc) rc = kv_map_cover(db, cp->log, &cp->map, &cp->use_map, cp->buf_off + cp->buf.len);
    if (rc) return rc;
#ifndef KVDB_NO_THREADS
    if (cp->wr) {
        cp_wr *w = cp->wr;
        kv_buf t = cp->spare;
        cp->spare = cp->buf;
        cp->buf = t;
        cp->buf.len = 0;
        kv_lock(&w->mu);
        w->p = cp->spare.p;
        w->n = cp->spare.len;
        w->off = cp->buf_off;
        w->busy = 1;
        kv_broadcast(&w->cv);
        kv_unlock(&w->mu);
        cp->buf_off += cp->spare.len;
        cp->log->bytes = cp->buf_off;
        return KVDB_OK;
    }
#endif
    rc = db->vfs->write(db->vfs->ctx, cp->log->f, cp->buf_off, cp->buf.p, cp->buf.len);
    if (rc) return rc;
    cp->buf_off += cp->buf.len;
    cp->buf.len = 0;
    cp->log->bytes = cp->buf_off;
    return KVDB_OK;
}

/* Append a record to the new file; *off gets its offset. */
static int cp_emit(kvdb *db, kv_cp *cp, uint8_t type, const uint8_t *key, uint32_t klen, const uint8_t *val,
                   uint32_t vlen, uint64_t *off)
{
    size_t size = (size_t)LG_REC + klen + vlen;
    uint64_t at;
    uint8_t *q;
    int rc;
    if (cp->buf.len >= CP_FLUSH) {
        cp_wr_start(db, cp);
        rc = cp_flush(db, cp);
        if (rc) return rc;
    }
    rc = kv_buf_reserve(&db->al, &cp->buf, size);
    if (rc) return rc;
    at = cp->buf_off + cp->buf.len;
    q = cp->buf.p + cp->buf.len;
    lg_put_header(q, type, klen, vlen);
    if (type == LG_COMMIT) {
        kv_st64(q + LG_REC, ++cp->seq);
        kv_st64(q + LG_REC + 8, cp->synced);
        kv_st32(q + LG_REC + 16, cp->nrec);
        kv_st32(q + LG_REC + 20, 0);
        cp->nrec = 0;
    } else {
        memcpy(q + LG_REC, key, klen);
        if (vlen) memcpy(q + LG_REC + klen, val, vlen);
        cp->nrec++;
    }
    kv_st64(q, lg_checksum(db->seed, at, q, size));
    cp->buf.len += size;
    if (off) *off = at;
    return KVDB_OK;
}

static int cp_commit(kvdb *db, kv_cp *cp)
{
    return cp->nrec ? cp_emit(db, cp, LG_COMMIT, NULL, 0, NULL, LG_COMMIT_LEN, NULL) : KVDB_OK;
}

/* Apply one PUT or DEL to the new file and index. */
static int cp_apply(kvdb *db, kv_cp *cp, uint8_t type, const uint8_t *key, uint32_t klen, const uint8_t *val,
                    uint32_t vlen)
{
    uint64_t h = kv_hash(db->seed, key, klen), off, old = 0, osize;
    int rc = cp_emit(db, cp, type, key, klen, val, vlen, &off);
    if (rc) return rc;
    cp->w.rd = cp_rd(cp);
    if (type == LG_PUT) {
        rc = hix_put(&cp->w, &cp->root, h, key, klen, off, &old);
        if (rc) return rc;
        cp->live += (uint64_t)LG_REC + klen + vlen;
        if (!old) cp->keys++;
    } else {
        rc = hix_del(&cp->w, &cp->root, h, key, klen, &old);
        if (rc == KVDB_NOTFOUND)
            return kv_err(KVDB_ECORRUPT, "%s: compaction: a delete of a key the copy does not have", db->path);
        if (rc) return rc;
        cp->keys--;
    }
    if (old) {
        rc = rd_size(cp_rd(cp), old, &osize);
        if (rc) return rc;
        cp->live -= osize;
    }
    return KVDB_OK;
}

/* An empty index: one inner node whose children all point at one leaf. */
static int cp_empty_root(hix_w *w, hix_ref *out)
{
    hix_node *leaf = hix_alloc(w, HIX_LEAF_MIN);
    hix_inner *root = leaf ? (hix_inner *)hix_alloc(w, 0) : NULL;
    unsigned i;
    if (!root) {
        if (leaf) hix_free_node(w->db, w->pool, leaf);
        return KVDB_ENOMEM;
    }
    for (i = 0; i < HIX_FAN; i++) root->child[i] = hix_mkref(leaf);
    *out = (hix_ref)root;
    return KVDB_OK;
}

static void cp_pool_free(kvdb *db, hix_pool *pl)
{
    unsigned i;
    for (i = 0; i < KV_NFREE; i++)
        while (pl->free_nodes[i]) {
            hix_node *n = pl->free_nodes[i];
            pl->free_nodes[i] = n->link;
            pl->n_free[i]--;
            pl->free_bytes -= hix_size(n->cap) + n->adj;
            pl->bytes -= hix_size(n->cap) + n->adj;
            kv_free(&db->al, (uint8_t *)n - n->adj);
        }
}

/* Abandon the compaction in progress (invariant 5).  Caller holds mu_cp. */
static void cp_abort(kvdb *db)
{
    kv_cp *cp = db->cp;
    if (!cp) return;
    db->cp = NULL;
    if (cp->wr) { /* before the file goes (invariant 2 of the writer); the first error is the one to tell */
        char msg[sizeof kv_errbuf];
        memcpy(msg, kv_errbuf, sizeof msg);
        (void)cp_wr_stop(db, cp);
        memcpy(kv_errbuf, msg, sizeof msg);
    }
    kv_lock(&db->mu_ver);
    db->cp_active = 0;
    kv_unlock(&db->mu_ver);
    if (cp->root) hix_free_tree(db, &cp->pool, cp->root, 0);
    cp_pool_free(db, &cp->pool);
    if (cp->base) {
        kv_lock(&db->mu_srt);
        srt_release(db, cp->base);
        kv_unlock(&db->mu_srt);
    }
    if (cp->runs) srt_release_all(db, cp->runs, cp->nruns);
    kv_free(&db->al, cp->kw.src);
    kv_free(&db->al, cp->kw.rel);
    kv_free(&db->al, cp->prj);
    kv_free(&db->al, cp->cx.ka.p);
    kv_free(&db->al, cp->cx.kb.p);
    kv_free(&db->al, cp->rbuf.p);
    kv_free(&db->al, cp->buf.p);
    kv_free(&db->al, cp->spare.p);
    kv_free(&db->al, cp->hs);
    kv_free(&db->al, cp->bulk);
    if (cp->snap) ver_release(db, cp->snap);
    kv_map_release(db, cp->map);
    kv_log_release(db, cp->log); /* closes the new file */
    if (cp->tmp) {
        db->vfs->remove(db->vfs->ctx, cp->tmp);
        kv_free(&db->al, cp->tmp);
    }
    kv_free(&db->al, cp->dt);
    kv_free(&db->al, cp);
}

/* Begin: pin S, make the new file.  Caller holds mu_cp. */
static int cp_start(kvdb *db)
{
    kv_cp *cp;
    uint8_t h[LG_HDR], oh[LG_HDR];
    kvdb_file *f = NULL;
    size_t i;
    int rc;

    cp = (kv_cp *)kv_malloc(&db->al, sizeof *cp);
    if (!cp) return kv_err(KVDB_ENOMEM, "out of memory");
    memset(cp, 0, sizeof *cp);
    db->cp = cp;
    kv_lock(&db->mu_ver);
    db->cp_active = 1;
    kv_unlock(&db->mu_ver);
    cp->t0 = kv_now_ns();
    cp->dt = (kv_deadtree *)kv_malloc(&db->al, sizeof *cp->dt);
    cp->tmp = sc_name(db, ".compact");
    if (!cp->dt || !cp->tmp) { rc = kv_err(KVDB_ENOMEM, "out of memory"); goto fail; }

    /* a generation of its own for the new index, and the snapshot */
    rc = kv_writer_take(db, 0, 0);
    if (rc) goto fail;
    cp->w.gen = ++db->gen;
    cp->snap = ver_acquire(db);
    cp->use_map = db->use_map;
    kv_writer_drop(db);
    cp->w.db = db;
    cp->w.pool = &cp->pool;
    rd_init(&cp->srd, db, cp->snap);
    cp->from = cp->snap->end;

    /* the new file: header first; locked before it can carry the name */
    rc = db->vfs->read(db->vfs->ctx, cp->snap->log->f, 0, oh, LG_HDR);
    if (rc) goto fail;
    db->vfs->remove(db->vfs->ctx, cp->tmp); /* a stray one: the open lock says no one else uses it */
    rc = db->vfs->open(db->vfs->ctx, cp->tmp, KVDB_VFS_CREATE | KVDB_VFS_EXCL, &f);
    if (rc) goto fail;
    cp->log = kv_log_new(db, f);
    if (!cp->log) {
        db->vfs->close(db->vfs->ctx, f);
        rc = KVDB_ENOMEM;
        goto fail;
    }
    rc = db->vfs->lock(db->vfs->ctx, f, 1);
    if (rc) goto fail;
    memcpy(h, oh, LG_HDR);
    kv_st64(h + 40, (uint64_t)time(NULL));
    cp->fgen = kv_ld64(oh + 48) + 1;
    kv_st64(h + 48, cp->fgen);
    kv_st64(h + 56, XXH3_64bits(h, 56));
    rc = kv_buf_reserve(&db->al, &cp->buf, LG_HDR);
    if (rc) goto fail;
    memcpy(cp->buf.p, h, LG_HDR);
    cp->buf.len = LG_HDR;
    cp->buf_off = 0;
    rc = cp_flush(db, cp);
    if (rc) goto fail;
    cp->synced = LG_HDR;
    cp->nrd.db = db;
    cp->nrd.file = f;

    /* the new index, and S in key order */
    rc = cp_empty_root(&cp->w, &cp->root);
    if (rc) goto fail;
    rc = srt_acquire(db, &cp->srd, cp->snap->end, NULL, &cp->runs, &cp->nruns);
    if (rc) goto fail;
    cp->kw.src = (it_src *)kv_malloc(&db->al, (cp->nruns ? cp->nruns : 1) * sizeof *cp->kw.src);
    cp->prj = (srt_prj *)kv_malloc(&db->al, (cp->nruns ? cp->nruns : 1) * sizeof *cp->prj);
    if (!cp->kw.src || !cp->prj) { rc = kv_err(KVDB_ENOMEM, "out of memory"); goto fail; }
    cp->kw.nsrc = cp->nruns;
    for (i = 0; i < cp->nruns; i++) { /* as sc_write: the prefix common to all runs */
        src_set(&cp->kw.src[i], cp->runs[i]->e, cp->runs[i]->n, cp->runs[i]->pfx, cp->runs[i]->cpl);
        if (!cp->runs[i]->n) continue;
        if (!cp->pfx) {
            cp->pfx = cp->kw.src[i].pfx;
            cp->cpl = cp->runs[i]->cpl;
        } else {
            cp->cpl = srt_lcp(cp->pfx, cp->kw.src[i].pfx, cp->cpl < cp->runs[i]->cpl ? cp->cpl : cp->runs[i]->cpl);
        }
    }
    if (!cp->pfx) cp->pfx = srt_nopfx;
    for (i = 0; i < cp->nruns; i++)
        if (cp->runs[i]->n) srt_prj_init(&cp->prj[i], cp->kw.src[i].pfx, cp->kw.src[i].cpl, cp->cpl);
    rc = srt_kway_init(db, &cp->kw);
    if (rc) goto fail;
    cp->cx.r = &cp->srd;
    kv_lock(&db->mu_srt);
    cp->base = srt_alloc(db, (size_t)cp->snap->keys, cp->cpl);
    if (cp->base && cp->cpl) memcpy((uint8_t *)(uintptr_t)cp->base->pfx, cp->pfx, cp->cpl);
    if (cp->base && !db->runs_cap) { /* room for the base run at the swap */
        db->runs = (srt_run **)kv_malloc(&db->al, 8 * sizeof *db->runs);
        if (db->runs) db->runs_cap = 8;
    }
    kv_unlock(&db->mu_srt);
    if (!cp->base) { rc = KVDB_ENOMEM; goto fail; }
    cp->base->n = 0;
    cp->base->lo = LG_HDR;
    cp->phase = CP_COPY;
    return KVDB_OK;
fail:
    cp_abort(db);
    return rc;
}

/* Read and verify the record at off of S. */
static int cp_read(kvdb *db, kv_cp *cp, uint64_t off, const uint8_t **p, lg_rec *rec)
{
    const kv_rd *r = &cp->srd;
    uint8_t hdr[LG_REC];
    int rc;
    if (off < LG_HDR || off >= r->end) goto bad;
    if (r->base) {
        *p = r->base + off;
        if (lg_parse(*p, off, r->end - off, rec) != KVDB_OK) goto bad;
    } else {
        rc = db->vfs->read(db->vfs->ctx, r->file, off, hdr, r->end - off < LG_REC ? (size_t)(r->end - off) : LG_REC);
        if (rc) return rc;
        if (lg_parse(hdr, off, r->end - off, rec) != KVDB_OK) goto bad;
        cp->rbuf.len = 0;
        rc = kv_buf_reserve(&db->al, &cp->rbuf, (size_t)rec->size);
        if (rc) return rc;
        rc = db->vfs->read(db->vfs->ctx, r->file, off, cp->rbuf.p, (size_t)rec->size);
        if (rc) return rc;
        *p = cp->rbuf.p;
    }
    if (kv_ld64(*p) != lg_checksum(db->seed, off, *p, rec->size)) goto bad;
    return KVDB_OK;
bad:
    return kv_err(KVDB_ECORRUPT, "%s: record at offset %llu is damaged (found while compacting; nothing was changed)",
                  db->path, (unsigned long long)off);
}

/* Order the copied keys by their tag's top 16 bits (one counting pass):
 * enough for consecutive inserts to share leaves. */
static int cp_hash_order(kvdb *db, kv_cp *cp)
{
    size_t *cnt, i, sum = 0;
    cp_hent *out;
    if (cp->nhs < 2) return KVDB_OK;
    cnt = (size_t *)kv_malloc(&db->al, 65536 * sizeof *cnt);
    out = (cp_hent *)kv_malloc(&db->al, cp->nhs * sizeof *out);
    if (!cnt || !out) {
        kv_free(&db->al, cnt);
        kv_free(&db->al, out);
        return kv_err(KVDB_ENOMEM, "out of memory");
    }
    memset(cnt, 0, 65536 * sizeof *cnt);
    for (i = 0; i < cp->nhs; i++) cnt[cp->hs[i].h >> 48]++;
    for (i = 0; i < 65536; i++) {
        size_t c = cnt[i];
        cnt[i] = sum;
        sum += c;
    }
    for (i = 0; i < cp->nhs; i++) out[cnt[cp->hs[i].h >> 48]++] = cp->hs[i];
    kv_free(&db->al, cnt);
    kv_free(&db->al, cp->hs);
    cp->hs = out;
    cp->hs_cap = cp->nhs;
    return KVDB_OK;
}

/* Insert copied keys into the new index, about budget bytes' worth (an
 * insert counts as 64).  1 when all are in. */
/* The index phase builds the new hash index from the copied keys in one
 * pass, top down, instead of inserting them one by one (which grows every
 * leaf through its sizes and splits it, copying each key several times).
 * For a node at some level, its keys -- a contiguous range of hs, sorted
 * by tag down to that level -- are counted per child and the 64 children
 * are cut into aligned blocks, each as large as possible while it holds at
 * most CP_SHARED_LIM keys (3/4 of the split point, so the leaf takes
 * inserts before it splits): such a block becomes one leaf of that local
 * depth, sized for its keys (at most 3/4 full).  A single child becomes one
 * leaf if it holds at most CP_BULK_LIM keys; a single child holding more
 * becomes an inner node one level down, built the same way (at the last
 * level, one large leaf).  An explicit stack of nodes under construction
 * lets the work stop after any block, so kvdb_compact_step's slices stay
 * bounded.  hs is ordered by the top 16 bits of the hash (cp_hash_order),
 * enough for levels 0 and 1; a node deeper down sorts its range first. */
#define CP_BULK_LIM 96
#define CP_SHARED_LIM (HIX_SPLIT_MAX * 3 / 4)

typedef struct cp_bframe {
    hix_inner *in;
    unsigned level, npart, ipart;
    struct { uint8_t c, span; size_t a, b; } part[HIX_FAN];
} cp_bframe;

struct cp_bulk {
    cp_bframe fr[HIX_LEVELS];
    unsigned depth;
};

static int cp_tag_cmp(const void *x, const void *y)
{
    uint32_t a = hix_tag(((const cp_hent *)x)->h), b = hix_tag(((const cp_hent *)y)->h);
    return a < b ? -1 : a > b;
}

/* Push a frame for the inner node in at level, holding hs[a, b): sort the
 * range if the order of hs does not reach this level, cut the children. */
static void cp_bulk_push(kv_cp *cp, hix_inner *in, unsigned level, size_t a, size_t b)
{
    cp_bframe *f = &cp->bulk->fr[cp->bulk->depth++];
    size_t cnt[HIX_FAN], i, pos = a;
    unsigned c;
    if (level >= 2 && b - a > 1) qsort(cp->hs + a, b - a, sizeof *cp->hs, cp_tag_cmp);
    memset(cnt, 0, sizeof cnt);
    for (i = a; i < b; i++) cnt[hix_idx(hix_tag(cp->hs[i].h), level)]++;
    f->in = in;
    f->level = level;
    f->npart = f->ipart = 0;
    for (c = 0; c < HIX_FAN;) {
        unsigned span = c ? c & (0u - c) : HIX_FAN, k; /* the largest aligned block at c */
        size_t sum;
        for (;;) {
            for (sum = 0, k = 0; k < span; k++) sum += cnt[c + k];
            if (span == 1 || sum <= CP_SHARED_LIM) break;
            span /= 2;
        }
        f->part[f->npart].c = (uint8_t)c;
        f->part[f->npart].span = (uint8_t)span;
        f->part[f->npart].a = pos;
        f->part[f->npart].b = pos + sum;
        f->npart++;
        pos += sum;
        c += span;
    }
}

/* Build the next part of the top frame: a leaf, or a node pushed. */
static int cp_bulk_part(kv_cp *cp)
{
    cp_bframe *f = &cp->bulk->fr[cp->bulk->depth - 1];
    unsigned c = f->part[f->ipart].c, span = f->part[f->ipart].span, d = 0;
    size_t a = f->part[f->ipart].a, b = f->part[f->ipart].b, i;
    f->ipart++;
    if (span == 1 && b - a > CP_BULK_LIM && f->level + 1 < HIX_LEVELS) {
        hix_inner *ni = (hix_inner *)hix_alloc(&cp->w, 0);
        if (!ni) return KVDB_ENOMEM;
        memset(ni->child, 0, sizeof ni->child); /* a tree freed half-built has no stray children */
        ni->h.level = (uint8_t)(f->level + 1);
        f->in->child[c] = (hix_ref)ni;
        cp_bulk_push(cp, ni, f->level + 1, a, b);
    } else {
        hix_node *l = hix_alloc(&cp->w, hix_cap_for((uint32_t)(b - a)));
        if (!l) return KVDB_ENOMEM;
        while ((unsigned)(HIX_FAN >> d) > span) d++;
        l->ldepth = (uint8_t)d;
        for (i = a; i < b; i++) hix_leaf_add(l, hix_tag(cp->hs[i].h), cp->hs[i].off);
        hix_set_range(f->in, c, d, hix_mkref(l));
    }
    return KVDB_OK;
}

/* Build the index from hs in slices of about budget/64 keys; 1 when done. */
static int cp_index(kvdb *db, kv_cp *cp, uint64_t budget)
{
    uint64_t n = budget / 64 ? budget / 64 : 1, done = 0;
    if (!cp->bulk) {
        hix_inner *root;
        if (cp->nhs > UINT32_MAX) return kv_err(KVDB_ETOOBIG, "%s: too many keys to compact", db->path);
        cp->bulk = (struct cp_bulk *)kv_malloc(&db->al, sizeof *cp->bulk);
        if (!cp->bulk) return kv_err(KVDB_ENOMEM, "out of memory");
        cp->bulk->depth = 0;
        root = (hix_inner *)hix_alloc(&cp->w, 0);
        if (!root) return KVDB_ENOMEM;
        memset(root->child, 0, sizeof root->child);
        if (cp->root) hix_free_tree(db, &cp->pool, cp->root, 0); /* the empty index of cp_start */
        cp->root = (hix_ref)root;
        cp_bulk_push(cp, root, 0, 0, cp->nhs);
        done += cp->nhs / 64; /* the counting pass */
    }
    while (cp->bulk->depth && done < n) {
        cp_bframe *f = &cp->bulk->fr[cp->bulk->depth - 1];
        int rc;
        if (f->ipart == f->npart) {
            cp->bulk->depth--;
            continue;
        }
        done += f->part[f->ipart].b - f->part[f->ipart].a + 1;
        rc = cp_bulk_part(cp);
        if (rc) return rc;
    }
    if (cp->bulk->depth) return 0;
    kv_free(&db->al, cp->bulk);
    cp->bulk = NULL;
    kv_free(&db->al, cp->hs);
    cp->hs = NULL;
    cp->nhs = cp->hs_cap = 0;
    return 1;
}

/* Copy up to budget bytes of S in key order.  1 when the copy is done. */
static int cp_copy(kvdb *db, kv_cp *cp, uint64_t budget)
{
    uint64_t done = 0;
    for (;;) {
        srt_ent e;
        const uint8_t *p = NULL;
        lg_rec rec;
        size_t from;
        uint64_t off, at;
        int k, rc;
        if (done >= budget) return 0;
        from = 0;
        k = cp->nruns ? srt_kway_next(&cp->cx, &cp->kw, 0, &e, &from) : 0;
        if (k < 0) return k;
        if (k == 0) break;
        if (e.off & SRT_DEL) continue;
        if (cp->srd.base) { /* key order is random in the old log: fetch ahead */
            const it_src *s = &cp->kw.src[from];
            if (s->cur + IT_PREFETCH < s->n) RD_PREFETCH(&cp->srd, SRT_AT(&s->e[s->cur + IT_PREFETCH]));
        }
        off = SRT_AT(&e);
        e = srt_proj(&cp->prj[from], &e); /* at the base run's prefix */
        rc = cp_read(db, cp, off, &p, &rec);
        if (rc) return rc;
        if (rec.type != LG_PUT)
            return kv_err(KVDB_ECORRUPT, "%s: sorted index points at a non-PUT record at %llu", db->path, (unsigned long long)off);
        if (cp->nhs == cp->hs_cap) {
            size_t ncap = cp->hs_cap ? cp->hs_cap * 2 : 4096;
            cp_hent *nh = ncap > ((size_t)-1) / sizeof *nh ? NULL
                        : (cp_hent *)kv_realloc(&db->al, cp->hs, ncap * sizeof *nh);
            if (!nh) return kv_err(KVDB_ENOMEM, "out of memory");
            cp->hs = nh;
            cp->hs_cap = ncap;
        }
        rc = cp_emit(db, cp, LG_PUT, p + LG_REC, rec.klen, p + LG_REC + rec.klen, rec.vlen, &at);
        if (rc) return rc;
        cp->hs[cp->nhs].h = kv_hash(db->seed, p + LG_REC, rec.klen);
        cp->hs[cp->nhs].off = at;
        cp->nhs++;
        cp->keys++;
        cp->live += rec.size;
        if (cp->base->n == cp->base->cap)
            return kv_err(KVDB_ECORRUPT, "%s: the sorted index holds more keys than the hash index", db->path);
        cp->base->own[cp->base->n].k = e.k;
        cp->base->own[cp->base->n].off = (e.off & ~(SRT_OFF | SRT_DEL)) | at;
        cp->base->n++;
        if (cp->nrec >= CP_BATCH) {
            rc = cp_commit(db, cp);
            if (rc) return rc;
        }
        done += rec.size;
    }
    {
        int rc = cp_commit(db, cp);
        if (!rc) rc = cp_wr_stop(db, cp);
        if (rc) return rc;
    }
    if (cp->keys != cp->snap->keys)
        return kv_err(KVDB_ECORRUPT, "%s: compaction copied %llu keys of %llu: the indexes disagree", db->path,
                      (unsigned long long)cp->keys, (unsigned long long)cp->snap->keys);
    cp->base_hi = cp->buf_off + cp->buf.len;
    cp->base->hi = cp->base_hi;
    /* S is no longer needed for key order */
    srt_release_all(db, cp->runs, cp->nruns);
    cp->runs = NULL;
    cp->nruns = 0;
    return 1;
}

/* Replay whole transactions of the old log from cp->from up to end (a
 * commit boundary) as seen by r: about budget bytes, never half a
 * transaction.  1 when at end, 0 if there is more, or an error. */
static int cp_catchup(kvdb *db, kv_cp *cp, const kv_rd *r, uint64_t end, uint64_t budget)
{
    kv_buf tmp = { NULL, 0, 0 };
    uint64_t start = cp->from, off = cp->from;
    int rc = KVDB_OK;
    while (off < end) {
        const uint8_t *p;
        lg_rec rec;
        uint8_t hdr[LG_REC];
        if (r->base) {
            p = r->base + off;
            if (lg_parse(p, off, end - off, &rec) != KVDB_OK) goto bad;
        } else {
            rc = db->vfs->read(db->vfs->ctx, r->file, off, hdr, end - off < LG_REC ? (size_t)(end - off) : LG_REC);
            if (rc) goto out;
            if (lg_parse(hdr, off, end - off, &rec) != KVDB_OK) goto bad;
            tmp.len = 0;
            rc = kv_buf_reserve(&db->al, &tmp, (size_t)rec.size);
            if (!rc) rc = db->vfs->read(db->vfs->ctx, r->file, off, tmp.p, (size_t)rec.size);
            if (rc) goto out;
            p = tmp.p;
        }
        if (kv_ld64(p) != lg_checksum(db->seed, off, p, rec.size)) goto bad;
        if (rec.type == LG_COMMIT) rc = cp_emit(db, cp, LG_COMMIT, NULL, 0, NULL, LG_COMMIT_LEN, NULL);
        else rc = cp_apply(db, cp, rec.type, p + LG_REC, rec.klen, p + LG_REC + rec.klen, rec.vlen);
        if (rc) goto out;
        off += rec.size;
        if (rec.type == LG_COMMIT) {
            cp->from = off;
            if (off - start >= budget) break;
        }
    }
    if (off >= end && cp->from != off) {
        rc = kv_err(KVDB_ECORRUPT, "%s: compaction: the transaction at %llu has no commit", db->path,
                    (unsigned long long)cp->from);
        goto out;
    }
    rc = cp->from >= end;
out:
    kv_free(&db->al, tmp.p);
    return rc;
bad:
    kv_free(&db->al, tmp.p);
    return kv_err(KVDB_ECORRUPT, "%s: record at offset %llu is damaged (found while compacting; nothing was changed)",
                  db->path, (unsigned long long)off);
}

/* Free nodes of whole old indexes once no version of their file is left
 * (invariant 3): move them to the list that ver_free_zombies drains. */
static void cp_reap_trees(kvdb *db)
{
    kv_deadtree **pp = &db->dtrees;
    while (*pp) {
        kv_deadtree *dt = *pp;
        if (db->oldest->gen > dt->gen) {
            hix_node *n = HIX_NODE(dt->root);
            *pp = dt->next;
            if (n->adj != 0xFF) {
                n->link = db->dtree_nodes;
                db->dtree_nodes = n;
            }
            kv_free(&db->al, dt);
        } else {
            pp = &dt->next;
        }
    }
}

/* Automatic compaction (kvdb_options.auto_compact), considered after each
 * commit: once dead bytes reach cp_pct percent of a file of at least cp_min
 * bytes.  With threads the checkpointer thread runs it in slices, and
 * writers wait only for the swap; without, each commit runs one slice of
 * KVDB_CP_AUTO_STEP bytes until it is done. */
static void cp_maybe(kvdb *db, uint64_t end)
{
    uint64_t size, dead;
    int go;
    (void)end;
    if (!db->cp_auto || db->rdonly) return;
    kv_lock(&db->mu_ver);
    size = db->cur->end;
    dead = size - LG_HDR - db->cur->live;
    kv_unlock(&db->mu_ver);
    go = size >= db->cp_min && size >= db->cp_retry_at && dead * 100 >= (uint64_t)db->cp_pct * size;
#ifndef KVDB_NO_THREADS
    if (!go) return;
    kv_lock(&db->mu_ck);
    if (!db->ck_stop && !db->cp_want && !db->cp_running) {
        if (!db->ck_started && pthread_create(&db->ck_thread, NULL, ck_main, db) == 0) db->ck_started = 1;
        if (db->ck_started) {
            db->cp_want = 1;
            kv_broadcast(&db->cv_ck);
        }
    }
    kv_unlock(&db->mu_ck);
#else
    if (go || db->cp) {
        int rc = cp_step(db, KVDB_CP_AUTO_STEP);
        if (rc < 0 && rc != KVDB_EBUSY) cp_failed(db);
    }
#endif
}

/* The swap (writer role held; invariants 1, 2).  rc < 0: abandoned. */
static int cp_swap(kvdb *db, kv_cp *cp)
{
    kv_ver *nv, *last;
    uint64_t old_end, new_end;
    kv_rd r;
    int rc, dirrc;
    unsigned i;

    /* the last commits, then the seal */
    rd_init(&r, db, db->cur);
    rc = cp_catchup(db, cp, &r, db->cur->end, UINT64_MAX);
    if (rc < 0) return rc;
    /* The seal vouches for everything before it: the file becomes the
     * database only by the rename below, after the sync that covers it. */
    cp->synced = cp->buf_off + cp->buf.len;
    rc = cp_emit(db, cp, LG_COMMIT, NULL, 0, NULL, LG_COMMIT_LEN, NULL); /* count 0: the seal */
    if (!rc) rc = cp_flush(db, cp);
    if (!rc) {
        uint64_t t = kv_now_ns();
        rc = db->vfs->sync(db->vfs->ctx, cp->log->f);
        cp->sync_ns += kv_now_ns() - t;
    }
    if (rc) return rc;
    new_end = cp->buf_off;
    cp->synced = new_end;
    nv = ver_alloc(db);
    if (!nv) return KVDB_ENOMEM;
    rc = kv_map_cover(db, cp->log, &cp->map, &cp->use_map, new_end);
    if (!rc) rc = db->vfs->rename(db->vfs->ctx, cp->tmp, db->path);
    if (rc) {
        ver_free(db, nv);
        return rc;
    }
    kv_free(&db->al, cp->tmp); /* the name is the database's now */
    cp->tmp = NULL;
    {
        uint64_t t = kv_now_ns();
        dirrc = db->vfs->sync_dir(db->vfs->ctx, db->path);
        cp->sync_ns += kv_now_ns() - t;
    }

    /* install: nothing below can fail */
    last = db->cur;
    old_end = db->end;
    kv_lock(&db->mu_sync);
    while (db->syncing) kv_wait(&db->cv_sync, &db->mu_sync); /* a sync of the old file in flight */
    db->file = cp->log->f;
    db->epoch++;
    db->written = db->synced = new_end;
    if (dirrc && !db->sticky) db->sticky = KVDB_EIO;
    kv_broadcast(&db->cv_sync); /* old-epoch waiters: their commits are in the new file */
    kv_unlock(&db->mu_sync);
    kv_log_release(db, db->log);
    db->log = cp->log;
    cp->log = NULL;
    kv_map_release(db, db->map);
    db->map = cp->map;
    cp->map = NULL;
    db->use_map = cp->use_map;
    db->end = new_end;
    kv_lock(&db->mu_ver);
    db->hz_log = new_end - LG_SEAL;
    db->hz_seal = 1;
    db->hz_sc = 0;
    kv_unlock(&db->mu_ver);
    kv_log_cap_set(db, new_end);
    db->seq = cp->seq;
    cp_pool_free(db, &cp->pool);
    db->pool.bytes += cp->pool.bytes;
    cp->pool.bytes = 0;

    nv->seq = cp->seq;
    nv->gen = ++db->gen;
    nv->end = new_end;
    nv->keys = cp->keys;
    nv->live = cp->live;
    nv->root = cp->root;
    cp->root = 0;
    nv->log = db->log;
    db->log->refs++;
    nv->map = db->map;
    if (nv->map) nv->map->refs++;
    nv->index_bytes = db->pool.bytes;
    cp->dt->root = last->root;
    cp->dt->gen = last->gen;
    cp->dt->next = db->dtrees;
    db->dtrees = cp->dt;
    cp->dt = NULL;

    kv_lock(&db->mu_srt);
    for (i = 0; i < db->nruns; i++) srt_release(db, db->runs[i]);
    db->nruns = 0;
    db->srt_file = db->file;
    if (cp->base->n && db->runs_cap) { /* else built from the log when needed */
        db->runs[0] = cp->base;
        db->nruns = 1;
        cp->base = NULL;
    }
    kv_unlock(&db->mu_srt);

    kv_lock(&db->mu_ver);
    db->cur->next = nv;
    db->cur = nv;
    db->pub = nv;
    db->cp_count++;
    db->cp_reclaimed = old_end > new_end ? old_end - new_end : 0;
    db->cp_ns = kv_now_ns() - cp->t0;
    kv_unlock(&db->mu_ver);
    kv_lock(&db->mu_ck);
    db->sc_end = 0; /* the sidecar is of the old file */
    kv_unlock(&db->mu_ck);
    ver_reclaim(db);
    ver_drain(db, 256);
    ver_free_zombies(db, 1024);
    return dirrc ? kv_err(KVDB_EIO, "%s: compacted, but syncing its directory failed; the handle refuses writes "
                          "until reopened", db->path) : KVDB_OK;
}

/* One slice of work; KVDB_DONE when a compaction has completed.  Caller
 * holds mu_cp. */
static int cp_step(kvdb *db, uint64_t budget)
{
    kv_cp *cp;
    int rc;
    if (!db->cp) {
        rc = cp_start(db);
        if (rc) return rc;
    }
    cp = db->cp;
    if (cp->phase == CP_COPY) {
        rc = cp_copy(db, cp, budget);
        if (rc == 1) rc = cp_hash_order(db, cp);
        else if (rc == 0) return KVDB_OK;
        if (rc < 0) goto fail;
        cp->phase = CP_INDEX;
        return KVDB_OK;
    }
    if (cp->phase == CP_INDEX) {
        rc = cp_index(db, cp, budget);
        if (rc < 0) goto fail;
        if (rc == 0) return KVDB_OK;
        cp->phase = CP_CATCHUP;
    }
    /* Catch up with the published state until it is less than CP_NEAR
     * ahead, so that the swap, which writers wait for, copies little.
     * Writers may outrun the slices: after CP_ROUNDS of them the swap
     * copies whatever is left, so a compaction always ends. */
    {
        kv_ver *v = ver_acquire(db);
        kv_rd r;
        uint64_t behind = v->end - cp->from, end = v->end;
        int more = behind > CP_NEAR && cp->rounds < CP_ROUNDS;
        rd_init(&r, db, v);
        /* S, pinned for the whole compaction, has the same file and, unless
         * the log was remapped since, the same mapping: read through those
         * and let v go at once.  A version held for the whole slice (35 ms
         * for 4 MiB at 10M keys) keeps every index node the writer replaces
         * meanwhile that it can see, 9-13K of them, to be sorted out when it
         * goes (which one commit did in 2.3-3.7 ms before ver_drain paced
         * it: 40-50 puts over 2 ms in each automatic compaction of 10M). */
        if (v->map == cp->snap->map && v->log == cp->snap->log) {
            ver_release(db, v);
            v = NULL;
        }
        rc = more ? cp_catchup(db, cp, &r, end, budget) : 0;
        if (v) ver_release(db, v);
        if (rc < 0) goto fail;
        if (more) {
            cp->rounds++;
            return KVDB_OK;
        }
    }
    /* Close to the end.  Make the bulk durable first, outside the writer
     * role (and catch up again with what came meanwhile), so that the
     * swap syncs little. */
    if (cp->buf_off + cp->buf.len - cp->synced > CP_UNSYNCED) {
        rc = cp_flush(db, cp);
        if (!rc) rc = db->vfs->sync(db->vfs->ctx, cp->log->f);
        if (rc) goto fail;
        cp->synced = cp->buf_off;
        return KVDB_OK;
    }
    rc = kv_writer_take(db, 0, 0);
    if (rc) return rc; /* EBUSY: the caller holds the write transaction; try later */
    {
        uint64_t t = kv_now_ns();
        rc = kv_sticky(db);
        if (rc) rc = kv_sticky_err(db, rc);
        else rc = cp_swap(db, cp);
        t = kv_now_ns() - t;
        kv_writer_drop(db);
        if (rc >= 0) {
            kv_lock(&db->mu_ver);
            db->cp_pause_ns = t;
            db->cp_pause_sync_ns = cp->sync_ns;
            kv_unlock(&db->mu_ver);
        }
    }
    cp_abort(db); /* not swapped: removes the new file; swapped: frees what is left */
    return rc < 0 ? rc : KVDB_DONE;
fail:
    cp_abort(db);
    return rc;
}

/* ======================================================================
 * SECTION: check and repair
 *
 * kvdb_check() verifies a database file without trusting any of it, and
 * kvdb_repair() copies what can be trusted into a new file.  Both work from
 * the path, not from a handle, because a damaged database may refuse to
 * open; both read the file through the file layer under a shared lock (so
 * no writer can change it meanwhile) and never write to it.
 *
 * The scan (chk_scan) walks the log from the header on, record by record,
 * verifying every checksum -- before the sidecar's checkpoint as well as
 * after it, unlike open.  At a record that does not verify (offset X) it
 * resyncs: every later offset is a candidate, and the first one holding a
 * record that verifies *at that offset* is where reading resumes (the
 * checksum seed includes the offset, so a stray copy never verifies, and a
 * random 16-byte header with a matching 64-bit checksum does not happen).
 * The bytes in between are reported as one damaged range.  Whether damage
 * is a torn tail or corruption is decided as recovery decides it: an intact
 * COMMIT after X whose durable field exceeds X proves X was once durable.
 * A transaction counts only if all its records and its COMMIT verify and
 * the COMMIT's record count matches; records resynced into the middle of a
 * transaction whose start was lost fail that count and are dropped.
 *
 * check then opens the database read-only and compares the indexes that
 * open built (from the sidecar, when it loaded, plus the log after it)
 * with the log: a second pass looks every record's key up in the hash
 * index, which must map each key to its newest PUT and to nothing for a
 * deleted key; the hash index's entries, its key count and live bytes must
 * match what the log implies; the ordered iterator must yield every live
 * key once, in increasing order, at the record the hash index names.
 *
 * Invariants:
 *   1. Nothing here writes to the checked or repaired file; repair writes
 *      only a file it created itself (exclusive create: never an existing
 *      one), and removes it again if it fails.
 *   2. Repair applies whole source transactions in log order; a batch of
 *      them is committed together, never part of one.
 *   3. Every problem reaches the report callback with the offset it is at
 *      (KVDB_CHECK_NOOFF when it has none); st->problems counts them, also
 *      beyond CHK_MAX_SAY, after which they are counted but not described.
 *   4. A torn tail -- what the next writable open would cut -- is a note,
 *      not a problem: the engine's crash semantics produce it.
 * ====================================================================== */
#define CHK_WIN ((size_t)4 << 20)    /* pread window */
#define CHK_MAX_SAY 1000             /* problems described one by one */
#define CHK_BATCH_RECS 100000u       /* repair: records per new transaction */
#define CHK_BATCH_BYTES ((uint64_t)64 << 20)

enum { CHK_OK, CHK_SHORT, CHK_HEADER, CHK_PAST_END, CHK_SUM };

typedef struct chk {
    const kvdb_check_opts *o;
    kvdb_check_stat *st;
    const kvdb_vfs *vfs;
    kvdb_allocator al;
    const char *path;
    kvdb_file *f;
    uint64_t size, seed;
    const uint8_t *map;    /* the whole file, or NULL: read through win */
    kv_buf win;            /* bytes [woff, woff + win.len) of the file */
    uint64_t woff;
    uint64_t base, total, tick; /* progress: done = base + position */
    uint64_t said;         /* problems described so far */
    int repair;
    int in_tail;           /* past damage that is a torn tail */
    uint64_t good;         /* end of the last complete transaction before the tail */
    uint64_t last_seq;
    uint64_t tail_txns;    /* intact transactions found inside the torn tail */
    uint64_t hz_sc;        /* what a verified sidecar header vouches for (sc_hdr_check) */
    kvdb *dst;             /* repair: the new database and its open batch */
    kvdb_txn *dt;
    uint64_t batch_recs, batch_bytes;
} chk;

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 4, 5)))
#endif
static void chk_say(chk *c, int problem, uint64_t off, const char *fmt, ...)
{
    char msg[640];
    va_list ap;
    if (problem) {
        c->st->problems++;
        if (c->said >= CHK_MAX_SAY) {
            if (c->said++ == CHK_MAX_SAY && c->o->report)
                c->o->report(c->o->ctx, KVDB_CHECK_PROBLEM, KVDB_CHECK_NOOFF,
                             "more problems: they are counted but not described");
            return;
        }
        c->said++;
    }
    if (!c->o->report) return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->o->report(c->o->ctx, problem ? KVDB_CHECK_PROBLEM : KVDB_CHECK_NOTE, off, msg);
}

static void chk_progress(chk *c, uint64_t pos, int force)
{
    uint64_t done = c->base + pos;
    if (!c->o->progress || (!force && done < c->tick)) return;
    c->tick = done + ((uint64_t)1 << 20);
    c->o->progress(c->o->ctx, done < c->total ? done : c->total, c->total);
}

/* A key for a message: printable bytes as they are, others \xNN, cut at 48. */
static const char *chk_keystr(const uint8_t *k, size_t n, char *buf, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, o = 0;
    for (i = 0; i < n && o + 8 < cap; i++) {
        if (i == 48) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (k[i] >= 0x20 && k[i] < 0x7f && k[i] != '\\' && k[i] != '"') {
            buf[o++] = (char)k[i];
        } else {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[k[i] >> 4];
            buf[o++] = hex[k[i] & 15];
        }
    }
    buf[o] = 0;
    return buf;
}

/* Bytes [off, off+n) of the file (the caller keeps off+n <= size); valid
 * until the next call. */
static int chk_at(chk *c, uint64_t off, size_t n, const uint8_t **p)
{
    size_t want;
    int rc;
    if (c->map) {
        *p = c->map + off;
        return KVDB_OK;
    }
    if (off >= c->woff && off + n <= c->woff + c->win.len) {
        *p = c->win.p + (off - c->woff);
        return KVDB_OK;
    }
    want = n > CHK_WIN ? n : CHK_WIN;
    if (want > c->size - off) want = (size_t)(c->size - off);
    c->win.len = 0;
    rc = kv_buf_reserve(&c->al, &c->win, want);
    if (rc) return rc;
    rc = c->vfs->read(c->vfs->ctx, c->f, off, c->win.p, want);
    if (rc) return rc;
    c->win.len = want;
    c->woff = off;
    *p = c->win.p;
    return KVDB_OK;
}

/* Does a record verify at off?  *why = CHK_OK (rec filled) or the reason. */
static int chk_verify(chk *c, uint64_t off, lg_rec *rec, int *why)
{
    const uint8_t *p;
    uint64_t avail = c->size - off;
    int rc;
    *why = CHK_SHORT;
    if (avail < LG_REC) return KVDB_OK;
    rc = chk_at(c, off, LG_REC, &p);
    if (rc) return rc;
    if (lg_parse(p, off, avail, rec) != KVDB_OK) {
        *why = lg_parse(p, off, UINT64_MAX, rec) == KVDB_OK ? CHK_PAST_END : CHK_HEADER;
        return KVDB_OK;
    }
    rc = chk_at(c, off, (size_t)rec->size, &p);
    if (rc) return rc;
    *why = kv_ld64(p) == lg_checksum(c->seed, off, p, rec->size) ? CHK_OK : CHK_SUM;
    return KVDB_OK;
}

static const char *chk_why(int why, const lg_rec *rec, char *buf, size_t cap)
{
    switch (why) {
    case CHK_SHORT: return "an incomplete record header";
    case CHK_PAST_END:
        snprintf(buf, cap, "a record of %llu bytes that runs past the end of the file",
                 (unsigned long long)rec->size);
        return buf;
    case CHK_SUM:
        snprintf(buf, cap, "a %s record of %llu bytes that fails its checksum",
                 rec->type == LG_PUT ? "PUT" : rec->type == LG_DEL ? "DEL" : "COMMIT", (unsigned long long)rec->size);
        return buf;
    default: return "an impossible record header";
    }
}

/* The first offset >= from holding a record that verifies, or the size. */
static int chk_resync(chk *c, uint64_t from, uint64_t *out)
{
    uint64_t o;
    for (o = from; o + LG_REC <= c->size; o++) {
        const uint8_t *p;
        lg_rec rec;
        int why, rc = chk_at(c, o, LG_REC, &p);
        if (rc) return rc;
        if (p[8] < LG_PUT || p[8] > LG_COMMIT || p[9] != 0) continue;
        rc = chk_verify(c, o, &rec, &why);
        if (rc) return rc;
        if (why == CHK_OK) {
            *out = o;
            return KVDB_OK;
        }
        if ((o & 0xFFFF) == 0) chk_progress(c, o, 0);
    }
    *out = c->size;
    return KVDB_OK;
}

/* Is there an intact COMMIT after x that says x had been synced (the test
 * recovery makes: rcv_evidence)?  *found = 1 and *where if so. */
static int chk_evidence(chk *c, uint64_t x, int *found, uint64_t *where)
{
    const uint64_t need = LG_REC + LG_COMMIT_LEN;
    uint64_t o;
    *found = 0;
    for (o = x + 1; o + need <= c->size; o++) {
        const uint8_t *p;
        int rc = chk_at(c, o, (size_t)need, &p);
        if (rc) return rc;
        if (p[8] == LG_COMMIT && p[9] == 0 && kv_ld16(p + 10) == 0 && kv_ld32(p + 12) == LG_COMMIT_LEN &&
            kv_ld64(p + 24) > x && kv_ld64(p) == lg_checksum(c->seed, o, p, need)) {
            *found = 1;
            *where = o;
            return KVDB_OK;
        }
    }
    return KVDB_OK;
}

/* Something at x stops recovery (damage, or a COMMIT that does not fit):
 * decide once whether it begins a torn tail.  Returns the rc; *problem = 1
 * if it is corruption. */
static int chk_classify(chk *c, uint64_t x, int *problem)
{
    uint64_t where = 0;
    int found, rc;
    *problem = 0;
    if (c->in_tail) return KVDB_OK;
    if (x < c->hz_sc) {
        *problem = 1;
        return KVDB_OK;
    }
    rc = chk_evidence(c, x, &found, &where);
    if (rc) return rc;
    if (found) {
        *problem = 1;
        return KVDB_OK;
    }
    c->in_tail = 1;
    chk_say(c, 0, c->good, "torn tail: the last %llu bytes, from offset %llu on, hold no complete transaction "
            "that was ever synced (the end of an interrupted write); the next writable open cuts them off",
            (unsigned long long)(c->size - c->good), (unsigned long long)c->good);
    return KVDB_OK;
}

/* Repair: copy one verified transaction (its records at offs) into the
 * new database's open batch; whole = 0 for the intact part of an
 * incomplete one (KVDB_REPAIR_PARTIAL). */
static int chk_apply(chk *c, const uint64_t *offs, size_t n, int whole)
{
    size_t i;
    int rc;
    if (!c->dt) {
        rc = kvdb_begin(c->dst, 0, &c->dt);
        if (rc) return rc;
    }
    for (i = 0; i < n; i++) {
        const uint8_t *p;
        uint64_t size;
        uint32_t kl, vl;
        rc = chk_at(c, offs[i], LG_REC, &p);
        if (rc) return rc;
        kl = kv_ld16(p + 10);
        vl = kv_ld32(p + 12);
        size = (uint64_t)LG_REC + kl + vl;
        rc = chk_at(c, offs[i], (size_t)size, &p);
        if (rc) return rc;
        if (p[8] == LG_PUT) rc = kvdb_txn_put(c->dt, p + LG_REC, kl, p + LG_REC + kl, vl);
        else rc = kvdb_txn_del(c->dt, p + LG_REC, kl);
        if (rc == KVDB_NOTFOUND) rc = KVDB_OK; /* deleting what a lost transaction wrote */
        if (rc) return rc;
        c->batch_bytes += size;
    }
    c->batch_recs += n;
    c->st->salvaged_records += n;
    c->st->salvaged_txns += whole != 0;
    if (c->batch_recs >= CHK_BATCH_RECS || c->batch_bytes >= CHK_BATCH_BYTES) {
        rc = kvdb_commit(c->dt);
        c->dt = NULL;
        c->batch_recs = c->batch_bytes = 0;
        if (rc) return rc;
    }
    return KVDB_OK;
}

/* Size of the (verified) record at off. */
static uint64_t chk_recsize(chk *c, uint64_t off)
{
    const uint8_t *p;
    if (chk_at(c, off, LG_REC, &p)) return 0;
    return (uint64_t)LG_REC + kv_ld16(p + 10) + kv_ld32(p + 12);
}

/* An incomplete transaction: its n intact records at offs (n may be 0),
 * bytes in all.  Repair with KVDB_REPAIR_PARTIAL copies those records (each
 * verified; what failed its checksum is not among them). */
static int chk_lost_txn(chk *c, int problem, uint64_t start, const uint64_t *offs, size_t n, uint64_t bytes,
                        const char *why)
{
    int partial = c->repair && (c->o->flags & KVDB_REPAIR_PARTIAL) && n;
    uint64_t saved = 0;
    size_t i;
    c->st->lost_txns++;
    c->st->lost_records += n;
    for (i = 0; partial && i < n; i++) saved += chk_recsize(c, offs[i]);
    c->st->lost_bytes += bytes - saved;
    chk_say(c, problem, start, "incomplete transaction: %zu record(s), %llu bytes from offset %llu, %s%s", n,
            (unsigned long long)bytes, (unsigned long long)start, why,
            !c->repair ? "" : partial ? "; its intact records saved (partial)" : "; not saved");
    if (!partial) return KVDB_OK;
    c->st->partial_records += n;
    return chk_apply(c, offs, n, 0);
}

/* Walk the whole log (see the section comment). */
static int chk_scan(chk *c)
{
    kv_buf pend = { NULL, 0, 0 };  /* offsets of the records since the last COMMIT */
    size_t npend = 0, after = 0;   /* after: index of the first record after the last damage */
    uint64_t off = LG_HDR, *po;
    char b[128];
    int rc = KVDB_OK, broken = 0;

    c->good = LG_HDR;
    while (off < c->size) {
        lg_rec rec;
        const uint8_t *p;
        int why, problem;
        chk_progress(c, off, 0);
        rc = chk_verify(c, off, &rec, &why);
        if (rc) goto out;
        if (why != CHK_OK) {
            uint64_t y = c->size;
            const char *w = chk_why(why, &rec, b, sizeof b);
            rc = chk_classify(c, off, &problem);
            if (!rc) rc = chk_resync(c, off + 1, &y);
            if (rc) goto out;
            chk_say(c, problem, off, "damaged: %s; bytes %llu..%llu (%llu bytes) hold no record that verifies%s%s", w,
                    (unsigned long long)off, (unsigned long long)y, (unsigned long long)(y - off),
                    problem ? ", and it had been synced (it lies below the durable horizon)" : "", c->repair ? "; skipped" : "");
            c->st->lost_bytes += y - off;
            broken = 1;
            after = npend;
            off = y;
            continue;
        }
        c->st->records++;
        c->st->bytes_verified += rec.size;
        if (rec.type != LG_COMMIT) {
            rc = kv_buf_reserve(&c->al, &pend, sizeof off);
            if (rc) goto out;
            memcpy(pend.p + pend.len, &off, sizeof off);
            pend.len += sizeof off;
            npend++;
            off += rec.size;
            continue;
        }
        rc = chk_at(c, off, (size_t)rec.size, &p);
        if (rc) goto out;
        po = (uint64_t *)(void *)pend.p;
        {
            uint64_t seq = kv_ld64(p + LG_REC), lost = 0;
            uint32_t cnt = kv_ld32(p + LG_REC + 16), zero = kv_ld32(p + LG_REC + 20);
            size_t i, orphans;
            /* A transaction is the cnt records right before its COMMIT. */
            if (zero || cnt > npend - after) {
                if (!broken) {
                    rc = chk_classify(c, off, &problem);
                    if (rc) goto out;
                }
                problem = !c->in_tail;
                for (i = 0; i < npend; i++) lost += chk_recsize(c, po[i]);
                rc = chk_lost_txn(c, problem, npend ? po[0] : off, po, npend, lost + rec.size,
                                  zero ? "its COMMIT has a nonzero reserved field"
                                       : broken ? "broken by the damage above" : "its COMMIT counts more records");
                if (rc) goto out;
                if (zero || !broken)
                    chk_say(c, problem, off, "COMMIT (sequence %llu) counts %lu record(s); %zu intact one(s) "
                            "precede it since the last complete transaction", (unsigned long long)seq,
                            (unsigned long)cnt, npend);
            } else {
                orphans = npend - cnt;
                if (orphans) { /* records whose own COMMIT is lost */
                    if (!broken) {
                        rc = chk_classify(c, po[0], &problem);
                        if (rc) goto out;
                    }
                    for (i = 0; i < orphans; i++) lost += chk_recsize(c, po[i]);
                    rc = chk_lost_txn(c, !c->in_tail, po[0], po, orphans, lost,
                                      broken ? "broken by the damage above" : "no COMMIT of their own follows them");
                    if (rc) goto out;
                }
                if (seq <= c->last_seq) {
                    rc = chk_classify(c, off, &problem);
                    if (rc) goto out;
                    chk_say(c, problem, off, "COMMIT sequence %llu does not follow the previous %llu",
                            (unsigned long long)seq, (unsigned long long)c->last_seq);
                }
                if (cnt) c->st->txns++; /* a seal is no transaction to report */
                if (c->in_tail) c->tail_txns += cnt != 0;
                else c->good = off + rec.size;
                if (kv_ld64(p + LG_REC + 8) >= c->st->horizon && !c->in_tail) {
                    c->st->horizon = kv_ld64(p + LG_REC + 8);
                    c->st->horizon_from = cnt == 0 && c->st->horizon == off ? "seal" : "commit";
                }
                if (c->repair && cnt) {
                    rc = chk_apply(c, po + orphans, cnt, 1);
                    if (rc) goto out;
                }
                if (seq > c->last_seq) c->last_seq = seq;
            }
        }
        npend = after = 0;
        broken = 0;
        pend.len = 0;
        off += rec.size;
    }
    if (npend || broken) { /* records after the last COMMIT: an interrupted transaction */
        int problem = 0;
        uint64_t lost = 0;
        size_t i;
        po = (uint64_t *)(void *)pend.p;
        if (!broken) {
            rc = chk_classify(c, po[0], &problem);
            if (rc) goto out;
        }
        for (i = 0; i < npend; i++) lost += chk_recsize(c, po[i]);
        if (npend) {
            rc = chk_lost_txn(c, !c->in_tail, po[0], po, npend, lost, "no COMMIT follows");
            if (rc) goto out;
        }
    }
    if (c->hz_sc > c->st->horizon) {
        c->st->horizon = c->hz_sc;
        c->st->horizon_from = "sidecar";
    }
    if (c->hz_sc > c->size)
        chk_say(c, 1, c->size, "the file ends at %llu bytes, but its sidecar says %llu bytes of it were synced: "
                "it was cut short (or is an older copy than its sidecar)", (unsigned long long)c->size,
                (unsigned long long)c->hz_sc);
    if (c->in_tail) {
        c->st->torn_bytes = c->size - c->good;
        if (c->tail_txns)
            chk_say(c, 0, c->good, "the torn tail holds %llu intact transaction(s) after the damage, never "
                    "synced: the next writable open drops them%s", (unsigned long long)c->tail_txns,
                    c->repair ? "; they are saved" : "; kvdb_repair saves them");
    }
    chk_progress(c, c->size, 1);
out:
    kv_free(&c->al, pend.p);
    return rc;
}

/* Keys whose newest record so far is a PUT the hash index does not hold:
 * open addressing on the key hash, (hash, offset) pairs, offset 0 empty and
 * 1 removed.  A later record of the same key removes the entry; what is
 * left at the end are live keys missing from the index. */
typedef struct chk_set {
    uint64_t *e;
    size_t cap, used, n;   /* slots (a power of two), slots ever filled, live */
} chk_set;

static size_t chk_slot(uint64_t h, size_t cap) { return (size_t)((h ^ (h >> 29)) * 0x9E3779B97F4A7C15ull >> 7) & (cap - 1); }

static int chk_set_add(chk *c, chk_set *s, uint64_t h, uint64_t off)
{
    size_t i;
    if ((s->used + 1) * 2 > s->cap) {
        size_t ncap = s->cap ? s->cap : 512, j;
        uint64_t *ne;
        while ((s->n + 1) * 4 > ncap) ncap *= 2;
        ne = (uint64_t *)kv_malloc(&c->al, ncap * 2 * sizeof *ne);
        if (!ne) return kv_err(KVDB_ENOMEM, "out of memory checking %s", c->path);
        memset(ne, 0, ncap * 2 * sizeof *ne);
        for (j = 0; j < s->cap; j++) {
            if (s->e[2 * j + 1] < 2) continue;
            for (i = chk_slot(s->e[2 * j], ncap); ne[2 * i + 1]; i = (i + 1) & (ncap - 1)) {}
            ne[2 * i] = s->e[2 * j];
            ne[2 * i + 1] = s->e[2 * j + 1];
        }
        kv_free(&c->al, s->e);
        s->e = ne;
        s->cap = ncap;
        s->used = s->n;
    }
    for (i = chk_slot(h, s->cap); s->e[2 * i + 1]; i = (i + 1) & (s->cap - 1)) {}
    s->e[2 * i] = h;
    s->e[2 * i + 1] = off;
    s->used++;
    s->n++;
    return KVDB_OK;
}

static int chk_set_drop(chk *c, chk_set *s, uint64_t h, const uint8_t *key, size_t klen)
{
    size_t i;
    if (!s->n) return KVDB_OK;
    for (i = chk_slot(h, s->cap); s->e[2 * i + 1]; i = (i + 1) & (s->cap - 1)) {
        const uint8_t *p;
        int rc;
        if (s->e[2 * i + 1] < 2 || s->e[2 * i] != h) continue;
        rc = chk_at(c, s->e[2 * i + 1], LG_REC, &p);
        if (rc) return rc;
        if (kv_ld16(p + 10) != klen) continue;
        rc = chk_at(c, s->e[2 * i + 1] + LG_REC, klen, &p);
        if (rc) return rc;
        if (memcmp(p, key, klen) == 0) {
            s->e[2 * i + 1] = 1;
            s->n--;
        }
    }
    return KVDB_OK;
}

/* Entries of the hash index under ref (an inner node); each leaf's count
 * is checked against its slots. */
static uint64_t chk_hix_count(chk *c, hix_ref ref)
{
    const hix_inner *in = (const hix_inner *)HIX_NODE(ref);
    uint64_t n = 0;
    unsigned i = 0;
    while (i < HIX_FAN) {
        hix_ref ch = in->child[i];
        if (!ch) {
            chk_say(c, 1, KVDB_CHECK_NOOFF, "the hash index has a hole (level %u, child %u)", in->h.level, i);
            i++;
        } else if (!HIX_CODE(ch)) {
            n += chk_hix_count(c, ch);
            i++;
        } else {
            const hix_node *l = HIX_NODE(ch);
            const uint8_t *s = hix_slots(l);
            uint32_t k, used = 0;
            for (k = 0; k < l->cap; k++)
                if (hix_stag(s + (size_t)k * HIX_SLOT)) used++;
            if (used != l->count)
                chk_say(c, 1, KVDB_CHECK_NOOFF, "a hash index leaf counts %lu entries but holds %lu",
                        (unsigned long)l->count, (unsigned long)used);
            n += used;
            i += 1u << (6 - (l->ldepth > 6 ? 6 : l->ldepth));
        }
    }
    return n;
}

/* The second pass: the indexes open built, against the log [LG_HDR, good). */
static int chk_indexes(chk *c)
{
    kvdb_options oo;
    kvdb *db = NULL;
    kvdb_txn *t = NULL;
    kvdb_iter *it = NULL;
    kv_ver *v;
    kv_rd r;
    chk_set set = { NULL, 0, 0, 0 };
    kv_buf kb = { NULL, 0, 0 }, vb = { NULL, 0, 0 };
    uint64_t off, live = 0, keys = 0, nit = 0, entries;
    char k1[200], k2[200];
    int rc;

    kvdb_options_init(&oo);
    oo.flags = KVDB_RDONLY;
    oo.vfs = c->vfs;
    oo.alloc = &c->al;
    rc = kvdb_open(c->path, &oo, &db);
    if (rc == KVDB_ECORRUPT) {
        chk_say(c, 1, KVDB_CHECK_NOOFF, "the log verifies, yet open refuses it: %s", kvdb_errmsg());
        return KVDB_OK;
    }
    if (rc) return rc;
    if (db->sc_rc) { /* not damage: an error kept open from reading it */
        rc = kv_err(db->sc_rc, "%s.idx: the sidecar could not be read (%s); nothing was checked against it", c->path,
                    kvdb_strerror(db->sc_rc));
        goto out;
    }
    if (db->sc_loaded)
        chk_say(c, 0, db->sc_end, "sidecar %s.idx loaded (it covers the log up to offset %llu); the indexes "
                "built from it are checked against the log", c->path, (unsigned long long)db->sc_end);
    else if (db->sc_why && strcmp(db->sc_why, "no sidecar") != 0)
        chk_say(c, 1, KVDB_CHECK_NOOFF, "sidecar %s.idx: %s; open ignores it and rebuilds the indexes from the "
                "log (the next writable close replaces it)", c->path, db->sc_why);
    rc = kvdb_begin(db, KVDB_TXN_RDONLY, &t);
    if (rc) goto out;
    v = t->ver;
    if (v->end != c->good)
        chk_say(c, 1, v->end, "open recovered the log up to offset %llu, the check up to %llu",
                (unsigned long long)v->end, (unsigned long long)c->good);
    rd_init(&r, db, v);
    c->base = c->size;
    c->total = c->size + c->good + v->live;
    c->tick = 0;

    for (off = LG_HDR; off < c->good && off < v->end;) {
        const uint8_t *p;
        lg_rec rec;
        kv_hit hit;
        uint64_t h, fo = 0;
        int hr;
        chk_progress(c, off, 0);
        rc = chk_at(c, off, LG_REC, &p);
        if (rc) goto out;
        if (lg_parse(p, off, c->good - off, &rec) != KVDB_OK) {
            rc = kv_err(KVDB_EIO, "%s: the record at offset %llu changed during the check", c->path, (unsigned long long)off);
            goto out;
        }
        if (rec.type == LG_COMMIT) {
            off += rec.size;
            continue;
        }
        kb.len = 0;
        rc = kv_buf_reserve(&c->al, &kb, rec.klen);
        if (!rc) rc = chk_at(c, off + LG_REC, rec.klen, &p);
        if (rc) goto out;
        memcpy(kb.p, p, rec.klen);
        h = kv_hash(db->seed, kb.p, rec.klen);
        rc = chk_set_drop(c, &set, h, kb.p, rec.klen);
        if (rc) goto out;
        hr = hix_get(&r, v->root, h, kb.p, rec.klen, &hit);
        if (hr < 0 && hr != KVDB_ECORRUPT) { rc = hr; goto out; } /* I/O, memory: not the index's fault */
        if (hr < 0) {
            chk_say(c, 1, off, "looking up key \"%s\" in the hash index fails: %s",
                    chk_keystr(kb.p, rec.klen, k1, sizeof k1), kvdb_errmsg());
            off += rec.size;
            continue;
        }
        if (hr > 0) fo = hit.voff - LG_REC - rec.klen;
        if (rec.type == LG_PUT) {
            if (hr > 0 && fo == off) {
                keys++;
                live += rec.size;
            } else if (hr > 0 && fo < off) {
                chk_say(c, 1, off, "the hash index maps key \"%s\" to an older record (offset %llu)",
                        chk_keystr(kb.p, rec.klen, k1, sizeof k1), (unsigned long long)fo);
            } else if (hr == 0) {
                rc = chk_set_add(c, &set, h, off);
                if (rc) goto out;
            }
        } else if (hr > 0 && fo < off) {
            chk_say(c, 1, off, "key \"%s\" is deleted here, but the hash index still maps it to offset %llu",
                    chk_keystr(kb.p, rec.klen, k1, sizeof k1), (unsigned long long)fo);
        }
        off += rec.size;
    }
    if (set.n) {
        size_t i;
        for (i = 0; i < set.cap; i++) {
            const uint8_t *p;
            uint64_t o = set.e[2 * i + 1];
            uint32_t kl;
            if (o < 2) continue;
            rc = chk_at(c, o, LG_REC, &p);
            if (rc) goto out;
            kl = kv_ld16(p + 10);
            rc = chk_at(c, o + LG_REC, kl, &p);
            if (rc) goto out;
            chk_say(c, 1, o, "key \"%s\" (newest record: this PUT) is missing from the hash index",
                    chk_keystr(p, kl, k1, sizeof k1));
        }
    }
    if (keys != v->keys)
        chk_say(c, 1, KVDB_CHECK_NOOFF, "the index counts %llu live keys, the log has %llu",
                (unsigned long long)v->keys, (unsigned long long)keys);
    if (live != v->live)
        chk_say(c, 1, KVDB_CHECK_NOOFF, "the index counts %llu live bytes, the log has %llu",
                (unsigned long long)v->live, (unsigned long long)live);
    entries = chk_hix_count(c, v->root);
    if (entries != keys)
        chk_say(c, 1, KVDB_CHECK_NOOFF, "the hash index holds %llu entries, the log has %llu live keys",
                (unsigned long long)entries, (unsigned long long)keys);
    c->st->keys = keys;

    /* the sorted index: every key once, in order, at the hash index's record */
    c->base = c->size + c->good;
    rc = kvdb_iter_prefix(t, NULL, 0, 0, &it);
    if (rc && rc != KVDB_ECORRUPT) goto out;
    if (rc) {
        chk_say(c, 1, KVDB_CHECK_NOOFF, "the ordered iterator cannot start: %s", kvdb_errmsg());
        rc = KVDB_OK;
    }
    kb.len = 0;
    while (it) {
        const void *k, *val;
        size_t kl, vl;
        kv_hit hit;
        int hr, ir = kvdb_iter_next(it, &k, &kl, &val, &vl);
        if (ir == KVDB_DONE) break;
        if (ir != KVDB_OK && ir != KVDB_ECORRUPT) { rc = ir; goto out; }
        if (ir != KVDB_OK) {
            chk_say(c, 1, KVDB_CHECK_NOOFF, "ordered iteration fails after %llu keys: %s", (unsigned long long)nit,
                    kvdb_errmsg());
            break;
        }
        nit++;
        chk_progress(c, nit * (live / (keys ? keys : 1)), 0);
        if (nit > 1 && kv_keycmp(kb.p, kb.len, (const uint8_t *)k, kl) >= 0)
            chk_say(c, 1, KVDB_CHECK_NOOFF, "the ordered iterator yields \"%s\" after \"%s\": out of order",
                    chk_keystr((const uint8_t *)k, kl, k1, sizeof k1), chk_keystr(kb.p, kb.len, k2, sizeof k2));
        kb.len = 0;
        rc = kv_buf_reserve(&c->al, &kb, kl);
        if (rc) goto out;
        memcpy(kb.p, k, kl);
        kb.len = kl;
        hr = hix_get(&r, v->root, kv_hash(db->seed, kb.p, kl), kb.p, kl, &hit);
        if (hr < 0 && hr != KVDB_ECORRUPT) { rc = hr; goto out; }
        if (hr < 0) {
            chk_say(c, 1, KVDB_CHECK_NOOFF, "looking up key \"%s\" in the hash index fails: %s",
                    chk_keystr(kb.p, kl, k1, sizeof k1), kvdb_errmsg());
        } else if (hr == 0) {
            chk_say(c, 1, KVDB_CHECK_NOOFF, "key \"%s\" from the ordered iterator is not in the hash index",
                    chk_keystr(kb.p, kl, k1, sizeof k1));
        } else if (r.base) {
            if ((const uint8_t *)val != hit.val)
                chk_say(c, 1, hit.voff - LG_REC - kl, "key \"%s\": the ordered iterator reads the record at offset "
                        "%llu, the hash index the one at this offset", chk_keystr(kb.p, kl, k1, sizeof k1),
                        (unsigned long long)((const uint8_t *)val - r.base - LG_REC - kl));
        } else {
            int same = vl == hit.vlen;
            if (same && vl) {
                vb.len = 0;
                rc = kv_buf_reserve(&c->al, &vb, vl);
                if (!rc) rc = db->vfs->read(db->vfs->ctx, r.file, hit.voff, vb.p, vl);
                if (rc) goto out;
                same = memcmp(vb.p, val, vl) == 0;
            }
            if (!same)
                chk_say(c, 1, hit.voff - LG_REC - kl, "key \"%s\": the ordered iterator and the hash index (this "
                        "record) give different values", chk_keystr(kb.p, kl, k1, sizeof k1));
        }
    }
    if (nit != keys)
        chk_say(c, 1, KVDB_CHECK_NOOFF, "the ordered iterator yields %llu keys, the log has %llu live keys",
                (unsigned long long)nit, (unsigned long long)keys);
    c->st->index_checked = 1;
    chk_progress(c, c->good + live, 1);
out:
    if (it) kvdb_iter_close(it);
    if (t) kvdb_abort(t);
    if (db) {
        char msg[sizeof kv_errbuf];
        memcpy(msg, kv_errbuf, sizeof msg);
        kvdb_close(db);
        memcpy(kv_errbuf, msg, sizeof msg);
    }
    kv_free(&c->al, set.e);
    kv_free(&c->al, kb.p);
    kv_free(&c->al, vb.p);
    return rc;
}

/* The sidecar's evidence (sc_hdr_check): c->hz_sc, or 0 if there is no
 * sidecar of this log.  Only a failure to allocate is an error. */
static int chk_sidecar(chk *c, const uint8_t *lh)
{
    size_t n = strlen(c->path);
    char *name = (char *)kv_malloc(&c->al, n + 5);
    kvdb_file *f = NULL;
    uint8_t b[SC_HDR];
    uint64_t size;
    if (!name) return kv_err(KVDB_ENOMEM, "out of memory");
    memcpy(name, c->path, n);
    memcpy(name + n, ".idx", 5);
    if (c->vfs->open(c->vfs->ctx, name, KVDB_VFS_RDONLY, &f) == KVDB_OK) {
        if (c->vfs->size(c->vfs->ctx, f, &size) == KVDB_OK && size >= SC_HDR &&
            c->vfs->read(c->vfs->ctx, f, 0, b, SC_HDR) == KVDB_OK && !sc_hdr_check(b, lh))
            c->hz_sc = kv_ld64(b + 48);
        c->vfs->close(c->vfs->ctx, f);
    }
    kv_free(&c->al, name);
    kv_clearerr();
    return KVDB_OK;
}

/* Open path for reading under a shared lock, read and check its header. */
static int chk_open(chk *c, const char *path, const kvdb_check_opts *o, kvdb_check_stat *st, int repair)
{
    uint8_t h[LG_HDR];
    int rc;
    memset(st, 0, sizeof *st);
    st->horizon_from = "none";
    c->o = o;
    c->st = st;
    c->repair = repair;
    c->path = path;
    c->vfs = o->vfs ? o->vfs : &kv_posix_vfs;
    c->al = o->alloc ? *o->alloc : kv_default_alloc;
    if (!c->al.malloc || !c->al.realloc || !c->al.free) return kv_err(KVDB_EINVAL, "%s: incomplete allocator", path);
    rc = c->vfs->open(c->vfs->ctx, path, KVDB_VFS_RDONLY, &c->f);
    if (rc == KVDB_NOTFOUND) return kv_err(KVDB_NOTFOUND, "%s: no such database", path);
    if (rc) return rc;
    rc = c->vfs->lock(c->vfs->ctx, c->f, 0);
    if (rc == KVDB_ELOCKED)
        return kv_err(KVDB_ELOCKED, "%s: locked: another handle or process has it open for writing", path);
    if (rc) return rc;
    rc = c->vfs->size(c->vfs->ctx, c->f, &c->size);
    if (rc) return rc;
    st->file_bytes = c->size;
    if (c->size == 0) return kv_err(KVDB_ENOTDB, "%s: empty file, not a kvdb database", path);
    rc = c->vfs->read(c->vfs->ctx, c->f, 0, h, c->size < LG_HDR ? (size_t)c->size : LG_HDR);
    if (rc) return rc;
    if (memcmp(h, LG_MAGIC, c->size < 8 ? (size_t)c->size : 8) != 0)
        return kv_err(KVDB_ENOTDB, "%s: not a kvdb database (bad magic)", path);
    if (c->size < LG_HDR) {
        chk_say(c, 1, 0, "the header is cut short: %llu of %u bytes", (unsigned long long)c->size, LG_HDR);
        return kv_err(KVDB_ECORRUPT, "%s: truncated header (%llu bytes); nothing to %s", path,
                      (unsigned long long)c->size, repair ? "save" : "check");
    }
    if (kv_ld64(h + 56) != XXH3_64bits(h, 56)) {
        chk_say(c, 1, 0, "the header fails its checksum; records are checked with the hash seed it holds");
    } else if (kv_ld32(h + 8) > KVDB_FORMAT_VERSION) {
        return kv_err(KVDB_EVERSION, "%s: format version %u is newer than this library's %u", path,
                      kv_ld32(h + 8), KVDB_FORMAT_VERSION);
    } else if (kv_ld32(h + 8) != KVDB_FORMAT_VERSION || kv_ld32(h + 12) != LG_HDR) {
        chk_say(c, 1, 0, "bad header fields (version %lu, header size %lu)", (unsigned long)kv_ld32(h + 8),
                (unsigned long)kv_ld32(h + 12));
    }
    c->seed = kv_ld64(h + 16);
    st->bytes_verified = LG_HDR;
    st->horizon = LG_HDR;
    rc = chk_sidecar(c, h);
    if (rc) return rc;
    if (c->vfs->map && c->vfs->unmap) {
        const void *m = NULL;
        if (c->vfs->map(c->vfs->ctx, c->f, c->size, &m) == KVDB_OK) c->map = (const uint8_t *)m;
        kv_clearerr();
    }
    c->total = repair ? c->size : 3 * c->size;
    chk_progress(c, 0, 1);
    return KVDB_OK;
}

static void chk_close(chk *c)
{
    char msg[sizeof kv_errbuf];
    memcpy(msg, kv_errbuf, sizeof msg);
    if (c->map) c->vfs->unmap(c->vfs->ctx, c->f, c->map, c->size);
    if (c->f) c->vfs->close(c->vfs->ctx, c->f);
    kv_free(&c->al, c->win.p);
    memcpy(kv_errbuf, msg, sizeof msg);
}

static const kvdb_check_opts chk_noopts = { NULL, NULL, NULL, NULL, NULL, 0 };

int kvdb_check(const char *path, const kvdb_check_opts *o, kvdb_check_stat *st)
{
    kvdb_check_stat dummy;
    chk c;
    int rc;
    kv_clearerr();
    memset(&c, 0, sizeof c);
    if (!st) st = &dummy;
    memset(st, 0, sizeof *st);
    st->horizon_from = "none";
    if (!path || !*path) return kv_err(KVDB_EINVAL, "kvdb_check: no path");
    rc = chk_open(&c, path, o ? o : &chk_noopts, st, 0);
    if (!rc) rc = chk_scan(&c);
    if (!rc && !st->problems) rc = chk_indexes(&c);
    chk_close(&c);
    if (!rc && st->problems)
        rc = kv_err(KVDB_ECORRUPT, "%s: %llu problem(s) found", path, (unsigned long long)st->problems);
    return rc;
}

int kvdb_repair(const char *path, const char *out_path, const kvdb_check_opts *o, kvdb_check_stat *st)
{
    kvdb_check_stat dummy;
    kvdb_options oo;
    kvdb_file *nf = NULL;
    chk c;
    int rc, created = 0;
    kv_clearerr();
    memset(&c, 0, sizeof c);
    if (!st) st = &dummy;
    memset(st, 0, sizeof *st);
    st->horizon_from = "none";
    if (!path || !*path || !out_path || !*out_path) return kv_err(KVDB_EINVAL, "kvdb_repair: no path");
    if (!o) o = &chk_noopts;
    rc = chk_open(&c, path, o, st, 1);
    if (rc) goto out;
    /* the new file is created here, exclusively: an existing file is never touched */
    rc = c.vfs->open(c.vfs->ctx, out_path, KVDB_VFS_CREATE | KVDB_VFS_EXCL, &nf);
    if (rc == KVDB_EBUSY) {
        rc = kv_err(KVDB_EINVAL, "%s: already exists; repair writes a new database and never overwrites a file",
                    out_path);
        goto out;
    }
    if (rc) goto out;
    created = 1;
    c.vfs->close(c.vfs->ctx, nf);
    kvdb_options_init(&oo);
    oo.flags = KVDB_CREATE;
    oo.sync = KVDB_SYNC_OFF; /* one kvdb_sync at the end */
    oo.vfs = c.vfs;
    oo.alloc = &c.al;
    rc = kvdb_open(out_path, &oo, &c.dst);
    if (rc) goto out;
    rc = chk_scan(&c);
    if (!rc && c.dt) {
        rc = kvdb_commit(c.dt);
        c.dt = NULL;
    }
    if (!rc) rc = kvdb_sync(c.dst);
    if (!rc) {
        struct kvdb_stat ds;
        rc = kvdb_stat(c.dst, &ds);
        st->keys = ds.keys;
    }
    if (!rc) {
        rc = kvdb_close(c.dst);
        c.dst = NULL;
    }
out:
    if (c.dt) kvdb_abort(c.dt);
    if (c.dst) {
        char msg[sizeof kv_errbuf];
        memcpy(msg, kv_errbuf, sizeof msg);
        kvdb_close(c.dst);
        memcpy(kv_errbuf, msg, sizeof msg);
    }
    if (rc && created) {
        char msg[sizeof kv_errbuf];
        size_t n = strlen(out_path);
        char *idx = (char *)kv_malloc(&c.al, n + 5);
        memcpy(msg, kv_errbuf, sizeof msg);
        c.vfs->remove(c.vfs->ctx, out_path);
        if (idx) {
            memcpy(idx, out_path, n);
            memcpy(idx + n, ".idx", 5);
            c.vfs->remove(c.vfs->ctx, idx);
            kv_free(&c.al, idx);
        }
        memcpy(kv_errbuf, msg, sizeof msg);
    }
    chk_close(&c);
    return rc;
}

/* ======================================================================
 * SECTION: public API
 * ====================================================================== */
static int kv_check_key(const void *key, size_t klen)
{
    if (!key || klen == 0) return kv_err(KVDB_EINVAL, "empty or NULL key");
    if (klen > KVDB_MAX_KEY) return kv_err(KVDB_ETOOBIG, "key of %zu bytes exceeds the limit of %u", klen, KVDB_MAX_KEY);
    return KVDB_OK;
}

void kvdb_options_init(kvdb_options *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->flags = 0;
    o->sync = KVDB_SYNC_FULL;
    o->auto_compact = 0;
    o->compact_dead_pct = 50;
    o->compact_min_bytes = (uint64_t)64 << 20;
}

/* Give a new database its header.  In memory: written in place.  On disk
 * the file at db->path exists (we created it empty, or found it empty) and
 * we hold its lock; the header is written to "<path>.new", synced, and
 * renamed over it, then the directory is synced and the new file opened and
 * locked in place of the old one.  A crash at any point leaves either the
 * empty file, which the next KVDB_CREATE open takes again, or a complete
 * header: never a part of one, so an open never recreates a file that holds
 * anything (a short or damaged header is KVDB_ECORRUPT or KVDB_ENOTDB). */
static int kv_write_header(kvdb *db)
{
    uint8_t h[LG_HDR];
    uint8_t rnd[24];
    kvdb_file *nf = NULL;
    char *tmp;
    uint64_t size;
    int rc;
    memset(h, 0, sizeof h);
    rc = db->vfs->random(db->vfs->ctx, rnd, sizeof rnd);
    if (rc) return rc;
    memcpy(h, LG_MAGIC, 8);
    kv_st32(h + 8, KVDB_FORMAT_VERSION);
    kv_st32(h + 12, LG_HDR);
    memcpy(h + 16, rnd, 24);
    kv_st64(h + 40, (uint64_t)time(NULL));
    kv_st64(h + 56, XXH3_64bits(h, 56));
    db->seed = kv_ld64(h + 16);
    memcpy(db->id, h + 24, 16);
    if (db->inmem) return db->vfs->write(db->vfs->ctx, db->file, 0, h, LG_HDR);
    tmp = sc_name(db, ".new");
    if (!tmp) return kv_err(KVDB_ENOMEM, "out of memory");
    db->vfs->remove(db->vfs->ctx, tmp); /* a crashed creation's */
    rc = db->vfs->open(db->vfs->ctx, tmp, KVDB_VFS_CREATE | KVDB_VFS_EXCL, &nf);
    if (!rc) {
        rc = db->vfs->write(db->vfs->ctx, nf, 0, h, LG_HDR);
        if (!rc) rc = db->vfs->sync(db->vfs->ctx, nf);
        db->vfs->close(db->vfs->ctx, nf);
        nf = NULL;
    }
    if (!rc) rc = db->vfs->rename(db->vfs->ctx, tmp, db->path);
    if (rc) db->vfs->remove(db->vfs->ctx, tmp);
    kv_free(&db->al, tmp);
    if (!rc) rc = db->vfs->sync_dir(db->vfs->ctx, db->path);
    if (rc) return rc;
    /* Our handle and lock are on the replaced file: take the new one. */
    rc = db->vfs->open(db->vfs->ctx, db->path, 0, &nf);
    if (!rc) rc = db->vfs->lock(db->vfs->ctx, nf, 1);
    if (!rc) rc = db->vfs->size(db->vfs->ctx, nf, &size);
    if (!rc && size != LG_HDR) rc = kv_err(KVDB_ELOCKED, "%s: changed by another process while being created", db->path);
    if (rc) {
        if (nf) db->vfs->close(db->vfs->ctx, nf);
        return rc;
    }
    db->vfs->close(db->vfs->ctx, db->file);
    db->file = nf;
    return KVDB_OK;
}

static int kv_read_header(kvdb *db, uint64_t size)
{
    uint8_t h[LG_HDR];
    int rc = db->vfs->read(db->vfs->ctx, db->file, 0, h, size < LG_HDR ? (size_t)size : LG_HDR);
    if (rc) return rc;
    if (memcmp(h, LG_MAGIC, size < 8 ? (size_t)size : 8) != 0)
        return kv_err(KVDB_ENOTDB, "%s: not a kvdb database (bad magic); nothing was changed", db->path);
    if (size < LG_HDR)
        return kv_err(KVDB_ECORRUPT, "%s: truncated header (%llu bytes); nothing was changed", db->path,
                      (unsigned long long)size);
    if (kv_ld64(h + 56) != XXH3_64bits(h, 56))
        return kv_err(KVDB_ECORRUPT, "%s: header checksum mismatch; nothing was changed", db->path);
    if (kv_ld32(h + 8) > KVDB_FORMAT_VERSION)
        return kv_err(KVDB_EVERSION, "%s: format version %u is newer than this library's %u; nothing was changed",
                      db->path, kv_ld32(h + 8), KVDB_FORMAT_VERSION);
    if (kv_ld32(h + 8) != KVDB_FORMAT_VERSION || kv_ld32(h + 12) != LG_HDR)
        return kv_err(KVDB_ECORRUPT, "%s: bad header fields; nothing was changed", db->path);
    db->seed = kv_ld64(h + 16);
    memcpy(db->id, h + 24, 16);
    return KVDB_OK;
}

static void kv_teardown(kvdb *db)
{
    kv_ver *v, *next;
    ck_stop(db); /* (again, after close: a no-op) releases below happen at once */
    ver_free_zombies(db, UINT64_MAX);
    while (db->dtrees) { /* old indexes: disjoint from everything below */
        kv_deadtree *dt = db->dtrees;
        db->dtrees = dt->next;
        hix_free_tree(db, &db->pool, dt->root, 0);
        kv_free(&db->al, dt);
    }
    /* Retired lists, waiting nodes and the newest version's tree are disjoint. */
    while (db->draining) {
        v = db->draining;
        db->draining = v->next;
        ver_free_retired(db, v->retired);
        kv_free(&db->al, v);
    }
    for (v = db->oldest; v; v = next) {
        next = v->next;
        ver_free_retired(db, v->retired);
        if (!next && v->root) hix_free_tree(db, &db->pool, v->root, 0);
        kv_map_release(db, v->map);
        kv_log_release(db, v->log);
        kv_free(&db->al, v);
    }
    db->oldest = db->pub = db->cur = NULL;
    while (db->free_ver) {
        v = db->free_ver;
        db->free_ver = v->next;
        kv_free(&db->al, v);
    }
    {
        unsigned i;
        for (i = 0; i < KV_NFREE; i++) {
            while (db->pool.free_nodes[i]) {
                hix_node *n = db->pool.free_nodes[i];
                db->pool.free_nodes[i] = n->link;
                kv_free(&db->al, (uint8_t *)n - n->adj);
            }
        }
    }
    while (db->nruns) srt_release(db, db->runs[--db->nruns]);
    kv_free(&db->al, db->runs);
    if (db->sc_base) { /* after every tree and run that points into it */
        if (db->sc_heap) kv_free(&db->al, (void *)(uintptr_t)db->sc_base);
        else db->vfs->unmap(db->vfs->ctx, db->sc_file, db->sc_base, db->sc_len);
        db->sc_base = NULL;
    }
    if (db->sc_file) db->vfs->close(db->vfs->ctx, db->sc_file);
    db->sc_file = NULL;
    kv_map_release(db, db->map);
    db->map = NULL;
    kv_free(&db->al, db->wtxn.wbuf.p);
    kv_free(&db->al, db->wtxn.ws.tab);
    if (db->log) kv_log_release(db, db->log); /* closes the file with the last reference */
    else if (db->file) db->vfs->close(db->vfs->ctx, db->file);
    db->log = NULL;
    db->file = NULL;
    kv_mutex_free(&db->mu_write);
    kv_cond_free(&db->cv_write);
    kv_mutex_free(&db->mu_ver);
    kv_mutex_free(&db->mu_sync);
    kv_cond_free(&db->cv_sync);
    kv_mutex_free(&db->mu_srt);
    kv_mutex_free(&db->mu_ckpt);
    kv_mutex_free(&db->mu_cp);
    kv_mutex_free(&db->mu_ck);
    kv_cond_free(&db->cv_ck);
    kv_free(&db->al, db->path);
    {
        kvdb_allocator al = db->al;
        kv_free(&al, db);
    }
}

static int kv_open_file(kvdb *db, int *created)
{
    unsigned vf = db->rdonly ? KVDB_VFS_RDONLY : 0;
    int rc;
    *created = 0;
    if (db->inmem) {
        *created = 1;
        return db->vfs->open(db->vfs->ctx, db->path, KVDB_VFS_CREATE, &db->file);
    }
    rc = db->vfs->open(db->vfs->ctx, db->path, vf, &db->file);
    if (rc == KVDB_NOTFOUND && (db->flags & KVDB_CREATE) && !db->rdonly) {
        rc = db->vfs->open(db->vfs->ctx, db->path, KVDB_VFS_CREATE | KVDB_VFS_EXCL, &db->file);
        if (rc == KVDB_OK) *created = 1;
        else if (rc == KVDB_EBUSY) rc = db->vfs->open(db->vfs->ctx, db->path, vf, &db->file); /* lost a race */
        else if (rc == KVDB_NOTFOUND) /* the directory is missing */
            return kv_err(KVDB_EIO, "%s: cannot create: no such directory", db->path);
    }
    if (rc == KVDB_NOTFOUND)
        return kv_err(KVDB_NOTFOUND, "%s: no such database (open without KVDB_CREATE)", db->path);
    return rc;
}

int kvdb_open(const char *path, const kvdb_options *o, kvdb **out)
{
    kvdb_options def;
    const kvdb_allocator *al;
    kvdb *db;
    kv_ver *v;
    uint64_t size = 0, good;
    int rc, created;
    hix_w w;

    kv_clearerr();
    if (!out) return kv_err(KVDB_EINVAL, "kvdb_open: out is NULL");
    *out = NULL;
    if (!o) {
        kvdb_options_init(&def);
        def.flags = KVDB_CREATE;
        o = &def;
    }
    if (o->flags & ~(KVDB_CREATE | KVDB_RDONLY | KVDB_INMEMORY)) return kv_err(KVDB_EINVAL, "kvdb_open: unknown flags");
    if (!(o->flags & KVDB_INMEMORY) && (!path || !*path)) return kv_err(KVDB_EINVAL, "kvdb_open: no path");
    if ((o->flags & KVDB_INMEMORY) && (o->flags & KVDB_RDONLY))
        return kv_err(KVDB_EINVAL, "kvdb_open: an in-memory database cannot be read-only");
    if (o->sync < KVDB_SYNC_FULL || o->sync > KVDB_SYNC_OFF) return kv_err(KVDB_EINVAL, "kvdb_open: bad sync mode");
    if (o->compact_dead_pct > 100) return kv_err(KVDB_EINVAL, "kvdb_open: compact_dead_pct above 100");
    al = o->alloc ? o->alloc : &kv_default_alloc;
    if (!al->malloc || !al->realloc || !al->free) return kv_err(KVDB_EINVAL, "kvdb_open: incomplete allocator");

    db = (kvdb *)kv_malloc(al, sizeof *db);
    if (!db) return kv_err(KVDB_ENOMEM, "out of memory");
    memset(db, 0, sizeof *db);
    db->al = *al;
    db->flags = o->flags;
    if (db->flags & KVDB_INMEMORY) db->flags |= KVDB_CREATE; /* nothing to open: always new */
    db->rdonly = (o->flags & KVDB_RDONLY) != 0;
    db->inmem = (o->flags & KVDB_INMEMORY) != 0;
    db->sync_mode = db->inmem ? KVDB_SYNC_OFF : o->sync;
    db->sync_bytes = o->sync_bytes ? o->sync_bytes : ((uint64_t)16 << 20);
    db->cp_auto = o->auto_compact != 0;
    db->cp_pct = o->compact_dead_pct ? o->compact_dead_pct : 50;
    db->cp_min = o->compact_min_bytes;
    if (db->inmem) {
        db->memvfs = kv_mem_vfs_proto;
        db->memvfs.ctx = &db->al;
        db->vfs = &db->memvfs;
    } else {
        db->vfs = o->vfs ? o->vfs : &kv_posix_vfs;
    }
    db->use_map = db->vfs->map != NULL && db->vfs->unmap != NULL;
    kv_mutex_init(&db->mu_write);
    kv_cond_init(&db->cv_write);
    kv_mutex_init(&db->mu_ver);
    kv_mutex_init(&db->mu_sync);
    kv_cond_init(&db->cv_sync);
    kv_mutex_init(&db->mu_srt);
    kv_mutex_init(&db->mu_ckpt);
    kv_mutex_init(&db->mu_cp);
    kv_mutex_init(&db->mu_ck);
    kv_cond_init(&db->cv_ck);
    {
        const char *name = db->inmem ? "(in-memory)" : path;
        size_t n = strlen(name);
        db->path = (char *)kv_malloc(&db->al, n + 1);
        if (!db->path) { kv_free(al, db); return kv_err(KVDB_ENOMEM, "out of memory"); }
        memcpy(db->path, name, n + 1);
    }

    rc = kv_open_file(db, &created);
    if (rc) goto fail;
    rc = db->vfs->lock(db->vfs->ctx, db->file, !db->rdonly);
    if (rc) goto fail;
    rc = db->vfs->size(db->vfs->ctx, db->file, &size);
    if (rc) goto fail;
    if (size == 0) {
        /* Empty: a new database if we may create one.  Creation writes the
         * header to "<path>.new" and renames it over (kv_write_header), so
         * a crash while creating leaves this empty file or a whole header,
         * never a part of one: a file holding anything is never recreated. */
        if (db->rdonly || !(db->flags & KVDB_CREATE)) {
            rc = kv_err(KVDB_ENOTDB, "%s: empty file, not a kvdb database (open it for writing with the create "
                        "flag to make it one); nothing was changed", db->path);
            goto fail;
        }
        rc = kv_write_header(db);
        if (rc) goto fail;
        size = LG_HDR;
    } else {
        rc = kv_read_header(db, size);
        if (rc) goto fail;
    }
    /* the file is ours: */
    if (!db->rdonly && !db->inmem) { /* a checkpoint or compaction cut short by a crash */
        static const char *const stray[] = { ".idx.tmp", ".compact" };
        unsigned i;
        for (i = 0; i < 2; i++) {
            char *tmp = sc_name(db, stray[i]);
            if (tmp) {
                db->vfs->remove(db->vfs->ctx, tmp);
                kv_free(&db->al, tmp);
            }
        }
        kv_clearerr();
    }

    db->log = kv_log_new(db, db->file);
    if (!db->log) { rc = KVDB_ENOMEM; goto fail; }
    db->srt_file = db->file;

    /* The first version: empty index, then the log replayed into it. */
    v = ver_alloc(db);
    if (!v) { rc = KVDB_ENOMEM; goto fail; }
    v->log = db->log;
    db->log->refs++;
    db->oldest = db->pub = db->cur = v;
    db->gen = 1;
    v->gen = 1;
    w.db = db;
    w.pool = &db->pool;
    w.gen = db->gen;
    w.retired = NULL;
    w.nretired = 0;
    w.rd = NULL;
    {
        hix_node *leaf = hix_alloc(&w, HIX_LEAF_MIN);
        hix_inner *root = leaf ? (hix_inner *)hix_alloc(&w, 0) : NULL;
        unsigned i;
        if (!root) {
            if (leaf) hix_free_node(db, &db->pool, leaf);
            rc = KVDB_ENOMEM;
            goto fail;
        }
        for (i = 0; i < HIX_FAN; i++) root->child[i] = hix_mkref(leaf);
        v->root = (hix_ref)root;
    }
    rc = kv_map_ensure(db, size);
    if (rc) goto fail;
    v->map = db->map;
    if (v->map) v->map->refs++;
    v->end = size;
    {
        uint64_t start;
        int sl;
        db->hz_log = LG_HDR; /* the header was synced when the file was made */
        sl = sc_load(db, v, size, &start);
        if (sl < 0) { rc = sl; goto fail; }
        db->sc_loaded = sl;
        if (db->hz_sc > size) {
            rc = kv_err(KVDB_ECORRUPT, "%s: the file is %llu bytes long, but its sidecar says %llu bytes of it were "
                        "synced: it was cut short, or is an older copy than its sidecar (a restored backup: "
                        "remove the .idx beside it); nothing was changed", db->path, (unsigned long long)size,
                        (unsigned long long)db->hz_sc);
            goto fail;
        }
        rc = rcv_scan(db, v, start, size, &good);
        if (rc) goto fail;
        db->replayed_bytes = good - start;
    }
    db->torn_bytes = size - good;
    if (db->torn_bytes && !db->rdonly) {
        rc = db->vfs->truncate(db->vfs->ctx, db->file, good);
        if (!rc) rc = db->vfs->sync(db->vfs->ctx, db->file);
        if (rc) goto fail;
    } else if (!db->rdonly && !db->inmem && !created) {
        /* What we read may still be only in the OS cache (a previous
         * SYNC_OFF writer, or a creation cut short before its directory
         * sync): make file and name durable before the durable field of a
         * new commit claims so. */
        rc = db->vfs->sync(db->vfs->ctx, db->file);
        if (!rc) rc = db->vfs->sync_dir(db->vfs->ctx, db->path);
        if (rc) goto fail;
    }
    db->end = good;
    kv_log_cap_set(db, db->torn_bytes && !db->rdonly ? good : size);
    db->written = db->synced = good;
    db->log->bytes = good;
    v->index_bytes = db->pool.bytes;
    *out = db;
    return KVDB_OK;
fail:
    {
        char msg[sizeof kv_errbuf];
        memcpy(msg, kv_errbuf, sizeof msg);
        kv_teardown(db);
        memcpy(kv_errbuf, msg, sizeof msg);
    }
    if (!kv_errbuf[0]) kv_err(rc, "%s: %s", path ? path : "(in-memory)", kvdb_strerror(rc));
    return rc;
}

int kvdb_close(kvdb *db)
{
    int rc = KVDB_OK;
    kv_clearerr();
    if (!db) return KVDB_OK;
    kv_lock(&db->mu_write);
    while (db->writer_active && !db->writer_txn) /* a compaction (the background thread's): brief */
        kv_wait(&db->cv_write, &db->mu_write);
    if (db->writer_active) {
        kv_unlock(&db->mu_write);
        return kv_err(KVDB_EBUSY, "%s: close with the write transaction open", db->path);
    }
    kv_lock(&db->mu_ver);
    if (db->nreaders) {
        unsigned n = db->nreaders;
        kv_unlock(&db->mu_ver);
        kv_unlock(&db->mu_write);
        return kv_err(KVDB_EBUSY, "%s: close with %u read transaction(s) open", db->path, n);
    }
    kv_unlock(&db->mu_ver);
    kv_unlock(&db->mu_write);
    ck_stop(db);
    kv_lock(&db->mu_cp);
    cp_abort(db); /* a compaction not finished: the database stays as it is */
    kv_unlock(&db->mu_cp);
    /* In every sync mode: what was committed becomes durable and sealed,
     * so that the file at rest has no ambiguous tail (SEALS at the top) and
     * the sidecar may cover all of it (a sidecar never covers unsynced log). */
    if (!db->rdonly && !db->inmem) {
        if (db->log_cap > db->end && !kv_sticky(db)) { /* the reserved zeros (a failure: the next open cuts them) */
            char msg[sizeof kv_errbuf];
            memcpy(msg, kv_errbuf, sizeof msg);
            if (db->vfs->truncate(db->vfs->ctx, db->file, db->end) == KVDB_OK) db->log_cap = db->end;
            memcpy(kv_errbuf, msg, sizeof msg);
        }
        db->rsv_mark = UINT64_MAX; /* no more reserving: the file ends with the seal */
        rc = txn_seal(db, 0);
        if (!rc) {
            uint64_t ep, w = kv_written(db, &ep);
            rc = kv_sync_to(db, w, ep); /* the seal too: at rest, nothing is ambiguous */
        }
    }
    /* Checkpoint the indexes so the next open need not replay the log.
     * The sidecar is a cache: if this fails, the next open replays more. */
    if (!rc && !db->rdonly && !db->inmem && !kv_sticky(db) && db->cur->end != db->sc_end) {
        char msg[sizeof kv_errbuf];
        memcpy(msg, kv_errbuf, sizeof msg);
        (void)sc_write(db, db->cur, 1);
        memcpy(kv_errbuf, msg, sizeof msg);
    }
    kv_teardown(db);
    return rc;
}

int kvdb_sync(kvdb *db)
{
    uint64_t w, ep;
    kv_clearerr();
    if (!db) return kv_err(KVDB_EINVAL, "kvdb_sync: NULL handle");
    if (db->rdonly) return KVDB_OK;
    if (db->inmem) {
        w = kv_written(db, &ep);
        return kv_sync_to(db, w, ep);
    }
    return txn_seal(db, 1);
}

int kvdb_checkpoint(kvdb *db)
{
    kv_ver *v;
    int rc;
    kv_clearerr();
    if (!db) return kv_err(KVDB_EINVAL, "kvdb_checkpoint: NULL handle");
    if (db->rdonly) return kv_err(KVDB_EREADONLY, "%s: opened read-only", db->path);
    if (db->inmem) return KVDB_OK;
    rc = txn_seal(db, 1);
    if (rc) return rc;
    v = ver_acquire(db); /* the published state: durable under SYNC_FULL */
    kv_lock(&db->mu_ckpt);
    rc = sc_write(db, v, 1);
    kv_unlock(&db->mu_ckpt);
    ver_release(db, v);
    return rc;
}

/* A thread holding the write transaction would wait for itself. */
static int kv_is_writer(kvdb *db)
{
    int me;
    kv_lock(&db->mu_write);
    me = db->writer_active && kv_same_thread(db->writer_thread, kv_self());
    kv_unlock(&db->mu_write);
    return me;
}

static int cp_check(kvdb *db, const char *fn)
{
    int rc;
    if (!db) return kv_err(KVDB_EINVAL, "%s: NULL handle", fn);
    if (db->rdonly) return kv_err(KVDB_EREADONLY, "%s: opened read-only", db->path);
    if (kv_is_writer(db)) return kv_err(KVDB_EBUSY, "%s: this thread holds the write transaction", fn);
    rc = kv_sticky(db);
    if (rc) { /* the handle takes no more writes: a compaction in progress can never finish */
        kv_lock(&db->mu_cp);
        cp_abort(db);
        kv_unlock(&db->mu_cp);
        return kv_sticky_err(db, rc);
    }
    return KVDB_OK;
}

int kvdb_compact_step(kvdb *db, size_t max_bytes)
{
    int rc;
    kv_clearerr();
    rc = cp_check(db, "kvdb_compact_step");
    if (rc) return rc;
    kv_lock(&db->mu_cp);
    rc = cp_step(db, max_bytes ? (uint64_t)max_bytes : 1);
    kv_unlock(&db->mu_cp);
    return rc;
}

int kvdb_compact(kvdb *db)
{
    kv_ver *v;
    int rc;
    kv_clearerr();
    rc = cp_check(db, "kvdb_compact");
    if (rc) return rc;
    kv_lock(&db->mu_cp);
    rc = db->cp ? KVDB_OK : cp_start(db);
    if (!rc) {
        db->cp->async = 1; /* the copy may write on a thread of its own */
        do rc = cp_step(db, (uint64_t)64 << 20);
        while (rc == KVDB_OK);
    }
    kv_unlock(&db->mu_cp);
    if (rc != KVDB_DONE) return rc;
    if (db->inmem) return KVDB_OK;
    /* the sidecar for the new file, so the next open need not replay it
     * (a cache: if this fails the compaction still stands) */
    v = ver_acquire(db);
    kv_lock(&db->mu_ckpt);
    {
        char msg[sizeof kv_errbuf];
        memcpy(msg, kv_errbuf, sizeof msg);
        (void)sc_write(db, v, 1);
        memcpy(kv_errbuf, msg, sizeof msg);
    }
    kv_unlock(&db->mu_ckpt);
    ver_release(db, v);
    return KVDB_OK;
}

int kvdb_begin(kvdb *db, unsigned flags, kvdb_txn **out)
{
    kvdb_txn *t;
    kv_clearerr();
    if (!out) return kv_err(KVDB_EINVAL, "kvdb_begin: out is NULL");
    *out = NULL;
    if (!db) return kv_err(KVDB_EINVAL, "kvdb_begin: NULL handle");
    if (flags & ~(KVDB_TXN_RDONLY | KVDB_TXN_NOWAIT)) return kv_err(KVDB_EINVAL, "kvdb_begin: unknown flags");
    if (!(flags & KVDB_TXN_RDONLY)) return txn_begin_write(db, flags, out);
    t = (kvdb_txn *)kv_malloc(&db->al, sizeof *t);
    if (!t) return kv_err(KVDB_ENOMEM, "out of memory");
    memset(t, 0, sizeof *t);
    t->db = db;
    kv_lock(&db->mu_ver);
    t->ver = db->pub;
    t->ver->refs++;
    db->nreaders++;
    kv_unlock(&db->mu_ver);
    *out = t;
    return KVDB_OK;
}

static void txn_end_read(kvdb_txn *t)
{
    kvdb *db = t->db;
    txn_close_iters(t);
    kv_lock(&db->mu_ver);
    t->ver->refs--;
    db->nreaders--;
    kv_unlock(&db->mu_ver);
    txn_arena_free(t);
    kv_free(&db->al, t);
}

void kvdb_abort(kvdb_txn *t)
{
    if (!t) return;
    if (t->write) {
        txn_close_iters(t);
        txn_arena_free(t);
        txn_release_writer(t->db);
    } else {
        txn_end_read(t);
    }
}

int kvdb_commit(kvdb_txn *t)
{
    kv_clearerr();
    if (!t) return kv_err(KVDB_EINVAL, "kvdb_commit: NULL transaction");
    if (!t->write) {
        txn_end_read(t);
        return KVDB_OK;
    }
    txn_close_iters(t);
    txn_arena_free(t);
    return txn_commit_write(t);
}

/* Look key up in t's base version; value into *val (arena in pread mode). */
static int txn_get_base(kvdb_txn *t, uint64_t h, const void *key, size_t klen, const void **val, size_t *vlen)
{
    kv_rd r;
    kv_hit hit;
    int rc;
    rd_init(&r, t->db, t->ver);
    rc = hix_get(&r, t->ver->root, h, key, klen, &hit);
    if (rc <= 0) return rc ? rc : KVDB_NOTFOUND;
    if (!hit.val) {
        uint8_t *p = (uint8_t *)txn_arena_alloc(t, hit.vlen);
        if (!p) return kv_err(KVDB_ENOMEM, "out of memory reading a value");
        if (hit.vlen) {
            rc = t->db->vfs->read(t->db->vfs->ctx, r.file, hit.voff, p, hit.vlen);
            if (rc) return rc;
        }
        hit.val = p;
    }
    *val = hit.val;
    *vlen = hit.vlen;
    return KVDB_OK;
}

int kvdb_txn_get(kvdb_txn *t, const void *key, size_t klen, const void **val, size_t *vlen)
{
    uint64_t h;
    int rc;
    kv_clearerr();
    if (!t || !val || !vlen) return kv_err(KVDB_EINVAL, "kvdb_txn_get: NULL argument");
    rc = kv_check_key(key, klen);
    if (rc) return rc;
    h = kv_hash(t->db->seed, key, klen);
    if (t->write) {
        ws_ent *e = ws_find(&t->ws, t->wbuf.p, h, key, klen);
        if (e) {
            const uint8_t *q = t->wbuf.p + e->pos - 1;
            if (q[8] == LG_DEL) return KVDB_NOTFOUND;
            *val = q + LG_REC + klen;
            *vlen = kv_ld32(q + 12);
            return KVDB_OK;
        }
    }
    return txn_get_base(t, h, key, klen, val, vlen);
}

/* Append one PUT or DEL record to the write transaction. */
static int txn_append(kvdb_txn *t, uint8_t type, uint64_t h, ws_ent *e, const void *key, size_t klen,
                      const void *val, size_t vlen)
{
    size_t size = LG_REC + klen + vlen, pos = t->wbuf.len;
    uint8_t *q;
    int rc = kv_buf_reserve(&t->db->al, &t->wbuf, size);
    if (rc) return rc;
    q = t->wbuf.p + pos;
    kv_st64(q, h); /* the checksum slot holds the hash until commit */
    lg_put_header(q, type, (uint32_t)klen, (uint32_t)vlen);
    memcpy(q + LG_REC, key, klen);
    if (vlen) memcpy(q + LG_REC + klen, val, vlen);
    if (e) {
        e->pos = pos + 1;
    } else {
        rc = ws_add(t->db, &t->ws, h, pos);
        if (rc) return rc;
    }
    t->wbuf.len += size;
    t->nrec++;
    return KVDB_OK;
}

/* (A handle that goes sticky while a write transaction is open refuses
 * its commit; kvdb_begin refuses new ones.  The puts in between are only
 * buffered, so they need not take mu_sync to look.) */
static int txn_write_check(kvdb_txn *t)
{
    if (!t) return kv_err(KVDB_EINVAL, "NULL transaction");
    if (!t->write) return kv_err(KVDB_EREADONLY, "write in a read-only transaction");
    if (t->nrec == UINT32_MAX) return kv_err(KVDB_ETOOBIG, "transaction has too many records");
    return KVDB_OK;
}

int kvdb_txn_put(kvdb_txn *t, const void *key, size_t klen, const void *val, size_t vlen)
{
    uint64_t h;
    int rc;
    kv_clearerr();
    rc = txn_write_check(t);
    if (rc) return rc;
    rc = kv_check_key(key, klen);
    if (rc) return rc;
    if (vlen > KVDB_MAX_VALUE) return kv_err(KVDB_ETOOBIG, "value of %zu bytes exceeds the limit of %u", vlen, KVDB_MAX_VALUE);
    if (!val && vlen) return kv_err(KVDB_EINVAL, "NULL value with nonzero length");
    h = kv_hash(t->db->seed, key, klen);
    return txn_append(t, LG_PUT, h, ws_find(&t->ws, t->wbuf.p, h, key, klen), key, klen, val, vlen);
}

int kvdb_txn_del(kvdb_txn *t, const void *key, size_t klen)
{
    uint64_t h;
    ws_ent *e;
    int rc;
    kv_clearerr();
    rc = txn_write_check(t);
    if (rc) return rc;
    rc = kv_check_key(key, klen);
    if (rc) return rc;
    h = kv_hash(t->db->seed, key, klen);
    e = ws_find(&t->ws, t->wbuf.p, h, key, klen);
    if (e) {
        if (t->wbuf.p[e->pos - 1 + 8] == LG_DEL) return KVDB_NOTFOUND;
    } else {
        kv_rd r;
        rd_init(&r, t->db, t->ver);
        rc = hix_get(&r, t->ver->root, h, key, klen, NULL);
        if (rc <= 0) return rc ? rc : KVDB_NOTFOUND;
    }
    return txn_append(t, LG_DEL, h, e, key, klen, NULL, 0);
}

int kvdb_put(kvdb *db, const void *key, size_t klen, const void *val, size_t vlen)
{
    kvdb_txn *t = NULL;
    int rc;
    kv_clearerr();
    if (!db) return kv_err(KVDB_EINVAL, "kvdb_put: NULL handle");
    rc = kv_check_key(key, klen);
    if (rc) return rc;
    if (vlen > KVDB_MAX_VALUE) return kv_err(KVDB_ETOOBIG, "value of %zu bytes exceeds the limit of %u", vlen, KVDB_MAX_VALUE);
    if (!val && vlen) return kv_err(KVDB_EINVAL, "NULL value with nonzero length");
    rc = txn_begin_write(db, 0, &t);
    if (rc) return rc;
    rc = kvdb_txn_put(t, key, klen, val, vlen);
    if (rc) {
        kvdb_abort(t);
        return rc;
    }
    return kvdb_commit(t);
}

int kvdb_del(kvdb *db, const void *key, size_t klen)
{
    kvdb_txn *t = NULL;
    int rc;
    kv_clearerr();
    if (!db) return kv_err(KVDB_EINVAL, "kvdb_del: NULL handle");
    rc = kv_check_key(key, klen);
    if (rc) return rc;
    rc = txn_begin_write(db, 0, &t);
    if (rc) return rc;
    rc = kvdb_txn_del(t, key, klen);
    if (rc) {
        kvdb_abort(t);
        return rc;
    }
    return kvdb_commit(t);
}

int kvdb_get(kvdb *db, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen)
{
    kv_ver *v;
    kv_rd r;
    kv_hit hit;
    int rc;
    if (!db) return kv_err(KVDB_EINVAL, "kvdb_get: NULL handle");
    rc = kv_check_key(key, klen);
    if (rc) return rc;
    if (!buf && cap) return kv_err(KVDB_EINVAL, "kvdb_get: NULL buffer with nonzero capacity");
    v = ver_acquire(db);
    rd_init(&r, db, v);
    rc = hix_get(&r, v->root, kv_hash(db->seed, key, klen), key, klen, &hit);
    if (rc > 0) {
        size_t n = hit.vlen < cap ? hit.vlen : cap;
        rc = KVDB_OK;
        if (n) {
            if (hit.val) memcpy(buf, hit.val, n);
            else rc = db->vfs->read(db->vfs->ctx, r.file, hit.voff, buf, n);
        }
        if (vlen) *vlen = hit.vlen;
    } else if (rc == 0) {
        rc = KVDB_NOTFOUND;
    }
    ver_release(db, v);
    return rc;
}

int kvdb_stat(kvdb *db, struct kvdb_stat *st)
{
    kv_ver *v;
    kv_clearerr();
    if (!db || !st) return kv_err(KVDB_EINVAL, "kvdb_stat: NULL argument");
    memset(st, 0, sizeof *st);
    kv_lock(&db->mu_ver);
    v = db->pub; /* what readers see: committed and, under SYNC_FULL, durable */
    st->keys = v->keys;
    st->file_bytes = v->end;
    st->live_bytes = v->live;
    st->dead_bytes = v->end - LG_HDR - v->live;
    st->index_bytes = v->index_bytes;
    st->commits = db->commits;
    st->horizon = db->hz_log;
    st->horizon_from = db->hz_log <= LG_HDR ? "none" : db->hz_seal ? "seal" : "commit";
    if (db->hz_sc > st->horizon) {
        st->horizon = db->hz_sc;
        st->horizon_from = "sidecar";
    }
    kv_unlock(&db->mu_ver);
    kv_lock(&db->mu_sync);
    st->syncs = db->nsyncs;
    kv_unlock(&db->mu_sync);
    kv_lock(&db->mu_srt);
    st->sorted_bytes = db->srt_bytes;
    st->sorted_runs = db->nruns;
    kv_unlock(&db->mu_srt);
    st->torn_bytes = db->torn_bytes;
    st->recovered_txns = db->recovered_txns;
    st->sidecar_loaded = (unsigned)db->sc_loaded;
    st->sidecar = db->sc_why ? db->sc_why : db->inmem ? "none (in-memory)" : "not used";
    st->replayed_bytes = db->replayed_bytes;
    st->format_version = KVDB_FORMAT_VERSION;
    st->sync_mode = db->sync_mode;
    st->flags = db->flags;
    kv_lock(&db->mu_ver); /* not mu_cp: a compaction step may hold it for long */
    st->compactions = db->cp_count;
    st->compact_ns = db->cp_ns;
    st->compact_reclaimed = db->cp_reclaimed;
    st->compact_pause_ns = db->cp_pause_ns;
    st->compact_pause_sync_ns = db->cp_pause_sync_ns;
    st->compacting = (unsigned)db->cp_active;
    kv_unlock(&db->mu_ver);
    st->db_id[0] = kv_ld64(db->id);
    st->db_id[1] = kv_ld64(db->id + 8);
    return KVDB_OK;
}
