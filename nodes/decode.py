"""Latent <-> pixels through the model's VAE / temporal autoencoder."""
from __future__ import annotations


class KinemaVideoDecode:
    DESCRIPTION = "Decodes video latents to frames with the model's VAE (Wan's causal 3D VAE, AnimateDiff's per-frame VAE)."
    CATEGORY = "Kinema/decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("Frames (F, H, W, 3) float 0..1, ComfyUI's IMAGE batch.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("KINEMA_MODEL", {"tooltip": "The model whose VAE decodes (the one that sampled)."}),
            "latent": ("LATENT", {"tooltip": "Video latents from the Temporal Sampler, (1, C, f, h, w)."}),
        }}

    def decode(self, model, latent):
        from ..models.checks import check_shape
        samples = latent["samples"]
        check_shape("latent", samples, 5, "(1, C, frames, h, w) of video latents",
                    "Connect a Kinema Temporal Sampler or Video Encode output.")
        return (model.decode(samples),)


class KinemaVideoEncode:
    DESCRIPTION = ("Encodes frames into video latents, e.g. a still image repeated over `length` frames to animate "
                   "it with the sampler at denoise < 1, or a clip to re-style.")
    CATEGORY = "Kinema/latent"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Video latents for the sampler's `latent` input.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("KINEMA_MODEL", {"tooltip": "The model whose VAE encodes (the one that will sample)."}),
            "images": ("IMAGE", {"tooltip": "Frames (F, H, W, C) 0..1; alpha is dropped. Width and height must "
                                            "equal the sampler's."}),
            "length": ("INT", {"default": 16, "min": 1, "max": 10000, "tooltip":
                               "Frames of the result. One input image is repeated to this length; a clip must "
                               "have exactly this many frames (it is never trimmed or padded silently)."}),
        }}

    def encode(self, model, images, length):
        from ..models.checks import fail
        if images.shape[0] == 1:
            images = images.expand(length, *images.shape[1:])
        elif images.shape[0] != length:
            fail("images", f"must have 1 or `length` ({length}) frames", images.shape[0],
                 "Set length to the clip's frame count.")
        return ({"samples": model.encode(images[..., :3].float()).cpu(), "kinema_frames": length},)


NODE_CLASS_MAPPINGS = {"KinemaVideoDecode": KinemaVideoDecode, "KinemaVideoEncode": KinemaVideoEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"KinemaVideoDecode": "Video Decode", "KinemaVideoEncode": "Video Encode"}
