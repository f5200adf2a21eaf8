"""models/fixtures.py: the tiny random-weight models are the same whatever the caller's RNG state, and building
them never touches the caller's RNG (`kinema fixtures`, and every test that builds them mid-run)."""
from __future__ import annotations

import torch

from kinema.models import fixtures


def _weights(pipe) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name, module in pipe.components.items() if isinstance(module, torch.nn.Module)
            for k, v in module.state_dict().items()}


def test_builders_leave_the_callers_rng_alone_and_weights_do_not_depend_on_it(tmp_path):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    first = _weights(fixtures.build_stable_audio())
    assert torch.equal(torch.get_rng_state(), state)                    # the caller's stream goes on unchanged
    expected_next = torch.rand(3)
    torch.manual_seed(99)                                               # another caller state: the same weights
    second = _weights(fixtures.build_stable_audio())
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    torch.set_rng_state(state)
    fixtures.write_fixtures(tmp_path, ["fixture-stable-audio"])         # the `kinema fixtures` path
    assert torch.equal(torch.rand(3), expected_next)
