"""API prompt -> UI-format workflow (what the editor saves and opens), laid out left to right.

Used to write workflows/*.json from compact API prompts (workflows/make_workflows.py). The inverse of
ui_to_api.ui_to_api for graphs without subgraphs, primitives, reroutes or muted nodes.
"""
from __future__ import annotations

from collections import defaultdict

from .object_info import is_widget, ordered_inputs, spec_options
from .prompt import is_link, link_source

UPLOAD_KEYS = ("image_upload", "video_upload", "audio_upload")
# inputs that only the frontend fills (the audio player a node declares as "audioUI"): it draws them itself
FRONTEND_ONLY_TYPES = {"AUDIO_UI"}


def _depths(prompt: dict) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(nid: str) -> int:
        if nid not in depth:
            depth[nid] = 0
            ups = [link_source(v) for v in prompt[nid]["inputs"].values() if is_link(v)]
            depth[nid] = 1 + max((visit(u) for u in ups), default=-1)
        return depth[nid]

    for nid in prompt:
        visit(nid)
    return depth


def _slots(node: dict, info: dict) -> tuple[list[dict], list]:
    """(inputs, widgets_values) of one node as the editor stores them; an input's "_src" is its API value."""
    inputs, widgets, upload = [], [], False
    for name, spec, _ in ordered_inputs(info):
        value = node["inputs"].get(name)
        if isinstance(spec[0], str) and spec[0] in FRONTEND_ONLY_TYPES:
            continue
        if not is_widget(spec):
            inputs.append({"name": name, "type": spec[0], "link": None, "_src": value})
            continue
        opts = spec_options(spec)
        if is_link(value):                      # a widget fed by a link: a widget input, the default kept
            inputs.append({"name": name, "type": spec[0] if isinstance(spec[0], str) else "COMBO",
                           "widget": {"name": name}, "link": None, "_src": value})
            value = opts.get("default")
        widgets.append(value if value is not None else opts.get("default"))
        if opts.get("control_after_generate") or name in ("seed", "noise_seed"):
            widgets.append("fixed")
        upload = upload or any(opts.get(k) for k in UPLOAD_KEYS)
    if upload:                   # the frontend stores the upload button's value after all the node's widgets
        widgets.append("image")
    return inputs, widgets


def _wire(nid: str, inputs: list[dict], links: list, out_links: dict) -> None:
    """Give each linked input of node `nid` a UI link [id, origin, slot, target, target slot, type]."""
    for slot, inp in enumerate(inputs):
        src = inp.pop("_src")
        if is_link(src):
            link_id = len(links) + 1
            links.append([link_id, int(src[0]), src[1], int(nid), slot, inp["type"]])
            inp["link"] = link_id
            out_links[(link_source(src), src[1])].append(link_id)


def api_to_ui(prompt: dict, object_info: dict, notes: list[str] | None = None) -> dict:
    """Convert an API prompt to a UI-format (version 0.4) workflow. `notes` become Note nodes on the left."""
    depth = _depths(prompt)
    columns: dict[int, list[str]] = defaultdict(list)
    for nid in sorted(prompt, key=lambda n: (depth[n], int(n) if n.isdigit() else n)):
        columns[depth[nid]].append(nid)
    nodes, links = [], []
    out_links: dict[tuple[str, int], list[int]] = defaultdict(list)
    for col in sorted(columns):
        y = 40
        for nid in columns[col]:
            node = prompt[nid]
            info = object_info[node["class_type"]]
            inputs, widgets = _slots(node, info)
            _wire(nid, inputs, links, out_links)
            height = 60 + 26 * (len(inputs) + len(widgets))
            ui_node = {"id": int(nid), "type": node["class_type"], "pos": [40 + 380 * col, y],
                       "size": [340, height], "flags": {}, "order": len(nodes), "mode": 0, "inputs": inputs,
                       "outputs": [], "properties": {"Node name for S&R": node["class_type"]},
                       "widgets_values": widgets}
            title = node.get("_meta", {}).get("title")
            if title and title != info.get("display_name"):
                ui_node["title"] = title
            nodes.append(ui_node)
            y += height + 40
    for ui_node in nodes:
        info = object_info[ui_node["type"]]
        ui_node["outputs"] = [{"name": name, "type": kind, "slot_index": i,
                               "links": out_links.get((str(ui_node["id"]), i), [])}
                              for i, (name, kind) in enumerate(zip(info["output_name"], info["output"]))]
    next_id = max((int(n) for n in prompt if n.isdigit()), default=0) + 1
    order = len(nodes)
    for i, text in enumerate(notes or []):
        nodes.append({"id": next_id + i, "type": "Note", "pos": [40, -220 - 200 * i], "size": [420, 160],
                      "flags": {}, "order": order + i, "mode": 0, "inputs": [], "outputs": [],
                      "properties": {}, "widgets_values": [text]})
    return {"last_node_id": max([n["id"] for n in nodes], default=0), "last_link_id": len(links),
            "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}
