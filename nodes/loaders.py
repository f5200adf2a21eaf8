"""Loaders: video, audio, portrait and upscale models from local folders (never downloads, never unpickles)."""
from __future__ import annotations

from ..models.devices import DeviceChoice, DtypeChoice
from ..models.families import AudioFamilyChoice, FamilyChoice
from ..models.parallel import ParallelChoice
from . import env


def _family(choices) -> tuple:
    return ([c.value for c in choices], {"default": "auto", "tooltip": "auto reads the folder's model_index.json; "
                                         "set it only to insist on a family (a mismatch is an error, not a "
                                         "conversion)."})


def _device() -> tuple:
    return ([c.value for c in DeviceChoice], {"default": "auto", "tooltip": "auto: CUDA, then Apple MPS, then CPU. "
                                              "A device that is not available is an error."})


def _dtype(note: str = "") -> tuple:
    return ([c.value for c in DtypeChoice], {"default": "auto", "tooltip": "Weights precision. auto: bf16 on CUDA "
                                             "(fp16 on old GPUs), fp16 on MPS, fp32 on CPU." + note})


def _load_args(device: str, dtype: str):
    from ..models.devices import pick_device, pick_dtype
    dev = pick_device(device)
    return dev, pick_dtype(dtype, dev)


class KinemaLoadVideoModel:
    DESCRIPTION = ("Loads a video model folder (diffusers format, models/diffusers): Wan 2.x text/image-to-video, "
                   "AnimateDiff (SD1.5 + motion adapter) or Kinema-Tiny (`kinema-tiny-video`, bundled: 9 frames "
                   "at 32x32 of simple shapes, seconds on a CPU). `parallel` shards Wan over GPUs "
                   "(docs/distributed.md).")
    CATEGORY = "Kinema/loaders"
    RETURN_TYPES = ("KINEMA_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded model: connect it to Text Encode, the sampler and Video Decode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = env.list_models("diffusers") or ["(no models found: run `kinema fixtures` or add one)"]
        return {"required": {
            "model": (names, {"tooltip": "A diffusers-format folder (holding model_index.json) under "
                                         "models/diffusers. Wan, AnimateDiff and Kinema-Tiny folders are "
                                         "recognised; kinema-tiny-video is bundled."}),
            "family": _family(FamilyChoice),
            "device": _device(),
            "dtype": _dtype(" The VAE of Wan always stays fp32."),
        }, "optional": {
            "weights": (["none"] + env.list_models("single_file", files=True), {
                "default": "none", "tooltip": "Optional single-file .safetensors (models/diffusion_models or "
                                              "checkpoints) replacing the denoiser of the folder: Wan's transformer, "
                                              "AnimateDiff's motion adapter. Original or diffusers key layout. "
                                              "none: the folder's own weights."}),
            "parallel": ([c.value for c in ParallelChoice], {
                "default": "none", "tooltip": "Context parallelism over several GPUs (Wan only); none: one device. "
                                              "ulysses: all-to-all over heads (heads divisible by the GPU count; "
                                              "best with NVLink). ring: keys/values passed round (any head count; "
                                              "bf16/fp16 with flash-attn or cuDNN). One helper process per extra "
                                              "GPU, stopped with the model."}),
            "gpus": ("INT", {
                "default": 0, "min": 0, "max": 64, "tooltip": "GPUs to shard over when parallel is set: 0 = all "
                                                              "visible (CUDA_VISIBLE_DEVICES), else 2 or more "
                                                              "(1 is an error). Ignored when parallel is none."}),
        }}

    def load(self, model, family, device, dtype, weights="none", parallel="none", gpus=0):
        from ..models.families import load_model
        path = env.find_model("diffusers", model)
        dev, dt = _load_args(device, dtype)
        file = None if weights == "none" else env.find_model("single_file", weights, files=True)
        if parallel == ParallelChoice.NONE:
            return (load_model(path, family, dev, dt, weights=file),)
        from ..models.parallel import load_parallel
        return (load_parallel(path, family, dev, dt, parallel, gpus, weights=file),)


class KinemaLoadAudioModel:
    DESCRIPTION = ("Loads a local audio model (diffusers-format folder in models/diffusers): Stable Audio Open "
                   "for Text to Audio; LTX-2 or the bundled Kinema-Tiny Audio for Video to Audio (the clip as a "
                   "condition).")
    CATEGORY = "Kinema/loaders"
    RETURN_TYPES = ("KINEMA_AUDIO_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded audio model: connect it to Text to Audio or Video to Audio.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        from ..models.families import AUDIO
        names = [n for n in env.list_models("diffusers")
                 if AUDIO.detect(env.find_model("diffusers", n)) is not None]
        return {"required": {
            "model": (names or ["(no audio models found: run `kinema fixtures` or add one)"], {"tooltip":
                      "A diffusers-format folder (holding model_index.json) under models/diffusers: Stable Audio "
                      "Open (StableAudioPipeline), LTX-2 (LTX2Pipeline) or Kinema-Tiny Audio (kinema-tiny-audio, "
                      "bundled). Only audio-capable folders are listed."}),
            "family": _family(AudioFamilyChoice),
            "device": _device(),
            "dtype": _dtype(" The audio VAEs and vocoder always stay fp32."),
        }}

    def load(self, model, family, device, dtype):
        from ..models.families import load_audio_model
        return (load_audio_model(env.find_model("diffusers", model), family, *_load_args(device, dtype)),)


def _portrait_models() -> list[str]:
    """Folders a portrait family accepts (Kinema-Tiny Portrait, LTX-2), by their model_index.json."""
    import json
    from ..models.families import PORTRAIT
    names = []
    for name in env.list_models("diffusers"):
        index = env.find_model("diffusers", name) / "model_index.json"
        try:
            if PORTRAIT.match(json.loads(index.read_text())):
                names.append(name)
        except (OSError, ValueError):
            continue
    return names


class KinemaLoadPortraitModel:
    DESCRIPTION = ("Loads an audio-driven portrait model (models/diffusers; family from model_index.json). Bundled: "
                   "`kinema-tiny-portrait`, a drawn 32x32 face whose mouth follows the voice's loudness, seconds on "
                   "a CPU. LTX-2 (Lightricks/LTX-2, a large GPU model) animates photos, speech latents held clean.")
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
            "device": _device(),
            "dtype": _dtype(),
        }}

    def load(self, model, device, dtype):
        from ..models.families import load_portrait_model
        return (load_portrait_model(env.find_model("diffusers", model), *_load_args(device, dtype)),)


def _upscale_models() -> list[str]:
    """Folders a registered learned-upscaler kind accepts (models.upscale.UPSCALERS), by their model_index.json."""
    from ..models.upscale import UPSCALERS
    names = []
    for name in env.list_models("upscaler"):
        try:
            if UPSCALERS.detect(env.find_model("upscaler", name)) is not None:
                names.append(name)
        except (OSError, ValueError):
            continue
    return names


class KinemaLoadUpscaleModel:
    DESCRIPTION = ("Loads a learned video upscaler for Video Upscale's `upscaler` input (models/diffusers or "
                   "models/latent_upscale_models). Bundled: `kinema-tiny-upscaler`, 2x with temporal layers, "
                   "trained on Kinema-Tiny's clips (32 -> 64 px, a second or two on a CPU).")
    CATEGORY = "Kinema/loaders"
    RETURN_TYPES = ("KINEMA_UPSCALER",)
    RETURN_NAMES = ("upscaler",)
    OUTPUT_TOOLTIPS = ("The upscaler: connect it to Video Upscale's `upscaler` input.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (_upscale_models() or ["(no upscale models found)"], {"tooltip":
                      "An upscaler folder (holding model_index.json); only folders of a known kind are listed: "
                      "Kinema-Tiny Upscaler (kinema-tiny-upscaler, bundled)."}),
            "device": _device(),
            "dtype": _dtype(" Kinema-Tiny Upscaler always runs fp32."),
        }}

    def load(self, model, device, dtype):
        from ..models.upscale import load_upscaler
        return (load_upscaler(env.find_model("upscaler", model), *_load_args(device, dtype)),)


NODE_CLASS_MAPPINGS = {"KinemaLoadVideoModel": KinemaLoadVideoModel, "KinemaLoadAudioModel": KinemaLoadAudioModel,
                       "KinemaLoadPortraitModel": KinemaLoadPortraitModel,
                       "KinemaLoadUpscaleModel": KinemaLoadUpscaleModel}
NODE_DISPLAY_NAME_MAPPINGS = {"KinemaLoadVideoModel": "Load Video Model", "KinemaLoadAudioModel": "Load Audio Model",
                              "KinemaLoadPortraitModel": "Load Portrait Model",
                              "KinemaLoadUpscaleModel": "Load Upscale Model"}
