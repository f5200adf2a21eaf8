"""Contract tests over every node: ids, categories, tooltips, types, function signatures, display names."""
from __future__ import annotations

import inspect
import re

import pytest

import kinema

NODES = sorted(kinema.NODE_CLASS_MAPPINGS.items())
CATEGORIES = {f"Kinema/{c}" for c in
              ("loaders", "conditioning", "sampling", "latent", "decode", "audio", "portrait", "edit", "io")}
CORE_TYPES = {"IMAGE", "MASK", "LATENT", "AUDIO", "INT", "FLOAT", "STRING", "BOOLEAN", "VIDEO"}
FILE_COMBOS = {"model", "image", "audio", "video", "file", "motion_adapter", "latents"}
# The frontend's audio player: 1.58.1 draws it for custom nodes only when they declare this exact input (by name:
# uploadAudio.ts looks the widget up as "audioUI"), optional because it is never serialised.
FRONTEND_WIDGETS = {"audioUI": "AUDIO_UI"}


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
