/* ======================================================================
 * SECTION: copy-on-write hash index
 *
 * Maps a key's 64-bit hash to the offset of its newest PUT record.
 *
 * Shape.  A radix tree over the 32-bit tag (the hash's top 32 bits, 0
 * replaced by 1 so that 0 can mean "empty slot").  Inner nodes have 64
 * children and consume 6 tag bits each; there are at most HIX_LEVELS of
 * them (30 bits).  Leaves are open-addressing tables (linear probing,
 * backward-shift deletion, no tombstones) of (tag, offset) pairs, 8 to 128
 * slots, at most 7/8 full.  A leaf whose "local depth" is d covers 2^(6-d)
 * consecutive children of its parent, all pointing at it.
 *
 * Growth, one leaf at a time.  A full leaf moves up to the next size.  A
 * leaf that covers several children (d < 6) splits in two on its next tag
 * bit (d+1) once it holds HIX_SPLIT_MAX (28) entries, so shared leaves stay
 * at 32 slots or fewer; a leaf that covers a single child (d == 6) grows to
 * 128 slots and is then pushed down under a new inner node and split there
 * (its halves, still crowded, split again on their next insert).  Only a
 * leaf at the deepest level grows past 128 slots (more than 112 keys
 * sharing 30 hash bits: only in KVDB_TEST_HASH_BITS builds).  Deleting
 * shrinks a leaf below 1/4 full, merges buddy leaves whose sum is at most
 * HIX_SPLIT_MAX/2, and folds an inner node whose only child is one leaf.
 * Every step touches O(128) entries: no operation rehashes the table.
 * Why small shared leaves: a commit copies every leaf it touches, and a
 * batch of 1000 random puts touches about 1000 leaves, so the cost of a
 * batch is about its size times the bytes of a leaf copied.
 *
 * Copy on write.  Every node records the write generation that allocated
 * it.  A writer may change nodes of its own generation in place; any other
 * node is copied first (hix_own_*), its parent made to point at the copy,
 * and the original is "retired": it stays valid for the versions that can
 * still see it and is freed when they are gone.  Readers never lock.
 *
 * Layout for speed.  A child pointer carries the kind and size of the node
 * in its low 4 bits (nodes are 16-byte aligned): 0 for an inner node, else
 * a code for the leaf's capacity.  A lookup therefore never reads a node
 * header: it reads one child slot per level and then the leaf's slots,
 * each a packed 12-byte (tag, offset) pair, so a probe usually touches one
 * cache line.  Leaf capacities are 8, 16, 24, 32, 40, 48, 56, 64, 80, 96,
 * 112, 128 slots (homed by multiply-shift, so no power of two is needed):
 * the halves of a split leaf land in a leaf sized for them, at most 3/4
 * full, not in one twice as large.
 *
 * Memory: 12 bytes a slot, leaves 50%..87% full, plus a 32-byte header per
 * leaf and 544 bytes per inner node, whatever the key length; with up to
 * 1/16 more in freed nodes kept for the next commit to reuse: 17 to 22
 * bytes per key.
 * ====================================================================== */
#define HIX_LEVELS 5
#define HIX_FAN 64
#define HIX_LEAF_MIN 8
#define HIX_LEAF_SLOTS 128
#define HIX_NCAPS 12
#define HIX_CODE_BIG 15     /* leaf above 128 slots: read its header */
#define HIX_SLOT 12
#define HIX_SPLIT_MAX 28    /* a shared leaf (local depth < 6) splits at this count */

/* Leaf capacity by pointer code (code - 1).  The first eight are the
 * codes of the first sidecar format and keep their numbers; hix_ladder
 * is the same set in ascending order. */
static const uint16_t hix_caps[HIX_NCAPS] = { 8, 16, 32, 64, 80, 96, 112, 128, 24, 40, 48, 56 };
static const uint16_t hix_ladder[HIX_NCAPS] = { 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128 };

#define HIX_NODE(r) ((hix_node *)((r) & ~(uintptr_t)15))
#define HIX_CODE(r) ((unsigned)((r) & 15u))

struct hix_node {
    uint64_t gen;          /* write generation that allocated it */
    hix_node *link;        /* retired or free list */
    uint32_t count;        /* leaf: entries */
    uint32_t cap;          /* leaf: slots; 0: inner node */
    uint8_t level;         /* inner: depth (root 0) */
    uint8_t ldepth;        /* leaf: local depth in its parent, 0..6 */
    uint8_t code;          /* leaf: its pointer code; inner: 0 */
    uint8_t adj;           /* bytes from the allocation to the node */
    uint8_t pad_[4];
};                         /* 32 bytes: keeps the slots 16-byte aligned */

typedef struct hix_inner {
    hix_node h;
    hix_ref child[HIX_FAN];
} hix_inner;

typedef struct hix_w {     /* a writer's context */
    kvdb *db;
    hix_pool *pool;        /* where its nodes come from and go back to */
    uint64_t gen;
    hix_node *retired;     /* nodes replaced, for the base version, */
    hix_node *retired_tail;/* ...the first one retired (the list's tail), */
    uint64_t nretired;     /* ...how many, */
    uint64_t retired_min;  /* ...and the lowest gen among them */
    const kv_rd *rd;       /* to compare keys */
} hix_w;

static uint8_t *hix_slots(const hix_node *l) { return (uint8_t *)(uintptr_t)(l + 1); }
static uint32_t hix_stag(const uint8_t *s)
{
    uint32_t t;
    memcpy(&t, s, 4);
    return t;
}
static uint64_t hix_soff(const uint8_t *s)
{
    uint64_t o;
    memcpy(&o, s + 4, 8);
    return o;
}
static void hix_sset(uint8_t *s, uint32_t tag, uint64_t off)
{
    memcpy(s, &tag, 4);
    memcpy(s + 4, &off, 8);
}
static void hix_ssetoff(uint8_t *s, uint64_t off) { memcpy(s + 4, &off, 8); }

static uint32_t hix_tag(uint64_t h)
{
    uint32_t t = (uint32_t)(h >> 32);
    return t ? t : 1;
}
static unsigned hix_idx(uint32_t tag, unsigned level) { return (tag >> (26 - 6 * level)) & 63u; }
static uint32_t hix_home(uint32_t tag, uint32_t cap)
{
    return (uint32_t)(((uint64_t)(uint32_t)(tag * 0x9E3779B1u) * cap) >> 32);
}
static size_t hix_size(uint32_t cap) { return cap ? sizeof(hix_node) + (size_t)cap * HIX_SLOT : sizeof(hix_inner); }
/* A leaf sharing its parent's child slots with others splits early: a
 * commit copies every leaf it touches, so small shared leaves keep a
 * batch of random puts cheap; a leaf alone in its slot grows to 128 slots
 * before an inner node (544 bytes) is spent on it. */
static int hix_crowded(const hix_node *l) { return l->ldepth < 6 && l->count >= HIX_SPLIT_MAX; }
static int hix_full(const hix_node *l) { return l->count + 1 > l->cap - l->cap / 8 || hix_crowded(l); }
static hix_ref hix_mkref(const hix_node *n) { return (hix_ref)n | n->code; }

static unsigned hix_code_of(uint32_t cap)
{
    unsigned i;
    for (i = 0; i < HIX_NCAPS; i++)
        if (hix_caps[i] == cap) return i + 1;
    return HIX_CODE_BIG;
}

/* The next capacity up the ladder (doubling past 128). */
static uint32_t hix_next_cap(uint32_t cap)
{
    unsigned i;
    for (i = 0; i + 1 < HIX_NCAPS; i++)
        if (hix_ladder[i] == cap) return hix_ladder[i + 1];
    return cap * 2;
}

/* The smallest capacity holding n entries at most 3/4 full. */
static uint32_t hix_cap_for(uint32_t n)
{
    unsigned i;
    uint32_t cap;
    for (i = 0; i < HIX_NCAPS; i++)
        if ((uint64_t)n * 4 <= (uint64_t)hix_ladder[i] * 3) return hix_ladder[i];
    cap = HIX_LEAF_SLOTS;
    while (n + 1 > cap - cap / 8) cap *= 2;
    return cap;
}

/* The free list for nodes of cap slots (0: inner), or NULL. */
static hix_node **hix_free_list(hix_pool *pl, uint32_t cap, unsigned **count)
{
    unsigned c = cap ? hix_code_of(cap) : 0;
    if (c == HIX_CODE_BIG) return NULL;
    *count = &pl->n_free[c];
    return &pl->free_nodes[c];
}

/* A node of cap slots (0: inner) owned by w, or NULL (KVDB_ENOMEM).  A
 * leaf's slots are cleared unless the caller is about to copy over them. */
static hix_node *hix_alloc_x(hix_w *w, uint32_t cap, int clear)
{
    kvdb *db = w->db;
    hix_pool *pl = w->pool;
    unsigned *nfree;
    hix_node **fl = hix_free_list(pl, cap, &nfree), *n = NULL;
    size_t sz = hix_size(cap);
    uint8_t adj = 0;
    if (fl && *fl) {
        n = *fl;
        *fl = n->link;
        (*nfree)--;
        adj = n->adj;
        pl->free_bytes -= sz + adj;
    } else {
        uint8_t *p = (uint8_t *)kv_malloc(&db->al, sz);
        if (p && ((uintptr_t)p & 15)) { /* the allocator gave less than 16-byte alignment */
            kv_free(&db->al, p);
            p = (uint8_t *)kv_malloc(&db->al, sz + 16);
            if (p) adj = (uint8_t)(16 - ((uintptr_t)p & 15));
        }
        if (!p) {
            kv_err(KVDB_ENOMEM, "out of memory for an index node");
            return NULL;
        }
        n = (hix_node *)(void *)(p + adj);
        pl->bytes += sz + adj;
    }
    memset(n, 0, sizeof *n);
    n->gen = w->gen;
    n->cap = cap;
    n->adj = adj;
    if (cap) {
        n->code = (uint8_t)hix_code_of(cap);
        if (clear) memset(hix_slots(n), 0, (size_t)cap * HIX_SLOT);
    }
    return n;
}

static hix_node *hix_alloc(hix_w *w, uint32_t cap) { return hix_alloc_x(w, cap, 1); }

static void hix_free_node(kvdb *db, hix_pool *pl, hix_node *n)
{
    unsigned *nfree;
    hix_node **fl = hix_free_list(pl, n->cap, &nfree);
    size_t sz = hix_size(n->cap);
    /* Keep freed nodes for reuse -- a commit frees about as many as the
     * next one copies (a batch of 1000 random puts copies about 1000
     * leaves) -- up to 1/16 of the index plus 16 KiB in all. */
    if (fl && pl->free_bytes + sz + n->adj <= (pl->bytes >> 4) + 16384) {
        n->link = *fl;
        *fl = n;
        (*nfree)++;
        pl->free_bytes += sz + n->adj;
        return;
    }
    pl->bytes -= hix_size(n->cap) + n->adj;
    kv_free(&db->al, (uint8_t *)n - n->adj);
}

/* A node leaves the writer's tree: free it if only this writer could see
 * it, else retire it for the versions that still can. */
static void hix_drop(hix_w *w, hix_node *n)
{
    if (n->adj == 0xFF) return; /* inside the sidecar mapping: lives until close */
    if (n->gen == w->gen) {
        hix_free_node(w->db, w->pool, n);
    } else {
        if (!w->retired) w->retired_tail = n;
        if (!w->nretired++ || n->gen < w->retired_min) w->retired_min = n->gen;
        n->link = w->retired;
        w->retired = n;
    }
}

/* Free every node of tree r allocated by generation gen (0: all nodes). */
static void hix_free_tree(kvdb *db, hix_pool *pl, hix_ref r, uint64_t gen)
{
    hix_node *n = HIX_NODE(r);
    if (!r || n->adj == 0xFF || (gen && n->gen != gen)) return;
    if (n->cap == 0) {
        hix_inner *in = (hix_inner *)n;
        unsigned i;
        for (i = 0; i < HIX_FAN; i++)
            if (i == 0 || in->child[i] != in->child[i - 1]) hix_free_tree(db, pl, in->child[i], gen);
    }
    hix_free_node(db, pl, n);
}

static void hix_leaf_add(hix_node *l, uint32_t tag, uint64_t off)
{
    uint8_t *s = hix_slots(l);
    uint32_t i = hix_home(tag, l->cap);
    while (hix_stag(s + (size_t)i * HIX_SLOT)) i = i + 1 == l->cap ? 0 : i + 1;
    hix_sset(s + (size_t)i * HIX_SLOT, tag, off);
    l->count++;
}

/* Remove slot i (backward-shift deletion: no tombstones). */
static void hix_leaf_remove(hix_node *l, uint32_t i)
{
    uint8_t *s = hix_slots(l);
    uint32_t cap = l->cap, j = i;
    for (;;) {
        uint32_t t, k, dki, dkj;
        j = j + 1 == cap ? 0 : j + 1;
        t = hix_stag(s + (size_t)j * HIX_SLOT);
        if (!t) break;
        k = hix_home(t, cap);
        dki = i >= k ? i - k : i + cap - k;
        dkj = j >= k ? j - k : j + cap - k;
        if (dki < dkj) { /* slot i lies on j's probe path: move j back */
            memcpy(s + (size_t)i * HIX_SLOT, s + (size_t)j * HIX_SLOT, HIX_SLOT);
            i = j;
        }
    }
    memset(s + (size_t)i * HIX_SLOT, 0, HIX_SLOT);
    l->count--;
}

/* Find key in leaf l of cap slots: 1 and *slot, 0 if absent (and *slot =
 * the empty slot that ended the search, where an insert goes), or an
 * error. */
static int hix_leaf_find(const kv_rd *r, const hix_node *l, uint32_t cap, uint32_t tag, const void *key,
                         size_t klen, uint32_t *slot, kv_hit *hit)
{
    const uint8_t *s = hix_slots(l);
    uint32_t i = hix_home(tag, cap), t;
    while ((t = hix_stag(s + (size_t)i * HIX_SLOT)) != 0) {
        if (t == tag) {
            int rc = rd_match(r, hix_soff(s + (size_t)i * HIX_SLOT), key, klen, hit);
            if (rc) {
                if (rc > 0) *slot = i;
                return rc;
            }
        }
        i = i + 1 == cap ? 0 : i + 1;
    }
    *slot = i;
    return 0;
}

/* Look key up in the tree at root: 1 (hit filled), 0, or an error.  Reads
 * one child slot per level and no node header. */
static int hix_get(const kv_rd *r, hix_ref root, uint64_t h, const void *key, size_t klen, kv_hit *hit)
{
    uint32_t tag = hix_tag(h), slot, cap;
    unsigned level = 0, code;
    hix_ref c = root;
    do c = ((const hix_inner *)HIX_NODE(c))->child[hix_idx(tag, level++)];
    while (!HIX_CODE(c));
    code = HIX_CODE(c);
    cap = code <= HIX_NCAPS ? hix_caps[code - 1] : HIX_NODE(c)->cap;
    return hix_leaf_find(r, HIX_NODE(c), cap, tag, key, klen, &slot, hit);
}

/* Prefetching for a batch of lookups (a commit applies its records in
 * groups of HIX_PF_MAX).  hix_pf_path() walks the n hashes h[] down the
 * tree at root together, one level per pass, prefetching each node's
 * header (copy-on-write reads its gen) and the child slot or leaf home slot
 * the next step reads, so the misses of a pass overlap instead of each
 * level of each key waiting for the one before; it leaves each key's leaf
 * in cur[].  hix_pf_recs(), called a group later when those leaves have
 * arrived, prefetches the records of slots whose tag matches (the keys an
 * overwrite or delete compares) and clears cur[] as it goes (a function
 * that only prefetched would be dropped: see RD_PREFETCH).  The tree must not change meanwhile: the
 * writer passes its base version, whose nodes stay allocated until the
 * commit is over.  Hints only: nothing outside the tree's nodes is read. */
#define HIX_PF_MAX 16
static void hix_pf_path(hix_ref root, const uint64_t *h, unsigned n, hix_ref *cur)
{
    unsigned i, level, inner = n;
    assert(n <= HIX_PF_MAX);
    for (i = 0; i < n; i++) cur[i] = root;
    for (level = 0; inner && level < HIX_LEVELS; level++) {
        inner = 0;
        for (i = 0; i < n; i++) {
            uint32_t tag = hix_tag(h[i]);
            if (HIX_CODE(cur[i])) continue;
            cur[i] = ((const hix_inner *)HIX_NODE(cur[i]))->child[hix_idx(tag, level)];
            KV_PREFETCH(HIX_NODE(cur[i]));
            if (!HIX_CODE(cur[i])) {
                KV_PREFETCH(&((const hix_inner *)HIX_NODE(cur[i]))->child[hix_idx(tag, level + 1)]);
                inner++;
            } else if (HIX_CODE(cur[i]) <= HIX_NCAPS) {
                uint32_t cap = hix_caps[HIX_CODE(cur[i]) - 1];
                KV_PREFETCH(hix_slots(HIX_NODE(cur[i])) + (size_t)hix_home(tag, cap) * HIX_SLOT);
            }
        }
    }
}

static void hix_pf_recs(const kv_rd *r, const uint64_t *h, unsigned n, hix_ref *cur)
{
    unsigned i;
    for (i = 0; i < n; i++) {
        uint32_t tag = hix_tag(h[i]), cap, k, t, probes = 0;
        hix_ref c = cur[i];
        const uint8_t *s;
        cur[i] = 0;
        if (!r->base || HIX_CODE(c) == 0 || HIX_CODE(c) > HIX_NCAPS) continue;
        cap = hix_caps[HIX_CODE(c) - 1];
        s = hix_slots(HIX_NODE(c));
        /* (a key present is nearly always within a few slots of its home;
         * a new key's search may run on far longer: not worth a hint) */
        for (k = hix_home(tag, cap); probes < 8 && (t = hix_stag(s + (size_t)k * HIX_SLOT)) != 0;
             k = k + 1 == cap ? 0 : k + 1, probes++) {
            if (t == tag) RD_PREFETCH(r, hix_soff(s + (size_t)k * HIX_SLOT));
        }
    }
}

static void hix_set_range(hix_inner *in, unsigned idx, unsigned ldepth, hix_ref r)
{
    unsigned span = 1u << (6 - ldepth), base = idx & ~(span - 1), i;
    for (i = 0; i < span; i++) in->child[base + i] = r;
}

/* Make the inner node at *slot writable. */
static hix_inner *hix_own_inner(hix_w *w, hix_ref *slot)
{
    hix_node *n = HIX_NODE(*slot), *c;
    if (n->gen == w->gen) return (hix_inner *)n;
    c = hix_alloc(w, 0);
    if (!c) return NULL;
    c->level = n->level;
    memcpy(((hix_inner *)c)->child, ((hix_inner *)n)->child, sizeof((hix_inner *)c)->child);
    *slot = (hix_ref)c;
    hix_drop(w, n);
    return (hix_inner *)c;
}

/* Make leaf l, child idx of the writable inner node in, writable. */
static hix_node *hix_own_leaf(hix_w *w, hix_inner *in, unsigned idx, hix_node *l)
{
    hix_node *c;
    if (l->gen == w->gen) return l;
    c = hix_alloc_x(w, l->cap, 0);
    if (!c) return NULL;
    c->count = l->count;
    c->ldepth = l->ldepth;
    memcpy(hix_slots(c), hix_slots(l), (size_t)l->cap * HIX_SLOT);
    hix_set_range(in, idx, l->ldepth, hix_mkref(c));
    hix_drop(w, l);
    return c;
}

/* A new leaf of cap slots holding the entries of src (half < 0), or those
 * whose bit bitpos of their child index at level is half. */
static hix_node *hix_leaf_from(hix_w *w, const hix_node *src, uint32_t cap, int half, unsigned level, unsigned bitpos)
{
    hix_node *n = hix_alloc(w, cap);
    const uint8_t *s = hix_slots(src);
    uint32_t i;
    if (!n) return NULL;
    for (i = 0; i < src->cap; i++, s += HIX_SLOT) {
        uint32_t t = hix_stag(s);
        if (!t) continue;
        if (half >= 0 && (int)((hix_idx(t, level) >> bitpos) & 1u) != half) continue;
        hix_leaf_add(n, t, hix_soff(s));
    }
    return n;
}

/* Split leaf l, which covers child idx of in with local depth d, in two
 * on the next tag bit.  l itself is not changed (it may be shared). */
static int hix_split(hix_w *w, hix_inner *in, unsigned idx, hix_node *l, unsigned d)
{
    unsigned level = in->h.level, bitpos = 5 - d;
    unsigned span = 1u << (6 - d), base = idx & ~(span - 1), i;
    const uint8_t *s = hix_slots(l);
    uint32_t hi = 0, t;
    hix_node *a, *b;
    for (i = 0; i < l->cap; i++)
        if ((t = hix_stag(s + (size_t)i * HIX_SLOT)) != 0 && ((hix_idx(t, level) >> bitpos) & 1u)) hi++;
    a = hix_leaf_from(w, l, hix_cap_for(l->count - hi), 0, level, bitpos);
    if (!a) return KVDB_ENOMEM;
    b = hix_leaf_from(w, l, hix_cap_for(hi), 1, level, bitpos);
    if (!b) {
        hix_free_node(w->db, w->pool, a);
        return KVDB_ENOMEM;
    }
    a->ldepth = b->ldepth = (uint8_t)(d + 1);
    for (i = 0; i < span / 2; i++) in->child[base + i] = hix_mkref(a);
    for (; i < span; i++) in->child[base + i] = hix_mkref(b);
    hix_drop(w, l);
    return KVDB_OK;
}

/* Make room in the full leaf l (child idx of the writable node in). */
static int hix_expand(hix_w *w, hix_inner *in, unsigned idx, hix_node *l)
{
    unsigned level = in->h.level;
    hix_inner *ni;
    unsigned i;
    int rc;
    if (!hix_crowded(l) && (l->cap < HIX_LEAF_SLOTS || (l->ldepth == 6 && level == HIX_LEVELS - 1))) {
        hix_node *n = hix_leaf_from(w, l, hix_next_cap(l->cap), -1, 0, 0);
        if (!n) return KVDB_ENOMEM;
        n->ldepth = l->ldepth;
        hix_set_range(in, idx, l->ldepth, hix_mkref(n));
        hix_drop(w, l);
        return KVDB_OK;
    }
    if (l->ldepth < 6) return hix_split(w, in, idx, l, l->ldepth);
    /* Push down: a new inner node takes l's place, and l is split into it
     * as if it covered all 64 children there (local depth 0). */
    ni = (hix_inner *)hix_alloc(w, 0);
    if (!ni) return KVDB_ENOMEM;
    ni->h.level = (uint8_t)(level + 1);
    for (i = 0; i < HIX_FAN; i++) ni->child[i] = hix_mkref(l);
    rc = hix_split(w, ni, 0, l, 0);
    if (rc) {
        hix_free_node(w->db, w->pool, &ni->h);
        return rc;
    }
    in->child[idx] = (hix_ref)ni;
    return KVDB_OK;
}

/* Insert or replace: *old = offset of the record replaced, or 0.  key
 * NULL: the caller knows the key is not in the tree (no log reads). */
static int hix_put(hix_w *w, hix_ref *rootp, uint64_t h, const void *key, size_t klen, uint64_t off, uint64_t *old)
{
    uint32_t tag = hix_tag(h), slot;
    hix_inner *in = hix_own_inner(w, rootp);
    int rc;
    *old = 0;
    if (!in) return KVDB_ENOMEM;
    for (;;) {
        unsigned idx = hix_idx(tag, in->h.level);
        hix_node *c;
        if (!HIX_CODE(in->child[idx])) {
            in = hix_own_inner(w, &in->child[idx]);
            if (!in) return KVDB_ENOMEM;
            continue;
        }
        c = HIX_NODE(in->child[idx]);
        rc = key ? hix_leaf_find(w->rd, c, c->cap, tag, key, klen, &slot, NULL) : 0;
        if (rc < 0) return rc;
        if (rc == 0 && hix_full(c)) {
            rc = hix_expand(w, in, idx, c);
            if (rc) return rc;
            continue;
        }
        c = hix_own_leaf(w, in, idx, c);
        if (!c) return KVDB_ENOMEM;
        if (rc == 1) {
            uint8_t *s = hix_slots(c) + (size_t)slot * HIX_SLOT;
            *old = hix_soff(s);
            hix_ssetoff(s, off);
        } else if (key) { /* the copy has the slot the search ended at */
            hix_sset(hix_slots(c) + (size_t)slot * HIX_SLOT, tag, off);
            c->count++;
        } else {
            hix_leaf_add(c, tag, off);
        }
        return KVDB_OK;
    }
}

/* Delete: *old = offset of the record removed; KVDB_NOTFOUND if absent
 * (the path to its leaf may then have been copied, unchanged).  The key is
 * compared once, in the leaf before it is copied. */
static int hix_del(hix_w *w, hix_ref *rootp, uint64_t h, const void *key, size_t klen, uint64_t *old)
{
    uint32_t tag = hix_tag(h), slot;
    hix_inner *path[HIX_LEVELS];
    unsigned pidx[HIX_LEVELS], depth = 0, idx;
    hix_inner *in;
    hix_node *l;
    int rc;
    in = hix_own_inner(w, rootp);
    if (!in) return KVDB_ENOMEM;
    for (;;) {
        idx = hix_idx(tag, in->h.level);
        if (HIX_CODE(in->child[idx])) break;
        path[depth] = in;
        pidx[depth] = idx;
        depth++;
        in = hix_own_inner(w, &in->child[idx]);
        if (!in) return KVDB_ENOMEM;
    }
    l = HIX_NODE(in->child[idx]);
    rc = hix_leaf_find(w->rd, l, l->cap, tag, key, klen, &slot, NULL);
    if (rc <= 0) return rc < 0 ? rc : KVDB_NOTFOUND;
    l = hix_own_leaf(w, in, idx, l); /* a copy keeps every slot where it was */
    if (!l) return KVDB_ENOMEM;
    *old = hix_soff(hix_slots(l) + (size_t)slot * HIX_SLOT);
    hix_leaf_remove(l, slot);

    /* Shrink a sparse leaf. */
    if (l->cap > HIX_LEAF_MIN && l->count * 4 < l->cap && hix_cap_for(l->count) < l->cap) {
        hix_node *n = hix_leaf_from(w, l, hix_cap_for(l->count), -1, 0, 0);
        if (n) {
            n->ldepth = l->ldepth;
            hix_set_range(in, idx, l->ldepth, hix_mkref(n));
            hix_drop(w, l);
            l = n;
        }
    }
    /* Merge with a small buddy. */
    if (l->ldepth > 0) {
        unsigned d = l->ldepth, span = 1u << (6 - d), base = idx & ~(span - 1);
        hix_ref br = in->child[base ^ span];
        hix_node *b = HIX_NODE(br);
        if (HIX_CODE(br) && b->ldepth == d && l->count + b->count <= HIX_SPLIT_MAX / 2) {
            hix_node *m = hix_alloc(w, hix_cap_for(l->count + b->count));
            if (m) {
                const hix_node *src[2];
                unsigned k;
                uint32_t i;
                src[0] = l;
                src[1] = b;
                for (k = 0; k < 2; k++) {
                    const uint8_t *s = hix_slots(src[k]);
                    for (i = 0; i < src[k]->cap; i++, s += HIX_SLOT)
                        if (hix_stag(s)) hix_leaf_add(m, hix_stag(s), hix_soff(s));
                }
                m->ldepth = (uint8_t)(d - 1);
                hix_set_range(in, idx, d - 1, hix_mkref(m));
                hix_drop(w, l);
                hix_drop(w, b);
                l = m;
            }
        }
    }
    /* Fold an inner node that holds a single leaf into its parent. */
    if (l->ldepth == 0 && depth > 0) {
        hix_inner *p = path[depth - 1];
        l->ldepth = 6;
        p->child[pidx[depth - 1]] = hix_mkref(l);
        hix_drop(w, &in->h);
    }
    return KVDB_OK;
}

