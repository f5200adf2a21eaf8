"""Memory estimate (models/memory.py) and Model Options (models/model_options.py): the estimate's arithmetic and
the profile of real models, the refusal before sampling, fp8 storage, attention backend, compile, offload on CPU,
and the loaders' `options` input."""
from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch

from kinema.models import memory as M
from kinema.models import model_options as MO
from kinema.models.families import VIDEO
from kinema.models.sampling import SamplerSettings, sample
from kinema.models.tiny.pipeline import DEFAULT_WEIGHTS

GB = M.GB
# Wan 2.1 T2V 1.3B: 1.42 G parameters in bf16, hidden 12 x 128, FFN 8960, 30 blocks, patches (1, 2, 2)
WAN13 = M.Profile("transformer", weights=int(1.42e9 * 2), resident=0, width=1536, ffn=8960, patch=(1, 2, 2),
                  blocks=30, compute_bytes=2, latent_channels=16)


def test_estimate_arithmetic_for_wan_480p():
    est = M.estimate(WAN13, 21, 60, 104, guided=True, device="cuda:0")   # 81 frames at 832x480
    tokens = 21 * 30 * 52
    acts = 2 * tokens * (6 * 1536 + 8960) * 2
    loop = 8 * 2 * 16 * 21 * 60 * 104 * 4
    assert est.weights == WAN13.weights
    assert est.run == int((acts + loop) * 1.1 + M.CUDA_RESERVE)
    assert 2.5 * GB < est.run < 4 * GB and 5 * GB < est.total < 7 * GB
    assert "needs ~" in est.text() and "cuda:0" in est.text(10 * GB) and "10.0 GB free" in est.text(10 * GB)


def test_estimate_follows_the_settings():
    base = M.estimate(WAN13, 21, 60, 104, guided=True)
    assert M.estimate(WAN13, 5, 60, 104, guided=True).run < base.run            # fewer frames
    assert M.estimate(WAN13, 21, 60, 104, guided=False).run < 0.6 * base.run     # no CFG batch
    fp8 = M.estimate(WAN13.with_storage(1, 2), 21, 60, 104, guided=True)
    assert fp8.weights == WAN13.weights // 2 and fp8.run == base.run
    off = M.Profile(**{**WAN13.__dict__, "offloaded": True, "onload": 2})
    assert M.estimate(off, 21, 60, 104, guided=True).weights < 0.25 * WAN13.weights
    unet = M.Profile("unet", weights=int(1.7e9), resident=0, width=320, ffn=1280, compute_bytes=2,
                     latent_channels=4)
    small, big = (M.estimate(unet, 16, s, s, guided=True).run for s in (32, 64))
    assert 3.5 < big / small < 4.1                                             # 4x the cells


@pytest.fixture(scope="module")
def tiny(one_thread):
    model = VIDEO.load(DEFAULT_WEIGHTS)
    return model, model.encode_prompt("a green square moves up"), model.encode_prompt("")


SETTINGS = SamplerSettings(num_frames=9, height=32, width=32, num_inference_steps=6, guidance_scale=4.0, seed=2)


def test_profile_of_real_models(tiny, models_dir):
    model, *_ = tiny
    p = M.profile(model)
    params = sum(t.numel() * t.element_size() for t in model.transformer.state_dict().values())
    assert p.kind == "transformer" and p.weights == params and p.blocks == model.transformer.config.depth
    assert p.compute_bytes == 4 and p.resident > 0 and p.latent_channels == model.latent_channels
    ad = VIDEO.load(models_dir / "diffusers" / "fixture-animatediff")
    pa = M.profile(ad)
    assert pa.kind == "unet" and pa.width == ad.unet.config.block_out_channels[0]
    wan = VIDEO.load(models_dir / "diffusers" / "fixture-wan-t2v")
    pw = M.profile(wan)
    assert pw.patch == tuple(wan.transformer.config.patch_size) and pw.ffn == wan.transformer.config.ffn_dim


def test_check_passes_or_refuses_naming_the_settings(tiny):
    model, *_ = tiny
    assert M.check(model, SETTINGS, guided=True).startswith("memory: needs ~")
    with pytest.raises(ValueError, match=r"`length` with 32x32 and cfg does not fit: needs ~.* free, got 9\. Lower "
                                         r"width/height or length.*cfg 1.*fp8"):
        M.check(model, SETTINGS, guided=True, free=1000)


def _psnr(a, b) -> float:
    return 10 * torch.log10(1 / ((a - b) ** 2).mean().clamp_min(1e-12)).item()


def test_fp8_storage_quarters_fp32_weights_and_stays_close(tiny):
    model, pos, neg = tiny
    ref = model.decode(sample(model, pos, neg, SETTINGS))
    fp8 = VIDEO.load(DEFAULT_WEIGHTS)
    notes = MO.apply_options(fp8, MO.ModelOptions(weights="fp8_e4m3fn"))
    assert notes[0].startswith("weights: float8_e4m3fn storage, float32 compute (") and len(notes) == 1
    linears = [m for m in fp8.transformer.blocks.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.float8_e4m3fn for m in linears)
    assert M.profile(fp8).weights < 0.35 * M.profile(model).weights
    out = fp8.decode(sample(fp8, pos, neg, SETTINGS))
    assert 25 < _psnr(out, ref) < 80                    # changed (fp8 rounding), and still the same clip
    with pytest.raises(ValueError, match="`options` were already applied"):
        MO.apply_options(fp8, MO.ModelOptions(compile=True))


def test_attention_compile_and_offload_on_cpu(tiny):
    model, pos, neg = tiny
    ref = sample(model, pos, neg, SETTINGS)
    other = VIDEO.load(DEFAULT_WEIGHTS)
    with pytest.warns(UserWarning, match="offload_blocks 2 does nothing on cpu"):
        notes = MO.apply_options(other, MO.ModelOptions(attention="native", compile=True, compile_backend="eager",
                                                        offload_blocks=2))
    assert notes[0] == "attention: native" and "offload: none on cpu" in notes[1]
    assert notes[2].startswith(f"compile: {model.transformer.config.depth} repeated blocks")
    assert all(b._compiled_call_impl is not None for b in other.transformer.blocks)
    assert torch.allclose(sample(other, pos, neg, SETTINGS), ref, atol=1e-5)


def test_unavailable_backends_and_bad_values_are_refused(tiny, models_dir):
    missing = [c for c, pkg in MO.PACKAGES.items() if importlib.util.find_spec(pkg) is None]
    assert "native" in MO.available_attention()
    wan = VIDEO.load(models_dir / "diffusers" / "fixture-wan-t2v")
    if missing:
        with pytest.raises(ValueError, match=f"`attention` needs the {MO.PACKAGES[missing[0]]} package"):
            MO.apply_options(wan, MO.ModelOptions(attention=missing[0].value))
    tiny_model = VIDEO.load(DEFAULT_WEIGHTS)
    if "flash" in MO.available_attention():
        with pytest.raises(ValueError, match="does not use diffusers' attention dispatcher"):
            MO.apply_options(tiny_model, MO.ModelOptions(attention="flash"))
    with pytest.raises(ValueError, match="`weights` must be one of"):
        MO.ModelOptions(weights="int4").check()
    assert MO.apply_options(wan, MO.ModelOptions(attention="native")) == ["attention: native"]


def test_loader_takes_options_and_sampler_refuses_what_cannot_fit(kinema_dirs, monkeypatch):
    from kinema.nodes.loaders import KinemaLoadVideoModel, KinemaModelOptions
    from kinema.nodes.sampling import KinemaTemporalSampler
    (opts,) = KinemaModelOptions().options(weights="fp8_e4m3fn", offload_blocks=0, attention="default",
                                           compile=False)
    out = KinemaLoadVideoModel().load("fixture-wan-t2v", "auto", "cpu", "bf16", "none", options=opts)
    (model,) = out["result"]
    assert "float8_e4m3fn storage, bfloat16 compute" in out["ui"]["text"][0]
    with pytest.raises(ValueError, match="`options` cannot be combined with parallel"):
        KinemaLoadVideoModel().load("fixture-wan-t2v", "auto", "cpu", "bf16", "none", "ulysses", 2, options=opts)
    pos, neg = model.encode_prompt("a cat"), model.encode_prompt("")
    (latent,) = KinemaTemporalSampler().sample(model, pos, neg, 5, 32, 32, 2, 5.0, 0, "default", 0.0, 1.0)
    assert torch.isfinite(latent["samples"]).all()
    monkeypatch.setattr(M, "free_bytes", lambda device: 1024)
    with pytest.raises(ValueError, match="`length` with 32x32 and cfg does not fit"):
        KinemaTemporalSampler().sample(model, pos, neg, 5, 32, 32, 2, 5.0, 0, "default", 0.0, 1.0)


def test_text_encoder_visits_the_device_only_while_it_runs():
    """visit_device (block offload's text encoder): moved to the device before each call and home after; the
    output is the module's own. (Two devices are needed to see the weights move; here the moves are recorded.)"""
    from torch import nn
    from kinema.models.model_options import visit_device
    moves = []

    class Recorded(nn.Linear):
        def to(self, *args, **kwargs):
            moves.append(str(args[0]))
            return super().to(*args, **kwargs)

    layer = Recorded(4, 3)
    x = torch.randn(2, 4)
    want = layer(x)
    visit_device(layer, torch.device("cpu", 0), home=torch.device("cpu"))   # "cpu:0" stands for the GPU
    assert moves == ["cpu"]
    got = layer(x)
    layer(x)
    assert torch.equal(got, want) and moves == ["cpu", "cpu:0", "cpu", "cpu:0", "cpu"]   # (device, home) per call
