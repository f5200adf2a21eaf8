"""Kinema needs no package that itself requires torch (accelerate, kornia): pip would replace the user's or
ComfyUI's torch to install their newest releases. The torch-only replacements behave as those did."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from kinema.models.edit import upscale_frames
from kinema.models.media import rgb_to_ycbcr
from kinema.models.meta import init_empty_weights

REPO = Path(__file__).resolve().parents[2]


def test_runtime_imports_neither_accelerate_nor_kornia():
    for path in [p for d in ("models", "nodes", "host") for p in (REPO / d).rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not [n for n in names if n.split(".")[0] in ("accelerate", "kornia")], f"{path}: {names}"


def test_requirements_and_pyproject_agree_and_leave_torch_alone():
    import tomllib
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [r.strip() for r in (REPO / "requirements.txt").read_text().splitlines()
            if r.strip() and not r.startswith("#")]
    assert [d for d in deps if not d.startswith("torch")] == reqs       # the same packages and bounds
    assert not [r for r in reqs if r.split("<")[0].split(">")[0].split("=")[0] in ("torch", "accelerate", "kornia")]


def test_empty_weights_put_parameters_on_meta_and_keep_buffers():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)
            self.register_buffer("table", torch.arange(5.0), persistent=False)

    with init_empty_weights():
        net = Net()
    assert {p.device.type for p in net.parameters()} == {"meta"}
    assert torch.equal(net.table, torch.arange(5.0))
    assert Net().lin.weight.device.type == "cpu"                          # the patch is gone after the block
    net.load_state_dict({"lin.weight": torch.ones(3, 4), "lin.bias": torch.zeros(3)}, assign=True)
    assert torch.equal(net.lin(torch.ones(1, 4)), torch.full((1, 3), 4.0))


def test_torch_colour_and_upscale_equal_kornias_bit_for_bit():
    kornia = pytest.importorskip("kornia")
    x = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    assert torch.equal(rgb_to_ycbcr(x), kornia.color.rgb_to_ycbcr(x))
    frames = x.movedim(1, -1)
    for s in (2, 3):
        ref = kornia.geometry.transform.resize(x, (9 * s, 11 * s), interpolation="bicubic", antialias=True)
        assert torch.equal(upscale_frames(frames, s), ref.clamp(0, 1).movedim(1, -1))
