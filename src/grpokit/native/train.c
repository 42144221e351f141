/* The policy's training pass of a small Llama-family model in C: a forward that keeps
 * what its backward needs, and that backward.
 *
 * For a model of a few million parameters torch's training pass is hundreds of small
 * ops per step, each with dispatch, an allocation and a trip through memory; here each
 * sequence runs through every layer in a few large products (step.c's panels), and
 * the sequences are split between threads that never wait on each other: a thread
 * keeps its own parameter gradients, which the caller sums.
 *
 * Sequences are batch rows of `length` columns, any padding marked in `valid`, as in a
 * transformers forward with an attention mask: a column attends to the valid columns at
 * or before it. What is computed per column is the log-prob of the next token (targets,
 * -1 where not needed) under softmax(logits / temperature), and the entropy there.
 */
#include <pthread.h>
#include <stdlib.h>

#include "kernels.h"

typedef struct {
    const gk_model *m;
    int64_t first, last, length, lpad; /* rows first .. last - 1; columns, and rounded up to LANES */
    const float *input;                /* [B, length, hidden]: input embeddings */
    const int64_t *pos;                /* [B, length] position ids */
    const uint8_t *valid;              /* [B, lpad] */
    const int64_t *targets;            /* [B, length] */
    float inv_temp;
    float *logp, *entropy;             /* [B, length] (forward; entropy may be NULL) */
    const float *grad_logp;            /* [B, length] (backward) */
    float *grad_input;                 /* [B, length, hidden] (backward) */
    float *grads;                      /* this thread's parameter gradients (backward), zeroed */
    float *saved, *work;               /* this thread's activations and work space */
} train_job;

static int64_t nqkv(const gk_model *m) { return (m->hq + 2 * m->hk) * m->d; }

static int64_t wide(const gk_model *m) {
    int64_t w = nqkv(m) > 2 * m->inter ? nqkv(m) : 2 * m->inter;
    return w > m->vocab_pad ? w : m->vocab_pad;
}

/* Per layer, saved: x in, qkv, attention out, x mid, gate/up (per column), rotated
 * keys [hk, d, lpad] and values [hk, lpad, d] (per row); then x before the final norm. */
static int64_t layer_saved(const gk_model *m, int64_t rows, int64_t length, int64_t lpad) {
    return rows * length * (2 * m->hidden + nqkv(m) + m->hq * m->d + 2 * m->inter) + 2 * rows * m->hk * lpad * m->d;
}

static int64_t saved_floats(const gk_model *m, int64_t rows, int64_t length, int64_t lpad) {
    return m->n_layers * layer_saved(m, rows, length, lpad) + rows * length * m->hidden + LANES;
}

static int64_t work_floats(const gk_model *m, int64_t rows, int64_t length, int64_t lpad) {
    const int64_t cols = rows * length;
    return cols * (4 * m->hidden + 2 * m->inter + wide(m) + m->hq * m->d) + 4 * lpad + (m->hq + 2) * m->d +
           2 * m->hk * lpad * m->d + LANES;
}

/* Parameter gradients of one layer, in this order: ln1, w_qkv [nqkv, hidden], b_qkv,
 * w_o [hidden, hq d], b_o, ln2, w_gu [2 inter, hidden], b_gu, w_down [hidden, inter],
 * b_down; after the layers: final norm, head [vocab_pad, hidden], head bias [vocab_pad].
 * Biases have their place whether or not the model has them. */
static int64_t layer_grads(const gk_model *m) {
    const int64_t h = m->hidden, i = m->inter;
    return h + nqkv(m) * h + nqkv(m) + h * m->hq * m->d + h + h + 2 * i * h + 2 * i + h * i + h;
}

int64_t gk_train_grad_floats(const gk_model *m) {
    return m->n_layers * layer_grads(m) + m->hidden + m->vocab_pad * m->hidden + m->vocab_pad;
}

/* ------------------------------------------------------------------ forward */

static void *forward_rows(void *arg) {
    train_job *job = arg;
    const gk_model *m = job->m;
    const int64_t rows = job->last - job->first, len = job->length, lp = job->lpad, cols = rows * len;
    const int64_t h = m->hidden, d = m->d, hq = m->hq, hk = m->hk, nq = nqkv(m), inter = m->inter;
    float *x = job->work, *normed = x + cols * h, *big = normed + cols * h, *act = big + cols * wide(m);
    float *scratch = act + cols * inter;
    memcpy(x, job->input + job->first * len * h, sizeof(float) * (size_t)(cols * h));
    float *s = job->saved;
    for (int64_t l = 0; l < m->n_layers; l++) {
        const gk_layer *t = m->layers + l;
        float *xin = s, *qkv = xin + cols * h, *att = qkv + cols * nq, *xmid = att + cols * hq * d;
        float *gu = xmid + cols * h, *kt = gu + cols * 2 * inter, *vc = kt + rows * hk * d * lp;
        s += layer_saved(m, rows, len, lp);
        memcpy(xin, x, sizeof(float) * (size_t)(cols * h));
        gk_rms_rows(x, t->ln1, normed, cols, h, t->eps1);
        gk_gemm(normed, cols, h, t->w_qkv, nq, t->b_qkv, qkv, 0);
        memset(kt, 0, sizeof(float) * (size_t)(2 * rows * hk * d * lp)); /* blocks past the last column are read */
        for (int64_t r = 0; r < rows; r++) {
            const int64_t b = job->first + r;
            for (int64_t c = 0; c < len; c++) {
                const int64_t p = job->pos[b * len + c];
                gk_attend_row(qkv + (r * len + c) * nq, m->cos + p * d, m->sin + p * d, kt + r * hk * d * lp,
                              vc + r * hk * lp * d, job->valid + b * lp, hq, hk, d, lp, c, m->scale,
                              att + (r * len + c) * hq * d, scratch);
            }
        }
        gk_gemm(att, cols, hq * d, t->w_o, h, t->b_o, x, 1);
        memcpy(xmid, x, sizeof(float) * (size_t)(cols * h));
        gk_rms_rows(x, t->ln2, normed, cols, h, t->eps2);
        gk_gemm(normed, cols, h, t->w_gu, 2 * inter, t->b_gu, gu, 0);
        gk_swiglu_rows(gu, act, cols, inter);
        gk_gemm(act, cols, inter, t->w_down, h, t->b_down, x, 1);
    }
    memcpy(s, x, sizeof(float) * (size_t)(cols * h));
    gk_rms_rows(x, m->final_w, normed, cols, h, m->final_eps);
    gk_gemm(normed, cols, h, m->head, m->vocab_pad, m->head_b, big, 0);
    for (int64_t c = 0; c < cols; c++) {
        const int64_t at = job->first * len + c, target = job->targets[at];
        if (target < 0) {
            job->logp[at] = 0.0f;
            if (job->entropy) job->entropy[at] = 0.0f;
            continue;
        }
        const float *z = big + c * m->vocab_pad;
        float top = -INFINITY;
        for (int64_t v = 0; v < m->vocab; v++) top = z[v] * job->inv_temp > top ? z[v] * job->inv_temp : top;
        double total = 0.0, weighted = 0.0;
        for (int64_t v = 0; v < m->vocab; v++) {
            const float e = expf(z[v] * job->inv_temp - top);
            total += e;
            weighted += (double)e * (z[v] * job->inv_temp - top);
        }
        const float lse = (float)log(total); /* log-sum-exp minus top */
        job->logp[at] = z[target] * job->inv_temp - top - lse;
        if (job->entropy) job->entropy[at] = lse - (float)(weighted / total);
    }
    return NULL;
}

/* ------------------------------------------------------------------ backward */

/* dx (+)= d/dx of w * (x / rms(x)) applied to dy, and dw += dy * x / rms(x), per row. */
static void rms_backward(const float *dy, const float *x, const float *w, float eps, int64_t rows, int64_t n,
                         float *dx, int accumulate, float *dw) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n, *g = dy + r * n;
        float ss = 0.0f, dot = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int64_t i = 0; i < n; i++) ss += xr[i] * xr[i];
        const float rstd = 1.0f / sqrtf(ss / (float)n + eps);
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < n; i++) dot += g[i] * w[i] * xr[i] * rstd;
        const float mean = dot / (float)n;
        float *o = dx + r * n;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            const float xhat = xr[i] * rstd;
            const float v = rstd * (g[i] * w[i] - xhat * mean);
            o[i] = accumulate ? o[i] + v : v;
            dw[i] += g[i] * xhat;
        }
    }
}

/* dgu from da for a = silu(g) u: du = da silu(g), dg = da u s (1 + g (1 - s)), s = sigmoid(g)
 * (from exp(-|g|), as the forward's silu). */
static void swiglu_backward(const float *da, const float *gu, float *dgu, int64_t rows, int64_t inter) {
    const vfloat zero = {0}, one = zero + 1.0f;
    for (int64_t r = 0; r < rows; r++) {
        const float *g = gu + r * 2 * inter, *u = g + inter, *a = da + r * inter;
        float *dg = dgu + r * 2 * inter, *du = dg + inter;
        for (int64_t i = 0; i < inter; i += LANES) {
            const vfloat gv = vload(g + i), av = vload(a + i);
            const vint neg = gv < zero;
            const vfloat e = vexp_nonpos(vselect(neg, gv, zero - gv));
            const vfloat sig = vselect(neg, e, one) / (one + e);
            vstore(du + i, av * gv * sig);
            vstore(dg + i, av * vload(u + i) * sig * (one + gv * (one - sig)));
        }
    }
}

/* The gradient of rotate(): x[i] reaches out[i] (times cos[i]) and out[i -+ d/2]. */
static void rotate_backward(const float *g, const float *cos, const float *sin, float *out, int64_t d) {
    const int64_t half = d / 2;
    for (int64_t i = 0; i < half; i++) out[i] = g[i] * cos[i] + g[i + half] * sin[i + half];
    for (int64_t i = half; i < d; i++) out[i] = g[i] * cos[i] - g[i - half] * sin[i - half];
}

/* Attention backward of one sequence: datt [len, hq d] -> dqkv [len, nqkv], given the
 * forward's qkv (before rotary) and its rotated-key and value caches. */
static void attention_backward(const gk_model *m, const train_job *job, int64_t b, const float *qkv,
                               const float *kt, const float *vc, const float *datt, float *dqkv, float *work) {
    const int64_t len = job->length, lp = job->lpad, d = m->d, hq = m->hq, hk = m->hk, nq = nqkv(m);
    const int64_t rep = hq / hk;
    const uint8_t *ok = job->valid + b * lp;
    float *p = work, *dp = p + lp, *q = dp + lp, *dq = q + hq * d, *tmp = dq + d;
    float *dk = tmp + d, *dv = dk + hk * lp * d; /* [hk, lp, d] each, rotated keys' and values' gradients */
    memset(dk, 0, sizeof(float) * (size_t)(2 * hk * lp * d));
    for (int64_t c = 0; c < len; c++) {
        const int64_t pc = job->pos[b * len + c];
        const float *cs = m->cos + pc * d, *sn = m->sin + pc * d;
        for (int64_t h = 0; h < hq; h++) rotate(qkv + c * nq + h * d, cs, sn, q + h * d, d);
        for (int64_t h = 0; h < hq; h++) {
            const int64_t g = h / rep, padded = (c + LANES) / LANES * LANES;
            const float *qh = q + h * d, *kg = kt + g * d * lp, *vg = vc + g * lp * d, *go = datt + c * hq * d + h * d;
            /* the forward's scores, a block of columns at a time (keys are stored transposed) */
            for (int64_t j0 = 0; j0 < padded; j0 += LANES) {
                vfloat acc = {0};
                for (int64_t i = 0; i < d; i++) acc += qh[i] * vload(kg + i * lp + j0);
                vstore(p + j0, acc);
            }
            const float total = masked_exp(p, ok, c + 1, m->scale);
            if (total <= 0.0f) { /* a padding column that attends to nothing: no gradient */
                memset(dqkv + c * nq + h * d, 0, sizeof(float) * (size_t)d);
                continue;
            }
            const float inv = 1.0f / total;
            float pd = 0.0f;
            for (int64_t j = 0; j <= c; j++) {
                p[j] *= inv;
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int64_t i = 0; i < d; i++) acc += go[i] * vg[j * d + i];
                dp[j] = acc;
                pd += p[j] * acc;
            }
            /* dp <- d loss / d score (scale included) */
#pragma omp simd
            for (int64_t j = 0; j <= c; j++) dp[j] = p[j] * (dp[j] - pd) * m->scale;
            for (int64_t i = 0; i < d; i++) {
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int64_t j = 0; j <= c; j++) acc += dp[j] * kg[i * lp + j];
                dq[i] = acc;
            }
            for (int64_t j = 0; j <= c; j++) {
                if (p[j] == 0.0f) continue;
                const float ds = dp[j], pj = p[j];
                float *dkj = dk + (g * lp + j) * d, *dvj = dv + (g * lp + j) * d;
#pragma omp simd
                for (int64_t i = 0; i < d; i++) {
                    dkj[i] += ds * qh[i];
                    dvj[i] += pj * go[i];
                }
            }
            rotate_backward(dq, cs, sn, dqkv + c * nq + h * d, d);
        }
    }
    for (int64_t c = 0; c < len; c++) {
        const int64_t pc = job->pos[b * len + c];
        for (int64_t g = 0; g < hk; g++) {
            rotate_backward(dk + (g * lp + c) * d, m->cos + pc * d, m->sin + pc * d, dqkv + c * nq + (hq + g) * d, d);
            memcpy(dqkv + c * nq + (hq + hk + g) * d, dv + (g * lp + c) * d, sizeof(float) * (size_t)d);
        }
    }
}

static void *backward_rows(void *arg) {
    train_job *job = arg;
    const gk_model *m = job->m;
    const int64_t rows = job->last - job->first, len = job->length, lp = job->lpad, cols = rows * len;
    const int64_t h = m->hidden, d = m->d, hq = m->hq, hk = m->hk, nq = nqkv(m), inter = m->inter;
    const int64_t vp = m->vocab_pad;
    float *dx = job->work, *dn = dx + cols * h, *normed = dn + cols * h, *dmid = normed + cols * h;
    float *big = dmid + cols * h, *act = big + cols * wide(m), *dact = act + cols * inter;
    float *datt = dact + cols * inter, *attwork = datt + cols * hq * d;
    const float *xfin = job->saved + m->n_layers * layer_saved(m, rows, len, lp);
    float *gfinal = job->grads + m->n_layers * layer_grads(m), *ghead = gfinal + h, *ghead_b = ghead + vp * h;

    /* output layer: d logp / d z = onehot(target) - softmax(z), z = logits / temperature */
    gk_rms_rows(xfin, m->final_w, normed, cols, h, m->final_eps);
    gk_gemm(normed, cols, h, m->head, vp, m->head_b, big, 0);
    for (int64_t c = 0; c < cols; c++) {
        const int64_t at = job->first * len + c, target = job->targets[at];
        float *z = big + c * vp;
        const float g = target < 0 ? 0.0f : job->grad_logp[at];
        if (g == 0.0f) {
            memset(z, 0, sizeof(float) * (size_t)vp);
            continue;
        }
        float top = -INFINITY;
        for (int64_t v = 0; v < m->vocab; v++) top = z[v] * job->inv_temp > top ? z[v] * job->inv_temp : top;
        float total = 0.0f;
        for (int64_t v = 0; v < m->vocab; v++) {
            z[v] = expf(z[v] * job->inv_temp - top);
            total += z[v];
        }
        for (int64_t v = 0; v < m->vocab; v++) z[v] = -g * (z[v] / total) * job->inv_temp;
        z[target] += g * job->inv_temp;
        for (int64_t v = m->vocab; v < vp; v++) z[v] = 0.0f;
    }
    gk_gemm_grad(big, normed, cols, vp, h, ghead, m->head_b ? ghead_b : NULL);
    gk_gemm(big, cols, vp, m->t_head, h, NULL, dn, 0);
    rms_backward(dn, xfin, m->final_w, m->final_eps, cols, h, dx, 0, gfinal);

    for (int64_t l = m->n_layers - 1; l >= 0; l--) {
        const gk_layer *t = m->layers + l;
        const float *s = job->saved + l * layer_saved(m, rows, len, lp);
        const float *xin = s, *qkv = xin + cols * h, *att = qkv + cols * nq, *xmid = att + cols * hq * d;
        const float *gu = xmid + cols * h, *kt = gu + cols * 2 * inter, *vc = kt + rows * hk * d * lp;
        float *gl = job->grads + l * layer_grads(m);
        float *g_ln1 = gl, *g_qkv = g_ln1 + h, *g_bqkv = g_qkv + nq * h, *g_o = g_bqkv + nq, *g_bo = g_o + h * hq * d;
        float *g_ln2 = g_bo + h, *g_gu = g_ln2 + h, *g_bgu = g_gu + 2 * inter * h, *g_down = g_bgu + 2 * inter;
        float *g_bdown = g_down + h * inter;

        /* MLP: x = xmid + down(swiglu(gu(norm2(xmid)))) */
        gk_swiglu_rows(gu, act, cols, inter);
        gk_gemm_grad(dx, act, cols, h, inter, g_down, t->b_down ? g_bdown : NULL);
        gk_gemm(dx, cols, h, t->t_down, inter, NULL, dact, 0);
        swiglu_backward(dact, gu, big, cols, inter);
        gk_rms_rows(xmid, t->ln2, normed, cols, h, t->eps2);
        gk_gemm_grad(big, normed, cols, 2 * inter, h, g_gu, t->b_gu ? g_bgu : NULL);
        gk_gemm(big, cols, 2 * inter, t->t_gu, h, NULL, dn, 0);
        memcpy(dmid, dx, sizeof(float) * (size_t)(cols * h));
        rms_backward(dn, xmid, t->ln2, t->eps2, cols, h, dmid, 1, g_ln2);

        /* attention: xmid = xin + o(attention(qkv(norm1(xin)))) */
        gk_gemm_grad(dmid, att, cols, h, hq * d, g_o, t->b_o ? g_bo : NULL);
        gk_gemm(dmid, cols, h, t->t_o, hq * d, NULL, datt, 0);
        for (int64_t r = 0; r < rows; r++)
            attention_backward(m, job, job->first + r, qkv + r * len * nq, kt + r * hk * d * lp,
                               vc + r * hk * lp * d, datt + r * len * hq * d, big + r * len * nq, attwork);
        gk_rms_rows(xin, t->ln1, normed, cols, h, t->eps1);
        gk_gemm_grad(big, normed, cols, nq, h, g_qkv, t->b_qkv ? g_bqkv : NULL);
        gk_gemm(big, cols, nq, t->t_qkv, h, NULL, dn, 0);
        memcpy(dx, dmid, sizeof(float) * (size_t)(cols * h));
        rms_backward(dn, xin, t->ln1, t->eps1, cols, h, dx, 1, g_ln1);
    }
    memcpy(job->grad_input + job->first * len * h, dx, sizeof(float) * (size_t)(cols * h));
    return NULL;
}

/* ------------------------------------------------------------------ entry points */

#define MAX_THREADS 16

static int threads_for(int64_t batch, int threads) {
    int n = threads < MAX_THREADS ? threads : MAX_THREADS;
    if (n > batch) n = (int)batch;
    return n < 1 ? 1 : n;
}

/* Floats of saved activations and of work space gk_train_forward/backward need. */
int64_t gk_train_saved_floats(const gk_model *m, int64_t batch, int64_t length, int threads) {
    const int n = threads_for(batch, threads);
    const int64_t lp = (length + LANES - 1) / LANES * LANES;
    int64_t total = 0;
    for (int t = 0; t < n; t++) total += saved_floats(m, batch * (t + 1) / n - batch * t / n, length, lp);
    return total;
}

int64_t gk_train_work_floats(const gk_model *m, int64_t batch, int64_t length, int threads) {
    const int n = threads_for(batch, threads);
    const int64_t lp = (length + LANES - 1) / LANES * LANES;
    int64_t total = 0;
    for (int t = 0; t < n; t++) total += work_floats(m, batch * (t + 1) / n - batch * t / n, length, lp);
    return total;
}

static void run(train_job *jobs, int n, void *(*fn)(void *)) {
    pthread_t helpers[MAX_THREADS];
    int spawned[MAX_THREADS] = {0};
    for (int t = 1; t < n; t++) spawned[t] = pthread_create(&helpers[t], NULL, fn, &jobs[t]) == 0;
    fn(&jobs[0]);
    for (int t = 1; t < n; t++) {
        if (spawned[t])
            pthread_join(helpers[t], NULL);
        else
            fn(&jobs[t]); /* no thread to be had: do its rows here */
    }
}

static int make_jobs(train_job *jobs, const gk_model *m, int64_t batch, int64_t length, const float *input,
                     const int64_t *pos, const uint8_t *valid, const int64_t *targets, float temperature,
                     int threads, float *saved, float *work) {
    const int n = threads_for(batch, threads);
    const int64_t lp = (length + LANES - 1) / LANES * LANES;
    for (int t = 0; t < n; t++) {
        const int64_t first = batch * t / n, last = batch * (t + 1) / n;
        jobs[t] = (train_job){m, first, last, length, lp, input, pos, valid, targets, 1.0f / temperature,
                              NULL, NULL, NULL, NULL, NULL, saved, work};
        saved += saved_floats(m, last - first, length, lp);
        work += work_floats(m, last - first, length, lp);
    }
    return n;
}

/* Forward over batch rows of `length` columns: logp [B, length] of targets (0 where -1)
 * and entropy [B, length] (or NULL), keeping activations in `saved` for the backward,
 * which must be called with the same arguments. valid is [B, round_up(length, LANES)]. */
void gk_train_forward(const gk_model *m, int64_t batch, int64_t length, const float *input, const int64_t *pos,
                      const uint8_t *valid, const int64_t *targets, float temperature, float *logp, float *entropy,
                      int threads, float *saved, float *work) {
    train_job jobs[MAX_THREADS];
    const int n = make_jobs(jobs, m, batch, length, input, pos, valid, targets, temperature, threads, saved, work);
    for (int t = 0; t < n; t++) jobs[t].logp = logp, jobs[t].entropy = entropy;
    run(jobs, n, forward_rows);
}

/* Backward of gk_train_forward for grad_logp [B, length]: grad_input [B, length, hidden]
 * and parameter gradients, thread t's in grads + t * gk_train_grad_floats(m) (zeroed by
 * the caller, summed by the caller). Returns the number of threads used. */
int gk_train_backward(const gk_model *m, int64_t batch, int64_t length, const float *input, const int64_t *pos,
                      const uint8_t *valid, const int64_t *targets, float temperature, const float *grad_logp,
                      float *grad_input, float *grads, int threads, float *saved, float *work) {
    train_job jobs[MAX_THREADS];
    const int n = make_jobs(jobs, m, batch, length, input, pos, valid, targets, temperature, threads, saved, work);
    for (int t = 0; t < n; t++) {
        jobs[t].grad_logp = grad_logp;
        jobs[t].grad_input = grad_input;
        jobs[t].grads = grads + t * gk_train_grad_floats(m);
    }
    run(jobs, n, backward_rows);
    return n;
}
