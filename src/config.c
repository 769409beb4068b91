/* ======================================================================
 * SECTION: configuration and portability
 *
 * Compile-time switches:
 *   KVDB_NO_MMAP          read through the file layer (pread) only
 *   KVDB_NO_THREADS       no locks; one thread only
 *   KVDB_MALLOC/KVDB_REALLOC/KVDB_FREE   the default allocator (all or none)
 *   KVDB_TEST_HASH_BITS=n keep only the top n bits of every key hash, so
 *                         tests hit hash collisions constantly
 *   KVDB_CK_MIN_BYTES=n   log growth that may trigger an automatic
 *                         checkpoint (default 64 MiB; tests make it small)
 *   KVDB_NO_PREALLOC      the POSIX layer does not reserve log space
 *                         ahead (a sparse extension); see kvdb_vfs.reserve
 * ====================================================================== */
#if !defined(_WIN32)
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE 1
#endif
/* 64-bit file offsets on 32-bit hosts too (off_t, pread, ftruncate, fstat):
 * the file layer refuses to build with a narrower off_t (vfs_posix.c) */
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif
#endif

#include "kvdb.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <assert.h>

#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/file.h>
#ifndef KVDB_NO_MMAP
#include <sys/mman.h>
#endif

#define XXH_INLINE_ALL
#include <xxhash.h>

#ifndef KVDB_CK_MIN_BYTES /* tests lower it to run checkpoints constantly */
#define KVDB_CK_MIN_BYTES ((uint64_t)64 << 20)
#endif

#if defined(KVDB_MALLOC) || defined(KVDB_REALLOC) || defined(KVDB_FREE)
#if !defined(KVDB_MALLOC) || !defined(KVDB_REALLOC) || !defined(KVDB_FREE)
#error "define all of KVDB_MALLOC, KVDB_REALLOC and KVDB_FREE, or none"
#endif
#else
#define KVDB_MALLOC(n) malloc(n)
#define KVDB_REALLOC(p, n) realloc(p, n)
#define KVDB_FREE(p) free(p)
#endif

#ifndef KVDB_NO_THREADS
#include <pthread.h>
typedef pthread_mutex_t kv_mutex;
typedef pthread_cond_t kv_cond;
typedef pthread_t kv_thread;
#define kv_mutex_init(m) pthread_mutex_init(m, NULL)
#define kv_mutex_free(m) pthread_mutex_destroy(m)
#define kv_lock(m) pthread_mutex_lock(m)
#define kv_trylock(m) (pthread_mutex_trylock(m) == 0) /* 1: taken */
#define kv_unlock(m) pthread_mutex_unlock(m)
#define kv_cond_init(c) pthread_cond_init(c, NULL)
#define kv_cond_free(c) pthread_cond_destroy(c)
#define kv_wait(c, m) pthread_cond_wait(c, m)
#define kv_broadcast(c) pthread_cond_broadcast(c)
#define kv_self() pthread_self()
#define kv_same_thread(a, b) pthread_equal(a, b)
#else
typedef int kv_mutex;
typedef int kv_cond;
typedef int kv_thread;
#define kv_mutex_init(m) (*(m) = 0)
#define kv_mutex_free(m) ((void)(m))
#define kv_lock(m) ((void)(m))
#define kv_trylock(m) ((void)(m), 1)
#define kv_unlock(m) ((void)(m))
#define kv_cond_init(c) (*(c) = 0)
#define kv_cond_free(c) ((void)(c))
#define kv_wait(c, m) ((void)(c), (void)(m))
#define kv_broadcast(c) ((void)(c))
#define kv_self() 0
#define kv_same_thread(a, b) ((a) == (b))
#endif

#if defined(KVDB_NO_THREADS)
#define KV_TLS
#elif defined(__GNUC__) || defined(__clang__)
#define KV_TLS __thread
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define KV_TLS _Thread_local
#else
#define KV_TLS /* messages shared between threads: best effort */
#endif

#if defined(__GNUC__) || defined(__clang__)
#define KV_PREFETCH(p) __builtin_prefetch(p)
#define KV_LIKELY(x) __builtin_expect(!!(x), 1)
#define KV_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define KV_PREFETCH(p) ((void)(p))
#define KV_LIKELY(x) (x)
#define KV_UNLIKELY(x) (x)
#endif

/* Little-endian loads and stores, identical on every host. */
static uint16_t kv_ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t kv_ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t kv_ld64(const uint8_t *p) { return (uint64_t)kv_ld32(p) | ((uint64_t)kv_ld32(p + 4) << 32); }
static void kv_st16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void kv_st32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static void kv_st64(uint8_t *p, uint64_t v) { kv_st32(p, (uint32_t)v); kv_st32(p + 4, (uint32_t)(v >> 32)); }

