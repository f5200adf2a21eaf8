"""Every file in workflows/ runs headless through `kinema run` against the tiny fixture models, and produces
what its sidecar <name>.expect.json says."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kinema.host import cli, graph
from kinema.models.media import read_video_info

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted(p for p in (REPO / "workflows").glob("*.json") if not p.name.endswith(".expect.json"))


def _object_info():
    import kinema
    return graph.object_info(kinema.NODE_CLASS_MAPPINGS, kinema.NODE_DISPLAY_NAME_MAPPINGS)


def test_there_are_workflows_and_each_has_expectations():
    assert {p.stem for p in WORKFLOWS} >= {"text_to_video_wan", "image_to_video_wan", "animated_sticker"}
    for p in WORKFLOWS:
        assert p.with_suffix(".expect.json").is_file(), p


def test_shipped_workflows_are_current():
    """workflows/*.json equal what workflows/make_workflows.py writes (run it after changing node inputs)."""
    sys.path.insert(0, str(REPO / "workflows"))
    import make_workflows
    rendered = make_workflows.render()
    for name, text in rendered.items():
        assert (REPO / "workflows" / f"{name}.json").read_text() == text, f"re-run workflows/make_workflows.py"
        ui = json.loads(text)
        assert not graph.is_api_format(ui)
        prompt = graph.ui_to_api(ui, _object_info())
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
    expect = json.loads(path.with_suffix(".expect.json").read_text())["outputs"]
    assert set(outputs) == set(expect)
    for nid, want in expect.items():
        entry = outputs[nid]["images"][0]
        file = kinema_dirs["output"] / entry["subfolder"] / entry["filename"]
        info = read_video_info(file)
        assert info.format == want["format"]
        assert info.frames == want["frames"]
        assert abs(info.fps - want["fps"]) < 0.05
        assert (info.width, info.height) == (want["width"], want["height"])
        assert info.has_alpha == want["alpha"]
        if "loop" in want:
            assert info.loop == want["loop"]
    # nothing half-written: no temp files left in the output folder
    assert not [p for p in kinema_dirs["output"].rglob("*") if p.name.startswith(".")]
