"""The job queue of `kinema serve`: prompts waiting, the one running, the finished ones, and the worker thread.

Graphs run one at a time in a worker thread through ONE `Executor` kept for the server's life, so cached node
outputs carry over between runs as in ComfyUI. The queue knows nothing of HTTP or WebSockets: it reports every event
through the two callables it is given, which may be called from the worker thread.
"""
from __future__ import annotations

import functools
import io
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from .executor import Executor, Interrupted, NodeError, format_traceback
from .prompt import ancestors, literal_inputs
from .validate import PromptInvalid, validate
from .wire import dumps

log = logging.getLogger("kinema.server")

MAX_HISTORY = 1000                           # finished jobs kept (oldest forgotten first)
MAX_HISTORY_BYTES = 64 << 20                 # ... and at most this much of their prompts and workflows, as JSON
MAX_KEPT_WORKFLOW_BYTES = 4 << 20            # a finished job's workflow larger than this is not kept
MAX_ID_LENGTH = 256                          # characters of a client_id or prompt_id
PREVIEW_MAX_SIZE = 512                       # px, longest side of a live preview frame
STATES_UNTHROTTLED, STATES_INTERVAL = 64, 0.25   # progress_state of bigger graphs: at most every 0.25 s
KEPT_EXTRA = ("extra_pnginfo",)              # what a job keeps of extra_data (the editor's workflow), + client_id
SENSITIVE_EXTRA = ("auth_token_comfy_org", "api_key_comfy_org")
JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
PREVIEWABLE = {"images", "video", "audio", "gifs", "3d", "text"}


# ---------------------------------------------------------------------------------------------------------------
# One job
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
    status: str = "pending"                            # one of JOB_STATUSES
    start_time: int | None = None
    end_time: int | None = None
    outputs: dict = field(default_factory=dict)        # node id -> ui dict
    messages: list = field(default_factory=list)       # [[event, data]] as ComfyUI's history status
    error: dict | None = None                          # the execution_error message
    executed: list = field(default_factory=list)       # node ids run or cached so far
    current_node: str | None = None
    node_states: dict = field(default_factory=dict)    # progress_state nodes
    object_info: dict | None = field(default=None, repr=False)   # the definitions it was checked with, until it runs
    size: int = 0                                      # bytes of its prompt and workflow as JSON (in the history)
    states_sent: float = 0.0                           # time.monotonic() of the last progress_state

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
               "preview_output": preview, "workflow_id": _workflow_id(self.extra_data)}
        if detail:
            job.update(outputs=self.outputs, workflow={"prompt": self.prompt, "extra_data": self.extra_data},
                       execution_status=self.history_entry()["status"] if self.status != "pending" else None)
        return job

    def set_state(self, nid: str, state: str, value=None, maximum=None) -> None:
        """Record a node's progress_state: "running" (with value/maximum steps), "finished" or "error"."""
        entry = self.node_states.setdefault(nid, {"value": 0, "max": 1, "state": state, "node_id": nid,
                                                  "prompt_id": self.id, "display_node_id": nid,
                                                  "parent_node_id": None, "real_node_id": nid})
        entry["state"] = state
        if value is not None:
            entry["value"], entry["max"] = value, maximum
        elif state == "finished":
            entry["value"] = entry["max"]

    def class_of(self, nid: str | None) -> str:
        return self.prompt.get(nid, {}).get("class_type", "") if nid is not None else ""

    def file(self) -> None:
        """Finished: keep what the editor needs (the workflow when not huge) and measure what the history holds."""
        self.node_states.clear()
        workflow_bytes = len(dumps(self.extra_data.get("extra_pnginfo"))) if "extra_pnginfo" in self.extra_data else 0
        if workflow_bytes > MAX_KEPT_WORKFLOW_BYTES:
            log.info("job %s: its workflow (%d bytes) is not kept in the history", self.id, workflow_bytes)
            self.extra_data = {k: v for k, v in self.extra_data.items() if k != "extra_pnginfo"}
            workflow_bytes = 0
        self.size = len(dumps(self.prompt)) + workflow_bytes + len(dumps(self.outputs)) + len(dumps(self.messages))


def _workflow_id(extra_data: dict):
    """The editor's workflow id from extra_data.extra_pnginfo.workflow.id, or None."""
    info = extra_data.get("extra_pnginfo")
    workflow = info.get("workflow") if isinstance(info, dict) else None
    return workflow.get("id") if isinstance(workflow, dict) else None


def _short_inputs(node: dict) -> dict:
    """A node's literal inputs as an error shows them: [value], long text cut to 1000 characters."""
    return {k: [v[:1000] + f"... ({len(v)} characters)" if isinstance(v, str) and len(v) > 1000 else v]
            for k, v in literal_inputs(node).items()}


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


def _exception_type(exc: BaseException) -> str:
    module = type(exc).__module__
    return type(exc).__qualname__ if module == "builtins" else f"{module}.{type(exc).__qualname__}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def request_problem(body: dict) -> tuple[str, str] | None:
    """(message, details) when a /prompt body's fields other than the prompt have the wrong shape, else None."""
    for key in ("client_id", "prompt_id"):
        value = body.get(key)
        if value is not None and not (isinstance(value, str) and len(value) <= MAX_ID_LENGTH):
            return f"{key} must be a string of at most {MAX_ID_LENGTH} characters", repr(value)[:200]
    targets = body.get("partial_execution_targets")
    if targets is not None and not (isinstance(targets, list) and all(isinstance(t, (str, int)) for t in targets)):
        return "partial_execution_targets must be a list of node ids", repr(targets)[:200]
    if body.get("number") is not None and not _is_number(body["number"]):
        return "number must be a finite number", repr(body["number"])[:200]
    extra = body.get("extra_data")
    if extra is not None and not isinstance(extra, dict):
        return "extra_data must be an object", repr(extra)[:200]
    info = (extra or {}).get("extra_pnginfo")
    if info is not None and not isinstance(info, dict):
        return "extra_data.extra_pnginfo must be an object", repr(info)[:200]
    workflow = (info or {}).get("workflow")
    if workflow is not None and not isinstance(workflow, dict):
        return "extra_data.extra_pnginfo.workflow must be an object (the editor's workflow)", repr(workflow)[:200]
    return None


def error_body(kind: str, message: str, details: str = "", node_errors: dict | None = None, **extra) -> dict:
    """ComfyUI's /prompt error response."""
    return {"error": {"type": kind, "message": message, "details": details, "extra_info": extra},
            "node_errors": node_errors or {}}


# ---------------------------------------------------------------------------------------------------------------
# The queue and its worker
# ---------------------------------------------------------------------------------------------------------------
class JobQueue:
    """Pending, running and finished jobs, guarded by one Condition, and the worker thread that runs them.

    post(kind, data, sid): send a JSON event to one client (sid) or everyone (None).
    post_preview(jpeg, metadata, sid): send a live preview frame to one client.
    """

    def __init__(self, executor: Executor, post: Callable[..., None], post_preview: Callable[..., None]):
        self.executor = executor
        self.post = post
        self.post_preview = post_preview
        self.cond = threading.Condition()
        self.pending: list[Job] = []
        self.running: Job | None = None
        self.history: dict[str, Job] = {}              # oldest first
        self.history_bytes = 0                         # sum of their sizes
        self.counter = 0
        self.free_requested = False
        self.stopping = False
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._worker, name="kinema-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Interrupt the running job and let the worker end; join() waits for it."""
        with self.cond:
            self.stopping = True
            self.executor.interrupt_requested = True
            self.cond.notify_all()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def queue_info(self) -> dict:
        with self.cond:
            return {"exec_info": {"queue_remaining": len(self.pending) + (self.running is not None)}}

    def broadcast_status(self) -> None:
        self.post("status", {"status": self.queue_info()})

    # ---- the worker thread ---------------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            # 1. take the pending job with the lowest number (front-queued jobs have negative numbers)
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
            # 2. run it
            try:
                self._run(job)
            except Exception:       # never let the worker die: the next job must still run
                log.exception("job %s: unexpected server error", job.id)
                job.status = "failed"
            # 3. file it in the history, dropping the oldest past MAX_HISTORY jobs or MAX_HISTORY_BYTES
            job.file()
            with self.cond:
                self.running = None
                self.history[job.id] = job
                self.history_bytes += job.size
                while len(self.history) > MAX_HISTORY or (self.history_bytes > MAX_HISTORY_BYTES
                                                          and len(self.history) > 1):
                    self.history_bytes -= self.history.pop(next(iter(self.history))).size
            self.broadcast_status()
            self.post("executing", {"node": None, "prompt_id": job.id}, job.client_id)

    def _free(self) -> None:
        self.executor.cache.clear()
        self.executor.cache.release_memory(force=True)

    def free_memory(self) -> None:
        """Drop cached outputs and free GPU memory now when idle, or before the next job when one is running."""
        with self.cond:
            busy = self.running is not None
            self.free_requested = busy
        if not busy:
            self._free()

    def _on_event(self, job: Job, kind: str, data: dict) -> None:
        """An executor event of `job`: recorded on the job, then sent to its client with the progress states."""
        if kind == "preview":
            self._send_preview(job, data)
            return
        if kind in ("execution_start", "execution_cached", "execution_success"):
            job.messages.append([kind, data])
        if kind == "execution_cached":
            job.executed.extend(data["nodes"])
            for nid in data["nodes"]:
                job.set_state(nid, "finished")
        elif kind == "executing":
            if job.current_node is not None:
                job.set_state(job.current_node, "finished")
            job.current_node = data["node"]
            job.executed.append(data["node"])
            job.set_state(data["node"], "running")
        elif kind == "progress":
            job.set_state(data["node"], "running", data["value"], data["max"])
        elif kind == "executed":
            job.outputs[data["node"]] = data["output"]
        elif kind == "execution_success" and job.current_node is not None:
            job.set_state(job.current_node, "finished")
            self._send_states(job, force=True)  # before the end event: the editor resets its state on it
        self.post(kind, data, job.client_id)
        if kind in ("executing", "progress"):
            self._send_states(job)

    def _send_states(self, job: Job, force: bool = False) -> None:
        """progress_state holds every node's state (the editor replaces its map with it): for a graph of more than
        STATES_UNTHROTTLED nodes it is sent at most every STATES_INTERVAL s (else a 3000-node chain sends 3000
        messages of 3000 states), always at the end."""
        now = time.monotonic()
        if not force and len(job.node_states) > STATES_UNTHROTTLED and now - job.states_sent < STATES_INTERVAL:
            return
        job.states_sent = now
        # a snapshot: the message is serialised later on the event loop, by when these states have moved on
        nodes = {nid: dict(state) for nid, state in job.node_states.items()}
        self.post("progress_state", {"prompt_id": job.id, "nodes": nodes}, job.client_id)

    def _run(self, job: Job) -> None:
        sid = job.client_id
        on_event = functools.partial(self._on_event, job)
        try:
            info, job.object_info = job.object_info, None      # built once for this job, when it was queued
            self.executor.run(job.prompt, job.id, on_event, job.extra_data, object_info=info)
            job.status = "completed"
        except Interrupted:
            job.status = "cancelled"
            node = job.current_node
            msg = {"prompt_id": job.id, "node_id": node, "node_type": job.class_of(node),
                   "executed": list(job.executed), "timestamp": _now_ms()}
            job.messages.append(["execution_interrupted", msg])
            self.post("execution_interrupted", msg, sid)
        except NodeError as exc:
            self._fail(job, exc.node_id, exc.class_type, exc.error)
        except PromptInvalid as exc:     # valid when queued, invalid now (an input file removed meanwhile), or a
            # VALIDATE_INPUTS that needed a linked value failed when its node ran
            nid = next(iter(exc.node_errors), None)
            self._fail(job, nid, job.class_of(nid), exc)
        except Exception as exc:         # a bug outside any node: still reported, the next job still runs
            self._fail(job, job.current_node, job.class_of(job.current_node), exc)
        finally:
            job.end_time = _now_ms()

    def _fail(self, job: Job, nid: str | None, class_type: str, error: BaseException) -> None:
        job.status = "failed"
        node = job.prompt.get(nid, {}) if nid is not None else {}
        inputs = _short_inputs(node)
        msg = {"prompt_id": job.id, "node_id": nid, "node_type": class_type, "executed": list(job.executed),
               "exception_message": str(error), "exception_type": _exception_type(error),
               "traceback": format_traceback(error), "current_inputs": inputs,
               "current_outputs": list(job.executed), "timestamp": _now_ms()}
        job.error = msg
        job.messages.append(["execution_error", msg])
        if nid is not None and nid in job.node_states:
            job.node_states[nid]["state"] = "error"
            self._send_states(job, force=True)
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
        self.post_preview(buf.getvalue(), metadata, job.client_id)

    # ---- queueing ------------------------------------------------------------------------------------------
    def object_info(self) -> dict:
        """The node definitions as the nodes see their folders now (models/ and input/ change while serving)."""
        return self.executor.node_definitions()

    def submit(self, body: dict) -> tuple[int, dict]:
        """POST /prompt: validate and queue; (status, response body)."""
        prompt = body.get("prompt")
        if prompt is None:
            return 400, error_body("no_prompt", "No prompt provided", "No prompt provided")
        problem = request_problem(body)
        if problem is not None:
            return 400, error_body("invalid_prompt", *problem)
        targets = body.get("partial_execution_targets")
        info = self.object_info()                  # once per job: the run uses these definitions too
        error, node_errors, outputs = validate(prompt, info, self.executor.classes, targets)
        if error is not None:
            return 400, {"error": error, "node_errors": node_errors}
        # as ComfyUI: run the outputs that passed, report the others in node_errors
        keep = ancestors(prompt, outputs)
        prompt = {nid: node for nid, node in prompt.items() if nid in keep}
        prompt_id = body.get("prompt_id") or str(uuid.uuid4())
        if prompt_id in self.history or self.find(prompt_id):
            return 400, error_body("invalid_prompt", "prompt_id must be a new string id", repr(prompt_id))
        extra = {k: v for k, v in (body.get("extra_data") or {}).items() if k in KEPT_EXTRA}
        client_id = body.get("client_id") or None
        with self.cond:
            self.counter += 1
            number = float(body["number"]) if _is_number(body.get("number")) else \
                (-self.counter if body.get("front") else self.counter)
            extra.update(client_id=client_id, create_time=_now_ms())
            job = Job(prompt_id, number, prompt, extra, client_id, outputs, extra["create_time"], object_info=info)
            self.pending.append(job)
            self.cond.notify_all()
        self.broadcast_status()
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": node_errors}

    # ---- looking up, cancelling, forgetting ----------------------------------------------------------------
    def find(self, prompt_id: str) -> Job | None:
        with self.cond:
            if self.running is not None and self.running.id == prompt_id:
                return self.running
            return next((j for j in self.pending if j.id == prompt_id), None) or self.history.get(prompt_id)

    def all_jobs(self) -> list[Job]:
        with self.cond:
            return [*self.pending, *([self.running] if self.running else []), *self.history.values()]

    def queue(self) -> dict:
        """GET /queue: the running job and the pending ones in the order they will run."""
        with self.cond:
            running = [self.running.queue_item()] if self.running else []
            pending = [j.queue_item() for j in sorted(self.pending, key=lambda j: j.number)]
        return {"queue_running": running, "queue_pending": pending}

    def interrupt(self, prompt_id: str | None = None) -> bool:
        with self.cond:
            job = self.running
            if job is None or (prompt_id and prompt_id != job.id):
                return False
            self.executor.interrupt_requested = True
            return True

    def delete_pending(self, ids=None) -> int:
        """Drop every pending job, or those in ids; returns how many were dropped."""
        with self.cond:
            before = len(self.pending)
            self.pending = [] if ids is None else [j for j in self.pending if j.id not in set(ids)]
            removed = before - len(self.pending)
        if removed:
            self.broadcast_status()
        return removed

    def delete_history(self, ids=None) -> None:
        """Forget every finished job, or those in ids."""
        with self.cond:
            if ids is None:
                self.history.clear()
            for pid in ids or []:
                self.history.pop(pid, None)
            self.history_bytes = sum(j.size for j in self.history.values())

    def cancel(self, job_id: str) -> bool:
        """Cancel one job: interrupt it when running, drop it when pending; a finished job is left as it is."""
        job = self.find(job_id)
        if job is None:
            return False
        if job.status == "in_progress":
            self.interrupt(job_id)
        elif job.status == "pending":
            self.delete_pending([job_id])
        return True
