"""Node definitions: the /api/object_info entry of a V1 node class, built as ComfyUI's server builds it, and the
readers of an input spec that the converter and the validator share.

`object_info(NODE_CLASS_MAPPINGS, ...)` calls every class's INPUT_TYPES, and Kinema's loaders list the model and
input folders there: build it once per job and pass it along.
"""
from __future__ import annotations

import enum
from typing import Iterable

__all__ = ["DEFAULT_PYTHON_MODULE", "node_definition", "object_info", "jsonable", "ordered_inputs", "spec_type",
           "spec_options", "combo_values", "is_widget"]

DEFAULT_PYTHON_MODULE = "custom_nodes.kinema"
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
# Input types the frontend draws as a widget although they are not core value types (values are serialised).
FRONTEND_WIDGET_TYPES = frozenset({"AUDIO_RECORD"})


def jsonable(value):
    """Tuples -> lists, str Enums -> their values, recursively: what the server's JSON response holds."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def node_definition(class_name: str, cls: type, display_name: str | None = None,
                    python_module: str = DEFAULT_PYTHON_MODULE) -> dict:
    """The /api/object_info entry for one V1 node class, built the way ComfyUI's server builds it.

    Args:
        class_name: the node id (the key in NODE_CLASS_MAPPINGS).
        cls: the node class (INPUT_TYPES, RETURN_TYPES, ...).
        display_name: the title from NODE_DISPLAY_NAME_MAPPINGS; the class name when None.
        python_module: what ComfyUI reports as the class's module (`custom_nodes.<folder>` for a pack).
    Returns:
        A JSON-ready dict: input, input_order, output, output_is_list, output_name, name, display_name, description,
        python_module, category, output_node, and output_tooltips / deprecated / experimental / api_node when set.
    """
    input_types = jsonable(cls.INPUT_TYPES())
    outputs = list(jsonable(cls.RETURN_TYPES))
    info = {
        "input": input_types,
        "input_order": {section: list(specs) for section, specs in input_types.items()},
        "output": outputs,
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(outputs))),
        "output_name": list(getattr(cls, "RETURN_NAMES", outputs)),
        "name": class_name,
        "display_name": display_name or class_name,
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", python_module),
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
    }
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
    if getattr(cls, "DEPRECATED", False):
        info["deprecated"] = True
    if getattr(cls, "EXPERIMENTAL", False):
        info["experimental"] = True
    if hasattr(cls, "API_NODE"):
        info["api_node"] = cls.API_NODE
    return info


def object_info(class_mappings: dict, display_mappings: dict | None = None,
                python_module: str = DEFAULT_PYTHON_MODULE) -> dict:
    """The whole /api/object_info response: {class name: node_definition(...)} for every mapped class."""
    display_mappings = display_mappings or {}
    return {name: node_definition(name, cls, display_mappings.get(name), python_module)
            for name, cls in class_mappings.items()}


# ---- Reading an input spec: (type, {options}) or a bare type -----------------------------------------------------
def ordered_inputs(definition: dict, sections: Iterable[str] = ("required", "optional")):
    """(name, spec, section) for the inputs of `sections`, in input_order."""
    inputs = definition.get("input") or {}
    order = definition.get("input_order") or {}
    for section in sections:
        specs = inputs.get(section) or {}
        names = list(order.get(section) or [])
        names += [n for n in specs if n not in names]
        for name in names:
            if name in specs:
                yield name, specs[name], section


def spec_type(spec):
    return spec[0] if isinstance(spec, (list, tuple)) and spec else spec


def spec_options(spec) -> dict:
    return spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_values(spec) -> list | None:
    kind = spec_type(spec)
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        return list(spec_options(spec).get("options") or [])
    return None


def is_widget(spec) -> bool:
    """Whether the editor draws the input as a widget (a value stored in widgets_values), not a link slot."""
    kind = spec_type(spec)
    if spec_options(spec).get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES or kind in FRONTEND_WIDGET_TYPES
