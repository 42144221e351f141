#!/usr/bin/env bash
# The GPU check of docs/performance.md, in one call of under ten minutes on one GPU:
#   1. tests/test_device.py (the same functions on CUDA as on the CPU; a short training run + resume),
#      and FSDP2 with world size 1 (NCCL) against the plain run (tests/test_sharding.py),
#   2. `grpokit bench --workload qwen2-0.5b` (grpokit's lean decode step from a CUDA graph, the
#      same step op by op, and transformers' forward for sampling),
#   3. TRL's GRPOTrainer on the same workload (benchmarks/trl_gpu.py), when TRL is importable.
# Run from the repository root with a Python that has torch (CUDA) and grpokit's dependencies:
#   bash benchmarks/gpu_check.sh            # logs under runs/gpu-check (GPU_CHECK_OUT=DIR to change)
set -u
OUT_DIR=${GPU_CHECK_OUT:-runs/gpu-check}
ASSETS=${ASSETS:-/tmp/grpo_assets}
STEPS=${STEPS:-8}
VARIANTS=${VARIANTS:-graphs,lean,transformers}
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR/bench"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT_DIR/gpu.txt"

echo "== 1. CUDA tests"
timeout 300 $PY -m pytest -q -p no:cacheprovider tests/test_device.py > "$OUT_DIR/tests.log" 2>&1
echo "tests exit $?"; tail -4 "$OUT_DIR/tests.log"
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_sharding.py -k one_process > "$OUT_DIR/fsdp.log" 2>&1
echo "fsdp exit $?"; tail -4 "$OUT_DIR/fsdp.log"

echo "== 2. grpokit bench"
timeout 480 $PY -m grpokit.bench --workload qwen2-0.5b --assets "$ASSETS" --steps "$STEPS" --warmup 2 --threads 4 \
  --variants "$VARIANTS" --log-dir "$OUT_DIR/bench" > "$OUT_DIR/bench.log" 2>&1
echo "bench exit $?"; grep -v "^step " "$OUT_DIR/bench.log" | tail -20

if $PY -c "import trl" > /dev/null 2>&1; then
  echo "== 3. TRL on the same workload"
  timeout 300 $PY benchmarks/trl_gpu.py --assets "$ASSETS" --steps "$STEPS" --json-out "$OUT_DIR/bench/trl.json" \
    > "$OUT_DIR/trl.log" 2>&1
  echo "trl exit $?"; grep "RESULT\|Error\|error" "$OUT_DIR/trl.log" | tail -5
else
  echo "== 3. TRL is not importable here: no TRL row"
fi
