"""Load Video Model's `parallel` option (models/parallel.py), run on the CPU: KINEMA_PARALLEL_DEVICE=cpu makes the
same code start CPU helper processes joined over gloo, so the Wan fixture is sharded over 2 ranks here exactly as it
would be over 2 GPUs (tests/host/test_batch.py holds the gpu-marked twin)."""
from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from kinema.models import parallel as P
from kinema.nodes.conditioning import KinemaTextEncode
from kinema.nodes.loaders import KinemaLoadVideoModel
from kinema.nodes.sampling import KinemaTemporalSampler

WAN = "fixture-wan-t2v"     # 2 attention heads; 9 frames at 32x32 = 3 x 2 x 2 = 12 tokens per denoiser call


@pytest.fixture
def cpu_ranks(kinema_dirs, monkeypatch):
    monkeypatch.setenv(P.DEVICE_ENV, "cpu")
    monkeypatch.setenv(P.TIMEOUT_ENV, "60")
    yield kinema_dirs
    if P._ACTIVE is not None:                       # never leave helpers behind, whatever a test did
        P._ACTIVE.close()


def _load(parallel="none", gpus=0, model=WAN):
    return KinemaLoadVideoModel().load(model, "auto", "cpu", "fp32", "none", parallel, gpus)[0]


def _sample(model, size=32):
    pos, = KinemaTextEncode().encode(model, "a red ball bounces")
    neg, = KinemaTextEncode().encode(model, "")
    out, = KinemaTemporalSampler().sample(model, pos, neg, 9, size, size, 3, 4.0, 7, "default", 0.0, 1.0)
    return out["samples"]


def _gone(pid: int, within: float = 60.0) -> bool:
    """The process has exited (reaped, or a zombie its parent has yet to reap). Polls: returns as soon as it has,
    so the generous limit costs nothing when it passes and no machine load reaches it."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_ulysses_over_two_ranks_matches_one_device(cpu_ranks):
    from kinema.models.families.wan import WanFamily
    plain = _load()
    assert type(plain) is WanFamily                                   # none: the plain family, as before
    reference = _sample(plain)

    model = _load("ulysses", 2)
    assert isinstance(model, P.ParallelModel) and model.name == "wan" and model.parallel.world == 2
    latents = _sample(model)
    assert (latents - reference).abs().max() < 1e-4
    ranks = model.parallel_status()
    assert [r["tokens"] for r in ranks] == [6, 6]                     # each rank's first attention saw half
    helper = ranks[1]["pid"]
    assert helper != os.getpid()

    # a size whose tokens do not split evenly is refused before any rank starts the step; the model stays usable
    with pytest.raises(ValueError, match=r"`gpus` must divide the 3 tokens of each denoiser call .*got 2\. "):
        _sample(model, size=16)
    assert (_sample(model) - reference).abs().max() < 1e-4

    model.release()
    assert _gone(helper) and P._ACTIVE is None and not torch.distributed.is_initialized()
    with pytest.raises(RuntimeError, match="`model` was released"):
        model.encode_prompt("x")


def test_helpers_stop_when_replaced_and_a_dead_helper_is_an_error_not_a_hang(cpu_ranks):
    first = _load("ulysses", 2)
    first_helper = first.parallel_status()[1]["pid"]
    second = _load("ulysses", 2)                     # one process group per process: the new load replaces it
    assert _gone(first_helper)
    with pytest.raises(RuntimeError, match="`model` was released \\(replaced by a newer parallel load\\)"):
        _sample(first)

    # the helper dies while the host is already inside the step's collectives: gloo fails, the host reports it
    helper = second.parallel_status()[1]["pid"]
    session = second._session
    session.check_alive = lambda: None               # skip the check made before each step
    os.kill(helper, signal.SIGKILL)
    assert _gone(helper)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"`parallel` helper process 1 of 2 \(pid \d+\) exited with code -9"):
        _sample(second)
    assert time.monotonic() - start < 30                              # not the 60 s collective timeout
    assert session.closed and P._ACTIVE is None and not torch.distributed.is_initialized()


def test_a_helper_that_died_between_steps_is_reported_before_the_step(cpu_ranks):
    model = _load("ulysses", 2)
    helper = model.parallel_status()[1]["pid"]
    os.kill(helper, signal.SIGKILL)
    assert _gone(helper)
    with pytest.raises(RuntimeError, match=r"`parallel` helper process 1 of 2 .*exited with code -9.*Load Video "
                                           r"Model again"):
        _sample(model)
    assert P._ACTIVE is None and not torch.distributed.is_initialized()


@pytest.mark.parametrize("model,parallel,gpus,message", [
    ("kinema-tiny-video", "ulysses", 2, r"`parallel` needs a model whose transformer has a context-parallel plan "
                                        r".*got 'KinemaTinyPipeline'\. Set parallel to none"),
    ("fixture-animatediff", "ulysses", 2, r"`parallel` needs a model whose transformer has a context-parallel plan"),
    (WAN, "ulysses", 1, r"`gpus` must give at least 2 devices to shard `ulysses` over .*got 1\. Set parallel to "
                        r"none"),
    (WAN, "ulysses", 3, r"`gpus` must divide the 2 attention heads of the transformer for ulysses, got 3\. Use 2 "
                        r"GPUs, or set parallel to ring"),
    (WAN, "ring", 2, r"`parallel` ring needs an attention kernel that returns the softmax LSE .*got 'ring on cpu "
                     r"in float32'\. Use parallel ulysses"),
    (WAN, "sideways", 2, r"`parallel` must be one of \['none', 'ulysses', 'ring'\]"),
])
def test_checks_name_the_input_and_the_fix(cpu_ranks, model, parallel, gpus, message):
    with pytest.raises(ValueError, match=message):
        _load(parallel, gpus, model)
    assert P._ACTIVE is None                                          # refused before any process started


def test_parallel_needs_cuda_and_nccl_outside_the_cpu_switch(kinema_dirs, monkeypatch):
    monkeypatch.delenv(P.DEVICE_ENV, raising=False)
    with pytest.raises(ValueError, match=r"`parallel` needs CUDA GPUs, got 'cpu'\. Set device to auto or cuda"):
        _load("ulysses", 2)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"`parallel` needs NCCL to join the GPUs, .* Fixes: install a CUDA "
                                           r"build of torch"):
        P.check_backend("cuda")
    with pytest.raises(ValueError, match=r"`gpus` must be at most the 1 visible CUDA GPUs, got 2"):
        P.check_devices("ulysses", 2, "cuda", 1)


@pytest.mark.gpu
def test_ulysses_over_two_gpus_through_the_loader_matches_one(kinema_dirs, monkeypatch):
    """The same as the CPU test, on real GPUs over NCCL (skipped with fewer than two CUDA GPUs)."""
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        pytest.skip("needs two or more CUDA GPUs")
    monkeypatch.delenv(P.DEVICE_ENV, raising=False)
    monkeypatch.setenv(P.TIMEOUT_ENV, "120")
    loader = KinemaLoadVideoModel()
    plain = loader.load(WAN, "auto", "cuda", "fp32", "none", "none", 0)[0]
    reference = _sample(plain)
    del plain
    model = loader.load(WAN, "auto", "cuda", "fp32", "none", "ulysses", 2)[0]   # the fixture has 2 heads: 2 GPUs
    try:
        assert (_sample(model) - reference).abs().max() < 1e-4
        ranks = model.parallel_status()
        assert [r["tokens"] for r in ranks] == [6, 6] and [r["device"] for r in ranks] == ["cuda:0", "cuda:1"]
    finally:
        model.release()
    assert _gone(ranks[1]["pid"]) and not torch.distributed.is_initialized()
