"""Portrait nodes: one photo + speech or song -> a talking or singing clip as long as the audio."""
from __future__ import annotations

from ..models.devices import DeviceChoice, DtypeChoice
from . import env

MAX_SEED = 0xFFFFFFFFFFFFFFFF


def _portrait_models() -> list[str]:
    """Folders a portrait family accepts (Kinema-Tiny Portrait, LTX-2), by their model_index.json."""
    import json
    from ..models.portrait import portrait_family_for
    names = []
    for name in env.list_models("diffusers"):
        index = env.find_model("diffusers", name) / "model_index.json"
        try:
            if portrait_family_for(json.loads(index.read_text())):
                names.append(name)
        except (OSError, ValueError):
            continue
    return names


class KinemaLoadPortraitModel:
    DESCRIPTION = ("Loads an audio-driven portrait model (a local folder in models/diffusers), the family read "
                   "from its model_index.json. `kinema-tiny-portrait` ships with the pack: a drawn 32x32 face whose "
                   "mouth follows the loudness of the voice, seconds on a CPU. An LTX-2 diffusers folder "
                   "(Lightricks/LTX-2) animates real photos: the speech through LTX-2's audio VAE, held clean, "
                   "while the video is denoised (a large GPU model).")
    CATEGORY = "Kinema/loaders"
    RETURN_TYPES = ("KINEMA_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The portrait model: connect it to Portrait Animate.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (_portrait_models() or ["(no portrait models found)"], {"tooltip":
                      "A portrait model folder (holding model_index.json) under models/diffusers; only portrait "
                      "models are listed: Kinema-Tiny Portrait (bundled) and LTX-2 folders (model_index.json "
                      "naming LTX2Pipeline, LTX2ConditionPipeline or LTX2ImageToVideoPipeline)."}),
            "device": ([c.value for c in DeviceChoice], {"default": "auto", "tooltip":
                       "auto: CUDA, then Apple MPS, then CPU. A device that is not available is an error."}),
            "dtype": ([c.value for c in DtypeChoice], {"default": "auto", "tooltip":
                      "Weights precision. auto: bf16 on CUDA (fp16 on old GPUs), fp16 on MPS, fp32 on CPU."}),
        }}

    def load(self, model, device, dtype):
        from ..models.devices import pick_device, pick_dtype
        from ..models.portrait import load_portrait_model
        dev = pick_device(device)
        return (load_portrait_model(env.find_model("diffusers", model), dev, pick_dtype(dtype, dev)),)


class KinemaPortraitAnimate:
    DESCRIPTION = ("Animates one portrait with speech or song: the mouth and face follow the voice, for as long "
                   "as the audio lasts (frames = ceil(seconds x fps), never rounded down). Long audio runs in "
                   "overlapping windows with the portrait given again in every window, so the face does not "
                   "drift. Connect the same AUDIO and fps to Save Video to mux the sound.")
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
            "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 120.0, "step": 0.01, "tooltip":
                              "Frames per second; frames = ceil(seconds x fps). Kinema-Tiny Portrait was trained "
                              "at 25, LTX-2 at 24-25. Use the same value in Save Video."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                             "tooltip": "Noise seed (every window starts from it). Same seed, inputs, device, dtype, "
                                        "CPU threads: same clip, bit for bit; other thread counts: frames within "
                                        "0.001/255 (README, Reproducibility)."}),
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
        }}

    def animate(self, model, portrait, audio, fps, seed, steps, cfg, identity_strength, prompt=""):
        from ..models.audio import check_audio
        from ..models.portrait import animate_portrait
        wav, rate = check_audio("audio", audio)
        progress = env.Progress(steps)

        def on_step(i, total, latents):
            progress.total = total
            progress(i)
        return (animate_portrait(model, portrait, wav[0], rate, fps, seed=seed, num_inference_steps=steps,
                                 guidance_scale=cfg, identity_strength=identity_strength, prompt=prompt,
                                 on_step=on_step),)


NODE_CLASS_MAPPINGS = {"KinemaLoadPortraitModel": KinemaLoadPortraitModel,
                       "KinemaPortraitAnimate": KinemaPortraitAnimate}
NODE_DISPLAY_NAME_MAPPINGS = {"KinemaLoadPortraitModel": "Load Portrait Model",
                              "KinemaPortraitAnimate": "Portrait Animate"}
