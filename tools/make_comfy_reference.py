"""Make tests/data/comfy: small model files written by ComfyUI's own classes, and ComfyUI's outputs on fixed inputs.

The independent producer for Kinema's single-file loaders (kinema.models.files). Run it in a SEPARATE venv that has
ComfyUI's requirements (torch 2.14.1 + torchvision 0.29.1 + torchaudio 2.11 run on CPU), `sentencepiece` and `gguf`,
with a checkout of ComfyUI (never committed here):

    /work/comfyref/.venv/bin/python tools/make_comfy_reference.py --comfy /work/comfyref/ComfyUI \
        --animatediff /work/comfyref/AnimateDiff --out tests/data/comfy

What it writes (all small; the ComfyUI commit goes to tests/data/comfy/COMFY_COMMIT.md):
- Wan denoiser (comfy.ldm.wan.model.WanModel, tiny config, text_dim 32 so the files stay small) saved as ComfyUI
  saves a diffusion model: fp16 (no prefix, as Comfy-Org's repackaged files), bf16 with the `model.diffusion_model.`
  prefix (as ModelSave writes), scaled fp8 built with comfy.ops.scaled_fp8_ops (fp8 weights, per-layer
  `scale_weight`, the `scaled_fp8` marker) and a GGUF file (Q8_0 / Q4_K / Q5_K / F16 / F32, the city96 layout).
- I2V, FLF2V and VACE variants as recipes (keys, shapes and dtypes from ComfyUI's state_dict; values from seeds),
  because their image projection alone is 1280x1280: the tests rebuild the files from the recipe.
- ComfyUI's variant detection (comfy.model_detection.detect_unet_config) for every file.
- Wan 2.1 and 2.2 VAEs (comfy.ldm.wan.vae / vae2_2, tiny dims), UMT5 text encoders (comfy.text_encoders.t5 through
  sd1_clip.SDClipModel as UMT5XXlModel builds it) with a SentencePiece model trained here stored as `spiece_model`
  (fp16 and scaled fp8), and ComfyUI's tokens and embeddings for fixed prompts.
- A CLIP vision tower (comfy.clip_vision.ClipVisionModel, clip_vision_h's config fields, tiny) saved as ComfyUI saves it, and
  its encode_image outputs (the preprocessed pixels, penultimate and last hidden states, image embeds).
- An SD 1.5 checkpoint (ComfyUI's UNetModel, AutoencoderKL, SDClipModel, saved through SD15's saving hooks) and an
  AnimateDiff v2 motion module made by AnimateDiff's own classes (guoyww/AnimateDiff; needs `diffusers` in that
  venv), with their outputs.
- Sets that pair for the files loader (recipes): T2V and I2V denoisers 64 wide on the text side (the tiny UMT5's
  width) and a 1280-wide CLIP vision tower; ComfyUI's denoiser outputs on its own UMT5 embeddings and CLIP features.
- reference.safetensors: every input and output.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))
from comfy_recipe import seed_value  # noqa: E402  (the tests rebuild recipe files with the same function)

WAN_T2V = dict(dim=128, ffn_dim=256, freq_dim=256, text_dim=32, in_dim=16, out_dim=16, num_heads=1, num_layers=2)
VAE21 = dict(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
             temperal_downsample=[False, True, True], dropout=0.0)
VAE22 = dict(dim=8, dec_dim=12, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
             temperal_downsample=[False, True, True], dropout=0.0)
UMT5 = {"d_ff": 96, "d_kv": 16, "d_model": 64, "decoder_start_token_id": 0, "dropout_rate": 0.1, "eos_token_id": 1,
        "dense_act_fn": "gelu_pytorch_tanh", "initializer_factor": 1.0, "is_encoder_decoder": True,
        "is_gated_act": True, "layer_norm_epsilon": 1e-06, "model_type": "umt5", "num_decoder_layers": 2,
        "num_heads": 4, "num_layers": 2, "output_past": True, "pad_token_id": 0,
        "relative_attention_num_buckets": 32, "tie_word_embeddings": False, "vocab_size": 320}
CLIP_VISION = {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "gelu", "hidden_size": 128, "image_size": 56,
               "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 256,
               "layer_norm_eps": 1e-05, "model_type": "clip_vision_model", "num_attention_heads": 2,
               "num_channels": 3, "num_hidden_layers": 3, "patch_size": 14, "projection_dim": 64,
               "torch_dtype": "float32"}  # clip_vision_config_h.json's fields, tiny (heads 64 wide)
# SD 1.5 as ComfyUI's SD15 model config builds it (model_detection for an SD 1.5 checkpoint), tiny: GroupNorm(32)
# needs channels in multiples of 32; 8 heads as SD 1.5; CLIP heads 64 wide as CLIP ViT-L's
SD15_UNET = dict(image_size=32, in_channels=4, model_channels=32, out_channels=4, num_res_blocks=[1, 1],
                 channel_mult=[1, 2], num_heads=8, num_head_channels=-1, use_spatial_transformer=True, legacy=False,
                 transformer_depth=[1, 1], transformer_depth_middle=1, transformer_depth_output=[1, 1, 1, 1, 1, 1],
                 context_dim=128, use_linear_in_transformer=False, adm_in_channels=None, use_temporal_attention=False)
SD15_VAE = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2],
                num_res_blocks=1, attn_resolutions=[], dropout=0.0)
SD15_CLIP = {"attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2, "hidden_act": "quick_gelu",
             "hidden_size": 128, "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 256,
             "layer_norm_eps": 1e-05, "max_position_embeddings": 77, "model_type": "clip_text_model",
             "num_attention_heads": 2, "num_hidden_layers": 2, "pad_token_id": 1, "projection_dim": 128,
             "torch_dtype": "float32", "vocab_size": 100}
# AnimateDiff v2/v3 motion modules (configs/inference/inference-v2.yaml) on the tiny UNet's channels
MOTION = dict(num_attention_heads=8, num_transformer_block=1, attention_block_types=("Temporal_Self", "Temporal_Self"),
              temporal_position_encoding=True, temporal_position_encoding_max_len=32, temporal_attention_dim_div=1,
              zero_initialize=False)
PROMPTS = ["a red fox runs through fresh snow at dawn", "Zwei Katzen spielen im Garten, slow motion!",
           "  double  spaces and UPPER case 123 "]


def fill(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter of a ComfyUI module (built without init) its seed value, in its own dtype."""
    with torch.no_grad():
        for k, p in module.state_dict(keep_vars=True).items():
            if p.dtype == torch.float8_e4m3fn or not p.is_floating_point():
                continue
            p.copy_(seed_value(k, p.shape, seed).to(p.dtype))


def as_recipe(sd: dict, prefix: str = "") -> dict:
    return {"prefix": prefix, "tensors": {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()}}


def save(sd: dict, path: Path, metadata=None) -> None:
    import comfy.utils
    comfy.utils.save_torch_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata)


# ---------------------------------------------------------------- Wan denoiser
def wan_model(cfg: dict, dtype=torch.float32, ops=None, model_type="t2v", vace=None, flf=None):
    import comfy.ldm.wan.model as wm
    import comfy.ops
    ops = ops or comfy.ops.manual_cast
    kw = dict(cfg, device="cpu", dtype=dtype, operations=ops)
    if vace:
        return wm.VaceWanModel(vace_layers=vace[0], vace_in_dim=vace[1], **kw)
    return wm.WanModel(model_type=model_type, flf_pos_embed_token_number=flf, **kw)


def wan_inputs(cfg, g):
    x = torch.randn(1, cfg["in_dim"], 3, 8, 8, generator=g)
    t = torch.tensor([725.0])
    ctx = torch.randn(1, 7, cfg["text_dim"], generator=g)
    return x, t, ctx


def run_wan(model, x, t, ctx, **kw):
    model.eval()
    with torch.no_grad():
        return model(x, t, ctx, **kw).float()


def detect(sd: dict, prefix: str = "") -> dict:
    import comfy.model_detection
    cfg = comfy.model_detection.detect_unet_config(sd, prefix)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


def quantize_scaled_fp8(fp32_model_sd: dict, cfg: dict):
    """A scaled-fp8 WanModel as ComfyUI holds one (comfy.ops.scaled_fp8_ops): each Linear's weight in e4m3fn with a
    per-tensor float32 `scale_weight` (absmax / 448); its bias, fp8 too, a plain cast (scale 1, as ComfyUI casts
    tensors without a scale); the rest as ComfyUI's fp32 model holds it."""
    import comfy.ops
    ops = comfy.ops.scaled_fp8_ops(fp8_matrix_mult=False, scale_input=False, override_dtype=torch.float8_e4m3fn)
    model = wan_model(cfg, dtype=torch.float32, ops=ops)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, ops.Linear):
                w = fp32_model_sd[name + ".weight"]
                scale = (w.abs().max() / 448.0).clamp(min=1e-12).float()
                mod.scale_weight.copy_(scale)
                mod.weight.data = (w / scale).to(torch.float8_e4m3fn)
                if mod.bias is not None:
                    mod.bias.data = fp32_model_sd[name + ".bias"].to(torch.float8_e4m3fn)
        rest = {k: v for k, v in fp32_model_sd.items() if k not in model.state_dict() or
                model.state_dict()[k].dtype != torch.float8_e4m3fn}
        model.load_state_dict({k: v for k, v in rest.items() if not k.endswith("scale_weight")}, strict=False)
    return model


def random_kquant(rows: int, cols: int, qtype, g: np.random.Generator) -> np.ndarray:
    """Valid Q4_K / Q5_K blocks (256 weights each): random 4/5-bit codes and 6-bit scales, small f16 super-scales.
    gguf-py implements K-quant dequantisation only, so the blocks are made directly; gguf.dequantize reads them."""
    import gguf
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block
    raw = g.integers(0, 256, size=(n_blocks, nbytes), dtype=np.uint8)
    dd = np.array([2e-4, 1e-4], dtype=np.float16).view(np.uint8)  # d, dmin
    raw[:, 0:4] = dd
    return raw.reshape(rows, cols // block * nbytes)


def write_gguf(sd: dict, path: Path, seed: int = 0) -> dict:
    """City96's layout (ComfyUI-GGUF): original Wan keys, arch `wan`, shapes reversed (ne0 innermost), tensors of
    more than 4 dims flattened with `comfy.gguf.orig_shape.<name>` (int32 array). Returns the dequantised state dict."""
    import gguf
    from gguf import GGMLQuantizationType as Q
    g = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "wan")
    out = {}
    for k, v in sd.items():
        a = v.float().numpy()
        if k.endswith("ffn.2.weight"):
            qt = Q.Q4_K if ".0." in k else Q.Q5_K
            data = random_kquant(a.shape[0], a.shape[1], qt, g)
            w.add_tensor(k, data, raw_dtype=qt)
            out[k] = torch.from_numpy(gguf.quants.dequantize(data, qt).reshape(a.shape).copy())
            continue
        if a.ndim > 4:
            w.add_array(f"comfy.gguf.orig_shape.{k}", [int(s) for s in a.shape])
            a = a.reshape(a.shape[0], -1)
            qt = Q.F16
        elif a.ndim == 2 and a.shape[1] % 32 == 0:
            qt = Q.Q8_0
        elif a.ndim == 1 and "bias" in k:
            qt = Q.F16
        else:
            qt = Q.F32
        data = gguf.quants.quantize(a.astype(np.float32), qt) if qt in (Q.Q8_0,) else a.astype(
            np.float16 if qt == Q.F16 else np.float32)
        w.add_tensor(k, data, raw_dtype=qt)
        deq = gguf.quants.dequantize(data, qt) if qt == Q.Q8_0 else data.astype(np.float32)
        out[k] = torch.from_numpy(np.ascontiguousarray(deq).reshape(tuple(v.shape)).copy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def make_wan(out: Path, ref: dict, detected: dict, recipes: dict) -> None:
    cfg = WAN_T2V
    g = torch.Generator().manual_seed(1)
    x, t, ctx = wan_inputs(cfg, g)
    ref.update({"wan.x": x, "wan.t": t, "wan.context": ctx})
    base = wan_model(cfg)
    fill(base)
    base_sd = {k: v.clone() for k, v in base.state_dict().items()}
    ref["wan.out_fp32"] = run_wan(base, x, t, ctx)

    # fp16 / bf16: a ComfyUI model of that weight dtype (patch_embedding stays fp32 there), saved as it holds it
    # (the bf16 file with ModelSave's prefix is a recipe: tests rebuild it, to keep the committed data small)
    for dtype, name, prefix in ((torch.float16, "wan_t2v.fp16.safetensors", ""),
                                (torch.bfloat16, "wan_t2v_bf16", "model.diffusion_model.")):
        m = wan_model(cfg, dtype=dtype)
        m.load_state_dict(base_sd)
        sd = {prefix + k: v for k, v in m.state_dict().items()}
        if name.endswith(".safetensors"):
            save(sd, out / name)
        else:
            recipes[name] = as_recipe(sd, prefix)
        detected[name] = detect(sd, prefix)
        back = wan_model(cfg)  # ComfyUI computing in fp32 on the file's weights
        back.load_state_dict({k[len(prefix):]: v.float() for k, v in sd.items()})
        ref[f"wan.out_{'bf16' if 'bf16' in name else 'fp16'}"] = run_wan(back, x, t, ctx)

    fp8 = quantize_scaled_fp8(base_sd, cfg)
    sd = dict(fp8.state_dict())
    sd["scaled_fp8"] = torch.tensor([], dtype=torch.float8_e4m3fn)  # ModelSave's marker (model_base.py)
    save(sd, out / "wan_t2v.fp8_scaled.safetensors")
    detected["wan_t2v.fp8_scaled.safetensors"] = detect(sd)
    ref["wan.out_fp8_scaled"] = run_wan(fp8, x, t, ctx)

    deq = write_gguf(base_sd, out / "wan_t2v.Q8_0-mixed.gguf")
    m = wan_model(cfg)
    m.load_state_dict(deq)
    ref["wan.out_gguf"] = run_wan(m, x, t, ctx)
    detected["wan_t2v.Q8_0-mixed.gguf"] = detect(deq)


def make_wan_recipes(out: Path, ref: dict, detected: dict, recipes: dict) -> None:
    """I2V / FLF2V / VACE: too big to commit (MLPProj is 1280 wide in ComfyUI), so the recipe lists ComfyUI's keys,
    shapes and dtypes; values come from seed_value; the tests rebuild the fp16 file."""
    g = torch.Generator().manual_seed(2)
    cfg = dict(WAN_T2V, in_dim=36)
    variants = {"wan_i2v": dict(model_type="i2v"), "wan_flf2v": dict(model_type="i2v", flf=514),
                "wan_vace": dict(vace=(2, 96))}
    for name, kw in variants.items():
        c = dict(WAN_T2V, num_layers=4) if name == "wan_vace" else cfg
        m = wan_model(c, dtype=torch.float16, **kw)
        fill(m)
        sd = m.state_dict()
        recipes[name] = as_recipe(sd)
        detected[name] = detect(sd)
        back = wan_model(c, **kw)
        back.load_state_dict({k: v.float() for k, v in sd.items()})
        x = torch.randn(1, c["in_dim"], 3, 8, 8, generator=g)
        ctx = torch.randn(1, 7, c["text_dim"], generator=g)
        t = torch.tensor([410.0])
        extra = {}
        if name != "wan_vace":
            # CLIP vision features (1, 257 or 2*257, 1280): seeded, not stored (the tests remake them)
            extra["clip_fea"] = seed_value(f"{name}.clip_fea", (1, 514 if "flf" in name else 257, 1280)) * 10
        else:
            vc = torch.randn(1, 96, 3, 8, 8, generator=g)
            ref[f"{name}.vace_context"] = vc
            extra.update(vace_context=vc.unsqueeze(0), vace_strength=[0.7])
        ref.update({f"{name}.x": x, f"{name}.t": t, f"{name}.context": ctx})
        # the text context zero-padded to 512 tokens, as ComfyUI's UMT5 tokenizer pads it (min_length 512) and
        # diffusers' image cross-attention assumes (it splits the image tokens off as `length - 512`)
        ctx512 = torch.cat([ctx, ctx.new_zeros(1, 512 - ctx.shape[1], ctx.shape[2])], 1)
        ref[f"{name}.out"] = run_wan(back, x, t, ctx512, **extra)


# ---------------------------------------------------------------- VAEs
def make_vaes(out: Path, ref: dict, recipes: dict) -> None:
    import comfy.ldm.wan.vae as v21
    import comfy.ldm.wan.vae2_2 as v22
    g = torch.Generator().manual_seed(3)
    for name, cls, cfg, chans in (("wan_2.1_vae", v21.WanVAE, VAE21, 3), ("wan2.2_vae", v22.WanVAE, VAE22, 3)):
        vae = cls(**cfg).eval()
        fill(vae)
        sd = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in vae.state_dict().items()}
        recipes[name] = as_recipe(sd)  # conv-heavy: a recipe (fp16, as saved), rebuilt by the tests
        vae.load_state_dict({k: v.float() for k, v in sd.items()})
        size = 32 if name == "wan2.2_vae" else 16
        x = torch.rand(1, chans, 5, size, size, generator=g) * 2 - 1
        with torch.no_grad():
            mu = vae.encode(x)
            z = torch.randn(mu.shape, generator=g)
            dec = vae.decode(z)
        ref.update({f"{name}.x": x, f"{name}.mu": mu, f"{name}.z": z, f"{name}.decoded": dec})


# ---------------------------------------------------------------- CLIP vision
def make_clip_vision(out: Path, ref: dict, work: Path) -> None:
    """comfy.clip_vision.ClipVisionModel (what CLIPVisionLoader builds for clip_vision_h) from a tiny config with
    clip_vision_config_h.json's fields, saved as ComfyUI saves it (get_sd, fp16), and its encode_image outputs on a
    fixed non-square image: the preprocessed pixels (clip_preprocess, centre crop) and the three outputs."""
    import comfy.clip_vision
    cfg_path = work / "clip_vision_tiny.json"
    cfg_path.write_text(json.dumps(CLIP_VISION))
    clip = comfy.clip_vision.ClipVisionModel(str(cfg_path))
    fill(clip.model)
    sd = {k: v.to(torch.float16) for k, v in clip.get_sd().items()}
    save(sd, out / "clip_vision_tiny.fp16.safetensors")
    clip.load_sd({k: v.float() for k, v in sd.items()})
    g = torch.Generator().manual_seed(4)
    image = torch.rand(1, 72, 96, 3, generator=g)  # IMAGE (B, H, W, C) 0..1
    with torch.no_grad():
        pixels = comfy.clip_vision.clip_preprocess(image, size=CLIP_VISION["image_size"])
        enc = clip.encode_image(image)
    ref.update({"clip_vision.image": image, "clip_vision.pixels": pixels.float(),
                "clip_vision.penultimate": enc["penultimate_hidden_states"].float(),
                "clip_vision.last_hidden_state": enc["last_hidden_state"].float(),
                "clip_vision.image_embeds": enc["image_embeds"].float()})


def make_wan_sets(ref: dict, recipes: dict, work: Path) -> None:
    """Whole sets of files that pair (the files loader's input): a T2V and an I2V denoiser whose text side is the
    tiny UMT5's width (64), with a 1280-wide CLIP vision tower (what Wan's image projection takes; 2 layers, 28 px),
    as recipes. ComfyUI's outputs on the prompt ComfyUI's own UMT5 file encodes (PROMPTS[0]) and, for I2V, the
    image ComfyUI's own CLIP vision encodes: `set_*.out`."""
    import comfy.clip_vision
    cv_cfg = dict(CLIP_VISION, hidden_size=1280, num_attention_heads=16, num_hidden_layers=2, image_size=28,
                  intermediate_size=64)
    cfg_path = work / "clip_vision_h_tiny.json"
    cfg_path.write_text(json.dumps(cv_cfg))
    clip = comfy.clip_vision.ClipVisionModel(str(cfg_path))
    fill(clip.model)
    sd = {k: v.to(torch.float16) for k, v in clip.get_sd().items()}
    recipes["clip_vision_h_tiny"] = as_recipe(sd)
    clip.load_sd({k: v.float() for k, v in sd.items()})
    with torch.no_grad():
        enc = clip.encode_image(ref["clip_vision.image"])
    ref["set_i2v.pixels"] = comfy.clip_vision.clip_preprocess(ref["clip_vision.image"], size=28).float()
    ref["set_i2v.clip_fea"] = enc["penultimate_hidden_states"].float()
    emb = ref["umt5.0.embeds"]  # ComfyUI's UMT5 on PROMPTS[0]: the tokens, then zeros up to 512 (zero_out_masked)
    ctx = torch.cat([emb, emb.new_zeros(1, 512 - emb.shape[1], emb.shape[2])], 1)
    g = torch.Generator().manual_seed(5)
    for name, kw in (("set_t2v", dict(in_dim=16)), ("set_i2v", dict(in_dim=36, model_type="i2v"))):
        cfg = dict(WAN_T2V, text_dim=UMT5["d_model"], in_dim=kw.pop("in_dim"))
        m = wan_model(cfg, dtype=torch.float16, **kw)
        fill(m)
        sd = m.state_dict()
        recipes[name] = as_recipe(sd)
        back = wan_model(cfg, **kw)
        back.load_state_dict({k: v.float() for k, v in sd.items()})
        x = torch.randn(1, cfg["in_dim"], 3, 8, 8, generator=g)
        t = torch.tensor([640.0])
        extra = {"clip_fea": ref["set_i2v.clip_fea"]} if name == "set_i2v" else {}
        ref.update({f"{name}.x": x, f"{name}.t": t, f"{name}.out": run_wan(back, x, t, ctx, **extra)})


# ---------------------------------------------------------------- SD 1.5 checkpoint + AnimateDiff motion module
def make_sd15(ref: dict, recipes: dict) -> None:
    """An SD 1.5 checkpoint as ComfyUI saves one (CheckpointSave: model.diffusion_model., first_stage_model.,
    cond_stage_model.transformer.text_model. through comfy.supported_models.SD15's saving hooks), fp16, from
    ComfyUI's UNetModel, AutoencoderKL and SDClipModel at a tiny size (a recipe: 6.7 MB), and their outputs on
    fixed inputs."""
    import comfy.ldm.models.autoencoder as ae
    import comfy.ldm.modules.diffusionmodules.openaimodel as oai
    import comfy.ops
    import comfy.sd1_clip
    import comfy.supported_models
    unet = oai.UNetModel(**SD15_UNET, dtype=torch.float32, device="cpu", operations=comfy.ops.manual_cast).eval()
    vae = ae.AutoencoderKL(ddconfig=dict(SD15_VAE), embed_dim=4).eval()
    clip = comfy.sd1_clip.SDClipModel(device="cpu", textmodel_json_config=dict(SD15_CLIP), dtype=torch.float32,
                                      special_tokens={"start": 0, "end": 2, "pad": 1})
    cfg = comfy.supported_models.SD15(dict(SD15_UNET))
    sd = {"model.diffusion_model." + k: v for k, v in unet.state_dict().items()}
    sd.update(cfg.process_vae_state_dict_for_saving(vae.state_dict()))
    sd.update(cfg.process_clip_state_dict_for_saving({"clip_l." + k: v for k, v in clip.state_dict().items()}))
    # values from the saved names (a recipe: the tests rebuild the file), fp16 as a pruned fp16 checkpoint
    sd = {k: seed_value(k, v.shape).to(torch.float16) if v.is_floating_point() else v for k, v in sd.items()}
    recipes["sd15_tiny"] = as_recipe(sd)
    # ComfyUI computing in fp32 on the file's weights
    back = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    unet.load_state_dict({k[len("model.diffusion_model."):]: v for k, v in back.items()
                          if k.startswith("model.diffusion_model.")})
    vae.load_state_dict({k[len("first_stage_model."):]: v for k, v in back.items() if k.startswith("first_stage_model.")})
    clip.transformer.load_state_dict({k[len("cond_stage_model.transformer."):]: v for k, v in back.items()
                                      if k.startswith("cond_stage_model.transformer.")}, strict=False)
    g = torch.Generator().manual_seed(6)
    x, ctx, t = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 7, 128, generator=g), torch.tensor([500.0, 120.0])
    z, ids = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([[0, 17, 42, 99, 5, 2] + [1] * 71])  # 77 tokens
    with torch.no_grad():
        ref.update({"sd15.x": x, "sd15.t": t, "sd15.context": ctx, "sd15.eps": unet(x, t, ctx).float(),
                    "sd15.z": z, "sd15.decoded": vae.decode(z).float(), "sd15.ids": ids,
                    "sd15.hidden": clip.transformer(ids)[0].float()})


def _old_diffusers_names() -> None:
    """AnimateDiff's motion_module.py was written against diffusers 0.11: `diffusers.modeling_utils` and
    `CrossAttention` (reshape_heads_to_batch_dim, _attention). Give it those names on today's diffusers, with the
    old CrossAttention's arithmetic (scores = softmax(q k^T * scale), out = scores v)."""
    import types
    import diffusers.models.attention as attention
    import diffusers.models.modeling_utils
    from diffusers.models.attention_processor import Attention
    sys.modules.setdefault("diffusers.modeling_utils", diffusers.models.modeling_utils)

    class CrossAttention(Attention):
        _slice_size = None
        _use_memory_efficient_attention_xformers = False

        def reshape_heads_to_batch_dim(self, x):
            return self.head_to_batch_dim(x)

        def _attention(self, query, key, value, attention_mask=None):
            return self.batch_to_head_dim(torch.bmm(self.get_attention_scores(query, key, attention_mask), value))

    attention.CrossAttention = CrossAttention
    del types


def make_motion_module(out: Path, ref: dict, animatediff: Path) -> str:
    """A motion module file as AnimateDiff's own classes make it (guoyww/AnimateDiff,
    animatediff/models/motion_module.py: VanillaTemporalModule, v2 settings), for the tiny UNet's two levels: the
    keys its UNet3DConditionModel gives them (down_blocks.i / mid_block / up_blocks.i .motion_modules.j.), fp16,
    and each module's output on a fixed (b, c, f, h, w) input. Returns the AnimateDiff commit."""
    import importlib.util
    _old_diffusers_names()
    spec = importlib.util.spec_from_file_location("ad_motion_module", animatediff / "animatediff/models/motion_module.py")
    mm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mm)
    channels, layers = [32, 64], 1
    where = [(f"down_blocks.{i}", c, layers) for i, c in enumerate(channels)] + [("mid_block", channels[-1], 1)]
    where += [(f"up_blocks.{i}", c, layers + 1) for i, c in enumerate(reversed(channels))]
    sd, g = {}, torch.Generator().manual_seed(7)
    for block, c, n in where:
        for j in range(n):
            module = mm.get_motion_module(c, "Vanilla", dict(MOTION)).eval()
            fill(module, seed=len(sd))
            prefix = f"{block}.motion_modules.{j}."
            half = {k: v.to(torch.float16) for k, v in module.state_dict().items()}
            sd.update({prefix + k: v for k, v in half.items()})
            module.load_state_dict({k: v.float() for k, v in half.items()})
            x = torch.randn(1, c, 6, 4, 4, generator=g)
            with torch.no_grad():
                ref[f"mm.{prefix}x"], ref[f"mm.{prefix}out"] = x, module(x, None, None).float()
    save(sd, out / "mm_tiny_v2.fp16.safetensors")
    return subprocess.run(["git", "-C", str(animatediff), "log", "-1", "--format=%H %cs"], capture_output=True,
                          text=True).stdout.strip()


# ---------------------------------------------------------------- UMT5 + SentencePiece
def train_spm(work: Path, normalization: str = "nmt_nfkc") -> bytes:
    import sentencepiece as spm
    words = ("a red fox runs through fresh snow at dawn the cat dog bird flies over river mountain city night "
             "light slow motion camera pans left right close up wide shot sunset ocean waves forest rain "
             "zwei katzen spielen im garten der die das und ein eine video film scene people walking "
             "upper lower case numbers one two three 123 456 colour color bright dark soft sharp").split()
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, size=rng.integers(4, 12))) for _ in range(3000)]
    lines += [w.capitalize() + "." for w in words] + [w.upper() + "!" for w in words] + ["äöü ß é ñ , . ! ?"] * 20
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(lines), encoding="utf-8")
    prefix = str(work / f"spm_{normalization}")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=prefix, vocab_size=250, model_type="unigram",
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
                                   normalization_rule_name=normalization, minloglevel=2)
    return Path(prefix + ".model").read_bytes()


def make_umt5(out: Path, ref: dict, work: Path) -> dict:
    import comfy.ops
    import comfy.sd1_clip
    import comfy.text_encoders.t5
    import comfy.text_encoders.wan as wan_te
    # the fp16 file carries a model with NFKC normalisation (a precompiled charsmap, as UMT5's own), the fp8 file
    # one without (identity), which keeps the fp8 file small and covers both normaliser paths
    spiece = torch.frombuffer(bytearray(train_spm(work)), dtype=torch.uint8)
    spiece8 = torch.frombuffer(bytearray(train_spm(work, "identity")), dtype=torch.uint8)
    tok = wan_te.WanT5Tokenizer(tokenizer_data={"spiece_model": spiece})
    tok8 = wan_te.WanT5Tokenizer(tokenizer_data={"spiece_model": spiece8})
    info = {"prompts": PROMPTS, "tokens": [], "tokens_fp8": []}

    def build(options=None, dtype=torch.float32):
        # exactly UMT5XXlModel's arguments, with the tiny config instead of umt5_config_xxl.json
        return comfy.sd1_clip.SDClipModel(device="cpu", layer="last", layer_idx=None, dtype=dtype,
                                          textmodel_json_config=dict(UMT5), special_tokens={"end": 1, "pad": 0},
                                          model_class=comfy.text_encoders.t5.T5, enable_attention_masks=True,
                                          zero_out_masked=True, model_options=options or {})

    enc = build()
    fill(enc.transformer)
    base_sd = {k: v.clone() for k, v in enc.transformer.state_dict().items()}
    fp16 = {k: v.to(torch.float16) for k, v in base_sd.items()}
    save(dict(fp16, spiece_model=spiece), out / "umt5_tiny.fp16.safetensors")
    enc.transformer.load_state_dict({k: v.float() for k, v in fp16.items()})

    fp8 = build({"scaled_fp8": torch.float8_e4m3fn})
    with torch.no_grad():
        for name, mod in fp8.transformer.named_modules():
            if isinstance(mod, torch.nn.Linear) and hasattr(mod, "scale_weight"):
                w = base_sd[name + ".weight"]
                scale = (w.abs().max() / 448.0).float()
                mod.scale_weight.copy_(scale)
                mod.weight.data = (w / scale).to(torch.float8_e4m3fn)
        fp8.transformer.load_state_dict({k: v for k, v in base_sd.items() if not any(
            k == n + ".weight" for n, m in fp8.transformer.named_modules() if hasattr(m, "scale_weight"))},
            strict=False)
    sd8 = dict(fp8.transformer.state_dict())  # holds the `scaled_fp8` marker parameter (sd1_clip.py)
    save(dict(sd8, spiece_model=spiece8), out / "umt5_tiny.fp8_scaled.safetensors")

    for i, p in enumerate(PROMPTS):
        for t, model, key, suffix in ((tok, enc, "tokens", ""), (tok8, fp8, "tokens_fp8", "_fp8")):
            tw = t.tokenize_with_weights(p)["umt5xxl"]
            ids = [x for x, _w in tw[0]]
            n = ids.index(1) + 1  # the end token, then pad 0 up to min_length 512
            info[key].append(ids[:n])
            with torch.no_grad():
                emb = model.encode_token_weights(tw)[0]
            ref[f"umt5.{i}.embeds{suffix}"] = emb[:, :n + 2].float()  # the tokens and two masked (zero) positions
            ref[f"umt5.{i}.len{suffix}"] = torch.tensor([emb.shape[1]])
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comfy", required=True, type=Path, help="a ComfyUI checkout (never committed)")
    ap.add_argument("--animatediff", required=True, type=Path,
                    help="a checkout of guoyww/AnimateDiff (never committed): its motion module classes")
    ap.add_argument("--out", default=Path(__file__).resolve().parents[1] / "tests" / "data" / "comfy", type=Path)
    a = ap.parse_args()
    sys.argv = [sys.argv[0], "--cpu"]
    sys.path.insert(0, str(a.comfy))
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.model_management  # noqa: F401  (reads --cpu)
    from safetensors.torch import save_file

    torch.manual_seed(0)
    a.out.mkdir(parents=True, exist_ok=True)
    ref, detected, recipes = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        make_wan(a.out, ref, detected, recipes)
        make_wan_recipes(a.out, ref, detected, recipes)
        make_vaes(a.out, ref, recipes)
        tokens = make_umt5(a.out, ref, Path(tmp))
        make_clip_vision(a.out, ref, Path(tmp))
        make_wan_sets(ref, recipes, Path(tmp))
        make_sd15(ref, recipes)
        animatediff_commit = make_motion_module(a.out, ref, a.animatediff)
    save_file({k: v.contiguous() for k, v in ref.items()}, str(a.out / "reference.safetensors"))
    meta = {"detected": detected, "recipes": recipes, "umt5": tokens, "wan_t2v_config": WAN_T2V,
            "vae21": VAE21, "vae22": VAE22, "umt5_config": UMT5,
            "clip_vision_config": CLIP_VISION, "sd15_unet": SD15_UNET, "sd15_vae": SD15_VAE, "sd15_clip": SD15_CLIP,
            "motion_module": dict(MOTION, attention_block_types=list(MOTION["attention_block_types"]))}
    (a.out / "reference.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    commit = subprocess.run(["git", "-C", str(a.comfy), "log", "-1", "--format=%H %cs"], capture_output=True,
                            text=True).stdout.strip()
    import comfyui_version
    (a.out / "COMFY_COMMIT.md").write_text(
        f"# Producer of these files\n\nComfyUI {comfyui_version.__version__}, commit {commit} (Comfy-Org/ComfyUI), "
        f"torch {torch.__version__}, run on CPU by tools/make_comfy_reference.py. The AnimateDiff motion module: "
        f"guoyww/AnimateDiff commit {animatediff_commit} (its animatediff/models/motion_module.py, on diffusers "
        f"0.42.1's Attention). Neither's code is in this repository; rerun the script against those commits to remake "
        f"every file here.\n")
    total = sum(p.stat().st_size for p in a.out.iterdir())
    print(f"wrote {len(list(a.out.iterdir()))} files, {total / 1e6:.2f} MB to {a.out}")


if __name__ == "__main__":
    main()
