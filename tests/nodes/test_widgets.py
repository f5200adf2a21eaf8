"""nodes/widgets.py: the helpers every saving, loading and sampling node shares."""
from __future__ import annotations

import json

import pytest
import torch

from kinema.nodes import env, widgets


def test_save_tags_store_the_workflow_as_comfyui_does():
    assert widgets.save_tags(None, None) is None and widgets.save_tags(None, {}) is None
    tags = widgets.save_tags({"1": {"class_type": "X"}}, {"workflow": {"nodes": []}})
    assert tags == {"prompt": '{"1": {"class_type": "X"}}', "workflow": '{"nodes": []}'}
    assert json.loads(tags["prompt"]) == {"1": {"class_type": "X"}}


def test_saved_entry_and_video_ui(tmp_path):
    assert widgets.saved_entry(tmp_path / "a.mp4", tmp_path, "output") == \
        {"filename": "a.mp4", "subfolder": "", "type": "output"}
    assert widgets.saved_entry(tmp_path / "x" / "y" / "a.gif", tmp_path, "temp")["subfolder"] == "x/y"
    assert widgets.video_ui({"filename": "a.mp4"}, "mp4")["animated"] == [True]
    assert widgets.video_ui({"filename": "a.gif"}, "gif")["animated"] == [False]      # a <video> cannot play gif


def test_input_path_reads_the_editors_folder_tags(tmp_path):
    folders = env.Folders.of(tmp_path / "m", tmp_path / "in", tmp_path / "out", tmp_path / "tmp")
    for d, name in ((folders.input, "a.png"), (folders.output, "b.png"), (folders.temp, "c.png")):
        d.mkdir()
        (d / name).write_bytes(b"x")
    with env.using(folders):
        assert widgets.input_path("a.png") == folders.input / "a.png"
        assert widgets.input_path("a.png [input]") == folders.input / "a.png"
        assert widgets.input_path("b.png [output]") == folders.output / "b.png"
        assert widgets.input_path("c.png [temp]") == folders.temp / "c.png"
        with pytest.raises(FileNotFoundError, match="image '../in/a.png \\[output\\]' not found"):
            widgets.input_path("../in/a.png [output]", "image")              # never outside the tagged folder
        with pytest.raises(FileNotFoundError, match="not found in"):
            widgets.input_path("b.png")                                      # untagged: the input folders only
        assert env.file_problem(widgets.input_resolver("audio"), "z.wav [temp]").startswith("audio 'z.wav [temp]'")


class _Model:
    def preview(self, latents):                                 # (B, C, F, H, W) -> (F, H, W, 3) like a family
        return latents[0, :3].permute(1, 2, 3, 0)


@pytest.mark.parametrize("model, previews, want_preview", [(_Model(), True, True), (_Model(), False, False),
                                                           (None, True, False)])
def test_step_progress_reports_steps_and_previews_only_when_asked(model, previews, want_preview):
    seen = []
    with env.reporting(lambda value, total, preview: seen.append((value, total, preview)), previews=previews):
        on_step = widgets.step_progress(4, model)
        for i in range(1, 4):
            on_step(i, 3, torch.rand(1, 4, 2, 8, 8))
    assert [(v, t) for v, t, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    assert all((p is not None) == want_preview for _, _, p in seen)
    if want_preview:
        assert seen[0][2].size == (8, 8)
