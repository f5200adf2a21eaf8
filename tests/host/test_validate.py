"""host/validate.py: ComfyUI's /prompt checks and the nodes' own VALIDATE_INPUTS in one function, used by
`kinema run` (the executor), `kinema serve` (/prompt) and `kinema batch`: the same failure, the same words."""
from __future__ import annotations

import asyncio
import json

import pytest

from kinema.host.executor import Executor
from kinema.host.object_info import object_info
from kinema.host.validate import PromptInvalid, format_node_errors, validate


def only_error(node_errors: dict, node_id: str) -> dict:
    assert list(node_errors) == [node_id]
    (error,) = node_errors[node_id]["errors"]
    return error


def int_ids(prompt: dict) -> dict:
    return {nid: {**node, "inputs": {k: [int(v[0]), v[1]] if isinstance(v, list) else v
                                     for k, v in node["inputs"].items()}} for nid, node in prompt.items()}


# ---------------------------------------------------------------------------------------------------------------
# ComfyUI's checks
# ---------------------------------------------------------------------------------------------------------------
def test_valid_prompt(info, small_classes, good_prompt):
    assert validate(good_prompt(), info, small_classes) == (None, {}, ["3"])
    assert validate(int_ids(good_prompt()), info, small_classes) == (None, {}, ["3"])   # [1, 0] == ["1", 0]


def test_prompt_without_outputs(info, small_classes, good_prompt):
    prompt = good_prompt()
    del prompt["3"]
    error, node_errors, outputs = validate(prompt, info, small_classes)
    assert error["type"] == "prompt_no_outputs" and node_errors == {} and outputs == []


def test_unknown_class_type(info, small_classes, good_prompt):
    prompt = good_prompt()
    prompt["2"]["class_type"] = "Nope"
    error, node_errors, _ = validate(prompt, info, small_classes)
    assert error["type"] == "invalid_prompt" and "Nope" in error["message"]
    assert node_errors["2"]["class_type"] == "Nope"


@pytest.mark.parametrize("change,kind,input_name", [
    (lambda p: p["2"]["inputs"].pop("strength"), "required_input_missing", "strength"),
    (lambda p: p["2"]["inputs"].update(strength=-1), "value_smaller_than_min", "strength"),
    (lambda p: p["2"]["inputs"].update(strength=2.5), "value_bigger_than_max", "strength"),
    (lambda p: p["2"]["inputs"].update(strength="strong"), "invalid_input_type", "strength"),
    (lambda p: p["1"]["inputs"].update(name="c.safetensors"), "value_not_in_list", "name"),
    (lambda p: p["2"]["inputs"].update(image=["1", 0]), "return_type_mismatch", "image"),
    (lambda p: p["2"]["inputs"].update(image=[1, 0]), "return_type_mismatch", "image"),
    (lambda p: p["2"]["inputs"].update(image=["9", 0]), "bad_linked_input", "image"),
    (lambda p: p["2"]["inputs"].update(image=[9, 0]), "bad_linked_input", "image"),
    (lambda p: p["2"]["inputs"].update(image=["1", 5]), "bad_linked_input", "image"),
    (lambda p: p["2"]["inputs"].update(image=["1"]), "bad_linked_input", "image"),
    (lambda p: p["2"]["inputs"].update(image=[True, 1]), "bad_linked_input", "image"),
])
def test_node_errors(info, small_classes, good_prompt, change, kind, input_name):
    prompt = good_prompt()
    change(prompt)
    error, node_errors, outputs = validate(prompt, info, small_classes)
    node_id = "1" if input_name == "name" else "2"
    found = only_error(node_errors, node_id)
    assert found["type"] == kind and found["extra_info"]["input_name"] == input_name
    assert set(found) == {"type", "message", "details", "extra_info"}
    assert node_errors[node_id]["dependent_outputs"] == ["3"]
    assert node_errors[node_id]["class_type"] == prompt[node_id]["class_type"]
    assert error["type"] == "prompt_outputs_failed_validation" and outputs == []   # the only output failed
    assert format_node_errors(node_errors)[0].startswith(f"node {node_id} ({prompt[node_id]['class_type']}), "
                                                         f"input '{input_name}': {found['message'].rstrip('.')}")


def test_wildcard_input_accepts_any_type_and_one_good_output_is_enough(info, small_classes, good_prompt):
    prompt = good_prompt()
    prompt["3"]["inputs"]["anything"] = ["1", 0]
    assert validate(prompt, info, small_classes) == (None, {}, ["3"])
    prompt["4"] = {"class_type": "Save", "inputs": {"images": ["2", 0]}}       # missing filename_prefix
    error, node_errors, outputs = validate(prompt, info, small_classes)
    assert error is None and outputs == ["3"]                # output 3 is still valid (ComfyUI runs it)
    assert node_errors["4"]["errors"][0]["type"] == "required_input_missing"


def test_validation_reports_cycles(info, small_classes, good_prompt):
    prompt = good_prompt()
    prompt["2"]["inputs"]["image"] = ["4", 0]
    prompt["4"] = {"class_type": "Filter", "inputs": {"image": [2, 0], "strength": 1.0}}
    _, node_errors, _ = validate(prompt, info, small_classes)
    assert any(e["type"] == "dependency_cycle" for entry in node_errors.values() for e in entry["errors"])


# ---------------------------------------------------------------------------------------------------------------
# VALIDATE_INPUTS, in the same pass
# ---------------------------------------------------------------------------------------------------------------
CALLS: list[str] = []
FILES = ("a.png", "b.png")


class Pick:
    """A file loader: its validator takes `name`, so an annotated name ("a.png [input]") is left to it."""
    RETURN_TYPES, FUNCTION = ("INT",), "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": (list(FILES),), "scale": ("INT", {"default": 1, "min": 1, "max": 4})}}

    @classmethod
    def VALIDATE_INPUTS(cls, name):
        CALLS.append(f"Pick:{name}")
        if name == "boom.png":
            raise ValueError("the validator broke")
        return True if name.split(" [")[0] in FILES else f"`name` {name!r} not found. Fix: upload it."

    def run(self, name, scale):
        CALLS.append("Pick.run")
        return (FILES.index(name.split(" [")[0]) * scale,)


class Odd:
    """Its validator needs `value`, which is linked: it runs when the node runs, with the value."""
    RETURN_TYPES, FUNCTION = ("INT",), "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    @classmethod
    def VALIDATE_INPUTS(cls, value):
        CALLS.append(f"Odd:{value}")
        return True if value % 2 else f"`value` must be odd, got {value}. Fix: add 1."

    def run(self, value):
        CALLS.append("Odd.run")
        return (value,)


class Show:
    RETURN_TYPES, FUNCTION, OUTPUT_NODE = (), "run", True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    def run(self, value):
        CALLS.append("Show.run")
        return {"ui": {"text": [str(value)]}, "result": ()}


CHECKED = {"Pick": Pick, "Odd": Odd, "Show": Show}


def checked_prompt(name="a.png", scale=1, through_odd=False) -> dict:
    prompt = {"1": {"class_type": "Pick", "inputs": {"name": name, "scale": scale}},
              "2": {"class_type": "Show", "inputs": {"value": [1, 0]}}}
    if through_odd:
        prompt["3"] = {"class_type": "Odd", "inputs": {"value": ["1", 0]}}
        prompt["2"]["inputs"]["value"] = ["3", 0]
    return prompt


def test_validate_inputs_runs_with_the_checks():
    info = object_info(CHECKED)
    CALLS.clear()
    assert validate(checked_prompt("b.png [input]"), info, CHECKED) == (None, {}, ["2"])   # no list check
    assert CALLS == ["Pick:b.png [input]"]
    error, node_errors, _ = validate(checked_prompt("gone.png"), info, CHECKED)
    found = only_error(node_errors, "1")
    assert found["type"] == "custom_validation_failed" and found["extra_info"] == {"input_name": "name"}
    assert found["details"] == "name - `name` 'gone.png' not found. Fix: upload it."
    assert format_node_errors(node_errors) == [
        "node 1 (Pick), input 'name': Custom validation failed for node: `name` 'gone.png' not found. Fix: upload it."]
    assert error["type"] == "prompt_outputs_failed_validation"
    _, node_errors, _ = validate(checked_prompt("boom.png"), info, CHECKED)       # a validator that raises
    assert only_error(node_errors, "1")["details"] == "name - ValueError: the validator broke"
    CALLS.clear()
    _, node_errors, _ = validate(checked_prompt("a.png", scale=9), info, CHECKED)   # other inputs: checked as ever
    assert only_error(node_errors, "1")["type"] == "value_bigger_than_max" and CALLS == []   # own errors first
    CALLS.clear()
    assert validate(checked_prompt("a.png", through_odd=True), info, CHECKED) == (None, {}, ["2"])
    assert CALLS == ["Pick:a.png"]                                  # Odd's needs the linked value: not yet


def test_executor_refuses_before_running_and_checks_linked_values_when_the_node_runs():
    ex = Executor(CHECKED, {})
    CALLS.clear()
    with pytest.raises(PromptInvalid) as err:
        ex.run(checked_prompt("gone.png"))
    assert CALLS == ["Pick:gone.png"]                               # nothing ran; validated once
    assert err.value.node_errors == validate(checked_prompt("gone.png"), ex.object_info, CHECKED).node_errors
    assert str(err.value).splitlines()[1].strip() == format_node_errors(err.value.node_errors)[0]
    CALLS.clear()
    assert ex.run(checked_prompt("b.png", scale=3, through_odd=True)).outputs == {"2": {"text": ["3"]}}
    assert CALLS == ["Pick:b.png", "Pick.run", "Odd:3", "Odd.run", "Show.run"]
    CALLS.clear()
    with pytest.raises(PromptInvalid) as err:                       # 1 * 2: even, found when Odd runs
        ex.run(checked_prompt("b.png", scale=2, through_odd=True))
    assert CALLS == ["Pick:b.png", "Pick.run", "Odd:2"]
    assert format_node_errors(err.value.node_errors) == [
        "node 3 (Odd), input 'value': Custom validation failed for node: `value` must be odd, got 2. Fix: add 1."]


# ---------------------------------------------------------------------------------------------------------------
# One failure, one text: kinema run, kinema serve (/prompt) and kinema batch
# ---------------------------------------------------------------------------------------------------------------
def _served(prompt: dict, executor: Executor, user_dir) -> tuple[int, dict]:
    pytest.importorskip("aiohttp")
    from aiohttp.test_utils import TestClient, TestServer
    from kinema.host.server import make_app

    async def main():
        async with TestClient(TestServer(make_app(executor, user_dir=user_dir))) as client:
            r = await client.post("/api/prompt", json={"prompt": prompt, "client_id": "t"})
            return r.status, await r.json()
    return asyncio.run(main())


def _printed(err: str) -> list[str]:
    """The error lines `kinema run` / `kinema batch` print under "invalid workflow:"."""
    return [line.strip() for line in err.splitlines() if line.startswith("  node ")]


def test_same_failure_same_words_in_run_serve_and_batch(kinema_dirs, tmp_path, capsys):
    import kinema
    from kinema.host import cli
    from kinema.nodes import env
    prompt = {"1": {"class_type": "KinemaLoadImage", "inputs": {"image": "missing.png"}},
              "2": {"class_type": "KinemaSaveVideo", "inputs": {"images": ["1", 0], "fps": 500.0, "format": "mp4",
                                                               "filename_prefix": "Kinema/x"}}}
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(prompt))
    dirs = ["--models-dir", str(kinema_dirs["models"]), "--input-dir", str(kinema_dirs["input"]),
            "--output-dir", str(kinema_dirs["output"]), "--quiet"]
    # kinema serve: /prompt answers ComfyUI's node_errors
    folders = env.Folders.of(kinema_dirs["models"], kinema_dirs["input"], kinema_dirs["output"],
                             kinema_dirs["temp"]).searching(tmp_path / "assets")     # what `kinema run` searches
    executor = Executor(kinema.NODE_CLASS_MAPPINGS, kinema.NODE_DISPLAY_NAME_MAPPINGS, folders=folders)
    status, body = _served(prompt, executor, tmp_path / "user")
    assert status == 400 and sorted(body["node_errors"]) == ["1", "2"]
    assert [e["type"] for e in body["node_errors"]["1"]["errors"]] == ["custom_validation_failed"]
    assert [e["type"] for e in body["node_errors"]["2"]["errors"]] == ["value_bigger_than_max"]
    lines = format_node_errors(body["node_errors"])
    assert lines[0].startswith("node 1 (KinemaLoadImage), input 'image': Custom validation failed for node: ")
    assert "missing.png" in lines[0] and "Fix" in lines[0]
    assert lines[1] == "node 2 (KinemaSaveVideo), input 'fps': Value 500.0 bigger than max of 240.0"
    with pytest.raises(PromptInvalid) as err:                       # the executor: the same node_errors
        executor.run(prompt)
    assert json.loads(json.dumps(err.value.node_errors)) == body["node_errors"]
    # kinema run and kinema batch print those lines
    assert cli.main(["run", str(path), *dirs]) == cli.EXIT_INVALID
    assert _printed(capsys.readouterr().err) == lines
    assert cli.main(["batch", str(path), *dirs]) == cli.EXIT_INVALID
    err = capsys.readouterr().err
    assert "job 1" in err and _printed(err) == lines
    assert not list(kinema_dirs["output"].rglob("*.mp4"))


# ---------------------------------------------------------------------------------------------------------------
# Issue 18: values that used to pass or crash validation
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change,kind,input_name,needle", [
    # finding 13: NaN/infinity for a FLOAT passed (NaN compares false with min and max) and turned guidance off
    (lambda p: p["2"]["inputs"].update(strength=float("nan")), "invalid_input_type", "strength", "finite"),
    (lambda p: p["2"]["inputs"].update(strength=float("inf")), "invalid_input_type", "strength", "finite"),
    (lambda p: p["2"]["inputs"].update(strength="nan"), "invalid_input_type", "strength", "finite"),
    # finding 12: a literal on a link-typed input passed and failed at run time naming no input
    (lambda p: p["2"]["inputs"].update(image="x"), "bad_linked_input", "image", "IMAGE from a linked node"),
    (lambda p: p["2"]["inputs"].update(image={"__value__": [1, 2]}), "bad_linked_input", "image", "linked node"),
    # finding 11: control characters in one-line text (a file name prefix) wrote a hidden file
    (lambda p: p["3"]["inputs"].update(filename_prefix="a\x00b"), "invalid_input_type", "filename_prefix",
     "control character '\\x00'"),
    (lambda p: p["3"]["inputs"].update(filename_prefix="a\nb"), "invalid_input_type", "filename_prefix", "'\\n'"),
])
def test_refused_values(info, small_classes, good_prompt, change, kind, input_name, needle):
    prompt = good_prompt()
    change(prompt)
    error, node_errors, outputs = validate(prompt, info, small_classes)
    node_id = "3" if input_name == "filename_prefix" else "2"
    found = only_error(node_errors, node_id)
    assert found["type"] == kind and found["extra_info"]["input_name"] == input_name and outputs == []
    assert needle in found["message"] + found["details"], found
    json.dumps(found, allow_nan=False)                        # nothing to echo that is not JSON


def test_multiline_text_keeps_newlines_and_tabs(info, small_classes):
    prompt = {"1": {"class_type": "Text", "inputs": {"text": "a\n\tb\r\n", "count": 1}},
              "2": {"class_type": "Save", "inputs": {"images": ["9", 0], "filename_prefix": "x",
                                                     "anything": ["1", 0]}}}
    def text_errors():
        _, node_errors, _ = validate(prompt, info, small_classes)
        return [e for e in node_errors["1"]["errors"] if e["extra_info"]["input_name"] == "text"]
    assert text_errors() == []                                  # (1 misses its linked `n`: not what this checks)
    prompt["1"]["inputs"]["text"] = "a\x1b[31mred"
    assert "control character '\\x1b'" in text_errors()[0]["details"]


@pytest.mark.parametrize("node,details", [
    ({"class_type": ["Loader"], "inputs": {}}, "class_type is ['Loader']"),        # was TypeError: unhashable
    ({"class_type": {"a": 1}, "inputs": {}}, "class_type is {'a': 1}"),
    ({"class_type": "Loader", "inputs": [1, 2]}, "inputs is [1, 2]"),              # was AttributeError
])
def test_malformed_nodes_are_invalid_prompts_not_crashes(info, small_classes, good_prompt, node, details):
    prompt = good_prompt()
    prompt["1"] = node
    error, node_errors, outputs = validate(prompt, info, small_classes)
    assert error["type"] == "invalid_prompt" and details in error["details"] and outputs == []


def test_long_chains_validate_without_recursion(info, small_classes):
    """Finding 7/8: a 3000-node chain hit RecursionError in the recursive walk; the walk is iterative now."""
    prompt = {"1": {"class_type": "Loader", "inputs": {"name": "a.safetensors"}}}
    for i in range(2, 3002):
        prompt[str(i)] = {"class_type": "Filter", "inputs": {"image": [str(i - 1), 1 if i == 2 else 0],
                                                             "strength": 1.0}}
    prompt["3002"] = {"class_type": "Save", "inputs": {"images": ["3001", 0], "filename_prefix": "x"}}
    assert validate(prompt, info, small_classes) == (None, {}, ["3002"])
    prompt["1500"]["inputs"]["strength"] = 5.0                  # one bad node deep in the chain
    _, node_errors, outputs = validate(prompt, info, small_classes)
    assert list(node_errors) == ["1500"] and node_errors["1500"]["dependent_outputs"] == ["3002"] and outputs == []
    prompt["1500"]["inputs"]["strength"] = 1.0
    prompt["2"]["inputs"]["image"] = ["3000", 0]                # a cycle through 2999 nodes
    _, node_errors, _ = validate(prompt, info, small_classes)
    assert [e["type"] for entry in node_errors.values() for e in entry["errors"]] == ["dependency_cycle"]
