"""LoRAs on any loaded model, without touching the loaded model: Load LoRA returns a view.

    view, report = load_lora(model, "models/loras/lightx2v.safetensors", strength=1.0)
    latents = sample(view, positive, None, settings)        # the LoRA acts here
    latents = sample(model, positive, None, settings)       # the same loaded weights, no LoRA

Design (docs/lora.md):
- `LoraModel` is a KINEMA_MODEL that shares everything with its base model (weights, text encoder, VAE, caches)
  and differs in one method: `predict`, the family's one denoiser call, runs with the LoRA stack patched in
  (models/lora_patch.py: forward hooks on linear/conv layers, swapped copies of small parameters) and restores the
  base exactly afterwards. Attribute reads and writes go to the base.
- Chaining Load LoRA nodes stacks LoRAs on the same base (never a view of a view); two Load LoRA nodes on one base
  in one graph, and the base used directly elsewhere, each see only their own patches. The executor caches the
  loader's output and each view: changing or removing a LoRA re-runs Load LoRA (it reads the small LoRA file
  again), never the model loader.
- Key matching is in models/lora_keys.py; a LoRA that matches nothing is an error naming the model it seems made
  for (`made_for`), a partial match a warning with the counts (in the node's text and the log).
"""
from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from . import lora_patch
from .checks import check_range, fail
from .lora_keys import Patch, bare_name, is_text_encoder, resolve, split_key

log = logging.getLogger("kinema.lora")

DISTILL_NAMES = ("lightx2v", "causvid", "distill", "lightning", "4step", "4_step", "accvid", "fusionx")
DISTILL_HINT = ("A few-step distillation LoRA (by its name): sample with cfg 1 (no negative pass) and its few steps "
                "(lightx2v on Wan: 4 steps, flow_euler, shift 5, as ComfyUI's Wan 2.2 template).")


@dataclass(frozen=True)
class LoadedLora:
    """One LoRA of a view's stack: its file name, its patches on the base model's denoisers and its strength."""
    name: str
    patches: tuple[Patch, ...]
    strength: float


@dataclass(frozen=True)
class LoraReport:
    """How a LoRA file matched the model: keys loaded of all keys, layers patched, and why the rest were not."""
    name: str
    strength: float
    loaded: int
    total: int
    layers: int
    skipped: dict[str, str]

    @property
    def partial(self) -> bool:
        return self.loaded < self.total

    def text(self) -> str:
        head = f"{self.name} at strength {self.strength:g}: "
        if not self.partial:
            text = head + f"all {self.total} keys loaded ({self.layers} layers patched)."
        else:
            by_reason: dict[str, list[str]] = {}
            for key, why in self.skipped.items():
                by_reason.setdefault(why, []).append(key)
            parts = [f"{len(keys)} {why}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                     for why, keys in by_reason.items()]
            text = (head + f"{self.loaded} of {self.total} keys loaded ({self.layers} layers patched); "
                    f"{self.total - self.loaded} not loaded: " + "; ".join(parts) + ".")
        if any(n in self.name.lower() for n in DISTILL_NAMES):
            text += " " + DISTILL_HINT
        return text


class LoraModel:
    """A KINEMA_MODEL: `base` with a stack of LoRAs active in its own denoiser calls (`predict`).

    Everything else is the base model's: attribute reads and writes go to it, so text encoding, the VAE, schedulers
    and previews are shared with every other user of the base. The base is never modified outside `predict`."""

    def __init__(self, base, loras: tuple[LoadedLora, ...]):
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "_loras", loras)
        object.__setattr__(self, "_swaps", {})       # this stack's patched copies of small parameters

    def __getattr__(self, name: str):
        base = self.__dict__.get("_base")
        if base is None:
            raise AttributeError(name)
        return getattr(base, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._base, name, value)

    def __repr__(self) -> str:
        stack = ", ".join(f"{lo.name}@{lo.strength:g}" for lo in self._loras)
        return f"LoraModel([{stack}], {self._base!r})"

    @property
    def base(self):
        """The loaded model this view patches (never itself a LoraModel)."""
        return self._base

    @property
    def loras(self) -> tuple[LoadedLora, ...]:
        return self._loras

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        """The base model's denoisers with this stack applied, for the duration of the block."""
        layers = tuple(lora_patch.Layer(lo.patches, lo.strength) for lo in self._loras)
        with lora_patch.applied(denoisers(self._base), layers, self._swaps):
            yield

    def predict(self, latents: torch.Tensor, t: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """As the family's predict (latents (B, C, f, h, w) -> model output), with the LoRAs applied."""
        with self.patched():
            return self._base.predict(latents, t, batch)


def denoisers(model) -> dict[str, nn.Module]:
    """{attribute: module} of the family's denoiser(s) a LoRA patches (family.denoisers: Wan 2.2 has two)."""
    return {a: m for a in model.denoisers if isinstance(m := getattr(model, a, None), nn.Module)}


def read_lora(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, safetensors metadata) of a LoRA file; .safetensors only (pickles are never loaded)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        fail("lora", "must be a .safetensors file (pickled .ckpt/.pt/.bin files are never loaded)", path.name,
             "Convert the LoRA to safetensors.")
    if not path.is_file():
        raise FileNotFoundError(f"`lora` file {str(path)!r} does not exist. Fix: put it in models/loras and pick "
                                f"it again.")
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        fail("lora", "must be a readable .safetensors LoRA file", path.name, f"It could not be read ({exc}).")


def _check_model(base) -> dict[str, nn.Module]:
    from .parallel import ParallelModel
    if isinstance(base, ParallelModel):
        fail("model", "is sharded over several GPUs (parallel), which Load LoRA cannot patch", "a parallel model",
             "Load the model with parallel none to use LoRAs.")
    mods = denoisers(base)
    if not mods:
        fail("model", "has no denoiser module a LoRA can patch", base.name, "Connect a video model loader.")
    return mods


def load_lora(model, path, strength: float = 1.0) -> tuple[Any, LoraReport]:
    """Stack a LoRA file on a model, leaving the model itself as it is.

    Args:
        model: a loaded family (KINEMA_MODEL) or a LoraModel (the new LoRA joins its stack).
        path: a .safetensors LoRA (kohya/ComfyUI, diffusers/PEFT, lightx2v/CausVid deltas, AnimateDiff motion).
        strength: multiplies the LoRA's change (negative inverts it; 0 returns `model` unchanged).
    Returns:
        (the view with the LoRA, the report). A LoRA matching no layer is an error naming the model it seems made
        for; a partial match is logged as a warning.
    """
    check_range("strength", strength, -100.0, 100.0)
    base, stack = (model.base, model.loras) if isinstance(model, LoraModel) else (model, ())
    mods = _check_model(base)
    tensors, metadata = read_lora(path)
    device = next(iter(mods.values())).parameters().__next__().device
    # LoRA tensors in the model's dtype on its device (alphas stay as stored: a scale, not a weight)
    on_device = {k: v.to(device, base.dtype) if v.is_floating_point() and v.ndim else v for k, v in tensors.items()}
    resolved = resolve(on_device, mods, metadata)
    name = Path(path).name
    report = LoraReport(name, strength, len(resolved.used), len(resolved.keys),
                        len({(p.denoiser, p.module) for p in resolved.patches}), dict(resolved.skipped))
    if not resolved.used:
        guess = made_for({k: tuple(v.shape) for k, v in tensors.items()})
        fail("lora", f"matches none of the layers of the loaded model ({base.title}, {base.path.name}); it seems "
             f"made for {guess}", f"{name}: 0 of {len(tensors)} keys",
             "Pick a LoRA made for this model, or load the model it was made for.")
    (log.warning if report.partial else log.info)("Load LoRA: %s", report.text())
    if strength == 0:
        return model, report
    return LoraModel(base, stack + (LoadedLora(name, tuple(resolved.patches), strength),)), report


# ---- which model a LoRA is made for ---------------------------------------------------------------------------
_WAN_SIZES = {1536: "Wan 2.1 1.3B", 5120: "Wan 14B (2.1 T2V/I2V, or 2.2 A14B)", 3072: "Wan 2.2 TI2V 5B"}
_SD_SIZES = {768: "Stable Diffusion 1.x", 1024: "Stable Diffusion 2.x", 2048: "SDXL"}


def _names(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{file key: (layer name without prefix, shape)} for the keys that are LoRA parts."""
    out = {}
    for k, shape in shapes.items():
        split = split_key(k)
        if split is not None:
            out[k] = (bare_name(split[0]), split[1], shape)
    return out


def made_for(shapes: dict[str, tuple[int, ...]]) -> str:
    """A guess, from a LoRA's key names and shapes, at the model it was trained for (for error messages)."""
    if shapes and all(is_text_encoder(k) for k in shapes):
        return "a text encoder only (lora_te / text_encoder keys)"
    names = _names(shapes)
    bare = [n for n, _, _ in names.values()]
    if any("motion_modules" in n for n in bare):
        v2 = " v2/v3 (with a mid-block motion module)" if any("mid_block" in n for n in bare) else ""
        return f"an AnimateDiff motion module{v2}"
    wan = [(n, part, s) for n, part, s in names.values() if re.match(r"^(vace_)?blocks[._]\d+[._]", n)]
    if wan:
        dims = [s[1] if part == "down" else s[0] for n, part, s in wan
                if part in ("down", "diff") and re.search(r"(self_attn[._]q|attn1[._]to_q)$", n)]
        dims += [s[0] for n, part, s in wan if part == "diff" and re.search(r"norm_q$", n)]
        blocks = 1 + max(int(re.match(r"^(?:vace_)?blocks[._](\d+)", n)[1]) for n, _, _ in wan)
        kind = " image-to-video" if any(re.search(r"k_img|add_k_proj", n) for n in bare) else ""
        dim = dims[0] if dims else None
        size = f"hidden size {dim}, " if dim else ""
        return f"{_WAN_SIZES.get(dim, 'a Wan-style DiT')}{kind} ({size}{blocks} blocks)"
    if any(re.search(r"(down_blocks|input_blocks|up_blocks|output_blocks|mid_block)", n) for n in bare):
        ctx = [s[1] for n, part, s in names.values() if part == "down" and re.search(r"attn2[._]to_k$", n)]
        sdxl = any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in shapes)
        what = "SDXL" if sdxl else _SD_SIZES.get(ctx[0] if ctx else None, "a Stable Diffusion UNet")
        return f"{what} (UNet{f', cross-attention width {ctx[0]}' if ctx else ''})"
    if any(re.search(r"(double_blocks|single_blocks|single_transformer_blocks)", n) for n in bare):
        return "Flux or another double/single-block DiT (HunyuanVideo)"
    if any(re.match(r"^transformer_blocks[._]\d+", n) for n in bare):
        return "another DiT with transformer_blocks (LTX-Video, CogVideoX, Mochi, ...)"
    sample = ", ".join(list(shapes)[:2])
    return f"an unknown model (keys like {sample})"
