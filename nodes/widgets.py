"""What several node files share, defined once: widget specs (seed, fps, filename prefix), the file widgets'
values -> paths, what a saving node stores and returns, and the step progress a sampling node reports.

Widget specs are what the editor stores in saved workflows (input names, defaults, min / max / step): changing
one breaks the workflows people have saved. Tooltips may change.
"""
from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Callable

from . import env

MAX_SEED = 0xFFFFFFFFFFFFFFFF             # ComfyUI's seed range: any unsigned 64-bit integer
PREFIX_TIP = ("File name start inside the output folder; '/' makes sub-folders. Files are numbered "
              "prefix_00001_.ext and never overwritten; '..' is rejected.")
OUTPUT_TAG = " [output]"
# how the editor annotates a file value picked from another folder (after the mask editor, or copied from an
# output); a plain value, or one tagged " [input]", is looked up in the input folders
FOLDER_TAGS = {OUTPUT_TAG: env.output_dir, " [temp]": env.temp_dir}


# ---- widget specs ----------------------------------------------------------------------------------------------
def seed() -> tuple:
    """The `seed` widget of every sampling node."""
    return ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True, "tooltip":
                    "Noise seed. Same seed, inputs, settings, model, device, dtype and CPU threads: the same result, "
                    "bit for bit; other thread counts: frames within 0.001/255, sound within 1e-5 (README, "
                    "Reproducibility)."})


def fps(tooltip: str, default: float = 16.0, min: float = 0.01, max: float = 240.0) -> tuple:
    """An `fps` widget (frames per second, 0.01 steps) with the node's own tooltip, default and range."""
    return ("FLOAT", {"default": default, "min": min, "max": max, "step": 0.01, "tooltip": tooltip})


def video_fps() -> tuple:
    """The `fps` widget of the nodes that write a video file (Save Video, Preview Video, Decode And Save Video)."""
    return fps("Frames per second, kept exactly (16 for Wan, 8 for AnimateDiff). webp allows at most 90 and gif "
               "at most 50: browsers slow down shorter frame delays. The frame count is never changed.")


def filename_prefix(default: str) -> tuple:
    """The `filename_prefix` widget of a saving node."""
    return ("STRING", {"default": default, "tooltip": PREFIX_TIP})


# ---- file widgets ----------------------------------------------------------------------------------------------
def input_files(extensions) -> list[str]:
    """Dropdown values of a file widget: the files with these suffixes (lower case, with the dot) at the top of
    the input folders, hidden files left out, sorted."""
    return sorted({p.name for folder in env.input_search_dirs() if folder.is_dir()
                   for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in extensions})


def input_path(name: str, what: str = "file") -> Path:
    """A file widget's value -> the file: "x.png" or "sub/x.png" in the input folders, or annotated as the
    editor writes it: "x.png [input]", "x.png [output]", "x.png [temp]" (a tagged file must stay inside its
    folder). FileNotFoundError names `what`, the folder and the fix."""
    for tag, folder in FOLDER_TAGS.items():
        if name.endswith(tag):
            root = folder()
            path = root / name[:-len(tag)]
            if path.is_file() and path.resolve().is_relative_to(root.resolve()):
                return path
            raise FileNotFoundError(f"{what} {name!r} not found in {root}. Fix: pick another file.")
    return env.find_input(name.removesuffix(" [input]"))


def input_resolver(what: str) -> Callable[[str], Path]:
    """`input_path` for one kind of file, in the form env.file_signature / env.file_problem take."""
    return lambda name: input_path(name, what)


# ---- saving ----------------------------------------------------------------------------------------------------
def save_tags(prompt, extra_pnginfo) -> dict[str, str] | None:
    """The workflow a saved file carries, as ComfyUI's savers store it: {"prompt": JSON, and one JSON value per
    extra_pnginfo key (the editor's "workflow")}; None when the host passed neither."""
    tags = {"prompt": json.dumps(prompt)} if prompt is not None else {}
    tags.update({k: json.dumps(v) for k, v in (extra_pnginfo or {}).items()})
    return tags or None


def saved_entry(path: Path, root: Path, kind: str) -> dict:
    """The {filename, subfolder, type} entry that /view serves; kind is "output" or "temp"."""
    sub = path.parent.relative_to(root).as_posix()
    return {"filename": path.name, "subfolder": "" if sub == "." else sub, "type": kind}


def video_ui(entry: dict, fmt) -> dict:
    """The `ui` dict of a node that wrote a video (see nodes/media.py's docstring): a gif must not be flagged
    animated, or the frontend puts it in a <video> element, which cannot play it."""
    from ..models.media import VideoFormat
    return {"images": [entry], "animated": [fmt != VideoFormat.GIF]}


def preview_prefix() -> str:
    """A fresh file name start for a preview in the temp folder (several previews of one run never collide)."""
    return "KinemaPreview_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))


# ---- progress --------------------------------------------------------------------------------------------------
def _to_pil(frame):
    import numpy as np
    import PIL.Image
    return PIL.Image.fromarray((frame.clamp(0, 1).numpy() * 255).astype(np.uint8))


def step_progress(steps: int, model=None):
    """The loop's on_step(i, total, latents) for a node: progress per step; with `model`, also a live preview
    when the host shows previews: the first frame decoded by the user's tiny decoder (models/vae_approx) when one
    fits the model, else the family's cheap latent -> RGB map (see preview_frame)."""
    progress = env.Progress(steps)
    previewer: list = []                                   # chosen at the first preview, kept for the run

    def on_step(i, total, latents):
        progress.total = total
        wants = model is not None and progress.wants_preview
        if wants and not previewer:
            previewer.append(preview_frame(model))
        progress(i, _to_pil(previewer[0](latents)) if wants else None)

    return on_step


def preview_frame(model):
    """latents (1, C, f, h, w) -> one preview frame (H, W, 3) 0..1: the tiny decoder's first frame when the user
    has one for this model in a vae_approx folder, unless ComfyUI's preview method is latent2rgb; else the
    family's linear map (one pixel per latent cell)."""
    from ..models import taehv
    method = getattr(getattr(getattr(env._comfy("comfy.cli_args"), "args", None), "preview_method", None),
                     "value", None)
    if method != "latent2rgb":
        try:
            dec = taehv.for_model(model, env.model_search_dirs("vae_approx"))
        except ValueError:                                 # a file that fits by its keys but cannot be loaded
            dec = None
        if dec is not None:
            return lambda latents: next(dec.decode_chunks(latents[:1, :, :1].float(), chunk=1))[0]
    return lambda latents: model.preview(latents)[0]


def chunk_progress():
    """on_chunk(done, total) for a node that works in pieces (a learned upscaler): progress per piece."""
    progress = env.Progress(1)

    def on_chunk(done, total):
        progress.total = total
        progress(done)

    return on_chunk
