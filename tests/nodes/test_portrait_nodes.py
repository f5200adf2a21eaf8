"""nodes/portrait.py as a host calls them: the bundled Kinema-Tiny Portrait is listed and loads with no models
folder; Portrait Animate makes ceil(seconds x fps) frames; Save Video muxes the input audio to the same length."""
from __future__ import annotations

import math

import pytest
import torch

from kinema.models.media import read_video_info
from kinema.nodes import env, loaders
from kinema.nodes import media as media_nodes
from kinema.nodes import portrait as nodes


@pytest.fixture
def dirs(tmp_path):
    d = {k: tmp_path / k for k in ("models", "input", "output", "temp")}
    for p in d.values():
        p.mkdir()
    with env.using(env.Folders.of(d["models"], d["input"], d["output"], d["temp"])):
        yield d


def test_bundled_model_is_listed_and_loads(dirs):
    names = loaders.KinemaLoadPortraitModel.INPUT_TYPES()["required"]["model"][0]
    assert names == ["kinema-tiny-portrait"]          # only portrait folders are offered
    model, = loaders.KinemaLoadPortraitModel().load("kinema-tiny-portrait", "cpu", "fp32")
    assert model.name == "kinema_tiny_portrait" and model.default_frames == 9


def test_loader_rejects_a_video_model(dirs):
    with pytest.raises(ValueError, match="`model` must be a portrait model folder"):
        loaders.KinemaLoadPortraitModel().load("kinema-tiny-video", "cpu", "fp32")


def test_animate_then_save_with_the_audio(dirs):
    model, = loaders.KinemaLoadPortraitModel().load("kinema-tiny-portrait", "cpu", "fp32")
    rate, samples = 16000, 16000 + 3000                                   # 1.1875 s -> ceil(29.6875) = 30 frames
    t = torch.arange(samples) / rate
    wav = (0.4 * torch.sin(2 * math.pi * 180 * t) * (torch.sin(2 * math.pi * 3 * t) > 0)).view(1, 1, -1)
    audio = {"waveform": wav, "sample_rate": rate}
    portrait = torch.rand(1, 40, 56, 3)
    images, = nodes.KinemaPortraitAnimate().animate(model, portrait, audio, 25.0, 0, 2, 1.0, 1.0)
    assert images.shape == (30, 32, 32, 3) and 0 <= images.min() and images.max() <= 1
    out = media_nodes.KinemaSaveVideo().save(images, 25.0, "mp4", "Kinema/portrait", audio=audio)
    entry = out["ui"]["images"][0]
    info = read_video_info(dirs["output"] / entry["subfolder"] / entry["filename"])
    assert info.frames == 30 and info.audio is not None
    assert abs(info.audio.duration - 30 / 25) < 1 / 25                   # picture and sound end together
