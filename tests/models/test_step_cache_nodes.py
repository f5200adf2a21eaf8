"""The step cache on the other sampling nodes: Text to Audio and Video to Audio, Portrait Animate (one session per
window) and Video Upscale's refine (around the tiles, and LTX-2's latent-upsampler refine). Each: the first run
calibrates and equals the uncached result, a later run really makes fewer denoiser calls (counted on the model's
own predict) and stays closer to the uncached result than another seed is. Calibrations go to tmp folders (never
beside the bundled or fixture models)."""
from __future__ import annotations

import math

import pytest
import torch

from kinema.models import step_cache as SC

pytestmark = pytest.mark.usefixtures("one_thread")


def _count_calls(model) -> list[int]:
    """Count the model's own denoiser calls (its predict, which the cache wraps)."""
    calls, inner = [0], model.predict

    def predict(x, t, batch):
        calls[0] += 1
        return inner(x, t, batch)

    model.predict = predict
    return calls


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).pow(2).mean().sqrt())


def _three_runs(run, calls):
    """(plain, first cached, second cached, calls of each) of run(step_cache) -> (result, ui text or None)."""
    counts, outs, texts = [], [], []
    for cache in (None, "first", "second"):
        before = calls[0]
        out, text = run(cache)
        counts.append(calls[0] - before)
        outs.append(out)
        texts.append(text)
    return outs, counts, texts


def _check(outs, counts, texts, other, uncached_calls):
    plain, first, second = outs
    assert counts[0] % uncached_calls == 0 and counts[1] == counts[0]              # calibration: a full run
    uncached_calls = counts[0]                                                     # (tiles: several per step)
    assert "calibrated" in texts[1] and torch.equal(first, plain)
    assert "skipped" in texts[2] and counts[2] <= 0.75 * uncached_calls           # calls really saved
    assert _err(second, plain) < 0.5 * _err(other, plain)                         # close to uncached


def _unwrap(ret):
    return (ret[0], None) if isinstance(ret, tuple) else (ret["result"][0], ret["ui"]["text"][0])


def test_text_to_audio_node(models_dir, tmp_path):
    from kinema.models.families import load_audio_model
    from kinema.nodes.audio import KinemaTextToAudio
    model = load_audio_model(models_dir / "diffusers" / "fixture-stable-audio")
    calls = _count_calls(model)
    cache = SC.StepCache(threshold=1.0, max_skips=2, retention=0.2, store=tmp_path)
    node = KinemaTextToAudio()

    def run(which, seed=1):
        ret = node.generate(model, "a bell", "", 0.3, 10, 7.0, seed, step_cache=cache if which else None)
        out, text = _unwrap(ret)
        return out["waveform"], text

    outs, counts, texts = _three_runs(run, calls)
    _check(outs, counts, texts, run(None, seed=2)[0], 10)
    assert texts[0] is None                                                         # no cache: no text


def test_video_to_audio_node_on_kinema_tiny_audio(tmp_path):
    from kinema.models.families import load_audio_model
    from kinema.models.tiny.audio_model import DEFAULT_WEIGHTS
    from kinema.nodes.audio import KinemaVideoToAudio
    from training.tiny import audio_data as D
    model = load_audio_model(DEFAULT_WEIGHTS)
    calls = _count_calls(model)
    g = torch.Generator().manual_seed(3)
    clip = D.random_clip(g, 17, "floor")
    frames = D.render_track(clip.spec, clip.track).permute(1, 2, 3, 0)                # (F, H, W, 3)
    cache = SC.StepCache(threshold=1.0, max_skips=2, retention=0.2, store=tmp_path)

    def run(which, seed=1):
        ret = KinemaVideoToAudio().generate(model, frames, 8.0, 20, 8.0, seed, step_cache=cache if which else None)
        out, text = _unwrap(ret)
        return out["waveform"], text

    outs, counts, texts = _three_runs(run, calls)
    _check(outs, counts, texts, run(None, seed=2)[0], 20)


def test_portrait_node_caches_every_window(tmp_path):
    from kinema.models.families.tiny_portrait import KinemaTinyPortraitFamily
    from kinema.models.tiny.portrait_pipeline import DEFAULT_WEIGHTS
    from kinema.nodes.portrait import KinemaPortraitAnimate
    from training.tiny.portrait_data import sample_portrait
    model = KinemaTinyPortraitFamily.load(DEFAULT_WEIGHTS, torch.device("cpu"), torch.float32)
    calls = _count_calls(model)
    rate = 16000
    t = torch.arange(int(2.5 * rate)) / rate                                           # 2.5 s: several windows
    wav = (0.4 * torch.sin(2 * math.pi * 180 * t) * (torch.sin(2 * math.pi * 3 * t) > 0)).view(1, 1, -1)
    audio = {"waveform": wav, "sample_rate": rate}
    portrait = sample_portrait(64).unsqueeze(0)
    cache = SC.StepCache(threshold=1.0, max_skips=2, retention=0.2, store=tmp_path)
    steps = 10

    def run(which, seed=0):
        ret = KinemaPortraitAnimate().animate(model, portrait, audio, 25.0, seed, steps, 1.0, 1.0,
                                              step_cache=cache if which else None)
        return _unwrap(ret)

    plain, _ = run(None)
    windows = calls[0] // steps
    assert windows >= 2 and calls[0] == windows * steps
    before = calls[0]
    first, text = run("first")                     # the first window calibrates, the later ones read it
    assert "calibrated on the first run" in text and calls[0] - before < windows * steps
    assert torch.equal(first[:9], plain[:9])                              # window 1 (9 frames) computed every step
    before = calls[0]
    second, text = run("second")
    assert "skipped" in text and calls[0] - before <= 0.75 * windows * steps
    assert _err(second, plain) < 0.5 * _err(run(None, seed=1)[0], plain)


@pytest.mark.parametrize("tile", [0, 10])
def test_video_upscale_refine(models_dir, tmp_path, tile):
    from kinema.models.families import load_model
    from kinema.nodes.edit import KinemaVideoUpscale
    model = load_model(models_dir / "diffusers" / "fixture-animatediff")
    calls = _count_calls(model)
    pos, neg = model.encode_prompt("a red circle"), model.encode_prompt("")
    frames = torch.rand(2, 48, 48, 3, generator=torch.Generator().manual_seed(0))
    cache = SC.StepCache(threshold=1.0, max_skips=2, retention=0.2, store=tmp_path)
    steps, strength = 12 if tile else 20, 0.5

    def run(which, seed=1):
        ret = KinemaVideoUpscale().upscale(frames, "x2", strength, steps, 4.0, seed, tile, model=model,
                                           positive=pos, negative=neg, step_cache=cache if which else None)
        return _unwrap(ret)

    outs, counts, texts = _three_runs(run, calls)
    _check(outs, counts, texts, run(None, seed=2)[0], int(steps * strength))
    assert (counts[0] > steps * strength) == bool(tile)
    (resized,) = KinemaVideoUpscale().upscale(frames, "x2", 0.0, steps, 4.0, 1, tile, model=model, positive=pos,
                                              negative=neg, step_cache=cache)["result"]
    assert resized.shape == (2, 96, 96, 3)


def test_ltx2_latent_upsampler_refine_takes_the_cache(models_dir, tmp_path):
    from kinema.models.families import load_model
    from kinema.models.upscale import load_upscaler
    from kinema.nodes.edit import KinemaVideoUpscale
    model = load_model(models_dir / "diffusers" / "fixture-ltx2")
    up = load_upscaler(models_dir / "diffusers" / "fixture-ltx2-upsampler")
    calls = _count_calls(model)
    pos, neg = model.encode_prompt("waves"), model.encode_prompt("")
    frames = torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    cache = SC.StepCache(threshold=1.0, max_skips=2, retention=0.2, store=tmp_path)

    def run(which, seed=0):
        ret = KinemaVideoUpscale().upscale(frames, "x2", 1.0, 10, 1.0, seed, 0, model=model, positive=pos,
                                           negative=neg, upscaler=up, step_cache=cache if which else None)
        return _unwrap(ret)

    outs, counts, texts = _three_runs(run, calls)
    _check(outs, counts, texts, run(None, seed=1)[0], 10)


def test_latent_upscale_node_takes_the_cache(models_dir, tmp_path):
    from kinema.models.families import load_model
    from kinema.models.upscale import load_upscaler
    from kinema.nodes.decode import KinemaLatentUpscale
    from kinema.nodes.sampling import KinemaTemporalSampler
    model = load_model(models_dir / "diffusers" / "fixture-ltx2")
    up = load_upscaler(models_dir / "diffusers" / "fixture-ltx2-upsampler")
    pos, neg = model.encode_prompt("waves"), model.encode_prompt("")
    (latent,) = KinemaTemporalSampler().sample(model, pos, neg, 9, 32, 32, 2, 1.0, 3, "default", 0.0, 1.0)
    calls = _count_calls(model)
    cache = SC.StepCache(threshold=1.0, max_skips=2, retention=0.2, store=tmp_path)

    def run(which, seed=0):
        ret = KinemaLatentUpscale().upscale(model, up, latent, pos, neg, 10, 1.0, seed, 1.0,
                                            step_cache=cache if which else None)
        out, text = _unwrap(ret)
        return out["samples"], text

    outs, counts, texts = _three_runs(run, calls)
    _check(outs, counts, texts, run(None, seed=1)[0], 10)


def test_refusals_name_the_input(models_dir, tmp_path):
    from kinema.models.families import load_model
    from kinema.models.windows import ContextOptions
    from kinema.nodes.edit import KinemaVideoEdit
    from kinema.nodes.sampling import KinemaTemporalSampler
    model = load_model(models_dir / "diffusers" / "fixture-ltx2")
    pos = model.encode_prompt("waves")
    cache = SC.StepCache(store=tmp_path)
    with pytest.raises(ValueError, match="`step_cache` cannot be combined with context windows on LTX-2"):
        KinemaTemporalSampler().sample(model, pos, None, 17, 32, 32, 2, 1.0, 0, "default", 0.0, 1.0,
                                       context=ContextOptions(context_length=9, context_overlap=4), step_cache=cache)
    frames = torch.rand(9, 32, 32, 3)
    with pytest.raises(ValueError, match="`step_cache` cannot be used with method flowedit"):
        KinemaVideoEdit().edit(model=model, images=frames, positive=pos, negative=None, strength=0.6, steps=2,
                               cfg=1.0, source_cfg=1.5, seed=1, method="flowedit", source_prompt=pos,
                               step_cache=cache)
