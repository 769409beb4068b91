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

/* Evidence that log offset x had been synced: the first i in [0, n -
 * LG_SEAL] where buffer b (the log from offset base on) holds an intact
 * COMMIT whose durable field exceeds x; n if there is none.  Every offset is
 * a candidate (after damage, record boundaries are unknown; the checksum
 * binds a record to its offset, so only a COMMIT written there verifies
 * there); memchr skips to the next type byte that says COMMIT, so a run of
 * zeros costs about its read.  Recovery and kvdb_check decide alike. */
static size_t lg_find_evidence(const uint8_t *b, size_t n, uint64_t base, uint64_t seed, uint64_t x)
{
    size_t i;
    for (i = 0; i + LG_SEAL <= n; i++) {
        const uint8_t *q = (const uint8_t *)memchr(b + i + 8, LG_COMMIT, n - LG_SEAL - i + 1);
        if (!q) break;
        q -= 8;
        i = (size_t)(q - b);
        if (q[9] == 0 && kv_ld16(q + 10) == 0 && kv_ld32(q + 12) == LG_COMMIT_LEN && kv_ld64(q + 24) > x &&
            kv_ld64(q) == lg_checksum(seed, base + i, q, LG_SEAL))
            return i;
    }
    return n;
}

static void lg_put_header(uint8_t *p, uint8_t type, uint32_t klen, uint32_t vlen)
{
    p[8] = type;
    p[9] = 0;
    kv_st16(p + 10, (uint16_t)klen);
    kv_st32(p + 12, vlen);
}

