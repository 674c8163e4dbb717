"""The input planner: budget sharing, notes, mixed inputs in order, the dry-run plan, loading."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from media_fixtures import (
    MediaSet,
    animated_gif,
    encode_video,
    exif_rotated_jpeg,
    fpdf_document,
    frame_number,
)
from PIL import Image

from kimi_cli.errors import EXIT_USAGE, UsageError
from kimi_cli.media.options import (
    DEFAULT_FPS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_MAX_IMAGE_TOKENS,
    DEFAULT_MAX_PAGES,
    MediaOptions,
)
from kimi_cli.media.sources import InputSpec, split_spec
from kimi_cli.media.types import ImagePart, TextPart
from kimi_cli.model.image_processor import ProcessorConfig, plan_image
from kimi_cli.plan import estimate_text_tokens, fair_shares, load_inputs, load_plan, make_plan, plan_to_dict


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> MediaSet:
    return MediaSet(tmp_path_factory.mktemp("plan"))


def _photo(media: MediaSet, name: str = "photo.png", size: tuple[int, int] = (1000, 700)) -> str:
    return str(media.get(name, lambda p: Image.new("RGB", size, (90, 120, 200)).save(p)))


def _long_pdf(media: MediaSet) -> str:
    return str(media.get("long.pdf", lambda p: fpdf_document(p, pages=25)))


@pytest.mark.parametrize(
    ("demands", "floors", "budget", "shares"),
    [
        ([100, 200], [0, 0], 1000, [100, 200]),  # everything fits
        ([4096, 20000], [64, 64], 16384, [4096, 12288]),  # the small one keeps all it asks for
        ([1000, 1000, 1000], [0, 0, 0], 900, [300, 300, 300]),
        ([50, 1000], [64, 64], 300, [50, 250]),  # a floor never exceeds the demand
        ([1000, 1000], [400, 100], 600, [400, 200]),
        ([], [], 10, []),
    ],
)
def test_fair_shares(demands: list[int], floors: list[int], budget: int, shares: list[int]) -> None:
    assert fair_shares(demands, floors, budget) == shares


def test_fair_shares_floors_over_budget() -> None:
    with pytest.raises(ValueError):
        fair_shares([100, 100], [64, 64], 100)


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [("Page 3 of 12:", 4, 7), ("[00:01:05]", 6, 8), ("", 0, 0), ("描述这张图片", 6, 6)],
)
def test_estimate_text_tokens(text: str, low: int, high: int) -> None:
    assert low <= estimate_text_tokens(text) <= high


def test_options_defaults_and_from_flags() -> None:
    options = MediaOptions.from_flags(
        pages=None, fps=None, max_frames=8, time_range=None, max_image_tokens=None
    )
    assert options == MediaOptions(max_frames=8)
    assert (options.fps, options.max_pages, options.max_image_tokens) == (
        DEFAULT_FPS,
        DEFAULT_MAX_PAGES,
        DEFAULT_MAX_IMAGE_TOKENS,
    )
    assert DEFAULT_MAX_FRAMES * 512 == DEFAULT_MAX_IMAGE_TOKENS  # the documented reasoning holds


@pytest.mark.parametrize(
    "flags",
    [
        {"fps": 0},
        {"fps": -1},
        {"fps": float("nan")},
        {"fps": 1000},
        {"max_frames": 0},
        {"max_pages": 0},
        {"max_image_tokens": 10},
        {"max_image_tokens": 10**6},
        {"pages": " "},
        {"time_range": "2-1"},
    ],
)
def test_bad_options_are_usage_errors(flags: dict[str, object]) -> None:
    with pytest.raises(UsageError) as info:
        MediaOptions(**flags)  # type: ignore[arg-type]
    assert info.value.exit_code == EXIT_USAGE and info.value.hint


def test_split_spec(media: MediaSet, tmp_path) -> None:
    pdf = str(media.pdf())
    assert split_spec(f"{pdf}:1-2,3") == InputSpec(f"{pdf}:1-2,3", pdf, "1-2,3")
    assert split_spec(pdf) == InputSpec(pdf, pdf)
    assert split_spec("notes:draft") == InputSpec("notes:draft", "notes:draft")  # not a page list
    odd = tmp_path / "odd:1-2"  # a file whose real name ends like a selection is kept whole
    odd.write_bytes(b"x")
    assert split_spec(str(odd)).pages is None


def test_mixed_inputs_keep_their_order(media: MediaSet) -> None:
    specs = [
        str(media.pdf()) + ":2",
        str(media.video()),
        _photo(media),
        str(media.get("anim.gif", animated_gif)),
    ]
    items = load_inputs(specs, MediaOptions(fps=2))
    assert [item.kind for item in items] == ["pdf", "video", "image", "animation"]
    pdf, video, photo, anim = items
    assert [p.text for p in pdf.parts if isinstance(p, TextPart)] == ["Page 2 of 3:"]
    labels = [p.text for p in video.parts if isinstance(p, TextPart)]
    assert labels == [
        "[00:00:00.0]",
        "[00:00:00.5]",
        "[00:00:01.0]",
        "[00:00:01.5]",
        "[00:00:02.0]",
        "[00:00:02.5]",
    ]
    frames = [p.image for p in video.parts if isinstance(p, ImagePart)]
    assert [frame_number(f) for f in frames] == [0, 5, 10, 15, 20, 25]
    assert isinstance(video.parts[0], TextPart) and isinstance(video.parts[1], ImagePart)  # label first
    assert len(photo.parts) == 1 and photo.parts[0].image.size == (1000, 700)  # type: ignore[union-attr]
    # 2 fps over a 1 s GIF: t=0 and t=0.5, the latter inside the frame that starts at 0.3 s.
    assert [p.text for p in anim.parts if isinstance(p, TextPart)] == ["[00:00:00.0]", "[00:00:00.3]"]


def test_default_video_sampling_is_one_per_second(media: MediaSet) -> None:
    (item,) = make_plan([str(media.video())]).inputs
    assert [image.label for image in item.images] == ["[00:00:00]", "[00:00:01]", "[00:00:02]"]


def test_max_frames_caps_with_a_note(media: MediaSet) -> None:
    path = str(media.video())
    plan = make_plan([path], MediaOptions(fps=10, max_frames=4))
    assert len(plan.inputs[0].images) == 4
    assert plan.notes == (
        f"{path}: 00:00:03.0 at 10 fps would be 30 frames; took 4 evenly spaced, one every "
        "0.8 s (raise --max-frames or narrow --range for more)",
    )


def test_time_range_selects_and_a_late_end_is_noted(media: MediaSet) -> None:
    path = str(media.video())
    plan = make_plan([path], MediaOptions(time_range="1-9"))
    assert [image.label for image in plan.inputs[0].images] == ["[00:00:01]", "[00:00:02]"]
    assert "--range ends at 00:00:09" in plan.notes[0]


def test_long_pdf_is_capped_with_a_note(media: MediaSet) -> None:
    path = _long_pdf(media)
    plan = make_plan([path])
    images = plan.inputs[0].images
    assert [image.label for image in images][:2] == ["Page 1 of 25:", "Page 2 of 25:"]
    assert len(images) == DEFAULT_MAX_PAGES
    assert plan.notes[0] == (
        f"{path}: 25 pages, kept 1-20; pages 21-25 left out (choose pages with --pages 21-25 or {path}:21-25)"
    )


def test_explicit_pages_are_not_capped(media: MediaSet) -> None:
    plan = make_plan([_long_pdf(media)], MediaOptions(pages="1-25", max_pages=5))
    assert len(plan.inputs[0].images) == 25


def test_budget_lowers_inputs_and_says_so(media: MediaSet) -> None:
    photo = _photo(media, "big.png", (4000, 3000))
    pdf = _long_pdf(media)
    plan = make_plan([photo, pdf], MediaOptions(max_image_tokens=8000))
    assert plan.image_tokens <= 8000
    photo_item, pdf_item = plan.inputs
    assert photo_item.tokens <= 4000 and pdf_item.tokens <= 4000  # fair between inputs
    assert any(n.startswith(f"{photo}: lowered from 4200 to") for n in plan.notes)
    assert any(n.startswith(f"{pdf}: 20 page(s) lowered to at most") and "dpi" in n for n in plan.notes)


def test_pdf_pages_are_rendered_at_the_planned_size(media: MediaSet) -> None:
    plan = make_plan([_long_pdf(media) + ":1-2"], MediaOptions(max_image_tokens=1000))
    (item,) = load_plan(plan)
    rendered = [p for p in item.parts if isinstance(p, ImagePart)]
    for part, planned in zip(rendered, plan.inputs[0].images, strict=True):
        assert part.image.size == planned.target.size
        assert part.max_tokens == planned.target.max_tokens
        # What the model's processor will do with the image agrees with the plan.
        assert plan_image(*part.image.size, ProcessorConfig(), part.max_tokens) == planned.geometry
    assert plan.image_tokens <= 1000


def test_video_frames_are_decoded_at_the_planned_size(media: MediaSet) -> None:
    path = str(media.get("wide.mp4", lambda p: encode_video(p, "libx264", size="640x360")))
    plan = make_plan([path], MediaOptions(max_image_tokens=3 * 64))
    (item,) = load_plan(plan)
    sizes = {p.image.size for p in item.parts if isinstance(p, ImagePart)}
    assert sizes == {plan.inputs[0].images[0].target.size}
    assert plan.inputs[0].images[0].tokens <= 64
    assert "frames lowered from 299 to at most" in plan.notes[-1]


def test_too_many_images_for_the_budget(media: MediaSet) -> None:
    with pytest.raises(UsageError) as info:
        make_plan([_long_pdf(media)], MediaOptions(pages="1-25", max_image_tokens=1000))
    assert (
        info.value.message
        == "25 images need at least 1600 image tokens (64 each), over --max-image-tokens 1000"
    )


def test_plan_to_dict_is_json(media: MediaSet) -> None:
    plan = make_plan([str(media.pdf()) + ":1", _photo(media)], prompt="Compare these.")
    data = json.loads(json.dumps(plan_to_dict(plan)))
    assert data["image_tokens"] == plan.image_tokens == sum(i["image_tokens"] for i in data["inputs"])
    assert data["total_tokens"] == plan.image_tokens + plan.text_tokens + plan.prompt_tokens
    first = data["inputs"][0]
    assert first["kind"] == "pdf" and first["images"][0]["label"] == "Page 1 of 3:"
    assert first["images"][0]["size"] == [1191, 1684]  # A4 at 144 dpi
    assert data["inputs"][1]["images"][0]["tokens"] == 900  # facts section 5: 1000x700 -> 900


def test_exact_token_counter_is_used(media: MediaSet) -> None:
    plan = make_plan([str(media.video())], prompt="abc", count_tokens=lambda text: 100)
    assert plan.text_tokens == 3 * (100 + 4)
    assert plan.prompt_tokens == 16 + 100


def test_display_name_for_a_temporary_copy(media: MediaSet) -> None:
    spec = InputSpec("-", str(media.get("turned.jpg", exif_rotated_jpeg)), name="stdin")
    (item,) = load_inputs([spec])
    assert item.path == "stdin"
    assert item.parts[0].source == "stdin"  # type: ignore[union-attr]


def test_planning_imports_no_torch(media: MediaSet) -> None:
    specs = [str(media.pdf()), str(media.video()), _photo(media)]
    code = (
        "import sys, json; from kimi_cli.plan import make_plan, load_plan, plan_to_dict\n"
        f"plan = make_plan({specs!r}); load_plan(plan); json.dumps(plan_to_dict(plan))\n"
        "bad = [m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=60)


def test_geometry_is_planned_once_and_reused_by_preprocessing(media: MediaSet) -> None:
    from kimi_cli.model.image_processor import prepare_canvases

    cfg = ProcessorConfig()
    specs = [_photo(media, "big.png", (3000, 2000)), str(media.pdf()) + ":1", str(media.video())]
    plan = make_plan(specs, MediaOptions(max_image_tokens=4096), cfg)
    planned = [image.geometry for item in plan.inputs for image in item.images]
    parts = [p for item in load_plan(plan) for p in item.parts if isinstance(p, ImagePart)]
    assert [p.geometry for p in parts] == planned
    assert all(p.geometry is g for p, g in zip(parts, planned, strict=True))
    assert all(p.image.size == g.original for p, g in zip(parts, planned, strict=True))
    canvases, used = prepare_canvases([p.image for p in parts], cfg, [p.max_tokens for p in parts],
                                      [p.geometry for p in parts])
    assert all(u is g for u, g in zip(used, planned, strict=True))  # not decided again
    assert [c.shape[:2] for c in canvases] == [(g.padded[1], g.padded[0]) for g in planned]


def test_planned_geometry_is_not_reused_under_another_config(media: MediaSet) -> None:
    from kimi_cli.model.image_processor import prepare_canvases

    plan = make_plan([_photo(media, "big.png", (3000, 2000))], processor=ProcessorConfig())
    (part,) = [p for p in load_plan(plan)[0].parts if isinstance(p, ImagePart)]
    other = ProcessorConfig(in_token_limit=1024)
    _, (used,) = prepare_canvases([part.image], other, [part.max_tokens], [part.geometry])
    assert used is not part.geometry and used == plan_image(*part.image.size, other, part.max_tokens)


def test_processor_config_comes_from_the_checkpoint_directory(tmp_path) -> None:
    from kimi_cli.model.image_processor import processor_config_for

    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"in_token_limit": 4096}))
    assert processor_config_for(str(tmp_path)).in_token_limit == 4096
    assert processor_config_for(str(tmp_path / "absent")) == ProcessorConfig()
