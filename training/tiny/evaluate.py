"""Score a Kinema-Tiny folder with the pixel checker on the fixed eval set (text-to-video and image-to-video).

    python -m training.tiny.evaluate [--model DIR] [--steps 10] [--cfg 4] [--count 72]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from kinema.models.tiny.pipeline import DEFAULT_WEIGHTS, TinyModels, generate, load_folder

from . import checker
from .data import parse_prompt, random_spec, render


def start_images(prompts: list[str], num_frames: int = 9, size: int = 32, seed: int = 12345) -> torch.Tensor:
    """Image-to-video start frames: frame 0 of a fresh clip of each prompt's shape, colour and motion.
    -> (N, 3, H, W) 0..1."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for p in prompts:
        colour, shape, motion = parse_prompt(p)
        out.append(render(random_spec(g, shape, colour, motion), num_frames, size)[:, 0])
    return torch.stack(out)


def evaluate(models: TinyModels, image_to_video: bool, count: int = 72, steps: int = 10, guidance: float = 4.0,
             shift: float | None = None, num_frames: int = 9, size: int = 32, batch: int = 36):
    """-> (scores dict, prompts, videos (N, F, H, W, 3), ClipStats list)."""
    pairs = checker.eval_set(count)
    prompts, seeds = [p for p, _ in pairs], [s for _, s in pairs]
    images = start_images(prompts, num_frames, size) if image_to_video else None
    video = generate(models, prompts, seeds, images, num_frames, size, steps=steps, guidance=guidance, shift=shift,
                     batch=batch)
    clips = [checker.analyse(v.numpy()) for v in video]
    return checker.score(prompts, clips), prompts, video, clips


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--count", type=int, default=72)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--shift", type=float, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--confusion", action="store_true", help="print detected motion per prompted motion")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = load_folder(args.model)
    for mode in ("t2v", "i2v"):
        t0 = time.time()
        scores, prompts, _, clips = evaluate(models, mode == "i2v", args.count, args.steps, args.cfg, args.shift)
        print(f"{mode}: {checker.format_scores(scores)}  ({time.time() - t0:.1f}s)")
        if args.confusion:
            for want, got in checker.confusion(prompts, clips).items():
                print(f"    {want:12s} -> {dict(got)}")


if __name__ == "__main__":
    main()
