"""Kinema-Tiny's model folder (diffusers-like layout) and a batched sampler for training-time evaluation.

Folder layout (every weight file is safetensors, every config JSON; nothing is unpickled):
    model_index.json                  {"_class_name": "KinemaTinyPipeline", ...}
    scheduler/scheduler_config.json   FlowMatchEulerDiscreteScheduler
    text_encoder/config.json + model.safetensors
    transformer/config.json + diffusion_pytorch_model.safetensors
    vae/config.json + diffusion_pytorch_model.safetensors          (the temporal autoencoder)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from ..checks import fail
from .tae import TAEConfig, TemporalAutoencoder
from .text import TextEncoderConfig, TinyTextEncoder, vocabulary
from .transformer import TinyVideoTransformer, TransformerConfig

PIPELINE_CLASS = "KinemaTinyPipeline"
WEIGHTS = {"text_encoder": "model.safetensors", "transformer": "diffusion_pytorch_model.safetensors",
           "vae": "diffusion_pytorch_model.safetensors"}
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "kinema-tiny-video"


@dataclass
class TinyModels:
    text_encoder: TinyTextEncoder
    transformer: TinyVideoTransformer
    vae: TemporalAutoencoder
    scheduler_config: dict
    index: dict

    def eval(self) -> "TinyModels":
        for m in (self.text_encoder, self.transformer, self.vae):
            m.eval().requires_grad_(False)
        return self


def _config(cls, data: dict):
    names = {f.name for f in fields(cls)}
    kw = {k: (tuple(v) if isinstance(v, list) and k == "channels" else v) for k, v in data.items() if k in names}
    return cls(**kw)


def save_folder(path: Path, text_encoder: TinyTextEncoder, transformer: TinyVideoTransformer,
                vae: TemporalAutoencoder, scheduler_config: dict, extra: dict | None = None,
                dtype: torch.dtype = torch.float16) -> None:
    """Write the model folder; weights stored as `dtype` (fp16 halves the size; loading casts back)."""
    from .folder import write_index, write_part, write_scheduler
    parts = {"text_encoder": (text_encoder, text_encoder.config.to_dict() | {"vocabulary": list(vocabulary())}),
             "transformer": (transformer, transformer.config.to_dict()),
             "vae": (vae, vae.config.to_dict())}
    for name, (module, cfg) in parts.items():
        write_part(path, name, module, cfg, WEIGHTS[name], dtype)
    write_scheduler(path, scheduler_config)
    write_index(path, PIPELINE_CLASS, {"scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                                       "text_encoder": ["kinema", "TinyTextEncoder"],
                                       "transformer": ["kinema", "TinyVideoTransformer"],
                                       "vae": ["kinema", "TemporalAutoencoder"]}, extra)


def build_checked(make, weights: Path, config: Path) -> torch.nn.Module:
    """`make()` (a module built from `config`), built only after checking on the meta device (no memory) that the
    config describes no more weights than `weights` (a .safetensors file) holds: a config.json claiming absurd
    sizes (dim 65536, depth 64: 16 GB) is refused with the numbers instead of allocated."""
    from safetensors import safe_open
    with torch.device("meta"):
        wanted = sum(t.numel() for t in make().state_dict().values())
    with safe_open(str(weights), framework="pt") as f:
        stored = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    if wanted > stored:
        fail("model", f"config {config} must describe the weights beside it: it asks for {wanted:,} numbers "
             f"({wanted * 4 / 2**30:.2f} GB as float32) but {weights.name} holds {stored:,}", config.name,
             "Restore the folder's config.json (re-copy the model folder); Kinema does not build a model its "
             "weights cannot fill.")
    return make()


def load_folder(path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TinyModels:
    """Read a Kinema-Tiny folder: configs from JSON, weights with safetensors (never torch.load)."""
    from safetensors.torch import load_file
    path = Path(path)
    index = json.loads((path / "model_index.json").read_text())
    missing = [str(path / n / WEIGHTS[n]) for n in WEIGHTS if not (path / n / WEIGHTS[n]).is_file()]
    if missing:
        raise FileNotFoundError(f"Kinema-Tiny folder {str(path)!r} is incomplete: missing {', '.join(missing)}. "
                                f"Fix: re-copy the folder, or retrain it from a source checkout: "
                                f"`python -m training.tiny.train`.")
    builders = {"text_encoder": (TextEncoderConfig, TinyTextEncoder), "transformer": (TransformerConfig,
                TinyVideoTransformer), "vae": (TAEConfig, TemporalAutoencoder)}
    built = {}
    for name, (cfg_cls, mod_cls) in builders.items():
        cfg = _config(cfg_cls, json.loads((path / name / "config.json").read_text()))
        module = build_checked(lambda: mod_cls(cfg), path / name / WEIGHTS[name], path / name / "config.json")
        state = load_file(str(path / name / WEIGHTS[name]))
        module.load_state_dict({k: v.float() for k, v in state.items()})
        # the TAE stays fp32 (it is small, and half precision bands colours); the rest follows dtype
        module.to(device, torch.float32 if name == "vae" else dtype)
        built[name] = module
    sched = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    return TinyModels(built["text_encoder"], built["transformer"], built["vae"], sched, index).eval()


def first_frame_condition(vae: TemporalAutoencoder, image: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    """The transformer's extra input channels: first-frame latent + mask at latent frame 0, zeros elsewhere.

    image: (B, 3, H, W) 0..1 or None (text-to-video); shape: (B, C, f, h, w) of the latents.
    Returns (B, C+1, f, h, w).
    """
    b, c, f, h, w = shape
    cond = torch.zeros(b, c + 1, f, h, w, device=vae.dec_in[0].weight.device)
    if image is not None:
        z0 = vae.encode_normalised(image.unsqueeze(2).to(vae.dec_in[0].weight.dtype))   # (B, C, 1, h, w)
        cond[:, :c, :1] = z0
        cond[:, c] = 0
        cond[:, c, 0] = 1.0
    return cond


@torch.no_grad()
def generate(models: TinyModels, prompts: list[str], seeds: list[int], images: torch.Tensor | None = None,
             num_frames: int = 9, size: int = 32, steps: int = 12, guidance: float = 4.0, shift: float | None = None,
             batch: int = 24, negative: str = "") -> torch.Tensor:
    """Many clips at once (for the checker): same noise, scheduler and guidance as the sampling loop.

    images: optional (N, 3, H, W) 0..1 first frames (image-to-video). Returns videos (N, F, H, W, 3) 0..1.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.utils.torch_utils import randn_tensor
    vae, te, tr = models.vae, models.text_encoder, models.transformer
    dev = next(tr.parameters()).device
    dt = next(tr.parameters()).dtype
    c = vae.config.latent_channels
    f = (num_frames - 1) // vae.config.temporal_ratio + 1
    hw = size // vae.config.spatial_ratio
    out = []
    for i in range(0, len(prompts), batch):
        ps, ss = prompts[i:i + batch], seeds[i:i + batch]
        n = len(ps)
        # the same noise the sampling loop draws: one CPU generator per clip, seeded by the clip's seed
        noise = torch.cat([randn_tensor((1, c, f, hw, hw), generator=torch.Generator("cpu").manual_seed(s),
                                        device=torch.device("cpu"), dtype=torch.float32) for s in ss]).to(dev)
        text = te.encode([negative] * n + list(ps), device=dev).to(dt)                 # (2n, L, D)
        img = None if images is None else images[i:i + batch].to(dev)
        cond = first_frame_condition(vae, img, tuple(noise.shape)).to(dt)
        cond = torch.cat([cond, cond])
        cfg = dict(models.scheduler_config)
        if shift is not None:
            cfg["shift"] = shift
        sched = FlowMatchEulerDiscreteScheduler.from_config(cfg)
        sched.set_timesteps(steps, device=dev)
        x = noise
        for t in sched.timesteps:
            v = tr(torch.cat([x, x]).to(dt), t.expand(2 * n), text, cond).float()
            uncond, condv = v.chunk(2)
            v = uncond + guidance * (condv - uncond)
            x = sched.step(v, t, x, return_dict=False)[0]
        if img is not None:
            x[:, :, :1] = cond[:n, :c, :1].float()                                    # keep the clean first frame
        video = vae.decode_normalised(x.float())                                       # (n, 3, F, H, W)
        out.append(video.permute(0, 2, 3, 4, 1).cpu())                                 # (n, F, H, W, 3)
    return torch.cat(out)
