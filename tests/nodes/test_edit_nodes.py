"""Load Video, Video Edit, Reference Image and Video Upscale as nodes, and the shipped edit workflows judged by the
Kinema-Tiny pixel checker from the files they write."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from kinema.host import cli
from kinema.nodes import edit as N
from kinema.nodes import media as M
from training.tiny import checker

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "workflows" / "assets"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_load_video_range_resize_and_fps(kinema_dirs):
    shutil.copy(ASSETS / "red_circle.mp4", kinema_dirs["input"])
    assert "red_circle.mp4" in M.KinemaLoadVideo.INPUT_TYPES()["required"]["video"][0]
    images, fps, count = M.KinemaLoadVideo().load("red_circle.mp4", 2, 5, 16, 0)
    assert images.shape == (5, 16, 16, 3) and fps == 8.0 and count == 5
    full, _, n = M.KinemaLoadVideo().load("red_circle.mp4", 0, 0, 32, 32)
    assert n == 9 and checker.analyse(full.numpy()).motion == "moves right"
    assert "not found" in M.KinemaLoadVideo.VALIDATE_INPUTS("missing.mp4")
    assert M.KinemaLoadVideo.IS_CHANGED("red_circle.mp4") == M.KinemaLoadVideo.IS_CHANGED(video="red_circle.mp4")
    # values the editor annotates with their folder, as for Load Image; a tagged path stays inside its folder
    shutil.copy(ASSETS / "red_circle.mp4", kinema_dirs["temp"] / "again.mp4")
    assert M.KinemaLoadVideo().load("again.mp4 [temp]", 0, 3, 0, 0)[2] == 3
    assert M.KinemaLoadVideo().load("red_circle.mp4 [input]", 0, 3, 0, 0)[2] == 3
    assert "video '../input/red_circle.mp4 [output]' not found" in \
        M.KinemaLoadVideo.VALIDATE_INPUTS("../input/red_circle.mp4 [output]")


def test_edit_and_upscale_nodes(kinema_dirs):
    from kinema.nodes.loaders import KinemaLoadVideoModel
    shutil.copy(ASSETS / "red_circle.mp4", kinema_dirs["input"])
    (model,) = KinemaLoadVideoModel().load("kinema-tiny-video", "auto", "auto", "auto", "none")
    images, _, _ = M.KinemaLoadVideo().load("red_circle.mp4", 0, 9, 32, 32)
    pos, neg = model.encode_prompt("a blue circle moves right"), model.encode_prompt("")
    (out,) = N.KinemaVideoEdit().edit(model, images, pos, neg, "sdedit", 0.7, 8, 6.0, 1.5, 0)
    got = checker.analyse(out.numpy())
    assert out.shape == images.shape and (got.colour, got.motion) == ("blue", "moves right"), got
    with pytest.raises(ValueError, match="`source_prompt` is required"):
        N.KinemaVideoEdit().edit(model, images, pos, neg, "flowedit", 0.7, 8, 6.0, 1.5, 0)
    (big,) = N.KinemaVideoUpscale().upscale(images, "x4", 0.3, 8, 5.0, 0, 0)
    assert big.shape == (9, 128, 128, 3)
    with pytest.raises(ValueError, match="`model` cannot refine at a larger size.*Disconnect `model`"):
        N.KinemaVideoUpscale().upscale(images, "x2", 0.3, 8, 5.0, 0, 0, model=model, positive=pos)
    (cond,) = N.KinemaReferenceImage().attach(model, pos, images[:1], 1.0)
    assert cond.image.shape == (1, 32, 32, 3) and torch.allclose(cond.image, images[:1, ..., :3].float(), atol=1e-6)


@pytest.mark.parametrize("name, want", [("video_edit", ("blue", "circle", "moves right")),
                                        ("personalized_video", ("purple", "star", "moves right"))])
def test_shipped_workflow_is_judged_by_the_checker(name, want, kinema_dirs, tmp_path, capsys):
    """Out of the box (no models folder): video_edit turns the red circle of assets/red_circle.mp4 blue and keeps
    its motion; personalized_video keeps the reference star. Judged from the mp4 each writes."""
    import av
    rc = cli.main(["run", str(REPO / "workflows" / f"{name}.json"), "--models-dir", str(tmp_path / "none"),
                   "--output-dir", str(kinema_dirs["output"]), "--quiet"])   # kinema_dirs restores the folders
    out = capsys.readouterr()
    assert rc == 0, out.err
    entry = json.loads(out.out.strip().splitlines()[-1])["6"]["images"][0]
    with av.open(str(kinema_dirs["output"] / entry["subfolder"] / entry["filename"])) as c:
        frames = torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)])
    small = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2).float() / 255, size=(32, 32), mode="area")
    clip = checker.analyse(small.permute(0, 2, 3, 1).numpy())
    assert (clip.colour, clip.shape, clip.motion) == want, clip
