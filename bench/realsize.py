"""Real-size architectures with random weights for the benches (the compute is real even if the pictures are not):
Wan 2.1 T2V 1.3B, AnimateDiff (SD 1.5 UNet + motion module v2) and LTX-2 19B (+ its latent upsampler), as diffusers
pipelines and as Kinema families,
plus random prompt embeddings in place of the text encoders (UMT5-XXL alone would be 11 GB of random weights).
`tiny=True` gives the same code paths at fixture size (the suites' --dry-run)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

WAN13 = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
             text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
             qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)         # Wan 2.1 T2V 1.3B
WAN_TINY = dict(WAN13, num_attention_heads=2, attention_head_dim=12, text_dim=32, ffn_dim=32, num_layers=2,
                rope_max_seq_len=32)
SD15_MOTION = dict(sample_size=64, cross_attention_dim=768, use_motion_mid_block=True, motion_max_seq_length=32)
SD15_TINY = dict(sample_size=8, block_out_channels=(32, 32), layers_per_block=1, cross_attention_dim=32,
                 down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
                 up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"), norm_num_groups=8,
                 num_attention_heads=2, motion_num_attention_heads=2, use_motion_mid_block=True,
                 motion_max_seq_length=32)


def random_module(cls, config: dict, device, dtype, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """cls(**config) with random weights (normal, std) built straight on `device` (no slow default init)."""
    from accelerate import init_empty_weights
    with init_empty_weights():
        module = cls(**config)
    module = module.to_empty(device=device).to(dtype).eval()
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in list(module.named_parameters()) + list(module.named_buffers()):
            if not p.is_floating_point():
                continue
            if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "norm3.weight", "norm_q.weight",
                              "norm_k.weight", "norm_out.weight")) or "scale_shift" in name:
                p.fill_(1.0) if name.endswith("weight") else p.normal_(0.0, std, generator=g)
            else:
                p.normal_(0.0, std, generator=g)
    return module


def wan_pipeline(tiny: bool, device, dtype=torch.bfloat16, transformer_device=None, tiny_vae: bool = False,
                 transformer=None):
    """WanPipeline (no tokenizer / text encoder: prompts come as embeddings) with a random transformer (1.3B, or
    fixture size; or `transformer`, e.g. one loaded from a file) and a random Wan 2.1 VAE (fp32; fixture size when
    tiny or tiny_vae). transformer_device: where the transformer is built."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    if transformer is None:
        transformer = random_module(WanTransformer3DModel, WAN_TINY if tiny else WAN13, transformer_device or device,
                                    dtype)
    vae_cfg = dict(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1) if tiny or tiny_vae else {}
    vae = random_module(AutoencoderKLWan, vae_cfg, device, torch.float32, seed=1)
    return WanPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                       transformer=transformer)


def write_wan_file(tiny: bool, path, dtype=torch.bfloat16) -> Path:
    """A random Wan 2.1 T2V denoiser (1.3B, or fixture size) saved as one .safetensors file in diffusers' key
    layout, as a user's diffusion_models/ file is loaded (models/files.load_denoiser reads it). Returns the path."""
    from diffusers import WanTransformer3DModel
    from safetensors.torch import save_file
    module = random_module(WanTransformer3DModel, WAN_TINY if tiny else WAN13, "cpu", dtype)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return Path(path)


def wan_family(pipe, device, dtype=torch.bfloat16):
    """Kinema's Wan family around a pipeline built here (its path: an empty temporary folder)."""
    from kinema.models.families.wan import WanFamily
    return WanFamily(Path(tempfile.mkdtemp(prefix="kinema-bench-")), torch.device(device), dtype, pipe)


def prompt_embeds(family: str, tiny: bool, device, dtype, seed: int) -> torch.Tensor:
    """Random text-encoder states of the model's shape: Wan (1, 512, 4096), SD 1.5 CLIP (1, 77, 768)."""
    shape = {("wan", False): (1, 512, 4096), ("wan", True): (1, 512, 32),
             ("animatediff", False): (1, 77, 768), ("animatediff", True): (1, 77, 32)}[(family, tiny)]
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(device, dtype)


def conditioning(family: str, embeds: torch.Tensor):
    from kinema.models.families.base import Conditioning
    return Conditioning(family, "random", embeds)


def animatediff_family(tiny: bool, device, dtype=torch.float16):
    """Kinema's AnimateDiff family: a random SD 1.5 UNet with motion module v2 (UNetMotionModel, 1.3 G parameters),
    a random SD VAE, a trailing-spacing DDIM scheduler (what few-step AnimateDiff LoRAs use)."""
    from diffusers import AnimateDiffPipeline, AutoencoderKL, DDIMScheduler, UNetMotionModel
    from kinema.models.families.animatediff import AnimateDiffFamily
    unet = random_module(UNetMotionModel, SD15_TINY if tiny else SD15_MOTION, device, dtype)
    vae_cfg = (dict(block_out_channels=(8, 8), down_block_types=["DownEncoderBlock2D"] * 2,
                    up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=2) if tiny else
               dict(block_out_channels=(128, 256, 512, 512), down_block_types=["DownEncoderBlock2D"] * 4,
                    up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, sample_size=512))
    vae = random_module(AutoencoderKL, dict(vae_cfg, latent_channels=4), device, dtype, seed=1)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False,
                              timestep_spacing="trailing", steps_offset=1)
    pipe = AnimateDiffPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, motion_adapter=None,
                               scheduler=scheduler)
    return AnimateDiffFamily(Path(tempfile.mkdtemp(prefix="kinema-bench-")), torch.device(device), dtype, pipe)


LTX2_CONFIG = Path(__file__).resolve().parents[1] / "models" / "files" / "configs" / "ltx2_19b.json"


def _ltx2_small_vae(device):
    """A small LTX-2 video VAE with LTX-2's 32x / 8x compression and 128 channels (it sizes the latents and holds
    their statistics; nothing is decoded in the benches)."""
    from diffusers import AutoencoderKLLTX2Video
    return AutoencoderKLLTX2Video(block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8),
                                  layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
                                  spatial_compression_ratio=32, temporal_compression_ratio=8).to(device).eval()


LTX2_PARTS = ("transformer", "connectors", "vae", "audio_vae", "vocoder", "scheduler", "text_encoder", "tokenizer")


def ltx2_pipeline(tiny: bool, device, dtype=torch.bfloat16, layers: int | None = None):
    """LTX2ConditionPipeline (what Kinema's family holds) without Gemma (prompts come as embeddings). tiny: the
    fixture-ltx2 model (models/fixtures.py). Else the transformer and connectors of
    models/files/configs/ltx2_19b.json (all 48 layers, or `layers`) with random weights built on `device` in
    `dtype`, LTX-2's audio VAE (default config, 53M), a small video VAE and vocoder (sizes only)."""
    import json
    from diffusers import (AutoencoderKLLTX2Audio, FlowMatchEulerDiscreteScheduler, LTX2ConditionPipeline,
                           LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    if tiny:
        from kinema.models.fixtures import build_ltx2
        pipe = build_ltx2()
        parts = {k: pipe.components[k] for k in LTX2_PARTS if k not in ("text_encoder", "tokenizer")}
        return LTX2ConditionPipeline(**parts, text_encoder=None, tokenizer=None).to(device)
    cfg = json.loads(LTX2_CONFIG.read_text())
    tcfg = dict(cfg["transformer"], num_layers=layers or cfg["transformer"]["num_layers"])
    transformer = random_module(LTX2VideoTransformer3DModel, tcfg, device, dtype)
    connectors = random_module(LTX2TextConnectors, cfg["connectors"], device, dtype, seed=2)
    sched = {k: v for k, v in cfg["scheduler"].items() if not k.startswith("_")}
    return LTX2ConditionPipeline(transformer=transformer, connectors=connectors, vae=_ltx2_small_vae(device),
                        audio_vae=AutoencoderKLLTX2Audio().to(device).eval(),
                        vocoder=LTX2Vocoder(hidden_channels=32).to(device).eval(),
                        scheduler=FlowMatchEulerDiscreteScheduler(**sched), text_encoder=None, tokenizer=None)


def ltx2_family(pipe, device, dtype=torch.bfloat16):
    """Kinema's LTX-2 video family around a pipeline built here (its path: an empty temporary folder)."""
    from kinema.models.families.ltx2_video import LTX2VideoFamily
    return LTX2VideoFamily(Path(tempfile.mkdtemp(prefix="kinema-bench-")), torch.device(device), dtype, pipe)


def ltx2_upsampler(tiny: bool, pipe, device, dtype=torch.bfloat16):
    """Kinema's LTX2LatentUpsampler (models/upscale.py) around an LTX2LatentUpsamplePipeline: the fixture's when
    tiny, else LTX2LatentUpsamplerModel's default (LTX-2's 128 channels, 2x spatial) with random weights, sharing
    `pipe`'s video VAE (the latent statistics)."""
    from diffusers import LTX2LatentUpsamplePipeline
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    from kinema.models.upscale import LTX2LatentUpsampler
    if tiny:
        from kinema.models.fixtures import build_ltx2_upsampler
        up = build_ltx2_upsampler().to(device)
    else:
        torch.manual_seed(3)
        with torch.device(device):                        # default init (its blur kernel is a fixed buffer)
            net = LTX2LatentUpsamplerModel().to(dtype).eval()
        up = LTX2LatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=net)
    return LTX2LatentUpsampler(Path(tempfile.mkdtemp(prefix="kinema-bench-")), torch.device(device), dtype, up)


def ltx2_prompt_embeds(pipe, tokens: int, device, dtype, seed: int) -> torch.Tensor:
    """Random stacked Gemma states (1, tokens, caption width x layers), what LTX2Pipeline's connectors take."""
    c = pipe.connectors.config
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, tokens, c.caption_channels * c.text_proj_in_factor, generator=g).to(device, dtype)
