"""Memory estimate before sampling: from the model (weights as stored, what sits on the device), the precision, the
clip's size and frames, and guidance. `estimate()` is a pure function of a `Profile` and the run's sizes;
`profile()` reads a loaded model; `check()` compares with the device's free memory and refuses, naming the settings
to change, instead of running out of memory after hours of sampling.

The activation model is deliberately simple and errs high (so a refusal is never a false alarm by much, and a pass
is never far too optimistic):
- transformers (Wan, Kinema-Tiny, LTX-2): one block's working set, batch x tokens x (6 x width + ffn width) values
  in the compute dtype (input, norm output, q, k, v, attention output, the FFN's hidden layer); attention runs
  in memory-efficient kernels (SDPA / flash / sage), so no tokens^2 term;
- UNets (AnimateDiff): the skip connections kept for the up path plus one resnet's working set at full
  resolution: batch x frames x h x w x width x 16 values;
- the loop's own float32 tensors (latents, noise, prediction, the doubled model input): 8 latent-sized tensors;
- + 10% and, on CUDA, the allocator's and kernels' reserve (0.5 GB).
The VAE decode is not part of it: models/vae_tiling.py decodes in chunks and tiles within its own budget.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from .checks import fail

GB = 1024 ** 3
CUDA_RESERVE = 0.5 * GB


@dataclass(frozen=True)
class Profile:
    """What the estimate needs to know about a model. Sizes in bytes; widths in channels.

    kind: "transformer" or "unet". weights: the denoiser(s) as stored (fp8 = 1 byte a weight). resident: what must
    stay on the device during sampling besides the denoiser (text encoder, VAE, image encoder there now).
    width: token width (transformer hidden size; UNet's first block channels); ffn: the FFN's hidden width.
    patch: latent cells per token (t, h, w). blocks: repeated blocks; offloaded: blocks streamed from CPU memory
    (their weights are not resident; `onload` blocks at a time are). compute_bytes: bytes per activation value."""
    kind: str
    weights: int
    resident: int
    width: int
    ffn: int
    patch: tuple[int, int, int] = (1, 1, 1)
    blocks: int = 1
    offloaded: bool = False
    onload: int = 1
    compute_bytes: int = 2
    latent_channels: int = 16

    def with_storage(self, bytes_per_weight: float, current: float) -> "Profile":
        """The same model with its weights stored at another width (e.g. fp8 = 1 from bf16 = 2)."""
        return replace(self, weights=int(self.weights * bytes_per_weight / current))


@dataclass(frozen=True)
class Estimate:
    """Bytes: weights on the device, activations and the loop's tensors for this run, and their sum."""
    weights: int
    run: int
    device: str = "cpu"

    @property
    def total(self) -> int:
        return self.weights + self.run

    def text(self, free: int | None = None) -> str:
        out = f"needs ~{size(self.total)} on {self.device} (weights {size(self.weights)}, this run {size(self.run)})"
        return out if free is None else f"{out}, {size(free)} free"


def size(n: float) -> str:
    """Bytes as '12.3 GB' (or MB below 1 GB)."""
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / 1024 ** 2:.0f} MB"


def estimate(p: Profile, frames: int, height: int, width: int, guided: bool, device: str = "cpu") -> Estimate:
    """Memory for sampling a clip of latent size (frames, height, width) (latent cells) with profile p; guided:
    classifier-free guidance batches two. Pure function."""
    batch = 2 if guided else 1
    cells = frames * height * width
    if p.kind == "unet":
        acts = batch * cells * p.width * 16 * p.compute_bytes
    else:
        tokens = -(-frames // p.patch[0]) * -(-height // p.patch[1]) * -(-width // p.patch[2])
        acts = batch * tokens * (6 * p.width + p.ffn) * p.compute_bytes
    loop = 8 * batch * p.latent_channels * cells * 4
    weights = p.weights
    if p.offloaded and p.blocks > 0:              # non-block weights stay; `onload` blocks (+ the prefetched next)
        per_block = p.weights / p.blocks * 0.95     # ~95% of a DiT's weights are in its blocks
        weights = int(p.weights - per_block * max(0, p.blocks - 2 * p.onload))
    run = int((acts + loop) * 1.1 + (CUDA_RESERVE if device.startswith("cuda") else 0))
    return Estimate(weights + p.resident, run, device)


# ---- reading a loaded model ----------------------------------------------------------------------------------
def _cfg(module: nn.Module, *names, default=None):
    config = getattr(module, "config", None)
    for name in names:
        value = getattr(config, name, None) if config is not None else None
        if value is None and isinstance(config, dict):
            value = config.get(name)
        if value is not None:
            return value
    return default


def _bytes(module: nn.Module, device: torch.device | None = None) -> int:
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors if device is None or t.device.type == device.type)


def _blocks(module: nn.Module) -> int:
    lists = [m for m in module.modules() if isinstance(m, nn.ModuleList)]
    return max((len(m) for m in lists), default=1)


def profile(model) -> Profile:
    """The Profile of a loaded family (its `denoisers` and the other modules it holds on its device)."""
    from .lora import denoisers
    base = getattr(model, "base", model)
    dens = list(denoisers(base).values())
    main = dens[0]
    unet = _cfg(main, "block_out_channels") is not None
    heads, head_dim = _cfg(main, "num_attention_heads", "heads"), _cfg(main, "attention_head_dim")
    width = (_cfg(main, "block_out_channels")[0] if unet else
             heads * head_dim if heads and head_dim else _cfg(main, "dim", "inner_dim", "hidden_size", default=1024))
    ffn = _cfg(main, "ffn_dim", default=None) or width * int(_cfg(main, "mlp_ratio", default=4))
    patch = _cfg(main, "patch_size", default=1)
    patch = tuple(patch) if isinstance(patch, (tuple, list)) else (1, patch, patch)
    seen = {id(m) for m in dens}
    resident = 0
    pipe = getattr(base, "pipe", None)
    parts = list(vars(base).values()) + list(getattr(pipe, "components", {}).values())
    for value in parts:                       # the family's modules and its pipeline's (text encoder, VAEs)
        if isinstance(value, nn.Module) and id(value) not in seen:
            seen.add(id(value))
            resident += _bytes(value, model.device)
    opts = getattr(base, "kinema_options", None)
    offloaded = opts is not None and opts.offload_blocks > 0 and model.device.type == "cuda"
    compute = next((p for p in main.parameters() if p.is_floating_point()), torch.empty(0)).dtype
    compute_bytes = torch.empty(0, dtype=getattr(opts, "compute_dtype", None) or compute).element_size()
    return Profile("unet" if unet else "transformer", sum(_bytes(m) for m in dens), resident, int(width), int(ffn),
                   patch, _blocks(main), offloaded, getattr(opts, "offload_blocks", 1) or 1, compute_bytes,
                   int(getattr(base, "latent_channels", 16)))


def free_bytes(device: torch.device) -> int:
    """Free memory on the device: CUDA's free memory, else the system's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil
    return psutil.virtual_memory().available


def check(model, settings, guided: bool, free: int | None = None) -> str:
    """Estimate a run of `settings` (sampling.SamplerSettings) on a loaded model and compare what the run still
    has to allocate (the weights are already in place) with the device's free memory (or `free`, bytes).
    Returns the estimate's text; raises ValueError naming the settings to change when it cannot fit."""
    shape = model.latent_shape(settings)                         # (C, f, h, w) video; (C, T) audio
    if len(shape) != 4:
        return "memory estimate: not modelled for this family"
    p = profile(model)
    est = estimate(p, shape[1], shape[2], shape[3], guided, str(model.device))
    free = free_bytes(model.device) if free is None else free
    if est.run <= free:
        return "memory: " + est.text(free)
    fixes = ["lower width/height or length", "use Context Options (windows) for long clips"]
    if guided:
        fixes.append("cfg 1 (one model call a step, half the activations)")
    if p.compute_bytes > 2:
        fixes.append("dtype bf16/fp16")
    fail("length", f"with {settings.width}x{settings.height} and {'cfg' if guided else 'no cfg'} does not fit: "
         f"{est.text(free)}", settings.num_frames,
         "L" + "; ".join(fixes)[1:] + ". Model Options' fp8 weights and block offload free weight memory.")


def check_sampling(model, settings, context=None, free: int | None = None) -> str:
    """check() for one Temporal Sampler run: the frames one denoiser call sees are the whole clip, or one window when
    `context` fuses predictions per window (attention-level fusion still runs the whole clip in one call)."""
    from .windows import FuseMode
    whole = context is None or (model.capabilities.attention_windows and context.mode != FuseMode.PREDICTIONS)
    window = settings if whole else replace(settings, num_frames=min(settings.num_frames, context.context_length))
    return check(model, window, guided=settings.guidance_scale > 1.0, free=free)
