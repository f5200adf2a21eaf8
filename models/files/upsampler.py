"""LTX-2's latent upsampler as ComfyUI users have it: ONE safetensors file in models/latent_upscale_models/
(Lightricks' release, e.g. `ltx-2-spatial-upscaler-x2-1.0.safetensors`), as ComfyUI's LatentUpscaleModelLoader
reads it (comfy/ldm/lightricks/latent_upsampler.py).

The layout: the tensors under Lightricks' names, which are diffusers' LTX2LatentUpsamplerModel names unchanged
(initial_conv, res_blocks.N.conv1/norm1/conv2/norm2, upsampler.0 or upsampler.conv (+ the fixed
upsampler.blur_down.kernel), post_upsample_res_blocks.N..., final_conv; diffusers' conversion script loads the file
strict with no rename), usually bf16; and the architecture as JSON in the safetensors metadata under "config":
{"in_channels", "mid_channels", "num_blocks_per_stage", "dims", "spatial_upsample", "temporal_upsample",
"spatial_scale", "rational_resampler"} (sometimes nested under "upsampler"). ComfyUI recognises the kind by the key
`post_upsample_res_blocks.0.conv2.bias`; Kinema does the same and checks the config against the tensors' shapes.
The file has no VAE: the upsampler works in the connected LTX-2 model's latents.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from ..checks import fail
from .formats import open_tensors, read_tensor

MARK = "post_upsample_res_blocks.0.conv2.bias"            # ComfyUI's test for an LTX latent upsampler file
REQUIRED = ("initial_conv.weight", "final_conv.weight", MARK)
# Lightricks' config names -> diffusers' LTX2LatentUpsamplerModel arguments (the others are the same)
RENAMED = {"spatial_scale": "rational_spatial_scale", "rational_resampler": "use_rational_resampler"}
FIELDS = ("in_channels", "mid_channels", "num_blocks_per_stage", "dims", "spatial_upsample", "temporal_upsample",
          "spatial_scale", "rational_resampler")
FIX = ("Use Lightricks' own file (ltx-2-spatial-upscaler-x2-1.0.safetensors, or the temporal one), which carries "
       "its config in the safetensors metadata, or an LTX2LatentUpsamplePipeline folder; "
       "tools/make_upsampler_file.py writes a file from such a folder.")
KINEMA_KEY = "kinema_kind"                                  # written by save_upsampler_file, for people reading it


def is_latent_upsampler(keys) -> bool:
    """True when a file's tensor names are an LTX latent upsampler's (header only)."""
    keys = set(keys)
    return all(k in keys for k in REQUIRED)


def seems_to_be(keys) -> str:
    """A short guess at what a safetensors file holds, from its tensor names (for error messages)."""
    from .ltx2 import is_ltx2_checkpoint
    keys = list(keys)
    has = lambda *parts: any(p in k for k in keys for p in parts)        # noqa: E731
    if not keys:
        return "an empty file (no tensors)"
    if is_ltx2_checkpoint(keys):
        return "an LTX-2 all-in-one checkpoint (it goes in checkpoints/)"
    if has("lora_A", "lora_B", "lora_down", "lora_up", ".alpha"):
        return "a LoRA (it goes in loras/)"
    if has("head.modulation", "patch_embedding", "scale_shift_table"):
        return "a video denoiser (it goes in diffusion_models/)"
    if has("encoder.down", "decoder.up", "decoder.conv_in", "per_channel_statistics"):
        return "a VAE (it goes in vae/)"
    if has("text_model.", "encoder.block.", "model.layers.", "shared.weight"):
        return "a text encoder (it goes in text_encoders/)"
    if has("model.0.weight", "conv_first", "body.0", "RRDB"):
        return "an image upscaler of pixels (ESRGAN-like: it goes in upscale_models/)"
    if has("res_blocks", "upsampler"):
        return f"an upsampler of another kind (no {MARK})"
    return f"no model Kinema knows (first tensors: {sorted(keys)[:3]})"


def _count(keys, prefix: str) -> int:
    ids = {int(k[len(prefix):].split(".", 1)[0]) for k in keys if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def shape_config(f) -> dict:
    """What the tensors' shapes say, in Lightricks' config names (spatial_scale only where shapes tell it)."""
    w = f.shape("initial_conv.weight")                         # (mid, in, 3, 3[, 3])
    cfg = {"in_channels": w[1], "mid_channels": w[0], "dims": len(w) - 2,
           "num_blocks_per_stage": _count(f.keys(), "res_blocks.")}
    mid = w[0]
    if "upsampler.conv.weight" in f:                           # SpatialRationalResampler: num^2 x mid
        num = round((f.shape("upsampler.conv.weight")[0] // mid) ** 0.5)
        cfg.update(spatial_upsample=True, temporal_upsample=False, rational_resampler=True)
        if num in (2, 4):                                      # 3 is 1.5x or 0.75x (the blur stride is no tensor)
            cfg["spatial_scale"] = float(num)
    elif "upsampler.0.weight" in f:
        factor = f.shape("upsampler.0.weight")[0] // mid      # 8: space and time, 4: space (2D), 2: time
        cfg.update(spatial_upsample=factor in (4, 8), temporal_upsample=factor in (2, 8))
        if factor == 4:                                        # space alone: a pixel shuffle, always 2x
            cfg.update(rational_resampler=False, spatial_scale=2.0)
    return cfg


def _metadata_config(f, arg: str) -> dict:
    raw = f.metadata.get("config") if isinstance(getattr(f, "metadata", None), dict) else None
    if raw is None:
        fail(arg, "has no `config` entry in its safetensors metadata (Lightricks' files carry the upsampler's "
                  "architecture there)", f.path.name, FIX)
    try:
        cfg = json.loads(raw)
    except ValueError as exc:
        fail(arg, "has a `config` metadata entry that is not JSON", f"{f.path.name}: {str(raw)[:80]} ({exc})", FIX)
    if isinstance(cfg, dict) and isinstance(cfg.get("upsampler"), dict):
        cfg = cfg["upsampler"]
    if not isinstance(cfg, dict):
        fail(arg, "has a `config` metadata entry that is not a JSON object", f"{f.path.name}: {str(raw)[:80]}", FIX)
    return cfg


def upsampler_config(f, arg: str = "upscaler") -> dict:
    """The diffusers LTX2LatentUpsamplerModel config of an open upsampler file: its metadata config, every field
    checked against the tensors' shapes (a config that disagrees with them is an error naming the field)."""
    if not is_latent_upsampler(f.keys()):
        fail(arg, "is not an LTX-2 latent upsampler file", f"{f.path.name}, which seems to be {seems_to_be(f.keys())}",
             "Put only LTX-2 latent upsamplers in latent_upscale_models/ and pick one of the listed files.")
    meta = _metadata_config(f, arg)
    shapes = shape_config(f)
    cfg = {**shapes, **{k: meta[k] for k in FIELDS if k in meta}}
    cfg.setdefault("rational_resampler", False)
    if "spatial_scale" not in cfg:                             # older configs: 2x, as ComfyUI's default
        if cfg.get("rational_resampler"):
            fail(arg, "has a rational resampler (1.5x or 0.75x) but no `spatial_scale` in its metadata config",
                 f"{f.path.name}: {meta}", FIX)
        cfg["spatial_scale"] = 2.0
    missing = [k for k in FIELDS if k not in cfg]
    if missing:
        fail(arg, f"has a metadata config without {missing}", f"{f.path.name}: {meta}", FIX)
    odd = {k: (meta[k], shapes[k]) for k in shapes if k in meta and meta[k] != shapes[k]}
    if odd:
        fail(arg, "has a metadata config that disagrees with its tensors (config value, tensors' value)",
             f"{f.path.name}: {odd}", FIX)
    if not (cfg["spatial_upsample"] or cfg["temporal_upsample"]) or cfg["dims"] not in (2, 3):
        fail(arg, "has a config of no LTX latent upsampler (it must upsample in space or time, dims 2 or 3)",
             f"{f.path.name}: {meta}", FIX)
    return {RENAMED.get(k, k): (float(v) if k == "spatial_scale" else v) for k, v in cfg.items()}


def load_upsampler_file(path, dtype: torch.dtype = torch.float32, device="cpu", arg: str = "upscaler"):
    """An LTX2LatentUpsamplerModel (diffusers) from one Lightricks/ComfyUI upsampler file, weights in `dtype` on
    `device` (read tensor by tensor; never unpickled), eval mode.

    Forward: raw LTX-2 video latents (B, C, f, h, w) -> (B, C, f', 2h, 2w), f' = 2f - 1 with temporal upsampling."""
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    from ..meta import init_empty_weights
    with open_tensors(path, arg) as f:
        config = upsampler_config(f, arg)
        try:
            with init_empty_weights():
                net = LTX2LatentUpsamplerModel(**config)
        except ValueError as exc:                              # e.g. a spatial_scale no resampler has
            fail(arg, "has a config LTX2LatentUpsamplerModel refuses", f"{f.path.name}: {exc}", FIX)
        fixed = {k: v for k, v in net.state_dict().items() if k.endswith("blur_down.kernel")}
        want = set(net.state_dict())
        missing = sorted(want - set(f.keys()) - set(fixed))
        extra = sorted(set(f.keys()) - want)
        if missing or extra:
            fail(arg, "has tensors that do not match its config", f"{f.path.name}: missing {missing[:3]}, "
                 f"unexpected {extra[:3]}", "The file is incomplete or modified; download it again. " + FIX)
        sd = {k: read_tensor(f, k, dtype, device) for k in want if k in f}
    for k, v in fixed.items():                                 # the fixed binomial blur (a real buffer even
        sd.setdefault(k, v.to(device, dtype))                  # under init_empty_weights): kept when absent
    net.load_state_dict(sd, strict=True, assign=True)
    return net.eval()


def lightricks_config(net) -> dict:
    """A diffusers LTX2LatentUpsamplerModel's config in Lightricks' names (the file's metadata `config`)."""
    c = net.config
    return {"_class_name": "LatentUpsampler", "in_channels": c.in_channels, "mid_channels": c.mid_channels,
            "num_blocks_per_stage": c.num_blocks_per_stage, "dims": c.dims, "spatial_upsample": c.spatial_upsample,
            "temporal_upsample": c.temporal_upsample, "spatial_scale": float(c.rational_spatial_scale),
            "rational_resampler": bool(c.use_rational_resampler)}


def save_upsampler_file(net, path, dtype: torch.dtype | None = None) -> Path:
    """Write a diffusers LTX2LatentUpsamplerModel as one file in Lightricks' layout (the inverse of
    load_upsampler_file): same tensor names, weights in `dtype` (None: as they are), the config as JSON metadata.
    Written atomically (a temporary file renamed into place)."""
    from safetensors.torch import save_file
    path = Path(path)
    sd = {k: (v if dtype is None else v.to(dtype)).detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {"config": json.dumps(lightricks_config(net)), KINEMA_KEY: "ltx2_latent_upsampler"}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(sd, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


__all__ = ["is_latent_upsampler", "load_upsampler_file", "save_upsampler_file", "seems_to_be", "upsampler_config"]
