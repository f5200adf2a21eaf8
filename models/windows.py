"""Context windows for long video (FreeNoise): window layout, noise rescheduling, fusion weights, prompt
schedules. Pure functions over tensors and ints; models/sampling.py applies them to every family.

FreeNoise (Qiu et al. 2023): 1) noise rescheduling — one base noise sequence of a window's length, repeated over
the clip with local shuffles, so distant windows start from correlated noise; 2) window-based fusion —
overlapping windows are denoised separately and fused with position-dependent weights (a pyramid: frames at a
window's centre count most); 3) motion injection — with several prompts, the new prompts act only in the
middle denoising steps, while the first steps (layout) and the last (detail) keep the base prompt.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

import torch

from .checks import check_choice, check_range, fail


class FuseWeights(str, Enum):
    PYRAMID = "pyramid"                       # [1, 2, 3, 2, 1]: the FreeNoise default
    FLAT = "flat"                             # plain average
    DELAYED_REVERSE_SAWTOOTH = "delayed_reverse_sawtooth"


class NoiseType(str, Enum):
    SHUFFLE_CONTEXT = "shuffle_context"       # FreeNoise: base window noise, shuffled locally per window
    REPEAT_CONTEXT = "repeat_context"         # base window noise repeated as is
    RANDOM = "random"                         # independent noise (no rescheduling)


class FuseMode(str, Enum):
    AUTO = "auto"                 # inside temporal attention where the family has it (AnimateDiff), else predictions
    ATTENTION = "attention"       # fuse inside the temporal attention layers (AnimateDiff only)
    PREDICTIONS = "predictions"   # run the denoiser per window, fuse its outputs (every family)


class Anchor(str, Enum):
    NONE = "none"
    FIRST = "first"               # pull each window's predicted-clean statistics toward the first window's
    RUNNING = "running"           # ... toward the running mean of the windows before it


@dataclass(frozen=True)
class ContextOptions:
    """What the Context Options node sets. Lengths are in video frames (pixel frames)."""
    context_length: int = 16                  # frames per window (what the model was trained on: 16 AnimateDiff, 81 Wan)
    context_overlap: int = 4                  # frames shared by neighbouring windows
    fuse: FuseWeights = FuseWeights.PYRAMID
    noise: NoiseType = NoiseType.SHUFFLE_CONTEXT
    mode: FuseMode = FuseMode.AUTO
    anchor: Anchor = Anchor.FIRST
    anchor_strength: float = 0.5              # 0 = off, 1 = match the reference statistics exactly
    inject_start: float = 0.2                 # motion injection: scheduled prompts act from this fraction of steps
    inject_end: float = 0.8                   # ... to this one; outside it the first prompt acts

    def __post_init__(self):
        check_range("context_length", self.context_length, 1, 100_000)
        check_range("context_overlap", self.context_overlap, 0, self.context_length - 1,
                    "The overlap must be smaller than the window.")
        for arg, enum in (("fuse", FuseWeights), ("noise", NoiseType), ("mode", FuseMode), ("anchor", Anchor)):
            check_choice(arg, getattr(self, arg), [e.value for e in enum])
        check_range("anchor_strength", self.anchor_strength, 0.0, 1.0)
        check_range("inject_start", self.inject_start, 0.0, 1.0)
        check_range("inject_end", self.inject_end, self.inject_start, 1.0)


def windows(num_frames: int, length: int, stride: int) -> list[tuple[int, int]]:
    """Sliding windows [start, end) over num_frames, `length` long, `stride` apart; the last one is aligned to
    the end so every frame is covered (diffusers' FreeNoise layout). One window when the clip fits."""
    if num_frames <= length:
        return [(0, num_frames)]
    out = [(s, s + length) for s in range(0, num_frames - length + 1, stride)]
    if out[-1][1] < num_frames:
        out.append((num_frames - length, num_frames))
    return out


def frame_weights(length: int, kind: str = "pyramid") -> torch.Tensor:
    """Position weights inside a window, (length,): centre frames count most for "pyramid"."""
    if kind == FuseWeights.FLAT:
        w = [1.0] * length
    elif kind == FuseWeights.PYRAMID:
        mid = (length + 1) // 2
        w = list(range(1, mid + 1)) + list(range(mid - (length % 2 == 1), 0, -1))
    elif kind == FuseWeights.DELAYED_REVERSE_SAWTOOTH:
        mid = (length + 1) // 2            # 4 -> [0.01, 2, 2, 1]; 5 -> [0.01, 0.01, 3, 2, 1]
        w = [0.01] * (mid - 1) + ([mid] if length % 2 == 0 else []) + list(range(mid, 0, -1))
    else:
        fail("fuse", f"must be one of {[e.value for e in FuseWeights]}", kind, "Pick a listed scheme.")
    return torch.tensor(w[:length], dtype=torch.float32)


def reschedule_noise(noise: torch.Tensor, length: int, stride: int, generator: torch.Generator,
                     kind: str = "shuffle_context") -> torch.Tensor:
    """FreeNoise noise rescheduling over the frame axis of (B, C, F, h, w) noise, in place semantics of
    diffusers' AnimateDiff FreeNoise: every `stride` frames past the first window, the frames of an earlier
    stretch are copied in a shuffled order (shuffle_context), or the first window repeats (repeat_context)."""
    f = noise.shape[2]
    if kind == NoiseType.RANDOM or f <= length:
        return noise
    if kind == NoiseType.REPEAT_CONTEXT:
        reps = (f + length - 1) // length
        return torch.cat([noise[:, :, :length]] * reps, dim=2)[:, :, :f]
    noise = noise.clone()
    for i in range(length, f, stride):
        start = max(0, i - length)
        end = min(f, start + stride)
        if end == start:
            break
        idx = torch.arange(start, end)[torch.randperm(end - start, generator=generator)]
        n = min(f, i + (end - start)) - i
        noise[:, :, i:i + n] = noise[:, :, idx[:n]]
    return noise


# ---- prompt schedules ------------------------------------------------------------------------------------------
_ENTRY = re.compile(r"^\s*(\d+)\s*:\s*(.*?)\s*$", re.S)


def parse_schedule(text: str) -> list[tuple[int, str]]:
    """'0: a cat walks | 48: the cat runs' -> [(0, 'a cat walks'), (48, 'the cat runs')], frames ascending,
    starting at 0. Entries are separated by '|' or new lines."""
    parts = [p for p in re.split(r"\||\n", text) if p.strip()]
    if not parts:
        fail("schedule", "must hold at least one 'FRAME: prompt' entry", text, "Write e.g. '0: a cat walks'.")
    out = []
    for p in parts:
        m = _ENTRY.match(p)
        if not m or not m.group(2):
            fail("schedule", "entries must look like 'FRAME: prompt'", p.strip(),
                 "Write e.g. '0: a cat walks | 48: the cat runs'.")
        out.append((int(m.group(1)), m.group(2)))
    frames = [f for f, _ in out]
    if frames != sorted(set(frames)):
        fail("schedule", "frames must be strictly increasing", frames, "Sort the entries and remove repeats.")
    if frames[0] != 0:
        fail("schedule", "must start at frame 0", frames[0], "Add a '0: ...' entry first.")
    return out


def schedule_weights(keyframes: list[int], frame: float) -> list[float]:
    """Blend weights of each keyframe's prompt at `frame` (linear between neighbours, held after the last)."""
    w = [0.0] * len(keyframes)
    if frame >= keyframes[-1]:
        w[-1] = 1.0
        return w
    for i in range(len(keyframes) - 1):
        a, b = keyframes[i], keyframes[i + 1]
        if a <= frame < b:
            t = (frame - a) / (b - a)
            w[i], w[i + 1] = 1 - t, t
            return w
    w[0] = 1.0
    return w
