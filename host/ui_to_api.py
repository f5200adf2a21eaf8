"""UI -> API: what the editor saves -> what it sends to /prompt (the frontend's `graphToPrompt`, re-implemented),
and `load_workflow`, which reads either format from a file.

Plain Python on JSON-shaped dicts; no torch, no ComfyUI.
"""
from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .object_info import combo_values, is_widget, ordered_inputs, spec_options, spec_type
from .prompt import GraphError, is_api_format, is_link, link_source, node_error
from .wire import JSONRefused, loads

__all__ = ["ui_to_api", "load_workflow", "process_dynamic_prompt"]

log = logging.getLogger("kinema.workflow")
KNOWN_VERSIONS = (0.4, 1)           # the UI formats the editor saves (0.4: links as lists; 1: links as objects)

# Serialised widgets that the frontend's own extensions add to core nodes (the 3D viewer's on SaveGLB, 1.58.1).
FRONTEND_EXTRA_WIDGETS = {"SaveGLB": ("image",)}
VIRTUAL_TYPES = frozenset({"Note", "MarkdownNote", "PrimitiveNode", "Reroute"})   # editor-only nodes
SEED_NAMES = frozenset({"seed", "noise_seed"})      # INT widgets with control_after_generate unless it is false
MEDIA_UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")
MODE_MUTED, MODE_BYPASSED = 2, 4
SUBGRAPH_INPUT_ID, SUBGRAPH_OUTPUT_ID = -10, -20
_MAX_SUBGRAPH_DEPTH = 32


# ---- Input specs: which inputs are widgets, and which extra values the editor stores beside them ------------------
def _widget_default(spec):
    """The value a fresh editor widget holds (used when the saved node has fewer values than widgets)."""
    kind, options = spec_type(spec), spec_options(spec)
    if "default" in options:
        return options["default"]
    combo = combo_values(spec)
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
    for name, spec, section in ordered_inputs(definition):
        if not is_widget(spec):
            continue
        kind, options = spec_type(spec), spec_options(spec)
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


class _Link(NamedTuple):
    id: Any
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any


def _slot(value, link_id, which: str) -> int:
    """A link's slot index: a whole number (or its digits as text); GraphError naming the link otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise GraphError(f"link {link_id!r}: {which} {value!r} is not a slot number (0, 1, ...). Fix: reconnect the link "
                     f"in the editor and save the workflow again.")


def _parse_links(raw) -> dict:
    links = {}
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, (list, tuple)) and len(item) >= 5:
            link = _Link(item[0], str(item[1]), _slot(item[2], item[0], "origin slot"), str(item[3]),
                         _slot(item[4], item[0], "target slot"), item[5] if len(item) > 5 else None)
        elif isinstance(item, dict) and "id" in item:
            link = _Link(item["id"], str(item.get("origin_id")), _slot(item.get("origin_slot", 0), item["id"],
                         "origin_slot"), str(item.get("target_id")),
                         _slot(item.get("target_slot", 0), item["id"], "target_slot"), item.get("type"))
        else:
            continue        # null entries appear in some saved files
        if not isinstance(link.id, (str, int)) or isinstance(link.id, bool):
            continue        # an id that cannot be looked up is no link
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
            raise node_error(instance.id, instance.type, "subgraphs nest too deep (a subgraph contains itself?)",
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
                raise node_error(ex.id, ex.type, f"unknown node type '{ex.type}'", fix)

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
            raise node_error(ex.id, ex.type, "links form a loop through reroutes, bypassed nodes or subgraphs",
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
            raise node_error(ex.id, ex.type, "links form a loop through reroutes, bypassed nodes or subgraphs",
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
            for name, spec, _ in ordered_inputs(definition):
                if spec_options(spec).get("dynamicPrompts") is True and isinstance(values.get(name), str):
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
                              if not (is_link(v) and link_source(v) not in prompt)}
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
    _warn_unusual(workflow)
    try:
        return _Converter(workflow, object_info, rng).convert()
    except RecursionError:
        raise GraphError("links pass through too many reroutes, bypassed nodes or nested subgraphs to follow. "
                         "Fix: connect the nodes directly in the editor and save again.") from None


def _warn_unusual(workflow: dict) -> None:
    """Log a warning (naming the node) for what is converted on a guess: an unknown format version, widget values
    that are neither a list nor a {name: value} object (the node's widgets then take their defaults)."""
    version = workflow.get("version")
    if version is not None and version not in KNOWN_VERSIONS:
        log.warning("workflow version %r is not one Kinema knows (%s); converting it as version 0.4. Re-save it "
                    "from the editor if the result looks wrong.", str(version)[:40],
                    ", ".join(map(str, KNOWN_VERSIONS)))
    subgraphs = _flatten_definitions((workflow.get("definitions") or {}).get("subgraphs")) \
        if isinstance(workflow.get("definitions"), dict) else []
    for nodes in [workflow.get("nodes")] + [d.get("nodes") for d in subgraphs]:
        for node in nodes if isinstance(nodes, list) else []:
            if not isinstance(node, dict) or node.get("type") in VIRTUAL_TYPES:
                continue
            values = node.get("widgets_values")
            if values is not None and not isinstance(values, (list, dict)):
                log.warning("node %s (%s): widgets_values is a %s, not a list; its widgets take their default "
                            "values. Fix: re-save the workflow from the editor.", node.get("id"),
                            str(node.get("type"))[:80], type(values).__name__)


def load_workflow(path, object_info: dict | None = None) -> tuple[dict, dict | None]:
    """Read a workflow JSON file: (API prompt, UI workflow or None).

    Accepts an API prompt, a UI workflow (converted with `object_info`, which is then required), or a /prompt
    request body {"prompt": ..., "extra_data": {"extra_pnginfo": {"workflow": ...}}}.
    """
    path = Path(path)
    try:
        data = loads(path.read_bytes(), str(path))
    except FileNotFoundError:
        raise GraphError(f"{path}: no such file. Fix: check the path.") from None
    except IsADirectoryError:
        raise GraphError(f"{path}: is a folder, not a workflow file. Fix: give the path of a workflow .json "
                         f"file.") from None
    except OSError as exc:
        raise GraphError(f"{path}: cannot be read ({exc.strerror or exc}). Fix: check the path and its "
                         f"permissions.") from None
    except JSONRefused as exc:
        raise GraphError(f"{path}: {exc.reason}. Fix: re-save the workflow from the editor.") from None
    if isinstance(data, dict) and is_api_format(data.get("prompt")):
        ui = ((data.get("extra_data") or {}).get("extra_pnginfo") or {}).get("workflow")
        return data["prompt"], ui if isinstance(ui, dict) else None
    if is_api_format(data):
        return data, None
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        if object_info is None:
            raise GraphError(f"{path}: a UI-format workflow needs node definitions to convert. "
                             "Fix: pass object_info (object_info.object_info(NODE_CLASS_MAPPINGS, ...)).")
        try:
            return ui_to_api(data, object_info), data
        except GraphError as exc:
            raise GraphError(f"{path}: {exc}", exc.node_id, exc.class_type, exc.input_name) from None
    raise GraphError(f"{path}: not a workflow (neither an API prompt nor a UI workflow with 'nodes'). "
                     "Fix: export it from the editor with Save or Export (API).")

