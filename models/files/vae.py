"""Wan VAEs from ComfyUI's single files: `wan_2.1_vae` (16 latent channels, all Wan 2.1 models and the 2.2 A14B
pairs) and `wan2.2_vae` (48 channels, TI2V 5B), original Wan key layout -> diffusers' AutoencoderKLWan.

diffusers' own single-file converter (convert_wan_vae_to_diffusers) hard-codes the 2.1 layout's block indices and
has no 2.2 path, so the mapping here is structural (wan.vae_to_diffusers) and the dims come from the shapes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..checks import fail
from .detect import vae_variant
from .formats import check_target_dtype, iter_keys, open_tensors, read_tensor
from .wan import vae_to_diffusers

VAE_MARK = "decoder.middle.0.residual.0.gamma"
VAE22_MARK = "decoder.upsamples.0.upsamples.0.residual.2.weight"
VAE_PREFIXES = ("", "vae.", "first_stage_model.")


@dataclass
class DetectedVAE:
    variant: str          # "wan_2.1_vae" or "wan2.2_vae"
    config: dict          # AutoencoderKLWan config
    z_dim: int            # latent channels
    prefix: str


def _count(keys, prefix: str) -> int:
    ids = {int(k[len(prefix):].split(".", 1)[0]) for k in keys if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def detect_vae(f, arg: str = "vae") -> DetectedVAE:
    """2.1 or 2.2 from the keys; base dims and latent channels from the shapes, and for 2.1 the blocks per level and
    the channel multipliers (the known configs supply the published latent statistics, which shapes cannot tell)."""
    keys = f.keys()
    prefix = next((p for p in VAE_PREFIXES if p + VAE_MARK in keys), None)
    if prefix is None:
        fail(arg, "is not a Wan VAE file (no decoder.middle.0.residual.0.gamma tensor)", f.path.name,
             "Pick wan_2.1_vae.safetensors or wan2.2_vae.safetensors from vae/.")
    is_22 = prefix + VAE22_MARK in keys
    name = "wan2.2_vae" if is_22 else "wan_2.1_vae"
    cfg = dict(vae_variant(name)["diffusers_config"])
    z_dim = f.shape(prefix + "conv2.weight")[0]
    cfg["base_dim"] = f.shape(prefix + "encoder.conv1.weight")[0]
    cfg["z_dim"] = z_dim
    if is_22:
        levels = _count([k[len(prefix):] for k in keys], "encoder.downsamples.")
        cfg["decoder_base_dim"] = f.shape(prefix + "decoder.conv1.weight")[0] // cfg["dim_mult"][-1]
        cfg["in_channels"] = f.shape(prefix + "encoder.conv1.weight")[1]
        cfg["out_channels"] = f.shape(prefix + "decoder.head.2.weight")[0]
    else:  # 2.1: per level num_res_blocks residual blocks in one flat list, a resample between levels
        n, levels = _count([k[len(prefix):] for k in keys], "encoder.downsamples."), len(cfg["dim_mult"])
        nrb = (n - (levels - 1)) // levels
        first = [f"{prefix}encoder.downsamples.{lv * (nrb + 1)}.residual.2.weight" for lv in range(levels)]
        if nrb < 1 or n != levels * nrb + levels - 1 or not all(k in keys for k in first):
            fail(arg, "has a number of VAE blocks no Wan 2.1 VAE layout has", f"{f.path.name}: {n}",
                 "Use an unmodified wan_2.1_vae or wan2.2_vae file.")
        cfg["num_res_blocks"] = nrb
        cfg["dim_mult"] = [f.shape(k)[0] // cfg["base_dim"] for k in first]
    if not is_22 and z_dim != len(cfg["latents_mean"]):
        fail(arg, "has a latent width no Wan 2.1 VAE has", f"{f.path.name}: z_dim {z_dim}",
             "Use wan_2.1_vae.safetensors (16 channels) or wan2.2_vae.safetensors (48).")
    if len(cfg["dim_mult"]) != levels:
        fail(arg, "has a number of VAE levels no Wan VAE has", f"{f.path.name}: {levels}",
             "Use an unmodified wan_2.1_vae or wan2.2_vae file.")
    if z_dim != len(cfg["latents_mean"]):  # a tiny test VAE: statistics of the right width, identity
        cfg["latents_mean"], cfg["latents_std"] = [0.0] * z_dim, [1.0] * z_dim
    return DetectedVAE(name, cfg, z_dim, prefix)


def load_vae(path, dtype: torch.dtype = torch.float32, device="cpu", arg: str = "vae"):
    """AutoencoderKLWan from a `wan_2.1_vae` / `wan2.2_vae` single file (ComfyUI's layout).

    Args:
        path: .safetensors file (ComfyUI's vae/ folder).
        dtype, device: of the weights; tensors stream there one at a time.
    Returns: the module in eval mode with `.kinema_variant` ("wan_2.1_vae" or "wan2.2_vae"). Encode takes video
    (B, 3, F, H, W) in [-1, 1]; latents are (B, z_dim, (F-1)/4+1, H/8, W/8) (2.1) or H/16, W/16 (2.2).
    """
    from ..meta import init_empty_weights
    from diffusers import AutoencoderKLWan

    with open_tensors(path, arg) as f:
        check_target_dtype(arg, f, dtype)
        det = detect_vae(f, arg)
        with init_empty_weights():
            model = AutoencoderKLWan.from_config(det.config)
        levels, nrb = len(det.config["dim_mult"]), det.config["num_res_blocks"]
        names, unknown = {}, []
        for k in iter_keys(f, det.prefix):
            n = vae_to_diffusers(k[len(det.prefix):], det.variant == "wan2.2_vae", nrb, levels)
            (unknown.append(k) if n is None else names.__setitem__(k, n))
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        expected = set(shapes)
        missing, extra = sorted(expected - set(names.values())), sorted(set(names.values()) - expected)
        if unknown or missing or extra:
            fail(arg, "does not match the Wan VAE layout", f"{Path(path).name}: unplaced {unknown[:3]}, missing "
                 f"{missing[:3]}, unexpected {extra[:3]}", "Use an unmodified wan_2.1_vae or wan2.2_vae file.")
        sd = {}
        for k, n in names.items():
            t = read_tensor(f, k, dtype, device)
            sd[n] = t.reshape(shapes[n])
    model.load_state_dict(sd, strict=True, assign=True)
    model.eval()
    model.kinema_variant = det.variant
    return model
