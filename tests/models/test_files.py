"""kinema.models.files.load_denoiser on files written by ComfyUI's own classes (tests/data/comfy, made by
tools/make_comfy_reference.py from ComfyUI's public source): Kinema's diffusers module reproduces ComfyUI's outputs.

fp32 agreement: within 1e-4 (absolute, outputs of magnitude ~4). Scaled fp8: the weights Kinema loads are exactly
`weight.float() * scale_weight` (checked bit for bit against ComfyUI's own de-scaling), so the output matches
ComfyUI's fp8 computation within 1e-4 too; against the float32 weights the fp8 file came from, each weight is within
the e4m3fn rounding bound: |w8 - w| <= max(|w| / 16, 2^-10 * scale) (3 mantissa bits: half an ulp is 2^-4
relative; below the normal range the spacing is 2^-9 * scale).
"""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from kinema.models.files import detect_denoiser, known_variants, load_denoiser

from comfy_recipe import DATA, build_state_dict, seed_value, write

REF = load_file(str(DATA / "reference.safetensors"))
META = json.loads((DATA / "reference.json").read_text())
TOL = 1e-4


def _forward(model, x, t, ctx, **kw):
    with torch.no_grad():
        return model(x, t, ctx, return_dict=False, **kw)[0]


def _t2v(model):
    return _forward(model, REF["wan.x"], REF["wan.t"], REF["wan.context"])


@pytest.fixture(scope="module")
def bf16_prefixed(tmp_path_factory):
    return write("wan_t2v_bf16", tmp_path_factory.mktemp("comfy") / "wan_t2v_bf16_modelsave.safetensors")


@pytest.mark.parametrize("name,out", [("wan_t2v.fp16.safetensors", "wan.out_fp16"),
                                      ("wan_t2v.fp8_scaled.safetensors", "wan.out_fp8_scaled"),
                                      ("wan_t2v.Q8_0-mixed.gguf", "wan.out_gguf")])
def test_denoiser_reproduces_comfyui(one_thread, name, out):
    pytest.importorskip("gguf") if name.endswith(".gguf") else None
    model = load_denoiser(DATA / name, dtype=torch.float32, strict=False)
    assert type(model).__name__ == "WanTransformer3DModel"
    diff = (_t2v(model) - REF[out]).abs().max().item()
    assert diff < TOL, f"{name}: max |kinema - comfyui| = {diff}"


def test_prefixed_bf16_modelsave_layout(one_thread, bf16_prefixed):
    keys = list(load_file(str(bf16_prefixed)))
    assert all(k.startswith("model.diffusion_model.") for k in keys)
    model = load_denoiser(bf16_prefixed, strict=False)
    assert (_t2v(model) - REF["wan.out_bf16"]).abs().max().item() < TOL


def test_kijai_prefix_and_diffusers_layouts(one_thread, tmp_path):
    """Kijai's WanVideoWrapper files: original keys, sometimes under `diffusion_model.`; diffusers' names made by
    diffusers' own converter (convert_wan_transformer_to_diffusers), optionally under `transformer.`."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    sd = load_file(str(DATA / "wan_t2v.fp16.safetensors"))
    files = {"kijai": {"diffusion_model." + k: v for k, v in sd.items()},
             "diffusers": convert_wan_transformer_to_diffusers(dict(sd))}
    files["diffusers_prefixed"] = {"transformer." + k: v for k, v in files["diffusers"].items()}
    for name, tensors in files.items():
        save_file(tensors, tmp_path / f"{name}.safetensors")
        out = _t2v(load_denoiser(tmp_path / f"{name}.safetensors", strict=False))
        assert (out - REF["wan.out_fp16"]).abs().max().item() < TOL, name


def test_scaled_fp8_weights_descaled_exactly_and_within_e4m3_bound(one_thread):
    from kinema.models.files.formats import open_tensors, read_tensor
    with open_tensors(DATA / "wan_t2v.fp8_scaled.safetensors") as f:
        key = "blocks.1.ffn.0.weight"
        raw, scale = f.get(key), f.get("blocks.1.ffn.0.scale_weight")
        assert raw.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32 and scale.ndim == 0
        got = read_tensor(f, key, torch.float32)
    assert torch.equal(got, raw.float() * scale)  # ComfyUI: weight.to(float32) * scale_weight
    original = seed_value(key, raw.shape)  # the float32 weights ComfyUI's model held before quantising
    bound = torch.maximum(original.abs() / 16, torch.full_like(original, 2.0 ** -10) * scale)
    assert ((got - original).abs() <= bound * (1 + 1e-6)).all()
    assert (got - original).abs().max() > 0  # it really is quantised


@pytest.mark.parametrize("name", ["wan_i2v", "wan_flf2v", "wan_vace"])
def test_image_and_vace_variants_reproduce_comfyui(one_thread, tmp_path, name):
    file = write(name, tmp_path / f"{name}.safetensors")
    model = load_denoiser(file, strict=False)
    kw = {}
    if name == "wan_vace":
        assert type(model).__name__ == "WanVACETransformer3DModel"
        assert model.config.vace_layers == [0, 2]  # ComfyUI: range(0, num_layers, num_layers // vace_layers)
        kw = {"control_hidden_states": REF[f"{name}.vace_context"],
              "control_hidden_states_scale": torch.full((2,), 0.7)}
    else:
        tokens = 514 if name == "wan_flf2v" else 257
        clip = seed_value(f"{name}.clip_fea", (1, tokens, 1280)) * 10  # ComfyUI: (1, 257 per frame, 1280)
        kw = {"encoder_hidden_states_image": clip.reshape(-1, 257, 1280)}  # diffusers: FLF2V frames as batch
    ctx = REF[f"{name}.context"]  # (1, 7, text_dim), zero-padded to 512 tokens as ComfyUI's tokenizer pads it
    ctx = torch.cat([ctx, ctx.new_zeros(1, 512 - ctx.shape[1], ctx.shape[2])], 1)
    out = _forward(model, REF[f"{name}.x"], REF[f"{name}.t"], ctx, **kw)
    assert (out - REF[f"{name}.out"]).abs().max().item() < TOL


@pytest.mark.parametrize("name", ["wan_t2v.fp16.safetensors", "wan_t2v.fp8_scaled.safetensors", "wan_t2v_bf16",
                                  "wan_i2v", "wan_flf2v", "wan_vace"])
def test_detection_agrees_with_comfyui(tmp_path, name):
    comfy = META["detected"][name]
    file = DATA / name if name.endswith(".safetensors") else write(name, tmp_path / f"{name}.safetensors")
    cfg = detect_denoiser(file, strict=False).config
    assert cfg["num_attention_heads"] * cfg["attention_head_dim"] == comfy["dim"]
    assert cfg["num_attention_heads"] == comfy["num_heads"]
    assert (cfg["ffn_dim"], cfg["num_layers"], cfg["in_channels"], cfg["out_channels"], cfg["freq_dim"]) == (
        comfy["ffn_dim"], comfy["num_layers"], comfy["in_dim"], comfy["out_dim"], comfy["freq_dim"])
    assert (cfg["image_dim"] is not None) == (comfy["model_type"] == "i2v")
    assert cfg["pos_embed_seq_len"] == comfy.get("flf_pos_embed_token_number")
    assert len(cfg.get("vace_layers", [])) == comfy.get("vace_layers", 0)
    assert cfg.get("vace_in_channels") == comfy.get("vace_in_dim")


def _sparse_file(path, shapes: dict, dtype="BF16") -> None:
    """A safetensors file with the given shapes whose data is a hole (no disk, no RAM): for shape-only detection."""
    header, off = {}, 0
    for k, s in shapes.items():
        n = 2 * int(torch.Size(s).numel())
        header[k] = {"dtype": dtype, "shape": list(s), "data_offsets": [off, off + n]}
        off += n
    blob = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + off)


@pytest.mark.parametrize("variant", sorted(known_variants()))
def test_full_size_variants_detected_from_shapes(tmp_path, variant):
    """Every shipped variant config is recognised from a full-size file's shapes (diffusers' names here; the
    original layout of the 1.3B model is checked by bench/files_load.py and the next test)."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel, WanVACETransformer3DModel
    rec = known_variants()[variant]
    cls = WanVACETransformer3DModel if "vace_layers" in rec["diffusers_config"] else WanTransformer3DModel
    with init_empty_weights():
        m = cls.from_config(rec["diffusers_config"])
    _sparse_file(tmp_path / "model.safetensors", {k: tuple(v.shape) for k, v in m.state_dict().items()})
    assert detect_denoiser(tmp_path / "model.safetensors").variant == variant


def test_full_size_original_layout_1_3b_detected(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("files_load", DATA.parents[2] / "bench" / "files_load.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    shapes = bench.original_keys(bench.CONFIG_1_3B)
    _sparse_file(tmp_path / "wan2.1_t2v_1.3B_fp16.safetensors", {"model.diffusion_model." + k: s
                                                                 for k, s in shapes.items()})
    det = detect_denoiser(tmp_path / "wan2.1_t2v_1.3B_fp16.safetensors")
    assert det.variant == "wan2.1_t2v_1.3b" and det.label == "Wan 2.1 T2V 1.3B"


# ---------------------------------------------------------------- refusals: each names the input and the fix
def test_unknown_shapes_name_what_was_detected_and_nearest_variants():
    with pytest.raises(ValueError) as e:
        load_denoiser(DATA / "wan_t2v.fp16.safetensors")
    msg = str(e.value)
    assert msg.startswith("`denoiser` has tensor shapes of no known Wan variant")
    assert "wan_t2v.fp16.safetensors" in msg and "'dim': 128" in msg and "'num_layers': 2" in msg
    assert "Nearest known variants: wan2.1_t2v_1.3b" in msg and "strict=False" in msg


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_pickles_are_refused(tmp_path, suffix):
    p = tmp_path / f"wan2.1_t2v_1.3B{suffix}"
    p.write_bytes(b"\x80\x04not unpickled")
    with pytest.raises(ValueError) as e:
        load_denoiser(p)
    msg = str(e.value)
    assert msg.startswith("`denoiser` must be a .safetensors or .gguf file") and p.name in msg
    assert "never loaded" in msg and "Use the .safetensors release" in msg


def test_scaled_fp8_refused_as_plain_fp8():
    with pytest.raises(ValueError) as e:
        load_denoiser(DATA / "wan_t2v.fp8_scaled.safetensors", dtype=torch.float8_e4m3fn, strict=False)
    msg = str(e.value)
    assert msg.startswith("`denoiser` holds ComfyUI scaled fp8 weights") and "wan_t2v.fp8_scaled" in msg
    assert "dtype=torch.bfloat16" in msg and "de-scaled exactly" in msg


def test_scale_without_its_weight_is_refused(tmp_path):
    sd = load_file(str(DATA / "wan_t2v.fp8_scaled.safetensors"))
    sd["blocks.0.extra_proj.scale_weight"] = torch.tensor(0.5)  # a scale Kinema would have nowhere to apply
    save_file(sd, tmp_path / "odd_fp8.safetensors")
    with pytest.raises(ValueError) as e:
        load_denoiser(tmp_path / "odd_fp8.safetensors", strict=False)
    assert str(e.value).startswith("`denoiser` has scale_weight tensors") and "blocks.0.extra_proj" in str(e.value)


def test_not_a_denoiser_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match=r"^`denoiser` is not a Wan denoiser file .*umt5_tiny.*text_encoders"):
        load_denoiser(DATA / "umt5_tiny.fp16.safetensors")
    with pytest.raises(FileNotFoundError, match="`denoiser` file not found"):
        load_denoiser(tmp_path / "nothing.safetensors")


def test_gguf_without_package_names_the_install(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(RuntimeError, match=r"needs the `gguf` package.*pip install gguf"):
        load_denoiser(DATA / "wan_t2v.Q8_0-mixed.gguf", strict=False)


def test_fp16_target_keeps_diffusers_fp32_modules(one_thread):
    model = load_denoiser(DATA / "wan_t2v.fp16.safetensors", dtype=torch.bfloat16, strict=False)
    assert model.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert model.scale_shift_table.dtype == torch.float32  # as from_pretrained keeps it
    assert build_state_dict("wan_t2v_bf16")["model.diffusion_model.patch_embedding.weight"].dtype == torch.float32
