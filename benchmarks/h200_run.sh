#!/usr/bin/env bash
# One device call for this round: GPU tests, the full-size checkpoint, a warm-server probe (issue 12)
# and benchmarks/each_bench.py (issue 13). From the repository root on the GPU machine:
#   bash benchmarks/h200_run.sh OUT
# Carried wheels in .whl/ (transformers 5.24 and friends, starlette, uvicorn, prompt_toolkit,
# llguidance) are installed first. Each step has its own time limit and log under OUT.
set -u
OUT=${1:-/tmp/out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 XDG_RUNTIME_DIR=/tmp/kimi-run
mkdir -p -m 700 /tmp/kimi-run
step() { local name=$1 limit=$2; shift 2; local t0; t0=$(date +%s%N)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $(( ($(date +%s%N) - t0) / 1000000 )) ms" | tee -a "$OUT/steps.txt"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, transformers, triton; print(torch.__version__, transformers.__version__, triton.__version__)"; } >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
step tests "${TESTS_LIMIT:-110}" python3 -m pytest -q -m gpu -p no:cacheprovider tests
tail -6 "$OUT/tests.log"
[ -f /tmp/full/config.json ] || step synth 90 python3 -m kimi_cli synth /tmp/full --preset full --device cuda
# Warm server: time to first text of `kimi ask examples/chelsea.png`, and where a client's start goes.
python3 -m kimi_cli serve --model /tmp/full --port 8766 >"$OUT/serve_server.log" 2>&1 &
SERVER=$!
for _ in $(seq 120); do python3 -c "import httpx; httpx.get('http://127.0.0.1:8766/health', timeout=1).raise_for_status()" 2>/dev/null && break; sleep 0.5; done
ASK="python3 -m kimi_cli ask examples/chelsea.png What.is.in.this.picture? --model /tmp/full --backend server --format plain --thinking show --temperature 0 --max-new-tokens 64"
step probe 60 bash -c "$ASK >/dev/null; python3 -X importtime $ASK 2>&1 >/dev/null | sort -t'|' -k2 -n | tail -25;
  TIMEFORMAT='python3 -c pass: %R s'; time python3 -c pass; TIMEFORMAT='import kimi_cli.cli.app: %R s'; time python3 -c 'import kimi_cli.cli.app';
  $ASK --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"timings\"])'"
kill $SERVER; wait $SERVER 2>/dev/null
tail -4 "$OUT/probe.log"
# FILES=100 adds the shell loop with and without the server (2 fresh runs measured, scaled).
step serve "${SERVE_LIMIT:-90}" python3 benchmarks/serve_bench.py --model /tmp/full --files "${FILES:-0}" --local-files 2 \
  --fresh-reps "${FRESH:-0}" --reps 5 --max-new-tokens 64 --json "$OUT/serve.json"
tail -4 "$OUT/serve.log"
step each "${EACH_LIMIT:-240}" python3 benchmarks/each_bench.py --model /tmp/full -n "${N:-100}" --separate-n 2 \
  --serve-args "--backend server" --port 8767 --json "$OUT/each.json"
tail -5 "$OUT/each.log"
