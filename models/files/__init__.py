"""Models as ComfyUI users have them: one file per part, in ComfyUI's layouts and formats.

    from kinema.models.files import load_denoiser, load_text_encoder, load_vae
    transformer = load_denoiser("models/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors", dtype=torch.bfloat16)
    te = load_text_encoder("models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    vae = load_vae("models/vae/wan_2.1_vae.safetensors")

Formats: safetensors (fp32/fp16/bf16/fp8 e4m3fn/e5m2, ComfyUI scaled fp8) and GGUF (`pip install gguf`); pickles
are refused. Layouts: original Wan keys with or without `model.diffusion_model.` (ComfyUI, Kijai, city96's GGUF)
and diffusers' names. The variant comes from the tensors' names and shapes (detect.py, configs/*.json).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..checks import fail
from .detect import Detected, detect_wan, known_variants, nearest, vae_variant  # noqa: F401
from .formats import (check_file, check_target_dtype, iter_keys, open_tensors, read_tensor,  # noqa: F401
                      scaled_fp8_format, unused_scales)
from ..heap import trim_heap
from .storage import read_stored, stored_linears, use_stored
from .pairing import check_clip_vision, check_text_encoder, check_vae, check_pair  # noqa: F401
from .clip_vision import load_clip_vision  # noqa: F401
from .text import TextEncoder, encode_prompt, load_text_encoder, tokenizer_from_spiece  # noqa: F401
from .vae import detect_vae, load_vae  # noqa: F401
from .wan import denoiser_names, denoiser_prefix

__all__ = ["load_denoiser", "detect_denoiser", "load_text_encoder", "encode_prompt", "load_vae", "detect_vae",
           "check_vae", "check_text_encoder", "check_clip_vision", "check_pair", "known_variants", "Detected",
           "load_clip_vision"]


def _denoiser_layout(f, arg: str):
    if any(k.endswith("av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1.weight") for k in f.keys()):
        fail(arg, "is an LTX-2 file, not a Wan denoiser", f.path.name, "Load LTX-2's all-in-one checkpoint "
             "(checkpoints/) with Load Video Model (Checkpoint) and its Gemma 3 text_encoder.")
    prefix, layout = denoiser_prefix(f.keys())
    if not layout:
        vace_only = any("vace_blocks." in k for k in f.keys())
        fix = ("It holds only a VACE module: use a full VACE file (wan2.1_vace_*), not the separate module."
               if vace_only else "Pick a Wan denoiser from diffusion_models/ (text encoders go to text_encoders/, "
                                 "VAEs to vae/).")

        fail(arg, "is not a Wan denoiser file (no head.modulation or scale_shift_table tensor)", f.path.name, fix)
    names = denoiser_names(list(iter_keys(f, prefix)), prefix, layout, arg, f.path.name)
    return prefix, layout, names


def detect_denoiser(path, strict: bool = True, arg: str = "denoiser") -> Detected:
    """The variant and diffusers config of a denoiser file, from its names and shapes only (reads no weights)."""
    with open_tensors(path, arg) as f:
        _prefix, _layout, names = _denoiser_layout(f, arg)
        shapes = {n: f.shape(k) for k, n in names.items()}
    return detect_wan(shapes, arg, Path(path).name, strict=strict)


def load_denoiser(path, dtype: torch.dtype = torch.float32, device="cpu", strict: bool = True,
                  arg: str = "denoiser", storage: torch.dtype | None = None, heads: int | None = None):
    """Build the diffusers denoiser (WanTransformer3DModel, or WanVACETransformer3DModel for VACE files) from ONE
    file of any supported layout and format, its config detected from the tensors' names and shapes.

    Args:
        path: a .safetensors or .gguf file (ComfyUI's diffusion_models/ or unet/).
        dtype: the weights' dtype (torch.float32/float16/bfloat16; fp8 only for plain fp8 files: scaled fp8 is
            de-scaled exactly and refused as fp8, which would drop the scales).
        device: where the weights go; tensors stream there one at a time.
        strict: refuse shapes of no known variant (the error names the nearest ones); False loads them anyway.
        storage: how the Linear layers' weights are kept (None: in dtype). fp8 (torch.float8_e4m3fn): an fp8
            file keeps its fp8 weights and scales, a wider file is quantised per tensor; float16/bfloat16: 16-bit.
            The layers compute in their input's dtype (dtype) either way (storage.StoredLinear).
        heads: the attention head count, for unpublished tiny models only (no shape tells it: every published Wan
            has 128-wide heads, the rule detection uses); None keeps the detected count.
    Returns: the module in eval mode, with `.kinema_variant` (the variant name, or None) set.
    """
    from ..meta import init_empty_weights
    from diffusers import WanTransformer3DModel, WanVACETransformer3DModel

    with open_tensors(path, arg) as f:
        check_target_dtype(arg, f, dtype)
        _prefix, _layout, names = _denoiser_layout(f, arg)
        det = detect_wan({n: f.shape(k) for k, n in names.items()}, arg, f.path.name, strict=strict)
        if heads is not None and det.variant is None:
            dim = det.config["num_attention_heads"] * det.config["attention_head_dim"]
            det.config.update(num_attention_heads=heads, attention_head_dim=dim // heads)
        cls = WanVACETransformer3DModel if det.is_vace else WanTransformer3DModel
        with init_empty_weights():
            model = cls.from_config(det.config)
        expected = set(model.state_dict())
        missing = sorted(expected - set(names.values()))
        if missing:
            fail(arg, "lacks tensors the detected model needs", f"{f.path.name}: {missing[:4]}",
                 "The file is incomplete or of another model; download it again.")
        lost = unused_scales(f, set(names))
        if lost:
            fail(arg, "has scale_weight tensors whose weights Kinema would not load (their scale would be lost)",
                 lost[:3], "Use an unmodified ComfyUI scaled-fp8 file.")
        keep32 = tuple(getattr(model, "_keep_in_fp32_modules", None) or ()) if dtype != torch.float32 else ()
        # the time embedder's dtype decides the timestep's (diffusers' Wan): never stored small
        small = stored_linears(model, keep32 + ("time_embedder",)) if storage not in (None, dtype) else {}
        sd, scales = {}, {}
        for k, n in names.items():  # one tensor at a time, straight into dtype/device
            if n in small:
                sd[n], scale = read_stored(f, k, storage, device)
                if scale is not None:
                    scales[small[n]] = scale
                continue
            fp32 = any(m in n.split(".") for m in keep32)  # the modules from_pretrained keeps in float32
            sd[n] = read_tensor(f, k, torch.float32 if fp32 else dtype, device)
    model.load_state_dict(sd, strict=True, assign=True)
    del sd
    use_stored(model, scales, dtype)
    trim_heap()                       # the per-tensor temporaries' heap back to the system
    model.eval()
    model.kinema_variant = det.variant
    return model
