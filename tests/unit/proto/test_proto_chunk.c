/* test_proto_chunk.c — chunked artifact transfer: the binary chunk codec and its malformed
 * cases, the sender (clipping, wrong artifact, beyond the end), and the receiver over a lossy
 * simulated link (chunks dropped, duplicated, reordered; one corrupted -> EFC_EHASH and a clean
 * retry), flow control (never more than N outstanding), resume after a "restart" (fini without
 * checkpoint, reopen), a damaged bitmap file (fresh start), and foreign/misaligned chunks. Every
 * completed file is compared byte for byte and by SHA-256 with the source. Seeds printed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_sha256.h"
#include "proto/chunk.h"

#define ART_BYTES 300007u /* not a multiple of the chunk size */
#define CHUNK 4096u

static char dir[256];
static char src_path[300], dst_path[300];
static uint8_t *art;
static char art_hex[EFC_SHA256_HEX_BYTES];
static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int setup(void **state)
{
    uint8_t d[32];
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/efc_chunk_XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(src_path, sizeof(src_path), "%s/src.efm", dir);
    snprintf(dst_path, sizeof(dst_path), "%s/dst.efm", dir);
    art = efc_malloc(ART_BYTES);
    rng_state = 0x9e3779b97f4a7c15ULL;
    for (uint32_t i = 0; i < ART_BYTES; i++)
        art[i] = (uint8_t)rnd();
    assert_int_equal(efc_fs_write_atomic(src_path, art, ART_BYTES), EFC_OK);
    efc_sha256(art, ART_BYTES, d);
    efc_sha256_hex(d, art_hex);
    return 0;
}

static int teardown(void **state)
{
    char p[400];
    (void)state;
    efc_free(art);
    unlink(src_path);
    unlink(dst_path);
    snprintf(p, sizeof(p), "%s.part", dst_path);
    unlink(p);
    snprintf(p, sizeof(p), "%s.part.map", dst_path);
    unlink(p);
    rmdir(dir);
    return 0;
}

static int exists(const char *suffix)
{
    char p[400];
    struct stat sb;
    snprintf(p, sizeof(p), "%s%s", dst_path, suffix);
    return stat(p, &sb) == 0;
}

static void clean_dst(void)
{
    char p[400];
    unlink(dst_path);
    snprintf(p, sizeof(p), "%s.part", dst_path);
    unlink(p);
    snprintf(p, sizeof(p), "%s.part.map", dst_path);
    unlink(p);
}

static void check_dst(void)
{
    void *buf;
    size_t len;
    uint8_t d[32];
    char hex[EFC_SHA256_HEX_BYTES];

    assert_int_equal(efc_fs_read_all(dst_path, ART_BYTES * 2, &buf, &len), EFC_OK);
    assert_int_equal(len, ART_BYTES);
    assert_memory_equal(buf, art, ART_BYTES);
    efc_sha256(buf, len, d);
    efc_sha256_hex(d, hex);
    assert_string_equal(hex, art_hex);
    efc_free(buf);
    assert_false(exists(".part"));
    assert_false(exists(".part.map"));
}

static void open_rx(struct efc_chunk_rx *rx, uint32_t outstanding, uint32_t ckpt)
{
    struct efc_chunk_rx_opts o = {dst_path, art_hex, ART_BYTES, CHUNK, outstanding, ckpt};
    assert_int_equal(efc_chunk_rx_open(rx, &o), EFC_OK);
}

/* A lossy link: requests are served into a pool of in-transit messages delivered in random
 * order; some are dropped, some duplicated, and optionally one chunk's payload is flipped. */
struct link {
    int drop_pct, dup_pct, corrupt_one;
    int n_sent, n_dropped, n_dup, n_timeouts, n_ehash;
    void *pool[64];
    size_t pool_len[64];
    int n_pool;
};

static void link_send(struct link *l, const struct efc_chunk_req *req)
{
    char *json;
    struct efc_chunk_req got;
    void *msg;
    size_t len;

    /* The request travels as JSON, like on the wire. */
    assert_int_equal(efc_chunk_req_encode(req, &json), EFC_OK);
    assert_int_equal(efc_chunk_req_decode(json, strlen(json), &got), EFC_OK);
    efc_free(json);
    assert_int_equal(efc_chunk_serve(src_path, art_hex, &got, &msg, &len), EFC_OK);
    l->n_sent++;
    if ((int)(rnd() % 100) < l->drop_pct) {
        l->n_dropped++;
        efc_free(msg);
        return;
    }
    if (l->corrupt_one && got.offset == 5 * CHUNK) {
        ((uint8_t *)msg)[EFC_CHUNK_HDR_BYTES + 17] ^= 0x40;
        l->corrupt_one = 0;
    }
    assert_true(l->n_pool < 63);
    if ((int)(rnd() % 100) < l->dup_pct) {
        void *cp = efc_malloc(len);
        memcpy(cp, msg, len);
        l->pool[l->n_pool] = cp;
        l->pool_len[l->n_pool++] = len;
        l->n_dup++;
    }
    l->pool[l->n_pool] = msg;
    l->pool_len[l->n_pool++] = len;
}

/* Runs the transfer to completion (or until max_puts chunks were stored); returns puts done. */
static int transfer(struct efc_chunk_rx *rx, struct link *l, int max_puts)
{
    struct efc_chunk_req req;
    int puts = 0, guard = 0;

    while (!rx->done && puts < max_puts) {
        assert_true(++guard < 200000);
        while (efc_chunk_rx_next(rx, &req))
            link_send(l, &req);
        assert_true(rx->n_inflight <= rx->max_outstanding);
        if (l->n_pool == 0) {
            l->n_timeouts++;
            efc_chunk_rx_expire(rx); /* nothing arrives: time out and re-request */
            continue;
        }
        {
            int i = (int)(rnd() % (uint64_t)l->n_pool);
            struct efc_chunk c;
            enum efc_status st;
            void *msg = l->pool[i];
            size_t len = l->pool_len[i];
            l->pool[i] = l->pool[--l->n_pool];
            l->pool_len[i] = l->pool_len[l->n_pool];
            assert_int_equal(efc_chunk_decode(msg, len, &c), EFC_OK);
            st = efc_chunk_rx_put(rx, &c);
            efc_free(msg);
            if (st == EFC_EHASH) {
                l->n_ehash++;
                assert_false(rx->done);
                assert_int_equal(rx->n_have, 0);
                continue;
            }
            assert_int_equal(st, EFC_OK);
            puts++;
        }
    }
    while (l->n_pool > 0)
        efc_free(l->pool[--l->n_pool]);
    return puts;
}

static void test_lossy_transfer(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        struct efc_chunk_rx rx;
        struct link l = {20, 15, 0, 0, 0, 0, 0, 0, {0}, {0}, 0};
        uint64_t seed = 1234567ULL + (uint64_t)round;
        rng_state = seed;
        clean_dst();
        open_rx(&rx, (uint32_t)(1 + round * 3), 16);
        assert_int_equal(rx.n_chunks, (ART_BYTES + CHUNK - 1) / CHUNK);
        transfer(&rx, &l, 1 << 30);
        print_message("seed %llu: %d chunks, %d sent, %d dropped, %d duplicated, %d timeouts\n",
                      (unsigned long long)seed, (int)rx.n_chunks, l.n_sent, l.n_dropped, l.n_dup,
                      l.n_timeouts);
        assert_true(rx.done);
        assert_true(l.n_dropped > 0 && l.n_dup > 0);
        efc_chunk_rx_fini(&rx);
        check_dst();
    }
}

static void test_corrupted_chunk_ehash(void **state)
{
    struct efc_chunk_rx rx;
    struct link l = {5, 5, 1, 0, 0, 0, 0, 0, {0}, {0}, 0};
    (void)state;
    rng_state = 777;
    clean_dst();
    open_rx(&rx, 4, 16);
    transfer(&rx, &l, 1 << 30);
    /* The corrupted copy made the first completion fail; the retry from scratch succeeded. */
    assert_int_equal(l.n_ehash, 1);
    assert_true(rx.done);
    efc_chunk_rx_fini(&rx);
    check_dst();
}

static void test_corrupted_discards_partial(void **state)
{
    struct efc_chunk_rx rx;
    struct efc_chunk_req req;
    struct efc_chunk c;
    void *msg;
    size_t len;
    uint8_t *bad;
    (void)state;
    clean_dst();
    bad = efc_malloc(ART_BYTES);
    memcpy(bad, art, ART_BYTES);
    bad[ART_BYTES - 1] ^= 1;
    open_rx(&rx, 1000, 16);
    for (uint32_t i = 0; i < rx.n_chunks; i++) {
        assert_int_equal(efc_chunk_rx_next(&rx, &req), 1);
        assert_int_equal(req.offset, (uint64_t)i * CHUNK);
        assert_int_equal(efc_chunk_serve(src_path, art_hex, &req, &msg, &len), EFC_OK);
        assert_int_equal(efc_chunk_decode(msg, len, &c), EFC_OK);
        if (c.offset + c.len == ART_BYTES)
            c.data = bad + c.offset;
        if (i + 1 == rx.n_chunks)
            assert_int_equal(efc_chunk_rx_put(&rx, &c), EFC_EHASH);
        else
            assert_int_equal(efc_chunk_rx_put(&rx, &c), EFC_OK);
        efc_free(msg);
    }
    assert_false(rx.done);
    assert_false(exists(""));          /* never renamed into place */
    assert_false(exists(".part.map")); /* old map gone: a resume cannot trust the bad bytes */
    assert_int_equal(rx.n_have, 0);
    efc_chunk_rx_fini(&rx);
    efc_free(bad);
}

static void test_resume_after_restart(void **state)
{
    struct efc_chunk_rx rx;
    struct link l = {10, 10, 0, 0, 0, 0, 0, 0, {0}, {0}, 0};
    int first, second, sent_before;
    uint32_t have_at_crash;
    (void)state;
    rng_state = 4242;
    clean_dst();
    open_rx(&rx, 4, 8);
    first = transfer(&rx, &l, 30); /* 30 chunks stored, checkpoints at 8, 16, 24 */
    assert_false(rx.done);
    have_at_crash = rx.n_have;
    efc_chunk_rx_fini(&rx); /* "crash": no final checkpoint */
    assert_true(exists(".part"));
    assert_true(exists(".part.map"));

    open_rx(&rx, 4, 8);
    print_message("resumed %u of %u chunks (had %u at the crash)\n", rx.n_resumed, rx.n_chunks,
                  have_at_crash);
    assert_int_equal(rx.n_resumed, 24);
    assert_int_equal(rx.n_have, 24);
    sent_before = l.n_sent;
    second = transfer(&rx, &l, 1 << 30);
    assert_true(rx.done);
    /* Only the missing chunks were requested again: at most 50 + the dropped ones. */
    assert_true(l.n_sent - sent_before <= (int)rx.n_chunks - 24 + l.n_dropped);
    assert_true(second >= (int)rx.n_chunks - 24);
    (void)first;
    efc_chunk_rx_fini(&rx);
    check_dst();

    /* A clean stop with an explicit checkpoint keeps everything. */
    clean_dst();
    l.drop_pct = l.dup_pct = 0;
    open_rx(&rx, 4, 1000);
    transfer(&rx, &l, 17);
    assert_int_equal(efc_chunk_rx_checkpoint(&rx), EFC_OK);
    efc_chunk_rx_fini(&rx);
    open_rx(&rx, 4, 1000);
    assert_int_equal(rx.n_resumed, 17);
    efc_chunk_rx_fini(&rx);
}

static void test_damaged_map_starts_fresh(void **state)
{
    struct efc_chunk_rx rx;
    struct link l = {0, 0, 0, 0, 0, 0, 0, 0, {0}, {0}, 0};
    char p[400];
    void *buf;
    size_t len;
    (void)state;
    rng_state = 99;
    clean_dst();
    open_rx(&rx, 4, 4);
    transfer(&rx, &l, 12);
    efc_chunk_rx_fini(&rx);
    snprintf(p, sizeof(p), "%s.part.map", dst_path);
    assert_int_equal(efc_fs_read_all(p, 1 << 20, &buf, &len), EFC_OK);
    ((uint8_t *)buf)[64] ^= 0x80; /* flip a bitmap bit: the map checksum no longer matches */
    assert_int_equal(efc_fs_write_atomic(p, buf, len), EFC_OK);
    efc_free(buf);
    open_rx(&rx, 4, 4);
    assert_int_equal(rx.n_resumed, 0);
    assert_int_equal(rx.n_have, 0);
    efc_chunk_rx_fini(&rx);
    /* Another artifact size with the same path: not resumed either. */
    {
        struct efc_chunk_rx_opts o = {dst_path, art_hex, ART_BYTES - 1, CHUNK, 4, 4};
        assert_int_equal(efc_chunk_rx_open(&rx, &o), EFC_OK);
        assert_int_equal(rx.n_resumed, 0);
        efc_chunk_rx_fini(&rx);
    }
}

static void test_flow_control(void **state)
{
    struct efc_chunk_rx rx;
    struct efc_chunk_req req[8];
    int n = 0;
    (void)state;
    clean_dst();
    open_rx(&rx, 3, 16);
    while (n < 8 && efc_chunk_rx_next(&rx, &req[n]))
        n++;
    assert_int_equal(n, 3);
    assert_int_equal(req[0].offset, 0);
    assert_int_equal(req[1].offset, CHUNK);
    assert_int_equal(req[2].offset, 2 * CHUNK);
    assert_int_equal(req[0].length, CHUNK);
    efc_chunk_rx_expire(&rx);
    assert_int_equal(rx.n_inflight, 0);
    assert_int_equal(efc_chunk_rx_next(&rx, &req[0]), 1);
    assert_int_equal(req[0].offset, 0);
    efc_chunk_rx_fini(&rx);
}

static void test_rx_rejects(void **state)
{
    struct efc_chunk_rx rx;
    struct efc_chunk c;
    (void)state;
    clean_dst();
    open_rx(&rx, 4, 16);
    memset(&c, 0, sizeof(c));
    c.data = art;
    c.total_bytes = ART_BYTES;
    c.len = CHUNK;
    for (int i = 0; i < 32; i++)
        c.sha256[i] = (uint8_t)(rnd());
    assert_int_equal(efc_chunk_rx_put(&rx, &c), EFC_EPROTO); /* another artifact */
    efc_sha256(art, ART_BYTES, c.sha256);
    c.offset = 100;
    assert_int_equal(efc_chunk_rx_put(&rx, &c), EFC_EPROTO); /* not on a boundary */
    c.offset = 0;
    c.len = CHUNK - 1;
    assert_int_equal(efc_chunk_rx_put(&rx, &c), EFC_EPROTO); /* wrong length */
    c.len = CHUNK;
    c.total_bytes = ART_BYTES + 1;
    assert_int_equal(efc_chunk_rx_put(&rx, &c), EFC_EPROTO); /* another size */
    c.total_bytes = ART_BYTES;
    c.offset = (uint64_t)rx.n_chunks * CHUNK;
    assert_int_equal(efc_chunk_rx_put(&rx, &c), EFC_EPROTO); /* beyond the size */
    c.offset = 0;
    assert_int_equal(efc_chunk_rx_put(&rx, &c), EFC_OK);
    assert_int_equal(efc_chunk_rx_put(&rx, &c), EFC_OK); /* duplicate */
    assert_int_equal(rx.n_have, 1);
    efc_chunk_rx_fini(&rx);
    {
        struct efc_chunk_rx_opts o = {dst_path, "xyz", ART_BYTES, CHUNK, 4, 4};
        assert_int_equal(efc_chunk_rx_open(&rx, &o), EFC_EINVAL);
        o.sha256_hex = art_hex;
        o.total_bytes = 0;
        assert_int_equal(efc_chunk_rx_open(&rx, &o), EFC_EINVAL);
        o.total_bytes = ART_BYTES;
        o.chunk_bytes = EFC_PROTO_CHUNK_MAX + 1;
        assert_int_equal(efc_chunk_rx_open(&rx, &o), EFC_EINVAL);
    }
}

static void test_chunk_codec(void **state)
{
    struct efc_chunk c, d;
    uint8_t *b;
    void *buf;
    size_t len;
    (void)state;
    memset(&c, 0, sizeof(c));
    memset(c.sha256, 0xab, 32);
    c.offset = 8;
    c.total_bytes = 20;
    c.len = 12;
    c.data = (const uint8_t *)"hello chunk!";
    assert_int_equal(efc_chunk_encode(&c, &buf, &len), EFC_OK);
    assert_int_equal(len, EFC_CHUNK_HDR_BYTES + 12);
    b = buf;
    assert_memory_equal(b, "EFCK\x01\x00\x40\x00", 8);
    assert_int_equal(efc_chunk_decode(buf, len, &d), EFC_OK);
    assert_memory_equal(d.sha256, c.sha256, 32);
    assert_int_equal(d.offset, 8);
    assert_int_equal(d.total_bytes, 20);
    assert_int_equal(d.len, 12);
    assert_memory_equal(d.data, "hello chunk!", 12);

    /* Malformed: every case EFC_EPROTO. */
    assert_int_equal(efc_chunk_decode(buf, 0, &d), EFC_EPROTO);
    assert_int_equal(efc_chunk_decode(NULL, 0, &d), EFC_EPROTO);
    assert_int_equal(efc_chunk_decode(buf, EFC_CHUNK_HDR_BYTES - 1, &d), EFC_EPROTO);
    assert_int_equal(efc_chunk_decode(buf, len - 1, &d), EFC_EPROTO); /* truncated payload */
    b[0] = 'X';
    assert_int_equal(efc_chunk_decode(buf, len, &d), EFC_EPROTO);
    b[0] = 'E';
    b[4] = 2;
    assert_int_equal(efc_chunk_decode(buf, len, &d), EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "unknown version"));
    b[4] = 1;
    b[6] = 65;
    assert_int_equal(efc_chunk_decode(buf, len, &d), EFC_EPROTO);
    b[6] = 64;
    b[61] = 1;
    assert_int_equal(efc_chunk_decode(buf, len, &d), EFC_EPROTO); /* reserved != 0 */
    b[61] = 0;
    b[40] = 9; /* offset 9 + 12 > 20 */
    assert_int_equal(efc_chunk_decode(buf, len, &d), EFC_EPROTO);
    b[40] = 8;
    memset(b + 48, 0, 8); /* total 0 */
    assert_int_equal(efc_chunk_decode(buf, len, &d), EFC_EPROTO);
    memset(b + 48, 0xff, 8); /* total 2^64 - 1 */
    assert_int_equal(efc_chunk_decode(buf, len, &d), EFC_EPROTO);
    b[48] = 20;
    memset(b + 49, 0, 7);
    memset(b + 56, 0xff, 4); /* payload length 2^32 - 1 */
    assert_int_equal(efc_chunk_decode(buf, len, &d), EFC_EPROTO);
    b[56] = 12;
    memset(b + 57, 0, 3);
    assert_int_equal(efc_chunk_decode(buf, len, &d), EFC_OK);
    efc_free(buf);

    c.len = 0;
    assert_int_equal(efc_chunk_encode(&c, &buf, &len), EFC_EINVAL);
    c.len = 13;
    assert_int_equal(efc_chunk_encode(&c, &buf, &len), EFC_EINVAL);
}

static void test_serve(void **state)
{
    struct efc_chunk_req req;
    struct efc_chunk c;
    void *msg;
    size_t len;
    (void)state;
    memset(&req, 0, sizeof(req));
    snprintf(req.sha256, sizeof(req.sha256), "%s", art_hex);
    req.offset = ART_BYTES - 7;
    req.length = 4096;
    assert_int_equal(efc_chunk_serve(src_path, art_hex, &req, &msg, &len), EFC_OK);
    assert_int_equal(efc_chunk_decode(msg, len, &c), EFC_OK);
    assert_int_equal(c.len, 7); /* clipped at the end */
    assert_memory_equal(c.data, art + ART_BYTES - 7, 7);
    efc_free(msg);
    req.offset = ART_BYTES;
    assert_int_equal(efc_chunk_serve(src_path, art_hex, &req, &msg, &len), EFC_EPROTO);
    req.offset = 0;
    req.sha256[0] = req.sha256[0] == 'a' ? 'b' : 'a';
    assert_int_equal(efc_chunk_serve(src_path, art_hex, &req, &msg, &len), EFC_EPROTO);
    snprintf(req.sha256, sizeof(req.sha256), "%s", art_hex);
    req.length = EFC_PROTO_CHUNK_MAX + 1;
    assert_int_equal(efc_chunk_serve(src_path, art_hex, &req, &msg, &len), EFC_EPROTO);
    req.length = 1;
    assert_int_equal(efc_chunk_serve("/nonexistent/x.efm", art_hex, &req, &msg, &len),
                     EFC_ENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunk_codec),
        cmocka_unit_test(test_serve),
        cmocka_unit_test(test_flow_control),
        cmocka_unit_test(test_rx_rejects),
        cmocka_unit_test(test_lossy_transfer),
        cmocka_unit_test(test_corrupted_chunk_ehash),
        cmocka_unit_test(test_corrupted_discards_partial),
        cmocka_unit_test(test_resume_after_restart),
        cmocka_unit_test(test_damaged_map_starts_fresh),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
