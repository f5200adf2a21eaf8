"""host/prompt.py: the one link predicate (string and integer node ids), walks along links, execution order,
--set overrides; and integer-id links running through the executor and `kinema run` exactly as string ids do."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kinema.host.prompt import (GraphError, ancestors, apply_overrides, execution_order, is_link, link_source,
                                literal_inputs)
from kinema.host.ui_to_api import ui_to_api

DATA = Path(__file__).resolve().parents[1] / "data" / "conversion"


def int_ids(prompt: dict) -> dict:
    """The same prompt with every link written [int id, slot], as some API clients send it."""
    return {nid: {**node, "inputs": {k: [int(v[0]), v[1]] if is_link(v) else v for k, v in node["inputs"].items()}}
            for nid, node in json.loads(json.dumps(prompt)).items()}


# ---------------------------------------------------------------------------------------------------------------
# Links
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,link", [
    (["1", 0], True), ([1, 0], True), (["10:3", 2], True),
    ([True, 0], False), (["1", True], False), (["1", 0.0], False), ([1.5, 0], False), (["1"], False),
    (["1", 0, 2], False), (("1", 0), False), ("1", False), ({"__value__": ["1", 0]}, False), ([None, 0], False),
])
def test_is_link(value, link):
    assert is_link(value) is link


def test_link_source_is_the_prompt_key():
    assert link_source([1, 0]) == link_source(["1", 0]) == "1"
    node = {"inputs": {"a": [1, 0], "b": 5, "c": ["x", 1], "d": {"__value__": [1, 2]}}}
    assert literal_inputs(node) == {"b": 5, "d": {"__value__": [1, 2]}}


def test_ancestors_follow_int_and_str_links(good_prompt):
    prompt = good_prompt()
    prompt["4"] = {"class_type": "Filter", "inputs": {"image": [1, 1], "strength": 1.0}}
    prompt["5"] = {"class_type": "Save", "inputs": {"images": [4, 0]}}
    assert ancestors(prompt, ["3"]) == {"1", "2", "3"}
    assert ancestors(prompt, ["5"]) == {"1", "4", "5"}
    assert ancestors(int_ids(prompt), [3, "9"]) == {"1", "2", "3"}        # ids not in the prompt are left out


# ---------------------------------------------------------------------------------------------------------------
# Execution order
# ---------------------------------------------------------------------------------------------------------------
def test_execution_order(info, good_prompt):
    prompt = good_prompt()
    prompt["5"] = {"class_type": "Filter", "inputs": {"image": ["1", 1], "strength": 0.5}}   # feeds nothing
    prompt["3"]["inputs"]["latent"] = ["4", 0]
    prompt["4"] = {"class_type": "Sampler", "inputs": {"model": ["1", 0], "seed": 1, "steps": 2, "cfg": 1.0,
                                                       "sampler": "euler", "image": ["2", 0]}}
    order = execution_order(prompt, info)
    assert sorted(order) == ["1", "2", "3", "4"]                         # 5 is not needed by any output
    assert order.index("1") < order.index("2") < order.index("4") < order.index("3")
    assert execution_order(prompt, info, targets=["5"]) == ["1", "5"]
    assert execution_order(int_ids(prompt), info) == order               # [1, 0] is the link ["1", 0]
    assert execution_order(int_ids(prompt), info, targets=[5]) == ["1", "5"]


def test_execution_order_of_converted_case():
    real_info = json.loads((DATA / "object_info.json").read_text())
    ui = json.loads((DATA / "cases" / "default.ui.json").read_text())
    prompt = ui_to_api(ui, real_info)
    order = execution_order(prompt, real_info)
    assert order[-1] == "9" and len(order) == len(prompt)
    for position, node_id in enumerate(order):
        for value in prompt[node_id]["inputs"].values():
            if isinstance(value, list):
                assert order.index(value[0]) < position


def test_execution_order_cycle(info, good_prompt):
    prompt = good_prompt()
    prompt["2"]["inputs"]["image"] = ["4", 0]
    prompt["4"] = {"class_type": "Filter", "inputs": {"image": ["2", 0], "strength": 1.0}}
    with pytest.raises(GraphError, match="cycle") as err:
        execution_order(prompt, info)
    assert err.value.node_id in {"2", "4"}
    with pytest.raises(GraphError, match="cycle"):
        execution_order(int_ids(prompt), info)


def test_execution_order_errors(info, good_prompt):
    prompt = good_prompt()
    prompt["2"]["inputs"]["image"] = ["9", 0]
    with pytest.raises(GraphError, match=r"node 2 \(Filter\), input 'image': linked node '9' does not exist"):
        execution_order(prompt, info)
    with pytest.raises(GraphError, match=r"node 2 \(Filter\), input 'image': linked node '9' does not exist"):
        execution_order(int_ids(prompt), info)
    with pytest.raises(GraphError, match="target node 7"):
        execution_order(good_prompt(), info, targets=["7"])


# ---------------------------------------------------------------------------------------------------------------
# --set overrides
# ---------------------------------------------------------------------------------------------------------------
def test_apply_overrides_types_values_by_the_definition(info):
    prompt = {"4": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "seed": 1, "steps": 2, "cfg": 1.0,
                                                        "sampler": "euler"}}}
    apply_overrides(prompt, ["4.seed=7", "4.cfg=2.5", "4.sampler=ddim"], info)
    assert prompt["4"]["inputs"] == {"model": ["1", 0], "seed": 7, "steps": 2, "cfg": 2.5, "sampler": "ddim"}
    for bad, needles in [("4seed=1", ["ID.INPUT=VALUE"]), ("9.seed=1", ["no node 9", "4"]),
                         ("4.sed=1", ["no input `sed`", "seed"]), ("4.steps=x", ["takes INT", "'x'"])]:
        with pytest.raises(GraphError) as err:
            apply_overrides(prompt, [bad], info)
        for needle in needles:
            assert needle in str(err.value), (bad, str(err.value))


# ---------------------------------------------------------------------------------------------------------------
# Integer ids end to end: validation, order, signatures (caching) and the node's arguments
# ---------------------------------------------------------------------------------------------------------------
def _t2v() -> dict:
    """Wan text to video on the tiny fixture, saved as a GIF (PIL's encoder: the same frames give the same file)."""
    from tools import make_workflows
    prompt = json.loads(json.dumps(make_workflows.WORKFLOWS["text_to_video_wan"][0]))
    prompt["4"]["inputs"].update(length=5, width=32, height=32, steps=2)
    prompt["6"]["inputs"]["format"] = "gif"
    return prompt


def _frames(folder: Path, outputs: dict):
    from kinema.models.video_io import read_video
    (entry,) = outputs["6"]["images"]
    return read_video(folder / entry["subfolder"] / entry["filename"])[0]


def test_int_id_links_run_through_the_executor_like_string_ids(kinema_dirs, one_thread):
    import kinema
    from kinema.host.executor import Executor
    assert isinstance(int_ids(_t2v())["4"]["inputs"]["model"][0], int)
    ex = Executor(kinema.NODE_CLASS_MAPPINGS, kinema.NODE_DISPLAY_NAME_MAPPINGS)
    first = ex.run(_t2v())
    again = ex.run(int_ids(_t2v()))                 # same links, same signatures: everything is cached
    assert again.executed == [] and sorted(again.cached) == sorted(first.executed) == ["1", "2", "3", "4", "5", "6"]
    fresh = Executor(kinema.NODE_CLASS_MAPPINGS, kinema.NODE_DISPLAY_NAME_MAPPINGS).run(int_ids(_t2v()))
    assert sorted(fresh.executed) == sorted(first.executed)
    a, b = _frames(kinema_dirs["output"], first.outputs), _frames(kinema_dirs["output"], fresh.outputs)
    assert a.shape == (5, 32, 32, 3) and bool((a == b).all())


def test_int_id_links_run_through_kinema_run_like_string_ids(kinema_dirs, one_thread, tmp_path, capsys):
    from kinema.host import cli
    results = {}
    for kind, prompt in (("str", _t2v()), ("int", int_ids(_t2v()))):
        path, out = tmp_path / f"{kind}.json", tmp_path / f"out_{kind}"
        path.write_text(json.dumps(prompt))
        rc = cli.main(["run", str(path), "--models-dir", str(kinema_dirs["models"]), "--output-dir", str(out),
                       "--input-dir", str(kinema_dirs["input"]), "--quiet"])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        outputs = json.loads(captured.out.strip().splitlines()[-1])
        results[kind] = outputs, _frames(out, outputs)
    assert results["int"][0] == results["str"][0]
    assert results["int"][1].shape == (5, 32, 32, 3) and bool((results["int"][1] == results["str"][1]).all())
