"""Editing nodes: Load Video, Video Edit (SDEdit / FlowEdit, masked), Reference Image, Video Upscale."""
from __future__ import annotations


from ..models.edit import EditMethod, UpscaleFactor
from ..models.video_io import VIDEO_EXTENSIONS
from . import env

MAX_SEED = 0xFFFFFFFFFFFFFFFF
_SEED = ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True, "tooltip":
                 "Noise seed. Same seed, settings, model, device, dtype, CPU threads: same result, bit for bit; "
                 "other thread counts: frames within 0.001/255 (README, Reproducibility)."})
_STEPS_TIP = ("Steps of the full schedule; only strength x steps of them run (strength 0.6 with 20 steps runs 12). "
              "At least one must run, else an error names the fix.")


def _progress(model, steps):
    from .sampling import step_progress
    return step_progress(model, steps)


class KinemaLoadVideo:
    DESCRIPTION = ("Loads a video from the input folder (mp4, webm, mov, mkv, animated gif or webp): a frame range, "
                   "optionally resized, streamed so frames outside the range are never kept. Gives frames and fps.")
    CATEGORY = "Kinema/io"
    RETURN_TYPES = ("IMAGE", "FLOAT", "INT")
    RETURN_NAMES = ("images", "fps", "frame_count")
    OUTPUT_TOOLTIPS = ("Frames (F, H, W, 3) float 0..1 (alpha is dropped).",
                       "The file's frames per second: connect to Save Video to keep the timing.",
                       "How many frames were loaded (F).")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        files = sorted({p.name for folder in env.input_search_dirs() if folder.is_dir()
                        for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                        and p.suffix.lower() in VIDEO_EXTENSIONS})
        return {"required": {
            "start_frame": ("INT", {"default": 0, "min": 0, "max": 1000000, "tooltip":
                                    "First frame to load (0 = the first). Past the end is an error."}),
            "frame_count": ("INT", {"default": 0, "min": 0, "max": 1000000, "tooltip":
                                    "Frames to load from start_frame; 0 loads to the end. More than the file has is "
                                    "an error (never padded). Wan needs 4k+1 (17, 81), Kinema-Tiny 9."}),
            "width": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 8, "tooltip":
                              "Resize to this width in pixels; 0 keeps it (or follows the aspect ratio when height "
                              "is set, rounded to 8). The frame is centre-cropped to the new aspect, never "
                              "stretched."}),
            "height": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 8, "tooltip":
                               "Resize to this height in pixels; 0 keeps it (or follows the aspect ratio when width "
                               "is set, rounded to 8)."}),
            "video": (files, {"video_upload": True, "tooltip":
                              "A video in the input folder (mp4, webm, mov, mkv, gif, webp). A missing file is an "
                              "error before the run starts."}),
        }}

    @classmethod
    def IS_CHANGED(cls, video, **_):
        return env.file_signature(env.find_input, video)

    @classmethod
    def VALIDATE_INPUTS(cls, video):
        return env.file_problem(env.find_input, video)

    def load(self, video, start_frame, frame_count, width, height):
        from ..models.video_io import read_video
        frames, fps = read_video(env.find_input(video), start_frame, frame_count, height, width)
        return frames, float(fps), int(frames.shape[0])


class KinemaVideoEdit:
    DESCRIPTION = ("Edits a video from a prompt describing the result ('a blue circle moves right', 'the street "
                   "covered in snow'): same length, size and fps. sdedit re-noises and re-draws (every model); "
                   "flowedit moves only what the prompts disagree on (flow models: Wan, Kinema-Tiny). A mask limits "
                   "the edit to a region.")
    CATEGORY = "Kinema/edit"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The edited frames (F, H, W, 3), as many as the source; pixels outside the mask are the "
                       "source's.",)
    FUNCTION = "edit"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("KINEMA_MODEL", {"tooltip": "The video model that edits (its VAE encodes the source)."}),
            "images": ("IMAGE", {"tooltip": "The source video (F, H, W, 3): a length and size the model makes "
                                            "(Kinema-Tiny 9 frames at 32x32; Wan 4k+1 frames, multiples of 16)."}),
            "positive": ("KINEMA_COND", {"tooltip": "The edited clip described in full (the instruction applied): "
                                                    "'a blue circle moves right', not 'make it blue'."}),
            "negative": ("KINEMA_COND", {"tooltip": "What to avoid; used only when cfg > 1."}),
            "method": ([m.value for m in EditMethod], {"default": "sdedit", "tooltip":
                       "sdedit: re-noise to strength and denoise with the new prompt (every model; strength "
                       "0.5-0.8). flowedit: inversion-free flow edit along v(target) - v(source), keeps more of the "
                       "unedited content (flow models only, needs source_prompt; strength 0.6-0.9)."}),
            "strength": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                                   "How far the edit may move away from the source: 0 returns the source (after "
                                   "the VAE round trip), 1 redraws everything (sdedit: plain text-to-video)."}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 1000, "tooltip": _STEPS_TIP}),
            "cfg": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip":
                              "Guidance of the edit prompt; 1 or less turns guidance off (negative ignored)."}),
            "source_cfg": ("FLOAT", {"default": 1.5, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                                     "tooltip": "flowedit: guidance of the source prompt (1.5-3.5 usual); "
                                                "ignored by sdedit."}),
            "seed": _SEED,
        }, "optional": {
            "source_prompt": ("KINEMA_COND", {"tooltip": "flowedit: what the source shows ('a red circle moves "
                                                         "right'); required there, ignored by sdedit."}),
            "mask": ("MASK", {"tooltip": "Where to edit, 1 = edit, 0 = keep (1 or F frames at the video's size). "
                                         "Outside it the output is exactly the source pixels."}),
        }}

    def edit(self, model, images, positive, negative, method, strength, steps, cfg, source_cfg, seed,
             source_prompt=None, mask=None):
        from ..models.edit import EditSettings, edit_video
        settings = EditSettings(method=method, strength=strength, num_inference_steps=steps, guidance_scale=cfg,
                                source_guidance_scale=source_cfg, seed=seed)
        return (edit_video(model, images, positive, negative, settings, source_prompt, mask,
                           on_step=_progress(model, steps)),)


class KinemaReferenceImage:
    DESCRIPTION = ("Personalization: a reference image of the subject (a face, a mascot, an object) conditions the "
                   "clip so the model keeps its look throughout. Wan VACE takes it as a VACE reference image (the "
                   "subject anywhere in the clip, the prompt sets the scene); Wan I2V and Kinema-Tiny as their image "
                   "condition. Connect the result to the sampler's positive.")
    CATEGORY = "Kinema/edit"
    RETURN_TYPES = ("KINEMA_COND",)
    RETURN_NAMES = ("positive",)
    OUTPUT_TOOLTIPS = ("The prompt with the reference attached: connect to the Temporal Sampler's positive.",)
    FUNCTION = "attach"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("KINEMA_MODEL", {"tooltip": "The model that will sample: Wan VACE (reference images), or an "
                                                  "image-to-video model (Wan I2V, kinema-tiny-video); others are an "
                                                  "error naming the fix."}),
            "positive": ("KINEMA_COND", {"tooltip": "The prompt (Text Encode); describe the action, the reference "
                                                    "supplies the look."}),
            "image": ("IMAGE", {"tooltip": "The reference (1, H, W, 3), any size (resized to the clip's). Put the "
                                           "subject on the kind of background the model knows. Wan VACE: fitted "
                                           "into the frame on white; every image of a batch is a reference, and "
                                           "chained Reference Image nodes add theirs."}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                                   "0: no reference (plain text-to-video, exactly). Wan VACE: VACE's "
                                   "conditioning_scale on every VACE layer (1 = as trained, the diffusers default; "
                                   "lower weakens the reference and the VACE hints so the prompt decides more). "
                                   "Wan I2V, Kinema-Tiny: 1 gives the reference as it is; lower values fade it "
                                   "toward its mean colour."}),
        }}

    def attach(self, model, positive, image, strength):
        from ..models.edit import reference_condition
        return (reference_condition(model, positive, image, strength),)


class KinemaVideoUpscale:
    DESCRIPTION = ("Upscales a video 2x or 4x: an antialiased bicubic resize, then (with a model) a low-strength "
                   "re-noise and refine at the new size through the model's temporal layers, on tiles so memory "
                   "stays flat. Kinema-Tiny makes 32x32 only: leave `model` unconnected for it (resize only).")
    CATEGORY = "Kinema/edit"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The upscaled frames (F, factor x H, factor x W, 3), as many as the input.",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Frames (F, H, W, 3) 0..1; with a model, the upscaled size and length "
                                            "must be ones it makes (Wan: 4k+1 frames, multiples of 16)."}),
            "factor": ([f.value for f in UpscaleFactor], {"default": "x2", "tooltip":
                       "x2 doubles width and height, x4 quadruples them."}),
            "strength": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                                   "Refine strength (with a model): 0.2-0.4 adds detail and keeps the content; 0 "
                                   "resizes only; high values redraw the clip."}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 1000, "tooltip": _STEPS_TIP}),
            "cfg": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip":
                              "Guidance of the refine prompt; 1 or less turns guidance off."}),
            "seed": _SEED,
            "tile_size": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip":
                                  "Denoiser tile side in latent cells (pixels / 8 for Wan and AnimateDiff); tiles "
                                  "overlap by 4 cells and are cross-faded. 0: the whole frame at once. Must exceed "
                                  "8 when set."}),
        }, "optional": {
            "model": ("KINEMA_MODEL", {"tooltip": "Refines after resizing (Wan, AnimateDiff). Unconnected: resize "
                                                  "only."}),
            "positive": ("KINEMA_COND", {"tooltip": "The clip's prompt for the refine (required with a model)."}),
            "negative": ("KINEMA_COND", {"tooltip": "What to avoid in the refine; used when cfg > 1."}),
        }}

    def upscale(self, images, factor, strength, steps, cfg, seed, tile_size, model=None, positive=None,
                negative=None):
        from ..models.edit import UpscaleSettings, upscale_video
        settings = UpscaleSettings(factor=factor, strength=strength, num_inference_steps=steps, guidance_scale=cfg,
                                   seed=seed, tile=tile_size)
        on_step = _progress(model, steps) if model is not None else None
        return (upscale_video(images, settings, model, positive, negative, on_step=on_step),)


NODE_CLASS_MAPPINGS = {
    "KinemaLoadVideo": KinemaLoadVideo,
    "KinemaVideoEdit": KinemaVideoEdit,
    "KinemaReferenceImage": KinemaReferenceImage,
    "KinemaVideoUpscale": KinemaVideoUpscale,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "KinemaLoadVideo": "Load Video (Kinema)",
    "KinemaVideoEdit": "Video Edit",
    "KinemaReferenceImage": "Reference Image",
    "KinemaVideoUpscale": "Video Upscale",
}
