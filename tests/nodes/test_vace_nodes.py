"""Wan VACE through the nodes: Load Video Model detects the folder, Reference Image attaches VACE references
(strength = conditioning_scale, 0 = none), the Temporal Sampler makes the clip without the reference frames."""
from __future__ import annotations

import pytest
import torch

from kinema.nodes import edit as N

pytestmark = pytest.mark.usefixtures("one_thread")


def test_reference_image_node_on_wan_vace(kinema_dirs):
    from kinema.nodes.loaders import KinemaLoadVideoModel
    from kinema.nodes.sampling import KinemaTemporalSampler
    (model,) = KinemaLoadVideoModel().load("fixture-wan-vace", "auto", "auto", "auto", "none")
    assert model.name == "wan_vace"
    pos, neg = model.encode_prompt("a star dances"), model.encode_prompt("")
    ref = torch.rand(2, 24, 40, 4)                                      # a batch: two references, alpha dropped
    (cond,) = N.KinemaReferenceImage().attach(model, pos, ref, 0.8)
    assert len(cond.references.images) == 2 and cond.references.strength == 0.8
    assert cond.references.images[0].shape == (24, 40, 3) and cond.image is None
    assert N.KinemaReferenceImage().attach(model, pos, ref, 0.0)[0] is pos
    assert "conditioning_scale" in N.KinemaReferenceImage.INPUT_TYPES()["required"]["strength"][1]["tooltip"]
    (latent,) = KinemaTemporalSampler().sample(model, cond, neg, 5, 32, 32, 2, 5.0, 0, "default", 0.0, 1.0)
    assert latent["samples"].shape == (1, 16, 2, 4, 4)
