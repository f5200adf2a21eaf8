"""CLIP vision towers from ComfyUI's clip_vision/ files (kinema.models.files.load_clip_vision) reproduce ComfyUI's own
ClipVisionModel (tests/data/comfy/clip_vision_tiny.fp16.safetensors, written by tools/make_comfy_reference.py with
clip_vision_config_h.json's fields at a tiny size).

Tolerance: 1e-4 absolute, float32 on both sides on the same fp16 weights (hidden states ~1-10 in magnitude).
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from kinema.models.files import check_clip_vision, load_clip_vision
from kinema.models.files.clip_vision import clip_image_processor

from comfy_recipe import DATA

REF = load_file(str(DATA / "reference.safetensors"))
FILE = DATA / "clip_vision_tiny.fp16.safetensors"
TOL = 1e-4


def test_clip_vision_reproduces_comfyui(one_thread):
    model = load_clip_vision(FILE)
    assert type(model).__name__ == "CLIPVisionModelWithProjection"
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.image_size, cfg.patch_size, cfg.projection_dim) == \
        (128, 3, 56, 14, 64)
    with torch.no_grad():
        out = model(pixel_values=REF["clip_vision.pixels"], output_hidden_states=True)
    # Wan's image tokens: the penultimate layer (diffusers hidden_states[-2], ComfyUI penultimate_hidden_states)
    assert (out.hidden_states[-2] - REF["clip_vision.penultimate"]).abs().max().item() < TOL
    assert (out.last_hidden_state - REF["clip_vision.last_hidden_state"]).abs().max().item() < TOL
    assert (out.image_embeds - REF["clip_vision.image_embeds"]).abs().max().item() < TOL


def _comfy_preprocess(image, size):
    """comfy.clip_vision.clip_preprocess restated (checked against ComfyUI's own pixels below): shortest side to
    size (torch bicubic, antialiased), centre crop, 8-bit rounding, CLIP mean/std."""
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    x = image.movedim(-1, 1)
    scale = size / min(x.shape[2], x.shape[3])
    x = torch.nn.functional.interpolate(x, size=(round(scale * x.shape[2]), round(scale * x.shape[3])),
                                        mode="bicubic", antialias=True)
    h, w = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
    x = torch.clip(255.0 * x[:, :, h:h + size, w:w + size], 0, 255).round() / 255.0
    return (x - mean) / std


def test_clip_vision_preprocessing_close_to_comfyui():
    """diffusers' Wan I2V preprocesses with transformers' CLIPImageProcessor (PIL bicubic), ComfyUI with torch's
    antialiased bicubic and 8-bit rounding: the same crop and normalisation. On a photo-like (smooth) image the
    pixels agree within a few grey levels; on the reference's white noise the two resampling filters differ."""
    from PIL import Image
    assert (_comfy_preprocess(REF["clip_vision.image"], 56) - REF["clip_vision.pixels"]).abs().max() < 1e-5
    model = load_clip_vision(FILE)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 72), torch.linspace(0, 1, 96), indexing="ij")
    image = torch.stack([xx, yy, 0.5 + 0.4 * torch.sin(6 * xx) * torch.cos(4 * yy)], -1)[None]  # (1, 72, 96, 3)
    pil = Image.fromarray((image[0].numpy() * 255).round().astype("uint8"))
    ours = clip_image_processor(model)(images=pil, return_tensors="pt").pixel_values
    ref = _comfy_preprocess(image, 56)
    assert ours.shape == ref.shape == (1, 3, 56, 56)
    # normalised units: one grey level is 1/255 / 0.27 = 0.0145; a 1-pixel crop offset alone would give ~0.03
    assert (ours - ref).abs().mean().item() < 0.03


@pytest.mark.parametrize("prefix", ["clip_vision.", "model."])
def test_prefixed_files_load(tmp_path, prefix):
    sd = load_file(str(FILE))
    save_file({prefix + k: v for k, v in sd.items()}, tmp_path / "cv.safetensors")
    model = load_clip_vision(tmp_path / "cv.safetensors")
    ref = load_clip_vision(FILE)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_clip_vision_refusals(tmp_path):
    with pytest.raises(ValueError) as e:
        load_clip_vision(DATA / "umt5_tiny.fp16.safetensors")
    msg = str(e.value)
    assert msg.startswith("`clip_vision` is not a CLIP vision file") and "clip_vision_h.safetensors" in msg
    save_file({"visual.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(6, 2)}, tmp_path / "oc.safetensors")
    with pytest.raises(ValueError, match=r"^`clip_vision` is an OpenCLIP-layout vision tower.*clip_vision_h"):
        load_clip_vision(tmp_path / "oc.safetensors")


def test_clip_vision_width_pairing():
    from kinema.models.files import Detected, known_variants
    model = load_clip_vision(FILE)
    rec = known_variants()["wan2.1_i2v_14b"]
    with pytest.raises(ValueError) as e:
        check_clip_vision(Detected(dict(rec["diffusers_config"]), "wan2.1_i2v_14b", rec), model)
    assert str(e.value).startswith("`clip_vision` must give 1280-wide image features") and "clip_vision_h" in str(e.value)
