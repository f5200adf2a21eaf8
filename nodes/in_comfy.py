"""Kinema as a good citizen inside ComfyUI: its device, its memory manager and its stop button.

ComfyUI is imported softly (env._comfy: only when this process already runs inside ComfyUI, never at import time,
never in models/). Outside ComfyUI everything here passes through: Kinema's own hosts pick devices themselves.

Inside ComfyUI:
- device `auto` is ComfyUI's device (comfy.model_management.get_torch_device: --cpu gives the CPU); an explicit
  GPU under --cpu is refused with the fix.
- before a loader reads a model, ComfyUI is asked to free the memory its files need (free_memory), so ComfyUI's
  own models make room instead of competing for VRAM.
- every loaded Kinema model is handed to ComfyUI's memory manager (load_models_gpu) through `Patcher`, an object
  with the small interface ComfyUI's LoadedModel drives (model_size, loaded_size, partially_load/unload, detach):
  ComfyUI can then unload Kinema's weights to RAM when another node needs the memory, and its "Unload models"
  button frees them. Kinema's modules cannot run partly on the GPU, so a load or an unload is always whole.
- before a node uses a model it is loaded back (load_models_gpu); with --lowvram / --novram it goes back to RAM
  after the node, so only the model of the running node holds VRAM.
- the node's stop check (models.interrupts) is ComfyUI's, so a stop is seen between the context windows of a step.
"""
from __future__ import annotations

import functools
import weakref
from pathlib import Path

import torch

from . import env

_PATCHERS: "weakref.WeakKeyDictionary[object, Patcher]" = weakref.WeakKeyDictionary()
WEIGHT_SUFFIXES = (".safetensors", ".gguf")


def _mm():
    return env._comfy("comfy.model_management")


# ---- device ------------------------------------------------------------------------------------------------------
def pick_device(choice: str) -> torch.device:
    """The loaders' `device` input: inside ComfyUI `auto` is ComfyUI's device and a GPU under --cpu is refused;
    elsewhere models.devices.pick_device (auto: CUDA, then MPS, then CPU)."""
    from ..models.checks import fail
    from ..models.devices import DeviceChoice, pick_device as kinema_pick
    mm = _mm()
    if mm is None:
        return kinema_pick(choice)
    comfy_device = torch.device(mm.get_torch_device())
    if choice == DeviceChoice.AUTO:
        return comfy_device
    if comfy_device.type == "cpu" and choice != DeviceChoice.CPU:
        fail("device", "is a GPU but ComfyUI runs on the CPU (--cpu)", choice,
             "Choose auto or cpu, or restart ComfyUI without --cpu.")
    return kinema_pick(choice)


# ---- memory ------------------------------------------------------------------------------------------------------
def weights_bytes(*sources) -> int:
    """Bytes of the weight files (.safetensors, .gguf) in these files or folders (an estimate of what loading
    them needs; None entries are skipped)."""
    total = 0
    for src in sources:
        if src is None:
            continue
        src = Path(src)
        files = [src] if src.is_file() else src.rglob("*") if src.is_dir() else []
        total += sum(f.stat().st_size for f in files if f.suffix.lower() in WEIGHT_SUFFIXES and f.is_file())
    return total


def free_for(device: torch.device, *sources) -> None:
    """Inside ComfyUI, before loading onto a GPU: ask ComfyUI to free what the weight files need."""
    mm = _mm()
    if mm is not None and device.type != "cpu":
        mm.free_memory(weights_bytes(*sources), device)


def _modules(obj) -> list[torch.nn.Module]:
    """The torch modules a loaded Kinema model holds on its device (pipeline components and module attributes),
    each once; [] for anything else (tensors, conditioning, a multi-GPU model)."""
    from ..models.lora import LoraModel
    from ..models.parallel import ParallelModel
    if isinstance(obj, LoraModel):
        obj = obj.base
    if isinstance(obj, (torch.Tensor, ParallelModel, dict, list, tuple, str)) or \
            not isinstance(getattr(obj, "device", None), torch.device) or not hasattr(obj, "__dict__"):
        return []
    found = list(vars(obj).values())
    components = getattr(getattr(obj, "pipe", None), "components", None)
    found += list(components.values()) if isinstance(components, dict) else []
    mods, seen = [], set()
    for m in found:
        if isinstance(m, torch.nn.Module) and id(m) not in seen and _on(m, obj.device):
            seen.add(id(m))
            mods.append(m)
    return mods


def _on(module: torch.nn.Module, device: torch.device) -> bool:
    t = next(module.parameters(), None)
    return t is not None and t.device.type == device.type


class Patcher:
    """A Kinema model as ComfyUI's memory manager sees it (the interface comfy.model_management.LoadedModel
    drives): its modules' bytes, whether they are on the load device, and whole loads / unloads between the load
    device and the offload device (RAM). `model` is the Kinema model itself, held weakly (ComfyUI watches it)."""

    def __init__(self, model, modules: list[torch.nn.Module], load_device: torch.device,
                 offload_device: torch.device):
        self._model = weakref.ref(model)
        self.modules = modules
        self.load_device, self.offload_device = load_device, offload_device
        self.parent = None
        self.size = sum(t.numel() * t.element_size() for m in modules
                        for t in (*m.parameters(), *m.buffers()))
        self.loaded = True

    @property
    def model(self):
        return self._model()

    def model_size(self) -> int:
        return self.size

    def loaded_size(self) -> int:
        return self.size if self.loaded else 0

    def current_loaded_device(self) -> torch.device:
        return self.load_device if self.loaded else self.offload_device

    def model_dtype(self):
        return getattr(self.model, "dtype", None)

    def _move(self, device: torch.device) -> None:
        for m in self.modules:
            m.to(device)
        self.loaded = device == self.load_device

    def partially_load(self, device, extra_memory=0, force_patch_weights=False) -> int:
        """Load all of it (Kinema's modules cannot run split); returns the bytes newly loaded."""
        before = self.loaded_size()
        self._move(torch.device(device))
        return self.loaded_size() - before

    def partially_unload(self, device_to, memory_to_free=0) -> int:
        """Unload all of it; returns the bytes freed on the load device."""
        before = self.loaded_size()
        self._move(torch.device(device_to))
        return before - self.loaded_size()

    def detach(self, unpatch_all=True):
        """As ComfyUI's ModelPatcher: unpatch_all moves the weights to the offload device; without it (ComfyUI
        re-listing a model it loads again) nothing moves."""
        if unpatch_all:
            self._move(self.offload_device)
        return self.model

    def model_patches_to(self, device) -> None:
        pass

    def model_patches_models(self) -> list:
        return []

    def lowvram_patch_counter(self) -> int:
        return 0

    def is_clone(self, other) -> bool:
        """Only itself: ComfyUI then replaces its own entry when the model is loaded again (never a duplicate)."""
        return other is self


def patcher_of(value) -> Patcher | None:
    """The Patcher of a registered model (or of a LoRA view on one), else None."""
    from ..models.lora import LoraModel
    base = value.base if isinstance(value, LoraModel) else value
    try:
        return _PATCHERS.get(base)
    except TypeError:         # not hashable / not weak-referenceable: not a model
        return None


def register(mm, value) -> Patcher | None:
    """Hand a freshly loaded model to ComfyUI's memory manager (once); None for anything else. A model on the CPU
    is registered too (its loads and unloads move nothing): ComfyUI's model list and "Unload models" see it."""
    if patcher_of(value) is not None or not (mods := _modules(value)):
        return patcher_of(value)
    patcher = Patcher(value, mods, value.device, torch.device(mm.unet_offload_device()))
    _PATCHERS[value] = patcher
    mm.load_models_gpu([patcher])
    return patcher


def _low_vram(mm) -> bool:
    state = getattr(getattr(mm, "vram_state", None), "name", "")
    return state in ("LOW_VRAM", "NO_VRAM")


def _results(out) -> tuple:
    result = out.get("result", ()) if isinstance(out, dict) else out
    return tuple(result) if isinstance(result, (tuple, list)) else ()


def node_call(fn):
    """Wrap a node's FUNCTION: inside ComfyUI, load the models it uses through ComfyUI's memory manager, install
    ComfyUI's stop check for the run, register the models it returns, and with --lowvram/--novram put the used
    models back in RAM afterwards. Outside ComfyUI: only the host's stop check (env.interrupt_check)."""
    from ..models import interrupts

    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        mm = _mm()
        if mm is None:
            with interrupts.checking(env.interrupt_check()):
                return fn(self, *args, **kwargs)
        used = [p for v in (*args, *kwargs.values()) if (p := patcher_of(v)) is not None]
        if used:
            mm.load_models_gpu(used)
        with interrupts.checking(mm.throw_exception_if_processing_interrupted):
            out = fn(self, *args, **kwargs)
        for value in _results(out):
            register(mm, value)
        if _low_vram(mm):
            for p in used:
                p.detach()
        return out

    call.kinema_node_call = True
    return call


def wrap_node(cls) -> None:
    """Route a node class's FUNCTION through node_call (once)."""
    fn = cls.__dict__.get(cls.FUNCTION)
    if callable(fn) and not getattr(fn, "kinema_node_call", False):
        setattr(cls, cls.FUNCTION, node_call(fn))

