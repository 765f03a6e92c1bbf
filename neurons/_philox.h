/* The shared-noise streams of design §2.2, computed directly from their counters.
 *
 * Sample n's uniforms are numpy's Generator(Philox(key=[seed, n])).random(),
 * drawn in order.  Philox4x64-10 (Salmon et al., "Parallel random numbers: as
 * easy as 1, 2, 3", SC 2011) is counter-based: the 64-bit word at position j of
 * a stream is lane j % 4 of the block bijection applied to the counter
 * (j / 4 + 1, 0, 0, 0) under the key (seed, n); numpy increments its counter
 * before the first block, hence the + 1.  Its doubles are the top 53 bits
 * scaled by 2^-53.  Any position is therefore reachable without drawing the
 * ones before it, and the numbers equal numpy's bit for bit (the tests compare).
 */
#ifndef IPVAE_PHILOX_H
#define IPVAE_PHILOX_H

#include <stdint.h>

#define PHILOX_M0 0xD2E7470EE14C6C93ULL
#define PHILOX_M1 0xCA5A826395121157ULL
#define PHILOX_W0 0x9E3779B97F4A7C15ULL /* golden ratio: the key's increment per round */
#define PHILOX_W1 0xBB67AE8584CAA73BULL /* sqrt(3) - 1 */

/* Round r of ten; written out rather than looped: at -O2 the loop ran at half the speed. */
#define PHILOX_ROUND(r)                                                                   \
    do {                                                                                  \
        __uint128_t p0 = (__uint128_t)PHILOX_M0 * x0, p1 = (__uint128_t)PHILOX_M1 * x2;   \
        x0 = (uint64_t)(p1 >> 64) ^ x1 ^ (k0 + (r) * PHILOX_W0);                          \
        x1 = (uint64_t)p1;                                                                \
        x2 = (uint64_t)(p0 >> 64) ^ x3 ^ (k1 + (r) * PHILOX_W1);                          \
        x3 = (uint64_t)p0;                                                                \
    } while (0)

/* The four 64-bit words of block `block` (counter block + 1) of stream (k0, k1). */
static inline void philox_block(uint64_t block, uint64_t k0, uint64_t k1, uint64_t out[4])
{
    uint64_t x0 = block + 1, x1 = 0, x2 = 0, x3 = 0;
    PHILOX_ROUND(0ULL);
    PHILOX_ROUND(1ULL);
    PHILOX_ROUND(2ULL);
    PHILOX_ROUND(3ULL);
    PHILOX_ROUND(4ULL);
    PHILOX_ROUND(5ULL);
    PHILOX_ROUND(6ULL);
    PHILOX_ROUND(7ULL);
    PHILOX_ROUND(8ULL);
    PHILOX_ROUND(9ULL);
    out[0] = x0;
    out[1] = x1;
    out[2] = x2;
    out[3] = x3;
}

/* dst[0 .. count) = the uniforms at positions pos .. pos + count - 1 of stream (seed, index). */
static inline void philox_uniforms(uint64_t seed, uint64_t index, uint64_t pos, int64_t count,
                                   double *dst)
{
    uint64_t words[4], block = pos / 4;
    int lane = (int)(pos % 4);
    int64_t i = 0;
    while (i < count) {
        philox_block(block++, seed, index, words);
        for (; lane < 4 && i < count; lane++, i++) /* the top 53 bits, < 2^53: exact as int64 */
            dst[i] = (double)(int64_t)(words[lane] >> 11) * (1.0 / 9007199254740992.0);
        lane = 0;
    }
}

#endif
