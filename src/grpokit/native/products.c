/* Dense building blocks of grpokit's whole-model C code (step.c, train.c): products
 * against weights stored in column panels, RMSNorm rows and the SwiGLU activation.
 */
#include <math.h>
#include <stdlib.h>

#include "kernels.h"

/* Weights are stored in panels of PANEL columns: panel c (columns c .. c + PANEL - 1, the
 * last one narrower) is a contiguous [k, width] block at offset c k. Row-major [k, n]
 * would put consecutive k of one block of columns n floats apart: for n = 1024 that is
 * 4 KiB, and every row of the block then falls in the same few L1 sets. */

/* Rows of x and of w taken per pass over a panel: a panel's [K_CHUNK, PANEL] slice (32 KiB)
 * stays in L1 while every row of x goes by. Unchunked, a panel of a 1024-deep product is
 * 256 KiB and each 4-row tile streamed it from L2 again. */
#define K_CHUNK 128

/* One tile of y[r, :n] (+)= x[r, :] w for up to 4 rows and one panel, over the rows
 * i0 .. i0 + kk - 1 of w: the sum over them is formed first, then bias (when given) and
 * y (when add) are added, the order of torch's addmm. 16 accumulators in registers. */
static inline __attribute__((always_inline)) void tile(const int mr, const int nv, const float *x, int64_t ldx,
                                                       int64_t kk, const float *w, int64_t n, const float *bias,
                                                       float *y, int add) {
    const int64_t wp = nv * LANES; /* the panel's width */
    vfloat acc[4][4];
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nv; j++) acc[r][j] = (vfloat){0};
    for (int64_t i = 0; i < kk; i++) {
        vfloat wv[4];
        for (int j = 0; j < nv; j++) wv[j] = vload(w + i * wp + j * LANES);
        for (int r = 0; r < mr; r++) {
            const float xv = x[r * ldx + i];
            for (int j = 0; j < nv; j++) acc[r][j] += xv * wv[j];
        }
    }
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nv; j++) {
            vfloat v = acc[r][j];
            if (bias) v += vload(bias + j * LANES);
            if (add) v += vload(y + r * n + j * LANES);
            vstore(y + r * n + j * LANES, v);
        }
}

#define TILE_ROWS(mr)                                                                         \
    switch (nv) {                                                                             \
    case 4: tile(mr, 4, xr, k, kk, wk, n, bk, yc, add); break;                                \
    case 3: tile(mr, 3, xr, k, kk, wk, n, bk, yc, add); break;                                \
    case 2: tile(mr, 2, xr, k, kk, wk, n, bk, yc, add); break;                                \
    default: tile(mr, 1, xr, k, kk, wk, n, bk, yc, add); break;                               \
    }

/* y[r, :n] = x[r, :k] w (+ bias) (+ y[r, :n] when accumulate) for r < rows; w is [k, n]
 * in panels, n a multiple of LANES; x and y have row strides k and n. Products deeper
 * than K_CHUNK are summed a chunk at a time into y. */
void gk_gemm(const float *x, int64_t rows, int64_t k, const float *w, int64_t n, const float *bias, float *y,
             int accumulate) {
    for (int64_t c = 0; c < n; c += PANEL) {
        const int nv = (int)((n - c) / LANES < 4 ? (n - c) / LANES : 4);
        for (int64_t i0 = 0; i0 < k; i0 += K_CHUNK) {
            const int64_t kk = k - i0 < K_CHUNK ? k - i0 : K_CHUNK;
            const float *wk = w + c * k + i0 * nv * LANES;
            const float *bk = bias && i0 + kk >= k ? bias + c : NULL; /* with the last chunk */
            const int add = accumulate || i0 > 0;
            for (int64_t r = 0; r < rows; r += 4) {
                const float *xr = x + r * k + i0;
                float *yc = y + r * n + c;
                switch (rows - r < 4 ? rows - r : 4) {
                case 4: TILE_ROWS(4); break;
                case 3: TILE_ROWS(3); break;
                case 2: TILE_ROWS(2); break;
                default: TILE_ROWS(1); break;
                }
            }
        }
    }
}

/* Writes the rows of w [k, n] (row-major) as rows row .. row + k - 1 of a [total, n]
 * matrix stored in panels: the panel layout of a matrix that is not transposed, as
 * train.c's backward multiplies by nn.Linear weights ([out, in]) themselves. */
void gk_pack_rows(const float *w, int64_t k, int64_t n, float *out, int64_t total, int64_t row) {
    for (int64_t c = 0; c < n; c += PANEL) {
        const int64_t width = n - c < PANEL ? n - c : PANEL;
        for (int64_t i = 0; i < k; i++)
            memcpy(out + c * total + (row + i) * width, w + i * n + c, sizeof(float) * (size_t)width);
    }
}

/* Writes w [n, k] (nn.Linear's [out, in]) transposed into columns col .. col + n - 1 of
 * a [k, total] matrix stored in panels (see gemm); total a multiple of LANES. Columns no
 * call writes must be zeroed beforehand. One pass over w instead of torch's transpose,
 * pad, concatenation and panel copies. */
void gk_pack_panels(const float *w, int64_t n, int64_t k, float *out, int64_t total, int64_t col) {
    for (int64_t start = col / PANEL * PANEL; start < col + n; start += PANEL) {
        const int64_t width = total - start < PANEL ? total - start : PANEL;
        const int64_t lo = start > col ? start : col, hi = start + width < col + n ? start + width : col + n;
        float *panel = out + start * k;
        /* a panel row at a time: sequential writes, one read stream per column */
        for (int64_t i = 0; i < k; i++)
            for (int64_t c = lo; c < hi; c++) panel[i * width + (c - start)] = w[(c - col) * k + i];
    }
}

void gk_rms_rows(const float *x, const float *w, float *out, int64_t rows, int64_t n, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int64_t i = 0; i < n; i++) ss += xr[i] * xr[i];
        const float rstd = 1.0f / sqrtf(ss / (float)n + eps);
#pragma omp simd
        for (int64_t i = 0; i < n; i++) out[r * n + i] = w[i] * (xr[i] * rstd);
    }
}

/* out[r, i] = silu(gu[r, i]) * gu[r, inter + i], silu(g) = g / (1 + exp(-g)), with exp
 * taken of -|g| only (so it never overflows): g e / (1 + e) for g < 0. */
void gk_swiglu_rows(const float *gu, float *out, int64_t rows, int64_t inter) {
    const vfloat zero = {0}, one = zero + 1.0f;
    for (int64_t r = 0; r < rows; r++) {
        const float *g = gu + r * 2 * inter, *u = g + inter;
        for (int64_t i = 0; i < inter; i += LANES) {
            const vfloat gv = vload(g + i);
            const vint neg = gv < zero;
            const vfloat e = vexp_nonpos(vselect(neg, gv, zero - gv));
            const vfloat act = vselect(neg, gv * e, gv) / (one + e);
            vstore(out + r * inter + i, act * vload(u + i));
        }
    }
}


/* dw[o, :wp] += sum_r dy[r, o] x[r, :wp] for up to 4 o, from packed chunks: dyp [rows, 4]
 * (the 4 o's values of a row side by side) and xp [rows, nv LANES]. */
static inline __attribute__((always_inline)) void grad_tile(const int mo, const int nv, const float *dyp,
                                                            int64_t rows, const float *xp, float *dw, int64_t k) {
    vfloat acc[4][4];
    for (int o = 0; o < mo; o++)
        for (int j = 0; j < nv; j++) acc[o][j] = (vfloat){0};
    for (int64_t r = 0; r < rows; r++) {
        vfloat xv[4];
        for (int j = 0; j < nv; j++) xv[j] = vload(xp + (r * nv + j) * LANES);
        for (int o = 0; o < mo; o++) {
            const float s = dyp[r * 4 + o];
            for (int j = 0; j < nv; j++) acc[o][j] += s * xv[j];
        }
    }
    for (int o = 0; o < mo; o++)
        for (int j = 0; j < nv; j++) vstore(dw + o * k + j * LANES, vload(dw + o * k + j * LANES) + acc[o][j]);
}

#define GRAD_TILE(mo)                                                                         \
    switch (nv) {                                                                             \
    case 4: grad_tile(mo, 4, dyp + o * rr, rr, xp, dw + o * k + i, k); break;                 \
    case 3: grad_tile(mo, 3, dyp + o * rr, rr, xp, dw + o * k + i, k); break;                 \
    case 2: grad_tile(mo, 2, dyp + o * rr, rr, xp, dw + o * k + i, k); break;                 \
    default: grad_tile(mo, 1, dyp + o * rr, rr, xp, dw + o * k + i, k); break;                \
    }

/* Rows of dy and x taken per pass. Both are copied into packed chunks first: read in
 * place, a row stride of a few KiB puts every row of a chunk in the same few L1 sets. */
#define R_CHUNK 128

/* The gradients of y = x W^T + b for W [n, k] (nn.Linear's layout), added in:
 * dw[o, :] += sum_r dy[r, o] x[r, :] and db[o] += sum_r dy[r, o] (db may be NULL).
 * dy is [rows, n] and x [rows, k]; k a multiple of LANES. Returns -1 when no memory
 * for the packed chunk of dy could be had, else 0. */
int gk_gemm_grad(const float *dy, const float *x, int64_t rows, int64_t n, int64_t k, float *dw, float *db) {
    const int64_t n4 = (n + 3) / 4 * 4;
    float *dyp = malloc(sizeof(float) * (size_t)(R_CHUNK * n4));
    float *xp = malloc(sizeof(float) * (size_t)(R_CHUNK * PANEL));
    if (!dyp || !xp) {
        free(dyp);
        free(xp);
        return -1;
    }
    for (int64_t r0 = 0; r0 < rows; r0 += R_CHUNK) {
        const int64_t rr = rows - r0 < R_CHUNK ? rows - r0 : R_CHUNK;
        /* dyp[o / 4][r][o % 4]: block o / 4 starts at (o / 4) * 4 * rr = o * rr */
        for (int64_t r = 0; r < rr; r++)
            for (int64_t o = 0; o < n4; o++) dyp[(o / 4 * rr + r) * 4 + o % 4] = o < n ? dy[(r0 + r) * n + o] : 0.0f;
        for (int64_t i = 0; i < k; i += PANEL) {
            const int nv = (int)((k - i) / LANES < 4 ? (k - i) / LANES : 4);
            for (int64_t r = 0; r < rr; r++)
                memcpy(xp + r * nv * LANES, x + (r0 + r) * k + i, sizeof(float) * (size_t)(nv * LANES));
            for (int64_t o = 0; o < n; o += 4) {
                switch (n - o < 4 ? n - o : 4) {
                case 4: GRAD_TILE(4); break;
                case 3: GRAD_TILE(3); break;
                case 2: GRAD_TILE(2); break;
                default: GRAD_TILE(1); break;
                }
            }
        }
    }
    free(dyp);
    free(xp);
    if (db)
        for (int64_t r = 0; r < rows; r++)
#pragma omp simd
            for (int64_t o = 0; o < n; o++) db[o] += dy[r * n + o];
    return 0;
}
