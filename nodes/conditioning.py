"""Conditioning: prompts and the start image of image-to-video."""
from __future__ import annotations


class KinemaTextEncode:
    DESCRIPTION = "Encodes a prompt with the model's own text encoder (positive or negative: wire either)."
    CATEGORY = "Kinema/conditioning"
    RETURN_TYPES = ("KINEMA_COND",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("The encoded prompt, for the sampler's positive or negative input.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("KINEMA_MODEL", {"tooltip": "The model whose text encoder is used."}),
            "text": ("STRING", {"multiline": True, "default": "",
                                "tooltip": "The prompt. Empty is allowed (an unconditional prompt); long prompts are "
                                           "truncated at the encoder's token limit (Wan 512, CLIP 77)."}),
        }}

    def encode(self, model, text):
        return (model.encode_prompt(text),)


class KinemaImageToVideo:
    DESCRIPTION = ("Attaches a start image to the positive prompt: image-to-video models (Wan I2V) animate it "
                   "from the first frame. For AnimateDiff use Video Encode + denoise instead.")
    CATEGORY = "Kinema/conditioning"
    RETURN_TYPES = ("KINEMA_COND",)
    RETURN_NAMES = ("positive",)
    OUTPUT_TOOLTIPS = ("The positive prompt carrying the start image.",)
    FUNCTION = "attach"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "positive": ("KINEMA_COND", {"tooltip": "The encoded positive prompt."}),
            "image": ("IMAGE", {"tooltip": "The start frame. Only the first image of a batch is used; it is resized "
                                           "to the sampler's width x height; an alpha channel is ignored."}),
        }}

    def attach(self, positive, image):
        from ..models.checks import check_shape
        check_shape("image", image, 4, "(frames, height, width, channels)", "Connect an IMAGE output.")
        return (positive.with_image(image[:1, ..., :3].float().cpu()),)


NODE_CLASS_MAPPINGS = {"KinemaTextEncode": KinemaTextEncode, "KinemaImageToVideo": KinemaImageToVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"KinemaTextEncode": "Text Encode (Kinema)",
                              "KinemaImageToVideo": "Image to Video Conditioning"}
