#!/usr/bin/env bash
# One device call: the GPU tests, the quantized kernels' launch sweep (issue 11), the full-size
# checkpoint, a warm-server probe (issue 12) and benchmarks/each_bench.py (issue 13). From the
# repository root on the GPU machine:
#   STEPS="tests sweep synth probe serve each" bash benchmarks/h200_run.sh OUT   (every step: see `want`/`step` below)
# Carried wheels in .whl/ (transformers 5.24 and friends, starlette, uvicorn, prompt_toolkit,
# llguidance, jsonschema) are installed first. Each step has its own time limit (NAME_LIMIT=seconds)
# and log; at most 8 files come back, so the logs are folded into summary.txt at the end.
set -u
OUT=${1:-/tmp/out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 XDG_RUNTIME_DIR=/tmp/kimi-run
mkdir -p -m 700 /tmp/kimi-run
STEPS=${STEPS:-tests synth probe serve each}
want() { case " $STEPS " in *" $1 "*) return 0;; esac; return 1; }
# a speed run keeps its greedy check against plain transformers (issue 14): `bench` brings `greedy`
want bench && ! want greedy && STEPS="$STEPS greedy"
step() { local name=$1 default=$2; shift 2; want "$name" || return 0
  local var="${name^^}_LIMIT" t0; t0=$(date +%s%N)
  timeout "${!var:-$default}" "$@" >"$OUT/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $(( ($(date +%s%N) - t0) / 1000000 )) ms" | tee -a "$OUT/steps.txt"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, transformers, triton; print(torch.__version__, transformers.__version__, triton.__version__)"; } >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
step tests 110 python3 -m pytest -q -s -m gpu -p no:cacheprovider ${TESTS:-tests}
want tests && tail -6 "$OUT/tests.log"
# the quantized kernels' launch shapes on a synthetic full-size model (the best per format in /tmp/qbest.json)
step sweep 200 python3 benchmarks/qkernel_bench.py --formats "${FORMATS:-int8,int4,fp8}" ${SWEEP_ARGS:-} \
  --json "$OUT/qkernels.json" --write-best /tmp/qbest.json
want sweep && grep "^best" "$OUT/sweep.log"
if want synth && [ ! -f /tmp/full/config.json ]; then
  step synth 90 python3 -m kimi_cli synth /tmp/full --preset full --device cuda
fi
step probe 90 python3 benchmarks/serve_probe.py --model /tmp/full
# FILES=100 adds the shell loop with and without the server (2 fresh runs measured, scaled).
step serve 90 python3 benchmarks/serve_bench.py --model /tmp/full --files "${FILES:-0}" --local-files 2 \
  --fresh-reps "${FRESH:-0}" --reps 5 --max-new-tokens 64 --json "$OUT/serve.json"
want serve && tail -4 "$OUT/serve.log"
step each 300 python3 benchmarks/each_bench.py --model /tmp/full -n "${N:-100}" --separate-n 2 \
  --serve-args "--backend server" --port 8767 --parts "${EACH_PARTS:-local,served,constrained}" --json "$OUT/each.json"
want each && tail -5 "$OUT/each.log"
# tokens/s as a one-shot `kimi ask` delivers them: 512 tokens after a 16K PDF, a video, a 1792x1792 image
if want asks; then
  python3 -c "from pathlib import Path; from kimi_cli.bench.ttft import write_bench_image; write_bench_image(Path('/tmp'), 1792)"
  for f in ${ASK_FILES:-.bench/doc20.pdf examples/clip.mp4 /tmp/bench-1792x1792.png}; do
    step asks 60 python3 -m kimi_cli ask --model /tmp/full "$f" "Describe it." -n 512 -t 0 --format json
    tail -c 600 "$OUT/asks.log" | tee -a "$OUT/asks.txt"; echo | tee -a "$OUT/asks.txt"
  done
fi
# the image prompt's vision tower and LM prefill, timed and profiled, the prefill kernels against transformers
step prefill 100 python3 benchmarks/prefill_probe.py --model /tmp/full --rows 40 --out "$OUT"
# where a decode step's time goes (synthetic full-size LM, the graph's top kernels)
step profile 120 python3 benchmarks/decode_bench.py --synthetic --contexts "${PROFILE_CONTEXTS:-512,32768}" --skip-plain --profile
# fresh `kimi ask` processes: a machine's first run (kimi's Triton cache removed), then a cached one
step fresh 100 python3 benchmarks/fresh_ask.py --model /tmp/full --runs "${FRESH_RUNS:-2}" --clear-kernels --json "$OUT/fresh.json"
want fresh && cat "$OUT/fresh.log"
step warmup 60 python3 -m kimi_cli warmup --model /tmp/full
# tokens/s as `kimi ask` delivers them, next to the decode figure (kimi bench's seen stage)
step seen 220 python3 -m kimi_cli bench --model /tmp/full --engines fast --contexts 512 --tokens 128 --fresh-runs 0 \
  --seen "${SEEN:-image,pdf,video}" --seen-tokens 512 --json "$OUT/seen.json"
# fresh-process loads with their phases: bf16 from the page cache, then evicted (issue 14)
step loads 150 bash -c "python3 benchmarks/load_bench.py --model /tmp/full --quantize bf16 --repeats 2 --json $OUT/load_warm.json && \
  python3 benchmarks/load_bench.py --model /tmp/full --quantize bf16 --cold --repeats 1 --json $OUT/load_cold.json"
# where a fresh process's import seconds go (the model class pulls in most of transformers)
step imports 40 bash -c "python3 -X importtime -c 'import kimi_cli.model.fastload; from transformers import Kimi_K25ForConditionalGeneration' 2>&1 | awk -F'|' 'NR>1 {print \$2, \$3}' | sort -n | tail -40"
# the whole `kimi bench` of our engine: TTFT pieces, decode per context, user-seen speed
step bench 200 python3 -m kimi_cli bench --model /tmp/full --engines fast --contexts "${CONTEXTS:-512,8192,32768,131072}" \
  --fresh-runs 0 --seen "${SEEN:-image,pdf,video}" --seen-tokens 512 --json "$OUT/bench.json"
# the greedy check of our engine against plain transformers at one short context (plain decodes at
# about 10 tok/s on the full-size checkpoint, so this is the cheap form of issue 14's "every speed run")
step greedy 150 python3 -m kimi_cli bench --model /tmp/full --engines plain,fast --contexts 512 --tokens 64 \
  --check-tokens 32 --reps 1 --fresh-runs 0 --seen 0 --json "$OUT/greedy.json"
# a `kimi quantize`d int8 checkpoint's load against bf16's (fresh `kimi ask` processes, page cache)
step quantize 60 python3 -m kimi_cli quantize /tmp/full --format int8 -o /tmp/full-int8
step load_int8 45 python3 benchmarks/ask_peak.py --model /tmp/full-int8 "hi" -n 4 --format json
step load_bf16 45 python3 benchmarks/ask_peak.py --model /tmp/full --quantize bf16 "hi" -n 4 --format json
cat "$OUT/steps.txt"
for f in "$OUT"/*.log; do [ "$(basename "$f")" = tests.log ] && continue; echo "=== $(basename "$f")"; tail -100 "$f"; done >"$OUT/summary.txt"
find "$OUT" -name '*.log' ! -name tests.log -delete
