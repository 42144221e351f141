"""Launch files checked by `grpokit validate` (grpokit.config.launch): accelerate
configs and SLURM batch scripts, the shipped ones in recipes/launch/ included."""
from __future__ import annotations

from pathlib import Path

import pytest

from grpokit import cli
from grpokit.config.launch import check_launch_file, launch_kind

ROOT = Path(__file__).resolve().parents[1]

ACCELERATE = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
fsdp_config:
  fsdp_version: 2
num_machines: 1
num_processes: 4
mixed_precision: 'no'
"""

SBATCH = """\
#!/bin/bash
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4

HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
srun torchrun --nnodes 2 --nproc-per-node 4 \\
    --rdzv-backend c10d --rdzv-endpoint "$HEAD:29500" \\
    -m grpokit train --config r.yaml
"""


def _check(tmp_path: Path, name: str, text: str):
    (tmp_path / name).write_text(text)
    return check_launch_file(name)


@pytest.fixture
def here(tmp_path, monkeypatch):
    """tmp_path as the folder sbatch would be called from, with a small recipe in it."""
    (tmp_path / "r.yaml").write_text("kind: train\nmodel:\n  name_or_path: tiny:xs\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------- the shipped files


def test_shipped_launch_files_validate(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the SLURM script names its recipe relative to the repository root
    for name in ("accelerate_ddp.yaml", "accelerate_fsdp.yaml", "slurm_two_nodes.sbatch"):
        path = f"recipes/launch/{name}"
        assert cli.main(["validate", path]) == 0, capsys.readouterr().out
        out = capsys.readouterr().out
        assert out.startswith(f"{path}: OK (") and "warning" not in out, out
    assert cli.main(["validate", "recipes/launch/slurm_two_nodes.sbatch"]) == 0
    assert capsys.readouterr().out == (
        "recipes/launch/slurm_two_nodes.sbatch: OK (SLURM script: 2 nodes x torchrun --nproc-per-node 8, "
        "c10d rendezvous; grpokit train --config recipes/gsm8k_smollm2.yaml)\n")


def test_launch_kind_tells_launch_files_from_recipes(here):
    (here / "a.yaml").write_text(ACCELERATE)
    (here / "job.sh").write_text(SBATCH)
    assert [launch_kind(n) for n in ("a.yaml", "job.sh", "r.yaml", "missing.yaml")] == \
        ["accelerate", "slurm", None, None]


# --------------------------------------------------------------------------- accelerate


def test_good_accelerate_config_passes(here):
    check = _check(here, "a.yaml", ACCELERATE)
    assert (check.problems, check.warnings) == ([], [])
    assert check.summary == ("accelerate config: FSDP (fsdp_version 2; run.parallel auto shards the policy), "
                             "4 processes on 1 machine")
    unset = _check(here, "a.yaml", ACCELERATE.replace("num_processes: 4\n", ""))
    assert (unset.problems, unset.warnings) == ([], ["a.yaml: num_processes: not set; accelerate launch then "
                                                     "needs --num_processes"])


@pytest.mark.parametrize("old,new,line", [
    ("distributed_type: FSDP", "distributed_type: DEEPSPEED",
     "a.yaml: distributed_type = 'DEEPSPEED': expected one of MULTI_GPU, FSDP, MULTI_CPU, NO (grpokit does not "
     "run under DeepSpeed)"),
    ("distributed_type: FSDP\n", "",
     "a.yaml: distributed_type: missing; expected one of MULTI_GPU, FSDP, MULTI_CPU, NO"),
    ("compute_environment: LOCAL_MACHINE", "compute_environment: AMAZON_SAGEMAKER",
     "a.yaml: compute_environment = 'AMAZON_SAGEMAKER': expected LOCAL_MACHINE (the machines you start "
     "accelerate launch on)"),
    ("fsdp_version: 2", "fsdp_version: 1",
     "a.yaml: fsdp_config.fsdp_version = 1: expected 2 (grpokit shards with torch's fully_shard, FSDP2)"),
    ("  fsdp_version: 2\n", "  fsdp_reshard_after_forward: true\n",
     "a.yaml: fsdp_config.fsdp_version missing: expected 2 (grpokit shards with torch's fully_shard, FSDP2)"),
    ("num_processes: 4", "num_processes: 0", "a.yaml: num_processes = 0: expected a positive integer"),
    ("num_machines: 1", "num_machines: two", "a.yaml: num_machines = 'two': expected a positive integer"),
    ("num_machines: 1", "num_machines: 3\nmain_process_ip: 10.0.0.1",
     "a.yaml: num_processes = 4: expected a multiple of num_machines = 3 (each machine starts "
     "num_processes / num_machines)"),
    ("num_machines: 1", "num_machines: 2",
     "a.yaml: main_process_ip: missing; expected the first machine's address when num_machines = 2"),
    ("distributed_type: FSDP", "distributed_type: MULTI_CPU",
     "a.yaml: num_processes = 4: expected 1 with distributed_type MULTI_CPU: accelerate launch starts one "
     "process there (mpirun with mpirun_config sets no WORLD_SIZE, which grpokit reads); for several CPU "
     "processes use distributed_type MULTI_GPU (torchrun, also without GPUs) or grpokit train --nproc N"),
    ("mixed_precision: 'no'", "mixed_precision: no",
     "a.yaml: mixed_precision = false: write 'no' in quotes (YAML reads a bare no as false and accelerate "
     "launch fails on it)"),
    ("num_processes: 4", "num_processes: 4\nnum_process: 4",
     "a.yaml: num_process: not a key of accelerate 1.16's config (accelerate launch refuses the file) "
     "(did you mean 'num_processes'?)"),
])
def test_each_broken_accelerate_setting_yields_its_line(here, old, new, line):
    assert old in ACCELERATE
    check = _check(here, "a.yaml", ACCELERATE.replace(old, new))
    assert check.problems == [line]


@pytest.mark.parametrize("extra,line", [
    ("mixed_precision: bf16",
     "a.yaml: mixed_precision = 'bf16': grpokit does not read it (ACCELERATE_MIXED_PRECISION); expected 'no', "
     "and model.dtype (e.g. bfloat16) in the recipe"),
    ("deepspeed_config:\n  zero_stage: 2", "a.yaml: deepspeed_config: grpokit does not read it (no DeepSpeed)"),
    ("dynamo_config:\n  dynamo_backend: INDUCTOR",
     "a.yaml: dynamo_config.dynamo_backend = 'INDUCTOR': grpokit does not compile the model (it ignores "
     "ACCELERATE_DYNAMO_BACKEND); expected 'NO'"),
    ("fsdp_config:\n  fsdp_version: 2\n  fsdp_offload_params: true",
     "a.yaml: fsdp_config.fsdp_offload_params = true: grpokit does not read it (parameters stay on the device)"),
])
def test_settings_grpokit_does_not_honour_are_warnings(here, extra, line):
    text = ACCELERATE.replace("mixed_precision: 'no'\n", "").replace("fsdp_config:\n  fsdp_version: 2\n", "")
    text += "fsdp_config:\n  fsdp_version: 2\n" * ("fsdp_config" not in extra) + extra + "\n"
    check = _check(here, "a.yaml", text)
    assert (check.problems, check.warnings) == ([], [line])


# --------------------------------------------------------------------------- SLURM


def test_good_sbatch_passes(here):
    check = _check(here, "job.sbatch", SBATCH)
    assert (check.problems, check.warnings) == ([], [])
    assert check.summary == ("SLURM script: 2 nodes x torchrun --nproc-per-node 4, c10d rendezvous; "
                             "grpokit train --config r.yaml")
    # torchrun through python -m and sbatch's own node count are read too
    alt = SBATCH.replace("srun torchrun --nnodes 2", 'srun python -m torch.distributed.run --nnodes "$SLURM_NNODES"')
    assert _check(here, "job.sbatch", alt).problems == []


@pytest.mark.parametrize("old,new,line", [
    ("#SBATCH --nodes=2", "#SBATCH --nodes=3",
     "job.sbatch:7: torchrun --nnodes 2, but #SBATCH --nodes=3 (line 2); expected the same number"),
    ("#SBATCH --nodes=2", "#SBATCH -N 4",
     "job.sbatch:7: torchrun --nnodes 2, but #SBATCH --nodes=4 (line 2); expected the same number"),
    ("#SBATCH --ntasks-per-node=1", "#SBATCH --ntasks-per-node=4",
     "job.sbatch:3: #SBATCH --ntasks-per-node=4: expected 1 (torchrun starts the node's processes itself; "
     "one srun task per node)"),
    ('--rdzv-backend c10d --rdzv-endpoint "$HEAD:29500"', "",
     "job.sbatch:7: torchrun on 2 nodes without a rendezvous endpoint; expected --rdzv-backend c10d "
     "--rdzv-endpoint HOST:PORT (the first node's hostname)"),
    ('--rdzv-backend c10d --rdzv-endpoint "$HEAD:29500"', "--standalone",
     "job.sbatch:7: torchrun --standalone on 2 nodes: expected --rdzv-backend c10d --rdzv-endpoint HOST:PORT "
     "(the first node's hostname)"),
    ("--rdzv-backend c10d ", "",
     "job.sbatch:7: torchrun --rdzv-endpoint with the static rendezvous (the default) needs --node-rank on "
     "every node; expected --rdzv-backend c10d"),
    ("srun torchrun", "torchrun",
     "job.sbatch:7: torchrun without srun runs on the first node only; expected `srun torchrun ...` "
     "(one task per node)"),
    ("--config r.yaml", "--config recipes/missing.yaml",
     "job.sbatch:7: --config recipes/missing.yaml: no such recipe in {cwd} (the job starts in the folder "
     "sbatch is called from)"),
    ("--config r.yaml", "--config r.yaml rollout.num_generations=1",
     "job.sbatch:7: r.yaml: rollout.num_generations = 1: must be >= 2 (GRPO compares completions within a "
     "group of the same prompt)"),
    ("--config r.yaml", "",
     "job.sbatch:7: grpokit train without --config; expected --config RECIPE"),
    ("-m grpokit train", "train.py",
     "job.sbatch:7: torchrun starts train.py; expected -m grpokit train --config RECIPE"),
    ("srun torchrun --nnodes 2 --nproc-per-node 4", "srun python -m grpokit train --config r.yaml; echo",
     "job.sbatch: no torchrun line; expected `srun torchrun --nnodes N ... -m grpokit train --config RECIPE` "
     "(grpokit joins its processes through torchrun's variables)"),
])
def test_each_broken_sbatch_line_yields_its_line(here, old, new, line):
    assert old in SBATCH
    check = _check(here, "job.sbatch", SBATCH.replace(old, new))
    assert check.problems == [line.format(cwd=here)]


def test_sbatch_warnings(here):
    late = SBATCH + "#SBATCH --time=1:00:00\n"
    assert _check(here, "job.sbatch", late).warnings == [
        "job.sbatch:10: #SBATCH after the first command: sbatch ignores it"]
    gpus = SBATCH.replace("--gpus-per-node=4", "--gpus-per-node=h100:8")
    assert _check(here, "job.sbatch", gpus).warnings == [
        "job.sbatch:7: torchrun --nproc-per-node 4, but #SBATCH --gpus-per-node=8: one process per GPU is the "
        "usual layout"]


# --------------------------------------------------------------------------- the command


def test_validate_prints_one_line_per_problem_and_refuses_overrides(here, capsys):
    (here / "job.sbatch").write_text(SBATCH.replace("--nodes=2", "--nodes=3"))
    assert cli.main(["validate", "job.sbatch"]) == 1
    assert capsys.readouterr().out == (
        "job.sbatch: 1 problem:\n"
        "  - job.sbatch:7: torchrun --nnodes 2, but #SBATCH --nodes=3 (line 2); expected the same number\n")
    (here / "a.yaml").write_text(ACCELERATE.replace("'no'", "fp16"))
    assert cli.main(["validate", "a.yaml"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1] == ("  warning: a.yaml: mixed_precision = 'fp16': grpokit does not read it "
                                   "(ACCELERATE_MIXED_PRECISION); expected 'no', and model.dtype (e.g. bfloat16) "
                                   "in the recipe")
    assert cli.main(["validate", "a.yaml", "run.steps=3"]) == 2
    assert "a.yaml is a launch file: key=value overrides and --kind apply to recipes" in capsys.readouterr().err
