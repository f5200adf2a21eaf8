"""An API prompt, {"<id>": {"class_type", "inputs", "_meta"?}}: what a link is, and the walks along links.

Every host module asks this one place whether an input value is a link and which node it comes from:

- `is_link([node_id, slot])`: node_id a str or an int (ComfyUI accepts both; `[1, 0]` and `["1", 0]` are the same
  link), slot an int (not a bool).
- `link_source(value)`: the linked node's id as the prompt's key, always a str.
- `ancestors`, `execution_order`: the nodes some nodes need, and an order that runs inputs first.
- `apply_overrides`: `ID.INPUT=VALUE` settings (`kinema run --set`, `kinema batch --set/--sweep`).

Plain Python on JSON-shaped dicts; no torch, no ComfyUI.
"""
from __future__ import annotations

from typing import Iterable

__all__ = ["GraphError", "node_error", "is_link", "link_source", "literal_inputs", "is_api_format", "output_nodes",
           "ancestors", "execution_order", "apply_overrides"]


class GraphError(ValueError):
    """A workflow that cannot be converted or ordered; the message names the node, its type, the input and the fix."""

    def __init__(self, message: str, node_id: str | None = None, class_type: str | None = None,
                 input_name: str | None = None):
        super().__init__(message)
        self.node_id = None if node_id is None else str(node_id)
        self.class_type = class_type
        self.input_name = input_name


def node_error(node_id, class_type, problem: str, fix: str, input_name: str | None = None) -> GraphError:
    """GraphError "node 3 (KSampler), input 'steps': <problem>. Fix: <fix>."."""
    where = f"node {node_id} ({class_type})" + (f", input '{input_name}'" if input_name else "")
    return GraphError(f"{where}: {problem}. Fix: {fix}.", node_id, class_type, input_name)


def is_link(value) -> bool:
    """An input wired to another node's output: [node id (str or int), output slot (int)]."""
    return (isinstance(value, list) and len(value) == 2
            and isinstance(value[0], (str, int)) and not isinstance(value[0], bool)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def link_source(value) -> str:
    """The id of the node a link comes from, as the prompt's key (a str): [1, 0] and ["1", 0] both give "1"."""
    return str(value[0])


def literal_inputs(node: dict) -> dict:
    """The node's widget values: its inputs that are not links."""
    return {k: v for k, v in (node.get("inputs") or {}).items() if not is_link(v)}


def is_api_format(data) -> bool:
    """True for an API prompt: a non-empty {id: {"class_type", ...}} mapping."""
    return (isinstance(data, dict) and bool(data)
            and all(isinstance(v, dict) and "class_type" in v for v in data.values()))


def output_nodes(prompt: dict, object_info: dict, targets=None) -> list[str]:
    """The prompt's output nodes (OUTPUT_NODE classes), all of them or those among `targets`, in prompt order."""
    wanted = None if targets is None else {str(t) for t in targets}
    return [nid for nid, node in prompt.items()
            if object_info[node["class_type"]].get("output_node") and (wanted is None or nid in wanted)]


def ancestors(prompt: dict, roots: Iterable[str]) -> set[str]:
    """`roots` and every node they link to, directly or not (ids not in the prompt are left out)."""
    seen, stack = set(), [str(r) for r in roots]
    while stack:
        nid = stack.pop()
        if nid in seen or nid not in prompt:
            continue
        seen.add(nid)
        stack.extend(link_source(v) for v in (prompt[nid].get("inputs") or {}).values() if is_link(v))
    return seen


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
            raise node_error(nid, node.get("class_type"), f"unknown node type '{node.get('class_type')}'",
                             "install the pack that provides it or remove the node")
    if targets is None:
        roots = output_nodes(prompt, object_info)
    else:
        roots = [str(t) for t in targets]
        for nid in roots:
            if nid not in prompt:
                raise GraphError(f"target node {nid} is not in the prompt. Fix: pass the id of an existing node.",
                                 nid)

    def sources(nid: str):
        for name, value in (prompt[nid].get("inputs") or {}).items():
            if is_link(value):
                if link_source(value) not in prompt:
                    raise node_error(nid, prompt[nid]["class_type"], f"linked node '{value[0]}' does not exist",
                                     "reconnect the input to an existing node", name)
                yield link_source(value)

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
                raise node_error(nid, prompt[nid]["class_type"], "dependency cycle through nodes "
                                 + " -> ".join(cycle), "remove one of the links in the cycle")
            elif source not in state:
                state[source] = 1
                stack.append((source, sources(source)))
    return order


def _typed(kind, raw: str):
    if not isinstance(kind, str):
        return raw                      # a dropdown: the value as written
    if kind == "BOOLEAN":
        return raw.lower() in ("1", "true", "yes")
    return {"INT": int, "FLOAT": float}.get(kind, str)(raw)


def apply_overrides(prompt: dict, sets: list[str], object_info: dict) -> None:
    """Apply `ID.INPUT=VALUE` overrides in place, typed by the node definition; errors name the node and the fix."""
    for item in sets:
        key, sep, raw = item.partition("=")
        nid, dot, name = key.partition(".")
        if not sep or not dot:
            raise GraphError(f"--set {item!r}: expected ID.INPUT=VALUE. Fix: e.g. --set 12.seed=7.")
        if nid not in prompt:
            raise GraphError(f"--set {item!r}: no node {nid} in the workflow. Fix: use one of "
                             f"{', '.join(sorted(prompt, key=str))}.", node_id=nid)
        ctype = prompt[nid]["class_type"]
        spec = object_info.get(ctype, {}).get("input", {})
        kinds = {**spec.get("required", {}), **spec.get("optional", {})}
        if name not in kinds:
            raise GraphError(f"--set {item!r}: node {nid} ({ctype}) has no input `{name}`. Fix: use one of "
                             f"{', '.join(kinds)}.", node_id=nid, class_type=ctype, input_name=name)
        kind = kinds[name][0]
        try:
            value = _typed(kind, raw)
        except ValueError:
            raise GraphError(f"--set {item!r}: node {nid} ({ctype}) input `{name}` takes {kind}, got {raw!r}. "
                             f"Fix: give a {kind} value.", node_id=nid, class_type=ctype, input_name=name) from None
        prompt[nid]["inputs"][name] = value
