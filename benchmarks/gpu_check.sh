#!/usr/bin/env bash
# What this repository could not run without a GPU, in one go on one GPU (H100/H200), in under 8 minutes once
# the environment is installed (the GPU image, or `make install EXTRAS=gpu,eval,test` plus vLLM):
#   1. bf16 logits parity: Megatron model (TE layers) vs transformers, 7B layer shapes, 2 layers
#   2. fused linear + cross-entropy vs unfused at a 7B head (hidden 3584, vocabulary 152064), 16k and 32k tokens
#   3. a few-layer 7B-shaped training step (bf16, then FP8 where TE is installed): tokens/s and MFU
#   4. FP8 resume: Transformer Engine's scaling state through a checkpoint (tests/test_train_fp8_state.py runs
#      the same round trip on the CPU with a stand-in layer; here TE's own, in a 2-step FP8 run, resumed)
#   5. a tiny-model vLLM server on the GPU with swehero's tool-call parser
# Each section has its own time limit; the summary says which passed. `--dry-run` runs every section on the CPU
# at toy sizes (what the test suite does), so the script is known to work before a GPU is lent.
#
#   bash benchmarks/gpu_check.sh            # on a GPU machine
#   bash benchmarks/gpu_check.sh --dry-run  # anywhere
set -uo pipefail
cd "$(dirname "$0")/.."
# swehero_kernels is this checkout's kernels/ (an installed name, so $PWD alone would give an installed copy's,
# such as the image's /opt/swehero under a newer checkout mounted over it)
kernels_shim=$(mktemp -d)
trap 'rm -rf "$kernels_shim"' EXIT
ln -s "$PWD/kernels" "$kernels_shim/swehero_kernels"
export PYTHONPATH="$kernels_shim:$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python}
DRY=""
[[ "${1:-}" == "--dry-run" ]] && DRY="--dry-run"
declare -a RESULTS=()
started=$(date +%s)

section() {  # section NAME LIMIT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s)"
  local t0
  t0=$(date +%s)
  if timeout --kill-after=10 "$limit" "$@"; then
    RESULTS+=("PASS  $name  $(( $(date +%s) - t0 ))s")
  else
    local status=$?  # before $(date) below resets $?
    RESULTS+=("FAIL  $name  $(( $(date +%s) - t0 ))s (exit $status)")
  fi
}

skip() {  # skip NAME REASON: a section not run, named in the summary
  RESULTS+=("SKIP  $1  ($2)")
}

# Sourced (by the tests), the script only defines `section` and `skip`.
[[ "${BASH_SOURCE[0]}" != "$0" ]] && return 0

if [[ -z "$DRY" ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no GPU: use --dry-run"; exit 2; }
  HAS_TE=$("$PYTHON" -c 'import importlib.util as u; print(int(u.find_spec("transformer_engine") is not None))')
  LAYERS=$([[ "$HAS_TE" == 1 ]] && echo "Transformer Engine" || echo "Megatron local")
  section "parity (bf16, 7B layers, $LAYERS layers)" 60 "$PYTHON" benchmarks/gpu_check.py parity
  section "fused CE vs unfused (7B head)" 100 "$PYTHON" benchmarks/fused_ce.py \
    --shapes 16384x3584x152064 32768x3584x152064 --repeats 3
  section "train step bf16 (7B, 4 layers, 8k)" 70 "$PYTHON" benchmarks/train_step.py \
    --like qwen2.5-coder-7b-instruct --layers 4 --seq 8192 --global-batch 4 --steps 6 --device cuda --gpus 1 \
    --precision bf16
  FP8_STEP="train step fp8 (7B, 4 layers, 8k)" FP8_RESUME="fp8 resume (TE scaling state)"
  if [[ "$HAS_TE" == 1 ]]; then
    section "$FP8_STEP" 70 "$PYTHON" benchmarks/train_step.py \
      --like qwen2.5-coder-7b-instruct --layers 4 --seq 8192 --global-batch 4 --steps 6 --device cuda --gpus 1 \
      --precision fp8
    section "$FP8_RESUME" 60 "$PYTHON" benchmarks/gpu_check.py fp8-state
  else
    skip "$FP8_STEP" "no transformer_engine"
    skip "$FP8_RESUME" "no transformer_engine"
  fi
  section "vLLM GPU serve + tool parser" 120 "$PYTHON" benchmarks/gpu_check.py serve
else
  section "parity (dry run, bf16, Megatron local layers)" 120 "$PYTHON" benchmarks/gpu_check.py parity --dry-run
  section "fp8 resume (dry run)" 120 "$PYTHON" benchmarks/gpu_check.py fp8-state --dry-run
  section "fused CE vs unfused (dry run)" 120 "$PYTHON" benchmarks/fused_ce.py --shapes 512x64x1024 --repeats 1
  section "train step (dry run)" 180 "$PYTHON" benchmarks/train_step.py --layers 2 --seq 256 --global-batch 2 \
    --steps 4 --gpus 1
  section "vLLM serve + tool parser (dry run)" 400 "$PYTHON" benchmarks/gpu_check.py serve --dry-run
fi

echo "=== summary ($(( $(date +%s) - started ))s)"
printf '%s\n' "${RESULTS[@]}"
! printf '%s\n' "${RESULTS[@]}" | grep -q '^FAIL'
