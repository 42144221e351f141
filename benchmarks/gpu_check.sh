#!/usr/bin/env bash
# The GPU check of docs/performance.md, in one call of under ten minutes on one GPU:
#   1. tests/test_device.py (the same functions on CUDA as on the CPU; a short training run + resume),
#      and FSDP2 with world size 1 (NCCL) against the plain run (tests/test_sharding.py),
#   2. `grpokit bench --workload qwen2-0.5b` (grpokit's lean decode step from a CUDA graph, the
#      same step op by op, and transformers' forward for sampling),
#   3. TRL's GRPOTrainer on the same workload (benchmarks/trl_gpu.py), when TRL is importable,
#   4. vLLM, when it is importable: the CUDA vLLM test (sleep mode through a 3-step run,
#      tests/test_vllm.py -k on_cuda) and the bench's `vllm` variant, each under `timeout` and
#      within what is left of GPU_CHECK_BUDGET seconds (570) since the script started.
#      (benchmarks/trl_vllm_colocate.py is CPU-only, so there is no TRL + vLLM row here.)
# Run from the repository root with a Python that has torch (CUDA) and grpokit's dependencies:
#   bash benchmarks/gpu_check.sh            # logs under runs/gpu-check (GPU_CHECK_OUT=DIR to change)
set -u
OUT_DIR=${GPU_CHECK_OUT:-runs/gpu-check}
ASSETS=${ASSETS:-/tmp/grpo_assets}
STEPS=${STEPS:-8}
VARIANTS=${VARIANTS:-graphs,lean,transformers}
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-570}
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

# seconds for a step: its cap, or what is left of BUDGET (less 15 s) if that is less
left() { local l=$((BUDGET - SECONDS - 15)); echo $(( l < $1 ? l : $1 )); }
if $PY -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)" > /dev/null 2>&1; then
  echo "== 4. vLLM $($PY -c "from grpokit.bench.gpu import vllm_version; print(vllm_version())" 2>/dev/null)"
  export VLLM_ENABLE_V1_MULTIPROCESSING=0
  T=$(left 180)
  if [ "$T" -ge 60 ]; then
    timeout "$T" $PY -m pytest -q -p no:cacheprovider -rs tests/test_vllm.py -k on_cuda > "$OUT_DIR/vllm_tests.log" 2>&1
    echo "vllm tests exit $? (limit ${T} s)"; tail -4 "$OUT_DIR/vllm_tests.log"
  else
    echo "vllm tests: not run, ${T} s left of GPU_CHECK_BUDGET=$BUDGET"
  fi
  T=$(left 240)
  if [ "$T" -ge 90 ]; then
    timeout "$T" $PY -m grpokit.bench --workload qwen2-0.5b --assets "$ASSETS" --steps "$STEPS" --warmup 2 \
      --threads 4 --variants vllm --log-dir "$OUT_DIR/bench-vllm" > "$OUT_DIR/bench_vllm.log" 2>&1
    echo "vllm bench exit $? (limit ${T} s)"; grep -v "^step " "$OUT_DIR/bench_vllm.log" | tail -8
  else
    echo "vllm bench: not run, ${T} s left of GPU_CHECK_BUDGET=$BUDGET"
  fi
else
  echo "== 4. vLLM is not installed on this machine: no vLLM test or row (pip install 'grpokit[vllm]')"
fi
