/* Small float32 kernels of grpokit's one-token decode step on a CPU.
 *
 * At the sizes of a decode step (a few dozen rows, hidden sizes in the hundreds) each
 * torch op costs a few microseconds of dispatch, and attention for one new token costs
 * tens: RMSNorm is several ops on a CPU, and rotary embedding, the KV-cache write and
 * attention are a dozen more. These kernels do each of those jobs in one call from
 * Python (ctypes) while the matrix products stay with torch/MKL; for small models
 * step.c runs the whole step, products included, and uses gk_attend_row from here.
 *
 * Built at first use with the machine's C compiler (grpokit.engine.native). Loops are written
 * so the compiler vectorises them (-O3 -march=native -fopenmp-simd); no -ffast-math, so
 * IEEE semantics hold, and exp is a polynomial of our own that vectorises.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include "kernels.h"

/* out[r, :] = w * (x[r, :] / sqrt(mean(x[r, :]^2) + eps)) for `rows` rows of n: the
 * products' row norm (products.c), exported under the name ops.py calls. */
void gk_rms_norm(const float *x, const float *w, float *out, int64_t rows, int64_t n, float eps) {
    gk_rms_rows(x, w, out, rows, n, eps);
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

void gk_attend_row(const float *qkv, const float *c, const float *s, float *kt_row, float *vc_row,
                   const uint8_t *ok, int64_t hq, int64_t hk, int64_t d, int64_t cap, int64_t col, float scale,
                   float *out, float *scratch) {
    const int64_t span = col + 1, rep = hq / hk;
    const int64_t padded = (span + LANES - 1) / LANES * LANES; /* <= cap */
    float *scores = scratch, *q = scratch + padded, *k = q + hq * d;
    for (int64_t h = 0; h < hq; h++) rotate(qkv + h * d, c, s, q + h * d, d);
    for (int64_t g = 0; g < hk; g++) {
        float *kg = kt_row + g * d * cap, *vg = vc_row + g * cap * d;
        rotate(qkv + (hq + g) * d, c, s, k, d);
        for (int64_t i = 0; i < d; i++) kg[i * cap + col] = k[i];
        memcpy(vg + col * d, qkv + (hq + hk + g) * d, sizeof(float) * (size_t)d);
        for (int64_t r = 0; r < rep; r++) {
            const float *qh = q + (g * rep + r) * d;
            /* one block of columns at a time, its sums in one vector register */
            for (int64_t j0 = 0; j0 < padded; j0 += VW) {
                vfloat acc = {0};
                for (int64_t i = 0; i < d; i++) acc += qh[i] * vload(kg + i * cap + j0);
                vstore(scores + j0, acc);
            }
            const float total = masked_exp(scores, ok, span, scale);
            float *o = out + (g * rep + r) * d;
            /* no valid column (a padding position of a prefill): zeros, not 0/0 */
            const float inv = total > 0.0f ? 1.0f / total : 0.0f;
            for (int64_t i0 = 0; i0 < d; i0 += VW) {
                vfloat acc = {0};
                for (int64_t j = 0; j < span; j++) acc += scores[j] * vload(vg + j * d + i0);
                vstore(o + i0, acc * inv);
            }
        }
    }
}

static void *attend_rows(void *arg) {
    attend_job *job = arg;
    const int64_t hq = job->hq, hk = job->hk, d = job->d, cap = job->cap, col = job->col;
    float *scratch = malloc(sizeof(float) * (size_t)gk_attend_scratch(hq, d, col));
    if (!scratch) {
        job->status = -1;
        return NULL;
    }
    for (int64_t b = job->first; b < job->last; b++)
        gk_attend_row(job->qkv + b * (hq + 2 * hk) * d, job->cos + job->pos[b] * d, job->sin + job->pos[b] * d,
                      job->kt + b * hk * d * cap, job->vc + b * hk * cap * d, job->valid + b * cap, hq, hk, d, cap,
                      col, job->scale, job->out + b * hq * d, scratch);
    free(scratch);
    job->status = 0;
    return NULL;
}

/* Below this many multiply-adds (rows x q heads x columns x head dim) one thread does
 * all rows: starting a second costs tens of microseconds. A `tiny` benchmark step is
 * 0.2M of them (one thread, ~35 us); a `small` one 1.2M (two threads: 0.23 ms, one:
 * 0.35-0.54 ms, torch's attention on two threads: 0.38-0.43 ms). */
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
