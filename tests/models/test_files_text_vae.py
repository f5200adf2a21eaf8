"""UMT5 text encoders (tokens AND embeddings) and Wan VAEs loaded by kinema.models.files reproduce ComfyUI's own
outputs (tests/data/comfy, tools/make_comfy_reference.py); pairing checks name the input and the fix.

Tolerances: 1e-4 absolute on float32 computations (embeddings ~3-4 in magnitude, VAE outputs ~1). The scaled-fp8
text encoder is compared with ComfyUI computing on the same fp8 file: the weights are `weight.float() *
scale_weight` on both sides, so the same 1e-4 holds.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from kinema.models.files import (Detected, check_clip_vision, check_pair, check_text_encoder, check_vae,
                                 encode_prompt, known_variants, load_text_encoder, load_vae)

from comfy_recipe import DATA, write

REF = load_file(str(DATA / "reference.safetensors"))
META = json.loads((DATA / "reference.json").read_text())
TOL = 1e-4


@pytest.mark.parametrize("name,tokens,suffix", [("umt5_tiny.fp16.safetensors", "tokens", ""),
                                                ("umt5_tiny.fp8_scaled.safetensors", "tokens_fp8", "_fp8")])
def test_text_encoder_tokens_and_embeddings_match_comfyui(one_thread, name, tokens, suffix):
    te = load_text_encoder(DATA / name)
    assert type(te.model).__name__ == "UMT5EncoderModel" and te.dim == 64
    for i, prompt in enumerate(META["umt5"]["prompts"]):
        assert te.tokenizer(prompt).input_ids == META["umt5"][tokens][i], prompt  # SentencePiece via ComfyUI
        emb, n = encode_prompt(te, prompt)
        ref = REF[f"umt5.{i}.embeds{suffix}"]  # the prompt's tokens and two zeroed positions after them
        assert emb.shape == (1, 512, 64) and int(n) == len(META["umt5"][tokens][i])
        assert (emb[:, :ref.shape[1]] - ref).abs().max().item() < TOL
        assert emb[:, int(n):].abs().max() == 0  # zero after the prompt, as ComfyUI's zero_out_masked


def test_text_encoder_without_spiece_model_names_the_file_to_add(tmp_path):
    sd = load_file(str(DATA / "umt5_tiny.fp16.safetensors"))
    del sd["spiece_model"]
    save_file(sd, tmp_path / "umt5_no_tokenizer.safetensors")
    with pytest.raises(ValueError) as e:
        load_text_encoder(tmp_path / "umt5_no_tokenizer.safetensors")
    msg = str(e.value)
    assert msg.startswith("`text_encoder` carries no tokenizer") and "umt5_no_tokenizer.safetensors" in msg
    assert "umt5_xxl_fp16.safetensors" in msg and "spiece_model" in msg


def test_text_encoder_refuses_other_files():
    with pytest.raises(ValueError, match=r"^`text_encoder` is not a T5/UMT5 text encoder file.*umt5_xxl_fp16"):
        load_text_encoder(DATA / "wan_t2v.fp16.safetensors")


@pytest.mark.parametrize("name,z_dim,down", [("wan_2.1_vae", 16, 8), ("wan2.2_vae", 48, 16)])
def test_vae_matches_comfyui(one_thread, tmp_path, name, z_dim, down):
    vae = load_vae(write(name, tmp_path / f"{name}.safetensors"))
    assert vae.kinema_variant == name and vae.config.z_dim == z_dim
    x, z = REF[f"{name}.x"], REF[f"{name}.z"]
    with torch.no_grad():
        mu = vae.encode(x).latent_dist.mean
        dec = vae.decode(z).sample
    assert mu.shape == (1, z_dim, 2, x.shape[3] // down, x.shape[4] // down)
    assert (mu - REF[f"{name}.mu"]).abs().max().item() < TOL
    # diffusers clamps decoded video to [-1, 1]; ComfyUI's first_stage_model returns it unclamped (its VAE
    # wrapper clamps when converting to images)
    assert (dec - REF[f"{name}.decoded"].clamp(-1, 1)).abs().max().item() < TOL


def test_vae_refuses_a_denoiser():
    with pytest.raises(ValueError, match=r"^`vae` is not a Wan VAE file.*wan_2.1_vae.safetensors"):
        load_vae(DATA / "wan_t2v.fp16.safetensors")


# ---------------------------------------------------------------- pairing
def _known(name: str) -> Detected:
    rec = known_variants()[name]
    return Detected(dict(rec["diffusers_config"]), name, rec)


def test_vae_pairing(tmp_path):
    vae22 = load_vae(write("wan2.2_vae", tmp_path / "wan2.2_vae.safetensors"))
    with pytest.raises(ValueError) as e:
        check_vae(_known("wan2.1_t2v_1.3b"), vae22)
    msg = str(e.value)
    assert msg.startswith("`vae` must have the 16 latent channels Wan 2.1 T2V 1.3B works in")
    assert "wan2.2_vae (48 channels)" in msg and "Use wan_2.1_vae.safetensors" in msg
    check_vae(_known("wan2.2_ti2v_5b"), vae22)  # the right pair passes
    with pytest.raises(ValueError, match="Use wan2.2_vae.safetensors"):
        check_vae(_known("wan2.2_ti2v_5b"), 16)


def test_text_width_pairing():
    te = load_text_encoder(DATA / "umt5_tiny.fp16.safetensors")  # 64 wide
    with pytest.raises(ValueError) as e:
        check_text_encoder(_known("wan2.2_ti2v_5b"), te)
    msg = str(e.value)
    assert msg.startswith("`text_encoder` must output 4096-wide embeddings for Wan 2.2 TI2V 5B")
    assert "umt5_tiny.fp16.safetensors (64 wide)" in msg and "umt5_xxl_fp16.safetensors" in msg
    check_text_encoder(_known("wan2.2_ti2v_5b"), 4096)


def test_i2v_needs_clip_vision():
    with pytest.raises(ValueError) as e:
        check_clip_vision(_known("wan2.1_i2v_14b"), None)
    msg = str(e.value)
    assert msg.startswith("`clip_vision` is required by Wan 2.1 I2V 14B") and "clip_vision_h.safetensors" in msg
    check_clip_vision(_known("wan2.1_i2v_14b"), 1280)
    check_clip_vision(_known("wan2.2_i2v_a14b"), None)  # the 2.2 A14B I2V experts take no CLIP features
    with pytest.raises(ValueError, match="must give 1280-wide image features"):
        check_clip_vision(_known("wan2.1_flf2v_14b"), 1024)


def test_a14b_pair():
    check_pair(_known("wan_t2v_14b"), _known("wan_t2v_14b"))
    with pytest.raises(ValueError, match=r"^`denoiser_2` must be the low-noise partner.*Pick the matching"):
        check_pair(_known("wan_t2v_14b"), _known("wan2.2_i2v_a14b"))
    with pytest.raises(ValueError, match=r"^`denoiser_2` is only used with a Wan 2.2 A14B high-noise expert"):
        check_pair(_known("wan2.1_t2v_1.3b"), _known("wan2.1_t2v_1.3b"))
