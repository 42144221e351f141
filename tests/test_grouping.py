"""Groupers on hand-made experience: known clusters, known difficulty, shuffled order."""
import math
import sys
import types

import pytest
import torch

from grpokit.algo.advantages import group_advantages
from grpokit.algo.hierarchical import shrunk_advantages
from grpokit.grouping import GROUPERS, Groups, by_prompt, kmeans, make_grouper, observe
from grpokit.grouping.base import canonical, concat_batches, select_rows
from grpokit.grouping.reward import GLOBAL
from grpokit.registry import RegistryError
from grpokit.rollout.batch import build_rollout_batch
from grpokit.types import Experience


def exp_of(prompt_ids, rewards, *, emb=None, fields=None, step=1, prompt_lengths=None, rollout=None, prompts=()):
    return Experience(prompt_ids=torch.tensor(prompt_ids), rewards=torch.tensor(rewards, dtype=torch.float32),
                      step=step, fields=fields or [{} for _ in prompt_ids], embeddings=emb,
                      prompt_lengths=None if prompt_lengths is None else torch.tensor(prompt_lengths),
                      rollout=rollout, prompts=prompts)


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """a and b group the rows the same way (labels may differ)."""
    return bool(((a[:, None] == a[None, :]) == (b[:, None] == b[None, :])).all())


def three_topics(rows_per_prompt=2, seed=0):
    """12 prompts on 3 known topics (4 each): embeddings near e0, e1, e2 in R^8."""
    g = torch.Generator().manual_seed(seed)
    topic = torch.arange(12) // 4
    base = torch.eye(8)[topic] + 0.05 * torch.randn(12, 8, generator=g)  # [12, 8]
    pid = torch.arange(12).repeat_interleave(rows_per_prompt)
    return pid, topic, base[pid]


# ----------------------------------------------------------------------------- registry and prompt


def _ids(groups: Groups) -> torch.Tensor:
    """The ids of a one-scale grouping."""
    assert isinstance(groups, Groups) and len(groups.ids) == 1
    return groups.ids[0]


def test_prompt_grouper_is_unchanged():
    e = exp_of([7, 7, 3, 3], [1, 0, 0, 1])
    assert by_prompt(e).ids[0] is e.prompt_ids and by_prompt(e).num_past == 0
    assert make_grouper("prompt") is by_prompt
    assert make_grouper(by_prompt) is by_prompt
    assert by_prompt.needs_embeddings is False
    assert GROUPERS.get("prompt") is by_prompt


def test_unknown_strategy_lists_valid_ones():
    with pytest.raises(RegistryError) as err:
        make_grouper("semantik")
    msg = str(err.value)
    for name in ("prompt", "semantic", "reward", "complexity", "temporal", "multiscale", "adaptive", "batch"):
        assert name in msg
    assert "did you mean 'semantic'" in msg


def test_recipe_with_unknown_strategy_fails_validation():
    from grpokit.config.schema import TrainConfig
    from grpokit.config import load_config, validate

    cfg = load_config(TrainConfig, None, ["algorithm.grouping=clusterz"])
    problems = [p for p in validate(cfg) if p.startswith("algorithm.grouping")]
    assert len(problems) == 1 and "unknown" in problems[0]
    assert "multiscale" in problems[0] and "semantic" in problems[0]


def test_group_options_from_a_recipe_reach_the_grouper():
    from grpokit.config.schema import TrainConfig
    from grpokit.config.io import load_config

    cfg = load_config(TrainConfig, None, ["algorithm.grouping=multiscale", "algorithm.group.scales=[prompt,batch]",
                                          "algorithm.group.weights=[3,1]", "algorithm.group.shrink=true"])
    from grpokit.config.validation import group_options

    g = make_grouper(cfg.algorithm.grouping, **group_options(cfg.algorithm.group))
    assert g.names == ["prompt", "batch"] and g.fixed == [3.0, 1.0] and g.shrink


@pytest.mark.parametrize("spec,options,key", [
    ("prompt", {"clusters": 3}, "clusters"),  # an option of another grouper
    ("semantic", {"buckets": 2}, "buckets"),
    ("prompt", {"min_samples": 3}, "min_samples"),  # a budget option without a budget
    ("multiscale", {"scales": ["prompt", "batch"], "clusters": 2}, "clusters"),  # no scale clusters
    ("temporal", {"window": 2, "embedding": "policy"}, "embedding"),  # base prompt has no embedding
])
def test_an_option_the_grouper_does_not_use_is_an_error_naming_the_valid_ones(spec, options, key):
    with pytest.raises(ValueError) as err:
        make_grouper(spec, **options)
    msg = str(err.value)
    assert msg.startswith(f"algorithm.group.{key}: not an option of grouper {spec!r}")
    assert "shrink" in msg and "budget" in msg  # the valid ones are listed


def test_options_a_grouper_uses_are_accepted():
    make_grouper("multiscale", scales=["prompt", "semantic"], clusters=2)  # semantic's option
    make_grouper("temporal", base="semantic", clusters=2)
    make_grouper("prompt", budget=0.5, min_samples=3, success=0.7)
    make_grouper("reward", decay=0.8, success=0.7)


def test_validate_catches_an_unused_grouper_option_before_anything_loads():
    from grpokit.config.io import load_config
    from grpokit.config.schema import TrainConfig
    from grpokit.config.validation import validate

    cfg = load_config(TrainConfig, None, ["algorithm.group.clusters=4"])  # grouping: prompt
    problems = validate(cfg)
    assert any(p.startswith("algorithm.group.clusters: not an option of grouper 'prompt'") for p in problems), problems


def test_a_function_returning_ids_is_a_grouper_returning_groups():
    def by_parity(exp):
        return exp.prompt_ids % 2

    out = make_grouper(by_parity)(exp_of([1, 2, 3, 4], [1, 0, 0, 1]))
    assert isinstance(out, Groups) and out.ids[0].tolist() == [1, 0, 1, 0]
    assert make_grouper(by_parity, shrink=True)(exp_of([1, 2], [1, 0])).shrink

    def floats(exp):
        return exp.rewards

    with pytest.raises(ValueError, match="grouper floats must return"):
        make_grouper(floats)(exp_of([1], [0.0]))
    with pytest.raises(ValueError, match="algorithm.group.clusters: not an option of grouper 'by_parity'"):
        make_grouper(by_parity, clusters=2)


# ----------------------------------------------------------------------------- semantic


def test_kmeans_finds_known_clusters_and_edge_cases():
    _, topic, x = three_topics(rows_per_prompt=1)
    labels = kmeans(x, 3, generator=torch.Generator().manual_seed(0))
    assert same_partition(labels, topic)
    assert kmeans(x, 50, generator=torch.Generator().manual_seed(0)).max() < 12  # k > P is capped
    same = kmeans(torch.ones(5, 4), 3, generator=torch.Generator().manual_seed(0))
    assert same.tolist() == [0] * 5  # identical points: one cluster


def test_semantic_recovers_topics_in_any_row_order():
    pid, topic, emb = three_topics()
    r = [float(i % 2) for i in range(pid.numel())]
    grouper = make_grouper("semantic", clusters=3, seed=0)
    assert grouper.needs_embeddings
    ids = _ids(grouper(exp_of(pid.tolist(), r, emb=emb)))
    assert same_partition(ids, topic[pid])
    perm = torch.randperm(pid.numel(), generator=torch.Generator().manual_seed(1))
    shuffled = _ids(grouper(exp_of(pid[perm].tolist(), [r[i] for i in perm.tolist()], emb=emb[perm])))
    assert torch.equal(shuffled, ids[perm])  # same clusters, same labels


def test_semantic_needs_embeddings():
    with pytest.raises(ValueError, match="embeddings"):
        make_grouper("semantic")(exp_of([0, 0], [1, 0]))


def test_semantic_with_a_text_embedder(monkeypatch):
    calls = []

    class FakeST:
        def __init__(self, name, device=None):
            self.name = name

        def encode(self, texts, convert_to_numpy=True):
            calls.append(list(texts))
            import numpy as np

            return np.stack([np.eye(4)[0 if "add" in t else 1] for t in texts]).astype("float32")

    monkeypatch.setitem(sys.modules, "sentence_transformers", types.SimpleNamespace(SentenceTransformer=FakeST))
    prompts = ["add 1", "add 1", "sub 2", "sub 2", "add 3", "add 3", "sub 4", "sub 4"]
    e = exp_of([0, 0, 1, 1, 2, 2, 3, 3], [1, 0, 1, 0, 1, 0, 1, 0], prompts=prompts)
    g = make_grouper("semantic", clusters=2, embedding="fake-model")
    assert g.needs_embeddings is False
    ids = _ids(g(e))
    assert same_partition(ids, torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]))
    g(e)
    assert len(calls) == 1  # prompt texts are embedded once


def test_text_embedder_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    g = make_grouper("semantic", embedding="all-MiniLM-L6-v2")
    with pytest.raises(ImportError, match="pip install sentence-transformers"):
        g(exp_of([0, 0], [1, 0], prompts=["a", "a"]))


# ----------------------------------------------------------------------------- adaptive


def test_adaptive_splits_a_bimodal_cluster():
    # one topic, but prompts 0-3 are always solved and 4-7 never: two modes
    pid = torch.arange(8).repeat_interleave(2)
    emb = torch.ones(16, 4) + 0.01 * torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    r = [1.0 if p < 4 else 0.0 for p in pid.tolist()]
    g = make_grouper("adaptive", clusters=1)
    ids = _ids(g(exp_of(pid.tolist(), r, emb=emb)))
    assert same_partition(ids, (pid >= 4).long())
    assert g.state_dict() == {"k": 2}  # the next step starts from 2 clusters


def test_adaptive_merges_a_lone_prompt_and_keeps_distinct_clusters():
    # topic A (prompts 0-3, rewards [1, 0]), topic B (4-7, always solved), prompt 8 alone near A
    pid = torch.arange(9).repeat_interleave(2)
    topic_vec = torch.stack([torch.eye(6)[0]] * 4 + [torch.eye(6)[1]] * 4 + [torch.eye(6)[0] + 0.3 * torch.eye(6)[2]])
    emb = topic_vec[pid]
    r = [float(i % 2) if p < 4 or p == 8 else 1.0 for i, p in enumerate(pid.tolist())]
    g = make_grouper("adaptive", clusters=3)
    ids = _ids(g(exp_of(pid.tolist(), r, emb=emb)))
    want = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 0])[pid]
    assert same_partition(ids, want)
    assert g.k == 2
    g2 = make_grouper("adaptive", clusters=3)
    g2.load_state_dict(g.state_dict())
    assert g2.k == 2


def test_adaptive_merges_clusters_alike_in_reward():
    # two topics with the same noisy success rate: indistinguishable, merged into one group
    pid = torch.arange(8).repeat_interleave(4)
    emb = torch.stack([torch.eye(4)[0]] * 4 + [torch.eye(4)[1]] * 4)[pid]
    r = [1.0, 0.0, 1.0, 0.0] * 8
    ids = _ids(make_grouper("adaptive", clusters=2)(exp_of(pid.tolist(), r, emb=emb)))
    assert torch.unique(ids).numel() == 1


# ----------------------------------------------------------------------------- reward (difficulty)


def _difficulty_exp(step=1, order=None):
    pid = [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    r = [1, 1, 1, 1] + [0, 0, 0, 0] + [1, 0, 1, 0] + [1, 1, 1, 1]
    if order is not None:
        pid, r = [pid[i] for i in order], [r[i] for i in order]
    return exp_of(pid, r, step=step)


def test_reward_groups_prompts_of_like_difficulty():
    g = make_grouper("reward", buckets=4)
    assert g.needs_embeddings is False
    e = _difficulty_exp()
    ids = _ids(g(e))
    # rates (prior 2 pseudo-counts at the batch rate 11/18): 0.87, 0.20, 0.54, 0.87 -> buckets 3, 0, 2, 3
    assert same_partition(ids, torch.tensor([3, 0, 2, 3]).repeat_interleave(4))
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(3))
    ids2 = _ids(make_grouper("reward", buckets=4)(_difficulty_exp(order=perm.tolist())))
    assert torch.equal(ids2, ids[perm])


def test_reward_grouper_remembers_across_steps_and_checkpoints():
    g = make_grouper("reward", buckets=4)
    g(_difficulty_exp(step=1))
    step2 = exp_of([2] * 4 + [1] * 4, [1, 1, 1, 1, 0, 0, 0, 0], step=2)
    fresh = make_grouper("reward", buckets=4)
    fresh(step2)
    g_state = g.state_dict()
    ids = _ids(g(step2))
    # prompt 2 failed half its attempts at step 1: rated lower than by a grouper that never saw it
    assert g.tracker.rate([2], [GLOBAL], 2)[0] < fresh.tracker.rate([2], [GLOBAL], 2)[0]
    restored = make_grouper("reward", buckets=4)
    restored.load_state_dict(g_state)
    assert torch.equal(_ids(restored(step2)), ids)


# ----------------------------------------------------------------------------- complexity


def test_complexity_from_a_field_and_estimated():
    steps = [["a"] * 2, ["a"] * 3, ["a"] * 4, ["a"] * 2]
    fields = [{"steps": s} for s in steps for _ in range(2)]
    e = exp_of([0, 0, 1, 1, 2, 2, 3, 3], [0.0] * 8, fields=fields)
    ids = _ids(make_grouper("complexity")(e))
    assert same_partition(ids, torch.tensor([0, 0, 1, 1, 2, 2, 0, 0]))
    # rows without the field use the prompt length, and never share a group with rows that have it
    fields2 = [{"steps": ["a"]}, {"steps": ["a"]}, {}, {}, {}, {}]
    e2 = exp_of([0, 0, 1, 1, 2, 2], [0.0] * 6, fields=fields2, prompt_lengths=[9, 9, 9, 9, 30, 30])
    assert same_partition(_ids(make_grouper("complexity")(e2)), torch.tensor([0, 0, 1, 1, 2, 2]))
    # more distinct values than buckets: equal-width bins over the range
    fields3 = [{"steps": list(range(n))} for n in (1, 2, 3, 10, 11, 12)]
    ids3 = _ids(make_grouper("complexity", buckets=2)(exp_of(list(range(6)), [0.0] * 6, fields=fields3)))
    assert same_partition(ids3, torch.tensor([0, 0, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match="prompt_lengths"):
        make_grouper("complexity")(exp_of([0], [0.0]))


# ----------------------------------------------------------------------------- temporal


def _rollout(prompt_rows, completions, lps):
    return build_rollout_batch(prompt_rows, completions, lps, pad_id=0, example_index=list(range(len(prompt_rows))),
                               finished=[True] * len(prompt_rows), completions=[str(c) for c in completions])


def test_temporal_pools_the_same_prompt_across_steps():
    g = make_grouper("temporal", window=2)
    out1 = g(exp_of([0, 0, 1, 1], [1, 0, 1, 1], step=1))
    assert out1.num_past == 0
    e2 = exp_of([1, 1, 2, 2], [0, 0, 1, 0], step=2)
    out2 = g(e2)
    # prompt 1's two step-1 rows (rewards 1, 1) join its group; prompt 0's do not
    assert out2.past_rewards.tolist() == [1.0, 1.0]
    assert same_partition(out2.ids[0], torch.tensor([0, 0, 1, 1, 0, 0]))
    a = out2.advantages(e2.rewards, group_advantages, scale="none", eps=0.0)
    assert a.tolist() == [-0.5, -0.5, 0.5, -0.5]  # prompt 1's baseline is 0.5 now, not 0
    assert out2.metrics["grouping/past_rows"] == 2.0
    # the window is state: a restored grouper pools the same rows
    h = make_grouper("temporal", window=2)
    g2 = make_grouper("temporal", window=2)
    g2(exp_of([0, 0, 1, 1], [1, 0, 1, 1], step=1))
    h.load_state_dict(g2.state_dict())
    assert h(e2).past_rewards.tolist() == [1.0, 1.0]


def test_temporal_window_forgets_old_steps():
    g = make_grouper("temporal", window=1)
    g(exp_of([0, 0], [1, 1], step=1))
    g(exp_of([1, 1], [0, 0], step=2))
    assert g(exp_of([0, 0], [0, 1], step=3)).num_past == 0


def test_temporal_replay_appends_rows_for_training():
    g = make_grouper("temporal", window=2, replay=True, is_cap=3.0)
    b1 = _rollout([[4, 5], [4, 5]], [[7, 8], [9]], [[-1.0, -1.0], [-0.5]])
    g(exp_of([0, 0], [1, 0], step=1, rollout=b1))
    b2 = _rollout([[6], [6], [4, 5, 5], [4, 5, 5]], [[1], [2, 3, 3], [7], [8]], [[-0.1], [-1, -1, -1], [-2], [-2]])
    out = g(exp_of([1, 1, 0, 0], [0, 1, 1, 1], step=2, rollout=b2))
    assert out.num_past == 2 and out.replay.size == 2
    tb = out.training_batch(b2)
    assert tb.size == 6 and tb.prompt_len == 3
    assert tb.example_index.tolist() == [0, 1, 2, 3, -1, -1]
    for i, (p, c) in enumerate([([6], [1]), ([6], [2, 3, 3]), ([4, 5, 5], [7]), ([4, 5, 5], [8]),
                                ([4, 5], [7, 8]), ([4, 5], [9])]):
        assert tb.input_ids[i][tb.attention_mask[i] == 1].tolist() == p + c
        assert tb.input_ids[i][tb.loss_mask[i] == 1].tolist() == c
    assert tb.logprobs[4][tb.loss_mask[4] == 1].tolist() == [-1.0, -1.0]
    logp_now = out.replay.logprobs.clone()
    a = out.advantages(torch.tensor([0.0, 1.0, 1.0, 1.0]), group_advantages, scale="none", eps=0.0,
                       logp_now=logp_now)
    assert a.shape == (6,)  # replayed rows have advantages too (IS weight 1: the policy did not move)
    # replay_weight defaults to 1/window; a replayed row that did worse than its group is not trained
    assert a[4:].tolist() == pytest.approx([0.25 / 2, 0.0])


def test_temporal_replay_weight_and_cap_options():
    b1 = _rollout([[4, 5], [4, 5]], [[7, 8], [9]], [[-1.0, -1.0], [-0.5]])
    b2 = _rollout([[4, 5], [4, 5]], [[7], [8]], [[-2.0], [-2.0]])
    outs = []
    for kw in ({"replay_weight": 1.0, "is_cap": 3.0, "replay_negatives": True}, {"replay_weight": 0.5}):
        g = make_grouper("temporal", window=4, replay=True, **kw)
        g(exp_of([0, 0], [1, 0], step=1, rollout=b1))
        out = g(exp_of([0, 0], [1, 1], step=2, rollout=b2))
        # every replayed token twice as likely now: IS weight 2, capped at 3 or at the default 1
        logp_now = out.replay.logprobs + math.log(2.0) * out.replay.loss_mask
        outs.append(out.advantages(torch.tensor([1.0, 1.0]), group_advantages, scale="none", eps=0.0,
                                   logp_now=logp_now))
    # pooled mean 0.75: fresh rows 0.25 each; past rows 0.25 and -0.75 times weight x IS weight
    assert outs[0].tolist() == pytest.approx([0.25, 0.25, 0.5, -1.5])
    assert outs[1].tolist() == pytest.approx([0.25, 0.25, 0.125, 0.0])  # the worse past row is not replayed
    for bad in ({"replay_weight": 0.0}, {"replay_weight": 1.5}, {"is_cap": 0.0}):
        with pytest.raises(ValueError, match="algorithm.group." + next(iter(bad))):
            make_grouper("temporal", replay=True, **bad)


def test_concat_batches_keeps_every_row():
    a = _rollout([[1, 2, 3]], [[4]], [[-0.5]])
    b = _rollout([[5]], [[6, 7, 8, 9]], [[-1.0, -2.0, -3.0, -4.0]])
    c = concat_batches(a, select_rows(b, torch.tensor([0])))
    assert c.input_ids.shape == (2, 3 + 4)
    assert c.input_ids[1][c.attention_mask[1] == 1].tolist() == [5, 6, 7, 8, 9]
    assert c.loss_mask.sum().item() == 5 and c.logprobs.sum().item() == pytest.approx(-10.5)


def test_observe_counts_rows_in_success_statistics_only():
    """Dynamic sampling's dropped prompts (4 successes of prompt 7) reach every success
    tracker once, through wrappers and composites; groupers without one ignore them."""
    dropped = exp_of([7, 7, 7, 7], [1.0, 1.0, 1.0, 1.0], step=3)
    reward = make_grouper("reward", field="", buckets=8)
    observe(reward, dropped)
    assert reward.tracker.prompts == {7: (4.0, 4.0, 3)} and reward.tracker.keys == {GLOBAL: (4.0, 4.0, 3)}
    budget = make_grouper("reward", field="", budget=0.5)  # Budgeted(RewardGrouper)
    observe(budget, dropped)
    assert budget.tracker.prompts == {7: (4.0, 4.0, 3)} and budget.base.tracker.prompts == {7: (4.0, 4.0, 3)}
    multi = make_grouper("multiscale", scales=["prompt", "reward", "batch"], weights=[1, 1, 1], field="", shrink=True)
    observe(multi, dropped)
    assert multi.groupers[1].tracker.prompts == {7: (4.0, 4.0, 3)}
    shrunk = make_grouper("reward", field="", shrink=True)
    observe(shrunk, dropped)
    assert shrunk.base.tracker.prompts == {7: (4.0, 4.0, 3)}
    observe(make_grouper("prompt"), dropped)  # nothing to count
    observe(make_grouper("temporal"), dropped)
    # then a step groups its own rows: the dropped prompt's history stays
    out = reward(exp_of([1, 1], [0.0, 1.0], step=3))
    assert reward.tracker.prompts[7] == (4.0, 4.0, 3) and reward.tracker.keys[GLOBAL] == (5.0, 6.0, 3)
    # prompt 1 borrows its class's rate (5 + 1) / (6 + 2): Beta(2 * 0.75 + 1, 2 * 0.25 + 1), mean 0.625,
    # bucket 5 of 8 (without the dropped rows: rate 2 / 4, mean 0.5, bucket 4)
    assert out.ids[0].tolist() == [5, 5]


# ----------------------------------------------------------------------------- multiscale, shrink, budget


def test_multiscale_nests_scales_and_uses_fixed_weights():
    pid, topic, emb = three_topics()
    r = [float(p % 3 == 0) for p in pid.tolist()]
    g = make_grouper("multiscale", scales=["prompt", "semantic", "batch"], weights=[2, 1, 1], clusters=3)
    out = g(exp_of(pid.tolist(), r, emb=emb))
    assert isinstance(out, Groups) and out.names == ["prompt", "semantic", "batch"]
    assert same_partition(out.ids[0], pid) and same_partition(out.ids[1], topic[pid])
    assert out.metrics["grouping/weight_prompt"] == 0.5
    rew = torch.tensor(r)
    expected = (2 * group_advantages(rew, pid) + group_advantages(rew, topic[pid])
                + group_advantages(rew, torch.zeros_like(pid))) / 4
    assert out.advantages(rew, group_advantages, scale="group", eps=1e-4).tolist() == pytest.approx(expected.tolist())


def test_multiscale_tunes_weights_toward_the_predictive_scale():
    pid = torch.arange(8).repeat_interleave(4)
    r = (pid % 2).float().tolist()  # the prompt decides the reward
    g = make_grouper("multiscale", scales=["prompt", "batch"], decay=0.5)
    out = g(exp_of(pid.tolist(), r))
    assert out.weights == pytest.approx([1.0, 0.0])
    assert torch.is_tensor(g.state_dict()["tuned"])
    with pytest.raises(ValueError, match="weights"):
        make_grouper("multiscale", scales=["prompt", "batch"], weights=[1.0])
    with pytest.raises(ValueError, match="scale"):
        make_grouper("multiscale", scales=["prompt", "temporal"])


def test_shrink_wraps_any_grouper():
    e = exp_of([0, 0, 1, 1, 2, 2], [1, 0, 1, 1, 0, 0])
    out = make_grouper("prompt", shrink=True)(e)
    assert isinstance(out, Groups) and out.shrink
    a = out.advantages(e.rewards, group_advantages, scale="none", eps=0.0)
    assert a.tolist() == pytest.approx(shrunk_advantages(e.rewards, e.prompt_ids, torch.zeros(6, dtype=torch.long),
                                                         scale="none").tolist())
    assert a.tolist() == pytest.approx([0.5, -0.5, 1 / 6, 1 / 6, -1 / 6, -1 / 6])


def test_budget_gives_more_samples_where_rewards_disagree():
    g = make_grouper("prompt", budget=1.0, num_generations=4, min_samples=2, max_samples=8)
    assert g.plan_generations([0, 1, 2, 3], [{}] * 4, 1) == [4, 4, 4, 4]  # nothing known yet: even split
    for step in (1, 2):  # prompt 0 always right, 1 always wrong, 2 half and half
        g(exp_of([0] * 4 + [1] * 4 + [2] * 4, [1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0], step=step))
    counts = g.plan_generations([0, 1, 2, 3], [{}] * 4, 3)
    assert sum(counts) == 16 and min(counts) >= 2
    assert counts[2] == max(counts) and counts[0] == counts[1] == min(counts) < counts[3]
    restored = make_grouper("prompt", budget=1.0, num_generations=4, min_samples=2, max_samples=8)
    restored.load_state_dict(g.state_dict())
    assert restored.plan_generations([0, 1, 2, 3], [{}] * 4, 3) == counts
    # a smaller budget spends fewer completions
    assert sum(make_grouper("prompt", budget=0.5, num_generations=4).plan_generations([0, 1, 2, 3], [{}] * 4, 1)) == 8


def test_canonical_labels():
    assert canonical(torch.tensor([9, 9, 2, 7, 2])).tolist() == [0, 0, 1, 2, 1]


def test_bad_options_name_their_key():
    from grpokit.grouping import check_options

    assert check_options("prompt") == []
    assert check_options("multiscale", scales=["prompt", "batch"], weights=[1.0]) == [
        "algorithm.group.weights: 1 weights for 2 scales ['prompt', 'batch']"]
    assert check_options("temporal", window=0)[0].startswith("algorithm.group.window")
    assert check_options("reward", buckets=0)[0].startswith("algorithm.group.buckets")
    problems = check_options("prompt", budget=0.5, min_samples=5, max_samples=3)
    assert problems[0].startswith("algorithm.group.min_samples")
    assert "valid groupers" in check_options("nope")[0]
