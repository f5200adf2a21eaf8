"""Train Kinema-Tiny Audio from code: `python -m kinema.models.tiny.audio_train --out DIR --seed 0`.

1. Dataset: `--clips` procedural clips of 33 frames (audio_data.random_clip: floor bounces, wall bounces, impact-free
   motions), rendered at 32x32 and pooled to the encoder's 16x16; impacts and loudness kept per clip.
2. Each step: one clip length (9..33 frames, a random crop) and one fps (6..16) for the batch; the sound of the whole
   33-frame clip is synthesized at that fps and cut to the crop (so knocks from before the crop still ring out);
   frames get blur / noise / brightness jitter (generated clips are softer than rendered ones).
3. Loss: rectified-flow velocity MSE on normalised log-mel frames (logit-normal timesteps, 10 % of samples without
   the video: classifier-free guidance) + 0.5 x an auxiliary per-frame impact BCE on the video encoder (training
   only: at inference the features come from the frames alone). AdamW, warm-up + cosine, EMA, bf16 autocast.
4. Export: fp16 safetensors + JSON configs (audio_model.save_folder).
Reproducible from --seed; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from . import audio_data as D
from .audio_model import (FlowNet, FlowNetConfig, Mel, MelConfig, VideoEncoder, VideoEncoderConfig,
                          resample_features, save_folder)

CLIP_FRAMES = 33


def build_dataset(seed: int, count: int, size: int = 32, pooled: int = 16):
    """(frames (N, F, 3, pooled, pooled) float16, clips) for `count` random 33-frame clips."""
    g = torch.Generator().manual_seed(seed)
    clips, frames = [], []
    for _ in range(count):
        clip = D.random_clip(g, CLIP_FRAMES)
        video = D.render_track(clip.spec, clip.track, size)                        # (3, F, H, W)
        video = F.adaptive_avg_pool2d(video.transpose(0, 1), pooled)              # (F, 3, s, s)
        frames.append(video.half())
        clips.append(clip)
    return torch.stack(frames), clips


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Blur / noise / brightness jitter per clip: x (B, F, 3, s, s) 0..1."""
    b = x.shape[0]
    out = []
    kernel = torch.tensor([0.25, 0.5, 0.25])
    k2 = (kernel[:, None] * kernel[None])[None, None].repeat(3, 1, 1, 1)       # (3, 1, 3, 3)
    for i in range(b):
        v = x[i]
        for _ in range(2):                                                      # up to two blur passes
            if torch.rand((), generator=g) < 0.5:
                mix = torch.rand((), generator=g)
                v = v * (1 - mix) + F.conv2d(v, k2, padding=1, groups=3) * mix
        gain = 0.85 + 0.3 * torch.rand((), generator=g)
        noise = torch.randn(v.shape, generator=g) * 0.03 * torch.rand((), generator=g)
        out.append((v * gain + noise).clamp(0, 1))
    return torch.stack(out)


def make_batch(frames, clips, idx, fps, num_frames, mel: Mel, g: torch.Generator):
    """Crops of num_frames frames, their sound at fps, the mel latents and per-frame impact labels."""
    sr = mel.cfg.sample_rate
    num_samples = round(num_frames * sr / fps)
    full = round(CLIP_FRAMES * sr / fps)
    vids, waves, labels = [], [], []
    for i in idx.tolist():
        start = int(torch.randint(0, CLIP_FRAMES - num_frames + 1, (), generator=g))
        wave = D.synthesize(clips[i], fps, full + sr, g, sr)
        s0 = round(start * sr / fps)
        waves.append(wave[s0:s0 + num_samples])
        vids.append(frames[i, start:start + num_frames].float())
        lab = torch.zeros(num_frames)
        for k in clips[i].impacts:
            if start <= k < start + num_frames:
                lab[k - start] = 1.0
        labels.append(lab)
    wave = torch.stack(waves)                                                     # (B, samples)
    latents = mel.encode(wave)                                                    # (B, M, T)
    return torch.stack(vids), latents, torch.stack(labels), wave


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips", type=int, default=3000)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    t0 = time.time()

    # 1. dataset
    frames, clips = build_dataset(args.seed, args.clips)
    print(f"dataset: {len(clips)} clips {tuple(frames.shape)} in {time.time() - t0:.0f} s", flush=True)

    # 2. latent statistics
    mel_cfg = MelConfig()
    mel = Mel(mel_cfg)
    _, _, _, wave = make_batch(frames, clips, torch.arange(64), 8.0, CLIP_FRAMES, mel, g)
    logm = mel.log_mel(wave)
    mel_cfg.mean, mel_cfg.std = round(float(logm.mean()), 3), round(float(logm.std()), 3)
    mel = Mel(mel_cfg)
    print(f"log-mel mean {mel_cfg.mean} std {mel_cfg.std}", flush=True)

    # 3. models
    encoder = VideoEncoder(VideoEncoderConfig())
    flow = FlowNet(FlowNetConfig(in_channels=mel_cfg.n_mels, cond_dim=encoder.config.out_dim))
    params = list(encoder.parameters()) + list(flow.parameters())
    print(f"params: encoder {sum(p.numel() for p in encoder.parameters()) / 1e6:.3f} M, "
          f"flow {sum(p.numel() for p in flow.parameters()) / 1e6:.3f} M", flush=True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    warm = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    ema_enc, ema_flow = copy.deepcopy(encoder).requires_grad_(False), copy.deepcopy(flow).requires_grad_(False)
    decay = 0.995

    # 4. training
    t1 = time.time()
    for step in range(args.steps):
        num_frames = int(torch.randint(9, CLIP_FRAMES + 1, (), generator=g))
        fps = 6.0 + 10.0 * float(torch.rand((), generator=g))
        idx = torch.randint(0, len(clips), (args.batch,), generator=g)
        vids, x0, labels, _ = make_batch(frames, clips, idx, fps, num_frames, mel, g)
        vids = augment(vids, g)
        b, _, t_len = x0.shape
        s = torch.sigmoid(torch.randn(b, generator=g))                          # logit-normal sigma
        noise = torch.randn(x0.shape, generator=g)
        xt = (1 - s[:, None, None]) * x0 + s[:, None, None] * noise
        keep = (torch.rand(b, generator=g) > 0.1).float()[:, None, None]         # 10 % without the video
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats, logits = encoder(vids)                                         # (B, D, F), (B, F)
            cond = resample_features(feats.float(), fps, t_len, mel_cfg.hop, mel_cfg.sample_rate) * keep
            pred = flow(xt, s * 1000, cond)
        loss_flow = F.mse_loss(pred.float(), noise - x0)
        loss_aux = F.binary_cross_entropy_with_logits(logits.float(), labels, pos_weight=torch.tensor(4.0))
        loss = loss_flow + 0.5 * loss_aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            for ema, live in ((ema_enc, encoder), (ema_flow, flow)):
                for pe, pl in zip(ema.parameters(), live.parameters()):
                    pe.lerp_(pl, 1 - decay)
        if step % 50 == 0 or step in (5, 20) or step == args.steps - 1:
            print(f"step {step} flow {loss_flow.item():.4f} aux {loss_aux.item():.4f} "
                  f"{(time.time() - t1) / (step + 1):.2f} s/step", flush=True)
        if (step + 1) % 500 == 0 or step == args.steps - 1:
            save_folder(args.out, ema_enc, ema_flow, mel_cfg, extra={"training": {
                "seed": args.seed, "clips": args.clips, "steps": step + 1, "batch": args.batch,
                "train_s": round(time.time() - t1)}})
    print(f"done in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
