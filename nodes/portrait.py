"""Portrait nodes: one photo + speech or song -> a talking or singing clip as long as the audio (Load Portrait
Model is in loaders.py)."""
from __future__ import annotations

from . import widgets
from .sampling import cache_result, step_cache_input


class KinemaPortraitAnimate:
    DESCRIPTION = ("Animates a portrait with speech or song for as long as the audio lasts (frames = ceil(seconds "
                   "x fps)). Long audio runs in overlapping windows, each given the portrait again and started from "
                   "the seed, so the face does not drift. Connect the same AUDIO and fps to Save Video for sound.")
    CATEGORY = "Kinema/portrait"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The clip: IMAGE (ceil(seconds x fps), H, W, 3) 0..1 at the model's size (32x32 for "
                       "Kinema-Tiny Portrait, resize it to show it larger; LTX-2: the portrait's aspect, 768 px on "
                       "the long side).",)
    FUNCTION = "animate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("KINEMA_MODEL", {"tooltip": "A portrait model from Load Portrait Model."}),
            "portrait": ("IMAGE", {"tooltip": "The face to animate (the first image of the batch). Any size: "
                                              "centre-cropped to a square and resized to the model's size."}),
            "audio": ("AUDIO", {"tooltip": "Speech or song (the first clip of the batch, channels mixed). Any "
                                           "length and rate: the video lasts as long as it."}),
            "fps": widgets.fps("Frames per second; frames = ceil(seconds x fps). Kinema-Tiny Portrait was "
                               "trained at 25, LTX-2 at 24-25. Use the same value in Save Video.",
                               default=25.0, min=1.0, max=120.0),
            "seed": widgets.seed(),
            "steps": ("INT", {"default": 8, "min": 1, "max": 1000, "tooltip":
                              "Denoising steps per window. Kinema-Tiny Portrait: 4-10 is enough; LTX-2: about "
                              "40 (8 for a distilled checkpoint)."}),
            "cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip":
                              "Guidance, twice the work above 1; 1.0 or less turns it off. Kinema-Tiny Portrait: "
                              "contrasts with a pass without the audio (livelier mouth). LTX-2: contrasts the "
                              "prompt with an empty prompt (3-4 for the base model)."}),
            "identity_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.05, "tooltip":
                                  "How strongly the portrait holds the face: 1.0 as trained (no extra cost); "
                                  "above 1 extrapolates away from a pass without the portrait (twice the work); "
                                  "0 ignores the portrait. LTX-2 accepts only 1.0 (the portrait is the clean "
                                  "first frame of every window)."}),
        }, "optional": {
            "prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                       "Optional words about the performance, for models with a text encoder (LTX-2: Gemma). "
                       "Kinema-Tiny Portrait has none: a prompt is ignored with a warning."}),
            "step_cache": step_cache_input("animation (every window)"),
        }}

    def animate(self, model, portrait, audio, fps, seed, steps, cfg, identity_strength, prompt="", step_cache=None):
        from ..models.audio import check_audio
        from ..models.portrait import animate_portrait
        from ..models.step_cache import Stats
        wav, rate = check_audio("audio", audio)
        stats = Stats()
        images = animate_portrait(model, portrait, wav[0], rate, fps, seed=seed, num_inference_steps=steps,
                                  guidance_scale=cfg, identity_strength=identity_strength, prompt=prompt,
                                  on_step=widgets.step_progress(steps), step_cache=step_cache, cache_stats=stats)
        return cache_result((images,), step_cache, stats)


NODE_CLASS_MAPPINGS = {"KinemaPortraitAnimate": KinemaPortraitAnimate}
NODE_DISPLAY_NAME_MAPPINGS = {"KinemaPortraitAnimate": "Portrait Animate"}
