"""Video editing (SDEdit, FlowEdit, masks), reference conditioning, upscaling and the streaming video reader.

Real content: the source is a rendered Kinema-Tiny clip ("a red circle moves right" on stripes) and the bundled
model edits it; the pixel checker (training/tiny/checker.py) judges colour, shape and motion."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from kinema.models import edit as E
from kinema.models import media, video_io
from kinema.models.families import load_model
from kinema.models.sampling import SamplerSettings, sample
from training.tiny import checker, data

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny" / "weights" / "kinema-tiny-video"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    return load_model(TINY)


@pytest.fixture(scope="module")
def clip():
    """(F, H, W, 3): a red circle moving right across dark stripes, 9 frames at 32x32."""
    g = torch.Generator().manual_seed(3)
    spec = dataclasses.replace(data.random_spec(g, shape="circle", colour="red", motion="moves right"),
                               background="stripes")
    return data.render(spec).permute(1, 2, 3, 0).contiguous()


def _settings(method, strength, **kw):
    return E.EditSettings(method=method, strength=strength, num_inference_steps=8, guidance_scale=6.0,
                          source_guidance_scale=2.0, seed=0, **kw)


@pytest.mark.parametrize("method", ["sdedit", "flowedit"])
def test_strength_zero_is_the_vae_round_trip(tiny, clip, method):
    pos, src = tiny.encode_prompt("a blue circle moves right"), tiny.encode_prompt("a red circle moves right")
    out = E.edit_video(tiny, clip, pos, None, _settings(method, 0.0), source_prompt=src)
    assert torch.equal(out, tiny.decode(tiny.encode(clip)).clamp(0, 1))


def test_sdedit_equals_the_temporal_sampler_at_that_denoise(tiny, clip):
    pos, neg = tiny.encode_prompt("a blue circle moves right"), tiny.encode_prompt("")
    src = tiny.encode(clip)
    ours = E.sdedit(tiny, src, pos, neg, _settings("sdedit", 0.6))
    ref = sample(tiny, pos, neg, SamplerSettings(num_frames=9, height=32, width=32, num_inference_steps=8,
                                                 guidance_scale=6.0, seed=0, denoise=0.6), init_latents=src)
    assert torch.equal(ours, ref)


def test_make_it_blue_keeps_motion_and_flowedit_keeps_the_background(tiny, clip):
    """Both methods turn the red circle blue with the same motion (checker); at strength 0.8 FlowEdit changes the
    background less than SDEdit (measured: ~0.052 vs ~0.075 mean abs change per background pixel)."""
    pos, neg, src = (tiny.encode_prompt(p) for p in ("a blue circle moves right", "", "a red circle moves right"))
    before = checker.analyse(clip.numpy())
    assert (before.colour, before.shape, before.motion) == ("red", "circle", "moves right")
    background = clip.amax(-1) < 0.5
    rt = tiny.decode(tiny.encode(clip))
    change = {}
    for method in ("sdedit", "flowedit"):
        out = E.edit_video(tiny, clip, pos, neg, _settings(method, 0.8), source_prompt=src)
        after = checker.analyse(out.numpy())
        assert (after.colour, after.shape, after.motion) == ("blue", "circle", "moves right"), (method, after)
        assert abs(after.displacement[0] - before.displacement[0]) < 3.0       # same track, pixels
        assert all(f.colour == "blue" for f in after.frames), method
        change[method] = (out - rt).abs().amax(-1)[background].mean().item()
    assert change["flowedit"] < 0.85 * change["sdedit"], change


@pytest.mark.parametrize("method", ["sdedit", "flowedit"])
def test_mask_limits_the_edit(tiny, clip, method):
    """Bound: outside the mask the output equals the source pixels exactly (0 change: the latents there follow the
    source at every step and the source is pasted back after decoding); inside, the object turned blue."""
    pos, neg, src = (tiny.encode_prompt(p) for p in ("a blue circle moves right", "", "a red circle moves right"))
    mask = torch.zeros(1, 32, 32)
    mask[:, :, 12:] = 1                                # the right part of the frame: where the circle ends up
    out = E.edit_video(tiny, clip, pos, neg, _settings(method, 0.8), source_prompt=src, mask=mask)
    outside = mask[0] == 0
    assert (out[:, outside] - clip[:, outside]).abs().max().item() == 0.0
    assert checker.frame_stats(out[-1].numpy()).colour == "blue"


def test_latent_mask_follows_the_causal_frame_groups(tiny):
    mask = torch.zeros(9, 32, 32)
    mask[3, 0, 0] = 1                                   # frame 3 -> latent frame 2 (frames 3-4), cell (0, 0)
    lm = E.latent_mask(tiny, mask, (1, 8, 5, 8, 8))
    assert lm.shape == (1, 1, 5, 8, 8) and lm.sum() == 1 and lm[0, 0, 2, 0, 0] == 1


def test_errors_name_the_input_and_fix(tiny, clip, models_dir):
    pos = tiny.encode_prompt("a blue circle moves right")
    with pytest.raises(ValueError, match="`source_prompt` is required by method flowedit"):
        E.edit_video(tiny, clip, pos, None, _settings("flowedit", 0.5))
    with pytest.raises(ValueError, match="`video` does not fit this kinema_tiny model.*Load Video"):
        E.edit_video(tiny, clip[:8], pos, None, _settings("sdedit", 0.5))
    with pytest.raises(ValueError, match="`mask` must be a MASK"):
        E.edit_video(tiny, clip, pos, None, _settings("sdedit", 0.5), mask=torch.ones(1, 16, 16))
    ad = load_model(models_dir / "diffusers" / "fixture-animatediff")
    with pytest.raises(ValueError, match="`method` `flowedit` needs a flow-matching model.*sdedit"):
        E.flowedit(ad, torch.zeros(1, 4, 2, 8, 8), ad.encode_prompt("x"), None, ad.encode_prompt("y"),
                   _settings("flowedit", 0.5))
    with pytest.raises(ValueError, match="`model` has no image conditioning"):
        E.reference_condition(ad, ad.encode_prompt("x"), torch.zeros(1, 8, 8, 3))


def test_sdedit_equals_diffusers_wan_video_to_video(models_dir):
    """SDEdit through our loop == diffusers' WanVideoToVideoPipeline (same fixture, seed, strength, steps)."""
    from diffusers import WanVideoToVideoPipeline
    path = models_dir / "diffusers" / "fixture-wan-t2v"
    pipe = WanVideoToVideoPipeline.from_pretrained(str(path), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(9, 32, 32, 3, generator=g)
    video = [PIL.Image.fromarray((f.numpy() * 255).astype(np.uint8)) for f in frames]
    frames = torch.from_numpy(np.stack([np.asarray(v) for v in video])).float() / 255
    expected = pipe(video=video, prompt="snow falls", negative_prompt="blurry", height=32, width=32,
                    num_inference_steps=4, guidance_scale=5.0, strength=0.5, output_type="latent",
                    generator=torch.Generator("cpu").manual_seed(7)).frames
    model = load_model(path)
    pos, neg = model.encode_prompt("snow falls"), model.encode_prompt("blurry")
    ours = E.sdedit(model, model.encode(frames), pos, neg,
                    E.EditSettings(strength=0.5, num_inference_steps=4, guidance_scale=5.0, seed=7))
    assert torch.allclose(ours, expected.float(), atol=1e-4), (ours - expected).abs().max()


def test_reference_image_carries_the_subject(tiny):
    """A purple star reference: the seed makes a purple star moving right (checker); without the reference
    (strength 0, exactly plain text-to-video) the same prompt and seeds draw squares."""
    g = torch.Generator().manual_seed(5)
    spec = dataclasses.replace(data.random_spec(g, shape="star", colour="purple", motion="stays still"),
                               background="plain", x0=0.3, y0=0.5)
    ref = data.render(spec, 1, 64).permute(1, 2, 3, 0)                     # (1, 64, 64, 3): any size
    pos, neg = tiny.encode_prompt("a purple star moves right"), tiny.encode_prompt("")
    settings = lambda seed: SamplerSettings(num_frames=9, height=32, width=32, num_inference_steps=10,
                                            guidance_scale=4.0, seed=seed)
    assert E.reference_condition(tiny, pos, ref, 0.0) is pos
    for seed in (0,):
        clip = checker.analyse(tiny.decode(sample(tiny, E.reference_condition(tiny, pos, ref, 1.0), neg,
                                                  settings(seed))).numpy())
        assert (clip.colour, clip.shape, clip.motion) == ("purple", "star", "moves right"), clip
    plain = checker.analyse(tiny.decode(sample(tiny, pos, neg, settings(0))).numpy())
    assert plain.shape != "star"


def test_upscale_resize_only_and_refine_with_flat_memory(models_dir, clip):
    """x2/x4 resize keeps frames; the refine runs the denoiser on tiles no larger than tile_size latent cells (peak
    activations independent of the frame size) and equals the untiled refine when one tile covers the frame."""
    big = E.upscale_video(clip, E.UpscaleSettings(factor="x4", strength=0.0))
    assert big.shape == (9, 128, 128, 3)
    assert np.isclose(big.mean().item(), clip.mean().item(), atol=0.01)
    model = load_model(models_dir / "diffusers" / "fixture-animatediff")
    pos, neg = model.encode_prompt("a red circle"), model.encode_prompt("")
    seen = []
    predict = model.predict
    model.predict = lambda x, t, b: (seen.append(tuple(x.shape[-2:])), predict(x, t, b))[1]
    try:
        s = E.UpscaleSettings(factor="x2", strength=0.5, num_inference_steps=4, seed=1)
        tiled = E.upscale_video(clip[:4], dataclasses.replace(s, tile=12), model, pos, neg)
        assert tiled.shape == (4, 64, 64, 3) and max(max(hw) for hw in seen) == 12 and len(set(seen)) == 1
        seen.clear()
        whole = E.upscale_video(clip[:4], dataclasses.replace(s, tile=64), model, pos, neg)
        assert seen[0] == (32, 32)
        assert torch.allclose(whole, E.upscale_video(clip[:4], s, model, pos, neg))
    finally:
        model.predict = predict


def test_streaming_reader_range_resize_and_chunks(tmp_path, clip):
    path = tmp_path / "clip.mp4"
    media.save_video(torch.cat([clip, clip]), path, 12.0, "mp4")             # 18 frames
    src = video_io.probe(path)
    assert (src.frames, src.fps, src.width, src.height) == (18, 12.0, 32, 32)
    chunks = list(video_io.iter_frames(path, start=2, count=7, height=16, width=24, chunk=3))
    assert [c.shape[0] for c in chunks] == [3, 3, 1] and chunks[0].shape[1:] == (16, 24, 3)
    frames, fps = video_io.read_video(path, start=9, count=9)
    assert fps == 12.0 and checker.analyse(frames.numpy()).motion == "moves right"
    assert (frames - clip).abs().mean() < 0.05
    gif = tmp_path / "clip.gif"
    media.save_video(clip, gif, 8.0, "gif")
    assert video_io.read_video(gif, height=64)[0].shape == (9, 64, 64, 3)
    with pytest.raises(ValueError, match="`frame_count` asks for frames up to 20"):
        video_io.read_video(path, start=10, count=10)
    with pytest.raises(ValueError, match="`start_frame` must be below"):
        next(video_io.iter_frames(path, start=18))
