"""Whole models from ComfyUI's split files (kinema.models.files.load_wan_files): sets written by ComfyUI's own
classes (tests/data/comfy, tools/make_comfy_reference.py) assemble into the Wan family every node takes, and its
text encoding, CLIP image tokens and denoiser call reproduce ComfyUI's output on the same prompt and image; the
pairings are refused from the headers with the input and the fix named; the text encoder follows
text_encoder_memory.

Tolerance: 1e-4 absolute (float32 on both sides, outputs ~4).
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from kinema.models.files.family import TextEncoderFile, WanFiles, load_wan_files

from comfy_recipe import DATA, write

REF = load_file(str(DATA / "reference.safetensors"))
META = json.loads((DATA / "reference.json").read_text())
PROMPT = META["umt5"]["prompts"][0]
TOL = 1e-4


@pytest.fixture(scope="module")
def comfy_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("comfy_models")
    return {name: write(name, d / f"{name}.safetensors") for name in
            ("set_t2v", "set_i2v", "clip_vision_h_tiny", "wan_2.1_vae", "wan2.2_vae", "wan_vace")}


def _files(comfy_files, denoiser="set_t2v", **kw) -> WanFiles:
    return WanFiles(comfy_files[denoiser], DATA / "umt5_tiny.fp16.safetensors", comfy_files["wan_2.1_vae"], **kw)


def test_t2v_set_reproduces_comfyui(one_thread, comfy_files):
    model = load_wan_files(_files(comfy_files), strict=False)
    assert type(model).__name__ == "WanFamily" and not model.image_to_video and model.boundary is None
    assert model.latent_channels == 16 and model.spatial_ratio == 8 and model.temporal_ratio == 4
    assert model.default_scheduler.config.flow_shift == 3.0   # no known variant: the shipped Wan default
    cond = model.encode_prompt(PROMPT)
    assert cond.embeds.shape == (1, 512, 64)
    x, t = REF["set_t2v.x"], REF["set_t2v.t"]
    with torch.no_grad():
        out = model.predict(x, t, {"encoder_hidden_states": cond.embeds})
    assert (out - REF["set_t2v.out"]).abs().max().item() < TOL


def test_i2v_set_with_clip_vision_reproduces_comfyui(one_thread, comfy_files):
    model = load_wan_files(_files(comfy_files, "set_i2v", clip_vision=comfy_files["clip_vision_h_tiny"]), strict=False)
    assert model.image_to_video and model.capabilities.image_condition
    assert type(model.pipe).__name__ == "WanImageToVideoPipeline"
    cond = model.encode_prompt(PROMPT)
    with torch.no_grad():   # ComfyUI's preprocessed pixels: the CLIP tower and the denoiser are what is compared
        tokens = model.pipe.image_encoder(pixel_values=REF["set_i2v.pixels"], output_hidden_states=True).hidden_states[-2]
        assert (tokens - REF["set_i2v.clip_fea"]).abs().max().item() < TOL
        x, t = REF["set_i2v.x"], REF["set_i2v.t"]
        out = model.predict(x[:, :16], t, {"encoder_hidden_states": cond.embeds, "encoder_hidden_states_image": tokens,
                                           "condition": x[:, 16:]})   # ComfyUI: cat([x, mask, image latents])
    assert (out - REF["set_i2v.out"]).abs().max().item() < TOL


def test_i2v_runs_end_to_end(one_thread, comfy_files):
    """Image to video from files: prompt, start image (resized by the pipeline's CLIP processor), sampled, decoded."""
    from kinema.models.sampling import SamplerSettings, sample
    model = load_wan_files(_files(comfy_files, "set_i2v", clip_vision=comfy_files["clip_vision_h_tiny"]), strict=False)
    pos = model.encode_prompt(PROMPT).with_image(REF["clip_vision.image"])
    settings = SamplerSettings(num_frames=5, height=32, width=32, num_inference_steps=2, guidance_scale=1.0, seed=0)
    latents = sample(model, pos, None, settings)
    frames = model.decode(latents)
    assert latents.shape == (1, 16, 2, 4, 4) and frames.shape == (5, 32, 32, 3)
    assert torch.isfinite(frames).all()


def test_a14b_pair(one_thread, comfy_files):
    """Two experts: high noise (`denoiser`) above the boundary, low noise (`denoiser_2`) below it."""
    pair = load_wan_files(_files(comfy_files, denoiser_2=comfy_files["set_t2v"]), strict=False)
    assert pair.transformer_2 is not None and pair.transformer_2 is not pair.transformer
    assert pair.boundary == 0.875 * 1000   # Wan 2.2 T2V A14B's switch (no known variant: the T2V default)
    assert pair.default_scheduler.config.flow_shift == 3.0


def test_ti2v_with_the_22_vae_is_timestep_conditioned(comfy_files, tmp_path):
    """A 48-channel denoiser with wan2.2_vae: Wan 2.2 TI2V's expand_timesteps, 16x spatial."""
    sd = load_file(str(comfy_files["set_t2v"]))
    sd["patch_embedding.weight"] = torch.randn(128, 48, 1, 2, 2).half()
    sd["head.head.weight"] = torch.randn(4 * 48, 128).half()
    sd["head.head.bias"] = torch.zeros(4 * 48).half()
    from safetensors.torch import save_file
    save_file(sd, tmp_path / "ti2v.safetensors")
    model = load_wan_files(WanFiles(tmp_path / "ti2v.safetensors", DATA / "umt5_tiny.fp16.safetensors",
                                    comfy_files["wan2.2_vae"]), strict=False)
    assert model.expand_timesteps and model.latent_channels == 48 and model.spatial_ratio == 16


def test_text_encoder_memory(one_thread, comfy_files):
    model = load_wan_files(_files(comfy_files), strict=False, text_encoder_memory="free")
    side = model.text_encoder_file
    assert side.resident is None and side.loads == 0          # nothing read before the first prompt
    a = model.encode_prompt(PROMPT)
    assert side.resident is None and model.pipe.text_encoder is None and side.loads == 1   # freed after it
    b = model.encode_prompt("a different prompt")             # a changed prompt reloads it from the file
    assert side.loads == 2 and not torch.equal(a.embeds, b.embeds)
    assert torch.equal(model.encode_prompt(PROMPT).embeds, a.embeds)
    kept = load_wan_files(_files(comfy_files), strict=False, text_encoder_memory="keep")
    kept.encode_prompt(PROMPT)
    kept.encode_prompt("another")
    assert kept.text_encoder_file.loads == 1 and kept.text_encoder_file.resident == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^`text_encoder_memory` must be one of"):
        TextEncoderFile(DATA / "umt5_tiny.fp16.safetensors", torch.float32, "cpu", "sometimes")


def test_pairings_refused_from_headers(comfy_files, tmp_path):
    """Wrong sets are refused before any weight is read, naming the input and the fix."""
    cases = [
        (WanFiles(comfy_files["set_t2v"], DATA / "umt5_tiny.fp16.safetensors", comfy_files["wan2.2_vae"]),
         "`vae` must have the 16 latent channels",
         "wan_2.1_vae.safetensors"),
        (WanFiles(comfy_files["wan_vace"], DATA / "umt5_tiny.fp16.safetensors", comfy_files["wan_2.1_vae"]),
         "`text_encoder` must output 32-wide embeddings", "umt5_xxl_fp16.safetensors"),
        (_files(comfy_files, "set_i2v"), "`clip_vision` is required by", "clip_vision_h.safetensors"),
        (_files(comfy_files, clip_vision=comfy_files["clip_vision_h_tiny"]), "`clip_vision` is not used by",
         "Leave clip_vision empty"),
        (_files(comfy_files, denoiser_2=comfy_files["set_i2v"]), "`denoiser_2` must be the low-noise partner",
         "Pick the matching *_low_noise_14B file"),
        (_files(comfy_files, "set_i2v", clip_vision=DATA / "clip_vision_tiny.fp16.safetensors"),
         "`clip_vision` must give 1280-wide image features", "clip_vision_h.safetensors"),
        (WanFiles(comfy_files["set_t2v"], comfy_files["wan_2.1_vae"], comfy_files["wan_2.1_vae"]),
         "`text_encoder` is not a T5/UMT5 text encoder file", "umt5_xxl_fp16"),
        (WanFiles(DATA / "umt5_tiny.fp16.safetensors", DATA / "umt5_tiny.fp16.safetensors",
                  comfy_files["wan_2.1_vae"]), "`denoiser` is not a Wan denoiser file", "diffusion_models/"),
    ]
    for files, start, fix in cases:
        with pytest.raises(ValueError) as e:
            load_wan_files(files, strict=False)
        assert str(e.value).startswith(start) and fix in str(e.value), str(e.value)
    with pytest.raises(ValueError, match=r"^`weight_dtype` must be one of"):
        load_wan_files(_files(comfy_files), strict=False, weight_dtype="int4")


def test_weight_dtype_choices():
    """weight_dtype auto keeps a ComfyUI scaled-fp8 file in fp8 (with its scales: test_files_storage.py), and other
    files in the compute dtype; fp8 quantises a 16-bit file; fp16/bf16 are 16-bit whatever the file."""
    from kinema.models.files.family import _storage
    from kinema.models.files.formats import open_tensors
    with open_tensors(DATA / "wan_t2v.fp8_scaled.safetensors") as f:
        assert _storage("auto", f, torch.bfloat16) == torch.float8_e4m3fn
        assert _storage("bf16", f, torch.float32) == torch.bfloat16
    with open_tensors(DATA / "wan_t2v.fp16.safetensors") as f:
        assert _storage("auto", f, torch.bfloat16) == torch.bfloat16
        assert _storage("fp8", f, torch.bfloat16) == torch.float8_e4m3fn


# ---------------------------------------------------------------- `kinema fixtures`' files (ComfyUI's layout)
def _fixture_files(models_dir, denoiser="fixture_wan_t2v") -> WanFiles:
    return WanFiles(models_dir / "diffusion_models" / f"{denoiser}.safetensors",
                    models_dir / "text_encoders" / "fixture_umt5.safetensors",
                    models_dir / "vae" / "fixture_wan_2.1_vae.safetensors")


@pytest.mark.parametrize("folder,denoiser", [("fixture-wan-t2v", "fixture_wan_t2v"),
                                             ("fixture-wan-vace", "fixture_wan_vace")])
def test_fixture_files_sample_exactly_like_the_folder(one_thread, models_dir, folder, denoiser):
    """The same tiny model as a diffusers folder and as ComfyUI's three files (written by `kinema fixtures`): the
    assembled family encodes, samples and decodes identically (same scheduler asked for)."""
    from kinema.models.families import load_model
    from kinema.models.files.family import is_fixture
    from kinema.models.sampling import SamplerSettings, sample
    files = _fixture_files(models_dir, denoiser)
    assert is_fixture(files.denoiser) and not is_fixture(DATA / "wan_t2v.fp16.safetensors")
    settings = SamplerSettings(num_frames=5, height=32, width=32, num_inference_steps=3, guidance_scale=5.0, seed=3,
                               scheduler="flow_euler", shift=7.0)
    outs = []
    for model in (load_model(models_dir / "diffusers" / folder), load_wan_files(files, strict=False)):
        pos, neg = model.encode_prompt("a paper boat drifts"), model.encode_prompt("blurry")
        latents = sample(model, pos, neg, settings)
        outs.append((type(model).__name__, pos.embeds, latents, model.decode(latents)))
    (name_a, emb_a, lat_a, img_a), (name_b, emb_b, lat_b, img_b) = outs
    assert name_a == name_b and torch.equal(emb_a, emb_b)
    assert torch.allclose(lat_a, lat_b, atol=1e-5) and torch.allclose(img_a, img_b, atol=1e-5)
