"""Sync check for Kinema-Tiny Audio: do the sound's onsets land on the visible impacts?

Both sides are measured, never taken from metadata:
- impacts from pixels: the object's centroid track (checker.frame_stats); a floor contact is an inner frame where
  the vertical velocity flips from down to up (a local maximum of y, within 0.75 px of the highest y and >= 1.5 px
  above the lowest within 3 frames); a wall contact the same on x, within 30 % of the frame width of that side;
  contacts one frame apart count once. The first / last frame count as "allowed" contacts (an onset there is not
  false) when the object moves away from / arrives at an extreme there, but only inner contacts are scored.
- onsets from the waveform: an energy-rise detector (4 ms hops, 16 ms RMS windows): a rise of >= 12 dB within
  48 ms to above -35 dBFS, at most one onset per 100 ms.
An impact is matched when an onset lies within `tolerance` video frames of it; an onset is false when no contact
(inner or allowed) lies within `tolerance` frames.

`python -m training.tiny.audio_sync` prints the figures on rendered clips and on clips the bundled
Kinema-Tiny video model generates (a few minutes on a CPU).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import numpy as np
import torch

TOLERANCE = 2          # video frames


# ---------------------------------------------------------------------------------------------------------------
# Onsets (waveform) and impacts (pixels)
# ---------------------------------------------------------------------------------------------------------------

def detect_onsets(wave: np.ndarray, sample_rate: int, rise_db: float = 12.0, floor_db: float = -35.0,
                  gap_s: float = 0.1) -> list[float]:
    """Onset times in seconds of a mono waveform (samples,)."""
    hop, win = max(1, sample_rate // 250), max(1, sample_rate // 62)
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    x = np.concatenate([np.zeros(win), x])                       # silence before the start: an onset at 0 counts
    n = (len(x) - win) // hop + 1
    rms = np.array([np.sqrt(np.mean(x[i * hop:i * hop + win] ** 2) + 1e-12) for i in range(n)])
    db = 20 * np.log10(rms)
    back = max(1, round(0.048 * sample_rate / hop))
    onsets, last = [], -1e9
    for i in range(1, n):
        t = i * hop / sample_rate                                # frame i covers the clip's [t - win, t)
        if db[i] < floor_db or t - last < gap_s:
            continue
        low = db[max(0, i - back):i].min()
        if db[i] - low >= rise_db:
            start = i
            while start > 0 and db[start - 1] > low + 3:         # back to where the rise began
                start -= 1
            onsets.append(max(0.0, (start * hop - win / 2) / sample_rate))
            last = t
    return onsets


def centroid_track(frames: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) 0..1 -> (F, 2) centroid x, y in pixels (frames without an object interpolated)."""
    from .checker import frame_stats
    track = np.array([[s.x, s.y] for s in (frame_stats(f, with_shape=False) for f in frames)], dtype=np.float64)
    for j in range(2):
        col, ok = track[:, j], np.isfinite(track[:, j])
        if ok.sum() >= 2 and not ok.all():
            col[~ok] = np.interp(np.flatnonzero(~ok), np.flatnonzero(ok), col[ok])
    return track


def impacts_from_track(track: np.ndarray, width: float = 32.0, min_step: float = 0.3, prominence: float = 1.5,
                       wall_zone: float = 0.3):
    """(scored inner contact frames, allowed boundary contact frames) from a centroid track (F, 2) in pixels of a
    frame `width` wide. Wall contacts count only with the centroid within wall_zone x width of that side; contacts
    one frame apart are one impact."""
    f = len(track)
    inner, boundary = set(), set()
    for j, sign in ((1, 1), (0, 1), (0, -1)):                    # floor (max y), right wall (max x), left (min x)
        v = sign * track[:, j]
        if not np.isfinite(v).all():
            continue
        near_wall = (lambda k: True) if j == 1 else \
            (lambda k, s=sign: (track[k, 0] >= (1 - wall_zone) * width) if s > 0 else (track[k, 0] <= wall_zone * width))
        for k in range(1, f - 1):
            near = v[max(0, k - 3):k + 4]
            if (v[k] - v[k - 1] > min_step and v[k] - v[k + 1] > min_step and v[k] >= near.max() - 0.75
                    and v[k] - near.min() >= prominence and near_wall(k)):
                inner.add(k)
        if f >= 2 and v[0] - v[1] > min_step and near_wall(0):
            boundary.add(0)
        if f >= 2 and v[-1] - v[-2] > min_step and near_wall(f - 1):
            boundary.add(f - 1)
    merged = []
    for k in sorted(inner):
        if not merged or k - merged[-1] > 1:
            merged.append(k)
    return merged, sorted(boundary - set(merged))


@dataclass
class SyncCounts:
    impacts: int = 0            # inner visible impacts
    matched: int = 0            # ... with an onset within the tolerance
    onsets: int = 0
    false_onsets: int = 0       # onsets with no contact (inner or boundary) within the tolerance
    offsets: list = field(default_factory=list)   # onset - impact, frames, for matched impacts
    clips: int = 0

    def add(self, impacts, boundary, onsets_s, fps: float, tolerance: float = TOLERANCE) -> None:
        onset_frames = [t * fps for t in onsets_s]
        self.clips += 1
        self.impacts += len(impacts)
        self.onsets += len(onset_frames)
        for k in impacts:
            near = [o - k for o in onset_frames if abs(o - k) <= tolerance]
            if near:
                self.matched += 1
                self.offsets.append(min(near, key=abs))
        contacts = list(impacts) + list(boundary)
        self.false_onsets += sum(1 for o in onset_frames if all(abs(o - k) > tolerance for k in contacts))

    def summary(self) -> dict:
        return {"clips": self.clips, "impacts": self.impacts,
                "matched": self.matched / self.impacts if self.impacts else float("nan"),
                "onsets": self.onsets, "false_onsets": self.false_onsets,
                "false_per_clip": self.false_onsets / max(1, self.clips),
                "mean_abs_offset_frames": float(np.mean(np.abs(self.offsets))) if self.offsets else float("nan")}


def score_clip(counts: SyncCounts, frames: torch.Tensor, audio: dict, fps: float) -> None:
    """frames IMAGE (F, H, W, 3), audio AUDIO dict: add this clip's impacts and onsets to counts."""
    inner, boundary = impacts_from_track(centroid_track(frames[..., :3].float().numpy()), frames.shape[2])
    wave = audio["waveform"][0].mean(0).numpy()
    counts.add(inner, boundary, detect_onsets(wave, audio["sample_rate"]), fps)


# ---------------------------------------------------------------------------------------------------------------
# The measurement
# ---------------------------------------------------------------------------------------------------------------

def rendered_clips(seed: int, count: int, kind: str | None, num_frames: int):
    """IMAGE clips (F, 32, 32, 3) from audio_data, held out from training by the seed."""
    from . import audio_data as D
    g = torch.Generator().manual_seed(seed)
    for _ in range(count):
        clip = D.random_clip(g, num_frames, kind)
        yield D.render_track(clip.spec, clip.track).permute(1, 2, 3, 0)            # (F, H, W, 3)


def generated_clips(video_model, prompts: list[str], num_frames: int, seed: int = 0):
    """IMAGE clips from the Kinema-Tiny video model (10 steps, cfg 4; context windows 9 / overlap 4 when longer)."""
    from kinema.models import windows as W
    from kinema.models.sampling import SamplerSettings, sample
    neg = video_model.encode_prompt("")
    ctx = W.ContextOptions(context_length=9, context_overlap=4) if num_frames > 9 else None
    for i, prompt in enumerate(prompts):
        s = SamplerSettings(num_frames=num_frames, height=32, width=32, num_inference_steps=10, guidance_scale=4.0,
                            seed=seed + i)
        latents = sample(video_model, video_model.encode_prompt(prompt), neg, s, context=ctx)
        yield video_model.decode(latents)                                           # (F, H, W, 3)


def measure(audio_model, clips, fps: float, steps: int = 10, cfg: float = 4.0, seed: int = 0) -> dict:
    from kinema.models.audio import video_to_audio
    counts = SyncCounts()
    for i, frames in enumerate(clips):
        audio = video_to_audio(audio_model, frames, fps, "", "", steps, cfg, seed + i)
        score_clip(counts, frames, audio, fps)
    return counts.summary()


def bounce_prompts(count: int) -> list[str]:
    from .data import COLOURS, SHAPES
    colours, shapes = list(COLOURS), list(SHAPES)
    return [f"a {colours[i % len(colours)]} {shapes[(i // len(colours) + i) % len(shapes)]} bounces"
            for i in range(count)]


def main(argv=None) -> None:
    from kinema.models.families import load_audio_model, load_model
    from kinema.models.tiny.audio_model import DEFAULT_WEIGHTS
    from kinema.models.tiny.pipeline import DEFAULT_WEIGHTS as VIDEO_WEIGHTS
    p = argparse.ArgumentParser(description="Sync of Kinema-Tiny Audio onsets with visible impacts.")
    p.add_argument("--model", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--count", type=int, default=24)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=8.0)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    audio = load_audio_model(args.model)
    t0 = time.time()
    rows = {
        "rendered floor 33f": measure(audio, rendered_clips(1000, args.count, "floor", 33), args.fps, args.steps, args.cfg),
        "rendered walls 25f": measure(audio, rendered_clips(1001, args.count // 2, "walls", 25), args.fps, args.steps, args.cfg),
        "rendered no-impact 17f": measure(audio, rendered_clips(1002, args.count // 2, "none", 17), args.fps, args.steps, args.cfg),
        "rendered floor 33f @16fps": measure(audio, rendered_clips(1003, args.count // 2, "floor", 33), 16.0, args.steps, args.cfg),
    }
    video = load_model(VIDEO_WEIGHTS)
    rows["generated bounces 33f"] = measure(audio, generated_clips(video, bounce_prompts(args.count), 33),
                                            args.fps, args.steps, args.cfg)
    still = [p.replace("bounces", m) for p, m in zip(bounce_prompts(args.count // 2),
                                                     ["moves left", "stays still", "spins", "moves right"] * 10)]
    rows["generated no-impact 9f"] = measure(audio, generated_clips(video, still, 9), args.fps, args.steps, args.cfg)
    for name, r in rows.items():
        print(f"{name:28s} clips {r['clips']:3d}  impacts {r['impacts']:3d}  within {TOLERANCE} frames "
              f"{100 * r['matched']:5.1f} %  onsets {r['onsets']:3d}  false {r['false_onsets']:3d} "
              f"({r['false_per_clip']:.2f}/clip)  |offset| {r['mean_abs_offset_frames']:.2f} frames")
    print(f"({time.time() - t0:.0f} s; steps {args.steps}, cfg {args.cfg}, tolerance {TOLERANCE} frames)")


if __name__ == "__main__":
    main()
