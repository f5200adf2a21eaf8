"""Media file I/O: images in, videos out, with atomic writes and ComfyUI's file naming.

- mp4  (H.264 via PyAV/libx264, yuv420p, AAC audio) - plays everywhere, no alpha.
- webm (VP9 via PyAV/libvpx-vp9, yuva420p when there is alpha, Opus audio).
- webp (animated, looping, 8-bit alpha) and gif (looping, 1-bit transparency): written frame by frame here, because
  the stock PIL/libwebp animation writers merge identical consecutive frames, which would change the frame count.
- chroma keying and flat-colour compositing for stickers.

Frame counts are never changed and durations never drift: mp4/webm carry one timestamp per frame at the exact fps
(as a fraction); webp/gif carry integer per-frame delays chosen so that frame i starts at round(i / fps) in the
format's unit (1 ms for webp, 10 ms for gif). So single delays differ by one unit (16 fps -> 62, 63, 62, 63 ms) but
the total stays within half a unit of frames / fps.

Plain torch / numpy / PIL / av: nothing here imports ComfyUI, the nodes or a host.
"""
from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import re
import sys
import uuid
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import av
import numpy as np
import torch
from torch.nn import functional as F
from PIL import GifImagePlugin, Image, ImageOps, UnidentifiedImageError

from .checks import check_choice, check_range, fail


class VideoFormat(str, Enum):
    MP4 = "mp4"    # H.264 yuv420p + AAC; no alpha; even sizes (odd ones are padded by one edge pixel)
    WEBM = "webm"  # VP9 (+ alpha as yuva420p) + Opus
    WEBP = "webp"  # animated WebP, 8-bit alpha, no audio; fps <= 90 (browsers slow down delays <= 10 ms)
    GIF = "gif"    # animated GIF, 256 colours per frame, 1-bit transparency, no audio; fps <= 50 (10 ms units)


MAX_FPS = {VideoFormat.WEBP: 90.0, VideoFormat.GIF: 50.0}
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


# ---------------------------------------------------------------------------------------------------------------
# Checks ("`{arg}` {rule}, got {value}. {fix}")
# ---------------------------------------------------------------------------------------------------------------

def video_format(value) -> VideoFormat:
    """A VideoFormat from itself or its value ("mp4", "webm", "webp", "gif")."""
    try:
        return VideoFormat(value)
    except ValueError:
        fail("format", f"must be one of {[f.value for f in VideoFormat]}", value, "Pick one of the listed values.")


def check_images(arg: str, images) -> tuple[int, int, int, int]:
    """IMAGE: a 4-D tensor (F, H, W, C) with C 3 (RGB) or 4 (RGBA) and at least one frame. Returns its shape."""
    shape = tuple(getattr(images, "shape", ()))
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        fail(arg, "must be a 4-D IMAGE tensor (frames, height, width, channels)", shape,
             "Connect an IMAGE output (a video is a batch of frames); add a batch dimension to a single image.")
    if shape[3] not in (3, 4):
        fail(arg, "must have 3 (RGB) or 4 (RGBA) channels in the last dimension", shape,
             "Connect an IMAGE in ComfyUI's (frames, height, width, channels) layout, not (frames, channels, H, W).")
    if 0 in shape[:3]:
        fail(arg, "must hold at least one frame of at least 1x1 pixels", shape,
             "Check the node that made it: an empty batch has nothing to save.")
    return shape  # type: ignore[return-value]


def check_fps(arg: str, fps: float | Fraction) -> Fraction:
    """fps must be a finite number > 0. Returns it as an exact fraction (29.97 -> 2997/100): the one type fps has
    from the node to the file (the samplers, the audio families and the writers all take this fraction)."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not math.isfinite(float(fps)) \
            or fps <= 0:
        fail(arg, "must be a number of frames per second above 0", fps, "Use e.g. 16 (Wan), 8 (AnimateDiff) or 24.")
    return Fraction(fps).limit_denominator(1001)


def samples_for_frames(num_frames: int, fps: float | Fraction, sample_rate: int) -> int:
    """Samples of audio that last exactly num_frames / fps seconds (fps as check_fps reads it: 29.97 = 2997/100)."""
    return round(Fraction(num_frames) * sample_rate / check_fps("fps", fps))


def check_mask(arg: str, mask, frames: int, height: int, width: int) -> torch.Tensor:
    """MASK (F, H, W) or (H, W) matching the images; a single mask (1, H, W) applies to every frame."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        fail(arg, "must be a MASK tensor (frames, height, width)", tuple(getattr(mask, "shape", ())),
             "Connect a MASK output.")
    mask = mask if mask.ndim == 3 else mask[None]
    if tuple(mask.shape[1:]) != (height, width) or mask.shape[0] not in (1, frames):
        fail(arg, f"must be (1 or {frames}, {height}, {width}) to match the images", tuple(mask.shape),
             "Use a mask made from these frames (same size and frame count), or resize it first.")
    return mask


MAX_RATE = 384_000            # Hz: the highest audio sample rate accepted


def check_audio(arg: str, audio) -> tuple[torch.Tensor, int]:
    """AUDIO {"waveform": (B, C, T), "sample_rate": int}. Returns (waveform (B, C, T) float32 on the CPU, rate)."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        fail(arg, 'must be an AUDIO dict {"waveform", "sample_rate"}', type(audio).__name__, "Connect an AUDIO output.")
    wav, rate = torch.as_tensor(audio["waveform"]), audio["sample_rate"]
    if wav.ndim != 3 or 0 in wav.shape[:2]:
        fail(arg, "waveform must be (batch, channels, samples)", tuple(wav.shape),
             "Connect an AUDIO output (ComfyUI's layout: a batch of clips).")
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or not 0 < rate <= MAX_RATE:
        fail(arg, f"sample_rate must be an integer in 1..{MAX_RATE} Hz", rate, "Use the rate the audio was made at.")
    return wav.detach().float().cpu(), int(rate)


def check_track(arg: str, audio) -> tuple[torch.Tensor, int]:
    """AUDIO for one sound track (a video's, a latents file's): one clip of 1 or 2 channels. Returns
    (waveform (C, T) float32 on the CPU, rate)."""
    wav, rate = check_audio(arg, audio)
    if wav.shape[0] != 1:
        fail(arg, "must hold one clip (batch size 1) to be muxed into one video", tuple(wav.shape),
             "Pick one clip of the batch before saving.")
    if wav.shape[1] not in (1, 2):
        fail(arg, "waveform must be (1, channels, samples) with 1 or 2 channels", tuple(wav.shape),
             "Mix the audio down to mono or stereo first.")
    return wav[0], rate


def check_color(arg: str, rgb) -> tuple[float, float, float]:
    """An (r, g, b) triple in 0..1."""
    try:
        r, g, b = (float(c) for c in rgb)
    except (TypeError, ValueError):
        fail(arg, "must be three numbers (r, g, b) in 0..1", rgb, "Use e.g. (0, 1, 0) for green.")
    if not all(0.0 <= c <= 1.0 for c in (r, g, b)):
        fail(arg, "must have every channel in 0..1", rgb, "Divide 0..255 values by 255.")
    return r, g, b


def parse_hex_color(arg: str, text: str) -> tuple[float, float, float]:
    """'#00ff00', '00FF00' or '#0f0' -> (0.0, 1.0, 0.0)."""
    s = str(text).strip().lstrip("#")
    if len(s) == 3:
        s = "".join(c * 2 for c in s)
    if not re.fullmatch(r"[0-9a-fA-F]{6}", s):
        fail(arg, "must be a hex colour like #00ff00", text, "Write # and 6 hex digits: #00ff00 green, #0000ff blue.")
    return tuple(int(s[i:i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------
# Files: atomic writes and ComfyUI naming
# ---------------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_write(path) -> Iterator[Path]:
    """Yield a hidden temporary path next to `path`; on success move it onto `path` (os.replace), on any exception
    (interrupts included) delete it. Readers never see a half-written file. Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.part{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def next_output_path(folder, prefix: str, ext: str) -> Path:
    """ComfyUI's naming: `{folder}/{sub/dirs}/{name}_{counter:05}_.{ext}` for prefix "sub/dirs/name".

    The counter continues after the highest one already used by `{name}_NNNNN` files in that folder (any
    extension, as ComfyUI does), and never lands on an existing file. The prefix may not leave `folder`.
    """
    folder = Path(os.path.normpath(Path(folder).absolute()))
    clean = str(prefix).strip().replace("\\", "/")
    if any(ord(c) < 32 or ord(c) == 127 for c in clean):
        fail("filename_prefix", "must not contain control characters (a NUL cuts the name short)", prefix,
             'Use letters, digits, "_", "-" and "/" for subfolders, e.g. "Kinema/video".')
    target = Path(os.path.normpath(folder / clean))
    if not clean or clean.endswith("/") or target == folder:
        fail("filename_prefix", "must end in a file name", prefix, 'Use e.g. "Kinema/video".')
    if os.path.commonpath([folder, target]) != str(folder):
        fail("filename_prefix", "must stay inside the output folder", prefix, "Remove '..' and any leading '/'.")
    sub, name = target.parent, target.name
    pattern = re.compile(re.escape(name) + r"_(\d+)(?:_|\.)")
    counter = 1
    if sub.is_dir():
        for f in sub.iterdir():
            m = pattern.match(f.name)
            if m:
                counter = max(counter, int(m.group(1)) + 1)
    while (sub / f"{name}_{counter:05}_.{ext.lstrip('.')}").exists():
        counter += 1
    return sub / f"{name}_{counter:05}_.{ext.lstrip('.')}"


# ---------------------------------------------------------------------------------------------------------------
# Images in
# ---------------------------------------------------------------------------------------------------------------

def load_image(path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read an image file as ComfyUI does: (image (1, H, W, 3) float32 0..1, mask (1, H, W) float32).

    EXIF orientation is applied. mask = 1 - alpha (ComfyUI's LoadImage convention: 1 where transparent); zeros
    when the file has no alpha. 16-bit and float greyscale images are scaled to 0..1. For an animated file
    (gif, webp) the first frame is read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}. Fix: put the image in {path.parent} "
                                f"(or upload it in the editor), or pick an existing file.")
    try:
        with Image.open(path) as raw:
            im = ImageOps.exif_transpose(raw)
            im.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        fail("image", "must be a readable image file (PNG, JPEG, WebP, GIF, BMP, TIFF)", str(path),
             f"It could not be decoded ({e}); re-save it as PNG, or pick another file.")
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        scale = 1.0 if im.mode == "F" else 65535.0
        grey = np.clip(np.asarray(im, dtype=np.float32) / scale, 0.0, 1.0)
        rgb, alpha = np.repeat(grey[..., None], 3, axis=-1), None
    else:
        has_alpha = "A" in im.getbands() or "transparency" in im.info
        rgba = im.convert("RGBA") if has_alpha else None
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        alpha = None if rgba is None else np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
    image = torch.from_numpy(np.ascontiguousarray(rgb))[None]  # (1, H, W, 3)
    mask = torch.zeros(image.shape[:3]) if alpha is None else 1.0 - torch.from_numpy(alpha)[None]  # (1, H, W)
    return image, mask


# ---------------------------------------------------------------------------------------------------------------
# Videos out
# ---------------------------------------------------------------------------------------------------------------

def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """float 0..1 (any shape) -> uint8 numpy, rounded."""
    return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _frame_start(i: int, fps: Fraction, unit_ms: int) -> int:
    """Start time of frame i in ms, rounded to `unit_ms`: delays never drift from i / fps."""
    return round(Fraction(i * 1000, unit_ms) / fps) * unit_ms


def save_video(frames: torch.Tensor, path, fps: float, fmt: VideoFormat | str = VideoFormat.MP4,
               alpha: torch.Tensor | None = None, *, audio: dict | None = None, loop: int = 0,
               crf: int | None = None, quality: int = 90, lossless: bool = False, webp_method: int = 4,
               odd_size: str = "pad", metadata: dict[str, str] | None = None) -> Path:
    """Write frames as a video file, atomically. Returns `path`.

    Args:
        frames: IMAGE (F, H, W, C) float 0..1, C = 3 (RGB) or 4 (RGBA: the 4th channel is opacity).
        path: destination file; written through a hidden temporary file in the same folder.
        fps: frames per second (> 0); kept exactly (as a fraction) in mp4/webm, as integer delays in webp/gif.
        fmt: VideoFormat (or its value).
        alpha: optional opacity (F, H, W) or (1, H, W), 1 = opaque; multiplied with an RGBA 4th channel.
            mp4 cannot store alpha: transparent pixels there are an error (pick webm/webp/gif, or composite first).
        audio: optional AUDIO {"waveform": (1, C, T), "sample_rate"} for mp4 (AAC) and webm (Opus); trimmed or
            zero-padded to exactly F / fps seconds, starting at 0 like the video.
        loop: number of plays for webp/gif, 0 = forever (players loop mp4/webm themselves).
        crf: quality for mp4 (x264, default 19) and webm (VP9, default 32); lower is better and bigger.
        quality, lossless, webp_method: WebP encoder settings (quality 0..100 when lossy; method 0 fast..6 small).
        odd_size: mp4 only (H.264 4:2:0 needs even sizes): "pad" repeats the last row/column once; "error" raises.
        metadata: text tags (e.g. {"prompt": json, "workflow": json}): container tags in mp4/webm, EXIF in webp
            (ComfyUI's layout, so the editor can read the workflow back); gif stores none.
    """
    writer = VideoWriter(path, fps, fmt, audio=audio, loop=loop, crf=crf, quality=quality, lossless=lossless,
                         webp_method=webp_method, odd_size=odd_size, metadata=metadata)
    n, h, w, _ = check_images("images", frames)
    if alpha is not None:
        check_mask("alpha", alpha, n, h, w)
    writer.check_size(h, w)
    with writer:
        writer.write(frames, alpha)
    return Path(path)


class VideoWriter:
    """Write a video chunk by chunk, atomically: frames go to the encoder as they come, so a long video never
    sits in memory; the file appears at `path` only when the `with` block ends without an exception (a hidden
    temporary file in the same folder is renamed), and is deleted otherwise.

        with VideoWriter(path, fps=16, fmt="mp4", audio=audio) as out:
            for chunk in chunks:          # IMAGE chunks (n, H, W, 3 or 4) float 0..1, any n >= 1
                out.write(chunk)
        out.frames                        # frames written

    Args as save_video (which is this writer with one chunk). The audio is muxed frame by frame beside the video
    and ends with the last frame written (trimmed, or padded with silence), so its length need not be known
    up front. Every chunk must have the first chunk's size, and either all chunks have alpha or none.
    """

    def __init__(self, path, fps: float, fmt: VideoFormat | str = VideoFormat.MP4, *, audio: dict | None = None,
                 loop: int = 0, crf: int | None = None, quality: int = 90, lossless: bool = False,
                 webp_method: int = 4, odd_size: str = "pad", metadata: dict[str, str] | None = None):
        self.path, self.fmt = Path(path), video_format(fmt)
        self.rate = check_fps("fps", fps)
        if self.fmt in MAX_FPS and self.rate > MAX_FPS[self.fmt]:
            fail("fps", f"must be at most {MAX_FPS[self.fmt]:g} for {self.fmt.value}", float(fps),
                 "Browsers slow down shorter frame delays; pick mp4 or webm for high frame rates.")
        check_choice("odd_size", odd_size, ["pad", "error"])
        check_range("loop", loop, 0, 65535)
        if audio is not None and self.fmt not in (VideoFormat.MP4, VideoFormat.WEBM):
            fail("audio", f"cannot be stored in {self.fmt.value}", "an AUDIO input",
                 "Pick mp4 or webm, or disconnect it.")
        self.audio = check_track("audio", audio) if audio is not None else None   # (waveform (C, T), rate)
        self.options = dict(loop=loop, crf=crf, quality=quality, lossless=lossless, webp_method=webp_method,
                            odd_size=odd_size, metadata=metadata)
        self.frames = 0
        self._size: tuple[int, int, bool] | None = None    # (h, w, has_alpha) fixed by the first chunk
        self._sink = None
        self._stack: contextlib.ExitStack | None = None
        self._tmp: Path | None = None

    def check_size(self, h: int, w: int) -> None:
        """Reject a frame size this format cannot store (mp4 with odd_size="error"), before anything is written."""
        if self.fmt == VideoFormat.MP4 and (h % 2 or w % 2) and self.options["odd_size"] == "error":
            fail("images", "must have an even width and height for mp4 (H.264 4:2:0)", f"{w}x{h}",
                 f"Crop or pad to {w + w % 2}x{h + h % 2}, pick webm or webp, or let odd sizes be padded.")

    def __enter__(self) -> "VideoWriter":
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_write(self.path))
        return self

    def write(self, frames: torch.Tensor, alpha: torch.Tensor | None = None) -> None:
        """Append IMAGE frames (n, H, W, 3 or 4) float 0..1; alpha: optional opacity (n or 1, H, W), 1 = opaque."""
        if self._tmp is None:
            raise RuntimeError("VideoWriter.write() called outside its `with` block. Fix: use "
                               "`with VideoWriter(...) as out: out.write(frames)`.")
        n, h, w, c = check_images("images", frames)
        opacity = frames[..., 3] if c == 4 else None  # (n, H, W)
        if alpha is not None:
            alpha = check_mask("alpha", alpha, n, h, w)
            opacity = alpha if opacity is None else opacity * alpha
        if self._size is None:
            self.check_size(h, w)
            self._size = (h, w, opacity is not None)
            self._sink = self._open_sink(h, w, opacity is not None)
        elif (h, w) != self._size[:2]:
            fail("images", f"must keep the size of the first chunk ({self._size[1]}x{self._size[0]})", f"{w}x{h}",
                 "Write every chunk of one video at the same size.")
        elif (opacity is not None) != self._size[2]:
            fail("alpha", "must be given for every chunk or for none", "a change between chunks",
                 "Pass alpha (or RGBA frames) with every chunk, or with none.")
        if opacity is not None and self.fmt == VideoFormat.MP4 and bool((opacity < 1 - 0.5 / 255).any()):
            fail("format", "cannot store transparency (H.264 has no alpha channel)", self.fmt.value,
                 "Pick webm, webp or gif for transparency, or put the frames on a colour with Composite On Color.")
        for i in range(n):
            rgb = _to_uint8(frames[i, ..., :3])   # (H, W, 3) uint8, converted one frame at a time
            if opacity is not None:
                rgb = np.concatenate([rgb, _to_uint8(opacity[min(i, opacity.shape[0] - 1)])[..., None]], axis=-1)
            self._sink.add(rgb)
            self.frames += 1

    def _open_sink(self, h: int, w: int, has_alpha: bool):
        o = self.options
        if self.fmt in (VideoFormat.MP4, VideoFormat.WEBM):
            return _AvSink(self._tmp, self.fmt, h, w, self.rate, has_alpha, o["crf"], self.audio, o["metadata"])
        if self.fmt == VideoFormat.WEBP:
            return _WebpSink(self._tmp, h, w, self.rate, has_alpha, o["loop"], o["quality"], o["lossless"],
                             o["webp_method"], o["metadata"])
        return _GifSink(self._tmp, self.rate, has_alpha, o["loop"])

    def __exit__(self, exc_type, exc, tb) -> bool:
        stack, self._tmp = self._stack, None
        try:
            if exc_type is None and self.frames == 0:
                fail("images", "must hold at least one frame", 0, "Write at least one chunk before closing.")
            if self._sink is not None:
                self._sink.close(ok=exc_type is None)
        except BaseException:
            if exc_type is None:   # a failure while finishing: the temporary file goes too
                stack.__exit__(*sys.exc_info())
                raise
        return bool(stack.__exit__(exc_type, exc, tb))


@functools.lru_cache(maxsize=1)
def _x264_exact() -> dict[str, str]:
    """x264 options that make its output a function of the frames alone.

    x264's AVX-512 macroblock-tree code (mbtree_propagate_list_avx512) handles 8 macroblocks at a time with no mask at
    the end of a look-ahead row, so for widths that are not a multiple of 128 px it adds in costs read from heap memory
    nobody wrote: the same frames then encode differently from run to run (decoded pixels up to 17/255 apart, issue
    21). On CPUs with AVX-512, x264 is held to its AVX2 code, which every such CPU has (measured: same speed, and the
    same bytes in every process whatever the heap holds)."""
    import platform
    avx512 = getattr(torch.cpu, "_is_avx512_supported", lambda: False)
    if platform.machine().lower() in ("x86_64", "amd64") and avx512():
        return {"x264-params": "asm=AVX2"}
    return {}


class _AvSink:
    """mp4 (libx264 yuv420p + AAC) or webm (libvpx-vp9 yuv(a)420p + Opus), BT.709 limited range, tagged; frames
    added one at a time, each followed by the audio of its time span (an interleaved file)."""

    def __init__(self, tmp: Path, fmt: VideoFormat, h: int, w: int, rate: Fraction, has_alpha: bool,
                 crf: int | None, audio: tuple[torch.Tensor, int] | None, metadata: dict[str, str] | None):
        from av.video.reformatter import VideoReformatter
        mp4 = fmt == VideoFormat.MP4
        self.pad_h, self.pad_w = (h % 2, w % 2) if mp4 else (0, 0)
        self.pix = "yuv420p" if mp4 or not has_alpha else "yuva420p"
        self.rate, self.n = rate, 0
        self.wav, self.rate_in = audio if audio is not None else (None, None)
        self.reformatter = VideoReformatter()
        # webm: bitexact, or the Matroska muxer writes a random segment UID (same frames, different bytes)
        options = {"movflags": "+faststart+use_metadata_tags"} if mp4 else {"fflags": "+bitexact"}
        if mp4 and self.wav is not None:
            # the edit lists that trim AAC's priming and padding count in the movie timescale (1000 by default:
            # the sound track then ends up to ~0.5 ms off frames / fps); a timescale that both the sample rate and
            # the frame rate divide makes the track last exactly the wanted number of samples
            aac_rate = self.rate_in if self.rate_in in AAC_RATES else 48000
            timescale = math.lcm(aac_rate, rate.numerator)
            if timescale < 2 ** 31:
                options["movie_timescale"] = str(timescale)
        self.out = av.open(str(tmp), "w", format=fmt.value, options=options)
        try:
            for k, v in (metadata or {}).items():
                self.out.metadata[k] = v
            # 1. video stream: exact fps as the codec time base (pts = frame index)
            self.vs = vs = self.out.add_stream("libx264" if mp4 else "libvpx-vp9", rate=rate)
            vs.width, vs.height, vs.pix_fmt = w + self.pad_w, h + self.pad_h, self.pix
            cc = vs.codec_context
            cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1  # BT.709, limited range
            vs.options = ({"crf": str(19 if crf is None else crf), "preset": "medium", **_x264_exact()} if mp4 else
                          {"crf": str(32 if crf is None else crf), "b": "0", "deadline": "good", "cpu-used": "4",
                           "row-mt": "1"})
            # 2. audio stream (AAC at its own rate when AAC allows it, Opus always at 48 kHz; PyAV resamples)
            self.aus, self.layout = None, "stereo"
            if self.wav is not None:
                self.layout = "mono" if self.wav.shape[0] == 1 else "stereo"
                codec_rate = (self.rate_in if self.rate_in in AAC_RATES else 48000) if mp4 else 48000   # see above
                self.aus = self.out.add_stream("aac" if mp4 else "libopus", rate=codec_rate, layout=self.layout)
                self.aus.bit_rate = (192000 if mp4 else 128000) // (2 if self.layout == "mono" else 1)
        except BaseException:
            self.out.close()
            raise

    def add(self, arr: np.ndarray) -> None:
        """One frame (H, W, 3|4) uint8, then the audio of its time span (silence past the end of the audio)."""
        from av.video.reformatter import Colorspace, ColorRange
        i = self.n
        if self.pad_h or self.pad_w:
            arr = np.pad(arr, ((0, self.pad_h), (0, self.pad_w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format=("rgb24", "rgba")[arr.shape[2] == 4])
        frame = self.reformatter.reformat(frame, format=self.pix, dst_colorspace=Colorspace.ITU709,
                                          dst_color_range=ColorRange.MPEG)
        frame.pts = i
        self.out.mux(self.vs.encode(frame))
        self.n += 1
        if self.aus is not None:
            a0, a1 = (round(Fraction(j) * self.rate_in / self.rate) for j in (i, i + 1))
            if a1 > a0:
                samples = self.wav[:, a0:a1]
                if samples.shape[1] < a1 - a0:   # the audio ended: pad with silence to the frame's end
                    samples = torch.nn.functional.pad(samples, (0, a1 - a0 - samples.shape[1]))
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.numpy()), format="fltp",
                                                   layout=self.layout)
                chunk.sample_rate, chunk.pts, chunk.time_base = self.rate_in, a0, Fraction(1, self.rate_in)
                self.out.mux(self.aus.encode(chunk))

    def close(self, ok: bool) -> None:
        """Flush the encoders (ok) and close the container."""
        try:
            if ok:
                self.out.mux(self.vs.encode(None))
                if self.aus is not None:
                    self.out.mux(self.aus.encode(None))
        finally:
            self.out.close()


def _riff_chunk(fourcc: bytes, payload: bytes) -> bytes:
    return fourcc + len(payload).to_bytes(4, "little") + payload + (b"\0" if len(payload) % 2 else b"")


def _webp_bitstream(img: Image.Image, lossless: bool, quality: int, method: int) -> bytes:
    """Encode one still WebP with PIL and return its image chunks (ALPH + VP8, or VP8L) for an ANMF frame."""
    buf = io.BytesIO()
    img.save(buf, format="WEBP", lossless=lossless, quality=quality, method=method)
    data, pos, keep = buf.getvalue(), 12, []
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        if data[pos:pos + 4] in (b"ALPH", b"VP8 ", b"VP8L"):
            keep.append(data[pos:pos + 8 + size + size % 2])
        pos += 8 + size + size % 2
    return b"".join(keep)


def _webp_exif(metadata: dict[str, str]) -> bytes:
    """EXIF as ComfyUI writes it in webp: "prompt:<json>" in tag 0x0110, other keys "key:<json>" from 0x010F down."""
    exif, tag = Image.Exif(), 0x010F
    for key, value in metadata.items():
        if key == "prompt":
            exif[0x0110] = f"prompt:{value}"
        else:
            exif[tag], tag = f"{key}:{value}", tag - 1
    raw = exif.tobytes()
    return raw[6:] if raw.startswith(b"Exif\0\0") else raw


class _WebpSink:
    """Animated WebP assembled from full frames (RIFF: VP8X, ANIM, one ANMF per frame, EXIF): nothing merged.
    The RIFF size is patched in when the file is closed."""

    def __init__(self, tmp: Path, h: int, w: int, rate: Fraction, has_alpha: bool, loop: int, quality: int,
                 lossless: bool, method: int, metadata: dict[str, str] | None):
        self.h, self.w, self.rate, self.n = h, w, rate, 0
        self.encode = dict(lossless=lossless, quality=quality, method=method)
        self.exif = _webp_exif(metadata) if metadata else b""
        flags = 0x02 | (0x10 if has_alpha else 0) | (0x08 if self.exif else 0)  # animation, alpha, EXIF
        self.f = open(tmp, "wb")
        self.f.write(b"RIFF\0\0\0\0WEBP")
        self.f.write(_riff_chunk(b"VP8X", bytes([flags, 0, 0, 0]) + (w - 1).to_bytes(3, "little")
                                 + (h - 1).to_bytes(3, "little")))
        self.f.write(_riff_chunk(b"ANIM", bytes(4) + loop.to_bytes(2, "little")))  # background BGRA, loop count

    def add(self, arr: np.ndarray) -> None:
        duration = _frame_start(self.n + 1, self.rate, 1) - _frame_start(self.n, self.rate, 1)
        if duration >= 1 << 24:
            fail("fps", "is too low for webp (a frame may last at most 4.6 hours)", float(self.rate), "Raise fps.")
        # x/2, y/2, width-1, height-1, duration (24-bit each), flags: 0b10 = replace (no blend), no dispose
        header = bytes(6) + (self.w - 1).to_bytes(3, "little") + (self.h - 1).to_bytes(3, "little") \
            + duration.to_bytes(3, "little") + b"\x02"
        self.f.write(_riff_chunk(b"ANMF", header + _webp_bitstream(Image.fromarray(arr), **self.encode)))
        self.n += 1

    def close(self, ok: bool) -> None:
        try:
            if ok:
                if self.exif:
                    self.f.write(_riff_chunk(b"EXIF", self.exif))
                size = self.f.tell() - 8
                self.f.seek(4)
                self.f.write(size.to_bytes(4, "little"))
        finally:
            self.f.close()


class _GifSink:
    """Animated GIF written frame by frame (one local palette per frame): nothing merged.

    Transparency is 1-bit (opacity < 0.5 -> transparent, palette index 255); frames with alpha are disposed to
    background so each one replaces the last. `loop` counts plays: GIF stores repeats, so 1 writes no loop block.
    """

    def __init__(self, tmp: Path, rate: Fraction, has_alpha: bool, loop: int):
        self.rate, self.has_alpha, self.loop, self.n = rate, has_alpha, loop, 0
        self.f = open(tmp, "wb")

    def add(self, arr: np.ndarray) -> None:
        frame = Image.fromarray(np.ascontiguousarray(arr[..., :3])).quantize(
            colors=255 if self.has_alpha else 256, method=Image.Quantize.FASTOCTREE)  # ~100x faster than median cut
        palette = (frame.getpalette() or [])[:765]
        frame.putpalette(palette + [0] * (768 - len(palette)))
        duration = _frame_start(self.n + 1, self.rate, 10) - _frame_start(self.n, self.rate, 10)
        params: dict[str, Any] = {"duration": duration, "include_color_table": True,
                                  "disposal": 2 if self.has_alpha else 1}
        if duration > 655350:
            fail("fps", "is too low for gif (a frame may last at most 655 s)", float(self.rate), "Raise fps.")
        if self.has_alpha:
            frame.paste(255, mask=Image.fromarray(np.where(arr[..., 3] < 128, 255, 0).astype(np.uint8)))
            params["transparency"] = 255
        if self.n == 0:
            loop = self.loop
            info = {"loop": loop - 1 if loop > 1 else (0 if loop == 0 else None), "duration": duration}
            header, _ = GifImagePlugin.getheader(frame, info=info)
            self.f.write(b"".join(header))
        self.f.write(b"".join(GifImagePlugin.getdata(frame, offset=(0, 0), **params)))
        self.n += 1

    def close(self, ok: bool) -> None:
        try:
            if ok:
                self.f.write(b";")
        finally:
            self.f.close()


# ---------------------------------------------------------------------------------------------------------------
# Videos in (tests, inspection)
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioInfo:
    codec: str
    sample_rate: int
    channels: int
    duration: float     # seconds
    start_time: float   # seconds


@dataclass(frozen=True)
class VideoInfo:
    format: str                   # "mp4", "webm", "webp", "gif"
    codec: str                    # "h264", "vp9", "webp", "gif"
    frames: int
    fps: float
    width: int
    height: int
    has_alpha: bool
    duration: float               # seconds of video
    start_time: float             # seconds
    loop: int | None = None       # webp/gif loop field as stored (0 = forever); None for mp4/webm or no loop block
    frame_durations_ms: tuple[int, ...] = ()   # webp/gif only
    audio: AudioInfo | None = None


def _is_pil_animation(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return head[:4] == b"GIF8" or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def read_video_info(path) -> VideoInfo:
    """Frames, fps, size, alpha, loop and audio stream of a video file written by save_video (or any other)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}. Fix: check the path.")
    if _is_pil_animation(path):
        with Image.open(path) as im:
            n, durations, alpha = getattr(im, "n_frames", 1), [], False
            for i in range(n):
                im.seek(i)
                im.load()
                durations.append(int(im.info.get("duration", 0)))
                alpha = alpha or im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            total = sum(durations)
            return VideoInfo(format=im.format.lower(), codec=im.format.lower(), frames=n,
                             fps=n * 1000.0 / total if total else 0.0, width=im.width, height=im.height,
                             has_alpha=alpha, duration=total / 1000.0, start_time=0.0, loop=im.info.get("loop"),
                             frame_durations_ms=tuple(durations))
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        pix = vs.codec_context.pix_fmt or ""
        alpha = vs.metadata.get("alpha_mode") == "1" or pix.startswith(("yuva", "rgba", "bgra", "argb", "gbra"))
        fps = float(vs.average_rate or vs.guessed_rate or 0)
        n = vs.frames or sum(1 for p in c.demux(vs) if p.size)
        start = float(vs.start_time * vs.time_base) if vs.start_time is not None else 0.0
        audio = None
        if c.streams.audio:
            audio = _audio_info(path, c.streams.audio[0].index)
        name = "mp4" if "mp4" in c.format.name else ("webm" if "matroska" in c.format.name else c.format.name)
        return VideoInfo(format=name, codec=vs.codec_context.name, frames=n, fps=fps, width=vs.width,
                         height=vs.height, has_alpha=alpha, duration=n / fps if fps else 0.0, start_time=start,
                         audio=audio)


def _audio_info(path: Path, index: int) -> AudioInfo:
    """Audio stream facts. The duration is the stream's own (mp4 edit list: priming and padding excluded) or,
    where the container stores none (webm), the decoded sample count."""
    with av.open(str(path)) as c:
        s = c.streams[index]
        rate = s.codec_context.sample_rate
        start = float(s.start_time * s.time_base) if s.start_time is not None else 0.0
        if s.duration:
            duration = float(s.duration * s.time_base)
        else:
            duration = sum(frame.samples for frame in c.decode(s)) / rate
        return AudioInfo(codec=s.codec_context.name, sample_rate=rate, channels=s.codec_context.channels,
                         duration=duration, start_time=start)


# ---------------------------------------------------------------------------------------------------------------
# Keying and compositing
# ---------------------------------------------------------------------------------------------------------------

def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """(*, 3, H, W) RGB 0..1 -> Y, Cb, Cr 0..1 (BT.601, the formula and operation order of kornia's rgb_to_ycbcr,
    so results are bit-identical without kornia)."""
    r, g, b = rgb[..., 0, :, :], rgb[..., 1, :, :], rgb[..., 2, :, :]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.stack([y, (b - y) * 0.564 + 0.5, (r - y) * 0.713 + 0.5], -3)


def chroma_key(frames: torch.Tensor, key_rgb, tolerance: float = 0.15, softness: float = 0.1,
               despill: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Key out a backdrop colour (green screen) -> (despilled frames (F, H, W, 3), mask (F, H, W), 1 = keyed out).

    Distance is measured in the chroma plane of YCbCr (rgb_to_ycbcr; brightness ignored, so shadows on the screen
    still key): a pure-green pixel is ~0.53 from pure magenta, skin is ~0.6 from green, screen noise ~0.02-0.08.
        distance <= tolerance                -> keyed out (mask 1)
        distance >= tolerance + softness     -> kept (mask 0); linear in between (softness 0 = hard edge)
    despill (0..1) pulls the key's strongest channel (green for a green screen) down to the larger of the other
    two, removing the green fringe and reflected light; it also tints genuinely green-ish foreground colours.
    An RGBA input keeps its own transparency too (mask = max(keyed, 1 - alpha)).
    """
    n, h, w, c = check_images("images", frames)
    key = check_color("key_color", key_rgb)
    check_range("tolerance", tolerance, 0.0, 1.0)
    check_range("softness", softness, 0.0, 1.0)
    check_range("despill", despill, 0.0, 1.0)
    rgb = frames[..., :3].float()  # (F, H, W, 3)
    ycc = rgb_to_ycbcr(rgb.permute(0, 3, 1, 2))  # (F, 3, H, W): Y, Cb, Cr in 0..1
    key_ycc = rgb_to_ycbcr(torch.tensor(key, dtype=ycc.dtype, device=ycc.device).view(1, 3, 1, 1))
    dist = (ycc[:, 1:] - key_ycc[:, 1:]).norm(dim=1)  # (F, H, W)
    opaque = ((dist - tolerance) / softness).clamp(0, 1) if softness > 0 else (dist > tolerance).float()
    mask = 1.0 - opaque
    if c == 4:
        mask = torch.maximum(mask, 1.0 - frames[..., 3].float())
    out = rgb.clone()
    if despill > 0:
        k = int(np.argmax(key))
        others = [j for j in range(3) if j != k]
        limit = rgb[..., others].amax(dim=-1)  # (F, H, W)
        out[..., k] = rgb[..., k] - despill * (rgb[..., k] - limit).clamp(min=0)
    return out, mask


def composite_on_color(image: torch.Tensor, mask: torch.Tensor, rgb) -> torch.Tensor:
    """Fill the transparent part of `image` with a flat colour: (F, H, W, 3).

    mask uses ComfyUI's convention (1 = transparent, fractions blend); (1, H, W) or (H, W) applies to every frame,
    and a single image is repeated over a multi-frame mask. An RGBA image's own alpha is not used: pass its mask.
    """
    n, h, w, _ = check_images("image", image)
    color = torch.tensor(check_color("color", rgb), dtype=torch.float32, device=image.device)
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3) or tuple(mask.shape[-2:]) != (h, w):
        fail("mask", f"must be a MASK (frames, {h}, {w}) matching the image", tuple(getattr(mask, "shape", ())),
             "Use the mask that belongs to this image, or resize it first.")
    m = (mask if mask.ndim == 3 else mask[None]).float().clamp(0, 1)
    if n != m.shape[0] and 1 not in (n, m.shape[0]):
        fail("mask", f"must have 1 or {n} frames to match the image", m.shape[0], "Use a mask of the same length.")
    m = m[..., None].to(image.device)  # (F, H, W, 1)
    return image[..., :3].float() * (1 - m) + color * m


class ResizeMethod(str, Enum):
    NEAREST = "nearest"           # hard pixels (pixel art, Kinema-Tiny's 32 px clips shown large)
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"           # smooth edges; may overshoot, clamped to 0..1
    AREA = "area"                 # averaging: the best for shrinking


def resize_frames(frames: torch.Tensor, scale: float, method: ResizeMethod | str = ResizeMethod.BICUBIC,
                  mask: torch.Tensor | None = None, multiple: int = 2) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale frames (F, H, W, C) and their optional MASK by `scale`, rounding the size to `multiple` (2 keeps the
    result valid for yuv420 mp4). Works frame-chunk by frame-chunk so long clips do not need a second copy at the
    interpolation's float size. -> (frames (F, H', W', C), mask (F or 1, H', W') or None)."""
    n, h, w, c = check_images("images", frames)
    check_range("scale_by", scale, 0.01, 16.0)
    check_choice("method", getattr(method, "value", method), [m.value for m in ResizeMethod])
    method = ResizeMethod(method)
    m = mask if mask is None else check_mask("mask", mask, n, h, w)
    size = tuple(max(multiple, round(d * scale / multiple) * multiple) for d in (h, w))

    def scaled(x: torch.Tensor) -> torch.Tensor:     # (N, C, H, W) -> (N, C, H', W')
        smooth = method in (ResizeMethod.BILINEAR, ResizeMethod.BICUBIC)
        kw = {"align_corners": False, "antialias": True} if smooth else {}
        mode = "nearest-exact" if method == ResizeMethod.NEAREST else method.value
        return F.interpolate(x.float(), size=size, mode=mode, **kw).clamp(0, 1)

    out = torch.cat([scaled(frames[i:i + 16].movedim(-1, 1)).movedim(1, -1).to(frames.dtype)
                     for i in range(0, n, 16)])
    if m is not None:
        m = scaled(m[:, None])[:, 0].to(m.dtype)
    return out, m
