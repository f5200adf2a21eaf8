"""FreeNoise cost: sampling time per frame of a long clip in context windows against one window, in one run.

For each model the same loop samples (a) one window's worth of frames and (b) a clip about 4 windows long in
FreeNoise windows of that length (overlap a quarter of a window), alternating the two, median of N repeats.
Printed per model:
  * per-frame time ratio long / one window (1.00 = no extra cost per frame);
  * the share of it that windows make unavoidable: latent frames denoised (windows x window length) / latent
    frames in the clip — the rest is Kinema's overhead (slicing, fusion weights, noise rescheduling, anchoring).
FreeNoise's paper reports about 17 % extra time over the base model.

Models: the bundled Kinema-Tiny (trained, 32 px), and the random-weight Wan and AnimateDiff fixtures from
`kinema fixtures` (written to a temp folder) at --size px. CPU by default; runs on CUDA when available.
Usage: python bench/freenoise_cost.py [--size 64] [--steps 6] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from kinema.models.families import load_model
from kinema.models.sampling import SamplerSettings, plan_windows, sample
from kinema.models.tiny.pipeline import DEFAULT_WEIGHTS
from kinema.models.windows import ContextOptions


def _case(model, window: int, long: int, overlap: int, size: int, steps: int, repeats: int, mode: str = "auto"):
    pos, neg = model.encode_prompt("a red circle bounces"), model.encode_prompt("")
    ctx = ContextOptions(context_length=window, context_overlap=overlap, mode=mode)
    one = SamplerSettings(num_frames=window, height=size, width=size, num_inference_steps=steps, guidance_scale=4.0)
    big = SamplerSettings(num_frames=long, height=size, width=size, num_inference_steps=steps, guidance_scale=4.0)
    times = {"one": [], "long": []}
    for r in range(repeats + 1):                       # the first round warms up and is dropped
        for key, settings, context in (("one", one, None), ("long", big, ctx)):
            t = time.perf_counter()
            sample(model, pos, neg, settings, context=context)
            if r:
                times[key].append(time.perf_counter() - t)
    t_one, t_long = statistics.median(times["one"]), statistics.median(times["long"])
    f_one, f_long = model.latent_frames(window), model.latent_frames(long)
    spans = plan_windows(model, ctx, f_long).spans
    inherent = sum(b - a for a, b in spans) / f_long
    per_frame = (t_long / f_long) / (t_one / f_one)
    return t_one, t_long, len(spans), per_frame, inherent


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from kinema.models.fixtures import write_fixtures
    with tempfile.TemporaryDirectory() as tmp:
        write_fixtures(Path(tmp))
        cases = [
            ("Kinema-Tiny (trained)", DEFAULT_WEIGHTS, 9, 37, 2, 32, "auto"),
            ("Wan fixture, fused on predictions", Path(tmp) / "diffusers" / "fixture-wan-t2v", 17, 65, 4, args.size,
             "auto"),
            ("AnimateDiff fixture, fused in attention", Path(tmp) / "diffusers" / "fixture-animatediff", 16, 64, 4,
             args.size, "attention"),
            ("AnimateDiff fixture, fused on predictions", Path(tmp) / "diffusers" / "fixture-animatediff", 16, 64, 4,
             args.size, "predictions"),
        ]
        print(f"device {device}, {args.steps} steps, cfg 4, median of {args.repeats}")
        print(f"{'model':42s} {'window':>6s} {'clip':>5s} {'wins':>4s} {'one s':>7s} {'long s':>7s} "
              f"{'per-frame':>9s} {'inherent':>8s} {'overhead':>8s}")
        for name, path, window, long, overlap, size, mode in cases:
            model = load_model(path, device=device)
            t_one, t_long, n, per_frame, inherent = _case(model, window, long, overlap, size, args.steps,
                                                          args.repeats, mode)
            print(f"{name:42s} {window:6d} {long:5d} {n:4d} {t_one:7.2f} {t_long:7.2f} {per_frame:8.2f}x "
                  f"{inherent:7.2f}x {per_frame / inherent:7.2f}x", flush=True)
            del model


if __name__ == "__main__":
    main()
