/* Small float32 kernels of grpokit's one-token decode step on a CPU.
 *
 * At the sizes of a decode step (a few dozen rows, hidden sizes in the hundreds) each
 * torch op costs a few microseconds of dispatch, and attention for one new token costs
 * tens: RMSNorm is several ops on a CPU, and rotary embedding, the KV-cache write and
 * attention are a dozen more. These kernels do each of those jobs in one call from
 * Python (ctypes); the matrix products stay with torch/MKL.
 *
 * Built at first use with the machine's C compiler (grpokit.native). Loops are written
 * so the compiler vectorises them (-O3 -march=native -fopenmp-simd); no -ffast-math, so
 * IEEE semantics hold, and exp is a polynomial of our own that vectorises.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 16 /* floats per block: one AVX-512 register, two AVX2 ones */

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
    const vfloat lo = x - x - 87.0f; /* keeps 2^n a normal float; exp(-87) ~ 1.6e-38 */
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

/* 1 / y for y in [1, 2] by Newton's iteration r <- r (2 - y r) from the linear guess
 * 24/17 - 8/17 y (relative error <= 1/17, squared by each step: 3.5e-3, 1.2e-5,
 * 1.5e-10). Seven multiply-adds, where a vector division costs about as much as 30. */
static inline vfloat vrecip_1_2(vfloat y) {
    vfloat r = 24.0f / 17.0f - y * (8.0f / 17.0f);
    for (int i = 0; i < 3; i++) r = r * (2.0f - y * r);
    return r;
}

/* 1 / (1 + exp(-x)) for any x, from exp(-|x|), which never overflows */
static inline vfloat vsigmoid(vfloat x) {
    const vfloat e = vexp_nonpos(vselect(x < 0.0f, x, -x)), one = e - e + 1.0f;
    return vselect(x < 0.0f, e, one) * vrecip_1_2(one + e);
}

/* Loads and stores of the first `n` (< LANES) lanes, the rest zero: the tails of rows. */
static inline vfloat vload_part(const float *p, int64_t n) {
    vfloat v = {0};
    memcpy(&v, p, sizeof(float) * (size_t)n);
    return v;
}
static inline void vstore_part(float *p, vfloat v, int64_t n) { memcpy(p, &v, sizeof(float) * (size_t)n); }

typedef struct {
    const float *g, *u, *dh;
    float *h, *dg, *du;
    int64_t first, last, cols, g_stride, u_stride;
} swiglu_job;

/* h = silu(g) * u on rows [first, last) */
static void *swiglu_rows(void *arg) {
    const swiglu_job *job = arg;
    for (int64_t r = job->first; r < job->last; r++) {
        const float *g = job->g + r * job->g_stride, *u = job->u + r * job->u_stride;
        float *h = job->h + r * job->cols;
        for (int64_t i = 0; i < job->cols; i += LANES) {
            const int64_t n = job->cols - i < LANES ? job->cols - i : LANES;
            const vfloat gv = n == LANES ? vload(g + i) : vload_part(g + i, n);
            const vfloat uv = n == LANES ? vload(u + i) : vload_part(u + i, n);
            const vfloat out = gv * vsigmoid(gv) * uv;
            if (n == LANES) vstore(h + i, out); else vstore_part(h + i, out, n);
        }
    }
    return NULL;
}

/* Given dh = d loss / d h for h = silu(g) * u (all [rows, cols], contiguous):
 * dg = dh * u * silu'(g), du = dh * silu(g), and h itself (for the weight gradient of
 * the product that consumed it). silu'(g) = s (1 + g (1 - s)), s = sigmoid(g). */
static void *swiglu_backward_rows(void *arg) {
    const swiglu_job *job = arg;
    const int64_t c = job->cols;
    for (int64_t i = job->first * c; i < job->last * c; i += LANES) {
        const int64_t n = job->last * c - i < LANES ? job->last * c - i : LANES;
        const vfloat gv = n == LANES ? vload(job->g + i) : vload_part(job->g + i, n);
        const vfloat uv = n == LANES ? vload(job->u + i) : vload_part(job->u + i, n);
        const vfloat dv = n == LANES ? vload(job->dh + i) : vload_part(job->dh + i, n);
        const vfloat sg = vsigmoid(gv), act = gv * sg;
        const vfloat h = act * uv, du = dv * act, dg = dv * uv * (sg * (1.0f + gv * (1.0f - sg)));
        if (n == LANES) {
            vstore(job->h + i, h);
            vstore(job->du + i, du);
            vstore(job->dg + i, dg);
        } else {
            vstore_part(job->h + i, h, n);
            vstore_part(job->du + i, du, n);
            vstore_part(job->dg + i, dg, n);
        }
    }
    return NULL;
}

/* Elementwise work of at least this many floats is split between two threads. */
#define SPLIT_ELEMENTS (1 << 16)

static void run_split(void *(*fn)(void *), swiglu_job *job, int64_t rows, int threads) {
    swiglu_job second = *job;
    const int split = threads > 1 && rows > 1 && rows * job->cols >= SPLIT_ELEMENTS;
    pthread_t helper;
    int spawned = 0;
    if (split) {
        job->last = second.first = rows / 2;
        spawned = pthread_create(&helper, NULL, fn, &second) == 0;
    }
    fn(job);
    if (spawned)
        pthread_join(helper, NULL);
    else if (split)
        fn(&second);
}

/* h [rows, cols] = silu(g) * u; g and u rows start every g_stride / u_stride floats
 * (e.g. the two halves of one [rows, 2 cols] product). */
void gk_swiglu(const float *g, const float *u, float *h, int64_t rows, int64_t cols, int64_t g_stride,
               int64_t u_stride, int threads) {
    swiglu_job job = {g, u, NULL, h, NULL, NULL, 0, rows, cols, g_stride, u_stride};
    run_split(swiglu_rows, &job, rows, threads);
}

void gk_swiglu_backward(const float *dh, const float *g, const float *u, float *h, float *dg, float *du,
                        int64_t rows, int64_t cols, int threads) {
    swiglu_job job = {g, u, dh, h, dg, du, 0, rows, cols, cols, cols};
    run_split(swiglu_backward_rows, &job, rows, threads);
}

/* out[r, :] = w * (x[r, :] / sqrt(mean(x[r, :]^2) + eps)) for `rows` rows of n. */
void gk_rms_norm(const float *x, const float *w, float *out, int64_t rows, int64_t n, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *o = out + r * n;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int64_t i = 0; i < n; i++) ss += xr[i] * xr[i];
        const float rstd = 1.0f / sqrtf(ss / (float)n + eps);
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = w[i] * (xr[i] * rstd);
    }
}

/* Rotary embedding of one head vector: x * cos + rotate_half(x) * sin, where
 * rotate_half(x) = cat(-x[d/2:], x[:d/2]). */
static void rotate(const float *x, const float *cos, const float *sin, float *out, int64_t d) {
    const int64_t half = d / 2;
#pragma omp simd
    for (int64_t i = 0; i < half; i++) out[i] = x[i] * cos[i] - x[i + half] * sin[i];
#pragma omp simd
    for (int64_t i = half; i < d; i++) out[i] = x[i] * cos[i] + x[i - half] * sin[i];
}

/* s[j] <- ok[j] ? exp(scale s[j] - max) : 0 for j < n, and 0 from n up to the next
 * multiple of LANES, where max is taken over the valid ones; returns the sum. */
static float masked_exp(float *s, const uint8_t *ok, int64_t n, float scale) {
    const int64_t padded = (n + LANES - 1) / LANES * LANES;
    const vfloat none = (vfloat){0} - INFINITY, zero = {0};
    vfloat best = none;
    for (int64_t j = 0; j < padded; j += LANES) {
        const vfloat v = vselect(vmask(ok + j, j, n), vload(s + j) * scale, none);
        vstore(s + j, v);
        best = vselect(v > best, v, best);
    }
    float top = -INFINITY;
    for (int l = 0; l < LANES; l++) top = best[l] > top ? best[l] : top;
    vfloat total = zero;
    for (int64_t j = 0; j < padded; j += LANES) {
        const vfloat p = vselect(vmask(ok + j, j, n), vexp_nonpos(vload(s + j) - top), zero);
        vstore(s + j, p);
        total += p;
    }
    float sum = 0.0f;
    for (int l = 0; l < LANES; l++) sum += total[l];
    return sum;
}

/* One new token per row: rotary embedding of q and k, the KV-cache write, attention.
 *
 * qkv   [B, (hq + 2 hk) d]  this token's projections per row: q heads, k heads, v heads
 * cos, sin [*, d]           rotary tables by position; row b uses position pos[b]
 * kt    [B, hk, d, cap]     key cache, transposed so that one query's scores are
 *                           contiguous multiply-adds over the cache columns; cap must
 *                           be a multiple of LANES (columns past col are read, unused)
 * vc    [B, hk, cap, d]     value cache; this token's rotated k and its v go to column col
 * valid [B, cap]            columns a row may attend to (column col must be set)
 * out   [B, hq d]           softmax(scale q k^T) v over the valid columns 0..col
 * q head h reads kv head h / (hq / hk) (grouped-query attention); d must be a
 * multiple of LANES.
 * Rows are split between two threads when `threads` > 1 and the work is large enough.
 * Returns 0, or -1 when scratch memory could not be had. */
typedef struct {
    const float *qkv, *cos, *sin;
    const int64_t *pos;
    float *kt, *vc, *out;
    const uint8_t *valid;
    int64_t first, last, hq, hk, d, cap, col;
    float scale;
    int status;
} attend_job;

static void *attend_rows(void *arg) {
    attend_job *job = arg;
    const float *qkv = job->qkv, *cos = job->cos, *sin = job->sin;
    const int64_t *pos = job->pos;
    float *kt = job->kt, *vc = job->vc, *out = job->out;
    const uint8_t *valid = job->valid;
    const int64_t hq = job->hq, hk = job->hk, d = job->d, cap = job->cap, col = job->col;
    const float scale = job->scale;
    const int64_t width = (hq + 2 * hk) * d, span = col + 1, rep = hq / hk;
    const int64_t padded = (span + LANES - 1) / LANES * LANES; /* <= cap */
    float *scratch = malloc(sizeof(float) * (size_t)(padded + hq * d + d));
    if (!scratch) {
        job->status = -1;
        return NULL;
    }
    float *scores = scratch, *q = scratch + padded, *k = q + hq * d;
    for (int64_t b = job->first; b < job->last; b++) {
        const float *row = qkv + b * width;
        const float *c = cos + pos[b] * d, *s = sin + pos[b] * d;
        const uint8_t *ok = valid + b * cap;
        for (int64_t h = 0; h < hq; h++) rotate(row + h * d, c, s, q + h * d, d);
        for (int64_t g = 0; g < hk; g++) {
            float *kg = kt + (b * hk + g) * d * cap, *vg = vc + (b * hk + g) * cap * d;
            rotate(row + (hq + g) * d, c, s, k, d);
            for (int64_t i = 0; i < d; i++) kg[i * cap + col] = k[i];
            memcpy(vg + col * d, row + (hq + hk + g) * d, sizeof(float) * (size_t)d);
            for (int64_t r = 0; r < rep; r++) {
                const float *qh = q + (g * rep + r) * d;
                /* one block of columns at a time, its sums in one vector register */
                for (int64_t j0 = 0; j0 < padded; j0 += LANES) {
                    vfloat acc = {0};
                    for (int64_t i = 0; i < d; i++) acc += qh[i] * vload(kg + i * cap + j0);
                    vstore(scores + j0, acc);
                }
                const float total = masked_exp(scores, ok, span, scale);
                float *o = out + b * hq * d + (g * rep + r) * d;
                const float inv = 1.0f / total;
                for (int64_t i0 = 0; i0 < d; i0 += LANES) {
                    vfloat acc = {0};
                    for (int64_t j = 0; j < span; j++) acc += scores[j] * vload(vg + j * d + i0);
                    vstore(o + i0, acc * inv);
                }
            }
        }
    }
    free(scratch);
    job->status = 0;
    return NULL;
}

/* Below this many multiply-adds (rows x q heads x columns x head dim) one thread does
 * all rows: starting a second costs more than it saves (measured on the benchmark
 * models: 0.2M on `tiny`, 1.2M on `small`). */
#define SPLIT_WORK (1 << 20)

int gk_decode_attention(const float *qkv, int64_t batch, int64_t hq, int64_t hk, int64_t d,
                        const float *cos, const float *sin, const int64_t *pos,
                        float *kt, float *vc, int64_t cap, int64_t col, const uint8_t *valid,
                        float scale, float *out, int threads) {
    attend_job jobs[2];
    const int n = threads > 1 && batch > 1 && batch * hq * (col + 1) * d >= SPLIT_WORK ? 2 : 1;
    for (int t = 0; t < n; t++)
        jobs[t] = (attend_job){qkv, cos, sin, pos, kt, vc, out, valid, batch * t / n, batch * (t + 1) / n,
                               hq, hk, d, cap, col, scale, -1};
    pthread_t helper;
    int spawned = n > 1 && pthread_create(&helper, NULL, attend_rows, &jobs[1]) == 0;
    attend_rows(&jobs[0]);
    if (spawned)
        pthread_join(helper, NULL);
    else if (n > 1)
        attend_rows(&jobs[1]); /* no thread to be had: do its rows here */
    for (int t = 0; t < n; t++)
        if (jobs[t].status != 0) return -1;
    return 0;
}
