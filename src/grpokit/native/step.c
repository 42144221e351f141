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
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>

#include "kernels.h"

typedef struct {
    const gk_model *m;
    const float *input;
    const int64_t *pos, *rows; /* rows: the cache row of each batch row (NULL: the same) */
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
        gk_rms_rows(x, t->ln1, normed, rows, h, t->eps1);
        gk_gemm(normed, rows, h, t->w_qkv, nqkv, t->b_qkv, big, 0);
        /* a row's tokens in order: each writes its cache column, then attends up to it */
        for (int64_t r = 0; r < rows; r++) {
            const int64_t b = job->rows ? job->rows[job->first + r / w] : job->first + r / w, p = pos[r];
            gk_attend_row(big + r * nqkv, m->cos + p * d, m->sin + p * d, t->k_cache + b * hk * d * cap,
                          t->v_cache + b * hk * cap * d, job->valid + b * cap, hq, hk, d, cap, col + r % w,
                          m->scale, att + r * hq * d, scratch);
        }
        gk_gemm(att, rows, hq * d, t->w_o, h, t->b_o, x, 1);
        gk_rms_rows(x, t->ln2, normed, rows, h, t->eps2);
        gk_gemm(normed, rows, h, t->w_gu, 2 * inter, t->b_gu, big, 0);
        gk_swiglu_rows(big, act, rows, inter);
        gk_gemm(act, rows, inter, t->w_down, h, t->b_down, x, 1);
    }
    gk_rms_rows(x, m->final_w, normed, rows, h, m->final_eps);
    gk_gemm(normed, rows, h, m->head, m->vocab_pad, m->head_b, big, 0);
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
 * (valid [caches, cap] must have the columns of real tokens set) and logits
 * [B, width, vocab] come back. Batch row b uses cache row rows[b] (rows NULL: row b), so
 * finished rows can leave the batch without their caches being copied. One token per
 * row is a decode step; more is a prefill, or the forward of known tokens. Rows are
 * split between up to `threads` threads, at least `min_rows` each; scratch holds
 * gk_decode_step_scratch(...) floats. */
void gk_decode_step(const gk_model *m, int64_t batch, int64_t width, const float *input, const int64_t *pos,
                    const int64_t *rows, int64_t col, const uint8_t *valid, float *logits, int threads,
                    int64_t min_rows, float *scratch) {
    const int n = split(batch, threads, min_rows);
    step_job jobs[MAX_THREADS];
    pthread_t helpers[MAX_THREADS];
    int spawned[MAX_THREADS] = {0};
    for (int t = 0; t < n; t++) {
        const int64_t first = batch * t / n, last = batch * (t + 1) / n;
        jobs[t] = (step_job){m, input, pos, rows, valid, first, last, width, col, logits, scratch};
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

/* Sizes and last-field offsets of the structs, for the Python side's ctypes mirrors to be
 * checked against (a mismatch reads garbage, or crashes). */
void gk_struct_layout(int64_t *out) {
    out[0] = (int64_t)sizeof(gk_layer);
    out[1] = (int64_t)offsetof(gk_layer, t_down);
    out[2] = (int64_t)sizeof(gk_model);
    out[3] = (int64_t)offsetof(gk_model, t_head);
}
