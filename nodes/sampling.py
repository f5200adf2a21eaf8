"""The Temporal Sampler: Kinema's own denoising loop over any family."""
from __future__ import annotations

from ..models.families.base import SchedulerChoice
from ..models.windows import Anchor, FuseMode, FuseWeights, NoiseType
from . import widgets


def step_cache_input(what: str) -> tuple:
    """The optional `step_cache` input of a sampling node; `what` says what it speeds up there."""
    return ("KINEMA_STEP_CACHE", {"tooltip": f"Faster {what} from a Step Cache node: steps whose change is predicted "
                                             f"small reuse the last denoiser output. The first run of a model + "
                                             f"scheduler + steps calibrates it (a full run)."})


def cache_result(result: tuple, step_cache, stats) -> tuple | dict:
    """A node's return: `result` alone without a cache, else with the cache's calls (step_cache.Stats) as text."""
    return result if step_cache is None else {"ui": {"text": [stats.text()]}, "result": result}


class KinemaTemporalSampler:
    DESCRIPTION = ("Generates a video latent with Kinema's denoising loop: classifier-free guidance, seeded noise, "
                   "per-step progress and previews, interrupt. Works for every Kinema model family.")
    CATEGORY = "Kinema/sampling"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Video latents {'samples': (1, C, f, h, w)}: connect to Video Decode. LTX-2 also carries "
                       "the clip's sound: Decode Video Sound turns it into AUDIO.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("KINEMA_MODEL", {"tooltip": "The loaded video model."}),
            "positive": ("KINEMA_COND", {"tooltip": "What to show (Text Encode, optionally with a start image)."}),
            "negative": ("KINEMA_COND", {"tooltip": "What to avoid; used only when cfg > 1."}),
            "length": ("INT", {"default": 16, "min": 1, "max": 10000, "tooltip":
                               "Frames to generate. Wan: must be 4k+1 (9, 17, 33, 81); other values are rejected, "
                               "never rounded. AnimateDiff: any count (16 is what it was trained on)."}),
            "width": ("INT", {"default": 512, "min": 16, "max": 4096, "step": 16, "tooltip":
                              "Width in pixels; a multiple of 16 for Wan, of 8 for AnimateDiff (else an error)."}),
            "height": ("INT", {"default": 512, "min": 16, "max": 4096, "step": 16, "tooltip":
                               "Height in pixels; a multiple of 16 for Wan, of 8 for AnimateDiff (else an error)."}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 1000, "tooltip":
                              "Denoising steps. More is slower and usually cleaner; distilled models need 4-8."}),
            "cfg": ("FLOAT", {"default": 6.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip":
                              "Classifier-free guidance scale. 1.0 or less turns guidance off (one model call a "
                              "step, negative ignored); Wan ~5, AnimateDiff ~7.5."}),
            "seed": widgets.seed(),
            "scheduler": ([c.value for c in SchedulerChoice], {"default": "default", "tooltip":
                          "default: the model folder's own scheduler. flow_euler/flow_unipc for flow models (Wan); "
                          "ddim/euler/lcm for AnimateDiff. A scheduler of the other kind is an error."}),
            "shift": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip":
                                "Flow-matching timestep shift (Wan: 3 for 480p, 5 for 720p). 0 keeps the model's "
                                "configured value; ignored by non-flow schedulers."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                                  "1.0 starts from pure noise. Below 1 starts from `latent` re-noised to this "
                                  "strength (0.5 keeps the layout, 0.8 keeps little); needs `latent`."}),
        }, "optional": {
            "latent": ("LATENT", {"tooltip": "Start latents for denoise < 1 (from Video Encode); same length and "
                                             "size as set here."}),
            "context": ("KINEMA_CONTEXT", {"tooltip": "Long video: windows from a Context Options node. Without it "
                                                      "the whole clip is denoised at once."}),
            "fps": ("FLOAT", {"forceInput": True, "default": 24.0, "min": 0.01, "max": 1000.0, "tooltip":
                              "LTX-2: the clip's frames per second (positions in seconds; the sound lasts frames / "
                              "fps). Unconnected: 24, LTX-2's default. Save at the same fps. Other models ignore it."}),
            "step_cache": ("KINEMA_STEP_CACHE", {"tooltip": "Faster sampling from a Step Cache node: steps whose "
                                                            "change is predicted small reuse the last one. The first "
                                                            "run of a model + scheduler + steps calibrates it."}),
        }}

    def sample(self, model, positive, negative, length, width, height, steps, cfg, seed, scheduler, shift, denoise,
               latent=None, context=None, fps=None, step_cache=None):
        from fractions import Fraction

        from ..models import memory
        from ..models.joint import sample_clip
        from ..models.media import check_fps
        from ..models.sampling import SamplerSettings
        from ..models.step_cache import session
        settings = SamplerSettings(num_frames=length, height=height, width=width, num_inference_steps=steps,
                                   guidance_scale=cfg, seed=seed, scheduler=scheduler, shift=shift, denoise=denoise,
                                   frame_rate=check_fps("fps", fps) if fps is not None else Fraction(0))
        init = latent["samples"] if latent is not None else None
        model.check_settings(settings)                       # the size rules' errors come before the estimate's
        fits = memory.check_sampling(model, settings, context)  # refuses what cannot fit, before any step
        with session(step_cache, model, settings) as predict:
            clip = sample_clip(model, positive, negative, settings, init_latents=init,
                               init_audio=latent.get("kinema_audio") if latent is not None else None,
                               context=context, on_step=widgets.step_progress(steps, model), predict=predict)
        out = {"samples": clip.video.cpu(), "kinema_frames": length}
        if clip.audio_latents is not None:
            out.update(kinema_audio=clip.audio_latents.cpu(), kinema_fps=model.fps(settings))
        if step_cache is None:
            return (out,)
        return {"ui": {"text": [predict.stats.text(), fits]}, "result": (out,)}


class KinemaContextOptions:
    DESCRIPTION = ("Long video without retraining (FreeNoise): the sampler denoises overlapping windows of the "
                   "length the model was trained on, reschedules the noise so windows agree, fuses them with "
                   "position weights, and anchors colour and brightness so they do not drift.")
    CATEGORY = "Kinema/sampling"
    RETURN_TYPES = ("KINEMA_CONTEXT",)
    RETURN_NAMES = ("context",)
    OUTPUT_TOOLTIPS = ("Window settings for the Temporal Sampler's `context` input.",)
    FUNCTION = "options"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "context_length": ("INT", {"default": 16, "min": 1, "max": 10000, "tooltip":
                               "Frames per window: what the model was trained on (AnimateDiff 16, Wan 81). A clip "
                               "no longer than this is sampled in one window, exactly as without windows."}),
            "context_overlap": ("INT", {"default": 4, "min": 0, "max": 9999, "tooltip":
                                "Frames shared by neighbouring windows; must be below context_length. More overlap "
                                "blends windows more smoothly and costs more time (windows = frames / (length - "
                                "overlap)). Wan works in latent frames: overlap is divided by 4."}),
            "fuse": ([e.value for e in FuseWeights], {"default": "pyramid", "tooltip":
                     "How overlapping windows are weighted: pyramid (centre frames count most, FreeNoise's "
                     "default), flat (plain average), delayed_reverse_sawtooth (favours later windows)."}),
            "noise": ([e.value for e in NoiseType], {"default": "shuffle_context", "tooltip":
                      "shuffle_context: FreeNoise's rescheduling (one window of noise, locally shuffled over the "
                      "clip: windows stay coherent); repeat_context: the same noise repeated; random: fresh noise "
                      "everywhere (more variety, less coherence)."}),
            "mode": ([e.value for e in FuseMode], {"default": "auto", "tooltip":
                     "Where windows are fused. attention: inside the temporal attention layers (AnimateDiff; as "
                     "diffusers' FreeNoise). predictions: the denoiser runs per window and its outputs are fused "
                     "(every family, DiTs included). auto picks attention where available."}),
            "anchor": ([e.value for e in Anchor], {"default": "first", "tooltip":
                       "Drift control: pull each window's predicted colour/brightness statistics toward the first "
                       "window (first) or the running mean of earlier windows (running); none turns it off. "
                       "Applies to prediction fusion."}),
            "anchor_strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                                "0 leaves windows free, 1 matches the reference statistics exactly every step."}),
        }}

    def options(self, context_length, context_overlap, fuse, noise, mode, anchor, anchor_strength):
        from ..models.windows import ContextOptions
        return (ContextOptions(context_length=context_length, context_overlap=context_overlap, fuse=fuse,
                               noise=noise, mode=mode, anchor=anchor, anchor_strength=anchor_strength),)


class KinemaStepCache:
    DESCRIPTION = ("Step caching (MagCache's rule): the sampler skips denoiser calls whose change is predicted small "
                   "and reuses the last residual. Calibrated automatically by the first run of a model + scheduler "
                   "+ steps (stored beside the model); later runs skip. Per CFG branch and per window.")
    CATEGORY = "Kinema/sampling"
    RETURN_TYPES = ("KINEMA_STEP_CACHE",)
    RETURN_NAMES = ("step_cache",)
    OUTPUT_TOOLTIPS = ("Connect to the `step_cache` input of a sampling node: Temporal Sampler, Video Edit (sdedit), "
                       "Video Upscale and Latent Upscale (refine), Text to Audio, Video to Audio, Portrait Animate.",)
    FUNCTION = "options"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "threshold": ("FLOAT", {"default": 0.4, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip":
                          "How much accumulated change a skipped run of steps may carry: 0 never skips; 0.05 "
                          "careful (1.5x fewer calls), 0.1 balanced (2x), 0.4 fast (2.5x with max_skips 3 at 30 "
                          "steps on Kinema-Tiny). The sampler's text reports calls saved."}),
            "max_skips": ("INT", {"default": 3, "min": 0, "max": 100, "tooltip":
                          "Most steps skipped in a row before one must compute (MagCache's K)."}),
            "retention": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                          "Fraction of the first steps that always compute (they set the layout)."}),
        }}

    def options(self, threshold, max_skips, retention):
        from ..models.step_cache import StepCache
        cache = StepCache(threshold=threshold, max_skips=max_skips, retention=retention)
        cache.check()
        return (cache,)


NODE_CLASS_MAPPINGS = {"KinemaTemporalSampler": KinemaTemporalSampler, "KinemaContextOptions": KinemaContextOptions,
                       "KinemaStepCache": KinemaStepCache}
NODE_DISPLAY_NAME_MAPPINGS = {"KinemaTemporalSampler": "Temporal Sampler", "KinemaContextOptions": "Context Options",
                              "KinemaStepCache": "Step Cache"}
