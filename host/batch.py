"""`kinema batch`: one workflow x a sweep of input values -> many jobs, run in this process or on a Ray cluster.

    kinema batch workflows/text_to_video.json --sweep 2.text=prompts.txt --sweep 4.seed=1..16 [--ray [ADDRESS]]

1. The workflow is read once (UI or API JSON) and expanded into jobs: the product of every `--sweep` (the last
   varies fastest), each job a full API prompt with its overrides applied and validated before anything runs.
2. Jobs run on workers. A worker (`BatchWorker`) keeps ONE `Executor` for its whole life, so a model loaded for its
   first job stays in the executor's cache for the next jobs with the same loader inputs (the "model set"): models
   load once per worker, not once per job. Jobs are handed out grouped by model set, and a worker switching to
   another model set drops the old one first. Locally the only worker is this process; with `--ray` each worker is
   a Ray actor holding the CPUs/GPUs one job asks for, running one job at a time.
3. A job writes into a fresh hidden folder (`<batch>/.partial/<job>.<attempt>`); only a job that succeeded is moved
   to `<batch>/<job>/` (one rename) and then recorded in the manifest. A worker killed mid-job leaves nothing
   visible; finished jobs are never touched again. A failed job (a node error, or its worker died) is retried once,
   then recorded as failed, and the batch goes on.
4. The manifest `<batch>/manifest.jsonl` has one JSON line per job (overrides, status, attempts, errors, output
   files, timings, worker, nodes run/cached, and `runtime`: torch's thread count and version and the models' device
   and dtype, on which the exact bits depend) and is rewritten atomically as jobs finish. `--resume MANIFEST` runs
   the same command again and skips every job recorded ok whose files still exist (jobs are matched by a hash of
   their full prompt, so changing the workflow or a value re-runs what changed).

Nothing here imports Ray unless `--ray` is given: Ray is an optional extra (`pip install -e '.[ray]'`).
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

MAX_ATTEMPTS = 2                      # a failed job is retried once, then recorded as failed
MANIFEST_NAME = "manifest.jsonl"
PARTIAL_DIR = ".partial"              # jobs in flight write here; only finished jobs are moved out
MAX_JOBS = 100_000                    # a typo such as 1..10000000 is an error, not a week of renders
_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")

EventFn = Callable[[str, dict], None]   # on_event(kind, data): "start", "retry", "done"


class BatchError(ValueError):
    """A sweep, a resume manifest or the batch options are wrong; the message names the flag and the fix."""


# ---- 1. sweeps and jobs -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sweep:
    node: str                 # node id, e.g. "4"
    input: str                # input name, e.g. "seed"
    values: tuple[str, ...]   # raw text values, typed later by the node definition (as `--set` does)

    @property
    def target(self) -> str:
        return f"{self.node}.{self.input}"


def parse_sweep(spec: str, base_dir: Path | None = None) -> Sweep:
    """`ID.INPUT=VALUES`. VALUES is a text file (one value a line; blank lines and lines starting with # skipped),
    an inclusive integer range `A..B`, or a comma-separated list `a,b,c` (use a file for values with commas)."""
    key, sep, raw = spec.partition("=")
    node, dot, name = key.strip().partition(".")
    if not sep or not dot or not node or not name:
        raise BatchError(f"`--sweep` must be ID.INPUT=VALUES, got {spec!r}. Fix: e.g. --sweep 4.seed=1..16 or "
                         f"--sweep 2.text=prompts.txt.")
    path = Path(raw).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if raw.strip() and path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        values = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not values:
            raise BatchError(f"`--sweep {key}` file {str(path)!r} has no values, got an empty file. Fix: write one "
                             f"value a line.")
    elif raw.strip().lower().endswith(".txt"):
        raise BatchError(f"`--sweep {key}` names a values file that does not exist, got {raw!r}. Fix: check the "
                         f"path (relative paths are read from the current folder).")
    elif m := _RANGE.match(raw):
        lo, hi = int(m.group(1)), int(m.group(2))
        if hi < lo:
            raise BatchError(f"`--sweep {key}` range must go up (A..B with A <= B), got {raw!r}. Fix: write "
                             f"{hi}..{lo}.")
        if hi - lo + 1 > MAX_JOBS:
            raise BatchError(f"`--sweep {key}` range must hold at most {MAX_JOBS} values, got {raw!r}. Fix: split "
                             f"the batch.")
        values = [str(v) for v in range(lo, hi + 1)]
    else:
        values = [v.strip() for v in raw.split(",")]
        if not raw.strip() or any(not v for v in values):
            raise BatchError(f"`--sweep {key}` values must not be empty, got {raw!r}. Fix: give a file, a range "
                             f"A..B or a list a,b,c.")
    return Sweep(node.strip(), name.strip(), tuple(values))


@dataclass
class Job:
    index: int                          # 1-based position in the sweep product
    key: str                            # hash of the full prompt: the identity used by --resume
    overrides: dict[str, Any]           # "ID.INPUT" -> typed value, the sweep values of this job
    prompt: dict                        # the API prompt to run
    model_key: str                      # hash of the loader nodes' inputs: jobs sharing it share loaded models

    @property
    def dirname(self) -> str:
        return f"{self.index:04d}-{self.key[:8]}"


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _model_key(prompt: dict, classes: dict) -> str:
    """What a worker must hold to run this prompt: the inputs of its loader nodes (category .../loaders)."""
    loaders = {nid: node.get("inputs", {}) for nid, node in prompt.items()
               if str(getattr(classes.get(node.get("class_type")), "CATEGORY", "")).endswith("/loaders")}
    return _hash(loaders)


def expand_jobs(prompt: dict, sweeps: list[Sweep], sets: list[str], object_info: dict, classes: dict) -> list[Job]:
    """Every combination of the sweeps' values (the last sweep varies fastest), each validated as `kinema run` and
    `kinema serve` validate (VALIDATE_INPUTS included). GraphError names the job, the node, the input and the fix."""
    from .prompt import GraphError, apply_overrides
    from .validate import PromptInvalid, validate
    seen = set()
    for s in sweeps:
        if s.target in seen:
            raise BatchError(f"`--sweep {s.target}` may be given once, got it twice. Fix: put all its values in one "
                             f"--sweep.")
        seen.add(s.target)
    total = 1
    for s in sweeps:
        total *= len(s.values)
    if total > MAX_JOBS:
        raise BatchError(f"`--sweep` product must be at most {MAX_JOBS} jobs, got {total}. Fix: split the batch.")
    base = copy.deepcopy(prompt)
    apply_overrides(base, sets, object_info)
    for s in sweeps:                          # type-check each value once, with an error that says --sweep
        for v in s.values:
            try:
                apply_overrides(copy.deepcopy(base), [f"{s.target}={v}"], object_info)
            except GraphError as exc:
                raise GraphError(str(exc).replace("--set", "--sweep", 1), exc.node_id, exc.class_type,
                                 exc.input_name) from None
    jobs = []
    for index, combo in enumerate(itertools.product(*[s.values for s in sweeps]), start=1):
        job_prompt = copy.deepcopy(base)
        apply_overrides(job_prompt, [f"{s.target}={v}" for s, v in zip(sweeps, combo)], object_info)
        overrides = {s.target: job_prompt[s.node]["inputs"][s.input] for s in sweeps}
        error, node_errors, _ = validate(job_prompt, object_info, classes)
        if error is not None or node_errors:
            raise GraphError(f"job {index} {json.dumps(overrides)}: {PromptInvalid(error, node_errors)}")
        jobs.append(Job(index, _hash(job_prompt), overrides, job_prompt, _model_key(job_prompt, classes)))
    _refuse_duplicates(jobs)
    return jobs


def _refuse_duplicates(jobs: list[Job]) -> None:
    """Two jobs with the same prompt would write the same record (the manifest and --resume key jobs by their
    prompt): BatchError naming both."""
    first: dict[str, Job] = {}
    for job in jobs:
        twin = first.setdefault(job.key, job)
        if twin is not job:
            raise BatchError(f"`--sweep` values must make different jobs, got job {twin.index} "
                             f"{json.dumps(twin.overrides)} and job {job.index} {json.dumps(job.overrides)} with the "
                             f"same prompt. Fix: remove the repeated value.")


def group_by_model(jobs: list[Job]) -> list[Job]:
    """Jobs of one model set next to each other (first-seen order), sweep order kept inside each set."""
    first: dict[str, int] = {}
    for j in jobs:
        first.setdefault(j.model_key, len(first))
    return sorted(jobs, key=lambda j: (first[j.model_key], j.index))


# ---- 2. the manifest ----------------------------------------------------------------------------------------------
class Manifest:
    """One JSON line per job, keyed by the job's prompt hash; every write replaces the file atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records: dict[str, dict] = {}

    @classmethod
    def load(cls, path) -> Manifest:
        m = cls(path)
        try:
            lines = m.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise BatchError(f"`--resume` manifest must exist, got {str(path)!r}. Fix: pass the manifest.jsonl "
                             f"printed by the earlier batch (it lies in the batch folder).") from None
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                m.records[rec["key"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise BatchError(f"`--resume` manifest line {n} must be a job record, got {line[:80]!r} ({exc}). "
                                 f"Fix: pass a manifest.jsonl written by kinema batch.") from None
        return m

    def finished(self, job: Job, batch_dir: Path) -> bool:
        rec = self.records.get(job.key)
        return bool(rec and rec.get("status") == "ok" and (batch_dir / rec["dir"]).is_dir()
                    and all((batch_dir / f).is_file() for f in rec.get("files", [])))

    def write(self) -> None:
        from ..models.media import atomic_write
        lines = [json.dumps(r, default=str) + "\n" for r in sorted(self.records.values(), key=lambda r: r["job"])]
        with atomic_write(self.path) as tmp:
            tmp.write_text("".join(lines), encoding="utf-8")


def _new_record(job: Job) -> dict:
    return {"job": job.index, "key": job.key, "dir": job.dirname, "overrides": job.overrides, "status": "pending",
            "attempts": 0, "errors": [], "files": [], "outputs": {}, "worker": None, "seconds": None,
            "wall_seconds": None, "started": None, "finished": None, "executed": [], "cached": [], "runtime": None}


# ---- 3. the worker (one per process: this one, or a Ray actor) ----------------------------------------------------
class BatchWorker:
    """Runs jobs one at a time with one long-lived Executor, so models stay loaded between jobs of a model set.

    dirs: {"models", "input", "temp": absolute folders, "search": [extra input folders]}. Outputs of each job go to
    the folder the job names (`staging`), never to a shared output folder: parallel workers cannot collide.
    """

    def __init__(self, dirs: dict, name: str = "", threads: int | None = None):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if threads:
            import torch
            torch.set_num_threads(max(1, int(threads)))
        from .. import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
        from ..nodes import env
        from .executor import Executor
        folders = env.Folders.of(models=dirs.get("models"), input=dirs.get("input"), temp=dirs.get("temp"),
                                 extra_inputs=dirs.get("search", []))
        self.executor = Executor(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, folders=folders)
        self.executor.previews = False          # nobody watches a batch's previews
        self.name = name or f"{os.uname().nodename}:{os.getpid()}"
        self.model_key: str | None = None

    def run(self, job: dict) -> dict:
        """job: {"prompt", "key", "model_key", "staging"}. Returns {"status": "ok"|"failed", ...}; never raises
        for a failed node (only an interrupt propagates)."""
        from .executor import Interrupted
        staging = Path(job["staging"])
        staging.mkdir(parents=True, exist_ok=True)
        self.executor.folders = self.executor.folders.replace(output=staging)
        if job["model_key"] != self.model_key:    # another model set: free the old models before loading new ones
            self._drop_models()
            self.model_key = job["model_key"]
        start = time.perf_counter()
        try:
            result = self.executor.run(job["prompt"], prompt_id=job["key"])
            res = {"status": "ok", "outputs": result.outputs, "executed": result.executed, "cached": result.cached,
                   "seconds": round(result.seconds, 3)}
        except Interrupted:
            raise
        except Exception as exc:  # NodeError, PromptInvalid or a host bug: recorded on the job, the batch goes on
            res = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                   "seconds": round(time.perf_counter() - start, 3)}
        runtime = self._runtime(job["prompt"])
        self._keep_only(job["prompt"])
        return {"worker": self.name, "pid": os.getpid(), "runtime": runtime, **res}

    def _runtime(self, prompt: dict) -> dict:
        """What the outputs depend on besides the prompt (bit-identical only when all are equal): torch's CPU thread
        count and version, and the devices and dtypes of the models the job's loader nodes hold (comma-joined)."""
        import torch
        from .prompt import GraphError, execution_order
        ex, models = self.executor, []
        try:
            sigs = ex._signatures(prompt, execution_order(prompt, ex.object_info))
        except (GraphError, KeyError, ValueError, TypeError):
            sigs = {}
        for nid, sig in sigs.items():
            if str(getattr(ex.classes[prompt[nid]["class_type"]], "CATEGORY", "")).endswith("/loaders"):
                models += [v for v in (ex.cache.get(sig) or ((),))[0] if hasattr(v, "device") and hasattr(v, "dtype")]
        names = lambda attr: ",".join(sorted({str(getattr(m, attr)).removeprefix("torch.") for m in models})) or None
        return {"threads": torch.get_num_threads(), "device": names("device"), "dtype": names("dtype"),
                "torch": torch.__version__}

    def _keep_only(self, prompt: dict) -> None:
        """Keep this job's cached node outputs (models, prompts: reused by the next job) except output nodes (they
        must run again to write into the next job's folder); drop the rest so memory does not grow per job."""
        from .prompt import execution_order
        ex = self.executor
        try:
            order = execution_order(prompt, ex.object_info)     # the definitions of the run that just ended
            sigs = ex._signatures(prompt, order)
        except (KeyError, ValueError, TypeError):           # GraphError is a ValueError
            ex.cache.clear()
            return
        ex.cache.retain({sigs[n] for n in order
                         if not getattr(ex.classes[prompt[n]["class_type"]], "OUTPUT_NODE", False)})

    def _drop_models(self) -> None:
        self.executor.cache.clear()
        self.executor.cache.release_memory(force=True)


# ---- 4. the driver ------------------------------------------------------------------------------------------------
@dataclass
class BatchResult:
    manifest: Path
    batch_dir: Path
    jobs: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0          # finished in an earlier run (--resume)
    interrupted: bool = False
    workers: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"manifest": str(self.manifest), "batch_dir": str(self.batch_dir), "jobs": self.jobs, "ok": self.ok,
                "failed": self.failed, "skipped": self.skipped, "interrupted": self.interrupted,
                "workers": self.workers, "seconds": round(self.seconds, 2)}


@dataclass
class _State:
    """What the driver tracks while jobs run: the manifest, counters and the progress bar."""
    manifest: Manifest
    batch_dir: Path
    result: BatchResult
    on_event: EventFn
    bar: Any = None
    running: int = 0
    last_write: float = 0.0
    queue: deque = field(default_factory=deque)    # (job, attempt) waiting for a worker

    def staging(self, job: Job, attempt: int) -> Path:
        path = self.batch_dir / PARTIAL_DIR / f"{job.dirname}.{attempt}"
        shutil.rmtree(path, ignore_errors=True)
        return path

    def payload(self, job: Job, attempt: int) -> dict:
        return {"prompt": job.prompt, "key": job.key, "model_key": job.model_key,
                "staging": str(self.staging(job, attempt))}

    def started(self, job: Job, attempt: int, worker_name: str, worker=None) -> None:
        rec = self.manifest.records[job.key]
        rec.update(status="running", attempts=attempt, worker=worker_name,
                   started=rec["started"] if attempt > 1 else round(time.time(), 3))
        self.running += 1
        self._progress()
        if time.monotonic() - self.last_write > 1.0:          # starts are written at most once a second
            self._write()
        self.on_event("start", {"job": job.index, "key": job.key, "attempt": attempt, "worker": worker,
                                "worker_name": worker_name})

    def finished(self, job: Job, attempt: int, res: dict, submitted: float) -> None:
        """Commit a job's folder (ok), or queue the retry, or record the failure; then write the manifest."""
        rec = self.manifest.records[job.key]
        self.running -= 1
        staging = self.batch_dir / PARTIAL_DIR / f"{job.dirname}.{attempt}"
        rec.update(worker=res.get("worker", rec["worker"]), seconds=res.get("seconds"),
                   wall_seconds=round(time.monotonic() - submitted, 3), executed=res.get("executed", []),
                   cached=res.get("cached", []), runtime=res.get("runtime"))
        if res["status"] == "ok" and not staging.is_dir():
            res = {**res, "status": "failed", "error": f"the job ran on worker {res.get('worker')} but its folder "
                   f"{staging} is not visible here. Fix: put --output-dir on a filesystem every Ray node shares "
                   f"(same path everywhere)."}
        if res["status"] == "ok":
            final = self.batch_dir / job.dirname
            shutil.rmtree(final, ignore_errors=True)    # a leftover of a run that died before recording it
            os.replace(staging, final)                  # one rename: the job's outputs appear all at once
            rec.update(status="ok", outputs=res.get("outputs", {}), finished=round(time.time(), 3),
                       files=sorted(str(p.relative_to(self.batch_dir)) for p in final.rglob("*") if p.is_file()))
            self.result.ok += 1
            event = "done"
        else:
            shutil.rmtree(staging, ignore_errors=True)
            rec["errors"].append(res.get("error", "unknown error"))
            if attempt < MAX_ATTEMPTS:
                rec["status"] = "retrying"
                self.queue.appendleft((job, attempt + 1))
                event = "retry"
            else:
                rec.update(status="failed", finished=round(time.time(), 3))
                self.result.failed += 1
                event = "done"
        self._write()
        self._progress(refresh=event != "done")
        if event == "done" and self.bar is not None:
            self.bar.update(1)
        self.on_event(event, {"job": job.index, "key": job.key, "record": dict(rec)})

    def interrupted(self, jobs: list[Job]) -> None:
        for job in jobs:
            rec = self.manifest.records[job.key]
            if rec["status"] in ("running", "retrying", "pending"):
                rec["status"] = "interrupted"
        self.result.interrupted = True
        self._write()

    def _write(self) -> None:
        self.manifest.write()
        self.last_write = time.monotonic()

    def _progress(self, refresh: bool = True) -> None:
        if self.bar is not None:
            self.bar.set_postfix(ok=self.result.ok, failed=self.result.failed, running=self.running, refresh=refresh)


def run_batch(workflow, sweeps: list[Sweep], sets: list[str] | None = None, *, output_dir=None, name: str | None = None,
              resume=None, ray: str | None = None, workers: int | None = None, cpus_per_job: float = 1.0,
              gpus_per_job: float | None = None, quiet: bool = True, on_event: EventFn | None = None) -> BatchResult:
    """Expand `workflow` x `sweeps` into jobs and run them (see the module docstring).

    ray: None runs every job in this process; "local" starts a Ray on this machine for the run (loopback only);
    any other value is a cluster address for `ray.init(address=...)` ("auto", "ray://head:10001"). When Ray is
    already initialised in this process it is used as it is. workers: Ray actors (default: as many as the
    cluster's CPUs/GPUs fit). Raises GraphError / PromptInvalid / BatchError before any job runs when the workflow
    or a sweep is invalid, RuntimeError when Ray is asked for and missing.
    """
    from .. import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from ..nodes import env
    from .object_info import object_info
    from .ui_to_api import load_workflow
    check_resources(cpus_per_job, gpus_per_job, workers)
    if ray is not None:
        import_ray(local=ray == "local")          # a missing Ray is an error before anything is written
    wf_path = Path(workflow)
    folders = env.folders()
    assets = wf_path.resolve().parent / "assets"
    with env.using(folders.searching(assets)):    # the folders the workers see: checked as they will run
        info = object_info(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)
        prompt, _ui = load_workflow(wf_path, info)
        jobs = expand_jobs(prompt, sweeps, sets or [], info, NODE_CLASS_MAPPINGS)
    manifest = _manifest(resume, Path(output_dir) if output_dir is not None else folders.output,
                         name or f"batch_{wf_path.stem}_{time.strftime('%Y%m%d_%H%M%S')}")
    batch_dir = manifest.path.parent
    shutil.rmtree(batch_dir / PARTIAL_DIR, ignore_errors=True)     # what a killed earlier run left in flight
    result = BatchResult(manifest.path, batch_dir, jobs=len(jobs))
    todo = _still_to_do(jobs, manifest, result)
    state = _State(manifest, batch_dir, result, on_event or (lambda kind, data: None))
    state.queue.extend((job, 1) for job in group_by_model(todo))
    try:
        manifest.write()
    except OSError as exc:                      # a read-only or missing output folder: before any job runs
        raise BatchError(f"`--output-dir` must be a folder Kinema can write, got {str(batch_dir)!r} ("
                         f"{exc.strerror or exc}). Fix: pass --output-dir with a writable folder.") from None
    dirs = {"models": str(folders.models), "input": str(folders.input), "temp": str(folders.temp),
            "search": [str(p) for p in folders.extra_inputs] + [str(assets)]}
    start = time.perf_counter()
    if not quiet:
        from tqdm import tqdm
        state.bar = tqdm(total=len(jobs), initial=result.skipped, desc="batch", unit="job", file=sys.stderr,
                         dynamic_ncols=True)
    try:
        if todo and ray is None:
            _run_local(state, dirs, jobs)
        elif todo:
            _run_ray(state, dirs, jobs, ray, workers, cpus_per_job, gpus_per_job)
    finally:
        if state.bar is not None:
            state.bar.close()
        shutil.rmtree(batch_dir / PARTIAL_DIR, ignore_errors=True)
        result.seconds = time.perf_counter() - start
    return result


def _manifest(resume, output_dir: Path, name: str) -> Manifest:
    """The manifest of the batch to resume, or a new one in a new folder `output_dir/name`."""
    if resume is not None:
        return Manifest.load(resume)
    batch_dir = output_dir / name
    if (batch_dir / MANIFEST_NAME).exists():
        raise BatchError(f"`--name` must be a new batch folder, got {str(batch_dir)!r} which holds a manifest. "
                         f"Fix: pass --resume {batch_dir / MANIFEST_NAME} to finish it, or another --name.")
    return Manifest(batch_dir / MANIFEST_NAME)


def _still_to_do(jobs: list[Job], manifest: Manifest, result: BatchResult) -> list[Job]:
    """The jobs not finished in an earlier run (counted as skipped), each with a fresh record that keeps its old
    errors."""
    todo = []
    for job in jobs:
        if manifest.finished(job, result.batch_dir):
            result.skipped += 1
            continue
        rec = _new_record(job)
        rec["errors"] = manifest.records.get(job.key, {}).get("errors", [])
        manifest.records[job.key] = rec
        todo.append(job)
    return todo


def check_resources(cpus_per_job: float, gpus_per_job: float | None, workers: int | None) -> None:
    if cpus_per_job <= 0:
        raise BatchError(f"`--cpus-per-job` must be more than 0, got {cpus_per_job}. Fix: e.g. --cpus-per-job 1.")
    if gpus_per_job is not None and gpus_per_job < 0:
        raise BatchError(f"`--gpus-per-job` must be 0 or more, got {gpus_per_job}. Fix: e.g. --gpus-per-job 1.")
    if workers is not None and workers < 1:
        raise BatchError(f"`--workers` must be at least 1, got {workers}. Fix: e.g. --workers 2.")


def _run_local(state: _State, dirs: dict, jobs: list[Job]) -> None:
    """One worker, this process (its executor carries its own folders: nothing here changes the caller's)."""
    from .executor import Interrupted
    state.result.workers = 1
    try:
        worker = BatchWorker(dirs, name="local")
        while state.queue:
            job, attempt = state.queue.popleft()
            submitted = time.monotonic()
            payload = state.payload(job, attempt)
            state.started(job, attempt, worker.name)
            res = worker.run(payload)
            state.finished(job, attempt, res, submitted)
    except (KeyboardInterrupt, Interrupted):
        state.interrupted(jobs)


# ---- 5. Ray -------------------------------------------------------------------------------------------------------
def import_ray(local: bool):
    """Ray, imported on demand. For a local Ray the environment is set first so that it binds to 127.0.0.1 only
    and sends no usage statistics (both are read when Ray is imported)."""
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # node IP = loopback: servers bind there
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError(f"`--ray` needs Ray, which is not installed ({exc}). Fixes: pip install -e '.[ray]' "
                           f"(or pip install 'ray>=2.40'); or leave out --ray to run the batch in this process.") \
            from None
    return ray


def _connect(ray, address: str, num_cpus: int) -> bool:
    """Connect or start; True when this call started the connection (so the batch must shut it down)."""
    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, configure_logging=False, log_to_driver=False)
    if address == "local":
        ray.init(num_cpus=num_cpus, **kwargs)
    else:
        ray.init(address=address, **kwargs)
    return True


def _worker_count(ray, workers: int | None, cpus: float, gpus: float, n_jobs: int) -> int:
    res = ray.cluster_resources()
    fit = int(res.get("GPU", 0) // gpus) if gpus > 0 else int(res.get("CPU", 0) // cpus)
    if fit < 1:
        raise RuntimeError(f"the Ray cluster has {res.get('CPU', 0):g} CPUs and {res.get('GPU', 0):g} GPUs; one "
                           f"job asks for {cpus:g} CPUs and {gpus:g} GPUs. Fixes: lower --cpus-per-job / "
                           f"--gpus-per-job, or add nodes to the cluster.")
    # never more workers than fit: an actor waiting for resources would hold its job forever
    return max(1, min(workers or fit, fit, n_jobs))


def _run_ray(state: _State, dirs: dict, jobs: list[Job], address: str, workers: int | None, cpus: float,
             gpus: float | None) -> None:
    ray = import_ray(local=address == "local")
    from ray.exceptions import RayActorError, RayError
    n_local = workers or max(1, int((os.cpu_count() or 1) // cpus))
    started_ray = _connect(ray, address, num_cpus=max(1, int(n_local * cpus + 0.999)))
    actors: list = []
    try:
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        n = _worker_count(ray, workers, cpus, gpus, len(state.queue))
        state.result.workers = n
        actor_class = ray.remote(BatchWorker)
        generation = [0] * n

        def new_actor(slot: int):
            generation[slot] += 1
            name = f"w{slot + 1}" + (f".{generation[slot]}" if generation[slot] > 1 else "")
            return actor_class.options(num_cpus=cpus, num_gpus=gpus, max_restarts=0, max_concurrency=1).remote(
                dirs, name=name, threads=max(1, int(cpus))), name

        actors = [new_actor(i) for i in range(n)]
        holds: list[str | None] = [None] * n          # model set each worker last ran
        free = deque(range(n))
        inflight: dict = {}                           # ObjectRef -> (slot, job, attempt, submitted)
        try:
            while state.queue or inflight:
                while free and state.queue:
                    slot = free.popleft()
                    job, attempt = _pick(state.queue, holds[slot])
                    holds[slot] = job.model_key
                    submitted = time.monotonic()
                    ref = actors[slot][0].run.remote(state.payload(job, attempt))
                    inflight[ref] = (slot, job, attempt, submitted)
                    state.started(job, attempt, actors[slot][1], worker=actors[slot][0])
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                if state.bar is not None:
                    state.bar.refresh()                 # keeps the elapsed time and ETA moving
                for ref in ready:
                    slot, job, attempt, submitted = inflight.pop(ref)
                    try:
                        res = ray.get(ref)
                    except RayActorError as exc:        # the worker died (killed, out of memory, node lost)
                        res = {"status": "failed", "worker": actors[slot][1],
                               "error": f"worker {actors[slot][1]} died: {str(exc).splitlines()[0][:300]}"}
                        actors[slot] = new_actor(slot)
                        holds[slot] = None
                    except RayError as exc:
                        res = {"status": "failed", "worker": actors[slot][1],
                               "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
                    state.finished(job, attempt, res, submitted)
                    free.append(slot)
        except KeyboardInterrupt:
            for actor, _name in actors:                # stop writers before their partial folders are removed
                ray.kill(actor)
            actors = []
            state.running = 0
            state.interrupted(jobs)
    finally:
        for actor, _name in actors:
            ray.kill(actor)
        if started_ray:
            ray.shutdown()


def _pick(queue: deque, holds: str | None):
    """The next job for a worker: retries first, then one of the model set it already holds, else the next."""
    if holds is not None and queue[0][1] == 1:
        for i, (job, attempt) in enumerate(queue):
            if job.model_key == holds:
                del queue[i]
                return job, attempt
    return queue.popleft()
