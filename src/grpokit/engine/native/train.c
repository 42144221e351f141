/* The policy's training pass of a small Llama-family model in C: a forward that keeps
 * what its backward needs, and that backward.
 *
 * For a model of a few million parameters torch's training pass is hundreds of small
 * ops per step, each with dispatch, an allocation and a trip through memory; here the
 * batch runs through every layer in a few large products (products.c's panels), split
 * between threads that never wait on each other: a thread keeps its own parameter
 * gradients, which the caller sums.
 *
 * A batch is rollout-shaped: rows of `length` columns, the first `plen` a left-padded
 * prompt and no scored token among them, padding marked in `valid` ([B, lpad]); a column
 * attends to the valid columns at or before it, as in a transformers forward with an
 * attention mask. Rows come in groups that share their prompt (a GRPO group; rows
 * first[g] .. first[g + 1] - 1): a group's prompt runs once, its keys and values are
 * copied to the other rows' caches, and in backward their gradients are summed back.
 * Per row, the log-prob of the token at column c + 1 (targets[b, c], -1 where not
 * needed) and the entropy there are computed for c = plen - 1 .. length - 2.
 *
 * Product rows ("cols") of a group: its prompt's plen columns, then each row's
 * length - plen completion columns.
 */
#include <pthread.h>
#include <stdlib.h>

#include "kernels.h"

typedef struct {
    const gk_model *m;
    int64_t g0, g1;                    /* groups g0 .. g1 - 1 */
    const int64_t *first;              /* [groups + 1] first row of each group */
    int64_t plen, length, lpad;
    const float *input;                /* [cols, hidden] this thread's input embeddings */
    const int64_t *pos;                /* [B, length] position ids */
    const uint8_t *valid;              /* [B, lpad] */
    const int64_t *targets;            /* [B, length] */
    float inv_temp;
    float *logp, *entropy;             /* [B, length] (forward; entropy may be NULL) */
    const float *grad_logp;            /* [B, length] (backward) */
    float *grad_input;                 /* [cols, hidden] this thread's (backward) */
    float *grads;                      /* this thread's parameter gradients (backward), zeroed */
    float *saved, *work;               /* this thread's activations and work space */
    int keep;                          /* keep every layer's activations (for a backward) */
} train_job;

static int64_t nqkv(const gk_model *m) { return (m->hq + 2 * m->hk) * m->d; }

static int64_t wide(const gk_model *m) {
    int64_t w = nqkv(m) > 2 * m->inter ? nqkv(m) : 2 * m->inter;
    return w > m->vocab_pad ? w : m->vocab_pad;
}

/* product rows and batch rows of groups g0 .. g1 - 1 */
static int64_t cols_of(const int64_t *first, int64_t g0, int64_t g1, int64_t plen, int64_t length) {
    return (g1 - g0) * plen + (first[g1] - first[g0]) * (length - plen);
}

/* Per layer, saved: x in, qkv, attention out, x mid, gate/up (per product row), rotated
 * keys [hk, d, lpad] and values [hk, lpad, d] (per batch row); then x before the final
 * norm. */
static int64_t layer_saved(const gk_model *m, int64_t cols, int64_t rows, int64_t lpad) {
    return cols * (2 * m->hidden + nqkv(m) + m->hq * m->d + 2 * m->inter) + 2 * rows * m->hk * lpad * m->d;
}

static int64_t saved_floats(const gk_model *m, int64_t cols, int64_t rows, int64_t lpad, int keep) {
    return (keep ? m->n_layers : 1) * layer_saved(m, cols, rows, lpad) + cols * m->hidden + LANES;
}

/* attention scratch: scores, their gradients, rotated q, its gradient, keys [hk, lpad, d]
 * and values [hk, d, lpad] in the other layout (attention_backward) */
#define ATT_WORK(m, lpad) (2 * (lpad) + ((m)->hq + 1) * (m)->d + 2 * (m)->hk * (lpad) * (m)->d + LANES)

/* work: 4 [cols, hidden], [cols, wide], 2 [cols, inter], [cols, hq d], head rows
 * [heads, hidden] twice and [heads, vocab_pad], gradients of each row's keys and values
 * [hk, lpad, d], attention scratch */
static int64_t work_floats(const gk_model *m, int64_t cols, int64_t rows, int64_t heads, int64_t lpad) {
    return cols * (4 * m->hidden + wide(m) + 2 * m->inter + m->hq * m->d) +
           heads * (2 * m->hidden + m->vocab_pad) + 2 * rows * m->hk * lpad * m->d + ATT_WORK(m, lpad);
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

/* The product row of batch row b's column c (b in group g, whose rows start at product
 * row base). */
static int64_t col_of(const train_job *job, int64_t g, int64_t base, int64_t b, int64_t c) {
    const int64_t p = job->plen;
    return c < p ? base + c : base + p + (b - job->first[g]) * (job->length - p) + (c - p);
}

/* The head's rows: for each batch row, columns plen - 1 .. length - 2 (the prompt's last
 * column is its group's). src[i] is the product row of head row i, at[i] its [B, length]
 * index. Returns the count. */
static int64_t head_rows(const train_job *job, int64_t *src, int64_t *at) {
    int64_t n = 0, base = 0;
    for (int64_t g = job->g0; g < job->g1; g++) {
        for (int64_t b = job->first[g]; b < job->first[g + 1]; b++)
            for (int64_t c = job->plen - 1; c < job->length - 1; c++) {
                src[n] = col_of(job, g, base, b, c);
                at[n++] = b * job->length + c;
            }
        base += job->plen + (job->first[g + 1] - job->first[g]) * (job->length - job->plen);
    }
    return n;
}

/* Keys and values of columns 0 .. n - 1 from batch row `from`'s caches into row `to`'s. */
static void copy_columns(const gk_model *m, float *kt, float *vc, int64_t lpad, int64_t from, int64_t to, int64_t n) {
    const int64_t hk = m->hk, d = m->d;
    for (int64_t g = 0; g < hk; g++) {
        for (int64_t i = 0; i < d; i++)
            memcpy(kt + ((to * hk + g) * d + i) * lpad, kt + ((from * hk + g) * d + i) * lpad,
                   sizeof(float) * (size_t)n);
        memcpy(vc + (to * hk + g) * lpad * d, vc + (from * hk + g) * lpad * d, sizeof(float) * (size_t)(n * d));
    }
}

/* ------------------------------------------------------------------ forward */

static void *forward_rows(void *arg) {
    train_job *job = arg;
    const gk_model *m = job->m;
    const int64_t r0 = job->first[job->g0], rows = job->first[job->g1] - r0, lp = job->lpad, len = job->length;
    const int64_t plen = job->plen, cols = cols_of(job->first, job->g0, job->g1, plen, len);
    const int64_t h = m->hidden, d = m->d, hq = m->hq, hk = m->hk, nq = nqkv(m), inter = m->inter;
    float *x = job->work, *normed = x + cols * h, *act = normed + cols * h, *scratch = act + cols * inter;
    int64_t *src = (int64_t *)(scratch + ATT_WORK(m, lp)), *at = src + rows * len;
    float *heads = (float *)(at + rows * len), *logits = heads + rows * len * h;
    memcpy(x, job->input, sizeof(float) * (size_t)(cols * h));
    float *s = job->saved;
    for (int64_t l = 0; l < m->n_layers; l++) {
        const gk_layer *t = m->layers + l;
        float *xin = s, *qkv = xin + cols * h, *att = qkv + cols * nq, *xmid = att + cols * hq * d;
        float *gu = xmid + cols * h, *kt = gu + cols * 2 * inter, *vc = kt + rows * hk * d * lp;
        if (job->keep) s += layer_saved(m, cols, rows, lp); /* else the next layer reuses the space */
        memcpy(xin, x, sizeof(float) * (size_t)(cols * h));
        gk_rms_rows(x, t->ln1, normed, cols, h, t->eps1);
        gk_gemm(normed, cols, h, t->w_qkv, nq, t->b_qkv, qkv, 0);
        memset(kt, 0, sizeof(float) * (size_t)(2 * rows * hk * d * lp)); /* blocks past the last column are read */
        int64_t base = 0;
        for (int64_t g = job->g0; g < job->g1; g++) {
            const int64_t b0 = job->first[g];
            for (int64_t b = b0; b < job->first[g + 1]; b++) {
                if (b > b0) copy_columns(m, kt, vc, lp, b0 - r0, b - r0, plen);
                for (int64_t c = b > b0 ? plen : 0; c < len; c++) {
                    const int64_t p = job->pos[b * len + c], row = col_of(job, g, base, b, c);
                    gk_attend_row(qkv + row * nq, m->cos + p * d, m->sin + p * d, kt + (b - r0) * hk * d * lp,
                                  vc + (b - r0) * hk * lp * d, job->valid + b * lp, hq, hk, d, lp, c, m->scale,
                                  att + row * hq * d, scratch);
                }
            }
            base += plen + (job->first[g + 1] - b0) * (len - plen);
        }
        gk_gemm(att, cols, hq * d, t->w_o, h, t->b_o, x, 1);
        memcpy(xmid, x, sizeof(float) * (size_t)(cols * h));
        gk_rms_rows(x, t->ln2, normed, cols, h, t->eps2);
        gk_gemm(normed, cols, h, t->w_gu, 2 * inter, t->b_gu, gu, 0);
        gk_swiglu_rows(gu, act, cols, inter);
        gk_gemm(act, cols, inter, t->w_down, h, t->b_down, x, 1);
    }
    if (!job->keep) s += layer_saved(m, cols, rows, lp);
    memcpy(s, x, sizeof(float) * (size_t)(cols * h));
    gk_rms_rows(x, m->final_w, normed, cols, h, m->final_eps);
    const int64_t n = head_rows(job, src, at);
    for (int64_t i = 0; i < n; i++) memcpy(heads + i * h, normed + src[i] * h, sizeof(float) * (size_t)h);
    gk_gemm(heads, n, h, m->head, m->vocab_pad, m->head_b, logits, 0);
    for (int64_t i = 0; i < n; i++) {
        const int64_t target = job->targets[at[i]];
        if (target < 0) continue;
        const float *z = logits + i * m->vocab_pad;
        float top = -INFINITY;
        for (int64_t v = 0; v < m->vocab; v++) top = z[v] * job->inv_temp > top ? z[v] * job->inv_temp : top;
        double total = 0.0, weighted = 0.0;
        for (int64_t v = 0; v < m->vocab; v++) {
            const float e = expf(z[v] * job->inv_temp - top);
            total += e;
            weighted += (double)e * (z[v] * job->inv_temp - top);
        }
        const float lse = (float)log(total); /* log-sum-exp minus top */
        job->logp[at[i]] = z[target] * job->inv_temp - top - lse;
        if (job->entropy) job->entropy[at[i]] = lse - (float)(weighted / total);
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
        for (int64_t i = 0; i < inter; i += VW) {
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

/* Attention backward for the queries at columns c0 .. c1 - 1 of one batch row's caches
 * (kt_row [hk, d, lpad], vc_row [hk, lpad, d]); their qkv (before rotary), output
 * gradients datt and q-gradient rows dqkv are consecutive product rows. Key and value
 * gradients are added into dk, dv [hk, lpad, d] (rotated keys'). Every inner loop runs
 * along a contiguous axis in whole vector blocks: scores and value products against
 * the keys and values stored [d, columns], the q gradient against the keys stored
 * [columns, d] (both layouts made here). */
static void attention_backward(const gk_model *m, const train_job *job, const float *kt, const float *vc,
                               const uint8_t *ok, const int64_t *pos, int64_t c0, int64_t c1, const float *qkv,
                               const float *datt, float *dqkv, float *dk, float *dv, float *work) {
    const int64_t lp = job->lpad, d = m->d, hq = m->hq, hk = m->hk, nq = nqkv(m), rep = hq / hk;
    float *p = work, *dp = p + lp, *q = dp + lp, *dq = q + hq * d, *kn = dq + d, *vt = kn + hk * lp * d;
    for (int64_t g = 0; g < hk; g++)
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < lp; j++) {
                kn[(g * lp + j) * d + i] = kt[(g * d + i) * lp + j];
                vt[(g * d + i) * lp + j] = vc[(g * lp + j) * d + i];
            }
    for (int64_t c = c0; c < c1; c++) {
        const float *cs = m->cos + pos[c] * d, *sn = m->sin + pos[c] * d;
        const float *qrow = qkv + (c - c0) * nq, *grow = datt + (c - c0) * hq * d;
        float *drow = dqkv + (c - c0) * nq;
        const int64_t padded = (c + LANES) / LANES * LANES;
        for (int64_t h = 0; h < hq; h++) rotate(qrow + h * d, cs, sn, q + h * d, d);
        for (int64_t h = 0; h < hq; h++) {
            const int64_t g = h / rep;
            const float *qh = q + h * d, *kg = kt + g * d * lp, *vg = vt + g * d * lp, *go = grow + h * d;
            /* the forward's scores, then d loss / d p_j = go . v_j, a block of columns at a time */
            for (int64_t j0 = 0; j0 < padded; j0 += VW) {
                vfloat acc = {0}, accv = {0};
                for (int64_t i = 0; i < d; i++) {
                    acc += qh[i] * vload(kg + i * lp + j0);
                    accv += go[i] * vload(vg + i * lp + j0);
                }
                vstore(p + j0, acc);
                vstore(dp + j0, accv);
            }
            const float total = masked_exp(p, ok, c + 1, m->scale); /* zero past column c */
            if (total <= 0.0f) { /* a padding column that attends to nothing: no gradient */
                memset(drow + h * d, 0, sizeof(float) * (size_t)d);
                continue;
            }
            const float inv = 1.0f / total;
            vfloat pdv = {0};
            for (int64_t j0 = 0; j0 < padded; j0 += VW) {
                const vfloat pj = vload(p + j0) * inv;
                vstore(p + j0, pj);
                pdv += pj * vload(dp + j0);
            }
            float pd = 0.0f;
            for (int l = 0; l < VW; l++) pd += pdv[l];
            /* dp <- d loss / d score (scale included); zero wherever p is */
            for (int64_t j0 = 0; j0 < padded; j0 += VW)
                vstore(dp + j0, vload(p + j0) * (vload(dp + j0) - pd) * m->scale);
            for (int64_t i0 = 0; i0 < d; i0 += VW) vstore(dq + i0, (vfloat){0});
            for (int64_t j = 0; j <= c; j++) {
                if (p[j] == 0.0f) continue;
                const float ds = dp[j], pj = p[j];
                const float *kj = kn + (g * lp + j) * d;
                float *dkj = dk + (g * lp + j) * d, *dvj = dv + (g * lp + j) * d;
                for (int64_t i0 = 0; i0 < d; i0 += VW) {
                    vstore(dq + i0, vload(dq + i0) + ds * vload(kj + i0));
                    vstore(dkj + i0, vload(dkj + i0) + ds * vload(qh + i0));
                    vstore(dvj + i0, vload(dvj + i0) + pj * vload(go + i0));
                }
            }
            rotate_backward(dq, cs, sn, drow + h * d, d);
        }
    }
}

/* The k and v parts of dqkv rows for columns c0 .. c1 - 1 from the summed dk, dv. */
static void key_value_grads(const gk_model *m, int64_t lp, const int64_t *pos, int64_t c0, int64_t c1,
                            const float *dk, const float *dv, float *dqkv) {
    const int64_t d = m->d, hq = m->hq, hk = m->hk, nq = nqkv(m);
    for (int64_t c = c0; c < c1; c++)
        for (int64_t g = 0; g < hk; g++) {
            float *row = dqkv + (c - c0) * nq;
            rotate_backward(dk + (g * lp + c) * d, m->cos + pos[c] * d, m->sin + pos[c] * d, row + (hq + g) * d, d);
            memcpy(row + (hq + hk + g) * d, dv + (g * lp + c) * d, sizeof(float) * (size_t)d);
        }
}

static void *backward_rows(void *arg) {
    train_job *job = arg;
    const gk_model *m = job->m;
    const int64_t r0 = job->first[job->g0], rows = job->first[job->g1] - r0, lp = job->lpad, len = job->length;
    const int64_t plen = job->plen, cols = cols_of(job->first, job->g0, job->g1, plen, len);
    const int64_t h = m->hidden, d = m->d, hq = m->hq, hk = m->hk, nq = nqkv(m), inter = m->inter;
    const int64_t vp = m->vocab_pad, kv = hk * lp * d;
    float *dx = job->work, *dn = dx + cols * h, *normed = dn + cols * h, *dmid = normed + cols * h;
    float *big = dmid + cols * h, *act = big + cols * wide(m), *dact = act + cols * inter;
    float *datt = dact + cols * inter, *heads = datt + cols * hq * d, *dheads = heads + rows * len * h;
    float *logits = dheads + rows * len * h, *dkv = logits + rows * len * vp, *attwork = dkv + 2 * rows * kv;
    int64_t *src = (int64_t *)(attwork + ATT_WORK(m, lp)), *at = src + rows * len;
    const float *xfin = job->saved + m->n_layers * layer_saved(m, cols, rows, lp);
    float *gfinal = job->grads + m->n_layers * layer_grads(m), *ghead = gfinal + h, *ghead_b = ghead + vp * h;
    memset(job->grads, 0, sizeof(float) * (size_t)gk_train_grad_floats(m));

    /* output layer: d logp / d z = onehot(target) - softmax(z), z = logits / temperature */
    gk_rms_rows(xfin, m->final_w, normed, cols, h, m->final_eps);
    const int64_t n = head_rows(job, src, at);
    for (int64_t i = 0; i < n; i++) memcpy(heads + i * h, normed + src[i] * h, sizeof(float) * (size_t)h);
    gk_gemm(heads, n, h, m->head, vp, m->head_b, logits, 0);
    for (int64_t i = 0; i < n; i++) {
        const int64_t target = job->targets[at[i]];
        float *z = logits + i * vp;
        const float g = target < 0 ? 0.0f : job->grad_logp[at[i]];
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
    if (gk_gemm_grad(logits, heads, n, vp, h, ghead, m->head_b ? ghead_b : NULL) != 0) return (void *)1;
    gk_gemm(logits, n, vp, m->t_head, h, NULL, dheads, 0);
    memset(dn, 0, sizeof(float) * (size_t)(cols * h));
    for (int64_t i = 0; i < n; i++) /* a group's prompt row collects its rows' gradients */
        for (int64_t j = 0; j < h; j++) dn[src[i] * h + j] += dheads[i * h + j];
    rms_backward(dn, xfin, m->final_w, m->final_eps, cols, h, dx, 0, gfinal);

    for (int64_t l = m->n_layers - 1; l >= 0; l--) {
        const gk_layer *t = m->layers + l;
        const float *s = job->saved + l * layer_saved(m, cols, rows, lp);
        const float *xin = s, *qkv = xin + cols * h, *att = qkv + cols * nq, *xmid = att + cols * hq * d;
        const float *gu = xmid + cols * h, *kt = gu + cols * 2 * inter, *vc = kt + rows * hk * d * lp;
        float *gl = job->grads + l * layer_grads(m);
        float *g_ln1 = gl, *g_qkv = g_ln1 + h, *g_bqkv = g_qkv + nq * h, *g_o = g_bqkv + nq, *g_bo = g_o + h * hq * d;
        float *g_ln2 = g_bo + h, *g_gu = g_ln2 + h, *g_bgu = g_gu + 2 * inter * h, *g_down = g_bgu + 2 * inter;
        float *g_bdown = g_down + h * inter;

        /* MLP: x = xmid + down(swiglu(gu(norm2(xmid)))) */
        gk_swiglu_rows(gu, act, cols, inter);
        if (gk_gemm_grad(dx, act, cols, h, inter, g_down, t->b_down ? g_bdown : NULL) != 0) return (void *)1;
        gk_gemm(dx, cols, h, t->t_down, inter, NULL, dact, 0);
        swiglu_backward(dact, gu, big, cols, inter);
        gk_rms_rows(xmid, t->ln2, normed, cols, h, t->eps2);
        if (gk_gemm_grad(big, normed, cols, 2 * inter, h, g_gu, t->b_gu ? g_bgu : NULL) != 0) return (void *)1;
        gk_gemm(big, cols, 2 * inter, t->t_gu, h, NULL, dn, 0);
        memcpy(dmid, dx, sizeof(float) * (size_t)(cols * h));
        rms_backward(dn, xmid, t->ln2, t->eps2, cols, h, dmid, 1, g_ln2);

        /* attention: xmid = xin + o(attention(qkv(norm1(xin)))) */
        if (gk_gemm_grad(dmid, att, cols, h, hq * d, g_o, t->b_o ? g_bo : NULL) != 0) return (void *)1;
        gk_gemm(dmid, cols, h, t->t_o, hq * d, NULL, datt, 0);
        memset(dkv, 0, sizeof(float) * (size_t)(2 * rows * kv));
        int64_t base = 0;
        for (int64_t g = job->g0; g < job->g1; g++) {
            const int64_t b0 = job->first[g], b1 = job->first[g + 1];
            float *dk0 = dkv + (b0 - r0) * 2 * kv, *dv0 = dk0 + kv;
            /* each row's completion queries, then the prompt's, which also get the rows' key
             * and value gradients of the prompt columns */
            for (int64_t b = b0; b < b1; b++) {
                const int64_t row = col_of(job, g, base, b, plen);
                float *dk = dkv + (b - r0) * 2 * kv, *dv = dk + kv;
                attention_backward(m, job, kt + (b - r0) * hk * d * lp, vc + (b - r0) * hk * lp * d,
                                   job->valid + b * lp, job->pos + b * len, plen, len, qkv + row * nq,
                                   datt + row * hq * d, big + row * nq, dk, dv, attwork);
                key_value_grads(m, lp, job->pos + b * len, plen, len, dk, dv, big + row * nq);
                if (b > b0)
                    for (int64_t gh = 0; gh < hk; gh++)
                        for (int64_t j = 0; j < plen * d; j++) {
                            dk0[gh * lp * d + j] += dk[gh * lp * d + j];
                            dv0[gh * lp * d + j] += dv[gh * lp * d + j];
                        }
            }
            attention_backward(m, job, kt + (b0 - r0) * hk * d * lp, vc + (b0 - r0) * hk * lp * d,
                               job->valid + b0 * lp, job->pos + b0 * len, 0, plen, qkv + base * nq,
                               datt + base * hq * d, big + base * nq, dk0, dv0, attwork);
            key_value_grads(m, lp, job->pos + b0 * len, 0, plen, dk0, dv0, big + base * nq);
            base += plen + (b1 - b0) * (len - plen);
        }
        gk_rms_rows(xin, t->ln1, normed, cols, h, t->eps1);
        if (gk_gemm_grad(big, normed, cols, nq, h, g_qkv, t->b_qkv ? g_bqkv : NULL) != 0) return (void *)1;
        gk_gemm(big, cols, nq, t->t_qkv, h, NULL, dn, 0);
        memcpy(dx, dmid, sizeof(float) * (size_t)(cols * h));
        rms_backward(dn, xin, t->ln1, t->eps1, cols, h, dx, 1, g_ln1);
    }
    memcpy(job->grad_input, dx, sizeof(float) * (size_t)(cols * h));
    return NULL;
}

/* ------------------------------------------------------------------ entry points */

#define MAX_THREADS 16

/* Groups split between threads, contiguous and about equal in rows: thread t takes the
 * groups whose first row lies in its share of the rows. Returns the thread count. */
static int plan(const int64_t *first, int64_t groups, int threads, int64_t *bounds) {
    int n = threads < MAX_THREADS ? threads : MAX_THREADS;
    if (n > groups) n = (int)groups;
    if (n < 1) n = 1;
    const int64_t rows = first[groups];
    int64_t g = 0;
    bounds[0] = 0;
    for (int t = 1; t < n; t++) {
        while (g < groups && first[g] < rows * t / n) g++;
        bounds[t] = g > bounds[t - 1] ? g : bounds[t - 1];
    }
    bounds[n] = groups;
    return n;
}

/* Floats of work space of the thread taking groups g0 .. g1 - 1: work_floats for its
 * product rows and head rows (rows x length), and two int64 index arrays of rows x length.
 * Its own parameter gradients (gk_train_grad_floats) come after it. */
static int64_t job_work(const gk_model *m, const int64_t *first, int64_t g0, int64_t g1, int64_t plen,
                        int64_t length, int64_t lpad) {
    const int64_t rows = first[g1] - first[g0];
    return work_floats(m, cols_of(first, g0, g1, plen, length), rows, rows * length, lpad) + 4 * rows * length;
}

/* Floats of saved activations and of work space gk_train_forward/backward need for
 * these arguments. */
int64_t gk_train_saved_floats(const gk_model *m, int64_t groups, const int64_t *first, int64_t plen,
                              int64_t length, int threads, int keep) {
    int64_t bounds[MAX_THREADS + 1], total = 0;
    const int n = plan(first, groups, threads, bounds);
    const int64_t lp = (length + LANES - 1) / LANES * LANES;
    for (int t = 0; t < n; t++)
        total += saved_floats(m, cols_of(first, bounds[t], bounds[t + 1], plen, length),
                              first[bounds[t + 1]] - first[bounds[t]], lp, keep);
    return total;
}

int64_t gk_train_work_floats(const gk_model *m, int64_t groups, const int64_t *first, int64_t plen,
                             int64_t length, int threads) {
    int64_t bounds[MAX_THREADS + 1], total = 0;
    const int n = plan(first, groups, threads, bounds);
    const int64_t lp = (length + LANES - 1) / LANES * LANES;
    for (int t = 0; t < n; t++)
        total += job_work(m, first, bounds[t], bounds[t + 1], plen, length, lp) + gk_train_grad_floats(m);
    return total;
}

static int run(train_job *jobs, int n, void *(*fn)(void *)) {
    pthread_t helpers[MAX_THREADS];
    void *status[MAX_THREADS] = {0};
    int spawned[MAX_THREADS] = {0};
    for (int t = 1; t < n; t++) spawned[t] = pthread_create(&helpers[t], NULL, fn, &jobs[t]) == 0;
    status[0] = fn(&jobs[0]);
    for (int t = 1; t < n; t++) {
        if (spawned[t])
            pthread_join(helpers[t], &status[t]);
        else
            status[t] = fn(&jobs[t]); /* no thread to be had: do its rows here */
    }
    for (int t = 0; t < n; t++)
        if (status[t]) return -1;
    return n;
}

static int make_jobs(train_job *jobs, const gk_model *m, int64_t groups, const int64_t *first, int64_t plen,
                     int64_t length, const float *input, const int64_t *pos, const uint8_t *valid,
                     const int64_t *targets, float temperature, int threads, float *saved, float *work, int keep) {
    int64_t bounds[MAX_THREADS + 1], start = 0;
    const int n = plan(first, groups, threads, bounds);
    const int64_t lp = (length + LANES - 1) / LANES * LANES;
    for (int t = 0; t < n; t++) {
        const int64_t g0 = bounds[t], g1 = bounds[t + 1], rows = first[g1] - first[g0];
        const int64_t cols = cols_of(first, g0, g1, plen, length);
        const int64_t own = job_work(m, first, g0, g1, plen, length, lp);
        /* grads: the thread's own gradients, after its work space (thread 0's become the
         * caller's buffer in gk_train_backward) */
        jobs[t] = (train_job){m, g0, g1, first, plen, length, lp, input + start * m->hidden, pos, valid, targets,
                              1.0f / temperature, NULL, NULL, NULL, NULL, work + own, saved, work, keep};
        start += cols;
        saved += saved_floats(m, cols, rows, lp, keep);
        work += own + gk_train_grad_floats(m);
    }
    return n;
}

/* Forward of a rollout-shaped batch (see the top of this file): logp and entropy (or
 * NULL) [B, length] at the columns it covers. With keep, the activations stay in `saved`
 * for the backward, which must be called with the same arguments; without, `saved`
 * needs room for one layer's (a no-grad pass). input [cols, hidden] holds the product
 * rows' input embeddings, group after group. */
void gk_train_forward(const gk_model *m, int64_t groups, const int64_t *first, int64_t plen, int64_t length,
                      const float *input, const int64_t *pos, const uint8_t *valid, const int64_t *targets,
                      float temperature, float *logp, float *entropy, int threads, float *saved, float *work,
                      int keep) {
    train_job jobs[MAX_THREADS];
    const int n = make_jobs(jobs, m, groups, first, plen, length, input, pos, valid, targets, temperature, threads,
                            saved, work, keep);
    for (int t = 0; t < n; t++) jobs[t].logp = logp, jobs[t].entropy = entropy;
    run(jobs, n, forward_rows);
}

/* Backward of gk_train_forward for grad_logp [B, length]: grad_input [cols, hidden] and
 * the parameter gradients in grads [gk_train_grad_floats(m)] (overwritten; the threads'
 * own sums are added up here). Returns the number of threads used, or -1 when scratch
 * memory could not be had. */
int gk_train_backward(const gk_model *m, int64_t groups, const int64_t *first, int64_t plen, int64_t length,
                      const float *input, const int64_t *pos, const uint8_t *valid, const int64_t *targets,
                      float temperature, const float *grad_logp, float *grad_input, float *grads, int threads,
                      float *saved, float *work) {
    train_job jobs[MAX_THREADS];
    const int n = make_jobs(jobs, m, groups, first, plen, length, input, pos, valid, targets, temperature, threads,
                            saved, work, 1);
    for (int t = 0; t < n; t++) {
        jobs[t].grad_logp = grad_logp;
        jobs[t].grad_input = grad_input + (jobs[t].input - input);
    }
    jobs[0].grads = grads;
    const int used = run(jobs, n, backward_rows);
    if (used < 0) return -1;
    const int64_t per = gk_train_grad_floats(m);
    for (int t = 1; t < used; t++) /* thread 0's gradients are the caller's buffer */
#pragma omp simd
        for (int64_t i = 0; i < per; i++) grads[i] += jobs[t].grads[i];
    return used;
}
