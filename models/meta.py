"""Build a module without allocating its weights (torch only): the loaders of models/files/ then fill it from a
file, tensor by tensor, so a model is never in memory twice.

`init_empty_weights()` is the same idea as accelerate's context manager of that name (parameters on the meta device,
buffers kept), written on torch alone so Kinema does not need accelerate: the newest accelerate releases require a
newer torch than Kinema does, and pip would replace the user's (or ComfyUI's) torch to install one.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch

_LOCK = threading.Lock()      # the patch below is process-wide: one block at a time


@contextlib.contextmanager
def init_empty_weights() -> Iterator[None]:
    """Inside the block, every parameter a module registers is moved to the meta device (no memory, no init
    cost); buffers stay real, so tables computed in __init__ (rotary frequencies, ...) are kept. Load the weights
    afterwards with load_state_dict(..., assign=True) or by setting each parameter."""
    original = torch.nn.Module.register_parameter

    def register(module: torch.nn.Module, name: str, param) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            p = module._parameters[name]
            extra = {**p.__dict__, "requires_grad": p.requires_grad}
            module._parameters[name] = type(p)(p.to("meta"), **extra)

    with _LOCK:
        torch.nn.Module.register_parameter = register
        try:
            yield
        finally:
            torch.nn.Module.register_parameter = original
