"""host/ui_to_api.py and host/object_info.py: node definitions, and UI->API conversion against the real frontend
(61 workflows as frontend 1.58.1 sent them to /prompt), load_workflow."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from kinema.host.object_info import node_definition, object_info
from kinema.host.prompt import GraphError, is_api_format
from kinema.host.ui_to_api import load_workflow, ui_to_api

DATA = Path(__file__).resolve().parents[1] / "data" / "conversion"
CASES = sorted(p.name[: -len(".ui.json")] for p in (DATA / "cases").glob("*.ui.json"))


@pytest.fixture(scope="module")
def real_info() -> dict:
    return json.loads((DATA / "object_info.json").read_text())


# ---------------------------------------------------------------------------------------------------------------
# Real workflows: what frontend 1.58.1 sent to /prompt
# ---------------------------------------------------------------------------------------------------------------
def test_all_cases_present():
    assert len(CASES) == 61


@pytest.mark.parametrize("case", CASES)
def test_ui_to_api_matches_frontend(case, real_info):
    ui = json.loads((DATA / "cases" / f"{case}.ui.json").read_text())
    expected = json.loads((DATA / "cases" / f"{case}.api.json").read_text())
    got = ui_to_api(ui, real_info)

    assert set(got) == set(expected)
    for node_id, want in expected.items():
        assert got[node_id]["class_type"] == want["class_type"], node_id
        assert got[node_id]["inputs"] == want["inputs"], node_id
        meta, want_meta = dict(got[node_id]["_meta"]), dict(want["_meta"])
        title, want_title = meta.pop("title"), want_meta.pop("title")
        assert meta == want_meta, node_id                   # cnr_id / ver
        # A default title is the display name; when the server sends none (null, for its V3 nodes) the editor
        # shows its own translated name, which object_info cannot give. Every other title must match.
        if real_info[want["class_type"]].get("display_name") is not None:
            assert title == want_title, node_id


def test_converted_ids_are_strings_and_links_are_pairs(real_info):
    ui = json.loads((DATA / "cases" / "video_wan2_2_14B_s2v.ui.json").read_text())
    prompt = ui_to_api(ui, real_info)
    assert "85:183" in prompt                                # subgraph copies get fresh inner ids, as in the editor
    for node in prompt.values():
        for value in node["inputs"].values():
            if isinstance(value, list):
                assert isinstance(value[0], str) and isinstance(value[1], int)


# ---------------------------------------------------------------------------------------------------------------
# Node definitions
# ---------------------------------------------------------------------------------------------------------------
class SaveImageLike:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE", {"tooltip": "The images to save."}),
                             "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip":
                                                 "The prefix for the file to save. This may include formatting "
                                                 "information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% "
                                                 "to include values from nodes."})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."


class CheckpointLike:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": ([], {"tooltip": "The name of the checkpoint (model) to load."})}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = ("The model used for denoising latents.",
                       "The CLIP model used for encoding text prompts.",
                       "The VAE model used for encoding and decoding images to and from latent space.")
    FUNCTION = "load_checkpoint"
    CATEGORY = "loaders"
    DESCRIPTION = "Loads a diffusion model checkpoint, diffusion models are used to denoise latents."


def test_node_definition_matches_server_output(real_info):
    assert node_definition("SaveImage", SaveImageLike, "Save Image", python_module="nodes") \
        == real_info["SaveImage"]
    assert node_definition("CheckpointLoaderSimple", CheckpointLike, "Load Checkpoint",
                           python_module="nodes") == real_info["CheckpointLoaderSimple"]


def test_node_definition_defaults_and_flags():
    class Old:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"x": ("INT", {"default": 1})}, "optional": {"y": ("FLOAT",)}}
        RETURN_TYPES = ("INT", "FLOAT")
        RETURN_NAMES = ("x", "y")
        OUTPUT_IS_LIST = (False, True)
        DEPRECATED = True
        EXPERIMENTAL = True

    info = object_info({"KinemaOld": Old}, {})["KinemaOld"]
    assert info["display_name"] == "KinemaOld" and info["category"] == "sd"
    assert info["python_module"] == "custom_nodes.kinema" and info["description"] == ""
    assert info["input"] == {"required": {"x": ["INT", {"default": 1}]}, "optional": {"y": ["FLOAT"]}}
    assert info["input_order"] == {"required": ["x"], "optional": ["y"]}
    assert info["output_name"] == ["x", "y"] and info["output_is_list"] == [False, True]
    assert info["deprecated"] is True and info["experimental"] is True and info["output_node"] is False
    assert "output_tooltips" not in info
    json.dumps(info)                                         # JSON-ready


# ---------------------------------------------------------------------------------------------------------------
# Small hand-built graphs (node classes and `info` in conftest.py)
# ---------------------------------------------------------------------------------------------------------------
def node(node_id, kind, inputs=(), outputs=(), values=None, mode=0, **extra):
    """A UI node; inputs as (name, type, link) or (name, type, link, widget name)."""
    return {"id": node_id, "type": kind, "mode": mode,
            "inputs": [{"name": i[0], "type": i[1], "link": i[2], **({"widget": {"name": i[3]}} if len(i) > 3 else {})}
                       for i in inputs],
            "outputs": [{"name": o[0], "type": o[1], "links": list(o[2])} for o in outputs],
            "widgets_values": values, **extra}


def workflow(nodes, links, **extra):
    return {"nodes": nodes, "links": links, "groups": [], "extra": {}, "version": 0.4, **extra}


def basic(mode_filter=0):
    """Loader(1) -> Filter(2) -> Save(3); Loader MODEL -> Sampler(4) -> Save.latent."""
    return workflow([
        node(1, "Loader", outputs=[("MODEL", "MODEL", [3]), ("IMAGE", "IMAGE", [1])], values=["b.safetensors"]),
        node(2, "Filter", inputs=[("image", "IMAGE", 1)], outputs=[("IMAGE", "IMAGE", [2])], values=[0.5],
             mode=mode_filter),
        node(3, "Save", inputs=[("images", "IMAGE", 2), ("latent", "LATENT", 4)], values=["out"]),
        node(4, "Sampler", inputs=[("model", "MODEL", 3)], outputs=[("LATENT", "LATENT", [4])],
             values=[7, "randomize", 30, 6.5, "ddim"]),
        node(5, "Note", values=["a note"]),
    ], [[1, 1, 1, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 1, 0, 4, 0, "MODEL"], [4, 4, 0, 3, 1, "LATENT"]])


def test_basic_conversion(info):
    prompt = ui_to_api(basic(), info)
    assert set(prompt) == {"1", "2", "3", "4"}                     # the Note is dropped
    assert prompt["1"] == {"class_type": "Loader", "inputs": {"name": "b.safetensors"},
                           "_meta": {"title": "Test Loader"}}
    assert prompt["2"]["inputs"] == {"strength": 0.5, "image": ["1", 1]}
    # seed's control_after_generate value ("randomize") is skipped positionally
    assert prompt["4"]["inputs"] == {"seed": 7, "steps": 30, "cfg": 6.5, "sampler": "ddim", "model": ["1", 0]}
    assert prompt["3"]["inputs"] == {"filename_prefix": "out", "images": ["2", 0], "latent": ["4", 0]}


def test_links_as_dicts(info):
    wf = basic()
    wf["links"] = [dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), link))
                   for link in wf["links"]]
    assert ui_to_api(wf, info) == ui_to_api(basic(), info)


def test_missing_widget_values_take_defaults_and_named_values_win(info):
    wf = basic()
    wf["nodes"][2]["widgets_values"] = None
    wf["nodes"][3]["widgets_values_named"] = {"seed": 11, "steps": 12, "cfg": 1.5, "sampler": "euler"}
    prompt = ui_to_api(wf, info)
    assert prompt["3"]["inputs"]["filename_prefix"] == "Kinema"
    assert {k: prompt["4"]["inputs"][k] for k in ("seed", "steps", "cfg", "sampler")} == \
        {"seed": 11, "steps": 12, "cfg": 1.5, "sampler": "euler"}


def test_control_after_generate_false_and_force_input(info):
    wf = workflow([node(1, "Text", inputs=[("n", "INT", None)], values=["hi", 5, "ignored"])], [])
    # count has control_after_generate False: no extra entry; n is forceInput: not a widget
    assert ui_to_api(wf, info)["1"]["inputs"] == {"text": "hi", "count": 5}


def test_dynamic_prompts(info):
    wf = workflow([node(1, "Text", values=["a {red|blue} cat // drop this\nsits", 1])], [])
    text = ui_to_api(wf, info, rng=random.Random(3))["1"]["inputs"]["text"]
    assert text in ("a red cat \nsits", "a blue cat \nsits")


def test_list_widget_value_is_boxed(info):
    wf = workflow([node(1, "Text", values=[["a", "b"], 1])], [])
    assert ui_to_api(wf, info)["1"]["inputs"]["text"] == {"__value__": ["a", "b"]}


def test_reroute_collapses_to_source(info):
    wf = basic()
    wf["nodes"].append(node(9, "Reroute", inputs=[("", "*", 1)], outputs=[("", "IMAGE", [5])]))
    wf["nodes"][1]["inputs"][0]["link"] = 5
    wf["links"][0] = [1, 1, 1, 9, 0, "IMAGE"]
    wf["links"].append([5, 9, 0, 2, 0, "IMAGE"])
    prompt = ui_to_api(wf, info)
    assert "9" not in prompt and prompt["2"]["inputs"]["image"] == ["1", 1]


def test_bypassed_node_passes_its_matching_input(info):
    prompt = ui_to_api(basic(mode_filter=4), info)
    assert "2" not in prompt
    assert prompt["3"]["inputs"]["images"] == ["1", 1]


def test_bypass_prefers_same_slot_then_exact_type(small_classes):
    class Two:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"a": ("LATENT",), "b": ("IMAGE",), "c": ("IMAGE",)}}
        RETURN_TYPES = ("IMAGE", "IMAGE", "IMAGE")

    class Src:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}
        RETURN_TYPES = ("LATENT", "IMAGE", "IMAGE")

    info = object_info({"Two": Two, "Src": Src, "Save": small_classes["Save"], "Filter": small_classes["Filter"]})
    wf = workflow([
        node(1, "Src", outputs=[("L", "LATENT", [1]), ("I1", "IMAGE", [2]), ("I2", "IMAGE", [3])]),
        node(2, "Two", inputs=[("a", "LATENT", 1), ("b", "IMAGE", 2), ("c", "IMAGE", 3)],
             outputs=[("o0", "IMAGE", [4]), ("o1", "IMAGE", []), ("o2", "IMAGE", [5])], mode=4),
        node(3, "Filter", inputs=[("image", "IMAGE", 4)], values=[1.0]),       # output 0: slot 0 is LATENT
        node(4, "Save", inputs=[("images", "IMAGE", 5)], values=["x"]),        # output 2: same slot (c)
    ], [[1, 1, 0, 2, 0, "LATENT"], [2, 1, 1, 2, 1, "IMAGE"], [3, 1, 2, 2, 2, "IMAGE"],
        [4, 2, 0, 3, 0, "IMAGE"], [5, 2, 2, 4, 0, "IMAGE"]])
    prompt = ui_to_api(wf, info)
    assert prompt["3"]["inputs"]["image"] == ["1", 1]      # first exact IMAGE input (b)
    assert prompt["4"]["inputs"]["images"] == ["1", 2]     # same index as the output (c)


def test_bypassed_unknown_node_is_fine(info):
    wf = basic()
    wf["nodes"][1]["type"] = "SomePackFilter"
    wf["nodes"][1]["mode"] = 4
    assert ui_to_api(wf, info)["3"]["inputs"]["images"] == ["1", 1]


def test_muted_node_dropped_with_inputs_pointing_at_it(info):
    prompt = ui_to_api(basic(mode_filter=2), info)
    assert "2" not in prompt
    assert "images" not in prompt["3"]["inputs"] and prompt["3"]["inputs"]["latent"] == ["4", 0]


def test_widget_input_linked_from_muted_node_keeps_its_value(info):
    wf = basic()
    wf["nodes"].append(node(6, "Text", outputs=[("STRING", "STRING", [6])], values=["x", 1], mode=2))
    wf["nodes"][2]["inputs"].append({"name": "filename_prefix", "type": "STRING", "link": 6,
                                     "widget": {"name": "filename_prefix"}})
    wf["links"].append([6, 6, 0, 3, 2, "STRING"])
    assert ui_to_api(wf, info)["3"]["inputs"]["filename_prefix"] == "out"


def test_linked_widget_input_takes_the_link(info):
    wf = basic()
    wf["nodes"].append(node(6, "Text", outputs=[("STRING", "STRING", [6])], values=["x", 1]))
    wf["nodes"][2]["inputs"].append({"name": "filename_prefix", "type": "STRING", "link": 6,
                                     "widget": {"name": "filename_prefix"}})
    wf["links"].append([6, 6, 0, 3, 2, "STRING"])
    assert ui_to_api(wf, info)["3"]["inputs"]["filename_prefix"] == ["6", 0]


def test_primitive_node_value_is_inlined(info):
    wf = basic()
    wf["nodes"].append(node(7, "PrimitiveNode", outputs=[("INT", "INT", [7])], values=[42, "fixed"]))
    wf["nodes"][3]["inputs"].append({"name": "steps", "type": "INT", "link": 7, "widget": {"name": "steps"}})
    wf["links"].append([7, 7, 0, 4, 1, "INT"])
    prompt = ui_to_api(wf, info)
    assert "7" not in prompt and prompt["4"]["inputs"]["steps"] == 42


def subgraph_workflow(outer_mode=0):
    """Loader(1) -> [subgraph 10: Filter(1) with its strength promoted] -> Save(3). Inner id 1 clashes."""
    definition = {
        "id": "sg-uuid", "name": "Soften", "inputNode": {"id": -10}, "outputNode": {"id": -20},
        "inputs": [{"name": "image", "type": "IMAGE", "linkIds": [21]},
                   {"name": "strength", "type": "FLOAT", "linkIds": [22]}],
        "outputs": [{"name": "IMAGE", "type": "IMAGE", "linkIds": [23]}],
        "nodes": [node(1, "Filter", inputs=[("image", "IMAGE", 21), ("strength", "FLOAT", 22, "strength")],
                       outputs=[("IMAGE", "IMAGE", [23])], values=[0.25], title="Inner")],
        "links": [{"id": 21, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "IMAGE"},
                  {"id": 22, "origin_id": -10, "origin_slot": 1, "target_id": 1, "target_slot": 1, "type": "FLOAT"},
                  {"id": 23, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"}],
    }
    return workflow([
        node(1, "Loader", outputs=[("MODEL", "MODEL", []), ("IMAGE", "IMAGE", [1])], values=["a.safetensors"]),
        node(10, "sg-uuid", inputs=[("image", "IMAGE", 1)], outputs=[("IMAGE", "IMAGE", [2])], values=[1.75],
             mode=outer_mode),
        node(3, "Save", inputs=[("images", "IMAGE", 2)], values=["sg"]),
    ], [[1, 1, 1, 10, 0, "IMAGE"], [2, 10, 0, 3, 0, "IMAGE"]], last_node_id=10,
        definitions={"subgraphs": [definition]})


def test_subgraph_is_flattened(info):
    prompt = ui_to_api(subgraph_workflow(), info)
    # inner id 1 is taken at the root: the editor renumbers it to the next free id (11)
    assert set(prompt) == {"1", "10:11", "3"}
    assert prompt["10:11"] == {"class_type": "Filter", "inputs": {"strength": 1.75, "image": ["1", 1]},
                               "_meta": {"title": "Inner"}}
    assert prompt["3"]["inputs"]["images"] == ["10:11", 0]


def test_bypassed_subgraph_passes_through(info):
    prompt = ui_to_api(subgraph_workflow(outer_mode=4), info)
    assert set(prompt) == {"1", "3"} and prompt["3"]["inputs"]["images"] == ["1", 1]


def test_unknown_node_type(info):
    wf = basic()
    wf["nodes"].append(node(12, "FooNode", values=[]))
    with pytest.raises(GraphError) as err:
        ui_to_api(wf, info)
    assert str(err.value) == ("node 12 (FooNode): unknown node type 'FooNode'. "
                              "Fix: install the pack that provides it or remove the node.")
    assert (err.value.node_id, err.value.class_type) == ("12", "FooNode")


def test_not_a_ui_workflow(info):
    with pytest.raises(GraphError, match="nodes"):
        ui_to_api({"hello": 1}, info)


def test_reroute_loop_is_an_error(info):
    wf = workflow([
        node(1, "Reroute", inputs=[("", "*", 2)], outputs=[("", "*", [1])]),
        node(2, "Reroute", inputs=[("", "*", 1)], outputs=[("", "*", [2, 3])]),
        node(3, "Save", inputs=[("images", "IMAGE", 3)], values=["x"]),
    ], [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 1, 0, "*"], [3, 2, 0, 3, 0, "IMAGE"]])
    with pytest.raises(GraphError, match="loop"):
        ui_to_api(wf, info)


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------
def test_is_api_format(info):
    prompt = ui_to_api(basic(), info)
    assert is_api_format(prompt)
    assert not is_api_format(basic()) and not is_api_format({}) and not is_api_format([])


def test_load_workflow(tmp_path, info):
    ui_file, api_file, body_file = tmp_path / "ui.json", tmp_path / "api.json", tmp_path / "body.json"
    ui_file.write_text(json.dumps(basic()))
    prompt, ui = load_workflow(ui_file, info)
    assert ui == basic() and prompt == ui_to_api(basic(), info)
    api_file.write_text(json.dumps(prompt))
    assert load_workflow(api_file) == (prompt, None)
    body_file.write_text(json.dumps({"prompt": prompt, "extra_data": {"extra_pnginfo": {"workflow": basic()}}}))
    assert load_workflow(body_file) == (prompt, basic())


def test_load_workflow_errors(tmp_path, info):
    broken = tmp_path / "broken.json"
    broken.write_text('{"nodes": [')
    with pytest.raises(GraphError, match="broken.json: not valid JSON"):
        load_workflow(broken, info)
    other = tmp_path / "other.json"
    other.write_text('{"answer": 42}')
    with pytest.raises(GraphError, match="other.json: not a workflow"):
        load_workflow(other, info)
    with pytest.raises(GraphError, match="no such file"):
        load_workflow(tmp_path / "missing.json", info)
    ui_file = tmp_path / "ui.json"
    ui_file.write_text(json.dumps(basic()))
    with pytest.raises(GraphError, match="node definitions"):
        load_workflow(ui_file)
    wf = basic()
    wf["nodes"].append(node(12, "FooNode"))
    ui_file.write_text(json.dumps(wf))
    with pytest.raises(GraphError, match=r"ui.json: node 12 \(FooNode\)") as err:
        load_workflow(ui_file, info)
    assert err.value.node_id == "12"


def test_saved_loader_without_the_parallel_widgets_keeps_one_device():
    """Workflows saved before Load Video Model gained `parallel` and `gpus` (5 widget values, not 7) convert with
    the defaults, as the frontend fills missing trailing widgets: parallel none, gpus 0."""
    import kinema
    info = object_info(kinema.NODE_CLASS_MAPPINGS, kinema.NODE_DISPLAY_NAME_MAPPINGS)
    ui = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "text_to_video_wan.json").read_text())
    loader = next(n for n in ui["nodes"] if n["type"] == "KinemaLoadVideoModel")
    loader["widgets_values"] = loader["widgets_values"][:5]
    inputs = ui_to_api(ui, info)[str(loader["id"])]["inputs"]
    assert inputs == {"model": "fixture-wan-t2v", "family": "auto", "device": "auto", "dtype": "auto",
                      "weights": "none", "parallel": "none", "gpus": 0}


def test_unknown_version_and_odd_widgets_values_are_warned_naming_the_node(info, caplog):
    """Issue 18 ("Also"): both were converted on a guess without a word."""
    import logging
    caplog.set_level(logging.WARNING, logger="kinema.workflow")
    assert ui_to_api(basic(), info) and not caplog.records           # the usual file: nothing to say
    wf = basic()
    wf["version"] = 7.3
    wf["nodes"][1]["widgets_values"] = "0.5"                          # Filter (node 2): not a list
    prompt = ui_to_api(wf, info)
    assert prompt["2"]["inputs"]["strength"] == 1.0                  # its widget took the default
    said = [r.getMessage() for r in caplog.records]
    assert any("version '7.3'" in m and "0.4" in m for m in said)
    assert any(m.startswith("node 2 (Filter): widgets_values is a str, not a list") for m in said)


def test_link_slots_must_be_numbers(info):
    wf = basic()
    wf["links"][0][2] = "zero"
    with pytest.raises(GraphError, match="link 1: origin slot 'zero' is not a slot number"):
        ui_to_api(wf, info)
    wf["links"][0][2] = "1"                                           # digits as text: what some tools write
    assert ui_to_api(wf, info)["2"]["inputs"]["image"] == ["1", 1]
