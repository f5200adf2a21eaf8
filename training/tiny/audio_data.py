"""Procedural training data for Kinema-Tiny Audio: clips where impacts happen at known frames, and their sound.

A clip is one Kinema-Tiny shape (same shapes, colours and backgrounds as data.py) that either bounces on a floor
several times, bounces between the left and right walls, or does an impact-free motion (data.py's moves, spins,
grows, shrinks, stays still). Floor and wall contacts sit on whole frames, so the frame where the object is
lowest (or at the wall) is the frame of the impact, and the sound starts exactly at that frame's time, k / fps.

The sound is synthesized in code: at each impact a short decaying percussive tone (partials plus a click), its
pitch set by the shape (and lowered for bigger objects), its loudness by the impact speed; otherwise faint noise.
Everything is reproducible from a seed (torch.Generator on the CPU); nothing is downloaded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .data import EXTENT, ClipSpec, random_spec, render, trajectory

SAMPLE_RATE = 8000                 # Hz of every waveform here
PITCH = {"circle": 330.0, "square": 220.0, "triangle": 520.0, "star": 780.0}   # Hz of the lowest partial
PARTIALS = (1.0, 2.76, 5.40)       # frequency ratios of a struck bar (inharmonic: sounds like a knock)
KINDS = ("floor", "walls", "none")
KIND_WEIGHTS = (0.6, 0.15, 0.25)


@dataclass(frozen=True)
class ImpactClip:
    """One training clip: the object's per-frame (x, y, scale, angle) track and the frames of its impacts."""
    spec: ClipSpec                 # shape, colour, radius, background (motion/x0/y0 unused for impact kinds)
    kind: str                      # floor | walls | none
    track: torch.Tensor            # (F, 4) x, y as fractions of the frame, scale, angle (radians)
    impacts: tuple[int, ...]       # frames of floor / wall contact (0 and F-1 included when in contact there)
    strengths: tuple[float, ...]   # loudness 0..1 per impact (from the speed just before it)


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def _i(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


def _floor_track(g, spec: ClipSpec, num_frames: int):
    """Hops between floor contacts on whole frames: arcs of 3-9 frames, random heights; the floor height drifts a
    little from contact to contact (as in clips the video model makes), so an impact is "the object stops going
    down and goes up", not "the object is at one particular height"."""
    edge = spec.radius * EXTENT + 0.02
    base = _u(g, 0.42, 1 - edge)
    wobble = _u(g, 0.0, 0.08)

    def floor_at() -> float:
        return min(1 - edge, max(0.42, base + _u(g, -wobble, wobble)))

    gap = _i(g, 3, 9)
    contact = -_i(g, 0, gap - 1)                   # the first contact may lie before the clip (starts mid-air)
    f_a = floor_at()
    x, vx = _u(g, edge, 1 - edge), _u(g, -0.012, 0.012)
    t = torch.arange(num_frames, dtype=torch.float32)
    y = torch.empty(num_frames)
    impacts, strengths = [], []
    prev_h = None
    while contact < num_frames:
        f_b = floor_at()
        h = _u(g, 0.14, max(0.14, min(0.46, min(f_a, f_b) - edge)))
        seg = (t >= contact) & (t <= contact + gap)
        s = (t[seg] - contact) / gap
        y[seg] = f_a + (f_b - f_a) * s - h * 4 * s * (1 - s)
        if 0 <= contact:
            impacts.append(int(contact))
            # loudness from the speed at landing (previous arc's height over its duration)
            speed = (prev_h if prev_h is not None else h) / max(gap, 1)
            strengths.append(float(min(1.0, 0.35 + 6.0 * speed)))
        prev_h = h
        contact += gap
        gap = _i(g, 3, 9)
        f_a = f_b
    xs = (x + vx * t).clamp(edge, 1 - edge)
    angle = torch.full_like(t, spec.angle0)
    return torch.stack([xs, y, _size_wobble(g, num_frames), angle], 1), impacts, strengths


def _size_wobble(g, num_frames: int) -> torch.Tensor:
    """Per-frame scale: 1, or (half the clips) a small random wobble (generated clips are not perfectly rigid)."""
    if torch.rand((), generator=g) < 0.5:
        return torch.ones(num_frames)
    return 1 + (torch.rand(num_frames, generator=g) - 0.5) * 0.2


def _wall_track(g, spec: ClipSpec, num_frames: int):
    """Left-right between two walls (the frame edges), turning on whole frames: impacts at each turn."""
    edge = spec.radius * EXTENT + 0.02
    y = _u(g, edge, 1 - edge)
    gap = _i(g, 3, 9)
    k = -_i(g, 0, gap - 1)
    side = _i(g, 0, 1)
    t = torch.arange(num_frames, dtype=torch.float32)
    x = torch.empty(num_frames)
    impacts, strengths = [], []
    while k < num_frames:
        seg = (t >= k) & (t <= k + gap)
        s = (t[seg] - k) / gap
        a, b = (edge, 1 - edge) if side == 0 else (1 - edge, edge)
        x[seg] = a + (b - a) * s
        if 0 <= k:
            impacts.append(int(k))
            strengths.append(float(min(1.0, 0.35 + 4.0 / gap)))
        k += gap
        side = 1 - side
        gap = _i(g, 3, 9)
    angle = torch.full_like(t, spec.angle0)
    return torch.stack([x, torch.full_like(t, y), _size_wobble(g, num_frames), angle], 1), impacts, strengths


def random_clip(g: torch.Generator, num_frames: int, kind: str | None = None) -> ImpactClip:
    """A random clip of `num_frames` frames (kind picked with KIND_WEIGHTS unless given)."""
    if kind is None:
        kind = KINDS[int(torch.multinomial(torch.tensor(KIND_WEIGHTS), 1, generator=g))]
    if kind == "none":
        motion = ("moves left", "moves right", "moves up", "moves down", "spins", "grows", "shrinks",
                  "stays still")[_i(g, 0, 7)]
        spec = random_spec(g, motion=motion)
        return ImpactClip(spec, kind, trajectory(spec, num_frames), (), ())
    spec = random_spec(g, motion="stays still")
    track, impacts, strengths = (_floor_track if kind == "floor" else _wall_track)(g, spec, num_frames)
    return ImpactClip(spec, kind, track, tuple(impacts), tuple(strengths))


def tiny_bounce_clip(spec: ClipSpec, num_frames: int = 9) -> ImpactClip:
    """data.py's own "bounces" clip (one hop: starts on the floor, lands at the last frame) as an ImpactClip."""
    spec = replace(spec, motion="bounces")
    return ImpactClip(spec, "floor", trajectory(spec, num_frames), (0, num_frames - 1), (0.8, 0.8))


def render_track(spec: ClipSpec, track: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Draw spec's shape along track (F, 4) on spec's background (data.render): (3, F, H, W) 0..1."""
    return render(spec, len(track), size, track=track)


def impact_sound(shape: str, radius: float, strength: float, g: torch.Generator,
                 sample_rate: int = SAMPLE_RATE, seconds: float = 0.35) -> torch.Tensor:
    """One knock: decaying inharmonic partials + a short noise click, (samples,) float32, peak ~strength."""
    n = int(seconds * sample_rate)
    t = torch.arange(n, dtype=torch.float32) / sample_rate
    f0 = PITCH[shape] * (0.17 / radius) * _u(g, 0.95, 1.05)           # bigger objects sound lower
    tau = _u(g, 0.045, 0.08)
    wave = torch.zeros(n)
    for k, (ratio, amp) in enumerate(zip(PARTIALS, (1.0, 0.5, 0.25))):
        f = f0 * ratio
        if f < sample_rate / 2 - 200:
            wave += amp * torch.sin(2 * math.pi * f * t + _u(g, 0, 6.28)) * torch.exp(-t / (tau / (1 + k)))
    click = torch.randn(n, generator=g) * torch.exp(-t / 0.004) * 0.6
    wave = wave + click
    attack = (t / 0.002).clamp(max=1.0)                                # 2 ms attack, no pre-echo
    return (wave * attack / 1.75 * strength).float()


def synthesize(clip: ImpactClip, fps: float, num_samples: int, g: torch.Generator,
               sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """The clip's sound, (num_samples,): a knock starting at each impact frame's time k / fps, faint noise else."""
    out = torch.randn(num_samples, generator=g) * _u(g, 0.0005, 0.003)
    for k, strength in zip(clip.impacts, clip.strengths):
        knock = impact_sound(clip.spec.shape, clip.spec.radius, strength, g, sample_rate)
        start = round(k * sample_rate / fps)
        end = min(num_samples, start + knock.shape[0])
        if start < end:
            out[start:end] += knock[: end - start]
    return out.clamp(-1, 1)
