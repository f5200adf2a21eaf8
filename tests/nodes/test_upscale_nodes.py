"""Load Upscale Model and Video Upscale's learned path as nodes; workflows saved before the `upscaler` input
existed still convert unchanged; the shipped upscale_video workflow (Kinema-Tiny Upscaler) is judged from the
files it writes: against the 64 px source it beats its own bicubic branch, and the pixel checker reads the clip."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import av
import pytest
import torch

from kinema.host import cli
from kinema.nodes import edit as N
from kinema.nodes import media as M
from kinema.nodes.loaders import KinemaLoadUpscaleModel
from training.tiny import checker

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "workflows" / "assets"

pytestmark = pytest.mark.usefixtures("one_thread")


def _read(path: Path) -> torch.Tensor:
    """Every frame of an mp4 as (F, H, W, 3) float 0..1."""
    with av.open(str(path)) as c:
        return torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]).float() / 255


def test_load_upscale_model_lists_only_upscalers_and_feeds_video_upscale(kinema_dirs):
    from kinema.models.upscale import KinemaTinyUpscaler, learned_upscale
    spec = KinemaLoadUpscaleModel.INPUT_TYPES()["required"]
    # not the video, audio, portrait or other fixture folders (fixture-ltx2-upsampler is an LTX-2 latent upsampler)
    assert spec["model"][0] == ["fixture-ltx2-upsampler", "kinema-tiny-upscaler"]
    (up,) = KinemaLoadUpscaleModel().load("kinema-tiny-upscaler", "auto", "auto")
    assert isinstance(up, KinemaTinyUpscaler) and up.scale == 2
    with pytest.raises(FileNotFoundError, match="not-there"):
        KinemaLoadUpscaleModel().load("not-there", "auto", "auto")
    shutil.copy(ASSETS / "red_circle.mp4", kinema_dirs["input"])
    images, _, _ = M.KinemaLoadVideo().load("red_circle.mp4", 0, 9, 32, 32)
    (learned,) = N.KinemaVideoUpscale().upscale(images, "x2", 0.0, 8, 5.0, 0, 0, upscaler=up)
    (plain,) = N.KinemaVideoUpscale().upscale(images, "x2", 0.0, 8, 5.0, 0, 0)
    assert learned.shape == plain.shape == (9, 64, 64, 3)
    assert torch.equal(learned, learned_upscale(up, images, 2)) and (learned - plain).abs().mean() > 1e-3


def test_upscaler_input_is_optional_and_last():
    """Added at the end of the optional inputs (then step_cache), so positional widget values of saved workflows
    do not move."""
    spec = N.KinemaVideoUpscale.INPUT_TYPES()
    assert list(spec["optional"]) == ["model", "positive", "negative", "upscaler", "step_cache"]
    assert spec["optional"]["upscaler"][0] == "KINEMA_UPSCALER"


def test_workflow_saved_before_the_upscaler_input_converts_unchanged():
    """A UI workflow whose Video Upscale node has no `upscaler` and `step_cache` slots (saved before they existed)
    converts to the same prompt as the current file."""
    import kinema
    from kinema.host.object_info import object_info
    from kinema.host.ui_to_api import ui_to_api
    info = object_info(kinema.NODE_CLASS_MAPPINGS, kinema.NODE_DISPLAY_NAME_MAPPINGS)
    current = json.loads((REPO / "workflows" / "upscale_video_animatediff.json").read_text())
    old = copy.deepcopy(current)
    for node in old["nodes"]:
        if node["type"] == "KinemaVideoUpscale":
            assert [i["name"] for i in node["inputs"][-2:]] == ["upscaler", "step_cache"]
            node["inputs"] = [i for i in node["inputs"] if i["name"] not in ("upscaler", "step_cache")]
    assert ui_to_api(old, info) == ui_to_api(current, info)


def test_shipped_upscale_workflow_beats_bicubic_and_reads_as_the_clip(tmp_path, capsys):
    """Out of the box (no models folder): the learned branch is closer to the 64 px source of red_circle.mp4 than
    the bicubic branch of the same workflow, and the checker reads it as a red circle moving right."""
    rc = cli.main(["run", str(REPO / "workflows" / "upscale_video.json"), "--models-dir", str(tmp_path / "none"),
                   "--output-dir", str(tmp_path), "--quiet"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    outputs = json.loads(out.out.strip().splitlines()[-1])
    files = {nid: tmp_path / e["images"][0]["subfolder"] / e["images"][0]["filename"] for nid, e in outputs.items()}
    learned, bicubic, source = _read(files["6"]), _read(files["9"]), _read(ASSETS / "red_circle.mp4")
    assert learned.shape == bicubic.shape == source.shape == (9, 64, 64, 3)
    mse = lambda x: ((x - source) ** 2).mean().item()
    assert mse(learned) < 0.7 * mse(bicubic), (mse(learned), mse(bicubic))
    small = torch.nn.functional.interpolate(learned.permute(0, 3, 1, 2), size=(32, 32), mode="area")
    clip = checker.analyse(small.permute(0, 2, 3, 1).numpy())
    assert (clip.colour, clip.shape, clip.motion) == ("red", "circle", "moves right"), clip
