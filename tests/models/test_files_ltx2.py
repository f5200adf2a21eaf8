"""LTX-2 from ComfyUI's files: the all-in-one checkpoint + the Gemma 3 file (tests/data/ltx2, made by
tools/make_ltx2_reference.py: LTX-2's original layout, reference outputs from modules that diffusers' own single-file
converters rebuilt from the written file, Gemma tokens from sentencepiece itself; the checkpoint and outputs then
reproduced by Lightricks' own ltx-core classes through ltx-core's own key maps, tools/check_ltx2_with_ltx_core.py). Kinema's loaded modules must
reproduce them (fp32 within 1e-4), the families must run on them as on a folder, and every refusal names the input
and the fix."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from kinema.models.files.family import fixture_info
from kinema.models.files.gemma import load_gemma
from kinema.models.files.ltx2 import is_ltx2_checkpoint, load_ltx2_checkpoint, load_ltx2_family, load_ltx2_files

from comfy_recipe import DATA as COMFY

DATA = COMFY.parent / "ltx2"
CKPT, GEMMA = DATA / "ltx2_tiny.safetensors", DATA / "gemma3_tiny.safetensors"
TOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    return load_file(str(DATA / "reference.safetensors"))


@pytest.fixture(scope="module")
def meta():
    return json.loads((DATA / "reference.json").read_text())


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(1)
    return load_ltx2_files(CKPT, GEMMA)


def close(a, b, tol=TOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a.float() - b.float()).abs().max().item()
    assert err <= tol, err
    return err


def test_checkpoint_modules_reproduce_the_reference(pipe, ref):
    assert is_ltx2_checkpoint(load_file(str(CKPT)).keys())
    with torch.no_grad():
        video, audio = pipe.transformer(
            hidden_states=ref["tr.video"], audio_hidden_states=ref["tr.audio"], encoder_hidden_states=ref["tr.text"],
            audio_encoder_hidden_states=ref["tr.audio_text"], timestep=ref["tr.t"], num_frames=2, height=2, width=2,
            fps=24.0, audio_num_frames=5, return_dict=False)
        close(video, ref["tr.out_video"])
        close(audio, ref["tr.out_audio"])
        close(pipe.vae.encode(ref["vae.x"]).latent_dist.mode(), ref["vae.latent"])
        close(pipe.vae.decode(ref["vae.z"], return_dict=False)[0], ref["vae.decoded"])
        close(pipe.vae.latents_mean, ref["mean.vae"])
        mel = pipe.audio_vae.decode(ref["avae.z"], return_dict=False)[0]
        close(mel, ref["avae.mel"])
        close(pipe.audio_vae.encode(ref["avae.mel"]).latent_dist.mode(), ref["avae.latent"])
        close(pipe.vocoder(ref["avae.mel"]), ref["voc.wave"])
        v, a, _ = pipe.connectors(ref["con.embeds"], ref["con.mask"], padding_side="left")
        close(v, ref["con.video"])
        close(a, ref["con.audio"])
    assert pipe.vae.dtype == pipe.audio_vae.dtype == pipe.vocoder.dtype == torch.float32


def test_reference_was_reproduced_by_lightricks_ltx_core():
    """The committed record of tools/check_ltx2_with_ltx_core.py: Lightricks' own classes loaded every part of the
    checkpoint through their own key maps and reproduced every reference output."""
    check = json.loads((DATA / "ltx_core_check.json").read_text())
    parts = {"transformer.video", "transformer.audio", "vae.encode", "vae.decode", "audio_vae.decode",
             "audio_vae.encode", "vocoder", "connectors.video", "connectors.audio"}
    assert set(check["max_abs_diff"]) == parts and max(check["max_abs_diff"].values()) <= 1e-5
    used = sum(1 for k in load_file(str(CKPT)) if not k.endswith(("statistics.channel", "statistics.mean-of-stds")))
    # every tensor, the two VAEs' mean/std statistics taken by both their encoder and decoder
    assert check["ltx_core_commit"] and sum(check["tensors"].values()) == used + 4


class HeaderOnly:
    """A checkpoint known by its keys and shapes only (tensors on the meta device), for full-size layouts."""

    def __init__(self, shapes: dict, name: str):
        self.shapes, self.metadata = shapes, {}
        self.path = DATA / name

    def keys(self):
        return list(self.shapes)

    def __contains__(self, key):
        return key in self.shapes

    def shape(self, key):
        return tuple(self.shapes[key])

    def dtype(self, key):
        return torch.bfloat16

    def get(self, key):
        return torch.empty(self.shapes[key], dtype=torch.bfloat16, device="meta")


def test_full_size_19b_layout_maps_onto_the_shipped_config():
    """Every tensor of an LTX-2 19B checkpoint as Lightricks' ltx-core defines it at LTX-2's sizes
    (ltx2_19b_layout.json.gz, tools/check_ltx2_with_ltx_core.py) lands, through Kinema's key maps, on a module built
    from configs/ltx2_19b.json with the same name and shape: real files need no test metadata."""
    import gzip
    from accelerate import init_empty_weights
    from kinema.models.files import ltx2 as L
    with gzip.open(DATA / "ltx2_19b_layout.json.gz", "rt") as fh:
        f = HeaderOnly(json.load(fh), "ltx-2-19b-dev.safetensors")
    assert is_ltx2_checkpoint(f.keys()) and len(f.shapes) > 4000
    L._check_parts(f, "checkpoint")
    record = L.ltx2_record(f)
    assert record["name"] == "ltx2_19b"
    counts = {}
    for part, cls in L._classes().items():
        with init_empty_weights():
            module = cls.from_config(record[part])
        weights = L._weights(f, part, torch.bfloat16, "meta")
        L._assign(module, weights, part, "checkpoint", f.path.name, record["label"])   # refuses any difference
        counts[part] = len(weights)
    assert counts["transformer"] == 3510 and counts["vocoder"] == 194 and sum(counts.values()) == len(f.shapes)


def test_gemma_tokens_and_prompt_embeds_reproduce_the_reference(pipe, ref, meta):
    for prompt, tokens in zip(meta["gemma"]["prompts"], meta["gemma"]["tokens"]):
        assert pipe.tokenizer(prompt).input_ids == tokens          # sentencepiece's own ids, <bos> first
    embeds, mask = pipe._get_gemma_prompt_embeds(meta["gemma"]["prompts"], max_sequence_length=meta["gemma"]["seq"],
                                                 device=torch.device("cpu"))
    assert torch.equal(mask, ref["gemma.mask"])
    close(embeds, ref["gemma.embeds"])


def test_bf16_keeps_vaes_and_vocoder_fp32(ref):
    parts = load_ltx2_checkpoint(CKPT, torch.bfloat16)
    assert parts["transformer"].dtype == parts["connectors"].text_proj_in.weight.dtype == torch.bfloat16
    assert parts["vae"].dtype == parts["audio_vae"].dtype == parts["vocoder"].dtype == torch.float32
    with torch.no_grad():
        close(parts["vocoder"](ref["avae.mel"]), ref["voc.wave"])


def test_bf16_file_loads_into_fp32(tmp_path, ref):
    """Lightricks' and ComfyUI's LTX-2 checkpoints are bf16: read into float32, every weight is its bf16 value."""
    sd = load_file(str(CKPT))
    path = tmp_path / "ltx2_bf16.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, str(path),
              metadata={"kinema_fixture": json.dumps({"ltx2": fixture_info(CKPT)["ltx2"]})})
    parts = load_ltx2_checkpoint(path)
    key = "model.diffusion_model.transformer_blocks.1.audio_ff.net.0.proj.weight"
    own = parts["transformer"].state_dict()["transformer_blocks.1.audio_ff.net.0.proj.weight"]
    assert own.dtype == torch.float32 and torch.equal(own, sd[key].to(torch.bfloat16).float())
    with torch.no_grad():
        close(parts["vocoder"](ref["avae.mel"]), ref["voc.wave"], tol=0.01)    # bf16 weights: 1.7e-3 here


@pytest.mark.parametrize("layout", ["lightricks", "comfyui"])
def test_fp8_checkpoints_are_descaled_exactly(tmp_path, ref, layout):
    """Lightricks' prequantised fp8 (`weight_scale`) and ComfyUI's scaled fp8 (`scale_weight` + marker): every
    transformer weight equals fp8.float() * scale exactly; the output moves only by the quantisation."""
    sd = load_file(str(CKPT))
    out, expect = dict(sd), {}
    for k, v in sd.items():
        if k.startswith("model.diffusion_model.transformer_blocks.") and k.endswith(".weight") and v.ndim == 2:
            scale = v.abs().amax() / 448.0
            q = (v / scale).to(torch.float8_e4m3fn)
            out[k] = q
            out[k + "_scale" if layout == "lightricks" else k[:-len("weight")] + "scale_weight"] = scale.reshape(())
            expect[k] = q.float() * scale
    if layout == "comfyui":
        out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    path = tmp_path / f"ltx2_fp8_{layout}.safetensors"
    save_file(out, str(path), metadata={"kinema_fixture": json.dumps({"ltx2": fixture_info(CKPT)["ltx2"]})})
    tr = load_ltx2_checkpoint(path)["transformer"].state_dict()
    for k, v in expect.items():
        name = k[len("model.diffusion_model."):].replace("q_norm", "norm_q").replace("k_norm", "norm_k")
        assert torch.equal(tr[name], v), name
    assert len(expect) == 2 * 28         # 6 attentions x 4 linears + the 2 feed-forwards, x 2 blocks
    parts = load_ltx2_checkpoint(path)
    with torch.no_grad():
        video, _ = parts["transformer"](
            hidden_states=ref["tr.video"], audio_hidden_states=ref["tr.audio"], encoder_hidden_states=ref["tr.text"],
            audio_encoder_hidden_states=ref["tr.audio_text"], timestep=ref["tr.t"], num_frames=2, height=2, width=2,
            fps=24.0, audio_num_frames=5, return_dict=False)
    err = close(video, ref["tr.out_video"], tol=0.15)      # e4m3 rounds each weight by <= 2^-4 relative: 7.9e-2 here
    assert err > 1e-4                                       # the fp8 values really were used


def test_video_to_audio_from_files_matches_ltx2_condition_pipeline(pipe):
    """The audio family on the files: the same sound as diffusers' LTX2ConditionPipeline on the same components
    (as tests/models/test_audio.py checks for the folder)."""
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
    from kinema.models import audio as A
    from kinema.models import media
    model = load_ltx2_family("audio", CKPT, GEMMA)
    assert model.name == "ltx2" and model.path == CKPT and model.spatial_ratio == 8
    frames = torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    fps = 25.0
    need = media.samples_for_frames(9, fps, model.sample_rate)
    steps = model.audio_latent_steps(need)
    _, expected = pipe(conditions=[LTX2VideoCondition(frames=(frames * 255).numpy(), index=0, strength=1.0)],
                       prompt="a drum", negative_prompt="noise", height=32, width=32, num_frames=9, frame_rate=fps,
                       num_inference_steps=2, guidance_scale=3.0, audio_guidance_scale=3.0, stg_scale=0.0,
                       audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0, guidance_rescale=0.0,
                       audio_guidance_rescale=0.0, spatio_temporal_guidance_blocks=None,
                       audio_latents=torch.zeros(1, 2, steps, 2), generator=torch.Generator("cpu").manual_seed(7),
                       output_type="np", return_dict=False, max_sequence_length=64)
    model.max_sequence_length = 64
    out = A.video_to_audio(model, frames, fps, "a drum", "noise", num_inference_steps=2, guidance_scale=3.0, seed=7)
    assert out["waveform"].shape == (1, 2, need)
    assert torch.allclose(out["waveform"], expected[..., :need], rtol=0, atol=1e-5)


def test_portrait_and_video_kinds_load(pipe):
    portrait = load_ltx2_family("portrait", CKPT, GEMMA)
    assert portrait.name == "ltx2_portrait" and portrait.capabilities.portrait
    video = load_ltx2_family("video", CKPT, GEMMA)      # the video registry's LTX-2 family, else the portrait one
    assert video.name in ("ltx2", "ltx2_portrait") and video.pipe.transformer.config.num_layers == 2


def _refused(call, arg, *words):
    with pytest.raises(ValueError) as e:
        call()
    msg = str(e.value)
    assert msg.startswith(f"`{arg}` "), msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


def test_gemma_tokenizer_from_the_file_or_beside_it(tmp_path, meta):
    sd = load_file(str(GEMMA))
    spiece = sd.pop("spiece_model")
    info = {"kinema_fixture": json.dumps({"gemma3_text": fixture_info(GEMMA)["gemma3_text"]})}
    bare = tmp_path / "gemma_no_tokenizer.safetensors"
    save_file(sd, str(bare), metadata=info)
    _refused(lambda: load_ltx2_files(CKPT, bare), "text_encoder", "carries no tokenizer", "tokenizer.model",
             "gemma_3_12B_it.safetensors")
    (tmp_path / "tokenizer.model").write_bytes(spiece.numpy().tobytes())
    te = load_gemma(bare, fixture=json.loads(info["kinema_fixture"])["gemma3_text"])
    assert te.tokenizer(meta["gemma"]["prompts"][1]).input_ids == meta["gemma"]["tokens"][1]


def test_gemma_fp8_is_descaled_and_fp4_refused(tmp_path, ref, meta):
    sd = load_file(str(GEMMA))
    info = {"kinema_fixture": json.dumps({"gemma3_text": fixture_info(GEMMA)["gemma3_text"]})}
    fp8, fp4 = dict(sd), dict(sd)
    for k, v in sd.items():
        if k.endswith("proj.weight"):
            scale = v.abs().amax() / 448.0
            fp8[k], fp8[k + "_scale"] = (v / scale).to(torch.float8_e4m3fn), scale.reshape(())
            fp4[k] = torch.zeros(v.shape[0], v.shape[1] // 2, dtype=torch.uint8)
    save_file(fp8, str(tmp_path / "gemma_fp8.safetensors"), metadata=info)
    save_file(fp4, str(tmp_path / "gemma_fp4_mixed.safetensors"), metadata=info)
    te = load_gemma(tmp_path / "gemma_fp8.safetensors", fixture=fixture_info(GEMMA)["gemma3_text"])
    w = te.model.state_dict()["layers.0.mlp.gate_proj.weight"]
    key = "model.layers.0.mlp.gate_proj.weight"
    assert torch.equal(w, fp8[key].float() * fp8[key + "_scale"])
    _refused(lambda: load_gemma(tmp_path / "gemma_fp4_mixed.safetensors"), "text_encoder", "quantised weights",
             "gemma_3_12B_it.safetensors")


def test_refusals_name_the_input_and_the_fix(tmp_path):
    sd = load_file(str(CKPT))
    _refused(lambda: load_ltx2_files(CKPT, None), "text_encoder", "is needed", "gemma_3_12B_it")
    _refused(lambda: load_ltx2_files(CKPT, CKPT), "text_encoder", "an LTX-2 all-in-one checkpoint", "Pick gemma_3")
    _refused(lambda: load_ltx2_files(CKPT, COMFY / "umt5_tiny.fp16.safetensors"), "text_encoder",
             "a T5/UMT5 text encoder", "Pick gemma_3")
    _refused(lambda: load_ltx2_files(GEMMA, GEMMA), "checkpoint", "is not an LTX-2 all-in-one", "checkpoints/")
    only = tmp_path / "ltx2_transformer_only.safetensors"
    save_file({k: v for k, v in sd.items() if k.startswith("model.diffusion_model.")}, str(only))
    _refused(lambda: load_ltx2_files(only, GEMMA), "checkpoint", "without all the parts", "no connectors, vae",
             "checkpoints/")
    unmarked = tmp_path / "ltx2_other_size.safetensors"    # no test metadata: checked against LTX-2 19B's shapes
    save_file(sd, str(unmarked))
    _refused(lambda: load_ltx2_checkpoint(unmarked), "checkpoint", "does not match LTX-2 19B's transformer",
             "LTX-2.3", "diffusers folder")
    _refused(lambda: load_ltx2_files(unmarked, GEMMA), "text_encoder", "must be 3840 wide", "Gemma 3 12B")
    _refused(lambda: load_ltx2_checkpoint(CKPT, torch.float8_e4m3fn), "dtype", "float32, bfloat16", "16-bit")
    from kinema.models.files import load_denoiser
    _refused(lambda: load_denoiser(only), "denoiser", "is an LTX-2 file", "Load Video Model (Checkpoint)")
    (tmp_path / "ltx2.ckpt").write_bytes(b"never unpickled")
    _refused(lambda: load_ltx2_files(tmp_path / "ltx2.ckpt", GEMMA), "checkpoint", ".safetensors", "safetensors")
