#!/usr/bin/env bash
# One device call: the GPU tests, the full-size synthetic checkpoint, and benchmarks/serve_bench.py
# (issue 12's table). Usage, from the repository root on the GPU machine: bash benchmarks/serve_gpu_run.sh OUT
# Carried wheels in .whl/ (transformers 5.24 and friends, starlette, uvicorn) are installed first.
set -u
OUT=${1:-/tmp/out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
step() { local name=$1 limit=$2; shift 2; local t0; t0=$(date +%s%N)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $(( ($(date +%s%N) - t0) / 1000000 )) ms" | tee -a "$OUT/steps.txt"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, transformers, triton; print(torch.__version__, transformers.__version__, triton.__version__)"; } >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
step tests "${TESTS_LIMIT:-150}" python3 -m pytest -q -m gpu -p no:cacheprovider tests
tail -15 "$OUT/tests.log"
[ -f /tmp/full/config.json ] || step synth 90 python3 -m kimi_cli synth /tmp/full --preset full --device cuda
step serve "${SERVE_LIMIT:-330}" python3 benchmarks/serve_bench.py --model /tmp/full --files "${FILES:-100}" \
  --local-files "${LOCAL_FILES:-2}" --reps 2 --max-new-tokens 64 --json "$OUT/serve.json"
tail -12 "$OUT/serve.log"
