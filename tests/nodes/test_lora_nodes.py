"""Load LoRA (Kinema) in a graph run by the executor: two Load LoRA nodes on one loaded model, a chain of two, and
the model used directly, each sample with their own patches; changing or removing a LoRA re-runs Load LoRA and
what follows it, never the model loader."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import kinema
from kinema.host.executor import Executor
from kinema.models import vae_tiling
from kinema.models.families import load_model
from kinema.models.lora import load_lora
from kinema.models.sampling import SamplerSettings, sample
from kinema.nodes import env
from kinema.nodes.loaders import KinemaLoadLoRA

SETTINGS = dict(length=5, width=32, height=32, steps=2, cfg=1.0, seed=3, scheduler="flow_euler", shift=5.0,
                denoise=1.0)


@pytest.fixture
def lora_dirs(models_dir, tmp_path):
    """A models folder with the fixture models and two LoRAs in loras/ (a = the shipped fixture LoRA, sub/b = other
    random values in the same layout), plus fresh input/output/temp folders."""
    models = tmp_path / "models"
    (models / "loras" / "sub").mkdir(parents=True)
    (models / "diffusers").symlink_to(models_dir / "diffusers")
    a = models_dir / "loras" / "fixture-wan-lightx2v.safetensors"
    shutil.copy(a, models / "loras" / "a.safetensors")
    g = torch.Generator().manual_seed(11)
    b = {k: (v if k.endswith(".alpha") else torch.randn(v.shape, generator=g) * v.float().std())
         for k, v in load_file(str(a)).items()}
    save_file(b, str(models / "loras" / "sub" / "b.safetensors"))
    folders = env.Folders.of(models, tmp_path / "input", tmp_path / "output", tmp_path / "temp")
    for d in (folders.input, folders.output, folders.temp):
        d.mkdir()
    return folders


def _graph(lora_a: dict | None = None) -> dict:
    def lora(model, name, strength):
        return {"class_type": "KinemaLoadLoRA", "inputs": {"model": [model, 0], "lora": name, "strength": strength}}

    def sampler(model):
        return {"class_type": "KinemaTemporalSampler", "inputs": {
            "model": [model, 0], "positive": ["2", 0], "negative": ["2", 0], **SETTINGS}}

    def save(latent):
        return {"class_type": "KinemaDecodeAndSave", "inputs": {
            "model": ["1", 0], "latent": [latent, 0], "fps": 8.0, "format": "mp4", "filename_prefix": f"out{latent}",
            "keep_latents": True}}

    g = {"1": {"class_type": "KinemaLoadVideoModel", "inputs": {
             "model": "fixture-wan-t2v", "family": "auto", "device": "cpu", "dtype": "fp32", "weights": "none",
             "parallel": "none", "gpus": 0}},
         "2": {"class_type": "KinemaTextEncode", "inputs": {"model": ["1", 0], "text": "a paper boat"}},
         "10": lora("1", "a.safetensors", 1.0), "11": lora("1", "sub/b.safetensors", 1.0),
         "12": lora("10", "sub/b.safetensors", 1.0),
         "20": sampler("10"), "21": sampler("11"), "22": sampler("1"), "23": sampler("12"),
         "30": save("20"), "31": save("21"), "32": save("22"), "33": save("23")}
    if lora_a is not None:
        g["10"]["inputs"].update(lora_a)
    return g


def _latents(result, folders, node) -> torch.Tensor:
    entry = result.outputs[node]["images"][0]
    video = folders.output / entry["subfolder"] / entry["filename"]
    return vae_tiling.load_latents(video.with_name(video.stem + vae_tiling.LATENTS_SUFFIX))[0]


def test_each_consumer_of_one_model_samples_with_its_own_loras_and_the_loader_never_reruns(lora_dirs, one_thread):
    ex = Executor(kinema.NODE_CLASS_MAPPINGS, kinema.NODE_DISPLAY_NAME_MAPPINGS, folders=lora_dirs)
    first = ex.run(_graph())
    got = {n: _latents(first, lora_dirs, n) for n in ("30", "31", "32", "33")}
    assert "all 121 keys loaded" in first.outputs["10"]["text"][0]
    # the same, computed directly: base, base+a, base+b, base+a+b
    model = load_model(lora_dirs.models / "diffusers" / "fixture-wan-t2v")
    loras = lora_dirs.models / "loras"
    a, _ = load_lora(model, loras / "a.safetensors", 1.0)
    views = {"30": a, "31": load_lora(model, loras / "sub" / "b.safetensors", 1.0)[0], "32": model,
             "33": load_lora(a, loras / "sub" / "b.safetensors", 1.0)[0]}
    pos = model.encode_prompt("a paper boat")
    settings = SamplerSettings(num_frames=5, height=32, width=32, num_inference_steps=2, guidance_scale=1.0, seed=3,
                               scheduler="flow_euler", shift=5.0)
    for node, view in views.items():
        assert (sample(view, pos, pos, settings).cpu() - got[node]).abs().max() < 1e-5, node
    distinct = list(got.values())
    assert all((x - y).abs().max() > 1e-3 for i, x in enumerate(distinct) for y in distinct[i + 1:])

    # a changed strength re-runs that Load LoRA and what follows it; the loader and the other branches are cached
    second = ex.run(_graph({"strength": -0.5}))
    assert sorted(second.executed) == ["10", "12", "20", "23", "30", "33"] and "1" in second.cached
    assert torch.equal(_latents(second, lora_dirs, "32"), got["32"])
    half, _ = load_lora(model, loras / "a.safetensors", -0.5)
    assert (sample(half, pos, pos, settings).cpu() - _latents(second, lora_dirs, "30")).abs().max() < 1e-5

    # removing a LoRA: the sampler takes the loader's model again, which is not loaded again (the sampler then has
    # the plain branch's inputs exactly: its cached latents are reused)
    removed = _graph()
    removed["20"]["inputs"]["model"] = ["1", 0]
    third = ex.run(removed)
    assert third.executed == ["30"] and {"1", "20"} <= set(third.cached)
    assert torch.equal(_latents(third, lora_dirs, "30"), got["32"])


def test_load_lora_lists_validates_and_tracks_its_file(lora_dirs):
    with env.using(lora_dirs):
        names = KinemaLoadLoRA.INPUT_TYPES()["required"]["lora"][0]
        assert names == ["a.safetensors", "sub/b.safetensors"]
        assert KinemaLoadLoRA.VALIDATE_INPUTS("a.safetensors") is True
        problem = KinemaLoadLoRA.VALIDATE_INPUTS("missing.safetensors")
        assert "missing.safetensors" in problem and str(lora_dirs.models / "loras") in problem
        before = KinemaLoadLoRA.IS_CHANGED("a.safetensors")
        path = lora_dirs.models / "loras" / "a.safetensors"
        tensors = load_file(str(path))
        tensors[next(iter(tensors))] *= 2
        save_file(tensors, str(path))
        assert KinemaLoadLoRA.IS_CHANGED("a.safetensors") != before


def test_a_lora_that_matches_nothing_fails_the_node_with_the_model_it_is_for(lora_dirs, models_dir):
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 1536),
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(1536, 4)},
              str(lora_dirs.models / "loras" / "wan13b.safetensors"))
    model = load_model(models_dir / "diffusers" / "fixture-wan-t2v")
    with env.using(lora_dirs), pytest.raises(ValueError) as info:
        KinemaLoadLoRA().load(model, "wan13b.safetensors", 1.0)
    assert "`lora` matches none of the layers" in str(info.value) and "Wan 2.1 1.3B" in str(info.value)
    assert json.dumps(str(info.value))                                   # one plain line of text for the editor
