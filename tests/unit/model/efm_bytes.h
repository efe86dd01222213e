/* efm_bytes.h — little-endian helpers for the model tests that edit .efm / artifact bytes by
 * hand (docs/format.md): read and write 32/64-bit fields, recompute the header checksum, find a
 * section table entry. Static functions: include from one test file each. */
#ifndef EFC_TESTS_EFM_BYTES_H
#define EFC_TESTS_EFM_BYTES_H

#include <stddef.h>
#include <stdint.h>

#include "common/efc_sha256.h"

static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static inline void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

/* Recompute the .efm header checksum (SHA-256 of the file without bytes [32, 64)). */
static inline void rehash(uint8_t *buf, size_t len)
{
    struct efc_sha256 s;
    efc_sha256_init(&s);
    efc_sha256_update(&s, buf, 32);
    efc_sha256_update(&s, buf + 64, len - 64);
    efc_sha256_final(&s, buf + 32);
}

#endif
