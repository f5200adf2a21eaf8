"""Kinema-Tiny Portrait's denoiser: a small pixel-space (2+1)D convolutional UNet for flow matching.

Why pixel space (not the Kinema-Tiny Video TAE): the mouth of a 32 px face is a few pixels tall, which a 4x
spatial autoencoder blurs, and a 2x temporal one would force frame counts of 2k+1 — a talking portrait needs
exactly ceil(seconds x fps) frames, any count. At 32 px a small UNet in pixels is as cheap as a latent model.

Inputs per frame (channels): the noisy frame (3), the reference portrait (3, the identity: the same image in every
frame of every window), known frames (3) + a mask (1) — frames already made by the previous window (its overlap),
held clean so windows join smoothly. Conditioning per frame (FiLM scale/shift in every block): the timestep and
that frame's audio features, read through a 5-frame temporal convolution (so each frame also hears its
neighbours), plus learned flags for "no audio" and "no reference" (dropped in training for guidance).
Each block: 3x3 conv, FiLM, 3-tap temporal conv across frames, 3x3 conv, residual.

Velocity prediction in diffusers' FlowMatchEulerDiscreteScheduler convention: x_t = (1 - s) x0 + s noise with
s = t / 1000 and x0 the frames in -1..1; the model returns noise - x0.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .transformer import timestep_embedding


@dataclass
class PortraitUNetConfig:
    channels: tuple[int, ...] = (16, 32, 64)    # per level: 32, 16, 8 px for a 32 px frame
    cond_dim: int = 128                          # width of the per-frame conditioning vector
    audio_features: int = 1                      # audio features per frame (loudness)
    audio_context: int = 5                       # frames the audio convolution sees (odd)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * cout)
        self.time = nn.Parameter(torch.zeros(3, cout))       # 3-tap temporal filter per channel (prev, self, next)
        self.norm2, self.conv2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, frames: int) -> torch.Tensor:
        """x (B*F, Cin, H, W); cond (B*F, D) -> (B*F, Cout, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        bf, c, hh, ww = h.shape
        v = h.view(bf // frames, frames, c, hh, ww)                                       # (B, F, C, H, W)
        pad = F.pad(v, (0, 0, 0, 0, 0, 0, 1, 1))                                          # (B, F+2, C, H, W) zeros
        k = self.time.view(3, 1, 1, c, 1, 1)
        t = k[0] * pad[:, :-2] + k[1] * v + k[2] * pad[:, 2:]                              # (B, F, C, H, W)
        return self.skip(x) + self.conv2(h + t.reshape(bf, c, hh, ww))


class PortraitUNet(nn.Module):
    def __init__(self, cfg: PortraitUNetConfig):
        super().__init__()
        self.config = cfg
        ch, d = cfg.channels, cfg.cond_dim
        self.t_embed = nn.Sequential(nn.Linear(64, d), nn.SiLU(), nn.Linear(d, d))
        self.audio = nn.Sequential(nn.Conv1d(cfg.audio_features, d, cfg.audio_context, padding=cfg.audio_context // 2),
                                   nn.SiLU(), nn.Conv1d(d, d, 1))
        self.no_audio = nn.Parameter(torch.zeros(d))
        self.no_ref = nn.Parameter(torch.zeros(d))
        self.mix = nn.Sequential(nn.SiLU(), nn.Linear(d, d))
        self.conv_in = nn.Conv2d(10, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        for i, c in enumerate(ch):
            self.down.append(Block(ch[i - 1] if i else ch[0], c, d))
            if i < len(ch) - 1:
                self.pool.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = Block(ch[-1], ch[-1], d)
        self.up = nn.ModuleList()
        for i in reversed(range(len(ch) - 1)):
            self.up.append(Block(ch[i + 1] + ch[i], ch[i], d))
        self.out = nn.Sequential(nn.GroupNorm(8, ch[0]), nn.SiLU(), nn.Conv2d(ch[0], 3, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, audio: torch.Tensor, reference: torch.Tensor,
                known: torch.Tensor, audio_on: torch.Tensor, ref_on: torch.Tensor) -> torch.Tensor:
        """x (B, 3, F, H, W) noisy frames in -1..1 units; t (B,) timesteps 0..1000; audio (B, F, A) features;
        reference (B, 3, H, W) -1..1; known (B, 4, F, H, W) known frames -1..1 + mask; audio_on, ref_on (B,)
        1 = given, 0 = dropped (guidance) -> velocity (B, 3, F, H, W)."""
        b, _, f, h, w = x.shape
        ref = reference * ref_on.view(b, 1, 1, 1).to(reference)
        inp = torch.cat([x, ref.unsqueeze(2).expand(b, 3, f, h, w), known], dim=1)       # (B, 10, F, H, W)
        inp = inp.permute(0, 2, 1, 3, 4).reshape(b * f, 10, h, w)                         # (B*F, 10, H, W)
        a_on, r_on = audio_on.view(b, 1, 1).to(x), ref_on.view(b, 1, 1).to(x)
        aud = self.audio((audio.to(x) * a_on).transpose(1, 2)).transpose(1, 2)            # (B, F, D)
        cond = (self.t_embed(timestep_embedding(t, 64).to(x))[:, None] + aud * a_on
                + (1 - a_on) * self.no_audio + (1 - r_on) * self.no_ref)                  # (B, F, D)
        cond = self.mix(cond).reshape(b * f, -1)                                          # (B*F, D)
        hs = []
        y = self.conv_in(inp)
        for i, block in enumerate(self.down):
            y = block(y, cond, f)
            if i < len(self.pool):
                hs.append(y)
                y = self.pool[i](y)
        y = self.mid(y, cond, f)
        for block in self.up:
            y = F.interpolate(y, scale_factor=2, mode="nearest")
            y = block(torch.cat([y, hs.pop()], dim=1), cond, f)
        out = self.out(y)                                                                 # (B*F, 3, H, W)
        return out.view(b, f, 3, h, w).permute(0, 2, 1, 3, 4)                             # (B, 3, F, H, W)
