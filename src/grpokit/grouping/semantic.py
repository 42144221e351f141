"""Groups across prompts whose contexts are similar, with boundaries that adapt.

`semantic`: k-means (cosine) over one embedding per prompt, every step. The
embedding is the policy's own mean last hidden state over the prompt, recorded during
sampling (no extra forward pass), or a sentence-transformers model's when configured.
`adaptive`: the same clusters, then a cluster whose prompts' mean rewards are bimodal
is split in two, and a cluster that is too small, or whose mean reward its nearest
neighbour's matches within the noise, is merged into that neighbour; the cluster count
carries over to the next step, so it drifts with the data instead of being a constant.

Deterministic given (seed, step); prompts are processed in dataset-id order, so the
row order of the experience does not change the result.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from grpokit.grouping.base import Groups, PromptTable, canonical, prompt_table
from grpokit.types import Experience


def kmeans(x: Tensor, k: int, *, iters: int = 10, generator: torch.Generator | None = None) -> Tensor:
    """Spherical k-means (cosine similarity) with k-means++ seeding.

    x [P, H] (rows are L2-normalised here), k >= 1. Returns labels [P] in [0, k) (some
    clusters may end up empty when points coincide). Stops early when no label changes.
    Cost per iteration: one [P, H] x [H, k] matmul.
    """
    p = x.shape[0]
    if p == 0:
        return torch.zeros(0, dtype=torch.long)
    x = torch.nn.functional.normalize(x.float(), dim=1)  # [P, H]
    k = max(1, min(int(k), p))
    first = int(torch.randint(p, (1,), generator=generator))
    centers = [first]
    d2 = (2 - 2 * (x @ x[first])).clamp_min(0)  # [P] squared chord distance to nearest center
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 1e-12:
            break  # every point sits on a center already
        nxt = int(torch.multinomial(d2 / total, 1, generator=generator))
        centers.append(nxt)
        d2 = torch.minimum(d2, (2 - 2 * (x @ x[nxt])).clamp_min(0))
    c = x[centers]  # [k, H]
    labels = torch.full((p,), -1, dtype=torch.long)
    for _ in range(max(1, iters)):
        new = (x @ c.T).argmax(dim=1)  # [P]: ties go to the lower cluster
        if torch.equal(new, labels):
            break
        labels = new
        sums = torch.zeros_like(c).index_add_(0, labels, x)  # [k, H]
        counts = torch.bincount(labels, minlength=c.shape[0])  # [k]
        keep = counts > 0
        c = torch.where(keep[:, None], torch.nn.functional.normalize(sums, dim=1), c)
    return labels


def auto_clusters(num_prompts: int) -> int:
    """Default cluster count: about sqrt(P / 2) (32 prompts -> 4 clusters of 8)."""
    return max(1, round(math.sqrt(num_prompts / 2)))


class _TextEncoder:
    """sentence-transformers, imported when first used; one vector per prompt text, cached."""

    def __init__(self, name: str, max_cache: int = 200_000):
        self.name, self.max_cache = name, max_cache
        self._model = None
        self._cache: dict[str, Tensor] = {}

    def __call__(self, texts: list[str]) -> Tensor:
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            if self._model is None:
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as e:
                    raise ImportError(f"algorithm.group.embedding = {self.name!r} needs sentence-transformers "
                                      "(pip install sentence-transformers), or use 'policy'") from e
                self._model = SentenceTransformer(self.name, device="cpu")
            vecs = torch.as_tensor(self._model.encode(missing, convert_to_numpy=True)).float()
            if len(self._cache) + len(missing) > self.max_cache:
                self._cache.clear()
            self._cache.update(zip(missing, vecs))
        return torch.stack([self._cache[t] for t in texts])


def _text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in prompt)
    return str(prompt)


class SemanticGrouper:
    """Similar contexts: k-means (cosine) over per-prompt context embeddings each step.

    clusters: k (0 = about sqrt(prompts / 2)). embedding: "policy" (mean last hidden
    state of the prompt, from sampling) or a sentence-transformers model name or path.
    """

    def __init__(self, *, clusters: int = 0, embedding: str = "policy", seed: int = 0, iters: int = 10):
        if clusters < 0:
            raise ValueError(f"algorithm.group.clusters: must be >= 0 (0 = automatic), got {clusters}")
        self.clusters, self.embedding, self.seed, self.iters = clusters, embedding, seed, iters
        self.needs_embeddings = embedding == "policy"
        self._encoder = None if embedding == "policy" else _TextEncoder(embedding)

    def prompt_vectors(self, exp: Experience, table: PromptTable) -> Tensor:
        """[P, H]: one embedding per prompt (the mean over its rows)."""
        if self._encoder is not None:
            if not exp.prompts:
                raise ValueError("semantic grouping with a text embedder needs Experience.prompts")
            first = table.first_rows().tolist()
            return self._encoder([_text(exp.prompts[i]) for i in first])
        if exp.embeddings is None:
            raise ValueError("semantic grouping needs context embeddings (Experience.embeddings); the sampler "
                             "records them when the grouper's needs_embeddings is true")
        return table.mean_of(exp.embeddings.float())

    def generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + int(step))

    def num_clusters(self, num_prompts: int) -> int:
        return self.clusters if self.clusters > 0 else auto_clusters(num_prompts)

    def __call__(self, exp: Experience) -> Groups:
        table = prompt_table(exp)
        x = self.prompt_vectors(exp, table)  # [P, H]
        labels = kmeans(x, self.num_clusters(table.size), iters=self.iters, generator=self.generator(exp.step))
        return Groups(ids=[canonical(labels)[table.inverse]], names=["semantic"])  # [N]


# ----------------------------------------------------------------------------- adaptive boundaries


def split_bimodal(labels: Tensor, prompt_means: Tensor, noise: Tensor, *, min_prompts: int = 2,
                  ratio: float = 0.75) -> Tensor:
    """Split each cluster whose prompts' mean rewards form two separated modes.

    For the prompts of cluster c with mean rewards m (sorted), the best two-way cut
    (Otsu's criterion) maximises eta = between-variance / total-variance,
    between = (n_l n_r / n^2) (mean_l - mean_r)^2. The cluster is split at that cut when
    eta >= ratio, both sides keep >= min_prompts prompts, and the two modes are further
    apart than noise[c] (the cluster's pooled within-prompt reward std: a gap smaller
    than one completion's own scatter is not a second mode).

    labels [P] long, prompt_means [P], noise [K] (indexed by label). Returns new labels [P]
    (split-off parts get fresh labels max + 1, ...).
    """
    out = labels.clone()
    nxt = int(labels.max()) + 1 if labels.numel() else 0
    for c in torch.unique(labels).tolist():
        members = (labels == c).nonzero(as_tuple=True)[0]  # [n_c]
        n = members.numel()
        if n < 2 * min_prompts:
            continue
        m = prompt_means[members].double()
        order = torch.argsort(m, stable=True)
        ms = m[order]
        total = float(((ms - ms.mean()) ** 2).mean())
        if total <= 1e-12:
            continue
        best_eta, best_i = -1.0, -1
        for i in range(min_prompts, n - min_prompts + 1):
            ml, mr = float(ms[:i].mean()), float(ms[i:].mean())
            eta = (i / n) * (1 - i / n) * (ml - mr) ** 2 / total
            if eta > best_eta + 1e-12:
                best_eta, best_i = eta, i
        if best_i < 0 or best_eta < ratio:
            continue
        gap = float(ms[best_i:].mean() - ms[:best_i].mean())
        if gap <= float(noise[c]):
            continue
        out[members[order[best_i:]]] = nxt
        nxt += 1
    return out


def merge_clusters(labels: Tensor, x: Tensor, prompt_sum: Tensor, prompt_count: Tensor, prompt_ss: Tensor, *,
                   min_prompts: int = 2, merge_gap: float = 0.5) -> Tensor:
    """Merge clusters into their nearest neighbour (cosine between centroids of the
    prompt embeddings x [P, H]) when they are too small or alike in reward.

    Per cluster: mean reward m = sum / count of its completions, noise s = its pooled
    within-prompt reward std (from each prompt's sum of squared deviations prompt_ss).
    A cluster c with nearest neighbour j is merged into j when it has fewer than
    min_prompts prompts, or when |m_c - m_j| < merge_gap * max(s_c, s_j) (the two are
    indistinguishable in difficulty, so together they give larger groups with a better
    baseline). merge_gap < 1 keeps a hysteresis with `split_bimodal`, which splits only
    modes more than one noise unit apart. One merge at a time, smallest cluster first
    (ties: lower label). labels [P] -> labels [P].
    """
    out = labels.clone()
    xn = torch.nn.functional.normalize(x.float(), dim=1)
    ps, pc, pss = prompt_sum.double(), prompt_count.double(), prompt_ss.double()
    while True:
        uniq = torch.unique(out)  # [K'] sorted
        if uniq.numel() <= 1:
            return out
        member = (out[None, :] == uniq[:, None]).double()  # [K', P]
        sizes = member.sum(1)  # [K']
        mean = (member @ ps) / (member @ pc)  # [K']
        dof = member @ (pc - 1)
        noise = torch.where(dof > 0, (member @ pss) / dof.clamp_min(1), torch.zeros_like(dof)).sqrt()  # [K']
        cent = torch.nn.functional.normalize(member.float() @ xn, dim=1)  # [K', H]
        sim = cent @ cent.T  # [K', K']
        sim.fill_diagonal_(-float("inf"))
        nearest = sim.argmax(1)  # [K']
        alike = (mean - mean[nearest]).abs() < merge_gap * torch.maximum(noise, noise[nearest])
        needs = (sizes < min_prompts) | alike  # [K']
        if not bool(needs.any()):
            return out
        cand = needs.nonzero(as_tuple=True)[0]
        i = int(cand[torch.argsort(sizes[cand], stable=True)[0]])
        out[out == uniq[i]] = uniq[int(nearest[i])]


class AdaptiveGrouper(SemanticGrouper):
    """Semantic clusters whose boundaries adapt: bimodal clusters split, small or alike ones merge.

    The cluster count found at one step is where the next step's k-means starts, so it
    is learned online (within [1, prompts / min_prompts]); `clusters` only sets the start.
    Each split or merge is decided from within-cluster reward spread (see
    `split_bimodal` and `merge_clusters`).
    """

    def __init__(self, *, clusters: int = 0, embedding: str = "policy", seed: int = 0, iters: int = 10,
                 min_prompts: int = 2, split_ratio: float = 0.75, merge_gap: float = 0.5):
        super().__init__(clusters=clusters, embedding=embedding, seed=seed, iters=iters)
        self.min_prompts, self.split_ratio, self.merge_gap = min_prompts, split_ratio, merge_gap
        self.k: int | None = None

    def state_dict(self) -> dict:
        return {"k": self.k}

    def load_state_dict(self, state: dict) -> None:
        self.k = state.get("k")

    def __call__(self, exp: Experience) -> Groups:
        table = prompt_table(exp)
        x = self.prompt_vectors(exp, table)  # [P, H]
        top = max(1, table.size // max(1, self.min_prompts))
        k = min(max(1, self.k if self.k else self.num_clusters(table.size)), top)
        labels = canonical(kmeans(x, k, iters=self.iters, generator=self.generator(exp.step)))  # [P]
        labels = split_bimodal(labels, table.mean_reward, self._noise(exp, table, labels),
                               min_prompts=self.min_prompts, ratio=self.split_ratio)
        r = exp.rewards.double()
        psum = torch.zeros(table.size, dtype=torch.float64).index_add_(0, table.inverse, r)
        pss = torch.zeros(table.size, dtype=torch.float64).index_add_(
            0, table.inverse, (r - table.mean_reward.double()[table.inverse]) ** 2)
        labels = merge_clusters(labels, x, psum, table.count, pss, min_prompts=self.min_prompts,
                                merge_gap=self.merge_gap)
        labels = canonical(labels)
        self.k = int(labels.max()) + 1
        return Groups(ids=[labels[table.inverse]], names=["adaptive"])

    @staticmethod
    def _noise(exp: Experience, table: PromptTable, labels: Tensor) -> Tensor:
        """[K] pooled within-prompt reward std of each cluster."""
        r = exp.rewards.double()
        dev2 = (r - table.mean_reward.double()[table.inverse]) ** 2  # [N]
        row_label = labels[table.inverse]  # [N]
        k = int(labels.max()) + 1
        ss = torch.zeros(k, dtype=torch.float64).index_add_(0, row_label, dev2)
        dof = torch.zeros(k, dtype=torch.float64).index_add_(0, labels, (table.count - 1).double())
        return torch.where(dof > 0, ss / dof.clamp_min(1), torch.zeros_like(ss)).sqrt()
