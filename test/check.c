/*
 * check.c -- kvdb_check and kvdb_repair: a clean database passes (with and
 * without its sidecar, with a stale one); a torn tail is a note, not a
 * problem; damage is reported at its offset, also damage before the
 * sidecar's checkpoint; indexes that disagree with the log are caught;
 * repair saves every intact transaction, also those after the damage, drops
 * incomplete ones whole, never touches the source, and its output passes.
 */
#include "../kvdb.c"
#include "testutil.h"

/* ---- findings collected from the report callback ---- */
#define MAXF 256
static struct finding { int kind; uint64_t off; char what[640]; } fnd[MAXF];
static int nfnd;
static uint64_t prog_last, prog_total, prog_calls;
static int prog_backwards;

static void on_report(void *ctx, int kind, uint64_t off, const char *what)
{
    (void)ctx;
    if (nfnd < MAXF) {
        fnd[nfnd].kind = kind;
        fnd[nfnd].off = off;
        snprintf(fnd[nfnd].what, sizeof fnd[nfnd].what, "%s", what);
        nfnd++;
    }
}

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)ctx;
    if (done > total) prog_backwards = 1;
    prog_last = done;
    prog_total = total;
    prog_calls++;
}

static kvdb_check_opts copts = { NULL, NULL, on_report, on_progress, NULL, 0 };

static void reset(void)
{
    nfnd = 0;
    prog_last = prog_total = prog_calls = 0;
    prog_backwards = 0;
}

/* a finding of kind at off whose text contains needle (NULL: any) */
static int found(int kind, uint64_t off, const char *needle)
{
    int i;
    for (i = 0; i < nfnd; i++)
        if (fnd[i].kind == kind && (off == 0 || fnd[i].off == off) && (!needle || strstr(fnd[i].what, needle)))
            return 1;
    return 0;
}

static void dump_findings(void)
{
    int i;
    for (i = 0; i < nfnd; i++)
        fprintf(stderr, "  [%s] %llu: %s\n", fnd[i].kind ? "note" : "PROBLEM", (unsigned long long)fnd[i].off,
                fnd[i].what);
}

/* ---- files ---- */
static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *b;
    long sz;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = (uint8_t *)malloc((size_t)sz + 1);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) { free(b); b = NULL; }
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static void spit(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (fwrite(b, 1, n, f) != n) perror("fwrite");
    fclose(f);
}

/* Offsets of the records of the log at path, in order (type in *types). */
static size_t log_records(const char *path, uint64_t *offs, uint8_t *types, size_t max)
{
    size_t n, cnt = 0;
    uint8_t *b = slurp(path, &n);
    uint64_t off = LG_HDR;
    lg_rec r;
    if (!b) return 0;
    while (off < n && cnt < max && lg_parse(b + off, off, n - off, &r) == KVDB_OK) {
        offs[cnt] = off;
        types[cnt++] = r.type;
        off += r.size;
    }
    free(b);
    return cnt;
}

static kvdb *open_db(const char *path, int sync)
{
    kvdb_options o;
    kvdb *db = NULL;
    kvdb_options_init(&o);
    o.flags = KVDB_CREATE;
    o.sync = sync;
    if (kvdb_open(path, &o, &db) != KVDB_OK) return NULL;
    return db;
}

/* txns transactions; transaction i writes a<i>, b<i>, c<i> (values of
 * vlen bytes), overwrites a<i-1>, and deletes c<i-2>. */
static int fill(kvdb *db, int from, int txns, size_t vlen)
{
    uint8_t *v = (uint8_t *)malloc(vlen + 1);
    int i;
    if (!v) return -1;
    for (i = from; i < from + txns; i++) {
        kvdb_txn *t;
        char k[32];
        size_t j;
        for (j = 0; j < vlen; j++) v[j] = (uint8_t)(i * 7 + j);
        if (kvdb_begin(db, 0, &t)) { free(v); return -1; }
        snprintf(k, sizeof k, "a%d", i);
        kvdb_txn_put(t, k, strlen(k), v, vlen);
        snprintf(k, sizeof k, "b%d", i);
        kvdb_txn_put(t, k, strlen(k), v, vlen / 2);
        snprintf(k, sizeof k, "c%d", i);
        kvdb_txn_put(t, k, strlen(k), "c", 1);
        if (i > from) {
            snprintf(k, sizeof k, "a%d", i - 1);
            kvdb_txn_put(t, k, strlen(k), "over", 4);
        }
        if (i > from + 1) {
            snprintf(k, sizeof k, "c%d", i - 2);
            kvdb_txn_del(t, k, strlen(k));
        }
        if (kvdb_commit(t)) { free(v); return -1; }
    }
    free(v);
    return 0;
}

/* durable: end with a sync and one more commit, whose durable field then
 * covers everything before it -- damage there is corruption, not a torn
 * tail (SYNC_NORMAL commits before a sync claim nothing) */
static void make_db(const char *path, int txns, size_t vlen, int durable)
{
    kvdb *db;
    unlink(path);
    db = open_db(path, KVDB_SYNC_NORMAL);
    if (!db) return;
    fill(db, 0, txns, vlen);
    if (durable) {
        kvdb_sync(db);
        kvdb_put(db, "end", 3, "", 0);
    }
    kvdb_close(db);
}

/* ---- tests ---- */

static void check_clean(void)
{
    char p[600];
    snprintf(p, sizeof p, "%s", tu_path("clean.db"));
    kvdb_check_stat st;
    struct kvdb_stat ks;
    kvdb *db;
    make_db(p, 200, 40, 0);
    reset();
    CHECK_OK(kvdb_check(p, &copts, &st));
    CHECK(st.problems == 0 && st.index_checked == 1 && st.txns == 200 && st.torn_bytes == 0);
    if (sc_layout()) CHECK(found(KVDB_CHECK_NOTE, 0, "sidecar"));  /* the sidecar loaded and was checked */
    CHECK(st.bytes_verified == st.file_bytes && st.lost_bytes == 0);
    CHECK(prog_calls > 0 && !prog_backwards && prog_last == prog_total);
    db = open_db(p, KVDB_SYNC_NORMAL);
    REQUIRE(db != NULL);
    CHECK_OK(kvdb_stat(db, &ks));
    CHECK(st.keys == ks.keys && ks.keys == 402);
    kvdb_close(db);
    /* without the sidecar: the whole log */
    unlink(tu_path("clean.db.idx"));
    reset();
    CHECK_OK(kvdb_check(p, &copts, &st));
    CHECK(st.problems == 0 && st.index_checked == 1 && !found(KVDB_CHECK_NOTE, 0, "sidecar"));
    /* no callbacks at all */
    CHECK_OK(kvdb_check(p, NULL, NULL));
    if (tu_cur_failed) dump_findings();
}

/* A sidecar covering part of the log: open replays the rest. */
static void check_stale_sidecar(void)
{
    char p[600];
    TU_SKIP_WITHOUT_SIDECAR();
    snprintf(p, sizeof p, "%s", tu_path("stale.db"));
    char idx[700], keep[700];
    kvdb_check_stat st;
    size_t n;
    uint8_t *b;
    kvdb *db;
    make_db(p, 50, 20, 0);
    snprintf(idx, sizeof idx, "%s.idx", p);
    snprintf(keep, sizeof keep, "%s.keep", p);
    b = slurp(idx, &n);
    REQUIRE(b != NULL);
    spit(keep, b, n);
    db = open_db(p, KVDB_SYNC_NORMAL);
    REQUIRE(db != NULL);
    fill(db, 50, 30, 20);
    kvdb_close(db);
    spit(idx, b, n); /* back to the older sidecar */
    free(b);
    reset();
    CHECK_OK(kvdb_check(p, &copts, &st));
    CHECK(st.problems == 0 && st.index_checked && st.txns == 80 && found(KVDB_CHECK_NOTE, 0, "sidecar"));
    if (tu_cur_failed) dump_findings();
}

static void check_torn_tail(void)
{
    char p[600];
    snprintf(p, sizeof p, "%s", tu_path("torn.db"));
    kvdb_check_stat st;
    uint8_t junk[30];
    size_t n, i;
    uint8_t *b;
    FILE *f;
    make_db(p, 20, 10, 0);
    b = slurp(p, &n);
    REQUIRE(b != NULL);
    free(b);
    /* half a record header that looks like a PUT */
    memset(junk, 0, sizeof junk);
    for (i = 0; i < 8; i++) junk[i] = (uint8_t)(i * 37);
    junk[8] = LG_PUT;
    junk[10] = 3;
    junk[12] = 200;
    f = fopen(p, "ab");
    REQUIRE(f != NULL);
    fwrite(junk, 1, sizeof junk, f);
    fclose(f);
    reset();
    CHECK_OK(kvdb_check(p, &copts, &st));
    CHECK(st.problems == 0 && st.torn_bytes == sizeof junk && st.index_checked);
    CHECK(found(KVDB_CHECK_NOTE, n, "torn tail"));
    /* repair drops it and says so in a note */
    unlink(tu_path("torn.out"));
    reset();
    CHECK_OK(kvdb_repair(p, tu_path("torn.out"), &copts, &st));
    CHECK(st.problems == 0 && st.salvaged_txns == 20 && st.lost_bytes == sizeof junk);
    CHECK_OK(kvdb_check(tu_path("torn.out"), NULL, &st));
    if (tu_cur_failed) dump_findings();
}

/* Damage in the middle, before the sidecar's checkpoint (open with the
 * sidecar does not see it; check does), found at its offset; repair saves
 * the rest, including every transaction after it. */
static void check_damage_middle(void)
{
    char p[600], o[600];
    snprintf(p, sizeof p, "%s", tu_path("mid.db"));
    snprintf(o, sizeof o, "%s", tu_path("mid.out"));
    static uint64_t offs[4096];
    static uint8_t types[4096];
    kvdb_check_stat st;
    size_t nrec, n, n2, i, victim = 0, commits = 0;
    uint8_t *b, *b2;
    kvdb *db;
    make_db(p, 100, 30, 1);
    nrec = log_records(p, offs, types, 4096);
    /* the b<40> record: the second record of the 41st transaction */
    for (i = 0; i < nrec; i++) {
        if (types[i] == LG_COMMIT && ++commits == 40) { victim = i + 2; break; }
    }
    REQUIRE(victim && types[victim] == LG_PUT);
    b = slurp(p, &n);
    REQUIRE(b != NULL);
    b[offs[victim] + LG_REC + 3] ^= 0x40; /* in the key "b40": now "b4p"... a different key, bad checksum */
    spit(p, b, n);
    reset();
    CHECK_RC(kvdb_check(p, &copts, &st), KVDB_ECORRUPT);
    CHECK(found(KVDB_CHECK_PROBLEM, offs[victim], "fails its checksum"));
    CHECK(found(KVDB_CHECK_PROBLEM, offs[victim - 1], "incomplete transaction"));
    CHECK(st.problems >= 1 && st.lost_txns == 1 && !st.index_checked && st.txns == 100);
    CHECK(strstr(kvdb_errmsg(), "mid.db") != NULL);
    /* repair */
    unlink(o);
    reset();
    CHECK_OK(kvdb_repair(p, o, &copts, &st));
    CHECK(st.salvaged_txns == 100 && st.lost_txns == 1 && st.problems >= 1);
    b2 = slurp(p, &n2);
    CHECK(b2 && n2 == n && memcmp(b, b2, n) == 0); /* the source is untouched */
    free(b);
    free(b2);
    CHECK_OK(kvdb_check(o, NULL, &st));
    db = open_db(o, KVDB_SYNC_NORMAL);
    REQUIRE(db != NULL);
    {
        char v[64];
        size_t vl;
        /* transaction 40 is gone whole: b40 absent (a40 is rewritten by
         * transaction 41), a39 keeps transaction 39's value, c38 is not
         * deleted */
        CHECK_RC(kvdb_get(db, "b40", 3, v, sizeof v, &vl), KVDB_NOTFOUND);
        CHECK_OK(kvdb_get(db, "a40", 3, v, sizeof v, &vl));
        CHECK(vl == 4);
        CHECK_OK(kvdb_get(db, "a39", 3, v, sizeof v, &vl));
        CHECK(vl == 30);
        CHECK_OK(kvdb_get(db, "c38", 3, v, sizeof v, &vl));
        /* after the damage */
        CHECK_OK(kvdb_get(db, "b99", 3, v, sizeof v, &vl));
        CHECK(vl == 15);
        CHECK_OK(kvdb_get(db, "a98", 3, v, sizeof v, &vl));
        CHECK(vl == 4 && memcmp(v, "over", 4) == 0);
        CHECK_RC(kvdb_get(db, "c97", 3, v, sizeof v, &vl), KVDB_NOTFOUND);
    }
    kvdb_close(db);
    /* never overwrites */
    CHECK_RC(kvdb_repair(p, o, &copts, &st), KVDB_EINVAL);
    CHECK_OK(kvdb_check(o, NULL, &st));
    if (tu_cur_failed) dump_findings();
}

/* Garbage over a COMMIT and the next record's header, with values large
 * enough that the file spans several read windows without mmap. */
static void check_damage_span(void)
{
    char p[600], o[600];
    snprintf(p, sizeof p, "%s", tu_path("span.db"));
    snprintf(o, sizeof o, "%s", tu_path("span.out"));
    static uint64_t offs[4096];
    static uint8_t types[4096];
    kvdb_check_stat st;
    size_t nrec, n, i, c = 0, at = 0;
    uint64_t lo, hi;
    uint8_t *b;
    kvdb *db;
    make_db(p, 60, 100000, 1);
    unlink(tu_path("span.db.idx"));
    nrec = log_records(p, offs, types, 4096);
    for (i = 0; i < nrec; i++)
        if (types[i] == LG_COMMIT && ++c == 30) { at = i; break; }
    REQUIRE(at);
    lo = offs[at] - 10;             /* the end of the last record of txn 29 */
    hi = offs[at + 1] + 12;         /* into the header of txn 30's first record */
    b = slurp(p, &n);
    REQUIRE(b != NULL);
    for (i = (size_t)lo; i < (size_t)hi; i++) b[i] = (uint8_t)(0xA5 ^ i);
    spit(p, b, n);
    free(b);
    reset();
    CHECK_RC(kvdb_check(p, &copts, &st), KVDB_ECORRUPT);
    CHECK(found(KVDB_CHECK_PROBLEM, offs[at - 1], "damaged: an impossible record header"));
    CHECK(st.lost_txns == 1 && st.txns == 59);
    unlink(o);
    reset();
    CHECK_OK(kvdb_repair(p, o, &copts, &st));
    CHECK(st.salvaged_txns == 59 && st.lost_txns == 1);
    CHECK(prog_calls > 0 && !prog_backwards && prog_last == prog_total);
    CHECK_OK(kvdb_check(o, NULL, &st));
    db = open_db(o, KVDB_SYNC_NORMAL);
    REQUIRE(db != NULL);
    {
        size_t vl;
        /* transactions 29 and 30 (their COMMIT and first record were hit) */
        CHECK_RC(kvdb_get(db, "b29", 3, NULL, 0, &vl), KVDB_NOTFOUND);
        CHECK_RC(kvdb_get(db, "b30", 3, NULL, 0, &vl), KVDB_NOTFOUND);
        CHECK_OK(kvdb_get(db, "b28", 3, NULL, 0, &vl));
        CHECK_OK(kvdb_get(db, "b31", 3, NULL, 0, &vl));
        CHECK(vl == 50000);
        CHECK_OK(kvdb_get(db, "b59", 3, NULL, 0, &vl));
    }
    kvdb_close(db);
    if (tu_cur_failed) dump_findings();
}

/* Rewrite a sidecar's checksums after a test changed it. */
static void sc_reseal(uint8_t *b, size_t n)
{
    uint64_t seed = kv_ld64(b + 32);
    kv_st64(b + 112, XXH3_64bits_withSeed(b + SC_HDR, n - SC_HDR, seed));
    kv_st64(b + 120, XXH3_64bits(b, 120));
}

/* A sidecar that loads but disagrees with the log. */
static void check_index_disagrees(void)
{
    char p[600];
    TU_SKIP_WITHOUT_SIDECAR();
    snprintf(p, sizeof p, "%s", tu_path("idx.db"));
    char idx[700];
    static uint64_t offs[64];
    static uint8_t types[64];
    kvdb_check_stat st;
    uint8_t *b, *orig;
    size_t n, i, nrec;
    uint64_t loff, old_off, new_off;
    int replaced = 0;
    kvdb *db;
    unlink(p);
    db = open_db(p, KVDB_SYNC_NORMAL);
    REQUIRE(db != NULL);
    CHECK_OK(kvdb_put(db, "k", 1, "old", 3));
    CHECK_OK(kvdb_put(db, "x", 1, "1", 1));
    CHECK_OK(kvdb_put(db, "k", 1, "new", 3));
    CHECK_OK(kvdb_put(db, "y", 1, "2", 1));
    CHECK_OK(kvdb_put(db, "w", 1, "3", 1));
    kvdb_close(db);
    nrec = log_records(p, offs, types, 64);
    REQUIRE(nrec == 11); /* 5 x (PUT, COMMIT), and the seal close appends */
    old_off = offs[0];
    new_off = offs[4];
    snprintf(idx, sizeof idx, "%s.idx", p);
    orig = slurp(idx, &n);
    REQUIRE(orig != NULL && n > SC_HDR);
    b = (uint8_t *)malloc(n);
    REQUIRE(b != NULL);

    /* 1. the hash index maps k to its older record */
    memcpy(b, orig, n);
    loff = kv_ld64(b + 88);
    for (i = (size_t)loff; i + 8 <= n; i++) {
        if (kv_ld64(b + i) == new_off) { kv_st64(b + i, old_off); replaced++; }
    }
    CHECK(replaced == 1);
    sc_reseal(b, n);
    spit(idx, b, n);
    reset();
    CHECK_RC(kvdb_check(p, &copts, &st), KVDB_ECORRUPT);
    CHECK(found(KVDB_CHECK_NOTE, 0, "loaded"));
    CHECK(found(KVDB_CHECK_PROBLEM, new_off, "older record"));
    CHECK(found(KVDB_CHECK_PROBLEM, 0, "ordered iterator"));
    if (tu_cur_failed) dump_findings();

    /* 2. the key count is off */
    memcpy(b, orig, n);
    kv_st64(b + 96, kv_ld64(b + 96) + 1);
    sc_reseal(b, n);
    spit(idx, b, n);
    reset();
    CHECK_RC(kvdb_check(p, &copts, &st), KVDB_ECORRUPT);
    CHECK(found(KVDB_CHECK_PROBLEM, KVDB_CHECK_NOOFF, "live keys") && st.problems == 1);

    /* 3. the sorted entries out of order (swap the middle two of k w x y:
     * open checks the first and last entries against the log) */
    memcpy(b, orig, n);
    REQUIRE(kv_ld64(b + 64) == 4);
    {
        uint8_t tmp[sizeof(srt_ent)];
        size_t e1 = (size_t)kv_ld64(b + 72) + sizeof tmp; /* where the entries start, then the second */
        REQUIRE(e1 + 2 * sizeof tmp <= n);
        memcpy(tmp, b + e1, sizeof tmp);
        memcpy(b + e1, b + e1 + sizeof tmp, sizeof tmp);
        memcpy(b + e1 + sizeof tmp, tmp, sizeof tmp);
    }
    sc_reseal(b, n);
    spit(idx, b, n);
    reset();
    CHECK_RC(kvdb_check(p, &copts, &st), KVDB_ECORRUPT);
    CHECK(found(KVDB_CHECK_PROBLEM, KVDB_CHECK_NOOFF, "out of order"));

    /* 4. a damaged sidecar: ignored by open, reported by check */
    memcpy(b, orig, n);
    b[n - 1] ^= 1;
    spit(idx, b, n);
    reset();
    CHECK_RC(kvdb_check(p, &copts, &st), KVDB_ECORRUPT);
    CHECK(found(KVDB_CHECK_PROBLEM, KVDB_CHECK_NOOFF, "sidecar") && st.problems == 1 && st.index_checked);

    spit(idx, orig, n);
    CHECK_OK(kvdb_check(p, &copts, &st));
    free(b);
    free(orig);
    if (tu_cur_failed) dump_findings();
}

/* The sidecar's only leaf (these databases are tiny): its first slot
 * holding offset off, or the first free slot from tag's home if off is 0.
 * Returns the slot's position in b, or 0. */
static size_t leaf_slot(uint8_t *b, size_t n, uint64_t off, uint32_t tag)
{
    size_t loff = (size_t)kv_ld64(b + 88), slots = loff + 16 + sizeof(hix_node), i;
    uint32_t cap = kv_ld32(b + loff + 8);
    if (kv_ld64(b + 80) != 1 || slots + (size_t)cap * HIX_SLOT > n) return 0;
    for (i = 0; i < cap; i++) {
        size_t at = off ? i : (hix_home(tag, cap) + i) % cap;
        uint8_t *s = b + slots + at * HIX_SLOT;
        if (off ? hix_soff(s) == off && hix_stag(s) : !hix_stag(s)) return slots + at * HIX_SLOT;
    }
    return 0;
}

/* The leaf's entry count, in its descriptor and its image, moved by d. */
static void leaf_count(uint8_t *b, int d)
{
    size_t loff = (size_t)kv_ld64(b + 88);
    kv_st32(b + loff + 12, kv_ld32(b + loff + 12) + (uint32_t)d);
    kv_st32(b + loff + 16 + 16, kv_ld32(b + loff + 16 + 16) + (uint32_t)d);
}

/* More sidecars that load but disagree with the log: the live bytes are
 * off; a live key is missing from the hash index; a deleted key is still
 * in it. */
static void check_index_disagrees_more(void)
{
    char p[600], idx[700];
    static uint64_t offs[64];
    static uint8_t types[64];
    kvdb_check_stat st;
    uint8_t *b, *orig;
    size_t n, nrec, s;
    kvdb *db;
    TU_SKIP_WITHOUT_SIDECAR();
    snprintf(p, sizeof p, "%s", tu_path("idx2.db"));
    snprintf(idx, sizeof idx, "%s.idx", p);
    unlink(p);
    db = open_db(p, KVDB_SYNC_NORMAL);
    REQUIRE(db != NULL);
    CHECK_OK(kvdb_put(db, "d", 1, "1", 1));
    CHECK_OK(kvdb_put(db, "e", 1, "2", 1));
    CHECK_OK(kvdb_put(db, "f", 1, "3", 1));
    CHECK_OK(kvdb_del(db, "d", 1));
    kvdb_close(db);
    nrec = log_records(p, offs, types, 64);
    REQUIRE(nrec == 9 && types[6] == LG_DEL); /* ... and the seal */
    orig = slurp(idx, &n);
    REQUIRE(orig != NULL && n > SC_HDR);
    b = (uint8_t *)malloc(n);
    REQUIRE(b != NULL);

    /* 1. live bytes */
    memcpy(b, orig, n);
    kv_st64(b + 104, kv_ld64(b + 104) + 1);
    sc_reseal(b, n);
    spit(idx, b, n);
    reset();
    CHECK_RC(kvdb_check(p, &copts, &st), KVDB_ECORRUPT);
    CHECK(found(KVDB_CHECK_PROBLEM, KVDB_CHECK_NOOFF, "live bytes") && st.problems == 1);

    /* 2. f's slot emptied (and the leaf's count with it) */
    memcpy(b, orig, n);
    s = leaf_slot(b, n, offs[4], 0);
    REQUIRE(s);
    memset(b + s, 0, HIX_SLOT);
    leaf_count(b, -1);
    sc_reseal(b, n);
    spit(idx, b, n);
    reset();
    CHECK_RC(kvdb_check(p, &copts, &st), KVDB_ECORRUPT);
    CHECK(found(KVDB_CHECK_NOTE, 0, "loaded"));
    CHECK(found(KVDB_CHECK_PROBLEM, offs[4], "missing from the hash index"));
    CHECK(found(KVDB_CHECK_PROBLEM, KVDB_CHECK_NOOFF, "is not in the hash index"));

    /* 3. the deleted d back in the hash index, at its PUT */
    memcpy(b, orig, n);
    s = leaf_slot(b, n, 0, hix_tag(kv_hash(kv_ld64(b + 32), "d", 1)));
    REQUIRE(s);
    hix_sset(b + s, hix_tag(kv_hash(kv_ld64(b + 32), "d", 1)), offs[0]);
    leaf_count(b, 1);
    sc_reseal(b, n);
    spit(idx, b, n);
    reset();
    CHECK_RC(kvdb_check(p, &copts, &st), KVDB_ECORRUPT);
    CHECK(found(KVDB_CHECK_PROBLEM, offs[6], "is deleted here, but the hash index still maps it"));

    spit(idx, orig, n);
    CHECK_OK(kvdb_check(p, &copts, &st));
    free(b);
    free(orig);
    if (tu_cur_failed) dump_findings();
}

/* Keys in reports: printable bytes as they are, quote, backslash and
 * other bytes as \xNN, cut after 48 bytes. */
static void check_report_keys(void)
{
    char p[600], idx[700], longk[61];
    static uint64_t offs[16];
    static uint8_t types[16];
    kvdb_check_stat st;
    uint8_t *b;
    size_t n, s;
    int i;
    kvdb *db;
    TU_SKIP_WITHOUT_SIDECAR();
    snprintf(p, sizeof p, "%s", tu_path("keys.db"));
    snprintf(idx, sizeof idx, "%s.idx", p);
    memset(longk, 'L', 60);
    longk[60] = 0;
    unlink(p);
    db = open_db(p, KVDB_SYNC_NORMAL);
    REQUIRE(db != NULL);
    CHECK_OK(kvdb_put(db, "a\"b\\c\x01\xff", 7, "1", 1));
    CHECK_OK(kvdb_put(db, longk, 60, "2", 1));
    kvdb_close(db);
    REQUIRE(log_records(p, offs, types, 16) == 5); /* 2 x (PUT, COMMIT), the seal */
    b = slurp(idx, &n);
    REQUIRE(b != NULL);
    for (i = 0; i < 2; i++) { /* both slots emptied */
        s = leaf_slot(b, n, offs[2 * i], 0);
        REQUIRE(s);
        memset(b + s, 0, HIX_SLOT);
        leaf_count(b, -1);
    }
    sc_reseal(b, n);
    spit(idx, b, n);
    free(b);
    reset();
    CHECK_RC(kvdb_check(p, &copts, &st), KVDB_ECORRUPT);
    CHECK(found(KVDB_CHECK_PROBLEM, offs[0], "key \"a\\x22b\\x5cc\\x01\\xff\" (newest record: this PUT) is missing"));
    CHECK(found(KVDB_CHECK_PROBLEM, offs[2], "key \"LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL...\" (newest"));
    if (tu_cur_failed) dump_findings();
}

/* ---- intact records in an order no writer produces ---- */

/* Append one record at *off of b (the caller's buffer has room). */
static void put_rec(uint8_t *b, uint64_t *off, uint64_t seed, uint8_t type, const char *k, const char *v)
{
    uint8_t *q = b + *off;
    uint32_t kl = k ? (uint32_t)strlen(k) : 0, vl = v ? (uint32_t)strlen(v) : 0;
    lg_put_header(q, type, kl, vl);
    if (kl) memcpy(q + LG_REC, k, kl);
    if (vl) memcpy(q + LG_REC + kl, v, vl);
    kv_st64(q, lg_checksum(seed, *off, q, LG_REC + kl + vl));
    *off += LG_REC + kl + vl;
}

/* A COMMIT at *off: sequence seq, count cnt, reserved field zero; its
 * durable field says everything before it was synced. */
static void put_commit(uint8_t *b, uint64_t *off, uint64_t seed, uint64_t seq, uint32_t cnt, uint32_t zero)
{
    uint8_t *q = b + *off;
    lg_put_header(q, LG_COMMIT, 0, LG_COMMIT_LEN);
    kv_st64(q + LG_REC, seq);
    kv_st64(q + LG_REC + 8, *off);
    kv_st32(q + LG_REC + 16, cnt);
    kv_st32(q + LG_REC + 20, zero);
    kv_st64(q, lg_checksum(seed, *off, q, LG_REC + LG_COMMIT_LEN));
    *off += LG_REC + LG_COMMIT_LEN;
}

/* Every record verifies, but one COMMIT does not close its transaction:
 * it counts fewer records than precede it (the first is an orphan), more,
 * has a nonzero reserved field, or repeats the last sequence number.  A
 * later intact commit says it was all synced: open refuses the file
 * (KVDB_ECORRUPT, unchanged), check reports the transaction at its offset,
 * repair saves every other transaction. */
static void check_crafted_commits(void)
{
    static const char *const what[] = { "no COMMIT of their own follows them", "its COMMIT counts more records",
                                        "its COMMIT has a nonzero reserved field", "does not follow the previous" };
    char p[600], o[600];
    static uint64_t offs[256];
    static uint8_t types[256];
    kvdb_check_stat st;
    int c;
    snprintf(p, sizeof p, "%s", tu_path("crafted.db"));
    snprintf(o, sizeof o, "%s", tu_path("crafted.out"));
    for (c = 0; c < 4 && !tu_cur_failed; c++) {
        uint8_t *b, *b2;
        size_t n, n2, nrec;
        uint64_t seed, seq, off, at;
        kvdb_options ko;
        kvdb *db = NULL;
        char v[64];
        size_t vl;
        make_db(p, 10, 20, 0);
        unlink(tu_path("crafted.db.idx"));
        nrec = log_records(p, offs, types, 256);
        REQUIRE(nrec > 0 && types[nrec - 1] == LG_COMMIT);
        b = slurp(p, &n);
        REQUIRE(b != NULL);
        b = (uint8_t *)realloc(b, n + 1024);
        REQUIRE(b != NULL);
        seed = kv_ld64(b + 16);
        seq = kv_ld64(b + offs[nrec - 1] + LG_REC);
        off = at = n;
        switch (c) {
        case 0:
            put_rec(b, &off, seed, LG_PUT, "orphan", "o");
            put_rec(b, &off, seed, LG_PUT, "t1", "t");
            put_commit(b, &off, seed, seq + 1, 1, 0);
            break;
        case 1:
            put_rec(b, &off, seed, LG_PUT, "t1", "t");
            put_commit(b, &off, seed, seq + 1, 2, 0);
            break;
        case 2:
            put_rec(b, &off, seed, LG_PUT, "t1", "t");
            put_commit(b, &off, seed, seq + 1, 1, 7);
            break;
        case 3:
            put_rec(b, &off, seed, LG_PUT, "t1", "t");
            at = off;
            put_commit(b, &off, seed, seq, 1, 0);
            break;
        }
        put_rec(b, &off, seed, LG_PUT, "z", "last");
        put_commit(b, &off, seed, seq + 2, 1, 0);
        spit(p, b, (size_t)off);
        reset();
        CHECK_RC(kvdb_check(p, &copts, &st), KVDB_ECORRUPT);
        if (!found(KVDB_CHECK_PROBLEM, at, what[c])) tu_fail(__FILE__, __LINE__, "case %d: no problem at %llu saying \"%s\"", c, (unsigned long long)at, what[c]);
        CHECK(st.txns == (c == 0 || c == 3 ? 12u : 11u) && st.lost_txns == (c == 3 ? 0u : 1u) && !st.index_checked);
        kvdb_options_init(&ko);
        CHECK_RC(kvdb_open(p, &ko, &db), KVDB_ECORRUPT);
        b2 = slurp(p, &n2);
        CHECK(b2 && n2 == off && memcmp(b, b2, n2) == 0); /* the file is untouched */
        free(b2);
        unlink(o);
        reset();
        CHECK_OK(kvdb_repair(p, o, &copts, &st));
        CHECK_OK(kvdb_check(o, NULL, NULL));
        db = open_db(o, KVDB_SYNC_NORMAL);
        REQUIRE(db != NULL);
        CHECK_OK(kvdb_get(db, "z", 1, v, sizeof v, &vl));
        CHECK(vl == 4 && memcmp(v, "last", 4) == 0);
        CHECK_RC(kvdb_get(db, "orphan", 6, v, sizeof v, &vl), KVDB_NOTFOUND);
        CHECK_RC(kvdb_get(db, "t1", 2, v, sizeof v, &vl), c == 0 || c == 3 ? KVDB_OK : KVDB_NOTFOUND);
        CHECK_OK(kvdb_get(db, "a9", 2, v, sizeof v, &vl));
        kvdb_close(db);
        free(b);
    }
    if (tu_cur_failed) dump_findings();
}

/* Damage that no durable field covers, followed by intact transactions
 * and an intact PUT without a COMMIT: all of it is the torn tail (a note,
 * not a problem; the next writable open cuts it), check says how many
 * intact transactions it holds, and repair saves them. */
static void check_torn_tail_with_txns(void)
{
    char p[600], o[600];
    static uint64_t offs[512];
    static uint8_t types[512];
    kvdb_check_stat st;
    struct kvdb_stat ks;
    size_t nrec, n, i, commits = 0, victim = 0;
    uint64_t off;
    uint8_t *b;
    kvdb *db;
    char v[64];
    size_t vl;
    snprintf(p, sizeof p, "%s", tu_path("tailtx.db"));
    snprintf(o, sizeof o, "%s", tu_path("tailtx.out"));
    make_db(p, 30, 20, 0); /* SYNC_NORMAL, never synced: no commit claims more than the header... */
    unlink(tu_path("tailtx.db.idx"));
    b = slurp(p, &n); /* ...once the seal of its close is gone (as after a crash before it) */
    REQUIRE(b != NULL && n > 40 && b[n - 40 + 8] == LG_COMMIT && kv_ld64(b + n - 40 + LG_REC + 8) == n - 40);
    spit(p, b, n - 40);
    free(b);
    nrec = log_records(p, offs, types, 512);
    for (i = 0; i < nrec; i++)
        if (types[i] == LG_COMMIT && ++commits == 10) { victim = i + 1; break; }
    REQUIRE(victim && types[victim] == LG_PUT);
    b = slurp(p, &n);
    REQUIRE(b != NULL);
    b = (uint8_t *)realloc(b, n + 256);
    REQUIRE(b != NULL);
    b[offs[victim] + LG_REC] ^= 1; /* the first record of transaction 10 */
    off = n;
    put_rec(b, &off, kv_ld64(b + 16), LG_PUT, "uncommitted", "u");
    spit(p, b, (size_t)off);
    reset();
    CHECK_OK(kvdb_check(p, &copts, &st));
    CHECK(st.problems == 0 && st.torn_bytes == off - offs[victim] && st.txns == 29 && st.lost_txns == 2);
    CHECK(found(KVDB_CHECK_NOTE, offs[victim], "torn tail holds 19 intact transaction(s)"));
    CHECK(found(KVDB_CHECK_NOTE, n, "no COMMIT follows"));
    CHECK(st.index_checked); /* the committed prefix opens and is checked */
    unlink(o);
    reset();
    CHECK_OK(kvdb_repair(p, o, &copts, &st));
    CHECK(st.salvaged_txns == 29 && found(KVDB_CHECK_NOTE, 0, "they are saved"));
    db = open_db(o, KVDB_SYNC_NORMAL);
    REQUIRE(db != NULL);
    CHECK_OK(kvdb_get(db, "b29", 3, v, sizeof v, &vl));
    CHECK_RC(kvdb_get(db, "b10", 3, v, sizeof v, &vl), KVDB_NOTFOUND);
    CHECK_RC(kvdb_get(db, "uncommitted", 11, v, sizeof v, &vl), KVDB_NOTFOUND);
    kvdb_close(db);
    /* the writable open keeps the first 10 transactions only */
    db = open_db(p, KVDB_SYNC_NORMAL);
    REQUIRE(db != NULL);
    CHECK_OK(kvdb_stat(db, &ks));
    CHECK(ks.torn_bytes == off - offs[victim]);
    CHECK_OK(kvdb_get(db, "b9", 2, v, sizeof v, &vl));
    CHECK_RC(kvdb_get(db, "b29", 3, v, sizeof v, &vl), KVDB_NOTFOUND);
    kvdb_close(db);
    free(b);
    if (tu_cur_failed) dump_findings();
}

static void check_errors(void)
{
    char p[600];
    snprintf(p, sizeof p, "%s", tu_path("err.db"));
    kvdb_check_stat st;
    kvdb *db;
    FILE *f;
    /* missing, not a database, empty, truncated header */
    CHECK_RC(kvdb_check(tu_path("nope.db"), NULL, &st), KVDB_NOTFOUND);
    CHECK(strstr(kvdb_errmsg(), "nope.db") != NULL);
    f = fopen(tu_path("text.txt"), "w");
    REQUIRE(f != NULL);
    fputs("hello, world\nnot a database\n", f);
    fclose(f);
    CHECK_RC(kvdb_check(tu_path("text.txt"), NULL, &st), KVDB_ENOTDB);
    CHECK_RC(kvdb_repair(tu_path("text.txt"), tu_path("text.out"), NULL, &st), KVDB_ENOTDB);
    CHECK(access(tu_path("text.out"), F_OK) != 0);
    f = fopen(tu_path("empty.db"), "w");
    REQUIRE(f != NULL);
    fclose(f);
    CHECK_RC(kvdb_check(tu_path("empty.db"), NULL, &st), KVDB_ENOTDB);
    f = fopen(tu_path("short.db"), "w");
    REQUIRE(f != NULL);
    fwrite(LG_MAGIC, 1, 8, f);
    fwrite("\1\0\0\0", 1, 4, f);
    fclose(f);
    reset();
    CHECK_RC(kvdb_check(tu_path("short.db"), &copts, &st), KVDB_ECORRUPT);
    CHECK(found(KVDB_CHECK_PROBLEM, 0, "header"));
    CHECK(st.horizon_from && strcmp(st.horizon_from, "none") == 0); /* set however early the check stops */
    CHECK_RC(kvdb_check(tu_path("nope.db"), NULL, &st), KVDB_NOTFOUND);
    CHECK(st.horizon_from != NULL);
    CHECK_RC(kvdb_check(NULL, NULL, NULL), KVDB_EINVAL);
    CHECK_RC(kvdb_repair(p, NULL, NULL, NULL), KVDB_EINVAL);
    /* locked by a writer (this process) */
    unlink(p);
    db = open_db(p, KVDB_SYNC_NORMAL);
    REQUIRE(db != NULL);
    CHECK_OK(kvdb_put(db, "a", 1, "b", 1));
    CHECK_RC(kvdb_check(p, NULL, &st), KVDB_ELOCKED);
    CHECK(strstr(kvdb_errmsg(), "err.db") != NULL);
    CHECK_RC(kvdb_repair(p, tu_path("err.out"), NULL, &st), KVDB_ELOCKED);
    CHECK(access(tu_path("err.out"), F_OK) != 0);
    kvdb_close(db);
    CHECK_OK(kvdb_check(p, NULL, &st));
    CHECK(st.keys == 1);
    /* a damaged header: the seed it holds still verifies the records */
    {
        size_t n;
        uint8_t *b = slurp(p, &n);
        REQUIRE(b != NULL);
        b[44] ^= 1; /* creation time */
        spit(p, b, n);
        free(b);
        reset();
        CHECK_RC(kvdb_check(p, &copts, &st), KVDB_ECORRUPT);
        CHECK(found(KVDB_CHECK_PROBLEM, 0, "header") && st.problems == 1 && st.txns == 1);
        unlink(tu_path("err.out"));
        CHECK_OK(kvdb_repair(p, tu_path("err.out"), NULL, &st));
        CHECK(st.salvaged_txns == 1 && st.keys == 1);
    }
}

int main(void)
{
    tu_tmpdir("check");
    RUN(check_clean);
    RUN(check_stale_sidecar);
    RUN(check_torn_tail);
    RUN(check_damage_middle);
    RUN(check_damage_span);
    RUN(check_index_disagrees);
    RUN(check_index_disagrees_more);
    RUN(check_report_keys);
    RUN(check_crafted_commits);
    RUN(check_torn_tail_with_txns);
    RUN(check_errors);
    tu_rmrf();
    TEST_MAIN_END();
}
