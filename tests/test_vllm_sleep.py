"""VLLMSampler's sleep-mode bookkeeping (rollout/vllm.py), against a stand-in engine: no
vLLM needed. rollout/vllm.py imports vllm only inside functions, so a fake `vllm` module
in sys.modules serves `vllm.LLM` and `vllm.SamplingParams`.

The stand-in follows vLLM 0.32's rules: `sleep(level=2)` frees the "weights" and
"kv_cache" allocations; `wake_up(tags)` re-maps the named ones (all when tags is None) and
returns whether the engine is fully awake, and a wake-up of a tag that is not asleep is
refused with a warning; level 2 keeps no copy of the weights, so loading weights into
freed memory or generating while anything is freed is an error here.

On a GPU the same path runs against real vLLM in tests/test_vllm.py
(test_sleep_mode_training_on_cuda).
"""
from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest
import torch

import grpokit.rollout.vllm as rv
from grpokit.config.schema import VLLMConfig
from grpokit.types import SamplingParams

TOKENS = [5, 6, 7]


class FakeLLM:
    """Records what VLLMSampler asks of the engine, in order, in `events`."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.events: list[tuple] = []
        self.asleep: set[str] = set()
        self.loads: list[dict[str, torch.Tensor]] = []  # the weights of every load, as loaded
        self.warnings: list[str] = []

    def generate(self, prompts, params, use_tqdm=True):
        if self.asleep:
            raise RuntimeError(f"generate while {sorted(self.asleep)} are freed")
        self.events.append(("generate", len(prompts)))
        lps = [{t: SimpleNamespace(logprob=-1.0)} for t in TOKENS]
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=list(TOKENS), logprobs=lps, finish_reason="length",
                                                         stop_reason=None)]) for _ in prompts]

    def sleep(self, level=1):
        self.events.append(("sleep", level))
        if "weights" in self.asleep:
            self.warnings.append("Executor is already sleeping.")
            return
        self.asleep = {"weights", "kv_cache"}

    def wake_up(self, tags=None):
        self.events.append(("wake_up", None if tags is None else tuple(tags)))
        if not self.asleep:
            self.warnings.append("Executor is not sleeping.")
            return True
        if tags and any(t not in self.asleep for t in tags):
            self.warnings.append(f"Tag {tags} is not in sleeping tags {sorted(self.asleep)}")
            return False
        self.asleep = set() if tags is None else self.asleep - set(tags)
        return not self.asleep

    def collective_rpc(self, method, kwargs=None):
        assert method == "reload_weights", method
        if "weights" in self.asleep:
            raise RuntimeError("weights loaded into freed memory")
        self.events.append(("load",))
        self.loads.append({k: v.clone() for k, v in kwargs["weights_iterator"]})

    def reset_prefix_cache(self):
        self.events.append(("reset_prefix_cache",))
        return True


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    mod.LLM = FakeLLM
    mod.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", mod)
    # _build_engine sets these for the in-process engine; restore them afterwards
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    return mod


def _sampler(model, tok, monkeypatch, *, cuda: bool, sleep_mode: bool = True):
    if cuda:  # the policy "on a GPU": the only thing the sampler asks of the device
        monkeypatch.setattr(rv, "_on_cuda", lambda m: True)
    return rv.VLLMSampler(model, tok, eos_ids={tok.eos_token_id}, pad_id=tok.pad_token_id,
                          options=VLLMConfig(sleep_mode=sleep_mode), max_model_len=64, seed=0)


def _sample(sampler, tok, **kw):
    out = sampler.sample([tok("1+2")["input_ids"]] * 2, SamplingParams(max_new_tokens=8), **kw)
    return out


def _events(sampler):
    ev = list(sampler.llm.events)
    sampler.llm.events.clear()
    return ev


def _train(model):
    """An 'optimizer step': every weight changes."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)


def _assert_loaded_current(llm, model):
    loaded, now = llm.loads[-1], rv.merged_state_dict(model)
    assert loaded.keys() == now.keys()
    assert all(torch.equal(loaded[k], now[k]) for k in now)


def test_sleeps_after_sampling_and_wakes_before_the_next(tiny_model, fake_vllm, monkeypatch):
    model, tok = tiny_model
    s = _sampler(model, tok, monkeypatch, cuda=True)
    assert s.llm.kwargs.get("enable_sleep_mode") is True
    assert _events(s) == []  # built awake; nothing to do before the first sample

    out = _sample(s, tok)
    assert out.completion_ids == [TOKENS, TOKENS]
    assert _events(s) == [("generate", 2), ("sleep", 2)]
    assert s.llm.asleep == {"weights", "kv_cache"} and s.asleep == {"weights", "kv_cache"}

    # the trainer's order: optimizer step, sync, next sample
    _train(model)
    s.sync_weights(model)
    assert _events(s) == [("wake_up", ("weights",)), ("load",), ("reset_prefix_cache",)]
    _assert_loaded_current(s.llm, model)
    assert s.llm.asleep == {"kv_cache"}  # the KV cache stays freed until sampling

    _sample(s, tok)  # the weights were synced since the sleep: not loaded again
    assert _events(s) == [("wake_up", ("kv_cache",)), ("generate", 2), ("sleep", 2)]
    assert len(s.llm.loads) == 1 and s.llm.warnings == []

    # nothing to generate: the engine is not woken (or put back to sleep)
    out = s.sample([tok("1+2")["input_ids"]], SamplingParams(max_new_tokens=8), budgets=[0])
    assert out.completion_ids == [[]] and _events(s) == [] and s.llm.asleep == {"weights", "kv_cache"}


def test_weights_are_reloaded_when_it_slept_without_a_sync(tiny_model, fake_vllm, monkeypatch):
    """Level 2 drops the weights: two samples with no sync between (the turns of a tool
    rollout, an evaluation) must load the policy's weights again, its current ones."""
    model, tok = tiny_model
    s = _sampler(model, tok, monkeypatch, cuda=True)
    _sample(s, tok)
    _events(s)
    _train(model)  # changed, not synced: the reload takes the policy as it is now
    _sample(s, tok)
    assert _events(s) == [("wake_up", ("weights",)), ("load",), ("reset_prefix_cache",), ("wake_up", ("kv_cache",)),
                          ("generate", 2), ("sleep", 2)]
    _assert_loaded_current(s.llm, model)
    assert s.llm.warnings == []


def test_syncs_while_asleep(tiny_model, fake_vllm, monkeypatch):
    """A sync while asleep wakes the weights only; a second sync (no sample between, as
    after a resume) finds them awake and just loads; a sync of another model object
    (the trainer's) is what a later reload uses."""
    model, tok = tiny_model
    s = _sampler(model, tok, monkeypatch, cuda=True)
    _sample(s, tok)
    _events(s)
    s.sync_weights(model)
    _train(model)
    s.sync_weights(model)
    assert _events(s) == [("wake_up", ("weights",)), ("load",), ("reset_prefix_cache",),
                          ("load",), ("reset_prefix_cache",)]
    _assert_loaded_current(s.llm, model)
    assert s.llm.asleep == {"kv_cache"} and s.llm.warnings == []

    other = type(model)(model.config)  # different weights
    s.sync_weights(other)
    _sample(s, tok)  # synced since: not reloaded on waking
    _sample(s, tok)  # slept again without a sync: reloaded from the model last synced
    assert len(s.llm.loads) == 4
    _assert_loaded_current(s.llm, other)
    assert s.llm.warnings == []


@pytest.mark.parametrize("cuda,sleep_mode", [(False, True), (True, False)], ids=["cpu", "sleep_mode-off"])
def test_nothing_sleeps_on_cpu_or_with_sleep_mode_off(tiny_model, fake_vllm, monkeypatch, cuda, sleep_mode):
    model, tok = tiny_model
    s = _sampler(model, tok, monkeypatch, cuda=cuda, sleep_mode=sleep_mode)
    assert "enable_sleep_mode" not in s.llm.kwargs and not s.sleeping
    _sample(s, tok)
    _train(model)
    s.sync_weights(model)
    _sample(s, tok)
    assert _events(s) == [("generate", 2), ("load",), ("reset_prefix_cache",), ("generate", 2)]
    assert s.llm.asleep == set() and s.asleep == set()


def test_the_real_device_check(tiny_model):
    model, _ = tiny_model
    assert rv._on_cuda(model) is False
