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


def _t2v_prompt(prefix: str | None = None, **sampler):
    from tools import make_workflows
    prompt = json.loads(json.dumps(make_workflows.WORKFLOWS["text_to_video_wan"][0]))
    prompt["4"]["inputs"].update(length=5, width=32, height=32, steps=2, **sampler)
    if prefix is not None:
        prompt["6"]["inputs"]["filename_prefix"] = prefix
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


# ---------------------------------------------------------------------------------------------------------------
# Issue 18, finding 8 (and 10, 15, 16, 17): one line and exit 2, never a traceback
# ---------------------------------------------------------------------------------------------------------------
def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("kinema: ") and len(err.strip().splitlines()) <= 2, err
    return err


def _file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _chain(n: int, bad_at: int | None = None) -> dict:
    """Load Image (sprite.png) -> n - 1 Resize Video -> Preview Video; scale_by 40 (over the max) at node bad_at."""
    prompt = {"1": {"class_type": "KinemaLoadImage", "inputs": {"image": "sprite.png"}}}
    for i in range(2, n + 1):
        prompt[str(i)] = {"class_type": "KinemaResizeVideo", "inputs": {"images": [str(i - 1), 0], "method": "nearest",
                                                                       "scale_by": 40.0 if i == bad_at else 1.0}}
    prompt[str(n + 1)] = {"class_type": "KinemaPreviewVideo", "inputs": {"images": [str(n), 0], "fps": 8.0}}
    return prompt


@pytest.mark.parametrize("make,needle", [
    (lambda d: d, "is a folder"),
    (lambda d: _file(d / "deep.json", "[" * 100_000 + "]" * 100_000), "nested too deep"),
    (lambda d: _api(d, {"1": {"class_type": ["KinemaLoadImage"], "inputs": {}}}), "class_type is not a string"),
    (lambda d: _api(d, {"1": {"class_type": "KinemaLoadImage", "inputs": {"image": "sprite.png"}},
                        "2": {"class_type": "KinemaPreviewVideo", "inputs": {"images": ["1", "zero"], "fps": 8.0}}}),
     "node 2 (KinemaPreviewVideo), input 'images': Bad linked input"),
    (lambda d: _api(d, _chain(3000, bad_at=1500)), "node 1500 (KinemaResizeVideo), input 'scale_by'"),
    # finding 11: a NUL in filename_prefix wrote the video to a hidden `.a` and left it
    (lambda d: _api(d, _t2v_prompt(prefix="a\x00b")), "node 6 (KinemaSaveVideo), input 'filename_prefix'"),
    # finding 12: a literal on a link input failed at run time with AttributeError naming no input
    (lambda d: _api(d, _t2v_prompt(model="x")), "node 4 (KinemaTemporalSampler), input 'model': Input 'model' "
                                                 "takes a KINEMA_MODEL from a linked node"),
    # finding 13: NaN for a FLOAT passed validation and turned guidance off (in a file: refused as it is read)
    (lambda d: _api(d, _t2v_prompt(cfg=float("nan"))), "wf.json: NaN is not a number JSON allows"),
])
def test_bad_workflow_files_exit_2_with_a_line(kinema_dirs, tmp_path, capsys, make, needle):
    (kinema_dirs["input"] / "sprite.png").write_bytes((REPO / "workflows" / "assets" / "sprite.png").read_bytes())
    path = make(tmp_path)
    assert _run([str(path)], kinema_dirs) == cli.EXIT_INVALID
    assert needle in _one_line_error(capsys)


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_a_float_set_to_nan_is_refused(kinema_dirs, tmp_path, capsys, value):
    """Finding 13, through --set (the file is read strictly): refused by validation, naming the input."""
    assert _run([str(_api(tmp_path, _t2v_prompt())), "--set", f"4.cfg={value}"], kinema_dirs) == cli.EXIT_INVALID
    err = _one_line_error(capsys)
    assert "node 4 (KinemaTemporalSampler), input 'cfg'" in err and "finite" in err


def test_ui_link_slot_that_is_not_a_number(kinema_dirs, tmp_path, capsys):
    ui = json.loads(T2V.read_text())
    ui["links"][0][2] = "zero"
    p = tmp_path / "ui.json"
    p.write_text(json.dumps(ui))
    assert _run([str(p)], kinema_dirs) == cli.EXIT_INVALID
    assert f"link {ui['links'][0][0]}: origin slot 'zero' is not a slot number" in _one_line_error(capsys)


def test_stale_temp_files_of_a_killed_run_are_removed_and_a_long_chain_runs(kinema_dirs, tmp_path, capsys):
    """Finding 10: kill -9 left `.name.<hex>.part.mp4` behind; the next run removes those older than an hour."""
    import os
    import time
    out = kinema_dirs["output"]
    stale, fresh = out / ".Kinema_00001_.0a1b2c3d.part.mp4", out / ".Kinema_00002_.0a1b2c3e.part.mp4"
    for p in (stale, fresh):
        p.write_bytes(b"half a video")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    path = _api(tmp_path, _chain(300))
    (kinema_dirs["input"] / "sprite.png").write_bytes((REPO / "workflows" / "assets" / "sprite.png").read_bytes())
    assert _run([str(path)], kinema_dirs) == 0, capsys.readouterr().err
    assert not stale.exists() and fresh.exists()


def test_batch_refuses_duplicate_jobs_and_an_unwritable_folder(kinema_dirs, tmp_path, capsys):
    """Finding 17: `--sweep 4.seed=5,5,6` made two jobs share one manifest record; finding 8: a batch into a folder
    it cannot write ended in a traceback."""
    path = _api(tmp_path, _t2v_prompt())
    dirs = ["--models-dir", str(kinema_dirs["models"]), "--input-dir", str(kinema_dirs["input"]), "--quiet"]
    assert cli.main(["batch", str(path), "--sweep", "4.seed=5,5,6", "--output-dir", str(tmp_path / "o"),
                     *dirs]) == cli.EXIT_INVALID
    err = _one_line_error(capsys)
    assert "job 1" in err and "job 2" in err and '"4.seed": 5' in err and not (tmp_path / "o").exists()
    assert cli.main(["batch", str(path), "--sweep", "4.seed=05,5", "--output-dir", str(tmp_path / "o"),
                     *dirs]) == cli.EXIT_INVALID              # the same value written twice
    _one_line_error(capsys)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert cli.main(["batch", str(path), "--sweep", "4.seed=5,6", "--output-dir", str(blocker / "sub"),
                     *dirs]) == cli.EXIT_INVALID
    assert "`--output-dir` must be a folder Kinema can write" in _one_line_error(capsys)


def _latents(path: Path, meta, audio: bool = False) -> Path:
    import torch
    from safetensors.torch import save_file
    tensors = {"latents": torch.zeros(1, 8, 3, 4, 4)}
    if audio:
        tensors["audio"] = torch.zeros(1, 800)
    save_file(tensors, str(path), metadata={"kinema": json.dumps(meta)})
    return path


@pytest.mark.parametrize("meta,audio,args,needle", [
    ([1, 2], False, [], "must carry Kinema's metadata"),                            # finding 8: a list
    ({"family": "tiny", "model": "kinema-tiny-video", "frames": 9, "fps": 8.0}, True, [], "sample_rate"),
    ({"family": "tiny", "model": "../../../../..", "frames": 9, "fps": 8.0}, False, [],        # finding 15
     "not a name inside the model folders"),
    ({"family": "tiny", "model": "/etc", "frames": 9, "fps": 8.0}, False, [], "not a name inside"),
    ({"family": "tiny", "model": "kinema-tiny-video", "frames": 9, "fps": 8.0}, False,          # finding 16
     ["--output", "/dev/null", "--overwrite"], "not a regular file"),
])
def test_decode_refuses_bad_latents_and_targets(tmp_path, capsys, meta, audio, args, needle):
    latents = _latents(tmp_path / "x.latents.safetensors", meta, audio)
    rc = cli.main(["decode", str(latents), "--quiet", "--models-dir", str(tmp_path / "models"), *args])
    assert rc == cli.EXIT_INVALID and needle in _one_line_error(capsys)
    assert Path("/dev/null").is_char_device()


def _broken_models(root: Path) -> Path:
    """A models folder with two unreadable model_index.json files (bytes that are not UTF-8 JSON; a JSON list)."""
    for name, data in (("broken", b"\xff{not json"), ("listish", b"[1, 2]")):
        (root / "diffusers" / name).mkdir(parents=True)
        (root / "diffusers" / name / "model_index.json").write_bytes(data)
    return root


def test_an_unreadable_model_index_breaks_nothing_else(tmp_path, capsys, caplog):
    """Finding 5: one bad model_index.json made every run exit 1 with a traceback naming no folder (the loaders list
    models when node definitions are built). Now the listing skips it with a warning naming it, other workflows
    run, and using that folder is an error naming the file."""
    import logging
    caplog.set_level(logging.WARNING, logger="kinema")
    models = _broken_models(tmp_path / "models")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "sprite.png").write_bytes((REPO / "workflows" / "assets" / "sprite.png").read_bytes())
    path = _api(tmp_path, _chain(2))
    dirs = {"models": models, "output": tmp_path / "out", "input": tmp_path / "in"}
    assert _run([str(path)], dirs) == 0, capsys.readouterr().err
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert str(models / "diffusers" / "broken" / "model_index.json") in warned and "listish" in warned
    from kinema.nodes import env
    with env.using(env.Folders.of(models=models)):
        assert "broken" not in env.list_models("diffusers") and "kinema-tiny-video" in env.list_models("diffusers")
    latents = _latents(tmp_path / "x.latents.safetensors", {"family": "tiny", "model": "broken", "frames": 9,
                                                            "fps": 8.0})
    assert cli.main(["decode", str(latents), "--quiet", "--models-dir", str(models)]) == cli.EXIT_INVALID
    err = _one_line_error(capsys)
    assert str(models / "diffusers" / "broken" / "model_index.json") in err and "cannot be read" in err


def test_pickled_weights_are_refused_naming_the_safetensors_alternative(kinema_dirs, tmp_path, capsys, monkeypatch):
    """Finding 14: a folder whose transformer is saved as diffusion_pytorch_model.bin (save_pretrained with
    safe_serialization=False). It is never unpickled, and the error says what to do."""
    import shutil
    import torch
    from diffusers import WanTransformer3DModel
    models = tmp_path / "models"
    folder = models / "diffusers" / "wan-bin"
    shutil.copytree(kinema_dirs["models"] / "diffusers" / "fixture-wan-t2v", folder)
    transformer = WanTransformer3DModel.from_pretrained(str(folder / "transformer"))
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    transformer.save_pretrained(str(folder / "transformer"), safe_serialization=False)
    assert sorted(p.name for p in (folder / "transformer").iterdir()) == ["config.json", "diffusion_pytorch_model.bin"]
    unpickled = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: unpickled.append(a) or {})
    prompt = _t2v_prompt()
    prompt["1"]["inputs"]["model"] = "wan-bin"
    rc = _run([str(_api(tmp_path, prompt))], {**kinema_dirs, "models": models})
    err = capsys.readouterr().err
    assert rc == cli.EXIT_FAILED and not unpickled, err
    for needle in ("node 1 (KinemaLoadVideoModel)", "must hold .safetensors weights", "diffusion_pytorch_model.bin",
                   "WanTransformer3DModel.from_pretrained", ".save_pretrained("):
        assert needle in err, (needle, err)


def test_huge_sizes_are_refused_before_anything_is_allocated(kinema_dirs, tmp_path, capsys):
    """Finding 9: a Load Video size that cannot fit in RAM (before: decoded and resized until it did not), and a
    model config.json claiming absurd sizes (before: built, asking for 16 GB and more), are refused with the numbers
    and the fix. Both sizes exceed this machine's total RAM, so the test never depends on what is free."""
    import json as _json
    import shutil
    import psutil
    import torch
    from kinema.models.media import VideoWriter
    side = 16384
    frames = psutil.virtual_memory().total // (side * side * 12) + 1         # float32 frames > all of the RAM
    with VideoWriter(kinema_dirs["input"] / "long.mp4", fps=8) as out:
        out.write(torch.rand(frames, 16, 16, 3))
    prompt = {"1": {"class_type": "KinemaLoadVideo", "inputs": {"video": "long.mp4", "start_frame": 0,
                                                                "frame_count": 0, "width": side, "height": side}},
              "2": {"class_type": "KinemaPreviewVideo", "inputs": {"images": ["1", 0], "fps": 8.0}}}
    assert _run([str(_api(tmp_path, prompt))], kinema_dirs) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    need = frames * side * side * 12 / 2**30
    assert "node 1 (KinemaLoadVideo)" in err and f"asks for {frames} frames at {side}x{side}" in err
    assert f"need {need:.1f} GB of RAM" in err and "frames fit" in err, err

    models = tmp_path / "models"
    folder = models / "diffusers" / "tiny-absurd"
    shutil.copytree(REPO / "models" / "tiny" / "weights" / "kinema-tiny-video", folder)
    config = folder / "transformer" / "config.json"
    config.write_text(_json.dumps({**_json.loads(config.read_text()), "dim": 65536, "depth": 64}))
    ui = _json.loads((REPO / "workflows" / "text_to_video.json").read_text())
    ui["nodes"][0]["widgets_values"][0] = "tiny-absurd"
    path = tmp_path / "absurd.json"
    path.write_text(_json.dumps(ui))
    assert _run([str(path)], {**kinema_dirs, "models": models}) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "node 1 (KinemaLoadVideoModel)" in err and str(config) in err and "diffusion_pytorch_model.safetensors holds" \
        in err and "GB as float32" in err and "Restore the folder's config.json" in err, err


def test_output_naming_refuses_control_characters_inside_comfyui_too(tmp_path):
    """Finding 11 where Kinema's validation does not run (inside ComfyUI): the file namer refuses the prefix before
    anything is written (before: PyAV wrote to a hidden `.a`, cut at the NUL, and left it)."""
    from kinema.models.media import next_output_path
    for prefix in ("a\x00b", "Kinema/a\nb", "x\x1b[0m"):
        with pytest.raises(ValueError, match="`filename_prefix` must not contain control characters"):
            next_output_path(tmp_path, prefix, "mp4")
    assert not list(tmp_path.iterdir())
    assert next_output_path(tmp_path, "Kinema/vidéo", "mp4").name == "vidéo_00001_.mp4"
