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


class KinemaKeyframeImage:
    DESCRIPTION = ("Attaches a keyframe: the clip passes through this image at `frame` (LTX-2, as its condition "
                   "pipeline's keyframes). Chain several for several keyframes; for frame 0 use Image to Video.")
    CATEGORY = "Kinema/conditioning"
    RETURN_TYPES = ("KINEMA_COND",)
    RETURN_NAMES = ("positive",)
    OUTPUT_TOOLTIPS = ("The positive prompt carrying the keyframe (and any it carried before).",)
    FUNCTION = "attach"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "positive": ("KINEMA_COND", {"tooltip": "The encoded positive prompt (LTX-2)."}),
            "image": ("IMAGE", {"tooltip": "The keyframe. Only the first image of a batch is used; it is resized to "
                                           "cover the sampler's size and centre-cropped; alpha is ignored."}),
            "frame": ("INT", {"default": 9, "min": 1, "max": 10000, "tooltip":
                              "The video frame it appears at: 8k+1 for LTX-2 (9, 17, ... 113); another value is "
                              "an error, never rounded."}),
        }}

    def attach(self, positive, image, frame):
        from ..models.checks import check_shape
        check_shape("image", image, 4, "(frames, height, width, channels)", "Connect an IMAGE output.")
        return (positive.replace(key_images=(*positive.key_images, (frame, image[:1, ..., :3].float().cpu()))),)


class KinemaPromptSchedule:
    DESCRIPTION = ("One prompt per stretch of the video (FreeNoise multi-prompt): 'FRAME: prompt' entries. Each "
                   "window follows the prompt of its frames, blended between keyframes; the new prompts act in the "
                   "middle denoising steps (motion injection) so the layout stays coherent.")
    CATEGORY = "Kinema/conditioning"
    RETURN_TYPES = ("KINEMA_COND",)
    RETURN_NAMES = ("positive",)
    OUTPUT_TOOLTIPS = ("A positive prompt carrying the schedule; use it with Context Options for long videos.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("KINEMA_MODEL", {"tooltip": "The model whose text encoder is used."}),
            "schedule": ("STRING", {"multiline": True, "default": "0: a cat walks on grass | 48: the cat runs",
                                    "tooltip": "Entries 'FRAME: prompt' separated by '|' or new lines, frames in "
                                               "video frames, strictly increasing, starting at 0. The last prompt "
                                               "holds to the end."}),
        }}

    def encode(self, model, schedule):
        from ..models.windows import parse_schedule
        entries = tuple((frame, model.encode_prompt(text)) for frame, text in parse_schedule(schedule))
        return (entries[0][1].replace(prompt=schedule, schedule=entries),)


NODE_CLASS_MAPPINGS = {"KinemaTextEncode": KinemaTextEncode, "KinemaImageToVideo": KinemaImageToVideo,
                       "KinemaPromptSchedule": KinemaPromptSchedule, "KinemaKeyframeImage": KinemaKeyframeImage}
NODE_DISPLAY_NAME_MAPPINGS = {"KinemaTextEncode": "Text Encode (Kinema)",
                              "KinemaImageToVideo": "Image to Video Conditioning",
                              "KinemaPromptSchedule": "Prompt Schedule", "KinemaKeyframeImage": "Keyframe Image"}
