/*
 * fuzz_open.c -- libFuzzer target: arbitrary bytes as a database file.
 *
 * The bytes become the file of an in-memory file layer; it is opened
 * writable with mmap (a torn tail is cut) and read-only through pread, and
 * every key of the file is read back.  Besides "no crash, no leak, no
 * undefined behaviour", an independent parse of the documented format
 * predicts what an open that succeeds must show: the transactions before the
 * first damaged record, applied in order.  A second open after the first
 * must find the same (recovery is idempotent) -- that one loads the sidecar
 * the first close wrote.
 *
 * EXTEND: arbitrary bytes as the sidecar too.
 */
#include "../../kvdb.c"
#include "fuzzvfs.h"

/* ---- the documented format, parsed independently ---- */
static uint64_t fo_ld64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint32_t fo_ld32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#define FO_MAXK 256
typedef struct {
    uint64_t koff;   /* offset of the key bytes in the file */
    uint32_t klen;
    int present;
    uint64_t voff;
    uint32_t vlen;
} fo_key;

typedef struct {
    fo_key k[FO_MAXK];
    int n, overflow;
    uint64_t good;          /* end of the last whole transaction */
    uint64_t nlive;
} fo_state;

static int fo_find(fo_state *s, const unsigned char *f, uint64_t koff, uint32_t klen)
{
    int i;
    for (i = 0; i < s->n; i++)
        if (s->k[i].klen == klen && memcmp(f + s->k[i].koff, f + koff, klen) == 0) return i;
    return -1;
}

/* the committed state of f[0..len) per the format description */
static void fo_parse(const unsigned char *f, uint64_t len, fo_state *s)
{
    uint64_t off = 64, seed = fo_ld64(f + 16), last_seq = 0, pend[4096];
    uint32_t npend = 0, j;
    int i;
    memset(s, 0, sizeof *s);
    s->good = 64;
    while (off + 16 <= len) {
        const unsigned char *p = f + off;
        int type = p[8];
        uint32_t klen = (uint32_t)p[10] | (uint32_t)p[11] << 8, vlen = fo_ld32(p + 12);
        uint64_t size = 16 + (uint64_t)klen + vlen;
        if (p[9] != 0) break;
        if (type == 1 && (klen == 0 || vlen > (1u << 30))) break;
        if (type == 2 && (klen == 0 || vlen != 0)) break;
        if (type == 3 && (klen != 0 || vlen != 24)) break;
        if (type < 1 || type > 3) break;
        if (size > len - off) break;
        if (XXH3_64bits_withSeed(p + 8, (size_t)size - 8, seed ^ off) != fo_ld64(p)) break;
        if (type != 3) {
            if (npend == 4096) { s->overflow = 1; return; }
            pend[npend++] = off;
        } else {
            uint64_t seq = fo_ld64(p + 16);
            if (fo_ld32(p + 32) != npend || seq <= last_seq || fo_ld32(p + 36) != 0) break;
            for (j = 0; j < npend; j++) {
                const unsigned char *q = f + pend[j];
                uint32_t kl = (uint32_t)q[10] | (uint32_t)q[11] << 8;
                int k = fo_find(s, f, pend[j] + 16, kl);
                if (k < 0) {
                    if (s->n == FO_MAXK) { s->overflow = 1; return; }
                    k = s->n++;
                    s->k[k].koff = pend[j] + 16;
                    s->k[k].klen = kl;
                }
                if (q[8] == 1) {
                    s->k[k].present = 1;
                    s->k[k].voff = pend[j] + 16 + kl;
                    s->k[k].vlen = fo_ld32(q + 12);
                } else {
                    s->k[k].present = 0;
                }
            }
            npend = 0;
            last_seq = seq;
            s->good = off + size;
        }
        off += size;
    }
    for (i = 0; i < s->n; i++) s->nlive += (uint64_t)s->k[i].present;
}

static void fo_check(kvdb *db, const unsigned char *orig, const fo_state *s)
{
    int i;
    struct kvdb_stat st;
    static unsigned char buf[1 << 16];
    FZ_ASSERT(kvdb_stat(db, &st) == KVDB_OK);
    if (!s->overflow) FZ_ASSERT(st.keys == s->nlive);
    for (i = 0; i < s->n; i++) {
        size_t vl = 0;
        int rc = kvdb_get(db, orig + s->k[i].koff, s->k[i].klen, buf, sizeof buf, &vl);
        if (s->overflow) continue;
        if (s->k[i].present) {
            FZ_ASSERT(rc == KVDB_OK);
            FZ_ASSERT(vl == s->k[i].vlen);
            FZ_ASSERT(memcmp(buf, orig + s->k[i].voff, vl < sizeof buf ? vl : sizeof buf) == 0);
        } else {
            FZ_ASSERT(rc == KVDB_NOTFOUND);
        }
    }
    /* a read transaction sees the same; an iterator reads every key */
    {
        kvdb_txn *t;
        kvdb_iter *it;
        const void *k, *v;
        size_t kl, vl;
        uint64_t n = 0;
        FZ_ASSERT(kvdb_begin(db, KVDB_TXN_RDONLY, &t) == KVDB_OK);
        FZ_ASSERT(kvdb_iter_prefix(t, NULL, 0, 0, &it) == KVDB_OK);
        while (kvdb_iter_next(it, &k, &kl, &v, &vl) == KVDB_OK) n++;
        kvdb_iter_close(it);
        FZ_ASSERT(s->overflow || n == s->nlive);
        for (i = 0; i < s->n && i < 16; i++) {
            int rc = kvdb_txn_get(t, orig + s->k[i].koff, s->k[i].klen, &v, &vl);
            if (!s->overflow) FZ_ASSERT(rc == (s->k[i].present ? KVDB_OK : KVDB_NOTFOUND));
        }
        kvdb_abort(t);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fo_state s;
    fz_disk d;
    kvdb *db;
    int pass, rc;
    int hdr_ok;
    if (size > FZ_CAP / 2) return 0;
    hdr_ok = size >= 64 && memcmp(data, "\x89KVDB\r\n\x1a", 8) == 0 && fo_ld32(data + 8) == 1 &&
             fo_ld32(data + 12) == 64 && XXH3_64bits(data, 56) == fo_ld64(data + 56);
    if (hdr_ok) fo_parse(data, size, &s);
    for (pass = 0; pass < 2; pass++) {
        unsigned flags = pass == 0 ? 0 : KVDB_RDONLY;
        fz_init(&d, pass == 0, "fuzz.db", data, size);
        rc = fz_open_db(&d, flags, NULL, &db);
        FZ_ASSERT(rc >= KVDB_ENOTDB && rc <= KVDB_OK);
        FZ_ASSERT((rc == KVDB_OK) == (db != NULL));
        if (!hdr_ok && size >= 64) FZ_ASSERT(rc != KVDB_OK);
        if (rc != KVDB_OK) {
            /* refused: nothing changed */
            FZ_ASSERT(d.f[0].size == size && memcmp(d.f[0].p, data, size) == 0);
            FZ_ASSERT(rc == KVDB_ENOTDB || rc == KVDB_ECORRUPT || rc == KVDB_EVERSION);
            FZ_ASSERT(d.handles == 0 && d.maps == 0);
            continue;
        }
        if (hdr_ok) fo_check(db, data, &s);
        FZ_ASSERT(kvdb_close(db) == KVDB_OK);
        if (hdr_ok && pass == 0) {
            /* the tail was cut to the last whole transaction, and close sealed
             * it unless it was sealed (a seal: an empty COMMIT whose durable
             * field is its own offset); a second open agrees */
            FZ_ASSERT(d.f[0].size == s.good || d.f[0].size == s.good + 40);
            FZ_ASSERT(memcmp(d.f[0].p, data, (size_t)s.good) == 0);
            if (d.f[0].size == s.good + 40) {
                const unsigned char *q = d.f[0].p + s.good;
                FZ_ASSERT(q[8] == 3 && fo_ld32(q + 12) == 24 && fo_ld64(q + 24) == s.good && fo_ld32(q + 32) == 0);
            }
            rc = fz_open_db(&d, 0, NULL, &db);
            FZ_ASSERT(rc == KVDB_OK);
            fo_check(db, data, &s);
            /* and it still takes writes */
            FZ_ASSERT(kvdb_put(db, "fuzz-new-key", 12, "v", 1) == KVDB_OK);
            FZ_ASSERT(kvdb_close(db) == KVDB_OK);
        }
        FZ_ASSERT(d.handles == 0 && d.maps == 0);
    }
    return 0;
}
