"""Kinema-Tiny Audio: sound for a Kinema-Tiny clip, a small flow-matching model over log-mel frames.

Three parts:
- Mel (fixed, no weights): 8 kHz waveform <-> normalised log-mel frames (32 bands, hop 128 = 16 ms, 62.5 frames a
  second); the way back is the filterbank's pseudo-inverse then Griffin-Lim (a fixed inverse, no vocoder).
- VideoEncoder (learned): each frame (pooled to 16x16, plus x/y coordinate planes) through a small conv stack to a
  vector, then dilated temporal convolutions across frames: per-frame features that see the motion around each
  frame. A head predicts "impact at this frame" (trained with an auxiliary loss on the known impact frames);
  its probability is the last feature channel.
- FlowNet (learned): a 1-D residual conv net over mel frames, dilated 1..8, with adaLN from the timestep; the video
  features are resampled to the mel frames' times (frame k sits at k / fps seconds) and enter every block.
  Predicts flow-matching velocity (noise - x0) at timesteps 0..1000, as FlowMatchEulerDiscreteScheduler expects.

Folder layout (safetensors + JSON only; nothing is unpickled):
    model_index.json                   {"_class_name": "KinemaTinyAudioPipeline", ...}
    scheduler/scheduler_config.json    FlowMatchEulerDiscreteScheduler
    video_encoder/config.json + diffusion_pytorch_model.safetensors
    transformer/config.json + diffusion_pytorch_model.safetensors   (the FlowNet; named like the other families)
    mel/config.json                    the fixed mel front end and the latent normalisation
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

PIPELINE_CLASS = "KinemaTinyAudioPipeline"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "kinema-tiny-audio"
WEIGHTS = {"video_encoder": "diffusion_pytorch_model.safetensors", "transformer": "diffusion_pytorch_model.safetensors"}


def _from_dict(cls, data: dict):
    names = {f.name for f in fields(cls)}
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names})


# ---------------------------------------------------------------------------------------------------------------
# Mel front end (fixed)
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class MelConfig:
    sample_rate: int = 8000
    n_fft: int = 256            # 32 ms window
    hop: int = 128              # 16 ms between mel frames
    n_mels: int = 32
    f_min: float = 40.0
    eps: float = 1e-4           # log(mel + eps): about -80 dB below a full-scale tone
    mean: float = -6.0          # latent = (log mel - mean) / std, measured on the training data
    std: float = 2.5
    griffin_lim_iters: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


def _hz_to_mel(f):
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_filterbank(cfg: MelConfig) -> torch.Tensor:
    """Triangular HTK mel filters, (n_mels, n_fft // 2 + 1), each normalised to unit area."""
    bins = cfg.n_fft // 2 + 1
    freqs = torch.linspace(0, cfg.sample_rate / 2, bins)
    mels = torch.linspace(_hz_to_mel(cfg.f_min), _hz_to_mel(cfg.sample_rate / 2), cfg.n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    return fb / fb.sum(dim=1, keepdim=True).clamp_min(1e-8)


class Mel:
    """waveform (B, samples) <-> normalised log-mel latents (B, n_mels, frames); frames = samples // hop + 1."""

    def __init__(self, cfg: MelConfig):
        self.cfg = cfg
        self.fb = mel_filterbank(cfg)                                      # (M, K)
        self.inv = torch.linalg.pinv(self.fb)                              # (K, M)
        self.window = torch.hann_window(cfg.n_fft)

    def frames_for(self, num_samples: int) -> int:
        """Mel frames whose inverse covers num_samples: the last frame's centre at or past the last sample."""
        return -(-num_samples // self.cfg.hop) + 1

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        spec = torch.stft(wave.float(), c.n_fft, c.hop, window=self.window, center=True, return_complex=True)
        mag = spec.abs()                                                   # (B, K, frames)
        return torch.log(self.fb @ mag + c.eps)                            # (B, M, frames)

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        return (self.log_mel(wave) - self.cfg.mean) / self.cfg.std

    def decode(self, latents: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """latents (B, M, frames) -> waveform (B, (frames - 1) * hop): pseudo-inverse to a magnitude spectrogram,
        then Griffin-Lim from a seeded random phase."""
        c = self.cfg
        mel = torch.exp(latents.float() * c.std + c.mean) - c.eps
        mag = (self.inv @ mel.clamp_min(0)).clamp_min(0)                   # (B, K, frames)
        length = (latents.shape[-1] - 1) * c.hop
        g = torch.Generator().manual_seed(seed)
        phase = torch.exp(2j * math.pi * torch.rand(mag.shape, generator=g))
        spec = mag * phase
        for _ in range(c.griffin_lim_iters):
            wave = torch.istft(spec, c.n_fft, c.hop, window=self.window, center=True, length=length)
            rebuilt = torch.stft(wave, c.n_fft, c.hop, window=self.window, center=True, return_complex=True)
            spec = mag * torch.exp(1j * torch.angle(rebuilt))
        return torch.istft(spec, c.n_fft, c.hop, window=self.window, center=True, length=length)


# ---------------------------------------------------------------------------------------------------------------
# Video encoder
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class VideoEncoderConfig:
    size: int = 16              # frames are area-pooled to size x size before the convs
    channels: tuple = (24, 32, 48)
    width: int = 64             # per-frame feature width
    temporal_layers: int = 3    # dilated temporal convs (kernel 3, dilation 1, 2, 1, ...)
    out_dim: int = 48           # features handed to the flow net (the last one: the impact probability)

    def to_dict(self) -> dict:
        return asdict(self)


class VideoEncoder(nn.Module):
    """IMAGE-like frames (B, F, 3, H, W) 0..1 -> per-frame features (B, out_dim, F) and impact logits (B, F)."""

    def __init__(self, config: VideoEncoderConfig):
        super().__init__()
        self.config = c = config
        c1, c2, c3 = c.channels
        self.convs = nn.Sequential(
            nn.Conv2d(5, c1, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.SiLU(),                 # size / 2
            nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.SiLU())                 # size / 4
        self.frame_proj = nn.Linear(c3 * (c.size // 4) ** 2, c.width)
        self.temporal = nn.ModuleList(
            nn.Conv1d(c.width, c.width, 3, padding=1 + i % 2, dilation=1 + i % 2) for i in range(c.temporal_layers))
        self.norms = nn.ModuleList(nn.GroupNorm(8, c.width) for _ in range(c.temporal_layers))
        self.out = nn.Conv1d(c.width, c.out_dim - 1, 1)
        self.impact_head = nn.Conv1d(c.width, 1, 1)
        s = c.size
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
        self.register_buffer("coords", torch.stack([xx, yy])[None], persistent=False)   # (1, 2, s, s)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, f = frames.shape[:2]
        x = frames.flatten(0, 1).float()                                         # (B*F, 3, H, W)
        if x.shape[-1] != self.config.size or x.shape[-2] != self.config.size:
            x = F.adaptive_avg_pool2d(x, self.config.size)                       # (B*F, 3, s, s)
        x = torch.cat([x * 2 - 1, self.coords.expand(x.shape[0], -1, -1, -1).to(x)], 1)   # (B*F, 5, s, s)
        h = self.frame_proj(self.convs(x).flatten(1))                            # (B*F, width)
        h = h.view(b, f, -1).transpose(1, 2)                                     # (B, width, F)
        for conv, norm in zip(self.temporal, self.norms):
            h = h + conv(F.silu(norm(h)))
        logits = self.impact_head(h)                                             # (B, 1, F)
        return torch.cat([self.out(h), torch.sigmoid(logits)], 1), logits[:, 0]  # (B, D, F), (B, F)


def resample_features(features: torch.Tensor, fps: float, num_mel_frames: int, hop: int,
                      sample_rate: int) -> torch.Tensor:
    """Per-video-frame features (B, D, F) -> per-mel-frame (B, D, T): mel frame j (centre j * hop / rate seconds)
    reads video position j * hop / rate * fps, linearly between the two nearest frames (clamped to the clip)."""
    f = features.shape[-1]
    pos = torch.arange(num_mel_frames, dtype=torch.float32) * (hop / sample_rate) * fps
    pos = pos.clamp(0, f - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=f - 1)
    w = (pos - lo.float()).to(features)                                          # (T,)
    return features[..., lo] * (1 - w) + features[..., hi] * w                  # (B, D, T)


# ---------------------------------------------------------------------------------------------------------------
# Flow net
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class FlowNetConfig:
    in_channels: int = 32       # mel bands
    cond_dim: int = 48          # video features
    width: int = 64
    dilations: tuple = (1, 2, 4, 8, 1, 2, 4, 8)
    kernel: int = 3

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of timesteps 0..1000, (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class Block(nn.Module):
    def __init__(self, width: int, dilation: int, kernel: int):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.norm1, self.norm2 = nn.GroupNorm(8, width), nn.GroupNorm(8, width)
        self.conv1 = nn.Conv1d(width, width, kernel, padding=pad, dilation=dilation)
        self.conv2 = nn.Conv1d(width, width, kernel, padding=pad, dilation=dilation)
        self.cond = nn.Conv1d(width, width, 1)
        self.ada = nn.Linear(width, 3 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x, cond, temb):
        scale, shift, gate = self.ada(temb)[..., None].chunk(3, dim=1)          # (B, W, 1) each
        h = self.norm1(x) * (1 + scale) + shift
        h = self.conv1(F.silu(h)) + self.cond(cond)
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h * (1 + gate)


class FlowNet(nn.Module):
    """latents (B, M, T), timesteps (B,) 0..1000, features (B, width, T) -> velocity (B, M, T)."""

    def __init__(self, config: FlowNetConfig):
        super().__init__()
        self.config = c = config
        self.inp = nn.Conv1d(c.in_channels, c.width, 3, padding=1)
        self.cond_in = nn.Conv1d(c.cond_dim, c.width, 3, padding=1)
        self.t_mlp = nn.Sequential(nn.Linear(c.width, c.width), nn.SiLU(), nn.Linear(c.width, c.width))
        self.blocks = nn.ModuleList(Block(c.width, d, c.kernel) for d in c.dilations)
        self.norm_out = nn.GroupNorm(8, c.width)
        self.out = nn.Conv1d(c.width, c.in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        temb = self.t_mlp(timestep_embedding(t, self.config.width))             # (B, W)
        cond = F.silu(self.cond_in(features))                                    # (B, W, T)
        h = self.inp(x)                                                          # (B, W, T)
        for block in self.blocks:
            h = block(h, cond, temb)
        return self.out(F.silu(self.norm_out(h)))                               # (B, M, T)


# ---------------------------------------------------------------------------------------------------------------
# The folder
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class TinyAudioModels:
    video_encoder: VideoEncoder
    transformer: FlowNet
    mel: Mel
    scheduler_config: dict
    index: dict

    def eval(self) -> "TinyAudioModels":
        for m in (self.video_encoder, self.transformer):
            m.eval().requires_grad_(False)
        return self


def scheduler_config() -> dict:
    from diffusers import FlowMatchEulerDiscreteScheduler
    return dict(FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0).config)


def save_folder(path: Path, encoder: VideoEncoder, flow: FlowNet, mel_config: MelConfig, extra: dict | None = None,
                dtype: torch.dtype = torch.float16) -> None:
    """Write the model folder; weights as `dtype` (fp16: half the size; loading casts back)."""
    from .folder import write_index, write_json, write_part, write_scheduler
    path = Path(path)
    for name, module in (("video_encoder", encoder), ("transformer", flow)):
        write_part(path, name, module, module.config.to_dict(), WEIGHTS[name], dtype)
    write_json(path / "mel" / "config.json", mel_config.to_dict())
    write_scheduler(path, scheduler_config())
    write_index(path, PIPELINE_CLASS, {"scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                                       "video_encoder": ["kinema", "VideoEncoder"], "transformer": ["kinema", "FlowNet"],
                                       "sample_rate": mel_config.sample_rate}, extra)


def load_folder(path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TinyAudioModels:
    """Read a Kinema-Tiny Audio folder: configs from JSON, weights with safetensors (never torch.load)."""
    from safetensors.torch import load_file
    from .pipeline import build_checked
    path = Path(path)
    index = json.loads((path / "model_index.json").read_text())
    needed = [path / n / w for n, w in WEIGHTS.items()] + [path / "mel" / "config.json"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Kinema-Tiny Audio folder {str(path)!r} is incomplete: missing {', '.join(missing)}. "
                                f"Fix: re-copy the folder, or retrain it from a source checkout: "
                                f"`python -m training.tiny.audio_train`.")
    modules = {}
    for name, (cfg_cls, cls) in {"video_encoder": (VideoEncoderConfig, VideoEncoder),
                                 "transformer": (FlowNetConfig, FlowNet)}.items():
        cfg = _from_dict(cfg_cls, json.loads((path / name / "config.json").read_text()))
        module = build_checked(lambda: cls(cfg), path / name / WEIGHTS[name], path / name / "config.json")
        state = load_file(str(path / name / WEIGHTS[name]))
        module.load_state_dict({k: v.float() for k, v in state.items()})
        modules[name] = module.to(device, dtype)
    mel = Mel(_from_dict(MelConfig, json.loads((path / "mel" / "config.json").read_text())))
    sched = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    return TinyAudioModels(modules["video_encoder"], modules["transformer"], mel, sched, index).eval()
