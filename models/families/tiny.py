"""Kinema-Tiny Video: Movie Gen's design in miniature, trained here from procedural clips (models/tiny/).

A temporal autoencoder (4x in space, 2x in time, causal: latent frame 0 is frame 0 alone) and a small
flow-matching transformer over its latent grid, conditioned on a word-level text encoder trained with it.
Text-to-video, and image-to-video when the positive conditioning carries a start image (the image is encoded
through the TAE as latent frame 0 and given to the transformer as extra channels, like Wan 2.1 I2V).

The transformer predicts velocity (noise - x0) at timesteps 0..1000 with sigma = t / 1000, as diffusers'
FlowMatchEulerDiscreteScheduler expects, so the shared sampling loop drives it unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from ..checks import check_shape, fail
from .base import Capabilities, Conditioning, VideoFamily, check_weights_file

TINY_PIPELINES = {"KinemaTinyPipeline"}


class KinemaTinyFamily(VideoFamily):
    name = "kinema_tiny"
    title = "Kinema-Tiny"
    capabilities = Capabilities(image_condition=True, any_size=False)
    flow = True
    spatial_ratio = 4          # TAE: 32 px -> 8 latent cells
    temporal_ratio = 2         # TAE: 2k+1 frames -> k+1 latent frames
    spatial_multiple = 4
    default_frames = 9
    latent_channels = 8
    text_keys = ("text",)      # prompt schedules blend these batch entries
    frame_keys = {"condition": 2}

    def __init__(self, path, device, dtype, models):
        from diffusers import FlowMatchEulerDiscreteScheduler
        super().__init__(path, device, dtype)
        self.models = models
        self.text_encoder = models.text_encoder
        self.transformer = models.transformer
        self.vae = models.vae
        self.latent_channels = self.vae.config.latent_channels
        self.spatial_ratio = self.vae.config.spatial_ratio
        self.temporal_ratio = self.vae.config.temporal_ratio
        self.default_frames = int(models.index.get("num_frames", 9))
        self.height = int(models.index.get("height", 32))
        self.width = int(models.index.get("width", 32))
        self.default_scheduler = FlowMatchEulerDiscreteScheduler.from_config(models.scheduler_config)

    @classmethod
    def accepts(cls, model_index: dict) -> bool:
        return model_index.get("_class_name") in TINY_PIPELINES

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "KinemaTinyFamily":
        from ..tiny.pipeline import load_folder
        return cls(path, device, dtype, load_folder(Path(path), device, dtype))

    def load_weights_file(self, file: Path) -> None:
        """Replace the transformer's weights with a .safetensors state dict of the same config (e.g. a checkpoint
        from `python -m training.tiny.train`, keys as in transformer/diffusion_pytorch_model.safetensors)."""
        from safetensors.torch import load_file
        file = check_weights_file(file)
        state = {k.removeprefix("model."): v for k, v in load_file(str(file)).items() if not k.startswith("text.")}
        try:
            self.transformer.load_state_dict({k: v.to(self.dtype) for k, v in state.items()})
        except RuntimeError as exc:
            fail("weights", f"does not fit the Kinema-Tiny transformer in {self.path / 'transformer'} "
                            f"({str(exc).splitlines()[0]})", file.name, "Pick weights trained with the same config.")

    # ---- conditioning --------------------------------------------------------------------------------------
    def encode_prompt(self, text: str) -> Conditioning:
        """Unknown words are dropped with a UserWarning naming them (see tiny/text.py)."""
        with torch.no_grad():
            embeds = self.text_encoder.encode([text], device=self.device)                  # (1, L, D)
        return Conditioning(self.name, text, embeds.to(self.dtype))

    def check_size(self, num_frames: int, height: int, width: int) -> None:
        """The trained frame size only, never rounded; lengths 2k+1 of at least the trained length (longer clips
        need context windows of at most the trained length: checked per call in predict)."""
        if num_frames < self.default_frames or num_frames % 2 == 0:
            fail("length", f"must be {self.default_frames} for Kinema-Tiny (it was trained on "
                           f"{self.default_frames}-frame clips), or a longer odd length (2k+1) with Context Options",
                 num_frames, f"Set length to {self.default_frames} (or e.g. 33 with Context Options).")
        if height != self.height:
            fail("height", f"must be {self.height} for Kinema-Tiny (its training size)", height,
                 f"Set height to {self.height}; upscale the decoded video if you need it larger.")
        if width != self.width:
            fail("width", f"must be {self.width} for Kinema-Tiny (its training size)", width,
                 f"Set width to {self.width}; upscale the decoded video if you need it larger.")

    def prepare(self, positive, negative, settings, generator=None) -> dict[str, Any]:
        height, width = settings.height, settings.width
        conds = [negative, positive] if negative is not None else [positive]
        text = torch.cat([c.embeds for c in conds]).to(self.device, self.dtype)           # (B, L, D)
        shape = (1, *self.latent_shape(settings))                                          # (1, C, f, h, w)
        image = None
        if positive.image is not None:
            check_shape("image", positive.image, 4, "(1, height, width, 3)", "Connect an IMAGE output.")
            image = positive.image[:1, ..., :3].permute(0, 3, 1, 2).float()                  # (1, 3, H, W)
            if tuple(image.shape[2:]) != (height, width):
                image = F.interpolate(image, size=(height, width), mode="bilinear", antialias=True,
                                      align_corners=False).clamp(0, 1)
            image = image.to(self.device)
        from ..tiny.pipeline import first_frame_condition
        with torch.no_grad():
            cond = first_frame_condition(self.vae, image, shape)                             # (1, C+1, f, h, w)
        batch: dict[str, Any] = {"text": text, "condition": cond.repeat(len(conds), 1, 1, 1, 1).to(self.dtype)}
        if image is not None:
            batch["first_latent"] = cond[:, : self.latent_channels, :1].float()              # (1, C, 1, h, w)
        return batch

    # ---- the one denoiser call -----------------------------------------------------------------------------
    def predict(self, latents, t, batch) -> torch.Tensor:
        b, _, f = latents.shape[:3]
        if f > self.latent_frames(self.default_frames):   # a whole long clip, or windows longer than training's
            fail("context", f"must split clips longer than {self.default_frames} frames into windows of at most "
                            f"{self.default_frames} frames for Kinema-Tiny",
                 f"{self.pixel_frames(f)} frames at once",
                 f"Connect Context Options with context_length {self.default_frames} (overlap 4).")
        cond = batch["condition"][:b, :, :f]
        timestep = torch.as_tensor(t, device=self.device).float().reshape(-1).expand(b)   # (B,) 0..1000
        return self.transformer(latents.to(self.device, self.dtype), timestep.to(self.dtype), batch["text"][:b],
                                cond)

    def finish(self, latents, batch) -> torch.Tensor:
        """Image-to-video: the first latent frame becomes exactly the start image's latent."""
        if "first_latent" in batch:
            latents = latents.clone()
            latents[:, :, :1] = batch["first_latent"].to(latents)
        return latents

    # ---- TAE -----------------------------------------------------------------------------------------------
    def decode_chunks(self, latents: torch.Tensor, tiling=None):
        """latents (1, C, f, h, w) -> one chunk, the whole clip (F, H, W, 3): the TAE is tiny (tiling unused)."""
        with torch.no_grad():
            video = self.vae.decode_normalised(latents.to(self.device, self._vae_dtype))    # (1, 3, F, H, W)
        yield video[0].float().permute(1, 2, 3, 0).cpu()                                   # (F, H, W, 3)

    @property
    def _vae_dtype(self) -> torch.dtype:
        """The TAE's dtype (float32 unless Model Options' vae_dtype changed it)."""
        return next(self.vae.parameters()).dtype

    def encode(self, frames: torch.Tensor, tiling=None) -> torch.Tensor:
        """IMAGE frames (F, H, W, 3) 0..1, F = 2k+1 -> latents (1, C, f, h, w) (tiling unused: the TAE is tiny)."""
        check_shape("frames", frames, 4, "(frames, height, width, channels)", "Connect an IMAGE output.")
        if frames.shape[0] % 2 == 0:
            fail("frames", "must be an odd count (2k+1) for Kinema-Tiny's temporal autoencoder", frames.shape[0],
                 f"Use {frames.shape[0] - 1} or {frames.shape[0] + 1} frames.")
        video = frames[..., :3].permute(3, 0, 1, 2).unsqueeze(0).float()                   # (1, 3, F, H, W)
        with torch.no_grad():
            return self.vae.encode_normalised(video.to(self.device, self._vae_dtype)).float()   # (1, C, f, h, w)

    def preview(self, latents: torch.Tensor) -> torch.Tensor:
        """The TAE is tiny, so previews are real decodes: one frame per latent frame, (f, H, W, 3)."""
        return self.decode(latents[:1])[:: self.temporal_ratio]
