"""Pixel measurements for Kinema-Tiny Portrait: mouth opening, face colour and face position, from frames alone.

- The face is found in the reference portrait: the background is the median of the border pixels; the skin
  colour is the median colour of the pixels that differ from it, in the middle of the frame; the skin mask is
  every pixel within 0.15 (RGB distance) of the skin colour; the face box is that mask's bounding box.
- Mouth opening of a frame: inside the lower part of the face box (below 60 % of its height, the central 60 %
  of its width — the eyes sit above), the sum of each pixel's distance from the skin colour, clipped to 0..1
  per pixel at 0.5: an open mouth (dark red) covers more pixels. Units are "mouth pixels", a scale that
  Pearson correlation ignores.
- Face colour / position per frame: the mean colour of that frame's skin-coloured pixels, and the centroid of
  everything that is not background (head, hair, eyes and mouth: it does not move when the mouth opens).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FaceBox:
    skin: torch.Tensor          # (3,) RGB 0..1
    background: torch.Tensor    # (3,) RGB 0..1
    top: int
    bottom: int                 # inclusive
    left: int
    right: int


def find_face(reference: torch.Tensor) -> FaceBox:
    """reference (H, W, 3) 0..1 -> the face's skin colour and bounding box."""
    h, w, _ = reference.shape
    border = torch.cat([reference[0], reference[-1], reference[:, 0], reference[:, -1]])   # (2H+2W, 3)
    bg = border.median(dim=0).values
    centre = reference[h // 4: 3 * h // 4, w // 4: 3 * w // 4].reshape(-1, 3)
    fg = centre[(centre - bg).norm(dim=1) > 0.15]
    skin = (fg if len(fg) else centre).median(dim=0).values
    mask = (reference - skin).norm(dim=-1) < 0.15                                         # (H, W)
    ys, xs = mask.nonzero(as_tuple=True)
    if len(ys) == 0:
        return FaceBox(skin, bg, 0, h - 1, 0, w - 1)
    return FaceBox(skin, bg, int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max()))


def mouth_openings(frames: torch.Tensor, face: FaceBox) -> torch.Tensor:
    """frames (F, H, W, 3) 0..1 -> (F,) mouth opening in mouth pixels."""
    fh, fw = face.bottom - face.top + 1, face.right - face.left + 1
    y0, y1 = face.top + int(0.6 * fh), face.bottom + 1
    x0, x1 = face.left + int(0.2 * fw), face.right + 1 - int(0.2 * fw)
    box = frames[:, y0:y1, x0:x1].float()
    return ((box - face.skin).norm(dim=-1) / 0.5).clamp(0, 1).sum(dim=(1, 2))


def face_tracks(frames: torch.Tensor, face: FaceBox) -> tuple[torch.Tensor, torch.Tensor]:
    """frames (F, H, W, 3) -> (skin colours (F, 3), head centroids (F, 2) as (x, y) pixels)."""
    mask = ((frames.float() - face.skin).norm(dim=-1) < 0.15).float()                    # (F, H, W) skin
    n = mask.sum(dim=(1, 2)).clamp(min=1)
    colour = (frames.float() * mask.unsqueeze(-1)).sum(dim=(1, 2)) / n.unsqueeze(-1)
    head = ((frames.float() - face.background).norm(dim=-1) > 0.15).float()             # (F, H, W) not background
    m = head.sum(dim=(1, 2)).clamp(min=1)
    h, w = head.shape[1:]
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    centroid = torch.stack([(head * xs).sum(dim=(1, 2)) / m, (head * ys).sum(dim=(1, 2)) / m], dim=1)
    return colour, centroid


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    den = (a.norm() * b.norm()).item()
    return float((a * b).sum().item() / den) if den > 0 else 0.0
