"""Validation of an API prompt, in one place for `kinema run`, `kinema serve` and `kinema batch`.

`validate` does what ComfyUI's /prompt does before anything runs, with its error shapes: unknown class types,
missing required inputs, links to missing nodes or output slots, link type mismatches, values that do not convert,
INT/FLOAT outside min/max, COMBO values not in the list, and then the node's own VALIDATE_INPUTS. Beyond ComfyUI it
refuses NaN and infinities for FLOAT inputs, control characters in text (any but tab and newline in multiline text;
all in one-line text such as file name prefixes), a literal value on an input that takes a linked node's output
(`"model": "x"`), and a class_type or inputs of the wrong JSON type. As in ComfyUI, an
input that VALIDATE_INPUTS takes is left to it (no min/max or list check): a Load node's file name that is not in
the dropdown is reported by its validator, which names the folders searched and the fix.

VALIDATE_INPUTS gets the node's literal inputs. A validator that needs a linked value (a required parameter with no
literal) is `deferred`: the executor calls `custom_errors` with the resolved values when the node runs.

One text for one failure: /prompt answers `error` and `node_errors`; `kinema run` and `kinema batch` print
`format_node_errors` of the same `node_errors` (through `PromptInvalid`).
"""
from __future__ import annotations

import inspect
import math
import unicodedata
from dataclasses import dataclass, field
from typing import NamedTuple

from .object_info import (FRONTEND_WIDGET_TYPES, WIDGET_TYPES, combo_values, jsonable, ordered_inputs, spec_options,
                          spec_type)
from .prompt import is_link, link_source, literal_inputs, output_nodes

__all__ = ["Validation", "PromptInvalid", "validate", "deferred", "custom_errors", "format_node_errors"]


class Validation(NamedTuple):
    error: dict | None      # None, or the top-level {"type", "message", "details", "extra_info"}
    node_errors: dict       # {"<id>": {"errors": [...], "dependent_outputs": [...], "class_type"}}
    outputs: list[str]      # the output nodes that passed (what runs), in prompt order


class PromptInvalid(ValueError):
    """The prompt failed validation; carries ComfyUI's error and node_errors shapes, and says them in one line
    per error (`format_node_errors`)."""

    def __init__(self, error: dict | None, node_errors: dict):
        self.error, self.node_errors = error, node_errors
        lines = format_node_errors(node_errors)
        if not lines and error:
            lines = [_sentence(error.get("message", ""), error.get("details", ""))]
        super().__init__("invalid workflow:\n  " + "\n  ".join(lines))


def _error(kind: str, message: str, details: str = "", **extra) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _sentence(message: str, details: str) -> str:
    return f"{message.rstrip('.')}: {details}" if details else message


def format_node_errors(node_errors: dict) -> list[str]:
    """One line per error: "node 3 (KSampler), input 'steps': Value 0 smaller than min of 1"."""
    lines = []
    for nid, entry in node_errors.items():
        for e in entry.get("errors", []):
            name = (e.get("extra_info") or {}).get("input_name")
            details = str(e.get("details") or "")
            if name and details.startswith(f"{name} - "):
                details = details[len(name) + 3:]       # custom validation: "image - <the node's message>"
            elif details == name:
                details = ""
            where = f"node {nid} ({entry.get('class_type')})" + (f", input '{name}'" if name else "")
            lines.append(f"{where}: {_sentence(str(e.get('message', '')), details)}")
    return lines


# ---- the nodes' own VALIDATE_INPUTS -------------------------------------------------------------------------------
def _parameters(cls) -> dict | None:
    """VALIDATE_INPUTS's parameters, or None when the class has none."""
    check = getattr(cls, "VALIDATE_INPUTS", None)
    return None if check is None else dict(inspect.signature(check).parameters)


def _takes_all(params: dict) -> bool:
    return any(p.kind == p.VAR_KEYWORD for p in params.values())


def _takes(cls, name: str) -> bool:
    """Whether the class's VALIDATE_INPUTS checks input `name` itself (ComfyUI then skips min/max and the list)."""
    params = _parameters(cls)
    return params is not None and (name in params or _takes_all(params))


def deferred(cls, literal: dict) -> bool:
    """True when VALIDATE_INPUTS needs a value that is not literal (a linked input): it runs when the node runs."""
    params = _parameters(cls)
    return params is not None and any(
        p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and name not in literal
        for name, p in params.items())


def custom_errors(cls, values: dict) -> list[dict]:
    """Call the class's VALIDATE_INPUTS with `values` (those it names; all of them when it takes **kwargs).

    Returns [] when it returns True, else one custom_validation_failed error per input it names (ComfyUI's shape,
    details "<input> - <its message>"); a validator that raises fails with the exception's text.
    """
    params = _parameters(cls)
    if params is None:
        return []
    args = values if _takes_all(params) else {k: v for k, v in values.items() if k in params}
    try:
        result = cls.VALIDATE_INPUTS(**args)
    except Exception as exc:        # a validator that raises is a failed validation, reported with the node
        result = f"{type(exc).__name__}: {exc}"
    if result is True:
        return []
    named = [k for k in args if k in params] or [None]
    said = "" if result is False else str(result)
    return [_error("custom_validation_failed", "Custom validation failed for node",
                   f"{name} - {said}" if name and said else (name or said), input_name=name) for name in named]


# ---- one input ----------------------------------------------------------------------------------------------------
def _output_type_matches(received, expected) -> bool:
    """ComfyUI's validate_node_input, plus "*" on either side and COMBO outputs into COMBO inputs."""
    if received == "*" or expected == "*" or received == expected:
        return True
    if isinstance(expected, list) or expected == "COMBO":
        return isinstance(received, list) or received == "COMBO"
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


_TEXT_WHITESPACE = frozenset("\t\n\r")


def _converted(kind, value, options: dict):
    if kind == "INT":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{value} is not a whole number")
        return int(value)
    if kind == "FLOAT":
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number; give a number such as 1.0")
        return value
    if kind == "BOOLEAN" and not isinstance(value, (bool, int)):
        raise ValueError(f"{value!r} is not true or false")
    if kind == "STRING" and isinstance(value, str):
        allowed = _TEXT_WHITESPACE if options.get("multiline") else frozenset()
        bad = next((c for c in value if c not in allowed and unicodedata.category(c) == "Cc"), None)
        if bad is not None:
            raise ValueError(f"the text holds the control character {bad!r} at position {value.index(bad)}; "
                             f"remove it")
    return value


def _takes_link_only(spec) -> bool:
    """An input fed only by a link (IMAGE, KINEMA_MODEL, ...): not a widget type, not a combo, not "*"."""
    kind = spec_type(spec)
    return (isinstance(kind, str) and kind != "*" and kind not in WIDGET_TYPES and kind not in FRONTEND_WIDGET_TYPES
            and combo_values(spec) is None)


def _check_value(name: str, value, spec, limits: bool = True) -> dict | None:
    """One literal input against its spec: type conversion, then (with `limits`) min/max and combo membership."""
    kind, options = spec_type(spec), spec_options(spec)
    config = jsonable(spec)
    if _takes_link_only(spec):
        return _error("bad_linked_input", f"Input '{name}' takes a {kind} from a linked node, not a literal value",
                      f"{name}: got {_short(value)}; connect it to a node that outputs {kind}", input_name=name,
                      input_config=config, received_value=_short(value))
    if isinstance(value, dict) and "__value__" in value:
        value = value["__value__"]
    try:
        value = _converted(kind, value, options)
    except (TypeError, ValueError, OverflowError) as exc:
        return _error("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                      f"{name}, {_short(value)}, {exc}", input_name=name, input_config=config,
                      received_value=_short(value),
                      exception_message=str(exc))
    if not limits:
        return None
    if kind in ("INT", "FLOAT"):
        if options.get("min") is not None and value < options["min"]:
            return _error("value_smaller_than_min", f"Value {value} smaller than min of {options['min']}", name,
                          input_name=name, input_config=config, received_value=value)
        if options.get("max") is not None and value > options["max"]:
            return _error("value_bigger_than_max", f"Value {value} bigger than max of {options['max']}", name,
                          input_name=name, input_config=config, received_value=value)
    combo = combo_values(spec)
    if combo is not None:
        picked = value if isinstance(value, list) and options.get("multiselect") else [value]
        missing = [v for v in picked if not isinstance(v, (str, int, float)) or v not in combo]
        if missing:
            listed = f"(list of length {len(combo)})" if len(combo) > 20 else str(combo)
            return _error("value_not_in_list", "Value not in list",
                          f"{name}: '{_short(missing[0])}' not in {listed}", input_name=name,
                          input_config=None if len(combo) > 20 else config, received_value=_short(value))
    return None


def _short(value, limit: int = 200):
    """A value as an error may echo it: numbers and short text as they are; NaN/infinity, lists and objects as their
    repr; text longer than `limit` characters cut (a 50 MB prompt is not sent back or logged whole)."""
    if isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)) or value is None:
        return value
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_link(name: str, value, spec, prompt: dict, object_info: dict) -> dict | None:
    """One linked input: the shape, the source node and slot, and the type it delivers."""
    if not is_link(value):
        return _error("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                      name, input_name=name, received_value=_short(value))
    source_id, slot = link_source(value), value[1]
    source = prompt.get(source_id)
    if source is None:
        return _error("bad_linked_input", f"Linked node '{source_id}' does not exist",
                      f"{name}: link to node {source_id}, which is not in the prompt", input_name=name,
                      linked_node=value)
    returns = object_info[source["class_type"]].get("output") or []
    if not 0 <= slot < len(returns):
        return _error("bad_linked_input", f"Linked output {slot} does not exist",
                      f"{name}: {source['class_type']} (node {source_id}) has {len(returns)} outputs",
                      input_name=name, linked_node=value)
    expected = spec_type(spec)
    if not _output_type_matches(returns[slot], expected):
        return _error("return_type_mismatch", "Return type mismatch between linked nodes",
                      f"{name}, received_type({returns[slot]}) mismatch input_type({expected})", input_name=name,
                      input_config=jsonable(spec), received_type=returns[slot], linked_node=value)
    return None


# ---- the prompt ---------------------------------------------------------------------------------------------------
@dataclass
class _Visit:
    """One node on the walk's path: its own errors so far and the linked nodes still to check."""
    nid: str
    errors: list
    sources: list = field(default_factory=list)
    next: int = 0


class _Walk:
    """Validates nodes depth-first from the outputs, each once: {node id: (valid, its own errors)}.

    Iterative (an explicit stack, not recursion): a chain of thousands of nodes is checked like a short one.
    """

    def __init__(self, prompt: dict, object_info: dict, classes: dict):
        self.prompt, self.info, self.classes = prompt, object_info, classes
        self.validated: dict[str, tuple[bool, list]] = {}
        self.in_progress: set[str] = set()

    def check(self, root: str) -> bool:
        if root not in self.validated:
            stack = [self._enter(root)]
            while stack:
                visit = stack[-1]
                if visit.next < len(visit.sources):
                    source = visit.sources[visit.next]
                    visit.next += 1
                    if source not in self.validated and source not in self.in_progress:
                        stack.append(self._enter(source))
                    continue
                stack.pop()
                self._leave(visit)
        return self.validated[root][0]

    def _enter(self, nid: str) -> _Visit:
        """Check the node's own inputs; its linked nodes are checked next (cycles are errors here)."""
        self.in_progress.add(nid)
        node = self.prompt[nid]
        cls = self.classes.get(node["class_type"])
        inputs = node.get("inputs") or {}
        visit = _Visit(nid, [])
        for name, spec, section in ordered_inputs(self.info[node["class_type"]]):
            if name not in inputs:
                if section == "required":
                    visit.errors.append(_error("required_input_missing", "Required input is missing", name,
                                               input_name=name))
                continue
            value = inputs[name]
            if not isinstance(value, list):
                problem = _check_value(name, value, spec, limits=not _takes(cls, name))
            else:
                problem = _check_link(name, value, spec, self.prompt, self.info)
                if problem is None and link_source(value) in self.in_progress:
                    problem = _error("dependency_cycle", "Dependency cycle detected",
                                     f"{name}: node {link_source(value)} depends on node {nid}", input_name=name,
                                     linked_node=value)
                if problem is None:
                    visit.sources.append(link_source(value))
            if problem:
                visit.errors.append(problem)
        return visit

    def _leave(self, visit: _Visit) -> None:
        """All linked nodes checked: the node's VALIDATE_INPUTS, then its verdict."""
        node = self.prompt[visit.nid]
        cls = self.classes.get(node["class_type"])
        errors = visit.errors
        upstream_ok = all(self.validated[s][0] for s in visit.sources)
        literal = literal_inputs(node)
        if not errors and not deferred(cls, literal):
            errors = custom_errors(cls, literal)
        self.in_progress.discard(visit.nid)
        self.validated[visit.nid] = (upstream_ok and not errors, errors)


def _malformed(prompt, object_info: dict) -> tuple[dict | None, dict]:
    """The checks before any node: an empty prompt, a node without class_type, unknown class types."""
    if not isinstance(prompt, dict) or not prompt:
        return _error("invalid_prompt", "Cannot execute because the prompt is empty or not an object.",
                      type(prompt).__name__), {}
    for nid, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return _error("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                          f"Node ID '#{nid}'"), {}
        if not isinstance(node["class_type"], str):
            return _error("invalid_prompt", "Cannot execute because a node's class_type is not a string.",
                          f"Node ID '#{nid}': class_type is {_short(node['class_type'])}"), {}
        if not isinstance(node.get("inputs") or {}, dict):
            return _error("invalid_prompt", "Cannot execute because a node's inputs are not an object.",
                          f"Node ID '#{nid}': inputs is {_short(node['inputs'])}"), {}
    node_errors = {nid: {"errors": [_error("invalid_prompt", f"Cannot execute because node {node['class_type']} "
                                           "does not exist.", f"Node ID '#{nid}'")],
                         "dependent_outputs": [], "class_type": node["class_type"]}
                   for nid, node in prompt.items() if node["class_type"] not in object_info}
    if node_errors:                     # ComfyUI stops at the first; the node errors name every unknown node
        return next(iter(node_errors.values()))["errors"][0], node_errors
    return None, {}


def validate(prompt: dict, object_info: dict, classes: dict, targets=None) -> Validation:
    """Check a prompt the way ComfyUI's /prompt does, VALIDATE_INPUTS included, without running anything.

    Args:
        prompt: an API prompt; links may name their node by a str or an int id.
        object_info: node definitions (built once for the job: they list the folders as they are now).
        classes: {class_type: node class}, for VALIDATE_INPUTS.
        targets: node ids (partial execution): validate only these output nodes and what they need.
    Returns:
        Validation(error, node_errors, outputs). `error` stays None while at least one output is valid (as in
        ComfyUI, which then runs those); else "invalid_prompt", "prompt_no_outputs" or
        "prompt_outputs_failed_validation".
    """
    error, node_errors = _malformed(prompt, object_info)
    if error is not None:
        return Validation(error, node_errors, [])
    outputs = output_nodes(prompt, object_info, targets)
    if not outputs:
        return Validation(_error("prompt_no_outputs", "Prompt has no outputs"), {}, [])
    walk, good = _Walk(prompt, object_info, classes), []
    for output in outputs:
        if walk.check(output):
            good.append(output)
            continue
        for nid, (ok, errors) in walk.validated.items():
            if not ok and errors:
                entry = node_errors.setdefault(nid, {"errors": errors, "dependent_outputs": [],
                                                     "class_type": prompt[nid]["class_type"]})
                if output not in entry["dependent_outputs"]:
                    entry["dependent_outputs"].append(output)
    if not good:
        lines = [f"{e['message']}: {e['details']}" for entry in node_errors.values() for e in entry["errors"]]
        error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", "\n".join(lines))
    return Validation(error, node_errors, good)
