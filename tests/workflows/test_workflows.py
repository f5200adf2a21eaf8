"""Every file in workflows/ runs headless through `kinema run` against the tiny fixture models, and produces
what tests/workflows/expect/<name>.json says (kept here, not beside the workflows: ComfyUI serves a pack's
workflows/ folder as templates, so it holds only workflows and their assets).

Expectations: a video output {format, frames, fps, width, height, alpha, loop?, audio?: {codec, sample_rate,
channels}, latents?} (a muxed sound track must last frames / fps within one video frame and start at 0, read back
with PyAV; latents: true when Decode And Save Video keeps the latents beside the video, and `kinema decode` must
redo the video from them), an audio file {"kind": "audio", format, seconds, sample_rate, channels} (exact
sample count), or a node's text {"kind": "text", "contains": [phrases]}."""
from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from kinema.host import cli
from kinema.host.object_info import object_info
from kinema.host.prompt import is_api_format
from kinema.host.ui_to_api import ui_to_api
from kinema.models.media import read_video_info

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
EXPECT = Path(__file__).resolve().parent / "expect"


def _object_info():
    import kinema
    return object_info(kinema.NODE_CLASS_MAPPINGS, kinema.NODE_DISPLAY_NAME_MAPPINGS)


def _decoded_audio(file: Path) -> tuple[int, int, int, float]:
    """(rate, channels, samples on the timeline, start of the first decoded frame in s) of the first audio stream:
    decoded with PyAV; priming before 0 and padding past the stream's duration (mp4 edit list) are not counted."""
    with av.open(str(file)) as c:
        s = c.streams.audio[0]
        rate, frames = s.codec_context.sample_rate, list(c.decode(s))
        decoded = sum(f.samples for f in frames)
        first = float(frames[0].pts * frames[0].time_base) if frames[0].pts is not None else 0.0
        end = s.duration * s.time_base * rate if s.duration else decoded
        samples = min(decoded + min(0, round(first * rate)), round(end))
        return rate, len(s.layout.channels), samples, first


def test_there_are_workflows_and_each_has_expectations():
    assert {p.stem for p in WORKFLOWS} >= {"text_to_video_wan", "image_to_video_wan", "animated_sticker",
                                           "text_to_audio", "video_with_sound"}
    assert {p.stem for p in EXPECT.glob("*.json")} == {p.stem for p in WORKFLOWS}     # one each, no strays
    # workflows/ is served as templates: workflows, their thumbnails (<name>.jpg) and their assets only
    assert {p.name for p in (REPO / "workflows").iterdir() if p.suffix not in (".json", ".jpg")} == {"assets"}
    assert {p.stem for p in (REPO / "workflows").glob("*.jpg")} == {p.stem for p in WORKFLOWS}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_workflow_has_a_small_thumbnail(path):
    """workflows/<name>.jpg, where the editor's template browser looks (tools/make_thumbnails.py): the first frames
    of the real result (animated) for a workflow on the bundled Kinema-Tiny models, a still card naming the model it
    needs for a workflow on random-weight fixtures (its output is noise: never shown)."""
    import numpy as np
    from PIL import Image
    from tools.make_thumbnails import MAX_BYTES, fixtures_used
    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), "run tools/make_workflows.py"
    assert thumb.stat().st_size <= MAX_BYTES
    with Image.open(thumb) as im:
        assert min(im.size) >= 128
        if fixtures_used(json.loads(path.read_text())):
            assert im.format == "JPEG" and getattr(im, "n_frames", 1) == 1
        else:
            assert im.format == "WEBP" and im.n_frames >= 8            # a clip: it moves
            frames = []
            for i in (0, im.n_frames - 1):
                im.seek(i)
                frames.append(np.asarray(im.convert("RGB"), dtype=np.float32))
            assert np.abs(frames[0] - frames[1]).mean() > 0.5 and frames[0].std() > 5   # not one still frame


def test_shipped_workflows_are_current():
    """workflows/*.json equal what tools/make_workflows.py writes (run it after changing node inputs)."""
    from tools import make_workflows
    rendered = make_workflows.render()
    assert set(rendered) == {p.stem for p in WORKFLOWS}
    for name, text in rendered.items():
        assert (REPO / "workflows" / f"{name}.json").read_text() == text, "re-run tools/make_workflows.py"
        ui = json.loads(text)
        assert not is_api_format(ui)
        prompt = ui_to_api(ui, _object_info())
        expected = make_workflows.WORKFLOWS[name][0]
        assert {k: (v["class_type"], v["inputs"]) for k, v in prompt.items()} == \
               {k: (v["class_type"], v["inputs"]) for k, v in expected.items()}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_headless(path, kinema_dirs, capsys):
    rc = cli.main(["run", str(path), "--models-dir", str(kinema_dirs["models"]),
                   "--output-dir", str(kinema_dirs["output"]), "--input-dir", str(kinema_dirs["input"]), "--quiet"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    outputs = json.loads(out.out.strip().splitlines()[-1])
    expect = json.loads((EXPECT / path.name).read_text())["outputs"]
    assert set(outputs) == set(expect)
    for nid, want in expect.items():
        if want.get("kind") == "text":       # a node's text (Load LoRA's report): each expected phrase appears
            text = " ".join(outputs[nid]["text"])
            assert all(phrase in text for phrase in want["contains"]), text
            continue
        entry = outputs[nid]["audio" if want.get("kind") == "audio" else "images"][0]
        file = kinema_dirs["output"] / entry["subfolder"] / entry["filename"]
        if want.get("kind") == "audio":
            rate, channels, samples, _ = _decoded_audio(file)
            assert (rate, channels) == (want["sample_rate"], want["channels"])
            assert samples == round(want["seconds"] * rate)
            with av.open(str(file)) as c:
                assert c.format.name == want["format"]
            continue
        info = read_video_info(file)
        assert info.format == want["format"]
        assert info.frames == want["frames"]
        assert abs(info.fps - want["fps"]) < 0.05
        assert (info.width, info.height) == (want["width"], want["height"])
        assert info.has_alpha == want["alpha"]
        if "loop" in want:
            assert info.loop == want["loop"]
        if "audio" in want:   # sync: the sound track lasts frames / fps (within one frame) and starts at 0
            frame, seconds = 1 / want["fps"], want["frames"] / want["fps"]
            assert info.audio is not None and info.audio.codec == want["audio"]["codec"]
            assert (info.audio.sample_rate, info.audio.channels) == (want["audio"]["sample_rate"],
                                                                     want["audio"]["channels"])
            assert abs(info.audio.duration - seconds) < frame and abs(info.audio.start_time) < 1e-6
            rate, _, samples, first_pts = _decoded_audio(file)
            assert abs(samples / rate - seconds) < frame and first_pts <= 0
        else:
            assert info.audio is None
        latents = file.with_name(file.stem + ".latents.safetensors")
        assert latents.is_file() == want.get("latents", False)
        if latents.is_file():   # the resume the workflow's note describes: `kinema decode` redoes the video
            redo = kinema_dirs["output"] / "redo.mp4"
            assert cli.main(["decode", str(latents), "--output", str(redo), "--models-dir", str(kinema_dirs["models"]),
                             "--quiet"]) == 0, capsys.readouterr().err
            again = read_video_info(redo)
            assert (again.frames, again.width, again.height) == (info.frames, info.width, info.height)
            assert abs(again.fps - info.fps) < 1e-6
    # nothing half-written: no temp files left in the output folder
    assert not [p for p in kinema_dirs["output"].rglob("*") if p.name.startswith(".")]


def _frames_at(file: Path, size: int = 32):
    """Decoded RGBA frames of a saved video (mp4 via PyAV, animated webp/gif via Pillow), shrunk back to `size` px
    by area averaging: (F, size, size, 4) float 0..1."""
    import numpy as np
    import torch
    from PIL import Image
    if file.suffix == ".mp4":
        with av.open(str(file)) as c:
            frames = [f.to_ndarray(format="rgba") for f in c.decode(video=0)]
    else:
        with Image.open(file) as im:
            frames = []
            for i in range(im.n_frames):
                im.seek(i)
                frames.append(np.asarray(im.convert("RGBA")))
    x = torch.from_numpy(np.stack(frames).astype(np.float32) / 255).permute(0, 3, 1, 2)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="area").permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("name, prompt", [("text_to_video", "a red circle moves right"),
                                          ("animated_sticker", "a yellow star spins"),
                                          ("long_video", "a yellow circle")])
def test_bundled_model_workflows_show_the_prompt(name, prompt, tmp_path, capsys):
    """The README's main job: the shipped Kinema-Tiny workflows, run out of the box with an empty models folder,
    write a clip the pixel checker reads as the prompt (colour, shape, motion), judged from the file itself."""
    from training.tiny import checker
    rc = cli.main(["run", str(REPO / "workflows" / f"{name}.json"), "--models-dir", str(tmp_path / "none"),
                   "--output-dir", str(tmp_path), "--quiet"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    entry = next(iter(json.loads(out.out.strip().splitlines()[-1]).values()))["images"][0]
    rgba = _frames_at(tmp_path / entry["subfolder"] / entry["filename"])
    alpha = rgba[..., 3:]
    if name == "animated_sticker":   # transparent around the sprite, opaque on it; then judged over dark grey
        assert alpha[:, :4, :4].max() < 0.1 and alpha[:, 14:18, 14:18].mean() > 0.9
    rgb = rgba[..., :3] * alpha + 0.2 * (1 - alpha)
    _, colour, shape, *motion = prompt.split()
    if not motion:                   # a long clip with a prompt schedule: the object holds colour and shape
        stats = [checker.frame_stats(f) for f in rgb]
        assert len(rgb) == 37 and all(s.colour == colour for s in stats), [s.colour for s in stats]
        assert sum(max(s.shapes, key=s.shapes.get) == shape for s in stats) >= 0.8 * len(stats)
        return
    clip = checker.analyse(rgb)
    assert (clip.colour, clip.shape, clip.motion) == (colour, shape, " ".join(motion)), clip
