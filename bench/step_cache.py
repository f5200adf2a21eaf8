"""Step cache: calls saved, wall-clock speedup and quality against the uncached result, in one run, on Kinema-Tiny's
trained weights through the real sampling loop (models/sampling.sample with the cache's predict=).

For each of the 72 evaluation prompts (training/tiny/checker.eval_set: fixed prompts and seeds) it samples once
uncached and once per threshold, decodes, and prints per threshold: denoiser calls per clip (and the ratio to the
uncached count), sampling seconds (sum over clips; ratio to uncached), PSNR and SSIM of the frames against the
uncached frames of the same seed (mean over clips; PSNR of the pooled MSE too), and the pixel checker's colour /
shape / direction accuracy over the 72 clips (uncached first), with the shape verdicts it flips against uncached
(lost: right uncached, wrong cached / won: the reverse). The calibration is the cache's own: the first cached run
measures the ratios (a full run, counted apart), every later run reads them. --noise adds the uncached accuracy on a
second seed set (seeds + 4000) and its flips: how much the checker moves with no cache at all; --seed-offset runs
the whole comparison on another seed set (a held-out check of settings chosen on the default seeds).

    OMP_NUM_THREADS=1 .venv/bin/python bench/step_cache.py [--steps 30] [--thresholds 0.05,0.1,0.2,0.4]
        [--max-skips 3] [--retention 0.2] [--tail 0] [--seed-offset 0] [--noise]
Takes about 6 minutes on one quiet CPU core (72 clips x 5 samplings of 30 steps); 23 on a busy shared one.

Measured 2026-12-03, 72 prompts, 30 steps, cfg 4 (uncached: colour 100%, shape 86.1%, direction 100%; the same
72 prompts uncached on seeds +4000: shape 87.5%). Shape in parentheses: verdicts lost / won against uncached.
Rows marked * came from the same computation (same seeds, calibration on the first prompt, PSNR of the same decoded
frames) run config by config in parallel on a loaded machine: no wall-clock speedup or SSIM for them; the first run's
speedup tracked the call ratio (2.77x at 2.73x fewer calls). Colour stayed 100% in every row, direction 100% on the
default seeds except where noted.
    settings                      calls  fewer  speedup  PSNR mean (min)  SSIM    shape
    max_skips 3, retention 0.2 (the defaults; re-run in one process 16:39 UTC while the test suite ran: uncached
    104.0 s for the 72 clips):
      threshold 0.05              20.0   1.50x  1.54x    54.6 (46.3)      0.9997  86.1% (same steps as max_skips 4)
      threshold 0.1               16.0   1.88x  1.81x    47.9 (35.5)      0.9987  80.6% (4/0)
      threshold 0.2               13.0   2.31x  2.23x    45.1 (31.7)      0.9974  79.2% (5/0)
      threshold 0.4               12.0   2.50x  2.29x    42.2 (28.6)      0.9954  84.7% (2/1)
    max_skips 4, retention 0.2 (the earlier defaults):
      threshold 0.1               15.0   2.00x  2.00x    47.9 (35.5)      0.9986  80.6%
      threshold 0.2               13.0   2.31x  2.39x    44.4 (31.7)      0.9972  81.9%
      threshold 0.4               11.0   2.73x  2.77x    41.6 (28.2)      0.9949  81.9% (4/1)
    max_skips 2, retention 0.1 *:
      threshold 0.05 / 0.1 / 0.2  21.0 / 15.0 / 13.0 calls: 54.7 / 47.2 / 43.0 dB, shape 86.1% (0/0) / 83.3% (2/0) /
                                  84.7% (1/0)
      threshold 0.4               12.0   2.50x  -        38.8 (27.4)      -       83.3% (3/1)
    last steps always computed * (tail 0.07, threshold 1, max_skips 4): 12 calls, 38.5 dB, shape 80.6% (4/0);
        (tail 0.1, retention 0.1, threshold 0.4, max_skips 3): 12 calls, 37.9 dB, 83.3% (2/0)
    uncached with 12 steps (the calls of 2.5x) *: shape 83.3% (4/2), direction 97.9%
    held out, seeds +4000 *: threshold 0.4 max_skips 3 (the defaults): shape 87.5% (0/0), direction 97.9% (1 clip
        of 48); max_skips 4: the same (0/0, 97.9%)
The shape verdicts that flip are near-ties for the checker: every flipped clip's uncached top-two shape scores differ
by 0.00-0.03 per frame (median clip: 0.06), and the same clips (a blue circle, a green star, a red star) flip in
almost every row, the 12-step uncached run included. Settings were chosen on the default seeds (the reported set);
the +4000 seeds are the held-out check. Shape is not monotone in the threshold (79.2% at 0.2, 84.7% at 0.4): at 72
clips one verdict is 1.4 points, so the 2-point goal is below what this checker resolves on these near-ties."""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))                  # training/ (the checker) lives beside the package


def _metrics(frames: torch.Tensor, ref: torch.Tensor) -> tuple[float, float, float]:
    """(mse, psnr dB, ssim) of frames (F, H, W, 3) 0..1 against ref."""
    from kornia.metrics import ssim
    mse = float(((frames - ref) ** 2).mean())
    psnr = 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()
    a, b = (x.permute(0, 3, 1, 2).float() for x in (frames, ref))                    # (F, 3, H, W)
    return mse, psnr, float(ssim(a, b, 11).mean())


def _sample(model, pos, neg, settings, cache):
    from kinema.models.sampling import sample
    from kinema.models.step_cache import session
    start = time.perf_counter()
    with session(cache, model, settings) as predict:
        latents = sample(model, pos, neg, settings, predict=predict)
    seconds = time.perf_counter() - start
    stats = predict.stats if cache is not None else None
    return model.decode(latents).clamp(0, 1), seconds, stats


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--count", type=int, default=72)
    p.add_argument("--max-skips", type=int, default=3)
    p.add_argument("--retention", type=float, default=0.2)
    p.add_argument("--tail", type=float, default=0.0)
    p.add_argument("--thresholds", default="0.05,0.1,0.2,0.4")
    p.add_argument("--seed-offset", type=int, default=0, help="add to every prompt's seed (a held-out seed set)")
    p.add_argument("--noise", action="store_true", help="also sample uncached at a second seed set (+4000): how "
                   "much the checker's accuracies move between seed sets with no cache at all")
    args = p.parse_args(argv)
    from kinema.models.families import VIDEO
    from kinema.models.sampling import SamplerSettings
    from kinema.models.step_cache import StepCache
    from kinema.models.tiny.pipeline import DEFAULT_WEIGHTS
    from training.tiny import checker

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="kinema-stepcache-"))
    folder = work / "kinema-tiny-video"
    shutil.copytree(DEFAULT_WEIGHTS, folder)          # calibrations are written beside the model: a copy
    model = VIDEO.load(folder)
    pairs = checker.eval_set(args.count)
    neg = model.encode_prompt("")
    thresholds = [float(x) for x in args.thresholds.split(",")]
    caches = {th: StepCache(threshold=th, max_skips=args.max_skips, retention=args.retention, tail=args.tail)
              for th in thresholds}
    rows = {th: {"calls": 0, "seconds": 0.0, "mse": [], "psnr": [], "ssim": [], "clips": []} for th in thresholds}
    base = {"calls": 0, "seconds": 0.0, "clips": [], "other": []}
    calibration = None
    for n, (prompt, seed) in enumerate(pairs):
        pos = model.encode_prompt(prompt)
        settings = SamplerSettings(num_frames=9, height=32, width=32, num_inference_steps=args.steps,
                                   guidance_scale=args.cfg, seed=seed + args.seed_offset)
        ref, seconds, _ = _sample(model, pos, neg, settings, None)
        if args.noise:
            other = _sample(model, pos, neg, replace(settings, seed=settings.seed + 4000), None)[0]
            base["other"].append(checker.analyse(other.numpy()))
        base["calls"] += args.steps
        base["seconds"] += seconds
        base["clips"].append(checker.analyse(ref.numpy()))
        if calibration is None:                       # the cache's own calibration run (a full, uncached run)
            _, calibration, stats = _sample(model, pos, neg, settings, caches[thresholds[0]])
            assert stats.calibrated, stats
        for th in thresholds:
            frames, seconds, stats = _sample(model, pos, neg, settings, caches[th])
            r = rows[th]
            r["calls"] += stats.calls
            r["seconds"] += seconds
            mse, psnr, ssim = _metrics(frames, ref)
            r["mse"].append(mse), r["psnr"].append(psnr), r["ssim"].append(ssim)
            r["clips"].append(checker.analyse(frames.numpy()))
        if (n + 1) % 12 == 0:
            print(f"  {n + 1}/{len(pairs)} clips", flush=True)
    _report(args, pairs, base, rows, calibration)
    shutil.rmtree(work, ignore_errors=True)


def _flips(prompts, base, clips) -> tuple[int, int]:
    """(clips whose shape verdict went from right to wrong, from wrong to right) against the uncached clips."""
    from training.tiny.data import parse_prompt
    want = [parse_prompt(p)[1] for p in prompts]
    lost = sum(b.shape == w != c.shape for w, b, c in zip(want, base, clips))
    won = sum(b.shape != w == c.shape for w, b, c in zip(want, base, clips))
    return lost, won


def _report(args, pairs, base, rows, calibration) -> None:
    from training.tiny import checker
    prompts = [p for p, _ in pairs]
    n = len(pairs)
    s0 = checker.score(prompts, base["clips"])
    print(f"\nKinema-Tiny, {n} prompts, {args.steps} steps, cfg {args.cfg}, max_skips {args.max_skips}, "
          f"retention {args.retention}, tail {args.tail}, seed offset {args.seed_offset}; calibration run "
          f"{calibration:.2f} s (once, full)")
    print("| threshold | calls/clip | fewer calls | sampling s | speedup | PSNR dB mean (min, pooled) | SSIM | "
          "colour | shape (lost/won) | direction |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| uncached | {base['calls'] / n:.1f} | 1.00x | {base['seconds']:.1f} | 1.00x | - | 1 | "
          f"{s0['colour']:.1%} | {s0['shape']:.1%} | {s0['direction']:.1%} |")
    if base["other"]:
        s = checker.score(prompts, base["other"])
        lost, won = _flips(prompts, base["clips"], base["other"])
        print(f"| uncached, seeds +4000 | - | - | - | - | - | - | {s['colour']:.1%} | {s['shape']:.1%} "
              f"({lost}/{won}) | {s['direction']:.1%} |")
    for th, r in rows.items():
        s = checker.score(prompts, r["clips"])
        lost, won = _flips(prompts, base["clips"], r["clips"])
        pooled = 10 * torch.log10(torch.tensor(1.0 / max(sum(r["mse"]) / n, 1e-12))).item()
        print(f"| {th:g} | {r['calls'] / n:.1f} | {base['calls'] / r['calls']:.2f}x | {r['seconds']:.1f} | "
              f"{base['seconds'] / r['seconds']:.2f}x | {sum(r['psnr']) / n:.1f} ({min(r['psnr']):.1f}, "
              f"{pooled:.1f}) | {sum(r['ssim']) / n:.4f} | {s['colour']:.1%} | {s['shape']:.1%} ({lost}/{won}) | "
              f"{s['direction']:.1%} |")


if __name__ == "__main__":
    main()
