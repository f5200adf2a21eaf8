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
    """joint latents with the keyframe prefix dropped and the held frames put back exactly as encoded."""
    latents = latents[:, :, batch.get("prefix", 0):]
    if batch.get("clean") is None:
        return latents
    layout = batch["layout"]
    m = batch["frame_mask"]
    video = latents[:, :, :layout.frames] * (1 - m) + batch["clean"] * m
    return torch.cat([video, latents[:, :, layout.frames:]], dim=2)


# ---- keyframes at other latent frames (LTX2ConditionPipeline) -----------------------------------------------------
# A keyframe image at latent index k > 0 is NOT written into the clip's frame k: as in LTX2ConditionPipeline
# (VideoConditionByKeyframeIndex) its encoded tokens are appended to the video sequence with their own positions
# (pixel frame (k - 1) * r + 1, in seconds), held clean (timestep 0, strength 1), and dropped at the end. In the
# loop's joint latents they are `prefix` frames before the clip (one latent frame each); the noise is then drawn
# as that pipeline draws it: packed over the clip's tokens followed by the keyframes' tokens.

def keyframe_batch(model, positive, settings, layout, batch_size: int) -> dict:
    """Batch entries for positive.key_images (pixel frame r*k + 1 -> latent index k + 1): "kf_clean"
    (1, C, p, h, w) normalised latents, "kf_coords" (B, 3, p*h*w, 2) their positions; none without keyframes."""
    if not positive.key_images:
        return {}
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition, retrieve_latents
    from ..checks import fail
    from .ltx2_portrait import portrait_array
    p = model.pipe
    h, w = settings.height // model.spatial_ratio, settings.width // model.spatial_ratio
    latents, coords = [], []
    r = model.temporal_ratio
    for frame, image in positive.key_images:
        if not 0 < frame < settings.num_frames or (frame - 1) % r:
            fail("frame", f"must be {r}k+1 inside the clip (1 .. {settings.num_frames - 1}): LTX-2 places a "
                 f"keyframe at the first frame of a latent frame", frame,
                 f"Use e.g. {r + 1} or {(layout.frames - 1) // 2 * r + 1}; frame 0 is the start image.")
        index = (frame - 1) // r + 1                                                    # latent frame
        condition = LTX2VideoCondition(frames=portrait_array(image), index=index, strength=1.0)
        pixels = p.preprocess_conditions([condition], settings.height, settings.width, settings.num_frames,
                                         device=model.device)[0][0]                    # (1, 3, 1, H, W) -1..1
        with torch.no_grad():
            z = retrieve_latents(model.vae.encode(pixels), sample_mode="argmax")      # (1, C, 1, h, w)
        latents.append(p._normalize_latents(z.float(), model.vae.latents_mean, model.vae.latents_std))
        coords.append(p._prepare_keyframe_coords(
            keyframe_latent_num_frames=1, keyframe_latent_height=h, keyframe_latent_width=w,
            pixel_frame_idx=(index - 1) * model.temporal_ratio + 1,
            num_pixel_frames=1, fps=float(model.fps(settings)), device=model.device))
    coords = torch.cat(coords, dim=2)
    return {"kf_clean": torch.cat(latents, dim=2),
            "kf_coords": coords.expand(batch_size, *coords.shape[1:])}
