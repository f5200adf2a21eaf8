"""Memory and speed modes of a loaded model (the Model Options node; applied by the loaders right after loading, so
changing an option reloads the model and the loaded model is never changed behind another node's back).

- weights: fp8 storage of the denoiser with compute in the model's dtype: each Linear layer's weight quantised to
  fp8 with a per-tensor scale (files.storage.StoredLinear, as the files loader's weight_dtype stores them), cast up
  for its forward into a temporary; other layers (convolutions) by diffusers' layerwise casting; norms and
  embeddings stay in the model's dtype.
- offload_blocks: block offload (diffusers' group offloading): N blocks at a time on the GPU, the rest in pinned
  CPU memory, the next group prefetched on a CUDA stream; a diffusers folder's text encoder lives in CPU memory and
  is on the GPU only while it runs (a files-loaded one offloads by itself). CUDA only; elsewhere a no-op with a
  warning.
- attention: the attention backend through diffusers' attention dispatcher (native SDPA, flash-attn, SageAttention,
  xformers), only when its package is installed; never a dependency.
- compile: torch.compile of the denoiser's repeated blocks (diffusers' compile_repeated_blocks, or each block of
  its block list), so the blocks compile once and are reused.
- text_encoder_dtype / vae_dtype: the precision of the text encoder and of the VAE(s), chosen apart from the
  denoiser's (auto: as the loader left them, e.g. Wan's VAE fp32 and its text encoder in the loader's dtype).
  "vae" covers every decoder of the family: LTX-2's video and audio VAEs and its vocoder. A family without such a
  component (or whose prompts come as embeddings) refuses the option by name.
"""
from __future__ import annotations

import gc
import importlib.util
import re
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


class ComponentDtype(str, Enum):
    AUTO = "auto"                 # as the loader left it (today's behaviour)
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


COMPONENT_DTYPES = {ComponentDtype.FP32: torch.float32, ComponentDtype.BF16: torch.bfloat16,
                    ComponentDtype.FP16: torch.float16}


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
    text_encoder_dtype: str = ComponentDtype.AUTO.value
    vae_dtype: str = ComponentDtype.AUTO.value

    def check(self) -> None:
        check_choice("weights", self.weights, [c.value for c in WeightStorage])
        check_choice("text_encoder_dtype", self.text_encoder_dtype, [c.value for c in ComponentDtype])
        check_choice("vae_dtype", self.vae_dtype, [c.value for c in ComponentDtype])
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
    for arg in ("text_encoder_dtype", "vae_dtype"):
        if getattr(options, arg) != ComponentDtype.AUTO.value:
            notes.append(_component_dtype(model, arg, COMPONENT_DTYPES[ComponentDtype(getattr(options, arg))]))
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


# modules never stored small: diffusers' own defaults, plus each model's _skip_layerwise_casting_patterns
_KEEP = ("pos_embed", "patch_embed", "norm", "embed", "^proj_in$", "^proj_out$")


def _fp8(model, modules: dict[str, nn.Module], storage: torch.dtype) -> str:
    """fp8 storage of the denoiser(s), one tensor at a time (no second full copy of the weights ever lives):
    every Linear layer's weight quantised per tensor to fp8 with a float32 scale and computed as
    files.storage.StoredLinear (cast up to the input's dtype for each call, into one temporary that the next layer
    of the same shape reuses); other layers diffusers supports (convolutions: AnimateDiff's UNet) by diffusers'
    layerwise casting. Then the C heap the 16-bit weights left is given back to the system (heap.trim_heap), and
    on the CPU big allocations are memory-mapped from then on (heap.map_big_allocations), so each layer's upcast
    goes back to the system when freed. Measured (bench/wan_speed.py): diffusers' layerwise casting on the Linear
    layers too re-allocated every layer's weights twice a call, and the heap grew by 0.7 GB while sampling Wan
    1.3B."""
    from diffusers.hooks import apply_layerwise_casting
    from .heap import map_big_allocations, trim_heap
    compute = model.dtype
    if compute not in (torch.bfloat16, torch.float16, torch.float32):
        fail("weights", "fp8 storage needs a bf16, fp16 or fp32 model", str(compute), "Set the loader's dtype.")
    stored = 0
    for module in modules.values():
        if any(type(m).__name__ == "StoredLinear" and m.weight.element_size() == 1 for m in module.modules()):
            fail("weights", "is set by the file loader's weight_dtype for single-file models", "fp8",
                 "Set Load Video Model (Files)' weight_dtype to fp8 and leave Model Options' weights at default.")
        skip = tuple(getattr(module, "_skip_layerwise_casting_patterns", None) or ()) + _KEEP
        stored += _store_linears(module, storage, skip)
        apply_layerwise_casting(module, storage_dtype=storage, compute_dtype=compute, skip_modules_pattern=skip,
                                skip_modules_classes=(nn.Linear,), non_blocking=True)
    gc.collect()
    trim_heap()
    if model.device.type == "cpu":                    # the upcasts live in CPU memory: give each back when freed
        map_big_allocations()
    return (f"weights: {str(storage).removeprefix('torch.')} storage, {str(compute).removeprefix('torch.')} compute"
            f" ({stored} linear layers)")


def _store_linears(module: nn.Module, storage: torch.dtype, skip: tuple[str, ...]) -> int:
    """Every nn.Linear of `module` whose name matches no `skip` pattern (re.search, as diffusers matches them)
    becomes a StoredLinear with an fp8 weight and its `scale_weight`, in place, one layer at a time. Returns how
    many."""
    from .files.storage import StoredLinear, quantize_fp8
    count = 0
    for name, layer in module.named_modules():
        if type(layer) is not nn.Linear or any(re.search(p, name) for p in skip):
            continue
        weight, scale = quantize_fp8(layer.weight.detach(), storage)
        layer.weight = nn.Parameter(weight, requires_grad=False)          # the 16-bit weight is freed here
        layer.register_buffer("scale_weight", scale.to(weight.device), persistent=False)
        layer.__class__ = StoredLinear
        count += 1
    return count


_COMPONENTS = {"text_encoder_dtype": ("text_encoder",), "vae_dtype": ("vae", "audio_vae", "vocoder")}


def components(model, arg: str) -> dict[str, nn.Module]:
    """{name: module} of a loaded family's text encoder(s) (arg "text_encoder_dtype") or VAE(s) ("vae_dtype"):
    the family's own attributes and its diffusers pipeline's, each module once."""
    base = getattr(model, "base", model)
    found: dict[str, nn.Module] = {}
    for owner in (base, getattr(base, "pipe", None)):
        for name in _COMPONENTS[arg]:
            module = getattr(owner, name, None) if owner is not None else None
            if isinstance(module, nn.Module) and all(module is not m for m in found.values()):
                found[name] = module
    return found


def _component_dtype(model, arg: str, dtype: torch.dtype) -> str:
    """Cast the family's text encoder(s) or VAE(s) to dtype. A files-loaded text encoder (loaded per prompt) is
    loaded in dtype from then on."""
    base = getattr(model, "base", model)
    found = components(model, arg)
    text_file = getattr(base, "text_encoder_file", None) if arg == "text_encoder_dtype" else None
    if not found and text_file is None:
        what = "text encoder (its prompts come as embeddings)" if arg == "text_encoder_dtype" else "VAE"
        fail(arg, f"cannot be set: this model ({type(base).__name__}) has no {what}", arg.removesuffix("_dtype"),
             f"Leave {arg} at auto for this model.")
    for module in found.values():
        module.to(dtype)
    if text_file is not None:
        text_file.dtype = dtype
        if text_file.encoder is not None:
            text_file.encoder.model.to(dtype)
    names = sorted(found) + (["text encoder file"] if text_file is not None else [])
    return f"{arg.removesuffix('_dtype')}: {', '.join(names)} in {str(dtype).removeprefix('torch.')}"


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
    encoders = components(model, "text_encoder_dtype")       # a files-loaded text encoder offloads by itself
    for encoder in encoders.values():
        visit_device(encoder, model.device)
    return (f"offload: {blocks} block(s) at a time on {model.device}, the rest streamed from pinned CPU memory"
            + (f"; {', '.join(sorted(encoders))} on {model.device} only while it runs" if encoders else ""))


def visit_device(module: nn.Module, device: torch.device, home: torch.device = torch.device("cpu")) -> None:
    """`module` lives on `home` and visits `device` for each forward call: moved there just before the call and
    back right after (its output stays on `device`). With block offload the text encoder runs, then leaves the GPU
    to the denoiser's blocks."""
    module.to(home)
    module.register_forward_pre_hook(lambda m, args: m.to(device) and None)
    module.register_forward_hook(lambda m, args, out: m.to(home) and None)


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


__all__ = ["AttentionChoice", "ComponentDtype", "ModelOptions", "WeightStorage", "apply_options", "available_attention",
           "components"]
