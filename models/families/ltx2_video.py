"""LTX-2 as a video family: picture and sound made together in one pass of Kinema's loop.

LTX-2 is one transformer over video and audio tokens (cross-attention both ways, positions in seconds on a shared
clock). Text-to-video runs both streams from noise with the same sigmas (diffusers' LTX2Pipeline keeps two copies
of one scheduler); image-to-video holds the first latent frame clean (LTX2ImageToVideoPipeline), keyframes at
other latent frames come from LTX2ConditionPipeline's conditions (see ltx2_keyframes.py).

The loop's latents ("joint latents") are the video latents in the pipelines' normalised space, (1, C, f, h, w),
followed along the frame axis by `k` audio frames: the packed audio latents (1, L, D) (L latent steps, 25 a
second; D = audio channels x latent mel bins) flattened and zero-padded to k frames of C*h*w values. The flow
Euler step and classifier-free guidance are elementwise, so stepping the joint tensor with one scheduler is
stepping each stream with its own copy (as the pipeline does); padding cells get velocity 0 and stay 0.
`split` / `join` move between the joint tensor and the two streams; models/joint.py splits the loop's result into
the LATENT (video, with the audio latents riding along as "kinema_audio") and Decode Video Sound's AUDIO
(`decode_audio`). Keyframe images (Conditioning.key_images) add p prefix frames before the clip: their clean
tokens, appended to the video sequence as LTX2ConditionPipeline does (ltx2_keyframes.py); `finish` drops them.

Parity with diffusers for a seed: the video noise (1, C, f, h, w) is drawn first, then the audio noise in packed
layout (1, L, D) (as LTX2Pipeline draws it when given `audio_latents` with noise_scale 1); sigmas linear 1 -> 1/n
with the resolution-dependent shift (or the distilled values, ltx2_common.DISTILLED_SIGMAS). L covers the clip:
the sound decodes to at least frames / fps seconds and is trimmed to exactly that (media.samples_for_frames).
Not used: STG, modality-isolation guidance, guidance rescale (the pipeline's extras; 0 / 1 there turn them off);
audio and video share one guidance scale.
"""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from ..checks import fail
from .base import Capabilities, Conditioning, VideoFamily
from .ltx2_common import LTX2Folder, decode_video, audio_steps_covering, gemma_prompt, set_ltx2_timesteps

DEFAULT_FPS = Fraction(24)        # LTX2Pipeline's frame_rate default (the sampler has no fps input connected)


@dataclasses.dataclass(frozen=True)
class JointLayout:
    """Where the two streams sit in the loop's joint latents (1, C, f + k, h, w)."""
    frames: int                   # video latent frames f
    audio_steps: int              # audio latent steps L
    audio_width: int              # D: values per audio step (packed)
    audio_frames: int             # k: frames holding the audio, zero-padded


class LTX2VideoFamily(LTX2Folder, VideoFamily):
    name = "ltx2"
    title = "LTX-2 (video + audio)"
    capabilities = Capabilities(windows=False, image_condition=True, joint_audio=True, encode=True)
    flow = True
    default_frames = 121          # 8 * 15 + 1: LTX-2's trained ~5 s at 24 fps
    use_cross_timestep = True     # as LTX2Pipeline's default
    distilled = False             # few-step distilled weights: the pipelines' distilled sigmas (set by the loader)

    def __init__(self, path, device, dtype, pipe):
        super().__init__(path, device, dtype)
        self.pipe = pipe
        self.transformer, self.vae = pipe.transformer, pipe.vae
        self.audio_vae, self.vocoder = pipe.audio_vae, pipe.vocoder
        self.connectors = pipe.connectors
        self.default_scheduler = pipe.scheduler
        self.spatial_ratio = pipe.vae_spatial_compression_ratio
        self.temporal_ratio = pipe.vae_temporal_compression_ratio
        self.patch, self.patch_t = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        self.spatial_multiple = math.lcm(32, self.spatial_ratio * self.patch)     # the pipelines' multiple of 32
        self.latent_channels = self.transformer.config.in_channels
        self.mel_rate, self.hop = pipe.audio_sampling_rate, pipe.audio_hop_length
        self.audio_ratio = pipe.audio_vae_temporal_compression_ratio
        self.latent_mel_bins = pipe.audio_mel_bins // pipe.audio_vae_mel_compression_ratio
        self.latents_per_second = Fraction(self.mel_rate, self.hop * self.audio_ratio)   # audio steps: 25 for LTX-2
        self.audio_width = self.audio_vae.config.latent_channels * self.latent_mel_bins
        config = self.vocoder.config
        self.audio_channels = int(config.get("bwe_out_channels", config.get("out_channels", 2)))
        self.sample_rate = int(config.get("output_sampling_rate") or self.mel_rate)

    @classmethod
    def load(cls, path, device, dtype):
        """An LTX-2 folder; a folder named *distill* (e.g. LTX-2.3-Distilled-Diffusers) samples with the distilled
        few-step sigmas."""
        model = super().load(path, device, dtype)
        model.distilled = "distill" in Path(path).name.lower()
        return model

    # ---- sizes and the joint layout ---------------------------------------------------------------------------
    @staticmethod
    def fps(settings) -> Fraction:
        """The clip's frame rate: settings.frame_rate, or DEFAULT_FPS when it is 0 (not given)."""
        return Fraction(settings.frame_rate) if settings.frame_rate else DEFAULT_FPS

    def num_samples(self, settings) -> int:
        """Waveform samples of the clip's sound: exactly frames / fps seconds at self.sample_rate."""
        from ..media import samples_for_frames
        return samples_for_frames(settings.num_frames, self.fps(settings), self.sample_rate)

    def layout(self, settings) -> JointLayout:
        """The joint layout for the settings' clip (video frames, audio steps covering frames / fps)."""
        f = self.latent_frames(settings.num_frames)
        cells = self.latent_channels * (settings.height // self.spatial_ratio) * (settings.width // self.spatial_ratio)
        steps = audio_steps_covering(self.num_samples(settings), self.mel_rate, self.sample_rate, self.hop,
                                     self.audio_ratio)
        return JointLayout(f, steps, self.audio_width, -(-steps * self.audio_width // cells))

    def check_settings(self, settings) -> None:
        self.check_size(settings.num_frames, settings.height, settings.width)
        if settings.frame_rate:
            from ..media import check_fps
            check_fps("fps", settings.frame_rate)

    def latent_shape(self, settings) -> tuple[int, ...]:
        """(C, f + k, h, w): the video latents, then k frames holding the audio latents (see the module doc)."""
        c, f, h, w = super().latent_shape(settings)
        return (c, f + self.layout(settings).audio_frames, h, w)

    def prefix_frames(self, positive: Conditioning) -> int:
        """One latent frame before the clip per keyframe image (ltx2_keyframes: appended tokens, dropped at the
        end)."""
        return len(positive.key_images)

    def _tokens(self, settings) -> int:
        return (self.latent_frames(settings.num_frames) // self.patch_t) * (
            settings.height // self.spatial_ratio // self.patch) * (settings.width // self.spatial_ratio // self.patch)

    # ---- joint latents <-> the two streams -------------------------------------------------------------------
    @staticmethod
    def split(joint: torch.Tensor, layout: JointLayout) -> tuple[torch.Tensor, torch.Tensor]:
        """joint (B, C, f + k, h, w) -> (video (B, C, f, h, w), packed audio (B, L, D))."""
        b = joint.shape[0]
        audio = joint[:, :, layout.frames:].reshape(b, -1)[:, :layout.audio_steps * layout.audio_width]
        return joint[:, :, :layout.frames], audio.reshape(b, layout.audio_steps, layout.audio_width)

    @staticmethod
    def join(video: torch.Tensor, audio: torch.Tensor, layout: JointLayout) -> torch.Tensor:
        """(video (B, C, f, h, w), packed audio (B, L, D)) -> joint (B, C, f + k, h, w), zero padding."""
        b, c, _, h, w = video.shape
        tail = audio.new_zeros(b, c * layout.audio_frames * h * w)
        tail[:, :audio[0].numel()] = audio.reshape(b, -1)
        return torch.cat([video, tail.view(b, c, layout.audio_frames, h, w).to(video.dtype)], dim=2)

    # ---- schedulers and noise -------------------------------------------------------------------------------
    def initial_noise(self, settings, shape, generator, device) -> torch.Tensor:
        """As LTX2Pipeline: video noise (1, C, f, h, w) first (packed (1, N, C) when starting from latents, as the
        pipeline draws it then), then the audio noise packed (1, L, D)."""
        from diffusers.utils.torch_utils import randn_tensor
        layout = self.layout(settings)
        prefix = shape[2] - layout.frames - layout.audio_frames                           # keyframe frames
        video_shape = (shape[0], shape[1], layout.frames, *shape[3:])
        if settings.denoise < 1.0 or prefix:   # the pipelines draw it packed (B, N [+ keyframe tokens], C) then
            f, h, w = layout.frames // self.patch_t + prefix, shape[3] // self.patch, shape[4] // self.patch
            packed = randn_tensor((shape[0], f * h * w, shape[1] * self.patch_t * self.patch ** 2),
                                  generator=generator, device=device, dtype=torch.float32)
            video = self.pipe._unpack_latents(packed, f, h, w, self.patch, self.patch_t)   # clip, then keyframes
            video = torch.cat([video[:, :, layout.frames:], video[:, :, :layout.frames]], dim=2)  # keyframes first
        else:
            video = randn_tensor(video_shape, generator=generator, device=device, dtype=torch.float32)
        audio = randn_tensor((shape[0], layout.audio_steps, layout.audio_width), generator=generator, device=device,
                             dtype=torch.float32)
        return torch.cat([video[:, :, :prefix], self.join(video[:, :, prefix:], audio, layout)], dim=2)

    def set_timesteps(self, scheduler, settings, device) -> None:
        """The pipelines' sigmas (linear 1 -> 1/n, shifted by the token count), or the distilled schedule."""
        set_ltx2_timesteps(scheduler, settings.num_inference_steps, self._tokens(settings), device,
                           distilled=self.distilled)

    # ---- conditioning --------------------------------------------------------------------------------------
    def encode_prompt(self, text: str) -> Conditioning:
        """Gemma hidden states of every layer, stacked: embeds (1, L, D * layers) and their mask (1, L)."""
        embeds, mask = gemma_prompt(self.pipe, text, self.device)
        return Conditioning(self.name, text, embeds, mask=mask)

    def prepare(self, positive, negative, settings, generator=None) -> dict[str, Any]:
        conds = [negative, positive] if negative is not None else [positive]
        b = len(conds)
        with torch.no_grad():
            text, audio_text, text_mask = self.connectors(
                torch.cat([c.embeds for c in conds]), torch.cat([c.mask for c in conds]),
                padding_side=getattr(getattr(self.pipe, "tokenizer", None), "padding_side", "left"))
        layout = self.layout(settings)
        h, w = settings.height // self.spatial_ratio, settings.width // self.spatial_ratio
        fps = float(self.fps(settings))
        video_coords = self.transformer.rope.prepare_video_coords(b, layout.frames, h, w, self.device, fps=fps)
        audio_coords = self.transformer.audio_rope.prepare_audio_coords(b, layout.audio_steps, self.device)
        batch = {"encoder_hidden_states": text, "audio_encoder_hidden_states": audio_text,
                 "encoder_attention_mask": text_mask, "video_coords": video_coords, "audio_coords": audio_coords,
                 "fps": fps, "layout": layout, "grid": (layout.frames, h, w), "mask": None}
        self._preview_frames = layout.frames
        from . import ltx2_keyframes
        batch.update(ltx2_keyframes.image_condition(self, positive, settings, b))
        batch.update(ltx2_keyframes.keyframe_batch(self, positive, settings, layout, b))
        batch["prefix"] = len(positive.key_images)
        return batch

    # ---- the one denoiser call -----------------------------------------------------------------------------
    def predict(self, latents, t, batch) -> torch.Tensor:
        """joint latents (B, C, p + f + k, h, w) -> joint velocity, same shape: video and audio in one transformer
        call. Frames held clean (batch["mask"], image-to-video) and the p keyframe frames (appended tokens) get
        timestep 0 and velocity 0."""
        layout: JointLayout = batch["layout"]
        b, prefix = latents.shape[0], batch["prefix"]
        video, audio = self.split(latents[:, :, prefix:].float(), layout)
        if batch["mask"] is not None:                                                     # the held frames, clean
            m = batch["frame_mask"]
            video = video * (1 - m) + batch["clean"] * m
        f, h, w = batch["grid"]
        packed = self.pipe._pack_latents(video, self.patch, self.patch_t)                  # (B, N, C)
        timestep = t.to(self.device).float().reshape(-1).expand(b)                        # (B,)
        mask, coords = batch["mask"], batch["video_coords"][:b]
        if prefix:                                   # keyframe tokens after the clip's, clean, at their own times
            kf = self.pipe._pack_latents(batch["kf_clean"], self.patch, self.patch_t)     # (1, Nk, C)
            packed = torch.cat([packed, kf.expand(b, -1, -1)], dim=1)
            base = mask if mask is not None else packed.new_zeros(1, packed.shape[1] - kf.shape[1])
            mask = torch.cat([base, packed.new_ones(1, kf.shape[1])], dim=1)
            coords = torch.cat([coords, batch["kf_coords"][:b]], dim=2)
        v, a = self._call_transformer(packed, audio, timestep, mask, coords, batch, b)
        if mask is not None:                                                              # clean tokens stay put
            v = v * (1 - mask).unsqueeze(-1)
        n = (f // self.patch_t) * (h // self.patch) * (w // self.patch)
        v = self.pipe._unpack_latents(v[:, :n], f // self.patch_t, h // self.patch, w // self.patch, self.patch,
                                      self.patch_t)                                       # (B, C, f, h, w)
        return torch.cat([latents.new_zeros(b, *latents.shape[1:2], prefix, *latents.shape[3:]).float(),
                          self.join(v, a.float(), layout)], dim=2)

    def _call_transformer(self, packed, audio, timestep, mask, coords, batch, b):
        """One LTX-2 transformer call: (video velocity (B, N, C), audio velocity (B, L, D)), float32."""
        layout: JointLayout = batch["layout"]
        f, h, w = batch["grid"]
        dtype = batch["encoder_hidden_states"].dtype
        video_timestep = timestep if mask is None else timestep.unsqueeze(-1) * (1 - mask)   # (B,) or (B, N)
        v, a = self.transformer(
            hidden_states=packed.to(dtype), audio_hidden_states=audio.to(dtype),
            encoder_hidden_states=batch["encoder_hidden_states"][:b],
            audio_encoder_hidden_states=batch["audio_encoder_hidden_states"][:b],
            timestep=video_timestep, audio_timestep=timestep,
            sigma=timestep, encoder_attention_mask=batch["encoder_attention_mask"][:b],
            audio_encoder_attention_mask=batch["encoder_attention_mask"][:b], num_frames=f // self.patch_t,
            height=h // self.patch, width=w // self.patch, fps=batch["fps"], audio_num_frames=layout.audio_steps,
            video_coords=coords, audio_coords=batch["audio_coords"][:b],
            isolate_modalities=False, spatio_temporal_guidance_blocks=None, perturbation_mask=None,
            use_cross_timestep=self.use_cross_timestep, return_dict=False)
        return v.float(), a.float()

    def finish(self, latents, batch) -> torch.Tensor:
        """Frames held clean (image-to-video, keyframes) come back exactly as encoded."""
        from . import ltx2_keyframes
        return ltx2_keyframes.restore_clean(self, latents, batch)

    # ---- VAE, audio VAE + vocoder -----------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor, tiling=None) -> torch.Tensor:
        """video latents (1, C, f, h, w) normalised -> IMAGE frames (F, H, W, 3) float32 0..1 on the CPU (decode
        timestep 0, as LTX2Pipeline's default). Joint latents are refused: split them first."""
        return decode_video(self.pipe, latents, self.device)

    def encode(self, frames: torch.Tensor, tiling=None) -> torch.Tensor:
        """IMAGE frames (F, H, W, 3) 0..1, F = r*k + 1 -> normalised latents (1, C, f, h, w) (VAE argmax)."""
        from diffusers.pipelines.ltx2.pipeline_ltx2_condition import retrieve_latents
        pixels = (frames[..., :3].float().permute(3, 0, 1, 2)[None] * 2 - 1).to(self.device, self.vae.dtype)
        with torch.no_grad():
            z = retrieve_latents(self.vae.encode(pixels), sample_mode="argmax")          # (1, C, f, h, w)
        return self.pipe._normalize_latents(z.float(), self.vae.latents_mean, self.vae.latents_std,
                                            self.vae.config.scaling_factor)

    def decode_audio_latents(self, audio: torch.Tensor) -> torch.Tensor:
        """packed normalised audio latents (1, L, D) -> waveform (1, channels, samples) float32 on the CPU at
        self.sample_rate, untrimmed (as LTX2Pipeline decodes)."""
        steps = audio.shape[1]
        packed = self.pipe._denormalize_audio_latents(audio.to(self.device, torch.float32),
                                                      self.audio_vae.latents_mean, self.audio_vae.latents_std)
        z = self.pipe._unpack_audio_latents(packed, steps, num_mel_bins=self.latent_mel_bins)  # (1, C, L, M)
        with torch.no_grad():
            mel = self.audio_vae.decode(z.to(self.audio_vae.dtype), return_dict=False)[0]
            wave = self.vocoder(mel.to(self.vocoder.dtype))                                 # (1, ch, samples)
        return wave.float().cpu()

    def decode_audio(self, audio: torch.Tensor, num_frames: int, fps) -> dict:
        """packed audio latents (1, L, D) -> ComfyUI AUDIO {"waveform": (1, ch, n), "sample_rate"} with n exactly
        num_frames / fps seconds of samples (the decode covers the clip; the tail past it is cut)."""
        from ..media import samples_for_frames
        need = samples_for_frames(num_frames, fps, self.sample_rate)
        wave = self.decode_audio_latents(audio)
        if wave.shape[-1] < need:
            fail("latent", f"decodes to {wave.shape[-1]} audio samples, fewer than the clip's {need}",
                 tuple(audio.shape), "Pass the sampler's own audio latents for this length and fps.")
        return {"waveform": wave[..., :need].contiguous(), "sample_rate": self.sample_rate}

    def preview(self, latents: torch.Tensor) -> torch.Tensor:
        """Previews show the video frames only (the joint latents' audio frames are not a picture)."""
        frames = getattr(self, "_preview_frames", None)      # the last prepared run's video frames
        return super().preview(latents[:, :, :frames] if frames else latents)
