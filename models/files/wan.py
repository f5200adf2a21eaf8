"""Wan key layouts -> diffusers names: the denoiser (original Wan / ComfyUI / Kijai keys, or diffusers' own) and the
VAE (Wan 2.1 and 2.2 layouts as in `wan_2.1_vae` / `wan2.2_vae`).

Layouts seen in users' folders:
- original Wan keys (`blocks.N.self_attn.q.weight`, `head.modulation`, ...): Comfy-Org's repackaged files (no
  prefix), ComfyUI's ModelSave output (`model.diffusion_model.` prefix), Kijai's WanVideoWrapper files (the same
  keys, sometimes `diffusion_model.` or `model.` in front), GGUF quantisations (city96, no prefix);
- diffusers' names (`blocks.N.attn1.to_q.weight`, `scale_shift_table`), alone or under `transformer.`.
"""
from __future__ import annotations

import re

from ..checks import fail

DENOISER_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "transformer.", "")
ORIGINAL_MARK = "head.modulation"
DIFFUSERS_MARK = "scale_shift_table"

# top-level original names -> diffusers (exact module paths; the leaf `.weight`/`.bias` follows)
_TOP = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
    "vace_patch_embedding": "vace_patch_embedding",
}
_TOP_PARAMS = {"head.modulation": "scale_shift_table", "img_emb.emb_pos": "condition_embedder.image_embedder.pos_embed"}
# inside blocks.N / vace_blocks.N
_ATTN = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0", "norm_q": "norm_q", "norm_k": "norm_k",
         "k_img": "add_k_proj", "v_img": "add_v_proj", "norm_k_img": "norm_added_k"}
_BLOCK = {"norm3": "norm2",  # the cross-attention norm (original order norm1, norm3, norm2)
          "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2", "before_proj": "proj_in", "after_proj": "proj_out"}
_BLOCK_RE = re.compile(r"^(blocks|vace_blocks)\.(\d+)\.(.+)$")


def denoiser_prefix(keys) -> tuple[str, str]:
    """(prefix, layout) of a Wan denoiser file: layout "original" or "diffusers"; ("", "") when not a Wan denoiser."""
    keys = set(keys)
    for p in DENOISER_PREFIXES:
        if p + ORIGINAL_MARK in keys:
            return p, "original"
        if p + DIFFUSERS_MARK in keys and p + "proj_out.weight" in keys:
            return p, "diffusers"
    return "", ""


def original_to_diffusers(key: str) -> str | None:
    """One original Wan key (no prefix) -> its diffusers name; None for a key diffusers' Wan has no place for."""
    if key in _TOP_PARAMS:
        return _TOP_PARAMS[key]
    m = _BLOCK_RE.match(key)
    if m:
        kind, i, rest = m.groups()
        if rest == "modulation":
            return f"{kind}.{i}.scale_shift_table"
        mod, leaf = rest.rsplit(".", 1)
        if mod.startswith(("self_attn.", "cross_attn.")):
            which, name = mod.split(".", 1)
            if name not in _ATTN:
                return None
            return f"{kind}.{i}.{'attn1' if which == 'self_attn' else 'attn2'}.{_ATTN[name]}.{leaf}"
        if mod in _BLOCK:
            return f"{kind}.{i}.{_BLOCK[mod]}.{leaf}"
        return None
    mod, _, leaf = key.rpartition(".")
    if mod in _TOP:
        return f"{_TOP[mod]}.{leaf}"
    return None


def denoiser_names(keys, prefix: str, layout: str, arg: str, path_name: str) -> dict[str, str]:
    """{file key: diffusers name} for every weight of the file (aux keys excluded by the caller); refuses keys
    that have no place in diffusers' Wan models (camera, S2V, HuMo, Animate adapters...)."""
    out, unknown = {}, []
    for k in keys:
        if not k.startswith(prefix):
            continue
        bare = k[len(prefix):]
        name = bare if layout == "diffusers" else original_to_diffusers(bare)
        if name is None:
            unknown.append(bare)
        else:
            out[k] = name
    if unknown:
        fail(arg, "has Wan layers Kinema cannot place (a Wan variant not supported yet: camera, S2V, HuMo, "
                  "Animate or Fun adapters?)", f"{path_name}: {sorted(unknown)[:4]} (+{max(len(unknown) - 4, 0)})",
             "Use a Wan 2.1/2.2 T2V, I2V, FLF2V, TI2V or VACE file.")
    return out


# ---------------------------------------------------------------- VAE
_VAE_TOP = {"conv1": "quant_conv", "conv2": "post_quant_conv", "encoder.conv1": "encoder.conv_in",
            "decoder.conv1": "decoder.conv_in", "encoder.head.0": "encoder.norm_out", "encoder.head.2":
            "encoder.conv_out", "decoder.head.0": "decoder.norm_out", "decoder.head.2": "decoder.conv_out"}
_VAE_RES = {"residual.0": "norm1", "residual.2": "conv1", "residual.3": "norm2", "residual.6": "conv2",
            "shortcut": "conv_shortcut"}


def _res(rest: str) -> str:
    """`residual.2.weight` -> `conv1.weight` (a residual block's inner names); other names unchanged."""
    for a, b in _VAE_RES.items():
        if rest.startswith(a + "."):
            return b + rest[len(a):]
    return rest


def vae_to_diffusers(key: str, is_22: bool, num_res_blocks: int, levels: int) -> str | None:
    """One Wan VAE key (ComfyUI's / Wan's layout) -> AutoencoderKLWan's name; None when it has no place."""
    mod, _, leaf = key.rpartition(".")
    if mod in _VAE_TOP:
        return f"{_VAE_TOP[mod]}.{leaf}"
    m = re.match(r"^(encoder|decoder)\.middle\.(\d)\.(.+)$", key)
    if m:
        side, i, rest = m.groups()
        if i == "1":
            return f"{side}.mid_block.attentions.0.{rest}"
        return f"{side}.mid_block.resnets.{int(i) // 2}.{_res(rest)}"
    if is_22:
        m = re.match(r"^encoder\.downsamples\.(\d+)\.downsamples\.(\d+)\.(.+)$", key)
        if m:
            i, j, rest = int(m[1]), int(m[2]), m[3]
            where = f"resnets.{j}" if j < num_res_blocks else "downsampler"
            return f"encoder.down_blocks.{i}.{where}.{_res(rest)}"
        m = re.match(r"^decoder\.upsamples\.(\d+)\.upsamples\.(\d+)\.(.+)$", key)
        if m:
            i, j, rest = int(m[1]), int(m[2]), m[3]
            where = f"resnets.{j}" if j <= num_res_blocks else "upsampler"
            return f"decoder.up_blocks.{i}.{where}.{_res(rest)}"
        return None
    m = re.match(r"^encoder\.downsamples\.(\d+)\.(.+)$", key)
    if m:  # 2.1 encoder: one flat list in both layouts
        return f"encoder.down_blocks.{m[1]}.{_res(m[2])}"
    m = re.match(r"^decoder\.upsamples\.(\d+)\.(.+)$", key)
    if m:  # 2.1 decoder: per level (num_res_blocks + 1) residual blocks, then an upsampler except on the last level
        k, rest = int(m[1]), m[2]
        group = num_res_blocks + 2
        level, j = min(k // group, levels - 1), k - min(k // group, levels - 1) * group
        if j <= num_res_blocks:
            return f"decoder.up_blocks.{level}.resnets.{j}.{_res(rest)}"
        return f"decoder.up_blocks.{level}.upsamplers.0.{rest}"
    return None


# ---------------------------------------------------------------- diffusers -> original (for `kinema fixtures`)
_TOP_INV = {v: k for k, v in _TOP.items()}
_TOP_PARAMS_INV = {v: k for k, v in _TOP_PARAMS.items()}
_ATTN_INV = {v: k for k, v in _ATTN.items()}
_BLOCK_INV = {v: k for k, v in _BLOCK.items()}


def diffusers_to_original(name: str) -> str:
    """One diffusers Wan denoiser name -> the original Wan key (ComfyUI's layout, no prefix): the inverse of
    original_to_diffusers, used to write ComfyUI-layout files of the fixture models (`kinema fixtures`)."""
    if name in _TOP_PARAMS_INV:
        return _TOP_PARAMS_INV[name]
    m = _BLOCK_RE.match(name)
    if m:
        kind, i, rest = m.groups()
        if rest == "scale_shift_table":
            return f"{kind}.{i}.modulation"
        mod, leaf = rest.rsplit(".", 1)
        if mod.startswith(("attn1.", "attn2.")):
            which, sub = mod.split(".", 1)
            return f"{kind}.{i}.{'self_attn' if which == 'attn1' else 'cross_attn'}.{_ATTN_INV[sub]}.{leaf}"
        return f"{kind}.{i}.{_BLOCK_INV[mod]}.{leaf}"
    mod, _, leaf = name.rpartition(".")
    return f"{_TOP_INV[mod]}.{leaf}"


_VAE_TOP_INV = {v: k for k, v in _VAE_TOP.items()}
_VAE_RES_INV = {v: k for k, v in _VAE_RES.items()}


def _res_inv(rest: str) -> str:
    for b, a in _VAE_RES_INV.items():
        if rest.startswith(b + "."):
            return a + rest[len(b):]
    return rest


def vae_to_original(name: str, num_res_blocks: int) -> str:
    """One AutoencoderKLWan name of a Wan 2.1 VAE -> the key in wan_2.1_vae's layout: the inverse of
    vae_to_diffusers for 2.1 (writing ComfyUI-layout files of the fixture models)."""
    mod, _, leaf = name.rpartition(".")
    if mod in _VAE_TOP_INV:
        return f"{_VAE_TOP_INV[mod]}.{leaf}"
    m = re.match(r"^(encoder|decoder)\.mid_block\.(attentions|resnets)\.(\d+)\.(.+)$", name)
    if m:
        side, what, j, rest = m.groups()
        return f"{side}.middle.1.{rest}" if what == "attentions" else f"{side}.middle.{2 * int(j)}.{_res_inv(rest)}"
    m = re.match(r"^encoder\.down_blocks\.(\d+)\.(.+)$", name)
    if m:
        return f"encoder.downsamples.{m[1]}.{_res_inv(m[2])}"
    m = re.match(r"^decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.(.+)$", name)
    if m:
        level, group = int(m[1]), num_res_blocks + 2
        j = int(m[3]) if m[3] is not None else num_res_blocks + 1
        rest = _res_inv(m[4]) if m[3] is not None else m[4]
        return f"decoder.upsamples.{level * group + j}.{rest}"
    raise KeyError(f"no wan_2.1_vae key for {name}")
