"""LoRA patches applied on the fly, for the duration of one denoiser call, to modules other users share.

- Linear and convolution layers get a forward hook that adds the LoRA's own output to the layer's:
  y + strength * scale * up(down(x)) for a low-rank pair, y + strength * delta(x) for a full-rank weight delta,
  y + strength * delta_b for a bias delta. The layer's weight is never read or written, so weights stored as fp8
  (diffusers' layerwise casting), GGUF or any other quantised form work unchanged, and nothing is merged into them.
- Other parameters a LoRA changes (norm weights, Wan's modulation tables) are small: each is swapped for a patched
  copy (base + delta, computed once per LoRA stack and kept by it) and the original Parameter object is put back
  afterwards. The base tensors are never modified, so un-patching restores them bit for bit.
Hooks and swaps exist only inside `applied(...)`: outside it the modules are exactly the base model's (no hooks),
so the same loaded model can serve an unpatched sampler and several LoRA stacks in one graph. A lock per denoiser
module keeps two stacks from being active on it at once (two threads sampling the same loaded model take turns).
Modules are looked up by path at each activation, so modules a family rebuilds (AnimateDiff's FreeNoise blocks)
are patched too.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from .lora_keys import Delta, LowRank, Patch


@dataclass(frozen=True)
class Layer:
    """One LoRA of a stack, as the patcher applies it."""
    patches: tuple[Patch, ...]
    strength: float


_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _lock(module: nn.Module) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(module)
        if lock is None:
            lock = _LOCKS[module] = threading.RLock()
        return lock


def hookable(module: nn.Module) -> bool:
    """Layers whose output a LoRA can add to (y = x W^T + b, or a convolution): nn.Linear and its subclasses
    (diffusers' GGUF and quantised linears, ComfyUI's casting ops), Conv1d/2d/3d."""
    return isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))


def group(layers: tuple[Layer, ...]) -> dict[tuple[str, str], list[tuple[str, LowRank | Delta, float]]]:
    """{(denoiser attribute, module path): [(leaf, change, strength), ...]} over the whole stack."""
    out: dict[tuple[str, str], list] = {}
    for layer in layers:
        for p in layer.patches:
            out.setdefault((p.denoiser, p.module), []).append((p.leaf, p.change, layer.strength))
    return out


def _add(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float, inplace: bool) -> torch.Tensor:
    """out + alpha * a @ b^T for out (..., O), a (..., r), b (O, r): one fused BLAS call (out is the layer's fresh
    output: updated in place when no gradient is being recorded)."""
    flat = a.reshape(-1, a.shape[-1])
    if inplace and out.is_contiguous():
        out.view(-1, out.shape[-1]).addmm_(flat, b.t(), alpha=alpha)
        return out
    return out + alpha * F.linear(a, b)


def _apply(module: nn.Module, x: torch.Tensor, leaf: str, change, k: float, out: torch.Tensor) -> torch.Tensor:
    """A layer's output with one change added: linear out (B, ..., O), conv out (B, O, *space), in out's dtype."""
    inplace = not torch.is_grad_enabled()
    linear = isinstance(module, nn.Linear)
    if leaf == "bias":
        d = k * change.delta.to(out.device, out.dtype)
        d = d if linear else d.view(-1, *(1,) * (out.ndim - 2))
        return out.add_(d) if inplace else out + d
    if leaf != "weight":
        raise RuntimeError(f"LoRA patch on {type(module).__name__}.{leaf} cannot be applied as a hook")
    x = x.to(out.dtype)
    if isinstance(change, LowRank):
        down, up = change.down.to(x.device, x.dtype), change.up.to(x.device, x.dtype)
        if linear:
            return _add(out, F.linear(x, down), up, k * change.scale, inplace)              # (B, ..., O)
        h = module._conv_forward(x, down, None)                                            # (B, r, *space)
        conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[h.ndim]
        d = (k * change.scale) * conv(h, up)                                               # (B, O, *space)
    else:
        delta = change.delta.to(x.device, x.dtype)
        if linear:
            return _add(out, x, delta, k, inplace)
        d = k * module._conv_forward(x, delta, None)
    return out.add_(d) if inplace else out + d


def _hook(items: list[tuple[str, LowRank | Delta, float]]):
    def hook(module, args, out):
        x = args[0]
        for leaf, change, k in items:
            out = _apply(module, x, leaf, change, k, out)
        return out
    return hook


def _patched_param(param: torch.Tensor, items: list[tuple[LowRank | Delta, float]]) -> nn.Parameter:
    """base + sum(strength * delta), computed in float32, stored in the parameter's dtype and device."""
    value = param.detach().float()
    for change, k in items:
        value = value + k * change.dense().to(value.device).reshape(param.shape)
    return nn.Parameter(value.to(param.dtype), requires_grad=False)


@contextlib.contextmanager
def applied(denoisers: dict[str, nn.Module], layers: tuple[Layer, ...], cache: dict) -> Iterator[None]:
    """Patch the denoisers with the stack for the duration of the block; restore them exactly after it.

    Args:
        denoisers: {family attribute: module} of the base model.
        layers: the LoRA stack (each LoRA's patches and strength).
        cache: the stack's own store of swapped parameters (kept between calls; valid while the base parameter it
            was made from is the one in the module).
    """
    grouped = group(layers)
    with contextlib.ExitStack() as undo:
        for lock in {id(m): _lock(m) for m in denoisers.values()}.values():
            undo.enter_context(lock)
        for (attr, path), items in grouped.items():
            module = denoisers[attr].get_submodule(path)
            on_output = hookable(module)
            hooked = [i for i in items if on_output and i[0] in ("weight", "bias")]
            if hooked:
                undo.callback(module.register_forward_hook(_hook(hooked)).remove)
            swapped: dict[str, list] = {}
            for leaf, change, k in items:
                if not (on_output and leaf in ("weight", "bias")):
                    swapped.setdefault(leaf, []).append((change, k))
            for leaf, changes in swapped.items():
                original = module._parameters[leaf]
                key = (attr, path, leaf)
                if key not in cache or cache[key][0] is not original:
                    cache[key] = (original, _patched_param(original, changes))
                module._parameters[leaf] = cache[key][1]
                undo.callback(module._parameters.__setitem__, leaf, original)
        yield
