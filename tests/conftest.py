"""Shared fixtures: tiny random-weight models of every family, built once per session in their real layout."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A models folder holding diffusers/<name> for every name in models/fixtures.FIXTURES (Wan T2V, I2V and VACE,
    AnimateDiff, Stable Audio, LTX-2), built once per session; tests read it and never change it."""
    from kinema.models.fixtures import write_fixtures
    root = tmp_path_factory.mktemp("models")
    write_fixtures(root)
    return root


@pytest.fixture
def kinema_dirs(models_dir, tmp_path):
    """Point the nodes at the fixture models and fresh input/output/temp folders (for this test only)."""
    from kinema.nodes import env
    dirs = {k: tmp_path / k for k in ("input", "output", "temp")}
    for d in dirs.values():
        d.mkdir()
    with env.using(env.Folders.of(models_dir, dirs["input"], dirs["output"], dirs["temp"])):
        yield {"models": models_dir, **dirs}


@pytest.fixture(scope="module")
def one_thread():
    """The fixture models are tiny: one torch thread is faster than two fighting over a shared 2-core machine
    (and CPU float sums then do not depend on the machine's core count)."""
    import torch
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
