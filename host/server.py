"""`kinema serve`: the official ComfyUI editor (PyPI `comfyui-frontend-package`) on Kinema's own ComfyUI-compatible API.

One aiohttp app: the frontend's static files, the HTTP routes frontend 1.58.1 calls (each under /api/... and, where
ComfyUI has both, without the prefix) and the /ws WebSocket. Graphs run one at a time in a worker thread through ONE
`Executor` kept for the server's life, so cached node outputs carry over between runs as in ComfyUI. Events from the
worker reach the event loop through one outbox queue, so every client sees them in order.

Safety: binds 127.0.0.1 by default; /view, uploads and userdata are confined to their folders (no `..`, absolute
paths, encoded separators, or symlinks leading outside); uploads are size-limited and type-checked by extension and
magic bytes; files the server writes (settings, userdata, uploads) are written to a temp file and renamed into place.
"""
from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import json
import logging
import mimetypes
import os
import platform
import re
import struct
import sys
import tempfile
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import WSMsgType, web

from ..nodes import _env
from . import graph
from .executor import Executor, Interrupted, NodeError, PromptInvalid, format_traceback

log = logging.getLogger("kinema.server")

FRONTEND_PACKAGE, FRONTEND_VERSION = "comfyui-frontend-package", "1.58.1"
MAX_UPLOAD_SIZE = 100 * 1024 * 1024          # bytes, as ComfyUI's default --max-upload-size 100 (MB)
MAX_JSON_BODY = 64 * 1024 * 1024             # prompts and saved workflows can be large
MAX_HISTORY = 1000
PREVIEW_MAX_SIZE = 512                       # px, longest side of a live preview frame
SENSITIVE_EXTRA = ("auth_token_comfy_org", "api_key_comfy_org")
FOLDER_TYPES = ("output", "input", "temp")
BIN_PREVIEW, BIN_PREVIEW_WITH_METADATA = 1, 4   # binary WebSocket event types
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}


def _riff(kind: bytes):
    return lambda head: head[:4] == b"RIFF" and head[8:12] == kind


def _mp3(head: bytes) -> bool:
    return head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)


_ISO_BMFF = lambda head: head[4:8] == b"ftyp"          # noqa: E731  (mp4, mov, m4a)
_EBML = lambda head: head[:4] == b"\x1a\x45\xdf\xa3"   # noqa: E731  (webm, mkv)
# extension -> magic-bytes check of the first 16 bytes
UPLOAD_TYPES = {
    ".png": lambda h: h[:8] == b"\x89PNG\r\n\x1a\n",
    ".jpg": lambda h: h[:3] == b"\xff\xd8\xff", ".jpeg": lambda h: h[:3] == b"\xff\xd8\xff",
    ".webp": _riff(b"WEBP"), ".gif": lambda h: h[:6] in (b"GIF87a", b"GIF89a"),
    ".wav": _riff(b"WAVE"), ".flac": lambda h: h[:4] == b"fLaC", ".ogg": lambda h: h[:4] == b"OggS",
    ".mp3": _mp3, ".mp4": _ISO_BMFF, ".mov": _ISO_BMFF, ".m4a": _ISO_BMFF, ".webm": _EBML,
}
# served inline by /view; anything else is sent as an attachment (no HTML/SVG/JS executing on our origin)
INLINE_TYPES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".wav", ".flac", ".ogg", ".mp3", ".mp4", ".mov",
                ".m4a", ".webm", ".json", ".txt"}
for _ext, _mime in ((".webp", "image/webp"), (".webm", "video/webm"), (".flac", "audio/flac"),
                    (".m4a", "audio/mp4"), (".mp3", "audio/mpeg"), (".ogg", "audio/ogg")):
    mimetypes.add_type(_mime, _ext)


# ---------------------------------------------------------------------------------------------------------------
# Paths: confinement and atomic writes
# ---------------------------------------------------------------------------------------------------------------
class Refused(Exception):
    """A request that names a path outside its folder, a bad name, or a bad upload; carries the HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|2e|25|00)", re.IGNORECASE)


def check_name(name: str, what: str = "filename") -> str:
    """One path component: refuses empty names, '.', '..', separators (plain or percent-encoded), drive letters and
    control characters with Refused(400)."""
    if not isinstance(name, str) or not name:
        raise Refused(400, f"{what} is empty")
    if name in (".", "..") or "/" in name or "\\" in name or _ENCODED_SEPARATOR.search(name) or \
            re.match(r"^[A-Za-z]:", name) or any(unicodedata.category(c) == "Cc" for c in name):
        raise Refused(400, f"{what} {name!r} is not a plain file name (no '..', separators or absolute paths)")
    return name


def check_subfolder(subfolder: str) -> list[str]:
    """A relative folder path ('', 'a', 'a/b'): every component must pass check_name; absolute paths are refused."""
    if not subfolder:
        return []
    if subfolder.startswith(("/", "\\")):
        raise Refused(400, f"subfolder {subfolder!r} is absolute; give a folder relative to the output/input folder")
    return [check_name(part, "subfolder") for part in subfolder.strip("/").split("/")]


def confined(base: Path, parts: list[str]) -> Path:
    """base/parts, resolved (symlinks followed); Refused(403) when the result leaves base."""
    root = base.resolve()
    target = root.joinpath(*parts).resolve()
    if target != root and not target.is_relative_to(root):
        raise Refused(403, "path leads outside its folder")
    return target


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file beside `path` and rename it into place: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sanitize_upload_name(name: str) -> str:
    """A safe file name from a client's: refuses paths, keeps letters, digits and ` ._-()[]+,@=`, replaces the rest
    with '_', drops leading dots (no hidden files) and keeps the name under 200 characters."""
    check_name(name)
    name = unicodedata.normalize("NFC", name)
    name = "".join(c if (c.isalnum() or c in " ._-()[]+,@=") else "_" for c in name).strip(" .")
    stem, ext = os.path.splitext(name)
    if len(name) > 200:
        name = stem[:200 - len(ext)] + ext
    if not stem or not name:
        raise Refused(400, "filename has no usable characters")
    return name


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Job:
    id: str
    number: float
    prompt: dict
    extra_data: dict
    client_id: str | None
    outputs_to_execute: list[str]
    create_time: int                                   # ms since the epoch
    status: str = "pending"                            # pending | in_progress | completed | failed | cancelled
    start_time: int | None = None
    end_time: int | None = None
    outputs: dict = field(default_factory=dict)        # node id -> ui dict
    messages: list = field(default_factory=list)       # [[event, data]] as ComfyUI's history status
    error: dict | None = None                          # the execution_error message
    executed: list = field(default_factory=list)       # node ids run or cached so far
    current_node: str | None = None
    node_states: dict = field(default_factory=dict)    # progress_state nodes

    def queue_item(self) -> list:
        return [self.number, self.id, self.prompt, self.extra_data, self.outputs_to_execute]

    def history_entry(self) -> dict:
        done = self.status == "completed"
        return {"prompt": self.queue_item(), "outputs": self.outputs,
                "status": {"status_str": "success" if done else "error", "completed": done,
                           "messages": self.messages},
                "meta": {nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
                         for nid in self.outputs}}

    def summary(self, detail: bool = False) -> dict:
        """The /api/jobs shape (frontend jobTypes.ts zRawJobListItem / zJobDetail)."""
        count, previewable, preview = _outputs_summary(self.outputs)
        job = {"id": self.id, "status": self.status, "priority": self.number, "create_time": self.create_time,
               "execution_start_time": self.start_time, "execution_end_time": self.end_time,
               "execution_error": self.error, "outputs_count": count, "previewable_outputs_count": previewable,
               "preview_output": preview,
               "workflow_id": ((self.extra_data.get("extra_pnginfo") or {}).get("workflow") or {}).get("id")}
        if detail:
            job.update(outputs=self.outputs, workflow={"prompt": self.prompt, "extra_data": self.extra_data},
                       execution_status=self.history_entry()["status"] if self.status != "pending" else None)
        return job


PREVIEWABLE = {"images", "video", "audio", "gifs", "3d", "text"}


def _outputs_summary(outputs: dict) -> tuple[int, int, dict | None]:
    """(outputs_count, previewable_outputs_count, preview_output): saved ("output") media first."""
    count = previewable = 0
    preview = fallback = None
    for nid, ui in outputs.items():
        for media, items in (ui or {}).items():
            if media == "animated" or not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict):
                    continue
                count += 1
                fmt = str(item.get("format", ""))
                if media in PREVIEWABLE or fmt.startswith(("video/", "audio/")):
                    previewable += 1
                    enriched = {**item, "nodeId": nid, "mediaType": item.get("mediaType", media)}
                    if item.get("type") == "output" and preview is None:
                        preview = enriched
                    elif fallback is None:
                        fallback = enriched
    return count, previewable, preview or fallback


def _ancestors(prompt: dict, roots: list[str]) -> set[str]:
    seen, stack = set(), list(roots)
    while stack:
        nid = stack.pop()
        if nid in seen or nid not in prompt:
            continue
        seen.add(nid)
        for value in (prompt[nid].get("inputs") or {}).values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                stack.append(str(value[0]))
    return seen


def _exception_type(exc: BaseException) -> str:
    module = type(exc).__module__
    return type(exc).__qualname__ if module == "builtins" else f"{module}.{type(exc).__qualname__}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _error_body(kind: str, message: str, details: str = "", node_errors: dict | None = None, **extra) -> dict:
    return {"error": {"type": kind, "message": message, "details": details, "extra_info": extra},
            "node_errors": node_errors or {}}


# ---------------------------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Client:
    ws: web.WebSocketResponse
    flags: dict = field(default_factory=dict)
    got_flags: bool = False


class KinemaServer:
    """State shared by the routes, the WebSocket clients and the worker thread."""

    def __init__(self, executor: Executor, user_dir: Path, static_dir: Path, max_upload_size: int):
        self.executor = executor
        self.display_names = {k: v.get("display_name", k) for k, v in executor.object_info.items()}
        self.user_root = Path(user_dir).resolve() / "default"
        self.static_dir = static_dir
        self.max_upload_size = max_upload_size
        self.features = {**SERVER_FEATURES, "max_upload_size": max_upload_size}
        self.clients: dict[str, _Client] = {}
        self.cond = threading.Condition()
        self.pending: list[Job] = []
        self.running: Job | None = None
        self.history: dict[str, Job] = {}
        self.counter = 0
        self.free_requested = False
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.outbox: asyncio.Queue | None = None
        self._threads: list[threading.Thread] = []
        self._dispatcher: asyncio.Task | None = None
        self._settings: dict | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------------
    async def start(self, app) -> None:
        self.loop = asyncio.get_running_loop()
        self.outbox = asyncio.Queue()
        self._dispatcher = asyncio.create_task(self._dispatch())
        worker = threading.Thread(target=self._worker, name="kinema-worker", daemon=True)
        worker.start()
        self._threads.append(worker)

    async def stop(self, app) -> None:
        with self.cond:
            self.stopping = True
            self.executor.interrupt_requested = True
            self.cond.notify_all()
        for client in list(self.clients.values()):
            await client.ws.close()
        if self._dispatcher:
            self._dispatcher.cancel()
        for t in self._threads:
            await asyncio.to_thread(t.join, 10)

    # ---- messages ------------------------------------------------------------------------------------------
    def post(self, kind: str, data, sid: str | None = None) -> None:
        """Queue a JSON message for one client (sid) or everyone (None); callable from any thread."""
        self._enqueue(("json", json.dumps({"type": kind, "data": data}, default=str), sid))

    def _enqueue(self, item) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self.outbox.put_nowait, item)
        except RuntimeError:        # loop shut down meanwhile
            pass

    async def _dispatch(self) -> None:
        while True:
            kind, payload, sid = await self.outbox.get()
            if sid is None:
                targets = list(self.clients.items())
            else:
                targets = [(sid, self.clients[sid])] if sid in self.clients else []
            for target_sid, client in targets:
                try:
                    if kind == "json":
                        await client.ws.send_str(payload)
                    elif kind == "preview":
                        await client.ws.send_bytes(self._preview_frame(client, *payload))
                except (ConnectionError, RuntimeError) as exc:
                    log.debug("dropping message to %s: %s", target_sid, exc)
                except Exception:   # one bad message must not stop the messages of every client
                    log.exception("message to %s failed", target_sid)

    @staticmethod
    def _preview_frame(client: _Client, image: bytes, metadata: dict) -> bytes:
        if client.flags.get("supports_preview_metadata"):
            meta = json.dumps(metadata).encode()
            return struct.pack(">II", BIN_PREVIEW_WITH_METADATA, len(meta)) + meta + image
        return struct.pack(">II", BIN_PREVIEW, 1) + image        # 1 = JPEG

    def queue_info(self) -> dict:
        with self.cond:
            return {"exec_info": {"queue_remaining": len(self.pending) + (self.running is not None)}}

    def broadcast_status(self) -> None:
        self.post("status", {"status": self.queue_info()})

    # ---- the worker thread ---------------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            with self.cond:
                while not self.pending and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                job = min(self.pending, key=lambda j: j.number)
                self.pending.remove(job)
                self.running = job
                job.status, job.start_time = "in_progress", _now_ms()
                free, self.free_requested = self.free_requested, False
            if free:
                self._free()
            self.broadcast_status()
            try:
                self._run(job)
            except Exception:       # never let the worker die: the next job must still run
                log.exception("job %s: unexpected server error", job.id)
                job.status = "failed"
            with self.cond:
                self.running = None
                self.history[job.id] = job
                while len(self.history) > MAX_HISTORY:
                    self.history.pop(next(iter(self.history)))
            self.broadcast_status()
            self.post("executing", {"node": None, "prompt_id": job.id}, job.client_id)

    def _free(self) -> None:
        self.executor.cache.clear()
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _run(self, job: Job) -> None:
        sid = job.client_id

        def set_state(nid: str, state: str, value=None, maximum=None):
            entry = job.node_states.setdefault(nid, {"value": 0, "max": 1, "state": state, "node_id": nid,
                                                     "prompt_id": job.id, "display_node_id": nid,
                                                     "parent_node_id": None, "real_node_id": nid})
            entry["state"] = state
            if value is not None:
                entry["value"], entry["max"] = value, maximum
            elif state == "finished":
                entry["value"] = entry["max"]

        def send_states():
            self.post("progress_state", {"prompt_id": job.id, "nodes": job.node_states}, sid)

        def on_event(kind: str, data: dict) -> None:
            if kind == "preview":
                self._send_preview(job, data)
                return
            if kind in ("execution_start", "execution_cached", "execution_success"):
                job.messages.append([kind, data])
            if kind == "execution_cached":
                job.executed.extend(data["nodes"])
                for nid in data["nodes"]:
                    set_state(nid, "finished")
            elif kind == "executing":
                if job.current_node is not None:
                    set_state(job.current_node, "finished")
                job.current_node = data["node"]
                job.executed.append(data["node"])
                set_state(data["node"], "running")
            elif kind == "progress":
                set_state(data["node"], "running", data["value"], data["max"])
            elif kind == "executed":
                job.outputs[data["node"]] = data["output"]
            elif kind == "execution_success" and job.current_node is not None:
                set_state(job.current_node, "finished")
                send_states()                   # before the end event: the editor resets its state on it
            self.post(kind, data, sid)
            if kind in ("executing", "progress"):
                send_states()

        try:
            # node lists (models/, input/) change while the server runs: fresh definitions for each job
            self.executor.object_info = graph.object_info(self.executor.classes, self.display_names)
            self.executor.run(job.prompt, job.id, on_event, job.extra_data)
            job.status = "completed"
        except Interrupted:
            job.status = "cancelled"
            node = job.current_node
            msg = {"prompt_id": job.id, "node_id": node, "node_type": self._class_of(job, node),
                   "executed": list(job.executed), "timestamp": _now_ms()}
            job.messages.append(["execution_interrupted", msg])
            self.post("execution_interrupted", msg, sid)
        except NodeError as exc:
            self._fail(job, exc.node_id, exc.class_type, exc.error)
        except PromptInvalid as exc:     # valid when queued, invalid now (e.g. a model folder was removed)
            nid = next(iter(exc.node_errors), None)
            self._fail(job, nid, self._class_of(job, nid), exc)
        except Exception as exc:         # a bug outside any node: still reported, the next job still runs
            self._fail(job, job.current_node, self._class_of(job, job.current_node), exc)
        finally:
            job.end_time = _now_ms()

    @staticmethod
    def _class_of(job: Job, nid: str | None) -> str:
        return job.prompt.get(nid, {}).get("class_type", "") if nid is not None else ""

    def _fail(self, job: Job, nid: str | None, class_type: str, error: BaseException) -> None:
        job.status = "failed"
        node = job.prompt.get(nid, {}) if nid is not None else {}
        inputs = {k: [v] for k, v in (node.get("inputs") or {}).items()
                  if not (isinstance(v, list) and len(v) == 2 and isinstance(v[1], int))}
        msg = {"prompt_id": job.id, "node_id": nid, "node_type": class_type, "executed": list(job.executed),
               "exception_message": str(error), "exception_type": _exception_type(error),
               "traceback": format_traceback(error), "current_inputs": inputs,
               "current_outputs": list(job.executed), "timestamp": _now_ms()}
        job.error = msg
        job.messages.append(["execution_error", msg])
        if nid is not None and nid in job.node_states:
            job.node_states[nid]["state"] = "error"
            self.post("progress_state", {"prompt_id": job.id, "nodes": job.node_states}, job.client_id)
        self.post("execution_error", msg, job.client_id)

    def _send_preview(self, job: Job, data: dict) -> None:
        image = data.get("image")
        if image is None:
            return
        try:
            image = image.convert("RGB")
            image.thumbnail((PREVIEW_MAX_SIZE, PREVIEW_MAX_SIZE))
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=90)
        except (AttributeError, OSError, ValueError) as exc:
            log.warning("preview of node %s could not be encoded: %s", data.get("node"), exc)
            return
        nid = data.get("node")
        metadata = {"node_id": nid, "prompt_id": job.id, "display_node_id": nid, "parent_node_id": None,
                    "real_node_id": nid, "image_type": "image/jpeg"}
        self._enqueue(("preview", (buf.getvalue(), metadata), job.client_id))

    # ---- queueing ------------------------------------------------------------------------------------------
    def object_info(self) -> dict:
        return graph.object_info(self.executor.classes, self.display_names)

    def enqueue(self, body: dict) -> tuple[int, dict]:
        """POST /prompt: (status, response body)."""
        prompt = body.get("prompt")
        if prompt is None:
            return 400, _error_body("no_prompt", "No prompt provided", "No prompt provided")
        info = self.object_info()
        targets = body.get("partial_execution_targets")
        if targets is not None and not (isinstance(targets, list) and all(isinstance(t, (str, int)) for t in targets)):
            return 400, _error_body("invalid_prompt", "partial_execution_targets must be a list of node ids",
                                    repr(targets))
        if not isinstance(body.get("extra_data") or {}, dict):
            return 400, _error_body("invalid_prompt", "extra_data must be an object", repr(body["extra_data"]))
        error, node_errors = graph.validate_prompt(prompt, info, targets)
        if error is not None:
            return 400, {"error": error, "node_errors": node_errors}
        # as ComfyUI: run the outputs that passed, report the others in node_errors (a 400 when none passed)
        outputs = [nid for nid, node in prompt.items() if info[node["class_type"]].get("output_node")
                   and (targets is None or nid in {str(t) for t in targets})
                   and nid not in node_errors and not any(nid in e["dependent_outputs"]
                                                          for e in node_errors.values())]
        outputs = self._custom_validation(prompt, outputs, node_errors)
        if not outputs:
            lines = "\n".join(f"{e['message']}: {e['details']}" for entry in node_errors.values()
                              for e in entry["errors"])
            return 400, _error_body("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                    lines, node_errors)
        keep = _ancestors(prompt, outputs)
        prompt = {nid: node for nid, node in prompt.items() if nid in keep}
        prompt_id = body.get("prompt_id") or str(uuid.uuid4())
        if not isinstance(prompt_id, str) or prompt_id in self.history or self._find(prompt_id):
            return 400, _error_body("invalid_prompt", "prompt_id must be a new string id", repr(prompt_id))
        extra = {k: v for k, v in (body.get("extra_data") or {}).items() if k not in SENSITIVE_EXTRA}
        client_id = body.get("client_id") or None
        with self.cond:
            self.counter += 1
            number = float(body["number"]) if isinstance(body.get("number"), (int, float)) else \
                (-self.counter if body.get("front") else self.counter)
            extra.update(client_id=client_id, create_time=_now_ms())
            job = Job(prompt_id, number, prompt, extra, client_id, outputs, extra["create_time"])
            self.pending.append(job)
            self.cond.notify_all()
        self.broadcast_status()
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": node_errors}

    def _custom_validation(self, prompt: dict, outputs: list[str], node_errors: dict) -> list[str]:
        """Call VALIDATE_INPUTS (as ComfyUI's /prompt does) of the nodes the outputs need, with their literal
        inputs; failures join node_errors. Returns the outputs still valid."""
        import inspect
        failed: set[str] = set()
        for nid in sorted(_ancestors(prompt, outputs)):
            node = prompt[nid]
            cls = self.executor.classes[node["class_type"]]
            check = getattr(cls, "VALIDATE_INPUTS", None)
            if check is None:
                continue
            literal = {k: v for k, v in (node.get("inputs") or {}).items()
                       if not (isinstance(v, list) and len(v) == 2 and isinstance(v[1], int))}
            params = inspect.signature(check).parameters
            if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
                if any(p.default is p.empty and p.kind != p.VAR_POSITIONAL and name not in literal
                       for name, p in params.items()):
                    continue            # it needs a linked value: checked when the node runs
                literal = {k: v for k, v in literal.items() if k in params}
            try:
                result = check(**literal)
            except Exception as exc:    # a validator that raises is a failed validation, reported with the node
                result = f"{type(exc).__name__}: {exc}"
            if result is True:
                continue
            failed.add(nid)
            extra = {"input_name": next(iter(literal))} if len(literal) == 1 else {}
            error = {"type": "custom_validation_failed", "message": "Custom validation failed for node",
                     "details": node["class_type"] + ("" if result is False else f" - {result}"), "extra_info": extra}
            entry = node_errors.setdefault(nid, {"errors": [], "dependent_outputs": [],
                                                 "class_type": node["class_type"]})
            entry["errors"].append(error)
        if not failed:
            return outputs
        still = []
        for out in outputs:
            broken = _ancestors(prompt, [out]) & failed
            for nid in broken:
                node_errors[nid]["dependent_outputs"].append(out)
            if not broken:
                still.append(out)
        return still

    def _find(self, prompt_id: str) -> Job | None:
        with self.cond:
            if self.running is not None and self.running.id == prompt_id:
                return self.running
            return next((j for j in self.pending if j.id == prompt_id), None) or self.history.get(prompt_id)

    def interrupt(self, prompt_id: str | None = None) -> bool:
        with self.cond:
            job = self.running
            if job is None or (prompt_id and prompt_id != job.id):
                return False
            self.executor.interrupt_requested = True
            return True

    def delete_pending(self, ids=None) -> int:
        with self.cond:
            before = len(self.pending)
            self.pending = [] if ids is None else [j for j in self.pending if j.id not in set(ids)]
            removed = before - len(self.pending)
        if removed:
            self.broadcast_status()
        return removed

    def all_jobs(self) -> list[Job]:
        with self.cond:
            return [*self.pending, *([self.running] if self.running else []), *self.history.values()]

    # ---- settings ------------------------------------------------------------------------------------------
    # Not stored: with it set, a browser with no open workflow starts on ComfyUI's default graph of core nodes,
    # which Kinema does not have (a "missing nodes" error); without it, on Kinema's templates (workflows/).
    UNSTORED_SETTINGS = frozenset({"Comfy.TutorialCompleted"})

    @property
    def settings_path(self) -> Path:
        return self.user_root / "comfy.settings.json"

    def settings(self) -> dict:
        if self._settings is None:
            try:
                loaded = json.loads(self.settings_path.read_text())
                self._settings = {k: v for k, v in loaded.items() if k not in self.UNSTORED_SETTINGS}
            except FileNotFoundError:
                self._settings = {}
            except (OSError, ValueError, AttributeError) as exc:
                log.warning("%s is unreadable (%s); starting from defaults", self.settings_path, exc)
                self._settings = {}
        return self._settings

    def save_settings(self, values: dict) -> None:
        merged = {**self.settings(), **{k: v for k, v in values.items() if k not in self.UNSTORED_SETTINGS}}
        atomic_write(self.settings_path, json.dumps(merged, indent=2).encode())
        self._settings = merged


# ---------------------------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------------------------
SERVER = web.AppKey("kinema_server", KinemaServer)
_ROUTES: list[tuple[str, str, object]] = []


def api(method: str, path: str, *, legacy: bool = True):
    """Register a handler under /api<path> and, as ComfyUI does, under <path>."""
    def wrap(handler):
        _ROUTES.append((method, "/api" + path, handler))
        if legacy:
            _ROUTES.append((method, path, handler))
        return handler
    return wrap


def _srv(request) -> KinemaServer:
    return request.app[SERVER]


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _read_json(request, default=None):
    """The JSON body, or Refused(400) naming the problem."""
    raw = await request.read()
    if not raw.strip():
        if default is not None:
            return default
        raise Refused(400, "empty request body; send JSON")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(400, f"request body is not valid JSON: {exc}") from None


@web.middleware
async def _refusals(request, handler):
    """Refused -> a 4xx with a JSON {"error"}; no-cache on the index and the API."""
    try:
        response = await handler(request)
    except Refused as exc:
        return _json_error(exc.status, str(exc))
    if request.path == "/" or request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-cache")
    return response


# ---- users, settings, userdata --------------------------------------------------------------------------------
@api("GET", "/users")
async def get_users(request):
    return web.json_response({"storage": "server", "migrated": True})      # single user: no login screen


@api("POST", "/users")
async def post_users(request):
    return _json_error(400, "Kinema's server has a single user; there is nothing to create.")


@api("GET", "/settings")
async def get_settings(request):
    return web.json_response(_srv(request).settings())


@api("POST", "/settings")
async def post_settings(request):
    values = await _read_json(request)
    if not isinstance(values, dict):
        raise Refused(400, "settings must be a JSON object of id -> value")
    _srv(request).save_settings(values)
    return web.Response(status=200)


@api("GET", "/settings/{id}")
async def get_setting(request):
    return web.json_response(_srv(request).settings().get(request.match_info["id"]))


@api("POST", "/settings/{id}")
async def post_setting(request):
    value = await _read_json(request)
    _srv(request).save_settings({request.match_info["id"]: value})
    return web.Response(status=200)


def _userdata_path(request, rel: str, must_exist: bool = False) -> Path:
    srv = _srv(request)
    parts = check_subfolder(rel)
    if not parts:
        raise Refused(400, "userdata path is empty")
    path = confined(srv.user_root, parts)
    if must_exist and not path.is_file():
        raise Refused(404, f"userdata file {rel!r} not found")
    return path


def _inside(path: Path, base: Path) -> bool:
    """True when path, with symlinks followed, stays inside base."""
    try:
        confined(base, list(path.relative_to(base).parts))
        return True
    except Refused:
        return False


def _file_info(path: Path, root: Path) -> dict:
    st = path.stat()
    return {"path": path.relative_to(root).as_posix(), "size": st.st_size, "modified": st.st_mtime,
            "created": st.st_ctime}


@api("GET", "/userdata")
async def list_userdata(request):
    srv = _srv(request)
    q = request.query
    directory = q.get("dir", "")
    if not directory:
        raise Refused(400, "give ?dir=<folder> (e.g. workflows)")
    base = confined(srv.user_root, check_subfolder(directory))
    if not base.is_dir():
        raise Refused(404, f"userdata folder {directory!r} does not exist")
    recurse, full, split = (q.get(k, "").lower() in ("true", "1") for k in ("recurse", "full_info", "split"))
    found = []
    for path in sorted(base.rglob("*") if recurse else base.glob("*")):
        rel = path.relative_to(base)
        if not path.is_file() or any(p.startswith(".") for p in rel.parts) or not _inside(path, base):
            continue
        if full:
            found.append(_file_info(path, base))
        elif split:
            found.append([rel.as_posix(), *rel.parts])
        else:
            found.append(rel.as_posix())
    return web.json_response(found)


@api("GET", "/userdata/{file}")
async def get_userdata(request):
    return web.FileResponse(_userdata_path(request, request.match_info["file"], must_exist=True))


def _flag(request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    return default if value is None else value.lower() in ("true", "1")


def _saved_response(request, path: Path) -> web.Response:
    root = _srv(request).user_root
    if _flag(request, "full_info", False):
        return web.json_response(_file_info(path, root))
    return web.json_response(path.relative_to(root).as_posix())


@api("POST", "/userdata/{file}")
async def post_userdata(request):
    path = _userdata_path(request, request.match_info["file"])
    if path.exists() and not _flag(request, "overwrite", True):
        raise Refused(409, f"{request.match_info['file']!r} exists; pass overwrite=true to replace it")
    if path.is_dir():
        raise Refused(409, "a folder of that name exists")
    atomic_write(path, await request.read())
    return _saved_response(request, path)


@api("DELETE", "/userdata/{file}")
async def delete_userdata(request):
    _userdata_path(request, request.match_info["file"], must_exist=True).unlink()
    return web.Response(status=204)


@api("POST", "/userdata/{file}/move/{dest}")
async def move_userdata(request):
    source = _userdata_path(request, request.match_info["file"], must_exist=True)
    dest = _userdata_path(request, request.match_info["dest"])
    if dest.exists() and not _flag(request, "overwrite", False):
        raise Refused(409, f"{request.match_info['dest']!r} exists; pass overwrite=true to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, dest)
    return _saved_response(request, dest)


# ---- node definitions and server facts ------------------------------------------------------------------------
@api("GET", "/extensions")
async def get_extensions(request):
    return web.json_response([])        # the frontend's core extensions are bundled; Kinema ships no web/ folder


@api("GET", "/object_info")
async def get_object_info(request):
    return web.json_response(await asyncio.to_thread(_srv(request).object_info))


@api("GET", "/object_info/{node_class}")
async def get_object_info_node(request):
    name = request.match_info["node_class"]
    info = await asyncio.to_thread(_srv(request).object_info)
    return web.json_response({name: info[name]} if name in info else {})


@api("GET", "/embeddings")
async def get_embeddings(request):
    return web.json_response([])


@api("GET", "/features")
async def get_features(request):
    return web.json_response(_srv(request).features)


@api("GET", "/i18n")
async def get_i18n(request):
    return web.json_response({})


WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "workflows"
TEMPLATE_MODULE = "kinema"


@api("GET", "/workflow_templates")
async def get_workflow_templates(request):
    """Kinema's workflows/*.json as the editor's custom-node templates (Templates -> kinema)."""
    names = sorted(p.stem for p in WORKFLOWS_DIR.glob("*.json") if not p.name.endswith(".expect.json"))
    return web.json_response({TEMPLATE_MODULE: names} if names else {})


@api("GET", "/workflow_templates/{module}/{name}")
async def get_workflow_template(request):
    if request.match_info["module"] != TEMPLATE_MODULE:
        raise Refused(404, "no such template module")
    path = confined(WORKFLOWS_DIR, [check_name(request.match_info["name"])])
    if path.suffix.lower() not in (".json", ".jpg", ".png", ".webp") or not path.is_file():  # + thumbnails
        raise Refused(404, "no such template")
    return web.FileResponse(path, headers={"Content-Type": mimetypes.guess_type(path.name)[0] or "text/plain"})


@api("GET", "/global_subgraphs")
async def get_global_subgraphs(request):
    return web.json_response({})


def _system_stats() -> dict:
    from importlib import metadata
    try:
        import psutil
        ram_total, ram_free = psutil.virtual_memory().total, psutil.virtual_memory().available
    except ImportError:
        ram_total = ram_free = 0
    import torch
    devices = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            devices.append({"name": f"cuda:{i} {torch.cuda.get_device_name(i)}", "type": "cuda", "index": i,
                            "vram_total": total, "vram_free": free, "torch_vram_total": total,
                            "torch_vram_free": free})
    else:
        devices.append({"name": "cpu", "type": "cpu", "index": None, "vram_total": ram_total,
                        "vram_free": ram_free, "torch_vram_total": 0, "torch_vram_free": 0})
    try:
        version = metadata.version("comfyui-kinema")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"system": {"os": sys.platform, "ram_total": ram_total, "ram_free": ram_free,
                       "comfyui_version": f"kinema-{version}", "required_frontend_version": FRONTEND_VERSION,
                       "python_version": sys.version, "pytorch_version": torch.__version__,
                       "embedded_python": False, "argv": sys.argv, "platform": platform.platform()},
            "devices": devices}


@api("GET", "/system_stats")
async def get_system_stats(request):
    return web.json_response(await asyncio.to_thread(_system_stats))


# ---- running graphs -------------------------------------------------------------------------------------------
@api("POST", "/prompt")
async def post_prompt(request):
    try:
        body = await _read_json(request)
    except Refused as exc:
        return web.json_response(_error_body("invalid_prompt", "Invalid request body", str(exc)), status=400)
    if not isinstance(body, dict):
        return web.json_response(_error_body("invalid_prompt", "Invalid request body",
                                             "the body must be a JSON object with a `prompt`"), status=400)
    status, response = await asyncio.to_thread(_srv(request).enqueue, body)
    return web.json_response(response, status=status)


@api("GET", "/prompt")
async def get_prompt(request):
    return web.json_response(_srv(request).queue_info())


@api("GET", "/queue")
async def get_queue(request):
    srv = _srv(request)
    with srv.cond:
        running = [srv.running.queue_item()] if srv.running else []
        pending = [j.queue_item() for j in sorted(srv.pending, key=lambda j: j.number)]
    return web.json_response({"queue_running": running, "queue_pending": pending})


@api("POST", "/queue")
async def post_queue(request):
    body = await _read_json(request, default={})
    srv = _srv(request)
    if not isinstance(body, dict):
        raise Refused(400, 'send {"clear": true} or {"delete": [ids]}')
    if body.get("clear"):
        srv.delete_pending()
    if isinstance(body.get("delete"), list):
        srv.delete_pending([str(i) for i in body["delete"]])
    return web.Response(status=200)


@api("GET", "/history")
async def get_history(request):
    srv = _srv(request)
    try:
        max_items = int(request.query["max_items"]) if "max_items" in request.query else None
        offset = int(request.query.get("offset", 0))
    except ValueError:
        raise Refused(400, "max_items and offset must be integers") from None
    with srv.cond:
        jobs = list(srv.history.values())          # oldest first
    if "offset" in request.query:
        jobs = jobs[offset:] if max_items is None else jobs[offset:offset + max_items]
    elif max_items is not None:
        jobs = jobs[max(len(jobs) - max_items, 0):] if max_items > 0 else []     # the latest max_items
    return web.json_response({j.id: j.history_entry() for j in jobs}, dumps=_dumps)


@api("GET", "/history/{prompt_id}")
async def get_history_item(request):
    srv = _srv(request)
    job = srv.history.get(request.match_info["prompt_id"])
    return web.json_response({job.id: job.history_entry()} if job else {}, dumps=_dumps)


@api("POST", "/history")
async def post_history(request):
    body = await _read_json(request, default={})
    srv = _srv(request)
    if not isinstance(body, dict):
        raise Refused(400, 'send {"clear": true} or {"delete": [ids]}')
    with srv.cond:
        if body.get("clear"):
            srv.history.clear()
        for pid in body.get("delete") or []:
            srv.history.pop(str(pid), None)
    return web.Response(status=200)


def _dumps(obj) -> str:
    return json.dumps(obj, default=str)


JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")


@api("GET", "/jobs")
async def get_jobs(request):
    q = request.query
    wanted = [s for s in q.get("status", "").split(",") if s] or list(JOB_STATUSES)
    if any(s not in JOB_STATUSES for s in wanted):
        raise Refused(400, f"status must be a comma list of {', '.join(JOB_STATUSES)}")
    try:
        limit = int(q["limit"]) if q.get("limit") else None
        offset = int(q.get("offset") or 0)
    except ValueError:
        raise Refused(400, "limit and offset must be integers") from None
    if (limit is not None and limit < 0) or offset < 0:
        raise Refused(400, "limit and offset must be >= 0")
    sort_by, order = q.get("sort_by", "create_time"), q.get("sort_order", "desc")
    jobs = [j.summary() for j in _srv(request).all_jobs() if j.status in wanted]
    if sort_by == "execution_duration":
        key = lambda j: (j["execution_end_time"] or 0) - (j["execution_start_time"] or 0)  # noqa: E731
    else:
        key = lambda j: j["create_time"]  # noqa: E731
    jobs.sort(key=key, reverse=order != "asc")
    total = len(jobs)
    page = jobs[offset:] if limit is None else jobs[offset:offset + limit]
    return web.json_response({"jobs": page, "pagination": {
        "offset": offset, "limit": limit if limit is not None else total, "total": total,
        "has_more": offset + len(page) < total}}, dumps=_dumps)


@api("GET", "/jobs/{job_id}")
async def get_job(request):
    job = _srv(request)._find(request.match_info["job_id"])
    if job is None:
        raise Refused(404, "job not found")
    return web.json_response(job.summary(detail=True), dumps=_dumps)


def _cancel(srv: KinemaServer, job_id: str) -> bool:
    """Cancel one job: interrupt it when running, drop it when pending; a finished job is left as it is."""
    job = srv._find(job_id)
    if job is None:
        return False
    if job.status == "in_progress":
        srv.interrupt(job_id)
    elif job.status == "pending":
        srv.delete_pending([job_id])
    return True


@api("POST", "/jobs/{job_id}/cancel")
async def cancel_job(request):
    if not _cancel(_srv(request), request.match_info["job_id"]):
        raise Refused(404, "job not found")
    return web.json_response({"id": request.match_info["job_id"], "cancelled": True})


@api("POST", "/jobs/cancel")
async def cancel_jobs(request):
    body = await _read_json(request)
    ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list):
        raise Refused(400, 'send {"job_ids": [ids]}')
    return web.json_response({"cancelled": [str(i) for i in ids if _cancel(_srv(request), str(i))]})


@api("POST", "/interrupt")
async def post_interrupt(request):
    body = await _read_json(request, default={})
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    _srv(request).interrupt(prompt_id)
    return web.Response(status=200)


@api("POST", "/free")
async def post_free(request):
    body = await _read_json(request, default={})
    srv = _srv(request)
    if isinstance(body, dict) and (body.get("unload_models") or body.get("free_memory")):
        with srv.cond:
            busy = srv.running is not None
            srv.free_requested = busy
        if not busy:
            await asyncio.to_thread(srv._free)
    return web.Response(status=200)


# ---- files ----------------------------------------------------------------------------------------------------
def _folder(kind: str | None) -> Path:
    kind = kind or "output"
    if kind not in FOLDER_TYPES:
        raise Refused(400, f"type must be one of {', '.join(FOLDER_TYPES)}, got {kind!r}")
    return {"output": _env.output_dir, "input": _env.input_dir, "temp": _env.temp_dir}[kind]()


@api("GET", "/view")
async def view(request):
    q = request.query
    name = check_name(q.get("filename", ""))
    parts = [*check_subfolder(q.get("subfolder", "")), name]
    kind = q.get("type") or "output"
    # inputs are looked up where the Load nodes look: the input folder, then e.g. the bundled workflows' assets
    bases = _env.input_search_dirs() if kind == "input" else [_folder(kind)]
    path = next((p for p in (confined(base, parts) for base in bases) if p.is_file()), None)
    if path is None:
        raise Refused(404, f"{name!r} not found")
    headers = {"X-Content-Type-Options": "nosniff"}
    quoted = name.replace('"', "")
    if path.suffix.lower() in INLINE_TYPES:
        headers["Content-Disposition"] = f'filename="{quoted}"'
        headers["Content-Type"] = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    else:
        headers.update({"Content-Disposition": f'attachment; filename="{quoted}"',
                        "Content-Type": "application/octet-stream"})
    return web.FileResponse(path, headers=headers)


async def _receive_upload(part, limit: int):
    """Stream one multipart file part into a spooled temp file; Refused(413) past the limit."""
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
    size = 0
    while chunk := await part.read_chunk(1 << 16):
        size += len(chunk)
        if size > limit:
            spool.close()
            raise Refused(413, f"upload is larger than the limit of {limit} bytes")
        spool.write(chunk)
    spool.seek(0)
    return spool, size


def _store_upload(spool, name: str, folder: Path, overwrite: bool) -> str:
    """Write the upload into folder atomically; without overwrite pick 'name (1).ext' (or reuse an identical
    file of the same name, as ComfyUI does). Returns the final name."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".upload.", suffix=".tmp", dir=folder)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in iter(lambda: spool.read(1 << 20), b""):
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, folder / name)
            return name
        stem, ext = os.path.splitext(name)
        for i in range(10000):
            candidate = name if i == 0 else f"{stem} ({i}){ext}"
            target = folder / candidate
            if target.exists():
                if target.is_file() and _file_sha256(target) == digest.hexdigest():
                    return candidate            # the same file is already there
                continue
            try:
                os.link(tmp, target)            # fails if the name was taken meanwhile: never overwrites
            except FileExistsError:
                continue
            except OSError:                     # a filesystem without hard links
                if target.exists():
                    continue
                os.replace(tmp, target)
            return candidate
        raise Refused(409, f"too many files named like {name!r}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@api("POST", "/upload/image")
async def upload_image(request):
    srv = _srv(request)
    if request.content_length is not None and request.content_length > srv.max_upload_size + (1 << 20):
        raise Refused(413, f"upload is larger than the limit of {srv.max_upload_size} bytes")
    if not request.content_type.startswith("multipart/"):
        raise Refused(400, "send multipart/form-data with an `image` file field")
    reader = await request.multipart()
    fields: dict[str, str] = {}
    spool, filename = None, None
    try:
        while (part := await reader.next()) is not None:
            if part.name == "image" and part.filename is not None:
                if spool is not None:
                    raise Refused(400, "send one `image` file per request")
                filename = part.filename
                spool, _ = await _receive_upload(part, srv.max_upload_size)
            elif part.name in ("type", "subfolder", "overwrite"):
                fields[part.name] = (await part.read(decode=True)).decode("utf-8", "replace")[:1000]
        if spool is None:
            raise Refused(400, "no `image` file field in the upload")
        name = sanitize_upload_name(filename or "")
        ext = os.path.splitext(name)[1].lower()
        head = spool.read(16)
        spool.seek(0)
        if ext not in UPLOAD_TYPES:
            raise Refused(415, f"{ext or 'no extension'} is not an accepted type; upload one of "
                               f"{', '.join(sorted(UPLOAD_TYPES))}")
        if not UPLOAD_TYPES[ext](head):
            raise Refused(415, f"the file's content is not {ext[1:].upper()} (its first bytes do not match)")
        kind = fields.get("type") or "input"
        subfolder = fields.get("subfolder", "")
        folder = confined(_folder(kind), check_subfolder(subfolder))
        overwrite = fields.get("overwrite", "").lower() in ("true", "1")
        final = await asyncio.to_thread(_store_upload, spool, name, folder, overwrite)
    finally:
        if spool is not None:
            spool.close()
    return web.json_response({"name": final, "subfolder": "/".join(check_subfolder(subfolder)), "type": kind})


# ---- WebSocket ------------------------------------------------------------------------------------------------
async def websocket(request):
    srv = _srv(request)
    ws = web.WebSocketResponse(max_msg_size=1 << 20)
    await ws.prepare(request)
    sid = request.query.get("clientId") or uuid.uuid4().hex
    client = _Client(ws)
    old = srv.clients.get(sid)
    srv.clients[sid] = client           # a reconnecting tab keeps its id and replaces the old socket
    if old is not None:
        await old.ws.close()
    try:
        srv.post("status", {"status": srv.queue_info(), "sid": sid}, sid)
        running = srv.running
        if running is not None and running.client_id == sid and running.current_node:
            srv.post("executing", {"node": running.current_node, "display_node": running.current_node,
                                   "prompt_id": running.id}, sid)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("type") == "feature_flags" and not client.got_flags:
                client.flags = data.get("data") if isinstance(data.get("data"), dict) else {}
                client.got_flags = True
                srv.post("feature_flags", srv.features, sid)
    finally:
        if srv.clients.get(sid) is client:
            del srv.clients[sid]
    return ws


# ---- static frontend ------------------------------------------------------------------------------------------
def frontend_dir() -> Path:
    """The static folder of the pinned comfyui-frontend-package; RuntimeError with the fix when missing."""
    try:
        import comfyui_frontend_package
    except ImportError:
        raise RuntimeError(f"the editor's files are not installed. Fix: pip install "
                           f"{FRONTEND_PACKAGE}=={FRONTEND_VERSION} (or pip install -e '.[server]').") from None
    from importlib import metadata
    try:
        installed = metadata.version(FRONTEND_PACKAGE)
    except metadata.PackageNotFoundError:
        installed = "unknown"
    if installed != FRONTEND_VERSION:
        log.warning("%s %s is installed; Kinema's server is tested with %s (pip install %s==%s)",
                    FRONTEND_PACKAGE, installed, FRONTEND_VERSION, FRONTEND_PACKAGE, FRONTEND_VERSION)
    static = Path(comfyui_frontend_package.__file__).parent / "static"
    if not (static / "index.html").is_file():
        raise RuntimeError(f"{static} has no index.html. Fix: pip install --force-reinstall "
                           f"{FRONTEND_PACKAGE}=={FRONTEND_VERSION}.")
    return static


async def index(request):
    return web.FileResponse(_srv(request).static_dir / "index.html", headers={"Cache-Control": "no-cache"})


async def templates_index(request):
    # the frontend's own template index (none here: Kinema's come from /api/workflow_templates) and logo index
    return web.json_response({} if request.match_info["name"] == "index_logo.json" else [])


# ---------------------------------------------------------------------------------------------------------------
# App factory and entry point
# ---------------------------------------------------------------------------------------------------------------
def default_user_dir() -> Path:
    env = os.environ.get("KINEMA_USER_DIR")
    return Path(env).expanduser().resolve() if env else _env.output_dir().parent / "user"


def make_app(executor: Executor | None = None, user_dir=None, max_upload_size: int = MAX_UPLOAD_SIZE,
             static_dir=None) -> web.Application:
    """The aiohttp app. executor: the one Executor for the server's life (default: every Kinema node); user_dir:
    where settings and userdata live (default: $KINEMA_USER_DIR or <output dir>/../user)."""
    if executor is None:
        from .. import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
        executor = Executor(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)
    static = Path(static_dir) if static_dir else frontend_dir()
    srv = KinemaServer(executor, Path(user_dir) if user_dir else default_user_dir(), static, max_upload_size)
    app = web.Application(client_max_size=MAX_JSON_BODY, middlewares=[_refusals])
    app[SERVER] = srv
    app.on_startup.append(srv.start)
    app.on_shutdown.append(srv.stop)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/", index)
    for method, path, handler in _ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_get("/templates/{name:index(_logo|\\.[a-z-]+)?\\.json}", templates_index)
    app.router.add_static("/", static, follow_symlinks=False)
    return app


def add_bundled_assets() -> None:
    """Let the bundled workflows find their example inputs (workflows/assets) after the input folder."""
    if (WORKFLOWS_DIR / "assets").is_dir():
        _env.add_input_search_dir(WORKFLOWS_DIR / "assets")


def serve(host: str = "127.0.0.1", port: int = 8188, user_dir=None) -> int:
    """Run the editor's server until Ctrl-C; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    add_bundled_assets()
    try:
        app = make_app(user_dir=user_dir)
    except RuntimeError as exc:
        print(f"kinema serve: {exc}", file=sys.stderr)
        return 1
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"kinema serve: listening on {host}: anyone who can reach this address can run graphs, read "
              f"outputs and upload files. Use --host 127.0.0.1 to keep it local.", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"Kinema: the ComfyUI editor {FRONTEND_VERSION} at http://{shown}:{port}/  (outputs in "
          f"{_env.output_dir()}, models in {_env.models_dir()}; Ctrl-C stops)", file=sys.stderr)
    try:
        web.run_app(app, host=host, port=port, print=None, access_log=None)
    except OSError as exc:
        print(f"kinema serve: cannot listen on {host}:{port}: {exc}. Fix: pick another --port.", file=sys.stderr)
        return 1
    return 0
