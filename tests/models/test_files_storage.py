"""Denoiser weights stored small (load_denoiser(storage=...), the files loader's `weight_dtype`): a ComfyUI scaled-fp8
file keeps its own fp8 bytes and scales and still reproduces ComfyUI's fp8 computation; a 16-bit file stored as fp8
is quantised per tensor within e4m3fn's rounding bound; memory is the storage size.

Tolerances: fp8 kept with its scales computes `weight.to(float32) * scale_weight` as ComfyUI does: 1e-4 (outputs
~4). fp16 -> fp8 quantised: each weight within half an e4m3 step (|w| / 16, or 2^-10 * scale below the normal
range); the output's relative RMS error is then that of ComfyUI's own scaled-fp8 file of the same weights.
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from kinema.models.files import load_denoiser
from kinema.models.files.storage import StoredLinear

from comfy_recipe import DATA

REF = load_file(str(DATA / "reference.safetensors"))
TOL = 1e-4


def _t2v(model):
    with torch.no_grad():
        return model(REF["wan.x"], REF["wan.t"], REF["wan.context"], return_dict=False)[0]


def _linear_bytes(model) -> int:
    return sum(m.weight.numel() * m.weight.element_size() for m in model.modules() if isinstance(m, torch.nn.Linear))



def test_scaled_fp8_kept_as_fp8_reproduces_comfyui(one_thread):
    model = load_denoiser(DATA / "wan_t2v.fp8_scaled.safetensors", strict=False, storage=torch.float8_e4m3fn)
    stored = [m for m in model.modules() if isinstance(m, StoredLinear)]
    assert stored and all(m.weight.dtype == torch.float8_e4m3fn for m in stored)
    assert all(getattr(m, "scale_weight", None) is not None for m in stored)
    assert model.dtype == torch.float32  # what WanFamily casts its inputs to
    assert (_t2v(model) - REF["wan.out_fp8_scaled"]).abs().max().item() < TOL
    # one byte per weight in every Linear but the time embedder's (kept in the compute dtype: it sets the timestep's)
    plain = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear]
    assert plain and all(".time_embedder." in n for n in plain)
    assert _linear_bytes(torch.nn.ModuleList(stored)) == sum(m.weight.numel() for m in stored)


def test_fp16_file_stored_as_fp8_is_quantised_within_bound(one_thread):
    from kinema.models.files.formats import open_tensors, read_tensor
    model = load_denoiser(DATA / "wan_t2v.fp16.safetensors", strict=False, storage=torch.float8_e4m3fn)
    layer = model.blocks[1].ffn.net[0].proj
    assert isinstance(layer, StoredLinear) and layer.weight.dtype == torch.float8_e4m3fn
    with open_tensors(DATA / "wan_t2v.fp16.safetensors") as f:
        w = read_tensor(f, "blocks.1.ffn.0.weight", torch.float32)
    got = layer.weight.float() * layer.scale_weight
    bound = torch.maximum(w.abs() / 16, torch.full_like(w, 2.0 ** -10) * layer.scale_weight)
    assert ((got - w).abs() <= bound * (1 + 1e-6)).all() and (got - w).abs().max() > 0
    # the output error, relative RMS: as large as ComfyUI's own scaled-fp8 file of the same weights (measured 3.7%
    # for this quantisation, 4.6% for ComfyUI's file)
    ref = REF["wan.out_fp16"]
    err = ((_t2v(model) - ref).pow(2).mean().sqrt() / ref.std()).item()
    comfy = ((REF["wan.out_fp8_scaled"] - ref).pow(2).mean().sqrt() / ref.std()).item()
    assert 0 < err < 0.08 and err < 1.5 * comfy, (err, comfy)
    assert isinstance(model.condition_embedder.time_embedder.linear_1, torch.nn.Linear) and \
        model.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32  # sets the timestep's dtype


@pytest.mark.parametrize("storage", [torch.bfloat16, torch.float16])
def test_16_bit_storage_computes_in_float32(one_thread, storage):
    model = load_denoiser(DATA / "wan_t2v.fp16.safetensors", strict=False, storage=storage)
    layer = model.blocks[0].attn1.to_q
    assert isinstance(layer, StoredLinear) and layer.weight.dtype == storage
    tol = TOL if storage == torch.float16 else 0.1   # fp16 file -> fp16 storage is exact; bf16 drops 3 bits
    assert (_t2v(model) - REF["wan.out_fp16"]).abs().max().item() < tol
