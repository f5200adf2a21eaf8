"""Editing nodes: Video Edit (SDEdit / FlowEdit, masked), Reference Image, Video Upscale (bicubic or learned)."""
from __future__ import annotations

from ..models.edit import EditMethod, UpscaleFactor
from . import widgets
from .sampling import cache_result, step_cache_input


def _steps() -> tuple:
    return ("INT", {"default": 20, "min": 1, "max": 1000, "tooltip":
                    "Steps of the full schedule; only strength x steps of them run (strength 0.6 with 20 steps runs "
                    "12). At least one must run, else an error names the fix."})


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
            "steps": _steps(),
            "cfg": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip":
                              "Guidance of the edit prompt; 1 or less turns guidance off (negative ignored)."}),
            "source_cfg": ("FLOAT", {"default": 1.5, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                                     "tooltip": "flowedit: guidance of the source prompt (1.5-3.5 usual); "
                                                "ignored by sdedit."}),
            "seed": widgets.seed(),
        }, "optional": {
            "source_prompt": ("KINEMA_COND", {"tooltip": "flowedit: what the source shows ('a red circle moves "
                                                         "right'); required there, ignored by sdedit."}),
            "mask": ("MASK", {"tooltip": "Where to edit, 1 = edit, 0 = keep (1 or F frames at the video's size). "
                                         "Outside it the output is exactly the source pixels."}),
            "step_cache": ("KINEMA_STEP_CACHE", {"tooltip": "sdedit: skip denoiser calls whose change is predicted "
                                                            "small (Step Cache node). flowedit refuses it."}),
        }}

    def edit(self, model, images, positive, negative, method, strength, steps, cfg, source_cfg, seed,
             source_prompt=None, mask=None, step_cache=None):
        from ..models.edit import EditSettings, edit_video
        settings = EditSettings(method=method, strength=strength, num_inference_steps=steps, guidance_scale=cfg,
                                source_guidance_scale=source_cfg, seed=seed)
        return (edit_video(model, images, positive, negative, settings, source_prompt, mask,
                           on_step=widgets.step_progress(steps, model), step_cache=step_cache),)


class KinemaReferenceImage:
    DESCRIPTION = ("Personalization: a reference image of the subject (a face, a mascot, an object) keeps its look "
                   "through the clip. Wan VACE takes it as a VACE reference (subject anywhere, the prompt sets the "
                   "scene); Wan I2V and Kinema-Tiny as their image condition. Connect to the sampler's positive.")
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
                                   "0: no reference (exactly plain text-to-video). Wan VACE: conditioning_scale "
                                   "of every VACE layer (1 = as trained, diffusers' default; lower lets the prompt "
                                   "decide more). Wan I2V, Kinema-Tiny: 1 gives the reference as it is; lower fades "
                                   "it toward its mean colour."}),
        }}

    def attach(self, model, positive, image, strength):
        from ..models.edit import reference_condition
        return (reference_condition(model, positive, image, strength),)


class KinemaVideoUpscale:
    DESCRIPTION = ("Upscales a video 2x or 4x: a learned upscaler when `upscaler` is connected (Load Upscale Model; "
                   "kinema-tiny-upscaler for Kinema-Tiny clips), else bicubic; then, with a model, a low-strength "
                   "refine at the new size through its temporal layers, on tiles so memory stays flat.")
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
            "steps": _steps(),
            "cfg": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip":
                              "Guidance of the refine prompt; 1 or less turns guidance off."}),
            "seed": widgets.seed(),
            "tile_size": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip":
                                  "Denoiser tile side in latent cells (pixels / 8 for Wan and AnimateDiff); tiles "
                                  "overlap by 4 cells and are cross-faded. 0: the whole frame at once. Must exceed "
                                  "8 when set."}),
        }, "optional": {
            "model": ("KINEMA_MODEL", {"tooltip": "Refines after resizing (Wan, AnimateDiff). Unconnected: resize "
                                                  "only."}),
            "positive": ("KINEMA_COND", {"tooltip": "The clip's prompt for the refine (required with a model)."}),
            "negative": ("KINEMA_COND", {"tooltip": "What to avoid in the refine; used when cfg > 1."}),
            "upscaler": ("KINEMA_UPSCALER", {"tooltip": "A learned upscaler (Load Upscale Model) used instead of "
                                                        "bicubic; factor must be a power of its scale (x4 runs a "
                                                        "2x upscaler twice). Unconnected: bicubic."}),
            "step_cache": step_cache_input("refine (with a model and strength > 0)"),
        }}

    def upscale(self, images, factor, strength, steps, cfg, seed, tile_size, model=None, positive=None,
                negative=None, upscaler=None, step_cache=None):
        from ..models.edit import UpscaleSettings, upscale_video
        from ..models.step_cache import Stats
        settings = UpscaleSettings(factor=factor, strength=strength, num_inference_steps=steps, guidance_scale=cfg,
                                   seed=seed, tile=tile_size)
        on_step = widgets.step_progress(steps, model) if model is not None else None
        on_chunk = widgets.chunk_progress() if upscaler is not None else None
        stats = Stats()
        out = upscale_video(images, settings, model, positive, negative, on_step=on_step, upscaler=upscaler,
                            on_chunk=on_chunk, step_cache=step_cache, cache_stats=stats)
        return cache_result((out,), step_cache, stats)


NODE_CLASS_MAPPINGS = {
    "KinemaVideoEdit": KinemaVideoEdit,
    "KinemaReferenceImage": KinemaReferenceImage,
    "KinemaVideoUpscale": KinemaVideoUpscale,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "KinemaVideoEdit": "Video Edit",
    "KinemaReferenceImage": "Reference Image",
    "KinemaVideoUpscale": "Video Upscale",
}
