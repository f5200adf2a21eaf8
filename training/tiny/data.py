"""Procedural clips for Kinema-Tiny: one coloured shape doing one motion on a plain or simple textured background.

Everything is drawn in code, deterministically from a seed (a torch.Generator on the CPU), so the training data,
the quality checker's reference set and the tests are all reproducible without a download.

A clip: `num_frames` RGB frames of `size` x `size` pixels, float 0..1, laid out (3, F, H, W). Backgrounds are dark
(every channel <= 0.35) and objects bright (their largest channel >= 0.8), so the checker can segment the
object by brightness alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kinema.models.tiny.text import COLOURS, SHAPES  # the shapes and colours the model has words for

MOTIONS = ("moves left", "moves right", "moves up", "moves down", "bounces", "spins", "grows", "shrinks",
           "stays still")
TRANSLATIONS = {"moves left": (-1, 0), "moves right": (1, 0), "moves up": (0, -1), "moves down": (0, 1)}
BACKGROUNDS = ("plain", "stripes", "checker", "gradient", "blotches")
BG_MAX = 0.35                     # every background channel stays at or below this
EXTENT = 1.3                      # the farthest any shape reaches from its centre, in radii
SUPERSAMPLE = 4                   # coverage is averaged over 4x4 sub-pixels (anti-aliased edges)


@dataclass(frozen=True)
class ClipSpec:
    """What one clip shows. Sizes and positions are fractions of the frame size."""
    shape: str
    colour: str
    motion: str
    radius: float          # half the object's extent, fraction of the frame (0.15..0.19)
    x0: float              # centre at the first frame, fraction of the frame (0 = left edge)
    y0: float
    travel: float          # translation / bounce height, fraction of the frame
    angle0: float          # orientation at the first frame, radians
    background: str
    bg_seed: int

    @property
    def prompt(self) -> str:
        return f"a {self.colour} {self.shape} {self.motion}"


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def _pick(g: torch.Generator, options):
    return options[int(torch.randint(len(options), (), generator=g))]


def random_spec(g: torch.Generator, shape: str | None = None, colour: str | None = None,
                motion: str | None = None) -> ClipSpec:
    """A random clip description; shape/colour/motion fixed when given. Positions keep the object in frame."""
    shape = shape or _pick(g, SHAPES)
    colour = colour or _pick(g, list(COLOURS))
    motion = motion or _pick(g, MOTIONS)
    radius = _uniform(g, 0.15, 0.19)
    edge = radius * EXTENT + 0.02      # keep the whole object inside the frame
    travel = 0.0
    if motion in TRANSLATIONS:
        travel = _uniform(g, 0.38, 0.46)
        dx, dy = TRANSLATIONS[motion]
        along = _uniform(g, edge, 1 - edge - travel)
        across = _uniform(g, edge, 1 - edge)
        if dx:
            x0, y0 = (along if dx > 0 else 1 - along), across
        else:
            x0, y0 = across, (along if dy > 0 else 1 - along)
    elif motion == "bounces":          # starts on the floor, hops up and lands again
        travel = _uniform(g, 0.36, 0.44)
        x0 = _uniform(g, edge, 1 - edge)
        y0 = _uniform(g, edge + travel, 1 - edge)
    else:
        m = edge + radius * EXTENT * 0.4 if motion in ("grows", "shrinks") else edge   # reaches 1.4x radius
        x0, y0 = _uniform(g, m, 1 - m), _uniform(g, m, 1 - m)
    angle0 = _uniform(g, -0.15, 0.15)
    background = _pick(g, BACKGROUNDS)
    bg_seed = int(torch.randint(2**31 - 1, (), generator=g))
    return ClipSpec(shape, colour, motion, radius, x0, y0, travel, angle0, background, bg_seed)


def trajectory(spec: ClipSpec, num_frames: int) -> torch.Tensor:
    """Per frame (x, y, scale, angle): (F, 4), positions as fractions of the frame."""
    t = torch.linspace(0, 1, num_frames)                              # (F,)
    x = torch.full_like(t, spec.x0)
    y = torch.full_like(t, spec.y0)
    scale = torch.ones_like(t)
    angle = torch.full_like(t, spec.angle0)
    if spec.motion in TRANSLATIONS:
        dx, dy = TRANSLATIONS[spec.motion]
        x = x + dx * spec.travel * t
        y = y + dy * spec.travel * t
    elif spec.motion == "bounces":
        y = y - spec.travel * torch.sin(math.pi * t)                  # up, then back down to the floor
    elif spec.motion == "spins":
        angle = angle + 2.6 * t                                       # ~150 degrees over the clip, one way
    elif spec.motion == "grows":
        scale = 0.6 + 0.8 * t
    elif spec.motion == "shrinks":
        scale = 1.4 - 0.8 * t
    return torch.stack([x, y, scale, angle], dim=1)


def _inside(shape: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside test in the object's own frame, coordinates in units of its radius (v points down)."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return torch.maximum(u.abs(), v.abs()) <= 0.86
    if shape == "triangle":                                           # equilateral, apex up, circumradius 1.3
        r = 1.3
        inside = v <= r / 2
        for k in range(3):
            a = -math.pi / 2 + k * 2 * math.pi / 3                    # vertex directions
            nx, ny = math.cos(a + math.pi), math.sin(a + math.pi)     # edge normals point away from the vertex
            inside &= (u * nx + v * ny) <= r / 2
        return inside
    if shape == "star":                                               # 5 points, outer 1.3, inner 0.56
        outer, inner = 1.3, 0.56
        theta = torch.atan2(v, u) + math.pi / 2                       # 0 at the top point
        sector = 2 * math.pi / 5
        phi = torch.remainder(theta, sector)
        phi = torch.where(phi > sector / 2, sector - phi, phi)        # fold: 0 at a point, sector/2 at a notch
        r = torch.sqrt(u * u + v * v)
        # point (r cos phi, r sin phi) against the edge from (outer, 0) to (inner cos s/2, inner sin s/2)
        px, py = r * torch.cos(phi), r * torch.sin(phi)
        ax, ay = outer, 0.0
        bx, by = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
        cross = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
        return cross >= 0
    raise ValueError(f"unknown shape {shape!r}")


def background(spec: ClipSpec, size: int) -> torch.Tensor:
    """A static dark background (3, H, W): plain, stripes, checker, gradient or soft blotches."""
    g = torch.Generator().manual_seed(spec.bg_seed)
    base = torch.rand(3, generator=g) * 0.22 + 0.03                   # dark colour
    other = (base + (torch.rand(3, generator=g) - 0.5) * 0.2).clamp(0.02, BG_MAX)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    kind = spec.background
    if kind == "plain":
        mix = torch.zeros(size, size)
    elif kind == "stripes":
        period = 4 + int(torch.randint(6, (), generator=g))
        axis = int(torch.randint(3, (), generator=g))
        coord = (xx, yy, xx + yy)[axis]
        mix = (torch.remainder(coord, period) < period / 2).float()
    elif kind == "checker":
        cell = 3 + int(torch.randint(5, (), generator=g))
        mix = (torch.remainder((xx // cell) + (yy // cell), 2)).float()
    elif kind == "gradient":
        a = torch.rand((), generator=g).item() * 2 * math.pi
        ramp = (xx - size / 2) * math.cos(a) + (yy - size / 2) * math.sin(a)
        mix = (ramp / size + 0.5).clamp(0, 1)
    elif kind == "blotches":
        low = torch.rand(1, 1, 4, 4, generator=g)
        mix = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)[0, 0]
        mix = mix.clamp(0, 1)
    else:
        raise ValueError(f"unknown background {kind!r}")
    return base[:, None, None] * (1 - mix) + other[:, None, None] * mix


def render(spec: ClipSpec, num_frames: int = 9, size: int = 32, track: torch.Tensor | None = None,
           bg: torch.Tensor | None = None) -> torch.Tensor:
    """One clip as (3, F, H, W) float 0..1; track (F, 4) of (x, y, scale, angle) replaces spec's own trajectory,
    bg (3, H, W) replaces spec's own background."""
    ss = SUPERSAMPLE
    n = size * ss
    grid = (torch.arange(n, dtype=torch.float32) + 0.5) / n            # sub-pixel centres, fractions of the frame
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")                 # (n, n)
    traj = trajectory(spec, num_frames) if track is None else track    # (F, 4)
    colour = torch.tensor(COLOURS[spec.colour])
    bg = background(spec, size) if bg is None else bg                  # (3, H, W)
    frames = []
    for x, y, scale, angle in traj.tolist():
        r = spec.radius * scale
        dx, dy = (gx - x) / r, (gy - y) / r
        c, s = math.cos(angle), math.sin(angle)
        u, v = c * dx + s * dy, -s * dx + c * dy                       # rotate into the object's frame
        cover = _inside(spec.shape, u, v).float()                      # (n, n)
        alpha = cover.view(size, ss, size, ss).mean(dim=(1, 3))        # (H, W) anti-aliased coverage
        frames.append(bg * (1 - alpha) + colour[:, None, None] * alpha)
    return torch.stack(frames, dim=1)                                  # (3, F, H, W)


def make_clips(seed: int, count: int, num_frames: int = 9, size: int = 32):
    """`count` random clips from one seed: (video (N, 3, F, H, W), specs)."""
    g = torch.Generator().manual_seed(seed)
    specs = [random_spec(g) for _ in range(count)]
    return torch.stack([render(s, num_frames, size) for s in specs]), specs


def parse_prompt(prompt: str) -> tuple[str | None, str | None, str | None]:
    """(colour, shape, motion) named in a prompt, None for any the prompt does not name."""
    words = prompt.lower().replace(",", " ").replace(".", " ").split()
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPES), None)
    text = " ".join(words)
    motion = next((m for m in MOTIONS if m in text), None)
    if motion is None:
        for m in MOTIONS:
            if m.split()[-1] in words and m.split()[-1] not in ("moves", "stays"):
                motion = m
    return colour, shape, motion
