/* Dense building blocks of grpokit's whole-model C code (step.c, train.c): products
 * against weights stored in column panels, RMSNorm rows and the SwiGLU activation.
 */
#include <math.h>
#include <stdlib.h>

#include "kernels.h"

/* Weights are stored in panels of PANEL columns: panel c (columns c .. c + PANEL - 1, the
 * last one narrower) is a contiguous [k, width] block at offset c k. Row-major [k, n]
 * would put consecutive k of one block of columns n floats apart: for n = 1024 that is
 * 4 KiB, and every row of the block then falls in the same few L1 sets. With panels
 * wider than a tile (the first layout, 64 columns on every machine), an AVX2 tile read a
 * quarter of each 256-byte panel row: weights streamed from memory at 4-7 GB/s instead of
 * the 19 GB/s a core can read sequentially. */

int64_t gk_panel_width(void) { return PANEL; }

/* Rows of x and of w taken per pass over a panel: a panel's [K_CHUNK, PANEL] slice (8 KiB
 * on AVX2, 32 on AVX-512) stays in L1 while every row of x goes by. */
#define K_CHUNK 128

/* `case m: CALL(m)` for m = 1 .. TR: the number of rows of a tile is a compile-time
 * constant in each case, so its accumulators stay in registers. */
#if TR == 6
#define MORE_ROW_CASES(CALL) case 5: CALL(5); break; case 6: CALL(6); break;
#else
#define MORE_ROW_CASES(CALL)
#endif
#define ROW_CASES(CALL) case 1: CALL(1); break; case 2: CALL(2); break; case 3: CALL(3); break; \
                        case 4: CALL(4); break; MORE_ROW_CASES(CALL)

/* The register tile of both products: y[r, :nv VW] (+)= sum_i a(r, i) w[i, :nv VW] for
 * mr rows r, where a(r, i) = a[r ar + i ai] and row i of w starts at w + i wp. The sum
 * is formed first, then bias (when given) and y (when add) are added, the order of
 * torch's addmm. The forward passes x (ar its row stride, ai 1) and a panel's chunk;
 * the gradient passes packed dy (ar 1, ai TR) and packed x, with dw as y. */
static inline __attribute__((always_inline)) void tile(const int mr, const int nv, const float *a, int64_t ar,
                                                       int64_t ai, int64_t kk, const float *w, int64_t wp,
                                                       int64_t n, const float *bias, float *y, int add) {
    vfloat acc[TR][TV];
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nv; j++) acc[r][j] = (vfloat){0};
    for (int64_t i = 0; i < kk; i++) {
        vfloat wv[TV];
        for (int j = 0; j < nv; j++) wv[j] = vload(w + i * wp + j * VW);
        for (int r = 0; r < mr; r++) {
            const float av = a[r * ar + i * ai];
            for (int j = 0; j < nv; j++) acc[r][j] += av * wv[j];
        }
    }
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nv; j++) {
            vfloat v = acc[r][j];
            if (bias) v += vload(bias + j * VW);
            if (add) v += vload(y + r * n + j * VW);
            vstore(y + r * n + j * VW, v);
        }
}

#define FULL_TILE(mr) tile(mr, TV, xr, k, 1, kk, ws, width, n, bs, yc, add)
#define ONE_VECTOR(mr) tile(mr, 1, xr, k, 1, kk, ws, width, n, bs, yc, add)

/* y[r, c0:c1] = x[r, :k] w[:, c0:c1] (+ bias) (+ y[r, c0:c1] when accumulate) for
 * r < rows; w is [k, n] in panels, n a multiple of LANES, c0 and c1 panel boundaries (or
 * c1 = n); x and y have row strides k and n. Products deeper than K_CHUNK are summed a
 * chunk at a time into y. A panel narrower than a whole tile (the last one of a product)
 * takes one vector of columns at a time. */
void gk_gemm_cols(const float *x, int64_t rows, int64_t k, const float *w, int64_t n, int64_t c0, int64_t c1,
                  const float *bias, float *y, int accumulate) {
    for (int64_t c = c0; c < c1; c += PANEL) {
        const int64_t width = n - c < PANEL ? n - c : PANEL;
        for (int64_t i0 = 0; i0 < k; i0 += K_CHUNK) {
            const int64_t kk = k - i0 < K_CHUNK ? k - i0 : K_CHUNK;
            const int add = accumulate || i0 > 0;
            const int last = i0 + kk >= k; /* the bias goes in with the last chunk */
            for (int64_t s = 0; s < width;) {
                const int full = width - s >= TW;
                const float *ws = w + c * k + i0 * width + s, *bs = bias && last ? bias + c + s : NULL;
                for (int64_t r = 0; r < rows; r += TR) {
                    const float *xr = x + r * k + i0;
                    float *yc = y + r * n + c + s;
                    if (full) {
                        switch (rows - r < TR ? rows - r : TR) { ROW_CASES(FULL_TILE) }
                    } else {
                        switch (rows - r < TR ? rows - r : TR) { ROW_CASES(ONE_VECTOR) }
                    }
                }
                s += full ? TW : VW;
            }
        }
    }
}

/* All of y's columns: y[r, :n] = x[r, :k] w (+ bias) (+ y when accumulate). */
void gk_gemm(const float *x, int64_t rows, int64_t k, const float *w, int64_t n, const float *bias, float *y,
             int accumulate) {
    gk_gemm_cols(x, rows, k, w, n, 0, n, bias, y, accumulate);
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
        for (int64_t i = 0; i < inter; i += VW) {
            const vfloat gv = vload(g + i);
            const vint neg = gv < zero;
            const vfloat e = vexp_nonpos(vselect(neg, gv, zero - gv));
            const vfloat act = vselect(neg, gv * e, gv) / (one + e);
            vstore(out + r * inter + i, act * vload(u + i));
        }
    }
}


/* dw[o, :] += sum_r dy[r, o] x[r, :] for up to TR outputs o, from the packed chunks */
#define FULL_GRAD(mo) tile(mo, TV, dyp + o * rr, 1, TR, rr, xp + s, width, k, NULL, dw + o * k + i + s, 1)
#define ONE_GRAD(mo) tile(mo, 1, dyp + o * rr, 1, TR, rr, xp + s, width, k, NULL, dw + o * k + i + s, 1)

/* Rows of dy and x taken per pass. Both are copied into packed chunks first: read in
 * place, a row stride of a few KiB puts every row of a chunk in the same few L1 sets. */
#define R_CHUNK 128
/* Columns of x per packed chunk: each pass over a chunk reads all of dy's packed chunk
 * ([R_CHUNK, n], up to MiBs), so wider chunks mean fewer such passes. */
#define X_BLOCK (4 * LANES)

/* The gradients of y = x W^T + b for W [n, k] (nn.Linear's layout), added in:
 * dw[o, :] += sum_r dy[r, o] x[r, :] and db[o] += sum_r dy[r, o] (db may be NULL).
 * dy is [rows, n] and x [rows, k]; k a multiple of LANES. Returns -1 when no memory
 * for the packed chunk of dy could be had, else 0. */
int gk_gemm_grad(const float *dy, const float *x, int64_t rows, int64_t n, int64_t k, float *dw, float *db) {
    const int64_t nt = (n + TR - 1) / TR * TR;
    float *dyp = malloc(sizeof(float) * (size_t)(R_CHUNK * nt));
    float *xp = malloc(sizeof(float) * (size_t)(R_CHUNK * X_BLOCK));
    if (!dyp || !xp) {
        free(dyp);
        free(xp);
        return -1;
    }
    for (int64_t r0 = 0; r0 < rows; r0 += R_CHUNK) {
        const int64_t rr = rows - r0 < R_CHUNK ? rows - r0 : R_CHUNK;
        /* dyp[o / TR][r][o % TR]: block o / TR starts at (o / TR) TR rr = o rr for o a multiple of TR */
        for (int64_t r = 0; r < rr; r++)
            for (int64_t o = 0; o < nt; o++)
                dyp[(o / TR * rr + r) * TR + o % TR] = o < n ? dy[(r0 + r) * n + o] : 0.0f;
        for (int64_t i = 0; i < k; i += X_BLOCK) {
            const int64_t width = k - i < X_BLOCK ? k - i : X_BLOCK;
            for (int64_t r = 0; r < rr; r++)
                memcpy(xp + r * width, x + (r0 + r) * k + i, sizeof(float) * (size_t)width);
            for (int64_t s = 0; s < width;) {
                const int full = width - s >= TW;
                for (int64_t o = 0; o < n; o += TR) {
                    if (full) {
                        switch (n - o < TR ? n - o : TR) { ROW_CASES(FULL_GRAD) }
                    } else {
                        switch (n - o < TR ? n - o : TR) { ROW_CASES(ONE_GRAD) }
                    }
                }
                s += full ? TW : VW;
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
