/*
 * fuzz_ops.c -- libFuzzer target: arbitrary sequences of API operations
 * against a reference model.
 *
 * Each input byte pair (op, arg) is one operation on one database in an
 * in-memory file layer: auto-commit put/del/get, a write transaction
 * (begin, put, del, get of its own writes, commit, abort), a read snapshot
 * that must keep seeing the state it began with, kvdb_sync, close and
 * reopen (in another sync mode, with or without mmap), and calls that must
 * be refused (EBUSY for the writer thread's own auto-commit, close with
 * open transactions), kvdb_checkpoint (the sidecar, used by the next open),
 * and ordered iterators (forward and reverse, in read snapshots and over a
 * write transaction's own writes).  Sixteen keys (some with NUL bytes, one long),
 * values from the input.  Every return code and every byte read is
 * compared with the model.
 *
 * EXTEND: range bounds and kvdb_iter_seek.
 */
#include "../../kvdb.c"
#include "fuzzvfs.h"

#define FX_NK 16
#define FX_MAXV 300

typedef struct {
    int present[FX_NK];
    size_t len[FX_NK];
    unsigned char val[FX_NK][FX_MAXV];
} fx_model;

static size_t fx_key(int i, unsigned char *k)
{
    size_t n = (size_t)sprintf((char *)k, "k%d", i);
    if (i % 4 == 1) { k[n++] = 0; k[n++] = 'z'; }
    if (i == 15) { memset(k + n, 'L', 200); n += 200; }
    return n;
}

typedef struct {
    const uint8_t *p;
    size_t n, i;
} fx_in;

static unsigned fx_byte(fx_in *in) { return in->i < in->n ? in->p[in->i++] : 0; }

/* a value: length from the input, bytes from the input (or a pattern) */
static size_t fx_value(fx_in *in, unsigned char *v)
{
    unsigned b = fx_byte(in);
    size_t len = b < 32 ? 0 : b < 200 ? (size_t)(b % 24) : (size_t)(b * 7 % FX_MAXV), j;
    for (j = 0; j < len; j++) v[j] = (unsigned char)(j < 8 && in->i + j < in->n ? in->p[in->i + j] : j * 31 + b);
    return len;
}

static void fx_check_get(kvdb *db, const fx_model *m, int i)
{
    unsigned char k[256], buf[FX_MAXV + 1];
    size_t kl = fx_key(i, k), vl = 999;
    int rc = kvdb_get(db, k, kl, buf, sizeof buf, &vl);
    if (m->present[i]) {
        FZ_ASSERT(rc == KVDB_OK);
        FZ_ASSERT(vl == m->len[i]);
        FZ_ASSERT(memcmp(buf, m->val[i], vl) == 0);
    } else {
        FZ_ASSERT(rc == KVDB_NOTFOUND);
    }
}

static void fx_check_all(kvdb *db, const fx_model *m)
{
    int i;
    uint64_t n = 0;
    struct kvdb_stat st;
    for (i = 0; i < FX_NK; i++) {
        fx_check_get(db, m, i);
        n += (uint64_t)m->present[i];
    }
    FZ_ASSERT(kvdb_stat(db, &st) == KVDB_OK);
    FZ_ASSERT(st.keys == n);
}

static void fx_check_txn(kvdb_txn *t, const fx_model *m, int i)
{
    unsigned char k[256];
    size_t kl = fx_key(i, k), vl = 0;
    const void *v = NULL;
    int rc = kvdb_txn_get(t, k, kl, &v, &vl);
    if (m->present[i]) {
        FZ_ASSERT(rc == KVDB_OK);
        FZ_ASSERT(vl == m->len[i]);
        FZ_ASSERT(vl == 0 || memcmp(v, m->val[i], vl) == 0);
    } else {
        FZ_ASSERT(rc == KVDB_NOTFOUND);
    }
}

static int fx_keycmp(const unsigned char *a, size_t al, const unsigned char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : al < bl ? -1 : al > bl;
}

/* an iterator over all of t sees exactly the model's keys, in order */
static void fx_check_iter(kvdb_txn *t, const fx_model *m, int reverse)
{
    unsigned char keys[FX_NK][256];
    size_t kls[FX_NK];
    int order[FX_NK], n = 0, i, j;
    kvdb_iter *it;
    const void *k, *v;
    size_t kl, vl;
    for (i = 0; i < FX_NK; i++) {
        if (!m->present[i]) continue;
        kls[i] = fx_key(i, keys[i]);
        for (j = n; j > 0 && fx_keycmp(keys[order[j - 1]], kls[order[j - 1]], keys[i], kls[i]) > 0; j--) order[j] = order[j - 1];
        order[j] = i;
        n++;
    }
    FZ_ASSERT(kvdb_iter_prefix(t, NULL, 0, reverse ? KVDB_ITER_REVERSE : 0, &it) == KVDB_OK);
    for (j = 0; j < n; j++) {
        int want = order[reverse ? n - 1 - j : j];
        { int irc_ = kvdb_iter_next(it, &k, &kl, &v, &vl);
          if (irc_ != KVDB_OK) fprintf(stderr, "iter step %d of %d (reverse %d): rc %d [%s]\n", j, n, reverse, irc_, kvdb_errmsg());
          FZ_ASSERT(irc_ == KVDB_OK); }
        FZ_ASSERT(kl == kls[want] && memcmp(k, keys[want], kl) == 0);
        FZ_ASSERT(vl == m->len[want] && (vl == 0 || memcmp(v, m->val[want], vl) == 0));
    }
    FZ_ASSERT(kvdb_iter_next(it, &k, &kl, &v, &vl) == KVDB_DONE);
    kvdb_iter_close(it);
}

static int fx_open(fz_disk *d, int sync, int create, kvdb **db)
{
    kvdb_options o;
    kvdb_options_init(&o);
    o.flags = create ? KVDB_CREATE : 0;
    o.sync = sync;
    o.sync_bytes = 700;
    o.vfs = &d->vfs;
    return kvdb_open("ops.db", &o, db);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fx_model m, w, snap;   /* committed, the write txn's view, the snapshot's */
    fz_disk d;
    kvdb *db = NULL;
    kvdb_txn *wt = NULL, *rt = NULL;
    fx_in in;
    unsigned char k[256], v[FX_MAXV];
    int steps = 0;
    in.p = data;
    in.n = size;
    in.i = 0;
    memset(&m, 0, sizeof m);
    fz_init(&d, 1, "ops.db", NULL, 0);
    FZ_ASSERT(fx_open(&d, KVDB_SYNC_FULL, 1, &db) == KVDB_OK);
    while (in.i < in.n && steps++ < 2000) {
        unsigned op = fx_byte(&in) % 16;
        int i = (int)(fx_byte(&in) % FX_NK), rc;
        size_t kl = fx_key(i, k), vl;
        switch (op) {
        case 0: case 1: /* auto-commit put */
            vl = fx_value(&in, v);
            rc = kvdb_put(db, k, kl, v, vl);
            if (wt) { FZ_ASSERT(rc == KVDB_EBUSY); break; }
            FZ_ASSERT(rc == KVDB_OK);
            m.present[i] = 1;
            m.len[i] = vl;
            memcpy(m.val[i], v, vl);
            break;
        case 2: /* auto-commit delete */
            rc = kvdb_del(db, k, kl);
            if (wt) { FZ_ASSERT(rc == KVDB_EBUSY); break; }
            FZ_ASSERT(rc == (m.present[i] ? KVDB_OK : KVDB_NOTFOUND));
            m.present[i] = 0;
            break;
        case 3: /* get: the committed state, also while this thread writes */
            fx_check_get(db, &m, i);
            break;
        case 4: /* begin a write transaction */
            if (wt) {
                kvdb_txn *t2;
                FZ_ASSERT(kvdb_begin(db, 0, &t2) == KVDB_EBUSY);
                break;
            }
            FZ_ASSERT(kvdb_begin(db, 0, &wt) == KVDB_OK);
            w = m;
            break;
        case 5: case 6: /* txn put */
            if (!wt) break;
            vl = fx_value(&in, v);
            FZ_ASSERT(kvdb_txn_put(wt, k, kl, v, vl) == KVDB_OK);
            w.present[i] = 1;
            w.len[i] = vl;
            memcpy(w.val[i], v, vl);
            break;
        case 7: /* txn delete */
            if (!wt) break;
            FZ_ASSERT(kvdb_txn_del(wt, k, kl) == (w.present[i] ? KVDB_OK : KVDB_NOTFOUND));
            w.present[i] = 0;
            break;
        case 8: /* txn get: its own writes; an iterator over them */
            if (wt) {
                fx_check_txn(wt, &w, i);
                if (i < 4) fx_check_iter(wt, &w, i & 1);
            }
            break;
        case 9: /* commit */
            if (!wt) break;
            FZ_ASSERT(kvdb_commit(wt) == KVDB_OK);
            wt = NULL;
            m = w;
            break;
        case 10: /* abort */
            if (!wt) break;
            kvdb_abort(wt);
            wt = NULL;
            break;
        case 11: /* a read snapshot begins or is checked */
            if (!rt) {
                FZ_ASSERT(kvdb_begin(db, KVDB_TXN_RDONLY, &rt) == KVDB_OK);
                snap = m;
            } else {
                fx_check_txn(rt, &snap, i);
                if (i < 3) fx_check_iter(rt, &snap, i & 1);
                FZ_ASSERT(kvdb_txn_put(rt, k, kl, "x", 1) == KVDB_EREADONLY);
            }
            break;
        case 12: /* the snapshot ends */
            if (rt) {
                int j;
                for (j = 0; j < FX_NK; j++) fx_check_txn(rt, &snap, j);
                FZ_ASSERT(kvdb_commit(rt) == KVDB_OK);
                rt = NULL;
            }
            break;
        case 13: /* kvdb_sync, or a checkpoint (the sidecar) */
            if (i & 1) FZ_ASSERT(kvdb_checkpoint(db) == KVDB_OK);
            else FZ_ASSERT(kvdb_sync(db) == KVDB_OK);
            break;
        case 14: { /* close and reopen, perhaps in another mode */
            int sync = i % 3, map = (i / 3) % 2;
            if (wt || rt) {
                FZ_ASSERT(kvdb_close(db) == KVDB_EBUSY);
                break;
            }
            FZ_ASSERT(kvdb_close(db) == KVDB_OK);
            FZ_ASSERT(d.handles == 0 && d.maps == 0);
            d.vfs.map = map ? fz_map : NULL;
            d.vfs.unmap = map ? fz_unmap : NULL;
            db = NULL;
            FZ_ASSERT(fx_open(&d, sync, 0, &db) == KVDB_OK);
            fx_check_all(db, &m);
            break;
        }
        default: { /* check everything, also in key order */
            kvdb_txn *t;
            fx_check_all(db, &m);
            FZ_ASSERT(kvdb_begin(db, KVDB_TXN_RDONLY, &t) == KVDB_OK);
            fx_check_iter(t, &m, i & 1);
            kvdb_abort(t);
            break;
        }
        }
    }
    if (wt) kvdb_abort(wt);
    if (rt) kvdb_abort(rt);
    fx_check_all(db, &m);
    FZ_ASSERT(kvdb_close(db) == KVDB_OK);
    FZ_ASSERT(d.handles == 0 && d.maps == 0);
    /* and everything is in the file */
    FZ_ASSERT(fx_open(&d, KVDB_SYNC_FULL, 0, &db) == KVDB_OK);
    fx_check_all(db, &m);
    FZ_ASSERT(kvdb_close(db) == KVDB_OK);
    return 0;
}
