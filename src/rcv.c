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

/* Is there an intact COMMIT after x that says x had been synced
 * (lg_find_evidence)?  1 if so.  Reads 1 MiB windows that overlap by a
 * COMMIT record less one byte. */
static int rcv_evidence(kvdb *db, const kv_rd *r, uint64_t x, uint64_t size, kv_buf *buf)
{
    uint64_t p = x + 1;
    while (p + LG_SEAL <= size) {
        size_t win = size - p < ((uint64_t)1 << 20) ? (size_t)(size - p) : ((size_t)1 << 20);
        const uint8_t *b;
        int rc = rcv_bytes(db, r, p, win, buf, &b);
        if (rc) return rc;
        if (lg_find_evidence(b, win, p, db->seed, x) < win) return 1;
        p += win - LG_SEAL + 1;
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

