"""Training and held-out clips for the Kinema-Tiny Upscaler: Kinema-Tiny's procedural clips (data.py) rendered at
64 px as the ground truth, and 32 px inputs made from them the ways a user's 32 px clip is made.

Ground truth: data.render at 64 px (anti-aliased). Stripe and checker backgrounds come at two scales: their own
64 px pattern, or half of them the 32 px pattern enlarged 2x with hard edges (the pattern a 32 px Kinema-Tiny clip
shows), so both fine and coarse textures are seen.

Inputs (32 px), one of:
    area      2x2 average: the camera model of the 32 px renders (anti-aliased coverage)
    bilinear  antialiased bilinear shrink: what Load Video does when it reads a 64 px file at 32 px
    tae       area, then a round trip through Kinema-Tiny's temporal autoencoder: what Kinema-Tiny's own
              generated clips look like (its decoder's blur and colour shifts), with the ground truth known
each stored as 8-bit (frames pass through 8-bit files and previews).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from . import data

DEGRADATIONS = ("area", "bilinear", "tae")
FRAMES, SIZE = 9, 64


def quantise(x: torch.Tensor) -> torch.Tensor:
    """To 8 bits and back: (...) 0..1."""
    return (x.clamp(0, 1) * 255).round() / 255


def render_hr(g: torch.Generator, num_frames: int = FRAMES, size: int = SIZE) -> torch.Tensor:
    """One random clip at `size` px: (3, F, H, W) float 0..1 (see the module docstring for the backgrounds)."""
    spec = data.random_spec(g)
    coarse = spec.background in ("stripes", "checker") and bool(torch.rand((), generator=g) < 0.5)
    bg = None
    if coarse:   # the 32 px pattern, pixels doubled (hard edges, as a 32 px render shows it)
        bg = data.background(spec, size // 2).repeat_interleave(2, 1).repeat_interleave(2, 2)
    return data.render(spec, num_frames, size, bg=bg)


def make_hr(seed: int, count: int) -> torch.Tensor:
    """`count` ground-truth clips from one seed: (N, 3, F, 64, 64) uint8."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([(render_hr(g) * 255).round().to(torch.uint8) for _ in range(count)])


def shrink(hr: torch.Tensor, how: str) -> torch.Tensor:
    """(N, 3, F, H, W) float -> (N, 3, F, H/2, W/2) float by `area` or `bilinear` (antialiased, Load Video's)."""
    n, c, f, h, w = hr.shape
    frames = hr.transpose(1, 2).reshape(n * f, c, h, w)                                 # (N*F, 3, H, W)
    if how == "area":
        small = F.avg_pool2d(frames, 2)
    elif how == "bilinear":
        small = F.interpolate(frames, size=(h // 2, w // 2), mode="bilinear", antialias=True, align_corners=False)
    else:
        raise ValueError(f"unknown shrink {how!r}")
    return small.reshape(n, f, c, h // 2, w // 2).transpose(1, 2)                        # (N, 3, F, h, w)


@torch.no_grad()
def tae_round_trip(vae, lr: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """(N, 3, F, h, w) 0..1 through Kinema-Tiny's TAE (encode, decode): the look of its generated clips."""
    out = []
    for i in range(0, len(lr), batch):
        x = lr[i:i + batch].float()
        out.append(vae.decode_normalised(vae.encode_normalised(x)).clamp(0, 1))
    return torch.cat(out)


def load_tae():
    """Kinema-Tiny Video's temporal autoencoder (the bundled weights), fp32 on the CPU."""
    from kinema.models.tiny.pipeline import DEFAULT_WEIGHTS, load_folder
    return load_folder(DEFAULT_WEIGHTS).vae


def inputs(hr: torch.Tensor, how: str, vae=None) -> torch.Tensor:
    """Ground truth (N, 3, F, 64, 64) uint8 or float -> 32 px inputs (N, 3, F, 32, 32) float, 8-bit values."""
    x = hr.float() / 255 if hr.dtype == torch.uint8 else hr.float()
    if how == "tae":
        return quantise(tae_round_trip(vae if vae is not None else load_tae(), quantise(shrink(x, "area"))))
    return quantise(shrink(x, how))
