"""Wan VACE (families/wan_vace.py): our loop == WanVACEPipeline with and without reference images, the Reference
Image node's strength (VACE conditioning_scale; 0 = plain text-to-video), and the errors around references."""
from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from kinema.models import edit as E
from kinema.models.families import VIDEO, load_model
from kinema.models.sampling import SamplerSettings, sample
from kinema.models.windows import ContextOptions

PROMPT, NEG = "a red ball bounces", "blurry"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def path(models_dir):
    return models_dir / "diffusers" / "fixture-wan-vace"


@pytest.fixture(scope="module")
def vace(path):
    return load_model(path)


def _images():
    """Two references of different sizes and aspects (fitted into the frame on white)."""
    a = np.zeros((24, 40, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, 40, dtype=np.uint8)[None]
    a[4:14, 10:22] = (30, 200, 90)
    b = np.full((48, 32, 3), 220, np.uint8)
    b[10:30, 8:24] = (200, 40, 160)
    return [PIL.Image.fromarray(a), PIL.Image.fromarray(b)]


def _tensor(image: PIL.Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).float().div(255)[None]                  # (1, H, W, 3)


def _settings(**kw) -> SamplerSettings:
    return SamplerSettings(**{**dict(num_frames=9, height=32, width=32, num_inference_steps=3, guidance_scale=5.0,
                                     seed=7), **kw})


def test_detected_and_loaded_by_the_wan_vace_family(path, vace):
    assert VIDEO.detect(path) == "wan_vace" and vace.name == "wan_vace"
    assert vace.latent_shape(_settings()) == (16, 3, 4, 4)
    with pytest.raises(ValueError, match="`family` does not match the folder.*WanVACEPipeline"):
        load_model(path, family="wan")


@pytest.mark.parametrize("refs,cfg,strength", [(0, 5.0, 1.0), (1, 5.0, 1.0), (2, 1.0, 1.0), (1, 5.0, 0.5)],
                         ids=["text_to_video", "one_reference", "two_references", "strength_0.5"])
def test_loop_matches_wan_vace_pipeline(path, vace, refs, cfg, strength):
    """Decoded frames and latents == WanVACEPipeline(reference_images=..., conditioning_scale=strength)."""
    from diffusers import WanVACEPipeline
    pipe = WanVACEPipeline.from_pretrained(str(path), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    images = _images()[:refs]
    kw = dict(prompt=PROMPT, negative_prompt=NEG, height=32, width=32, num_frames=9, num_inference_steps=3,
              guidance_scale=cfg, conditioning_scale=strength, reference_images=images or None)
    expected = pipe(**kw, generator=torch.Generator("cpu").manual_seed(7), output_type="np").frames[0]
    expected_latents = pipe(**kw, generator=torch.Generator("cpu").manual_seed(7), output_type="latent").frames

    pos = vace.encode_prompt(PROMPT)
    for image in images:                                    # chained Reference Image nodes add their references
        pos = E.reference_condition(vace, pos, _tensor(image), strength)
    latents = sample(vace, pos, vace.encode_prompt(NEG), _settings(guidance_scale=cfg))
    assert latents.shape == (1, 16, 3, 4, 4)                # the reference frames are dropped
    assert (latents - expected_latents[:, :, refs:]).abs().max() < 1e-4
    frames = vace.decode(latents).numpy()
    assert frames.shape == expected.shape == (9, 32, 32, 3)
    assert np.abs(frames - expected).max() < 1e-4


def test_strength_zero_is_text_to_video_and_a_reference_changes_the_clip(vace):
    pos, neg = vace.encode_prompt(PROMPT), vace.encode_prompt(NEG)
    ref = _tensor(_images()[0])
    plain = sample(vace, pos, neg, _settings())
    assert E.reference_condition(vace, pos, ref, 0.0) is pos
    assert torch.equal(sample(vace, E.reference_condition(vace, pos, ref, 0.0), neg, _settings()), plain)
    full = sample(vace, E.reference_condition(vace, pos, ref, 1.0), neg, _settings())
    half = sample(vace, E.reference_condition(vace, pos, ref, 0.5), neg, _settings())
    assert full.shape == plain.shape == half.shape
    assert (full - plain).abs().mean() > 1e-2 and (half - full).abs().mean() > 1e-3
    # a batch of images is a batch of references; previews see the clip's frames only
    two = E.reference_condition(vace, pos, torch.cat([ref, ref.flip(2)]), 1.0)
    seen = []
    sample(vace, two, neg, _settings(num_inference_steps=1), on_step=lambda i, n, x: seen.append(x.shape))
    assert vace.prefix_frames(two) == 2 and seen == [(1, 16, 3, 4, 4)]


def test_references_follow_a_prompt_schedule_and_windows_run_without_them(vace):
    ref = _tensor(_images()[1])
    first, second = vace.encode_prompt("a ball"), vace.encode_prompt("a cube")
    schedule = first.replace(prompt="0: a ball | 4: a cube", schedule=((0, first), (4, second)))
    out = sample(vace, E.reference_condition(vace, schedule, ref, 1.0), None, _settings(guidance_scale=1.0))
    assert out.shape == (1, 16, 3, 4, 4) and torch.isfinite(out).all()
    ctx = ContextOptions(context_length=5, context_overlap=4)
    long = sample(vace, first, None, _settings(num_frames=17, guidance_scale=1.0, num_inference_steps=2),
                  context=ctx)
    assert long.shape == (1, 16, 5, 4, 4) and torch.isfinite(long).all()


def test_reference_errors_name_the_fix(models_dir, vace):
    ref = torch.rand(1, 16, 16, 3)
    t2v = load_model(models_dir / "diffusers" / "fixture-wan-t2v")
    with pytest.raises(ValueError, match="`model` has no image conditioning.*Wan VACE"):
        E.reference_condition(t2v, t2v.encode_prompt("x"), ref)
    pos = E.reference_condition(vace, vace.encode_prompt("x"), ref)
    with pytest.raises(ValueError, match="`context` cannot be combined with a reference image.*Disconnect"):
        sample(vace, pos, None, _settings(num_frames=17), context=ContextOptions(context_length=5,
                                                                                 context_overlap=4))
    with pytest.raises(ValueError, match="`positive` carries 1 reference image.*denoise 1.0.*Temporal Sampler"):
        sample(vace, pos, None, _settings(denoise=0.5), init_latents=torch.zeros(1, 16, 3, 4, 4))
    with pytest.raises(ValueError, match="`positive` carries 1 reference image.*Temporal Sampler"):
        E.sdedit(vace, torch.zeros(1, 16, 3, 4, 4), pos, None, E.EditSettings(strength=0.5, num_inference_steps=2))
    with pytest.raises(ValueError, match="`positive` carries a start image.*Reference Image node"):
        sample(vace, vace.encode_prompt("x").with_image(ref), None, _settings())
    with pytest.raises(ValueError, match="`strength` must be"):
        E.reference_condition(vace, vace.encode_prompt("x"), ref, 1.5)
