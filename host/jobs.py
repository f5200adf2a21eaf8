"""The job queue of `kinema serve`: prompts waiting, the one running, the finished ones, and the worker thread.

Graphs run one at a time in a worker thread through ONE `Executor` kept for the server's life, so cached node
outputs carry over between runs as in ComfyUI. The queue knows nothing of HTTP or WebSockets: it reports every event
through the two callables it is given, which may be called from the worker thread.
"""
from __future__ import annotations

import gc
import inspect
import io
import logging
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from . import graph
from .executor import Executor, Interrupted, NodeError, PromptInvalid, format_traceback

log = logging.getLogger("kinema.server")

MAX_HISTORY = 1000
PREVIEW_MAX_SIZE = 512                       # px, longest side of a live preview frame
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

    def class_of(self, nid: str | None) -> str:
        return self.prompt.get(nid, {}).get("class_type", "") if nid is not None else ""


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


def _is_link(value) -> bool:
    """An input wired to another node's output: [node id, output index]."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _literal_inputs(node: dict) -> dict:
    """The node's widget values (inputs that are not links)."""
    return {k: v for k, v in (node.get("inputs") or {}).items() if not _is_link(v)}


def _ancestors(prompt: dict, roots: list[str]) -> set[str]:
    seen, stack = set(), list(roots)
    while stack:
        nid = stack.pop()
        if nid in seen or nid not in prompt:
            continue
        seen.add(nid)
        for value in (prompt[nid].get("inputs") or {}).values():
            if _is_link(value):
                stack.append(str(value[0]))
    return seen


def _exception_type(exc: BaseException) -> str:
    module = type(exc).__module__
    return type(exc).__qualname__ if module == "builtins" else f"{module}.{type(exc).__qualname__}"


def _now_ms() -> int:
    return int(time.time() * 1000)


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
        self.display_names = {k: v.get("display_name", k) for k, v in executor.object_info.items()}
        self.post = post
        self.post_preview = post_preview
        self.cond = threading.Condition()
        self.pending: list[Job] = []
        self.running: Job | None = None
        self.history: dict[str, Job] = {}              # oldest first
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
            # 3. file it in the history, dropping the oldest past MAX_HISTORY
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

    def free_memory(self) -> None:
        """Drop cached outputs and free GPU memory now when idle, or before the next job when one is running."""
        with self.cond:
            busy = self.running is not None
            self.free_requested = busy
        if not busy:
            self._free()

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
            self.executor.object_info = self.object_info()
            self.executor.run(job.prompt, job.id, on_event, job.extra_data)
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
        except PromptInvalid as exc:     # valid when queued, invalid now (e.g. a model folder was removed)
            nid = next(iter(exc.node_errors), None)
            self._fail(job, nid, job.class_of(nid), exc)
        except Exception as exc:         # a bug outside any node: still reported, the next job still runs
            self._fail(job, job.current_node, job.class_of(job.current_node), exc)
        finally:
            job.end_time = _now_ms()

    def _fail(self, job: Job, nid: str | None, class_type: str, error: BaseException) -> None:
        job.status = "failed"
        node = job.prompt.get(nid, {}) if nid is not None else {}
        inputs = {k: [v] for k, v in _literal_inputs(node).items()}
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
        self.post_preview(buf.getvalue(), metadata, job.client_id)

    # ---- queueing ------------------------------------------------------------------------------------------
    def object_info(self) -> dict:
        return self.executor.node_definitions()

    def submit(self, body: dict) -> tuple[int, dict]:
        """POST /prompt: validate and queue; (status, response body)."""
        prompt = body.get("prompt")
        if prompt is None:
            return 400, error_body("no_prompt", "No prompt provided", "No prompt provided")
        info = self.object_info()
        targets = body.get("partial_execution_targets")
        if targets is not None and not (isinstance(targets, list) and all(isinstance(t, (str, int)) for t in targets)):
            return 400, error_body("invalid_prompt", "partial_execution_targets must be a list of node ids",
                                   repr(targets))
        if not isinstance(body.get("extra_data") or {}, dict):
            return 400, error_body("invalid_prompt", "extra_data must be an object", repr(body["extra_data"]))
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
            return 400, error_body("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                   lines, node_errors)
        keep = _ancestors(prompt, outputs)
        prompt = {nid: node for nid, node in prompt.items() if nid in keep}
        prompt_id = body.get("prompt_id") or str(uuid.uuid4())
        if not isinstance(prompt_id, str) or prompt_id in self.history or self.find(prompt_id):
            return 400, error_body("invalid_prompt", "prompt_id must be a new string id", repr(prompt_id))
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
        failed: set[str] = set()
        for nid in sorted(_ancestors(prompt, outputs)):
            node = prompt[nid]
            cls = self.executor.classes[node["class_type"]]
            check = getattr(cls, "VALIDATE_INPUTS", None)
            if check is None:
                continue
            literal = _literal_inputs(node)
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
