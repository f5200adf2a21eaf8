"""Audio: files in and out, resampling, channels, and the two generators (text-to-audio, audio for a video).

ComfyUI's AUDIO value throughout: {"waveform": (B, C, T) float32 in -1..1, "sample_rate": int Hz}.

- Reading: soundfile (libsndfile: wav, flac, ogg vorbis/opus, mp3, aiff) first, PyAV (FFmpeg: m4a/aac, mp4 and
  webm sound tracks, anything else FFmpeg decodes) when libsndfile cannot; the sample count is the file's own.
- Writing: wav (soundfile) and flac (PyAV, with the prompt and workflow as tags, as ComfyUI's Save Audio
  stores them), 16-bit, atomically (media.atomic_write). Samples beyond -1..1 are clipped.
- Resampling: a windowed-sinc interpolator in torch (Hann window, 6 zero crossings, 0.99 roll-off: the
  quality of torchaudio's default), for any pair of rates, exact output length ceil(T * new / old).
- Durations are never rounded silently: audio for a video has exactly round(frames * rate / fps) samples, the
  count the muxer in media.py puts beside those frames.

Plain torch / numpy / soundfile / av: nothing here imports ComfyUI, the nodes or a host.
"""
from __future__ import annotations

import math
from enum import Enum
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch

from .checks import check_range, fail
from .media import MAX_RATE, atomic_write, check_audio, check_fps

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".webm",
                    ".mp4", ".mka")


class AudioFormat(str, Enum):
    WAV = "wav"     # 16-bit PCM: plays everywhere, no tags
    FLAC = "flac"   # 16-bit lossless, about half the size; prompt and workflow stored as tags


class ChannelMode(str, Enum):
    KEEP = "keep"       # as the file has it
    MONO = "mono"       # the mean of all channels
    STEREO = "stereo"   # mono duplicated; more than two channels: the first two (front left, front right)


# ---------------------------------------------------------------------------------------------------------------
# Channels and resampling
# ---------------------------------------------------------------------------------------------------------------

def set_channels(waveform: torch.Tensor, mode: ChannelMode | str) -> torch.Tensor:
    """(B, C, T) -> (B, C', T): keep, mono (mean) or stereo (mono duplicated, or the first two channels)."""
    try:
        mode = ChannelMode(mode)
    except ValueError:
        fail("channels", f"must be one of {[m.value for m in ChannelMode]}", mode, "Pick one of the listed values.")
    if mode == ChannelMode.MONO:
        return waveform.mean(dim=1, keepdim=True)
    if mode == ChannelMode.STEREO:
        return waveform.expand(-1, 2, -1).clone() if waveform.shape[1] == 1 else waveform[:, :2]
    return waveform


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int, lowpass_width: int = 6,
             rolloff: float = 0.99) -> torch.Tensor:
    """Resample (..., T) from orig_rate to new_rate Hz -> (..., ceil(T * new_rate / orig_rate)).

    Band-limited interpolation: output sample n sits at input position n * orig / new (no delay) and is the sum of
    nearby input samples weighted by a Hann-windowed sinc with `lowpass_width` zero crossings each side, cut off
    at `rolloff` x the lower Nyquist frequency (anti-aliasing when downsampling). Positions are exact integer
    arithmetic, so long clips do not drift. Works in chunks (bounded memory) on the waveform's device.
    """
    check_range("sample_rate", orig_rate, 1, MAX_RATE)
    check_range("sample_rate", new_rate, 1, MAX_RATE)
    if orig_rate == new_rate:
        return waveform.clone()
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    shape, length = waveform.shape, waveform.shape[-1]
    x = waveform.reshape(-1, length).float()                                     # (N, T)
    out_len = -(-length * up // down)
    cutoff = min(1.0, up / down) * rolloff               # as a fraction of the input Nyquist frequency
    width = math.ceil(lowpass_width / cutoff) + 1        # taps each side, in input samples
    x = torch.nn.functional.pad(x, (width, width + 1))                           # (N, T + 2w + 1)
    taps = torch.arange(-width + 1, width + 1, device=x.device)                  # (K,)
    out = x.new_empty(x.shape[0], out_len)
    chunk = max(1, 4_000_000 // (len(taps) * x.shape[0]))
    for n0 in range(0, out_len, chunk):
        n = torch.arange(n0, min(out_len, n0 + chunk), device=x.device, dtype=torch.int64)
        base, rem = (n * down) // up, (n * down) % up                            # input position = base + rem/up
        dist = rem.double()[:, None] / up - taps[None, :]                        # (n, K) position - tap, samples
        t = (dist * cutoff).clamp(-lowpass_width, lowpass_width)
        window = torch.cos(t * math.pi / (2 * lowpass_width)) ** 2
        weights = (torch.sinc(t) * window * cutoff).float()                      # (n, K)
        index = base[:, None] + taps[None, :] + width                            # into the padded signal
        out[:, n0:n0 + len(n)] = (x[:, index] * weights).sum(-1)                 # (N, n)
    return out.reshape(*shape[:-1], out_len).to(waveform.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------

def _unreadable(path: Path, why: str) -> None:
    fail("audio", "must be a readable audio file (wav, flac, ogg, mp3, m4a, or a video with a sound track)",
         str(path), f"It could not be decoded ({why}); re-export it as WAV or FLAC, or pick another file.")


def _read_av(path: Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with FFmpeg -> ((C, T) float32, rate). Encoder priming before time 0 and
    padding after the stream's duration (mp4/m4a edit lists: AAC adds both) are cut, so the sample count is the
    one the file's timeline says."""
    scale = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 2.0 ** 63}
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                _unreadable(path, "the file has no audio stream")
            stream = c.streams.audio[0]
            rate = stream.codec_context.sample_rate
            chunks, skip = [], 0
            for frame in c.decode(stream):
                if not chunks and frame.pts is not None and frame.pts < 0:          # priming before time 0
                    skip = round(-frame.pts * frame.time_base * rate)
                arr = frame.to_ndarray()
                name = frame.format.name.rstrip("p")
                if not frame.format.is_planar:                                   # (1, n * C) interleaved
                    arr = arr.reshape(-1, len(frame.layout.channels)).T
                arr = arr.astype(np.float32)
                if name == "u8":
                    arr = arr - 128.0
                chunks.append(arr / scale[name] if name in scale else arr)
            end = round(stream.duration * stream.time_base * rate) if stream.duration else None
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        _unreadable(path, str(e))
    if not chunks:
        _unreadable(path, "no audio samples")
    data = np.concatenate(chunks, axis=1)[:, skip:]                                  # (C, T)
    return (data[:, :end] if end and 0 < end < data.shape[1] else data), rate


def load_audio(path, sample_rate: int = 0, channels: ChannelMode | str = ChannelMode.KEEP) -> dict:
    """Read an audio file (or a video's sound track) as AUDIO {"waveform": (1, C, T) float32, "sample_rate"}.

    Args:
        path: the file.
        sample_rate: 0 keeps the file's rate; else resampled to this many Hz.
        channels: ChannelMode (keep, mono, stereo).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}. Fix: put it in {path.parent} (or upload it in the "
                                f"editor), or pick an existing file.")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)             # (T, C)
        data = data.T
    except (sf.LibsndfileError, RuntimeError, TypeError):
        data, rate = _read_av(path)                                                   # (C, T)
    waveform = set_channels(torch.from_numpy(np.ascontiguousarray(data))[None], channels)   # (1, C, T)
    if sample_rate:
        waveform, rate = resample(waveform, rate, sample_rate), sample_rate
    return {"waveform": waveform, "sample_rate": int(rate)}


def _pcm16(waveform: torch.Tensor) -> np.ndarray:
    """(C, T) float -> (T, C) int16, clipped to -1..1 and rounded."""
    return (waveform.clamp(-1, 1) * 32767).round().to(torch.int16).T.contiguous().numpy()


def save_audio(waveform: torch.Tensor, sample_rate: int, path, fmt: AudioFormat | str = AudioFormat.FLAC,
               metadata: dict[str, str] | None = None) -> Path:
    """Write one clip, atomically (a hidden temporary file in the same folder is renamed). Returns `path`.

    Args:
        waveform: (C, T) float, -1..1 (clipped beyond); any number of channels, at least one sample.
        sample_rate: Hz.
        fmt: AudioFormat: wav (16-bit PCM) or flac (16-bit, tags).
        metadata: text tags for flac (e.g. {"prompt": json, "workflow": json}); wav stores none.
    """
    try:
        fmt = AudioFormat(fmt)
    except ValueError:
        fail("format", f"must be one of {[f.value for f in AudioFormat]}", fmt, "Pick one of the listed values.")
    if waveform.ndim != 2 or waveform.shape[1] == 0:
        fail("audio", "must be one clip (channels, samples) with at least one sample", tuple(waveform.shape),
             "Check the node that made it.")
    pcm = _pcm16(waveform.detach().float().cpu())                                   # (T, C)
    with atomic_write(path) as tmp:
        if fmt == AudioFormat.WAV:
            sf.write(str(tmp), pcm, sample_rate, subtype="PCM_16", format="WAV")
        else:
            _write_flac(tmp, pcm, sample_rate, metadata or {})
    return Path(path)


def _write_flac(tmp: Path, pcm: np.ndarray, rate: int, metadata: dict[str, str]) -> None:
    channels = pcm.shape[1]
    with av.open(str(tmp), "w", format="flac") as out:
        for key, value in metadata.items():
            out.metadata[key] = value
        layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
        stream = out.add_stream("flac", rate=rate, layout=layout)
        stream.format = "s16"
        for start in range(0, pcm.shape[0], 4096):                                  # one frame per 4096 samples
            block = pcm[start:start + 4096]
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


# ---------------------------------------------------------------------------------------------------------------
# Generation (the family's loop: models/sampling.py)
# ---------------------------------------------------------------------------------------------------------------

def _check_task(model, able: bool, what: str, fix: str) -> None:
    if not able:
        fail("model", f"cannot {what}", model.name, fix)


def text_to_audio(model, prompt: str, negative_prompt: str = "", audio_length_in_s: float = 10.0,
                  num_inference_steps: int = 100, guidance_scale: float = 7.0, seed: int = 0,
                  on_step=None, step_cache=None, cache_stats=None) -> dict:
    """Sound from a prompt: AUDIO {"waveform": (1, C, round(seconds * rate)), "sample_rate"}.

    Args:
        model: an audio family that makes sound from text (Stable Audio).
        prompt, negative_prompt: text; an empty negative uses the model's own unconditional (all-zero) input.
        audio_length_in_s: seconds (> 0, at most the model's window).
        num_inference_steps, guidance_scale, seed: as the video sampler (guidance <= 1 runs once a step).
        on_step: (step, total, latents) progress/interrupt hook.
        step_cache: optional step_cache.StepCache (skips denoiser calls through the loop's predict= hook);
            cache_stats: an optional step_cache.Stats that receives the calls made and skipped.
    """
    from .sampling import SamplerSettings, sample
    from .step_cache import session
    _check_task(model, model.capabilities.text_to_audio, "make sound from text alone",
                "Load a text-to-audio model (Stable Audio) in Load Audio Model; LTX-2 needs a video.")
    settings = SamplerSettings(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
                               audio_length_in_s=float(audio_length_in_s))
    model.check_settings(settings)
    positive = model.encode_prompt(prompt)
    negative = model.encode_prompt(negative_prompt) if negative_prompt.strip() else model.unconditional()
    with session(step_cache, model, settings, stats=cache_stats) as predict:
        latents = sample(model, positive, negative, settings, on_step=on_step, predict=predict)
    waveform = model.decode(latents)[..., :model.num_samples(settings)]                      # (1, C, samples)
    return {"waveform": waveform.contiguous(), "sample_rate": model.sample_rate}


def video_to_audio(model, frames: torch.Tensor, fps: float | Fraction, prompt: str = "", negative_prompt: str = "",
                   num_inference_steps: int = 30, guidance_scale: float = 4.0, seed: int = 0,
                   on_step=None, step_cache=None, cache_stats=None) -> dict:
    """Sound for a clip: AUDIO lasting exactly len(frames) / fps (round(frames * rate / fps) samples), starting
    with the first frame.

    Args:
        model: an audio family that takes a video condition (LTX-2).
        frames: IMAGE (F, H, W, C) float 0..1; encoded at model.condition_size (aspect kept).
        fps: the clip's frames per second (> 0).
        prompt, negative_prompt: optional text about the sound ("" is a valid prompt).
        num_inference_steps, guidance_scale, seed, on_step, step_cache, cache_stats: as text_to_audio.
    """
    from .media import check_images
    from .sampling import SamplerSettings, sample
    from .step_cache import session
    _check_task(model, model.capabilities.video_to_audio, "make sound for a video",
                "Load a video-to-audio model (an LTX-2 folder) in Load Audio Model.")
    n, h, w, _ = check_images("images", frames)
    height, width = model.condition_size(h, w)
    settings = SamplerSettings(num_frames=n, height=height, width=width, num_inference_steps=num_inference_steps,
                               guidance_scale=guidance_scale, seed=seed, frame_rate=check_fps("fps", fps))
    positive = model.encode_prompt(prompt).replace(video=frames[..., :3].float().cpu())
    negative = model.encode_prompt(negative_prompt) if guidance_scale > 1 else None
    with session(step_cache, model, settings, stats=cache_stats) as predict:
        latents = sample(model, positive, negative, settings, on_step=on_step, predict=predict)
    waveform = model.decode(latents)
    need = model.num_samples(settings)
    if waveform.shape[-1] < need:                  # audio_latent_steps() covers the clip: a bug, not user input
        raise RuntimeError(f"{model.name} decoded {waveform.shape[-1]} samples for a clip that needs {need}. Fix: "
                           f"report this with the model folder; audio is never padded silently.")
    return {"waveform": waveform[..., :need].contiguous(), "sample_rate": model.sample_rate}
