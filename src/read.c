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
 * it discards (a cost proportional to that value's size, for nothing; and
 * a key whose value is damaged can still be overwritten or deleted).
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

