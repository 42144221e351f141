/* What grpokit's C kernels share: the block width, GCC vector types of it, and an exp
 * that vectorises. Included by decode.c and step.c, which grpokit.native compiles into
 * one library. */
#ifndef GRPOKIT_KERNELS_H
#define GRPOKIT_KERNELS_H

#include <stdint.h>
#include <string.h>

/* Floats per block (one AVX-512 register, two AVX2 ones). grpokit.native passes it
 * (-DLANES), so the Python side's block size and this one are the same number. */
#ifndef LANES
#error "build through grpokit.native, which passes -DLANES"
#endif

/* GCC/clang vector types of LANES floats: the compiler maps them onto the machine's
 * registers (one AVX-512 register, two AVX2 ones, or scalar code elsewhere). Used where
 * the auto-vectoriser gives up (masked softmax blocks). */
typedef float vfloat __attribute__((vector_size(4 * LANES)));
typedef int32_t vint __attribute__((vector_size(4 * LANES)));

static inline vfloat vload(const float *p) { vfloat v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, vfloat v) { memcpy(p, &v, sizeof v); }
/* m ? a : b lane by lane, m all-ones or zero per lane */
static inline vfloat vselect(vint m, vfloat a, vfloat b) { return (vfloat)(((vint)a & m) | ((vint)b & ~m)); }
/* lanes whose flag is set and whose index (from `first`) is below `end` */
static inline vint vmask(const uint8_t *ok, int64_t first, int64_t end) {
    vint m;
    for (int l = 0; l < LANES; l++) m[l] = ok[l] && first + l < end ? -1 : 0;
    return m;
}

/* exp(x) for x <= 0 (softmax after subtracting the row max), relative error ~2e-7.
 * x = n ln2 + r with |r| <= ln2/2; exp(r) by its Taylor series to degree 7
 * (truncation error |r|^8 / 8! < 2e-9); 2^n assembled in the exponent bits. */
static inline vfloat vexp_nonpos(vfloat x) {
    const vfloat lo = (vfloat){0} - 87.0f; /* keeps 2^n a normal float; exp(-87) ~ 1.6e-38 */
    x = vselect(x < lo, lo, x);
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const vfloat n = (x * 1.44269504088896341f + shifter) - shifter;
    /* ln2 split in two so n * hi is exact for |n| <= 128 */
    const vfloat r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
    vfloat p = r * (1.0f / 5040.0f) + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const vint two_n = (__builtin_convertvector(n, vint) + 127) << 23;
    return p * (vfloat)two_n;
}

/* Attention of one row's new token (decode.c): rotary embedding of its q and k heads,
 * the KV-cache write at column col and grouped-query attention over the valid columns.
 * kt_row [hk, d, cap] and vc_row [hk, cap, d] are the row's caches, ok [cap] its
 * validity flags, out [hq d]; scratch holds round_up(col + 1, LANES) + (hq + 1) d floats. */
void gk_attend_row(const float *qkv, const float *cos, const float *sin, float *kt_row, float *vc_row,
                   const uint8_t *ok, int64_t hq, int64_t hk, int64_t d, int64_t cap, int64_t col, float scale,
                   float *out, float *scratch);

/* Floats of scratch gk_attend_row needs. */
static inline int64_t gk_attend_scratch(int64_t hq, int64_t d, int64_t col) {
    return (col + 1 + LANES - 1) / LANES * LANES + (hq + 1) * d;
}

#endif
