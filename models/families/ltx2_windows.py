"""Long LTX-2 clips: FreeNoise windows over the picture with the sound carried across them.

ComfyUI's LTX looping sampler drops the audio; here every window denoises its video latent frames AND the audio
latent steps of the same span of time, in one transformer call (window-local positions: both streams start at 0
in every window, as each window is a short clip of its own). Overlapping windows are fused with position weights
on both streams — video per latent frame, audio per latent step — so at every step each audio step is one blend of
the windows that heard it, and the whole clip's sound is continuous at the seams (no click, no gap).

The video noise is FreeNoise-rescheduled over the latent frames (windows.reschedule_noise); the audio noise is
fresh (the fused audio is one sequence: it needs no repeated noise to agree with itself). Drift anchoring and
prompt schedules are not applied on this path (one prompt; no start image), and the run goes through the loop's
own steps: sampling.check_inputs / start_run / denoise, with this module's prediction per step.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from .. import sampling
from .. import windows as W
from ..checks import fail


def window_spans(model, settings, context: W.ContextOptions) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """[((video start, end) latent frames, (audio start, end) latent steps), ...] covering the clip: the video
    windows of the context (lengths in pixel frames), each with the audio steps of its own time span (its first
    pixel frame's time, as many steps as a clip of that window's length has), the last ending at the clip's end."""
    layout = model.layout(settings)
    r, fps = model.temporal_ratio, model.fps(settings)
    length = model.latent_frames(context.context_length)
    stride = max(1, length - context.context_overlap // r)
    out = []
    for s, e in W.windows(layout.frames, length, stride):
        steps = model.layout(replace(settings, num_frames=model.pixel_frames(e - s))).audio_steps
        first_pixel = 0 if s == 0 else (s - 1) * r + 1
        a = min(round(first_pixel / fps * model.latents_per_second), max(0, layout.audio_steps - steps))
        out.append(((s, e), (a, min(layout.audio_steps, a + steps))))
    (s, e), (a, b) = out[-1]
    if b < layout.audio_steps:                                   # the last window ends with the clip's sound
        out[-1] = ((s, e), (layout.audio_steps - (b - a), layout.audio_steps))
    return out


def sample_long(model, positive, negative, settings, context: W.ContextOptions, on_step=None) -> torch.Tensor:
    """Joint latents (1, C, f + k, h, w) of a long clip (see the module docstring); a context that covers the clip
    in one window gives sampling.sample's result."""
    if positive.image is not None or positive.schedule:
        fail("context", f"on {model.name} takes one prompt without a start image", "a start image or schedule",
             "Disconnect `context`, or use a plain Text Encode.")
    shape, _ = sampling.check_inputs(model, positive, settings, None, None)
    layout = model.layout(settings)
    spans = window_spans(model, settings, context)
    run = sampling.start_run(model, settings, shape, sampling.WindowPlan([(0, shape[2])]), None, None)
    if len(spans) > 1:
        video, audio = model.split(run.noise, layout)
        length = spans[0][0][1] - spans[0][0][0]
        video = W.reschedule_noise(video, length, max(1, length - context.context_overlap // model.temporal_ratio),
                                   run.generator, context.noise)
        run.noise = run.latents = model.join(video, audio, layout)
    guided = settings.guidance_scale > 1.0 and negative is not None
    batches = {}
    for (s, e), _ in spans:                                                           # one batch per window length
        if e - s not in batches:
            ws = replace(settings, num_frames=model.pixel_frames(e - s))
            batches[e - s] = (ws, model.prepare(positive, negative if guided else None, ws, run.generator))
    model._preview_frames = layout.frames

    def predict(i, t, latents):
        video, audio = model.split(latents, layout)
        v_sum, v_w = torch.zeros_like(video), video.new_zeros(1, 1, layout.frames, 1, 1)
        a_sum, a_w = torch.zeros_like(audio), audio.new_zeros(1, layout.audio_steps, 1)
        for (s, e), (a, b) in spans:
            ws, batch = batches[e - s]
            wl = batch["layout"]
            x = model.join(video[:, :, s:e], _fit(audio[:, a:b], wl.audio_steps), wl)
            x = sampling.model_input(x, t, guided, run.scheduler)
            pv, pa = model.split(sampling.guided_predict(model, x, t, batch, settings.guidance_scale, guided), wl)
            wv = W.frame_weights(e - s, context.fuse).to(video.device).view(1, 1, -1, 1, 1)
            wa = W.frame_weights(b - a, context.fuse).to(video.device).view(1, -1, 1)
            v_sum[:, :, s:e] += pv * wv
            v_w[:, :, s:e] += wv
            a_sum[:, a:b] += pa[:, :b - a] * wa
            a_w[:, a:b] += wa
        return model.join(v_sum / v_w, a_sum / a_w.clamp_min(1e-12), layout)

    return sampling.denoise(run, predict, on_step)


def _fit(audio: torch.Tensor, steps: int) -> torch.Tensor:
    """A window's audio (1, n, D) padded with its last step to `steps` (the clip's last window may be short)."""
    if audio.shape[1] >= steps:
        return audio[:, :steps]
    return torch.cat([audio, audio[:, -1:].expand(-1, steps - audio.shape[1], -1)], dim=1)
