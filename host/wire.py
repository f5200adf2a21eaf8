"""JSON on the wire: what the hosts accept (strict, bounded) and what they emit (always valid JSON).

- `loads` refuses NaN, Infinity and numbers that overflow to infinity (Python's json accepts all three, and a
  browser's JSON.parse fails on what they turn into), and nesting deeper than MAX_DEPTH (the C parser would raise
  RecursionError at ~1000 levels, and every recursive walk after it is at risk).
- `dumps` never writes NaN or Infinity: a value that holds one is written with null in its place.

Plain Python; used by the server (request bodies, responses, WebSocket events) and the CLI (workflow files).
"""
from __future__ import annotations

import json
import math

__all__ = ["MAX_DEPTH", "JSONRefused", "loads", "dumps", "depth_exceeds"]

MAX_DEPTH = 256          # objects/arrays inside one another; a workflow with subgraphs 32 deep needs ~130


class JSONRefused(ValueError):
    """Not JSON Kinema accepts; the message says what is wrong and where (`reason`: the same without where)."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def _no_constant(name: str):
    raise JSONRefused(f"{name} is not a number JSON allows; send a finite number (or null)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONRefused(f"the number {text[:40]} is too large (it overflows to infinity); send a finite number")
    return value


def loads(raw: bytes | str, what: str = "request body"):
    """Parse JSON strictly: JSONRefused for invalid JSON, NaN/Infinity, numbers that overflow and nesting deeper
    than MAX_DEPTH, each naming `what`."""
    too_deep = f"nested too deep (more than {MAX_DEPTH} levels of objects/arrays)"
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except JSONRefused as exc:
        raise JSONRefused(f"{what}: {exc}", str(exc)) from None
    except RecursionError:
        raise JSONRefused(f"{what} is {too_deep}", too_deep) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise JSONRefused(f"{what} is not valid JSON: {exc}", f"not valid JSON: {exc}") from None
    if depth_exceeds(data, MAX_DEPTH):
        raise JSONRefused(f"{what} is {too_deep}", too_deep)
    return data


def depth_exceeds(data, limit: int) -> bool:
    """True when objects/arrays nest more than `limit` levels (checked iteratively)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def dumps(obj) -> str:
    """JSON text of obj (unknown objects as str()); NaN and infinities written as null, never as NaN."""
    try:
        return json.dumps(obj, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(obj), default=str, allow_nan=False)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
