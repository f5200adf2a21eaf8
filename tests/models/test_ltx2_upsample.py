"""LTX-2's latent upsampler (families/ltx2_upsample.py) on tiny fixtures: fixture-ltx2 and fixture-ltx2-upsampler
(models/fixtures.build_ltx2_upsampler: the same VAE, a 2x spatial LTX2LatentUpsamplerModel).

- The upsampled latents == LTX2LatentUpsamplePipeline(output_type="latent"), and the refine at the new size ==
  LTX2Pipeline(latents=those, audio_latents=the clip's sound, sigmas=the retained tail, noise_scale=its first),
  within 1e-5 — the diffusers two-stage recipe.
- A temporal upsampler doubles the frames (f -> 2f - 1 latent frames) and the fps: the sound keeps its duration.
- Load Upscale Model lists and loads the folder; Latent Upscale and Video Upscale (learned path) run it.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from kinema.models.families import load_model
from kinema.models.families.ltx2_upsample import LTX2LatentUpsampler, latent_upscale
from kinema.models.joint import sample_clip
from kinema.models.sampling import SamplerSettings
from kinema.models.upscale import load_upscaler

OFF = dict(stg_scale=0.0, audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0, guidance_rescale=0.0,
           audio_guidance_rescale=0.0, spatio_temporal_guidance_blocks=None)


@pytest.fixture(scope="module")
def model(models_dir, one_thread):
    return load_model(models_dir / "diffusers" / "fixture-ltx2")


@pytest.fixture(scope="module")
def upsampler(models_dir):
    return load_upscaler(models_dir / "diffusers" / "fixture-ltx2-upsampler")


@pytest.fixture(scope="module")
def stage1(model):
    settings = SamplerSettings(num_frames=9, height=32, width=32, num_inference_steps=2, guidance_scale=1.0, seed=1,
                               frame_rate=Fraction(24))
    clip = sample_clip(model, model.encode_prompt("a cat"), None, settings)
    return {"samples": clip.video, "kinema_frames": 9, "kinema_fps": Fraction(24), "kinema_audio": clip.audio_latents}


def _raw(model, latents):
    vae = model.vae
    return model.pipe._denormalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_upsample_and_refine_equal_the_diffusers_two_stage_recipe(model, upsampler, stage1, cfg):
    from diffusers import LTX2LatentUpsamplePipeline, LTX2Pipeline
    p = model.pipe
    assert isinstance(upsampler, LTX2LatentUpsampler) and upsampler.scale == 2 and not upsampler.temporal
    ups = LTX2LatentUpsamplePipeline(vae=upsampler.vae, latent_upsampler=upsampler.net)
    ups.set_progress_bar_config(disable=True)
    big = ups(latents=_raw(model, stage1["samples"]), height=32, width=32, num_frames=9, output_type="latent",
              return_dict=False)[0]
    assert big.shape == (1, 4, 5, 32, 32)
    assert (_raw(model, upsampler.upsample(model, stage1["samples"])) - big).abs().max() < 1e-5
    out = latent_upscale(model, upsampler, stage1, model.encode_prompt("a cat"), model.encode_prompt("blur"), 8,
                         cfg, 5, 0.375)
    assert out["samples"].shape == (1, 4, 5, 32, 32) and out["kinema_frames"] == 9
    steps = stage1["kinema_audio"].shape[1]
    audio = p._unpack_audio_latents(p._denormalize_audio_latents(stage1["kinema_audio"], model.audio_vae.latents_mean,
                                                                 model.audio_vae.latents_std), steps,
                                    model.latent_mel_bins)
    sigmas = [float(s) for s in np.linspace(1.0, 1 / 8, 8)[5:]]                         # the last 3 of 8
    pipe = LTX2Pipeline(**{k: getattr(p, k) for k in ("scheduler", "vae", "audio_vae", "text_encoder", "tokenizer",
                                                      "connectors", "transformer", "vocoder")})
    pipe.set_progress_bar_config(disable=True)
    video, sound = pipe(prompt="a cat", negative_prompt="blur", latents=big, audio_latents=audio, height=64,
                        width=64, num_frames=9, frame_rate=24.0, num_inference_steps=3, sigmas=sigmas,
                        noise_scale=sigmas[0], guidance_scale=cfg, audio_guidance_scale=cfg, **OFF,
                        generator=torch.Generator().manual_seed(5), output_type="latent", return_dict=False)
    assert (_raw(model, out["samples"]) - video).abs().max() < 1e-5
    ours = p._unpack_audio_latents(p._denormalize_audio_latents(out["kinema_audio"], model.audio_vae.latents_mean,
                                                                model.audio_vae.latents_std), steps,
                                   model.latent_mel_bins)
    assert (ours - sound).abs().max() < 1e-5


def test_temporal_upsampler_doubles_frames_and_fps_and_keeps_the_sound(model, stage1, tmp_path):
    from kinema.models.fixtures import build_ltx2_upsampler
    pipe = build_ltx2_upsampler(temporal=True)
    up = LTX2LatentUpsampler(tmp_path, torch.device("cpu"), torch.float32, pipe)
    assert up.temporal
    out = latent_upscale(model, up, stage1, model.encode_prompt("a cat"), None, 8, 1.0, 5, 0.375)
    assert out["samples"].shape == (1, 4, 9, 32, 32) and out["kinema_frames"] == 17 and out["kinema_fps"] == 48
    from kinema.models.joint import decode_sound
    a, b = decode_sound(model, stage1), decode_sound(model, out)
    assert a["waveform"].shape[-1] == 6000 and b["waveform"].shape[-1] == round(17 / 48 * 16000)   # 0.375 / 0.354 s
    assert not torch.equal(out["samples"], latent_upscale(model, up, stage1, model.encode_prompt("a cat"), None, 8,
                                                          1.0, 5, 0.0)["samples"])     # the refine redraws


def test_upscaler_alone_goes_through_its_own_vae(upsampler):
    frames = torch.rand(9, 16, 24, 3, generator=torch.Generator().manual_seed(0))
    out = upsampler.upscale(frames)
    assert out.shape == (9, 32, 48, 3) and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError, match="`images`"):
        upsampler.upscale(frames[:8])


def test_nodes_load_upsample_refine_and_video_upscale(model, kinema_dirs):
    from kinema.nodes.decode import KinemaLatentUpscale
    from kinema.nodes.edit import KinemaVideoUpscale
    from kinema.nodes.loaders import KinemaLoadUpscaleModel, _upscale_models
    from kinema.nodes.sampling import KinemaTemporalSampler
    names = _upscale_models()
    assert "fixture-ltx2-upsampler" in names and "fixture-ltx2" not in names
    (up,) = KinemaLoadUpscaleModel().load("fixture-ltx2-upsampler", "cpu", "fp32")
    pos, neg = model.encode_prompt("waves"), model.encode_prompt("")
    (latent,) = KinemaTemporalSampler().sample(model, pos, neg, 9, 32, 32, 2, 1.0, 3, "default", 0.0, 1.0)
    (big,) = KinemaLatentUpscale().upscale(model, up, latent, pos, neg, 8, 1.0, 0, 0.375)
    assert big["samples"].shape == (1, 4, 5, 32, 32) and big["kinema_audio"].shape == latent["kinema_audio"].shape
    frames = model.decode(latent["samples"])                                          # (9, 32, 32, 3)
    (images,) = KinemaVideoUpscale().upscale(frames, "x2", 0.375, 8, 1.0, 0, 0, model=model, positive=pos,
                                             negative=neg, upscaler=up)
    assert images.shape == (9, 64, 64, 3)
    with pytest.raises(ValueError, match="`factor`"):
        KinemaVideoUpscale().upscale(frames, "x4", 0.375, 8, 1.0, 0, 0, model=model, positive=pos, upscaler=up)
    with pytest.raises(ValueError, match="`upscaler`"):
        latent_upscale(model, object(), latent, pos, None, 8, 1.0, 0, 0.375)
