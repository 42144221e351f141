"""Every speed-up computes the same function as the plain computation.

- chunked, output-layer-only-where-needed (and checkpointed, for large vocabularies)
  log-probs, entropies and their gradients == log_softmax over full [N, L, V] logits;
- the reference pass (micro-batched, trimmed) == the plain forward;
- KV-cached generation that drops finished rows == an uncached loop that re-runs the
  whole sequence at every step (same sampled tokens for the same seed, same log-probs);
- skipping zero-advantage rows and micro-batching == the full-batch gradient.
No timings here: `grpokit bench` measures speed.
"""
import copy

import pytest
import torch

from grpokit.model.forward import CHECKPOINT_MIN_VOCAB, sequence_logprobs
from grpokit.model.policy import encode_prompts
from grpokit.rollout.batch import build_rollout_batch
from grpokit.rollout.generate import generate, left_pad
from grpokit.model.forward import TorchPass
from sampling import sample
from grpokit.rollout.sampler import sample_next
from grpokit.update import LossSettings, reference_logprobs, update_policy


def _qwen(vocab: int, seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                      tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(cfg).eval()


def _random_batch(vocab: int, n: int = 5, seed: int = 0):
    """Left-padded prompts of different lengths, right-padded completions of different lengths."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(2, vocab, (int(k),), generator=g).tolist() for k in torch.randint(2, 7, (n,), generator=g)]
    comps = [torch.randint(2, vocab, (int(k),), generator=g).tolist() for k in torch.randint(1, 9, (n,), generator=g)]
    return build_rollout_batch(prompts, comps, [[0.0] * len(c) for c in comps], pad_id=0,
                               example_index=list(range(n)), finished=[True] * n, completions=[""] * n)


def _plain(model, batch, temperature=1.0):
    """log_softmax over the full [N, L, V] logits; entropy of every position."""
    pos = (batch.attention_mask.cumsum(1) - 1).clamp_min(0)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=pos).logits
    lp_all = torch.log_softmax(logits[:, :-1].float() / temperature, -1)  # [N, L-1, V]
    lp = lp_all.gather(2, batch.input_ids[:, 1:, None]).squeeze(2)
    ent = -(lp_all.exp() * lp_all).sum(-1)
    pad = torch.zeros(lp.shape[0], 1)
    return torch.cat([pad, lp], 1) * batch.loss_mask, torch.cat([pad, ent], 1) * batch.loss_mask


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("vocab", [61, CHECKPOINT_MIN_VOCAB + 37])  # plain chunks / checkpointed chunks
@pytest.mark.parametrize("chunk_rows", [3, 0, 1024])  # 0: sized from the vocabulary
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("head_bias", [False, True])
def test_chunked_logprobs_entropy_and_gradients_equal_full_logits(vocab, chunk_rows, temperature, head_bias):
    model = _qwen(vocab)
    if head_bias:
        head = torch.nn.Linear(model.lm_head.in_features, vocab, bias=True)
        with torch.no_grad():
            head.weight.copy_(model.lm_head.weight)
            head.bias.normal_(generator=torch.Generator().manual_seed(2))
        model.lm_head = head
    batch = _random_batch(vocab)
    weights = torch.randn(batch.input_ids.shape, generator=torch.Generator().manual_seed(1))

    a = copy.deepcopy(model)
    lp, ent = sequence_logprobs(a, batch.input_ids, batch.attention_mask, batch.loss_mask,
                                temperature=temperature, with_entropy=True, chunk_rows=chunk_rows)
    (lp * weights).sum().backward()

    b = copy.deepcopy(model)
    lp_ref, ent_ref = _plain(b, batch, temperature)
    (lp_ref * weights).sum().backward()

    assert torch.allclose(lp, lp_ref, atol=1e-5)
    assert torch.allclose(ent, ent_ref, atol=1e-4)
    assert torch.allclose(_grads(a), _grads(b), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("micro", [0, 2])
def test_reference_pass_equals_plain_forward(micro):
    model = _qwen(CHECKPOINT_MIN_VOCAB + 37)
    batch = _random_batch(CHECKPOINT_MIN_VOCAB + 37, n=6, seed=3)
    got = reference_logprobs(model, batch, temperature=1.0, micro_batch_size=micro)
    with torch.no_grad():
        want, _ = _plain(model, batch)
    assert torch.allclose(got, want, atol=1e-5)


def _uncached_generate(model, prompt_ids, *, max_new_tokens, eos, pad_id, generator):
    """Reference sampler: the whole sequence is re-run every step (no KV cache); finished
    rows stop drawing random numbers, as in generate()."""
    ids, mask = left_pad(prompt_ids, pad_id)
    n = len(prompt_ids)
    toks = [[] for _ in range(n)]
    lps = [[] for _ in range(n)]
    active = list(range(n))
    for _ in range(max_new_tokens):
        sub_ids, sub_mask = ids[active], mask[active]
        pos = (sub_mask.cumsum(1) - 1).clamp_min(0)
        with torch.no_grad():
            logits = model(input_ids=sub_ids, attention_mask=sub_mask, position_ids=pos).logits[:, -1]
        tok, lp = sample_next(logits, temperature=1.0, generator=generator)
        new_col = torch.full((n, 1), pad_id, dtype=torch.long)
        new_col[active, 0] = tok
        ids = torch.cat([ids, new_col], 1)
        mask = torch.cat([mask, torch.zeros((n, 1), dtype=torch.long)], 1)
        mask[active, -1] = 1
        still = []
        for j, row in enumerate(active):
            toks[row].append(int(tok[j]))
            lps[row].append(float(lp[j]))
            if int(tok[j]) not in eos:
                still.append(row)
        active = still
        if not active:
            break
    return toks, lps


@pytest.mark.parametrize("vocab", [61, CHECKPOINT_MIN_VOCAB + 37])
def test_cached_generation_dropping_finished_rows_equals_uncached_loop(vocab):
    model = _qwen(vocab, seed=2)
    eos = 1
    # Raise EOS so that rows finish at different steps and the cache drops rows mid-way.
    head = torch.nn.Linear(32, vocab, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[eos] = float(torch.log(torch.tensor(0.2 * vocab)))  # p(EOS) ~ 1/6 per step
    model.lm_head = head
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(2, vocab, (k,), generator=g).tolist() for k in (3, 6, 4, 5, 2, 6)]

    out = sample(model, prompts, max_new_tokens=12, eos_ids={eos}, pad_id=0, temperature=1.0, lean=True,
                 generator=torch.Generator().manual_seed(7))
    toks, lps = _uncached_generate(model, prompts, max_new_tokens=12, eos={eos}, pad_id=0,
                                   generator=torch.Generator().manual_seed(7))
    lengths = [len(c) for c in out.completion_ids]
    assert len(set(lengths)) > 1, "rows should finish at different steps"
    assert out.completion_ids == toks
    for a, b in zip(out.logprobs, lps):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4)


@pytest.mark.parametrize("lean", [True, False])
def test_repeated_prompts_prefilled_once_sample_like_the_uncached_loop(lean):
    """A GRPO batch: each prompt G times. The shared prefill must not change any row."""
    vocab, eos = 61, 1
    model = _qwen(vocab, seed=4)
    head = torch.nn.Linear(32, vocab, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[eos] = float(torch.log(torch.tensor(0.2 * vocab)))
    model.lm_head = head
    g = torch.Generator().manual_seed(1)
    distinct = [torch.randint(2, vocab, (k,), generator=g).tolist() for k in (3, 6, 4)]
    prompts = [p for p in distinct for _ in range(4)]  # 3 prompts x G=4, grouped as GRPO lays them out
    fed = []
    hook = model.model.embed_tokens.register_forward_pre_hook(lambda m, args: fed.append(tuple(args[0].shape)))
    out = sample(model, prompts, max_new_tokens=10, eos_ids={eos}, pad_id=0, temperature=1.0, lean=lean,
                 generator=torch.Generator().manual_seed(5), return_embeddings=True)
    hook.remove()
    assert fed[0] == (3, 6)  # the prefill ran one row per distinct prompt
    assert all(shape[1] == 1 for shape in fed[1:])
    toks, lps = _uncached_generate(model, prompts, max_new_tokens=10, eos={eos}, pad_id=0,
                                   generator=torch.Generator().manual_seed(5))
    assert out.completion_ids == toks
    assert len({tuple(c) for c in out.completion_ids}) > 3, "rows of one prompt should differ"
    for a, b in zip(out.logprobs, lps):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4)
    assert out.forward_calls == 1 + max(len(c) for c in toks) - 1
    assert torch.equal(out.embeddings[0], out.embeddings[3]) and not torch.equal(out.embeddings[0], out.embeddings[4])


def test_generation_is_independent_of_chunking_into_generation_batches(tiny_model):
    model, tok = tiny_model
    ids = encode_prompts(tok, ["Compute 1+2.", "Hi", "Compute 33-4+5.", "ab"])
    # greedy: a row's completion must not depend on which rows share its batch
    full = generate(model, ids, max_new_tokens=8, eos_ids={tok.eos_token_id}, pad_id=tok.pad_token_id,
                    temperature=0)
    split = generate(model, ids, max_new_tokens=8, eos_ids={tok.eos_token_id}, pad_id=tok.pad_token_id,
                     temperature=0, batch_size=1)
    assert full.completion_ids == split.completion_ids


class _NoStep(torch.optim.SGD):
    def step(self, closure=None):
        return None


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_update_skipping_and_micro_batches_give_the_full_gradient(beta):
    vocab = CHECKPOINT_MIN_VOCAB + 37
    model = _qwen(vocab)
    batch = _random_batch(vocab, n=6, seed=5)
    with torch.no_grad():
        batch.logprobs.copy_(_plain(model, batch)[0])
    ref = reference_logprobs(model, batch, temperature=1.0) if beta else None
    adv = torch.tensor([1.0, 0.0, -0.5, 0.0, 0.0, 2.0])
    settings = LossSettings(clip_low=0.2, clip_high=0.2, ratio="token", loss_agg="token_mean", beta=beta,
                            kl_estimator="k3", mu=1)

    def run(advantages, micro):
        m = copy.deepcopy(model)
        stats = update_policy(m, _NoStep(m.parameters(), lr=0.0), batch, advantages, settings, ref_logp=ref,
                              temperature=1.0, micro_batch_size=micro, max_grad_norm=0)
        return _grads(m), stats

    g_fast, stats = run(adv, 0)
    g_micro, _ = run(adv, 4)
    # 1e-30 is "nonzero" for the skip test but changes no gradient: every row is trained
    g_all, stats_all = run(torch.where(adv == 0, torch.tensor(1e-30), adv), 0)
    assert stats["trained_rows"] == (6.0 if beta else 3.0) and stats_all["trained_rows"] == 6.0
    assert torch.allclose(g_fast, g_all, atol=1e-7)
    assert torch.allclose(g_fast, g_micro, atol=1e-6)


def _group_batch(vocab: int, groups: int = 3, g: int = 4, seed: int = 0):
    """GRPO layout: each of `groups` left-padded prompts (different lengths) repeated g
    times, completions of different lengths."""
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(2, vocab, (int(k),), generator=gen).tolist() for k in (3, 6, 1)[:groups]]
    rows = [p for p in prompts for _ in range(g)]
    comps = [torch.randint(2, vocab, (int(k),), generator=gen).tolist()
             for k in torch.randint(1, 9, (len(rows),), generator=gen)]
    return build_rollout_batch(rows, comps, [[0.0] * len(c) for c in comps], pad_id=0,
                               example_index=list(range(len(rows))), finished=[True] * len(rows),
                               completions=[""] * len(rows))


def _arch_model(arch: str, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    if arch == "qwen2":
        return _qwen(vocab)
    cls = {"llama": (LlamaConfig, LlamaForCausalLM), "mistral": (MistralConfig, MistralForCausalLM)}[arch]
    kw = {"sliding_window": None} if arch == "mistral" else {}
    cfg = cls[0](vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=64, max_position_embeddings=128, tie_word_embeddings=False, pad_token_id=0,
                 eos_token_id=1, bos_token_id=1, **kw)
    torch.manual_seed(0)
    return cls[1](cfg).eval()


@pytest.mark.parametrize("arch", ["qwen2", "llama", "mistral"])
@pytest.mark.parametrize("vocab", [61, CHECKPOINT_MIN_VOCAB + 37])
def test_shared_prompt_pass_equals_one_pass_per_row(arch, vocab, monkeypatch):
    """Each distinct prompt run once, its keys and values shared by its group: the same
    log-probs, entropy and parameter gradients as the plain pass, and fewer positions."""
    import grpokit.model.forward as fwd

    model = _arch_model(arch, vocab)
    batch = _group_batch(vocab)
    weights = torch.randn(batch.input_ids.shape, generator=torch.Generator().manual_seed(1))
    positions = []
    calls = []
    real = fwd._shared_prompt_hidden
    monkeypatch.setattr(fwd, "_shared_prompt_hidden", lambda *a: calls.append(1) or real(*a))

    a = copy.deepcopy(model)
    a.get_input_embeddings().register_forward_pre_hook(lambda m, x: positions.append(x[0].numel()))
    lp, ent = sequence_logprobs(a, batch.input_ids, batch.attention_mask, batch.loss_mask, with_entropy=True,
                                prompt_len=batch.prompt_len)
    (lp * weights).sum().backward()
    assert calls, "the shared pass was not taken"
    n, length = batch.input_ids.shape
    p = batch.prompt_len
    assert sum(positions) == 3 * p + n * (length - p)  # 3 prompts once, then every row's completion part

    b = copy.deepcopy(model)
    lp_ref, ent_ref = _plain(b, batch)
    (lp_ref * weights).sum().backward()
    assert torch.allclose(lp, lp_ref, atol=1e-5)
    assert torch.allclose(ent, ent_ref, atol=1e-4)
    assert torch.allclose(_grads(a), _grads(b), atol=1e-5, rtol=1e-4)


def test_shared_prompt_pass_falls_back_when_no_prompt_repeats_or_a_prompt_token_is_trained():
    import grpokit.model.forward as fwd

    model = _qwen(61)
    distinct = _random_batch(61)  # every prompt differs
    lp, _ = sequence_logprobs(model, distinct.input_ids, distinct.attention_mask, distinct.loss_mask,
                              prompt_len=distinct.prompt_len)
    with torch.no_grad():
        want, _ = _plain(model, distinct)
    assert torch.allclose(lp.detach(), want, atol=1e-5)
    batch = _group_batch(61)
    mask = batch.loss_mask.clone()
    mask[:, batch.prompt_len - 1] = 1.0  # a "trained" prompt token: the shared pass cannot serve it
    with torch.no_grad():
        lp, _ = sequence_logprobs(model, batch.input_ids, batch.attention_mask, mask, prompt_len=batch.prompt_len)
    assert fwd._can_share_prompts(model)
    assert lp[:, batch.prompt_len - 1].abs().sum() > 0


@pytest.mark.parametrize("micro", [0, 5])
def test_update_with_shared_prompts_equals_the_plain_update(micro):
    """A whole update (KL term, micro-batches that split groups) with and without sharing."""
    model = _qwen(CHECKPOINT_MIN_VOCAB + 37)
    batch = _group_batch(CHECKPOINT_MIN_VOCAB + 37)
    adv = torch.randn(batch.size, generator=torch.Generator().manual_seed(4))
    settings = LossSettings(clip_low=0.2, clip_high=0.28, ratio="token", loss_agg="token_mean", beta=0.04,
                            kl_estimator="k3", mu=1)
    ref = reference_logprobs(model, batch, temperature=1.0, passes=TorchPass(share_prompt=False))
    assert torch.allclose(reference_logprobs(model, batch, temperature=1.0, micro_batch_size=micro), ref, atol=1e-5)
    out = []
    for share in (True, False):
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        stats = update_policy(m, opt, batch, adv, settings, ref_logp=ref, temperature=1.0, micro_batch_size=micro,
                              passes=TorchPass(share_prompt=share))
        out.append((stats["loss"], torch.cat([p.detach().flatten() for p in m.parameters()])))
    assert out[0][0] == pytest.approx(out[1][0], abs=1e-6)
    assert torch.allclose(out[0][1], out[1][1], atol=1e-6)


def test_gradient_checkpointing_update_equals_the_plain_update():
    """optim.gradient_checkpointing: the same loss and the same updated weights; the
    policy pass then runs every row (transformers drops the cache), the reference pass
    (no grad) still shares prompts."""
    import grpokit.model.forward as fwd

    model = _qwen(CHECKPOINT_MIN_VOCAB + 37)
    batch = _group_batch(CHECKPOINT_MIN_VOCAB + 37)
    adv = torch.randn(batch.size, generator=torch.Generator().manual_seed(4))
    settings = LossSettings(clip_low=0.2, clip_high=0.2, ratio="token", loss_agg="token_mean", beta=0.0,
                            kl_estimator="k3", mu=2)
    out = []
    for ckpt in (True, False):
        m = copy.deepcopy(model)
        if ckpt:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            m.train()
            with torch.no_grad():
                assert fwd._can_share_prompts(m)
            assert not fwd._can_share_prompts(m)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        stats = update_policy(m, opt, batch, adv, settings, ref_logp=None, temperature=1.0)
        out.append((stats["loss"], torch.cat([p.detach().flatten() for p in m.parameters()])))
    assert out[0][0] == pytest.approx(out[1][0], abs=1e-6)
    assert torch.allclose(out[0][1], out[1][1], atol=1e-6)
