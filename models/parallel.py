"""One model over several GPUs: context (sequence) parallelism for the denoiser (docs/distributed.md section 2).

Kinema owns the denoising loop, and diffusers' context parallelism lives inside the transformer's forward: a
plan (`_cp_plan`) splits the token sequence at the first block, attention exchanges tokens between the ranks
(Ulysses: all-to-all over heads; ring: keys/values passed round), and the output is gathered after `proj_out`.
So the host process stays as it is (text encoding, VAE, scheduler, windows, guidance, previews) and only the
denoiser call needs company: `load_parallel` starts N-1 long-lived helper processes, loads the same folder on
every rank through Kinema's own family loader, joins them and the host in one process group (NCCL on CUDA),
calls `enable_parallelism` on every rank, and returns a `ParallelModel`. Its `predict` sends each step's inputs
(latents, timestep, conditioning) to the helpers, every rank runs the transformer together, and rank 0's (the
host's) output is used.

Helpers are plain `python -c` processes (not multiprocessing children, so ComfyUI's main.py is not re-run in
each) joined to the host by a private socket pair: commands and errors go over it, tensors over the process
group. They exit when the model is released (`ParallelModel.release`, garbage collection, interpreter exit), when
the host's socket closes, or when the host process disappears. A helper that dies turns the next (or the
current) step into a RuntimeError carrying its last words, never a hang: collectives time out after
KINEMA_PARALLEL_TIMEOUT seconds (default 600).

KINEMA_PARALLEL_DEVICE=cpu runs the same code as N CPU processes over gloo (tests and debugging; Ulysses only:
ring needs a GPU attention kernel that returns the softmax LSE).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import weakref
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .checks import check_choice, fail

DEVICE_ENV = "KINEMA_PARALLEL_DEVICE"      # "cpu": every rank on the CPU, gloo (tests, debugging)
TIMEOUT_ENV = "KINEMA_PARALLEL_TIMEOUT"    # seconds a collective or a helper's answer may take (default 600)
LOAD_TIMEOUT_S = 3600                      # loading a 14B model on every rank from a slow disk takes a while
SHARDED = ("transformer", "transformer_2")  # model_index.json components that get the context-parallel plan


class ParallelChoice(str, Enum):
    """Load Video Model's `parallel` dropdown. Saved in workflows: never rename a value."""
    NONE = "none"          # one device, exactly as without the option
    ULYSSES = "ulysses"    # all-to-all over heads (heads divisible by the GPU count; best on NVLink)
    RING = "ring"          # keys/values passed round the GPUs (any head count; needs flash-attn or cuDNN, bf16/fp16)


@dataclass(frozen=True)
class ParallelPlan:
    """What every rank needs to load and join (picklable: the helpers receive it)."""
    path: str
    family: str
    dtype: torch.dtype
    weights: str | None
    parallel: str                  # "ulysses" or "ring"
    world: int                     # ranks = devices, the host included
    device_type: str               # "cuda" or "cpu" (KINEMA_PARALLEL_DEVICE=cpu)
    backend: str                   # "nccl" or "gloo"
    attention_backend: str | None  # diffusers attention backend set before enable_parallelism (ring), or None
    timeout_s: float

    def device(self, rank: int) -> torch.device:
        return torch.device("cuda", rank) if self.device_type == "cuda" else torch.device("cpu")


# ---- checks ------------------------------------------------------------------------------------------------------
def _index(path: Path) -> dict:
    from .families.base import read_model_index
    return read_model_index(path)


def sharded_components(path: Path) -> dict[str, str]:
    """{component: diffusers class name} of the folder's transformers that declare a context-parallel plan."""
    import diffusers
    out = {}
    for name in SHARDED:
        entry = _index(path).get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == "diffusers"):
            continue
        cls = getattr(diffusers, str(entry[1]), None)
        if cls is not None and getattr(cls, "_cp_plan", None) and hasattr(cls, "enable_parallelism"):
            out[name] = entry[1]
    return out


def check_plan(path: Path, family: str) -> dict[str, str]:
    """The folder's denoiser must have diffusers' context-parallel plan (Wan; not Kinema-Tiny or AnimateDiff)."""
    found = sharded_components(path)
    if not found:
        index = _index(path)
        what = family if family != "auto" else index.get("_class_name")
        fail("parallel", "needs a model whose transformer has a context-parallel plan (diffusers' `_cp_plan`: "
             "Wan 2.1/2.2 among Kinema's families)", what,
             "Set parallel to none for this model (Kinema-Tiny and AnimateDiff run on one device), or load a Wan "
             "model.")
    return found


def check_devices(parallel: str, gpus: int, device_type: str, visible: int) -> int:
    """The number of ranks: `gpus` (0 = all visible), at least 2 and at most the visible devices."""
    if gpus < 0:
        fail("gpus", "must be 0 (all visible GPUs) or a count of at least 2", gpus, "Set gpus to 0 or 2 or more.")
    world = visible if gpus == 0 else gpus
    where = "CPU processes (KINEMA_PARALLEL_DEVICE=cpu)" if device_type == "cpu" else "visible CUDA GPUs"
    if world < 2:
        fail("gpus", f"must give at least 2 devices to shard `{parallel}` over ({visible} {where})", world,
             "Set parallel to none, or make two or more GPUs visible (CUDA_VISIBLE_DEVICES) and set gpus to 0 "
             "or 2+.")
    if device_type == "cuda" and world > visible:
        fail("gpus", f"must be at most the {visible} {where}", gpus,
             f"Set gpus to 0 (all) or a number up to {visible}.")
    return world


def check_heads(path: Path, components, parallel: str, world: int) -> None:
    """Ulysses gives each rank heads/N whole heads: the head count must divide by N."""
    if parallel != ParallelChoice.ULYSSES:
        return
    for name in components:
        config = json.loads((Path(path) / name / "config.json").read_text())
        heads = config.get("num_attention_heads")
        if isinstance(heads, int) and heads % world:
            fits = [n for n in range(2, heads + 1) if heads % n == 0][:6]
            fail("gpus", f"must divide the {heads} attention heads of the {name} for ulysses", world,
                 f"Use {', '.join(map(str, fits))} GPUs, or set parallel to ring (any head count).")


def ring_attention_backend(device_type: str, dtype: torch.dtype) -> str:
    """Ring attention merges partial softmaxes by their log-sum-exp: it needs a kernel that returns it."""
    if device_type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        fail("parallel", "ring needs an attention kernel that returns the softmax LSE (flash-attn or cuDNN, on "
             "CUDA in bf16/fp16)", f"ring on {device_type} in {str(dtype).removeprefix('torch.')}",
             "Use parallel ulysses, or set dtype to bf16 or fp16 on CUDA GPUs.")
    import importlib.util
    return "flash" if importlib.util.find_spec("flash_attn") is not None else "_native_cudnn"


def check_backend(device_type: str) -> str:
    """NCCL on CUDA, gloo on the CPU; an environment problem is a RuntimeError listing the fixes."""
    import torch.distributed as dist
    if not dist.is_available():
        raise RuntimeError("`parallel` needs torch.distributed, got a torch built without it. Fixes: install an "
                           "official torch wheel (Linux), or set parallel to none.")
    if os.name != "posix":
        raise RuntimeError(f"`parallel` runs its helper processes on Linux only, got {os.name!r}. Fixes: run "
                           "Kinema on Linux for multi-GPU, or set parallel to none.")
    if device_type == "cuda" and not dist.is_nccl_available():
        raise RuntimeError("`parallel` needs NCCL to join the GPUs, got a torch without NCCL. Fixes: install a "
                           "CUDA build of torch for Linux (it bundles NCCL), or set parallel to none.")
    if device_type == "cpu" and not dist.is_gloo_available():
        raise RuntimeError("`parallel` on the CPU (KINEMA_PARALLEL_DEVICE=cpu) needs gloo, got a torch without "
                           "it. Fixes: install an official torch wheel, or unset KINEMA_PARALLEL_DEVICE.")
    if dist.is_initialized() and _ACTIVE is None:
        raise RuntimeError("`parallel` needs this process free of torch.distributed, got a process group that "
                           "another part of the program started. Fixes: run Kinema in its own process, or set "
                           "parallel to none.")
    return "nccl" if device_type == "cuda" else "gloo"


def plan_parallel(path: Path, family: str, device: torch.device, dtype: torch.dtype, parallel: str, gpus: int,
                  weights: Path | None = None) -> ParallelPlan:
    """Every check, before any process starts or any weight is read.

    Args:
        path: the model folder; family: "auto" or a FamilyChoice value.
        device, dtype: the loader's choice; `device` must be CUDA (KINEMA_PARALLEL_DEVICE=cpu: any).
        parallel: a ParallelChoice value other than none; gpus: ranks to use, 0 = all visible.
    """
    check_choice("parallel", parallel, [c.value for c in ParallelChoice])
    components = check_plan(Path(path), family)
    cpu_mode = os.environ.get(DEVICE_ENV, "").lower() == "cpu"
    device_type = "cpu" if cpu_mode else device.type
    if device_type != "cuda" and not cpu_mode:
        fail("parallel", "needs CUDA GPUs", str(device),
             "Set device to auto or cuda on a machine with two or more GPUs, or set parallel to none.")
    visible = (2 if gpus == 0 else gpus) if device_type == "cpu" else torch.cuda.device_count()
    world = check_devices(parallel, gpus, device_type, visible)
    check_heads(Path(path), components, parallel, world)
    attention = ring_attention_backend(device_type, dtype) if parallel == ParallelChoice.RING else None
    backend = check_backend(device_type)
    timeout = float(os.environ.get(TIMEOUT_ENV, "600"))
    return ParallelPlan(str(path), family, dtype, None if weights is None else str(weights),
                        ParallelChoice(parallel).value, world, device_type, backend, attention, timeout)


# ---- what every rank does ----------------------------------------------------------------------------------------
def _transformers(model) -> list:
    return [m for m in (getattr(model, name, None) for name in SHARDED)
            if m is not None and hasattr(m, "enable_parallelism")]


@contextlib.contextmanager
def _one_accelerator_if_none():
    """diffusers records each rank's device as rank % torch.accelerator.device_count(), which is 0 on a CPU-only
    torch: count one there while enable_parallelism runs (the mesh and the device are ours anyway)."""
    if torch.accelerator.device_count() > 0:
        yield
        return
    from unittest import mock
    with mock.patch.object(torch.accelerator, "device_count", return_value=1):
        yield


def _join(plan: ParallelPlan, model, rank: int, port: int) -> None:
    """Join the process group and install the context-parallel plan on the model's transformers (all ranks)."""
    import torch.distributed as dist
    from diffusers import ContextParallelConfig
    from torch.distributed.device_mesh import init_device_mesh
    dist.init_process_group(plan.backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=plan.world,
                            timeout=timedelta(seconds=plan.timeout_s))
    ulysses = plan.parallel == ParallelChoice.ULYSSES
    shape = (1, plan.world) if ulysses else (plan.world, 1)                      # (ring, ulysses)
    mesh = init_device_mesh(plan.device_type, shape, mesh_dim_names=("ring", "ulysses"))
    from diffusers.utils import logging as dlog
    level = dlog.get_verbosity()
    dlog.set_verbosity_error()                      # "experimental feature" warnings, once per transformer
    try:
        for transformer in _transformers(model):
            if plan.attention_backend:
                transformer.set_attention_backend(plan.attention_backend)
            config = ContextParallelConfig(ulysses_degree=plan.world if ulysses else 1,
                                           ring_degree=1 if ulysses else plan.world, mesh=mesh)
            with _one_accelerator_if_none():
                transformer.enable_parallelism(config=config)
    finally:
        dlog.set_verbosity(level)


UNUSED_BY_PREDICT = ("text_encoder", "text_encoder_2", "image_encoder", "vae")   # rank 0 encodes and decodes


def _drop_encoders(model) -> None:
    """Helpers only run the denoiser: free their copies of the text/image encoders and the VAE (Wan's T5 alone is
    about 11 GB in bf16 on every helper GPU otherwise)."""
    pipe = getattr(model, "pipe", None)
    for name in UNUSED_BY_PREDICT:
        module = getattr(pipe, name, None)
        if not isinstance(module, torch.nn.Module):
            continue
        for attr, value in list(vars(model).items()):
            if value is module:
                setattr(model, attr, None)
        setattr(pipe, name, None)
    import gc
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _watch_tokens(model) -> dict:
    """Record how many tokens reach the first attention of the first transformer on this rank (diagnostics:
    with the plan installed each rank sees tokens / N)."""
    from diffusers.models.attention import AttentionModuleMixin
    from diffusers.models.attention_processor import Attention
    seen: dict[str, Any] = {"tokens": None}
    for transformer in _transformers(model)[:1]:
        first = next((m for m in transformer.modules() if isinstance(m, (Attention, AttentionModuleMixin))), None)
        if first is not None:
            def hook(module, args, kwargs):
                x = kwargs.get("hidden_states", args[0] if args else None)
                seen["tokens"] = None if x is None else int(x.shape[1])
            first.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


class _T(NamedTuple):
    """A tensor's place in a step message: the tensor itself travels over the process group."""
    index: int
    shape: tuple
    dtype: torch.dtype


def _pack(obj, tensors: list):
    """Replace tensors (in dicts, lists, tuples) by _T placeholders, collecting them in order."""
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return _T(len(tensors) - 1, tuple(obj.shape), obj.dtype)
    if isinstance(obj, dict):
        return {k: _pack(v, tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_pack(v, tensors) for v in obj)
    return obj


def _unpack(obj, tensors: list):
    if isinstance(obj, _T):
        return tensors[obj.index]
    if isinstance(obj, dict):
        return {k: _unpack(v, tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_unpack(v, tensors) for v in obj)
    return obj


def _send(tensors: list[torch.Tensor], device: torch.device) -> None:
    """Rank 0: broadcast a step's tensors to the helpers (gloo has no bool: sent as uint8)."""
    import torch.distributed as dist
    for x in tensors:
        dist.broadcast(x.to(device, torch.uint8 if x.dtype == torch.bool else x.dtype).contiguous(), src=0)


def _receive(meta: list[_T], device: torch.device) -> list[torch.Tensor]:
    """Helpers: the tensors rank 0 broadcasts, in order."""
    import torch.distributed as dist
    out = []
    for _, shape, dtype in meta:
        wire = torch.empty(shape, dtype=torch.uint8 if dtype == torch.bool else dtype, device=device)
        dist.broadcast(wire, src=0)
        out.append(wire.bool() if dtype == torch.bool else wire)
    return out


# ---- the helper process ------------------------------------------------------------------------------------------
# Run as `python -c _BOOT <pack root> <package name> <fd> <rank>`: the pack is importable under the host's own
# package name (ComfyUI imports it under its folder name), without running its __init__ (no node imports).
_BOOT = """
import importlib, importlib.util, sys
root, name = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location(name, root + "/__init__.py", submodule_search_locations=[root])
sys.modules[name] = importlib.util.module_from_spec(spec)
importlib.import_module(name + ".models.parallel")._helper_main(sys.argv[3], sys.argv[4])
"""


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)                                     # the host is gone: never linger as an orphan


def _helper_main(fd: str, rank: str) -> None:
    from multiprocessing.connection import Connection
    conn = Connection(int(fd))
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    code = 0
    try:
        _serve(conn, int(rank))
    except (EOFError, ConnectionError):             # the host closed its end: leave quietly
        pass
    except BaseException:                           # report, then exit: the host turns it into a RuntimeError
        code = 1
        traceback.print_exc()
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc(limit=8)))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)                              # no collective teardown that could wait on a dead peer


def _serve(conn, rank: int) -> None:
    import torch.distributed as dist
    from .families import load_model
    # 1. load the same folder through Kinema's own loader, on this rank's device
    kind, plan = conn.recv()
    device = plan.device(rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    model = load_model(Path(plan.path), plan.family, device, plan.dtype,
                       weights=None if plan.weights is None else Path(plan.weights))
    _drop_encoders(model)
    conn.send(("loaded", None))
    # 2. join the group and shard the transformers
    kind, port = conn.recv()
    _join(plan, model, rank, port)
    seen = _watch_tokens(model)
    conn.send(("ready", {"rank": rank, "pid": os.getpid(), "device": str(device)}))
    # 3. run the denoiser with the host, step after step
    while True:
        kind, arg = conn.recv()
        if kind == "step":
            latents, t, batch = _unpack(arg[0], _receive(arg[1], device))
            with torch.no_grad():
                model.predict(latents, t, batch)
        elif kind == "status":
            conn.send(("status", {"rank": rank, "pid": os.getpid(), "device": str(device),
                                  "tokens": seen["tokens"]}))
        elif kind == "stop":
            dist.destroy_process_group()
            conn.send(("stopped", None))
            return
        else:
            raise RuntimeError(f"unknown command {kind!r} from the host")


# ---- the host side -----------------------------------------------------------------------------------------------
_ACTIVE: "_Session | None" = None       # one process group per process: a new parallel load replaces the old one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Helper(NamedTuple):
    rank: int
    proc: subprocess.Popen
    conn: Any
    log: Path


class _Session:
    """N-1 helper processes and the process group they share with this (the host) process, rank 0."""

    def __init__(self, plan: ParallelPlan):
        self.plan = plan
        self.helpers: list[_Helper] = []
        self.closed: str | None = None          # why, once closed
        self.joined = False
        self.tokens: dict[str, Any] = {"tokens": None}
        self._logs = Path(tempfile.mkdtemp(prefix="kinema-parallel-"))

    # 1. start the helpers and have them load the model
    def start(self) -> None:
        from multiprocessing.connection import Connection
        root = Path(__file__).resolve().parents[1]
        package = __name__.rsplit(".", 2)[0]
        for rank in range(1, self.plan.world):
            ours, theirs = socket.socketpair()
            log = self._logs / f"rank{rank}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen([sys.executable, "-c", _BOOT, str(root), package, str(theirs.fileno()),
                                         str(rank)], pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT, close_fds=True)
            theirs.close()
            helper = _Helper(rank, proc, Connection(ours.detach()), log)
            self.helpers.append(helper)
            helper.conn.send(("load", self.plan))

    # 2. after the host loaded its own copy: join the group together
    def join(self, model) -> None:
        for h in self.helpers:
            self._expect(h, "loaded", LOAD_TIMEOUT_S)
        port = _free_port()
        for h in self.helpers:
            h.conn.send(("init", port))
        self.joined = True                          # from here on, close() also leaves the process group
        _join(self.plan, model, 0, port)
        self.tokens = _watch_tokens(model)
        for h in self.helpers:
            self._expect(h, "ready", self.plan.timeout_s)

    def _expect(self, h: _Helper, kind: str, timeout: float):
        """The helper's next message, which must be `kind`; a dead, failing or silent helper is a RuntimeError."""
        deadline = time.monotonic() + timeout
        while not h.conn.poll(0.2):
            if h.proc.poll() is not None:
                raise self._failed(h, f"exited with code {h.proc.returncode}")
            if time.monotonic() > deadline:
                raise self._failed(h, f"gave no answer ({kind}) within {timeout:.0f} s ({TIMEOUT_ENV})")
        try:
            got, arg = h.conn.recv()
        except (EOFError, OSError):                 # it closed its end: it is exiting
            with contextlib.suppress(subprocess.TimeoutExpired):
                h.proc.wait(5)
            raise self._failed(h, f"exited with code {h.proc.returncode}") from None
        if got == "error":
            raise self._failed(h, "failed: " + arg.strip().splitlines()[-1], arg)
        if got != kind:
            raise self._failed(h, f"answered {got!r} instead of {kind!r}")
        return arg

    def _failed(self, h: _Helper, what: str, details: str | None = None) -> RuntimeError:
        if details is None:
            with contextlib.suppress(OSError):
                details = "\n".join(h.log.read_text(errors="replace").strip().splitlines()[-12:])
        return RuntimeError(f"`parallel` helper process {h.rank} of {self.plan.world} (pid {h.proc.pid}) {what}. "
                            f"Fixes: read its output below (out of memory: fewer frames, a smaller size or more "
                            f"GPUs); then run Load Video Model again, the helpers were shut down."
                            + (f"\n--- helper {h.rank} ---\n{details}" if details else ""))

    def check_alive(self) -> None:
        if self.closed:
            raise RuntimeError(f"`model` was released ({self.closed}), got a step for it. Fix: run Load Video "
                               f"Model again.")
        for h in self.helpers:
            if h.proc.poll() is not None:
                raise self._failed(h, f"exited with code {h.proc.returncode}")

    # 3. one denoiser call on every rank
    def step(self, model, latents: torch.Tensor, t: torch.Tensor, batch: dict) -> torch.Tensor:
        self.check_tokens(model, latents)
        try:
            self.check_alive()
        except RuntimeError:
            self.close("a helper stopped", force=True)
            raise
        tensors: list[torch.Tensor] = []
        message = _pack((latents, t, batch), tensors)
        meta = [_T(i, tuple(x.shape), x.dtype) for i, x in enumerate(tensors)]
        try:
            for h in self.helpers:
                h.conn.send(("step", (message, meta)))
            with self._watchdog():
                _send(tensors, self.plan.device(0))
                return model.predict(latents, t, batch)
        except BaseException as exc:     # helpers and host are out of step now: report, shut down, re-raise
            error = self._helper_error()
            self.close("a step failed", force=True)
            if error is None:
                raise
            raise error from exc

    def check_tokens(self, model, latents: torch.Tensor) -> None:
        """The plan splits the tokens evenly: their count must divide by the number of ranks."""
        transformer = next(iter(_transformers(model)), None)
        patch = getattr(getattr(transformer, "config", None), "patch_size", None)
        if latents.ndim != 5 or not patch or len(patch) != 3:
            return
        f, h, w = (n // p for n, p in zip(latents.shape[2:], patch))
        if (f * h * w) % self.plan.world:
            fail("gpus", f"must divide the {f * h * w} tokens of each denoiser call ({f}x{h}x{w} patches)",
                 self.plan.world, f"Pick a length or size whose token count is a multiple of {self.plan.world} "
                                  f"(e.g. a width or height that is a multiple of "
                                  f"{getattr(model, 'spatial_multiple', 16) * self.plan.world}), or use fewer GPUs.")

    def _helper_error(self) -> RuntimeError | None:
        """A helper's own report (or its exit) after a failed step, waiting briefly for it to arrive."""
        deadline, dead_since = time.monotonic() + 2.0, None
        while time.monotonic() < deadline:
            for h in self.helpers:
                with contextlib.suppress(OSError, EOFError):
                    if h.conn.poll(0):
                        got, arg = h.conn.recv()
                        if got == "error":
                            return self._failed(h, "failed: " + arg.strip().splitlines()[-1], arg)
            dead = [h for h in self.helpers if h.proc.poll() is not None]
            dead_since = dead_since or (time.monotonic() if dead else None)
            if dead and time.monotonic() - dead_since > 0.5:      # its report, if any, has had time to arrive
                return self._failed(dead[0], f"exited with code {dead[0].proc.returncode}")
            time.sleep(0.05)
        return None

    @contextlib.contextmanager
    def _watchdog(self):
        """While the host is inside a collective: if a helper dies, abort NCCL so the step fails now rather than
        after the timeout (gloo fails by itself when a peer's socket closes)."""
        done = threading.Event()

        def watch():
            while not done.wait(0.5):
                if any(h.proc.poll() is not None for h in self.helpers):
                    if self.plan.backend == "nccl":
                        from torch.distributed import distributed_c10d as c10d
                        with contextlib.suppress(Exception):
                            c10d._abort_process_group()
                    return
        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()

    def status(self) -> list[dict]:
        """Per rank: pid, device and the tokens its first attention saw in the last step."""
        self.check_alive()
        out = [{"rank": 0, "pid": os.getpid(), "device": str(self.plan.device(0)), "tokens": self.tokens["tokens"]}]
        for h in self.helpers:
            h.conn.send(("status", None))
            out.append(self._expect(h, "status", self.plan.timeout_s))
        return out

    # 4. shut down: helpers first (politely, then by force), then the host's end of the group
    def close(self, why: str = "released", force: bool = False) -> None:
        """force: the helpers may be stuck in a collective; give them 2 s rather than 10 to stop."""
        global _ACTIVE
        if self.closed:
            return
        self.closed = why
        for h in self.helpers:
            with contextlib.suppress(OSError):
                h.conn.send(("stop", None))
        deadline = time.monotonic() + (2.0 if force else 10.0)
        for h in self.helpers:
            try:
                h.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                h.proc.kill()
                h.proc.wait(10)
            with contextlib.suppress(OSError):
                h.conn.close()
        if self.joined:
            import torch.distributed as dist
            if dist.is_initialized():
                with contextlib.suppress(Exception):
                    dist.destroy_process_group()
        for log in self._logs.glob("*.log"):
            log.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._logs.rmdir()
        if _ACTIVE is self:
            _ACTIVE = None


class ParallelModel:
    """A KINEMA_MODEL whose denoiser runs on `world` devices at once; everything else is the host's own model.

    Attribute reads and writes go to the wrapped family (rank 0's copy): text encoding, the VAE, schedulers,
    windows and previews run in this process exactly as without `parallel`. Only `predict` differs."""

    def __init__(self, model, session: _Session):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_session", session)
        weakref.finalize(self, session.close)       # released with the model (and at interpreter exit)

    def __getattr__(self, name: str):
        model = self.__dict__.get("_model")
        if model is None:
            raise RuntimeError(f"`model` was released ({self._session.closed}), got a use of `{name}`. Fix: run "
                               f"Load Video Model again.")
        return getattr(model, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._model, name, value)

    def __repr__(self) -> str:
        return (f"ParallelModel({self._session.plan.parallel} x {self._session.plan.world}, "
                f"{self.__dict__.get('_model')!r})")

    @property
    def parallel(self) -> ParallelPlan:
        return self._session.plan

    def predict(self, latents: torch.Tensor, t: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """As VideoFamily.predict; every rank runs the transformer on its share of the tokens."""
        if self.__dict__.get("_model") is None:
            self._session.check_alive()                                  # raises: released
        return self._session.step(self._model, latents, t, batch)

    def parallel_status(self) -> list[dict]:
        """Per rank: rank, pid, device, tokens seen by the first attention in the last step."""
        return self._session.status()

    def release(self) -> None:
        """Stop the helpers and free this model now (also happens when it is garbage collected)."""
        self._session.close()
        object.__setattr__(self, "_model", None)


def load_parallel(path: Path, family: str, device: torch.device, dtype: torch.dtype, parallel: str, gpus: int,
                  weights: Path | None = None) -> ParallelModel:
    """Load a model folder sharded over several devices by context parallelism (Ulysses or ring).

    Args:
        path: diffusers folder (Wan 2.1/2.2: a transformer with diffusers' `_cp_plan`).
        family: "auto" or a FamilyChoice value; device: CUDA (the host runs rank 0 on cuda:0, helper r on
            cuda:r); dtype: weights precision on every rank; weights: optional single-file denoiser.
        parallel: "ulysses" or "ring"; gpus: ranks, 0 = all visible GPUs.
    Returns:
        a ParallelModel: rank 0's family, whose predict runs on every rank.
    """
    from .families import load_model
    global _ACTIVE
    plan = plan_parallel(path, family, device, dtype, parallel, gpus, weights)
    if _ACTIVE is not None:
        _ACTIVE.close("replaced by a newer parallel load")
    session = _Session(plan)
    try:
        session.start()
        model = load_model(Path(path), family, plan.device(0), dtype, weights=weights)  # while the helpers load
        session.join(model)
    except BaseException:
        session.close("its load failed", force=True)
        raise
    _ACTIVE = session
    return ParallelModel(model, session)
