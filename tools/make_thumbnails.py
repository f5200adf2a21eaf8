"""Template thumbnails for the shipped workflows: workflows/<name>.jpg, beside <name>.json.

The ComfyUI frontend (1.58.1, useTemplateWorkflows.getTemplateThumbnailUrl) asks for a custom-node template's
picture at /api/workflow_templates/<module>/<name>.jpg, and ComfyUI serves a pack's workflows/ folder at that
address (app/custom_node_manager.py); `kinema serve` serves the same files (host/server.py). So the name must end in
.jpg whatever the picture is:
- a workflow that runs on the bundled Kinema-Tiny models gets its real result: the first frames of the clip it
  makes, as a small looping animated WebP (browsers decode an image by its content, not by its name);
- a workflow whose bundled models are random-weight fixtures (it makes noise) gets a JPEG card: its graph's layout
  and the model it needs. Noise is never shown as a result.

`python tools/make_workflows.py` calls write_thumbnails(): cards are redrawn every time (cheap, same bytes for the
same workflow); results are made only when missing, or all again with `--thumbnails` (runs each workflow with
`kinema run`, about 4 minutes on 2 CPU cores).
"""
from __future__ import annotations

import io
import json
import math
import sys
import tempfile
from pathlib import Path

WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "workflows"
SIZE = 192                    # px, the longer side of a result thumbnail
CARD = 256                    # px, a card's side
MAX_FRAMES = 16               # frames in a result thumbnail
TARGET_FPS = 12               # result thumbnails play at about this rate (every n-th frame of faster clips)
MAX_BYTES = 40_000            # what a thumbnail may weigh
# what each fixture stands in for (the loader's value -> the real model a user loads instead)
NEEDS = {"fixture-wan-t2v": "Wan 2.1 / 2.2 text-to-video", "fixture-wan-i2v": "Wan 2.1 image-to-video",
         "fixture-wan-vace": "Wan 2.1 VACE", "fixture-animatediff": "AnimateDiff (SD 1.5 + motion adapter)",
         "fixture-stable-audio": "Stable Audio Open 1.0", "fixture-ltx2": "LTX-2 (diffusers folder or checkpoint + Gemma)",
         "fixture-ltx2-upsampler": "the LTX-2 latent upsampler",
         "fixture_wan_t2v.safetensors": "Wan 2.1 files (diffusion model, UMT5, VAE)",
         "fixture-wan-lightx2v.safetensors": "a lightx2v 4-step LoRA"}
BG, PANEL, TEXT, MUTED, ACCENT = (20, 30, 70), (36, 48, 96), (240, 242, 250), (170, 180, 215), (255, 200, 40)


def thumbnail_path(name: str) -> Path:
    return WORKFLOWS_DIR / f"{name}.jpg"


def fixtures_used(ui: dict) -> list[str]:
    """The random-weight fixture models a UI workflow loads (widget values naming a fixture), in node order."""
    found = []
    for node in ui["nodes"]:
        for value in node.get("widgets_values") or []:
            if isinstance(value, str) and value.startswith("fixture") and value not in found:
                found.append(value)
    return found


# ---- results (Kinema-Tiny workflows) ----------------------------------------------------------------------------
def run_workflow(path: Path, work: Path) -> Path:
    """Run one workflow with `kinema run` (bundled models only) into `work`; the video file it saved (the output
    node named after the workflow when several save one)."""
    import contextlib
    from kinema.host import cli
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(["run", str(path), "--models-dir", str(work / "models"), "--output-dir", str(work / "output"),
                       "--input-dir", str(work / "input"), "--quiet"])
    if rc != 0:
        raise RuntimeError(f"`kinema run {path.name}` failed (exit {rc}); run it by hand to see why")
    outputs = json.loads(out.getvalue().strip().splitlines()[-1])
    files = [work / "output" / e["subfolder"] / e["filename"]
             for o in outputs.values() for e in o.get("images", [])]
    if not files:
        raise RuntimeError(f"{path.name} saved no video to make a thumbnail from")
    named = [f for f in files if f.name.startswith(path.stem + "_")]
    return (named or files)[0]


def _decode(video: Path, limit: int) -> tuple[list, float]:
    """(up to `limit` RGBA PIL frames, fps) from the start of a saved clip: mp4/webm with PyAV, webp/gif with
    Pillow (keeps alpha)."""
    from PIL import Image
    if video.suffix in (".webp", ".gif"):
        with Image.open(video) as im:
            frames = []
            for i in range(min(im.n_frames, limit)):
                im.seek(i)
                frames.append(im.convert("RGBA"))
            return frames, 1000 / (im.info.get("duration") or 125)
    import av
    with av.open(str(video)) as c:
        stream = c.streams.video[0]
        frames = []
        for f in c.decode(stream):
            frames.append(f.to_image().convert("RGBA"))
            if len(frames) >= limit:
                break
        return frames, float(stream.average_rate)


def first_frames(video: Path) -> tuple[list, float]:
    """(RGBA PIL frames, their fps) of the first frames of a saved clip: up to MAX_FRAMES, every n-th frame of
    clips faster than TARGET_FPS, each shrunk to SIZE px on its longer side."""
    from PIL import Image
    frames, fps = _decode(video, MAX_FRAMES * 4)
    step = max(1, round(fps / TARGET_FPS))
    frames = frames[::step][:MAX_FRAMES]
    w, h = frames[0].size
    k = SIZE / max(w, h)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    return [f.resize(size, Image.Resampling.LANCZOS) for f in frames], fps / step


def animated_webp(frames: list, fps: float) -> bytes:
    """A looping animated WebP of the frames, under MAX_BYTES (quality lowered until it fits)."""
    transparent = any(f.getextrema()[3][0] < 255 for f in frames)
    frames = frames if transparent else [f.convert("RGB") for f in frames]
    for quality in (70, 55, 40, 25):
        buf = io.BytesIO()
        frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0,
                       quality=quality, method=6)
        if buf.tell() <= MAX_BYTES:
            return buf.getvalue()
    raise RuntimeError(f"a {len(frames)}-frame thumbnail is over {MAX_BYTES} bytes even at quality 25")


# ---- cards (fixture workflows) ----------------------------------------------------------------------------------
def _font(size: int, bold: bool = False):
    from PIL import ImageFont
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF"):
        if (Path(folder) / name).is_file():
            return ImageFont.truetype(str(Path(folder) / name), size)
    return ImageFont.load_default(size)


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + ([line] if line else [])


def _draw_graph(draw, ui: dict, box: tuple[int, int, int, int]) -> None:
    """The workflow's nodes (not its notes) and links as boxes and lines, fitted into `box` (x0, y0, x1, y1)."""
    nodes = {n["id"]: n for n in ui["nodes"] if n["type"] != "Note"}
    x0 = min(n["pos"][0] for n in nodes.values())
    y0 = min(n["pos"][1] - 30 for n in nodes.values())
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes.values())
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes.values())
    k = min((box[2] - box[0]) / (x1 - x0), (box[3] - box[1]) / (y1 - y0))
    ox = box[0] + ((box[2] - box[0]) - (x1 - x0) * k) / 2
    oy = box[1] + ((box[3] - box[1]) - (y1 - y0) * k) / 2

    def at(x, y):
        return ox + (x - x0) * k, oy + (y - y0) * k

    for _, src, _, dst, _, _ in ui["links"]:
        a, b = nodes[src], nodes[dst]
        draw.line([at(a["pos"][0] + a["size"][0], a["pos"][1] + 10), at(b["pos"][0], b["pos"][1] + 10)],
                  fill=MUTED, width=1)
    for n in nodes.values():
        sx, sy = at(n["pos"][0], n["pos"][1] - 30)
        ex, ey = at(n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
        draw.rounded_rectangle([sx, sy, ex, ey], radius=2, fill=PANEL, outline=MUTED)
        draw.rectangle([sx, sy, ex, sy + max(2, 30 * k)], fill=(70, 84, 140))


def card(name: str, ui: dict) -> bytes:
    """A JPEG card: the workflow's name, the layout of its graph and the real model it needs (its bundled model
    is a random-weight fixture, so its output is noise and is not shown)."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (CARD, CARD), BG)
    d = ImageDraw.Draw(img)
    tag = _font(11, bold=True)          # top right: the editor puts its own "Node graph" badge top left
    d.text((CARD - 12 - d.textlength("NEEDS A MODEL", font=tag), 12), "NEEDS A MODEL", font=tag, fill=ACCENT)
    title = _font(17, bold=True)
    y = 40
    for line in _wrap(d, name.replace("_", " "), title, CARD - 24)[:2]:
        d.text((12, y), line, font=title, fill=TEXT)
        y += 21
    _draw_graph(d, ui, (12, y + 6, CARD - 12, 172))
    small = _font(12)
    y = 180
    needs = [NEEDS.get(f, f) for f in fixtures_used(ui)]
    for line in _wrap(d, "Load: " + "; ".join(needs), small, CARD - 24)[:3]:
        d.text((12, y), line, font=small, fill=TEXT)
        y += 15
    d.text((12, CARD - 20), "bundled test model: random weights", font=_font(10), fill=MUTED)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85, optimize=True)
    return buf.getvalue()


# ---- all of them ------------------------------------------------------------------------------------------------
def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_thumbnails(names: list[str], rerun: bool = False, log=print) -> None:
    """workflows/<name>.jpg for each name: a card for fixture workflows (always redrawn), the real first frames
    for the others (made when missing, or again when `rerun`)."""
    with tempfile.TemporaryDirectory(prefix="kinema-thumbs-") as tmp:
        for name in names:
            path, target = WORKFLOWS_DIR / f"{name}.json", thumbnail_path(name)
            ui = json.loads(path.read_text())
            if fixtures_used(ui):
                write_atomic(target, card(name, ui))
            elif rerun or not target.is_file():
                log(f"running {path.name} for its thumbnail")
                work = Path(tmp) / name
                for sub in ("models", "output", "input"):
                    (work / sub).mkdir(parents=True)
                frames, fps = first_frames(run_workflow(path, work))
                write_atomic(target, animated_webp(frames, fps))
            else:
                continue
            log(f"{target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    sys.path.insert(0, str(WORKFLOWS_DIR.parent))
    write_thumbnails(sorted(p.stem for p in WORKFLOWS_DIR.glob("*.json")), rerun="--rerun" in sys.argv)
