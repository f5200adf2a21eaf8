"""Kinema-Tiny's temporal autoencoder (TAE): 4x in space, 2x in time, causal in time like Movie Gen's and Wan's.

Frames (B, 3, F, H, W) in -1..1 with F = 2k+1 -> latents (B, C, k+1, H/4, W/4). Latent frame 0 holds frame 0
alone and latent frame j >= 1 holds frames 2j-1 and 2j, so a single image encodes to exactly the first latent
frame of any clip that starts with it (image-to-video conditions on that). Each latent frame is encoded and
decoded from its own frames only: the TAE can be trained on 3-frame snippets and handles any 2k+1 length.

A small KL term keeps the latent smooth (a VAE with a tiny KL weight, as in Stable Diffusion); encode() returns
the mean. The sampler works on latents normalised by `latents_mean` / `latents_std`, measured on training data
after the TAE is trained and stored in its config.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class TAEConfig:
    latent_channels: int = 8
    channels: tuple[int, ...] = (32, 64, 64)     # per level: 32x32, 16x16, 8x8 pixels for a 32 px frame
    spatial_ratio: int = 4                       # 2 ** (len(channels) - 1)
    temporal_ratio: int = 2
    latents_mean: list[float] = field(default_factory=lambda: [0.0] * 8)
    latents_std: list[float] = field(default_factory=lambda: [1.0] * 8)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, ch), nn.Conv2d(ch, ch, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(8, ch), nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class TemporalAutoencoder(nn.Module):
    def __init__(self, config: TAEConfig):
        super().__init__()
        self.config = config
        ch = config.channels
        c = config.latent_channels
        # per-frame encoder: 32 -> 16 -> 8 px
        enc = [nn.Conv2d(3, ch[0], 3, padding=1)]
        for i in range(len(ch) - 1):
            enc += [ResBlock(ch[i]), nn.Conv2d(ch[i], ch[i + 1], 3, stride=2, padding=1)]
        enc += [ResBlock(ch[-1])]
        self.encoder = nn.Sequential(*enc)
        top = ch[-1]
        self.enc_first = nn.Conv2d(top, top, 1)                      # latent frame 0 from frame 0
        self.enc_pair = nn.Conv2d(2 * top, top, 1)                   # latent frame j from frames 2j-1, 2j
        self.enc_out = nn.Sequential(ResBlock(top), nn.GroupNorm(8, top), nn.SiLU(), nn.Conv2d(top, 2 * c, 3, padding=1))
        # decoder: latent frame -> 1 (first) or 2 frames of features -> per-frame upsampling
        self.dec_in = nn.Sequential(nn.Conv2d(c, top, 3, padding=1), ResBlock(top))
        self.dec_first = nn.Conv2d(top, top, 1)
        self.dec_pair = nn.Conv2d(top, 2 * top, 1)
        dec = [ResBlock(top)]
        for i in reversed(range(len(ch) - 1)):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i + 1], ch[i], 3, padding=1),
                    ResBlock(ch[i])]
        dec += [nn.GroupNorm(8, ch[0]), nn.SiLU(), nn.Conv2d(ch[0], 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    # ---- encode --------------------------------------------------------------------------------------------
    def encode_dist(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video (B, 3, F, H, W) -1..1, F odd -> (mean, logvar), each (B, C, (F+1)/2, H/4, W/4)."""
        b, _, f, h, w = video.shape
        x = video.permute(0, 2, 1, 3, 4).reshape(b * f, 3, h, w)         # (B*F, 3, H, W)
        x = self.encoder(x)
        x = x.view(b, f, *x.shape[1:])                                    # (B, F, D, h, w)
        first = self.enc_first(x[:, 0])                                   # (B, D, h, w)
        parts = [first.unsqueeze(1)]
        if f > 1:
            pairs = x[:, 1:].reshape(b * (f - 1) // 2, 2 * x.shape[2], *x.shape[3:])   # (B*k, 2D, h, w)
            parts.append(self.enc_pair(pairs).view(b, (f - 1) // 2, -1, *x.shape[3:]))
        z = torch.cat(parts, dim=1)                                       # (B, k+1, D, h, w)
        n = z.shape[1]
        z = self.enc_out(z.flatten(0, 1))                                 # (B*(k+1), 2C, h, w)
        z = z.view(b, n, *z.shape[1:]).permute(0, 2, 1, 3, 4)             # (B, 2C, k+1, h, w)
        mean, logvar = z.chunk(2, dim=1)
        return mean, logvar.clamp(-12, 6)

    # ---- decode --------------------------------------------------------------------------------------------
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latents (B, C, n, h, w) -> video (B, 3, 2n-1, 4h, 4w), roughly -1..1."""
        b, c, n, h, w = z.shape
        x = self.dec_in(z.permute(0, 2, 1, 3, 4).reshape(b * n, c, h, w))    # (B*n, D, h, w)
        x = x.view(b, n, -1, h, w)
        d = x.shape[2]
        frames = [self.dec_first(x[:, 0]).unsqueeze(1)]                       # (B, 1, D, h, w)
        if n > 1:
            pairs = self.dec_pair(x[:, 1:].flatten(0, 1))                      # (B*(n-1), 2D, h, w)
            frames.append(pairs.view(b, (n - 1) * 2, d, h, w))                 # (B, 2(n-1), D, h, w)
        x = torch.cat(frames, dim=1)                                          # (B, F, D, h, w)
        f = x.shape[1]
        out = self.decoder(x.flatten(0, 1))                                   # (B*F, 3, H, W)
        return out.view(b, f, 3, *out.shape[2:]).permute(0, 2, 1, 3, 4)      # (B, 3, F, H, W)

    # ---- normalised latents (what the flow model sees) -----------------------------------------------------
    def _stats(self, z: torch.Tensor):
        mean = torch.tensor(self.config.latents_mean, device=z.device, dtype=z.dtype).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.config.latents_std, device=z.device, dtype=z.dtype).view(1, -1, 1, 1, 1)
        return mean, std

    def encode_normalised(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 3, F, H, W) 0..1 -> normalised latents (B, C, n, h, w)."""
        mean, _ = self.encode_dist(video * 2 - 1)
        m, s = self._stats(mean)
        return (mean - m) / s

    def decode_normalised(self, z: torch.Tensor) -> torch.Tensor:
        """normalised latents (B, C, n, h, w) -> video (B, 3, F, H, W) 0..1."""
        m, s = self._stats(z)
        return (self.decode(z * s + m) / 2 + 0.5).clamp(0, 1)
