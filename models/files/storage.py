"""Denoiser weights stored in less memory than the computation uses (ComfyUI's `weight_dtype`): a 14B Wan expert
is 28 GB in bf16 and 14 GB in fp8.

Only the Linear layers' weights (over 99% of a DiT's parameters) are stored small; everything else is loaded in the
compute dtype. A stored Linear (`StoredLinear`) casts its weight to the input's dtype for each call and multiplies
by its `scale_weight` when it has one: `F.linear(x, weight.to(x.dtype) * scale_weight, bias)`, as ComfyUI's
scaled-fp8 layers compute (comfy/ops.py). So a ComfyUI scaled-fp8 file keeps its own fp8 bytes and scales, and a
16-bit file asked to be fp8 is quantised per tensor (scale = absmax / 448, e4m3fn's largest value) rather than cast
plainly (a plain cast flushes weights under 2^-9 to zero).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .formats import FP8, read_tensor

E4M3_MAX = 448.0


class StoredLinear(torch.nn.Linear):
    """nn.Linear whose weight (and bias) may be stored in another dtype than the input's, fp8 with a per-tensor
    `scale_weight` buffer. Forward: x (..., in) -> (..., out) in x's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype)                       # one temporary of the compute dtype, scaled in place
        scale = getattr(self, "scale_weight", None)
        if scale is not None:
            w = w.mul_(scale.to(x.dtype)) if w.data_ptr() != self.weight.data_ptr() else w * scale.to(x.dtype)
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))


def quantize_fp8(w: torch.Tensor, fmt: torch.dtype = torch.float8_e4m3fn,
                 rows: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 weight, float32 scalar scale) with weight.float() * scale ~= w; the scale maps absmax to fp8's max.
    Quantised `rows` rows at a time, so no float32 copy of the whole tensor is made."""
    top = torch.finfo(fmt).max
    w = w.detach()
    lo, hi = torch.aminmax(w)
    scale = (torch.maximum(-lo, hi).float() / top).clamp(min=1e-12)
    out = torch.empty(w.shape, dtype=fmt, device=w.device)
    for start in range(0, max(1, w.shape[0]), rows):
        out[start:start + rows] = (w[start:start + rows].float() / scale).to(fmt)
    return out, scale


def read_stored(f, key: str, storage: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One Linear weight in its storage dtype: (weight, scale or None).

    fp8 storage: an fp8 tensor of the file stays as stored, with its ComfyUI `scale_weight` if it has one; a wider
    tensor is quantised per tensor. 16-bit storage: the exact de-scaled value, cast (formats.read_tensor)."""
    if storage not in FP8:
        return read_tensor(f, key, storage, device), None
    scale_key = key[: -len("weight")] + "scale_weight"
    if f.dtype(key) in FP8:
        scale = f.get(scale_key).float().reshape(()).to(device) if scale_key in f else None
        return f.get(key).to(device), scale
    return quantize_fp8(read_tensor(f, key, torch.float32, device), storage)


def stored_linears(model: torch.nn.Module, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """{weight name: module name} of the Linear layers whose weights may be stored small (not under `skip`)."""
    out = {}
    for name, mod in model.named_modules():
        if type(mod) is torch.nn.Linear and not any(s in name.split(".") or name.startswith(s) for s in skip):
            out[f"{name}.weight"] = name
    return out


def use_stored(model: torch.nn.Module, scales: dict[str, torch.Tensor], compute: torch.dtype) -> int:
    """After the weights are assigned: every Linear whose weight is not in `compute` dtype, or has a scale, becomes a
    StoredLinear (scales: {module name: float32 scalar}). Returns how many."""
    n = 0
    for name, mod in model.named_modules():
        if type(mod) is torch.nn.Linear and (mod.weight.dtype != compute or name in scales):
            mod.__class__ = StoredLinear
            if name in scales:
                mod.register_buffer("scale_weight", scales[name], persistent=False)
            n += 1
    return n
