"""Procedural data for Kinema-Tiny Portrait: a drawn face whose mouth opens with the loudness of a voice.

Everything is drawn in code from a seed (a torch.Generator on the CPU); nothing is downloaded.

- `loudness_features(waveform, rate, fps, num_frames)`: the audio feature the model is conditioned on (it lives
  with the model, kinema/models/tiny/portrait_data.py, because inference computes it too; re-exported here).
- `synth_voice(g, seconds, rate)`: a synthetic "voice": syllable-like bursts of a harmonic tone (90..260 Hz
  fundamental, six harmonics, a little breath noise) with random timing, length and level, over a faint noise
  floor. Training computes its loudness features with the function above.
- `render_faces(specs, openings, size)`: faces (B, 3, F, H, W) 0..1: a skin-coloured oval on a plain background,
  optional hair, two eyes, and a dark mouth whose height follows `openings` (B, F) in 0..1 — the loudness
  feature of each frame, so the mouth opening *is* the voice's loudness envelope.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kinema.models.tiny.portrait_data import loudness_features  # noqa: F401  (re-exported)

SKINS = ((0.96, 0.80, 0.66), (0.88, 0.66, 0.50), (0.72, 0.50, 0.34), (0.55, 0.37, 0.25), (0.98, 0.86, 0.52),
         (0.62, 0.84, 0.60))                  # the last two are cartoon yellow and green
BACKGROUNDS = ((0.16, 0.20, 0.30), (0.20, 0.36, 0.40), (0.32, 0.22, 0.36), (0.80, 0.84, 0.90),
               (0.30, 0.34, 0.22), (0.10, 0.10, 0.12))
HAIRS = ((0.10, 0.07, 0.05), (0.36, 0.20, 0.10), (0.86, 0.70, 0.34), (0.55, 0.12, 0.10))
MOUTH = (0.30, 0.03, 0.06)                    # dark red: darker than every skin colour
EYES = (0.06, 0.06, 0.10)
SUPERSAMPLE = 4


@dataclass(frozen=True)
class FaceSpec:
    """One face. Positions and sizes are fractions of the frame size."""
    skin: int              # index into SKINS
    background: int        # index into BACKGROUNDS
    hair: int              # index into HAIRS, or -1 for none
    cx: float              # face centre
    cy: float
    rx: float              # face half-width
    ry: float              # face half-height
    mouth_w: float         # mouth half-width
    mouth_h: float         # mouth half-height when fully open


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def _i(g: torch.Generator, n: int) -> int:
    return int(torch.randint(n, (), generator=g))


def random_face(g: torch.Generator) -> FaceSpec:
    rx = _u(g, 0.27, 0.32)
    skin = _i(g, len(SKINS))
    bg = _i(g, len(BACKGROUNDS))
    hair = _i(g, len(HAIRS) + 1) - 1
    return FaceSpec(skin, bg, hair, _u(g, 0.43, 0.57), _u(g, 0.46, 0.56), rx, rx * _u(g, 1.15, 1.28),
                    rx * _u(g, 0.34, 0.44), rx * _u(g, 0.24, 0.30))


def render_faces(specs: list[FaceSpec], openings: torch.Tensor, size: int = 32) -> torch.Tensor:
    """specs (B,), openings (B, F) in 0..1 -> frames (B, 3, F, size, size) 0..1, anti-aliased (4x4 supersampling)."""
    b, f = openings.shape
    n = size * SUPERSAMPLE
    c = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    y, x = c.view(1, n, 1), c.view(1, 1, n)                                            # (1, n, 1), (1, 1, n)

    def col(table, idx):
        return torch.tensor([table[i] for i in idx]).view(b, 3, 1, 1)                 # (B, 3, 1, 1)

    def p(name):
        return torch.tensor([getattr(s, name) for s in specs]).view(b, 1, 1)           # (B, 1, 1)

    cx, cy, rx, ry = p("cx"), p("cy"), p("rx"), p("ry")
    img = col(BACKGROUNDS, [s.background for s in specs]).expand(b, 3, n, n).clone()  # (B, 3, n, n)
    hair_on = torch.tensor([s.hair >= 0 for s in specs]).view(b, 1, 1)
    hair = (((x - cx) / (rx * 1.12)) ** 2 + ((y - cy + 0.03) / (ry * 1.05)) ** 2 <= 1) & (y < cy - 0.1 * ry) & hair_on
    img = torch.where(hair.unsqueeze(1), col(HAIRS, [max(s.hair, 0) for s in specs]), img)
    face = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1                             # (B, n, n)
    img = torch.where(face.unsqueeze(1), col(SKINS, [s.skin for s in specs]), img)
    er = 0.16 * rx
    eyes = torch.zeros_like(face)
    for side in (-1, 1):
        eyes |= (x - (cx + side * 0.42 * rx)) ** 2 + (y - (cy - 0.22 * ry)) ** 2 <= er ** 2
    img = torch.where(eyes.unsqueeze(1), torch.tensor(EYES).view(1, 3, 1, 1), img)
    # the mouth, per frame: half-height from a closed line (0.012) to mouth_h
    my = (cy + 0.46 * ry).unsqueeze(1)                                                 # (B, 1, 1, 1)
    mh = (0.012 + openings.clamp(0, 1).view(b, f, 1, 1) * p("mouth_h").unsqueeze(1))   # (B, F, 1, 1)
    mouth = ((x - cx.unsqueeze(1)) / p("mouth_w").unsqueeze(1)) ** 2 + ((y - my) / mh) ** 2 <= 1   # (B, F, n, n)
    frames = torch.where(mouth.unsqueeze(2), torch.tensor(MOUTH).view(1, 1, 3, 1, 1), img.unsqueeze(1))
    frames = torch.nn.functional.avg_pool2d(frames.flatten(0, 1), SUPERSAMPLE)         # (B*F, 3, size, size)
    return frames.view(b, f, 3, size, size).permute(0, 2, 1, 3, 4).contiguous()       # (B, 3, F, H, W)


def synth_voice(g: torch.Generator, seconds: float, rate: int = 8000) -> torch.Tensor:
    """A synthetic voice (T,) in -1..1: syllables of a harmonic tone with random timing and level."""
    n = int(round(seconds * rate))
    env = torch.zeros(n)
    f0 = torch.full((n,), _u(g, 90, 260))
    pos = _u(g, -0.2, 0.1)
    while pos < seconds:
        dur = _u(g, 0.07, 0.35) if torch.rand((), generator=g) < 0.85 else _u(g, 0.35, 0.7)   # sung notes
        level = 10 ** (_u(g, -22, 0) / 20)
        a, b = int(max(pos, 0) * rate), int(min(pos + dur, seconds) * rate)
        if b > a:
            ph = (torch.arange(a, b, dtype=torch.float32) / rate - pos) / dur                  # 0..1 in the syllable
            attack = _u(g, 0.1, 0.4)
            shape = torch.where(ph < attack, ph / attack, 1 - (ph - attack) / (1 - attack) * _u(g, 0.3, 1.0))
            env[a:b] = torch.maximum(env[a:b], level * shape.clamp(0, 1) ** 1.5)
            f0[a:b] = f0[a:b] * (1 + _u(g, -0.15, 0.15) * ph)
        gap = _u(g, 0.02, 0.2) if torch.rand((), generator=g) < 0.8 else _u(g, 0.25, 0.8)
        pos += dur + gap
    phase = 2 * math.pi * torch.cumsum(f0, 0) / rate
    tone = sum(torch.sin(k * phase) / k for k in range(1, 7)) / 2.45
    breath = torch.randn(n, generator=g) * 0.1
    floor = torch.randn(n, generator=g) * 10 ** (_u(g, -75, -50) / 20)
    return (env * (tone + breath) * _u(g, 0.2, 0.9) + floor).clamp(-1, 1)


SAMPLE_FACE = FaceSpec(skin=1, background=1, hair=0, cx=0.5, cy=0.52, rx=0.30, ry=0.36, mouth_w=0.12, mouth_h=0.08)


def sample_portrait(size: int = 128) -> torch.Tensor:
    """workflows/assets/portrait.png: one face in the training style, mouth closed, (size, size, 3) 0..1."""
    return render_faces([SAMPLE_FACE], torch.zeros(1, 1), size)[0, :, 0].permute(1, 2, 0)
