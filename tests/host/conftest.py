"""Shared by the host tests: small hand-built node classes (no torch) and their node definitions."""
from __future__ import annotations

import pytest

from kinema.host.object_info import object_info


class Loader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": (["a.safetensors", "b.safetensors"],)}}
    RETURN_TYPES = ("MODEL", "IMAGE")
    CATEGORY = "test"


class Sampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 64 - 1}),
                             "steps": ("INT", {"default": 20, "min": 1, "max": 100}),
                             "cfg": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 30.0}),
                             "sampler": (["euler", "ddim"],)},
                "optional": {"image": ("IMAGE",)}}
    RETURN_TYPES = ("LATENT",)


class Filter:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0})}}
    RETURN_TYPES = ("IMAGE",)


class Text:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True, "dynamicPrompts": True}),
                             "count": ("INT", {"default": 1, "control_after_generate": False}),
                             "n": ("INT", {"default": 3, "forceInput": True})}}
    RETURN_TYPES = ("STRING",)


class Save:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "Kinema"})},
                "optional": {"latent": ("LATENT",), "anything": ("*",)}}
    RETURN_TYPES = ()
    OUTPUT_NODE = True


CLASSES = {"Loader": Loader, "Sampler": Sampler, "Filter": Filter, "Text": Text, "Save": Save}


@pytest.fixture(scope="session")
def small_classes() -> dict:
    """Loader, Sampler, Filter, Text and Save: small node classes shaped like ComfyUI's core ones."""
    return dict(CLASSES)


@pytest.fixture(scope="session")
def info() -> dict:
    """The node definitions of `small_classes`."""
    return object_info(CLASSES, {"Loader": "Test Loader"})


def _good_prompt() -> dict:
    return {
        "1": {"class_type": "Loader", "inputs": {"name": "a.safetensors"}},
        "2": {"class_type": "Filter", "inputs": {"image": ["1", 1], "strength": 1.0}},
        "3": {"class_type": "Save", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }


@pytest.fixture
def good_prompt():
    """A factory of fresh valid prompts over `small_classes`: Loader(1) -> Filter(2) -> Save(3)."""
    return _good_prompt
