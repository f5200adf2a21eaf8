"""Loaders: video models from local diffusers folders (never downloads, never unpickles)."""
from __future__ import annotations

from ..models.devices import DeviceChoice, DtypeChoice
from ..models.families import FamilyChoice
from ..models.parallel import ParallelChoice
from . import env


class KinemaLoadVideoModel:
    DESCRIPTION = ("Loads a local video model (diffusers-format folder) as a Kinema model: Wan 2.x text/image-to-"
                   "video, AnimateDiff (SD1.5 + motion adapter) or Kinema-Tiny. Folders are looked up in "
                   "models/diffusers; `kinema-tiny-video` ships with the pack (a small trained model: 9 frames "
                   "at 32x32 of simple shapes, seconds on a CPU). `parallel` shards a Wan model's denoiser over "
                   "several GPUs (docs/distributed.md).")
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
            "family": ([c.value for c in FamilyChoice], {
                "default": "auto", "tooltip": "auto reads the folder's model_index.json; set it only to insist "
                                              "on a family (a mismatch is an error, not a conversion)."}),
            "device": ([c.value for c in DeviceChoice], {
                "default": "auto", "tooltip": "auto: CUDA, then Apple MPS, then CPU. A device that is not "
                                              "available is an error."}),
            "dtype": ([c.value for c in DtypeChoice], {
                "default": "auto", "tooltip": "Weights precision. auto: bf16 on CUDA (fp16 on old GPUs), fp16 on "
                                              "MPS, fp32 on CPU. The VAE of Wan always stays fp32."}),
        }, "optional": {
            "weights": (["none"] + env.list_models("single_file", files=True), {
                "default": "none", "tooltip": "Optional single-file .safetensors (models/diffusion_models or "
                                              "checkpoints) replacing the denoiser of the folder: Wan's transformer, "
                                              "AnimateDiff's motion adapter. Original or diffusers key layout. "
                                              "none: the folder's own weights."}),
            "parallel": ([c.value for c in ParallelChoice], {
                "default": "none", "tooltip": "Shard each denoising step over several GPUs (context parallelism; "
                                              "Wan only). none: one device, as always. ulysses: all-to-all over "
                                              "attention heads (heads must divide by the GPU count; best with "
                                              "NVLink). ring: keys/values passed round the GPUs (any head count; "
                                              "needs bf16/fp16 and flash-attn or cuDNN). Starts one helper process "
                                              "per extra GPU; they stop when the model is released."}),
            "gpus": ("INT", {
                "default": 0, "min": 0, "max": 64, "tooltip": "GPUs to shard over when parallel is set: 0 = all "
                                                              "visible (CUDA_VISIBLE_DEVICES), else 2 or more "
                                                              "(1 is an error). Ignored when parallel is none."}),
        }}

    def load(self, model, family, device, dtype, weights="none", parallel="none", gpus=0):
        from ..models.devices import pick_device, pick_dtype
        from ..models.families import load_model
        path = env.find_model("diffusers", model)
        dev = pick_device(device)
        file = None if weights == "none" else env.find_model("single_file", weights, files=True)
        if parallel == ParallelChoice.NONE:
            return (load_model(path, family, dev, pick_dtype(dtype, dev), weights=file),)
        from ..models.parallel import load_parallel
        return (load_parallel(path, family, dev, pick_dtype(dtype, dev), parallel, gpus, weights=file),)


NODE_CLASS_MAPPINGS = {"KinemaLoadVideoModel": KinemaLoadVideoModel}
NODE_DISPLAY_NAME_MAPPINGS = {"KinemaLoadVideoModel": "Load Video Model"}
