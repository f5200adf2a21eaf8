"""Layout pass for the shipped workflows (called by tools/make_workflows.py after host.builder.api_to_ui): node
sizes that leave room for what the editor draws inside a node (image and video previews, audio players, prompt
boxes), columns with room for each node's title bar, the notes in a row above the graph, and a stored view
(`extra.ds`) that shows the whole graph in a 1400x900 browser window.

Only positions, sizes and extra.ds change: node ids, widget values and links stay as api_to_ui made them, so the
API prompt the editor sends is the same. Sizes are in graph units (LiteGraph's canvas pixels at scale 1); a node's
title bar (TITLE px) is drawn above its `pos`.
"""
from __future__ import annotations

from collections import defaultdict

TITLE = 30                    # LiteGraph's title bar, drawn above node.pos
SLOT, WIDGET = 22, 26         # one input/output row, one widget row
NODE_W, NOTE_W, NOTE_H = 320, 500, 200
COL_GAP, ROW_GAP = 50, 40     # free space between columns / between stacked nodes (title bars not counted)
PREVIEW_IMAGE = 300           # a Load Image's picture (fitted into the node's width)
PREVIEW_VIDEO = 360           # a saved clip's player (a square clip at NODE_W wide, plus its controls)
AUDIO_PLAYER = 70             # the <audio> element of Load/Save Audio
LIVE_PREVIEW = 240            # a sampler's live preview of the frames being denoised
VIDEO_NODE_W = 480            # Load Video's player asks for this width (the frontend's minimum for it)
MULTILINE = 90                # a multiline prompt box beyond its one widget row
# the window the stored view fits (the ComfyUI editor in a 1400x900 browser window), less the editor's own chrome:
# the left sidebar, the tab bar and floating run bar at the top, and a margin at the right and bottom
WINDOW_W, WINDOW_H = 1400, 900
CHROME_LEFT, CHROME_TOP, CHROME_RIGHT, CHROME_BOTTOM = 80, 120, 30, 50
MINIMAP = (1120, 620)         # the minimap's top left corner (it fills the window's bottom right corner)


def _extra_height(info: dict) -> int:
    """Room for what the frontend renders inside a node of this type beyond its slot and widget rows (px)."""
    specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    opts = [s[1] if len(s) > 1 and isinstance(s[1], dict) else {} for s in specs.values()]
    extra = sum(MULTILINE for s, o in zip(specs.values(), opts) if s[0] == "STRING" and o.get("multiline"))
    if any(o.get("image_upload") for o in opts):
        extra += PREVIEW_IMAGE
    if any(o.get("video_upload") for o in opts):
        extra += PREVIEW_VIDEO + 160                # Load Video's player at VIDEO_NODE_W, its frame controls
    audio = any(o.get("audio_upload") for o in opts) or any(s[0] == "AUDIO_UI" for s in specs.values())
    if audio:
        extra += AUDIO_PLAYER
    elif info.get("output_node"):
        extra += PREVIEW_VIDEO                      # Save/Preview Video: the result plays inside the node
    if "steps" in specs and {"LATENT", "IMAGE"} & set(info["output"]):
        extra += LIVE_PREVIEW                       # a denoising loop: previews arrive while it runs
    return extra


def node_size(node: dict, info: dict) -> list[int]:
    """[width, height] of a node (title bar excluded) with room for its slots, widgets and previews."""
    rows = max(sum(1 for i in node["inputs"] if not i.get("widget")), len(node["outputs"]))
    widgets = len(node["widgets_values"])   # each widget, a seed's control_after_generate, an upload button
    specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    wide = any(len(s) > 1 and isinstance(s[1], dict) and s[1].get("video_upload") for s in specs.values())
    return [VIDEO_NODE_W if wide else NODE_W, 16 + SLOT * rows + WIDGET * widgets + _extra_height(info)]


def _columns(ui: dict) -> dict[int, list[dict]]:
    """The graph's nodes (notes excluded) by column: api_to_ui put each node's column in pos[0]."""
    cols: dict[int, list[dict]] = defaultdict(list)
    for node in ui["nodes"]:
        if node["type"] != "Note":
            cols[node["pos"][0]].append(node)
    return {i: sorted(cols[x], key=lambda n: n["pos"][1]) for i, x in enumerate(sorted(cols))}


def _fit(nodes: list[dict], free_w: float, free_h: float) -> dict:
    """extra.ds that centres the nodes' bounds (title bars included) in a free_w x free_h area at the window's
    top left free corner, scale at most 1. Screen = (graph + offset) * scale."""
    x0 = min(n["pos"][0] for n in nodes)
    y0 = min(n["pos"][1] - TITLE for n in nodes)
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes)
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes)
    scale = min(1.0, free_w / (x1 - x0), free_h / (y1 - y0))
    scale = int(scale * 1000) / 1000                                  # rounded down: never a pixel too big
    left = CHROME_LEFT + (free_w - (x1 - x0) * scale) / 2
    top = CHROME_TOP + (free_h - (y1 - y0) * scale) / 2
    return {"scale": scale, "offset": [round(left / scale - x0, 1), round(top / scale - y0, 1)]}


def _under_minimap(nodes: list[dict], ds: dict) -> bool:
    s, (ox, oy) = ds["scale"], ds["offset"]
    return any((n["pos"][0] + n["size"][0] + ox) * s > MINIMAP[0] and (n["pos"][1] + n["size"][1] + oy) * s > MINIMAP[1]
               for n in nodes)


def fit_view(nodes: list[dict]) -> dict:
    """extra.ds {scale, offset} that shows every node inside the editor's free area of a WINDOW_W x WINDOW_H
    window, none under the minimap in its bottom right corner, as large as that allows (at most 1)."""
    free_w = WINDOW_W - CHROME_LEFT - CHROME_RIGHT
    free_h = WINDOW_H - CHROME_TOP - CHROME_BOTTOM
    fits = [_fit(nodes, w, h) for w, h in ((free_w, free_h), (MINIMAP[0] - CHROME_LEFT - 10, free_h),
                                           (free_w, MINIMAP[1] - CHROME_TOP - 10))]
    return max((ds for ds in fits if not _under_minimap(nodes, ds)), key=lambda ds: ds["scale"])


def _height(nodes: list[dict]) -> int:
    return sum(n["size"][1] + TITLE + ROW_GAP for n in nodes) - ROW_GAP


def _merge(columns: list[list[dict]], limit: float) -> list[list[dict]]:
    """Stack a column under the one before it while the pair stays no taller than `limit`: a chain of short
    nodes (decode, resize, key) then takes one column instead of several (same order, narrower graph)."""
    merged = [list(columns[0])]
    for nodes in columns[1:]:
        if _height(merged[-1] + nodes) <= limit:
            merged[-1].extend(nodes)
        else:
            merged.append(list(nodes))
    return merged


def opened_scale(nodes: list[dict]) -> float:
    """The zoom the editor picks when it opens the graph from its template browser (it ignores extra.ds there and
    fits the nodes' bounds, padded 10 px, into 75 % of the window: LGraphCanvas.ds.fitToBounds)."""
    x0 = min(n["pos"][0] for n in nodes) - 10
    y0 = min(n["pos"][1] - TITLE for n in nodes) - 10
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes) + 10
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes) + 10
    return 0.75 * min(WINDOW_W / (x1 - x0), WINDOW_H / (y1 - y0))


def _place(columns: list[list[dict]], per_row: int) -> None:
    """Put the columns left to right, `per_row` to a row, rows one under another; nodes stacked in each column."""
    top = TITLE
    for start in range(0, len(columns), per_row):
        x, bottom = 0, top
        for nodes in columns[start:start + per_row]:
            y = top
            for node in nodes:
                node["pos"] = [x, y]
                y += node["size"][1] + TITLE + ROW_GAP
            bottom = max(bottom, y)
            x += max(n["size"][0] for n in nodes) + COL_GAP
        top = bottom + ROW_GAP


def _place_notes(notes: list[dict], above: bool) -> None:
    for i, note in enumerate(notes):
        note["size"] = [NOTE_W, NOTE_H]
        note["pos"] = ([i * (NOTE_W + COL_GAP), -(NOTE_H + ROW_GAP)] if above else
                       [-(NOTE_W + COL_GAP), TITLE + i * (NOTE_H + TITLE + ROW_GAP)])


def layout(ui: dict, object_info: dict) -> dict:
    """Size and place the nodes of a UI workflow made by api_to_ui (in place; also returned): columns left to
    right in dependency order (wrapped into rows when that shows the graph larger), nodes stacked with their title
    bars clear of the node above, notes in a row above the graph, and extra.ds fitted to the whole graph."""
    columns = [nodes for _, nodes in sorted(_columns(ui).items())]
    for nodes in columns:
        for node in nodes:
            node["size"] = node_size(node, object_info[node["type"]])
    notes = [n for n in ui["nodes"] if n["type"] == "Note"]
    tallest = max(_height(c) for c in columns)
    best = None
    for above in (True, False):                     # notes in a row above the graph, or a column left of it
        _place_notes(notes, above)
        for limit in (tallest * f for f in (1, 1.25, 1.5, 2, 2.5, 3)):      # the most legible arrangement
            merged = _merge(columns, limit)
            for per_row in range(len(merged), 0, -1):
                _place(merged, per_row)
                scale = opened_scale(ui["nodes"])
                if best is None or scale > best[0] + 0.01:
                    best = (scale, above, merged, per_row)
    _place_notes(notes, best[1])
    _place(best[2], best[3])
    ui["extra"]["ds"] = fit_view(ui["nodes"])
    return ui
