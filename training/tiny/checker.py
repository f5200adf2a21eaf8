"""Pixel quality checker for Kinema-Tiny: colour segmentation and centroid tracking, no learned judge.

For a generated clip (F, H, W, 3) float 0..1 the checker finds the object (bright pixels: the training
backgrounds are dark, see data.BG_MAX), then reads per frame its colour (nearest palette colour), its shape
(the best overlap with each shape's template at any orientation, scaled to the object's area) and its centroid and area,
and per clip its motion (net displacement, hop, area change, rotation). `score` turns clips and the prompts they
were made for into accuracies:

- colour:       the clip's majority colour is the prompted colour
- shape:        the clip's majority shape is the prompted shape
- direction:    for "moves left/right/up/down" prompts, the tracked displacement points the prompted way
- motion:       for every prompt, the motion class (incl. bounces, spins, grows, shrinks, stays still) matches
- consistency:  consecutive frame pairs where the object is present in both, keeps its colour, does not jump
                and does not change its area by more than 2x (or split into pieces)
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from .data import COLOURS, MOTIONS, SHAPES, TRANSLATIONS, _inside, parse_prompt

OBJECT_LEVEL = 0.55     # a pixel whose largest channel is at least this belongs to the object
MIN_AREA = 6            # pixels: less than this and the frame has no object
_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)       # (6, 3)
_COLOUR_NAMES = list(COLOURS)

# The fixed evaluation set: 72 prompts (every colour x shape pairing three times; 48 translations) and seeds.
_MOTION_CYCLE = ("moves left", "moves right", "moves up", "moves down", "bounces", "spins",
                 "moves left", "moves right", "moves up", "moves down", "grows", "shrinks",
                 "moves left", "moves right", "moves up", "moves down", "stays still", "bounces")


def eval_set(count: int = 72) -> list[tuple[str, int]]:
    """(prompt, seed) pairs, fixed forever: i-th prompt pairs colour i%6, shape (i//6)%4, motion i%18."""
    out = []
    colours = list(COLOURS)
    for i in range(count):
        colour, shape, motion = colours[i % 6], SHAPES[(i // 6) % 4], _MOTION_CYCLE[i % len(_MOTION_CYCLE)]
        out.append((f"a {colour} {shape} {motion}", 1000 + i))
    return out


@dataclass
class FrameStats:
    area: float
    x: float             # centroid, pixels
    y: float
    colour: str | None
    shapes: dict         # shape -> best IoU with its template (any orientation)
    pieces: int          # connected components above a quarter of the largest one's size
    mask: np.ndarray = field(repr=False, default=None)


@dataclass
class ClipStats:
    frames: list[FrameStats]
    colour: str | None
    shape: str | None
    motion: str
    displacement: tuple[float, float]   # (dx, dy) pixels over the clip, from a line fit to the track
    consistency: float                  # fraction of consecutive frame pairs that pass


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean (H, W) mask, largest first, as boolean masks."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    comps = []
    for sy, sx in zip(*np.nonzero(mask)):
        if seen[sy, sx]:
            continue
        stack, pix = [(sy, sx)], []
        seen[sy, sx] = True
        while stack:
            y, x = stack.pop()
            pix.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        comp = np.zeros_like(mask, dtype=bool)
        ys, xs = zip(*pix)
        comp[list(ys), list(xs)] = True
        comps.append(comp)
    return sorted(comps, key=lambda c: -c.sum())


# area of each shape in squared radii (data._inside), to scale a template to the object's area
_SHAPE_AREA = {"circle": math.pi, "square": 1.72 ** 2, "triangle": 3 * math.sqrt(3) / 4 * 1.3 ** 2,
               "star": 5 * 1.3 * 0.56 * math.sin(math.pi / 5)}
_PERIOD = {"circle": 2 * math.pi, "square": math.pi / 2, "triangle": 2 * math.pi / 3, "star": 2 * math.pi / 5}


def shape_scores(masks: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> list[dict[str, float]]:
    """Best IoU of each mask with each shape's template (12 orientations), at the mask's centre and area.

    masks (N, H, W) bool; cx, cy (N,) centroids in pixels -> one {shape: IoU} per mask.
    """
    n, size = masks.shape[0], masks.shape[1]
    ss = 2
    grid = (torch.arange(size * ss, dtype=torch.float32) + 0.5) / ss - 0.5     # sub-pixel centres, pixels
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")                           # (S, S)
    m = torch.from_numpy(masks)                                                  # (N, H, W)
    area = m.sum(dim=(1, 2)).float()                                             # (N,)
    x0 = torch.as_tensor(cx, dtype=torch.float32).view(n, 1, 1, 1)
    y0 = torch.as_tensor(cy, dtype=torch.float32).view(n, 1, 1, 1)
    out: list[dict[str, float]] = [{} for _ in range(n)]
    for shape in SHAPES:
        r = (area / _SHAPE_AREA[shape]).sqrt().view(n, 1, 1, 1)
        steps = 1 if shape == "circle" else 12
        a = torch.arange(steps, dtype=torch.float32).view(1, steps, 1, 1) * (_PERIOD[shape] / steps)
        dx, dy = (gx - x0) / r, (gy - y0) / r                                    # (N, 1, S, S)
        c, s = torch.cos(a), torch.sin(a)                                        # (1, K, 1, 1)
        cover = _inside(shape, c * dx + s * dy, -s * dx + c * dy).float()        # (N, K, S, S)
        temp = cover.view(n, steps, size, ss, size, ss).mean(dim=(3, 5)) >= 0.5  # (N, K, H, W)
        inter = (temp & m[:, None]).sum(dim=(2, 3)).float()
        union = (temp | m[:, None]).sum(dim=(2, 3)).float().clamp_min(1)
        best = (inter / union).amax(dim=1)                                       # (N,)
        for i, v in enumerate(best.tolist()):
            out[i][shape] = v
    return out


def frame_stats(frame: np.ndarray, with_shape: bool = True) -> FrameStats:
    """One frame (H, W, 3) float 0..1 -> where and what the object is."""
    level = frame.max(axis=2)
    mask = level >= OBJECT_LEVEL
    comps = _components(mask) if mask.any() else []
    if not comps or comps[0].sum() < MIN_AREA:
        return FrameStats(0.0, float("nan"), float("nan"), None, {}, 0, np.zeros_like(mask))
    main = comps[0]
    pieces = sum(1 for c in comps if c.sum() >= max(MIN_AREA, main.sum() / 4))
    ys, xs = np.nonzero(main)
    core = main & (level >= np.quantile(level[main], 0.4))      # the brighter interior, away from blended edges
    rgb = np.median(frame[core], axis=0)
    colour = _COLOUR_NAMES[int(np.argmin(((_PALETTE - rgb) ** 2).sum(1)))]
    shapes = shape_scores(main[None], np.array([xs.mean()]), np.array([ys.mean()]))[0] if with_shape else {}
    return FrameStats(float(main.sum()), float(xs.mean()), float(ys.mean()), colour, shapes, pieces, main)


def _rotation(frames: list[FrameStats]) -> float:
    """1 - mean IoU of each frame's mask with the first one's, both centred (0: no change of outline)."""
    def centred(f):
        ys, xs = np.nonzero(f.mask)
        return set(zip((ys - round(f.y)).tolist(), (xs - round(f.x)).tolist()))
    ref = centred(frames[0])
    ious = []
    for f in frames[1:]:
        cur = centred(f)
        ious.append(len(ref & cur) / max(1, len(ref | cur)))
    return 1.0 - float(np.mean(ious)) if ious else 0.0


def analyse(video: np.ndarray) -> ClipStats:
    """video (F, H, W, 3) float 0..1 -> ClipStats."""
    video = np.asarray(video, dtype=np.float32)
    num, size = video.shape[0], video.shape[1]
    frames = [frame_stats(f, with_shape=False) for f in video]
    present = [f for f in frames if f.area > 0]
    if present:
        scores = shape_scores(np.stack([f.mask for f in present]), np.array([f.x for f in present]),
                              np.array([f.y for f in present]))
        for f, sc in zip(present, scores):
            f.shapes = sc
    colour = Counter(f.colour for f in present).most_common(1)[0][0] if present else None
    shape = None
    if present:
        big = max(f.area for f in present)
        scores = Counter()
        for f in present:
            if f.area >= 0.6 * big:
                scores.update(f.shapes)
        shape = scores.most_common(1)[0][0]
    motion, disp = "none", (0.0, 0.0)
    if len(present) >= max(2, num // 2):
        t = np.array([i for i, f in enumerate(frames) if f.area > 0], dtype=np.float64)
        xs = np.array([f.x for f in present])
        ys = np.array([f.y for f in present])
        dx = np.polyfit(t, xs, 1)[0] * (num - 1)
        dy = np.polyfit(t, ys, 1)[0] * (num - 1)
        disp = (float(dx), float(dy))
        ends = (ys[: max(1, len(ys) // 4)].mean() + ys[-max(1, len(ys) // 4):].mean()) / 2
        hop = ends - ys.min()
        k = max(1, len(present) // 4)
        grow = np.mean([f.area for f in present[-k:]]) / max(1.0, np.mean([f.area for f in present[:k]]))
        move = 0.2 * size
        if max(abs(dx), abs(dy)) >= move:
            motion = ("moves right" if dx > 0 else "moves left") if abs(dx) >= abs(dy) else \
                ("moves down" if dy > 0 else "moves up")
            if motion == "moves up" and hop >= move and abs(dy) < hop:
                motion = "bounces"
        elif hop >= move:
            motion = "bounces"
        elif grow >= 1.6:
            motion = "grows"
        elif grow <= 1 / 1.6:
            motion = "shrinks"
        elif _rotation(present) >= 0.25:
            motion = "spins"
        else:
            motion = "stays still"
    # frame-to-frame consistency
    ok = []
    for a, b in zip(frames, frames[1:]):
        good = (a.area > 0 and b.area > 0 and a.colour == colour and b.colour == colour
                and a.pieces == 1 and b.pieces == 1
                and 0.5 <= b.area / a.area <= 2.0
                and math.hypot(b.x - a.x, b.y - a.y) <= 0.25 * size)
        ok.append(good)
    return ClipStats(frames, colour, shape, motion, disp, float(np.mean(ok)) if ok else 0.0)


def _motion_ok(expected: str, got: str, shape: str | None) -> bool:
    if expected == got:
        return True
    # a spinning circle looks exactly like a still one
    return expected == "spins" and shape == "circle" and got == "stays still"


def score(prompts: list[str], clips: list[ClipStats]) -> dict:
    """Accuracies (0..1) over clips made for prompts; direction counts only the translation prompts."""
    colour = shape = direction = motion = n_dir = 0
    for prompt, c in zip(prompts, clips):
        want_colour, want_shape, want_motion = parse_prompt(prompt)
        colour += c.colour == want_colour
        shape += c.shape == want_shape
        motion += _motion_ok(want_motion, c.motion, want_shape)
        if want_motion in TRANSLATIONS:
            n_dir += 1
            direction += c.motion == want_motion
    n = max(1, len(clips))
    return {"clips": len(clips), "colour": colour / n, "shape": shape / n, "direction": direction / max(1, n_dir),
            "motion": motion / n, "consistency": float(np.mean([c.consistency for c in clips])) if clips else 0.0,
            "consistent_clips": float(np.mean([c.consistency == 1.0 for c in clips])) if clips else 0.0}


def confusion(prompts: list[str], clips: list[ClipStats]) -> dict[str, Counter]:
    """Expected motion -> Counter of detected motions (for notes and debugging)."""
    out: dict[str, Counter] = {m: Counter() for m in MOTIONS}
    for prompt, c in zip(prompts, clips):
        out[parse_prompt(prompt)[2]][c.motion] += 1
    return out


def format_scores(s: dict) -> str:
    return (f"colour {s['colour']:.0%}  shape {s['shape']:.0%}  direction {s['direction']:.0%}  "
            f"motion {s['motion']:.0%}  consistency {s['consistency']:.0%} ({s['consistent_clips']:.0%} of clips)")
