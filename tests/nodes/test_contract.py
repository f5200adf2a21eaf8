"""Contract tests over every node: ids, categories, tooltips, types, function signatures, display names."""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import kinema
from kinema.nodes import widgets

NODES = sorted(kinema.NODE_CLASS_MAPPINGS.items())
CATEGORIES = {f"Kinema/{c}" for c in
              ("loaders", "conditioning", "sampling", "latent", "decode", "audio", "portrait", "edit", "io")}
CORE_TYPES = {"IMAGE", "MASK", "LATENT", "AUDIO", "INT", "FLOAT", "STRING", "BOOLEAN", "VIDEO"}
FILE_COMBOS = {"model", "image", "audio", "video", "file", "motion_adapter", "latents", "lora",
               "denoiser", "denoiser_2", "text_encoder", "vae", "clip_vision", "checkpoint", "motion_module"}
# The frontend's audio player: 1.58.1 draws it for custom nodes only when they declare this exact input (by name:
# uploadAudio.ts looks the widget up as "audioUI"), optional because it is never serialised.
FRONTEND_WIDGETS = {"audioUI": "AUDIO_UI"}
# each category's nodes live in one file (DESIGN.md's nodes/ layout)
CATEGORY_FILES = {"Kinema/loaders": "loaders", "Kinema/conditioning": "conditioning", "Kinema/sampling": "sampling",
                  "Kinema/latent": "decode", "Kinema/decode": "decode", "Kinema/io": "media", "Kinema/audio": "audio",
                  "Kinema/portrait": "portrait", "Kinema/edit": "edit"}
MAX_TEXT = 300          # characters of a DESCRIPTION or a tooltip: longer ones go unread in the editor
NODES_DIR = Path(kinema.__file__).resolve().parent / "nodes"


def _inputs(cls):
    spec = cls.INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def test_there_are_nodes_and_mappings_agree():
    assert len(NODES) >= 8
    assert set(kinema.NODE_CLASS_MAPPINGS) == set(kinema.NODE_DISPLAY_NAME_MAPPINGS)


@pytest.mark.parametrize("node_id,cls", NODES)
def test_node_follows_house_rules(node_id, cls):
    assert re.fullmatch(r"Kinema(?:[A-Z][a-z0-9]*)+", node_id), node_id
    assert cls.CATEGORY in CATEGORIES, cls.CATEGORY
    assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 20
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    assert getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES).__len__() == len(cls.RETURN_TYPES)
    for name, spec in _inputs(cls).items():
        kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
        assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
        if name in FRONTEND_WIDGETS:
            assert kind == FRONTEND_WIDGETS[name] and name in cls.INPUT_TYPES().get("optional", {}), (node_id, name)
            continue
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
        if isinstance(kind, str):
            assert kind in CORE_TYPES or kind.startswith("KINEMA_"), f"{node_id}.{name}: type {kind}"
        elif name not in FILE_COMBOS:  # fixed dropdowns come from str Enums: ASCII snake_case forever
            assert all(re.fullmatch(r"[a-z0-9][a-z0-9_]*", str(v)) for v in kind), (node_id, name, kind)
            if "default" in opts:
                assert opts["default"] in kind
        if kind in ("INT", "FLOAT"):
            assert "min" in opts and "max" in opts and "default" in opts, f"{node_id}.{name} needs bounds"
            assert opts["min"] <= opts["default"] <= opts["max"]
    for t in cls.RETURN_TYPES:
        assert t in CORE_TYPES or t.startswith("KINEMA_"), t


@pytest.mark.parametrize("node_id,cls", NODES)
def test_function_parameters_match_input_types(node_id, cls):
    spec = cls.INPUT_TYPES()
    fn = getattr(cls, cls.FUNCTION)
    params = inspect.signature(fn).parameters
    names = [p for p in params if p != "self"]
    required = list(spec.get("required", {}))
    optional = list(spec.get("optional", {})) + list(spec.get("hidden", {}))
    assert set(names) == set(required) | set(optional), (node_id, names)
    for name in optional:
        assert params[name].default is not inspect.Parameter.empty or params[name].kind == params[name].VAR_KEYWORD


def test_display_names_unique_title_case_no_emoji():
    names = list(kinema.NODE_DISPLAY_NAME_MAPPINGS.values())
    assert len(names) == len(set(names))
    for n in names:
        assert n.isascii(), n
        words = re.sub(r"\(.*?\)", "", n).split()
        assert all(w[0].isupper() or w in {"to", "on", "of", "and", "a"} for w in words), n


@pytest.mark.parametrize("node_id,cls", NODES)
def test_node_lives_in_the_file_of_its_category(node_id, cls):
    assert cls.__module__ == f"kinema.nodes.{CATEGORY_FILES[cls.CATEGORY]}", (node_id, cls.CATEGORY, cls.__module__)


@pytest.mark.parametrize("node_id,cls", NODES)
def test_descriptions_and_tooltips_stay_short(node_id, cls):
    texts = {"DESCRIPTION": cls.DESCRIPTION, **{f"output {i}": t for i, t in enumerate(cls.OUTPUT_TOOLTIPS)}}
    texts.update({name: spec[1]["tooltip"] for name, spec in _inputs(cls).items()})
    long = {k: len(v) for k, v in texts.items() if len(v) > MAX_TEXT}
    assert not long, (node_id, long)


def test_shared_widgets_are_defined_once():
    """Every seed widget is widgets.seed(); no node file defines its own MAX_SEED or imports a private name
    from another node file (what several nodes share lives in widgets.py)."""
    seeds = [spec for _, cls in NODES for name, spec in _inputs(cls).items() if name == "seed"]
    assert len(seeds) >= 5 and all(spec == widgets.seed() for spec in seeds)
    for path in sorted(NODES_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                assert "MAX_SEED" not in {getattr(t, "id", None) for t in node.targets} or path.name == \
                    "widgets.py", path
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__future__"]
                assert not private, f"{path.name} imports {private} from .{node.module}"
