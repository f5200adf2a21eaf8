"""Train Kinema-Tiny from procedurally generated clips, reproducibly from a seed. CPU is enough.

    OMP_WAIT_POLICY=PASSIVE nice -n 10 python -m training.tiny.train --work /tmp/kinema-tiny \
        --out models/tiny/weights/kinema-tiny-video --seed 0 > train.log 2>&1

Stages (each one's result is kept in --work, so a rerun skips what is done; --force STAGE redoes one):
  1. dataset   render N clips (data.py) from the seed, stored as uint8 in safetensors
  2. tae       train the temporal autoencoder on 3-frame snippets (frame 0 + one frame pair)
  3. latents   encode every clip; per-channel mean/std become the TAE's latent normalisation
  4. flow      train the text encoder and the flow transformer together: rectified-flow velocity loss,
               logit-normal timesteps, 10 % empty prompts (for guidance), 50 % first-frame conditioning
               (image-to-video), AdamW + cosine, EMA; the checker scores the EMA model every --eval-every steps
  5. export    write the diffusers-like folder (fp16 safetensors + JSON configs) to --out

Threads: a contended 2-core machine runs fastest with OMP_WAIT_POLICY=PASSIVE (spinning OpenMP threads
otherwise stall each other); --threads sets torch's thread count.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from kinema.models.tiny.pipeline import TinyModels, save_folder
from kinema.models.tiny.tae import TAEConfig, TemporalAutoencoder
from kinema.models.tiny.text import TextEncoderConfig, TinyTextEncoder, tokenize
from kinema.models.tiny.transformer import TinyVideoTransformer, TransformerConfig

from . import checker
from .data import COLOURS, MOTIONS, SHAPES, random_spec, render

SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.42.1",
             "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- 1. dataset ---------------------------------------------------------------------------------------------
def make_dataset(path: Path, seed: int, count: int, num_frames: int, size: int) -> None:
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(seed)
    videos, labels = [], []
    t0 = time.time()
    for i in range(count):
        spec = random_spec(g)
        videos.append((render(spec, num_frames, size) * 255).round().to(torch.uint8))     # (3, F, H, W)
        labels.append([list(COLOURS).index(spec.colour), SHAPES.index(spec.shape), MOTIONS.index(spec.motion)])
        if (i + 1) % 5000 == 0:
            log(f"dataset: {i + 1}/{count} clips ({time.time() - t0:.0f}s)")
    save_file({"video": torch.stack(videos), "labels": torch.tensor(labels)}, str(path))


def prompts_of(labels: torch.Tensor) -> list[str]:
    colours = list(COLOURS)
    return [f"a {colours[c]} {SHAPES[s]} {MOTIONS[m]}" for c, s, m in labels.tolist()]


# ---- 2. TAE -------------------------------------------------------------------------------------------------
def train_tae(video: torch.Tensor, args, g: torch.Generator) -> TemporalAutoencoder:
    torch.manual_seed(args.seed)
    tae = TemporalAutoencoder(TAEConfig())
    opt = torch.optim.AdamW(tae.parameters(), lr=args.tae_lr, weight_decay=0.0, betas=(0.9, 0.99))
    n, _, frames = video.shape[:3]
    pairs = (frames - 1) // 2
    t0 = time.time()
    for step in range(args.tae_steps):
        lr = args.tae_lr * min(1.0, (step + 1) / 100) * (0.55 + 0.45 * math.cos(math.pi * step / args.tae_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(n, (args.tae_batch,), generator=g)
        k = torch.randint(1, pairs + 1, (args.tae_batch,), generator=g)
        sel = torch.stack([torch.zeros_like(k), 2 * k - 1, 2 * k], dim=1)                 # (B, 3) frame indices
        clip = video[idx[:, None], :, sel].permute(0, 2, 1, 3, 4).float() / 255           # (B, 3, 3, H, W)
        x = clip * 2 - 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mean, logvar = tae.encode_dist(x)
            z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
            rec = tae.decode(z).float()
        weight = 1 + 4 * (clip.amax(dim=1, keepdim=True) > 0.45).float()                  # objects count more
        err = rec - x
        rec_loss = (weight * (err.abs() + err.pow(2))).mean()
        kl = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).mean()
        loss = rec_loss + args.tae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tae.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == args.tae_steps - 1:
            psnr = -10 * math.log10(((rec.detach() - x) / 2).pow(2).mean().item() + 1e-10)
            log(f"tae step {step} loss {loss.item():.4f} kl {kl.item():.3f} psnr {psnr:.1f}dB "
                f"({time.time() - t0:.0f}s)")
    return tae


@torch.no_grad()
def encode_all(tae: TemporalAutoencoder, video: torch.Tensor, batch: int = 64) -> torch.Tensor:
    tae.eval()
    out = []
    for i in range(0, len(video), batch):
        x = video[i:i + batch].float() / 255 * 2 - 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mean, _ = tae.encode_dist(x)
        out.append(mean.float())
    return torch.cat(out)                                                                  # (N, C, f, h, w)


@torch.no_grad()
def check_tae(tae: TemporalAutoencoder, video: torch.Tensor, labels: torch.Tensor, count: int = 72) -> dict:
    """Checker scores of TAE reconstructions (an upper bound for the generator)."""
    x = video[-count:].float() / 255
    rec = tae.decode_normalised(tae.encode_normalised(x))                                  # (N, 3, F, H, W)
    psnr = -10 * math.log10((rec - x).pow(2).mean().item())
    clips = [checker.analyse(v.permute(1, 2, 3, 0).numpy()) for v in rec]
    return checker.score(prompts_of(labels[-count:]), clips) | {"psnr": psnr}


# ---- 4. flow ------------------------------------------------------------------------------------------------
def prompt_variants(labels: torch.Tensor, max_length: int) -> torch.Tensor:
    """Token ids per clip for three phrasings: "a red circle bounces", "red circle bounces", "the ..."
    -> (N, 3, L)."""
    colours = list(COLOURS)
    out = []
    for c, s, m in labels.tolist():
        core = f"{colours[c]} {SHAPES[s]} {MOTIONS[m]}"
        out.append([tokenize(p, max_length) for p in (f"a {core}", core, f"the {core}")])
    return torch.tensor(out)


def save_grid(video: torch.Tensor, path: Path, rows: int = 12) -> None:
    """A PNG of clips (N, F, H, W, 3): one clip per row, frames left to right, 3x nearest upscaling."""
    import numpy as np
    import PIL.Image
    v = video[:rows]
    n, f, h, w, _ = v.shape
    grid = v.permute(0, 2, 1, 3, 4).reshape(n * h, f * w, 3).numpy()                      # (N*H, F*W, 3)
    img = PIL.Image.fromarray((grid * 255).round().astype(np.uint8))
    img.resize((f * w * 3, n * h * 3), PIL.Image.NEAREST).save(path)


def evaluate_run(models: TinyModels, args, image_to_video: bool, grid: Path | None = None) -> dict:
    from .evaluate import evaluate
    scores, _, video, _ = evaluate(models, image_to_video, args.eval_count, args.eval_steps, args.eval_cfg,
                                   num_frames=args.frames, size=args.size, batch=24)
    if grid is not None:
        save_grid(video, grid)
    return scores


def train_flow(latents: torch.Tensor, labels: torch.Tensor, tae: TemporalAutoencoder, args,
               g: torch.Generator, work: Path) -> tuple[TinyTextEncoder, TinyVideoTransformer]:
    torch.manual_seed(args.seed + 1)
    tcfg = TextEncoderConfig(dim=args.text_dim)
    text = TinyTextEncoder(tcfg)
    model = TinyVideoTransformer(TransformerConfig(latent_channels=latents.shape[1], dim=args.dim, depth=args.depth,
                                                   heads=args.heads, text_dim=args.text_dim))
    params = list(text.parameters()) + list(model.parameters())
    log(f"flow: transformer {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, text encoder "
        f"{sum(p.numel() for p in text.parameters()) / 1e6:.2f} M")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.99))
    ema_text, ema_model = copy.deepcopy(text).eval(), copy.deepcopy(model).eval()
    ema_params = list(ema_text.parameters()) + list(ema_model.parameters())
    ids = prompt_variants(labels, tcfg.max_length)                                        # (N, 3, L)
    empty = torch.tensor(tokenize("", tcfg.max_length))
    n, c = latents.shape[:2]
    tae.eval()
    t0 = time.time()
    losses = []
    for step in range(args.steps):
        warm = min(1.0, (step + 1) / args.warmup)
        lr = args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        # 1. a batch: clean latents, prompt ids (10 % empty), first-frame condition on half the batch
        idx = torch.randint(n, (args.batch,), generator=g)
        x0 = latents[idx].float()                                                         # (B, C, f, h, w)
        variant = torch.randint(3, (args.batch,), generator=g)
        tok = ids[idx, variant]                                                           # (B, L)
        drop = torch.rand(args.batch, generator=g) < args.text_dropout
        tok = torch.where(drop[:, None], empty[None], tok)
        cond = torch.zeros(args.batch, c + 1, *x0.shape[2:])
        i2v = torch.rand(args.batch, generator=g) < args.i2v_fraction
        cond[i2v, :c, 0] = x0[i2v, :, 0]
        cond[i2v, c, 0] = 1.0
        # 2. rectified flow: x_t = (1 - s) x0 + s noise, target velocity noise - x0, s logit-normal
        s = torch.sigmoid(torch.randn(args.batch, generator=g) * args.logit_std + args.logit_mean)
        noise = torch.randn(x0.shape, generator=g)
        sv = s.view(-1, 1, 1, 1, 1)
        xt = (1 - sv) * x0 + sv * noise
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16)):
            pred = model(xt, s * 1000, text(tok), cond).float()
        loss = F.mse_loss(pred, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay_rate = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema_params, params):
                pe.lerp_(p, 1 - decay_rate)
        losses.append(loss.item())
        if step % 50 == 0:
            log(f"flow step {step} loss {sum(losses) / len(losses):.4f} lr {lr:.2e} ({time.time() - t0:.0f}s)")
            losses = []
        if (step + 1) % args.eval_every == 0 or step == args.steps - 1:
            models = TinyModels(ema_text, ema_model, tae, SCHEDULER, {}).eval()
            te = time.time()
            t2v = evaluate_run(models, args, False, work / f"t2v_{step + 1:05d}.png")
            i2v_s = evaluate_run(models, args, True, work / f"i2v_{step + 1:05d}.png")
            log(f"eval step {step + 1} ({time.time() - t0:.0f}s train, {time.time() - te:.0f}s eval)\n"
                f"    t2v: {checker.format_scores(t2v)}\n    i2v: {checker.format_scores(i2v_s)}")
            save_checkpoint(work / "flow.safetensors", ema_text, ema_model, step + 1)
    return ema_text, ema_model


def save_checkpoint(path: Path, text, model, step: int) -> None:
    from safetensors.torch import save_file
    state = {f"text.{k}": v for k, v in text.state_dict().items()}
    state |= {f"model.{k}": v for k, v in model.state_dict().items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"step": str(step)})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="folder for the dataset, checkpoints and stats")
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--force", action="append", default=[], help="redo a stage: dataset, tae, latents, flow")
    p.add_argument("--stop-after", choices=["dataset", "tae", "latents"], default=None)
    p.add_argument("--clips", type=int, default=24000)
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--tae-steps", type=int, default=1500)
    p.add_argument("--tae-batch", type=int, default=16)
    p.add_argument("--tae-lr", type=float, default=1e-3)
    p.add_argument("--tae-kl", type=float, default=1e-4)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--ema", type=float, default=0.998)
    p.add_argument("--dim", type=int, default=96)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--text-dim", type=int, default=128)
    p.add_argument("--text-dropout", type=float, default=0.1)
    p.add_argument("--i2v-fraction", type=float, default=0.5)
    p.add_argument("--logit-mean", type=float, default=0.0)
    p.add_argument("--logit-std", type=float, default=1.0)
    p.add_argument("--bf16", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-count", type=int, default=36)
    p.add_argument("--eval-steps", type=int, default=10)
    p.add_argument("--eval-cfg", type=float, default=4.0)
    args = p.parse_args(argv)
    from safetensors.torch import load_file, save_file
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    timings = {}

    # 1. dataset
    data_path = args.work / "dataset.safetensors"
    if not data_path.is_file() or "dataset" in args.force:
        t = time.time()
        make_dataset(data_path, args.seed, args.clips, args.frames, args.size)
        timings["dataset_s"] = time.time() - t
        log(f"dataset: {args.clips} clips in {timings['dataset_s']:.0f}s")
    if args.stop_after == "dataset":
        return
    data = load_file(str(data_path))
    video, labels = data["video"], data["labels"]

    # 2. TAE
    g = torch.Generator().manual_seed(args.seed + 7)
    tae_path = args.work / "tae.safetensors"
    if not tae_path.is_file() or "tae" in args.force:
        t = time.time()
        tae = train_tae(video[:-72], args, g)
        timings["tae_s"] = time.time() - t
        save_file(tae.state_dict(), str(tae_path))
    tae = TemporalAutoencoder(TAEConfig())
    tae.load_state_dict(load_file(str(tae_path)))
    if args.stop_after == "tae":
        return

    # 3. latents + normalisation
    lat_path = args.work / "latents.safetensors"
    if not lat_path.is_file() or "latents" in args.force or "tae" in args.force:
        t = time.time()
        lat = encode_all(tae, video)
        save_file({"latents": lat.half(), "mean": lat.mean(dim=(0, 2, 3, 4)),
                   "std": lat.std(dim=(0, 2, 3, 4))}, str(lat_path))
        timings["latents_s"] = time.time() - t
    ld = load_file(str(lat_path))
    tae.config.latents_mean = ld["mean"].tolist()
    tae.config.latents_std = ld["std"].tolist()
    tae.eval().requires_grad_(False)
    log(f"tae check: {json.dumps({k: round(v, 3) for k, v in check_tae(tae, video, labels).items()})}")
    if args.stop_after == "latents":
        return
    m = ld["mean"].view(1, -1, 1, 1, 1)
    sd = ld["std"].view(1, -1, 1, 1, 1)
    latents = ((ld["latents"].float() - m) / sd).half()                                    # (N, C, f, h, w)
    held = 72
    latents, lab = latents[:-held], labels[:-held]

    # 4. flow
    t = time.time()
    text, model = train_flow(latents, lab, tae, args, g, args.work)
    timings["flow_s"] = time.time() - t

    # 5. export
    save_folder(args.out, text, model, tae, SCHEDULER,
                extra={"num_frames": args.frames, "height": args.size, "width": args.size,
                       "training": {"seed": args.seed, "clips": args.clips, "tae_steps": args.tae_steps,
                                    "flow_steps": args.steps, "batch": args.batch} | {
                           k: round(v) for k, v in timings.items()}})
    log(f"done in {time.time() - start:.0f}s: {json.dumps({k: round(v) for k, v in timings.items()})} -> {args.out}")


if __name__ == "__main__":
    main()
