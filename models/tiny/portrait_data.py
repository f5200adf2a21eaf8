"""What Kinema-Tiny Portrait hears: the loudness of a voice, one value per video frame.

`loudness_features(waveform, rate, fps, num_frames)` is the audio feature the model is conditioned on: the RMS
level of the audio around each frame's time, in dB relative to the clip's own loud level (its 90th-percentile
frame), mapped 0..1 over a 36 dB range (0 = silence, 1 = as loud as the clip's loud syllables). The same function
feeds training (training/tiny/portrait_data.py draws the faces and voices) and inference, so their inputs match.
"""
from __future__ import annotations

import torch

DB_RANGE = 36.0                               # loudness feature: 0 at 36 dB below the clip's loud level
LOUD_QUANTILE = 0.9                           # the clip's "loud level": this quantile of its frame levels


def frame_levels(waveform: torch.Tensor, rate: int, fps: float, num_frames: int, block: int = 256) -> torch.Tensor:
    """RMS level of the audio around each video frame: frame i covers [i/fps, (i+1)/fps) seconds.

    waveform (T,) or (C, T) float (channels averaged), rate Hz -> (num_frames,) RMS (0 past the audio's end).
    Works through `block` frames at a time, so memory stays flat in the audio length.
    """
    wav = waveform if waveform.ndim == 1 else waveform.float().mean(0)
    t = wav.numel()
    edges = (torch.arange(num_frames + 1, dtype=torch.float64) * rate / fps).round().long().clamp(max=t)  # (F+1,)
    out = torch.zeros(num_frames)
    for a in range(0, num_frames, block):
        b = min(a + block, num_frames)
        lo = int(edges[a])
        chunk = wav[lo:int(edges[b])].double()
        power = torch.nn.functional.pad(chunk.pow(2).cumsum(0), (1, 0))                   # (n+1,)
        e = edges[a:b + 1] - lo
        count = (e[1:] - e[:-1]).clamp(min=1)
        out[a:b] = ((power[e[1:]] - power[e[:-1]]) / count).clamp(min=0).sqrt().float()
    return out


def loudness_features(waveform: torch.Tensor, rate: int, fps: float, num_frames: int) -> torch.Tensor:
    """Per-frame loudness 0..1 (see the module docstring): (T,) or (C, T) audio -> (num_frames,) features."""
    rms = frame_levels(waveform, rate, fps, num_frames)
    loud = torch.quantile(rms, LOUD_QUANTILE) if rms.numel() > 1 else rms.max()
    if float(loud) <= 1e-6:                                        # silence: a closed mouth throughout
        return torch.zeros_like(rms)
    db = 20 * torch.log10(rms / loud + 1e-6)
    return (1 + db / DB_RANGE).clamp(0, 1)
