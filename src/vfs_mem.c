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

