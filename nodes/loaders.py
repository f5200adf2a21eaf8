"""Loaders: video, audio, portrait and upscale models from local folders (never downloads, never unpickles)."""
from __future__ import annotations

from ..models.devices import DeviceChoice, DtypeChoice
from ..models.families import AudioFamilyChoice, FamilyChoice
from ..models.parallel import ParallelChoice
from . import env, in_comfy


def _family(choices) -> tuple:
    return ([c.value for c in choices], {"default": "auto", "tooltip": "auto reads the folder's model_index.json; "
                                         "set it only to insist on a family (a mismatch is an error, not a "
                                         "conversion)."})


def _device() -> tuple:
    return ([c.value for c in DeviceChoice], {"default": "auto", "tooltip": "auto: inside ComfyUI its device (the "
                                              "CPU under --cpu); elsewhere CUDA, then Apple MPS, then CPU. A device "
                                              "that is not available is an error."})


def _dtype(note: str = "") -> tuple:
    return ([c.value for c in DtypeChoice], {"default": "auto", "tooltip": "Weights precision. auto: bf16 on CUDA "
                                             "(fp16 on old GPUs), fp16 on MPS, fp32 on CPU." + note})


def _load_args(device: str, dtype: str, *sources):
    """(device, dtype) for a loader; inside ComfyUI its device for auto, and ComfyUI is first asked to free the
    memory the weight files in `sources` need (nodes/in_comfy.py)."""
    from ..models.devices import pick_dtype
    dev = in_comfy.pick_device(device)
    in_comfy.free_for(dev, *sources)
    return dev, pick_dtype(dtype, dev)


def _folders_of(registry) -> list[str]:
    """Diffusers folders `registry` (VIDEO, PORTRAIT) can load, by their model_index.json: the others are not
    listed (an audio-only folder in Load Video Model would fail at run time)."""
    import json
    names = []
    for name in env.list_models("diffusers"):
        index = env.find_model("diffusers", name) / "model_index.json"
        try:
            if registry.match(json.loads(index.read_text())):
                names.append(name)
        except (OSError, ValueError):
            continue
    return names


def _video_models() -> list[str]:
    """Folders the VIDEO registry can load (Wan, Wan VACE, AnimateDiff, Kinema-Tiny)."""
    from ..models.families import VIDEO
    return _folders_of(VIDEO)


def _options() -> tuple:
    return ("KINEMA_MODEL_OPTIONS", {"tooltip": "Memory and speed modes from a Model Options node (fp8 weights, "
                                                "block offload, attention backend, compile), applied as the model "
                                                "loads. Without it the model loads as it is."})


def _with_options(model, options) -> dict:
    """The loaders' result with Model Options applied; the node's text lists what they did."""
    from ..models.model_options import apply_options
    notes = apply_options(model, options)
    return {"ui": {"text": ["; ".join(notes)]}, "result": (model,)} if notes else (model,)


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
        names = _video_models() or ["(no video models found: run `kinema fixtures` or add one)"]
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
            "options": _options(),
        }}

    def load(self, model, family, device, dtype, weights="none", parallel="none", gpus=0, options=None):
        from ..models.families import load_model
        path = env.find_model("diffusers", model)
        file = None if weights == "none" else env.find_model("single_file", weights, files=True)
        dev, dt = _load_args(device, dtype, path, file)
        if parallel == ParallelChoice.NONE:
            return _with_options(load_model(path, family, dev, dt, weights=file), options)
        if options is not None:
            from ..models.checks import fail
            fail("options", "cannot be combined with parallel (the helper processes load their own copy)", parallel,
                 "Set parallel to none, or disconnect `options`.")
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
        }, "optional": _ltx2_inputs("Video to Audio")}

    def load(self, model, family, device, dtype, checkpoint="none", text_encoder="none"):
        from ..models.families import load_audio_model
        if checkpoint != "none" or text_encoder != "none":
            if family not in ("auto", "ltx2"):
                from ..models.checks import fail
                fail("family", "must be auto or ltx2 with an LTX-2 `checkpoint`", family, "Set family to auto.")
            return (_ltx2_files("audio", checkpoint, text_encoder, device, dtype),)
        path = env.find_model("diffusers", model)
        return (load_audio_model(path, family, *_load_args(device, dtype, path)),)


def _portrait_models() -> list[str]:
    """Folders a portrait family accepts (Kinema-Tiny Portrait, LTX-2)."""
    from ..models.families import PORTRAIT
    return _folders_of(PORTRAIT)


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
        }, "optional": _ltx2_inputs("Portrait Animate")}

    def load(self, model, device, dtype, checkpoint="none", text_encoder="none"):
        from ..models.families import load_portrait_model
        if checkpoint != "none" or text_encoder != "none":
            return (_ltx2_files("portrait", checkpoint, text_encoder, device, dtype),)
        path = env.find_model("diffusers", model)
        return (load_portrait_model(path, *_load_args(device, dtype, path)),)


def _files(kind: str, what: str, none: bool = False, suffixes: tuple[str, ...] = (".safetensors",)) -> list[str]:
    """A file dropdown of one ComfyUI model folder (with `none` first for an optional input)."""
    names = env.list_models(kind, files=True, suffixes=suffixes)
    return (["none"] + names) if none else (names or [f"(no {what} in models/{env.MODEL_FOLDERS[kind][0]})"])


def _file(kind: str, name: str):
    return None if name == "none" else env.find_model(kind, name, files=True)


def _ltx2_inputs(use: str) -> dict:
    """The optional LTX-2 file inputs of the audio and portrait loaders (ComfyUI's checkpoints/ + text_encoders/)."""
    return {
        "checkpoint": (_files("checkpoints", "checkpoints", True), {"default": "none", "tooltip":
                       f"LTX-2's all-in-one checkpoint from checkpoints/ (ltx-2-19b-dev / -distilled .safetensors, "
                       f"as ComfyUI's templates download it), loaded for {use} instead of the `model` folder. "
                       f"none: use the folder."}),
        "text_encoder": (_files("text_encoders", "text encoders", True), {"default": "none", "tooltip":
                         "With `checkpoint`: LTX-2's Gemma 3 file from text_encoders/ (gemma_3_12B_it*.safetensors, "
                         "which carries its tokenizer; otherwise put Gemma's tokenizer.model beside it)."}),
    }


def _ltx2_files(kind: str, checkpoint: str, text_encoder: str, device: str, dtype: str):
    """An LTX-2 family from the checkpoint + Gemma files (models.files.ltx2); text_encoder alone is an error."""
    from ..models.checks import fail
    from ..models.files.ltx2 import load_ltx2_family
    if checkpoint == "none":
        fail("text_encoder", "is only read together with an LTX-2 `checkpoint`", text_encoder,
             "Pick LTX-2's all-in-one checkpoint in `checkpoint`, or set text_encoder to none to load the folder.")
    ckpt, gemma = _file("checkpoints", checkpoint), _file("text_encoders", text_encoder)
    return load_ltx2_family(kind, ckpt, gemma, *_load_args(device, dtype, *(p for p in (ckpt, gemma) if p)))


class KinemaLoadModelFiles:
    DESCRIPTION = ("Loads a Wan 2.1/2.2 model from the single files ComfyUI users have (diffusion_models, "
                   "text_encoders, vae, clip_vision): fp16/bf16/fp8/scaled fp8/GGUF. The variant comes from the "
                   "tensors; mismatched files are refused with the fix. Same output as Load Video Model.")
    CATEGORY = "Kinema/loaders"
    RETURN_TYPES = ("KINEMA_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded model: connect it to Text Encode, the sampler and Video Decode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        from ..models.files.family import TextEncoderMemory, WeightDtypeChoice
        return {"required": {
            "denoiser": (_files("diffusion_models", "denoisers", suffixes=(".safetensors", ".gguf")), {"tooltip":
                         "The Wan model file (diffusion_models/ or unet/): wan2.1_t2v_*, wan2.1_i2v_*, "
                         "wan2.1_vace_*, wan2.2_ti2v_5B_*, or the *_high_noise_14B expert of a Wan 2.2 A14B pair. "
                         ".safetensors or .gguf (needs `pip install gguf`)."}),
            "text_encoder": (_files("text_encoders", "text encoders"), {"tooltip":
                             "UMT5-XXL from text_encoders/ (or clip/): umt5_xxl_fp16 or umt5_xxl_fp8_e4m3fn_scaled "
                             "(they carry their tokenizer). Every Wan model uses it."}),
            "vae": (_files("vae", "VAEs"), {"tooltip": "vae/: wan_2.1_vae for every Wan 2.1 model and the 2.2 "
                                                       "A14B pairs; wan2.2_vae only for Wan 2.2 TI2V 5B. Always "
                                                       "runs in fp32."}),
            "device": _device(),
            "dtype": _dtype(" Applies to the computation, the text encoder and CLIP vision; the VAE stays fp32."),
            "weight_dtype": ([c.value for c in WeightDtypeChoice], {"default": "auto", "tooltip":
                             "The denoiser's weights in memory. auto: fp8 files stay fp8 (scaled fp8 with its "
                             "scales), others in dtype. fp8: half of fp16's memory (16-bit files quantised per "
                             "tensor). fp16/bf16: 16-bit. Layers compute in dtype either way."}),
            "text_encoder_memory": ([c.value for c in TextEncoderMemory], {"default": "offload", "tooltip":
                                    "After each prompt: offload moves the text encoder to RAM (back for the next "
                                    "prompt), free drops it (the next prompt re-reads the file), keep leaves it on "
                                    "the device. Changing a prompt works in all three."}),
        }, "optional": {
            "denoiser_2": (_files("diffusion_models", "denoisers", True, (".safetensors", ".gguf")), {
                "default": "none", "tooltip": "Wan 2.2 A14B only: the *_low_noise_14B expert (t2v with t2v, i2v "
                                              "with i2v). It takes over below the model's switch boundary (0.875 "
                                              "T2V, 0.9 I2V). none: one model."}),
            "clip_vision": (_files("clip_vision", "CLIP vision files", True), {
                "default": "none", "tooltip": "Wan 2.1 I2V and FLF2V only: clip_vision_h from clip_vision/. Other "
                                              "models take no CLIP image features (setting it is an error)."}),
            "options": _options(),
        }}

    def load(self, denoiser, text_encoder, vae, device, dtype, weight_dtype, text_encoder_memory, denoiser_2="none",
             clip_vision="none", options=None):
        from ..models.files.family import WanFiles, is_fixture, load_wan_files
        files = WanFiles(_file("diffusion_models", denoiser), _file("text_encoders", text_encoder), _file("vae", vae),
                         _file("diffusion_models", denoiser_2), _file("clip_vision", clip_vision))
        dev, dt = _load_args(device, dtype, files.denoiser, files.denoiser_2, files.vae, files.clip_vision)
        return _with_options(load_wan_files(files, dev, dt, weight_dtype, text_encoder_memory,
                                            strict=not is_fixture(files.denoiser)), options)


class KinemaLoadCheckpoint:
    DESCRIPTION = ("Loads an all-in-one checkpoint from checkpoints/: LTX-2 with its Gemma 3 text_encoder file, or "
                   "AnimateDiff from SD 1.5 + a motion module (CLIP's tokenizer from an sd1_tokenizer folder). Same "
                   "output as Load Video Model.")
    CATEGORY = "Kinema/loaders"
    RETURN_TYPES = ("KINEMA_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded model: connect it to Text Encode, the sampler and Video Decode (LTX-2: also "
                       "Portrait Animate).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoint": (_files("checkpoints", "checkpoints"), {"tooltip":
                           "An all-in-one .safetensors from checkpoints/: LTX-2 (ltx-2-19b-dev / -distilled; needs "
                           "text_encoder) or SD 1.5 (v1-5-pruned-emaonly or any SD 1.5 fine-tune; needs "
                           "motion_module). The kind comes from the tensors; SDXL and SD 2 are refused with what to "
                           "use instead."}),
            "motion_module": (_files("animatediff_models", "motion modules"), {"tooltip":
                              "SD 1.5 checkpoints: an AnimateDiff SD 1.5 motion module from animatediff_models/ "
                              "(mm_sd_v15_v2, v3_sd15_mm, ...), .safetensors. Not used for LTX-2."}),
            "device": _device(),
            "dtype": _dtype(),
        }, "optional": {
            "text_encoder": (_files("text_encoders", "text encoders", True), {"default": "none", "tooltip":
                             "LTX-2 checkpoints: the Gemma 3 file from text_encoders/ (gemma_3_12B_it*.safetensors, "
                             "which carries its tokenizer). SD 1.5 checkpoints carry their text encoder: leave "
                             "none."}),
            "options": _options(),
        }}

    def load(self, checkpoint, motion_module, device, dtype, text_encoder="none", options=None):
        from ..models.files.ltx2 import is_ltx2_file
        from ..models.files.sd15 import load_animatediff_files
        path = _file("checkpoints", checkpoint)
        if is_ltx2_file(path):
            return _with_options(_ltx2_files("video", checkpoint, text_encoder, device, dtype), options)
        if text_encoder != "none":
            from ..models.checks import fail
            fail("text_encoder", "is only for LTX-2 checkpoints (an SD 1.5 checkpoint carries its CLIP text encoder)",
                 text_encoder, "Set text_encoder to none.")
        motion = _file("animatediff_models", motion_module)
        dev, dt = _load_args(device, dtype, path, motion)
        return _with_options(load_animatediff_files(path, motion, env.clip_tokenizer_dirs(), dev, dt), options)


def _lora_path(name: str):
    return env.find_model("loras", name, files=True)


class KinemaLoadLoRA:
    DESCRIPTION = ("Applies a LoRA (models/loras) to a video model, as ComfyUI's LoraLoaderModelOnly: kohya/ComfyUI, "
                   "diffusers/PEFT, lightx2v/CausVid few-step LoRAs for Wan, AnimateDiff motion LoRAs. Chain nodes to "
                   "stack LoRAs. The loaded model is shared, never changed: other nodes using it see no LoRA.")
    CATEGORY = "Kinema/loaders"
    RETURN_TYPES = ("KINEMA_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with this LoRA (and those before it) active when it samples; connect it to the "
                       "sampler, or to another Load LoRA.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = env.list_models("loras", files=True) or ["(no LoRAs found: put .safetensors files in models/loras)"]
        return {"required": {
            "model": ("KINEMA_MODEL", {"tooltip": "The video model (Load Video Model, or another Load LoRA)."}),
            "lora": (names, {"tooltip": "A .safetensors LoRA in models/loras. The node's text says how many of its "
                                        "keys matched; one matching nothing is an error naming the model it seems "
                                        "made for."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01, "tooltip":
                                   "How much of the LoRA's change to apply: 1 as trained, 0 none (the model passes "
                                   "through), negative inverts it."}),
        }}

    @classmethod
    def IS_CHANGED(cls, lora, **kwargs):
        return env.file_signature(_lora_path, lora)

    @classmethod
    def VALIDATE_INPUTS(cls, lora):
        return env.file_problem(_lora_path, lora)

    def load(self, model, lora, strength):
        from ..models.lora import load_lora
        view, report = load_lora(model, _lora_path(lora), strength)
        return {"ui": {"text": [report.text()]}, "result": (view,)}


def _upscale_models() -> list[str]:
    """Folders a registered learned-upscaler kind accepts (models.upscale.UPSCALERS), by their model_index.json,
    then the .safetensors files in latent_upscale_models/ that are upsamplers (tensor names read, never unpickled)."""
    from ..models.upscale import UPSCALERS, is_upscaler_file
    names = []
    for name in env.list_models("upscaler"):
        try:
            if UPSCALERS.detect(env.find_model("upscaler", name)) is not None:
                names.append(name)
        except (OSError, ValueError):
            continue
    for name in env.list_models("upscaler_files", files=True):
        try:
            path = env.find_model("upscaler_files", name, files=True)
            if name not in names and not _inside_folder_model(path, name) and is_upscaler_file(path):
                names.append(name)
        except (OSError, ValueError):
            continue
    return names


def _inside_folder_model(path, name: str) -> bool:
    """Whether a listed file is a part of a diffusers folder (a config.json beside it, or a model_index.json in a
    folder above it within the models folder): the folder is listed, not its parts."""
    if (path.parent / "config.json").is_file():
        return True
    folder = path.parent
    for _ in range(len(str(name).split("/")) - 1):
        if (folder / "model_index.json").is_file():
            return True
        folder = folder.parent
    return False


def _upscale_path(name: str):
    """A dropdown name -> the upscaler's folder, or its file in latent_upscale_models/ (a .safetensors name)."""
    if str(name).lower().endswith(".safetensors"):
        return env.find_model("upscaler_files", name, files=True)
    return env.find_model("upscaler", name)


class KinemaLoadUpscaleModel:
    DESCRIPTION = ("Loads a learned video upscaler for Video Upscale / Latent Upscale: folders in models/diffusers or "
                   "models/latent_upscale_models, and LTX-2 upsampler files (ComfyUI's) in latent_upscale_models. "
                   "Bundled: `kinema-tiny-upscaler` (2x, temporal layers, Kinema-Tiny's 32 -> 64 px clips).")
    CATEGORY = "Kinema/loaders"
    RETURN_TYPES = ("KINEMA_UPSCALER",)
    RETURN_NAMES = ("upscaler",)
    OUTPUT_TOOLTIPS = ("The upscaler: connect it to Video Upscale's `upscaler` input.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (_upscale_models() or ["(no upscale models found)"], {"tooltip":
                      "An upscaler folder (model_index.json) or file of a known kind: kinema-tiny-upscaler, LTX-2 "
                      "latent upsamplers (LTX2LatentUpsamplePipeline folders, or Lightricks' files such as "
                      "ltx-2-spatial-upscaler-x2-1.0.safetensors, which use the connected LTX-2 model's VAE)."}),
            "device": _device(),
            "dtype": _dtype(" Kinema-Tiny Upscaler always runs fp32."),
        }}

    def load(self, model, device, dtype):
        from ..models.upscale import load_upscaler
        path = _upscale_path(model)
        return (load_upscaler(path, *_load_args(device, dtype, path)),)


class KinemaModelOptions:
    DESCRIPTION = ("Memory and speed modes for a video model: fp8 weights (half of bf16's memory), block offload "
                   "(CUDA), attention backend, torch.compile of the repeated blocks, and the text encoder's and "
                   "VAE's precision. Connect to a loader's `options`; a change reloads the model.")
    CATEGORY = "Kinema/loaders"
    RETURN_TYPES = ("KINEMA_MODEL_OPTIONS",)
    RETURN_NAMES = ("options",)
    OUTPUT_TOOLTIPS = ("Connect to the `options` input of Load Video Model (or the Files / Checkpoint loaders).",)
    FUNCTION = "options"

    @classmethod
    def INPUT_TYPES(cls):
        from ..models.model_options import AttentionChoice, ComponentDtype, WeightStorage
        dtypes = [c.value for c in ComponentDtype]
        return {"required": {
            "weights": ([c.value for c in WeightStorage], {"default": "default", "tooltip":
                        "The denoiser's weights in memory. fp8_e4m3fn: 1 byte a weight (a scale per tensor), each "
                        "layer computes in the loader's dtype; norms and embeddings stay as loaded."}),
            "offload_blocks": ("INT", {"default": 0, "min": 0, "max": 1000, "tooltip":
                               "CUDA: keep this many transformer blocks on the GPU at a time and stream the rest "
                               "from pinned CPU memory, prefetching the next (group offloading). 0: everything on "
                               "the GPU. Other devices: no effect (a warning)."}),
            "attention": ([c.value for c in AttentionChoice], {"default": "default", "tooltip":
                          "Attention kernel via diffusers' dispatcher: native (torch SDPA), flash (flash-attn), "
                          "sage (SageAttention), xformers. Only installed ones work; others are an error naming the "
                          "package."}),
            "compile": ("BOOLEAN", {"default": False, "tooltip":
                        "torch.compile the repeated blocks (compiled once, reused by every block): faster steps "
                        "after a slow first one. Needs a working compiler toolchain (Triton on CUDA)."}),
        }, "optional": {
            "text_encoder_dtype": (dtypes, {"default": "auto", "tooltip":
                                   "The text encoder's precision, apart from the denoiser's. auto: as the loader "
                                   "loads it (the loader's dtype). bf16/fp16 take half of fp32's memory (UMT5-XXL: "
                                   "23 -> 11 GB); fp32 is the most exact. Models without a text encoder refuse "
                                   "anything but auto."}),
            "vae_dtype": (dtypes, {"default": "auto", "tooltip":
                          "The VAE's precision (LTX-2: video and audio VAEs and the vocoder), apart from the "
                          "denoiser's. auto: as loaded (Wan and LTX-2 keep fp32, AnimateDiff and Kinema-Tiny the "
                          "loader's dtype). bf16/fp16 halve its memory and speed decoding on GPUs, with slight "
                          "colour rounding."}),
        }}

    def options(self, weights, offload_blocks, attention, compile, text_encoder_dtype="auto", vae_dtype="auto"):
        from ..models.model_options import ModelOptions
        opts = ModelOptions(weights=weights, offload_blocks=offload_blocks, attention=attention, compile=compile,
                            text_encoder_dtype=text_encoder_dtype, vae_dtype=vae_dtype)
        opts.check()
        return (opts,)


NODE_CLASS_MAPPINGS = {"KinemaLoadVideoModel": KinemaLoadVideoModel, "KinemaLoadAudioModel": KinemaLoadAudioModel,
                       "KinemaLoadPortraitModel": KinemaLoadPortraitModel, "KinemaLoadLoRA": KinemaLoadLoRA,
                       "KinemaLoadModelFiles": KinemaLoadModelFiles, "KinemaLoadCheckpoint": KinemaLoadCheckpoint,
                       "KinemaLoadUpscaleModel": KinemaLoadUpscaleModel, "KinemaModelOptions": KinemaModelOptions}
NODE_DISPLAY_NAME_MAPPINGS = {"KinemaLoadVideoModel": "Load Video Model", "KinemaLoadAudioModel": "Load Audio Model",
                              "KinemaLoadPortraitModel": "Load Portrait Model", "KinemaLoadLoRA": "Load LoRA (Kinema)",
                              "KinemaLoadModelFiles": "Load Video Model (Files)",
                              "KinemaLoadCheckpoint": "Load Video Model (Checkpoint)",
                              "KinemaLoadUpscaleModel": "Load Upscale Model", "KinemaModelOptions": "Model Options"}
