"""Data-parallel runs (grpokit.dist) and keyed sampling randomness (rollout.seeding).

The multi-process tests start torchrun with 2 gloo processes on the CPU; they are
marked `slow` and `dist` (`make test-dist`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from grpokit import dist
from grpokit.rollout.generate import generate
from grpokit.rollout.seeding import RowStreams, resolve, row_seed

SRC = Path(__file__).resolve().parents[1] / "src"
REWARD_FILE = '''
import os

def count_a(completion, **_):
    return completion.count("a") / max(1, len(completion))

def fails_on_rank_1(completion, **_):
    if os.environ.get("RANK") == "1":
        raise RuntimeError("reward exploded on rank 1")
    return 0.0
'''


# --------------------------------------------------------------------------- one process


def test_share_splits_contiguously_first_ranks_take_the_remainder():
    got = [list(dist.share(5, dist.World(rank=r, size=2))) for r in range(2)]
    assert got == [[0, 1, 2], [3, 4]]
    got = [list(dist.share(7, dist.World(rank=r, size=3))) for r in range(3)]
    assert got == [[0, 1, 2], [3, 4], [5, 6]]
    assert list(dist.share(1, dist.World(rank=1, size=2))) == []
    assert list(dist.share(4, dist.SINGLE)) == [0, 1, 2, 3]


def test_single_process_reductions_are_identities():
    assert dist.gather(dist.SINGLE, {"a": 1}) == [{"a": 1}]
    assert dist.total(dist.SINGLE, 2.5) == 2.5
    # weighted mean: (0.2 * 10 + 0.4 * 30) / 40, not the mean of 0.2 and 0.4
    assert dist.reduce_metrics(dist.SINGLE, {"kl": 0.2 * 10 + 0.4 * 30}, {"kl": 40.0}) == {"kl": pytest.approx(0.35)}


def test_torchrun_command_drops_nproc(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cmd = dist.torchrun_command(2, ["train", "--nproc", "2", "--steps", "3", "--nproc=2", "run.seed=1"])
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "grpokit",
                       "train", "--steps", "3", "run.seed=1"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="already runs under torchrun"):
        dist.torchrun_command(2, ["train"])


def test_seeding_resolution():
    assert resolve("auto", 1) == "global"
    assert resolve("auto", 2) == "keyed"
    assert resolve("keyed", 1) == "keyed"
    with pytest.raises(ValueError, match="rollout.seeding=global"):
        resolve("global", 2)


def test_row_seed_depends_on_every_part_of_the_key():
    base = row_seed(0, 1, 2, 3)
    assert base == row_seed(0, 1, 2, 3)
    assert len({base, row_seed(1, 1, 2, 3), row_seed(0, 2, 2, 3), row_seed(0, 1, 3, 3), row_seed(0, 1, 2, 4)}) == 5
    assert 0 <= base < 2 ** 63


def test_keyed_uniforms_follow_rows_not_batches():
    keys = [(0, 0), (0, 1), (1, 0)]
    all_rows = RowStreams.for_rows(7, 1, keys)
    u = torch.cat([all_rows.uniform(), all_rows.uniform()], dim=1)  # [3, 2]: two draws per row
    one = RowStreams.for_rows(7, 1, keys[1:2])
    assert torch.equal(torch.cat([one.uniform(), one.uniform()], dim=1), u[1:2])
    sub = RowStreams.for_rows(7, 1, keys).take([2])
    assert torch.equal(sub.uniform(), u[2:3, :1])


def test_keyed_sampling_is_the_same_in_one_call_or_split(tiny_model):
    """The property behind "the same completions at any world size": a row's completion
    depends on its key only, not on the rows sampled with it or the batch size."""
    model, tok = tiny_model
    prompts = [tok.encode("ab"), tok.encode("abc"), tok.encode("b"), tok.encode("ca")]
    keys = [(0, 0), (0, 1), (1, 0), (1, 1)]
    kw = dict(max_new_tokens=6, eos_ids={tok.eos_token_id}, pad_id=tok.pad_token_id, temperature=1.0)
    whole = generate(model, prompts, generator=RowStreams.for_rows(3, 5, keys), **kw)
    halves = [generate(model, prompts[s], generator=RowStreams.for_rows(3, 5, keys[s]), **kw)
              for s in (slice(0, 1), slice(1, 4))]
    chunked = generate(model, prompts, generator=RowStreams.for_rows(3, 5, keys), batch_size=3, **kw)
    split_ids = halves[0].completion_ids + halves[1].completion_ids
    assert whole.completion_ids == split_ids == chunked.completion_ids
    flat = lambda rows: [x for r in rows for x in r]  # noqa: E731
    assert flat(whole.logprobs) == pytest.approx(flat(halves[0].logprobs + halves[1].logprobs), abs=1e-5)
    other = generate(model, prompts, generator=RowStreams.for_rows(4, 5, keys), **kw)
    assert other.completion_ids != whole.completion_ids  # the seed is part of the key


# --------------------------------------------------------------------------- torchrun


def _setup(tmp_path: Path) -> list[str]:
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Write {i}:", "answer": "a"}) + "\n" for i in range(16)))
    (tmp_path / "my_rewards.py").write_text(REWARD_FILE)
    return ["train", "--model", "tiny:xs", "--data", str(data), "--reward", f"{tmp_path / 'my_rewards.py'}:count_a",
            "rollout.max_new_tokens=8", "rollout.prompts_per_step=5", "rollout.num_generations=4",
            "optim.lr=3e-3", "run.progress=false", "run.threads=1", "rollout.seeding=keyed", "run.log_samples=20",
            "algorithm.beta=0.04", "algorithm.mu=2"]


def _run(args: list[str], nproc: int, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", **env}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "grpokit", *args] + (["--nproc", str(nproc)] if nproc > 1 else [])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model" / "model.safetensors"))


def _assert_same_run(one: Path, two: Path, steps: int = 5, abs_tol: float = 1e-7) -> None:
    s1, s2 = _jsonl(one / "samples.jsonl"), _jsonl(two / "samples.jsonl")
    assert len(s1) == len(s2) == steps * 20
    assert [(r["completion"], r["reward"], r["group"]) for r in s1] == \
        [(r["completion"], r["reward"], r["group"]) for r in s2]
    assert [r["advantage"] for r in s1] == pytest.approx([r["advantage"] for r in s2], rel=1e-5, abs=1e-7)
    m1, m2 = _jsonl(one / "metrics.jsonl"), _jsonl(two / "metrics.jsonl")
    for a, b in zip(m1, m2):
        assert (a["reward"], a["trained_rows"], a["groups"]) == (b["reward"], b["trained_rows"], b["groups"])
        for k in ("loss", "kl", "grad_norm", "entropy", "clip_frac"):
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=1e-5, abs=abs_tol), k
    w1, w2 = _weights(one), _weights(two)
    diff = sum(float((w1[k] - w2[k]).pow(2).sum()) for k in w1) ** 0.5
    norm = sum(float(w1[k].pow(2).sum()) for k in w1) ** 0.5
    assert diff / norm < 1e-5


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize("grouping", ["prompt", "multiscale", "dynamic"])
def test_two_processes_train_what_one_process_trains(tmp_path, grouping):
    """5 prompts over 2 ranks (3 + 2): same completions, rewards and groups at every step;
    loss, KL and final weights within 1e-5 relative. dynamic: DAPO's dynamic sampling, whose
    refill rounds are split over the ranks too (same prompts kept, same budget)."""
    extra = ["algorithm.dynamic_sampling=true"] if grouping == "dynamic" else [f"algorithm.grouping={grouping}"]
    args = _setup(tmp_path) + ["--steps", "5"] + extra
    one, two = _run(args + ["--out", str(tmp_path / "one")], 1), _run(args + ["--out", str(tmp_path / "two")], 2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("training finished") == 1  # rank 0 speaks
    _assert_same_run(tmp_path / "one", tmp_path / "two")
    if grouping == "dynamic":
        keys = ("completions_total", "dynamic/drawn_prompts", "dynamic/kept_prompts", "dynamic/rounds")
        m1, m2 = _jsonl(tmp_path / "one" / "metrics.jsonl"), _jsonl(tmp_path / "two" / "metrics.jsonl")
        assert [[r[k] for k in keys] for r in m1] == [[r[k] for k in keys] for r in m2]
        assert sum(r["dynamic/rounds"] for r in m1) > 5  # some step refilled


def _tool_model(tmp_path: Path) -> Path:
    """A tiny model taught for 40 steps to write `<search>NAME</search>` after a prompt:
    a random one almost never closes a well-formed call. Half-taught, it samples a mix of
    good calls, malformed ones and none."""
    from grpokit.model.policy import create_tiny

    prompts = [f"Write {i}:" for i in range(16)]
    texts = [f"{p}<search>{NAMES[i % 4]}</search><result>x</result>a a<|endoftext|>" for i, p in enumerate(prompts)]
    model, tok = create_tiny("tiny:xs", prompts, seed=0)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, ids))
    batch = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in ids])  # [16, T]
    mask = batch != tok.pad_token_id  # [16, T]
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        model(input_ids=batch, attention_mask=mask.long(), labels=batch.masked_fill(~mask, -100)).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


NAMES = ["Ann", "Bob", "Cal", "Dee"]


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_with_the_search_tool_train_what_one_process_trains(tmp_path, parallel):
    """rollout.tools under torchrun: 5 prompts over 2 ranks, each rank runs its rows'
    tool loop (under fsdp with the gathered weights); same completions (tool results
    included), rewards and tool metrics as one process at every step, loss within 1e-5."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "title": n, "text": f"{n} writes the letter a."}) + "\n"
                              for i, n in enumerate(NAMES)))
    tools = json.dumps([{"name": "search", "kwargs": {"corpus": str(corpus), "k": 1}}])
    args = _setup(tmp_path) + ["--model", str(_tool_model(tmp_path)), "--steps", "3", "optim.lr=1e-4",
                               "rollout.max_new_tokens=24", f"rollout.tools={tools}", "rollout.max_turns=2",
                               "rollout.max_tool_tokens=20"]
    # fsdp: the one process runs torch's passes too, as the sharded ranks do (the C passes step aside)
    one = _run(args + ["--out", str(tmp_path / "one")], 1, **({"GRPOKIT_NATIVE": "0"} if parallel == "fsdp" else {}))
    two = _run(args + ["--out", str(tmp_path / "two"), f"run.parallel={parallel}"], 2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert ("sharded over 2 process(es)" in two.stdout) == (parallel == "fsdp")
    # A taught model's log-probs sit near 0 and far below it, so the ranks' batch shapes
    # move the KL by ~1e-5 relative (1.4e-6 of 0.11 at step 2): within 1e-5 absolute.
    _assert_same_run(tmp_path / "one", tmp_path / "two", steps=3, abs_tol=1e-5)
    m1, m2 = _jsonl(tmp_path / "one" / "metrics.jsonl"), _jsonl(tmp_path / "two" / "metrics.jsonl")
    tools_of = lambda m: {k: v for k, v in m.items() if k.startswith("tools/") and k != "tools/seconds"}  # noqa: E731
    assert [tools_of(m) for m in m1] == [tools_of(m) for m in m2]
    # the runs exercised the loop: calls that found a passage, and calls that failed
    assert m1[0]["tools/calls_per_rollout"] > 0 and 0 < m1[0]["tools/failure_rate"] < 1
    assert any(f"{n}: {n} writes" in r["completion"] for n in NAMES for r in _jsonl(tmp_path / "one" / "samples.jsonl"))


@pytest.mark.slow
@pytest.mark.dist
def test_two_nodes_joined_by_rendezvous_train_what_one_process_trains(tmp_path):
    """The multi-node launch (docs/distributed.md, recipes/launch/slurm_two_nodes.sbatch):
    two torchrun agents, one process each, meet through torchrun's c10d rendezvous as
    two nodes would; here both nodes are this machine."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = _setup(tmp_path) + ["--steps", "3"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes",
            "-m", "grpokit", *args, "--out", str(tmp_path / "two")]
    agents = [subprocess.Popen(node, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    outs = [a.communicate(timeout=300) for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    one = _run(args + ["--out", str(tmp_path / "one")], 1)
    assert one.returncode == 0, one.stderr[-3000:]
    s1, s2 = _jsonl(tmp_path / "one" / "samples.jsonl"), _jsonl(tmp_path / "two" / "samples.jsonl")
    assert [(r["completion"], r["reward"]) for r in s1] == [(r["completion"], r["reward"]) for r in s2]
    saved = torch.load(tmp_path / "two" / "checkpoints" / "step-000003" / "trainer_state.pt", weights_only=False)
    assert saved["extra"]["world_size"] == 2


@pytest.mark.slow
@pytest.mark.dist
def test_a_rank_that_raises_stops_the_job_with_its_message(tmp_path):
    args = _setup(tmp_path) + ["--steps", "3", "--out", str(tmp_path / "run"), "--reward",
                               f"{tmp_path / 'my_rewards.py'}:fails_on_rank_1"]
    t0 = time.monotonic()
    res = _run(args, 2, timeout=120)
    assert res.returncode != 0
    assert "reward exploded on rank 1" in res.stderr
    assert time.monotonic() - t0 < 90  # start-up of two processes on a loaded 2-core machine, then seconds


@pytest.mark.slow
@pytest.mark.dist
def test_two_process_resume_equals_the_uninterrupted_run(tmp_path):
    import shutil

    out = tmp_path / "run"
    # beta=0: a resumed run's reference is the checkpoint's policy, not the initial model
    # (build.py loads both from model_path), in one process as in several
    args = _setup(tmp_path) + ["--steps", "4", "run.save_every=2", "--out", str(out), "algorithm.beta=0"]
    assert (res := _run(args, 2)).returncode == 0, res.stderr[-3000:]
    full = _jsonl(out / "metrics.jsonl")
    shutil.rmtree(out / "checkpoints" / "step-000004")
    wrong = _run(args + ["--resume"], 1)
    assert wrong.returncode != 0 and "written by 2 process(es), this run has 1" in wrong.stderr
    assert (res := _run(args + ["--resume"], 2)).returncode == 0, res.stderr[-3000:]
    again = _jsonl(out / "metrics.jsonl")
    keys = ("reward", "loss", "grad_norm", "trained_rows")
    assert [[r[k] for k in keys] for r in again[2:]] == [[r[k] for k in keys] for r in full[2:]]


@pytest.mark.dist
def test_reductions_over_two_gloo_processes(tmp_path):
    """sum_gradients, reduce_metrics, total and gather_scores with literal values on 2 ranks."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    worker = Path(__file__).parent / "dist_worker.py"
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), str(tmp_path), str(port)], env=env)
             for r in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    for r in range(2):
        seen = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert (seen["rank"], seen["size"]) == (r, 2)
        assert seen["grads"] == [[3.0, 6.0], [5.0, 7.0], None]  # sums; c stays without a gradient
        assert seen["metrics"]["kl"] == pytest.approx((0.2 * 10 + 0.4 * 30) / 40)  # 0.35, not 0.3
        assert seen["total"] == 4.0
        assert seen["scores"] == {"total": [0.0, 1.0, 1.0], "parts": {"fmt/ok": [0.0, 1.0, 1.0]}, "na": {"acc": 1}}
