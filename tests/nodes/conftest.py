"""Fixtures shared by the node tests."""
from __future__ import annotations

import pytest
import torch

WAN_FRAMES = 17                               # Wan: 5 latent frames -> 1 + 4 * 4 frames


@pytest.fixture(scope="module")
def wan(models_dir):
    """The Wan text-to-video fixture model (tiny, random weights)."""
    from kinema.models.families import load_model
    return load_model(models_dir / "diffusers" / "fixture-wan-t2v")


@pytest.fixture
def latent():
    """A seeded Wan LATENT of 17 frames of 32x48."""
    torch.manual_seed(0)
    return {"samples": torch.randn(1, 16, 5, 4, 6), "kinema_frames": WAN_FRAMES}
