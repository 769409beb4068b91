/*
 * testutil.h -- the small vocabulary shared by kvdb's test programs.
 *
 * A test program #includes "../kvdb.c" (so it can reach internals) and then
 * this file.  Each test is a function run by RUN(name); inside it CHECK(cond)
 * and CHECK_RC(expr, rc) record failures without aborting the test.  RUN
 * prints "ok NAME" or "FAIL NAME: first failure" -- test/run.sh counts those
 * lines -- and TEST_MAIN_END returns non-zero if anything failed.
 *
 * Scratch files go in a fresh directory made by tu_tmpdir() under $TMPDIR
 * (default /tmp); tu_path(name) builds a path inside it.
 *
 * Env KVDB_TEST_SCALE=N (make soak): the reliability tests do about N times
 * their work (tu_scale()); unset or 1 is make test's amount.
 */
#ifndef KVDB_TESTUTIL_H
#define KVDB_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/types.h>

static int tu_failed_total;      /* failed tests in this program */
static int tu_passed_total;
static int tu_cur_failed;        /* failures inside the running test */
static char tu_cur_msg[512];
static char tu_dir[512];

static void tu_fail(const char *file, int line, const char *fmt, ...)
{
    if (tu_cur_failed++ == 0) {
        va_list ap;
        int n = snprintf(tu_cur_msg, sizeof tu_cur_msg, "%s:%d: ", file, line);
        va_start(ap, fmt);
        vsnprintf(tu_cur_msg + n, sizeof tu_cur_msg - (size_t)n, fmt, ap);
        va_end(ap);
    }
}

#define CHECK(c) do { if (!(c)) tu_fail(__FILE__, __LINE__, "CHECK(%s)", #c); } while (0)
#define CHECK_RC(expr, want) do { int rc_ = (expr); if (rc_ != (want)) \
    tu_fail(__FILE__, __LINE__, "%s = %d (%s), want %d (%s) [%s]", #expr, rc_, \
            kvdb_strerror(rc_), (want), kvdb_strerror(want), kvdb_errmsg()); } while (0)
#define CHECK_OK(expr) CHECK_RC(expr, KVDB_OK)
/* stop the current test function early after a failure */
#define REQUIRE(c) do { if (!(c)) { tu_fail(__FILE__, __LINE__, "REQUIRE(%s)", #c); return; } } while (0)
#define REQUIRE_OK(expr) do { int rq_ = (expr); if (rq_ != KVDB_OK) { tu_fail(__FILE__, __LINE__, \
    "%s = %d (%s) [%s]", #expr, rq_, kvdb_strerror(rq_), kvdb_errmsg()); return; } } while (0)

#define RUN(fn) do { tu_cur_failed = 0; tu_cur_msg[0] = 0; fn(); \
    if (tu_cur_failed) { tu_failed_total++; printf("FAIL %s: %s\n", #fn, tu_cur_msg); } \
    else { tu_passed_total++; printf("ok %s\n", #fn); } fflush(stdout); } while (0)

#define TEST_MAIN_END() do { return tu_failed_total ? 1 : 0; } while (0)

/* The sidecar is written only on 64-bit little-endian hosts so far
 * (sc_layout: its leaves are the in-memory layout); a test of the sidecar
 * itself returns at once elsewhere, and says so. */
#define TU_SKIP_WITHOUT_SIDECAR() do { if (!sc_layout()) { \
    printf("# %s: skipped: this host writes no sidecar\n", __func__); return; } } while (0)

static void tu_tmpdir(const char *prog)
{
    const char *t = getenv("TMPDIR");
    snprintf(tu_dir, sizeof tu_dir, "%s/kvdb-%s-XXXXXX", t && *t ? t : "/tmp", prog);
    if (!mkdtemp(tu_dir)) { perror("mkdtemp"); exit(2); }
}

static const char *tu_path(const char *name)
{
    static char buf[4][600];
    static int i;
    i = (i + 1) & 3;
    snprintf(buf[i], sizeof buf[i], "%s/%s", tu_dir, name);
    return buf[i];
}

static void tu_rmrf(void)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tu_dir);
    if (system(cmd) != 0) { /* best effort */ }
}

/* The log file of an open handle may run past stat.file_bytes by the
 * space reserved ahead (kvdb_vfs.reserve: at most 8 MiB + 64 KiB), and
 * those bytes are zeros.  Returns NULL if that holds for path, else why. */
static const char *tu_reserved_ok(const char *path, unsigned long long file_bytes)
{
    static char why[200];
    FILE *f = fopen(path, "rb");
    unsigned long long size, off;
    unsigned char buf[4096];
    if (!f) return "cannot open the file";
    fseek(f, 0, SEEK_END);
    size = (unsigned long long)ftell(f);
    if (size < file_bytes || size - file_bytes > (8ull << 20) + 65536) {
        fclose(f);
        snprintf(why, sizeof why, "file size %llu, stat.file_bytes %llu", size, file_bytes);
        return why;
    }
    fseek(f, (long)file_bytes, SEEK_SET);
    for (off = file_bytes; off < size;) {
        size_t n = fread(buf, 1, sizeof buf, f), i;
        if (n == 0) break;
        for (i = 0; i < n; i++)
            if (buf[i]) {
                fclose(f);
                snprintf(why, sizeof why, "byte %llu past stat.file_bytes %llu is %u, not a reserved zero",
                         off + i, file_bytes, buf[i]);
                return why;
            }
        off += n;
    }
    fclose(f);
    return NULL;
}

/* Copy from to to: the first len bytes, or all of it if len < 0.  Returns
 * 0, or -1 if a file could not be opened, read or written. */
static int tu_copy_file(const char *from, const char *to, long len)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    char buf[65536];
    long done = 0;
    size_t n;
    int rc = 0;
    if (!a || !b) { if (a) fclose(a); if (b) fclose(b); return -1; }
    while ((len < 0 || done < len) && (n = fread(buf, 1, sizeof buf, a)) > 0) {
        if (len >= 0 && done + (long)n > len) n = (size_t)(len - done);
        if (fwrite(buf, 1, n, b) != n) rc = -1;
        done += (long)n;
    }
    if (ferror(a)) rc = -1;
    fclose(a);
    if (fclose(b) != 0) rc = -1;
    return rc;
}

/* KVDB_TEST_SCALE: 1 (the default) .. 10000 */
static long tu_scale(void)
{
    const char *e = getenv("KVDB_TEST_SCALE");
    long n = e && *e ? strtol(e, NULL, 10) : 1;
    return n < 1 ? 1 : n > 10000 ? 10000 : n;
}

/* xorshift64* -- deterministic per seed */
static uint64_t tu_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

#endif
