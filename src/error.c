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

const char *kvdb_version(void) { return KVDB_VERSION_STRING; }

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

/* The message of the error in flight, kept across a cleanup that may set
 * its own: kv_err_keep before it, kv_err_put after (320 bytes of stack). */
typedef struct kv_errkeep {
    char msg[sizeof kv_errbuf];
} kv_errkeep;
static void kv_err_keep(kv_errkeep *k) { memcpy(k->msg, kv_errbuf, sizeof k->msg); }
static void kv_err_put(const kv_errkeep *k) { memcpy(kv_errbuf, k->msg, sizeof k->msg); }

/* Overflow-checked size arithmetic (stb style). */
static int kv_add_ovf(size_t a, size_t b, size_t *out)
{
    if (a > (size_t)-1 - b) return 1;
    *out = a + b;
    return 0;
}

