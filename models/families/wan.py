"""Wan 2.x: flow-matching DiT in a causal 3D-VAE latent (the open model closest to Movie Gen).

Text-to-video (WanPipeline folders) and image-to-video (WanImageToVideoPipeline folders: the first frame is
VAE-encoded and concatenated to the latents as channels, plus CLIP image tokens). Wan 2.2's two-expert
folders (transformer_2 + boundary_ratio) and its TI2V variant (expand_timesteps) are handled too.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from .. import vae_tiling
from ..checks import fail
from .base import Capabilities, Conditioning, VideoFamily, load_pipeline

WAN_PIPELINES = {"WanPipeline", "WanImageToVideoPipeline"}


def image_to_pil(image: torch.Tensor) -> PIL.Image.Image:
    """IMAGE (1, H, W, 3) or (H, W, 3) float 0..1 -> PIL RGB."""
    arr = image[0] if image.ndim == 4 else image
    return PIL.Image.fromarray((arr[..., :3].clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8))


class WanFamily(VideoFamily):
    name = "wan"
    title = "Wan T2V/I2V"
    capabilities = Capabilities(tiled_vae=True)
    flow = True
    temporal_ratio = 4
    spatial_ratio = 8
    spatial_multiple = 16     # VAE 8x times patch 2x2
    default_frames = 81
    max_sequence_length = 512
    frame_keys = {"condition": 2, "first_frame_condition": 2, "first_frame_mask": 2}
    denoisers = ("transformer", "transformer_2")   # Wan 2.2's two experts: a LoRA patches each it fits
    text_encoder_file = None  # loaded from ComfyUI's files: the text encoder comes and goes (files.family)

    def __init__(self, path, device, dtype, pipe):
        super().__init__(path, device, dtype)
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.transformer_2 = getattr(pipe, "transformer_2", None)
        self.vae = pipe.vae
        self.latent_channels = self.vae.config.z_dim
        self.spatial_ratio = pipe.vae_scale_factor_spatial
        self.temporal_ratio = pipe.vae_scale_factor_temporal
        self.spatial_multiple = self.spatial_ratio * self.transformer.config.patch_size[1]
        self.default_scheduler = pipe.scheduler
        from diffusers import WanImageToVideoPipeline
        self.image_to_video = isinstance(pipe, WanImageToVideoPipeline)
        if self.image_to_video:
            self.capabilities = dataclasses.replace(self.capabilities, image_condition=True)
        self.expand_timesteps = bool(pipe.config.get("expand_timesteps", False))
        ratio = pipe.config.get("boundary_ratio", None)
        self.boundary = None if ratio is None else ratio * pipe.scheduler.config.num_train_timesteps
        mean = torch.tensor(self.vae.config.latents_mean).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std).view(1, -1, 1, 1, 1)
        self._mean, self._std = mean.to(device), std.to(device)

    @classmethod
    def accepts(cls, model_index: dict) -> bool:
        return model_index.get("_class_name") in WAN_PIPELINES

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "WanFamily":
        # Wan's VAE stays fp32: it is small, and half precision bands colours
        return cls(path, device, dtype, load_pipeline("auto", path, device, dtype))

    # ---- conditioning --------------------------------------------------------------------------------------
    def encode_prompt(self, text: str) -> Conditioning:
        side = self.text_encoder_file.loaded(self.pipe) if self.text_encoder_file else contextlib.nullcontext()
        with torch.no_grad(), side:
            embeds, _ = self.pipe.encode_prompt(text, do_classifier_free_guidance=False,
                                                max_sequence_length=self.max_sequence_length, device=self.device)
        return Conditioning(self.name, text, embeds.to(self.transformer.dtype))  # (1, L, D)

    def prepare(self, positive, negative, settings, generator=None) -> dict[str, Any]:
        num_frames, height, width = settings.num_frames, settings.height, settings.width
        conds = [negative, positive] if negative is not None else [positive]
        batch: dict[str, Any] = {"encoder_hidden_states": torch.cat([c.embeds for c in conds])}  # (B, L, D)
        image = positive.image
        if image is None:
            if self.image_to_video:
                fail("positive", "must carry a start image for this image-to-video model", "no image",
                     "Put an Image-to-Video Conditioning node between Text Encode and the sampler.")
            return batch
        if not self.image_to_video:
            fail("positive", "carries a start image but this Wan model is text-to-video", "an image",
                 "Load an image-to-video Wan model (WanImageToVideoPipeline folder) or remove the image.")
        pil = image_to_pil(image)
        with torch.no_grad():
            if self.transformer.config.image_dim is not None:
                tokens = self.pipe.encode_image(pil, self.device)                   # (1, N, D_img)
                batch["encoder_hidden_states_image"] = tokens.repeat(len(conds), 1, 1).to(self.transformer.dtype)
            pixels = self.pipe.video_processor.preprocess(pil, height=height, width=width)  # (1, 3, H, W) -1..1
            pixels = pixels.to(self.device, torch.float32)
            batch.update(self._image_condition(pixels, num_frames, height, width, len(conds)))
        return batch

    def _image_condition(self, pixels, num_frames, height, width, n) -> dict[str, Any]:
        """First frame through the VAE, as Wan's image-to-video expects: mask channels + latent condition."""
        f, h, w = self.latent_frames(num_frames), height // self.spatial_ratio, width // self.spatial_ratio
        # the pipeline encodes [image, zeros (grey in -1..1)] in one VAE call; the same clip goes through the chunked,
        # tiled encoder (models/tae.py) so 81 frames at 720p stay within the memory budget
        image = (pixels[0].permute(1, 2, 0).float() / 2 + 0.5)[None]                  # (1, H, W, 3) 0..1
        if not self.expand_timesteps:
            image = torch.cat([image, image.new_full((num_frames - 1, height, width, 3), 0.5)])  # (F, H, W, 3)
        latent = (vae_tiling.encode(self.vae, image).float() - self._mean) / self._std   # (1, C, f, h, w)
        if self.expand_timesteps:
            mask = torch.ones(1, 1, f, h, w, device=self.device)
            mask[:, :, 0] = 0
            return {"first_frame_condition": latent.repeat(n, 1, 1, 1, 1), "first_frame_mask": mask}
        mask = torch.ones(1, 1, num_frames, h, w)
        mask[:, :, 1:] = 0
        first = torch.repeat_interleave(mask[:, :, 0:1], dim=2, repeats=self.temporal_ratio)
        mask = torch.cat([first, mask[:, :, 1:]], dim=2)                                  # (1, 1, F+r-1, h, w)
        mask = mask.view(1, -1, self.temporal_ratio, h, w).transpose(1, 2).to(self.device)  # (1, r, f, h, w)
        return {"condition": torch.cat([mask, latent], dim=1).repeat(n, 1, 1, 1, 1)}     # (B, r+C, f, h, w)

    # ---- denoiser ------------------------------------------------------------------------------------------
    def predict(self, latents, t, batch) -> torch.Tensor:
        model = self.transformer
        if self.boundary is not None and t < self.boundary and self.transformer_2 is not None:
            model = self.transformer_2
        x = latents
        b = x.shape[0]
        if "first_frame_mask" in batch:
            m = batch["first_frame_mask"]
            x = (1 - m) * batch["first_frame_condition"] + m * x
        elif "condition" in batch:
            x = torch.cat([x, batch["condition"]], dim=1)                             # (B, 2C+r, f, h, w)
        if self.expand_timesteps:
            m = batch.get("first_frame_mask", torch.ones_like(latents[:1, :1]))
            ph, pw = self.transformer.config.patch_size[1:]
            timestep = (m[0][0][:, ::ph, ::pw] * t).flatten().unsqueeze(0).expand(b, -1)  # (B, tokens)
        else:
            timestep = t.expand(b)
        return model(hidden_states=x.to(model.dtype), timestep=timestep,
                     encoder_hidden_states=batch["encoder_hidden_states"],
                     encoder_hidden_states_image=batch.get("encoder_hidden_states_image"),
                     return_dict=False)[0]

    def finish(self, latents, batch) -> torch.Tensor:
        """After the last step: TI2V keeps the clean first frame."""
        if "first_frame_mask" in batch:
            m = batch["first_frame_mask"]
            latents = (1 - m) * batch["first_frame_condition"][:1] + m * latents
        return latents

    # ---- VAE -----------------------------------------------------------------------------------------------
    def decode_chunks(self, latents: torch.Tensor, tiling: "vae_tiling.TileSettings | None" = None):
        """latents (1, C, f, h, w) -> IMAGE chunks (n, H, W, 3) float32 0..1 on the CPU (F = 4 (f - 1) + 1 in
        all), decoded in causal chunks and, for large frames, blended tiles within the memory budget."""
        z = latents.to(self.device, torch.float32) * self._std + self._mean                # (1, C, f, h, w)
        return vae_tiling.decode_chunks(self.vae, z.to(self.vae.dtype), tiling)

    def encode(self, frames: torch.Tensor, tiling: "vae_tiling.TileSettings | None" = None) -> torch.Tensor:
        """IMAGE frames (F, H, W, 3) 0..1, F = 4k+1 -> normalised latents (1, C, f, h, w), tiled like decode."""
        z = vae_tiling.encode(self.vae, frames, tiling)                                  # (1, C, f, h, w)
        return (z.float() - self._mean) / self._std
