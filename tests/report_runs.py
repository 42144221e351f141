"""Synthetic run directories for the report tests: what `grpokit train` writes, with
known values (tool calls, reasoning steps, a hostile completion)."""
import json

import yaml

HOSTILE = '</script><script>window.pwned=1</script><img src=x onerror="window.pwned=2">&amp;'


def write_run(d, *, steps=4, lr=1e-4, tools=True, grouping="multiscale"):
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"model": {"name_or_path": "tiny", "lora": {"r": 0}}, "optim": {"lr": lr},
           "rollout": {"tools": [{"name": "search", "kwargs": {}}] if tools else []},
           "rewards": [{"name": "accuracy", "weight": 1.0}, {"name": "reasoning_steps", "weight": 0.2}],
           "algorithm": {"grouping": grouping}, "run": {"out": str(d), "steps": steps}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    with open(d / "metrics.jsonl", "w") as f:
        for s in range(1, steps + 1):
            f.write(json.dumps({"step": s, "time": 1.0 * s, "reward": 0.1 * s, "reward/accuracy": 0.05 * s,
                                "reward/accuracy_std": 0.01, "accuracy": 0.05 * s, "kl": 0.001 * s, "entropy": 2.0,
                                "clip_low_frac": 0.0, "clip_high_frac": 0.01, "len": 30 + s, "zero_std_groups": 0.5,
                                "tokens_per_s": 100.0, "step_time": 1.0, "time/generate": 0.6,
                                "time/reward_group_adv": 0.1, "time/reference": 0.0, "time/update": 0.3,
                                "tools/calls": 0.5, "note": "text values are not plotted"}) + "\n")
    with open(d / "samples.jsonl", "w") as f:
        for s in range(1, steps + 1):
            f.write(json.dumps({"step": s, "prompt": "Compute 2+3*4.", "group": 0, "reward": 1.2, "advantage": 0.5,
                                "reward/accuracy": 1.0, "reward/reasoning_steps": 0.5,
                                "completion": "<think>3*4=12 2+12=15</think><search>two plus</search>"
                                              "<result>2+12 is 14</result><answer>14</answer>"}) + "\n")
            f.write(json.dumps({"step": s, "prompt": "Compute 1+1.", "group": 1, "reward": 0.0, "advantage": -0.5,
                                "reward/accuracy": 0.0, "reward/reasoning_steps": 0.0,
                                "completion": HOSTILE}) + "\n")
    with open(d / "groups.jsonl", "w") as f:
        for s in range(1, steps + 1):
            f.write(json.dumps({"step": s, "scales": [
                {"name": "prompt", "size": [4, 4, 2], "mean": [0.5, 0.0, 1.0], "std": [0.5, 0.0, 0.0]},
                {"name": "batch", "size": [10], "mean": [0.4], "std": [0.45]}],
                "difficulty": {"field": "steps", "value": [2, 3], "count": [6, 4], "mean": [0.5, 0.25]}}) + "\n")
    return d
