import math

import pytest

from grpokit.optim import lr_factor
from grpokit.prompt_sampler import PromptSampler


def test_lr_schedule_literal_values():
    assert lr_factor(0, warmup=4, total=10, schedule="constant") == 0.25
    assert lr_factor(3, warmup=4, total=10, schedule="linear") == 1.0
    assert lr_factor(7, warmup=4, total=10, schedule="linear") == pytest.approx(0.5)
    assert lr_factor(7, warmup=4, total=10, schedule="cosine") == pytest.approx(0.5)
    assert lr_factor(5, warmup=4, total=10, schedule="cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 6)))
    with pytest.raises(ValueError, match="constant, linear, cosine"):
        lr_factor(0, warmup=0, total=1, schedule="step")


def test_prompt_sampler_covers_epochs_and_resumes():
    s = PromptSampler(5, seed=1)
    first = s.next(5)
    assert sorted(first) == [0, 1, 2, 3, 4]
    s.next(2)
    state = s.state_dict()
    a = s.next(6)
    t = PromptSampler(5, seed=1)
    t.load_state_dict(state)
    assert t.next(6) == a
    assert PromptSampler(5, seed=1, shuffle=False).next(7) == [0, 1, 2, 3, 4, 0, 1]
