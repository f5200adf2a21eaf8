"""The host's interrupt check inside long work of one step (context windows, tiles).

A host installs its check for a node's run with `checking(fn)`; the work calls `check()` between pieces, so a stop
pressed in the middle of an 801-frame windowed step is seen after the current window, not after the whole step.
`fn` raises the host's own interrupt (inside ComfyUI: comfy.model_management's InterruptProcessingException).
Outside any `checking` block `check()` does nothing. Never imports a host.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Callable, Iterator

_CHECK: ContextVar[Callable[[], None] | None] = ContextVar("kinema_interrupt_check", default=None)


def check() -> None:
    """Raise the host's interrupt when the user pressed stop (nothing when no host check is installed)."""
    fn = _CHECK.get()
    if fn is not None:
        fn()


@contextlib.contextmanager
def checking(fn: Callable[[], None] | None) -> Iterator[None]:
    """Inside the block, `check()` calls fn (None: no check)."""
    token = _CHECK.set(fn)
    try:
        yield
    finally:
        _CHECK.reset(token)
