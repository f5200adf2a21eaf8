"""Our sampling loop == the diffusers pipeline's own __call__, for the same tiny model, seed, size and steps."""
from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from kinema.models.families import load_model
from kinema.models.sampling import SamplerSettings, sample

CASES = [  # (fixture, frames, guidance)
    ("fixture-wan-t2v", 9, 6.0),
    ("fixture-wan-t2v", 5, 1.0),
    ("fixture-wan-i2v", 9, 5.0),
    ("fixture-animatediff", 8, 7.5),
    ("fixture-animatediff", 4, 1.0),
]


def _image():
    arr = np.zeros((32, 32, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, 32, dtype=np.uint8)[None]
    arr[8:20, 10:22] = (30, 200, 90)
    return PIL.Image.fromarray(arr)


@pytest.mark.parametrize("name,frames,cfg", CASES)
def test_loop_matches_diffusers_pipeline(models_dir, name, frames, cfg):
    from diffusers import DiffusionPipeline
    path = models_dir / "diffusers" / name
    pipe = DiffusionPipeline.from_pretrained(str(path), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(prompt="a red ball bounces", negative_prompt="blurry", height=32, width=32, num_frames=frames,
              num_inference_steps=3, guidance_scale=cfg, generator=torch.Generator("cpu").manual_seed(7),
              output_type="np")
    image = _image()
    if "i2v" in name:
        kw["image"] = image
    expected = pipe(**kw).frames[0]                                              # (F, H, W, 3)

    model = load_model(path)
    pos, neg = model.encode_prompt("a red ball bounces"), model.encode_prompt("blurry")
    if "i2v" in name:
        pos = pos.with_image(torch.from_numpy(np.array(image)).float().div(255)[None])
    latents = sample(model, pos, neg, SamplerSettings(num_frames=frames, height=32, width=32,
                                                      num_inference_steps=3, guidance_scale=cfg, seed=7))
    frames_out = model.decode(latents).numpy()
    assert frames_out.shape == expected.shape
    assert np.allclose(frames_out, expected, atol=1e-5), np.abs(frames_out - expected).max()


def test_seed_changes_output_and_is_reproducible(models_dir):
    model = load_model(models_dir / "diffusers" / "fixture-wan-t2v")
    pos, neg = model.encode_prompt("x"), model.encode_prompt("")
    run = lambda seed: sample(model, pos, neg, SamplerSettings(num_frames=5, height=32, width=32,
                                                               num_inference_steps=2, seed=seed))
    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_progress_callback_and_interrupt(models_dir):
    model = load_model(models_dir / "diffusers" / "fixture-animatediff")
    pos = model.encode_prompt("x")
    seen = []

    class Stop(Exception):
        pass

    def on_step(i, total, latents):
        seen.append((i, total, tuple(latents.shape)))
        if i == 2:
            raise Stop

    with pytest.raises(Stop):
        sample(model, pos, None, SamplerSettings(num_frames=4, height=32, width=32, num_inference_steps=5),
               on_step=on_step)
    shape = (1, *model.latent_shape(SamplerSettings(num_frames=4, height=32, width=32)))
    assert seen == [(1, 5, shape), (2, 5, shape)]


def test_denoise_starts_from_init_latents(models_dir):
    model = load_model(models_dir / "diffusers" / "fixture-animatediff")
    pos = model.encode_prompt("x")
    frames = torch.rand(1, 32, 32, 3).expand(4, -1, -1, -1)
    init = model.encode(frames)
    settings = SamplerSettings(num_frames=4, height=32, width=32, num_inference_steps=10, guidance_scale=1.0)
    low = sample(model, pos, None, SamplerSettings(**{**settings.__dict__, "denoise": 0.1}), init_latents=init)
    high = sample(model, pos, None, settings)
    assert (low - init).abs().mean() < (high - init).abs().mean()


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_frames=8), "4k\\+1"),
    (dict(height=40), "multiple of 16"),
    (dict(scheduler="ddim"), "flow-matching scheduler"),
    (dict(denoise=0.5), "needs a `latent`"),
])
def test_bad_settings_are_rejected_with_a_fix(models_dir, kwargs, match):
    model = load_model(models_dir / "diffusers" / "fixture-wan-t2v")
    pos = model.encode_prompt("x")
    base = dict(num_frames=9, height=32, width=32, num_inference_steps=2)
    with pytest.raises(ValueError, match=match):
        sample(model, pos, None, SamplerSettings(**{**base, **kwargs}))


@pytest.mark.parametrize("scheduler", ["flow_euler", "flow_unipc"])
def test_flow_schedulers_run(models_dir, scheduler):
    model = load_model(models_dir / "diffusers" / "fixture-wan-t2v")
    pos = model.encode_prompt("x")
    out = sample(model, pos, None, SamplerSettings(num_frames=5, height=32, width=32, num_inference_steps=3,
                                                   scheduler=scheduler, shift=3.0))
    assert out.shape == (1, 16, 2, 4, 4) and torch.isfinite(out).all()


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "lcm"])
def test_epsilon_schedulers_run(models_dir, scheduler):
    model = load_model(models_dir / "diffusers" / "fixture-animatediff")
    pos = model.encode_prompt("x")
    out = sample(model, pos, None, SamplerSettings(num_frames=3, height=32, width=32, num_inference_steps=3,
                                                   scheduler=scheduler))
    assert out.shape == (1, *model.latent_shape(SamplerSettings(num_frames=3, height=32, width=32)))
    assert torch.isfinite(out).all()
