"""`kimi bench` on the tiny checkpoint (CPU): the harness runs end to end, the table renders, the JSON parses.

No timing assertions: only that every stage ran and recorded its numbers. On a CPU in float32 our
decoder must reproduce the plain path's greedy tokens exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kimi_cli.bench.decode import DecodeRun
from kimi_cli.bench.greedy import GreedyCheck, same_prefix
from kimi_cli.bench.report import BenchReport
from kimi_cli.bench.runner import parse_contexts, parse_engines
from kimi_cli.bench.ttft import TtftRun, bench_image
from kimi_cli.cli import main
from kimi_cli.errors import UsageError

TOP_KEYS = {"env", "options", "model", "load_s", "ttft", "engine_runs", "decode", "greedy", "fresh", "seen", "targets",
            "errors"}
ENV_KEYS = {"device", "torch", "transformers", "date", "command"}


def _bench(tmp_path, capsys, *extra: str) -> tuple[str, dict]:
    out = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--contexts", "64", "--tokens", "8", "--image-size", "224", "--reps", "1",
              "--json", str(out), *(extra if "--seen" in extra else ("--seen", "", *extra))])
    stdout = capsys.readouterr().out
    assert exit_info.value.code == 0, stdout
    return stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_bench_plain_end_to_end(tiny_checkpoint, tmp_path, capsys):
    table, data = _bench(tmp_path, capsys, "--model", str(tiny_checkpoint), "--engines", "plain", "--fresh-runs", "0")
    assert "| metric | plain | static | fast |" in table
    assert "| decode tok/s, batch 1, 64 context |" in table
    assert "| target (our engine) | goal | result | met |" in table
    assert set(data) >= TOP_KEYS and set(data["env"]) >= ENV_KEYS
    assert data["errors"] == []
    assert data["load_s"] > 0
    (ttft,) = data["ttft"]
    assert ttft["engine"] == "plain" and ttft["total_ms"] > 0 and ttft["image_tokens"] == 64
    (decode,) = data["decode"]
    assert decode["engine"] == "plain" and decode["context"] == 64 and decode["tokens_per_s"] > 0
    assert data["engine_runs"][0]["first_token_ms"] > 0
    assert {t["target"] for t in data["targets"]} >= {"decode tok/s at 512 context"}


def test_bench_fast_decoder_matches_plain_greedy_on_cpu(tiny_checkpoint, tmp_path, capsys):
    table, data = _bench(tmp_path, capsys, "--model", str(tiny_checkpoint), "--engines", "plain,fast",
                         "--fresh-runs", "0", "--check-tokens", "8")
    assert data["errors"] == []
    assert {d["engine"] for d in data["decode"]} == {"plain", "fast"}
    assert len(data["greedy"]) == 2  # the image prompt and the random context
    for check in data["greedy"]:
        assert check["compared"] == 8
        assert check["same_prefix"] == 8 and check["forced_agree"] == 8
        assert check["forced_max_diff"] < 1e-3
    assert "| greedy check: fast vs plain |" in table


@pytest.mark.slow
def test_bench_fresh_process(tiny_checkpoint, tmp_path, capsys):
    _, data = _bench(tmp_path, capsys, "--model", str(tiny_checkpoint), "--engines", "plain", "--fresh-runs", "1",
                     "--contexts", "32")
    (fresh,) = data["fresh"]
    assert fresh["exit_code"] == 0, fresh
    assert fresh["engine"] == "plain"
    assert fresh["load_s"] > 0 and fresh["wall_first_text_s"] > fresh["load_s"]
    assert fresh["ttft_excl_load_s"] == pytest.approx(fresh["wall_first_text_s"] - fresh["load_s"])


@pytest.mark.parametrize(("text", "expected"), [
    ("512,8192,32768", (512, 8192, 32768)), ("512, 8K,32k", (512, 8192, 32768)), ("64", (64,)),
])
def test_parse_contexts(text, expected):
    assert parse_contexts(text) == expected


@pytest.mark.parametrize("text", ["abc", "0", "-5"])
def test_parse_contexts_rejects(text):
    with pytest.raises(UsageError):
        parse_contexts(text)


def test_parse_engines():
    assert parse_engines("plain, fast") == ("plain", "fast")
    with pytest.raises(UsageError):
        parse_engines("plain,vllm")


def test_report_targets_and_table():
    report = BenchReport(env={"device": "X"}, options={"image_size": 1792})
    report.decode = [DecodeRun("fast", 512, tokens_per_s=300.0), DecodeRun("fast", 8192, tokens_per_s=200.0),
                     DecodeRun("plain", 512, tokens_per_s=11.0)]
    report.ttft = [TtftRun("fast", vision_ms=150.0, prefill_ms=150.0)]
    report.greedy = [GreedyCheck("img", 64, 3, 30, 4.0, 28, 3.9, 0.1)]
    met = {t["target"]: t["met"] for t in report.targets()}
    assert met["decode tok/s at 512 context"] is True
    assert met["decode tok/s at 8192 context"] is False
    assert met["decode tok/s at 32768 context"] is None
    assert met["warm TTFT ms, 1792x1792 image + question"] is False
    text = report.markdown()
    assert "| decode tok/s, batch 1, 512 context | 11.0 | - | 300.0 |" in text
    assert "| warm TTFT ms, 1792x1792 image + question | <= 250 | 300.00 | **no** |" in text
    assert "| img | 3/64 | 30/64 | 4.000 | 28/64, 3.900 | 0.100 |" in text
    assert json.loads(json.dumps(report.to_json()))["ttft"][0]["total_ms"] == 300.0


def test_same_prefix():
    assert same_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert same_prefix([1, 2], [1, 2, 3]) == 2


def test_bench_image_is_deterministic():
    a, b = bench_image(56), bench_image(56)
    assert a.size == (56, 56) and a.tobytes() == b.tobytes()


def test_bench_help_does_not_import_torch():
    code = ("import sys\nfrom kimi_cli.cli import main\n"
            "try:\n    main(['bench', '--help'])\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write('HEAVY=' + ','.join(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "--synthetic-full" in out.stdout
    assert out.stderr.strip().endswith("HEAVY="), out.stderr


def test_ttft_pieces_time_the_engines_own_prefill(tiny_model, tmp_path):
    """The pieces come from hooks inside the engine's decoders' prefill; the hooks go away after."""
    from kimi_cli.bench.ttft import time_pieces, write_bench_image

    image = write_bench_image(tmp_path, 112)
    tower = tiny_model.model.model.vision_tower
    for engine in ("plain", "fast"):
        run = time_pieces(tiny_model, image, "What is it?", engine, reps=1, tokens=4)
        assert run.image_tokens == 16 and run.vision_ms > 0 and run.prefill_ms > 0 and run.upload_ms >= 0
    assert not tower._forward_pre_hooks


def test_bench_has_no_copy_of_the_engine():
    """No embedding, scatter or prefill step of the engine is written again under bench/ or benchmarks/."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in [*(root / "kimi_cli" / "bench").glob("*.py"), *(root / "benchmarks").glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        for step in ("masked_scatter", "get_input_embeddings", "get_image_features", "DynamicCache("):
            if path.name == "greedy.py" and step == "DynamicCache(":
                continue  # the reference plain path the fast decoder is checked against
            assert step not in text, f"{path.name} re-implements {step}"


@pytest.mark.slow
def test_decode_bench_script_runs_on_a_cpu(tmp_path):
    """benchmarks/decode_bench.py is a thin front over kimi_cli.bench.decode; smoke-run it on tiny shapes."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "decode_bench.py"
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(script), "--synthetic", "--preset", "tiny", "--device", "cpu",
                           "--contexts", "16", "--new-tokens", "4", "--check-tokens", "4", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text())
    assert {r["engine"] for r in row["runs"]} == {"plain", "fast"}
    assert row["greedy"]["same_prefix"] == 4


def test_replay_rate_refuses_a_cache_too_short_for_its_replays():
    """Graph replays write a position each past the cache's end: a run that would overrun the cache
    (what made qkernel_bench's later shapes read NaN logits) is refused before anything runs."""
    import torch

    from kimi_cli.bench.decode import replay_rate
    from kimi_cli.engine.fast import FastDecoder
    from kimi_cli.engine.fast.synthetic import build_model

    model = build_model("tiny", device="cpu", dtype=torch.float32, seed=0)
    dec = FastDecoder(model.model, model.lm_head, 32, "cpu", torch.float32, backend="torch")
    with torch.inference_mode():
        dec.prefill(model.model.embed_tokens(torch.arange(3, 23).view(1, -1)))
    assert dec.length == 20
    with pytest.raises(ValueError, match="need a cache of 33 positions, not 32"):
        replay_rate(dec, 13)


def test_qkernel_bench_changes_the_default_launch_field_by_field():
    """qkernel_bench's `--only` objects change fields of the format's default launch (its close, trigger
    and row blocks kept), lists replace it; `--quick --modes` tries the default in those modes only."""
    import importlib.util
    from dataclasses import replace
    from pathlib import Path

    from kimi_cli.engine.fast.quant_step import LAUNCH

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "qkernel_bench.py"
    spec = importlib.util.spec_from_file_location("qkernel_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    tried = bench.shapes("int4", False, {"int4": [{"block_n": 32}, [2, 16, 512, 4, 3]]})
    assert tried[:2] == [LAUNCH["int4"], replace(LAUNCH["int4"], block_n=32)]
    assert (tried[2].mode, tried[2].block_k, tried[2].close, tried[2].late) == (2, 512, 0, ())
    quick = bench.shapes("int8", True, modes=(2,))
    assert quick == [LAUNCH["int8"], replace(LAUNCH["int8"], mode=2)]
    assert len(bench.shapes("int8", True)) == 4  # the default and its three other modes
