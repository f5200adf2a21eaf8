"""One registry per kind of model (video, audio, portrait): where a family is registered, how a folder is matched
to one, how it is loaded, and the `family` dropdown of its loader node (derived, so it cannot drift)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path

import torch

from ..checks import fail
from .base import VideoFamily, read_model_index

AUTO = "auto"


class Registry:
    """Families of one kind, in registration order (which is also the dropdown's order: never reorder)."""

    def __init__(self, kind: str, loader: str):
        self.kind = kind                  # "video", "audio", "portrait"
        self.loader = loader              # the node that loads this kind, for messages
        self.families: dict[str, type[VideoFamily]] = {}

    def register(self, cls: type[VideoFamily]) -> type[VideoFamily]:
        """Add a family class (keyed by cls.name). Usable as a decorator."""
        if cls.name in self.families:
            raise RuntimeError(f"{self.kind} family {cls.name!r} is registered twice")
        self.families[cls.name] = cls
        return cls

    def __contains__(self, name: str) -> bool:
        return name in self.families

    def choices(self) -> list[str]:
        """The loader's `family` dropdown: auto, then every family name."""
        return [AUTO, *self.families]

    def choice_enum(self, name: str) -> type[Enum]:
        """The dropdown as a str Enum (values saved in workflows: registration order is kept forever)."""
        return Enum(name, {value.upper(): value for value in self.choices()}, type=str)

    def describe(self) -> str:
        """'Wan T2V/I2V, Wan VACE, ...': what this kind loads, from the registered families' titles."""
        return ", ".join(cls.title or name for name, cls in self.families.items())

    def detect(self, path: Path) -> str | None:
        """The family whose `accepts` takes the folder's model_index.json, or None."""
        return self.match(read_model_index(path))

    def match(self, model_index: dict) -> str | None:
        return next((name for name, cls in self.families.items() if cls.accepts(model_index)), None)

    def load(self, path: Path, family: str = AUTO, device: torch.device | None = None,
             dtype: torch.dtype = torch.float32, **kwargs) -> VideoFamily:
        """Load a diffusers-format folder as a family of this kind (never downloads, never unpickles).

        Args:
            path: folder holding model_index.json.
            family: "auto" (read model_index.json) or one of the registered names (a mismatch is an error).
            device, dtype: where and how the denoiser and text encoder run.
        """
        path = Path(path)
        index = read_model_index(path)
        if family == AUTO:
            name = self.match(index)
            if name is None:
                fail("model", f"must be a {self.kind} model folder of a supported family ({self.describe()})",
                     index.get("_class_name"), f"Pick such a folder in {self.loader} (video, audio and portrait "
                     "models each have their own loader).")
        elif family not in self.families:
            fail("family", f"must be one of {self.choices()}", family, "Pick a listed family.")
        else:
            name = family
            if not self.families[name].accepts(index):
                fail("family", f"does not match the folder (its model_index.json says {index.get('_class_name')})",
                     name, "Set family to auto.")
        return self.families[name].load(path, device or torch.device("cpu"), dtype, **kwargs)
