"""Multi-turn rollouts with tool calls (ReSearch / Search-R1 style), batched.

The model writes `<search>query</search>`; the row pauses at the closing tag, the tool
runs, `<result>...</result>` is appended to the row with loss mask 0 (the model did not
write it, so it is never trained on and its log-probs, KL, entropy and length never
count), and the row goes on until an answer / EOS / stop string, the turn limit or the
token budget.

How the batch is scheduled (rounds):
  round 0 samples every row; a row that closes a tool call leaves the batch at once
  (it is dropped from the KV cache, so it costs the others nothing) and its tool call
  is submitted to a thread pool right then, so tools run while the other rows are still
  being sampled. When the round ends, the paused rows get their results and round 1
  continues them with a single prefill of their context (prompt + everything so far),
  and so on. Rows that never call a tool are never slowed down by those that do; a
  paused row waits at most for the end of its round.

Limits: `max_turns` tool calls per row (the call after that ends the row with stop
reason "turn_limit", not run); `max_new_tokens` bounds everything after the prompt,
tool results included (a result is cut to fit, and to `max_tool_tokens`).

`MultiTurnSampler` wraps any Sampler and is one: it returns a GenerationOutput with
`completion_masks` (1 = sampled token, 0 = tool token) and tool metadata. A sampler that
reports each row's stop as it happens (`streams_stops`, e.g. `StepSampler`) lets a tool
start while the other rows are still sampled; with any other, tools start when the round
ends (same results, later).
"""
from __future__ import annotations

import dataclasses
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from grpokit.tools import DEFAULT_MAX_QUERY_CHARS, ToolError
from grpokit.rollout.generate import concat_outputs
from grpokit.rollout.seeding import keyed
from grpokit.tools.parsing import RESULT_CLOSE, RESULT_OPEN, closing_call, sanitize_result
from grpokit.types import GenerationOutput, Sampler, SamplingParams, Tool


@dataclass
class ToolCallRecord:
    tool: str
    query: str
    ok: bool  # False: malformed call, tool error, timeout...
    seconds: float
    result: str


@dataclass
class MultiTurnOutput(GenerationOutput):
    completion_masks: list[list[int]] = field(default_factory=list)  # per completion token: 1 sampled, 0 tool
    calls: list[list[ToolCallRecord]] = field(default_factory=list)  # per row, in order
    metadata: dict[str, Any] = field(default_factory=dict)  # per-row lists and step summary (see summarize)


@dataclass
class _Row:
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    calls: list[ToolCallRecord] = field(default_factory=list)
    reason: str = "length"
    pending: Future | None = None
    pending_error: str | None = None
    limit_hit: bool = False  # closed one call more than max_turns allows


def run_tool(tool: Tool, query: str) -> tuple[str, bool, float]:
    """(result text, ok, seconds); errors become a result text the model sees."""
    start = time.perf_counter()
    try:
        text, ok = str(tool(query)), True
    except ToolError as e:
        text, ok = f"error: {e}", False
    except Exception as e:  # noqa: BLE001 - a broken tool must not stop training
        text, ok = f"error: {type(e).__name__}: {e}", False
    return text, ok, time.perf_counter() - start


class MultiTurnSampler:
    """A Sampler with tool calls on top of another Sampler. tools: objects with
    name/description/__call__ (the name is the tag); tokenizer: encodes results and
    decodes tool calls."""

    def __init__(self, sampler: Sampler, tools: Sequence[Tool], tokenizer, *, max_turns: int = 4,
                 max_tool_tokens: int = 256, workers: int = 4):
        if max_turns < 0 or max_tool_tokens < 1:
            raise ValueError(f"max_turns must be >= 0 and max_tool_tokens >= 1, got {max_turns}, {max_tool_tokens}")
        self.sampler = sampler
        self.tools = {t.name: t for t in tools}
        self.tags = list(self.tools)
        self.tokenizer = tokenizer
        self.max_turns, self.max_tool_tokens, self.workers = max_turns, max_tool_tokens, workers
        self._open = self._encode(RESULT_OPEN)
        self._close = self._encode(RESULT_CLOSE)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def close_tags(self) -> list[str]:
        return [f"</{t}>" for t in self.tags]

    def sync_weights(self, model) -> None:
        self.sampler.sync_weights(model)

    def sample(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
               generator: torch.Generator | None = None,
               budgets: Sequence[int] | None = None) -> MultiTurnOutput:
        tok = self.tokenizer
        n = len(prompt_ids)
        max_new_tokens = params.max_new_tokens
        limits = list(budgets) if budgets is not None else [max_new_tokens] * n
        rows = [_Row() for _ in range(n)]
        stops = tuple(params.stop_strings) + tuple(t for t in self.close_tags if t not in params.stop_strings)
        streams = getattr(self.sampler, "streams_stops", False)
        embeddings = None
        forward_calls = 0
        active = list(range(n))
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            for turn in range(self.max_turns + 1):
                if not active:
                    break

                def on_stop(i: int, reason: str, new: list[int], _active=active) -> None:
                    self._pause(rows[_active[i]], reason, new, tok, pool)

                contexts = [list(prompt_ids[i]) + rows[i].ids for i in active]
                left = [limits[i] - len(rows[i].ids) for i in active]
                round_params = dataclasses.replace(params, stop_strings=stops,
                                                   return_embeddings=params.return_embeddings and turn == 0)
                # keyed streams follow their rows from round to round
                rng = generator.take(active) if keyed(generator) else generator
                if streams:
                    res = self.sampler.sample(contexts, round_params, generator=rng, budgets=left,
                                              on_stop=on_stop)
                else:
                    res = self.sampler.sample(contexts, round_params, generator=rng, budgets=left)
                    for j in range(len(active)):
                        on_stop(j, res.stop_reason[j], res.completion_ids[j])
                forward_calls += res.forward_calls
                if turn == 0:
                    embeddings = res.embeddings
                next_active = []
                for j, i in enumerate(active):
                    row = rows[i]
                    row.ids += res.completion_ids[j]
                    row.logprobs += res.logprobs[j]
                    row.mask += [1] * len(res.completion_ids[j])
                    row.reason = "turn_limit" if row.limit_hit else res.stop_reason[j]
                    if row.pending is not None or row.pending_error is not None:
                        if self._insert_result(row, limits[i]):
                            next_active.append(i)
                active = next_active
        return self._output(rows, embeddings, forward_calls)

    # -- one paused row -------------------------------------------------------------------
    def _pause(self, row: _Row, reason: str, new: list[int], tok, pool: ThreadPoolExecutor) -> None:
        """Called the moment a row stops: if it closed a tool call, start the tool."""
        if not reason.startswith("stop:") or reason[5:] not in self.close_tags:
            return
        if len(row.calls) >= self.max_turns:
            row.limit_hit = True
            return
        call = closing_call(tok.decode(new, skip_special_tokens=False), self.tags)
        if call is None:  # the stop string matched but no call ends here (cannot happen with our tags)
            row.pending_error = "error: malformed tool call"
            row.calls.append(ToolCallRecord("?", "", False, 0.0, row.pending_error))
            return
        tool = self.tools.get(call.tool)
        limit = getattr(tool, "max_query_chars", DEFAULT_MAX_QUERY_CHARS)
        error = call.error or (f"query too long ({len(call.query)} characters, limit {limit})"
                               if len(call.query) > limit else None)
        if error is not None:
            row.pending_error = f"error: {error}"
            row.calls.append(ToolCallRecord(call.tool, call.query, False, 0.0, row.pending_error))
            return
        row.calls.append(ToolCallRecord(call.tool, call.query, True, 0.0, ""))
        row.pending = pool.submit(run_tool, tool, call.query)

    def _insert_result(self, row: _Row, max_new_tokens: int) -> bool:
        """Append <result>...</result> (mask 0); False when the row must end here."""
        record = row.calls[-1]
        if row.pending is not None:
            text, ok, seconds = row.pending.result()
            record.ok, record.seconds, record.result = ok, seconds, text
            row.pending = None
        else:
            text, row.pending_error = row.pending_error or "error", None
        room = max_new_tokens - len(row.ids) - len(self._open) - len(self._close) - 1  # 1: the model's next token
        if room < 0:
            row.reason = "length"
            return False
        body = self._encode(sanitize_result(text, self.tags))[: min(room, self.max_tool_tokens
                                                                     - len(self._open) - len(self._close))]
        ids = self._open + body + self._close
        row.ids += ids
        row.logprobs += [0.0] * len(ids)
        row.mask += [0] * len(ids)
        return True

    def _output(self, rows: list[_Row], embeddings, forward_calls: int) -> MultiTurnOutput:
        reasons = [r.reason for r in rows]
        out = MultiTurnOutput(
            completion_ids=[r.ids for r in rows], logprobs=[r.logprobs for r in rows],
            finished=[not (x == "length" or x == "turn_limit") for x in reasons], stop_reason=reasons,
            embeddings=embeddings, forward_calls=forward_calls, completion_masks=[r.mask for r in rows],
            calls=[r.calls for r in rows])
        out.metadata = summarize(out.calls, out.completion_masks, reasons)
        return out


def concat_multiturn(parts: Sequence[GenerationOutput]) -> MultiTurnOutput:
    """The outputs of consecutive row chunks (the ranks' slices of a step) as one
    MultiTurnOutput, rows in order. The step summary is recomputed from the joined rows,
    so the tool metrics are those of one process sampling every row (a mean of the
    chunks' means would weight a short chunk like a long one). A plain GenerationOutput
    part (a rank with no rows, or a sampler without tools) counts as rows without calls."""
    base = concat_outputs(parts)
    masks, calls = [], []
    for p in parts:
        masks += getattr(p, "completion_masks", None) or [[1] * len(ids) for ids in p.completion_ids]
        calls += getattr(p, "calls", None) or [[] for _ in p.completion_ids]
    return MultiTurnOutput(completion_ids=base.completion_ids, logprobs=base.logprobs, finished=base.finished,
                           stop_reason=base.stop_reason, embeddings=base.embeddings,
                           forward_calls=base.forward_calls, completion_masks=masks, calls=calls,
                           metadata=summarize(calls, masks, base.stop_reason))


def summarize(calls: Sequence[Sequence[ToolCallRecord]], masks: Sequence[Sequence[int]],
              reasons: Sequence[str]) -> dict[str, Any]:
    """Per-row lists (tool_calls, tool_failures) and the step's tool metrics."""
    n = max(1, len(calls))
    per_row = [len(c) for c in calls]
    failures = [sum(not x.ok for x in c) for c in calls]
    out: dict[str, Any] = {
        "tool_calls": per_row,
        "tool_failures": failures,
        "tools/calls_per_rollout": sum(per_row) / n,
        "tools/failures_per_rollout": sum(failures) / n,
        "tools/failure_rate": sum(failures) / max(1, sum(per_row)),
        "tools/seconds": sum(x.seconds for c in calls for x in c),
        "tools/share_with_call": sum(k > 0 for k in per_row) / n,
        "tools/turn_limit": sum(r == "turn_limit" for r in reasons) / n,
        "tools/result_tokens": sum(len(m) - sum(m) for m in masks) / n,
    }
    names = sorted({x.tool for c in calls for x in c})
    for name in names:
        out[f"tools/calls_per_rollout/{name}"] = sum(x.tool == name for c in calls for x in c) / n
    return out


def tool_metrics(metadata: dict, correct: torch.Tensor | None) -> dict[str, float]:
    """The step's tool metrics from a rollout's metadata ({} for a rollout without tools),
    plus accuracy with and without a tool call when `correct` ([N] 0/1) is given."""
    if "tool_calls" not in metadata:
        return {}
    out = {k: float(v) for k, v in metadata.items() if k.startswith("tools/")}
    if correct is not None:
        used = torch.tensor(metadata["tool_calls"]) > 0  # [N] bool
        c = correct.float()  # [N]
        if used.any():
            out["tools/accuracy_with_call"] = float(c[used].mean())
        if (~used).any():
            out["tools/accuracy_without_call"] = float(c[~used].mean())
    return out
