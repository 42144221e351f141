/* What grpokit's C kernels share: the block width, GCC vector types of it, an exp that
 * vectorises, rotary embedding and the masked softmax of attention, the whole-model
 * structs and the products' declarations. Included by decode.c, products.c, step.c and
 * train.c, which grpokit.engine.native compiles into one library. */
#ifndef GRPOKIT_KERNELS_H
#define GRPOKIT_KERNELS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Floats per block: the unit of every padded layout (head dims, cache columns, panel
 * widths). grpokit.engine.native passes it (-DLANES), so the Python side's block size and this
 * one are the same number. */
#ifndef LANES
#error "build through grpokit.engine.native, which passes -DLANES"
#endif

/* Floats per vector register (VW) and the number of vector registers (VREGS) of the
 * instruction set this is compiled for (-march=native). Vector types wider than the
 * registers are not an option: GCC keeps arrays of them on the stack, and the products
 * ran at 3.5 GFLOP/s on an AVX2 machine with 64-byte vectors. */
#if defined(__AVX512F__)
#define VW 16
#define VREGS 32
#elif defined(__AVX__)
#define VW 8
#define VREGS 16
#elif defined(__aarch64__)
#define VW 4
#define VREGS 32
#else
#define VW 4
#define VREGS 16
#endif
#if LANES % VW
#error "LANES must be a multiple of the vector width"
#endif

/* GCC/clang vector types of one register. Used where the auto-vectoriser gives up
 * (register tiles of the products, masked softmax blocks). */
typedef float vfloat __attribute__((vector_size(4 * VW)));
typedef int32_t vint __attribute__((vector_size(4 * VW)));

static inline vfloat vload(const float *p) { vfloat v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, vfloat v) { memcpy(p, &v, sizeof v); }
/* m ? a : b lane by lane, m all-ones or zero per lane */
static inline vfloat vselect(vint m, vfloat a, vfloat b) { return (vfloat)(((vint)a & m) | ((vint)b & ~m)); }
/* lanes whose flag is set and whose index (from `first`) is below `end` */
static inline vint vmask(const uint8_t *ok, int64_t first, int64_t end) {
    vint m;
    for (int l = 0; l < VW; l++) m[l] = ok[l] && first + l < end ? -1 : 0;
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

/* Rotary embedding of one head vector: x * cos + rotate_half(x) * sin, where
 * rotate_half(x) = cat(-x[d/2:], x[:d/2]). */
static inline void rotate(const float *x, const float *cos, const float *sin, float *out, int64_t d) {
    const int64_t half = d / 2;
#pragma omp simd
    for (int64_t i = 0; i < half; i++) out[i] = x[i] * cos[i] - x[i + half] * sin[i];
#pragma omp simd
    for (int64_t i = half; i < d; i++) out[i] = x[i] * cos[i] + x[i - half] * sin[i];
}


/* s[j] <- ok[j] ? exp(scale s[j] - max) : 0 for j < n, and 0 from n up to the next
 * multiple of LANES, where max is taken over the valid ones; returns the sum. */
static inline float masked_exp(float *s, const uint8_t *ok, int64_t n, float scale) {
    const int64_t padded = (n + LANES - 1) / LANES * LANES;
    const vfloat none = (vfloat){0} - INFINITY, zero = {0};
    vfloat best = none;
    for (int64_t j = 0; j < padded; j += VW) {
        const vfloat v = vselect(vmask(ok + j, j, n), vload(s + j) * scale, none);
        vstore(s + j, v);
        best = vselect(v > best, v, best);
    }
    float top = -INFINITY;
    for (int l = 0; l < VW; l++) top = best[l] > top ? best[l] : top;
    vfloat total = zero;
    for (int64_t j = 0; j < padded; j += VW) {
        const vfloat p = vselect(vmask(ok + j, j, n), vexp_nonpos(vload(s + j) - top), zero);
        vstore(s + j, p);
        total += p;
    }
    float sum = 0.0f;
    for (int l = 0; l < VW; l++) sum += total[l];
    return sum;
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

/* The products' register tile (products.c): TR rows by TV vectors of columns, TR TV
 * accumulators with TV weight vectors and a broadcast beside them in the register file. */
#if VREGS >= 32
#define TR 4
#define TV 4
#else
#define TR 6
#define TV 2
#endif
#define TW (TV * VW) /* columns per tile */

/* Weights of the whole-model code are stored in panels of PANEL columns (products.c), one
 * tile wide: a tile then reads its weights as one sequential stream, which the hardware
 * prefetcher keeps ahead of. gk_panel_width() tells the Python side. */
#define PANEL TW

/* One decoder layer. Transposed weights: w_qkv [hidden, (hq + 2 hk) d] (q, k, v heads),
 * w_o [hq d, hidden], w_gu [hidden, 2 inter] (gate columns, then up columns),
 * w_down [inter, hidden]. Biases are NULL when absent. Caches as gk_decode_attention's:
 * k_cache [B, hk, d, cap], v_cache [B, hk, cap, d]. */
typedef struct {
    const float *ln1, *ln2;
    float eps1, eps2;
    const float *w_qkv, *b_qkv, *w_o, *b_o, *w_gu, *b_gu, *w_down, *b_down;
    float *k_cache, *v_cache;
    /* training only (train.c): the same weights untransposed ([out, in] as [k, n] panels),
     * for the gradient of a product's input */
    const float *t_qkv, *t_o, *t_gu, *t_down;
} gk_layer;

/* The model: sizes, the layers, the final norm, the output layer transposed
 * [hidden, vocab_pad] (zero columns past vocab), and the rotary tables [positions, d].
 * hidden, inter and d are multiples of LANES. The input embedding stays with torch. */
typedef struct {
    int64_t n_layers, hidden, hq, hk, d, inter, vocab, vocab_pad, cap;
    const gk_layer *layers;
    const float *final_w, *head, *head_b, *cos, *sin;
    float final_eps, scale;
    const float *t_head; /* training only: the output layer [vocab_pad, hidden] in panels */
} gk_model;

void gk_gemm(const float *x, int64_t rows, int64_t k, const float *w, int64_t n, const float *bias, float *y,
             int accumulate);
void gk_gemm_cols(const float *x, int64_t rows, int64_t k, const float *w, int64_t n, int64_t c0, int64_t c1,
                  const float *bias, float *y, int accumulate);
int gk_gemm_grad(const float *dy, const float *x, int64_t rows, int64_t n, int64_t k, float *dw, float *db);
void gk_rms_rows(const float *x, const float *w, float *out, int64_t rows, int64_t n, float eps);
void gk_swiglu_rows(const float *gu, float *out, int64_t rows, int64_t inter);

#endif
