"""AnimateDiff: a Stable Diffusion 1.5 UNet with a motion adapter (temporal layers).

The text-to-image-plus-temporal-layers design behind Emu's animated stickers. Latents are per frame
(no temporal compression): (1, 4, F, H/8, W/8). Loads an AnimateDiffPipeline folder (unet = UNetMotionModel or
UNet2DConditionModel + motion_adapter), or an SD1.5 folder plus a separate motion adapter folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import vae_tiling
from ..checks import fail
from .base import Capabilities, Conditioning, VideoFamily, load_pipeline, refuse_pickled

ANIMATEDIFF_PIPELINES = {"AnimateDiffPipeline", "AnimateDiffVideoToVideoPipeline"}


class AnimateDiffFamily(VideoFamily):
    name = "animatediff"
    title = "AnimateDiff (SD 1.5 + motion adapter)"
    capabilities = Capabilities(attention_windows=True, per_frame_text=True, tiled_vae=True)
    flow = False
    temporal_ratio = 1
    spatial_ratio = 8
    spatial_multiple = 8
    default_frames = 16
    denoisers = ("unet",)              # the UNetMotionModel (SD 1.5 layers + motion modules): what a LoRA patches
    denoiser_attr = "motion_adapter"   # a single .safetensors file replaces the motion module (mm_sd_v15 etc.)

    def __init__(self, path, device, dtype, pipe):
        super().__init__(path, device, dtype)
        self.pipe = pipe
        self.unet = pipe.unet
        self.vae = pipe.vae
        self.latent_channels = self.unet.config.in_channels
        self.spatial_ratio = pipe.vae_scale_factor
        self.spatial_multiple = self.spatial_ratio
        self.default_scheduler = pipe.scheduler
        self.scaling = self.vae.config.scaling_factor

    @classmethod
    def accepts(cls, model_index: dict) -> bool:
        return model_index.get("_class_name") in ANIMATEDIFF_PIPELINES

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype,
             motion_adapter: Path | None = None) -> "AnimateDiffFamily":
        from diffusers import AnimateDiffPipeline, MotionAdapter
        kwargs = {}
        if motion_adapter is not None:
            refuse_pickled(motion_adapter, "MotionAdapter")
            kwargs["motion_adapter"] = MotionAdapter.from_pretrained(str(motion_adapter), dtype=dtype,
                                                                     local_files_only=True, use_safetensors=True)
        return cls(path, device, dtype, load_pipeline(AnimateDiffPipeline, path, device, dtype, fp32=(), **kwargs))

    def _set_denoiser(self, adapter) -> None:
        self.pipe.motion_adapter = adapter
        self.unet.load_motion_modules(adapter)          # the motion layers inside the UNetMotionModel

    # ---- conditioning --------------------------------------------------------------------------------------
    def encode_prompt(self, text: str) -> Conditioning:
        with torch.no_grad():
            embeds, _ = self.pipe.encode_prompt(text, self.device, 1, False, None)    # (1, 77, D)
        return Conditioning(self.name, text, embeds.to(self.unet.dtype))

    def prepare(self, positive, negative, settings, generator=None) -> dict[str, Any]:
        if positive.image is not None:
            fail("positive", "carries a start image, which AnimateDiff cannot take as conditioning", "an image",
                 "Encode the image with Video Encode and connect it to the sampler's `latent` with denoise < 1.")
        conds = [negative, positive] if negative is not None else [positive]
        embeds = torch.cat([c.embeds for c in conds])                                   # (B, 77, D)
        return {"encoder_hidden_states": embeds.repeat_interleave(settings.num_frames, dim=0)}   # (B*F, 77, D)

    def set_attention_windows(self, length, stride=1, weights="pyramid") -> None:
        """FreeNoise inside the motion modules (diffusers' FreeNoiseTransformerBlock): the whole clip goes through
        the UNet at once, each temporal attention layer attends within windows and fuses them by weight."""
        if length is None:
            if self.pipe.free_noise_enabled:
                self.pipe.disable_free_noise()
            return
        # noise rescheduling and prompts are Kinema's (models/windows.py); diffusers only windows the attention
        self.pipe.enable_free_noise(context_length=length, context_stride=stride, weighting_scheme=weights,
                                    noise_type="random")

    # ---- denoiser ------------------------------------------------------------------------------------------
    def predict(self, latents, t, batch) -> torch.Tensor:
        return self.unet(latents.to(self.unet.dtype), t, encoder_hidden_states=batch["encoder_hidden_states"]).sample

    # ---- VAE (per frame) -----------------------------------------------------------------------------------
    def decode_chunks(self, latents: torch.Tensor, tiling: "vae_tiling.TileSettings | None" = None):
        """latents (1, 4, F, h, w) -> IMAGE chunks (n, H, W, 3) float32 0..1 on the CPU: frames in chunks and, for
        large frames, blended tiles within the memory budget (models/vae_tiling.py)."""
        return vae_tiling.decode_chunks(self.vae, latents / self.scaling, tiling)             # (1, 4, F, h, w)

    def encode(self, frames: torch.Tensor, tiling: "vae_tiling.TileSettings | None" = None) -> torch.Tensor:
        """IMAGE frames (F, H, W, 3) 0..1 -> latents (1, 4, F, h, w) in the sampler's space, tiled like decode."""
        return vae_tiling.encode(self.vae, frames, tiling) * self.scaling
