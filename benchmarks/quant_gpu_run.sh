#!/usr/bin/env bash
# Issue 11's GPU run, in one call (the device tool's 10-minute limit): GPU tests, the full-size
# synthetic checkpoint, every format side by side, capped `kimi ask` runs, `kimi quantize` + reload.
# Usage (repository root on the device machine): bash benchmarks/quant_gpu_run.sh OUT_DIR
set -u
OUT=${1:-/tmp/out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1
STEPS=${STEPS:-tests synth bench bench16 ask24 ask16 quantize load_int8 load_bf16}
step() { local name=$1 limit=$2; shift 2; case " $STEPS " in *" $name "*) ;; *) return;; esac
  local t0=$(date +%s%N)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $(( ($(date +%s%N) - t0) / 1000000 )) ms" | tee -a "$OUT/steps.txt"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, transformers, triton; print(torch.__version__, transformers.__version__, triton.__version__)"; } >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
step tests ${TESTS_LIMIT:-200} python3 -m pytest -q -m gpu ${TESTS:-tests/test_fast_quant.py tests/test_fast_triton.py tests/test_fast_decode.py}
tail -25 "$OUT/tests.log" 2>/dev/null
[ -f /tmp/full/config.json ] || step synth 80 python3 -m kimi_cli synth /tmp/full --preset full --device cuda
python3 -c "from pathlib import Path; from kimi_cli.bench.ttft import write_bench_image; print(write_bench_image(Path('/tmp'), 1792))" >"$OUT/image.txt" 2>&1
IMG=$(tail -1 "$OUT/image.txt")
step bench 260 python3 -m kimi_cli bench --model /tmp/full --quantize ${FORMATS:-bf16,int8,fp8,int4} --contexts 512,8192,32768 \
  --tokens 64 --max-gpu-memory 24GiB --json "$OUT/formats.json"
step bench16 120 python3 -m kimi_cli bench --model /tmp/full --quantize int4 --contexts 512,32768 \
  --tokens 64 --max-gpu-memory 16GiB --json "$OUT/formats16.json"
step ask24 50 python3 benchmarks/ask_peak.py "$IMG" "Describe it." --model /tmp/full --max-gpu-memory 24GiB -n 32 --format json
step ask16 50 python3 benchmarks/ask_peak.py "$IMG" "Describe it." --model /tmp/full --max-gpu-memory 16GiB -n 32 --format json
step quantize 80 python3 -m kimi_cli quantize /tmp/full --format int8 -o /tmp/full-int8
step load_int8 40 python3 benchmarks/ask_peak.py --model /tmp/full-int8 "hi" -n 4 --format json
step load_bf16 40 python3 benchmarks/ask_peak.py --model /tmp/full --quantize bf16 "hi" -n 4 --format json
cat "$OUT/steps.txt"
# at most 8 files come back: fold the logs into one summary
for f in "$OUT"/*.log; do echo "=== $(basename "$f")"; grep -v "Loading weights" "$f" | tail -60; done >"$OUT/summary.txt"
mv "$OUT/bench.log" "$OUT/bench.txt" 2>/dev/null; rm -f "$OUT"/*.log
