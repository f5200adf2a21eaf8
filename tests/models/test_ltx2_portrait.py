"""Audio-driven portrait on LTX-2 (families/ltx2_portrait.py + models/portrait.py), on a tiny random LTX-2.

- One window through Kinema's loop == diffusers' LTX2DFRPipeline with the speech latents frozen
  (`audio_latents=..., freeze_audio=True`), the portrait as the latent-index-0 condition, no keyframe slots, the
  same sigmas and seed.
- The speech conditions the picture: other speech, same seed -> other frames.
- Length: frames = ceil(seconds x fps) exactly, through windows of valid (2k+1 here, 8k+1 for LTX-2) lengths.
- Errors: an unsupported folder, identity_strength, a bad overlap.

The fixture is fixture-ltx2 (models/fixtures.build_ltx2): its audio VAE compresses 4x in time and mel
(LATENT_DOWNSAMPLE_FACTOR, which diffusers' LTX-2 pipelines assume), so encoded speech has the transformer's audio
width.
"""
from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from kinema.models.families import load_portrait_model
from kinema.models.families.base import PortraitWindow
from kinema.models.families.ltx2_portrait import window_plan
from kinema.models.portrait import animate_portrait, animate_portrait_windows
from kinema.models.sampling import SamplerSettings, sample


@pytest.fixture(scope="module")
def folder(models_dir):
    return models_dir / "diffusers" / "fixture-ltx2"


@pytest.fixture(scope="module")
def model(folder):
    m = load_portrait_model(folder)
    m.long_side, m.default_frames = 32, 9         # tiny: 32x32, windows of 9 frames (2k+1: the fixture VAE is 2x)
    return m


def _portrait(seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(low, size=(48, 40), mode="bilinear").permute(0, 2, 3, 1)  # (1, 48, 40, 3)


def _speech(seconds: float, pitch: float = 180.0, syllables: float = 3.0, rate: int = 16000) -> torch.Tensor:
    t = torch.arange(round(seconds * rate)) / rate
    return (0.5 * torch.sin(2 * math.pi * pitch * t) * (torch.sin(2 * math.pi * syllables * t) > 0)).view(1, -1)


def test_one_window_equals_ltx2_dfr_pipeline_with_frozen_audio(model):
    from diffusers import LTX2DFRPipeline
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
    from kinema.models.families.ltx2_portrait import portrait_array
    image, prompt, steps, seed, fps = _portrait(), "a person talking", 3, 7, Fraction(25)
    h, w = model.portrait_size(image.shape[1], image.shape[2])
    assert (h, w) == (32, 32)             # multiples of 32, as the pipelines require
    audio = model.speech_latents(model.speech_waveform(_speech(0.5), 16000), 0, model.audio_steps(9, fps))
    assert audio.shape == (1, 2, 9, 2)                                     # (1, C, L, M): 9 frames = 9 steps at 25 fps
    # ours: the loop, one window
    positive = model.encode_prompt(prompt)
    cond = positive.replace(portrait=PortraitWindow(audio=audio, portrait=model.encode_portrait(image, h, w, 9)))
    settings = SamplerSettings(num_frames=9, height=h, width=w, num_inference_steps=steps, guidance_scale=1.0,
                               seed=seed, frame_rate=fps)
    latents = sample(model, cond, None, settings)
    frames = model.decode(latents)                                         # (9, h, w, 3)
    # diffusers: the DFR pipeline built from the same components (the folder is an LTX2Pipeline one)
    p = model.pipe
    dfr = LTX2DFRPipeline(scheduler=p.scheduler, vae=p.vae, audio_vae=p.audio_vae, text_encoder=p.text_encoder,
                          tokenizer=p.tokenizer, connectors=p.connectors, transformer=p.transformer, vocoder=p.vocoder)
    dfr.set_progress_bar_config(disable=True)
    kwargs = dict(prompt=prompt, conditions=[LTX2VideoCondition(frames=portrait_array(image), index=0, strength=1.0)],
                  height=h, width=w, num_frames=9, frame_rate=25.0, audio_latents=audio, freeze_audio=True,
                  generate_slots=False, sigmas=[float(s) for s in np.linspace(1.0, 1 / steps, steps)],
                  return_dict=False)
    expected_latents = dfr(**kwargs, generator=torch.Generator().manual_seed(seed), output_type="latent")[0]
    expected = dfr(**kwargs, generator=torch.Generator().manual_seed(seed), output_type="pt")[0]  # (1, F, 3, H, W)
    ours = p._denormalize_latents(latents, p.vae.latents_mean, p.vae.latents_std, p.vae.config.scaling_factor)
    latent_diff = (ours - expected_latents).abs().max().item()
    frame_diff = (frames - expected[0].permute(0, 2, 3, 1)).abs().max().item()
    print(f"\nmax abs diff vs LTX2DFRPipeline: latents {latent_diff:.2e}, frames {frame_diff:.2e}")
    assert latent_diff < 1e-4 and frame_diff < 1e-4
    assert torch.equal(latents[:, :, :1], cond.portrait.portrait)          # the portrait frame held clean


def test_speech_conditions_the_frames(model):
    run = lambda wav, seed=3: animate_portrait(model, _portrait(), wav, 16000, 25, seed=seed, num_inference_steps=2)
    a, b = _speech(0.6, 180, 3), _speech(0.6, 300, 7)
    first, again, other = run(a), run(a), run(b)
    assert torch.equal(first, again)                                          # same seed and speech: same clip
    assert (first[1:] - other[1:]).abs().max() > 1e-3                         # other speech: other motion
    guided = animate_portrait(model, _portrait(), a, 16000, 25, seed=3, num_inference_steps=2, guidance_scale=3.0,
                              prompt="a person singing")
    assert guided.shape == first.shape and (guided - first).abs().max() > 1e-3    # prompt guidance runs
    # (frame 0 is the portrait's latent frame either way; the fixture's non-causal decoder still blends it a
    # little with its neighbours, so it is not compared here: test_one_window... checks the latent is held)


def test_silence_before_and_after_is_the_clock(model):
    """Latent step i is the sound at i / 25 s: a window's steps, encoded alone from its slice with context,
    match the same steps encoded within a longer span."""
    wave = model.speech_waveform(_speech(3.0), 16000)
    whole = model.speech_latents(wave, 0, 75)                            # the 3 s at once
    alone = model.speech_latents(wave, 50, 25)                           # its last second, from 0.72 s on
    assert alone.shape == (1, 2, 25, 2)
    assert (alone - whole[:, :, 50:]).abs().max() < 1e-5
    short = model.speech_latents(wave, 50, 10)                           # a window ending inside the speech
    assert (short - whole[:, :, 50:60]).abs().max() < 1e-5


@pytest.mark.parametrize("num_frames", [1, 2, 9, 10, 25, 75, 76, 121, 250])
@pytest.mark.parametrize("ratio, window, overlap", [(2, 9, 2), (8, 121, 8), (8, 25, 16)])
def test_window_plan_covers_every_frame_once_with_valid_lengths(num_frames, ratio, window, overlap):
    plan = window_plan(num_frames, ratio, window, overlap)
    made = 0
    for k, (length, base, skip) in enumerate((w.length, w.base, w.skip) for w in plan):
        assert (length - 1) % ratio == 0 and 1 < length <= window         # valid for the causal VAE
        assert base + skip == made and skip == (0 if k == 0 else overlap + 1)
        made = base + length
    assert 0 <= made - num_frames <= ratio                              # only the last window's tail is dropped


@pytest.mark.parametrize("seconds, frames", [(1.0, 25), (3.0, 75)])
def test_frames_follow_the_audio_exactly(model, seconds, frames, monkeypatch):
    decoded = []                                           # each window's latents, as the loop returns them
    decode = model.decode
    monkeypatch.setattr(model, "decode", lambda latents: decoded.append(latents.clone()) or decode(latents))
    wav = _speech(seconds)
    starts, total = [], 0
    for start, new in animate_portrait_windows(model, _portrait(), wav, 16000, 25, num_inference_steps=1):
        assert start == total and new.shape[1:] == (32, 32, 3)
        starts.append(start)
        total += len(new)
    assert total == frames == math.ceil(seconds * 25)
    assert len(starts) == len(decoded) == len(window_plan(frames, 2, 9, 2)) > 1   # windows were used
    portrait = decoded[0][:, :, :1]
    for prev, cur in zip(decoded, decoded[1:]):
        assert torch.equal(cur[:, :, :1], portrait)                    # the portrait again in every window
        assert torch.equal(cur[:, :, 1:2], prev[:, :, -1:])            # the overlap: the last latent frame, held


def test_mel_filters_are_slaney_triangles():
    from kinema.models.families.ltx2_portrait import slaney_mel_filters
    fb = slaney_mel_filters(16000, 1024, 64)                           # (513, 64), LTX-2's front end
    assert fb.shape == (513, 64) and (fb >= 0).all()
    peaks = fb.argmax(0)
    assert (peaks[1:] >= peaks[:-1]).all() and peaks[-1] > 450
    hz = 16000 / 1024
    wide = (fb > 0).sum(0) >= 8                                        # well-sampled triangles have area 1
    assert ((fb.sum(0) * hz)[wide] - 1).abs().max() < 0.05


def test_odd_length_and_rate(model):
    wav = _speech(0.6, rate=44100)[:, :22051]                              # 0.500022 s -> ceil(12.0005) = 13 frames
    assert animate_portrait(model, _portrait(), wav, 44100, 24, num_inference_steps=1).shape[0] == 13


def test_unsupported_folder_and_bad_requests(model, tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    with pytest.raises(ValueError, match="`model` must be a portrait model folder .*got 'WanPipeline'"):
        load_portrait_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_portrait_model(tmp_path / "missing")
    wav = _speech(0.2)
    with pytest.raises(ValueError, match="`identity_strength` must be 1.0"):
        animate_portrait(model, _portrait(), wav, 16000, 25, identity_strength=1.5)
    with pytest.raises(ValueError, match="`overlap` must be a positive multiple of 2"):
        animate_portrait(model, _portrait(), wav, 16000, 25, overlap=3)


def test_nodes_list_load_and_animate_an_ltx2_folder(folder, model):
    from kinema.nodes import env, loaders
    from kinema.nodes import portrait as nodes
    with env.using(env.Folders.of(models=folder.parent.parent)):
        names = loaders.KinemaLoadPortraitModel.INPUT_TYPES()["required"]["model"][0]
        assert "fixture-ltx2" in names and "kinema-tiny-portrait" in names
        loaded, = loaders.KinemaLoadPortraitModel().load("fixture-ltx2", "cpu", "fp32")
        assert loaded.name == "ltx2_portrait" and loaded.temporal_ratio == 2
    audio = {"waveform": _speech(0.5).view(1, 1, -1), "sample_rate": 16000}
    images, = nodes.KinemaPortraitAnimate().animate(model, _portrait(), audio, 25.0, 0, 1, 1.0, 1.0, "a smile")
    assert images.shape == (13, 32, 32, 3) and 0 <= images.min() and images.max() <= 1
