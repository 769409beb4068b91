/*
 * crashsim.c -- simulated power loss at every sync point, and exhaustive
 * bit flips, against an in-memory crash-simulating file layer.
 *
 * THE SIMULATED DISK (sim_*, test-only, a kvdb_vfs)
 *   Every file has two images: what the OS shows (reads and maps see it) and
 *   what is on stable storage.  Everything written since the file's last
 *   sync -- writes, size changes, truncations -- sits in a pending list;
 *   sync() makes the file's whole current image durable.  Directory entries
 *   (create, remove, rename) are pending until sync_dir().
 *   A power loss turns a disk into a new one built from the durable images
 *   plus, for each pending operation independently, one fate:
 *     write     survives / is lost / is torn: each 512-byte sector it touches
 *               gets the new bytes, keeps the old ones, or becomes garbage or
 *               zeros;  and if it extended the file, the size change
 *               survives, is lost, or lands only partly (sector boundary) --
 *               so an appended file can come back longer, with zeros;
 *     truncate  applied or lost;
 *     directory a random prefix of the pending entry operations survives (a
 *               file created without a directory sync may vanish).
 *   Writes are "powersafe": a torn write never damages bytes outside the
 *   range it was asked to write (as SQLite's POWERSAFE_OVERWRITE assumes).
 *   The two extreme outcomes -- every pending operation lost, every one
 *   survived -- are always among the outcomes checked at a crash point.
 *
 * TESTS
 *   crash_full / crash_normal / crash_off
 *       scripted random workloads (auto-commit puts and deletes, multi-key
 *       transactions with overwrites and put-then-delete, aborted
 *       transactions, empty and multi-sector values, kvdb_sync, close and
 *       reopen, small sync_bytes, kvdb_checkpoint -- the sidecar, written
 *       to a temporary file and renamed, also at every close) in each sync
 *       mode, with and without mmap.  The sidecar is part of every crash
 *       image, so recovery from a crashed checkpoint is checked too.
 *       A crash is taken at EVERY sync point (every sync() and sync_dir()
 *       call, before it runs) and at a sample of write points, with several
 *       random outcomes each.  Each surviving disk is opened by the real
 *       kvdb_open (KVDB_CREATE, as an application would) and must hold
 *       exactly the reference model after some prefix of the commits, and
 *       that prefix must include every commit acknowledged as durable (a
 *       SYNC_FULL commit that returned KVDB_OK, or anything covered by a
 *       kvdb_sync/kvdb_close that returned KVDB_OK).  A sample of the
 *       recovered databases also: is opened read-only first (same state),
 *       takes a new commit and a clean reopen, and is crashed again during
 *       its own recovery (the truncation of the torn tail) -- the double
 *       crash must still give an allowed prefix.
 *   sim_rename
 *       the disk's model of a compaction's swap: a file synced and renamed
 *       over another; until the directory sync a power loss leaves the old
 *       file (the new one perhaps under its temporary name) or the new one,
 *       never anything else; after it, always the new one.
 *   crash_compact
 *       the same workloads with compactions added in each sync mode: full
 *       ones (kvdb_compact: copy into "<path>.compact", sync, rename over
 *       the database, directory sync, then the new file's sidecar) and
 *       stepwise ones (kvdb_compact_step with budgets from 1 byte up, and
 *       commits, syncs, checkpoints, closes between the steps -- a close
 *       abandons one).  Crashes at every sync point and a sample of write
 *       points, checked as above, plus: a compaction that returned made
 *       every commit before it durable (its file and name are synced), the
 *       recovering open removes a stray "<path>.compact", and some recovered
 *       databases are compacted again and reopened.  The run must have
 *       produced images where the rename was lost (the old file is the
 *       database) and images with a stray new file.
 *       (Commits waiting for a group sync while the swap runs need a second
 *       committing thread; the simulated disk is single-threaded, so that
 *       case is left to test/compact.c's kill -9 test.)
 *   bit_flips_offline
 *       every bit of a small database (a few KB) flipped one at a time, the
 *       damaged file opened: header damage is refused; damage to a record
 *       that a later commit proves synced is KVDB_ECORRUPT with the file
 *       unchanged; otherwise exactly the committed prefix before the damaged
 *       record is found (and the tail cut).  Reads give the right data.
 *   bit_flips_live
 *       every bit of the records flipped under an open handle (mmap and
 *       pread): every read gives the right value or KVDB_ECORRUPT, never
 *       wrong data, never NOTFOUND for a present key.
 *
 * EXTEND HERE when they land (search for "EXTEND:"): bit flips of the
 * sidecar.
 *
 * Seed: env KVDB_TEST_SEED.  Flavour: env KVDB_TEST_FLAVOUR (plain / asan /
 * hash4): asan and hash4 run fewer workloads and flip a stride of bits
 * beyond the first KB.  Env KVDB_TEST_SCALE=N (make soak): N times the
 * workloads (new seeds), and every bit flipped in every flavour.  Env KVDB_TEST_VERBOSE prints progress lines ('#').
 * Failures name the workload seed, mode, crash point and outcome.
 */
#include "../kvdb.c"
#include "testutil.h"

#include <time.h>

#if defined(__SANITIZE_ADDRESS__)
#define CS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CS_ASAN 1
#endif
#endif
#ifndef CS_ASAN
#define CS_ASAN 0
#endif

static uint64_t cs_seed = 0x63726173686d6973ULL;
static int cs_slow;
static int cs_verbose;

/* ==================================================================
 * the simulated disk
 * ================================================================== */
#define SIM_CAP ((uint64_t)1 << 20)   /* file size limit; maps are this big */
#define SIM_SECTOR 512
#define SIM_MAXINO 16
#define SIM_NAME 200

enum { SIM_OP_WRITE = 1, SIM_OP_TRUNC = 2 };
typedef struct {
    int kind;
    uint64_t off, n;        /* TRUNC: n = new size */
    unsigned char *data;
} sim_op;

typedef struct {
    int used;
    unsigned char *cur;     /* SIM_CAP bytes; beyond size always zero */
    uint64_t size, hw;      /* hw: the most bytes cur ever held */
    unsigned char *dur;     /* durable image */
    uint64_t dsize;
    sim_op *ops;
    size_t nops, capops;
    int handles, lock_sh, lock_ex, maps;
} sim_inode;

enum { SIM_D_LINK = 1, SIM_D_UNLINK = 2, SIM_D_RENAME = 3 };
typedef struct { char name[SIM_NAME]; int ino; } sim_dent;
typedef struct { int kind; char name[SIM_NAME], to[SIM_NAME]; int ino; } sim_dop;

enum { SIM_AT_SYNC = 1, SIM_AT_WRITE = 2 };

typedef struct sim_disk {
    sim_inode ino[SIM_MAXINO];
    sim_dent dir[SIM_MAXINO];   /* current directory */
    int ndir;
    sim_dent ddir[SIM_MAXINO];  /* durable directory */
    int nddir;
    sim_dop *dops;
    size_t ndops, capdops;
    long nsync, nwrite;
    int fail_sync_dir;          /* this many sync_dir calls fail (KVDB_EIO) */
    uint64_t rnd;               /* for the random() hook: deterministic */
    void (*hook)(struct sim_disk *, int at);
    void *hookctx;
    kvdb_vfs vfs;
} sim_disk;

typedef struct { sim_disk *d; int ino; int lock; } sim_fh;

static void *sim_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) { perror("malloc"); exit(2); }
    return p;
}

static int sim_find(const sim_dent *dir, int n, const char *name)
{
    int i;
    for (i = 0; i < n; i++)
        if (strcmp(dir[i].name, name) == 0) return i;
    return -1;
}

static void sim_dir_link(sim_dent *dir, int *n, const char *name, int ino)
{
    int i = sim_find(dir, *n, name);
    if (i < 0) {
        if (*n >= SIM_MAXINO) { fprintf(stderr, "sim: directory full\n"); exit(2); }
        i = (*n)++;
    }
    snprintf(dir[i].name, SIM_NAME, "%s", name);
    dir[i].ino = ino;
}

static void sim_dir_unlink(sim_dent *dir, int *n, const char *name)
{
    int i = sim_find(dir, *n, name);
    if (i < 0) return;
    dir[i] = dir[--*n];
}

static void sim_dir_apply(sim_dent *dir, int *n, const sim_dop *op)
{
    if (op->kind == SIM_D_LINK) sim_dir_link(dir, n, op->name, op->ino);
    else if (op->kind == SIM_D_UNLINK) sim_dir_unlink(dir, n, op->name);
    else {
        int i = sim_find(dir, *n, op->name);
        if (i < 0) return;
        {
            int ino = dir[i].ino;
            sim_dir_unlink(dir, n, op->name);
            sim_dir_link(dir, n, op->to, ino);
        }
    }
}

static void sim_dop_add(sim_disk *d, int kind, const char *name, const char *to, int ino)
{
    sim_dop *op;
    if (d->ndops == d->capdops) {
        d->capdops = d->capdops ? 2 * d->capdops : 8;
        d->dops = (sim_dop *)realloc(d->dops, d->capdops * sizeof *d->dops);
        if (!d->dops) { perror("realloc"); exit(2); }
    }
    op = &d->dops[d->ndops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    snprintf(op->name, SIM_NAME, "%s", name);
    if (to) snprintf(op->to, SIM_NAME, "%s", to);
    op->ino = ino;
    sim_dir_apply(d->dir, &d->ndir, op);
}

static void sim_op_add(sim_inode *f, int kind, uint64_t off, uint64_t n, const void *data)
{
    sim_op *op;
    if (f->nops == f->capops) {
        f->capops = f->capops ? 2 * f->capops : 16;
        f->ops = (sim_op *)realloc(f->ops, f->capops * sizeof *f->ops);
        if (!f->ops) { perror("realloc"); exit(2); }
    }
    op = &f->ops[f->nops++];
    op->kind = kind;
    op->off = off;
    op->n = n;
    op->data = NULL;
    if (data) {
        op->data = (unsigned char *)sim_xmalloc((size_t)n);
        if (n) memcpy(op->data, data, (size_t)n);
    }
}

static void sim_ops_clear(sim_inode *f)
{
    size_t i;
    for (i = 0; i < f->nops; i++) free(f->ops[i].data);
    f->nops = 0;
}

/* SIM_CAP-byte buffers are recycled: allocating and zeroing a fresh one
 * for every file of every crash image costs more than the checks.  A
 * buffer is all zero beyond its high-water mark. */
typedef struct { unsigned char *p; uint64_t hw; } sim_buf;
static sim_buf sim_pool[64];
static int sim_npool;

static unsigned char *sim_buf_get(void)
{
    unsigned char *p;
    if (sim_npool) return sim_pool[--sim_npool].p;
    p = (unsigned char *)calloc(1, (size_t)SIM_CAP);
    if (!p) { perror("calloc"); exit(2); }
    return p;
}

static void sim_buf_put(unsigned char *p, uint64_t hw)
{
    if (!p) return;
    if (sim_npool == (int)(sizeof sim_pool / sizeof sim_pool[0])) { free(p); return; }
    memset(p, 0, (size_t)hw);
    sim_pool[sim_npool].p = p;
    sim_pool[sim_npool++].hw = 0;
}

static void sim_pool_free(void)
{
    while (sim_npool) free(sim_pool[--sim_npool].p);
}

static int sim_new_inode(sim_disk *d)
{
    int i;
    for (i = 0; i < SIM_MAXINO; i++) {
        if (!d->ino[i].used) {
            sim_inode *f = &d->ino[i];
            memset(f, 0, sizeof *f);
            f->used = 1;
            f->cur = sim_buf_get();
            return i;
        }
    }
    fprintf(stderr, "sim: out of inodes\n");
    exit(2);
}

/* Free the inodes nothing refers to any more: no name (current or durable,
 * or in a pending directory operation), no handle, no mapping. */
static void sim_gc(sim_disk *d)
{
    int i, j;
    for (i = 0; i < SIM_MAXINO; i++) {
        sim_inode *f = &d->ino[i];
        int ref = 0;
        if (!f->used || f->handles || f->maps) continue;
        for (j = 0; j < d->ndir && !ref; j++) ref = d->dir[j].ino == i;
        for (j = 0; j < d->nddir && !ref; j++) ref = d->ddir[j].ino == i;
        for (j = 0; j < (int)d->ndops && !ref; j++) ref = d->dops[j].ino == i;
        if (ref) continue;
        sim_ops_clear(f);
        free(f->ops);
        sim_buf_put(f->cur, f->hw);
        free(f->dur);
        memset(f, 0, sizeof *f);
    }
}

/* ---- the kvdb_vfs ---- */
static int sim_open(void *ctx, const char *path, unsigned flags, kvdb_file **out)
{
    sim_disk *d = (sim_disk *)ctx;
    int i = sim_find(d->dir, d->ndir, path), ino;
    sim_fh *h;
    *out = NULL;
    if (i >= 0) {
        if ((flags & KVDB_VFS_CREATE) && (flags & KVDB_VFS_EXCL)) return kv_err(KVDB_EBUSY, "%s: file exists", path);
        ino = d->dir[i].ino;
    } else {
        if (!(flags & KVDB_VFS_CREATE)) return kv_err(KVDB_NOTFOUND, "%s: no such file", path);
        ino = sim_new_inode(d);
        sim_dop_add(d, SIM_D_LINK, path, NULL, ino);
    }
    h = (sim_fh *)sim_xmalloc(sizeof *h);
    h->d = d;
    h->ino = ino;
    h->lock = 0;
    d->ino[ino].handles++;
    *out = (kvdb_file *)h;
    return KVDB_OK;
}

static int sim_close(void *ctx, kvdb_file *file)
{
    sim_fh *h = (sim_fh *)file;
    sim_inode *f = &((sim_disk *)ctx)->ino[h->ino];
    if (h->lock == 1) f->lock_sh--;
    if (h->lock == 2) f->lock_ex--;
    f->handles--;
    free(h);
    sim_gc((sim_disk *)ctx);
    return KVDB_OK;
}

static int sim_read(void *ctx, kvdb_file *file, uint64_t off, void *buf, size_t n)
{
    sim_fh *h = (sim_fh *)file;
    sim_inode *f = &((sim_disk *)ctx)->ino[h->ino];
    if (off > f->size || n > f->size - off) return kv_err(KVDB_EIO, "sim: read past the end");
    if (n) memcpy(buf, f->cur + off, n);
    return KVDB_OK;
}

static int sim_write(void *ctx, kvdb_file *file, uint64_t off, const void *buf, size_t n)
{
    sim_disk *d = (sim_disk *)ctx;
    sim_fh *h = (sim_fh *)file;
    sim_inode *f = &d->ino[h->ino];
    if (off > SIM_CAP || n > SIM_CAP - off) return kv_err(KVDB_EFULL, "sim: file too large");
    memcpy(f->cur + off, buf, n);
    if (off + n > f->size) f->size = off + n;
    if (f->size > f->hw) f->hw = f->size;
    sim_op_add(f, SIM_OP_WRITE, off, n, buf);
    d->nwrite++;
    if (d->hook) d->hook(d, SIM_AT_WRITE);
    return KVDB_OK;
}

static int sim_truncate(void *ctx, kvdb_file *file, uint64_t size)
{
    sim_disk *d = (sim_disk *)ctx;
    sim_fh *h = (sim_fh *)file;
    sim_inode *f = &d->ino[h->ino];
    if (size > SIM_CAP) return kv_err(KVDB_EFULL, "sim: file too large");
    if (size < f->size) memset(f->cur + size, 0, (size_t)(f->size - size));
    f->size = size;
    if (f->size > f->hw) f->hw = f->size;
    sim_op_add(f, SIM_OP_TRUNC, 0, size, NULL);
    return KVDB_OK;
}

/* space reserved ahead of the log: a size change, pending like any other */
static int sim_reserve(void *ctx, kvdb_file *file, uint64_t size)
{
    sim_disk *d = (sim_disk *)ctx;
    sim_fh *h = (sim_fh *)file;
    return size > d->ino[h->ino].size ? sim_truncate(ctx, file, size) : KVDB_OK;
}

static int sim_sync(void *ctx, kvdb_file *file)
{
    sim_disk *d = (sim_disk *)ctx;
    sim_fh *h = (sim_fh *)file;
    sim_inode *f = &d->ino[h->ino];
    d->nsync++;
    if (d->hook) d->hook(d, SIM_AT_SYNC); /* the crash comes before the sync */
    free(f->dur);
    f->dur = (unsigned char *)sim_xmalloc((size_t)f->size);
    if (f->size) memcpy(f->dur, f->cur, (size_t)f->size);
    f->dsize = f->size;
    sim_ops_clear(f);
    return KVDB_OK;
}

static int sim_size(void *ctx, kvdb_file *file, uint64_t *out)
{
    sim_fh *h = (sim_fh *)file;
    *out = ((sim_disk *)ctx)->ino[h->ino].size;
    return KVDB_OK;
}

static int sim_lock(void *ctx, kvdb_file *file, int exclusive)
{
    sim_fh *h = (sim_fh *)file;
    sim_inode *f = &((sim_disk *)ctx)->ino[h->ino];
    if (h->lock) return KVDB_OK;
    if (f->lock_ex || (exclusive && f->lock_sh)) return kv_err(KVDB_ELOCKED, "sim: locked");
    if (exclusive) f->lock_ex++;
    else f->lock_sh++;
    h->lock = exclusive ? 2 : 1;
    return KVDB_OK;
}

static int sim_map(void *ctx, kvdb_file *file, uint64_t len, const void **out)
{
    sim_fh *h = (sim_fh *)file;
    sim_inode *f = &((sim_disk *)ctx)->ino[h->ino];
    if (len > SIM_CAP) return kv_err(KVDB_ENOMEM, "sim: cannot map %llu bytes", (unsigned long long)len);
    f->maps++;
    *out = f->cur;
    return KVDB_OK;
}

static int sim_unmap(void *ctx, kvdb_file *file, const void *p, uint64_t len)
{
    sim_fh *h = (sim_fh *)file;
    (void)p;
    (void)len;
    ((sim_disk *)ctx)->ino[h->ino].maps--;
    sim_gc((sim_disk *)ctx);
    return KVDB_OK;
}

static int sim_remove(void *ctx, const char *path)
{
    sim_disk *d = (sim_disk *)ctx;
    if (sim_find(d->dir, d->ndir, path) < 0) return KVDB_NOTFOUND;
    sim_dop_add(d, SIM_D_UNLINK, path, NULL, -1);
    return KVDB_OK;
}

static int sim_rename(void *ctx, const char *from, const char *to)
{
    sim_disk *d = (sim_disk *)ctx;
    if (sim_find(d->dir, d->ndir, from) < 0) return kv_err(KVDB_EIO, "sim: rename of a missing file");
    sim_dop_add(d, SIM_D_RENAME, from, to, -1);
    return KVDB_OK;
}

static int sim_sync_dir(void *ctx, const char *path)
{
    sim_disk *d = (sim_disk *)ctx;
    (void)path;
    if (d->fail_sync_dir > 0) {
        d->fail_sync_dir--;
        return kv_err(KVDB_EIO, "sim: injected sync_dir failure");
    }
    d->nsync++;
    if (d->hook) d->hook(d, SIM_AT_SYNC);
    memcpy(d->ddir, d->dir, sizeof d->dir);
    d->nddir = d->ndir;
    d->ndops = 0;
    sim_gc(d);
    return KVDB_OK;
}

static int sim_random(void *ctx, void *buf, size_t n)
{
    sim_disk *d = (sim_disk *)ctx;
    unsigned char *p = (unsigned char *)buf;
    while (n--) *p++ = (unsigned char)tu_rand(&d->rnd);
    return KVDB_OK;
}

static void sim_init(sim_disk *d, int map, uint64_t seed)
{
    kvdb_vfs v = { NULL, sim_open, sim_close, sim_read, sim_write, sim_sync, sim_size, sim_truncate, sim_lock,
                   sim_map, sim_unmap, sim_remove, sim_rename, sim_sync_dir, sim_random, sim_reserve };
    memset(d, 0, sizeof *d);
    v.ctx = d;
    if (!map) v.map = NULL, v.unmap = NULL;
    d->vfs = v;
    d->rnd = seed | 1;
}

static void sim_free(sim_disk *d)
{
    int i;
    for (i = 0; i < SIM_MAXINO; i++) {
        sim_inode *f = &d->ino[i];
        if (!f->used) continue;
        sim_ops_clear(f);
        free(f->ops);
        sim_buf_put(f->cur, f->hw);
        free(f->dur);
    }
    free(d->dops);
    memset(d, 0, sizeof *d);
}

/* The file of name on d's current directory, or NULL. */
static sim_inode *sim_file(sim_disk *d, const char *name)
{
    int i = sim_find(d->dir, d->ndir, name);
    return i < 0 ? NULL : &d->ino[d->dir[i].ino];
}

/* Make d's current state durable (as if everything had been synced). */
static void sim_settle(sim_disk *d)
{
    int i;
    for (i = 0; i < SIM_MAXINO; i++) {
        sim_inode *f = &d->ino[i];
        if (!f->used) continue;
        free(f->dur);
        f->dur = (unsigned char *)sim_xmalloc((size_t)f->size);
        if (f->size) memcpy(f->dur, f->cur, (size_t)f->size);
        f->dsize = f->size;
        sim_ops_clear(f);
    }
    memcpy(d->ddir, d->dir, sizeof d->dir);
    d->nddir = d->ndir;
    d->ndops = 0;
}

/* ---- power loss ----
 * style 0: every pending operation lost; 1: every one survives; 2: random
 * fates; 3: random fates, torn writes likely. */
enum { SEC_NEW, SEC_OLD, SEC_GARBAGE, SEC_ZERO };

static void sim_crash_file(const sim_inode *f, int style, uint64_t *rng, unsigned char *b, uint64_t *szp)
{
    uint64_t sz = f->dsize;
    size_t i;
    if (f->dsize) memcpy(b, f->dur, (size_t)f->dsize);
    for (i = 0; i < f->nops; i++) {
        const sim_op *op = &f->ops[i];
        if (op->kind == SIM_OP_TRUNC) {
            int apply = style == 1 || (style >= 2 && tu_rand(rng) % 4 != 0);
            if (!apply) continue;
            if (op->n < sz) memset(b + op->n, 0, (size_t)(sz - op->n));
            sz = op->n;
        } else {
            uint64_t end = op->off + op->n, newsz = sz, s;
            int fate; /* 0 survive, 1 lost, 2 torn */
            if (style == 0) fate = 1;
            else if (style == 1) fate = 0;
            else {
                unsigned r = (unsigned)(tu_rand(rng) % 100);
                unsigned torn = style == 3 ? 50 : 30;
                fate = r < torn ? 2 : r < torn + (100 - torn) / 2 ? 0 : 1;
            }
            if (end > sz) {
                if (style == 0) newsz = sz;
                else if (style == 1) newsz = end;
                else {
                    unsigned r = (unsigned)(tu_rand(rng) % 100);
                    if (r < 65) newsz = end;
                    else if (r < 80) newsz = sz;
                    else {
                        uint64_t lo = sz / SIM_SECTOR + 1, hi = (end + SIM_SECTOR - 1) / SIM_SECTOR;
                        newsz = hi > lo ? (lo + tu_rand(rng) % (hi - lo)) * SIM_SECTOR : end;
                        if (newsz > end) newsz = end;
                        if (newsz < sz) newsz = sz;
                    }
                }
            }
            for (s = op->off / SIM_SECTOR; s * SIM_SECTOR < end; s++) {
                uint64_t lo = s * SIM_SECTOR > op->off ? s * SIM_SECTOR : op->off;
                uint64_t hi = (s + 1) * SIM_SECTOR < end ? (s + 1) * SIM_SECTOR : end;
                int sec;
                if (hi > newsz) hi = newsz;
                if (lo >= hi) continue;
                if (fate == 0) sec = SEC_NEW;
                else if (fate == 1) sec = SEC_OLD;
                else {
                    unsigned r = (unsigned)(tu_rand(rng) % 100);
                    sec = r < 40 ? SEC_NEW : r < 65 ? SEC_OLD : r < 85 ? SEC_GARBAGE : SEC_ZERO;
                }
                if (sec == SEC_NEW) memcpy(b + lo, op->data + (lo - op->off), (size_t)(hi - lo));
                else if (sec == SEC_ZERO) memset(b + lo, 0, (size_t)(hi - lo));
                else if (sec == SEC_GARBAGE) {
                    uint64_t j;
                    for (j = lo; j < hi; j++) b[j] = (unsigned char)tu_rand(rng);
                }
            }
            sz = newsz;
        }
    }
    *szp = sz;
}

/* out = the disk d after a power loss now */
static void sim_crash(const sim_disk *d, int style, uint64_t *rng, sim_disk *out, int map)
{
    int i, keep;
    sim_init(out, map, tu_rand(rng));
    memcpy(out->dir, d->ddir, sizeof d->ddir);
    out->ndir = d->nddir;
    keep = style == 0 ? 0 : style == 1 ? (int)d->ndops : (int)(tu_rand(rng) % (d->ndops + 1));
    for (i = 0; i < keep; i++) sim_dir_apply(out->dir, &out->ndir, &d->dops[i]);
    for (i = 0; i < out->ndir; i++) {
        int src = out->dir[i].ino, j, dst = -1;
        /* names that share an inode share it afterwards too */
        for (j = 0; j < i; j++)
            if (out->dir[j].ino == src) dst = -2 - j;
        if (dst <= -2) {
            out->dir[i].ino = out->dir[-2 - dst].ino;
            continue;
        }
        dst = sim_new_inode(out);
        sim_crash_file(&d->ino[src], style, rng, out->ino[dst].cur, &out->ino[dst].size);
        /* the image may have written up to the largest size the file ever had */
        out->ino[dst].hw = d->ino[src].hw > out->ino[dst].size ? d->ino[src].hw : out->ino[dst].size;
        out->dir[i].ino = dst;
    }
    /* ids were remapped: the durable directory is the result, and it is all durable */
    sim_settle(out);
}

/* ==================================================================
 * the reference model
 * ================================================================== */
#define CS_NK 40
#define CS_MAXV 3200
#define CS_MAXC 400            /* commits per workload */

typedef struct {
    uint8_t present;
    uint32_t len;
    uint64_t vseed, h;        /* value bytes = cs_fill(vseed, len); h = their hash */
} cs_val;
typedef struct { cs_val v[CS_NK]; } cs_state;

static size_t cs_key(int i, unsigned char *k)
{
    size_t n = (size_t)sprintf((char *)k, "key%02d", i);
    if (i % 6 == 1) { k[n++] = 0; k[n++] = 'n'; }
    if (i % 9 == 4) { k[n++] = 0xfe; k[n++] = 0x01; }
    if (i % 13 == 7) { memset(k + n, 'K', 300); n += 300; }   /* records across sectors */
    return n;
}

static void cs_fill(uint64_t vseed, uint32_t len, unsigned char *v)
{
    uint64_t s = vseed * 0x9E3779B97F4A7C15ULL + 1;
    uint32_t i;
    for (i = 0; i < len; i++) {
        if (i % 8 == 0) (void)tu_rand(&s);
        v[i] = (unsigned char)(s >> (8 * (i % 8)));
    }
}

static cs_val cs_mkval(uint64_t vseed, uint32_t len)
{
    unsigned char v[CS_MAXV];
    cs_val x;
    x.present = 1;
    x.len = len;
    x.vseed = vseed;
    cs_fill(vseed, len, v);
    x.h = XXH3_64bits(v, len);
    return x;
}

/* what a database holds for the CS_NK keys */
typedef struct {
    int rc[CS_NK];
    uint32_t len[CS_NK];
    uint64_t h[CS_NK];
    uint64_t keys;          /* kvdb_stat */
} cs_obs;

/* read every key (through kvdb_get, or a read transaction) */
static int cs_observe(kvdb *db, cs_obs *o, int via_txn)
{
    unsigned char k[400], buf[CS_MAXV];
    struct kvdb_stat st;
    kvdb_txn *t = NULL;
    int i, rc;
    if (via_txn && (rc = kvdb_begin(db, KVDB_TXN_RDONLY, &t)) != KVDB_OK) return rc;
    for (i = 0; i < CS_NK; i++) {
        size_t kl = cs_key(i, k), vl = 0;
        if (t) {
            const void *vp;
            o->rc[i] = kvdb_txn_get(t, k, kl, &vp, &vl);
            if (o->rc[i] == KVDB_OK) o->h[i] = XXH3_64bits(vp, vl);
        } else {
            o->rc[i] = kvdb_get(db, k, kl, buf, sizeof buf, &vl);
            if (o->rc[i] == KVDB_OK) o->h[i] = XXH3_64bits(buf, vl < sizeof buf ? vl : sizeof buf);
        }
        o->len[i] = (uint32_t)vl;
    }
    if (t) kvdb_abort(t);
    rc = kvdb_stat(db, &st);
    o->keys = st.keys;
    return rc;
}

static int cs_matches(const cs_obs *o, const cs_state *s)
{
    int i;
    uint64_t n = 0;
    for (i = 0; i < CS_NK; i++) {
        if (s->v[i].present) {
            n++;
            if (o->rc[i] != KVDB_OK || o->len[i] != s->v[i].len || o->h[i] != s->v[i].h) return 0;
        } else if (o->rc[i] != KVDB_NOTFOUND) {
            return 0;
        }
    }
    return o->keys == n;
}

/* describe how o differs from s (for failure messages) */
static void cs_diff(const cs_obs *o, const cs_state *s, char *buf, size_t cap)
{
    int i;
    for (i = 0; i < CS_NK; i++) {
        if (s->v[i].present && (o->rc[i] != KVDB_OK || o->len[i] != s->v[i].len || o->h[i] != s->v[i].h)) {
            snprintf(buf, cap, "key%02d: rc %d len %u%s, want len %u", i, o->rc[i], o->len[i],
                     o->rc[i] == KVDB_OK && o->len[i] == s->v[i].len ? " (wrong bytes)" : "", s->v[i].len);
            return;
        }
        if (!s->v[i].present && o->rc[i] != KVDB_NOTFOUND) {
            snprintf(buf, cap, "key%02d: rc %d len %u, want NOTFOUND", i, o->rc[i], o->len[i]);
            return;
        }
    }
    snprintf(buf, cap, "stat keys %llu", (unsigned long long)o->keys);
}

/* ==================================================================
 * crash points and their checking
 * ================================================================== */
#define CS_PATH "/simdir/test.db"

typedef struct cs_img {
    sim_disk disk;
    int lo, hi;               /* allowed prefixes */
    uint64_t live_gen;        /* the generation of the live database file at the crash */
    long point;               /* which sync / write */
    int at, style, outcome;
    struct cs_img *next;
} cs_img;

typedef struct {
    /* the workload */
    uint64_t wseed;
    int mode, map;
    const char *what;
    cs_state *states;         /* states[j] = after commit j */
    int attempted, acked;     /* commits issued so far / known durable */
    /* crash capture */
    uint64_t rng;
    int k_sync, k_write;      /* outcomes per sync / write point */
    unsigned write_pct;       /* % of write points crashed */
    cs_img *pending;
    int capturing;
    /* results */
    long states_checked, points, fails;
    int garbage;              /* count headers torn into garbage apart */
    long ngarbage;
    char garbage_msg[300];
    /* compaction workloads */
    int cp;                   /* compactions in the workload */
    int cp_active;            /* a stepwise compaction is in progress */
    long cp_full, cp_stepwise, cp_steps, cp_abandoned, cp_points;
    long img_old_file;        /* images whose database is the file from before a swap */
    long img_stray;           /* images with a "<path>.compact" (removed by the open) */
    long recompacted;         /* recovered databases compacted again */
} cs_run;

static long cs_total_states, cs_total_points, cs_double_states, cs_total_bits;
static long cs_create_garbage;
static char cs_create_garbage_msg[300];

#define CS_TMP CS_PATH ".compact"

/* the generation in the header of the log file of that name (a compaction
 * writes its file with the generation one higher), or 0 */
static uint64_t cs_file_gen(const sim_disk *d, const char *name)
{
    int i = sim_find(d->dir, d->ndir, name);
    const sim_inode *f = i < 0 ? NULL : &d->ino[d->dir[i].ino];
    return f && f->size >= LG_HDR ? kv_ld64(f->cur + 48) : 0;
}

static void cs_capture(cs_run *R, sim_disk *d, int at)
{
    int k, n;
    if (!R->capturing) return;
    if (at == SIM_AT_WRITE && tu_rand(&R->rng) % 100 >= R->write_pct) return;
    n = at == SIM_AT_SYNC ? R->k_sync : R->k_write;
    R->points++;
    if (R->cp_active) R->cp_points++;
    for (k = 0; k < n; k++) {
        cs_img *im = (cs_img *)sim_xmalloc(sizeof *im);
        int style = k == 0 ? 0 : k == 1 ? 1 : 2 + (int)(tu_rand(&R->rng) % 2);
        sim_crash(d, style, &R->rng, &im->disk, (tu_rand(&R->rng) % 4) != 0);
        im->lo = R->acked;
        im->hi = R->attempted;
        im->live_gen = cs_file_gen(d, CS_PATH);
        im->point = at == SIM_AT_SYNC ? d->nsync : d->nwrite;
        im->at = at;
        im->style = style;
        im->outcome = k;
        im->next = R->pending;
        R->pending = im;
    }
}

static void cs_hook(sim_disk *d, int at)
{
    cs_capture((cs_run *)d->hookctx, d, at);
}

static int cs_open(sim_disk *d, unsigned flags, int mode, kvdb **db)
{
    kvdb_options o;
    kvdb_options_init(&o);
    o.flags = flags;
    o.sync = mode;
    o.vfs = &d->vfs;
    *db = NULL;
    return kvdb_open(CS_PATH, &o, db);
}

#define CS_FAIL(R, ...) do { if ((R)->fails++ < 3) tu_fail(__FILE__, __LINE__, __VA_ARGS__); } while (0)

static void cs_check_img(cs_run *R, cs_img *im, int depth);

/* a crash image: recover, check, and sometimes go further */
static void cs_check_img(cs_run *R, cs_img *im, int depth)
{
    kvdb *db = NULL;
    cs_obs o;
    int rc, j, found = -1, r = (int)(tu_rand(&R->rng) % 16);
    char ctx[200], diff[160];
    snprintf(ctx, sizeof ctx, "%s seed %#llx map %d: crash at %s %ld outcome %d (style %d)%s, allowed prefix %d..%d",
             R->what, (unsigned long long)R->wseed, R->map, im->at == SIM_AT_SYNC ? "sync" : "write", im->point,
             im->outcome, im->style, depth ? " during recovery" : "", im->lo, im->hi);
    R->states_checked++;
    if (depth) cs_double_states++;

    /* a read-only look first (sometimes): the same state, nothing changed */
    if (r == 1 && sim_file(&im->disk, CS_PATH) && im->lo > 0) {
        sim_inode *f = sim_file(&im->disk, CS_PATH);
        uint64_t sz = f->size;
        rc = cs_open(&im->disk, KVDB_RDONLY, KVDB_SYNC_FULL, &db);
        if (rc != KVDB_OK) { CS_FAIL(R, "%s: read-only open = %d (%s) [%s]", ctx, rc, kvdb_strerror(rc), kvdb_errmsg()); return; }
        cs_observe(db, &o, 1);
        for (j = im->hi; j >= im->lo && found < 0; j--)
            if (cs_matches(&o, &R->states[j])) found = j;
        if (found < 0) {
            cs_diff(&o, &R->states[im->lo], diff, sizeof diff);
            CS_FAIL(R, "%s: read-only open: state is no allowed prefix (vs %d: %s)", ctx, im->lo, diff);
        }
        kvdb_close(db);
        if (f->size != sz || f->nops) CS_FAIL(R, "%s: read-only open changed the file", ctx);
        found = -1;
    }

    if (im->live_gen && cs_file_gen(&im->disk, CS_PATH) && cs_file_gen(&im->disk, CS_PATH) < im->live_gen)
        R->img_old_file++; /* the rename of a compaction lost: the old file is the database */
    if (sim_find(im->disk.dir, im->disk.ndir, CS_TMP) >= 0) R->img_stray++;

    /* crash again during recovery (the cut of a torn tail and its sync) */
    if (depth == 0 && r < 2) {
        im->disk.hook = cs_hook;
        im->disk.hookctx = R;
    }
    {   /* crash images made during this recovery get this image's window */
        int save_lo = R->acked, save_hi = R->attempted;
        R->acked = im->lo;
        R->attempted = im->hi;
        rc = cs_open(&im->disk, KVDB_CREATE, KVDB_SYNC_FULL, &db);
        R->acked = save_lo;
        R->attempted = save_hi;
    }
    im->disk.hook = NULL;
    if (rc != KVDB_OK) {
        sim_inode *f = sim_file(&im->disk, CS_PATH);
        char what[80] = "no file";
        if (f) {
            uint64_t i, nz = 0;
            for (i = 0; i < f->size; i++) nz += f->cur[i] != 0;
            snprintf(what, sizeof what, "file of %llu bytes, %llu of them nonzero", (unsigned long long)f->size,
                     (unsigned long long)nz);
        }
        if (R->garbage && rc == KVDB_ENOTDB && f && f->size <= LG_HDR) {
            uint64_t i, nz = 0;
            for (i = 0; i < f->size; i++) nz += f->cur[i] != 0;
            if (nz && memcmp(f->cur, LG_MAGIC, f->size < 8 ? (size_t)f->size : 8) != 0) {
                /* a header torn into garbage: counted apart (test_crash_create_garbage) */
                if (!R->garbage_msg[0]) snprintf(R->garbage_msg, sizeof R->garbage_msg, "%s: %s", ctx, what);
                R->ngarbage++;
                return;
            }
        }
        CS_FAIL(R, "%s: open = %d (%s) [%s]; %s", ctx, rc, kvdb_strerror(rc), kvdb_errmsg(), what);
        return;
    }
    rc = cs_observe(db, &o, r == 3);
    for (j = im->hi; j >= im->lo && found < 0; j--)
        if (cs_matches(&o, &R->states[j])) found = j;
    if (found < 0) {
        int any = -1;
        for (j = 0; j <= im->hi && any < 0; j++)
            if (cs_matches(&o, &R->states[j])) any = j;
        cs_diff(&o, &R->states[im->lo], diff, sizeof diff);
        if (any >= 0)
            CS_FAIL(R, "%s: recovered prefix %d, but commits up to %d were acknowledged durable", ctx, any, im->lo);
        else
            CS_FAIL(R, "%s: recovered state is no prefix of the commits (vs prefix %d: %s)", ctx, im->lo, diff);
        kvdb_close(db);
        return;
    }
    /* a writable open removes what a compaction cut short left behind */
    if (sim_find(im->disk.dir, im->disk.ndir, CS_TMP) >= 0)
        CS_FAIL(R, "%s: %s is still there after the recovering open", ctx, CS_TMP);
    /* the recovered database compacts: the same state, also after a reopen */
    if (R->cp && (r == 6 || r == 9)) {
        R->recompacted++;
        rc = kvdb_compact(db);
        if (rc != KVDB_OK) CS_FAIL(R, "%s: kvdb_compact of the recovered database = %d (%s) [%s]", ctx, rc,
                                   kvdb_strerror(rc), kvdb_errmsg());
        cs_observe(db, &o, r == 9);
        if (!cs_matches(&o, &R->states[found])) {
            cs_diff(&o, &R->states[found], diff, sizeof diff);
            CS_FAIL(R, "%s: recovered prefix %d, then compacted: %s", ctx, found, diff);
        }
        rc = kvdb_close(db);
        db = NULL;
        if (rc != KVDB_OK) CS_FAIL(R, "%s: close after compacting the recovered database = %d", ctx, rc);
        rc = cs_open(&im->disk, 0, KVDB_SYNC_FULL, &db);
        if (rc != KVDB_OK) { CS_FAIL(R, "%s: reopen after compacting the recovered database = %d [%s]", ctx, rc, kvdb_errmsg()); return; }
        cs_observe(db, &o, 0);
        if (!cs_matches(&o, &R->states[found])) {
            cs_diff(&o, &R->states[found], diff, sizeof diff);
            CS_FAIL(R, "%s: recovered prefix %d, compacted, reopened: %s", ctx, found, diff);
        }
    }
    /* the recovered database keeps working: one more commit, a clean reopen */
    if (r == 2 || r == 5) {
        cs_state s = R->states[found];
        unsigned char k[400];
        size_t kl = cs_key(7, k);
        s.v[7] = cs_mkval(R->wseed ^ 0xabcdef, 77);
        {
            unsigned char v[CS_MAXV];
            cs_fill(s.v[7].vseed, 77, v);
            rc = kvdb_put(db, k, kl, v, 77);
        }
        if (rc != KVDB_OK) CS_FAIL(R, "%s: put after recovery = %d [%s]", ctx, rc, kvdb_errmsg());
        rc = kvdb_close(db);
        if (rc != KVDB_OK) CS_FAIL(R, "%s: close after recovery = %d", ctx, rc);
        rc = cs_open(&im->disk, 0, KVDB_SYNC_FULL, &db);
        if (rc != KVDB_OK) { CS_FAIL(R, "%s: reopen after recovery = %d [%s]", ctx, rc, kvdb_errmsg()); return; }
        cs_observe(db, &o, 0);
        if (!cs_matches(&o, &s)) {
            cs_diff(&o, &s, diff, sizeof diff);
            CS_FAIL(R, "%s: after recovery, a commit and a reopen: %s", ctx, diff);
        }
    }
    kvdb_close(db);
}

static void cs_drain(cs_run *R)
{
    int depth = 0, cp_active = R->cp_active;
    R->cp_active = 0; /* crash points of the recoveries are not inside a compaction */
    while (R->pending) {
        cs_img *list = R->pending, *im;
        R->pending = NULL;
        R->capturing = depth == 0; /* images made during recovery are checked, not re-crashed */
        while ((im = list) != NULL) {
            list = im->next;
            cs_check_img(R, im, depth);
            sim_free(&im->disk);
            free(im);
        }
        depth++;
        R->capturing = 0;
    }
    R->capturing = 1;
    R->cp_active = cp_active;
}

/* ==================================================================
 * workloads
 * ================================================================== */
static uint32_t cs_vlen(uint64_t *rng)
{
    unsigned r = (unsigned)(tu_rand(rng) % 100);
    if (r < 15) return 0;
    if (r < 70) return 1 + (uint32_t)(tu_rand(rng) % 40);
    if (r < 90) return 41 + (uint32_t)(tu_rand(rng) % 600);
    return 600 + (uint32_t)(tu_rand(rng) % (CS_MAXV - 600));
}

/* issue commit number R->attempted + 1 with result state s */
static void cs_pre_commit(cs_run *R, const cs_state *s)
{
    R->attempted++;
    R->states[R->attempted] = *s;
}

static void cs_post_commit(cs_run *R, int rc, const char *op)
{
    if (rc != KVDB_OK) CS_FAIL(R, "%s seed %#llx: %s (commit %d) = %d [%s]", R->what, (unsigned long long)R->wseed, op,
                               R->attempted, rc, kvdb_errmsg());
    else if (R->mode == KVDB_SYNC_FULL) R->acked = R->attempted;
    cs_drain(R);
}

static void cs_workload(uint64_t wseed, int mode, int map, int ncommits, cs_run *R)
{
    sim_disk d;
    kvdb *db = NULL;
    cs_state cur;
    uint64_t rng = wseed | 1, vs = wseed << 16;
    unsigned char k[400], v[CS_MAXV];
    int rc, steps = 0;
    kvdb_options o;
    size_t cp_budget = 1;
    unsigned cp_rate = 0;
    int cp_nsteps = 0;

    memset(&cur, 0, sizeof cur);
    R->wseed = wseed;
    R->mode = mode;
    R->map = map;
    R->what = mode == KVDB_SYNC_FULL ? "SYNC_FULL" : mode == KVDB_SYNC_NORMAL ? "SYNC_NORMAL" : "SYNC_OFF";
    R->attempted = R->acked = 0;
    memset(&R->states[0], 0, sizeof R->states[0]);
    R->rng = wseed ^ 0x1234567;
    R->capturing = 1;
    sim_init(&d, map, wseed);
    d.hook = cs_hook;
    d.hookctx = R;

    kvdb_options_init(&o);
    o.flags = KVDB_CREATE;
    o.sync = mode;
    o.vfs = &d.vfs;
    if (mode == KVDB_SYNC_NORMAL && wseed % 3 == 0) o.sync_bytes = 1500 + wseed % 3000; /* engine syncs by itself */
    R->capturing = 0; /* crashes while the database is created: test_crash_create */
    rc = kvdb_open(CS_PATH, &o, &db);
    R->capturing = 1;
    if (rc != KVDB_OK) { CS_FAIL(R, "%s seed %#llx: create = %d [%s]", R->what, (unsigned long long)wseed, rc, kvdb_errmsg()); goto out; }
    if (tu_rand(&rng) % 2) { /* the header is on disk: crash from here on */
        sim_settle(&d);
    }

    R->cp_active = 0;
    while (R->attempted < ncommits && steps++ < 4 * ncommits && !R->fails) {
        unsigned r;
        int i;
        size_t kl;
        if (R->cp) { /* compaction workloads: a full one now and then, or a stepwise one
                      * whose steps come between the other operations */
            unsigned c = (unsigned)(tu_rand(&rng) % 100);
            if (R->cp_active ? c < cp_rate : c < 6) {
                int upto = R->attempted;
                steps--;
                if (!R->cp_active && tu_rand(&rng) % 100 < 35) {
                    R->cp_active = 1; /* (for the count of crash points inside compactions) */
                    rc = kvdb_compact(db);
                    R->cp_active = 0;
                    if (rc != KVDB_OK) CS_FAIL(R, "%s seed %#llx: kvdb_compact = %d [%s]", R->what, (unsigned long long)wseed, rc, kvdb_errmsg());
                    else R->acked = upto, R->cp_full++; /* the new file and its name are durable */
                } else {
                    static const size_t budgets[5] = { 1, 150, 1000, 6000, 100000 };
                    if (!R->cp_active) {
                        cp_budget = budgets[tu_rand(&rng) % 5];
                        cp_rate = 10 + (unsigned)(tu_rand(&rng) % 60);
                        cp_nsteps = 0;
                    }
                    R->cp_active = 1;
                    if (++cp_nsteps > 400) { /* too slow to catch up with the commits: finish it */
                        rc = kvdb_compact(db);
                        if (rc == KVDB_OK) rc = KVDB_DONE;
                    } else {
                        rc = kvdb_compact_step(db, cp_budget);
                    }
                    R->cp_steps++;
                    if (rc == KVDB_DONE) {
                        R->cp_active = 0;
                        R->acked = upto;
                        R->cp_stepwise++;
                    } else if (rc != KVDB_OK) {
                        R->cp_active = 0;
                        CS_FAIL(R, "%s seed %#llx: kvdb_compact_step(%zu) = %d [%s]", R->what, (unsigned long long)wseed,
                                cp_budget, rc, kvdb_errmsg());
                    }
                }
                cs_drain(R);
                continue;
            }
        }
        r = (unsigned)(tu_rand(&rng) % 100);
        i = (int)(tu_rand(&rng) % CS_NK);
        kl = cs_key(i, k);
        if (r < 30) { /* auto-commit put */
            cs_state s = cur;
            uint32_t vl = cs_vlen(&rng);
            s.v[i] = cs_mkval(++vs, vl);
            cs_fill(vs, vl, v);
            cs_pre_commit(R, &s);
            rc = kvdb_put(db, k, kl, v, vl);
            cs_post_commit(R, rc, "put");
            if (rc == KVDB_OK) cur = s;
        } else if (r < 40) { /* auto-commit delete */
            if (!cur.v[i].present) {
                rc = kvdb_del(db, k, kl);
                if (rc != KVDB_NOTFOUND) CS_FAIL(R, "%s seed %#llx: del of absent key = %d", R->what, (unsigned long long)wseed, rc);
                cs_drain(R);
            } else {
                cs_state s = cur;
                memset(&s.v[i], 0, sizeof s.v[i]);
                cs_pre_commit(R, &s);
                rc = kvdb_del(db, k, kl);
                cs_post_commit(R, rc, "del");
                if (rc == KVDB_OK) cur = s;
            }
        } else if (r < 72) { /* a multi-key transaction */
            kvdb_txn *t;
            cs_state s = cur;
            int n = 2 + (int)(tu_rand(&rng) % 7), m;
            rc = kvdb_begin(db, 0, &t);
            if (rc != KVDB_OK) { CS_FAIL(R, "begin = %d", rc); break; }
            for (m = 0; m < n; m++) {
                int j = m == 0 ? i : (int)(tu_rand(&rng) % CS_NK);
                size_t jl = cs_key(j, k);
                if (tu_rand(&rng) % 10 < 7) {
                    uint32_t vl = cs_vlen(&rng);
                    s.v[j] = cs_mkval(++vs, vl);
                    cs_fill(vs, vl, v);
                    rc = kvdb_txn_put(t, k, jl, v, vl);
                    if (rc != KVDB_OK) CS_FAIL(R, "txn_put = %d", rc);
                } else {
                    rc = kvdb_txn_del(t, k, jl);
                    if (rc != (s.v[j].present ? KVDB_OK : KVDB_NOTFOUND)) CS_FAIL(R, "txn_del = %d", rc);
                    memset(&s.v[j], 0, sizeof s.v[j]);
                }
                if (tu_rand(&rng) % 4 == 0) { /* read back our own write */
                    const void *gv;
                    size_t gl;
                    rc = kvdb_txn_get(t, k, jl, &gv, &gl);
                    if (s.v[j].present ? (rc != KVDB_OK || gl != s.v[j].len || XXH3_64bits(gv, gl) != s.v[j].h)
                                       : rc != KVDB_NOTFOUND)
                        CS_FAIL(R, "txn_get of own write = %d", rc);
                }
            }
            cs_pre_commit(R, &s);
            rc = kvdb_commit(t);
            cs_post_commit(R, rc, "commit");
            if (rc == KVDB_OK) cur = s;
        } else if (r < 77) { /* aborted: nothing */
            kvdb_txn *t;
            rc = kvdb_begin(db, 0, &t);
            if (rc != KVDB_OK) { CS_FAIL(R, "begin = %d", rc); break; }
            kvdb_txn_put(t, k, kl, "aborted", 7);
            kvdb_abort(t);
            cs_drain(R);
        } else if (r < 90) { /* kvdb_sync */
            int upto = R->attempted;
            rc = kvdb_sync(db);
            if (rc != KVDB_OK) CS_FAIL(R, "kvdb_sync = %d", rc);
            else R->acked = upto;
            cs_drain(R);
        } else if (r < 93) { /* close and reopen (abandons a compaction in progress) */
            int upto = R->attempted;
            rc = kvdb_close(db);
            db = NULL;
            if (rc != KVDB_OK) CS_FAIL(R, "close = %d", rc);
            else R->acked = upto; /* close syncs in every mode */
            if (R->cp_active) R->cp_abandoned++;
            R->cp_active = 0;
            if (sim_find(d.dir, d.ndir, CS_TMP) >= 0) CS_FAIL(R, "%s seed %#llx: %s left by close", R->what, (unsigned long long)wseed, CS_TMP);
            cs_drain(R);
            o.flags = 0;
            rc = kvdb_open(CS_PATH, &o, &db);
            cs_drain(R);
            if (rc != KVDB_OK) { CS_FAIL(R, "reopen = %d [%s]", rc, kvdb_errmsg()); goto out; }
        } else if (r < 96) { /* a checkpoint: the sidecar (tmp file, rename, sync_dir) */
            rc = kvdb_checkpoint(db);
            if (rc != KVDB_OK) CS_FAIL(R, "kvdb_checkpoint = %d [%s]", rc, kvdb_errmsg());
            cs_drain(R);
        } else { /* a read: the handle sees every commit at once */
            cs_obs ob;
            cs_observe(db, &ob, (int)(r & 1));
            if (!cs_matches(&ob, &cur)) {
                char diff[160];
                cs_diff(&ob, &cur, diff, sizeof diff);
                CS_FAIL(R, "%s seed %#llx: live read: %s", R->what, (unsigned long long)wseed, diff);
            }
        }
    }
    {
        int upto = R->attempted;
        rc = kvdb_close(db);
        db = NULL;
        if (rc != KVDB_OK) CS_FAIL(R, "final close = %d", rc);
        else R->acked = upto; /* close syncs in every mode */
        if (R->cp_active) R->cp_abandoned++;
        R->cp_active = 0;
        if (sim_find(d.dir, d.ndir, CS_TMP) >= 0) CS_FAIL(R, "%s seed %#llx: %s left by close", R->what, (unsigned long long)wseed, CS_TMP);
        cs_drain(R);
    }
    /* after the close: a power loss now loses nothing */
    {
        int save = R->k_sync;
        R->k_sync = 4;
        cs_capture(R, &d, SIM_AT_SYNC);
        R->k_sync = save;
        cs_drain(R);
    }
out:
    if (db) kvdb_close(db);
    while (R->pending) { /* after an early stop */
        cs_img *im = R->pending;
        R->pending = im->next;
        sim_free(&im->disk);
        free(im);
    }
    sim_free(&d);
}

static long cs_cp_states, cs_cp_points, cs_cp_inside, cs_cp_old_file, cs_cp_stray, cs_cp_counts[5];

static void cs_mode_runs_cp(int mode, int nwork, int ncommits, int cp)
{
    cs_run R;
    int w;
    clock_t t0 = clock();
    memset(&R, 0, sizeof R);
    R.states = (cs_state *)sim_xmalloc((CS_MAXC + 1) * sizeof *R.states);
    R.k_sync = 6;
    R.k_write = 3;
    R.cp = cp;
    for (w = 0; w < nwork && !R.fails; w++) {
        uint64_t ws = cs_seed ^ ((uint64_t)mode << 40) ^ ((uint64_t)w * 0x9E3779B97F4A7C15ULL) ^ (cp ? 0xC0C0C0ULL : 0);
        R.write_pct = cp ? 20 : mode == KVDB_SYNC_FULL ? 25 : 50;
        cs_workload(ws, mode, w % 3 != 2, ncommits, &R);
    }
    cs_total_states += R.states_checked;
    cs_total_points += R.points;
    printf("# %s%s: %d workloads, %ld crash points, %ld crash states checked (%.1f s)\n",
           mode == KVDB_SYNC_FULL ? "SYNC_FULL" : mode == KVDB_SYNC_NORMAL ? "SYNC_NORMAL" : "SYNC_OFF",
           cp ? " with compactions" : "", w, R.points, R.states_checked, (double)(clock() - t0) / CLOCKS_PER_SEC);
    if (cp) {
        printf("#   %ld full and %ld stepwise compactions (%ld steps), %ld abandoned by close; %ld crash points inside "
               "them; %ld images with the old file after a lost rename, %ld with a stray %s; %ld recovered databases "
               "compacted again\n", R.cp_full, R.cp_stepwise, R.cp_steps, R.cp_abandoned, R.cp_points, R.img_old_file,
               R.img_stray, CS_TMP, R.recompacted);
        cs_cp_states += R.states_checked;
        cs_cp_points += R.points;
        cs_cp_inside += R.cp_points;
        cs_cp_old_file += R.img_old_file;
        cs_cp_stray += R.img_stray;
        cs_cp_counts[0] += R.cp_full;
        cs_cp_counts[1] += R.cp_stepwise;
        cs_cp_counts[2] += R.cp_abandoned;
        cs_cp_counts[3] += R.recompacted;
    }
    CHECK(R.states_checked > 0);
    free(R.states);
}

static void cs_mode_runs(int mode, int nwork, int ncommits) { cs_mode_runs_cp(mode, nwork, ncommits, 0); }

static int cs_nwork(void) { return (cs_slow ? 12 : 40) * (int)tu_scale(); }

static void test_crash_full(void) { cs_mode_runs(KVDB_SYNC_FULL, cs_nwork(), 60); }
static void test_crash_normal(void) { cs_mode_runs(KVDB_SYNC_NORMAL, cs_nwork(), 80); }
static void test_crash_off(void) { cs_mode_runs(KVDB_SYNC_OFF, cs_nwork() / 2, 80); }

/* The simulated disk's model of a compaction's swap: the new file, synced,
 * renamed over the database.  Until the directory sync, a power loss may
 * lose the rename (the old file is the database, the new one may be left
 * under its temporary name) or keep it; never a mix of the two files.
 * After the directory sync the new file is the database. */
static void test_sim_rename(void)
{
    static const char *const db = "/simdir/x.db", *const tmp = "/simdir/x.db.compact";
    sim_disk d;
    kvdb_file *a = NULL, *b = NULL;
    uint64_t rng = 11;
    int k, seen_old = 0, seen_new = 0, seen_stray = 0, synced;
    sim_init(&d, 1, 3);
    REQUIRE_OK(sim_open(&d, db, KVDB_VFS_CREATE, &a));
    REQUIRE_OK(sim_write(&d, a, 0, "old file", 8));
    REQUIRE_OK(sim_sync(&d, a));
    REQUIRE_OK(sim_sync_dir(&d, db));
    REQUIRE_OK(sim_open(&d, tmp, KVDB_VFS_CREATE | KVDB_VFS_EXCL, &b));
    REQUIRE_OK(sim_write(&d, b, 0, "new file!", 9));
    REQUIRE_OK(sim_sync(&d, b));
    REQUIRE_OK(sim_rename(&d, tmp, db));
    CHECK(sim_file(&d, tmp) == NULL && sim_file(&d, db) && sim_file(&d, db)->size == 9);
    for (synced = 0; synced < 2; synced++) {
        if (synced) REQUIRE_OK(sim_sync_dir(&d, db));
        for (k = 0; k < 200; k++) {
            sim_disk img;
            sim_inode *f, *t;
            int style = k < 2 ? k : 2 + k % 2;
            sim_crash(&d, style, &rng, &img, 1);
            f = sim_file(&img, db);
            t = sim_file(&img, tmp);
            CHECK(f != NULL);
            if (f && f->size == 8 && memcmp(f->cur, "old file", 8) == 0) {
                seen_old++;
                CHECK(!synced);           /* after the directory sync, never the old file */
                CHECK(style != 1);        /* every pending operation survived: the rename too */
                if (t) {
                    seen_stray++;
                    CHECK(t->size == 9 && memcmp(t->cur, "new file!", 9) == 0);
                }
            } else if (f) {
                seen_new++;
                CHECK(f->size == 9 && memcmp(f->cur, "new file!", 9) == 0);
                CHECK(style != 0 || synced); /* every pending operation lost: the rename too */
                CHECK(t == NULL);
            }
            sim_free(&img);
        }
    }
    CHECK(seen_old > 0 && seen_new > 200 && seen_stray > 0);
    sim_close(&d, a);
    sim_close(&d, b);
    sim_free(&d);
}

/* The workloads with compactions: full ones (kvdb_compact: copy, sync, rename
 * over the database, directory sync, then the sidecar of the new file) and
 * stepwise ones (kvdb_compact_step with budgets from 1 byte up, commits,
 * checkpoints, syncs and reopens between the steps; a close abandons one).
 * Crashes at every sync point -- the new file's syncs, the directory sync
 * after the rename, the sidecar's -- and a sample of write points, several
 * outcomes each; a rename not followed by the directory sync may be lost,
 * and then the old file is the database.  Besides prefix-recoverability:
 * a compaction that returned acknowledges every commit before it (the new
 * file and its name are durable), the recovering open removes a stray
 * "<path>.compact", and some recovered databases are compacted again. */
static void test_crash_compact(void)
{
    int nw = (cs_slow ? 8 : 36) * (int)tu_scale();
    cs_mode_runs_cp(KVDB_SYNC_FULL, nw, 50, 1);
    cs_mode_runs_cp(KVDB_SYNC_NORMAL, nw, 60, 1);
    cs_mode_runs_cp(KVDB_SYNC_OFF, nw / 2, 60, 1);
    printf("# compaction workloads: %ld crash states checked at %ld crash points (%ld inside compactions); %ld full, "
           "%ld stepwise compactions, %ld abandoned\n", cs_cp_states, cs_cp_points, cs_cp_inside, cs_cp_counts[0],
           cs_cp_counts[1], cs_cp_counts[2]);
    CHECK(cs_cp_counts[0] > 0 && cs_cp_counts[1] > 0 && cs_cp_counts[2] > 0 && cs_cp_counts[3] > 0);
    CHECK(cs_cp_inside > 0);
    CHECK(cs_cp_old_file > 0); /* lost renames were among the outcomes */
    CHECK(cs_cp_stray > 0);    /* and crashes that left the new file behind */
}

/* A power loss while kvdb_open(KVDB_CREATE) creates the database (at the
 * sync of the header, at the directory sync): nothing was acknowledged, so
 * opening again with KVDB_CREATE must give an empty database -- whatever
 * the fates of the header write, the file's size change and its directory
 * entry. */
static void test_crash_create(void)
{
    cs_run R;
    int w, nw = (cs_slow ? 20 : 60) * (int)tu_scale();
    memset(&R, 0, sizeof R);
    R.states = (cs_state *)sim_xmalloc(sizeof *R.states);
    memset(R.states, 0, sizeof *R.states);
    R.k_sync = 8;
    R.k_write = 4;
    R.write_pct = 100;
    R.what = "create";
    R.garbage = 1;
    for (w = 0; w < nw && !R.fails; w++) {
        sim_disk d;
        kvdb *db = NULL;
        int rc;
        R.wseed = cs_seed ^ (uint64_t)w;
        R.rng = R.wseed;
        R.capturing = 1;
        sim_init(&d, w % 2, R.wseed);
        d.hook = cs_hook;
        d.hookctx = &R;
        rc = cs_open(&d, KVDB_CREATE, KVDB_SYNC_FULL, &db);
        R.capturing = 0;
        CHECK_OK(rc);
        if (db) kvdb_close(db);
        cs_drain(&R);
        sim_free(&d);
    }
    cs_total_states += R.states_checked;
    cs_total_points += R.points;
    printf("# create: %ld crash points, %ld crash states checked\n", R.points, R.states_checked);
    free(R.states);
    cs_create_garbage = R.ngarbage;
    snprintf(cs_create_garbage_msg, sizeof cs_create_garbage_msg, "%s", R.garbage_msg);
}

/* The same crashes, the header write torn into garbage (a sector of random
 * bytes in the new file: what a torn write or, with data=writeback, stale
 * blocks can leave).  Nothing was acknowledged, yet kvdb_open(KVDB_CREATE)
 * refuses the file forever (KVDB_ENOTDB) and the user must delete it by
 * hand.  Creating the file under a temporary name and renaming it once the
 * header is synced would make this impossible. */
static void test_crash_create_garbage(void)
{
    printf("# create: %ld crash states with a header torn into garbage refused\n", cs_create_garbage);
    if (cs_create_garbage)
        tu_fail(__FILE__, __LINE__, "%ld crash states: a database whose creation was interrupted is refused "
                "(KVDB_ENOTDB) by kvdb_open(KVDB_CREATE); first: %s", cs_create_garbage, cs_create_garbage_msg);
}

/* The directory entry of the database file must be durable before a
 * SYNC_FULL commit is acknowledged -- also when the file was created by an
 * earlier attempt that did not finish: a process that died between creating
 * the file and syncing the directory (case 0: the file is there, empty), or
 * a kvdb_open whose directory sync failed (case 1).  The next open finds the
 * file, commits are acknowledged, then the power fails and every pending
 * directory operation is lost. */
static void test_crash_dir_sync(void)
{
    int c;
    for (c = 0; c < 2; c++) {
        sim_disk d, img;
        kvdb *db = NULL;
        uint64_t rng = 99;
        int rc;
        sim_init(&d, 1, 5 + (uint64_t)c);
        if (c == 0) {
            kvdb_file *f;
            CHECK_OK(sim_open(&d, CS_PATH, KVDB_VFS_CREATE | KVDB_VFS_EXCL, &f));
            sim_close(&d, f);
        } else {
            d.fail_sync_dir = 1;
            rc = cs_open(&d, KVDB_CREATE, KVDB_SYNC_FULL, &db);
            CHECK(rc == KVDB_EIO && db == NULL);
        }
        rc = cs_open(&d, KVDB_CREATE, KVDB_SYNC_FULL, &db);
        CHECK_OK(rc);
        if (rc == KVDB_OK) {
            CHECK_OK(kvdb_put(db, "acked", 5, "yes", 3));
            CHECK_OK(kvdb_close(db));
        }
        sim_crash(&d, 0, &rng, &img, 1);
        rc = cs_open(&img, KVDB_CREATE, KVDB_SYNC_FULL, &db);
        CHECK_OK(rc);
        if (rc == KVDB_OK) {
            char buf[8];
            size_t vl = 0;
            rc = kvdb_get(db, "acked", 5, buf, sizeof buf, &vl);
            if (rc != KVDB_OK)
                tu_fail(__FILE__, __LINE__, "%s: an acknowledged SYNC_FULL commit is lost after a power loss (get = %d): "
                        "the file's directory entry was never synced", c == 0 ? "file left empty by a crashed create"
                        : "create whose directory sync failed, then reopened", rc);
            kvdb_close(db);
        }
        sim_free(&img);
        sim_free(&d);
    }
}

/* the suite's promise: at least 10,000 crash states per make test (plain) */
static void test_crash_count(void)
{
    printf("# crash states checked: %ld (at %ld crash points; %ld of them during recovery)\n", cs_total_states,
           cs_total_points, cs_double_states);
    if (!cs_slow) CHECK(cs_total_states >= 10000);
    CHECK(cs_double_states > 0);
}

/* ==================================================================
 * bit flips
 * ================================================================== */
typedef struct {
    uint64_t off, end;
    int commit;
    uint64_t durable;
} bf_rec;

/* A small database built on d (SYNC_FULL, one session): its states and the
 * records of its file, parsed from the documented format. */
static int bf_build(sim_disk *d, cs_state *states, int *nstates, uint64_t *ends, bf_rec *recs, int *nrec, int maxrec)
{
    kvdb *db;
    cs_state cur;
    uint64_t rng = cs_seed ^ 0xb17f11b5, vs = 1000;
    unsigned char k[400], v[CS_MAXV];
    int c, rc, n = 0;
    sim_inode *f;
    uint64_t off;
    memset(&cur, 0, sizeof cur);
    sim_init(d, 1, cs_seed);
    rc = cs_open(d, KVDB_CREATE, KVDB_SYNC_FULL, &db);
    if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "create = %d", rc); return -1; }
    states[0] = cur;
    ends[0] = LG_HDR;
    for (c = 1; c <= 12; c++) {
        kvdb_txn *t;
        int m, nops = 1 + (int)(tu_rand(&rng) % 3);
        struct kvdb_stat st;
        if (kvdb_begin(db, 0, &t) != KVDB_OK) { kvdb_close(db); return -1; }
        for (m = 0; m < nops; m++) {
            int i = (int)(tu_rand(&rng) % 12);
            size_t kl = cs_key(i == 7 ? 8 : i, k); /* no 300-byte keys: keep it small */
            if (i == 7) i = 8;
            if (cur.v[i].present && tu_rand(&rng) % 4 == 0) {
                kvdb_txn_del(t, k, kl);
                memset(&cur.v[i], 0, sizeof cur.v[i]);
            } else {
                uint32_t vl = (uint32_t)(tu_rand(&rng) % 5 == 0 ? 0 : tu_rand(&rng) % 60);
                cur.v[i] = cs_mkval(++vs, vl);
                cs_fill(vs, vl, v);
                kvdb_txn_put(t, k, kl, v, vl);
            }
        }
        rc = kvdb_commit(t);
        if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "commit = %d", rc); kvdb_close(db); return -1; }
        kvdb_stat(db, &st);
        states[c] = cur;
        ends[c] = st.file_bytes;
    }
    *nstates = c - 1;
    if (kvdb_close(db) != KVDB_OK) return -1;
    f = sim_file(d, CS_PATH);
    if (!f) return -1;
    /* the records (the file is intact, so the lengths can be trusted) */
    off = LG_HDR;
    while (off < f->size && n < maxrec) {
        const unsigned char *p = f->cur + off;
        uint64_t size = 16 + (uint64_t)kv_ld16(p + 10) + kv_ld32(p + 12);
        recs[n].off = off;
        recs[n].end = off + size;
        recs[n].commit = p[8] == 3;
        recs[n].durable = recs[n].commit ? kv_ld64(p + 24) : 0;
        n++;
        off += size;
    }
    *nrec = n;
    /* ...ending with the seal close appends: everything before it synced */
    if (off != f->size || off != ends[*nstates] + 40 || !recs[n - 1].commit || recs[n - 1].durable != ends[*nstates]) {
        tu_fail(__FILE__, __LINE__, "file does not parse, or does not end with a seal");
        return -1;
    }
    return 0;
}

static void test_bit_flips_offline(void)
{
    sim_disk src;
    cs_state states[16];
    uint64_t ends[16];
    bf_rec recs[128];
    int nst = 0, nrec = 0, fails = 0, ncorrupt = 0, ncut = 0;
    long flipped = 0;
    uint64_t len, bit;
    sim_inode *f;
    unsigned char *img;
    if (bf_build(&src, states, &nst, ends, recs, &nrec, 128) != 0) { sim_free(&src); return; }
    f = sim_file(&src, CS_PATH);
    len = f->size;
    img = (unsigned char *)sim_xmalloc((size_t)len);
    memcpy(img, f->cur, (size_t)len);
    for (bit = 0; bit < len * 8 && fails < 3; bit++) {
        uint64_t p = bit / 8, X = 0;
        sim_disk d;
        sim_inode *g;
        kvdb *db;
        int rc, r, want_corrupt = 0, j;
        /* sanitizers: all of the first KB, a stride beyond (soak: all) */
        if (cs_slow && tu_scale() == 1 && p >= 1024 && bit % 7 != 0) continue;
        flipped++;
        sim_init(&d, (int)(bit & 1), bit);
        g = &d.ino[sim_new_inode(&d)];
        memcpy(g->cur, img, (size_t)len);
        g->cur[p] ^= (unsigned char)(1u << (bit % 8));
        g->size = g->hw = len;
        sim_dir_link(d.dir, &d.ndir, CS_PATH, 0);
        sim_settle(&d);
        rc = cs_open(&d, 0, KVDB_SYNC_FULL, &db);
        if (p < LG_HDR) {
            if (rc == KVDB_OK || (rc != KVDB_ENOTDB && rc != KVDB_ECORRUPT && rc != KVDB_EVERSION)) {
                tu_fail(__FILE__, __LINE__, "header bit %llu: open = %d (%s)", (unsigned long long)bit, rc, kvdb_strerror(rc));
                fails++;
            }
            if (rc == KVDB_OK) kvdb_close(db);
        } else {
            for (r = 0; r < nrec; r++)
                if (recs[r].off <= p && p < recs[r].end) X = recs[r].off;
            for (r = 0; r < nrec; r++)
                if (recs[r].commit && recs[r].off > X && recs[r].durable > X) want_corrupt = 1;
            if (want_corrupt) {
                ncorrupt++;
                if (rc != KVDB_ECORRUPT) {
                    tu_fail(__FILE__, __LINE__, "bit %llu (record at %llu, proven synced): open = %d (%s), want ECORRUPT",
                            (unsigned long long)bit, (unsigned long long)X, rc, kvdb_strerror(rc));
                    fails++;
                    if (rc == KVDB_OK) kvdb_close(db);
                }
            } else {
                for (j = 0; j <= nst && ends[j] <= X; j++) {}
                j--;
                ncut++;
                if (rc != KVDB_OK) {
                    tu_fail(__FILE__, __LINE__, "bit %llu (record at %llu, in the unsynced tail): open = %d (%s) [%s]",
                            (unsigned long long)bit, (unsigned long long)X, rc, kvdb_strerror(rc), kvdb_errmsg());
                    fails++;
                } else {
                    cs_obs o;
                    cs_observe(db, &o, (int)(bit & 2));
                    if (!cs_matches(&o, &states[j])) {
                        char diff[160];
                        cs_diff(&o, &states[j], diff, sizeof diff);
                        tu_fail(__FILE__, __LINE__, "bit %llu: want the prefix of %d commits: %s", (unsigned long long)bit, j, diff);
                        fails++;
                    }
                    kvdb_close(db);
                    if (g->size != ends[j] + 40) { /* cut to commit j, sealed again by close */
                        tu_fail(__FILE__, __LINE__, "bit %llu: file %llu bytes after open, want %llu and a seal", (unsigned long long)bit,
                                (unsigned long long)g->size, (unsigned long long)ends[j]);
                        fails++;
                    }
                }
            }
        }
        if (rc != KVDB_OK) { /* refused: nothing changed */
            g->cur[p] ^= (unsigned char)(1u << (bit % 8));
            if (g->size != len || memcmp(g->cur, img, (size_t)len) != 0 || g->nops != 0) {
                tu_fail(__FILE__, __LINE__, "bit %llu: failed open changed the file", (unsigned long long)bit);
                fails++;
            }
        }
        sim_free(&d);
    }
    printf("# bit flips (offline): %ld of %llu bits flipped, %d in records proven synced, %d in the tail\n", flipped,
           (unsigned long long)(len * 8), ncorrupt, ncut);
    cs_total_bits += flipped;
    CHECK(ncorrupt > 0 && ncut > 0);
    free(img);
    sim_free(&src);
    /* EXTEND: flip every bit of the sidecar too once it exists */
}

static void test_bit_flips_live(void)
{
    sim_disk d;
    cs_state states[16];
    uint64_t ends[16];
    bf_rec recs[128];
    int nst = 0, nrec = 0, fails = 0, pass;
    long flipped = 0, corrupt_reads = 0;
    if (bf_build(&d, states, &nst, ends, recs, &nrec, 128) != 0) { sim_free(&d); return; }
    for (pass = 0; pass < 2; pass++) {
        kvdb *db;
        sim_inode *f;
        uint64_t bit, len;
        int rc;
        d.vfs.map = pass == 0 ? sim_map : NULL;
        d.vfs.unmap = pass == 0 ? sim_unmap : NULL;
        rc = cs_open(&d, pass ? KVDB_RDONLY : 0, KVDB_SYNC_FULL, &db);
        if (rc != KVDB_OK) { tu_fail(__FILE__, __LINE__, "open = %d", rc); break; }
        f = sim_file(&d, CS_PATH);
        len = f->size;
        for (bit = LG_HDR * 8; bit < len * 8 && fails < 3; bit++) {
            uint64_t p = bit / 8;
            unsigned char m = (unsigned char)(1u << (bit % 8));
            cs_obs o;
            int i;
            if (cs_slow && tu_scale() == 1 && p >= 1024 && bit % 5 != 0) continue;
            flipped++;
            f->cur[p] ^= m;
            cs_observe(db, &o, (int)(bit & 1));
            for (i = 0; i < CS_NK; i++) {
                const cs_val *want = &states[nst].v[i];
                if (o.rc[i] == KVDB_ECORRUPT) { corrupt_reads++; continue; }
                if (want->present ? (o.rc[i] != KVDB_OK || o.len[i] != want->len || o.h[i] != want->h)
                                  : o.rc[i] != KVDB_NOTFOUND) {
                    tu_fail(__FILE__, __LINE__, "%s: bit %llu flipped under an open handle: key%02d rc %d (%s) len %u, want %s len %u",
                            pass ? "pread" : "mmap", (unsigned long long)bit, i, o.rc[i], kvdb_strerror(o.rc[i]), o.len[i],
                            want->present ? "OK" : "NOTFOUND", want->len);
                    fails++;
                    break;
                }
            }
            f->cur[p] ^= m;
        }
        kvdb_close(db);
    }
    printf("# bit flips (live): %ld bits flipped, %ld reads gave ECORRUPT\n", flipped, corrupt_reads);
    cs_total_bits += flipped;
    CHECK(corrupt_reads > 0);
    sim_free(&d);
}

int main(void)
{
    const char *fl = getenv("KVDB_TEST_FLAVOUR"), *sd = getenv("KVDB_TEST_SEED");
    clock_t t0 = clock();
#ifdef KVDB_TEST_HASH_BITS
    cs_slow = 1;
#endif
    if (CS_ASAN || (fl && (strcmp(fl, "asan") == 0 || strcmp(fl, "hash4") == 0))) cs_slow = 1;
    if (sd && *sd) cs_seed = strtoull(sd, NULL, 0);
    cs_verbose = getenv("KVDB_TEST_VERBOSE") != NULL;
    RUN(test_crash_full);
    RUN(test_crash_normal);
    RUN(test_crash_off);
    RUN(test_sim_rename);
    RUN(test_crash_compact);
    RUN(test_crash_create);
    RUN(test_crash_create_garbage);
    RUN(test_crash_dir_sync);
    RUN(test_crash_count);
    RUN(test_bit_flips_offline);
    RUN(test_bit_flips_live);
    sim_pool_free();
    printf("# crashsim: %ld crash states, %ld bit flips, %.1f s\n", cs_total_states, cs_total_bits,
           (double)(clock() - t0) / CLOCKS_PER_SEC);
    TEST_MAIN_END();
}
