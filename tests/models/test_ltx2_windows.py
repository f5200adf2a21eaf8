"""Long LTX-2 clips (families/ltx2_windows.py): FreeNoise windows over the picture, the sound carried across them.

- A context covering the whole clip gives the plain loop's result (video and sound).
- Every audio latent step is heard by some window, each window hears its own span of time, the last ends with
  the clip; the sound lasts exactly frames / fps.
- Continuity at the seams: the short-time energy (RMS per video frame) of the whole clip's decoded sound jumps at
  a window seam by at most 1.5x the clip's own largest frame-to-frame jump elsewhere (the fixture's random sound
  varies; a seam must not stand out of it); the same measure flags a 20 ms gap put at a seam (> 3x: what a sampler
  that drops the audio per window leaves).
"""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from kinema.models.families import load_model
from kinema.models.families.ltx2_windows import window_spans
from kinema.models.joint import decode_sound, sample_clip
from kinema.models.sampling import SamplerSettings
from kinema.models.windows import ContextOptions

FPS = Fraction(24)


@pytest.fixture(scope="module")
def model(models_dir, one_thread):
    return load_model(models_dir / "diffusers" / "fixture-ltx2")


def _settings(frames=33, steps=3, cfg=3.0):
    return SamplerSettings(num_frames=frames, height=32, width=32, num_inference_steps=steps, guidance_scale=cfg,
                           seed=1, frame_rate=FPS)


def _energy_jumps(wave: torch.Tensor, block: int) -> torch.Tensor:
    """|RMS[j + 1] - RMS[j]| of consecutive blocks of `block` samples (mono mix)."""
    x = wave[0].mean(0)
    n = x.shape[0] // block
    e = x[:n * block].view(n, block).pow(2).mean(1).sqrt()
    return (e[1:] - e[:-1]).abs()


def _seam_report(wave, seams_s, block):
    """(largest jump at a seam, largest jump elsewhere): jumps between the blocks either side of each seam."""
    jumps = _energy_jumps(wave, block)
    at = {min(len(jumps) - 1, max(0, round(s * 16000) // block + d)) for s in seams_s for d in (-1, 0)}
    seam = max(jumps[j].item() for j in at)
    rest = max(jumps[j].item() for j in range(len(jumps)) if j not in at)
    return seam, rest


def test_one_window_covering_the_clip_is_the_plain_loop(model):
    pos, neg = model.encode_prompt("rain on a roof"), model.encode_prompt("")
    plain = sample_clip(model, pos, neg, _settings())
    one = sample_clip(model, pos, neg, _settings(), context=ContextOptions(context_length=33, context_overlap=4))
    assert (one.video - plain.video).abs().max() < 1e-5
    assert (one.audio_latents - plain.audio_latents).abs().max() < 1e-5


def test_windows_cover_the_sound_and_the_sound_lasts_frames_over_fps(model):
    s, ctx = _settings(), ContextOptions(context_length=9, context_overlap=4)
    spans = window_spans(model, s, ctx)
    steps = model.layout(s).audio_steps
    heard = torch.zeros(steps, dtype=torch.bool)
    for (v0, v1), (a0, a1) in spans:
        heard[a0:a1] = True
        start = 0 if v0 == 0 else (v0 - 1) * model.temporal_ratio + 1                  # the window's first frame
        assert abs(a0 - float(start / FPS * model.latents_per_second)) <= 1 or a1 == steps
    assert len(spans) == 5 and heard.all() and spans[0][1][0] == 0 and spans[-1][1][1] == steps
    clip = sample_clip(model, model.encode_prompt("rain"), None, _settings(cfg=1.0, steps=2), context=ctx)
    assert clip.video.shape == (1, 4, 17, 16, 16)
    audio = decode_sound(model, {"kinema_audio": clip.audio_latents, "kinema_frames": 33, "kinema_fps": FPS})
    assert audio["waveform"].shape == (1, 2, 33 * 16000 // 24)


@pytest.mark.parametrize("length", [9, 13])
def test_sound_is_continuous_at_the_seams(model, length):
    s, ctx = _settings(), ContextOptions(context_length=length, context_overlap=4)
    clip = sample_clip(model, model.encode_prompt("rain on a roof"), model.encode_prompt(""), s, context=ctx)
    wave = decode_sound(model, {"kinema_audio": clip.audio_latents, "kinema_frames": 33, "kinema_fps": FPS})
    wave = wave["waveform"]
    steps = model.layout(s).audio_steps
    seams = sorted({t for _, (a, b) in window_spans(model, s, ctx) for t in (a, b)} - {0, steps})
    seams_s = [t / float(model.latents_per_second) for t in seams]
    block = 16000 // 24                                                                # one video frame of sound
    seam, rest = _seam_report(wave, seams_s, block)
    assert seam <= 1.5 * rest, (seam, rest)                                            # a seam is no event
    gap = wave.clone()
    cut = round(seams_s[len(seams_s) // 2] * 16000)
    gap[..., cut:cut + 320] = 0                                                        # 20 ms of silence
    assert _seam_report(gap, seams_s, block)[0] > 3 * rest                            # the measure sees a gap


def test_long_clip_refuses_a_start_image(model):
    pos = model.encode_prompt("x").with_image(torch.rand(1, 32, 32, 3))
    with pytest.raises(ValueError, match="`context`"):
        sample_clip(model, pos, None, _settings(), context=ContextOptions(context_length=9, context_overlap=4))
