/* The whole one-token decode step of a small Llama-family model in one call.
 *
 * For a model of a few million parameters a decode step is ~40 torch ops over a few
 * dozen rows, and each costs more in dispatch and thread hand-offs than in arithmetic;
 * Python threads cannot split the rows either, since every op takes the interpreter
 * lock again. Here one call runs every layer (norms, products, rotary embedding, cache
 * write, attention, SwiGLU, output layer) for all rows, from their input embeddings, with
 * the rows split between threads that never wait on each other: rows are independent.
 *
 * Weights come transposed ([in, out], out padded to a multiple of LANES with zeros) and
 * cut into panels of columns (see gemm), so that a product streams each panel through
 * vector registers.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include "kernels.h"

/* One decoder layer. Transposed weights: w_qkv [hidden, (hq + 2 hk) d] (q, k, v heads),
 * w_o [hq d, hidden], w_gu [hidden, 2 inter] (gate columns, then up columns),
 * w_down [inter, hidden]. Biases are NULL when absent. Caches as gk_decode_attention's:
 * k_cache [B, hk, d, cap], v_cache [B, hk, cap, d]. */
typedef struct {
    const float *ln1, *ln2;
    float eps1, eps2;
    const float *w_qkv, *b_qkv, *w_o, *b_o, *w_gu, *b_gu, *w_down, *b_down;
    float *k_cache, *v_cache;
} gk_layer;

/* The model: sizes, the layers, the final norm, the output layer transposed
 * [hidden, vocab_pad] (zero columns past vocab), and the rotary tables [positions, d].
 * hidden, inter and d are multiples of LANES. The input embedding stays with torch. */
typedef struct {
    int64_t n_layers, hidden, hq, hk, d, inter, vocab, vocab_pad, cap;
    const gk_layer *layers;
    const float *final_w, *head, *head_b, *cos, *sin;
    float final_eps, scale;
} gk_model;

/* Weights are stored in panels of PANEL columns: panel c (columns c .. c + PANEL - 1, the
 * last one narrower) is a contiguous [k, width] block at offset c k. Row-major [k, n]
 * would put consecutive k of one block of columns n floats apart: for n = 1024 that is
 * 4 KiB, and every row of the block then falls in the same few L1 sets. */
#define PANEL (4 * LANES)

/* y[r, :n] = x[r, :k] w (+ bias) (+ y[r, :n] when accumulate) for r < rows; w is [k, n]
 * in panels, n a multiple of LANES; x and y have row strides k and n. The sum over k is
 * formed first and bias and y are added after it, the order of torch's addmm. Up to 4
 * rows and one panel (4 blocks of LANES columns) are held in registers at a time. */
static inline __attribute__((always_inline)) void tile(const int mr, const int nv, const float *x, int64_t k,
                                                       const float *w, int64_t n, const float *bias, float *y,
                                                       int accumulate) {
    const int64_t wp = nv * LANES; /* the panel's width */
    vfloat acc[4][4];
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nv; j++) acc[r][j] = (vfloat){0};
    for (int64_t i = 0; i < k; i++) {
        vfloat wv[4];
        for (int j = 0; j < nv; j++) wv[j] = vload(w + i * wp + j * LANES);
        for (int r = 0; r < mr; r++) {
            const float xv = x[r * k + i];
            for (int j = 0; j < nv; j++) acc[r][j] += xv * wv[j];
        }
    }
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nv; j++) {
            vfloat v = acc[r][j];
            if (bias) v += vload(bias + j * LANES);
            if (accumulate) v += vload(y + r * n + j * LANES);
            vstore(y + r * n + j * LANES, v);
        }
}

#define TILE_ROWS(mr)                                                                         \
    switch (nv) {                                                                             \
    case 4: tile(mr, 4, xr, k, wc, n, bc, yc, accumulate); break;                             \
    case 3: tile(mr, 3, xr, k, wc, n, bc, yc, accumulate); break;                             \
    case 2: tile(mr, 2, xr, k, wc, n, bc, yc, accumulate); break;                             \
    default: tile(mr, 1, xr, k, wc, n, bc, yc, accumulate); break;                            \
    }

static void gemm(const float *x, int64_t rows, int64_t k, const float *w, int64_t n, const float *bias, float *y,
                 int accumulate) {
    for (int64_t c = 0; c < n; c += PANEL) {
        const int nv = (int)((n - c) / LANES < 4 ? (n - c) / LANES : 4);
        const float *wc = w + c * k, *bc = bias ? bias + c : NULL;
        /* Rows in fours while this panel stays in cache. */
        for (int64_t r = 0; r < rows; r += 4) {
            const float *xr = x + r * k;
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

static void rms_rows(const float *x, const float *w, float *out, int64_t rows, int64_t n, float eps) {
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
static void swiglu_rows(const float *gu, float *out, int64_t rows, int64_t inter) {
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

typedef struct {
    const gk_model *m;
    const float *input;
    const int64_t *pos;
    const uint8_t *valid;
    int64_t first, last, width, col;
    float *logits, *scratch;
} step_job;

static int64_t wide_floats(const gk_model *m) {
    const int64_t nqkv = (m->hq + 2 * m->hk) * m->d;
    const int64_t wide = nqkv > 2 * m->inter ? nqkv : 2 * m->inter;
    return wide > m->vocab_pad ? wide : m->vocab_pad;
}

/* Scratch floats for `rows` rows of `width` tokens written from column col. */
static int64_t job_floats(const gk_model *m, int64_t rows, int64_t width, int64_t col) {
    const int64_t per_token = 2 * m->hidden + wide_floats(m) + m->inter + m->hq * m->d;
    return rows * width * per_token + gk_attend_scratch(m->hq, m->d, col + width - 1) + LANES;
}

/* Rows first .. last - 1 of the batch, `width` tokens each, through the whole model. */
static void *step_rows(void *arg) {
    step_job *job = arg;
    const gk_model *m = job->m;
    const int64_t w = job->width, rows = (job->last - job->first) * w; /* product rows: (row, token) */
    const int64_t h = m->hidden, d = m->d, hq = m->hq, hk = m->hk;
    const int64_t nqkv = (hq + 2 * hk) * d, inter = m->inter, cap = m->cap, col = job->col;
    const int64_t wide = wide_floats(m);
    float *x = job->scratch, *normed = x + rows * h, *big = normed + rows * h, *act = big + rows * wide;
    float *att = act + rows * inter, *scratch = att + rows * hq * d;
    const int64_t *pos = job->pos + job->first * w;
    memcpy(x, job->input + job->first * w * h, sizeof(float) * (size_t)(rows * h));
    for (int64_t l = 0; l < m->n_layers; l++) {
        const gk_layer *t = m->layers + l;
        rms_rows(x, t->ln1, normed, rows, h, t->eps1);
        gemm(normed, rows, h, t->w_qkv, nqkv, t->b_qkv, big, 0);
        /* a row's tokens in order: each writes its cache column, then attends up to it */
        for (int64_t r = 0; r < rows; r++) {
            const int64_t b = job->first + r / w, p = pos[r];
            gk_attend_row(big + r * nqkv, m->cos + p * d, m->sin + p * d, t->k_cache + b * hk * d * cap,
                          t->v_cache + b * hk * cap * d, job->valid + b * cap, hq, hk, d, cap, col + r % w,
                          m->scale, att + r * hq * d, scratch);
        }
        gemm(att, rows, hq * d, t->w_o, h, t->b_o, x, 1);
        rms_rows(x, t->ln2, normed, rows, h, t->eps2);
        gemm(normed, rows, h, t->w_gu, 2 * inter, t->b_gu, big, 0);
        swiglu_rows(big, act, rows, inter);
        gemm(act, rows, inter, t->w_down, h, t->b_down, x, 1);
    }
    rms_rows(x, m->final_w, normed, rows, h, m->final_eps);
    gemm(normed, rows, h, m->head, m->vocab_pad, m->head_b, big, 0);
    float *logits = job->logits + job->first * w * m->vocab;
    for (int64_t r = 0; r < rows; r++)
        memcpy(logits + r * m->vocab, big + r * m->vocab_pad, sizeof(float) * (size_t)m->vocab);
    return NULL;
}

#define MAX_THREADS 16

static int split(int64_t batch, int threads, int64_t min_rows) {
    int n = threads < MAX_THREADS ? threads : MAX_THREADS;
    if (min_rows < 1) min_rows = 1;
    if (n > batch / min_rows) n = (int)(batch / min_rows);
    return n < 1 ? 1 : n;
}

/* Floats of scratch gk_decode_step needs for these arguments. The caller keeps the
 * buffer between calls: memory malloc'ed and freed per call went back to the OS and was
 * faulted in again each time. */
int64_t gk_decode_step_scratch(const gk_model *m, int64_t batch, int64_t width, int64_t col, int threads,
                               int64_t min_rows) {
    const int n = split(batch, threads, min_rows);
    int64_t total = 0;
    for (int t = 0; t < n; t++) total += job_floats(m, batch * (t + 1) / n - batch * t / n, width, col);
    return total;
}

/* `width` tokens per row through the whole model: their input embeddings input
 * [B, width, hidden] at positions pos [B, width] go to cache columns col .. col + width - 1
 * (valid [B, cap] must have the columns of real tokens set) and logits [B, width, vocab]
 * come back. One token per row is a decode step; more is a prefill, or the forward of
 * known tokens. Rows are split between up to `threads` threads, at least `min_rows`
 * each; scratch holds gk_decode_step_scratch(...) floats. */
void gk_decode_step(const gk_model *m, int64_t batch, int64_t width, const float *input, const int64_t *pos,
                    int64_t col, const uint8_t *valid, float *logits, int threads, int64_t min_rows, float *scratch) {
    const int n = split(batch, threads, min_rows);
    step_job jobs[MAX_THREADS];
    pthread_t helpers[MAX_THREADS];
    int spawned[MAX_THREADS] = {0};
    for (int t = 0; t < n; t++) {
        const int64_t first = batch * t / n, last = batch * (t + 1) / n;
        jobs[t] = (step_job){m, input, pos, valid, first, last, width, col, logits, scratch};
        /* each job's share, rounded up to whole blocks so that no two share a cache line */
        scratch += (job_floats(m, last - first, width, col) + LANES - 1) / LANES * LANES;
    }
    for (int t = 1; t < n; t++) spawned[t] = pthread_create(&helpers[t], NULL, step_rows, &jobs[t]) == 0;
    step_rows(&jobs[0]);
    for (int t = 1; t < n; t++) {
        if (spawned[t])
            pthread_join(helpers[t], NULL);
        else
            step_rows(&jobs[t]); /* no thread to be had: do its rows here */
    }
}
