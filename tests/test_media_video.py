"""Videos through decord, encoded at test time by a real ffmpeg in several codecs and containers."""

from __future__ import annotations

import pytest
from media_fixtures import (
    VIDEO_FPS,
    VIDEO_SECONDS,
    MediaSet,
    audio_only_mp4,
    encode_video,
    frame_number,
    truncated,
    zero_frame_video,
)

from kimi_cli.errors import EXIT_MEDIA, MediaError
from kimi_cli.media.detect import detect
from kimi_cli.media.video import probe_video, read_frames

CODECS = [
    ("h264.mp4", "libx264", "MP4"),
    ("vp9.webm", "libvpx-vp9", "Matroska/WebM"),
    ("mjpeg.avi", "mjpeg", "AVI"),
    ("mpeg4.mov", "mpeg4", "MP4"),  # ffmpeg writes MOV with brand "qt  " only for -f mov + qt tag
    ("mpeg2.ts", "mpeg2video", "MPEG-TS"),
    ("mjpeg.mkv", "mjpeg", "Matroska/WebM"),
]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> MediaSet:
    return MediaSet(tmp_path_factory.mktemp("video"))


@pytest.mark.parametrize(("name", "codec", "container"), CODECS, ids=[c[0] for c in CODECS])
def test_codecs_and_containers_decode(media: MediaSet, name: str, codec: str, container: str) -> None:
    path = str(media.video(name, codec))
    assert detect(path).kind == "video"
    assert detect(path).format in (container, "MOV")
    info = probe_video(path, name)
    assert info.size == (64, 48)
    assert info.fps == pytest.approx(VIDEO_FPS, rel=0.01)
    assert info.n_frames == VIDEO_SECONDS * VIDEO_FPS
    assert info.duration == pytest.approx(VIDEO_SECONDS, abs=0.11)
    frames, failed = read_frames(path, name, [0, 10, 20])
    assert failed == []
    # decord seeks MPEG-TS by timestamp and can land one frame late there.
    slack = 1 if container == "MPEG-TS" else 0
    for (_, image), wanted in zip(frames, [0, 10, 20], strict=True):
        assert wanted <= frame_number(image) <= wanted + slack


def test_frame_times_are_read(media: MediaSet) -> None:
    info = probe_video(str(media.video()), "clip.mp4")
    assert info.starts[:3].tolist() == pytest.approx([0.0, 0.1, 0.2])


def test_decoder_scales_to_the_asked_size(media: MediaSet) -> None:
    frames, _ = read_frames(str(media.video()), "clip.mp4", [5], (32, 24))
    ((index, image),) = frames
    assert index == 5 and image.size == (32, 24) and image.mode == "RGB"
    assert frame_number(image) == 5


def test_truncated_mp4_is_corrupt(media: MediaSet) -> None:
    path = media.get("cut.mp4", lambda p: truncated(p, media.video(), 0.6))
    with pytest.raises(MediaError) as info:
        probe_video(str(path), "cut.mp4")
    assert info.value.message.startswith("cut.mp4: ")
    assert "truncated" in info.value.message
    assert "ffmpeg -i cut.mp4" in info.value.hint
    assert info.value.exit_code == EXIT_MEDIA


def test_native_decoder_noise_stays_off_stderr(media: MediaSet, capfd) -> None:
    path = media.get("cut.mp4", lambda p: truncated(p, media.video(), 0.6))
    with pytest.raises(MediaError):
        probe_video(str(path), "cut.mp4")
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    ("name", "codec", "fragment"),
    [
        ("empty.avi", "mjpeg", "no decodable frames"),
        ("empty.mp4", "libx264", "no video stream could be read"),
    ],
)
def test_zero_frame_videos(tmp_path, name: str, codec: str, fragment: str) -> None:
    path = zero_frame_video(tmp_path / name, codec)
    with pytest.raises(MediaError) as info:
        probe_video(str(path), name)
    assert fragment in info.value.message and info.value.message.startswith(f"{name}: ")


def test_audio_only_mp4(tmp_path) -> None:
    path = audio_only_mp4(tmp_path / "voice.mp4")
    with pytest.raises(MediaError, match=r"^voice.mp4: no video stream"):
        probe_video(str(path), "voice.mp4")


def test_av1_is_named_when_decord_cannot_decode_it(tmp_path) -> None:
    try:
        path = encode_video(tmp_path / "av1.mp4", "libaom-av1", seconds=0.3)
    except Exception:  # noqa: BLE001 - an ffmpeg build without libaom
        pytest.skip("this ffmpeg cannot encode AV1")
    try:
        info = probe_video(str(path), "av1.mp4")
    except MediaError as exc:
        assert exc.message == "av1.mp4: AV1 video cannot be decoded by decord's FFmpeg"
        assert "libx264" in (exc.hint or "")
    else:  # a decord build with AV1 support is fine too
        assert info.n_frames > 0
