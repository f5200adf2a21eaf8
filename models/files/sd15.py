"""AnimateDiff from the files ComfyUI users have: an SD 1.5 all-in-one checkpoint (checkpoints/: UNet, VAE and CLIP
text encoder in the original LDM layout, as ComfyUI's CheckpointSave and the SD 1.5 releases store them) and a
motion module (animatediff_models/: AnimateDiff's own layout, `down_blocks.0.motion_modules.0.temporal_transformer.*`).

Configs come from the shapes; the key mapping is diffusers' own single-file conversion (convert_ldm_unet_checkpoint,
convert_ldm_vae_checkpoint, convert_animatediff_checkpoint_to_diffusers), run offline on configs made here. What no
shape tells follows the published models: SD 1.5's UNet has 8 attention heads, CLIP's heads are 64 wide, AnimateDiff's
motion modules have 8 heads and GroupNorm(32).

SD 1.5 checkpoints carry no tokenizer. CLIP's BPE files (vocab.json + merges.txt) come from a folder named
`sd1_tokenizer`: the nodes look in the text_encoders folders and, inside ComfyUI, in ComfyUI's own copy.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..checks import fail
from .detect import CONFIGS
from .formats import iter_keys, open_tensors, read_tensor

UNET, VAE, CLIP = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."
SD15_HEADS, MOTION_HEADS = 8, 8
TOKENIZER_FIX = ("Copy CLIP's tokenizer folder (vocab.json + merges.txt: ComfyUI ships it as ComfyUI/comfy/"
                 "sd1_tokenizer, and openai/clip-vit-large-patch14 has the same two files) to "
                 "models/text_encoders/sd1_tokenizer.")


def _count(keys, prefix: str) -> int:
    ids = {int(k[len(prefix):].split(".", 1)[0]) for k in keys if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def check_sd15(f, arg: str = "checkpoint") -> None:
    """Refuse all-in-one files that are not SD 1.5 checkpoints, naming what they are."""
    keys = set(f.keys())
    if UNET + "label_emb.0.0.weight" in keys:
        fail(arg, "is an SDXL checkpoint; AnimateDiff here runs on SD 1.5", f.path.name,
             "Pick an SD 1.5 checkpoint (v1-5-pruned-emaonly, or a fine-tune of SD 1.5).")
    if any(k.startswith(UNET + "av_ca_") for k in keys) or "audio_vae.per_channel_statistics.mean-of-means" in keys:
        fail(arg, "is an LTX-2 all-in-one checkpoint, not SD 1.5", f.path.name,
             "Load it with Load Video Model (Checkpoint) and its Gemma 3 text_encoder file (or the checkpoint "
             "input of Load Audio Model / Load Portrait Model).")
    need = (UNET + "input_blocks.0.0.weight", VAE + "decoder.conv_in.weight",
            CLIP + "text_model.embeddings.token_embedding.weight")
    missing = [k for k in need if k not in keys]
    if missing:
        fail(arg, "is not an SD 1.5 all-in-one checkpoint (UNet, VAE and CLIP in the LDM layout)",
             f"{f.path.name} (missing {missing})", "Pick an SD 1.5 checkpoint from checkpoints/; Wan files go to "
                                                   "Load Video Model (Files).")
    proj = f.shape(UNET + "input_blocks.1.1.proj_in.weight") if UNET + "input_blocks.1.1.proj_in.weight" in keys else ()
    if len(proj) == 2:
        fail(arg, "is an SD 2.x checkpoint (linear transformer projections); AnimateDiff here runs on SD 1.5",
             f.path.name, "Pick an SD 1.5 checkpoint.")


def unet_config(f) -> dict:
    """UNet2DConditionModel config of an LDM SD 1.5 UNet, from its shapes."""
    keys = [k[len(UNET):] for k in f.keys() if k.startswith(UNET)]
    n = _count(keys, "input_blocks.")
    levels, level = [], []
    for i in range(1, n):
        if f"input_blocks.{i}.0.op.weight" in keys:            # a downsampler ends a level
            levels.append(level)
            level = []
        else:
            level.append(i)
    levels.append(level)
    attn = [f"input_blocks.{lv[0]}.1.proj_in.weight" in keys for lv in levels]
    first = next(lv[0] for lv, a in zip(levels, attn) if a)
    return {"sample_size": 64, "in_channels": f.shape(UNET + "input_blocks.0.0.weight")[1],
            "out_channels": f.shape(UNET + "out.2.weight")[0],
            "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
            "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
            "block_out_channels": [f.shape(f"{UNET}input_blocks.{lv[0]}.0.out_layers.3.weight")[0] for lv in levels],
            "layers_per_block": len(levels[0]), "attention_head_dim": SD15_HEADS, "norm_num_groups": 32,
            "cross_attention_dim": f.shape(f"{UNET}input_blocks.{first}.1.transformer_blocks.0.attn2.to_k.weight")[1]}


def vae_config(f) -> dict:
    """AutoencoderKL config of an LDM VAE (first_stage_model.), from its shapes."""
    keys = [k[len(VAE):] for k in f.keys() if k.startswith(VAE)]
    n = _count(keys, "encoder.down.")
    return {"in_channels": f.shape(VAE + "encoder.conv_in.weight")[1],
            "out_channels": f.shape(VAE + "decoder.conv_out.weight")[0],
            "down_block_types": ["DownEncoderBlock2D"] * n, "up_block_types": ["UpDecoderBlock2D"] * n,
            "block_out_channels": [f.shape(f"{VAE}encoder.down.{i}.block.0.conv1.weight")[0] for i in range(n)],
            "layers_per_block": _count(keys, "encoder.down.0.block."),
            "latent_channels": f.shape(VAE + "decoder.conv_in.weight")[1], "norm_num_groups": 32,
            "sample_size": 512, "scaling_factor": 0.18215}


def clip_config(f) -> dict:
    """CLIPTextConfig of an SD 1.5 text encoder (OpenAI CLIP ViT-L/14 text: quick_gelu, 64-wide heads)."""
    p = CLIP + "text_model."
    vocab, width = f.shape(p + "embeddings.token_embedding.weight")
    layers = _count([k[len(p):] for k in f.keys() if k.startswith(p)], "encoder.layers.")
    return {"vocab_size": vocab, "hidden_size": width, "num_hidden_layers": layers,
            "num_attention_heads": max(width // 64, 1), "hidden_act": "quick_gelu",
            "intermediate_size": f.shape(p + "encoder.layers.0.mlp.fc1.weight")[0],
            "max_position_embeddings": f.shape(p + "embeddings.position_embedding.weight")[0],
            "projection_dim": width, "layer_norm_eps": 1e-5}


def load_sd15_checkpoint(path, dtype: torch.dtype = torch.float32, device="cpu", arg: str = "checkpoint"):
    """UNet, VAE and CLIP text encoder from one SD 1.5 checkpoint (ComfyUI's checkpoints/).

    Args:
        path: .safetensors all-in-one file (LDM keys: model.diffusion_model., first_stage_model.,
            cond_stage_model.transformer.), fp32/fp16/bf16.
        dtype, device: of every weight.
    Returns: (UNet2DConditionModel, AutoencoderKL, CLIPTextModel), eval mode. The UNet takes latents (B, 4, h, w) and
    CLIP hidden states (B, 77, width); the VAE maps (B, 3, H, W) in [-1, 1] to (B, 4, H/8, W/8) (times 0.18215).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    with open_tensors(path, arg) as f:
        check_sd15(f, arg)
        cfgs = unet_config(f), vae_config(f), clip_config(f)
        sd = {k: read_tensor(f, k, dtype, device) for k in iter_keys(f, "")
              if k.startswith((UNET, VAE, CLIP)) and f.dtype(k).is_floating_point}
    from ..meta import init_empty_weights
    from ..families.base import quiet_diffusers
    quiet_diffusers()
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(cfgs[0])
        vae = AutoencoderKL.from_config(cfgs[1])
        text = CLIPTextModel(CLIPTextConfig(**cfgs[2]))
    inner = "" if any(k.startswith("embeddings.") for k in text.state_dict()) else "text_model."  # transformers 5/4
    parts = ((unet, convert_ldm_unet_checkpoint(sd, dict(unet.config))),
             (vae, convert_ldm_vae_checkpoint(sd, dict(vae.config))),
             (text, {inner + k[len(CLIP + "text_model."):]: v for k, v in sd.items()
                     if k.startswith(CLIP + "text_model.")}))
    for module, weights in parts:
        expected = set(module.state_dict())
        missing = sorted(expected - set(weights))
        if missing:
            fail(arg, "lacks tensors of the detected SD 1.5 model", f"{Path(path).name}: {missing[:4]}",
                 "The file is incomplete or not SD 1.5; pick an SD 1.5 checkpoint.")
        module.load_state_dict({k: v for k, v in weights.items() if k in expected}, strict=True, assign=True)
        module.to(device).eval()
    return unet, vae, text


def motion_adapter_config(f, arg: str) -> dict:
    """MotionAdapter config of an AnimateDiff motion module file (original layout), from its shapes."""
    keys = f.keys()
    mark = ".temporal_transformer.proj_in.weight"
    if not any(k.endswith(mark) for k in keys):
        fail(arg, "is not an AnimateDiff motion module (no motion_modules.*.temporal_transformer tensors)",
             f.path.name, "Pick a motion module from animatediff_models/ (mm_sd_v15_v2, v3_sd15_mm, ...).")
    n = _count(keys, "down_blocks.")
    pe = next((k for k in keys if k.endswith("pos_encoder.pe")), None)
    return {"block_out_channels": [f.shape(f"down_blocks.{i}.motion_modules.0{mark}")[1] for i in range(n)],
            "motion_layers_per_block": _count(keys, "down_blocks.0.motion_modules."),
            "motion_transformer_layers_per_block": _count(keys, "down_blocks.0.motion_modules.0.temporal_transformer."
                                                                "transformer_blocks."),
            "motion_mid_block_layers_per_block": max(_count(keys, "mid_block.motion_modules."), 1),
            "use_motion_mid_block": any(k.startswith("mid_block.motion_modules.") for k in keys),
            "motion_num_attention_heads": MOTION_HEADS, "motion_norm_num_groups": 32,
            "motion_max_seq_length": f.shape(pe)[1] if pe else 32}


def load_motion_module(path, dtype: torch.dtype = torch.float32, device="cpu", arg: str = "motion_module"):
    """diffusers' MotionAdapter from an AnimateDiff motion module file (animatediff_models/: mm_sd_v15_v2, v3...;
    AnimateDiff's layout, converted by diffusers' convert_animatediff_checkpoint_to_diffusers).

    Returns: the adapter (eval mode) whose temporal layers UNetMotionModel inserts into the SD 1.5 UNet; each
    attends over frames of (B*F, C, h, w) features.
    """
    from diffusers import MotionAdapter
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

    with open_tensors(path, arg) as f:
        cfg = motion_adapter_config(f, arg)
        sd = {k: read_tensor(f, k, dtype, device) for k in iter_keys(f, "") if "motion_modules." in k}
    adapter = MotionAdapter.from_config(cfg)
    weights = convert_animatediff_checkpoint_to_diffusers(sd)
    # the sinusoidal position tables are made by the module (diffusers' converter drops AnimateDiff's pos_encoder.pe)
    expected = {k for k in adapter.state_dict() if not k.endswith(".pos_embed.pe")}
    missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or extra:
        fail(arg, "does not match the detected motion module layout", f"{Path(path).name}: missing {missing[:3]}, "
             f"unexpected {extra[:3]}", "Use an unmodified AnimateDiff SD 1.5 motion module (v1, v2 or v3).")
    adapter.load_state_dict(weights, strict=False)
    return adapter.to(device, dtype).eval()


def find_clip_tokenizer(dirs, arg: str = "checkpoint"):
    """CLIPTokenizer from the first folder of `dirs` holding vocab.json and merges.txt; the error names the folder
    to add."""
    from transformers import CLIPTokenizer
    for d in dirs:
        d = Path(d)
        if (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
            return CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=77)
    fail(arg, "carries no tokenizer (SD 1.5 checkpoints never do) and no sd1_tokenizer folder was found",
         [str(d) for d in dirs], TOKENIZER_FIX)


def load_animatediff_files(checkpoint, motion_module, tokenizer_dirs, device="cpu", dtype=torch.float32):
    """An AnimateDiffFamily from an SD 1.5 checkpoint + a motion module (+ CLIP's tokenizer folder).

    Args:
        checkpoint: SD 1.5 all-in-one .safetensors (checkpoints/).
        motion_module: AnimateDiff motion module .safetensors (animatediff_models/).
        tokenizer_dirs: folders searched for vocab.json + merges.txt (find_clip_tokenizer).
        device, dtype: of every component (as Load Video Model loads AnimateDiff folders).
    """
    from diffusers import AnimateDiffPipeline, DDIMScheduler
    from ..families import AnimateDiffFamily
    from .family import fixture_info
    device = torch.device(device)
    tokenizer = find_clip_tokenizer(tokenizer_dirs)
    unet, vae, text = load_sd15_checkpoint(checkpoint, dtype, device)
    heads = (fixture_info(motion_module) or {}).get("motion_num_attention_heads")
    adapter = load_motion_module(motion_module, dtype, device)
    if heads:   # `kinema fixtures` files: tiny heads no shape tells
        adapter = _with_heads(adapter, heads)
    if adapter.config.block_out_channels != unet.config.block_out_channels:
        fail("motion_module", "must match the checkpoint's UNet channels", f"{adapter.config.block_out_channels} vs "
             f"{list(unet.config.block_out_channels)}", "Use an SD 1.5 motion module with an SD 1.5 checkpoint "
                                                        "(SDXL motion modules need SDXL).")
    cfg = json.loads((CONFIGS / "animatediff_scheduler.json").read_text())
    cfg.pop("notes", None)
    pipe = AnimateDiffPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, motion_adapter=adapter,
                               scheduler=DDIMScheduler.from_config(cfg), feature_extractor=None, image_encoder=None)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return AnimateDiffFamily(Path(checkpoint), device, dtype, pipe)


def _with_heads(adapter, heads: int):
    from diffusers import MotionAdapter
    other = MotionAdapter.from_config({**adapter.config, "motion_num_attention_heads": heads})
    other.load_state_dict(adapter.state_dict())
    return other.to(adapter.device, adapter.dtype).eval()
