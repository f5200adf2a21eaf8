"""Train Kinema-Tiny Portrait from procedurally drawn faces and synthetic voices, reproducibly from a seed.

    OMP_WAIT_POLICY=PASSIVE nice -n 10 python -m training.tiny.portrait_train --work /tmp/kinema-portrait \
        --out models/tiny/weights/kinema-tiny-portrait --seed 0 > portrait_train.log 2>&1

Stages (each one's result is kept in --work, so a rerun skips what is done; the flow stage resumes from its
last checkpoint):
  1. dataset   N synthetic voices (portrait_data.synth_voice, 2.4 s) -> per-frame loudness features at 25 fps;
               for each clip a random face, a random 9-frame stretch of a voice (the mouth opening of each frame
               = that frame's loudness feature) and a reference portrait of the same face (mouth closed or a
               little open); stored as uint8 frames + float features in safetensors
  2. flow      the PortraitUNet: rectified-flow velocity loss in pixel space (-1..1), logit-normal timesteps,
               the mouth region weighted 6x, 10 % clips without audio and 10 % without the reference (for
               guidance), half the clips with their first 1..8 frames given clean (a previous window's overlap),
               AdamW + warm-up + cosine, EMA; scored every --eval-every steps by the pixel checker (Pearson r of
               mouth opening against loudness, on held-out faces and voices)
  3. export    the diffusers-like folder (fp16 safetensors + JSON configs) to --out
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch

from kinema.models.tiny.portrait_data import loudness_features
from kinema.models.tiny.portrait_model import PortraitUNet, PortraitUNetConfig

from . import portrait_checker as C
from .portrait_data import random_face, render_faces, synth_voice

SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.42.1",
             "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}
FPS, FRAMES, SIZE, VOICE_SECONDS, VOICE_RATE = 25, 9, 32, 2.4, 8000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- 1. dataset ---------------------------------------------------------------------------------------------
def make_clips(g: torch.Generator, count: int, voices: int) -> dict[str, torch.Tensor]:
    feats = []
    for _ in range(voices):
        wav = synth_voice(g, VOICE_SECONDS, VOICE_RATE)
        feats.append(loudness_features(wav, VOICE_RATE, FPS, int(VOICE_SECONDS * FPS)))
    feats = torch.stack(feats)                                                              # (V, 60)
    out = {"video": [], "reference": [], "audio": [], "mouth": []}
    for i in range(0, count, 64):
        n = min(64, count - i)
        specs = [random_face(g) for _ in range(n)]
        v = torch.randint(len(feats), (n,), generator=g)
        s = torch.randint(feats.shape[1] - FRAMES + 1, (n,), generator=g)
        audio = torch.stack([feats[a, b:b + FRAMES] for a, b in zip(v.tolist(), s.tolist())])   # (n, F)
        ref_open = torch.where(torch.rand(n, generator=g) < 0.5, torch.zeros(n), torch.rand(n, generator=g) * 0.5)
        frames = render_faces(specs, torch.cat([audio, ref_open[:, None]], dim=1), SIZE)     # (n, 3, F+1, H, W)
        out["video"].append((frames[:, :, :FRAMES] * 255).round().to(torch.uint8))
        out["reference"].append((frames[:, :, FRAMES] * 255).round().to(torch.uint8))
        out["audio"].append(audio)
        # mouth region (for the loss weight): a box around the mouth, (n, H, W)
        ys = (torch.arange(SIZE) + 0.5) / SIZE
        box = []
        for sp in specs:
            my = sp.cy + 0.46 * sp.ry
            ry = ((ys - my).abs() <= sp.mouth_h + 0.06).float()
            rx = ((ys - sp.cx).abs() <= sp.mouth_w + 0.06).float()
            box.append(ry[:, None] * rx[None, :])
        out["mouth"].append(torch.stack(box).to(torch.uint8))
    return {k: torch.cat(v) for k, v in out.items()}


def stage_dataset(work: Path, args) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file, save_file
    path = work / "dataset.safetensors"
    if not path.is_file():
        t0 = time.time()
        g = torch.Generator().manual_seed(args.seed)
        data = make_clips(g, args.clips, args.voices)
        held = make_clips(torch.Generator().manual_seed(args.seed + 1), 48, 48)
        save_file({**data, **{f"held_{k}": v for k, v in held.items()}}, str(path))
        log(f"dataset: {args.clips} clips in {time.time() - t0:.0f}s")
    return load_file(str(path))


# ---- 2. flow --------------------------------------------------------------------------------------------------
def flow_loss(model: PortraitUNet, batch: dict, g: torch.Generator, bf16: bool = False) -> torch.Tensor:
    x0 = batch["video"].float() / 127.5 - 1                                                 # (B, 3, F, H, W)
    ref = batch["reference"].float() / 127.5 - 1                                            # (B, 3, H, W)
    b, _, f = x0.shape[:3]
    s = torch.sigmoid(torch.randn(b, generator=g)).view(b, 1, 1, 1, 1)                    # logit-normal
    noise = torch.randn(x0.shape, generator=g)
    xt = (1 - s) * x0 + s * noise
    k = torch.randint(1, f, (b,), generator=g) * (torch.rand(b, generator=g) < 0.5)       # known frames (0 = none)
    mask = (torch.arange(f).view(1, f) < k.view(b, 1)).float().view(b, 1, f, 1, 1)        # (B, 1, F, 1, 1)
    known = torch.cat([x0 * mask, mask.expand(b, 1, f, *x0.shape[3:])], dim=1)             # (B, 4, F, H, W)
    audio_on = (torch.rand(b, generator=g) > 0.1).float()
    ref_on = (torch.rand(b, generator=g) > 0.1).float()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        v = model(xt, s.view(b) * 1000, batch["audio"].unsqueeze(-1), ref, known, audio_on, ref_on).float()
    weight = (1 + 5 * batch["mouth"].float().view(b, 1, 1, *x0.shape[3:])) * (1 - 0.8 * mask)
    return (weight * (v - (noise - x0)).pow(2)).mean()


@torch.no_grad()
def sample(model: PortraitUNet, audio: torch.Tensor, ref: torch.Tensor, steps: int = 8, seed: int = 0) -> torch.Tensor:
    """audio (B, F) features, ref (B, 3, H, W) 0..1 -> frames (B, 3, F, H, W) 0..1 (Euler, guidance 1)."""
    b, f = audio.shape
    x = torch.randn((b, 3, f, *ref.shape[2:]), generator=torch.Generator().manual_seed(seed))
    known = torch.zeros(b, 4, f, *ref.shape[2:])
    ones = torch.ones(b)
    sig = torch.linspace(1, 0, steps + 1)
    for i in range(steps):
        v = model(x, sig[i].expand(b) * 1000, audio.unsqueeze(-1), ref * 2 - 1, known, ones, ones).float()
        x = x + (sig[i + 1] - sig[i]) * v
    return ((x + 1) / 2).clamp(0, 1)


@torch.no_grad()
def evaluate(model: PortraitUNet, data: dict) -> dict:
    audio = data["held_audio"][:48]
    ref = data["held_reference"][:48].float() / 255
    video = sample(model, audio, ref)
    rs, drift = [], []
    for i in range(len(audio)):
        frames = video[i].permute(1, 2, 3, 0)                                                # (F, H, W, 3)
        face = C.find_face(ref[i].permute(1, 2, 0))
        rs.append(C.pearson(C.mouth_openings(frames, face), audio[i]))
        col, _ = C.face_tracks(frames, face)
        drift.append((col - face.skin).norm(dim=1).max().item())
    rs = torch.tensor(rs).nan_to_num(0)
    return {"r_mean": rs.mean().item(), "r_median": rs.median().item(), "colour_drift": max(drift)}


def stage_flow(work: Path, data: dict, args) -> PortraitUNet:
    torch.manual_seed(args.seed)
    model = PortraitUNet(PortraitUNetConfig())
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(args.seed + 2)
    start = 0
    ckpt = work / "flow_ckpt.pt"
    if ckpt.is_file():       # our own checkpoint, written below by this script (weights_only: plain tensors)
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        g.set_state(state["rng"])
        start = int(state["step"])
        log(f"flow: resumed at step {start}")
    n = len(data["video"])
    t0 = time.time()
    for step in range(start, args.steps):
        lr = args.lr * min(1.0, (step + 1) / 100) * (0.55 + 0.45 * math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(n, (args.batch,), generator=g)
        batch = {k: data[k][idx] for k in ("video", "reference", "audio", "mouth")}
        loss = flow_loss(model, batch, g, args.bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (step + 1) / (step + 10))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        if step % 50 == 0:
            log(f"flow step {step} loss {loss.item():.4f} lr {lr:.2e} ({time.time() - t0:.0f}s)")
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            log(f"flow step {step + 1} eval (EMA): {json.dumps(evaluate(ema.eval(), data))}")
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "rng": g.get_state(), "step": step + 1}, ckpt)
    return ema.eval()


# ---- 3. export ----------------------------------------------------------------------------------------------
def export(model: PortraitUNet, out: Path, args) -> None:
    from kinema.models.tiny.portrait_pipeline import save_folder
    save_folder(out, model, SCHEDULER, {"num_frames": FRAMES, "height": SIZE, "width": SIZE, "fps": FPS,
                                        "training": {"seed": args.seed, "clips": args.clips, "steps": args.steps,
                                                     "batch": args.batch, "lr": args.lr}})
    log(f"exported to {out}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips", type=int, default=8000)
    p.add_argument("--voices", type=int, default=1500)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (faster only where the CPU has AMX and is idle)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    data = stage_dataset(args.work, args)
    model = stage_flow(args.work, data, args)
    export(model, args.out, args)


if __name__ == "__main__":
    main()
