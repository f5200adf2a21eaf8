"""LTX-2's audio branch: sound for a given video (video-to-audio), through Kinema's loop.

LTX-2 is one transformer over video and audio tokens with cross-attention both ways, positions in seconds on a
shared clock. Given the whole clip as a condition at strength 1.0 (diffusers' LTX2ConditionPipeline), the video
tokens stay clean (timestep 0) and only the audio is denoised, attending to the frames at the same time: the
sound follows what is on screen and when. Our loop's latents are the audio tokens alone, (1, C*M, L): L latent
steps (25 per second in LTX-2: 16 kHz mel, hop 160, 4x in time), C*M channels x latent mel bins. The clip's
VAE latents ride along in the batch.

Parity with diffusers for a seed: the noise is drawn as LTX2ConditionPipeline draws it (the video's noise first,
unused at strength 1.0, then the audio's), and the sigmas and shift are the pipeline's.
Not used here: STG and modality-isolation guidance, guidance rescale (set to 0 / 1 in the pipeline they are off).
"""
from __future__ import annotations

from typing import Any

import torch

from ..checks import fail
from .base import AudioFamily, Capabilities, Conditioning
from .ltx2_common import MAX_SEQUENCE_LENGTH, LTX2Folder, gemma_prompt, set_ltx2_timesteps


class LTX2AudioFamily(LTX2Folder, AudioFamily):
    name = "ltx2"
    title = "LTX-2 (video to audio)"
    capabilities = Capabilities(windows=False, encode=False, video_to_audio=True)
    flow = True
    max_sequence_length = MAX_SEQUENCE_LENGTH     # Gemma tokens per prompt (the pipeline's default)
    condition_max_cells = 16       # the clip is encoded with at most this many latent cells on its long side
                                   # (512 px for LTX-2's 32x VAE): sound needs motion and objects, not detail
    use_cross_timestep = True      # as LTX2ConditionPipeline's default

    def __init__(self, path, device, dtype, pipe):
        super().__init__(path, device, dtype)
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.vae, self.audio_vae, self.vocoder = pipe.vae, pipe.audio_vae, pipe.vocoder
        self.connectors = pipe.connectors
        self.default_scheduler = pipe.audio_scheduler or pipe.scheduler
        self.spatial_ratio = pipe.vae_spatial_compression_ratio
        self.temporal_ratio = pipe.vae_temporal_compression_ratio
        self.patch, self.patch_t = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        self.spatial_multiple = self.spatial_ratio * self.patch
        self.mel_rate, self.hop = pipe.audio_sampling_rate, pipe.audio_hop_length
        self.audio_ratio = pipe.audio_vae_temporal_compression_ratio       # mel frames per latent step
        self.latent_mel_bins = pipe.audio_mel_bins // pipe.audio_vae_mel_compression_ratio
        self.latent_channels = pipe.audio_latent_channels * self.latent_mel_bins
        config = self.vocoder.config                      # LTX2Vocoder, or LTX2VocoderWithBWE (48 kHz, LTX-2.3)
        self.audio_channels = int(config.get("bwe_out_channels", config.get("out_channels", 2)))
        self.sample_rate = int(config.get("output_sampling_rate") or self.mel_rate)

    # ---- sizes ---------------------------------------------------------------------------------------------
    def condition_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the clip is encoded at: aspect kept, long side <= condition_max_cells latent cells,
        both multiples of spatial_multiple (the pipeline resizes, then centre-crops the few extra pixels)."""
        m = self.spatial_multiple
        scale = min(1.0, self.condition_max_cells * self.spatial_ratio / max(height, width))
        return max(m, int(height * scale) // m * m), max(m, int(width * scale) // m * m)

    def condition_frames(self, num_frames: int) -> int:
        """Frames the clip is encoded with: the causal VAE takes r*k+1 (r = temporal ratio); a clip of another
        length is padded with its last frame (the padding lies after the sound's end and is not heard)."""
        r = self.temporal_ratio
        return max(r + 1, -(-(num_frames - 1) // r) * r + 1)

    def audio_latent_steps(self, num_samples: int) -> int:
        """Fewest latent steps whose decoded waveform covers num_samples (the causal mel VAE gives
        ratio * (L - 1) + 1 mel frames for L steps, each hop samples at the mel rate)."""
        mel_samples = -(-num_samples * self.mel_rate // self.sample_rate)
        mel_frames = -(-mel_samples // self.hop)
        return max(1, -(-(mel_frames - 1) // self.audio_ratio) + 1)

    def _video_grid(self, settings) -> tuple[int, int, int]:
        f = self.latent_frames(self.condition_frames(settings.num_frames))
        return f, settings.height // self.spatial_ratio, settings.width // self.spatial_ratio

    def check_settings(self, settings) -> None:
        self.check_clip(settings)
        for arg, value in (("height", settings.height), ("width", settings.width)):
            if value <= 0 or value % self.spatial_multiple:
                fail(arg, f"must be a positive multiple of {self.spatial_multiple}", value,
                     "Use condition_size() to pick the encoding size.")

    def latent_shape(self, settings) -> tuple[int, int]:
        return (self.latent_channels, self.audio_latent_steps(self.num_samples(settings)))     # (C*M, L)

    def initial_noise(self, settings, shape, generator, device) -> torch.Tensor:
        """As LTX2ConditionPipeline: video noise (B, f*h*w, C) first (unused: the clip is kept at strength 1),
        then the audio noise in packed layout (B, L, C*M); returned as the loop's (B, C*M, L)."""
        from diffusers.utils.torch_utils import randn_tensor
        f, h, w = self._video_grid(settings)
        tokens = (f // self.patch_t) * (h // self.patch) * (w // self.patch)
        channels = self.transformer.config.in_channels * self.patch_t * self.patch ** 2
        randn_tensor((shape[0], tokens, channels), generator=generator, device=device, dtype=torch.float32)
        packed = randn_tensor((shape[0], shape[2], shape[1]), generator=generator, device=device,
                              dtype=torch.float32)                                          # (B, L, C*M)
        return packed.transpose(1, 2).contiguous()                                          # (B, C*M, L)

    def set_timesteps(self, scheduler, settings, device) -> None:
        """The pipeline's sigmas (linear 1 -> 1/n) and resolution-dependent shift (mu from the video tokens)."""
        f, h, w = self._video_grid(settings)
        set_ltx2_timesteps(scheduler, settings.num_inference_steps,
                           (f // self.patch_t) * (h // self.patch) * (w // self.patch), device)

    # ---- conditioning --------------------------------------------------------------------------------------
    def encode_prompt(self, text: str) -> Conditioning:
        """Gemma hidden states of every layer, stacked: embeds (1, L, D * layers) and their mask (1, L)."""
        embeds, mask = gemma_prompt(self.pipe, text, self.device, self.max_sequence_length)
        return Conditioning(self.name, text, embeds, mask=mask)

    def _encode_clip(self, frames: torch.Tensor, settings) -> torch.Tensor:
        """The clip through the video VAE, as LTX2ConditionPipeline encodes a condition: packed (1, N, C)."""
        from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition, retrieve_latents
        n = self.condition_frames(settings.num_frames)
        if n > frames.shape[0]:                                                          # pad with the last frame
            frames = torch.cat([frames, frames[-1:].expand(n - frames.shape[0], -1, -1, -1)])
        arr = (frames[..., :3].float().clamp(0, 1) * 255).cpu().numpy()                  # (F, H, W, 3) 0..255
        condition = LTX2VideoCondition(frames=arr, index=0, strength=1.0)
        pixels = self.pipe.preprocess_conditions([condition], settings.height, settings.width, n,
                                                 device=self.device)[0][0]               # (1, 3, F, H, W) -1..1
        latent = retrieve_latents(self.vae.encode(pixels), sample_mode="argmax")         # (1, C, f, h, w)
        latent = self.pipe._normalize_latents(latent, self.vae.latents_mean, self.vae.latents_std)
        return self.pipe._pack_latents(latent.to(self.device, torch.float32), self.patch, self.patch_t)

    def prepare(self, positive, negative, settings, generator=None) -> dict[str, Any]:
        frames = self.video_for(positive, settings)
        conds = [negative, positive] if negative is not None else [positive]
        b = len(conds)
        with torch.no_grad():
            # 1. the clip: clean video tokens at timestep 0
            video = self._encode_clip(frames, settings)                                  # (1, N, C)
            # 2. text through the connectors, one row per prompt: [negative, positive]
            embeds = torch.cat([c.embeds for c in conds])                                # (B, L, D * layers)
            mask = torch.cat([c.mask for c in conds])                                    # (B, L)
            text, audio_text, text_mask = self.connectors(embeds, mask, padding_side=self.pipe.tokenizer_padding_side)
        # 3. positions in seconds on the shared clock
        f, h, w = self._video_grid(settings)
        steps = self.latent_shape(settings)[1]
        rope, audio_rope = self.transformer.rope, self.transformer.audio_rope
        video_coords = rope.prepare_video_coords(1, f, h, w, self.device, fps=float(settings.frame_rate))
        audio_coords = audio_rope.prepare_audio_coords(1, steps, self.device)
        dtype = self.transformer.dtype
        return {"video": video.repeat(b, 1, 1).to(dtype), "video_timestep": video.new_zeros(b, video.shape[1]),
                "encoder_hidden_states": text, "audio_encoder_hidden_states": audio_text,
                "encoder_attention_mask": text_mask,
                "video_coords": video_coords.repeat((b,) + (1,) * (video_coords.ndim - 1)),
                "audio_coords": audio_coords.repeat((b,) + (1,) * (audio_coords.ndim - 1)),
                "grid": (f, h, w), "fps": float(settings.frame_rate), "audio_steps": steps}

    # ---- denoiser ------------------------------------------------------------------------------------------
    def predict(self, latents, t, batch) -> torch.Tensor:
        """audio latents (B, C*M, L) -> audio velocity (B, C*M, L); the video tokens only condition."""
        b = latents.shape[0]
        dtype = self.transformer.dtype
        timestep = t.expand(b)
        f, h, w = batch["grid"]
        _, audio = self.transformer(
            hidden_states=batch["video"], audio_hidden_states=latents.transpose(1, 2).to(dtype),  # (B, L, C*M)
            encoder_hidden_states=batch["encoder_hidden_states"],
            audio_encoder_hidden_states=batch["audio_encoder_hidden_states"],
            timestep=batch["video_timestep"], audio_timestep=timestep, sigma=timestep, audio_sigma=timestep,
            encoder_attention_mask=batch["encoder_attention_mask"],
            audio_encoder_attention_mask=batch["encoder_attention_mask"], num_frames=f, height=h, width=w,
            fps=batch["fps"], audio_num_frames=batch["audio_steps"], video_coords=batch["video_coords"],
            audio_coords=batch["audio_coords"], isolate_modalities=False, spatio_temporal_guidance_blocks=None,
            perturbation_mask=None, use_cross_timestep=self.use_cross_timestep, return_dict=False)
        return audio.transpose(1, 2)                                                      # (B, C*M, L)

    # ---- audio VAE + vocoder -------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor, tiling=None) -> torch.Tensor:
        """latents (1, C*M, L) -> waveform (1, channels, samples) float32 on the CPU at self.sample_rate."""
        steps = latents.shape[2]
        packed = latents.transpose(1, 2).to(self.device, torch.float32)                   # (1, L, C*M)
        packed = self.pipe._denormalize_audio_latents(packed, self.audio_vae.latents_mean, self.audio_vae.latents_std)
        z = self.pipe._unpack_audio_latents(packed, steps, num_mel_bins=self.latent_mel_bins)  # (1, C, L, M)
        with torch.no_grad():
            mel = self.audio_vae.decode(z.to(self.audio_vae.dtype), return_dict=False)[0]
            wave = self.vocoder(mel.to(self.vocoder.dtype))                                 # (1, ch, samples)
        return wave.float().cpu()
