"""Tiny video decoders (TAEHV-style: taew2_1, taew2_2, taehv, taehv1_5, taeltx) for live previews and draft decodes.

A tiny autoencoder decodes a video model's latents to frames at a fraction of the full VAE's cost: 2-D convolutions
on each latent frame, "memory" blocks that see the previous frame's features, nearest upsampling in space and a
1x1 convolution that grows each frame into 2 in time (twice for Wan / Hunyuan: 4 frames per latent frame; three
times for LTX: 8). The first t - 1 frames are dropped, so f latent frames give t (f - 1) + 1 frames, the full VAE's
count. It decodes the latents the diffusion model works in (no mean / std), values 0..1.

How it runs (CPU speed, 2.6x the layer-by-layer run at 480p, same frames up to float rounding): all latent frames
of a call go through each block at once (the memory input is the frames shifted by one), channels_last; each
"upsample, grow in time, 3x3 conv" is one 2x2-phase convolution of the small input (_grow_up_conv: 4 instead of 9
multiply-adds per output pixel); the last stage runs a frame at a time (flat memory); the warm-up frames are
not computed past the last memory block.

The layout of the state dict (keys `decoder.<i>...`, encoder keys ignored) follows the public TAEHV reference
(github.com/madebyollin/taehv); this is an independent implementation of that architecture, checked against the
reference's outputs on a random-weight file (tests/data/taehv/, made by tools/make_taehv_reference.py). The
architecture is read from the tensor shapes: latent channels, the output patch (pixel shuffle: 1 for Wan 2.1 /
Hunyuan, 2 for Wan 2.2 / Hunyuan 1.5, 4 for LTX), the widths and the time strides. Files are safetensors only.

Plain torch: nothing here imports ComfyUI, the nodes or a host.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from .checks import fail

CALL_PX = 1 << 21            # output pixels x frames per call (5 frames of 832x480: one latent frame at 480p, 0.8
                             # GB of working memory on the CPU, bench/tiny_decode.py): flat with the clip's length
TAIL_PX = 1 << 19            # output pixels per call of the last stage (one 832x480 frame): full-size activations
# (latent channels, patch, frames per latent frame) -> the reference's name for the weights of that shape
KNOWN = {(16, 1, 4): "taew2_1", (48, 2, 4): "taew2_2", (32, 2, 4): "taehv1_5", (128, 4, 8): "taeltx"}
_GROW, _OUT = (7, 13, 19), 22          # decoder indices of the time-growth convolutions and of the last convolution
_WIDTH_AT = (1, 8, 14, 20)             # decoder indices of the convolutions that set the four widths


@dataclass(frozen=True)
class TinySpec:
    """A tiny decoder's architecture, as read from its state dict."""
    latent_channels: int
    patch: int                          # pixel-shuffle factor of the last layer (pixels = 8 * patch per cell)
    widths: tuple[int, int, int, int]   # channels of the three stages and of the last block (256, 128, 64, 64)
    strides: tuple[int, int, int]       # time growth of the three stages (1 or 2 each)

    @property
    def temporal(self) -> int:
        """Frames per latent frame."""
        return math.prod(self.strides)

    @property
    def spatial(self) -> int:
        """Pixels per latent cell."""
        return 8 * self.patch

    @property
    def name(self) -> str:
        known = KNOWN.get((self.latent_channels, self.patch, self.temporal))
        return known or f"tiny decoder ({self.latent_channels} ch, x{self.spatial}, t{self.temporal})"


# ---------------------------------------------------------------------------------------------------------------
# Layers (attribute names follow the reference's state dict keys)
# ---------------------------------------------------------------------------------------------------------------

def _conv3(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class _SoftClamp(nn.Module):
    """3 tanh(x / 3): latents squashed into (-3, 3)."""
    def forward(self, x):
        return torch.tanh(x / 3) * 3


class _Memory(nn.Module):
    """A residual block that also sees the previous frame's input: relu(convs([x, past]) + x)."""

    def __init__(self, n: int):
        super().__init__()
        self.conv = nn.Sequential(_conv3(2 * n, n), nn.ReLU(), _conv3(n, n), nn.ReLU(), _conv3(n, n))

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        """x, past (T, n, h, w): this frame's and the previous frame's input (no autograd: ReLUs in place)."""
        c = self.conv
        y = F.relu_(c[0](torch.cat([x, past], 1)))
        y = c[4](F.relu_(c[2](y)))
        return F.relu_(y.add_(x))


class _TimeGrow(nn.Module):
    """Each frame -> `stride` frames: a 1x1 conv to stride * n channels, split along time in order."""

    def __init__(self, n: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n, n * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(t, n, h, w) -> (t * stride, n, h, w), frame k -> k*s .. k*s + s-1; keeps channels_last."""
        t, n, h, w = x.shape
        if self.stride == 1:
            return self.conv(x)
        y = self.conv(x).permute(0, 2, 3, 1).reshape(t, h, w, self.stride, n)      # NHWC view of either layout
        return y.permute(0, 3, 1, 2, 4).reshape(t * self.stride, h, w, n).permute(0, 3, 1, 2)


def _grow_up_conv(x: torch.Tensor, grow: _TimeGrow, weight: torch.Tensor, first: int = 0) -> torch.Tensor:
    """conv3x3(nearest_upsample_2x(grow(x))) (zero padding 1, no bias) as one convolution of the small x, without the
    grown or the upsampled tensor: the 1x1 time growth is folded into the 3x3 weights (both linear), and each of
    the four output phases (row a, column b) of a 3x3 conv after nearest upsampling is a 2x2 conv of x whose taps
    are sums of the 3x3 taps that land on the same input pixel (4 instead of 9 multiply-adds per output pixel).
    Equal to the layers one after the other up to float rounding; `first`: the time phases before it are left out.
    x (T, n, h, w), grow: n -> s frames, weight (cout, n, 3, 3) -> (T * (s - first), cout, 2h, 2w) channels_last."""
    t, n, h, w = x.shape
    s, cout = grow.stride - first, weight.shape[0]
    taps = weight.new_tensor([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]])    # phase a: 3 taps -> 2
    g = grow.conv.weight.reshape(grow.stride, n, n)[first:]                        # time phase j: n -> n
    k = torch.einsum("apy,bqx,ocyx,jcm->abjompq", taps, taps, weight, g)            # (2, 2, s, cout, n, 2, 2)
    k = k.reshape(4 * s * cout, n, 2, 2).contiguous(memory_format=torch.channels_last)
    o = F.conv2d(x, k, padding=1).permute(0, 2, 3, 1).reshape(t, h + 1, w + 1, 2, 2, s, cout)   # NHWC
    y = torch.empty(t, s, h, 2, w, 2, cout, dtype=x.dtype, device=x.device)
    for a in (0, 1):
        for b in (0, 1):                                                           # phase (a, b) at (2i+a, 2j+b)
            y[:, :, :, a, :, b] = o[:, a:a + h, b:b + w, a, b].permute(0, 3, 1, 2, 4)
    return y.reshape(t * s, 2 * h, 2 * w, cout).permute(0, 3, 1, 2)


def _layers(spec: TinySpec) -> list[nn.Module]:
    n0, n1, n2, n3 = spec.widths
    s0, s1, s2 = spec.strides
    up = lambda: nn.Upsample(scale_factor=2)                                        # noqa: E731
    return [_SoftClamp(), _conv3(spec.latent_channels, n0), nn.ReLU(),
            _Memory(n0), _Memory(n0), _Memory(n0), up(), _TimeGrow(n0, s0), _conv3(n0, n1, bias=False),
            _Memory(n1), _Memory(n1), _Memory(n1), up(), _TimeGrow(n1, s1), _conv3(n1, n2, bias=False),
            _Memory(n2), _Memory(n2), _Memory(n2), up(), _TimeGrow(n2, s2), _conv3(n2, n3, bias=False),
            nn.ReLU(), _conv3(n3, 3 * spec.patch ** 2)]


# ---------------------------------------------------------------------------------------------------------------
# The decoder
# ---------------------------------------------------------------------------------------------------------------

class TinyVideoDecoder(nn.Module):
    """A TAEHV-style decoder. decode_chunks / decode take latents (1, C, f, h, w) in the diffusion model's space."""

    def __init__(self, spec: TinySpec):
        super().__init__()
        self.spec = spec
        self.decoder = nn.Sequential(*_layers(spec)).to(memory_format=torch.channels_last)   # faster CPU convs
        self.source = ""                                                           # file it was loaded from

    @property
    def temporal(self) -> int:
        return self.spec.temporal

    @property
    def spatial(self) -> int:
        return self.spec.spatial

    def pixel_frames(self, latent_frames: int) -> int:
        """Frames decoded from `latent_frames`: t (f - 1) + 1."""
        return self.temporal * (latent_frames - 1) + 1

    def _run(self, z: torch.Tensor, memory: list, skip: int = 0) -> torch.Tensor:
        """z (T, C, h, w) consecutive latent frames -> (T * t - skip, H, W, 3) frames 0..1, the first `skip` left out
        (not computed past the last memory block). All frames of the call go through each block at once, the
        memory input being the frames shifted by one; memory[i] holds the last input frame of memory block i from
        the previous call (None at the start: zeros). Upsampling, time growth and the next conv run as one
        (_grow_up_conv)."""
        d, drop = self.decoder, skip // self.spec.strides[2]       # frames of the last stage wholly left out
        x = F.relu_(d[1](d[0](z).contiguous(memory_format=torch.channels_last)))
        for first in (3, 9, 15):                             # the three stages: memory x 3, up, grow, conv
            for i in range(first, first + 3):
                past = torch.cat([memory[i] if memory[i] is not None else torch.zeros_like(x[:1]), x[:-1]])
                memory[i] = x[-1:].clone()
                x = d[i](x[drop:], past[drop:]) if i == _GROW[-1] - 2 else d[i](x, past)   # last: the needed
            if first != 15:
                x = _grow_up_conv(x, d[first + 4], d[first + 5].weight)
        return self._tail(x, skip % self.spec.strides[2])

    def _tail(self, x: torch.Tensor, skip: int) -> torch.Tensor:
        """The last stage after its memory blocks, a few frames at a time (frames are independent here, so the
        full-size activations stay small): x (n, n2, H/4, W/4) -> (n * s - skip, H, W, 3) clamped to 0..1, the
        first `skip` (< s: time phases of x[0]) not computed."""
        d, patch, s = self.decoder, self.spec.patch, self.spec.strides[2]
        n, _, h, w = x.shape
        out = torch.empty(n * s - skip, 2 * h * patch, 2 * w * patch, 3, dtype=x.dtype, device=x.device)
        step = max(1, TAIL_PX // (4 * h * w * s))                                  # small frames: several per conv
        spans = [(0, 1, skip)] if skip else []
        spans += [(k, min(k + step, n), 0) for k in range(len(spans), n, step)]
        at = 0
        for a, b, first in spans:
            y = d[_OUT](F.relu_(_grow_up_conv(x[a:b], d[_OUT - 3], d[_OUT - 2].weight, first)))
            if patch > 1:
                y = F.pixel_shuffle(y, patch)
            out[at:at + y.shape[0]] = y.permute(0, 2, 3, 1)
            at += y.shape[0]
        return out.clamp_(0, 1)

    def chunk_frames(self, h: int, w: int) -> int:
        """Latent frames per call for latents of h x w cells: CALL_PX output pixels x frames, at least 1."""
        per = self.temporal * h * w * self.spatial ** 2
        return max(1, CALL_PX // per)

    @torch.no_grad()
    def decode_chunks(self, latents: torch.Tensor, chunk: int = 0) -> Iterator[torch.Tensor]:
        """latents (1, C, f, h, w) -> IMAGE chunks (n, 8p h, 8p w, 3) float32 0..1 on the CPU, t (f - 1) + 1 frames
        in all, `chunk` latent frames per call (0: from CALL_PX). Chunks carry the memory blocks' state, so the
        result does not depend on the chunking (up to float rounding)."""
        self._check(latents)
        p = next(self.parameters())
        z = latents[0].transpose(0, 1)                                             # (f, C, h, w)
        chunk = chunk or self.chunk_frames(*z.shape[-2:])
        memory: list = [None] * len(self.decoder)
        for a in range(0, z.shape[0], chunk):
            skip = self.temporal - 1 if a == 0 else 0                              # the first t - 1: warm-up
            yield self._run(z[a:a + chunk].to(p.device, p.dtype), memory, skip).float().cpu()

    def decode(self, latents: torch.Tensor, chunk: int = 0) -> torch.Tensor:
        """latents (1, C, f, h, w) -> IMAGE (t (f - 1) + 1, H, W, 3) float32 0..1 on the CPU."""
        return torch.cat(list(self.decode_chunks(latents, chunk)))

    def _check(self, latents) -> None:
        if not isinstance(latents, torch.Tensor) or latents.ndim != 5 or latents.shape[0] != 1:
            fail("latent", "must be one clip of video latents (1, C, f, h, w)", tuple(getattr(latents, "shape", ())),
                 "Connect the Temporal Sampler's latent.")
        if latents.shape[1] != self.spec.latent_channels:
            fail("latent", f"must have the tiny decoder's {self.spec.latent_channels} channels", latents.shape[1],
                 f"Use the tiny decoder made for this model ({self.source or self.spec.name} is not).")


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------

def detect(shapes: dict[str, tuple[int, ...]], name: str = "file") -> TinySpec:
    """The architecture of a TAEHV-style state dict from its tensor shapes (keys `decoder.<i>...`)."""
    if "decoder.0.weight" in shapes:
        fail(name, "is a TAEHV 'super' decoder (ConvNeXt blocks), which Kinema does not run yet", "super",
             "Use the plain file of the same model (taew2_2.safetensors, taehv1_5.safetensors).")
    need = [f"decoder.{i}.weight" for i in (*_WIDTH_AT, _OUT)] + [f"decoder.{i}.conv.weight" for i in _GROW]
    missing = [k for k in need if k not in shapes or len(shapes[k]) != 4]
    if missing:
        fail(name, "must be a TAEHV-style tiny video decoder (taew2_1, taew2_2, taehv, taeltx)",
             f"no {missing[0]}", "Download the .safetensors file from madebyollin/taehv into models/vae_approx.")
    widths = tuple(shapes[f"decoder.{i}.weight"][0] for i in _WIDTH_AT)
    strides = tuple(shapes[f"decoder.{g}.conv.weight"][0] // n for g, n in zip(_GROW, widths))
    patch = math.isqrt(shapes[f"decoder.{_OUT}.weight"][0] // 3)
    spec = TinySpec(shapes["decoder.1.weight"][1], patch, widths, strides)          # type: ignore[arg-type]
    if 3 * patch ** 2 != shapes[f"decoder.{_OUT}.weight"][0] or any(s not in (1, 2) for s in strides):
        fail(name, "has tensor shapes no TAEHV decoder has", shapes[f"decoder.{_OUT}.weight"],
             "Use an unmodified file from madebyollin/taehv.")
    return spec


def fit_time(spec: TinySpec, sd: dict[str, torch.Tensor], temporal: int) -> tuple[TinySpec, dict]:
    """Lower the decoder's time growth to `temporal` frames per latent frame (e.g. a file trained with 8 for a
    model with 4): the earliest growing stages keep one frame, the last of the ones they made."""
    strides, sd = list(spec.strides), dict(sd)
    for k, g in enumerate(_GROW):
        if math.prod(strides) <= temporal or strides[k] == 1:
            continue
        key, n = f"decoder.{g}.conv.weight", spec.widths[k]
        sd[key] = sd[key][-n:]                                                     # the last frame's channels
        strides[k] = 1
    if math.prod(strides) != temporal:
        fail("tiny decoder", f"must make {temporal} frames per latent frame", math.prod(spec.strides),
             "Use the tiny decoder made for this model.")
    return TinySpec(spec.latent_channels, spec.patch, spec.widths, tuple(strides)), sd   # type: ignore[arg-type]


def read_shapes(path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of a safetensors file's decoder keys (the header only: no weights read)."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith("decoder.")}


def load(path, temporal: int | None = None, device="cpu", dtype=torch.float32) -> TinyVideoDecoder:
    """A tiny decoder from a .safetensors file (architecture from the keys; `temporal`: the frames per latent frame
    the model needs, when the file makes more). Pickled files (.pth) are refused: they could run code."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(path)
    if path.suffix != ".safetensors":
        fail("tiny decoder", "must be a .safetensors file", path.name,
             "Use the .safetensors file from madebyollin/taehv's safetensors folder; .pth files are not loaded.")
    try:
        sd = {k: v for k, v in load_file(str(path)).items() if k.startswith("decoder.")}
    except (SafetensorError, OSError) as exc:
        fail("tiny decoder", "must be a readable .safetensors file", path.name, f"It could not be read ({exc}).")
    spec = detect({k: tuple(v.shape) for k, v in sd.items()}, path.name)
    if temporal is not None and spec.temporal != temporal:
        spec, sd = fit_time(spec, sd, temporal)
    model = TinyVideoDecoder(spec)
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        odd = (result.missing_keys or result.unexpected_keys)[0]
        fail("tiny decoder", "must hold exactly the decoder tensors of its architecture", f"{path.name}: {odd}",
             "Use an unmodified file from madebyollin/taehv.")
    model.source = path.name
    return model.eval().requires_grad_(False).to(device, dtype)


# ---------------------------------------------------------------------------------------------------------------
# Finding the file for a model
# ---------------------------------------------------------------------------------------------------------------

def fits(spec: TinySpec, model) -> bool:
    """Whether a tiny decoder of `spec` decodes `model`'s latents: channels, pixels per cell and frames per latent
    frame (or more, which fit_time lowers)."""
    temporal = max(1, int(getattr(model, "temporal_ratio", 1)))
    return (spec.latent_channels == getattr(model, "latent_channels", None)
            and spec.spatial == getattr(model, "spatial_ratio", None)
            and spec.temporal >= temporal and spec.temporal % temporal == 0)


def find_for(model, folders) -> Path | None:
    """The first .safetensors file in `folders` (in folder order, then by name) whose decoder fits `model`, or
    None. Files that cannot be read or are not tiny decoders are skipped."""
    candidates = []
    for folder in folders:
        folder = Path(folder)
        if folder.is_dir():
            candidates += sorted(p for p in folder.rglob("*.safetensors") if not p.name.startswith("."))
    for path in candidates:
        try:
            if fits(detect(read_shapes(path), path.name), model):
                return path
        except Exception:                                 # noqa: BLE001 (a foreign or broken file: skip it)
            continue
    return None


_CACHE: dict[tuple, TinyVideoDecoder] = {}


def cached(path, temporal: int | None, device="cpu", dtype=torch.float32) -> TinyVideoDecoder:
    """load() once per file version (path, size, mtime), device and dtype."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns, temporal, str(device), dtype)
    if key not in _CACHE:
        _CACHE.clear()                                                             # keep one decoder in memory
        _CACHE[key] = load(path, temporal, device, dtype)
    return _CACHE[key]


def for_model(model, folders) -> TinyVideoDecoder | None:
    """The tiny decoder for `model` from the first fitting file in `folders`, loaded once on the model's device
    (float32), or None."""
    path = find_for(model, folders)
    if path is None:
        return None
    return cached(path, int(getattr(model, "temporal_ratio", 1)) or None, getattr(model, "device", None) or "cpu")
