"""LoRAs (models/lora.py): every layout gives the denoiser output diffusers' own load_lora_weights gives (or, for
what diffusers drops, the documented math: W + strength * delta merged by hand), within 1e-5; un-patching restores
the base bit for bit; views of one base never see each other's patches; fp8-stored weights are patched on the fly,
never merged into; a LoRA for another model is an error naming it."""
from __future__ import annotations

import copy
import logging

import pytest
import torch
from safetensors.torch import save_file

from kinema.models import lora_keys
from kinema.models.families import load_model
from kinema.models.fixtures import build_wan_lightx2v_lora
from kinema.models.lora import LoraModel, load_lora, made_for

WAN = "fixture-wan-t2v"
TOL = 1e-5


@pytest.fixture(scope="module")
def wan(models_dir, one_thread):
    return load_model(models_dir / "diffusers" / WAN)


@pytest.fixture(scope="module")
def animatediff(models_dir, one_thread):
    return load_model(models_dir / "diffusers" / "fixture-animatediff")


def _ref_pipe(models_dir, name=WAN):
    """A separate copy of the fixture as diffusers loads it (for load_lora_weights to change: needs peft, which the
    `test` extra installs)."""
    pytest.importorskip("peft")
    from diffusers import DiffusionPipeline
    return DiffusionPipeline.from_pretrained(str(models_dir / "diffusers" / name), local_files_only=True)


def _wan_inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 2, 8, 8, generator=g)                                    # (B, C, f, h, w)
    return x, torch.tensor(700.0), {"encoder_hidden_states": torch.randn(1, 12, 32, generator=g)}


def _wan_out(transformer, x, t, batch):
    with torch.no_grad():
        return transformer(hidden_states=x, timestep=t.expand(1), return_dict=False, **batch)[0]


def _predict(model, x, t, batch):
    with torch.no_grad():
        return model.predict(x, t, batch)


def _save(tmp_path, name, tensors, metadata=None):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def _pairs(transformer, names, rank=4, alpha=None, seed=0, fmt="diffusion_model.{}", kohya=False, bias=True):
    """A LoRA pair (+ alpha, + diff_b) for each diffusers parameter name in `names`, written with the original Wan
    name through fmt (kohya: `_` for `.` in the name)."""
    g = torch.Generator().manual_seed(seed)
    params = dict(transformer.named_parameters())
    out = {}
    for n in names:
        p = params[n]
        orig = lora_keys.wan_original(n)[: -len(".weight")]
        key = fmt.format(orig.replace(".", "_") if kohya else orig)
        out[f"{key}.lora_down.weight"] = torch.randn(rank, p.shape[1], generator=g) * 0.3
        out[f"{key}.lora_up.weight"] = torch.randn(p.shape[0], rank, generator=g) * 0.3
        if alpha is not None:
            out[f"{key}.alpha"] = torch.tensor(float(alpha))
        if bias and f"{n[: -len('.weight')]}.bias" in params:
            out[f"{key}.diff_b"] = torch.randn(p.shape[0], generator=g) * 0.1
    return out


def _linear_names(transformer, prefix="blocks."):
    return [n for n, p in transformer.named_parameters() if p.ndim == 2 and n.startswith(prefix)]


# ---- each layout == diffusers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("strength", [0.7, -1.3])
def test_comfyui_kohya_and_causvid_layout_equals_diffusers(wan, models_dir, tmp_path, strength):
    """`diffusion_model.` original keys with lora_down/lora_up/alpha and diff_b on every block layer and, as in
    CausVid's LoRA, on the time projection, text/time embeddings and the head: diffusers' WanPipeline converts the
    same file with _convert_non_diffusers_wan_lora_to_diffusers."""
    tr = wan.transformer
    top = ["condition_embedder.time_proj.weight", "condition_embedder.text_embedder.linear_1.weight",
           "condition_embedder.time_embedder.linear_2.weight", "proj_out.weight"]
    # (diffusers' converter reads alpha inside blocks only: the top-level layers go without, i.e. scale 1)
    sd = {**_pairs(tr, _linear_names(tr), alpha=2.0), **_pairs(tr, top, seed=1)}
    path = _save(tmp_path, "causvid.safetensors", sd)
    view, report = load_lora(wan, path, strength)
    assert report.loaded == report.total == len(sd)
    ref = _ref_pipe(models_dir)
    ref.load_lora_weights(dict(sd), adapter_name="x")
    ref.set_adapters(["x"], [strength])
    x, t, batch = _wan_inputs()
    want = _wan_out(ref.transformer, x, t, batch)
    got = _predict(view, x, t, batch)
    assert (got - _predict(wan, x, t, batch)).abs().max() > 0.05             # the LoRA does change the output
    assert (got - want).abs().max() < TOL


def test_musubi_lora_unet_layout_equals_diffusers(wan, models_dir, tmp_path):
    """kohya/musubi-tuner names (`lora_unet_blocks_0_self_attn_q`): diffusers converts them with
    _convert_musubi_wan_lora_to_diffusers."""
    tr = wan.transformer
    sd = _pairs(tr, _linear_names(tr), alpha=8.0, bias=False, seed=3, fmt="lora_unet_{}", kohya=True)
    assert "lora_unet_blocks_0_self_attn_q.lora_down.weight" in sd
    view, report = load_lora(wan, _save(tmp_path, "musubi.safetensors", sd), 1.0)
    assert report.loaded == report.total
    ref = _ref_pipe(models_dir)
    ref.load_lora_weights(dict(sd))
    x, t, batch = _wan_inputs()
    assert (_predict(view, x, t, batch) - _wan_out(ref.transformer, x, t, batch)).abs().max() < TOL


def test_peft_diffusers_layout_equals_the_diffusers_adapter(wan, models_dir, tmp_path):
    """A PEFT adapter made by diffusers (lora_alpha 8 != r 4) and saved with save_lora_weights (transformer.* keys,
    lora_adapter_metadata): the view equals the diffusers model running its own adapter."""
    ref = _ref_pipe(models_dir)
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    cfg = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                     target_modules=["to_q", "to_k", "to_v", "to_out.0", "net.0.proj", "net.2", "proj_out"])
    torch.manual_seed(5)
    ref.transformer.add_adapter(cfg, adapter_name="p")
    ref.transformer.set_adapters(["p"], weights=[0.6])
    type(ref).save_lora_weights(tmp_path, transformer_lora_layers=get_peft_model_state_dict(ref.transformer, adapter_name="p"),
                                transformer_lora_adapter_metadata=cfg.to_dict())
    view, report = load_lora(wan, tmp_path / "pytorch_lora_weights.safetensors", 0.6)
    assert report.loaded == report.total > 0
    x, t, batch = _wan_inputs()
    assert (_predict(view, x, t, batch) - _wan_out(ref.transformer, x, t, batch)).abs().max() < TOL


def _merged(transformer, sd: dict, strength: float):
    """The documented math, independently of Kinema's matching: each original name goes through diffusers'
    convert_wan_transformer_to_diffusers, and W += strength * (alpha/r * up @ down | diff), b += strength * diff_b,
    <parent>.modulation += strength * diff_m."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    model = copy.deepcopy(transformer)
    params = dict(model.named_parameters())

    def param(orig):
        return params[next(iter(convert_wan_transformer_to_diffusers({orig: None})))]

    with torch.no_grad():
        for key, v in sd.items():
            name = key.removeprefix("diffusion_model.")
            if name.endswith(".lora_down.weight"):
                mod = name[: -len(".lora_down.weight")]
                up, rank = sd[f"diffusion_model.{mod}.lora_up.weight"], v.shape[0]
                alpha = float(sd.get(f"diffusion_model.{mod}.alpha", torch.tensor(float(rank))))
                p = param(f"{mod}.weight")
                p += strength * (alpha / rank) * (up.flatten(1) @ v.flatten(1)).reshape(p.shape)
            elif name.endswith(".diff_b"):
                param(name[: -len(".diff_b")] + ".bias").add_(strength * v)
            elif name.endswith(".diff_m"):
                p = param(name[: -len(".diff_m")] + ".modulation")
                p.add_(strength * v.reshape(p.shape))
            elif name.endswith(".diff"):
                param(name[: -len(".diff")] + ".weight").add_(strength * v)
    return model


def test_lightx2v_deltas_equal_the_documented_math(wan, models_dir):
    """lightx2v's layout (the shipped fixture LoRA): full-rank `diff` on norms and the patch embedding, `diff_b`,
    `diff_m` on the modulation tables, pairs everywhere else. diffusers' converter refuses this layout (it has no
    place for `diff_m` and full-rank deltas), so the reference is the merge done by hand."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_wan_lora_to_diffusers
    path = models_dir / "loras" / "fixture-wan-lightx2v.safetensors"
    sd = build_wan_lightx2v_lora(wan.transformer)
    assert any(k.endswith(".diff_m") for k in sd) and any(k.endswith("norm_q.diff") for k in sd)
    with pytest.raises(ValueError, match="diff_m"):                               # why diffusers is no reference here
        _convert_non_diffusers_wan_lora_to_diffusers(dict(sd))
    view, report = load_lora(wan, path, 0.8)
    assert report.loaded == report.total == len(sd)
    x, t, batch = _wan_inputs()
    want = _wan_out(_merged(wan.transformer, sd, 0.8), x, t, batch)
    assert (_predict(view, x, t, batch) - want).abs().max() < TOL


def test_animatediff_motion_lora_equals_diffusers_in_both_namings(animatediff, models_dir, tmp_path):
    """A motion LoRA in diffusers' naming (unet.*.motion_modules.*.attn1.to_q.lora.down.weight) loaded by
    AnimateDiffPipeline.load_lora_weights, and the same tensors in the original AnimateDiff naming
    (temporal_transformer ... attention_blocks.0.processor.to_q_lora.down.weight), give the same UNet output."""
    unet = animatediff.unet
    g = torch.Generator().manual_seed(2)
    diffusers_sd, original_sd = {}, {}
    for n, p in unet.named_parameters():
        if "motion_modules" in n and ".attn" in n and n.endswith(".weight") and p.ndim == 2:
            d, u = torch.randn(2, p.shape[1], generator=g) * 0.3, torch.randn(p.shape[0], 2, generator=g) * 0.3
            mod = n[: -len(".weight")]
            diffusers_sd[f"unet.{mod}.lora.down.weight"], diffusers_sd[f"unet.{mod}.lora.up.weight"] = d, u
            orig = lora_keys.motion_original(n)[: -len(".weight")].replace(".to_out.0", ".to_out")
            head, _, leaf = orig.rpartition(".")
            original_sd[f"{head}.processor.{leaf}_lora.down.weight"] = d
            original_sd[f"{head}.processor.{leaf}_lora.up.weight"] = u
    views = [load_lora(animatediff, _save(tmp_path, f"m{i}.safetensors", sd), 1.0) for i, sd in
             enumerate((diffusers_sd, original_sd))]
    assert all(r.loaded == r.total == len(diffusers_sd) for _, r in views)
    ref = _ref_pipe(models_dir, "fixture-animatediff")
    ref.load_lora_weights(dict(diffusers_sd))
    g = torch.Generator().manual_seed(3)
    x, ehs = torch.randn(1, 4, 4, 8, 8, generator=g), torch.randn(4, 77, 8, generator=g)   # (B, C, F, h, w)
    batch = {"encoder_hidden_states": ehs}
    with torch.no_grad():
        want = ref.unet(x, torch.tensor(500), encoder_hidden_states=ehs).sample
    for view, _ in views:
        assert (_predict(view, x, torch.tensor(500), batch) - want).abs().max() < TOL
    assert (_predict(animatediff, x, torch.tensor(500), batch) - want).abs().max() > 1e-3


def test_kohya_sd15_lora_with_conv_layers_equals_diffusers(animatediff, models_dir, tmp_path, caplog):
    """kohya's SD 1.5 LoRA on AnimateDiff's UNet: attention pairs and LoCon conv pairs (down (r, in, 3, 3), up
    (out, r, 1, 1)) with alpha; its text-encoder keys are not applied and reported (a partial match warns)."""
    unet = animatediff.unet
    g = torch.Generator().manual_seed(4)
    sd = {}
    for n, p in unet.named_parameters():
        conv = "resnets" in n and n.endswith("conv1.weight")
        if ("attentions" in n and ".attn" in n and n.endswith("to_q.weight")) or conv:
            key = "lora_unet_" + n[: -len(".weight")].replace(".", "_")
            sd[f"{key}.lora_down.weight"] = torch.randn(2, *p.shape[1:], generator=g) * 0.2
            sd[f"{key}.lora_up.weight"] = torch.randn(p.shape[0], 2, *(1,) * (p.ndim - 2), generator=g) * 0.2
            sd[f"{key}.alpha"] = torch.tensor(1.0)
    te = {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(2, 8),
          "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(8, 2)}
    with caplog.at_level(logging.WARNING, logger="kinema.lora"):
        view, report = load_lora(animatediff, _save(tmp_path, "sd15.safetensors", {**sd, **te}), 0.9)
    assert (report.loaded, report.total) == (len(sd), len(sd) + 2) and report.partial
    assert f"{len(sd)} of {len(sd) + 2} keys loaded" in report.text() and "2 text encoder" in report.text()
    assert "not loaded" in caplog.text
    ref = _ref_pipe(models_dir, "fixture-animatediff")
    ref.load_lora_weights(dict(sd), adapter_name="k")
    ref.set_adapters(["k"], [0.9])
    g = torch.Generator().manual_seed(3)
    x, ehs = torch.randn(1, 4, 2, 8, 8, generator=g), torch.randn(2, 77, 8, generator=g)
    with torch.no_grad():
        want = ref.unet(x, torch.tensor(300), encoder_hidden_states=ehs).sample
    got = _predict(view, x, torch.tensor(300), {"encoder_hidden_states": ehs})
    assert (got - want).abs().max() < TOL


# ---- patching leaves the base alone ----------------------------------------------------------------------------
def test_unpatching_restores_the_exact_base_weights(wan, models_dir):
    tr = wan.transformer
    before = {n: (p, p.detach().clone()) for n, p in tr.named_parameters()}
    x, t, batch = _wan_inputs()
    base = _predict(wan, x, t, batch)
    view, _ = load_lora(wan, models_dir / "loras" / "fixture-wan-lightx2v.safetensors", 1.0)
    _predict(view, x, t, batch)
    after = dict(tr.named_parameters())
    assert after.keys() == before.keys()
    assert all(after[n] is p and torch.equal(p, saved) for n, (p, saved) in before.items())   # same objects, bits
    assert not any(m._forward_hooks for m in tr.modules())                                   # no hook left
    assert torch.equal(_predict(wan, x, t, batch), base)


def test_views_of_one_base_each_see_their_own_patches(wan, models_dir, tmp_path):
    """Two LoRA views and the base itself, called interleaved (as two Load LoRA nodes and a plain sampler in one
    graph), each give what they give alone; a chain equals both LoRAs merged."""
    tr = wan.transformer
    a_sd = build_wan_lightx2v_lora(tr)
    b_sd = _pairs(tr, _linear_names(tr), alpha=4.0, seed=9)
    a, _ = load_lora(wan, _save(tmp_path, "a.safetensors", a_sd), 1.0)
    b, _ = load_lora(wan, _save(tmp_path, "b.safetensors", b_sd), -0.5)
    both, _ = load_lora(a, tmp_path / "b.safetensors", -0.5)
    assert isinstance(both, LoraModel) and both.base is wan and len(both.loras) == 2
    x, t, batch = _wan_inputs()
    alone = {k: _predict(m, x, t, batch) for k, m in (("a", a), ("base", wan), ("b", b))}
    for k, m in (("b", b), ("a", a), ("base", wan), ("a", a), ("b", b)):
        assert torch.equal(_predict(m, x, t, batch), alone[k]), k
    assert (alone["a"] - alone["b"]).abs().max() > 0.05
    want = _wan_out(_merged(_merged(tr, a_sd, 1.0), b_sd, -0.5), x, t, batch)
    assert (_predict(both, x, t, batch) - want).abs().max() < TOL


def test_fp8_stored_weights_are_patched_on_the_fly(models_dir, one_thread):
    """A copy of the fixture whose linear weights are stored as float8_e4m3fn (diffusers' layerwise casting, as an
    fp8 model file loads): the LoRA is applied on the layers' outputs, the fp8 weights are never touched, and the
    result equals the fp8 weights dequantised and merged by hand."""
    model = load_model(models_dir / "diffusers" / WAN)
    tr = model.transformer
    tr.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    q = tr.blocks[0].attn1.to_q.weight
    assert q.dtype == torch.float8_e4m3fn
    fp8 = {n: p.detach().clone() for n, p in tr.named_parameters()}
    path = models_dir / "loras" / "fixture-wan-lightx2v.safetensors"
    view, _ = load_lora(model, path, 1.0)
    x, t, batch = _wan_inputs()
    got = _predict(view, x, t, batch)
    assert all(p.dtype == fp8[n].dtype and torch.equal(p, fp8[n]) for n, p in tr.named_parameters())
    plain = load_model(models_dir / "diffusers" / WAN).transformer         # fp32, weights = the fp8 ones dequantised
    with torch.no_grad():
        for n, p in plain.named_parameters():
            p.copy_(fp8[n].float())
    want = _wan_out(_merged(plain, build_wan_lightx2v_lora(plain), 1.0), x, t, batch)
    assert (got - want).abs().max() < TOL


# ---- sampling ----------------------------------------------------------------------------------------------------
def test_four_step_sampling_at_cfg_1_runs_the_lora_four_times_without_a_negative_pass(wan, models_dir):
    """The few-step recipe (4 steps, cfg 1, flow_euler, shift 5): exactly 4 denoiser calls, one sample each (no
    negative pass), every one with the LoRA in place; the latents equal sampling a hand-merged copy."""
    from kinema.models.sampling import SamplerSettings, sample
    view, _ = load_lora(wan, models_dir / "loras" / "fixture-wan-lightx2v.safetensors", 1.0)
    pos, neg = wan.encode_prompt("a paper boat"), wan.encode_prompt("blurry")
    settings = SamplerSettings(num_frames=5, height=32, width=32, num_inference_steps=4, guidance_scale=1.0, seed=7,
                               scheduler="flow_euler", shift=5.0)
    calls = []
    probe = wan.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append((kwargs["hidden_states"].shape[0],
                                              bool(m.blocks[0].attn1.to_q._forward_hooks))), with_kwargs=True)
    try:
        got = sample(view, pos, neg, settings)
    finally:
        probe.remove()
    assert calls == [(1, True)] * 4
    merged = load_model(models_dir / "diffusers" / WAN)
    merged._set_denoiser(_merged(wan.transformer, build_wan_lightx2v_lora(wan.transformer), 1.0))
    want = sample(merged, pos, neg, settings)
    assert (got - want).abs().max() < 1e-4
    assert (got - sample(wan, pos, neg, settings)).abs().max() > 1e-2


# ---- errors and reports -----------------------------------------------------------------------------------------
def _shapes_lora(keys_shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(s) for k, s in keys_shapes.items()}


@pytest.mark.parametrize("lora, made", [
    ({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": (1, 5120),
      "diffusion_model.blocks.0.self_attn.q.lora_up.weight": (5120, 1),
      "diffusion_model.blocks.39.ffn.0.lora_down.weight": (1, 5120)}, "Wan 14B (2.1 T2V/I2V, or 2.2 A14B) "
                                                                       "(hidden size 5120, 40 blocks)"),
    ({"down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor."
      "to_q_lora.down.weight": (2, 320)}, "an AnimateDiff motion module"),
    ({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768),
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": (320, 4)},
     "Stable Diffusion 1.x (UNet, cross-attention width 768)"),
])
def test_a_lora_for_another_model_is_an_error_naming_it(wan, tmp_path, lora, made):
    path = _save(tmp_path, "other.safetensors", _shapes_lora(lora))
    assert made_for({k: v for k, v in lora.items()}) == made
    with pytest.raises(ValueError, match="matches none of the layers") as info:
        load_lora(wan, path, 1.0)
    assert made in str(info.value) and "fixture-wan-t2v" in str(info.value) and f"0 of {len(lora)} keys" in str(
        info.value)


def test_a_wan_lora_on_animatediff_names_wan(animatediff, models_dir):
    with pytest.raises(ValueError, match=r"seems made for a Wan-style DiT \(hidden size 24, 2 blocks\)"):
        load_lora(animatediff, models_dir / "loras" / "fixture-wan-lightx2v.safetensors", 1.0)


def test_strength_zero_passes_the_model_through_and_bad_files_are_refused(wan, models_dir, tmp_path):
    path = models_dir / "loras" / "fixture-wan-lightx2v.safetensors"
    same, report = load_lora(wan, path, 0.0)
    assert same is wan and report.loaded == report.total
    with pytest.raises(ValueError, match="never loaded"):
        load_lora(wan, tmp_path / "x.ckpt", 1.0)
    with pytest.raises(FileNotFoundError, match="models/loras"):
        load_lora(wan, tmp_path / "missing.safetensors", 1.0)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="readable"):
        load_lora(wan, tmp_path / "bad.safetensors", 1.0)


def test_original_names_agree_with_diffusers_converters_at_full_size(models_dir):
    """Every original-name candidate Kinema lists for a full-size Wan 2.1 14B I2V, a Wan VACE and a UNetMotionModel
    is confirmed by diffusers' own single-file converter (none dropped): the name mapping is diffusers'."""
    from accelerate import init_empty_weights
    from diffusers import UNetMotionModel, WanTransformer3DModel, WanVACETransformer3DModel
    with init_empty_weights():
        models = [WanTransformer3DModel(num_attention_heads=40, attention_head_dim=128, in_channels=36,
                                        ffn_dim=13824, num_layers=40, image_dim=1280, added_kv_proj_dim=5120),
                  WanVACETransformer3DModel(num_layers=4, vace_layers=[0, 2]),
                  UNetMotionModel()]
    for m in models:
        names = [n for n, _ in m.named_parameters()]
        candidates = {lora_keys.ORIGINAL_LAYOUTS[type(m).__name__][0](n) for n in names} - {None, *names}
        confirmed = lora_keys.original_names(m, names)
        assert len(confirmed) == len(candidates) > 0, type(m).__name__
    wan14 = lora_keys.original_names(models[0], [n for n, _ in models[0].named_parameters()])
    assert wan14["blocks.3.cross_attn.k_img.weight"] == "blocks.3.attn2.add_k_proj.weight"
    assert wan14["head.modulation"] == "scale_shift_table" and wan14["blocks.0.norm3.bias"] == "blocks.0.norm2.bias"
