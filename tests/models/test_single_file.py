"""Single-file .safetensors weights replace the denoiser of a diffusers folder; pickles are never loaded."""
from __future__ import annotations

import pytest
import safetensors.torch as st
import torch

from kinema.models.families import load_model

# diffusers -> original Wan key names (the inverse of diffusers' convert_wan_transformer_to_diffusers, for the
# layers the tiny model has), so the test holds a file in the layout Wan's own releases use.
TO_ORIGINAL = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn2", "cross_attn"), ("attn1", "self_attn"), (".to_out.0.", ".o."), (".to_q.", ".q."),
    (".to_k.", ".k."), (".to_v.", ".v."), ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
    ("norm2", "norm__tmp"), ("norm3", "norm2"), ("norm__tmp", "norm3"),
]


def _original_wan_keys(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        if k == "scale_shift_table":
            nk = "head.modulation"
        elif k.startswith("proj_out"):
            nk = k.replace("proj_out", "head.head")
        else:
            nk = k
            for a, b in TO_ORIGINAL:
                nk = nk.replace(a, b)
            nk = nk.replace("scale_shift_table", "modulation")
        out["model.diffusion_model." + nk] = v
    return out


@pytest.mark.parametrize("layout", ["diffusers", "original"])
def test_wan_transformer_from_single_file(models_dir, tmp_path, layout):
    folder = models_dir / "diffusers" / "fixture-wan-t2v"
    base = load_model(folder)
    sd = {k: v + 0.5 for k, v in base.transformer.state_dict().items()}
    file = tmp_path / "wan.safetensors"
    st.save_file(_original_wan_keys(sd) if layout == "original" else sd, file)
    model = load_model(folder, weights=file)
    got = model.transformer.state_dict()
    assert set(got) == set(sd)
    for k in sd:
        assert torch.equal(got[k], sd[k]), k
    assert model.pipe.transformer is model.transformer


def test_animatediff_motion_adapter_from_single_file(models_dir, tmp_path):
    folder = models_dir / "diffusers" / "fixture-animatediff"
    base = load_model(folder)
    sd = {k: v + 0.25 for k, v in base.pipe.motion_adapter.state_dict().items()}
    file = tmp_path / "mm.safetensors"
    st.save_file(sd, file)
    model = load_model(folder, weights=file)
    name = next(k for k in sd if "motion_modules" in k and k.endswith("weight"))
    unet_sd = model.unet.state_dict()
    hits = [k for k in unet_sd if k.endswith(name.split("motion_modules", 1)[1]) and "motion_modules" in k]
    assert hits and any(torch.equal(unet_sd[h], sd[name]) for h in hits)


def test_pickles_and_misfits_are_refused(models_dir, tmp_path):
    folder = models_dir / "diffusers" / "fixture-wan-t2v"
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="never loaded"):
        load_model(folder, weights=ckpt)
    bad = tmp_path / "bad.safetensors"
    st.save_file({"blocks.0.self_attn.q.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(ValueError, match="`weights`"):
        load_model(folder, weights=bad)
    with pytest.raises(FileNotFoundError, match="diffusion_models"):
        load_model(folder, weights=tmp_path / "missing.safetensors")
