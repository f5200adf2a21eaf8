"""Wan VACE: Wan 2.x with a VACE control branch (WanVACEPipeline folders, WanVACETransformer3DModel).

VACE adds control blocks beside Wan's DiT; their hints, scaled by `conditioning_scale`, are added to the main
blocks. The control input has 96 channels per latent frame: the VAE latents of the inactive (kept) and reactive
(to generate) parts of a control video (2 x 16) and an 8 x 8 pixel mask per latent cell (64).

Kinema uses two of its modes, as WanVACEPipeline does:
- text-to-video: no control video, i.e. a grey (all zero in -1..1) video to regenerate everywhere (mask 1);
- reference images (personalization: a face, a mascot, a product kept across the clip): each image is fitted
  into the frame on white, VAE-encoded as one frame and PREPENDED in latent time (reactive latents zero, mask 0).
  The sampler draws noise for the clip plus one latent frame per reference, and `finish` drops those frames
  before decoding. The Reference Image node's strength is VACE's conditioning_scale (all VACE layers).
Everything else (prompt encoding, schedulers, the VAE, Wan 2.2's two experts) is Wan's (families/wan.py).
"""
from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from .. import vae_tiling
from ..checks import check_range, fail
from .base import Capabilities, Conditioning, References
from .wan import WanFamily, image_to_pil

VACE_PIPELINES = {"WanVACEPipeline"}


class WanVACEFamily(WanFamily):
    name = "wan_vace"
    title = "Wan VACE"
    capabilities = Capabilities(tiled_vae=True, references=True)
    frame_keys = {"control": 2}

    def __init__(self, path, device, dtype, pipe):
        super().__init__(path, device, dtype, pipe)
        self.vace_layers = len(self.transformer.config.vace_layers)
        self._grey: tuple[tuple[int, int, int], torch.Tensor] | None = None   # cached control latents of no video

    @classmethod
    def accepts(cls, model_index: dict) -> bool:
        return model_index.get("_class_name") in VACE_PIPELINES

    # ---- reference images ----------------------------------------------------------------------------------
    def with_reference(self, positive: Conditioning, images: torch.Tensor, strength: float) -> Conditioning:
        """`positive` with reference images attached: each image (H, W, 3) of the batch, 0..1 on the CPU, after any
        attached before; strength is VACE's conditioning_scale (the last one attached wins)."""
        check_range("strength", strength, 0.0, 1.0)
        before = positive.references.images if positive.references is not None else ()
        refs = (*before, *images[..., :3].float().cpu())                            # (H, W, 3) each
        return positive.replace(references=References(refs, float(strength)))

    def prefix_frames(self, positive: Conditioning) -> int:
        return len(positive.references.images) if positive.references is not None else 0

    def _reference_pixels(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """IMAGE (H', W', 3) 0..1 -> (3, height, width) -1..1: scaled to fit (aspect kept), centred on white, as
        WanVACEPipeline.preprocess_conditions does."""
        pixels = self.pipe.video_processor.preprocess(image_to_pil(image), None, None)   # (1, 3, H', W') -1..1
        ih, iw = pixels.shape[-2:]
        scale = min(height / ih, width / iw)
        nh, nw = int(ih * scale), int(iw * scale)
        resized = F.interpolate(pixels, size=(nh, nw), mode="bilinear", align_corners=False)[0]  # (3, nh, nw)
        canvas = torch.ones(3, height, width)
        top, left = (height - nh) // 2, (width - nw) // 2
        canvas[:, top:top + nh, left:left + nw] = resized
        return canvas

    # ---- conditioning --------------------------------------------------------------------------------------
    def _no_video(self, num_frames: int, height: int, width: int) -> torch.Tensor:
        """Control latents of no control video: grey frames (0 in -1..1) through the VAE, (1, C, f, h, w)
        normalised; cached for the last size (the pipeline encodes the same frames as inactive and reactive)."""
        key = (num_frames, height, width)
        if self._grey is None or self._grey[0] != key:
            grey = torch.full((num_frames, height, width, 3), 0.5)                   # (F, H, W, 3)
            self._grey = key, (vae_tiling.encode(self.vae, grey).float() - self._mean) / self._std
        return self._grey[1]

    def control(self, positive: Conditioning, num_frames: int, height: int, width: int) -> torch.Tensor:
        """VACE control latents (1, 2C + r*r, n + f, h, w): n reference frames, then the clip's f latent frames."""
        f, h, w = self.latent_frames(num_frames), height // self.spatial_ratio, width // self.spatial_ratio
        # 1. no control video: inactive and reactive latents of grey frames, mask 1 (generate everything)
        z = self._no_video(num_frames, height, width)
        latents = torch.cat([z, z], dim=1)                                                # (1, 2C, f, h, w)
        mask = torch.ones(1, self.spatial_ratio ** 2, f, h, w, device=self.device)       # (1, r*r, f, h, w)
        # 2. each reference as one VAE frame, prepended (the pipeline prepends in order: the last ends up first),
        #    with zero reactive latents and mask 0
        with torch.no_grad():
            for image in (positive.references.images if positive.references is not None else ()):
                pixels = self._reference_pixels(image, height, width)                    # (3, H, W) -1..1
                x = pixels[None, :, None].to(self.device, self.vae.dtype)                # (1, 3, 1, H, W)
                ref = (self.vae.encode(x).latent_dist.mode().float() - self._mean) / self._std  # (1, C, 1, h, w)
                latents = torch.cat([torch.cat([ref, torch.zeros_like(ref)], dim=1), latents], dim=2)
                mask = torch.cat([torch.zeros_like(mask[:, :, :1]), mask], dim=2)
        return torch.cat([latents, mask], dim=1)                                          # (1, 96, n + f, h, w)

    def prepare(self, positive, negative, settings, generator=None) -> dict[str, Any]:
        num_frames, height, width = settings.num_frames, settings.height, settings.width
        if positive.image is not None:
            fail("positive", "carries a start image, which Wan VACE does not take", "an image",
                 "Use the Reference Image node (the subject kept across the clip) instead of Image to Video "
                 "Conditioning, or load a Wan image-to-video model.")
        conds = [negative, positive] if negative is not None else [positive]
        refs = self.prefix_frames(positive)
        scale = positive.references.strength if refs else 1.0
        control = self.control(positive, num_frames, height, width)
        return {"encoder_hidden_states": torch.cat([c.embeds for c in conds]),            # (B, L, D)
                "control": control.to(self.transformer.dtype).repeat(len(conds), 1, 1, 1, 1),  # (B, 96, n+f, h, w)
                "control_scale": torch.full((self.vace_layers,), scale, device=self.device,
                                            dtype=self.transformer.dtype),
                "reference_frames": refs}

    # ---- denoiser ------------------------------------------------------------------------------------------
    def predict(self, latents, t, batch) -> torch.Tensor:
        model = self.transformer
        if self.boundary is not None and t < self.boundary and self.transformer_2 is not None:
            model = self.transformer_2
        control = batch["control"]
        if control.shape[2] != latents.shape[2]:
            fail("positive", f"carries {batch['reference_frames']} reference image(s), which only the Temporal "
                 f"Sampler takes on Wan VACE (the latents have {latents.shape[2]} frames, the control "
                 f"{control.shape[2]})", "a reference", "Sample with the Temporal Sampler at denoise 1, or remove "
                 "the Reference Image node.")
        return model(hidden_states=latents.to(model.dtype), timestep=t.expand(latents.shape[0]),
                     encoder_hidden_states=batch["encoder_hidden_states"], control_hidden_states=control,
                     control_hidden_states_scale=batch["control_scale"], return_dict=False)[0]

    def finish(self, latents, batch) -> torch.Tensor:
        """After the last step: drop the reference frames (the clip is what follows them)."""
        return latents[:, :, batch.get("reference_frames", 0):]
