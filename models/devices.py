"""Device and dtype choice. Nothing runs at import time."""
from __future__ import annotations

from enum import Enum

import torch

from .checks import check_choice


class DeviceChoice(str, Enum):
    AUTO = "auto"
    CUDA = "cuda"
    MPS = "mps"
    CPU = "cpu"


class DtypeChoice(str, Enum):
    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


_DTYPES = {DtypeChoice.BF16: torch.bfloat16, DtypeChoice.FP16: torch.float16, DtypeChoice.FP32: torch.float32}


def pick_device(choice: str = "auto") -> torch.device:
    """auto: cuda, then mps, then cpu. An explicit choice that is not available is an error, not a fallback."""
    check_choice("device", choice, [c.value for c in DeviceChoice])
    if choice == DeviceChoice.AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice == DeviceChoice.CUDA and not torch.cuda.is_available():
        raise RuntimeError("`device` is 'cuda' but torch sees no CUDA GPU. Fixes: choose 'auto' or 'cpu'; or install "
                           "a CUDA build of torch that matches your driver.")
    if choice == DeviceChoice.MPS and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("`device` is 'mps' but this torch has no MPS backend. Fixes: choose 'auto' or 'cpu'.")
    return torch.device(choice)


def pick_dtype(choice: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on CUDA when supported, fp16 on MPS, fp32 on CPU (CPU half precision is slow and lossy)."""
    check_choice("dtype", choice, [c.value for c in DtypeChoice])
    if choice != DtypeChoice.AUTO:
        return _DTYPES[DtypeChoice(choice)]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32
