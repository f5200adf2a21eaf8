"""API prompt -> UI-format workflow (what the editor saves and opens), laid out left to right.

Used to write workflows/*.json from compact API prompts (workflows/make_workflows.py). The inverse of
ui_to_api.ui_to_api for graphs without subgraphs, primitives, reroutes or muted nodes.
"""
from __future__ import annotations

from collections import defaultdict

from .prompt import is_link, link_source

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_KEYS = ("image_upload", "video_upload", "audio_upload")
# inputs that only the frontend fills (the audio player a node declares as "audioUI"): it draws them itself
FRONTEND_ONLY_TYPES = {"AUDIO_UI"}


def is_widget(spec) -> bool:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput", False)


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


def api_to_ui(prompt: dict, object_info: dict, notes: list[str] | None = None) -> dict:
    """Convert an API prompt to a UI-format (version 0.4) workflow. `notes` become Note nodes on the left."""
    depth = _depths(prompt)
    columns: dict[int, list[str]] = defaultdict(list)
    for nid in sorted(prompt, key=lambda n: (depth[n], int(n) if n.isdigit() else n)):
        columns[depth[nid]].append(nid)
    nodes, links = [], []
    out_links: dict[tuple[str, int], list[int]] = defaultdict(list)
    ids = [int(n) for n in prompt if n.isdigit()]
    next_id = max(ids, default=0) + 1
    order = 0
    for col in sorted(columns):
        y = 40
        for nid in columns[col]:
            node = prompt[nid]
            info = object_info[node["class_type"]]
            spec = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
            names = info["input_order"].get("required", []) + info["input_order"].get("optional", [])
            inputs, widgets, upload = [], [], False
            for name in names:
                value = node["inputs"].get(name)
                s = spec[name]
                if isinstance(s[0], str) and s[0] in FRONTEND_ONLY_TYPES:
                    continue
                if is_widget(s):
                    opts = s[1] if len(s) > 1 else {}
                    if is_link(value):
                        inputs.append({"name": name, "type": s[0] if isinstance(s[0], str) else "COMBO",
                                       "widget": {"name": name}, "link": None, "_src": value})
                        value = opts.get("default")
                    widgets.append(value if value is not None else opts.get("default"))
                    if opts.get("control_after_generate") or name in ("seed", "noise_seed"):
                        widgets.append("fixed")
                    upload = upload or any(opts.get(k) for k in UPLOAD_KEYS)
                else:
                    inputs.append({"name": name, "type": s[0], "link": None, "_src": value})
            if upload:               # the frontend stores the upload button's value after all the node's widgets
                widgets.append("image")
            for inp in inputs:
                src = inp.pop("_src")
                if is_link(src):
                    link_id = len(links) + 1
                    slot = [i for i, i2 in enumerate(inputs) if i2 is inp][0]
                    links.append([link_id, int(src[0]), src[1], int(nid), slot, inp["type"]])
                    inp["link"] = link_id
                    out_links[(link_source(src), src[1])].append(link_id)
            height = 60 + 26 * (len(inputs) + len(widgets))
            ui_node = {"id": int(nid), "type": node["class_type"], "pos": [40 + 380 * col, y],
                       "size": [340, height], "flags": {}, "order": order, "mode": 0, "inputs": inputs,
                       "outputs": [], "properties": {"Node name for S&R": node["class_type"]},
                       "widgets_values": widgets}
            title = node.get("_meta", {}).get("title")
            if title and title != info.get("display_name"):
                ui_node["title"] = title
            nodes.append(ui_node)
            order += 1
            y += height + 40
    for ui_node in nodes:
        info = object_info[ui_node["type"]]
        ui_node["outputs"] = [{"name": name, "type": kind, "slot_index": i,
                               "links": out_links.get((str(ui_node["id"]), i), [])}
                              for i, (name, kind) in enumerate(zip(info["output_name"], info["output"]))]
    for i, text in enumerate(notes or []):
        nodes.append({"id": next_id + i, "type": "Note", "pos": [40, -220 - 200 * i], "size": [420, 160],
                      "flags": {}, "order": order + i, "mode": 0, "inputs": [], "outputs": [],
                      "properties": {}, "widgets_values": [text]})
    return {"last_node_id": max([n["id"] for n in nodes], default=0), "last_link_id": len(links),
            "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}
