"""Clips whose sound is made with the picture (families with capabilities.joint_audio: LTX-2 video).

The loop (models/sampling.py) runs such a family on joint latents (the video latents followed by frames holding
the audio latents, families/ltx2_video.py); this module is the one place that joins a start latent with its sound
for the loop and splits the loop's result into the video LATENT and the ComfyUI AUDIO.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import fail
from .sampling import SamplerSettings, StepCallback, sample
from .windows import ContextOptions


@dataclass(frozen=True)
class Clip:
    """One sampled clip: video latents (1, C, f, h, w); for joint-audio families also its packed audio latents
    (1, L, D) (decode_sound turns them into ComfyUI AUDIO)."""
    video: torch.Tensor
    audio_latents: torch.Tensor | None = None


def sample_clip(model, positive, negative, settings: SamplerSettings, init_latents: torch.Tensor | None = None,
                init_audio: torch.Tensor | None = None, on_step: StepCallback | None = None,
                context: ContextOptions | None = None, predict=None, post_step=None) -> Clip:
    """sampling.sample for any video family; a joint-audio family also returns its sound's latents.

    init_latents: video latents (1, C, f, h, w) to start from (denoise < 1); init_audio: their packed audio latents
    (1, L, D) when the LATENT carries them (else the sound starts from the re-noised zero latent); predict: the loop's
    predict= hook (a step cache), passed on; post_step: the loop's post_step= blend (Video Edit's mask), passed on
    (on a joint-audio family it gets the joint latents; not with context windows)."""
    if not model.capabilities.joint_audio:
        if positive.key_images:
            fail("positive", f"carries keyframe images, which {model.name} does not take", "Keyframe Image",
                 "Use an LTX-2 model, or remove the Keyframe Image node.")
        return Clip(sample(model, positive, negative, settings, init_latents, on_step, context, predict=predict,
                           post_step=post_step))
    layout = model.layout(settings)
    if init_latents is not None:
        audio = init_audio if init_audio is not None and init_audio.shape[1] == layout.audio_steps \
            else init_latents.new_zeros(1, layout.audio_steps, layout.audio_width)
        init_latents = model.join(init_latents.to(model.device, torch.float32), audio.to(model.device), layout)
    if context is not None:                       # long clips: windows over the picture, the sound carried across
        from .families.ltx2_windows import sample_long
        if init_latents is not None:
            fail("context", "cannot be combined with a start `latent` on LTX-2", "a Context Options input",
                 "Disconnect `context` or `latent`.")
        if predict is not None:
            fail("step_cache", "cannot be combined with context windows on LTX-2 yet", "a Step Cache input",
                 "Disconnect `step_cache` or `context`.")
        joint = sample_long(model, positive, negative, settings, context, on_step)
    else:
        joint = sample(model, positive, negative, settings, init_latents, on_step, predict=predict,
                       post_step=post_step)
    video, audio = model.split(joint, layout)
    return Clip(video, audio)


def decode_sound(model, latent: dict) -> dict:
    """A LATENT from the Temporal Sampler -> its sound as ComfyUI AUDIO {"waveform": (1, ch, n), "sample_rate"},
    n = exactly frames / fps seconds of samples (kinema_frames, kinema_fps of the LATENT)."""
    if not model.capabilities.joint_audio:
        fail("model", f"makes no sound with its video ({model.name})", model.name,
             "Use an LTX-2 model, or make sound with Video to Audio.")
    audio = latent.get("kinema_audio")
    if audio is None:
        fail("latent", "carries no sound", "a LATENT without audio latents",
             "Connect the Temporal Sampler's latent from an LTX-2 model (Video Encode and Load Latent have none).")
    return model.decode_audio(audio, latent["kinema_frames"], latent["kinema_fps"])
