"""LTX-2 from the files ComfyUI users have: the all-in-one checkpoint (checkpoints/ltx-2-19b-*.safetensors: the
transformer with its text connectors, the video VAE, the audio VAE and the vocoder, in LTX-2's original layout as
ComfyUI's comfy/ldm/lightricks code loads it) and the Gemma 3 file (text_encoders/, files/gemma.py), assembled into
the diffusers LTX2ConditionPipeline the folder route loads (families/ltx2_common.load_ltx2_pipeline), so every LTX-2
family (video, Video to Audio, portrait) takes it unchanged.

Layout (prefix: diffusers module, key mapping):
- `model.diffusion_model.` (minus the connectors): LTX2VideoTransformer3DModel, diffusers' own
  convert_ltx2_transformer_to_diffusers;
- `model.diffusion_model.{video,audio}_embeddings_connector.` + `text_embedding_projection.aggregate_embed.weight`:
  LTX2TextConnectors, the table of diffusers' scripts/convert_ltx2_to_diffusers.py (CONNECTOR_NAMES);
- `vae.`: AutoencoderKLLTX2Video, convert_ltx2_vae_to_diffusers; `audio_vae.`: AutoencoderKLLTX2Audio,
  convert_ltx2_audio_vae_to_diffusers; `vocoder.`: LTX2Vocoder, that script's table (VOCODER_NAMES).
Configs: configs/ltx2_19b.json (LTX-2 19B; every tensor's shape is checked against it, a model of other sizes is
refused naming the differences), or a Kinema test file's own metadata. One part is read at a time, one tensor at a
time, straight into its dtype (the transformer and connectors in the compute dtype; the VAEs and the vocoder in
float32, as the folder route keeps them).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..checks import fail
from .detect import CONFIGS
from .formats import FP8, check_target_dtype, is_aux_key, open_tensors, read_tensor

DIT = "model.diffusion_model."
LTX2_MARKS = (DIT + "av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1.weight",
              "audio_vae.per_channel_statistics.mean-of-means")
CONNECTORS = ("video_embeddings_connector", "audio_embeddings_connector")
PROJECTION = "text_embedding_projection.aggregate_embed.weight"
CONNECTOR_NAMES = (("video_embeddings_connector", "video_connector"), ("audio_embeddings_connector", "audio_connector"),
                   ("transformer_1d_blocks", "transformer_blocks"), ("q_norm", "norm_q"), ("k_norm", "norm_k"))
VOCODER_NAMES = (("ups", "upsamplers"), ("resblocks", "resnets"), ("conv_pre", "conv_in"), ("conv_post", "conv_out"))
FP32_PARTS = ("vae", "audio_vae", "vocoder")
LTX_SCALES = (".weight_scale", ".bias_scale", ".input_scale")     # Lightricks' prequantised fp8 (read_ltx_tensor)
CHECKPOINT_FIX = "Pick LTX-2's all-in-one checkpoint (ltx-2-19b-dev / -distilled .safetensors) from checkpoints/."


def is_ltx2_checkpoint(keys) -> bool:
    """True when a file's keys are an LTX-2 all-in-one checkpoint (the transformer's audio-video gate, or the audio
    VAE's statistics)."""
    keys = set(keys)
    return any(m in keys for m in LTX2_MARKS)


def is_ltx2_file(path, arg: str = "checkpoint") -> bool:
    """True when a .safetensors file (header only) is an LTX-2 all-in-one checkpoint."""
    with open_tensors(path, arg) as f:
        return is_ltx2_checkpoint(f.keys())


def _rename(name: str, table) -> str:
    for a, b in table:
        name = name.replace(a, b)
    return name


def ltx2_record(f) -> dict:
    """The part configs: a Kinema test file's metadata, else configs/ltx2_19b.json."""
    from .family import FIXTURE_MARK
    raw = f.metadata.get(FIXTURE_MARK)
    if raw and "ltx2" in json.loads(raw):
        return {"name": None, "label": "Kinema test LTX-2", **json.loads(raw)["ltx2"]}
    return json.loads((CONFIGS / "ltx2_19b.json").read_text())


def _check_parts(f, arg: str) -> None:
    keys = set(f.keys())
    if not is_ltx2_checkpoint(keys):
        fail(arg, "is not an LTX-2 all-in-one checkpoint (no audio-video transformer or audio VAE tensors)",
             f.path.name, CHECKPOINT_FIX)
    need = {"transformer": DIT + "patchify_proj.weight", "connectors": PROJECTION,
            "vae": "vae.per_channel_statistics.mean-of-means",
            "audio_vae": "audio_vae.per_channel_statistics.mean-of-means", "vocoder": "vocoder.conv_pre.weight"}
    lacking = [part for part, key in need.items() if key not in keys]
    if lacking:
        fail(arg, "is an LTX-2 file without all the parts of the all-in-one checkpoint", f"{f.path.name} (no "
             f"{', '.join(lacking)})", "A transformer-only file (diffusion_models/) lacks the VAEs and vocoder: "
             + CHECKPOINT_FIX)


def _weights(f, part: str, dtype, device) -> dict[str, torch.Tensor]:
    """One part's tensors, renamed to diffusers' names (see the module docstring), each read into dtype/device."""
    from diffusers.loaders.single_file_utils import (convert_ltx2_audio_vae_to_diffusers,
                                                     convert_ltx2_transformer_to_diffusers,
                                                     convert_ltx2_vae_to_diffusers)

    def read(prefix, keep=lambda k: True):
        return {k: read_ltx_tensor(f, k, dtype, device) for k in f.keys()
                if k.startswith(prefix) and not is_aux_key(k) and not k.endswith(LTX_SCALES) and keep(k[len(prefix):])}

    if part == "transformer":
        return convert_ltx2_transformer_to_diffusers(read(DIT, lambda k: not k.startswith(CONNECTORS)))
    if part == "connectors":
        sd = {_rename(k[len(DIT):], CONNECTOR_NAMES): v
              for k, v in read(DIT, lambda k: k.startswith(CONNECTORS)).items()}
        sd["text_proj_in.weight"] = read_ltx_tensor(f, PROJECTION, dtype, device)
        return sd
    if part == "vae":
        return convert_ltx2_vae_to_diffusers(read("vae."))
    if part == "audio_vae":
        return convert_ltx2_audio_vae_to_diffusers(read("audio_vae."))
    return {_rename(k[len("vocoder."):], VOCODER_NAMES): v for k, v in read("vocoder.").items()}


def read_ltx_tensor(f, key: str, dtype, device) -> torch.Tensor:
    """One tensor in dtype/device. Lightricks' prequantised fp8 checkpoints (ltx-core's fp8_cast) store an fp8
    `X.weight` with a float32 scalar `X.weight_scale` (`X.bias_scale` likewise): the true value is
    `weight.float() * weight_scale`, de-scaled exactly in float32 before the cast (`X.input_scale`, an activation
    scale for fp8 matmuls, is not needed). ComfyUI's `scale_weight` convention is formats.read_tensor's."""
    scale_key = key + "_scale"
    if scale_key in f and f.dtype(key) in FP8:
        scale = f.get(scale_key).float()
        if scale.numel() != 1:
            fail("checkpoint", "has a per-channel fp8 scale Kinema does not read", f"{scale_key} {tuple(scale.shape)}",
                 "Use the bf16 checkpoint (ltx-2-19b-dev.safetensors) or ComfyUI's fp8 file.")
        return (read_tensor(f, key, torch.float32, device) * scale.to(device)).to(dtype)
    return read_tensor(f, key, dtype, device)


def _classes():
    from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    return {"transformer": LTX2VideoTransformer3DModel, "connectors": LTX2TextConnectors,
            "vae": AutoencoderKLLTX2Video, "audio_vae": AutoencoderKLLTX2Audio, "vocoder": LTX2Vocoder}


def _assign(module, weights: dict, part: str, arg: str, path_name: str, label: str) -> None:
    """Load a part's weights, refusing any difference of names or shapes (naming what differs)."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    shapes = [f"{k}: {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in weights and tuple(weights[k].shape) != tuple(v.shape)]
    if missing or extra or shapes:
        fail(arg, f"does not match {label}'s {part}", f"{path_name}: missing {missing[:3]}, unexpected {extra[:3]}, "
             f"shapes (file vs {label}) {shapes[:3]}",
             "Kinema reads LTX-2 19B checkpoints (ltx-2-19b-dev / -distilled); other LTX versions (LTX-Video 0.9, "
             "LTX-2.3) need their diffusers folder in models/diffusers.")
    module.load_state_dict(weights, strict=True, assign=True)


def load_ltx2_checkpoint(path, dtype: torch.dtype = torch.float32, device="cpu", arg: str = "checkpoint") -> dict:
    """The modules of an LTX-2 all-in-one checkpoint.

    Args:
        path: .safetensors (checkpoints/): fp32/bf16/fp16, ComfyUI scaled fp8 or Lightricks' prequantised fp8
            (both de-scaled exactly).
        dtype: of the transformer and connectors (the VAEs and the vocoder stay float32); device: of all.
    Returns: {"transformer", "connectors", "vae", "audio_vae", "vocoder"}: diffusers modules in eval mode, and
    "record" (the configs used). The transformer maps video tokens (B, N, C) + audio tokens (B, L, C_a) to their
    velocities; the video VAE maps (B, 3, F, H, W) in [-1, 1] to latents (B, C, (F-1)/8+1, H/32, W/32) for LTX-2.
    """
    from ..meta import init_empty_weights
    from ..families.base import quiet_diffusers
    quiet_diffusers()
    out = {}
    with open_tensors(path, arg) as f:
        if dtype in FP8:
            fail("dtype", "must be float32, bfloat16 or float16 for an LTX-2 checkpoint", dtype,
                 "Pick a 16-bit dtype: fp8 files are de-scaled into it.")
        check_target_dtype(arg, f, dtype)
        _check_parts(f, arg)
        record = ltx2_record(f)
        for part, cls in _classes().items():
            with init_empty_weights():
                module = cls.from_config(record[part])
            weights = _weights(f, part, torch.float32 if part in FP32_PARTS else dtype, device)
            _assign(module, weights, part, arg, f.path.name, record.get("label", "LTX-2"))
            out[part] = module.eval()
    out["record"] = record
    return out


def _scheduler(record: dict):
    from diffusers import FlowMatchEulerDiscreteScheduler
    cfg = {k: v for k, v in (record.get("scheduler") or {}).items() if k != "_class_name"}
    return FlowMatchEulerDiscreteScheduler.from_config(cfg) if cfg else FlowMatchEulerDiscreteScheduler()


def _gemma_fixture(path) -> dict | None:
    from .family import fixture_info
    return (fixture_info(path) or {}).get("gemma3_text")


def load_ltx2_files(checkpoint, text_encoder, device="cpu", dtype: torch.dtype = torch.float32):
    """diffusers' LTX2ConditionPipeline from an LTX-2 all-in-one checkpoint and its Gemma 3 file (the same
    components the folder route loads; never downloads, never unpickles).

    Args:
        checkpoint: the all-in-one .safetensors (checkpoints/). text_encoder: the Gemma 3 .safetensors
            (text_encoders/), with its tokenizer inside (`spiece_model`) or `tokenizer.model` beside it.
        device, dtype: the transformer, connectors and Gemma compute there in dtype; VAEs and vocoder in float32.
    Returns: the pipeline, progress bar off.
    """
    from diffusers import LTX2ConditionPipeline
    from .gemma import inspect_gemma, load_gemma
    if text_encoder is None:
        fail("text_encoder", "is needed for an LTX-2 checkpoint (its Gemma 3 text encoder is a separate file)",
             None, "Pick gemma_3_12B_it*.safetensors from text_encoders/ in the text_encoder input.")
    device = torch.device(device)
    width = inspect_gemma(text_encoder)                # refusals first, before gigabytes are read
    with open_tensors(checkpoint, "checkpoint") as f:
        _check_parts(f, "checkpoint")
        caption = ltx2_record(f)["connectors"]["caption_channels"]
    if width != caption:
        fail("text_encoder", f"must be {caption} wide for this checkpoint (its connectors take Gemma 3's hidden "
             f"states)", f"{Path(text_encoder).name} ({width} wide)",
             "Use Gemma 3 12B (gemma_3_12B_it*.safetensors) with LTX-2 19B.")
    parts = load_ltx2_checkpoint(checkpoint, dtype, device)
    gemma = load_gemma(text_encoder, dtype, device, fixture=_gemma_fixture(text_encoder))
    pipe = LTX2ConditionPipeline(scheduler=_scheduler(parts["record"]), vae=parts["vae"],
                                 audio_vae=parts["audio_vae"], text_encoder=gemma.model, tokenizer=gemma.tokenizer,
                                 connectors=parts["connectors"], transformer=parts["transformer"],
                                 vocoder=parts["vocoder"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_ltx2_family(kind: str, checkpoint, text_encoder, device="cpu", dtype: torch.dtype = torch.float32):
    """An LTX-2 family from the two files, as the folder route builds it: kind "audio" (Video to Audio),
    "portrait" (Portrait Animate) or "video" (the video registry's LTX-2 family when one is registered, else the
    portrait family). The family's `path` is the checkpoint."""
    from ..families import AUDIO, PORTRAIT, VIDEO
    index = {"_class_name": "LTX2ConditionPipeline"}
    registry = {"audio": AUDIO, "portrait": PORTRAIT, "video": VIDEO}[kind]
    name = registry.match(index)
    if name is None:
        registry, name = PORTRAIT, PORTRAIT.match(index)
    cls = registry.families[name]
    device = torch.device(device)
    model = cls(Path(checkpoint), device, dtype, load_ltx2_files(checkpoint, text_encoder, device, dtype))
    if hasattr(model, "distilled"):      # distilled weights have the dev model's shapes: only the name tells
        model.distilled = "distill" in Path(checkpoint).name.lower()
    return model
