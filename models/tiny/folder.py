"""Writing a Kinema-Tiny model folder (diffusers layout: one sub-folder per part with config.json and safetensors
weights, a model_index.json at the top). Used by training and the fixtures; loading lives with each model."""
from __future__ import annotations

import json
from pathlib import Path

import torch

DIFFUSERS_VERSION = "0.42.1"


def write_json(path: Path, obj: dict) -> None:
    """`obj` as indented JSON at `path`, its folder made if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def write_part(folder: Path, name: str, module: torch.nn.Module, config: dict, weights: str,
               dtype: torch.dtype = torch.float16) -> None:
    """`folder/name/config.json` and `folder/name/<weights>` (the module's state dict stored as `dtype`; loading casts
    back to the runtime dtype)."""
    from safetensors.torch import save_file
    write_json(Path(folder) / name / "config.json", config)
    save_file({k: v.detach().to(dtype).contiguous() for k, v in module.state_dict().items()},
              str(Path(folder) / name / weights))


def write_index(folder: Path, pipeline_class: str, parts: dict, extra: dict | None = None) -> None:
    """model_index.json: the pipeline class, each part's [library, class], then `extra` (e.g. a model card field)."""
    write_json(Path(folder) / "model_index.json",
               {"_class_name": pipeline_class, "_diffusers_version": DIFFUSERS_VERSION} | parts | (extra or {}))


def write_scheduler(folder: Path, config: dict) -> None:
    write_json(Path(folder) / "scheduler" / "scheduler_config.json", config)
