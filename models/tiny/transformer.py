"""Kinema-Tiny's denoiser: a small flow-matching transformer over the TAE's latent grid (patch 1).

What a first attempt on this machine taught (TINY_NOTES): a pooled prompt applied identically to every frame
lets a model learn colour and shape but not the direction word. So here:
- every latent cell is a token, with learned per-frame and per-position embeddings, and full self-attention
  over all frames (8x8 cells x 5 latent frames = 320 tokens for 9 frames at 32 px);
- adaLN-Zero modulation *per latent frame*: timestep + pooled prompt mixed with that frame's own embedding
  by a small MLP, so the prompt can act differently at each time;
- a depthwise 3x3x3 convolution in every block (motion in this latent is about one cell per latent frame, so a
  3-tap neighbourhood in time and space is where "moves left" lives);
- cross-attention from every token to the prompt's word tokens;
- image-to-video: the first frame's latent and a mask ride along as extra input channels (Wan 2.1's scheme),
  trained on half of the batches, so one model does both text-to-video and image-to-video.

Velocity prediction in diffusers' FlowMatchEulerDiscreteScheduler convention: x_t = (1 - s) x0 + s noise with
s = t / 1000, and the model returns noise - x0.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class TransformerConfig:
    latent_channels: int = 8
    dim: int = 128              # token width
    depth: int = 6              # blocks
    heads: int = 4
    text_dim: int = 128         # width of the text encoder's token states
    max_frames: int = 9         # latent frames with a learned embedding (9 -> up to 17 video frames)
    max_side: int = 16          # latent cells per side with a learned embedding (16 -> up to 64 px)
    mlp_ratio: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t (B,) in 0..1000 -> (B, dim) sinusoidal features."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        ctx = x if context is None else context
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)                       # (B, H, N, d/H)
        k, v = self.kv(ctx).view(b, ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)   # 2x (B, H, M, d/H)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        d = cfg.dim
        self.norm_conv = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.dwconv = nn.Conv3d(d, d, 3, padding=1, groups=d)
        self.pw = nn.Linear(d, d)
        self.norm_attn = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, cfg.heads)
        self.norm_cross = nn.LayerNorm(d, eps=1e-6)
        self.cross = Attention(d, cfg.heads, kv_dim=cfg.text_dim)
        self.norm_mlp = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(d, d * cfg.mlp_ratio), nn.GELU(approximate="tanh"),
                                 nn.Linear(d * cfg.mlp_ratio, d))
        self.ada = nn.Linear(d, 9 * d)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x, mod, text, grid):
        """x (B, N, D) tokens in (f, h, w) order; mod (B, f, D) conditioning per latent frame;
        text (B, L, Dt) word tokens; grid = (f, h, w) with N = f*h*w."""
        f, h, w = grid
        b, n, d = x.shape
        params = self.ada(F.silu(mod)).unsqueeze(2)                                   # (B, f, 1, 9D)
        (s1, c1, g1, s2, c2, g2, s3, c3, g3) = params.chunk(9, dim=-1)

        def per_frame(y):                                                             # (B, N, D) -> (B, f, hw, D)
            return y.view(b, f, h * w, d)

        # 1. local space-time mixing: depthwise 3x3x3 conv (tokens are already channels-last)
        y = modulate(per_frame(self.norm_conv(x)), s1, c1)                            # (B, f, hw, D)
        y = self.dwconv(y.view(b, f, h, w, d).permute(0, 4, 1, 2, 3))                 # (B, D, f, h, w)
        y = self.pw(F.gelu(y.permute(0, 2, 3, 4, 1), approximate="tanh"))             # (B, f, h, w, D)
        x = x + (g1 * y.reshape(b, f, h * w, d)).view(b, n, d)
        # 2. global self-attention over all frames and cells
        y = self.attn(modulate(per_frame(self.norm_attn(x)), s2, c2).view(b, n, d))
        x = x + (g2 * per_frame(y)).view(b, n, d)
        # 3. cross-attention to the prompt's word tokens
        x = x + self.cross(self.norm_cross(x), text)
        # 4. MLP
        y = self.mlp(modulate(per_frame(self.norm_mlp(x)), s3, c3))
        return x + (g3 * y).view(b, n, d)


class TinyVideoTransformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.config = cfg
        d, c = cfg.dim, cfg.latent_channels
        self.proj_in = nn.Linear(2 * c + 1, d)                     # noisy latent + first-frame latent + mask
        self.pos_frame = nn.Parameter(torch.randn(cfg.max_frames, d) * 0.02)
        self.pos_row = nn.Parameter(torch.randn(cfg.max_side, d) * 0.02)
        self.pos_col = nn.Parameter(torch.randn(cfg.max_side, d) * 0.02)
        self.t_embed = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.text_pool = nn.Linear(cfg.text_dim, d)
        self.frame_cond = nn.Parameter(torch.randn(cfg.max_frames, d) * 0.02)
        self.frame_mix = nn.Sequential(nn.SiLU(), nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(d, 2 * d)
        self.proj_out = nn.Linear(d, c)
        for m in (self.ada_out, self.proj_out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, f, h, w) noisy latents; t (B,) timesteps 0..1000; text (B, L, Dt) token states;
        condition (B, C+1, f, h, w) first-frame latent + mask (zeros for text-to-video) -> velocity (B, C, f, h, w)."""
        b, c, f, h, w = x.shape
        if condition is None:
            condition = x.new_zeros(b, c + 1, f, h, w)
        tokens = torch.cat([x, condition], dim=1).flatten(2).transpose(1, 2)          # (B, N, 2C+1)
        pos = (self.pos_frame[:f, None, None] + self.pos_row[None, :h, None]
               + self.pos_col[None, None, :w]).reshape(f * h * w, -1)                   # (N, D)
        tok = self.proj_in(tokens) + pos
        cond = self.t_embed(timestep_embedding(t, self.config.dim)) + self.text_pool(text[:, 0])   # (B, D)
        # per latent frame: prompt x frame position interact through a small MLP (B, f, D)
        mod = cond[:, None] + self.frame_mix(cond[:, None] + self.frame_cond[None, :f])
        for block in self.blocks:
            tok = block(tok, mod, text, (f, h, w))
        shift, scale = self.ada_out(F.silu(mod)).unsqueeze(2).chunk(2, dim=-1)          # (B, f, 1, D)
        out = self.proj_out(modulate(self.norm_out(tok).view(b, f, h * w, -1), shift, scale))   # (B, f, hw, C)
        out = out.view(b, f * h * w, c)                                                 # (B, N, C)
        return out.transpose(1, 2).reshape(b, c, f, h, w)
