"""LTX-2 image-to-video and keyframes: latent frames held clean while the rest of the clip is denoised.

Image-to-video (diffusers' LTX2ImageToVideoPipeline): the start image is VAE-encoded (argmax, normalised) and
replaces latent frame 0; its tokens get timestep t * (1 - mask) = 0 and velocity 0, so the Euler step never moves
them; `finish` restores them exactly. The audio is denoised from noise as in text-to-video.
"""
from __future__ import annotations

from typing import Any

import torch


def image_condition(model, positive, settings, batch_size: int) -> dict[str, Any]:
    """The batch entries for a start image on `positive` (none without one): "clean" (1, C, f, h, w) normalised
    latents with the image's latent at frame 0, "frame_mask" (1, 1, f, h, w) 1 where held clean, "mask" (1, N)
    the same per packed token."""
    if positive.image is None:
        return {}
    layout = model.layout(settings)
    h, w = settings.height // model.spatial_ratio, settings.width // model.spatial_ratio
    latent = encode_image(model, positive.image, settings.height, settings.width)        # (1, C, 1, h, w)
    clean = latent.new_zeros(1, model.latent_channels, layout.frames, h, w)
    clean[:, :, :1] = latent
    frame_mask = clean.new_zeros(1, 1, layout.frames, h, w)
    frame_mask[:, :, 0] = 1
    mask = model.pipe._pack_latents(frame_mask, model.patch, model.patch_t).squeeze(-1)   # (1, N)
    return {"clean": clean, "frame_mask": frame_mask, "mask": mask}


def encode_image(model, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """IMAGE (1, H, W, C) 0..1 -> normalised latent (1, C, 1, h, w), as LTX2ImageToVideoPipeline encodes it (H.264
    re-compression at the model's CRF, as LTX-2 was trained; resize to height x width; VAE argmax)."""
    import numpy as np
    import PIL.Image
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import retrieve_latents
    from diffusers.pipelines.ltx2.utils import apply_image_conditioning_crf, resolve_default_image_crf
    from .wan import image_to_pil
    pil = image_to_pil(image)
    crf = resolve_default_image_crf(getattr(model.pipe, "text_encoder", None))
    if crf:
        pil = PIL.Image.fromarray(apply_image_conditioning_crf(np.array(pil), crf))
    pixels = model.pipe.video_processor.preprocess(pil, height=height, width=width)        # (1, 3, H, W) -1..1
    pixels = pixels.to(model.device, model.vae.dtype).unsqueeze(2)                        # (1, 3, 1, H, W)
    with torch.no_grad():
        z = retrieve_latents(model.vae.encode(pixels), sample_mode="argmax")
    return model.pipe._normalize_latents(z.float(), model.vae.latents_mean, model.vae.latents_std)


def restore_clean(model, latents: torch.Tensor, batch: dict) -> torch.Tensor:
    """joint latents with the held frames put back exactly as encoded (no-op without any)."""
    if batch.get("clean") is None:
        return latents
    layout = batch["layout"]
    m = batch["frame_mask"]
    video = latents[:, :, :layout.frames] * (1 - m) + batch["clean"] * m
    return torch.cat([video, latents[:, :, layout.frames:]], dim=2)
