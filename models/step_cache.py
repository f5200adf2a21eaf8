"""Step caching (MagCache's rule on the denoiser's output): skip a denoiser call when the predicted change since the
last computed step is small, and reuse that step's result instead.

It plugs into the one loop through `sample(..., predict=...)`: `session()` wraps the family's predict (or another
replacement such as the upscaler's tiles) for one run. Per step i (after the first `retention` fraction of steps,
which always compute) and per branch b of the batch (classifier-free guidance batches [negative, positive]: each
branch has its own residual and its own error):

    ratio[i][b]   = mean over positions of |r_i| / |r_(i-1)|   (r = denoiser output - its input; |.| over channels)
    acc_ratio_b  *= ratio[i][b];   acc_err_b += |1 - acc_ratio_b|
    skip when every branch's acc_err <= threshold and at most `max_skips` steps in a row were skipped;
    a skipped call returns each branch's last computed output (velocity / noise prediction).

Reusing the output rather than input + residual measured better on Kinema-Tiny (flow velocity is nearly constant
between steps: 43.6 against 40.1 dB at 2.73x fewer calls over 12 prompts, bench/step_cache.py); the residual's
magnitude ratio decides which steps to skip (better than the output's: 40.2 dB at the same calls).

What the checker's accuracy loses looks like its own noise, not shapes broken by skipping (bench/step_cache.py): the
clips whose shape verdict flips are near-ties for the checker (their uncached top-two shape scores differ by 0.00-0.03
per frame; the median clip's by 0.06), the same clips flip when the uncached run only has fewer steps (12 steps: 4
lost, 2 won), and on a held-out seed set threshold 0.4 flips none. Computing the last steps (`tail`) did not help.
The defaults (threshold 0.4, max_skips 3: 12 of 30 calls, 42.2 dB) lost 2 and won 1 of 72; thresholds 0.1-0.2 lost
4-5 with more calls: the flips do not follow the threshold.

The ratios are the model's, not a table's: the first run of a model + scheduler + steps (+ shift, denoise, number
of branches) computes every step and measures them (calibration), then stores them beside the model
(`kinema_step_cache.json` in its folder, or `<file>.kinema_step_cache.json` next to a single file). Later runs read
them. Context windows (and spatial tiles) call the denoiser several times per step: each call position in a step
has its own state, so windows are cached independently.

diffusers' own MagCache / FirstBlockCache hooks work inside diffusers transformers' block lists (one state per
module, ratios printed for copying); this runs at the loop's one predict call so that every family (Kinema-Tiny's
transformer, AnimateDiff's UNet, Wan), windows and CFG branches share it. Ratios are measured for the exact step
count (never interpolated from another count as diffusers' `nearest_interp` does).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from .checks import check_range, fail

STORE_NAME = "kinema_step_cache.json"
FORMAT = 1
Predict = Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor]


@dataclass(frozen=True)
class StepCache:
    """What the Step Cache node asks for (the KINEMA_STEP_CACHE value).

    threshold: accumulated relative change allowed before a step must compute (0.05 careful .. 0.4 fast).
    max_skips: most steps skipped in a row. retention: fraction of the first steps that always compute.
    tail: fraction of the last steps that always compute (measured no better on Kinema-Tiny, hence 0).
    store: a folder for the calibration file instead of beside the model (None: beside the model).
    The defaults make 2.5x fewer calls on Kinema-Tiny at 30 steps (bench/step_cache.py)."""
    threshold: float = 0.4
    max_skips: int = 3
    retention: float = 0.2
    store: Path | None = None
    tail: float = 0.0

    def check(self) -> None:
        check_range("threshold", self.threshold, 0.0, 10.0)
        check_range("max_skips", self.max_skips, 0, 1000)
        check_range("retention", self.retention, 0.0, 1.0)
        check_range("tail", self.tail, 0.0, 1.0)


@dataclass
class Stats:
    """What one run did: denoiser calls made and skipped; calibrated: this run measured the ratios."""
    calls: int = 0
    skipped: int = 0
    calibrated: bool = False
    store: Path | None = None
    skipped_steps: list[int] = field(default_factory=list)

    @property
    def saving(self) -> float:
        """Denoiser calls an uncached run makes per call made here (1.0: no saving)."""
        return (self.calls + self.skipped) / max(self.calls, 1)

    def add(self, other: "Stats") -> None:
        """Count another run's calls into this one (a node that samples several times: portrait windows)."""
        self.calls += other.calls
        self.skipped += other.skipped
        self.calibrated = self.calibrated or other.calibrated
        self.store = other.store or self.store
        self.skipped_steps += other.skipped_steps

    def text(self) -> str:
        if not self.calls and not self.skipped:
            return "step cache: not used (nothing was sampled)"
        counts = f"{self.calls} denoiser calls, {self.skipped} skipped ({self.saving:.2f}x fewer)"
        if self.calibrated and not self.skipped:
            return f"step cache: calibrated on this run ({self.calls} calls), stored in {self.store}"
        if self.calibrated:
            return f"step cache: calibrated on the first run (stored in {self.store}), then {counts}"
        return f"step cache: {counts}"


# ---- the calibration file ----------------------------------------------------------------------------------------
def store_path(model, cache: StepCache) -> Path:
    """Where a model's calibrations live: beside it (its folder, or next to its single file), or in cache.store."""
    path = Path(getattr(model, "path", "."))
    if cache.store is not None:
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        return Path(cache.store) / f"{path.name}-{digest}.{STORE_NAME}"
    return path / STORE_NAME if path.is_dir() else path.with_name(path.name + "." + STORE_NAME)


def fingerprint(model) -> str:
    """A short hash of the denoiser weights' first and last values and any LoRA stack (ratios are per weights)."""
    from .lora import denoisers
    h = hashlib.sha1()
    for name, module in sorted(denoisers(getattr(model, "base", model)).items()):
        params = list(module.parameters())
        for p in (params[:1] + params[-1:]):
            h.update(name.encode() + p.detach().flatten()[:256].float().cpu().numpy().tobytes())
    for lora in getattr(model, "loras", ()):
        h.update(f"{lora.name}@{lora.strength}".encode())
    return h.hexdigest()[:16]


def run_key(model, settings, branches: int) -> str:
    """The calibration's key: what the ratios depend on (weights, scheduler, shift, steps, denoise, branches)."""
    return (f"{model.name}|{fingerprint(model)}|{settings.scheduler}|shift={settings.shift:g}|"
            f"steps={settings.num_inference_steps}|denoise={settings.denoise:g}|branches={branches}")


def read_store(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        warnings.warn(f"step cache: {path} is unreadable; calibrating again and replacing it", stacklevel=2)
        return {}
    return data.get("entries", {}) if isinstance(data, dict) and data.get("format") == FORMAT else {}


def write_store(path: Path, key: str, ratios: list[list[float]]) -> bool:
    """Add one calibration to the file atomically. False (with a warning) when the folder is not writable."""
    entries = read_store(path)
    entries[key] = {"ratios": ratios}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"format": FORMAT, "entries": entries}, f, indent=1)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"step cache: cannot store the calibration beside the model ({exc}); this run's ratios are "
                      f"kept for this process only", stacklevel=2)
        return False
    return True


# ---- one run -----------------------------------------------------------------------------------------------------
def _norms(r: torch.Tensor) -> torch.Tensor:
    """Per-branch magnitude field of a residual (B, C, ...) -> (B, positions): the norm over channels."""
    return torch.linalg.vector_norm(r.float().flatten(2), dim=1)


class Slot:
    """The state of one call position in a step (the whole clip, or one window / tile) across the steps."""

    def __init__(self):
        self.residual: torch.Tensor | None = None       # (B, C, ...) last computed output - input (calibration)
        self.output: torch.Tensor | None = None         # (B, C, ...) last computed output
        self.ratio: list[float] = []                    # accumulated magnitude ratio per branch
        self.err: list[float] = []                      # accumulated error per branch
        self.skips = 0                                  # steps skipped in a row
        self.measured: list[list[float]] = []           # calibration: ratio per step per branch


class CachedPredict:
    """The `predict=` of one run: calls `inner` or reuses a residual (see the module docstring)."""

    _memory: dict[str, list[list[float]]] = {}          # calibrations that could not be stored (this process)

    def __init__(self, cache: StepCache, model, settings, inner: Predict):
        self.cache, self.model, self.settings, self.inner = cache, model, settings, inner
        self.store = store_path(model, cache)
        self.ratios: list[list[float]] | None = None    # per step per branch, once known
        self.key: str | None = None
        self.step, self.position, self.last_t = -1, 0, None
        self.slots: list[Slot] = []
        self.stats = Stats(store=self.store)
        self.retention = int(cache.retention * settings.num_inference_steps + 0.5)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, batch: dict) -> torch.Tensor:
        if self.key is None:
            self._start(x.shape[0])
        if self.last_t is None or not torch.equal(t, self.last_t):
            self.step, self.position, self.last_t = self.step + 1, 0, t.clone()
        if self.position == len(self.slots):
            self.slots.append(Slot())
        slot = self.slots[self.position]
        self.position += 1
        if self._may_skip(slot, x.shape[0]):
            self.stats.skipped += 1
            self.stats.skipped_steps.append(self.step)
            return slot.output.clone()
        out = self.inner(x, t, batch)
        self.stats.calls += 1
        self._remember(slot, x, out)
        return out

    def _start(self, branches: int) -> None:
        self.key = run_key(self.model, self.settings, branches)
        self.ratios = read_store(self.store).get(self.key, {}).get("ratios") or self._memory.get(self.key)
        self.stats.calibrated = self.ratios is None

    def _may_skip(self, slot: Slot, branches: int) -> bool:
        if self.ratios is None or slot.output is None or self.step < self.retention:
            return False
        if self.step >= len(self.ratios) - int(self.cache.tail * len(self.ratios) + 0.5):   # the steps run
            return False
        if self.step >= len(self.ratios) or len(self.ratios[self.step]) != branches:
            return False
        slot.ratio = [a * r for a, r in zip(slot.ratio or [1.0] * branches, self.ratios[self.step])]
        slot.err = [e + abs(1.0 - a) for e, a in zip(slot.err or [0.0] * branches, slot.ratio)]
        if max(slot.err) <= self.cache.threshold and slot.skips < self.cache.max_skips:
            slot.skips += 1
            return True
        slot.ratio, slot.err, slot.skips = [], [], 0
        return False

    def _remember(self, slot: Slot, x: torch.Tensor, out: torch.Tensor) -> None:
        slot.output = out
        if self.ratios is not None:
            slot.ratio, slot.err, slot.skips = [], [], 0
            return
        residual = out.float() - x.float()                    # calibrating: measure |r_i| / |r_(i-1)| per branch
        if slot.residual is None:
            ratio = [1.0] * x.shape[0]
        else:
            ratio = (_norms(residual) / (_norms(slot.residual) + 1e-8)).mean(dim=1).tolist()
        slot.measured.append(ratio)
        slot.residual = residual
        slot.ratio, slot.err, slot.skips = [], [], 0

    def finish(self) -> Stats:
        """After a complete run: store the calibration when this run measured one (averaged over call positions)."""
        if self.ratios is None and self.slots and self.key is not None:
            steps = min(len(s.measured) for s in self.slots)
            ratios = [[sum(s.measured[i][b] for s in self.slots) / len(self.slots)
                       for b in range(len(self.slots[0].measured[i]))] for i in range(steps)]
            if not write_store(self.store, self.key, ratios):
                self._memory[self.key] = ratios
        return self.stats


@contextlib.contextmanager
def session(cache: StepCache | None, model, settings, inner: Predict | None = None, stats: Stats | None = None
            ) -> Iterator[CachedPredict | Predict | None]:
    """The `predict=` for one `sample()` run: `inner` (None: the family's predict) unchanged without a cache, else
    wrapped in a CachedPredict, whose calibration is stored when the run completes (an interrupted run stores
    nothing). Its `.stats` tell what it did; `stats`, when given, also receives them (summed over runs)."""
    if cache is None:
        yield inner
        return
    cache.check()
    cached = CachedPredict(cache, model, settings, inner or model.predict)
    yield cached
    cached.finish()
    if stats is not None:
        stats.add(cached.stats)


def refuse_flowedit(cache: StepCache | None) -> None:
    """FlowEdit predicts two coupled trajectories per step; reusing either would break their difference."""
    if cache is not None:
        fail("step_cache", "cannot be used with method flowedit (its two coupled predictions per step must be "
             "fresh)", "a Step Cache input", "Disconnect `step_cache`, or use method sdedit.")


__all__ = ["CachedPredict", "StepCache", "Stats", "refuse_flowedit", "session", "store_path"]
