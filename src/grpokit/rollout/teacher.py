"""Log-probs of given completions by KV-cached decoding (teacher forcing).

A no-grad pass over a rollout batch (the reference model's, or the policy's over
replayed rows) is one forward over [N, L] positions. For a model small enough for the
whole decode step in C (`rollout.lean.whole_step_reason`) it is cheaper to prefill each
distinct prompt once (as sampling does) and then run every row's completion tokens
through that C code in one call, rows split between threads. The numbers are the
forward's up to float rounding (tests/test_teacher_logprobs.py).
"""
from __future__ import annotations

import torch

from grpokit.rollout.lean import whole_step_reason
from grpokit.rollout.stepper import _LeanStepper, loop_threads, start
from grpokit.rollout.threads import intra_op_threads


def decodable(model, attention_mask: torch.Tensor, prompt_len: int) -> bool:
    """Whether `decoded_logprobs` covers this batch: the whole C step applies to the
    model, and every row's completion columns are real tokens up to a point and padding
    after it (a row that attended past a padding column could not be fed in order)."""
    if whole_step_reason(model) is not None or prompt_len <= 0:
        return False
    rest = attention_mask[:, prompt_len:]  # [N, C]
    # a prefix of ones: the mask never rises again after it falls
    return bool((rest[:, 1:] <= rest[:, :-1]).all()) if rest.shape[1] > 1 else True


def decoded_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, *,
                     prompt_len: int, temperature: float = 1.0) -> torch.Tensor:
    """log p(input_ids[n, t] | input_ids[n, :t]) at every t >= prompt_len where
    loss_mask > 0, zero elsewhere [N, L]: `forward.sequence_logprobs` without gradients,
    for a rollout batch `decodable` accepts. temperature divides the logits."""
    n, length = input_ids.shape
    out = torch.zeros(n, length, dtype=torch.float32)
    with torch.inference_mode(), intra_op_threads(loop_threads(model), park=True):
        lp = _decode(model, input_ids.cpu(), attention_mask.cpu(), loss_mask.cpu(), prompt_len, temperature)
    out.copy_(lp)  # an ordinary tensor: the loss may use it beside autograd's
    return out.to(input_ids.device)


def _decode(model, ids, mask, loss_mask, p: int, temperature: float) -> torch.Tensor:
    n, length = ids.shape
    out = torch.zeros(n, length)
    scored = loss_mask[:, p:] > 0  # [N, C]
    cols = torch.arange(length - p)
    # after its last scored token a row has nothing left to give
    last = torch.where(scored.any(1), (scored * (cols + 1)).amax(1) - 1, -1)  # [N]
    live = (last >= 0).nonzero(as_tuple=True)[0]
    if live.numel() == 0:
        return out
    contexts = [ids[r, :p][mask[r, :p] > 0].tolist() for r in live.tolist()]
    width = int(last.max()) + 1  # completion columns to score
    first = start(model, contexts, pad_id=0, new_tokens=width, return_embeddings=False)
    stepper = first.stepper
    if not isinstance(stepper, _LeanStepper) or stepper.dec.whole is None:  # decodable() said it would be
        raise RuntimeError("decoded_logprobs: the model did not get the whole C decode step")
    logits = first.logits[:, None]  # [B, 1, V]: the first completion token's
    if width > 1:
        # every known token but the last, in one call: logits for the tokens after them
        pos = first.next_pos[:, None] + torch.arange(width - 1)  # [B, width - 1]
        rest = stepper.dec.extend(ids[live, p:p + width - 1], pos)  # [B, width - 1, V]
        logits = torch.cat([logits, rest], dim=1)  # [B, width, V]
    if temperature not in (0.0, 1.0):
        logits = logits / temperature
    targets = ids[live, p:p + width]  # [B, width]
    out[live, p:p + width] = torch.log_softmax(logits, dim=-1).gather(2, targets[..., None]).squeeze(2)
    out[:, p:] *= scored  # tokens the loss skips (e.g. tool output) were fed, not scored
    return out
