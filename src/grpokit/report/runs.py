"""Reading run directories into the plain data the report embeds.

Everything here is JSON-ready (lists, dicts, numbers, strings): the page's script gets
exactly this, so what the report shows can be tested without a browser.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import yaml

from grpokit.evaluate import accuracy_key
from grpokit.logging import METRICS, SAMPLES, read_jsonl
from grpokit.report.groups import GROUPS
from grpokit.rewards.steps import checked_equations
from grpokit.tools.parsing import RESULT_CLOSE, RESULT_OPEN, find_tool_calls

CONFIG = "config.yaml"
MAX_SAMPLES = 20_000  # rows embedded per run; beyond that, evenly spaced steps are kept


def load_run(run_dir: str | Path, *, label: str | None = None) -> dict:
    """One run's data: label, config (nested), metrics (columnar), samples, groups."""
    d = Path(run_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: not a directory (expected a run directory from `grpokit train`)")
    if not (d / METRICS).is_file():
        raise FileNotFoundError(f"{d}: no {METRICS}; is this a run directory from `grpokit train`?")
    config = read_config(d)
    metrics = _last_per_step(read_jsonl(d / METRICS))
    tools = tool_tags(config)
    acc = accuracy_key(reward_names(config))
    check_steps = "reasoning_steps" in reward_names(config)
    samples_rows = _last_step_block(read_jsonl(d / SAMPLES)) if (d / SAMPLES).is_file() else []
    samples_rows = _thin(samples_rows, MAX_SAMPLES)
    return {
        "label": label or d.name,
        "path": str(d),
        "config": config,
        "metrics": columns(metrics),
        "samples": [sample_view(r, tools=tools, accuracy=acc, check_steps=check_steps) for r in samples_rows],
        "groups": _last_per_step(read_jsonl(d / GROUPS)) if (d / GROUPS).is_file() else [],
        "accuracy_reward": acc,
    }


def read_config(run_dir: Path) -> dict:
    path = run_dir / CONFIG
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return data if isinstance(data, dict) else {}


def reward_names(config: dict) -> list[str]:
    out = []
    for r in config.get("rewards") or []:
        name = r.get("name") if isinstance(r, dict) else r
        if isinstance(name, str):
            out.append(name.rsplit(":", 1)[-1])
    return out


def tool_tags(config: dict) -> list[str]:
    """The tags tool calls are written with: the tool names of rollout.tools."""
    tags = []
    for t in (config.get("rollout") or {}).get("tools") or []:
        name = t.get("name") if isinstance(t, dict) else t
        if isinstance(name, str):
            tags.append(name)
    return tags


def columns(rows: list[dict]) -> dict:
    """Metrics rows -> {"step": [...], "keys": {key: [value or None per step]}}; only
    numeric keys (a key that is ever a string or list is left out)."""
    steps = [int(r["step"]) for r in rows if isinstance(r.get("step"), int)]
    keys: dict[str, list] = {}
    numeric: dict[str, bool] = {}
    for r in rows:
        for k, v in r.items():
            if k in ("step", "time"):
                continue
            ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
            numeric[k] = numeric.get(k, True) and ok
    for k, ok in numeric.items():
        if ok:
            keys[k] = [r.get(k) for r in rows if isinstance(r.get("step"), int)]
    return {"step": steps, "keys": keys}


def sample_view(row: dict, *, tools: Sequence[str] = (), accuracy: str | None = None,
                check_steps: bool = False) -> dict:
    """One completion as the browser shows it: numbers, the text cut into model text,
    tool calls and tool results, and the reasoning steps that were checked."""
    text = str(row.get("completion", ""))
    prompt = row.get("prompt", "")
    rewards = {k.split("/", 1)[1]: v for k, v in row.items() if k.startswith("reward/")}
    acc = rewards.get(accuracy) if accuracy else None
    view = {
        "step": row.get("step"),
        "prompt": prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False),
        "reward": row.get("reward"),
        "advantage": row.get("advantage"),
        "rewards": rewards,
        "correct": None if not isinstance(acc, (int, float)) else bool(acc >= 1.0 - 1e-6),
        "segments": segments(text, tools),
    }
    if "group" in row:
        view["group"] = row["group"]
    if check_steps:
        view["steps"] = [{"expr": e.expr, "result": e.result, "holds": bool(e.holds)} for e in checked_equations(text)]
    return view


def segments(text: str, tools: Sequence[str] = ()) -> list[list[str]]:
    """[[kind, text], ...] covering `text` in order; kind is "text" (the model's own
    words), "call" (a tool call, tags included) or "result" (the tool's answer, inserted
    by the runtime, tags included)."""
    spans = [(c.start, c.end, "call") for c in find_tool_calls(text, tools)]
    pos = 0
    while True:
        i = text.find(RESULT_OPEN, pos)
        if i < 0:
            break
        j = text.find(RESULT_CLOSE, i)
        end = len(text) if j < 0 else j + len(RESULT_CLOSE)
        spans.append((i, end, "result"))
        pos = end
    spans.sort()
    out: list[list[str]] = []
    pos = 0
    for start, end, kind in spans:
        if start < pos:  # overlaps an earlier span (a result tag inside a malformed call)
            continue
        if start > pos:
            out.append(["text", text[pos:start]])
        out.append([kind, text[start:end]])
        pos = end
    if pos < len(text) or not out:
        out.append(["text", text[pos:]])
    return out


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"a.b.c": leaf}; lists are leaves (shown as written)."""
    if isinstance(config, dict):
        out: dict[str, Any] = {}
        for k, v in config.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: config}


MISSING = "(absent)"


def config_diff(configs: Sequence[dict]) -> list[dict]:
    """Keys whose values differ between the configs: [{"key", "values": [one per config]}],
    a key one config lacks shown as "(absent)". run.out is left out (it always differs)."""
    flat = [flatten(c) for c in configs]
    keys: list[str] = []
    for f in flat:
        keys += [k for k in f if k not in keys]
    out = []
    for k in keys:
        if k == "run.out":
            continue
        vals = [f.get(k, MISSING) for f in flat]
        if any(json.dumps(v, sort_keys=True, default=str) != json.dumps(vals[0], sort_keys=True, default=str)
               for v in vals[1:]):
            out.append({"key": k, "values": vals})
    return out


def _last_per_step(rows: list[dict]) -> list[dict]:
    """One row per step, the last written (a resumed run may repeat steps), in step order."""
    by_step: dict[int, dict] = {}
    for r in rows:
        if isinstance(r.get("step"), int):
            by_step[r["step"]] = r
    return [by_step[s] for s in sorted(by_step)]


def _last_step_block(rows: list[dict]) -> list[dict]:
    """Samples: keep, for each step, the rows of its last appearance."""
    blocks: dict[int, list[dict]] = {}
    prev = None
    for r in rows:
        s = r.get("step")
        if s != prev:
            blocks[s] = []
            prev = s
        blocks[s].append(r)
    return [r for s in sorted(k for k in blocks if isinstance(k, int)) for r in blocks[s]]


def _thin(rows: list[dict], limit: int) -> list[dict]:
    if len(rows) <= limit:
        return rows
    steps = sorted({r["step"] for r in rows})
    per_step = max(1, len(rows) // len(steps))
    keep_n = max(1, limit // per_step)
    keep = {steps[round(i * (len(steps) - 1) / max(1, keep_n - 1))] for i in range(keep_n)}
    return [r for r in rows if r["step"] in keep]
