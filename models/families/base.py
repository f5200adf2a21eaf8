"""The family protocol: what differs between video models, and nothing else.

Kinema owns the denoising loop (models/sampling.py). A family supplies: loading, prompt encoding, the latent
grid for a clip, conditioning prepared once per run, ONE denoiser call on a batch of latents, and the VAE/TAE
encode/decode. The loop drives any family with diffusers' schedulers, so windows, previews, progress, interrupt
and editing work for every family at once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch

from ..checks import check_multiple, check_range, fail


class SchedulerChoice(str, Enum):
    """Sampler dropdown values. Saved in workflows: never rename a value."""
    DEFAULT = "default"          # the scheduler configured in the model folder
    FLOW_EULER = "flow_euler"    # FlowMatchEulerDiscreteScheduler (flow families)
    FLOW_UNIPC = "flow_unipc"    # UniPCMultistepScheduler with flow sigmas (Wan's own default)
    DDIM = "ddim"                # DDIMScheduler (epsilon families)
    EULER = "euler"              # EulerDiscreteScheduler (epsilon families)
    LCM = "lcm"                  # LCMScheduler (AnimateDiff-Lightning / LCM motion modules)


@dataclass
class Conditioning:
    """KINEMA_COND: one encoded prompt, plus what conditioning nodes attached to it.

    embeds: text encoder hidden states, (1, L, D) on the model's device and dtype.
    image:  optional first frame for image-to-video, IMAGE (1, H, W, 3) float 0..1 on the CPU.
    """
    family: str
    prompt: str
    embeds: torch.Tensor
    image: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def with_image(self, image: torch.Tensor) -> "Conditioning":
        return Conditioning(self.family, self.prompt, self.embeds, image, dict(self.extras))


class VideoFamily:
    """Base class for a loaded model of one family (the KINEMA_MODEL value)."""

    name: ClassVar[str] = ""
    flow: ClassVar[bool] = False              # flow matching (velocity) or epsilon/v diffusion
    spatial_ratio: int = 8                    # pixels per latent cell
    temporal_ratio: int = 1                   # frames per latent frame (causal VAEs: 4 -> frames = 4k+1)
    spatial_multiple: int = 8                 # width/height must be multiples of this
    default_frames: int = 16

    def __init__(self, path: Path, device: torch.device, dtype: torch.dtype):
        self.path = Path(path)
        self.device = device
        self.dtype = dtype

    # ---- loading -------------------------------------------------------------------------------------------
    @classmethod
    def accepts(cls, model_index: dict) -> bool:
        """True when a diffusers folder's model_index.json belongs to this family."""
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "VideoFamily":
        raise NotImplementedError

    # single-file weights: which component a .safetensors file replaces, and its class
    denoiser_attr: ClassVar[str] = "transformer"

    def load_weights_file(self, file: Path) -> None:
        """Replace the denoiser's weights with a single-file .safetensors checkpoint (diffusers or the model's
        original key layout; diffusers converts the latter). The folder supplies the config, VAE and encoders.
        Never unpickles: only .safetensors is accepted."""
        file = check_weights_file(file)
        current = getattr(self.pipe, self.denoiser_attr)
        config_dir = self.path / self.denoiser_attr
        try:
            replaced = current.__class__.from_single_file(str(file), config=str(self.path),
                                                          subfolder=self.denoiser_attr, local_files_only=True,
                                                          torch_dtype=current.dtype)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            fail("weights", f"does not fit the {self.denoiser_attr} in {config_dir} ({exc})", file.name,
                 "Pick weights of the same model variant as the folder (same size and layout).")
        self._set_denoiser(replaced.to(self.device))

    def _set_denoiser(self, module) -> None:
        setattr(self.pipe, self.denoiser_attr, module)
        setattr(self, self.denoiser_attr, module)

    # ---- conditioning --------------------------------------------------------------------------------------
    def encode_prompt(self, text: str) -> Conditioning:
        raise NotImplementedError

    def check_size(self, num_frames: int, height: int, width: int) -> None:
        """Reject (never round) sizes this model cannot make."""
        check_range("length", num_frames, 1, 10_000)
        check_multiple("height", height, self.spatial_multiple)
        check_multiple("width", width, self.spatial_multiple)
        if self.temporal_ratio > 1:
            from ..checks import check_frames
            check_frames("length", num_frames, self.temporal_ratio)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, f, h, w) of the latent clip for num_frames x height x width pixels."""
        f = (num_frames - 1) // self.temporal_ratio + 1 if self.temporal_ratio > 1 else num_frames
        return (self.latent_channels, f, height // self.spatial_ratio, width // self.spatial_ratio)

    def prepare(self, positive: Conditioning, negative: Conditioning | None, num_frames: int, height: int,
                width: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Everything the denoiser needs besides the latents, batched as [negative, positive] when negative
        is given (classifier-free guidance in one batch) or [positive] alone."""
        raise NotImplementedError

    # ---- windows (long video) ----------------------------------------------------------------------------
    text_keys: ClassVar[tuple[str, ...]] = ("encoder_hidden_states",)   # batch entries that a prompt schedule blends
    per_frame_text: ClassVar[bool] = False      # text rows are per frame (B*F, L, D) rather than per sample (B, L, D)
    frame_keys: ClassVar[dict[str, int]] = {}   # batch entries with a frame axis -> that axis, sliced per window
    attention_windows: ClassVar[bool] = False   # can fuse windows inside its temporal attention

    def window_batch(self, batch: dict[str, Any], start: int, end: int, num_frames: int) -> dict[str, Any]:
        """The batch for latent frames [start, end) of a clip of num_frames latent frames."""
        out = dict(batch)
        for key, axis in self.frame_keys.items():
            if key in out and out[key] is not None:
                out[key] = out[key].narrow(axis, start, end - start)
        if self.per_frame_text:
            for key in self.text_keys:
                rows = out[key]                                             # (B*F, L, D)
                rows = rows.view(-1, num_frames, *rows.shape[1:])[:, start:end]  # (B, f, L, D)
                out[key] = rows.flatten(0, 1)
        return out

    def set_attention_windows(self, length: int | None, stride: int = 1, weights: str = "pyramid") -> None:
        """Turn windowed fusion inside temporal attention on (length > 0) or off (None)."""
        fail("mode", f"`attention` fusion is not available for {self.name}", "attention",
             "Use mode predictions (or auto).")

    # ---- the one denoiser call -----------------------------------------------------------------------------
    def predict(self, latents: torch.Tensor, t: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """latents (B, C, f, h, w) already scaled for the scheduler -> the model output, same shape."""
        raise NotImplementedError

    def finish(self, latents: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Called once after the last step (e.g. to restore a clean conditioning frame). Default: unchanged."""
        return latents

    def reference_frames(self, positive: Conditioning) -> int:
        """Latent frames the family prepends to the clip for this conditioning (Wan VACE: one per reference
        image). The loop draws noise for them too, and `finish` drops them. Default: 0."""
        return 0

    # ---- VAE / TAE -----------------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (1, C, f, h, w) -> IMAGE frames (F, H, W, 3) float32 0..1 on the CPU."""
        raise NotImplementedError

    def decode_chunks(self, latents: torch.Tensor, tiling=None) -> Iterator[torch.Tensor]:
        """As decode, in chunks of frames (n, H, W, 3) for streaming into a file (models/tae.py). Default: one
        chunk; families with big VAEs decode chunk by chunk within a memory budget (tiling: tae.TileSettings)."""
        yield self.decode(latents)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """IMAGE frames (F, H, W, 3) 0..1 -> latents (1, C, f, h, w) in the space the sampler works in."""
        raise NotImplementedError

    def preview(self, latents: torch.Tensor) -> torch.Tensor:
        """Cheap latent -> RGB for live previews: (1, C, f, h, w) -> (f, h, w, 3) 0..1, one pixel per latent cell.

        A linear map (C -> RGB, plus an offset) fitted once per loaded model by least squares on this model's own
        VAE (see preview_projection), so it works for any family and any fine-tune without shipped factors.
        Falls back to the first three channels, normalised per clip, if the family cannot encode."""
        proj = self.preview_projection()
        x = latents[0].float().cpu()                                 # (C, f, h, w)
        if proj is None:
            x = x[:3]
            lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
            return ((x - lo) / (hi - lo).clamp_min(1e-6)).permute(1, 2, 3, 0)
        rgb = torch.einsum("cfhw,cr->fhwr", x, proj[:-1]) + proj[-1]  # (f, h, w, 3)
        return rgb.clamp(0, 1)

    PREVIEW_PROBES = 12               # colour fields encoded to fit the preview projection

    def preview_projection(self) -> torch.Tensor | None:
        """(C + 1, 3): least-squares weights and offset from latent cells to the mean RGB of their pixels, fitted
        on PREVIEW_PROBES smooth random colour fields (seeded) encoded by the model's own VAE, 8x8 latent cells
        each. Computed on first use and cached; None when the family has no encode."""
        if getattr(self, "_preview_fit", None) is not None:
            return self._preview_fit if isinstance(self._preview_fit, torch.Tensor) else None
        from torch.nn import functional as F
        g = torch.Generator().manual_seed(0)
        size = 8 * self.spatial_ratio
        xs, ys = [], []
        try:
            for _ in range(self.PREVIEW_PROBES):
                low = torch.rand(1, 3, 3, 3, generator=g)
                image = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
                z = self.encode(image.permute(0, 2, 3, 1))               # (1, C, 1, 8, 8)
                xs.append(z[0, :, 0].flatten(1).T.float().cpu())         # (64, C)
                ys.append(F.avg_pool2d(image, self.spatial_ratio)[0].flatten(1).T)   # (64, 3)
        except (NotImplementedError, ValueError, RuntimeError):
            self._preview_fit = False
            return None
        a = torch.cat(xs)
        a = torch.cat([a, torch.ones(len(a), 1)], dim=1)                 # (N, C + 1)
        self._preview_fit = torch.linalg.lstsq(a.double(), torch.cat(ys).double()).solution.float()
        return self._preview_fit

    # ---- schedulers ----------------------------------------------------------------------------------------
    default_scheduler: Any = None

    def make_scheduler(self, choice: str, shift: float):
        """A fresh scheduler for one run. `default` is the model folder's own; shift > 0 overrides its shift."""
        from . import schedulers
        return schedulers.make(self, choice, shift)

    latent_channels: int = 4

    # ---- what the loop asks (models/sampling.py) -----------------------------------------------------------
    # Video families answer from num_frames / height / width (the methods above); audio families (AudioFamily)
    # override these, so the one loop drives latents of any shape: (1, C, f, h, w) video, (1, C, T) audio.
    windows: ClassVar[bool] = True              # accepts long-video context windows

    def check_settings(self, settings) -> None:
        """Reject (never round) settings this model cannot honour. settings: sampling.SamplerSettings."""
        self.check_size(settings.num_frames, settings.height, settings.width)

    def latent_shape_for(self, settings) -> tuple[int, ...]:
        """Latent shape of one sample, without the batch axis: (C, f, h, w) for video."""
        return self.latent_shape(settings.num_frames, settings.height, settings.width)

    def prepare_for(self, positive: Conditioning, negative: Conditioning | None, settings,
                    generator: torch.Generator | None = None) -> dict[str, Any]:
        """The denoiser's batch for one run (see prepare)."""
        return self.prepare(positive, negative, settings.num_frames, settings.height, settings.width, generator)

    def set_timesteps(self, scheduler, settings, device) -> None:
        """Set the scheduler's timesteps for settings.num_inference_steps (a family may pass sigmas or a shift)."""
        scheduler.set_timesteps(settings.num_inference_steps, device=device)

    def initial_noise(self, settings, shape: tuple[int, ...], generator: torch.Generator, device) -> torch.Tensor:
        """Seeded noise of `shape` (batch axis included), float32, drawn on the CPU generator (a family may draw
        in the order its diffusers pipeline does, so that a seed gives the pipeline's result)."""
        from diffusers.utils.torch_utils import randn_tensor
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)


class AudioFamily(VideoFamily):
    """Base class for an audio model (the KINEMA_AUDIO_MODEL value), driven by the same loop as video.

    The loop's latents are (1, C, T): channels by latent time steps. An audio family supplies the same
    protocol as a video family (encode_prompt, prepare, predict, schedulers) and answers the loop's questions
    (check_settings, latent_shape_for, prepare_for) from settings.audio_length_in_s (text-to-audio) or from
    settings.num_frames / settings.frame_rate (audio for a video). decode gives a waveform, not frames.
    """

    windows = False
    sample_rate: int = 44100                    # Hz of the decoded waveform
    audio_channels: int = 2

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (1, C, T) -> waveform (1, channels, samples) float32 on the CPU, at self.sample_rate."""
        raise NotImplementedError

    @staticmethod
    def video_for(positive: "Conditioning", settings) -> torch.Tensor:
        """Video-to-audio: the frames (F, H, W, C) the Video to Audio node attached, checked against the length."""
        frames = positive.extras.get("video")
        if frames is None:
            fail("positive", "must carry the video the sound is for", "no video",
                 "Use the Video to Audio node, which attaches the frames.")
        if frames.shape[0] != settings.num_frames:
            fail("length", f"must equal the clip's frame count ({frames.shape[0]})", settings.num_frames,
                 "Pass the clip's own length: the audio duration is frames / fps.")
        return frames

    def num_samples(self, settings) -> int:
        """Waveform samples the run must deliver (exact: the decoded audio is trimmed to this)."""
        raise NotImplementedError


def check_weights_file(file) -> Path:
    """A single-file checkpoint to load: .safetensors only (never unpickled), and present."""
    file = Path(file)
    if file.suffix != ".safetensors":
        fail("weights", "must be a .safetensors file (pickled .ckpt/.pt/.bin files are never loaded)",
             file.name, "Convert the checkpoint to safetensors.")
    if not file.is_file():
        raise FileNotFoundError(f"`weights` file {str(file)!r} does not exist. Fix: put it in "
                                f"models/diffusion_models (or checkpoints) and pick it again.")
    return file


def read_model_index(path: Path) -> dict:
    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"`model` {str(path)!r} has no model_index.json. Fix: pick a diffusers-format "
                                f"folder (the one that holds model_index.json, unet/ or transformer/, vae/ ...).")
    return json.loads(index.read_text())


def check_family(model, family: str, arg: str = "model") -> None:
    if model.name != family:
        fail(arg, f"must be a {family} model", model.name, f"Connect a {family} model.")


def quiet_diffusers() -> None:
    """Kinema shows its own progress; diffusers' and transformers' loading bars would only clutter it."""
    from diffusers.utils import logging as dlog
    dlog.disable_progress_bar()
    dlog.set_verbosity_error()
    try:
        from transformers.utils import logging as tlog
        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
    except ImportError:
        pass
