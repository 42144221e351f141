/* The whole one-token decode step of a Llama-family model in one call.
 *
 * For a model of a few million parameters a decode step is ~40 torch ops over a few
 * dozen rows, and each costs more in dispatch and thread hand-offs than in arithmetic;
 * Python threads cannot split the rows either, since every op takes the interpreter
 * lock again. Here one call runs every layer (norms, products, rotary embedding, cache
 * write, attention, SwiGLU, output layer) for all rows, from their input embeddings.
 *
 * Threads share the work in one of two ways. By rows: each takes a share of the batch
 * through the whole model and never waits on another, but each streams every weight;
 * that suits weights that stay in cache. By columns: every thread takes all rows and a
 * share of each product's output columns, so each weight is read once per step, and the
 * threads meet at a barrier after each op; that suits weights streamed from memory
 * (bound by that traffic).
 *
 * Weights come transposed ([in, out], out padded to a multiple of LANES with zeros) and
 * cut into panels of columns (see gemm), so that a product streams each panel through
 * vector registers.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>

#include "kernels.h"

#define MAX_THREADS 16

/* The threads working on the same rows (by columns), or one thread alone (by rows). */
typedef struct {
    atomic_int arrived, phase, size; /* size: set before `go`, read after it */
    atomic_int go;
} team;

/* Every member waits until all have arrived. Spins: the wait between ops is a few
 * microseconds, which a futex sleep and wake-up would exceed; it yields the core after
 * a while in case a member is descheduled. */
static void team_wait(team *tm) {
    const int n = atomic_load(&tm->size);
    if (n <= 1) return;
    const int phase = atomic_load(&tm->phase);
    if (atomic_fetch_add(&tm->arrived, 1) == n - 1) {
        atomic_store(&tm->arrived, 0);
        atomic_fetch_add(&tm->phase, 1);
        return;
    }
    for (long spins = 0; atomic_load(&tm->phase) == phase; spins++)
        if (spins > 4096) sched_yield();
}

typedef struct {
    const gk_model *m;
    const float *input;
    const int64_t *pos, *rows; /* rows: the cache row of each batch row (NULL: the same) */
    const uint8_t *valid;
    int64_t first, last, width, col;
    float *logits, *shared, *scratch; /* shared: the activations of rows first .. last - 1 */
    team *tm;
    int member; /* this thread's index in its team */
} step_job;

static int64_t wide_floats(const gk_model *m) {
    const int64_t nqkv = (m->hq + 2 * m->hk) * m->d;
    const int64_t wide = nqkv > 2 * m->inter ? nqkv : 2 * m->inter;
    return wide > m->vocab_pad ? wide : m->vocab_pad;
}

/* Activation floats for `rows` rows of `width` tokens, and one thread's attention
 * scratch for tokens written from column col; both rounded up to whole blocks, so that
 * no two threads' parts share a cache line. */
static int64_t blocks(int64_t floats) { return (floats + LANES - 1) / LANES * LANES; }
static int64_t shared_floats(const gk_model *m, int64_t rows, int64_t width) {
    return blocks(rows * width * (2 * m->hidden + wide_floats(m) + m->inter + m->hq * m->d));
}
static int64_t own_floats(const gk_model *m, int64_t width, int64_t col) {
    return blocks(gk_attend_scratch(m->hq, m->d, col + width - 1));
}

/* [lo, hi) of n items for member t of a team of size: an even share. */
static void share(int64_t n, int t, int size, int64_t *lo, int64_t *hi) {
    *lo = n * t / size;
    *hi = n * (t + 1) / size;
}

/* This member's panels of a product with n output columns. */
static void columns(int64_t n, int t, int size, int64_t *lo, int64_t *hi) {
    const int64_t panels = (n + PANEL - 1) / PANEL;
    share(panels, t, size, lo, hi);
    *lo *= PANEL;
    *hi = *hi * PANEL < n ? *hi * PANEL : n;
}

#define PRODUCT(x, k, w, n, bias, y, acc)                                                     \
    do {                                                                                      \
        int64_t c0, c1;                                                                       \
        columns(n, t, size, &c0, &c1);                                                        \
        gk_gemm_cols(x, rows, k, w, n, c0, c1, bias, y, acc);                                 \
        team_wait(job->tm);                                                                   \
    } while (0)

/* Rows first .. last - 1 of the batch, `width` tokens each, through the whole model,
 * with the rest of this job's team: products by columns, the rest by rows. */
static void *step_rows(void *arg) {
    step_job *job = arg;
    while (!atomic_load(&job->tm->go)) sched_yield(); /* the team's size is known from here */
    const gk_model *m = job->m;
    const int t = job->member, size = atomic_load(&job->tm->size);
    const int64_t w = job->width, nb = job->last - job->first, rows = nb * w; /* product rows: (row, token) */
    const int64_t h = m->hidden, d = m->d, hq = m->hq, hk = m->hk;
    const int64_t nqkv = (hq + 2 * hk) * d, inter = m->inter, cap = m->cap, col = job->col;
    const int64_t wide = wide_floats(m);
    float *x = job->shared, *normed = x + rows * h, *big = normed + rows * h, *act = big + rows * wide;
    float *att = act + rows * inter;
    const int64_t *pos = job->pos + job->first * w;
    int64_t r0, r1, b0, b1; /* this member's product rows, and its batch rows for attention */
    share(rows, t, size, &r0, &r1);
    share(nb, t, size, &b0, &b1);
    memcpy(x + r0 * h, job->input + (job->first * w + r0) * h, sizeof(float) * (size_t)((r1 - r0) * h));
    team_wait(job->tm);
    for (int64_t l = 0; l < m->n_layers; l++) {
        const gk_layer *ly = m->layers + l;
        gk_rms_rows(x + r0 * h, ly->ln1, normed + r0 * h, r1 - r0, h, ly->eps1);
        team_wait(job->tm);
        PRODUCT(normed, h, ly->w_qkv, nqkv, ly->b_qkv, big, 0);
        /* a row's tokens in order: each writes its cache column, then attends up to it */
        for (int64_t r = b0 * w; r < b1 * w; r++) {
            const int64_t b = job->rows ? job->rows[job->first + r / w] : job->first + r / w, p = pos[r];
            gk_attend_row(big + r * nqkv, m->cos + p * d, m->sin + p * d, ly->k_cache + b * hk * d * cap,
                          ly->v_cache + b * hk * cap * d, job->valid + b * cap, hq, hk, d, cap, col + r % w,
                          m->scale, att + r * hq * d, job->scratch);
        }
        team_wait(job->tm);
        PRODUCT(att, hq * d, ly->w_o, h, ly->b_o, x, 1);
        gk_rms_rows(x + r0 * h, ly->ln2, normed + r0 * h, r1 - r0, h, ly->eps2);
        team_wait(job->tm);
        PRODUCT(normed, h, ly->w_gu, 2 * inter, ly->b_gu, big, 0);
        gk_swiglu_rows(big + r0 * 2 * inter, act + r0 * inter, r1 - r0, inter);
        team_wait(job->tm);
        PRODUCT(act, inter, ly->w_down, h, ly->b_down, x, 1);
    }
    gk_rms_rows(x + r0 * h, m->final_w, normed + r0 * h, r1 - r0, h, m->final_eps);
    team_wait(job->tm);
    int64_t c0, c1;
    columns(m->vocab_pad, t, size, &c0, &c1);
    gk_gemm_cols(normed, rows, h, m->head, m->vocab_pad, c0, c1, m->head_b, big, 0);
    c1 = c1 < m->vocab ? c1 : m->vocab; /* this member's logits, straight from its own columns */
    float *logits = job->logits + job->first * w * m->vocab;
    for (int64_t r = 0; r < rows && c0 < c1; r++)
        memcpy(logits + r * m->vocab + c0, big + r * m->vocab_pad + c0, sizeof(float) * (size_t)(c1 - c0));
    return NULL;
}

/* Threads for a call: by columns every thread asked for (up to MAX_THREADS), by rows
 * only as many as get at least min_rows rows each. */
static int split(int64_t batch, int threads, int64_t min_rows, int by_columns) {
    int n = threads < MAX_THREADS ? threads : MAX_THREADS;
    if (min_rows < 1) min_rows = 1;
    if (!by_columns && n > batch / min_rows) n = (int)(batch / min_rows);
    return n < 1 ? 1 : n;
}

/* Floats of scratch gk_decode_step needs for these arguments. The caller keeps the
 * buffer between calls: memory malloc'ed and freed per call went back to the OS and was
 * faulted in again each time. */
int64_t gk_decode_step_scratch(const gk_model *m, int64_t batch, int64_t width, int64_t col, int threads,
                               int64_t min_rows, int by_columns) {
    const int n = split(batch, threads, min_rows, by_columns);
    if (by_columns) return shared_floats(m, batch, width) + n * own_floats(m, width, col);
    int64_t total = 0;
    for (int t = 0; t < n; t++)
        total += shared_floats(m, batch * (t + 1) / n - batch * t / n, width) + own_floats(m, width, col);
    return total;
}

/* `width` tokens per row through the whole model: their input embeddings input
 * [B, width, hidden] at positions pos [B, width] go to cache columns col .. col + width - 1
 * (valid [caches, cap] must have the columns of real tokens set) and logits
 * [B, width, vocab] come back. Batch row b uses cache row rows[b] (rows NULL: row b), so
 * finished rows can leave the batch without their caches being copied. One token per
 * row is a decode step; more is a prefill, or the forward of known tokens. Up to
 * `threads` threads share the work: by columns (by_columns), or by rows, at least
 * `min_rows` each. scratch holds gk_decode_step_scratch(...) floats. */
void gk_decode_step(const gk_model *m, int64_t batch, int64_t width, const float *input, const int64_t *pos,
                    const int64_t *rows, int64_t col, const uint8_t *valid, float *logits, int threads,
                    int64_t min_rows, int by_columns, float *scratch) {
    const int n = split(batch, threads, min_rows, by_columns);
    step_job jobs[MAX_THREADS];
    team teams[MAX_THREADS]; /* by columns only the first is used */
    pthread_t helpers[MAX_THREADS];
    int spawned[MAX_THREADS] = {0};
    float *shared = scratch;
    if (by_columns) scratch += shared_floats(m, batch, width);
    for (int t = 0; t < n; t++) {
        team *tm = &teams[by_columns ? 0 : t];
        atomic_init(&tm->arrived, 0);
        atomic_init(&tm->phase, 0);
        atomic_init(&tm->size, 1);
        atomic_init(&tm->go, !by_columns); /* a team of one starts at once */
        const int64_t first = by_columns ? 0 : batch * t / n, last = by_columns ? batch : batch * (t + 1) / n;
        if (!by_columns) {
            shared = scratch;
            scratch += shared_floats(m, last - first, width);
        }
        jobs[t] = (step_job){m, input, pos, rows, valid, first, last, width, col, logits, shared, scratch, tm,
                             by_columns ? t : 0};
        scratch += own_floats(m, width, col);
    }
    int members = 1;
    for (int t = 1; t < n; t++) {
        /* by columns the team is the threads that could be had: its size is fixed before
         * anyone starts, and members past a failed start would never arrive */
        if (by_columns && members < t) break;
        spawned[t] = pthread_create(&helpers[t], NULL, step_rows, &jobs[t]) == 0;
        members += spawned[t];
    }
    atomic_store(&teams[0].size, by_columns ? members : 1);
    atomic_store(&teams[0].go, 1);
    step_rows(&jobs[0]);
    for (int t = 1; t < n; t++) {
        if (spawned[t])
            pthread_join(helpers[t], NULL);
        else if (!by_columns)
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
