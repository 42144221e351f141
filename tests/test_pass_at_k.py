"""pass@k: the unbiased estimator by hand, and `evaluate_examples` with several samples per prompt."""
import math

import pytest

from grpokit.evaluate import evaluate_examples, pass_at_k
from grpokit.rewards import RewardSet
from grpokit.types import Example, GenerationOutput


@pytest.mark.parametrize("n, c, k, want", [
    (8, 2, 1, 0.25),  # pass@1 is the share right
    (8, 2, 8, 1.0),  # all 8 drawn: one of them is right
    (5, 1, 2, 1 - math.comb(4, 2) / math.comb(5, 2)),  # 1 - 6/10 = 0.4
    (8, 0, 8, 0.0),
    (10, 3, 4, 1 - math.comb(7, 4) / math.comb(10, 4)),  # 1 - 35/210
    (200, 7, 100, 1 - math.comb(193, 100) / math.comb(200, 100)),  # large n: no overflow
])
def test_pass_at_k_by_hand(n, c, k, want):
    assert pass_at_k(n, c, k) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(n, c, k)


class _Tok:
    """Character ids: enough tokenizer for the evaluation's encode and decode."""
    chat_template = None
    eos_token_id = 0

    def __call__(self, text, **_):
        return {"input_ids": [ord(ch) for ch in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


class _Sampler:
    """Answers the k-th copy of a prompt with the texts given for that prompt, in order."""

    def __init__(self, answers):
        self.answers, self.rows = answers, 0

    def sample(self, prompt_ids, params, generator=None):
        texts = [t for per_prompt in self.answers for t in per_prompt]
        assert len(prompt_ids) == len(texts)  # each prompt repeated num_samples times, next to each other
        self.rows = len(prompt_ids)
        ids = [[ord(ch) for ch in t] for t in texts]
        return GenerationOutput(completion_ids=ids, logprobs=[[0.0] * len(c) for c in ids],
                                finished=[True] * len(texts), stop_reason=["eos"] * len(texts))


def test_several_samples_give_pass_at_1_and_pass_at_n():
    examples = [Example(id=0, prompt="Compute 1+1.", fields={"answer": "2"}),
                Example(id=1, prompt="Compute 2+2.", fields={"answer": "4"})]
    right, wrong = "<answer>{}</answer>", "<answer>9</answer>"
    sampler = _Sampler([[right.format(2), wrong, wrong, wrong], [wrong] * 4])  # 1 of 4, then 0 of 4
    res = evaluate_examples(sampler, _Tok(), examples, RewardSet([("accuracy", 1.0, {})]), max_new_tokens=8,
                            temperature=0.7, num_samples=4)
    assert sampler.rows == 8 and res.n == 2
    assert res.accuracy == pytest.approx(1 / 8)
    assert res.pass_at == pytest.approx({1: 1 / 8, 4: 0.5})
    assert [r["sample"] for r in res.samples] == [0, 1, 2, 3] * 2 and [r["id"] for r in res.samples] == [0] * 4 + [1] * 4
    assert "pass@4: 50.0%" in res.format_report()


def test_validate_names_num_samples_and_max_completions():
    from grpokit.config import load_config, validate
    from grpokit.config.schema import EvalConfig, TrainConfig

    cfg = load_config(EvalConfig, None, ["model.name_or_path=runs/x", "data=task:arithmetic:test", "num_samples=4"])
    assert any(p.startswith("num_samples = 4: needs temperature > 0") for p in validate(cfg))
    cfg = load_config(EvalConfig, None, ["model.name_or_path=runs/x", "data=task:arithmetic:test", "num_samples=0",
                                         "temperature=0.7"])
    assert any(p.startswith("num_samples") for p in validate(cfg))
    cfg = load_config(TrainConfig, None, ["model.name_or_path=tiny:xs", "data.train=task:arithmetic",
                                          "run.max_completions=-1"])
    assert any(p.startswith("run.max_completions") for p in validate(cfg))
