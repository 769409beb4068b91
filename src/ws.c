/* ======================================================================
 * SECTION: write set (SmallMap)
 *
 * Key -> position of the key's newest record in the transaction buffer.
 * Positions are stored plus one, so 0 marks an empty table slot.  Up to
 * WS_INLINE keys: inline array, linear scan, no allocation.  Beyond: an
 * open-addressing table at most half full, kept between transactions
 * unless it grew past 4096 slots.  Keys are compared in the buffer.
 * ====================================================================== */
static int ws_keyeq(const uint8_t *wb, uint64_t pos, const void *key, size_t klen)
{
    return kv_ld16(wb + pos + 10) == klen && memcmp(wb + pos + LG_REC, key, klen) == 0;
}

static uint32_t ws_home(uint64_t h, uint32_t cap)
{
    return (uint32_t)((h * 0x9E3779B97F4A7C15ull) >> 40) & (cap - 1);
}

static ws_ent *ws_find(kv_ws *ws, const uint8_t *wb, uint64_t h, const void *key, size_t klen)
{
    uint32_t i, mask;
    if (!ws->promoted) {
        for (i = 0; i < ws->n; i++)
            if (ws->inl[i].h == h && ws_keyeq(wb, ws->inl[i].pos - 1, key, klen)) return &ws->inl[i];
        return NULL;
    }
    mask = ws->cap - 1;
    for (i = ws_home(h, ws->cap); ws->tab[i].pos; i = (i + 1) & mask)
        if (ws->tab[i].h == h && ws_keyeq(wb, ws->tab[i].pos - 1, key, klen)) return &ws->tab[i];
    return NULL;
}

static void ws_tab_add(ws_ent *tab, uint32_t cap, uint64_t h, uint64_t pos1)
{
    uint32_t i = ws_home(h, cap);
    while (tab[i].pos) i = (i + 1) & (cap - 1);
    tab[i].h = h;
    tab[i].pos = pos1;
}

static int ws_add(kvdb *db, kv_ws *ws, uint64_t h, uint64_t pos)
{
    uint32_t i;
    if (!ws->promoted && ws->n < WS_INLINE) {
        ws->inl[ws->n].h = h;
        ws->inl[ws->n].pos = pos + 1;
        ws->n++;
        return KVDB_OK;
    }
    if (!ws->promoted || (ws->n + 1) * 2 > ws->cap) {
        uint32_t ncap = ws->promoted ? ws->cap * 2 : (ws->cap ? ws->cap : 32);
        ws_ent *nt;
        if (ws->promoted && ncap < ws->cap) return kv_err(KVDB_ENOMEM, "transaction too large");
        nt = (ws_ent *)kv_malloc(&db->al, (size_t)ncap * sizeof *nt);
        if (!nt) return kv_err(KVDB_ENOMEM, "out of memory for the write set");
        memset(nt, 0, (size_t)ncap * sizeof *nt);
        if (ws->promoted) {
            for (i = 0; i < ws->cap; i++)
                if (ws->tab[i].pos) ws_tab_add(nt, ncap, ws->tab[i].h, ws->tab[i].pos);
        } else {
            for (i = 0; i < ws->n; i++) ws_tab_add(nt, ncap, ws->inl[i].h, ws->inl[i].pos);
        }
        kv_free(&db->al, ws->tab);
        ws->tab = nt;
        ws->cap = ncap;
        ws->promoted = 1;
    }
    ws_tab_add(ws->tab, ws->cap, h, pos + 1);
    ws->n++;
    return KVDB_OK;
}

static void ws_reset(kvdb *db, kv_ws *ws)
{
    if (ws->promoted) {
        if (ws->cap > 4096) {
            kv_free(&db->al, ws->tab);
            ws->tab = NULL;
            ws->cap = 0;
        } else {
            memset(ws->tab, 0, (size_t)ws->cap * sizeof *ws->tab);
        }
    }
    ws->promoted = 0;
    ws->n = 0;
}

