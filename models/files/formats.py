"""Reading tensors from the single files ComfyUI users have: safetensors (fp32/fp16/bf16/fp8, ComfyUI's scaled fp8)
and GGUF, one tensor at a time, straight into the target dtype and device.

Memory: a safetensors tensor is read with plain file reads into a buffer of its own size (no mmap, so the file's
pages never count in the process's RSS), converted, and the buffer dropped; a GGUF tensor is dequantised from the
reader's memory map and its pages are released (madvise DONTNEED) right after. Peak RAM while loading a model is the
model in its target dtype plus one tensor, never two full copies.

Scaled fp8 (ComfyUI, comfy/ops.py scaled_fp8_ops): a `scaled_fp8` marker tensor (its dtype names the fp8 format),
fp8 `X.weight` with a float32 scalar `X.scale_weight` (the true weight is `weight.float() * scale_weight`) and
sometimes `X.scale_input` (used only by fp8 matmuls; not needed to de-scale). Tensors without a scale are plain casts.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path
from typing import Iterator

import torch

from ..checks import fail

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
SUPPORTED_SUFFIXES = (".safetensors", ".sft", ".gguf")
FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)

# safetensors dtype names -> torch
ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64,
             "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def check_file(path, arg: str) -> Path:
    """A model file Kinema may read: it exists, and it is safetensors or GGUF (pickles are never loaded)."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        fail(arg, "must be a .safetensors or .gguf file (pickled .ckpt/.pt/.pth/.bin files are never loaded: "
                  "unpickling runs code from the file)", path.name,
             f"Use the .safetensors release of this model (ComfyUI's repackaged files are all safetensors), or "
             f"convert it once with safetensors.torch.save_file in a trusted environment.")
    if not path.is_file():
        raise FileNotFoundError(f"`{arg}` file not found: {path}. Check the name and the folder "
                                f"(ComfyUI: models/diffusion_models, text_encoders, vae, clip_vision).")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        fail(arg, f"must be one of {list(SUPPORTED_SUFFIXES)}", path.name, "Pick a .safetensors or .gguf file.")
    return path


class SafetensorsFile:
    """A .safetensors file read tensor by tensor with pread (see the module docstring for why not mmap)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        self.metadata = header.pop("__metadata__", None) or {}
        self._base = 8 + n
        self._info = header
        self._fd = os.open(self.path, os.O_RDONLY)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def keys(self) -> list[str]:
        return list(self._info)

    def __contains__(self, key: str) -> bool:
        return key in self._info

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._info[key]["shape"])

    def dtype(self, key: str) -> torch.dtype:
        return ST_DTYPES[self._info[key]["dtype"]]

    def nbytes(self, key: str) -> int:
        a, b = self._info[key]["data_offsets"]
        return b - a

    def _pread(self, buf: torch.Tensor, offset: int) -> None:
        view, got = memoryview(buf.numpy()), 0
        while got < len(view):
            n = os.preadv(self._fd, [view[got:]], self._base + offset + got)
            if n <= 0:
                fail("file", "is truncated", self.path.name, "Download the file again.")
            got += n

    def get(self, key: str) -> torch.Tensor:
        """The tensor as stored (its own dtype), in a fresh CPU buffer."""
        a, b = self._info[key]["data_offsets"]
        buf = torch.empty(b - a, dtype=torch.uint8)
        self._pread(buf, a)
        return buf.view(self.dtype(key)).reshape(self.shape(key))

    def chunks(self, key: str, elements: int):
        """The stored tensor, flattened, as consecutive views of at most `elements` values in ONE reused buffer
        (for conversions: no per-tensor temporary, so nothing fragments the heap)."""
        a, b = self._info[key]["data_offsets"]
        dt = self.dtype(key)
        size = torch.empty((), dtype=dt).element_size()
        if getattr(self, "_chunk_buf", None) is None or self._chunk_buf.numel() < elements * 8:
            self._chunk_buf = torch.empty(elements * 8, dtype=torch.uint8)
        for off in range(a, b, elements * size):
            n = min(elements * size, b - off)
            part = self._chunk_buf[:n]
            self._pread(part, off)
            yield part.view(dt)


class GGUFFile:
    """A GGUF file (the city96 ComfyUI-GGUF layout: original key names, ne reversed, tensors of more than 4 dims
    flattened with `comfy.gguf.orig_shape.<name>`), dequantised by the `gguf` package's own code."""

    def __init__(self, path: Path):
        try:
            import gguf
        except ImportError as exc:
            raise RuntimeError(f"Reading {Path(path).name} needs the `gguf` package. Fixes: `pip install gguf` "
                               f"(or `pip install comfyui-kinema[gguf]`), or use a .safetensors file.") from exc
        self._gguf = gguf
        self.path = Path(path)
        self.reader = gguf.GGUFReader(str(self.path))
        self._tensors = {t.name: t for t in self.reader.tensors}
        self.metadata = {}
        field = self.reader.get_field("general.architecture")
        if field is not None:
            self.metadata["general.architecture"] = bytes(field.parts[field.data[-1]]).decode("utf-8")

    def close(self) -> None:
        self.reader = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, key: str) -> bool:
        return key in self._tensors

    def qtype(self, key: str) -> str:
        return self._tensors[key].tensor_type.name

    def shape(self, key: str) -> tuple[int, ...]:
        field = self.reader.get_field(f"comfy.gguf.orig_shape.{key}")
        if field is not None:
            return tuple(int(field.parts[i][0]) for i in field.data)
        return tuple(int(v) for v in reversed(self._tensors[key].shape))

    def dtype(self, key: str) -> torch.dtype:
        return {"F16": torch.float16, "BF16": torch.bfloat16}.get(self.qtype(key), torch.float32)

    def nbytes(self, key: str) -> int:
        return int(self._tensors[key].n_bytes)

    def get(self, key: str) -> torch.Tensor:
        """The tensor dequantised to float32 (F16/BF16 tensors stay in their dtype)."""
        import numpy as np
        t = self._tensors[key]
        qt = t.tensor_type
        if qt.name in ("F32", "F16"):
            out = torch.from_numpy(np.array(t.data, copy=True))
        elif qt.name == "BF16":
            out = torch.from_numpy(np.array(t.data, copy=True).view(np.int16)).view(torch.bfloat16)
        else:
            out = torch.from_numpy(self._gguf.quants.dequantize(t.data, qt))
        self._release(t)
        return out.reshape(self.shape(key))

    def _release(self, t) -> None:
        """Drop the file pages this tensor touched from RSS (they are clean, file-backed)."""
        mm = getattr(self.reader.data, "_mmap", None)
        if mm is None or not hasattr(mm, "madvise"):
            return
        page = mmap.PAGESIZE
        start = int(t.data_offset) // page * page
        length = int(t.data_offset) + int(t.n_bytes) - start
        try:
            mm.madvise(mmap.MADV_DONTNEED, start, length)
        except (OSError, ValueError):
            pass


def open_tensors(path, arg: str = "file"):
    """Open a checked safetensors or GGUF file for tensor-by-tensor reading (use as a context manager)."""
    path = check_file(path, arg)
    if path.suffix.lower() == ".gguf":
        return GGUFFile(path)
    try:
        return SafetensorsFile(path)
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        fail(arg, "must be a readable .safetensors file", path.name, f"Its header could not be read ({exc}); "
             f"download it again.")


# ---------------------------------------------------------------- scaled fp8
def scaled_fp8_format(f) -> torch.dtype | None:
    """The fp8 format named by a ComfyUI `scaled_fp8` marker (any prefix), else None if the file has no scales."""
    marker = [k for k in f.keys() if k == "scaled_fp8" or k.endswith(".scaled_fp8")]
    if marker:
        dt = f.dtype(marker[0])
        return dt if dt in FP8 else torch.float8_e4m3fn  # a float32 marker means e4m3fn (model_detection.py)
    if any(k.endswith(".scale_weight") for k in f.keys()):
        return torch.float8_e4m3fn
    return None


def is_aux_key(key: str) -> bool:
    """Keys that carry no weight of their own: the fp8 marker, scales, and ComfyUI's loader hints."""
    leaf = key.rsplit(".", 1)[-1]
    return leaf in ("scaled_fp8", "scale_weight", "scale_input", "v_pred") or key in ("scaled_fp8", "v_pred")


def check_target_dtype(arg: str, f, dtype: torch.dtype) -> None:
    """Refuse a target dtype that would keep ComfyUI scaled-fp8 weights as fp8 without their scales."""
    if dtype in FP8 and scaled_fp8_format(f) is not None:
        fail(arg, "holds ComfyUI scaled fp8 weights (per-layer scale_weight); loading them as plain fp8 would drop "
                  "the scales and give silently wrong weights", f"{f.path.name} with dtype={dtype}",
             "Load it with dtype=torch.bfloat16 or torch.float16 (or float32): the weights are de-scaled exactly.")


def read_tensor(f, key: str, dtype: torch.dtype, device="cpu") -> torch.Tensor:
    """One tensor in the target dtype/device; a fp8 weight with a `scale_weight` beside it is de-scaled in float32
    (`weight.float() * scale_weight`, as ComfyUI computes it) before the cast."""
    stored = f.dtype(key)
    scale_key = key[: -len("weight")] + "scale_weight" if key.endswith(".weight") else None
    scale = None
    if scale_key and scale_key in f:
        if dtype in FP8:
            fail("dtype", "would keep a scaled fp8 weight without its scale_weight", f"{key} as {dtype}",
                 "Load with dtype=torch.bfloat16 or torch.float16: the weights are de-scaled exactly.")
        scale = f.get(scale_key).float()
    if not stored.is_floating_point or (scale is None and stored == dtype):
        return f.get(key).to(device)
    # convert chunk by chunk into the final tensor: small float32 temporaries (whole-tensor temporaries fragment
    # the heap: peak RSS reached 1.4x the weights loading a 1.3B scaled-fp8 file)
    out = torch.empty(f.shape(key), dtype=dtype, device=device)
    dst, step = out.view(-1), 1 << 20
    parts = f.chunks(key, step) if hasattr(f, "chunks") else f.get(key).reshape(-1).split(step)
    i = 0
    for part in parts:
        chunk = part.float()  # fp8 -> float32 is exact; a plain fp8 tensor is a cast, as ComfyUI does
        if scale is not None:
            chunk.mul_(scale)  # ComfyUI: weight.to(float32) * scale_weight
        dst[i:i + chunk.numel()].copy_(chunk)
        i += chunk.numel()
    return out


def unused_scales(f, used: set[str]) -> list[str]:
    """`X.scale_weight` keys whose `X.weight` was not loaded: loading would lose their scale."""
    return [k for k in f.keys() if k.endswith(".scale_weight") and k[: -len("scale_weight")] + "weight" not in used]


def iter_keys(f, prefix: str) -> Iterator[str]:
    for k in f.keys():
        if k.startswith(prefix) and not is_aux_key(k):
            yield k
