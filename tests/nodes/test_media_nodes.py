"""nodes/media.py as a host calls them: files land in the configured folders and the ui dicts point at them."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from PIL import Image

from kinema.models import media
from kinema.nodes import env
from kinema.nodes import media as nodes


@pytest.fixture
def dirs(tmp_path):
    """Fresh input/output/temp folders for the nodes (for this test only)."""
    d = {k: tmp_path / k for k in ("input", "output", "temp")}
    for p in d.values():
        p.mkdir()
    with env.using(env.Folders.of(input=d["input"], output=d["output"], temp=d["temp"])):
        yield d


def frames(n=6, h=32, w=40):
    x = torch.zeros(n, h, w, 3)
    x[..., 1] = 1.0  # green screen
    for i in range(n):
        x[i, 8:24, 4 * i:4 * i + 12] = torch.tensor([0.9, 0.3, 0.2])
    return x


def test_contract():
    assert set(nodes.NODE_CLASS_MAPPINGS) == set(nodes.NODE_DISPLAY_NAME_MAPPINGS)
    for node_id, cls in nodes.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("Kinema") and cls.CATEGORY == "Kinema/io" and cls.DESCRIPTION
        spec = cls.INPUT_TYPES()
        inputs = {**spec.get("required", {}), **spec.get("optional", {})}
        for name, (_, opts) in inputs.items():
            assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
        params = list(inspect.signature(getattr(cls, cls.FUNCTION)).parameters)[1:]
        assert set(params) == set(inputs) | set(spec.get("hidden", {})), node_id
        if not getattr(cls, "OUTPUT_NODE", False):
            assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
    names = list(nodes.NODE_DISPLAY_NAME_MAPPINGS.values())
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("fmt,animated", [("mp4", True), ("webm", True), ("webp", True), ("gif", False)])
def test_save_video_ui_and_file(dirs, fmt, animated):
    node = nodes.KinemaSaveVideo()
    res = node.save(frames(), 16.0, fmt, "Kinema/video", prompt={"1": {"class_type": "X"}},
                    extra_pnginfo={"workflow": {"nodes": []}})
    assert res["result"] == ()
    assert res["ui"] == {"images": [{"filename": f"video_00001_.{fmt}", "subfolder": "Kinema", "type": "output"}],
                         "animated": [animated]}
    path = dirs["output"] / "Kinema" / f"video_00001_.{fmt}"
    info = media.read_video_info(path)
    assert (info.frames, info.width, info.height) == (6, 40, 32)
    assert info.fps == pytest.approx(16, rel=0.02)  # gif delays are in 10 ms units: 380 ms for 375
    again = node.save(frames(), 16.0, fmt, "Kinema/video")
    assert again["ui"]["images"][0]["filename"] == f"video_00002_.{fmt}"
    assert sorted(p.name for p in (dirs["output"] / "Kinema").iterdir()) == [f"video_0000{i}_.{fmt}" for i in (1, 2)]


def test_save_video_mask_audio_and_errors(dirs, decode_video):
    node = nodes.KinemaSaveVideo()
    mask = torch.zeros(1, 32, 40)
    mask[:, :, :10] = 1.0  # left quarter transparent in every frame
    res = node.save(frames(), 8.0, "webm", "clip", mask=mask,
                    audio={"waveform": torch.zeros(1, 1, 4000), "sample_rate": 16000})
    assert res["ui"]["images"][0] == {"filename": "clip_00001_.webm", "subfolder": "", "type": "output"}
    path = dirs["output"] / "clip_00001_.webm"
    info = media.read_video_info(path)
    assert info.has_alpha and info.audio is not None and abs(info.audio.duration - 6 / 8) < 1 / 8
    _, opacity = decode_video(path)
    assert opacity[:, :, :10].max() < 0.1 and opacity[:, :, 12:].min() > 0.9
    with pytest.raises(ValueError, match="`mask` must be"):
        node.save(frames(), 8.0, "webp", "clip", mask=torch.zeros(1, 64, 64))
    with pytest.raises(ValueError, match="`format` cannot store transparency"):
        node.save(frames(), 8.0, "mp4", "clip", mask=mask)
    with pytest.raises(ValueError, match="`filename_prefix` must stay inside"):
        node.save(frames(), 8.0, "mp4", "../clip")
    assert sorted(p.name for p in dirs["output"].iterdir()) == ["clip_00001_.webm"]


def test_preview_video(dirs):
    res = nodes.KinemaPreviewVideo().preview(frames(), 12.0, mask=torch.zeros(6, 32, 40))
    (entry,) = res["ui"]["images"]
    assert res["ui"]["animated"] == [True] and entry["type"] == "temp" and entry["subfolder"] == ""
    assert entry["filename"].startswith("KinemaPreview_") and entry["filename"].endswith("_00001_.webp")
    info = media.read_video_info(dirs["temp"] / entry["filename"])
    assert info.frames == 6 and info.has_alpha and info.loop == 0
    assert list(dirs["output"].iterdir()) == []


def test_load_image_node(dirs):
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 2] = 255
    rgba[..., 3] = 255
    rgba[:5, :, 3] = 0
    Image.fromarray(rgba).save(dirs["input"] / "sticker.png")
    (dirs["input"] / "notes.txt").write_text("not an image")
    spec = nodes.KinemaLoadImage.INPUT_TYPES()["required"]["image"]
    assert spec[0] == ["sticker.png"] and spec[1]["image_upload"] is True
    assert nodes.KinemaLoadImage.VALIDATE_INPUTS("sticker.png") is True
    assert nodes.KinemaLoadImage.VALIDATE_INPUTS("sticker.png [input]") is True
    assert "not found" in nodes.KinemaLoadImage.VALIDATE_INPUTS("missing.png")
    before = nodes.KinemaLoadImage.IS_CHANGED("sticker.png")
    image, mask = nodes.KinemaLoadImage().load("sticker.png")
    assert image.shape == (1, 10, 12, 3) and mask.shape == (1, 10, 12)
    assert mask[0, :5].min() == 1 and mask[0, 5:].max() == 0
    Image.fromarray(rgba[::-1].copy()).save(dirs["input"] / "sticker.png")
    assert nodes.KinemaLoadImage.IS_CHANGED("sticker.png") != before
    Image.fromarray(rgba).save(dirs["output"] / "made.png")
    assert nodes.KinemaLoadImage().load("made.png [output]")[0].shape == (1, 10, 12, 3)


def test_chroma_key_then_composite_nodes(dirs):
    images, mask = nodes.KinemaChromaKey().key(frames(), "#00ff00", 0.15, 0.1, 1.0)
    assert images.shape == (6, 32, 40, 3) and mask.shape == (6, 32, 40)
    assert mask[0, 0, 0] == 1 and mask[0, 16, 6] == 0
    (out,) = nodes.KinemaCompositeOnColor().composite(images, mask, "#ff00ff")
    assert torch.allclose(out[0, 0, 0], torch.tensor([1.0, 0.0, 1.0]))
    assert torch.allclose(out[0, 16, 6], torch.tensor([0.9, 0.3, 0.2]))
    with pytest.raises(ValueError, match="`key_color` must be a hex colour"):
        nodes.KinemaChromaKey().key(frames(), "green", 0.15, 0.1, 1.0)
    res = nodes.KinemaSaveVideo().save(images, 16.0, "webp", "sticker", mask=mask)
    assert media.read_video_info(dirs["output"] / res["ui"]["images"][0]["filename"]).has_alpha


def test_file_inputs_change_signature_with_their_content(tmp_path, monkeypatch):
    """IS_CHANGED of the file loaders: a content hash read in blocks; files over HASH_LIMIT by path, size and
    mtime (a multi-GB video is never read just to decide whether to re-run)."""
    f = tmp_path / "clip.bin"
    f.write_bytes(b"a" * 3000)

    def resolve(name):
        if not (tmp_path / name).is_file():
            raise FileNotFoundError(name)
        return tmp_path / name
    first = env.file_signature(resolve, "clip.bin")
    f.write_bytes(b"b" * 3000)
    assert env.file_signature(resolve, "clip.bin") != first
    assert env.file_signature(resolve, "gone.bin") == "missing:gone.bin"
    assert env.file_problem(resolve, "gone.bin") == "gone.bin" and env.file_problem(resolve, "clip.bin") is True
    monkeypatch.setattr(env, "HASH_LIMIT", 100)
    big = env.file_signature(resolve, "clip.bin")
    import os
    os.utime(f, ns=(1, 1))
    assert env.file_signature(resolve, "clip.bin") != big
