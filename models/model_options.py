"""Memory and speed modes of a loaded model (the Model Options node; applied by the loaders right after loading, so
changing an option reloads the model and the loaded model is never changed behind another node's back).

- weights: fp8 storage of the denoiser with compute in the model's dtype (diffusers' layerwise casting: each
  layer's weights are stored fp8 and cast up for its forward; norms and embeddings stay in the model's dtype).
- offload_blocks: block offload (diffusers' group offloading): N blocks at a time on the GPU, the rest in pinned
  CPU memory, the next group prefetched on a CUDA stream. CUDA only; elsewhere a no-op with a warning.
- attention: the attention backend through diffusers' attention dispatcher (native SDPA, flash-attn, SageAttention,
  xformers), only when its package is installed; never a dependency.
- compile: torch.compile of the denoiser's repeated blocks (diffusers' compile_repeated_blocks, or each block of
  its block list), so the blocks compile once and are reused.
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from .checks import check_choice, check_range, fail


class WeightStorage(str, Enum):
    DEFAULT = "default"           # as loaded (the loader's dtype)
    FP8_E4M3FN = "fp8_e4m3fn"     # fp8 storage, compute in the model's dtype (Wan/ComfyUI's usual fp8)
    FP8_E5M2 = "fp8_e5m2"


class AttentionChoice(str, Enum):
    DEFAULT = "default"           # what the model uses out of the box
    NATIVE = "native"             # torch's scaled_dot_product_attention
    FLASH = "flash"               # flash-attn 2 (pip install flash-attn)
    SAGE = "sage"                 # SageAttention (pip install sageattention)
    XFORMERS = "xformers"         # xformers (pip install xformers)


_STORAGE = {WeightStorage.FP8_E4M3FN: torch.float8_e4m3fn, WeightStorage.FP8_E5M2: torch.float8_e5m2}
PACKAGES = {AttentionChoice.FLASH: "flash_attn", AttentionChoice.SAGE: "sageattention",
            AttentionChoice.XFORMERS: "xformers"}


@dataclass(frozen=True)
class ModelOptions:
    """What the Model Options node asks for (KINEMA_MODEL_OPTIONS); the defaults change nothing."""
    weights: str = WeightStorage.DEFAULT.value
    offload_blocks: int = 0              # blocks on the GPU at a time; 0 = no offload
    attention: str = AttentionChoice.DEFAULT.value
    compile: bool = False
    compile_backend: str = "inductor"    # torch.compile backend (tests use "eager": no C compiler needed)

    def check(self) -> None:
        check_choice("weights", self.weights, [c.value for c in WeightStorage])
        check_choice("attention", self.attention, [c.value for c in AttentionChoice])
        check_range("offload_blocks", self.offload_blocks, 0, 10_000)


def available_attention() -> list[str]:
    """Attention backends usable here: native always, the others when their package is installed."""
    return [AttentionChoice.NATIVE.value] + [c.value for c, pkg in PACKAGES.items()
                                             if importlib.util.find_spec(pkg) is not None]


def _denoisers(model) -> dict[str, nn.Module]:
    from .lora import denoisers
    found = denoisers(getattr(model, "base", model))
    if not found:
        fail("model", "has no denoiser module the options can act on", type(model).__name__,
             "Connect a model from Load Video Model.")
    return found


def apply_options(model, options: ModelOptions | None) -> list[str]:
    """Apply options to a freshly loaded model's denoiser(s), in place. Returns notes (what was done or skipped).
    Raises ValueError naming the option when the model or machine cannot honour it."""
    if options is None:
        return []
    options.check()
    if getattr(model, "kinema_options", None) is not None:
        fail("options", "were already applied to this model", model.kinema_options, "Load the model again.")
    notes: list[str] = []
    modules = _denoisers(model)
    if options.weights != WeightStorage.DEFAULT.value:
        notes.append(_fp8(model, modules, _STORAGE[WeightStorage(options.weights)]))
    if options.attention != AttentionChoice.DEFAULT.value:
        notes.append(_attention(modules, options.attention))
    if options.offload_blocks:
        notes.append(_offload(model, modules, options.offload_blocks))
    if options.compile:
        notes.append(_compile(modules, options.compile_backend))
    model.kinema_options = options
    return notes


def _fp8(model, modules: dict[str, nn.Module], storage: torch.dtype) -> str:
    from diffusers.hooks import apply_layerwise_casting
    compute = model.dtype
    if compute not in (torch.bfloat16, torch.float16, torch.float32):
        fail("weights", "fp8 storage needs a bf16, fp16 or fp32 model", str(compute), "Set the loader's dtype.")
    for module in modules.values():
        if any(type(m).__name__ == "StoredLinear" for m in module.modules()):
            fail("weights", "is set by the file loader's weight_dtype for single-file models", "fp8",
                 "Set Load Video Model (Files)' weight_dtype to fp8 and leave Model Options' weights at default.")
        skip = getattr(module, "_skip_layerwise_casting_patterns", None) or (
            "pos_embed", "patch_embed", "norm", "embed", "^proj_in$", "^proj_out$")
        apply_layerwise_casting(module, storage_dtype=storage, compute_dtype=compute, skip_modules_pattern=skip,
                                non_blocking=True)
    return f"weights: {str(storage).removeprefix('torch.')} storage, {str(compute).removeprefix('torch.')} compute"


def _attention(modules: dict[str, nn.Module], backend: str) -> str:
    if backend not in available_attention():
        fail("attention", f"needs the {PACKAGES[AttentionChoice(backend)]} package, which is not installed", backend,
             f"pip install {PACKAGES[AttentionChoice(backend)].replace('_', '-')}, or pick one of "
             f"{available_attention()}.")
    for name, module in modules.items():
        if not hasattr(module, "set_attention_backend"):
            if backend == AttentionChoice.NATIVE.value:
                continue                                  # non-diffusers modules (Kinema-Tiny) already use SDPA
            fail("attention", f"cannot be chosen for this model's {name} (it does not use diffusers' attention "
                              f"dispatcher)", backend, "Use default or native.")
        module.set_attention_backend(backend)
    return f"attention: {backend}"


def _offload(model, modules: dict[str, nn.Module], blocks: int) -> str:
    if model.device.type != "cuda":
        warnings.warn(f"offload_blocks {blocks} does nothing on {model.device} (block offload streams weights to a "
                      f"GPU); the model runs without it", stacklevel=3)
        return f"offload: none on {model.device} (CUDA only)"
    from diffusers.hooks import apply_group_offloading
    for module in modules.values():
        apply_group_offloading(module, onload_device=model.device, offload_device=torch.device("cpu"),
                               offload_type="block_level", num_blocks_per_group=blocks, use_stream=True,
                               record_stream=True, non_blocking=True)
    return f"offload: {blocks} block(s) at a time on {model.device}, the rest streamed from pinned CPU memory"


def _compile(modules: dict[str, nn.Module], backend: str) -> str:
    count = 0
    for module in modules.values():
        if getattr(module, "_repeated_blocks", None) and hasattr(module, "compile_repeated_blocks"):
            module.compile_repeated_blocks(backend=backend)
            count += sum(type(m).__name__ in module._repeated_blocks for m in module.modules())
            continue
        lists = [m for m in module.modules() if isinstance(m, nn.ModuleList)]
        if not lists:
            fail("compile", "finds no repeated blocks in this model", type(module).__name__, "Turn compile off.")
        for block in max(lists, key=len):
            block.compile(backend=backend)
            count += 1
    return f"compile: {count} repeated blocks ({backend}); the first step is slower while they compile"


__all__ = ["AttentionChoice", "ModelOptions", "WeightStorage", "apply_options", "available_attention"]
