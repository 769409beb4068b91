/* tools/kvbench/e_sqlite.c -- kvbench adapter for SQLite 3 (libsqlite3-dev). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>
#include "engine.h"

struct sq_db {
    char path[4096];
    int sync;
    sqlite3 *main;          /* the first connection: schema, WAL mode, last to close */
    pthread_mutex_t wmu;    /* one writing connection at a time (no SQLITE_BUSY sleeps) */
};

struct sq_ctx {
    struct sq_db *d;
    sqlite3 *c;
    sqlite3_stmt *begin_w, *begin_r, *commit, *ins, *sel, *del, *from, *all;
    int sel_live;           /* sel holds a row from the last get */
};

static int sq_fail(sqlite3 *c, const char *what)
{
    kvb_err("sqlite", what, c ? sqlite3_errmsg(c) : "error");
    return -1;
}

static sqlite3 *sq_conn(struct sq_db *d)
{
    sqlite3 *c = NULL;
    char sql[256];
    if (sqlite3_open_v2(d->path, &c, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL)
        != SQLITE_OK) {
        sq_fail(c, "sqlite3_open_v2");
        sqlite3_close(c);
        return NULL;
    }
    snprintf(sql, sizeof sql,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA cache_size=-65536;"
             " PRAGMA mmap_size=1073741824; PRAGMA temp_store=MEMORY;",
             d->sync ? "FULL" : "OFF");
    sqlite3_busy_timeout(c, 60000);
    if (sqlite3_exec(c, sql, NULL, NULL, NULL) != SQLITE_OK
        || sqlite3_exec(c, "CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID",
                        NULL, NULL, NULL) != SQLITE_OK) {
        sq_fail(c, "pragmas/schema");
        sqlite3_close(c);
        return NULL;
    }
    return c;
}

static void *sq_open(const struct kvb_conf *conf)
{
    struct sq_db *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    kvb_path(d->path, sizeof d->path, conf->dir, "sqlite.db");
    d->sync = conf->sync;
    pthread_mutex_init(&d->wmu, NULL);
    d->main = sq_conn(d);
    if (!d->main) {
        free(d);
        return NULL;
    }
    return d;
}

static int sq_close(void *db)
{
    struct sq_db *d = db;
    int rc = sqlite3_close(d->main);
    pthread_mutex_destroy(&d->wmu);
    free(d);
    return rc == SQLITE_OK ? 0 : -1;
}

static void sq_ctx_free(void *cv)
{
    struct sq_ctx *c = cv;
    sqlite3_finalize(c->begin_w);
    sqlite3_finalize(c->begin_r);
    sqlite3_finalize(c->commit);
    sqlite3_finalize(c->ins);
    sqlite3_finalize(c->sel);
    sqlite3_finalize(c->del);
    sqlite3_finalize(c->from);
    sqlite3_finalize(c->all);
    sqlite3_close(c->c);
    free(c);
}

static void *sq_ctx_new(void *db)
{
    struct sq_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->d = db;
    c->c = sq_conn(c->d);
    if (!c->c) {
        free(c);
        return NULL;
    }
    if (sqlite3_prepare_v2(c->c, "BEGIN IMMEDIATE", -1, &c->begin_w, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(c->c, "BEGIN", -1, &c->begin_r, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(c->c, "COMMIT", -1, &c->commit, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(c->c, "INSERT OR REPLACE INTO kv(k, v) VALUES(?1, ?2)", -1, &c->ins, NULL)
               != SQLITE_OK
        || sqlite3_prepare_v2(c->c, "SELECT v FROM kv WHERE k = ?1", -1, &c->sel, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(c->c, "DELETE FROM kv WHERE k = ?1", -1, &c->del, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(c->c, "SELECT k, v FROM kv WHERE k >= ?1 ORDER BY k", -1, &c->from, NULL)
               != SQLITE_OK
        || sqlite3_prepare_v2(c->c, "SELECT k, v FROM kv ORDER BY k", -1, &c->all, NULL) != SQLITE_OK) {
        sq_fail(c->c, "sqlite3_prepare_v2");
        sq_ctx_free(c);
        return NULL;
    }
    return c;
}

static int sq_step_done(struct sq_ctx *c, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : sq_fail(c->c, what);
}

static int sq_wbegin(void *cv)
{
    struct sq_ctx *c = cv;
    pthread_mutex_lock(&c->d->wmu);
    if (sq_step_done(c, c->begin_w, "BEGIN IMMEDIATE") != 0) {
        pthread_mutex_unlock(&c->d->wmu);
        return -1;
    }
    return 0;
}

static int sq_put(void *cv, const void *k, size_t kl, const void *v, size_t vl)
{
    struct sq_ctx *c = cv;
    sqlite3_bind_blob(c->ins, 1, k, (int)kl, SQLITE_STATIC);
    sqlite3_bind_blob(c->ins, 2, v, (int)vl, SQLITE_STATIC);
    return sq_step_done(c, c->ins, "INSERT");
}

static int sq_del(void *cv, const void *k, size_t kl)
{
    struct sq_ctx *c = cv;
    sqlite3_bind_blob(c->del, 1, k, (int)kl, SQLITE_STATIC);
    if (sq_step_done(c, c->del, "DELETE") != 0)
        return -1;
    return sqlite3_changes(c->c) ? 0 : 1;
}

static int sq_wcommit(void *cv)
{
    struct sq_ctx *c = cv;
    int rc = sq_step_done(c, c->commit, "COMMIT");
    pthread_mutex_unlock(&c->d->wmu);
    return rc;
}

static int sq_rbegin(void *cv)
{
    struct sq_ctx *c = cv;
    return sq_step_done(c, c->begin_r, "BEGIN");
}

static int sq_get(void *cv, const void *k, size_t kl, const void **v, size_t *vl)
{
    struct sq_ctx *c = cv;
    int rc;
    if (c->sel_live)
        sqlite3_reset(c->sel);
    c->sel_live = 0;
    sqlite3_bind_blob(c->sel, 1, k, (int)kl, SQLITE_STATIC);
    rc = sqlite3_step(c->sel);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(c->sel);
        return 1;
    }
    if (rc != SQLITE_ROW) {
        sqlite3_reset(c->sel);
        return sq_fail(c->c, "SELECT");
    }
    c->sel_live = 1;
    *v = sqlite3_column_blob(c->sel, 0);
    *vl = (size_t)sqlite3_column_bytes(c->sel, 0);
    return 0;
}

static int sq_rend(void *cv)
{
    struct sq_ctx *c = cv;
    if (c->sel_live)
        sqlite3_reset(c->sel);
    c->sel_live = 0;
    return sq_step_done(c, c->commit, "COMMIT (read)");
}

static int sq_scan(void *cv, const void *start, size_t sl, uint64_t max, kvb_scan_cb cb, void *arg)
{
    struct sq_ctx *c = cv;
    sqlite3_stmt *s = start ? c->from : c->all;
    uint64_t i;
    int rc = SQLITE_ROW;
    if (start)
        sqlite3_bind_blob(s, 1, start, (int)sl, SQLITE_STATIC);
    for (i = 0; i < max && (rc = sqlite3_step(s)) == SQLITE_ROW; i++) {
        if (cb(arg, sqlite3_column_blob(s, 0), (size_t)sqlite3_column_bytes(s, 0),
               sqlite3_column_blob(s, 1), (size_t)sqlite3_column_bytes(s, 1)))
            break;
    }
    sqlite3_reset(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sq_fail(c->c, "SELECT (scan)");
}

static int sq_compact(void *db)
{
    struct sq_db *d = db;
    int rc;
    pthread_mutex_lock(&d->wmu);
    rc = sqlite3_exec(d->main, "VACUUM", NULL, NULL, NULL);
    pthread_mutex_unlock(&d->wmu);
    return rc == SQLITE_OK ? 0 : sq_fail(d->main, "VACUUM");
}

const struct kvb_engine kvb_sqlite = {
    "sqlite",
    "SQLite " SQLITE_VERSION ": B-tree, WITHOUT ROWID table, WAL",
    "table kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID; journal_mode=WAL; prepared statements\n"
    "no-sync mode: synchronous=OFF (no fsync per commit); synced mode: synchronous=FULL\n"
    "  (WAL fsync per commit; writers serialized, no group commit)\n"
    "cache_size 64 MiB and mmap_size 1 GiB per connection, temp_store=MEMORY; one connection\n"
    "  per thread (SQLITE_OPEN_NOMUTEX), a process mutex around write transactions instead of\n"
    "  busy-waiting; batches: BEGIN IMMEDIATE + 1000 INSERT OR REPLACE + COMMIT; reads: BEGIN\n"
    "  + 1000 SELECTs + COMMIT, value read in place (sqlite3_column_blob)\n"
    "compaction (readseqc, seekscanc): VACUUM",
    KVB_READS | KVB_SNAPSHOT | KVB_THREADS | KVB_DURABLE | KVB_PERSIST | KVB_SAMECTX,
    NULL,
    NULL,
    sq_open, sq_close, sq_ctx_new, sq_ctx_free,
    sq_wbegin, sq_put, sq_del, sq_wcommit,
    sq_rbegin, sq_get, sq_rend,
    sq_scan,
    NULL,
    sq_compact
};
