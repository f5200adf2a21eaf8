"""Step cache (models/step_cache.py) on Kinema-Tiny's trained weights through the real sampling loop: calibration
on the first run, stored beside the model; later runs skip calls and stay close to the uncached result; per CFG
branch and per window; the node and Video Edit take it; FlowEdit refuses it."""
from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

from kinema.models import step_cache as SC
from kinema.models.families import VIDEO
from kinema.models.sampling import SamplerSettings, sample
from kinema.models.tiny.pipeline import DEFAULT_WEIGHTS
from kinema.models.windows import ContextOptions

STEPS = 20


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    """Kinema-Tiny copied to a fresh folder (calibrations are written beside the model)."""
    folder = tmp_path_factory.mktemp("tiny") / "kinema-tiny-video"
    shutil.copytree(DEFAULT_WEIGHTS, folder)
    model = VIDEO.load(folder)
    return model, model.encode_prompt("a red circle moves left"), model.encode_prompt("")


def _settings(**kw) -> SamplerSettings:
    return SamplerSettings(**{**dict(num_frames=9, height=32, width=32, num_inference_steps=STEPS,
                                     guidance_scale=4.0, seed=5), **kw})


def _run(model, pos, neg, settings, cache, **kw):
    with SC.session(cache, model, settings) as predict:
        out = sample(model, pos, neg, settings, predict=predict, **kw)
    return out, predict.stats


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) ** 2).mean().item()
    return 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()


def test_first_run_calibrates_beside_the_model_then_runs_skip(tiny):
    model, pos, neg = tiny
    s = _settings(seed=1)
    plain = sample(model, pos, neg, s)
    cache = SC.StepCache(threshold=0.1, max_skips=3)
    first, stats = _run(model, pos, neg, s, cache)
    assert stats.calibrated and stats.skipped == 0 and stats.calls == STEPS
    assert torch.equal(first, plain)                                  # calibrating changes nothing
    stored = json.loads((model.path / SC.STORE_NAME).read_text())["entries"]
    (key, entry), = stored.items()
    assert "steps=20" in key and "branches=2" in key
    assert len(entry["ratios"]) == STEPS and all(len(r) == 2 for r in entry["ratios"])   # per CFG branch
    assert entry["ratios"][0] == [1.0, 1.0] and all(0.5 < r < 2.0 for row in entry["ratios"] for r in row)
    cached, stats = _run(model, pos, neg, s, cache)
    assert not stats.calibrated and stats.skipped >= 5 and stats.calls + stats.skipped == STEPS
    assert _psnr(model.decode(cached), model.decode(plain)) > 30
    assert not torch.equal(cached, plain)


def test_threshold_zero_is_the_uncached_result(tiny):
    model, pos, neg = tiny
    s = _settings(seed=2)
    cache = SC.StepCache(threshold=0.0)
    _run(model, pos, neg, s, cache)                                   # calibrate (or reuse) this key
    out, stats = _run(model, pos, neg, s, cache)
    assert stats.skipped == 0 and torch.equal(out, sample(model, pos, neg, s))


def test_retention_and_max_skips_bound_the_skipped_steps(tiny):
    model, pos, neg = tiny
    s = _settings(seed=3)
    cache = SC.StepCache(threshold=5.0, max_skips=2, retention=0.25)   # threshold so large only the bounds act
    _run(model, pos, neg, s, cache)
    _, stats = _run(model, pos, neg, s, cache)
    skipped = stats.skipped_steps
    assert skipped and min(skipped) >= 5                             # the first 25% of 20 steps always compute
    runs, run = [], 0
    for i in range(STEPS):
        run = run + 1 if i in skipped else 0
        runs.append(run)
    assert max(runs) == 2                                             # never more than max_skips in a row
    assert stats.calls == 5 + len([i for i in range(5, STEPS) if i not in skipped])
    assert max(skipped) >= STEPS - 2
    _, tail = _run(model, pos, neg, s, SC.StepCache(threshold=5.0, max_skips=2, retention=0.25, tail=0.2))
    assert tail.skipped_steps and max(tail.skipped_steps) < STEPS - 4   # the last 20% of 20 steps always compute


def test_guidance_off_calibrates_its_own_single_branch(tiny, tmp_path):
    model, pos, neg = tiny
    cache = SC.StepCache(store=tmp_path)
    _, stats = _run(model, pos, neg, _settings(guidance_scale=1.0), cache)
    assert stats.calibrated
    (entry,) = json.loads(SC.store_path(model, cache).read_text())["entries"].values()
    assert all(len(r) == 1 for r in entry["ratios"])
    assert not (tmp_path / SC.STORE_NAME).exists() and SC.store_path(model, cache).parent == tmp_path


def test_windows_cache_each_window(tiny, tmp_path):
    model, pos, neg = tiny
    s = _settings(num_frames=17, seed=4)
    ctx = ContextOptions(context_length=9, context_overlap=4)
    plain = sample(model, pos, neg, s, context=ctx)
    cache = SC.StepCache(threshold=0.1, store=tmp_path)
    _, first = _run(model, pos, neg, s, cache, context=ctx)
    windows = first.calls // STEPS
    assert first.calibrated and windows >= 2 and first.calls == windows * STEPS
    out, stats = _run(model, pos, neg, s, cache, context=ctx)
    assert stats.skipped >= windows * 4 and stats.calls + stats.skipped == windows * STEPS
    assert _psnr(model.decode(out), model.decode(plain)) > 28


def test_an_interrupted_run_stores_nothing(tiny, tmp_path):
    model, pos, neg = tiny
    cache = SC.StepCache(store=tmp_path)

    def stop(i, total, latents):
        if i == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(model, pos, neg, _settings(seed=9, num_inference_steps=7), cache, on_step=stop)
    assert not SC.store_path(model, cache).exists()


def test_unwritable_store_warns_and_keeps_the_ratios_for_this_process(tiny, tmp_path):
    model, pos, neg = tiny
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = SC.StepCache(store=blocker / "sub")                       # a folder inside a file: cannot be made
    s = _settings(num_inference_steps=11)
    with pytest.warns(UserWarning, match="cannot store the calibration"):
        _run(model, pos, neg, s, cache)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, stats = _run(model, pos, neg, s, cache)
    assert not stats.calibrated and stats.skipped > 0


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="`threshold` must be between"):
        SC.StepCache(threshold=-1).check()
    with pytest.raises(ValueError, match="`step_cache` cannot be used with method flowedit"):
        SC.refuse_flowedit(SC.StepCache())


def test_nodes_take_the_cache(tiny, tmp_path):
    from kinema.nodes.edit import KinemaVideoEdit
    from kinema.nodes.sampling import KinemaStepCache, KinemaTemporalSampler
    model, pos, neg = tiny
    (cache,) = KinemaStepCache().options(threshold=0.1, max_skips=3, retention=0.2)
    args = dict(model=model, positive=pos, negative=neg, length=9, width=32, height=32, steps=12, cfg=4.0, seed=7,
                scheduler="default", shift=0.0, denoise=1.0)
    plain = KinemaTemporalSampler().sample(**args)[0]["samples"]
    first = KinemaTemporalSampler().sample(**args, step_cache=cache)
    assert "calibrated" in first["ui"]["text"][0] and torch.equal(first["result"][0]["samples"], plain)
    second = KinemaTemporalSampler().sample(**args, step_cache=cache)
    assert "skipped" in second["ui"]["text"][0]
    video = model.decode(plain).clamp(0, 1)                                                # (F, H, W, 3)
    edit = dict(model=model, images=video, positive=pos, negative=neg, strength=0.6, steps=12, cfg=4.0,
                source_cfg=1.5, seed=1)
    out = KinemaVideoEdit().edit(method="sdedit", **edit, step_cache=cache)[0]
    assert out.shape == video.shape
    with pytest.raises(ValueError, match="step_cache"):
        KinemaVideoEdit().edit(method="flowedit", **edit, source_prompt=pos, step_cache=cache)
