"""Runs an API-format prompt with Kinema's (or any V1 ComfyUI) node classes.

Outputs are cached by node signature (class, IS_CHANGED, literal inputs, and the signatures of linked
inputs, recursively) for the life of the Executor, as in ComfyUI: run the same graph with only the seed
changed and only the sampler and what follows it run again. The cache keeps the current prompt's models and a
least-recently-used set of outputs within a RAM budget (cache.py); a node whose output is cached does not need its
inputs, and a run lets go of each intermediate output once its last consumer has run. Events mirror ComfyUI's
WebSocket messages.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from ..nodes import env
from .cache import OutputCache
from .object_info import object_info
from .prompt import execution_order, is_link, link_source, literal_inputs
from .validate import PromptInvalid, custom_errors, deferred, validate

# on_event(type, data): "execution_start", "execution_cached", "executing", "progress", "preview", "executed",
# "execution_success", "execution_error", "execution_interrupted"
EventFn = Callable[[str, dict], None]


class Interrupted(Exception):
    """The user pressed stop (serve: /interrupt; run: Ctrl-C)."""


class NodeError(Exception):
    """A node failed: names the node id, its class and the original error."""

    def __init__(self, node_id: str, class_type: str, error: BaseException):
        self.node_id, self.class_type, self.error = node_id, class_type, error
        where = f"node {node_id} ({class_type})"
        super().__init__(f"{where}: {type(error).__name__}: {error}")


@dataclass
class RunResult:
    outputs: dict[str, dict] = field(default_factory=dict)      # node id -> ui dict
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Executor:
    def __init__(self, class_mappings: dict, display_mappings: dict | None = None,
                 folders: env.Folders | None = None, cache_bytes: int | None = None):
        """cache_bytes: the output cache's RAM budget (default: cache.default_budget(), $KINEMA_CACHE_MB)."""
        self.classes = class_mappings
        self.display = display_mappings or {}
        self.folders = folders or env.folders()   # what the nodes see as models/input/output/temp folders
        self.object_info: dict = {}            # the node definitions of the current (or last) run
        self.cache = OutputCache(cache_bytes)  # signature -> (outputs tuple, ui dict or None), bounded
        self.interrupt_requested = False
        self.previews = True                   # make live previews (the editor shows them; headless runs do not)

    def node_definitions(self) -> dict:
        """object_info as the nodes see their folders now (dropdowns list the models and files present)."""
        with env.using(self.folders):
            return object_info(self.classes, self.display)

    # ---- signatures ----------------------------------------------------------------------------------------
    def _signatures(self, prompt: dict, order: list[str]) -> dict[str, str]:
        sigs: dict[str, str] = {}
        for nid in order:
            node = prompt[nid]
            cls = self.classes[node["class_type"]]
            parts: dict[str, Any] = {"class": node["class_type"]}
            literal = {}
            for name, value in sorted(node.get("inputs", {}).items()):
                if is_link(value):
                    parts[name] = [sigs[link_source(value)], value[1]]
                else:
                    parts[name] = value
                    literal[name] = value
            if getattr(cls, "NOT_IDEMPOTENT", False):
                parts["nonce"] = time.time_ns()
            if hasattr(cls, "IS_CHANGED"):
                try:
                    changed = cls.IS_CHANGED(**literal)
                except TypeError:
                    changed = None
                if isinstance(changed, float) and math.isnan(changed):
                    parts["nonce"] = time.time_ns()
                else:
                    parts["changed"] = repr(changed)
            sigs[nid] = hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()
        return sigs

    # ---- running -------------------------------------------------------------------------------------------
    def run(self, prompt: dict, prompt_id: str = "", on_event: EventFn | None = None,
            extra_data: dict | None = None, object_info: dict | None = None) -> RunResult:
        """Validate and execute. Raises PromptInvalid for a bad graph, NodeError when a node fails, Interrupted
        when stopped.

        object_info: the node definitions the job was read and checked with (built once per job, by the caller or
        here: their dropdowns list the folders as they are now).
        """
        with env.using(self.folders):
            self.object_info = self.node_definitions() if object_info is None else object_info
            return self._run(prompt, prompt_id, on_event, extra_data)

    def _run(self, prompt, prompt_id, on_event, extra_data) -> RunResult:
        emit = on_event or (lambda kind, data: None)
        verdict = validate(prompt, self.object_info, self.classes)
        if verdict.error is not None or verdict.node_errors:
            raise PromptInvalid(verdict.error, verdict.node_errors)
        order = execution_order(prompt, self.object_info)
        sigs = self._signatures(prompt, order)
        self.interrupt_requested = False          # as ComfyUI: a stop pressed while idle does not kill the next run
        self.cache.begin(sigs.values())
        result = RunResult()
        start = time.perf_counter()
        emit("execution_start", {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000)})
        cached = [nid for nid in order if sigs[nid] in self.cache]
        emit("execution_cached", {"nodes": cached, "prompt_id": prompt_id, "timestamp": int(time.time() * 1000)})
        result.cached.extend(cached)
        try:
            self._execute(prompt, order, sigs, result, prompt_id, emit, extra_data or {})
        finally:
            self.cache.release_memory()
        result.seconds = time.perf_counter() - start
        emit("execution_success", {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000)})
        return result

    def _plan(self, prompt, order, sigs) -> tuple[dict, dict, set]:
        """(cached (outputs, ui) of the nodes the run takes from the cache, {node: how many links of nodes that run
        read its output}, every node the run needs).

        Walking back from the output nodes: a cached node is taken as it is (its inputs are not needed), any other
        node runs and needs its linked nodes. The cached values are taken now, so an eviction during the run
        cannot lose them.
        """
        roots = [nid for nid in order if getattr(self.classes[prompt[nid]["class_type"]], "OUTPUT_NODE", False)]
        values, readers, seen, stack = {}, {}, set(), roots or list(order)
        while stack:
            nid = stack.pop()
            if nid in seen:
                continue
            seen.add(nid)
            hit = self.cache.get(sigs[nid])
            if hit is not None:
                values[nid] = hit
                continue
            for value in (prompt[nid].get("inputs") or {}).values():
                if is_link(value):
                    readers[link_source(value)] = readers.get(link_source(value), 0) + 1
                    stack.append(link_source(value))
        return values, readers, seen

    def _execute(self, prompt, order, sigs, result, prompt_id, emit, extra_data):
        hits, readers, needed = self._plan(prompt, order, sigs)
        values: dict[str, tuple] = {}              # outputs that nodes still to run will read
        for nid in order:
            if nid not in needed:
                continue
            if nid in hits:
                outputs, ui = hits.pop(nid)
                if readers.get(nid, 0):
                    values[nid] = outputs
                if ui:
                    result.outputs[nid] = ui
                    emit("executed", {"node": nid, "display_node": nid, "output": ui, "prompt_id": prompt_id})
                continue
            if self.interrupt_requested:
                raise Interrupted()
            node = prompt[nid]
            emit("executing", {"node": nid, "display_node": nid, "prompt_id": prompt_id})
            outputs, ui = self._run_node(nid, node, prompt, values, prompt_id, emit, extra_data)
            values[nid] = outputs
            self.cache.put(sigs[nid], outputs, ui)
            result.executed.append(nid)
            for value in (node.get("inputs") or {}).values():      # let go of inputs nobody else reads
                if is_link(value):
                    source = link_source(value)
                    readers[source] -= 1
                    if readers[source] == 0:
                        values.pop(source, None)
            if readers.get(nid, 0) == 0:
                values.pop(nid, None)
            if ui:
                result.outputs[nid] = ui
                emit("executed", {"node": nid, "display_node": nid, "output": ui, "prompt_id": prompt_id})

    def _run_node(self, nid, node, prompt, values, prompt_id, emit, extra_data):
        class_type = node["class_type"]
        cls = self.classes[class_type]
        declared = self.object_info[class_type]["input"]
        known = {*declared.get("required", {}), *declared.get("optional", {})}
        # as ComfyUI does, only declared inputs reach the node: the editor also sends its own widgets' values
        # (e.g. Load Video's "video-preview")
        kwargs = {name: values[link_source(value)][value[1]] if is_link(value) else value
                  for name, value in node.get("inputs", {}).items() if name in known}
        if deferred(cls, literal_inputs(node)):     # its VALIDATE_INPUTS needs linked values: now
            errors = custom_errors(cls, kwargs)
            if errors:
                raise PromptInvalid(None, {nid: {"errors": errors, "dependent_outputs": [],
                                                 "class_type": class_type}})
        hidden = self.object_info[class_type]["input"].get("hidden", {})
        for name, kind in hidden.items():
            kind = kind[0] if isinstance(kind, (list, tuple)) else kind
            kwargs[name] = {"PROMPT": prompt, "UNIQUE_ID": nid,
                            "EXTRA_PNGINFO": extra_data.get("extra_pnginfo")}.get(kind)

        def stop():
            if self.interrupt_requested:
                raise Interrupted()

        def hook(value, total, preview):
            stop()
            emit("progress", {"value": value, "max": total, "prompt_id": prompt_id, "node": nid})
            if preview is not None:
                emit("preview", {"node": nid, "prompt_id": prompt_id, "image": preview})

        try:
            with env.reporting(hook, previews=self.previews, interrupt=stop):     # stop: also between windows
                out = getattr(cls(), cls.FUNCTION)(**kwargs)
        except Interrupted:
            raise
        except KeyboardInterrupt as exc:
            raise Interrupted() from exc
        except Exception as exc:  # every node failure is reported with its node id and class
            raise NodeError(nid, class_type, exc) from exc
        ui = None
        if isinstance(out, dict):
            ui = out.get("ui")
            out = tuple(out.get("result", ()) or ())
        return tuple(out), ui


def format_traceback(exc: BaseException) -> list[str]:
    return traceback.format_exception(type(exc), exc, exc.__traceback__)
