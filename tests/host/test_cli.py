"""`kinema run`: overrides, errors that name node, input and fix, exit codes, nothing half-written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kinema.host import cli

REPO = Path(__file__).resolve().parents[2]
T2V = REPO / "workflows" / "text_to_video_wan.json"


def _run(args, dirs):
    return cli.main(["run", *args, "--models-dir", str(dirs["models"]), "--output-dir", str(dirs["output"]),
                     "--input-dir", str(dirs["input"]), "--quiet"])


def _api(tmp_path, prompt):
    p = tmp_path / "wf.json"
    p.write_text(json.dumps(prompt))
    return p


def _t2v_prompt(**sampler):
    from tools import make_workflows
    prompt = json.loads(json.dumps(make_workflows.WORKFLOWS["text_to_video_wan"][0]))
    prompt["4"]["inputs"].update(length=5, width=32, height=32, steps=2, **sampler)
    return prompt


def test_api_format_runs_and_set_overrides(kinema_dirs, tmp_path, capsys):
    path = _api(tmp_path, _t2v_prompt())
    assert _run([str(path), "--set", "4.length=9", "--set", "6.filename_prefix=over/ride"], kinema_dirs) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    entry = out["6"]["images"][0]
    assert entry["subfolder"] == "over" and entry["filename"].startswith("ride_")
    from kinema.models.media import read_video_info
    assert read_video_info(kinema_dirs["output"] / "over" / entry["filename"]).frames == 9


@pytest.mark.parametrize("mutate,needles,code", [
    (lambda p: p["4"]["inputs"].update(length=8), ["node 4", "KinemaTemporalSampler", "`length`", "4k+1", "9"], 1),
    (lambda p: p["1"]["inputs"].update(model="no-such-model"), ["node 1", "model", "no-such-model"], 2),
    (lambda p: p.update({"9": {"class_type": "FooNode", "inputs": {}}}), ["9", "FooNode"], 2),
    (lambda p: p["4"]["inputs"].pop("seed"), ["node 4", "seed"], 2),
    (lambda p: p["4"]["inputs"].update(steps=0), ["node 4", "steps"], 2),
    (lambda p: p["4"]["inputs"].update(scheduler="ddim"), ["node 4", "scheduler", "flow"], 1),
])
def test_bad_input_names_node_input_and_fix(kinema_dirs, tmp_path, capsys, mutate, needles, code):
    prompt = _t2v_prompt()
    mutate(prompt)
    rc = _run([str(_api(tmp_path, prompt))], kinema_dirs)
    err = capsys.readouterr().err
    assert rc == code, err
    for n in needles:
        assert n in err, (n, err)
    assert not list(kinema_dirs["output"].rglob("*.mp4"))
    assert not [p for p in kinema_dirs["output"].rglob("*") if p.name.startswith(".")]


def test_missing_model_folder_lists_folders_searched(kinema_dirs, tmp_path, capsys):
    # the dropdown value exists at validation but the folder vanished: FileNotFoundError listing folders
    import shutil
    models = tmp_path / "m"
    shutil.copytree(kinema_dirs["models"] / "diffusers" / "fixture-wan-t2v", models / "diffusers" / "fixture-wan-t2v")
    (models / "diffusers" / "fixture-wan-t2v" / "model_index.json").unlink()
    dirs = {**kinema_dirs, "models": models}
    rc = _run([str(_api(tmp_path, _t2v_prompt()))], dirs)
    err = capsys.readouterr().err
    assert rc == 2 and "fixture-wan-t2v" in err
    shutil.rmtree(models)


@pytest.mark.parametrize("text,needle", [("{not json", "JSON"), ("[1, 2]", "workflow"), ("", "JSON")])
def test_broken_file(kinema_dirs, tmp_path, capsys, text, needle):
    p = tmp_path / "broken.json"
    p.write_text(text)
    assert _run([str(p)], kinema_dirs) == 2
    err = capsys.readouterr().err
    assert "broken.json" in err and needle.lower() in err.lower(), err


def test_missing_file_and_bad_set(kinema_dirs, tmp_path, capsys):
    assert _run([str(tmp_path / "nope.json")], kinema_dirs) == 2
    assert "nope.json" in capsys.readouterr().err
    path = _api(tmp_path, _t2v_prompt())
    assert _run([str(path), "--set", "4.lenght=9"], kinema_dirs) == 2
    err = capsys.readouterr().err
    assert "lenght" in err and "length" in err
    assert _run([str(path), "--set", "4.length=abc"], kinema_dirs) == 2
    assert "INT" in capsys.readouterr().err
    assert _run([str(path), "--set", "77.seed=1"], kinema_dirs) == 2
    assert "77" in capsys.readouterr().err


def test_ui_format_unknown_node_type(kinema_dirs, tmp_path, capsys):
    ui = json.loads(T2V.read_text())
    ui["nodes"].append({"id": 99, "type": "MysteryNode", "mode": 0, "inputs": [], "outputs": [],
                        "widgets_values": []})
    p = tmp_path / "ui.json"
    p.write_text(json.dumps(ui))
    assert _run([str(p)], kinema_dirs) == 2
    err = capsys.readouterr().err
    assert "99" in err and "MysteryNode" in err and "Fix" in err


def test_nodes_and_fixtures_commands(tmp_path, capsys):
    assert cli.main(["nodes"]) == 0
    assert "KinemaTemporalSampler" in capsys.readouterr().out
    assert cli.main(["fixtures", str(tmp_path)]) == 0
    cap = capsys.readouterr()
    assert "RANDOM" in cap.err
    for name in ("fixture-wan-t2v", "fixture-wan-i2v", "fixture-animatediff"):
        assert (tmp_path / "diffusers" / name / "model_index.json").is_file()
