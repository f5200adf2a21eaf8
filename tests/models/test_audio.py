"""Audio in the loop: Text to Audio == diffusers' StableAudioPipeline, Video to Audio == LTX2ConditionPipeline's
audio for the same seed (tiny fixtures), exact durations, and the DSP (resampling, channels)."""
from __future__ import annotations

import math

import pytest
import torch

from kinema.models import audio as A
from kinema.models import media
from kinema.models.families import load_audio_model
from kinema.models.sampling import SamplerSettings, sample


@pytest.fixture(scope="module")
def stable_audio(models_dir):
    return load_audio_model(models_dir / "diffusers" / "fixture-stable-audio")


@pytest.fixture(scope="module")
def ltx2(models_dir):
    return load_audio_model(models_dir / "diffusers" / "fixture-ltx2")


def _clip(n=9, size=32, seed=0):
    return torch.rand(n, size, size, 3, generator=torch.Generator().manual_seed(seed))


# ---- equivalence ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("negative,cfg", [("low quality", 6.0), (None, 6.0), (None, 1.0)])
def test_text_to_audio_matches_stable_audio_pipeline(models_dir, stable_audio, negative, cfg):
    from diffusers import StableAudioPipeline
    pipe = StableAudioPipeline.from_pretrained(str(models_dir / "diffusers" / "fixture-stable-audio"),
                                               local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(prompt="a hammer hitting wood", negative_prompt=negative, audio_end_in_s=0.5,
                    num_inference_steps=4, guidance_scale=cfg, generator=torch.Generator("cpu").manual_seed(7)).audios
    out = A.text_to_audio(stable_audio, "a hammer hitting wood", negative or "", 0.5, 4, cfg, seed=7)
    assert out["sample_rate"] == 8000 and out["waveform"].shape == expected.shape == (1, 2, 4000)
    assert torch.allclose(out["waveform"], expected, rtol=0, atol=1e-6), (out["waveform"] - expected).abs().max()


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_video_to_audio_matches_ltx2_condition_pipeline(models_dir, ltx2, cfg):
    """The clip as a condition at strength 1.0: diffusers generates video (kept) and audio; our loop the audio.
    diffusers sizes the audio as round(seconds * 25) latent steps, which its causal decoder turns into 3 mel
    frames less than the clip; ours covers the clip, so its length goes in as `audio_latents` (all zeros:
    with noise_scale 1 the pipeline starts from the same fresh noise)."""
    from diffusers import LTX2ConditionPipeline
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
    pipe = LTX2ConditionPipeline.from_pretrained(str(models_dir / "diffusers" / "fixture-ltx2"), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    frames, fps = _clip(), 25.0
    need = media.samples_for_frames(9, fps, ltx2.sample_rate)
    steps = ltx2.audio_latent_steps(need)
    _, expected = pipe(conditions=[LTX2VideoCondition(frames=(frames * 255).numpy(), index=0, strength=1.0)],
                       prompt="a drum", negative_prompt="noise", height=32, width=32, num_frames=9, frame_rate=fps,
                       num_inference_steps=3, guidance_scale=cfg, audio_guidance_scale=cfg, stg_scale=0.0,
                       audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0, guidance_rescale=0.0,
                       audio_guidance_rescale=0.0, spatio_temporal_guidance_blocks=None,
                       audio_latents=torch.zeros(1, 2, steps, 2), generator=torch.Generator("cpu").manual_seed(7),
                       output_type="np", return_dict=False)
    out = A.video_to_audio(ltx2, frames, fps, "a drum", "noise", num_inference_steps=3, guidance_scale=cfg, seed=7)
    assert out["waveform"].shape == (1, 2, need) == (1, 2, 5760) and expected.shape[-1] >= need
    assert torch.allclose(out["waveform"], expected[..., :need], rtol=0, atol=1e-6)


# ---- durations and sync ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("frames,fps,samples", [(17, 16.0, 17000), (81, 16.0, 81000), (10, 29.97, 5339),
                                                (1, 24.0, 667)])
def test_samples_for_frames_is_exact(frames, fps, samples):
    assert media.samples_for_frames(frames, fps, 16000) == samples


def test_audio_latent_steps_are_the_fewest_that_cover_the_clip(ltx2):
    decoded = lambda steps: ltx2.decode(torch.zeros(1, ltx2.latent_channels, steps)).shape[-1]
    for need in (1, 159, 161, 800, 5339, 17000):
        steps = ltx2.audio_latent_steps(need)
        assert decoded(steps) >= need and (steps == 1 or decoded(steps - 1) < need), need


def test_video_to_audio_lasts_frames_over_fps_and_follows_the_video(ltx2):
    odd = A.video_to_audio(ltx2, _clip(10, 20), 29.97, num_inference_steps=1, guidance_scale=1.0)
    assert odd["waveform"].shape == (1, 2, 5339) and odd["sample_rate"] == 16000   # 10 frames / 29.97 fps
    run = lambda clip, seed=3: A.video_to_audio(ltx2, clip, 25.0, "rain", num_inference_steps=2,
                                                guidance_scale=1.0, seed=seed)["waveform"]
    a = run(_clip(seed=1))
    assert torch.equal(a, run(_clip(seed=1)))                        # reproducible
    assert not torch.equal(a, run(_clip(seed=2)))                    # the sound depends on the frames
    assert not torch.equal(a, run(_clip(seed=1), seed=4))


def test_loop_drives_audio_latents_with_progress(stable_audio):
    seen = []
    settings = SamplerSettings(num_inference_steps=3, guidance_scale=1.0, audio_length_in_s=0.25)
    latents = sample(stable_audio, stable_audio.encode_prompt("x"), None, settings,
                     on_step=lambda i, total, x: seen.append((i, total, tuple(x.shape))))
    assert latents.shape == (1, 3, 1024)                              # (1, C, T): the model's whole window
    assert seen == [(i, 3, (1, 3, 1024)) for i in (1, 2, 3)]


@pytest.mark.parametrize("call,match", [
    (lambda sa, lt: A.text_to_audio(sa, "x", "", 2.0, 1, 1.0), "at most 1.02"),
    (lambda sa, lt: A.text_to_audio(lt, "x", "", 0.5, 1, 1.0), "LTX-2 needs a video"),
    (lambda sa, lt: A.video_to_audio(sa, _clip(), 16.0), "Load a video-to-audio model"),
    (lambda sa, lt: A.video_to_audio(lt, _clip(), 0.0), "`fps`"),
    (lambda sa, lt: A.video_to_audio(lt, torch.rand(9, 32, 32), 16.0), "`images`"),
])
def test_bad_requests_are_rejected_with_a_fix(stable_audio, ltx2, call, match):
    with pytest.raises(ValueError, match=match):
        call(stable_audio, ltx2)


def test_context_windows_are_refused_for_audio(stable_audio):
    from kinema.models.windows import ContextOptions
    settings = SamplerSettings(num_inference_steps=1, audio_length_in_s=0.25)
    with pytest.raises(ValueError, match="`context`"):
        sample(stable_audio, stable_audio.encode_prompt("x"), None, settings, context=ContextOptions())


# ---- DSP ------------------------------------------------------------------------------------------------------
def _tones(rate, seconds=0.5):
    t = torch.arange(round(rate * seconds), dtype=torch.float64) / rate
    return torch.stack([0.5 * torch.sin(2 * math.pi * 440 * t), 0.25 * torch.sin(2 * math.pi * 1500 * t)]).float()


@pytest.mark.parametrize("orig,new", [(44100, 16000), (44100, 48000), (16000, 44100), (48000, 8000),
                                      (22050, 22051)])
def test_resample_is_accurate_on_sines(orig, new):
    out = A.resample(_tones(orig), orig, new)
    assert out.shape == (2, math.ceil(round(orig * 0.5) * new / orig))
    edge = 64                                                        # zero padding outside the clip
    assert (out - _tones(new, out.shape[-1] / new))[:, edge:-edge].abs().max() < 1e-3


def test_resample_removes_what_the_new_rate_cannot_hold():
    t = torch.arange(48000) / 48000
    alias = torch.sin(2 * math.pi * 12000 * t)[None]                 # above 8 kHz Nyquist of 16 kHz
    assert A.resample(alias, 48000, 16000)[:, 64:-64].abs().max() < 0.01


def test_channels():
    stereo = torch.stack([torch.ones(10), -torch.ones(10)])[None]  # (1, 2, 10)
    assert A.set_channels(stereo, "mono").abs().max() == 0
    assert A.set_channels(stereo[:, :1], "stereo").shape == (1, 2, 10)
    assert A.set_channels(torch.rand(1, 6, 5), "stereo").shape == (1, 2, 5)
    with pytest.raises(ValueError, match="`channels`"):
        A.set_channels(stereo, "surround")
