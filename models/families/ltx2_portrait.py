"""LTX-2 as an audio-driven portrait model: the speech held clean, the video denoised, the portrait as frame 0.

LTX-2 (`Lightricks/LTX-2`, a diffusers LTX2Pipeline / LTX2ConditionPipeline / LTX2ImageToVideoPipeline folder) is
one transformer over video and audio tokens with cross-attention both ways and positions in seconds on a shared
clock. For a talking portrait the input speech is encoded by LTX-2's own audio VAE and given at timestep 0 (clean,
never stepped), and only the video tokens are denoised; they attend to the sound at the same moment, so the face
follows the voice. The portrait is the clean first latent frame (image-to-video, latent index 0, strength 1) of
every window. This is diffusers' LTX2DFRPipeline with `audio_latents=..., freeze_audio=True,
conditions=[portrait at index 0], generate_slots=False` — the mirror of Video to Audio (families/ltx2_audio.py).
The loop's latents are the video latents in the pipelines' normalised space, (1, C, f, h, w).

What follows diffusers (pipeline_ltx2_dfr.py, diffusers 0.42):
  - the portrait condition: `preprocess_conditions` (resize to cover, centre crop, H.264 re-compression at the
    model's CRF), VAE encode (argmax), `_normalize_latents`; it replaces the first latent frame's tokens and those
    tokens get timestep t * (1 - mask) = 0;
  - the denoiser call (`denoise()`): audio timestep and sigma 0, video sigma = the step's timestep, keyframe mask on
    the first latent frame, the velocity re-derived from the x0 blend with the clean tokens;
  - the noise: drawn in the packed token layout (B, f*h*w, C) first, as `prepare_latents` draws it;
  - audio latents: `_pack_audio_latents` + `_normalize_audio_latents` of the raw (1, C, L, M) VAE latents.
What is our assumption (no diffusers pipeline turns a waveform into LTX-2 audio latents):
  - the mel front end: LTX-2's training code (ltx-core's AudioProcessor) uses torchaudio's MelSpectrogram with
    n_fft = win = 1024, hop = the audio VAE's mel_hop_length (160), f 0..sr/2, Hann window, centred with reflect
    padding, magnitude (power 1), Slaney mel scale and norm, then log(clamp(1e-5)); reimplemented here in torch
    (torchaudio is not a dependency). n_fft is not in the diffusers config: N_FFT below;
  - resampling to the VAE's sample_rate (16 kHz) with Kinema's band-limited resampler; mono is doubled to the
    VAE's 2 input channels (it was trained on stereo);
  - audio latent step i is the sound at i / 25 s (16 kHz, hop 160, 4x causal compression) on the shared clock;
    each window's steps are encoded from its own slice of the waveform with `audio_context_steps` of sound before
    it (then dropped), so memory stays flat in the audio length;
  - frame-rate snapping above 30 fps (LTX-2.5's DFR) is not applied: LTX-2's own pipelines pass the fps as is.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from ..checks import check_frames, check_shape, fail
from ..portrait import Window
from .base import Capabilities, Conditioning, PortraitWindow, VideoFamily
from .ltx2_common import LTX2Folder, decode_video, gemma_prompt, set_ltx2_timesteps

N_FFT = 1024                  # LTX-2's mel STFT size (ltx-core AudioProcessor); not stored in the diffusers folder


def slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) triangular filters on the Slaney mel scale with Slaney (area) normalisation,
    f 0 .. sample_rate / 2 — torchaudio.functional.melscale_fbanks(..., norm="slaney", mel_scale="slaney")."""
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0

    def to_mel(f):
        return torch.where(f >= min_log_hz, min_log_mel + torch.log(f.clamp_min(1e-10) / min_log_hz) / logstep,
                           f / f_sp)

    def to_hz(m):
        return torch.where(m >= min_log_mel, min_log_hz * torch.exp(logstep * (m - min_log_mel)), f_sp * m)

    freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1, dtype=torch.float64)
    top = to_mel(torch.tensor(float(sample_rate) / 2, dtype=torch.float64))
    f_pts = to_hz(torch.linspace(0.0, float(top), n_mels + 2, dtype=torch.float64))   # (M + 2,)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - freqs[:, None]                                           # (F, M + 2)
    down, up = -slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:]
    fb = torch.clamp(torch.minimum(down, up), min=0)
    fb = fb * (2.0 / (f_pts[2:n_mels + 2] - f_pts[:n_mels]))[None, :]
    return fb.float()                                                                  # (F, M)


def log_mel(wave: torch.Tensor, sample_rate: int, hop: int, n_mels: int, n_fft: int = N_FFT) -> torch.Tensor:
    """wave (C, T) at sample_rate -> log-mel (1, C, 1 + T // hop, n_mels), as LTX-2's AudioProcessor (see above)."""
    window = torch.hann_window(n_fft, device=wave.device)
    spec = torch.stft(wave.float(), n_fft, hop, n_fft, window, center=True, pad_mode="reflect",
                      return_complex=True).abs()                                       # (C, F, frames)
    fb = slaney_mel_filters(sample_rate, n_fft, n_mels).to(wave.device)                # (F, M)
    mel = torch.matmul(fb.T, spec)                                                     # (C, M, frames)
    return torch.log(mel.clamp(min=1e-5)).transpose(1, 2).unsqueeze(0)                 # (1, C, frames, M)


def portrait_array(image: torch.Tensor) -> np.ndarray:
    """IMAGE (1, H, W, C) 0..1 -> (1, H, W, 3) uint8: the frame LTX2VideoCondition takes (the pipelines re-compress
    a uint8 image at the model's CRF, as LTX-2 was trained)."""
    return (image[:1, ..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


class LTX2PortraitFamily(LTX2Folder, VideoFamily):
    name = "ltx2_portrait"
    title = "LTX-2"
    capabilities = Capabilities(windows=False, portrait=True, encode=False)
    flow = True
    default_frames = 121          # pixel frames per window: 8 * 15 + 1, LTX-2's trained ~5 s
    overlap_latents = 1           # latent frames shared by neighbouring windows (8 pixel frames for LTX-2)
    long_side = 768               # output pixels on the long side (the portrait's aspect kept; multiples of 32)
    audio_context_steps = 32      # audio latent steps (1.28 s) encoded before each window: more than the causal
                                  # audio VAE's reach (17-24 steps at LTX-2's depth)
    use_cross_timestep = True     # as LTX2DFRPipeline's default

    def __init__(self, path, device, dtype, pipe):
        super().__init__(path, device, dtype)
        self.pipe = pipe
        self.transformer, self.vae, self.audio_vae = pipe.transformer, pipe.vae, pipe.audio_vae
        self.connectors = pipe.connectors
        self.default_scheduler = pipe.scheduler
        self.spatial_ratio = pipe.vae_spatial_compression_ratio
        self.temporal_ratio = pipe.vae_temporal_compression_ratio
        self.patch, self.patch_t = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        # the LTX-2 pipelines take sizes in multiples of 32 whatever the VAE (32x for LTX-2 itself)
        self.spatial_multiple = math.lcm(32, self.spatial_ratio * self.patch)
        self.latent_channels = self.transformer.config.in_channels
        self.mel_rate, self.hop, self.mel_bins = pipe.audio_sampling_rate, pipe.audio_hop_length, pipe.audio_mel_bins
        self.audio_ratio = pipe.audio_vae_temporal_compression_ratio                   # mel frames per latent step
        self.latents_per_second = Fraction(self.mel_rate, self.hop * self.audio_ratio)  # 25 for LTX-2

    # ---- sizes and the clock --------------------------------------------------------------------------------
    def portrait_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the clip for a portrait of height x width: aspect kept, long side = long_side,
        both multiples of spatial_multiple (the condition is resized to cover and centre-cropped)."""
        m = self.spatial_multiple
        scale = self.long_side / max(height, width)
        return max(m, round(height * scale / m) * m), max(m, round(width * scale / m) * m)

    def audio_steps(self, frames: int | Fraction, fps: Fraction) -> int:
        """Audio latent steps for `frames` frames at fps (LTX2Pipeline: round(seconds x 25))."""
        return round(Fraction(frames) / fps * self.latents_per_second)

    def _tokens(self, settings) -> int:
        _, f, h, w = self.latent_shape(settings)
        return (f // self.patch_t) * (h // self.patch) * (w // self.patch)

    # ---- speech -> audio latents (our front end; see the module docstring) ----------------------------------
    def speech_waveform(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """waveform (C, T) at sample_rate -> (in_channels, T') float32 at the audio VAE's rate (another channel
        count is mixed to mono and shared by every channel: a view, not a copy)."""
        from ..audio import resample
        channels = int(self.audio_vae.config.in_channels)
        wav = waveform.float().reshape(-1, waveform.shape[-1])                                 # (C, T)
        if wav.shape[0] == channels:
            return resample(wav, sample_rate, self.mel_rate)
        mono = resample(wav.mean(0, keepdim=True), sample_rate, self.mel_rate)                 # (1, T')
        return mono.expand(channels, -1)                                                       # (in_channels, T')

    def speech_latents(self, wave: torch.Tensor, start: int, steps: int) -> torch.Tensor:
        """Raw audio VAE latents (1, C, steps, M) for latent steps [start, start + steps) of `wave` (from
        speech_waveform); the sound before 0 and after the end is silence. Each step is 4 mel frames (hop
        samples each). The chunk starts audio_context_steps earlier (the causal encoder's reach) and ends one step
        later (the centred STFT looks n_fft / 2 samples ahead); both are dropped, so a window's latents equal those
        of the whole clip encoded at once."""
        ctx = max(1, self.audio_context_steps)
        per_step = self.audio_ratio * self.hop                                                 # samples per step
        s0, n = (start - ctx) * per_step, (ctx + steps) * per_step          # 1 + n // hop = 4 (ctx + steps) + 1
        chunk = wave.new_zeros(wave.shape[0], n)
        a, b = max(0, s0), min(wave.shape[1], s0 + n)
        if b > a:
            chunk[:, a - s0:b - s0] = wave[:, a:b]
        mel = log_mel(chunk.to(self.device), self.mel_rate, self.hop, self.mel_bins)    # (1, C, 4(ctx+steps)+1, M)
        with torch.no_grad():
            z = self.audio_vae.encode(mel.to(self.audio_vae.dtype)).latent_dist.mode()   # (1, C', ctx+steps+1, M')
        if z.shape[1] * z.shape[3] != self.transformer.config.audio_in_channels:
            fail("model", f"audio VAE encodes {z.shape[1]}x{z.shape[3]} latent channels but the transformer takes "
                          f"{self.transformer.config.audio_in_channels}", self.path.name,
                 "Use a complete LTX-2 folder (audio_vae/ from the same release as transformer/).")
        return z[:, :, ctx:ctx + steps].float()

    # ---- conditioning --------------------------------------------------------------------------------------
    def encode_prompt(self, text: str) -> Conditioning:
        embeds, mask = gemma_prompt(self.pipe, text, self.device)
        return Conditioning(self.name, text, embeds, mask=mask)

    def encode_portrait(self, image: torch.Tensor, height: int, width: int, num_frames: int) -> torch.Tensor:
        """IMAGE (1, H, W, C) 0..1 -> its normalised latent (1, C, 1, h, w), as LTX2DFRPipeline encodes a
        condition at latent index 0 (resize to cover, centre crop, CRF re-compression, VAE argmax)."""
        from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition, retrieve_latents
        check_shape("portrait", image, 4, "(1, height, width, channels)", "Connect an IMAGE output.")
        condition = LTX2VideoCondition(frames=portrait_array(image), index=0, strength=1.0)
        pixels = self.pipe.preprocess_conditions([condition], height, width, num_frames,
                                                 device=self.device)[0][0]               # (1, 3, 1, H, W) -1..1
        with torch.no_grad():
            latent = retrieve_latents(self.vae.encode(pixels), sample_mode="argmax")     # (1, C, 1, h, w)
        return self.pipe._normalize_latents(latent, self.vae.latents_mean, self.vae.latents_std).float()

    def initial_noise(self, settings, shape, generator, device) -> torch.Tensor:
        """As LTX2DFRPipeline.prepare_latents: the noise in packed token layout (B, f*h*w, C), unpacked."""
        from diffusers.utils.torch_utils import randn_tensor
        _, _, f, h, w = shape
        channels = shape[1] * self.patch_t * self.patch ** 2
        packed = randn_tensor((shape[0], self._tokens(settings), channels), generator=generator, device=device,
                              dtype=torch.float32)                                        # (B, N, C)
        return self.pipe._unpack_latents(packed, f // self.patch_t, h // self.patch, w // self.patch, self.patch,
                                         self.patch_t)                                    # (B, C, f, h, w)

    def set_timesteps(self, scheduler, settings, device) -> None:
        set_ltx2_timesteps(scheduler, settings.num_inference_steps, self._tokens(settings), device)

    def prepare(self, positive, negative, settings, generator=None) -> dict[str, Any]:
        """positive.portrait: portrait (1, C, 1, h, w) latent (encode_portrait), audio raw (1, C, L, M) speech
        latents for this window (speech_latents), known (1, C, k, h, w) latent frames held clean after the portrait
        (or None); settings.frame_rate: the clip's fps (positions in seconds on the shared clock)."""
        window = positive.portrait
        if window is None or window.portrait is None:
            fail("positive", "must carry a portrait latent and speech latents", "a plain prompt",
                 "Use the Portrait Animate node.")
        c, f, h, w = self.latent_shape(settings)
        conds = [negative, positive] if negative is not None else [positive]
        b, dev = len(conds), self.device
        # 1. clean tokens: the portrait at latent frame 0, then the known frames (the previous window's overlap)
        clean = torch.zeros(1, c, f, h, w, device=dev)                                   # (1, C, f, h, w)
        mask = torch.zeros(1, 1, f, h, w, device=dev)
        clean[:, :, :1] = window.portrait.to(dev)
        mask[:, :, :1] = 1
        known = window.known
        if known is not None:
            k = known.shape[2]
            clean[:, :, 1:1 + k] = known.to(dev)
            mask[:, :, 1:1 + k] = 1
        keyframes = torch.zeros_like(mask)
        keyframes[:, :, :1] = 1          # as the DFR pipeline: the causal first latent frame is marked like a slot
        pack = lambda x: self.pipe._pack_latents(x, self.patch, self.patch_t)             # noqa: E731
        token_mask = pack(mask)[..., :1]                                                  # (1, N, 1)
        # 2. the speech, clean: packed (1, L, C*M) and normalised as the pipelines do
        audio = self.pipe._pack_audio_latents(window.audio.to(dev, torch.float32))
        audio = self.pipe._normalize_audio_latents(audio, self.audio_vae.latents_mean, self.audio_vae.latents_std)
        steps = audio.shape[1]
        with torch.no_grad():
            # 3. text through the connectors, one row per prompt: [negative, positive]
            embeds = torch.cat([cd.embeds for cd in conds])                              # (B, L, D * layers)
            text_mask = torch.cat([cd.mask for cd in conds])
            text, audio_text, text_mask = self.connectors(embeds, text_mask,
                                                          padding_side=self.pipe.tokenizer_padding_side)
        # 4. positions in seconds on the shared clock (window-local: both streams start at 0)
        fps = float(settings.frame_rate)
        video_coords = self.transformer.rope.prepare_video_coords(b, f // self.patch_t, h // self.patch,
                                                                  w // self.patch, dev, fps=fps)
        audio_coords = self.transformer.audio_rope.prepare_audio_coords(b, steps, dev)
        dtype = text.dtype
        return {"clean": clean, "mask": mask, "token_mask": token_mask.repeat(b, 1, 1),
                "keyframes": pack(keyframes)[..., :1].repeat(b, 1, 1), "audio": audio.repeat(b, 1, 1).to(dtype),
                "encoder_hidden_states": text, "audio_encoder_hidden_states": audio_text,
                "encoder_attention_mask": text_mask, "video_coords": video_coords, "audio_coords": audio_coords,
                "fps": fps, "audio_steps": steps, "grid": (f, h, w),
                "train_steps": float(self.default_scheduler.config.get("num_train_timesteps", 1000))}

    # ---- the one denoiser call -----------------------------------------------------------------------------
    def predict(self, latents, t, batch) -> torch.Tensor:
        """video latents (B, C, f, h, w) -> velocity, same shape. The clean tokens are given clean (whatever the
        loop holds there; finish() restores them) at timestep 0; the speech rides along at timestep 0."""
        b = latents.shape[0]
        clean, mask = batch["clean"], batch["mask"]
        x = latents.float() * (1 - mask) + clean * mask                                  # (B, C, f, h, w)
        packed = self.pipe._pack_latents(x, self.patch, self.patch_t)                    # (B, N, C)
        m = batch["token_mask"][:b]                                                       # (B, N, 1)
        timestep = t.to(self.device).float().reshape(-1).expand(b)                       # (B,)
        video_timestep = timestep.unsqueeze(-1) * (1 - m.squeeze(-1))                     # (B, N)
        zero = torch.zeros(b, device=self.device, dtype=timestep.dtype)
        dtype = batch["encoder_hidden_states"].dtype
        v, _ = self.transformer(
            hidden_states=packed.to(dtype), audio_hidden_states=batch["audio"][:b],
            encoder_hidden_states=batch["encoder_hidden_states"][:b],
            audio_encoder_hidden_states=batch["audio_encoder_hidden_states"][:b],
            timestep=video_timestep, video_keyframes_mask=batch["keyframes"][:b],
            video_coords=batch["video_coords"][:b],
            audio_timestep=zero, sigma=timestep, audio_sigma=zero,
            encoder_attention_mask=batch["encoder_attention_mask"][:b],
            audio_encoder_attention_mask=batch["encoder_attention_mask"][:b], fps=batch["fps"],
            audio_num_frames=batch["audio_steps"], audio_coords=batch["audio_coords"][:b],
            use_cross_timestep=self.use_cross_timestep, attention_kwargs=None, return_dict=False)
        # as LTX2DFRPipeline.denoise: x0 with each token's own sigma, blended with the clean tokens, back to velocity
        clean_tokens = self.pipe._pack_latents(clean, self.patch, self.patch_t)           # (1, N, C)
        token_sigma = (video_timestep / batch["train_steps"]).unsqueeze(-1)               # (B, N, 1)
        denoised = packed - v.float() * token_sigma
        denoised = denoised * (1 - m) + clean_tokens * m
        velocity = (packed - denoised) / (timestep / batch["train_steps"]).view(b, 1, 1)
        f, h, w = batch["grid"]
        return self.pipe._unpack_latents(velocity, f // self.patch_t, h // self.patch, w // self.patch, self.patch,
                                         self.patch_t)                                     # (B, C, f, h, w)

    def finish(self, latents, batch) -> torch.Tensor:
        """The portrait frame and the known frames come back exactly as given."""
        return latents * (1 - batch["mask"]) + batch["clean"] * batch["mask"]

    # ---- VAE -----------------------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor, tiling=None) -> torch.Tensor:
        """latents (1, C, f, h, w) normalised -> IMAGE frames (F, H, W, 3) float32 0..1 on the CPU (as the DFR
        pipeline decodes, decode_timestep 0)."""
        return decode_video(self.pipe, latents, self.device)

    # ---- portrait windows (models/portrait.py) -------------------------------------------------------------
    def portrait_session(self, image, waveform, sample_rate, fps, num_frames, *, prompt="", overlap=None,
                         guidance_scale=1.0, identity_strength=1.0) -> "LTX2PortraitSession":
        """Windows of 8k+1 frames (window_plan), the portrait encoded once, the speech at the audio VAE's rate."""
        if identity_strength != 1.0:
            fail("identity_strength", f"must be 1.0 for {self.name} (the portrait is the clean first frame of "
                 "every window)", identity_strength, "Set identity_strength to 1.0.")
        r = self.temporal_ratio
        overlap = r * self.overlap_latents if overlap is None else overlap
        check_frames("window", self.default_frames, r)
        if overlap <= 0 or overlap % r or overlap >= self.default_frames - 1:
            fail("overlap", f"must be a positive multiple of {r} below the window ({self.default_frames} frames) "
                 f"for {self.name}", overlap, f"Use {r} (one latent frame).")
        return LTX2PortraitSession(self, image, waveform, sample_rate, fps, num_frames, overlap, prompt,
                                   guidance_scale)


class LTX2PortraitSession:
    """One clip's windows for LTX-2: each window's speech latents for its own time span, the portrait latent at
    frame 0, the previous window's last latent frame(s) held clean after it (no VAE round trip)."""

    def __init__(self, model, image, waveform, sample_rate, fps, num_frames, overlap, prompt, guidance_scale):
        self.model, self.fps, self.overlap_latents = model, fps, overlap // model.temporal_ratio
        self.windows = window_plan(num_frames, model.temporal_ratio, model.default_frames, overlap)
        self.height, self.width = model.portrait_size(image.shape[1], image.shape[2])
        self.ref = model.encode_portrait(image, self.height, self.width, self.windows[0].length)  # (1, C, 1, h, w)
        self.speech = model.speech_waveform(waveform, sample_rate)                                # (2, T') 16 kHz
        self.positive = model.encode_prompt(prompt)
        self.negative = model.encode_prompt("") if guidance_scale > 1 else None
        self.known = None

    def conditioning(self, window: Window) -> tuple[Conditioning, Conditioning | None]:
        m = self.model
        audio = m.speech_latents(self.speech, m.audio_steps(window.base, self.fps),
                                 m.audio_steps(window.length, self.fps))                        # (1, C, L, M)
        window_inputs = PortraitWindow(audio=audio, known=self.known, portrait=self.ref)
        return self.positive.replace(portrait=window_inputs), self.negative

    def frames(self, latents, window: Window) -> torch.Tensor:
        self.known = latents[:, :, -self.overlap_latents:]      # the next window's known latent frames
        return self.model.decode(latents)[window.skip:]                                       # (n, h, w, 3)


def window_plan(num_frames: int, ratio: int, window: int, overlap: int) -> list[Window]:
    """Windows for a latent model with a causal VAE of temporal `ratio`: the window's frame count is ratio*k + 1
    (always valid), base the clip frame that the window's frame 0 (the portrait) stands at, skip the window frames
    already made (frame 0 and the overlap), so window frame i >= skip is clip frame base + i. Every window but the
    first starts with `overlap` frames (a multiple of ratio) of the previous one; the last window is as short as
    it can be and its tail past num_frames is dropped."""
    k_full, ov = (window - 1) // ratio, overlap // ratio
    plan, made = [], 0
    while made < num_frames:
        if not plan:
            k = min(k_full, max(1, -(-(num_frames - 1) // ratio)))
            base, skip = 0, 0
        else:
            k = ov + min(k_full - ov, -(-(num_frames - made) // ratio))
            base, skip = made - overlap - 1, overlap + 1
        length = ratio * k + 1
        plan.append(Window(length, base, skip))
        made = base + length
    return plan
