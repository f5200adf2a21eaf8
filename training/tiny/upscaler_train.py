"""Train the Kinema-Tiny Upscaler (32 -> 64 px, (2+1)D residual net on top of bicubic), reproducibly from a seed.

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 nohup nice -n 10 python -m training.tiny.upscaler_train \
        --work /tmp/kinema-upscaler --out models/tiny/weights/kinema-tiny-upscaler --seed 0 > upscaler_train.log 2>&1 &

About 30 minutes on the shared 2-core CPU (dataset 9, training 20). Stages (each one's result is kept in --work,
so a rerun skips what is done; training resumes from its last checkpoint with the same optimizer and random state):
  1. dataset   --clips ground-truth clips at 64 px (upscaler_data.make_hr, seeds 1000 x --seed + k, 200 clips
               each) and their TAE round-trip inputs (Kinema-Tiny's decoder look), uint8 safetensors; --val-clips
               validation clips from seed 1000 x (--seed + 1)
  2. train     L1 loss on 9-frame clips, random 24 px crops of the 32 px inputs -> 48 px, each clip's input made
               by a random degradation (area / bilinear / tae, 8-bit), random flips, transposes, time reversal
               and colour-channel permutations; AdamW with warm-up and cosine decay, EMA of the weights, bf16
               autocast on the CPU; validation PSNR against bicubic every --eval-every steps
  3. export    the EMA weights as fp16 safetensors + JSON config to --out (model_index.json names
               KinemaTinyUpscalerPipeline)
`--no-temporal` trains the same network with 2D blocks only (the ablation in the model card).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # before torch: idle OpenMP threads must not spin (shared CPU)

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch

from kinema.models.tiny.upscaler import TinyVideoUpscaler, UpscalerConfig, save_folder

from . import upscaler_data as D
from . import upscaler_eval as E

MIX = (0.35, 0.30, 0.35)         # probability of each degradation in upscaler_data.DEGRADATIONS


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- 1. dataset ---------------------------------------------------------------------------------------------
def stage_dataset(work: Path, args) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file, save_file
    path = work / "dataset.safetensors"
    if path.is_file():
        return load_file(str(path))
    t0 = time.time()
    vae = D.load_tae()
    out = {}
    for name, seed, count in (("train", args.seed, args.clips), ("val", args.seed + 1, args.val_clips)):
        hr = torch.cat([D.make_hr(seed * 1000 + i, min(200, count - i * 200))
                        for i in range(math.ceil(count / 200))])                       # (N, 3, 9, 64, 64) uint8
        tae = D.inputs(hr, "tae", vae)                                                    # (N, 3, 9, 32, 32)
        out[f"{name}_hr"], out[f"{name}_tae"] = hr, (tae * 255).round().to(torch.uint8)
        log(f"dataset {name}: {len(hr)} clips ({time.time() - t0:.0f} s)")
    save_file(out, str(path))
    return out


# ---- 2. train -----------------------------------------------------------------------------------------------
def batch_inputs(ds: dict, idx: torch.Tensor, g: torch.Generator, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch: (inputs (B, 3, 9, crop, crop), truth (B, 3, 9, 2 crop, 2 crop)) float 0..1, augmented:
    one random crop of the 32 px input for the whole batch (the truth cropped to match)."""
    hr = ds["train_hr"][idx].float() / 255
    kind = torch.multinomial(torch.tensor(MIX), len(idx), replacement=True, generator=g)
    lr = torch.empty(len(idx), 3, hr.shape[2], hr.shape[3] // 2, hr.shape[4] // 2)
    for k, how in enumerate(D.DEGRADATIONS):
        sel = kind == k
        if sel.any():
            lr[sel] = ds["train_tae"][idx[sel]].float() / 255 if how == "tae" else D.quantise(D.shrink(hr[sel], how))
    y, x = (int(v) for v in torch.randint(lr.shape[-1] - crop + 1, (2,), generator=g))
    lr, hr = lr[..., y:y + crop, x:x + crop], hr[..., 2 * y:2 * (y + crop), 2 * x:2 * (x + crop)]
    # the same flips / transpose / time reversal / channel order on input and truth
    if torch.rand((), generator=g) < 0.5:
        lr, hr = lr.flip(-1), hr.flip(-1)
    if torch.rand((), generator=g) < 0.5:
        lr, hr = lr.flip(-2), hr.flip(-2)
    if torch.rand((), generator=g) < 0.5:
        lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
    if torch.rand((), generator=g) < 0.5:
        lr, hr = lr.flip(2), hr.flip(2)
    perm = torch.randperm(3, generator=g)
    return lr[:, perm].contiguous(), hr[:, perm].contiguous()


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    p = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def _save_checkpoint(path: Path, step: int, model, ema, opt, g: torch.Generator) -> None:
    from safetensors.torch import save_file
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    for i, p in enumerate(model.parameters()):
        state |= {f"opt.{i}.{k}": (v if torch.is_tensor(v) else torch.tensor(v)) for k, v in opt.state[p].items()}
    state["rng"] = g.get_state()
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"step": str(step)})
    tmp.replace(path)


def _load_checkpoint(path: Path, model, ema, opt, g: torch.Generator) -> int:
    from safetensors import safe_open
    from safetensors.torch import load_file
    state = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        step = int(f.metadata()["step"])
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("ema.")})
    for i, p in enumerate(model.parameters()):
        keys = {k.split(".", 2)[2]: v for k, v in state.items() if k.startswith(f"opt.{i}.")}
        if keys:
            opt.state[p] = keys
    g.set_state(state["rng"])
    return step


def validate(ema, ds: dict, vae=None) -> str:
    """Validation PSNR (learned vs bicubic) on the area and tae inputs of the validation clips."""
    truth = ds["val_hr"].float() / 255
    parts = []
    for how in ("area", "tae"):
        lr = ds["val_tae"].float() / 255 if how == "tae" else D.quantise(D.shrink(truth, how))
        parts.append(f"{how} {E.psnr(E.learned(ema, lr), truth):.2f} (bicubic {E.psnr(E.bicubic(lr), truth):.2f})")
    return ", ".join(parts)


def stage_train(work: Path, ds: dict, args) -> TinyVideoUpscaler:
    torch.manual_seed(args.seed)
    config = UpscalerConfig(channels=args.channels, blocks=args.blocks, temporal=args.temporal)
    model = TinyVideoUpscaler(config)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(args.seed + 7)
    ckpt, done = work / "train_checkpoint.safetensors", work / "ema_final.safetensors"
    step = _load_checkpoint(ckpt, model, ema, opt, g) if ckpt.is_file() else 0
    if done.is_file():
        from safetensors.torch import load_file
        ema.load_state_dict(load_file(str(done)))
        return ema
    log(f"train: {sum(p.numel() for p in model.parameters())} parameters, from step {step}")
    t0, n = time.time(), len(ds["train_hr"])
    while step < args.steps:
        idx = torch.randint(n, (args.batch,), generator=g)
        lr_in, truth = batch_inputs(ds, idx, g, args.crop)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            out = model(lr_in)
        loss = (out.float() - truth).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        step += 1
        if step % 25 == 0:
            log(f"step {step} loss {loss.item():.5f} lr {lr_at(step, args):.2e} "
                f"({(time.time() - t0) / 60:.1f} min)")
        if step % args.eval_every == 0 or step == args.steps:
            log(f"step {step} val PSNR: {validate(ema, ds)}")
            _save_checkpoint(ckpt, step, model, ema, opt, g)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(done))
    log(f"train: done in {(time.time() - t0) / 60:.1f} min")
    return ema


# ---- 3. export ----------------------------------------------------------------------------------------------
def stage_export(ema: TinyVideoUpscaler, args) -> None:
    save_folder(args.out, ema, extra={"input_size": 32, "trained_on": "Kinema-Tiny procedural clips, seed "
                                      f"{args.seed}, {args.steps} steps"})
    log(f"export: {args.out}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None, help="model folder to write (skip export when omitted)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips", type=int, default=2400)
    p.add_argument("--val-clips", type=int, default=24)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--crop", type=int, default=24, help="input crop side in pixels (of 32)")
    p.add_argument("--no-temporal", dest="temporal", action="store_false", help="2D blocks only (ablation)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dataset", type=Path, default=None, help="reuse this dataset.safetensors (another --work's)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.dataset is not None and not (args.work / "dataset.safetensors").exists():
        (args.work / "dataset.safetensors").symlink_to(args.dataset.resolve())
    (args.work / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))
    ds = stage_dataset(args.work, args)
    ema = stage_train(args.work, ds, args)
    if args.out is not None:
        stage_export(ema, args)


if __name__ == "__main__":
    main()
