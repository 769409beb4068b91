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

