# kvdb -- build, test, benchmark.
#
#   make            build tools/kvdb (the command-line tool) and tools/kvdb-bench
#   make demo       build and run the command-line tool on ./demo.db
#   make test       the whole test suite (plain, ASan+UBSan, 4-bit hashes, TSan)
#   make bench      the micro-benchmark (not part of the tests)

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    := -std=c99 -Wall -Wextra -Wpedantic -Wshadow
LDLIBS  := -lpthread
B       := build

ENGINE  := kvdb.c kvdb.h
TESTS   := unit api model crash threads

.PHONY: all demo test test-build bench clean install

all: tools/kvdb tools/kvdb-bench

$(B):
	@mkdir -p $(B)

$(B)/kvdb.o: $(ENGINE) | $(B)
	$(CC) $(WARN) $(CFLAGS) -c kvdb.c -o $@

tools/kvdb: tools/kvdb.c $(B)/kvdb.o
	$(CC) $(WARN) $(CFLAGS) -I. tools/kvdb.c $(B)/kvdb.o -o $@ $(LDLIBS)

tools/kvdb-bench: tools/bench.c $(B)/kvdb.o
	$(CC) $(WARN) $(CFLAGS) -I. tools/bench.c $(B)/kvdb.o -o $@ $(LDLIBS)

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
#   tsan     -O1 -fsanitize=thread (threads test only)
# Test programs #include "../kvdb.c" so they can reach internals; they print
# "ok NAME" / "FAIL NAME: why" lines that test/run.sh counts.
TFLAGS_plain := -O2 -g
TFLAGS_asan  := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
TFLAGS_hash4 := -O2 -g -DKVDB_TEST_HASH_BITS=4
TFLAGS_tsan  := -O1 -g -fsanitize=thread

define test_rule
$(B)/$(2)/$(1): test/$(1).c test/testutil.h $(ENGINE) | $(B)
	@mkdir -p $(B)/$(2)
	$(CC) $(WARN) -Wno-unused-function $(TFLAGS_$(2)) -I. test/$(1).c -o $$@ $(LDLIBS)
endef
$(foreach t,$(TESTS),$(foreach f,plain asan hash4,$(eval $(call test_rule,$(t),$(f)))))
$(eval $(call test_rule,threads,tsan))

TEST_BINS := $(foreach f,plain asan hash4,$(foreach t,$(TESTS),$(B)/$(f)/$(t))) $(B)/tsan/threads

test-build: $(TEST_BINS) tools/kvdb

test: test-build
	@sh test/run.sh $(B)

bench: tools/kvdb-bench
	./tools/kvdb-bench

PREFIX ?= /usr/local
install: tools/kvdb
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include
	install -m 755 tools/kvdb $(DESTDIR)$(PREFIX)/bin/kvdb
	install -m 644 kvdb.h $(DESTDIR)$(PREFIX)/include/kvdb.h

clean:
	rm -rf $(B) tools/kvdb tools/kvdb-bench
