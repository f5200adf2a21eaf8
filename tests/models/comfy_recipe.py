"""Rebuild the recipe files of tests/data/comfy (written by tools/make_comfy_reference.py with ComfyUI's classes).

A recipe lists the keys, shapes and dtypes of a ComfyUI state_dict; every value is `seed_value(key, shape)` (the
producer filled ComfyUI's modules with exactly these values), so a file too big to commit (a 1280-wide image
projection, a VAE) is rebuilt here byte for byte as ComfyUI saved it. Shared by the producer and the tests.
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[1] / "data" / "comfy"


def seed_value(key: str, shape, seed: int = 0) -> torch.Tensor:
    """The value of a recipe tensor: a function of its (unprefixed) name and shape only, float32."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()) ^ seed)
    r = torch.randn(tuple(shape), generator=g, dtype=torch.float32)
    leaf = key.rsplit(".", 1)[-1]
    if len(shape) == 1 and (leaf in ("weight", "gamma") or "norm" in key):
        return 1.0 + 0.1 * r
    if leaf == "bias":
        return 0.05 * r
    if "modulation" in key or "emb_pos" in key or "relative_attention_bias" in key:
        return 0.1 * r
    if "shared" in key or ("embedding.weight" in key and len(shape) == 2 and "patch" not in key):
        return r
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    return r / math.sqrt(max(fan_in, 1))


def recipe(name: str) -> dict:
    return json.loads((DATA / "reference.json").read_text())["recipes"][name]


def build_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The state dict ComfyUI saved for recipe `name` (keys with the recipe's prefix, the saved dtypes)."""
    r = recipe(name)
    prefix = r["prefix"]
    return {k: seed_value(k[len(prefix):], shape).to(getattr(torch, dtype))
            for k, (shape, dtype) in r["tensors"].items()}


def write(name: str, path: Path) -> Path:
    from safetensors.torch import save_file
    save_file(build_state_dict(name), str(path))
    return path
