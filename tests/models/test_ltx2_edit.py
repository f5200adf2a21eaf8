"""Video Edit (models/edit.py sdedit) on LTX-2 (joint picture + sound latents), on the tiny random fixture-ltx2: the
loop runs on the joint latents through models/joint.sample_clip (the sound re-made alongside), the mask blend only
touches the video frames."""
from __future__ import annotations

import pytest
import torch

from kinema.models import edit as E
from kinema.models.families import load_model
from kinema.models.joint import sample_clip
from kinema.models.sampling import SamplerSettings


@pytest.fixture(scope="module")
def model(models_dir, one_thread):
    return load_model(models_dir / "diffusers" / "fixture-ltx2")


def _clip(frames=9, size=32):
    """(F, H, W, 3): a bright square sliding right over a smooth background."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(1, 3, 3, 3, generator=g)
    bg = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear")[0].permute(1, 2, 0)
    out = bg.expand(frames, size, size, 3).clone()
    for i in range(frames):
        out[i, 8:16, 2 + 2 * i:10 + 2 * i] = torch.tensor([1.0, 0.9, 0.1])
    return out


def _settings(strength, steps=3):
    return E.EditSettings(method="sdedit", strength=strength, num_inference_steps=steps, guidance_scale=3.0, seed=4)


def test_sdedit_equals_the_temporal_sampler_with_a_latent(model):
    pos, neg = model.encode_prompt("a blue square"), model.encode_prompt("")
    src = model.encode(_clip())                                                      # (1, 4, 5, 16, 16)
    ours = E.sdedit(model, src, pos, neg, _settings(0.6))
    ref = sample_clip(model, pos, neg, SamplerSettings(num_frames=9, height=32, width=32, num_inference_steps=3,
                                                       guidance_scale=3.0, seed=4, denoise=0.6), init_latents=src)
    assert ours.shape == src.shape and torch.equal(ours, ref.video)
    assert not torch.equal(ours, src)


def test_mask_keeps_the_source_outside_on_joint_latents(model):
    pos = model.encode_prompt("a blue square")
    src = model.encode(_clip())
    m = torch.zeros(1, 1, *src.shape[2:])
    m[..., :, :8] = 1                                                                # edit the left half
    out = E.sdedit(model, src, pos, None, _settings(0.8), mask=m)
    assert torch.equal(out[..., 8:], src[..., 8:].float())                          # kept exactly outside
    assert (out[..., :8] - src[..., :8]).abs().max() > 1e-3                         # redrawn inside


def test_edit_video_on_ltx2_returns_the_clip(model):
    clip = _clip()
    mask = torch.zeros(1, 32, 32)
    mask[:, :, :16] = 1
    out = E.edit_video(model, clip, model.encode_prompt("snow"), None, _settings(0.7, steps=2), mask=mask)
    assert out.shape == clip.shape and torch.equal(out[:, :, 16:], clip[:, :, 16:].clamp(0, 1))
    assert (out[:, :, :16] - clip[:, :, :16]).abs().max() > 1e-3


def test_tiled_refine_on_ltx2_is_refused_with_the_fix(model):
    settings = E.UpscaleSettings(strength=0.3, num_inference_steps=2, tile=8, overlap=2)
    with pytest.raises(ValueError, match="`tile_size` cannot tile .*Set tile_size to 0"):
        E.upscale_video(_clip(), settings, model, model.encode_prompt("x"))
