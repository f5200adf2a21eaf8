"""The family protocol as a contract: every registered family keeps the base signatures (so generic code can call
any family the same way), declares its capabilities as data, and the registries' dropdowns follow the registries."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch

from kinema.models.families import AUDIO, PORTRAIT, VIDEO, AudioFamilyChoice, FamilyChoice
from kinema.models.families.base import AudioFamily, Capabilities, VideoFamily

REPO = Path(__file__).resolve().parents[2]
FAMILIES = [cls for reg in (VIDEO, AUDIO, PORTRAIT) for cls in reg.families.values()]
PROTOCOL = [name for name, member in vars(VideoFamily).items()
            if callable(member) and not name.startswith("_") and name not in ("accepts", "load")]


def _params(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.name)
def test_overrides_keep_the_protocol_signatures(cls):
    """An override takes the base method's positional parameters, in order (it may add optional ones): a caller
    that passes what the base declares (e.g. encode(frames, tiling)) works on every family."""
    base = AudioFamily if issubclass(cls, AudioFamily) else VideoFamily
    for name in PROTOCOL:
        ours, theirs = getattr(cls, name), getattr(base, name)
        if ours is theirs:
            continue
        want, got = _params(theirs), _params(ours)
        assert got[:len(want)] == want, f"{cls.__name__}.{name}{got} does not start with {want}"
        extra = list(inspect.signature(ours).parameters.values())[len(want):]
        assert all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in extra), \
            f"{cls.__name__}.{name} adds required parameters"


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.name)
def test_families_declare_name_title_and_capabilities(cls):
    assert cls.name and cls.name.isascii() and cls.name == cls.name.lower()
    assert cls.title and isinstance(cls.capabilities, Capabilities)
    caps = cls.capabilities
    assert not (caps.attention_windows and not caps.windows)
    if issubclass(cls, AudioFamily):
        assert caps.text_to_audio or caps.video_to_audio
    if cls in PORTRAIT.families.values():
        assert caps.portrait


def test_dropdowns_are_derived_from_the_registries():
    """The loaders' `family` values: auto + the registered names, in registration order (saved in workflows:
    these exact values must never change)."""
    assert [c.value for c in FamilyChoice] == ["auto", "wan", "wan_vace", "animatediff", "kinema_tiny", "ltx2"]
    assert [c.value for c in AudioFamilyChoice] == ["auto", "stable_audio", "ltx2", "kinema_tiny_audio"]
    assert VIDEO.choices() == [c.value for c in FamilyChoice]


def test_error_messages_list_every_registered_family(tmp_path):
    """The audio loader's message used to omit the bundled Kinema-Tiny Audio: now it is built from the registry."""
    (tmp_path / "model_index.json").write_text('{"_class_name": "SomethingElse"}')
    with pytest.raises(ValueError) as err:
        AUDIO.load(tmp_path)
    for cls in AUDIO.families.values():
        assert cls.title in str(err.value)
    assert "Load Audio Model" in str(err.value)


def test_generic_code_asks_capabilities_not_attributes():
    """sampling, edit, audio and portrait never probe a family with hasattr / getattr (they ask capabilities)."""
    for name in ("sampling.py", "edit.py", "audio.py", "portrait.py"):
        tree = ast.parse((REPO / "models" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("hasattr", "getattr"):
                target = node.args[0]
                assert not (isinstance(target, ast.Name) and target.id == "model"), \
                    f"models/{name}:{node.lineno} probes the family with {node.func.id}"


def test_no_long_functions_in_models():
    """The runtime stays readable: no function in models/ over 60 lines."""
    long = []
    for path in (REPO / "models").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} "
                            f"({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_video_encode_with_tiling_works_on_every_video_family(models_dir):
    """Bug: Video Encode with Tiled VAE Options on kinema-tiny-video raised a bare TypeError (its encode took no
    tiling). Every family's encode takes the tiling argument now."""
    from kinema.models.families import load_model
    from kinema.models.tiny.pipeline import DEFAULT_WEIGHTS
    from kinema.models.vae_tiling import TileSettings
    from kinema.nodes.decode import KinemaVideoEncode
    for path in (DEFAULT_WEIGHTS, models_dir / "diffusers" / "fixture-wan-t2v"):
        model = load_model(path)
        frames = torch.rand(1, 32, 32, 3)
        (latent,) = KinemaVideoEncode().encode(model, frames, 9, TileSettings(memory_mb=64))
        (plain,) = KinemaVideoEncode().encode(model, frames, 9)
        assert latent["samples"].shape == (1, model.latent_channels, model.latent_frames(9), 32 // model.spatial_ratio,
                                           32 // model.spatial_ratio)
        assert (latent["samples"] - plain["samples"]).abs().max() < 1e-4
