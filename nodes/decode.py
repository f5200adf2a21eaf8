"""Latent <-> pixels through the model's VAE / temporal autoencoder: tiled and chunked within a memory budget,
streamed straight into a video file, with the latents saved first so a failed decode can be resumed."""
from __future__ import annotations

from . import env, widgets
from .sampling import cache_result, step_cache_input

_TILING = ("KINEMA_TILING", {"tooltip": "Optional memory budget and tile sizes from a Tiled VAE Options node. "
                                        "Unconnected: automatic (free GPU memory, or a quarter of the RAM on CPU)."})
_latents_path = widgets.input_resolver("latents file")
_DRAFT = ("BOOLEAN", {"default": False, "tooltip":
                      "Fast, lower-fidelity decode with the tiny decoder for this model from models/vae_approx "
                      "(taew2_1 for Wan 2.1 / 2.2 14B, taew2_2 for Wan 2.2 5B, from madebyollin/taehv), to look "
                      "through seeds before the full decode. Off: the model's own VAE."})


def _draft_chunks(model):
    """latents -> IMAGE chunks through the user's tiny decoder for `model`; a clear error when there is none."""
    from ..models import taehv
    from ..models.checks import fail
    dec = taehv.for_model(model, env.model_search_dirs("vae_approx"))
    if dec is None:
        folders = ", ".join(str(d) for d in env.model_search_dirs("vae_approx"))
        fail("draft", f"needs a tiny decoder for this {model.name} model ({model.latent_channels} latent channels) "
             "in a vae_approx folder", "none found", f"Put the model's TAEHV .safetensors file (taew2_1, taew2_2, "
             f"taehv, taeltx) into one of: {folders}; or turn draft off.")
    return dec.decode_chunks


def _latent_samples(model, latent):
    from ..models import vae_tiling
    vae_tiling.check_latents(model, latent["samples"])
    family = latent.get("kinema_family")
    if family is not None and family != model.name:
        from ..models.checks import fail
        fail("latent", f"was made by a {family} model", model.name, f"Connect the {family} model that made it.")
    return latent["samples"]


class KinemaTileOptions:
    DESCRIPTION = ("Memory budget and tile sizes for Video Decode, Video Encode and Decode And Save Video. Defaults "
                   "(all 0) are automatic: the whole frame when it fits, else the largest tiles that do.")
    CATEGORY = "Kinema/decode"
    RETURN_TYPES = ("KINEMA_TILING",)
    RETURN_NAMES = ("tiling",)
    OUTPUT_TOOLTIPS = ("Tiling settings: connect to the `tiling` input of a decode or encode node.",)
    FUNCTION = "options"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "memory_mb": ("INT", {"default": 0, "min": 0, "max": 1048576, "step": 256, "tooltip":
                                  "MB the VAE may use besides its weights. 0: 90% of the free GPU memory, or on CPU "
                                  "a quarter of the RAM (at most 8192; not the free RAM, so the tiles and the "
                                  "pixels do not change with the load). Too small still decodes, near the least "
                                  "memory it can, with a warning naming the MB to set."}),
            "tile_size": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8, "tooltip":
                                  "Tile side in pixels (a multiple of the VAE's 8 or 16 px cell; rounded down to "
                                  "whole cells). 0: chosen from the memory budget. At least the frame size: no "
                                  "tiling, no seams."}),
            "tile_overlap": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 8, "tooltip":
                                     "Pixels shared by neighbouring tiles, cross-faded. 0: a quarter of the tile. "
                                     "More overlap hides seams better and costs time."}),
            "chunk_frames": ("INT", {"default": 0, "min": 0, "max": 256, "tooltip":
                                     "Latent frames per VAE call (Wan: each is 4 frames; its first frame always goes "
                                     "alone). 0: the largest calls that fit the budget (at most 8 for Wan, 16 for "
                                     "AnimateDiff; on CPU about 16 frames of 128x128). Chunks are exact up to float rounding "
                                     "(< 1e-6): they change memory and speed, not the picture."}),
        }}

    def options(self, memory_mb, tile_size, tile_overlap, chunk_frames):
        from ..models.vae_tiling import TileSettings
        settings = TileSettings(memory_mb=memory_mb, tile_px=tile_size, overlap_px=tile_overlap,
                                chunk_frames=chunk_frames)
        settings.check()
        return (settings,)


class KinemaVideoDecode:
    DESCRIPTION = ("Decodes video latents to frames with the model's VAE (Wan's causal 3D VAE, AnimateDiff's per-frame "
                   "VAE), in chunks and tiles that fit the memory. For long videos use Decode And Save Video, which "
                   "never holds all frames in memory.")
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
        }, "optional": {"tiling": _TILING, "draft": _DRAFT}}

    def decode(self, model, latent, tiling=None, draft=False):
        from ..models import vae_tiling
        samples = _latent_samples(model, latent)
        total = model.pixel_frames(samples.shape[2])
        progress = env.Progress(total)
        with vae_tiling.calls_reported(lambda k, calls: progress(k * total // calls)):
            chunks = _draft_chunks(model)(samples) if draft else vae_tiling.stream_decode(model, samples, tiling)
            return (vae_tiling.join_chunks(chunks),)


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
        }, "optional": {"tiling": _TILING}}

    def encode(self, model, images, length, tiling=None):
        from ..models.checks import fail
        from ..models.edit import encode_video
        if images.shape[0] == 1:
            images = images.expand(length, *images.shape[1:])
        elif images.shape[0] != length:
            fail("images", f"must have 1 or `length` ({length}) frames", images.shape[0],
                 "Set length to the clip's frame count.")
        return ({"samples": encode_video(model, images, tiling).cpu(), "kinema_frames": length},)


class KinemaDecodeAndSave:
    DESCRIPTION = ("Decodes video latents straight into a video file, chunk by chunk: long videos need not sit in "
                   "memory (tiles going one by one wait in a temporary file beside it). The latents are saved "
                   "beside the video first (.latents.safetensors): if the decode fails, resume it with Load Latent "
                   "or `kinema decode`.")
    CATEGORY = "Kinema/decode"
    RETURN_TYPES = ()
    RETURN_NAMES = ()
    OUTPUT_TOOLTIPS = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        from ..models import media
        return {
            "required": {
                "model": ("KINEMA_MODEL", {"tooltip": "The model whose VAE decodes (the one that sampled)."}),
                "latent": ("LATENT", {"tooltip": "Video latents from the Temporal Sampler or Load Latent, "
                                                 "(1, C, f, h, w)."}),
                "fps": widgets.video_fps(),
                "format": ([f.value for f in media.VideoFormat], {"default": "mp4", "tooltip":
                           "mp4: H.264 + AAC. webm: VP9 + Opus. webp: looping, no audio. gif: looping, 256 "
                           "colours, no audio. All are written frame by frame as the decode goes."}),
                "filename_prefix": widgets.filename_prefix("Kinema/video"),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Sound for mp4/webm, trimmed or padded with silence to exactly "
                                               "frames / fps seconds; both streams start at 0."}),
                "tiling": _TILING,
                "keep_latents": ("BOOLEAN", {"default": False, "tooltip":
                                             "Keep prefix_00001_.latents.safetensors beside the video after a "
                                             "successful decode (off: deleted once the video is complete; after a "
                                             "failure it always stays). Resume or redo the decode with `kinema "
                                             "decode FILE.latents.safetensors`, or Load Latent into this node."}),
                "draft": _DRAFT,
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, model, latent, fps, format, filename_prefix, audio=None, tiling=None, keep_latents=False,
             draft=False, prompt=None, extra_pnginfo=None):
        from ..models import media, vae_tiling
        samples = _latent_samples(model, latent)
        fmt = media.video_format(format)
        root = env.output_dir()
        path = media.next_output_path(root, filename_prefix, fmt.value)
        progress = env.Progress(model.pixel_frames(samples.shape[2]))
        vae_tiling.decode_and_save(model, samples, path, fps, fmt, audio=audio, settings=tiling,
                                   keep_latents=keep_latents, metadata=widgets.save_tags(prompt, extra_pnginfo),
                                   on_frames=lambda done, total: progress(done),
                                   decoder=_draft_chunks(model) if draft else None)
        return {"ui": widgets.video_ui(widgets.saved_entry(path, root, "output"), fmt), "result": ()}


def _latent_files() -> list[str]:
    """Latents files for the dropdown: the input folders' own, then the output folder's tagged " [output]"."""
    from ..models.vae_tiling import LATENTS_SUFFIX
    found: list[str] = []
    for folder in env.input_search_dirs():
        if folder.is_dir():
            found += sorted(p.relative_to(folder).as_posix() for p in folder.rglob(f"*{LATENTS_SUFFIX}")
                            if not p.name.startswith("."))
    out = env.output_dir()
    if out.is_dir():
        found += sorted(p.relative_to(out).as_posix() + widgets.OUTPUT_TAG for p in out.rglob(f"*{LATENTS_SUFFIX}")
                        if not p.name.startswith("."))
    return found


class KinemaDecodeVideoSound:
    DESCRIPTION = ("The sound an LTX-2 Temporal Sampler made with the picture (in the same pass), decoded by the "
                   "model's audio VAE and vocoder: exactly frames / fps seconds, for Decode And Save Video's audio.")
    CATEGORY = "Kinema/decode"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("The clip's sound {'waveform': (1, channels, samples), 'sample_rate'}.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("KINEMA_MODEL", {"tooltip": "The LTX-2 model that sampled the latent."}),
            "latent": ("LATENT", {"tooltip": "The Temporal Sampler's latent (it carries the sound's latents)."}),
        }}

    def decode(self, model, latent):
        from ..models.joint import decode_sound
        return (decode_sound(model, latent),)


class KinemaLatentUpscale:
    DESCRIPTION = ("LTX-2's two-stage upscale: the latent upsampler doubles width and height (and the frames, if "
                   "it has temporal layers) in latent space, then the same LTX-2 model refines at the new size with "
                   "a short pass. The clip's sound comes along.")
    CATEGORY = "Kinema/latent"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The latent at 2x (1, C, f, 2h, 2w), with its sound: connect to Video Decode.",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("KINEMA_MODEL", {"tooltip": "The LTX-2 model that sampled the latent (it refines)."}),
            "upscaler": ("KINEMA_UPSCALER", {"tooltip": "An LTX-2 latent upsampler (Load Upscale Model)."}),
            "latent": ("LATENT", {"tooltip": "The Temporal Sampler's LTX-2 latent."}),
            "positive": ("KINEMA_COND", {"tooltip": "The clip's prompt for the refine."}),
            "negative": ("KINEMA_COND", {"tooltip": "What to avoid in the refine; used when cfg > 1."}),
            "steps": ("INT", {"default": 8, "min": 1, "max": 1000, "tooltip":
                              "Steps of the full schedule; the refine runs the last steps x denoise of them."}),
            "cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip":
                              "Guidance of the refine; 1 or less turns it off (distilled LTX-2: 1)."}),
            "seed": widgets.seed(),
            "denoise": ("FLOAT", {"default": 0.375, "min": 0.0, "max": 1.0, "step": 0.005, "tooltip":
                                  "How much the refine redraws. Distilled LTX-2 at 8 steps: 0.375 runs its stage-2 "
                                  "sigmas (0.909, 0.725, 0.422). 0: upsample only."}),
        }, "optional": {
            "step_cache": step_cache_input("refine"),
        }}

    def upscale(self, model, upscaler, latent, positive, negative, steps, cfg, seed, denoise, step_cache=None):
        from ..models.families.ltx2_upsample import latent_upscale
        from ..models.step_cache import Stats
        stats = Stats()
        out = latent_upscale(model, upscaler, latent, positive, negative, steps, cfg, seed, denoise,
                             on_step=widgets.step_progress(steps, model), step_cache=step_cache, cache_stats=stats)
        return cache_result((out,), step_cache, stats)


class KinemaLoadLatent:
    DESCRIPTION = ("Loads latents saved by Decode And Save Video (prefix_00001_.latents.safetensors, in the output "
                   "folder, or copied to the input folder), to decode them again, e.g. after a failed decode. "
                   "Load the model named in the file with Load Video Model.")
    CATEGORY = "Kinema/latent"
    RETURN_TYPES = ("LATENT", "FLOAT")
    RETURN_NAMES = ("latent", "fps")
    OUTPUT_TOOLTIPS = ("The saved video latents (1, C, f, h, w), tagged with the family that made them.",
                       "The video's frames per second as saved; 0 when the file does not know it.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        files = _latent_files() or ["(no .latents.safetensors files found)"]
        return {"required": {"latents": (files, {"tooltip":
                                                 "A .latents.safetensors file: from the input folder, or marked "
                                                 "[output] from the output folder. Its metadata names the model "
                                                 "folder, frame count and fps."})}}

    @classmethod
    def IS_CHANGED(cls, latents):
        return env.file_signature(_latents_path, latents)

    @classmethod
    def VALIDATE_INPUTS(cls, latents):
        return env.file_problem(_latents_path, latents)

    def load(self, latents):
        from ..models import vae_tiling
        samples, info, _audio = vae_tiling.load_latents(_latents_path(latents))
        return ({"samples": samples, "kinema_frames": info.frames, "kinema_family": info.family},
                float(info.fps or 0.0))


NODE_CLASS_MAPPINGS = {
    "KinemaVideoDecode": KinemaVideoDecode,
    "KinemaVideoEncode": KinemaVideoEncode,
    "KinemaDecodeAndSave": KinemaDecodeAndSave,
    "KinemaLoadLatent": KinemaLoadLatent,
    "KinemaTileOptions": KinemaTileOptions,
    "KinemaDecodeVideoSound": KinemaDecodeVideoSound,
    "KinemaLatentUpscale": KinemaLatentUpscale,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "KinemaVideoDecode": "Video Decode",
    "KinemaVideoEncode": "Video Encode",
    "KinemaDecodeAndSave": "Decode And Save Video",
    "KinemaLoadLatent": "Load Latent",
    "KinemaTileOptions": "Tiled VAE Options",
    "KinemaDecodeVideoSound": "Decode Video Sound",
    "KinemaLatentUpscale": "Latent Upscale",
}
