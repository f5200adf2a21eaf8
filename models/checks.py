"""Input checks shared by nodes, runner and tests.

Every check raises ValueError with one template: "`{arg}` {rule}, got {value}. {fix}." so the editor, the
runner and the tests show the same text. The host adds the node id and class.
"""
from __future__ import annotations

from typing import Any, Iterable


def fail(arg: str, rule: str, value: Any, fix: str) -> None:
    raise ValueError(f"`{arg}` {rule}, got {value!r}. {fix}")


def check_range(arg: str, value: float, lo: float | None = None, hi: float | None = None, fix: str = "") -> None:
    """Raise unless lo <= value <= hi (either bound may be None)."""
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rule = f"must be between {lo} and {hi}" if lo is not None and hi is not None else (
            f"must be at least {lo}" if lo is not None else f"must be at most {hi}")
        fail(arg, rule, value, fix or f"Pick a value in range.")


def check_multiple(arg: str, value: int, multiple: int, fix: str = "") -> None:
    if value % multiple:
        lo, hi = value // multiple * multiple, (value // multiple + 1) * multiple
        fail(arg, f"must be a multiple of {multiple}", value, fix or f"Use {lo or multiple} or {hi}.")


def check_frames(arg: str, value: int, temporal: int) -> None:
    """Frames for a causal video VAE with temporal compression `temporal`: must be temporal*k+1. Never rounded."""
    if temporal > 1 and (value - 1) % temporal:
        lo = (value - 1) // temporal * temporal + 1
        hi = lo + temporal
        opts = [v for v in (lo, hi) if v >= 1]
        fail(arg, f"must be {temporal}k+1 for this model (e.g. {temporal * 4 + 1}, {temporal * 20 + 1})", value,
             f"Use {' or '.join(map(str, opts))}: frame counts are never rounded silently, sync depends on them.")


def check_choice(arg: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        fail(arg, f"must be one of {choices}", value, "Pick one of the listed values.")


def check_shape(arg: str, tensor, ndim: int, what: str, fix: str) -> None:
    if getattr(tensor, "ndim", None) != ndim:
        fail(arg, f"must be a {ndim}-D tensor {what}", tuple(getattr(tensor, "shape", ())), fix)
