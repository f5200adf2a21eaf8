"""models/media.py against real files: encode with PyAV/PIL, decode them back, check what a player would see."""
from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from kinema.models import media
from kinema.models.media import VideoFormat

F, H, W = 12, 48, 64
SQUARE = (1.0, 0.2, 0.1)  # moving square's colour
BACK = (0.1, 0.3, 0.9)    # background


def clip(n: int = F, h: int = H, w: int = W) -> tuple[torch.Tensor, torch.Tensor]:
    """A coloured square moving right on a blue background; opacity 0 on the left 8 columns of even frames."""
    frames = torch.empty(n, h, w, 3)
    frames[:] = torch.tensor(BACK)
    alpha = torch.ones(n, h, w)
    for i in range(n):
        frames[i, 12:36, 2 * i:2 * i + 20] = torch.tensor(SQUARE)
        if i % 2 == 0:
            alpha[i, :, :8] = 0.0
    return frames, alpha


def square_center(i: int) -> tuple[int, int]:
    return 24, 2 * i + 10


def files_in(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---- naming and atomic writes --------------------------------------------------------------------------------

def test_next_output_path_counts_like_comfyui(tmp_path):
    p1 = media.next_output_path(tmp_path, "Kinema/video", "mp4")
    assert p1 == tmp_path / "Kinema" / "video_00001_.mp4"
    p1.parent.mkdir()
    p1.write_bytes(b"x")
    (tmp_path / "Kinema" / "video_00007_.webp").write_bytes(b"x")  # any extension advances the counter
    (tmp_path / "Kinema" / "videoclip_00099_.mp4").write_bytes(b"x")  # another prefix does not
    assert media.next_output_path(tmp_path, "Kinema/video", "mp4").name == "video_00008_.mp4"
    assert media.next_output_path(tmp_path, "clip", "gif") == tmp_path / "clip_00001_.gif"
    for bad in ("../escape", "/etc/video", "Kinema/", ""):
        with pytest.raises(ValueError, match="`filename_prefix`"):
            media.next_output_path(tmp_path, bad, "mp4")


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "a.txt"
    with media.atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".")
        tmp.write_text("done")
    assert target.read_text() == "done" and files_in(tmp_path) == ["a.txt"]
    with pytest.raises(RuntimeError):
        with media.atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "done" and files_in(tmp_path) == ["a.txt"]


@pytest.mark.parametrize("fmt", list(VideoFormat))
def test_failure_mid_encode_leaves_nothing(tmp_path, monkeypatch, fmt):
    frames, _ = clip()
    real, calls = media._to_uint8, []

    def flaky(x):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("interrupted mid-encode")
        return real(x)

    monkeypatch.setattr(media, "_to_uint8", flaky)
    with pytest.raises(RuntimeError, match="mid-encode"):
        media.save_video(frames, tmp_path / f"v.{fmt.value}", 16, fmt)
    assert files_in(tmp_path) == []


# ---- writers: real decode -------------------------------------------------------------------------------------

def test_mp4_exact_frames_fps_size_colours(tmp_path, decode_video):
    frames, _ = clip()
    path = media.save_video(frames, tmp_path / "v.mp4", 16, "mp4")
    info = media.read_video_info(path)
    assert (info.codec, info.frames, info.fps, info.width, info.height) == ("h264", F, 16.0, W, H)
    assert not info.has_alpha and info.audio is None and info.start_time == 0
    with av.open(str(path)) as c:
        decoded = [f for f in c.decode(video=0)]
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert len(decoded) == F and [f.pts for f in decoded] == sorted(f.pts for f in decoded)
    got, _ = decode_video(path)
    for i in range(F):
        y, x = square_center(i)
        assert torch.allclose(got[i, y, x], torch.tensor(SQUARE), atol=0.06)
        assert torch.allclose(got[i, 4, 60], torch.tensor(BACK), atol=0.06)


def test_mp4_fractional_fps_and_odd_size(tmp_path, decode_video):
    frames, _ = clip(7, 31, 45)
    path = media.save_video(frames, tmp_path / "v.mp4", 30000 / 1001, "mp4")
    info = media.read_video_info(path)
    assert info.frames == 7 and (info.width, info.height) == (46, 32)  # padded by one edge pixel, not resized
    assert info.fps == pytest.approx(30000 / 1001, rel=1e-6)
    got, _ = decode_video(path)
    assert torch.allclose(got[:, 5, 45], got[:, 5, 44], atol=0.05)  # the pad repeats the last column
    with pytest.raises(ValueError, match="even width and height"):
        media.save_video(frames, tmp_path / "w.mp4", 16, "mp4", odd_size="error")
    assert files_in(tmp_path) == ["v.mp4"]


def test_mp4_refuses_transparency(tmp_path):
    frames, alpha = clip()
    with pytest.raises(ValueError, match="`format` cannot store transparency"):
        media.save_video(frames, tmp_path / "v.mp4", 16, "mp4", alpha=alpha)
    media.save_video(frames, tmp_path / "v.mp4", 16, "mp4", alpha=torch.ones(1, H, W))  # opaque is fine


def test_webm_alpha(tmp_path, decode_video):
    frames, alpha = clip()
    path = media.save_video(frames, tmp_path / "v.webm", 16, "webm", alpha=alpha)
    info = media.read_video_info(path)
    assert (info.codec, info.frames, info.fps, info.width, info.height, info.has_alpha) == ("vp9", F, 16.0, W, H, True)
    got, opacity = decode_video(path)
    assert got.shape == (F, H, W, 3) and opacity.shape == (F, H, W)
    assert (opacity - alpha).abs().amax() < 0.1
    y, x = square_center(5)
    assert torch.allclose(got[5, y, x], torch.tensor(SQUARE), atol=0.08)
    media.save_video(frames, tmp_path / "o.webm", 16, "webm")
    assert not media.read_video_info(tmp_path / "o.webm").has_alpha


def test_webp_alpha_loop_durations_and_identical_frames(tmp_path, decode_video):
    frames, alpha = clip()
    frames[6:9] = frames[5]  # a hold: identical consecutive frames must survive (libwebp's writer merges them)
    alpha[6:9] = alpha[5]
    path = media.save_video(frames, tmp_path / "v.webp", 16, "webp", alpha=alpha)
    info = media.read_video_info(path)
    assert (info.frames, info.width, info.height, info.has_alpha, info.loop) == (F, W, H, True, 0)
    assert set(info.frame_durations_ms) == {62, 63} and sum(info.frame_durations_ms) == round(F * 1000 / 16)
    got, opacity = decode_video(path)
    assert (opacity - alpha).abs().amax() < 0.02
    for i in range(F):
        y, x = square_center(i if i < 6 or i > 8 else 5)
        assert torch.allclose(got[i, y, x], torch.tensor(SQUARE), atol=0.08)
    once = media.save_video(frames, tmp_path / "once.webp", 16, "webp", loop=1, lossless=True)
    assert media.read_video_info(once).loop == 1 and not media.read_video_info(once).has_alpha
    assert torch.equal(decode_video(once)[0], (frames * 255).round() / 255)  # lossless is exact


def test_gif_transparency_loop_and_identical_frames(tmp_path, decode_video):
    frames, alpha = clip()
    frames[3:6] = frames[2]
    alpha[3:6] = alpha[2]
    path = media.save_video(frames, tmp_path / "v.gif", 12.5, "gif", alpha=alpha)
    info = media.read_video_info(path)
    assert (info.frames, info.width, info.height, info.has_alpha, info.loop) == (F, W, H, True, 0)
    assert info.frame_durations_ms == (80,) * F and info.fps == pytest.approx(12.5)
    got, opacity = decode_video(path)
    assert torch.equal(opacity, alpha)  # 1-bit alpha, exact for a 0/1 mask
    for i in range(F):
        y, x = square_center(i if i < 3 or i > 5 else 2)
        assert torch.allclose(got[i, y, x], torch.tensor(SQUARE), atol=0.08)
    media.save_video(frames, tmp_path / "once.gif", 16, "gif", loop=1)
    with Image.open(tmp_path / "once.gif") as im:
        assert "loop" not in im.info and im.n_frames == F
    assert not media.read_video_info(tmp_path / "once.gif").has_alpha
    starts = np.cumsum((0,) + media.read_video_info(tmp_path / "once.gif").frame_durations_ms)
    assert np.abs(starts - np.arange(F + 1) * 1000 / 16).max() <= 5  # delays in 10 ms units never drift
    with pytest.raises(ValueError, match="`fps` must be at most 50 for gif"):
        media.save_video(frames, tmp_path / "fast.gif", 60, "gif")


@pytest.mark.parametrize("fmt,codec,rate", [("mp4", "aac", 44100), ("webm", "opus", 48000)])
def test_audio_muxed_to_exact_length(tmp_path, fmt, codec, rate):
    frames, _ = clip()
    sr = 44100
    t = torch.arange(int(sr * 1.7)) / sr  # longer than the video: trimmed
    audio = {"waveform": (0.3 * torch.sin(2 * math.pi * 440 * t))[None, None].repeat(1, 2, 1), "sample_rate": sr}
    path = media.save_video(frames, tmp_path / f"v.{fmt}", 16, fmt, audio=audio)
    info = media.read_video_info(path)
    assert info.frames == F and info.audio is not None
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == (codec, rate, 2)
    assert info.start_time == 0 and info.audio.start_time == 0
    assert abs(info.audio.duration - F / 16) < 1 / 16
    short = {"waveform": audio["waveform"][..., :sr // 10], "sample_rate": sr}  # shorter: padded with silence
    info = media.read_video_info(media.save_video(frames, tmp_path / f"s.{fmt}", 16, fmt, audio=short))
    assert abs(info.audio.duration - F / 16) < 1 / 16
    with pytest.raises(ValueError, match="`audio` cannot be stored in gif"):
        media.save_video(frames, tmp_path / "a.gif", 16, "gif", audio=audio)


def test_metadata_tags(tmp_path):
    frames, _ = clip(3)
    tags = {"prompt": '{"1": {}}', "workflow": '{"nodes": []}'}
    with av.open(str(media.save_video(frames, tmp_path / "v.mp4", 16, "mp4", metadata=tags))) as c:
        assert c.metadata["workflow"] == tags["workflow"]
    with Image.open(media.save_video(frames, tmp_path / "v.webp", 16, "webp", metadata=tags)) as im:
        assert im.getexif()[0x0110] == "prompt:" + tags["prompt"]
        assert im.getexif()[0x010F] == "workflow:" + tags["workflow"]


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(H, W, 3), "4-D IMAGE"),
    (torch.zeros(2, 3, H, W), "3 \\(RGB\\) or 4 \\(RGBA\\) channels"),
    (torch.zeros(0, H, W, 3), "at least one frame"),
])
def test_bad_frames_rejected(tmp_path, bad, match):
    with pytest.raises(ValueError, match="`images` must .*" + match):
        media.save_video(bad, tmp_path / "v.mp4", 16, "mp4")
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("fps", [0, -1, float("nan"), float("inf")])
def test_bad_fps_rejected(tmp_path, fps):
    with pytest.raises(ValueError, match="`fps` must be a number of frames per second above 0"):
        media.save_video(torch.zeros(2, 8, 8, 3), tmp_path / "v.webm", fps, "webm")


def test_bad_format_and_mask(tmp_path):
    frames, _ = clip(2)
    with pytest.raises(ValueError, match="`format` must be one of"):
        media.save_video(frames, tmp_path / "v.avi", 16, "avi")
    with pytest.raises(ValueError, match="`alpha` must be"):
        media.save_video(frames, tmp_path / "v.webm", 16, "webm", alpha=torch.ones(2, 10, 10))
    assert media.check_fps("fps", 23.976) == Fraction(2997, 125)


# ---- images in ------------------------------------------------------------------------------------------------

def test_load_image_rgba_gives_comfyui_mask(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[5:10, :, 3] = 0
    rgba[10:12, :, 3] = 64
    Image.fromarray(rgba).save(tmp_path / "s.png")
    image, mask = media.load_image(tmp_path / "s.png")
    assert image.shape == (1, 20, 30, 3) and image.dtype == torch.float32 and mask.shape == (1, 20, 30)
    assert torch.allclose(image[0, 0, 0], torch.tensor([200 / 255, 0, 0]))
    assert mask[0, 0, 0] == 0 and mask[0, 6, 3] == 1 and mask[0, 11, 0] == pytest.approx(1 - 64 / 255)


def test_load_image_without_alpha_and_exif(tmp_path):
    im = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    im.save(tmp_path / "r.jpg", exif=exif.tobytes())
    image, mask = media.load_image(tmp_path / "r.jpg")
    assert image.shape == (1, 40, 20, 3) and mask.shape == (1, 40, 20) and not mask.any()


def test_load_image_16_bit(tmp_path):
    Image.fromarray(np.full((6, 7), 65535 // 4, np.uint16)).save(tmp_path / "d.png")
    image, mask = media.load_image(tmp_path / "d.png")
    assert image.shape == (1, 6, 7, 3) and torch.allclose(image, torch.full_like(image, 0.25), atol=1e-4)
    assert not mask.any()


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        media.load_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="`image` must be a readable image file.*bad.png.*re-save it"):
        media.load_image(tmp_path / "bad.png")


# ---- keying and compositing -----------------------------------------------------------------------------------

def test_chroma_key_recovers_known_alpha():
    gen = torch.Generator().manual_seed(0)
    n, h, w = 4, 40, 40
    truth = torch.zeros(n, h, w)  # 1 = foreground
    fg = torch.zeros(n, h, w, 3)
    for i in range(n):
        truth[i, 8 + i:28 + i, 10:30] = 1
        fg[i, ..., :] = torch.tensor([0.8, 0.5, 0.4]) if i % 2 else torch.tensor([0.2, 0.3, 0.9])
    screen = torch.tensor([0.1, 0.8, 0.15]) * (0.6 + 0.4 * torch.rand(n, h, w, 1, generator=gen))  # uneven light
    frames = (truth[..., None] * fg + (1 - truth[..., None]) * screen).clamp(0, 1)
    frames = (frames + 0.02 * torch.randn(frames.shape, generator=gen)).clamp(0, 1)
    out, mask = media.chroma_key(frames, media.parse_hex_color("key_color", "#1acc26"), 0.15, 0.1)
    assert out.shape == frames.shape and mask.shape == (n, h, w)
    assert (mask - (1 - truth)).abs().mean() < 0.01
    assert ((mask > 0.5) != (truth < 0.5)).float().mean() < 0.005
    spilled = torch.tensor([[[[0.5, 0.7, 0.4]]]])  # a foreground pixel with green spill
    clean, _ = media.chroma_key(spilled, (0, 1, 0), 0.15, 0.1, despill=1.0)
    assert torch.allclose(clean[0, 0, 0], torch.tensor([0.5, 0.5, 0.4]))


def test_composite_on_color_and_colours():
    image = torch.full((3, 4, 5, 3), 0.5)
    mask = torch.zeros(1, 4, 5)
    mask[0, :, :2] = 1.0
    mask[0, :, 2] = 0.5
    out = media.composite_on_color(image, mask, (0, 1, 0))
    assert out.shape == (3, 4, 5, 3)
    assert torch.equal(out[:, :, 0], torch.tensor([0.0, 1.0, 0.0]).expand(3, 4, 3))
    assert torch.allclose(out[1, 0, 2], torch.tensor([0.25, 0.75, 0.25]))
    assert torch.equal(out[:, :, 4], image[:, :, 4])
    with pytest.raises(ValueError, match="`mask` must be a MASK"):
        media.composite_on_color(image, torch.zeros(1, 8, 8), (0, 1, 0))
    assert media.parse_hex_color("c", "#0F0") == (0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="`color` must be a hex colour"):
        media.parse_hex_color("color", "green")


def test_resize_frames_sizes_methods_and_mask():
    frames = torch.rand(3, 32, 30, 4)
    mask = (torch.rand(1, 32, 30) > 0.5).float()
    out, m = media.resize_frames(frames, 8.0, "nearest", mask)
    assert out.shape == (3, 256, 240, 4) and m.shape == (1, 256, 240)
    assert torch.equal(out[:, ::8, ::8], frames) and torch.equal(m[:, ::8, ::8], mask)   # hard pixels kept
    small, none = media.resize_frames(frames, 0.33, "area")
    assert small.shape == (3, 10, 10, 4) and none is None                                 # even sizes
    assert torch.allclose(small.mean(), frames.mean(), atol=0.02)                         # averaging
    smooth, _ = media.resize_frames(frames, 2.0, "bicubic")
    assert smooth.min() >= 0 and smooth.max() <= 1                                        # overshoot clamped
    with pytest.raises(ValueError, match="`method`"):
        media.resize_frames(frames, 2.0, "lanczos9")
    with pytest.raises(ValueError, match="`mask`"):
        media.resize_frames(frames, 2.0, "bilinear", torch.zeros(2, 32, 30))


@pytest.mark.parametrize("rate,fps", [(44100, 16.0), (48000, 23.976), (16000, 16.0), (22050, 29.97)])
def test_mp4_sound_track_lasts_exactly_frames_over_fps(tmp_path, rate, fps):
    """AAC's priming and padding are trimmed by edit lists counted in the movie timescale: Kinema sets it so that
    the track lasts the exact sample count of frames / fps (ffmpeg's default 1000 left it up to ~0.5 ms off)."""
    frames, _ = clip()
    want = round(F / media.check_fps("fps", fps) * rate)
    audio = {"waveform": 0.1 * torch.randn(1, 2, want + 999), "sample_rate": rate}
    path = media.save_video(frames, tmp_path / "v.mp4", fps, "mp4", audio=audio)
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        assert s.duration * s.time_base * rate == want and s.start_time == 0
