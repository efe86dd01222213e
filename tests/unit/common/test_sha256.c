/* test_sha256.c — SHA-256 against the FIPS 180-2 appendix B vectors and hashlib-generated
 * values at the padding boundaries (55/56/63/64/65/119/120 bytes of 'a'), and streaming in odd
 * chunk sizes against the one-shot digest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "common/efc_sha256.h"

static void assert_hex(const uint8_t d[32], const char *want)
{
    char hex[EFC_SHA256_HEX_BYTES];

    efc_sha256_hex(d, hex);
    assert_string_equal(hex, want);
}

static void test_fips_abc(void **state)
{
    uint8_t d[32];
    (void)state;
    efc_sha256("abc", 3, d);
    assert_hex(d, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_empty(void **state)
{
    uint8_t d[32];
    (void)state;
    efc_sha256(NULL, 0, d);
    assert_hex(d, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_fips_448bit(void **state)
{
    static const char m[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    uint8_t d[32];
    (void)state;
    efc_sha256(m, strlen(m), d);
    assert_hex(d, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_896bit(void **state)
{
    static const char m[] = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                            "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    uint8_t d[32];
    (void)state;
    efc_sha256(m, strlen(m), d);
    assert_hex(d, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void test_million_a(void **state)
{
    struct efc_sha256 s;
    char chunk[1000];
    uint8_t d[32], d2[32];
    char *big;
    int i;
    (void)state;

    memset(chunk, 'a', sizeof(chunk));
    efc_sha256_init(&s);
    for (i = 0; i < 1000; i++)
        efc_sha256_update(&s, chunk, sizeof(chunk));
    efc_sha256_final(&s, d);
    assert_hex(d, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

    big = efc_malloc(1000000);
    assert_non_null(big);
    memset(big, 'a', 1000000);
    efc_sha256(big, 1000000, d2);
    efc_free(big);
    assert_memory_equal(d, d2, 32);
}

static void test_padding_boundaries(void **state)
{
    static const struct {
        size_t n;
        const char *hex;
    } v[] = {
        {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
        {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
        {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
        {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
        {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
        {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
        {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
    };
    char buf[128];
    uint8_t d[32];
    size_t i;
    (void)state;

    memset(buf, 'a', sizeof(buf));
    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        efc_sha256(buf, v[i].n, d);
        assert_hex(d, v[i].hex);
    }
}

static void test_streaming_chunks(void **state)
{
    static const size_t chunks[] = {1, 3, 7, 55, 56, 63, 64, 65, 127, 1000};
    uint8_t msg[3001], want[32], got[32];
    size_t i, c;
    (void)state;

    for (i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)(i * 131u + 7u);
    efc_sha256(msg, sizeof(msg), want);
    for (c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        struct efc_sha256 s;
        efc_sha256_init(&s);
        for (i = 0; i < sizeof(msg); i += chunks[c]) {
            size_t n = sizeof(msg) - i < chunks[c] ? sizeof(msg) - i : chunks[c];
            efc_sha256_update(&s, msg + i, n);
        }
        efc_sha256_final(&s, got);
        assert_memory_equal(want, got, 32);
    }
    /* A changed byte changes the digest. */
    msg[1500] ^= 1;
    efc_sha256(msg, sizeof(msg), got);
    assert_memory_not_equal(want, got, 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fips_abc),         cmocka_unit_test(test_empty),
        cmocka_unit_test(test_fips_448bit),      cmocka_unit_test(test_896bit),
        cmocka_unit_test(test_million_a),        cmocka_unit_test(test_padding_boundaries),
        cmocka_unit_test(test_streaming_chunks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
