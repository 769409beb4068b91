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
 *
 * Offsets are 64-bit end to end: off_t must be (config.c asks for
 * _FILE_OFFSET_BITS 64; a host that ignores it fails to compile here), and
 * an offset the file system cannot take is KVDB_EINVAL, never cut short.
 * ====================================================================== */
typedef char px_off_t_is_64_bit[sizeof(off_t) >= 8 ? 1 : -1];

/* off as an off_t, or 0 if it does not fit (it always does below 2^63) */
static int px_off(uint64_t off, off_t *out)
{
    if (off > (uint64_t)INT64_MAX) return 0;
    *out = (off_t)off;
    return 1;
}
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
    off_t o;
    (void)ctx;
    while (n > 0) {
        ssize_t r;
        if (!px_off(off, &o)) return kv_err(KVDB_EINVAL, "%s: read at %llu: offset too large", f->path, (unsigned long long)off);
        r = pread(f->fd, p, n, o);
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
    off_t o;
    kv_lock(&f->mu_size);
    while (n > 0) {
        ssize_t r;
        if (!px_off(off, &o)) {
            rc = kv_err(KVDB_EINVAL, "%s: write at %llu: offset too large", f->path, (unsigned long long)off);
            break;
        }
        r = pwrite(f->fd, p, n, o);
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
    off_t o;
    int r;
    (void)ctx;
    if (!px_off(size, &o)) return kv_err(KVDB_EINVAL, "%s: truncate to %llu: too large", f->path, (unsigned long long)size);
    kv_lock(&f->mu_size);
    do r = ftruncate(f->fd, o);
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
 * change to journal (on ext4 an append's sync costs more than twice a
 * sync of a write inside the file).  The file is extended sparse
 * (ftruncate), not allocated (posix_fallocate): the syncs cost the same,
 * and an allocation holds the inode's lock, which the writer's next
 * write(2) would wait for.  Disk full then shows at the write, as
 * without. */
static int px_reserve(void *ctx, kvdb_file *file, uint64_t size)
{
    px_file *f = (px_file *)file;
    struct stat st;
    off_t o;
    int r, e = 0;
    (void)ctx;
    if (!px_off(size, &o)) return kv_err(KVDB_EINVAL, "%s: reserve %llu bytes: too large", f->path, (unsigned long long)size);
    kv_lock(&f->mu_size);
    if (fstat(f->fd, &st) != 0) {
        e = errno;
    } else if ((uint64_t)st.st_size < size) {
        do r = ftruncate(f->fd, o);
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

