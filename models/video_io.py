"""Streaming video reader: frames in chunks through PyAV (mp4, webm, mov, mkv) or Pillow (animated gif / webp).

A frame range is read by decoding up to its end and no further, and frames arrive `chunk` at a time, resized as
they come, so a consumer that streams (iter_frames) never holds more than one chunk of a long file; read_video
collects just the requested range.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.nn import functional as F

from .checks import check_range, fail

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".gif", ".webp")


@dataclass(frozen=True)
class VideoSource:
    """What a video file holds (frames counted by the container, or by demuxing when it does not say)."""
    path: Path
    frames: int
    fps: float
    width: int
    height: int


def probe(path) -> VideoSource:
    """Frames, fps and size of a video file. FileNotFoundError when it is missing."""
    from .media import read_video_info
    path = Path(path)
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        fail("video", f"must be one of {list(VIDEO_EXTENSIONS)}", path.name, "Convert the file to mp4 or webm.")
    info = read_video_info(path)
    return VideoSource(path, info.frames, info.fps, info.width, info.height)


def target_size(height: int, width: int, want_h: int = 0, want_w: int = 0, multiple: int = 8) -> tuple[int, int]:
    """(H, W) to resize to: both 0 keep the size; one 0 follows the aspect ratio, rounded to `multiple`."""
    check_range("width", want_w, 0, 16384)
    check_range("height", want_h, 0, 16384)
    if want_h and want_w:
        return want_h, want_w
    if want_w:
        return max(multiple, round(height * want_w / width / multiple) * multiple), want_w
    if want_h:
        return want_h, max(multiple, round(width * want_h / height / multiple) * multiple)
    return height, width


def resize_fill(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(n, H, W, 3) -> (n, h, w, 3): centre-cropped to the target aspect ratio, then antialiased bilinear resize."""
    n, h, w, _ = frames.shape
    th, tw = size
    if (h, w) == (th, tw):
        return frames
    if h * tw > w * th:                                        # too tall: crop rows
        ch = round(w * th / tw)
        frames = frames[:, (h - ch) // 2:(h - ch) // 2 + ch]
    elif h * tw < w * th:                                      # too wide: crop columns
        cw = round(h * tw / th)
        frames = frames[:, :, (w - cw) // 2:(w - cw) // 2 + cw]
    x = frames.movedim(-1, 1)                                  # (n, 3, h', w')
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return x.movedim(1, -1).contiguous()


def _raw_frames(path: Path) -> Iterator[np.ndarray]:
    """Decoded RGB uint8 frames (H, W, 3), one at a time, in display order."""
    from .media import _is_pil_animation
    if _is_pil_animation(path):
        from PIL import Image
        with Image.open(path) as im:
            for i in range(getattr(im, "n_frames", 1)):
                im.seek(i)
                yield np.asarray(im.convert("RGB"))
        return
    import av
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


def iter_frames(path, start: int = 0, count: int = 0, height: int = 0, width: int = 0,
                chunk: int = 16) -> Iterator[torch.Tensor]:
    """Frames [start, start + count) of a video (count 0: to the end), as IMAGE chunks (n, H, W, 3) float32 0..1,
    resized to height x width (see target_size; centre-cropped to the aspect). Decoding stops after the range."""
    path = Path(path)
    src = probe(path)
    check_range("start_frame", start, 0, None)
    check_range("frame_count", count, 0, None)
    if start >= src.frames:
        fail("start_frame", f"must be below the video's {src.frames} frames", start,
             f"Use a start_frame from 0 to {src.frames - 1}.")
    size = target_size(src.height, src.width, height, width)
    end = src.frames if count == 0 else start + count
    if end > src.frames:
        fail("frame_count", f"asks for frames up to {end} but the video has {src.frames}", count,
             f"Use at most {src.frames - start} (or 0 for all frames from start_frame).")
    buf: list[np.ndarray] = []
    for i, arr in enumerate(_raw_frames(path)):
        if i < start:
            continue
        if i >= end:
            break
        buf.append(arr)
        if len(buf) == chunk:
            yield resize_fill(torch.from_numpy(np.stack(buf)).float() / 255.0, size)
            buf = []
    if buf:
        yield resize_fill(torch.from_numpy(np.stack(buf)).float() / 255.0, size)


def read_video(path, start: int = 0, count: int = 0, height: int = 0, width: int = 0) -> tuple[torch.Tensor, float]:
    """(frames (F, H, W, 3) float32 0..1, fps) of the range [start, start + count) (count 0: to the end).

    The frames are written into one tensor allocated up front, after checking that it fits in the available RAM
    (F * H * W * 3 * 4 bytes; ValueError with the numbers otherwise), decoded in chunks of at most ~256 MB: the peak
    is the frames plus one chunk, not twice the frames."""
    src = probe(path)
    n = min(src.frames - start, count or src.frames) if 0 <= start < src.frames else 0
    h, w = target_size(src.height, src.width, height, width)
    if n > 0:
        check_fits_in_ram(n, h, w, count)
    out, done = None, 0
    per_chunk = max(1, min(16, (256 << 20) // max(1, h * w * 12)))    # chunks of at most ~256 MB beside `out`
    for chunk in iter_frames(path, start, count, height, width, chunk=per_chunk):    # (k, H, W, 3)
        if out is None:
            out = torch.empty((max(n, chunk.shape[0]), *chunk.shape[1:]), dtype=chunk.dtype)
        out[done:done + chunk.shape[0]] = chunk
        done += chunk.shape[0]
    return out[:done], src.fps


def check_fits_in_ram(frames: int, height: int, width: int, count: int) -> None:
    """ValueError when frames x height x width x 3 float32 values need more than 80% of the RAM available now."""
    need = frames * height * width * 3 * 4
    free = _available_ram()
    if free is not None and need > 0.8 * free:
        fail("frame_count", f"asks for {frames} frames at {width}x{height}, which need {need / 2**30:.1f} GB of RAM "
             f"as float32 frames, but {free / 2**30:.1f} GB is available", count,
             f"Load fewer frames (frame_count, start_frame) or a smaller width/height; at this size about "
             f"{max(1, int(0.8 * free // (height * width * 12)))} frames fit.")


def _available_ram() -> int | None:
    """Bytes of RAM available for new allocations (psutil, else /proc/meminfo), or None when unknown."""
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


__all__ = ["VIDEO_EXTENSIONS", "VideoSource", "check_fits_in_ram", "iter_frames", "probe", "read_video", "resize_fill",
           "target_size"]
