"""Long video: FreeNoise windows for every family (models/windows.py + the loop)."""
from __future__ import annotations

import pytest
import torch

from kinema.models import windows as W
from kinema.models.families import load_model
from kinema.models.sampling import SamplerSettings, sample


def test_window_layout_and_weights():
    assert W.windows(24, 16, 4) == [(0, 16), (4, 20), (8, 24)]
    assert W.windows(9, 16, 4) == [(0, 9)]
    assert W.windows(30, 8, 6)[-1] == (22, 30)
    assert W.frame_weights(5).tolist() == [1, 2, 3, 2, 1]
    assert W.frame_weights(4).tolist() == [1, 2, 2, 1]
    assert W.frame_weights(4, "flat").tolist() == [1, 1, 1, 1]
    assert W.frame_weights(5, "delayed_reverse_sawtooth").tolist()[2:] == [3, 2, 1]


def test_noise_rescheduling_repeats_base_window():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 2, 20, 3, 3, generator=g)
    out = W.reschedule_noise(noise, 8, 4, g, "shuffle_context")
    assert torch.equal(out[:, :, :8], noise[:, :, :8])
    base = {tuple(noise[0, :, i].flatten().tolist()) for i in range(8)}
    assert all(tuple(out[0, :, i].flatten().tolist()) in base for i in range(20))   # only base frames recur
    rep = W.reschedule_noise(noise, 8, 4, g, "repeat_context")
    assert torch.equal(rep[:, :, 8:16], noise[:, :, :8])


@pytest.mark.parametrize("text,expect", [
    ("0: a cat walks | 48: the cat runs", [(0, "a cat walks"), (48, "the cat runs")]),
    ("0: one\n10: two", [(0, "one"), (10, "two")]),
])
def test_parse_schedule(text, expect):
    assert W.parse_schedule(text) == expect


@pytest.mark.parametrize("text,match", [("5: late start", "frame 0"), ("0: a | 0: b", "increasing"),
                                        ("cat", "FRAME: prompt"), ("", "at least one")])
def test_parse_schedule_errors(text, match):
    with pytest.raises(ValueError, match=match):
        W.parse_schedule(text)


def test_animatediff_freenoise_matches_diffusers(models_dir):
    """Our FreeNoise (noise rescheduling + fusion inside temporal attention) == diffusers' enable_free_noise()."""
    from diffusers import AnimateDiffPipeline
    path = models_dir / "diffusers" / "fixture-animatediff"
    pipe = AnimateDiffPipeline.from_pretrained(str(path), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_free_noise(context_length=8, context_stride=4, weighting_scheme="pyramid",
                           noise_type="shuffle_context")
    expected = pipe(prompt="a red ball", negative_prompt="blur", num_frames=16, height=32, width=32,
                    num_inference_steps=3, guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(3),
                    output_type="latent").frames
    model = load_model(path)
    ctx = W.ContextOptions(context_length=8, context_overlap=4, fuse="pyramid", noise="shuffle_context",
                           mode="attention", anchor="none")
    got = sample(model, model.encode_prompt("a red ball"), model.encode_prompt("blur"),
                 SamplerSettings(num_frames=16, height=32, width=32, num_inference_steps=3, guidance_scale=7.5,
                                 seed=3), context=ctx)
    # after one step they agree to 2e-7; diffusers lerps the per-frame embeddings, and the random UNet amplifies
    # that rounding over steps: 2e-5 after 3 steps on latents that reach 18 (a relative 1e-6)
    assert expected.abs().max() > 5
    assert torch.allclose(got, expected, atol=1e-4 * expected.abs().max().item() / 10), (got - expected).abs().max()
    assert not model.pipe.free_noise_enabled                       # the UNet is restored after the run


@pytest.mark.parametrize("name,frames", [("fixture-animatediff", 8), ("fixture-wan-t2v", 9),
                                         ("kinema-tiny-video", 9)])
def test_one_window_covering_the_clip_is_the_plain_result(models_dir, name, frames):
    from kinema.models.tiny.pipeline import DEFAULT_WEIGHTS
    model = load_model(DEFAULT_WEIGHTS if name == "kinema-tiny-video" else models_dir / "diffusers" / name)
    pos, neg = model.encode_prompt("x"), model.encode_prompt("y")
    settings = SamplerSettings(num_frames=frames, height=32, width=32, num_inference_steps=2, guidance_scale=4.0)
    plain = sample(model, pos, neg, settings)
    ctx = W.ContextOptions(context_length=frames, context_overlap=2)
    assert torch.equal(sample(model, pos, neg, settings, context=ctx), plain)


def test_wan_windows_on_predictions_with_schedule(models_dir):
    model = load_model(models_dir / "diffusers" / "fixture-wan-t2v")
    a, b = model.encode_prompt("a cat walks"), model.encode_prompt("the cat runs")
    sched = a.replace(prompt="schedule", schedule=((0, a), (16, b)))
    ctx = W.ContextOptions(context_length=9, context_overlap=4, mode="predictions")   # 3 latent, stride 2
    settings = SamplerSettings(num_frames=33, height=32, width=32, num_inference_steps=3, guidance_scale=3.0)
    seen = []
    orig = model.predict
    model.predict = lambda x, t, batch: seen.append(x.shape[2]) or orig(x, t, batch)
    out = sample(model, sched, model.encode_prompt(""), settings, context=ctx)
    model.predict = orig
    assert out.shape == (1, 16, 9, 4, 4) and torch.isfinite(out).all()
    assert set(seen) == {3} and len(seen) == 3 * 4                  # 4 windows of 3 latent frames, every step
    single = sample(model, a, model.encode_prompt(""), settings, context=ctx)
    assert not torch.allclose(out, single)                          # the second prompt acts


def test_attention_mode_refused_for_dit(models_dir):
    model = load_model(models_dir / "diffusers" / "fixture-wan-t2v")
    with pytest.raises(ValueError, match="attention"):
        sample(model, model.encode_prompt("x"), None,
               SamplerSettings(num_frames=33, height=32, width=32, num_inference_steps=1),
               context=W.ContextOptions(context_length=9, context_overlap=4, mode="attention"))
