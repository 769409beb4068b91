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
 * recovery makes, lg_find_evidence)?  *found = 1 and *where if so. */
static int chk_evidence(chk *c, uint64_t x, int *found, uint64_t *where)
{
    uint64_t o = x + 1;
    *found = 0;
    while (o + LG_SEAL <= c->size) {
        size_t win = c->size - o < CHK_WIN ? (size_t)(c->size - o) : CHK_WIN, i;
        const uint8_t *p;
        int rc = chk_at(c, o, win, &p);
        if (rc) return rc;
        i = lg_find_evidence(p, win, o, c->seed, x);
        if (i < win) {
            *found = 1;
            *where = o + i;
            return KVDB_OK;
        }
        o += win - LG_SEAL + 1;
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
        kv_errkeep msg;
        kv_err_keep(&msg);
        kvdb_close(db);
        kv_err_put(&msg);
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
    char *name = sc_path(&c->al, c->path, ".idx");
    kvdb_file *f = NULL;
    uint8_t b[SC_HDR];
    uint64_t size;
    if (!name) return kv_err(KVDB_ENOMEM, "out of memory");
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
    kv_errkeep msg;
    kv_err_keep(&msg);
    if (c->map) c->vfs->unmap(c->vfs->ctx, c->f, c->map, c->size);
    if (c->f) c->vfs->close(c->vfs->ctx, c->f);
    kv_free(&c->al, c->win.p);
    kv_err_put(&msg);
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
        kv_errkeep msg;
        kv_err_keep(&msg);
        kvdb_close(c.dst);
        kv_err_put(&msg);
    }
    if (rc && created) {
        kv_errkeep msg;
        char *idx = sc_path(&c.al, out_path, ".idx");
        kv_err_keep(&msg);
        c.vfs->remove(c.vfs->ctx, out_path);
        if (idx) {
            c.vfs->remove(c.vfs->ctx, idx);
            kv_free(&c.al, idx);
        }
        kv_err_put(&msg);
    }
    chk_close(&c);
    return rc;
}

