"""Measure the Kinema-Tiny Upscaler against bicubic: PSNR, SSIM and temporal flicker on held-out clips, and
no-reference figures on Kinema-Tiny's own generated clips.

    python -m training.tiny.upscaler_eval [--model DIR] [--count 96] [--generated 72]

Held-out clips: upscaler_data's clips from EVAL_SEED (training uses other seeds), 64 px ground truth, 32 px
inputs by each degradation (area, bilinear, tae). Metrics over (N, 3, F, H, W) clips, 0..1:
    psnr      mean over clips of 10 log10(1 / MSE)                                   higher is better
    ssim      kornia's SSIM (11x11 Gaussian window), mean over frames and pixels      higher is better
    flicker   mean |e(t+1) - e(t)| of the error e = output - truth, in 0..255 levels    lower is better
Generated clips (Kinema-Tiny text-to-video, the checker's 72 prompts; no 64 px truth exists):
    consistency  PSNR of the output shrunk back to 32 px (2x2 average) against the input   higher = faithful
    sharpness    mean Sobel gradient magnitude of the output                                higher = crisper
    checker      the pixel checker's colour / shape / motion accuracy against the prompts, the output read
                 at 32 px (2x2 average): upscaling must not lose what the clip shows
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from . import upscaler_data as D

EVAL_SEED = 90_000           # held-out clips; training draws from seeds 0 .. (never this one)


# ---- metrics over (N, 3, F, H, W) 0..1 --------------------------------------------------------------------------
def psnr(out: torch.Tensor, truth: torch.Tensor) -> float:
    mse = ((out.float() - truth.float()) ** 2).flatten(1).mean(1).clamp_min(1e-10)          # (N,)
    return float((10 * torch.log10(1 / mse)).mean())


def _frames(x: torch.Tensor) -> torch.Tensor:
    n, c, f, h, w = x.shape
    return x.transpose(1, 2).reshape(n * f, c, h, w).float()                                   # (N*F, 3, H, W)


def ssim(out: torch.Tensor, truth: torch.Tensor) -> float:
    from kornia.metrics import ssim as kssim
    return float(kssim(_frames(out), _frames(truth), 11).mean())


def flicker(out: torch.Tensor, truth: torch.Tensor) -> float:
    e = out.float() - truth.float()                                                            # (N, 3, F, H, W)
    return float((e[:, :, 1:] - e[:, :, :-1]).abs().mean() * 255)


def scores(out: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    return {"psnr": psnr(out, truth), "ssim": ssim(out, truth), "flicker": flicker(out, truth)}


# ---- the two upscalers --------------------------------------------------------------------------------------
def bicubic(lr: torch.Tensor) -> torch.Tensor:
    """Kinema's resize path (models.edit.upscale_frames: antialiased bicubic) on (N, 3, F, h, w) clips."""
    from kinema.models.edit import upscale_frames
    return torch.stack([upscale_frames(c.permute(1, 2, 3, 0), 2).permute(3, 0, 1, 2) for c in lr])


@torch.no_grad()
def learned(model, lr: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """The network on (N, 3, F, h, w) clips, fp32 -> (N, 3, F, 2h, 2w)."""
    return torch.cat([model(lr[i:i + batch].float()) for i in range(0, len(lr), batch)])


# ---- held-out clips ---------------------------------------------------------------------------------------------
def held_out(count: int, seed: int = EVAL_SEED) -> torch.Tensor:
    """Ground truth (N, 3, 9, 64, 64) uint8 of the held-out clips (the first `count` of the seed's sequence)."""
    return D.make_hr(seed, count)


def compare(model, hr: torch.Tensor, how: str, vae=None) -> dict[str, dict[str, float]]:
    """{"bicubic": scores, "learned": scores} on the clips `hr` shrunk by `how`."""
    truth = hr.float() / 255
    lr = D.inputs(hr, how, vae)
    return {"bicubic": scores(bicubic(lr), truth), "learned": scores(learned(model, lr), truth)}


# ---- Kinema-Tiny's generated clips ----------------------------------------------------------------------------
def sharpness(x: torch.Tensor) -> float:
    """Mean Sobel gradient magnitude of (N, 3, F, H, W) clips, per pixel (0..1 units)."""
    from kornia.filters import sobel
    return float(sobel(_frames(x)).mean())


def generated(model, count: int = 72, steps: int = 10, guidance: float = 4.0) -> dict[str, dict[str, float]]:
    """No-reference figures on Kinema-Tiny text-to-video clips (the checker's eval prompts, made as the workflows
    make them) for the 32 px input, bicubic and the learned model: consistency and sharpness of the 64 px output,
    and the pixel checker's colour / shape / motion accuracy against the prompts (64 px outputs read at 32 px)."""
    from kinema.models.tiny.pipeline import DEFAULT_WEIGHTS, generate, load_folder

    from . import checker
    pairs = checker.eval_set(count)
    prompts = [p for p, _ in pairs]
    video = generate(load_folder(DEFAULT_WEIGHTS), prompts, [s for _, s in pairs], steps=steps,
                     guidance=guidance)                                                       # (N, F, H, W, 3)
    lr = D.quantise(video.permute(0, 4, 1, 2, 3))                                             # (N, 3, F, h, w)

    def judged(x: torch.Tensor) -> dict[str, float]:
        clips = [checker.analyse(c.numpy()) for c in x.permute(0, 2, 3, 4, 1)]
        s = checker.score(prompts, clips)
        return {k: s[k] for k in ("colour", "shape", "motion")}

    result = {"input": {"consistency": float("nan"), "sharpness": float("nan")} | judged(lr)}
    for name, up in (("bicubic", bicubic(lr)), ("learned", learned(model, lr))):
        back = D.shrink(up, "area")
        result[name] = {"consistency": psnr(back, lr), "sharpness": sharpness(up)} | judged(back)
    return result


def format_generated(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| Kinema-Tiny t2v | consistency dB | sharpness | colour | shape | motion |", "|---|---|---|---|---|---|"]
    for method, s in rows.items():
        cons = "-" if math.isnan(s["consistency"]) else f"{s['consistency']:.2f}"
        sharp = "-" if math.isnan(s["sharpness"]) else f"{s['sharpness']:.4f}"
        lines.append(f"| {method} | {cons} | {sharp} | {s['colour']:.0%} | {s['shape']:.0%} | {s['motion']:.0%} |")
    return "\n".join(lines)


def format_table(rows: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown table: one row per (inputs, method)."""
    lines = ["| inputs | method | PSNR dB | SSIM | flicker |", "|---|---|---|---|---|"]
    for how, r in rows.items():
        for method, s in r.items():
            lines.append(f"| {how} | {method} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['flicker']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    from kinema.models.tiny.upscaler import DEFAULT_WEIGHTS, load_folder
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--count", type=int, default=96, help="held-out clips per degradation")
    p.add_argument("--generated", type=int, default=72, help="Kinema-Tiny generated clips (0: skip)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_folder(args.model)
    t0 = time.time()
    hr, vae = held_out(args.count), D.load_tae()
    rows = {how: compare(model, hr, how, vae) for how in D.DEGRADATIONS}
    print(format_table(rows))
    if args.generated:
        print(format_generated(generated(model, args.generated)))
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
