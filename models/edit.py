"""Video editing, reference conditioning and upscaling over the family protocol (families/base.py).

Three things Movie Gen and Video LDM do on top of generation, built from the same pieces as the sampler (a
family's prepare / predict / finish and its VAE) so that they work for every family at once:

- Edit a source clip from a prompt describing the result ("a blue circle moves right"):
    sdedit:   re-noise the source latents to `strength` and denoise them with the new prompt (SDEdit; every
              family). Without a mask this is exactly the Temporal Sampler at denoise = strength.
    flowedit: inversion-free flow edit (FlowEdit, Kulikov et al. 2024; flow-matching families): the clip is moved
              along the difference of the target and source velocity fields, so content the two prompts agree
              on stays where it is. strength 0 returns the source latents unchanged.
  A MASK (1 = edit) limits the edit: outside it the latents follow the source at every step and the decoded
  pixels are pasted back from the source, so they do not change at all.
- Reference conditioning: a reference image of the subject becomes the image condition of an image-to-video
  family (Kinema-Tiny, Wan I2V), which carries its look through the clip; `strength` fades it toward its mean.
- Upscale: frames are enlarged (antialiased bicubic, or a learned upscaler with temporal layers from
  models/upscale.py: Video LDM's upsampler) and, with a model, re-noised at a low strength and refined at the new
  size through the same loop, with the denoiser run on overlapping latent tiles so its memory stays flat however
  large the frames get.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch.nn import functional as F

from . import sampling
from . import step_cache as step_cache_mod
from .checks import check_choice, check_range, fail
from .families.base import Conditioning, VideoFamily
from .sampling import Predict, SamplerSettings, StepCallback


class EditMethod(str, Enum):
    """Video Edit's `method` values. Saved in workflows: never rename a value."""
    SDEDIT = "sdedit"          # re-noise to strength, denoise with the new prompt (every family)
    FLOWEDIT = "flowedit"      # inversion-free flow edit along v(target) - v(source) (flow-matching families)


class UpscaleFactor(str, Enum):
    """Video Upscale's `factor` values. Saved in workflows: never rename a value."""
    X2 = "x2"
    X4 = "x4"


@dataclass(frozen=True)
class EditSettings:
    """What Video Edit asks for (diffusers names)."""
    method: str = EditMethod.SDEDIT.value
    strength: float = 0.7                 # 0 keeps the source (after the VAE round trip), 1 ignores it (sdedit)
    num_inference_steps: int = 20         # steps of the full schedule; strength x steps of them run
    guidance_scale: float = 5.0           # target prompt guidance
    source_guidance_scale: float = 1.5    # flowedit: guidance of the source prompt's velocity
    seed: int = 0
    scheduler: str = "default"
    shift: float = 0.0

    def check(self) -> None:
        check_choice("method", self.method, [m.value for m in EditMethod])
        check_range("strength", self.strength, 0.0, 1.0)
        check_range("steps", self.num_inference_steps, 1, 10_000)
        check_range("cfg", self.guidance_scale, 0.0, 100.0)
        check_range("source_cfg", self.source_guidance_scale, 0.0, 100.0)


# ---- masks -----------------------------------------------------------------------------------------------------
def latent_mask(model: VideoFamily, mask: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A pixel MASK (F or 1, H, W), 1 = edit, -> (1, 1, f, h, w) on the latent grid of `shape` (1, C, f, h, w).

    A latent cell is edited when any pixel it covers is: max-pooled over its spatial cell and over the frames it
    encodes (a causal VAE's latent frame 0 is frame 0 alone, latent frame k frames r(k-1)+1 .. rk)."""
    _, _, f, h, w = shape
    m = mask.float()
    if m.ndim == 2:
        m = m[None]
    m = F.adaptive_max_pool2d(m[:, None], (h, w))[:, 0]                      # (F, h, w)
    r = model.temporal_ratio
    if m.shape[0] == 1:
        return m.expand(f, h, w)[None, None].clone()
    if r > 1:
        groups = [m[:1]] + [m[1 + r * (k - 1): 1 + r * k] for k in range(1, f)]
    else:
        groups = [m[k: k + 1] for k in range(f)]
    return torch.stack([g.amax(0) for g in groups])[None, None]              # (1, 1, f, h, w)


def check_edit_mask(mask: torch.Tensor | None, frames: int, height: int, width: int) -> torch.Tensor | None:
    """MASK (1 or F, H, W) 0..1 matching the video, or None."""
    if mask is None:
        return None
    m = mask if mask.ndim == 3 else (mask[None] if mask.ndim == 2 else None)
    if m is None or tuple(m.shape[1:]) != (height, width) or m.shape[0] not in (1, frames):
        fail("mask", f"must be a MASK (1 or {frames}, {height}, {width}) matching the source video",
             tuple(getattr(mask, "shape", ())), "Resize the mask with the video (Resize Video), or draw it at the "
             "video's size.")
    return m.float().clamp(0, 1)


# ---- the edit loops --------------------------------------------------------------------------------------------
def _sampler_settings(model: VideoFamily, latents: torch.Tensor, s: EditSettings) -> SamplerSettings:
    """SamplerSettings for the clip the latents hold (frames and pixels from the latent grid)."""
    _, _, f, h, w = latents.shape
    return SamplerSettings(num_frames=model.pixel_frames(f), height=h * model.spatial_ratio,
                           width=w * model.spatial_ratio,
                           num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale, seed=s.seed,
                           scheduler=s.scheduler, shift=s.shift, denoise=s.strength)


def sdedit(model: VideoFamily, source: torch.Tensor, positive: Conditioning, negative: Conditioning | None,
           settings: EditSettings, mask: torch.Tensor | None = None, on_step: StepCallback | None = None,
           predict: Predict | None = None) -> torch.Tensor:
    """SDEdit: source latents re-noised to `strength`, denoised with `positive` — the Temporal Sampler's loop at
    denoise = strength, with a post-step blend for the mask.

    Args:
        source: latents (1, C, f, h, w) in the sampler's space (model.encode).
        mask: optional (1, 1, f, h, w) latent mask, 1 = edit: after every step the latents outside it are reset to
            the source re-noised to the level of the next step (plain inpainting blend), and to the source at the end.
        predict: optional replacement for model.predict (tiled refine), same signature.
    Returns:
        latents (1, C, f, h, w) float32. strength 0 returns the source; with no mask and no `predict` the result
        equals sampling.sample(..., denoise=strength, init_latents=source) for the same seed. On a joint-audio
        family (LTX-2) the loop runs on the joint video + audio latents through joint.sample_clip (the sound re-made
        from the re-noised zero latent, as the Temporal Sampler with a `latent`), and the video part is returned.
    """
    settings.check()
    if settings.strength == 0:
        return source.float().clone()
    x0 = source.to(model.device, torch.float32)
    m = None if mask is None else mask.to(model.device, torch.float32)

    sampler = _sampler_settings(model, source, settings)
    joint = model.capabilities.joint_audio
    audio_frames = model.layout(sampler).audio_frames if joint else 0

    def keep_outside(run: sampling.Run, i: int, latents: torch.Tensor) -> torch.Tensor:
        """Outside the mask: the source at the noise level the latents now have (the source after the last step).
        Joint latents (LTX-2: [keyframe frames,] video frames, audio frames): only the video frames are blended."""
        last = i + 1 == len(run.timesteps)
        start = latents.shape[2] - x0.shape[2] - audio_frames
        clip = slice(start, start + x0.shape[2])
        keep = x0 if last else _renoised(model, run, x0, run.timesteps[i + 1], run.noise[:, :, clip])
        if start == 0 and not audio_frames:
            return keep * (1 - m) + latents * m
        out = latents.clone()
        out[:, :, clip] = keep * (1 - m) + latents[:, :, clip] * m
        return out

    post_step = None if m is None else keep_outside
    if joint:                                 # LTX-2: the sound is re-made alongside (models/joint.py), then dropped
        from .joint import sample_clip
        return sample_clip(model, positive, negative, sampler, init_latents=x0, on_step=on_step, predict=predict,
                           post_step=post_step).video
    return sampling.sample(model, positive, negative, sampler, init_latents=x0, on_step=on_step, predict=predict,
                           post_step=post_step)


def _renoised(model, run: sampling.Run, x0: torch.Tensor, t_next: torch.Tensor,
              noise: torch.Tensor | None = None) -> torch.Tensor:
    """x0 at the noise level of the scheduler's next step (called after the scheduler's step); noise: the run's
    noise at x0's frames (default run.noise)."""
    noise = run.noise if noise is None else noise
    scheduler = run.scheduler
    if model.flow and getattr(scheduler, "step_index", None) is not None and hasattr(scheduler, "sigmas"):
        sigma = scheduler.sigmas[scheduler.step_index].to(x0.device, torch.float32)
        return (1 - sigma) * x0 + sigma * noise
    return scheduler.add_noise(x0, noise, t_next.reshape(1))


def flowedit(model: VideoFamily, source: torch.Tensor, positive: Conditioning, negative: Conditioning | None,
             source_prompt: Conditioning, settings: EditSettings, mask: torch.Tensor | None = None,
             on_step: StepCallback | None = None) -> torch.Tensor:
    """FlowEdit (inversion-free): an ODE from the source latents driven by v(target) - v(source).

    At each of the last strength x steps of the schedule (sigma s_i -> s_{i+1}), with fresh seeded noise n:
        z_src = (1 - s_i) x_src + s_i n;  z_tar = z_edit + z_src - x_src
        z_edit += (s_{i+1} - s_i) * (v(z_tar, target prompt) - v(z_src, source prompt))
    Content both prompts describe gives equal velocities and stays. mask (1, 1, f, h, w), 1 = edit, scales the
    update: outside it z_edit stays exactly the source. Flow-matching families only. Runs the shared loop
    (sampling.denoise) with that velocity difference as its prediction and the Euler update as its step.
    """
    settings.check()
    if not model.flow:
        fail("method", f"`flowedit` needs a flow-matching model, and {model.name} is not one", "flowedit",
             "Use method sdedit for this model (or load Wan / Kinema-Tiny).")
    x_src = source.to(model.device, torch.float32)
    if settings.strength == 0:
        return x_src.clone()
    s = _sampler_settings(model, source, settings)
    model.check_settings(s)
    scheduler = model.make_scheduler(s.scheduler, s.shift)
    if not hasattr(scheduler, "sigmas"):
        fail("scheduler", "must be a flow-matching scheduler for flowedit", s.scheduler, "Use default or flow_euler.")
    model.set_timesteps(scheduler, s, model.device)
    sigmas, steps = scheduler.sigmas.float(), len(scheduler.timesteps)
    start = steps - max(1, round(steps * s.denoise))          # FlowEdit's n_max: the last strength x steps
    generator = torch.Generator("cpu").manual_seed(s.seed)
    run = sampling.Run(scheduler, generator, scheduler.timesteps[start:], x_src, x_src.clone())
    guided = s.guidance_scale > 1.0 and negative is not None
    src_guided = settings.source_guidance_scale > 1.0 and negative is not None
    batch_tar = model.prepare(positive, negative if guided else None, s, generator)
    batch_src = model.prepare(source_prompt, negative if src_guided else None, s, generator)
    m = None if mask is None else mask.to(model.device, torch.float32)

    def euler_update(i: int, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """This step's move: (s_{i+1} - s_i) * (v(z_tar, target) - v(z_src, source)), masked."""
        s_i, s_next = sigmas[start + i].item(), sigmas[start + i + 1].item()
        n = model.initial_noise(s, tuple(z.shape), generator, model.device)       # fresh seeded noise each step
        z_src = (1 - s_i) * x_src + s_i * n                                        # (1, C, f, h, w)
        z_tar = z + z_src - x_src
        v_tar = sampling.guided_predict(model, sampling.model_input(z_tar, t, guided), t, batch_tar,
                                        s.guidance_scale, guided)
        v_src = sampling.guided_predict(model, sampling.model_input(z_src, t, src_guided), t, batch_src,
                                        settings.source_guidance_scale, src_guided)
        dv = v_tar - v_src
        return (s_next - s_i) * (dv if m is None else dv * m)

    latents = sampling.denoise(run, euler_update, on_step, step=lambda update, t, z: z + update)
    return model.finish(latents, batch_tar)


# ---- whole clips: encode, edit, decode, paste back -------------------------------------------------------------
def _check_video(model: VideoFamily, frames: torch.Tensor, arg: str = "video") -> tuple[int, int, int]:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        fail(arg, "must be IMAGE frames (F, H, W, 3)", tuple(getattr(frames, "shape", ())),
             "Connect Load Video (or any IMAGE output).")
    n, h, w, _ = frames.shape
    try:
        model.check_settings(SamplerSettings(num_frames=n, height=h, width=w))
    except ValueError as exc:
        fail(arg, f"does not fit this {model.name} model ({exc})", f"{n} frames at {w}x{h}",
             "Set Load Video's frame_count / width / height to a size the model makes.")
    return n, h, w


def encode_video(model: VideoFamily, frames: torch.Tensor, tiling=None) -> torch.Tensor:
    """IMAGE (F, H, W, C) -> latents (1, C, f, h, w) through the model's VAE (tiled when the family tiles)."""
    if not model.capabilities.encode:
        fail("model", f"cannot encode frames ({model.name} has no encoder)", model.name,
             "Use a model with a VAE (Wan, AnimateDiff, Kinema-Tiny).")
    return model.encode(frames[..., :3].float(), tiling)


def decode_video(model: VideoFamily, latents: torch.Tensor, tiling=None) -> torch.Tensor:
    """latents (1, C, f, h, w) -> IMAGE (F, H, W, 3) 0..1, decoded chunk by chunk within the memory budget."""
    from . import vae_tiling
    return torch.cat(list(vae_tiling.stream_decode(model, latents.float(), tiling)))


def edit_video(model: VideoFamily, frames: torch.Tensor, positive: Conditioning, negative: Conditioning | None,
               settings: EditSettings, source_prompt: Conditioning | None = None, mask: torch.Tensor | None = None,
               tiling=None, on_step: StepCallback | None = None, step_cache=None) -> torch.Tensor:
    """Edit a clip: frames (F, H, W, 3) 0..1 -> edited frames, same count and size.

    Args:
        positive: the prompt describing the edited clip; negative: what to avoid (used when cfg > 1).
        source_prompt: what the source shows (flowedit only; required there).
        mask: optional MASK (1 or F, H, W), 1 = edit, 0 = keep: outside it the output is the source pixels.
        step_cache: optional step_cache.StepCache (sdedit only; flowedit refuses it).
    Returns:
        IMAGE (F, H, W, 3) float32 0..1 on the CPU. strength 0 gives decode(encode(frames)) (the VAE round trip),
        with the source pasted back outside a mask.
    """
    settings.check()
    n, h, w = _check_video(model, frames)
    m = check_edit_mask(mask, n, h, w)
    src = encode_video(model, frames, tiling)                                   # (1, C, f, h', w')
    lm = None if m is None else latent_mask(model, m, tuple(src.shape))
    if settings.method == EditMethod.FLOWEDIT.value:
        if source_prompt is None:
            fail("source_prompt", "is required by method flowedit (what the source video shows)", None,
                 "Connect a Text Encode of the source's description, e.g. 'a red circle moves right'.")
        step_cache_mod.refuse_flowedit(step_cache)
        out = flowedit(model, src, positive, negative, source_prompt, settings, lm, on_step)
    else:
        with step_cache_mod.session(step_cache, model, _sampler_settings(model, src, settings)) as predict:
            out = sdedit(model, src, positive, negative, settings, lm, on_step, predict)
    edited = decode_video(model, out, tiling)[:n]                               # (F, H, W, 3)
    if m is not None:                                                            # paste the source back outside
        mm = m[..., None]                                                        # (1 or F, H, W, 1)
        edited = frames[..., :3].float().cpu() * (1 - mm) + edited * mm
    return edited.clamp(0, 1)


# ---- reference image -------------------------------------------------------------------------------------------
def reference_condition(model: VideoFamily, positive: Conditioning, image: torch.Tensor,
                        strength: float = 1.0) -> Conditioning:
    """Attach a reference image of the subject to `positive`: Wan VACE's reference images, or the image condition
    of an image-to-video family.

    The model carries the subject's look (colour, shape, face) through the clip. 0 returns `positive` unchanged
    (plain text-to-video). Wan VACE: every image of the batch is a reference (prepended in latent time, as
    WanVACEPipeline's reference_images) and strength is VACE's conditioning_scale. Image-to-video families:
    the first image is the image condition; strength 1 gives it as it is, lower values pull its colours toward
    its mean colour (a weaker hint the prompt overrides more easily).
    Args:
        image: IMAGE (N, H, W, 3 or 4) 0..1; any size (the family fits it to the clip's size).
    """
    check_range("strength", strength, 0.0, 1.0)
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (3, 4):
        fail("image", "must be an IMAGE (1, H, W, 3)", tuple(getattr(image, "shape", ())),
             "Connect Load Image (Kinema).")
    takes_reference, takes_image = model.capabilities.references, model.capabilities.image_condition
    if not (takes_image or takes_reference):
        fail("model", f"has no image conditioning to carry a reference ({model.name})", model.name,
             "Load a Wan VACE model (reference images) or an image-to-video model (Wan I2V, kinema-tiny-video); "
             "for AnimateDiff encode the image with Video Encode and sample at denoise < 1.")
    if positive.family != model.name:
        fail("positive", f"must be encoded by the same {model.name} model", positive.family,
             "Connect Text Encode from the same model.")
    if strength == 0:
        return positive
    if takes_reference:
        return model.with_reference(positive, image, strength)
    ref = image[:1, ..., :3].float().cpu()                                       # (1, H, W, 3)
    mean = ref.mean(dim=(1, 2), keepdim=True)
    return positive.with_image((mean + strength * (ref - mean)).clamp(0, 1))


# ---- upscaling -------------------------------------------------------------------------------------------------
def upscale_frames(frames: torch.Tensor, scale: int, chunk: int = 8) -> torch.Tensor:
    """Bicubic spatial upscale, chunk by chunk: (F, H, W, C) -> (F, sH, sW, C). (Antialiasing only acts when
    shrinking; this equals kornia's antialiased resize bit for bit, without needing kornia.)"""
    import torch.nn.functional as F
    n, h, w, _ = frames.shape
    out = [F.interpolate(frames[i:i + chunk].movedim(-1, 1).float(), size=(h * scale, w * scale), mode="bicubic",
                         align_corners=False).clamp(0, 1).movedim(1, -1) for i in range(0, n, chunk)]
    return torch.cat(out)


def _tile_starts(size: int, tile: int, overlap: int, multiple: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = max(multiple, (tile - overlap) // multiple * multiple)
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def tiled_predict(model: VideoFamily, tile: int, overlap: int) -> Predict:
    """model.predict run on overlapping spatial tiles of `tile` latent cells, fused with linear ramps (the
    denoiser's activations then never exceed one tile: memory stays flat as frames grow). Batch entries with the
    latents' spatial size (image-conditioning channels) are cropped along with them."""
    multiple = max(1, model.spatial_multiple // model.spatial_ratio)

    def predict(x: torch.Tensor, t, batch: dict[str, Any]) -> torch.Tensor:
        h, w = x.shape[-2:]
        th, tw = min(tile // multiple * multiple, h), min(tile // multiple * multiple, w)
        ys, xs = _tile_starts(h, th, overlap, multiple), _tile_starts(w, tw, overlap, multiple)
        if len(ys) == 1 and len(xs) == 1:
            return model.predict(x, t, batch)
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        weight = torch.zeros(1, 1, 1, h, w, device=x.device)
        ramp_h, ramp_w = _ramp(th, overlap).to(x.device), _ramp(tw, overlap).to(x.device)
        wt = (ramp_h[:, None] * ramp_w[None, :])[None, None, None]                # (1, 1, 1, th, tw)
        for y in ys:
            for x0 in xs:
                crop = {k: (v[..., y:y + th, x0:x0 + tw] if isinstance(v, torch.Tensor) and v.ndim == 5
                            and tuple(v.shape[-2:]) == (h, w) else v) for k, v in batch.items()}
                p = model.predict(x[..., y:y + th, x0:x0 + tw], t, crop).float()
                out[..., y:y + th, x0:x0 + tw] += p * wt
                weight[..., y:y + th, x0:x0 + tw] += wt
        return out / weight

    return predict


def _ramp(n: int, overlap: int) -> torch.Tensor:
    """Weights 1 in the middle, rising linearly over `overlap` cells at each end (never 0)."""
    r = torch.ones(n)
    k = min(overlap, n // 2)
    if k > 0:
        edge = torch.arange(1, k + 1, dtype=torch.float32) / (k + 1)
        r[:k], r[n - k:] = edge, edge.flip(0)
    return r


@dataclass(frozen=True)
class UpscaleSettings:
    """What Video Upscale asks for."""
    factor: str = UpscaleFactor.X2.value
    strength: float = 0.3          # refine: re-noise strength (0 = resize only)
    num_inference_steps: int = 10
    guidance_scale: float = 5.0
    seed: int = 0
    tile: int = 0                  # latent cells per denoiser tile side; 0 = no tiling
    overlap: int = 4               # latent cells shared by neighbouring tiles

    @property
    def scale(self) -> int:
        return {"x2": 2, "x4": 4}[self.factor]

    def check(self) -> None:
        check_choice("factor", self.factor, [f.value for f in UpscaleFactor])
        check_range("strength", self.strength, 0.0, 1.0)
        check_range("tile_size", self.tile, 0, 4096)
        if self.tile and self.overlap * 2 >= self.tile:
            fail("tile_size", f"must be more than twice the overlap ({self.overlap} latent cells)", self.tile,
                 f"Use at least {self.overlap * 2 + 2}, or 0 for no tiling.")


def upscale_video(frames: torch.Tensor, settings: UpscaleSettings, model: VideoFamily | None = None,
                  positive: Conditioning | None = None, negative: Conditioning | None = None, tiling=None,
                  on_step: StepCallback | None = None, upscaler=None, on_chunk=None, step_cache=None,
                  cache_stats=None) -> torch.Tensor:
    """frames (F, H, W, 3) -> (F, sH, sW, 3): enlarged, then (with a model and strength > 0) encoded, re-noised to
    `strength` and refined with `positive` at the new size (SDEdit through the model's temporal layers), the
    denoiser on spatial tiles when settings.tile > 0, and decoded within the memory budget.

    Args:
        upscaler: optional learned upscaler (models.upscale.Upscaler): enlarges in its place of bicubic, in pieces
            of frames (memory flat over long clips); on_chunk(done, total) reports its pieces.
        step_cache: optional step_cache.StepCache for the refine (around the tiles: a skipped step skips every
            tile); cache_stats: an optional step_cache.Stats that receives the calls made and skipped.
    """
    settings.check()
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4:
        fail("images", "must be IMAGE frames (F, H, W, 3)", tuple(getattr(frames, "shape", ())),
             "Connect Load Video or Video Decode.")
    if upscaler is not None and getattr(upscaler, "latent", False) and model is not None \
            and model.capabilities.joint_audio:                  # LTX-2's latent upsampler: in the model's latents
        from .families.ltx2_upsample import upscale_frames as latent_path
        if positive is None and settings.strength > 0:
            fail("positive", "is required to refine with a model", None, "Connect a Text Encode of the clip's prompt.")
        return latent_path(model, upscaler, frames, positive, negative, settings.scale, settings.num_inference_steps,
                           settings.guidance_scale, settings.seed, settings.strength, on_step, step_cache,
                           cache_stats)
    if upscaler is not None:
        from .upscale import learned_upscale
        big = learned_upscale(upscaler, frames[..., :3], settings.scale, on_chunk)    # (F, sH, sW, 3)
    else:
        big = upscale_frames(frames[..., :3], settings.scale)                     # (F, sH, sW, 3)
    if model is None or settings.strength == 0:
        return big
    if positive is None:
        fail("positive", "is required to refine with a model", None, "Connect a Text Encode of the clip's prompt.")
    if not model.capabilities.any_size:
        fail("model", f"cannot refine at a larger size: {model.name} makes its trained size only", model.name,
             "Disconnect `model` (resize only) or use a Wan / AnimateDiff model.")
    _check_video(model, big, "images")
    latents = encode_video(model, big, tiling)
    es = EditSettings(strength=settings.strength, num_inference_steps=settings.num_inference_steps,
                      guidance_scale=settings.guidance_scale, seed=settings.seed)
    if settings.tile and model.capabilities.joint_audio:
        fail("tile_size", f"cannot tile {model.name}'s joint picture + sound latents", settings.tile,
             "Set tile_size to 0, or connect the LTX-2 latent upsampler as `upscaler` (its own refine).")
    tiled = tiled_predict(model, settings.tile, settings.overlap) if settings.tile else None
    with step_cache_mod.session(step_cache, model, _sampler_settings(model, latents, es), tiled,
                                cache_stats) as predict:
        out = sdedit(model, latents, positive, negative, es, None, on_step, predict)
    return decode_video(model, out, tiling)[: frames.shape[0]].clamp(0, 1)


__all__ = ["EditMethod", "EditSettings", "UpscaleFactor", "UpscaleSettings", "check_edit_mask", "decode_video",
           "edit_video", "encode_video", "flowedit", "latent_mask", "reference_condition", "sdedit",
           "tiled_predict", "upscale_frames", "upscale_video"]
