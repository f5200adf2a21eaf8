"""Kinema-Tiny Audio: the bundled video-to-audio model, its data, its detectors and the measured sync.

Sync floors sit a little under what docs/kinema_tiny_audio.md reports (`python -m training.tiny.audio_sync`);
here on fewer clips, to keep the file quick.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from kinema.models.audio import video_to_audio
from kinema.models.families import AUDIO, load_audio_model, load_model
from kinema.models.tiny.audio_model import DEFAULT_WEIGHTS
from kinema.models.tiny.pipeline import DEFAULT_WEIGHTS as VIDEO_WEIGHTS
from training.tiny import audio_data as D
from training.tiny import audio_sync as S

FPS, STEPS, CFG = 8.0, 20, 8.0        # the bundled workflow's settings


@pytest.fixture(scope="module")
def model():
    return load_audio_model(DEFAULT_WEIGHTS)


def test_bundled_folder_is_small_fp16_and_detected():
    from safetensors.torch import load_file
    files = list(DEFAULT_WEIGHTS.rglob("*.safetensors"))
    assert len(files) == 2 and sum(f.stat().st_size for f in files) < 2_000_000
    assert all(v.dtype == torch.float16 for f in files for v in load_file(str(f)).values())
    assert AUDIO.detect(DEFAULT_WEIGHTS) == "kinema_tiny_audio" and "kinema_tiny_audio" in AUDIO


def test_detectors_recover_rendered_impacts_and_synthesized_onsets():
    """The measuring tools, checked against ground truth: pixel impacts are the clip's inner impacts (a rare one
    is not visible: a short hop between drifting floors), onsets of the synthesized sound on the impact frames,
    no onsets on impact-free clips."""
    g = torch.Generator().manual_seed(7)
    counts, truth, found = S.SyncCounts(), 0, 0
    for kind in ("floor", "walls", "none") * 3:
        clip = D.random_clip(g, 25, kind)
        frames = D.render_track(clip.spec, clip.track).permute(1, 2, 3, 0).numpy()       # (F, H, W, 3)
        inner, boundary = S.impacts_from_track(S.centroid_track(frames))
        gt = [k for k in clip.impacts if 0 < k < 24]
        assert set(inner) <= set(gt), (kind, inner, clip.impacts)
        truth, found = truth + len(gt), found + len(inner)
        onsets = S.detect_onsets(D.synthesize(clip, FPS, 25_000, g).numpy(), D.SAMPLE_RATE)
        assert len(onsets) == len(clip.impacts)
        counts.add(inner, boundary, onsets, FPS)
    s = counts.summary()
    assert found >= 0.9 * truth and truth >= 15
    assert s["matched"] == 1.0 and s["mean_abs_offset_frames"] < 0.2 and s["false_onsets"] <= truth - found


def test_exact_duration_mono_8khz_deterministic(model):
    frames = D.render_track(*_clip(3, "floor", 17)).permute(1, 2, 3, 0)
    a = video_to_audio(model, frames, FPS, num_inference_steps=4, guidance_scale=CFG, seed=1)
    b = video_to_audio(model, frames, FPS, num_inference_steps=4, guidance_scale=CFG, seed=1)
    assert a["sample_rate"] == 8000 and a["waveform"].shape == (1, 1, 17_000)        # 17 frames / 8 fps
    assert torch.equal(a["waveform"], b["waveform"])
    odd = video_to_audio(model, frames[:7], 29.97, num_inference_steps=2, guidance_scale=1.0)
    assert odd["waveform"].shape[-1] == round(7 * 8000 * 100 / 2997)


def test_prompt_is_ignored_with_a_warning_and_errors_are_clear(model):
    with pytest.warns(UserWarning, match="no text input"):
        model.encode_prompt("a loud bang")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.encode_prompt("")
    from kinema.models.sampling import SamplerSettings, sample
    settings = SamplerSettings(num_frames=9, height=32, width=32, num_inference_steps=2, guidance_scale=1.0,
                               frame_rate=8.0)
    with pytest.raises(ValueError, match="must carry the video"):
        sample(model, model.encode_prompt(""), None, settings)
    with pytest.raises(ValueError, match="fps"):
        sample(model, model.encode_prompt(""), None, SamplerSettings(num_frames=9, frame_rate=0.0))


def _clip(seed, kind, frames):
    clip = D.random_clip(torch.Generator().manual_seed(seed), frames, kind)
    return clip.spec, clip.track


def test_sync_on_rendered_clips(model):
    """Held-out rendered clips (not the training seed): onsets within 2 frames of the pixel impacts."""
    impacts = S.measure(model, S.rendered_clips(1000, 6, "floor", 33), FPS, STEPS, CFG)
    quiet = S.measure(model, S.rendered_clips(1002, 4, "none", 17), FPS, STEPS, CFG)
    print(impacts, quiet)
    assert impacts["impacts"] >= 15 and impacts["matched"] >= 0.95
    assert impacts["false_per_clip"] <= 0.5 and quiet["onsets"] <= 1      # measured 100 %, 0.17 / clip, 0 onsets (20 steps, cfg 8)


def test_sync_on_generated_tiny_clips(model):
    """Clips the bundled Kinema-Tiny video model makes ("... bounces", 33 frames in windows of 9)."""
    video = load_model(VIDEO_WEIGHTS)
    r = S.measure(model, S.generated_clips(video, S.bounce_prompts(8), 33), FPS, STEPS, CFG)
    print(r)
    assert r["impacts"] >= 24 and r["matched"] >= 0.85 and r["false_per_clip"] <= 0.5   # measured 93 %, 0.25 / clip
