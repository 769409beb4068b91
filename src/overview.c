/*
 * kvdb.c -- a single-file embedded key-value store.
 *
 * The whole engine is kvdb.c plus kvdb.h; its one dependency is xxhash.h
 * (header-only).  kvdb.c is generated from the modules in src/, listed at
 * its top; they follow the data, from the file layer the bytes go through
 * up to the public API.  This first one is prose: the on-disk format, then
 * the engine in memory.
 *
 * ==========================================================================
 * THE ON-DISK FORMAT
 *
 * A database is one file: a 64-byte header followed by records, appended and
 * never overwritten.  All integers are little-endian on every platform.
 *
 *   Header (64 bytes)
 *     [0,8)    magic "\x89KVDB\r\n\x1a" (the \x89 and \r\n\x1a catch text-mode
 *              mangling, as in PNG)
 *     [8,12)   u32 format version (1).  A newer version gives KVDB_EVERSION.
 *     [12,16)  u32 header size (64)
 *     [16,24)  u64 hash seed: random per database; seeds the key hash and,
 *              xored with a record's offset, the record checksums
 *     [24,40)  16-byte database id (random)
 *     [40,48)  u64 creation time (seconds since 1970; informational)
 *     [48,56)  u64 generation: 0 when created, +1 by every compaction (a
 *              compacted file keeps the seed and id; its header differs)
 *     [56,64)  u64 XXH3_64 of bytes [0,56), seed 0
 *
 *   Record (16-byte header, then key, then value; no padding)
 *     [0,8)    u64 check: XXH3_64 of bytes [8, 16+klen+vlen) with seed
 *              (hash seed ^ the record's file offset).  Mixing in the offset
 *              means a record copied or shifted elsewhere (an old tail, a
 *              misdirected write) never verifies.
 *     [8]      u8 type: 1 PUT, 2 DEL, 3 COMMIT
 *     [9]      u8 flags, zero
 *     [10,12)  u16 klen (1..65535 for PUT/DEL; 0 for COMMIT)
 *     [12,16)  u32 vlen (PUT: 0..2^30; DEL: 0; COMMIT: 24)
 *     then klen key bytes and vlen value bytes.
 *
 *   A transaction is its PUT and DEL records followed by one COMMIT record
 *   whose 24-byte payload is
 *     [0,8)    u64 sequence number (strictly increasing)
 *     [8,16)   u64 durable: how many bytes of the log were known to be on
 *              stable storage (synced) when this commit was written
 *     [16,20)  u32 number of PUT/DEL records in the transaction
 *     [20,24)  zero
 *   A transaction exists only if every one of its records and its COMMIT
 *   verify; it is then applied in record order (a later record for the same
 *   key wins).
 *
 * SEALS.  A seal is a COMMIT of no records whose durable field is its own
 * offset, written after a sync of everything before it.  kvdb_close,
 * kvdb_sync and kvdb_checkpoint append one when anything was committed
 * since the last (40 bytes; nothing otherwise); close and checkpoint sync it
 * too, and a compacted file ends with one, so a database at rest has no
 * ambiguous tail.  A seal needs no sync of its own to be true: lost, it
 * takes only its evidence with it.  To every reader of the format a seal is
 * an ordinary empty transaction, so files with seals open in versions that
 * predate them.
 *
 * THE DURABLE HORIZON H is how much of the log the files prove was once on
 * stable storage: the largest durable field of an intact COMMIT (a seal's
 * covers all before it), or the P of a sidecar whose header verifies for
 * this very log (a sidecar covers only synced log), whichever is larger.
 *
 * RECOVERY reads forward from the header, verifying every record.  At the
 * first record that is incomplete or fails to verify, at offset X, it asks
 * whether X is below the horizon: below the sidecar's P, or below the
 * durable field of an intact COMMIT further on.  If so, the damage is to
 * data once known durable: KVDB_ECORRUPT, and the file is not touched; so
 * is a file shorter than its sidecar's P (cut short).  If not, everything
 * from the end of the last complete transaction on is a torn tail --
 * writes that never reached the disk as a whole before a crash -- and is
 * cut off (on a writable open; a read-only open just ignores it).  The
 * durable field is what tells a torn group commit, whose pending writes may
 * land in any order, from damage to old data.  What a crash may leave
 * ambiguous is therefore only what nothing later vouches for: under
 * KVDB_SYNC_FULL the last group commit, under SYNC_NORMAL and SYNC_OFF the
 * commits after the last synced length that a COMMIT or seal recorded.
 * While a writer has the file open, the file may run on past the last
 * commit with zeros: space reserved ahead (kvdb_vfs.reserve), cut off at
 * close; after a crash they are part of the torn tail.
 *
 * ==========================================================================
 * THE ENGINE IN MEMORY
 *
 * The hash index maps the 64-bit key hash to the offset of the key's newest
 * record.  It is a copy-on-write radix tree over the top 30 bits of the
 * hash: inner nodes of 64 children, leaves that are small open-addressing
 * tables holding (32-bit tag, 64-bit offset) pairs.  A leaf may cover a
 * power-of-two range of its parent's children ("local depth", as in
 * extendible hashing); a full leaf grows (up to 128 slots) or splits in two,
 * so the index grows and shrinks one leaf at a time and no operation ever
 * rehashes the whole table.  Every node carries the write generation that
 * created it: a write transaction changes nodes of its own generation in
 * place and copies any other node it touches (path copying), so a commit
 * copies only the paths it changed and an open snapshot costs nothing extra.
 *
 * A version is an immutable root plus the log length it covers.  Readers
 * take the published version under a short lock (O(1)); the writer builds
 * the next version; nodes a version replaced are freed once no older version
 * is referenced.  Keys are never stored in memory: every probe whose tag
 * matches compares the full key in the log (and verifies that record), so
 * keys with colliding hashes work and memory per key does not depend on key
 * length.
 *
 * A write transaction collects its records, already encoded, in a buffer;
 * its write set (key -> position in that buffer) is a SmallMap: up to 8
 * entries inline, a hash table beyond.  Commit appends the buffer with one
 * write, updates the index, and publishes the new version -- under
 * KVDB_SYNC_FULL only after a sync that may cover several committers (group
 * commit).
 *
 * Key order is kept by the sorted index (sorted runs built lazily from the
 * log); the sidecar "<path>.idx" saves both indexes so that an open need
 * not replay the whole log.  Compaction writes the live records in key
 * order to "<path>.compact" and renames it over the database; versions,
 * mappings and readers name the file their offsets refer to, so snapshots
 * from before the swap go on reading the old file.  Every OS access goes
 * through the file layer.
 */

