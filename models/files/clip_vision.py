"""CLIP vision encoders from ComfyUI's clip_vision/ files (`clip_vision_h.safetensors`: OpenCLIP ViT-H/14, what Wan
2.1 image-to-video and FLF2V project), as transformers' CLIPVisionModelWithProjection.

ComfyUI's clip_vision files use transformers' key names (`vision_model.encoder.layers.N.self_attn.q_proj.weight`,
`visual_projection.weight`, ...; comfy/clip_vision.py), sometimes under a prefix (`clip_vision.`, `model.`,
`image_encoder.`). ComfyUI picks its config by layer count (31+ layers: ViT-H); here the config comes from the shapes:
width from `class_embedding`, patch and image size from `patch_embedding` and the position table, layers by
counting. The head count is not in any shape: the published widths map to their heads (ViT-H 1280 -> 16 heads of
80), any other width uses 64-wide heads.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..checks import fail
from .formats import check_target_dtype, iter_keys, open_tensors, read_tensor

MARK = "vision_model.embeddings.class_embedding"
# width -> (heads, activation, label): the published CLIP vision towers ComfyUI ships configs for
KNOWN = {1280: (16, "gelu", "clip_vision_h (OpenCLIP ViT-H/14)"), 1664: (16, "gelu", "clip_vision_g (ViT-bigG/14)"),
         1024: (16, "quick_gelu", "clip_vision_l (OpenAI ViT-L/14)")}
FIX = "Pick clip_vision_h.safetensors (ComfyUI's clip_vision/ folder; Wan 2.1 image-to-video uses it)."


def _prefix(keys, arg: str, name: str) -> str:
    hit = next((k for k in keys if k.endswith(MARK)), None)
    if hit is None:
        open_clip = any(k.endswith("transformer.resblocks.0.attn.in_proj_weight") for k in keys)
        what = ("is an OpenCLIP-layout vision tower (visual.transformer.resblocks...), which Kinema does not read"
                if open_clip else f"is not a CLIP vision file (no {MARK} tensor)")
        fail(arg, what, name, FIX)
    return hit[: -len(MARK)]


def clip_vision_config(f, prefix: str) -> dict:
    """A transformers CLIPVisionConfig (as a dict) from the file's shapes."""
    def shape(k):
        return f.shape(prefix + k)
    width = shape(MARK)[0]
    patch = shape("vision_model.embeddings.patch_embedding.weight")[-1]
    grid = math.isqrt(shape("vision_model.embeddings.position_embedding.weight")[0] - 1)
    layers = 1 + max(int(k[len(prefix):].split(".")[3]) for k in f.keys()
                     if k.startswith(prefix + "vision_model.encoder.layers."))
    heads, act, _ = KNOWN.get(width, (max(width // 64, 1), "gelu", ""))
    cfg = dict(hidden_size=width, intermediate_size=shape("vision_model.encoder.layers.0.mlp.fc1.weight")[0],
               num_hidden_layers=layers, num_attention_heads=heads, num_channels=shape(
                   "vision_model.embeddings.patch_embedding.weight")[1], image_size=grid * patch, patch_size=patch,
               hidden_act=act, layer_norm_eps=1e-5, attention_dropout=0.0)
    if prefix + "visual_projection.weight" in f:
        cfg["projection_dim"] = shape("visual_projection.weight")[0]
    return cfg


def load_clip_vision(path, dtype: torch.dtype = torch.float32, device="cpu", arg: str = "clip_vision"):
    """transformers' CLIPVisionModelWithProjection from one ComfyUI clip_vision file, config from the shapes.

    Args:
        path: a .safetensors file (ComfyUI's clip_vision/ folder), fp32/fp16/bf16 (scaled fp8 is de-scaled).
        dtype, device: of the weights; tensors stream there one at a time.
    Returns: the module in eval mode with `.kinema_variant` (e.g. "clip_vision_h (OpenCLIP ViT-H/14)", or None for
    an unpublished width). It takes pixel_values (B, 3, S, S) normalised with CLIP's mean/std (S = image_size,
    224 for ViT-H); Wan uses `hidden_states[-2]` (B, 1 + (S/14)^2, width) of output_hidden_states=True.
    """
    from ..meta import init_empty_weights
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with open_tensors(path, arg) as f:
        check_target_dtype(arg, f, dtype)
        prefix = _prefix(f.keys(), arg, f.path.name)
        cfg = clip_vision_config(f, prefix)
        if "projection_dim" not in cfg:
            fail(arg, "has no visual_projection (a vision tower without CLIP's image projection)", f.path.name, FIX)
        with init_empty_weights():
            model = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg))
        expected = set(model.state_dict())
        names = {k: k[len(prefix):] for k in iter_keys(f, prefix) if k[len(prefix):] in expected}
        missing = sorted(expected - set(names.values()))
        if missing:
            fail(arg, "lacks tensors of the detected CLIP vision tower", f"{f.path.name}: {missing[:4]}",
                 "The file is incomplete or of another model. " + FIX)
        sd = {n: read_tensor(f, k, dtype, device) for k, n in names.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    model.to(device)  # the position ids (a buffer made by the module, not stored in files)
    model.eval()
    model.kinema_variant = KNOWN.get(cfg["hidden_size"], (0, "", None))[2]
    return model


def clip_image_processor(model):
    """The CLIPImageProcessor for this tower (CLIP's mean/std; shortest side resized to image_size, centre crop)."""
    from transformers import CLIPImageProcessor
    size = model.config.image_size
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
