/*
 * fuzzvfs.h -- a one-file in-memory kvdb_vfs for the fuzz targets.
 *
 * The file lives in a fixed buffer (FZ_CAP bytes: writes beyond are
 * KVDB_EFULL, maps beyond are refused -- the engine then maps less), so a
 * mapping never moves.  A few files by name (the database, its sidecar and
 * the sidecar's temporary); they survive kvdb_close, so a target can reopen.
 * Included after ../../kvdb.c.
 */
#ifndef KVDB_FUZZVFS_H
#define KVDB_FUZZVFS_H

#define FZ_CAP ((uint64_t)1 << 20)

#define FZ_NFILES 6
#define FZ_NAME 128

/* an inode: its buffer lives until no name, handle or mapping refers to it */
typedef struct {
    int used, links, handles, maps;
    unsigned char *p;       /* FZ_CAP bytes */
    uint64_t size;
} fz_file;

typedef struct {
    fz_file f[FZ_NFILES];   /* f[0] is the database the target set up */
    char name[FZ_NFILES][FZ_NAME];
    int ino[FZ_NFILES];     /* name[i] ("" = unused) -> f[ino[i]] */
    int handles, maps;
    uint64_t rnd;
    kvdb_vfs vfs;
} fz_disk;

static int fz_lookup(fz_disk *d, const char *path)
{
    int i;
    for (i = 0; i < FZ_NFILES; i++)
        if (d->name[i][0] && strcmp(d->name[i], path) == 0) return i;
    return -1;
}

static void fz_put(fz_file *f)
{
    if (f->links == 0 && f->handles == 0 && f->maps == 0) f->used = 0;
}

static int fz_open(void *ctx, const char *path, unsigned flags, kvdb_file **out)
{
    fz_disk *d = (fz_disk *)ctx;
    int n = fz_lookup(d, path), i, j;
    fz_file *f;
    *out = NULL;
    if (n >= 0 && (flags & KVDB_VFS_CREATE) && (flags & KVDB_VFS_EXCL)) return KVDB_EBUSY;
    if (n < 0) {
        if (!(flags & KVDB_VFS_CREATE)) return KVDB_NOTFOUND;
        if (strlen(path) >= FZ_NAME) return KVDB_EIO;
        for (i = 0; i < FZ_NFILES && d->f[i].used; i++) {}
        for (j = 0; j < FZ_NFILES && d->name[j][0]; j++) {}
        if (i == FZ_NFILES || j == FZ_NFILES) return kv_err(KVDB_EIO, "fz: too many files");
        d->f[i].used = 1;
        d->f[i].links = 1;
        d->f[i].size = 0;
        strcpy(d->name[j], path);
        d->ino[j] = i;
        n = j;
    }
    f = &d->f[d->ino[n]];
    f->handles++;
    d->handles++;
    *out = (kvdb_file *)f;
    return KVDB_OK;
}
static int fz_close(void *ctx, kvdb_file *file)
{
    fz_file *f = (fz_file *)file;
    ((fz_disk *)ctx)->handles--;
    f->handles--;
    fz_put(f);
    return KVDB_OK;
}
static int fz_read(void *ctx, kvdb_file *file, uint64_t off, void *buf, size_t n)
{
    fz_file *f = (fz_file *)file;
    (void)ctx;
    if (off > f->size || n > f->size - off) return kv_err(KVDB_EIO, "fz: read past the end");
    if (n) memcpy(buf, f->p + off, n);
    return KVDB_OK;
}
static int fz_write(void *ctx, kvdb_file *file, uint64_t off, const void *buf, size_t n)
{
    fz_file *f = (fz_file *)file;
    (void)ctx;
    if (off > FZ_CAP || n > FZ_CAP - off) return kv_err(KVDB_EFULL, "fz: full");
    if (off > f->size) memset(f->p + f->size, 0, (size_t)(off - f->size));
    memcpy(f->p + off, buf, n);
    if (off + n > f->size) f->size = off + n;
    return KVDB_OK;
}
static int fz_sync(void *ctx, kvdb_file *f) { (void)ctx; (void)f; return KVDB_OK; }
static int fz_size(void *ctx, kvdb_file *f, uint64_t *out) { (void)ctx; *out = ((fz_file *)f)->size; return KVDB_OK; }
static int fz_truncate(void *ctx, kvdb_file *file, uint64_t size)
{
    fz_file *f = (fz_file *)file;
    (void)ctx;
    if (size > FZ_CAP) return kv_err(KVDB_EFULL, "fz: full");
    if (size > f->size) memset(f->p + f->size, 0, (size_t)(size - f->size));
    f->size = size;
    return KVDB_OK;
}
static int fz_lock(void *ctx, kvdb_file *f, int ex) { (void)ctx; (void)f; (void)ex; return KVDB_OK; }
static int fz_map(void *ctx, kvdb_file *file, uint64_t len, const void **out)
{
    fz_disk *d = (fz_disk *)ctx;
    if (len > FZ_CAP) return KVDB_ENOMEM;
    d->maps++;
    ((fz_file *)file)->maps++;
    *out = ((fz_file *)file)->p;
    return KVDB_OK;
}
static int fz_unmap(void *ctx, kvdb_file *file, const void *p, uint64_t len)
{
    fz_file *f = (fz_file *)file;
    (void)p; (void)len;
    ((fz_disk *)ctx)->maps--;
    f->maps--;
    fz_put(f);
    return KVDB_OK;
}
static int fz_remove(void *ctx, const char *path)
{
    fz_disk *d = (fz_disk *)ctx;
    int n = fz_lookup(d, path);
    if (n < 0) return KVDB_NOTFOUND;
    d->name[n][0] = 0;
    d->f[d->ino[n]].links--;
    fz_put(&d->f[d->ino[n]]);
    return KVDB_OK;
}
static int fz_rename(void *ctx, const char *a, const char *b)
{
    fz_disk *d = (fz_disk *)ctx;
    int na = fz_lookup(d, a), nb = fz_lookup(d, b);
    if (na < 0) return kv_err(KVDB_EIO, "fz: rename of a missing file");
    if (strlen(b) >= FZ_NAME) return KVDB_EIO;
    if (nb >= 0 && nb != na) { /* the old target loses its name */
        d->name[nb][0] = 0;
        d->f[d->ino[nb]].links--;
        fz_put(&d->f[d->ino[nb]]);
    }
    strcpy(d->name[na], b);
    return KVDB_OK;
}
static int fz_sync_dir(void *ctx, const char *path) { (void)ctx; (void)path; return KVDB_OK; }
static int fz_random(void *ctx, void *buf, size_t n)
{
    fz_disk *d = (fz_disk *)ctx;
    unsigned char *p = (unsigned char *)buf;
    while (n--) {
        d->rnd = d->rnd * 6364136223846793005ULL + 1442695040888963407ULL;
        *p++ = (unsigned char)(d->rnd >> 56);
    }
    return KVDB_OK;
}

/* Open "fuzz.db" (the targets' database, f[0] as fz_init names it) on d
 * under KVDB_SYNC_NORMAL, with allocator al (NULL: the default); *db is
 * NULL unless it returns KVDB_OK. */
static int fz_open_db(fz_disk *d, unsigned flags, const kvdb_allocator *al, kvdb **db)
{
    kvdb_options o;
    kvdb_options_init(&o);
    o.flags = flags;
    o.sync = KVDB_SYNC_NORMAL;
    o.vfs = &d->vfs;
    o.alloc = al;
    *db = NULL;
    return kvdb_open("fuzz.db", &o, db);
}

/* map: 0 = reads through the layer only.  The database is f[0], named
 * path, holding size bytes of data (or absent if data is NULL). */
static void fz_init(fz_disk *d, int map, const char *path, const void *data, size_t size)
{
    kvdb_vfs v = { NULL, fz_open, fz_close, fz_read, fz_write, fz_sync, fz_size, fz_truncate, fz_lock,
                   fz_map, fz_unmap, fz_remove, fz_rename, fz_sync_dir, fz_random, NULL };
    static unsigned char *bufs[FZ_NFILES]; /* allocated once for the whole process */
    int i;
    memset(d, 0, sizeof *d);
    for (i = 0; i < FZ_NFILES; i++) {
        if (!bufs[i]) bufs[i] = (unsigned char *)malloc((size_t)FZ_CAP);
        if (!bufs[i]) abort();
        d->f[i].p = bufs[i];
    }
    if (data) {
        snprintf(d->name[0], FZ_NAME, "%s", path);
        d->ino[0] = 0;
        d->f[0].used = 1;
        d->f[0].links = 1;
        if (size) memcpy(d->f[0].p, data, size);
        d->f[0].size = size;
    }
    d->rnd = 1;
    v.ctx = d;
    if (!map) v.map = NULL, v.unmap = NULL;
    d->vfs = v;
}

#define FZ_ASSERT(c) do { if (!(c)) { fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #c); abort(); } } while (0)

#endif
