"""`kimi bench --seen`: user-seen tok/s through `kimi ask`'s path, on the tiny checkpoint (CPU) and in pieces.

Numbers on a CPU mean nothing; the tests check that every field is measured and that the derived
figures (tok/s, ratio, gaps) come from the measured ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kimi_cli.bench import seen, seen_media
from kimi_cli.bench.report import BenchReport
from kimi_cli.bench.runner import parse_seen
from kimi_cli.bench.seen import SeenRow, SeenRun, SeenSpec
from kimi_cli.errors import UsageError
from kimi_cli.events.types import ErrorEvent, Finished, Usage
from kimi_cli.render import Outcome


@pytest.mark.parametrize(("text", "expected"), [
    ("image,pdf,video", ("image", "pdf", "video")), ("pdf", ("pdf",)), (" PDF , image,pdf", ("pdf", "image")),
    ("", ()), ("0", ()), ("auto", None), (" Auto ", None),
])
def test_parse_seen(text, expected):
    assert parse_seen(text) == expected


def test_parse_seen_rejects_unknown_kinds():
    with pytest.raises(UsageError, match="gif"):
        parse_seen("image,gif")


def test_summarize_counts_tokens_after_the_first_on_the_consumer_clock():
    times = [10.0, 10.1, 10.2, 10.9, 11.0]  # five pieces; a 0.7 s stall after the third
    done = Finished("end_turn", usage=Usage(prompt_tokens=40, image_tokens=30, generated_tokens=6), tokens_per_s=5.0)
    run = seen.summarize(9.5, times, Outcome(finished=done), captures=[0.25, 0.05])
    assert run.shown == 5 and run.pieces == 5 and run.prompt_tokens == 40  # the stop token is not shown
    assert run.tokens_per_s == pytest.approx(4 / 1.0) and run.first_token_s == pytest.approx(0.5)
    assert run.gap_max_ms == pytest.approx(700.0) and run.gap_max_after == 3
    assert run.gap_median_ms == pytest.approx(100.0) and run.gap_p90_ms == pytest.approx(700.0)
    assert (run.captures, run.capture_s) == (2, pytest.approx(0.3)) and run.engine_tokens_per_s == 5.0


def test_summarize_a_failed_turn():
    run = seen.summarize(0.0, [], Outcome(error=ErrorEvent("out of GPU memory")), captures=None)
    assert run.error == "out of GPU memory" and run.tokens_per_s is None and run.gap_max_ms is None
    assert run.captures is None


def test_capture_clock_puts_the_engine_back():
    from kimi_cli.engine.fast.graphs import GraphRunner

    original = GraphRunner.ensure
    with seen.capture_clock() as spent:
        assert GraphRunner.ensure is not original
    assert GraphRunner.ensure is original and spent == []


def test_the_pdf_plans_about_16k_prompt_tokens_at_the_default_budget(tmp_path):
    from kimi_cli.app.media import plan_inputs
    from kimi_cli.media.options import MediaOptions

    path = seen_media.write_pdf(tmp_path, seen.PDF_PAGES)
    plan = plan_inputs([str(path)], MediaOptions(), None, seen.QUESTIONS["pdf"])
    assert len(plan.inputs[0].images) == seen.PDF_PAGES
    assert 15_500 <= plan.total_tokens <= 17_000


def test_without_the_clip_a_gif_is_sampled_as_video(tmp_path, monkeypatch):
    from kimi_cli.app.media import plan_inputs
    from kimi_cli.media.options import MediaOptions

    monkeypatch.setattr(seen_media, "CLIP", tmp_path / "missing.mp4")
    path, label = seen_media.video_input(tmp_path)
    assert path.suffix == ".gif" and "GIF" in label
    plan = plan_inputs([str(path)], MediaOptions(fps=seen.VIDEO_FPS), None, seen.QUESTIONS["video"])
    assert plan.inputs[0].source.kind == "animation" and len(plan.inputs[0].images) == 20
    assert 2_000 <= plan.total_tokens <= 3_000


def _check_row(row: SeenRow, tokens: int) -> None:
    assert row.prompt_tokens > 0 and row.planned_tokens > 0 and row.media_s is not None
    for run in (row.first, row.warm):
        assert run.error is None and run.generated > 0 and 0 < run.pieces <= run.shown <= tokens
        assert run.first_token_s > 0 and run.tokens_per_s > 0 and run.image_tokens > 0
        assert run.gap_median_ms <= run.gap_p90_ms <= run.gap_max_ms
        assert run.captures is None  # the plain path captures no graphs
    assert row.decode_context == row.prompt_tokens + tokens // 2
    assert row.decode_tokens_per_s > 0 and row.replay_tokens_per_s is None  # replays need CUDA
    assert row.ratio == pytest.approx(row.warm.tokens_per_s / row.decode_tokens_per_s)


@pytest.mark.slow
def test_seen_stage_on_the_tiny_checkpoint(tiny_model, tiny_checkpoint, tmp_path):
    from kimi_cli.bench.ttft import write_bench_image

    tokens = 8
    spec = SeenSpec(tokens=tokens, image=write_bench_image(tmp_path, 56), pdf_pages=2, max_image_tokens=256,
                    video_fps=1.0, decode_tokens=4)
    report = BenchReport(env={"device": "cpu"}, options={})
    for kind in seen.KINDS:
        row = seen.measure(tiny_model, str(tiny_checkpoint), kind, spec, tmp_path, "plain")
        _check_row(row, tokens)
        report.seen.append(row)
    pdf = report.seen[1]
    assert pdf.source == "2-page PDF" and pdf.first.image_tokens <= 256
    text = report.markdown()
    assert "| user-seen tok/s (`kimi ask` path, plain renderer) |" in text and "| pdf, warm run |" in text
    data = json.loads(json.dumps(report.to_json()))
    assert [r["kind"] for r in data["seen"]] == list(seen.KINDS)
    assert data["seen"][0]["ratio"] == pytest.approx(report.seen[0].ratio)
    assert not any(t["target"].startswith("user-seen") for t in data["targets"])  # plain is not our engine


def test_report_rows_and_target():
    row = SeenRow("pdf", "20-page PDF", "fast", 512, decode_context=16_452, decode_tokens_per_s=380.0,
                  replay_tokens_per_s=400.0)
    row.first = SeenRun(tokens_per_s=58.0, shown=512, prompt_tokens=16_196, capture_s=1.5, first_token_s=2.1)
    row.warm = SeenRun(tokens_per_s=342.0, shown=512, prompt_tokens=16_196, first_token_s=2.0, gap_max_ms=9.0,
                       gap_max_after=1)
    report = BenchReport(env={}, options={}, seen=[row])
    text = report.markdown()
    assert ("| pdf: 20-page PDF | fast | 16196 | 512 | 58.0 | 342.0 | 380.0 (16452) | 400.0 | 0.90 | 1.50 "
            "| 2.10 / 2.00 |") in text
    assert "| pdf, warm run | - | - | 9.0 (1) | - | - |  |" in text
    (target,) = [t for t in report.targets() if t["target"].startswith("user-seen")]
    assert target["met"] is True and target["result"] == pytest.approx(0.9)


@pytest.mark.slow
def test_bench_cli_runs_the_stage(tiny_checkpoint, tmp_path: Path, capsys):
    from kimi_cli.cli import main

    out = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as info:
        main(["bench", "--model", str(tiny_checkpoint), "--engines", "plain", "--contexts", "32", "--tokens", "4",
              "--image-size", "56", "--reps", "1", "--fresh-runs", "0", "--seen", "image", "--seen-tokens", "6",
              "--json", str(out)])
    assert info.value.code == 0
    assert "| image: PNG bench-56x56.png | plain |" in capsys.readouterr().out
    (row,) = json.loads(out.read_text())["seen"]
    assert row["warm"]["shown"] <= 6 and row["warm"]["tokens_per_s"] > 0 and row["decode_context"] > 0


def test_auto_runs_no_user_seen_stage_on_the_plain_path():
    from kimi_cli.bench.runner import BenchOptions, seen_kinds

    assert seen_kinds(BenchOptions(engines=("plain",))) == ()
    assert seen_kinds(BenchOptions(engines=("plain",), seen=("pdf",))) == ("pdf",)
    assert seen_kinds(BenchOptions(seen=("pdf",), seen_tokens=0)) == ()
