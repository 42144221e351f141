"""The run report as one self-contained HTML file.

The page is static: the runs' data is embedded as one JSON block, and a small script of
our own (report.js, next to this file) draws the plots as SVG and runs the completion
browser in the reader's browser. No network, no server, no third-party script.

Why our own SVG plots: a report holds a few dozen line plots and a table; a charting
library inlined into every file would add 1-3 MB for that, and matplotlib's SVGs
(~30-80 KB each, text as glyph paths) would be static: no overlay toggling, no values
on hover. The script is ~15 KB and draws straight from the embedded data.
"""
from __future__ import annotations

import html
import json
import os
import time
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml

from grpokit.report.runs import config_diff, load_run

REPORT = "report.html"

# Plot panels, grouped by family, in page order. A metric no rule claims goes to "Other".
FAMILIES: list[tuple[str, Any]] = [
    ("Reward", lambda k: k == "reward" or (k.startswith("reward/") and not k.endswith("_std"))),
    ("Accuracy", lambda k: k == "accuracy" or k.startswith("eval/")),
    ("KL and entropy", lambda k: k in ("kl", "entropy")),
    ("Clipping", lambda k: "clip" in k or k == "ratio_mean"),
    ("Completions", lambda k: k in ("len", "finished")),
    ("Groups", lambda k: k in ("groups", "zero_std_groups") or k.startswith("grouping/")),
    ("Sampling budget", lambda k: k == "completions_total" or k.startswith("dynamic/")),
    ("Tools", lambda k: k.startswith("tools/")),
    ("Throughput", lambda k: k in ("tokens_per_s", "step_time")),
    ("Optimization", lambda k: k in ("loss", "grad_norm", "lr", "trained_rows")),
    ("Reward spread", lambda k: k == "reward_std" or (k.startswith("reward/") and k.endswith("_std"))),
]
# Parts of a step that add up to step_time (train.py), and the update's own split.
STEP_SPLIT = ("time/generate", "time/dynamic", "time/reward_group_adv", "time/reference", "time/update")
UPDATE_SPLIT = ("time/policy_forward", "time/backward", "time/optimizer")


def panels(runs: Sequence[dict]) -> list[dict]:
    """[{"family", "key"}] for every numeric metric of any run; the step-time parts are
    drawn stacked instead (see `time_splits`)."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run["metrics"]["keys"] if k not in keys]
    stacked = set(STEP_SPLIT) | set(UPDATE_SPLIT)
    out, claimed = [], set()
    for family, rule in FAMILIES:
        for k in keys:
            if k not in claimed and k not in stacked and rule(k):
                out.append({"family": family, "key": k})
                claimed.add(k)
    out += [{"family": "Other", "key": k} for k in keys if k not in claimed and k not in stacked]
    return out


def time_splits(run: dict) -> list[dict]:
    """Stacked charts of one run: [{"title", "parts": [keys present]}]."""
    have = run["metrics"]["keys"]
    out = []
    for title, parts in (("Step time split (s)", STEP_SPLIT), ("Update split (s)", UPDATE_SPLIT)):
        present = [k for k in parts if k in have]
        if present:
            out.append({"title": title, "parts": present})
    return out


def group_series(groups: Sequence[dict]) -> dict:
    """groups.jsonl lines -> per scale: per-step count, mean size, zero-spread share, the
    pooled size histogram and the last step's groups; per difficulty value: mean reward
    per step."""
    scales: dict[str, dict] = {}
    steps = [g["step"] for g in groups]
    for i, g in enumerate(groups):
        for sc in g.get("scales", []):
            s = scales.setdefault(sc["name"], {"name": sc["name"], "count": [None] * len(steps),
                                               "size_mean": [None] * len(steps), "zero_spread": [None] * len(steps),
                                               "size_hist": {}, "last": None})
            sizes, stds = sc["size"], sc["std"]
            s["count"][i] = len(sizes)
            s["size_mean"][i] = sum(sizes) / len(sizes) if sizes else None
            s["zero_spread"][i] = sum(1 for x in stds if x == 0) / len(stds) if stds else None
            for x in sizes:
                s["size_hist"][str(x)] = s["size_hist"].get(str(x), 0) + 1
            s["last"] = {"step": g["step"], "size": sizes, "mean": sc["mean"], "std": stds}
    diff_field, diff_series = None, {}
    for i, g in enumerate(groups):
        d = g.get("difficulty")
        if not d:
            continue
        diff_field = d["field"]
        for v, m in zip(d["value"], d["mean"]):
            diff_series.setdefault(str(v), [None] * len(steps))[i] = m
    order = sorted(diff_series, key=lambda v: float(v))
    return {"step": steps, "scales": list(scales.values()),
            "difficulty": {"field": diff_field, "series": [{"value": v, "mean": diff_series[v]} for v in order]}
            if diff_series else None}


def summary(run: dict) -> dict:
    """Headline metrics for the table at the top: the mean over the first and over the
    last tenth of the logged values (at least one value each; one step's reward is noisy),
    and the mean over all."""
    keys = run["metrics"]["keys"]
    out: dict[str, Any] = {"steps": len(run["metrics"]["step"])}
    for k in ("reward", "accuracy", "eval/accuracy", "step_time"):
        vals = [v for v in keys.get(k, []) if v is not None]
        if vals:
            n = max(1, len(vals) // 10)
            out[k] = {"first": sum(vals[:n]) / n, "last": sum(vals[-n:]) / n, "mean": sum(vals) / len(vals)}
    return out


def report_data(runs: Sequence[dict]) -> dict:
    """Everything the page's script reads."""
    return {
        "runs": [{**r, "config_text": yaml.safe_dump(r["config"], sort_keys=False, allow_unicode=True),
                  "time_splits": time_splits(r), "group_series": group_series(r["groups"]),
                  "summary": summary(r)} for r in runs],
        "panels": panels(runs),
        "diff": config_diff([r["config"] for r in runs]) if len(runs) > 1 else [],
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def embed_json(data: Any) -> str:
    """JSON safe inside <script type="application/json">: no '<', '>' or '&' can end
    the block or start a tag (they become \\u003c ...), whatever the model wrote."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _asset(name: str) -> str:
    return resources.files("grpokit.report").joinpath(name).read_text(encoding="utf-8")


def build_html(runs: Sequence[dict], *, title: str | None = None) -> str:
    """The whole page for already-loaded runs (see runs.load_run)."""
    title = title or "grpokit report: " + ", ".join(r["label"] for r in runs)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width\"><title>{html.escape(title)}</title>"
        f"<style>{_asset('report.css')}</style></head>\n<body>"
        f"<header><h1>{html.escape(title)}</h1></header><main id=\"app\"></main>\n"
        f"<script type=\"application/json\" id=\"report-data\">{embed_json(report_data(runs))}</script>\n"
        f"<script>{_asset('report.js')}</script>\n</body></html>\n"
    )


def run_labels(run_dirs: Sequence[str | os.PathLike]) -> list[str]:
    """Directory names, or parent/name where two runs share a name."""
    paths = [Path(p).resolve() for p in run_dirs]
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def write_report(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike | None = None) -> Path:
    """Write the report of one or more run directories. Default file: RUN/report.html for
    one run, ./report.html for several. Written to a temp file and renamed, so a browser
    reloading it during training never reads half a page."""
    if not run_dirs:
        raise ValueError("report: give at least one run directory")
    runs = [load_run(d, label=lab) for d, lab in zip(run_dirs, run_labels(run_dirs))]
    path = Path(out) if out is not None else (Path(run_dirs[0]) / REPORT if len(run_dirs) == 1 else Path(REPORT))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(build_html(runs), encoding="utf-8")
    os.replace(tmp, path)
    return path
