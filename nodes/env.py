"""Where the nodes find folders and report progress, in whichever host runs them.

Inside ComfyUI: `folder_paths` and `comfy.utils.ProgressBar`, imported lazily (never at import time).
In Kinema's own hosts (`kinema run`, `kinema serve`, `kinema batch`): the folders of the `Folders` object the host
runs the nodes under (`with env.using(folders): ...`), and the progress hook it installs for one node
(`with env.reporting(hook): ...`). Both live in context variables: nothing global to save and restore, a `with`
block undoes exactly what it set, and two threads (the server's job worker and its request handlers) each see
the folders they were given. Outside any `using` block the folders come from the environment (KINEMA_MODELS_DIR,
KINEMA_INPUT_DIR, KINEMA_OUTPUT_DIR, KINEMA_TEMP_DIR), defaulting to ./models, ./input, ./output and ./temp.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

# model kinds -> ComfyUI folder names searched (first the diffusers folders, then single files)
MODEL_FOLDERS = {
    "diffusers": ["diffusers"],
    "single_file": ["diffusion_models", "checkpoints", "unet"],
    "audio": ["audio_encoders", "diffusers"],
    "loras": ["loras"],
    # ComfyUI's own folders for the single files its users have (Load Video Model (Files) / (Checkpoint))
    "diffusion_models": ["diffusion_models", "unet"],
    "text_encoders": ["text_encoders", "clip"],
    "vae": ["vae"],
    "clip_vision": ["clip_vision"],
    "checkpoints": ["checkpoints"],
    "animatediff_models": ["animatediff_models"],
    "upscaler": ["diffusers", "latent_upscale_models"],     # learned upscaler folders (Load Upscale Model)
    "upscaler_files": ["latent_upscale_models"],            # single upsampler files (LTX-2's, Lightricks' layout)
    "vae_approx": ["vae_approx"],                           # tiny decoders (taew2_1...): previews, draft decodes
}
MODEL_SUFFIXES = (".safetensors",)      # what list_models(files=True) lists unless told otherwise

# models that ship inside the pack (Kinema-Tiny), searched after the user's folders so a user's own folder of the
# same name wins; the pack works out of the box with no model download
_TINY_WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "tiny" / "weights"
BUNDLED_FOLDERS = {"diffusers": [_TINY_WEIGHTS], "upscaler": [_TINY_WEIGHTS]}
# the shipped workflows' images, videos and sounds: inside ComfyUI searched after its input folder, so the templates
# run as opened (Kinema's own hosts search them already: `kinema run` the workflow's assets/, `kinema serve` these)
BUNDLED_INPUTS = Path(__file__).resolve().parents[1] / "workflows" / "assets"

HASH_LIMIT = 64 << 20      # files up to this size are hashed whole; larger ones by path, size and mtime


def _resolved(value, env_key: str, default: str) -> Path:
    if value is not None:
        return Path(value).expanduser().resolve()
    env = os.environ.get(env_key)
    return Path(env).expanduser().resolve() if env else Path(default).resolve()


@dataclass(frozen=True)
class Folders:
    """The folders Kinema's own hosts run the nodes with (inside ComfyUI, ComfyUI's folder_paths decide)."""
    models: Path
    input: Path
    output: Path
    temp: Path
    extra_inputs: tuple[Path, ...] = ()     # searched after `input`, e.g. a workflow's own assets/ folder

    @classmethod
    def of(cls, models=None, input=None, output=None, temp=None, extra_inputs=()) -> "Folders":
        """Folders from explicit values, else the KINEMA_*_DIR variables, else ./models, ./input, ./output, ./temp."""
        return cls(_resolved(models, "KINEMA_MODELS_DIR", "models"), _resolved(input, "KINEMA_INPUT_DIR", "input"),
                   _resolved(output, "KINEMA_OUTPUT_DIR", "output"), _resolved(temp, "KINEMA_TEMP_DIR", "temp"),
                   tuple(Path(p) for p in extra_inputs))

    def replace(self, **changes) -> "Folders":
        """A copy with some folders changed (values resolved like `of`)."""
        fixed = {k: (tuple(Path(p) for p in v) if k == "extra_inputs" else Path(v).expanduser().resolve())
                 for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **fixed)

    def searching(self, *folders) -> "Folders":
        """A copy that also searches `folders` for inputs (after the ones it has)."""
        extra = list(self.extra_inputs)
        extra += [Path(f) for f in folders if Path(f) not in extra]
        return dataclasses.replace(self, extra_inputs=tuple(extra))


@dataclass(frozen=True)
class Reporter:
    """The host's progress callback for the node that runs: progress(value, total, preview PIL image or None).
    previews=False when nobody looks at previews (headless runs), so the nodes skip making them."""
    progress: Callable[[int, int, object], None]
    previews: bool = True
    interrupt: Callable[[], None] | None = None     # raises the host's interrupt when stop was pressed


_FOLDERS: ContextVar[Folders | None] = ContextVar("kinema_folders", default=None)
_REPORTER: ContextVar[Reporter | None] = ContextVar("kinema_reporter", default=None)


def folders() -> Folders:
    """The folders in effect: the innermost `using` block's, else from the environment."""
    return _FOLDERS.get() or Folders.of()


@contextlib.contextmanager
def using(value: Folders) -> Iterator[Folders]:
    """Run the nodes inside the block with these folders; the previous ones are back after it."""
    token = _FOLDERS.set(value)
    try:
        yield value
    finally:
        _FOLDERS.reset(token)


@contextlib.contextmanager
def reporting(progress: Callable[[int, int, object], None] | None, previews: bool = True,
              interrupt: Callable[[], None] | None = None) -> Iterator[None]:
    """Send the nodes' step progress (and previews, when wanted) to `progress` inside the block; `interrupt`, when
    given, is checked inside a step too (between context windows)."""
    token = _REPORTER.set(None if progress is None else Reporter(progress, previews, interrupt))
    try:
        yield
    finally:
        _REPORTER.reset(token)


def _comfy(module: str):
    """Return a ComfyUI module if this process runs inside ComfyUI, else None. Never imports it elsewhere."""
    if "comfy" not in sys.modules and "folder_paths" not in sys.modules:
        return None
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def models_dir() -> Path:
    return folders().models


def input_dir() -> Path:
    fp = _comfy("folder_paths")
    return Path(fp.get_input_directory()) if fp else folders().input


def output_dir() -> Path:
    fp = _comfy("folder_paths")
    return Path(fp.get_output_directory()) if fp else folders().output


def temp_dir() -> Path:
    fp = _comfy("folder_paths")
    return Path(fp.get_temp_directory()) if fp else folders().temp


def input_search_dirs() -> list[Path]:
    """Where Load nodes look for a file, in order: the input folder, extra folders (a workflow's assets/), and
    inside ComfyUI the pack's bundled workflow assets last."""
    dirs = [input_dir(), *folders().extra_inputs]
    if _comfy("folder_paths") is not None and BUNDLED_INPUTS.is_dir() and BUNDLED_INPUTS not in dirs:
        dirs.append(BUNDLED_INPUTS)
    return dirs


def find_input(name: str) -> Path:
    """An input file by name: the input folder first, then extra folders. FileNotFoundError lists them, with the
    fix in the words of the host that runs (ComfyUI has no --input-dir)."""
    dirs = input_search_dirs()
    for d in dirs:
        p = (d / name)
        if p.is_file() and p.resolve().is_relative_to(d.resolve()):
            return p
    if _comfy("folder_paths") is not None:
        fix = (f"upload it with the node's upload button, or copy it into ComfyUI's input folder ({dirs[0]}; "
               f"ComfyUI's --input-directory moves it).")
    else:
        fix = ("copy it into the input folder (--input-dir or KINEMA_INPUT_DIR moves it), or upload it in the "
               "editor.")
    raise FileNotFoundError(f"input file {name!r} not found in: {', '.join(map(str, dirs))}. Fix: {fix}")


def model_search_dirs(kind: str) -> list[Path]:
    """Folders searched for a model kind, in order."""
    names = MODEL_FOLDERS[kind]
    fp = _comfy("folder_paths")
    dirs: list[Path] = []
    for name in names:
        if fp is not None:
            try:
                dirs += [Path(p) for p in fp.get_folder_paths(name)]
            except KeyError:
                pass
        else:
            dirs.append(models_dir() / name)
    return dirs + [d for d in BUNDLED_FOLDERS.get(kind, []) if d not in dirs]


def clip_tokenizer_dirs() -> list[Path]:
    """Where CLIP's tokenizer (vocab.json + merges.txt) for SD 1.5 checkpoints is looked for: `sd1_tokenizer` in
    each text_encoders folder, then, inside ComfyUI, ComfyUI's own comfy/sd1_tokenizer."""
    dirs = [d / "sd1_tokenizer" for d in model_search_dirs("text_encoders")]
    sd1 = _comfy("comfy.sd1_clip")
    if sd1 is not None:
        dirs.append(Path(sd1.__file__).resolve().parent / "sd1_tokenizer")
    return dirs


def list_models(kind: str, files: bool = False, suffixes: tuple[str, ...] = MODEL_SUFFIXES) -> list[str]:
    """Names for a dropdown: sub-folders (diffusers layout, containing model_index.json) or files with one of
    `suffixes` (default .safetensors; the denoiser of Load Video Model (Files) also lists .gguf). A folder whose
    model_index.json cannot be read as a JSON object is left out, with a warning naming it."""
    found: set[str] = set()
    for d in model_search_dirs(kind):
        if not d.is_dir():
            continue
        if files:
            found.update(p.relative_to(d).as_posix() for p in d.rglob("*")
                         if p.suffix.lower() in suffixes and p.is_file())
        else:
            found.update(p.parent.name for p in d.glob("*/model_index.json") if _readable_index(p))
    return sorted(found)


_WARNED: set = set()     # (path, mtime) of unreadable model_index.json files already reported


def _readable_index(path: Path) -> bool:
    """Whether a model_index.json reads as a JSON object; else log once (per file version) and return False."""
    import json
    import logging
    try:
        if isinstance(json.loads(path.read_text(encoding="utf-8")), dict):
            return True
        problem = "is not a JSON object"
    except (OSError, ValueError) as exc:        # unreadable, not UTF-8, not JSON
        problem = f"cannot be read ({type(exc).__name__}: {str(exc)[:200]})"
    try:
        key = (str(path), path.stat().st_mtime_ns)
    except OSError:
        key = (str(path), None)
    if key not in _WARNED:
        _WARNED.add(key)
        logging.getLogger("kinema").warning("model folder %s is not listed: %s %s. Fix: repair or remove that file.",
                                            path.parent, path, problem)
    return False


def find_model(kind: str, name: str, files: bool = False) -> Path:
    """Resolve a dropdown name to a path; FileNotFoundError lists the folders searched. A name is a path inside the
    model folders: absolute paths and '..' are refused (a name read from a file cannot point elsewhere)."""
    parts = Path(str(name)).parts
    if not parts or Path(str(name)).is_absolute() or ".." in parts or "\0" in str(name):
        raise FileNotFoundError(f"model {str(name)[:200]!r}: not a name inside the model folders (no absolute "
                                f"paths or '..'). Fix: give the folder's name as listed in models/diffusers.")
    dirs = model_search_dirs(kind)
    for d in dirs:
        p = d / name
        if (p.is_file() if files else (p / "model_index.json").is_file()):
            return p
    what = "file" if files else "diffusers folder (with model_index.json)"
    raise FileNotFoundError(
        f"model {name!r}: no {what} of that name in any of: {', '.join(str(d) for d in dirs) or '(no folders)'}. "
        f"Fix: put the model there, or point --models-dir / KINEMA_MODELS_DIR at the folder that holds "
        f"'{MODEL_FOLDERS[kind][0] if files else 'diffusers'}/{name}'. `kinema fixtures DIR` writes tiny test "
        f"models.")


def file_signature(resolve: Callable[[str], Path], name: str) -> str:
    """IS_CHANGED for a file input: the content hash (read in 1 MB blocks, never the whole file at once), or for a
    file over HASH_LIMIT its path, size and modification time; "missing:<name>" when it cannot be found."""
    import hashlib
    try:
        path = resolve(name)
    except FileNotFoundError:
        return f"missing:{name}"
    stat = path.stat()
    h = hashlib.sha256()
    if stat.st_size > HASH_LIMIT:
        h.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    else:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def file_problem(resolve: Callable[[str], Path], name: str) -> bool | str:
    """VALIDATE_INPUTS for a file input: True, or the not-found message (which names the folders and the fix)."""
    try:
        resolve(name)
    except FileNotFoundError as e:
        return str(e)
    return True


def interrupt_check() -> Callable[[], None] | None:
    """The host's stop check for work inside one step (models.interrupts): inside ComfyUI its
    throw_exception_if_processing_interrupted; in Kinema's hosts the reporter's `interrupt`, when it has one."""
    mm = _comfy("comfy.model_management")
    if mm is not None:
        return mm.throw_exception_if_processing_interrupted
    reporter = _REPORTER.get()
    return reporter.interrupt if reporter is not None else None


def _comfy_previews() -> tuple[bool, int]:
    """(whether ComfyUI sends previews, their size): its --preview-method ('none' means none) and --preview-size."""
    cli = _comfy("comfy.cli_args")
    args = getattr(cli, "args", None)
    method = getattr(args, "preview_method", "none")
    return str(getattr(method, "value", method)) != "none", int(getattr(args, "preview_size", 512) or 512)


class Progress:
    """Per-step progress with an optional preview image; raises the host's interrupt when the user pressed stop.
    Inside ComfyUI: its ProgressBar (the editor's bar; its hook raises the interrupt), a terminal bar unless
    ComfyUI disabled them, and previews only when its preview method is not 'none'."""

    def __init__(self, total: int):
        self.total = total
        self._bar = self._terminal = None
        self._reporter = _REPORTER.get()
        self._previews, self._preview_size = False, 512
        utils = _comfy("comfy.utils")
        if utils is not None:
            self._bar = utils.ProgressBar(total)
            self._previews, self._preview_size = _comfy_previews()
            if getattr(utils, "PROGRESS_BAR_ENABLED", False):
                from tqdm.auto import tqdm
                self._terminal = tqdm(total=total, desc="Kinema", leave=False)

    @property
    def wants_preview(self) -> bool:
        """Whether a preview image would be shown: inside ComfyUI when its preview method is not 'none', or when
        Kinema's host asked for previews (the editor server; not `kinema run` / `kinema batch`)."""
        if self._bar is not None:
            return self._previews
        return self._reporter is not None and self._reporter.previews

    def __call__(self, value: int, preview=None) -> None:
        if self._bar is not None:
            if self._terminal is not None:
                self._terminal.total = self.total
                self._terminal.update(max(0, min(value, self.total) - self._terminal.n))
                if value >= self.total:
                    self._terminal.close()
            send = preview if preview is not None and self._previews else None
            self._bar.update_absolute(value, self.total,
                                      ("JPEG", send, self._preview_size) if send is not None else None)
        elif self._reporter is not None:
            self._reporter.progress(value, self.total, preview)
