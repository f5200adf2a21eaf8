"""The family protocol: what differs between models, and nothing else.

Kinema owns the denoising loop (models/sampling.py). A family supplies only what differs between models:
  loading         accepts(model_index), load(path, device, dtype), load_weights_file(file)
  sizes           check_settings(settings), latent_shape(settings), latent_frames(n), pixel_frames(f)
  conditioning    encode_prompt(text), prepare(positive, negative, settings, generator), prefix_frames(positive)
  the denoiser    predict(latents, t, batch) -- ONE call on a batch of latents; finish(latents, batch)
  windows         window_batch(batch, start, end, frames), set_attention_windows(length, stride, weights)
  schedulers      make_scheduler(choice, shift), set_timesteps(scheduler, settings, device), initial_noise(...)
  VAE / TAE       decode(latents, tiling), decode_chunks(latents, tiling), encode(frames, tiling), preview(latents)
and declares what it can do once, as data (`capabilities`), which generic code asks instead of probing for
attributes. Conditioning (KINEMA_COND) carries typed fields, one per kind of conditioning a node can attach.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch

from ..checks import check_frames, check_multiple, check_range, fail


class SchedulerChoice(str, Enum):
    """Sampler dropdown values. Saved in workflows: never rename a value."""
    DEFAULT = "default"          # the scheduler configured in the model folder
    FLOW_EULER = "flow_euler"    # FlowMatchEulerDiscreteScheduler (flow families)
    FLOW_UNIPC = "flow_unipc"    # UniPCMultistepScheduler with flow sigmas (Wan's own default)
    DDIM = "ddim"                # DDIMScheduler (epsilon families)
    EULER = "euler"              # EulerDiscreteScheduler (epsilon families)
    LCM = "lcm"                  # LCMScheduler (AnimateDiff-Lightning / LCM motion modules)


# ---- what a family can do -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Capabilities:
    """Declared once per family (a loaded model may narrow it, e.g. a Wan text-to-video folder has no image
    condition). Generic code (sampling, edit, audio, portrait, nodes) asks this record, never hasattr."""
    windows: bool = True              # long clips in context windows (FreeNoise)
    attention_windows: bool = False   # windows fused inside temporal attention (AnimateDiff's motion modules)
    per_frame_text: bool = False      # text rows are per frame (B*F, L, D), not per sample (B, L, D)
    image_condition: bool = False     # a start image (Image to Video, Reference Image): Wan I2V, Kinema-Tiny
    references: bool = False          # reference images prepended in latent time (Wan VACE)
    encode: bool = True               # frames -> latents (Video Encode, Video Edit, upscale refine)
    any_size: bool = True             # samples at sizes other than one trained size (refine after upscaling)
    tiled_vae: bool = False           # decode/encode honour TileSettings (chunks and tiles within a budget)
    text_to_audio: bool = False       # sound from a prompt alone (Stable Audio)
    video_to_audio: bool = False      # sound for a clip (LTX-2's audio branch, Kinema-Tiny Audio)
    portrait: bool = False            # audio-driven portrait windows (models/portrait.py)
    joint_audio: bool = False         # the sampler makes the clip's sound with the picture (LTX-2 video)


# ---- conditioning (KINEMA_COND) -------------------------------------------------------------------------------
@dataclass(frozen=True)
class References:
    """Reference images of a subject kept across the clip (Wan VACE). images: IMAGE (H, W, 3) 0..1 on the CPU,
    one per reference, in the order attached; strength: VACE's conditioning_scale (0..1)."""
    images: tuple[torch.Tensor, ...]
    strength: float = 1.0


@dataclass(frozen=True)
class PortraitWindow:
    """What one window of an audio-driven portrait is conditioned on (models/portrait.py builds it per window).

    audio: the window's sound, per family: Kinema-Tiny Portrait (1, F, A) per-frame loudness features; LTX-2 raw
        audio VAE latents (1, C, L, M) of the window's own time span (held clean).
    known: frames held clean: Kinema-Tiny Portrait (1, 4, F, H, W) pixels -1..1 + mask; LTX-2 (1, C, k, h, w)
        latent frames placed after the portrait frame; None when there are none (the first window).
    portrait: LTX-2's portrait latent (1, C, 1, h, w) (Kinema-Tiny Portrait takes Conditioning.image).
    identity_strength: 1 = as trained; > 1 extrapolates away from a pass without the portrait.
    """
    audio: torch.Tensor
    known: torch.Tensor | None = None
    portrait: torch.Tensor | None = None
    identity_strength: float = 1.0


@dataclass(frozen=True)
class Conditioning:
    """KINEMA_COND: one encoded prompt, plus what conditioning nodes attached to it (each in its own field).

    embeds: text encoder hidden states, (1, L, D) on the model's device and dtype.
    mask:   the embeds' attention mask (1, L) for families that need it (LTX-2's Gemma), else None.
    image:  start frame for image-to-video, IMAGE (1, H, W, 3) float 0..1 on the CPU (Image to Video
            Conditioning, or Reference Image on an image-conditioned family).
    schedule: ((frame, Conditioning), ...) keyframes of a Prompt Schedule (first at frame 0); () for one prompt.
    references: Wan VACE reference images (Reference Image node), or None.
    video:  video-to-audio: the clip (F, H, W, 3) 0..1 on the CPU the sound is for (Video to Audio), or None.
    unconditional: the model's own all-zero "no prompt" input (Stable Audio without a negative prompt).
    portrait: one audio-driven portrait window's inputs (models/portrait.py), or None.
    key_images: ((pixel frame > 0, IMAGE (1, H, W, 3) 0..1), ...): images the clip passes through at those frames
            (Keyframe Image; LTX-2: LTX2ConditionPipeline's keyframe conditions at strength 1); () for none.
    """
    family: str
    prompt: str
    embeds: torch.Tensor
    mask: torch.Tensor | None = None
    image: torch.Tensor | None = None
    schedule: tuple[tuple[int, "Conditioning"], ...] = ()
    references: References | None = None
    video: torch.Tensor | None = None
    unconditional: bool = False
    portrait: PortraitWindow | None = None
    key_images: tuple[tuple[int, torch.Tensor], ...] = ()

    def replace(self, **changes) -> "Conditioning":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def with_image(self, image: torch.Tensor) -> "Conditioning":
        return self.replace(image=image)

    def keyframes(self) -> tuple[tuple[int, "Conditioning"], ...]:
        """The prompt schedule as ((frame, Conditioning), ...): what is attached to this conditioning (a start
        image, reference images) applies to every entry that has none of its own."""
        entries = self.schedule or ((0, self),)
        return tuple((f, c.replace(image=c.image if c.image is not None else self.image,
                                   references=c.references or self.references)) for f, c in entries)


# ---- the family --------------------------------------------------------------------------------------------------
class VideoFamily:
    """Base class for a loaded model of one family (the KINEMA_MODEL value)."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""                 # what the family loads, for messages ("Wan T2V/I2V", ...)
    capabilities: Capabilities = Capabilities()
    flow: ClassVar[bool] = False              # flow matching (velocity) or epsilon/v diffusion
    spatial_ratio: int = 8                    # pixels per latent cell
    temporal_ratio: int = 1                   # frames per latent frame (causal VAEs: 4 -> frames = 4k+1)
    spatial_multiple: int = 8                 # width/height must be multiples of this
    default_frames: int = 16
    latent_channels: int = 4
    default_scheduler: Any = None             # the folder's scheduler (make_scheduler copies it per run)
    denoiser_attr: ClassVar[str] = "transformer"   # the component a single .safetensors file replaces
    denoisers: ClassVar[tuple[str, ...]] = ("transformer",)   # the module(s) predict runs: what a LoRA patches
    text_keys: ClassVar[tuple[str, ...]] = ("encoder_hidden_states",)   # batch entries a prompt schedule blends
    frame_keys: ClassVar[dict[str, int]] = {}  # batch entries with a frame axis -> that axis, sliced per window

    def __init__(self, path: Path, device: torch.device, dtype: torch.dtype):
        self.path = Path(path)
        self.device = device
        self.dtype = dtype
        self.pipe = None                      # the diffusers pipeline the family wraps, when it has one

    # ---- loading -------------------------------------------------------------------------------------------
    @classmethod
    def accepts(cls, model_index: dict) -> bool:
        """True when a diffusers folder's model_index.json belongs to this family."""
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "VideoFamily":
        raise NotImplementedError

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

    # ---- sizes ---------------------------------------------------------------------------------------------
    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for num_frames pixel frames: a causal VAE of ratio r codes r*k+1 frames in k+1."""
        return (num_frames - 1) // self.temporal_ratio + 1 if self.temporal_ratio > 1 else num_frames

    def pixel_frames(self, latent_frames: int) -> int:
        """Pixel frames that latent_frames latent frames decode to (the inverse of latent_frames)."""
        return (latent_frames - 1) * self.temporal_ratio + 1 if self.temporal_ratio > 1 else latent_frames

    def check_size(self, num_frames: int, height: int, width: int) -> None:
        """Reject (never round) clip sizes this model cannot make (video families; check_settings calls it)."""
        check_range("length", num_frames, 1, 10_000)
        check_multiple("height", height, self.spatial_multiple)
        check_multiple("width", width, self.spatial_multiple)
        check_frames("length", num_frames, self.temporal_ratio)

    def check_settings(self, settings) -> None:
        """Reject (never round) settings this model cannot honour. settings: sampling.SamplerSettings."""
        self.check_size(settings.num_frames, settings.height, settings.width)

    def latent_shape(self, settings) -> tuple[int, ...]:
        """Latent shape of one sample without the batch axis: (C, f, h, w) for the settings' clip."""
        return (self.latent_channels, self.latent_frames(settings.num_frames),
                settings.height // self.spatial_ratio, settings.width // self.spatial_ratio)

    # ---- conditioning --------------------------------------------------------------------------------------
    def encode_prompt(self, text: str) -> Conditioning:
        raise NotImplementedError

    def prepare(self, positive: Conditioning, negative: Conditioning | None, settings,
                generator: torch.Generator | None = None) -> dict[str, Any]:
        """Everything the denoiser needs besides the latents for one run, batched as [negative, positive] when
        negative is given (classifier-free guidance in one batch) or [positive] alone."""
        raise NotImplementedError

    def prefix_frames(self, positive: Conditioning) -> int:
        """Latent frames the family prepends to the clip for this conditioning (Wan VACE: one per reference
        image). The loop draws noise for them too and `finish` drops them. Default: 0."""
        return 0

    # ---- windows (long video) ----------------------------------------------------------------------------
    def window_batch(self, batch: dict[str, Any], start: int, end: int, num_frames: int) -> dict[str, Any]:
        """The batch for latent frames [start, end) of a clip of num_frames latent frames."""
        out = dict(batch)
        for key, axis in self.frame_keys.items():
            if key in out and out[key] is not None:
                out[key] = out[key].narrow(axis, start, end - start)
        if self.capabilities.per_frame_text:
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

    # ---- schedulers ----------------------------------------------------------------------------------------
    def make_scheduler(self, choice: str, shift: float):
        """A fresh scheduler for one run. `default` is the model folder's own; shift > 0 overrides its shift."""
        from . import schedulers
        return schedulers.make(self, choice, shift)

    def set_timesteps(self, scheduler, settings, device) -> None:
        """Set the scheduler's timesteps for settings.num_inference_steps (a family may pass sigmas or a shift)."""
        scheduler.set_timesteps(settings.num_inference_steps, device=device)

    def initial_noise(self, settings, shape: tuple[int, ...], generator: torch.Generator, device) -> torch.Tensor:
        """Seeded noise of `shape` (batch axis included), float32, drawn on the CPU generator (a family may draw
        in the order its diffusers pipeline does, so that a seed gives the pipeline's result)."""
        from diffusers.utils.torch_utils import randn_tensor
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)

    # ---- VAE / TAE -----------------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor, tiling=None) -> torch.Tensor:
        """latents (1, C, f, h, w) -> IMAGE frames (F, H, W, 3) float32 0..1 on the CPU. tiling: a
        vae_tiling.TileSettings, honoured by families whose capabilities say tiled_vae."""
        from ..vae_tiling import join_chunks
        return join_chunks(self.decode_chunks(latents, tiling))

    def decode_chunks(self, latents: torch.Tensor, tiling=None) -> Iterator[torch.Tensor]:
        """As decode, in chunks of frames (n, H, W, 3) for streaming into a file (models/vae_tiling.py). A family
        overrides decode_chunks (big VAEs: chunk by chunk) or decode (one chunk); the defaults call each other."""
        yield self.decode(latents, tiling)

    def encode(self, frames: torch.Tensor, tiling=None) -> torch.Tensor:
        """IMAGE frames (F, H, W, 3) 0..1 -> latents (1, C, f, h, w) in the space the sampler works in."""
        fail("model", f"cannot encode frames ({self.name} has no encoder)", self.name,
             "Use a model with a VAE (Wan, AnimateDiff, Kinema-Tiny).")

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
        if not self.capabilities.encode:
            self._preview_fit = False
            return None
        from torch.nn import functional as F
        g = torch.Generator().manual_seed(0)
        size = 8 * self.spatial_ratio
        xs, ys = [], []
        for _ in range(self.PREVIEW_PROBES):
            low = torch.rand(1, 3, 3, 3, generator=g)
            image = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
            z = self.encode(image.permute(0, 2, 3, 1))               # (1, C, 1, 8, 8)
            xs.append(z[0, :, 0].flatten(1).T.float().cpu())         # (64, C)
            ys.append(F.avg_pool2d(image, self.spatial_ratio)[0].flatten(1).T)   # (64, 3)
        a = torch.cat(xs)
        a = torch.cat([a, torch.ones(len(a), 1)], dim=1)                 # (N, C + 1)
        self._preview_fit = torch.linalg.lstsq(a.double(), torch.cat(ys).double()).solution.float()
        return self._preview_fit


class AudioFamily(VideoFamily):
    """Base class for an audio model (the KINEMA_AUDIO_MODEL value), driven by the same loop as video.

    The loop's latents are (1, C, T): channels by latent time steps. An audio family supplies the same protocol
    as a video family and answers the loop's questions (check_settings, latent_shape, prepare) from
    settings.audio_length_in_s (text-to-audio) or from settings.num_frames / settings.frame_rate (audio for a
    video). decode gives a waveform, not frames.
    """

    capabilities = Capabilities(windows=False, encode=False)
    sample_rate: int = 44100                    # Hz of the decoded waveform
    audio_channels: int = 2

    def decode(self, latents: torch.Tensor, tiling=None) -> torch.Tensor:
        """latents (1, C, T) -> waveform (1, channels, samples) float32 on the CPU, at self.sample_rate."""
        raise NotImplementedError

    def check_clip(self, settings) -> None:
        """Video-to-audio settings: a frame count and the clip's frame rate (checked once, here)."""
        from ..media import check_fps
        check_range("length", settings.num_frames, 1, 100_000)
        check_fps("fps", settings.frame_rate)

    @staticmethod
    def video_for(positive: Conditioning, settings) -> torch.Tensor:
        """Video-to-audio: the frames (F, H, W, C) the Video to Audio node attached, checked against the length."""
        if positive.video is None:
            fail("positive", "must carry the video the sound is for", "no video",
                 "Use the Video to Audio node, which attaches the frames.")
        if positive.video.shape[0] != settings.num_frames:
            fail("length", f"must equal the clip's frame count ({positive.video.shape[0]})", settings.num_frames,
                 "Pass the clip's own length: the audio duration is frames / fps.")
        return positive.video

    def num_samples(self, settings) -> int:
        """Waveform samples the run must deliver (exact: the decoded audio is trimmed to this)."""
        from ..media import samples_for_frames
        return samples_for_frames(settings.num_frames, settings.frame_rate, self.sample_rate)


# ---- helpers every family uses -------------------------------------------------------------------------------------
def load_pipeline(pipeline, path: Path, device: torch.device, dtype: torch.dtype, fp32: tuple[str, ...] = ("vae",),
                  **components):
    """A diffusers pipeline from a local folder, never downloading: `pipeline` is a class or "auto"
    (DiffusionPipeline picks the folder's class); the components named in fp32 stay float32 (VAEs and vocoders are
    small and precision-sensitive); extra components (e.g. a motion adapter) are passed through."""
    if pipeline == "auto":
        from diffusers import DiffusionPipeline as pipeline
    index = read_model_index(path)
    for name, entry in index.items():
        if isinstance(entry, list) and len(entry) == 2 and not name.startswith("_"):
            refuse_pickled(Path(path) / name, entry[1])
    quiet_diffusers()
    pipe = pipeline.from_pretrained(str(path), dtype={"default": dtype, **{k: torch.float32 for k in fp32}},
                                    local_files_only=True, use_safetensors=True, **components)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def refuse_pickled(folder: Path, class_name: str | None = None) -> None:
    """ValueError when a component folder holds pickled weights (.bin, .pt, ...) and no .safetensors: Kinema never
    unpickles (a pickle can run code), and diffusers' own message names only the missing .safetensors file."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    files = [p for p in folder.iterdir() if p.is_file()]
    pickled = sorted(p.name for p in files if p.suffix in PICKLED_SUFFIXES and not p.name.startswith("training_"))
    if pickled and not any(p.suffix == ".safetensors" for p in files):
        load = f"{class_name}.from_pretrained('{folder}')" if class_name else "the model class's from_pretrained"
        fail("model", f"must hold .safetensors weights (Kinema never unpickles .bin/.pt files: they can run code); "
             f"{folder} has only {', '.join(pickled)}", f"{folder.name}/{pickled[0]}",
             f"Download the model's .safetensors files, or convert the folder once in a Python you trust: "
             f"`{load}.save_pretrained('{folder}')` writes {folder.name}'s .safetensors weights.")


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
    try:
        index_data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:         # unreadable, not UTF-8, not JSON
        raise ValueError(f"`model` {str(path)!r} must hold a readable model_index.json, got {str(index)!r} which "
                         f"cannot be read ({type(exc).__name__}: {str(exc)[:200]}). Fix: repair or re-copy the "
                         f"model folder.") from None
    if not isinstance(index_data, dict):
        raise ValueError(f"`model` {str(path)!r} must hold a model_index.json with a JSON object, got "
                         f"{type(index_data).__name__} in {str(index)!r}. Fix: repair or re-copy the model folder.")
    return index_data


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
