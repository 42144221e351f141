import pytest
import torch

from grpokit.model.forward import sequence_logprobs
from grpokit.model.policy import encode_prompts, eos_token_ids
from grpokit.rollout.batch import build_rollout_batch
from grpokit.rollout.generate import generate
from grpokit.rollout.sampler import sample_next


def _plain_logprobs(model, batch):
    pos = (batch.attention_mask.cumsum(1) - 1).clamp_min(0)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=pos).logits
    lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(2, batch.input_ids[:, 1:, None]).squeeze(2)
    return torch.cat([torch.zeros(lp.shape[0], 1), lp], 1) * batch.loss_mask


def _rollout(model, tok, prompts, **kw):
    ids = encode_prompts(tok, prompts)
    gen = generate(model, ids, eos_ids=eos_token_ids(model, tok), pad_id=tok.pad_token_id, **kw)
    batch = build_rollout_batch(ids, gen.completion_ids, gen.logprobs, pad_id=tok.pad_token_id,
                                example_index=list(range(len(ids))), finished=gen.finished,
                                completions=[""] * len(ids))
    return gen, batch


def test_cached_sampling_logprobs_equal_uncached_forward(tiny_model):
    model, tok = tiny_model
    gen, batch = _rollout(model, tok, ["Compute 1+2.", "Hi", "Compute 33-4+5."], max_new_tokens=12,
                          generator=torch.Generator().manual_seed(0))
    plain = _plain_logprobs(model, batch)
    assert torch.allclose(batch.logprobs, plain, atol=1e-4)
    chunked, _ = sequence_logprobs(model, batch.input_ids, batch.attention_mask, batch.loss_mask, chunk_rows=5)
    assert torch.allclose(chunked, plain, atol=1e-5)


def test_finished_rows_dropped_from_cache_do_not_change_others(tiny_model):
    model, tok = tiny_model
    eos = tok.eos_token_id
    with torch.no_grad():
        # Make EOS very likely after a "+" so some rows end early and others do not.
        model.lm_head.weight.data[eos] = 0
    gen_a, _ = _rollout(model, tok, ["Compute 1+2.", "Hello there"], max_new_tokens=10,
                        generator=torch.Generator().manual_seed(3))
    gen_b, _ = _rollout(model, tok, ["Hello there"], max_new_tokens=10, temperature=0)
    gen_c, _ = _rollout(model, tok, ["Compute 1+2.", "Hello there"], max_new_tokens=10, temperature=0)
    # Greedy output of a row does not depend on its batch companions.
    assert gen_c.completion_ids[1] == gen_b.completion_ids[0]
    assert len(gen_a.completion_ids) == 2


def test_seeds_reproduce_and_differ(tiny_model):
    model, tok = tiny_model
    a, _ = _rollout(model, tok, ["Compute 1+2."] * 4, max_new_tokens=8, generator=torch.Generator().manual_seed(1))
    b, _ = _rollout(model, tok, ["Compute 1+2."] * 4, max_new_tokens=8, generator=torch.Generator().manual_seed(1))
    c, _ = _rollout(model, tok, ["Compute 1+2."] * 4, max_new_tokens=8, generator=torch.Generator().manual_seed(2))
    assert a.completion_ids == b.completion_ids
    assert a.completion_ids != c.completion_ids


def _force_next_tokens(model, token_ids):
    """Replace the output layer so greedy decoding always prefers token_ids[0], then [1]..."""
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-10.0)
        for rank, t in enumerate(token_ids):
            head.bias[t] = 10.0 - rank
    model.lm_head = head


def test_eos_ends_rows_and_budget_limits_them(tiny_model):
    model, tok = tiny_model
    x = tok.convert_tokens_to_ids("x")
    _force_next_tokens(model, [x])
    ids = encode_prompts(tok, ["ab", "abc"])
    gen = generate(model, ids, max_new_tokens=5, eos_ids={tok.eos_token_id}, pad_id=tok.pad_token_id, temperature=0)
    assert gen.completion_ids == [[x] * 5, [x] * 5] and gen.stop_reason == ["length", "length"]
    assert gen.finished == [False, False]
    _force_next_tokens(model, [tok.eos_token_id])
    gen = generate(model, ids, max_new_tokens=5, eos_ids={tok.eos_token_id}, pad_id=tok.pad_token_id, temperature=0)
    assert gen.completion_ids == [[tok.eos_token_id]] * 2 and gen.finished == [True, True]


def test_stop_string_ends_row_after_the_string(tiny_model):
    model, tok = tiny_model
    target = tok.convert_tokens_to_ids("</search>")
    _force_next_tokens(model, [target])
    ids = encode_prompts(tok, ["q"])
    gen = generate(model, ids, max_new_tokens=4, eos_ids=set(), pad_id=tok.pad_token_id, temperature=0,
                   stop_strings=["</search>"], tokenizer=tok)
    assert gen.completion_ids == [[target]]
    assert gen.stop_reason == ["stop:</search>"] and gen.finished == [True]


def test_sampler_greedy_and_top_p_literal():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    tok, lp = sample_next(logits, temperature=0)
    assert tok.tolist() == [0] and abs(lp.item() - torch.log(torch.tensor(0.5)).item()) < 1e-6
    # top_p 0.6 keeps {0, 1}: over many draws token 2 and 3 never appear, and 0:1 ~ 5:3
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits, top_p=0.6, generator=g)[0] for _ in range(4000)]).flatten()
    assert set(draws.tolist()) <= {0, 1}
    share0 = (draws == 0).float().mean().item()
    assert abs(share0 - 0.625) < 0.03
    # the returned log-prob is under the untruncated tempered distribution
    tok, lp = sample_next(logits, temperature=1.0, top_p=0.6, generator=g)
    assert abs(lp.item() - logits[0, tok.item()].item()) < 1e-5


def test_sampler_frequencies_match_distribution():
    logits = torch.log(torch.tensor([[0.2, 0.8]])).repeat(20000, 1)
    tok, _ = sample_next(logits, generator=torch.Generator().manual_seed(0))
    assert abs(tok.float().mean().item() - 0.8) < 0.01


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_draws_the_inverse_cdf_token_of_log_softmax(temperature):
    """The one-buffer sampler picks the token a normalised CDF picks for the same uniform,
    and returns the token's log-softmax, on a 32k vocabulary."""
    from grpokit.rollout.sampler import _uniform

    g = torch.Generator().manual_seed(4)
    logits = torch.randn(16, 32000, generator=g) * 4
    logits[3, 100:] = float("-inf")  # a masked tail draws nothing
    tok, lp = sample_next(logits, temperature=temperature, generator=torch.Generator().manual_seed(9))
    want_logp = torch.log_softmax(logits / temperature, dim=-1)
    cdf = want_logp.exp().cumsum(dim=-1)
    u = _uniform(cdf, torch.Generator().manual_seed(9))
    want = torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(1)
    assert torch.equal(tok, want)
    assert tok[3] < 100
    # against float64: within 1e-6 (float32 log_softmax itself is off by up to ~5e-6 here)
    exact = torch.log_softmax(logits.double() / temperature, dim=-1).gather(1, tok[:, None]).squeeze(1)
    torch.testing.assert_close(lp.double(), exact, atol=1e-6, rtol=0)
