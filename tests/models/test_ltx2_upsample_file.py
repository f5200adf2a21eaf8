"""LTX-2's latent upsampler from ONE file in Lightricks' / ComfyUI's layout (models/files/upsampler.py), as ComfyUI
users have it in models/latent_upscale_models/.

The files are made here from the fixture upsampler folder (fixture-ltx2-upsampler) by tools/make_upsampler_file.py
(the inverse mapping: same tensor names, config JSON in the metadata in Lightricks' names), so no binary is committed:
- the file-loaded upsampler equals the folder-loaded one bitwise (weights, upsampled latents, Latent Upscale and
  Video Upscale's learned path with the LTX-2 fixture model), bf16 files included;
- Load Upscale Model lists upsampler files beside folders, leaves other files out, and loads under a models folder
  given to `kinema run --models-dir`;
- the error cases: no model to lend a VAE, a file that is no upsampler, a missing / broken / disagreeing config.
"""
from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kinema.models.families import load_model
from kinema.models.families.ltx2_upsample import latent_upscale
from kinema.models.joint import sample_clip
from kinema.models.sampling import SamplerSettings
from kinema.models.upscale import LTX2LatentUpsampler, load_upscaler
from tools import make_upsampler_file

NAME = "ltx-2-spatial-upscaler-x2-1.0.safetensors"


@pytest.fixture(scope="module")
def model(models_dir, one_thread):
    return load_model(models_dir / "diffusers" / "fixture-ltx2")


@pytest.fixture(scope="module")
def folder(models_dir):
    return load_upscaler(models_dir / "diffusers" / "fixture-ltx2-upsampler")


@pytest.fixture(scope="module")
def file_models(models_dir, tmp_path_factory) -> Path:
    """A models folder for --models-dir: diffusers/ (the fixtures, linked) and latent_upscale_models/ holding the
    fixture upsampler as Lightricks' file (written by the tool from the folder), and a LoRA that is no upsampler."""
    root = tmp_path_factory.mktemp("file-models")
    (root / "diffusers").symlink_to(models_dir / "diffusers", target_is_directory=True)
    (root / "latent_upscale_models").mkdir()
    shutil.copytree(models_dir / "diffusers" / "fixture-ltx2-upsampler",           # a folder there: listed as one
                    root / "latent_upscale_models" / "folder-upsampler")
    assert make_upsampler_file.main([str(models_dir / "diffusers" / "fixture-ltx2-upsampler"),
                                     str(root / "latent_upscale_models" / NAME)]) == 0
    save_file({"lora_unet_blocks_0.lora_down.weight": torch.zeros(2, 8),
               "lora_unet_blocks_0.lora_up.weight": torch.zeros(8, 2)},
              str(root / "latent_upscale_models" / "some_lora.safetensors"))
    return root


@pytest.fixture(scope="module")
def stage1(model):
    settings = SamplerSettings(num_frames=9, height=32, width=32, num_inference_steps=2, guidance_scale=1.0, seed=1,
                               frame_rate=Fraction(24))
    clip = sample_clip(model, model.encode_prompt("a cat"), None, settings)
    return {"samples": clip.video, "kinema_frames": 9, "kinema_fps": Fraction(24), "kinema_audio": clip.audio_latents}


def test_the_file_is_lightricks_layout_and_loads_bitwise_equal_to_the_folder(model, folder, file_models, stage1):
    from kinema.models.files.formats import open_tensors
    path = file_models / "latent_upscale_models" / NAME
    with open_tensors(path) as f:
        config = json.loads(f.metadata["config"])
        assert "post_upsample_res_blocks.0.conv2.bias" in f.keys() and "upsampler.conv.weight" in f.keys()
    assert config == {"_class_name": "LatentUpsampler", "in_channels": 4, "mid_channels": 32,
                      "num_blocks_per_stage": 1, "dims": 3, "spatial_upsample": True, "temporal_upsample": False,
                      "spatial_scale": 2.0, "rational_resampler": True}
    up = load_upscaler(path)
    assert isinstance(up, LTX2LatentUpsampler) and up.vae is None and up.scale == 2 and not up.temporal
    ours, theirs = up.net.state_dict(), folder.net.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    big = up.upsample(model, stage1["samples"])
    assert big.shape == (1, 4, 5, 32, 32) and torch.equal(big, folder.upsample(model, stage1["samples"]))
    assert not torch.equal(big[..., ::2, ::2], stage1["samples"])                    # it did upsample


def test_temporal_and_bf16_files(tmp_path):
    from kinema.models.files.upsampler import lightricks_config, save_upsampler_file
    from kinema.models.fixtures import build_ltx2_upsampler
    net = build_ltx2_upsampler(temporal=True).latent_upsampler
    x = torch.randn(1, 4, 3, 6, 8, generator=torch.Generator().manual_seed(0))
    up = load_upscaler(save_upsampler_file(net, tmp_path / "t.safetensors"))
    assert up.temporal and up.scale == 2
    with torch.no_grad():
        want = net(x)
    assert want.shape == (1, 4, 5, 12, 16) and torch.equal(up.upsample_raw(x), want)
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    torch.manual_seed(0)                                            # LTX-2.3's kind: 2x by pixel shuffle, no blur
    plain = LTX2LatentUpsamplerModel(in_channels=4, mid_channels=32, num_blocks_per_stage=2,
                                     use_rational_resampler=False).eval()
    path = save_upsampler_file(plain, tmp_path / "p.safetensors")
    up = load_upscaler(path)
    odd = lightricks_config(plain) | {"spatial_scale": 4.0}          # a pixel shuffle of 2 cannot make 4x
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(tmp_path / "odd.safetensors"),
              metadata={"config": json.dumps(odd)})
    with pytest.raises(ValueError, match=r"disagrees with its tensors.*'spatial_scale': \(4.0, 2.0\)"):
        load_upscaler(tmp_path / "odd.safetensors")
    assert not up.net.config.use_rational_resampler and up.net.config.num_blocks_per_stage == 2
    with torch.no_grad():
        assert torch.equal(up.upsample_raw(x), plain(x))
    half = load_upscaler(save_upsampler_file(net, tmp_path / "b.safetensors", torch.bfloat16), dtype=torch.float32)
    assert half.net.dtype == torch.float32
    for k, v in net.state_dict().items():                          # bf16 weights, exactly, in the asked dtype
        assert torch.equal(half.net.state_dict()[k], v.to(torch.bfloat16).float()), k
    assert (half.upsample_raw(x) - want).abs().max() > 0                               # really rounded


def test_nodes_list_and_run_the_file_like_the_folder(model, file_models, kinema_dirs):
    from kinema.nodes import env
    from kinema.nodes.decode import KinemaLatentUpscale
    from kinema.nodes.edit import KinemaVideoUpscale
    from kinema.nodes.loaders import KinemaLoadUpscaleModel, _upscale_models
    from kinema.nodes.sampling import KinemaTemporalSampler
    pos, neg = model.encode_prompt("waves"), model.encode_prompt("")
    (latent,) = KinemaTemporalSampler().sample(model, pos, neg, 9, 32, 32, 2, 1.0, 3, "default", 0.0, 1.0)
    frames = model.decode(latent["samples"])                                          # (9, 32, 32, 3)
    runs = {}
    with env.using(env.folders().replace(models=file_models)):
        names = _upscale_models()
        assert NAME in names and "fixture-ltx2-upsampler" in names and "some_lora.safetensors" not in names
        assert "folder-upsampler" in names and not [n for n in names if n.startswith("folder-upsampler/")]
        for name in (NAME, "fixture-ltx2-upsampler"):
            (up,) = KinemaLoadUpscaleModel().load(name, "cpu", "fp32")
            (big,) = KinemaLatentUpscale().upscale(model, up, latent, pos, neg, 8, 1.0, 0, 0.375)
            (images,) = KinemaVideoUpscale().upscale(frames, "x2", 0.375, 8, 1.0, 0, 0, model=model, positive=pos,
                                                     negative=neg, upscaler=up)
            runs[name] = (big, images)
        (up,) = KinemaLoadUpscaleModel().load(NAME, "cpu", "fp32")
        with pytest.raises(ValueError, match="`model` must be an LTX-2 model connected.*Video Upscale's `model`"):
            KinemaVideoUpscale().upscale(frames, "x2", 0.0, 8, 1.0, 0, 0, upscaler=up)
        with pytest.raises(ValueError, match="`upscaler` is not an LTX-2 latent upsampler file.*some_lora"
                                             ".*seems to be a LoRA"):
            KinemaLoadUpscaleModel().load("some_lora.safetensors", "cpu", "fp32")
    (fb, fi), (db, di) = runs[NAME], runs["fixture-ltx2-upsampler"]
    assert fb["samples"].shape == (1, 4, 5, 32, 32) and fi.shape == (9, 64, 64, 3)
    assert torch.equal(fb["samples"], db["samples"]) and torch.equal(fb["kinema_audio"], db["kinema_audio"])
    assert torch.equal(fi, di)


def test_kinema_run_with_models_dir(file_models, tmp_path, capsys):
    from kinema.host import cli
    from tools import make_workflows
    prompt = json.loads(json.dumps(make_workflows.WORKFLOWS["upscale_video_ltx2"][0]))
    prompt["7"]["inputs"]["model"] = NAME
    prompt["4"]["inputs"].update(length=9, steps=2)
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(prompt))
    out = tmp_path / "out"
    assert cli.main(["run", str(wf), "--models-dir", str(file_models), "--output-dir", str(out),
                     "--input-dir", str(tmp_path), "--quiet"]) == 0
    saved = [p for p in out.rglob("*.mp4")]
    assert len(saved) == 1 and saved[0].stat().st_size > 0


def _write(path: Path, tensors: dict, config) -> Path:
    meta = None if config is None else {"config": config if isinstance(config, str) else json.dumps(config)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
    return path


def test_broken_files_are_refused_with_the_fix(folder, tmp_path):
    from kinema.models.files.upsampler import lightricks_config
    sd = folder.net.state_dict()
    good = lightricks_config(folder.net)
    cases = [
        (dict(sd), None, "has no `config` entry in its safetensors metadata"),
        (dict(sd), "{not json", "is not JSON"),
        (dict(sd), {**good, "mid_channels": 64}, r"disagrees with its tensors.*'mid_channels': \(64, 32\)"),
        (dict(sd), {**good, "temporal_upsample": True}, r"disagrees.*temporal_upsample"),
        ({k: v for k, v in sd.items() if k != "res_blocks.0.norm1.weight"}, good, r"missing \['res_blocks.0.norm1"),
        ({"encoder.down_blocks.0.weight": torch.zeros(2), "decoder.up_blocks.0.weight": torch.zeros(2)}, good,
         "seems to be a VAE"),
    ]
    for i, (tensors, config, message) in enumerate(cases):
        path = _write(tmp_path / f"case{i}.safetensors", tensors, config)
        with pytest.raises(ValueError, match=message) as err:
            load_upscaler(path)
        assert "`upscaler`" in str(err.value) and path.name in str(err.value)
    nested = _write(tmp_path / "nested.safetensors", sd, {"upsampler": good})       # ltx_core's nesting
    assert torch.equal(load_upscaler(nested).net.final_conv.weight, sd["final_conv.weight"])
    (tmp_path / "u.ckpt").write_bytes(b"not read")
    with pytest.raises(ValueError, match="never loaded"):
        load_upscaler(tmp_path / "u.ckpt")
