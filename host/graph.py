"""The runner's graph layer: node definitions, UI->API conversion, validation and execution order.

Plain Python on JSON-shaped dicts; no torch, no ComfyUI. Four parts, top to bottom:

1. `node_definition` / `object_info`: the /api/object_info entry of a V1 node class, as ComfyUI's server builds it.
2. `ui_to_api`: what the editor saves -> what it sends to /prompt (the frontend's `graphToPrompt`, re-implemented).
3. `validate_prompt`: ComfyUI-shaped `error` and `node_errors` for a prompt.
4. `execution_order`: topological order of the nodes the outputs need.
"""
from __future__ import annotations

import enum
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, NamedTuple

__all__ = [
    "GraphError", "node_definition", "object_info", "ui_to_api", "is_api_format", "load_workflow",
    "validate_prompt", "execution_order", "format_node_errors",
]

DEFAULT_PYTHON_MODULE = "custom_nodes.kinema"
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
# Input types the frontend draws as a widget although they are not core value types (values are serialised).
FRONTEND_WIDGET_TYPES = frozenset({"AUDIO_RECORD"})
# Serialised widgets that the frontend's own extensions add to core nodes (the 3D viewer's on SaveGLB, 1.58.1).
FRONTEND_EXTRA_WIDGETS = {"SaveGLB": ("image",)}
VIRTUAL_TYPES = frozenset({"Note", "MarkdownNote", "PrimitiveNode", "Reroute"})   # editor-only nodes
SEED_NAMES = frozenset({"seed", "noise_seed"})      # INT widgets with control_after_generate unless it is false
MEDIA_UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")
MODE_MUTED, MODE_BYPASSED = 2, 4
SUBGRAPH_INPUT_ID, SUBGRAPH_OUTPUT_ID = -10, -20
_MAX_SUBGRAPH_DEPTH = 32


class GraphError(ValueError):
    """A workflow that cannot be converted or ordered; the message names the node, its type, the input and the fix."""

    def __init__(self, message: str, node_id: str | None = None, class_type: str | None = None,
                 input_name: str | None = None):
        super().__init__(message)
        self.node_id = None if node_id is None else str(node_id)
        self.class_type = class_type
        self.input_name = input_name


def _node_error(node_id, class_type, problem: str, fix: str, input_name: str | None = None) -> GraphError:
    where = f"node {node_id} ({class_type})" + (f", input '{input_name}'" if input_name else "")
    return GraphError(f"{where}: {problem}. Fix: {fix}.", node_id, class_type, input_name)


# ---- 1. Node definitions (/api/object_info) -----------------------------------------------------------------------
def _jsonable(value):
    """Tuples -> lists, str Enums -> their values, recursively: what the server's JSON response holds."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
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
    input_types = _jsonable(cls.INPUT_TYPES())
    outputs = list(_jsonable(cls.RETURN_TYPES))
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


# ---- Input specs: which inputs are widgets, and which extra values the editor stores beside them ------------------
def _ordered_inputs(definition: dict, sections: Iterable[str] = ("required", "optional")):
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


def _spec_type(spec):
    return spec[0] if isinstance(spec, (list, tuple)) and spec else spec


def _spec_options(spec) -> dict:
    return spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}


def _combo_values(spec) -> list | None:
    kind = _spec_type(spec)
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        return list(_spec_options(spec).get("options") or [])
    return None


def _is_widget(spec) -> bool:
    kind = _spec_type(spec)
    if _spec_options(spec).get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES or kind in FRONTEND_WIDGET_TYPES


def _widget_default(spec):
    """The value a fresh editor widget holds (used when the saved node has fewer values than widgets)."""
    kind, options = _spec_type(spec), _spec_options(spec)
    if "default" in options:
        return options["default"]
    combo = _combo_values(spec)
    if combo is not None:
        return combo[0] if combo else None
    return {"INT": 0, "FLOAT": 0, "BOOLEAN": False, "STRING": ""}.get(kind, "")


class _Slot(NamedTuple):
    name: str | None        # None: an editor-only value (control_after_generate, upload button) to skip
    spec: Any = None


def _widget_layout(definition: dict) -> list[_Slot]:
    """The node's widgets in the order of positional widgets_values, editor-only entries included.

    Frontend 1.58.1 builds widgets in input_order and stores every widget's value positionally, so the list holds
    the control_after_generate combo after seed-like inputs, the auto-refresh toggle (and a serialised "refresh"
    button) after remote combos, and, after all inputs, the upload button that media loaders get.
    """
    layout, tail = [], []
    for name, spec, section in _ordered_inputs(definition):
        if not _is_widget(spec):
            continue
        kind, options = _spec_type(spec), _spec_options(spec)
        kind = "COMBO" if isinstance(kind, list) else kind
        layout.append(_Slot(name, spec))
        if kind == "COMBO" and isinstance(options.get("remote"), dict):
            layout.append(_Slot(None))                              # "Auto-refresh after generation" toggle
            if options["remote"].get("refresh_button"):
                layout.append(_Slot("refresh", ["STRING", {"default": "refresh"}]))
        control = options.get("control_after_generate")
        if kind == "INT" and control is None:
            control = name in SEED_NAMES
        if control and kind in ("INT", "FLOAT", "COMBO"):
            layout.append(_Slot(None))                              # control_after_generate
        is_media = kind == "COMBO" and any(options.get(k) is True for k in MEDIA_UPLOAD_OPTIONS)
        if section == "required" and (is_media or (name == "audio" and options.get("audio_upload") is True)):
            tail = tail or [_Slot(None)]                            # one upload button, added after all inputs
    extra = [_Slot(name, ["STRING", {}]) for name in FRONTEND_EXTRA_WIDGETS.get(definition.get("name"), ())]
    return layout + tail + extra


def _widget_values(node: dict, definition: dict) -> dict:
    """{widget name: value} for one UI node: widgets_values_named first, else the positional widgets_values."""
    raw = node.get("widgets_values")
    named = node.get("widgets_values_named", raw)       # some packs save widgets_values as {name: value} too
    layout = [(index, slot) for index, slot in enumerate(_widget_layout(definition)) if slot.name is not None]
    if isinstance(named, dict):
        return {slot.name: named.get(slot.name, _widget_default(slot.spec)) for _, slot in layout}
    raw = raw if isinstance(raw, list) else []
    return {slot.name: raw[index] if index < len(raw) else _widget_default(slot.spec) for index, slot in layout}


def _wrap(value):
    # a list literal would read as a link: the frontend boxes it and the server unboxes it
    return {"__value__": value} if isinstance(value, list) else value


def process_dynamic_prompt(text: str, rng: random.Random | None = None) -> str:
    """The editor's dynamic prompts (STRING widgets with dynamicPrompts): drop // and /* */ comments, then replace
    every {a|b|c} (nestable; a backslash escapes {, | and }) with one option picked at random."""
    rng = rng or random.Random()
    text = re.sub(r"/\*[\s\S]*?\*/|//.*", "", text)

    def expand(pos: int, in_block: bool) -> tuple[str, int]:
        options, current = [], ""
        while pos < len(text):
            char, pos = text[pos], pos + 1
            if char == "\\":
                current, pos = current + "\\" + text[pos:pos + 1], pos + 1
            elif char == "{":
                chosen, pos = expand(pos, True)
                current += chosen
            elif in_block and char == "}":
                break
            elif in_block and char == "|":
                options, current = options + [current], ""
            else:
                current += char
        options.append(current)
        return options[rng.randrange(len(options))], pos

    return re.sub(r"\\([{}|])", r"\1", expand(0, False)[0])


def _types_compatible(a, b) -> bool:
    """LiteGraph's isValidConnection: "*" and "" match anything; comma lists match when any member does."""
    a = None if a in ("", "*") else a
    b = None if b in ("", "*") else b
    if not a or not b or a == b:
        return True
    a, b = str(a).lower(), str(b).lower()
    if "," not in a and "," not in b:
        return a == b
    return any(_types_compatible(x, y) for x in a.split(",") for y in b.split(","))


# ---- 2. UI -> API -------------------------------------------------------------------------------------------------
class _Link(NamedTuple):
    id: Any
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any


def _parse_links(raw) -> dict:
    links = {}
    for item in raw or []:
        if isinstance(item, (list, tuple)) and len(item) >= 5:
            link = _Link(item[0], str(item[1]), int(item[2]), str(item[3]), int(item[4]),
                         item[5] if len(item) > 5 else None)
        elif isinstance(item, dict) and "id" in item:
            link = _Link(item["id"], str(item.get("origin_id")), int(item.get("origin_slot", 0)),
                         str(item.get("target_id")), int(item.get("target_slot", 0)), item.get("type"))
        else:
            continue        # null entries appear in some saved files
        links[link.id] = link
    return links


def _flatten_definitions(definitions) -> list[dict]:
    """Subgraph definitions, with the ones nested in a definition's own `definitions` hoisted after it."""
    flat = []
    for definition in definitions or []:
        if isinstance(definition, dict) and "id" in definition:
            flat.append(definition)
            flat += _flatten_definitions((definition.get("definitions") or {}).get("subgraphs"))
    return flat


@dataclass
class _Scope:
    """One graph level: the root workflow or one subgraph definition."""
    nodes: dict                 # node id (str) -> UI node dict
    links: dict                 # link id -> _Link
    definition: dict | None = None   # the subgraph definition; None at the root


@dataclass(eq=False)
class _Exec:
    """A node placed in the flattened graph (the frontend's ExecutableNodeDTO)."""
    id: str                     # "outer:inner" path
    node: dict
    scope: _Scope
    path: tuple
    instance: "_Exec | None" = None      # the subgraph node that contains this node
    inner: _Scope | None = None          # set on subgraph nodes
    widget_overrides: dict = field(default_factory=dict)    # widget name -> value set by a PrimitiveNode

    @property
    def type(self) -> str:
        return str(self.node.get("type"))

    @property
    def mode(self) -> int:
        return self.node.get("mode") or 0

    @property
    def inputs(self) -> list:
        return self.node.get("inputs") or []


class _Converter:
    def __init__(self, workflow: dict, info: dict, rng: random.Random | None = None):
        self.info = info
        self.rng = rng
        self.execs: dict[str, _Exec] = {}
        root = _Scope(self._node_map(workflow.get("nodes")), _parse_links(workflow.get("links")))
        self.subgraphs = self._subgraph_scopes(workflow, root)
        self._place(root, (), None, 0)

    @staticmethod
    def _node_map(nodes) -> dict:
        return {str(n["id"]): n for n in nodes or [] if isinstance(n, dict) and "id" in n}

    def _subgraph_scopes(self, workflow: dict, root: _Scope) -> dict:
        """{definition id: _Scope}, with inner node ids made unique the way the editor does on load.

        Copies of one subgraph often share inner ids; the editor gives each repeated id the next free number
        (after the workflow's last node id), in definition order, and the prompt ids ("85:182") follow.
        """
        used = {int(i) for i in root.nodes if i.lstrip("-").isdigit()}
        last = (workflow.get("state") or {}).get("lastNodeId") or workflow.get("last_node_id") or 0
        scopes = {}
        for definition in _flatten_definitions((workflow.get("definitions") or {}).get("subgraphs")):
            if definition["id"] in scopes:
                continue                # the editor keeps the first definition of an id
            remap = {}
            for node in definition.get("nodes") or []:
                node_id = node.get("id") if isinstance(node, dict) else None
                if not isinstance(node_id, int):
                    continue
                if node_id in used:
                    while last + 1 in used:
                        last += 1
                    last += 1
                    remap[str(node_id)] = str(last)
                    node_id = last
                used.add(node_id)
                last = max(last, node_id)
            nodes = {remap.get(k, k): v for k, v in self._node_map(definition.get("nodes")).items()}
            links = {i: link._replace(origin_id=remap.get(link.origin_id, link.origin_id),
                                      target_id=remap.get(link.target_id, link.target_id))
                     for i, link in _parse_links(definition.get("links")).items()}
            scopes[definition["id"]] = _Scope(nodes, links, definition)
        return scopes

    def _place(self, scope: _Scope, path: tuple, instance, depth: int):
        """Flatten: every node gets an _Exec; live subgraph nodes are expanded in place."""
        if depth > _MAX_SUBGRAPH_DEPTH:
            raise _node_error(instance.id, instance.type, "subgraphs nest too deep (a subgraph contains itself?)",
                              "unpack the subgraph in the editor and save again")
        for node_id, node in scope.nodes.items():
            ex = _Exec(":".join(path + (node_id,)), node, scope, path, instance)
            self.execs[ex.id] = ex
            ex.inner = self.subgraphs.get(ex.type)
            if ex.inner is not None:
                if ex.mode not in (MODE_MUTED, MODE_BYPASSED):
                    self._place(ex.inner, path + (node_id,), ex, depth + 1)
            elif (ex.type not in VIRTUAL_TYPES and ex.type not in self.info
                  and ex.mode not in (MODE_MUTED, MODE_BYPASSED)):
                fix = "install the pack that provides it or remove the node"
                if re.match(r"workflow[>/]", ex.type):      # a legacy group node
                    fix = "convert the group node to a subgraph in the editor and save again"
                raise _node_error(ex.id, ex.type, f"unknown node type '{ex.type}'", fix)

    # ---- PrimitiveNode: applyToGraph copies its value into the widgets it feeds -------------------------------
    def _apply_primitives(self):
        for ex in self.execs.values():
            if ex.type != "PrimitiveNode":
                continue
            values = ex.node.get("widgets_values")
            outputs = ex.node.get("outputs") or []
            if not isinstance(values, list) or not values or not outputs:
                continue
            for link_id in outputs[0].get("links") or []:
                link = ex.scope.links.get(link_id)
                target = link and self.execs.get(":".join(ex.path + (link.target_id,)))
                if target is None or link.target_slot >= len(target.inputs):
                    continue
                widget = target.inputs[link.target_slot].get("widget") or {}
                if widget.get("name"):
                    target.widget_overrides[widget["name"]] = values[0]

    # ---- link resolution (resolveInput / resolveOutput of the frontend) ----------------------------------------
    def resolve_input(self, ex: _Exec, slot: int, visited: set, link_type=None):
        """-> None (nothing), ("link", exec id, output slot) or ("value", v) for input `slot` of `ex`."""
        if slot >= len(ex.inputs):
            return None
        key = (ex.id, "I", slot)
        if key in visited:
            raise _node_error(ex.id, ex.type, "links form a loop through reroutes, bypassed nodes or subgraphs",
                              "remove one of the links in the loop", ex.inputs[slot].get("name"))
        visited.add(key)
        link = ex.scope.links.get(ex.inputs[slot].get("link"))
        if link is None:
            return None             # unconnected, or a dangling link id that the editor would drop on load
        if ex.instance is not None and link.origin_id == str(SUBGRAPH_INPUT_ID):
            return self._resolve_subgraph_input(ex.instance, link.origin_slot, visited)
        origin = self.execs.get(":".join(ex.path + (link.origin_id,)))
        if origin is None:
            return None
        return self.resolve_output(origin, link.origin_slot, link_type or ex.inputs[slot].get("type"), visited)

    def resolve_output(self, ex: _Exec, slot: int, link_type, visited: set):
        key = (ex.id, "O", slot)
        if key in visited:
            raise _node_error(ex.id, ex.type, "links form a loop through reroutes, bypassed nodes or subgraphs",
                              "remove one of the links in the loop")
        visited.add(key)
        if ex.mode == MODE_MUTED:
            return None                         # muted nodes produce nothing; a widget keeps its own value
        if ex.mode == MODE_BYPASSED:
            index = self._bypass_slot(ex, slot, link_type)
            return None if index < 0 else self.resolve_input(ex, index, visited)
        if ex.inner is not None:
            return self._resolve_subgraph_output(ex, slot, link_type, visited)
        if ex.type in VIRTUAL_TYPES:        # Reroute passes its input through; PrimitiveNode has none
            return self.resolve_input(ex, slot, visited, link_type) if slot < len(ex.inputs) else None
        return ("link", ex.id, slot)

    @staticmethod
    def _bypass_slot(ex: _Exec, slot: int, link_type) -> int:
        """The input a bypassed node passes to output `slot`: same index, then exact type, then compatible."""
        inputs = ex.inputs
        if link_type in ("*", "", None):
            return slot if len(inputs) > slot else (0 if inputs else -1)
        outputs = ex.node.get("outputs") or []
        output_type = outputs[slot].get("type") if slot < len(outputs) else None
        if (slot < len(inputs) and _types_compatible(inputs[slot].get("type"), output_type)
                and _types_compatible(inputs[slot].get("type"), link_type)):
            return slot
        for index, inp in enumerate(inputs):
            if inp.get("type") == link_type:
                return index
        for index, inp in enumerate(inputs):
            if _types_compatible(inp.get("type"), output_type) and _types_compatible(inp.get("type"), link_type):
                return index
        return -1

    def _resolve_subgraph_output(self, ex: _Exec, slot: int, link_type, visited: set):
        for link in ex.inner.links.values():
            if link.target_id == str(SUBGRAPH_OUTPUT_ID) and link.target_slot == slot:
                inner = self.execs.get(f"{ex.id}:{link.origin_id}")
                return None if inner is None else self.resolve_output(inner, link.origin_slot, link_type, visited)
        return None

    def _resolve_subgraph_input(self, instance: _Exec, index: int, visited: set):
        """An inner link from the subgraph's input node: follow the instance's input, else its promoted widget."""
        sg_inputs = instance.inner.definition.get("inputs") or []
        if index >= len(sg_inputs):
            return None
        name = sg_inputs[index].get("name")
        for slot, inp in enumerate(instance.inputs):
            if inp.get("name") == name and inp.get("link") is not None:
                resolved = self.resolve_input(instance, slot, visited)
                if resolved is None and name in instance.widget_overrides:     # fed by a PrimitiveNode
                    return ("value", instance.widget_overrides[name])
                return resolved
        widgets = self._promoted_widgets(instance)
        return ("value", widgets[name]) if name in widgets else None

    def _promoted_widgets(self, instance: _Exec) -> dict:
        """{subgraph input name: value} for inputs that feed an inner widget, in definition order."""
        names, defaults = [], {}
        for sg_input in instance.inner.definition.get("inputs") or []:
            for link_id in sg_input.get("linkIds") or []:
                link = instance.inner.links.get(link_id)
                target = link and instance.inner.nodes.get(link.target_id)
                if not target or link.target_slot >= len(target.get("inputs") or []):
                    continue
                widget = (target["inputs"][link.target_slot].get("widget") or {}).get("name")
                definition = self.info.get(str(target.get("type")))
                if widget and (definition is not None or str(target.get("type")) in self.subgraphs):
                    names.append(sg_input["name"])      # (a nested subgraph node's promoted widget counts too)
                    defaults[sg_input["name"]] = _widget_values(target, definition).get(widget) if definition else None
                    break
        saved = instance.node.get("widgets_values")
        saved = saved if isinstance(saved, list) else []
        named = instance.node.get("widgets_values_named")
        named = named if isinstance(named, dict) else {}
        values = {name: named.get(name, saved[i] if i < len(saved) else defaults[name]) for i, name in enumerate(names)}
        values.update({k: v for k, v in instance.widget_overrides.items() if k in values})
        return values

    # ---- the prompt ---------------------------------------------------------------------------------------------
    def convert(self) -> dict:
        self._apply_primitives()
        prompt = {}
        for ex in self.execs.values():
            if ex.type in VIRTUAL_TYPES or ex.inner is not None or ex.mode in (MODE_MUTED, MODE_BYPASSED):
                continue
            definition = self.info[ex.type]
            values = _widget_values(ex.node, definition)
            values.update({k: v for k, v in ex.widget_overrides.items() if k in values})
            for name, spec, _ in _ordered_inputs(definition):
                if _spec_options(spec).get("dynamicPrompts") is True and isinstance(values.get(name), str):
                    values[name] = process_dynamic_prompt(values[name], self.rng)
            inputs = {name: _wrap(value) for name, value in values.items()}
            for slot, inp in enumerate(ex.inputs):
                resolved = self.resolve_input(ex, slot, set())
                if resolved is None:
                    continue
                name = inp.get("name")
                if resolved[0] == "value":
                    inputs[name] = _wrap(resolved[1])
                else:
                    inputs[name] = [resolved[1], int(resolved[2])]
            meta = {"title": ex.node.get("title") or definition.get("display_name") or ex.type}
            properties = ex.node.get("properties") or {}
            meta.update({k: properties[k] for k in ("cnr_id", "aux_id") if isinstance(properties.get(k), str)})
            if isinstance(properties.get("ver"), str) and properties["ver"]:
                meta["ver"] = properties["ver"][1:] if properties["ver"].startswith("v") else properties["ver"]
            prompt[ex.id] = {"inputs": inputs, "class_type": ex.type, "_meta": meta}
        for node in prompt.values():       # inputs that point at muted (or otherwise absent) nodes
            node["inputs"] = {k: v for k, v in node["inputs"].items()
                              if not (isinstance(v, list) and len(v) == 2 and v[0] not in prompt)}
        return prompt


def ui_to_api(workflow: dict, object_info: dict, rng: random.Random | None = None) -> dict:
    """Convert a UI-format workflow (what the editor saves) to an API prompt, as the frontend's graphToPrompt does.

    Args:
        workflow: {nodes, links, groups, extra, version, definitions?}; links as lists or dicts.
        object_info: node definitions in the /api/object_info shape.
        rng: picks the {a|b} choices of dynamic-prompt text widgets (a fresh random.Random when None).
    Returns:
        {"<id>": {"class_type", "inputs", "_meta": {"title"}}}; subgraph nodes get ids "outer:inner".
    Raises:
        GraphError: an unknown node type (in a node that would run), or a loop of links.

    Matches frontend 1.58.1 on 61 real workflows (tests/data/conversion). Not reproduced: default titles of nodes
    whose definition has no display_name (the editor shows its own translation), and PrimitiveNode
    "Run widget replace on values" (%node.widget% substitution).
    """
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        raise GraphError("not a UI workflow: expected a JSON object with a 'nodes' list. "
                         "Fix: save the workflow from the editor (Workflow > Save) or pass an API prompt.")
    return _Converter(workflow, object_info, rng).convert()


def is_api_format(data) -> bool:
    """True for an API prompt: a non-empty {id: {"class_type", ...}} mapping."""
    return (isinstance(data, dict) and bool(data)
            and all(isinstance(v, dict) and "class_type" in v for v in data.values()))


def load_workflow(path, object_info: dict | None = None) -> tuple[dict, dict | None]:
    """Read a workflow JSON file: (API prompt, UI workflow or None).

    Accepts an API prompt, a UI workflow (converted with `object_info`, which is then required), or a /prompt
    request body {"prompt": ..., "extra_data": {"extra_pnginfo": {"workflow": ...}}}.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GraphError(f"{path}: no such file. Fix: check the path.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GraphError(f"{path}: not valid JSON ({exc}). Fix: re-save the workflow from the editor.") from None
    if isinstance(data, dict) and is_api_format(data.get("prompt")):
        ui = ((data.get("extra_data") or {}).get("extra_pnginfo") or {}).get("workflow")
        return data["prompt"], ui if isinstance(ui, dict) else None
    if is_api_format(data):
        return data, None
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        if object_info is None:
            raise GraphError(f"{path}: a UI-format workflow needs node definitions to convert. "
                             "Fix: pass object_info (graph.object_info(NODE_CLASS_MAPPINGS, ...)).")
        try:
            return ui_to_api(data, object_info), data
        except GraphError as exc:
            raise GraphError(f"{path}: {exc}", exc.node_id, exc.class_type, exc.input_name) from None
    raise GraphError(f"{path}: not a workflow (neither an API prompt nor a UI workflow with 'nodes'). "
                     "Fix: export it from the editor with Save or Export (API).")


# ---- 3. Validation (ComfyUI's validate_prompt / validate_inputs shapes) -------------------------------------------
def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and not isinstance(value[1], bool)


def _error(kind: str, message: str, details: str = "", **extra) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _output_type_matches(received, expected) -> bool:
    """ComfyUI's validate_node_input, plus "*" on either side and COMBO outputs into COMBO inputs."""
    if received == "*" or expected == "*" or received == expected:
        return True
    if isinstance(expected, list) or expected == "COMBO":
        return isinstance(received, list) or received == "COMBO"
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


def _check_value(name: str, value, spec) -> dict | None:
    """One literal input against its spec: type conversion, min/max, combo membership."""
    kind, options = _spec_type(spec), _spec_options(spec)
    config = _jsonable(spec)
    if isinstance(value, dict) and "__value__" in value:
        value = value["__value__"]
    try:
        if kind == "INT":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{value} is not a whole number")
            value = int(value)
        elif kind == "FLOAT":
            value = float(value)
        elif kind == "BOOLEAN" and not isinstance(value, (bool, int)):
            raise ValueError(f"{value!r} is not true or false")
    except (TypeError, ValueError, OverflowError) as exc:
        return _error("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                      f"{name}, {value}, {exc}", input_name=name, input_config=config, received_value=value,
                      exception_message=str(exc))
    if kind in ("INT", "FLOAT"):
        if options.get("min") is not None and value < options["min"]:
            return _error("value_smaller_than_min", f"Value {value} smaller than min of {options['min']}", name,
                          input_name=name, input_config=config, received_value=value)
        if options.get("max") is not None and value > options["max"]:
            return _error("value_bigger_than_max", f"Value {value} bigger than max of {options['max']}", name,
                          input_name=name, input_config=config, received_value=value)
    combo = _combo_values(spec)
    if combo is not None:
        picked = value if isinstance(value, list) and options.get("multiselect") else [value]
        missing = [v for v in picked if not isinstance(v, (str, int, float)) or v not in combo]
        if missing:
            listed = f"(list of length {len(combo)})" if len(combo) > 20 else str(combo)
            return _error("value_not_in_list", "Value not in list", f"{name}: '{missing[0]}' not in {listed}",
                          input_name=name, input_config=None if len(combo) > 20 else config,
                          received_value=value)
    return None


def _output_nodes(prompt: dict, info: dict, targets) -> list[str]:
    wanted = None if targets is None else {str(t) for t in targets}
    return [nid for nid, node in prompt.items()
            if info[node["class_type"]].get("output_node") and (wanted is None or nid in wanted)]


def validate_prompt(prompt: dict, object_info: dict, targets=None) -> tuple[dict | None, dict]:
    """Check a prompt the way ComfyUI's /prompt does, without running anything.

    Validates the output nodes (all, or those in `targets`) and, recursively, every node they link to: unknown
    class types, missing required inputs, links to missing nodes or output slots, link type mismatches, values that
    do not convert, INT/FLOAT outside min/max, COMBO values not in the list. VALIDATE_INPUTS is not called here.

    Returns:
        (error, node_errors). `error` is None, or a top-level {"type", "message", "details", "extra_info"}
        ("invalid_prompt", "prompt_no_outputs", "prompt_outputs_failed_validation"); as in ComfyUI it stays None
        while at least one output is valid. `node_errors` is {"<id>": {"errors": [...], "dependent_outputs": [...],
        "class_type"}}.
    """
    if not isinstance(prompt, dict) or not prompt:
        return _error("invalid_prompt", "Cannot execute because the prompt is empty or not an object.",
                      type(prompt).__name__), {}
    for nid, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return _error("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                          f"Node ID '#{nid}'"), {}
    node_errors = {nid: {"errors": [_error("invalid_prompt", f"Cannot execute because node {node['class_type']} "
                                           "does not exist.", f"Node ID '#{nid}'")],
                         "dependent_outputs": [], "class_type": node["class_type"]}
                   for nid, node in prompt.items() if node["class_type"] not in object_info}
    if node_errors:                     # ComfyUI stops at the first; the node errors name every unknown node
        return next(iter(node_errors.values()))["errors"][0], node_errors

    outputs = _output_nodes(prompt, object_info, targets)
    if not outputs:
        return _error("prompt_no_outputs", "Prompt has no outputs"), {}

    validated: dict[str, tuple[bool, list]] = {}
    in_progress: set[str] = set()

    def check(nid: str) -> bool:
        if nid in validated:
            return validated[nid][0]
        in_progress.add(nid)
        node = prompt[nid]
        definition = object_info[node["class_type"]]
        inputs = node.get("inputs") or {}
        errors, valid = [], True
        for name, spec, section in _ordered_inputs(definition):
            if name not in inputs:
                if section == "required":
                    errors.append(_error("required_input_missing", "Required input is missing", name,
                                         input_name=name))
                continue
            value, expected = inputs[name], _spec_type(spec)
            if not isinstance(value, list):
                problem = _check_value(name, value, spec)
                if problem:
                    errors.append(problem)
                continue
            if not _is_link(value):
                errors.append(_error("bad_linked_input",
                                     "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                                     name, input_name=name, received_value=value))
                continue
            source_id, slot = str(value[0]), value[1]
            source = prompt.get(source_id)
            if source is None:
                errors.append(_error("bad_linked_input", f"Linked node '{source_id}' does not exist",
                                     f"{name}: link to node {source_id}, which is not in the prompt",
                                     input_name=name, linked_node=value))
                continue
            returns = object_info[source["class_type"]].get("output") or []
            if not 0 <= slot < len(returns):
                errors.append(_error("bad_linked_input", f"Linked output {slot} does not exist",
                                     f"{name}: {source['class_type']} (node {source_id}) has {len(returns)} outputs",
                                     input_name=name, linked_node=value))
                continue
            if not _output_type_matches(returns[slot], expected):
                errors.append(_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                     f"{name}, received_type({returns[slot]}) mismatch input_type({expected})",
                                     input_name=name, input_config=_jsonable(spec), received_type=returns[slot],
                                     linked_node=value))
                continue
            if source_id in in_progress:
                errors.append(_error("dependency_cycle", "Dependency cycle detected",
                                     f"{name}: node {source_id} depends on node {nid}", input_name=name,
                                     linked_node=value))
                continue
            if not check(source_id):
                valid = False
        in_progress.discard(nid)
        validated[nid] = (valid and not errors, errors)
        return validated[nid][0]

    node_errors, failures = {}, []
    for output in outputs:
        if check(output):
            continue
        failures.append(output)
        for nid, (ok, errors) in validated.items():
            if not ok and errors:
                entry = node_errors.setdefault(nid, {"errors": errors, "dependent_outputs": [],
                                                     "class_type": prompt[nid]["class_type"]})
                if output not in entry["dependent_outputs"]:
                    entry["dependent_outputs"].append(output)
    if failures and len(failures) == len(outputs):
        lines = [f"{e['message']}: {e['details']}" for entry in node_errors.values() for e in entry["errors"]]
        return _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", "\n".join(lines)), \
            node_errors
    return None, node_errors


def format_node_errors(node_errors: dict) -> list[str]:
    """One readable line per error: "node 3 (KSampler), input 'steps': Value 0 smaller than min of 1 (steps)"."""
    lines = []
    for nid, entry in node_errors.items():
        for e in entry.get("errors", []):
            name = (e.get("extra_info") or {}).get("input_name")
            where = f"node {nid} ({entry.get('class_type')})" + (f", input '{name}'" if name else "")
            lines.append(f"{where}: {e.get('message')}" + (f" ({e['details']})" if e.get("details") else ""))
    return lines


# ---- 4. Execution order -------------------------------------------------------------------------------------------
def _id_key(node_id: str):
    """Sort ids numerically per ':' part ("2" < "10" < "10:3"), text after numbers."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in str(node_id).split(":")]


def execution_order(prompt: dict, object_info: dict, targets=None) -> list[str]:
    """Node ids in an order that runs every input before its consumer: the nodes the output nodes need.

    Args:
        prompt: an API prompt.
        object_info: node definitions (to find output nodes).
        targets: node ids to run (with their ancestors) instead of every output node.
    Raises:
        GraphError: an unknown class type, a target or linked node that does not exist, or a cycle.
    """
    for nid, node in prompt.items():
        if node.get("class_type") not in object_info:
            raise _node_error(nid, node.get("class_type"), f"unknown node type '{node.get('class_type')}'",
                              "install the pack that provides it or remove the node")
    if targets is None:
        roots = _output_nodes(prompt, object_info, None)
    else:
        roots = [str(t) for t in targets]
        for nid in roots:
            if nid not in prompt:
                raise GraphError(f"target node {nid} is not in the prompt. Fix: pass the id of an existing node.",
                                 nid)

    def sources(nid: str):
        for name, value in (prompt[nid].get("inputs") or {}).items():
            if _is_link(value):
                if str(value[0]) not in prompt:
                    raise _node_error(nid, prompt[nid]["class_type"], f"linked node '{value[0]}' does not exist",
                                      "reconnect the input to an existing node", name)
                yield str(value[0])

    order: list[str] = []
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    for root in sorted(roots, key=_id_key):
        if root in state:
            continue
        state[root], stack = 1, [(root, sources(root))]
        while stack:                    # depth-first; a node is appended after all of its inputs
            nid, pending = stack[-1]
            source = next(pending, None)
            if source is None:
                stack.pop()
                state[nid] = 2
                order.append(nid)
            elif state.get(source) == 1:
                path = [n for n, _ in stack]
                cycle = path[path.index(source):] + [source]
                raise _node_error(nid, prompt[nid]["class_type"], "dependency cycle through nodes "
                                  + " -> ".join(cycle), "remove one of the links in the cycle")
            elif source not in state:
                state[source] = 1
                stack.append((source, sources(source)))
    return order
