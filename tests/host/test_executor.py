"""Executor: caching by signature across runs, events, node errors."""
from __future__ import annotations

import json

import pytest

import kinema
from kinema.host.executor import Executor, NodeError


def _prompt():
    from tools import make_workflows
    prompt = json.loads(json.dumps(make_workflows.WORKFLOWS["text_to_video_wan"][0]))
    prompt["4"]["inputs"].update(length=5, width=32, height=32, steps=2)
    return prompt


def test_cache_reruns_only_what_changed(kinema_dirs):
    ex = Executor(kinema.NODE_CLASS_MAPPINGS, kinema.NODE_DISPLAY_NAME_MAPPINGS)
    events = []
    first = ex.run(_prompt(), "a", on_event=lambda k, d: events.append((k, d)))
    assert sorted(first.executed) == ["1", "2", "3", "4", "5", "6"] and not first.cached
    kinds = [k for k, _ in events]
    assert kinds[0] == "execution_start" and kinds[-1] == "execution_success"
    assert kinds.count("progress") == 4 and "preview" in kinds
    progress = [d for k, d in events if k == "progress"]
    assert [(d["value"], d["max"], d["node"]) for d in progress] == [(1, 2, "4"), (2, 2, "4"),       # sampler steps,
                                                                    (2, 5, "5"), (5, 5, "5")]       # VAE calls
    second = ex.run(_prompt(), "b")
    assert second.executed == [] and sorted(second.cached) == ["1", "2", "3", "4", "5", "6"]
    assert second.outputs == first.outputs            # the ui of a cached output node is replayed
    changed = _prompt()
    changed["4"]["inputs"]["seed"] = 123
    ex.previews = False                               # headless (kinema run, batch): progress only, no previews
    events.clear()
    third = ex.run(changed, "c", on_event=lambda k, d: events.append((k, d)))
    kinds = [k for k, _ in events]
    assert kinds.count("progress") == 4 and "preview" not in kinds
    assert sorted(third.executed) == ["4", "5", "6"] and sorted(third.cached) == ["1", "2", "3"]


def test_node_error_names_node_and_class(kinema_dirs):
    ex = Executor(kinema.NODE_CLASS_MAPPINGS, kinema.NODE_DISPLAY_NAME_MAPPINGS)
    prompt = _prompt()
    prompt["4"]["inputs"]["width"] = 40
    with pytest.raises(NodeError) as info:
        ex.run(prompt)
    assert info.value.node_id == "4" and info.value.class_type == "KinemaTemporalSampler"
    assert "`width` must be a multiple of 16" in str(info.value)


class Counted:
    """Counts INPUT_TYPES calls: what building the node list costs (Kinema's loaders scan the model folders)."""
    calls = 0
    CATEGORY, RETURN_TYPES, FUNCTION, OUTPUT_NODE, DESCRIPTION = "test", (), "run", True, "Shows a number."

    @classmethod
    def INPUT_TYPES(cls):
        cls.calls += 1
        return {"required": {"value": ("INT", {"default": 1, "min": 0, "max": 9, "tooltip": "a number"})}}

    def run(self, value):
        return {"ui": {"text": [str(value)]}, "result": ()}


def test_node_list_built_once_per_job(tmp_path, monkeypatch, capsys):
    import kinema
    from kinema.host import cli
    prompt = {"1": {"class_type": "Counted", "inputs": {"value": 3}}}
    Counted.calls = 0
    ex = Executor({"Counted": Counted})
    assert Counted.calls == 0                               # nothing is built before a job
    assert ex.run(prompt).outputs == {"1": {"text": ["3"]}} and Counted.calls == 1
    info = ex.node_definitions()                            # a host that read the workflow with it passes it on
    ex.run({"1": {"class_type": "Counted", "inputs": {"value": 4}}}, object_info=info)
    assert Counted.calls == 2
    monkeypatch.setattr(kinema, "NODE_CLASS_MAPPINGS", {"Counted": Counted})
    monkeypatch.setattr(kinema, "NODE_DISPLAY_NAME_MAPPINGS", {})
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(prompt))
    dirs = ["--input-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--quiet"]
    Counted.calls = 0
    assert cli.main(["run", str(path), *dirs]) == 0         # read, --set, validate and run: one node list
    assert json.loads(capsys.readouterr().out) == {"1": {"text": ["3"]}} and Counted.calls == 1
    Counted.calls = 0
    assert cli.main(["batch", str(path), "--sweep", "1.value=1,2", *dirs]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] == 2
    assert Counted.calls == 1 + 2                           # the sweep is expanded with one, then one per job


def test_a_huge_prompt_is_not_echoed_into_the_log(tmp_path):
    """Issue 18, finding 18: Kinema-Tiny's unknown-word warning quoted the whole prompt and every unknown word (a
    50 MB prompt added 100 MB of log). Now a few words and the prompt's first 100 characters."""
    import warnings
    from kinema.nodes import env
    ex = Executor(kinema.NODE_CLASS_MAPPINGS, kinema.NODE_DISPLAY_NAME_MAPPINGS,
                  folders=env.Folders.of(models=tmp_path, input=tmp_path, output=tmp_path, temp=tmp_path))
    def word(i: int) -> str:                                                  # zqa, zqb, ... zqbaa: letters only
        letters = ""
        while True:
            i, d = divmod(i, 26)
            letters = chr(97 + d) + letters
            if not i:
                return "zq" + letters
    words = " ".join(word(i) for i in range(200_000))                         # 1.4 MB of words it does not know
    prompt = {"1": {"class_type": "KinemaLoadVideoModel", "inputs": {"model": "kinema-tiny-video", "family": "auto",
                                                                     "device": "cpu", "dtype": "auto"}},
              "2": {"class_type": "KinemaTextEncode", "inputs": {"model": ["1", 0], "text": "a red circle " + words}},
              "3": {"class_type": "KinemaTextEncode", "inputs": {"model": ["1", 0], "text": ""}},
              "4": {"class_type": "KinemaTemporalSampler", "inputs": {
                  "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "length": 9, "width": 32,
                  "height": 32, "steps": 1, "cfg": 4.0, "seed": 1, "scheduler": "default", "shift": 0.0,
                  "denoise": 1.0}},
              "5": {"class_type": "KinemaVideoDecode", "inputs": {"model": ["1", 0], "latent": ["4", 0]}},
              "6": {"class_type": "KinemaPreviewVideo", "inputs": {"images": ["5", 0], "fps": 8.0}}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ex.run(prompt)
    said = [str(w.message) for w in caught if "Kinema-Tiny" in str(w.message)]
    assert said and all(len(m) < 1500 for m in said), [len(m) for m in said]
    assert any("'zqa', 'zqb'" in m and "and 199990 more" in m and f"({len(prompt['2']['inputs']['text'])} characters)" in m
               for m in said), said


def test_inputs_a_node_does_not_declare_are_not_passed_to_it(tmp_path):
    """The editor sends its own widgets' values too (Load Video's "video-preview"): like ComfyUI, the executor
    passes a node only the inputs it declares."""
    ex = Executor({"Counted": Counted}, {})
    result = ex.run({"1": {"class_type": "Counted", "inputs": {"value": 3, "video-preview": ""}}})
    assert result.outputs["1"] == {"text": ["3"]}
