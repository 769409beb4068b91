# kvdb -- build, test, benchmark.
#
#   make            regenerate kvdb.c from src/ (tools/amalgamate) if it differs,
#                   then build tools/kvdb (the command-line tool) and tools/kvdb-bench
#   make demo       build and run the command-line tool on ./demo.db
#   make test       the whole test suite (plain, ASan+UBSan, 4-bit hashes, TSan,
#                   and each libFuzzer target for FUZZ_TEST_SECONDS under clang);
#                   it fails if the committed kvdb.c is not what src/ generates
#   make amalgamate regenerate kvdb.c from the modules in src/ (only that)
#   make fuzz       the libFuzzer targets for FUZZ_SECONDS each (corpora kept in build/fuzz/corpus):
#                   fuzz_open (bytes as the database file), fuzz_ops (API operation
#                   sequences against a model), fuzz_sidecar (bytes, or patches of a
#                   valid one, as the sidecar of an intact database)
#   make soak       the reliability tests (crash, crashsim, fault, model, sidecar) with
#                   SOAK_SCALE (10) times their work, then make fuzz's runs; not part
#                   of make test; ends with "N passed, N failed" like it
#   make coverage   line and branch coverage of kvdb.c by the test programs (gcov)
#   make bench      the micro-benchmark, the compaction benchmark, then kvbench against the peers (not part of the tests)
#   make kvbench    build tools/kvbench/kvbench (kvdb side by side with LMDB, RocksDB, ...)
#   make bench-deps install the peers kvbench can compare against (Debian packages)

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    := -std=c99 -Wall -Wextra -Wpedantic -Wshadow
LDLIBS  := -lpthread
B       := build

ENGINE  := kvdb.c kvdb.h
# kvdb.c is generated from these (tools/amalgamate) and committed; make test
# tests the committed kvdb.c and checks that it is up to date
SRC     := $(wildcard src/*.c)
TESTS   := unit api model iter crash sidecar threads crashsim fault compact check

.PHONY: all amalgamate tools demo test test-build fuzz fuzz-corpus soak coverage bench bench-kvdb bench-compact bench-peers bench-deps kvbench clean install

# first kvdb.c from src/, then what is built from it (two steps, so that a
# parallel make never compiles the old kvdb.c)
all:
	@sh tools/amalgamate
	@$(MAKE) --no-print-directory tools

amalgamate:
	@sh tools/amalgamate

tools: tools/kvdb tools/kvdb-bench tools/kvdb-compact-bench

$(B):
	@mkdir -p $(B)

$(B)/kvdb.o: $(ENGINE) | $(B)
	$(CC) $(WARN) $(CFLAGS) -c kvdb.c -o $@

tools/kvdb: tools/kvdb.c $(B)/kvdb.o
	$(CC) $(WARN) $(CFLAGS) -I. tools/kvdb.c $(B)/kvdb.o -o $@ $(LDLIBS)

tools/kvdb-bench: tools/bench.c $(B)/kvdb.o
	$(CC) $(WARN) $(CFLAGS) -I. tools/bench.c $(B)/kvdb.o -o $@ $(LDLIBS)

tools/kvdb-compact-bench: tools/compact_bench.c $(B)/kvdb.o
	$(CC) $(WARN) $(CFLAGS) -I. tools/compact_bench.c $(B)/kvdb.o -o $@ $(LDLIBS)

demo: tools/kvdb
	./tools/kvdb demo.db put hello world
	./tools/kvdb demo.db put greeting 'hi\x00there'
	./tools/kvdb demo.db get hello
	./tools/kvdb demo.db get greeting
	./tools/kvdb demo.db stat

# ---- tests -------------------------------------------------------------
# Every test program is built in four flavours:
#   plain    -O2
#   asan     -O1 -fsanitize=address,undefined
#   hash4    -O2 -DKVDB_TEST_HASH_BITS=4 (hashes collide constantly)
#   tsan     -O1 -fsanitize=thread (threads and compact tests; checkpoints run constantly)
#   nommap   -DKVDB_NO_MMAP under ASan+UBSan: the pread path
#   nothreads -DKVDB_NO_THREADS: the build without locks
#   m32      -m32 -O2: a 32-bit host (32-bit pointers and size_t; the file
#            offsets must stay 64-bit), when $(CC) can build for it
#            (Debian: gcc-multilib; a FAIL line says so if it cannot)
# bigfile (offsets past 4 GiB in sparse files) runs plain and m32 only.
# Test programs #include "../kvdb.c" so they can reach internals; they print
# "ok NAME" / "FAIL NAME: why" lines that test/run.sh counts.
TFLAGS_plain := -O2 -g
TFLAGS_asan  := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
TFLAGS_hash4 := -O2 -g -DKVDB_TEST_HASH_BITS=4
TFLAGS_tsan  := -O1 -g -fsanitize=thread -DKVDB_CK_MIN_BYTES=65536
TFLAGS_nommap    := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -DKVDB_NO_MMAP
TFLAGS_nothreads := -O2 -g -DKVDB_NO_THREADS
TFLAGS_m32       := -m32 -O2 -g
NOMMAP_TESTS    := unit api model iter crash sidecar compact check
NOTHREADS_TESTS := api model compact
TSAN_TESTS      := threads compact
PLAIN_TESTS     := bigfile
M32_TESTS       := unit api model iter crash check bigfile
M32_OK := $(shell printf 'int main(void){return 0;}\n' | $(CC) -m32 -x c - -o /dev/null -lpthread >/dev/null 2>&1 && echo y)

define test_rule
$(B)/$(2)/$(1): test/$(1).c test/testutil.h $(ENGINE) | $(B)
	@mkdir -p $(B)/$(2)
	$(CC) $(WARN) -Wno-unused-function $(TFLAGS_$(2)) -I. test/$(1).c -o $$@ $(LDLIBS)
endef
$(foreach t,$(TESTS),$(foreach f,plain asan hash4,$(eval $(call test_rule,$(t),$(f)))))
$(foreach t,$(TSAN_TESTS),$(eval $(call test_rule,$(t),tsan)))
$(foreach t,$(NOMMAP_TESTS),$(eval $(call test_rule,$(t),nommap)))
$(foreach t,$(NOTHREADS_TESTS),$(eval $(call test_rule,$(t),nothreads)))
$(foreach t,$(PLAIN_TESTS),$(eval $(call test_rule,$(t),plain)))
$(foreach t,$(M32_TESTS),$(eval $(call test_rule,$(t),m32)))

TEST_BINS := $(foreach f,plain asan hash4,$(foreach t,$(TESTS),$(B)/$(f)/$(t))) $(foreach t,$(TSAN_TESTS),$(B)/tsan/$(t)) \
             $(foreach t,$(NOMMAP_TESTS),$(B)/nommap/$(t)) $(foreach t,$(NOTHREADS_TESTS),$(B)/nothreads/$(t)) \
             $(foreach t,$(PLAIN_TESTS),$(B)/plain/$(t)) $(if $(M32_OK),$(foreach t,$(M32_TESTS),$(B)/m32/$(t)))

test-build: $(TEST_BINS) tools/kvdb

# the test programs build in parallel (JOBS=1 for one at a time)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
test:
	@$(MAKE) --no-print-directory -j$(JOBS) test-build
	@FUZZ_TEST_SECONDS=$(FUZZ_TEST_SECONDS) TESTS="$(TESTS)" NOMMAP_TESTS="$(NOMMAP_TESTS)" \
	    NOTHREADS_TESTS="$(NOTHREADS_TESTS)" TSAN_TESTS="$(TSAN_TESTS)" PLAIN_TESTS="$(PLAIN_TESTS)" \
	    M32_TESTS="$(M32_TESTS)" M32_OK="$(M32_OK)" sh test/run.sh $(B)

# ---- fuzzing (clang + libFuzzer; test/fuzz/run.sh builds the targets) ----
FUZZ_TEST_SECONDS ?= 25
FUZZ_SECONDS      ?= 600
fuzz:
	@mkdir -p $(B)/fuzz/corpus
	FUZZ_KEEP=$(B)/fuzz/corpus sh test/fuzz/run.sh $(B) $(FUZZ_SECONDS)

# regenerate the seed corpora in test/fuzz/corpus_*/ (deterministic; the
# corpus_sidecar seeds are made from fuzz_sidecar.h's database)
fuzz-corpus: | $(B)
	$(CC) $(WARN) -Wno-unused-function -O1 -I. test/fuzz/mkcorpus.c -o $(B)/mkcorpus $(LDLIBS)
	@mkdir -p test/fuzz/corpus_open test/fuzz/corpus_ops test/fuzz/corpus_sidecar
	./$(B)/mkcorpus test/fuzz

# ---- soak (not part of make test) ---------------------------------------
# The reliability tests with env KVDB_TEST_SCALE=SOAK_SCALE (testutil.h:
# more workloads and seeds, sampled checks made exhaustive; roughly
# SOAK_SCALE times their make test time) in the plain, asan and hash4
# flavours and through pread, then each libFuzzer target for FUZZ_SECONDS
# with the corpora kept as by make fuzz.  A quick trial:
#   make soak SOAK_SCALE=2 FUZZ_SECONDS=30
SOAK_SCALE  ?= 10
SOAK_TESTS  := crash crashsim fault model sidecar
SOAK_NOMMAP := crash model sidecar
soak:
	@$(MAKE) --no-print-directory -j$(JOBS) $(foreach f,plain asan hash4,$(foreach t,$(SOAK_TESTS),$(B)/$(f)/$(t))) \
	    $(foreach t,$(SOAK_NOMMAP),$(B)/nommap/$(t))
	@mkdir -p $(B)/fuzz/corpus
	@KVDB_TEST_SCALE=$(SOAK_SCALE) FUZZ_TEST_SECONDS=$(FUZZ_SECONDS) FUZZ_KEEP=$(B)/fuzz/corpus CLI_TEST=0 \
	    TESTS="$(SOAK_TESTS)" NOMMAP_TESTS="$(SOAK_NOMMAP)" NOTHREADS_TESTS= TSAN_TESTS= PLAIN_TESTS= M32_TESTS= \
	    sh test/run.sh $(B)

# ---- coverage (gcc --coverage; not part of make test) --------------------
# Every test program (plain flavour, -O0) runs once; the line and branch
# counts of the engine (src/, through kvdb.c's #line directives) of all of
# them are merged (a line or branch counts as covered if any program covered
# it).  Per-line detail: $(B)/cov/kvdb.c.gcov.*
COV_TESTS := $(TESTS)
coverage: | $(B)
	@rm -rf $(B)/cov && mkdir -p $(B)/cov
	@for t in $(COV_TESTS); do \
	    $(CC) $(WARN) -Wno-unused-function -O0 -g --coverage -I. test/$$t.c -o $(B)/cov/$$t $(LDLIBS) || exit 1; \
	done
	@for t in $(COV_TESTS); do \
	    printf '== cov/%s\n' $$t; \
	    KVDB_TEST_FLAVOUR=plain ./$(B)/cov/$$t | grep -c '^ok ' | sed 's/^/   ok lines: /'; \
	done
	@for t in $(COV_TESTS); do \
	    gcov -b -c -t -o $(B)/cov $(B)/cov/$$t.gcda 2>/dev/null | \
	        awk '/:    0:Source:/ { keep = ($$0 ~ /src\/[a-z_]+\.c$$/) } keep' > $(B)/cov/kvdb.c.gcov.$$t; \
	done; \
	cd $(B)/cov && \
	awk -F: ' \
	    /:    0:Source:/ { f = $$4; next } \
	    /^ *(-|#####|=====|[0-9]+\*?):/ { c = $$1; gsub(/ /, "", c); ln = $$2 + 0; if (ln == 0) next; ln = f ":" ln; \
	        if (c != "-") { exe[ln] = 1; if (c ~ /^[0-9]/) hit[ln] = 1 } bi = 0; next } \
	    /^branch/ { key = ln ":" bi++; br[key] = 1; if ($$0 ~ /taken [1-9]/) bt[key] = 1; next } \
	    END { for (l in exe) { nl++; if (l in hit) hl++ } for (b in br) { nb++; if (b in bt) hb++ } \
	        printf "engine (src/) coverage (all test programs): lines %d/%d (%.1f%%), branches %d/%d (%.1f%%)\n", \
	            hl, nl, 100 * hl / nl, hb, nb, 100 * hb / nb }' kvdb.c.gcov.*

# ---- benchmarks (not part of the tests) ---------------------------------
# kvbench: one adapter per engine in tools/kvbench/; a peer's adapter is built
# only when its header is found (make bench-deps installs them), so kvbench
# builds with whatever is installed.  KVBENCH_ARGS passes options, e.g.
#   make bench-peers KVBENCH_ARGS='-n 10M --engines kvdb,lmdb,rocksdb,tkrzw-hash'
KVB_HAVE = $(shell printf '\043include <$(1)>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo y)
KVB_SRC     := tools/kvbench/e_kvdb.c tools/kvbench/e_base.c
KVB_DEFS    :=
KVB_LIBS    :=
ifeq ($(call KVB_HAVE,lmdb.h),y)
KVB_SRC  += tools/kvbench/e_lmdb.c
KVB_DEFS += -DHAVE_LMDB
KVB_LIBS += -llmdb
endif
ifeq ($(call KVB_HAVE,leveldb/c.h),y)
KVB_SRC  += tools/kvbench/e_leveldb.c
KVB_DEFS += -DHAVE_LEVELDB
KVB_LIBS += -lleveldb
endif
ifeq ($(call KVB_HAVE,rocksdb/c.h),y)
KVB_SRC  += tools/kvbench/e_rocksdb.c
KVB_DEFS += -DHAVE_ROCKSDB
# its version macros are in a C++ header: take the Debian package's version
KVB_RK_VER := $(shell dpkg-query -W -f '$${Version}' librocksdb-dev 2>/dev/null | sed 's/[^0-9A-Za-z.+~-]//g')
ifneq ($(KVB_RK_VER),)
$(B)/kvbench/e_rocksdb.o: KVB_ADAPTER_DEFS := -DRK_VERSION='"$(KVB_RK_VER)"'
endif
KVB_LIBS += -lrocksdb
endif
ifeq ($(call KVB_HAVE,sqlite3.h),y)
KVB_SRC  += tools/kvbench/e_sqlite.c
KVB_DEFS += -DHAVE_SQLITE
KVB_LIBS += -lsqlite3
endif
ifeq ($(call KVB_HAVE,tkrzw_langc.h),y)
KVB_SRC  += tools/kvbench/e_tkrzw.c
KVB_DEFS += -DHAVE_TKRZW
KVB_LIBS += -ltkrzw
endif
ifeq ($(call KVB_HAVE,kclangc.h),y)
KVB_SRC  += tools/kvbench/e_kyoto.c
KVB_DEFS += -DHAVE_KYOTO
KVB_LIBS += -lkyotocabinet
endif
ifeq ($(call KVB_HAVE,gdbm.h),y)
KVB_SRC  += tools/kvbench/e_gdbm.c
KVB_DEFS += -DHAVE_GDBM
KVB_LIBS += -lgdbm
endif
KVB_OBJ := $(patsubst tools/kvbench/%.c,$(B)/kvbench/%.o,$(KVB_SRC))

# Peer headers are compiled with the same warnings; any -Wno-... a header
# needs goes on that adapter's line alone.
$(B)/kvbench/%.o: tools/kvbench/%.c tools/kvbench/engine.h kvdb.h | $(B)
	@mkdir -p $(B)/kvbench
	$(CC) $(WARN) $(CFLAGS) $(KVB_ADAPTER_DEFS) -I. -Itools/kvbench -c $< -o $@

tools/kvbench/kvbench: tools/kvbench.c tools/kvbench/engine.h $(KVB_OBJ) $(B)/kvdb.o
	$(CC) $(WARN) $(CFLAGS) $(KVB_DEFS) -I. tools/kvbench.c $(KVB_OBJ) $(B)/kvdb.o -o $@ $(KVB_LIBS) -lm $(LDLIBS)

kvbench: tools/kvbench/kvbench

# make bench: the kvdb micro-benchmark, then kvbench (all installed engines).
bench: bench-kvdb bench-compact bench-peers

bench-kvdb: tools/kvdb-bench
	./tools/kvdb-bench

bench-compact: tools/kvdb-compact-bench
	./tools/kvdb-compact-bench

bench-peers: tools/kvbench/kvbench
	./tools/kvbench/kvbench $(KVBENCH_ARGS)

# The peers kvbench compares against, and gnuplot for its chart (Debian).
bench-deps:
	apt-get update
	apt-get install -y liblmdb-dev librocksdb-dev libleveldb-dev libsqlite3-dev \
		libtkrzw-dev libkyotocabinet-dev libgdbm-dev gnuplot-nox

# make install [PREFIX=/usr/local] [DESTDIR=...]: the tool, the header, and
# the engine's source (to compile into a program) in share/kvdb.
PREFIX ?= /usr/local
install: tools/kvdb
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/share/kvdb
	install -m 755 tools/kvdb $(DESTDIR)$(PREFIX)/bin/kvdb
	install -m 644 kvdb.h $(DESTDIR)$(PREFIX)/include/kvdb.h
	install -m 644 kvdb.c kvdb.h $(DESTDIR)$(PREFIX)/share/kvdb/

clean:
	rm -rf $(B) tools/kvdb tools/kvdb-bench tools/kvdb-compact-bench tools/kvbench/kvbench
