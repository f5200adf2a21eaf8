"""Load Video Model (Files) and the folder dropdowns: the files ComfyUI users have, in ComfyUI's folders (with the
old unet/ and clip/ names), become the same KINEMA_MODEL; every refusal names the input and the fix; Load Video
Model lists only folders the video registry can load."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from kinema.nodes import env
from kinema.nodes.loaders import KinemaLoadModelFiles, KinemaLoadVideoModel

pytestmark = pytest.mark.usefixtures("one_thread")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))   # comfy_recipe: ComfyUI's reference files

DEN, TE, VAE = "fixture_wan_t2v.safetensors", "fixture_umt5.safetensors", "fixture_wan_2.1_vae.safetensors"


def _load(denoiser=DEN, text_encoder=TE, vae=VAE, **kw):
    args = dict(device="cpu", dtype="fp32", weight_dtype="auto", text_encoder_memory="offload")
    args.update(kw)
    return KinemaLoadModelFiles().load(denoiser, text_encoder, vae, **args)[0]


@pytest.fixture
def files_dirs(models_dir, tmp_path):
    """A models folder holding only ComfyUI-layout files: the fixture files (ComfyUI's folder names, the text
    encoder under the old name clip/) plus the ComfyUI-made reference files used to provoke refusals."""
    from comfy_recipe import DATA, write
    root = tmp_path / "models"
    for sub in ("diffusion_models", "vae"):
        shutil.copytree(models_dir / sub, root / sub)
    shutil.copytree(models_dir / "text_encoders", root / "clip")          # ComfyUI's old folder name
    (root / "unet").mkdir()
    shutil.copy(DATA / "wan_t2v.fp16.safetensors", root / "unet" / "tiny_not_a_release.safetensors")
    shutil.copy(DATA / "umt5_tiny.fp16.safetensors", root / "clip" / "umt5_64_wide.safetensors")
    write("wan2.2_vae", root / "vae" / "wan2.2_vae_tiny.safetensors")
    (root / "clip_vision").mkdir()
    shutil.copy(DATA / "clip_vision_tiny.fp16.safetensors", root / "clip_vision" / "clip_vision_tiny.safetensors")
    with env.using(env.Folders.of(root, tmp_path / "in", tmp_path / "out", tmp_path / "tmp")):
        yield root


def test_dropdowns_list_comfyui_folders(files_dirs):
    req, opt = KinemaLoadModelFiles.INPUT_TYPES()["required"], KinemaLoadModelFiles.INPUT_TYPES()["optional"]
    assert set(req["denoiser"][0]) == {DEN, "fixture_wan_vace.safetensors", "tiny_not_a_release.safetensors"}
    assert set(req["text_encoder"][0]) == {TE, "umt5_64_wide.safetensors"}                       # clip/ too
    assert set(req["vae"][0]) == {VAE, "wan2.2_vae_tiny.safetensors"}
    assert opt["denoiser_2"][0][0] == "none" and opt["clip_vision"][0] == ["none", "clip_vision_tiny.safetensors"]
    (files_dirs / "diffusion_models" / "q.gguf").write_bytes(b"GGUF")
    assert "q.gguf" in KinemaLoadModelFiles.INPUT_TYPES()["required"]["denoiser"][0]          # GGUF is listed


def test_files_node_makes_the_model_every_node_takes(files_dirs):
    from kinema.nodes.conditioning import KinemaTextEncode
    from kinema.nodes.decode import KinemaVideoDecode
    from kinema.nodes.sampling import KinemaTemporalSampler
    model = _load(text_encoder_memory="free")
    assert model.name == "wan" and model.text_encoder_file.memory == "free"
    (pos,) = KinemaTextEncode().encode(model, "a paper boat")
    (neg,) = KinemaTextEncode().encode(model, "blurry")             # a changed prompt: re-read from the file
    assert model.text_encoder_file.loads == 2 and model.text_encoder_file.resident is None
    (latent,) = KinemaTemporalSampler().sample(model, pos, neg, 5, 32, 32, 2, 5.0, 0, "default", 0.0, 1.0)
    (images,) = KinemaVideoDecode().decode(model, latent)
    assert latent["samples"].shape == (1, 16, 2, 4, 4) and images.shape == (5, 32, 32, 3)


def test_vace_and_a14b_pair_from_files(files_dirs):
    assert _load("fixture_wan_vace.safetensors").name == "wan_vace"
    pair = _load(denoiser_2=DEN)
    assert pair.transformer_2 is not None and pair.boundary == 875.0


def _refused(**kw) -> str:
    with pytest.raises(ValueError) as e:
        _load(**kw)
    return str(e.value)


def test_node_refusals_name_the_input_and_the_fix(files_dirs):
    msg = _refused(vae="wan2.2_vae_tiny.safetensors")
    assert msg.startswith("`vae` must have the 16 latent channels") and "Use wan_2.1_vae.safetensors" in msg
    msg = _refused(text_encoder="umt5_64_wide.safetensors")
    assert msg.startswith("`text_encoder` must output 32-wide embeddings") and "umt5_xxl_fp16.safetensors" in msg
    msg = _refused(denoiser="tiny_not_a_release.safetensors")     # unknown shapes, not a `kinema fixtures` file
    assert msg.startswith("`denoiser` has tensor shapes of no known Wan variant") and "Nearest known variants" in msg
    msg = _refused(clip_vision="clip_vision_tiny.safetensors")
    assert msg.startswith("`clip_vision` is not used by") and "Leave clip_vision empty" in msg
    msg = _refused(denoiser_2="fixture_wan_vace.safetensors")
    assert msg.startswith("`denoiser_2` must be the low-noise partner") and "vace_layers" in msg
    shutil.copy(files_dirs / "vae" / VAE, files_dirs / "clip" / "a_vae.safetensors")     # files in the wrong folder
    shutil.copy(files_dirs / "clip" / TE, files_dirs / "vae" / "a_text_encoder.safetensors")
    msg = _refused(text_encoder="a_vae.safetensors")
    assert msg.startswith("`text_encoder` is not a T5/UMT5 text encoder file") and "umt5_xxl" in msg
    msg = _refused(vae="a_text_encoder.safetensors")
    assert msg.startswith("`vae` is not a Wan VAE file") and "wan_2.1_vae.safetensors" in msg
    msg = _refused(weight_dtype="int4")
    assert msg.startswith("`weight_dtype` must be one of")
    msg = _refused(text_encoder_memory="sometimes")
    assert msg.startswith("`text_encoder_memory` must be one of")


def test_pickles_and_lost_scales_refused_by_the_node(files_dirs):
    (files_dirs / "diffusion_models" / "wan.ckpt").write_bytes(b"never unpickled")
    msg = _refused(denoiser="wan.ckpt")
    assert msg.startswith("`denoiser` must be a .safetensors or .gguf file") and "safetensors" in msg.split(". ", 1)[1]
    sd = load_file(str(files_dirs / "diffusion_models" / DEN))
    sd["blocks.0.ffn.9.scale_weight"] = torch.tensor(0.5)           # a scale whose weight is not loaded
    save_file(sd, files_dirs / "diffusion_models" / "lost_scale.safetensors",
              metadata={"kinema_fixture": '{"num_attention_heads": 2}'})
    msg = _refused(denoiser="lost_scale.safetensors")
    assert msg.startswith("`denoiser` has scale_weight tensors whose weights Kinema would not load")
    assert "unmodified ComfyUI scaled-fp8 file" in msg
    with pytest.raises(FileNotFoundError, match=r"diffusion_models, .*unet.*'diffusion_models/gone.safetensors'"):
        _load(denoiser="gone.safetensors")


def test_load_video_model_lists_only_video_folders(kinema_dirs):
    names = KinemaLoadVideoModel.INPUT_TYPES()["required"]["model"][0]
    assert {"fixture-wan-t2v", "fixture-wan-i2v", "fixture-wan-vace", "fixture-animatediff",
            "kinema-tiny-video", "fixture-ltx2"} <= set(names)          # LTX-2 is a video family too (picture + sound)
    assert not {"fixture-stable-audio", "fixture-ltx2-upsampler", "kinema-tiny-audio",
                "kinema-tiny-portrait"} & set(names)


# ---------------------------------------------------------------- Load Video Model (Checkpoint)
def test_checkpoint_node_animatediff(tmp_path):
    """SD 1.5 checkpoint (checkpoints/) + motion module (animatediff_models/) + CLIP's tokenizer folder
    (text_encoders/sd1_tokenizer): the AnimateDiff model; without the tokenizer folder the error names it."""
    import json as _json
    from comfy_recipe import DATA, write
    from kinema.nodes.loaders import KinemaLoadCheckpoint
    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)
    write("sd15_tiny", root / "checkpoints" / "sd15_tiny.safetensors")
    (root / "animatediff_models").mkdir()
    shutil.copy(DATA / "mm_tiny_v2.fp16.safetensors", root / "animatediff_models" / "mm_tiny_v2.safetensors")
    shutil.copy(DATA / "wan_t2v.fp16.safetensors", root / "checkpoints" / "a_wan_denoiser.safetensors")
    with env.using(env.Folders.of(root, tmp_path / "in", tmp_path / "out", tmp_path / "tmp")):
        spec = KinemaLoadCheckpoint.INPUT_TYPES()["required"]
        assert spec["checkpoint"][0] == ["a_wan_denoiser.safetensors", "sd15_tiny.safetensors"]
        assert spec["motion_module"][0] == ["mm_tiny_v2.safetensors"]
        node = KinemaLoadCheckpoint()
        with pytest.raises(ValueError) as e:
            node.load("sd15_tiny.safetensors", "mm_tiny_v2.safetensors", "cpu", "fp32")
        assert str(e.value).startswith("`checkpoint` carries no tokenizer") and "sd1_tokenizer" in str(e.value)
        tok = root / "text_encoders" / "sd1_tokenizer"
        tok.mkdir(parents=True)
        vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2, **{c: 3 + i for i, c in enumerate("abcdef")}}
        (tok / "vocab.json").write_text(_json.dumps(vocab))
        (tok / "merges.txt").write_text("#version: 0.2\n")
        (model,) = node.load("sd15_tiny.safetensors", "mm_tiny_v2.safetensors", "cpu", "fp32")
        assert model.name == "animatediff" and model.path.name == "sd15_tiny.safetensors"
        with pytest.raises(ValueError) as e:
            node.load("a_wan_denoiser.safetensors", "mm_tiny_v2.safetensors", "cpu", "fp32")
        assert str(e.value).startswith("`checkpoint` is not an SD 1.5 all-in-one checkpoint")
        assert "Load Video Model (Files)" in str(e.value)
